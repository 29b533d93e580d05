"""Texts to token ids, and generated ids back to text, exactly as rho-eval's one-text calls do,
and the generation-config settings that change greedy decoding: the same for every backend, so
all score and decode the same tokens."""

from __future__ import annotations

# rho-eval truncates a scored text to 256 tokens: ``get_mean_logprob`` (the audit's mean
# log-prob behaviours) and ``differentiable_ce_loss`` (the rho loss's per-text CE)
SCORE_MAX_LENGTH = 256
GENERATE_MAX_PROMPT = 512  # rho-eval's generate() truncates the prompt to 512 tokens


def encode(tokenizer, texts: list[str], max_length: int | None) -> list[list[int]]:
    """Token ids exactly as rho-eval's one-text calls produce them (special tokens included;
    right truncation at ``max_length``; ``None`` = no truncation, as the cartography engine)."""
    if not texts:
        return []
    if max_length is None:
        return tokenizer(list(texts))["input_ids"]
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def completion_text(tokenizer, prompt_ids: list[int], new_ids: list[int], stop: set[int]) -> str:
    """rho-eval's decode: the new tokens up to and including the first stop token are appended
    to the prompt, the whole is decoded without special tokens, and the decoded prompt's
    length is cut off the front (so merges across the boundary behave as in rho-eval)."""
    kept = []
    for t in new_ids:
        kept.append(t)
        if t in stop:
            break
    full = tokenizer.decode(prompt_ids + kept, skip_special_tokens=True)
    prompt = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    return full[len(prompt) :].strip()


# Generation-config fields that change greedy decoding (neutral values listed), besides
# ``repetition_penalty``. The torch backend hands a model with any of them active to
# ``model.generate``, one prompt at a time; the mlx backend refuses such a model.
GREEDY_NEUTRAL: dict[str, tuple] = {
    "num_beams": (None, 1),
    "penalty_alpha": (None,),
    "guidance_scale": (None, 1, 1.0),
    "sequence_bias": (None,),
    "encoder_repetition_penalty": (None, 1, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "forced_decoder_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "exponential_decay_length_penalty": (None,),
    "stop_strings": (None,),
    "max_time": (None,),
    "watermarking_config": (None,),
    "prompt_lookup_num_tokens": (None,),
    "dola_layers": (None,),
}


def non_neutral_fields(generation_config) -> list[str]:
    """``GREEDY_NEUTRAL`` fields that a generation config (``transformers.GenerationConfig``)
    sets to a value that changes greedy decoding."""
    return [k for k, ok in GREEDY_NEUTRAL.items() if getattr(generation_config, k, None) not in ok]


def repetition_penalty(generation_config) -> float | None:
    """The config's repetition penalty, None when it is neutral (unset or 1)."""
    value = getattr(generation_config, "repetition_penalty", None)
    return None if value in (None, 1, 1.0) else float(value)
