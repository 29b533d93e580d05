"""One schema per config group: the type of every key, and the range a value must lie in.

The values (defaults included) live once, in the YAML files under ``conf/``; these dataclasses
say what shape they have. They are registered in Hydra's ConfigStore, so Hydra refuses an
unknown key (``model.hidden_sizee=64``) and a value of the wrong type (``data.n_samples=abc``)
while composing, before any code runs. ``conf/config.yaml`` starts from ``base_config``; the
groups whose choices differ in shape (task, model, classifier, mitigation) name their schema in
each YAML's defaults list. A range is declared beside its field (``metadata=at_least(1)``) and
checked by ``check`` before any heavy work, with one sentence naming the key, the value and
what is accepted. Choices among names (a drift type, a pooling) are checked by the registries
that define them, in each task's ``validate``; ``driftbench.config_errors`` puts Hydra's own
errors in one line.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

# --- ranges, declared next to the field they check ---------------------------------------------


def _rule(accepted: str, ok: Callable[[Any], bool]) -> dict:
    return {"accepted": accepted, "ok": ok}


def at_least(lo: float, what: str = "an integer") -> dict:
    return _rule(f"{what} >= {lo}", lambda v: v >= lo)


def positive(what: str = "a number") -> dict:
    return _rule(f"{what} > 0", lambda v: math.isfinite(v) and v > 0)


def within(lo: float, hi: float, closed_hi: bool = True) -> dict:
    bracket = "]" if closed_hi else ")"
    return _rule(
        f"a number in [{lo}, {hi}{bracket}",
        lambda v: lo <= v <= hi if closed_hi else lo <= v < hi,
    )


def score() -> dict:
    return _rule("a score in (0, 1] (toxic: >= it)", lambda v: 0 < v <= 1)


def positive_list() -> dict:
    return _rule(
        "a non-empty list of positive numbers",
        lambda v: len(v) > 0 and all(math.isfinite(x) and x > 0 for x in v),
    )


def _req(**metadata) -> Any:
    """A field whose value comes from the YAML (no second default here)."""
    return field(default=MISSING, metadata=metadata)


def _opt(**metadata) -> Any:
    """An optional field: null is allowed (and means what the YAML's comment says)."""
    return field(default=None, metadata=metadata)


# --- the groups ----------------------------------------------------------------------------------


@dataclass
class DriftEvalTask:
    name: str = _req()
    tau: float = _req(**within(0.5, 1.0))
    ece_bins: int = _req(**at_least(1))
    calibration_checkpoints: list[int] | None = _opt()


@dataclass
class StressTest:
    enabled: bool = _req()
    prompts: str = _req()
    n_harmful: int | None = _opt(**at_least(1))
    n_benign: int | None = _opt(**at_least(1))
    max_new_tokens: int = _req(**at_least(1))


@dataclass
class RhoSftTask:
    name: str = _req()
    audit_behaviors: list[str] = _req()
    n_probes: int | None = _opt(**at_least(1))
    probe_seed: int = _req(**at_least(0))
    batch_tokens: int = _req(**at_least(1))
    gen_max_batch: int = _req(**at_least(1))
    stress_test: StressTest = field(default_factory=StressTest)


@dataclass
class Model:
    name: str = _req()
    source: str = _req()
    name_or_path: str | None = _opt()
    gguf_package: str | None = _opt()
    gguf_file: str | None = _opt()
    variant: str = _req()
    pooling: str = _req()


@dataclass
class TinyRandomModel(Model):
    init_seed: int = _req(**at_least(0))
    hidden_size: int = _req(**at_least(1))
    num_hidden_layers: int = _req(**at_least(1))
    num_attention_heads: int = _req(**at_least(1))
    intermediate_size: int = _req(**at_least(1))


@dataclass
class Data:
    name: str = _req()
    path: str | None = _opt()
    text_column: str | None = _opt()
    label_column: str | None = _opt()
    threshold: float = _req(**score())
    n_samples: int = _req(**at_least(1))
    split: list[float] = _req()
    sample_seed: int = _req(**at_least(0))


@dataclass
class Drift:
    name: str = _req()


@dataclass
class Schedule:
    name: str = _req()
    sigma_min: float | None = _opt()
    sigma_max: float | None = _opt()
    k: int | None = _opt()
    sigmas: list[float] | None = _opt()


@dataclass
class Classifier:  # a classifier/ choice: each family's YAML names its schema
    name: str = _req()


@dataclass
class LinearClassifier(Classifier):  # C-regularised: logreg, logreg_raw, linear_svm
    c_grid: list[float] = _req(**positive_list())
    select_by: str = _req()
    max_iter: int = _req(**at_least(1))
    degenerate_dims: str = _req()
    degenerate_rel_std: float = _req(**positive())
    standardize: bool = _req()


@dataclass
class MlpClassifier(Classifier):
    alpha_grid: list[float] = _req(**positive_list())
    select_by: str = _req()
    hidden_layer_sizes: list[int] = _req(**positive_list())
    max_iter: int = _req(**at_least(1))
    validation_fraction: float = _req(**_rule("a number in (0, 1)", lambda v: 0 < v < 1))
    degenerate_dims: str = _req()
    degenerate_rel_std: float = _req(**positive())
    standardize: bool = _req()


@dataclass
class KnnClassifier(Classifier):
    k_grid: list[int] = _req(**positive_list())
    select_by: str = _req()


@dataclass
class Mitigation:  # a mitigation/ choice: each YAML names its schema
    name: str = _req()


@dataclass
class NoiseAugmentMitigation(Mitigation):
    sigma_train: float | None = _opt(**at_least(0, "a number"))
    sigma_grid: list[float] = _req(
        **_rule("a non-empty list of numbers >= 0", lambda v: len(v) > 0 and min(v) >= 0)
    )
    val_auc_tolerance: float = _req(**at_least(0, "a number"))


@dataclass
class LabelledMitigation(Mitigation):
    m: int = _req(**at_least(4))


@dataclass
class Monitor:
    """The label-free monitors of a drift run (driftbench/monitors.py); ``monitors``: null for
    every one, a list of names, or [] for none."""

    name: str = _req()
    monitors: list[str] | None = _opt()
    reference: str = _req()
    reference_share: float = _req(**_rule("a number in (0, 1)", lambda v: 0 < v < 1))
    window: int = _req(**at_least(2))
    n_windows: int = _req(**at_least(1))
    alpha: float = _req(**_rule("a number in (0, 1)", lambda v: 0 < v < 1))
    power_level: float = _req(**_rule("a number in (0, 1]", lambda v: 0 < v <= 1))
    auc_drop: float = _req(**positive())
    mmd_permutations: int = _req(**at_least(1))
    pca_components: int = _req(**at_least(1))
    c2st_holdout: float = _req(**_rule("a number in (0, 1)", lambda v: 0 < v < 1))
    c2st_c: float = _req(**positive())


@dataclass
class Condition:
    name: str = _req()
    train: bool = _req()
    use_sft: bool = _req()
    sft_texts: str = _req()
    use_contrastive: bool = _req()
    shuffle_pairs: bool = _req()


@dataclass
class SftData:
    alpaca_path: str = _req()
    n_examples: int = _req(**at_least(1))
    trap_ratio: float = _req(**within(0.0, 1.0))
    trap_behaviors: list[str] = _req()
    seed: int = _req(**at_least(0))


@dataclass
class Lora:
    rank: int = _req(**at_least(1))
    alpha: int = _req(**at_least(1))
    dropout: float = _req(**within(0.0, 1.0, closed_hi=False))
    target_modules: list[str] = _req()


@dataclass
class Optim:
    lr: float = _req(**positive())
    weight_decay: float = _req(**at_least(0, "a number"))
    warmup_ratio: float = _req(**within(0.0, 1.0))
    grad_clip: float = _req(**at_least(0, "a number"))
    grad_accum: int = _req(**at_least(1))
    batch_size: int = _req(**at_least(1))
    epochs: int = _req(**at_least(1))
    max_steps: int | None = _opt(**at_least(1))


@dataclass
class Sft:
    condition: Condition = field(default_factory=Condition)
    lambda_rho: float = _req(**at_least(0, "a number"))
    margin: float = _req(**at_least(0, "a number"))
    pair_behaviors: list[str] = _req()
    ce_on: str = _req()
    holdout_fraction: float = _req(**within(0.0, 1.0, closed_hi=False))
    max_length: int = _req(**at_least(1))
    data: SftData = field(default_factory=SftData)
    lora: Lora = field(default_factory=Lora)
    optim: Optim = field(default_factory=Optim)


@dataclass
class Embed:
    pooling: str = _req()
    max_length: int = _req(**at_least(1))
    layer: int = _req()
    batch_tokens: int = _req(**at_least(1))
    packed: bool = _req()


@dataclass
class Backend:
    name: str = _req()


@dataclass
class Runtime:
    output_root: str = _req()
    cache_dir: str = _req()
    data_dir: str | None = _opt()
    device: str = _req()
    progress: bool = _req()
    stale_after_s: float = _req(**positive())
    force: bool = _req()


@dataclass
class MlflowLogger:
    tracking_uri: str = _req()
    experiment: str = _req()
    artifact_location: str | None = _opt()


@dataclass
class TensorboardLogger:
    subdir: str = _req()


@dataclass
class WandbLogger:
    project: str = _req()
    entity: str | None = _opt()
    mode: str = _req()
    dir: str = _req()


@dataclass
class Logger:
    """The experiment trackers a run is mirrored to (driftbench/trackers/): one key per
    tracker, null where it is off. Like ``runtime``, never part of a result key."""

    mlflow: MlflowLogger | None = None
    tensorboard: TensorboardLogger | None = None
    wandb: WandbLogger | None = None


@dataclass
class Config:
    """The whole run config. ``task``, ``model``, ``classifier`` and ``mitigation`` are typed
    by the schema their YAML names."""

    task: Any = MISSING
    model: Any = MISSING
    data: Data = field(default_factory=Data)
    drift: Drift = field(default_factory=Drift)
    schedule: Schedule = field(default_factory=Schedule)
    classifier: Any = MISSING
    mitigation: Any = MISSING
    monitor: Monitor = field(default_factory=Monitor)
    sft: Sft = field(default_factory=Sft)
    backend: Backend = field(default_factory=Backend)
    runtime: Runtime = field(default_factory=Runtime)
    embed: Embed = field(default_factory=Embed)
    logger: Logger = field(default_factory=Logger)
    seed: int = field(default=MISSING, metadata=at_least(0))


def register() -> None:
    """Put the schemas where the YAML files find them (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="task", name="schema_drift_eval", node=DriftEvalTask)
    cs.store(group="task", name="schema_rho_sft", node=RhoSftTask)
    cs.store(group="model", name="schema_model", node=Model)
    cs.store(group="model", name="schema_tiny_random", node=TinyRandomModel)
    for group, name, node in (
        ("classifier", "schema_linear", LinearClassifier),
        ("classifier", "schema_mlp", MlpClassifier),
        ("classifier", "schema_knn", KnnClassifier),
        ("mitigation", "schema_mitigation", Mitigation),
        ("mitigation", "schema_noise_augment", NoiseAugmentMitigation),
        ("mitigation", "schema_labelled", LabelledMitigation),
    ):
        cs.store(group=group, name=name, node=node)


# --- range checks --------------------------------------------------------------------------------


def keys_of(schema: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(schema))


def _check_node(node: DictConfig, schema: type, prefix: str) -> None:
    names = {f.name for f in dataclasses.fields(schema)}
    for key in node:
        if key not in names:  # only a "+key=value" append gets past Hydra
            raise ValueError(f"{prefix}{key}: no such key; accepted: {keys_of(schema)}")
    for f in dataclasses.fields(schema):
        if f.name not in node:
            continue
        value = node[f.name]
        key = f"{prefix}{f.name}"
        if isinstance(value, DictConfig):
            sub = OmegaConf.get_type(value)
            if dataclasses.is_dataclass(sub):
                _check_node(value, sub, f"{key}.")
            continue
        rule = f.metadata.get("ok")
        if rule is None or value is None:
            continue
        plain = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        if not rule(plain):
            raise ValueError(f"{key}={plain}; accepted: {f.metadata['accepted']}")


def check(cfg: DictConfig) -> None:
    """Every range declared in the schema, on a composed config (types were checked by Hydra)."""
    _check_node(cfg, Config, "")
