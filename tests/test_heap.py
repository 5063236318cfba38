"""What a process holds from its start is frozen (archiver/heap.py): left out of the garbage collector's full
collections, once per process, after a collection; the fork server's workers and the archiver's main process do it."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import os
import subprocess
import sys
import textwrap

from archiver import artifacts
from archiver.pipeline import _worker_context
from archiver.render import loaded_fonts
from reportlab.pdfbase import pdfmetrics


def _frozen(obj: object) -> bool:
    """OBJ is in the permanent generation: tracked, yet in none the collector walks."""
    return gc.is_tracked(obj) and all(o is not obj for o in gc.get_objects())


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_freezing_collects_first_then_freezes_once_per_process() -> None:
    out = _python("""
        import gc, os, weakref
        from archiver import heap

        class Node: pass
        cycle = Node(); cycle.me = cycle
        dead = weakref.ref(cycle); del cycle           # garbage, in a cycle: collected, never frozen
        kept = {"held": [1]}
        heap.freeze_start_up()
        frozen = gc.get_freeze_count()
        later = {"made": [2]}
        heap.freeze_start_up()                          # the same process: nothing more
        again = gc.get_freeze_count()
        in_walked = any(o is later for o in gc.get_objects())
        pid = os.fork()
        if pid == 0:                                    # a child forked from it freezes its own start
            heap.freeze_start_up()
            os._exit(0 if not any(o is later for o in gc.get_objects()) else 1)
        _, status = os.waitpid(pid, 0)
        print(dead() is None, frozen > 0, not any(o is kept for o in gc.get_objects()), again == frozen,
              in_walked, os.waitstatus_to_exitcode(status))
    """)
    assert out == "True True True True True 0"


def _worker_state() -> tuple[bool, bool, int]:
    """In a worker: the first font parsed (in the fork server) frozen; the builder frozen (if one); the freeze count."""
    face = pdfmetrics.getFont(next(iter(loaded_fonts._LOADED.values()))[0]).face
    builder = artifacts._WORKER_BUILDER
    return _frozen(face), builder is not None and _frozen(builder), gc.get_freeze_count()


def test_a_worker_starts_with_the_fork_servers_fonts_frozen_and_freezes_its_builder(make_config) -> None:
    with cf.ProcessPoolExecutor(1, mp_context=_worker_context()) as pool:  # no initializer: the server's state
        fonts, builder, count = pool.submit(_worker_state).result(timeout=60)
    assert fonts and not builder and count > 0
    with cf.ProcessPoolExecutor(1, mp_context=_worker_context(), initializer=artifacts.init_pool_worker,
                                initargs=(make_config(), dict(os.environ), os.getpid())) as pool:
        fonts, builder, count_after_start = pool.submit(_worker_state).result(timeout=60)
    assert fonts and builder and count_after_start > count


def test_the_archiver_freezes_what_it_made_at_its_start(tmp_path) -> None:
    """In a process of its own: in the suite's, an earlier test's Archiver froze first (once per process)."""
    out = _python(f"""
        import gc
        from pathlib import Path
        from archiver import artifacts, config
        from archiver.keys import create_development_keys
        from archiver.pipeline import Archiver

        keys = create_development_keys(Path({str(tmp_path / "keys")!r}))
        settings = config.load(None, environ={{}}).with_overrides(**{{
            "mongodb.uri": "mongomock://heap", "storage.url": "file://{tmp_path / 'store'}",
            "signing.certificate": str(keys["signing.crt.pem"]), "signing.key": str(keys["signing.key.pem"]),
            "encryption.recipients": [str(keys["legal.crt.pem"])], "archive.workers": 1}})
        before = gc.get_freeze_count()
        archiver = Archiver(settings)
        walked = gc.get_objects()
        print(before == 0, all(o is not artifacts.worker_builder() for o in walked),
              all(o is not archiver.config for o in walked))
    """)
    assert out.splitlines()[-1] == "True True True"
