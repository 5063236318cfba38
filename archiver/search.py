"""Searching the archive index: metadata filters and keyed hashes of words, never plaintext.

Each index entry may carry `terms`: HMAC-SHA256 (truncated to 128 bits) of every
distinct normalised word of its messages, under a key the legal team holds
(`search.key_file`). Searching for words hashes them with the same key; the index
holds no readable text, and without the key its hashes cannot be tested against
guesses. See docs/search.md for the trade-off.

Filters are data: every value is compared with `$eq` (or used as a date bound),
so a value such as '{"$ne": null}' or "$gt" is just a string that matches nothing.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import re
import unicodedata
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.errors import ExecutionTimeout

from archiver.config import Config, ConfigError
from archiver.index import index_database
from archiver.mongo import stored_time
from archiver.redaction import CARD_LENGTHS, luhn
from archiver.redact import key_material_refusal

TERM_HEX = 32  # 128 bits of each HMAC: collisions are negligible, entries stay small
# An entry's `terms_format`: 3, invisible characters dropped before words are split (see `words`). Format 2
# kept combining marks in words but cut a word at an invisible character ("fr\u00adaud" became fr, aud); entries
# without one were hashed by `\w+` alone, which cut a word at each mark too ("किताब" became क, त, ब). Entries of
# each earlier format are also searched by the words that format made (text_conditions).
TERMS_FORMAT = 3


@functools.cache
def _word() -> re.Pattern[str]:
    """Runs of letters, digits and the combining marks on them (made at first use: 0.1 s)."""
    # Every mark (Mn, Mc, Me) as ranges of a character class; they are in planes 0, 1 and 14 only.
    marks = [c for c in (*range(0x20000), *range(0xE0000, 0xE1000)) if unicodedata.category(chr(c)) in _MARK]
    ranges = [(c, c) for c in marks[:1]]
    for c in marks[1:]:
        ranges[-1:] = [(ranges[-1][0], c)] if c == ranges[-1][1] + 1 else [ranges[-1], (c, c)]
    return re.compile("[\\w" + "".join(f"{chr(a)}-{chr(b)}" for a, b in ranges) + "]+")


_MARK = ("Mn", "Mc", "Me")
# Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties): characters shown as nothing, which pasting from
# a word processor leaves inside words (a soft hyphen) or one types to slip a word past keyword monitoring (a
# zero-width space, a word joiner, a variation selector, tag characters). Dropped before words are split, on both
# sides, so "fr\u00adaud" is the word "fraud". NFKC and case folding never make one (a test checks).
_IGNORABLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
                        "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
                        "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]")
_WORD_BEFORE_FORMAT_2 = re.compile(r"\w+")
# Marks that writing leaves out as often as not, so a word is found with or without them: the dot above
# that İ case-folds to (i + U+0307), Arabic vowel marks (harakat, superscript alef), Hebrew points and
# cantillation marks (not the maqaf, paseq, sof pasuq or nun hafukha, which are punctuation).
_OPTIONAL_MARKS = re.compile("[\u0307\u064b-\u065f\u0670\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7]")
# (field, why) for every index a search relies on; ArchiveIndex.ensure_indexes creates them.
_INDEXED = [("room", "--room (room_version, also the sort order)"), ("ended_at", "--from/--to"),
            ("started_at", "--from/--to --overlapping"),
            ("agents", "--agent"), ("customers", "--customer"), ("opened_by", "--customer (who opened the chat)"),
            ("handled_by", "--agent (who handled the chat)"), ("present", "--agent (whom else the contact names)"),
            ("ctlive_type", "--type"),
            ("channel", "--channel"), ("service", "--service"), ("status", "--status"),
            ("terms", "--text")]
# What --json prints for each entry: stable names, documented in docs/search.md.
OUTPUT_FIELDS = ("room", "version", "status", "kind", "started_at", "ended_at", "ctlive_type", "channel",
                 "service", "agents", "customers", "opened_by", "handled_by", "present", "message_count", "archived_at", "store",
                 "objects", "deletion")  # a tombstone's: which run deleted it, under which rule, when


# The filters whose values a search that finds nothing says something of (exact_notes).
_NOTED = ("service", "channel", "ctlive_type", "customer", "agent")


def search_indexes() -> list[tuple[str, str]]:
    return list(_INDEXED)


@dataclass(frozen=True)
class SearchFilters:
    room: str | None = None
    ended_from: dt.datetime | None = None
    ended_to: dt.datetime | None = None
    agent: str | None = None
    customer: str | None = None
    ctlive_type: str | None = None
    channel: str | None = None
    service: str | None = None
    status: str | None = None
    text: str | None = None
    # With ended_from/ended_to: the chats whose span (start to end) overlaps that window, not those that ended in
    # it (review "court" C19). True or None (not given), so that `given` names it only when it was.
    overlapping: bool | None = None

    def given(self) -> dict[str, Any]:
        """The filters set, for the audit log."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def load_search_key(path: str) -> bytes:
    """The key in PATH: hex text of at least 32 bytes."""
    refusal = key_material_refusal("search.key_file", path)  # the key itself, not its path: never quoted
    if refusal:
        raise ConfigError(refusal)
    try:
        text = Path(path).read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
    except OSError as exc:
        raise ConfigError(f"search.key_file: {path}: cannot read ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"search.key_file: {path}: must hold the key as hex (openssl rand -hex 32)") from None
    if len(key) < 32:
        raise ConfigError(f"search.key_file: {path}: the key must be at least 32 bytes (64 hex digits)")
    return key


def words(text: str) -> set[str]:
    """Distinct words of TEXT: invisible characters dropped, NFKC, case-folded, optional marks dropped, runs of
    letters, digits and marks; never a card-shaped number (below)."""
    return {word for word in _all_words(text) if not _card_shaped(word)}


def words_format_2(text: str) -> set[str]:
    """What `words` was for entries of terms_format 2: invisible characters were word breaks (or, for the
    marks among them, part of the word)."""
    return {word for word in _words_kept_invisible(text) if not _card_shaped(word)}


def has_card_number(text: str) -> bool:
    """Whether TEXT holds a card-shaped number: never a word, so a filter by it is refused (it would find
    nothing, and the audit log would record it as typed)."""
    return any(_card_shaped(word) for word in _all_words(text))


def _all_words(text: str) -> set[str]:
    return _words_kept_invisible(_IGNORABLE.sub("", text))


def _words_kept_invisible(text: str) -> set[str]:
    return set(_word().findall(_OPTIONAL_MARKS.sub("", unicodedata.normalize("NFKC", text).casefold())))


def _card_shaped(word: str) -> bool:
    """A Luhn-valid run of 13 to 19 ASCII digits: a card number redaction did not see (digits it does not
    read as digits, such as superscripts, which NFKC makes ASCII here). Its keyed hash would let anyone with
    the search key confirm the card against the index, so it is never a word."""
    return len(word) in CARD_LENGTHS and word.isascii() and word.isdigit() and luhn(word.encode("ascii"))


def words_before_format_2(text: str) -> set[str]:
    """What `words` was for entries without terms_format: cut at every mark, none dropped."""
    return set(_WORD_BEFORE_FORMAT_2.findall(unicodedata.normalize("NFKC", text).casefold()))


def term_hashes(found: Iterable[str], key: bytes) -> list[str]:
    return sorted({hmac.new(key, w.encode("utf-8"), "sha256").hexdigest()[:TERM_HEX] for w in found})


def person_trace(user_id: str, key: bytes) -> str:
    """A customer's id as an erased shared chat's tombstone keeps it (`deletion.shared_with`): keyed as word
    hashes are, with a prefix of its own (never equal to the hash of the same text as a word)."""
    return term_hashes([f"customer id\x00{user_id}"], key)[0]


def entry_terms(texts: Iterable[str], key: bytes) -> list[str]:
    """The `terms` of an index entry: hashes of every word of TEXTS."""
    found: set[str] = set()
    for text in texts:
        found |= words(text)
    return term_hashes(found, key)


_EQUALITY = {"room": "room", "ctlive_type": "ctlive_type",
             "channel": "channel", "service": "service", "status": "status"}
# A person filter: the messages' authors in that role, or the contact's people (transcript.CONTACT_PEOPLE; for an
# agent, also whom else the contact names, transcript.contact_present). docs/search.md says which ids each reads.
_PEOPLE = {"customer": ("customers", ("opened_by",)), "agent": ("agents", ("handled_by", "present"))}


def contact_unknown(field: str) -> dict[str, Any]:
    """Entries indexed before FIELD (opened_by, handled_by, present) was, that no retention run could derive it
    for (the contact gone)."""
    return {field: {"$exists": False}, "$or": [
        {"status": "archived"}, {"status": "deleted", "deletion.state": "deleting"}]}


def build_query(filters: SearchFilters, key: bytes | None, unknown_contact: bool = False) -> dict[str, Any]:
    """The MongoDB query for FILTERS; every value is data ($eq), never an operator. A customer is one who
    wrote in the chat (`customers`) or opened it (`opened_by`), an agent one who wrote in it (`agents`), handled
    it (`handled_by`) or whom else the contact names (`present`: transferred to, say); UNKNOWN_CONTACT (a hold's):
    or anyone, for an entry that predates one of those contact fields (contact_unknown: it cannot be ruled out)."""
    query: dict[str, Any] = {}
    for name, field in _EQUALITY.items():
        value = getattr(filters, name)
        if value is not None:
            query[field] = {"$eq": _text(name, value)}
    for name, (authors, contact_fields) in _PEOPLE.items():
        if getattr(filters, name) is not None:
            person = _text(name, getattr(filters, name))
            query.setdefault("$and", []).append({"$or": [
                {authors: {"$eq": person}}, *({field: {"$eq": person}} for field in contact_fields),
                *(contact_unknown(field) for field in contact_fields if unknown_contact)]})
    if filters.overlapping:
        query.setdefault("$and", []).extend(_overlapping(filters))
    else:
        ended: dict[str, dt.datetime] = {}
        if filters.ended_from is not None:
            ended["$gte"] = _date("ended_from", filters.ended_from)
        if filters.ended_to is not None:
            ended["$lte"] = _date("ended_to", filters.ended_to)
        if ended:
            query["ended_at"] = ended
    if filters.text is not None:
        if key is None:
            raise ConfigError("search.key_file: text search needs the search key (not set): a file of 32 random "
                              "bytes as hex (openssl rand -hex 32 > search.key; chmod 600 search.key), set before "
                              "the chats are archived: those archived without it have no word hashes (docs/search.md)")
        query["$or"] = text_conditions(_text("text", filters.text), key)
    return query


def _overlapping(filters: SearchFilters) -> list[dict[str, Any]]:
    """The entries whose span overlaps FILTERS' window: from the earlier of started_at and ended_at to the later
    (a start after the end is a clock skew: which of the two is wrong is not known), so one of the two is at or
    before the window's end and one at or after its start. An entry without a start (or with one that is not a
    date) is placed by its end alone, as without --overlapping; one without an end, by its start."""
    conditions = []
    for name, bound, operator in (("ended_to", filters.ended_to, "$lte"), ("ended_from", filters.ended_from, "$gte")):
        if bound is not None:
            at = _date(name, bound)
            conditions.append({"$or": [{"started_at": {operator: at}}, {"ended_at": {operator: at}}]})
    return conditions


def in_window(filters: SearchFilters, started_at: dt.datetime | None, ended_at: dt.datetime | None) -> bool:
    """Whether a chat of STARTED_AT and ENDED_AT (either None) is in FILTERS' date window as build_query selects
    an entry: by its end, or with `overlapping` by its span (see _overlapping); without either time, never."""
    times = [t for t in ((started_at,) if filters.overlapping else ()) + (ended_at,) if t is not None]
    if not times:
        return False
    return ((filters.ended_to is None or min(times) <= filters.ended_to)
            and (filters.ended_from is None or max(times) >= filters.ended_from))


# Each earlier terms_format (None: entries without one) and the words it made.
_EARLIER_WORDS = ((2, words_format_2), (None, words_before_format_2))


def text_conditions(text: str, key: bytes) -> list[dict[str, Any]]:
    """The entries that have every word of TEXT, as alternatives of an $or: one, or, where the words an
    earlier terms_format made differ, one for each format, by its own words (`$all` of nothing: no word given)."""
    hashes = term_hashes(words(text), key)
    earlier = [(form, term_hashes(rule(text), key)) for form, rule in _EARLIER_WORDS]
    if all(found == hashes for _, found in earlier):
        return [{"terms": {"$all": hashes}}]
    return [{"terms_format": TERMS_FORMAT, "terms": {"$all": hashes}},
            *({"terms_format": {"$exists": False} if form is None else form, "terms": {"$all": found}}
              for form, found in earlier)]


def no_words(query: dict[str, Any]) -> bool:
    """Whether QUERY (build_query's) asks for words and names none (only punctuation): it matches nothing."""
    return "$or" in query and not any(c["terms"]["$all"] for c in query["$or"])


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"search filter {name}: must be text, got {type(value).__name__}")
    return value


