"""`archiver status [--json]`: jobs by state, what waits longest, how the last pass and rescan ended."""

from __future__ import annotations

import argparse
import json
from typing import Any

from archiver.commands.common import OK, load_config
from archiver.visible import visible

HELP = "jobs by state, quarantined chats and why, the oldest chat not archived, the last pass and rescan"
EXAMPLE = "archiver --config archiver.toml status --json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object (field names documented in the README)")


def run(args: argparse.Namespace) -> int:
    from archiver.status import collect

    status = collect(load_config(args))
    if args.json:
        print(json.dumps(status.as_json(), indent=2, ensure_ascii=False))
        return OK
    for warning in status.warnings:
        print(visible(f"warning: {warning}"))
    print("jobs: " + ", ".join(f"{state} {n}" for state, n in status.jobs.items()))
    print(visible(f"oldest not archived: {_oldest(status.oldest_unarchived)}"))  # room ids come from chats
    print(f"quarantined {status.quarantined_total}" + (" (most recent first):" if status.quarantined else ""))
    for job in status.quarantined:
        print(visible(f"  {job['room']}: {job['reason']} ({job['quarantined_at']})"))
    print(f"failed {status.failed_total}" + (" (most recent first):" if status.failed else ""))
    for job in status.failed:
        print(visible(f"  {job['room']}: {job['error']} (attempt {job['attempts']}, retry at {job['retry_at']})"))
    print(visible(f"last pass: {_outcome(status.last_pass)}"))
    print(visible(f"last rescan: {_outcome(status.last_rescan)}"))
    for kind, run in (("retention", status.last_retention), ("erasure", status.last_erasure)):
        print(f"last {kind} run: {_run(run)}")
    return OK


def _oldest(job: dict[str, Any] | None) -> str:
    """The age beside the time it counts from: the chat's end, or its discovery when the end is not known."""
    if job is None:
        return "none"
    age = job["age_seconds"]
    waited = f" ({age / 3600:.1f} h ago)" if age is not None else ""
    if job.get("ended_at"):
        return f"{job['room']} ({job['state']}), ended {job['ended_at']}{waited}, discovered {job['discovered_at']}"
    return f"{job['room']} ({job['state']}), end not known, discovered {job['discovered_at']}{waited}"


def _outcome(doc: dict[str, Any] | None) -> str:
    if doc is None:
        return "never recorded"
    counts = {k: v for k, v in doc.items() if isinstance(v, int) and not isinstance(v, bool)}
    line = f"{doc['outcome']}, ended {doc['ended_at']} by {doc['worker']}"
    line += f" ({', '.join(f'{k} {v}' for k, v in counts.items())})" if counts else ""
    return line + (f": {doc['error']}" if doc.get("error") else "")


def _run(run: dict[str, Any] | None) -> str:
    if run is None:
        return "never"
    if run["state"] != "done":
        return f"{run['run']} {run['state']} since {run['started_at']} (the next run of its kind finishes it)"
    from archiver.runs import described_counts

    return f"{run['run']} done {run['finished_at']}: {described_counts(run['counts'] or {})}; report {run['report']}"
