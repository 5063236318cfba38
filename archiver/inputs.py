"""Reading chat documents from a file, whatever shape the platform's tools gave them.

Accepted: one document, a JSON array, JSON lines (as mongoexport writes them, in
relaxed or canonical Extended JSON), documents one after another, and mongo shell
notation as the legacy shell and mongosh print it (docs/cli.md lists it all):
`ObjectId("…")`, `ISODate("…")`, `NumberLong(…)`, `BinData`, `HexData`, `MD5`,
`UUID`, `DBRef(…)`, `DBPointer(…)`, regular expression literals `/…/flags`, unquoted
keys, single quotes; mongosh's `Long`, `Int32`, `Double`, `Decimal128`, `MinKey()`,
`BSONRegExp`, `Binary.createFromBase64`, text in backticks, `\\xHH` escapes and
text split as `'…\\n' + '…'` too. Each value is the BSON value the shell read from
MongoDB; what means "now" (`ObjectId()`, `ISODate()`) and what mongosh prints where
it left part of a document out (`[Object]`, `... 5 more items`) are refused. A broken
document is reported with its position and never stops the others.

How documents are told apart, in one pass over the file: brackets outside strings
and regular expression literals are matched once for the whole file (neither runs
past the end of its line, as JSON strings cannot hold newlines, so where they are
does not depend on where a document starts; a regular expression literal can only
start where a value does: after `:`, `,`, `[` or `(`), and a document is a bracket
and its match. Between documents, values are split where the matcher reads them, so
a stray regular expression literal there is one unreadable value, its brackets its text. A closer matches the nearest open bracket of its own kind, and
the brackets it skips stay unmatched, so one mismatched bracket cannot swallow the
documents after it. A document whose bracket never closes ends where the next line
starting with `{` at the same indentation begins or, in the top-level array
(mongoexport --jsonArray writes it on one line), at the next `,{` directly inside
an object: only a new element of the array can be there. When nothing marks a next
document, the reason says how many bytes were not read as documents. A closer with
nothing to close is reported and skipped.
Documents nest at most 100 levels deep (MongoDB's limit).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import struct
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from bson import DatetimeConversion, json_util
from bson.binary import Binary, BinaryVectorDtype
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.errors import BSONError
from bson.int64 import Int64
from bson.objectid import ObjectId

# A date outside years 1-9999 is a DatetimeMS, as the archive pass reads it from MongoDB (mongo.py).
_EXTJSON = json_util.JSONOptions(tz_aware=True, tzinfo=dt.timezone.utc,
                                 datetime_conversion=DatetimeConversion.DATETIME_AUTO)


@dataclass(frozen=True)
class ParsedDocument:
    position: int
    line: int
    document: dict[str, Any]


@dataclass(frozen=True)
class UnreadableDocument:
    position: int
    line: int
    column: int
    reason: str


Item = ParsedDocument | UnreadableDocument


def describe(item: Item) -> str:
    if isinstance(item, ParsedDocument):
        return f"document {item.position} (line {item.line}): room {item.document.get('room')!r}"
    return f"document {item.position} (line {item.line}, column {item.column}): {item.reason}"


def read_file(path: str | Path) -> list[Item]:
    return read_documents(Path(path).read_bytes())


# Byte-order marks: UTF-8's is skipped (Notepad and PowerShell write one); the others mean the file is not UTF-8.
_UTF8_BOM = b"\xef\xbb\xbf"
_OTHER_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),  # before UTF-16's: a prefix
               (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


def read_documents(data: bytes) -> list[Item]:
    encoding = next((name for bom, name in _OTHER_BOMS if data.startswith(bom)), None)
    if encoding:
        return [UnreadableDocument(1, 1, 1, f"the file is {encoding} (by its byte-order mark), not UTF-8: "
                                            f"convert it first (iconv -f {encoding} -t UTF-8)")]
    source = _Source(data[len(_UTF8_BOM):], skipped=len(_UTF8_BOM)) if data.startswith(_UTF8_BOM) else _Source(data)
    return [_parse(source, start, end, position, unended)
            for position, (start, end, unended) in enumerate(source.documents(), start=1)]


# -- splitting -----------------------------------------------------------------------------------

MAX_DEPTH = 100
# A string ends at its quote or its line's end (mongosh quotes text holding both ' and " with backticks).
_STRING = r"""(?:"(?:[^"\\\n]++|\\.)*+"?|'(?:[^'\\\n]++|\\.)*+'?|`(?:[^`\\\n]++|\\.)*+`?)"""
# A regular expression literal: its text up to its closing `/` (a `/` in a [class] does not close it) or its
# line's end. One can only start where a value does: after `:`, `,`, `[` or `(` (elsewhere a `/` is just wrong).
_REGEX = r"""/(?![*/])(?:[^/\\\n\[]++|\\.|\[(?:[^\]\\\n]++|\\.)*+\]?)*+/?"""
# The next bracket outside strings and regular expressions (group 1), or the end of the text: one match per bracket.
_BRACKET = re.compile(rf"""(?:(?:(?<=\[)|[:,(])\s*+{_REGEX}|[^{{}}\[\]"'`/:,(]++|{_STRING}|[/:,(])*+(?:([{{}}\[\]])|\Z)""")
# No document: up to a line end, comma or bracket, past strings and regular expression literals as _BRACKET reads
# them (one after `:` or `(` in it here; one that starts the value: `_Source._values`).
_BARE = re.compile(rf"""(?:[:(]\s*+{_REGEX}|[^\n,{{}}\[\]"'`:(]++|{_STRING}|[:(])*+""")
_REGEX_AT = re.compile(_REGEX)
_BETWEEN = re.compile(r"[\s,]*")
_DOC_LINE = re.compile(r"^[ \t]*\{", re.MULTILINE)
_INDENT = re.compile(r"[ \t]*")
_OPENER = {"}": "{", "]": "["}


