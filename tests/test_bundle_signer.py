"""Who signs a case bundle's manifest (review "court" C16): the legal team's own identity (bundle.*), never the
archive's transcript signing key; without one the manifest is unsigned and the bundle says so."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs7, pkcs12

from archiver.cli import main
from conftest import require_tool, write_toml
from retrieval_helpers import CLI_KEYS, audit
from test_bundle import _court_chat, _passes, _run_readme, _unzip

TRANSCRIPT_KEY = ("signing.certificate", "signing.key")  # today's bundling host: the archive's own settings


def _bundle_keys(keys) -> dict[str, str]:
    return {"bundle.signing_certificate": str(keys["bundle.crt.pem"]), "bundle.signing_key": str(keys["bundle.key.pem"])}


def _cli(config, tmp_path: Path, settings: dict, *argv: str) -> int:
    """`archiver ARGV` with CONFIG's CLI_KEYS (source included) and SETTINGS, as a TOML file."""
    values = {**{k: config[k] for k in CLI_KEYS + ("source.database",)}, **settings}
    return main(["--config", str(write_toml(tmp_path / "cli.toml", values)), *argv])


@pytest.fixture
def room(make_config):
    from archiver.pipeline import Archiver
    from test_pipeline import seed

    config = make_config()
    seed(config, [_court_chat("ROOM_A", [("c", "hello"), ("a", "hi")])])
    assert Archiver(config).run_pass().archived == 1
    return config


def _make(config, tmp_path: Path, keys, settings: dict, *extra: str, name: str = "case.zip") -> tuple[int, Path]:
    bundle = tmp_path / name
    code = _cli(config, tmp_path, settings, "retrieve", "--bundle", str(bundle), "ROOM_A",
                "--key", str(keys["legal.key.pem"]), "--reason", "case", "--no-progress", *extra)
    return code, bundle


def _p7s_signers(bundle: Path) -> list[str]:
    """SHA-256 of each certificate SHA256SUMS.p7s carries (none: no such file)."""
    with zipfile.ZipFile(bundle) as zf:
        if "SHA256SUMS.p7s" not in zf.namelist():
            return []
        certs = pkcs7.load_der_pkcs7_certificates(zf.read("SHA256SUMS.p7s"))
    return [c.fingerprint(hashes.SHA256()).hex() for c in certs]


def _transcript_signer(bundle: Path) -> str:
    with zipfile.ZipFile(bundle) as zf:
        return x509.load_pem_x509_certificate(zf.read("rooms/ROOM_A-v1/signer.crt.pem")).fingerprint(
            hashes.SHA256()).hex()


def test_bundle_manifest_is_not_signed_with_the_transcript_signing_key(room, keys, tmp_path, capsys) -> None:
    """Review "court" C16 (its reproduction, on the archive's own configuration): the bundling host, holding the
    decryption key, signed the manifest with the transcript signing key. Now the manifest is unsigned, and
    stdout, README.txt and chain-of-custody.json say so, naming the settings to configure; stdout warns that
    the transcript signing key is on a host that decrypts."""
    code, bundle = _make(room, tmp_path, keys, {k: room[k] for k in TRANSCRIPT_KEY})
    said = capsys.readouterr().out
    assert code == 0, said
    assert _transcript_signer(bundle) not in _p7s_signers(bundle), (
        "the bundle's manifest is signed with the very key that signs the archived transcripts")
    with zipfile.ZipFile(bundle) as zf:
        names = zf.namelist()
        readme = zf.read("README.txt").decode()
        custody = json.loads(zf.read("chain-of-custody.json"))
    assert "SHA256SUMS.p7s" not in names and "bundle-signer.pem" not in names
    keys_named = "bundle.signing_certificate and bundle.signing_key, or bundle.signing_pkcs12"
    assert ("1. The manifest is NOT signed: no bundle signing identity was configured where this bundle was made "
            f"({keys_named}); the archive's transcript signing key never signs a bundle") in " ".join(readme.split())
    assert custody["manifest_signed_by"] is None and keys_named in custody["manifest_not_signed"]
    assert "WARNING: the manifest (SHA256SUMS) is NOT signed: no bundle signing identity is configured (set " \
        "bundle.signing_certificate and bundle.signing_key, or bundle.signing_pkcs12" in said, said
    assert "WARNING: the transcript signing key (signing.key) is configured on this host, which decrypts" in said
    assert f"NOT signed (no bundle signing identity: {keys_named})" in audit(room)[-1]["detail"]