def _date(name: str, value: Any) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise TypeError(f"search filter {name}: must be a datetime, got {type(value).__name__}")
    return value


SEARCH_KEY_STATE = "search_key"  # the index state document naming the key its word hashes were made with


def key_fingerprint(key: bytes) -> str:
    """What the index records of a search key: enough to tell two keys apart, nothing to find words with."""
    return hmac.new(key, b"archiver search key fingerprint", "sha256").hexdigest()[:16]


def record_search_key(state: Collection, entries: Collection, key: bytes, at: dt.datetime) -> None:
    """Before the archive pass writes word hashes: the index remembers the key's fingerprint and since when
    entries carry them (the oldest entry that already has some, else AT). ConfigError if its hashes were
    made with another key (a search with either would silently miss the chats of the other)."""
    if state.find_one({"_id": SEARCH_KEY_STATE}) is None:
        first = entries.find_one({"terms.0": {"$exists": True}}, {"archived_at": 1},
                                 sort=[("archived_at", ASCENDING)])
        since = first.get("archived_at") if first and isinstance(first.get("archived_at"), dt.datetime) else at
        state.update_one({"_id": SEARCH_KEY_STATE},
                         {"$setOnInsert": {"fingerprint": key_fingerprint(key), "since": since}}, upsert=True)
    same_key(state.find_one({"_id": SEARCH_KEY_STATE}), key)


