"""Peak-memory estimate of a LoRA/QLoRA run, checked against the training device before loading.

:func:`estimate_memory` works from a model folder's ``config.json``, a catalog name (the released shapes,
so it can run before downloading) or a config dict; :func:`detect_device` gives the free GPU memory or
the available RAM.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..catalog import config_of, find
from ..checkpoint import LORA_TARGETS
from ..device import cuda_gpu
from ..env import available_ram_bytes
from ..util import UserError, human_bytes, read_json

EMBEDDINGS = ("embed_tokens", "lm_head")


@dataclass(frozen=True)
class MemoryEstimate:
    """Approximate peak memory of a LoRA/QLoRA run (bytes), and the device it is checked against."""

    params: int
    weights_bytes: int
    trainable_params: int
    trainable_bytes: int
    activation_bytes: int
    overhead_bytes: int
    load_in_4bit: bool
    device_name: str
    device_bytes: int | None

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.trainable_bytes + self.activation_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        return self.device_bytes is None or self.total_bytes <= self.device_bytes

    def summary(self) -> str:
        """One line: the estimate and the device."""
        room = human_bytes(self.device_bytes) if self.device_bytes is not None else "unknown memory"
        return (f"memory estimate: about {human_bytes(self.total_bytes)} (weights {human_bytes(self.weights_bytes)}, "
                f"LoRA + Adam {human_bytes(self.trainable_bytes)}, activations {human_bytes(self.activation_bytes)}); "
                f"{self.device_name} has {room}")

    def __str__(self) -> str:
        return self.summary()

    def check(self) -> None:
        """Raise :class:`UserError` when the run cannot fit the device."""
        if self.fits:
            return
        hint = ("use --4bit (QLoRA)" if not self.load_in_4bit else
                "use a smaller model, a lower --lora-r, --max-seq-length/--block-size or --batch-size")
        raise UserError(f"fine-tuning needs about {human_bytes(self.total_bytes)}, the {self.device_name} has "
                        f"{human_bytes(self.device_bytes or 0)}: {hint}")


def detect_device() -> tuple[str, int | None]:
    """Name and usable bytes of the training device: free GPU memory, else available RAM."""
    gpu = cuda_gpu()
    return (gpu[0], gpu[1]) if gpu else ("machine's RAM", available_ram_bytes())


def _model_shape(base: str | Path | dict) -> dict:
    if isinstance(base, dict):
        return base
    path = Path(str(base)).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return read_json(path / "config.json")
    entry = find(str(base))
    config = config_of(entry) if entry is not None else None
    if config is None:
        raise UserError(f"cannot estimate memory for {base}: give a model folder with config.json or a catalog name")
    return config


def estimate_memory(base: str | Path | dict, *, load_in_4bit: bool, lora_r: int = 64, seq_len: int = 512,
                    batch_size: int = 1, vocab_size: int | None = None, modules_to_save: Sequence[str] = (),
                    target_modules: Sequence[str] = LORA_TARGETS, gradient_checkpointing: bool = True,
                    bytes_per_value: int = 2, device_bytes: int | None = None,
                    device_name: str | None = None) -> MemoryEstimate:
    """Estimate peak training memory from the model's config.json.

    Weights at 16-bit (or NF4 with double quantization for the linear layers; embeddings and lm_head stay
    16-bit and are upcast to fp32 by k-bit preparation), LoRA (and modules_to_save) parameters in fp32 with
    their gradients and two Adam moments, activations with gradient checkpointing (one hidden state per layer
    plus one layer's recompute and the fp32 logits), and a fixed runtime overhead.

    Args:
        base: model folder, catalog name or config dict.
        load_in_4bit: QLoRA.
        lora_r, seq_len, batch_size: run settings.
        vocab_size: rows after resizing to the tokenizer (default: the config's).
        modules_to_save: modules trained in full (``embed_tokens``, ``lm_head``).
        target_modules: LoRA targets.
        gradient_checkpointing: without it every layer keeps its activations.
        bytes_per_value: 2 for fp16/bf16, 4 for fp32 (CPU).
        device_bytes, device_name: the device to check against; ``None`` detects it (free GPU memory or RAM).
    """
    cfg = _model_shape(base)
    h, f, n = int(cfg["hidden_size"]), int(cfg["intermediate_size"]), int(cfg["num_hidden_layers"])
    heads = int(cfg.get("num_attention_heads") or h // 128)
    kv = int(cfg.get("num_key_value_heads") or heads) * (h // heads)
    vocab = int(vocab_size or cfg["vocab_size"])
    shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
              "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h)}
    linear = n * sum(i * o for i, o in shapes.values())
    emb = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    params = linear + emb + n * 2 * h + h
    if load_in_4bit:
        weights = int(linear * (0.5 + 1 / 64)) + emb * 4 + (n * 2 * h + h) * 4
    else:
        weights = params * bytes_per_value
    lora = n * sum(lora_r * (shapes[t][0] + shapes[t][1]) for t in target_modules if t in shapes)
    full = vocab * h * sum(1 for m in modules_to_save if m in EMBEDDINGS)
    trainable = lora + full
    s, b, bv = seq_len, batch_size, bytes_per_value
    per_layer = s * b * (34 * h + 5 * heads * s) * bv // 2 + 10 * s * b * h * bv
    acts = (n * s * b * h * bv + per_layer) if gradient_checkpointing else n * per_layer
    acts += s * b * vocab * (bv + 8)  # logits, their fp32 copy and its gradient
    if device_bytes is None and device_name is None:
        device_name, device_bytes = detect_device()
    overhead = (1 << 30) if bytes_per_value == 2 else (1 << 29)
    return MemoryEstimate(params=params, weights_bytes=int(weights), trainable_params=trainable,
                          trainable_bytes=16 * trainable, activation_bytes=int(acts), overhead_bytes=overhead,
                          load_in_4bit=load_in_4bit, device_name=device_name or "device", device_bytes=device_bytes)
