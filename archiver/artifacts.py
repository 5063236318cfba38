"""The core: one chat in, signed and encrypted archive objects out.

`ArtifactBuilder` is pure (no MongoDB, no store), so it runs the same in a
worker process, in the offline `render` command and in tests. The worker entry
points below also put the objects in the store, next to the CPU work.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import functools
import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Iterator, Mapping

from cryptography import x509

from archiver import attachments as attachments_
from archiver import certificates, heap, seals, timestamps
from archiver.attachment_retries import NothingNew, Retry, Stored, improved
from archiver.attachments import Attachment, Fetcher, Kept, Policy
from archiver.config import Config
from archiver.envelope import Envelope, load_recipients, named_certificates
from archiver.logs import event
from archiver.policy import Policy as RetentionPolicy, configured_policy
from archiver.names import version_folder
from archiver.redaction import RedactionNote, Redactor
from archiver.render.pdf import ArchiveInfo, Limits, PdfRenderer
from archiver.render.record import build_record
from archiver.search import TERMS_FORMAT, entry_terms, load_search_key
from archiver.signing import Signer, SigningError, SigningIdentity, load_identity, sha256_hex
from archiver.store import (ObjectStore, PutFailed, StoredObject, StoreError, UnconfirmedPut, open_store,
                            store_location)
from archiver.store.local import LocalStore
from archiver.transcript import Transcript, has_ended, normalise

# name in the index -> (file name stem, extension of the plaintext)
OBJECTS = {"pdf": ("transcript", "pdf"), "record": ("record", "json"), "record_signature": ("record", "json.p7s")}


@dataclass(frozen=True)
class Plaintext:
    transcript: Transcript
    pdf: bytes  # signed
    record: bytes
    record_signature: bytes  # detached CMS over `record`
    placeholders: int
    source_sha256: str  # over the redacted source documents
    redaction: RedactionNote
    shortened: int = 0  # fields the PDF shows cut (the record holds them whole)
    attachments: tuple[Attachment, ...] = ()  # fetched or not, each with its outcome

    def files(self) -> dict[str, bytes]:
        return {"pdf": self.pdf, "record": self.record, "record_signature": self.record_signature}


@dataclass(frozen=True)
class Blob:
    name: str  # pdf / record / record_signature
    key: str
    data: bytes  # CMS EnvelopedData
    sha256: str
    plaintext_sha256: str
    plaintext_size: int
    extra: dict[str, Any] = field(default_factory=dict)  # an attachment's type, fetch time, position

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "sha256": self.sha256, "size": len(self.data),
                "plaintext_sha256": self.plaintext_sha256, "plaintext_size": self.plaintext_size, "version_id": "",
                **self.extra}


@dataclass(frozen=True)
class Artifacts:
    entry: dict[str, Any]  # the index entry, objects included
    blobs: list[Blob] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    plain: Plaintext | None = None  # sent back by a worker only for an on-demand export


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


class ArtifactBuilder:
    """Holds the loaded template, fonts, signing key and recipients; build once per process."""

    def __init__(self, renderer: PdfRenderer, signer: Signer, envelope: Envelope | None,
                 max_message_chars: int, retain_days: int, redactor: Redactor,
                 search_key: bytes | None = None, fetcher: Fetcher | None = None,
                 policy: RetentionPolicy | None = None, store: ObjectStore | None = None,
                 timestamper: timestamps.CheckedTimeStamper | None = None) -> None:
        """TIMESTAMPER, SIGNER's, dates each signature too: that time is checked against the certificate's
        validity as well."""
        self.search_key = search_key  # keyed word hashes for `archiver search --text`
        self.fetcher = fetcher  # attachments; None: not fetched (disabled, or an offline render)
        self.store = store  # where an attachment retry reads the files an earlier version stored
        self.policy = policy  # retention rules: each archive's Object Lock retain-until follows its rule
        self.renderer = renderer
        self.signer = signer
        self.envelope = envelope
        self.max_message_chars = max_message_chars
        self.retain_days = retain_days
        self.redactor = redactor
        # Read once here, compared with the clock for every chat: a certificate may expire while a pass runs.
        self.signing_validity = signer.identity.validity  # naming the setting and file it was loaded from
        self.recipient_validity = [certificates.Validity.of("encryption.recipients", cert)
                                   for cert in (envelope.recipients if envelope else [])]
        self.timestamper = timestamper

    @classmethod
    def from_config(cls, config: Config, *, encrypt: bool = True, store: ObjectStore | None = None
                    ) -> "ArtifactBuilder":
        """ENCRYPT: a builder for the archive (attachments fetched when enabled); else for an offline render.
        STORE: the archive's, where an attachment retry finds the files an earlier version stored."""
        policy = Policy.from_config(config)
        identity, recipients = configured_keys(config) if encrypt else (configured_identity(config), [])
        url, skew = config["signing.timestamp_url"], config["signing.timestamp_max_skew_seconds"]
        stamper = timestamps.CheckedTimeStamper(url, skew) if url else None  # B-T, else B-B
        return cls(
            PdfRenderer(config["render.template"], config["render.timezone"], render_limits(config)),
            Signer(identity, timestamper=stamper),
            Envelope(recipients) if encrypt else None,
            config["archive.max_message_chars"],
            config["storage.retain_days"],
            Redactor.from_config(config),
            load_search_key(config["search.key_file"]) if config["search.key_file"] else None,
            Fetcher(policy) if encrypt and policy.enabled else None,
            configured_policy(config),
            store,
            stamper,
        )

    def plaintext(self, chat: Mapping[str, Any], contact: Mapping[str, Any] | None, kind: str,
                  version: int, generated_at: dt.datetime, timings: dict[str, float] | None = None,
                  retry: Retry | None = None, source_sha256: str = "",
                  redaction: RedactionNote | None = None, source_json: bytes | None = None,
                  earlier: tuple[Stored, ...] = (), copy_of: dt.datetime | None = None) -> Plaintext:
        """Signed PDF and JSON record; raises InvalidChat for a chat that cannot be archived, and
        NothingNew for a RETRY of attachments that fetched nothing more (before rendering anything).
        SOURCE_SHA256, the digest the archive pass computed for the index, is checked, not computed again.
        REDACTION: CHAT and CONTACT are the copies the archive pass redacted (by these settings) for its
        digest, not redacted again; the record they make must still have that digest. SOURCE_JSON: the
        record's `source` the pass wrote for that digest (record.source_json of the copies), not written again.
        EARLIER: the files the room's earlier versions stored (attachment_retries.earlier): kept, not fetched again.
        COPY_OF: when VERSION was archived, for a fresh copy of it (signed at GENERATED_AT): the PDF says both."""
        timings = {} if timings is None else timings
        started = certificates.now()
        self.check_validity(started, started)
        if redaction is None:
            with timed(timings, "redact"):  # first: everything below reads only the redacted copies
                redacted = self.redactor.apply(chat, contact)
            chat, contact, note = redacted.chat, redacted.contact, redacted.note
        elif (redaction.enabled, redaction.version) != (self.redactor.enabled, self.redactor.version):
            raise ValueError(f"redacted with settings {redaction.version}, this builder's are {self.redactor.version}")
        else:
            note = redaction
        with timed(timings, "render"):
            # The chat itself says whether it ended: one queued as ended may have been re-opened since
            # (its endChat removed), and a transcript never claims an end its source no longer has.
            status = "ended" if has_ended(chat) else "interim" if kind == "ended" else kind
            transcript = normalise(chat, contact, status=status, max_message_chars=self.max_message_chars)
        fetched: tuple[Attachment, ...] = ()
        if self.fetcher is not None:
            with timed(timings, "fetch"):
                fetched = tuple(self.fetcher.fetch_all(
                    transcript.messages, self.redactor.masked, self._kept(transcript, retry, earlier),
                    functools.partial(self._read_back, transcript.room)))
        if retry is not None and not improved(fetched, retry):
            raise NothingNew(transcript.room, retry.of_version, retry.retries)
        with timed(timings, "render"):
            # The record first: the PDF carries it (attached, under the same signature) and states its digest.
            record, digest = build_record(transcript, chat, contact, version=version, generated_at=generated_at,
                                          redaction=note.describe(),
                                          attachments=[a.describe() for a in fetched] if fetched else None,
                                          expected_digest=source_sha256, source=source_json)
            rendered = self.renderer.render(transcript, redaction=note, attachments=fetched,
                                            archive=self.archive_info(version, generated_at, digest, record, copy_of),
                                            signature=self.signer.slot())
        with timed(timings, "sign"):
            if self.timestamper:
                self.timestamper.last_time = None
            pdf = self.signer.sign_rendered(rendered.data, rendered.signature)
            record_signature = self.signer.sign_detached(record)
        self.check_validity(started, certificates.now())  # signatures made as the certificate expired are dropped
        stamped = self.timestamper.last_time if self.timestamper else None
        if stamped is not None:  # the PDF's timestamp: within signing.timestamp_max_skew_seconds of our clock
            self.signing_validity.check_timestamp(stamped)
        return Plaintext(transcript, pdf, record, record_signature, rendered.placeholders, digest, note,
                         rendered.shortened, fetched)

    def check_validity(self, start: dt.datetime, end: dt.datetime) -> None:
        """NotValidNow unless the certificates are valid from START to END (this machine's clock), which
        holds the times a chat's signatures state (the PDF's /M, the record's signingTime)."""
        self.signing_validity.check(start, end)
        for validity in self.recipient_validity:
            validity.check(start, end)

    def _kept(self, transcript: Transcript, retry: Retry | None, earlier: tuple[Stored, ...]
              ) -> dict[int, list[Kept]]:
        """By position, the copies earlier versions stored of TRANSCRIPT's messages' files, to be read back
        (still encrypted, by the fetcher once they fit in the per-chat caps: _read_back) and copied into the
        new version: RETRY's by position (the same source), then EARLIER's by match key (message id and URL),
        newest version first. Those encrypted to other recipients than this version's are not kept."""
        if self.store is None or self.envelope is None:
            return {}
        room, recipients = transcript.room, tuple(self.envelope.recipient_ids)
        keys = attachments_.match_keys(room, transcript.messages)
        sources = [(s.version, s.recipients, {p: s.files[k] for p, k in keys.items() if k in s.files}) for s in earlier]
        if retry:
            sources.insert(0, (retry.of_version, retry.recipients, dict(retry.kept)))
        candidates: dict[int, list[Kept]] = {}
        refused: set[int] = set()  # versions encrypted to other recipients (said once each)
        for version, theirs, files in sources:
            if files and theirs != recipients:  # a copy would stay closed to this version's new recipients
                if version not in refused:
                    event("attachment_not_kept", logging.INFO, room=room, error="the recipients have changed since "
                          f"version {version}: its files are fetched again, for this version's recipients")
                refused.add(version)
                continue
            for position, file in files.items():
                candidates.setdefault(position, []).append(file)
        # a retry's file is its version's by match key too: read once
        return {position: list(dict.fromkeys(files)) for position, files in candidates.items()}

    def _read_back(self, room: str, file: Kept) -> Kept | None:
        """FILE with its stored object, if that is still the one its entry names (else None, and an event):
        one that is gone or altered gives way to an older copy, else a fetch."""
        assert self.store is not None
        try:
            sealed = self.store.get(file.key, file.version_id)
        except (StoreError, OSError) as exc:
            event("attachment_not_kept", logging.WARNING, room=room, key=file.key, error=str(exc))
            return None
        if sha256_hex(sealed) != file.sha256:  # verify reports the object; this version fetches the file
            event("attachment_not_kept", logging.WARNING, room=room, key=file.key,
                  error="the stored object is not the one its index entry names (SHA-256 differs)")
            return None
        return dataclasses.replace(file, sealed=sealed)

    def archive_info(self, version: int, generated_at: dt.datetime, digest: str, record: bytes,
                     copy_of: dt.datetime | None = None) -> ArchiveInfo:
        """What the PDF's archive block states (and the record it attaches)."""
        certificate = self.signer.identity.certificate
        return ArchiveInfo(generated_at, version, digest, archiver_version(), certificate.subject.rfc4514_string(),
                           self.signer.identity.fingerprint, record, copy_of)

    def build(self, chat: Mapping[str, Any], contact: Mapping[str, Any] | None, kind: str,
              version: int, generated_at: dt.datetime, retry: Retry | None = None,
              source_sha256: str = "", redaction: RedactionNote | None = None,
              source_json: bytes | None = None, earlier: tuple[Stored, ...] = ()) -> Artifacts:
        assert self.envelope is not None, "built without recipients"
        timings: dict[str, float] = {}
        plain = self.plaintext(chat, contact, kind, version, generated_at, timings, retry, source_sha256, redaction,
                               source_json, earlier)
        folder = version_folder(plain.transcript.room, version)
        blobs = []
        with timed(timings, "encrypt"):
            for name, data in plain.files().items():
                sealed = self.envelope.encrypt(data)
                digest = sha256_hex(sealed)
                stem, ext = OBJECTS[name]
                blobs.append(Blob(name, f"{folder}/{stem}-{digest[:16]}.{ext}.p7m", sealed, digest,
                                  sha256_hex(data), len(data)))
            keys = attachments_.match_keys(plain.transcript.room, plain.transcript.messages)
            blobs += [self._attachment_blob(a, folder, keys[a.position])
                      for a in plain.attachments if a.outcome == attachments_.FETCHED]
        entry = index_entry(plain, version, generated_at, self.retain_days)
        rule = self.policy.rule_for(entry) if self.policy else None
        if rule is not None:  # the chat's retention rule sets its lock
            entry["retention_rule"] = rule.name
            if rule.lock_days is not None:
                entry["retain_until"] = generated_at + dt.timedelta(days=rule.lock_days)
        entry.update(
            signing_certificate_sha256=self.signer.identity.fingerprint,
            recipients=self.envelope.recipient_ids,
            encryption="CMS EnvelopedData, AES-256-CBC, RSA key transport",
            objects={b.name: b.describe() for b in blobs},
        )
        if plain.attachments:
            entry.update(attachment_fields(plain.attachments, blobs, generated_at, self.fetcher, retry))
        if self.search_key:
            entry["terms"] = entry_terms((m.text for m in plain.transcript.messages if m.text), self.search_key)
            entry["terms_format"] = TERMS_FORMAT
        return Artifacts(entry=entry, blobs=blobs, timings=timings, plain=plain)

    def _attachment_blob(self, a: Attachment, folder: str, match: str) -> Blob:
        """A's object; MATCH (its message's match key) lets a later version of the chat keep it."""
        assert self.envelope is not None
        sealed = a.kept.sealed if a.kept else self.envelope.encrypt(a.data)
        digest = sha256_hex(sealed)
        return Blob(a.name, f"{folder}/{a.name}-{digest[:16]}.{attachments_.extension(a.content_type)}.p7m", sealed,
                    digest, a.sha256, a.size,
                    {"position": a.position, "content_type": a.content_type, "fetched_at": a.fetched_at,
                     "match_sha256": match})


