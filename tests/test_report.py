"""The sweep report: one row per complete run, failed runs listed as skipped, numbers equal to
the run dirs' own metrics."""

import csv
import json

import pytest
import yaml
from conftest import broken_model_folder

from driftbench.launcher import run
from driftbench.report import main, report
from driftbench.runs import result_files

TINY = ["model=tiny_random", "data.n_samples=200", "schedule=list", "schedule.sigmas=[0,0.05,0.2]"]


@pytest.fixture
def sweep(make_cfg, tmp_path):
    for drift in ("gaussian", "subspace"):
        for seed in (0, 1):
            run(make_cfg(*TINY, f"drift={drift}", f"seed={seed}"))
    broken = broken_model_folder(tmp_path)
    with pytest.raises(RuntimeError):  # fails after its run dir exists
        run(make_cfg(*TINY[1:], "model=hf", f"model.name_or_path={broken}"))
    return tmp_path / "outputs"


def test_report_has_one_row_per_complete_run_and_lists_the_failed_one(sweep, tmp_path):
    res = report([sweep], tmp_path / "rep")
    assert res["n_runs"] == 4 and len(res["skipped"]) == 1
    assert "model 'hf' failed to load" in res["skipped"][0][1]
    assert {"drift.name", "seed"} <= set(res["axes"])
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Skipped 1 run(s)" in md and "| gaussian |" in md.replace("drift.name", "")
    for fig in ("report_drift_curves.png", "report_separability.png"):
        assert (tmp_path / "rep" / fig).stat().st_size > 1000


def test_report_numbers_are_the_run_dirs_own_metrics(sweep, tmp_path):
    report([sweep], tmp_path / "rep")
    rows = list(csv.DictReader(open(tmp_path / "rep" / "report.csv")))
    assert len(rows) == 4
    for row in rows:
        m = json.loads(open(f"{row['run_dir']}/metrics.json").read())
        assert float(row["roc_auc_at_max"]) == pytest.approx(m["checkpoints"][-1]["roc_auc"])
        assert float(row["roc_auc_at_0"]) == pytest.approx(m["checkpoints"][0]["roc_auc"])
        assert float(row["ece_at_max"]) == pytest.approx(m["checkpoints"][-1]["ece"])
        assert float(row["C"]) == m["classifier"]["c"]


def test_a_run_kept_without_its_figures_is_reported_but_one_with_edited_numbers_is_not(
    sweep, tmp_path
):
    """A committed example keeps a sweep's numbers and drops its per-run figures: the report
    reads it; a metrics.json edited since the run completed is still refused."""
    dirs = sorted(p.parent for p in sweep.glob("**/metrics.json"))
    for png in dirs[0].glob("*.png"):
        png.unlink()
    (dirs[1] / "metrics.json").write_text((dirs[1] / "metrics.json").read_text() + " ")
    res = report([sweep], tmp_path / "rep")
    assert res["n_runs"] == 3
    assert any(str(dirs[1]) in d and "does not match" in why for d, why in res["skipped"])


