"""A cache entry that cannot be trusted is logged in one line, removed and recomputed; a full
disk is one sentence and leaves no partial file."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from driftbench.embed import EmbeddingCache
from driftbench.fileio import DiskFullError, atomic_write_text
from driftbench.launcher import run
from driftbench.models import build_folder_once
from driftbench.runs import effective_status

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny_random", "data.n_samples=200", "schedule=list", "schedule.sigmas=[0,0.1]"]


def checkpoints(outputs: Path) -> list[list[dict]]:
    return [
        json.loads(p.read_text())["checkpoints"] for p in sorted(outputs.glob("**/metrics.json"))
    ]


def spoil_truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def spoil_wrong_shape(path: Path) -> None:
    np.save(path, np.zeros((3, 4), dtype=np.float32))


def spoil_non_finite(path: Path) -> None:
    z = np.load(path)
    z[5, 1] = np.nan
    np.save(path, z)


@pytest.mark.parametrize(
    "spoil, reason",
    [
        (spoil_truncated, "unreadable"),
        (spoil_wrong_shape, "shape (3, 4)"),
        (spoil_non_finite, "non-finite"),
    ],
)
def test_a_bad_embedding_cache_entry_is_recomputed(make_cfg, tmp_path, caplog, spoil, reason):
    cache = tmp_path / "cache"
    run(make_cfg(*TINY, cache_dir=cache))
    (entry,) = (cache / "embeddings").glob("*.npy")
    spoil(entry)
    with caplog.at_level(logging.WARNING):
        run(make_cfg(*TINY, "runtime.force=true", cache_dir=cache))
    said = [r.getMessage() for r in caplog.records if "embedding cache entry" in r.getMessage()]
    assert len(said) == 1 and reason in said[0] and "recomputing" in said[0]
    first, second = checkpoints(tmp_path / "outputs")
    assert first == second  # recomputed, the same numbers
    assert EmbeddingCache(cache).load(entry.stem, 200) is not None  # healed on disk


def test_a_cache_entry_of_the_right_shape_loads_untouched(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.root.mkdir(parents=True)
    z = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(cache.path("k"), z)
    np.testing.assert_array_equal(cache.load("k", 3), z)
    assert cache.load("k", 5) is None and not cache.path("k").exists()


def build_counted(calls: list):
    def build(tmp: Path) -> None:
        calls.append(1)
        (tmp / "config.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"w" * 1000)

    return build


@pytest.mark.parametrize(
    "spoil",
    [
        lambda d: (d / "model.safetensors").unlink(),
        lambda d: (d / "model.safetensors").write_bytes(b"w" * 10),
    ],
    ids=["missing weight file", "truncated weight file"],
)
def test_an_incomplete_model_folder_is_rebuilt(tmp_path, caplog, spoil):
    calls: list = []
    out = tmp_path / "models" / "m"
    build_folder_once(out, build_counted(calls))
    build_folder_once(out, build_counted(calls))
    assert len(calls) == 1  # complete: reused
    spoil(out)
    with caplog.at_level(logging.WARNING):
        build_folder_once(out, build_counted(calls))
    assert len(calls) == 2 and (out / "model.safetensors").stat().st_size == 1000
    assert sum("incomplete" in r.getMessage() for r in caplog.records) == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]  # no leftovers beside it


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: a real full disk (needs root, as CI has). A run's figures and metrics
    need several times that."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)])
    if res.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_a_full_disk_is_one_sentence_and_leaves_no_partial_file(tiny_disk):
    target = tiny_disk / "metrics.json"
    atomic_write_text(target, "old\n")
    with pytest.raises(DiskFullError, match=f"no space left on device while writing {target}"):
        atomic_write_text(target, "x" * 200_000)
    assert target.read_text() == "old\n"  # the previous file, whole
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["metrics.json"]


def run_on_full_disk(output_root: Path, tmp_path: Path) -> None:
    """launch.py on the tiny model writing to ``output_root``: the disk fills, and it says so in
    one line, with no traceback, and exits 2."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), f"runtime.output_root={output_root}"]
        + [f"runtime.cache_dir={tmp_path / 'cache'}", "runtime.progress=false", *TINY],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-3000:]
    assert "Traceback" not in text and "Logging error" not in text
    said = [ln for ln in text.splitlines() if "no space left on device while writing" in ln]
    assert len(said) == 1, text[-3000:]


def test_cli_run_on_a_full_disk_prints_one_line_and_exits_2(tiny_disk, tmp_path):
    run_on_full_disk(tiny_disk, tmp_path)
    assert not list(tiny_disk.glob("**/.*.tmp"))


@pytest.fixture
def disk_with_room_for(tmp_path):
    """A 512 KiB tmpfs filled but for ``kib`` KiB: room for a run dir, its config.yaml, meta.json
    and run.log, not for its results, so the disk fills partway through the run."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)])
    if res.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")

    def leave(kib: int) -> Path:
        st = os.statvfs(mnt)
        (mnt / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - kib * 1024))
        return mnt

    yield leave
    subprocess.run(["umount", "-l", str(mnt)])


@pytest.mark.parametrize("kib", [16, 24])
def test_a_disk_that_fills_partway_through_a_run_is_one_line_and_a_non_zero_exit(
    disk_with_room_for, tmp_path, kib
):
    disk = disk_with_room_for(kib)
    run_on_full_disk(disk / "out", tmp_path)
    (run_dir,) = [p.parent for p in disk.glob("out/**/config.yaml")]  # made before it filled
    meta = json.loads((run_dir / "meta.json").read_text())
    # what the disk allowed: "failed" with the error, or "running" from a process now gone
    assert effective_status(meta) in ("failed", "died")
    if meta["status"] == "failed":
        assert "no space left on device while writing" in meta["error"]
    assert not (run_dir / "metrics.json").exists() and "files" not in meta
    assert not list(disk.glob("**/.*.tmp"))
