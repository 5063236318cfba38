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
    assert "a.png" not in repr(second)  # the index keeps a hash of message id and URL, never the URL
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
