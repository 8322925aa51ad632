"""The settings of a fine-tuning run: :class:`FinetuneConfig`, with the releases' recipes as defaults."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..hub import looks_like_hub_id
from ..tokens import get_template
from ..util import UserError
from ..checkpoint import LORA_TARGETS

DEFAULT_LR = {"sft": 1e-4, "pt": 2e-4}
DEFAULT_WARMUP = {"sft": 0.03, "pt": 0.05}
RESUME_CHOICES = ("auto", "yes", "no")
DEEPSPEED_PRESETS = ("zero2", "zero3")
DATA_SUFFIXES = (".json", ".jsonl", ".txt", ".parquet", ".csv")


def _names(value: Any) -> tuple[str, ...] | None:
    """A comma-separated string or a sequence of module names as a tuple (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    return tuple(str(v) for v in value)


def _resume(value: Any) -> str:
    """``auto`` / ``yes`` / ``no`` (``None``, ``True`` and ``False`` as the earlier boolean setting meant them)."""
    value = {None: "auto", True: "yes", False: "no"}.get(value, value) if not isinstance(value, str) else value
    if value not in RESUME_CHOICES:
        raise UserError(f"finetune: resume {value!r}: use auto (resume only the same job), yes or no")
    return value


def is_hub_dataset(data: str) -> bool:
    """True when ``data`` names a hub data set (``org/name``) rather than a local file or folder."""
    return not Path(data).exists() and looks_like_hub_id(data) and not data.lower().endswith(DATA_SUFFIXES)


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of one fine-tuning run (defaults: the releases' recipes).

    Attributes:
        base: base model folder or hub id (resolved with :func:`helpers.hub.resolve_model`).
        data: SFT: an Alpaca JSON/JSONL file or a folder of ``*.json``; PT: a ``.txt`` file or folder of them;
            or a hub data set id (``org/name``: Alpaca columns for SFT, a ``text`` column for PT), read with
            ``datasets``.
        out: output folder (adapter, tokenizer, loss.csv, loss.png, checkpoints/).
        mode: ``sft`` or ``pt``.
        template: prompt template id for SFT; ``None`` picks the model's own (catalog, tokenizer files).
        tokenizer: tokenizer folder when it is not the base's (e.g. an expanded Chinese vocabulary).
        max_steps: optimizer steps; ``None`` trains ``epochs`` epochs (required when ``streaming``).
        epochs: passes over the data when ``max_steps`` is ``None``.
        lr: learning rate; ``None``: 1e-4 (SFT) or 2e-4 (PT) as released.
        lora_r, lora_alpha, lora_dropout: LoRA rank, scaling numerator and dropout.
        target_modules: projections that get LoRA.
        modules_to_save: fully trained modules; ``None``: ``embed_tokens,lm_head`` only when the tokenizer is
            larger than the model's vocabulary.
        batch_size, grad_accum: per-process batch and gradient accumulation; the global batch is their product
            times the number of processes, and the loss is averaged over all its tokens.
        max_seq_length: SFT truncation length; block_size: PT block length.
        warmup_ratio: share of steps with linear warmup; ``None``: 0.03 (SFT) / 0.05 (PT).
        load_in_4bit: QLoRA (NF4, double quant); needs a CUDA GPU.
        gradient_checkpointing: ``None``: on with a GPU, off on CPU.
        precision: ``bf16``, ``fp16`` or ``fp32``; ``None``: bf16/fp16 on GPU, fp32 on CPU.
        seed, save_steps, save_total_limit, logging_steps: trainer settings.
        shuffle: ``False`` keeps the data in file order (with ``lora_dropout=0`` the run is deterministic, and N
            processes give the adapter one process gives with an N times larger batch).
        resume: ``auto``: resume from OUT/checkpoints only when they belong to the same job (data, base, LoRA
            settings, steps...), else start fresh, saying what changed; ``yes``: resume, refusing when there is
            no checkpoint or the job differs; ``no``: start fresh, removing the old checkpoints and outputs.
        deepspeed: ``zero2``, ``zero3`` or a DeepSpeed JSON config (under torchrun / accelerate launch).
        streaming: read ``data`` with ``datasets`` streaming (a corpus larger than the disk); needs ``max_steps``.
        text_column: the column PT reads from a hub data set or Parquet/JSON shards.
        data_workers: data loader processes that tokenize on the fly (streaming).
        embedding_stage_steps: the authors' two-stage recipe for a new vocabulary: the first N steps train only
            the new rows of embed_tokens/lm_head, then LoRA and the whole embed_tokens/lm_head (0: off).
        check_memory: refuse before loading when the estimate exceeds the device memory.
        live_plot: ``None``: live loss plot in a notebook, log lines elsewhere.
        plot_every: steps between live plot updates / log lines.
        max_samples: use only the first N records (SFT) or blocks (PT).
        extra: more ``transformers.TrainingArguments`` keywords (e.g. ``{"optim": "paged_adamw_8bit"}``).
        job_key: the id a notebook gave this job (:func:`.jobs.planned_job_key`), recorded in ``finetune.json`` so a
            later plan recognises the finished run without loading anything; not part of what is trained.
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
    shuffle: bool = True
    resume: str = "auto"
    deepspeed: str | None = None
    streaming: bool = False
    text_column: str = "text"
    data_workers: int = 0
    embedding_stage_steps: int = 0
    check_memory: bool = True
    live_plot: bool | None = None
    plot_every: int = 10
    max_samples: int | None = None
    extra: dict = field(default_factory=dict, compare=False)
    job_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("base", "data", "out"):
            if not str(getattr(self, name) or "").strip():
                raise _bad(f"--{name} is required")
            object.__setattr__(self, name, str(getattr(self, name)))
        object.__setattr__(self, "target_modules", _names(self.target_modules))
        object.__setattr__(self, "modules_to_save", _names(self.modules_to_save))
        object.__setattr__(self, "resume", _resume(self.resume))
        if self.mode not in ("sft", "pt"):
            raise _bad(f"mode {self.mode!r} is not 'sft' (instruction JSON) or 'pt' (plain text)")
        if not Path(self.data).exists() and not is_hub_dataset(self.data):
            raise _bad(f"data {self.data} not found; give an Alpaca JSON file (sft), a .txt file/folder (pt) or a "
                       "hub data set id (org/name)")
        if not self.target_modules:
            raise _bad("target_modules is empty; LoRA needs at least one projection such as q_proj")
        if self.template is not None:
            get_template(self.template)
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps <= 0):
            raise _bad(f"max_steps must be a positive integer, not {self.max_steps!r}")
        _check_ranges(self)
        _check_combinations(self)

    @property
    def learning_rate(self) -> float:
        """The learning rate in use (the release default for the mode when ``lr`` is None)."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.mode]

    @property
    def warmup(self) -> float:
        """The warmup ratio in use."""
        return self.warmup_ratio if self.warmup_ratio is not None else DEFAULT_WARMUP[self.mode]


def _bad(msg: str) -> UserError:
    return UserError(f"finetune: {msg}")


def _check_ranges(c: FinetuneConfig) -> None:
    checks = [("epochs", c.epochs > 0), ("lora_r", c.lora_r >= 1), ("lora_alpha", c.lora_alpha > 0),
              ("lora_dropout", 0 <= c.lora_dropout < 1), ("batch_size", c.batch_size >= 1),
              ("grad_accum", c.grad_accum >= 1), ("max_seq_length", c.max_seq_length >= 8),
              ("block_size", c.block_size >= 8), ("save_steps", c.save_steps >= 1),
              ("save_total_limit", c.save_total_limit >= 1), ("logging_steps", c.logging_steps >= 1),
              ("plot_every", c.plot_every >= 1), ("lr", c.lr is None or 0 < c.lr < 1),
              ("warmup_ratio", c.warmup_ratio is None or 0 <= c.warmup_ratio < 1),
              ("max_samples", c.max_samples is None or c.max_samples >= 1), ("data_workers", c.data_workers >= 0),
              ("embedding_stage_steps", c.embedding_stage_steps >= 0)]
    for name, ok in checks:
        if not ok:
            raise _bad(f"{name} = {getattr(c, name)!r} is out of range")


def _check_combinations(c: FinetuneConfig) -> None:
    if c.precision not in (None, "bf16", "fp16", "fp32"):
        raise _bad(f"precision {c.precision!r}: use bf16, fp16 or fp32")
    if c.load_in_4bit and c.precision == "fp32":
        raise _bad("4-bit (QLoRA) computes in bf16 or fp16; drop --precision fp32")
    if c.streaming and c.max_steps is None:
        raise _bad("a streamed data set has no known length, so the number of steps cannot follow from --epochs: "
                   "give --max-steps")
    if c.deepspeed is not None and c.deepspeed not in DEEPSPEED_PRESETS and not Path(c.deepspeed).is_file():
        raise _bad(f"--deepspeed {c.deepspeed}: give zero2, zero3 or a DeepSpeed JSON config file")
    if c.embedding_stage_steps and c.max_steps is not None and c.embedding_stage_steps >= c.max_steps:
        raise _bad(f"embedding_stage_steps ({c.embedding_stage_steps}) must be below max_steps ({c.max_steps}): "
                   "stage 2 (LoRA and the embeddings) needs steps too")
