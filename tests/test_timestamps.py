"""PAdES B-T: signatures carry an RFC 3161 timestamp from a real authority over HTTP (tests/tsa.py).

pdfsig 22.12 (Debian 12) prints no timestamp line, so the timestamp is shown with
tools we did not write: `pdfsig -dump` extracts the signature's CMS, `openssl cms
-cmsout -print` shows its timeStampToken attribute, and `openssl ts -verify`
checks that token against the signature value it stamps.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import subprocess
from io import BytesIO
from pathlib import Path

import pytest
from asn1crypto import cms

from archiver import timestamps
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from conftest import require_tool
from test_pipeline import entries, job, open_object, recent_ms, seed


def _archive_one(config, rng_seed: int = 3):
    chat, contact = make_chat(random.Random(rng_seed), messages=6, start_ms=recent_ms())
    seed(config, [(chat, contact)])
    return chat["room"], Archiver(config).run_pass()


def test_a_pdf_archived_with_a_timestamp_authority_is_b_t(make_config, keys, tsa, tmp_path: Path) -> None:
    require_tool("pdfsig")
    config = make_config(signing__timestamp_url=tsa.url)
    asked = len(tsa.requests)
    room, report = _archive_one(config)
    assert report.archived == 1, report
    assert len(tsa.requests) > asked  # the authority was really asked
    (entry,) = entries(config)
    pdf = tmp_path / "transcript.pdf"
    pdf.write_bytes(open_object(config, keys, entry["objects"]["pdf"]))

    listed = subprocess.run(["pdfsig", str(pdf)], capture_output=True, text=True, check=True).stdout
    assert "Signature Type: ETSI.CAdES.detached" in listed and "Signature is Valid" in listed
    signature, printed = _dumped_signature(pdf, tmp_path)
    assert "id-smime-aa-timeStampToken" in printed

    # The token stamps the signature value (CAdES-T): openssl checks it against the TSA's root.
    signer = cms.ContentInfo.load(signature.read_bytes())["content"]["signer_infos"][0]
    token = signer["unsigned_attrs"][0]["values"][0]
    (tmp_path / "value").write_bytes(signer["signature"].native)
    (tmp_path / "token.der").write_bytes(token.dump())
    verified = subprocess.run(["openssl", "ts", "-verify", "-data", str(tmp_path / "value"), "-in",
                               str(tmp_path / "token.der"), "-token_in", "-CAfile", str(tsa.ca_pem)],
                              capture_output=True, text=True)
    assert verified.returncode == 0 and "Verification: OK" in verified.stdout, verified.stderr

    # pyHanko's validator sees the timestamp too
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature

    from pyhanko_certvalidator import ValidationContext

    context = ValidationContext(trust_roots=[], allow_fetching=False)
    status = validate_pdf_signature(PdfFileReader(BytesIO(pdf.read_bytes())).embedded_signatures[0], context,
                                    context)
    assert status.intact and status.valid and status.timestamp_validity is not None
    assert status.timestamp_validity.intact and status.timestamp_validity.valid


def test_retrieval_reports_when_the_pdf_signature_was_timestamped(make_config, keys, tsa) -> None:
    from archiver.envelope import RecipientKey
    from archiver.integrity import check_content, check_stored
    from archiver.store import open_store

    config = make_config(signing__timestamp_url=tsa.url)
    _archive_one(config)
    (entry,) = entries(config)
    opened = check_content(check_stored(entry, open_store(config)),
                           RecipientKey.load(str(keys["legal.key.pem"]), config["encryption.recipients"]))
    (stamp,) = [c for c in opened.checks if "timestamp" in c.check]
    assert opened.ok and stamp.ok and "Test Timestamp Authority" in stamp.detail


def test_without_a_timestamp_authority_the_signature_is_b_b(make_config, keys, tmp_path: Path) -> None:
    """The control for the test above: the same checks find no timestamp when none is configured."""
    config = make_config()
    _archive_one(config)
    (entry,) = entries(config)
    pdf = tmp_path / "transcript.pdf"
    pdf.write_bytes(open_object(config, keys, entry["objects"]["pdf"]))
    signature, printed = _dumped_signature(pdf, tmp_path)
    assert "id-smime-aa-timeStampToken" not in printed


@pytest.mark.parametrize("path, reason", [
    ("/garbage", "unusable answer"),
    ("/wrong-imprint", "does not cover the digest we sent"),
    ("/skewed", "behind our clock"),
    ("/ahead", "ahead of our clock"),
    ("/refuse", "unusable answer"),
])
def test_a_bad_timestamp_answer_fails_the_chat_for_a_retry(make_config, tsa, path: str, reason: str) -> None:
    config = make_config(signing__timestamp_url=tsa.at(path), archive__retry_backoff_seconds=0)
    room, report = _archive_one(config)
    assert report.archived == 0 and not report.quarantined
    assert reason in report.failed[room] and tsa.at(path) in report.failed[room]
    assert entries(config, status="archived") == []  # never archived as B-B instead
    assert job(config, room)["state"] == "failed"

    # the authority behaves again: the next pass archives the chat, with its timestamp
    fixed = config.with_overrides(**{"signing.timestamp_url": tsa.url})
    again = Archiver(fixed).run_pass()
    assert again.archived == 1 and [e["room"] for e in entries(fixed, status="archived")] == [room]


def test_an_unreachable_authority_fails_every_attempt_and_never_quarantines(make_config) -> None:
    from conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    config = make_config(signing__timestamp_url=url, archive__retry_backoff_seconds=0, archive__max_attempts=2)
    room, report = _archive_one(config)
    assert "unreachable" in report.failed[room]
    for _ in range(3):  # past archive.max_attempts: an outage is not the chat's fault
        report = Archiver(config).run_pass()
        assert room in report.failed and not report.quarantined
    assert entries(config, status="archived") == []


def test_a_token_is_checked_against_the_digest_and_the_clock(tsa) -> None:
    good = timestamps.timestamp(timestamps.timestamper(tsa.url, 300), b"evidence")
    token = cms.ContentInfo.load(good)
    digest = hashlib.sha256(b"evidence").digest()
    timestamps.check_token(token, digest, "sha256", None)
    with pytest.raises(timestamps.TimestampError, match="wrong message imprint"):
        timestamps.check_token(token, hashlib.sha256(b"other").digest(), "sha256", None)
    with pytest.raises(timestamps.TimestampError, match="wrong message imprint"):
        timestamps.check_token(token, digest, "sha512", None)
    # A stamper tolerant enough accepts the authorities whose clocks are two days off, behind or ahead; checked
    # against signing.timestamp_max_skew_seconds (300 s), their tokens are refused, naming the token's time and
    # which way it is off (the archive pass's refusal: test_a_bad_timestamp_answer_fails_the_chat_for_a_retry).
    tolerant = 3 * 86400
    for path, off, way in (("/skewed", -2 * 86400, "behind our clock"), ("/ahead", 2 * 86400, "ahead of our clock")):
        skewed = cms.ContentInfo.load(timestamps.timestamp(timestamps.timestamper(tsa.at(path), tolerant), b"x"))
        stamped = timestamps.token_time(skewed.dump())
        assert abs((stamped - timestamps.token_time(good)).total_seconds() - off) < 0.1 * 86400
        with pytest.raises(timestamps.TimestampError, match=way) as refused:
            timestamps.check_token(skewed, hashlib.sha256(b"x").digest(), "sha256", dt.timedelta(seconds=300))
        assert f"its time {stamped.isoformat()} is " in str(refused.value)


def test_no_url_means_no_timestamper() -> None:
    assert timestamps.timestamper("", 300) is None


def _dumped_signature(pdf: Path, tmp_path: Path) -> tuple[Path, str]:
    """PDF's signature as `pdfsig -dump` writes it, and what `openssl cms -print` says of it."""
    dump = tmp_path / "dump"
    dump.mkdir()
    subprocess.run(["pdfsig", "-dump", str(pdf)], cwd=dump, check=True, capture_output=True)
    (signature,) = dump.glob("*.sig*")
    printed = subprocess.run(["openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(signature)],
                             capture_output=True, text=True, check=True).stdout
    return signature, printed
