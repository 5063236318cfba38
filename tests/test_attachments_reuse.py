"""A new version of a changed chat (a contact document or wrap-up field updated, a late message) keeps the
files an earlier version of the room stored, matched by message id and URL, as an attachment retry does:
contact-centre links expire, so fetching them again would leave the latest version without files the
archive holds (docs/attachments.md, "New versions of a changed chat")."""

from __future__ import annotations

import copy

import pytest
from bson import ObjectId

from archiver.integrity import verify_archive
from archiver.pipeline import Archiver
from attachment_server import PDF, png
from retrieval_helpers import overwrite_stored, remove_stored
from test_attachments_archive import _recipient, attaching, chat_with, pdf_text, record_of
from test_pipeline import connect, entries, index_db, open_object, seed

PHOTO = png((120, 80), "green")


def _changed(config, chat, change: dict) -> None:
    source = connect(config["mongodb.uri"])[config["source.database"]]
    assert source[config["source.chats"]].update_one({"room": chat["room"]}, change).modified_count == 1


def _replaced(config, chat) -> None:
    """The source chat replaced by CHAT (edited by the test)."""
    source = connect(config["mongodb.uri"])[config["source.database"]]
    assert source[config["source.chats"]].replace_one({"room": chat["room"]}, chat).modified_count == 1


def _inserted_before(chat) -> dict:
    """CHAT with a text message inserted after its first: every later message moves one position on."""
    changed = copy.deepcopy(chat)
    late = copy.deepcopy(changed["messages"][0])
    late["_id"], late["data"]["id"] = ObjectId(), "inserted-later"
    changed["messages"].insert(1, late)
    return changed


def _archived_with_photo(make_config, server, files, **overrides):
    """A chat archived with /a.png stored (message 4, id file-0); the link has expired since. Its config,
    chat and first entry."""
    config = attaching(make_config, server, **overrides)
    files.add("/a.png", PHOTO)
    chat, contact = chat_with([("IMAGE", f"{server}/a.png")])
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    (first,) = entries(config)
    assert [a["outcome"] for a in first["attachments"]] == ["fetched"]
    del files.routes["/a.png"]
    return config, chat, first


def _second(config) -> dict:
    report = Archiver(config).run_pass(full=True)
    assert report.archived == 1, report
    return entries(config)[-1]


def test_a_new_version_of_a_changed_chat_keeps_the_files_an_earlier_version_stored(make_config, server, files
                                                                                    ) -> None:
    config = attaching(make_config, server)
    files.add("/a.png", png((120, 80), "green"))
    chat, contact = chat_with([("IMAGE", f"{server}/a.png")])
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    (first,) = entries(config)
    assert [a["outcome"] for a in first["attachments"]] == ["fetched"]

    del files.routes["/a.png"]  # the link has expired since
    _changed(config, chat, {"$set": {"wrapUp": "billing"}})
    report = Archiver(config).run_pass(full=True)
    assert report.archived == 1, report
    _, second = entries(config)
    outcome = [(a["outcome"], a["reason"]) for a in second["attachments"]]
    assert outcome == [("fetched", "")], (
        f"version 2 (the latest) has {outcome} for the file version 1 stored; requests: {files.requests}")
    assert files.requests.count("/a.png") == 1


def test_a_message_inserted_before_the_file_keeps_it_at_its_new_position(make_config, keys, server, files,
                                                                         tmp_path) -> None:
    config, chat, first = _archived_with_photo(make_config, server, files)
    _replaced(config, _inserted_before(chat))
    second = _second(config)
    assert files.requests.count("/a.png") == 1  # matched by message id and URL, not by position
    kept, before = second["objects"]["attachment-5"], first["objects"]["attachment-4"]
    assert kept["key"].startswith(second["folder"] + "/") and open_object(config, keys, kept) == PHOTO
    assert (kept["sha256"], kept["plaintext_sha256"], kept["fetched_at"]) == (
        before["sha256"], before["plaintext_sha256"], before["fetched_at"])
    assert kept["match_sha256"] == before["match_sha256"] and len(kept["match_sha256"]) == 64
    # the index keeps a hash of message id and URL, never the URL (an object's key may end "…a.png.p7m": its hex)
    assert "/a.png" not in repr(second) and server not in repr(second)
    (listed,) = record_of(config, keys, second)["attachments"]
    assert (listed["position"], listed["message_id"], listed["kept_from_version"]) == (5, "file-0", 1)
    assert "kept from version 1, not fetched again" in pdf_text(config, keys, second, tmp_path)
    assert "attachments_retry_until" not in second  # nothing failed: no retry of a dead link
    assert verify_archive(config, [chat["room"]], _recipient(keys)).ok


