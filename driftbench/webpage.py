"""Self-contained HTML pages of results, one file a reviewer opens in any browser: the sweep
report (its report.md as HTML, its figures inline) and a run's page (its headline numbers, its
CSV tables, its figures). PNGs are base64 data URIs; a little CSS (sticky table headers,
monospace numbers, wide tables scroll sideways); no JavaScript, no other file.

Nothing is tabulated twice: the sweep page converts the markdown the report already wrote (the
subset its tables and notes use: headings, pipe tables, ``-`` lists, paragraphs, ```code```,
``**bold**``, ``*emphasis*``), and a run's page reads the CSV files the run wrote; both tables
go through ``table_html``. Standard library only.
"""

from __future__ import annotations

import base64
import csv
import html
import re
from collections.abc import Callable
from pathlib import Path

from driftbench.fileio import atomic_write_text

RUN_PAGE = "report.html"  # a run's page, in its run dir; also the sweep report's name
MAX_ROWS = 500  # rows of a run's CSV shown on its page (a long loss curve: the CSV has them all)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto;
       max-width: 96rem; padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.25rem; margin-top: 2rem; } h3 { font-size: 1.1rem; }
code, pre, td.num { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { background: #f2f2f4; padding: 0 .2em; border-radius: 3px; font-size: .92em; }
pre { background: #f6f6f8; padding: .75rem; overflow-x: auto; font-size: .85rem; }
.table { overflow: auto; max-height: 80vh; margin: .75rem 0 1.25rem; border: 1px solid #ddd; }
table { border-collapse: separate; border-spacing: 0; font-size: .85rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e6e6e6; white-space: nowrap; }
th { position: sticky; top: 0; z-index: 1; background: #eef0f4; text-align: left;
     border-bottom: 1px solid #bbb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-size: .8rem; }
tbody tr:nth-child(even) td { background: #fafafb; }
tbody tr:hover td { background: #fff7d6; }
figure { margin: 1rem 0 2rem; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .85rem; }
details { margin: 1rem 0; } summary { cursor: pointer; }
"""

NUMBER = re.compile(r"[-+\u2212]?\.?\d|(nan|[-+]?inf)$", re.IGNORECASE)
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
SEPARATOR = re.compile(r"^\|?(\s*:?-+:?\s*\|)*\s*:?-+:?\s*\|?$")
PIPE = re.compile(r"(?<!\\)\|")


def inline(text: str) -> str:
    """One line of the reports' markdown as HTML: ```code``` (as it is), ``**bold**``,
    ``*emphasis*`` (a ``*`` inside a word, as in ``δ*=0.05``, stays a star); the rest escaped."""
    out = []
    for k, part in enumerate(re.split(r"`([^`]*)`", text)):
        if k % 2:
            out.append(f"<code>{html.escape(part)}</code>")
            continue
        s = html.escape(part, quote=False)
        s = re.sub(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])", r"<em>\1</em>", s)
        out.append(s)
    return "".join(out)


def table_html(
    header: list[str],
    rows: list[list[str]],
    cell: Callable[[str], str] = inline,
    exact: list[list[str]] | None = None,
) -> str:
    """A table in a box that scrolls sideways (and down, under its sticky header). ``cell``:
    a cell's text as HTML (markdown by default; ``html.escape`` for data); a column of numbers
    (``numeric_columns``) is set in monospace, right-aligned. ``exact``: each cell's full
    value, shown on hover where the cell rounds it."""
    head = "".join(f"<th>{cell(h)}</th>" for h in header)
    numeric = numeric_columns(rows)
    body = []
    for r, row in enumerate(rows):
        tds = []
        for c, text in enumerate(row):
            num = ' class="num"' if c in numeric else ""
            full = exact[r][c] if exact is not None else text
            title = f' title="{html.escape(full)}"' if full != text else ""
            tds.append(f"<td{num}{title}>{cell(text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (
        f'<div class="table"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>"
    )


def numeric_columns(rows: list[list[str]]) -> set[int]:
    """The columns at least half of whose filled cells start as a number (``0.88 [0.85,
    0.91]``, ``+2``, ``3 (3 x 1)``), the rest being marks such as ``none`` or ``–``."""
    out = set()
    for c in range(max(map(len, rows), default=0)):
        filled = [r[c].strip() for r in rows if c < len(r) and r[c].strip()]
        if filled and 2 * sum(bool(NUMBER.match(t)) for t in filled) >= len(filled):
            out.add(c)
    return out


def _cells(line: str) -> list[str]:
    line = line.strip().removeprefix("|").removesuffix("|")
    return [c.strip().replace("\\|", "|") for c in PIPE.split(line)]


def pipe_table(lines: list[str]) -> str:
    """A markdown pipe table (header, separator, rows) as HTML; without a separator line every
    line is a row of a table without a header."""
    if len(lines) > 1 and SEPARATOR.match(lines[1].strip()):
        return table_html(_cells(lines[0]), [_cells(ln) for ln in lines[2:]])
    return table_html([], [_cells(ln) for ln in lines])


def _kind(line: str) -> str:
    if not line.strip():
        return "blank"
    if HEADING.match(line):
        return "heading"
    if line.lstrip().startswith("|"):
        return "table"
    if line.startswith(("- ", "* ")):
        return "list"
    return "paragraph"


def blocks(md: str) -> list[tuple[str, list[str]]]:
    """The markdown's blocks in order, as (kind, lines): a heading is one line; a table, a list
    or a paragraph runs until a line of another kind."""
    out: list[tuple[str, list[str]]] = []
    for line in md.splitlines():
        kind = _kind(line)
        if kind == "blank":
            out.append(("blank", []))
        elif out and out[-1][0] == kind and kind != "heading":
            out[-1][1].append(line)
        else:
            out.append((kind, [line]))
    return [(k, lines) for k, lines in out if k != "blank"]


def markdown_html(md: str) -> str:
    """The reports' markdown (``blocks``) as HTML."""
    out = []
    for kind, lines in blocks(md):
        if kind == "heading":
            hashes, text = HEADING.match(lines[0]).groups()
            out.append(f"<h{len(hashes)}>{inline(text)}</h{len(hashes)}>")
        elif kind == "table":
            out.append(pipe_table(lines))
        elif kind == "list":
            items = "".join(f"<li>{inline(ln[2:])}</li>" for ln in lines)
            out.append(f"<ul>{items}</ul>")
        else:
            out.append(f"<p>{inline(' '.join(ln.strip() for ln in lines))}</p>")
    return "\n".join(out)


def figure_html(path: Path) -> str:
    """A PNG inline (a base64 data URI), captioned with its file name."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    return (
        f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
        f"<figcaption>{name}</figcaption></figure>"
    )


def figures_html(paths: list[Path]) -> str:
    """A "Figures" section of the PNGs that are there ("" where none is)."""
    there = [p for p in paths if p.is_file()]
    return "<h2>Figures</h2>\n" + "\n".join(map(figure_html, there)) if there else ""


def page(title: str, body: str) -> str:
    """A whole HTML document: ``body`` under an ``<h1>`` of ``title``, with the CSS inline."""
    t = html.escape(title)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{t}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{t}</h1>\n"
        f"{body}\n</body>\n</html>\n"
    )


def write_report_page(path: Path, title: str, md: str, figures: list[Path]) -> None:
    """The sweep report's page: its markdown, then its figures."""
    atomic_write_text(path, page(title, markdown_html(md) + "\n" + figures_html(figures)))


def shown(text: str) -> str:
    """A CSV value as a page shows it: a decimal with more than 4 significant digits rounded to
    4 (the page keeps the exact value on hover), anything else as written."""
    if not re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][-+]?\d+)", text):
        return text
    rounded = f"{float(text):.4g}"
    return text if float(rounded) == float(text) else rounded


def csv_html(path: Path) -> str:
    """One CSV file of a run as a table (its first ``MAX_ROWS`` rows), headed by its name."""
    with path.open(newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f)) or [[]]
    note = ""
    if len(rows) > MAX_ROWS:
        note = f"<p>The first {MAX_ROWS} of {len(rows)} rows.</p>"
        rows = rows[:MAX_ROWS]
    table = table_html(header, [[shown(v) for v in r] for r in rows], html.escape, exact=rows)
    return f"<h2>{html.escape(path.name)}</h2>\n{note}{table}"


def value_text(v) -> str:
    """A metrics.json value as a page shows it (a float as ``shown``)."""
    if isinstance(v, float):
        return shown(repr(v))
    return "none" if v is None else str(v)


def run_page(run_dir: Path, metrics: dict) -> str:
    """A run's page: its headline numbers (metrics.json's ``summary``), every CSV it wrote, its
    figures, and its config.yaml."""
    summary = metrics.get("summary") or {}
    parts = [f"<p>task <code>{html.escape(str(metrics.get('task')))}</code></p>"]
    if summary:
        rows = [[k, value_text(v)] for k, v in summary.items()]
        exact = [[k, str(v)] for k, v in summary.items()]
        parts.append(
            "<h2>Headline</h2>\n" + table_html(["metric", "value"], rows, html.escape, exact)
        )
    parts += [csv_html(p) for p in sorted(run_dir.glob("*.csv"))]
    pngs = [
        p
        for p in sorted(run_dir.rglob("*.png"))
        if not any(part.startswith(".") for part in p.relative_to(run_dir).parts)
    ]
    parts.append(figures_html(pngs))
    if (run_dir / "config.yaml").is_file():
        config = html.escape((run_dir / "config.yaml").read_text(encoding="utf-8"))
        parts.append(f"<details><summary>config.yaml</summary><pre>{config}</pre></details>")
    return page(f"Run {run_dir.name}", "\n".join(p for p in parts if p))


def write_run_page(run_dir: Path, metrics: dict) -> None:
    atomic_write_text(run_dir / RUN_PAGE, run_page(run_dir, metrics))
