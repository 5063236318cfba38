"""Seals: each day's entries under a signed, timestamped Merkle root; tampering after sealing is named.

The samples are archived now and then dated two days back in the index (as if
archived then), because only a day that has ended can be sealed.
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from archiver import seals
from archiver.cli import main
from archiver.integrity import verify_archive
from archiver.mongo import connect
from archiver.names import safe_name
from conftest import require_tool, write_toml
from retrieval_helpers import archive_samples, index, overwrite_stored, stored_path

DAY = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).date()
SEAL_KEYS = ("mongodb.uri", "index.database", "storage.url", "encryption.recipients", "signing.certificate",
             "signing.timestamp_max_skew_seconds",
             "signing.key", "signing.timestamp_url", "storage.object_lock_mode")


def seal_cli(config, tmp_path: Path, *argv: str) -> int:
    toml = write_toml(tmp_path / "seal.toml", {k: config[k] for k in SEAL_KEYS})
    return main(["--config", str(toml), *argv])


@contextmanager
def built_on(day: dt.date = DAY) -> Iterator[None]:
    """Passes in this block date what they build DAY 09:00, so that `backdate` (10:00) keeps each entry's
    archived_at after its record's generated_at, as verification with a key requires."""
    from archiver import pipeline
    real = pipeline.now
    pipeline.now = lambda: dt.datetime.combine(day, dt.time(9), dt.timezone.utc)
    try:
        yield
    finally:
        pipeline.now = real


def backdate(config, rooms: list[str] | None = None, day: dt.date = DAY) -> None:
    """Date the entries (of ROOMS) as archived on DAY, keeping their order within the day."""
    entries = index(config)
    for n, entry in enumerate(entries.find({} if rooms is None else {"room": {"$in": rooms}}).sort("room", 1)):
        when = dt.datetime.combine(day, dt.time(10, n), dt.timezone.utc)
        entries.update_one({"_id": entry["_id"]}, {"$set": {"archived_at": when}})


def seal_records(config) -> list[dict[str, Any]]:
    db = connect(config["mongodb.uri"])[config["index.database"]]
    return list(db[config["index.seals"]].find({}, {"_id": 0}).sort([("day", 1), ("seq", 1)]))


def sealed_rooms(config, day: dt.date = DAY) -> list[str]:
    """The rooms the latest seal of DAY covers, in its leaves' order, read from the stored seal document."""
    record = [r for r in seal_records(config) if r["day"] == day.isoformat() and "pending" not in r][-1]
    document = json.loads(stored_path(config, record["objects"]["document"]["key"]).read_bytes())
    assert document["count"] == record["count"] == len(document["leaves"])
    return [room for room, _, _, _ in document["leaves"]]


def audit_collection(config):
    return connect(config["mongodb.uri"])[config["index.database"]][config["index.audit"]]


def seal_four(make_config, tsa, tmp_path, audited: bool = False):
    """Four chats archived on DAY (with AUDITED, a few audited actions too), and DAY sealed with a timestamp."""
    config = make_config(signing__timestamp_url=tsa.url)
    with built_on():
        archive_samples(config, count=4)
    backdate(config)
    if audited:
        assert seal_cli(config, tmp_path, "verify", "--all") == 0  # leaves something in the audit log
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    return config


@pytest.fixture
def sealed(make_config, tsa, tmp_path):
    """Four chats archived on DAY, a few audited actions, and DAY sealed with a timestamp."""
    return seal_four(make_config, tsa, tmp_path, audited=True)


def _problems(config) -> list[str]:
    report = verify_archive(config, None)
    return [str(p) for p in report.problems]


def test_a_sealed_day_verifies_and_its_seal_is_stored_signed_and_timestamped(sealed, keys, tsa, tmp_path) -> None:
    (record,) = seal_records(sealed)
    assert record["day"] == DAY.isoformat() and record["seq"] == 1 and record["count"] == 4
    assert record["audit_head"]["seq"] >= 1 and record["timestamped_at"]
    report = verify_archive(sealed, None)
    assert report.ok, report.problems
    assert report.seals == 1 and report.listed == 12 + 3  # the seal's three objects are explained too

    document, signature, token = (stored_path(sealed, record["objects"][n]["key"])
                                  for n in ("document", "signature", "timestamp"))
    assert json.loads(document.read_bytes())["root"] == record["root"]
    cms = subprocess.run([require_tool("openssl"), "cms", "-verify", "-binary", "-inform", "DER", "-in",
                          str(signature), "-content", str(document), "-CAfile", str(keys["ca.crt.pem"]),
                          "-out", "/dev/null"], capture_output=True, text=True)
    assert cms.returncode == 0 and "Verification successful" in cms.stderr, cms.stderr
    ts = subprocess.run([require_tool("openssl"), "ts", "-verify", "-data", str(signature), "-in", str(token),
                         "-token_in", "-CAfile", str(tsa.ca_pem)], capture_output=True, text=True)
    assert ts.returncode == 0 and "Verification: OK" in ts.stdout, ts.stderr
    # and the token is not for just anything: the document itself is not what it stamps
    other = subprocess.run(["openssl", "ts", "-verify", "-data", str(document), "-in", str(token), "-token_in",
                            "-CAfile", str(tsa.ca_pem)], capture_output=True, text=True)
    assert other.returncode != 0


