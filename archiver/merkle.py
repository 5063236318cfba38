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


def levels(leaf_hashes: list[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first: pairs joined, a lone last node carried up unchanged
    (which builds exactly RFC 6962's tree). Built once, it answers many audit paths in O(log n)."""
    tree = [list(leaf_hashes)]
    while len(tree[-1]) > 1:
        below = tree[-1]
        above = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            above.append(below[-1])
        tree.append(above)
    return tree


def path_from_levels(tree: list[list[bytes]], index: int) -> list[bytes]:
    """The audit path of leaf INDEX from the LEVELS of its tree (the same as `audit_path`)."""
    if not 0 <= index < len(tree[0]):
        raise IndexError(f"leaf {index} is not in a tree of {len(tree[0])}")
    path = []
    for level in tree[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
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

