"""Versioned run directories: naming, config hash, meta.json, resume lookup, the per-run log.

A run dir is ``outputs/runs/<date>_<time>-<hash8>`` for a single run and
``<sweep dir>/<job num>-<hash8>`` inside a multirun. It is claimed with an exclusive ``mkdir``,
so two jobs never share one. Every file in it is written to a temp file and renamed into place
(``driftbench.fileio``): a run that dies leaves either the previous complete file or none, never
half of one.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from driftbench.digests import dtype_key, file_sha256, json_sha256
from driftbench.fileio import _FIGURES, _jsonable, atomic_write_json, atomic_write_text, read_json
from driftbench.provenance import environment
from driftbench.webpage import RUN_PAGE, write_run_page

SCHEMA_VERSION = 2  # 2: meta.json records the digest of every result file ("files")
NOT_HASHED = ("runtime", "hydra")  # where/how a run executes; never changes a result
HEARTBEAT_S = 30.0  # a running job rewrites meta.json's heartbeat this often
UNDIGESTED = ("meta.json", "run.log")  # meta.json holds the digests; the log is not a result

log = logging.getLogger(__name__)


# Config entries added after runs existed, at the value that does what every run did before
# them: left out of the hashed config at that value, so those runs keep their keys and are
# reused (as ``digests.dtype_key`` leaves float32 out). Keyed by their path in the config;
# the sft group's also where a drift copies it (``drift.train: ${sft}``, drift=adapter's and
# drift=tune's training settings). A list entry's default is a tuple (immutable here; the
# resolved config holds a list).
SFT_ADDED = {"audit_probes": "all", "audit_at_steps": ()}
KEY_DEFAULTS = {
    ("data", "balance"): True,
    ("data", "split_column"): None,
    **{("sft", name): default for name, default in SFT_ADDED.items()},
    **{("drift", "train", name): default for name, default in SFT_ADDED.items()},
}


def at_default(value, default) -> bool:
    """Whether a config value is its ``KEY_DEFAULTS`` default: the same type and value (True,
    not 1), a list for a tuple default."""
    if isinstance(default, tuple):
        return isinstance(value, (list, tuple)) and tuple(value) == default
    return type(value) is type(default) and value == default


def _map_at(tree: dict, parent: tuple, change) -> dict:
    """``tree`` with the dict at path ``parent`` replaced by ``change(that dict)``, copied along
    the path (``tree`` itself unchanged); ``tree`` as it is where the path is not there."""
    if not parent:
        return change(tree)
    node = tree.get(parent[0])
    if not isinstance(node, dict):
        return tree
    return {**tree, parent[0]: _map_at(node, parent[1:], change)}


def without_defaults(tree: dict, defaults: dict = KEY_DEFAULTS) -> dict:
    """``tree`` minus each entry of ``defaults`` (path -> value) that is at its default."""
    for (*parent, name), default in defaults.items():

        def drop(node: dict, name=name, default=default) -> dict:
            if name not in node or not at_default(node[name], default):
                return node
            return {k: v for k, v in node.items() if k != name}

        tree = _map_at(tree, tuple(parent), drop)
    return tree


def hashed_part(cfg: dict) -> dict:
    """A resolved config minus ``runtime``/``hydra`` and minus each ``KEY_DEFAULTS`` entry at
    its default."""
    return without_defaults({k: v for k, v in cfg.items() if k not in NOT_HASHED})


def with_key_defaults(cfg: dict) -> dict:
    """A run's recorded config with each ``KEY_DEFAULTS`` entry its group lacks set to the
    default: a run made before the entry existed ran with it, and a report that mixes it with
    newer runs must not take the entry for a sweep axis."""
    for (*parent, name), default in KEY_DEFAULTS.items():

        def fill(node: dict, name=name, default=default) -> dict:
            if name in node:
                return node
            return {**node, name: list(default) if isinstance(default, tuple) else default}

        cfg = _map_at(cfg, tuple(parent), fill)
    return cfg


def config_hash(cfg: dict) -> str:
    """sha256 of a resolved config minus ``runtime``/``hydra``."""
    return json_sha256(_jsonable(hashed_part(cfg)))


def result_key(cfg_read: dict, inputs: dict, results_version: int, dtype: str = "float32") -> str:
    """What decides a run's result, hashed: the config the task reads (not the groups it
    ignores), the digests of the input files it reads, and the task's results version (bumped
    whenever a computation changes). Equal keys, equal results; resume reuses on this key.

    ``dtype`` is the one runtime field that decides a result: the dtype the models compute in
    (``runtime.dtype``, resolved: never ``auto``, so ``auto`` on a bf16 machine and an explicit
    ``bfloat16`` share runs). The rest of ``runtime`` (paths, device, progress) never does, so
    the group stays out of the key and the dtype enters as its own config entry
    ``runtime.dtype``, and only when it is not float32 (``digests.dtype_key``): a float32 run
    keeps the key it had before the dtype was a choice, and its complete runs are reused."""
    config = hashed_part(cfg_read)
    for name, value in dtype_key(dtype).items():
        config[f"runtime.{name}"] = value
    return json_sha256(
        _jsonable({"config": config, "inputs": inputs, "results_version": results_version})
    )


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def check_writable_dir(key: str, path: str | Path) -> Path:
    """Create ``path`` (the value of config ``key``) if it is missing and probe it with a temp
    file, so a run learns that it cannot write its results or caches before it loads a model,
    not after. Raises ValueError naming the key and the path."""
    where = Path(os.path.expanduser(str(path)))
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=where):
            pass
    except FileExistsError:
        raise ValueError(f"{key}={path} is a file; accepted: a directory") from None
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ValueError(
            f"{key}={path} cannot be created or written ({reason}); accepted: a writable directory"
        ) from None
    return where


def claim_dir(parent: Path, name: str) -> Path:
    """mkdir that fails if the dir exists; on a clash (same second, same config) add a suffix."""
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        path = parent / (name if i == 0 else f"{name}.{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run dir under {parent}")


def new_run_dir(output_root: str | Path, cfg_hash: str, sweep_dir: str | None, job_num) -> Path:
    if sweep_dir is not None:
        return claim_dir(Path(sweep_dir), f"{int(job_num):03d}-{cfg_hash[:8]}")
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return claim_dir(Path(output_root) / "runs", f"{stamp}-{cfg_hash[:8]}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _age_s(stamp: str | None) -> float | None:
    try:
        return time.time() - datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return None


def effective_status(meta: dict) -> str:
    """A run's status as it stands now: ``running`` only while its process is alive.

    meta.json says ``running`` until the job writes its end; a job killed with SIGKILL (or its
    node lost) never does. On its own host the job is ``died`` once its pid is gone; anywhere,
    once its heartbeat is older than the ``stale_after_s`` it was started with."""
    status = meta.get("status")
    if status != "running":
        return status
    if meta.get("host") == socket.gethostname() and meta.get("pid"):
        if not _pid_alive(int(meta["pid"])):
            return "died"
    age = _age_s(meta.get("heartbeat"))
    stale = meta.get("stale_after_s")
    if age is not None and stale is not None and age > float(stale):
        return "died"
    return status


def result_files(run_dir: Path) -> dict[str, str]:
    """sha256 of every result file of a run dir, by path relative to it: every regular file but
    meta.json, run.log and dot-named temp files, in sub-folders too (a saved adapter)."""
    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if rel.as_posix() in UNDIGESTED or any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and not path.is_symlink():
            out[rel.as_posix()] = file_sha256(path)
    return out


def unverified(run_dir: Path, meta: dict, figures: bool = True) -> str | None:
    """Why a completed run's results cannot be trusted as they are on disk, or None when every
    file recorded at completion is there with the same digest. ``figures=False`` (a report,
    which reads numbers only) lets a figure or the run's page (report.html, which shows them)
    be missing, as in a committed example that keeps a sweep's numbers without its per-run
    figures; one that is there must still match."""
    recorded = meta.get("files")
    if not isinstance(recorded, dict) or "metrics.json" not in recorded:
        return "meta.json records no digests of its files (made before they were recorded)"
    for name, digest in recorded.items():
        path = run_dir / name
        if not figures and (name.endswith(".png") or name == RUN_PAGE) and not path.exists():
            continue
        if not path.is_file():
            return f"its {name} is missing"
        if file_sha256(path) != digest:
            return f"its {name} does not match the digest recorded when it completed"
    return None


def find_complete_runs(output_root: str | Path, key: str, warn: bool = True) -> list[Path]:
    """Complete run dirs anywhere under ``output_root`` whose result key equals ``key`` and whose
    files match the digests recorded when they completed. A completed run that fails the check
    is passed over with one warning (``warn``), so the job runs again instead of reusing it."""
    root = Path(output_root)
    found = []
    for meta_path in root.glob(f"**/*-{key[:8]}*/meta.json"):
        meta = read_json(meta_path)
        if not meta or meta.get("result_key") != key or meta.get("status") != "completed":
            continue
        why = unverified(meta_path.parent, meta)
        if why is None:
            found.append(meta_path.parent)
        elif warn:
            log.warning("not reusing %s (same result key): %s; rerunning", meta_path.parent, why)
    return sorted(found)


class RunLogHandler(logging.FileHandler):
    """``run.log``. If the disk fills, the first failed write turns the handler off instead of
    printing Python's logging traceback for every later record; the error itself reaches the
    user once, from the write that raised it."""

    def handleError(self, record) -> None:  # noqa: N802 - logging's name
        logging.getLogger().removeHandler(self)


class Run:
    """Context manager around one job: writes config.yaml and meta.json (running -> completed
    or failed, with the error), sends the log to ``run.log`` in the run dir, and draws no
    figures while it runs if its config says ``runtime.figures: false``."""

    def __init__(
        self,
        run_dir: Path,
        cfg: dict,
        cfg_yaml: str,
        job: dict,
        key: dict | None = None,
        stale_after_s: float = 600.0,
        figures: bool = True,
    ):
        self.dir = run_dir
        self.cfg, self.figures = cfg, figures
        key = key or {"result_key": config_hash(cfg), "inputs": {}, "results_version": None}
        now = _now()
        self.meta = {
            "schema_version": SCHEMA_VERSION,
            "status": "running",
            **key,
            "config_hash": config_hash(cfg),
            "task": cfg.get("task", {}).get("name"),
            "seed": cfg.get("seed"),
            **job,
            **environment(),
            "pid": os.getpid(),
            "start_time": now,
            "heartbeat": now,
            "stale_after_s": float(stale_after_s),
            "end_time": None,
            "wall_s": None,
            "error": None,
        }
        self._lock = threading.Lock()
        self._stop = threading.Event()
        atomic_write_text(run_dir / "config.yaml", cfg_yaml)
        self._write_meta()

    def _write_meta(self) -> None:
        with self._lock:
            atomic_write_json(self.dir / "meta.json", self.meta)

    def _beat(self) -> None:
        interval = min(HEARTBEAT_S, self.meta["stale_after_s"] / 4)
        while not self._stop.wait(interval):
            self.meta["heartbeat"] = _now()
            try:
                self._write_meta()
            except OSError:
                pass  # a full disk: the job's own next write reports it

    def __enter__(self) -> Run:
        self._t0 = time.perf_counter()
        self._beater = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._beater.start()
        self._handler = RunLogHandler(self.dir / "run.log", encoding="utf-8")
        self._handler.setFormatter(
            logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        )
        logging.getLogger().addHandler(self._handler)
        self._figures = _FIGURES.set(self.figures)
        log.info("run dir %s", self.dir)
        return self

    def write_metrics(self, metrics: dict) -> None:
        """metrics.json, then the run's page (report.html: its headline numbers, its tables and
        figures in one file), the task's last files: meta.json records both digests."""
        atomic_write_json(self.dir / "metrics.json", {"schema_version": SCHEMA_VERSION, **metrics})
        write_run_page(self.dir, metrics)

    def __exit__(self, exc_type, exc, tb) -> bool:
        _FIGURES.reset(self._figures)
        self._stop.set()
        self._beater.join()
        self.meta["end_time"] = _now()
        self.meta["wall_s"] = round(time.perf_counter() - self._t0, 3)
        try:
            if exc is None:
                self._complete()
            else:
                self._fail(exc_type, exc, tb)
        finally:
            self._close_log()
        return False

    def _complete(self) -> None:
        """meta.json says completed and holds every result file's digest, which resume and the
        report check before they trust the run. A failure to write it (a full disk) propagates:
        the run is not complete, and the caller says so once."""
        self.meta["status"] = "completed"
        self.meta["files"] = result_files(self.dir)
        self._write_meta()
        log.info("done in %.1f s: %s", self.meta["wall_s"], self.dir)

    def _fail(self, exc_type, exc, tb) -> None:
        """meta.json says failed, with the error, where the disk allows: when it does not (the
        error may be that very disk), meta.json keeps ``running``, read as ``died`` once this
        process is gone, and the error is said once, here."""
        self.meta["status"] = "failed"
        self.meta["error"] = f"{exc_type.__name__}: {exc}"
        self.meta["traceback"] = "".join(traceback.format_exception(exc_type, exc, tb))
        log.error("run failed: %s (%s)", self.meta["error"], self.dir)
        exc.reported = True  # said once here; the entry point need not repeat it
        try:
            self._write_meta()
        except OSError:
            pass

    def _close_log(self) -> None:
        logging.getLogger().removeHandler(self._handler)
        try:
            self._handler.close()
        except OSError:
            pass  # its last flush met the full disk the run has already reported