def test_sealing_again_is_idempotent_and_an_empty_day_is_sealed_too(sealed, tmp_path, capsys) -> None:
    day = DAY.isoformat()
    assert seal_cli(sealed, tmp_path, "seal", "--from", day, "--to", day) == 0
    assert "unchanged (seal 1" in capsys.readouterr().out and len(seal_records(sealed)) == 1
    empty = (DAY - dt.timedelta(days=1)).isoformat()
    assert seal_cli(sealed, tmp_path, "seal", "--from", empty, "--to", empty, "--json") == 0
    line = json.loads(capsys.readouterr().out)
    assert line["action"] == "sealed" and line["seal"]["count"] == 0
    assert line["seal"]["root"] == hashlib.sha256(b"").hexdigest()  # RFC 6962: the empty tree
    assert verify_archive(sealed, None).ok


def test_an_entry_slipped_into_a_sealed_empty_day_is_named(make_config, tsa, tmp_path, capsys) -> None:
    """docs/seals.md: an empty day is sealed too (count 0), so nothing can be slipped into it later unnoticed."""
    config = make_config(signing__timestamp_url=tsa.url)
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    assert [(r["day"], r["count"]) for r in seal_records(config)] == [(DAY.isoformat(), 0)]
    with built_on():
        (entry,) = archive_samples(config, count=1)
    backdate(config, [entry["room"]])  # dated inside the sealed, empty day
    named = f"{entry['room']} v1: its archived entry is dated {DAY} but not covered by seal 1"
    assert any(p.startswith(named) for p in _problems(config)), _problems(config)
    capsys.readouterr()
    assert seal_cli(config, tmp_path, "verify", "--all") == 3
    assert f"PROBLEM {named}" in capsys.readouterr().out
    assert seal_cli(config, tmp_path, "verify", entry["room"]) == 3
    assert f"PROBLEM {named}" in capsys.readouterr().out


def test_today_cannot_be_sealed_yet(make_config, tmp_path, capsys) -> None:
    config = make_config()
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert seal_cli(config, tmp_path, "seal", "--from", today, "--to", today) == 2
    assert "has not ended yet" in capsys.readouterr().err and seal_records(config) == []


def test_an_entry_removed_with_its_objects_from_a_sealed_day_is_named(sealed) -> None:
    victim = index(sealed).find_one({}, sort=[("room", 1)])
    for obj in victim["objects"].values():  # the attacker removes the objects too: the listing cannot see it
        path = stored_path(sealed, obj["key"])
        path.unlink()
        path.with_name(path.name + ".meta.json").unlink(missing_ok=True)
    index(sealed).delete_one({"_id": victim["_id"]})
    problems = _problems(sealed)
    assert f"{victim['room']} v1: its archived entry was removed from the index after {DAY} was sealed (seal 1)" \
        in problems


def test_an_edited_index_entry_is_named(sealed, tmp_path, capsys) -> None:
    victim = index(sealed).find_one({}, sort=[("room", 1)])
    index(sealed).update_one({"_id": victim["_id"]}, {"$set": {"agents": ["someone-else"]}})
    problems = _problems(sealed)
    assert any(p.startswith(f"{victim['room']} v1: its archived index entry was changed after") for p in problems)
    assert seal_cli(sealed, tmp_path, "verify", "--all") == 3
    assert victim["room"] in capsys.readouterr().out
    assert seal_cli(sealed, tmp_path, "verify", victim["room"]) == 3  # a room's check covers its day's seal
    assert "1 seal(s) recomputed" in capsys.readouterr().out
    # sealing the day again refuses to paper over it
    assert seal_cli(sealed, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 3
    assert "refused" in capsys.readouterr().out and len(seal_records(sealed)) == 1


def test_an_altered_seal_object_and_an_edited_seal_record_are_named(sealed) -> None:
    (record,) = seal_records(sealed)
    key = record["objects"]["document"]["key"]
    overwrite_stored(sealed, key, stored_path(sealed, key).read_bytes().replace(b'"count":4', b'"count":3'))
    assert any(p.startswith(f"seal {DAY}#1: document {key} was altered in the store") for p in _problems(sealed))


def test_an_edited_seal_record_is_named(sealed) -> None:
    db = connect(sealed["mongodb.uri"])[sealed["index.database"]]
    db[sealed["index.seals"]].update_one({}, {"$set": {"root": "00" * 32}})
    assert f"seal {DAY}#1: the index copy differs from the stored seal in root" in _problems(sealed)


def test_audit_entries_removed_after_sealing_are_named(sealed, tmp_path, capsys) -> None:
    (record,) = seal_records(sealed)
    head = record["audit_head"]["seq"]
    assert seal_cli(sealed, tmp_path, "verify", "--all") == 0  # one more entry after the head
    # Removing the newest entries leaves a consistent chain: `audit verify` tells by the sealed head.
    audit_collection(sealed).delete_many({"seq": {"$gte": head}})
    assert seal_cli(sealed, tmp_path, "audit", "verify") == 3
    assert f"BROKEN audit entry {head}: missing, though seal {DAY}#1 recorded it as the head: entries from " \
           f"{head} on were removed" in capsys.readouterr().out
    assert f"seal {DAY}#1: audit log entry {head}, the head when sealed, was removed" in _problems(sealed)


def test_an_edited_audit_entry_is_named(sealed) -> None:
    audit_collection(sealed).update_one({"seq": 1}, {"$set": {"reason": "nothing to see"}})
    assert "audit log: its chain is broken (see `archiver audit verify`): the sealed heads cannot vouch for it" \
        in _problems(sealed)


def test_a_late_entry_gets_a_new_seal_that_extends_the_first(sealed, make_config, tmp_path, capsys) -> None:
    later = archive_samples(sealed, count=1, rng_seed=99)  # one more chat, archived now
    (newcomer,) = [e for e in later if e.get("archived_at").date() != DAY]
    backdate(sealed, [newcomer["room"]])  # a stalled writer dates it within the sealed day
    assert f"{newcomer['room']} v1: its archived entry is dated {DAY} but not covered by seal 1 " \
           "(recorded after sealing: `archiver seal` seals it; or planted)" in _problems(sealed)
    assert seal_cli(sealed, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    first, second = seal_records(sealed)
    assert second["seq"] == 2 and second["count"] == 5 and second["previous"]["root"] == first["root"]
    assert second["previous"]["document_sha256"] == first["objects"]["document"]["sha256"]
    assert verify_archive(sealed, None).ok  # both seals recompute, the first one unchanged


def test_an_inclusion_proof_in_verification_json_recomputes_without_our_code(sealed, keys, tmp_path) -> None:
    entry = index(sealed).find_one({}, sort=[("room", 1)])
    out = tmp_path / "case"
    assert seal_cli(sealed, tmp_path, "retrieve", entry["room"], "--key", str(keys["legal.key.pem"]), "--out",
                    str(out), "--reason", "case 7") == 0
    report = json.loads((out / f"{safe_name(entry['room'])}-v1" / "verification.json").read_text())
    proof = report["inclusion_proof"]
    assert proof["in_seal"] and proof["matches_index"]
    assert any(c["check"].startswith("sealed: the entry is leaf") and c["ok"] for c in report["checks"])

    # The leaf, from the index entry, as docs/seals.md spells it
    def iso(value: dt.datetime | None) -> str | None:
        return None if value is None else value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
            f"{value.microsecond // 1000:03d}Z"
    fields = {"format": "archiver-seal-leaf/2", "room": entry["room"], "version": entry["version"],
              "status": "archived", "superseded_objects": sorted(entry["superseded_objects"]),
              "objects": {n: {"key": o["key"], "size": o["size"], "sha256": o["sha256"]}
                          for n, o in entry["objects"].items()}}
    for name in ("archived_at", "started_at", "ended_at"):  # (a /2 leaf tags a date: text cannot pass for one)
        fields[name] = {"$date": iso(entry[name])}
    for name in ("kind", "ctlive_type", "channel", "service", "agents", "customers", "message_count",
                 "source_sha256", "signing_certificate_sha256", "opened_by", "handled_by", "present"):
        fields[name] = entry.get(name)
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert text == proof["leaf"] and proof["leaf_format"] == "archiver-seal-leaf/2"

    # RFC 9162 section 2.1.3.2, from the leaf to the root
    digest = hashlib.sha256(b"\x00" + text.encode("utf-8")).digest()
    fn, sn = proof["index"], proof["tree_size"] - 1
    for sibling in map(bytes.fromhex, proof["audit_path"]):
        if fn % 2 == 1 or fn == sn:
            digest = hashlib.sha256(b"\x01" + sibling + digest).digest()
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            digest = hashlib.sha256(b"\x01" + digest + sibling).digest()
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0
    # ...equals the root in the signed seal document in the store
    document = json.loads(stored_path(sealed, proof["seal_objects"]["document"]["key"]).read_bytes())
    assert digest.hex() == document["root"] == proof["seal"]["root"]
    assert not seals.proof_check({**proof, "leaf": text.replace(entry["room"], "other")})


def test_retrieval_of_an_entry_changed_since_sealing_fails(sealed, keys, tmp_path, capsys) -> None:
    entry = index(sealed).find_one({}, sort=[("room", 1)])
    index(sealed).update_one({"_id": entry["_id"]}, {"$set": {"customers": ["someone-else"]}})
    assert seal_cli(sealed, tmp_path, "retrieve", entry["room"], "--key", str(keys["legal.key.pem"]), "--out",
                    str(tmp_path / "case"), "--reason", "case 7") == 3
    assert "changed since it was sealed" in capsys.readouterr().err
    assert not (tmp_path / "case").exists() or not any((tmp_path / "case").iterdir())


def test_a_seal_without_a_timestamp_authority_is_signed_but_not_timestamped(make_config, tmp_path) -> None:
    config = make_config()
    archive_samples(config, count=1)
    backdate(config)
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    (record,) = seal_records(config)
    assert record["timestamped_at"] is None and "timestamp" not in record["objects"]
    assert verify_archive(config, None).ok


def test_sealing_fails_cleanly_when_the_authority_is_down(make_config, tsa, tmp_path, capsys) -> None:
    config = make_config()
    archive_samples(config, count=1)
    backdate(config)
    config = config.with_overrides(signing__timestamp_url=tsa.at("/garbage"))
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 1
    assert "unusable answer" in capsys.readouterr().out
    assert seal_records(config) == [] and not (stored_path(config, seals.PREFIX)).exists()


def test_a_tombstone_is_sealed_on_its_day_and_keeps_its_archive_leaf() -> None:
    archived = {"room": "R", "version": 1, "status": "archived", "objects": {"pdf": {"key": "R/v1/p", "size": 3,
                "sha256": "ab"}}, "archived_at": dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc),
                "superseded_objects": []}
    original = seals.leaf_hash(archived)
    tombstone = {"room": "R", "version": 1, "status": "deleted", "objects": archived["objects"],
                 "archived_at": archived["archived_at"], "archived_leaf_sha256": original.hex(),
                 "deleted_at": dt.datetime(2036, 1, 2, 3, tzinfo=dt.timezone.utc), "deletion_rule": "10 years"}
    assert seals.leaf_hash(tombstone, "archived") == original  # the 2026 seal still recomputes
    assert seals.day_of(tombstone, "archived") == "2026-01-01" and seals.day_of(tombstone, "deleted") == "2036-01-02"
    body = json.loads(seals.leaf(tombstone, "deleted"))
    assert body["status"] == "deleted" and body["deletion_rule"] == "10 years"
    assert body["deleted_at"] == "2036-01-02T03:00:00.000Z" and body["archived_leaf_sha256"] == original.hex()
    assert seals.day_of(archived, "deleted") is None


def test_the_root_recomputes_from_the_document_as_docs_seals_md_shows(sealed, tsa) -> None:
    (record,) = seal_records(sealed)
    doc = json.loads(stored_path(sealed, record["objects"]["document"]["key"]).read_bytes())

    def mth(h):  # copied from docs/seals.md
        if not h:
            return hashlib.sha256(b"").digest()
        if len(h) == 1:
            return h[0]
        k = 1 << ((len(h) - 1).bit_length() - 1)
        return hashlib.sha256(b"\x01" + mth(h[:k]) + mth(h[k:])).digest()
    assert mth([bytes.fromhex(leaf[3]) for leaf in doc["leaves"]]).hex() == doc["root"]
    assert [leaf[0] for leaf in doc["leaves"]] == sorted(e["room"] for e in index(sealed).find({}))
    shown = subprocess.run(["openssl", "ts", "-reply", "-in", str(stored_path(sealed, record["objects"]["timestamp"]
                                                                             ["key"])), "-token_in", "-text"],
                           capture_output=True, text=True, check=True).stdout
    assert "Time stamp:" in shown and "Test Timestamp Authority" in shown


def test_the_serve_job_seals_the_last_days_and_reports_a_refusal(make_config, tsa) -> None:
    import threading

    from archiver.jobs import Service

    config = make_config(signing__timestamp_url=tsa.url, schedule__seal_lookback_days=3)
    archive_samples(config, count=2)
    backdate(config)
    service = Service(config, threading.Event())
    service.seal()
    assert service.seal_error == "" and service.healthy()
    days = [r["day"] for r in seal_records(config)]
    assert len(days) == 3 and DAY.isoformat() in days  # the three days ended before today
    assert [r["count"] for r in seal_records(config) if r["day"] == DAY.isoformat()] == [2]
    service.seal()  # idempotent
    assert len(seal_records(config)) == 3

    index(config).update_one({}, {"$set": {"channel": "edited"}})
    service.seal()
    assert "refused" in service.seal_error and not service.healthy()
    assert any(line.startswith("seal error:") for line in service.health_notes())


def _replace_seal_object(config, part: str, data: bytes, **recorded: Any) -> None:
    """An attacker with write access to the store and the index: new bytes, and the index made to match."""
    db = connect(config["mongodb.uri"])[config["index.database"]]
    (record,) = seal_records(config)
    overwrite_stored(config, record["objects"][part]["key"], data)
    db[config["index.seals"]].update_one({}, {"$set": {
        f"objects.{part}.sha256": hashlib.sha256(data).hexdigest(), f"objects.{part}.size": len(data), **recorded}})


def test_a_forged_seal_document_fails_its_signature(sealed) -> None:
    (record,) = seal_records(sealed)
    document = json.loads(stored_path(sealed, record["objects"]["document"]["key"]).read_bytes())
    dropped = document["leaves"][0][0]
    document["leaves"], document["count"] = document["leaves"][1:], 3  # drop a leaf, recompute the root
    document["root"] = seals.merkle.root(bytes.fromhex(leaf[3]) for leaf in document["leaves"])[0].hex()
    _replace_seal_object(sealed, "document", seals.canonical(document), count=3, root=document["root"])
    problems = _problems(sealed)
    assert any(p.startswith(f"seal {DAY}#1: its signature does not verify over the stored document")
               for p in problems)
    assert any(p.startswith(f"{dropped} v1: its archived entry is dated") for p in problems)


def test_a_timestamp_token_for_something_else_is_named(sealed, tsa) -> None:
    from archiver import timestamps

    other = timestamps.timestamp(timestamps.timestamper(tsa.url, 300), b"not the seal's signature")
    _replace_seal_object(sealed, "timestamp", other)
    assert f"seal {DAY}#1: its timestamp token does not verify over its signature" in _problems(sealed)


def test_seals_in_s3_are_under_object_lock_and_explained(make_config, moto_endpoint, bucket, tsa) -> None:
    import boto3

    config = make_config(storage__url=f"s3://{bucket}/archive", storage__endpoint_url=moto_endpoint,
                         signing__timestamp_url=tsa.url)
    archive_samples(config, count=2)
    backdate(config)
    (outcome,) = seals.seal_days(config, [DAY.isoformat()], seals.Actor("test", "host"))
    assert outcome.action == "sealed"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    for obj in outcome.seal["objects"].values():
        head = s3.head_object(Bucket=bucket, Key="archive/" + obj["key"], VersionId=obj["version_id"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3600)
    report = verify_archive(config, None)
    assert report.ok and report.seals == 1 and report.listed == 6 + 3, report.problems
    # a seal object nobody recorded (a seal record deleted from the index) is named by the listing
    connect(config["mongodb.uri"])[config["index.database"]][config["index.seals"]].delete_many({})
    unexplained = [p.problem for p in verify_archive(config, None).problems]
    assert sum("is not explained by the index" in p and seals.PREFIX in p for p in unexplained) == 3


def test_seal_without_dates_seals_the_lookback_days_and_dates_come_in_pairs(make_config, tmp_path, capsys) -> None:
    config = make_config()
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat()) == 2
    assert "give both --from and --to" in capsys.readouterr().err
    assert seal_cli(config, tmp_path, "seal", "--from", "2026-02-30", "--to", "2026-03-01") == 2
    assert "--from '2026-02-30': not a date" in capsys.readouterr().err
    assert seal_cli(config, tmp_path, "seal") == 0
    days = [r["day"] for r in seal_records(config)]
    assert len(days) == config["schedule.seal_lookback_days"] == 7 and all(r["count"] == 0
                                                                              for r in seal_records(config))
    newest = dt.date.fromisoformat(max(days))
    assert newest < dt.datetime.now(dt.timezone.utc).date()
    assert [e["action"] for e in audit_collection(config).find({}, {"action": 1})] == ["seal"] * 7


def test_a_bundle_gets_the_seal_files_a_proof_leads_to_and_openssl_checks_them(sealed, keys, tsa, tmp_path) -> None:
    entry = index(sealed).find_one({}, sort=[("room", 1)])
    proof = seals.inclusion_proof(sealed, entry)
    assert seals.proof_check(proof)
    files = seals.seal_files(sealed, proof)
    assert sorted(files) == ["seal.json", "seal.json.p7s", "seal.json.p7s.tsr"]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert json.loads(files["seal.json"])["root"] == proof["seal"]["root"]
    cms = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "seal.json.p7s"),
                          "-content", str(tmp_path / "seal.json"), "-CAfile", str(keys["ca.crt.pem"]), "-out",
                          "/dev/null"], capture_output=True, text=True)
    ts = subprocess.run(["openssl", "ts", "-verify", "-data", str(tmp_path / "seal.json.p7s"), "-in",
                         str(tmp_path / "seal.json.p7s.tsr"), "-token_in", "-CAfile", str(tsa.ca_pem)],
                        capture_output=True, text=True)
    assert cms.returncode == 0 and ts.returncode == 0, (cms.stderr, ts.stderr)
    # an entry of a day without a seal has no proof
    unsealed = {**entry, "archived_at": dt.datetime.now(dt.timezone.utc)}
    assert seals.inclusion_proof(sealed, unsealed) is None


