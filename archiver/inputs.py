"""Reading chat documents from a file, whatever shape the platform's tools gave them.

Accepted: one document, a JSON array, JSON lines (as mongoexport writes them, in
relaxed or canonical Extended JSON), documents one after another, and mongo shell
notation (`ObjectId("…")`, `ISODate("…")`, `NumberLong(…)`, unquoted keys,
single quotes, as the legacy shell and mongosh print). A broken document is
reported with its position and never stops the others.

How documents are told apart: values are split at bracket depth 0 (or depth 1
inside a top-level array), knowing string boundaries. So that one unclosed
brace or quote cannot swallow the rest of the file, a line that starts with `{`
in the column where the current document started begins a new document, and a
string never runs past the end of its line (JSON strings cannot hold newlines).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bson import json_util

_EXTJSON = json_util.JSONOptions(tz_aware=True, tzinfo=dt.timezone.utc)


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


def read_documents(data: bytes) -> list[Item]:
    text = data.decode("utf-8", errors="surrogateescape")
    items: list[Item] = []
    for position, chunk in enumerate(_chunks(text), start=1):
        items.append(_parse_chunk(text, chunk, position))
    return items


# -- splitting -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Chunk:
    start: int
    end: int


def _chunks(text: str) -> list[_Chunk]:
    first = _skip_space(text, 0)
    if first < len(text) and text[first] == "[":
        return _split(text, first + 1, base_depth=1)
    return _split(text, 0, base_depth=0)


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _split(text: str, i: int, base_depth: int) -> list[_Chunk]:
    """Top-level values from I on; in an array (base_depth 1) commas and the closing ] separate them."""
    chunks: list[_Chunk] = []
    n = len(text)
    while True:
        i = _skip_space(text, i)
        if base_depth and i < n and text[i] == ",":
            i += 1
            continue
        if i >= n or (base_depth and text[i] == "]" and _skip_space(text, i + 1) >= n):
            return chunks
        end = _value_end(text, i, base_depth)
        chunks.append(_Chunk(i, end))
        i = end


def _value_end(text: str, start: int, base_depth: int) -> int:
    """Where the value starting at START ends (see the module doc for the recovery rule)."""
    column = start - (text.rfind("\n", 0, start) + 1)
    depth, i, n = 0, start, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'":
            i = _string_end(text, i)
            continue
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            if depth == 0:
                return i  # the array's own closing bracket, after a bare value
            depth -= 1
            if depth == 0:
                return i + 1
        elif depth == 0 and (ch == "\n" or (base_depth and ch == ",")):
            return i
        elif ch == "\n" and depth > 0:
            nxt = i + 1 + column
            if nxt < n and text[i + 1:nxt].strip() == "" and text[nxt:nxt + 1] == "{" and _fresh_line(text, i + 1, nxt):
                return i + 1  # a new document starts here; the current one never closed
        i += 1
    return n


def _fresh_line(text: str, line_start: int, brace: int) -> bool:
    return all(c in " \t" for c in text[line_start:brace])


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

def _parse_chunk(text: str, chunk: _Chunk, position: int) -> Item:
    line, column = _line_col(text, chunk.start)
    body = text[chunk.start:chunk.end]
    bad = re.search("[\udc80-\udcff]", body)
    if bad:
        offset = len(text[:chunk.start + bad.start()].encode("utf-8", "surrogateescape"))
        return _unreadable(text, position, chunk.start + bad.start(), f"invalid UTF-8 at byte offset {offset}")
    try:
        value = json.loads(body, object_pairs_hook=_strict_object)
    except (ValueError, TypeError):  # not plain JSON: the shell parser reads it or says exactly where not
        try:
            value = _ShellParser(text, chunk.start, chunk.end).document()
        except _SyntaxError as exc:
            return _unreadable(text, position, exc.at, exc.reason)
    if not isinstance(value, dict):
        return UnreadableDocument(position, line, column + 1, f"is {_json_type(value)}, not a document (object)")
    return ParsedDocument(position, line, value)


def _strict_object(pairs: list[tuple[str, Any]]) -> Any:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate field")  # json.loads would keep only the last one
    return json_util.object_hook(result, _EXTJSON)


def _unreadable(text: str, position: int, at: int, reason: str) -> UnreadableDocument:
    line, column = _line_col(text, at)
    start_line = line
    return UnreadableDocument(position, start_line, column + 1, reason)


def _line_col(text: str, at: int) -> tuple[int, int]:
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1)


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


class _SyntaxError(Exception):
    def __init__(self, at: int, reason: str) -> None:
        super().__init__(reason)
        self.at, self.reason = at, reason


_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_LITERALS = {"true": True, "false": False, "null": None, "undefined": None,
             "MinKey": {"$minKey": 1}, "MaxKey": {"$maxKey": 1}}


class _ShellParser:
    """JSON plus the mongo shell's extensions; errors carry the exact place."""

    def __init__(self, text: str, start: int, end: int) -> None:
        self.text, self.i, self.end = text, start, end

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
        last = len(self.text[:self.end].rstrip())  # just after the document's last character
        return _SyntaxError(last, f"{expected}, found the end of the document")

    def value(self) -> Any:
        ch = self.peek()
        if ch == "{":
            return self.object()
        if ch == "[":
            return self.array()
        if ch and ch in "\"'":
            return self.string()
        number = _NUMBER.match(self.text, self.i, self.end)
        if number:
            self.i = number.end()
            return json.loads(number.group())
        ident = _IDENT.match(self.text, self.i, self.end)
        if ident:
            return self.constructor(ident)
        raise self.error("expected a value")

    def object(self) -> dict[str, Any]:
        self.i += 1
        result: dict[str, Any] = {}
        if self.peek() == "}":
            self.i += 1
            return json_util.object_hook(result, _EXTJSON)
        while True:
            key_at = self.i
            if self.peek() and self.peek() in "\"'":
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
            return json_util.object_hook(result, _EXTJSON)

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

    def string(self) -> str:
        quote, start = self.text[self.i], self.i
        end = _string_end(self.text, self.i)
        if end > self.end or self.text[end - 1:end] != quote or end == start + 1:
            raise _SyntaxError(start, "unterminated string")
        raw = self.text[start + 1:end - 1]
        self.i = end
        if quote == "'":
            raw = raw.replace('\\\'', "'").replace('"', '\\"')
        try:
            return json.loads(f'"{raw}"')
        except ValueError as exc:
            raise _SyntaxError(start, f"bad string ({exc.args[0].split(':')[0]})") from None

    def constructor(self, ident: re.Match) -> Any:
        name = ident.group()
        self.i = ident.end()
        if name in _LITERALS and self.peek() != "(":
            value = _LITERALS[name]
            return json_util.object_hook(value, _EXTJSON) if isinstance(value, dict) else value
        if name == "new":
            inner = _IDENT.match(self.text, _skip(self.text, self.i), self.end)
            if not inner:
                raise _SyntaxError(self.i, "expected a constructor after 'new'")
            self.i = inner.start()
            return self.constructor(inner)
        at = ident.start()
        self.expect("(", f"'(' after {name}")
        args: list[Any] = []
        while self.peek() != ")":
            args.append(self.value())
            if self.peek() == ",":
                self.i += 1
            elif self.peek() != ")":
                self.expect(")", f"',' or ')' in {name}(...)")
        self.i += 1
        try:
            return _construct(name, args)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise _SyntaxError(at, f"{name}(...): {exc}") from None


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _construct(name: str, args: list[Any]) -> Any:
    """A shell constructor call as the BSON value it denotes."""
    if name == "ObjectId":
        return json_util.object_hook({"$oid": args[0] if args else "0" * 24}, _EXTJSON)
    if name in ("ISODate", "Date"):
        if not args:
            raise ValueError("needs a date")
        stamp = args[0]
        return json_util.object_hook({"$date": stamp if isinstance(stamp, str) else int(stamp)}, _EXTJSON)
    if name == "NumberLong":
        return json_util.object_hook({"$numberLong": str(int(args[0]))}, _EXTJSON)
    if name == "NumberInt":
        return int(args[0])
    if name == "NumberDecimal":
        return json_util.object_hook({"$numberDecimal": str(args[0])}, _EXTJSON)
    if name == "Timestamp":
        t, i = (args[0]["t"], args[0]["i"]) if isinstance(args[0], dict) else (args[0], args[1])
        return json_util.object_hook({"$timestamp": {"t": int(t), "i": int(i)}}, _EXTJSON)
    if name == "BinData":
        base64.b64decode(args[1], validate=True)
        return json_util.object_hook({"$binary": {"base64": args[1], "subType": f"{int(args[0]):02x}"}}, _EXTJSON)
    if name == "UUID":
        return json_util.object_hook({"$uuid": args[0].replace("-", "")}, _EXTJSON)
    raise ValueError(f"unknown constructor {name}")
