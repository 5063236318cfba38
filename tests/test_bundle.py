"""archiver retrieve --bundle: a case bundle a court checks with openssl, pdfsig, certutil and sha256sum alone."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from archiver.cli import main
from archiver.bundle import DATES_MEANING
from archiver.names import safe_name
from conftest import require_tool, write_toml
from retrieval_helpers import (CLI_KEYS, archive_samples, audit, overwrite_stored, remove_stored, stored_path,
                               zipped_json, zipped_text)

SIGNING_KEYS = ("bundle.signing_certificate", "bundle.signing_key")  # the manifest's signer (not signing.key)


@pytest.fixture
def archived(make_config):
    config = make_config()
    return config, archive_samples(config, count=4)


def _bundle(config, tmp_path: Path, *argv: str, signed: bool = True) -> int:
    keys = CLI_KEYS + (SIGNING_KEYS if signed else ())
    toml = write_toml(tmp_path / "cli.toml", {k: config[k] for k in keys})
    return main(["--config", str(toml), "retrieve", *argv])


def _readme_commands(folder: Path) -> list[str]:
    """Each "$ " command of the README, its continuation lines (after a trailing backslash) joined as a shell would."""
    commands: list[str] = []
    continued = False
    for line in (folder / "README.txt").read_text().splitlines():
        if continued:
            commands[-1] += "\n" + line
        elif line.strip().startswith("$ "):
            commands.append(line.strip()[2:])
        else:
            continue
        continued = line.endswith("\\")
    return commands


def _run_readme(folder: Path, ca: Path, bundle_ca: Path | None = None) -> list[tuple[str, int, str]]:
    """Every command the README prints, run exactly as printed in the unzipped folder (CA.pem put next to it, and
    BUNDLE-CA.pem: BUNDLE_CA, by default the development keys' bundle signer CA beside CA when there is one)."""
    for tool in ("openssl", "pdfsig", "certutil", "sha256sum"):
        require_tool(tool)
    shutil.copy(ca, folder.parent / "CA.pem")  # next to the folder, as README.txt says: never inside it
    bundle_ca = bundle_ca or Path(ca).with_name("bundle-ca.crt.pem")
    if bundle_ca.exists():
        shutil.copy(bundle_ca, folder.parent / "BUNDLE-CA.pem")
    results = []
    for command in _readme_commands(folder):
        done = subprocess.run(["bash", "-c", command], cwd=folder, capture_output=True, text=True)
        # "every one must succeed": a step that names a failure fails (a script checks the exit status alone)
        assert "FAILED" not in done.stdout or done.returncode != 0, (command, done.stdout)
        results.append((command, done.returncode, done.stdout + done.stderr))
    return results


def _unzip(bundle: Path, to: Path) -> Path:
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(to)
    return to


def _passes(results: list[tuple[str, int, str]]) -> bool:
    return all(code == 0 and "FAILED" not in out for _, code, out in results)


def test_a_bundle_of_rooms_verifies_by_its_readme_alone_and_tampering_fails_it(archived, keys, tmp_path, capsys) -> None:
    config, entries = archived
    rooms = [entries[0]["room"], entries[2]["room"]]
    out = tmp_path / "case-42.zip"
    assert _bundle(config, tmp_path, *rooms, "--bundle", str(out), "--key", str(keys["legal.key.pem"]),
                   "--reason", "case 42", "--actor", "carol", "--ca", str(keys["ca.crt.pem"])) == 0
    folder = _unzip(out, tmp_path / "unzipped")
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    for room in rooms:
        base = f"rooms/{safe_name(room)}-v1/"
        assert {base + n for n in ("transcript.pdf", "record.json", "record.json.p7s", "signer.crt.pem",
                                   "certificates.pem", "verification.json")} <= set(names)
    assert {"README.txt", "SHA256SUMS", "SHA256SUMS.p7s", "manifest.json", "chain-of-custody.json",
            "bundle-signer.pem"} <= set(names)
    assert not any(entries[1]["room"] in n for n in names)
    custody = json.loads((folder / "chain-of-custody.json").read_text())
    assert custody["reason"] == "case 42" and custody["retrieved_by"]["on_behalf_of"] == "carol"
    assert [r["room"] for r in custody["rooms"]] == rooms and custody["selection"] == {"rooms": rooms}
    assert {"python", "pyHanko", "cryptography", "archiver"} <= set(custody["tools"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} == set(names) - {"manifest.json", "SHA256SUMS", "SHA256SUMS.p7s",
                                                                    "bundle-signer.pem"}
    report = json.loads((folder / f"rooms/{safe_name(rooms[0])}-v1/verification.json").read_text())
    assert report["ok"] and report["reason"] == "case 42" and all(c["ok"] for c in report["checks"])

    results = _run_readme(folder, keys["ca.crt.pem"])
    assert len(results) == 5 and _passes(results), results
    assert sum(out.count("OK rooms/") for _, _, out in results) == 2 * len(rooms)  # each PDF and record
    started, entry = [e for e in audit(config) if e["action"] == "retrieve"]
    assert started["outcome"] == "started" and started["rooms"] == entry["rooms"] == sorted(rooms)
    assert entry["outcome"] == "ok" and entry["rooms_total"] == len(rooms) and entry["reason"] == "case 42"
    sums = re.search(r"SHA256SUMS sha256 ([0-9a-f]{64})", entry["detail"]).group(1)
    assert sums in capsys.readouterr().out

    # Review "court" C20: a CA.pem inside the folder (a re-packed zip shipping the forger's CA) was exempted by
    # step 3 and read by the others; the reader's CA is ../CA.pem, and one inside is named.
    (folder / "CA.pem").write_bytes(Path(keys["ca.crt.pem"]).read_bytes())
    results = _run_readme(folder, keys["ca.crt.pem"])
    failed = [i for i, (_, code, out) in enumerate(results) if code or "FAILED" in out]
    assert failed == [2] and "FAILED not in SHA256SUMS: CA.pem" in results[2][2], results
    (folder / "CA.pem").unlink()

    # A byte changed in a transcript: sha256sum -c and pdfsig both fail, and name it.
    pdf = folder / f"rooms/{safe_name(rooms[1])}-v1/transcript.pdf"
    data = bytearray(pdf.read_bytes())
    data[len(data) // 3] ^= 0x01
    pdf.write_bytes(bytes(data))
    results = _run_readme(folder, keys["ca.crt.pem"])
    failed = [i for i, (_, code, out) in enumerate(results) if code or "FAILED" in out]
    assert failed == [1, 3] and "sha256sum" in results[1][0] and "pdfsig" in results[3][0], results
    assert any(f"FAILED rooms/{safe_name(rooms[1])}-v1/transcript.pdf" in out for _, _, out in results)

    # The manifest edited to match: its signature fails.
    sums_file = folder / "SHA256SUMS"
    sums_file.write_text(sums_file.read_text().replace(
        next(line for line in sums_file.read_text().splitlines() if line.endswith(str(pdf.relative_to(folder)))),
        f"{hashlib.sha256(pdf.read_bytes()).hexdigest()}  {pdf.relative_to(folder)}"))
    results = _run_readme(folder, keys["ca.crt.pem"])
    assert results[0][1] != 0 and "openssl cms -verify" in results[0][0]


def test_a_record_tampered_in_the_bundle_fails_openssl(archived, keys, tmp_path) -> None:
    config, entries = archived
    out = tmp_path / "b.zip"
    assert _bundle(config, tmp_path, entries[3]["room"], "--bundle", str(out), "--key", str(keys["legal.key.pem"]),
                   "--reason", "audit", "--no-progress") == 0
    folder = _unzip(out, tmp_path / "u")
    record = folder / f"rooms/{safe_name(entries[3]['room'])}-v1/record.json"
    record.write_bytes(record.read_bytes().replace(b'"version": 1', b'"version": 2', 1).replace(b'"version":1', b'"version":2', 1))
    results = _run_readme(folder, keys["ca.crt.pem"])
    failed = [i for i, (_, code, out) in enumerate(results) if code or "FAILED" in out]
    assert failed == [1, 4] and "sha256sum" in results[1][0] and "openssl cms -verify" in results[4][0], results


def test_a_bundle_from_search_filters_holds_exactly_the_matching_rooms(archived, keys, tmp_path) -> None:
    config, entries = archived
    service = entries[0]["service"]
    matching = sorted(e["room"] for e in entries if e["service"] == service)
    assert 0 < len(matching) < len(entries)
    out = tmp_path / "by-service.zip"
    assert _bundle(config, tmp_path, "--bundle", str(out), "--key", str(keys["legal.key.pem"]),
                   "--reason", "regulator request", "--service", service, "--from", "2000-01-01",
                   signed=False) == 0
    folder = _unzip(out, tmp_path / "u")
    custody = json.loads((folder / "chain-of-custody.json").read_text())
    assert sorted(r["room"] for r in custody["rooms"]) == matching
    assert custody["selection"]["filters"]["service"] == service and custody["manifest_signed_by"] is None
    # review "court" C19: the window is by end time, said where the selection is recorded and in README.txt
    assert custody["selection"]["dates"] == DATES_MEANING and DATES_MEANING in (folder / "README.txt").read_text()
    assert not (folder / "SHA256SUMS.p7s").exists()
    results = _run_readme(folder, keys["ca.crt.pem"])
    assert _passes(results) and results[0][0] == "sha256sum SHA256SUMS", results
    entry = audit(config)[-1]
    assert entry["outcome"] == "ok" and sorted(entry["rooms"]) == matching and entry["filters"]["service"] == service
    assert "NOT signed" in entry["detail"] and results[0][2].split()[0] in entry["detail"]


def _refused(config, tmp_path, out: Path, *argv: str) -> tuple[int, dict]:
    code = _bundle(config, tmp_path, *argv, "--bundle", str(out), "--no-progress")
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))  # nothing, not even a partial file
    return code, audit(config)[-1]


def test_wrong_key_unknown_room_no_reason_and_no_match_write_nothing_and_are_audited(archived, keys, tmp_path,
                                                                                     capsys) -> None:
    config, entries = archived
    room = entries[0]["room"]
    out = tmp_path / "x.zip"
    other = tmp_path / "other.key.pem"
    other.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    code, entry = _refused(config, tmp_path, out, room, "--key", str(other), "--reason", "r")
    assert code == 2 and entry["outcome"] == "failed" and "key" in entry["detail"]
    code, entry = _refused(config, tmp_path, out, room, "NO_SUCH_ROOM", "--key", str(keys["legal.key.pem"]),
                           "--reason", "r")
    assert code == 1 and entry["outcome"] == "failed" and "NO_SUCH_ROOM" in entry["detail"]
    code, entry = _refused(config, tmp_path, out, room, "--key", str(keys["legal.key.pem"]))
    assert code == 2 and entry["outcome"] == "refused" and "--reason" in entry["detail"]
    code, entry = _refused(config, tmp_path, out, "--agent", '{"$ne": null}', "--key", str(keys["legal.key.pem"]),
                           "--reason", "r")
    assert code == 1 and entry["outcome"] == "failed" and "no archived entry" in entry["detail"]
    assert [e["action"] for e in audit(config)] == ["retrieve"] * 4
    assert "NO_SUCH_ROOM" in capsys.readouterr().err


def test_a_room_that_fails_verification_means_no_bundle_and_names_the_room(archived, keys, tmp_path, capsys) -> None:
    config, entries = archived
    bad = entries[2]
    key = bad["objects"]["record"]["key"]
    data = bytearray(stored_path(config, key).read_bytes())
    data[-10] ^= 0x01
    overwrite_stored(config, key, bytes(data))
    out = tmp_path / "case.zip"
    code, entry = _refused(config, tmp_path, out, *[e["room"] for e in entries], "--key",
                           str(keys["legal.key.pem"]), "--reason", "case 7")
    assert code == 3 and entry["outcome"] == "failed" and bad["room"] in entry["detail"]
    assert f"{bad['room']} v1: failed: record" in capsys.readouterr().err


def test_past_100_failing_rooms_the_first_100_are_named_and_the_rest_counted(archived, keys, tmp_path,
                                                                              capsys) -> None:
    """docs/retrieval.md: every failing room is named, the first 100; the rest are counted (memory stays bounded)."""
    from retrieval_helpers import index

    config, entries = archived
    template = {k: v for k, v in entries[0].items() if k != "_id"}
    failing = [f"ROOM_FAILING_{n:03d}" for n in range(104)]  # copies whose PDF is not in the store: fail fast
    index(config).insert_many([{**template, "room": room, "objects": {
        **template["objects"], "pdf": {**template["objects"]["pdf"], "key": f"{room}/v1/nowhere.pdf.p7m"}}}
        for room in failing])
    out = tmp_path / "case.zip"
    code, entry = _refused(config, tmp_path, out, entries[0]["room"], *failing, "--key", str(keys["legal.key.pem"]),
                           "--reason", "case 7")
    err = capsys.readouterr().err
    assert code == 3 and entry["outcome"] == "failed"
    assert "104 room(s) failed verification, so no bundle was written (and 4 more):" in err, err[:400]
    named = [room for room in failing if f"{room} v1: " in err]
    assert named == failing[:100], (len(named), named[-3:])
    assert entries[0]["room"] not in err  # the intact room is not among them


def test_an_existing_file_is_not_replaced_and_rooms_and_filters_do_not_mix(archived, keys, tmp_path) -> None:
    config, entries = archived
    out = tmp_path / "there.zip"
    out.write_bytes(b"keep me")
    assert _bundle(config, tmp_path, entries[0]["room"], "--bundle", str(out), "--key", str(keys["legal.key.pem"]),
                   "--reason", "r") == 2
    assert out.read_bytes() == b"keep me" and audit(config)[-1]["outcome"] == "failed"
    assert _bundle(config, tmp_path, entries[0]["room"], "--bundle", str(tmp_path / "y.zip"), "--agent", "a",
                   "--key", str(keys["legal.key.pem"]), "--reason", "r") == 2
    assert not (tmp_path / "y.zip").exists()


def test_a_bundle_checked_in_worker_processes_holds_the_same_files(archived, keys, tmp_path) -> None:
    config, entries = archived
    rooms = [e["room"] for e in entries]
    hashes = {}
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}.zip"
        assert _bundle(config, tmp_path, *rooms, "--bundle", str(out), "--key", str(keys["legal.key.pem"]),
                       "--reason", "r", "--workers", workers, "--no-progress") == 0
        with zipfile.ZipFile(out) as zf:
            manifest = json.loads(zf.read("manifest.json"))
            reports = [json.loads(zf.read(f["path"])) for f in manifest["files"]
                       if f["path"].endswith("verification.json")]
        hashes[workers] = {f["path"]: f["sha256"] for f in manifest["files"]
                           if f["path"].startswith("rooms/") and not f["path"].endswith("verification.json")}
        assert [r["room"] for r in reports] == rooms and all(r["ok"] for r in reports)
        assert all(len(r["checks"]) >= 12 for r in reports)  # stored, decrypted, both signatures, the record
        folder = _unzip(out, tmp_path / f"u{workers}")
        assert _passes(_run_readme(folder, keys["ca.crt.pem"]))
    assert hashes["1"] == hashes["2"] and len(hashes["1"]) == 5 * len(rooms)


