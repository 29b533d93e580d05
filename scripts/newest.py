"""Try the newest versions pyproject.toml allows, and lock the versions that passed.

``make setup`` installs with ``-c constraints.txt``: the versions CI tested, so a fresh machine
runs what passed, whatever pip would resolve that day. ``make newest`` builds a fresh venv with
no constraints (scripts/install.sh), then this script's ``check`` runs lint and the whole suite
in it and writes what moved against the lock and what broke; ``make lock`` turns a venv whose
check passed into the new constraints.txt. Standard library only: it runs before any venv.

    python3 scripts/newest.py check VENV   # outputs/newest/report.md (+ junit.xml, status.json)
    python3 scripts/newest.py lock VENV    # constraints.txt from VENV, if its check passed
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
OUT = ROOT / "outputs" / "newest"
LOCK_HEADER = """\
# The versions CI tested: `make setup` installs with `-c constraints.txt`, so a fresh machine gets
# what passed. `make newest` tries the newest versions pyproject.toml allows; `make lock` writes
# them here once they pass. Locked from {venv} on {day} (Linux x86_64, Python 3.11); a package
# another platform needs and this list lacks is resolved as pyproject.toml allows.
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines: list[str]) -> dict[str, str]:
    """``name==version`` lines (comments and blanks skipped) as {canonical name: version}."""
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, ver = line.split("==", 1)
            out[canonical(name)] = ver.strip()
    return out


def installed(venv: Path) -> dict[str, str]:
    freeze = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return {k: v for k, v in pins(freeze).items() if k != "driftbench"}


def moved(locked: dict[str, str], now: dict[str, str]) -> list[str]:
    """Markdown rows for every package whose version differs from the lock."""
    rows = []
    for name in sorted(set(locked) | set(now)):
        a, b = locked.get(name, "–"), now.get(name, "–")
        if a != b:
            rows.append(f"| {name} | {a} | {b} |")
    return rows


def failures(junit: Path) -> tuple[dict[str, int], list[str]]:
    """Counts and one line per failed or erroring test, from pytest's JUnit XML."""
    if not junit.exists():
        return {"tests": 0, "failures": 0, "errors": 1, "skipped": 0}, ["pytest wrote no report"]
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    lines = []
    for case in suite.iter("testcase"):
        for bad in [*case.findall("failure"), *case.findall("error")]:
            msg = (bad.get("message") or "").strip().splitlines()
            lines.append(f"{case.get('classname')}::{case.get('name')}: {msg[0] if msg else ''}")
    return counts, lines


def check(venv: Path) -> int:
    """Lint and the suite in ``venv``; report.md says what moved and what broke. Exit 1 if
    anything broke."""
    OUT.mkdir(parents=True, exist_ok=True)
    py = str(venv / "bin" / "python")
    lint = subprocess.run(
        f"{py} -m ruff format --check . && {py} -m ruff check .", shell=True, cwd=ROOT
    )
    junit = OUT / "junit.xml"
    junit.unlink(missing_ok=True)
    subprocess.run(
        [py, "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile", f"--junitxml={junit}"], cwd=ROOT
    )
    counts, broken = failures(junit)
    now = installed(venv)
    locked = pins(LOCK.read_text().splitlines()) if LOCK.exists() else {}
    passed = lint.returncode == 0 and not broken
    rows = moved(locked, now)
    report = [
        f"# Newest allowed versions against constraints.txt ({date.today()}, {venv})",
        "",
        f"**{'passed' if passed else 'broke'}**: "
        f"lint {'ok' if lint.returncode == 0 else 'failed'}; "
        f"{counts['tests']} tests, {counts['failures']} failed, {counts['errors']} errors, "
        f"{counts['skipped']} skipped.",
        "",
        *(["## What broke", "", *(f"- {b}" for b in broken), ""] if broken else []),
        f"## Versions that differ from the lock ({len(rows)})",
        "",
        *(["| package | locked | newest |", "|---|---|---|", *rows] if rows else ["none"]),
        "",
        "`make lock` makes these the lock once the check passes.",
    ]
    (OUT / "report.md").write_text("\n".join(report) + "\n")
    (OUT / "status.json").write_text(json.dumps({"venv": str(venv.resolve()), "passed": passed}))
    print("\n".join(report))
    return 0 if passed else 1


def lock(venv: Path) -> int:
    """constraints.txt from ``venv``, refused unless its ``check`` passed."""
    try:
        status = json.loads((OUT / "status.json").read_text())
    except (OSError, ValueError):
        status = {}
    if status.get("venv") != str(venv.resolve()) or not status.get("passed"):
        print(f"error: no passing `make newest` check for {venv}; run it first", file=sys.stderr)
        return 2
    write_lock(venv)
    return 0


def write_lock(venv: Path) -> None:
    now = installed(venv)
    body = "".join(f"{name}=={ver}\n" for name, ver in sorted(now.items()))
    LOCK.write_text(LOCK_HEADER.format(venv=venv, day=date.today()) + body)
    print(f"constraints.txt: {len(now)} packages from {venv}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["check", "lock"])
    parser.add_argument("venv", type=Path)
    args = parser.parse_args()
    if not (args.venv / "bin" / "python").exists():
        print(f"error: {args.venv} is not a virtual environment", file=sys.stderr)
        return 2
    return check(args.venv) if args.command == "check" else lock(args.venv)


if __name__ == "__main__":
    sys.exit(main())
