"""Real model updates as drift (driftbench/updates/, driftbench/twin.py): each update's weights
against the gguf package, peft and the interpolation formula; the swap map against a known
isometry; the synthetic twin's angle; every update end to end on tiny random models, served from
the cache the second time; bad input refused in one line before any embedding."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants

from driftbench import drift as D
from driftbench.embed import extract_embeddings
from driftbench.launcher import ConfigError, run
from driftbench.metrics import CHANGE_METRICS, FLIP_METRICS
from driftbench.report import report
from driftbench.tasks.drift_eval.updates import fit_map, mapped
from driftbench.twin import mean_angle, synthetic_twin, twin_drifts
from driftbench.updates.weights import (
    LADDER,
    PARALLEL_MIN_ELEMENTS,
    adapter_folder,
    default_workers,
    interpolate,
    lora_deltas,
    merge,
    relative_error,
    requantize,
    squared_norm,
)
from driftbench.workers import can_fork

TINY = ["model=tiny_random", "data.n_samples=200", "monitor=none", "drift.twin_draws=5"]


@pytest.fixture(scope="module")
def decoder(tiny_model):
    """The tiny random decoder (no LM head) and its weights, as an update edits them."""
    base = tiny_model.model.get_decoder()
    return base, tiny_model.backend.weights(base)


def embed(model, tokenizer, texts):
    return extract_embeddings(model, tokenizer, texts, batch_tokens=512, progress=False)[0]


TEXTS = ["you are a wonderful person", "get lost, idiot", "the weather is fine", "shut up"]


def test_requantizing_equals_the_gguf_round_trip_and_the_error_grows_down_the_ladder(decoder):
    _, base = decoder
    errors = []
    for name in LADDER:
        qtype = GGMLQuantizationType[name]
        new = requantize(base, name)
        assert new, name  # the linear layers and the token embedding are quantized
        for n, w in new.items():
            expected = quants.dequantize(quants.quantize(base[n], qtype), qtype)
            np.testing.assert_array_equal(w, expected.astype(np.float32))
        assert not any(base[n].ndim == 1 for n in new)  # norms stay float32
        errors.append(relative_error(base, new))
    assert errors == sorted(errors) and errors[0] > 0, dict(zip(LADDER, errors, strict=True))


def synthetic_weights() -> dict[str, np.ndarray]:
    """Odd row counts, a row of zeros, outliers, a width no 32-block divides, a norm vector."""
    rng = np.random.default_rng(0)
    w = {
        "wide": rng.standard_normal((37, 96)).astype(np.float32) * 0.02,
        "tall": rng.standard_normal((101, 64)).astype(np.float32),
        "ragged": rng.standard_normal((9, 40)).astype(np.float32),
        "norm": rng.standard_normal(64).astype(np.float32),
    }
    w["tall"][3] = 0.0
    w["tall"][50, :4] = [40.0, -1e-8, 3e5, -0.0]
    return w


@pytest.mark.skipif(not can_fork(), reason="forked workers: Linux only")
@pytest.mark.parametrize("name", LADDER)
def test_requantizing_in_forked_workers_is_bit_identical_to_serial(decoder, name):
    for weights, chunk in ((synthetic_weights(), 500), (decoder[1], 1 << 16)):
        serial = requantize(weights, name, workers=1)
        forked = requantize(weights, name, workers=2, chunk_elements=chunk)  # rows split apart
        assert forked.keys() == serial.keys() and serial
        for n, w in serial.items():
            assert forked[n].dtype == np.float32 and forked[n].shape == w.shape
            assert np.array_equal(forked[n], w), (name, n)


def test_small_models_are_requantized_serially_and_large_ones_in_two_workers():
    assert default_workers(PARALLEL_MIN_ELEMENTS - 1) == 1
    if can_fork() and len(os.sched_getaffinity(0)) >= 2:
        assert default_workers(PARALLEL_MIN_ELEMENTS) == 2


@pytest.mark.parametrize("workers", [1, 2])
def test_relative_error_matches_the_float64_formula_with_the_norm_given_or_not(workers):
    """Also where the squared error is summed by the re-quantization's own workers."""
    base = synthetic_weights()
    new = requantize(base, "Q4_0", workers=workers, chunk_elements=999)
    num = sum(np.sum((new[n].astype(np.float64) - base[n]) ** 2) for n in new)
    den = sum(np.sum(w.astype(np.float64) ** 2) for w in base.values())
    assert new.squared_error == pytest.approx(num, rel=1e-12)
    assert squared_norm(base) == pytest.approx(den, rel=1e-12)
    expected = np.sqrt(num / den)
    assert relative_error(base, new) == pytest.approx(expected, rel=1e-12)
    assert relative_error(base, new, squared_norm(base)) == relative_error(base, new)
    plain = dict(new)  # any other weights: the error computed from the arrays
    assert relative_error(base, plain) == pytest.approx(expected, rel=1e-12)


