"""Commands that hand plaintext files to a person: offline `render` and on-demand `export`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from archiver.artifacts import ArtifactBuilder, Plaintext
from archiver.audit import AuditError
from archiver.certificates import NotValidNow
from archiver.claims import now
from archiver.config import Config
from archiver.files import publish
from archiver.inputs import ParsedDocument, describe, read_file
from archiver.mongo import stored_time
from archiver.names import file_stem, folded
from archiver.source import SourceProblem
from archiver.transcript import InvalidChat, has_ended

SUFFIXES = {"pdf": ".pdf", "record": ".json", "record_signature": ".json.p7s"}


@dataclass
class Outcome:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    rendered: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def write_plaintext(plain: Plaintext, out: Path, present: dict[str, str] | None = None) -> list[Path]:
    """Write <room>.pdf, <room>.json and <room>.json.p7s into OUT: all three or none, never
    replacing or following anything already there (a symlink included). PRESENT: OUT's names as
    names.folded gives them, kept up to date here (read from OUT when not given)."""
    out.mkdir(parents=True, exist_ok=True)
    present = folded(os.listdir(out)) if present is None else present
    stem = file_stem(plain.transcript.room, present, SUFFIXES.values())
    targets = {name: out / (stem + suffix) for name, suffix in SUFFIXES.items()}
    clashes = [str(p) for p in targets.values() if os.path.lexists(p)]
    if clashes:
        raise FileExistsError(f"{', '.join(clashes)} already exist; not overwritten")
    publish([(targets[name], data) for name, data in plain.files().items()], 0o640)
    present.update(folded(p.name for p in targets.values()))
    return list(targets.values())


def render_file(config: Config, source: Path, out: Path, contacts: Path | None = None,
                on_line: Callable[[str], None] = lambda line: None) -> Outcome:
    """Render every chat in SOURCE into OUT; ON_LINE gets each chat's result line as soon as it is written."""
    builder = ArtifactBuilder.from_config(config, encrypt=False)
    outcome = Outcome()
    chats = read_file(source)
    present = folded(os.listdir(out)) if out.is_dir() else {}  # OUT's names, as the chats are written
    if not chats:
        outcome.problems.append(f"no document found in {source}")
    joined = read_contacts(contacts, outcome) if contacts else Contacts()
    for item in chats:
        if not isinstance(item, ParsedDocument):
            outcome.problems.append(describe(item))
            continue
        where = f"document {item.position} (line {item.line})"
        chat = item.document
        try:
            contact = joined.contact(chat.get("room"))
            kind = "ended" if has_ended(chat) else "interim"
            plain = builder.plaintext(chat, contact, kind, version=1, generated_at=now())
            paths = write_plaintext(plain, out, present)
        except (InvalidChat, FileExistsError, NotValidNow) as exc:
            outcome.problems.append(f"{where}: {exc}")
            continue
        except OSError as exc:  # a full disk, say: nothing of this chat was left behind
            outcome.problems.append(f"{where}: cannot write into {out}: {exc.strerror or exc}")
            continue
        except Exception as exc:  # a renderer or signer bug must not stop the other chats (as the archive pass)
            outcome.problems.append(f"{where}: {type(exc).__name__}: {exc}")
            continue
        outcome.rendered += 1
        outcome.lines.append(f"{where}: room {plain.transcript.room!r} -> {', '.join(map(str, paths))}")
        on_line(outcome.lines[-1])
    return outcome


@dataclass
class Contacts:
    """Contact documents by `id` (= the chat's room), with where each came from in the file."""

    found: dict[str, list[ParsedDocument]] = field(default_factory=dict)

    def contact(self, room: object) -> dict | None:
        matches = self.found.get(room, []) if type(room) is str else []  # a str subclass (bson.Code): no hash
        if len(matches) > 1:
            raise InvalidChat(f"room {room!r}: contact documents {matches[0].position} and "
                              f"{matches[1].position} both have this id")
        return matches[0].document if matches else None


def read_contacts(path: Path, outcome: Outcome) -> Contacts:
    """The contact documents in PATH; the unreadable ones (and those without an id) go to OUTCOME."""
    contacts = Contacts()
    for item in read_file(path):
        if not isinstance(item, ParsedDocument):
            outcome.problems.append(f"contacts {describe(item)}")
        elif type(item.document.get("id")) is not str:  # exact str: bson.Code is a str that cannot be hashed
            outcome.problems.append(f"contacts document {item.position} (line {item.line}): field 'id' "
                                    "is missing or not a string")
        else:
            contacts.found.setdefault(item.document["id"], []).append(item)
    return contacts


