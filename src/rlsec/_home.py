"""Where rlsec keeps its state: ``RLSEC_HOME`` (default ``~/.rlsec``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "home"]


def home() -> Path:
    """The rlsec state directory (not created)."""
    env = os.environ.get("RLSEC_HOME")
    return Path(env).expanduser() if env else Path.home() / ".rlsec"


def cache_dir(kind: str) -> Path:
    """``RLSEC_HOME/cache/<kind>``, created on demand."""
    d = home() / "cache" / kind
    d.mkdir(parents=True, exist_ok=True)
    return d
