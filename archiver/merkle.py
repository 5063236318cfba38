"""Merkle trees as RFC 6962 / RFC 9162 define them (Certificate Transparency), pure functions.

leaf hash = SHA-256(0x00 || leaf), node hash = SHA-256(0x01 || left || right); the
root of n > 1 leaves splits them at k, the largest power of two below n:
MTH(D[0:n]) = node(MTH(D[0:k]), MTH(D[k:n])); the root of no leaves is SHA-256("").
The prefixes keep a leaf from ever being taken for a node (second-preimage attacks).
"""

from __future__ import annotations

import hashlib
from typing import Iterable


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(leaf_hashes: Iterable[bytes]) -> tuple[bytes, int]:
    """The root over LEAF_HASHES (streamed: memory grows with log n) and how many there were."""
    stack: list[tuple[int, bytes]] = []  # perfect subtrees, sizes strictly decreasing
    count = 0
    for digest in leaf_hashes:
        count += 1
        size, current = 1, digest
        while stack and stack[-1][0] == size:
            size, current = size * 2, node_hash(stack.pop()[1], current)
        stack.append((size, current))
    if not stack:
        return hashlib.sha256(b"").digest(), 0
    result = stack.pop()[1]
    while stack:  # RFC 6962's tree is the perfect subtrees joined from the right
        result = node_hash(stack.pop()[1], result)
    return result, count


def audit_path(leaf_hashes: list[bytes], index: int) -> list[bytes]:
    """RFC 6962 PATH(index, D[n]): the sibling hashes from the leaf up to the root."""
    if not 0 <= index < len(leaf_hashes):
        raise IndexError(f"leaf {index} is not in a tree of {len(leaf_hashes)}")
    path: list[bytes] = []
    lo, hi = 0, len(leaf_hashes)
    siblings: list[bytes] = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            siblings.append(root(leaf_hashes[lo + k:hi])[0])
            hi = lo + k
        else:
            siblings.append(root(leaf_hashes[lo:lo + k])[0])
            lo = lo + k
    path.extend(reversed(siblings))  # collected top-down; the path runs bottom-up
    return path


def root_from_path(leaf_digest: bytes, index: int, size: int, path: list[bytes]) -> bytes:
    """The root an audit PATH leads to from LEAF_DIGEST at INDEX in a tree of SIZE (RFC 9162 2.1.3.2)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    fn, sn, result = index, size - 1, leaf_digest
    for sibling in path:
        if sn == 0:
            raise ValueError("the audit path is longer than the tree is deep")
        if fn % 2 == 1 or fn == sn:
            result = node_hash(sibling, result)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ValueError("the audit path is shorter than the tree is deep")
    return result


def _split(n: int) -> int:
    """The largest power of two smaller than N (N > 1)."""
    return 1 << ((n - 1).bit_length() - 1)