def test_a_bundle_of_sealed_rooms_carries_the_seal_and_its_readme_checks_it(make_config, keys, tsa, tmp_path) -> None:
    """Rooms of a sealed day: each verification.json holds its inclusion proof, the seal's files are in the
    bundle once, and the README's openssl commands check the seal's signature and timestamp."""
    from test_seals import DAY, backdate, built_on, seal_cli

    from archiver import merkle

    config = make_config(signing__timestamp_url=tsa.url)
    with built_on():
        entries = archive_samples(config, count=3)
    backdate(config)
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    rooms = [e["room"] for e in entries[:2]]
    out = tmp_path / "sealed.zip"
    assert _bundle(config, tmp_path, *rooms, "--bundle", str(out), "--key", str(keys["legal.key.pem"]),
                   "--reason", "case 7") == 0
    folder = _unzip(out, tmp_path / "unzipped")
    (seal_dir,) = [p for p in (folder / "seals").iterdir()]
    assert seal_dir.name == f"{DAY.isoformat()}-1"
    seal = json.loads((seal_dir / "seal.json").read_text())
    for room in rooms:
        proof = json.loads((folder / f"rooms/{safe_name(room)}-v1/verification.json").read_text())["inclusion_proof"]
        digest = merkle.leaf_hash(proof["leaf"].encode("utf-8"))
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        assert merkle.root_from_path(digest, proof["index"], proof["tree_size"], path).hex() == seal["root"]
    shutil.copy(tsa.ca_pem, folder.parent / "TSA-CA.pem")
    results = _run_readme(folder, keys["ca.crt.pem"])
    assert len(results) == 7 and _passes(results), results
    assert sum(out.count("OK seals/") for _, _, out in results) == 2

    (seal_dir / "seal.json").write_text(json.dumps({**seal, "count": 99}))  # the seal edited: openssl says so
    results = _run_readme(folder, keys["ca.crt.pem"])
    assert any(f"FAILED seals/{seal_dir.name}/seal.json" in out for _, _, out in results), results


def test_a_bundle_carries_the_attachments_and_its_readme_checks_them_against_the_signed_record(
        make_config, keys, tmp_path, server, files) -> None:
    from attachment_server import PDF, png
    from test_attachments_archive import attaching, chat_with
    from test_pipeline import entries, seed
    from archiver.pipeline import Archiver

    files.add("/m/photo.png", png())
    files.add("/m/c.pdf", PDF)
    config = attaching(make_config, server)
    seed(config, [chat_with([("IMAGE", f"{server}/m/photo.png"), ("DOCUMENT", f"{server}/m/c.pdf"),
                             ("IMAGE", f"{server}/m/gone.png")])])
    assert Archiver(config).run_pass().archived == 1
    (entry,) = entries(config)
    out = tmp_path / "b.zip"
    assert _bundle(config, tmp_path, entry["room"], "--bundle", str(out), "--key", str(keys["legal.key.pem"]),
                   "--reason", "case 14", "--no-progress") == 0
    folder = _unzip(out, tmp_path / "u")
    base = f"rooms/{safe_name(entry['room'])}-v1/attachments/"
    photo, pdf = folder / (base + "0004-photo.png"), folder / (base + "0005-c.pdf")
    assert photo.read_bytes() == png() and pdf.read_bytes() == PDF
    assert sorted(p.name for p in (folder / base).iterdir()) == ["0004-photo.png", "0005-c.pdf"]  # 404: no file
    assert "attachments/" in (folder / "README.txt").read_text()

    results = _run_readme(folder, keys["ca.crt.pem"])
    assert _passes(results), results
    (step,) = [out for command, _, out in results if "attachments/" in command]
    assert step.split() == ["OK", base + "0004-photo.png", "OK", base + "0005-c.pdf"]

    # The two files swapped (each a file the record names, under the other's position), and the
    # bundle's own manifest rewritten to match: only the record's check names them.
    a, b = photo.read_bytes(), pdf.read_bytes()
    photo.write_bytes(b)
    pdf.write_bytes(a)
    _rewrite_sums(folder)
    results = _run_readme(folder, keys["ca.crt.pem"])
    assert [i for i, (_, code, out) in enumerate(results) if code or "FAILED" in out] == [0, len(results) - 1]
    assert results[-1][2].split() == ["FAILED", base + "0004-photo.png", "FAILED", base + "0005-c.pdf"]


def _rewrite_sums(folder) -> None:
    """The bundle's SHA256SUMS made to match its files again, as someone who swapped files would."""
    sums = folder / "SHA256SUMS"
    sums.write_text("".join(f"{hashlib.sha256((folder / line.split('  ', 1)[1]).read_bytes()).hexdigest()}  "
                            f"{line.split('  ', 1)[1]}\n" for line in sums.read_text().splitlines()))


def test_the_readme_checks_the_files_of_a_retry_version_kept_from_an_earlier_one(
        make_config, keys, tmp_path, server, files) -> None:
    """A retry version's record lists a kept file with "kept_from_version" after its "object": the
    README's check must find it all the same, and still name a file swapped for another."""
    from attachment_server import PDF, png
    from test_attachments_archive import attaching, chat_with
    from test_pipeline import entries, seed
    from archiver.pipeline import Archiver

    config = attaching(make_config, server)
    photo = png((120, 80), "green")
    files.add("/a.png", photo)
    seed(config, [chat_with([("IMAGE", f"{server}/a.png"), ("DOCUMENT", f"{server}/later.pdf")])])
    assert Archiver(config).run_pass().archived == 1  # v1: a.png fetched, later.pdf a 404
    files.add("/later.pdf", PDF)
    assert Archiver(config).run_pass().archived == 1  # v2, the retry: a.png kept from v1, later.pdf fetched
    _, second = entries(config)
    assert second["version"] == 2 and second["attachments"][0]["kept_from_version"] == 1
    folder = _bundled(config, keys, tmp_path, second["room"], "retry")
    base = f"rooms/{safe_name(second['room'])}-v2/attachments/"
    assert '"object":"attachment-4","kept_from_version":1}' in (folder / base).parent.joinpath("record.json").read_text()

    results = _run_readme(folder, keys["ca.crt.pem"])
    (step,) = [out for command, _, out in results if "attachments/" in command]
    first = base.replace("-v2/", "-v1/")  # a bundle by room holds every version: v1 with the photo alone
    assert step.split() == ["OK", first + "0004-a.png", "OK", base + "0004-a.png", "OK", base + "0005-later.pdf"]
    assert _passes(results), results
    room = (folder / base).parent  # its verification.json's sha256sum command lists its attachments too
    report = json.loads((room / "verification.json").read_text())
    done = subprocess.run(["bash", "-c", report["check_it_yourself"][2]], cwd=room, capture_output=True, text=True)
    assert done.returncode == 0 and {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in done.stdout.splitlines()
                                     } == {n: f["sha256"] for n, f in report["files"].items()}, done

    kept, fetched = folder / (base + "0004-a.png"), folder / (base + "0005-later.pdf")  # swapped, sums rewritten
    kept.write_bytes(PDF)
    fetched.write_bytes(photo)
    _rewrite_sums(folder)
    results = _run_readme(folder, keys["ca.crt.pem"])
    assert results[-1][2].split() == ["OK", first + "0004-a.png", "FAILED", base + "0004-a.png", "FAILED",
                                      base + "0005-later.pdf"]


