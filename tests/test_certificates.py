"""Signing and recipient certificates are checked at start-up and before every pass of `serve`."""

from __future__ import annotations

import json
import logging
import random
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from archiver import config as config_module
from archiver.cli import main
from archiver.config import ConfigError
from archiver.envelope import Envelope, EnvelopeError, load_recipients
from archiver.jobs import Service
from archiver.logs import LOGGER
from archiver.metrics import serve_http
from archiver.mongo import connect
from archiver.samples import make_chat
from archiver.signing import Signer, SigningError, SigningIdentity, load_identity
from certfactory import Made, ago, ahead, make
from conftest import free_port, require_tool, write_toml
from test_crash import ARCHIVER
from test_serve import _get

SIGNING_USAGES = ("digital_signature", "content_commitment")


def _when(made: Made, attribute: str) -> str:
    return getattr(made.cert, attribute).strftime("%Y-%m-%d %H:%M UTC")


# -- recipients ------------------------------------------------------------------------------------------

RECIPIENT_FLAWS = {
    "expired": (lambda: dict(not_before=ago(days=400), not_after=ago(days=1)), "expired on {not_valid_after_utc}"),
    "not yet valid": (lambda: dict(not_before=ahead(days=2)), "not valid before {not_valid_before_utc}"),
    "RSA-1024": (lambda: dict(rsa_bits=1024), "RSA key of 1024 bits (at least 2048 needed)"),
    "no keyEncipherment": (lambda: dict(usages=("digital_signature",)), "key usage lacks keyEncipherment"),
    "no key usage at all": (lambda: dict(usages=None), "no key usage extension (keyEncipherment needed)"),
    "CA certificate": (lambda: dict(ca=True, usages=("key_encipherment", "key_cert_sign")),
                       "is a CA certificate, not a recipient's own"),
}


@pytest.mark.parametrize("flaw", RECIPIENT_FLAWS)
def test_a_flawed_recipient_is_refused_naming_file_subject_and_flaw(tmp_path: Path, flaw: str) -> None:
    make_options, complaint = RECIPIENT_FLAWS[flaw]
    options = make_options()  # now, not at import: a minute ahead must still be ahead
    made = make(tmp_path, "Legal", **options)
    complaint = complaint.format(not_valid_after_utc=_when(made, "not_valid_after_utc"),
                                 not_valid_before_utc=_when(made, "not_valid_before_utc"))
    with pytest.raises(EnvelopeError) as refused:
        load_recipients([str(made.cert_path)])
    assert str(refused.value) == f"encryption.recipients: {made.cert_path}: CN=Legal: {complaint}"


def test_a_chain_in_the_recipients_file_is_refused_because_its_ca_could_decrypt(tmp_path: Path) -> None:
    require_tool("openssl")
    ca = make(tmp_path, "Legal CA", ca=True, usages=("key_cert_sign", "crl_sign"))
    leaf = make(tmp_path, "Legal", issuer=ca)
    chain = tmp_path / "legal-chain.pem"
    chain.write_bytes(leaf.cert_path.read_bytes() + ca.cert_path.read_bytes())
    # What accepting the chain meant (today's code did): the CA's key opens the archive.
    sealed = tmp_path / "x.p7m"
    sealed.write_bytes(Envelope([leaf.cert, ca.cert]).encrypt(b"the transcript"))
    opened = subprocess.run(["openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(sealed),
                             "-inkey", str(ca.key_path), "-recip", str(ca.cert_path)], capture_output=True)
    assert opened.returncode == 0 and opened.stdout == b"the transcript"
    with pytest.raises(EnvelopeError) as refused:
        load_recipients([str(chain)])
    assert str(refused.value).startswith(f"encryption.recipients: {chain}: CN=Legal CA: is a CA certificate")
    assert [c.subject.rfc4514_string() for c in load_recipients([str(leaf.cert_path)])] == ["CN=Legal"]


