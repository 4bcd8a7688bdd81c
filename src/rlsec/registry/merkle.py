"""RFC 6962 Merkle tree hashing, with inclusion and consistency proofs, for the audit log.

The log's entries are the leaves of one Merkle tree, hashed as Certificate Transparency
hashes them (RFC 6962 section 2.1, unchanged in RFC 9162), with SHA-256:

* leaf hash: ``SHA-256(0x00 || data)``; node hash: ``SHA-256(0x01 || left || right)``. The
  two prefixes keep a leaf from ever being mistaken for an inner node (second-preimage
  resistance).
* MTH (Merkle Tree Hash) of ``n`` leaves: ``SHA-256(b"")`` for ``n = 0``, the leaf hash for
  ``n = 1``, else ``node_hash(MTH(D[0:k]), MTH(D[k:n]))`` where ``k`` is the largest power of
  two *strictly* smaller than ``n``. The left part is thus always a perfect subtree.

Proofs are exactly RFC 6962's PATH (section 2.1.1, an audit or inclusion proof, deepest
sibling first) and PROOF (section 2.1.2, a consistency proof), so they check with any other
CT implementation. The verifiers are the iterative algorithms of RFC 9162 sections 2.1.3.2
and 2.1.4.2, written independently of the generators so that a bug in one shows up in the
other. They return ``None`` or raise :class:`~rlsec.errors.VerificationError`, including for
malformed arguments (an index past the tree, a shrinking tree, a proof of the wrong length, a
hash that is not 32 bytes): they never pass by default.

Storage. A log keeps, for every *complete perfect* subtree, its hash keyed by
``(level, index)``: level ``k`` index ``i`` covers leaves ``[i * 2**k, (i + 1) * 2**k)``,
level 0 holds the leaf hashes. :func:`completed_nodes` returns the nodes one append
completes (amortised two, always fewer than ``2n`` in all), and every hash the log ever needs
(a root at any past size, any proof) combines ``O(log n)`` of them, which the functions here
fetch in *one* batched :meth:`NodeReader.nodes` call, one SQL query for a database backend.
:class:`RootAccumulator` recomputes a root in one streaming pass with ``O(log n)`` memory.

Example:
    >>> entries = [b"create", b"sign", b"approve", b"deploy", b"revoke"]
    >>> store, acc = MemoryNodes(), RootAccumulator()
    >>> for i, entry in enumerate(entries):
    ...     store.add(completed_nodes(i, leaf_hash(entry), store))
    ...     acc.append(leaf_hash(entry))
    >>> root = root_at(5, store)
    >>> root == acc.root() == root_of([leaf_hash(e) for e in entries])
    True
    >>> proof = inclusion_proof(3, 5, store)
    >>> verify_inclusion(leaf_hash(b"deploy"), 3, 5, proof, root)  # None: it verifies
    >>> try:
    ...     verify_inclusion(leaf_hash(b"undeploy"), 3, 5, proof, root)
    ... except VerificationError as e:
    ...     print(e)
    inclusion proof for entry 3 of 5 does not lead to the signed root
    >>> old = root_at(2, store)
    >>> verify_consistency(2, 5, old, root, consistency_proof(2, 5, store))
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, TypeAlias, runtime_checkable

from rlsec.errors import ConfigError, VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MemoryNodes",
    "NodeReader",
    "RootAccumulator",
    "completed_nodes",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_at",
    "root_of",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Bytes in every hash of the tree (SHA-256)."""

EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()
"""MTH of the empty tree, ``SHA-256(b"")``."""

_Key: TypeAlias = tuple[int, int]  # (level, index) of a perfect subtree
_Node: TypeAlias = tuple[int, int, bytes]  # (level, index, hash)

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


# ---------------------------------------------------------------------------- hashing


