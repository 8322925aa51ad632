"""Checkpoints: lazy, tensor-by-tensor access to base models, LoRA adapters and patches, and the tensor plan.

- :mod:`.files`: safetensors read by positioned reads; legacy pickles with ``weights_only``;
- :mod:`.torchzip`: :func:`open_pickle`, torch's zip-format ``.bin`` files read tensor by tensor (positioned reads,
  an unpickler that only rebuilds tensor descriptions);
- :mod:`.model`: :func:`open_checkpoint` (HF safetensors / ``.bin`` shards, Meta ``.pth``), in HF naming;
- :mod:`.adapter`: :func:`open_adapter` (PEFT LoRA folders, old layouts included);
- :mod:`.names`: Meta <-> HF tensor names and the RoPE row permutations;
- :mod:`.layout`: :class:`TensorSpec`, :func:`llama_tensors` and the :class:`TensorSink` protocol that writers implement;
- :mod:`.streamed`: :class:`StreamedCheckpoint`, a hub base read one safetensors shard at a time (low-disk mode).
"""
from __future__ import annotations

from .adapter import Adapter, open_adapter
from .model import Checkpoint, open_checkpoint
from .names import LORA_TARGETS, rope_to_meta
from .layout import TensorSpec, TensorSink, llama_tensors
from .streamed import StreamedCheckpoint

__all__ = ["LORA_TARGETS", "Adapter", "Checkpoint", "StreamedCheckpoint", "TensorSpec", "TensorSink", "llama_tensors",
           "open_adapter", "open_checkpoint", "rope_to_meta"]