class _Source:
    """The file's text with its brackets matched and its lines indexed, in one pass each."""

    def __init__(self, data: bytes, skipped: int = 0) -> None:
        self.data = data
        self.skipped = skipped  # bytes before DATA in the file (a byte-order mark): byte offsets count them
        self.text = data.decode("utf-8", errors="surrogateescape")
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        self._byte_line_starts: list[int] | None = None  # the same, in the bytes; only when asked out of order
        self._known = (0, 0)  # a character index and its byte offset: the last asked
        self.opens = array("q")  # every opening bracket outside strings, in order,
        self.closes = array("q")  # ... where its match is (-1: none),
        self.levels = array("i")  # ... and how many brackets are open there, itself included
        self.parents = array("q")  # ... and where the bracket it is directly inside is (-1: none)
        self._match_brackets()
        self.doc_lines: dict[int, list[int]] = {}  # indentation -> every `{` that begins a line there
        for m in _DOC_LINE.finditer(self.text):
            self.doc_lines.setdefault(m.end() - 1 - m.start(), []).append(m.end() - 1)

    def _match_brackets(self) -> None:
        stack: list[int] = []  # indexes into self.opens of the brackets open here
        depths: dict[str, list[int]] = {"{": [], "[": []}  # where in the stack each kind is open
        for token in _BRACKET.finditer(self.text):
            ch = token.group(1)
            if not ch:
                continue
            at = token.start(1)
            if ch in "{[":
                depths[ch].append(len(stack))
                self.parents.append(self.opens[stack[-1]] if stack else -1)
                stack.append(len(self.opens))
                self.opens.append(at)
                self.closes.append(-1)
                self.levels.append(len(stack))
            elif depths[_OPENER[ch]]:  # else it closes nothing: reported where it stands
                depth = depths[_OPENER[ch]].pop()
                self.closes[stack[depth]] = at
                del stack[depth:]  # brackets of the other kind opened inside stay unmatched
                other = depths["[" if ch == "}" else "{"]
                while other and other[-1] > depth:
                    other.pop()

    def documents(self) -> Iterator[tuple[int, int, bool]]:
        """(start, end, unended) of each value at the top level, or in the top-level array; UNENDED:
        its bracket never closes and nothing after it marked where a next document starts."""
        first = _BETWEEN.match(self.text).end()
        if first < len(self.text) and self.text[first] == "[" and (close := self._match(first)) is not None:
            end = close if close >= 0 else len(self.text)
            yield from self._values(first + 1, end, in_array=True)
            yield from self._values(end + 1, len(self.text))
        else:
            yield from self._values(0, len(self.text))

    def _values(self, i: int, end: int, in_array: bool = False) -> Iterator[tuple[int, int, bool]]:
        """Values between I and END; each step moves on by at least one character."""
        while True:
            gap = _BETWEEN.match(self.text, i, end)
            # A regular expression literal can start here (as _BRACKET reads one): after `,`, or `[` and spaces.
            regex = "," in gap.group() or self.text[i - 1:i] == "["
            i = gap.end()
            if i >= end:
                return
            ch = self.text[i]
            close = self._match(i) if ch in "{[" else None
            if close is not None and close < 0:
                stop = self._next_document_line(i, end)
                if in_array:
                    stop = self._next_element(i, stop)
                yield i, stop, in_array and stop == end
                i = stop
                continue
            if close is not None:
                stop = close + 1
            elif ch in "{}[]":  # closes nothing, or _BRACKET read it in a string: reported with what follows it
                stop = _BARE.match(self.text, i + 1, end).end()
            else:
                literal = _REGEX_AT.match(self.text, i, end) if regex else None
                stop = _BARE.match(self.text, literal.end() if literal else i, end).end()
            stop = min(stop, end)
            yield i, stop, False
            i = stop

    def _match(self, at: int) -> int | None:
        """Where the bracket at AT closes (-1: never); None if _BRACKET read no bracket there (one in a string or
        a regular expression literal)."""
        k = bisect_left(self.opens, at)
        return self.closes[k] if k < len(self.opens) and self.opens[k] == at else None

    def _next_document_line(self, at: int, end: int) -> int:
        """Where a bracket that never closes stops: the next line that starts with `{` at the
        indentation of AT's line, so that one broken document cannot swallow those after it."""
        line_start = self.line_starts[bisect_right(self.line_starts, at) - 1]
        indent = _INDENT.match(self.text, line_start).end() - line_start
        candidates = self.doc_lines.get(indent, [])
        k = bisect_right(candidates, at)
        return min(candidates[k], end) if k < len(candidates) else end

    def _next_element(self, at: int, end: int) -> int:
        """Where an array element whose bracket never closes stops, if before END: at the comma
        before the next `{` directly inside an object (which no valid document has: there a
        field name comes first), so that element is the array's next one."""
        for k in range(bisect_right(self.opens, at), bisect_left(self.opens, end)):
            start, parent = self.opens[k], self.parents[k]
            if self.text[start] == "{" and parent >= 0 and self.text[parent] == "{":
                comma = start - 1
                while self.text[comma].isspace():
                    comma -= 1
                if self.text[comma] == ",":
                    return comma
        return end

    def too_deep(self, start: int, end: int) -> int | None:
        """The first bracket in START..END nested deeper than MAX_DEPTH, if any."""
        a, b = bisect_left(self.opens, start), bisect_left(self.opens, end)
        if b == a or max(self.levels[a:b]) - self.levels[a] < MAX_DEPTH:
            return None
        limit = self.levels[a] + MAX_DEPTH
        return next(self.opens[k] for k in range(a, b) if self.levels[k] >= limit)

    def line_col(self, at: int) -> tuple[int, int]:
        """1-based line and 0-based column of AT."""
        line = bisect_right(self.line_starts, at)
        return line, at - self.line_starts[line - 1]

    def byte_offset(self, at: int) -> int:
        """The offset in the file's bytes of character AT. Asked in file order, each call encodes only the text
        since the last one (a one-line file included); else from the start of AT's line (its byte offset from
        the newlines in the bytes, found once: decoding keeps every newline)."""
        known_char, known_byte = self._known
        if at < known_char:
            if self._byte_line_starts is None:
                self._byte_line_starts = [0] + [m.end() for m in re.finditer(b"\n", self.data)]
            line = bisect_right(self.line_starts, at)
            known_char, known_byte = self.line_starts[line - 1], self._byte_line_starts[line - 1]
        offset = known_byte + len(self.text[known_char:at].encode("utf-8", "surrogateescape"))
        self._known = (at, offset)
        return self.skipped + offset