def test_a_bundle_from_filters_names_the_matching_entries_it_cannot_hold(archived, keys, tmp_path, capsys) -> None:
    """A tombstone matches the filters but has nothing to put in a bundle: the bundle said it held every
    room the filters select, and the deleted one was named nowhere."""
    import datetime as dt
    from retrieval_helpers import index
    config, entries = archived
    gone = entries[0]
    index(config).update_one({"_id": gone["_id"]}, {"$set": {"status": "deleted", "deletion": {
        "run": "ret-1", "rule": "default", "state": "done", "at": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)}}})
    out = tmp_path / "b.zip"
    capsys.readouterr()
    assert _bundle(config, tmp_path, "--bundle", str(out), "--key", str(keys["legal.key.pem"]),
                   "--reason", "regulator request", "--from", "2000-01-01", signed=False) == 0
    printed = capsys.readouterr().out
    assert f"{gone['room']} v1: deleted by run ret-1 under rule default" in printed
    custody = json.loads((_unzip(out, tmp_path / "u") / "chain-of-custody.json").read_text())
    assert [(e["room"], e["status"], e["deleted_by_run"]) for e in custody["left_out"]["entries"]] == [
        (gone["room"], "deleted", "ret-1")]
    assert gone["room"] not in [r["room"] for r in custody["rooms"]]


def _failed(results: list[tuple[str, int, str]]) -> list[int]:
    """The README steps (by position) that failed: a non-zero exit or a FAILED line."""
    return [i for i, (_, code, out) in enumerate(results) if code or "FAILED" in out]


def _verdicts(out: str) -> list[list[str]]:
    """Each line of a step's output as [OK or FAILED, the file] (an OK line goes on to say at what time)."""
    return [line.split()[:2] for line in out.splitlines()]


def _bundled(config, keys, tmp_path: Path, room: str, name: str, signed: bool = True) -> Path:
    """A bundle of ROOM, unzipped into tmp_path/NAME."""
    assert _bundle(config, tmp_path, room, "--bundle", str(tmp_path / f"{name}.zip"), "--key",
                   str(keys["legal.key.pem"]), "--reason", name, "--no-progress", signed=signed) == 0
    return _unzip(tmp_path / f"{name}.zip", tmp_path / name)


def _detached_by(made, ca, data: bytes) -> bytes:
    """A detached CMS signature over DATA by MADE (whatever its validity), with CA's certificate in it."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import pkcs7

    builder = pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(made.cert, made.key, hashes.SHA256())
    return builder.add_certificate(ca.cert).sign(
        serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])


def _minimal_pdf(text: str) -> bytes:
    """A one-page unsigned PDF saying TEXT (hand-written objects and xref), for a forger to sign."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.7\n"), []
    for n, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def _forged_pdf(tmp_path: Path, common_name: str = "Transcript signing (development)") -> bytes:
    """A transcript signed (PAdES, by the archiver's own signer code) with a self-made certificate."""
    from certfactory import make
    from archiver.signing import Signer, SigningIdentity

    forger = make(tmp_path / "forger", common_name, usages=("digital_signature", "content_commitment"))
    # Not through load_identity: the files are named after COMMON_NAME, and a key path holding a line break
    # is refused as looking like key material.
    return Signer(SigningIdentity(forger.key, forger.cert, ())).sign_pdf(
        _minimal_pdf("Agent: the customer admitted everything"))


def test_a_genuine_room_folder_added_from_another_bundle_fails_the_readme(archived, keys, tmp_path) -> None:
    """Every file of the added folder is authentic (signed by the archive, chaining to the CA), but it is
    not part of this bundle: the step that looks for files SHA256SUMS does not list names each one."""
    config, entries = archived
    a, b = entries[0]["room"], entries[1]["room"]
    case, other = _bundled(config, keys, tmp_path, a, "case"), _bundled(config, keys, tmp_path, b, "other")
    assert _passes(_run_readme(case, keys["ca.crt.pem"]))
    added = f"rooms/{safe_name(b)}-v1"
    shutil.copytree(other / added, case / added)
    results = _run_readme(case, keys["ca.crt.pem"])
    assert _failed(results) == [2] and "SHA256SUMS" in results[2][0], results
    named = {line.removeprefix("FAILED not in SHA256SUMS: ") for line in results[2][2].splitlines()}
    assert named == {f"{added}/{p.name}" for p in (other / added).iterdir()}
    # A file added at the top, or one renamed, alike.
    shutil.rmtree(case / added)
    (case / "rooms" / "notes.txt").write_text("x")
    results = _run_readme(case, keys["ca.crt.pem"])
    assert _failed(results) == [2] and results[2][2].strip() == "FAILED not in SHA256SUMS: rooms/notes.txt"


def test_a_name_with_a_line_break_cannot_pass_for_listed_names_in_the_readme(archived, keys, tmp_path) -> None:
    """The unlisted-files step reads names one a line: a name holding a line break would read as a listed
    name and an allowed one. Any name with a control character fails it, named once (printf %q)."""
    config, entries = archived
    case = _bundled(config, keys, tmp_path, entries[0]["room"], "case")
    room = f"rooms/{safe_name(entries[0]['room'])}-v1"
    (case / room / "transcript.pdf\nxxCA.pem").write_bytes(b"%PDF forged: the customer admitted everything")
    forged = case / "manifest.json\nxxrooms" / room.removeprefix("rooms/")  # a whole room tree beside rooms/
    shutil.copytree(case / room, forged, ignore=lambda _, names: [n for n in names if "\n" in n])
    (forged / "transcript.pdf").write_bytes(b"%PDF forged")
    shutil.copytree(case / room, case / "rooms/tab\there-v1", ignore=lambda _, names: [n for n in names if "\n" in n])
    results = _run_readme(case, keys["ca.crt.pem"])
    assert _failed(results) == [2] and "SHA256SUMS" in results[2][0], results
    assert sorted(results[2][2].splitlines()) == [f"FAILED a name with a control character: $'{name}'" for name in (
        "manifest.json\\nxxrooms", f"{room}/transcript.pdf\\nxxCA.pem", "rooms/tab\\there-v1")], results[2]

    # A folder whose name holds spaces: named in full where it is not listed, and every loop over rooms/*/
    # checks it as one folder (its genuine copies pass their signature steps: nothing split the name).
    shutil.rmtree(forged.parent)
    shutil.rmtree(case / "rooms/tab\there-v1")
    (case / room / "transcript.pdf\nxxCA.pem").unlink()
    spaced = "rooms/a copy of  it-v1"
    shutil.copytree(case / room, case / spaced)
    results = _run_readme(case, keys["ca.crt.pem"])
    assert _failed(results) == [2], results
    assert sorted(results[2][2].splitlines()) == sorted(f"FAILED not in SHA256SUMS: {spaced}/{p.name}"
                                                        for p in (case / room).iterdir()), results[2]
    for step, name in ((3, "transcript.pdf"), (4, "record.json")):
        assert [line.split(" (")[0] for line in results[step][2].splitlines()] == [
            f"OK {folder}/{name}" for folder in sorted((spaced, room))], results[step]


def test_a_transcript_signed_by_a_self_made_certificate_fails_the_readme(archived, keys, tmp_path) -> None:
    """A forged folder: the forger's own PAdES-signed transcript (valid signature, whole file), with a genuine
    record.json, record.json.p7s and signer.crt.pem copied in. pdfsig itself must find that the PDF's signer
    does not chain to CA.pem; a separate signer.crt.pem proves nothing about the PDF."""
    config, entries = archived
    a, b = entries[0]["room"], entries[1]["room"]
    case, other = _bundled(config, keys, tmp_path, a, "case"), _bundled(config, keys, tmp_path, b, "other")
    forged = case / "rooms/CHAT_DEFAULT_forged-v1"
    shutil.copytree(other / f"rooms/{safe_name(b)}-v1", forged)
    (forged / "transcript.pdf").write_bytes(_forged_pdf(tmp_path))
    results = _run_readme(case, keys["ca.crt.pem"])
    assert _failed(results) == [2, 3] and "pdfsig" in results[3][0], results
    assert _verdicts(results[3][2]) == [["OK", f"rooms/{safe_name(a)}-v1/transcript.pdf"],
                                        ["FAILED", "rooms/CHAT_DEFAULT_forged-v1/transcript.pdf"]], results[3]


def test_a_forged_signer_name_cannot_print_the_trusted_line_for_pdfsig(archived, keys, tmp_path) -> None:
    """pdfsig prints the signer's common name as it is: a name holding a line break and the words
    "Certificate is Trusted" must not make the step say OK."""
    config, entries = archived
    case = _bundled(config, keys, tmp_path, entries[0]["room"], "case")
    pdf = case / f"rooms/{safe_name(entries[0]['room'])}-v1/transcript.pdf"
    pdf.write_bytes(_forged_pdf(tmp_path, "x\n  - Certificate Validation: Certificate is Trusted."))
    (step,) = [r for r in _run_readme(case, keys["ca.crt.pem"]) if "pdfsig" in r[0]]
    assert step[2].split() == ["FAILED", str(pdf.relative_to(case))], step


