"""Data loading: the balanced sample, the stratified split and each bad-input message."""

import re

import numpy as np
import pytest

from driftbench.data import (
    DataError,
    LabelRule,
    check_sample_size,
    default_data_dir,
    load_toxicity,
    resolve_data_path,
    stratified_split,
)

DAVIDSON = "davidson2017_hate_offensive_tweets.csv.gz"


def test_data_dir_is_found_from_the_project_root_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_data_path(DAVIDSON) == (default_data_dir() / DAVIDSON).resolve()


def test_balanced_sample_and_stratified_70_10_20_split():
    data = load_toxicity(resolve_data_path(DAVIDSON), n_samples=1000, sample_seed=1, split_seed=2)
    assert len(data.texts) == 1000 and data.labels.sum() == 500
    sizes = {k: len(v) for k, v in data.split.items()}
    assert sizes == {"train": 700, "val": 100, "test": 200}
    for part in data.split.values():
        assert data.labels[part].mean() == pytest.approx(0.5)
    every = np.concatenate(list(data.split.values()))
    assert sorted(every.tolist()) == list(range(1000))
    assert data.n_available == {"toxic": 20637, "non_toxic": 4146}


def test_sample_is_seeded_and_split_seed_leaves_the_texts_alone():
    path = resolve_data_path(DAVIDSON)
    a = load_toxicity(path, n_samples=200, sample_seed=5, split_seed=0)
    b = load_toxicity(path, n_samples=200, sample_seed=5, split_seed=1)
    assert a.texts == b.texts
    assert not np.array_equal(a.split["train"], b.split["train"])


def test_split_of_a_class_rounds_per_class():
    labels = np.array([0] * 10 + [1] * 10)
    s = stratified_split(labels, (0.7, 0.1, 0.2), seed=0)
    assert [len(s[k]) for k in ("train", "val", "test")] == [14, 2, 4]


def test_too_many_samples_says_how_many_balanced_rows_exist():
    with pytest.raises(ValueError, match="more than the 8292 balanced rows available"):
        load_toxicity(resolve_data_path(DAVIDSON), n_samples=10000)


def test_missing_file_names_the_places_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        resolve_data_path("nope.csv", str(tmp_path))


def test_unset_path_says_what_to_give():
    with pytest.raises(ValueError, match="data.path is not set"):
        resolve_data_path(None)


def test_civil_comments_columns_are_accepted(tmp_path):
    f = tmp_path / "cc.csv"
    rows = [f"comment {i},{0.9 if i % 2 else 0.1}" for i in range(40)]
    f.write_text("comment_text,target\n" + "\n".join(rows) + "\n")
    data = load_toxicity(f, n_samples=20)
    assert data.labels.sum() == 10


