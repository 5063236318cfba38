"""A signing certificate that expires while the archiver runs: nothing is signed after its notAfter.

The certificates are checked when the keys load; these tests let one expire after that, during a pass,
a render and an export, and before a worker process starts.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import time
from io import BytesIO
from pathlib import Path

import pytest
from asn1crypto import cms
from bson import json_util
from pyhanko.pdf_utils.reader import PdfFileReader

from archiver import certificates
from archiver.artifacts import ArtifactBuilder
from archiver.certificates import NotValidNow
from archiver.envelope import decrypt
from archiver.mongo import connect
from archiver.offline import render_file
from archiver.pipeline import WORKER_DIED, Archiver
from archiver.samples import make_chat
from archiver.store import open_store
from certfactory import Made, ago, ahead, make

SIGNING_USAGES = ("digital_signature", "content_commitment")


def _signer(tmp_path: Path, seconds: float) -> Made:
    return make(tmp_path / "s", "Signer", usages=SIGNING_USAGES, ec_key=True, not_after=ahead(seconds=seconds))


def _sleep_past(made: Made) -> None:
    time.sleep(max(0.0, (made.cert.not_valid_after_utc - ahead()).total_seconds()) + 1.1)


def _expired_reason(made: Made, setting: str = "signing.certificate") -> str:
    return f"{setting}: {made.cert_path}: CN=Signer: expired on "


def _signing_times(pdf: bytes, record_signature: bytes) -> list[dt.datetime]:
    """When the PDF's signature (its /M) and the record's detached CMS (its signingTime) say they were made."""
    pdf_time = PdfFileReader(BytesIO(pdf)).embedded_signatures[0].self_reported_timestamp
    signer_info = cms.ContentInfo.load(record_signature)["content"]["signer_infos"][0]
    record_time = next(a["values"][0].native for a in signer_info["signed_attrs"] if a["type"].native == "signing_time")
    assert pdf_time is not None
    return [pdf_time, record_time]


def _chats(config, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    chats = [make_chat(rng, messages=3)[0] for _ in range(count)]
    connect(config["mongodb.uri"])[config["source.database"]].chats.insert_many(chats)
    return [c["room"] for c in chats]


def test_a_certificate_that_expires_during_a_pass_signs_nothing_after_its_not_after(
        tmp_path, make_config, keys) -> None:
    signer = _signer(tmp_path, 12)  # room for the worker process to start and sign the first chats on a busy host
    config = make_config(signing__certificate=str(signer.cert_path), signing__key=str(signer.key_path),
                         archive__batch_size=2, archive__max_attempts=1)
    rooms = _chats(config, 10, seed=5)
    archiver = Archiver(config)
    paused: list[int] = []

    def pause_once(report) -> None:  # after the first chats are indexed, the certificate expires
        if not paused:
            paused.append(report.archived)
            _sleep_past(signer)

    report = archiver.run_pass(progress=pause_once)
    assert paused and paused[0] > 0, "the pass began while the certificate was valid"
    assert 0 < report.archived < len(rooms) and not report.quarantined
    assert report.archived + len(report.failed) == len(rooms)
    # The chats built after notAfter failed, to be retried (a renewed certificate archives them), each saying why.
    reasons = set(report.failed.values())
    assert len(reasons) == 1 and next(iter(reasons)).startswith(_expired_reason(signer)), reasons
    assert f"{signer.cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC" in next(iter(reasons))
    jobs = connect(config["mongodb.uri"])[config["index.database"]][config["index.jobs"]]
    assert {j["_id"]: (j["state"], j["attempts"]) for j in jobs.find({"_id": {"$in": list(report.failed)}})} == \
        {room: ("failed", 0) for room in report.failed}, "the certificate's failure, not counted against the chats"
    # What was archived was signed before notAfter: the PDF's and the record's own signing times say so.
    store = open_store(config)
    entries = list(archiver.index.entries.find())
    assert [e["status"] for e in entries] == ["archived"] * report.archived  # no entry left half-way
    legal = keys["legal.crt.pem"].read_bytes(), keys["legal.key.pem"].read_bytes()
    for entry in entries:
        plain = {name: decrypt(store.get(obj["key"], obj["version_id"]), *legal)
                 for name, obj in entry["objects"].items()}
        for when in _signing_times(plain["pdf"], plain["record_signature"]):
            assert when <= signer.cert.not_valid_after_utc, (entry["room"], when)
        assert json.loads(plain["record"])["room"] == entry["room"]
    assert len(list(store.keys(""))) == 3 * report.archived  # nothing stored for the refused chats


def test_a_worker_started_after_expiry_fails_its_chats_naming_the_certificate(tmp_path, make_config) -> None:
    signer = _signer(tmp_path, 5)  # room for Archiver() to load it while valid on a busy host
    config = make_config(signing__certificate=str(signer.cert_path), signing__key=str(signer.key_path),
                         archive__max_attempts=1)
    rooms = _chats(config, 2, seed=3)
    archiver = Archiver(config)  # the keys are checked: valid
    _sleep_past(signer)
    report = archiver.run_pass()  # its worker process loads the keys now
    assert report.archived == 0 and not report.quarantined and set(report.failed) == set(rooms)
    for reason in report.failed.values():
        assert reason != WORKER_DIED and _expired_reason(signer) in reason, reason
    assert report.worker_deaths == 0
    assert archiver.index.entries.count_documents({}) == 0


def test_a_worker_whose_keys_cannot_load_says_why_not_out_of_memory(tmp_path, make_config) -> None:
    signer = _signer(tmp_path, 3600)
    config = make_config(signing__certificate=str(signer.cert_path), signing__key=str(signer.key_path),
                         archive__max_attempts=1, archive__retry_backoff_seconds=0)
    rooms = _chats(config, 1, seed=4)
    archiver = Archiver(config)
    archiver.keep_workers = True  # as in `serve`
    key = signer.key_path.read_bytes()
    signer.key_path.unlink()  # gone after start-up (a botched renewal, say)
    report = archiver.run_pass()
    assert report.archived == 0 and not report.quarantined and set(report.failed) == set(rooms)
    reason = report.failed[rooms[0]]
    assert reason.startswith(f"the worker process could not start: signing.key {signer.key_path}: cannot read"), reason
    assert report.worker_deaths == 0
    # Its file back, the next pass archives the chat: in a new worker process, not one that could not start.
    signer.key_path.write_bytes(key)
    report = archiver.run_pass()
    archiver.close()
    assert report.archived == 1 and not report.failed, report.failed


def test_an_export_whose_worker_finds_an_expired_certificate_names_it(tmp_path, make_config) -> None:
    signer = _signer(tmp_path, 3600)
    config = make_config(signing__certificate=str(signer.cert_path), signing__key=str(signer.key_path),
                         archive__max_attempts=1)
    [room] = _chats(config, 1, seed=6)
    archiver = Archiver(config)  # what `archiver export` does, then archive_room
    expired = make(tmp_path / "old", "Signer", usages=SIGNING_USAGES, ec_key=True, not_before=ago(days=9),
                   not_after=ago(days=1))
    signer.cert_path.write_bytes(expired.cert_path.read_bytes())  # as its worker process finds it
    report, plain = archiver.archive_room(room, "ended")
    assert plain is None and report.archived == 0 and not report.quarantined
    reason = report.failed[room]
    assert reason.startswith(f"the worker process could not start: {_expired_reason(signer)}"), reason


def test_a_render_signs_nothing_once_the_certificate_expires(tmp_path, make_config) -> None:
    signer = _signer(tmp_path, 6)  # room to render the first chat while it is valid on a busy host
    config = make_config(signing__certificate=str(signer.cert_path), signing__key=str(signer.key_path))
    rng = random.Random(7)
    source = tmp_path / "chats.jsonl"
    source.write_text("".join(json_util.dumps(make_chat(rng, messages=3)[0]) + "\n" for _ in range(3)))
    out = tmp_path / "out"
    outcome = render_file(config, source, out, on_line=lambda line: _sleep_past(signer))  # expires after the first
    assert outcome.rendered == 1 and len(outcome.problems) == 2, outcome.problems
    for n, problem in enumerate(outcome.problems, 2):
        assert problem.startswith(f"document {n} (line {n}): {_expired_reason(signer)}"), problem
    [pdf] = out.glob("*.pdf")
    [p7s] = out.glob("*.json.p7s")
    assert all(when <= signer.cert.not_valid_after_utc for when in _signing_times(pdf.read_bytes(), p7s.read_bytes()))


# -- the check itself, with the clock it reads set (archiver.certificates.now) -------------------------------

def _builder_and_chat(config):
    chat, contact = make_chat(random.Random(8), messages=3)
    return ArtifactBuilder.from_config(config), chat, contact


def test_signatures_finished_after_not_after_are_dropped(tmp_path, make_config, monkeypatch) -> None:
    signer = _signer(tmp_path, 3600)
    config = make_config(signing__certificate=str(signer.cert_path), signing__key=str(signer.key_path))
    builder, chat, contact = _builder_and_chat(config)
    real_now, calls = certificates.now, []

    def clock() -> dt.datetime:  # valid when the chat is begun, expired once it is signed
        calls.append(1)
        return real_now() if len(calls) == 1 else signer.cert.not_valid_after_utc + dt.timedelta(seconds=1)

    monkeypatch.setattr(certificates, "now", clock)
    with pytest.raises(NotValidNow, match=f"^{re.escape(_expired_reason(signer))}"):
        builder.build(chat, contact, "ended", 1, dt.datetime.now(dt.timezone.utc))
    assert len(calls) == 2


def test_a_recipient_that_expired_since_loading_is_refused(tmp_path, make_config, monkeypatch) -> None:
    legal = make(tmp_path / "l", "Legal", not_after=ahead(hours=1))
    config = make_config(encryption__recipients=[str(legal.cert_path)])
    builder, chat, contact = _builder_and_chat(config)
    monkeypatch.setattr(certificates, "now", lambda: legal.cert.not_valid_after_utc + dt.timedelta(seconds=1))
    with pytest.raises(NotValidNow, match="^encryption.recipients: CN=Legal: expired on "):
        builder.build(chat, contact, "ended", 1, dt.datetime.now(dt.timezone.utc))


def test_a_timestamp_dated_after_not_after_is_refused(tmp_path, make_config, tsa) -> None:
    # The authority's clock may be signing.timestamp_max_skew_seconds from ours: its token's own time is checked.
    signer = _signer(tmp_path, 86400)  # valid for a day; /ahead stamps two days ahead
    config = make_config(signing__certificate=str(signer.cert_path), signing__key=str(signer.key_path),
                         signing__timestamp_url=tsa.at("/ahead"), signing__timestamp_max_skew_seconds=3 * 86400.0)
    builder, chat, contact = _builder_and_chat(config)
    with pytest.raises(NotValidNow) as refused:
        builder.plaintext(chat, contact, "ended", 1, certificates.now())
    not_after = f"{signer.cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
    assert str(refused.value).startswith(f"{_expired_reason(signer)}{not_after} (its notAfter, by the time of its "
                                         "timestamp, ")
    # Stamped now, the same certificate signs.
    config = make_config(signing__certificate=str(signer.cert_path), signing__key=str(signer.key_path),
                         signing__timestamp_url=tsa.url)
    builder, chat, contact = _builder_and_chat(config)
    assert builder.plaintext(chat, contact, "ended", 1, certificates.now()).pdf.startswith(b"%PDF")


# -- deletion run reports and seals: signed, at their end, only within the certificate's validity -------------------

def _expiring_during(monkeypatch, owner, name: str, made: Made) -> list[str]:
    """OWNER.NAME, wrapped: its first call waits until MADE has expired (as a long run would)."""
    real, calls = getattr(owner, name), []

    def late(*args, **kwargs):
        if not calls:
            calls.append(name)
            _sleep_past(made)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, late)
    return calls


def _signed_objects(config, prefix: str) -> list[Path]:
    return sorted((Path(config["storage.url"].removeprefix("file://")) / prefix).rglob("*.p7s"))


@pytest.mark.parametrize("kind", ["retention", "erasure"])
def test_a_deletion_run_whose_certificate_expires_is_left_unfinished_and_finished_by_the_next(
        kind, tmp_path, make_config, keys, monkeypatch, capsys) -> None:
    """Its report is not signed after notAfter: the command says so (exit 1: it deleted, its report is missing),
    naming the certificate and its notAfter; the run stays `reporting`, and the next one, with a renewed
    certificate, signs and stores its report, once the run's plan (signed by the expired certificate) is
    vouched for by signing.former_certificates (without, or with a mere trust anchor, it is refused: docs/retention.md)."""
    from archiver.cli import main
    from archiver.retention import Deletions
    from retention_helpers import age, archive, customer_of, retention_config
    from test_retention import _cli_toml

    config = retention_config(make_config)
    chats = archive(config, 2)
    age(config, 40)  # past the default rule's source_days
    renewed = _cli_toml(config, tmp_path)
    made = _signer(tmp_path, 4)
    expiring = tmp_path / "expiring.toml"
    expiring.write_text(renewed.read_text().replace(str(keys["signing.crt.pem"]), str(made.cert_path))
                        .replace(str(keys["signing.key.pem"]), str(made.key_path)))
    argv = (["retention", "run"] if kind == "retention" else
            ["erase", "--customer", customer_of(chats[0]), "--reason", "GDPR request 4"])
    calls = _expiring_during(monkeypatch, Deletions, "_execute", made)
    assert main(["--config", str(expiring), *argv]) == 1
    assert calls, "the run began while the certificate was valid"
    err = capsys.readouterr().err
    assert _expired_reason(made) in err and "(its notAfter)" in err and "not finished" in err, err
    runs = connect(config["mongodb.uri"])[config["index.database"]][config["index.retention_runs"]]
    (run,) = runs.find({"kind": kind})
    assert run["state"] == "reporting" and "report" not in run
    assert _signed_objects(config, f".reports/{kind}") == []  # nothing signed after notAfter
    monkeypatch.undo()
    # renewed: its plan was signed by the expired certificate, which the renewed one cannot vouch for by itself
    assert main(["--config", str(renewed), *argv]) == 1
    err = capsys.readouterr().err
    assert f"run {run['_id']} was not planned by this service" in err and "signing.former_certificates" in err, err
    assert runs.find_one({"_id": run["_id"]})["state"] == "reporting"
    # a trust anchor the expired certificate chains to vouches for nothing here (a CA issues many certificates)
    anchored = renewed.read_text().replace("[signing]\n", f"[signing]\ntrust_anchors = ['{made.cert_path}']\n")
    renewed.write_text(anchored)
    assert main(["--config", str(renewed), *argv]) == 1
    assert f"run {run['_id']} was not planned by this service" in capsys.readouterr().err
    # listed among this service's former signing certificates, the run is finished
    renewed.write_text(renewed.read_text().replace("[signing]\n",
                                                   f"[signing]\nformer_certificates = ['{made.cert_path}']\n"))
    assert main(["--config", str(renewed), *argv]) == 0  # the same run is finished, not another one made
    assert f"resumed run {run['_id']}" in capsys.readouterr().out
    assert runs.find_one({"_id": run["_id"]})["state"] == "done" and runs.count_documents({"kind": kind}) == 1
    assert len(_signed_objects(config, f".reports/{kind}")) == 1


def test_a_seal_is_not_signed_after_its_certificate_expired(tmp_path, make_config, monkeypatch) -> None:
    """seal_days loads the signing key once for every day it seals: a day reached after notAfter fails, naming the
    certificate, and no seal of it is stored or recorded."""
    from archiver import seals
    from test_seals import DAY, backdate, built_on, seal_records
    from retrieval_helpers import archive_samples

    config = make_config()
    with built_on():
        archive_samples(config, count=2)
    backdate(config)
    made = _signer(tmp_path, 4)
    expiring = make_config(signing__certificate=str(made.cert_path), signing__key=str(made.key_path))
    calls = _expiring_during(monkeypatch, seals, "current_leaves", made)
    (outcome,) = seals.seal_days(expiring, [DAY.isoformat()], seals.Actor("test", "host"))
    assert calls
    assert outcome.action == "failed", outcome
    assert any(_expired_reason(made) in p and "(its notAfter)" in p for p in outcome.problems), outcome.problems
    assert seal_records(config) == [] and _signed_objects(config, seals.PREFIX) == []


def test_a_bundle_is_not_signed_after_its_certificate_expired(tmp_path, make_config, keys, monkeypatch,
                                                              capsys) -> None:
    """The bundle's SHA256SUMS is signed once every room is checked and written: a certificate expired by then
    means no bundle (exit 2, as when it had expired before the command), named and audited."""
    from archiver import bundle
    from archiver.cli import main
    from conftest import write_toml
    from retrieval_helpers import CLI_KEYS, archive_samples, audit

    config = make_config()
    (entry, *_) = archive_samples(config, count=2)
    made = _signer(tmp_path, 4)
    toml = write_toml(tmp_path / "cli.toml", {**{k: config[k] for k in CLI_KEYS},  # the manifest's own signer:
                                              "bundle.signing_certificate": str(made.cert_path),
                                              "bundle.signing_key": str(made.key_path)})
    calls = _expiring_during(monkeypatch, bundle, "_custody", made)
    out = tmp_path / "b.zip"
    assert main(["--config", str(toml), "retrieve", entry["room"], "--bundle", str(out), "--key",
                 str(keys["legal.key.pem"]), "--reason", "case 7", "--no-progress"]) == 2
    assert calls
    err = capsys.readouterr().err
    assert _expired_reason(made, "bundle.signing_certificate") in err and "(its notAfter)" in err, err
    assert not out.exists() and not list(tmp_path.glob(".b.zip*"))
    last = audit(config)[-1]
    assert last["outcome"] == "failed" and _expired_reason(made, "bundle.signing_certificate") in last["detail"]


def test_a_seal_timestamped_after_its_certificate_expired_is_not_stored(tmp_path, make_config, tsa) -> None:
    """The authority's clock may be signing.timestamp_max_skew_seconds from ours: a seal whose token is dated
    after the signer's notAfter (a validator checks the signature at that time) fails its day, naming it."""
    from archiver import seals
    from test_seals import DAY, backdate, built_on, seal_records
    from retrieval_helpers import archive_samples

    config = make_config()
    with built_on():
        archive_samples(config, count=2)
    backdate(config)
    signer = _signer(tmp_path, 86400)  # valid for a day; /ahead stamps two days ahead
    ahead_tsa = make_config(signing__certificate=str(signer.cert_path), signing__key=str(signer.key_path),
                            signing__timestamp_url=tsa.at("/ahead"), signing__timestamp_max_skew_seconds=3 * 86400.0)
    (outcome,) = seals.seal_days(ahead_tsa, [DAY.isoformat()], seals.Actor("test", "host"))
    assert outcome.action == "failed", outcome
    assert any(f"{_expired_reason(signer)}" in p and "by the time of its timestamp" in p for p in outcome.problems), \
        outcome.problems
    assert seal_records(config) == [] and _signed_objects(config, seals.PREFIX) == []
    on_time = ahead_tsa.with_overrides(signing__timestamp_url=tsa.url, signing__timestamp_max_skew_seconds=300.0)
    (outcome,) = seals.seal_days(on_time, [DAY.isoformat()], seals.Actor("test", "host"))
    assert outcome.action != "failed", outcome
    assert len(seal_records(config)) == 1


