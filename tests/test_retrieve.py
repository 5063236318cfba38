"""archiver retrieve: fetch, decrypt, verify, write; failures write nothing and are audited."""

from __future__ import annotations

import logging
import json
import random
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from archiver.names import safe_name
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from archiver.store import open_store
from archiver.cli import main
from conftest import require_tool, write_toml
from retrieval_helpers import (CLI_KEYS, archive_samples, audit, index, overwrite_stored, remove_stored, run_cli,
                               stored_path)
from test_pipeline import recent_ms, seed

CHAINS = "signer chains to a trust anchor (--ca or signing.trust_anchors)"  # the trust check's name in verification.json


@pytest.fixture
def archived(make_config):
    config = make_config()
    return config, archive_samples(config, count=2)


def _flip_byte(config, key: str) -> None:
    data = bytearray(stored_path(config, key).read_bytes())
    data[len(data) // 2] ^= 0x01
    overwrite_stored(config, key, bytes(data))


def test_retrieve_writes_verified_files_outside_tools_accept(archived, keys, tmp_path, capsys) -> None:
    config, entries = archived
    room = entries[0]["room"]
    out = tmp_path / "case-42"
    assert run_cli(config, tmp_path, "retrieve", room, "--key", str(keys["legal.key.pem"]), "--out", str(out),
                "--reason", "case 42: complaint", "--ca", str(keys["ca.crt.pem"]), "--actor", "carol") == 0
    folder = out / f"{safe_name(room)}-v1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "certificates.pem", "record.json", "record.json.p7s", "signer.crt.pem", "transcript.pdf", "verification.json"]
    report = json.loads((folder / "verification.json").read_text())
    assert report["ok"] is True and report["room"] == room and report["version"] == 1
    assert report["reason"] == "case 42: complaint" and report["retrieved_by"]["on_behalf_of"] == "carol"
    assert all(c["ok"] for c in report["checks"]) and len(report["checks"]) >= 8
    assert report["files"]["transcript.pdf"]["sha256"] == entries[0]["objects"]["pdf"]["plaintext_sha256"]
    assert json.loads((folder / "record.json").read_bytes())["room"] == room
    pdfsig = subprocess.run([require_tool("pdfsig"), str(folder / "transcript.pdf")], capture_output=True, text=True)
    assert "Signature is Valid" in pdfsig.stdout, pdfsig.stdout
    cms = subprocess.run([require_tool("openssl"), "cms", "-verify", "-binary", "-inform", "DER",
                          "-in", str(folder / "record.json.p7s"), "-content", str(folder / "record.json"),
                          "-CAfile", str(keys["ca.crt.pem"]), "-out", "/dev/null"], capture_output=True, text=True)
    assert cms.returncode == 0 and "Verification successful" in cms.stderr
    chain = subprocess.run([require_tool("openssl"), "verify", "-CAfile", str(keys["ca.crt.pem"]),
                            str(folder / "signer.crt.pem")], capture_output=True, text=True)
    assert chain.returncode == 0, chain.stderr
    (entry,) = [e for e in audit(config) if e["action"] == "retrieve" and e["outcome"] != "started"]
    assert entry["outcome"] == "ok" and entry["rooms"] == [room] and entry["reason"] == "case 42: complaint"
    assert entry["actor"]["on_behalf_of"] == "carol" and entry["actor"]["user"] == report["retrieved_by"]["user"]
    assert str(folder) in capsys.readouterr().out


def test_the_check_it_yourself_commands_catch_a_transcript_signed_by_a_self_made_certificate(
        archived, keys, tmp_path) -> None:
    """verification.json's commands, run as written (YOUR-CA.pem put in the folder): they pass on the retrieved
    files, and the PDF one fails on a transcript with a valid signature whose signer the CA never issued."""
    from test_bundle import _forged_pdf, _verdicts

    config, entries = archived
    room = entries[0]["room"]
    assert run_cli(config, tmp_path, "retrieve", room, "--key", str(keys["legal.key.pem"]), "--out",
                   str(tmp_path / "o"), "--reason", "case 42") == 0
    folder = tmp_path / "o" / f"{safe_name(room)}-v1"
    (folder / "YOUR-CA.pem").write_bytes(keys["ca.crt.pem"].read_bytes())
    pdf_check, record_check = json.loads((folder / "verification.json").read_text())["check_it_yourself"][:2]
    for tool in ("pdfsig", "certutil", "openssl"):
        require_tool(tool)

    def run(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=folder, capture_output=True, text=True)

    for check, name in ((pdf_check, "transcript.pdf"), (record_check, "record.json")):
        done = run(check)
        assert _verdicts(done.stdout) == [["OK", name]] and done.returncode == 0, done
    (folder / "transcript.pdf").write_bytes(_forged_pdf(tmp_path))
    (folder / "record.json").write_bytes((folder / "record.json").read_bytes() + b" ")
    for check, name in ((pdf_check, "transcript.pdf"), (record_check, "record.json")):
        done = run(check)  # a script that checks the exit status alone sees the failure too
        assert _verdicts(done.stdout) == [["FAILED", name]] and done.returncode != 0, done


def _failed_attempt(config, tmp_path, out: Path, *argv: str) -> tuple[int, str]:
    code = run_cli(config, tmp_path, "retrieve", *argv, "--out", str(out))
    assert not out.exists()  # nothing written, not even the folder
    return code, audit(config)[-1]["outcome"]


def test_wrong_key_fails_clearly_writes_nothing_and_is_audited(archived, keys, tmp_path, capsys) -> None:
    config, entries = archived
    other = tmp_path / "other.key.pem"
    other.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    code, outcome = _failed_attempt(config, tmp_path, tmp_path / "out", entries[0]["room"], "--key", str(other),
                                    "--reason", "case 1")
    assert code == 2 and outcome == "failed"
    assert "key" in capsys.readouterr().err


def test_unknown_room_fails_clearly_and_is_audited(archived, keys, tmp_path, capsys) -> None:
    config, _ = archived
    code, outcome = _failed_attempt(config, tmp_path, tmp_path / "out", "NO_SUCH_ROOM",
                                    "--key", str(keys["legal.key.pem"]), "--reason", "case 1")
    assert code == 1 and outcome == "failed"
    assert "NO_SUCH_ROOM" in capsys.readouterr().err
    assert audit(config)[-1]["rooms"] == ["NO_SUCH_ROOM"]


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_retrieval_without_a_reason_is_refused_and_audited(archived, keys, tmp_path, capsys, reason) -> None:
    config, entries = archived
    argv = [entries[0]["room"], "--key", str(keys["legal.key.pem"])] + ([] if reason is None else ["--reason", reason])
    code, outcome = _failed_attempt(config, tmp_path, tmp_path / "out", *argv)
    assert code == 2 and outcome == "refused"
    assert "--reason" in capsys.readouterr().err


@pytest.mark.parametrize("at, named", [("reason", "--reason: 'case 7 \\xff'"), ("room", "ROOM: 'CHAT_\\xfe'"),
                                       ("lone", "--reason: 'case 7 \\ud800'")])
def test_an_argument_that_is_not_valid_utf8_is_refused_before_any_work(archived, keys, tmp_path, capsys, at,
                                                                       named) -> None:
    """Bytes that are not UTF-8 reach Python as surrogates (U+DC80-U+DCFF): the retrieval was done and its files
    written, then the audit log could not store the reason (a crash, nothing recorded). Refused up front now."""
    config, entries = archived
    room = "CHAT_\udcfe" if at == "room" else entries[0]["room"]
    reason = {"reason": "case 7 \udcff", "lone": "case 7 \ud800"}.get(at, "case 7")
    out = tmp_path / "out"
    assert run_cli(config, tmp_path, "retrieve", room, "--key", str(keys["legal.key.pem"]), "--out", str(out),
                   "--reason", reason) == 2
    err = capsys.readouterr().err
    assert f"{named} is not valid UTF-8" in err and "nothing done" in err, err
    assert not out.exists() and audit(config) == []


def test_a_tampered_object_fails_verification_and_writes_nothing(archived, keys, tmp_path, capsys) -> None:
    config, entries = archived
    _flip_byte(config, entries[0]["objects"]["record"]["key"])
    code, outcome = _failed_attempt(config, tmp_path, tmp_path / "out", entries[0]["room"],
                                    "--key", str(keys["legal.key.pem"]), "--reason", "case 7")
    assert code == 3 and outcome == "failed"
    assert "record" in capsys.readouterr().err


def test_retrieve_from_s3_after_the_configuration_moved_on(make_config, keys, tmp_path, moto_endpoint, bucket) -> None:
    config = make_config(storage__url=f"s3://{bucket}/chats", storage__endpoint_url=moto_endpoint,
                         storage__object_lock_mode="")
    (entry, _) = archive_samples(config, count=2)
    assert entry["store"] == {"url": f"s3://{bucket}/chats/", "endpoint_url": moto_endpoint}
    moved = config.with_overrides(**{"storage.url": f"file://{tmp_path / 'elsewhere'}", "storage.endpoint_url": ""})
    out = tmp_path / "out"
    assert run_cli(moved, tmp_path, "retrieve", entry["room"], "--key", str(keys["legal.key.pem"]),
                "--out", str(out), "--reason", "case 9", "--version", "1") == 0
    report = json.loads((out / f"{safe_name(entry['room'])}-v1" / "verification.json").read_text())
    assert report["ok"] and report["store"]["url"] == f"s3://{bucket}/chats/"


def test_an_entry_without_a_store_uses_the_configured_one(archived, keys, tmp_path) -> None:
    config, entries = archived
    index(config).update_one({"_id": entries[1]["_id"]}, {"$unset": {"store": ""}})
    out = tmp_path / "out"
    assert run_cli(config, tmp_path, "retrieve", entries[1]["room"], "--key", str(keys["legal.key.pem"]),
                "--out", str(out), "--reason", "old entry") == 0
    assert (out / f"{safe_name(entries[1]['room'])}-v1" / "transcript.pdf").read_bytes().startswith(b"%PDF-")
    assert open_store(config).url in (out / f"{safe_name(entries[1]['room'])}-v1" / "verification.json").read_text()


def test_an_existing_target_is_not_overwritten(archived, keys, tmp_path) -> None:
    config, entries = archived
    room, out = entries[0]["room"], tmp_path / "out"
    argv = ["retrieve", room, "--key", str(keys["legal.key.pem"]), "--out", str(out), "--reason", "case 5"]
    assert run_cli(config, tmp_path, *argv) == 0
    before = (out / f"{safe_name(room)}-v1" / "verification.json").read_bytes()
    assert run_cli(config, tmp_path, *argv) == 2
    assert (out / f"{safe_name(room)}-v1" / "verification.json").read_bytes() == before
    assert [p.name for p in out.iterdir()] == [f"{safe_name(room)}-v1"]  # no temporary folder left


def test_signatures_that_do_not_chain_to_the_given_ca_fail(archived, keys, tmp_path, capsys, monkeypatch) -> None:
    from archiver.keys import create_development_keys

    config, entries = archived
    other = create_development_keys(tmp_path / "other-keys")
    monkeypatch.setattr(logging.root, "handlers", [])  # as when run from a shell: no pytest handler on the root
    code, outcome = _failed_attempt(config, tmp_path, tmp_path / "out", entries[0]["room"], "--key",
                                    str(keys["legal.key.pem"]), "--reason", "case 6", "--ca", str(other["ca.crt.pem"]))
    assert code == 3 and outcome == "failed"
    err = capsys.readouterr().err
    assert CHAINS in err
    assert "Traceback" not in err, "the outcome is named once, without a library's stack traces"
    assert "could not be validated" in err, "with pyHanko's reason, in the check's words"


def test_the_recorded_store_location_never_holds_credentials(moto_endpoint, bucket) -> None:
    from archiver.store import store_location
    from archiver.store.s3 import S3Store

    with_secret = moto_endpoint.replace("http://", "http://user:s3cret@")
    where = store_location(S3Store(bucket, "p", endpoint_url=with_secret))
    assert where == {"url": f"s3://{bucket}/p/", "endpoint_url": moto_endpoint}


def _two_versions(make_config):
    import random
    from archiver.mongo import connect
    from archiver.pipeline import Archiver
    from archiver.samples import make_chat
    from test_pipeline import recent_ms, seed
    config = make_config()
    chat, contact = make_chat(random.Random(3), messages=6, start_ms=recent_ms())
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    archiver.run_pass()
    chats = connect(config["mongodb.uri"])[config["source.database"]][config["source.chats"]]
    chats.update_one({"room": chat["room"]}, {"$set": {"ctlive_type": "call"}})
    archiver.archive_room(chat["room"], "ended")
    v1, v2 = index(config).find({"room": chat["room"]}).sort("version", 1)
    return config, chat["room"], v1, v2


def test_an_older_versions_pdf_replayed_as_a_newer_one_is_caught(make_config, keys, tmp_path, capsys) -> None:
    """The PDF is signed by us and of the right room, but of version 1: its attached record gives it away.
    With version 2's own PDF listed as superseded, nothing in the store is left unexplained either."""
    config, room, v1, v2 = _two_versions(make_config)
    index(config).update_one({"_id": v2["_id"]}, {"$set": {"objects.pdf": v1["objects"]["pdf"]},
                                                  "$push": {"superseded_objects": v2["objects"]["pdf"]["key"]}})
    key = str(keys["legal.key.pem"])
    assert run_cli(config, tmp_path, "verify", "--key", key, "--workers", "1", "--all") == 3
    assert "failed: pdf: attaches this version's record" in capsys.readouterr().out
    out = tmp_path / "case"
    assert run_cli(config, tmp_path, "retrieve", room, "--key", key, "--out", str(out), "--reason", "case",
                   "--ca", str(keys["ca.crt.pem"])) == 3
    assert "attaches this version's record" in capsys.readouterr().err and not out.exists()


def test_a_chat_forged_under_another_ca_fails_against_the_configured_trust_anchor(make_config, keys, tmp_path,
                                                                                   capsys) -> None:
    """Anyone can encrypt to the legal team's public certificate and sign with a key of their own: someone
    with write access to the index and the store (no key) swaps a chat for a forged one. Only a trust
    anchor tells the two apart; without one the output says the signers were not checked."""
    import copy
    import random
    import shutil
    from archiver.keys import create_development_keys
    from archiver.pipeline import Archiver
    from archiver.samples import make_chat
    from test_pipeline import recent_ms, seed
    real = make_config()
    chat, contact = make_chat(random.Random(3), messages=6, start_ms=recent_ms())
    seed(real, [(chat, contact)])
    Archiver(real).run_pass()
    (genuine,) = index(real).find({"room": chat["room"]})
    theirs = create_development_keys(tmp_path / "forger-keys")
    forged = copy.deepcopy(chat)
    forged["messages"][0]["data"]["content"]["text"] = "I agree to waive all my claims."
    forger = make_config(signing__certificate=str(theirs["signing.crt.pem"]), signing__key=str(theirs["signing.key.pem"]),
                         index__database="forger_index", source__database="forger_source",
                         storage__url=f"file://{tmp_path / 'forger-store'}")
    seed(forger, [(forged, contact)])
    Archiver(forger).run_pass()
    (fake,) = index(forger).find({"room": chat["room"]})
    for obj in fake["objects"].values():
        stored_path(real, obj["key"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(stored_path(forger, obj["key"]), stored_path(real, obj["key"]))
    index(real).update_one({"_id": genuine["_id"]}, {"$set": {
        "objects": fake["objects"], "signing_certificate_sha256": fake["signing_certificate_sha256"],
        "source_sha256": fake["source_sha256"]},
        "$push": {"superseded_objects": {"$each": [o["key"] for o in genuine["objects"].values()]}}})
    key = str(keys["legal.key.pem"])

    capsys.readouterr()
    assert run_cli(real, tmp_path, "retrieve", chat["room"], "--key", key, "--out", str(tmp_path / "open"),
                   "--reason", "case 7") == 3  # no anchor: the signers are still pinned to signing.certificate
    captured = capsys.readouterr()
    assert "signed with one of this configuration's signing certificates" in captured.out + captured.err
    assert not (tmp_path / "open").exists() or not any((tmp_path / "open").iterdir())
    unpinned = real.with_overrides(**{"signing.certificate": "", "signing.key": ""})
    assert run_cli(unpinned, tmp_path, "retrieve", chat["room"], "--key", key, "--out", str(tmp_path / "open"),
                   "--reason", "case 7") == 0  # neither anchor nor pin: intact signatures, and loud warnings
    out = capsys.readouterr().out
    assert "WARNING: signers NOT checked against a trust anchor" in out and "WARNING: signers NOT pinned" in out
    report = json.loads(next((tmp_path / "open").iterdir()).joinpath("verification.json").read_text())
    assert report["signer_trust"].startswith("NOT CHECKED") and report["trusted_roots"] == []

    anchored = real.with_overrides(**{"signing.trust_anchors": [str(keys["ca.crt.pem"])]})
    assert run_cli(anchored, tmp_path, "retrieve", chat["room"], "--key", key, "--out", str(tmp_path / "case"),
                   "--reason", "case 7") == 3
    assert CHAINS in capsys.readouterr().err
    assert not (tmp_path / "case").exists()
    assert run_cli(anchored, tmp_path, "verify", "--all", "--key", key, "--workers", "1") == 3


def test_a_retrieval_names_the_rooms_other_versions(make_config, keys, tmp_path, capsys) -> None:
    """A version is a content: the latest is retrieved by default, and the reader is told what else there is
    (an earlier version may be what the source holds again, after an edit was undone)."""
    config, room, v1, v2 = _two_versions(make_config)
    capsys.readouterr()
    assert run_cli(config, tmp_path, "retrieve", room, "--key", str(keys["legal.key.pem"]), "--out",
                   str(tmp_path / "case"), "--reason", "case 7") == 0
    assert "the room has 2 versions: v1 archived (ended), v2 archived (ended)" in capsys.readouterr().out
    report = json.loads(next((tmp_path / "case").iterdir()).joinpath("verification.json").read_text())
    assert report["version"] == 2 and [v["version"] for v in report["versions"]] == [1, 2]


HOSTILE_ROOMS = ("CHAT_\u202eRLO", "CHAT_tab\there", "CHAT_" + "x\u200b" * 600)  # the last: 1,205 characters


@pytest.mark.parametrize("field_chars", [1_000, 40])
def test_rooms_the_pdf_title_shows_altered_or_cut_still_retrieve_verify_and_bundle(make_config, keys, tmp_path,
                                                                                    capsys, field_chars) -> None:
    """The PDF title is the room as the renderer shows it (placeholders, cut at archive.max_field_chars with
    an ellipsis); the checks accept that, whatever limit the legal team's own configuration has."""
    config = make_config(archive__max_field_chars=field_chars)
    rng = random.Random(3)
    chats = [make_chat(rng, messages=3, start_ms=recent_ms(30), room=room) for room in (*HOSTILE_ROOMS, None)]
    seed(config, chats)
    assert Archiver(config).run_pass().archived == 4
    rooms = [chat["room"] for chat, _ in chats]  # the last a normal 49-character room id
    key = str(keys["legal.key.pem"])
    for i, room in enumerate(rooms):
        assert run_cli(config, tmp_path, "retrieve", room, "--key", key, "--out", str(tmp_path / f"o{i}"),
                       "--reason", "case 9") == 0, capsys.readouterr()
    assert run_cli(config, tmp_path, "verify", "--all", "--no-progress", "--key", key) == 0, capsys.readouterr()
    assert run_cli(config, tmp_path, "retrieve", *rooms, "--bundle", str(tmp_path / "case.zip"), "--key", key,
                   "--reason", "case 9", "--no-progress") == 0, capsys.readouterr()
    assert (tmp_path / "case.zip").is_file()


def test_a_retrieval_racing_a_retention_run_says_deleted_by_that_run_not_verification_failed(
        make_config, keys, tmp_path, capsys, monkeypatch) -> None:
    """Retention deletes the version between `retrieve` reading its entry and fetching its objects: the
    objects are missing because a run deleted them on purpose, not because the archive is damaged."""
    import archiver.retrieval as retrieval
    from retention_helpers import retention_config
    from retrieval_helpers import retention_runs_during_fetch

    config = retention_config(make_config)
    (entry,) = archive_samples(config, count=1)
    retention_runs_during_fetch(monkeypatch, retrieval, config)
    capsys.readouterr()
    code = run_cli(config, tmp_path, "retrieve", entry["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(tmp_path / "o"), "--reason", "case 7")
    err = capsys.readouterr().err
    tombstone = index(config).find_one({"_id": entry["_id"]})
    assert tombstone["status"] == "deleted" and code == 1, err
    run = tombstone["deletion"]["run"]
    assert f"deleted by run {run} under rule default" in err and "verification failed" not in err
    assert not (tmp_path / "o").exists()
    started, audited = [e for e in audit(config) if e["action"] == "retrieve"]
    assert started["outcome"] == "started"
    assert audited["outcome"] == "failed" and f"deleted by run {run}" in audited["detail"]


def test_a_retrieval_meeting_a_deletion_half_done_says_so(archived, keys, tmp_path, capsys, monkeypatch) -> None:
    """A run has written the tombstone (state deleting) and removed one object when the retrieval fetches."""
    import archiver.retrieval as retrieval

    config, entries = archived
    entry, real = entries[0], retrieval.check_stored

    def deletion_under_way(found, store):
        index(config).update_one({"_id": found["_id"]}, {"$set": {"status": "deleted", "deletion": {
            "run": "ret-9", "rule": "default", "state": "deleting"}}})
        stored_path(config, found["objects"]["pdf"]["key"]).unlink()
        return real(found, store)

    monkeypatch.setattr(retrieval, "check_stored", deletion_under_way)
    code = run_cli(config, tmp_path, "retrieve", entry["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(tmp_path / "o"), "--reason", "case 8")
    err = capsys.readouterr().err
    assert code == 1 and "being deleted by run ret-9 under rule default" in err, err


def test_an_object_missing_from_an_archived_entry_is_still_a_failed_check(archived, keys, tmp_path, capsys) -> None:
    """Only a deletion explains a missing object: with the entry still archived it is damage (exit 3)."""
    config, entries = archived
    stored_path(config, entries[0]["objects"]["pdf"]["key"]).unlink()
    code = run_cli(config, tmp_path, "retrieve", entries[0]["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(tmp_path / "o"), "--reason", "case 9")
    err = capsys.readouterr().err
    assert code == 3 and "verification failed" in err and "missing" in err, err


def _altered(config, key: str, how: str) -> None:
    """KEY's stored bytes changed, present under the same key: other bytes of another size, or one byte flipped."""
    if how == "size":
        overwrite_stored(config, key, b"tampered")
    else:
        _flip_byte(config, key)


@pytest.mark.parametrize("how", ["size", "sha256"])
def test_a_kept_version_whose_object_was_altered_is_a_verification_failure(make_config, keys, monkeypatch, tmp_path,
                                                                           capsys, how) -> None:
    """A version a run began to delete and then kept (a hold) is evidence under a hold: an object present
    with other bytes is tampering, exit 3 named as an archived version's is, not "being deleted" (exit 1)."""
    from test_retention_resume import _held_after_cut_short
    config, chat, _ = _held_after_cut_short(make_config, monkeypatch)
    entry = index(config).find_one()
    key = entry["objects"]["record"]["key"]
    _altered(config, key, how)
    capsys.readouterr()
    code = run_cli(config, tmp_path, "retrieve", chat["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(tmp_path / "o"), "--reason", "Subpoena 7")
    err = capsys.readouterr().err
    assert code == 3 and "verification failed" in err and "being deleted" not in err, err
    assert f"record: stored object {key} has the recorded size and SHA-256 (altered: size" in err, err
    assert f"its deletion, begun by run {entry['deletion']['run']}" in err and "Subpoena 7" in err, err  # kept: why
    assert not (tmp_path / "o").exists()
    failed = audit(config)[-1]
    assert failed["outcome"] == "failed" and "verification failed" in failed["detail"] and key in failed["detail"]
    assert index(config).find_one()["deletion"]["state"] == "deleting"  # retrieval changes nothing


def test_a_kept_version_with_one_object_gone_and_another_altered_is_a_verification_failure(
        make_config, keys, monkeypatch, tmp_path, capsys) -> None:
    """A missing object alone is consistent with the deletion begun (exit 1, tests/test_retention_resume.py);
    beside an altered one it is not: tampering, exit 3, both named."""
    from test_retention_resume import _held_after_cut_short
    config, chat, _ = _held_after_cut_short(make_config, monkeypatch)
    entry = index(config).find_one()
    remove_stored(config, entry["objects"]["pdf"]["key"])
    _altered(config, entry["objects"]["record_signature"]["key"], "sha256")
    capsys.readouterr()
    code = run_cli(config, tmp_path, "retrieve", chat["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(tmp_path / "o"), "--reason", "Subpoena 7")
    err = capsys.readouterr().err
    assert code == 3 and "verification failed" in err and "being deleted" not in err, err
    assert "the object is missing from the store" in err and "altered: size" in err, err
    assert audit(config)[-1]["outcome"] == "failed" and not (tmp_path / "o").exists()


def _unlink_objects(config, entry: dict, names: list[str]) -> None:
    for name in names:
        remove_stored(config, entry["objects"][name]["key"])


@pytest.mark.parametrize("gone", [["record_signature"], ["record"], ["record", "record_signature"],
                                  ["pdf", "record_signature"], ["pdf"], ["pdf", "record"],
                                  ["pdf", "record", "record_signature"]])
def test_a_kept_version_missing_objects_no_deletion_cut_short_leaves_is_a_verification_failure(
        make_config, keys, monkeypatch, tmp_path, capsys, gone) -> None:
    """Retention deletes a version's objects in the order of its `objects` (pdf, record, record_signature) and
    stops at the first failure: a deletion cut short leaves a first part of them gone. The run records which
    were stored when it kept the version (here all: the crash came before the first went), so any of them
    missing, a first part or all too, was removed after its run kept it: held evidence gone, exit 3 (not
    "being deleted", exit 1), audited as failed; `verify` names it a problem too, not KEPT."""
    from archiver.integrity import verify_archive
    from test_retention_resume import _held_after_cut_short
    config, chat, _ = _held_after_cut_short(make_config, monkeypatch)
    entry = index(config).find_one()
    assert list(entry["objects"]) == ["pdf", "record", "record_signature"]  # the order retention deletes them in
    _unlink_objects(config, entry, gone)
    run = index(config).find_one()["deletion"]["run"]
    capsys.readouterr()
    code = run_cli(config, tmp_path, "retrieve", chat["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(tmp_path / "o"), "--reason", "Subpoena 7")
    err = capsys.readouterr().err
    assert code == 3 and "verification failed" in err and "being deleted" not in err, err
    assert f"removed after run {run} kept it" in err and "Subpoena 7" in err, err
    for name in gone:
        assert f"{name}: stored object {entry['objects'][name]['key']} has the recorded size and SHA-256 " \
               "(the object is missing from the store)" in err, err
    assert not (tmp_path / "o").exists()
    failed = audit(config)[-1]
    assert failed["outcome"] == "failed" and f"removed after run {run} kept it" in failed["detail"], failed
    report = verify_archive(config, [chat["room"]])
    assert not report.ok and report.kept == [], report
    assert any(f"removed after run {run} kept it" in p.problem for p in report.problems), report.problems
    assert index(config).find_one()["deletion"]["state"] == "deleting"  # retrieval changes nothing


@pytest.mark.parametrize("by_crash", [True, False])
@pytest.mark.parametrize("gone", [["pdf"], ["pdf", "record"], ["pdf", "record", "record_signature"]])
def test_a_kept_version_missing_what_a_deletion_cut_short_leaves_is_being_deleted(
        make_config, keys, monkeypatch, tmp_path, capsys, gone, by_crash) -> None:
    """The first objects in retention's order gone (all of them too: a crash before the tombstone was marked
    done) before the run kept the version is what a deletion cut short leaves: "being deleted by run X"
    (exit 1), and `verify` names the unfinished deletion. So is the same gone since, for a step recorded before
    runs recorded which objects they kept (`kept_objects`): then nothing tells them apart."""
    from archiver.integrity import verify_archive
    from test_retention_resume import _held_after_cut_short, _steps
    config, chat, _ = _held_after_cut_short(make_config, monkeypatch, removed=tuple(gone) if by_crash else ())
    entry = index(config).find_one()
    if not by_crash:
        _steps(config).update_many({"run": entry["deletion"]["run"]}, {"$unset": {"kept_objects": ""}})
        _unlink_objects(config, entry, gone)
    capsys.readouterr()
    code = run_cli(config, tmp_path, "retrieve", chat["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(tmp_path / "o"), "--reason", "Subpoena 7")
    err = capsys.readouterr().err
    assert code == 1 and f"being deleted by run {entry['deletion']['run']}" in err and "removed after" not in err, err
    assert audit(config)[-1]["outcome"] == "failed" and not (tmp_path / "o").exists()
    report = verify_archive(config, [chat["room"]])
    assert not report.ok and report.kept == [], report
    assert any("is not finished" in p.problem for p in report.problems), report.problems


@pytest.mark.parametrize("allowed, said", [(0, "nothing was fetched or decrypted"),
                                           (1, "nothing was released: the decrypted files were removed")])
def test_nothing_is_released_unless_the_audit_log_records_it(archived, keys, tmp_path, monkeypatch, capsys,
                                                             allowed, said) -> None:
    """The entry was written after the files were renamed into place: a full disk left a decrypted chat
    on disk and no entry. Now an intent entry comes first and the release's entry before the rename."""
    from retrieval_helpers import refuse_audit
    config, entries = archived
    out = tmp_path / "out"
    refuse_audit(monkeypatch, config, allowed)
    assert run_cli(config, tmp_path, "retrieve", entries[0]["room"], "--key", str(keys["legal.key.pem"]), "--out",
                   str(out), "--reason", "case 42") == 1
    err = capsys.readouterr().err
    assert "the audit log could not be written" in err and "No space left on device" in err and said in err, err
    assert not out.exists() or not any(out.rglob("*"))  # no files, no staging folder
    assert [(e["outcome"], e["rooms"]) for e in audit(config)] == [("started", [entries[0]["room"]])] * allowed


def test_a_retrieval_is_recorded_before_and_after(archived, keys, tmp_path) -> None:
    config, entries = archived
    assert run_cli(config, tmp_path, "retrieve", entries[0]["room"], "--key", str(keys["legal.key.pem"]), "--out",
                   str(tmp_path / "out"), "--reason", "case 42") == 0
    assert [e["outcome"] for e in audit(config)] == ["started", "ok"]


def test_a_version_beyond_64_bits_is_a_usage_error(archived, keys, tmp_path, capsys) -> None:
    """--version 2**64 crashed with OverflowError (BSON integers are 64-bit), unaudited."""
    config, entries = archived
    assert run_cli(config, tmp_path, "retrieve", entries[0]["room"], "--version", str(2**64), "--key",
                   str(keys["legal.key.pem"]), "--out", str(tmp_path / "o"), "--reason", "case 1") == 2
    assert "--version: a version number from 1 to" in capsys.readouterr().err


def test_an_archive_whose_signer_has_expired_since_still_retrieves_and_verifies_with_a_ca(make_config, keys, tsa,
                                                                                          tmp_path) -> None:
    """Years later the signing certificate and its CA have expired: checked at today's date, retrieve --ca,
    verify --key --ca and a bundle refused every genuine archive (end-entity certificate expired). They check
    the chain at the time of signing, as the offline steps do: the signature's RFC 3161 timestamp when its
    authority is among the anchors, else the time the signer states, and say which. A signature made by a
    certificate that had expired already is still refused."""
    import datetime as dt
    import time

    from certfactory import ago, make
    from test_bundle import _minimal_pdf, _short_lived_pki

    from archiver.integrity import chain_check, validation_context
    from archiver.signing import Signer, SigningIdentity
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from io import BytesIO

    from test_seals import DAY, backdate, built_on, seal_cli

    ca, signer, chain, until = _short_lived_pki(tmp_path / "pki", 10)
    config = make_config(signing__certificate=str(chain), signing__key=str(signer.key_path),
                         signing__timestamp_url=tsa.url)
    with built_on():
        (entry,) = archive_samples(config, count=1)
    backdate(config)
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    untimed = Signer(SigningIdentity(signer.key, signer.cert, (ca.cert,))).sign_pdf(_minimal_pdf("B-B"))
    assert dt.datetime.now(dt.timezone.utc) < until, "signed after the certificate expired: raise its lifetime"
    time.sleep(max(0.0, (until - dt.datetime.now(dt.timezone.utc)).total_seconds()) + 1.5)

    key, anchors = str(keys["legal.key.pem"]), ["--ca", str(ca.cert_path), "--ca", str(tsa.ca_pem)]
    assert run_cli(config, tmp_path, "verify", "--all", "--key", key, *anchors) == 0
    assert run_cli(config, tmp_path, "retrieve", entry["room"], "--key", key, "--out", str(tmp_path / "o"),
                   "--reason", "case 5", *anchors) == 0
    report = json.loads(next((tmp_path / "o").glob("*/verification.json")).read_text())
    chained = {c["check"]: c for c in report["checks"] if CHAINS in c["check"]}
    assert set(chained) == {f"pdf: {CHAINS}", f"record: {CHAINS}"}
    assert all(c["ok"] and "not at today's date" in c["detail"] for c in chained.values()), chained
    assert "the time its RFC 3161 timestamp states" in chained[f"pdf: {CHAINS}"]["detail"]
    assert "the time its signer states" in chained[f"record: {CHAINS}"]["detail"]

    def checked(pdf: bytes):
        sig = PdfFileReader(BytesIO(pdf)).embedded_signatures[0]
        status = validate_pdf_signature(sig, validation_context([ca.cert]))
        return chain_check("pdf", status, [], [ca.cert], lambda at: validate_pdf_signature(sig, at))

    assert checked(untimed).ok and "the time its signer states" in checked(untimed).detail
    expired = make(tmp_path / "pki", "Expired signer", usages=("digital_signature", "content_commitment"),
                   issuer=ca, not_before=ago(days=10), not_after=ago(days=1))
    late = Signer(SigningIdentity(expired.key, expired.cert, (ca.cert,))).sign_pdf(_minimal_pdf("late"))
    assert not checked(late).ok  # it states a time at which its certificate had expired


def test_verification_json_times_are_iso_whatever_the_server_returned(archived, keys, tmp_path) -> None:
    """nx-27017 returns a date set with $set as text ("2026-11-26 18:07:26.009000"): verification.json gave
    that text for versions[].archived_at and entry.archived_at, not ISO 8601 as for the others."""
    config, entries = archived
    room = entries[0]["room"]
    at = index(config).find_one({"room": room})["archived_at"].replace(tzinfo=None)
    index(config).update_many({"room": room}, {"$set": {"archived_at": at.isoformat(" ", "microseconds")}})
    assert run_cli(config, tmp_path, "retrieve", room, "--key", str(keys["legal.key.pem"]), "--out",
                   str(tmp_path / "o"), "--reason", "case 7") == 0
    report = json.loads(next((tmp_path / "o").glob("*/verification.json")).read_text())
    iso = at.isoformat() + "+00:00"
    assert report["entry"]["archived_at"] == iso and report["versions"][0]["archived_at"] == iso, report


def _seed_file(tmp_path: Path) -> Path:
    from bson import json_util

    path = tmp_path / "chat.json"
    path.write_text(json_util.dumps(make_chat(random.Random(5), messages=2)[0]))
    return path


@pytest.mark.parametrize("command", ["retrieve", "bundle", "export", "render"])
def test_plaintext_is_never_written_into_a_local_store(archived, keys, tmp_path, capsys, command) -> None:
    """Review "court" C22: `retrieve --out` (and export --out, bundles) into a folder inside the file:// store wrote
    decrypted transcripts among the encrypted objects (operators and backups read them), and the next verify
    failed on them. Refused, exit 2, naming storage.url, before anything is fetched."""
    config, entries = archived
    store = Path(config["storage.url"][len("file://"):])
    room, inside = entries[0]["room"], store / "case-42"
    argv = {"retrieve": ["retrieve", room, "--key", str(keys["legal.key.pem"]), "--out", str(inside), "--reason", "r"],
            "bundle": ["retrieve", "--bundle", str(inside / "b.zip"), "--key", str(keys["legal.key.pem"]),
                       "--reason", "r", room],
            "export": ["export", room, "--out", str(inside)],
            "render": ["render", str(_seed_file(tmp_path)), "--out", str(inside)]}[command]
    toml = write_toml(tmp_path / "cli.toml", {k: config[k] for k in (*CLI_KEYS, "signing.key")})  # render signs
    assert main(["--config", str(toml), *argv]) == 2
    err = capsys.readouterr().err
    assert f"inside the archive store (storage.url {config['storage.url']})" in err, err
    assert not inside.exists()
