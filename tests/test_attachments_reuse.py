"""A new version of a changed chat (a contact document or wrap-up field updated, a late message) keeps the
files an earlier version of the room stored, matched by message id and URL, as an attachment retry does:
contact-centre links expire, so fetching them again would leave the latest version without files the
archive holds (docs/attachments.md, "New versions of a changed chat")."""

from __future__ import annotations

from archiver.pipeline import Archiver
from attachment_server import png
from test_attachments_archive import attaching, chat_with
from test_pipeline import connect, entries, seed


def _changed(config, chat, change: dict) -> None:
    source = connect(config["mongodb.uri"])[config["source.database"]]
    assert source[config["source.chats"]].update_one({"room": chat["room"]}, change).modified_count == 1


def test_a_new_version_of_a_changed_chat_keeps_the_files_an_earlier_version_stored(make_config, server, files
                                                                                    ) -> None:
    config = attaching(make_config)
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
