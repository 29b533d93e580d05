"""A team's own update: v1 and v2 as two local model folders, run as docs/updates.md's "Your own
update" shows: a same-width swap with no map, and the path between them by interpolation. Each
checkpoint's angle is the mean angle between the two folders' own embeddings of the test texts,
computed here directly."""

import numpy as np
import pytest
import torch
from conftest import saved_tiny_model

from driftbench.backends import load_model
from driftbench.embed import extract_embeddings
from driftbench.launcher import run
from driftbench.models import ModelSpec
from driftbench.tasks.drift_eval import task as drift_task

TINY = ["data.n_samples=200", "monitor=none"]


@pytest.fixture
def v1_v2(tiny_model, tmp_path):
    """v1: the tiny model saved as a folder; v2: the same with every weight moved by 2% noise."""
    v1 = saved_tiny_model(tiny_model, tmp_path)
    loaded = load_model(ModelSpec(name="v1", source="hf", name_or_path=str(v1)), tmp_path)
    torch.manual_seed(0)
    model = loaded.model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * p.abs().mean() * torch.randn_like(p))
    v2 = tmp_path / "v2"
    model.save_pretrained(v2)
    loaded.tokenizer.save_pretrained(v2)
    return v1, v2


def angle_between(folders, texts, cfg) -> float:
    """Mean angle (degrees) between two folders' last-token embeddings of ``texts``, embedded
    as the run embeds them."""
    z = []
    for f in folders:
        spec = ModelSpec(name=f.name, source="hf", name_or_path=str(f))
        m = load_model(spec, cfg.runtime.cache_dir)
        e, _ = extract_embeddings(
            m.model, m.tokenizer, texts, "last_token", cfg.embed.max_length,
            batch_tokens=cfg.embed.batch_tokens, progress=False, packed=cfg.embed.packed,
        )  # fmt: skip
        z.append(e / np.linalg.norm(e, axis=1, keepdims=True))
    diff, both = np.linalg.norm(z[0] - z[1], axis=1), np.linalg.norm(z[0] + z[1], axis=1)
    return float(np.degrees(2 * np.arctan2(diff, both)).mean())


def own(v1) -> list[str]:
    return [*TINY, "model=hf", f"model.name_or_path={v1}"]


def test_v2_as_a_same_width_swap_without_a_map(make_cfg, v1_v2):
    v1, v2 = v1_v2
    cfg = make_cfg(
        *own(v1), "drift=swap", "model@drift.target=hf", f"drift.target.name_or_path={v2}",
        "drift.target.name=v2", "drift.map=none", "drift.anchors=0",
    )  # fmt: skip
    rows = run(cfg)["checkpoints"]
    data = drift_task.load_data(cfg)
    test = [data.texts[i] for i in data.split["test"]]
    assert [r["update"] for r in rows] == ["original", "v2"]
    assert rows[1]["realized_angle_deg"] == pytest.approx(
        angle_between((v1, v2), test, cfg), rel=1e-4
    )


def test_the_path_from_v1_to_v2_by_interpolation(make_cfg, v1_v2):
    v1, v2 = v1_v2
    cfg = make_cfg(
        *own(v1), "drift=interpolate", "drift.quantize=null", "+model@drift.target=hf",
        f"drift.target.name_or_path={v2}", "drift.alphas=[0,0.5,1]",
    )  # fmt: skip
    rows = run(cfg)["checkpoints"]
    data = drift_task.load_data(cfg)
    test = [data.texts[i] for i in data.split["test"]]
    angles = [r["realized_angle_deg"] for r in rows]
    assert angles[0] == pytest.approx(0, abs=1e-6) and 0 < angles[1] < angles[2]
    assert angles[2] == pytest.approx(angle_between((v1, v2), test, cfg), rel=1e-3)