def _string_end(text: str, i: int) -> int:
    quote, i = text[i], i + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == quote:
            return i + 1
        if ch == "\n":
            return i  # unterminated: stop at the end of the line
        i += 1
    return i


# -- parsing one document ------------------------------------------------------------------------

def _parse(source: _Source, start: int, end: int, position: int, unended: bool = False) -> Item:
    item = _parse_one(source, start, end, position)
    if unended and isinstance(item, UnreadableDocument):
        unread = len(source.text[start:end].rstrip().encode("utf-8", "surrogateescape"))
        return UnreadableDocument(item.position, item.line, item.column, (
            f"{item.reason}; its {source.text[start]!r} never closes and nothing after it marks where a next "
            f"document starts: the {unread} bytes from it on were not read as documents"))
    return item


def _parse_one(source: _Source, start: int, end: int, position: int) -> Item:
    text = source.text
    bad = _UNDECODABLE.search(text, start, end)
    if bad:
        return _unreadable(source, position, bad.start(), f"invalid UTF-8 at byte offset {source.byte_offset(bad.start())}")
    if text[start] in "}]":
        return _unreadable(source, position, start, f"{text[start]!r} closes no open bracket")
    deep = source.too_deep(start, end)
    if deep is not None:
        return _unreadable(source, position, deep, f"nested deeper than {MAX_DEPTH} levels (MongoDB's limit)")
    try:
        value = json.loads(text[start:end], object_pairs_hook=_strict_object, parse_int=_int64)
    except (ValueError, TypeError, ArithmeticError, BSONError):  # the shell parser reads it or says where not
        try:
            value = _ShellParser(text, start, end).document()
        except _SyntaxError as exc:
            return _unreadable(source, position, exc.at, exc.reason)
    if not isinstance(value, dict):
        return _unreadable(source, position, start, f"is {_json_type(value)}, not a document (object)")
    return ParsedDocument(position, source.line_col(start)[0], value)


