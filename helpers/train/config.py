"""The settings of a fine-tuning run: :class:`FinetuneConfig`, with the releases' recipes as defaults."""
from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from ..hub import looks_like_hub_id
from ..tokens import get_template
from ..util import UserError
from ..util.params import param
from ..checkpoint import LORA_TARGETS

DEFAULT_LR = {"sft": 1e-4, "pt": 2e-4}
DEFAULT_WARMUP = {"sft": 0.03, "pt": 0.05}
RESUME_CHOICES = ("auto", "yes", "no")
DEEPSPEED_PRESETS = ("zero2", "zero3")
DATA_SUFFIXES = (".json", ".jsonl", ".txt", ".parquet", ".csv")


def _names(value: Any) -> tuple[str, ...] | None:
    """A comma-separated string or a sequence of module names as a tuple (None stays None; ``none`` is none)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v and v.lower() != "none"]
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
    """Settings of one fine-tuning run (defaults: the releases' recipes); ``python -m helpers finetune``'s flags are
    made from these declarations, and :func:`~helpers.util.params.to_arguments` gives a config back as flags (what a
    launch script passes to every process)."""

    base: str = param(MISSING, "base model folder or hub id (e.g. hfl/chinese-alpaca-2-7b)")
    data: str = param(MISSING, "SFT: Alpaca JSON/JSONL file or folder; PT: .txt file or folder; or a hub data set id "
                      "(org/name: Alpaca columns for SFT, a text column for PT)")
    out: str = param(MISSING, "output folder (adapter, tokenizer, loss.csv, loss.png, checkpoints/)")
    mode: str = param("sft", "instruction tuning (sft) or continued pre-training (pt)", choices=("sft", "pt"))
    template: str | None = param(None, "prompt template for SFT (default: the model's own)")
    tokenizer: str | None = param(None, "tokenizer folder when not the base's (an expanded vocabulary)")
    max_steps: int | None = param(None, "optimizer steps (default: --epochs over the data; needed with --streaming)",
                                  parse=int)
    epochs: float = param(1.0, "passes over the data when --max-steps is not given", parse=float)
    lr: float | None = param(None, "learning rate (default 1e-4 SFT, 2e-4 PT, as released)", parse=float)
    lora_r: int = param(64, "LoRA rank", parse=int)
    lora_alpha: float = param(128.0, "LoRA scaling numerator", parse=float)
    lora_dropout: float = param(0.05, "LoRA dropout", parse=float)
    target_modules: tuple[str, ...] = param(LORA_TARGETS, "comma-separated projections that get LoRA", text=",".join)
    modules_to_save: tuple[str, ...] | None = param(
        None, "comma-separated fully trained modules ('none' for none; default: embed_tokens,lm_head only when the "
        "tokenizer is larger than the model's vocabulary)", text=lambda v: ",".join(v) or "none")
    batch_size: int = param(1, "per process (global batch: x grad-accum x processes; the loss is averaged over all "
                            "its tokens)", parse=int)
    grad_accum: int = param(8, "gradient accumulation steps", parse=int)
    max_seq_length: int = param(512, "SFT truncation length", parse=int)
    block_size: int = param(512, "PT block length", parse=int)
    warmup_ratio: float | None = param(None, "share of steps with linear warmup (default 0.03 SFT, 0.05 PT)",
                                       parse=float)
    load_in_4bit: bool = param(False, "QLoRA: NF4 base weights, double quant (CUDA GPU)", flag="--4bit")
    gradient_checkpointing: bool | None = param(None, "gradient checkpointing (default: on with a GPU, off on CPU)")
    precision: str | None = param(None, "default: bf16/fp16 on GPU, fp32 on CPU", choices=("bf16", "fp16", "fp32"))
    seed: int = param(42, "random seed", parse=int)
    save_steps: int = param(100, "steps between checkpoints", parse=int)
    save_total_limit: int = param(2, "checkpoints kept", cli=False)
    logging_steps: int = param(1, "steps between logged losses", cli=False)
    shuffle: bool = param(True, "data in file order when off (with --lora-dropout 0 the run is deterministic, and N "
                          "processes give the adapter one process gives with an N times larger batch)")
    resume: str = param("auto", "auto: resume the checkpoints of the same job (data, base, LoRA settings, steps...), "
                        "start other jobs fresh, saying what changed; yes (also bare --resume): resume or refuse; "
                        "no: start fresh, removing the old checkpoints and outputs", choices=RESUME_CHOICES,
                        nargs="?", const="yes")
    deepspeed: str | None = param(None, "zero2, zero3 or a DeepSpeed JSON config (under torchrun)")
    streaming: bool = param(False, "stream --data (a hub id or local shards larger than the disk); needs --max-steps")
    text_column: str = param("text", "PT: the text column of a data set or Parquet/JSON shards")
    data_workers: int = param(0, "data loader processes tokenizing a stream", parse=int)
    embedding_stage_steps: int = param(0, "two-stage recipe for a new vocabulary: the first N steps train only the "
                                       "new embedding rows, then LoRA + embed_tokens/lm_head", parse=int)
    check_memory: bool = param(True, "refuse before loading when the memory estimate exceeds the device",
                               flag="--no-memory-check")
    live_plot: bool | None = param(None, "live loss plot (default: in a notebook; log lines elsewhere)", cli=False)
    plot_every: int = param(10, "steps between live plot updates / log lines", cli=False)
    max_samples: int | None = param(None, "use only the first N records (SFT) or blocks (PT)", parse=int)
    extra: dict = param({}, "more transformers.TrainingArguments keywords (e.g. optim=paged_adamw_8bit)", cli=False,
                        compare=False)
    job_key: str | None = param(None, "the id a notebook gave this job (jobs.planned_job_key), recorded in "
                                "finetune.json so a later plan recognises the finished run; not part of what is "
                                "trained", cli=False)

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
