"""Benchmark a drift_eval sweep on cached embeddings against one cold embedding pass of the same
texts, in one run: is a 78-job sweep worth about one embedding pass?

1. The cold embedding pass: a fresh process embeds the default run's 2,000 Davidson tweets with
   the default model (SmolLM2-135M-Instruct) into an empty embedding cache, exactly as a run's
   cache miss does (``cached_embeddings``: model load, forward, cache write; the converted
   model folder is the machine's own, so the one-time GGUF conversion is not counted).
2. The sweep, as a user runs it: ``python launch.py -m drift=gaussian,directional,subspace
   seed=0,...,25`` (78 jobs, basic launcher, the default config: monitors on), on those cached
   embeddings, with an empty classifier-fit cache. Its wall time against the embedding pass is
   the ratio (target: at most 1.5). A phase timer inside the process splits the wall time
   (imports, Hydra's compose, the sweep plan, per-job load, fit, checkpoints, monitors,
   figures, metrics, the report) without changing what runs.
3. Samples of the same sweep with ``monitor=none`` and with ``runtime.figures=true`` (every job
   draws its own figures; by default a sweep's jobs draw none): what each costs.
4. Checks: every run dir of both sweeps complete (meta.json completed, metrics.json,
   checkpoints.csv, every figure the run lists); two jobs whose classifier came from the cache
   rerun with an empty fit cache give every number of metrics.json unchanged.
5. One job as a fresh process (what every Slurm or submitit job pays): start-up before the
   task's first line, split the same way.

    python bench/sweep.py [--seeds 26] [--keep]

Writes bench/results/sweep.json and prints one summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DRIFTS = ("gaussian", "directional", "subspace")
TARGET_RATIO = 1.5
SHARED_CACHE_DIRS = ("models", "tokenizers", "gguf")  # reused as they are: not the measurement


# --- the phase timer (runs inside the measured process) ----------------------------------------


class Phases:
    """Wall time per named phase, nested by call: ``job > task > fit``. Wrapping a function
    costs about a microsecond per call; nothing else changes."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.stack: list[str] = []
        self.total: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def wrap(self, owner, attr: str, name: str) -> None:
        fn = getattr(owner, attr, None)
        if fn is None:
            self.total.setdefault(f"missing: {name}", 0.0)
            return
        phases = self

        def timed(*args, **kwargs):
            phases.stack.append(name)
            key = " > ".join(phases.stack)
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases.total[key] = phases.total.get(key, 0.0) + time.perf_counter() - t
                phases.count[key] = phases.count.get(key, 0) + 1
                phases.stack.pop()

        timed.__wrapped__ = fn
        setattr(owner, attr, timed)

    def dump(self, path: Path, extra: dict) -> None:
        out = {
            "wall_s": time.perf_counter() - self.t0,
            "phases": {k: {"s": self.total[k], "calls": self.count.get(k, 0)} for k in self.total},
            **extra,
        }
        path.write_text(json.dumps(out, indent=1))


def install(phases: Phases) -> None:
    """Wrap the phases of a drift_eval sweep (after ``import launch``: the modules exist)."""
    import hydra
    from hydra._internal import config_loader_impl
    from hydra._internal.core_plugins import basic_launcher
    from hydra.core import utils
    from hydra.plugins import sweeper

    from driftbench import fileio, launcher, metrics, plots, report, runs
    from driftbench.tasks.drift_eval import monitoring as drift_monitoring
    from driftbench.tasks.drift_eval import task as drift_eval

    w = phases.wrap
    w(launcher.SweepPlan, "on_multirun_start", "sweep plan")
    w(hydra, "compose", "compose")
    w(sweeper.Sweeper, "validate_batch_is_legal", "hydra's batch check")
    w(config_loader_impl.ConfigLoaderImpl, "load_sweep_config", "compose")
    w(utils, "run_job", "hydra job")
    w(basic_launcher, "configure_log", "hydra logging setup")
    w(utils, "configure_log", "hydra logging setup")
    w(runs.Run, "__enter__", "run dir: config, meta")
    w(runs.Run, "__exit__", "run dir: meta")
    w(fileio, "atomic_write_bytes", "file writes (fsync)")
    w(launcher, "run", "job")
    w(launcher, "prepare", "prepare (validate, result key)")
    w(launcher, "find_complete_runs", "resume lookup")
    w(launcher, "log_run", "trackers")
    w(runs, "environment", "environment (versions, git)")  # provenance.environment, as Run calls it
    w(runs.Run, "write_metrics", "write metrics.json")
    w(drift_eval, "run", "task")
    w(drift_eval, "load_toxicity", "load data")
    w(drift_eval, "cached_embeddings", "embeddings (cache)")
    w(drift_eval, "fitted_classifier", "classifier (fit cache)")
    w(drift_monitoring.Monitoring, "__init__", "monitors")
    w(drift_monitoring.Monitoring, "checkpoint", "monitors")
    w(drift_monitoring.Monitoring, "score", "monitors")
    for name in ("drift_figures", "monitor_figure", "mitigation_figure"):
        w(plots, name, "figures")
    w(metrics, "separability", "separability")
    w(report.SweepReport, "on_multirun_end", "sweep report")