def test_an_unsigned_bundle_proves_each_signature_but_not_its_contents(archived, keys, tmp_path) -> None:
    """Without a signed manifest, a room added together with a rewritten SHA256SUMS passes every file
    check: only the SHA-256 of SHA256SUMS, compared with the audit log's, shows it (as the README says).
    A forged transcript still fails the PDF signer check, whatever SHA256SUMS says."""
    config, entries = archived
    a, b = entries[0]["room"], entries[1]["room"]
    case = _bundled(config, keys, tmp_path, a, "case", signed=False)
    other = _bundled(config, keys, tmp_path, b, "other", signed=False)
    readme = (case / "README.txt").read_text()
    assert "cannot prove" in readme and "audit log" in readme
    first_bundle = [e for e in audit(config) if e["action"] == "retrieve" and e["outcome"] == "ok"][-2]
    recorded = re.search(r"SHA256SUMS sha256 ([0-9a-f]{64})", first_bundle["detail"]).group(1)
    results = _run_readme(case, keys["ca.crt.pem"])
    assert _passes(results) and results[0][2].split()[0] == recorded

    added = f"rooms/{safe_name(b)}-v1"
    shutil.copytree(other / added, case / added)
    sums = case / "SHA256SUMS"
    sums.write_text(sums.read_text() + "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {added}/{p.name}\n"
                                               for p in sorted((case / added).iterdir())))
    results = _run_readme(case, keys["ca.crt.pem"])
    assert _passes(results) and results[0][2].split()[0] != recorded, results

    pdf = case / added / "transcript.pdf"
    pdf.write_bytes(_forged_pdf(tmp_path))
    sums.write_text(sums.read_text().replace(
        next(line for line in sums.read_text().splitlines() if line.endswith(f"{added}/transcript.pdf")),
        f"{hashlib.sha256(pdf.read_bytes()).hexdigest()}  {added}/transcript.pdf"))
    results = _run_readme(case, keys["ca.crt.pem"])
    assert _failed(results) == [3] and f"FAILED {added}/transcript.pdf" in results[3][2], results


def test_a_bundle_by_a_reversed_date_window_is_a_usage_error(archived, keys, tmp_path, capsys) -> None:
    config, _ = archived
    out = tmp_path / "r.zip"
    assert _bundle(config, tmp_path, "--bundle", str(out), "--key", str(keys["legal.key.pem"]), "--reason", "r",
                   "--from", "2026-11-27", "--to", "20261126") == 2
    assert "--from '2026-11-27' is after --to '20261126'" in capsys.readouterr().err and not out.exists()


def test_a_room_a_retention_run_deletes_while_the_bundle_fetches_it_is_named_as_deleted(
        make_config, keys, tmp_path, capsys, monkeypatch) -> None:
    """As for `retrieve`: objects missing because a run deleted the entry meanwhile are not a failed check."""
    import archiver.retrieval as retrieval  # a bundle fetches each room as `retrieve` does (retrieval.open_stored)
    from retention_helpers import retention_config
    from retrieval_helpers import retention_runs_during_fetch
    from retrieval_helpers import index

    config = retention_config(make_config)
    (entry,) = archive_samples(config, count=1)
    retention_runs_during_fetch(monkeypatch, retrieval, config)
    out = tmp_path / "b.zip"
    code = _bundle(config, tmp_path, entry["room"], "--bundle", str(out), "--key", str(keys["legal.key.pem"]),
                   "--reason", "case 7", "--no-progress")
    run = index(config).find_one({"_id": entry["_id"]})["deletion"]["run"]
    err = capsys.readouterr().err
    assert code == 1 and f"deleted by run {run} under rule default" in err, err
    assert not out.exists() and not list(tmp_path.glob(".b.zip.partial-*"))


@pytest.mark.parametrize("allowed, said", [(0, "nothing was fetched or decrypted"),
                                           (1, "nothing was released: the bundle was removed")])
def test_no_bundle_appears_unless_the_audit_log_records_it(archived, keys, tmp_path, monkeypatch, capsys,
                                                           allowed, said) -> None:
    """The bundle was linked into place before its entry was written: a full disk left a case bundle of
    decrypted chats and no entry."""
    from retrieval_helpers import refuse_audit
    config, entries = archived
    out = tmp_path / "case.zip"
    refuse_audit(monkeypatch, config, allowed)
    assert _bundle(config, tmp_path, entries[0]["room"], "--bundle", str(out), "--key", str(keys["legal.key.pem"]),
                   "--reason", "case 42", "--no-progress") == 1
    err = capsys.readouterr().err
    assert "the audit log could not be written" in err and said in err, err
    assert not out.exists() and not list(tmp_path.glob(".case.zip*"))
    assert [(e["outcome"], e["rooms"]) for e in audit(config)] == [("started", [entries[0]["room"]])] * allowed


LIFETIME = 12  # seconds the short-lived signer and its CA live: time to archive, seal and bundle two chats here
CHECKED_AT = re.compile(r"^OK (\S+) \(its signer chains to \S*CA\.pem at (\S+), (.+)\)$")


def _short_lived_pki(folder: Path, seconds: int, name: str = "Short-lived"):
    """A CA and a signing certificate it issued (NAME CA, NAME signer), both expiring SECONDS from now; and a PEM
    of the two."""
    from certfactory import ahead, make

    until = ahead(seconds=seconds).replace(microsecond=0)  # X.509 times are whole seconds
    ca = make(folder, f"{name} CA", usages=("key_cert_sign", "crl_sign"), ca=True, not_after=until,
              ec_key=True)
    signer = make(folder, f"{name} signer", usages=("digital_signature", "content_commitment"), issuer=ca,
                  not_after=until, ec_key=True)
    chain = folder / "signer-and-ca.pem"
    chain.write_bytes(signer.cert_path.read_bytes() + ca.cert_path.read_bytes())
    return ca, signer, chain, until


def _checked_at(results: list[tuple[str, int, str]]) -> dict[str, tuple[dt.datetime, str]]:
    """Each file an OK line names: the time its signer's chain was checked at, and which time that was."""
    found = {}
    for _, _, out in results:
        for line in out.splitlines():
            match = CHECKED_AT.match(line)
            if match:
                found[match[1]] = (dt.datetime.fromisoformat(match[2].replace("Z", "+00:00")), match[3])
    return found


def test_a_genuine_bundle_verifies_after_its_signer_and_ca_expired_and_forgeries_still_fail(
        make_config, keys, tsa, tmp_path) -> None:
    """Years later, in court, the signing certificate and its CA have expired. Each README step checks the
    signer's chain at the time of signing, and says which: the PDFs' and the seal's RFC 3161 timestamp
    (verified against TSA-CA.pem), the signing time SHA256SUMS.p7s and each record.json.p7s state. Still
    failing: a transcript and record signed by a certificate the same CA issued that had already expired
    when it signed (B-T: its timestamp is genuine), a transcript signed by a self-made expired certificate,
    and SHA256SUMS rewritten to list them."""
    from certfactory import ago, make
    from test_seals import DAY, backdate, built_on, seal_cli
    from archiver.signing import Signer, SigningIdentity

    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    ca, signer, chain, until = _short_lived_pki(tmp_path / "pki", LIFETIME)
    bundle_ca, bundle_signer, bundle_chain, _ = _short_lived_pki(tmp_path / "bundle-pki", LIFETIME,
                                                                   "Short-lived bundle")  # (a CA of its own)
    config = make_config(signing__certificate=str(chain), signing__key=str(signer.key_path),
                         signing__timestamp_url=tsa.url, bundle__signing_certificate=str(bundle_chain),
                         bundle__signing_key=str(bundle_signer.key_path))
    with built_on():
        entries = archive_samples(config, count=2)
    backdate(config)
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    rooms = [e["room"] for e in entries]
    out = tmp_path / "case.zip"
    assert _bundle(config, tmp_path, *rooms, "--bundle", str(out), "--key", str(keys["legal.key.pem"]),
                   "--reason", "case 9", "--no-progress") == 0
    # Forgeries made while the CA is valid: by a certificate it issued that expired a minute ago, and B-T.
    expired = make(tmp_path / "pki", "Transcript signing (expired)", usages=("digital_signature", "content_commitment"),
                   issuer=ca, not_before=ago(days=10), not_after=ago(minutes=1))
    late = Signer(SigningIdentity(expired.key, expired.cert, (ca.cert,)), timestamp_url=tsa.url)
    late_pdf = late.sign_pdf(_minimal_pdf("Agent: the customer admitted everything"))
    # And a genuine transcript without a timestamp (B-B), checked at the signing time it states.
    plain = Signer(SigningIdentity(signer.key, signer.cert, (ca.cert,))).sign_pdf(_minimal_pdf("B-B"))
    made = dt.datetime.now(dt.timezone.utc)
    assert made < until, f"bundle made {(made - until).total_seconds():.1f} s after its signer expired: raise LIFETIME"
    folder = _unzip(out, tmp_path / "u")
    shutil.copy(tsa.ca_pem, folder.parent / "TSA-CA.pem")
    time.sleep((until - made).total_seconds() + 1.5)

    # Both certificates have expired: checked at today's date, the genuine signatures fail.
    today = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", "SHA256SUMS.p7s",
                            "-content", "SHA256SUMS", "-CAfile", str(bundle_ca.cert_path), "-out", "/dev/null"],
                           cwd=folder, capture_output=True, text=True)
    assert today.returncode != 0 and "certificate has expired" in today.stderr, today.stderr

    results = _run_readme(folder, ca.cert_path, bundle_ca.cert_path)
    assert len(results) == 7 and _passes(results), results
    checked = _checked_at(results)
    timestamped = "the time its RFC 3161 timestamp states"
    expected = {"SHA256SUMS": "the signing time its signer states",
                **{f"rooms/{safe_name(r)}-v1/transcript.pdf": timestamped for r in rooms},
                **{f"rooms/{safe_name(r)}-v1/record.json": "the signing time its signer states" for r in rooms},
                f"seals/{DAY.isoformat()}-1/seal.json": timestamped}
    assert {name: how.split(",")[0].split(" (")[0] for name, (_, how) in checked.items()} == expected, results
    assert all(started <= when <= until for when, _ in checked.values()), checked

    # So do the commands each room's verification.json gives (check_it_yourself), in a copy of its folder.
    room = shutil.copytree(folder / f"rooms/{safe_name(rooms[0])}-v1", tmp_path / "room")
    shutil.copy(ca.cert_path, room / "YOUR-CA.pem")
    shutil.copy(tsa.ca_pem, room / "YOUR-TSA-CA.pem")
    for command, name in zip(json.loads((room / "verification.json").read_text())["check_it_yourself"][:2],
                             ("transcript.pdf", "record.json")):
        done = subprocess.run(["bash", "-c", command], cwd=room, capture_output=True, text=True)
        (found,) = _checked_at([(command, done.returncode, done.stdout)]).items()
        assert found[0] == name and found[1][1].startswith(expected[f"rooms/{safe_name(rooms[0])}-v1/{name}"]), done

    (room / "transcript.pdf").write_bytes(plain)
    done = subprocess.run(["bash", "-c", json.loads((room / "verification.json").read_text())["check_it_yourself"][0]],
                          cwd=room, capture_output=True, text=True)
    ((name, (when, how)),) = _checked_at([("", done.returncode, done.stdout)]).items()
    assert name == "transcript.pdf" and how == "the signing time its signer states" and started <= when <= until, done

    # docs/seals.md's openssl commands, as written, check the seal at its token's time too.
    seal = shutil.copytree(folder / f"seals/{DAY.isoformat()}-1", tmp_path / "seal")
    shutil.copy(ca.cert_path, seal / "signing-ca.pem")
    shutil.copy(signer.cert_path, seal / "signing.crt.pem")  # the archiver's own: the last command pins it
    shutil.copy(tsa.ca_pem, seal / "tsa-ca.pem")
    docs = (Path(__file__).parents[1] / "docs/seals.md").read_text().split("## Checking a seal with openssl")[1]
    done = subprocess.run(["bash", "-ec", docs.split("```sh\n")[1].split("```")[0]], cwd=seal, capture_output=True,
                          text=True)
    assert done.returncode == 0 and "Verification: OK" in done.stdout, done
    assert "Verification successful" in done.stderr and "signed by the archiver's certificate" in done.stdout, done

    # A timestamp counts only if it verifies against TSA-CA.pem: with another CA there, the PDF and seal steps fail.
    shutil.copy(ca.cert_path, folder.parent / "TSA-CA.pem")
    results = _run_readme(folder, ca.cert_path, bundle_ca.cert_path)
    assert _failed(results) == [3, 6] and all(line.startswith("FAILED") for line in results[3][2].splitlines()), results
    shutil.copy(tsa.ca_pem, folder.parent / "TSA-CA.pem")

    # A byte changed in a genuine transcript: sha256sum -c and the PDF step fail.
    pdf = folder / f"rooms/{safe_name(rooms[1])}-v1/transcript.pdf"
    genuine = pdf.read_bytes()
    changed = bytearray(genuine)
    changed[len(changed) // 3] ^= 0x01
    pdf.write_bytes(bytes(changed))
    results = _run_readme(folder, ca.cert_path, bundle_ca.cert_path)
    assert _failed(results) == [1, 3] and f"FAILED {pdf.relative_to(folder)}" in results[3][2].splitlines(), results
    pdf.write_bytes(genuine)

    # A room folder added, its transcript and record signed by the certificate that had already expired.
    forged = folder / "rooms/CHAT_DEFAULT_forged-v1"
    shutil.copytree(folder / f"rooms/{safe_name(rooms[0])}-v1", forged)
    (forged / "transcript.pdf").write_bytes(late_pdf)
    # (signed as a forger would, outside the archiver: its Signer refuses a certificate past its notAfter)
    (forged / "record.json.p7s").write_bytes(_detached_by(expired, ca, (forged / "record.json").read_bytes()))
    results = _run_readme(folder, ca.cert_path, bundle_ca.cert_path)
    assert _failed(results) == [2, 3, 4], results
    assert _verdicts(results[3][2]) == [
        ["OK", f"rooms/{safe_name(rooms[0])}-v1/transcript.pdf"],
        ["OK", f"rooms/{safe_name(rooms[1])}-v1/transcript.pdf"],
        ["FAILED", "rooms/CHAT_DEFAULT_forged-v1/transcript.pdf"]], results[3]
    assert "FAILED rooms/CHAT_DEFAULT_forged-v1/record.json" in results[4][2].splitlines(), results[4]

    # SHA256SUMS rewritten to list the forged folder: its signature fails too.
    sums = folder / "SHA256SUMS"
    sums.write_text(sums.read_text() + "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(folder)}\n" for p in sorted(forged.iterdir())))
    results = _run_readme(folder, ca.cert_path, bundle_ca.cert_path)
    assert _failed(results) == [0, 3, 4] and "FAILED SHA256SUMS" in results[0][2], results

    # A transcript signed by a self-made certificate that had expired when it signed: pdfsig says "Expired"
    # for it as for the genuine ones (not "issuer unknown"); openssl finds it does not chain to CA.pem.
    selfmade = make(tmp_path / "forger", "Short-lived signer", usages=("digital_signature", "content_commitment"),
                    not_before=ago(days=10), not_after=ago(days=1))
    (forged / "transcript.pdf").write_bytes(Signer(SigningIdentity(selfmade.key, selfmade.cert, ())).sign_pdf(
        _minimal_pdf("Agent: the customer admitted everything")))
    said = subprocess.run(["pdfsig", str(forged / "transcript.pdf")], capture_output=True, text=True).stdout
    assert "Certificate Validation: Certificate has Expired" in said, said
    step = subprocess.run(["bash", "-c", next(c for c in _readme_commands(folder) if "pdfsig" in c)], cwd=folder,
                          capture_output=True, text=True)
    assert "FAILED rooms/CHAT_DEFAULT_forged-v1/transcript.pdf" in step.stdout.splitlines(), step
    assert step.returncode != 0, step


