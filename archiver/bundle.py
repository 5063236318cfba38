"""Case bundles: many archived chats, verified, in one zip a court can check without our code.

Each version is checked exactly as `archiver retrieve` checks it (`check_stored`,
`check_content`) and its files and verification.json come from the same
functions (`retrieval._files`, `retrieval._report`). Rooms are streamed into the
zip one at a time, so memory holds one chat's files plus one manifest line per
file and a short line per version of each room, whatever the number of rooms.

Policy for a room that fails verification: no bundle at all (exit 3, every
failing room named), because a bundle is evidence that its selection is complete
and intact; the legal team decides what to do about the named rooms and asks
again. Nothing is ever left at FILE.zip unless it is complete: the zip is
written to a hidden temporary file beside it and linked into place at the end
(a FILE.zip that appeared meanwhile is never replaced). Its manifest is signed by
the legal team's bundle identity (bundle_signer.py), never the transcript signing key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import tempfile
import uuid
import zipfile
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from archiver import seals
from archiver.audit import AuditLog
from archiver.bundle_signer import NOT_SIGNED, certificate_said, refuse_room_signer
from archiver.config import Config
from archiver.content_pool import ContentPool
from archiver.index import index_database
from archiver.integrity import Check, Opened, check_content
from archiver.names import file_stem
from archiver.offline_checks import cms_command, pdf_command, timestamp_command
from archiver.retrieval import (NOT_PINNED, NotFound, Request, VerificationFailed, _files, _report, _text, find_entry, kept_said,
                               open_stored, room_versions, seal_check, tool_versions as _tool_versions)
from archiver.search import Search, SearchFilters
from archiver.signing import SigningIdentity, sign_detached
from archiver.store import ObjectStore, StoreError, StoreUnreachable, open_store_for, store_location, unreachable
from archiver.visible import visible

MANIFEST, SUMS, SUMS_SIGNATURE, CUSTODY, README = (
    "manifest.json", "SHA256SUMS", "SHA256SUMS.p7s", "chain-of-custody.json", "README.txt")
SIGNER_CERTS = "bundle-signer.pem"
# The reader's own trust anchors, next to the unzipped folder (never inside it: a re-packed zip could ship one):
# the archive's CA (transcripts, records, seals), the timestamp authority's, and the bundle signer's CA (the
# manifest), which must not be the archive's (bundle_signer.py)
CA, TSA_CA, BUNDLE_CA = "../CA.pem", "../TSA-CA.pem", "../BUNDLE-CA.pem"
SEAL_STEP = """6. Every seal under seals/ (a signed, timestamped Merkle root over one day's archive index) is
   authentic and dated by the timestamp authority (../TSA-CA.pem: its CA, obtained independently).
   The first command checks each seal's signature at the time its timestamp (seal.json.p7s.tsr)
   states, the second that timestamp, at that same time (a seal without one: at its signing time):

    $ bad=0; for d in seals/*/; do { SEAL_CMS; } || bad=1; done; [ $bad = 0 ]
    $ bad=0; for d in seals/*/; do [ -f "${d}seal.json.p7s.tsr" ] || continue; { SEAL_TSR; } || bad=1; done; [ $bad = 0 ]

   Each room's verification.json holds its inclusion_proof: the leaf, its index and the
   sibling hashes that lead to the seal's root (seal.json "root"); RFC 9162 section 2.1.3.2
   says how to recompute it, in a few lines of any language.

""".replace("SEAL_CMS", cms_command("${d}seal.json.p7s", "${d}seal.json", CA, timestamp="${d}seal.json.p7s.tsr")
            ).replace("SEAL_TSR", timestamp_command("${d}seal.json.p7s", "${d}seal.json.p7s.tsr", TSA_CA))
ATTACHMENT_STEP = r"""{number}. Every attachment file is the one the room's signed record.json names at its position:
   its SHA-256 next to "object":"attachment-<position>" in record.json (checked in step 5; a file
   a retry copied from an earlier version has "kept_from_version" after it; each line must say
   OK; the command fails otherwise):

    $ bad=0; for f in rooms/*/attachments/*; do [ -f "$f" ] || continue; n=$(expr "$(basename "$f" | cut -d- -f1)" + 0); h=$(sha256sum < "$f" | cut -d" " -f1); grep -qE "\"sha256\":\"$h\",\"content_type\":\"[^\"]*\",\"fetched_at\":\"[^\"]*\",\"object\":\"attachment-$n\"[,}]" "${f%/attachments/*}/record.json" && echo "OK $f" || { echo "FAILED $f"; bad=1; }; done; [ $bad = 0 ]

"""
UNLISTED_STEP = r"""3. The folder holds no file that SHA256SUMS does not list (a room folder or file added after the
   bundle was made: each is named; the command fails if there is any). Only SHA256SUMS itself,
   SHA256SUMS.p7s and bundle-signer.pem are left out: a CA.pem found in the folder is named too
   (your CA is ../CA.pem, outside it: one shipped inside a re-packed zip must not pass for yours).
   The names are read one a line, so a file or folder whose name holds a line break (it would
   read as two names) or any other control character fails first, named as bash quotes it:

    $ bad=0; while IFS= read -rd '' n; do printf 'FAILED a name with a control character: %q\n' "${n#./}"; bad=1; done < <(LC_ALL=C find . -name '*[[:cntrl:]]*' -prune -print0); LC_ALL=C find . -name '*[[:cntrl:]]*' -prune -o ! -type d -print | cut -c3- | awk -v bad=$bad 'FILENAME == "SHA256SUMS" { listed[substr($0, 67)]; next } !($0 in listed) && !/^(SHA256SUMS|SHA256SUMS[.]p7s|bundle-signer[.]pem)$/ { print "FAILED not in SHA256SUMS: " $0; bad = 1 } END { if (!bad) print "OK every file is listed in SHA256SUMS"; exit bad }' SHA256SUMS -

"""
PDF_STEP = r"""4. Every transcript's PDF signature is valid, covers the whole file and was made by a certificate
   that chained to your CA when it signed (each line must say OK, and at what time it checked;
   the command fails otherwise).
   pdfsig checks the signature against a temporary NSS certificate database (certutil, Debian
   package libnss3-tools) that trusts ../CA.pem alone, and must report exactly one signature, "Total
   document signed", "Signature is Valid" and "Certificate is Trusted" or, once the certificate
   or your CA has expired, "Certificate has Expired". pdfsig can only check at today's date, and
   says "Expired" for a self-made expired certificate too, so openssl then checks the same
   signature (pdfsig -dump), over the bytes pdfsig says it covers, at the time it was made: the
   time its RFC 3161 timestamp states, once that timestamp is verified against ../TSA-CA.pem (the
   timestamp authority's CA, obtained independently), or, for a transcript without one, the
   signing time the PDF states. "Certificate issuer is unknown" means a certificate your CA did
   not issue made it. When a certificate names an OCSP responder, pdfsig also asks it whether the
   certificate was revoked (these steps need no network otherwise):

    $ COMMAND

""".replace("COMMAND", pdf_command("rooms/*/transcript.pdf", CA, TSA_CA).replace("\n", "\n      "))
KEPT_NOTE = """Of these, {kept} a retention run began to delete and then kept (held, or no longer due
under the policy of the day): each one's entry under "rooms" in chain-of-custody.json ("kept")
and its verification.json ("note") name the run and why. Each was checked against the objects
its archive recorded, as every other room was, and the steps below check its files like any
other's.
"""
# What --from/--to select by (review "court" C19), said where a bundle by dates records its selection.
DATES_MEANING = ("--from and --to select the chats by when they ended (a chat that had not: by its last message), "
                 "not by when they started: a chat begun in the window and ended after it is not selected")
# The same with --overlapping, which selects by the chat's span instead.
OVERLAP_MEANING = ("--from and --to with --overlapping select the chats whose span, from when they started (else "
                   "their first message) to when they ended (a chat that had not: its last message), overlaps the "
                   "window: begun in it, ended in it, or running across it (a start after its end, a clock skew: the "
                   "span between the two); a chat without a recorded start is selected by when it ended")
FAILURES_NAMED = 100  # beyond this, failing rooms are counted only (memory stays bounded)
VERSIONS_NAMED = 100  # chats (stdout) and versions (README) named for their versions; the custody report has all
KINDS_SAID = {"interim": "not ended when archived", "abandoned": "never ended: archived once it went idle"}


class NothingSelected(LookupError):
    """The filters match no archived entry."""


@dataclass(frozen=True)
class BundleRequest:
    out: Path  # FILE.zip
    request: Request  # key, reason, actor, trust (its room/out are unused)
    rooms: tuple[str, ...] = ()  # explicit rooms (every archived version of each), or
    filters: SearchFilters | None = None  # every archived entry matching these
    workers: int = 1  # content checks in this many processes (1: in this one)
    left_out: tuple[dict[str, Any], ...] = ()  # entries the filters match that are not archived (see left_out)
    not_archived: Any = None  # unarchived.NotArchived: chats of the filters' window the archive does not hold
    text_note: str = ""  # with --text: what it cannot see (search.Search.text_note), "" if nothing
    text_unsearchable: int = 0  # archived entries without word hashes (Search.unsearchable)
    without_start: tuple[int, list[str]] = (0, [])  # --overlapping: entries placed by their end alone (Search.without_start)
    agent_unindexed: tuple[int, str] = (0, "")  # --agent: entries it may miss, and the note saying so (Search.agent_note)


@dataclass
class Bundle:
    path: Path
    rooms: list[str] = field(default_factory=list)  # the room of each version in the bundle
    kinds: Counter = field(default_factory=Counter)  # versions in the bundle by kind (ended, interim, abandoned)
    versions_said: list[str] = field(default_factory=list)  # "<room>: N versions, ..." of chats with several
    not_included: list[str] = field(default_factory=list)  # "<room> vN ...: why" of its chats' other versions
    kept: list[str] = field(default_factory=list)  # "<room> v<N>: <note>" of each kept version (see _held)
    files: int = 0
    bytes: int = 0
    sums_sha256: str = ""
    signed: bool = False
    signed_by: str = ""  # the bundle signer's subject and SHA-256, when signed

    def counted(self, archived: str = "") -> str:
        """"8 chat(s) in 10 version(s)": a chat archived again after a change has a version for each content."""
        return f"{len(set(self.rooms))} {archived}chat(s) in {len(self.rooms)} version(s)"

    def kinds_said(self) -> list[str]:
        """"2 of them interim: not ended when archived", for each such kind in the bundle."""
        return [f"{self.kinds[kind]} of them {kind}: {said}" for kind, said in KINDS_SAID.items() if self.kinds[kind]]


def select(config: Config, search: Search, bundle: BundleRequest) -> list[tuple[str, int]]:
    """(room, version) of every entry the bundle will hold, checked to exist before anything is written."""
    if bundle.filters is not None:
        found = [(e["room"], e["version"]) for e in search.find(bundle.filters) if _held(config, e)]
        if not found:
            raise NothingSelected(f"no archived entry matches {bundle.filters.given()}")
        return found
    chosen = []
    for room in dict.fromkeys(bundle.rooms):  # each room once, in the order given, with every version it holds
        held = [(e["room"], e["version"]) for e in _entries_of(config, room) if _held(config, e)]
        if not held:  # NotFound saying why (deleted by which run, or not in the index)
            entry = find_entry(config, room, None, kept=True)
            held = [(entry["room"], entry["version"])]
        chosen.extend(held)
    return chosen


def _entries_of(config: Config, room: str) -> list[dict[str, Any]]:
    """Every index entry of ROOM, oldest version first (what `_held` reads of each)."""
    return list(index_database(config)[config["index.entries"]].find(
        {"room": {"$eq": room}}, {"room": 1, "version": 1, "status": 1, "deletion": 1, "_id": 0}).sort("version", 1))


def _held(config: Config, entry: dict[str, Any]) -> bool:
    """Whether a bundle holds ENTRY (a search result): an archived version, or one whose deletion a crash cut
    short and its run then kept (a hold): served as `retrieve` serves it (find_entry(..., kept=True))."""
    if entry.get("status") == "archived":
        return True
    if entry.get("status") != "deleted" or (entry.get("deletion") or {}).get("state") != "deleting":
        return False
    try:
        find_entry(config, entry["room"], entry["version"], kept=True)
    except NotFound:  # its deletion is under way: the tombstone is its run's intent
        return False
    return True


def left_out(config: Config, search: Search, bundle: BundleRequest) -> tuple[dict[str, Any], ...]:
    """The entries BUNDLE's filters match that it does not hold (tombstones, uploads not finished), each with
    why: a bundle said to hold "every matching entry" must name the ones it cannot."""
    if bundle.filters is None or bundle.filters.status:
        return ()
    found = []
    for e in search.find(bundle.filters):
        if not _held(config, e):
            deletion = e.get("deletion") or {}
            found.append({"room": e["room"], "version": e["version"], "status": e.get("status"),
                          **({"deleted_by_run": deletion.get("run"), "rule": deletion.get("rule"),
                              "deleted_at": _text(deletion.get("at"))} if deletion else {})})
    return tuple(found)


def build(config: Config, bundle: BundleRequest, targets: list[tuple[str, int]], log: AuditLog,
          signer: SigningIdentity | None, progress: Callable[[int, int], None] | None = None,
          release: Callable[[Bundle], None] | None = None) -> Bundle:
    """Verify TARGETS and write them, with manifest, custody report and README, to bundle.out. RELEASE(the
    bundle) is called once it is complete, before it appears at bundle.out: if it raises, it never does."""
    out = bundle.out
    if out.exists():
        raise FileExistsError(f"{out}: already there; not overwritten (choose another name)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.partial-")
    result = Bundle(out)
    try:
        with os.fdopen(fd, "wb") as raw:
            with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
                _write(config, bundle, targets, zf, log, signer, result, progress)
            raw.flush()
            os.fsync(raw.fileno())
        if release is not None:
            release(result)
        os.link(partial, out)  # fails if OUT appeared meanwhile: nothing replaced
    finally:
        os.unlink(partial)
    return result


def _write(config: Config, bundle: BundleRequest, targets: list[tuple[str, int]], zf: zipfile.ZipFile,
           log: AuditLog, signer: SigningIdentity | None, result: Bundle,
           progress: Callable[[int, int], None] | None) -> None:
    started = dt.datetime.now(dt.timezone.utc)
    head = log.head()
    sums: list[str] = []  # "<sha256>  <path>": one short line per file
    manifest: list[dict[str, Any]] = []
    rooms: list[dict[str, Any]] = []
    present: dict[str, str] = {}  # room folders so far, case-folded (names.file_stem)
    failures: list[str] = []
    failed = 0

    def add(path: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        zf.writestr(path, data)
        sums.append(f"{digest}  {path}")
        manifest.append({"path": path, "sha256": digest, "size": len(data)})
        result.files += 1
        result.bytes += len(data)

    sealed: set[str] = set()  # seal folders already in the bundle
    versions: dict[str, list[dict[str, Any]]] = {}  # every version of each room in the bundle (room_versions)
    attached = False  # any attachment file in the bundle (its README step is then printed)
    for done, (room, version, opened, location, note) in enumerate(_verified(config, bundle, targets), 1):
        if signer is not None and opened.ok:  # its signer verified: never the bundle signer's key or issuer
            refuse_room_signer(signer, opened.certificates, f"{room} v{version}")
        proof = seal_check(config, opened)
        seal_folder = _seal_folder(proof)
        if proof is not None and opened.ok and seal_folder not in sealed:
            try:  # the seal itself, so that openssl alone checks the root each proof ends at
                for name, data in seals.seal_files(config, proof).items():
                    add(f"{seal_folder}/{name}", data)
                sealed.add(seal_folder)
            except StoreError as exc:
                if unreachable(exc):
                    raise StoreUnreachable(f"the store holding the seal could not be reached (storage.url, storage.endpoint_url): {exc}") from exc
                opened.checks.append(Check("sealed: the seal's stored files match the index", False, str(exc)))
        if not opened.ok:
            failed += 1
            if len(failures) < FAILURES_NAMED:
                failures.append(visible(f"{room} v{version}: " + "; ".join(opened.failures()) + kept_said(note)))
        elif not failed:  # after a failure nothing more is written: the bundle will not be kept
            suffix = f"-v{version}"
            name = file_stem(room, present, [suffix]) + suffix
            present[name.casefold()] = name
            folder = f"rooms/{name}"
            report = _report(opened, bundle.request, location, proof)
            if note:  # a version whose deletion was begun, then kept: which run, which hold (as `retrieve` says)
                report["note"] = note
                result.kept.append(f"{room} v{version}: {note}")
            if room not in versions:
                versions[room] = room_versions(config, room)
            report["versions"] = versions[room]  # as `retrieve` writes it
            for name, data in _files(opened, report).items():
                add(f"{folder}/{name}", data)
                attached = attached or name.startswith("attachments/")
            kind = opened.entry.get("kind")
            result.kinds[kind] += 1
            rooms.append({"room": room, "version": version, "kind": kind, "folder": folder + "/", "store": location,
                          "checks": len(opened.checks), "all_passed": True, "seal": seal_folder,
                          **({"kept": note} if note else {})})
            result.rooms.append(room)
        if progress:
            progress(done, len(targets))
    if failed:
        raise BundleVerificationFailed(failed, failures)
    chats, not_included = _chats(bundle, rooms, versions, result)
    custody = _custody(config, bundle, started, head, rooms, signer,
                       {"chats": chats, "versions_not_included": not_included})
    add(CUSTODY, _json(custody))
    add(README, _readme(rooms, signer is not None, bool(sealed), attached, len(result.kept), result,
                        gaps_text(bundle), _dates_said(bundle)).encode("utf-8"))
    add(MANIFEST, _json({"algorithm": "SHA-256", "files": manifest}))
    body = ("\n".join(sums) + "\n").encode("utf-8")
    zf.writestr(SUMS, body)
    result.sums_sha256 = hashlib.sha256(body).hexdigest()
    if signer is not None:
        zf.writestr(SUMS_SIGNATURE, sign_detached(signer, body))
        zf.writestr(SIGNER_CERTS, b"".join(c.public_bytes(serialization.Encoding.PEM)
                                           for c in (signer.certificate, *signer.chain)))
        result.signed = True
        result.signed_by = certificate_said(signer.certificate)


def _chats(bundle: BundleRequest, rooms: list[dict[str, Any]], versions: dict[str, list[dict[str, Any]]],
           result: Bundle) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every version of each chat in the bundle, marked in it (its folder) or not (why), and those not in it
    (but the ones the filters matched, already under left_out); RESULT's lines saying them."""
    folders = {(r["room"], r["version"]): r["folder"] for r in rooms}
    matched = {(e["room"], e["version"]) for e in bundle.left_out}
    chats: list[dict[str, Any]] = []
    not_included: list[dict[str, Any]] = []
    for room, listed in versions.items():
        marked = []
        for v in listed:
            folder = folders.get((room, v["version"]))
            why = None if folder else _why_not(v, bundle.filters is not None)
            marked.append({**v, "included": bool(folder), **({"folder": folder} if folder else {"why": why})})
            if not folder and (room, v["version"]) not in matched:
                not_included.append({"room": room, **v, "why": why})
                if len(result.not_included) < VERSIONS_NAMED:
                    result.not_included.append(visible(f"{room} {_version_said(v, why)}"))
        chats.append({"room": room, "versions": marked})
        if len(marked) > 1 or not all(v["included"] for v in marked):
            result.versions_said.append(visible(_chat_said(room, marked)))
    if len(result.versions_said) > VERSIONS_NAMED:
        more = len(result.versions_said) - VERSIONS_NAMED
        result.versions_said[VERSIONS_NAMED:] = [f"and {more} more chat(s): chain-of-custody.json, \"chats\""]
    if len(not_included) > len(result.not_included):
        result.not_included.append(f"and {len(not_included) - len(result.not_included)} more: chain-of-custody.json, "
                                   "\"versions_not_included\"")
    return chats, not_included


def _why_not(version: dict[str, Any], by_filters: bool) -> str:
    """Why VERSION (of a chat in the bundle) is not in it."""
    status, deletion = version.get("status"), version.get("deletion") or {}
    if status == "deleted":  # never in a bundle, whatever the selection
        how = "being deleted" if deletion.get("state") == "deleting" else "deleted"
        return f"{how} by run {deletion.get('run')} under rule {deletion.get('rule')}"
    if status != "archived":
        return "uploading: an archive attempt not finished" if status == "uploading" else f"status {status}"
    return "not matched by the filters" if by_filters else "archived after this bundle's rooms were selected"


def _version_said(version: dict[str, Any], why: str | None = None) -> str:
    """"v2 archived (ended)", "v2 archived (ended): WHY", or "v1 WHY" when WHY names the status ("deleted by ...")."""
    said = f"v{version['version']}"
    if version.get("status") != "archived" and why:
        return f"{said} {why}"
    if version.get("status") == "deleted":  # in the bundle: its deletion begun, then kept (its "kept" note)
        return f"{said} kept: its deletion was begun, then kept"
    said += f" {version.get('status')}" + (f" ({version['kind']})" if version.get("kind") else "")
    return f"{said}: {why}" if why else said


def _chat_said(room: str, marked: list[dict[str, Any]]) -> str:
    """"ROOM: 2 versions, all in the bundle: v1 archived (ended), ..." or "..., in the bundle: v1; not in it: ..."."""
    if all(v["included"] for v in marked):
        return f"{room}: {len(marked)} versions, all in the bundle: " + ", ".join(_version_said(v) for v in marked)
    held = ", ".join(f"v{v['version']}" for v in marked if v["included"])
    return (f"{room}: {len(marked)} versions, in the bundle: {held}; not in it: "
            + ", ".join(_version_said(v, v["why"]) for v in marked if not v["included"]))


def _seal_folder(proof: dict[str, Any] | None) -> str | None:
    return f"seals/{proof['day']}-{proof['seal']['seq']}" if proof is not None else None


class BundleVerificationFailed(VerificationFailed):
    def __init__(self, count: int, named: list[str]) -> None:
        more = f" (and {count - len(named)} more)" if count > len(named) else ""
        RuntimeError.__init__(self, f"{count} room(s) failed verification, so no bundle was written{more}:\n  "
                              + "\n  ".join(named))
        self.failures = named


def _verified(config: Config, bundle: BundleRequest, targets: list[tuple[str, int]]) -> Iterator[tuple]:
    """Each target fetched and checked, in order; with workers, the content checks of at most
    2 x workers + 1 chats at once (only those chats' objects in memory)."""
    request = bundle.request
    pool = (ContentPool(bundle.workers, request.key, list(request.trust), pinned=request.pinned)
            if bundle.workers > 1 else None)
    stores: dict[str, ObjectStore] = {}
    waiting: deque[tuple[str, int, Opened, dict[str, str], Any, str]] = deque()
    try:
        for room, version in targets:
            entry = find_entry(config, room, version, kept=True)
            where = (entry.get("store") or {}).get("url", "")
            if where not in stores:
                stores[where] = open_store_for(entry, config)
            opened, note = open_stored(config, entry, stores[where])  # NotFound: deleted since it was selected
            future = pool.submit_opened(opened.entry, opened.sealed) if pool and opened.ok else None
            waiting.append((room, version, opened, store_location(stores[where]), future, note))
            while waiting and (len(waiting) > (pool.in_flight if pool else 0) or waiting[0][4] is None):
                yield _settled(request, *waiting.popleft())
        while waiting:
            yield _settled(request, *waiting.popleft())
    finally:
        if pool:
            pool.close()


def _settled(request: Request, room: str, version: int, opened: Opened, location: dict[str, str],
             future: Any, note: str) -> tuple[str, int, Opened, dict[str, str], str]:
    """OPENED with its content checked: by a worker (FUTURE), or here. EnvelopeError: wrong key."""
    if future is not None:
        checks, plain, certificates = future.result()
        opened.checks.extend(checks)
        opened.plain.update(plain)
        opened.certificates = [x509.load_der_x509_certificate(der) for der in certificates]
    elif opened.ok:
        check_content(opened, request.key, list(request.trust), pinned=request.pinned)
    return room, version, opened, location, note


def _custody(config: Config, bundle: BundleRequest, started: dt.datetime, head: dict[str, Any] | None,
             rooms: list[dict[str, Any]], signer: SigningIdentity | None, chats: dict[str, Any]) -> dict[str, Any]:
    request = bundle.request
    return {
        "bundle_id": str(uuid.uuid4()),
        "created_at": started.isoformat(timespec="seconds"),
        "completed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "retrieved_by": request.actor.as_dict(),
        "reason": request.reason,
        "selection": {"rooms": list(bundle.rooms)} if bundle.filters is None else {
            "filters": _filters(bundle.filters), **_dates(bundle), **_agent_unindexed(bundle)},
        "rooms": rooms,  # one per version in the bundle
        "room_count": len({r["room"] for r in rooms}),  # chats
        "version_count": len(rooms),
        **chats,  # every version of each chat, which are in the bundle, and why the others are not
        "failed_rooms": "none: a bundle is only written when every selected room passed every check",
        "left_out": {"why": "matched by the filters but not archived: a tombstone (deleted by retention or "
                            "erasure, its objects gone, or being deleted) or an upload not finished; a version "
                            "whose deletion was begun, then kept (held, or no longer due), is in the bundle "
                            "(its room's \"kept\")",
                     "entries": list(bundle.left_out)} if bundle.filters is not None else None,
        "verified": [
            "each stored object: present, with the size and SHA-256 the index records",
            "each object decrypts with the legal team's key to the plaintext size and SHA-256 the index records",
            "the PDF's PAdES signature: intact, valid, covering the whole file, by the certificate the index "
            "records, its title naming the room",
            "the record's detached CMS signature: intact, valid, by the certificate the index records",
            "the record's room, version and source SHA-256 are the index entry's, and so are its searchable "
            "fields (kind, times, people, type, channel, service)",
            "the PDF attaches that record, byte for byte",
            *(["both signers chain to the trust anchors given (--ca, signing.trust_anchors)"] if request.trust else
              ["NOT CHECKED: whether the signers chain to a trust anchor (none given: --ca or "
               "signing.trust_anchors)"]),
        ],
        "details": "each room's verification.json lists every check with its result",
        "trusted_roots": [c.subject.rfc4514_string() for c in request.trust],
        "signers_pinned": request.pinned.described() if request.pinned else f"NOT PINNED: {NOT_PINNED}",
        "audit_log_head_before": {"seq": head["seq"], "hash": head["hash"]} if head else None,
        "index": {"database": config["index.database"], "collection": config["index.entries"]},
        "manifest_signed_by": None if signer is None else {
            "subject": signer.certificate.subject.rfc4514_string(),
            "sha256": signer.certificate.fingerprint(hashes.SHA256()).hex(),
            "role": "the bundle signer (bundle.*), not the archive's transcript signer (signing.*)"},
        **({"manifest_not_signed": NOT_SIGNED} if signer is None else {}),
        "tools": tool_versions(),
        **_gaps(bundle),
    }


def _gaps(bundle: BundleRequest) -> dict[str, Any]:
    """What a bundle by filters says it cannot hold: chats of its window the archive does not (their archive
    job not done), and with --text the archived entries without word hashes; and of what it is complete."""
    if bundle.filters is None:
        return {}
    missing = bundle.not_archived
    agent = ("; --agent may miss archived entries indexed before `present`, counted under "
             "selection.agent_unindexed" if bundle.agent_unindexed[0] else "")
    return {"completeness": "complete of the archive index: every archived entry the filters match is in the "
                            "bundle, or named under left_out; chats the archive does not hold are named under "
                            "not_archived (as far as the job queue knows them); a chat never discovered is in "
                            f"neither (`archiver verify --completeness --from --to` reads the source){agent}",
            "not_archived": missing.as_dict() if missing is not None else None,
            **({"text_unsearchable": {"entries": bundle.text_unsearchable, "note": bundle.text_note}}
               if bundle.filters.text is not None else {})}


def gaps_text(bundle: BundleRequest) -> str:
    """_gaps for README.txt and stdout ("" if there are none)."""
    lines = [*(bundle.not_archived.lines() if bundle.not_archived is not None else []),
             *([f"--text: {bundle.text_note}"] if bundle.text_note else []),
             *([f"--agent: {bundle.agent_unindexed[1]}"] if bundle.agent_unindexed[0] else [])]
    return "".join(f"{line}\n" for line in ["WHAT THIS BUNDLE DOES NOT HOLD (chain-of-custody.json: not_archived, "
                                              "text_unsearchable, selection.agent_unindexed)", *lines]) if lines else ""


def _agent_unindexed(bundle: BundleRequest) -> dict[str, Any]:
    """What a bundle by --agent records under "selection" of the entries it may miss (none: nothing)."""
    count, note = bundle.agent_unindexed
    return {"agent_unindexed": {"count": count, "note": note}} if count else {}


def tool_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "platform": platform.platform(),
            **_tool_versions("archiver", "pyHanko", "cryptography", "pymongo")}


def _dates(bundle: BundleRequest) -> dict[str, Any]:
    """What a BUNDLE by a date window records of it under "selection": what the dates select by, and with
    --overlapping the entries that have no start, so were placed by their end alone (none: not dated)."""
    f = bundle.filters
    if f is None or (f.ended_from is None and f.ended_to is None):
        return {}
    count, rooms = bundle.without_start
    return {"dates": OVERLAP_MEANING if f.overlapping else DATES_MEANING,
            **({"without_start": {"count": count, "rooms": rooms, "note": WITHOUT_START}} if count else {})}


WITHOUT_START = "no recorded start: selected by when they ended alone (rooms: the first 100)"


def _dates_said(bundle: BundleRequest) -> str:
    """_dates for README.txt ("" if not dated)."""
    said = _dates(bundle)
    if not said:
        return ""
    count = said.get("without_start", {}).get("count", 0)
    return said["dates"] + (f" ({count} of the entries {'has' if count == 1 else 'have'} {WITHOUT_START.split(' (')[0]}: "
                            "chain-of-custody.json, selection.without_start)" if count else "")


def _filters(filters: SearchFilters) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in filters.given().items()}


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def _versions_note(made: Bundle) -> str:
    """The README's word on versions, and the versions of its chats not in it."""
    left = "".join(f"  {line}\n" for line in made.not_included)
    return ("""
A chat archived again after its content changed on the platform (a message added, edited or
deleted) has a version for each content. chain-of-custody.json lists under "chats" every version
of each chat in this bundle, with its status and kind, and which of them are here.
""" + (f"Versions of these chats that are not in this bundle:\n{left}" if left else ""))