def test_missing_column_lists_what_is_there(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("body,score\nhello,0.2\n")
    with pytest.raises(
        ValueError, match="no text column .* expected one of comment_text, text; found body, score"
    ):
        load_toxicity(f, n_samples=20)


def test_no_usable_rows(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("text,toxicity\nhello,n/a\nworld,\n")
    with pytest.raises(ValueError, match="no usable rows"):
        load_toxicity(f, n_samples=20, bad_labels="drop")


def labelled_csv(path, labels_after: list[str], good=("0.1", "0.9")):
    """40 rows with labels in [0, 1] (20 of each class), then one row per extra label."""
    rows = [f"text {i},{good[i % 2]}" for i in range(40)]
    rows += [f"extra {i},{cell}" for i, cell in enumerate(labels_after)]
    path.write_text("text,toxicity\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("cell", ["inf", "-inf", "nan", "1.5", "-0.2", "n/a", ""])
def test_a_label_that_is_not_a_number_in_0_1_stops_with_the_count_of_bad_rows(tmp_path, cell):
    f = labelled_csv(tmp_path / "x.csv", [cell, cell, "1"])
    with pytest.raises(DataError) as err:
        load_toxicity(f, n_samples=20)
    assert str(err.value) == (
        f"2 rows of {f} have a 'toxicity' that is not a finite number in [0, 1] "
        f"(first: data row 41, {cell!r}); data.bad_labels=drop drops them"
    )


def test_bad_labels_drop_drops_them_and_says_how_many(tmp_path, caplog):
    f = labelled_csv(tmp_path / "x.csv", ["inf", "2", "1", "0"])
    data = load_toxicity(f, n_samples=40, bad_labels="drop")
    said = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("data.bad_labels=drop: dropped 2 rows of")
    assert data.n_available == {"toxic": 21, "non_toxic": 21}
    assert 40 not in data.rows and 41 not in data.rows  # the inf and the 2


def test_string_labels_are_read_through_the_names_given_for_each_class(tmp_path):
    f = labelled_csv(tmp_path / "x.csv", ["hate"], good=("clean", "toxic"))
    rule = LabelRule(positive=("toxic", "hate"), negative=("clean",))
    data = load_toxicity(f, n_samples=40, rule=rule)
    assert data.n_available == {"toxic": 21, "non_toxic": 20}
    texts = dict(zip(data.texts, data.labels, strict=True))
    assert texts["text 1"] == 1 and texts["text 0"] == 0
    g = labelled_csv(tmp_path / "y.csv", ["meh"], good=("clean", "toxic"))
    with pytest.raises(DataError, match=r"1 rows .* not one of 'toxic', 'hate', 'clean' .*'meh'"):
        load_toxicity(g, n_samples=20, rule=rule)


def test_one_named_class_makes_every_other_label_the_other_class_and_says_which(tmp_path, caplog):
    """positive_labels alone: 'clean' and the misspelt 'toxik' are negative, and the log names
    both, so the misspelling is seen; an empty cell is still no label."""
    f = labelled_csv(tmp_path / "x.csv", ["toxik", "toxik"], good=("clean", "toxic"))
    with caplog.at_level("INFO", logger="driftbench.data"):
        data = load_toxicity(f, n_samples=40, rule=LabelRule(positive=("toxic",)))
    assert data.n_available == {"toxic": 20, "non_toxic": 22}
    assert "22 rows labelled ['clean', 'toxik'] count as negative" in caplog.text
    g = labelled_csv(tmp_path / "y.csv", [""], good=("clean", "toxic"))
    with pytest.raises(DataError, match="1 rows"):
        load_toxicity(g, n_samples=20, rule=LabelRule(negative=("clean",)))


def test_string_labels_are_disjoint(tmp_path):
    f = labelled_csv(tmp_path / "x.csv", [], good=("clean", "toxic"))
    with pytest.raises(ValueError, match=r"share \['toxic'\]"):
        load_toxicity(f, n_samples=20, rule=LabelRule(("toxic",), ("clean", "toxic")))


def test_bad_labels_is_error_or_drop(tmp_path):
    f = labelled_csv(tmp_path / "x.csv", [])
    with pytest.raises(ValueError, match="data.bad_labels='skip'; accepted: error, drop"):
        load_toxicity(f, n_samples=20, bad_labels="skip")


@pytest.mark.parametrize("content", ["", "text,toxicity\n"])
def test_an_empty_file_is_named_in_one_sentence(tmp_path, content):
    f = tmp_path / "empty.csv"
    f.write_text(content)
    with pytest.raises(DataError, match=re.escape(f"data file {f} is empty")):
        load_toxicity(f, n_samples=20)


def test_a_sample_too_small_to_fill_every_split_says_the_smallest_that_does():
    # 5 rows per class: round(0.7*5)=4 and round(0.8*5)=4, so validation would be empty
    with pytest.raises(DataError, match=r"data.n_samples=10 .* leaves a split empty .*'val': 0"):
        check_sample_size(10, (0.7, 0.1, 0.2))
    with pytest.raises(DataError, match=r"fills every split: data.n_samples=18$"):
        check_sample_size(16, (0.7, 0.1, 0.2))  # rounding: 16 fails although 12 and 14 pass
    check_sample_size(12, (0.7, 0.1, 0.2))  # 6 per class: 4 / 1 / 1
    assert {k: v.size for k, v in stratified_split(np.repeat([0, 1], 6)).items()} == {
        "train": 8,
        "val": 2,
        "test": 2,
    }
