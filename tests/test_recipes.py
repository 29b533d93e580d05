"""The extension recipes of docs/architecture.md, each followed inside a test: a classifier, a
mitigation, a monitor and a task are added here (the class or module, registered, and its
config node in Hydra's store), and a run picks each up by name as it picks up the shipped ones.
A synthetic drift's recipe is tests/test_checkpoints.py's; a real update's and an adapter's are
exercised by tests/test_updates.py and tests/test_adapters.py. If a recipe needs one more file
than the page says, these fail."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field

import numpy as np
import pytest
from hydra.core.config_store import ConfigStore
from sklearn.metrics import roc_auc_score
from sklearn.naive_bayes import GaussianNB

from driftbench import drift as D
from driftbench import mitigations as MIT
from driftbench import monitors as MON
from driftbench import schema, tasks
from driftbench.classifier import CLASSIFIERS
from driftbench.classifier.base import Classifier
from driftbench.launcher import run
from driftbench.monitors.registry import Monitor
from driftbench.monitors.views import Outcome
from driftbench.tasks.contract import contract_violations

TINY = ["model=tiny_random", "data.n_samples=200", "schedule=list", "schedule.sigmas=[0,0.05]"]


@pytest.fixture
def stored(monkeypatch):
    """``stored(group, name, node)``: a config node in Hydra's store for the test's length."""
    store, added = ConfigStore.instance(), []

    def _store(group: str, name: str, node) -> None:
        store.store(group=group, name=name, node=node)
        added.append((group, f"{name}.yaml"))

    yield _store
    for group, name in added:
        del store.repo[group][name]


def only_metrics(tmp_path) -> dict:
    (path,) = sorted((tmp_path / "outputs").glob("**/metrics.json"))
    return json.loads(path.read_text())


# ── a classifier ─────────────────────────────────────────────────────────────────────────────


class NaiveBayes(Classifier):
    """Gaussian naive Bayes, its variance smoothing chosen on validation."""

    PARAM, LABEL, SCALED = "var_smoothing", "var_smoothing", False

    def __init__(self, *, var_smoothing_grid, select_by: str, seed: int):
        super().__init__(grid=var_smoothing_grid, select_by=select_by, seed=seed, scaling={})

    def _settings(self) -> dict:
        return {"select_by": self.select_by}

    def _estimator(self, value, n_train: int) -> GaussianNB:
        return GaussianNB(var_smoothing=value)


@dataclass
class NaiveBayesSettings(schema.Classifier):
    var_smoothing_grid: list[float] = field(default_factory=lambda: [1e-9, 1e-3, 1e-1])
    select_by: str = "auc"


def test_a_classifier_added_by_its_recipe_is_fitted_chosen_and_scored(
    monkeypatch, stored, make_cfg, tmp_path
):
    from driftbench.tasks.drift_eval.task import embed_data, load_data

    monkeypatch.setitem(CLASSIFIERS, "naive_bayes", NaiveBayes)
    stored("classifier", "naive_bayes", NaiveBayesSettings(name="naive_bayes"))
    cfg = make_cfg(*TINY, "classifier=naive_bayes", "monitor=none")
    run(cfg)
    m = only_metrics(tmp_path)
    chosen = m["classifier"]["var_smoothing"]
    assert m["classifier"]["name"] == "naive_bayes" and chosen in (1e-9, 1e-3, 1e-1)
    # checkpoint 0 is scikit-learn's own GaussianNB at that value on the run's embeddings
    data = load_data(cfg)
    z = D.normalize(embed_data(cfg, data)[0].astype(np.float64))
    tr, te = data.split["train"], data.split["test"]
    p = GaussianNB(var_smoothing=chosen).fit(z[tr], data.labels[tr]).predict_proba(z[te])[:, 1]
    assert m["checkpoints"][0]["roc_auc"] == pytest.approx(roc_auc_score(data.labels[te], p))


# ── a mitigation ─────────────────────────────────────────────────────────────────────────────


class Abstain(MIT.Mitigation):
    """Shrink every probability halfway to 0.5: a fix that can only lower confidence."""

    identity = False

    def at_checkpoint(self, z_window, z_labelled, y_labelled, anchors=None):
        return lambda z: 0.5 + 0.5 * (self.clf.predict_proba(z) - 0.5)

    def describe(self) -> dict:
        return {"shrink": 0.5}


def test_a_mitigation_added_by_its_recipe_is_scored_against_the_frozen_classifier(
    monkeypatch, stored, make_cfg, tmp_path
):
    monkeypatch.setitem(MIT.MITIGATIONS, "abstain", Abstain)
    stored("mitigation", "abstain", {"name": "abstain"})
    run(make_cfg(*TINY, "mitigation=abstain", "monitor=none"))
    m = only_metrics(tmp_path)
    rows, report = m["checkpoints"], m["mitigation"]
    assert report["name"] == "abstain"
    # a monotone map of p: the ranking (ROC-AUC) is the frozen classifier's, the confidence lower
    frozen = report["unmitigated"]
    for row, before in zip(rows, frozen, strict=True):
        assert row["roc_auc"] == pytest.approx(before["roc_auc"], rel=1e-12)
        assert row["mean_confidence"] == pytest.approx(
            0.5 + 0.5 * (before["mean_confidence"] - 0.5)
        )


# ── a monitor ────────────────────────────────────────────────────────────────────────────────


def _max_norm(ref, win, settings, rng) -> Outcome:
    """How far the window's largest embedding coordinate moved from the reference's."""
    return Outcome(abs(float(np.abs(win.z).max() - np.abs(ref.view.z).max())))


def _max_norm_batch(ref, windows, settings, rng) -> list[Outcome]:
    return [_max_norm(ref, windows.view(i), settings, rng) for i in range(len(windows))]


@pytest.fixture
def fresh_monitor_processes(monkeypatch):
    """The monitors' worker processes are forked once per process, from its imports: a monitor
    registers at import time (as the shipped ones do), so one registered inside a test needs
    workers forked after it."""
    from driftbench.tasks.drift_eval import monitoring

    pools: dict = {}
    monkeypatch.setattr(monitoring, "_PROCESSES", pools)
    yield
    for pool in pools.values():
        pool.shutdown()


def test_a_monitor_added_by_its_recipe_is_scored_beside_the_shipped_ones(
    monkeypatch, make_cfg, tmp_path, fresh_monitor_processes
):
    monitor = Monitor(_max_norm, _max_norm_batch, False, False, "largest coordinate shift")
    monkeypatch.setitem(MON.MONITORS, "max_coordinate", monitor)
    run(make_cfg(*TINY, "monitor.monitors=[max_coordinate,confidence_drop]"))
    scores = only_metrics(tmp_path)["monitors"]["by_monitor"]
    assert set(scores) == {"max_coordinate", "confidence_drop"}
    mine = scores["max_coordinate"]
    assert 0.0 <= mine["false_alarm_rate"] <= 1.0 and "lead_by_criterion" in mine


# ── a task ───────────────────────────────────────────────────────────────────────────────────


def echo_task() -> types.ModuleType:
    """A task in one module: it reads the data group and writes the number of texts it names."""
    module = types.ModuleType("driftbench_test_echo.task")
    module.CONFIG_GROUPS = ("data",)
    module.RESULTS_VERSION = 1
    module.FIGURES_IN_SWEEPS = False

    def validate(cfg) -> None:
        if cfg.data.n_samples % 2:
            raise ValueError(f"data.n_samples={cfg.data.n_samples}; accepted: an even number")

    module.validate = validate
    module.inputs = lambda cfg: {}
    module.run = lambda cfg, run_dir: {"task": "echo", "n_samples": int(cfg.data.n_samples)}
    return module


@dataclass
class EchoSettings:
    name: str = "echo"


def test_a_task_added_by_its_recipe_keeps_the_contract_and_runs_from_the_launcher(
    monkeypatch, stored, make_cfg, tmp_path
):
    module = echo_task()
    assert contract_violations(module) == []
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(tasks.TASKS, "echo", module.__name__)
    stored("task", "echo", EchoSettings())
    run(make_cfg("task=echo", "data.n_samples=200"))
    assert only_metrics(tmp_path)["n_samples"] == 200
    with pytest.raises(ValueError, match="data.n_samples=201; accepted: an even number"):
        run(make_cfg("task=echo", "data.n_samples=201"))