def test_a_bundle_is_not_signed_with_the_transcript_signing_key_even_a_recipients(archived, keys, tmp_path,
                                                                                  capsys) -> None:
    """The bundle is signed with its own identity (bundle.*): a transcript signing key configured where bundles are
    made (here even one that is a recipient's) never signs it, is not loaded, and is warned of."""
    from certfactory import make

    config, entries = archived
    dual = make(tmp_path / "k", "LegalDual", usages=("digital_signature", "content_commitment", "key_encipherment"))
    config = config.with_overrides(**{"signing.key": str(dual.key_path),
                                      "encryption.recipients": [*config["encryption.recipients"], str(dual.cert_path)]})
    out = tmp_path / "case-43.zip"
    toml = write_toml(tmp_path / "cli.toml", {k: config[k] for k in CLI_KEYS + SIGNING_KEYS + ("signing.key",)})
    assert main(["--config", str(toml), "retrieve", entries[0]["room"], "--bundle", str(out), "--key",
                 str(keys["legal.key.pem"]), "--reason", "case 43", "--ca", str(keys["ca.crt.pem"])]) == 0
    said = capsys.readouterr().out
    assert "WARNING: the transcript signing key (signing.key) is configured on this host, which decrypts" in said
    assert zipped_json(out, "chain-of-custody.json")["manifest_signed_by"]["subject"] == \
        "CN=Case bundle signing (development),O=CT Live archiver (development)"


# -- a version whose deletion a crash cut short, then kept by a hold -----------------------------------------

def _kept_beside_others(make_config, monkeypatch):
    """Three archived rooms, the first two due for deletion; a retention run killed after the first one's
    tombstone, before any object went; that room then held by "Subpoena 7" and the run resumed: it keeps the
    held room (its tombstone stays `deleting`) and deletes the other due one for good; the third is untouched.
    (config, the kept tombstone, the finished one, the archived entry, their chats by room)"""
    from archiver.holds import open_holds
    from archiver.search import SearchFilters
    from archiver.store.local import LocalStore
    from retention_helpers import age, archive, retention, retention_config
    from retrieval_helpers import index
    from test_retention_resume import _crash

    config = retention_config(make_config)
    chats = {c["room"]: c for c in archive(config, 3)}
    for room in list(chats)[:2]:
        age(config, 400, room=room)
    _crash(config, monkeypatch, LocalStore, "delete")
    (cut_short,) = index(config).find({"status": "deleted"})
    open_holds(config).place(SearchFilters(room=cut_short["room"]), "Subpoena 7", "court order",
                             {"user": "legal", "host": "h"})
    assert retention(config).resumed
    age(config, -400, room=cut_short["room"])  # its real times back: the signed record's generated_at agrees again
    kept = index(config).find_one({"room": cut_short["room"]})
    (gone,) = index(config).find({"status": "deleted", "deletion.state": "done"})
    (archived,) = index(config).find({"status": "archived"})
    assert kept["deletion"]["state"] == "deleting" and len({kept["room"], gone["room"], archived["room"]}) == 3
    return config, kept, gone, archived, chats


def _kept_room_checks(folder: Path, kept: dict, custody: dict) -> None:
    """The kept room is in the bundle, its verification.json and the custody report saying that it was kept,
    by which run and which hold; every other room says nothing of the kind."""
    run = kept["deletion"]["run"]
    (item,) = [r for r in custody["rooms"] if r["room"] == kept["room"]]
    assert item["kept"].startswith(f"its deletion, begun by run {run}") and "Subpoena 7" in item["kept"], item
    report = json.loads((folder / item["folder"] / "verification.json").read_text())
    assert report["ok"] and all(c["ok"] for c in report["checks"]) and report["note"].startswith(item["kept"])
    assert {"transcript.pdf", "record.json", "record.json.p7s"} <= {p.name for p in (folder / item["folder"]).iterdir()}
    for other in custody["rooms"]:
        if other["room"] != kept["room"]:
            assert "kept" not in other
            assert "note" not in json.loads((folder / other["folder"] / "verification.json").read_text())


def test_a_bundle_of_rooms_takes_a_version_whose_deletion_was_begun_then_kept_by_a_hold(
        make_config, keys, monkeypatch, tmp_path, capsys) -> None:
    """As `retrieve` serves it: decrypted and verified from its recorded objects, the note saying which run
    began deleting it and which hold kept it (a legal team bundling the very case that holds it got nothing)."""
    config, kept, gone, archived, _ = _kept_beside_others(make_config, monkeypatch)
    out = tmp_path / "subpoena-7.zip"
    capsys.readouterr()
    assert _bundle(config, tmp_path, kept["room"], archived["room"], "--bundle", str(out), "--key",
                   str(keys["legal.key.pem"]), "--reason", "Subpoena 7", "--workers", "1", "--no-progress") == 0
    printed = capsys.readouterr().out
    assert f"NOTE: {kept['room']} v1: its deletion, begun by run {kept['deletion']['run']}" in printed, printed
    folder = _unzip(out, tmp_path / "u")
    custody = json.loads((folder / "chain-of-custody.json").read_text())
    assert [r["room"] for r in custody["rooms"]] == [kept["room"], archived["room"]]
    _kept_room_checks(folder, kept, custody)
    readme = (folder / "README.txt").read_text()
    assert "Of these, 1 a retention run began to delete and then kept" in readme
    results = _run_readme(folder, keys["ca.crt.pem"])
    assert _passes(results), results
    assert sum(out.count("OK rooms/") for _, _, out in results) == 4  # each PDF and record, the kept room's too
    started, done = [e for e in audit(config) if e["action"] == "retrieve"]
    assert started["rooms"] == done["rooms"] == sorted([kept["room"], archived["room"]])
    assert done["outcome"] == "ok" and f"{kept['room']} v1" in done["detail"] and "Subpoena 7" in done["detail"]
    from retrieval_helpers import index
    assert index(config).find_one({"_id": kept["_id"]})["deletion"]["state"] == "deleting"  # bundling changes nothing


