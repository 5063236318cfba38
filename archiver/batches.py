"""Streams taken a bounded batch at a time (itertools.batched, which Python 3.11 lacks)."""

from __future__ import annotations

from itertools import islice
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """ITEMS in lists of SIZE (the last one shorter), read lazily: memory holds one batch."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch
