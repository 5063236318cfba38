"""archiver verify: tampering of every kind is detected and named with its room."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import time

import boto3
import pytest

from archiver.integrity import verify_archive
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from archiver.visible import is_pdf_title, pdf_title
from archiver.envelope import RecipientKey
from archiver.store import open_store
from retrieval_helpers import archive_samples, audit, index, overwrite_stored, remove_stored, run_cli, stored_path
from test_pipeline import recent_ms, seed

@pytest.fixture
def archived(make_config):
    config = make_config()
    return config, archive_samples(config, count=3)


def _verify(config, keys=None, rooms=None):
    key = RecipientKey.load(str(keys["legal.key.pem"]), config["encryption.recipients"]) if keys else None
    return verify_archive(config, rooms, key)


def _named(report) -> list[tuple[str, str]]:
    return [(p.room, p.problem) for p in report.problems]


def test_an_intact_archive_verifies_with_and_without_a_key(archived, keys, tmp_path, capsys) -> None:
    config, entries = archived
    plain, full = _verify(config), _verify(config, keys)
    assert plain.ok and full.ok and plain.entries == 3 and plain.objects == 9 and plain.listed == 9
    assert run_cli(config, tmp_path, "verify", "--all", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["entries"] == 3 and report["problems"] == []
    assert run_cli(config, tmp_path, "verify", entries[0]["room"], "--key", str(keys["legal.key.pem"])) == 0
    log = audit(config)
    assert [e["action"] for e in log] == ["verify", "verify"] and log[1]["filters"]["with_key"] is True


def test_a_flipped_byte_is_named(archived, keys, tmp_path, capsys) -> None:
    config, entries = archived
    key = entries[1]["objects"]["pdf"]["key"]
    data = bytearray(stored_path(config, key).read_bytes())
    data[-40] ^= 0x80
    overwrite_stored(config, key, bytes(data))
    (problem,) = _verify(config).problems
    assert problem.room == entries[1]["room"] and "pdf" in problem.problem and "altered" in problem.problem
    assert problem.problem.startswith("failed: pdf: stored object "), "worded as the claim that failed"
    assert (problem.key, problem.store) == (None, None), "an index entry's object: named by its room and version"
    assert run_cli(config, tmp_path, "verify", "--all") == 3
    out = capsys.readouterr().out
    assert f"PROBLEM {entries[1]['room']} v1: failed: pdf: stored object" in out
    assert audit(config)[-1]["outcome"] == "problems" and audit(config)[-1]["rooms"] == [entries[1]["room"]]


def test_a_deleted_object_is_named(archived) -> None:
    config, entries = archived
    stored_path(config, entries[2]["objects"]["record_signature"]["key"]).unlink()
    (problem,) = _verify(config).problems
    assert problem.room == entries[2]["room"] and "record_signature" in problem.problem and "missing" in problem.problem


def test_an_object_swapped_with_another_rooms_is_named(archived, keys) -> None:
    config, entries = archived
    a, b = entries[0], entries[1]
    overwrite_stored(config, a["objects"]["pdf"]["key"], stored_path(config, b["objects"]["pdf"]["key"]).read_bytes())
    assert [room for room, _ in _named(_verify(config))] == [a["room"]]
    # The attacker also edits the index to match: the hashes agree, the content does not.
    index(config).update_one({"_id": a["_id"]}, {"$set": {"objects.pdf": {**b["objects"]["pdf"], "key": a["objects"]["pdf"]["key"]}}})
    assert _verify(config).ok  # no key: the store and the index agree with each other
    problems = _named(_verify(config, keys))
    assert problems and {room for room, _ in problems} == {a["room"]}
    assert any("title names the entry's room" in text for _, text in problems), problems


def test_a_pdf_title_is_accepted_only_as_the_renderer_writes_it_for_that_room() -> None:
    room = "CHAT_\u202eab\tc"
    assert all(is_pdf_title(pdf_title(room, limit), room) for limit in range(1, len(room) + 2))
    assert pdf_title(room, 8) == "CHAT_[U+202E]ab…" and pdf_title(room, 10) == "CHAT_[U+202E]ab[U+0009]c"
    for title in (room, "CHAT_[U+202E]ab", "CHAT_[U+20…", "CHAT_[U+202E]ab[U+0009]c…", "…", "",
                  pdf_title("CHAT_OTHER", 1_000), pdf_title(room + "d", 1_000), pdf_title(room + "d", 10)):
        assert not is_pdf_title(title, room), title
    assert not is_pdf_title(pdf_title("CHAT_A", 1_000), "CHAT_AB") and is_pdf_title("CHAT_A…", "CHAT_AB")


@pytest.mark.parametrize("field_chars", [1_000, 5])
def test_a_pdf_swapped_with_a_room_whose_id_extends_this_one_is_named(make_config, keys, field_chars) -> None:
    """CHAT_CASE and CHAT_CASE2: the title names the other room; cut at 5 characters both titles read
    'CHAT_…', and the record the PDF attaches (signed, naming its room) still tells them apart."""
    config = make_config(archive__max_field_chars=field_chars)
    rng = random.Random(2)
    seed(config, [make_chat(rng, messages=3, start_ms=recent_ms(30), room=room) for room in ("CHAT_CASE", "CHAT_CASE2")])
    assert Archiver(config).run_pass().archived == 2
    a, b = index(config).find({}).sort("room", 1)
    pdfs = {e["room"]: stored_path(config, e["objects"]["pdf"]["key"]).read_bytes() for e in (a, b)}
    for x, y in ((a, b), (b, a)):  # each holds the other's PDF, the index edited to match
        overwrite_stored(config, x["objects"]["pdf"]["key"], pdfs[y["room"]])
        index(config).update_one({"_id": x["_id"]}, {"$set": {"objects.pdf": {**y["objects"]["pdf"],
                                                                              "key": x["objects"]["pdf"]["key"]}}})
    problems = _named(_verify(config, keys))
    assert {room for room, _ in problems} == {"CHAT_CASE", "CHAT_CASE2"}
    for room in ("CHAT_CASE", "CHAT_CASE2"):
        named = [p for r, p in problems if r == room]
        assert any("attaches this version's record" in p for p in named), named
        assert any("title names the entry's room" in p for p in named) == (field_chars == 1_000), named


def test_a_swapped_record_is_named_by_its_room(archived, keys) -> None:
    config, entries = archived
    a, b = entries[0], entries[1]
    for name in ("record", "record_signature"):
        overwrite_stored(config, a["objects"][name]["key"], stored_path(config, b["objects"][name]["key"]).read_bytes())
        index(config).update_one({"_id": a["_id"]}, {"$set": {f"objects.{name}": {
            **b["objects"][name], "key": a["objects"][name]["key"]}}})
    problems = _named(_verify(config, keys))
    assert {room for room, _ in problems} == {a["room"]}
    assert "room, version and source SHA-256" in problems[0][1] and b["room"] in problems[0][1]
    assert any("attaches this version's record" in p for _, p in problems)  # the PDF still carries a's own


def test_an_edited_index_entry_is_named(archived, keys) -> None:
    config, entries = archived
    index(config).update_one({"_id": entries[0]["_id"]}, {"$set": {"objects.record.size": 12}})
    index(config).update_one({"_id": entries[1]["_id"]}, {"$set": {"source_sha256": "0" * 64}})
    assert [room for room, _ in _named(_verify(config))] == [entries[0]["room"]]
    assert sorted(room for room, _ in _named(_verify(config, keys))) == [entries[0]["room"], entries[1]["room"]]


def test_objects_the_index_does_not_explain_are_named(archived) -> None:
    config, entries = archived
    store = open_store(config)
    digest = hashlib.sha256(b"x").hexdigest()
    store.put("stray/v1/transcript-0.pdf.p7m", b"x", digest, None)
    room = entries[0]["room"]
    superseded = f"{room}/v1/transcript-old.pdf.p7m"
    store.put(superseded, b"x", digest, None)
    problems = _verify(config).problems
    assert sorted((p.room or "", p.key, p.store) for p in problems) == sorted([
        (room, superseded, store.url), ("", "stray/v1/transcript-0.pdf.p7m", store.url)])
    index(config).update_one({"_id": entries[0]["_id"]}, {"$push": {"superseded_objects": superseded}})
    assert [(p.room, p.key) for p in _verify(config).problems] == [(None, "stray/v1/transcript-0.pdf.p7m")]
    assert _verify(config, rooms=[room]).ok  # a room's check lists only that room's folder


def _stray(problem: dict) -> tuple:
    return problem["room"], problem["version"], problem["key"], "is not explained by the index" in problem["problem"]


def test_a_stray_objects_room_is_the_room_whose_folder_holds_it_else_none(make_config, tmp_path, capsys) -> None:
    """A key's first part is a folder name, not a room id: a sanitised one (hashed), or anything a stranger wrote.
    The report names the key and the store, and a room only when an index entry's objects live in that folder."""
    config = make_config()
    rng = random.Random(4)
    rooms = ["CHAT_SAFE_x1", "chat/with slash"]  # the second one's folder is a cleaned name and a hash
    seed(config, [make_chat(rng, messages=3, start_ms=recent_ms(30), room=room) for room in rooms])
    assert Archiver(config).run_pass().archived == 2
    hashed = index(config).find_one({"room": rooms[1]})["objects"]["pdf"]["key"].split("/")[0]
    assert hashed != rooms[1] and "~" in hashed
    store, digest = open_store(config), hashlib.sha256(b"x").hexdigest()
    planted = {f"{hashed}/v7/extra.pdf.p7m": rooms[1], "CHAT_SAFE_x1/v1/extra.pdf.p7m": "CHAT_SAFE_x1",
               "CHAT_NOT_ARCHIVED/v1/x.pdf.p7m": None, "chat_safe_x1/v1/x.pdf.p7m": None}
    for key in planted:
        store.put(key, b"x", digest, None)
    assert run_cli(config, tmp_path, "verify", "--json") == 3
    report = json.loads(capsys.readouterr().out)
    assert sorted(map(_stray, report["problems"]), key=str) == sorted(
        [(room, None, key, True) for key, room in planted.items()], key=str)
    assert {p["store"] for p in report["problems"]} == {store.url}
    assert run_cli(config, tmp_path, "verify") == 3
    out = capsys.readouterr().out
    assert f"PROBLEM object CHAT_NOT_ARCHIVED/v1/x.pdf.p7m in {store.url} is not explained" in out
    assert f"PROBLEM CHAT_SAFE_x1: object CHAT_SAFE_x1/v1/extra.pdf.p7m in {store.url}" in out
    assert "PROBLEM chat_safe_x1:" not in out and "PROBLEM CHAT_NOT_ARCHIVED:" not in out
    assert audit(config)[-1]["rooms"] == sorted(["CHAT_SAFE_x1", rooms[1]]), "a folder name is no room of the audit"
    assert run_cli(config, tmp_path, "verify", rooms[1], "--json") == 3  # a room's own folder: that room
    assert list(map(_stray, json.loads(capsys.readouterr().out)["problems"])) == [
        (rooms[1], None, f"{hashed}/v7/extra.pdf.p7m", True)]


