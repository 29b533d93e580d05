"""Data: labelled texts (CSV, TSV, JSONL or Parquet), the sample and its split.

The sample is balanced (``data.balance``, the default: as many positive as negative texts) or
drawn at the file's own positive rate, and split 70/10/20 stratified, or taken as the file's own
``data.split_column`` says (train / val / test). Relative data paths are looked up in the current
directory first, then in the data directory, which defaults to the project's own ``data/`` folder
(the shipped corpora, see data/README.md) and never depends on the working directory (Hydra may
change it). Text files may be gzip-compressed (``.csv.gz``, ``.tsv.gz``, ``.jsonl.gz``); a path
``X`` that is not found is served by ``X.gz`` where that exists. An installed wheel carries the
corpora in the package (``driftbench/shipped.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from driftbench.digests import file_sha256
from driftbench.shipped import shipped_data_dir

TEXT_COLUMNS = ("comment_text", "text")
LABEL_COLUMNS = ("toxicity", "target")

log = logging.getLogger(__name__)


class DataError(ValueError):
    """The data file cannot give what the config asks for (a column, rows, a sample size); the
    message names the value and what the file holds. Found while reading the data, before any
    model is loaded."""


ACCEPTED_TEXT_FILES = "a UTF-8 CSV/TSV or JSONL file, optionally gzip-compressed (.gz)"
# what a file that cannot be read as text raises: bad bytes, a broken or truncated gzip stream
_UNREADABLE = (UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error)


def default_data_dir() -> Path:
    """The corpora shipped with the project (``<project root>/data``; an installed wheel's own
    copy)."""
    return shipped_data_dir()


def unreadable_file_error(path: Path, e: Exception) -> DataError:
    """One sentence for a data file that is binary, not UTF-8, or a broken gzip stream."""
    reason = (
        f"byte 0x{e.object[e.start]:02x} is not valid UTF-8"
        if isinstance(e, UnicodeDecodeError)
        else f"{type(e).__name__}: {e}"
    )
    return DataError(
        f"data file {path} cannot be read as text ({reason}); accepted: {ACCEPTED_TEXT_FILES}"
    )


def is_gzip(path: Path) -> bool:
    """Whether the file starts with gzip's magic bytes (whatever its name says)."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_text(path: Path):
    """A text stream over ``path`` in UTF-8, decompressed on the fly when it is gzip."""
    if is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def check_text_file(path: Path) -> None:
    """Decode the whole file once, so a binary or non-UTF-8 file is refused before a run dir is
    made (a few ms per MB), not halfway through a run."""
    try:
        with open_text(path) as f:
            while f.read(1 << 20):
                pass
    except _UNREADABLE as e:
        raise unreadable_file_error(path, e) from e


def data_suffix(path: Path) -> str:
    """The format suffix, under a ``.gz``: ``x.csv.gz`` -> ``.csv``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        return suffixes[-2] if len(suffixes) > 1 else ""
    return suffixes[-1] if suffixes else ""


def resolve_data_path(path: str | os.PathLike | None, data_dir: str | None = None) -> Path:
    """Absolute paths as given; relative ones from the cwd if they exist there, else from the
    data directory. In each place ``X.gz`` serves for ``X`` when ``X`` itself is missing (the
    shipped corpora are gzip-compressed). Raises with every place named when the file is
    nowhere."""
    if path is None or str(path) == "":
        raise ValueError(
            "data.path is not set: give your CSV, TSV, JSONL or Parquet file, e.g. "
            "data=csv data.path=/path/to/train.csv"
        )
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute():
        candidates = [p]
    else:
        base = Path(os.path.expanduser(data_dir)) if data_dir else default_data_dir()
        candidates = [Path.cwd() / p, base / p]
    if p.suffix.lower() != ".gz":
        candidates = [x for c in candidates for x in (c, c.with_name(c.name + ".gz"))]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise FileNotFoundError(
        f"data file {str(path)!r} not found (looked in: {', '.join(str(c) for c in candidates)})"
    )


def content_sha256(path: Path, _cache: dict = {}) -> str:  # noqa: B006 - process-wide memo
    """sha256 of a data file's content, decompressed when it is gzip: ``X`` and ``X.gz`` hold the
    same data and get the same digest (the one data/README.md lists), so runs and cached
    embeddings do not depend on how the file is stored."""
    if not is_gzip(path):
        return file_sha256(path)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        try:
            with gzip.open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise unreadable_file_error(path, e) from e
        _cache[key] = h.hexdigest()
    return _cache[key]


@dataclass
class ToxicityData:
    """A split sample. ``texts``/``labels`` are in sample order; ``rows`` are the selected rows
    of the file; ``split`` maps train/val/test to positions in the sample; ``n_available``
    counts the file's usable rows of each class."""

    path: Path
    file_sha256: str
    texts: list[str]
    labels: np.ndarray
    rows: np.ndarray
    split: dict[str, np.ndarray]
    n_available: dict[str, int]

    def positive_rate(self) -> dict[str, float]:
        """The share of positive (toxic) texts in each split: 0.5 in a balanced sample."""
        return {name: float(self.labels[idx].mean()) for name, idx in self.split.items()}