@pytest.fixture(scope="module")
def lora(tiny_model, tmp_path_factory):
    """A peft LoRA adapter of the tiny model with random (non-zero) B, saved as rho_sft saves
    one (``<run dir>/adapter``), and peft's own merged model."""
    import copy

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "o_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(copy.deepcopy(tiny_model.model), config)
    run_dir = tmp_path_factory.mktemp("rho_run")
    peft_model.save_pretrained(run_dir / "adapter", safe_serialization=True)
    merged = peft_model.merge_and_unload().get_decoder()
    return run_dir, merged


def test_adapter_scale_0_is_the_model_and_scale_1_is_peft_merged(tiny_model, decoder, lora):
    model, base = decoder
    run_dir, merged = lora
    deltas = lora_deltas(adapter_folder(run_dir), list(base))
    assert len(deltas) == 2 * 2  # q_proj and o_proj in each of the 2 blocks
    backend, tok = tiny_model.backend, tiny_model.tokenizer
    z0 = embed(model, tok, TEXTS)
    backend.set_weights(model, merge(base, deltas, 0.0))
    np.testing.assert_array_equal(embed(model, tok, TEXTS), z0)
    backend.set_weights(model, merge(base, deltas, 1.0))
    try:
        ours = embed(model, tok, TEXTS)
    finally:
        backend.set_weights(model, base)
    np.testing.assert_allclose(ours, embed(merged, tok, TEXTS), atol=1e-5)
    assert np.abs(ours - z0).max() > 1e-3  # the adapter does move the embeddings


def test_interpolation_at_0_and_1_gives_the_endpoints(decoder):
    _, base = decoder
    end = {**base, **requantize(base, "Q4_0")}
    assert interpolate(base, end, 0.0).keys() == requantize(base, "Q4_0").keys()
    for n, w in interpolate(base, end, 0.0).items():
        np.testing.assert_array_equal(w, base[n])
    for n, w in interpolate(base, end, 1.0).items():
        np.testing.assert_array_equal(w, end[n])
    half = interpolate(base, end, 0.5)
    n = next(iter(half))
    np.testing.assert_allclose(half[n], (base[n] + end[n]) / 2, rtol=1e-6)


