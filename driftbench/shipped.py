"""Where the shipped configs and corpora are. They are edited in one place, the project's own
``conf/`` and ``data/``; a built wheel carries copies of both in ``driftbench/_shipped/`` (put
there by ``setup.py`` at build time), so the installed ``driftbench`` command and
``driftbench.api`` find them from any directory. A clone (or an editable install of one) has no
``_shipped/`` folder and reads its own ``conf/`` and ``data/``, whatever the working directory."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGED = Path(__file__).resolve().parent / "_shipped"


def installed() -> bool:
    """Whether this driftbench is an installed wheel (it carries its own configs and data)
    rather than a clone's code."""
    return PACKAGED.is_dir()


def config_dir() -> Path:
    """The primary config's folder (``config.yaml`` and one folder per config group)."""
    return PACKAGED / "conf" if installed() else PROJECT_ROOT / "conf"


def shipped_data_dir() -> Path:
    """The shipped corpora (data/README.md: sources, licences, checksums)."""
    return PACKAGED / "data" if installed() else PROJECT_ROOT / "data"


def checkout() -> Path | None:
    """The clone this code runs from (its git commit is a run's provenance); None for an
    installed wheel, whose folder may sit inside some other git checkout."""
    return None if installed() else PROJECT_ROOT
