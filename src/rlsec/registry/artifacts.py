"""Content-addressed artifact files: ``root/sha256/<2 hex>/<64 hex>``, written whole.

A blob is written to a temporary file in its final directory, flushed to disk, then renamed
into place (and the directory flushed), so a crash leaves either the whole blob or none; a
blob already present is not rewritten. Reading checks the digest of the very bytes returned.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from rlsec._files import write_atomic
from rlsec.errors import ConfigError, VerificationError

__all__ = ["ArtifactStore", "write_whole"]

_HEX64 = re.compile(r"[0-9a-f]{64}")


def write_whole(target: Path, data: bytes) -> None:
    """Write ``target`` whole or not at all, readable by its owner only: a temporary file in
    the same directory (mode 0600, an unpredictable name created with ``O_EXCL |
    O_NOFOLLOW``), flushed to disk, renamed into place, the directory flushed
    (:func:`rlsec._files.write_atomic`)."""
    write_atomic(target, data, mode=0o600)


class ArtifactStore:
    """Blobs by SHA-256 under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise ConfigError(
                f"expected a SHA-256 digest of 64 lowercase hex digits, got {digest!r:.80}"
            )
        return self.root / "sha256" / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store ``data``; returns its SHA-256 (hex)."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.is_file() and target.stat().st_size == len(data):
            return digest
        write_whole(target, data)
        return digest

    def get(self, digest: str, *, max_bytes: int = 2 * 2**30) -> bytes:
        """The blob's bytes, checked against ``digest``.

        Raises:
            VerificationError: missing, oversize, or its bytes do not have that digest.
        """
        target = self.path(digest)
        try:
            with target.open("rb") as f:
                data = f.read(max_bytes + 1)
        except FileNotFoundError:
            raise VerificationError(
                f"artifact {digest[:16]}... is missing from {self.root}"
            ) from None
        if len(data) > max_bytes:
            raise VerificationError(f"artifact {digest[:16]}... is larger than {max_bytes} bytes")
        got = hashlib.sha256(data).hexdigest()
        if got != digest:
            raise VerificationError(
                f"artifact {digest[:16]}... was modified on disk (its bytes hash to {got[:16]}...)"
            )
        return data