def test_failure_cliff_and_auc_drop_of_a_real_run_follow_their_definitions(make_cfg, tmp_path):
    """A drift run whose AUC crosses the chance band (the tiny model with mean pooling: its mean
    token embedding still ranks these tweets). From the run's checkpoints.csv, roc_auc_drop is
    the AUC at sigma 0 less the AUC at sigma max and failure_cliff_sigma the first sigma whose
    AUC is below 0.55; metrics.json, report.csv and the report's cliff table say the same."""
    from driftbench.tasks.drift_eval.task import AUC_CHANCE_BAND

    assert AUC_CHANCE_BAND == 0.55  # the band the docs and the report's table name
    schedule = ["schedule=list", "schedule.sigmas=[0,0.1,0.15,0.2,0.25,0.3,1]"]
    mean = ["model=tiny_random", "embed.pooling=mean", "data.n_samples=1000"]
    run(make_cfg(*mean, *schedule, "monitor=none", "runtime.figures=false"))
    (d,) = [p.parent for p in (tmp_path / "outputs").glob("**/metrics.json")]
    rows = list(csv.DictReader(open(d / "checkpoints.csv")))
    sigma = [float(r["sigma"]) for r in rows]
    auc = [float(r["roc_auc"]) for r in rows]
    assert len(sigma) == 7 and auc[0] > 0.6  # ranks well before any drift
    cliff = next(s for s, a in zip(sigma, auc, strict=True) if a < 0.55)
    assert cliff > 0 and auc[sigma.index(cliff) - 1] >= 0.55  # a crossing, not a start below
    # the run tells the band from chance: its first AUC below 0.5 comes at a later sigma
    assert next(s for s, a in zip(sigma, auc, strict=True) if a < 0.5) > cliff
    summary = json.loads((d / "metrics.json").read_text())["summary"]
    assert summary["failure_cliff_sigma"] == cliff
    assert summary["roc_auc_drop"] == pytest.approx(auc[0] - auc[-1], rel=1e-12)

    report([tmp_path / "outputs"], tmp_path / "rep")
    (row,) = csv.DictReader(open(tmp_path / "rep" / "report.csv"))
    assert float(row["failure_cliff_sigma"]) == cliff
    assert float(row["roc_auc_drop"]) == pytest.approx(auc[0] - auc[-1], rel=1e-12)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert any(line.endswith(f"| {cliff:.3g} |") for line in md.splitlines())


def test_report_cli_refuses_a_missing_path(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nope")])
    assert "no such path" in capsys.readouterr().err


def test_cohens_d_is_mean_difference_over_pooled_sd():
    import numpy as np

    from driftbench.tasks.rho_sft.summary_stats import cohens_d

    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0, 5.0])
    pooled = np.sqrt((2 * 1.0 + 3 * np.var(b, ddof=1)) / 5)
    assert cohens_d(a, b) == pytest.approx((2.0 - 3.5) / pooled)


def config(task: str = "drift_eval", seed: int = 0, **overrides) -> dict:
    """A run's resolved config.yaml as the report reads it; ``overrides``: dotted key -> value
    with ``__`` for the dot (``sft__lambda_rho=0.5``)."""
    cfg = {
        "task": {"name": task},
        "model": {"name": "tiny_random", "pooling": "last_token"},
        "data": {"name": "davidson", "n_samples": 200},
        "drift": {"name": "gaussian"},
        "schedule": {"name": "list", "sigmas": [0.0, 0.05, 0.2]},
        "classifier": {"name": "logreg", "degenerate_dims": "drop"},
        "sft": {"condition": {"name": "rho_guided"}, "lambda_rho": 0.2, "margin": 0.1},
        "seed": seed,
        "runtime": {"output_root": f"/tmp/outputs-{seed}"},
    }
    for key, value in overrides.items():
        *parents, leaf = key.split("__")
        node = cfg
        for part in parents:
            node = node[part]
        node[leaf] = value
    return cfg


def rho_run(condition: str, behaviors: dict, seed: int = 0, cfg: dict | None = None, **metrics):
    """A rho_sft run as the report reads it (meta, config, metrics), at lambda_rho 0.2, gamma
    0.1 unless ``cfg`` (from config()) says otherwise."""
    cfg = cfg or config("rho_sft", seed, sft__condition={"name": condition})
    return {
        "meta": {"task": "rho_sft", "status": "completed"},
        "config": cfg,
        "metrics": {
            "condition": condition,
            "lambda_rho": cfg["sft"]["lambda_rho"],
            "margin_gamma": cfg["sft"]["margin"],
            "behaviors": behaviors,
            "training": {"final_sft_loss": 1.0, "final_contrastive_loss": 0.5},
            **metrics,
        },
    }


def drift_run(cfg: dict, aucs: list[float]) -> dict:
    """A drift_eval run as the report reads it: ROC-AUC ``aucs`` at the config's sigmas."""
    sigmas = cfg["schedule"]["sigmas"]
    checkpoints = [
        {
            "sigma": s,
            "roc_auc": a,
            "silent_failure_rate_pct": 10.0,
            "ece": 0.1,
            "mean_confidence": 0.9,
        }
        for s, a in zip(sigmas, aucs, strict=True)
    ]
    cliff = next((s for s, a in zip(sigmas, aucs, strict=True) if a < 0.55), None)
    return {
        "meta": {"task": "drift_eval", "status": "completed"},
        "config": cfg,
        "metrics": {
            "model": {"name": cfg["model"]["name"], "variant": "instruct"},
            "sigmas": sigmas,
            "checkpoints": checkpoints,
            "summary": {
                "roc_auc_at_0": aucs[0],
                "roc_auc_at_max": aucs[-1],
                "failure_cliff_sigma": cliff,
            },
            "classifier": {"c": 1.0},
            "separability": {"silhouette": 0.1, "fisher_ratio_per_dim": 0.2, "class_overlap": 0.3},
        },
    }