def test_an_entry_left_uploading_past_its_lease_is_named(archived) -> None:
    config, entries = archived
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    index(config).insert_one({"room": "STUCK", "version": 1, "status": "uploading", "objects": {},
                              "superseded_objects": [], "created_at": old, "source_sha256": "1"})
    index(config).insert_one({"room": "BUSY", "version": 1, "status": "uploading", "objects": {},
                              "superseded_objects": [], "created_at": dt.datetime.now(dt.timezone.utc),
                              "source_sha256": "2"})
    report = _verify(config)
    assert [r for r, _ in _named(report)] == ["STUCK"] and report.in_progress == 1


def test_an_unknown_room_is_a_problem_and_rooms_with_all_is_a_usage_error(archived, tmp_path, capsys) -> None:
    config, entries = archived
    assert run_cli(config, tmp_path, "verify", "NO_SUCH_ROOM") == 3
    assert "NO_SUCH_ROOM: not in the archive index" in capsys.readouterr().out
    assert run_cli(config, tmp_path, "verify", entries[0]["room"], "--all") == 2
    assert "not both" in capsys.readouterr().err


def test_verify_without_rooms_verifies_everything_as_all(archived, keys, tmp_path, capsys) -> None:
    """CONTRACT: `verify [ROOM ... | --all]`: without either, the whole archive and every object in the stores."""
    config, entries = archived
    assert run_cli(config, tmp_path, "verify", "--all", "--json") == 0
    everything = json.loads(capsys.readouterr().out)
    assert run_cli(config, tmp_path, "verify", "--json") == 0
    bare = json.loads(capsys.readouterr().out)
    assert {k: bare[k] for k in ("entries", "objects", "listed")} == {k: everything[k] for k in ("entries", "objects", "listed")}
    assert bare["entries"] == 3 and bare["listed"] == 9
    assert run_cli(config, tmp_path, "verify", "--key", str(keys["legal.key.pem"]), "--workers", "1") == 0
    assert "OK: 3 entries" in capsys.readouterr().out
    assert [e["filters"]["all"] for e in audit(config)] == [True, True, True]
    open_store(config).put("planted/v1/extra.pdf.p7m", b"x", hashlib.sha256(b"x").hexdigest(), None)
    assert run_cli(config, tmp_path, "verify", entries[0]["room"]) == 0  # a room's check lists its folder alone
    capsys.readouterr()
    assert run_cli(config, tmp_path, "verify") == 3  # the whole store is listed
    assert "planted/v1/extra.pdf.p7m" in capsys.readouterr().out


