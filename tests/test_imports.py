"""driftbench's modules import one another without a cycle, counting the imports inside
functions, and never from a layer above their own (``LAYERS``: utilities < method < compute <
config < tasks < entry); only ``driftbench/backends/`` knows which backend a model is; and every
backend of the registry implements the one interface, imported only when chosen."""

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


def import_sites(name: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in ``name``'s file (module level, functions, classes,
    conditionals), relative imports resolved; ``from pkg import sub`` names ``pkg.sub`` when that
    is a module of ``known``, else ``pkg``. Names outside the package are kept as written."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    sites = []
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
        sites += [(node.lineno, target) for target in targets]
    return sorted(sites)


def package_module(target: str, known: set[str]) -> str:
    """The package module an import names (import a.b.c of a module a.b: a.b); "" for none."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (:func:`import_sites`)."""
    found = {package_module(target, known) for _, target in import_sites(name, path, known)}
    return found - {"", name}


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


# ── layers point one way ─────────────────────────────────────────────────────────────────────

# Lowest first. A module imports modules of its own layer and of the layers below it, never of a
# layer above (a function-level import counts too); a folder (``rho/``) or a top-level module
# (``drift.py``) belongs to one layer. Derived from what the code imports and what each part is.
LAYERS: list[tuple[str, set[str]]] = [
    # leaf helpers: hashing, config ranges, batching, worker counts, atomic IO, run dirs and
    # provenance, the shipped data files and where the shipped configs and data are
    (
        "utilities",
        {
            "digests",
            "ranges",
            "batching",
            "workers",
            "fileio",
            "webpage",
            "provenance",
            "runs",
            "data",
            "shipped",
        },
    ),
    # the methods, on arrays: drift operators and checkpoint sources, metrics, classifiers,
    # monitors, mitigations; rho (probes, pairs, the hinge, the training plan, audit statistics)
    (
        "method",
        {"metrics", "adapters", "drift", "checkpoints", "twin", "mitigations", "classifier"}
        | {"monitors", "fit_cache", "rho", "intervals"},
    ),
    # every model computation: loading, the backends (torch and mlx forwards, generation,
    # training, CE), embeddings, the padding-free forward, real model updates
    ("compute", {"models", "backends", "embed", "packed", "updates"}),
    # the config groups' schemas (Hydra's ConfigStore) and their one-line errors
    ("config", {"schema", "config_errors"}),
    # the tasks: they wire the layers below for one run, summarise its results and draw them
    ("tasks", {"tasks", "plots"}),
    # one job, the sweep report, the trackers and the Slurm launcher; the `driftbench` command
    # and the Python API
    ("entry", {"launcher", "report", "trackers", "hydra_plugins", "cli", "api"}),
]
# The package's own ``__init__`` holds ``__version__`` and registers the config schemas; Python
# runs it before any of its modules, so it sits outside the layers.
UNLAYERED = {"driftbench"}
HYDRA_FREE = ("method", "compute")  # their modules import neither hydra nor omegaconf


def folder_of(module: str) -> str:
    """The folder or top-level module a package module belongs to: ``pkg.rho.plan`` -> ``rho``,
    ``pkg.drift`` -> ``drift``; the package itself -> its own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(
    name: str, path: Path, known: set[str], layers: list[tuple[str, set[str]]], shown: str
) -> list[str]:
    """Each import in ``name``'s file of a package module in a layer above ``name``'s, as
    ``file:line: <import> (<its layer>) from <folder> (<its layer>)``."""
    rank = {folder: i for i, (_, folders) in enumerate(layers) for folder in folders}
    here = rank.get(folder_of(name))
    hits = []
    for line, target in import_sites(name, path, known):
        there = rank.get(folder_of(package_module(target, known) or name))
        if here is not None and there is not None and there > here:
            hits.append(
                f"{shown}:{line}: imports {package_module(target, known)} ({layers[there][0]}) "
                f"from {folder_of(name)} ({layers[here][0]})"
            )
    return list(dict.fromkeys(hits))  # ``from x import a, b``: one line


def test_every_folder_has_one_layer():
    folders = {folder_of(m) for m in package_modules(ROOT / "driftbench")}
    listed = [f for _, fs in LAYERS for f in fs]
    assert len(listed) == len(set(listed)), "a folder in two layers"
    assert not set(listed) & UNLAYERED
    assert folders - UNLAYERED - set(listed) == set(), "folders without a layer (add to LAYERS)"
    assert set(listed) - folders == set(), "LAYERS names folders that do not exist"


def test_no_module_imports_from_a_layer_above_its_own():
    modules = package_modules(ROOT / "driftbench")
    hits = [
        hit
        for name, path in modules.items()
        for hit in upward_imports(name, path, set(modules), LAYERS, str(path.relative_to(ROOT)))
    ]
    order = " < ".join(n for n, _ in LAYERS)
    assert not hits, f"imports against the layers ({order}):\n" + "\n".join(hits)


def test_the_layer_check_flags_an_upward_import(tmp_path):
    """A module of rho/ (method) that asks the backends (compute) or the schema (config) is
    flagged, at module level or in a function; its imports of the utilities, of rho/ and of
    other packages are not."""
    modules = package_modules(ROOT / "driftbench")
    fake = tmp_path / "fake.py"
    fake.write_text(
        "import numpy as np\n"
        "from driftbench.batching import pad_batch\n"
        "from driftbench.backends import backend_of\n"
        "from . import plan\n"
        "def f(sft):\n"
        "    from driftbench.schema import Sft\n"
    )
    known = set(modules) | {"driftbench.rho.fake"}
    assert upward_imports("driftbench.rho.fake", fake, known, LAYERS, "rho/fake.py") == [
        "rho/fake.py:3: imports driftbench.backends (compute) from rho (method)",
        "rho/fake.py:6: imports driftbench.schema (config) from rho (method)",
    ]
    # the same file in backends/ (compute) imports rho/ and the utilities, both below it
    assert upward_imports("driftbench.backends.fake", fake, known, LAYERS, "fake.py") == [
        "fake.py:6: imports driftbench.schema (config) from backends (compute)"
    ]


def test_the_method_and_compute_layers_import_no_hydra():
    modules = package_modules(ROOT / "driftbench")
    free = {f for n, fs in LAYERS if n in HYDRA_FREE for f in fs}
    hits = [
        f"{path.relative_to(ROOT)}:{line}: imports {target}"
        for name, path in modules.items()
        if folder_of(name) in free
        for line, target in import_sites(name, path, set(modules))
        if target.split(".")[0] in ("hydra", "omegaconf")
    ]
    assert not hits, "Hydra below the config layer:\n" + "\n".join(hits)


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