_UNDECODABLE = re.compile("[\udc80-\udcff]")


class _BadValue(ValueError):
    """An Extended JSON value ($oid, $date, ...) that denotes no BSON value."""


def _int64(digits: str) -> int:
    """A JSON integer, refused beyond BSON's int64 (the shell parser then says where)."""
    value = int(digits)
    if not -2**63 <= value < 2**63:
        raise ValueError(f"{digits} is out of the 64-bit range")
    return value


def _int32_or_double(digits: str) -> int | float:
    """A bare integer as the shells print it: an int32, or else the double it was (an int64 is a Long); digits
    beyond int64 (no shell prints a double so: it writes 1.2e+29) are refused as in JSON."""
    value = _int64(digits)
    return value if -2**31 <= value < 2**31 else float(digits)


def _strict_object(pairs: list[tuple[str, Any]]) -> Any:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate field")  # json.loads would keep only the last one
    return _extended(result)


def _extended(obj: dict[str, Any]) -> Any:
    """OBJ, or the BSON value its Extended JSON keys denote."""
    try:
        value = json_util.object_hook(obj, _EXTJSON)
    except (ValueError, TypeError, ArithmeticError, BSONError) as exc:
        millis = _far_date(obj)
        if millis is None:
            raise _BadValue(f"{{{', '.join(obj)}}}: {str(exc).split(' (')[0]}") from None
        value = DatetimeMS(millis)
    if isinstance(value, Int64) and not -2**63 <= value < 2**63:
        raise _BadValue(f"{{{', '.join(obj)}}}: {value} is out of the 64-bit range")
    return value


_FAR_DATE = re.compile(r"([+-]\d{6}|\d{4,5})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,3})\d*)?"
                       r"(Z|[+-]\d\d:\d\d)")
_DAYS_IN_400_YEARS = 146097  # the Gregorian calendar repeats every 400 years


