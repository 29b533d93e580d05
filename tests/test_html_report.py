"""report.html: one self-contained page a reviewer opens, beside report.md for a sweep and in
the run dir for a run. It holds every number of the tables it shows, its figures as PNG data
URIs, and refers to no other file; a run's page is one of its digested result files."""

from __future__ import annotations

import base64
import csv
import json
import logging
import re
from html.parser import HTMLParser

import pytest

from driftbench.launcher import run
from driftbench.report import report
from driftbench.webpage import inline, markdown_html, shown

TINY = ["model=tiny_random", "data.n_samples=200", "schedule=list", "schedule.sigmas=[0,0.05,0.2]"]
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr", "area", "base"}
PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """The page as a browser's parser reads it: its tags checked for nesting, its tables' rows
    as lists of cell texts, every src and href, and each cell's title."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.rows: list[list[str]] = []
        self.links: list[tuple[str, str]] = []  # (attribute, value)
        self.titles: list[str] = []
        self.cell: list[str] | None = None
        self.feed(text)
        self.close()
        assert not self.open, f"tags left open: {self.open}"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [(a, attrs[a]) for a in ("src", "href") if a in attrs]
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self.cell = []
            self.titles.append(attrs.get("title"))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()
        if tag in ("td", "th"):
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def unmarked(cell: str) -> str:
    """A markdown cell's text as a reader sees it: ``code``, **bold** and *emphasis* marks
    gone; a star inside a word (``δ*=0.05``) kept."""
    cell = cell.replace("`", "").replace("**", "")
    return re.sub(r"(?<!\w)\*(\S[^*]*?)\*(?!\w)", r"\1", cell)


def markdown_rows(md: str) -> list[list[str]]:
    """Every row of every pipe table of the markdown, separators left out, marks removed."""
    rows = []
    for line in md.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([unmarked(c.strip()) for c in line.strip().strip("|").split("|")])
    return rows


def assert_self_contained(page: Page) -> None:
    """Every src is a PNG data URI that decodes to a PNG; no src or href names another file."""
    assert page.links, "no figure on the page"
    for attr, value in page.links:
        assert attr == "src" and value.startswith("data:image/png;base64,"), (attr, value[:60])
        assert base64.b64decode(value.split(",", 1)[1], validate=True).startswith(PNG)


@pytest.fixture
def sweep(make_cfg, tmp_path):
    for drift in ("gaussian", "subspace"):
        for seed in (0, 1):
            run(make_cfg(*TINY, f"drift={drift}", f"seed={seed}", "runtime.figures=false"))
    return tmp_path / "outputs"


def test_a_sweeps_page_holds_every_row_of_its_markdown_and_its_figures_inline(sweep, tmp_path):
    res = report([sweep], tmp_path / "rep")
    assert res["n_runs"] == 4 and res["page"] == "report.html"
    md = (tmp_path / "rep" / "report.md").read_text()
    page = Page((tmp_path / "rep" / "report.html").read_text())
    expected = markdown_rows(md)
    assert len(expected) > 5  # the runs' table and the summary's tables
    for row in expected:  # the same cells, the same numbers
        assert row in page.rows, row
    assert_self_contained(page)
    figures = {v for a, v in page.links}
    assert len(figures) == len(res["figures"]) >= 2
    for name in res["figures"]:  # each figure is the very file the report drew
        data = base64.b64encode((tmp_path / "rep" / name).read_bytes()).decode()
        assert f"data:image/png;base64,{data}" in figures


def test_a_runs_page_holds_its_checkpoint_table_headline_and_figures(make_cfg, tmp_path):
    run(make_cfg(*TINY))  # a single run draws its figures
    (d,) = [p.parent for p in (tmp_path / "outputs").glob("**/metrics.json")]
    page = Page((d / "report.html").read_text())
    with open(d / "checkpoints.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header in page.rows
    for row in rows:  # each number as the page shows it, the exact value on hover
        assert [shown(v) for v in row] in page.rows
        assert all(v in page.titles for v in row if shown(v) != v)
    summary = json.loads((d / "metrics.json").read_text())["summary"]
    for name, value in summary.items():
        assert [name, "none" if value is None else shown(repr(value))] in page.rows
    assert_self_contained(page)
    assert len(page.links) == len(list(d.glob("*.png"))) >= 3


def test_editing_a_completed_runs_page_makes_it_unverified(make_cfg, tmp_path, caplog):
    run(make_cfg(*TINY, "runtime.figures=false"))
    (d,) = [p.parent for p in (tmp_path / "outputs").glob("**/metrics.json")]
    meta = json.loads((d / "meta.json").read_text())
    assert "report.html" in meta["files"]  # recorded with the other result files
    assert run(make_cfg(*TINY, "runtime.figures=false")) is not None  # reused as it is
    assert len(list((tmp_path / "outputs").glob("**/meta.json"))) == 1
    (d / "report.html").write_text((d / "report.html").read_text().replace("<h1>", "<h1>x"))
    res = report([tmp_path / "outputs"], tmp_path / "rep")
    assert res["n_runs"] == 0 and "report.html does not match" in res["skipped"][0][1]
    with caplog.at_level(logging.WARNING):
        run(make_cfg(*TINY, "runtime.figures=false"))  # rerun, beside the edited one
    assert any("report.html does not match" in r.getMessage() for r in caplog.records)
    assert len(list((tmp_path / "outputs").glob("**/meta.json"))) == 2


def test_a_run_kept_without_its_page_is_reported_as_one_kept_without_its_figures(
    make_cfg, tmp_path
):
    """A committed example may drop a run's page with its figures (the page shows them): the
    report reads the run; a page that is there must still match its digest."""
    run(make_cfg(*TINY))
    (d,) = [p.parent for p in (tmp_path / "outputs").glob("**/metrics.json")]
    for shown_file in [d / "report.html", *d.glob("*.png")]:
        shown_file.unlink()
    assert report([tmp_path / "outputs"], tmp_path / "rep")["n_runs"] == 1


def test_a_report_of_one_run_dir_leaves_the_runs_own_page_as_it_is(make_cfg, tmp_path):
    run(make_cfg(*TINY, "runtime.figures=false"))
    (d,) = [p.parent for p in (tmp_path / "outputs").glob("**/metrics.json")]
    before = (d / "report.html").read_bytes()
    res = report([d])
    assert res["n_runs"] == 1 and res["page"] is None and (d / "report.md").exists()
    assert (d / "report.html").read_bytes() == before


def test_the_reports_markdown_marks_become_html_and_stars_inside_words_stay():
    assert inline("`a_b*c*` **Bold.** *coherent*, d*=0.05 and δ*=1") == (
        "<code>a_b*c*</code> <strong>Bold.</strong> <em>coherent</em>, d*=0.05 and δ*=1"
    )
    assert inline("<b> & x") == "&lt;b&gt; &amp; x"
    got = markdown_html("### Head\n\n| a | b |\n|---|---|\n| 1 | x |\n\ntext\nmore\n\n- `p`: q\n")
    assert got.startswith("<h3>Head</h3>\n<div class=")
    assert '<td class="num">1</td><td>x</td>' in got
    assert got.endswith("<p>text more</p>\n<ul><li><code>p</code>: q</li></ul>")