def test_a_message_whose_url_changed_has_its_file_fetched_anew(make_config, keys, server, files) -> None:
    config, chat, _ = _archived_with_photo(make_config, server, files)
    files.add("/b.pdf", PDF)
    changed = copy.deepcopy(chat)
    changed["messages"][3]["data"]["content"]["url"] = f"{server}/b.pdf"  # the same message id, file-0
    _replaced(config, changed)
    second = _second(config)
    assert files.requests.count("/b.pdf") == 1 and files.requests.count("/a.png") == 1
    assert open_object(config, keys, second["objects"]["attachment-4"]) == PDF
    assert "kept_from_version" not in record_of(config, keys, second)["attachments"][0]


@pytest.mark.parametrize("ids", ["missing", "duplicated"])
@pytest.mark.parametrize("inserted", [False, True])
def test_without_a_unique_message_id_the_file_is_kept_only_at_the_same_position(make_config, keys, server, files,
                                                                                ids, inserted) -> None:
    config = attaching(make_config, server)
    files.add("/a.png", PHOTO)
    chat, contact = chat_with([("IMAGE", f"{server}/a.png")])
    if ids == "missing":
        del chat["messages"][3]["data"]["id"]
    else:  # another message of the chat has its id
        chat["messages"][3]["data"]["id"] = chat["messages"][0]["data"]["id"]
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    del files.routes["/a.png"]
    _replaced(config, _inserted_before(chat) if inserted else {**chat, "wrapUp": "billing"})
    second = _second(config)
    (listed,) = record_of(config, keys, second)["attachments"]
    if inserted:  # position and URL no longer both match: fetched again (the link is dead), never guessed
        assert files.requests.count("/a.png") == 2
        assert (listed["outcome"], listed["reason"], listed["position"]) == ("failed", "HTTP 404", 5)
    else:
        assert files.requests.count("/a.png") == 1 and listed["kept_from_version"] == 1
        assert open_object(config, keys, second["objects"]["attachment-4"]) == PHOTO


@pytest.mark.parametrize("damage", ["altered", "removed"])
@pytest.mark.parametrize("link", ["expired", "alive"])
def test_a_stored_file_that_no_longer_verifies_is_fetched_again_never_trusted(make_config, keys, server, files,
                                                                              damage, link) -> None:
    config, chat, first = _archived_with_photo(make_config, server, files)
    key = first["objects"]["attachment-4"]["key"]
    overwrite_stored(config, key, b"not what was stored") if damage == "altered" else remove_stored(config, key)
    if link == "alive":
        files.add("/a.png", PHOTO)
    _changed(config, chat, {"$set": {"wrapUp": "billing"}})
    second = _second(config)
    assert files.requests.count("/a.png") == 2  # asked for again: the stored copy was not trusted
    (listed,) = record_of(config, keys, second)["attachments"]
    assert "kept_from_version" not in listed
    if link == "alive":
        assert listed["outcome"] == "fetched" and open_object(config, keys, second["objects"]["attachment-4"]) == PHOTO
    else:  # named as missing in the latest version, and retried
        assert (listed["outcome"], listed["reason"]) == ("failed", "HTTP 404") and second["attachments_retry_until"]


def test_a_copy_that_no_longer_verifies_gives_way_to_an_older_versions(make_config, keys, server, files) -> None:
    config, chat, _ = _archived_with_photo(make_config, server, files)
    _changed(config, chat, {"$set": {"wrapUp": "billing"}})
    second = _second(config)
    overwrite_stored(config, second["objects"]["attachment-4"]["key"], b"not what was stored")
    _changed(config, chat, {"$set": {"wrapUp": "refund"}})
    third = _second(config)
    assert files.requests.count("/a.png") == 1
    assert record_of(config, keys, third)["attachments"][0]["kept_from_version"] == 1
    assert open_object(config, keys, third["objects"]["attachment-4"]) == PHOTO


