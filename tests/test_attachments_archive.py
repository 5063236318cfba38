"""Attachments through the archive pass: stored encrypted beside the transcript, described in the
record, the index and the PDF; a file that cannot be fetched never stops the chat; retrieval and
verification treat the files like the other objects."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from bson import ObjectId

from archiver.integrity import verify_archive
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from archiver.store import open_store
from attachment_server import PDF, jpeg, png
from conftest import require_tool
from retrieval_helpers import overwrite_stored, run_cli
from test_pipeline import entries, index_db, open_object, recent_ms, seed


def attaching(make_config, server: str, **overrides):
    """A configuration that fetches from the test server on 127.0.0.1 (at SERVER, its URL), and only there."""
    return make_config(**{"attachments__enabled": True, "attachments__hosts": ["127.0.0.1"],
                          "attachments__allowed_networks": ["127.0.0.1/32"], "attachments__timeout_seconds": 2.0,
                          "attachments__ports": [urlsplit(server).port], **overrides})


def chat_with(urls: list[tuple[str, str]], seed_: int = 1) -> tuple[dict, dict]:
    """A short ended chat whose customer sends a file of each (message type, URL) before the end."""
    chat, contact = make_chat(random.Random(seed_), messages=4, start_ms=recent_ms())
    for m in chat["messages"]:  # no sample links to files.example.com: only the files we name
        if m["data"]["messageType"] in ("IMAGE", "DOCUMENT", "LINK"):
            m["data"]["messageType"], m["data"]["content"] = "TEXT", {"text": "ok", "user": m["data"]["content"]["user"]}
    end = chat["messages"].pop()
    customer = chat["messages"][0]["data"]["content"]["user"]
    for i, (kind, url) in enumerate(urls):
        chat["messages"].append({"data": {"replyTo": "", "id": f"file-{i}", "messageType": kind,
                                          "content": {"url": url, "user": customer}, "ts": end["data"]["ts"] - 1000 + i,
                                          "deliverySuccess": True, "deliveryErrorReason": "", "messageSeen": None},
                                 "_id": ObjectId(), "room": chat["room"]})
    chat["messages"].append(end)
    return chat, contact


def record_of(config, keys, entry) -> dict:
    return json.loads(open_object(config, keys, entry["objects"]["record"]))


def pdf_text(config, keys, entry, tmp_path: Path) -> str:
    path = tmp_path / "t.pdf"
    path.write_bytes(open_object(config, keys, entry["objects"]["pdf"]))
    return subprocess.run([require_tool("pdftotext"), "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def test_images_and_documents_are_archived_and_decrypt_to_the_same_bytes(make_config, keys, server, files,
                                                                           tmp_path) -> None:
    image, photo = png((300, 200)), jpeg()
    files.add("/m/photo.png", image)
    files.add("/m/scan.jpg", photo)
    files.add("/m/contract.pdf", PDF)
    config = attaching(make_config, server)
    chat, contact = chat_with([("IMAGE", f"{server}/m/photo.png"), ("IMAGE", f"{server}/m/scan.jpg"),
                               ("DOCUMENT", f"{server}/m/contract.pdf")])
    seed(config, [(chat, contact)])
    report = Archiver(config).run_pass()
    assert report.archived == 1 and report.ok
    (entry,) = entries(config)
    names = [f"attachment-{p}" for p in (4, 5, 6)]
    assert set(entry["objects"]) == {"pdf", "record", "record_signature", *names}
    for name, data, kind in zip(names, (image, photo, PDF), ("image/png", "image/jpeg", "application/pdf")):
        obj = entry["objects"][name]
        assert open_object(config, keys, obj) == data  # also checks both recorded SHA-256
        assert obj["plaintext_size"] == len(data) and obj["content_type"] == kind and obj["fetched_at"]
        assert obj["key"].startswith(entry["folder"] + "/") and obj["key"] in entry["attachment_keys"]
    assert [(a["position"], a["outcome"], a["sha256"]) for a in entry["attachments"]] == [
        (4, "fetched", hashlib.sha256(image).hexdigest()), (5, "fetched", hashlib.sha256(photo).hexdigest()),
        (6, "fetched", hashlib.sha256(PDF).hexdigest())]
    assert "attachments_retry_until" not in entry
    listed = record_of(config, keys, entry)["attachments"]
    assert [(a["file_name"], a["size"], a["content_type"], a["object"]) for a in listed] == [
        ("photo.png", len(image), "image/png", names[0]), ("scan.jpg", len(photo), "image/jpeg", names[1]),
        ("contract.pdf", len(PDF), "application/pdf", names[2])]
    text = pdf_text(config, keys, entry, tmp_path)
    for a in listed:
        assert a["file_name"] in text and a["sha256"] in text.replace("\n", "").replace(" ", "").replace("│", "")
    # openssl, not our code, opens an attachment
    sealed = tmp_path / "photo.p7m"
    sealed.write_bytes(open_store(config).get(entry["objects"][names[0]]["key"]))
    opened = subprocess.run(["openssl", "cms", "-decrypt", "-inform", "DER", "-binary", "-in", str(sealed),
                             "-inkey", str(keys["legal.key.pem"])], capture_output=True, check=True).stdout
    assert opened == image


def test_the_index_entry_names_no_attachment_url_or_file_name(make_config, keys, server, files) -> None:
    """docs/attachments.md: the index is not encrypted, so its `attachments` and `objects` carry each outcome
    without URL or file name (the signed, encrypted record has them)."""
    from bson import json_util

    files.add("/private/Secret-Settlement-ACME.png", png((30, 20)))
    config = attaching(make_config, server)
    chat, contact = chat_with([("IMAGE", f"{server}/private/Secret-Settlement-ACME.png"),
                               ("DOCUMENT", f"{server}/gone/Medical-Report-J-Doe.pdf")])
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    (entry,) = entries(config)
    assert [(a["position"], a["outcome"]) for a in entry["attachments"]] == [(4, "fetched"), (5, "failed")]
    listed = record_of(config, keys, entry)["attachments"]  # the record does name them: what the index must not
    assert [a["file_name"] for a in listed] == ["Secret-Settlement-ACME.png", "Medical-Report-J-Doe.pdf"]
    text = json_util.dumps(entry)
    for secret in ("Secret-Settlement", "Medical-Report", server.split("//")[1], "/private/", "/gone/"):
        assert secret not in text, (secret, text)


def test_the_index_entry_quotes_no_url_credentials_and_no_host_a_server_redirected_to(make_config, keys, server,
                                                                                      files) -> None:
    """docs/attachments.md: a reason is fixed wording; it never quotes the URL (a password a customer pasted
    into it) or a host a server chose (a redirect's, which may spell a card number). The index is not
    encrypted and outlives erasure; the record names the message's URL itself. The host redirected to is
    refused before it is resolved: only the test server, on 127.0.0.1, is asked for anything."""
    from bson import json_util

    host = server.split("//", 1)[1]
    files.add("/r1.png", b"", status=302, Location="http://4111-1111-1111-1111.attacker.example/x.png")
    files.add("/r2.png", b"", status=302, Location=f"http://patient-jane-doe:hiv-positive@{host}/x.png")
    config = attaching(make_config, server)
    seed(config, [chat_with([("DOCUMENT", f"http://jane.doe:MyBankPassw0rd@{host}/statement.pdf"),
                             ("IMAGE", f"{server}/r1.png"), ("IMAGE", f"{server}/r2.png")])])
    assert Archiver(config).run_pass().archived == 1
    (entry,) = entries(config)
    assert [(a["outcome"], a["reason"]) for a in entry["attachments"]] == [
        ("refused", "user information in the URL"), ("refused", "redirected: host not in attachments.hosts"),
        ("refused", "redirected: user information in the URL")]
    text = json_util.dumps(entry)
    # (the redirect's host whole: "4111" alone turns up by chance in the entry's hashes, ids and times)
    for secret in ("MyBankPassw0rd", "jane.doe", "4111-1111-1111-1111", "attacker", "hiv-positive", "patient-jane-doe"):
        assert secret not in text, (secret, text)
    record = record_of(config, keys, entry)["attachments"]
    assert [a["reason"] for a in record] == [a["reason"] for a in entry["attachments"]]  # the same words
    assert "4111-1111" not in json.dumps(record) and "hiv-positive" not in json.dumps(record)  # a server's words
    assert files.requests == ["/r1.png", "/r2.png"]


@pytest.mark.parametrize("path, outcome, reason", [
    ("/missing.png", "failed", "HTTP 404"),
    ("/slow.png", "failed", "timed out"),
    ("/big.png", "refused", "too big"),
])
def test_a_file_that_cannot_be_fetched_leaves_the_chat_archived_with_the_reason(
        make_config, keys, server, files, tmp_path, path, outcome, reason) -> None:
    files.add("/big.png", png((800, 800), "green") + b"\0" * 2000)
    files.add("/slow.png", png())
    files.stall = 4.0
    files.add("/ok.png", png())
    config = attaching(make_config, server, attachments__max_bytes=2000, attachments__timeout_seconds=1.0)
    chat, contact = chat_with([("IMAGE", f"{server}{path}"), ("IMAGE", f"{server}/ok.png")])
    seed(config, [(chat, contact)])
    report = Archiver(config).run_pass()
    assert report.archived == 1 and report.ok
    (entry,) = entries(config)
    bad, good = entry["attachments"]
    assert (bad["outcome"], good["outcome"]) == (outcome, "fetched") and reason in bad["reason"]
    assert "attachment-4" not in entry["objects"] and "attachment-5" in entry["objects"]
    assert (bad["reason"] in record_of(config, keys, entry)["attachments"][0]["reason"])
    text = pdf_text(config, keys, entry, tmp_path)
    assert f"File not archived ({outcome})" in text and reason in text
    assert ("attachments_retry_until" in entry) == (outcome == "failed")


def test_a_host_not_allowed_is_refused_and_the_chat_archived(make_config, keys, server, files, tmp_path) -> None:
    files.add("/x.png", png())
    config = attaching(make_config, server, attachments__hosts=["media.example.com"])
    chat, contact = chat_with([("IMAGE", f"{server}/x.png")])
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    (entry,) = entries(config)
    (refused,) = entry["attachments"]
    assert (refused["outcome"], refused["reason"]) == ("refused", "host not in attachments.hosts")
    assert files.requests == []  # nothing was asked of the server
    assert "not in attachments.hosts" in pdf_text(config, keys, entry, tmp_path)


def test_disabled_by_default_nothing_is_fetched(make_config, server, files) -> None:
    files.add("/x.png", png())
    config = make_config()
    seed(config, [chat_with([("IMAGE", f"{server}/x.png")])])
    assert Archiver(config).run_pass().archived == 1
    (entry,) = entries(config)
    assert set(entry["objects"]) == {"pdf", "record", "record_signature"} and "attachments" not in entry
    assert files.requests == []


def test_retrieve_writes_the_files_and_verify_checks_them(make_config, keys, server, files, tmp_path) -> None:
    image = png()
    files.add("/m/photo%201.png", image)
    files.add("/m/c.pdf", PDF)
    config = attaching(make_config, server)
    seed(config, [chat_with([("IMAGE", f"{server}/m/photo%201.png"), ("DOCUMENT", f"{server}/m/c.pdf")])])
    assert Archiver(config).run_pass().archived == 1
    (entry,) = entries(config)
    out = tmp_path / "out"
    assert run_cli(config, tmp_path, "retrieve", entry["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(out), "--reason", "case 7") == 0
    (folder,) = out.iterdir()
    assert (folder / "attachments" / "0004-photo_1.png").read_bytes() == image
    assert (folder / "attachments" / "0005-c.pdf").read_bytes() == PDF
    report = json.loads((folder / "verification.json").read_text())
    assert report["files"]["attachments/0004-photo_1.png"]["sha256"] == hashlib.sha256(image).hexdigest()
    assert "attachment-4" in report["objects"]

    key = _recipient(keys)
    assert verify_archive(config, None).ok  # the store's listing: the attachments are explained
    assert verify_archive(config, [entry["room"]], key).ok

    overwrite_stored(config, entry["objects"]["attachment-4"]["key"], b"tampered")
    problems = [str(p) for p in verify_archive(config, None).problems]
    assert any("attachment-4" in p and "altered" in p for p in problems), problems


def test_an_attachment_swapped_in_store_and_index_is_caught_by_the_signed_record(make_config, keys, server, files
                                                                                 ) -> None:
    files.add("/x.png", png())
    config = attaching(make_config, server)
    seed(config, [chat_with([("IMAGE", f"{server}/x.png")])])
    assert Archiver(config).run_pass().archived == 1
    (entry,) = entries(config)
    obj = entry["objects"]["attachment-4"]
    from archiver.artifacts import configured_recipients
    from archiver.envelope import Envelope
    # a forged file, encrypted to the same recipient, its hashes written into the index too
    sealed = Envelope(configured_recipients(config)).encrypt(png(color="black"))
    overwrite_stored(config, obj["key"], sealed)
    index_db(config)[config["index.entries"]].update_one({"_id": entry["_id"]}, {"$set": {
        "objects.attachment-4.sha256": hashlib.sha256(sealed).hexdigest(), "objects.attachment-4.size": len(sealed),
        "objects.attachment-4.plaintext_sha256": hashlib.sha256(png(color="black")).hexdigest(),
        "objects.attachment-4.plaintext_size": len(png(color="black"))}})
    assert verify_archive(config, [entry["room"]]).ok  # without a key nothing shows
    problems = [str(p) for p in verify_archive(config, [entry["room"]], _recipient(keys)).problems]
    assert any("record: lists the entry's attachments" in p for p in problems), problems


def _recipient(keys):
    from archiver.envelope import RecipientKey
    return RecipientKey.load(str(keys["legal.key.pem"]), [str(keys["legal.crt.pem"])])


def test_a_failed_file_is_retried_within_the_window_and_a_success_makes_a_new_version(
        make_config, keys, server, files) -> None:
    config = attaching(make_config, server, archive__retry_backoff_seconds=3600)
    chat, contact = chat_with([("IMAGE", f"{server}/later.png"), ("DOCUMENT", f"{server}/c.pdf")])
    files.add("/c.pdf", PDF)
    seed(config, [(chat, contact)])
    table = index_db(config)[config["index.entries"]]
    assert Archiver(config).run_pass().archived == 1
    (first,) = entries(config)
    assert [a["outcome"] for a in first["attachments"]] == ["failed", "fetched"] and first["attachments_retry_until"]

    # Still missing: tried again, nothing stored, the next try after the backoff.
    stored = len(open_store(config).keys())
    again = Archiver(config).run_pass()
    assert (again.archived, again.unchanged) == (0, 1) and files.requests.count("/later.png") == 2
    assert len(entries(config)) == 1 and len(open_store(config).keys()) == stored
    assert table.find_one({"_id": first["_id"]})["attachments_retries"] == 1
    quiet = Archiver(config).run_pass()  # within the backoff: not even queued
    assert (quiet.discovered, quiet.archived, quiet.unchanged) == (0, 0, 0) and files.requests.count("/later.png") == 2

    # The file appears and the backoff has passed: a new version with both files.
    files.add("/later.png", png())
    table.update_one({"_id": first["_id"]}, {"$set": {"attachments_retry_after": first["generated_at"]}})
    report = Archiver(config).run_pass()
    assert report.archived == 1 and report.ok
    first_now, second = entries(config)
    assert second["version"] == 2 and [a["outcome"] for a in second["attachments"]] == ["fetched", "fetched"]
    assert second["documents_sha256"] == first["source_sha256"] != second["source_sha256"]
    assert second["attachments_retry_of"] == 1 and "attachments_retry_until" not in second
    assert open_object(config, keys, second["objects"]["attachment-4"]) == png()
    assert first_now["objects"] == first["objects"]  # the earlier version is kept as it was
    assert verify_archive(config, None).ok and verify_archive(config, [chat["room"]], _recipient(keys)).ok

    # Nothing left to retry, and an unchanged source is still unchanged (also under the rescan).
    after = Archiver(config).run_pass(full=True)
    assert (after.archived, len(entries(config))) == (0, 2) and files.requests.count("/later.png") == 3


def test_no_retry_after_the_window(make_config, server, files) -> None:
    config = attaching(make_config, server, attachments__retry_hours=1.0)
    seed(config, [chat_with([("IMAGE", f"{server}/later.png")])])
    assert Archiver(config).run_pass().archived == 1
    (first,) = entries(config)
    assert first["attachments_retry_until"] - first["generated_at"] == dt.timedelta(hours=1)
    index_db(config)[config["index.entries"]].update_one(
        {"_id": first["_id"]}, {"$set": {"attachments_retry_until": first["generated_at"]}})  # the window has passed
    files.add("/later.png", png())
    report = Archiver(config).run_pass()
    assert (report.discovered, report.archived) == (0, 0) and files.requests.count("/later.png") == 1


def test_refused_files_are_not_retried(make_config, server, files) -> None:
    files.add("/big.png", png((500, 500), "green") + b"\0" * 2000)
    config = attaching(make_config, server, attachments__max_bytes=1000)
    seed(config, [chat_with([("IMAGE", f"{server}/big.png")])])
    assert Archiver(config).run_pass().archived == 1
    (first,) = entries(config)
    assert first["attachments"][0]["outcome"] == "refused" and "attachments_retry_until" not in first


def test_export_that_retries_names_and_writes_the_retry_version(make_config, keys, server, files, tmp_path) -> None:
    from archiver.offline import export_room
    config = attaching(make_config, server)
    chat, contact = chat_with([("IMAGE", f"{server}/later.png")])
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    (first,) = entries(config)
    files.add("/later.png", png())

    outcome = export_room(config, chat["room"], tmp_path / "out", force=False)  # the retry is due: builds v2
    assert outcome.ok, outcome.problems
    first_now, second = entries(config)
    assert second["version"] == 2 and second["attachments_retry_of"] == 1
    text = "\n".join(outcome.lines)
    assert "archived as version 2" in text and second["objects"]["attachment-4"]["key"] in text
    assert first["objects"]["pdf"]["key"] not in text
    record = json.loads((tmp_path / "out" / f"{chat['room']}.json").read_text())
    assert record["attachments"][0]["outcome"] == "fetched"

    # Nothing changed since: the export points at the better version 2, not version 1.
    again = export_room(config, chat["room"], None, force=False)
    assert again.ok and "already archived, unchanged as version 2" in "\n".join(again.lines)
    assert len(entries(config)) == 2


def test_retention_keeps_the_source_while_failed_files_may_be_retried(make_config, server, files) -> None:
    from retention_helpers import RULES, age, outcomes, retention, source
    config = attaching(make_config, server, storage__object_lock_mode="", retention__rules=RULES)
    chat, contact = chat_with([("IMAGE", f"{server}/later.png")])
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    age(config, 40)  # source_days (30) passed; the retry window (72 h from now) has not
    (first,) = entries(config)
    result = retention(config)
    skips = [i["reason"] for i in result.report["items"] if i["action"] == "skip" and i["room"] == chat["room"]]
    assert any("attachments retried until" in r for r in skips), skips
    assert ("delete_source", chat["room"], 1) not in outcomes(result)
    assert source(config).count_documents({"room": chat["room"]}) == 1

    # Once the window has closed, the source goes as usual.
    index_db(config)[config["index.entries"]].update_one(
        {"_id": first["_id"]}, {"$set": {"attachments_retry_until": first["generated_at"]}})
    assert outcomes(retention(config))[("delete_source", chat["room"], 1)][0] == "deleted"
    assert source(config).count_documents({"room": chat["room"]}) == 0


def test_a_retry_is_not_queued_for_a_room_whose_source_is_gone(make_config, server, files) -> None:
    config = attaching(make_config, server)
    chat, contact = chat_with([("IMAGE", f"{server}/later.png")])
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    from retention_helpers import source
    source(config).delete_many({"room": chat["room"]})  # deleted by hand, or by an older retention
    files.add("/later.png", png())
    report = Archiver(config).run_pass()
    assert (report.discovered, report.archived, report.quarantined) == (0, 0, {})
    assert files.requests.count("/later.png") == 1 and len(entries(config)) == 1


def test_many_slow_files_stop_at_the_per_chat_time_cap_and_the_chat_is_archived(make_config, keys, server, files,
                                                                                 tmp_path) -> None:
    files.stall = 5.0
    for i in range(4):
        files.add(f"/slow{i}.png", png())
    config = attaching(make_config, server, attachments__timeout_seconds=2.0, archive__build_timeout_seconds=5,
                       attachments__max_seconds_per_chat=2.5)
    chat, contact = chat_with([("IMAGE", f"{server}/slow{i}.png") for i in range(4)])
    seed(config, [(chat, contact)])
    report, _ = Archiver(config).archive_room(chat["room"], "ended")  # as `archiver export` does, under the bound
    assert report.archived == 1 and report.ok, report  # not killed by archive.build_timeout_seconds
    (entry,) = entries(config)
    outcomes_ = [(a["outcome"], a["reason"]) for a in entry["attachments"]]
    assert outcomes_[0] == ("failed", "timed out (attachments.timeout_seconds = 2)")
    assert all(o == "failed" and "over the per-chat time cap" in r for o, r in outcomes_[1:]), outcomes_
    assert files.requests.count("/slow0.png") == files.requests.count("/slow1.png") == 1
    assert "/slow2.png" not in files.requests and "/slow3.png" not in files.requests
    assert entry["attachments_retry_until"]  # failed, not refused: a later pass may fetch them
    assert "over the per-chat time cap" in pdf_text(config, keys, entry, tmp_path)


def test_a_retry_planned_for_a_room_another_worker_took_is_not_applied_to_its_next_build(make_config, keys, server,
                                                                                        files) -> None:
    from archiver.names import version_folder
    config = attaching(make_config, server)
    chat, contact = chat_with([("IMAGE", f"{server}/later.png")])
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    table = index_db(config)[config["index.entries"]]
    archiver = Archiver(config)
    begin = archiver.index.begin

    def raced(planned, newest_ms=None):  # another worker records version 2 between our read and our write
        archiver.index.begin = begin
        table.insert_one({"room": chat["room"], "version": 2, "folder": version_folder(chat["room"], 2),
                          "source_sha256": "another worker's", "status": "uploading", "attempt": "theirs",
                          "objects": {}, "superseded_objects": []})
        return begin(planned, newest_ms)

    archiver.index.begin = raced
    report, _ = archiver.archive_room(chat["room"], "ended")  # the retry was due: planned, then taken
    assert report.archived == 0 and "recorded by another worker" in report.failed[chat["room"]]

    # The chat changes (a message edited): the next build is an ordinary new version of the new source.
    text_at = next(i for i, m in enumerate(chat["messages"]) if m["data"]["messageType"] == "TEXT")
    from retention_helpers import source
    source(config).update_one({"room": chat["room"]}, {"$set": {f"messages.{text_at}.data.content.text": "edited"}})
    report, _ = archiver.archive_room(chat["room"], "ended")
    assert report.archived == 1 and report.ok, report
    new = entries(config, status="archived")[-1]
    digest = archiver.source_digest(*archiver.source.load(chat["room"]))
    assert new["version"] == 3 and new["source_sha256"] == digest and "documents_sha256" not in new
    assert "attachments_retry_of" not in new and record_of(config, keys, new)["source_sha256"] == digest


def test_a_retry_upload_left_half_way_is_closed_as_a_retry_not_as_a_changed_source(make_config, server, files) -> None:
    from archiver.attachment_retries import content_key
    config = attaching(make_config, server)
    chat, contact = chat_with([("IMAGE", f"{server}/later.png")])
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    (first,) = entries(config)
    archiver = Archiver(config)
    # A retry's worker died after its entry was begun (as _prepare begins it): version 2 left `uploading`.
    archiver.index.begin([(chat["room"], 2, content_key(first["source_sha256"], 2))])
    files.add("/later.png", png())
    report = archiver.run_pass()
    assert report.archived == 1 and report.ok
    _, left, third = entries(config)
    assert left["status"] == "superseded" and "source changed" not in left["superseded_because"]
    assert "attachment retry" in left["superseded_because"]
    assert third["version"] == 3 and third["attachments_retry_of"] == 1


def test_holds_retention_and_erasure_treat_attachments_like_the_other_objects(make_config, server, files) -> None:
    from archiver.holds import open_holds
    from archiver.search import SearchFilters
    from retention_helpers import RULES, age, customer_of, erase, retention
    from retrieval_helpers import stored_path
    files.add("/a.png", png())
    files.add("/b.pdf", PDF)
    config = attaching(make_config, server, storage__object_lock_mode="", retention__rules=RULES)
    kept, erased, expired = (chat_with([("IMAGE", f"{server}/a.png"), ("DOCUMENT", f"{server}/b.pdf")], seed_=n)
                             for n in (1, 2, 3))
    seed(config, [kept, erased, expired])
    assert Archiver(config).run_pass().archived == 3
    by_room = {e["room"]: e for e in entries(config)}
    assert all({"attachment-4", "attachment-5"} <= set(e["objects"]) for e in by_room.values())

    def stored(chat) -> list[bool]:
        entry = by_room[chat[0]["room"]]
        return [stored_path(config, o["key"]).exists() for o in entry["objects"].values()]

    open_holds(config).place(SearchFilters(room=kept[0]["room"]), "Case 14", "litigation",
                             {"user": "tester", "host": "test"})
    for chat in (kept, expired):
        age(config, 400, room=chat[0]["room"])
    for _ in range(2):  # sources, then archives
        retention(config)
    assert all(stored(kept)) and not any(stored(expired))  # held: every object; expired: the files too
    assert all(stored(erased))
    erase(config, customer_of(erased[0]))
    assert not any(stored(erased))
    tombstone = index_db(config)[config["index.entries"]].find_one({"room": erased[0]["room"]})
    assert tombstone["status"] == "deleted" and tombstone["objects"] == by_room[erased[0]["room"]]["objects"]
    assert verify_archive(config, None).ok


def test_a_file_whose_url_redaction_changed_is_refused_not_asked_for_under_another_name(
        make_config, keys, server, files, tmp_path) -> None:
    """A media id that looks like a card number is masked in the URL like anywhere else: the file it named is
    not fetched under the masked URL (a 404 that would read as the server's fault, retried for days) but
    refused, saying why."""
    files.add("/m/4111111111111111/scan.png", png())
    files.add("/plain.png", png())
    config = attaching(make_config, server)
    chat, contact = chat_with([("IMAGE", f"{server}/m/4111111111111111/scan.png"), ("IMAGE", f"{server}/plain.png")])
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    (entry,) = entries(config)
    refused, fetched = entry["attachments"]
    assert refused["outcome"] == "refused" and "changed by redaction" in refused["reason"], refused
    assert fetched["outcome"] == "fetched" and "attachments_retry_until" not in entry
    assert files.requests == ["/plain.png"], "the masked URL was not asked for"
    assert "changed by redaction" in pdf_text(config, keys, entry, tmp_path)


@pytest.mark.parametrize("store", ["local", "s3"])
def test_a_retry_keeps_the_files_an_earlier_version_stored_even_when_their_links_have_expired(
        make_config, keys, server, files, tmp_path, request, store) -> None:
    on_s3 = {"storage__url": f"s3://{request.getfixturevalue('bucket')}/chats",  # with Object Lock: versioned
             "storage__endpoint_url": request.getfixturevalue("moto_endpoint")} if store == "s3" else {}
    config = attaching(make_config, server, **on_s3)
    photo = png((120, 80), "green")
    files.add("/a.png", photo)
    chat, contact = chat_with([("IMAGE", f"{server}/a.png"), ("DOCUMENT", f"{server}/later.pdf")])
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    (first,) = entries(config)
    assert [a["outcome"] for a in first["attachments"]] == ["fetched", "failed"]

    del files.routes["/a.png"]  # the first link has expired (a 404 now); the second file is there at last
    files.add("/later.pdf", PDF)
    report = Archiver(config).run_pass()
    assert report.archived == 1 and report.ok, report
    _, second = entries(config)
    assert second["attachments_retry_of"] == 1 and [a["outcome"] for a in second["attachments"]] == ["fetched"] * 2
    assert files.requests.count("/a.png") == 1  # fetched once, as the docs say: kept, not asked for again
    kept, before = second["objects"]["attachment-4"], first["objects"]["attachment-4"]
    assert kept["key"].startswith(second["folder"] + "/")  # a copy in the new version's folder: each stands alone
    assert (kept["sha256"], kept["plaintext_sha256"], kept["fetched_at"]) == (
        before["sha256"], before["plaintext_sha256"], before["fetched_at"])
    assert open_object(config, keys, kept) == photo and open_object(config, keys, second["objects"]["attachment-5"]) == PDF
    listed = record_of(config, keys, second)["attachments"]
    assert listed[0]["sha256"] == hashlib.sha256(photo).hexdigest() and listed[0]["size"] == len(photo)
    assert listed[0]["kept_from_version"] == 1 and "kept_from_version" not in listed[1]
    text = pdf_text(config, keys, second, tmp_path)
    assert "kept from version 1" in text
    assert verify_archive(config, [chat["room"]], _recipient(keys)).ok
    assert verify_archive(config, None).ok, "the copy and the original: each its own key, one version each"


def _one_stored_one_failed(make_config, server, files):
    """A chat archived with /a.png stored and /later.pdf failed (not there yet): its config and first entry."""
    config = attaching(make_config, server)
    files.add("/a.png", png())
    seed(config, [chat_with([("IMAGE", f"{server}/a.png"), ("DOCUMENT", f"{server}/later.pdf")])])
    assert Archiver(config).run_pass().archived == 1
    (first,) = entries(config)
    return config, first


def test_a_kept_file_altered_in_the_store_is_fetched_again_not_copied(make_config, keys, server, files) -> None:
    config, first = _one_stored_one_failed(make_config, server, files)
    overwrite_stored(config, first["objects"]["attachment-4"]["key"], b"not what was stored")
    files.add("/later.pdf", PDF)
    report = Archiver(config).run_pass()
    assert report.archived == 1 and report.ok, report
    _, second = entries(config)
    assert files.requests.count("/a.png") == 2  # not copied: fetched again
    assert open_object(config, keys, second["objects"]["attachment-4"]) == png()
    assert "kept_from_version" not in record_of(config, keys, second)["attachments"][0]


def test_a_retry_after_the_recipients_changed_fetches_the_files_again_for_the_new_recipients(
        make_config, keys, server, files, tmp_path) -> None:
    from certfactory import make
    config, first = _one_stored_one_failed(make_config, server, files)
    second_reader = make(tmp_path / "auditor", "Auditor")
    widened = attaching(make_config, server, encryption__recipients=[str(keys["legal.crt.pem"]), str(second_reader.cert_path)])
    files.add("/later.pdf", PDF)
    assert Archiver(widened).run_pass().archived == 1
    _, second = entries(config)
    # Copying version 1's object would leave it closed to the new recipient while the entry names them.
    assert files.requests.count("/a.png") == 2 and len(second["recipients"]) == 2
    assert second["objects"]["attachment-4"]["sha256"] != first["objects"]["attachment-4"]["sha256"]
    assert "kept_from_version" not in record_of(config, keys, second)["attachments"][0]


def _two_files_archived(make_config, server, files):
    """A chat with two archived files (messages 4 and 5): its config and index entry."""
    files.add("/m/a.png", png((40, 30), "red"))
    files.add("/m/b.pdf", PDF)
    config = attaching(make_config, server)
    seed(config, [chat_with([("IMAGE", f"{server}/m/a.png"), ("DOCUMENT", f"{server}/m/b.pdf")])])
    assert Archiver(config).run_pass().archived == 1
    (entry,) = entries(config)
    return config, entry


# Edits of the plain index (before the day is sealed) that would misname or misdescribe a file if
# retrieval took the index's word: each must be named, object and field, and nothing written.
INDEX_EDITS = {
    "position": ({"objects.attachment-4.position": 5, "objects.attachment-5.position": 4}, "attachment-4: position"),
    "content_type": ({"objects.attachment-4.content_type": "application/pdf"}, "attachment-4: content_type"),
    "fetched_at": ({"objects.attachment-5.fetched_at": dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)},
                   "attachment-5: fetched_at"),
    "listed position": ({"attachments.0.position": 5, "attachments.1.position": 4}, "attachments[0]: position"),
}


@pytest.mark.parametrize("edit", INDEX_EDITS)
def test_retrieve_refuses_attachment_facts_edited_in_the_index(make_config, keys, server, files, tmp_path,
                                                              edit) -> None:
    """Reproduction (review att.md, finding 3): with the positions swapped in the index, retrieve wrote
    message 5's file as 0004-... and said "ok": true. The signed record decides; the index must agree."""
    from retrieval_helpers import audit
    config, entry = _two_files_archived(make_config, server, files)
    change, named = INDEX_EDITS[edit]
    index_db(config)[config["index.entries"]].update_one({"_id": entry["_id"]}, {"$set": change})
    out = tmp_path / "out"
    assert run_cli(config, tmp_path, "retrieve", entry["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(out), "--reason", "case 7") == 3
    assert not out.exists() or not any(out.iterdir())
    failed = audit(config)[-1]
    assert failed["outcome"] == "failed" and named in failed["detail"], failed

    problems = [str(p) for p in verify_archive(config, [entry["room"]], _recipient(keys)).problems]
    assert any(named in p for p in problems), problems
    assert run_cli(config, tmp_path, "verify", entry["room"], "--key", str(keys["legal.key.pem"])) == 3
    assert audit(config)[-1]["outcome"] == "problems"


def test_retrieved_files_are_named_and_described_by_the_signed_record(make_config, keys, server, files,
                                                                     tmp_path) -> None:
    config, entry = _two_files_archived(make_config, server, files)
    out = tmp_path / "out"
    assert run_cli(config, tmp_path, "retrieve", entry["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(out), "--reason", "case 7") == 0
    (folder,) = out.iterdir()
    record = json.loads((folder / "record.json").read_text())
    report = json.loads((folder / "verification.json").read_text())
    assert sorted(p.name for p in (folder / "attachments").iterdir()) == ["0004-a.png", "0005-b.pdf"]
    for described in record["attachments"]:
        name = described["object"]
        path = folder / "attachments" / f"{described['position']:04d}-{described['file_name']}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == described["sha256"]
        shown = report["objects"][name]
        assert (shown["position"], shown["content_type"], shown["plaintext_size"], shown["plaintext_sha256"]) == (
            described["position"], described["content_type"], described["size"], described["sha256"])
        assert dt.datetime.fromisoformat(shown["fetched_at"]) == dt.datetime.fromisoformat(
            described["fetched_at"].replace("Z", "+00:00"))


def _described(position: int, **changes) -> dict:
    """One fetched file as a record describes it (archiver.attachments.Attachment.describe)."""
    return {"position": position, "message_id": f"m{position}", "url": f"https://h/{position}.png",
            "file_name": f"{position}.png", "outcome": "fetched", "reason": "", "size": 10 + position,
            "sha256": f"{position}" * 64, "content_type": "image/png", "fetched_at": "2026-11-26T10:00:00.123Z",
            "object": f"attachment-{position}", **changes}


def _entry_for(described: list[dict]) -> dict:
    """The index entry's copy of DESCRIBED, as archiver.artifacts writes it."""
    objects = {a["object"]: {"key": f"k/{a['object']}", "sha256": "c" * 64, "size": 99, "plaintext_sha256": a["sha256"],
                             "plaintext_size": a["size"], "position": a["position"], "content_type": a["content_type"],
                             "fetched_at": dt.datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=dt.timezone.utc)}
               for a in described if a["outcome"] == "fetched"}
    listed = [{k: v for k, v in a.items() if k not in ("url", "file_name", "message_id")}
              | {"fetched_at": objects[a["object"]]["fetched_at"] if a["object"] else None} for a in described]
    return {"objects": objects, "attachments": listed}


@pytest.mark.parametrize("where, field, value, named", [
    ("objects", "plaintext_size", 1, "attachment-4: plaintext_size record 14, index 1"),
    ("objects", "plaintext_sha256", "0" * 64, "attachment-4: plaintext_sha256"),
    ("objects", "position", 5, "attachment-4: position record 4, index 5"),
    ("objects", "content_type", "text/plain", "attachment-4: content_type record 'image/png', index 'text/plain'"),
    ("attachments", "reason", "edited", "attachments[0]: reason record '', index 'edited'"),
    ("attachments", "outcome", "failed", "attachments[0]: outcome record 'fetched', index 'failed'"),
])
def test_each_attachment_fact_the_index_keeps_is_checked_against_the_record(where, field, value, named) -> None:
    from archiver.integrity import _attachment_checks
    described = [_described(4), _described(5)]
    doc = {"format": "ctlive-archive-record/4", "attachments": described}
    entry = _entry_for(described)
    (same,) = _attachment_checks(doc, entry)
    assert same.ok, same  # times compared to the millisecond, as MongoDB and the record keep them
    target = entry["objects"]["attachment-4"] if where == "objects" else entry["attachments"][0]
    target[field] = value
    (check,) = _attachment_checks(doc, entry)
    assert not check.ok and named in check.detail, check


def test_records_without_attachments_and_older_formats_still_verify() -> None:
    """A record from before attachments (any format) lists none and its entry has none: nothing to check.
    A ctlive-archive-record/3 record already described its files as /4 does. One that lists none while the
    index names a stored file is a failure, not a pass."""
    from archiver.integrity import _attachment_checks
    for fmt in ("ctlive-archive-record/1", "ctlive-archive-record/2", "ctlive-archive-record/3"):
        assert _attachment_checks({"format": fmt}, {"objects": {"pdf": {}, "record": {}}}) == []
    described = [_described(4), _described(6, outcome="failed", reason="HTTP 404", size=None, sha256=None,
                                            content_type=None, fetched_at=None, object=None)]
    (check,) = _attachment_checks({"format": "ctlive-archive-record/3", "attachments": described}, _entry_for(described))
    assert check.ok, check
    (check,) = _attachment_checks({"format": "ctlive-archive-record/3"}, _entry_for(described))
    assert not check.ok and "attachment-4: not in the record" in check.detail, check


def test_file_names_and_reported_facts_are_the_records_even_where_the_index_differs() -> None:
    """retrieval reads the record, not the index (whose copy verification checks separately)."""
    from archiver.integrity import Opened
    from archiver.retrieval import _object_facts, attachment_file_names
    described = [_described(4, file_name="a.png"), _described(5, file_name="b.pdf", content_type="application/pdf")]
    entry = _entry_for(described)
    entry["objects"]["attachment-4"].update(position=5, content_type="application/pdf")
    entry["objects"]["attachment-5"].update(position=4, content_type="image/png", plaintext_size=1)
    opened = Opened(entry, plain={"record": json.dumps({"attachments": described}).encode(),
                                  "attachment-4": b"a", "attachment-5": b"b"})
    assert attachment_file_names(opened) == {"attachment-4": "attachments/0004-a.png",
                                             "attachment-5": "attachments/0005-b.pdf"}
    facts = _object_facts(opened, "attachment-5")
    assert (facts["position"], facts["content_type"], facts["plaintext_size"]) == (5, "application/pdf", 15)
    assert facts["key"] == "k/attachment-5"  # where it is stored: the index's word, checked against the store
