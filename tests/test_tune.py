"""drift=tune (driftbench/updates/tune.py) and experiment=instruct_tune on the tiny random model,
without mocks: the preset's checkpoints load as an update (the run trains its LoRA tune once,
keeps the adapter at the steps of drift.fractions, and meets the frozen classifier with each);
checkpoint 0 is the model itself, each snapshot another adapter, the last the finished adapter
merged as drift=adapter merges it; each checkpoint's separability is metrics.separability on
its own embeddings of the training texts; the held-out Alpaca loss is recorded at every
checkpoint on texts training never saw; the report's table reads it all."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from test_updates import check_update_run, one_run

from driftbench import drift as D
from driftbench import metrics as M
from driftbench.backends import load_model
from driftbench.data import DataError, heldout_alpaca, read_alpaca, resolve_data_path
from driftbench.digests import files_sha256
from driftbench.embed import extract_embeddings
from driftbench.launcher import ConfigError, run
from driftbench.models import ModelSpec
from driftbench.report import report
from driftbench.rho.probes import load_probes
from driftbench.rho.training_set import build_training_set, pair_and_trap_behaviors
from driftbench.tasks.drift_eval.adapter import training_cfg
from driftbench.tasks.drift_eval.task import load_data
from driftbench.updates import make_update
from driftbench.updates.tune import MANIFEST
from driftbench.updates.weights import adapter_files, lora_deltas, merge

# the preset on the tiny model: 32 Alpaca texts = 4 optimizer steps of 8, so its fractions
# 0, 1/4, 1/2, 1 are steps 0, 1, 2 and 4
PRESET = [
    "experiment=instruct_tune",
    "data.seed=42",  # one job of its sweep
    "model=tiny_random",
    "data.n_samples=200",
    "monitor=none",
    "sft.data.n_examples=32",
    "drift.train_probes=4",
    "drift.heldout=12",
    "runtime.figures=true",
]
SEPARABILITY = ("silhouette", "fisher_ratio", "fisher_ratio_per_dim", "class_overlap")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One run of the preset (its own cache: the tune is trained here), its run dir and
    metrics, its config and the update as the run built it."""
    from conftest import CONF
    from hydra import compose, initialize_config_dir

    tmp = tmp_path_factory.mktemp("tune")
    cache = tmp / "cache"
    overrides = [
        f"runtime.output_root={tmp / 'outputs'}",
        f"runtime.cache_dir={cache}",
        "runtime.progress=false",
        *PRESET,
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    run(cfg)
    d, m = one_run(tmp)
    (folder,) = [p for p in (cache / "adapters").iterdir() if (p / MANIFEST).is_file()]
    settings = {**OmegaConf.to_container(cfg.drift, resolve=True), "adapter": str(folder)}
    update = make_update(settings, ModelSpec.from_dict(cfg.model), cache)
    return tmp, d, m, cfg, update


def base_model(cfg):
    spec = ModelSpec.from_dict(cfg.model)
    return load_model(spec, cfg.runtime.cache_dir, device="cpu", head="base")


def test_the_instruct_tune_presets_checkpoints_load_as_an_update(tuned):
    _, d, m, cfg, update = tuned
    assert cfg.model.name == "tiny_random" and cfg.drift.name == "tune"
    check_update_run(d, m, ["p=0", "p=0.25", "p=0.5", "p=1"])
    rows = m["checkpoints"]
    assert [r["progress"] for r in rows] == [0, 0.25, 0.5, 1]
    assert [r["optimizer_step"] for r in rows] == [0, 1, 2, 4]
    assert m["knob"]["name"] == "progress" and m["progresss"] == [0, 0.25, 0.5, 1]
    # checkpoint 0 is the model itself: its embeddings are the run's, untouched
    steps = update.steps()
    assert steps[0].identity is None
    assert rows[0]["realized_angle_deg"] < 1e-6
    assert rows[0]["relative_weight_error"] == 0
    # each snapshot is another adapter, and moves the model further from where it was
    digests = [s.identity["adapter"] for s in steps[1:]]
    assert len(set(digests)) == 3
    errors = [r["relative_weight_error"] for r in rows]
    assert 0 < errors[1] < errors[2] < errors[3]
    # the last checkpoint is the finished adapter merged at scale 1, as drift=adapter merges it
    folder = update.folder()
    assert steps[-1].identity == {"adapter": files_sha256(adapter_files(folder)), "scale": 1.0}
    model = base_model(cfg)
    base = model.backend.weights(model.model)
    update.prepare(base, None)
    want = merge(base, lora_deltas(folder, list(base)), 1.0)
    got = update.weights_at(steps[-1], base)
    assert set(got) == set(want)
    assert all(np.array_equal(got[n], want[n]) for n in want)


def test_each_checkpoints_separability_is_the_tasks_on_its_own_training_embeddings(tuned):
    """Checkpoint c's separability columns are metrics.separability of its model's unit-norm
    embeddings of every training text, embedded here again by the base model with c's weights
    set; checkpoint 0's are the run's own separability of M_0."""
    _, _, m, cfg, update = tuned
    data = load_data(cfg)
    train = data.split["train"]
    texts, y = [data.texts[i] for i in train], data.labels[train]
    model = base_model(cfg)
    base = model.backend.weights(model.model)
    update.prepare(base, None)
    rows = m["checkpoints"]
    for row, step in zip(rows, update.steps(), strict=True):
        if step.identity is not None:
            model.backend.set_weights(model.model, update.weights_at(step, base))
        e = cfg.embed
        z, _ = extract_embeddings(
            model.model, model.tokenizer, texts, e.pooling, e.max_length, e.layer,
            batch_tokens=e.batch_tokens, progress=False, packed=e.packed,
        )  # fmt: skip
        model.backend.set_weights(model.model, base)
        want = M.separability(D.normalize(z.astype(np.float64)), y)
        assert row["separability_n_texts"] == len(train)
        for k in SEPARABILITY:
            assert row[f"separability_{k}"] == pytest.approx(want[k], rel=1e-5, abs=1e-9)
    for k in SEPARABILITY:
        assert rows[0][f"separability_{k}"] == pytest.approx(m["separability"][k], rel=1e-9)


def test_the_held_out_loss_is_on_alpaca_texts_the_tune_never_trained_on(tuned):
    _, _, m, cfg, update = tuned
    tune = update.manifest()
    tcfg = training_cfg(cfg)
    probes = {b: load_probes(b, 4, 42) for b in pair_and_trap_behaviors(tcfg.sft)}
    trained, _, _ = build_training_set(tcfg.sft, probes, tcfg.seed, tcfg.runtime.data_dir)
    heldout = tune["heldout_texts"]
    assert len(trained) == 32 and len(heldout) == 12
    assert not set(heldout) & set(trained)
    assert set(heldout) <= set(read_alpaca(resolve_data_path(tcfg.sft.data.alpaca_path)))
    assert tune["total_steps"] == 4 and len(tune["train_loss"]) == 4
    losses = [r["heldout_loss"] for r in m["checkpoints"]]
    assert all(np.isfinite(losses)) and len(set(losses)) == 4
    assert losses == [tune["heldout_loss"][k] for k in ("0", "1", "2", "4")]
    about = m["update"]["checkpoints"]
    assert [a["heldout_loss"] for a in about] == losses


def test_the_report_tables_separability_and_loss_per_checkpoint(tuned):
    tmp, _, m, _, _ = tuned
    report([tmp / "outputs"], tmp / "rep")
    md = (tmp / "rep" / "report.md").read_text()
    assert "**Real update**" in md  # the usual update-vs-twins table
    table = md.split("**Separability along the update**")[1].split("\n\n")[1]
    header, _, *rows = [line for line in table.splitlines() if line.startswith("|")]
    cols = header.split(" | ")
    cells = [dict(zip(cols, r.split(" | "), strict=True)) for r in rows]
    assert [c["checkpoint"] for c in cells] == ["p=0", "p=0.25", "p=0.5", "p=1"]
    assert [c["step"] for c in cells] == ["0 of 4", "1 of 4", "2 of 4", "4 of 4"]
    for c, r in zip(cells, m["checkpoints"], strict=True):
        assert c["held-out loss"] == f"{r['heldout_loss']:.4f}"
        assert c["silhouette (eq. 22-23)"] == f"{r['separability_silhouette']:.4f}"
        assert c["class overlap (eq. 25)"] == f"{r['separability_class_overlap']:.3f}"
    assert cells[0]["silhouette vs checkpoint 0 (%)"] == "+0.0"


def test_held_out_alpaca_texts_are_disjoint_from_the_trained_and_drawn_by_seed():
    path = resolve_data_path("alpaca_sample.jsonl.gz")
    rows = read_alpaca(path)
    trained = rows[:1500]
    held = heldout_alpaca(path, 100, trained, 3)
    assert len(set(held)) == 100 and not set(held) & set(trained)
    assert held == heldout_alpaca(path, 100, trained, 3)
    assert held != heldout_alpaca(path, 100, trained, 4)
    left = len(set(rows) - set(trained))
    with pytest.raises(DataError, match=f"accepted: at most {left}"):
        heldout_alpaca(path, left + 1, trained, 3)


@pytest.mark.parametrize(
    "overrides, said",
    [
        (["drift.fractions=[0.5,1]"], "drift.fractions=[0.5, 1.0]; accepted: a non-decreasing"),
        (["drift.fractions=[0,1.5]"], "drift.fractions=[0.0, 1.5]; accepted: a non-empty list"),
        (["drift.heldout=0"], "drift.heldout=0"),
    ],
)
def test_bad_tune_settings_stop_before_any_work(make_cfg, tmp_path, overrides, said):
    with pytest.raises(ConfigError) as err:
        run(make_cfg(*PRESET, *overrides))
    assert said in str(err.value) and "\n" not in str(err.value)
    assert not list((tmp_path / "outputs").glob("**/meta.json"))