def _far_date(obj: dict[str, Any]) -> int | None:
    """Milliseconds of {"$date": "<ISO 8601 text>"} with a year Python's datetime cannot hold (0, 10000, as
    JavaScript writes them: +010000-01-01T00:00:00.000Z), None for anything else."""
    stamp = obj.get("$date") if len(obj) == 1 else None
    match = _FAR_DATE.fullmatch(stamp) if isinstance(stamp, str) else None
    if not match:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    cycles = (year - 2000) // 400  # moved by whole 400-year cycles into datetime's range, then back
    try:
        when = dt.datetime(year - 400 * cycles, month, day, hour, minute, second,
                           tzinfo=dt.timezone.utc if match[8] == "Z" else dt.datetime.strptime(match[8], "%z").tzinfo)
    except ValueError:
        return None
    millis = (when - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(milliseconds=1)
    return millis + int((match[7] or "0").ljust(3, "0")) + cycles * _DAYS_IN_400_YEARS * 86_400_000


def _unreadable(source: _Source, position: int, at: int, reason: str) -> UnreadableDocument:
    line, column = source.line_col(at)
    return UnreadableDocument(position, line, column + 1, reason)


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


class _SyntaxError(Exception):
    def __init__(self, at: int, reason: str) -> None:
        super().__init__(reason)
        self.at, self.reason = at, reason


_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_LITERALS = {"true": True, "false": False, "null": None, "undefined": None,
             "MinKey": {"$minKey": 1}, "MaxKey": {"$maxKey": 1},
             "NaN": float("nan"), "Infinity": float("inf")}


class _ShellParser:
    """JSON plus the mongo shell's extensions; errors carry the exact place."""

    def __init__(self, text: str, start: int, end: int) -> None:
        self.text, self.start, self.i, self.end = text, start, start, end
        self.calls = 0  # constructor calls open here

    def document(self) -> Any:
        value = self.value()
        self.space()
        if self.i < self.end:
            raise _SyntaxError(self.i, f"unexpected {self.text[self.i]!r} after the end of the document")
        return value

    def space(self) -> None:
        while self.i < self.end and self.text[self.i].isspace():
            self.i += 1

    def peek(self) -> str:
        self.space()
        return self.text[self.i] if self.i < self.end else ""

    def expect(self, ch: str, context: str) -> None:
        if self.peek() != ch:
            raise self.error(f"expected {context}")
        self.i += 1

    def error(self, expected: str) -> _SyntaxError:
        """What was expected and what was found, placed where it was found."""
        if self.i < self.end:
            return _SyntaxError(self.i, f"{expected}, found {self.text[self.i]!r}")
        last = self.start + len(self.text[self.start:self.end].rstrip())  # just after the document's last character
        return _SyntaxError(last, f"{expected}, found the end of the document")

    def value(self) -> Any:
        ch = self.peek()
        self.refuse_a_cut()
        if ch == "{":
            return self.object()
        if ch == "[":
            return self.array()
        if ch and ch in _QUOTES:
            return self.strings()
        if ch == "/":
            return self.regex()
        if self.text.startswith("-Infinity", self.i, self.end):
            self.i += len("-Infinity")
            return float("-inf")
        number = _NUMBER.match(self.text, self.i, self.end)
        if number:
            self.i = number.end()
            if number.group() == "-0":
                return -0.0  # a BSON integer has no -0: the shell printed a double
            # Both shells print an int64 as NumberLong(…) / Long(…): a bare integer beyond int32 was a double.
            try:
                return json.loads(number.group(), parse_int=_int32_or_double)
            except ValueError as exc:
                raise _SyntaxError(number.start(), f"{exc} (BSON has no larger integer)") from None
        ident = _IDENT.match(self.text, self.i, self.end)
        if ident:
            return self.constructor(ident)
        raise self.error("expected a value")

    def object(self) -> dict[str, Any]:
        at = self.i
        self.i += 1
        result: dict[str, Any] = {}
        if self.peek() == "}":
            self.i += 1
            return result
        while True:
            key_at = self.i
            if self.peek() and self.peek() in _QUOTES:
                key = self.string()
            else:
                ident = _IDENT.match(self.text, self.i, self.end)
                if not ident:
                    raise _SyntaxError(self.i, "expected a field name")
                key, self.i = ident.group(), ident.end()
            if key in result:
                raise _SyntaxError(key_at, f"field {key!r} appears twice")
            self.expect(":", f"':' after field name {key!r}")
            result[key] = self.value()
            if self.peek() == ",":
                self.i += 1
                if self.peek() == "}":
                    raise _SyntaxError(self.i, "trailing ',' before '}'")
                continue
            self.expect("}", f"',' or '}}' after the value of {key!r}")
            try:
                return _extended(result)
            except _BadValue as exc:
                raise _SyntaxError(at, str(exc)) from None

    def array(self) -> list[Any]:
        self.i += 1
        items: list[Any] = []
        if self.peek() == "]":
            self.i += 1
            return items
        while True:
            items.append(self.value())
            if self.peek() == ",":
                self.i += 1
                continue
            self.expect("]", "',' or ']' after an array element")
            return items

    def strings(self) -> str:
        """A string, or strings joined by `+` (mongosh splits long text after each newline so)."""
        parts = [self.string()]
        while self.peek() == "+":
            self.i += 1
            if not (self.peek() and self.peek() in _QUOTES):
                raise self.error("expected a string after '+'")
            parts.append(self.string())
        self.refuse_a_cut()
        return "".join(parts)

    def refuse_a_cut(self) -> None:
        """What mongosh prints where it left part of a document out ([Object], ... 5 more items) is refused."""
        self.space()
        cut = _CUT.match(self.text, self.i, self.end)
        if cut:
            raise _SyntaxError(self.i, f"{cut.group()!r}: mongosh left part of the document out here "
                                       f"({_CUT_WHY[cut.lastgroup]}); print it whole (mongoexport, or "
                                       "EJSON.stringify in mongosh) and read that")

    def string(self) -> str:
        quote, start = self.text[self.i], self.i
        end = _string_end(self.text, self.i)
        if end > self.end or self.text[end - 1:end] != quote or end == start + 1:
            raise _SyntaxError(start, "unterminated string")
        self.i = end
        raw = _JS_ESCAPE.sub(_as_json_escape, self.text[start + 1:end - 1])  # JavaScript's escapes as JSON's
        try:
            return json.loads(f'"{raw}"')
        except ValueError as exc:
            raise _SyntaxError(start, f"bad string ({exc.args[0].split(':')[0]})") from None

    def regex(self) -> Any:
        """A regular expression literal, as the shell that printed it read the BSON value's options."""
        start = self.i
        literal = _REGEX_LITERAL.match(self.text, self.i, self.end)
        if not literal:
            if self.text.startswith(("//", "/*"), self.i):
                raise self.error("expected a value")
            raise _SyntaxError(start, "unterminated regular expression (no closing '/' on its line)")
        self.i = literal.end()
        pattern, flags = literal.group(1), literal.group(2)
        if "\0" in pattern:
            raise _SyntaxError(start, "the regular expression holds a NUL character, which BSON cannot store")
        options: list[str] = []
        for flag in flags:
            option = _REGEX_OPTIONS.get(flag)
            if option is None:
                raise _SyntaxError(start, f"regular expression flag {flag!r} has no BSON option (BSON has i, l, m, "
                                          "s, u, x; mongosh prints s as g)")
            if flags.count(flag) > 1:
                raise _SyntaxError(start, f"regular expression flag {flag!r} appears twice")
            if option in options:
                raise _SyntaxError(start, "regular expression flags 'g' and 's' both mean BSON option s")
            options.append(option)
        return _extended({"$regularExpression": {"pattern": pattern, "options": "".join(sorted(options))}})

    def constructor(self, ident: re.Match) -> Any:
        while ident.group() == "new":  # `new X(...)` is X(...); a loop: `new new ...` cannot exhaust the stack
            after = _skip(self.text, ident.end())
            ident = _IDENT.match(self.text, after, self.end)
            if not ident:
                raise _SyntaxError(after, "expected a constructor after 'new'")
        name = ident.group()
        self.i = ident.end()
        while self.text.startswith(".", self.i, self.end):  # a static method: Binary.createFromBase64(...)
            member = _IDENT.match(self.text, self.i + 1, self.end)
            if not member:
                break
            name, self.i = f"{name}.{member.group()}", member.end()
        if name == "Invalid" and _skip(self.text, self.i) < self.end and \
                self.text.startswith("Date", _skip(self.text, self.i)):
            raise _SyntaxError(ident.start(), "Invalid Date: mongosh prints a date outside JavaScript's range so, "
                                              "and its value is lost; export the document with mongoexport")
        if name in _LITERALS and self.peek() != "(":
            value = _LITERALS[name]
            return json_util.object_hook(value, _EXTJSON) if isinstance(value, dict) else value
        at = ident.start()
        self.expect("(", f"'(' after {name}")
        self.calls += 1  # calls nest as brackets do, but the splitter counts only brackets
        if self.calls > MAX_DEPTH:
            raise _SyntaxError(at, f"calls nested deeper than {MAX_DEPTH} levels")
        args: list[Any] = []
        while self.peek() != ")":
            args.append(self.value())
            if self.peek() == ",":
                self.i += 1
            elif self.peek() != ")":
                self.expect(")", f"',' or ')' in {name}(...)")
        self.i += 1
        self.calls -= 1
        try:
            return _construct(name, args)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError, BSONError) as exc:
            raise _SyntaxError(at, f"{name}(...): {exc}") from None


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _construct(name: str, args: list[Any]) -> Any:
    """A shell constructor call as the BSON value it denotes (the legacy shell's names, then mongosh's)."""
    name = _MONGOSH.get(name, name)
    if not args and name in _NOW:
        raise ValueError("without an argument it means now (the time, or a new id, when the shell runs it), "
                         "which a transcript cannot hold")
    least, most = _ARITY.get(name, (0, 2))
    if not least <= len(args) <= most:
        raise ValueError(f"takes {least}{f' to {most}' if most > least else ''} argument{'s' * (most != 1)}, "
                         f"not {len(args)}")
    if name == "ObjectId":
        return _extended({"$oid": args[0]})
    if name in ("ISODate", "Date"):
        stamp = args[0]
        return _extended({"$date": stamp if isinstance(stamp, str) else int(stamp)})
    if name == "NumberLong":
        return _extended({"$numberLong": str(_integer(args[0]))})
    if name == "NumberInt":
        if not -2**31 <= _integer(args[0]) < 2**31:
            raise ValueError(f"{args[0]} is out of the 32-bit range")
        return _integer(args[0])
    if name == "NumberDecimal":
        return _extended({"$numberDecimal": str(args[0])})
    if name == "Timestamp":  # mongosh: Timestamp(t) is Timestamp(t, 0)
        if isinstance(args[0], Int64):  # mongosh: t and i in one 64-bit number; the legacy shell: t
            raise ValueError("a Long here means t and i to mongosh but t to the legacy shell: "
                             "write Timestamp({ t: …, i: … })")
        t, i = (args[0]["t"], args[0]["i"]) if isinstance(args[0], dict) else (args[0], args[1] if args[1:] else 0)
        return _extended({"$timestamp": {"t": _integer(t), "i": _integer(i)}})
    if name == "BinData":
        return _binary(base64.b64decode(args[1], validate=True), args[0])
    if name == "HexData":
        return _binary(_hex(args[1]), args[0])
    if name == "MD5":
        return _binary(_hex(args[0]), 5)
    if name == "Buffer.from":  # mongosh before 1.0 printed Binary(Buffer.from("<hex>", "hex"), <subtype>)
        if args[1] not in ("hex", "base64"):
            raise ValueError(f"unknown encoding {args[1]!r}")
        return _hex(args[0]) if args[1] == "hex" else base64.b64decode(args[0], validate=True)
    if name == "Binary":
        if not isinstance(args[0], bytes):
            raise ValueError("needs bytes (Buffer.from(...)) first")
        return _binary(args[0], args[1] if args[1:] else 0)
    if name == "DBRef":
        return _dbref(*args)
    if name == "DBPointer":  # as the driver reads a BSON DBPointer: a DBRef
        if not (isinstance(args[0], str) and isinstance(args[1], ObjectId)):
            raise ValueError("needs a namespace (a string) and an ObjectId")
        return DBRef(args[0], args[1])
    if name == "UUID":
        return _extended({"$uuid": args[0].replace("-", "")})
    if name == "Double":
        return float(args[0])
    if name in ("MinKey", "MaxKey") and not args:
        return _extended({f"${name[0].lower()}{name[1:]}": 1})
    if name == "BSONRegExp":
        options = args[1] if len(args) > 1 else ""
        if not (isinstance(args[0], str) and isinstance(options, str) and set(options) <= set("ilmsux")):
            raise ValueError("takes a pattern and options from i, l, m, s, u, x")
        return _extended({"$regularExpression": {"pattern": args[0], "options": "".join(sorted(options))}})
    if name == "BSONSymbol":  # as the driver reads a BSON symbol: a string
        if not isinstance(args[0], str):
            raise ValueError("takes a string")
        return args[0]
    if name in ("Binary.createFromBase64", "Binary.createFromHexString"):
        data = base64.b64decode(args[0], validate=True) if name.endswith("Base64") else _hex(args[0])
        return _binary(data, args[1] if len(args) > 1 else 0)
    if name == "Code":
        return _extended({"$code": args[0], **({"$scope": args[1]} if args[1:] else {})})
    if name in _TYPED_ARRAYS:
        if not isinstance(args[0], list):
            raise ValueError("takes an array of numbers")
        return _TypedArray(name, args[0])
    if name in _VECTORS:  # mongosh prints a vector (subtype 9) so: Binary.fromInt8Array(new Int8Array([1, 2]))
        kind, dtype = _VECTORS[name]
        if not (isinstance(args[0], _TypedArray) and args[0].kind == kind):
            raise ValueError(f"takes a {kind}")
        if kind != "Float32Array" and not all(type(v) is int for v in args[0].values):
            raise ValueError(f"a {kind} holds whole numbers")
        try:
            return Binary.from_vector(args[0].values, dtype, _integer(args[1]) if args[1:] else 0)
        except struct.error as exc:  # a number out of the type's range
            raise ValueError(str(exc)) from None
    raise ValueError(f"unknown constructor {name}")


