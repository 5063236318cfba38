"""Retrying attachments that failed (HTTP error, timeout, network) within `attachments.retry_hours`.

The source of such a chat has not changed, so its source digest matches the version that missed
the files and the pass would call it unchanged. A retry is therefore planned from the index: the
room's latest archived version with a failed fetch, inside its window, whose backoff has passed.
It builds the chat again and keeps the result only if it is better: at least one file that failed
is now fetched and none fetched before is lost. Otherwise nothing is stored (`NothingNew`) and the
next try waits twice as long. The window runs from the first version, so retries end.

A file the earlier version stored is not fetched again (its link may well have expired since): the
retry copies its stored object, still encrypted, into the new version (`Kept`); the archiver holds no
key to open it, and needs none, since its hashes are in the earlier version's entry.

Any new version of a room, not only a retry, keeps the files earlier versions stored the same way:
`earlier` lists them by match key (attachments.match_keys: message id and URL), for a changed chat (a
wrap-up field, a late message) whose links have expired since.

The index allows one version per (room, source_sha256): a retry version's `source_sha256` is a key
derived from the source digest and its own version number; `documents_sha256` holds the source
digest itself (the one its signed record names).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

from archiver import seals
from archiver.attachments import FAILED, FETCHED, Attachment, Kept
from archiver.config import Config
from archiver.logs import event
from archiver.mongo import stored_time as _aware  # index times, and the stand-in's dates as text
from archiver.names import version_folder
from archiver.store import StoreError

MAX_BACKOFF_SECONDS = 6 * 3600


class NothingNew(Exception):
    """A retry fetched no file that was missing (or lost one): nothing stored, tried again later."""

    def __init__(self, room: str, of_version: int, retries: int) -> None:
        super().__init__(room, of_version, retries)
        self.room, self.of_version, self.retries = room, of_version, retries

    def __str__(self) -> str:
        return f"{self.room}: retried the files version {self.of_version} missed; none more fetched"


@dataclass(frozen=True)
class Retry:
    of_version: int  # the version whose failed files are tried again
    content_key: str  # the new version's source_sha256 (see the module's doc)
    documents_sha256: str  # the source digest
    fetched: frozenset[int]  # positions fetched before: must be fetched again
    failed: frozenset[int]  # positions that failed before
    until: dt.datetime  # end of the window, from the first version
    retries: int  # tries so far
    kept: dict[int, Kept] = field(default_factory=dict)  # by position: the files fetched before
    recipients: tuple[str, ...] = ()  # whom the earlier version's objects are encrypted to


def documents_sha256(entry: dict[str, Any]) -> str:
    """The source digest of ENTRY's content, whether or not it was made by a retry."""
    return entry.get("documents_sha256") or entry.get("source_sha256", "")


def planned(latest: dict[str, Any] | None, digest: str, version: int, at: dt.datetime) -> Retry | None:
    """The retry to build as VERSION, if LATEST (the room's latest archived version) is due one for DIGEST."""
    if latest is None or latest.get("status") != "archived" or documents_sha256(latest) != digest:
        return None
    until, after = latest.get("attachments_retry_until"), latest.get("attachments_retry_after")
    if until is None or _aware(until) <= at or (after is not None and _aware(after) > at):
        return None
    described = latest.get("attachments") or []
    return Retry(latest["version"], content_key(digest, version), digest, frozenset(a["position"] for a in described if a["outcome"] == FETCHED),
                 frozenset(a["position"] for a in described if a["outcome"] == FAILED), _aware(until),
                 latest.get("attachments_retries", 0), kept(latest), tuple(latest.get("recipients") or ()))


@dataclass(frozen=True)
class Stored:
    """The files one earlier archived version of a room stored, by match key (attachments.match_keys)."""
    version: int
    recipients: tuple[str, ...]  # whom its objects are encrypted to
    files: dict[str, Kept]


def kept(entry: dict[str, Any]) -> dict[int, Kept]:
    """The files ENTRY's version stored, by position."""
    return {obj["position"]: _kept(entry, obj) for obj in _files(entry)}


def earlier(known: Iterable[dict[str, Any]], version: int) -> tuple[Stored, ...]:
    """The files the room's archived versions before VERSION stored, newest version first, by match key
    (a version archived before match keys were kept has none: its files are fetched again)."""
    found = []
    for entry in sorted(known, key=lambda e: e["version"], reverse=True):
        if entry.get("status") == "archived" and entry["version"] < version:
            files = {obj["match_sha256"]: _kept(entry, obj) for obj in _files(entry) if obj.get("match_sha256")}
            if files:
                found.append(Stored(entry["version"], tuple(entry.get("recipients") or ()), files))
    return tuple(found)


def as_sealed(config: Config, known: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """KNOWN, less the entries with stored files whose day is sealed and which no longer match their seal
    (docs/seals.md): their objects' keys and hashes are not trusted, their files not kept. An entry of a day
    not sealed yet is trusted as the index gives it (docs/attachments.md)."""
    trusted = []
    for entry in known:
        if entry.get("status") == "archived" and _files(entry):
            try:
                proof = seals.inclusion_proof(config, entry)
            except (StoreError, OSError, ValueError, KeyError) as exc:
                proof = {"in_seal": False, "error": str(exc)}
            if proof is not None and not (proof["in_seal"] and proof.get("matches_index")):
                event("attachment_not_kept", logging.WARNING, room=entry["room"], error=(
                    f"version {entry['version']}'s index entry does not match its day's seal: its files are "
                    f"fetched again{'; ' + proof['error'] if proof.get('error') else ''}"))
                continue
        trusted.append(entry)
    return trusted


def _files(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """ENTRY's stored files that are its own: each key in ENTRY's version folder, named for its object and
    SHA-256 as the build names it, and listed in `attachment_keys`. The index is plain MongoDB: an entry
    edited to name another room's (or version's) object must not have it copied and signed as this room's."""
    listed, folder = set(entry.get("attachment_keys") or ()), version_folder(entry["room"], entry["version"])
    files = []
    for name, obj in entry.get("objects", {}).items():
        if not name.startswith("attachment-"):
            continue
        key = str(obj.get("key"))
        if key in listed and key.startswith(f"{folder}/{name}-{str(obj.get('sha256'))[:16]}."):
            files.append(obj)
        else:  # verify reports the entry; this version fetches the file
            event("attachment_not_kept", logging.WARNING, room=entry["room"], key=key,
                  error=f"version {entry['version']}'s {name} names an object that is not its own")
    return files


def _kept(entry: dict[str, Any], obj: dict[str, Any]) -> Kept:
    return Kept(entry["version"], obj["key"], obj.get("version_id") or "", obj["sha256"], obj["plaintext_sha256"],
                obj["plaintext_size"], obj["content_type"], _aware(obj["fetched_at"]) if obj.get("fetched_at") else None)


def content_key(digest: str, version: int) -> str:
    """The source_sha256 of VERSION when it is a retry version of the source DIGEST."""
    return hashlib.sha256(f"attachments retry\n{digest}\n{version}".encode()).hexdigest()


def improved(fetched: Iterable[Attachment], retry: Retry) -> bool:
    """Whether FETCHED is worth a new version: a missing file now there, none lost."""
    now_there = {a.position for a in fetched if a.outcome == FETCHED}
    return bool(retry.failed & now_there) and retry.fetched <= now_there


def backoff(retries: int, base_seconds: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(max(base_seconds, 1) * 2 ** retries, MAX_BACKOFF_SECONDS))
