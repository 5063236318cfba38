"""RFC 3161 tokens that look right but are not: another nonce than ours, or signed by the authority's CA itself
(a CA certificate without the timeStamping extended key usage, which `openssl ts -verify` refuses whatever
trust anchor it is given). tests/tsa.py serves both."""

from __future__ import annotations

import subprocess

import pytest

from archiver.pipeline import Archiver
from conftest import require_tool
from retrieval_helpers import archive_samples
from test_pipeline import entries, job
from test_seals import DAY, backdate, built_on, seal_cli
from test_signers import cli
from test_timestamps import _archive_one


def test_an_answer_to_another_nonce_fails_the_chat_for_a_retry(make_config, tsa) -> None:
    config = make_config(signing__timestamp_url=tsa.at("/wrong-nonce"), archive__retry_backoff_seconds=0)
    room, report = _archive_one(config)
    assert report.archived == 0 and not report.quarantined
    assert "answers another nonce than our request's" in report.failed[room] and tsa.at("/wrong-nonce") in report.failed[room], report.failed
    assert entries(config, status="archived") == [] and job(config, room)["state"] == "failed"
    again = Archiver(config.with_overrides(**{"signing.timestamp_url": tsa.url})).run_pass()
    assert again.archived == 1


def test_openssl_refuses_a_token_signed_by_the_authoritys_ca(tsa, tmp_path) -> None:
    """What the verifier below must agree with: a tool we did not write."""
    from pyhanko.sign.timestamps.requests_client import RequestsHTTPTimeStamper

    from archiver import timestamps

    require_tool("openssl")
    (tmp_path / "data").write_bytes(b"evidence")
    for path, verdict in (("/", 0), ("/by-ca", 1)):
        stamper = RequestsHTTPTimeStamper(tsa.at(path))  # pyHanko's, which takes it
        (tmp_path / "token").write_bytes(timestamps.timestamp(stamper, b"evidence"))
        done = subprocess.run(["openssl", "ts", "-verify", "-data", str(tmp_path / "data"), "-in",
                               str(tmp_path / "token"), "-token_in", "-CAfile", str(tsa.ca_pem)],
                              capture_output=True, text=True)
        assert done.returncode == verdict, (path, done.stdout, done.stderr)


def test_a_token_signed_by_no_timestamp_authoritys_certificate_fails_the_chat_for_a_retry(make_config, tsa) -> None:
    """Checked on arrival: embedded, it would fail `openssl ts -verify` in every bundle's README for good."""
    config = make_config(signing__timestamp_url=tsa.at("/by-ca"), archive__retry_backoff_seconds=0)
    room, report = _archive_one(config)
    assert report.archived == 0 and not report.quarantined
    assert ("signed by CN=Test Timestamp Root, which is a CA certificate, not a timestamp authority's own"
            in report.failed[room]), report.failed
    assert entries(config, status="archived") == [] and job(config, room)["state"] == "failed"


def test_a_token_without_its_signers_certificate_fails_the_chat_for_a_retry(make_config, tsa) -> None:
    """We ask for it (certReq): without it no verifier can tell who stamped, nor `openssl ts -verify` check it."""
    config = make_config(signing__timestamp_url=tsa.at("/no-certs"), archive__retry_backoff_seconds=0)
    room, report = _archive_one(config)
    assert report.archived == 0 and not report.quarantined
    assert "the token carries no certificate of its signer" in report.failed[room], report.failed


def test_verify_refuses_a_seal_timestamp_signed_by_the_anchor_ca_itself(make_config, keys, tsa, tmp_path, capsys,
                                                                         monkeypatch) -> None:
    """A token of the anchor's own key, not of a timestamping certificate it issued (a seal made before the
    archiver checked that on arrival): a problem, as `openssl ts -verify` (docs/seals.md) would say."""
    from archiver import timestamps

    config = make_config(signing__timestamp_url=tsa.url)
    with built_on():
        archive_samples(config, count=2)
    backdate(config)
    monkeypatch.setattr(timestamps, "authority_problems", lambda token: [])  # the seal is made in this process
    by_ca = config.with_overrides(**{"signing.timestamp_url": tsa.at("/by-ca")})
    assert seal_cli(by_ca, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    anchored = config.with_overrides(**{"signing.timestamp_trust_anchors": [str(tsa.ca_pem)]})
    capsys.readouterr()
    assert cli(anchored, tmp_path, "verify", "--all", "--key", str(keys["legal.key.pem"]), "--workers", "1") == 3
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PROBLEM")]
    assert problems == [f"PROBLEM seal {DAY}#1: its timestamp token's authority (CN=Test Timestamp Root) is a CA "
                        "certificate, not a timestamp authority's own; has no extended key usage of timeStamping "
                        "alone, critical; has a key usage other than digitalSignature and nonRepudiation"], problems


def test_verify_refuses_a_pdf_timestamp_signed_by_the_anchor_ca_itself(keys, tsa, tmp_path) -> None:
    """The same for a PDF's signature timestamp (a PDF signed before the check on arrival, here in-process by a
    stamper that checks nothing)."""
    from asn1crypto import keys as asn1_keys, x509 as asn1_x509
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from pyhanko.sign.timestamps import DummyTimeStamper
    from reportlab.pdfgen.canvas import Canvas

    from archiver.integrity import Opened, _pdf_checks
    from archiver.pins import Pinned
    from archiver.signing import Signer, load_identity

    ca_key = serialization.load_pem_private_key(tsa.ca_key_pem.read_bytes(), None)
    ca = x509.load_pem_x509_certificate(tsa.ca_pem.read_bytes())
    der = serialization.Encoding.DER
    stamper = DummyTimeStamper(asn1_x509.Certificate.load(ca.public_bytes(der)), asn1_keys.PrivateKeyInfo.load(
        ca_key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())))
    identity = load_identity(str(keys["signing.crt.pem"]), str(keys["signing.key.pem"]))
    canvas = Canvas(str(tmp_path / "plain.pdf"))
    canvas.drawString(72, 720, "evidence")
    canvas.save()
    pdf = Signer(identity, timestamper=stamper).sign_pdf((tmp_path / "plain.pdf").read_bytes())
    opened = Opened({"room": "r", "signing_certificate_sha256": identity.fingerprint}, plain={"pdf": pdf})
    checks = {c.check: c for c in _pdf_checks(opened, None, Pinned({identity.fingerprint: identity.certificate},
                                                                    (ca,)))}
    assert checks["pdf: PAdES signature intact and cryptographically valid (pyHanko)"].ok
    stamp = checks["pdf: its signature timestamp's authority chains to signing.timestamp_trust_anchors"]
    assert not stamp.ok and "is a CA certificate, not a timestamp authority's own" in stamp.detail, stamp


@pytest.mark.parametrize("value, complaint", [("inf", "must be a finite number"),
                                              ("1e15", "must be at most 31536000 \\(a year\\)"),
                                              ("31536001", "must be at most 31536000 \\(a year\\)"),
                                              ("0", "must be greater than 0")])
def test_a_skew_no_clock_check_means_is_a_config_error_naming_the_key(value, complaint) -> None:
    """A year at most: beyond that no clock is checked, and from about 1e14 s on (or inf) the stamper could not
    even be built (OverflowError, a traceback, at `run`)."""
    from archiver import config as config_module
    from archiver.config import ConfigError

    with pytest.raises(ConfigError, match=f"^signing.timestamp_max_skew_seconds: {complaint}"):
        config_module.load(None, environ={"ARCHIVER_SIGNING__TIMESTAMP_MAX_SKEW_SECONDS": value})
    assert config_module.load(None, environ={"ARCHIVER_SIGNING__TIMESTAMP_MAX_SKEW_SECONDS": "31536000"})


def test_a_token_by_an_authority_certificate_not_valid_at_its_time_is_refused(tmp_path) -> None:
    """Its signer's certificate had expired (or was not yet valid) when it says it stamped: no verifier accepts
    it, at that time or any other."""
    import asyncio
    import datetime as dt
    import hashlib

    from asn1crypto import keys as asn1_keys, x509 as asn1_x509
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    from pyhanko.sign.timestamps import DummyTimeStamper

    from archiver import timestamps
    from certfactory import ago

    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lapsed TSA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(ago(days=30)).not_valid_after(ago(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .sign(key, hashes.SHA256()))
    der = serialization.Encoding.DER
    stamper = DummyTimeStamper(asn1_x509.Certificate.load(cert.public_bytes(der)), asn1_keys.PrivateKeyInfo.load(
        key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())))
    token = asyncio.run(stamper.async_timestamp(hashlib.sha256(b"x").digest(), "sha256"))
    assert timestamps.authority_problems(token) == [
        f"signed by CN=Lapsed TSA, whose certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC, "
        "before the token's time"]
    assert timestamps.token_time(token.dump()) > dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)


