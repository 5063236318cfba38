"""The Merkle tree is RFC 6962's: Certificate Transparency's test vectors, and paths against the RFC's own recursion."""

from __future__ import annotations

import hashlib

import pytest

from archiver import merkle

# The leaves and roots of the reference implementation's tests (certificate-transparency, merkle tree tests).
LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43", bytes(range(0x50, 0x58)),
          bytes(range(0x60, 0x70))]
ROOTS = {1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
         2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
         3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
         8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"}


def _mth(leaves: list[bytes]) -> bytes:  # RFC 6962 section 2.1, as written
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def _path(m: int, leaves: list[bytes]) -> list[bytes]:  # RFC 6962 section 2.1.1, as written
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return _path(m, leaves[:k]) + [_mth(leaves[k:])]
    return _path(m - k, leaves[k:]) + [_mth(leaves[:k])]


@pytest.mark.parametrize("size", sorted(ROOTS))
def test_roots_are_certificate_transparencys(size: int) -> None:
    digest, count = merkle.root(merkle.leaf_hash(leaf) for leaf in LEAVES[:size])
    assert digest.hex() == ROOTS[size] and count == size
    assert merkle.levels([merkle.leaf_hash(leaf) for leaf in LEAVES[:size]])[-1][0].hex() == ROOTS[size]


def test_the_empty_tree() -> None:
    assert merkle.root([]) == (hashlib.sha256(b"").digest(), 0)


def test_every_audit_path_is_the_rfcs_and_leads_to_the_root() -> None:
    for size in range(1, 40):
        leaves = [bytes([i, size]) for i in range(size)]
        hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
        tree = merkle.levels(hashes)
        assert merkle.root(hashes)[0] == _mth(leaves) == tree[-1][0]
        for m in range(size):
            path = merkle.path_from_levels(tree, m)
            assert path == _path(m, leaves)
            assert merkle.root_from_path(hashes[m], m, size, path) == _mth(leaves)


def test_a_wrong_path_leads_elsewhere_or_is_refused() -> None:
    hashes = [merkle.leaf_hash(bytes([i])) for i in range(7)]
    tree = merkle.levels(hashes)
    path = merkle.path_from_levels(tree, 3)
    assert merkle.root_from_path(hashes[4], 3, 7, path) != tree[-1][0]  # another leaf
    assert merkle.root_from_path(hashes[3], 2, 7, path) != tree[-1][0]  # another position
    with pytest.raises(ValueError, match="shorter"):
        merkle.root_from_path(hashes[3], 3, 7, path[:-1])
    with pytest.raises(ValueError, match="longer"):
        merkle.root_from_path(hashes[3], 3, 7, path + [hashes[0]])
    with pytest.raises(ValueError, match="not in a tree"):
        merkle.root_from_path(hashes[3], 7, 7, path)
    # a leaf can never pass for a node: the 0x00 / 0x01 prefixes differ
    assert merkle.leaf_hash(hashes[0] + hashes[1]) != merkle.node_hash(hashes[0], hashes[1])