def test_verify_on_s3_with_a_key_and_a_stray_object(make_config, keys, tmp_path, moto_endpoint, bucket) -> None:
    config = make_config(storage__url=f"s3://{bucket}/chats", storage__endpoint_url=moto_endpoint,
                         storage__object_lock_mode="")
    entries = archive_samples(config, count=2)
    assert _verify(config, keys).ok
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").put_object(
        Bucket=bucket, Key=f"chats/{entries[0]['room']}/v1/extra.pdf.p7m", Body=b"planted")
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.put_object(Bucket=bucket, Key="chats/NOT_A_ROOM/v1/extra.pdf.p7m", Body=b"planted")
    assert run_cli(config, tmp_path, "verify", "--all", "--key", str(keys["legal.key.pem"])) == 3
    assert sorted((p.room or "", p.key, p.store, "not explained" in p.problem) for p in _verify(config).problems) == [
        ("", "NOT_A_ROOM/v1/extra.pdf.p7m", f"s3://{bucket}/chats/", True),
        (entries[0]["room"], f"{entries[0]['room']}/v1/extra.pdf.p7m", f"s3://{bucket}/chats/", True)]


@pytest.mark.parametrize("change", ["new version", "delete marker"])
def test_a_version_or_delete_marker_over_an_archived_object_on_s3_is_named_with_and_without_a_key(
        make_config, keys, tmp_path, moto_endpoint, bucket, capsys, change) -> None:
    """Object Lock keeps each locked version, not the key: anyone allowed s3:PutObject can put a new current
    version over an archived object (a plain GET, `aws s3 cp`, then returns it), or a delete marker (a plain GET
    answers 404). Retrieval pins the recorded version id, so the archive is intact; verify names the key and
    the version that is not the archived one, keyless and keyed, for the whole store and for the room."""
    config = make_config(storage__url=f"s3://{bucket}/chats", storage__endpoint_url=moto_endpoint)
    (entry,) = archive_samples(config, count=1)
    assert config["storage.object_lock_mode"] and entry["objects"]["pdf"]["version_id"]
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    key = entry["objects"]["pdf"]["key"]
    if change == "new version":  # another object's ciphertext, which a plain GET now returns
        other = client.get_object(Bucket=bucket, Key="chats/" + entry["objects"]["record"]["key"])["Body"].read()
        added = client.put_object(Bucket=bucket, Key="chats/" + key, Body=other)["VersionId"]
    else:
        added = client.delete_object(Bucket=bucket, Key="chats/" + key)["VersionId"]
    for argv in (["--all"], ["--all", "--key", str(keys["legal.key.pem"])], [entry["room"]]):
        assert run_cli(config, tmp_path, "verify", *argv) == 3, argv
        out = capsys.readouterr().out
        assert f"PROBLEM {entry['room']} v1: " in out and key in out and added in out, (argv, out)
    (problem,) = _verify(config).problems
    assert (problem.room, problem.version) == (entry["room"], 1)
    said = "a delete marker" if change == "delete marker" else "a version the index does not record"
    assert said in problem.problem, problem
    assert entry["objects"]["pdf"]["version_id"] in problem.problem, "names the archived version too"
    assert run_cli(config, tmp_path, "retrieve", entry["room"], "--key", str(keys["legal.key.pem"]), "--out",
                   str(tmp_path / "out"), "--reason", "audit") == 0, "retrieval reads the recorded version"


