"""rlsec._files: whole writes that never go through a planted link, reads that refuse what
is not a regular file before reading it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from rlsec import _files
from rlsec._files import check_new_dir, open_atomic, read_regular, write_atomic
from rlsec.errors import ConfigError


def finishes(fn: Callable[[], object], seconds: float = 10.0) -> object:
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it blocks."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "blocked"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


def test_a_link_planted_at_the_old_fixed_temporary_name_is_not_written_through(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / ".out.json.tmp").symlink_to(victim)
    write_atomic(tmp_path / "out.json", "new\n")
    assert victim.read_text() == "keep"
    assert (tmp_path / "out.json").read_text() == "new\n"


def test_a_link_planted_at_the_random_temporary_name_is_refused_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    tokens = iter(["guessed0", "fresh000"])
    monkeypatch.setattr(_files.secrets, "token_hex", lambda _n: next(tokens))
    (tmp_path / ".out.json.guessed0.tmp").symlink_to(victim)  # an attacker guessed it
    write_atomic(tmp_path / "out.json", "new\n")
    assert victim.read_text() == "keep"
    assert (tmp_path / "out.json").read_text() == "new\n"
    assert (tmp_path / ".out.json.guessed0.tmp").is_symlink()  # left alone, not opened


def test_a_dangling_link_at_a_temporary_name_does_not_create_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = iter(["guessed0", "fresh000"])
    monkeypatch.setattr(_files.secrets, "token_hex", lambda _n: next(tokens))
    (tmp_path / ".out.guessed0.tmp").symlink_to(tmp_path / "created-elsewhere")
    write_atomic(tmp_path / "out", b"x")
    assert not (tmp_path / "created-elsewhere").exists()


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "out.json").symlink_to(victim)
    write_atomic(tmp_path / "out.json", "new\n")
    assert victim.read_text() == "keep"
    assert not (tmp_path / "out.json").is_symlink()
    assert (tmp_path / "out.json").read_text() == "new\n"


def test_exclusive_refuses_a_dangling_link_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "key.pub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="exists; refusing to replace it"):
        write_atomic(tmp_path / "key.pub", b"public", exclusive=True)
    assert not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.pub"]


def test_exclusive_refuses_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("old")
    with pytest.raises(ConfigError, match="exists"):
        write_atomic(tmp_path / "k", b"new", exclusive=True)
    assert (tmp_path / "k").read_text() == "old"


def test_a_private_file_is_created_0600(tmp_path: Path) -> None:
    write_atomic(tmp_path / "secret", b"s", mode=0o600, exclusive=True)
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("old")

    def crash() -> None:
        with open_atomic(target) as f:
            f.write(b"half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        crash()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_writing_onto_a_directory_or_fifo_is_refused(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "out"
    target.mkdir() if kind == "directory" else os.mkfifo(target)
    with pytest.raises(ConfigError, match=f"is a {'directory' if kind == 'directory' else 'FIFO'}"):
        finishes(lambda: write_atomic(target, b"x"))


def test_reading_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.json"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is a FIFO; expected a regular file"):
        finishes(lambda: read_regular(fifo, max_bytes=100, what="spec.json"))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.symlink_to(p.with_name("real")), "is a symbolic link"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"x" * 101), "larger than the 100 bytes allowed"),
    ],
)
def test_reading_refuses_links_directories_and_oversize_files(
    tmp_path: Path, make: Callable[[Path], None], message: str
) -> None:
    (tmp_path / "real").write_text("{}")
    path = tmp_path / "f"
    make(path)
    with pytest.raises(ConfigError, match=message):
        read_regular(path, max_bytes=100)


def test_reading_a_device_is_refused() -> None:
    with pytest.raises(ConfigError, match="is a device"):
        finishes(lambda: read_regular("/dev/zero", max_bytes=100))


def test_read_regular_raises_the_callers_error_class(tmp_path: Path) -> None:
    class Mine(Exception):
        pass

    with pytest.raises(Mine, match="not found"):
        read_regular(tmp_path / "missing", max_bytes=1, error=Mine)


def test_check_new_dir(tmp_path: Path) -> None:
    assert check_new_dir(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_new_dir(tmp_path / "empty")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "results.json").write_text("mine")
    with pytest.raises(ConfigError, match=r"not an empty directory \(it holds results\.json\)"):
        check_new_dir(tmp_path / "full")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_new_dir(tmp_path / "file")
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    with pytest.raises(ConfigError, match="is a symbolic link"):
        check_new_dir(tmp_path / "link")


def test_exclusive_refuses_an_entry_that_appears_while_the_file_is_written(
    tmp_path: Path,
) -> None:
    """The name is claimed when the file is moved into place, not only checked before: a
    link planted in between is neither replaced nor followed."""
    target = tmp_path / "key.pub"

    def race() -> None:
        with open_atomic(target, exclusive=True) as f:
            f.write(b"public")
            target.symlink_to(tmp_path / "elsewhere")  # the attacker wins the race

    with pytest.raises(ConfigError, match="exists; refusing to replace it"):
        race()
    assert target.is_symlink() and not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.pub"]
