"""The LLaMA hyper-parameter keys of a GGUF, as llama.cpp's converter writes them (plus catalog RoPE scaling)."""
from __future__ import annotations

import sys

from .card import ModelCard


def rope_settings(config: dict, card: ModelCard) -> tuple[float | None, dict]:
    """(rope theta, scaling dict with ``type``/``factor``/...) from an HF config (old or transformers-5 keys), the
    scaling from the catalog (``card``) where the config has none."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    params = dict(params) if isinstance(params, dict) else {}
    theta = config.get("rope_theta", params.get("rope_theta"))
    kind = params.get("rope_type", params.get("type"))
    scaling = {} if kind in (None, "default") else {**params, "type": kind}
    return theta, scaling or dict(card.rope_scaling or {})


def context_length(config: dict, card: ModelCard) -> int:
    """The context length a GGUF of ``config`` declares: the config's, or the catalog's for a RoPE-scaled model
    (what llama.cpp and Ollama should use for a model tuned to a longer context)."""
    ctx = int(config.get("max_position_embeddings") or 2048)
    return int(card.context_length) if rope_settings(config, card)[1] and (card.context_length or 0) > ctx else ctx


def add_hparams(w, config: dict, n_layers: int, n_head: int, n_kv: int, vocab_size: int, card: ModelCard) -> None:
    """The converter's LLaMA hyper-parameter keys (plus catalog RoPE scaling for long-context models)."""
    import gguf

    hidden = int(config["hidden_size"])
    theta, scaling = rope_settings(config, card)
    w.add_block_count(n_layers)
    w.add_context_length(context_length(config, card))
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(int(config["intermediate_size"]))
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    kind, factor = scaling.get("type"), scaling.get("factor")
    if kind == "linear" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(factor))
    elif kind == "yarn" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(factor))
        orig = scaling.get("original_max_position_embeddings") or config.get("max_position_embeddings")
        w.add_rope_scaling_orig_ctx_len(int(orig))
    elif kind:
        print(f"warning: RoPE scaling {kind!r} is not written to the GGUF", file=sys.stderr)
    if theta is not None:
        w.add_rope_freq_base(float(theta))
    eps = config.get("rms_norm_eps")
    if eps is not None:
        w.add_layer_norm_rms_eps(float(eps))
    head_dim = int(config.get("head_dim") or hidden // n_head)
    w.add_key_length(head_dim)  # the converter writes these from transformers' config (which fills head_dim)
    w.add_value_length(head_dim)
    w.add_vocab_size(vocab_size)
    w.add_rope_dimension_count(head_dim)