def test_an_ec_recipient_is_still_refused_as_unusable_for_key_transport(tmp_path: Path) -> None:
    made = make(tmp_path, "Legal", ec_key=True, usages=("key_agreement",))
    with pytest.raises(EnvelopeError, match=r"CN=Legal: CMS key transport needs an RSA certificate"):
        load_recipients([str(made.cert_path)])


def test_every_flaw_of_a_recipient_is_named_at_once(tmp_path: Path) -> None:
    made = make(tmp_path, "Legal", rsa_bits=1024, usages=("digital_signature",), not_after=ago(days=1),
                not_before=ago(days=9))
    with pytest.raises(EnvelopeError) as refused:
        load_recipients([str(made.cert_path)])
    assert str(refused.value).count("; ") == 2, refused.value


# -- pinned recipient fingerprints -------------------------------------------------------------------------

def _openssl_style(fingerprint: str) -> str:
    return ":".join(re.findall("..", fingerprint.upper()))


def test_pinned_fingerprints_accept_exactly_the_pinned_recipients(tmp_path: Path) -> None:
    one, two = make(tmp_path, "Legal 1"), make(tmp_path, "Legal 2")
    paths = [str(one.cert_path), str(two.cert_path)]
    pins = [one.fingerprint, _openssl_style(two.fingerprint)]  # as `openssl x509 -fingerprint -sha256` prints
    assert len(load_recipients(paths, pins)) == 2


def test_an_unpinned_recipient_is_refused(tmp_path: Path) -> None:
    one, intruder = make(tmp_path, "Legal"), make(tmp_path, "Intruder")
    with pytest.raises(EnvelopeError) as refused:
        load_recipients([str(one.cert_path), str(intruder.cert_path)], [one.fingerprint])
    assert str(refused.value) == (f"encryption.recipients: {intruder.cert_path}: CN=Intruder: fingerprint "
                                  f"{intruder.fingerprint} is not in encryption.recipient_fingerprints")


def test_a_pinned_fingerprint_without_its_certificate_is_refused(tmp_path: Path) -> None:
    one, gone = make(tmp_path, "Legal"), make(tmp_path, "Former member")
    with pytest.raises(EnvelopeError) as refused:
        load_recipients([str(one.cert_path)], [one.fingerprint, gone.fingerprint])
    assert str(refused.value) == (f"encryption.recipient_fingerprints: {gone.fingerprint}: no certificate in "
                                  "encryption.recipients has this fingerprint")


@pytest.mark.parametrize("pin", ["abc", "z" * 64, "ab" * 33])
def test_a_malformed_fingerprint_is_a_config_error(tmp_path: Path, pin: str) -> None:
    path = write_toml(tmp_path / "a.toml", {"encryption.recipient_fingerprints": [pin]})
    with pytest.raises(ConfigError, match=r"^encryption.recipient_fingerprints: .*SHA-256"):
        config_module.load(path, environ={})


# -- the signing certificate -----------------------------------------------------------------------------------

SIGNING_FLAWS = {
    "expired": (lambda: dict(not_before=ago(days=400), not_after=ago(days=1)), "expired on {not_valid_after_utc}"),
    "not yet valid": (lambda: dict(not_before=ahead(days=2)), "not valid before {not_valid_before_utc}"),
    # A CA whose clock runs a minute ahead: no tolerance (see docs/decisions.md).
    "valid in a minute": (lambda: dict(not_before=ahead(minutes=1)), "not valid before {not_valid_before_utc}"),
    "digitalSignature only": (lambda: dict(usages=("digital_signature",)), "key usage lacks nonRepudiation"),
    "no signing usage": (lambda: dict(usages=("key_encipherment",)), "key usage lacks nonRepudiation"),
    "no key usage at all": (lambda: dict(usages=None), "no key usage extension (nonRepudiation needed)"),
    "RSA-1024": (lambda: dict(usages=SIGNING_USAGES, rsa_bits=1024, ec_key=False), "RSA key of 1024 bits"),
    # A CA's key signs certificates: an archive signed with it is signed by whoever holds the CA.
    "CA certificate": (lambda: dict(ca=True, usages=(*SIGNING_USAGES, "key_cert_sign", "crl_sign")),
                       "is a CA certificate, not a signer's own"),
}