def _pick_column(columns: list[str], wanted: str | None, options: tuple[str, ...], what: str, path):
    if wanted is not None:
        if wanted not in columns:
            raise DataError(
                f"data.{what}_column={wanted!r}: no such column in {path} "
                f"(columns: {', '.join(columns)})"
            )
        return wanted
    for c in options:
        if c in columns:
            return c
    raise DataError(
        f"no {what} column in {path}: expected one of {', '.join(options)}; "
        f"found {', '.join(columns)} (set data.{what}_column to choose)"
    )


# a table's format by its suffix (under any .gz): what read_table reads it as
FORMATS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
ACCEPTED_TABLES = ".csv, .tsv, .jsonl (each optionally .gz), .parquet"


def data_format(path: Path) -> str:
    """``csv``, ``tsv``, ``jsonl`` or ``parquet``, by the file's suffix; any other suffix (and a
    gzip-compressed Parquet file, which Parquet compresses itself) raises DataError."""
    fmt = FORMATS.get(data_suffix(path))
    if fmt is None or (fmt == "parquet" and path.suffix.lower() == ".gz"):
        raise DataError(
            f"data file {path} has suffix {''.join(path.suffixes[-2:])!r}; "
            f"accepted: {ACCEPTED_TABLES}"
        )
    return fmt


def check_data_file(path: Path) -> None:
    """A data table's suffix, and for a text format its bytes (``check_text_file``): before a
    run dir is made."""
    if data_format(path) != "parquet":
        check_text_file(path)


def _read_jsonl(path: Path):
    """One JSON object a line (blank lines skipped); a missing key is a missing cell."""
    import json

    import pandas as pd

    records = []
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise DataError(
                    f"{path}:{lineno} is not a JSON object ({e}); "
                    f"accepted: {ACCEPTED_TEXT_FILES}, one JSON object per line"
                ) from e
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}:{lineno} is a JSON {type(record).__name__}, not an object; "
                    f"accepted: {ACCEPTED_TEXT_FILES}, one JSON object per line"
                )
            records.append(record)
    if not records:
        raise DataError(f"data file {path} is empty (no records)")
    return pd.DataFrame.from_records(records)


def _read_parquet(path: Path):
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except ImportError as e:
        raise ImportError(f"reading {path} needs pyarrow: pip install -e '.[parquet]' ({e})") from e
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"data file {path} is not a readable Parquet file ({reason})") from e


def read_table(path: Path):
    """A data frame from CSV, TSV, JSONL (each optionally gzip-compressed) or Parquet. A file
    that is binary, not UTF-8 or a broken gzip stream raises DataError naming it, not a decoder's
    traceback."""
    import pandas as pd

    fmt = data_format(path)
    if fmt == "parquet":
        return _read_parquet(path)
    try:
        if fmt == "jsonl":
            return _read_jsonl(path)
        return pd.read_csv(
            path,
            sep="\t" if fmt == "tsv" else ",",
            keep_default_na=False,
            encoding="utf-8",
            compression="gzip" if is_gzip(path) else None,
        )
    except pd.errors.EmptyDataError as e:
        raise DataError(f"data file {path} is empty (no header, no rows)") from e
    except _UNREADABLE as e:
        raise unreadable_file_error(path, e) from e
    except pd.errors.ParserError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"data file {path} is not a well-formed {fmt.upper()} ({reason}); "
            f"accepted: {ACCEPTED_TEXT_FILES}"
        ) from e


BAD_LABELS = ("error", "drop")  # data.bad_labels: what a row with an unusable label does


