"""The settings of a fine-tuning run: :class:`FinetuneConfig`, with the releases' recipes as defaults."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tokens import get_template
from ..util import UserError
from ..checkpoint import LORA_TARGETS

DEFAULT_LR = {"sft": 1e-4, "pt": 2e-4}
DEFAULT_WARMUP = {"sft": 0.03, "pt": 0.05}


def _names(value: Any) -> tuple[str, ...] | None:
    """A comma-separated string or a sequence of module names as a tuple (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of one fine-tuning run (defaults: the releases' recipes).

    Attributes:
        base: base model folder or hub id (resolved with :func:`helpers.env.resolve_model`).
        data: SFT: an Alpaca JSON/JSONL file or a folder of ``*.json``; PT: a ``.txt`` file or folder of them.
        out: output folder (adapter, tokenizer, loss.csv, loss.png, checkpoints/).
        mode: ``sft`` or ``pt``.
        template: prompt template id for SFT; ``None`` picks the model's own (catalog, tokenizer files).
        tokenizer: tokenizer folder when it is not the base's (e.g. an expanded Chinese vocabulary).
        max_steps: optimizer steps; ``None`` trains ``epochs`` epochs.
        epochs: passes over the data when ``max_steps`` is ``None``.
        lr: learning rate; ``None``: 1e-4 (SFT) or 2e-4 (PT) as released.
        lora_r, lora_alpha, lora_dropout: LoRA rank, scaling numerator and dropout.
        target_modules: projections that get LoRA.
        modules_to_save: fully trained modules; ``None``: ``embed_tokens,lm_head`` only when the tokenizer is
            larger than the model's vocabulary.
        batch_size, grad_accum: per-step batch and gradient accumulation (effective batch = product).
        max_seq_length: SFT truncation length; block_size: PT block length.
        warmup_ratio: share of steps with linear warmup; ``None``: 0.03 (SFT) / 0.05 (PT).
        load_in_4bit: QLoRA (NF4, double quant); needs a CUDA GPU.
        gradient_checkpointing: ``None``: on with a GPU, off on CPU.
        precision: ``bf16``, ``fp16`` or ``fp32``; ``None``: bf16/fp16 on GPU, fp32 on CPU.
        seed, save_steps, save_total_limit, logging_steps: trainer settings.
        resume: ``None``: resume when OUT/checkpoints has a checkpoint; ``True``: require one; ``False``: restart.
        check_memory: refuse before loading when the estimate exceeds the device memory.
        live_plot: ``None``: live loss plot in a notebook, log lines elsewhere.
        plot_every: steps between live plot updates / log lines.
        max_samples: use only the first N records (SFT) or blocks (PT).
        extra: more ``transformers.TrainingArguments`` keywords (e.g. ``{"optim": "paged_adamw_8bit"}``).
    """

    base: str
    data: str
    out: str
    mode: str = "sft"
    template: str | None = None
    tokenizer: str | None = None
    max_steps: int | None = None
    epochs: float = 1.0
    lr: float | None = None
    lora_r: int = 64
    lora_alpha: float = 128.0
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = LORA_TARGETS
    modules_to_save: tuple[str, ...] | None = None
    batch_size: int = 1
    grad_accum: int = 8
    max_seq_length: int = 512
    block_size: int = 512
    warmup_ratio: float | None = None
    load_in_4bit: bool = False
    gradient_checkpointing: bool | None = None
    precision: str | None = None
    seed: int = 42
    save_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 1
    resume: bool | None = None
    check_memory: bool = True
    live_plot: bool | None = None
    plot_every: int = 10
    max_samples: int | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        def bad(msg: str) -> UserError:
            return UserError(f"finetune: {msg}")

        for name in ("base", "data", "out"):
            if not str(getattr(self, name) or "").strip():
                raise bad(f"--{name} is required")
            object.__setattr__(self, name, str(getattr(self, name)))
        if self.mode not in ("sft", "pt"):
            raise bad(f"mode {self.mode!r} is not 'sft' (instruction JSON) or 'pt' (plain text)")
        if not Path(self.data).exists():
            raise bad(f"data {self.data} not found; give an Alpaca JSON file (sft) or a .txt file/folder (pt)")
        object.__setattr__(self, "target_modules", _names(self.target_modules))
        object.__setattr__(self, "modules_to_save", _names(self.modules_to_save))
        if not self.target_modules:
            raise bad("target_modules is empty; LoRA needs at least one projection such as q_proj")
        if self.template is not None:
            get_template(self.template)
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps <= 0):
            raise bad(f"max_steps must be a positive integer, not {self.max_steps!r}")
        checks = [("epochs", self.epochs > 0), ("lora_r", self.lora_r >= 1), ("lora_alpha", self.lora_alpha > 0),
                  ("lora_dropout", 0 <= self.lora_dropout < 1), ("batch_size", self.batch_size >= 1),
                  ("grad_accum", self.grad_accum >= 1), ("max_seq_length", self.max_seq_length >= 8),
                  ("block_size", self.block_size >= 8), ("save_steps", self.save_steps >= 1),
                  ("save_total_limit", self.save_total_limit >= 1), ("logging_steps", self.logging_steps >= 1),
                  ("plot_every", self.plot_every >= 1), ("lr", self.lr is None or 0 < self.lr < 1),
                  ("warmup_ratio", self.warmup_ratio is None or 0 <= self.warmup_ratio < 1),
                  ("max_samples", self.max_samples is None or self.max_samples >= 1)]
        for name, ok in checks:
            if not ok:
                raise bad(f"{name} = {getattr(self, name)!r} is out of range")
        if self.precision not in (None, "bf16", "fp16", "fp32"):
            raise bad(f"precision {self.precision!r}: use bf16, fp16 or fp32")
        if self.load_in_4bit and self.precision == "fp32":
            raise bad("4-bit (QLoRA) computes in bf16 or fp16; drop --precision fp32")

    @property
    def learning_rate(self) -> float:
        """The learning rate in use (the release default for the mode when ``lr`` is None)."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.mode]

    @property
    def warmup(self) -> float:
        """The warmup ratio in use."""
        return self.warmup_ratio if self.warmup_ratio is not None else DEFAULT_WARMUP[self.mode]