@pytest.mark.parametrize("flaw", SIGNING_FLAWS)
def test_a_flawed_signing_certificate_is_refused(tmp_path: Path, flaw: str) -> None:
    make_options, complaint = SIGNING_FLAWS[flaw]
    options = make_options()  # now, not at import: a minute ahead must still be ahead
    made = make(tmp_path, "Signer", **{"usages": SIGNING_USAGES, "ec_key": True, **options})
    complaint = complaint.format(not_valid_after_utc=_when(made, "not_valid_after_utc"),
                                 not_valid_before_utc=_when(made, "not_valid_before_utc"))
    with pytest.raises(SigningError) as refused:
        load_identity(str(made.cert_path), str(made.key_path))
    assert str(refused.value).startswith(f"signing.certificate: {made.cert_path}: CN=Signer: {complaint}")


def test_a_flawed_certificate_in_pkcs12_is_refused_naming_the_pkcs12_file(tmp_path: Path) -> None:
    made = make(tmp_path, "Signer", usages=SIGNING_USAGES, ec_key=True, not_after=ago(minutes=1),
                not_before=ago(days=3))
    bundle = tmp_path / "signing.p12"
    bundle.write_bytes(pkcs12.serialize_key_and_certificates(b"s", made.key, made.cert, None,
                                                             BestAvailableEncryption(b"pw")))
    with pytest.raises(SigningError, match=rf"^signing.pkcs12: {bundle}: CN=Signer: expired on "):
        load_identity(pkcs12_path=str(bundle), password="pw")


def test_an_expired_signing_certificate_made_pdfs_that_pdfsig_calls_expired(tmp_path: Path) -> None:
    require_tool("pdfsig")
    made = make(tmp_path, "Signer", usages=SIGNING_USAGES, ec_key=True, not_before=ago(days=400),
                not_after=ago(days=1))
    from reportlab.pdfgen import canvas

    blank = tmp_path / "blank.pdf"
    page = canvas.Canvas(str(blank))
    page.drawString(72, 720, "a transcript")
    page.save()
    signed = tmp_path / "signed.pdf"
    # What the archiver did with it until now (load_identity accepted it):
    signed.write_bytes(Signer(SigningIdentity(made.key, made.cert, ())).sign_pdf(blank.read_bytes()))
    report = subprocess.run(["pdfsig", str(signed)], capture_output=True, text=True, timeout=60).stdout
    assert "Signature is Valid" in report and "Certificate has Expired" in report
    with pytest.raises(SigningError, match="expired on"):
        load_identity(str(made.cert_path), str(made.key_path))


def test_development_keys_pass_every_check(keys) -> None:
    identity = load_identity(str(keys["signing.crt.pem"]), str(keys["signing.key.pem"]))
    assert identity.certificate.subject.rfc4514_string().startswith("CN=Transcript signing")
    assert len(load_recipients([str(keys["legal.crt.pem"])])) == 1


# -- start-up and serve -------------------------------------------------------------------------------------

def _toml(tmp_path: Path, make_config, **overrides) -> Path:
    config = make_config(**overrides).as_dict()
    wanted = ["mongodb.uri", "storage.url", "signing.certificate", "signing.key", "encryption.recipients",
              "source.database", "index.database", "archive.workers", "logging.format"]
    return write_toml(tmp_path / "archiver.toml", {k: config[k] for k in wanted})


