"""The CMS of a PDF signature, assembled per chat from the constant DER of one pyHanko built.

pyHanko's `async_sign` builds every CMS from asn1crypto objects through asyncio,
most of the CPU of signing a PDF. Yet for one signer only three things vary from
one PDF to the next: the 32-byte message-digest value inside the signed
attributes, the signature value (ECDSA's is DER of 70 to 72 bytes, so the
lengths around it change) and, for B-T, the unsigned attribute holding the
timestamp token over that signature value. `PdfCms` has pyHanko build one CMS
once, for a dummy digest, and keeps its DER split around those three parts;
per chat it patches the digest in, signs the signed attributes and writes the
few enclosing lengths. The split follows the parsed structure of our own CMS,
never a search of bytes, and is checked at once: the parts put back together
must give pyHanko's DER again, byte for byte. The tests compare it with
pyHanko's output for every signature shape.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from typing import Callable

from asn1crypto import cms
from pyhanko.sign.signers.pdf_cms import Signer as PyhankoSigner
from pyhanko.sign.timestamps import TimeStamper

DIGEST_ALGORITHM = "sha256"
_DUMMY_DIGEST = bytes(32)
_FIELDS_BEFORE_ATTRIBUTES = ("version", "sid", "digest_algorithm")


class PdfCms:
    """PAdES CMS SignedData (DER) for a PDF's byte-range digest, exactly as pyHanko's SIGNER makes it."""

    def __init__(self, signer: PyhankoSigner, sign: Callable[[bytes], bytes],
                 timestamper: TimeStamper | None = None) -> None:
        """SIGN signs the encoded signed attributes with the key of SIGNER's certificate; TIMESTAMPER,
        when given, stamps each signature value (B-T) as pyHanko's signer would."""
        self._sign = sign
        self._timestamper = timestamper
        built = _event_loop().run_until_complete(signer.async_sign(_DUMMY_DIGEST, DIGEST_ALGORITHM, use_pades=True))
        self._split(built)
        if self._assemble(_DUMMY_DIGEST, built["content"]["signer_infos"][0]["signature"].native) != built.dump():
            raise ValueError("pyHanko's CMS has a shape this module does not know how to reuse")

    def _split(self, built: cms.ContentInfo) -> None:
        signed_data = built["content"]
        (signer_info,) = signed_data["signer_infos"]
        if signer_info["unsigned_attrs"].dump():
            raise ValueError("pyHanko's CMS carries unsigned attributes made without a timestamper")
        self._content_type = built["content_type"].dump()
        infos = signed_data["signer_infos"].dump()
        self._signed_data_head = signed_data.contents[:-len(infos)]  # version, algorithms, content, certificates
        self._signer_info_head = b"".join(signer_info[name].dump() for name in _FIELDS_BEFORE_ATTRIBUTES)
        self._signature_algorithm = signer_info["signature_algorithm"].dump()
        # Signed as a SET OF (tag 0x31), stored as [0] IMPLICIT (0xA0): same length, same content.
        attributes = signer_info["signed_attrs"]
        encoded = b"\x31" + attributes.dump()[1:]
        # The message-digest value ends its attribute. The attributes' DER order is decided by their
        # lengths and types before any value, so it is the same for every digest.
        offset = len(encoded) - len(attributes.contents)
        for attribute in attributes:
            offset += len(attribute.dump())
            if attribute["type"].native == "message_digest":
                self._attributes = (encoded[:offset - len(_DUMMY_DIGEST)], encoded[offset:])
                return
        raise ValueError("pyHanko's CMS has no message-digest attribute")

    def __call__(self, digest: bytes) -> bytes:
        """The CMS for byte ranges whose SHA-256 is DIGEST; a TimestampError (an OSError) if B-T's
        authority fails, so that the chat is retried rather than signed without its timestamp."""
        if len(digest) != len(_DUMMY_DIGEST):
            raise ValueError(f"a {DIGEST_ALGORITHM} digest has {len(_DUMMY_DIGEST)} bytes, not {len(digest)}")
        signature = self._sign(self.signed_attributes(digest))
        return self._assemble(digest, signature, self._timestamp(signature) if self._timestamper else b"")

    def signed_attributes(self, digest: bytes) -> bytes:
        """The DER SET OF signed attributes that is signed, with DIGEST as message-digest."""
        head, tail = self._attributes
        return head + digest + tail

    def _timestamp(self, signature: bytes) -> bytes:
        """The unsigned attributes ([1] IMPLICIT) with a signature-timestamp token over SIGNATURE."""
        stamp = self._timestamper.async_timestamp(hashlib.sha256(signature).digest(), DIGEST_ALGORITHM)
        token = _event_loop().run_until_complete(stamp)
        attribute = cms.CMSAttribute({"type": "signature_time_stamp_token", "values": [token]})
        return _tlv(0xA1, attribute.dump())

    def _assemble(self, digest: bytes, signature: bytes, unsigned: bytes = b"") -> bytes:
        signer_info = _tlv(0x30, self._signer_info_head + b"\xa0" + self.signed_attributes(digest)[1:]
                           + self._signature_algorithm + _tlv(0x04, signature) + unsigned)
        signed_data = _tlv(0x30, self._signed_data_head + _tlv(0x31, signer_info))
        return _tlv(0x30, self._content_type + _tlv(0xA0, signed_data))


def _tlv(tag: int, content: bytes) -> bytes:
    """A DER tag-length-value with a one-byte TAG."""
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


_LOOPS = threading.local()


def _event_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process and thread for pyHanko's coroutines, rather than a new one per signature
    (asyncio.run). Per thread: a loop runs one coroutine at a time, and `serve`'s jobs (a seal, a retention
    run's report) sign in threads of their own, at the same time."""
    held = getattr(_LOOPS, "loop", None)
    if held is None or held[0] != os.getpid():  # a forked child gets its own
        _LOOPS.loop = held = (os.getpid(), asyncio.new_event_loop())
    return held[1]