def unit(n, d, seed):
    z = np.random.default_rng(seed).standard_normal((n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_the_swap_map_is_the_adapter_of_its_name_and_none_needs_equal_widths():
    """drift.map is fitted by driftbench.adapters (tests/test_adapters.py checks each map); a
    wider model that holds the old space isometrically is mapped back exactly, on the sphere."""
    z_old = unit(300, 24, 0)
    wide = np.linalg.qr(np.random.default_rng(2).standard_normal((40, 24)))[0]  # 40 x 24
    z_wide = z_old @ wide.T
    for kind in ("procrustes", "lstsq"):
        np.testing.assert_allclose(
            mapped(z_wide, fit_map(kind, z_wide, z_old, 0)), z_old, atol=1e-8
        )
    assert fit_map("none", z_old, z_old, 0) is None
    np.testing.assert_array_equal(mapped(z_old, None), D.normalize(z_old))
    with pytest.raises(ValueError, match="map=none with widths 40 -> 24; accepted"):
        fit_map("none", z_wide, z_old, 0)


def twin_of(z0: np.ndarray, target: float, kind: str, seed: int = 0, sharp: float = 1.0) -> dict:
    """The synthetic twin of a checkpoint at mean angle ``target`` (degrees), for a frozen
    logistic classifier on the first coordinate, with the task's defaults (5 draws)."""
    return synthetic_twin(
        z0,
        np.arange(len(z0)) % 2,
        lambda z: 1 / (1 + np.exp(-sharp * z[:, 0])),
        target,
        kind,
        draws=5,
        seed=seed,
        tau=0.8,
        n_bins=5,
    )


@pytest.mark.parametrize("kind", twin_drifts())
@pytest.mark.parametrize("target", [2.0, 15.0])
def test_the_twin_search_hits_the_target_angle(kind, target):
    twin = twin_of(unit(200, 32, 3), target, kind, sharp=5.0)
    assert abs(twin["angle_deg"] - target) < 0.5 and twin["sigma"] > 0
    assert twin["draws"] == 5 and 0 <= twin["roc_auc"] <= 1


@pytest.mark.parametrize("target", [0.004, 0.02, 100.0])
def test_the_twin_search_is_relative_at_tiny_angles_and_reaches_past_90_degrees(target):
    twin = twin_of(unit(300, 64, 6), target, "subspace")
    assert twin["angle_deg"] == pytest.approx(target, rel=2e-3)


def test_an_angle_noise_cannot_reach_has_no_twin():
    twin = twin_of(unit(100, 32, 2), 120.0, "gaussian")
    assert twin["sigma"] is None and twin["angle_deg"] is None


def test_adapters_the_merge_cannot_reproduce_are_refused(lora, tmp_path):
    run_dir, _ = lora
    for key, value in (("use_dora", True), ("bias", "lora_only"), ("rank_pattern", {"q": 2})):
        folder = tmp_path / key
        folder.mkdir()
        config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, key: value}))
        (folder / "adapter_model.safetensors").write_bytes(b"")
        with pytest.raises(ValueError, match=f"sets {key}; accepted: a plain LoRA adapter"):
            adapter_folder(folder)


def test_the_twins_subspace_drift_is_eq7():
    z0 = unit(30, 16, 8)
    (f,) = D.DRIFTS["subspace"].twin_draws(z0, 1, np.random.default_rng(2))
    q = D.random_orthogonal(16, np.random.default_rng(2))
    np.testing.assert_allclose(f(0.3), D.apply_subspace_drift(z0, 0.3, q), atol=1e-12)


def test_the_twin_of_the_paper_sigma_is_itself():
    """At the angle Gaussian sigma = 0.02 gives, the Gaussian twin is sigma = 0.02 again."""
    z0 = unit(200, 576, 4)
    noise = [np.random.default_rng([9, k]).standard_normal(z0.shape) for k in range(5)]
    drifted = [lambda s, e=e: D.normalize(z0 + s * e) for e in noise]
    twin = twin_of(z0, mean_angle(z0, drifted, 0.02), "gaussian", seed=1)
    assert twin["sigma"] == pytest.approx(0.02, rel=0.02)


def one_run(tmp_path):
    found = sorted((tmp_path / "outputs").glob("**/metrics.json"))
    return found[-1].parent, json.loads(found[-1].read_text())


def check_update_run(d, m, labels):
    rows = m["checkpoints"]
    assert [r["update"] for r in rows] == labels
    assert rows[0]["realized_angle_deg"] < 1e-6 and rows[0]["relative_weight_error"] == 0
    assert rows[-1]["realized_angle_deg"] > 0
    for r in rows[1:]:
        for kind in twin_drifts():
            assert r[f"twin_{kind}_sigma"] is None or r[f"twin_{kind}_sigma"] > 0
    about = m["update"]["checkpoints"]
    assert [a["checkpoint"] for a in about] == labels
    assert all(set(a["twins"]) == set(twin_drifts()) for a in about)
    check_change(rows, about)
    assert (d / "update_vs_twins.png").stat().st_size > 0
    check_update_figure(m)