def write_runs(root, runs: list[dict]):
    """Each run as a run dir under ``root`` (config.yaml, metrics.json, then meta.json with
    their digests, as a run that completes records them), in order."""
    for i, r in enumerate(runs):
        d = root / f"{i:03d}-run"
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.safe_dump(r["config"]))
        (d / "metrics.json").write_text(json.dumps(r["metrics"]))
        (d / "meta.json").write_text(json.dumps({**r["meta"], "files": result_files(d)}))
    return root


def test_report_md_has_every_runs_columns_not_just_the_first_runs(tmp_path):
    runs = [
        drift_run(config(), [0.9, 0.8, 0.5]),
        rho_run("rho_guided", {"factual": {"delta_rho": 0.1}}),
    ]
    report([write_runs(tmp_path / "sweep", runs)], tmp_path / "rep")
    head = (tmp_path / "rep" / "report.md").read_text().splitlines()[0]
    assert "| roc_auc_at_max |" in head and "| delta_rho_factual |" in head
    assert "| final_sft_loss |" in head
    csv_head = next(csv.reader(open(tmp_path / "rep" / "report.csv")))
    assert [c for c in csv_head if c != "run_dir"] == head.strip("| ").split(" | ")


def test_rho_tables_compare_conditions_with_welch_t_test():
    from scipy.stats import ttest_ind

    from driftbench.report import group_runs
    from driftbench.tasks.rho_sft.summary import rho_tables

    def fake(condition, delta, seed):
        return rho_run(condition, {"factual": {"delta_rho": delta}}, seed)

    sft = [0.01, 0.02, 0.00]
    rho = [0.10, 0.12, 0.08]
    runs = [fake("sft_only", v, s) for s, v in enumerate(sft)]
    md = rho_tables(group_runs(runs + [fake("rho_guided", v, s) for s, v in enumerate(rho)]))
    assert "| rho_guided | 0.2 | 0.1 | 3 | +0.1000 ± 0.0200 |" in md
    p = ttest_ind(rho, sft, equal_var=False).pvalue
    assert f"p={p:.3g}" in md and "d=" in md


def test_rho_tables_also_give_the_confidence_gap_of_the_seeds_tables():
    """The seed's tables are in rho-eval's mlx_quick_rho units (mean log-prob positive minus
    negative over contrast pairs); a run's gap delta is after - before of the audit's paired
    mean CE gap, read from older metrics that stored only the two gaps too."""
    from scipy.stats import ttest_ind

    from driftbench.report import group_runs
    from driftbench.tasks.rho_sft.summary import rho_measure, rho_tables

    def fake(condition, gap_before, gap_after, stored, seed=0):
        tox = {"delta_rho": 0.0, "mean_ce_gap_before": gap_before, "mean_ce_gap_after": gap_after}
        if stored:
            tox["delta_mean_ce_gap"] = gap_after - gap_before
        # bias here is a generation behaviour without pairs: no gap
        return rho_run(condition, {"toxicity": tox, "bias": {"delta_rho": gap_after}}, seed)

    assert rho_measure(
        fake("x", 0.5, 1.25, False)["metrics"]["behaviors"]["toxicity"], "delta_mean_ce_gap"
    ) == pytest.approx(0.75)
    assert rho_measure({"delta_rho": 0.1}, "delta_mean_ce_gap") is None
    sft = [(0.5, 0.5625), (0.5, 0.4375), (0.5, 0.5)]  # deltas +1/16, -1/16, 0 (exact)
    rho = [(0.5, 1.5), (0.5, 1.75), (0.5, 1.25)]  # deltas 1, 1.25, 0.75
    runs = [fake("sft_only", b, a, i % 2 == 0, i) for i, (b, a) in enumerate(sft)]
    runs += [fake("rho_guided", b, a, i % 2 == 1, i) for i, (b, a) in enumerate(rho)]
    groups = group_runs(runs)
    md = rho_tables(groups, "delta_mean_ce_gap")
    assert "### Δgap per condition" in md and "mlx_quick_rho" in md
    assert "| rho_guided | 0.2 | 0.1 | 3 | +1.0000 ± 0.2500 |" in md
    assert "| sft_only | 0.2 | 0.1 | 3 | +0.0000 ± 0.0625 |" in md
    assert "Δgap bias" not in md and "Δgap toxicity" in md
    p = ttest_ind([1.0, 1.25, 0.75], [0.0625, -0.0625, 0.0], equal_var=False).pvalue
    assert f"p={p:.3g}" in md
    # the audit's table keeps every behaviour
    assert "Δρ bias" in rho_tables(groups) and "Δρ toxicity" in rho_tables(groups)