def test_an_unexplained_object_on_s3_hidden_behind_a_delete_marker_is_named(make_config, moto_endpoint, bucket) -> None:
    """A delete without a version id only hides an object from the current listing: its bytes stay."""
    config = make_config(storage__url=f"s3://{bucket}/chats", storage__endpoint_url=moto_endpoint)
    (entry,) = archive_samples(config, count=1)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    planted = f"chats/{entry['room']}/v1/extra.pdf.p7m"
    client.put_object(Bucket=bucket, Key=planted, Body=b"planted")
    client.delete_object(Bucket=bucket, Key=planted)
    assert [(room, "extra.pdf.p7m" in p and "not explained" in p) for room, p in _named(_verify(config))] == [
        (entry["room"], True)]


@pytest.mark.parametrize("marker_only", [True, False], ids=["hidden behind a delete marker", "every version gone"])
def test_a_tombstone_on_s3_whose_objects_keep_a_version_behind_a_delete_marker_is_named(
        make_config, moto_endpoint, marker_only) -> None:
    """Stored before versioning was turned on (version id ""), then deleted without a VersionId: only a delete
    marker was added, the "null" version still holds the ciphertext. A GET without version found nothing."""
    import uuid

    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    plain = f"plain-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=plain)
    config = make_config(storage__url=f"s3://{plain}/chats", storage__endpoint_url=moto_endpoint,
                         storage__object_lock_mode="")
    victim = archive_samples(config, count=1)[0]
    client.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Enabled"})
    for obj in victim["objects"].values():
        client.delete_object(Bucket=plain, Key="chats/" + obj["key"])  # a delete marker on top
        if not marker_only:
            for version in ("null", client.list_object_versions(Bucket=plain, Prefix="chats/" + obj["key"])
                            ["DeleteMarkers"][0]["VersionId"]):
                client.delete_object(Bucket=plain, Key="chats/" + obj["key"], VersionId=version)
    index(config).update_one({"_id": victim["_id"]}, {"$set": {
        "status": "deleted", "deleted_at": dt.datetime.now(dt.timezone.utc),
        "deletion": {"run": "ret-made-up", "rule": "default", "state": "done", "at": dt.datetime.now(dt.timezone.utc)}}})
    problems = [p for _, p in _named(_verify(config)) if "by a run on record" not in p]  # a run made up here
    left = [p for p in problems if "still in the store" in p]
    assert bool(left) == marker_only and len(problems) == len(left), problems  # a tombstone pins no version
    if marker_only:
        assert all(obj["key"] in left[0] for obj in victim["objects"].values()), left


