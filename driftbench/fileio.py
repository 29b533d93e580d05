"""Atomic file IO: every file a run or a cache writes goes to a temp file beside it and is renamed
into place, so a reader sees the old file or the whole new one; a full disk is one
``DiskFullError`` sentence. Also JSON reading, and figures (off inside a run that draws none).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np

# runtime.figures of the run being written (set by ``runs.Run``); outside a run, figures are drawn
_FIGURES: ContextVar[bool] = ContextVar("driftbench_figures", default=True)


class DiskFullError(OSError):
    """The disk filled while a run wrote a file: one line, no half-written file left behind."""

    def __str__(self) -> str:
        return self.strerror


@contextmanager
def disk_errors(path: str | Path):
    """Turn ENOSPC/EDQUOT while writing ``path`` into one ``DiskFullError`` sentence."""
    try:
        yield
    except OSError as e:
        if isinstance(e, DiskFullError) or e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFullError(e.errno, f"no space left on device while writing {path}") from None


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN/inf; null means "undefined here" (e.g. SNR at sigma=0)
    if isinstance(x, Path):
        return str(x)
    return x


def publish(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished temp file or folder into place, with the mode a plain ``open`` or
    ``mkdir`` would have given it. tempfile creates 0600 files and 0700 folders, which would keep
    results and caches from the rest of a group on a shared cluster."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, (0o777 if Path(tmp).is_dir() else 0o666) & ~umask)
    os.replace(tmp, path)


def atomic_write_bytes(path: str | Path, write) -> None:
    """``write(f)`` into a temp file beside ``path``, flushed to disk, then renamed into place: a
    reader sees the old file or the whole new one, and a full disk leaves neither a partial file
    nor a temp file behind."""
    path = Path(path)
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            publish(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def atomic_write_csv(path: str | Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in _jsonable(r).items()})
    atomic_write_text(path, buf.getvalue())


def figures_on() -> bool:
    """False inside a run that draws no figures (``Run(figures=False)``: ``runtime.figures=false``,
    or a drift_eval sweep's jobs by default, ``launcher.run``). Drawing them is more than half
    of a cached drift run's time (bench/sweep.py), and neither metrics.json nor the sweep report
    reads them."""
    return _FIGURES.get()


def save_figure(fig, path: str | Path, dpi: int = 120) -> None:
    """Matplotlib figure -> PNG, atomically (nothing inside a run with runtime.figures=false)."""
    if not figures_on():
        return
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight"))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