def test_stress_tables_count_refusals_like_the_seeds_table():
    """'72% (18/25)' per condition, summed over seeds, the untouched model first; and 'k/n' per
    category. Older metrics without n_refused give the count from the rate."""
    from driftbench.report import group_runs
    from driftbench.tasks.rho_sft.summary import stress_tables

    def side(cats: dict[str, tuple[int, int]], with_counts=True):
        k, n = sum(v[0] for v in cats.values()), sum(v[1] for v in cats.values())
        out = {
            "n": n,
            "refusal_rate": k / n,
            "by_category": {c: {"n": b, "refusal_rate": a / b} for c, (a, b) in cats.items()},
        }
        if with_counts:
            out["n_refused"] = k
            for c, (a, _) in cats.items():
                out["by_category"][c]["n_refused"] = a
        return out

    before = {
        "harmful": side({"authority": (2, 2), "fictional": (1, 3)}),
        "benign": side({"b": (0, 15)}),
    }

    def fake(condition, harmful, benign, with_counts=True, seed=0):
        after = {"harmful": side(harmful, with_counts), "benign": side({"b": benign}, with_counts)}
        return rho_run(condition, {}, seed, stress_test={"before": before, "after": after})

    md = stress_tables(
        group_runs(
            [
                fake("sft_only", {"authority": (2, 2), "fictional": (2, 3)}, (1, 15)),
                fake("sft_only", {"authority": (1, 2), "fictional": (0, 3)}, (0, 15), False, 1),
                fake("contrastive_only", {"authority": (2, 2), "fictional": (3, 3)}, (0, 15)),
            ]
        )
    )
    assert "| before training | 1 | 60% (3/5) | 0% (0/15) |" in md
    assert "| sft_only (λρ 0.2, γ 0.1) | 2 | 50% (5/10) | 3% (1/30) |" in md
    assert "| contrastive_only (λρ 0.2, γ 0.1) | 1 | 100% (5/5) | 0% (0/15) |" in md
    assert "| fictional | 1/3 | 3/3 | 2/6 |" in md  # before, contrastive_only, sft_only
    assert "| authority | 2/2 | 2/2 | 3/4 |" in md
    # a run without a stress test adds nothing
    no_test = rho_run("sft_only", {}, stress_test={"before": None, "after": None})
    assert stress_tables(group_runs([no_test])) == ""


# One axis at a time away from config()'s defaults; each pair of seeds is one group.
DRIFT_VARIANTS = {
    "base": {},
    "model": {"model__name": "minilm_l6"},
    "data": {"data__name": "sbic"},
    "sigmas": {"schedule__sigmas": [0.0, 0.1, 0.3]},  # as many sigmas as the default
    "drift": {"drift__name": "subspace"},
    "classifier": {"classifier__name": "paper_c1"},
}