def check_change(rows, about):
    """What kind of change each checkpoint is: the original model flips nothing and moves
    nothing (its coherent share undefined, null); the record's frozen numbers are the row's
    (mitigation=none scores every text); each twin that is reached has its own."""
    assert [rows[0][k] for k in FLIP_METRICS] == [0.0, 0.0, 0.0]
    assert rows[0]["coherent_share"] is None
    for r, a in zip(rows, about, strict=True):
        for k in CHANGE_METRICS:
            assert a["frozen"][k] == r[k]
        assert r["coherent_share"] is None or 0 < r["coherent_share"] <= 1
        for kind in twin_drifts():
            assert set(CHANGE_METRICS) <= set(a["twins"][kind]) or a["twins"][kind]["sigma"] is None
            assert f"twin_{kind}_coherent_share" in r


def _nan(v) -> float:
    return np.nan if v is None else v


def check_update_figure(m):
    """update_vs_twins.png as drawn: per panel, the real update's line is the run's checkpoint
    metric (mitigation=none: the frozen classifier's own row), each twin's line its twin columns
    of the row, one tick per checkpoint with its mean angle."""
    from driftbench.plots import pyplot
    from driftbench.tasks.drift_eval.summary_updates import PANELS, build_update_figure

    rows = m["checkpoints"]
    assert m["mitigation"]["name"] == "none"
    fig = build_update_figure(m["update"]["checkpoints"], "title")
    try:
        assert [ax.get_ylabel() for ax in fig.axes] == [label for _, label in PANELS]
        for ax, (key, _) in zip(fig.axes, PANELS, strict=True):
            lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
            assert set(lines) == {"real update", *(f"{t} twin" for t in twin_drifts())}
            np.testing.assert_array_equal(lines["real update"], [_nan(r[key]) for r in rows])
            for t in twin_drifts():
                want = [_nan(r[f"twin_{t}_{key}"]) for r in rows]
                np.testing.assert_array_equal(lines[f"{t} twin"], want)
            ticks = [x.get_text() for x in ax.get_xticklabels()]
            assert ticks == [f"{r['update']}\n{r['realized_angle_deg']:.1f}°" for r in rows]
    finally:
        pyplot().close(fig)


def test_quantize_end_to_end_then_from_the_cache(make_cfg, tmp_path, caplog):
    cfg = make_cfg(*TINY, "drift=quantize", "drift.levels=[Q8_0,Q4_0]", "seed=3")
    run(cfg)
    d, m = one_run(tmp_path)
    check_update_run(d, m, ["original", "Q8_0", "Q4_0"])
    errors = [r["relative_weight_error"] for r in m["checkpoints"]]
    assert 0 < errors[1] < errors[2]
    caplog.clear()
    caplog.set_level(logging.INFO)
    run(make_cfg(*TINY, "drift=quantize", "drift.levels=[Q8_0,Q4_0]", "seed=3", "classifier=knn"))
    assert "update quantize Q4_0: 0 of 40 texts embedded now" in caplog.text
    _, again = one_run(tmp_path)
    assert [r["relative_weight_error"] for r in again["checkpoints"]] == errors
    assert [r["realized_angle_deg"] for r in again["checkpoints"]] == [
        r["realized_angle_deg"] for r in m["checkpoints"]
    ]
    res = report([tmp_path / "outputs"], tmp_path / "rep")
    assert "report_updates.png" in res["figures"]
    md = (tmp_path / "rep" / "report.md").read_text()
    table = md.split("**Real update**")[1].split("\n\n")[1]  # one table, a row per group
    q4 = [line.split(" | ") for line in table.splitlines() if "| Q4_0 |" in line]
    assert [(row[0], row[1], row[3]) for row in q4] == [
        ("| knn", "1", f"{errors[2]:.4f}"),
        ("| logreg", "1", f"{errors[2]:.4f}"),
    ]
    # the embeddings' move is the update's, whatever reads them: one coherent share for both
    frozen = {r["classifier"]["name"]: r["update"]["checkpoints"][2]["frozen"] for r in (m, again)}
    assert [row[8] for row in q4] == [f"{frozen['knn']['coherent_share']:.2f}"] * 2
    assert [row[9] for row in q4] == [
        f"{frozen[c]['negative_flip_rate']:.3f} / {frozen[c]['positive_flip_rate']:.3f}"
        for c in ("knn", "logreg")
    ]