def _tsa_certificate(tmp_path, name: str, usages: list, key_usage: tuple[str, ...] | None):
    """A timestamp authority certificate (CN=NAME, EKU USAGES critical, KEY_USAGE if given) issued by a CA of its
    own, with its key and the CA; written as NAME.crt.pem / ca.crt.pem in TMP_PATH."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    from certfactory import USAGES, make

    ca = make(tmp_path, "ca", usages=("key_cert_sign", "crl_sign"), ca=True)
    key = rsa.generate_private_key(65537, 2048)
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.ExtendedKeyUsage(usages), critical=True))
    if key_usage is not None:
        builder = builder.add_extension(x509.KeyUsage(**{u: u in key_usage for u in USAGES}), critical=True)
    cert = builder.sign(ca.key, hashes.SHA256())
    (tmp_path / f"{name}.crt.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, ca


@pytest.mark.parametrize("case", ["an unknown extra purpose", "keyEncipherment too"])
def test_the_authority_certificate_rules_are_openssls(tmp_path, case) -> None:
    """Not stricter nor looser than `openssl ts -verify`: a purpose openssl does not know beside timeStamping is
    accepted (refusing it would stop every chat for an authority openssl accepts); a key usage other than
    digitalSignature and nonRepudiation is refused (openssl refuses it)."""
    import asyncio
    import hashlib

    from asn1crypto import keys as asn1_keys, x509 as asn1_x509
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID
    from pyhanko.sign.timestamps import DummyTimeStamper

    from archiver import timestamps

    require_tool("openssl")
    usages, key_usage, accepted = {
        "an unknown extra purpose": ([ExtendedKeyUsageOID.TIME_STAMPING, x509.ObjectIdentifier("1.3.6.1.4.1.99999.1")],
                                     ("digital_signature",), True),
        "keyEncipherment too": ([ExtendedKeyUsageOID.TIME_STAMPING], ("digital_signature", "key_encipherment"), False),
    }[case]
    cert, key, ca = _tsa_certificate(tmp_path, "tsa", usages, key_usage)
    der = serialization.Encoding.DER
    stamper = DummyTimeStamper(asn1_x509.Certificate.load(cert.public_bytes(der)), asn1_keys.PrivateKeyInfo.load(
        key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())))
    token = asyncio.run(stamper.async_timestamp(hashlib.sha256(b"evidence").digest(), "sha256"))
    (tmp_path / "data").write_bytes(b"evidence")
    (tmp_path / "token").write_bytes(token.dump())
    done = subprocess.run(["openssl", "ts", "-verify", "-data", str(tmp_path / "data"), "-in", str(tmp_path / "token"),
                           "-token_in", "-CAfile", str(ca.cert_path)], capture_output=True, text=True)
    assert (done.returncode == 0) == accepted, done.stderr  # openssl's verdict, which ours must be
    assert (timestamps.authority_problems(token) == []) == accepted, timestamps.authority_problems(token)


def test_a_token_too_large_for_the_room_reserved_fails_chats_for_a_retry_never_quarantines(make_config, tsa) -> None:
    """The authority's token size is configuration, not the chat: like an outage, every chat is retried (with
    the reason) and none is quarantined however often it fails."""
    config = make_config(signing__timestamp_url=tsa.at("/bulky"), archive__retry_backoff_seconds=0,
                         archive__max_attempts=1)
    room, report = _archive_one(config)
    assert "were reserved" in report.failed.get(room, ""), report
    assert tsa.at("/bulky") in report.failed[room], report
    for _ in range(2):  # past archive.max_attempts
        report = Archiver(config).run_pass()
        assert room in report.failed and not report.quarantined, report
