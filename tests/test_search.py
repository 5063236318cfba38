"""archiver search: filters on indexed fields, keyed word hashes, operator-looking values are data."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import subprocess

import pytest

from archiver.cli import main
from archiver.config import ConfigError
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from archiver.search import (TERMS_FORMAT, Search, SearchFilters, build_query, load_search_key, open_search,
                             search_indexes)
from conftest import REAL_MONGO, write_toml
from retrieval_helpers import archive_samples, audit, index, search_key
from test_pipeline import recent_ms, seed


@pytest.fixture
def archived(make_config, tmp_path):
    config = make_config(search__key_file=str(search_key(tmp_path)))
    return config, archive_samples(config)


def _rooms(config, **filters) -> list[str]:
    return sorted(e["room"] for e in open_search(config).find(SearchFilters(**filters)))


def _cli(config, tmp_path, *argv: str) -> int:
    toml = write_toml(tmp_path / "s.toml", {k: config[k] for k in (
        "mongodb.uri", "index.database", "search.key_file", "storage.url")})
    return main(["--config", str(toml), *argv])


def test_each_filter_finds_exactly_the_matching_entries(archived) -> None:
    config, entries = archived
    one = entries[1]
    assert _rooms(config, room=one["room"]) == [one["room"]]
    assert _rooms(config, agent=one["agents"][0]) == sorted(e["room"] for e in entries if one["agents"][0] in e["agents"])
    assert _rooms(config, customer=one["customers"][0]) == [one["room"]]
    assert _rooms(config, ctlive_type=one["ctlive_type"]) == sorted(
        e["room"] for e in entries if e["ctlive_type"] == one["ctlive_type"])
    assert _rooms(config, channel=one["channel"]) == sorted(e["room"] for e in entries if e["channel"] == one["channel"])
    assert _rooms(config, service="Billing") == sorted(e["room"] for e in entries if e["service"] == "Billing")
    assert len(_rooms(config, service="Billing")) == 1
    assert _rooms(config, status="archived") == sorted(e["room"] for e in entries)
    ended = sorted(e["ended_at"] for e in entries)
    assert _rooms(config, ended_from=ended[1], ended_to=ended[2]) == sorted(
        e["room"] for e in entries if ended[1] <= e["ended_at"] <= ended[2])
    assert len(_rooms(config, ended_from=ended[1], ended_to=ended[2])) == 2


def test_a_filter_that_finds_nothing_says_values_are_compared_exactly_and_names_near_ones(archived, tmp_path,
                                                                                          capsys) -> None:
    """Review "court" C9: `--service billing` found 0 entries (1 with `Billing`), `--customer` in another case or
    Unicode form likewise, with no hint: read as "no chats". When nothing matches, stderr says that values are
    compared exactly, and names the index's values of --service, --channel or --type equal but for case and
    Unicode form; --json's stdout stays the entries alone."""
    config, entries = archived
    one = entries[1]
    assert _cli(config, tmp_path, "search", "--service", "bILLING", "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == []
    assert "note: --service 'bILLING' matched nothing: values are compared exactly; the index has 'Billing'" \
        in captured.err, captured.err
    assert _cli(config, tmp_path, "search", "--customer", one["customers"][0].upper() + "X") == 0
    err = capsys.readouterr().err
    assert "note: nothing matched: --customer is compared exactly with the user id the platform stores" in err, err
    assert _cli(config, tmp_path, "search", "--service", "Billing") == 0
    assert "note:" not in capsys.readouterr().err  # something matched: nothing to say
    billing = next(e for e in entries if e["service"] == "Billing")
    other = next(e for e in entries if e["service"] != "Billing")
    for room, mark in ((billing["room"], ""), (other["room"], " (no entry of it with the other filters)")):
        assert _cli(config, tmp_path, "search", "--service", "bILLING", "--room", room) == 0
        err = capsys.readouterr().err
        assert f"the index has 'Billing'{mark}\n" in err, err


def test_text_search_matches_words_without_storing_them(archived) -> None:
    config, entries = archived
    english = sorted(e["room"] for e in entries if e["language"] == "en")
    assert len(english) == 2
    assert _rooms(config, text="INVOICE") == english  # case folded, any message of the chat
    assert _rooms(config, text="invoice hello zebra") == []  # every word must occur
    raw = json.dumps(index(config).find_one({"room": english[0]}), default=str).lower()
    assert "invoice" not in raw and len(index(config).find_one({"room": english[0]})["terms"]) > 5


def test_text_search_without_a_key_is_a_usage_error_that_says_how_to_make_one(archived, tmp_path, capsys) -> None:
    config, _ = archived
    assert _cli(config.with_overrides(**{"search.key_file": ""}), tmp_path, "search", "--text", "invoice") == 2
    err = capsys.readouterr().err
    assert "search.key_file: text search needs the search key (not set)" in err
    made = re.search(r"\((openssl rand -hex 32 > search.key); (chmod 600 search.key)\)", err)
    assert made, err
    for command in made.groups():  # as the message says, in a folder of the user's
        subprocess.run(command, shell=True, cwd=tmp_path, check=True)
    assert len(load_search_key(str(tmp_path / "search.key"))) == 32  # a key the archiver takes


@pytest.mark.parametrize("field", ["room", "agent", "customer", "ctlive_type", "channel", "service", "status", "text"])
@pytest.mark.parametrize("value", ['{"$ne": null}', "$gt", '{"$regex": ".*"}', "$where", ".*"])
def test_filters_that_look_like_operators_return_nothing(archived, field, value) -> None:
    config, _ = archived
    assert _rooms(config, **{field: value}) == []


def test_a_filter_must_be_text(archived) -> None:
    config, _ = archived
    with pytest.raises(TypeError, match="room"):
        build_query(SearchFilters(room={"$ne": None}), None)


def test_every_query_uses_an_index(archived) -> None:
    config, entries = archived
    collection = index(config)
    indexed = {ix["key"][0][0] for ix in collection.index_information().values()}  # leading fields
    assert {f for f, _ in search_indexes()} <= indexed
    searcher = open_search(config)
    for filters in (SearchFilters(), SearchFilters(room="r"), SearchFilters(agent="a", channel="web"),
                    SearchFilters(text="invoice"), SearchFilters(text="किताब"),  # (two alternatives: see text_conditions)
                    SearchFilters(ended_from=entries[0]["ended_at"]), SearchFilters(customer="c"),
                    SearchFilters(ended_from=entries[0]["ended_at"], ended_to=entries[1]["ended_at"], overlapping=True)):
        query = build_query(filters, searcher.key)
        alternatives = [query.get("$or")] + [c.get("$or") for c in query.get("$and", [])]  # (customers, opened_by)
        served = set(query) & indexed or any(a and all(set(c) & indexed for c in a) for a in alternatives)
        assert not query or served, query  # at least one predicate an index serves (in each alternative)
        if REAL_MONGO:  # mongomock has no explain; a real server must not scan the collection
            plan = json.dumps(collection.find(query).sort([("room", 1), ("version", 1)]).explain(), default=str)
            assert "COLLSCAN" not in plan


def test_search_command_prints_a_table_or_json_and_is_audited(archived, tmp_path, capsys) -> None:
    config, entries = archived
    assert _cli(config, tmp_path, "search", "--service", "Billing", "--actor", "bob") == 0
    table = capsys.readouterr().out
    billing = next(e for e in entries if e["service"] == "Billing")
    assert billing["room"] in table and "ROOM" in table and "1 entr" in table
    assert _cli(config, tmp_path, "search", "--text", "invoice", "--json") == 0
    found = json.loads(capsys.readouterr().out)
    assert sorted(e["room"] for e in found) == sorted(e["room"] for e in entries if e["language"] == "en")
    assert {"room", "version", "ended_at", "agents", "customers", "objects"} <= set(found[0])
    log = audit(config)
    assert [e["action"] for e in log] == ["search", "search"]
    assert log[0]["actor"]["on_behalf_of"] == "bob" and log[0]["filters"] == {"service": "Billing"}
    assert log[1]["rooms"] == sorted(e["room"] for e in found)
    assert log[1]["filters"] == {"text": "invoice"}  # as typed: docs/search.md says who may read the audit log
    assert _cli(config, tmp_path, "search", "--from", "not-a-date") == 2


def test_search_json_has_every_documented_field_in_room_and_version_order(archived, tmp_path, capsys) -> None:
    """docs/search.md, `--json` output: the fields listed there (stable), times ISO 8601 UTC to the millisecond."""
    import re

    config, entries = archived
    assert _cli(config, tmp_path, "search", "--json") == 0
    found = json.loads(capsys.readouterr().out)
    assert [(e["room"], e["version"]) for e in found] == sorted((e["room"], e["version"]) for e in entries)
    top = {"room", "version", "status", "kind", "started_at", "ended_at", "archived_at", "ctlive_type", "channel",
           "service", "agents", "customers", "message_count", "store", "objects"}
    per_object = {"key", "sha256", "size", "plaintext_sha256", "plaintext_size", "version_id", "name"}
    by_room = {e["room"]: e for e in entries}
    for shown in found:
        assert top <= set(shown), top - set(shown)
        assert shown["kind"] in ("ended", "abandoned", "interim") and set(shown["store"]) >= {"url", "endpoint_url"}
        for name in ("started_at", "ended_at", "archived_at"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", shown[name]), (name, shown[name])
        assert {"pdf", "record", "record_signature"} <= set(shown["objects"])
        indexed = by_room[shown["room"]]
        for name in ("pdf", "record", "record_signature"):
            assert per_object <= set(shown["objects"][name]), (name, per_object - set(shown["objects"][name]))
            assert {k: shown["objects"][name][k] for k in per_object} == {k: indexed["objects"][name].get(k)
                                                                           for k in per_object}
        assert {k: shown[k] for k in ("agents", "customers", "message_count", "service", "channel", "ctlive_type")} \
            == {k: indexed[k] for k in ("agents", "customers", "message_count", "service", "channel", "ctlive_type")}


def test_a_failed_search_prints_nothing_and_is_audited(archived, tmp_path, capsys) -> None:
    config, _ = archived
    assert _cli(config.with_overrides(**{"search.key_file": ""}), tmp_path, "search", "--text", "x", "--json") == 2
    assert capsys.readouterr().out == ""
    assert audit(config)[-1]["outcome"] == "failed" and audit(config)[-1]["filters"] == {"text": "x"}


def test_a_filter_that_is_not_valid_utf8_is_refused_before_the_search(archived, tmp_path, capsys) -> None:
    """`search --room $'\\xff'` reaches Python as the surrogate U+DCFF: the search ran and printed, then the
    audit log could not store it (a crash, nothing recorded). Refused up front now, naming the option."""
    config, _ = archived
    assert _cli(config, tmp_path, "search", "--room", "CHAT_\udcff", "--agent", "USER_a") == 2
    out, err = capsys.readouterr()
    assert out == "" and "--room: 'CHAT_\\xff' is not valid UTF-8" in err, err
    assert audit(config) == []


def test_the_table_says_which_entries_are_tombstones(archived, tmp_path, capsys) -> None:
    """A deleted entry (a tombstone: its objects gone) looked like an archived one in the table."""
    config, entries = archived
    gone = entries[0]
    index(config).update_one({"_id": gone["_id"]}, {"$set": {"status": "deleted"}})
    assert _cli(config, tmp_path, "search") == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert lines[gone["room"]][2] == "deleted" and lines[entries[1]["room"]][2] == "archived"


def test_the_table_says_which_chats_had_not_ended(archived, tmp_path, capsys) -> None:
    """An interim or abandoned chat (archived before or without its end) showed its last message's time
    under ENDED with nothing else: read as the time the chat ended."""
    config, entries = archived
    index(config).update_one({"_id": entries[0]["_id"]}, {"$set": {"kind": "interim"}})
    index(config).update_one({"_id": entries[1]["_id"]}, {"$set": {"kind": "abandoned"}})
    assert _cli(config, tmp_path, "search") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["ROOM", "VER", "STATUS", "KIND", "ENDED/LAST"], out[0]
    lines = {line.split()[0]: line.split() for line in out[1:-1]}
    assert [lines[e["room"]][3] for e in entries[:3]] == ["interim", "abandoned", "ended"], lines
    assert all(len(line.split()[0]) < out[0].index("VER") for line in out[1:-1])  # room ids fit their column


def test_json_gives_an_interim_chat_its_last_message_time_as_ended_at(make_config, tmp_path, capsys) -> None:
    """docs/search.md: `ended_at` of an interim entry (an export --force of a chat still running) is its last
    message's time, which --from and --to select it by, not an end (review "court" C15)."""
    config = make_config()
    chat, contact = make_chat(random.Random(15), messages=4, ended=False, start_ms=recent_ms())
    seed(config, [(chat, contact)])
    report, _ = Archiver(config).archive_room(chat["room"], "interim")
    assert report.archived == 1
    last = max(m["data"]["ts"] for m in chat["messages"])
    day = dt.datetime.fromtimestamp(last / 1000, dt.timezone.utc).date().isoformat()
    assert _cli(config, tmp_path, "search", "--from", day, "--to", day, "--json") == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["kind"] == "interim"
    assert shown["ended_at"] == dt.datetime.fromtimestamp(last / 1000, dt.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def test_text_search_with_another_key_is_refused_not_answered_empty(archived, tmp_path, capsys) -> None:
    """Words hashed under one key are not found under another: that search answered "0 entries", exit 0."""
    from archiver.pipeline import Archiver
    config, _ = archived
    other = config.with_overrides(**{"search.key_file": str(search_key(tmp_path))})
    assert _cli(other, tmp_path, "search", "--text", "invoice") == 2
    assert "search.key_file: not the key the index's word hashes were made with" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="search.key_file: not the key"):
        Archiver(other)  # nor may the archive pass mix hashes of two keys


def test_text_search_says_which_entries_it_cannot_see(make_config, tmp_path, capsys) -> None:
    """Chats archived before search.key_file was set have no word hashes: a text search never finds them."""
    from archiver.pipeline import Archiver
    config = make_config()
    archive_samples(config, count=1)
    keyed = config.with_overrides(**{"search.key_file": str(search_key(tmp_path))})
    Archiver(keyed)
    assert _cli(keyed, tmp_path, "search", "--text", "hello") == 0
    assert ("1 archived entry has no word hashes (archived while search.key_file was not set): --text cannot find "
            "them") in capsys.readouterr().err


def test_text_search_warns_of_nothing_when_every_entry_has_word_hashes(archived, tmp_path, capsys) -> None:
    """Every entry archived with the key: the note that some have no word hashes would only mislead."""
    config, _ = archived
    assert _cli(config, tmp_path, "search", "--text", "invoice") == 0
    assert "word hashes" not in capsys.readouterr().err


def test_the_text_note_dates_word_hashes_from_the_oldest_entry_that_has_them(archived, tmp_path, capsys) -> None:
    """An index whose entries had word hashes before the key was recorded (an upgrade): the note must not
    say that they have none."""
    from archiver.mongo import connect
    from archiver.pipeline import Archiver
    import datetime as dt
    config, entries = archived
    connect(config["mongodb.uri"])[config["index.database"]][config["index.state"]].delete_many({"_id": "search_key"})
    for n, e in enumerate(entries):  # archived days ago
        index(config).update_one({"_id": e["_id"]}, {"$set": {"archived_at": e["archived_at"] - dt.timedelta(days=2 + n)}})
    Archiver(config)  # the first start after the upgrade records the key
    assert _cli(config, tmp_path, "search", "--text", "invoice") == 0
    assert "word hashes" not in capsys.readouterr().err  # every entry has them
    oldest = min(e["archived_at"] for e in index(config).find())
    state = connect(config["mongodb.uri"])[config["index.database"]][config["index.state"]]
    assert state.find_one({"_id": "search_key"})["since"].replace(tzinfo=None) == oldest.replace(tzinfo=None)
    index(config).update_one({"_id": entries[0]["_id"]}, {"$unset": {"terms": ""}})  # one without: named from then
    assert _cli(config, tmp_path, "search", "--text", "invoice") == 0
    assert "1 archived entry has no word hashes" in capsys.readouterr().err  # counted, not dated (review court C17)


# Words whose letters carry combining marks: \w alone cut them apart, so a search missed the chat, or matched
# one that only holds the pieces. (chat text, query, found?)
MARKED_WORDS = [
    ("İade talebim var", "iade", True),  # Turkish: İ case-folds to i + U+0307 (dot above)
    ("İADE EDİLDİ", "iade", True),
    ("iade talebim var", "İade", True),
    ("أريد اِسْتِرْدَاد المال", "استرداد", True),  # Arabic vowel marks (harakat): optional in writing
    ("أريد استرداد المال", "اِسْتِرْدَاد", True),
    ("אני רוצה הֶחְזֵר", "החזר", True),  # Hebrew points (niqqud): optional likewise
    ("मुझे किताब चाहिए", "किताब", True),  # Devanagari vowel signs are part of the word
    ("क ख त ग ब", "किताब", False),  # loose letters of another text are not the word
    ("कताब", "किताब", False),  # nor is the word without its vowel sign: another word
    ("cafe\u0301 ouvert", "caf\u00e9", True),  # NFD and NFC
]


def _marked_entries(make_config, tmp_path, marked=MARKED_WORDS):
    """One chat per text of MARKED (MARKED_WORDS), archived (the archive pass writes the word hashes)."""
    import random

    from archiver.pipeline import Archiver
    from archiver.samples import make_chat
    from test_pipeline import recent_ms, seed

    config = make_config(search__key_file=str(search_key(tmp_path)))
    rng, chats = random.Random(4), []
    for i, (text, _, _) in enumerate(marked):
        chat, contact = make_chat(rng, messages=3, start_ms=recent_ms(60 - i))
        for m in chat["messages"]:
            if m["data"].get("content", {}).get("text") is not None:
                m["data"]["content"]["text"] = text
        chats.append((chat, contact))
    seed(config, chats)
    assert Archiver(config).run_pass().archived == len(chats)
    return config, [c["room"] for c, _ in chats]


def test_text_search_keeps_words_with_combining_marks_whole(make_config, tmp_path) -> None:
    config, rooms = _marked_entries(make_config, tmp_path)
    for (text, query, found), room in zip(MARKED_WORDS, rooms):
        assert (room in _rooms(config, text=query)) is found, (text, query)


def test_entries_hashed_before_marks_were_kept_are_still_found_by_their_pieces(make_config, tmp_path) -> None:
    """Entries whose word hashes were made when \\w cut words at their marks (no terms_format) are searched
    with that cut as well: a word found there before (by its pieces) is not lost by the new rule."""
    from archiver.search import term_hashes

    config, rooms = _marked_entries(make_config, tmp_path)
    key = open_search(config).key
    old = {"İade talebim var": ["i", "ade", "talebim", "var"], "मुझे किताब चाहिए": ["म", "झ", "क", "त", "ब", "च", "ह", "ए"]}
    for (text, _, _), room in zip(MARKED_WORDS, rooms):
        if text in old:
            index(config).update_one({"room": room}, {"$set": {"terms": term_hashes(old[text], key)},
                                                      "$unset": {"terms_format": ""}})
    turkish, hindi = rooms[0], rooms[6]
    assert turkish in _rooms(config, text="İade")
    assert rooms[1] not in _rooms(config, text="ade")  # a piece matches an old entry only, not "İADE" hashed whole
    assert hindi in _rooms(config, text="किताब")
    assert index(config).find_one({"room": rooms[1]})["terms_format"] == TERMS_FORMAT


# Invisible characters (Default_Ignorable code points) inside a word, as pasting from a word processor leaves them
# or as one types them to slip a word past keyword monitoring (review court C5): the word is found, and a query
# holding one finds the word without it.
INVISIBLE_WORDS = [
    ("this is fr\u00adaud, I want my money back", "fraud", True),  # soft hyphen
    ("embez\u200bzlement", "embezzlement", True),  # zero-width space
    ("fr\u2060aud", "fraud", True),  # word joiner
    ("fraud\ufe0f", "fraud", True),  # variation selector
    ("fr\U000e0041aud", "fraud", True),  # a tag character
    ("fraud here", "fr\u00adaud", True),  # typed with one: the same word
    ("fr aud", "fraud", False),  # a space still separates words
]


def test_text_search_finds_a_word_with_an_invisible_character_inside(make_config, tmp_path) -> None:
    config, rooms = _marked_entries(make_config, tmp_path, INVISIBLE_WORDS)
    for (text, query, found), room in zip(INVISIBLE_WORDS, rooms):
        assert (room in _rooms(config, text=query)) is found, (text, query)


@pytest.mark.parametrize("ignorable", [0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, *range(0x180B, 0x1810),
                                       *range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2070), 0x3164,
                                       *range(0xFE00, 0xFE10), 0xFEFF, 0xFFA0, 0x1BCA0, 0x1D173, 0xE0001, 0xE0100,
                                       0xE0FFF], ids=lambda c: f"U+{c:04X}")
def test_every_default_ignorable_code_point_is_dropped_from_words(ignorable) -> None:
    from archiver.search import words

    assert words(f"Fr{chr(ignorable)}aud") == {"fraud"}


def test_normalising_never_makes_an_invisible_character_so_dropping_them_first_suffices() -> None:
    import unicodedata

    from archiver.search import _IGNORABLE

    made = [hex(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000 and not _IGNORABLE.match(chr(c))
            and _IGNORABLE.search(unicodedata.normalize("NFKC", chr(c)).casefold())]
    assert made == []
    assert all(_IGNORABLE.match(chr(c)) for c in (0x00AD, 0x200B, 0x2060, 0xFEFF, 0xE0041))


def test_entries_hashed_by_format_2_are_searched_by_its_words_as_well(make_config, tmp_path) -> None:
    """Entries of terms_format 2 kept an invisible character as a word break: a query holding one is searched
    there by the pieces (as it was), and a plain word as before; new entries by the whole word."""
    from archiver.search import term_hashes, words_format_2

    texts = [("fr\u00adaud hello", "fr\u00adaud", True), ("fr\u00adaud hello", "fraud", True)]
    config, rooms = _marked_entries(make_config, tmp_path, texts)
    key = open_search(config).key
    assert words_format_2("fr\u00adaud hello") == {"fr", "aud", "hello"}
    index(config).update_one({"room": rooms[0]}, {"$set": {
        "terms": term_hashes(words_format_2("fr\u00adaud hello"), key), "terms_format": 2}})
    assert _rooms(config, text="fr\u00adaud") == sorted(rooms)  # the old entry by its pieces, the new one whole
    assert _rooms(config, text="hello") == sorted(rooms)
    assert _rooms(config, text="fraud") == [rooms[1]]  # (the old entry never had the whole word)


@pytest.mark.parametrize("text, end, expected", [
    ("2026-11-26", True, "2026-11-26T23:59:59.999000+00:00"),
    ("20261126", True, "2026-11-26T23:59:59.999000+00:00"),  # ISO 8601 basic format: a date, not midnight
    ("2026-W48-4", True, "2026-11-26T23:59:59.999000+00:00"),
    ("20261126", False, "2026-11-26T00:00:00+00:00"),
    ("9999-12-31", True, "9999-12-31T23:59:59.999000+00:00"),
    ("2026-11-26T00:00", True, "2026-11-26T00:00:00+00:00"),  # a time given: exactly that moment
    ("2026-11-26T10:00+02:00", True, "2026-11-26T08:00:00+00:00"),  # in UTC, as MongoDB keeps it
])
def test_a_date_without_a_time_part_covers_its_whole_day_as_to(text, end, expected) -> None:
    from archiver.search import parse_date
    assert parse_date(text, end=end).isoformat() == expected


def test_to_in_basic_iso_format_finds_the_same_entries_as_the_extended_one(archived, tmp_path, capsys) -> None:
    """`--to 20261126` read as midnight dropped the whole day from the search."""
    config, entries = archived
    day = entries[0]["ended_at"].date()
    that_day = sorted(e["room"] for e in entries if e["ended_at"].date() == day)
    for to in (day.isoformat(), day.strftime("%Y%m%d"), "%d-W%02d-%d" % day.isocalendar()):
        assert _cli(config, tmp_path, "search", "--from", day.strftime("%Y%m%d"), "--to", to, "--json") == 0
        assert sorted(e["room"] for e in json.loads(capsys.readouterr().out)) == that_day, to


@pytest.mark.parametrize("start, end", [("9999-12-31", "0001-01-01"), ("2026-11-27", "20261126"),
                                        ("2026-11-26T12:00", "2026-11-26T11:59:59")])
def test_a_reversed_window_is_a_usage_error_naming_both_dates(archived, tmp_path, capsys, start, end) -> None:
    """--from after --to matches nothing: said to be an error, not answered with an empty list."""
    config, _ = archived
    assert _cli(config, tmp_path, "search", "--from", start, "--to", end) == 2
    said = capsys.readouterr()
    assert said.out == "" and f"--from {start!r} is after --to {end!r}" in said.err, said.err
    assert _cli(config, tmp_path, "search", "--from", end, "--to", start) == 0  # the same window, the right way round


def test_nothing_is_shown_unless_the_audit_log_records_it(archived, tmp_path, monkeypatch, capsys) -> None:
    """Results were printed, then the entry written: a full disk delivered them with no entry."""
    from retrieval_helpers import refuse_audit
    config, _ = archived
    refuse_audit(monkeypatch, config)
    assert _cli(config, tmp_path, "search", "--json") == 1
    out = capsys.readouterr()
    assert out.out == "" and "the audit log could not be written" in out.err and "nothing was shown" in out.err


def test_a_search_cut_short_by_its_reader_is_audited_with_every_room(nx_uri, db_names, tmp_path) -> None:
    """`archiver search | head -3`: the entry said "failed", rooms [], though rooms had been shown."""
    import datetime as dt
    import subprocess
    import sys
    from pathlib import Path
    from archiver.mongo import connect
    db = connect(nx_uri)[db_names["index.database"]]
    rooms = [f"CHAT_DEFAULT_{n:08d}" for n in range(3000)]  # far more than a pipe holds
    db["archive_index"].insert_many([{"room": r, "version": 1, "status": "archived", "customers": ["4747"],
                                      "agents": [], "ended_at": dt.datetime(2025, 6, 1)} for r in rooms])
    toml = write_toml(tmp_path / "a.toml", {"mongodb.uri": nx_uri, "index.database": db_names["index.database"]})
    archiver = Path(sys.executable).parent / "archiver"
    done = subprocess.run(f"'{archiver}' --config '{toml}' search --from 2025-01-01 | head -3", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert len(done.stdout.splitlines()) == 3 and rooms[0] in done.stdout, done
    (entry,) = db["archive_audit"].find()
    assert entry["outcome"] == "ok" and entry["rooms_total"] == 3000 and entry["rooms"] == rooms[:1000]


def test_the_rooms_hash_of_an_entry_recomputes_from_the_output_as_the_docs_say(archived, tmp_path, capsys) -> None:
    """docs/retrieval.md: `jq -r '.[].room' | LC_ALL=C sort -u | sha256sum`, and the Python line, over
    `search --json` give the entry's rooms_sha256 (room ids beyond ASCII sort alike in both)."""
    import datetime as dt
    import subprocess
    config, entries = archived
    odd = ["CHAT_é", "CHAT_Z", "CHAT_z", "CHAT_\U0001F600", "CHAT_\u00a0"]
    index(config).insert_many([{"room": r, "version": 1, "status": "archived", "ended_at": dt.datetime(2025, 6, 1)}
                               for r in odd])
    assert _cli(config, tmp_path, "search", "--json") == 0
    out = capsys.readouterr().out
    entry = audit(config)[-1]
    assert entry["rooms_total"] == len(entries) + len(odd)
    shell = subprocess.run("jq -r '.[].room' | LC_ALL=C sort -u | sha256sum", shell=True, input=out,
                           capture_output=True, text=True, check=True)
    assert shell.stdout.split()[0] == entry["rooms_sha256"]
    line = ('import hashlib, json, sys; print(hashlib.sha256("".join(r + "\\n" for r in sorted({e["room"] '
            'for e in json.load(sys.stdin)})).encode()).hexdigest())')
    python = subprocess.run(["python3", "-c", line], input=out, capture_output=True, text=True, check=True)
    assert python.stdout.strip() == entry["rooms_sha256"]


@pytest.mark.parametrize("text", ["2026-W48", "2026W48", "2026-W48T10:00"])
def test_a_week_without_its_day_is_refused_not_read_as_its_monday(text, archived, tmp_path, capsys) -> None:
    """`hold place --from 2026-W48 --to 2026-W48` held Monday's chats only (Python reads a week as its Monday),
    and retention could delete the rest of the week the team meant to hold."""
    from archiver.search import parse_date

    with pytest.raises(ValueError, match="a week without its day"):
        parse_date(text, end=True)
    config, _ = archived
    assert _cli(config, tmp_path, "search", "--to", text) == 2
    assert "a week without its day" in capsys.readouterr().err


def test_no_word_hash_is_made_of_a_card_shaped_number_redaction_did_not_see() -> None:
    """Digits redaction does not read as digits (superscripts, or a mark between groups that the word
    splitter drops) left a card number unmasked, and its keyed hash in `terms`: anyone with the search key
    could confirm the card against the index. A Luhn-valid run of 13 to 19 digits is never hashed; other
    numbers are, as before."""
    from archiver.search import entry_terms, term_hashes

    key = b"k" * 32
    terms = set(entry_terms(["amex ³⁷⁸²⁸²²⁴⁶³¹⁰⁰⁰⁵", "6011\u03071111\u03071111\u03071117", "card 4111111111111111",
                             "order 4111111111111112 ref 12345"], key))
    for card in ("378282246310005", "6011111111111117", "4111111111111111"):
        assert term_hashes([card], key)[0] not in terms, card
    for word in ("4111111111111112", "12345", "amex", "order"):  # not Luhn-valid, or not card-length: kept
        assert term_hashes([word], key)[0] in terms, word


def test_a_card_number_in_text_filters_is_refused_before_it_reaches_the_audit_log(archived, tmp_path, capsys) -> None:
    """A card number is never a word (it would find nothing), and the audit log records filters as typed:
    `search --text 4111111111111111` put a full card number into a hash-chained log under seal."""
    from archiver.holds import open_holds

    config, entries = archived
    assert _cli(config, tmp_path, "search", "--text", "refund 4111111111111111") == 2
    assert "card number" in capsys.readouterr().err
    toml = write_toml(tmp_path / "h.toml", {k: config[k] for k in (
        "mongodb.uri", "index.database", "search.key_file", "storage.url", "source.database")})
    assert main(["--config", str(toml), "hold", "place", "--text", "4111111111111111", "--case", "K",
                 "--reason", "r"]) == 2
    assert "card number" in capsys.readouterr().err
    assert audit(config) == [] and open_holds(config).listing(everything=True) == []


def test_one_conversion_of_a_date_bound_to_utc_serves_search_and_holds() -> None:
    """`utc_bound` (a hold's stored bound: None outside years 1-9999 in UTC) is what `parse_date` (the command
    line's: refused there) uses."""
    from archiver import holds
    from archiver.search import parse_date, utc_bound

    assert holds.utc_bound is utc_bound
    assert utc_bound("2026-11-26T10:00") == dt.datetime(2026, 11, 26, 10, tzinfo=dt.timezone.utc)
    assert utc_bound("2026-11-26T10:00+02:00") == dt.datetime(2026, 11, 26, 8, tzinfo=dt.timezone.utc)
    assert utc_bound("9999-12-31T23:59:59-01:00") is None and utc_bound("0001-01-01T00:30:00+01:00") is None
    with pytest.raises(ValueError):
        utc_bound("not a date")
    with pytest.raises(ValueError, match="outside years 1-9999 in UTC"):
        parse_date("9999-12-31T23:59:59-01:00", end=True)
    with pytest.raises(ValueError, match="is not a date"):
        parse_date("not a date", end=False)


def _unstated_first(chat: dict, role: bool, person: str) -> None:
    """PERSON writes CHAT's messages of ROLE (isAgent), the first of them with no isAgent (a greeting the platform
    sent under their id, a channel adapter that omits it)."""
    mine = [m for m in chat["messages"] if m["data"]["content"]["user"].get("isAgent") is role
            and m["data"]["messageType"] == "TEXT"]
    for m in mine:
        m["data"]["content"]["user"]["id"] = person
    del mine[0]["data"]["content"]["user"]["isAgent"]
    assert len(mine) > 1


def test_agent_and_customer_find_a_chat_whatever_role_the_person_s_first_message_states(make_config) -> None:
    """Review "lossless" F2: the index took each author's role from their first message, so an agent whose first
    message states none (a transferred chat: the contact's agentID names another) was in neither `agents` nor
    `customers`, and --agent missed the chat docs/search.md says it finds. A person whose messages never state a
    role is found by either filter; the signed record says 'unknown' for them (verify agrees)."""
    import random

    from archiver.pipeline import Archiver
    from archiver.samples import make_chat
    from test_pipeline import recent_ms, seed
    config = make_config(search__key_file="")
    chat, contact = make_chat(random.Random(5), messages=6, start_ms=recent_ms(30))
    _unstated_first(chat, True, "USER_bee@acd.example.com")
    chat["messages"][0]["data"]["content"]["user"] = {"id": "ghost"}  # never states a role
    contact["agentID"] = "USER_another@acd.example.com"
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    assert _rooms(config, agent="USER_bee@acd.example.com") == [chat["room"]]
    assert _rooms(config, customer="USER_bee@acd.example.com") == []
    assert _rooms(config, agent="ghost") == _rooms(config, customer="ghost") == [chat["room"]]
    (entry,) = index(config).find()
    assert {"user_id": "ghost", "role": "unknown", "nickname": ""} in entry["participants"]


def test_the_table_marks_an_agent_who_is_also_a_customer_and_json_is_unchanged(make_config, tmp_path, capsys) -> None:
    """A sender whose messages state no role is in both `agents` and `customers` (docs/search.md): the table's
    AGENTS column listed them among the agents without a hint; it marks them, with a footnote saying why."""
    config = make_config()
    chat, contact = make_chat(random.Random(3), messages=4, start_ms=recent_ms(30))
    chat["messages"][1]["data"]["content"]["user"] = {"id": "555000111"}  # no isAgent: role not stated
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    assert _cli(config, tmp_path, "search", "--room", chat["room"]) == 0
    table = capsys.readouterr().out.splitlines()
    row = next(line for line in table if line.startswith(chat["room"]))
    agents = row.split()[-1].split(",")
    assert "555000111*" in agents and not any(a.endswith("*") for a in agents if a != "555000111*"), row
    assert table[-1] == "* also among the chat's customers: its messages state no role for this id, or both"
    assert _cli(config, tmp_path, "search", "--room", chat["room"], "--json") == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert "555000111" in entry["agents"] and "555000111" in entry["customers"], "--json lists the ids as indexed"


def test_the_table_has_no_footnote_when_no_agent_is_also_a_customer(archived, tmp_path, capsys) -> None:
    config, entries = archived
    assert not any(set(e["agents"]) & set(e["customers"]) for e in entries)
    assert _cli(config, tmp_path, "search") == 0
    out = capsys.readouterr().out
    assert "*" not in out and out.splitlines()[-1] == f"{len(entries)} entries"


def test_the_table_shows_entries_whose_people_fields_were_edited_into_other_shapes(archived, tmp_path,
                                                                                   capsys) -> None:
    """Review of the change: the table's AGENTS column read `customers` to mark ids in both, and died (after the
    audit entry said ok) on an entry whose `customers` was a number or held a document."""
    config, entries = archived
    index(config).update_one({"_id": entries[0]["_id"]}, {"$set": {"customers": 5}})
    index(config).update_one({"_id": entries[1]["_id"]}, {"$set": {"customers": [{"x": 1}], "agents": [7, "A1"]}})
    assert _cli(config, tmp_path, "search") == 0
    out = capsys.readouterr().out
    assert f"{len(entries)} entries" in out and entries[0]["room"] in out and entries[1]["room"] in out, out


def test_a_customers_own_erasures_are_named_done_or_not_and_only_for_that_exact_id() -> None:
    import mongomock

    db = mongomock.MongoClient().db
    at = dt.datetime(2026, 11, 20, 9, tzinfo=dt.timezone.utc)
    db.runs.insert_many([
        {"_id": "erasure-1", "kind": "erasure", "state": "done", "params": {"customer": "C1"}, "started_at": at,
         "finished_at": at},
        {"_id": "erasure-2", "kind": "erasure", "state": "executing", "params": {"customer": "C1"},
         "started_at": at + dt.timedelta(days=1)},
        {"_id": "retention-1", "kind": "retention", "state": "done", "params": {"customer": "C2"}, "started_at": at},
    ])
    search = Search(db.entries, None, None, db.runs)
    assert search.own_erasures("C1") == [
        "--customer 'C1': erased at this customer's request (erasure run erasure-1 on 2026-11-20); what it erased "
        "is gone from the index",
        "--customer 'C1': an erasure at this customer's request has not finished (run erasure-2; the next "
        "`archiver erase` finishes it): some of their chats may be gone already"]
    assert search.own_erasures("c1") == [] and search.own_erasures("C2") == []  # exact ids, erasures only
    assert Search(db.entries, None).own_erasures("C1") == []  # no runs collection: nothing said
    assert search.exact_notes(SearchFilters(customer="C1"))[:2] == search.own_erasures("C1")
    assert not any("matched nothing" in note for note in search.exact_notes(SearchFilters(customer="C1")))


_ERASED_AT = dt.datetime(2026, 11, 20, 9, tzinfo=dt.timezone.utc)


def test_a_run_abandoned_while_planning_is_not_said_to_be_finished_by_the_next_erase() -> None:
    """A crash while an erasure of C1 was planning: the next run of the kind (for any customer) marks it
    "abandoned while planning" (RunLedger.unfinished): nothing of it was done, and no later `archiver erase`
    resumes it (unfinished() resumes only executing/reporting runs). Search told the user the opposite."""
    import mongomock

    from archiver.runs import RunLedger

    db = mongomock.MongoClient().db
    ledger = RunLedger(db.runs, db.steps)
    ledger.begin("erasure", _ERASED_AT, {"customer": "C1", "reason": "GDPR 1", "include_shared": False})  # then a crash
    assert ledger.unfinished("erasure") is None  # the next erase: C1's plan dropped, not resumed
    (run,) = db.runs.find({})
    assert run["state"] == "abandoned while planning"
    notes = Search(db.entries, None, None, db.runs).own_erasures("C1")
    assert not any("the next `archiver erase` finishes it" in n or "may be gone already" in n for n in notes), notes
    assert notes == [f"--customer 'C1': an erasure at this customer's request was not carried out (run {run['_id']} "
                     "(abandoned while planning)): nothing of it was erased; erase again"]


def test_an_erased_customers_chats_that_other_filters_exclude_are_still_said_to_exist() -> None:
    """C1 asked for erasure (a run done) and has chats in the index since (archived later, or kept by a hold
    or as shared). `search --customer C1 --service Sales` finds none: the note that C1 has entries the other
    filters exclude was dropped along with the similar-id look-up, leaving only "what it erased is gone"."""
    import mongomock

    db = mongomock.MongoClient().db
    db.runs.insert_one({"_id": "erasure-1", "kind": "erasure", "state": "done", "params": {"customer": "C1"},
                        "started_at": _ERASED_AT, "finished_at": _ERASED_AT})
    db.entries.insert_one({"room": "R", "version": 1, "status": "archived", "customers": ["C1"],
                           "service": "Support", "ended_at": _ERASED_AT + dt.timedelta(days=3)})
    search = Search(db.entries, None, None, db.runs)
    filters = SearchFilters(customer="C1", service="Sales")
    assert list(search.find(filters)) == []
    notes = search.exact_notes(filters)
    assert "--customer 'C1' has entries: the other filters exclude them all" in notes, notes