def attachment_fields(fetched: tuple[Attachment, ...], blobs: list[Blob], generated_at: dt.datetime,
                      fetcher: Fetcher | None, retry: Retry | None = None) -> dict[str, Any]:
    """What the index entry says of a version's attachments: each outcome, the keys of the stored ones
    (verify finds the entry of any stored object by key), and until when failed fetches are retried."""
    fields: dict[str, Any] = {
        "attachments": [{k: v for k, v in a.describe().items() if k not in ("url", "file_name", "message_id")}
                        | {"fetched_at": a.fetched_at} for a in fetched],
        "attachment_keys": [b.key for b in blobs if b.name.startswith("attachment-")],
    }
    if retry is not None:  # see archiver.attachment_retries
        fields.update(source_sha256=retry.content_key, documents_sha256=retry.documents_sha256,
                      attachments_retry_of=retry.of_version)
    retry_hours = fetcher.policy.retry_hours if fetcher else 0
    if retry_hours and any(a.outcome == attachments_.FAILED for a in fetched):
        # the window runs from the first version: a retry version keeps it
        fields["attachments_retry_until"] = retry.until if retry else generated_at + dt.timedelta(hours=retry_hours)
    return fields


@functools.cache
def archiver_version() -> str:
    try:
        return f"ctlive-archiver {package_version('ctlive-archiver')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "ctlive-archiver (version unknown: not installed)"