def test_a_bundle_by_filters_takes_the_kept_version_and_still_leaves_out_a_finished_deletion(
        make_config, keys, monkeypatch, tmp_path, capsys) -> None:
    """By a customer of the kept room: it alone; by dates: the kept room and the archived one, the room deleted
    for good named under left_out (with its run), in content checks done in worker processes."""
    from retention_helpers import customer_of
    config, kept, gone, archived, chats = _kept_beside_others(make_config, monkeypatch)
    customer = customer_of(chats[kept["room"]])
    assert customer not in (archived.get("customers") or []) + (gone.get("customers") or [])
    by_customer = tmp_path / "customer.zip"
    assert _bundle(config, tmp_path, "--bundle", str(by_customer), "--key", str(keys["legal.key.pem"]),
                   "--reason", "Subpoena 7", "--customer", customer, "--no-progress") == 0
    folder = _unzip(by_customer, tmp_path / "c")
    custody = json.loads((folder / "chain-of-custody.json").read_text())
    assert [r["room"] for r in custody["rooms"]] == [kept["room"]] and custody["left_out"]["entries"] == []
    _kept_room_checks(folder, kept, custody)
    assert _passes(_run_readme(folder, keys["ca.crt.pem"]))
    assert audit(config)[-1]["rooms"] == [kept["room"]] and kept["room"] in audit(config)[-1]["detail"]

    by_dates = tmp_path / "dates.zip"
    capsys.readouterr()
    assert _bundle(config, tmp_path, "--bundle", str(by_dates), "--key", str(keys["legal.key.pem"]),
                   "--reason", "regulator request", "--from", "2000-01-01", "--workers", "2", "--no-progress") == 0
    printed = capsys.readouterr().out
    assert f"{gone['room']} v1: deleted by run {gone['deletion']['run']}" in printed and f"NOTE: {kept['room']} v1" in printed
    folder = _unzip(by_dates, tmp_path / "d")
    custody = json.loads((folder / "chain-of-custody.json").read_text())
    assert sorted(r["room"] for r in custody["rooms"]) == sorted([kept["room"], archived["room"]])
    assert [(e["room"], e["status"], e["deleted_by_run"]) for e in custody["left_out"]["entries"]] == [
        (gone["room"], "deleted", gone["deletion"]["run"])]
    _kept_room_checks(folder, kept, custody)
    assert _passes(_run_readme(folder, keys["ca.crt.pem"]))
    entry = audit(config)[-1]
    assert entry["rooms"] == sorted([kept["room"], archived["room"]]) and kept["room"] in entry["detail"]


def _bundled_by_room_and_by_filters(config, keys, tmp_path, capsys, kept, archived):
    """A bundle of KEPT's room beside ARCHIVED's, asked for by room, then by filters: (i, its path, the exit code,
    what it wrote to stderr) for each."""
    for i, selection in enumerate(([kept["room"], archived["room"]], ["--from", "2000-01-01"])):
        out = tmp_path / f"b{i}.zip"
        capsys.readouterr()
        code = _bundle(config, tmp_path, *selection, "--bundle", str(out), "--key", str(keys["legal.key.pem"]),
                       "--reason", "Subpoena 7", "--no-progress")
        yield i, out, code, capsys.readouterr().err


def test_a_kept_version_with_an_object_gone_means_no_bundle(make_config, keys, monkeypatch, tmp_path, capsys) -> None:
    """Not the archive it was: its first object (pdf) gone, for a step recorded before runs recorded which
    objects they kept (`kept_objects`), is what its deletion, cut short, may have left: as for `retrieve`,
    "being deleted" (exit 1), nothing written, by room or by filters."""
    from retrieval_helpers import index
    from test_retention_resume import _steps
    config, kept, _, archived, _ = _kept_beside_others(make_config, monkeypatch)
    assert _steps(config).update_many({"run": kept["deletion"]["run"]}, {"$unset": {"kept_objects": ""}}).matched_count
    remove_stored(config, kept["objects"]["pdf"]["key"])
    for i, out, code, err in _bundled_by_room_and_by_filters(config, keys, tmp_path, capsys, kept, archived):
        assert code == 1 and f"being deleted by run {kept['deletion']['run']}" in err, err
        assert "not every object is stored as recorded" in err and not out.exists()
        assert not list(tmp_path.glob(f".b{i}.zip*")) and audit(config)[-1]["outcome"] == "failed"
    assert index(config).find_one({"_id": kept["_id"]})["status"] == "deleted"


@pytest.mark.parametrize("tamper", ["removed", "all removed", "altered"])
def test_a_kept_version_whose_object_was_removed_or_altered_fails_verification_and_means_no_bundle(
        tamper, make_config, keys, monkeypatch, tmp_path, capsys) -> None:
    """Held evidence tampered with after its run kept it: its record gone while its pdf (deleted first) is there,
    which no deletion cut short leaves, or every object gone (the run recorded all three stored when it kept
    it: `kept_objects`), or present with other bytes. A failing room (exit 3, named with the object and why),
    not "being deleted" (exit 1), as `retrieve` and `verify` say; nothing written."""
    from archiver.integrity import verify_archive

    config, kept, _, archived, _ = _kept_beside_others(make_config, monkeypatch)
    key, run = kept["objects"]["record"]["key"], kept["deletion"]["run"]
    if tamper != "altered":
        for name in (["record"] if tamper == "removed" else list(kept["objects"])):
            remove_stored(config, kept["objects"][name]["key"])
        detail, why = "(the object is missing from the store)", f"removed after run {run} kept it"
    else:
        overwrite_stored(config, key, b"tampered")
        detail, why = "(altered: size 8", f"its deletion, begun by run {run}"
    for i, out, code, err in _bundled_by_room_and_by_filters(config, keys, tmp_path, capsys, kept, archived):
        assert code == 3 and "1 room(s) failed verification, so no bundle was written" in err, err
        assert f"{kept['room']} v1: failed: " in err and "being deleted" not in err, err
        assert f"failed: record: stored object {key} has the recorded size and SHA-256 {detail}" in err, err
        assert why in err and "Subpoena 7" in err, err
        assert not out.exists() and not list(tmp_path.glob(f".b{i}.zip*"))
        failed = audit(config)[-1]
        assert failed["outcome"] == "failed" and "failed verification" in failed["detail"] and key in failed["detail"]
    report = verify_archive(config, [kept["room"]])  # `verify` names it a problem too (exit 3), not KEPT
    assert not report.ok and report.kept == [] and any(key in p.problem for p in report.problems), report.problems
    assert tamper == "altered" or any(why in p.problem for p in report.problems), report.problems


def test_a_deletion_cut_short_whose_run_is_not_finished_is_not_bundled(make_config, keys, monkeypatch, tmp_path,
                                                                        capsys) -> None:
    """Before the run is resumed, the tombstone is its intent: by room "being deleted" (exit 1); by filters,
    left out with its run."""
    from archiver.store.local import LocalStore
    from retention_helpers import age, archive, retention_config
    from retrieval_helpers import index
    from test_retention_resume import _crash
    config = retention_config(make_config)
    first, second = archive(config, 2)
    age(config, 400, room=first["room"])
    _crash(config, monkeypatch, LocalStore, "delete")
    tombstone = index(config).find_one({"room": first["room"]})
    assert tombstone["deletion"]["state"] == "deleting"
    capsys.readouterr()
    assert _bundle(config, tmp_path, first["room"], "--bundle", str(tmp_path / "a.zip"), "--key",
                   str(keys["legal.key.pem"]), "--reason", "check", "--no-progress") == 1
    assert "being deleted by run" in capsys.readouterr().err and not (tmp_path / "a.zip").exists()
    assert _bundle(config, tmp_path, "--bundle", str(tmp_path / "b.zip"), "--key", str(keys["legal.key.pem"]),
                   "--reason", "check", "--from", "2000-01-01", "--no-progress") == 0
    folder = _unzip(tmp_path / "b.zip", tmp_path / "b")
    custody = json.loads((folder / "chain-of-custody.json").read_text())
    assert [r["room"] for r in custody["rooms"]] == [second["room"]] and "kept" not in custody["rooms"][0]
    assert "Of these" not in (folder / "README.txt").read_text()  # the README says nothing of kept versions
    assert [(e["room"], e["deleted_by_run"]) for e in custody["left_out"]["entries"]] == [
        (first["room"], tombstone["deletion"]["run"])]


def test_a_kept_version_of_a_sealed_day_carries_its_inclusion_proof_and_the_seal(make_config, keys, monkeypatch,
                                                                                  tmp_path) -> None:
    """Sealed as archived, then kept: it is still the leaf its day's seal holds (checked as the archive it
    was), and the README's steps check the seal and its files."""
    from archiver.holds import open_holds
    from archiver.search import SearchFilters
    from archiver.store.local import LocalStore
    from retention_helpers import age, retention, retention_config
    from retrieval_helpers import index
    from test_retention_resume import _crash
    from test_seals import DAY, backdate, built_on, seal_cli

    config = retention_config(make_config)
    with built_on():
        entries = archive_samples(config, count=2)
    backdate(config)
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    room = entries[0]["room"]
    age(config, 400, room=room)
    _crash(config, monkeypatch, LocalStore, "delete")
    open_holds(config).place(SearchFilters(room=room), "Subpoena 7", "court order", {"user": "legal", "host": "h"})
    assert retention(config).resumed
    age(config, -400, room=room)
    kept = index(config).find_one({"room": room})
    assert kept["deletion"]["state"] == "deleting"
    folder = _bundled(config, keys, tmp_path, room, "sealed-kept")
    custody = json.loads((folder / "chain-of-custody.json").read_text())
    _kept_room_checks(folder, kept, custody)
    (item,) = custody["rooms"]
    assert item["seal"] == f"seals/{DAY.isoformat()}-1" and (folder / item["seal"] / "seal.json").exists()
    report = json.loads((folder / item["folder"] / "verification.json").read_text())
    assert report["inclusion_proof"]["in_seal"] and report["inclusion_proof"]["matches_index"]
    assert any(c["check"].startswith("sealed: the entry is leaf") and c["ok"] for c in report["checks"])
    results = _run_readme(folder, keys["ca.crt.pem"])
    assert _passes(results) and sum(out.count("OK seals/") for _, _, out in results) == 1, results


def test_a_bundle_is_refused_when_the_index_swapped_two_attachments_positions(make_config, keys, tmp_path, server,
                                                                             files) -> None:
    """The index's positions name the files (0004-..., which the README's check reads): swapped there, the
    bundle would carry message 5's file as message 4's. The signed record decides: verification fails."""
    from test_attachments_archive import _two_files_archived
    from test_pipeline import index_db

    config, entry = _two_files_archived(make_config, server, files)
    index_db(config)[config["index.entries"]].update_one({"_id": entry["_id"]}, {"$set": {
        "objects.attachment-4.position": 5, "objects.attachment-5.position": 4}})
    out = tmp_path / "b.zip"
    assert _bundle(config, tmp_path, entry["room"], "--bundle", str(out), "--key", str(keys["legal.key.pem"]),
                   "--reason", "case 15", "--no-progress") == 3
    assert not out.exists()


# -- Versions, counts, kinds and tools (review "court" C2, C14, C6, C11) ----------------------------------------------

COURT_CUSTOMER = "393331234567"
COURT_AGENT = "USER_alice@acd.example.com"


def _court_message(room: str, ts: float, user: str, is_agent: bool, text: str | None = None,
                   kind: str = "TEXT") -> dict:
    import uuid

    from bson import ObjectId
    content = {"user": {"id": user, "isAgent": is_agent}, **({"text": text} if text is not None else {})}
    return {"data": {"replyTo": "", "id": str(uuid.uuid4()), "messageType": kind, "content": content, "ts": ts,
                     "deliverySuccess": True, "deliveryErrorReason": "", "messageSeen": None},
            "_id": ObjectId(), "room": room}


