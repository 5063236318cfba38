"""Whether a source document, as MongoDB returned it, survives the driver's decoding and the record's JSON.

The record (and its source digest) is written from the decoded values. Some BSON has no exact decoded form:
a field written twice (only the last value is kept), undefined (None), a symbol (str), a DBPointer (a DBRef),
a DBRef with its fields in another order or a null $db (dropped), regular expression options out of order or
unknown, an array whose keys are not 0, 1, ...; and some decoded values have no exact Extended JSON form: a NaN
double with a sign or payload, a Decimal128 NaN with a sign or payload, sNaN, or a non-canonical coefficient.
Archived, each would be another document, with that document's digest. `read` finds them (C-level decode,
encode and compare, and a call per double); `loss` says where and why, to quarantine the chat. A document
with invalid UTF-8 is the record's to refuse (naming its place), whatever else it holds. Neither raises
anything but a BSONError on a document's bytes, which the source takes as that one document's.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import bson
from bson.codec_options import TypeDecoder, TypeRegistry
from bson.decimal128 import Decimal128
from bson.errors import InvalidBSON
from bson.raw_bson import RawBSONDocument

from archiver.mongo import TOLERANT

_T = TypeVar("_T")
_NAN = struct.pack("<d", float("nan"))
# Bytes after an element's name, by type: fixed sizes, else from the int32 that starts the value.
_FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16,
          0x7F: 0, 0xFF: 0}
_NO_LOSSLESS_FORM = {0x06: "BSON undefined (type 0x06) has no lossless form (it reads as null)",
                     0x0C: "BSON DBPointer (type 0x0c) has no lossless form (it reads as a DBRef)",
                     0x0E: "BSON symbol (type 0x0e) has no lossless form (it reads as a string)"}


class _Inexact(ValueError):
    """A number whose Extended JSON form is another number."""


class _NanDecoder(TypeDecoder):
    bson_type = float

    def transform_bson(self, value: float) -> float:
        if value != value and struct.pack("<d", value) != _NAN:
            raise _Inexact(value)
        return value


class _DecimalDecoder(TypeDecoder):
    bson_type = Decimal128

    def transform_bson(self, value: Decimal128) -> Decimal128:
        if Decimal128(str(value)).bid != value.bid:  # str: as the record writes it
            raise _Inexact(value)
        return value


# TOLERANT, refusing (at C speed but for a call per double) the numbers the record would write as others.
_CHECKED = TOLERANT.with_options(type_registry=TypeRegistry([_NanDecoder(), _DecimalDecoder()]))


def _as_bson_error(check: Callable[..., _T]) -> Callable[..., _T]:
    """CHECK raising whatever else bson (or this module) raises on odd bytes as InvalidBSON: the source takes
    that as one document's (its room quarantined, load_many), where another error would end the pass."""
    @functools.wraps(check)
    def checked(*args: Any) -> _T:
        try:
            return check(*args)
        except (ValueError, TypeError, LookupError, ArithmeticError, RecursionError) as exc:
            raise InvalidBSON(f"{type(exc).__name__}: {exc}") from exc

    return checked