def render_limits(config: Config) -> Limits:
    return Limits(url_chars=config["archive.max_url_chars"], field_chars=config["archive.max_field_chars"],
                  pages=config["archive.max_pages"], pdf_bytes=config["archive.max_pdf_bytes"])


def configured_identity(config: Config) -> SigningIdentity:
    """The signing key and certificate the configuration names, checked, and checked against the recipients it
    names (SigningError if unfit): every command that signs with it (archive, seal, report, render, bundle)
    refuses a key that is a recipient's, or the host holding it could decrypt what is archived."""
    identity = load_identity(config["signing.certificate"], config["signing.key"], config["signing.pkcs12"],
                             config["signing.key_password"], config["signing.chain"])
    problems = certificates.decryption_key_problems(identity.certificate,
                                                    named_certificates(config["encryption.recipients"]))
    if problems:
        setting = "signing.pkcs12" if config["signing.pkcs12"] else "signing.key"
        raise SigningError(certificates.refusal(setting, config[setting], identity.certificate, problems))
    return identity


def configured_keys(config: Config) -> tuple[SigningIdentity, list[x509.Certificate]]:
    """The signing identity and the recipients of an archiving process, each checked, and checked together
    (configured_identity)."""
    return configured_identity(config), configured_recipients(config)


def configured_recipients(config: Config) -> list[x509.Certificate]:
    """The recipient certificates the configuration names, checked and pinned (EnvelopeError if unfit)."""
    return load_recipients(config["encryption.recipients"], config["encryption.recipient_fingerprints"])