def test_a_bundle_host_without_the_transcript_key_is_not_warned_of_it(room, keys, tmp_path, capsys) -> None:
    code, bundle = _make(room, tmp_path, keys, {"signing.certificate": room["signing.certificate"],
                                                **_bundle_keys(keys)})
    said = capsys.readouterr().out
    assert code == 0 and "transcript signing key" not in said and "WARNING: the manifest" not in said, said


def test_the_bundle_signer_signs_and_the_readme_checks_it_against_its_own_ca(room, keys, tmp_path, capsys) -> None:
    """Signed by bundle.*: README step 1 checks SHA256SUMS.p7s against ../BUNDLE-CA.pem (next to the folder,
    as ../CA.pem is); the archive's CA does not vouch for it, nor does one shipped inside the folder."""
    code, bundle = _make(room, tmp_path, keys, {**{k: room[k] for k in TRANSCRIPT_KEY}, **_bundle_keys(keys)})
    said = capsys.readouterr().out
    assert code == 0, said
    bundle_cert = x509.load_pem_x509_certificates(Path(keys["bundle.crt.pem"]).read_bytes())[0]
    fingerprint = bundle_cert.fingerprint(hashes.SHA256()).hex()
    assert fingerprint in _p7s_signers(bundle) and _transcript_signer(bundle) not in _p7s_signers(bundle)
    assert f"manifest signed (SHA256SUMS.p7s) by the bundle signer {bundle_cert.subject.rfc4514_string()} " \
           f"(SHA-256 {fingerprint})" in said
    assert "WARNING: the transcript signing key (signing.key) is configured on this host" in said  # still warned
    assert "WARNING: the manifest" not in said
    folder = _unzip(bundle, tmp_path / "u")
    custody = json.loads((folder / "chain-of-custody.json").read_text())
    assert custody["manifest_signed_by"]["sha256"] == fingerprint and "manifest_not_signed" not in custody
    assert custody["manifest_signed_by"]["role"].startswith("the bundle signer (bundle.*), not the archive's")
    assert f"manifest signed (SHA256SUMS.p7s) by the bundle signer {bundle_cert.subject.rfc4514_string()}" in \
        audit(room)[-1]["detail"]
    readme = (folder / "README.txt").read_text()
    assert "the bundle signer's CA in BUNDLE-CA.pem beside it (step 1)" in readme
    assert "-CAfile ../BUNDLE-CA.pem" in readme and "-in \"SHA256SUMS.p7s\"" in readme

    results = _run_readme(folder, keys["ca.crt.pem"], keys["bundle-ca.crt.pem"])
    assert _passes(results) and "BUNDLE-CA.pem" in results[0][0] and "OK SHA256SUMS" in results[0][2], results

    # The archive's CA in place of the bundle signer's: step 1 fails (the transcript CA does not vouch for it).
    results = _run_readme(folder, keys["ca.crt.pem"], keys["ca.crt.pem"])
    assert results[0][1] != 0 and "FAILED SHA256SUMS" in results[0][2] and _passes(results[1:]), results
    # A BUNDLE-CA.pem shipped inside the folder is named by the unlisted-files step.
    shutil.copy(keys["bundle-ca.crt.pem"], folder / "BUNDLE-CA.pem")
    results = _run_readme(folder, keys["ca.crt.pem"])
    assert results[2][1] != 0 and "FAILED not in SHA256SUMS: BUNDLE-CA.pem" in results[2][2], results