@_as_bson_error
def read(doc: Mapping[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    """DOC (a RawBSONDocument: the server's bytes) decoded as the archiver reads the source, and those bytes if
    the decoded document does not hold them exactly (else None; see `loss`). The stand-in's documents are
    values already, with no bytes to compare: as they are."""
    if not isinstance(doc, RawBSONDocument):
        return doc, None  # type: ignore[return-value]
    raw = doc.raw
    try:
        value, inexact = bson.decode(raw, _CHECKED), False
    except (_Inexact, InvalidBSON):  # a NaN with a payload, say (or undecodable: raised again here)
        value, inexact = bson.decode(raw, TOLERANT), True
    try:
        # Wrapped: encode puts a top-level _id first, where the record keeps the order given.
        again = bson.encode({"": value}, codec_options=TOLERANT)
    except UnicodeEncodeError:  # invalid UTF-8 (lone surrogates): the record refuses it, naming its place,
        return value, None      # whatever else the document holds (`loss` could not encode it either)
    return value, (raw if inexact or again[6:-1] != raw else None)


@_as_bson_error
def loss(raw: bytes, where: str) -> str:
    """Where (the path from WHERE) and why the BSON document RAW cannot be archived exactly as it is."""
    again = bson.encode({"": bson.decode(raw, TOLERANT)}, codec_options=TOLERANT)[6:-1]
    return _first_loss(raw, again, where) or f"{where}: it reads back as other BSON"


def _first_loss(raw: bytes, again: bytes, path: str, array: bool = False) -> str:
    """The first place in RAW that AGAIN (RAW decoded and encoded again) does not hold, or whose value has no
    exact JSON form, with why; "" if none."""
    given, back = _elements(raw), _elements(again)
    names = [name for _, name, _ in given]
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        return f"{_at(path, twice)}: the field appears twice in one document; only its last value is read"
    if array and names != [str(i) for i in range(len(names))]:
        return f"{path}: an array whose index keys ({', '.join(names[:5])}) are not 0, 1, 2, ...; it reads renumbered"
    names_back = [name for _, name, _ in back]
    if names != names_back:
        if "$ref" in names and "$db" in names and "$db" not in names_back:
            return f"{_at(path, '$db')}: a DBRef's $db that is null; the driver drops it (the DBRef reads without it)"
        if "$ref" in names:
            return (f"{path}: a DBRef whose fields are not in the order $ref, $id, $db, then the others reads "
                    f"reordered (its fields: {', '.join(names[:5])})")
        return f"{path}: its fields read in another order ({', '.join(names[:5])})"
    for (kind, name, value), (kind_back, _, value_back) in zip(given, back):
        where = _at(path, name)
        if kind != kind_back:
            return f"{where}: {_NO_LOSSLESS_FORM.get(kind, f'BSON type 0x{kind:02x} reads as type 0x{kind_back:02x}')}"
        if kind in (0x03, 0x04):
            found = _first_loss(value, value_back, where, kind == 0x04)
        elif kind == 0x0F:  # code with scope: int32, the code (a string), the scope (a document)
            found = _first_loss(value[8 + _int32(value, 4):], value_back[8 + _int32(value_back, 4):], f"{where}.$scope")
        else:
            found = _scalar_loss(kind, value, value_back, where)
        if found:
            return found
    return ""


def _scalar_loss(kind: int, value: bytes, value_back: bytes, where: str) -> str:
    if kind == 0x0B and value != value_back:
        pattern_end = value.index(b"\0") + 1
        options, options_back = (v[v.index(b"\0") + 1:-1].decode("ascii", "backslashreplace")
                                 for v in (value, value_back))
        if value[:pattern_end] == value_back[:pattern_end]:
            return f"{where}: regular expression options {options!r} read as {options_back!r}"
    if kind == 0x01 and value != _NAN and math.isnan(struct.unpack("<d", value)[0]):
        return f"{where}: a double NaN with a sign or payload (bytes {value.hex()}) reads as the plain NaN"
    if kind == 0x13:
        number = Decimal128.from_bid(value)
        if Decimal128(str(number)).bid != value:
            return (f"{where}: the Decimal128 with bytes {value.hex()} (a NaN with a sign or payload, or a "
                    f"coefficient of more than 34 digits) reads as {number}")
    if value != value_back:
        return f"{where}: BSON type 0x{kind:02x} reads back as other bytes"
    return ""


def _elements(doc: bytes) -> list[tuple[int, str, bytes]]:
    """(type, name, value bytes) of each element of the BSON document DOC, in order, a repeated name and all."""
    found, at, end = [], 4, len(doc) - 1
    while at < end:
        kind = doc[at]
        name_end = doc.index(b"\0", at + 1)
        start = name_end + 1
        size = _size(kind, doc, start)
        found.append((kind, doc[at + 1:name_end].decode("utf-8", "backslashreplace"), doc[start:start + size]))
        at = start + size
    return found


def _size(kind: int, doc: bytes, at: int) -> int:
    if kind in _FIXED:
        return _FIXED[kind]
    if kind == 0x0B:  # two C strings
        return doc.index(b"\0", doc.index(b"\0", at) + 1) + 1 - at
    length = _int32(doc, at)
    return {0x02: 4 + length, 0x0D: 4 + length, 0x0E: 4 + length, 0x05: 5 + length, 0x0C: 4 + length + 12}.get(
        kind, length)  # documents, arrays, code with scope: the int32 counts itself


def _int32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 4], "little", signed=True)


def _at(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
