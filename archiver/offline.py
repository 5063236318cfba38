"""Commands that hand plaintext files to a person: offline `render` and on-demand `export`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from archiver.artifacts import ArtifactBuilder, Plaintext
from archiver.claims import now
from archiver.config import Config
from archiver.inputs import ParsedDocument, describe, read_file
from archiver.names import safe_name
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


def write_plaintext(plain: Plaintext, out: Path) -> list[Path]:
    """Write <room>.pdf, <room>.json and <room>.json.p7s into OUT; never replaces a file."""
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_name(plain.transcript.room)
    targets = {name: out / (stem + suffix) for name, suffix in SUFFIXES.items()}
    clashes = [str(p) for p in targets.values() if p.exists()]
    if clashes:
        raise FileExistsError(f"{', '.join(clashes)} already exist; not overwritten")
    for name, data in plain.files().items():
        fd = os.open(targets[name], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    return list(targets.values())


def render_file(config: Config, source: Path, out: Path) -> Outcome:
    builder = ArtifactBuilder.from_config(config, encrypt=False)
    outcome = Outcome()
    for item in read_file(source):
        if not isinstance(item, ParsedDocument):
            outcome.problems.append(describe(item))
            continue
        where = f"document {item.position} (line {item.line})"
        chat = item.document
        try:
            kind = "ended" if has_ended(chat) else "interim"
            plain = builder.plaintext(chat, None, kind, version=1, generated_at=now())
            paths = write_plaintext(plain, out)
        except (InvalidChat, FileExistsError) as exc:
            outcome.problems.append(f"{where}: {exc}")
            continue
        outcome.rendered += 1
        outcome.lines.append(f"{where}: room {plain.transcript.room} -> {', '.join(map(str, paths))}")
    return outcome


def export_room(config: Config, room: str, out: Path | None, force: bool) -> Outcome:
    from archiver.pipeline import Archiver

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
    outcome.lines.append(f"room {room}: {state} as version {entry['version']} ({entry['kind']}) in {archiver.store.url}")
    outcome.lines.extend(f"  {name}: {obj['key']}" for name, obj in entry["objects"].items())
    if out is not None:
        _write_export(config, chat, contact, entry, plain, out, outcome)
    return outcome


def _write_export(config: Config, chat: dict, contact: dict | None, entry: dict, plain: Plaintext | None,
                  out: Path, outcome: Outcome) -> None:
    """Write the plaintext of ENTRY's version into OUT (signing a fresh copy when nothing was built)."""
    if plain is None:  # unchanged: nothing was built, so sign a fresh copy of the same content
        plain = ArtifactBuilder.from_config(config, encrypt=False).plaintext(chat, contact, entry["kind"],
                                                                             entry["version"], now())
        outcome.lines.append("  plaintext below is a fresh signature over the same content (same source_sha256)")
    try:
        paths = write_plaintext(plain, out)
    except FileExistsError as exc:
        outcome.problems.append(str(exc))
        outcome.lines.append(str(exc))
        return
    outcome.lines.extend(f"  wrote {p}" for p in paths)