WARNINGS_INDEXED = 100  # a flood of data warnings must not swell an index entry toward MongoDB's 16 MB


def index_entry(plain: Plaintext, version: int, generated_at: dt.datetime, retain_days: int) -> dict[str, Any]:
    t = plain.transcript
    return {
        "room": t.room,
        "version": version,
        "kind": t.status,
        "ctlive_type": t.ctlive_type,
        "channel": t.channel,
        "service": t.service,
        "title": t.title,
        "language": t.language,
        "agents": t.agents,
        "customers": t.customers,
        "opened_by": t.opened_by or None,  # held and searched by --customer too (docs/search.md)
        "handled_by": t.handled_by or None,  # and by --agent
        "present": list(t.present),  # and by --agent: whom else the contact names, who wrote nothing
        seals.ARCHIVE_LEAF_MARK: seals.LEAF_FORMAT,  # its seal leaf covers these three (docs/seals.md)
        "participants": [{"user_id": p.user_id, "role": p.role, "nickname": p.nickname} for p in t.participants],
        "started_at": t.started_at,
        "ended_at": t.ended_at or t.last_message_at,  # searchable by time: an interim chat by its last message
        "closed_by": t.closed_by,
        "message_count": len(t.messages),
        "failed_deliveries": t.failed_deliveries,
        "placeholders": plain.placeholders,
        "shortened_fields": plain.shortened,
        "warnings": list(t.warnings[:WARNINGS_INDEXED]),  # the record has them all
        "warnings_total": len(t.warnings),
        "source_sha256": plain.source_sha256,
        "redaction": plain.redaction.describe(),
        "generated_at": generated_at,
        "retain_until": generated_at + dt.timedelta(days=retain_days),
    }


