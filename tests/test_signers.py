"""Every signature verify checks is pinned to the signing certificates the verifier is configured with
(signing.certificate and signing.former_certificates), never to what the index or the signed document says;
the timestamp authority to signing.timestamp_trust_anchors when given. Threat: an insider who can write the
index and the store but holds no private key of ours (review of seals, HIGH-5)."""

from __future__ import annotations

import pytest

import hashlib
import json

from archiver.cli import main
from archiver.integrity import verify_archive
from archiver.mongo import connect
from certfactory import make
from conftest import write_toml
from retrieval_helpers import archive_samples, index, overwrite_stored, remove_stored, stored_path
from test_seals import DAY, SEAL_KEYS, backdate, built_on, seal_cli, seal_four, seal_records

SIGNING_USAGES = ("digital_signature", "content_commitment")
UNPINNED = "which is not one of this configuration's signing certificates (signing.certificate, " \
           "signing.former_certificates)"
PIN_CHECK = "signed with one of this configuration's signing certificates"
KEYS = (*SEAL_KEYS, "signing.former_certificates", "signing.timestamp_trust_anchors", "signing.trust_anchors")


def cli(config, tmp_path, *argv: str) -> int:
    """`archiver` with CONFIG's settings that seals, runs and verification read, as a TOML file."""
    toml = write_toml(tmp_path / "signers.toml", {k: config[k] for k in KEYS if config[k] not in ("", [])})
    return main(["--config", str(toml), *argv])


@pytest.fixture
def sealed(make_config, tsa, tmp_path):
    """Four chats archived on DAY and DAY sealed with a timestamp."""
    return seal_four(make_config, tsa, tmp_path)


def _seals_coll(config):
    return connect(config["mongodb.uri"])[config["index.database"]][config["index.seals"]]


def _unseal_day_and_remove(config, victim) -> None:
    """The insider removes VICTIM (entry and objects) and DAY's seal (record and objects: local store)."""
    for record in seal_records(config):
        if record["day"] == DAY.isoformat():
            for obj in record["objects"].values():
                remove_stored(config, obj["key"])
    _seals_coll(config).delete_many({"day": DAY.isoformat()})
    for obj in victim["objects"].values():
        remove_stored(config, obj["key"])
    index(config).delete_one({"_id": victim["_id"]})


