"""The tensor layout, and the contract between whatever streams tensors (the merge, ``to-gguf``) and the writers.

The merge knows every output tensor's name and shape before it computes any of them (from the base
checkpoint's headers and the LoRAs' ``modules_to_save`` shapes). It hands that layout to a sink,
then streams each finished tensor, in layout order, as float32 in Hugging Face naming
(``model.layers.0.self_attn.q_proj.weight``, ``lm_head.weight``, ...). Writers that need a header
first (GGUF) use the layout; writers that shard (HF, Meta .pth) use it to decide shard boundaries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TensorSpec:
    """One output tensor: HF name and shape."""

    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


class TensorSink(Protocol):
    """Something that turns a stream of tensors into files.

    The output is built under :attr:`partial` (a hidden sibling of the final name) and moved into place by
    :meth:`close`, which also writes the checksums when the sink was asked to; nothing ever appears under a
    final name before it is complete.
    """

    partial: Path  # where the unfinished output lives

    def open(self, *, config: dict, tokenizer_dir: Path, tensors: list[TensorSpec]) -> None:
        """Start: ``config`` is the HF config.json dict (``vocab_size`` updated), ``tensors`` every tensor in order."""

    def done(self, name: str) -> bool:
        """True when ``name`` is already safely on disk from an earlier, interrupted run (resume)."""

    def resume_until(self, count: int) -> None:
        """Count at most the first ``count`` tensors of the layout as written by the earlier run (those after them
        were made from inputs not verified by the time it stopped); the rest are written again."""

    def write(self, name: str, tensor: "torch.Tensor") -> None:
        """Receive one finished float32 tensor, in layout order (the sink may keep it until the next call, so the
        caller must not change it afterwards)."""

    def close(self) -> list[Path]:
        """Finish, write checksums if asked, move outputs to their final names and return them."""

    def abort(self, *, keep_partial: bool) -> None:
        """Stop after a failure: keep what a resume can use (``keep_partial``), or delete the partial output.
        Final names are never touched."""


def llama_tensors(config: dict) -> list[TensorSpec]:
    """The tensors of a LLaMA-architecture model with this ``config.json`` (HF names and shapes, in the order the
    released checkpoints list them): what a checkpoint holds before it is downloaded."""
    h, f = int(config["hidden_size"]), int(config["intermediate_size"])
    heads = int(config["num_attention_heads"])
    kv = int(config.get("num_key_value_heads") or heads) * int(config.get("head_dim") or h // heads)
    vocab = int(config["vocab_size"])
    tensors = [TensorSpec("model.embed_tokens.weight", (vocab, h))]
    for i in range(int(config["num_hidden_layers"])):
        p = f"model.layers.{i}."
        tensors += [TensorSpec(p + "self_attn.q_proj.weight", (h, h)),
                    TensorSpec(p + "self_attn.k_proj.weight", (kv, h)),
                    TensorSpec(p + "self_attn.v_proj.weight", (kv, h)), TensorSpec(p + "self_attn.o_proj.weight", (h, h)),
                    TensorSpec(p + "mlp.gate_proj.weight", (f, h)), TensorSpec(p + "mlp.up_proj.weight", (f, h)),
                    TensorSpec(p + "mlp.down_proj.weight", (h, f)), TensorSpec(p + "input_layernorm.weight", (h,)),
                    TensorSpec(p + "post_attention_layernorm.weight", (h,))]
    tensors += [TensorSpec("model.norm.weight", (h,)), TensorSpec("lm_head.weight", (vocab, h))]
    return tensors