def test_after_the_recipients_changed_a_new_version_fetches_its_files_again(make_config, keys, server, files,
                                                                            tmp_path) -> None:
    from certfactory import make
    config, chat, first = _archived_with_photo(make_config, server, files)
    files.add("/a.png", PHOTO)
    second_reader = make(tmp_path / "auditor", "Auditor")
    widened = attaching(make_config, server, encryption__recipients=[str(keys["legal.crt.pem"]), str(second_reader.cert_path)])
    _changed(config, chat, {"$set": {"wrapUp": "billing"}})
    second = _second(widened)
    assert files.requests.count("/a.png") == 2 and len(second["recipients"]) == 2
    assert second["objects"]["attachment-4"]["sha256"] != first["objects"]["attachment-4"]["sha256"]
    assert "kept_from_version" not in record_of(config, keys, second)["attachments"][0]


def test_a_version_archived_without_match_keys_has_its_files_fetched_again(make_config, keys, server, files) -> None:
    config, chat, first = _archived_with_photo(make_config, server, files)
    assert index_db(config)[config["index.entries"]].update_one(  # as versions archived before match keys were
        {"_id": first["_id"]}, {"$unset": {"objects.attachment-4.match_sha256": ""}}).modified_count == 1
    _changed(config, chat, {"$set": {"wrapUp": "billing"}})
    second = _second(config)
    assert files.requests.count("/a.png") == 2
    assert record_of(config, keys, second)["attachments"][0]["outcome"] == "failed"


def test_a_new_version_never_keeps_another_rooms_file(make_config, keys, server, files) -> None:
    """Review att2 #1: an index edit points room A's version 1 at room B's stored photo. A's next version must
    not copy and sign B's photo as the file A's message linked: an object outside A v1's own folder is not kept."""
    config = attaching(make_config, server)
    files.add("/a.png", PHOTO)
    files.add("/b.png", png((120, 80), "red"))
    chat_a, contact_a = chat_with([("IMAGE", f"{server}/a.png")], seed_=1)
    chat_b, contact_b = chat_with([("IMAGE", f"{server}/b.png")], seed_=2)
    assert chat_a["room"] != chat_b["room"]
    seed(config, [(chat_a, contact_a), (chat_b, contact_b)])
    assert Archiver(config).run_pass().archived == 2
    by_room = {e["room"]: e for e in entries(config)}
    first_a, b = by_room[chat_a["room"]], by_room[chat_b["room"]]
    forged = {f"objects.attachment-4.{k}": v for k, v in b["objects"]["attachment-4"].items()
              if k not in ("match_sha256", "position")}  # A's match key left as it was
    index_db(config)[config["index.entries"]].update_one({"_id": first_a["_id"]}, {"$set": forged})

    del files.routes["/a.png"]  # A's link has expired
    _changed(config, chat_a, {"$set": {"wrapUp": "billing"}})
    assert Archiver(config).run_pass(full=True).archived == 1
    (second_a,) = [e for e in entries(config) if e["room"] == chat_a["room"] and e["version"] == 2]
    (listed,) = record_of(config, keys, second_a)["attachments"]
    assert listed["outcome"] == "failed" and "kept_from_version" not in listed  # fetched again: its link is dead
    assert "attachment-4" not in second_a["objects"] and files.requests.count("/a.png") == 2


def test_a_file_kept_counts_in_max_bytes_per_chat_before_any_fetch(make_config, server, files) -> None:
    """Review att2 #2: version 1 stored message 5's file (15 kB), message 4's failed. Version 2 keeps message 5's
    file first; message 4's no longer fits in max_bytes_per_chat (20 kB) and is refused, as a fetch over it is."""
    cap = 20_000
    config = attaching(make_config, server, attachments__max_bytes=15_000, attachments__max_bytes_per_chat=cap)
    files.add("/a.bin", b"a" * 15_000, status=503)  # message 4: fails now, retried later
    files.add("/b.bin", b"b" * 15_000)  # message 5: stored by version 1
    chat, contact = chat_with([("DOCUMENT", f"{server}/a.bin"), ("DOCUMENT", f"{server}/b.bin")])
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    (first,) = entries(config)
    assert [a["outcome"] for a in first["attachments"]] == ["failed", "fetched"]

    files.add("/a.bin", b"a" * 15_000)  # the server answers now
    _changed(config, chat, {"$set": {"wrapUp": "billing"}})
    second = _second(config)
    stored = {n: o["plaintext_size"] for n, o in second["objects"].items() if n.startswith("attachment-")}
    assert sum(stored.values()) <= cap and stored == {"attachment-5": 15_000}
    four, five = second["attachments"]
    assert (four["outcome"], five["outcome"], five.get("kept_from_version")) == ("refused", "fetched", 1)
    assert "max_bytes_per_chat" in four["reason"]