def test_adapter_from_a_rho_sft_run_dir_end_to_end(make_cfg, tmp_path, lora):
    run_dir, _ = lora
    run(make_cfg(*TINY, "drift=adapter", f"drift.adapter={run_dir}", "drift.scales=[0,1,4]"))
    d, m = one_run(tmp_path)
    check_update_run(d, m, ["s=0", "s=1", "s=4"])
    angles = [r["realized_angle_deg"] for r in m["checkpoints"]]
    assert angles[0] < angles[1] < angles[2]


def test_interpolate_to_another_tiny_model_end_to_end(make_cfg, tmp_path):
    run(
        make_cfg(
            *TINY,
            "drift=interpolate",
            "drift.quantize=null",
            "+model@drift.target=tiny_random",
            "drift.target.init_seed=1",
            "drift.alphas=[0,0.5,1]",
        )
    )
    d, m = one_run(tmp_path)
    check_update_run(d, m, ["a=0", "a=0.5", "a=1"])


def check_playbook_run(d, m) -> None:
    """The upgrade playbook of a run at its last checkpoint: every reference once, every adapter
    at every N and both label options at every m (capped at the 140 training texts), each
    scored on every test text: the frozen classifier's numbers are the update record's, the
    original's checkpoint 0's; recovery is 0 and 1 at the references; re-embedding costs one
    pass of the training and validation texts, at the seconds the target was measured at. The
    report's playbook table has a row per option."""
    from driftbench.adapters import ADAPTERS
    from driftbench.report import collect, group_runs
    from driftbench.tasks.drift_eval.summary_playbook import METRICS, tables

    pb = m["playbook"]
    assert (pb["pairs"], pb["m"], pb["n_train"], pb["n_val"]) == (
        [100, 140],
        [25, 50, 100, 140],
        140,
        20,
    )
    rows = pb["options"]
    assert [(r["option"], r["kind"], r["n"]) for r in rows] == [
        ("frozen", "", None),
        ("original", "", None),
        ("reembed_retrain", "", None),
        *(("adapter", kind, n) for kind in ADAPTERS for n in (100, 140)),
        *((option, "", k) for option in ("recalibrate", "retrain") for k in (25, 50, 100, 140)),
    ]
    ref = {r["option"]: r for r in rows[:3]}
    record = m["update"]["checkpoints"]
    assert ref["frozen"]["roc_auc"] == record[-1]["frozen"]["roc_auc"]
    assert ref["original"]["roc_auc"] == record[0]["frozen"]["roc_auc"]
    for k in METRICS:
        assert ref["frozen"][f"recovery_{k}"] == 0 and ref["reembed_retrain"][f"recovery_{k}"] == 1
    re = ref["reembed_retrain"]
    assert (re["new_texts"], re["passes"]) == (160, 1.0) and re["embed_s"] > 0
    assert pb["seconds_per_text"] > 0 and re["embed_s"] == pytest.approx(
        160 * pb["seconds_per_text"]
    )
    assert (d / "playbook.csv").exists() and (d / "playbook.png").stat().st_size > 0
    (table,) = tables(group_runs(collect([d])[0]))
    assert f"**Upgrade playbook: {pb['update']}**" in table
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 1 + len(rows)


