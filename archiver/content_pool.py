"""Keyed verification in worker processes: decrypting and validating signatures is CPU-bound.

Profiled per chat (40 chats, one process, idle machine): about 70 ms, all of it in
the libraries: 3 RSA-3072 decryptions (9 ms, one per object), pyHanko parsing
the PDF (20 ms, 16 of them reading the signature's hex /Contents) and validating
its signature (20 ms), and validating the record's CMS signature (14 ms). None is
repeated work of ours, so the checks are spread over processes instead.

Workers come from a fork server, like the archive pass's (worker_processes). The legal team's key
reaches them as PEM bytes over the pool's pipe (never a file, never a log). The
caller keeps at most `in_flight` chats submitted, so memory stays bounded, and
reads results in submission order, so the report reads as it does in one process.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from archiver.artifacts import _exit_with, process_start
from archiver.certificates import fingerprint
from archiver.config import Config
from archiver.envelope import EnvelopeError, RecipientKey
from archiver.pins import Pinned
from archiver.redaction import Redactor
from archiver.worker_processes import forkserver_context

_worker: dict[str, Any] = {}  # in each worker: the key and trust anchors, loaded once


def _init(key_pem: bytes, cert_pem: bytes, trust_pem: list[bytes], verifier_pid: int,
          redaction: Config | None = None, pinned_pem: tuple[list[bytes], list[bytes]] | None = None) -> None:
    # Like an archive pass's workers: exit when the verifier is gone (killed), rather than wait forever.
    threading.Thread(target=_exit_with, args=(verifier_pid, process_start(verifier_pid)), daemon=True).start()
    key = serialization.load_pem_private_key(key_pem, None)
    _worker["key"] = RecipientKey(key, x509.load_pem_x509_certificate(cert_pem))  # type: ignore[arg-type]
    _worker["trust"] = [x509.load_pem_x509_certificate(pem) for pem in trust_pem]
    _worker["redactor"] = Redactor.from_config(redaction) if redaction is not None else None
    _worker["pinned"] = None if pinned_pem is None else Pinned(
        {fingerprint(c): c for c in map(x509.load_pem_x509_certificate, pinned_pem[0])},
        tuple(map(x509.load_pem_x509_certificate, pinned_pem[1])))


def _content_checks(entry: dict[str, Any], sealed: dict[str, bytes]) -> list[Any]:
    """In a worker: the checks `check_content` adds for ENTRY's fetched objects."""
    from archiver.integrity import Check, Opened, check_content

    opened = Opened(entry, sealed=sealed)
    try:
        check_content(opened, _worker["key"], _worker["trust"], _worker["redactor"], _worker["pinned"])
    except EnvelopeError as exc:
        opened.checks.append(Check("decrypts with the given key", False, str(exc)))
    return opened.checks


def _opened_content(entry: dict[str, Any], sealed: dict[str, bytes]) -> tuple[list[Any], dict[str, bytes], list[bytes]]:
    """In a worker, for a bundle: the checks, the plaintexts and the signer's certificates (DER).
    EnvelopeError (the key opens nothing) reaches the caller, which stops."""
    from archiver.integrity import Opened, check_content

    opened = check_content(Opened(entry, sealed=sealed), _worker["key"], _worker["trust"], pinned=_worker["pinned"])
    return opened.checks, opened.plain, [c.public_bytes(Encoding.DER) for c in opened.certificates]


class ContentPool:
    """WORKERS processes running `check_content` (with REDACTION's rules when given); at most IN_FLIGHT chats
    submitted at once."""

    def __init__(self, workers: int, key: RecipientKey, trust: list[x509.Certificate] | None,
                 redaction: Config | None = None, pinned: Pinned | None = None) -> None:
        key_pem = key.key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        context = forkserver_context(["archiver.integrity"])
        self.in_flight = 2 * workers
        self.pool = cf.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init,
            initargs=(key_pem, key.certificate.public_bytes(Encoding.PEM),
                      [c.public_bytes(Encoding.PEM) for c in trust or []], os.getpid(), redaction,
                      None if pinned is None else ([c.public_bytes(Encoding.PEM) for c in pinned.signers.values()],
                                                   [c.public_bytes(Encoding.PEM) for c in pinned.timestamp_anchors])))

    def submit(self, entry: dict[str, Any], sealed: dict[str, bytes]) -> cf.Future:
        return self.pool.submit(_content_checks, entry, sealed)

    def submit_opened(self, entry: dict[str, Any], sealed: dict[str, bytes]) -> cf.Future:
        return self.pool.submit(_opened_content, entry, sealed)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