def test_a_day_resealed_with_a_stranger_key_fails_verify(sealed, tsa, tmp_path, capsys) -> None:
    """With no trust anchors (the example configuration's default), a seal re-made with the insider's own
    `archiver keys init` keys, naming them in signer_sha256, passed verify with a stderr warning only."""
    from archiver.keys import create_development_keys

    victim = index(sealed).find_one({}, sort=[("room", 1)])
    _unseal_day_and_remove(sealed, victim)
    evil = create_development_keys(tmp_path / "evil")
    forger = sealed.with_overrides(**{"signing.certificate": str(evil["signing.crt.pem"]),
                                      "signing.key": str(evil["signing.key.pem"])})
    assert seal_cli(forger, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    capsys.readouterr()
    code = seal_cli(sealed, tmp_path, "verify", "--all")
    out, err = capsys.readouterr()
    assert code == 3, (out, err)
    stranger = hashlib.sha256(open(evil["signing.crt.pem"], "rb").read()).hexdigest()  # (not the DER: not named)
    assert f"PROBLEM seal {DAY}#1: it is signed by certificate " in out and UNPINNED in out, out
    assert stranger not in out and "timestamp authorities NOT checked" in err, (out, err)


def test_a_day_resealed_by_another_certificate_of_the_same_ca_fails_verify(make_config, tsa, tmp_path,
                                                                           capsys) -> None:
    """With trust anchors, a seal signed by another certificate the same CA issued (an employee's) passed."""
    from certfactory import make

    ca = make(tmp_path / "pki", "Corporate CA", usages=("key_cert_sign", "crl_sign"), ca=True)
    ours = make(tmp_path / "pki", "archiver-signing", usages=("digital_signature", "content_commitment"), issuer=ca)
    employee = make(tmp_path / "pki", "employee", usages=("digital_signature", "content_commitment"), issuer=ca)
    config = make_config(signing__timestamp_url=tsa.url, signing__certificate=str(ours.cert_path),
                         signing__key=str(ours.key_path), signing__trust_anchors=[str(ca.cert_path)])
    with built_on():
        archive_samples(config, count=3)
    backdate(config)
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    assert seal_cli(config, tmp_path, "verify", "--all", "--ca", str(ca.cert_path)) == 0
    victim = index(config).find_one({}, sort=[("room", 1)])
    _unseal_day_and_remove(config, victim)
    forger = config.with_overrides(**{"signing.certificate": str(employee.cert_path),
                                      "signing.key": str(employee.key_path)})
    assert seal_cli(forger, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    capsys.readouterr()
    code = seal_cli(config, tmp_path, "verify", "--all", "--ca", str(ca.cert_path))
    out, err = capsys.readouterr()
    assert code == 3, (out, err)
    assert f"PROBLEM seal {DAY}#1: it is signed by certificate CN=employee (SHA-256 " \
           f"{employee.fingerprint}), {UNPINNED}" in out, out


def test_after_a_rotation_what_the_former_certificate_signed_passes_only_once_it_is_configured(
        sealed, keys, tmp_path, capsys) -> None:
    """The signing certificate replaced (rotation): the seal, transcripts and records it signed are named until
    it is listed in signing.former_certificates; keyed checks in worker processes are pinned alike."""
    new = make(tmp_path / "new", "Archiver signing 2027", usages=SIGNING_USAGES, ec_key=True)
    rotated = sealed.with_overrides(**{"signing.certificate": str(new.cert_path), "signing.key": str(new.key_path)})
    key = ["--key", str(keys["legal.key.pem"])]
    for workers in ("1", "2"):
        capsys.readouterr()
        assert cli(rotated, tmp_path, "verify", "--all", *key, "--workers", workers) == 3
        out = capsys.readouterr().out
        assert f"PROBLEM seal {DAY}#1: it is signed by certificate " in out and UNPINNED in out, out
        for entry in index(sealed).find({}):
            assert f"{entry['room']} v{entry['version']}: failed: pdf: {PIN_CHECK}" in out, out
            assert f"{entry['room']} v{entry['version']}: failed: record: {PIN_CHECK}" in out, out
    former = rotated.with_overrides(**{"signing.former_certificates": [str(keys["signing.crt.pem"])]})
    capsys.readouterr()
    assert cli(former, tmp_path, "verify", "--all", *key, "--workers", "2", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and len(report["signers"]) == 2 and new.fingerprint in report["signers"][0], report


def test_a_run_report_resigned_by_a_stranger_naming_itself_in_signed_by_is_named(make_config, tmp_path) -> None:
    """A retention run's report signature replaced by a stranger's, and the run record's signed_by and
    signature_sha256 edited to match: checked against the run's own record, it passed."""
    from archiver.signing import Signer, load_identity
    from retention_helpers import age, archive, retention, retention_config

    config = retention_config(make_config)
    archive(config, 3)
    age(config, 400)
    where = retention(config).location
    assert verify_archive(config, None).ok
    other = make(tmp_path / "other", "Insider", usages=SIGNING_USAGES, ec_key=True)
    forged = Signer(load_identity(str(other.cert_path), str(other.key_path))).sign_detached(
        stored_path(config, where["key"]).read_bytes())
    overwrite_stored(config, where["signature_key"], forged)
    runs = connect(config["mongodb.uri"])[config["index.database"]][config["index.retention_runs"]]
    runs.update_one({"report.key": where["key"]}, {"$set": {"report.signed_by": other.fingerprint,
                                                            "report.signature_sha256": hashlib.sha256(forged).hexdigest()}})
    problems = [str(p) for p in verify_archive(config, None).problems]
    assert len(problems) == 1, problems
    assert where["signature_key"] in problems[0] and f"Insider (SHA-256 {other.fingerprint}), {UNPINNED}" in problems[0]


def test_timestamp_authorities_are_checked_against_their_configured_anchors(sealed, keys, tsa, tmp_path,
                                                                            capsys) -> None:
    """signing.timestamp_trust_anchors: the seal's token and (with --key) each transcript's signature timestamp
    must be by an authority chaining to one; without it verify says the authorities were not checked."""
    import tsa as tsa_module

    (tmp_path / "other-tsa").mkdir()
    other, server = tsa_module.start(tmp_path / "other-tsa")  # an authority anyone can run: not ours
    server.shutdown()
    server.server_close()
    key = ["--key", str(keys["legal.key.pem"]), "--workers", "1"]
    ours = sealed.with_overrides(**{"signing.timestamp_trust_anchors": [str(tsa.ca_pem)]})
    assert cli(ours, tmp_path, "verify", "--all", *key) == 0
    out, err = capsys.readouterr()
    assert "timestamp authorities NOT checked" not in err, err
    assert cli(sealed, tmp_path, "verify", "--all") == 0
    assert "WARNING: timestamp authorities NOT checked against a trust anchor" in capsys.readouterr().err
    theirs = sealed.with_overrides(**{"signing.timestamp_trust_anchors": [str(other.ca_pem)]})
    assert cli(theirs, tmp_path, "verify", "--all", *key) == 3
    out = capsys.readouterr().out
    assert (f"PROBLEM seal {DAY}#1: its timestamp token's authority (CN=Test Timestamp Authority) does "
            "not chain to signing.timestamp_trust_anchors") in out, out
    for entry in index(sealed).find({}):
        assert (f"{entry['room']} v{entry['version']}: failed: pdf: its signature timestamp's authority chains to "
                "signing.timestamp_trust_anchors") in out, out


@pytest.mark.parametrize("setting", ["signing.former_certificates", "signing.timestamp_trust_anchors"])
@pytest.mark.parametrize("flaw", ["missing", "a private key", "not PEM", "a CA"])
def test_a_bad_pinning_setting_stops_verify_naming_it(make_config, keys, tmp_path, capsys, setting, flaw) -> None:
    path = {"missing": tmp_path / "nowhere.pem", "a private key": keys["signing.key.pem"],
            "not PEM": keys["signing.key.pem"].parent / "ca.crt.pem.txt", "a CA": keys["ca.crt.pem"]}[flaw]
    if flaw == "not PEM":
        path.write_text("not a certificate\n")
    if flaw == "a CA" and setting == "signing.timestamp_trust_anchors":  # what an anchor is: fine
        assert cli(make_config(**{setting.replace(".", "__"): [str(path)]}), tmp_path, "verify", "--all") == 0
        return
    config = make_config(**{setting.replace(".", "__"): [str(path)]})
    capsys.readouterr()
    assert cli(config, tmp_path, "verify", "--all") == 2
    err = capsys.readouterr().err
    assert f"{setting} {path}" in err, err


def test_a_verifier_without_a_signing_certificate_names_every_signature(sealed, tmp_path, capsys) -> None:
    """A configuration with no signing certificate pins nothing: no signature passes by default."""
    auditor = sealed.with_overrides(**{"signing.certificate": "", "signing.key": ""})
    assert cli(auditor, tmp_path, "verify", "--all") == 3
    out = capsys.readouterr().out
    assert f"PROBLEM seal {DAY}#1: it is signed by certificate " in out and UNPINNED[:-1] + ": none is set)" in out


def test_a_pkcs12_signing_identity_pins_its_certificate(sealed, keys, tmp_path, capsys) -> None:
    """signing.pkcs12 instead of signing.certificate: its certificate is the one pinned (opened with
    signing.key_password); a wrong password stops verify, naming the setting."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from archiver.config import ConfigError

    key = serialization.load_pem_private_key(keys["signing.key.pem"].read_bytes(), None)
    cert = x509.load_pem_x509_certificates(keys["signing.crt.pem"].read_bytes())[0]
    bundle = tmp_path / "signing.p12"
    bundle.write_bytes(pkcs12.serialize_key_and_certificates(
        b"archiver", key, cert, None, serialization.BestAvailableEncryption(b"s3cret")))
    p12 = {"signing.certificate": "", "signing.key": "", "signing.pkcs12": str(bundle)}
    config = sealed.with_overrides(**p12, **{"signing.key_password": "s3cret"})
    assert verify_archive(config, None).ok
    with pytest.raises(ConfigError, match=f"^signing.pkcs12 {bundle}: cannot open"):
        # (not a word later messages hold: every configured password is masked in all output from then on)
        verify_archive(sealed.with_overrides(**p12, **{"signing.key_password": "Kq8-not-the-password"}), None)


def test_retrieve_pins_the_signers_to_this_configurations_signing_certificates(make_config, keys, tmp_path,
                                                                               capsys) -> None:
    """`retrieve` compared the signer with the index's signing_certificate_sha256 only (which an insider writes):
    a transcript re-signed with any key and encrypted to the legal team's public certificate was released.
    Pinned like verify: a configuration whose signing certificate did not sign it releases nothing (exit 3);
    one without any says, in the output and verification.json, that the signers were not pinned."""
    config = make_config()
    (entry,) = archive_samples(config, count=1)
    key = ["--key", str(keys["legal.key.pem"])]
    stranger = make(tmp_path / "stranger", "Someone else", usages=SIGNING_USAGES, ec_key=True)
    other = config.with_overrides(**{"signing.certificate": str(stranger.cert_path),
                                     "signing.key": str(stranger.key_path)})
    assert cli(other, tmp_path, "retrieve", entry["room"], *key, "--out", str(tmp_path / "a"), "--reason", "r") == 3
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert f"failed: pdf: {PIN_CHECK}" in out and f"failed: record: {PIN_CHECK}" in out, out
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    assert cli(config, tmp_path, "retrieve", entry["room"], *key, "--out", str(tmp_path / "b"), "--reason", "r") == 0
    out = capsys.readouterr().out
    assert "signers NOT pinned" not in out, out
    (folder,) = (tmp_path / "b").iterdir()
    report = json.loads((folder / "verification.json").read_text())
    (pinned,) = report["signers_pinned"]
    assert pinned.endswith(f"(SHA-256 {entry['signing_certificate_sha256']})"), pinned
    unpinned = config.with_overrides(**{"signing.certificate": "", "signing.key": ""})
    assert cli(unpinned, tmp_path, "retrieve", entry["room"], *key, "--out", str(tmp_path / "c"), "--reason", "r") == 0
    out = capsys.readouterr().out
    assert "WARNING: signers NOT pinned" in out, out
    (folder,) = (tmp_path / "c").iterdir()
    assert json.loads((folder / "verification.json").read_text())["signers_pinned"].startswith("NOT PINNED")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_bundle_pins_the_signers_as_retrieve_does(make_config, keys, tmp_path, capsys, workers) -> None:
    """Bundles compared the signer with the index only: a configuration whose signing certificate did not sign a
    room makes no bundle (exit 3, no zip); one without any says so in the custody report."""
    config = make_config()
    entries = archive_samples(config, count=2)
    key = ["--key", str(keys["legal.key.pem"])]
    rooms = [e["room"] for e in entries]
    stranger = make(tmp_path / "stranger", "Someone else", usages=SIGNING_USAGES, ec_key=True)
    other = config.with_overrides(**{"signing.certificate": str(stranger.cert_path), "signing.key": ""})
    zipped = tmp_path / "case.zip"
    assert cli(other, tmp_path, "retrieve", "--bundle", str(zipped), *key, "--reason", "r", "--workers", workers,
               *rooms) == 3
    captured = capsys.readouterr()
    assert f"failed: pdf: {PIN_CHECK}" in captured.out + captured.err, captured
    assert not zipped.exists()
    assert cli(config.with_overrides(**{"signing.key": ""}), tmp_path, "retrieve", "--bundle", str(zipped), *key,
               "--reason", "r", "--workers", workers, *rooms) == 0
    import zipfile
    with zipfile.ZipFile(zipped) as z:
        custody = json.loads(z.read("chain-of-custody.json"))
    (pinned,) = custody["signers_pinned"]
    assert pinned.endswith(f"(SHA-256 {entries[0]['signing_certificate_sha256']})"), pinned
