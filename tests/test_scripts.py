"""Every script readable and searchable: pdftotext gives back the logical text; RTL lines in visual order."""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

import pytest

from archiver.config import DEFAULT_TEMPLATE
from archiver.render.pdf import PdfRenderer
from archiver.render.scripts import visual
from archiver.samples import make_chat
from archiver.transcript import normalise
from conftest import require_tool

CORPUS = {
    "Latin": "Il mio ordine non è ancora arrivato, grazie",
    "Greek": "Η παραγγελία μου δεν έφτασε",
    "Cyrillic": "Мой заказ задерживается",
    "Arabic": "لم يصل طلبي بعد",
    "Persian": "سفارش من هنوز نرسیده است",
    "Urdu": "میرا آرڈر ابھی تک نہیں پہنچا",
    "Hebrew": "ההזמנה שלי עדיין לא הגיעה",
    "Chinese": "我的订单还没有到",
    "Japanese": "注文がまだ届いていません",
    "Korean": "주문한 상품이 아직 도착하지 않았습니다",
    "Thai": "คำสั่งซื้อของฉันยังไม่มาถึง",
    "Devanagari": "मेरा ऑर्डर अभी तक नहीं आया",
    "emoji": "👍 😀 🎉 ❤",
}
BIDI_MARKS = re.compile("[\u202a-\u202e]")  # pdftotext wraps right-to-left runs in embedding marks


@pytest.fixture(scope="module")
def renderer() -> PdfRenderer:
    return PdfRenderer(DEFAULT_TEMPLATE)


def _chat(texts: list[str]) -> dict:
    chat, _ = make_chat(random.Random(1), messages=len(texts) + 1)
    for message, text in zip(chat["messages"], texts):
        message["data"].update(messageType="TEXT", deliverySuccess=True)
        message["data"]["content"] = {"text": text, "user": message["data"]["content"]["user"]}
    return chat


def _pdftotext(pdf: bytes, tmp_path: Path) -> str:
    require_tool("pdftotext")
    path = tmp_path / "s.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, text=True).stdout
    return re.sub(r"\s+", " ", BIDI_MARKS.sub("", text))


@pytest.mark.parametrize("script", CORPUS)
def test_pdftotext_gives_back_each_script_in_logical_order(renderer, tmp_path, script) -> None:
    out = renderer.render(normalise(_chat([CORPUS[script]])))
    assert out.placeholders == 0, script
    extracted = _pdftotext(out.data, tmp_path)
    if script == "emoji":  # Symbola's metrics make poppler's layout analysis drop single spaces between emoji
        assert CORPUS[script].replace(" ", "") in extracted.replace(" ", "")
    else:
        assert CORPUS[script] in extracted


def test_a_search_finds_every_word_of_a_mixed_direction_line(renderer, tmp_path) -> None:
    line = "Order 4711 ordine طلبي رقم 12 arrivato שלום ok"
    text = _pdftotext(renderer.render(normalise(_chat([line]))).data, tmp_path)
    for word in line.split():
        assert word in text, word


def test_right_to_left_runs_are_drawn_in_visual_order() -> None:
    chars = [(ch, i) for i, ch in enumerate("ab אבג 12 cd")]
    drawn = "".join(ch for ch, _ in visual(chars, 0))
    assert drawn == "ab 12 גבא cd"
    assert [ch for ch, _ in visual([(c, 0) for c in "אבג 12"], 1)] == list("12 גבא")
    assert dict(visual(chars, 0))["ג"] == 5
    assert "".join(ch for ch, _ in visual([(c, 0) for c in "א(ב)"], 1)) == "(ב)א", "brackets mirrored"  # each character keeps what it belongs to (its run)


def test_a_right_to_left_paragraph_is_aligned_right(renderer) -> None:
    from archiver.render.pdf import Run, wrap
    body = renderer.styles["body"]
    [line] = list(wrap([Run("שלום", body)], 200, 10))
    assert line.runs[0][0] > 150, "starts near the right edge"
    [line] = list(wrap([Run("hello", body)], 200, 10))
    assert line.runs[0][0] == 0


def test_every_font_of_the_template_comes_from_a_listed_debian_package() -> None:
    import tomllib
    packages = Path(__file__).parents[1].joinpath("config/debian-packages.txt").read_text().split()
    owners = {"dejavu": "fonts-dejavu-core", "noto": "fonts-noto-core", "droid": "fonts-droid-fallback",
              "nanum": "fonts-nanum", "ancient-scripts": "fonts-symbola"}
    for name in ("transcript.toml", "transcript.it.toml"):
        fonts = tomllib.loads(DEFAULT_TEMPLATE.with_name(name).read_text())["fonts"]
        for path in [fonts["regular"], fonts["bold"], *fonts["fallbacks"]]:
            assert owners[Path(path).parent.name] in packages, path
            assert Path(path).is_file(), f"{path}: run `make test` to install the fonts"


def test_emoji_sequences_are_drawn_as_their_pieces(renderer) -> None:
    """docs/fonts.md, known limits: joiners are placeholders, skin tones and variation selectors are drawn."""
    body = renderer.styles["body"]
    runs, missing = renderer.chain.runs("\U0001F468\u200d\U0001F469", body)
    assert missing == 1 and [r.text for r in runs] == ["\U0001F468", "[U+200D]", "\U0001F469"]
    for sequence in ["\U0001F44D\U0001F3FD", "\u2764\ufe0f"]:
        assert renderer.chain.runs(sequence, body)[1] == 0, sequence


def test_lam_alef_is_two_joined_letters_so_extracted_text_keeps_its_order(renderer, tmp_path) -> None:
    word = "السلام"
    out = renderer.render(normalise(_chat([word])))
    assert word in _pdftotext(out.data, tmp_path)


def test_zero_width_joiners_in_arabic_text_are_kept_not_dropped_by_the_reshaper() -> None:
    """arabic-reshaper drops every U+200D: in a message with an Arabic letter, an emoji family lost its
    joiners, and two letters joined by one, with nothing shown for them."""
    from archiver.render.scripts import shape
    text = "family \U0001F468\u200d\U0001F469\u200d\U0001F467 ok مرحبا ب\u200dب"
    shaped = shape(text)
    assert shaped.count("\u200d") == 3 and "\U0001F468\u200d\U0001F469\u200d\U0001F467" in shaped
