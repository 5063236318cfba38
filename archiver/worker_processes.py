"""Worker processes forked from a fork server that never import the caller's main module.

multiprocessing starts every child by re-importing the parent's `__main__` (as `__mp_main__`),
so that functions defined there can be unpickled. Ours run only `archiver.*` functions, and
`archiver.cli.main` may be called from any script (the contract's in-process entry point): a
script without an `if __name__ == "__main__"` guard would run again in every worker (seeding
twice, starting processes while bootstrapping), and one fed on stdin (`python - <<EOF`) names a
main file that does not exist, so every worker would die before its first chat.
"""

from __future__ import annotations

import io
import os
from multiprocessing import context, forkserver, popen_forkserver, spawn, util
from multiprocessing.context import reduction, set_spawning_popen  # type: ignore[attr-defined]
from typing import Any

MAIN_MODULE_KEYS = ("init_main_from_name", "init_main_from_path")  # where spawn.prepare finds the caller's main


class _Popen(popen_forkserver.Popen):
    def _launch(self, process_obj: Any) -> None:
        # popen_forkserver.Popen._launch (Python 3.11-3.13), with preparation data that names no main module.
        prep_data = spawn.get_preparation_data(process_obj._name)
        for key in MAIN_MODULE_KEYS:
            prep_data.pop(key, None)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        _parent_w = os.dup(w)  # the child's sentinel of its parent, as the standard library keeps it
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _Process(context.ForkServerProcess):  # type: ignore[misc, valid-type]
    @staticmethod
    def _Popen(process_obj: Any) -> _Popen:
        return _Popen(process_obj)


class _Context(context.ForkServerContext):
    Process = _Process


def forkserver_context(preload: list[str]) -> context.BaseContext:
    """A fork-server context for a process pool (the fork server, shared by the process, imports PRELOAD when it
    starts) whose workers do not import the caller's main module."""
    worker_context = _Context()
    worker_context.set_forkserver_preload(preload)
    return worker_context
