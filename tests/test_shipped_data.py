"""The corpora shipped in data/: found from a clone alone, read through the project's own
loaders, overridable, and a file that is not UTF-8 text stopped with one sentence."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from driftbench.data import (
    DataError,
    content_sha256,
    default_data_dir,
    load_alpaca,
    load_toxicity,
    read_table,
    resolve_data_path,
)
from driftbench.digests import file_sha256

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
ORIGINALS = ROOT.parent / "shared" / "data"  # the uncompressed sources, where present

# name -> (rows, toxic, non-toxic at 0.5, sha256 of the uncompressed content; data/README.md)
TOXICITY = {
    "davidson2017_hate_offensive_tweets.csv": (
        24783,
        20637,
        4146,
        "4d0c31205bdb8df94c584b8bcfa891616b8ed492ba69cde44d0060b8f593355a",
    ),
    "sbic_v2_devtest_offensiveness.csv": (
        9347,
        5316,
        4031,
        "e41d02cb864461f4adf70727cbdfb634f20074b11e355373eedd0f21f18ffa12",
    ),
}
ALPACA = "alpaca_sample.jsonl"
ALPACA_SHA256 = "c9ac11f4bd318ffd3f66f16e8e5992745c9758e3cf6f57ea1b56fddb2ccf2a94"


def composed(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def original(name: str) -> Path:
    if not (ORIGINALS / name).is_file():
        pytest.skip(f"no uncompressed original {ORIGINALS / name} to compare with")
    return ORIGINALS / name


@pytest.fixture
def no_data_env(monkeypatch):
    monkeypatch.delenv("DRIFTBENCH_DATA_DIR", raising=False)


def test_default_data_dir_is_the_projects_own_data_folder():
    assert default_data_dir() == ROOT / "data"
    for name in [*TOXICITY, ALPACA]:
        assert (default_data_dir() / f"{name}.gz").is_file(), name
    assert "content warning" in (default_data_dir() / "README.md").read_text().lower()


@pytest.mark.parametrize(
    "overrides, key",
    [
        ([], "data.path"),
        (["data=sbic"], "data.path"),
        (["task=rho_sft"], "sft.data.alpaca_path"),
    ],
)
def test_every_configured_file_is_found_in_the_shipped_folder(
    no_data_env, tmp_path, monkeypatch, overrides, key
):
    monkeypatch.chdir(tmp_path)  # from anywhere, not only the project root
    cfg = composed(*overrides)
    assert cfg.runtime.data_dir is None
    name = cfg[key.split(".")[0]]
    for part in key.split(".")[1:]:
        name = name[part]
    assert name.endswith(".gz")
    assert resolve_data_path(name, cfg.runtime.data_dir) == default_data_dir() / name


@pytest.mark.parametrize("name", list(TOXICITY))
def test_shipped_toxicity_file_loads_with_its_columns_and_rows(name):
    rows, toxic, non_toxic, sha = TOXICITY[name]
    path = resolve_data_path(f"{name}.gz")
    df = read_table(path)
    assert list(df.columns) == ["text", "toxicity"] and len(df) == rows
    assert content_sha256(path) == sha
    data = load_toxicity(path, n_samples=200)
    assert data.n_available == {"toxic": toxic, "non_toxic": non_toxic}
    assert data.file_sha256 == sha  # the run records the content, however it is stored


@pytest.mark.parametrize("name", list(TOXICITY))
def test_shipped_toxicity_file_equals_its_uncompressed_original(name):
    src = original(name)
    shipped = default_data_dir() / f"{name}.gz"
    assert file_sha256(src) == content_sha256(shipped) == TOXICITY[name][3]
    pd.testing.assert_frame_equal(read_table(shipped), read_table(src))
    a, b = load_toxicity(shipped, n_samples=500), load_toxicity(src, n_samples=500)
    assert a.texts == b.texts and np.array_equal(a.labels, b.labels)


def test_shipped_alpaca_sample_loads_every_record():
    path = resolve_data_path(f"{ALPACA}.gz")
    assert content_sha256(path) == ALPACA_SHA256
    texts = load_alpaca(path, 2000, seed=0)
    assert len(texts) == len(set(texts)) == 2000
    assert all(t.startswith("### Instruction:\n") and "\n\n### Response:\n" in t for t in texts)
    assert sum("\n\n### Input:\n" in t for t in texts) == 805
    with pytest.raises(DataError, match="asked for 2001 Alpaca examples but .* holds only 2000"):
        load_alpaca(path, 2001)


def test_shipped_alpaca_sample_equals_its_uncompressed_original():
    src = original(ALPACA)
    assert load_alpaca(default_data_dir() / f"{ALPACA}.gz", 300, seed=3) == load_alpaca(
        src, 300, seed=3
    )


def test_the_uncompressed_name_is_served_by_the_shipped_gz(no_data_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in [*TOXICITY, ALPACA]:
        assert resolve_data_path(name) == default_data_dir() / f"{name}.gz"
    cfg = composed("data.path=davidson2017_hate_offensive_tweets.csv")
    assert resolve_data_path(cfg.data.path, cfg.runtime.data_dir).name.endswith(".csv.gz")


def test_a_missing_file_names_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        resolve_data_path("nope.csv")
    for place in (tmp_path / "nope.csv", default_data_dir() / "nope.csv.gz"):
        assert str(place) in str(err.value)


def small_csv(path: Path, n: int = 40) -> Path:
    rows = [f"text {i},{0.9 if i % 2 else 0.1}" for i in range(n)]
    content = ("text,toxicity\n" + "\n".join(rows) + "\n").encode()
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
    return path


@pytest.mark.parametrize("how", ["env", "override"])
def test_data_dir_from_the_environment_or_runtime_data_dir(tmp_path, monkeypatch, how):
    mine = tmp_path / "mine"
    mine.mkdir()
    small_csv(mine / "davidson2017_hate_offensive_tweets.csv.gz")
    monkeypatch.chdir(tmp_path)
    if how == "env":
        monkeypatch.setenv("DRIFTBENCH_DATA_DIR", str(mine))
        cfg = composed()
    else:
        monkeypatch.delenv("DRIFTBENCH_DATA_DIR", raising=False)
        cfg = composed(f"runtime.data_dir={mine}")
    path = resolve_data_path(cfg.data.path, cfg.runtime.data_dir)
    assert path == mine / "davidson2017_hate_offensive_tweets.csv.gz"
    assert load_toxicity(path, n_samples=20).n_available == {"toxic": 20, "non_toxic": 20}


def test_a_relative_path_is_looked_up_in_the_cwd_first(no_data_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = "davidson2017_hate_offensive_tweets.csv.gz"
    assert resolve_data_path(name) == default_data_dir() / name
    small_csv(tmp_path / name)
    assert resolve_data_path(name) == tmp_path / name
    # a plain X in the cwd wins over X.gz anywhere, and over the shipped X.gz
    small_csv(tmp_path / "davidson2017_hate_offensive_tweets.csv")
    assert resolve_data_path("davidson2017_hate_offensive_tweets.csv") == (
        tmp_path / "davidson2017_hate_offensive_tweets.csv"
    )


def test_your_own_plain_csv_still_works(tmp_path):
    cfg = composed("data=civil_comments", f"data.path={small_csv(tmp_path / 'train.csv')}")
    path = resolve_data_path(cfg.data.path, cfg.runtime.data_dir)
    assert load_toxicity(path, n_samples=20).labels.sum() == 10


def random_bytes(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def latin1_csv(path: Path) -> Path:
    path.write_bytes("text,toxicity\ncafé crème,0.9\nnaïve,0.1\n".encode("latin-1"))
    return path


def latin1_jsonl(path: Path) -> Path:
    line = '{"instruction": "Say café", "input": "", "output": "café"}\n'
    path.write_bytes(line.encode("latin-1"))
    return path


def truncated_gzip(path: Path) -> Path:
    full = gzip.compress(b"text,toxicity\n" + b"hello world,0.5\n" * 2000)
    path.write_bytes(full[: len(full) // 2])
    return path


def check_one_sentence(err: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg and "accepted: a UTF-8 CSV/TSV or JSONL file" in msg
    assert "optionally gzip-compressed" in msg


@pytest.mark.parametrize(
    "make, name",
    [
        (random_bytes, "random.csv"),
        (random_bytes, "random.csv.gz"),
        (latin1_csv, "latin1.csv"),
        (truncated_gzip, "truncated.csv.gz"),
    ],
)
def test_a_toxicity_file_that_is_not_utf8_text_is_a_data_error(tmp_path, make, name):
    path = make(tmp_path / name)
    with pytest.raises(DataError) as err:
        load_toxicity(path, n_samples=20)
    check_one_sentence(err, path)


def test_a_latin1_toxicity_file_names_the_bad_byte(tmp_path):
    path = latin1_csv(tmp_path / "latin1.csv")
    with pytest.raises(DataError, match=r"byte 0xe9 is not valid UTF-8"):
        load_toxicity(path, n_samples=20)


@pytest.mark.parametrize(
    "make, name",
    [
        (random_bytes, "random.jsonl"),
        (random_bytes, "random.jsonl.gz"),
        (latin1_jsonl, "latin1.jsonl"),
        (truncated_gzip, "truncated.jsonl.gz"),
    ],
)
def test_an_sft_file_that_is_not_utf8_text_is_a_data_error(tmp_path, make, name):
    path = make(tmp_path / name)
    with pytest.raises(DataError) as err:
        load_alpaca(path, 1)
    check_one_sentence(err, path)


def test_a_gzip_file_is_read_whatever_its_name(tmp_path):
    path = tmp_path / "plain_name.csv"
    path.write_bytes(gzip.compress(small_csv(tmp_path / "x.csv").read_bytes()))
    assert load_toxicity(path, n_samples=20).labels.sum() == 10


def launch(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DRIFTBENCH_DATA_DIR"}
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            f"runtime.output_root={tmp_path / 'outputs'}",
            "runtime.progress=false",
            *overrides,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )


@pytest.mark.parametrize(
    "overrides",
    [
        lambda tmp: ["model=tiny_random", f"data.path={random_bytes(tmp / 'random.csv')}"],
        lambda tmp: [
            "task=rho_sft",
            "model=tiny_random",
            "task.n_probes=6",
            "sft.data.n_examples=8",
            f"sft.data.alpaca_path={latin1_jsonl(tmp / 'latin1.jsonl')}",
        ],
    ],
    ids=["binary_csv", "latin1_jsonl"],
)
def test_cli_data_file_that_is_not_utf8_exits_2_with_one_line(tmp_path, overrides):
    out = launch(tmp_path, *overrides(tmp_path))
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-3000:]
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if "cannot be read as text" in line]
    assert len(lines) == 1, text[-3000:]
    assert str(tmp_path) in lines[0] and "accepted: a UTF-8 CSV/TSV or JSONL file" in lines[0]
    assert not list(tmp_path.glob("**/meta.json"))  # refused before a run dir was made
