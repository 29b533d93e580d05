"""How many windows a checkpoint needs: every monitor's false-alarm rate, power and sigma at
alarm with ``monitor.n_windows`` = 50 against 100, in one run, over seeds and fresh window draws.

A window's test does not depend on how many other windows there are, so the per-window alarm
probability is the same at any n_windows; what n changes is how precisely a run measures it
(and, for the monitors without a p-value, the threshold: the 95th percentile of n undrifted
calibration windows). On the default run's data (SmolLM2-135M-Instruct embeddings of 2,000
Davidson tweets, cached by any drift run) under Gaussian drift on experiment=monitors' sigma
schedule, for each seed (its own split, classifier and reference) and each of ``--draws`` fresh
draws of the windows (``Monitoring``'s seed), the scorecard as a drift run writes it. The JSON
holds, per monitor and n, the false-alarm rate and the power per sigma: their mean over draws
and seeds, their standard deviation across them (the noise a single run carries), and the
difference of the means between the two n with its standard error.

    python bench/monitor_windows.py [--seeds 42 43 44] [--draws 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import driftbench  # noqa: E402,F401
from driftbench import drift as drift_ops  # noqa: E402
from driftbench.classifier import make_classifier  # noqa: E402
from driftbench.fileio import atomic_write_json  # noqa: E402
from driftbench.tasks.drift_eval.monitoring import Monitoring  # noqa: E402
from driftbench.tasks.drift_eval.task import embed_data, load_data  # noqa: E402

SIGMAS = [0.0, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.15, 0.25]


def seed_data(seed: int):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[f"seed={seed}", "runtime.device=cpu", "runtime.progress=false"],
        )
    data = load_data(cfg)
    z, _ = embed_data(cfg, data)
    return cfg, data, drift_ops.normalize(z.astype(np.float64))


def scorecards(seed: int, windows: list[int], draws: int) -> dict[int, list[dict]]:
    """{n: [the monitors' scores of one draw of the windows, per draw]} for one seed."""
    cfg, data, z = seed_data(seed)
    y = data.labels
    tr, va, te = (data.split[s] for s in ("train", "val", "test"))
    clf = make_classifier(OmegaConf.to_container(cfg.classifier, resolve=True), seed)
    clf = clf.fit(z[tr], y[tr], z[va], y[va])
    operator = drift_ops.make_drift("gaussian", z.shape[1], np.random.default_rng([seed, 1]))
    drifted = [operator(z[te], s) for s in SIGMAS]
    p = [clf.predict_proba(zc) for zc in drifted]
    out = {}
    for n in windows:
        cfg.monitor.n_windows = n
        out[n] = []
        for draw in range(draws):
            monitoring = Monitoring(cfg, clf, z, y, data.split, 1000 * (draw + 1) + seed)
            for zc, pc in zip(drifted, p, strict=True):
                monitoring.checkpoint(zc, pc)
            out[n].append(monitoring.score(SIGMAS, 0.0, "sigma")[0])
    return out


def summary(cards: list[dict], names: list[str]) -> dict:
    """Per monitor: false alarms and power, mean over all cards and sd across draws (pooled
    over seeds), and how often each sigma at alarm came out."""
    out = {}
    for name in names:
        fa = np.array([c["by_monitor"][name]["false_alarm_rate"] for c in cards])
        power = np.array([c["by_monitor"][name]["power"] for c in cards])
        at = [c["by_monitor"][name]["sigma_at_alarm"] for c in cards]
        out[name] = {
            "false_alarm_rate_mean": float(fa.mean()),
            "false_alarm_rate_sd": float(fa.std(ddof=1)),
            "power_mean": power.mean(axis=0).round(4).tolist(),
            "power_sd": power.std(axis=0, ddof=1).round(4).tolist(),
            "sigma_at_alarm": {str(s): at.count(s) for s in sorted(set(at), key=str)},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--windows", type=int, nargs="+", default=[100, 50])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "monitor_windows.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    per_seed = {seed: scorecards(seed, args.windows, args.draws) for seed in args.seeds}
    names = list(next(iter(per_seed.values()))[args.windows[0]][0]["by_monitor"])
    by_n = {
        str(n): summary([card for seed in args.seeds for card in per_seed[seed][n]], names)
        for n in args.windows
    }
    n_cards = len(args.seeds) * args.draws
    deviations = {}
    for name in names:
        a, b = (by_n[str(n)][name] for n in args.windows[:2])
        fa_se = np.hypot(a["false_alarm_rate_sd"], b["false_alarm_rate_sd"]) / np.sqrt(n_cards)
        diff = np.subtract(b["power_mean"], a["power_mean"])
        se = np.hypot(a["power_sd"], b["power_sd"]) / np.sqrt(n_cards)
        worst = int(np.argmax(np.abs(diff)))
        deviations[name] = {
            "false_alarm_rate_diff": b["false_alarm_rate_mean"] - a["false_alarm_rate_mean"],
            "false_alarm_rate_diff_se": float(fa_se),
            "power_diff_max": float(abs(diff[worst])),
            "power_diff_max_se": float(se[worst]),
            "power_diff_max_sigma": SIGMAS[worst],
        }
    result = {
        "sigmas": SIGMAS,
        "seeds": args.seeds,
        "draws": args.draws,
        "windows": args.windows,
        "wall_s": time.perf_counter() - t0,
        "by_n_windows": by_n,
        "difference": deviations,
    }
    atomic_write_json(args.out, result)
    for name, d in deviations.items():
        print(
            f"{name:20s} false alarms {d['false_alarm_rate_diff']:+.3f} "
            f"(se {d['false_alarm_rate_diff_se']:.3f}), power max |diff| "
            f"{d['power_diff_max']:.3f} (se {d['power_diff_max_se']:.3f}) "
            f"at sigma {d['power_diff_max_sigma']}"
        )
    print(f"-> {args.out} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