@pytest.mark.parametrize("forged", ["another room's folder", "another version's folder", "another object's name",
                                    "not in attachment_keys", "another object's SHA-256"])
def test_a_retry_and_a_new_version_keep_only_an_entrys_own_objects(forged: str) -> None:
    from archiver import attachment_retries
    from archiver.names import version_folder

    def entry(key: str, sha: str = "c" * 64, listed: bool = True) -> dict:
        obj = {"key": key, "sha256": sha, "plaintext_sha256": "p" * 64, "plaintext_size": 10, "position": 4,
               "content_type": "image/png", "match_sha256": "m" * 64}
        return {"room": "R1", "version": 1, "status": "archived", "objects": {"attachment-4": obj},
                "attachment_keys": [key] if listed else []}

    own = f"{version_folder('R1', 1)}/attachment-4-{'c' * 16}.png.p7m"
    assert attachment_retries.kept(entry(own))[4].key == own
    assert attachment_retries.earlier([entry(own)], 2)[0].files["m" * 64].key == own
    bad = {"another room's folder": entry(f"{version_folder('R2', 1)}/attachment-4-{'c' * 16}.png.p7m"),
           "another version's folder": entry(f"{version_folder('R1', 2)}/attachment-4-{'c' * 16}.png.p7m"),
           "another object's name": entry(f"{version_folder('R1', 1)}/attachment-5-{'c' * 16}.png.p7m"),
           "not in attachment_keys": entry(own, listed=False),
           "another object's SHA-256": entry(own, sha="d" * 64)}[forged]
    assert attachment_retries.kept(bad) == {} and attachment_retries.earlier([bad], 2) == ()


def _sealed_with_photo(make_config, server, files, tmp_path):
    """A chat archived with /a.png stored on a day since sealed; the link has expired since. Its config, chat and
    entry."""
    from test_seals import DAY, backdate, built_on, seal_cli

    config = attaching(make_config, server)
    files.add("/a.png", PHOTO)
    chat, contact = chat_with([("IMAGE", f"{server}/a.png")])
    seed(config, [(chat, contact)])
    with built_on():
        assert Archiver(config).run_pass().archived == 1
    backdate(config)
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    del files.routes["/a.png"]
    (first,) = entries(config)
    return config, chat, first


def test_an_entry_that_no_longer_matches_its_seal_has_its_files_fetched_again(make_config, keys, server, files,
                                                                               tmp_path) -> None:
    """Review att2 #1: on a sealed day the earlier entry must still match its seal for its files to be kept."""
    config, chat, first = _sealed_with_photo(make_config, server, files, tmp_path)
    # An edit the read-back cannot see (the object's hash stays right) but the seal's leaf covers.
    assert index_db(config)[config["index.entries"]].update_one(
        {"_id": first["_id"]}, {"$inc": {"objects.attachment-4.size": 1}}).modified_count == 1
    _changed(config, chat, {"$set": {"wrapUp": "billing"}})
    second = _second(config)
    assert files.requests.count("/a.png") == 2 and "attachment-4" not in second["objects"]
    assert record_of(config, keys, second)["attachments"][0]["outcome"] == "failed"


def test_an_entry_that_matches_its_seal_has_its_files_kept(make_config, keys, server, files, tmp_path) -> None:
    config, chat, _ = _sealed_with_photo(make_config, server, files, tmp_path)
    _changed(config, chat, {"$set": {"wrapUp": "billing"}})
    second = _second(config)
    assert files.requests.count("/a.png") == 1
    assert record_of(config, keys, second)["attachments"][0]["kept_from_version"] == 1


def test_a_pending_mark_on_the_days_seal_does_not_make_its_entries_trusted(make_config, keys, server, files,
                                                                            tmp_path) -> None:
    """Seal review HIGH-1: the day's complete seal record marked pending (dated far ahead, as if being made
    forever) is still the day's seal: the edited earlier entry's files are fetched again, not kept."""
    config, chat, first = _sealed_with_photo(make_config, server, files, tmp_path)
    db = index_db(config)
    assert db[config["index.seals"]].update_one({}, {"$set": {"pending": {
        "owner": "x", "at": 10**15, "folder": "~seals/x"}}}).modified_count == 1
    assert db[config["index.entries"]].update_one(
        {"_id": first["_id"]}, {"$inc": {"objects.attachment-4.size": 1}}).modified_count == 1
    _changed(config, chat, {"$set": {"wrapUp": "billing"}})
    second = _second(config)
    assert files.requests.count("/a.png") == 2 and "attachment-4" not in second["objects"]