@dataclass(frozen=True)
class LabelRule:
    """What a label cell may hold: a number in [0, 1] (a score, binarised at the threshold) or,
    where ``positive``/``negative`` are given, one of those strings (1 and 0). Given one list
    alone, every other non-empty cell is the other class, and the values read that way are
    logged, so that a misspelt label shows up in the run's log rather than as the other class
    unseen."""

    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()

    @property
    def named(self) -> bool:
        return bool(self.positive or self.negative)

    def accepted(self) -> str:
        if not self.named:
            return "a finite number in [0, 1]"
        if not (self.positive and self.negative):
            given = self.positive or self.negative
            return f"any non-empty value ({', '.join(map(repr, given))} and the rest)"
        return f"one of {', '.join(map(repr, self.positive + self.negative))}"

    def check(self) -> None:
        if both := set(self.positive) & set(self.negative):
            raise ValueError(f"data.positive_labels and data.negative_labels share {sorted(both)}")

    def scores(self, column) -> np.ndarray:
        """Each cell as a score in [0, 1]; NaN where it is not accepted."""
        import pandas as pd

        if self.named:
            cells = column.astype(str).str.strip()
            out = np.full(len(cells), np.nan)
            pos, neg = cells.isin(self.positive).to_numpy(), cells.isin(self.negative).to_numpy()
            rest = ~(pos | neg) & (cells != "").to_numpy()
            if not (self.positive and self.negative) and rest.any():
                other = "negative" if self.positive else "positive"
                values = sorted(set(cells[rest]))
                log.info(
                    "data.%s_labels not given: %d rows labelled %s count as %s",
                    other, int(rest.sum()), values[:10] + (["..."] if len(values) > 10 else []),
                    other,
                )  # fmt: skip
                if self.positive:
                    neg = neg | rest
                else:
                    pos = pos | rest
            out[pos], out[neg] = 1.0, 0.0
            return out
        out = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, copy=True)
        with np.errstate(invalid="ignore"):
            out[~((out >= 0) & (out <= 1))] = np.nan  # inf, -inf and out of range, as NaN
        return out


@dataclass(frozen=True)
class _Parsed:
    score: np.ndarray  # per row, in [0, 1]; NaN where the label is not accepted
    text: np.ndarray
    has_text: np.ndarray
    label_column: str
    first_bad: tuple[int, str] | None  # (data row, cell) of the first bad label of a row with text
    split: np.ndarray | None  # per row, the split column's cell, stripped and lower-cased


_PARSED: dict = {}  # the last data file parsed, for the next job of a sweep


def _cells(column) -> np.ndarray:
    """A column as strings, a missing cell (JSONL, Parquet) as the empty string."""
    return column.fillna("").astype(str).to_numpy()