def child_launch(timings: Path, argv: list[str]) -> None:
    """Run ``python launch.py <argv>`` in this process with the phase timer installed."""
    phases = Phases()
    import runpy

    sys.path.insert(0, str(ROOT))
    import launch  # noqa: F401  (its imports: what launch.py pays before Hydra starts)

    phases.total["imports (launch.py)"] = time.perf_counter() - phases.t0
    phases.count["imports (launch.py)"] = 1
    install(phases)
    sys.argv = [str(ROOT / "launch.py"), *argv]
    code = 0
    try:
        runpy.run_path(str(ROOT / "launch.py"), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        phases.dump(timings, {"exit_code": code, "modules": sorted(heavy_modules())})
    sys.exit(code)


def heavy_modules() -> set[str]:
    return {
        m for m in ("torch", "transformers", "sklearn", "scipy", "matplotlib") if m in sys.modules
    }


def child_embed(cache_dir: Path, timings: Path) -> None:
    """The cold embedding pass of the default run's texts into ``cache_dir`` (empty cache)."""
    t0 = time.perf_counter()
    from hydra import compose, initialize_config_dir

    import driftbench  # noqa: F401
    from driftbench.tasks.drift_eval.task import embed_data, load_data

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config")
    data = load_data(cfg)
    t = time.perf_counter()
    z, emb = embed_data(cfg, data, cache_dir)
    done = time.perf_counter()
    timings.write_text(
        json.dumps(
            {
                "embedding_pass_s": done - t,
                "process_before_pass_s": t - t0,
                "forward_s": emb["stats"]["wall_s"],
                "cache_hit": emb["stats"]["cache_hit"],
                "n_texts": len(data.texts),
                "shape": list(z.shape),
                "model": cfg.model.name,
                "forward": emb["stats"]["forward"],
                "workers": emb["stats"]["workers"],
            },
            indent=1,
        )
    )


# --- the parent ----------------------------------------------------------------------------

# Each wrapped phase (see ``install``), by the last part of its name, as the per-job split
# groups them.
SUMMARY = {
    "imports (launch.py)": "imports",
    "compose": "Hydra compose (plan + launcher)",
    "prepare (validate, result key)": "prepare (plan + job): validate, result key",
    "resume lookup": "resume lookup",
    "environment (versions, git)": "run dir: config, meta.json, versions, git",
    "run dir: config, meta": "run dir: config, meta.json, versions, git",
    "run dir: meta": "run dir: config, meta.json, versions, git",
    "load data": "load data",
    "embeddings (cache)": "embeddings (cache)",
    "classifier (fit cache)": "classifier (fit cache)",
    "monitors": "monitors",
    "figures": "figures",
    "separability": "separability",
    "write metrics.json": "write metrics.json",
    "trackers": "trackers",
    "sweep report": "sweep report",
}
LOOP = "checkpoint loop (drift, predictions, metrics, checkpoints.csv)"
REST = "process start, Hydra's per-job work, logging"


class ChildFailed(RuntimeError):
    pass


def scratch_cache(root: Path, name: str, real: Path, embeddings: Path | None) -> Path:
    """A cache dir with no fits (and no embeddings unless ``embeddings`` is given) that shares
    the machine's converted models."""
    d = root / name
    d.mkdir()
    for sub in SHARED_CACHE_DIRS:
        if (real / sub).exists():
            (d / sub).symlink_to(real / sub)
    if embeddings is not None:
        (d / "embeddings").symlink_to(embeddings)
    return d


def run_child(args: list[str], log: Path) -> float:
    """``python bench/sweep.py <args>`` as a fresh process; its wall time."""
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *args],
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise ChildFailed(f"{' '.join(args[:1])} failed (exit {proc.returncode}):\n{tail}")
    return wall