def test_a_seal_re_signed_by_another_certificate_is_named(sealed, tmp_path) -> None:
    """An attacker with their own key re-signs the seal: the signature verifies, the signer is not the named one."""
    from archiver.signing import Signer, SigningIdentity
    from certfactory import make

    other = make(tmp_path, "Mallory", usages=("digital_signature", "content_commitment"), ec_key=True)
    (record,) = seal_records(sealed)
    body = stored_path(sealed, record["objects"]["document"]["key"]).read_bytes()
    _replace_seal_object(sealed, "signature", Signer(SigningIdentity(other.key, other.cert, ())).sign_detached(body))
    problems = _problems(sealed)
    assert f"seal {DAY}#1: it is signed by another certificate than the one it names (signer_sha256)" in problems
    assert f"seal {DAY}#1: its timestamp token does not verify over its signature" in problems


def test_a_seal_the_authority_dates_before_its_day_ended_is_refused(make_config, tsa, tmp_path, capsys) -> None:
    """Our clock ran ahead (the authority, tolerated up to 3 days off, stamps 2 days back): not sealed."""
    config = make_config()
    archive_samples(config, count=1)
    backdate(config)
    config = config.with_overrides(signing__timestamp_url=tsa.at("/skewed"),
                                   signing__timestamp_max_skew_seconds=3 * 86400.0)
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 1
    assert "before the day ended; check this machine's clock" in capsys.readouterr().out
    assert seal_records(config) == []