def test_run_with_an_expired_recipient_exits_2_and_does_nothing(tmp_path, make_config, capsys) -> None:
    legal = make(tmp_path / "legal", "Legal", not_before=ago(days=400), not_after=ago(days=1))
    config = make_config(encryption__recipients=[str(legal.cert_path)])
    chat, contact = make_chat(__import__("random").Random(1), messages=3)
    connect(config["mongodb.uri"])[config["source.database"]].chats.insert_one(chat)
    path = _toml(tmp_path, make_config, encryption__recipients=[str(legal.cert_path)])
    assert main(["--config", str(path), "run", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"encryption.recipients: {legal.cert_path}: CN=Legal: expired on " in err
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.p7m"))


def test_serve_with_an_unfit_signing_certificate_exits_2_at_start(tmp_path, make_config) -> None:
    signer = make(tmp_path / "s", "Signer", usages=("digital_signature",), ec_key=True)
    config = make_config(signing__certificate=str(signer.cert_path), signing__key=str(signer.key_path))
    values = {k: config[k] for k in ("mongodb.uri", "storage.url", "signing.certificate", "signing.key",
                                     "encryption.recipients")}
    path = write_toml(tmp_path / "archiver.toml", {**values, "metrics.port": 0})
    serve = subprocess.run([ARCHIVER, "--config", str(path), "serve"], capture_output=True, text=True, timeout=60)
    assert serve.returncode == 2, serve.stderr
    # The last line, after a warning that a local store has no Object Lock.
    assert "Traceback" not in serve.stderr
    assert serve.stderr.strip().splitlines()[-1] == (f"archiver: error: signing.certificate: {signer.cert_path}: "
                                                     "CN=Signer: key usage lacks nonRepudiation")


class _Events(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_serve_refuses_a_pass_once_the_signing_certificate_expires(tmp_path, make_config) -> None:
    signer = make(tmp_path / "s", "Signer", usages=SIGNING_USAGES, ec_key=True, not_after=ahead(seconds=4))
    config = make_config(signing__certificate=str(signer.cert_path), signing__key=str(signer.key_path))
    service = Service(config, threading.Event())  # starts: the certificate is still valid
    chat, _ = make_chat(__import__("random").Random(2), messages=3)
    connect(config["mongodb.uri"])[config["source.database"]].chats.insert_one(chat)
    port = free_port()
    server = serve_http(service.metrics, port, service.healthy, "127.0.0.1", service.health_notes)
    events = _Events()
    LOGGER.addHandler(events)
    try:
        time.sleep(max(0.0, (signer.cert.not_valid_after_utc - ahead()).total_seconds()) + 0.5)
        service.archive_pass()
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
    finally:
        server.shutdown()
        LOGGER.removeHandler(events)
    assert not service.healthy() and status == 503
    assert f"signing.certificate: {signer.cert_path}: CN=Signer: expired on" in body
    assert "expired on" in service.last_error
    assert service.archiver.index.entries.count_documents({}) == 0, "nothing signed with the expired key"
    assert [r.fields["error"] for r in events.records if r.getMessage() == "pass_refused"] == [service.last_error]
    # Renewed in place: the next pass signs with the new certificate (one worker: in this process).
    renewed = make(tmp_path / "renewed", "Signer", usages=SIGNING_USAGES, ec_key=True)
    signer.cert_path.write_bytes(renewed.cert_path.read_bytes())
    signer.key_path.write_bytes(renewed.key_path.read_bytes())
    service.archive_pass()
    assert service.healthy(), service.last_error
    assert [e["signing_certificate_sha256"] for e in service.archiver.index.entries.find()] == [renewed.fingerprint]


def test_expiry_days_are_metrics_and_healthz_warns_30_days_ahead(tmp_path, make_config, keys) -> None:
    legal = make(tmp_path / "l", "Legal", not_after=ahead(days=10, hours=12))
    config = make_config(encryption__recipients=[str(keys["legal.crt.pem"]), str(legal.cert_path)])
    connect(config["mongodb.uri"])[config["source.database"]].create_collection("chats")  # no warning of it
    service = Service(config, threading.Event())
    port = free_port()
    server = serve_http(service.metrics, port, service.healthy, "127.0.0.1", service.health_notes)
    try:
        service.archive_pass()
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        _, metrics = _get(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
    assert status == 200 and body.startswith("ok\n")
    assert body.splitlines()[1:] == ["warning: recipient certificate CN=Legal expires in 10 days"
                                     f", on {_when(legal, 'not_valid_after_utc')}"]
    signing = re.search(r"^archiver_signing_certificate_expiry_days (\S+)$", metrics, re.M)
    assert signing and 3640 < float(signing.group(1)) < 3651
    recipient = re.search(rf'^archiver_recipient_certificate_expiry_days{{[^}}]*fingerprint="{legal.fingerprint}"'
                          r'[^}]*} (\S+)$', metrics, re.M)
    assert recipient and 10.4 < float(recipient.group(1)) < 10.6
    assert metrics.count("archiver_recipient_certificate_expiry_days{") == 2


# -- the archiving host never holds a decryption key --------------------------------------------------------------

DUAL_USE = ("digital_signature", "content_commitment", "key_encipherment")  # fit to sign and to be a recipient


def _dual_use_message(made: Made, key_setting: str, key_path: Path) -> str:
    return (f"{key_setting}: {key_path}: CN=LegalDual: its key is that of recipient CN=LegalDual in "
            "encryption.recipients: the archiving host must never hold a decryption key; sign with a key of its own")


@pytest.mark.parametrize("command", ["run", "export"])
def test_a_recipients_key_as_the_signing_key_is_refused_and_nothing_archived(command, tmp_path, make_config,
                                                                             keys, capsys) -> None:
    """README: the archiving host never holds a decryption key, not even as its signing key (one dual-use
    certificate named as signer and as recipient would let the archiver decrypt its own archives)."""
    dual = make(tmp_path / "k", "LegalDual", usages=DUAL_USE)
    over = dict(signing__certificate=str(dual.cert_path), signing__key=str(dual.key_path),
                encryption__recipients=[str(keys["legal.crt.pem"]), str(dual.cert_path)])
    config = make_config(**over)
    chat, _ = make_chat(__import__("random").Random(5), messages=3)
    connect(config["mongodb.uri"])[config["source.database"]].chats.insert_one(chat)
    argv = {"run": ["run", "--no-progress"], "export": ["export", chat["room"]]}[command]
    assert main(["--config", str(_toml(tmp_path, make_config, **over)), *argv]) == 2
    assert f"archiver: error: {_dual_use_message(dual, 'signing.key', dual.key_path)}" in capsys.readouterr().err
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.p7m"))


def test_a_recipients_key_in_the_signing_pkcs12_is_refused(tmp_path, make_config) -> None:
    dual = make(tmp_path / "k", "LegalDual", usages=DUAL_USE)
    bundle = tmp_path / "signing.p12"
    bundle.write_bytes(pkcs12.serialize_key_and_certificates(b"s", dual.key, dual.cert, None,
                                                             BestAvailableEncryption(b"pw")))
    config = make_config(signing__pkcs12=str(bundle), signing__key_password="pw",
                         encryption__recipients=[str(dual.cert_path)])
    with pytest.raises(SigningError) as refused:
        Service(config, threading.Event())
    assert str(refused.value) == _dual_use_message(dual, "signing.pkcs12", bundle)


def test_serve_refuses_a_pass_once_a_recipient_file_holds_the_signing_certificate(tmp_path, make_config,
                                                                                   keys) -> None:
    """Checked before every pass, as the certificates' validity is: a file replaced since start-up counts."""
    dual = make(tmp_path / "k", "LegalDual", usages=DUAL_USE)
    other = make(tmp_path / "k", "Legal")
    config = make_config(signing__certificate=str(dual.cert_path), signing__key=str(dual.key_path),
                         encryption__recipients=[str(other.cert_path)])
    service = Service(config, threading.Event())  # starts: the recipient is someone else
    other.cert_path.write_bytes(dual.cert_path.read_bytes())
    chat, _ = make_chat(__import__("random").Random(6), messages=3)
    connect(config["mongodb.uri"])[config["source.database"]].chats.insert_one(chat)
    service.archive_pass()
    assert not service.healthy()
    assert service.last_error == _dual_use_message(dual, "signing.key", dual.key_path)
    assert service.archiver.index.entries.count_documents({}) == 0, "nothing encrypted to the signer's key"


@pytest.mark.parametrize("command", ["seal", "retention", "erase", "render"])
def test_every_command_that_signs_refuses_a_recipients_key_as_the_signing_key(command, tmp_path, make_config,
                                                                                keys, capsys) -> None:
    """Not only the archiving commands: a seal, a retention or erasure report and an offline render are signed
    with the same identity, and the host that holds it must not be able to decrypt the archive."""
    dual = make(tmp_path / "k", "LegalDual", usages=DUAL_USE)
    over = dict(signing__certificate=str(dual.cert_path), signing__key=str(dual.key_path),
                encryption__recipients=[str(keys["legal.crt.pem"]), str(dual.cert_path)])
    day = (time.strftime("%Y-%m-%d", time.gmtime(time.time() - 2 * 86400)))
    source = tmp_path / "chats.json"
    chat, _ = make_chat(random.Random(7), messages=3)
    source.write_text(json.dumps(chat, default=str))
    out = tmp_path / "out"
    argv = {"seal": ["seal", "--from", day, "--to", day], "retention": ["retention", "run"],
            "erase": ["erase", "--customer", "4747235938674011", "--reason", "request 1"],
            "render": ["render", str(source), "--out", str(out)]}[command]
    assert main(["--config", str(_toml(tmp_path, make_config, **over)), *argv]) == 2
    assert f"archiver: error: {_dual_use_message(dual, 'signing.key', dual.key_path)}" in capsys.readouterr().err
    store = tmp_path / "store"
    assert not store.exists() or not any(p.is_file() for p in store.rglob("*")), "nothing signed, nothing stored"
    assert not out.exists() or not any(out.iterdir())


def test_render_compares_its_signing_key_with_the_recipients_it_can_read(tmp_path, make_config, keys, capsys) -> None:
    """render encrypts nothing and needs no recipient file (one missing is no error), but a recipient's key that
    it can read is refused as its signing key."""
    dual = make(tmp_path / "k", "LegalDual", usages=DUAL_USE)
    source = tmp_path / "chats.json"
    source.write_text(json.dumps(make_chat(random.Random(8), messages=3)[0], default=str))
    missing = str(tmp_path / "missing.pem")
    for recipients, code in (([missing], 0), ([missing, str(dual.cert_path)], 2)):
        out = tmp_path / f"out-{code}"
        toml = _toml(tmp_path, make_config, signing__certificate=str(dual.cert_path), signing__key=str(dual.key_path),
                     encryption__recipients=recipients)
        assert main(["--config", str(toml), "render", str(source), "--out", str(out)]) == code
        assert (f"archiver: error: {_dual_use_message(dual, 'signing.key', dual.key_path)}" in
                capsys.readouterr().err) == bool(code)
        assert len(list(out.glob("*.pdf"))) == (0 if code else 1)


def test_a_timestamp_time_is_checked_against_the_validity_with_the_authoritys_clock_named() -> None:
    """One check for the token over a chat's PDF and over a seal (artifacts.py, seals.py): its time within the
    signer's validity, the message naming whose clock said so."""
    import datetime as dt
    from archiver.certificates import NotValidNow, Validity

    utc = dt.timezone.utc
    validity = Validity("signing.certificate: s.pem", "CN=Signer", dt.datetime(2026, 1, 1, tzinfo=utc),
                        dt.datetime(2027, 1, 1, tzinfo=utc))
    validity.check_timestamp(dt.datetime(2026, 6, 1, tzinfo=utc))
    for stamped, said in ((dt.datetime(2027, 1, 1, 0, 0, 1, tzinfo=utc),
                           "expired on 2027-01-01 00:00:00 UTC (its notAfter, by the time of its timestamp, "
                           "2027-01-01 00:00:01 UTC): renew it"),
                          (dt.datetime(2025, 12, 31, 23, 59, 59, tzinfo=utc),
                           "not valid before 2026-01-01 00:00:00 UTC (its notBefore, by the time of its timestamp, "
                           "2025-12-31 23:59:59 UTC): not used before then")):
        with pytest.raises(NotValidNow) as refused:
            validity.check_timestamp(stamped)
        assert str(refused.value) == f"signing.certificate: s.pem: CN=Signer: {said}"
