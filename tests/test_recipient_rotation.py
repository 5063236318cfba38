"""After the legal team's recipient certificate is rotated, the archives made before still open with the old key,
and a key that cannot open one is told which recipients it is encrypted to (from the envelope itself)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes

from archiver.envelope import EnvelopeError, RecipientKey
from archiver.integrity import verify_archive
from certfactory import make
from retrieval_helpers import archive_samples, run_cli, stored_path


def _rotated(make_config, keys, tmp_path):
    """A version archived to the development recipient, then a configuration whose recipient is a new one."""
    config = make_config()
    (entry,) = archive_samples(config, count=1)
    new = _opening_nothing(config, entry, tmp_path)
    return config.with_overrides(**{"encryption.recipients": [str(new.cert_path)]}), entry, new


def _opening_nothing(config, entry, tmp_path):
    """A new recipient whose key opens none of ENTRY's envelopes. An envelope has no integrity of its own
    (AES-CBC, docs/decisions.md): under a wrong key about one in 256 still has valid padding and decrypts to
    other bytes, named as a plaintext that differs from the index; the tests here are about the other case."""
    for attempt in range(20):
        new = make(tmp_path / f"new-{attempt}", "legal-2026")
        key = RecipientKey(new.key, new.cert)
        if all(_refused(key, stored_path(config, obj["key"]).read_bytes()) for obj in entry["objects"].values()):
            return new
    raise AssertionError("20 keys in a row decrypted an envelope of this entry: not chance")


def _refused(key: RecipientKey, sealed: bytes) -> bool:
    try:
        key.decrypt(sealed)
    except EnvelopeError:
        return True
    return False


def test_an_archive_made_before_a_rotation_still_opens_with_the_old_key(make_config, keys, tmp_path) -> None:
    rotated, entry, new = _rotated(make_config, keys, tmp_path)
    old = RecipientKey.load(str(keys["legal.key.pem"]), [str(keys["legal.crt.pem"])])
    assert verify_archive(rotated, [entry["room"]], old).problem_count == 0
    assert run_cli(rotated, tmp_path, "retrieve", entry["room"], "--key", str(keys["legal.key.pem"]),
                   "--cert", str(keys["legal.crt.pem"]), "--out", str(tmp_path / "out"), "--reason", "case 7") == 0


def test_a_key_the_archive_is_not_encrypted_to_is_told_which_recipient_it_needs(make_config, keys, tmp_path,
                                                                                 capsys) -> None:
    rotated, entry, new = _rotated(make_config, keys, tmp_path)
    from cryptography import x509
    old_cert = x509.load_pem_x509_certificate(keys["legal.crt.pem"].read_bytes())
    serial = f"{old_cert.serial_number:x}"
    code = run_cli(rotated, tmp_path, "retrieve", entry["room"], "--key", str(new.key_path),
                   "--out", str(tmp_path / "out"), "--reason", "case 7")
    err = capsys.readouterr().err
    assert code == 2, err
    # the recipient it needs, by the issuer and serial number the envelope names it by (as openssl matches it)
    assert "encrypted to" in err and "Archiver development CA" in err and serial in err, err
    assert f"{new.cert.serial_number:x}" in err, err  # and the certificate of the key given
    report = verify_archive(rotated, [entry["room"]], RecipientKey(new.key, new.cert))
    problems = [p.problem for p in report.problems]
    assert problems and all("encrypted to" in p and serial in p for p in problems), problems
    assert old_cert.fingerprint(hashes.SHA256()).hex() not in new.fingerprint  # (two distinct recipients)


def test_an_archive_still_opens_once_its_recipient_certificate_has_expired(make_config, keys, tmp_path) -> None:
    """Archives outlive certificates: the legal team's key opens what was encrypted to it after its certificate's
    notAfter (only encrypting to it is refused then)."""
    import time

    from certfactory import ahead

    legal = make(tmp_path / "short", "Legal", not_after=ahead(seconds=3))
    config = make_config(encryption__recipients=[str(legal.cert_path)])
    (entry,) = archive_samples(config, count=1)
    time.sleep(max(0.0, (legal.cert.not_valid_after_utc - ahead()).total_seconds()) + 0.5)
    assert run_cli(config, tmp_path, "retrieve", entry["room"], "--key", str(legal.key_path), "--cert",
                   str(legal.cert_path), "--out", str(tmp_path / "out"), "--reason", "case 8") == 0
    assert verify_archive(config, [entry["room"]], RecipientKey(legal.key, legal.cert)).problem_count == 0


def test_a_former_recipients_key_without_its_certificate_is_told_to_give_it(make_config, keys, tmp_path,
                                                                             capsys) -> None:
    """After a rotation encryption.recipients names the new certificate only: the old key file (no certificate in
    it) is not "not a key the archive was encrypted to", it lacks its certificate, which --cert gives."""
    rotated, entry, new = _rotated(make_config, keys, tmp_path)
    code = run_cli(rotated, tmp_path, "retrieve", entry["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(tmp_path / "out"), "--reason", "case 7")
    err = capsys.readouterr().err
    assert code == 2 and "give its certificate with --cert (a former recipient's, after a rotation" in err, err
