"""``data=csv``: a team's own labelled texts (CSV, TSV, JSONL, each optionally gzip, or Parquet),
balanced or at the file's own positive rate, split at random or by the file's own split column;
every bad value is one line, exit code 2, no run dir; the shipped groups keep their result keys."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from test_launch import launch, one_error_line, only_run_dir
from test_report import config, drift_run, write_runs

from driftbench.data import DataError, LabelRule, load_toxicity, read_table
from driftbench.digests import json_sha256
from driftbench.fileio import _jsonable
from driftbench.launcher import prepare
from driftbench.report import collect, group_runs, varying_keys
from driftbench.runs import NOT_HASHED
from driftbench.tasks.drift_eval import task as drift_task

N_ROWS, N_TOXIC = 500, 100  # a 20% positive rate
CSV = [
    "data=csv",
    "data.text_column=body",
    "data.label_column=label",
    "data.positive_labels=[toxic]",
    "data.negative_labels=[clean]",
]
RUN = ["model=tiny_random", "schedule=list", "schedule.sigmas=[0,0.1]", "monitor=none"]
# what the file's own split column may say, in any case: (cell, the split it names)
SPLIT_CELLS = [("train", "train"), ("Train", "train"), ("VAL", "val"), ("dev", "val")]
SPLIT_CELLS += [("Validation", "val"), ("test", "test"), (" TEST ", "test")]


def rows(n: int = N_ROWS, fold=None) -> list[dict]:
    """``n`` texts, every fifth labelled toxic, the rest clean; ``fold(i)`` adds a split cell."""
    out = []
    for i in range(n):
        row = {"body": f"comment {i}: {'awful' if i % 5 == 0 else 'fine'}, words {i * 7 % 13}"}
        row["label"] = "toxic" if i % 5 == 0 else "clean"
        if fold is not None:
            row["fold"] = fold(i)
        out.append(row)
    return out


def write_table(path: Path, records: list[dict]) -> Path:
    """``records`` in the format ``path``'s suffix names (.csv, .tsv, .jsonl.gz, .parquet)."""
    import pandas as pd

    df = pd.DataFrame.from_records(records)
    name = path.name
    if name.endswith(".parquet"):
        pytest.importorskip("pyarrow")
        df.to_parquet(path)
    elif name.endswith(".jsonl.gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    else:
        df.to_csv(path, sep="\t" if name.endswith(".tsv") else ",", index=False)
    return path


def run_metrics(tmp_path: Path, *overrides: str) -> dict:
    launch(tmp_path, *RUN, *CSV, *overrides)
    return json.loads((only_run_dir(tmp_path / "outputs") / "metrics.json").read_text())


def composed(make_cfg, *overrides: str):
    return make_cfg(*RUN, *CSV, *overrides)


# ── a file at its own positive rate, end to end ─────────────────────────────────────────────


@pytest.mark.parametrize("name", ["mine.csv", "mine.tsv", "mine.jsonl.gz", "mine.parquet"])
def test_balance_false_keeps_the_files_positive_rate_in_every_split(tmp_path, name):
    path = write_table(tmp_path / name, rows())
    data = run_metrics(tmp_path, f"data.path={path}", "data.balance=false", "data.n_samples=200")[
        "data"
    ]
    # 200 texts at 100/500: 40 toxic, 160 clean; cut per class 70/10/20: 28/4/8 and 112/16/32
    assert (data["n_train"], data["n_val"], data["n_test"]) == (140, 20, 40)
    assert data["n_positive"] == {"train": 28, "val": 4, "test": 8}
    assert data["positive_rate"] == {"train": 0.2, "val": 0.2, "test": 0.2}
    assert data["balance"] is False and data["split_column"] is None
    assert data["available"] == {"toxic": N_TOXIC, "non_toxic": N_ROWS - N_TOXIC}
    if name == "mine.csv":  # the report states the rate
        from driftbench.report import report

        report([tmp_path / "outputs"], tmp_path / "rep")
        (row,) = csv.DictReader(open(tmp_path / "rep" / "report.csv"))
        assert float(row["positive_rate_test"]) == 0.2


def test_balance_true_draws_as_many_positive_as_negative_texts(tmp_path):
    path = write_table(tmp_path / "mine.csv", rows())
    data = run_metrics(tmp_path, f"data.path={path}", "data.n_samples=200")["data"]
    assert data["n_positive"] == {"train": 70, "val": 10, "test": 20}
    assert data["positive_rate"] == {"train": 0.5, "val": 0.5, "test": 0.5}
    assert data["balance"] is True


def test_the_natural_sample_is_seeded_and_drawn_per_class(tmp_path):
    path = write_table(tmp_path / "mine.csv", rows())
    rule = LabelRule(("toxic",), ("clean",))
    kw = {"text_column": "body", "label_column": "label", "rule": rule, "balance": False}
    a = load_toxicity(path, n_samples=200, sample_seed=1, split_seed=1, **kw)
    b = load_toxicity(path, n_samples=200, sample_seed=1, split_seed=2, **kw)
    c = load_toxicity(path, n_samples=200, sample_seed=2, split_seed=1, **kw)
    assert a.labels.sum() == 40 and len(set(a.texts)) == 200
    assert a.texts == b.texts and a.texts != c.texts
    assert all(a.labels[idx].mean() == 0.2 for idx in a.split.values())
    every = np.sort(np.concatenate(list(a.split.values())))
    assert every.tolist() == list(range(200))


# ── the file's own split ──────────────────────────────────────────────────────────────────


def fold_of(i: int) -> str:
    """Rows 0-299 train, 300-399 val, 400-499 test, in the spellings a team might use."""
    split = "train" if i < 300 else "val" if i < 400 else "test"
    spellings = [cell for cell, named in SPLIT_CELLS if named == split]
    return spellings[i % len(spellings)]


def given_rows(split: str) -> list[int]:
    return list({"train": range(300), "val": range(300, 400), "test": range(400, 500)}[split])


def test_a_split_column_uses_exactly_the_given_rows_per_split(tmp_path, make_cfg):
    path = write_table(tmp_path / "mine.csv", rows(fold=fold_of))
    over = [f"data.path={path}", "data.split_column=fold", "data.balance=false"]
    data = drift_task.load_data(composed(make_cfg, *over, "data.n_samples=500"))
    for split in ("train", "val", "test"):
        texts = [data.texts[i] for i in data.split[split]]
        assert texts == [rows()[i]["body"] for i in given_rows(split)]
        assert data.labels[data.split[split]].mean() == 0.2
    ran = run_metrics(tmp_path, *over, "data.n_samples=500")["data"]
    assert (ran["n_train"], ran["n_val"], ran["n_test"]) == (300, 100, 100)
    assert ran["n_positive"] == {"train": 60, "val": 20, "test": 20}
    assert ran["split_column"] == "fold"


def test_a_split_column_with_balance_draws_each_splits_larger_class_down(make_cfg, tmp_path):
    path = write_table(tmp_path / "mine.csv", rows(fold=fold_of))
    cfg = composed(make_cfg, f"data.path={path}", "data.split_column=fold", "data.n_samples=200")
    data = drift_task.load_data(cfg)
    assert {s: len(idx) for s, idx in data.split.items()} == {"train": 120, "val": 40, "test": 40}
    for split in ("train", "val", "test"):
        assert data.labels[data.split[split]].mean() == 0.5
        given = {rows()[i]["body"] for i in given_rows(split)}
        assert {data.texts[i] for i in data.split[split]} <= given


# ── every bad value: one line, exit 2, no run dir ───────────────────────────────────────────


def bad_split_cell(i: int) -> str:
    return "holdout" if i == 7 else fold_of(i)


def no_positive_val(i: int) -> str:
    return "val" if 300 <= i < 400 and i % 5 else ("train" if i < 400 else "test")


BAD = {
    "unknown suffix": (
        lambda tmp: [
            f"data.path={write_table(tmp / 'mine.csv', rows()).rename(tmp / 'mine.xlsx')}"
        ],
        "has suffix '.xlsx'; accepted: .csv, .tsv, .jsonl (each optionally .gz), .parquet",
    ),
    "missing path": (lambda tmp: [], "data.path is not set: give your CSV, TSV, JSONL or Parquet"),
    "missing column": (
        lambda tmp: [f"data.path={write_table(tmp / 'm.csv', rows())}", "data.text_column=text"],
        "data.text_column='text': no such column in {tmp}/m.csv (columns: body, label)",
    ),
    "missing split column": (
        lambda tmp: [f"data.path={write_table(tmp / 'm.csv', rows())}", "data.split_column=fold"],
        "data.split_column='fold': no such column in {tmp}/m.csv (columns: body, label)",
    ),
    "split column with other values": (
        lambda tmp: [
            f"data.path={write_table(tmp / 'm.csv', rows(fold=bad_split_cell))}",
            "data.split_column=fold",
        ],
        "data.split_column='fold' of {tmp}/m.csv holds 'holdout' (1 rows); accepted: train, val "
        "(or validation, dev), test, in any case",
    ),
    "a split with no positive text": (
        lambda tmp: [
            f"data.path={write_table(tmp / 'm.csv', rows(fold=no_positive_val))}",
            "data.split_column=fold",
            "data.balance=false",
            "data.n_samples=500",
        ],
        "the val split of {tmp}/m.csv (data.split_column='fold') holds 0 positive and 80 "
        "negative texts; accepted: a split with both",
    ),
    "more given rows than n_samples": (
        lambda tmp: [
            f"data.path={write_table(tmp / 'm.csv', rows(fold=fold_of))}",
            "data.split_column=fold",
            "data.balance=false",
            "data.n_samples=400",
        ],
        "data.split_column='fold' gives 500 texts (train/val/test 300/100/100), more than "
        "data.n_samples=400: with a split column every given text is used; use "
        "data.n_samples>=500",
    ),
    "balance not a bool": (
        lambda tmp: [f"data.path={write_table(tmp / 'm.csv', rows())}", "data.balance=maybe"],
        "data.balance=maybe; accepted: true or false",
    ),
    "more rows than the file": (
        lambda tmp: [
            f"data.path={write_table(tmp / 'm.csv', rows())}",
            "data.balance=false",
            "data.n_samples=600",
        ],
        "data.n_samples=600 is more than the 500 usable rows in m.csv (100 toxic, 400 non-toxic "
        "by data.positive_labels); use data.n_samples<=500",
    ),
    "too few positives at the natural rate": (
        lambda tmp: [
            f"data.path={write_table(tmp / 'm.csv', rows())}",
            "data.balance=false",
            "data.n_samples=20",
        ],
        "data.n_samples=20 at the file's positive rate 20.0% (data.balance=false) gives 4 "
        "positive and 16 negative texts in m.csv (100 toxic, 400 non-toxic by "
        "data.positive_labels), too few to put one of each in every split of "
        "data.split=[0.7, 0.1, 0.2]; the smallest size that does: data.n_samples=28",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_value_is_one_line_with_exit_2_and_no_run_dir(tmp_path, case):
    overrides, said = BAD[case]
    out = launch(tmp_path, *RUN, *CSV, *overrides(tmp_path), check=False)
    assert said.format(tmp=tmp_path) in one_error_line(out)
    assert not list(tmp_path.glob("outputs/**/meta.json"))


# ── reading JSONL ───────────────────────────────────────────────────────────────────────────


def test_jsonl_is_read_plain_or_gzip_and_a_bad_line_is_named(tmp_path):
    plain = tmp_path / "m.jsonl"
    plain.write_text('{"text": "a", "toxicity": 1}\n\n{"text": "b", "toxicity": 0}\n')
    assert read_table(plain).to_dict("records") == [
        {"text": "a", "toxicity": 1},
        {"text": "b", "toxicity": 0},
    ]
    packed = tmp_path / "m.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_table(packed).equals(read_table(plain))
    plain.write_text('{"text": "a", "toxicity": 1}\n{"text": "b", toxicity: 0}\n')
    with pytest.raises(DataError, match=rf"^{plain}:2 is not a JSON object \("):
        read_table(plain)


# ── the shipped groups keep their result keys ───────────────────────────────────────────────


def key_without_new_fields(cfg) -> str:
    """The result key as it was computed before data.balance and data.split_column existed."""
    full = OmegaConf.to_container(cfg, resolve=True)
    read = {k: full[k] for k in ("seed", *drift_task.CONFIG_GROUPS)}
    for name in ("balance", "split_column"):
        del read["data"][name]
    config = {k: v for k, v in read.items() if k not in NOT_HASHED}
    inputs = drift_task.inputs(cfg)
    return json_sha256(
        _jsonable(
            {"config": config, "inputs": inputs, "results_version": drift_task.RESULTS_VERSION}
        )
    )


@pytest.mark.parametrize("data", ["davidson", "sbic"])
def test_the_shipped_groups_keep_their_result_keys(make_cfg, data):
    cfg = make_cfg("model=tiny_random", "data.n_samples=200", f"data={data}")
    assert cfg.data.balance is True and cfg.data.split_column is None
    assert prepare(cfg).result_key == key_without_new_fields(cfg)
    natural = make_cfg(
        "model=tiny_random", "data.n_samples=200", f"data={data}", "data.balance=false"
    )
    assert prepare(natural).result_key != prepare(cfg).result_key


def test_a_split_column_enters_the_result_key(make_cfg, tmp_path):
    path = write_table(tmp_path / "mine.csv", rows(fold=fold_of))
    over = [f"data.path={path}", "data.balance=false", "data.n_samples=500"]
    given = prepare(composed(make_cfg, *over, "data.split_column=fold")).result_key
    assert given != prepare(composed(make_cfg, *over)).result_key


def test_a_report_takes_a_run_from_before_the_new_keys_for_one_at_their_defaults(tmp_path):
    """A reused run's config.yaml lacks data.balance and data.split_column: it ran balanced,
    split at random, so it is a replicate of a new run at those defaults, not another setting."""
    old = config(seed=0)
    new = config(seed=1, data__balance=True, data__split_column=None)
    natural = config(seed=0, data__balance=False, data__split_column=None)
    runs = [drift_run(c, [0.9, 0.8, 0.7]) for c in (old, new, natural)]
    collected = collect([write_runs(tmp_path / "sweep", runs)])[0]
    assert varying_keys(collected) == ["data.balance", "seed"]
    assert sorted(len(g.runs) for g in group_runs(collected)) == [1, 2]
