"""One module per command: each parses its arguments and prints, the logic lives in the domain modules.

Each module has HELP, EXAMPLE, `add_arguments(parser)` and `run(args) -> exit code`.
"""

from __future__ import annotations

from types import ModuleType

from archiver.commands import audit, demo, export, indexes, keys, render, retrieve, run, search, seal, serve, status, verify
from archiver.commands import erase, hold, retention

COMMANDS: dict[str, ModuleType] = {
    "demo": demo, "keys": keys, "render": render, "run": run, "serve": serve, "export": export,
    "indexes": indexes, "status": status,
    "search": search, "retrieve": retrieve, "verify": verify, "audit": audit,
    "seal": seal,
    "hold": hold, "retention": retention, "erase": erase,
}
