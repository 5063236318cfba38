"""The PDF transcript (reportlab platypus), laid out and worded by a TOML template.

Message text is hostile input: every piece of text from the chat goes through
`TextMarkup`, which escapes it for reportlab's paragraph mini-language and only
then adds our own tags (font switches, placeholders), so nothing a customer
types is ever read as markup. Each character is drawn in the first font of the
template's chain that has it; one that no font has becomes a visible
`[U+XXXX]` placeholder and is counted.
"""

from __future__ import annotations

import datetime as dt
import io
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont, TTFError
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import HRFlowable, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from archiver.transcript import Message, Transcript

PAGE_SIZES = {"A4": A4, "LETTER": LETTER}
rl_config.useA85 = 0  # streams stay binary (compressed): smaller and faster than ASCII85
LINK_SCHEMES = ("http://", "https://", "mailto:")
REQUIRED = {
    "document": ("organisation", "title", "page_size", "margin_mm", "time_format"),
    "fonts": ("regular", "bold", "fallbacks", "size", "title_size"),
    "colors": ("text", "muted", "agent", "customer", "warning", "placeholder", "rule"),
}
FONT_PACKAGES = "fonts-dejavu-core, fonts-noto-core and fonts-droid-fallback"


class TemplateError(ValueError):
    """The template or a font it names is unusable; the message names the file and key."""


@dataclass(frozen=True)
class RenderedPdf:
    data: bytes
    placeholders: int


@dataclass(frozen=True)
class Template:
    path: Path
    document: dict[str, Any]
    fonts: dict[str, Any]
    colors: dict[str, str]
    labels: dict[str, str]