def test_the_report_keeps_a_bounded_number_of_problems_and_counts_all(archived, tmp_path, monkeypatch, capsys) -> None:
    import archiver.integrity as integrity

    config, entries = archived
    monkeypatch.setattr(integrity, "MAX_PROBLEMS_KEPT", 1)
    for entry in entries[:2]:
        stored_path(config, entry["objects"]["pdf"]["key"]).unlink()
    report = _verify(config)
    assert report.problem_count == 2 and len(report.problems) == 1
    assert run_cli(config, tmp_path, "verify", "--all") == 3
    assert "... and 1 more" in capsys.readouterr().out


def test_verify_on_the_wire_protocol_stand_in(make_config, keys, nx_uri) -> None:
    config = make_config(mongodb__uri=nx_uri)
    entries = archive_samples(config, count=2)
    assert _verify(config, keys).ok and _verify(config).listed == 6
    stored_path(config, entries[1]["objects"]["record"]["key"]).unlink()
    assert [(p.room, "missing" in p.problem) for p in _verify(config).problems] == [(entries[1]["room"], True)]


def test_checking_with_a_key_but_no_ca_logs_no_chain_warnings(archived, keys, caplog) -> None:
    config, _ = archived
    with caplog.at_level("WARNING"):
        assert _verify(config, keys).ok
    assert not [r for r in caplog.records if "Failed to build path" in r.getMessage()]


