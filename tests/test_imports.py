"""driftbench's modules import one another without a cycle, counting the imports inside
functions; only ``driftbench/backends/`` knows which backend a model is; and every backend of
the registry implements the one interface, imported only when chosen."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from driftbench.backends import BACKENDS, get_backend
from driftbench.backends.base import Backend

ROOT = Path(__file__).resolve().parents[1]


def package_modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under ``package``."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (module level, functions,
    classes, conditionals), relative imports resolved; ``from pkg import sub`` counts as
    importing ``pkg.sub`` when that is a module, else ``pkg``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:  # import a.b.c of a module a.b: a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    modules = package_modules(package)
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_sees_function_level_relative_and_submodule_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")  # a submodule, by name
    (pkg / "sub" / "b.py").write_text("def f():\n    from . import c\n")  # relative, in a function
    (pkg / "sub" / "c.py").write_text("import pkg.a\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.sub.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]
    (pkg / "sub" / "c.py").write_text("from ..sub import b\n")  # back to b: a cycle of two
    assert find_cycle(import_graph(pkg)) == ["pkg.sub.b", "pkg.sub.c", "pkg.sub.b"]
    (pkg / "sub" / "c.py").write_text("import json\n")
    assert find_cycle(import_graph(pkg)) is None


def test_driftbench_has_no_import_cycle():
    cycle = find_cycle(import_graph(ROOT / "driftbench"))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# ── only backends/ branches on the backend ───────────────────────────────────────────────────


SIBLINGS = {p.stem for p in (ROOT / "driftbench" / "backends").glob("*.py")} - {"__init__", "base"}


def identifier(node) -> str:
    """The name a node binds or reads, "" for nodes that name nothing."""
    for attr in ("id", "attr", "name", "arg", "asname"):
        value = getattr(node, attr, None)
        if isinstance(value, str) and not isinstance(node, ast.alias):
            return value
    return ""


def backend_branches(path: Path, names: set[str], shown: str) -> list[str]:
    """Places in one file that pick a behaviour by backend: a comparison or membership test
    against a backend's name, a table over backends (a dict with two or more backend names as
    keys; one such key, e.g. a package version under "torch", is not), a match on a backend
    name, an identifier naming mlx, or an import of one backend's own module (code outside
    backends/ reaches a backend through ``driftbench.backends`` only: ``get_backend``,
    ``backend_of``, ``load_model``)."""

    def names_a_backend(node) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(names_a_backend(e) for e in node.elts)
        return False

    hits = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{shown}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Compare) and any(
            names_a_backend(x) for x in [node.left, *node.comparators]
        ):
            hits.append(f"{where}: compares with a backend name")
        elif (
            isinstance(node, ast.Dict)
            and sum(bool(k and names_a_backend(k)) for k in node.keys) > 1
        ):
            hits.append(f"{where}: a dict keyed by backend names")
        elif isinstance(node, ast.MatchValue) and names_a_backend(node.value):
            hits.append(f"{where}: matches a backend name")
        elif "mlx" in identifier(node).lower():
            hits.append(f"{where}: an identifier naming mlx")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names]
            if isinstance(node, ast.ImportFrom):
                modules = [f"{node.module}.{a.name}" for a in node.names] + [node.module or ""]
            for m in modules:
                parts = m.split(".")
                if parts[:2] == ["driftbench", "backends"] and parts[2:3] and parts[2] in SIBLINGS:
                    hits.append(f"{where}: imports the backend module {'.'.join(parts[:3])}")
    return sorted(set(hits), key=lambda h: (int(h.split(":")[1]), h))


def test_no_module_outside_backends_branches_on_the_backend():
    hits = [
        hit
        for path in sorted((ROOT / "driftbench").rglob("*.py"))
        if "backends" not in path.relative_to(ROOT / "driftbench").parts
        for hit in backend_branches(path, set(BACKENDS), str(path.relative_to(ROOT)))
    ]
    assert not hits, "backend-specific code outside driftbench/backends/:\n" + "\n".join(hits)


def test_the_branch_check_catches_the_usual_forms(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from driftbench.backends import mlx_model\n"
        "from driftbench.backends.torch_backend import pooled_batch\n"
        "def f(model, cfg):\n"
        "    if is_mlx(model) or cfg.backend.name == 'mlx':\n"
        "        return {'torch': 1, 'mlx': 2}[cfg.backend.name]\n"
        "    return cfg.backend.name in ('mlx',)\n"
    )
    assert backend_branches(bad, {"torch", "mlx"}, "bad.py") == [
        "bad.py:1: imports the backend module driftbench.backends.mlx_model",
        "bad.py:2: imports the backend module driftbench.backends.torch_backend",
        "bad.py:4: an identifier naming mlx",
        "bad.py:4: compares with a backend name",
        "bad.py:5: a dict keyed by backend names",
        "bad.py:6: compares with a backend name",
    ]


# ── the registry ─────────────────────────────────────────────────────────────────────────────


def test_the_config_group_lists_the_registry():
    names = {
        yaml.safe_load(p.read_text())["name"] for p in (ROOT / "conf" / "backend").glob("*.yaml")
    }
    assert names == set(BACKENDS)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_implements_the_interface(name):
    backend = get_backend(name)  # an abstract method left out would raise here
    assert isinstance(backend, Backend) and backend.name == name


def test_an_unknown_backend_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"backend='jax'; accepted: torch, mlx"):
        get_backend("jax")


def test_choosing_a_backend_imports_neither_mlx_nor_torch():
    code = (
        "import sys; from driftbench.backends import get_backend; "
        "[get_backend(n).check_embed_layer(-1) for n in ('torch', 'mlx')]; "
        "print(sorted(m for m in ('mlx', 'mlx_lm', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
