"""RFC 6962 Merkle trees: the published Certificate Transparency vectors, then properties
(every generated proof verifies, every tampering is caught) over trees of up to 320 leaves.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsec.errors import ConfigError, VerificationError
from rlsec.registry.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MemoryNodes,
    NodeReader,
    RootAccumulator,
    completed_nodes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_at,
    root_of,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

# ---------------------------------------------------------------------------- published vectors
#
# The test data of the Certificate Transparency reference implementation, as republished by
# transparency-dev/merkle (Apache-2.0): leaves, node hashes and roots from
# testonly/constants.go (LeafInputs, NodeHashes, RootHashes, EmptyRootHash); proofs from
# proof/verify_test.go (inclusionProofs, with 1-based leaf numbers there, 0-based here;
# consistencyProofs). Nothing below is computed by rlsec.

LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]

# ROOTS[n] is the MTH of the first n leaves.
ROOTS = [
    bytes.fromhex(h)
    for h in [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]

# NODE_HASHES[level][index]: every complete perfect subtree of the 8-leaf tree.
NODE_HASHES = [
    [
        bytes.fromhex(h)
        for h in [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        ]
    ],
    [
        bytes.fromhex(h)
        for h in [
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ]
    ],
    [
        bytes.fromhex(h)
        for h in [
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ]
    ],
    [bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]

# (leaf index, tree size, audit path)
INCLUSION_VECTORS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# (old size, new size, consistency proof)
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

# "abacaba..." is the arbitrary 32-byte hash transparency-dev's probes use.
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _unhex(proof: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in proof]


def _store(leaf_hashes: Sequence[bytes]) -> MemoryNodes:
    store = MemoryNodes()
    for i, h in enumerate(leaf_hashes):
        store.add(completed_nodes(i, h, store))
    return store


class CountingReader:
    """Wraps a store and counts calls and nodes read."""

    def __init__(self, inner: MemoryNodes) -> None:
        self.inner, self.calls, self.reads = inner, 0, 0

    def nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        self.calls += 1
        self.reads += len(keys)
        return self.inner.nodes(keys)


def _flip(h: bytes, at: int = 0, mask: int = 8) -> bytes:
    return h[:at] + bytes([h[at] ^ mask]) + h[at + 1 :]


CT_HASHES = [leaf_hash(x) for x in LEAVES]
CT_STORE = _store(CT_HASHES)


# ---------------------------------------------------------------------------- known answers


def test_empty_root_and_leaf_hashes_match_published() -> None:
    assert ROOTS[0] == EMPTY_ROOT
    assert NODE_HASHES[0] == CT_HASHES
    assert node_hash(NODE_HASHES[0][0], NODE_HASHES[0][1]) == NODE_HASHES[1][0]


@pytest.mark.parametrize("size", range(9))
def test_roots_match_published(size: int) -> None:
    assert root_of(CT_HASHES[:size]) == ROOTS[size]
    assert root_at(size, CT_STORE) == ROOTS[size]
    assert subtree_hash(0, size, CT_STORE) == ROOTS[size]
    acc = RootAccumulator()
    for h in CT_HASHES[:size]:
        acc.append(h)
    assert (acc.size, acc.root()) == (size, ROOTS[size])


def test_completed_nodes_store_exactly_the_published_node_hashes() -> None:
    expected = {
        (level, index): h for level, row in enumerate(NODE_HASHES) for index, h in enumerate(row)
    }
    assert len(CT_STORE) == len(expected) == 15
    assert {key: CT_STORE.node(*key) for key in CT_STORE} == expected


@pytest.mark.parametrize(("index", "size", "proof_hex"), INCLUSION_VECTORS)
def test_inclusion_proofs_match_published(index: int, size: int, proof_hex: list[str]) -> None:
    proof, root, leaf = _unhex(proof_hex), ROOTS[size], CT_HASHES[index]
    assert inclusion_proof(index, size, CT_STORE) == proof
    verify_inclusion(leaf, index, size, proof, root)

    # transparency-dev's corruptInclusionProof probes: every one must be refused.
    probes = [
        (leaf, index - 1, size, proof, root),
        (leaf, index + 1, size, proof, root),
        (leaf, index ^ 2, size, proof, root),
        (leaf, index, size * 2, proof, root),
        (leaf, index, size // 2, proof, root),
        (b"WrongLeaf", index, size, proof, root),
        (leaf_hash(b"WrongLeaf"), index, size, proof, root),
        (leaf, index, size, proof, EMPTY_ROOT),
        (leaf, index, size, proof, SOME_HASH),
        (leaf, index, size, [*proof, b""], root),
        (leaf, index, size, [*proof, root], root),
        (leaf, index, size, [b"", *proof], root),
        (leaf, index, size, [root, *proof], root),
    ]
    probes += [
        (leaf, index, size, [*proof[:i], _flip(p), *proof[i + 1 :]], root)
        for i, p in enumerate(proof)
    ]
    if proof:
        probes.append((leaf, index, size, proof[:-1], root))
    if len(proof) > 1:
        probes.append((leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root))
    for args in probes:
        with pytest.raises(VerificationError):
            verify_inclusion(*args)


@pytest.mark.parametrize(("old", "new", "proof_hex"), CONSISTENCY_VECTORS)
def test_consistency_proofs_match_published(old: int, new: int, proof_hex: list[str]) -> None:
    proof, root1, root2 = _unhex(proof_hex), ROOTS[old], ROOTS[new]
    assert consistency_proof(old, new, CT_STORE) == proof
    verify_consistency(old, new, root1, root2, proof)
    if not proof:
        return

    # transparency-dev's corruptConsistencyProof probes: every one must be refused.
    probes = [
        (old - 1, new, root1, root2, proof),
        (old + 1, new, root1, root2, proof),
        (old ^ 2, new, root1, root2, proof),
        (old, new * 2, root1, root2, proof),
        (old, new // 2, root1, root2, proof),
        (old, new, b"WrongRoot", root2, proof),
        (old, new, root1, b"WrongRoot", proof),
        (old, new, SOME_HASH, root2, proof),
        (old, new, root1, SOME_HASH, proof),
        (old, new, root2, root1, proof),
        (old, new, root1, root2, []),
        (old, new, root1, root2, [*proof, b""]),
        (old, new, root1, root2, [*proof, root1]),
        (old, new, root1, root2, [*proof, root2]),
        (old, new, root1, root2, [b"", *proof]),
        (old, new, root1, root2, [root1, *proof]),
        (old, new, root1, root2, [root2, *proof]),
        (old, new, root1, root2, [proof[0], *proof]),
        (old, new, root1, root2, proof[:-1]),
    ]
    probes += [
        (old, new, root1, root2, [*proof[:i], _flip(p, mask=16), *proof[i + 1 :]])
        for i, p in enumerate(proof)
    ]
    for args in probes:
        with pytest.raises(VerificationError):
            verify_consistency(*args)


def test_every_proof_of_the_published_tree_leads_to_a_published_root() -> None:
    for size in range(1, 9):
        for index in range(size):
            proof = inclusion_proof(index, size, CT_STORE)
            verify_inclusion(CT_HASHES[index], index, size, proof, ROOTS[size])
        for old in range(size + 1):
            proof = consistency_proof(old, size, CT_STORE)
            verify_consistency(old, size, ROOTS[old], ROOTS[size], proof)


# ---------------------------------------------------------------------------- edge cases


def test_verify_inclusion_rejects_malformed_arguments() -> None:
    h = leaf_hash(b"data")
    verify_inclusion(h, 0, 1, [], h)  # a one-entry tree: the root is the leaf hash
    for index, size in [(0, 0), (1, 0), (1, 1), (2, 1), (-1, 1)]:
        with pytest.raises(VerificationError, match=r"index must be in \[0, size\)"):
            verify_inclusion(h, index, size, [], h)
    for leaf, root in [(h, b""), (b"", h), (b"", b""), (h[:31], h[:31]), (h + b"\0", h)]:
        with pytest.raises(VerificationError, match="32-byte hash"):
            verify_inclusion(leaf, 0, 1, [], root)
    with pytest.raises(VerificationError, match="must have 0 hashes, got 1"):
        verify_inclusion(h, 0, 1, [h], h)
    proof = inclusion_proof(5, 8, CT_STORE)
    with pytest.raises(VerificationError, match=r"proof\[1\] must be a 32-byte hash"):
        verify_inclusion(CT_HASHES[5], 5, 8, [proof[0], bytearray(proof[1]), proof[2]], ROOTS[8])
    with pytest.raises(
        VerificationError, match="inclusion proof for entry 5 of 8 does not lead to the signed root"
    ):
        verify_inclusion(CT_HASHES[4], 5, 8, proof, ROOTS[8])


def test_verify_consistency_edge_cases() -> None:
    r1, r2 = ROOTS[1], ROOTS[2]
    # Trivially consistent: from the empty tree, or to the same size with the same root.
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    verify_consistency(1, 1, r1, r1, [])
    verify_consistency(8, 8, ROOTS[8], ROOTS[8], [])
    refused = [
        (0, 0, EMPTY_ROOT, r1, []),  # same size, different roots
        (1, 1, r1, r2, []),
        (0, 1, r1, r1, []),  # the empty tree's root is fixed
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),  # nothing to prove, yet a proof
        (0, 1, EMPTY_ROOT, r1, [EMPTY_ROOT]),
        (1, 1, r1, r1, [EMPTY_ROOT]),
        (1, 0, r1, EMPTY_ROOT, []),  # time travel
        (2, 1, r2, r1, []),
        (-1, 1, r1, r1, []),
        (1, 2, r1, r2, []),  # a proof is needed
        (1, 2, r1[:16], r2, [CT_HASHES[1]]),
        (1, 2, r1, r2, [CT_HASHES[1][:31]]),
    ]
    for args in refused:
        with pytest.raises(VerificationError):
            verify_consistency(*args)
    verify_consistency(1, 2, r1, r2, [CT_HASHES[1]])
    with pytest.raises(VerificationError, match="from size 6 to 8 does not reproduce the old"):
        verify_consistency(6, 8, ROOTS[5], ROOTS[8], consistency_proof(6, 8, CT_STORE))
    with pytest.raises(VerificationError, match="from size 6 to 8 does not lead to the new"):
        verify_consistency(6, 8, ROOTS[6], ROOTS[7], consistency_proof(6, 8, CT_STORE))


def test_generators_reject_bad_ranges() -> None:
    for index, size in [(0, 0), (8, 8), (-1, 8)]:
        with pytest.raises(ConfigError):
            inclusion_proof(index, size, CT_STORE)
    for old, new in [(2, 1), (-1, 3)]:
        with pytest.raises(ConfigError):
            consistency_proof(old, new, CT_STORE)
    assert consistency_proof(0, 8, CT_STORE) == consistency_proof(8, 8, CT_STORE) == []
    for start, end in [(3, 2), (-1, 2)]:
        with pytest.raises(ConfigError):
            subtree_hash(start, end, CT_STORE)
    assert subtree_hash(5, 5, CT_STORE) == EMPTY_ROOT
    with pytest.raises(ConfigError):
        root_at(-1, CT_STORE)
    with pytest.raises(LookupError):  # past the stored tree
        root_at(9, CT_STORE)
    with pytest.raises(ConfigError):
        completed_nodes(-1, CT_HASHES[0], CT_STORE)


def test_hash_inputs_must_be_32_bytes() -> None:
    h = CT_HASHES[0]
    for bad in [b"", h[:31], h + b"\0"]:
        with pytest.raises(ConfigError, match="32-byte hash"):
            node_hash(h, bad)
        with pytest.raises(ConfigError, match="32-byte hash"):
            node_hash(bad, h)
        with pytest.raises(ConfigError, match="32-byte hash"):
            root_of([h, bad])
        with pytest.raises(ConfigError, match="32-byte hash"):
            RootAccumulator().append(bad)
        with pytest.raises(ConfigError, match="32-byte hash"):
            completed_nodes(0, bad, MemoryNodes())
        with pytest.raises(ConfigError, match="32-byte hash"):
            MemoryNodes().add([(0, 0, bad)])


def test_memory_nodes_are_append_only() -> None:
    store = _store(CT_HASHES[:3])
    assert isinstance(store, NodeReader)
    store.add([(0, 1, CT_HASHES[1])])  # storing the same hash again is harmless
    with pytest.raises(VerificationError, match=r"node \(0, 1\) is stored as"):
        store.add([(0, 1, CT_HASHES[2])])
    with pytest.raises(ConfigError):
        store.add([(-1, 0, CT_HASHES[0])])
    with pytest.raises(KeyError, match=r"node \(1, 1\) is not stored"):
        store.node(1, 1)
    assert store.nodes([(1, 0), (0, 2)]) == [NODE_HASHES[1][0], CT_HASHES[2]]


def test_a_misbehaving_reader_is_refused() -> None:
    class Short:
        def nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
            return CT_STORE.nodes(keys)[:-1]

    class Malformed:
        def nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
            return [h[:16] for h in CT_STORE.nodes(keys)]

    with pytest.raises(VerificationError, match="returned 1 hashes for 2 requested"):
        root_at(6, Short())
    with pytest.raises(VerificationError, match="malformed hash"):
        inclusion_proof(3, 8, Malformed())


# ---------------------------------------------------------------------------- properties

N_MAX = 320
HASHES = [leaf_hash(b"rlsec-audit-entry-%d" % i) for i in range(N_MAX)]
STORE = _store(HASHES)  # holds the nodes of every tree of up to N_MAX leaves (its prefixes)


@cache
def _root(size: int) -> bytes:
    return root_of(HASHES[:size])  # the reference, independent of the store


sizes = st.integers(1, N_MAX)


def test_store_size_and_reads_stay_logarithmic() -> None:
    store = MemoryNodes()
    for n, h in enumerate(HASHES, start=1):
        new = completed_nodes(n - 1, h, store)
        assert len(new) == 1 + (n & -n).bit_length() - 1  # one per trailing zero of n
        store.add(new)
        assert len(store) < 2 * n
    assert len(store) == 2 * N_MAX - N_MAX.bit_count()
    for size in range(1, N_MAX + 1):
        reader = CountingReader(STORE)
        assert root_at(size, reader) == _root(size)
        assert (reader.calls, reader.reads) == (1, size.bit_count())
        bound = 2 * size.bit_length()
        for index in {0, size // 2, size - 1}:
            reader = CountingReader(STORE)
            inclusion_proof(index, size, reader)
            assert reader.calls <= 1 and reader.reads <= bound
        for old in {1, size // 2, size - 1}:
            reader = CountingReader(STORE)
            consistency_proof(old, size, reader)
            assert reader.calls <= 1 and reader.reads <= bound


def test_every_small_tree_every_proof_verifies_in_one_logarithmic_read() -> None:
    for size in range(1, 65):
        bound = 2 * size.bit_length()
        for index in range(size):
            reader = CountingReader(STORE)
            proof = inclusion_proof(index, size, reader)
            assert reader.calls <= 1 and reader.reads <= bound
            verify_inclusion(HASHES[index], index, size, proof, _root(size))
        for old in range(size + 1):
            reader = CountingReader(STORE)
            proof = consistency_proof(old, size, reader)
            assert reader.calls <= 1 and reader.reads <= bound
            verify_consistency(old, size, _root(old), _root(size), proof)


@settings(max_examples=25, deadline=None)
@given(size=sizes)
def test_every_index_and_old_size_verifies(size: int) -> None:
    root = _root(size)
    for index in range(size):
        proof = inclusion_proof(index, size, STORE)
        verify_inclusion(HASHES[index], index, size, proof, root)
    for old in range(size + 1):
        verify_consistency(old, size, _root(old), root, consistency_proof(old, size, STORE))


@settings(max_examples=100, deadline=None)
@given(size=sizes)
def test_accumulator_and_store_agree_with_the_reference(size: int) -> None:
    acc = RootAccumulator()
    for h in HASHES[:size]:
        acc.append(h)
    assert acc.size == size
    assert acc.root() == root_at(size, STORE) == _root(size)
    assert len(acc._peaks) == size.bit_count()  # O(log n) memory


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_subtree_hash_of_any_range_is_the_mth_of_that_slice(data: st.DataObject) -> None:
    end = data.draw(st.integers(0, N_MAX))
    start = data.draw(st.integers(0, end))
    assert subtree_hash(start, end, STORE) == root_of(HASHES[start:end])


@st.composite
def _tampered_inclusion(draw: st.DrawFn) -> tuple[bytes, int, int, list[bytes], bytes]:
    size = draw(sizes)
    index = draw(st.integers(0, size - 1))
    leaf, proof, root = HASHES[index], inclusion_proof(index, size, STORE), _root(size)
    kind = draw(st.sampled_from(["proof", "leaf", "root", "index", "size", "cut", "extend"]))
    if kind == "proof" and not proof:
        kind = "leaf"
    at, mask = draw(st.integers(0, HASH_SIZE - 1)), draw(st.integers(1, 255))
    if kind == "proof":
        i = draw(st.integers(0, len(proof) - 1))
        proof[i] = _flip(proof[i], at, mask)
    elif kind == "leaf":
        leaf = _flip(leaf, at, mask)
    elif kind == "root":
        root = _flip(root, at, mask)
    elif kind == "index":
        index = draw(st.integers(-1, size).filter(lambda i: i != index))
    elif kind == "size":
        # The proof against the signed root of another size (an honest log signs the size
        # with the root; with the *same* root a proof can fit two shapes, e.g. PATH(0, 3) and
        # PATH(0, 4) are both two hashes, so the size must be checked with the root).
        size = draw(st.integers(0, N_MAX).filter(lambda n: n != size))
        root = _root(size)
    elif kind == "cut":
        if not proof:
            proof = [SOME_HASH]
        else:
            i = draw(st.integers(0, len(proof) - 1))
            del proof[i]
    else:
        proof.insert(draw(st.integers(0, len(proof))), draw(st.sampled_from([*HASHES, root])))
    return leaf, index, size, proof, root


@settings(max_examples=300, deadline=None)
@given(args=_tampered_inclusion())
def test_any_tampered_inclusion_check_is_refused(
    args: tuple[bytes, int, int, list[bytes], bytes],
) -> None:
    with pytest.raises(VerificationError):
        verify_inclusion(*args)


@st.composite
def _tampered_consistency(draw: st.DrawFn) -> tuple[int, int, bytes, bytes, list[bytes]]:
    new = draw(st.integers(2, N_MAX))
    old = draw(st.integers(1, new - 1))
    proof, root1, root2 = consistency_proof(old, new, STORE), _root(old), _root(new)
    kind = draw(st.sampled_from(["proof", "old_root", "new_root", "old", "new", "cut", "extend"]))
    at, mask = draw(st.integers(0, HASH_SIZE - 1)), draw(st.integers(1, 255))
    if kind == "proof":
        i = draw(st.integers(0, len(proof) - 1))
        proof[i] = _flip(proof[i], at, mask)
    elif kind == "old_root":
        root1 = _flip(root1, at, mask)
    elif kind == "new_root":
        root2 = _flip(root2, at, mask)
    elif kind == "old":  # claimed with the signed root of that size (see above)
        old = draw(st.integers(0, new - 1).filter(lambda m: m != old))
        root1 = _root(old)
    elif kind == "new":
        new = draw(st.integers(old + 1, N_MAX).filter(lambda n: n != new))
        root2 = _root(new)
    elif kind == "cut":
        del proof[draw(st.integers(0, len(proof) - 1))]
    else:
        proof.insert(draw(st.integers(0, len(proof))), draw(st.sampled_from([*HASHES, root1])))
    return old, new, root1, root2, proof


@settings(max_examples=300, deadline=None)
@given(args=_tampered_consistency())
def test_any_tampered_consistency_check_is_refused(
    args: tuple[int, int, bytes, bytes, list[bytes]],
) -> None:
    with pytest.raises(VerificationError):
        verify_consistency(*args)