# -- chats failed by the archiver's own certificate are not counted against them ----------------------------------

def _fails_room(room: str, chat, *args, **kwargs):
    """In a worker process: archive_in_worker, except that ROOM's build fails as a renderer bug would."""
    if chat["room"] == room:
        raise ValueError(f"a bug while rendering {room}")
    from archiver import artifacts
    return artifacts.archive_in_worker(chat, *args, **kwargs)


def test_chats_failed_by_an_expired_certificate_are_archived_by_the_first_pass_after_renewal(
        tmp_path, make_config, monkeypatch) -> None:
    """Not the chats' fault: no attempt counted, no backoff (archive.retry_backoff_seconds is left at its 60 s),
    the failure still reported and logged; a chat that then fails for its own reason backs off as before."""
    import functools
    from archiver import artifacts, pipeline

    signer = _signer(tmp_path, 5)  # room for Archiver() to load it while valid on a busy host
    config = make_config(signing__certificate=str(signer.cert_path), signing__key=str(signer.key_path))
    rooms = _chats(config, 3, seed=12)
    jobs = connect(config["mongodb.uri"])[config["index.database"]][config["index.jobs"]]
    archiver = Archiver(config)
    _sleep_past(signer)
    events: list[tuple[str, dict]] = []
    monkeypatch.setattr(pipeline, "event", lambda name, level=0, **fields: events.append((name, fields)))
    report = archiver.run_pass()
    assert report.archived == 0 and not report.quarantined and set(report.failed) == set(rooms)
    assert all(_expired_reason(signer) in reason for reason in report.failed.values()), report.failed
    logged = {fields["room"]: fields["error"] for name, fields in events if name == "failed"}
    assert logged == report.failed
    assert {j["_id"]: (j["state"], j["attempts"]) for j in jobs.find()} == {room: ("failed", 0) for room in rooms}
    assert all(_expired_reason(signer) in j["last_error"] for j in jobs.find())
    for _ in range(2):  # still expired: each pass fails them, none is counted
        assert set(archiver.run_pass().failed) == set(rooms)
    assert {j["attempts"] for j in jobs.find()} == {0}

    make(tmp_path / "s", "Signer", usages=SIGNING_USAGES, ec_key=True)  # renewed, in the same files
    renewed = Archiver(config)  # the next `archiver run`
    monkeypatch.setattr(artifacts, "archive_in_worker", functools.partial(_fails_room, rooms[0]))
    report = renewed.run_pass()
    assert report.archived == 2 and list(report.failed) == [rooms[0]], report.failed
    failed = jobs.find_one({"_id": rooms[0]})
    assert (failed["state"], failed["attempts"]) == ("failed", 1) and "a bug while rendering" in failed["last_error"]
    monkeypatch.undo()
    assert Archiver(config).run_pass().handled == 0, "its own failure backs off: not retried within 60 s"
    assert jobs.find_one({"_id": rooms[0]})["state"] == "failed"
