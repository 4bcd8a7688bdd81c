"""Content-addressed artifact files: written whole, never through a link."""

from __future__ import annotations

from pathlib import Path

from rlsec.registry.artifacts import ArtifactStore, write_whole


def test_write_whole_replaces_a_link_at_the_target_and_is_private(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "log.key").symlink_to(victim)
    write_whole(tmp_path / "log.key", b"secret")
    assert victim.read_text() == "keep"
    assert (tmp_path / "log.key").read_bytes() == b"secret"
    assert (tmp_path / "log.key").stat().st_mode & 0o777 == 0o600


def test_a_blob_is_stored_once_and_read_back_checked(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    digest = store.put(b"weights")
    assert store.put(b"weights") == digest
    assert store.get(digest) == b"weights"
    assert [p.name for p in store.path(digest).parent.iterdir()] == [digest]