def test_swap_to_a_narrower_tiny_model_end_to_end(make_cfg, tmp_path):
    """With the upgrade playbook on: its adapters map the target's own 32-wide embeddings
    into the 64-wide original space, re-embedding retrains in the target's space."""
    target = ["model@drift.target=tiny_random", "drift.target.init_seed=7"]
    swap = ["drift=swap", *target, "drift.target.hidden_size=32", "drift.anchors=60"]
    run(make_cfg(*TINY, *swap, "task.playbook.enabled=true"))
    d, m = one_run(tmp_path)
    check_update_run(d, m, ["original", "tiny_random"])
    assert "roc_auc_unmapped" not in m["checkpoints"][1]  # widths differ: no unmapped AUC
    check_playbook_run(d, m)
    assert (m["playbook"]["widths"], m["playbook"]["rank"]) == ([32, 64], 32)  # rank capped
    run(make_cfg(*TINY, "drift=swap", *target, "drift.anchors=60", "drift.map=none"))
    _, same_width = one_run(tmp_path)
    assert same_width["checkpoints"][1]["update"] == "tiny_random"


def test_a_same_width_swap_reports_the_auc_with_the_map_and_without_it(make_cfg, tmp_path):
    """Where the widths match, a mapped swap also scores the target's raw embeddings: the same
    number a swap with ``drift.map=none`` reports as its AUC."""
    target = ["model@drift.target=tiny_random", "drift.target.init_seed=7", "drift.anchors=60"]
    runs = {}
    for map_ in ("none", "procrustes"):
        before = set((tmp_path / "outputs").glob("**/metrics.json"))
        run(make_cfg(*TINY, "drift=swap", *target, f"drift.map={map_}"))
        (new,) = set((tmp_path / "outputs").glob("**/metrics.json")) - before
        runs[map_] = json.loads(new.read_text())["checkpoints"][1]
    assert "roc_auc_unmapped" not in runs["none"]
    assert runs["procrustes"]["roc_auc_unmapped"] == pytest.approx(runs["none"]["roc_auc"])
    assert runs["procrustes"]["roc_auc"] != runs["none"]["roc_auc"]  # the map did something


@pytest.mark.parametrize(
    "overrides, said",
    [
        (
            ["drift=adapter", "drift.adapter=/no/such/run"],
            "drift.adapter='/no/such/run' does not exist; accepted: a LoRA adapter folder",
        ),
        (["drift=adapter", "drift.adapter=."], "holds no adapter_config.json; accepted"),
        (
            ["drift=quantize", "drift.levels=[Q4_K]"],
            "drift.levels=['Q4_K']: quantization type 'Q4_K'; accepted: F16, Q4_0",
        ),
        (
            ["drift=interpolate", "drift.quantize=q4_0"],
            "drift.quantize: quantization type 'q4_0'; accepted: F16, Q4_0",
        ),
        (
            ["drift=quantize", "drift.anchors=5000"],
            "drift.anchors=5000 is more than the 140 training texts; accepted: 0..140",
        ),
        (
            ["drift=interpolate", "drift.quantize=null"],
            "drift=interpolate needs exactly one endpoint",
        ),
        (
            [
                "drift=interpolate",
                "drift.quantize=null",
                "+model@drift.target=tiny_random",
                "drift.target.num_hidden_layers=3",
            ],
            "drift=interpolate: tiny_random and tiny_random differ (num_hidden_layers 2 vs 3); "
            "accepted: two checkpoints of the same architecture",
        ),
        (
            [
                "drift=swap",
                "model@drift.target=tiny_random",
                "drift.target.hidden_size=32",
                "drift.map=none",
                "drift.anchors=60",
            ],
            "drift.map=none but tiny_random has width 64 and tiny_random 32; "
            "accepted: drift.map=procrustes or lstsq",
        ),
        (["drift=swap", "drift.map=cca"], "drift.map='cca'; accepted: procrustes, lstsq, none"),
        (
            [
                "drift=swap",
                "model@drift.target=tiny_random",
                "mitigation=adapter",
                "mitigation.pairs=50",
            ],
            "mitigation=adapter with drift=swap: the swap's own map (drift.map) already realigns",
        ),
        (["drift=quantize", "drift.map=cca"], "drift.map='cca'; accepted: procrustes, lstsq, none"),
        (
            ["drift=quantize", "drift.map=lstsq"],
            "drift.map=lstsq with drift.anchors=0; accepted: drift.anchors >= 2",
        ),
        (
            ["drift=interpolate", "drift.alphas=[0.5,1]"],
            "drift.alphas=[0.5, 1.0]; accepted: a non-decreasing list starting at 0",
        ),
        (
            [
                "drift=interpolate",
                "drift.quantize=null",
                "+model@drift.target=tiny_random",
                "drift.target.intermediate_size=96",
            ],
            "differ (intermediate_size 128 vs 96)",
        ),
        (["drift=quantize", "drift.twin_draws=2"], "drift.twin_draws=2; accepted: an integer >= 5"),
        (
            ["drift=swap", "model@drift.target=hf", "drift.target.name_or_path=/no/such/model"],
            "model.name_or_path='/no/such/model' does not exist",
        ),
        (
            ["drift=quantize", "backend=mlx"],
            "drift=quantize edits the model's weights, which backend=mlx cannot",
        ),
        (
            ["drift=swap", "model@drift.target=hf", "drift.target.name_or_path=nobody/no-model"],
            "drift.target.name_or_path='nobody/no-model' is neither a local folder nor a Hugging "
            "Face id this machine can fetch",
        ),
    ],
)
def test_bad_update_settings_stop_before_any_embedding(
    make_cfg, tmp_path, overrides, said, monkeypatch
):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # no hub to ask
    with pytest.raises(ConfigError) as err:
        run(make_cfg(*TINY, *overrides))
    assert said in str(err.value) and "\n" not in str(err.value)
    assert not list((tmp_path / "outputs").glob("**/meta.json"))