def test_the_bundle_signer_may_be_a_pkcs12_with_its_password(room, keys, tmp_path, capsys) -> None:
    cert, *chain = x509.load_pem_x509_certificates(Path(keys["bundle.crt.pem"]).read_bytes())
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(Path(keys["bundle.key.pem"]).read_bytes(), None)
    p12 = tmp_path / "bundle.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(b"b", key, cert, chain, BestAvailableEncryption(b"pw")))
    settings = {"signing.certificate": room["signing.certificate"], "bundle.signing_pkcs12": str(p12)}
    code, bundle = _make(room, tmp_path, keys, {**settings, "bundle.key_password": "pw"})
    assert code == 0 and cert.fingerprint(hashes.SHA256()).hex() in _p7s_signers(bundle)
    capsys.readouterr()
    code, other = _make(room, tmp_path, keys, {**settings, "bundle.key_password": "not-the-bundle-pw-3141"}, name="other.zip")
    err = capsys.readouterr().err
    assert code == 2 and not other.exists(), err
    assert f"bundle.signing_pkcs12 {p12}: cannot open" in err and "check bundle.key_password" in err, err
    assert "not-the-bundle-pw-3141" not in err  # the password is never echoed


def test_a_bundle_identity_that_is_a_transcript_signer_is_refused(room, keys, tmp_path, capsys) -> None:
    """Exit 2 naming both settings, nothing written, audited: the transcript signing certificate itself, one
    with its key, and a former transcript signing certificate (signing.former_certificates)."""
    from certfactory import make

    key_of_signer = {**_bundle_keys(keys), "bundle.signing_certificate": room["signing.certificate"],
                     "bundle.signing_key": room["signing.key"]}
    code, bundle = _make(room, tmp_path, keys, {"signing.certificate": room["signing.certificate"], **key_of_signer})
    err = capsys.readouterr().err
    assert code == 2 and not bundle.exists() and list(tmp_path.glob("*.zip*")) == [], err
    assert (f"bundle.signing_certificate: {room['signing.certificate']}: CN=Transcript signing (development),"
            "O=CT Live archiver (development): is the transcript signing certificate") in err, err
    assert "named in signing.certificate: a bundle's manifest is signed by an identity of its own" in err
    assert audit(room)[-1]["outcome"] == "failed"

    former = make(tmp_path / "k", "Old signer", usages=("digital_signature", "content_commitment"))
    code, bundle = _make(room, tmp_path, keys, {
        "signing.certificate": room["signing.certificate"], "signing.former_certificates": [str(former.cert_path)],
        "bundle.signing_certificate": str(former.cert_path), "bundle.signing_key": str(former.key_path)})
    err = capsys.readouterr().err
    assert code == 2 and not bundle.exists(), err
    assert f"bundle.signing_certificate: {former.cert_path}: CN=Old signer: is the transcript signing certificate " \
           f"CN=Old signer (SHA-256 {former.fingerprint}) named in signing.former_certificates" in err, err


