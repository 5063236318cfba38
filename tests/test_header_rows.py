"""The header table's rows, whose lines the renderer remembers (labels per renderer, values bounded):
what is remembered never changes what a PDF shows or counts."""

from __future__ import annotations

import random

import pytest
from reportlab import rl_config

from archiver.config import DEFAULT_TEMPLATE
from archiver.render import pdf as pdf_module
from archiver.render.pdf import PdfRenderer
from archiver.samples import make_chat
from archiver.transcript import normalise


def _transcript(seed: int, room: str):
    chat, contact = make_chat(random.Random(seed), messages=4)
    chat["room"] = room
    return normalise(chat, contact, status="ended")


def _header_texts(renderer: PdfRenderer, transcript) -> list[str]:
    counter = pdf_module._Counter()
    return ["".join(run.text for _, run in line.runs) for line in renderer._header(transcript, counter)]


def test_a_label_with_placeholders_is_counted_in_every_rendering(tmp_path) -> None:
    template = tmp_path / "t.toml"
    template.write_text(DEFAULT_TEMPLATE.read_text().replace('room = "Room"', 'room = "Room\\u0007"'))
    renderer = PdfRenderer(template)
    first, second = _transcript(1, "CHAT_DEFAULT_a"), _transcript(2, "CHAT_DEFAULT_b")
    counts = [renderer.render(t).placeholders for t in (first, second, first)]
    fresh = [PdfRenderer(template).render(t).placeholders for t in (first, second)]
    assert counts == [fresh[0], fresh[1], fresh[0]]
    assert fresh[0] >= 1  # the label's control character, shown as a placeholder


def test_remembered_values_never_show_in_another_chat(monkeypatch) -> None:
    monkeypatch.setattr(rl_config, "invariant", 1)
    monkeypatch.setattr(pdf_module, "COLUMNS_KEPT", 3)  # forgotten often: both ways are exercised
    renderer = PdfRenderer(DEFAULT_TEMPLATE)
    a, b = _transcript(1, "CHAT_DEFAULT_first"), _transcript(2, "CHAT_DEFAULT_second")
    texts = [_header_texts(renderer, t) for t in (a, b, a, b)]
    assert texts[0] == texts[2] == _header_texts(PdfRenderer(DEFAULT_TEMPLATE), a)
    assert texts[1] == texts[3] == _header_texts(PdfRenderer(DEFAULT_TEMPLATE), b)
    assert any("CHAT_DEFAULT_first" in line for line in texts[0])
    assert not any("CHAT_DEFAULT_first" in line for line in texts[1])
    pdfs = [renderer.render(t).data for t in (a, b, a)]
    assert pdfs[0] == pdfs[2] != pdfs[1]


@pytest.mark.parametrize("kept", [1, 1_000])
def test_remembered_values_stay_bounded(monkeypatch, kept) -> None:
    monkeypatch.setattr(pdf_module, "COLUMNS_KEPT", kept)
    renderer = PdfRenderer(DEFAULT_TEMPLATE)
    for seed in range(5):
        renderer._header(_transcript(seed, f"CHAT_DEFAULT_{seed}"), pdf_module._Counter())
        assert len(renderer._columns) <= kept