def key_required(state: Collection) -> None:
    """Before an archive pass without search.key_file: ConfigError if the index records a search key (its
    word hashes are in use), since every chat the pass archived could never be found by --text."""
    recorded = state.find_one({"_id": SEARCH_KEY_STATE})
    if recorded is not None:
        since = recorded.get("since")
        raise ConfigError(
            f"search.key_file: not set, but the index's word hashes are made with a search key (fingerprint "
            f"{recorded.get('fingerprint')}" + (f", in use since {since:%Y-%m-%d %H:%M} UTC" if isinstance(
                since, dt.datetime) else "") + "): the chats archived without it could never be found by --text; "
            "set search.key_file to that key")


def same_key(recorded: dict[str, Any] | None, key: bytes) -> None:
    if recorded is not None and recorded.get("fingerprint") != key_fingerprint(key):
        raise ConfigError(f"search.key_file: not the key the index's word hashes were made with (fingerprint "
                          f"{recorded.get('fingerprint')}, this one {key_fingerprint(key)}): words would not be found")


def _loose(text: str) -> str:
    """TEXT as a person may type it: Unicode compatibility form, case folded."""
    return unicodedata.normalize("NFKC", text).casefold()


_SIMILAR = 5  # similar ids a note names
_CANDIDATES = 50  # entries read for them (per query): bounded, and only after a search found nothing
_LOOKUP_MS = 5000  # and for this long at most: no index serves a case-insensitive regex on a display name
_PATTERN_BYTES = 30000  # at most, in a look-up's pattern (MongoDB refuses one of 32,764 bytes or more)
_ARRAYS = ("customers", "agents", "present")  # person fields holding lists of ids (opened_by, handled_by: one)