def test_drift_runs_are_averaged_over_seeds_alone(tmp_path):
    """Runs that differ in anything but the seed (model, data, sigmas of equal count, drift,
    classifier) stay apart: one table row and one curve each, at their own sigmas, each the mean
    of exactly its own two seeds."""
    runs, final_auc = [], {}
    for i, (name, overrides) in enumerate(DRIFT_VARIANTS.items()):
        for seed in (0, 1):
            auc = 0.7 - 0.2 * seed - 0.01 * i  # seed 1 falls under the cliff at the last sigma
            runs.append(drift_run(config(seed=seed, **overrides), [0.9, 0.8, auc]))
        final_auc[name] = 0.6 - 0.01 * i
    sweep = write_runs(tmp_path / "sweep", runs)
    res = report([sweep], tmp_path / "rep")
    assert {"model.name", "data.name", "schedule.sigmas", "drift.name", "classifier.name"} <= set(
        res["axes"]
    )
    md = (tmp_path / "rep" / "report.md").read_text()
    cliff_rows = [line for line in md.splitlines() if line.endswith("| none, 0.2 |")]
    cliff_rows += [line for line in md.splitlines() if line.endswith("| none, 0.3 |")]
    assert len(cliff_rows) == len(DRIFT_VARIANTS)  # one row per variant, two seeds in each
    assert all("| 2 |" in line for line in cliff_rows)
    assert sum("[0.0, 0.1, 0.3]" in line for line in cliff_rows) == 1

    from driftbench.report import collect, group_runs
    from driftbench.tasks.drift_eval.summary import curves

    groups = group_runs(collect([sweep])[0])
    assert len(groups) == len(DRIFT_VARIANTS) and all(sorted(g.seeds) == [0, 1] for g in groups)
    lines = curves(groups)
    assert len({c["label"] for c in lines}) == len(DRIFT_VARIANTS)
    by_sigmas = {tuple(c["sigmas"]) for c in lines}
    assert by_sigmas == {(0.0, 0.05, 0.2), (0.0, 0.1, 0.3)}
    assert sorted(c["mean"]["roc_auc"][-1] for c in lines) == pytest.approx(
        sorted(final_auc.values())
    )
    assert all(c["n"] == 2 for c in lines)
    assert any("sigmas=[0.0, 0.1, 0.3]" in c["label"] for c in lines)
    assert (tmp_path / "rep" / "report_drift_curves.png").stat().st_size > 1000


RHO_VARIANTS = {  # one axis at a time away from rho_run()'s config
    "base": {},
    "condition": {"sft__condition": {"name": "sft_only"}},
    "lambda_rho": {"sft__lambda_rho": 0.5},
    "gamma": {"sft__margin": 0.05},
    "model": {"model__name": "minilm_l6"},
}


def test_rho_runs_are_averaged_and_compared_over_seeds_alone(tmp_path):
    """A sweep over model, condition, λρ and γ keeps every setting apart: its own row, mean and
    t-test over its two seeds, and the stress test's "before" of its own model."""
    from scipy.stats import ttest_ind

    def stress(refused: int) -> dict:
        side = {"n": 2, "n_refused": refused, "refusal_rate": refused / 2}
        side["by_category"] = {"fictional": dict(side)}
        return {"harmful": side, "benign": {"n": 2, "n_refused": 0, "refusal_rate": 0.0}}

    runs, deltas = [], {}
    for i, (name, overrides) in enumerate(RHO_VARIANTS.items()):
        deltas[name] = [0.1 * i, 0.1 * i + 0.01]
        for seed, delta in enumerate(deltas[name]):
            cfg = config("rho_sft", seed, **overrides)
            before = stress(2 if name == "model" else 1)
            test = {"before": before, "after": stress(seed)}
            runs.append(
                rho_run(cfg["sft"]["condition"]["name"], {"factual": {"delta_rho": delta}}, cfg=cfg)
            )
            runs[-1]["metrics"]["stress_test"] = test
    res = report([write_runs(tmp_path / "sweep", runs)], tmp_path / "rep")
    assert res["n_runs"] == 10
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.count("\n| rho_sft |") == 10  # one row per run
    assert "| condition | λρ | γ | model | n | Δρ factual |" in md
    for name, row in {
        "base": "| rho_guided | 0.2 | 0.1 | tiny_random | 2 |",
        "condition": "| sft_only | 0.2 | 0.1 | tiny_random | 2 |",
        "lambda_rho": "| rho_guided | 0.5 | 0.1 | tiny_random | 2 |",
        "gamma": "| rho_guided | 0.2 | 0.05 | tiny_random | 2 |",
        "model": "| rho_guided | 0.2 | 0.1 | minilm_l6 | 2 |",
    }.items():
        mean = sum(deltas[name]) / 2
        assert f"{row} {mean:+.4f} ± 0.0071 |" in md, name
    # rho_guided on tiny_random against sft_only on tiny_random: their own two seeds each
    p = ttest_ind(deltas["base"], deltas["condition"], equal_var=False).pvalue
    assert f"| rho_guided | 0.2 | 0.1 | tiny_random | d=-14.14, p={p:.3g} |" in md
    # no sft_only run on minilm_l6: nothing to compare it with
    assert "| rho_guided | 0.2 | 0.1 | minilm_l6 | d=" not in md
    # each model's untouched stress test, then its runs
    assert "| before training (model=minilm_l6) | 1 | 100% (2/2) |" in md
    assert "| before training (model=tiny_random) | 1 | 50% (1/2) |" in md
    assert "| rho_guided (λρ 0.2, γ 0.1, model=minilm_l6) | 2 | 25% (1/4) |" in md
    assert "| rho_guided (λρ 0.5, γ 0.1, model=tiny_random) | 2 | 25% (1/4) |" in md
    assert {"report_rho_dose_response.png", "report_rho_margin.png"} <= set(res["figures"])