def test_a_bundle_identity_with_the_transcript_signers_key_is_refused(room, keys, tmp_path, capsys) -> None:
    """Another certificate for the transcript signing key is the same key: refused too."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from certfactory import make

    signer_key = load_pem_private_key(Path(room["signing.key"]).read_bytes(), None)
    ca = make(tmp_path / "k", "Other CA", usages=("key_cert_sign", "crl_sign"), ca=True)
    _reissue(signer_key, ca, tmp_path / "k" / "reissued.crt.pem")
    code, bundle = _make(room, tmp_path, keys, {"signing.certificate": room["signing.certificate"],
                                                "bundle.signing_certificate": str(tmp_path / "k" / "reissued.crt.pem"),
                                                "bundle.signing_key": room["signing.key"]})
    err = capsys.readouterr().err
    assert code == 2 and not bundle.exists(), err
    assert "has the key of the transcript signing certificate CN=Transcript signing (development)" in err, err


def _reissue(key, ca, path: Path) -> x509.Certificate:
    """A new certificate, issued by CA, for KEY (a signer's usages)."""
    import datetime as dt

    from cryptography.x509.oid import NameOID
    from cryptography.hazmat.primitives import serialization

    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Reissued")]))
            .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
            .sign(ca.key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def test_half_a_bundle_identity_is_refused_naming_the_missing_setting(room, keys, tmp_path, capsys) -> None:
    code, bundle = _make(room, tmp_path, keys, {"bundle.signing_certificate": str(keys["bundle.crt.pem"])})
    err = capsys.readouterr().err
    assert code == 2 and not bundle.exists()
    assert "bundle.signing_key: required with bundle.signing_certificate" in err, err


def test_a_bundle_signer_that_chains_to_a_transcript_trust_anchor_is_refused(room, keys, tmp_path, capsys) -> None:
    """A bundle signer that chains to a trust anchor of the transcripts could sign a transcript that passes the
    README's steps 4 and 5: refused, exit 2, nothing written, audited (here its CA is given with --ca)."""
    code, bundle = _make(room, tmp_path, keys, _bundle_keys(keys), "--ca", str(keys["ca.crt.pem"]),
                         "--ca", str(keys["bundle-ca.crt.pem"]))
    err = capsys.readouterr().err
    assert code == 2 and not bundle.exists() and list(tmp_path.glob("*.zip*")) == [], err
    assert ("the bundle signer CN=Case bundle signing (development),O=CT Live archiver (development) chains "
            "to CN=Bundle signing development CA") in err and "give the bundle signer a CA of its own" in err, err
    assert audit(room)[-1]["outcome"] == "failed" and "a CA of its own" in audit(room)[-1]["detail"]
    code, _ = _make(room, tmp_path, keys, _bundle_keys(keys), "--ca", str(keys["ca.crt.pem"]), name="b.zip")
    assert code == 0 and "chains to" not in capsys.readouterr().out


def test_the_transcript_key_as_bundle_signer_is_refused_without_signing_certificate(room, keys, tmp_path,
                                                                                   capsys) -> None:
    """Review today3 #2: a bundling host that names no signing.certificate, given the transcript signer's own
    certificate and key as bundle.*: refused (the index names that certificate as the signer of the room),
    before anything is written, audited."""
    settings = {"signing.certificate": "", "bundle.signing_certificate": room["signing.certificate"],
                "bundle.signing_key": room["signing.key"]}
    code, bundle = _make(room, tmp_path, keys, settings)
    err = capsys.readouterr().err
    assert code == 2 and not bundle.exists() and list(tmp_path.glob("*.zip*")) == [], err
    assert (f"bundle.signing_certificate: {room['signing.certificate']}: CN=Transcript signing (development),"
            "O=CT Live archiver (development): is the certificate the archive index names as the signer of "
            "ROOM_A v1") in err, err
    assert [e["outcome"] for e in audit(room) if e["action"] == "retrieve"] == ["failed"]  # before it was begun


def test_a_bundle_signer_with_a_bundled_rooms_signer_key_is_refused_unpinned(room, keys, tmp_path, capsys) -> None:
    """Another certificate for the transcript signing key, no signing.certificate to compare it with: the room's
    signer certificate (verified while bundling) has its key: refused, nothing left at FILE.zip."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from certfactory import make

    signer_key = load_pem_private_key(Path(room["signing.key"]).read_bytes(), None)
    ca = make(tmp_path / "k", "Other CA", usages=("key_cert_sign", "crl_sign"), ca=True)
    _reissue(signer_key, ca, tmp_path / "k" / "reissued.crt.pem")
    code, bundle = _make(room, tmp_path, keys, {"signing.certificate": "",
                                                "bundle.signing_certificate": str(tmp_path / "k" / "reissued.crt.pem"),
                                                "bundle.signing_key": room["signing.key"]})
    err = capsys.readouterr().err
    assert code == 2 and not bundle.exists() and list(tmp_path.glob("*.zip*")) == [], err
    assert ("has the key of the signer certificate of ROOM_A v1, CN=Transcript signing (development)") in err, err
    assert audit(room)[-1]["outcome"] == "failed"


SIGNER = ("digital_signature", "content_commitment")


def _one_ca(tmp_path: Path):
    """One CA issuing both a transcript signer and a bundle signer (one corporate PKI)."""
    from certfactory import make

    ca = make(tmp_path / "pki", "Corporate CA", usages=("key_cert_sign", "crl_sign"), ca=True)
    transcripts = make(tmp_path / "pki", "Transcript signer", usages=SIGNER, issuer=ca)
    bundles = make(tmp_path / "pki", "Legal team bundle signer", usages=SIGNER, issuer=ca)
    return ca, transcripts, bundles


def _archived_by(make_config, transcripts):
    from archiver.pipeline import Archiver
    from test_pipeline import seed

    config = make_config(signing__certificate=str(transcripts.cert_path), signing__key=str(transcripts.key_path))
    seed(config, [_court_chat("ROOM_A", [("c", "hello"), ("a", "hi")])])
    assert Archiver(config).run_pass().archived == 1
    return config


@pytest.mark.parametrize("pinned", [True, False])
def test_a_bundle_signer_from_the_transcript_signers_ca_is_refused(make_config, keys, tmp_path, capsys,
                                                                  pinned) -> None:
    """Review today3 #3: a bundle signer issued by the CA that issued the transcript signer, no trust anchor
    given: refused, exit 2, saying why and what to do; with signing.certificate before anything is written,
    without it once the room's signer certificate is verified (nothing left at FILE.zip either way)."""
    _, transcripts, bundles = _one_ca(tmp_path)
    config = _archived_by(make_config, transcripts)
    settings = {"signing.certificate": str(transcripts.cert_path) if pinned else "",
                "bundle.signing_certificate": str(bundles.cert_path), "bundle.signing_key": str(bundles.key_path)}
    code, bundle = _make(config, tmp_path, keys, settings)
    err = capsys.readouterr().err
    assert code == 2 and not bundle.exists() and list(tmp_path.glob("*.zip*")) == [], err
    signer = f"CN=Transcript signer (SHA-256 {transcripts.fingerprint})"
    named = (f"the transcript signing certificate {signer} named in signing.certificate" if pinned else
             f"the signer certificate of ROOM_A v1, {signer}")
    assert f"CN=Legal team bundle signer{'' if pinned else ' (bundle.signing_certificate, bundle.signing_pkcs12)'}" \
           f": was issued by CN=Corporate CA, the issuer of {named}: README steps 4 " \
           "and 5 accept a transcript signed by any certificate that CA issued" in err, err
    assert "give the bundle signer a CA of its own" in err, err
    assert audit(config)[-1]["outcome"] == "failed"


def test_a_record_the_development_bundle_signer_signs_fails_readme_step_5(keys, tmp_path) -> None:
    """Why the bundle signer has a CA of its own (`keys init`): a record signed with its key fails the README's
    step 5 against the archive's CA (../CA.pem), as a record signed by a bundle signer of that CA would pass it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    require_tool("openssl")
    forged = tmp_path / "record.json"
    forged.write_bytes(b'{"forged": "a transcript no one archived"}\n')

    def step_5(cert, key, ca: Path) -> subprocess.CompletedProcess:
        signature = (pkcs7.PKCS7SignatureBuilder().set_data(forged.read_bytes()).add_signer(cert, key, hashes.SHA256())
                     .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature,
                                                        pkcs7.PKCS7Options.Binary]))
        (tmp_path / "record.json.p7s").write_bytes(signature)
        return subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", "record.json.p7s",
                               "-content", "record.json", "-CAfile", str(ca), "-out", "/dev/null"],
                              cwd=tmp_path, capture_output=True, text=True)

    bundle_cert = x509.load_pem_x509_certificates(Path(keys["bundle.crt.pem"]).read_bytes())[0]
    bundle_key = load_pem_private_key(Path(keys["bundle.key.pem"]).read_bytes(), None)
    assert step_5(bundle_cert, bundle_key, Path(keys["ca.crt.pem"])).returncode != 0
    ca, _, same_ca_bundles = _one_ca(tmp_path)  # the control: a bundle signer of the archive's CA passes step 5
    assert step_5(same_ca_bundles.cert, same_ca_bundles.key, ca.cert_path).returncode == 0


def test_bundle_settings_are_paths_relative_to_the_file_and_never_the_key_itself(tmp_path, keys) -> None:
    from archiver import config as config_module

    (tmp_path / "conf").mkdir()
    toml = write_toml(tmp_path / "conf" / "a.toml", {"bundle.signing_certificate": "k/bundle.crt.pem",
                                                     "bundle.signing_key": "k/bundle.key.pem"})
    loaded = config_module.load(toml, environ={})
    assert loaded["bundle.signing_key"] == str(tmp_path / "conf" / "k" / "bundle.key.pem")
    pem = Path(keys["bundle.key.pem"]).read_text()
    with pytest.raises(config_module.ConfigError) as refused:
        config_module.load(None, environ={"ARCHIVER_BUNDLE__SIGNING_KEY": pem})
    assert "bundle.signing_key" in str(refused.value) and "PRIVATE" not in str(refused.value)


def test_the_readme_commands_need_only_the_tools_it_names(room, keys, tmp_path) -> None:
    """openssl alone checks the bundle signer's signature (the README's command, run by hand)."""
    require_tool("openssl")
    code, bundle = _make(room, tmp_path, keys, _bundle_keys(keys))
    folder = _unzip(bundle, tmp_path / "u")
    done = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", "SHA256SUMS.p7s",
                           "-content", "SHA256SUMS", "-CAfile", str(keys["bundle-ca.crt.pem"]), "-out", "/dev/null"],
                          cwd=folder, capture_output=True, text=True)
    assert code == 0 and done.returncode == 0 and "Verification successful" in done.stderr, done
    wrong = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", "SHA256SUMS.p7s",
                            "-content", "SHA256SUMS", "-CAfile", str(keys["ca.crt.pem"]), "-out", "/dev/null"],
                           cwd=folder, capture_output=True, text=True)
    assert wrong.returncode != 0, wrong
    assert (folder / "rooms/ROOM_A-v1/transcript.pdf").is_file()


@pytest.mark.parametrize("setting", ["signing.key", "signing.pkcs12"])
def test_either_transcript_key_setting_is_warned_of(make_config, setting) -> None:
    from archiver.bundle_signer import transcript_key_configured

    config = make_config(**{"signing__key": "", "signing__pkcs12": "", setting.replace(".", "__"): "/keys/x"})
    assert transcript_key_configured(config).startswith(f"the transcript signing key ({setting}) is configured on "
                                                        "this host, which decrypts")
    assert transcript_key_configured(make_config(signing__key="")) == ""


def test_one_issuer_is_the_issuer_name_and_its_key_identifier_where_both_have_one(tmp_path) -> None:
    """Two CAs of one name, told apart by their authority key identifiers: not one issuer; without the
    identifier, the name alone decides (bundle_signer._same_issuer)."""
    import datetime as dt

    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from archiver.bundle_signer import _same_issuer
    from certfactory import make

    def issued(ca_key, name: str, aki: bool = True) -> x509.Certificate:
        now = dt.datetime.now(dt.timezone.utc)
        leaf = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Corporate CA")]))
                   .public_key(leaf.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))
        if aki:
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                            critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    first, second = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    assert _same_issuer(issued(first, "Transcripts"), issued(first, "Bundles"))
    assert not _same_issuer(issued(first, "Transcripts"), issued(second, "Bundles"))
    assert _same_issuer(issued(first, "Transcripts"), issued(second, "Bundles", aki=False))
    assert not _same_issuer(make(tmp_path, "A", usages=SIGNER).cert, make(tmp_path, "B", usages=SIGNER).cert)