def _court_chat(room: str, lines: list[tuple[str, str]], minutes_ago: float = 30, ended: bool = True
                ) -> tuple[dict, dict]:
    """A chat of COURT_CUSTOMER with COURT_AGENT: LINES are (who, text), who 'c' or 'a'; ended unless not ENDED."""
    from test_pipeline import recent_ms
    start = t = recent_ms(minutes_ago)
    body = []
    for who, text in lines:
        t += 30_000
        body.append(_court_message(room, t, COURT_CUSTOMER if who == "c" else COURT_AGENT, who == "a", text))
    if ended:
        t += 30_000
        body.append(_court_message(room, t, COURT_AGENT, True, kind="endChat"))
    chat = {"_id": room, "room": room, "ctlive_type": "chat", "messages": body, "__v": 0}
    contact = {"id": room, "servid": "42", "serv_name": "Billing", "beginTime": start, "endTime": t if ended else None,
               "title": "Chat", "lang": "en", "userID": COURT_CUSTOMER, "agentID": COURT_AGENT,
               "users": {COURT_CUSTOMER: {"nickname": "Mario Rossi"}, COURT_AGENT: {"nickname": "Alice Agent"}},
               "contact_events": [{"event": "newContactAccepted", "ts": start, "origin": "acd"}], "ctlive_type": "chat"}
    return chat, contact


def _court_cli(config, tmp_path: Path, *argv: str) -> int:
    keys = CLI_KEYS + ("source.database", "signing.key") + SIGNING_KEYS  # (export signs transcripts)
    return main(["--config", str(write_toml(tmp_path / "cli.toml", {k: config[k] for k in keys})), *argv])


def _source_chats(config):
    from archiver.mongo import connect
    return connect(config["mongodb.uri"])[config["source.database"]][config["source.chats"]]


def _two_versions(config, room: str = "ROOM_EDIT") -> str:
    """ROOM archived (v1: the customer authorises a transfer), then the platform deletes that message and the
    room is archived again (v2, without it)."""
    from archiver.pipeline import Archiver
    from test_pipeline import seed
    chat, contact = _court_chat(room, [("c", "I authorise the transfer of 5000 EUR"), ("a", "done")])
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    assert archiver.run_pass().archived == 1
    _source_chats(config).update_one({"room": room}, {"$set": {"messages": chat["messages"][1:]}})
    archiver.archive_room(room, "ended")
    return room


def test_a_bundle_by_room_holds_every_version_of_it_and_lists_them(make_config, keys, tmp_path, capsys) -> None:
    """v1 held the customer's authorisation, deleted on the platform before v2: a bundle by room holding v2 alone,
    and saying nothing, hid the very statement in dispute."""
    config = make_config()
    room = _two_versions(config)
    capsys.readouterr()
    bundle = tmp_path / "case.zip"
    assert _court_cli(config, tmp_path, "retrieve", "--bundle", str(bundle), room, "--key",
                      str(keys["legal.key.pem"]), "--reason", "case 2", "--ca", str(keys["ca.crt.pem"]),
                      "--no-progress") == 0
    said = capsys.readouterr().out
    assert f"{room}: 2 versions, all in the bundle: v1 archived (ended), v2 archived (ended)" in said, said
    assert "1 chat(s) in 2 version(s)" in said, said
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        assert "I authorise the transfer" in zf.read(f"rooms/{room}-v1/record.json").decode()
        assert "I authorise the transfer" not in zf.read(f"rooms/{room}-v2/record.json").decode()
    assert {f"rooms/{room}-v{n}/transcript.pdf" for n in (1, 2)} <= names
    custody = zipped_json(bundle, "chain-of-custody.json")
    assert [(r["room"], r["version"], r["kind"]) for r in custody["rooms"]] == [(room, 1, "ended"), (room, 2, "ended")]
    (chat,) = custody["chats"]
    assert chat["room"] == room and [(v["version"], v["status"], v["kind"], v["included"]) for v in chat["versions"]] == [
        (1, "archived", "ended", True), (2, "archived", "ended", True)], chat
    assert custody["versions_not_included"] == []
    # docs/retrieval.md: a bundle room and a retrieved room are the same files: `versions` as `retrieve` writes it.
    assert _court_cli(config, tmp_path, "retrieve", room, "--key", str(keys["legal.key.pem"]), "--out",
                      str(tmp_path / "out"), "--reason", "case 2") == 0
    retrieved = json.loads((tmp_path / "out" / f"{room}-v2" / "verification.json").read_text())
    for version in (1, 2):
        assert zipped_json(bundle, f"rooms/{room}-v{version}/verification.json")["versions"] == retrieved["versions"]
    assert [v["version"] for v in retrieved["versions"]] == [1, 2]
    folder = _unzip(bundle, tmp_path / "u")
    results = _run_readme(folder, keys["ca.crt.pem"])
    assert _passes(results) and sum(out.count("OK rooms/") for _, _, out in results) == 4, results


def test_a_bundle_by_room_names_a_version_the_archive_no_longer_holds(make_config, keys, tmp_path, capsys) -> None:
    """v1 deleted by a retention run (its tombstone): the bundle holds v2 and names v1, with its run, as not in it."""
    from retrieval_helpers import index
    config = make_config()
    room = _two_versions(config)
    index(config).update_one({"room": room, "version": 1}, {"$set": {"status": "deleted", "deletion": {
        "run": "RUN-1", "rule": "default", "state": "done", "at": dt.datetime.now(dt.timezone.utc)}}})
    capsys.readouterr()
    bundle = tmp_path / "case.zip"
    assert _court_cli(config, tmp_path, "retrieve", "--bundle", str(bundle), room, "--key",
                      str(keys["legal.key.pem"]), "--reason", "case 2", "--no-progress") == 0
    said = capsys.readouterr().out
    assert f"{room}: 2 versions, in the bundle: v2; not in it: v1 deleted by run RUN-1 under rule default" in said, said
    assert not any(n.startswith(f"rooms/{room}-v1/") for n in zipfile.ZipFile(bundle).namelist())
    custody = zipped_json(bundle, "chain-of-custody.json")
    assert [(v["version"], v["status"], v["included"]) for v in custody["chats"][0]["versions"]] == [
        (1, "deleted", False), (2, "archived", True)]
    (left,) = custody["versions_not_included"]
    assert (left["room"], left["version"], left["why"]) == (room, 1, "deleted by run RUN-1 under rule default")
    assert f"{room} v1 deleted by run RUN-1 under rule default" in zipped_text(bundle, "README.txt")


def test_a_bundle_by_dates_names_a_later_version_the_window_left_out(make_config, keys, tmp_path, capsys) -> None:
    """Ended on one day (v1), re-opened and ended again later (v2: the customer withdraws the complaint): a
    bundle of that day holds v1 and says, on stdout, in README.txt and in the custody report, that v2 exists."""
    from archiver.pipeline import Archiver
    from test_pipeline import recent_ms, seed
    config = make_config()
    chat, contact = _court_chat("ROOM_LATE", [("c", "I complain"), ("a", "noted")], minutes_ago=24 * 60 * 3)
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    assert archiver.run_pass().archived == 1
    later = recent_ms(30)
    chat["messages"] += [_court_message("ROOM_LATE", later, COURT_CUSTOMER, False, "I withdraw my complaint"),
                         _court_message("ROOM_LATE", later + 30_000, COURT_AGENT, True, kind="endChat")]
    _source_chats(config).replace_one({"room": "ROOM_LATE"}, chat)
    archiver.archive_room("ROOM_LATE", "ended")
    day = dt.datetime.fromtimestamp(contact["endTime"] / 1000, dt.timezone.utc).date().isoformat()
    capsys.readouterr()
    bundle = tmp_path / "case.zip"
    assert _court_cli(config, tmp_path, "retrieve", "--bundle", str(bundle), "--from", day, "--to", day, "--key",
                      str(keys["legal.key.pem"]), "--reason", "case", "--no-progress") == 0
    said = capsys.readouterr().out
    named = "ROOM_LATE v2 archived (ended): not matched by the filters"
    assert "ROOM_LATE: 2 versions, in the bundle: v1; not in it: v2 archived (ended): not matched by the filters" in said
    names = zipfile.ZipFile(bundle).namelist()
    assert any(n.startswith("rooms/ROOM_LATE-v1/") for n in names)
    assert not any(n.startswith("rooms/ROOM_LATE-v2/") for n in names)
    assert named in zipped_text(bundle, "README.txt")
    custody = zipped_json(bundle, "chain-of-custody.json")
    assert [(v["room"], v["version"], v["status"], v["kind"], v["why"]) for v in custody["versions_not_included"]] == [
        ("ROOM_LATE", 2, "archived", "ended", "not matched by the filters")]
    assert [(v["version"], v["included"]) for v in custody["chats"][0]["versions"]] == [(1, True), (2, False)]
    assert [v["version"] for v in zipped_json(bundle, "rooms/ROOM_LATE-v1/verification.json")["versions"]] == [1, 2]


def test_a_bundle_counts_chats_and_versions_apart(make_config, keys, tmp_path, capsys) -> None:
    """One chat in two versions beside one in one: "2 chat(s) in 3 version(s)", not "3 chats"."""
    from archiver.pipeline import Archiver
    from test_pipeline import seed
    config = make_config()
    _two_versions(config)
    seed(config, [_court_chat("ROOM_ONE", [("c", "hello"), ("a", "hi")], minutes_ago=40)])
    assert Archiver(config).run_pass().archived == 1
    capsys.readouterr()
    bundle = tmp_path / "case.zip"
    assert _court_cli(config, tmp_path, "retrieve", "--bundle", str(bundle), "--customer", COURT_CUSTOMER, "--key",
                      str(keys["legal.key.pem"]), "--reason", "case", "--no-progress") == 0
    said = capsys.readouterr().out
    assert f"bundle written: {bundle}  (2 chat(s) in 3 version(s)," in said, said
    assert "This bundle holds 2 archived chat(s) in 3 version(s)" in zipped_text(bundle, "README.txt")
    custody = zipped_json(bundle, "chain-of-custody.json")
    assert (custody["room_count"], custody["version_count"], len(custody["rooms"])) == (2, 3, 3)
    assert "2 chat(s) in 3 version(s)" in audit(config)[-1]["detail"]