@pytest.mark.parametrize("moved_to", [dt.datetime(9999, 12, 31, 12, tzinfo=dt.timezone.utc),
                                      dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(8), dt.timezone.utc)],
                         ids=["to year 9999", "to the next day, not sealed"])
def test_an_entry_edited_and_moved_out_of_its_sealed_day_is_still_caught(sealed, keys, tmp_path, capsys,
                                                                          moved_to) -> None:
    """archived_at dates the seal that covers an entry; an entry edited and moved to a day never (or not yet)
    sealed passed retrieval and `verify ROOM` as "not sealed yet"."""
    entry = index(sealed).find_one({}, sort=[("room", 1)])
    index(sealed).update_one({"_id": entry["_id"]}, {"$set": {"customers": ["someone-else"], "archived_at": moved_to}})
    key = str(keys["legal.key.pem"])
    assert seal_cli(sealed, tmp_path, "retrieve", entry["room"], "--key", key, "--out", str(tmp_path / "case"),
                    "--reason", "case 7") == 3
    assert not (tmp_path / "case").exists() or not any((tmp_path / "case").iterdir())
    assert seal_cli(sealed, tmp_path, "verify", entry["room"], "--key", key, "--workers", "1") == 3
    assert seal_cli(sealed, tmp_path, "verify", entry["room"]) == 3  # without a key too: its day's seal is read


