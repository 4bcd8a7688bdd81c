"""Reports of a red-team campaign: ``results.json``, a self-contained ``report.html`` and tables.

:func:`write_report` renders everything in memory, then moves each file into place with
``os.replace``: a failure leaves no half-written file and never partially overwrites an
existing report.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rlsec._files import fsync_dir, new_temp
from rlsec.report.html import render_html
from rlsec.report.table import eps50_table, results_table

__all__ = ["eps50_table", "render_html", "results_table", "results_to_json", "write_report"]

RESULTS_NAME = "results.json"
HTML_NAME = "report.html"


def _non_finite(value: Any, path: str = "results") -> str | None:
    """The path of the first NaN or infinity in ``value``, ``None`` if there is none."""
    if isinstance(value, (float, np.floating)):
        return None if math.isfinite(float(value)) else f"{path} = {float(value)!r}"
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            return f"{path} (array) contains NaN or infinity"
        return None
    if isinstance(value, Mapping):
        for k, v in value.items():
            found = _non_finite(v, f"{path}[{k!r}]")
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _non_finite(v, f"{path}[{i}]")
            if found:
                return found
    return None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"results contain a {type(obj).__name__}, which JSON cannot store: {obj!r}")


def results_to_json(results: Mapping[str, Any]) -> str:
    """The results as pretty, strict JSON (keys in their original order).

    Raises:
        ValueError: a value is NaN or infinite (the message names where).
        TypeError: a value JSON cannot represent.

    Example:
        >>> print(results_to_json({"kind": "redteam", "eps50": {"worst_case": None}}), end="")
        {
          "kind": "redteam",
          "eps50": {
            "worst_case": null
          }
        }
    """
    found = _non_finite(results)
    if found:
        raise ValueError(f"results must be finite to be written as JSON: {found}")
    return (
        json.dumps(
            results,
            indent=2,
            allow_nan=False,
            sort_keys=False,
            ensure_ascii=False,
            default=_json_default,
        )
        + "\n"
    )


def _write_temp(out_dir: Path, name: str, text: str) -> Path:
    fd, tmp = new_temp(out_dir, name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def write_report(results: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``results.json`` and ``report.html`` into ``out_dir``, each atomically.

    Both files are rendered in memory before anything touches the disk, so invalid results
    (NaN, infinity, values JSON cannot store) raise before ``out_dir`` is even created.
    Each file is then written to a temporary file in ``out_dir`` (an unpredictable name,
    created exclusively and never through a link: :func:`rlsec._files.new_temp`), flushed to
    disk and moved into place with ``os.replace``, which replaces a link at the final name
    rather than writing through it.

    Args:
        results: a campaign's results in the ``results.json`` contract.
        out_dir: the directory to write into; created (with parents) if missing.

    Returns:
        ``{"json": path of results.json, "html": path of report.html}``.

    Raises:
        ValueError: a value in ``results`` is NaN or infinite.
        TypeError: a value JSON cannot represent.
        OSError: the files cannot be written (no partial file is left behind).

    Example:
        >>> import tempfile
        >>> results = {"kind": "redteam", "clean": {"mean_return": 500.0, "ci95": None},
        ...            "results": [], "worst_case": [], "eps50": {}}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     paths = write_report(results, Path(d) / "report")
        ...     sorted(p.name for p in paths["json"].parent.iterdir())
        ['report.html', 'results.json']
    """
    text = results_to_json(results)
    html = render_html(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = {"json": (RESULTS_NAME, text), "html": (HTML_NAME, html)}
    temps: dict[str, Path] = {}
    try:
        for key, (name, content) in targets.items():
            temps[key] = _write_temp(out_dir, name, content)
        paths: dict[str, Path] = {}
        for key, (name, _) in targets.items():
            final = out_dir / name
            os.replace(temps[key], final)
            del temps[key]
            paths[key] = final
    finally:
        for tmp in temps.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
    fsync_dir(out_dir)
    return paths
