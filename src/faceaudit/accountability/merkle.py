"""The search log as a Merkle tree (RFC 9162, Certificate Transparency v2, section 2.1).

The hash chain proves the order of the whole log; the tree adds short proofs. Leaf ``i`` is
the ``hash`` of record ``i + 1`` (which commits to the record); leaf hash = SHA-256(0x00 || 32
bytes), node hash = SHA-256(0x01 || left || right), and a tree of n > 1 leaves splits at the
largest power of two below n. A signed checkpoint carries the tree's root over records 1..seq,
so that, without the log:

* an **inclusion proof** (about log2(n) hashes) shows that one record is in the log a kept
  checkpoint covers -- e.g. to someone told that a search about them was made;
* a **consistency proof** shows that a later checkpoint's log extends an earlier one's,
  record for record: nothing before it was changed, dropped or reordered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "consistency_proof",
    "frontier_push",
    "frontier_root",
    "inclusion_proof",
    "leaf_hash",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(record_hash_hex: str) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(record_hash_hex)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_root(leaves: Sequence[bytes]) -> bytes:
    """MTH of the leaf hashes."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(tree_root(leaves[:k]), tree_root(leaves[k:]))


def frontier_push(frontier: list[tuple[int, bytes]], leaf: bytes) -> None:
    """Add a leaf to the compact form of a tree: its perfect subtrees, largest first."""
    frontier.append((1, leaf))
    while len(frontier) >= 2 and frontier[-1][0] == frontier[-2][0]:
        size, right = frontier.pop()
        _, left = frontier.pop()
        frontier.append((2 * size, _node(left, right)))


def frontier_root(frontier: Sequence[tuple[int, bytes]]) -> bytes:
    """The root of the tree whose compact form this is (equal to tree_root of its leaves)."""
    if not frontier:
        return EMPTY_ROOT
    root = frontier[-1][1]
    for _, subtree in reversed(frontier[:-1]):
        root = _node(subtree, root)
    return root


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, leaves): the audit path of leaf ``index`` (0-based) in the tree of ``leaves``."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of {len(leaves)}")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return inclusion_proof(leaves[:k], index) + [tree_root(leaves[k:])]
    return inclusion_proof(leaves[k:], index - k) + [tree_root(leaves[:k])]


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does ``proof`` put ``leaf`` at ``index`` of the tree of ``size`` with ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def consistency_proof(leaves: Sequence[bytes], m: int) -> list[bytes]:
    """PROOF(m, leaves): that the tree of the first ``m`` leaves is a prefix of the tree of all."""
    if not 0 < m <= len(leaves):
        raise ValueError(f"no consistency proof from {m} to {len(leaves)} leaves")
    return _subproof(leaves, m, True)


def _subproof(leaves: Sequence[bytes], m: int, whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [tree_root(leaves)]
    k = _split(n)
    if m <= k:
        return _subproof(leaves[:k], m, whole) + [tree_root(leaves[k:])]
    return _subproof(leaves[k:], m - k, False) + [tree_root(leaves[:k])]


def verify_consistency(m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2: does ``proof`` show the tree of size ``m`` (root_m) is a prefix of size ``n``?"""
    if not 0 < m <= n:
        return False
    if m == n:
        return not proof and root_m == root_n
    if not proof:
        return False
    path = list(proof)
    if m & (m - 1) == 0:  # m a power of two: the old root is the first node of the path
        path.insert(0, root_m)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = _node(c, fr), _node(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = _node(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == root_m and sr == root_n