def _readme(rooms: list[dict[str, Any]], signed: bool, sealed: bool, attached: bool,
            kept: int, made: Bundle, gaps: str = "", dates: str = "") -> str:
    sample = rooms[0]["folder"] if rooms else "rooms/ROOM-v1/"
    kinds = f" ({'; '.join(made.kinds_said())})" if made.kinds_said() else ""
    manifest_step = (
        f"""1. The manifest is authentic: signed by the bundle signer ({SIGNER_CERTS}), the identity of
   whoever made this bundle, not the archive's transcript signer; checked against the bundle
   signer's CA, which you put in BUNDLE-CA.pem NEXT TO the folder (obtained independently, NOT
   from this bundle; it must not be the archive's CA, ../CA.pem: a bundle signer that CA issued
   could sign a transcript that passes steps 4 and 5):

    $ {cms_command(SUMS_SIGNATURE, SUMS, BUNDLE_CA)}

   It must print OK; FAILED means {SUMS} is not the one signed (or not by a certificate of that CA).
""" if signed else f"""1. The manifest is NOT signed: no bundle signing identity was configured where this bundle
   was made (bundle.signing_certificate and bundle.signing_key, or bundle.signing_pkcs12); the
   archive's transcript signing key never signs a bundle.
   Compare the SHA-256 of {SUMS} with the one the audit log recorded for this bundle
   (`archiver audit list`, action "retrieve", its detail) and that was printed when it was made:

    $ sha256sum {SUMS}

   Until that comparison is made, this bundle cannot prove what it holds: steps 4 and 5 still
   prove that each transcript and record was signed by a certificate your CA issued, but a room
   added, removed or swapped, with {SUMS} rewritten to match, passes steps 2 and 3, and
   {CUSTODY}, {MANIFEST} and every verification.json are signed by no one.
""")
    bundle_ca = (",\nand the bundle signer's CA in BUNDLE-CA.pem beside it (step 1)" if signed else "")
    return f"""CASE BUNDLE: how to verify every file with openssl, pdfsig, certutil and sha256sum alone

This bundle holds {made.counted("archived ")}{kinds},{f"{chr(10)}selected by dates: {dates};" if dates else ""}
one folder per version under rooms/, e.g. {sample}
  transcript.pdf     the transcript, signed (PAdES)
  record.json        the machine-readable record
  record.json.p7s    its detached CMS signature (DER)
  signer.crt.pem     the certificate that signed both
  certificates.pem   every certificate the signature carries
  verification.json  every check made when the bundle was built, with its result
  attachments/       the files the chat's messages linked to, as archived (when there were any),
                     named <position>-<name>; record.json lists each with its SHA-256
At the top: {CUSTODY} (who made this bundle, when, why, what was selected and verified,
with which tools), {MANIFEST} (every file's SHA-256 and size) and {SUMS} (the same hashes,
in the format sha256sum reads){f", signed in {SUMS_SIGNATURE}" if signed else ""}.
{KEPT_NOTE.format(kept=kept) if kept else ""}{f"{chr(10)}{gaps}" if gaps else ""}{_versions_note(made)}
Before you start: unzip the bundle into a folder of its own, and put the certificate of the CA
you trust for the archive's signatures (obtained independently, NOT from this bundle) in CA.pem
NEXT TO that folder, not inside it (the steps read ../CA.pem: a CA.pem inside is named by step 3){bundle_ca}.
Run each command below from that folder (bash, GNU date); every one must succeed.

Certificates expire, and so does your CA's; a signature made while they were valid stays valid.
So each step checks a signer's certificate chain at the time it signed (openssl -attime), and
each OK line says which time that was:
- "the time its RFC 3161 timestamp states": a timestamp authority vouches, in a token checked
  against its CA (../TSA-CA.pem, which you add next to the folder too, obtained independently), that the signature
  existed then (the transcripts when the archive was configured with a timestamp authority,
  and the seals);
- "the signing time its signer states": the signed time inside the signature (the manifest's
  and the records', and transcripts without a timestamp). It is the signer's own word: it shows
  the certificate was valid when the signer says it signed, and proves nothing against someone
  who held the signing key later (after it expired, say) and stated an earlier time.

{manifest_step}
2. Every file is the one the manifest lists (each line must say OK; the command fails otherwise):

    $ sha256sum -c --strict {SUMS}

{UNLISTED_STEP}{PDF_STEP}5. Every record's signature is valid and its signer chained to your CA at its signing time (each
   line must say OK; the command fails otherwise):

    $ bad=0; for d in rooms/*/; do {{ {cms_command("${d}record.json.p7s", "${d}record.json", CA)}; }} || bad=1; done; [ $bad = 0 ]

{SEAL_STEP if sealed else ""}{ATTACHMENT_STEP.replace("{number}", str(6 + sealed)) if attached else ""}signer.crt.pem is the certificate the archive index names for the room (step 4 checks the one
inside the PDF, step 5 the one inside record.json.p7s). Each verification.json also records
the archive index entry (hashes of the encrypted objects as stored) for a comparison with the
index itself.
"""