def test_with_trust_anchors_a_seals_signer_must_chain_to_one(sealed, keys, tmp_path) -> None:
    """Without an anchor a seal signed by anyone's key, naming that key, would pass (as a forger who rewrites
    the whole seal arranges); with one its signer must chain to it."""
    from cryptography import x509
    from certfactory import make
    ours = x509.load_pem_x509_certificates(keys["ca.crt.pem"].read_bytes())
    assert verify_archive(sealed, None, trust=ours).ok
    stranger = x509.load_pem_x509_certificates(make(tmp_path, "Another CA").cert_path.read_bytes())
    problems = [str(p) for p in verify_archive(sealed, None, trust=stranger).problems]
    assert any(p.startswith(f"seal {DAY}#1: its signer does not chain to the trust anchors") for p in problems), problems


def test_a_damaged_seal_of_the_day_before_does_not_fail_the_retrieval_of_a_later_days_chat(sealed, keys, tmp_path) -> None:
    """The day before is searched too (an entry moved a day on); its seal, damaged, is for `verify` to name:
    it failed the retrieval of every chat of the next day, blaming their own day."""
    import random
    from archiver.pipeline import Archiver
    from archiver.samples import make_chat
    from retrieval_helpers import overwrite_stored
    from test_pipeline import recent_ms, seed
    before = {e["room"] for e in index(sealed).find({})}
    seed(sealed, [make_chat(random.Random(99), messages=5, start_ms=recent_ms(30))])
    next_day = DAY + dt.timedelta(days=1)
    with built_on(next_day):
        assert Archiver(sealed).run_pass().archived == 1
    (room,) = [e["room"] for e in index(sealed).find({}) if e["room"] not in before]
    backdate(sealed, [room], next_day)
    (record,) = seal_records(sealed)
    overwrite_stored(sealed, record["objects"]["document"]["key"], b'{"damaged": true}')
    seals._DOCUMENTS.clear()  # as a new process would read it
    assert seal_cli(sealed, tmp_path, "retrieve", room, "--key", str(keys["legal.key.pem"]), "--out",
                    str(tmp_path / "case"), "--reason", "case 7") == 0
    assert seal_cli(sealed, tmp_path, "verify", "--all") == 3  # the damaged seal is named there


def test_an_entry_moved_a_day_on_with_its_seal_spoiled_too_still_fails_retrieval(sealed, keys, tmp_path) -> None:
    """An index writer moves an entry to the next day (within a day of its record) and spoils the seal
    record of the day it was sealed on: reading that seal must fail the retrieval, not be skipped."""
    entry = index(sealed).find_one({}, sort=[("room", 1)])
    moved = dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(8), dt.timezone.utc)
    # (superseded_objects: sealed, and checked by nothing else: the keys of objects planted in the store)
    index(sealed).update_one({"_id": entry["_id"]}, {"$set": {"archived_at": moved},
                                                     "$push": {"superseded_objects": "planted/v1/x.p7m"}})
    db = connect(sealed["mongodb.uri"])[sealed["index.database"]]
    db[sealed["index.seals"]].update_many({"day": DAY.isoformat()}, {"$set": {"objects.document.sha256": "0" * 64}})
    seals._DOCUMENTS.clear()
    assert seal_cli(sealed, tmp_path, "retrieve", entry["room"], "--key", str(keys["legal.key.pem"]), "--out",
                    str(tmp_path / "case"), "--reason", "case 7") == 3
    assert not (tmp_path / "case").exists() or not any((tmp_path / "case").iterdir())


def _documented_seal_check() -> str:
    """docs/seals.md's openssl commands, as written (their trailing comments aside)."""
    docs = (Path(__file__).parents[1] / "docs/seals.md").read_text()
    block = docs.split("## Checking a seal with openssl\n\n```sh\n")[1].split("```")[0]
    return "\n".join(line.split("   #")[0].rstrip() for line in block.splitlines())


