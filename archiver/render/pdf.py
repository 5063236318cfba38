"""The PDF transcript, laid out and worded by a TOML template, drawn on a reportlab canvas.

Message text is hostile input: it is only ever measured and drawn as text runs,
never parsed (no markup language sits in between), so nothing a customer types
can change the layout or the document. Each character is drawn in the first
font of the template's chain that has it; one that no font has becomes a
visible `[U+XXXX]` placeholder and is counted.

Every line of a message after its header starts with a quote bar, so no text
can pass for a header, on the page or in extracted text. Fields are shown up
to `Limits` (a longer one is cut with a visible, counted note; the JSON record
keeps it whole), and a transcript over the page or byte cap is refused with
`InvalidChat`, which quarantines the chat.

Layout is plain greedy line filling, not platypus: laying out paragraphs with
platypus cost four fifths of the time of the whole archive job per chat.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import operator
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import reportlab
from reportlab import rl_config
from reportlab.lib.colors import Color, HexColor
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.pdfdoc import PDFArray
from reportlab.pdfbase.ttfonts import TTFError
from reportlab.pdfgen.canvas import Canvas

from archiver.attachments import Attachment
from archiver.redaction import RedactionNote
from archiver.render.attachments import attachment_lines
from archiver.render.content import TextWriter
from archiver.render.evidence import make_self_contained
from archiver.render.fonts import check_reportlab
from archiver.render import loaded_fonts, pdfsyntax
from archiver.render.scripts import base_level, has_rtl, shape, visual
from archiver.visible import INVISIBLE, pdf_title, visible
from archiver.visible import hidden as _hidden, placeholder as _placeholder
from archiver.transcript import (WARNINGS, DataWarning, Event, InvalidChat, Message, Participant, Transcript,
                                 read_receipt)
from archiver.render.signature_field import Placeholder, SignatureField, SignatureSlot

PAGE_SIZES = {"A4": A4, "LETTER": LETTER}
rl_config.useA85 = 0  # streams stay binary (compressed): smaller and faster than ASCII85
check_reportlab()  # importing archiver.render.fonts put its font subset cache in place (and checked reportlab)
pdfsyntax.install()  # the same bytes, formatted faster
LINK_SCHEMES = ("http://", "https://", "mailto:")
FOOTER_SPACE = 6 * mm  # between the text and the bottom margin, where the footer goes
REQUIRED = {
    "document": ("organisation", "title", "page_size", "margin_mm", "time_format"),
    "fonts": ("regular", "bold", "fallbacks", "size", "title_size"),
    "colors": ("text", "muted", "agent", "customer", "warning", "placeholder", "rule"),
}
FONT_PACKAGES = "fonts-dejavu-core, fonts-noto-core, fonts-droid-fallback, fonts-nanum and fonts-symbola"
BAR = "\u2502 "  # starts every line of a message after its header line
# Labels added after templates were first deployed: a template without them still loads.
LABEL_DEFAULTS = {
    "shortened": "[{hidden} more characters not shown here; the full text is in the JSON record]",
    "shortened_count": "Fields shown shortened",
    "warnings_more": "… and {count} more data warnings: the attached JSON record lists them all",
    "warning_events": "{count} contact events are not shown (archive.max_pages = {pages}): they are in the "
                      "attached JSON record",
    "warning_pages": "This PDF stops before message #{first} (archive.max_pages = {pages}): messages #{first} to "
                     "#{last} are only in the attached JSON record",
    "attachment_file": "File",
    "attachment_fetched": "{size} bytes · {type} · SHA-256 {sha256} · fetched {time}",
    "attachment_missing": "File not archived ({outcome})",
    "attachment_no_preview": "[image not shown: {reason}]",
    "attachment_kept": "[kept from version {version}, not fetched again: the same stored file]",
    "attachment_kept_image": "[kept from version {version}, not fetched again: the image is shown in that "
                             "version's transcript]",
    "not_ended": "not ended; last message {time}",
    "participant": "{name} ({id})",
    "role_not_stated": "Role not stated",  # the header's row of senders no message of whom states a role
    "continued": "#{position} continued",
    "event": "» {time} · {what}",
    "event_accepted": "Contact accepted", "event_transferred": "Transferred", "event_joined": "Joined",
    "event_left": "Left", "event_closed": "Contact closed", "event_other": "Event",
    "event_origin": "origin",
    "warning_placeholders": "{count} characters drawn as placeholders [U+XXXX]",
    "delivery_error": "Delivery error",
    "archive": "Archive",
    "opened_by": "Opened by", "handled_by": "Handled by", "present": "Others named by the contact",
    "present_more": "… and {count} more: the attached JSON record lists them all", "seen": "seen", "not_seen": "not seen", "seen_other": "read receipt",
    "archived_at": "Archived at", "copy_signed_at": "This copy signed at", "version": "Version", "supersedes": "{version} (supersedes version {previous})",
    "source_sha256": "Source SHA-256", "archiver_version": "Archiver", "signer": "Signed by",
    "signer_fingerprint": "Signer certificate SHA-256",
    "verify": "To verify: `pdfsig` checks this PDF's signature; the attached record.json is the signed JSON record "
              "(openssl cms -verify against record.json.p7s).",
    **{f"warning_{code}": text for code, text in WARNINGS.items()},
}


class TemplateError(ValueError):
    """The template or a font it names is unusable; the message names the file and key."""


@dataclass(frozen=True)
class Limits:
    """How much of a chat the PDF shows (archive.max_*); the JSON record always holds all of it."""
    url_chars: int = 2_048  # a longer URL is shown cut, as text, not as a link
    field_chars: int = 1_000  # any other field but message text (sender, type, error, room, title ...)
    pages: int = 2_000  # the messages past it are named in a warning, not drawn (a chat is never refused for it)
    pdf_bytes: int = 50_000_000
    message_lines: int = 1_000  # a message's text lines (newlines) shown; the rest cut with a counted note
    # and its characters (archive.max_message_chars's default: cuts only a text a raised limit let in, which
    # alone could fill max_pages and hide every message after it)
    message_chars: int = 1_000_000


@dataclass(frozen=True)
class ArchiveInfo:
    """What the archive block states about this PDF; the record is attached to the PDF when given."""
    archived_at: dt.datetime
    version: int
    source_sha256: str
    archiver_version: str
    signer_subject: str
    signer_fingerprint: str  # SHA-256 of the signing certificate, hex
    record: bytes | None = None
    # A fresh copy of a version archived earlier (`export --out` of an unchanged room): when that version was
    # archived. ARCHIVED_AT is then when this copy was signed, and the block says both, apart.
    copy_of: dt.datetime | None = None


@dataclass(frozen=True)
class RenderedPdf:
    data: bytes
    placeholders: int
    shortened: int = 0  # fields cut to Limits, each with a visible note
    signature: Placeholder | None = None  # where the signer patches in the signature (render's SIGNATURE)


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
        raise TemplateError(f"render.template {path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"render.template {path}: not valid TOML ({exc})") from None
    for section, keys in {**REQUIRED, "labels": tuple(_DEFAULT_LABEL_KEYS)}.items():
        table = raw.get(section)
        if not isinstance(table, dict):
            raise TemplateError(f"render.template {path}: section [{section}] is missing")
        missing = [k for k in keys if k not in table]
        if missing:
            raise TemplateError(f"render.template {path}: [{section}] lacks {', '.join(missing)}")
    if raw["document"]["page_size"] not in PAGE_SIZES:
        raise TemplateError(f"render.template {path}: document.page_size must be one of {', '.join(PAGE_SIZES)}")
    return Template(path, raw["document"], raw["fonts"], raw["colors"], {**LABEL_DEFAULTS, **raw["labels"]})


_DEFAULT_LABEL_KEYS = (
    "room", "type", "channel", "service", "chat_title", "language", "agents", "customers", "started", "ended",
    "closed_by", "messages", "failed_deliveries", "placeholders", "status_ended", "status_interim",
    "status_abandoned", "warnings", "agent", "customer", "unknown", "time_unknown", "closed_event",
    "not_delivered", "duplicate_of", "reply_to", "attachment", "empty", "page", "footer", "none",
    "redaction", "redaction_on", "redaction_off",
)


@dataclass(frozen=True)
class Style:
    font: str
    size: float
    color: Color

    @property
    def leading(self) -> float:
        return self.size * 1.3


class Run(NamedTuple):
    """Text drawn in one style; LINK makes it a clickable URI. (A tuple: made for every piece of text, at half
    the cost of a frozen dataclass.)"""
    text: str
    style: Style
    link: str = ""


@dataclass
class Line:
    height: float
    runs: list[tuple[float, Run]] = field(default_factory=list)  # (x from the left margin, run)
    rule: bool = False  # a horizontal rule instead of text
    image: tuple[Any, float, float, float] | None = None  # (ImageReader, x, width, height): an attachment's thumbnail
    level: int | None = None  # bidi base level of its paragraph: 1 right-to-left, else left-to-right
    message: int = 0  # the position of the message it belongs to (0: none)
    keep: bool = False  # kept on a page with the line after it (a message header)
    event: bool = False  # the first line of a contact event


# Where lines may break: spaces, but not the no-break ones (U+00A0, U+2007, U+202F).
BREAKS = " \t\u1680\u2000-\u2006\u2008-\u200a\u205f\u3000"
TOKENS = re.compile(f"\n|[{BREAKS}]+|[^{BREAKS}\n]+")
SPACE = re.compile(f"[{BREAKS}]")
PRINTABLE_ASCII = frozenset(map(chr, range(0x20, 0x7F)))
UNSEEN = object()  # a character FontChain has not looked up yet
COLUMNS_KEPT = 1_000  # header values whose lines PdfRenderer._column remembers; then forgotten all at once
SEEN_CHARACTERS = 20_000  # characters whose font FontChain remembers, per font: bounded, whatever the text


class FontChain:
    """Splits untrusted text into runs of the first font that has each character."""

    def __init__(self, covers: dict[str, frozenset[str]], fallbacks: list[str], placeholder: Style) -> None:
        self.covers = {name: cover - INVISIBLE for name, cover in covers.items()}  # font name -> what it draws
        self.fallbacks = fallbacks  # tried in order after a style's own font
        self.placeholder = placeholder
        # Fonts that have every printable ASCII character: ASCII text in them needs no look-up per character.
        self.whole_ascii = {name for name, cover in covers.items() if cover.issuperset(PRINTABLE_ASCII)}
        self.seen: dict[str, dict[str, str | None]] = {}  # see _fonts_of

    def runs(self, text: str, style: Style, link: str = "", newlines: bool = True) -> tuple[list[Run], int]:
        """Runs for TEXT in STYLE (its font first) and how many characters became placeholders.
        Without NEWLINES a newline is a placeholder too: a field stays one logical line."""
        text = shape(text)  # Arabic letters in their joining forms
        own = self.covers[style.font]
        lines = text.replace("\n", "") if newlines and "\n" in text else text
        orphans = (set() if lines.isascii() or not SELECTOR.search(text)  # one pass, before the slower one
                   else {m.start() for m in ORPHAN_SELECTOR.finditer(text)})
        if not orphans and lines.isprintable() and (style.font in self.whole_ascii if lines.isascii()
                                                    else own.issuperset(lines)):
            return [Run(text, style, link)], 0  # the common case: one font, nothing to switch
        kept = "\n\t" if newlines else "\t"
        fonts = self._fonts_of(style.font)
        mark = Style(self.placeholder.font, style.size, self.placeholder.color)
        styles: dict[str, Style] = {}  # font -> STYLE in that font
        runs: list[Run] = []
        pieces: list[str] = []  # of the run being made, in CURRENT
        current: Style | None = None
        placeholders = 0
        for at, ch in enumerate(text):
            if at in orphans:
                font = None  # a variation selector with nothing to vary: drawn as nothing, so shown
            elif ch in kept:
                font = style.font
            else:
                found = fonts.get(ch, UNSEEN)
                font = self._look_up(ch, style.font) if found is UNSEEN else found  # type: ignore[assignment]
            if font is None:
                st, piece = mark, _placeholder(ch)
                placeholders += 1
            else:
                st = styles.get(font) or styles.setdefault(font, Style(font, style.size, style.color))
                piece = " " if ch == "\t" else ch
            if st is not current and st != current:  # adjacent characters in the same style make one run
                if pieces:
                    runs.append(Run("".join(pieces), current, link))  # type: ignore[arg-type]
                current, pieces = st, []
            pieces.append(piece)
        runs.append(Run("".join(pieces), current, link))  # type: ignore[arg-type]
        return runs, placeholders

    def _fonts_of(self, font: str) -> dict[str, str | None]:
        """Characters already looked up for text in FONT, with the font each is drawn in (None: a placeholder)."""
        fonts = self.seen.get(font)
        if fonts is None:
            fonts = self.seen[font] = {}
        return fonts

    def _look_up(self, ch: str, font: str) -> str | None:
        """The font CH is drawn in for text in FONT: the first of the chain that has it (remembered)."""
        chain = [(name, self.covers[name]) for name in (font, *self.fallbacks)]
        found = _font_for(ch, chain)
        fonts = self._fonts_of(font)
        if len(fonts) < SEEN_CHARACTERS:
            fonts[ch] = found
        return found


def _font_for(ch: str, chain: list[tuple[str, frozenset[str]]]) -> str | None:
    if _hidden(ch):
        return None  # control and format characters are shown, never emitted raw
    return next((name for name, cover in chain if ch in cover), None)


# A variation selector (U+FE00-FE0F) chooses how the character before it looks (an emoji's colour form); one
# at the start of a text, or after a space or another selector, varies nothing and would draw as nothing.
ORPHAN_SELECTOR = re.compile("(?:^|(?<=[\\s\ufe00-\ufe0f]))[\ufe00-\ufe0f]")
SELECTOR = re.compile("[\ufe00-\ufe0f]")


def _merge(runs: list[Run]) -> list[Run]:
    """Adjacent runs in the same style become one (fewer font switches in the PDF)."""
    merged: list[Run] = []
    for run in runs:
        if merged and merged[-1].style == run.style and merged[-1].link == run.link:
            merged[-1] = Run(merged[-1].text + run.text, run.style, run.link)
        else:
            merged.append(run)
    return merged


def wrap(runs: Iterable[Run], width: float, leading: float, level: int | None = None) -> Iterator[Line]:
    """Greedy line filling; a newline breaks the line, a word wider than WIDTH is cut anywhere.
    Lines come as they are filled, so a caller can stop early (see Limits.pages). LEVEL: the paragraphs'
    direction (0: left to right), for lines of ours around data; None: each paragraph's first strong
    character says (a message's text)."""
    filler = _LineFiller(width, leading, level)
    rtl = False  # lines are reordered only once right-to-left text has come (most text never has any)
    for run in runs:
        rtl = rtl or has_rtl(run.text)
        if not filler.place_whole(run):
            yield from (map(filler.ordered, filler.add(run)) if rtl else filler.add(run))
    filler.join()
    yield from (map(filler.ordered, filler.lines) if rtl else filler.lines)


class _LineFiller:
    def __init__(self, width: float, leading: float, level: int | None = None) -> None:
        self.width, self.leading = width, leading
        self.lines = [Line(leading)]
        self.x = 0.0
        self.fixed = level  # every paragraph's level, when the caller sets it
        self.level: int | None = level  # of the paragraph being filled, once a strong character says
        self.joined: list[str] = []  # texts that go on the last run of the current line (see join)

    def place_whole(self, run: Run) -> bool:
        """Place RUN on the current line if it has no newline and fits there (most runs: one measurement);
        else False, and `add` places it piece by piece."""
        if self.level is None:
            first = run.text[:1]
            self.level = 0 if first.isascii() and first.isalpha() else base_level(run.text.partition("\n")[0])
        if "\n" in run.text:
            return False
        w = _width(run.text, run.style)
        if self.x + w > self.width:
            return False
        self._place(run.text, run.style, run.link, w, run)
        return True

    def add(self, run: Run) -> Iterator[Line]:
        """Place RUN, which `place_whole` did not, word by word; yields the lines it completes."""
        style, link = run.style, run.link
        for match in TOKENS.finditer(run.text):
            token = match.group()
            if token == "\n":
                self._newline()
                self.level = self.fixed  # a new paragraph finds its own direction (unless fixed)
            else:
                if self.level is None and (level := base_level(token)) is not None:
                    self.level = level
                w = _width(token, style)  # measured once, whichever way it is placed
                if self.x + w <= self.width:
                    self._place(token, style, link, w)
                elif SPACE.match(token):
                    self._newline()  # a break eats the space that caused it
                else:
                    self._cut(token, style, link, w)
            if len(self.lines) > 1:
                yield from self.lines[:-1]
                del self.lines[:-1]

    def _place(self, text: str, style: Style, link: str, w: float, run: Run | None = None) -> None:
        """TEXT (W wide; RUN, if it is one already) at the end of the current line."""
        line = self.lines[-1]
        if line.level is None:
            line.level = self.level
        if line.runs:  # joined to the run before it when the style is the same: widths simply add up
            last = line.runs[-1][1]
            if (last.style is style or last.style == style) and last.link == link:
                self.joined.append(text)
                self.x += w
                return
            self.join()
        line.runs.append((self.x, run or Run(text, style, link)))
        self.x += w

    def join(self) -> None:
        """The texts placed after the last run of the current line, in its style, made part of it."""
        if self.joined:
            runs = self.lines[-1].runs
            x, last = runs[-1]
            runs[-1] = (x, Run(last.text + "".join(self.joined), last.style, last.link))
            self.joined = []

    def _newline(self) -> None:
        self.join()
        self.lines.append(Line(self.leading))
        self.x = 0.0

    def _cut(self, word: str, style: Style, link: str, w: float) -> None:
        """A WORD (W wide) too wide for what is left of the line: on new lines, cut where wider than a line."""
        if w <= self.width:  # fits on a line of its own: no need to measure it character by character
            self._newline()
            self._place(word, style, link, w)
            return
        for piece in _pieces(word, style, self.width):
            if self.x > 0:
                self._newline()
            self._place(piece, style, link, _width(piece, style))

    def ordered(self, line: Line) -> Line:
        """LINE as drawn: right-to-left text in visual order, a right-to-left paragraph aligned right."""
        if line.level != 1 and not has_rtl("".join(run.text for _, run in line.runs)):
            return line
        chars = [(ch, run) for _, run in line.runs for ch in run.text]
        runs: list[Run] = []
        for ch, run in visual(chars, line.level or 0):
            if runs and runs[-1].style is run.style and runs[-1].link == run.link:
                runs[-1] = Run(runs[-1].text + ch, run.style, run.link)
            else:
                runs.append(Run(ch, run.style, run.link))
        widths = [pdfmetrics.stringWidth(r.text, r.style.font, r.style.size) for r in runs]
        x = self.width - sum(widths) if line.level == 1 else 0.0
        line.runs = []
        for run, w in zip(runs, widths):
            line.runs.append((x, run))
            x += w
        return line


_FONTS: dict[str, Any] = {}  # registered font name -> its font (pdfmetrics.getFont, looked up once)


def _width(text: str, style: Style) -> float:
    """pdfmetrics.stringWidth of TEXT in STYLE, without looking its font up by name every time."""
    font = _FONTS.get(style.font)
    if font is None:
        font = _FONTS[style.font] = pdfmetrics.getFont(style.font)
    return font.stringWidth(text, style.size)


def _pieces(word: str, style: Style, width: float) -> list[str]:
    """WORD in pieces no wider than WIDTH (at least one character each)."""
    pieces, start, used = [], 0, 0.0
    widths: dict[str, float] = {}  # a megabyte-long word has few distinct characters: measure each once
    for i, ch in enumerate(word):
        w = widths.get(ch)
        if w is None:
            w = widths[ch] = pdfmetrics.stringWidth(ch, style.font, style.size)
        if used + w > width and i > start:
            pieces.append(word[start:i])
            start, used = i, 0.0
        used += w
    pieces.append(word[start:])
    return pieces


WHOLE_LINE = 1e9  # a width no line of text reaches


def _clipped(runs: list[Run], width: float) -> Line:
    """RUNS on one line, cut off where they pass WIDTH."""
    line, x = Line(0), 0.0
    for run in runs:
        text = _pieces(run.text, run.style, width - x)[0]
        line.runs.append((x, Run(text, run.style, run.link)))
        x += pdfmetrics.stringWidth(text, run.style.font, run.style.size)
        if text != run.text:
            break
    return line


# strftime directives written here without strftime (a few microseconds a call): the numeric ones, as glibc
# writes them (%Y unpadded below year 1000, checked at import, else every format goes to strftime).
_DIRECTIVES = {"%m": ("%02d", "month"), "%d": ("%02d", "day"), "%H": ("%02d", "hour"), "%M": ("%02d", "minute"),
               "%S": ("%02d", "second"), "%%": ("%%", None)}
if dt.datetime(5, 1, 1).strftime("%Y") == "5" and dt.datetime(2026, 1, 1).strftime("%Y") == "2026":
    _DIRECTIVES["%Y"] = ("%d", "year")
_FORMAT_PARTS = re.compile("%.|[^%]+|%$", re.DOTALL)


def time_formatter(fmt: str) -> Callable[[dt.datetime], str]:
    """A function that gives strftime(FMT)'s result; for a format of only the directives above, without strftime."""
    parts = _FORMAT_PARTS.findall(fmt)
    if not all(not p.startswith("%") or p in _DIRECTIVES for p in parts):
        return lambda when: when.strftime(fmt)
    template = "".join(_DIRECTIVES[p][0] if p.startswith("%") else p.replace("%", "%%") for p in parts)
    fields = [_DIRECTIVES[p][1] for p in parts if p.startswith("%") and _DIRECTIVES[p][1]]
    if not fields:
        return lambda when: template % ()
    values = operator.attrgetter(*fields) if len(fields) > 1 else (lambda when: (getattr(when, fields[0]),))
    return lambda when: template % values(when)


def _register(path: str, key: str, template: Path) -> tuple[str, frozenset[str]]:
    try:
        return loaded_fonts.load(path)  # parsed once per process (the bundled ones in the fork server)
    except (TTFError, OSError) as exc:
        raise TemplateError(
            f"render.template {template}: fonts.{key} {path}: cannot load ({exc}); "
            f"the Debian packages {FONT_PACKAGES} provide the default fonts"
        ) from None


class PdfRenderer:
    """Renders transcripts; fonts and template load once, at construction."""

    def __init__(self, template_path: str | Path, timezone: str = "UTC", limits: Limits = Limits()) -> None:
        self.template = t = load_template(template_path)
        self.limits = limits
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise TemplateError(f"render.timezone: unknown time zone {timezone!r}") from None
        regular = _register(t.fonts["regular"], "regular", t.path)
        bold = _register(t.fonts["bold"], "bold", t.path)
        fallbacks = [_register(p, "fallbacks", t.path) for p in t.fonts["fallbacks"]]
        self.page_size = PAGE_SIZES[t.document["page_size"]]
        self.margin = float(t.document["margin_mm"]) * mm
        self.width = self.page_size[0] - 2 * self.margin
        size, palette = float(t.fonts["size"]), {k: HexColor(v) for k, v in t.colors.items()}
        self.palette = palette
        self.styles = {
            "body": Style(regular[0], size, palette["text"]),
            "meta": Style(regular[0], size * 0.85, palette["muted"]),
            "title": Style(bold[0], float(t.fonts["title_size"]), palette["text"]),
            "label": Style(bold[0], size * 0.9, palette["text"]),
            "value": Style(regular[0], size * 0.9, palette["text"]),
            "warning": Style(bold[0], size, palette["warning"]),
            "note": Style(regular[0], size, palette["warning"]),
            "footer": Style(regular[0], 7.5, palette["muted"]),
        }
        self.chain = FontChain(dict([regular, bold, *fallbacks]), [regular[0], *(f[0] for f in fallbacks)],
                               Style(regular[0], size, palette["placeholder"]))
        body = self.styles["body"]
        self.bar = Run(BAR, body)
        self.indent = pdfmetrics.stringWidth(BAR, body.font, body.size)
        self._sender_styles: dict[str, Style] = {}  # see _sender_style
        self._label_columns: dict[tuple[str, float], tuple[list[Line], int]] = {}  # see _label_column
        self._strftime = time_formatter(t.document["time_format"])
        self._offsets: dict[dt.timedelta, str] = {}  # UTC offset -> " +01:00" (a zone has a few)
        self._columns: dict[tuple[Any, ...], list[Line]] = {}  # see _column

    # -- public ----------------------------------------------------------------------------

    def render(self, transcript: Transcript, redaction: RedactionNote | None = None,
               attachments: Iterable[Attachment] = (), archive: ArchiveInfo | None = None,
               signature: SignatureSlot | None = None) -> RenderedPdf:
        """The PDF; raises InvalidChat when it would pass Limits.pages or Limits.pdf_bytes.
        ATTACHMENTS are shown under their messages (see archiver.render.attachments); ARCHIVE adds the
        archive block and attaches its record (see evidence.py); SIGNATURE's field and placeholder are
        left for the signer to fill in (signing.Signer.sign_rendered)."""
        counter = _Counter({p.user_id: p.display_name for p in transcript.participants if p.display_name})
        body = self._body(transcript, counter, {a.position: a for a in attachments})
        pages = self._pages(transcript, counter, body, redaction, archive)
        data, placeholder = self._draw(transcript, pages, archive, signature)
        if len(data) > self.limits.pdf_bytes:
            raise InvalidChat(f"the PDF transcript is {len(data):,} bytes, over the limit of "
                              f"{self.limits.pdf_bytes:,} (archive.max_pdf_bytes)")
        return RenderedPdf(data, counter.placeholders, counter.shortened, placeholder)

    def _pages(self, t: Transcript, counter: "_Counter", body: list[Line], redaction: RedactionNote | None,
               archive: ArchiveInfo | None) -> list[list[Line]]:
        """Header and BODY in pages, at most Limits.pages: paginated (headers kept with their text, "continued"
        lines) a body the height count let through may still pass it; then it stops before the first message
        of the first page too many, and the header, which names it, is made again."""
        counts = counter.placeholders, counter.shortened  # the body's, before the header adds its own
        while True:
            lines = [*self._header(t, counter, redaction, archive), *body]
            pages = _paginate(lines, self._usable_height(), self._continued)
            if len(pages) <= self.limits.pages:
                return pages
            cut = _first_cut(body, pages[self.limits.pages:])
            if cut is None:  # the header alone fills the pages
                raise self._too_many_pages(None)
            first = next((line.message for line in body[cut:] if line.message), 0)  # 0: only contact events go
            counts = counter.cut(t, first, body[cut:], counts)
            body = body[:cut]

    def _body(self, t: Transcript, counter: "_Counter", attached: dict[int, Attachment] | None = None) -> list[Line]:
        """The messages' lines, as many as Limits.pages holds (less room for the header): the message that
        would pass it and those after are named in a warning (counter.stopped_at), never a refused chat."""
        budget = max(1, self.limits.pages - HEADER_PAGES) * self._usable_height()
        lines: list[Line] = []
        used = 0.0
        events = sorted(t.events, key=_event_order)  # those without a time come last
        for m in t.messages:
            while events and events[0].at and m.sent_at and events[0].at <= m.sent_at:
                used += self._add_event(lines, events.pop(0), counter, budget - used)
            extra = attachment_lines(self, attached[m.position], counter) if attached and m.position in attached else ()
            counter.before[m.position] = counter.placeholders, counter.shortened
            kept = len(lines)
            for number, line in enumerate(itertools.chain(self._message(m, counter), extra)):
                used += line.height if line.runs or line.image else 0.0  # empty lines may fall at a page top, dropped
                if used > budget:  # this message is not shown in part: it is named in the warning
                    counter.cut(t, m.position, lines[kept:], counter.before[m.position])
                    counter.events_not_shown += len(events)  # the contact events after it, likewise
                    del lines[kept:]
                    return lines
                line.message, line.keep = m.position, number == 1  # the header line stays with what follows
                lines.append(line)
        for event in events:
            used += self._add_event(lines, event, counter, budget - used)
        return lines

    def _add_event(self, lines: list[Line], e: Event, counter: "_Counter", room: float) -> float:
        """Append event E's lines to LINES if they fit in ROOM (else count it as not shown); their height."""
        made = self._event(e, counter)
        height = sum(line.height for line in made if line.runs)
        if height > room:
            counter.events_not_shown += 1
            return 0.0
        made[0].event = True  # (counted if the PDF stops before it: see _Counter.cut)
        lines.extend(made)
        return height

    def _event(self, e: Event, counter: "_Counter") -> list[Line]:
        """A contact event as a system line: its kind in the template's words, its raw name, origin and details."""
        labels = self.template.labels
        what = labels.get(f"event_{e.kind}", labels["event_other"]) if e.kind else labels["event_other"]
        runs = self._runs(labels["event"].format(time=self._time(e.at), what=what) + " ", "meta", counter)
        runs += self._field(e.name, "meta", counter, quoted=True)
        if e.origin:
            runs += [*self._runs(f" · {labels['event_origin']} ", "meta", counter),
                     *self._field(e.origin, "meta", counter, quoted=True)]
        for key, value in e.details:
            runs += [*self._runs(" · ", "meta", counter), *self._field(key, "meta", counter),
                     *self._runs(" ", "meta", counter), *self._field(value, "meta", counter, quoted=True)]
        return [Line(self.styles["body"].size * 0.5), *self._lines(runs, style="meta")]

    def _continued(self, position: int) -> Line:
        """The first line of a page that continues message POSITION."""
        runs, _ = self.chain.runs(self.template.labels["continued"].format(position=position), self.styles["meta"])
        return self._lines(runs, style="meta")[0]

    def _too_many_pages(self, position: int | None) -> InvalidChat:
        where = f"; stopped at message #{position}" if position else ""
        return InvalidChat(f"the PDF transcript needs more than {self.limits.pages:,} pages (archive.max_pages){where}")

    # -- layout ----------------------------------------------------------------------------

    def _runs(self, text: str, style: str | Style, counter: "_Counter", link: str = "",
              newlines: bool = True) -> list[Run]:
        runs, missing = self.chain.runs(text, self.styles[style] if isinstance(style, str) else style, link, newlines)
        counter.placeholders += missing
        return runs

    def _field(self, value: str, style: str | Style, counter: "_Counter", limit: int = 0,
               quoted: bool = False) -> list[Run]:
        """A data field as one logical line (a newline is a placeholder), cut at LIMIT (else Limits.field_chars)
        with a visible, counted note; QUOTED shows it as a JSON string, so separators inside stay inside."""
        limit = limit or self.limits.field_chars
        shown = json.dumps(value[:limit], ensure_ascii=False) if quoted else value[:limit]
        runs = self._runs(shown, style, counter, newlines=False)
        if len(value) > limit:
            counter.shortened += 1
            note = self.template.labels["shortened"].format(hidden=f"{len(value) - limit:,}")
            runs += self._runs(f" {note}", "note", counter)
        return runs

    def _participants(self, t: Transcript, role: str, counter: "_Counter") -> list[Run]:
        """Participants whose messages state ROLE ("": none), one per line, each id quoted: "bob, mallory" stays
        one person."""
        listed = [p for p in t.participants if (role in p.roles if role else not p.roles)]
        return self._one_per_line([self._participant(p, counter) for p in listed], counter)

    def _present(self, t: Transcript, counter: "_Counter") -> list[Run]:
        """Whom else the contact names (transcript.contact_present: transferred to, joined), each id quoted, one per
        line; past PRESENT_SHOWN counted (a contact naming thousands would fill the header's pages)."""
        shown = [self._field(user, "value", counter, quoted=True) for user in t.present[:PRESENT_SHOWN]]
        if len(t.present) > PRESENT_SHOWN:
            more = self.template.labels["present_more"].format(count=f"{len(t.present) - PRESENT_SHOWN:,}")
            shown.append(self._runs(more, "note", counter))
        return self._one_per_line(shown, counter)

    def _one_per_line(self, values: list[list[Run]], counter: "_Counter") -> list[Run]:
        """VALUES one per line; the template's `none` without any."""
        if not values:
            return self._runs(self.template.labels["none"], "value", counter)
        runs: list[Run] = []
        for value in values:
            runs += [*([Run("\n", self.styles["value"])] if runs else []), *value]
        return runs

    def _participant(self, p: Participant, counter: "_Counter") -> list[Run]:
        """A participant by name and id, both quoted, so separators inside either stay inside."""
        if not p.display_name:
            return self._field(p.user_id, "value", counter, quoted=True)
        return self._named(self._field(p.display_name, "value", counter, quoted=True),
                           self._field(p.user_id, "value", counter, quoted=True), "value", counter)

    def _person(self, t: Transcript, user_id: str, counter: "_Counter") -> list[Run]:
        """USER_ID as the participant they are (by name, if they wrote), else quoted; `none` without one."""
        found = t.participant(user_id) if user_id else None
        if found is not None:
            return self._participant(found, counter)
        if user_id:
            return self._field(user_id, "value", counter, quoted=True)
        return self._field(self.template.labels["none"], "value", counter)

    def _named(self, name: list[Run], ident: list[Run], style: str | Style, counter: "_Counter") -> list[Run]:
        """NAME and IDENT placed by the template's `participant` wording ("{name} ({id})")."""
        before, _, rest = self.template.labels["participant"].partition("{name}")
        middle, _, after = rest.partition("{id}")
        words = [self._runs(part, style, counter) if part else [] for part in (before, middle, after)]
        return _merge([*words[0], *name, *words[1], *ident, *words[2]])  # one run to lay out, not five

    def _lines(self, runs: list[Run], width: float | None = None, style: str = "body") -> list[Line]:
        return list(wrap(runs, width or self.width, self.styles[style].leading, level=0))  # ours: left to right

    def _noted(self, blocks: Iterable[list[Run]]) -> Iterator[Line]:
        """BLOCKS as lines at the quote bar's indent without the bar: the archive's notes on a message, which
        its text (always behind the bar) cannot imitate."""
        indent, leading = self.indent, self.styles["body"].leading
        for block in blocks:
            for line in wrap(block, self.width - indent, leading, level=0):
                yield Line(line.height, [(x + indent, run) for x, run in line.runs])

    def _quoted(self, blocks: Iterable[list[Run]]) -> Iterator[Line]:
        """BLOCKS as lines that each start with the quote bar, lazily (a block may be a megabyte)."""
        bar, indent, leading = self.bar, self.indent, self.styles["body"].leading
        for block in blocks:
            for line in wrap(block, self.width - indent, leading):
                runs = [(x + indent, run) for x, run in line.runs]
                if runs and runs[0][0] == indent and runs[0][1].style == bar.style and not runs[0][1].link:
                    runs[0] = (0.0, Run(bar.text + runs[0][1].text, bar.style))  # one text run, not two
                else:
                    runs.insert(0, (0.0, bar))
                yield Line(line.height, runs)

    def _time(self, when: dt.datetime | None) -> str:
        if when is None:
            return self.template.labels["time_unknown"]
        try:
            local = when.astimezone(self.zone)
        except OverflowError:  # within a day of year 1 or 9999 (sentinel dates): shown in UTC, which holds it
            local = when.astimezone(dt.timezone.utc)
        offset = local.utcoffset()
        suffix = self._offsets.get(offset)
        if suffix is None:  # the UTC offset, whatever the zone; its seconds too when it has some (local mean time)
            seconds = int(offset.total_seconds())
            sign, seconds = "+-"[seconds < 0], abs(seconds)
            shown = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}" + (f":{seconds % 60:02d}" if seconds % 60 else "")
            suffix = self._offsets[offset] = f" {sign}{shown}"
        return self._strftime(local) + suffix

    def _header(self, t: Transcript, counter: "_Counter", redaction: RedactionNote | None = None,
                archive: ArchiveInfo | None = None) -> list[Line]:
        labels, none, doc = self.template.labels, self.template.labels["none"], self.template.document
        rows = [
            (labels["room"], t.room), (labels["type"], t.ctlive_type), (labels["channel"], t.channel),
            (labels["service"], t.service), (labels["chat_title"], t.title), (labels["language"], t.language),
        ]
        table = [(k, self._field(v or none, "value", counter)) for k, v in rows]
        table += [(labels["agents"], self._participants(t, "agent", counter)),
                  (labels["customers"], self._participants(t, "customer", counter))]
        if any(not p.roles for p in t.participants):  # stated as neither: not claimed to be either
            table.append((labels["role_not_stated"], self._participants(t, "", counter)))
        # The contact's own people, whether or not they wrote: a customer found by who opened the chat is named.
        table += [(labels[field], self._person(t, getattr(t, field), counter)) for field in ("opened_by", "handled_by")]
        table.append((labels["present"], self._present(t, counter)))
        rows = [(labels["started"], self._time(t.started_at) if t.started_at else ""), (labels["ended"], self._ended(t))]
        table += [(k, self._field(v or none, "value", counter)) for k, v in rows]
        closer = t.participant(t.closed_by)
        table.append((labels["closed_by"], self._participant(closer, counter) if closer and t.closed_by
                      else self._field(t.closed_by or none, "value", counter)))
        rows = [(labels["messages"], str(len(t.messages))), (labels["failed_deliveries"], str(t.failed_deliveries))]
        if redaction is not None:
            rows.append((labels["redaction"], self._redaction(redaction)))
        table += [(k, self._field(v or none, "value", counter)) for k, v in rows]
        # Counted last, so that they include the header's own placeholders (and the warnings').
        if archive is not None:
            table += self._archive_rows(archive, counter)
        warnings = [self._lines(self._field(self._warning(w), "meta", counter), style="meta")
                    for w in t.notes[:WARNINGS_SHOWN]]
        if len(t.notes) > WARNINGS_SHOWN:  # a flood of them (a reply each to nothing) would fill the pages
            more = labels["warnings_more"].format(count=f"{len(t.notes) - WARNINGS_SHOWN:,}")
            warnings.append(self._lines(self._runs(more, "meta", counter), style="meta"))
        table.append((labels["placeholders"], [Run(str(counter.placeholders), self.styles["value"])]))
        table.append((labels["shortened_count"], [Run(str(counter.shortened), self.styles["value"])]))
        if counter.placeholders:
            text = labels["warning_placeholders"].format(count=counter.placeholders)
            warnings.append(self._lines(self._runs(text, "meta", _Counter()), style="meta"))
        if counter.events_not_shown:
            text = labels["warning_events"].format(count=f"{counter.events_not_shown:,}", pages=f"{self.limits.pages:,}")
            warnings.append(self._lines(self._runs(text, "warning", _Counter()), style="meta"))
        if counter.stopped_at:
            first, last = counter.stopped_at
            text = labels["warning_pages"].format(first=first, last=last, pages=f"{self.limits.pages:,}")
            warnings.append(self._lines(self._runs(text, "warning", _Counter()), style="meta"))
        status = labels.get(f"status_{t.status}", t.status)
        lines = [
            *self._lines(self._runs(doc["organisation"], "meta", counter), style="meta"),
            *self._lines(self._runs(doc["title"], "title", counter), style="title"),
            *self._lines(self._runs(status, "warning" if t.status != "ended" else "label", counter), style="body"),
            Line(3 * mm),
        ]
        for label, value in table:
            lines.extend(self._row(label, value, counter))
        if warnings:
            lines.extend(self._lines(self._runs(labels["warnings"], "warning", counter)))
            lines.extend(line for block in warnings for line in block)
        return [*lines, Line(4), Line(2, rule=True), Line(2)]

    def _ended(self, t: Transcript) -> str:
        """The end time, or for a chat that has not ended (interim, abandoned) that it has not, and its last message."""
        if t.status != "ended":
            return self.template.labels["not_ended"].format(time=self._time(t.last_message_at))
        return self._time(t.ended_at) if t.ended_at else ""

    def _warning(self, w: DataWarning) -> str:
        return self.template.labels.get(f"warning_{w.code}", WARNINGS[w.code]).format(**dict(w.values))

    def _archive_rows(self, a: ArchiveInfo, counter: "_Counter") -> list[tuple[str, list[Run]]]:
        """The archive block: what this PDF is, who signed it, and how to check that."""
        labels = self.template.labels
        version = (labels["supersedes"].format(version=a.version, previous=a.version - 1) if a.version > 1
                   else str(a.version))
        when = ([(labels["archived_at"], self._time(a.copy_of)), (labels["copy_signed_at"], self._time(a.archived_at))]
                if a.copy_of else [(labels["archived_at"], self._time(a.archived_at))])
        rows = [*when, (labels["version"], version),
                (labels["source_sha256"], a.source_sha256), (labels["archiver_version"], a.archiver_version),
                (labels["signer"], a.signer_subject), (labels["signer_fingerprint"], a.signer_fingerprint)]
        table = [(k, self._field(v, "value", counter)) for k, v in rows]
        return [*table, (labels["archive"], self._runs(labels["verify"], "value", counter))]

    def _redaction(self, note: RedactionNote) -> str:
        """The header line that says whether and how this transcript was redacted."""
        labels = self.template.labels
        if not note.enabled:
            return labels["redaction_off"].format(version=note.version)
        matches = ", ".join(f"{rule}: {count}" for rule, count in note.matches.items())
        return labels["redaction_on"].format(matches=matches, rules=", ".join(note.rules), version=note.version)

    def _row(self, label: str, value: list[Run], counter: "_Counter") -> list[Line]:
        """A two-column table row: the label in the first 30% of the width, the value beside it."""
        split = self.width * 0.3
        left = self._label_column(label, split - 6, counter)
        right = self._column(value, self.width - split)
        rows = [Line(self.styles["value"].leading) for _ in range(max(len(left), len(right)))]
        for row, line in zip(rows, left):
            row.runs.extend(line.runs)
        for row, line in zip(rows, right):
            row.runs.extend((x + split, run) for x, run in line.runs)
        return [*rows, Line(2)]  # the gap keeps each row one line for text extraction (pdftotext)

    def _label_column(self, label: str, width: float, counter: "_Counter") -> list[Line]:
        """A header label's lines, made once per renderer (the labels are the template's), counted at every use."""
        made = self._label_columns.get((label, width))
        if made is None:
            own = _Counter()
            lines = self._lines(self._runs(label, "label", own), width, "label")
            made = self._label_columns[label, width] = (lines, own.placeholders)
        counter.placeholders += made[1]
        return made[0]

    def _column(self, runs: list[Run], width: float) -> list[Line]:
        """A header value's lines; remembered (bounded), as many values repeat from chat to chat."""
        key = (*runs, width)
        lines = self._columns.get(key)
        if lines is None:
            if len(self._columns) >= COLUMNS_KEPT:
                self._columns.clear()
            lines = self._columns[key] = self._lines(runs, width, "value")
        return lines

    def _message(self, m: Message, counter: "_Counter") -> Iterator[Line]:
        """The header line, then every other line behind the quote bar: text cannot pass for a header."""
        labels, st = self.template.labels, self.styles
        role = {"agent": labels["agent"], "customer": labels["customer"]}.get(m.role, labels["unknown"])
        sender = self._sender_style(m.role)
        shown_type = m.type not in ("", "TEXT")
        kind = [*self._runs(" · ", "body", counter), *self._field(m.type, "body", counter)] if shown_type else []
        header = [*self._runs(f"#{m.position} · {self._time(m.sent_at)} · ", "body", counter),
                  *self._sender(m, sender, counter), *self._runs(f" ({role})", "body", counter), *kind,
                  *self._seen(m.seen, counter)]
        yield Line(st["body"].size * 0.5)
        lines = wrap(header, self.width, st["body"].leading, level=0)  # "#N · time · " leads, whatever the name
        yield next(lines)
        yield from self._quoted([[run for _, run in line.runs] for line in lines])
        if m.is_end:
            yield from self._noted([[*self._runs(f"{self.template.labels['closed_event']} ", "body", counter),
                                     *self._ident(m.sender_id, "body", counter)]])
        yield from self._quoted(self._blocks(m, counter))  # the message's own words, behind the bar
        yield from self._noted(self._notes(m, counter))  # what we say of it, outside the bar: no text passes for it

    def _seen(self, seen: Any, counter: "_Counter") -> list[Run]:
        """The read receipt (`messageSeen`): " · seen <time>", " · seen" (true), " · not seen" (false), any other
        value quoted as given (" · read receipt "0""); nothing where the platform says nothing (null)."""
        if seen is None:
            return []
        labels = self.template.labels
        stated, when, given = read_receipt(seen)
        if when is not None:
            return self._runs(f" · {labels['seen']} {self._time(when)}", "body", counter)
        if given is not None:  # 0, text, anything else: shown as the platform gave it
            return [*self._runs(f" · {labels['seen_other']} ", "body", counter),
                    *self._field(given, "body", counter, quoted=True)]
        return self._runs(f" · {labels['seen'] if stated else labels['not_seen']}", "body", counter)

    def _sender_style(self, role: str) -> Style:
        """The style of a sender's name, by role: made once per role."""
        style = self._sender_styles.get(role)
        if style is None:
            palette = self.palette
            style = Style(self.styles["label"].font, self.styles["body"].size, palette.get(role, palette["muted"]))
            self._sender_styles[role] = style
        return style

    def _sender(self, m: Message, style: Style, counter: "_Counter") -> list[Run]:
        """The sender by name (the message's own, else the contact's) and quoted id; the bare id without a name.
        Made once per sender and rendering (most messages repeat one of two), counted at every use."""
        name = m.sender_name or counter.names.get(m.sender_id, "")
        key = (m.sender_id, name, style)
        if key not in counter.senders:
            made = _Counter()
            if not name:
                runs = self._ident(m.sender_id, style, made)
            else:
                runs = self._named(self._field(name, style, made, quoted=True),
                                   self._field(m.sender_id, style, made, quoted=True), style, made)
            counter.senders[key] = (runs, made.placeholders, made.shortened)
        runs, placeholders, shortened = counter.senders[key]
        counter.placeholders += placeholders
        counter.shortened += shortened
        return runs

    def _ident(self, sender_id: str, style: str | Style, counter: "_Counter") -> list[Run]:
        """A bare sender id quoted as the participants list quotes it (ids are hostile text: `x (agent)` must
        not read as a role); the template's `none` wording, unquoted, for a message without one."""
        if not sender_id:
            return self._runs(self.template.labels["none"], style, counter)
        return self._field(sender_id, style, counter, quoted=True)

    def _blocks(self, m: Message, counter: "_Counter") -> Iterator[list[Run]]:
        """What a message says, block by block, made lazily as the layout asks for it."""
        labels = self.template.labels
        if m.url:
            yield [*self._runs(f"{labels['attachment']}: ", "body", counter), *self._url(m.url, counter)]
        if m.text:
            shown = _first_lines(m.text, self.limits.message_lines)[:self.limits.message_chars]
            runs = self._runs(shown, "body", counter)
            if len(shown) < len(m.text):  # newlines would lay out one line each: a megabyte, hundreds of pages
                counter.shortened += 1
                runs += self._runs(" " + labels["shortened"].format(hidden=f"{len(m.text) - len(shown):,}"), "note",
                                   counter)
            yield runs

    def _notes(self, m: Message, counter: "_Counter") -> Iterator[list[Run]]:
        """What the archive says of a message (no text, not delivered, a duplicate id, a reply), block by block."""
        labels = self.template.labels
        if not m.text and not m.url and not m.is_end:
            yield self._runs(labels["empty"], "meta", counter)
        reason = [*self._runs(": ", "note", counter), *self._field(m.delivery_error, "note", counter)] \
            if m.delivery_error else []
        if m.delivered is False:
            yield [*self._runs(labels["not_delivered"], "warning", counter), *reason]
        elif reason:  # whatever else deliverySuccess says (true, absent, or not a bool): the platform gave a reason
            yield [*self._runs(labels["delivery_error"], "warning", counter), *reason]
        if m.duplicate_of:
            yield self._runs(f"{labels['duplicate_of']} #{m.duplicate_of}", "note", counter)
        if m.reply_to:
            yield [*self._runs(f"{labels['reply_to']} ", "body", counter), *self._field(m.reply_to, "body", counter)]

    def _url(self, url: str, counter: "_Counter") -> list[Run]:
        """A URL up to Limits.url_chars with a scheme we trust is one link; any other is text, cut at that limit."""
        limit = self.limits.url_chars
        if len(url) <= limit and url.lower().startswith(LINK_SCHEMES) and url.isprintable():
            body = self.styles["body"]
            return self._runs(url, Style(body.font, body.size, self.palette["agent"]), counter, url)
        return self._field(url, "body", counter, limit=limit)

    # -- drawing ---------------------------------------------------------------------------

    def _usable_height(self) -> float:
        return self.page_size[1] - 2 * self.margin - FOOTER_SPACE

    def _draw(self, t: Transcript, pages: list[list[Line]], archive: ArchiveInfo | None = None,
              signature: SignatureSlot | None = None) -> tuple[bytes, Placeholder | None]:
        buffer = io.BytesIO()
        doc, labels = self.template.document, self.template.labels
        canvas = Canvas(buffer, pagesize=self.page_size, initialFontName=self.styles["body"].font,
                        pageCompression=1)  # initialFontName: else every page names an unembedded Helvetica
        # Metadata is shown by viewers outside the page: no raw control or bidi characters there either.
        canvas.setTitle(pdf_title(t.room, self.limits.field_chars))
        canvas.setAuthor(visible(doc["organisation"]))
        canvas.setSubject(visible(doc["title"]))
        canvas.setCreator(f"ctlive-archiver (reportlab {reportlab.Version})")
        field = SignatureField(canvas, signature) if signature else None  # on the first page
        footer_style = self.styles["footer"]
        widest = pdfmetrics.stringWidth(labels["page"].format(page=len(pages), pages=len(pages)), footer_style.font,
                                         footer_style.size)
        # The room id is source data: drawn through the font chain, cut to fit beside the page number.
        runs, _ = self.chain.runs(labels["footer"].format(room=t.room), footer_style, newlines=False)
        ordered = next(wrap(runs, WHOLE_LINE, footer_style.leading, level=0))  # right-to-left parts drawn in order
        footer = _clipped([run for _, run in ordered.runs], self.width - widest - 12)
        writer = TextWriter(canvas)
        for number, lines in enumerate(pages, 1):
            self._draw_lines(writer, lines)
            page = labels["page"].format(page=number, pages=len(pages))
            right = self.width - pdfmetrics.stringWidth(page, footer_style.font, footer_style.size)
            self._draw_lines(writer, [footer, Line(0, [(right, Run(page, footer_style))])], top=self.margin)
            canvas.showPage()
        make_self_contained(canvas, archive.record if archive else None, self.template.labels["archive"])
        canvas.save()
        data = buffer.getvalue()
        return data, field.placeholder(data) if field else None

    def _draw_lines(self, writer: TextWriter, lines: list[Line], top: float | None = None) -> None:
        """LINES from TOP down: images and rules as they come, then all the text in one block (render/content.py)."""
        canvas = writer.canvas
        y = self.page_size[1] - self.margin if top is None else top
        writer.begin()
        links: dict[str, list[tuple[float, float, float, float]]] = {}  # URL -> the boxes of its pieces
        for line in lines:
            if line.image:
                reader, x, w, h = line.image
                canvas.drawImage(reader, self.margin + x, y - line.height + 2, w, h)
            if line.rule:
                canvas.setStrokeColor(self.palette["rule"])
                canvas.setLineWidth(0.5)
                canvas.line(self.margin, y - line.height / 2, self.margin + self.width, y - line.height / 2)
            for x, run in line.runs:
                st = run.style
                baseline = y - (line.height + 0.6 * st.size) / 2
                writer.run(self.margin + x, baseline, run.text, st.font, st.size, st.color)
                if run.link:
                    end = self.margin + x + pdfmetrics.stringWidth(run.text, st.font, st.size)
                    links.setdefault(run.link, []).append((self.margin + x, baseline - 0.25 * st.size, end,
                                                           baseline + st.size))
            y -= line.height
        writer.end()
        for url, boxes in links.items():
            _link(canvas, url, boxes)


