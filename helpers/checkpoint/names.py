"""Tensor names and layouts: Meta's ``consolidated.NN.pth`` naming vs Hugging Face's, and the RoPE row order.

Meta keeps each q/k head's rotary pairs interleaved (rows ``2i, 2i+1``), Hugging Face keeps them in two
halves (rows ``i, i + head_dim/2``); llama.cpp uses Meta's order. Tensor-parallel Meta shards split each
tensor along the dimension :func:`meta_split_dim` names.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Meta <-> Hugging Face names. Split dims of Meta's tensor-parallel shards: None = replicated.
_META_LAYER = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj",
               "attention.wv": "self_attn.v_proj", "attention.wo": "self_attn.o_proj",
               "feed_forward.w1": "mlp.gate_proj", "feed_forward.w2": "mlp.down_proj",
               "feed_forward.w3": "mlp.up_proj", "attention_norm": "input_layernorm",
               "ffn_norm": "post_attention_layernorm"}
_META_TOP = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}
_SPLIT_DIM = {"tok_embeddings": 1, "output": 0, "norm": None, "wq": 0, "wk": 0, "wv": 0, "wo": 1,
              "w1": 0, "w2": 1, "w3": 0, "attention_norm": None, "ffn_norm": None}
_HF_LAYER = {v: k for k, v in _META_LAYER.items()}
# The seven projections of a LLaMA block that the releases train LoRAs on, in the order of their adapter configs
LORA_TARGETS = ("q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "down_proj", "up_proj")
_HF_TOP = {v: k for k, v in _META_TOP.items()}


def _rename(name: str, top: dict[str, str], layer: dict[str, str], src: str, dst: str) -> str | None:
    """Map ``name`` through ``top`` or, for ``<src>N.<part>``, ``layer`` (to ``<dst>N.<new part>``)."""
    stem = name.removesuffix(".weight")
    if stem in top:
        return top[stem] + ".weight"
    m = re.fullmatch(re.escape(src) + r"(\d+)\.(.+)", stem)
    if m and m.group(2) in layer:
        return f"{dst}{m.group(1)}.{layer[m.group(2)]}.weight"
    return None


def meta_to_hf_name(name: str) -> str | None:
    """HF name of a Meta checkpoint tensor (``None`` for tensors HF does not keep, like ``rope.freqs``)."""
    return _rename(name, _META_TOP, _META_LAYER, "layers.", "model.layers.")


def hf_to_meta_name(name: str) -> str | None:
    """Meta name of an HF tensor (``None`` when Meta's layout has no such tensor)."""
    return _rename(name, _HF_TOP, _HF_LAYER, "model.layers.", "layers.")


def meta_split_dim(meta_name: str) -> int | None:
    """Dimension along which Meta splits this tensor across tensor-parallel shards (None: replicated)."""
    return _SPLIT_DIM[meta_name.removesuffix(".weight").rsplit(".", 1)[-1]]


def rope_to_hf(w: "torch.Tensor", n_heads: int) -> "torch.Tensor":
    """Meta q/k rows (pairs ``2i, 2i+1`` per head) -> HF rows (pairs ``i, i + head_dim/2``)."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, -1).transpose(1, 2).reshape(w.shape)


def rope_to_meta(w: "torch.Tensor", n_heads: int) -> "torch.Tensor":
    """Inverse of :func:`rope_to_hf`."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, head_dim // 2, -1).transpose(1, 2).reshape(w.shape)
