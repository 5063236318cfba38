"""Font subsets made once per process, PDFs unchanged; reportlab's replaced internals checked (render/fonts.py)."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import tomllib
import zlib
from pathlib import Path

import pytest
import reportlab
from reportlab.pdfbase import pdfdoc, ttfonts

from archiver.config import DEFAULT_TEMPLATE
from archiver.render import fonts
from archiver.render.pdf import PdfRenderer
from archiver.samples import make_chat
from archiver.transcript import normalise
from conftest import pdf_pages_and_text

ROOT = Path(__file__).resolve().parents[1]
ARABIC = "لم يصل طلبي بعد"


@pytest.fixture(scope="module")
def renderer() -> PdfRenderer:
    return PdfRenderer(DEFAULT_TEMPLATE)


def _chat(seed: int, text: str | None = None) -> dict:
    chat, _ = make_chat(random.Random(seed), messages=12, language="en")
    if text is not None:
        chat["messages"][0]["data"].update(messageType="TEXT", deliverySuccess=True)
        chat["messages"][0]["data"]["content"]["text"] = text
    return normalise(chat)


def test_reportlab_is_pinned_to_the_version_whose_internals_are_replaced() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in deps if re.match(r"reportlab\b", d)]
    assert pins == [f"reportlab=={fonts.REPORTLAB_VERSION}"], (
        f"pyproject.toml has {pins}: archiver/render/fonts.py replaces internals of reportlab "
        f"{fonts.REPORTLAB_VERSION}, so reportlab must be pinned to exactly that version")
    assert reportlab.Version == fonts.REPORTLAB_VERSION, (
        f"reportlab {reportlab.Version} is installed but archiver/render/fonts.py was checked against "
        f"{fonts.REPORTLAB_VERSION}: re-check its internals (and this suite) against the new version, "
        "then update REPORTLAB_VERSION and the pin in pyproject.toml")


def test_another_reportlab_version_is_refused_with_what_to_do(monkeypatch) -> None:
    monkeypatch.setattr(reportlab, "Version", "5.9.9")
    with pytest.raises(fonts.ReportlabMismatch, match=r"reportlab 5\.9\.9 is installed.*"
                       rf"install reportlab=={re.escape(fonts.REPORTLAB_VERSION)}"):
        fonts.check_reportlab()


def test_the_renderer_does_not_load_with_another_reportlab_version() -> None:
    code = "import reportlab; reportlab.Version = '5.9.9'; import archiver.render.pdf"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode != 0
    assert "ReportlabMismatch: reportlab 5.9.9 is installed" in done.stderr


@pytest.mark.parametrize("owner, name", [(ttfonts, "SUBSETN"), (ttfonts.TTFontFile, "makeSubset"),
                                         (pdfdoc, "PDFStreamFilterZCompress")])
def test_a_missing_reportlab_internal_is_refused_by_name(monkeypatch, owner, name) -> None:
    monkeypatch.delattr(owner, name)
    with pytest.raises(fonts.ReportlabMismatch, match=rf"lacks [\w.]*{name}, which archiver/render/fonts.py"):
        fonts.check_reportlab()


def test_the_first_subsets_are_made_once_for_many_pdfs(renderer) -> None:
    fonts.subset_contents.cache_clear()
    for seed in range(5):
        renderer.render(_chat(seed))
    info = fonts.subset_contents.cache_info()
    # Subset 0 of the regular and of the bold font: made by the first PDF, taken from the cache by the next four.
    assert (info.misses, info.hits) == (2, 8)


def test_a_subset_with_other_characters_is_made_afresh(renderer) -> None:
    fonts.subset_contents.cache_clear()
    renderer.render(_chat(1))
    renderer.render(_chat(1, "Il mio ordine non è ancora arrivato"))  # è joins the regular font's subset 0
    info = fonts.subset_contents.cache_info()
    assert (info.misses, info.hits) == (3, 1)  # only bold's subset 0 is the same
    assert info.currsize == 3


def test_a_pdf_from_cached_subsets_looks_and_reads_as_reportlabs_own(renderer, monkeypatch, tmp_path) -> None:
    """Page images and extracted text identical to reportlab's uncached subsets, across cache hits and misses;
    the cached ToUnicode map is scripts.to_unicode_cmap's (Arabic joining forms read back as letters)."""
    chats = [_chat(2), _chat(3, ARABIC), _chat(4, ARABIC + " 👍 Ελλάδα 我的订单"), _chat(2)]
    fonts.subset_contents.cache_clear()
    cached = [renderer.render(chat).data for chat in chats]
    assert fonts.subset_contents.cache_info().hits > 0
    monkeypatch.setattr(ttfonts.TTFont, "addObjects", fonts._REPORTLAB_ADD_OBJECTS)
    monkeypatch.setattr(pdfdoc, "PDFZCompress", pdfdoc.PDFStreamFilterZCompress())
    own = [renderer.render(chat).data for chat in chats]
    for i, (new, old) in enumerate(zip(cached, own)):
        assert new != old  # the two ways really differ in the file
        new_pages, new_text = pdf_pages_and_text(new, tmp_path, f"new{i}", 50)
        old_pages, old_text = pdf_pages_and_text(old, tmp_path, f"old{i}", 50)
        assert new_pages and new_pages == old_pages
        assert new_text == old_text
    assert "طلبي" in re.sub("[\u202a-\u202e]", "", pdf_pages_and_text(cached[1], tmp_path, "arabic", 50)[1])


def test_streams_made_per_pdf_are_deflated_fast_and_cached_fonts_at_9(renderer) -> None:
    pdf = renderer.render(_chat(5)).data
    starts = re.findall(rb"stream\r?\n(..)", pdf, re.S)
    assert b"x^" in starts and b"x\x01" not in starts  # page content: ISA-L's level 1 (zlib's would be x\x01)
    assert b"x\xda" in starts  # font program and ToUnicode map, made once: zlib's level 9


def test_embedded_dejavu_subsets_keep_the_licence_text(renderer) -> None:
    """docs/fonts.md: the Vera licence wants its permission notice in every copy of the typefaces."""
    pdf = renderer.render(_chat(6)).data
    programs = [zlib.decompress(m.group(1)) for m in re.finditer(rb"/Length1 \d+.*?stream\r?\n(.*?)endstream", pdf, re.S)]
    assert len(programs) >= 2  # regular and bold
    for program in programs:
        assert "this permission notice".encode("utf-16-be") in program