def split(measured: dict, wall: float, jobs: int) -> dict:
    """Seconds by phase (``SUMMARY``), whole run and per job; the checkpoint loop is the task's
    time outside its named phases, the rest is process start, Hydra's own work per job and
    logging, so that the parts add up to the wall time. A phase inside another named one
    (a file write inside the figures) counts once, in the outer one."""
    phases = measured["phases"]

    def named(key: str) -> bool:
        return key.split(" > ")[-1] in SUMMARY

    def outermost(key: str) -> bool:
        parts = key.split(" > ")
        return not any(p in SUMMARY for p in parts[:-1])

    total = dict.fromkeys(dict.fromkeys(SUMMARY.values()), 0.0)
    for key, v in phases.items():
        if named(key) and outermost(key):
            total[SUMMARY[key.split(" > ")[-1]]] += v["s"]
    total[LOOP] = 0.0
    for key, v in phases.items():
        if key.endswith("job > task"):
            inside = sum(
                w["s"]
                for k, w in phases.items()
                if k.startswith(key + " > ") and named(k) and outermost(k[len(key) + 3 :])
            )
            total[LOOP] += v["s"] - inside
    total[REST] = wall - sum(total.values())
    return {
        "per_job_s": {k: round(v / jobs, 4) for k, v in total.items()},
        "total_s": {k: round(v, 2) for k, v in total.items()},
        "phases": {k: {"s": round(v["s"], 3), "calls": v["calls"]} for k, v in phases.items()},
    }


def sweep(work: Path, name: str, cache: Path, seeds: int, extra: list[str]) -> dict:
    """The sweep ``python launch.py -m drift=... seed=0..seeds-1 <extra>`` as a fresh process."""
    out = work / f"outputs-{name}"
    argv = [
        "-m",
        f"drift={','.join(DRIFTS)}",
        f"seed={','.join(str(s) for s in range(seeds))}",
        *extra,
        f"runtime.cache_dir={cache}",
        f"runtime.output_root={out}",
        "runtime.progress=false",
    ]
    timings = work / f"{name}.phases.json"
    wall = run_child(["--child-launch", str(timings), "--", *argv], work / f"{name}.log")
    jobs = seeds * len(DRIFTS)
    (sweep_dir,) = (out / "multirun").iterdir()
    return {
        "command": "python launch.py " + " ".join(argv[:-3]),
        "jobs": jobs,
        "wall_s": wall,
        "per_job_s": wall / jobs,
        "classifier_fits": len(list((cache / "fits").glob("*.pkl"))),
        "complete": check_run_dirs(sweep_dir, jobs),
        "split": split(json.loads(timings.read_text()), wall, jobs),
        "_dir": sweep_dir,
    }


def check_run_dirs(sweep_dir: Path, jobs: int) -> dict:
    """Every job's dir complete: meta.json says completed; metrics.json, checkpoints.csv,
    config.yaml and run.log are there, monitors.csv when monitors ran, and the drift figures
    unless runtime.figures=false."""
    import yaml

    dirs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name[:3].isdigit())
    bad = []
    for d in dirs:
        meta = json.loads((d / "meta.json").read_text())
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        wanted = ["metrics.json", "checkpoints.csv", "config.yaml", "run.log"]
        if cfg["monitor"]["monitors"] != []:
            wanted.append("monitors.csv")
        if cfg["runtime"]["figures"]:
            wanted += ["roc_auc_vs_sigma.png", "sfr_confidence_vs_sigma.png", "calibration.png"]
        missing = [f for f in wanted if not (d / f).is_file()]
        if meta.get("status") != "completed" or missing:
            bad.append(f"{d.name}: status {meta.get('status')}, missing {missing}")
    return {
        "run_dirs": len(dirs),
        "all_complete": len(dirs) == jobs and not bad,
        "incomplete": bad,
        "report_md": (sweep_dir / "report.md").is_file(),
    }


