"""An insider who can write the store and the index, holding no signing key, changes a signed PDF: an incremental
update appended after the signed revision (the signature still verifies over its byte ranges) or bytes in the
/Contents hex string (outside them). Objects re-encrypted to the legal team and the index's hashes rewritten, so
only the signature checks can tell."""

from __future__ import annotations

import hashlib
from io import BytesIO

from cryptography import x509
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from archiver.envelope import Envelope, RecipientKey
from retrieval_helpers import archive_samples, index, overwrite_stored, run_cli, stored_path


def _replace_pdf(config, keys, entry, change) -> None:
    """The entry's PDF as CHANGE(plaintext) makes it, re-encrypted and recorded as an insider would."""
    key = RecipientKey.load(str(keys["legal.key.pem"]), [str(keys["legal.crt.pem"])])
    obj = entry["objects"]["pdf"]
    plain = change(key.decrypt(stored_path(config, obj["key"]).read_bytes()))
    sealed = Envelope([x509.load_pem_x509_certificate(keys["legal.crt.pem"].read_bytes())]).encrypt(plain)
    overwrite_stored(config, obj["key"], sealed)
    index(config).update_one({"_id": entry["_id"]}, {"$set": {
        "objects.pdf.size": len(sealed), "objects.pdf.sha256": hashlib.sha256(sealed).hexdigest(),
        "objects.pdf.plaintext_size": len(plain), "objects.pdf.plaintext_sha256": hashlib.sha256(plain).hexdigest()}})


def _appended(pdf: bytes) -> bytes:
    writer = IncrementalPdfFileWriter(BytesIO(pdf))
    forged = writer.add_object(generic.StreamObject(stream_data=b"BT /F1 24 Tf 72 72 Td (FORGED) Tj ET"))
    writer.add_stream_to_page(0, forged)  # drawn over the first page
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def _contents_padding_changed(pdf: bytes) -> bytes:
    """The last hex digits of /Contents (its zero padding, after the CMS) made non-zero."""
    end = pdf.index(b"> >>", pdf.index(b"/Contents <"))
    return pdf[:end - 8] + b"41414141" + pdf[end:]


def test_an_update_appended_after_the_signed_revision_fails_verify_and_retrieve(make_config, keys, tmp_path,
                                                                                 capsys) -> None:
    config = make_config()
    (entry,) = archive_samples(config, count=1)
    _replace_pdf(config, keys, entry, _appended)
    key = str(keys["legal.key.pem"])
    assert run_cli(config, tmp_path, "verify", "--key", key, "--workers", "1", entry["room"]) == 3
    out = capsys.readouterr().out
    assert "failed: pdf: the signature covers the whole file" in out, out
    assert run_cli(config, tmp_path, "retrieve", entry["room"], "--key", key, "--out", str(tmp_path / "case"),
                   "--reason", "case") == 3
    assert "the signature covers the whole file" in capsys.readouterr().err
    assert not (tmp_path / "case").exists()


def test_bytes_changed_in_the_signature_padding_are_no_valid_signature(make_config, keys, tmp_path, capsys) -> None:
    """/Contents is the one part of the file no byte range covers: pyHanko reads the CMS at its start and
    ignores the rest, so a payload could hide there under a valid signature; pdfsig says "Not total document
    signed" (the bundle's offline check fails), and verify names it."""
    config = make_config()
    (entry,) = archive_samples(config, count=1)
    _replace_pdf(config, keys, entry, _contents_padding_changed)
    assert run_cli(config, tmp_path, "verify", "--key", str(keys["legal.key.pem"]), "--workers", "1",
                   entry["room"]) == 3
    out = capsys.readouterr().out
    assert ("failed: pdf: its signature's /Contents holds the CMS and zero padding only (4 bytes after the CMS are "
            "not zero)") in out, out


def _token_swapped(tsa):
    """CHANGE for _replace_pdf: the signature timestamp token swapped for a genuine one of the same authority
    over other bytes (the unsigned attribute is outside what the signature covers), /Contents the same size."""
    from asn1crypto import cms

    from archiver import timestamps

    def change(pdf: bytes) -> bytes:
        start = pdf.index(b"/Contents <", pdf.index(b"/SubFilter /ETSI.CAdES.detached")) + len(b"/Contents <")
        end = pdf.index(b">", start)
        signed = cms.ContentInfo.load(bytes.fromhex(pdf[start:end].decode()))
        other = cms.ContentInfo.load(timestamps.timestamp(timestamps.timestamper(tsa.url, 300), b"other bytes"))
        signed["content"]["signer_infos"][0]["unsigned_attrs"][0]["values"][0] = other
        hexed = signed.dump(force=True).hex().encode()
        assert len(hexed) <= end - start
        return pdf[:start] + hexed.ljust(end - start, b"0") + pdf[end:]
    return change


def test_a_signature_timestamp_swapped_for_another_imprints_fails_verify(make_config, keys, tsa, tmp_path,
                                                                         capsys) -> None:
    config = make_config(signing__timestamp_url=tsa.url)
    (entry,) = archive_samples(config, count=1)
    _replace_pdf(config, keys, entry, _token_swapped(tsa))
    assert run_cli(config, tmp_path, "verify", "--key", str(keys["legal.key.pem"]), "--workers", "1",
                   entry["room"]) == 3
    out = capsys.readouterr().out
    assert "failed: pdf: its signature timestamp (RFC 3161, PAdES B-T) is intact and valid" in out, out
