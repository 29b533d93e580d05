"""One checkpoint source interface: a synthetic drift registered inside a test (one operator and
one config node) runs, is a twin of every real update, and appears in the update report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hydra.core.config_store import ConfigStore

from driftbench import drift as D
from driftbench.launcher import run
from driftbench.report import report
from driftbench.tasks.drift_eval.summary_updates import build_update_figure
from driftbench.twin import mean_angle, synthetic_twin, twin_draws

TINY = ["model=tiny_random", "data.n_samples=200", "monitor=none", "runtime.figures=true"]


class Stretch(D.SyntheticDrift):
    """A fourth drift: every embedding stretched along one random axis u by 1 + sigma."""

    def state(self, d, rng):
        return D.random_direction(d, rng)

    def apply(self, z0, sigma, state, noise):
        return D.normalize(z0 + sigma * (z0 @ state)[:, None] * state[None, :])


@pytest.fixture
def stretch(monkeypatch):
    """``drift=stretch``: the operator in the registry, the config node in Hydra's store."""
    monkeypatch.setattr(D, "DRIFTS", dict(D.DRIFTS))
    D.register(Stretch("stretch", twin_stream=3))
    store = ConfigStore.instance()
    store.store(group="drift", name="stretch", node={"name": "stretch"})
    yield "stretch"
    del store.repo["drift"]["stretch.yaml"]


def only_metrics(tmp_path):
    (path,) = sorted((tmp_path / "outputs").glob("**/metrics.json"))
    return path.parent, json.loads(path.read_text())


def test_a_registered_drift_takes_its_own_twin_stream():
    with pytest.raises(ValueError, match="twin_stream 0 is taken"):
        D.register(Stretch("stretch", twin_stream=0))


def test_a_fourth_synthetic_drift_runs_end_to_end(stretch, make_cfg, tmp_path):
    run(make_cfg(*TINY, f"drift={stretch}", "schedule=list", "schedule.sigmas=[0,1,4]"))
    _, m = only_metrics(tmp_path)
    rows = m["checkpoints"]
    assert m["drift"] == "stretch" and [r["sigma"] for r in rows] == [0.0, 1.0, 4.0]
    angles = [r["realized_angle_deg"] for r in rows]
    assert angles[0] == pytest.approx(0.0, abs=1e-9) and 0 < angles[1] < angles[2] < 90
    assert "update" not in m and "twin_gaussian_sigma" not in rows[1]


def test_a_fourth_synthetic_drift_has_a_twin_at_the_target_angle(stretch):
    z0 = D.normalize(np.random.default_rng(0).standard_normal((200, 16)))
    y = np.arange(200) % 2
    twin = synthetic_twin(
        z0, y, lambda z: 1 / (1 + np.exp(-z[:, 0])), 10.0, stretch,
        draws=5, seed=1, tau=0.8, n_bins=5,
    )  # fmt: skip
    assert twin["angle_deg"] == pytest.approx(10.0, rel=2e-3)
    # the twin is the drift's own operator at that sigma, on the drift's own random stream
    axes = [D.random_direction(16, np.random.default_rng([1, 6, 3])) for _ in range(1)]
    by_hand = D.realized_angle_deg(z0, Stretch("x", 9).apply(z0, twin["sigma"], axes[0], None))
    drawn = twin_draws(stretch, z0, 5, 1)
    assert by_hand.mean() == pytest.approx(
        np.mean(D.realized_angle_deg(z0, drawn[0](twin["sigma"]))), rel=1e-12
    )
    assert mean_angle(z0, drawn, twin["sigma"]) == pytest.approx(twin["angle_deg"], rel=1e-12)


def test_a_real_update_gets_a_twin_of_the_fourth_drift_and_the_report_shows_it(
    stretch, make_cfg, tmp_path
):
    levels = ["drift=quantize", "drift.levels=[Q8_0,Q4_0]", "drift.twin_draws=5"]
    run(make_cfg(*TINY, *levels, "monitor=all"))
    d, m = only_metrics(tmp_path)
    # every field names the knob for what it is: a rung of drift.levels, never a sigma
    assert m["knob"]["name"] == "rung" and m["rungs"] == [0.0, 1.0, 2.0] and "sigmas" not in m
    assert [r["rung"] for r in m["checkpoints"]] == [0.0, 1.0, 2.0]
    assert all("sigma" not in r for r in m["checkpoints"])
    assert m["summary"]["rung_max"] == 2.0 and "failure_cliff_rung" in m["summary"]
    assert "sigma_max" not in m["summary"] and "failure_cliff_sigma" not in m["summary"]
    assert all("rung_at_alarm" in s for s in m["monitors"]["by_monitor"].values())
    assert "rung" in m["monitors"]["collapse"]
    about = m["update"]["checkpoints"]
    assert [a["knob"] for a in about] == m["rungs"]
    assert list(about[1]["twins"]) == ["gaussian", "directional", "subspace", "stretch"]
    twin = about[1]["twins"]["stretch"]
    assert twin["sigma"] is None or twin["angle_deg"] == pytest.approx(
        about[1]["realized_angle_deg"], rel=2e-3
    )
    assert m["checkpoints"][1]["twin_stretch_sigma"] == twin["sigma"]
    fig = build_update_figure(about, "title")
    labels = {line.get_label() for line in fig.axes[0].get_lines()}
    assert "stretch twin" in labels and len(labels) == 5
    assert (d / "update_vs_twins.png").stat().st_size > 0

    report([tmp_path / "outputs"], tmp_path / "rep")  # the sweep report, from the run dir
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| stretch twin: σ / AUC / SFR / coherent / flips − |" in md
    assert "| rung at alarm (≥ " in md and "σ at alarm" not in md
    assert "| rung_max |" in md and "sigma_max" not in md