# mongosh's names for what the legacy shell called otherwise.
_MONGOSH = {"Long": "NumberLong", "Int32": "NumberInt", "Decimal128": "NumberDecimal"}
# Without an argument these are the time, or a new id, when the shell runs them.
_NOW = {"ObjectId", "ISODate", "Date", "UUID", "Timestamp"}
_ARITY = {"ObjectId": (1, 1), "ISODate": (1, 1), "Date": (1, 1), "NumberLong": (1, 1), "NumberInt": (1, 1),
          "NumberDecimal": (1, 1), "Timestamp": (1, 2), "BinData": (2, 2), "HexData": (2, 2), "MD5": (1, 1),
          "UUID": (1, 1), "Double": (1, 1), "MinKey": (0, 0), "MaxKey": (0, 0), "BSONRegExp": (1, 2),
          "Binary.createFromBase64": (1, 2), "Binary.createFromHexString": (1, 2), "Code": (1, 2),
          "DBRef": (2, 4), "DBPointer": (2, 2), "Binary": (1, 2), "Buffer.from": (2, 2), "BSONSymbol": (1, 1),
          "Int8Array": (1, 1), "Float32Array": (1, 1), "Uint8Array": (1, 1), "Binary.fromInt8Array": (1, 1),
          "Binary.fromFloat32Array": (1, 1), "Binary.fromPackedBits": (1, 2)}