def test_keyed_checks_in_worker_processes_report_what_one_process_does(make_config, keys, tmp_path,
                                                                        monkeypatch, capsys) -> None:
    from archiver import content_pool

    config = make_config()
    entries = archive_samples(config, count=6)
    a, b, c = entries[1], entries[2], entries[4]
    overwrite_stored(config, a["objects"]["pdf"]["key"], stored_path(config, b["objects"]["pdf"]["key"]).read_bytes())
    index(config).update_one({"_id": a["_id"]}, {"$set": {"objects.pdf": {**b["objects"]["pdf"], "key": a["objects"]["pdf"]["key"]}}})
    index(config).update_one({"_id": c["_id"]}, {"$set": {"source_sha256": "0" * 64}})
    key = RecipientKey.load(str(keys["legal.key.pem"]), config["encryption.recipients"])
    alone = verify_archive(config, None, key, workers=1)
    from archiver.integrity import Verifier

    submitted: list[int] = []
    waiting = {"now": 0, "most": 0}
    real_submit, real_settle = content_pool.ContentPool.submit, Verifier._settle

    def counting(self, entry, sealed):
        submitted.append(entry["version"])
        waiting["now"] += 1
        waiting["most"] = max(waiting["most"], waiting["now"])
        return real_submit(self, entry, sealed)

    def settling(self, opened, content, report, progress):
        waiting["now"] -= content is not None
        return real_settle(self, opened, content, report, progress)
    monkeypatch.setattr(content_pool.ContentPool, "submit", counting)
    monkeypatch.setattr(Verifier, "_settle", settling)
    spread = verify_archive(config, None, key, workers=2)
    assert len(submitted) == 6  # every entry's content went to a worker
    assert waiting["most"] == 5  # bounded: 2 x 2 waiting, and the one just submitted
    assert _named(spread) == _named(alone) and [r for r, _ in _named(alone)][0] == a["room"]
    assert {r for r, _ in _named(spread)} == {a["room"], c["room"]}
    assert spread.entries == alone.entries == 6 and spread.problem_count == alone.problem_count
    assert run_cli(config, tmp_path, "verify", "--all", "--key", str(keys["legal.key.pem"]), "--workers", "2") == 3
    assert f"PROBLEM {c['room']} v1: failed: record" in capsys.readouterr().out


def test_a_key_that_opens_nothing_is_named_for_every_entry_in_worker_processes(archived) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    config, entries = archived
    with open(config["encryption.recipients"][0], "rb") as f:
        certificate = x509.load_pem_x509_certificate(f.read())
    wrong = RecipientKey(rsa.generate_private_key(public_exponent=65537, key_size=2048), certificate)
    report = verify_archive(config, None, wrong, workers=2)
    assert sorted({r for r, _ in _named(report)}) == sorted(e["room"] for e in entries)
    # An envelope has no integrity of its own (AES-CBC, docs/decisions.md): under a wrong key about one object in
    # 256 still has valid padding and decrypts to other bytes, which the recorded plaintext hash names instead.
    garbage = "to the recorded plaintext (size, SHA-256) (plaintext SHA-256 "
    assert all("cannot open the envelope" in text or garbage in text for _, text in _named(report)), _named(report)


def test_a_worker_that_dies_on_one_entry_is_named_and_the_others_are_checked(archived, keys, monkeypatch) -> None:
    import concurrent.futures as cf
    from concurrent.futures.process import BrokenProcessPool

    from archiver import content_pool

    config, entries = archived
    real_submit = content_pool.ContentPool.submit

    def dying_on_the_second(self, entry, sealed):
        if entry["room"] != entries[1]["room"]:
            return real_submit(self, entry, sealed)
        future: cf.Future = cf.Future()
        future.set_exception(BrokenProcessPool("a child process terminated abruptly"))
        return future
    monkeypatch.setattr(content_pool.ContentPool, "submit", dying_on_the_second)
    report = verify_archive(config, None, RecipientKey.load(str(keys["legal.key.pem"]), config["encryption.recipients"]),
                            workers=2)
    assert _named(report) == [(entries[1]["room"], "failed: content checked in a worker process "
                                                   "(BrokenProcessPool: a child process terminated abruptly)")]
    assert report.entries == 3