# One builder and store per worker process, made by `init_worker` (keys, fonts, clients load once).
_WORKER_BUILDER: ArtifactBuilder | None = None
_WORKER_STORE: ObjectStore | None = None
_WORKER_LOCKS = True
_WORKER_UNFIT = ""  # why init_pool_worker failed: each chat given to this process fails saying so
# A chat's objects are put side by side: a worker waits for the slowest put, not for their sum.
_PUTS = cf.ThreadPoolExecutor(len(OBJECTS), thread_name_prefix="put")


class WorkerNotReady(RuntimeError):
    """The worker process could not load what it builds with (the keys, say: a certificate expired or a file
    replaced since the archiver started). Not the chat's fault: the archive pass retries it."""


def init_worker(config: Config) -> None:
    global _WORKER_BUILDER, _WORKER_STORE, _WORKER_LOCKS
    _WORKER_STORE = open_store(config)
    _WORKER_BUILDER = ArtifactBuilder.from_config(config, store=_WORKER_STORE)
    _WORKER_LOCKS = bool(config["storage.object_lock_mode"])


def init_pool_worker(config: Config, environ: Mapping[str, str], archiver_pid: int) -> None:
    """`init_worker` for a worker process of a pass, which must not outlive its pass. ENVIRON is the
    archiver's environment when it made the pool: a process forked from the fork server would
    otherwise have the environment of the moment that server started (credentials, say)."""
    os.environ.clear()
    os.environ.update(environ)
    # Ctrl-C reaches the whole foreground process group: it is for the archiver, which finishes the chats
    # in hand and then ends its workers; interrupted, a worker would leave its chat half-way. SIGTERM
    # keeps its default: the pool ends a broken pool's workers with it (run under systemd with
    # KillMode=mixed, so that a stop sends it to the archiver alone: README).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _WORKER_UNFIT
    try:
        init_worker(config)
        heap.freeze_start_up()  # the builder lives as long as the worker (archiver/heap.py)
    except Exception as exc:  # raised here, the pool would report a dead worker, as if out of memory
        detail = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"  # ours say what and where
        _WORKER_UNFIT = f"the worker process could not start: {detail}"
    threading.Thread(target=_exit_with, args=(archiver_pid, process_start(archiver_pid)), daemon=True).start()


