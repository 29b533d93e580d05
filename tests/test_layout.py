"""The layout the tasks keep: every registered task keeps the task contract
(``driftbench.tasks.contract.Task``: its names, their types, its functions' parameters); no
function in ``driftbench/`` runs over 80 lines; and no task imports another task's modules
(the drift task's ``drift_*`` files never import the rho task's ``rho_sft*`` files, nor the
reverse; ``tasks/<task>/`` folders count as that task's)."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest

from driftbench.tasks import TASKS, get_task
from driftbench.tasks.contract import Task, contract_violations

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80
# Which task a module of driftbench/tasks/ belongs to, by its name's prefix (or its folder);
# modules of no task (the registry, the contract) may be imported by any task.
SHARED = {"__init__", "contract"}  # the registry and the contract: modules of tasks/ itself


# ── the task contract ────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_registered_task_keeps_the_contract(name):
    task = get_task(name)
    assert contract_violations(task) == []
    assert isinstance(task, Task)


def fake_task(**changes) -> types.ModuleType:
    """A task module that keeps the contract, with ``changes`` applied (None: removed)."""
    fake = types.ModuleType("fake_task")
    fake.CONFIG_GROUPS = ("task", "model")
    fake.RESULTS_VERSION = 1
    fake.FIGURES_IN_SWEEPS = False
    fake.validate = lambda cfg: None
    fake.inputs = lambda cfg: {}
    fake.run = lambda cfg, run_dir: {}
    for key, value in changes.items():
        if value is None:
            delattr(fake, key)
        else:
            setattr(fake, key, value)
    return fake


def test_the_contract_check_passes_a_complete_fake_task():
    assert contract_violations(fake_task()) == []


@pytest.mark.parametrize(
    "changes, refusal",
    [
        ({"inputs": None}, "fake_task has no function inputs(cfg)"),
        ({"run": None}, "fake_task has no function run(cfg, run_dir)"),
        ({"validate": "not a function"}, "fake_task has no function validate(cfg)"),
        (
            {"run": lambda cfg, out_dir: {}},
            "fake_task.run(cfg, out_dir); accepted: run(cfg, run_dir)",
        ),
        ({"inputs": lambda: {}}, "fake_task.inputs(); accepted: inputs(cfg)"),
        ({"RESULTS_VERSION": None}, "fake_task has no RESULTS_VERSION"),
        ({"RESULTS_VERSION": "2"}, "fake_task.RESULTS_VERSION='2'; accepted: an int"),
        ({"RESULTS_VERSION": True}, "fake_task.RESULTS_VERSION=True; accepted: an int"),
        ({"FIGURES_IN_SWEEPS": 1}, "fake_task.FIGURES_IN_SWEEPS=1; accepted: a bool"),
        ({"CONFIG_GROUPS": ["task"]}, "accepted: a tuple of config group names"),
        ({"CONFIG_GROUPS": ("task", 3)}, "accepted: a tuple of config group names"),
    ],
)
def test_the_contract_check_refuses_a_task_that_breaks_it(changes, refusal):
    violations = contract_violations(fake_task(**changes))
    assert len(violations) == 1 and refusal in violations[0]


# ── functions fit on a screen ────────────────────────────────────────────────────────────────


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``file:function:lines`` for each function (methods and nested functions included) of
    the .py files under ``root`` longer than ``limit`` lines, decorators left out."""
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    out.append(f"{path.relative_to(root.parent)}:{node.name}:{lines}")
    return out


def test_no_function_in_driftbench_is_longer_than_80_lines():
    found = long_functions(ROOT / "driftbench")
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(found)


def test_the_length_check_finds_a_long_function_and_method(tmp_path):
    def body(n: int, indent: str = "    ") -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(n))

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text(
        "def long():\n"
        + body(80)  # 81 lines
        + "def short():\n"
        + body(79)  # 80 lines: allowed
        + "class C:\n    async def method(self):\n"
        + body(80, " " * 8)
    )
    assert long_functions(pkg) == ["pkg/a.py:long:81", "pkg/a.py:method:81"]


# ── no task imports another ──────────────────────────────────────────────────────────────────


def task_of(module: str) -> str | None:
    """The task a module of ``driftbench.tasks`` belongs to: each task is a package named after
    it (``driftbench.tasks.drift_eval.updates`` -> ``drift_eval``), None for anything else (the
    registry, the contract, a name of the registry's ``__init__``)."""
    parts = module.split(".")[2:]
    return parts[0] if parts and parts[0] in TASKS else None


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file (functions included), relative imports
    resolved; ``from a import b`` gives ``a.b`` (a module or a name of ``a``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def cross_task_imports(tasks_dir: Path, package: str = "driftbench.tasks") -> list[str]:
    """``file:line: <module> (<task>) imports <module> (<other task>)`` for each import of one
    task's module by another task's module under ``tasks_dir``."""
    hits = []
    for path in sorted(tasks_dir.rglob("*.py")):
        parts = list(path.relative_to(tasks_dir).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        module = ".".join([package, *parts])
        here = task_of(module)
        for line, target in imported_modules(path, module):
            if not target.startswith(package + ".") or here is None:
                continue
            there = task_of(target)
            if there is not None and there != here:
                hits.append(f"{path.name}:{line}: {module} ({here}) imports {target} ({there})")
    return hits


def test_every_module_of_tasks_belongs_to_one_task_or_is_shared():
    stray = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "driftbench" / "tasks").rglob("*.py"))
        if path.stem not in SHARED
        and task_of(".".join(path.relative_to(ROOT).with_suffix("").parts)) is None
    ]
    assert not stray, "modules of no task (move them into a task's package, or SHARED): " + (
        ", ".join(stray)
    )


def test_no_task_imports_another_tasks_modules():
    hits = cross_task_imports(ROOT / "driftbench" / "tasks")
    assert not hits, "a task imports another task's modules:\n" + "\n".join(hits)


def test_the_cross_task_check_sees_function_level_relative_and_package_imports(tmp_path):
    tasks = tmp_path / "tasks"
    for package in ("drift_eval", "rho_sft"):
        (tasks / package).mkdir(parents=True)
        (tasks / package / "__init__.py").write_text("")
    (tasks / "__init__.py").write_text("")
    (tasks / "contract.py").write_text("")
    (tasks / "drift_eval" / "adapter.py").write_text(
        "from driftbench.tasks.contract import Task\n"  # shared: allowed
        "from driftbench.tasks.drift_eval import summary\n"  # its own task: allowed
        "def trained():\n"
        "    from driftbench.tasks.rho_sft.task import build_training_set\n"
    )
    (tasks / "rho_sft" / "summary.py").write_text(
        "from ..drift_eval import summary\nimport driftbench.tasks.drift_eval.updates\n"
    )
    assert cross_task_imports(tasks) == [
        "adapter.py:4: driftbench.tasks.drift_eval.adapter (drift_eval) imports "
        "driftbench.tasks.rho_sft.task.build_training_set (rho_sft)",
        "summary.py:1: driftbench.tasks.rho_sft.summary (rho_sft) imports "
        "driftbench.tasks.drift_eval.summary (drift_eval)",
        "summary.py:2: driftbench.tasks.rho_sft.summary (rho_sft) imports "
        "driftbench.tasks.drift_eval.updates (drift_eval)",
    ]
