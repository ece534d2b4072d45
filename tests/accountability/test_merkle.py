"""The Merkle tree of the search log (RFC 9162): proofs that verify, and altered ones that do not."""

from __future__ import annotations

import hashlib

import pytest

from faceaudit.accountability.merkle import (
    consistency_proof,
    frontier_push,
    frontier_root,
    inclusion_proof,
    leaf_hash,
    tree_root,
    verify_consistency,
    verify_inclusion,
)


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(hashlib.sha256(str(i).encode()).hexdigest()) for i in range(n)]


def test_the_root_follows_rfc_9162_for_three_leaves():
    a, b, c = _leaves(3)
    node = lambda x, y: hashlib.sha256(b"\x01" + x + y).digest()  # noqa: E731
    assert tree_root([a, b, c]) == node(node(a, b), c)
    assert tree_root([]) == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("n", range(1, 34))
def test_the_compact_frontier_gives_the_same_root(n):
    frontier: list = []
    for leaf in _leaves(n):
        frontier_push(frontier, leaf)
    assert frontier_root(frontier) == tree_root(_leaves(n))
    assert len(frontier) == bin(n).count("1")


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 9, 16, 17, 31])
def test_every_inclusion_proof_verifies_and_no_altered_one_does(n):
    leaves = _leaves(n)
    root = tree_root(leaves)
    for index in range(n):
        proof = inclusion_proof(leaves, index)
        assert verify_inclusion(leaves[index], index, n, proof, root)
        assert not verify_inclusion(leaves[(index + 1) % n], index, n, proof, root) or n == 1
        if proof:
            bent = [bytes(32)] + proof[1:]
            assert not verify_inclusion(leaves[index], index, n, bent, root)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 9, 13, 16, 21])
def test_every_consistency_proof_verifies_and_a_changed_prefix_does_not(n):
    leaves = _leaves(n)
    for m in range(1, n + 1):
        proof = consistency_proof(leaves, m)
        old_root = tree_root(leaves[:m])
        assert verify_consistency(m, n, old_root, tree_root(leaves), proof)
        changed = list(leaves)
        changed[0] = leaf_hash("ff" * 32)  # the first record rewritten: the new tree no longer extends the old
        if m < n:
            assert not verify_consistency(m, n, old_root, tree_root(changed), consistency_proof(changed, m))
            assert not verify_consistency(m, n, tree_root(changed[:m]), tree_root(leaves), proof)