def test_report_lists_a_running_run_whose_process_is_gone_as_died(tmp_path):
    import socket
    import subprocess
    import sys

    pid = int(  # a process that has ended
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    runs = [drift_run(config(), [0.9, 0.8, 0.5]), drift_run(config(seed=1), [0.9, 0.8, 0.5])]
    runs[1]["meta"].update(status="running", host=socket.gethostname(), pid=pid)
    res = report([write_runs(tmp_path / "sweep", runs)], tmp_path / "rep")
    assert res["n_runs"] == 1 and [why for _, why in res["skipped"]] == ["status died"]
    assert "status died" in (tmp_path / "rep" / "report.md").read_text()


def replicate(seed: int, data_seed: int, auc: float, drift: str = "gaussian") -> dict:
    """A drift_eval run (``drift_run``) of one setting with its seed, data seed and ROC-AUC
    from 1.0 at sigma 0 to ``auc`` at the largest sigma."""
    cfg = config(seed=seed, drift={"name": drift})
    cfg["data"]["seed"] = data_seed
    run = drift_run(cfg, [1.0, 0.9, auc])
    run["metrics"]["summary"].update(silent_failure_rate_pct_at_max=40.0, ece_at_max=0.1)
    return run


def test_runs_that_differ_in_seed_or_data_seed_alone_are_replicates_of_one_setting():
    from driftbench.report import group_runs

    runs = [replicate(s, d, 0.7) for s in (0, 1) for d in (42, 43)]
    runs += [replicate(0, 42, 0.6, drift="directional")]
    groups = group_runs(runs)
    assert [len(g.runs) for g in groups] == [1, 4]  # directional, gaussian
    assert list(groups[0].values) == ["drift.name"]  # neither seed is an axis


def test_the_replicate_table_gives_each_settings_interval_and_which_ones_overlap():
    from driftbench.intervals import replicate_interval
    from driftbench.report import group_runs
    from driftbench.tasks.drift_eval.summary import replicate_table

    aucs = {"directional": [0.60, 0.62, 0.61], "gaussian": [0.70, 0.72, 0.71]}
    aucs["subspace"] = [0.59, 0.75, 0.67]  # wide: reaches both others
    runs = [replicate(0, 42 + i, a, d) for d, values in aucs.items() for i, a in enumerate(values)]
    text = replicate_table(group_runs(runs))
    rows = {
        line.split(" | ")[1]: line
        for line in text.splitlines()
        if line.startswith("| A") or line.startswith("| B") or line.startswith("| C")
    }
    mean, low, high = replicate_interval(aucs["gaussian"])
    assert f"{mean:.3f} [{low:.3f}, {high:.3f}] ~C" in rows["gaussian"]
    assert "~C" in rows["directional"] and "~A, B" in rows["subspace"]
    assert "3 (1 × 3)" in rows["gaussian"]
    assert replicate_table(group_runs([replicate(0, 42, 0.7)])) == ""  # one run: no interval
