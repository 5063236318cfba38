"""What a process holds from its start to its end, kept out of the garbage collector's full collections.

CPython's full collection walks every container object the process tracks. An
archiver process holds some 160,000 of them for as long as it runs (the parsed
fonts, the libraries' modules, the builder) and walked them all about once per
300 chats: a fifth of the main process's CPU per chat (bench/pipeline.py).
`gc.freeze` moves what exists into a generation the collector never walks.
Reference counting still frees a frozen object nobody holds; only a cycle among
frozen objects would stay, so a collection runs first, and each process
freezes once: the fork server after its preload, a pool worker once it has its
builder, the main process when its first Archiver is made (a script calling
archiver.cli.main in-process: whatever the script holds then too). What a
process makes later is collected as before.
"""

from __future__ import annotations

import gc
import os

_FROZEN_IN: int | None = None  # the process that froze (a forked child inherits the mark, not the freeze's point)


def freeze_start_up() -> None:
    """Collect, then freeze what this process holds now; once per process (later calls do nothing)."""
    global _FROZEN_IN
    if _FROZEN_IN == os.getpid():
        return
    _FROZEN_IN = os.getpid()
    gc.collect()
    gc.freeze()
