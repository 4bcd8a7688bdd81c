"""Files written whole and never through a link; files read only if they are regular.

Every file rlsec writes goes through :func:`open_atomic` (or :func:`write_atomic`): a
temporary file with an unpredictable name (``.NAME.<random>.tmp``) is created in the target's
directory with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (so a link or file planted at any name cannot
be opened instead), written, flushed to disk, then renamed over the target (a link at the
target is replaced, never followed) and the directory flushed. A failure or crash leaves the
old file or none, never half a file. ``exclusive=True`` never replaces anything: the finished
file is hard-linked into place, which fails if any entry (a dangling link too) holds the name.

Reads of files that come from outside (policies, keys, evidence, strategy and threshold
files) go through :func:`read_regular`: the file is opened with ``O_NOFOLLOW | O_NONBLOCK``
and checked with ``fstat`` before a byte is read, so a link is refused, and a FIFO or device
can neither block the process nor stream without end; reads are capped.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     target = Path(d) / "out.json"
    ...     _ = write_atomic(target, "{}\\n")
    ...     read_regular(target, max_bytes=10), sorted(p.name for p in Path(d).iterdir())
    (b'{}\\n', ['out.json'])
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from rlsec.errors import ConfigError

__all__ = ["check_new_dir", "fsync_dir", "new_temp", "open_atomic", "read_regular", "write_atomic"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def fsync_dir(directory: Path) -> None:
    """Flush a directory's entries (a rename into it) to disk, where the platform can."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC
    try:
        fd = os.open(directory, flags)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def new_temp(directory: Path, name: str, mode: int = 0o666) -> tuple[int, Path]:
    """A new file ``.NAME.<random>.tmp`` in ``directory``, created with ``O_CREAT | O_EXCL |
    O_NOFOLLOW`` (nothing planted at that name can be opened instead): its descriptor, open
    for writing, and its path."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    stem = name[:180]  # room for the random part within the usual 255-byte name limit
    for _ in range(100):
        tmp = directory / f".{stem}.{secrets.token_hex(8)}.tmp"
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "could not create a temporary file", str(directory))


def _check_target(target: Path, exclusive: bool) -> None:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if exclusive:
        raise ConfigError(f"{target} exists; refusing to replace it")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise ConfigError(f"{target} is {_kind(st.st_mode)}; expected a file to write")


def _link_new(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target`` only if nothing holds that name (not even a dangling link)."""
    try:
        os.link(tmp, target, follow_symlinks=False)
    except FileExistsError:
        raise ConfigError(f"{target} exists; refusing to replace it") from None
    except OSError:  # no hard links on this file system: claim the name, then rename onto it
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        try:
            os.close(os.open(target, flags, 0o600))
        except FileExistsError:
            raise ConfigError(f"{target} exists; refusing to replace it") from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def open_atomic(
    target: str | os.PathLike[str], *, mode: int = 0o666, exclusive: bool = False
) -> Iterator[BinaryIO]:
    """Write ``target`` whole: yields a binary file (a temporary one beside ``target``);
    when the block ends without an exception it is flushed, synced and moved into place.

    Args:
        mode: permission bits of the new file (the umask applies; ``0o600`` for secrets).
        exclusive: never replace an existing entry at ``target`` (a dangling link counts).

    Raises:
        ConfigError: ``target`` exists and ``exclusive``; or it is a directory, FIFO,
            device or socket.
        OSError: the file cannot be written (nothing is left behind).
    """
    target = Path(target)
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    _check_target(target, exclusive)
    fd, tmp = new_temp(directory, target.name, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            _link_new(tmp, target)
        else:
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def write_atomic(
    target: str | os.PathLike[str],
    data: bytes | str,
    *,
    mode: int = 0o666,
    exclusive: bool = False,
) -> Path:
    """Write ``data`` (text is UTF-8) to ``target`` whole; see :func:`open_atomic`."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with open_atomic(target, mode=mode, exclusive=exclusive) as f:
        f.write(raw)
    return Path(target)


def read_regular(
    path: str | os.PathLike[str],
    *,
    max_bytes: int,
    what: str = "file",
    error: type[Exception] = ConfigError,
    too_large: type[Exception] | None = None,
) -> bytes:
    """The bytes of the regular file at ``path``, at most ``max_bytes`` of them.

    Opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked with ``fstat`` before reading, so a
    symbolic link, a FIFO, a device or a directory is refused without blocking.

    Raises:
        ``error`` (default :class:`~rlsec.errors.ConfigError`): missing, a link, not a
        regular file, larger than ``max_bytes`` (``too_large`` if given), or unreadable;
        the message says which.
    """
    p = Path(path)
    big = too_large or error
    try:
        fd = os.open(p, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
    except FileNotFoundError:
        raise error(f"{what} not found: expected a file at {p}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(
                f"{what} at {p} is a symbolic link; rlsec reads only regular files (give the "
                "link's target)"
            ) from None
        raise error(f"cannot read {what} at {p}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} at {p} is {_kind(st.st_mode)}; expected a regular file")
        if st.st_size > max_bytes:
            raise big(f"{what} at {p} is larger than the {max_bytes} bytes allowed")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise error(f"cannot read {what} at {p}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > max_bytes:  # it grew while being read
        raise big(f"{what} at {p} is larger than the {max_bytes} bytes allowed")
    return b"".join(chunks)


def check_new_dir(path: str | os.PathLike[str], *, what: str = "--out") -> Path:
    """``path`` as an output directory to create: absent, or an empty directory (not a
    link to one).

    Raises:
        ConfigError: it exists and is not an empty directory; the message says what is there.
    """
    p = Path(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return p
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what} {p} is {_kind(st.st_mode)}; expected a directory to create")
    entries = sorted(e.name for e in os.scandir(p))
    if entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ConfigError(
            f"{what} {p} exists and is not an empty directory (it holds {shown}); choose a "
            "new directory"
        )
    return p