def _timestamp(tsa, signature: Path) -> bytes:
    """A genuine token of the test authority over SIGNATURE (what `openssl ts -query` asks for)."""
    import urllib.request

    query = subprocess.run(["openssl", "ts", "-query", "-data", str(signature), "-sha256", "-cert"],
                           capture_output=True, check=True).stdout
    request = urllib.request.Request(tsa.url, data=query, headers={"Content-Type": "application/timestamp-query"})
    with urllib.request.urlopen(request, timeout=30) as answer:  # 127.0.0.1, the fixture's own server
        reply = answer.read()
    reply_file = signature.with_name("reply.tsr")
    reply_file.write_bytes(reply)
    return subprocess.run(["openssl", "ts", "-reply", "-in", str(reply_file), "-token_out"], capture_output=True,
                          check=True).stdout


def test_docs_seals_md_commands_as_written_pass_and_pin_the_archivers_certificate(sealed, keys, tsa,
                                                                                  tmp_path) -> None:
    """The documented check runs as written (-attime from the token) on a genuine seal; a seal document
    signed by another certificate the same CA issued (an employee's), with a genuine token over that
    signature, passes the CA's check alone but not the documented commands."""
    import certfactory

    require_tool("openssl")
    check = _documented_seal_check()
    (record,) = seal_records(sealed)
    folder = tmp_path / "check"
    folder.mkdir()
    for name, file in (("document", "seal.json"), ("signature", "seal.json.p7s"), ("timestamp", "seal.json.p7s.tsr")):
        shutil.copy(stored_path(sealed, record["objects"][name]["key"]), folder / file)
    shutil.copy(tsa.ca_pem, folder / "tsa-ca.pem")
    shutil.copy(keys["ca.crt.pem"], folder / "signing-ca.pem")
    shutil.copy(keys["signing.crt.pem"], folder / "signing.crt.pem")
    ok = subprocess.run(["bash", "-ec", check], cwd=folder, capture_output=True, text=True)
    assert ok.returncode == 0 and "signed by the archiver's certificate" in ok.stdout, ok.stderr
    assert "Verification successful" in ok.stderr and "Verification: OK" in ok.stdout

    forged = tmp_path / "forged"
    forged.mkdir()
    ca = certfactory.make(forged, "Corp CA", usages=("key_cert_sign", "crl_sign"), ca=True, ec_key=True)
    ours = certfactory.make(forged, "Archiver", usages=("digital_signature", "content_commitment"), issuer=ca,
                            ec_key=True)
    employee = certfactory.make(forged, "Some employee", usages=("digital_signature",), issuer=ca, ec_key=True)
    shutil.copy(folder / "seal.json", forged / "seal.json")
    shutil.copy(tsa.ca_pem, forged / "tsa-ca.pem")
    shutil.copy(ca.cert_path, forged / "signing-ca.pem")
    shutil.copy(ours.cert_path, forged / "signing.crt.pem")
    unpinned = check.split("\n[")[0]  # without the last line: the CA's word alone
    for signer, pinned in ((employee, False), (ours, True)):
        subprocess.run(["openssl", "cms", "-sign", "-binary", "-in", "seal.json", "-signer", str(signer.cert_path),
                        "-inkey", str(signer.key_path), "-outform", "DER", "-out", "seal.json.p7s"], cwd=forged,
                       check=True, capture_output=True)
        (forged / "seal.json.p7s.tsr").write_bytes(_timestamp(tsa, forged / "seal.json.p7s"))
        checked = subprocess.run(["bash", "-ec", check], cwd=forged, capture_output=True, text=True)
        assert (checked.returncode == 0) == pinned, (signer.cert.subject, checked.stdout, checked.stderr)
        assert subprocess.run(["bash", "-ec", unpinned], cwd=forged, capture_output=True).returncode == 0


def test_seal_and_audit_log_problems_name_their_subject_not_a_fake_room(sealed, tmp_path, capsys) -> None:
    """A consumer of `verify --json` groups problems by room: a seal's or the audit log's problem has room null
    and says what it is about in `subject` (the text line too), and the audit entry of the verification lists
    real rooms only."""
    from retrieval_helpers import audit

    (record,) = seal_records(sealed)
    key = record["objects"]["document"]["key"]
    overwrite_stored(sealed, key, stored_path(sealed, key).read_bytes().replace(b'"count":4', b'"count":3'))
    audit_collection(sealed).update_one({"seq": 1}, {"$set": {"reason": "nothing to see"}})
    assert seal_cli(sealed, tmp_path, "verify", "--json") == 3
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert {(p["room"], p["version"], p["subject"], p["key"]) for p in problems} == {
        (None, None, f"seal {DAY}#1", None), (None, None, "audit log", None)}, problems
    assert any(p["problem"].startswith(f"document {key} was altered in the store") for p in problems), problems
    assert audit(sealed)[-1]["rooms"] == [] and audit(sealed)[-1]["outcome"] == "problems"
    assert seal_cli(sealed, tmp_path, "verify") == 3
    out = capsys.readouterr().out
    assert f"PROBLEM seal {DAY}#1: document {key} was altered in the store" in out
    assert "PROBLEM audit log: its chain is broken (see `archiver audit verify`)" in out, out


