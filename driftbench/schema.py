"""One schema per config group: the type of every key, and the range a value must lie in.

The values (defaults included) live once, in the YAML files under ``conf/``; these dataclasses
say what shape they have. They are registered in Hydra's ConfigStore, so Hydra refuses an
unknown key (``model.hidden_sizee=64``) and a value of the wrong type (``data.n_samples=abc``)
while composing, before any code runs. ``conf/config.yaml`` starts from ``base_config``; the
groups whose choices differ in shape (task, model, drift, classifier, mitigation) name their
schema in each YAML's defaults list. A range is declared beside its field
(``metadata=at_least(1)``, driftbench/ranges.py) and checked by ``check`` before any heavy work,
with one sentence naming the key, the value and what is accepted. Choices among names (a drift
type, a pooling) are checked by the registries that define them, in each task's ``validate``;
``driftbench.config_errors`` puts Hydra's own errors in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from driftbench.backends import DTYPES
from driftbench.ranges import (
    at_least,
    check_node,
    one_of,
    opt,
    positive,
    positive_list,
    req,
    rule,
    score,
    within,
)

# --- the groups ----------------------------------------------------------------------------------


def _pairs_ok(v: list) -> bool:
    return len(v) > 0 and all(
        x == "all" or (isinstance(x, int) and not isinstance(x, bool) and x >= 2) for x in v
    )


@dataclass
class Playbook:
    """The upgrade playbook of a drift run (tasks/drift_eval/playbook.py, docs/playbook.md):
    the adapters it fits (kinds of ``driftbench.adapters``, checked there), on how many paired
    training texts, and how many fresh labels the label options read."""

    enabled: bool = req()
    adapters: list[str] = req(**rule("a non-empty list of adapter kinds", lambda v: len(v) > 0))
    rank: int = req(**at_least(1))
    pairs: list[Any] = req(**rule("a non-empty list of integers >= 2 or 'all'", _pairs_ok))
    m: list[int] = req(
        **rule("a non-empty list of integers >= 4", lambda v: len(v) > 0 and min(v) >= 4)
    )


@dataclass
class DriftEvalTask:
    name: str = req()
    tau: float = req(**within(0.5, 1.0))
    ece_bins: int = req(**at_least(1))
    calibration_checkpoints: list[int] | None = opt()
    bootstrap_resamples: int = req(**at_least(0))
    interval_level: float = req(**within(0.5, 1.0, closed_hi=False))
    playbook: Playbook = field(default_factory=Playbook)


@dataclass
class StressTest:
    enabled: bool = req()
    prompts: str = req()
    n_harmful: int | None = opt(**at_least(1))
    n_benign: int | None = opt(**at_least(1))
    max_new_tokens: int = req(**at_least(1))


@dataclass
class RhoSftTask:
    name: str = req()
    audit_behaviors: list[str] = req()
    n_probes: int | None = opt(**at_least(1))
    probe_seed: int = req(**at_least(0))
    batch_tokens: int = req(**at_least(1))
    gen_max_batch: int = req(**at_least(1))
    stress_test: StressTest = field(default_factory=StressTest)


@dataclass
class Model:
    name: str = req()
    source: str = req()
    name_or_path: str | None = opt()
    gguf_package: str | None = opt()
    gguf_file: str | None = opt()
    variant: str = req()
    pooling: str = req()


@dataclass
class TinyRandomModel(Model):
    init_seed: int = req(**at_least(0))
    hidden_size: int = req(**at_least(1))
    num_hidden_layers: int = req(**at_least(1))
    num_attention_heads: int = req(**at_least(1))
    intermediate_size: int = req(**at_least(1))


@dataclass
class Data:
    name: str = req()
    path: str | None = opt()
    text_column: str | None = opt()
    label_column: str | None = opt()
    positive_labels: list[str] | None = opt()
    negative_labels: list[str] | None = opt()
    bad_labels: str = req()
    threshold: float = req(**score())
    # added after runs existed: a data group without them composes as before (balanced, split
    # at random), and at these values they stay out of the result key (runs.KEY_DEFAULTS)
    balance: bool = True
    split_column: str | None = opt()
    n_samples: int = req(**at_least(1))
    split: list[float] = req()
    seed: int = req(**at_least(0))


@dataclass
class Drift:  # a drift/ choice: a synthetic drift (driftbench/drift.py) is its name alone
    name: str = req()


@dataclass
class UpdateDrift(Drift):  # a real model update (driftbench/updates/); each YAML names its schema
    anchors: int = req(**at_least(0))
    map: str = req()
    twin_draws: int = req(**at_least(5))


@dataclass
class QuantizeDrift(UpdateDrift):
    levels: list[str] = req()


@dataclass
class TrainedDrift(UpdateDrift):  # an update whose adapter the run may train (tasks/.../adapter.py)
    train: Any = None  # the sft group's settings (${sft}): the adapter a run trains itself
    train_probes: int | None = opt(**at_least(1))
    train_probe_seed: int = req(**at_least(0))
    train_seed: int = req(**at_least(0))


@dataclass
class AdapterDrift(TrainedDrift):
    adapter: str | None = opt()
    scales: list[float] = req(
        **rule("a non-empty list of numbers >= 0", lambda v: len(v) > 0 and min(v) >= 0)
    )


@dataclass
class TuneDrift(TrainedDrift):
    fractions: list[float] = req(
        **rule(
            "a non-empty list of shares in 0..1",
            lambda v: len(v) > 0 and 0 <= min(v) <= max(v) <= 1,
        )
    )
    heldout: int = req(**at_least(1))


@dataclass
class InterpolateDrift(UpdateDrift):
    alphas: list[float] = req(**rule("a non-empty list of numbers", lambda v: len(v) > 0))
    quantize: str | None = opt()
    target: Any = None  # a model/ choice: +model@drift.target=<name>


@dataclass
class PrecisionDrift(UpdateDrift):
    dtypes: list[str] = req(**rule("a non-empty list of dtypes", lambda v: len(v) > 0))


@dataclass
class SwapDrift(UpdateDrift):
    target: Any = MISSING  # a model/ choice: model@drift.target=<name>


@dataclass
class Schedule:
    name: str = req()
    sigma_min: float | None = opt()
    sigma_max: float | None = opt()
    k: int | None = opt()
    sigmas: list[float] | None = opt()


@dataclass
class Classifier:  # a classifier/ choice: each family's YAML names its schema
    name: str = req()


@dataclass
class LinearClassifier(Classifier):  # C-regularised: logreg, logreg_raw, linear_svm
    c_grid: list[float] = req(**positive_list())
    select_by: str = req()
    max_iter: int = req(**at_least(1))
    degenerate_dims: str = req()
    degenerate_rel_std: float = req(**positive())
    standardize: bool = req()


@dataclass
class MlpClassifier(Classifier):
    alpha_grid: list[float] = req(**positive_list())
    select_by: str = req()
    hidden_layer_sizes: list[int] = req(**positive_list())
    max_iter: int = req(**at_least(1))
    validation_fraction: float = req(**rule("a number in (0, 1)", lambda v: 0 < v < 1))
    degenerate_dims: str = req()
    degenerate_rel_std: float = req(**positive())
    standardize: bool = req()


@dataclass
class KnnClassifier(Classifier):
    k_grid: list[int] = req(**positive_list())
    select_by: str = req()


@dataclass
class FittedClassifier(Classifier):  # a team's own, fitted before the run (classifier/fitted.py)
    path: str | None = opt()
    trusted: list[str] = req()


@dataclass
class Mitigation:  # a mitigation/ choice: each YAML names its schema
    name: str = req()


@dataclass
class NoiseAugmentMitigation(Mitigation):
    sigma_train: float | None = opt(**at_least(0, "a number"))
    sigma_grid: list[float] = req(
        **rule("a non-empty list of numbers >= 0", lambda v: len(v) > 0 and min(v) >= 0)
    )
    val_auc_tolerance: float = req(**at_least(0, "a number"))


@dataclass
class AdapterMitigation(Mitigation):
    kind: str = req()
    pairs: int = req(**at_least(2))
    rank: int | None = opt(**at_least(1))


@dataclass
class LabelledMitigation(Mitigation):
    m: int = req(**at_least(4))


@dataclass
class Collapse:
    """The collapse criteria of the monitor group (driftbench/monitors/collapse.py): each a
    threshold, or null where that criterion is off."""

    roc_auc_drop: float | None = opt(**positive())
    balanced_accuracy_drop: float | None = opt(**positive())
    ece_rise: float | None = opt(**positive())
    silent_failure_rate_rise_pct: float | None = opt(**positive("a number of points"))


@dataclass
class Monitor:
    """The label-free monitors of a drift run (driftbench/monitors/); ``monitors``: null for
    every one, a list of names, or [] for none."""

    name: str = req()
    monitors: list[str] | None = opt()
    reference: str = req()
    reference_share: float = req(**rule("a number in (0, 1)", lambda v: 0 < v < 1))
    calibration_share: float = req(**rule("a number in (0, 1)", lambda v: 0 < v < 1))
    window: int = req(**at_least(2))
    n_windows: int = req(**at_least(1))
    alpha: float = req(**rule("a number in (0, 1)", lambda v: 0 < v < 1))
    power_level: float = req(**rule("a number in (0, 1]", lambda v: 0 < v <= 1))
    collapse: Collapse = field(default_factory=Collapse)
    mmd_permutations: int = req(**at_least(1))
    pca_components: int = req(**at_least(1))
    c2st_holdout: float = req(**rule("a number in (0, 1)", lambda v: 0 < v < 1))
    c2st_c: float = req(**positive())


@dataclass
class Condition:
    name: str = req()
    train: bool = req()
    use_sft: bool = req()
    sft_texts: str = req()
    use_contrastive: bool = req()
    shuffle_pairs: bool = req()


@dataclass
class SftData:
    alpaca_path: str = req()
    n_examples: int = req(**at_least(1))
    trap_ratio: float = req(**within(0.0, 1.0))
    trap_behaviors: list[str] = req()
    seed: int = req(**at_least(0))


@dataclass
class Lora:
    rank: int = req(**at_least(1))
    alpha: int = req(**at_least(1))
    dropout: float = req(**within(0.0, 1.0, closed_hi=False))
    target_modules: list[str] = req()


@dataclass
class Optim:
    lr: float = req(**positive())
    weight_decay: float = req(**at_least(0, "a number"))
    warmup_ratio: float = req(**within(0.0, 1.0))
    grad_clip: float = req(**at_least(0, "a number"))
    grad_accum: int = req(**at_least(1))
    batch_size: int = req(**at_least(1))
    epochs: int = req(**at_least(1))
    max_steps: int | None = opt(**at_least(1))


@dataclass
class Sft:
    condition: Condition = field(default_factory=Condition)
    lambda_rho: float = req(**at_least(0, "a number"))
    margin: float = req(**at_least(0, "a number"))
    pair_behaviors: list[str] = req()
    ce_on: str = req()
    holdout_fraction: float = req(**within(0.0, 1.0, closed_hi=False))
    max_length: int = req(**at_least(1))
    # added after runs existed: an sft group without them composes as before (audits of every
    # probe, none during training), and at these values they stay out of the result key
    # (runs.KEY_DEFAULTS)
    audit_probes: str = field(default="all", metadata=one_of("all", "heldout"))
    audit_at_steps: list[int] = field(
        default_factory=list,
        metadata=rule(
            "a list of distinct integers >= 1",
            lambda v: all(x >= 1 for x in v) and len(set(v)) == len(v),
        ),
    )
    data: SftData = field(default_factory=SftData)
    lora: Lora = field(default_factory=Lora)
    optim: Optim = field(default_factory=Optim)


@dataclass
class Embed:
    pooling: str = req()
    max_length: int = req(**at_least(1))
    layer: int = req()
    batch_tokens: int = req(**at_least(1))
    packed: bool = req()


@dataclass
class Backend:
    name: str = req()


@dataclass
class Runtime:
    output_root: str = req()
    cache_dir: str = req()
    data_dir: str | None = opt()
    device: str = req()
    cuda_batch_tokens: int | None = opt(**at_least(1))
    dtype: str = req(**one_of(*DTYPES, "auto"))
    progress: bool = req()
    stale_after_s: float = req(**positive())
    force: bool = req()
    figures: bool | None = opt()


@dataclass
class MlflowLogger:
    tracking_uri: str = req()
    experiment: str = req()
    artifact_location: str | None = opt()


@dataclass
class TensorboardLogger:
    subdir: str = req()


@dataclass
class WandbLogger:
    project: str = req()
    entity: str | None = opt()
    mode: str = req()
    dir: str = req()


@dataclass
class Logger:
    """The experiment trackers a run is mirrored to (driftbench/trackers/): one key per
    tracker, null where it is off. Like ``runtime`` (but its dtype), never part of a result
    key."""

    mlflow: MlflowLogger | None = None
    tensorboard: TensorboardLogger | None = None
    wandb: WandbLogger | None = None


@dataclass
class Config:
    """The whole run config. ``task``, ``model``, ``drift``, ``classifier`` and ``mitigation``
    are typed by the schema their YAML names."""

    task: Any = MISSING
    model: Any = MISSING
    data: Data = field(default_factory=Data)
    drift: Any = MISSING
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
        ("classifier", "schema_fitted", FittedClassifier),
        ("drift", "schema_drift", Drift),
        ("drift", "schema_quantize", QuantizeDrift),
        ("drift", "schema_adapter", AdapterDrift),
        ("drift", "schema_tune", TuneDrift),
        ("drift", "schema_interpolate", InterpolateDrift),
        ("drift", "schema_swap", SwapDrift),
        ("drift", "schema_precision", PrecisionDrift),
        ("mitigation", "schema_mitigation", Mitigation),
        ("mitigation", "schema_noise_augment", NoiseAugmentMitigation),
        ("mitigation", "schema_labelled", LabelledMitigation),
        ("mitigation", "schema_adapter", AdapterMitigation),
    ):
        cs.store(group=group, name=name, node=node)


def check(cfg: DictConfig) -> None:
    """Every range declared in the schema, on a composed config (types were checked by Hydra)."""
    check_node(cfg, Config, "")


def sft_settings(group: DictConfig) -> Sft:
    """The ``sft`` group as its schema object, the training loops' knobs by their YAML names. The
    rho_sft task and the drift task's trained adapter both train with it; the adapter reads it
    from ``drift.train``, which the schema types as ``Any``, so the merge types it again."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Sft), group))