def export_room(config: Config, room: str, out: Path | None, force: bool,
                record: Callable[[str, str], None] | None = None) -> Outcome:
    """Archive ROOM now; with OUT, also write its plaintext there, RECORD(outcome, detail) called before the
    files are written ("started") and after ("ok" or "failed"): nothing is written unless the first succeeds,
    and the files are removed if the second fails (AuditError)."""
    from archiver.pipeline import Archiver
    from archiver.unarchived import what_to_do

    archiver = Archiver(config)
    outcome = Outcome()
    chat, contact = archiver.source.load(room)
    if chat is None:
        outcome.problems.append(f"room {room!r}: not found in {config['source.database']}.{config['source.chats']}")
        outcome.lines.extend(outcome.problems)
        return outcome
    if isinstance(chat, SourceProblem):
        outcome.problems.append(f"room {room!r}: {chat.reason}")
        outcome.lines.extend(outcome.problems)
        return outcome
    if not has_ended(chat) and not force:
        outcome.problems.append(f"room {room!r} has not ended; --force archives an interim copy now")
        outcome.lines.extend(outcome.problems)
        return outcome
    report, plain = archiver.archive_room(room, "ended" if has_ended(chat) else "interim")
    for failed_room, error in {**report.failed, **report.quarantined}.items():
        outcome.problems.append(f"room {failed_room!r}: {error}")
    outcome.lines.extend(outcome.problems)
    for failed_room, reason in report.quarantined.items():  # a message over the limit: archived as it is, how
        if "archive.max_message_chars" in reason:
            outcome.lines.append(f"  {what_to_do(failed_room, {'state': 'quarantined', 'reason': reason})}")
    if outcome.problems:
        return outcome
    # The version of the content exported, not the highest: a reverted chat matches an earlier one.
    digest = plain.source_sha256 if plain else archiver.source_digest(chat, contact)
    entry = archiver.index.with_content(room, digest)
    if entry is None:
        outcome.problems.append(f"room {room!r}: its source changed while it was exported; run export again")
        outcome.lines.extend(outcome.problems)
        return outcome
    state = "archived" if report.archived else "already archived, unchanged"
    outcome.lines.append(f"room {room!r}: {state} as version {entry['version']} ({entry['kind']}) in {archiver.store.url}")
    outcome.lines.extend(f"  {name}: {obj['key']}" for name, obj in entry["objects"].items())
    if out is not None:
        _write_export(config, chat, contact, entry, plain, out, outcome, record or (lambda outcome, detail: None))
    return outcome


def _write_export(config: Config, chat: dict, contact: dict | None, entry: dict, plain: Plaintext | None,
                  out: Path, outcome: Outcome, record: Callable[[str, str], None]) -> None:
    """Write the plaintext of ENTRY's version into OUT (signing a fresh copy when nothing was built), recorded
    before and after (see export_room)."""
    if plain is None:  # unchanged: nothing was built, so sign a fresh copy of the same content
        plain = ArtifactBuilder.from_config(config, encrypt=False).plaintext(
            chat, contact, entry["kind"], entry["version"], now(), copy_of=stored_time(entry.get("archived_at")))
        outcome.lines.append("  plaintext below is a fresh signature over the same content (same source_sha256)")
        if entry.get("attachments"):  # a fresh copy fetches nothing (docs/attachments.md)
            outcome.lines.append("  it does not describe the attachments: `archiver retrieve` gives the archived version")
    room = plain.transcript.room
    try:
        record("started", f"plaintext of version {entry['version']} to be written to {out}")
    except AuditError as exc:
        outcome.problems.append(f"room {room!r}: archived, but its plaintext files were not written: {exc}")
        outcome.lines.append(outcome.problems[-1])
        return
    try:
        paths = write_plaintext(plain, out)
    except OSError as exc:  # a name taken, a full disk: the archive lines above stand, nothing of the files is left
        problem = str(exc) if isinstance(exc, FileExistsError) else (
            f"room {room!r}: archived, but cannot write the plaintext files into {out}: {exc.strerror or exc}")
        outcome.problems.append(problem)
        outcome.lines.append(problem)
        _record_quietly(record, "failed", problem)
        return
    try:
        record("ok", f"wrote {', '.join(str(p) for p in paths)}")
    except AuditError as exc:
        for path in paths:
            path.unlink(missing_ok=True)
        outcome.problems.append(f"room {room!r}: archived, but its plaintext files were removed, not written: {exc}")
        outcome.lines.append(outcome.problems[-1])
        return
    outcome.lines.extend(f"  wrote {p}" for p in paths)


def _record_quietly(record: Callable[[str, str], None], outcome: str, detail: str) -> None:
    """RECORD a failure already reported to the user: the log refusing it too changes nothing more."""
    try:
        record(outcome, detail)
    except AuditError:
        pass