def numbers(metrics):
    """metrics.json without wall times (``*_s``, ``timing``), which differ run to run."""
    if isinstance(metrics, dict):
        return {k: numbers(v) for k, v in metrics.items() if k != "timing" and not k.endswith("_s")}
    if isinstance(metrics, list):
        return [numbers(v) for v in metrics]
    return metrics


def check_numbers(work: Path, sweep_dir: Path, embeddings: Path, real: Path, jobs: list) -> dict:
    """Rerun ``jobs`` of the sweep, each alone with an empty fit cache (the uncached path), and
    compare every number of metrics.json with the sweep's."""
    out = {}
    for num in jobs:
        (d,) = sweep_dir.glob(f"{num:03d}-*")
        meta = json.loads((d / "meta.json").read_text())
        cache = scratch_cache(work, f"cache-uncached-{num}", real, embeddings)
        root = work / f"outputs-uncached-{num}"
        argv = [
            *(o for o in meta["overrides"] if not o.startswith("runtime.")),
            f"runtime.cache_dir={cache}",
            f"runtime.output_root={root}",
            "runtime.progress=false",
        ]
        timings = work / f"uncached-{num}.phases.json"
        run_child(["--child-launch", str(timings), "--", *argv], work / f"uncached-{num}.log")
        (fresh,) = root.glob("runs/*/metrics.json")
        a = numbers(json.loads((d / "metrics.json").read_text()))
        b = numbers(json.loads(fresh.read_text()))
        out[d.name] = {
            "overrides": [o for o in meta["overrides"] if not o.startswith("runtime.")],
            "classifier_from_the_cache_in_the_sweep": "from the cache"
            in (d / "run.log").read_text(),
            "numbers_equal_to_an_uncached_run": a == b,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=26, help="seeds per drift type (26: 78 jobs)")
    ap.add_argument(
        "--sample-seeds",
        type=int,
        default=3,
        help="seeds of the monitor=none and figure-free sweeps",
    )
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (run dirs, logs)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sweep.json"))
    args = ap.parse_args()
    for name in ("seeds", "sample_seeds"):
        if getattr(args, name) < 2:
            sys.exit(f"--{name.replace('_', '-')}={getattr(args, name)}; accepted: an integer >= 2")

    from hydra import compose, initialize_config_dir

    import driftbench  # noqa: F401
    from driftbench.fileio import atomic_write_json

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config")
    real = Path(os.path.expanduser(str(cfg.runtime.cache_dir)))
    work = Path(tempfile.mkdtemp(prefix="driftbench-bench-sweep-"))
    try:
        result = measure(work, real, args.seeds, args.sample_seeds)
    except ChildFailed as e:
        sys.exit(f"bench/sweep.py: {e}\n(scratch dir kept: {work})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    atomic_write_json(args.out, result)
    s, e = result["sweep"], result["embedding_pass"]
    print(
        f"{s['jobs']}-job sweep {s['wall_s']:.1f} s vs cold embedding pass "
        f"{e['embedding_pass_s']:.1f} s: {result['ratio']:.2f}x (target <= {TARGET_RATIO}); "
        f"per job {s['per_job_s']:.2f} s, of which monitors "
        f"{s['split']['per_job_s']['monitors']:.2f} s, figures "
        f"{s['split']['per_job_s']['figures']:.2f} s; run dirs complete "
        f"{result['run_dirs_complete']}, numbers unchanged {result['numbers_unchanged']} "
        f"-> {args.out}"
    )


def measure(work: Path, real: Path, seeds: int, sample_seeds: int) -> dict:
    from driftbench.provenance import environment

    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    load_before = os.getloadavg()
    # 1. the cold embedding pass, into an empty embedding cache
    cache = scratch_cache(work, "cache", real, None)
    embed_wall = run_child(["--child-embed", str(cache), str(work / "embed.json")], work / "e.log")
    embed = {**json.loads((work / "embed.json").read_text()), "process_wall_s": embed_wall}
    embeddings = cache / "embeddings"
    # 2. the sweep on those embeddings with an empty fit cache; 3. samples without monitors,
    # without figures, each with its own empty fit cache
    main_sweep = sweep(work, "sweep", cache, seeds, [])
    samples = {}
    for name, extra in (
        ("monitor_none", ["monitor=none"]),
        ("figures_on", ["runtime.figures=true"]),
    ):
        c = scratch_cache(work, f"cache-{name}", real, embeddings)
        samples[name] = sweep(work, name, c, sample_seeds, extra)
    # 4. every number of two cached-fit jobs against an uncached run
    jobs = seeds * len(DRIFTS)
    unchanged = check_numbers(work, main_sweep["_dir"], embeddings, real, [seeds, jobs - 1])
    # 5. one job as a fresh process (a Slurm or submitit job's start-up)
    one_cache = scratch_cache(work, "cache-one", real, embeddings)
    one_argv = ["seed=0", f"runtime.cache_dir={one_cache}", f"runtime.output_root={work / 'one'}"]
    one_argv.append("runtime.progress=false")
    one_wall = run_child(
        ["--child-launch", str(work / "one.json"), "--", *one_argv], work / "o.log"
    )
    one = json.loads((work / "one.json").read_text())
    task_s = sum(v["s"] for k, v in one["phases"].items() if k.endswith("job > task"))
    for s in (main_sweep, *samples.values()):
        s.pop("_dir")
    ratio = main_sweep["wall_s"] / embed["embedding_pass_s"]
    env = environment()
    per_job = main_sweep["split"]["per_job_s"]
    return {
        "what": "a drift_eval sweep (basic launcher, default config: monitors on, no per-run "
        "figures in a sweep's jobs) on "
        "cached embeddings with an empty classifier-fit cache, against one cold embedding pass "
        "of the same 2,000 texts, in one run",
        "target_ratio": TARGET_RATIO,
        "ratio": ratio,
        "meets_target": ratio <= TARGET_RATIO,
        "embedding_pass": embed,
        "sweep": main_sweep,
        "samples": samples,
        "sample_per_job_s": {
            "default (from the sweep)": main_sweep["per_job_s"],
            **{k: v["per_job_s"] for k, v in samples.items()},
        },
        "estimated_ratio_without": {
            name: (main_sweep["wall_s"] - per_job[part] * jobs) / embed["embedding_pass_s"]
            for name, part in (("monitors", "monitors"), ("figures", "figures"))
        },
        "run_dirs_complete": all(
            s["complete"]["all_complete"] for s in (main_sweep, *samples.values())
        ),
        "numbers_unchanged": all(
            v["numbers_equal_to_an_uncached_run"] and v["classifier_from_the_cache_in_the_sweep"]
            for v in unchanged.values()
        ),
        "numbers_checked": unchanged,
        "one_job_fresh_process": {
            "command": "python launch.py " + " ".join(one_argv[:1]),
            "wall_s": one_wall,
            "before_the_task_s": one_wall - task_s,
            "task_s": task_s,
            "heavy_modules_imported": one["modules"],
            "split": split(one, one_wall, 1)["per_job_s"],
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_before": load_before,
            "load_avg_after": os.getloadavg(),
            "started": started,
        },
        "versions": {
            k: env[k]
            for k in (
                "driftbench",
                "git_commit",
                "git_dirty",
                "python",
                "torch",
                "sklearn",
                "numpy",
            )
        },
        "notes": (
            "Measured while other work shared the cores (load_avg_before above 1): every wall "
            "time is an upper bound of a quiet machine's. "
            if load_before[0] > 1.0
            else "Measured on a quiet machine (load_avg_before below 1). "
        )
        + "The samples have fewer seeds, so their per-job times include a larger share of "
        "process start and the report; figures_on is the sweep with runtime.figures=true (every "
        "job draws its own figures), monitor_none without monitors.",
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-launch":
        child_launch(Path(sys.argv[2]), sys.argv[4:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-embed":
        child_embed(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
