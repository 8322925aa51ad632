"""Peak-memory estimate of a LoRA/QLoRA run, checked against the training device before loading.

:func:`estimate_memory` works from a model folder's ``config.json``, a catalog name (the released shapes,
so it can run before downloading) or a config dict; :func:`detect_device` gives the free GPU memory or
the available RAM. On N GPUs the estimate is per GPU: plain DDP keeps everything on every GPU (plus its
gradient buckets); DeepSpeed ZeRO-1 partitions the Adam moments, ZeRO-2 the gradients too, ZeRO-3 (and FSDP)
the weights too, keeping one layer's gathered weights; :func:`memory_per_gpu` estimates a run's settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..catalog import config_of, find
from ..checkpoint import LORA_TARGETS
from ..device import cuda_gpu
from ..env import available_ram_bytes
from ..util import UserError, human_bytes, read_json

if TYPE_CHECKING:
    from .config import FinetuneConfig

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
    zero_stage: int = 0
    num_gpus: int = 1
    processes: int = 1

    @property
    def total_bytes(self) -> int:
        """Peak bytes of one process (one GPU)."""
        return self.weights_bytes + self.trainable_bytes + self.activation_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        """Whether the processes that share the device fit in it."""
        return self.device_bytes is None or self.total_bytes * self.processes <= self.device_bytes

    def summary(self) -> str:
        """One line: the estimate and the device."""
        room = human_bytes(self.device_bytes) if self.device_bytes is not None else "unknown memory"
        where = ""
        if self.num_gpus > 1 or self.zero_stage:
            how = f"ZeRO-{self.zero_stage}" if self.zero_stage else "DDP"
            where = f" per GPU ({how} on {self.num_gpus} GPUs)"
        elif self.processes > 1:
            where = f" per process, {self.processes} processes"
        return (f"memory estimate: about {human_bytes(self.total_bytes)}{where} (weights "
                f"{human_bytes(self.weights_bytes)}, LoRA + Adam {human_bytes(self.trainable_bytes)}, activations "
                f"{human_bytes(self.activation_bytes)}); {self.device_name} has {room}")

    def __str__(self) -> str:
        return self.summary()

    def check(self) -> None:
        """Raise :class:`UserError` when the run cannot fit the device."""
        if self.fits:
            return
        hint = ("use --4bit (QLoRA)" if not self.load_in_4bit else
                "use a smaller model, a lower --lora-r, --max-seq-length/--block-size or --batch-size")
        if self.processes > 1:
            hint = f"start fewer processes, or {hint}"
        need = human_bytes(self.total_bytes * self.processes)
        raise UserError(f"fine-tuning needs about {need}, the {self.device_name} has "
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


def _layout(cfg: dict, vocab_size: int | None) -> tuple[dict, int, int, int]:
    """``(linear shapes of one layer, layers, embedding parameters, norm parameters)`` of a LLaMA config."""
    h, f, n = int(cfg["hidden_size"]), int(cfg["intermediate_size"]), int(cfg["num_hidden_layers"])
    heads = int(cfg.get("num_attention_heads") or h // 128)
    kv = int(cfg.get("num_key_value_heads") or heads) * (h // heads)
    vocab = int(vocab_size or cfg["vocab_size"])
    shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
              "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h)}
    return shapes, n, vocab * h * (1 if cfg.get("tie_word_embeddings") else 2), n * 2 * h + h


def _activations(cfg: dict, *, seq_len: int, batch_size: int, vocab: int, bv: int, checkpointing: bool) -> int:
    """Activation bytes: one hidden state per layer plus one layer's recompute with checkpointing (every layer's
    without), and the logits with their fp32 copy and gradient."""
    h, n = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
    heads = int(cfg.get("num_attention_heads") or h // 128)
    s, b = seq_len, batch_size
    per_layer = s * b * (34 * h + 5 * heads * s) * bv // 2 + 10 * s * b * h * bv
    acts = (n * s * b * h * bv + per_layer) if checkpointing else n * per_layer
    return acts + s * b * vocab * (bv + 8)


def _trainable_bytes(trainable: int, *, zero_stage: int, num_gpus: int) -> int:
    """fp32 weights (4 bytes), gradients (4) and Adam moments (8) of the trained parameters, per GPU: ZeRO-1
    partitions the moments, ZeRO-2 the gradients too, ZeRO-3 the weights too; plain DDP on several GPUs keeps
    a second copy of the gradients in its buckets, ZeRO its 1e8-element communication buckets."""
    def part(nbytes: int, from_stage: int) -> int:
        return nbytes // num_gpus if zero_stage >= from_stage else nbytes
    total = part(4 * trainable, 3) + part(4 * trainable, 2) + part(8 * trainable, 1)
    if num_gpus > 1:
        total += 4 * trainable if zero_stage == 0 else 2 * 4 * min(trainable, 100_000_000)
    return total


def estimate_memory(base: str | Path | dict, *, load_in_4bit: bool, lora_r: int = 64, seq_len: int = 512,
                    batch_size: int = 1, vocab_size: int | None = None, modules_to_save: Sequence[str] = (),
                    target_modules: Sequence[str] = LORA_TARGETS, gradient_checkpointing: bool = True,
                    bytes_per_value: int = 2, device_bytes: int | None = None, device_name: str | None = None,
                    zero_stage: int = 0, num_gpus: int = 1, processes: int = 1) -> MemoryEstimate:
    """Estimate peak training memory (of one GPU, or one process) from the model's config.json.

    Weights at 16-bit (or NF4 with double quantization for the linear layers; embeddings and lm_head stay
    16-bit and are upcast to fp32 by k-bit preparation), LoRA (and modules_to_save) parameters in fp32 with
    their gradients and two Adam moments, activations with gradient checkpointing (one hidden state per layer
    plus one layer's recompute and the fp32 logits), and a fixed runtime overhead.

    Args:
        base: model folder, catalog name or config dict.
        load_in_4bit: QLoRA.
        lora_r, seq_len, batch_size: run settings (``batch_size`` per GPU).
        vocab_size: rows after resizing to the tokenizer (default: the config's).
        modules_to_save: modules trained in full (``embed_tokens``, ``lm_head``).
        target_modules: LoRA targets.
        gradient_checkpointing: without it every layer keeps its activations.
        bytes_per_value: 2 for fp16/bf16, 4 for fp32 (CPU).
        device_bytes, device_name: the device to check against; ``None`` detects it (free GPU memory or RAM).
        zero_stage: DeepSpeed ZeRO stage (0: plain DDP; 3 also stands for FSDP's full sharding).
        num_gpus: GPUs the run is spread over.
        processes: processes sharing the device checked against (CPU processes share the machine's RAM).
    """
    cfg = _model_shape(base)
    shapes, n, emb, norms = _layout(cfg, vocab_size)
    vocab = int(vocab_size or cfg["vocab_size"])
    linear = n * sum(i * o for i, o in shapes.values())
    params = linear + emb + norms
    weights = int(linear * (0.5 + 1 / 64)) + (emb + norms) * 4 if load_in_4bit else params * bytes_per_value
    if zero_stage >= 3 and num_gpus > 1:  # partitioned; one layer gathered at a time (and one prefetched)
        weights = weights // num_gpus + 2 * (linear // n) * bytes_per_value
    lora = n * sum(lora_r * (shapes[t][0] + shapes[t][1]) for t in target_modules if t in shapes)
    trainable = lora + vocab * int(cfg["hidden_size"]) * sum(1 for m in modules_to_save if m in EMBEDDINGS)
    acts = _activations(cfg, seq_len=seq_len, batch_size=batch_size, vocab=vocab, bv=bytes_per_value,
                        checkpointing=gradient_checkpointing)
    if device_bytes is None and device_name is None:
        device_name, device_bytes = detect_device()
    return MemoryEstimate(params=params, weights_bytes=int(weights), trainable_params=trainable,
                          trainable_bytes=_trainable_bytes(trainable, zero_stage=zero_stage, num_gpus=num_gpus),
                          activation_bytes=int(acts), overhead_bytes=(1 << 30) if bytes_per_value == 2 else (1 << 29),
                          load_in_4bit=load_in_4bit, device_name=device_name or "device", device_bytes=device_bytes,
                          zero_stage=zero_stage, num_gpus=num_gpus, processes=processes)


def memory_per_gpu(config: FinetuneConfig, *, nproc: int, zero_stage: int = 0, fsdp: bool = False,
                   gpu_bytes: int | None = None, gpu_name: str = "GPU") -> MemoryEstimate | None:
    """The per-GPU estimate of ``config`` on ``nproc`` GPUs (bf16, gradient checkpointing, as on a GPU machine);
    ``None`` when the base's shape cannot be known here (a hub id outside the catalog, not downloaded)."""
    try:
        cfg = _model_shape(config.base)
    except UserError:
        return None
    vocab = None
    if config.tokenizer:
        from ..tokens import tokenizer_vocab_size

        vocab = tokenizer_vocab_size(config.tokenizer) if Path(config.tokenizer).is_dir() else None
    resized = vocab is not None and vocab > int(cfg["vocab_size"])
    saved = config.modules_to_save if config.modules_to_save is not None else (EMBEDDINGS if resized else ())
    seq = config.block_size if config.mode == "pt" else config.max_seq_length
    return estimate_memory(cfg, load_in_4bit=config.load_in_4bit, lora_r=config.lora_r, seq_len=seq,
                           batch_size=config.batch_size, vocab_size=vocab if resized else None,
                           modules_to_save=saved, target_modules=config.target_modules,
                           gradient_checkpointing=config.gradient_checkpointing is not False,
                           device_bytes=gpu_bytes, device_name=gpu_name, zero_stage=3 if fsdp else zero_stage,
                           num_gpus=nproc)