def load_template(path: str | Path) -> Template:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TemplateError(f"template {path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"template {path}: not valid TOML ({exc})") from None
    for section, keys in {**REQUIRED, "labels": tuple(_DEFAULT_LABEL_KEYS)}.items():
        table = raw.get(section)
        if not isinstance(table, dict):
            raise TemplateError(f"template {path}: section [{section}] is missing")
        missing = [k for k in keys if k not in table]
        if missing:
            raise TemplateError(f"template {path}: [{section}] lacks {', '.join(missing)}")
    if raw["document"]["page_size"] not in PAGE_SIZES:
        raise TemplateError(f"template {path}: document.page_size must be one of {', '.join(PAGE_SIZES)}")
    return Template(path, raw["document"], raw["fonts"], raw["colors"], raw["labels"])


_DEFAULT_LABEL_KEYS = (
    "room", "type", "channel", "service", "chat_title", "language", "agents", "customers", "started", "ended",
    "closed_by", "messages", "failed_deliveries", "placeholders", "status_ended", "status_interim",
    "status_abandoned", "warnings", "agent", "customer", "unknown", "time_unknown", "closed_event",
    "not_delivered", "duplicate_of", "reply_to", "attachment", "empty", "page", "footer", "none",
)


class TextMarkup:
    """Turns untrusted text into safe paragraph markup with per-character font fallback."""

    def __init__(self, fonts: list[tuple[str, frozenset[int]]], placeholder_color: str) -> None:
        self.fonts = fonts  # (registered name, code points it covers), in order of preference
        self.main_cover = fonts[0][1]
        self.placeholder_color = placeholder_color

    def __call__(self, text: str) -> tuple[str, int]:
        """Markup for TEXT and how many characters became placeholders."""
        if all(ord(ch) in self.main_cover and ch.isprintable() for ch in text):
            return escape(text), 0  # the common case: one font, nothing to switch
        parts: list[str] = []
        placeholders = 0
        run_font, run = self.fonts[0][0], []
        for ch in text:
            if ch == "\n":
                parts.append(self._run(run_font, run) + "<br/>")
                run = []
                continue
            font = self._font_for(ch)
            if font is None:
                parts.append(self._run(run_font, run))
                run = []
                parts.append(f'<font color="{self.placeholder_color}">[U+{ord(ch):04X}]</font>')
                placeholders += 1
                continue
            if font != run_font:
                parts.append(self._run(run_font, run))
                run_font, run = font, []
            run.append(" " if ch == "\t" else ch)
        parts.append(self._run(run_font, run))
        return "".join(parts), placeholders

    def _font_for(self, ch: str) -> str | None:
        if ch == "\t":
            return self.fonts[0][0]
        if not ch.isprintable() and unicodedata.category(ch) != "Zs":
            return None  # control and format characters are shown, never emitted raw
        code = ord(ch)
        return next((name for name, cover in self.fonts if code in cover), None)

    def _run(self, font: str, chars: list[str]) -> str:
        if not chars:
            return ""
        text = escape("".join(chars))
        return text if font == self.fonts[0][0] else f'<font name="{font}">{text}</font>'


def _register(path: str, key: str, template: Path) -> tuple[str, frozenset[int]]:
    name = "Archiver-" + Path(path).stem
    if name not in pdfmetrics.getRegisteredFontNames():
        try:
            pdfmetrics.registerFont(TTFont(name, path))
        except (TTFError, OSError) as exc:
            raise TemplateError(
                f"template {template}: fonts.{key} {path}: cannot load ({exc}); "
                f"the Debian packages {FONT_PACKAGES} provide the default fonts"
            ) from None
    font = pdfmetrics.getFont(name)
    # Only the Basic Multilingual Plane: reportlab mis-encodes characters beyond it
    # (U+1F600 comes out as U+1F60), so those honestly become placeholders.
    return name, frozenset(code for code in font.face.charToGlyph if code <= 0xFFFF)


class PdfRenderer:
    """Renders transcripts; fonts and template load once, at construction."""

    def __init__(self, template_path: str | Path, timezone: str = "UTC") -> None:
        self.template = load_template(template_path)
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise TemplateError(f"render.timezone: unknown time zone {timezone!r}") from None
        t = self.template
        regular = _register(t.fonts["regular"], "regular", t.path)
        bold = _register(t.fonts["bold"], "bold", t.path)
        fallbacks = [_register(p, "fallbacks", t.path) for p in t.fonts["fallbacks"]]
        # <b> and <i> in our own markup map to these; there is no italic face, so it stays upright.
        pdfmetrics.registerFontFamily(regular[0], normal=regular[0], bold=bold[0], italic=regular[0],
                                      boldItalic=bold[0])
        self.markup = TextMarkup([regular, *fallbacks], t.colors["placeholder"])
        self.bold_markup = TextMarkup([bold, regular, *fallbacks], t.colors["placeholder"])
        size = float(t.fonts["size"])
        ink = colors.HexColor(t.colors["text"])
        self.styles = {
            "body": ParagraphStyle("body", fontName=regular[0], fontSize=size, leading=size * 1.3, textColor=ink),
            "meta": ParagraphStyle("meta", fontName=regular[0], fontSize=size * 0.85, leading=size * 1.15,
                                   textColor=colors.HexColor(t.colors["muted"]), spaceBefore=size * 0.6),
            "title": ParagraphStyle("title", fontName=bold[0], fontSize=float(t.fonts["title_size"]),
                                    leading=float(t.fonts["title_size"]) * 1.3, textColor=ink),
            "label": ParagraphStyle("label", fontName=bold[0], fontSize=size * 0.9, leading=size * 1.2, textColor=ink),
            "value": ParagraphStyle("value", fontName=regular[0], fontSize=size * 0.9, leading=size * 1.2,
                                    textColor=ink),
            "warning": ParagraphStyle("warning", fontName=bold[0], fontSize=size, leading=size * 1.3,
                                      textColor=colors.HexColor(t.colors["warning"])),
        }
        self.fonts = (regular[0], bold[0])

    # -- public ----------------------------------------------------------------------------

    def render(self, transcript: Transcript) -> RenderedPdf:
        counter = _Counter()
        body = [self._message(m, counter) for m in transcript.messages]
        story = [*self._header(transcript, counter), *body]
        buffer = io.BytesIO()
        t = self.template
        margin = float(t.document["margin_mm"]) * mm
        doc = SimpleDocTemplate(
            buffer, pagesize=PAGE_SIZES[t.document["page_size"]], leftMargin=margin, rightMargin=margin,
            topMargin=margin, bottomMargin=margin + 6 * mm, title=transcript.room, author=t.document["organisation"],
            subject=t.document["title"], creator="ctlive-archiver",
            initialFontName=self.fonts[0],  # else every page names an unembedded Helvetica
        )
        footer = t.labels["footer"].format(room=transcript.room)
        doc.build(story, canvasmaker=_numbered_canvas(self.fonts[0], footer, t.labels["page"], t.colors["muted"]))
        return RenderedPdf(buffer.getvalue(), counter.placeholders)

    # -- pieces ------------------------------------------------------------------------------

    def _text(self, text: str, counter: "_Counter", bold: bool = False) -> str:
        markup, missing = (self.bold_markup if bold else self.markup)(text)
        counter.placeholders += missing
        return markup

    def _time(self, when: dt.datetime | None) -> str:
        if when is None:
            return self.template.labels["time_unknown"]
        local = when.astimezone(self.zone)
        return f"{local.strftime(self.template.document['time_format'])} {local.tzname()}"

    def _header(self, t: Transcript, counter: "_Counter") -> list[Any]:
        labels, none = self.template.labels, self.template.labels["none"]
        rows = [
            (labels["room"], t.room), (labels["type"], t.ctlive_type), (labels["channel"], t.channel),
            (labels["service"], t.service), (labels["chat_title"], t.title), (labels["language"], t.language),
            (labels["agents"], ", ".join(t.agents)), (labels["customers"], ", ".join(t.customers)),
            (labels["started"], self._time(t.started_at) if t.started_at else ""),
            (labels["ended"], self._time(t.ended_at) if t.ended_at else ""), (labels["closed_by"], t.closed_by),
            (labels["messages"], str(len(t.messages))), (labels["failed_deliveries"], str(t.failed_deliveries)),
        ]
        cells = [[Paragraph(escape(k), self.styles["label"]), Paragraph(self._text(v or none, counter),
                                                                         self.styles["value"])] for k, v in rows]
        # Counted last, so that it includes the header's own placeholders.
        cells.append([Paragraph(escape(labels["placeholders"]), self.styles["label"]),
                      Paragraph(str(counter.placeholders), self.styles["value"])])
        width = PAGE_SIZES[self.template.document["page_size"]][0] - 2 * float(self.template.document["margin_mm"]) * mm
        table = Table(cells, colWidths=[width * 0.3, width * 0.7])
        table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                                   ("TOPPADDING", (0, 0), (-1, -1), 1),
                                   ("FONT", (0, 0), (-1, -1), self.fonts[0])]))  # not the default Helvetica
        doc = self.template.document
        status = labels.get(f"status_{t.status}", t.status)
        story: list[Any] = [
            Paragraph(escape(doc["organisation"]), self.styles["meta"]),
            Paragraph(escape(doc["title"]), self.styles["title"]),
            Paragraph(escape(status), self.styles["warning" if t.status != "ended" else "label"]),
            Spacer(1, 3 * mm), table,
        ]
        if t.warnings:
            story.append(Paragraph(escape(labels["warnings"]), self.styles["warning"]))
            story.extend(Paragraph(self._text(w, counter), self.styles["meta"]) for w in t.warnings)
        story.append(HRFlowable(width="100%", color=colors.HexColor(self.template.colors["rule"]), spaceBefore=4,
                                spaceAfter=2))
        return story

    def _message(self, m: Message, counter: "_Counter") -> Paragraph:
        labels, palette = self.template.labels, self.template.colors
        role = {"agent": labels["agent"], "customer": labels["customer"]}.get(m.role, labels["unknown"])
        colour = palette.get(m.role, palette["muted"])
        meta = (f"#{m.position} · {escape(self._time(m.sent_at))} · "
                f'<font color="{colour}">{self._text(m.sender_id or labels["none"], counter, bold=True)}</font>'
                f" ({escape(role)})")
        if m.type and m.type != "TEXT":
            meta += f" · {self._text(m.type, counter)}"
        lines = [meta]
        if m.is_end:
            lines.append(f"<i>{escape(labels['closed_event'])} {self._text(m.sender_id or labels['none'], counter)}"
                         "</i>")
        if m.url:
            lines.append(self._link(m, counter))
        if m.text:
            lines.append(self._text(m.text, counter))
        elif not m.url and not m.is_end:
            lines.append(f"<i>{escape(labels['empty'])}</i>")
        notes = []
        if m.delivered is False:
            reason = f": {self._text(m.delivery_error, counter)}" if m.delivery_error else ""
            notes.append(f'<font color="{palette["warning"]}"><b>{escape(labels["not_delivered"])}</b>{reason}</font>')
        if m.duplicate_of:
            notes.append(f'<font color="{palette["warning"]}">{escape(labels["duplicate_of"])} #{m.duplicate_of}'
                         "</font>")
        if m.reply_to:
            notes.append(f"{escape(labels['reply_to'])} {self._text(m.reply_to, counter)}")
        lines.extend(notes)
        return Paragraph("<br/>".join(lines), self.styles["body"])

    def _link(self, m: Message, counter: "_Counter") -> str:
        label = escape(self.template.labels["attachment"])
        shown = self._text(m.url, counter)
        if m.url.lower().startswith(LINK_SCHEMES) and m.url.isprintable():
            return f'{label}: <a href={quoteattr(m.url)} color="{self.template.colors["agent"]}">{shown}</a>'
        return f"{label}: {shown}"


class _Counter:
    placeholders = 0


def _numbered_canvas(font: str, footer: str, page_label: str, colour: str) -> type[Canvas]:
    """A canvas that writes "Page N of M" and the footer once the page count is known."""

    class NumberedCanvas(Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:  # noqa: N802 (reportlab's name)
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self._footer(total)
                super().showPage()
            super().save()

        def _footer(self, total: int) -> None:
            width, _ = self._pagesize
            self.saveState()
            self.setFont(font, 7.5)
            self.setFillColor(colors.HexColor(colour))
            self.drawString(18 * mm, 10 * mm, footer[:150])
            self.drawRightString(width - 18 * mm, 10 * mm, page_label.format(page=self._pageNumber, pages=total))
            self.restoreState()

    return NumberedCanvas