def _matching(texts: Iterable[str], array: bool, other_than: str | None = None) -> dict[str, Any]:
    """A condition: the field (ARRAY: one of its strings; the stand-in nx-27017 matches a regex on an array's
    strings only through $elemMatch) is one of TEXTS, ignoring case, and not OTHER_THAN. Every character but
    ASCII letters and digits is written \\xHH (ASCII) or as itself, which MongoDB's PCRE and Python's re (mongomock)
    both read as that character alone: a value is never a pattern."""
    literal = ["".join(c if c.isascii() and c.isalnum() else f"\\x{ord(c):02x}" if c.isascii() else c for c in t)
               for t in sorted(texts)]
    condition = {"$regex": "^(?:" + "|".join(literal) + ")$", "$options": "i",
                 **({"$ne": other_than} if other_than is not None else {})}
    return {"$elemMatch": condition} if array else condition


def _held(entry: dict[str, Any], fields: Iterable[str]) -> set[str]:
    """The ids ENTRY's person FIELDS hold: their strings (a list's or the field's own)."""
    values = [entry.get(field) for field in fields]
    return {v for value in values for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)}


class Search:
    def __init__(self, entries: Collection, key: bytes | None, state: Collection | None = None,
                 runs: Collection | None = None) -> None:
        self.entries = entries
        self.key = key
        self.state = state
        self.runs = runs  # the deletion runs (index.retention_runs): a customer's own erasures are said

    def text_note(self, count: int | None = None) -> str:
        """What a --text search cannot see: archived entries without word hashes, counted ("" if none); COUNT:
        `unsearchable()` when the caller has it already."""
        if self.state is None or self.state.find_one({"_id": SEARCH_KEY_STATE}) is None:
            return "no archived entry has word hashes yet (search.key_file was not set when they were archived)"
        count = self.unsearchable() if count is None else count
        if not count:
            return ""  # every archived entry has them: nothing to warn of
        return (f"{count} archived entr{'y has' if count == 1 else 'ies have'} no word hashes (archived while "
                "search.key_file was not set): --text cannot find them")

    def exact_notes(self, filters: SearchFilters) -> list[str]:
        """For a search that found nothing: values are compared exactly; for --service, --channel and --type, the
        index's values equal to the one given but for case and Unicode form (few: one distinct() each); for
        --customer and --agent, the similar ids the index has (similar_ids: bounded queries, no distinct())."""
        notes = []
        unmatched = {field for field in _NOTED if getattr(filters, field) is not None
                     and not self._matches(SearchFilters(**{field: getattr(filters, field)}))}
        for field, option in (("service", "--service"), ("channel", "--channel"), ("ctlive_type", "--type")):
            given = getattr(filters, field)
            if field in unmatched:
                near = sorted(v for v in self.entries.distinct(field) if isinstance(v, str) and v != given
                              and _loose(v) == _loose(given))[:5]
                if near:
                    notes.append(f"{option} {given!r} matched nothing: values are compared exactly; the index has "
                                 + ", ".join(repr(v) + self._excluded(filters, field, v, unmatched) for v in near))
        own = self.own_erasures(filters.customer) if filters.customer is not None else []
        if filters.customer is not None:
            notes += [*own, *self.erased_for_others(filters.customer)]
        people = []
        for role in ("customer", "agent"):
            given = getattr(filters, role)
            if given is None:
                continue
            if role not in unmatched:  # another filter found nothing, not the id
                notes.append(f"--{role} {given!r} has entries: the other filters exclude them all")
                continue
            if role == "customer" and own:
                continue  # (an erased customer's id is no typo: no similar ids offered for it)
            similar, complete = self.similar_ids(role, given)
            if not complete:
                notes.append(f"--{role}: the look-up of ids similar to {given!r} stopped early (it reads "
                             f"{_CANDIDATES} entries for {_LOOKUP_MS // 1000} s at most): there may be others than "
                             "those named")
            if not similar:
                people.append(f"--{role}")
                continue
            notes.append(f"--{role} {given!r} matched nothing: ids are compared exactly; the index has " + ", ".join(
                repr(found) + (f" (named {name!r})" if name else " (another Unicode form)" if _loose(found) == _loose(
                    given) and found.casefold() != given.casefold() else "")  # else the two may look the same
                + self._excluded(filters, role, found, unmatched) for found, name in similar))
        if people:
            notes.append(f"nothing matched: {' and '.join(people)} {'is' if len(people) == 1 else 'are'} compared "
                         "exactly with the user id the platform stores (case and Unicode form included; not a name)")
        return notes

    def similar_ids(self, role: str, given: str) -> tuple[list[tuple[str, str]], bool]:
        """The ids of ROLE (customer, agent) the index has that GIVEN may have meant, as (id, name), at most
        _SIMILAR: equal under _loose, or so with the USER_ prefix added or removed (name ""), or the id of a
        participant in that role whose nickname is GIVEN under _loose (name: that nickname); and whether the
        index was searched in full (False: a query ran out of time, or read _CANDIDATES entries). Read by anchored case-insensitive regexes of
        GIVEN's Unicode forms, each on _CANDIDATES entries and _LOOKUP_MS at most, then checked here; none for
        a GIVEN whose pattern could be too long for MongoDB (_PATTERN_BYTES: thousands of characters, no id)."""
        fields = (_PEOPLE[role][0], *_PEOPLE[role][1])
        loose = _loose(given)
        ids = {loose, "user_" + loose} | ({loose[5:]} if loose.startswith("user_") else set())
        forms = {unicodedata.normalize(form, given) for form in ("NFC", "NFD", "NFKC", "NFKD")}
        # and its full case folding: a pattern ignores simple case alone ("straße" would not find "STRASSE")
        spelt = {*forms, loose}
        spelt |= {"USER_" + f for f in spelt} | {f[5:] for f in spelt if f[:5].casefold() == "user_"}
        if 4 * sum(len(text.encode("utf-8", "replace")) for text in spelt) > _PATTERN_BYTES:  # \xHH: 4 a byte
            return [], True
        found: dict[str, str] = {}
        by_id = {"$or": [{field: _matching(spelt, field in _ARRAYS, other_than=given)} for field in fields]}
        by_name = {"participants": {"$elemMatch": {"nickname": _matching(forms, False)}}}
        entries, complete = self._candidates(by_id, fields)
        for entry in entries:
            for value in sorted(_held(entry, fields)):
                if value != given and _loose(value) in ids:
                    found.setdefault(value, "")
        entries, named_in_full = self._candidates(by_name, (*fields, "participants"))
        for entry in entries:
            held = _held(entry, fields)  # the participant must be one of ROLE in that chat
            for person in entry.get("participants") if isinstance(entry.get("participants"), list) else []:
                if (isinstance(person, dict) and person.get("user_id") in held and person["user_id"] != given
                        and isinstance(person.get("nickname"), str) and _loose(person["nickname"]) == loose):
                    found.setdefault(person["user_id"], person["nickname"])
        return sorted(found.items())[:_SIMILAR], complete and named_in_full

    def _candidates(self, query: dict[str, Any], fields: Iterable[str]) -> tuple[list[dict[str, Any]], bool]:
        """Up to _CANDIDATES entries QUERY matches (FIELDS of each), read in _LOOKUP_MS at most; and whether
        all were read (False: out of time, or _CANDIDATES read and more may match, of other ids too)."""
        read: list[dict[str, Any]] = []
        try:
            for entry in self.entries.find(query, {**dict.fromkeys(fields, 1), "_id": 0}).limit(
                    _CANDIDATES).max_time_ms(_LOOKUP_MS):
                read.append(entry)
        except ExecutionTimeout:
            return read, False
        return read, len(read) < _CANDIDATES

    def _excluded(self, filters: SearchFilters, field: str, value: str, unmatched: set[str]) -> str:
        """A mark for VALUE offered for FIELD when, in its place, the other FILTERS still find nothing: offered bare,
        it would send the reader to a second empty search. The filters in UNMATCHED (each finds nothing alone: the
        reader puts them right too) are left out of that check; no mark without other filters."""
        tried = replace(filters, **{**dict.fromkeys(unmatched), field: value})
        if tried == SearchFilters(**{field: value}) or self._matches(tried):
            return ""
        return " (no entry of it with the other filters)"

    def _matches(self, filters: SearchFilters) -> bool:
        """Whether any entry matches FILTERS (one filter the search had: it is not that filter that found nothing)."""
        return self.entries.find_one(build_query(filters, self.key), {"_id": 1}) is not None

    def erased_note(self, customer: str) -> list[str]:
        """What was erased of CUSTOMER: at their own request, then at another customer's."""
        return [*self.own_erasures(customer), *self.erased_for_others(customer)]

    def own_erasures(self, customer: str) -> list[str]:
        """CUSTOMER's own erasures (`erase --customer`), by run and day, so that finding nothing does not read as a
        mistyped id. A run's record keeps the id it was asked for: the request, which the erasure must be able to
        show. [] if none (or no runs collection)."""
        if self.runs is None:
            return []
        runs = list(self.runs.find({"kind": "erasure", "params.customer": {"$eq": customer}},
                                   {"state": 1, "finished_at": 1, "started_at": 1}).sort("started_at", 1))
        done = [f"{run['_id']} on {when:%Y-%m-%d}" if (when := stored_time(run.get("finished_at"))) else str(run["_id"])
                for run in runs if run.get("state") == "done"]
        # (runs.py: only these are finished by the next run of the kind; one abandoned, or cut short while it
        # planned, deleted nothing and is never resumed)
        unfinished = [str(run["_id"]) for run in runs if run.get("state") in ("executing", "reporting")]
        dropped = [f"{run['_id']} ({run.get('state')})" for run in runs
                   if run.get("state") not in ("done", "executing", "reporting", "planning")]
        notes = []
        if done:
            notes.append(f"--customer {customer!r}: erased at this customer's request (erasure run{'s' * (len(done) > 1)} "
                         f"{'; '.join(done)}); what it erased is gone from the index")
        if unfinished:
            notes.append(f"--customer {customer!r}: an erasure at this customer's request has not finished (run "
                         f"{', '.join(unfinished)}; the next `archiver erase` finishes it): some of their chats may "
                         "be gone already")
        if dropped and not done:
            notes.append(f"--customer {customer!r}: an erasure at this customer's request was not carried out (run "
                         f"{', '.join(dropped)}): nothing of it was erased; erase again")
        return notes

    def erased_for_others(self, customer: str) -> list[str]:
        """The chats of CUSTOMER erased at another customer's request (`erase --include-shared`), which keep only
        a keyed trace of them (retention.Deletions): counted, with the runs and days; [] if none, or without the key."""
        if self.key is None:
            return []
        # the whole `deletion` (nx-27017 answers a projection of fields inside it with them flattened)
        erased = list(self.entries.find({"status": "deleted", "deletion.shared_with": person_trace(customer, self.key)},
                                        {"deletion": 1, "_id": 0}))
        if not erased:
            return []
        runs = set()
        for entry in erased:
            deletion = entry.get("deletion") if isinstance(entry.get("deletion"), dict) else {}
            when = stored_time(deletion.get("at"))
            runs.add(f"{deletion.get('run')} on {when:%Y-%m-%d}" if when else str(deletion.get("run")))
        one = len(erased) == 1
        return [f"{len(erased)} chat{'' if one else 's'} of this customer {'was' if one else 'were'} erased at another "
                f"customer's request (erasure run {'; '.join(sorted(runs))}); {'its' if one else 'their'} content is gone"]

    def agent_unindexed(self, filters: SearchFilters) -> int:
        """For --agent: how many archived entries were indexed before `present` was (0 without --agent)."""
        if filters.agent is None:
            return 0
        return self.entries.count_documents({"present": {"$exists": False}, "status": "archived"})

    def agent_note(self, filters: SearchFilters, count: int | None = None) -> str:
        """For --agent: the archived entries indexed before `present` was (COUNT, if counted already), said ("" if
        none), which it finds by their authors and handled_by alone until their field is recorded
        (retention.derive_contact_people)."""
        count = self.agent_unindexed(filters) if count is None else count
        if not count:
            return ""
        one = count == 1
        return (f"{count} archived entr{'y was' if one else 'ies were'} indexed before `present` (who the contact "
                "names beside the messages' authors) was: --agent finds "
                f"{'it' if one else 'them'} by the authors and the contact's agentID alone, not an agent the chat was "
                "transferred to who wrote nothing, until a retention run or `hold place --agent` records it from the "
                "source contact (docs/search.md)")

    def unsearchable(self) -> int:
        """How many archived entries have no word hashes (archived without search.key_file)."""
        return self.entries.count_documents({"terms": {"$exists": False}, "status": "archived"})

    def without_start(self, filters: SearchFilters, named: int = 100) -> tuple[int, list[str]]:
        """Of the entries an overlapping selection by FILTERS finds, how many have no start (none, or not a time),
        so were placed by their end time alone, and the rooms of the first NAMED; (0, []) otherwise. Read here,
        not asked with $type: the stand-in nx-27017 implements no $not, and returns a date written with $set
        (every archived entry's) as ISO text."""
        if not filters.overlapping:
            return 0, []
        query = build_query(filters, self.key)
        if no_words(query):
            return 0, []
        count, rooms = 0, []
        for entry in self.entries.find(query, {"room": 1, "started_at": 1, "_id": 0}).sort(
                [("room", ASCENDING), ("version", ASCENDING)]):
            if stored_time(entry.get("started_at")) is None:
                count += 1
                rooms += [entry["room"]] if len(rooms) < named else []
        return count, rooms

    def find(self, filters: SearchFilters) -> Iterator[dict[str, Any]]:
        """Matching entries, streamed, in (room, version) order; bad filters raise before any output."""
        if filters.text is not None and self.key is not None and self.state is not None:
            same_key(self.state.find_one({"_id": SEARCH_KEY_STATE}), self.key)
        query = build_query(filters, self.key)
        if no_words(query):
            return iter(())  # words asked for, none given (only punctuation): nothing matches, not everything
        projection = {name: 1 for name in OUTPUT_FIELDS} | {"_id": 0}
        return iter(self.entries.find(query, projection).sort([("room", ASCENDING), ("version", ASCENDING)]))