def test_the_custody_report_and_each_verification_name_the_archiver_version(make_config, keys, tmp_path) -> None:
    from importlib.metadata import version

    from archiver.pipeline import Archiver
    from test_pipeline import seed
    config = make_config()
    seed(config, [_court_chat("ROOM_A", [("c", "hello"), ("a", "hi")])])
    assert Archiver(config).run_pass().archived == 1
    bundle = tmp_path / "case.zip"
    assert _court_cli(config, tmp_path, "retrieve", "--bundle", str(bundle), "ROOM_A", "--key",
                      str(keys["legal.key.pem"]), "--reason", "case", "--no-progress") == 0
    installed = version("ctlive-archiver")  # the distribution's name (archiver/artifacts.py), not "archiver"
    assert zipped_json(bundle, "chain-of-custody.json")["tools"]["archiver"] == installed
    assert zipped_json(bundle, "rooms/ROOM_A-v1/verification.json")["tools"]["archiver"] == installed


def test_a_bundle_says_which_versions_are_interim_and_its_sha256sum_command_runs(make_config, keys, tmp_path,
                                                                                  capsys) -> None:
    """An interim copy (`export --force` of a running chat) beside an ended chat: the custody report gives each
    version's kind, README and stdout count the interim ones; verification.json's third command is a command."""
    from archiver.pipeline import Archiver
    from test_pipeline import seed
    config = make_config()
    seed(config, [_court_chat("ROOM_OPEN", [("c", "still talking"), ("a", "yes")], ended=False),
                  _court_chat("ROOM_DONE", [("c", "hello"), ("a", "hi")], minutes_ago=40)])
    assert _court_cli(config, tmp_path, "export", "ROOM_OPEN", "--force") == 0
    assert Archiver(config).run_pass().archived == 1
    capsys.readouterr()
    bundle = tmp_path / "case.zip"
    assert _court_cli(config, tmp_path, "retrieve", "--bundle", str(bundle), "ROOM_OPEN", "ROOM_DONE", "--key",
                      str(keys["legal.key.pem"]), "--reason", "case", "--no-progress") == 0
    said = capsys.readouterr().out
    counted = "1 of them interim: not ended when archived"
    assert counted in said and counted in zipped_text(bundle, "README.txt"), said
    custody = zipped_json(bundle, "chain-of-custody.json")
    assert [(r["room"], r["kind"]) for r in custody["rooms"]] == [("ROOM_OPEN", "interim"), ("ROOM_DONE", "ended")]

    room = _unzip(bundle, tmp_path / "u") / "rooms/ROOM_OPEN-v1"
    report = json.loads((room / "verification.json").read_text())
    command = report["check_it_yourself"][2]
    assert command.endswith("sha256sum") and "compare" in " ".join(report["check_it_yourself_notes"])
    (room / "attachments").mkdir()  # a folder beside the files (a room with attachments) is no error
    done = subprocess.run(["bash", "-c", command], cwd=room, capture_output=True, text=True)
    summed = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in done.stdout.splitlines()}
    assert done.returncode == 0 and summed == {n: f["sha256"] for n, f in report["files"].items()}, done


def test_a_bundle_names_the_first_chats_and_versions_and_counts_the_rest(make_config, keys, tmp_path, capsys,
                                                                         monkeypatch) -> None:
    """Stdout and README name at most VERSIONS_NAMED (100) chats with several versions and versions not in the
    bundle, then say how many more and where they all are (the custody report, which names every one)."""
    import archiver.bundle as bundle_module
    from archiver.pipeline import Archiver
    from test_pipeline import recent_ms, seed
    monkeypatch.setattr(bundle_module, "VERSIONS_NAMED", 1)
    config = make_config()
    chats = [_court_chat(room, [("c", "I complain"), ("a", "noted")], minutes_ago=24 * 60 * 3 - i)
             for i, room in enumerate(("ROOM_L1", "ROOM_L2"))]
    seed(config, chats)
    archiver = Archiver(config)
    assert archiver.run_pass().archived == 2
    for chat, _ in chats:  # each re-opened and ended again today: a v2 outside the window
        later = recent_ms(30)
        chat["messages"] += [_court_message(chat["room"], later, COURT_CUSTOMER, False, "I withdraw"),
                             _court_message(chat["room"], later + 30_000, COURT_AGENT, True, kind="endChat")]
        _source_chats(config).replace_one({"room": chat["room"]}, chat)
        archiver.archive_room(chat["room"], "ended")
    first, last = (dt.datetime.fromtimestamp(c["endTime"] / 1000, dt.timezone.utc).date().isoformat()
                   for _, c in chats)
    capsys.readouterr()
    bundle = tmp_path / "case.zip"
    assert _court_cli(config, tmp_path, "retrieve", "--bundle", str(bundle), "--from", first, "--to", last, "--key",
                      str(keys["legal.key.pem"]), "--reason", "case", "--no-progress") == 0
    said = capsys.readouterr().out
    assert "ROOM_L1: 2 versions, in the bundle: v1; not in it: v2" in said and "ROOM_L2: 2 versions" not in said
    assert '  and 1 more chat(s): chain-of-custody.json, "chats"' in said, said
    readme = zipped_text(bundle, "README.txt")
    assert "ROOM_L1 v2 archived (ended)" in readme and "ROOM_L2 v2" not in readme
    assert '  and 1 more: chain-of-custody.json, "versions_not_included"' in readme, readme
    custody = zipped_json(bundle, "chain-of-custody.json")
    assert [(v["room"], v["version"]) for v in custody["versions_not_included"]] == [("ROOM_L1", 2), ("ROOM_L2", 2)]


@pytest.mark.parametrize("audit_too", [False, True])
def test_mongodb_lost_half_way_through_a_bundle_says_so_and_that_it_may_be_retried(archived, keys, tmp_path, capsys,
                                                                                  monkeypatch, audit_too) -> None:
    """Review "court" C7: MongoDB gone while the second room was read: the message was the audit log's, with the
    driver's topology dump, not naming the setting nor saying the command may be retried or that nothing was
    released; AUDIT_TOO: the audit log (in MongoDB too) cannot record the failure either."""
    from pymongo.errors import ServerSelectionTimeoutError

    import archiver.audit as audit_module
    import archiver.bundle as bundle_module

    config, entries = archived
    dump = ("127.0.0.1:27017: [Errno 111] Connection refused (configured timeouts: socketTimeoutMS: 20000.0ms), "
            "Timeout: 10.0s, Topology Description: <TopologyDescription ...>")
    real_find, calls = bundle_module.find_entry, []

    def find_entry(*args, **kwargs):
        calls.append(1)
        if len(calls) >= 2:
            raise ServerSelectionTimeoutError(dump)
        return real_find(*args, **kwargs)

    monkeypatch.setattr(bundle_module, "find_entry", find_entry)
    if audit_too:
        real_record = audit_module.AuditLog.record

        def record(self, *args, **kwargs):
            if len(calls) >= 2:
                raise audit_module.AuditError(f"the audit log could not be written (ServerSelectionTimeoutError: {dump})")
            return real_record(self, *args, **kwargs)
        monkeypatch.setattr(audit_module.AuditLog, "record", record)
    out = tmp_path / "case.zip"
    capsys.readouterr()
    assert _bundle(config, tmp_path, "--bundle", str(out), "--key", str(keys["legal.key.pem"]), "--reason", "case",
                   *[e["room"] for e in entries[:3]]) == 1
    err = capsys.readouterr().err
    assert "MongoDB could not be reached (index.uri, else mongodb.uri: 127.0.0.1:27017: [Errno 111] Connection " \
           "refused" in err and "nothing was released" in err and "may be retried" in err, err
    assert "Topology Description" not in err and not out.exists(), err
    assert ("the audit log could not record this either" in err) == audit_too, err
    if not audit_too:
        assert audit(config)[-1]["outcome"] == "unreachable"


def test_an_index_entry_without_a_version_number_stops_no_bundle_nor_retrieval(archived, keys, tmp_path,
                                                                                 capsys) -> None:
    """Review of the change: a bundle by ROOM lists every version of the room, and one stray entry without a
    version (a hand edit; verify names it as malformed) made it verify every room and then die (KeyError), as it
    made `retrieve --out` die after writing its files. Such an entry is no version of the room."""
    from retrieval_helpers import index

    config, entries = archived
    room = entries[0]["room"]
    for odd in ({"room": room, "status": "uploading", "source_sha256": "a"},
                {"room": room, "version": "2", "status": "uploading", "source_sha256": "b"}):
        index(config).insert_one(dict(odd))
    out = tmp_path / "case.zip"
    assert _bundle(config, tmp_path, "--bundle", str(out), "--key", str(keys["legal.key.pem"]), "--reason", "case",
                   room) == 0, capsys.readouterr()
    custody = zipped_json(out, "chain-of-custody.json")
    assert [v["version"] for chat in custody["chats"] for v in chat["versions"]] == [entries[0]["version"]], custody
    assert _bundle(config, tmp_path, room, "--key", str(keys["legal.key.pem"]), "--out", str(tmp_path / "o"),
                   "--reason", "case") == 0


def test_a_bundle_by_agent_records_what_agent_may_miss(make_config, keys, tmp_path, capsys) -> None:
    """Review today3 #5: entries indexed before `present` that --agent may miss are recorded in the bundle
    (chain-of-custody.json, selection.agent_unindexed; README.txt's list of what it does not hold), not only
    said on stdout; without such entries nothing is recorded."""
    from retrieval_helpers import index
    from test_present import BOB, _cli, _transferred

    config = make_config()
    older, _ = _transferred(config)  # archived before `present`: the field is absent
    argv = ("retrieve", "--key", str(keys["legal.key.pem"]), "--reason", "HR 12", "--no-progress", "--agent", BOB)
    assert _cli(config, tmp_path, *argv, "--bundle", str(tmp_path / "a.zip")) == 0
    assert "selection.agent_unindexed" not in zipped_text(tmp_path / "a.zip", "README.txt")
    assert "agent_unindexed" not in json.loads(zipped_text(tmp_path / "a.zip", "chain-of-custody.json"))["selection"]
    index(config).update_many({}, {"$unset": {"present": ""}})
    _transferred(config, rng_seed=5)  # archived today: found by present
    capsys.readouterr()
    assert _cli(config, tmp_path, *argv, "--bundle", str(tmp_path / "c.zip")) == 0
    out = capsys.readouterr().out
    custody = json.loads(zipped_text(tmp_path / "c.zip", "chain-of-custody.json"))
    readme = " ".join(zipped_text(tmp_path / "c.zip", "README.txt").split())
    assert older["room"] not in [r["room"] for r in custody["rooms"]]  # (the chat it may miss)
    missed = custody["selection"]["agent_unindexed"]
    assert missed["count"] == 1 and missed["note"].startswith("1 archived entry was indexed before `present`"), missed
    assert "selection.agent_unindexed" in custody["completeness"], custody["completeness"]
    assert ("WHAT THIS BUNDLE DOES NOT HOLD (chain-of-custody.json: not_archived, text_unsearchable, "
            "selection.agent_unindexed) ") in readme, readme
    assert "--agent: 1 archived entry was indexed before `present`" in readme, readme
    assert "--agent: 1 archived entry was indexed before `present`" in out, out  # stdout says what README.txt says