def _parse(
    path: Path,
    text_column: str | None,
    label_column: str | None,
    rule: LabelRule,
    split_column: str | None = None,
) -> _Parsed:
    """Every row's label score, text and split cell (read-only): parsed once per process for a
    file of unchanged (path, size, mtime), as the jobs of a sweep read it."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, text_column, label_column, rule, split_column)
    if key not in _PARSED:
        df = read_table(path)
        if len(df) == 0:
            raise DataError(f"data file {path} is empty (a header, no rows)")
        cols = [str(c) for c in df.columns]
        tcol = _pick_column(cols, text_column, TEXT_COLUMNS, "text", path)
        lcol = _pick_column(cols, label_column, LABEL_COLUMNS, "label", path)
        split = None
        if split_column is not None:
            scol = _pick_column(cols, split_column, (), "split", path)
            split = np.char.lower(np.char.strip(_cells(df[scol]).astype(str)))
        score = rule.scores(df[lcol])
        text = _cells(df[tcol])
        has_text = np.char.str_len(text.astype(str)) > 0
        bad = np.flatnonzero(has_text & np.isnan(score))
        first_bad = (int(bad[0]) + 1, str(df[lcol].iloc[bad[0]])) if bad.size else None
        for a in (score, text, has_text, split):
            if a is not None:
                a.flags.writeable = False
        _PARSED.clear()  # one file at a time: a sweep reads one
        _PARSED[key] = _Parsed(score, text, has_text, lcol, first_bad, split)
    return _PARSED[key]


def usable_rows(parsed: _Parsed, path: Path, rule: LabelRule, bad_labels: str) -> np.ndarray:
    """Rows with a text and an accepted label. A text whose label is not accepted stops the run
    in one line with their count (``data.bad_labels=error``), or is dropped with one warning
    giving the count (``drop``)."""
    if bad_labels not in BAD_LABELS:
        raise ValueError(f"data.bad_labels={bad_labels!r}; accepted: {', '.join(BAD_LABELS)}")
    ok = parsed.has_text & ~np.isnan(parsed.score)
    n_bad = int((parsed.has_text & ~ok).sum())
    if n_bad:
        row, cell = parsed.first_bad
        what = (
            f"{n_bad} rows of {path} have a {parsed.label_column!r} that is not "
            f"{rule.accepted()} (first: data row {row}, {cell!r})"
        )
        if bad_labels == "error":
            raise DataError(f"{what}; data.bad_labels=drop drops them")
        log.warning("data.bad_labels=drop: dropped %s", what)
    rows = np.flatnonzero(ok)
    if rows.size == 0:
        raise DataError(f"no usable rows in {path}: every row lacks a text or a label")
    return rows


def load_toxicity(
    path: Path,
    text_column: str | None = None,
    label_column: str | None = None,
    threshold: float = 0.5,
    n_samples: int = 2000,
    split: tuple[float, float, float] = (0.7, 0.1, 0.2),
    sample_seed: int = 42,
    split_seed: int = 42,
    rule: LabelRule = LabelRule(),
    bad_labels: str = "error",
    balance: bool = True,
    split_column: str | None = None,
) -> ToxicityData:
    """Read, binarise at ``score >= threshold``, draw a sample of ``n_samples`` with
    ``sample_seed`` (balanced, or at the file's own positive rate with ``balance=False``) and
    split it 70/10/20 stratified with ``split_seed``; or, with ``split_column``, take the splits
    the file gives (``given_split``).

    The sample and the split have separate seeds so that a sweep over ``seed`` keeps the same
    texts (and so the same cached embeddings) while the split and the drift change."""
    check_balance(balance)
    if split_column is None:
        check_sample_size(n_samples, split, balance)
    rule.check()
    parsed = _parse(path, text_column, label_column, rule, split_column)
    rows_ok = usable_rows(parsed, path, rule, bad_labels)
    labels_all = (parsed.score[rows_ok] >= threshold).astype(int)
    pos, neg = rows_ok[labels_all == 1], rows_ok[labels_all == 0]
    n_available = {"toxic": int(pos.size), "non_toxic": int(neg.size)}
    basis = "by data.positive_labels" if rule.named else f"at threshold {threshold}"
    where = f"in {path.name} ({pos.size} toxic, {neg.size} non-toxic {basis})"
    rng = np.random.default_rng(sample_seed)
    if split_column is not None:
        chosen, parts = given_split(parsed, pos, neg, path, split_column, n_samples, balance, rng)
    elif balance:
        chosen = _balanced_sample(pos, neg, n_samples, rng, where)
    else:
        chosen = _natural_sample(pos, neg, n_samples, split, rng, where)
    labels = (parsed.score[chosen] >= threshold).astype(int)
    if split_column is None:
        parts = stratified_split(labels, split, split_seed)
    return ToxicityData(
        path=path,
        file_sha256=content_sha256(path),
        texts=[str(t) for t in parsed.text[chosen]],
        labels=labels,
        rows=chosen,
        split=parts,
        n_available=n_available,
    )


def check_balance(balance) -> None:
    if not isinstance(balance, bool):
        raise DataError(f"data.balance={balance!r}; accepted: true or false")


def _balanced_sample(pos, neg, n_samples: int, rng, where: str) -> np.ndarray:
    """``n_samples / 2`` rows of each class, in a seeded order."""
    per_class = n_samples // 2
    balanced_max = 2 * min(pos.size, neg.size)
    if per_class > min(pos.size, neg.size):
        raise DataError(
            f"data.n_samples={n_samples} is more than the {balanced_max} balanced rows available "
            f"{where}; use data.n_samples<={balanced_max}"
        )
    chosen = np.concatenate(
        [rng.choice(neg, per_class, replace=False), rng.choice(pos, per_class, replace=False)]
    )
    return chosen[rng.permutation(chosen.size)]


def natural_counts(n_samples: int, n_pos: int, n_neg: int) -> tuple[int, int]:
    """(positive, negative) texts of a sample of ``n_samples`` at the file's own positive rate
    ``n_pos / (n_pos + n_neg)``, the positives rounded to the nearest integer."""
    k = int(round(n_samples * n_pos / (n_pos + n_neg)))
    return k, n_samples - k


def _natural_sample(pos, neg, n_samples: int, split, rng, where: str) -> np.ndarray:
    """``n_samples`` rows drawn per class at the file's own positive rate (so the sample, and
    every split cut from it per class, holds that rate up to rounding), in a seeded order."""
    total = pos.size + neg.size
    if n_samples > total:
        raise DataError(
            f"data.n_samples={n_samples} is more than the {total} usable rows {where}; "
            f"use data.n_samples<={total}"
        )

    def fills(n: int) -> bool:
        return all(
            min(class_split_sizes(k, split)) >= 1 for k in natural_counts(n, pos.size, neg.size)
        )

    if not fills(n_samples):
        k_pos, k_neg = natural_counts(n_samples, pos.size, neg.size)
        rate = pos.size / total
        hint = next((f"data.n_samples={n}" for n in range(n_samples, total + 1) if fills(n)), None)
        raise DataError(
            f"data.n_samples={n_samples} at the file's positive rate {rate:.1%} (data.balance="
            f"false) gives {k_pos} positive and {k_neg} negative texts {where}, too few to put one "
            f"of each in every split of data.split={[float(x) for x in split]}; "
            + (
                f"the smallest size that does: {hint}"
                if hint
                else "no size up to the whole file does; use data.balance=true"
            )
        )
    k_pos, k_neg = natural_counts(n_samples, pos.size, neg.size)
    chosen = np.concatenate(
        [rng.choice(neg, k_neg, replace=False), rng.choice(pos, k_pos, replace=False)]
    )
    return chosen[rng.permutation(chosen.size)]


# the split column's cells (stripped, any case) that name each split
SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "dev": "val", "test": "test"}
ACCEPTED_SPLITS = "train, val (or validation, dev), test, in any case"


def given_split(
    parsed: _Parsed,
    pos: np.ndarray,
    neg: np.ndarray,
    path: Path,
    split_column: str,
    n_samples: int,
    balance: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The file's own split: every usable row in the split its ``split_column`` cell names
    (``SPLIT_NAMES``), in file order; with ``balance``, each split's larger class drawn down
    (seeded) to the size of its smaller. Nothing is resampled: ``n_samples`` only caps the
    texts a run embeds, and a file that gives more is refused. Returns the rows and, per split,
    their positions among them."""
    rows = np.sort(np.concatenate([pos, neg]))
    cells = parsed.split[rows]
    names = np.array([SPLIT_NAMES.get(c, "") for c in cells])
    if (names == "").any():
        bad = sorted(set(cells[names == ""].tolist()))
        shown = ", ".join(map(repr, bad[:10])) + (f" and {len(bad) - 10} more" if bad[10:] else "")
        raise DataError(
            f"data.split_column={split_column!r} of {path} holds {shown} "
            f"({int((names == '').sum())} rows); accepted: {ACCEPTED_SPLITS}"
        )
    is_pos = np.isin(rows, pos)
    chosen = {}
    for name in ("train", "val", "test"):
        in_split = names == name
        p_rows, n_rows = rows[in_split & is_pos], rows[in_split & ~is_pos]
        if p_rows.size == 0 or n_rows.size == 0:
            raise DataError(
                f"the {name} split of {path} (data.split_column={split_column!r}) holds "
                f"{p_rows.size} positive and {n_rows.size} negative texts; accepted: a split "
                "with both"
            )
        if balance:
            k = min(p_rows.size, n_rows.size)
            p_rows, n_rows = (rng.choice(r, k, replace=False) for r in (p_rows, n_rows))
        chosen[name] = np.sort(np.concatenate([p_rows, n_rows]))
    every = np.sort(np.concatenate(list(chosen.values())))
    if every.size > n_samples:
        sizes = "/".join(str(r.size) for r in chosen.values())
        raise DataError(
            f"data.split_column={split_column!r} gives {every.size} texts (train/val/test "
            f"{sizes}{', balanced' if balance else ''}), more than data.n_samples={n_samples}: "
            f"with a split column every given text is used; use data.n_samples>={every.size}"
        )
    return every, {name: np.searchsorted(every, r) for name, r in chosen.items()}