def leaf_hash(data: bytes) -> bytes:
    """The RFC 6962 hash of one log entry: ``SHA-256(0x00 || data)``.

    Example:
        >>> leaf_hash(b"").hex()[:16]
        '6e340b9cffb37a98'
    """
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 6962 hash of an inner node: ``SHA-256(0x01 || left || right)``.

    Raises:
        ConfigError: if either child is not a 32-byte hash.
    """
    _check_hash(left, "left child")
    _check_hash(right, "right child")
    return _node(left, right)


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _check_hash(h: bytes, what: str) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        got = f"{len(h)} bytes" if isinstance(h, bytes) else type(h).__name__
        raise ConfigError(f"{what} must be a {HASH_SIZE}-byte hash, got {got}")


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The MTH of a list of leaf hashes, straight from RFC 6962's recursive definition.

    The reference the faster paths are tested against; it hashes every node, ``O(n)``.

    Raises:
        ConfigError: if a leaf hash is not 32 bytes.
    """
    for i, h in enumerate(leaf_hashes):
        _check_hash(h, f"leaf hash {i}")

    def mth(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaf_hashes[lo]
        k = _split(hi - lo)
        return _node(mth(lo, lo + k), mth(lo + k, hi))

    return mth(0, len(leaf_hashes)) if leaf_hashes else EMPTY_ROOT


# ---------------------------------------------------------------------------- node store


@runtime_checkable
class NodeReader(Protocol):
    """Read access to the stored hashes of complete perfect subtrees.

    Key ``(level, index)`` is the subtree over leaves ``[index * 2**level,
    (index + 1) * 2**level)``; level 0 holds the leaf hashes. Every function here asks for
    all the nodes it needs in one call, ``O(log n)`` keys, so a SQL backend answers it with
    one ``SELECT ... WHERE (level, idx) IN (...)``.
    """

    def nodes(self, keys: Sequence[tuple[int, int]]) -> Sequence[bytes]:
        """The hashes of ``keys``, in the same order.

        Raises:
            LookupError: (e.g. ``KeyError``) if a node is not stored.
        """
        ...


class MemoryNodes:
    """A dict-backed :class:`NodeReader`, append-only, for tests and in-memory logs.

    Example:
        >>> store = MemoryNodes()
        >>> for i in range(3):
        ...     store.add(completed_nodes(i, leaf_hash(bytes([i])), store))
        >>> len(store), sorted(store)  # three leaves and the node over the first two
        (4, [(0, 0), (0, 1), (0, 2), (1, 0)])
    """

    def __init__(self) -> None:
        self._hashes: dict[_Key, bytes] = {}

    def add(self, nodes: Iterable[tuple[int, int, bytes]]) -> None:
        """Store ``(level, index, hash)`` triples, e.g. what :func:`completed_nodes` returns.

        Storing a node again with the same hash does nothing.

        Raises:
            ConfigError: if a key is negative or a hash is not 32 bytes.
            VerificationError: if a node is already stored with a different hash (the store
                is append-only; a rewrite is tampering).
        """
        for level, index, h in nodes:
            if level < 0 or index < 0:
                raise ConfigError(f"node keys are non-negative, got ({level}, {index})")
            _check_hash(h, f"node ({level}, {index})")
            old = self._hashes.setdefault((level, index), h)
            if old != h:
                raise VerificationError(
                    f"node ({level}, {index}) is stored as {old.hex()}; refusing to rewrite it "
                    f"as {h.hex()}"
                )

    def node(self, level: int, index: int) -> bytes:
        """The hash of one node.

        Raises:
            KeyError: if it is not stored.
        """
        try:
            return self._hashes[level, index]
        except KeyError:
            raise KeyError(f"node ({level}, {index}) is not stored") from None

    def nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        """The hashes of ``keys``, in order (see :class:`NodeReader`)."""
        return [self.node(level, index) for level, index in keys]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Every stored key, in insertion order."""
        return iter(self._hashes)

    def __len__(self) -> int:
        return len(self._hashes)


def _fetch(reader: NodeReader, keys: Sequence[_Key]) -> dict[_Key, bytes]:
    """One batched read of ``keys`` (deduplicated), checked for shape."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    got = list(reader.nodes(wanted))
    if len(got) != len(wanted):
        raise VerificationError(
            f"the node store returned {len(got)} hashes for {len(wanted)} requested nodes"
        )
    for (level, index), h in zip(wanted, got, strict=True):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise VerificationError(
                f"the node store returned a malformed hash for node ({level}, {index}): "
                f"expected {HASH_SIZE} bytes, got {h!r:.80}"
            )
    return dict(zip(wanted, got, strict=True))


def completed_nodes(index: int, leaf: bytes, reader: NodeReader) -> list[tuple[int, int, bytes]]:
    """The perfect-subtree nodes that appending ``leaf`` at position ``index`` completes.

    Always ``(0, index, leaf)``, then one parent per trailing one bit of ``index`` (when
    ``index + 1`` is a multiple of ``2**k`` the level-``k`` subtree ending at the new leaf is
    complete). The left siblings are read from ``reader`` in one call; the tree must hold
    exactly ``index`` leaves before the append. Amortised over ``n`` appends this is fewer
    than two nodes each.

    Args:
        index: the new leaf's position, i.e. the tree size before the append.
        leaf: its leaf hash (:func:`leaf_hash` of the entry).
        reader: the store holding the nodes of the first ``index`` leaves.

    Returns:
        ``(level, index, hash)`` triples, bottom-up.

    Raises:
        ConfigError: if ``index`` is negative or ``leaf`` is not a 32-byte hash.

    Example:
        >>> store = MemoryNodes()
        >>> for i in range(3):
        ...     store.add(completed_nodes(i, leaf_hash(bytes([i])), store))
        >>> [(level, i) for level, i, _ in completed_nodes(3, leaf_hash(b"x"), store)]
        [(0, 3), (1, 1), (2, 0)]
    """
    if index < 0:
        raise ConfigError(f"leaf index must be >= 0, got {index}")
    _check_hash(leaf, "leaf hash")
    ones = (~index & (index + 1)).bit_length() - 1  # trailing one bits of index
    siblings = [(level, (index >> level) - 1) for level in range(ones)]
    got = _fetch(reader, siblings)
    out = [(0, index, leaf)]
    h = leaf
    for level, sibling in siblings:
        h = _node(got[level, sibling], h)
        out.append((level + 1, (index >> (level + 1)), h))
    return out


# Any range [start, end) is hashed as RFC 6962 hashes the list D[start:end]. Its pieces are
# stored nodes when a piece is perfect and aligned; the two passes below (collect the keys,
# then combine their hashes) follow the same recursion.


def _is_node(start: int, end: int) -> bool:
    size = end - start
    return size & (size - 1) == 0 and start % size == 0


def _key(start: int, end: int) -> _Key:
    size = end - start
    return size.bit_length() - 1, start // size


def _range_keys(start: int, end: int, out: list[_Key]) -> None:
    if _is_node(start, end):
        out.append(_key(start, end))
    else:
        k = _split(end - start)
        _range_keys(start, start + k, out)
        _range_keys(start + k, end, out)


def _range_hash(start: int, end: int, got: dict[_Key, bytes]) -> bytes:
    if _is_node(start, end):
        return got[_key(start, end)]
    k = _split(end - start)
    return _node(_range_hash(start, start + k, got), _range_hash(start + k, end, got))


def _hash_ranges(ranges: Sequence[tuple[int, int]], reader: NodeReader) -> list[bytes]:
    """MTH of each (non-empty) range, all their nodes read in one batched call."""
    keys: list[_Key] = []
    for start, end in ranges:
        _range_keys(start, end, keys)
    got = _fetch(reader, keys)
    return [_range_hash(start, end, got) for start, end in ranges]


def subtree_hash(start: int, end: int, reader: NodeReader) -> bytes:
    """The MTH of leaves ``[start, end)`` (``EMPTY_ROOT`` if the range is empty).

    A range of the log's trees (a root ``[0, n)``, or any node of one: ``start`` a multiple
    of the largest power of two below ``end - start``) reads at most ``log2(end - start) + 1``
    stored nodes, one per one bit of its size. Any other range is hashed correctly too, as
    the list ``D[start:end]`` on its own, but may read up to ``end - start`` nodes.

    Raises:
        ConfigError: unless ``0 <= start <= end``.
        LookupError: from ``reader``, if a needed node is not stored (``end`` is past the
            tree).
    """
    if not 0 <= start <= end:
        raise ConfigError(f"a leaf range needs 0 <= start <= end, got [{start}, {end})")
    if start == end:
        return EMPTY_ROOT
    return _hash_ranges([(start, end)], reader)[0]


def root_at(size: int, reader: NodeReader) -> bytes:
    """The root (MTH) of the first ``size`` leaves, from ``O(log size)`` stored nodes.

    Raises:
        ConfigError: if ``size`` is negative.
    """
    if size < 0:
        raise ConfigError(f"tree size must be >= 0, got {size}")
    return subtree_hash(0, size, reader)


# ---------------------------------------------------------------------------- proofs


def _path_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges of RFC 6962 PATH(index, D[0:size]), deepest first."""
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:  # the leaf is on the left: the right part is the sibling
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def _proof_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges of RFC 6962 PROOF(old_size, D[0:new_size]), ``0 < old < new``.

    SUBPROOF(m, D[lo:hi], b): when the old tree ends at ``hi`` the subtree is one of the old
    tree's, and it is named unless it is the whole old tree (b true: the verifier has its
    root); otherwise recurse into the part where the old tree ends and name the other part.
    """
    ranges: list[tuple[int, int]] = []
    lo, hi, whole_old_tree = 0, new_size, True
    while old_size != hi:
        k = _split(hi - lo)
        if old_size <= lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            whole_old_tree = False
    if not whole_old_tree:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def inclusion_proof(index: int, size: int, reader: NodeReader) -> list[bytes]:
    """RFC 6962 PATH: the audit path of leaf ``index`` in the tree of the first ``size``.

    Reads at most ``2 * log2(size)`` stored nodes, in one batched call.

    Returns:
        The sibling hashes from the leaf's up to the root's children.

    Raises:
        ConfigError: unless ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise ConfigError(f"an inclusion proof needs 0 <= index < size, got {index} and {size}")
    return _hash_ranges(_path_ranges(index, size), reader)


def consistency_proof(old_size: int, new_size: int, reader: NodeReader) -> list[bytes]:
    """RFC 6962 PROOF: shows the tree of ``old_size`` leaves is a prefix of ``new_size``'s.

    Empty when ``old_size`` is 0 or equals ``new_size`` (nothing to prove). Reads
    ``O(log new_size)`` stored nodes, in one batched call.

    Raises:
        ConfigError: unless ``0 <= old_size <= new_size``.
    """
    if not 0 <= old_size <= new_size:
        raise ConfigError(
            f"a consistency proof needs 0 <= old_size <= new_size, got {old_size} and {new_size}"
        )
    if old_size in (0, new_size):
        return []
    return _hash_ranges(_proof_ranges(old_size, new_size), reader)


# ---------------------------------------------------------------------------- verification
#
# RFC 9162's verifiers, iterative over the bits of the indices. They share nothing with the
# generators above except the two hash functions.


def _require_hash(h: object, what: str) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        got = f"{len(h)} bytes" if isinstance(h, bytes) else type(h).__name__
        raise VerificationError(f"{what} must be a {HASH_SIZE}-byte hash, got {got}")


def _inclusion_length(index: int, size: int) -> int:
    """Hashes in PATH(index, D[0:size]): the levels below where ``index`` and the last leaf
    part (each has a sibling), plus one per left sibling on the tree's right border."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _consistency_length(old_size: int, new_size: int) -> int:
    """Hashes in PROOF(old_size, D[0:new_size]) for ``0 < old_size < new_size``: an inclusion
    path of the old tree's last leaf, less the levels inside the old tree's last perfect
    subtree (whose hash stands for them), plus that hash unless it is the whole old tree."""
    shift = (old_size & -old_size).bit_length() - 1  # trailing zero bits of old_size
    seed = 0 if old_size == 1 << shift else 1
    return seed + _inclusion_length(old_size - 1, new_size) - shift


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` is entry ``index`` of the tree of ``size`` entries with ``root``.

    RFC 9162 section 2.1.3.2.

    Args:
        leaf: the entry's leaf hash (:func:`leaf_hash` of it, not the entry itself).
        index: its position, ``0 <= index < size``.
        size: the tree size the root was signed for.
        proof: the audit path (:func:`inclusion_proof`, or any RFC 6962 log's).
        root: the trusted root for ``size``.

    Raises:
        VerificationError: if the proof does not lead from ``leaf`` to ``root``, or any
            argument is malformed (index out of range, wrong proof length, a hash that is not
            32 bytes).
    """
    what = f"inclusion proof for entry {index} of {size}"
    if not 0 <= index < size:
        raise VerificationError(f"{what}: the index must be in [0, size)")
    _require_hash(leaf, f"{what}: the leaf hash")
    _require_hash(root, f"{what}: the root")
    for i, p in enumerate(proof):
        _require_hash(p, f"{what}: proof[{i}]")
    expected = _inclusion_length(index, size)
    if len(proof) != expected:
        raise VerificationError(f"{what} must have {expected} hashes, got {len(proof)}")

    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise VerificationError(f"{what} is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while fn and not fn & 1:  # a right border: climb to where the path turns
                fn >>= 1
                sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(f"{what} is shorter than the path to the root")
    if r != root:
        raise VerificationError(f"{what} does not lead to the signed root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``old_size`` entries is a prefix of the one of ``new_size``.

    RFC 9162 section 2.1.4.2. An empty old tree is consistent with every tree (its root must
    be :data:`EMPTY_ROOT` and the proof empty); equal sizes need equal roots and an empty
    proof.

    Args:
        old_size: the size of the earlier tree.
        new_size: the size of the later one, ``>= old_size``.
        old_root: the trusted root for ``old_size``.
        new_root: the trusted root for ``new_size``.
        proof: the consistency proof (:func:`consistency_proof`, or any RFC 6962 log's).

    Raises:
        VerificationError: if the proof does not reproduce both roots, i.e. the log rewrote
            or dropped history, or any argument is malformed (a shrinking tree, wrong proof
            length, a hash that is not 32 bytes).
    """
    what = f"consistency proof from size {old_size} to {new_size}"
    if not 0 <= old_size <= new_size:
        raise VerificationError(f"{what}: the sizes must satisfy 0 <= old_size <= new_size")
    _require_hash(old_root, f"{what}: the old root")
    _require_hash(new_root, f"{what}: the new root")
    for i, p in enumerate(proof):
        _require_hash(p, f"{what}: proof[{i}]")
    if old_size == 0 and old_root != EMPTY_ROOT:
        raise VerificationError(f"{what}: the old root is not the empty tree's root")
    if old_size in (0, new_size):
        if proof:
            raise VerificationError(f"{what} must be empty, got {len(proof)} hashes")
        if old_size == new_size and old_root != new_root:
            raise VerificationError(f"{what}: the two roots of the same size differ")
        return
    expected = _consistency_length(old_size, new_size)
    if len(proof) != expected:
        raise VerificationError(f"{what} must have {expected} hashes, got {len(proof)}")

    path = list(proof)
    if old_size & (old_size - 1) == 0:  # the old tree is perfect: its root starts the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError(f"{what} is longer than the path to the new root")
        if fn & 1 or fn == sn:
            fr = _node(c, fr)
            sr = _node(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(f"{what} is shorter than the path to the new root")
    if fr != old_root:
        raise VerificationError(f"{what} does not reproduce the old root")
    if sr != new_root:
        raise VerificationError(f"{what} does not lead to the new root")


# ---------------------------------------------------------------------------- streaming


class RootAccumulator:
    """The root of a growing log in ``O(log n)`` memory: a compact range of its leaves.

    Keeps the hashes of the perfect subtrees the size's binary digits split the leaves into
    (largest first); appending merges equal-sized ones like a binary counter. Checking a
    million-entry log against its signed root is one pass over its leaf hashes.

    Example:
        >>> acc = RootAccumulator()
        >>> for entry in (b"a", b"b", b"c"):
        ...     acc.append(leaf_hash(entry))
        >>> acc.size, acc.root() == root_of([leaf_hash(e) for e in (b"a", b"b", b"c")])
        (3, True)
    """

    def __init__(self) -> None:
        self._size = 0
        self._peaks: list[bytes] = []

    @property
    def size(self) -> int:
        """Leaves appended so far."""
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf hash.

        Raises:
            ConfigError: if it is not a 32-byte hash.
        """
        _check_hash(leaf_hash, "leaf hash")
        peaks, h, n = self._peaks, leaf_hash, self._size
        while n & 1:
            h = _node(peaks.pop(), h)
            n >>= 1
        peaks.append(h)
        self._size += 1

    def root(self) -> bytes:
        """The MTH of the leaves so far (``EMPTY_ROOT`` before the first)."""
        if not self._peaks:
            return EMPTY_ROOT
        r = self._peaks[-1]
        for h in reversed(self._peaks[:-1]):
            r = _node(h, r)
        return r