def _link(canvas: Canvas, url: str, boxes: list[tuple[float, float, float, float]]) -> None:
    """One link annotation for all the pieces of URL on a page: their union, with a quad for each piece."""
    union = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    quads = [v for x0, y0, x1, y1 in boxes for v in (x0, y1, x1, y1, x0, y0, x1, y0)]
    canvas.linkURL(url, union, relative=0, thickness=0, QuadPoints=PDFArray(quads), F=4)  # F=4: printed (PDF/A)


HEADER_PAGES = 5  # what the body leaves of Limits.pages to the header (participants, warnings)
WARNINGS_SHOWN = 100  # data warnings listed in the header; the record lists them all
PRESENT_SHOWN = 20  # ids the contact names beside the authors listed in the header; the record lists them all


def _first_cut(body: list[Line], past: list[list[Line]]) -> int | None:
    """Where BODY must stop for none of it to fall on the pages PAST the cap: before the message, or the
    contact event, whose line comes first there (None: no line of the body is there, the header fills them)."""
    at = {id(line): i for i, line in enumerate(body)}
    i = next((at[id(line)] for page in past for line in page if id(line) in at), None)
    if i is None:
        return None
    message = body[i].message
    while i > 0 and (body[i - 1].message == message if message else not body[i].event):
        i -= 1  # back to the first line of that message, or of that event
    return i