def validate_split(split) -> None:
    split = tuple(float(s) for s in split)
    if len(split) != 3 or any(s <= 0 for s in split) or abs(sum(split) - 1.0) > 1e-6:
        raise ValueError(f"data.split={list(split)}: need three positive fractions summing to 1")


def _cuts(n: int, split) -> tuple[int, int]:
    """Where one class of ``n`` rows is cut into train | val | test."""
    return int(round(split[0] * n)), int(round((split[0] + split[1]) * n))


def class_split_sizes(n: int, split) -> list[int]:
    """Rows of one class of ``n`` rows in train, val and test (``stratified_split``'s cuts)."""
    cut1, cut2 = _cuts(n, split)
    return [cut1, cut2 - cut1, n - cut2]


def check_sample_size(n_samples: int, split, balance: bool = True) -> None:
    """A sample of ``n_samples`` must give every split rows of both classes: an empty
    validation split would otherwise fail deep inside the classifier's C selection. A balanced
    sample is checked here; one at the file's own rate once the file's rate is known
    (``_natural_sample``)."""
    validate_split(split)
    if n_samples < 10 or (balance and n_samples % 2):
        need = "an even number >= 10 (balanced)" if balance else "a number >= 10"
        raise DataError(f"data.n_samples={n_samples}: need {need}")
    if not balance:
        return

    def sizes(n: int) -> list[int]:
        return class_split_sizes(n // 2, split)

    if min(sizes(n_samples)) < 1:
        next_ok = next(n for n in range(n_samples, 10**6, 2) if min(sizes(n)) >= 1)
        raise DataError(
            f"data.n_samples={n_samples} with data.split={[float(x) for x in split]} leaves a "
            f"split empty ({dict(zip(('train', 'val', 'test'), sizes(n_samples), strict=True))} "
            f"rows per class); the next size that fills every split: data.n_samples={next_ok}"
        )


def stratified_split(
    labels: np.ndarray, split=(0.7, 0.1, 0.2), seed: int = 42
) -> dict[str, np.ndarray]:
    """Per class: shuffle, cut at the cumulative fractions; each part keeps the class balance."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cut1, cut2 = _cuts(idx.size, split)
        parts["train"].append(idx[:cut1])
        parts["val"].append(idx[cut1:cut2])
        parts["test"].append(idx[cut2:])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def format_instruction(instruction: str, response: str, context: str = "") -> str:
    """The Alpaca prompt format rho-eval trains on (its ``_load_alpaca_texts``)."""
    if context:
        return (
            f"### Instruction:\n{instruction}\n\n### Input:\n{context}\n\n### Response:\n{response}"
        )
    return f"### Instruction:\n{instruction}\n\n### Response:\n{response}"


def read_alpaca(path: Path) -> list[str]:
    """Every example of an Alpaca JSONL file (optionally gzip-compressed) with
    ``instruction``, ``input`` and ``output`` fields, formatted, in file order. A file that is
    binary, not UTF-8 or a broken gzip stream raises DataError naming it."""
    import json

    rows = []
    try:
        with open_text(path) as f:
            lines = list(f)
    except _UNREADABLE as e:
        raise unreadable_file_error(path, e) from e
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ex = json.loads(line)
            rows.append(format_instruction(ex["instruction"], ex["output"], ex.get("input", "")))
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(
                f"{path}:{lineno} is not an Alpaca record with instruction/output ({e}); "
                f"accepted: {ACCEPTED_TEXT_FILES}, one JSON object per line"
            ) from e
    if not rows:
        raise DataError(f"SFT data file {path} holds no examples")
    return rows


def load_alpaca(path: Path, n: int, seed: int = 42) -> list[str]:
    """``n`` formatted examples drawn (seeded, without replacement) from an Alpaca file
    (``read_alpaca``)."""
    if n < 0:
        raise ValueError(f"number of Alpaca examples must be >= 0, got {n}")
    rows = read_alpaca(path)
    if n > len(rows):
        raise DataError(f"asked for {n} Alpaca examples but {path.name} holds only {len(rows)}")
    rng = np.random.default_rng(seed)
    return [rows[i] for i in rng.choice(len(rows), n, replace=False)]


def heldout_alpaca(path: Path, n: int, trained: list[str], seed) -> list[str]:
    """``n`` formatted examples of an Alpaca file that are none of the ``trained`` texts (by
    text, so a duplicate of a trained example is not held out either), drawn with ``seed``:
    the texts a tune's held-out loss is measured on."""
    seen = set(trained)
    rows = [r for r in dict.fromkeys(read_alpaca(path)) if r not in seen]
    if n > len(rows):
        raise DataError(
            f"asked for {n} held-out Alpaca examples but {path.name} holds only {len(rows)} "
            f"that training did not use; accepted: at most {len(rows)}"
        )
    rng = np.random.default_rng(seed)
    return [rows[i] for i in rng.choice(len(rows), n, replace=False)]