def open_search(config: Config) -> Search:
    config.require("mongodb.uri")
    db = index_database(config)
    key = load_search_key(config["search.key_file"]) if config["search.key_file"] else None
    return Search(db[config["index.entries"]], key, db[config["index.state"]], db[config["index.retention_runs"]])


_WEEK_WITHOUT_DAY = re.compile(r"\d{4}-?W\d{2}(?![-\d])")


def parse_date(text: str, *, end: bool) -> dt.datetime:
    """ISO date or date-time (UTC unless it says otherwise); a date without a time part, however spelt
    (2026-11-26, 20261126, 2026-W48-4), as --to covers that whole day (to the millisecond MongoDB keeps).
    A week without its day is refused: Python reads it as its Monday, which a hold by dates would keep alone.
    Returned in UTC; a time outside years 1-9999 there (9999-12-31T23:59:59-01:00) is refused: MongoDB
    cannot store it, and a hold by it would stop every later retention run."""
    if _WEEK_WITHOUT_DAY.match(text):
        raise ValueError(f"{text!r} is a week without its day (say which: 2026-W48-1 ... 2026-W48-7, or give "
                         "--from its Monday and --to its Sunday)")
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return dt.datetime.combine(day, dt.time(23, 59, 59, 999000) if end else dt.time.min, dt.timezone.utc)
    try:
        value = utc_bound(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM])") from None
    if value is None:
        raise ValueError(f"{text!r} is outside years 1-9999 in UTC")
    return value


def utc_bound(text: str) -> dt.datetime | None:
    """TEXT (an ISO date-time, UTC unless it says otherwise) in UTC; None outside years 1-9999 there (a hold's
    bound stored before `hold place` refused those: holds.py leaves it out). ValueError: TEXT is no date-time."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    try:
        return value.astimezone(dt.timezone.utc)
    except OverflowError:
        return None