def test_keyed_check_workers_exit_when_the_verifier_is_killed(keys, tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from archiver.artifacts import process_start

    script = (
        "import sys, time\n"
        "from archiver.content_pool import ContentPool\n"
        "from archiver.envelope import RecipientKey\n"
        "pool = ContentPool(2, RecipientKey.load(sys.argv[1], [sys.argv[2]]), [])\n"
        "started = [pool.submit({}, {}), pool.submit({}, {})]\n"  # two at once: two workers
        "assert [f.result() for f in started] == [[], []]\n"
        "print(*pool.pool._processes, flush=True)\n"
        "time.sleep(600)\n")
    verifier = subprocess.Popen([sys.executable, "-c", script, str(keys["legal.key.pem"]), str(keys["legal.crt.pem"])],
                                stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(pid) for pid in verifier.stdout.readline().split()]
    finally:
        verifier.kill()  # SIGKILL: no chance to shut its pool down
        verifier.wait()
    assert len(workers) == 2
    deadline = time.monotonic() + 15
    while any(process_start(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if process_start(pid)]
    for pid in left:  # do not leave them behind if the check fails
        os.kill(pid, signal.SIGKILL)
    assert left == [], "workers outlived their verifier"


# Every field docs/retrieval.md (step 5) lists besides ended_at, kind, agents and customers, with an edited value
# as the problem names it.
OTHER_SEARCHABLE = {"service": ("Other desk", "'Other desk'"), "channel": ("fax", "'fax'"),
                    "ctlive_type": ("call2", "'call2'"),
                    "started_at": (dt.datetime(2018, 12, 31, tzinfo=dt.timezone.utc), "'2018-12-31T00:00:00.000Z'"),
                    "closed_by": ("someone else", "'someone else'"), "message_count": (999, "999")}


def test_searchable_fields_edited_in_the_index_are_named_with_a_key(archived, keys, tmp_path, capsys) -> None:
    """An entry's agents, customers, times, kind, type, channel, service, closer and message count are what search
    and holds select by, and what verification.json repeats: edited, they hid a chat from a search while every
    check passed. Each is named on its own (one left unchecked would fail its assertion)."""
    import datetime as dt
    from retrieval_helpers import run_cli
    config, entries = archived
    entry = entries[0]
    index(config).update_one({"_id": entry["_id"]}, {"$set": {
        "ended_at": dt.datetime(2019, 1, 1, tzinfo=dt.timezone.utc), "kind": "abandoned",
        "agents": entry["customers"], "customers": entry["agents"],
        **{field: value for field, (value, _) in OTHER_SEARCHABLE.items()}}})
    ((room, problem),) = _named(_verify(config, keys))
    assert room == entry["room"] and "searchable fields" in problem
    assert "ended_at '2019-01-01T00:00:00.000Z'" in problem and "kind 'abandoned'" in problem and "agents" in problem
    for field, (_, shown) in OTHER_SEARCHABLE.items():
        assert f"{field} {shown} (record " in problem, (field, problem)
    assert run_cli(config, tmp_path, "retrieve", room, "--key", str(keys["legal.key.pem"]), "--out",
                   str(tmp_path / "case"), "--reason", "case 7") == 3
    assert not (tmp_path / "case").exists()
    other = entries[1]  # removed rather than edited: hidden from a search by customer just the same
    index(config).update_one({"_id": other["_id"]}, {"$unset": {"customers": "", "agents": "", "ended_at": ""}})
    assert any(room == other["room"] and "customers None" in p for room, p in _named(_verify(config, keys)))


@pytest.mark.parametrize("objects_left", [True, False], ids=["objects still stored", "objects removed too"])
def test_a_tombstone_written_by_hand_over_an_archive_is_named(archived, objects_left) -> None:
    """A tombstone hides a chat from retrieval ("deleted by run ..."): one written over an archive by hand,
    naming a run that never was, passed verification whether or not its objects were removed as well."""
    import datetime as dt
    config, entries = archived
    victim = entries[0]
    index(config).update_one({"_id": victim["_id"]}, {"$set": {
        "status": "deleted", "deleted_at": dt.datetime.now(dt.timezone.utc),
        "deletion": {"run": "ret-2026-11-01-made-up", "rule": "default", "state": "done",
                     "at": dt.datetime.now(dt.timezone.utc)}}})
    if not objects_left:
        for obj in victim["objects"].values():
            remove_stored(config, obj["key"])
    problems = [p for room, p in _named(_verify(config)) if room == victim["room"]]
    assert any("no run 'ret-2026-11-01-made-up'" in p for p in problems), problems
    assert any("still in the store" in p for p in problems) == objects_left


def _leave_a_temporary(config, entry, age_seconds: float):
    """What a worker killed inside files.publish leaves: its temporary file (ciphertext), never linked."""
    folder = stored_path(config, entry["objects"]["pdf"]["key"]).parent
    temp = folder / ".tmp-abc123"
    temp.write_bytes(stored_path(config, entry["objects"]["pdf"]["key"]).read_bytes())
    then = time.time() - age_seconds
    os.utime(temp, (then, then))
    return temp


def test_a_temporary_file_a_killed_write_left_is_named_once_older_than_the_lease(archived) -> None:
    config, entries = archived
    room = entries[0]["room"]
    young = _leave_a_temporary(config, entries[0], 1)
    assert _verify(config).ok, "a write may be under way: not a problem yet"
    old = young.rename(young.with_name(".tmp-old"))
    os.utime(old, (time.time() - config["archive.lease_seconds"] - 60,) * 2)
    for rooms in (None, [room]):
        named = _named(_verify(config, rooms=rooms))
        assert len(named) == 1 and named[0][0] == room and ".tmp-old" in named[0][1], named


def test_the_people_of_a_chat_whose_senders_state_no_role_or_both_verify_and_an_edit_is_named(make_config, keys
                                                                                              ) -> None:
    """A sender whose messages never state a role is indexed under both `agents` and `customers` (search, holds
    and erasure find them), one stated as both likewise (with a data warning): verify derives the same from the
    signed record, and names the entry when one is removed from a list."""
    import random
    config = make_config()
    chat, contact = make_chat(random.Random(6), messages=6, start_ms=recent_ms(30))
    chat["messages"][0]["data"]["content"]["user"] = {"id": "ghost"}
    users = [m["data"]["content"]["user"] for m in chat["messages"][1:] if m["data"]["messageType"] == "TEXT"]
    users[0]["id"], users[0]["isAgent"] = "twofaced", True
    users[1]["id"], users[1]["isAgent"] = "twofaced", False
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    (entry,) = index(config).find()
    assert {"ghost", "twofaced"} <= set(entry["agents"]) & set(entry["customers"]), entry
    assert any("twofaced" in w and "an agent in message" in w for w in entry["warnings"]), entry["warnings"]
    assert _verify(config, keys).ok
    index(config).update_one({"_id": entry["_id"]}, {"$pull": {"agents": "ghost"}})
    ((room, problem),) = _named(_verify(config, keys))
    assert room == chat["room"] and "searchable fields" in problem and "agents" in problem


def test_records_from_before_roles_came_from_every_message_verify_as_they_were_indexed() -> None:
    """A record of format /3 or older: a sender's role was their first message's, and one whose first message
    stated none ('unknown') was in neither list; its entry still verifies (nothing archived changes)."""
    from archiver.integrity import _searchable_check
    people = [{"user_id": "A", "role": "agent"}, {"user_id": "C", "role": "customer"}, {"user_id": "U", "role": "unknown"}]
    doc = {"format": "ctlive-archive-record/3", "status": "ended", "transcript": {"participants": people}}
    entry = {"kind": "ended", "started_at": None, "ended_at": None, "agents": ["A"], "customers": ["C"]}
    assert _searchable_check(doc, entry).ok
    assert not _searchable_check(doc, {**entry, "agents": ["A", "U"]}).ok



def test_an_archived_at_moved_before_its_record_says_what_is_wrong(archived, keys) -> None:
    """verify said `failed: record: the entry was indexed within a day after the record was made`: the rule,
    read as the fault. It says which way archived_at is wrong; `verify ROOM --key` and retrieval alike."""
    config, entries = archived
    entry = entries[0]
    index(config).update_one({"_id": entry["_id"]}, {"$set": {"archived_at": entry["archived_at"] - dt.timedelta(hours=2)}})
    problems = [p for room, p in _named(_verify(config, keys)) if room == entry["room"]]
    shown = [p for p in problems if "archived_at dates its seal" in p]
    assert len(shown) == 1 and shown[0].startswith(
        "failed: record: the entry was indexed before the record was made (archived_at dates its seal) "
        "(generated_at "), problems
    index(config).update_one({"_id": entry["_id"]}, {"$set": {"archived_at": entry["archived_at"]}})
    assert _verify(config, keys).ok, "as archived, the check holds"


@pytest.mark.parametrize("made, indexed, fault", [
    ("2026-11-01T10:00:00.000Z", "2026-11-02T10:00:01Z", "the entry was indexed more than a day after the record was made"),
    ("2026-11-01T10:00:00.000Z", "2026-11-01T09:54:59Z", "the entry was indexed before the record was made"),
    ("2026-11-01T10:00:00.000Z", "soon", "the entry's archived_at or the record's generated_at cannot be read"),
    (None, "2026-11-01T10:00:00Z", "the entry's archived_at or the record's generated_at cannot be read"),
])
def test_the_archived_at_check_names_the_fault_and_states_the_rule_when_it_holds(made, indexed, fault) -> None:
    from archiver.integrity import _archived_at_check

    check = _archived_at_check({"generated_at": made}, {"archived_at": indexed})
    assert not check.ok and check.check == f"record: {fault} (archived_at dates its seal)", check
    for held in ("2026-11-01T10:00:00Z", "2026-11-02T10:00:00Z", "2026-11-01T09:55:00Z"):  # the bounds hold
        check = _archived_at_check({"generated_at": "2026-11-01T10:00:00.000Z"}, {"archived_at": held})
        assert check.ok and check.check == ("record: the entry was indexed within a day after the record was made "
                                            "(archived_at dates its seal)"), (held, check)