def _first_lines(text: str, count: int) -> str:
    """TEXT up to its COUNT-th newline (all of it when it has fewer)."""
    if text.count("\n", 0, None) < count:
        return text
    at = -1
    for _ in range(count):
        at = text.index("\n", at + 1)
    return text[:at]


def _paginate(lines: list[Line], height: float, continued: Callable[[int], Line] | None = None) -> list[list[Line]]:
    """Lines in pages of at most HEIGHT; spacing at the top of a page is dropped. A message header
    never ends a page; a message that goes on over a page break starts the page with CONTINUED(position)."""
    pages: list[list[Line]] = [[]]
    used = 0.0
    previous = 0  # the message of the last line placed
    for i, line in enumerate(lines):
        need = line.height + (lines[i + 1].height if line.keep and i + 1 < len(lines) else 0.0)
        if used + need > height and pages[-1]:
            pages.append([])
            used = 0.0
            if continued and line.message and line.message == previous and not line.keep and line.runs:
                note = continued(line.message)
                pages[-1].append(note)
                used += note.height
        if not pages[-1] and not line.runs and not line.rule and not line.image:
            continue
        pages[-1].append(line)
        used += line.height
        previous = line.message
    return pages


def _event_order(e: Event) -> tuple[int, dt.datetime, int]:
    return (0, e.at, e.position) if e.at else (1, dt.datetime.min.replace(tzinfo=dt.timezone.utc), e.position)



class _Counter:
    """What one rendering counts (placeholders, shortened fields) and knows (participants' names)."""

    def __init__(self, names: dict[str, str] | None = None) -> None:
        self.placeholders = 0
        self.shortened = 0
        self.stopped_at: tuple[int, int] | None = None  # (first message not shown, last message): Limits.pages
        self.events_not_shown = 0  # contact events past Limits.pages
        self.before: dict[int, tuple[int, int]] = {}  # message position -> (placeholders, shortened) before it
        self.names = names or {}  # user id -> display name
        self.senders: dict[tuple[str, str, Style], tuple[list[Run], int, int]] = {}  # see PdfRenderer._sender

    def cut(self, t: Transcript, first: int, dropped: list[Line], counts: tuple[int, int]) -> tuple[int, int]:
        """The PDF stops before message FIRST (0: after the last, only contact events left out), its DROPPED
        lines not drawn: the counts go back to what they were before it (COUNTS, or what was counted before
        FIRST); returns them."""
        if first:
            self.stopped_at = (first, t.messages[-1].position)
        self.events_not_shown += sum(1 for line in dropped if line.event)
        self.placeholders, self.shortened = self.before.get(first, counts)
        return self.placeholders, self.shortened
