"""What each real update does to a model's weights, on float32 numpy arrays by parameter name
(the backend reads and writes them: ``Backend.weights`` / ``set_weights``).

- re-quantization with the ``gguf`` package's own quantizers, de-quantized back to float32;
- a LoRA adapter merged at scale s: ``W + s * (alpha / r) * B @ A`` (peft's merge at s = 1);
- linear interpolation ``(1 - a) * theta_t + a * theta_t1``.
"""

from __future__ import annotations

import functools
import json
import mmap
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from driftbench.workers import can_fork, process_workers

LADDER = ("BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "MXFP4")  # fine -> coarse
MAX_WORKERS = 2
# Forking two workers from a process holding SmolLM2 took 0.05-0.07 s; 8M values take about
# 0.13 s serially at the ladder's mean rate (BF16 0.04 s, MXFP4 0.4 s): two workers break even.
PARALLEL_MIN_ELEMENTS = 8_000_000
CHUNK_ELEMENTS = 1 << 20  # a task: whole rows of one tensor, about this many values
# gguf quantizes 16 rows per numpy call; rows of SmolLM2's width (576) make each call small and
# Python's overhead large. Whole rows joined end to end into rows of up to this many values
# hold the same blocks, so the bytes are the same, in 40% less time for the Q types (1-thread
# measurement, 2.4M values: Q8_0 16 -> 11 ms, Q5_1 32 -> 21 ms, MXFP4 110 -> 109 ms).
ROW_VALUES = 9216


@functools.cache
def quant_types() -> tuple[str, ...]:
    """The types the installed ``gguf`` package quantizes in numpy (tried on one zero row)."""
    from gguf import GGMLQuantizationType, quants

    def quantizes(qtype) -> bool:
        try:
            quants.quantize(np.zeros((1, 8 * _block_size(qtype)), dtype=np.float32), qtype)
        except (NotImplementedError, quants.QuantError, TypeError, ValueError, KeyError):
            return False
        return True

    skip = ("F32", "F64", "I8", "I16", "I32", "I64")
    return tuple(t.name for t in GGMLQuantizationType if t.name not in skip and quantizes(t))


def _block_size(qtype) -> int:
    from gguf import GGML_QUANT_SIZES

    return GGML_QUANT_SIZES[qtype][0]


def check_quant_type(name: str, key: str) -> None:
    """``name`` is a type the installed ``gguf`` quantizes, or one line names ``key`` (the
    config key that gave it) and the accepted types."""
    accepted = quant_types()
    if name not in accepted:
        raise ValueError(
            f"{key}: quantization type {name!r}; accepted: {', '.join(accepted)} (the types the "
            "installed gguf package quantizes)"
        )


def requantize(
    weights: dict[str, np.ndarray],
    name: str,
    workers: int | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> dict[str, np.ndarray]:
    """Every 2-D weight whose rows split into the type's blocks (the linear layers and the
    embedding tables; norms and biases stay float32), passed through ``gguf.quants.quantize``
    and back through ``dequantize``. llama.cpp keeps an encoder's position and token-type
    embeddings in float; this quantizes them too, so an encoder's ladder is a little harsher.

    gguf quantizes block by block within a row, so whole rows of a tensor can be quantized
    apart and the result is the same to the bit: ``workers`` forked processes (Linux; default
    ``min(2, cores)`` from ``PARALLEL_MIN_ELEMENTS`` values up, else 1) each take runs of about
    ``chunk_elements`` values and write the float32 result into memory shared with this one."""
    from gguf import GGMLQuantizationType

    qtype = GGMLQuantizationType[name]
    block = _block_size(qtype)
    names = [n for n, w in weights.items() if w.ndim == 2 and w.shape[1] % block == 0]
    total = sum(weights[n].size for n in names)
    if workers is None:
        workers = default_workers(total)
    if workers <= 1 or total == 0 or not can_fork():
        out = Requantized({n: _round_trip(weights[n], qtype) for n in names})
        out.squared_error = sum(_squared_distance(out[n], weights[n]) for n in names)
        return out
    return _requantize_forked(weights, names, qtype, workers, chunk_elements)


class Requantized(dict):
    """Re-quantized weights by name, with ``squared_error``: sum((new - old)^2) over them in
    float64, summed by the workers as they went (``relative_error`` reads it instead of a
    second pass over every weight: 0.3 s a rung of SmolLM2's ladder)."""

    squared_error: float = 0.0


def default_workers(n_values: int) -> int:
    if n_values < PARALLEL_MIN_ELEMENTS or not can_fork():
        return 1
    return process_workers(MAX_WORKERS)


def _round_trip(w: np.ndarray, qtype) -> np.ndarray:
    """``dequantize(quantize(w))`` of a 2-D ``w``, its rows joined ``k`` at a time (blocks lie
    within a row, so joining whole rows leaves every block as it was)."""
    from gguf import quants

    rows, cols = w.shape
    k = max(1, min(rows, ROW_VALUES // cols))
    while rows % k:
        k -= 1
    joined = np.ascontiguousarray(w).reshape(rows // k, k * cols)
    out = quants.dequantize(quants.quantize(joined, qtype), qtype)
    return out.astype(np.float32, copy=False).reshape(rows, cols)


_JOB: tuple | None = None  # (weights, qtype, outputs): set before the fork, read by workers


def _work(task: tuple[str, int, int]) -> float:
    """One run of rows re-quantized into the shared output; its squared error."""
    weights, qtype, out = _JOB
    n, start, stop = task
    out[n][start:stop] = _round_trip(weights[n][start:stop], qtype)
    return _squared_distance(out[n][start:stop], weights[n][start:stop])


def _requantize_forked(weights, names, qtype, workers, chunk_elements):
    global _JOB
    buffer = mmap.mmap(-1, 4 * sum(weights[n].size for n in names))  # anonymous, shared
    out, offset, tasks = Requantized(), 0, []
    for n in names:
        w = weights[n]
        out[n] = np.frombuffer(buffer, np.float32, w.size, offset).reshape(w.shape)
        offset += 4 * w.size
        rows = max(1, chunk_elements // w.shape[1])
        tasks += [(n, r, min(r + rows, w.shape[0])) for r in range(0, w.shape[0], rows)]
    tasks.sort(key=lambda t: (t[2] - t[1]) * weights[t[0]].shape[1], reverse=True)
    _JOB = (weights, qtype, out)
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            out.squared_error = sum(pool.map(_work, tasks))
    finally:
        _JOB = None
    return out


def squared_norm(weights: dict[str, np.ndarray]) -> float:
    """``||theta||^2`` in float64 over every parameter: the denominator of
    ``relative_error``, the same for every checkpoint of a model (compute it once)."""
    return sum(_squared_distance(w) for w in weights.values())


def relative_error(
    base: dict[str, np.ndarray], new: dict[str, np.ndarray], base_norm2: float | None = None
) -> float:
    """``||theta' - theta|| / ||theta||`` over every parameter (unchanged ones count in the
    norm of theta): the size of the update relative to the model. ``base_norm2``:
    ``squared_norm(base)``, where the caller has it; the numerator is ``new.squared_error``
    where ``new`` comes from ``requantize``."""
    if isinstance(new, Requantized):
        num = new.squared_error
    else:
        num = sum(_squared_distance(new[n], base[n]) for n in new)
    den = squared_norm(base) if base_norm2 is None else base_norm2
    return float(np.sqrt(num / den))


def _squared_distance(a: np.ndarray, b: np.ndarray | None = None, chunk: int = 1 << 18) -> float:
    """``sum((a - b) ** 2)`` in float64, a chunk at a time (no float64 copy of a whole
    tensor, no BLAS threads)."""
    a = a.reshape(-1)
    b = None if b is None else b.reshape(-1)
    total = 0.0
    for i in range(0, a.size, chunk):
        d = a[i : i + chunk].astype(np.float64)
        if b is not None:
            d -= b[i : i + chunk]
        np.square(d, out=d)
        total += float(d.sum())
    return total


def interpolate(a: dict, b: dict, alpha: float) -> dict[str, np.ndarray]:
    """theta(alpha) = (1 - alpha) theta_a + alpha theta_b, for the parameters that differ."""
    return {
        n: ((1 - alpha) * a[n] + alpha * b[n]).astype(np.float32)
        for n in a
        if not np.array_equal(a[n], b[n])
    }


def check_same_architecture(a: dict, b: dict, what: str) -> None:
    """The parameter names and shapes of two models agree, or one line says where not."""
    missing = sorted(set(a) ^ set(b))
    if missing:
        raise ValueError(
            f"{what}: the two models' parameters differ ({len(missing)} names, e.g. "
            f"{missing[0]!r}); accepted: two checkpoints of the same architecture"
        )
    bad = next((n for n in a if a[n].shape != b[n].shape), None)
    if bad is not None:
        raise ValueError(
            f"{what}: {bad} has shape {a[bad].shape} vs {b[bad].shape}; accepted: two "
            "checkpoints of the same architecture"
        )


# --- LoRA adapters (peft's format: adapter_config.json + adapter_model.safetensors) ----------

# adapter_config.json keys whose non-default values the merge below does not reproduce
UNMERGED = ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save", "bias")


def adapter_folder(path: str | Path) -> Path:
    """A LoRA adapter folder: the folder itself, or a rho_sft run dir's ``adapter/``."""
    p = Path(path).expanduser()
    for folder in (p, p / "adapter"):
        if (folder / "adapter_config.json").is_file():
            weights = folder / "adapter_model.safetensors"
            if not weights.is_file():
                raise ValueError(f"drift.adapter={str(path)!r}: {weights} is missing")
            config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
            if config.get("peft_type", "LORA") != "LORA":
                raise ValueError(
                    f"drift.adapter={str(path)!r} is a {config.get('peft_type')} adapter; "
                    "accepted: a LoRA adapter (peft), e.g. a rho_sft run dir"
                )
            unsupported = [
                k for k in UNMERGED if config.get(k) not in (None, False, {}, [], "none")
            ]
            missing = [k for k in ("r", "lora_alpha") if k not in config]
            if unsupported or missing:
                raise ValueError(
                    f"drift.adapter={str(path)!r} sets {', '.join(unsupported or missing)}; "
                    "accepted: a plain LoRA adapter (r, lora_alpha; no DoRA, per-module ranks, "
                    "trained biases or saved modules)"
                )
            return folder
    what = "does not exist" if not p.exists() else "holds no adapter_config.json"
    raise ValueError(
        f"drift.adapter={str(path)!r} {what}; accepted: a LoRA adapter folder (peft's "
        "adapter_config.json + adapter_model.safetensors) or a rho_sft run dir holding adapter/"
    )


def adapter_files(folder: Path) -> list[Path]:
    """The files that decide an adapter (its identity in the update cache)."""
    return [folder / "adapter_config.json", folder / "adapter_model.safetensors"]


def lora_deltas(folder: Path, names: list[str]) -> dict[str, np.ndarray]:
    """``(alpha / r) * B @ A`` for every adapted weight, keyed by the base model's parameter
    name (peft prefixes its keys with ``base_model.model.`` and, for a causal LM, ``model.``;
    the base model has neither)."""
    from safetensors.numpy import load_file

    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    r = int(config["r"])
    scale = float(config["lora_alpha"]) / (np.sqrt(r) if config.get("use_rslora") else r)
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    out = {}
    for key, a in tensors.items():
        if "lora_embedding_" in key:
            raise ValueError(
                f"adapter {folder} adapts an embedding ({key}); accepted: linear layers"
            )
        if ".lora_A." not in key:
            continue
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        target = _match(module + ".weight", names)
        delta = scale * (b.astype(np.float64) @ a.astype(np.float64))
        out[target] = (delta.T if config.get("fan_in_fan_out") else delta).astype(np.float32)
    if not out:
        raise ValueError(f"adapter {folder} holds no LoRA weights (lora_A / lora_B)")
    return out


def _match(name: str, names: list[str]) -> str:
    candidates = [n for n in names if name == n or name.endswith("." + n) or n.endswith("." + name)]
    if len(candidates) != 1:
        raise ValueError(
            f"adapter weight {name!r} matches {len(candidates)} of the model's parameters "
            "(accepted: an adapter trained on this model)"
        )
    return candidates[0]


def merge(base: dict, deltas: dict, scale: float) -> dict[str, np.ndarray]:
    return {n: (base[n] + scale * d).astype(np.float32) for n, d in deltas.items()}
