"""The contract between the streaming merge and the output writers.

The merge knows every output tensor's name and shape before it computes any of them (from the base
checkpoint's headers and the LoRAs' ``modules_to_save`` shapes). It hands that plan to a sink,
then streams each finished tensor, in plan order, as float32 in Hugging Face naming
(``model.layers.0.self_attn.q_proj.weight``, ``lm_head.weight``, ...). Writers that need a header
first (GGUF) use the plan; writers that shard (HF, Meta .pth) use it to decide shard boundaries.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: HF name and shape."""

    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


class TensorSink(Protocol):
    """Something that turns a stream of merged tensors into files."""

    def open(self, *, config: dict, tokenizer_dir: Path, plan: list[TensorPlan]) -> None:
        """Start: ``config`` is the merged HF config.json dict (``vocab_size`` updated)."""

    def done(self, name: str) -> bool:
        """True when ``name`` is already safely on disk from an earlier, interrupted run (resume)."""

    def write(self, name: str, tensor: "torch.Tensor") -> None:
        """Receive one finished float32 tensor, in plan order."""

    def close(self) -> list[Path]:
        """Finish, move outputs to their final names and return them."""

    def abort(self) -> None:
        """Remove temporary files after a failure (final names are never touched)."""