def _exit_with(pid: int, started: str) -> None:
    # A pool worker whose archiver was killed (SIGKILL, OOM) would otherwise wait for work forever,
    # holding its memory: it shares both ends of the task pipe, so it never reads EOF. Its parent
    # is the fork server, which itself waits for every worker to go: so watch the archiver itself.
    while process_start(pid) == started:
        time.sleep(1)
    os._exit(1)


def process_start(pid: int) -> str:
    """When PID started (clock ticks since boot, from /proc), so that a reused pid is not taken for
    it; "" once it has ended or is a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return ""
    return "" if fields[0] in ("Z", "X") else fields[19]  # state is field 3 of stat(5), starttime field 22


def worker_builder() -> ArtifactBuilder:
    assert _WORKER_BUILDER is not None, "init_worker was not called in this process"
    return _WORKER_BUILDER


def archive_in_worker(chat: Mapping[str, Any], contact: Mapping[str, Any] | None, kind: str,
                      version: int, generated_at: dt.datetime, keep_plaintext: bool = False,
                      retry: Retry | None = None, source_sha256: str = "",
                      redaction: RedactionNote | None = None, source_json: bytes | None = None,
                      earlier: tuple[Stored, ...] = ()) -> Artifacts:
    """Build and store one chat; what goes back is the index entry, never the ciphertext, and the
    plaintext only when KEEP_PLAINTEXT (an on-demand export writes exactly what was archived).
    RETRY: a retry of the attachments an earlier version missed (raises NothingNew if no better).
    SOURCE_SHA256: the source digest the pass computed (checked against the record's); REDACTION: CHAT and
    CONTACT are the copies the pass redacted for it, SOURCE_JSON its serialisation; EARLIER the files earlier
    versions stored (see ArtifactBuilder.plaintext)."""
    if _WORKER_UNFIT:
        raise WorkerNotReady(_WORKER_UNFIT)
    built = archive_here(chat, contact, kind, version, generated_at, retry, source_sha256, redaction, source_json,
                         earlier)
    return dataclasses.replace(built, blobs=[], plain=built.plain if keep_plaintext else None)


def archive_here(chat: Mapping[str, Any], contact: Mapping[str, Any] | None, kind: str,
                 version: int, generated_at: dt.datetime, retry: Retry | None = None,
                 source_sha256: str = "", redaction: RedactionNote | None = None,
                 source_json: bytes | None = None, earlier: tuple[Stored, ...] = ()) -> Artifacts:
    """Build and store one chat in this process (a worker process: see archive_in_worker)."""
    assert _WORKER_STORE is not None, "init_worker was not called in this process"
    built = worker_builder().build(chat, contact, kind, version, generated_at, retry, source_sha256, redaction,
                                   source_json, earlier)
    retain_until = built.entry["retain_until"] if _WORKER_LOCKS else None
    store = _WORKER_STORE
    with timed(built.timings, "put"):
        stored = _put_all(store, built.blobs, retain_until)
    for blob, result in zip(built.blobs, stored):
        built.entry["objects"][blob.name]["version_id"] = result.version_id
    built.entry["store"] = store_location(store)  # retrieval finds the objects after a configuration change
    return built


def _put_all(store: ObjectStore, blobs: list[Blob], retain_until: dt.datetime | None) -> list[StoredObject]:
    """BLOBS stored, or PutFailed naming what did reach the store (to be set aside)."""
    if isinstance(store, LocalStore):  # the archive pass syncs a batch of chats at once, before it indexes them
        try:
            return store.put_many([(blob.key, blob.data, blob.sha256) for blob in blobs], retain_until, sync=False)
        except StoreError as exc:  # all or none: nothing of this attempt is left in the store
            raise PutFailed(str(exc), []) from None
    puts = [_PUTS.submit(store.put, blob.key, blob.data, blob.sha256, retain_until) for blob in blobs]
    cf.wait(puts)  # all of them ended, stored or not, before a failure is reported
    errors = [(blob, put.exception()) for blob, put in zip(blobs, puts) if put.exception()]
    if errors:
        blob, exc = errors[0]
        message = str(exc) if isinstance(exc, StoreError) else f"put {blob.key}: {type(exc).__name__}: {exc}"
        # An unconfirmed put may have stored its object: set it aside with the others.
        reached = [b.key for b, put in zip(blobs, puts) if not put.exception()
                   or isinstance(put.exception(), UnconfirmedPut)]
        raise PutFailed(message, reached)
    return [put.result() for put in puts]