_TYPED_ARRAYS = {"Int8Array", "Float32Array", "Uint8Array"}
_VECTORS = {"Binary.fromInt8Array": ("Int8Array", BinaryVectorDtype.INT8),
            "Binary.fromFloat32Array": ("Float32Array", BinaryVectorDtype.FLOAT32),
            "Binary.fromPackedBits": ("Uint8Array", BinaryVectorDtype.PACKED_BIT)}


@dataclass(frozen=True)
class _TypedArray:
    """new Int8Array([...]) and the like: only as the argument of a Binary.from...Array(...)."""
    kind: str
    values: list[Any]


def _integer(value: Any) -> int:
    """An integer argument: a whole number, or its digits in a string (never rounded)."""
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value):
        return int(value)
    if isinstance(value, float) and value.is_integer() or isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise ValueError(f"{value!r} is not a whole number")


def _hex(text: Any) -> bytes:
    if not (isinstance(text, str) and re.fullmatch(r"(?:[0-9A-Fa-f]{2})*", text)):
        raise ValueError(f"{text!r} is not hexadecimal digits in pairs")
    return bytes.fromhex(text)


def _binary(data: bytes, subtype: Any) -> Any:
    if not (isinstance(subtype, int) and 0 <= subtype <= 255):
        raise ValueError(f"subtype {subtype!r} is not 0-255")
    return _extended({"$binary": {"base64": base64.b64encode(data).decode(), "subType": f"{subtype:02x}"}})