def test_adapter_trained_by_the_run_end_to_end_and_trained_once(make_cfg, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    train = ["sft/condition=sft_only", "sft.data.n_examples=8", "drift.train_probes=4"]
    cache = tmp_path / "cache"  # its own: the shared one may hold this adapter already
    run(make_cfg(*TINY, "drift=adapter", *train, "drift.scales=[0,1,8]", cache_dir=cache))
    d, m = one_run(tmp_path)
    check_update_run(d, m, ["s=0", "s=1", "s=8"])
    assert "training the adapter the update applies: sft_only, 8 SFT texts" in caplog.text
    caplog.clear()
    run(
        make_cfg(
            *TINY,
            "drift=adapter",
            *train,
            "drift.scales=[0,1,8]",
            "classifier=knn",
            cache_dir=cache,
        )
    )
    assert "training the adapter" not in caplog.text  # the trained adapter is cached
    _, again = one_run(tmp_path)
    assert [r["realized_angle_deg"] for r in again["checkpoints"]] == [
        r["realized_angle_deg"] for r in m["checkpoints"]
    ]


def test_the_update_table_has_one_row_set_per_classifier_whatever_the_mitigations():
    """Runs that differ in mitigation alone repeat the frozen classifier's numbers: the
    report's one update table shows each classifier once, not once per mitigation."""
    from driftbench.report import group_runs
    from driftbench.tasks.drift_eval.summary_updates import tables

    def record(label, auc):
        twin = {"sigma": 0.01, "roc_auc": auc - 0.1, "silent_failure_rate_pct": 5.0,
                "mean_confidence": 0.8, "draws": 5}  # fmt: skip
        frozen = {"roc_auc": auc, "silent_failure_rate_pct": 1.0, "mean_confidence": 0.9}
        return {"checkpoint": label, "realized_angle_deg": 3.0, "relative_weight_error": 0.01,
                "frozen": frozen, "twins": {t: dict(twin) for t in twin_drifts()}}  # fmt: skip

    runs = [
        {
            "config": {"seed": 0, "classifier": {"name": c}, "mitigation": {"name": m}},
            "metrics": {
                "update": {"checkpoints": [record("original", a), record("a=1", a - 0.05)]}
            },
        }
        for c, a in (("logreg", 0.9), ("knn", 0.8))
        for m in ("none", "recalibrate", "retrain")
    ]
    (table,) = tables(group_runs(runs))
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| classifier | n | checkpoint |")
    assert [r.split(" | ")[:3] for r in rows[1:]] == [
        ["| knn", "1", "original"],
        ["| knn", "1", "a=1"],
        ["| logreg", "1", "original"],
        ["| logreg", "1", "a=1"],
    ]
    assert rows[-1].split(" | ")[5] == "0.850"  # ROC-AUC
    # runs from before the flips were recorded: their change columns are blank, not an error
    assert rows[-1].split(" | ")[8:11] == ["–", "– / –", "–"]


def test_the_update_table_gives_the_real_update_less_its_twin_paired_by_seed_with_intervals():
    """Three seeds: the real update's AUC 0.80, 0.82, 0.84 against its twins' 0.70, 0.71, 0.72
    is a gap of 0.10, 0.11, 0.12, whose t-interval is scipy's; it excludes 0 even at the
    Bonferroni level over the table's gaps (‡). An SFR gap of -1, 0, +1 excludes nothing."""
    from scipy import stats

    from driftbench.report import group_runs
    from driftbench.tasks.drift_eval.summary_updates import tables

    def record(auc, twin_auc, sfr_gap):
        twin = {"sigma": 0.01, "roc_auc": twin_auc, "silent_failure_rate_pct": 40.0,
                "mean_confidence": 0.8, "draws": 5}  # fmt: skip
        frozen = {"roc_auc": auc, "silent_failure_rate_pct": 40.0 + sfr_gap,
                  "mean_confidence": 0.9}  # fmt: skip
        return {"checkpoint": "Q4_0", "realized_angle_deg": 3.0, "relative_weight_error": 0.01,
                "frozen": frozen, "twins": {t: dict(twin) for t in twin_drifts()}}  # fmt: skip

    runs = [
        {
            "config": {"seed": 0, "data": {"seed": s}},
            "metrics": {"update": {"checkpoints": [record(a, t, g)]}},
        }
        for s, a, t, g in ((42, 0.80, 0.70, -1), (43, 0.82, 0.71, 0), (44, 0.84, 0.72, 1))
    ]
    (table,) = tables(group_runs(runs))
    header, _, row = [line for line in table.splitlines() if line.startswith("|")]
    cells = dict(zip(header.split(" | "), row.split(" | "), strict=True))
    low, high = stats.t.interval(0.95, 2, loc=0.11, scale=0.01 / np.sqrt(3))
    auc_gap, sfr_gap = cells[f"real − {twin_drifts()[0]} twin: AUC / SFR"].split(" / ")
    assert auc_gap == f"+0.110 [{low:+.3f}, {high:+.3f}]‡"
    assert sfr_gap.startswith("+0.0 [") and not sfr_gap.endswith(("†", "‡"))
    m = 2 * len(twin_drifts())  # one row: an AUC and an SFR gap per twin
    assert f"1 − 0.05/{m}" in table
    lo, hi = stats.t.interval(0.95, 2, loc=0.82, scale=0.02 / np.sqrt(3))
    assert cells["ROC-AUC"] == f"0.820 [{lo:.3f}, {hi:.3f}]"


def test_a_drift_that_trains_keeps_its_key_while_the_later_sft_knobs_are_at_their_defaults(
    make_cfg,
):
    """drift=adapter copies the sft group into drift.train: the sft knobs added after its runs
    existed (runs.SFT_ADDED) stay out of its result key at their defaults, as they do for
    rho_sft, so its complete runs and its cached adapter are reused; set, they key a run and an
    adapter of their own."""
    from omegaconf import OmegaConf

    from driftbench.launcher import prepare
    from driftbench.runs import SFT_ADDED, result_key
    from driftbench.tasks.drift_eval import task as drift_eval

    cfg = make_cfg("model=tiny_random", "drift=adapter")
    full = OmegaConf.to_container(cfg, resolve=True)
    read = {k: full[k] for k in ("seed", *drift_eval.CONFIG_GROUPS)}
    for name in SFT_ADDED:
        del read["drift"]["train"][name]  # drift.train as it was before the knobs existed
    old = result_key(read, drift_eval.inputs(cfg), drift_eval.RESULTS_VERSION)
    assert prepare(cfg).result_key == old
    steps = prepare(make_cfg("model=tiny_random", "drift=adapter", "sft.audit_at_steps=[3]"))
    assert steps.result_key != old
