"""The envelope's algorithms, as docs/decisions.md ("Keys and algorithms") states them: RSA PKCS#1 v1.5 key
transport (the only one cryptography's builder makes) and AES-256-CBC, with no integrity of its own, so every
object's ciphertext and plaintext SHA-256 is in the index and what it holds is signed."""

from __future__ import annotations

from asn1crypto import cms

from archiver.envelope import Envelope, RecipientKey
from certfactory import make


def test_the_envelope_uses_rsa_pkcs1_v15_key_transport_and_aes_256_cbc(tmp_path) -> None:
    legal = make(tmp_path, "legal")
    envelope = cms.ContentInfo.load(Envelope([legal.cert]).encrypt(b"evidence"))["content"]
    (info,) = envelope["recipient_infos"]
    assert info.name == "ktri" and info.chosen["key_encryption_algorithm"]["algorithm"].native == "rsaes_pkcs1v15"
    assert envelope["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"].native == "aes256_cbc"


def test_a_flipped_ciphertext_byte_can_decrypt_to_other_bytes_without_an_error(tmp_path) -> None:
    """CBC has no integrity: a flipped byte in the middle decrypts, to other bytes, which is why verify compares
    the plaintext with its recorded SHA-256 and never trusts a successful decryption alone."""
    legal = make(tmp_path, "legal")
    plain = bytes(range(256)) * 4
    sealed = bytearray(Envelope([legal.cert]).encrypt(plain))
    sealed[-40] ^= 0x01  # inside the last-but-one AES block: the padding block stays intact
    opened = RecipientKey(legal.key, legal.cert).decrypt(bytes(sealed))
    assert opened != plain and len(opened) == len(plain)
