"""A worker process starts with the bundled template's fonts parsed (by the fork server it is forked from),
and fonts are known by their file: the same name in another folder, or a file replaced since, is another font."""

from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
from pathlib import Path

import pytest
from reportlab.pdfbase import pdfmetrics

from archiver.config import DEFAULT_TEMPLATE
from archiver.pipeline import _worker_context
from archiver.render import loaded_fonts
from archiver.render.pdf import PdfRenderer, TemplateError, load_template

BUNDLED = load_template(DEFAULT_TEMPLATE).fonts
REGULAR, BOLD = BUNDLED["regular"], BUNDLED["bold"]


def _face_name(name: str) -> bytes:
    return pdfmetrics.getFont(name).face.name


def _parsed_fonts() -> list[str]:
    """In a worker process: the paths of the fonts parsed so far."""
    return [key[0] for key in loaded_fonts._LOADED]


def test_a_worker_process_starts_with_the_bundled_fonts_parsed() -> None:
    wanted = [REGULAR, BOLD, *BUNDLED["fallbacks"]]
    present = [path for path in wanted if os.path.exists(path)]
    assert REGULAR in present, "the bundled template's fonts are not installed here"
    with cf.ProcessPoolExecutor(1, mp_context=_worker_context()) as pool:  # no initializer: nothing loaded by it
        parsed = pool.submit(_parsed_fonts).result(timeout=60)
    assert sorted(parsed) == sorted(present)


def test_a_font_is_parsed_once_per_process(monkeypatch) -> None:
    made = []

    class Counting(loaded_fonts.TTFont):
        def __init__(self, *args, **kwargs) -> None:
            made.append(args[1])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(loaded_fonts, "TTFont", Counting)
    first = PdfRenderer(DEFAULT_TEMPLATE)
    second = PdfRenderer(DEFAULT_TEMPLATE)
    assert made.count(REGULAR) <= 1 and made.count(BOLD) <= 1
    assert first.chain.covers == second.chain.covers  # the same names and coverage


def _template_with_regular(tmp_path: Path, font: Path | str) -> Path:
    template = tmp_path / "template.toml"
    text = Path(DEFAULT_TEMPLATE).read_text(encoding="utf-8").replace(f'"{REGULAR}"', f'"{font}"')
    template.write_text(text, encoding="utf-8")
    return template


def _regular_face(renderer: PdfRenderer) -> bytes:
    return _face_name(renderer.styles["body"].font)


def test_another_file_with_the_same_name_is_another_font(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    impostor = tmp_path / "other" / Path(REGULAR).name  # DejaVuSans.ttf, holding the bold face
    shutil.copyfile(BOLD, impostor)
    bundled = PdfRenderer(DEFAULT_TEMPLATE)  # DejaVuSans.ttf of the system, in this process first
    other = PdfRenderer(_template_with_regular(tmp_path, impostor))
    assert _regular_face(other) == _face_name(bundled.styles["title"].font) != _regular_face(bundled)
    assert other.chain.covers[other.styles["body"].font] == bundled.chain.covers[bundled.styles["title"].font]


def test_a_font_file_replaced_since_it_was_parsed_is_parsed_again(tmp_path: Path) -> None:
    path = tmp_path / "Font.ttf"
    shutil.copyfile(REGULAR, path)
    template = _template_with_regular(tmp_path, path)
    before = PdfRenderer(template)
    assert PdfRenderer(template).styles["body"].font == before.styles["body"].font
    replacement = tmp_path / "new.ttf"
    shutil.copyfile(BOLD, replacement)
    os.replace(replacement, path)  # a package upgrade: another file under that name
    after = PdfRenderer(template)
    assert _regular_face(after) == _face_name(after.styles["title"].font) != _regular_face(before)


def test_preloading_skips_fonts_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "junk.ttf").write_bytes(b"not a font")
    assert loaded_fonts.preload([str(tmp_path / "missing.ttf"), str(tmp_path / "junk.ttf"), REGULAR]) == 1


def test_a_template_font_that_is_no_font_is_still_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "Junk.ttf").write_bytes(b"not a font")
    template = _template_with_regular(tmp_path, tmp_path / "Junk.ttf")
    with pytest.raises(TemplateError, match=r"fonts.regular .*Junk.ttf: cannot load"):
        PdfRenderer(template)


@pytest.mark.parametrize("text", [None, "not [ toml", "[fonts]\nregular = 3\n"])
def test_the_fork_servers_preload_never_fails_on_an_unusable_bundled_template(tmp_path: Path, monkeypatch, text) -> None:
    from archiver import worker_preload

    template = tmp_path / "transcript.toml"
    if text is not None:
        template.write_text(text, encoding="utf-8")
    monkeypatch.setattr(worker_preload, "DEFAULT_TEMPLATE", template)
    assert worker_preload._bundled_fonts() == []  # the workers load and report the template themselves
