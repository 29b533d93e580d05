"""The build step pyproject.toml cannot say: a wheel carries the project's ``conf/`` and
``data/`` as ``driftbench/_shipped/conf`` and ``driftbench/_shipped/data`` (copies made at build
time; the folders at the project root stay the one place they are edited), so the installed
``driftbench`` command runs from any directory. A cluster's own ``conf/local/`` configs stay out
(git-ignored, never shipped); an editable install reads the clone's folders and copies
nothing. Where the package looks: ``driftbench/shipped.py``."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("conf", "data")
LOCAL_KEPT = {"README.md", "example.yaml"}  # conf/local/: the tracked files, nothing private


def _leave_out(folder: str, names: list[str]) -> set[str]:
    """What a shipped copy leaves out: caches, and a cluster's own conf/local/ files."""
    out = {n for n in names if n == "__pycache__" or n.endswith(".pyc")}
    if Path(folder).resolve() == ROOT / "conf" / "local":
        out |= set(names) - LOCAL_KEPT
    return out


class BuildPyWithShipped(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in SHIPPED:
            dest = Path(self.build_lib) / "driftbench" / "_shipped" / name
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(ROOT / name, dest, ignore=_leave_out)


setup(cmdclass={"build_py": BuildPyWithShipped})