def test_a_rooms_seal_problem_keeps_its_room_and_has_no_subject(sealed) -> None:
    room = index(sealed).find_one({})["room"]
    index(sealed).update_one({"room": room}, {"$set": {"source_sha256": "00" * 32}})
    problems = [p for p in verify_archive(sealed, None).problems if "seal" in p.problem]
    assert problems and all(p.room == room and p.subject is None for p in problems), problems


@pytest.fixture(params=["mongo_uri", "nx_uri"])
def any_uri(request) -> str:
    """The in-process stand-in (or a real MongoDB), and the wire-protocol server."""
    return request.getfixturevalue(request.param)


def test_an_entry_whose_archived_at_is_stored_as_text_is_sealed_on_the_day_it_reads_as(make_config, any_uri, keys,
                                                                                      tmp_path) -> None:
    """nx-27017 returns a date written with $set as text ('2026-11-26 21:10:35.841000'), and a hand edit or another
    MongoDB-compatible server may store one so: verify reads such a time, but the seal's range over dates left
    the entry out (mongomock, MongoDB) and called its day complete, and retrieval and `verify ROOM` looked for
    no seal of it (any server). It is sealed on the day it reads as, in time order, and proven there."""
    config = make_config(mongodb__uri=any_uri)
    with built_on():
        first, second = archive_samples(config, count=2)
    backdate(config)
    index(config).update_one({"_id": second["_id"]}, {"$set": {"archived_at": f"{DAY} 10:01:00.250000"}})
    # 23:30 UTC on DAY, written with an offset: its text begins with the next day
    index(config).update_one({"_id": first["_id"]}, {"$set": {"archived_at": f"{DAY + dt.timedelta(days=1)}"
                                                                             "T01:30:00+02:00"}})
    assert all(isinstance(e["archived_at"], str) for e in index(config).find())
    (outcome,) = seals.seal_days(config, [DAY.isoformat()], seals.Actor("test", "host"))
    assert outcome.action == "sealed" and outcome.seal["count"] == 2, str(outcome)
    assert sealed_rooms(config) == [second["room"], first["room"]]  # by the time each reads as
    assert verify_archive(config, None).ok
    report = verify_archive(config, [first["room"]])
    assert report.ok and report.seals == 1, [str(p) for p in report.problems]
    out = tmp_path / "case"
    assert seal_cli(config, tmp_path, "retrieve", first["room"], "--key", str(keys["legal.key.pem"]), "--out",
                    str(out), "--reason", "case 7") == 0
    proof = json.loads((out / f"{safe_name(first['room'])}-v1" / "verification.json").read_text())["inclusion_proof"]
    assert proof is not None and proof["day"] == DAY.isoformat() and proof["index"] == 1, proof
    assert proof["in_seal"] and proof["matches_index"] and seals.proof_check(proof)
    # An archived_at that reads as no time gives the entry no day: verify names it, and its sealed day's seal
    index(config).update_one({"_id": first["_id"]}, {"$set": {"archived_at": "soon"}})
    problems = _problems(config)
    assert f"{first['room']} v1: failed: the entry's archived_at reads as a time (archived_at 'soon')" \
        in problems, problems
    assert any(p.startswith(f"{first['room']} v1: its archived entry was removed from the index after {DAY}")
               for p in problems), problems


def test_each_event_is_of_the_day_its_stored_time_reads_as_whatever_its_type(any_uri, db_names) -> None:
    """Dates and text alike (a tombstone's deleted_at too), at the day's bounds; text that reads as no time, or
    an archived entry's stray deleted_at, is no event of the day."""
    entries = connect(any_uri)[db_names["index.database"]]["entries_text"]
    at = dt.datetime.combine(DAY, dt.time(), dt.timezone.utc)
    entries.insert_many([{"room": room, "version": 1, "objects": {}, "superseded_objects": [], **fields}
                         for room, fields in [
        ("A", {"status": "deleted", "archived_at": at - dt.timedelta(hours=1), "deleted_at": f"{DAY} 08:00:00"}),
        ("B", {"status": "archived", "archived_at": f"{DAY}T23:59:59.999Z"}),
        ("C", {"status": "archived", "archived_at": f"{DAY + dt.timedelta(days=1)}T00:00:00Z"}),
        ("D", {"status": "archived", "archived_at": at}),
        ("E", {"status": "archived", "archived_at": "soon", "deleted_at": f"{DAY} 09:00:00"}),
        ("F", {"status": "archived", "archived_at": f"{DAY - dt.timedelta(days=1)}T23:59:59.999Z"})]])
    leaves = seals.current_leaves(entries, DAY.isoformat())
    assert [(leaf.room, leaf.status) for leaf in leaves] == [("D", "archived"), ("A", "deleted"), ("B", "archived")]
    assert json.loads(seals.leaf(entries.find_one({"room": "A"}), "deleted"))["deleted_at"] == f"{DAY} 08:00:00"
    assert [seals.day_of(entries.find_one({"room": r})) for r in "BCDEF"] == [
        DAY.isoformat(), (DAY + dt.timedelta(days=1)).isoformat(), DAY.isoformat(), None,
        (DAY - dt.timedelta(days=1)).isoformat()]
