"""Imported once by the fork server the worker processes are forked from (pipeline._worker_context).

Each worker starts as a copy of that server: with the build's libraries imported
(reportlab, pyHanko, cryptography, boto3) and the fonts of the bundled template
parsed, instead of spending about 0.3 s of CPU on them itself, and all of it
frozen (archiver/heap.py). Nothing here may stop the server from starting: a
font that cannot be read is left to the worker that needs it, which reports it.
"""

from archiver import artifacts  # noqa: F401  (imported for the server's children)
from archiver import heap
from archiver.config import DEFAULT_TEMPLATE
from archiver.render.loaded_fonts import preload
from archiver.render.pdf import load_template


def _bundled_fonts() -> list[str]:
    try:
        fonts = load_template(DEFAULT_TEMPLATE).fonts
        return [fonts["regular"], fonts["bold"], *fonts.get("fallbacks", [])]
    except Exception:  # never fatal here: the fork server must start
        return []


preload(_bundled_fonts())
heap.freeze_start_up()  # the workers inherit it: their full collections skip the fonts (archiver/heap.py)