def _dbref(collection: Any, ident: Any, db: Any = None, fields: Any = None) -> DBRef:
    """DBRef(collection, id[, db][, {fields}]) as mongosh prints it (the legacy shell: no fields): the
    document {$ref, $id, $db, ...fields} that Extended JSON and the driver read as a DBRef."""
    if isinstance(db, dict) and fields is None:
        db, fields = None, db
    if not isinstance(collection, str) or not isinstance(db, (str, type(None))) \
            or not isinstance(fields, (dict, type(None))):
        raise ValueError("takes a collection name, an id, then a database name and/or a document of other fields")
    fields = fields or {}
    if {"$ref", "$id", "$db"} & set(fields):
        raise ValueError("its other fields cannot be $ref, $id or $db")
    return DBRef(collection, ident, db, fields)  # as _extra: a field may be named `collection` or `id`


_QUOTES = "\"'`"
# In the shell's strings: \xHH (mongosh, for control characters), \' and \` are JavaScript's, not JSON's.
_JS_ESCAPE = re.compile(r"""\\(?:x([0-9A-Fa-f]{2})|(['`])|(.))|(")""", re.DOTALL)


def _as_json_escape(m: re.Match) -> str:
    if m[1]:
        return "\\u00" + m[1]
    if m[2]:
        return m[2]
    return "\\" + m[3] if m[3] is not None else '\\"'


_REGEX_LITERAL = re.compile(r"/(?![*/])((?:[^/\\\n\[]++|\\.|\[(?:[^\]\\\n]++|\\.)*+\])++)/([A-Za-z]*+)")
# JavaScript flags as BSON options: mongosh (js-bson) prints BSON's s as g; the legacy shell prints them as stored.
_REGEX_OPTIONS = {"g": "s", "i": "i", "l": "l", "m": "m", "s": "s", "u": "u", "x": "x"}
# What mongosh (util.inspect) prints in place of what it leaves out.
_CUT = re.compile(r"(?P<depth>\[(?:Object|Array)\])|(?P<items>\.\.\. [0-9]+ more items?\b)"
                  r"|(?P<chars>\.\.\. [0-9]+ more characters?\b)")
_CUT_WHY = {"depth": "deeper than its inspectDepth", "items": "an array longer than its maxArrayLength",
            "chars": "text longer than its maxStringLength"}
