"""LoRA / QLoRA fine-tuning of the Chinese LLaMA/Alpaca models, with the releases' recipes.

Two modes, as the releases trained:

- ``sft``: Alpaca-format JSON (``[{"instruction", "input", "output"}]``; ``input`` is appended to the
  instruction after a newline). The prompt is the model's own template; the labels are -100 over the
  prompt and the target is ``output`` followed by the end-of-turn token (``</s>``, or ``<|eot_id|>``
  for Llama-3), truncated to ``max_seq_length``.
- ``pt``: plain text files, one document per line, tokenized, concatenated and cut into ``block_size``
  blocks (continued pre-training).

LoRA goes on q/k/v/o/gate/up/down (r 64, alpha 128, dropout 0.05, cosine schedule, batch 1 x 8
accumulation); ``embed_tokens``/``lm_head`` are trained in full (``modules_to_save``) when the tokenizer
is larger than the model's vocabulary. ``load_in_4bit`` is QLoRA (NF4, double quantization, gradient
checkpointing). The output folder is what ``python -m helpers merge --lora`` reads: adapter_config.json,
adapter_model.safetensors and the tokenizer files, plus ``loss.csv``, ``loss.png`` and ``finetune.json``.
Trainer checkpoints go to ``OUT/checkpoints``; rerunning the same command resumes from the last one.

``python -m helpers finetune --base BASE --data FILE --out DIR [--mode sft|pt] [--4bit] ...``

Parts (their public names are re-exported here): data in :mod:`helpers.sft_data`, the memory estimate in
:mod:`helpers.train_memory`, loss.csv/png and callbacks in :mod:`helpers.train_callbacks`, trainer plumbing
in :mod:`helpers.train_setup`, before/after answers in :mod:`helpers.train_compare`.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .sft_data import (IGNORE, DataCollator, build_dataset, eot_id, group_texts,  # noqa: F401 - re-exported
                       load_sft_records, pad_id_of, sample_data, tokenize_sft)
from .train_callbacks import (_callbacks, in_notebook, loss_figure, read_loss_csv,  # noqa: F401 - re-exported
                              save_loss_plot, write_loss_csv)
from .train_compare import Comparison, compare_answers  # noqa: F401 - re-exported
from .train_memory import EMBEDDINGS, TARGETS, MemoryEstimate, detect_device, estimate_memory  # noqa: F401
from .train_setup import (TOKENIZER_FILES, _copy_tokenizer, _dtype_key, _load_base,  # noqa: F401 - re-exported
                          _precision, _prepare_out, _resolve_template, _save_adapter, _version_kwargs)
from .util import UserError, read_json, write_json

DEFAULT_LR = {"sft": 1e-4, "pt": 2e-4}
DEFAULT_WARMUP = {"sft": 0.03, "pt": 0.05}


def _names(value: Any) -> tuple[str, ...] | None:
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
    target_modules: tuple[str, ...] = TARGETS
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
            from .templates import get_template

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


@dataclass(frozen=True, repr=False)
class FinetuneResult:
    """What a run produced.

    Attributes:
        out: the adapter folder (merge it with ``python -m helpers merge --lora OUT``).
        global_step: optimizer steps done in total (including those before a resume).
        losses: ``(step, loss)`` of the whole run, as in ``loss.csv``.
        resumed_from: the checkpoint the run continued from, if any.
        template: the SFT prompt template (``None`` for PT).
        modules_to_save: modules trained in full.
        trainable_params: trainable parameter count.
        train_seconds, steps_per_second, tokens_per_second: speed of this invocation.
        memory: the memory estimate checked before loading.
    """

    out: Path
    global_step: int
    losses: list[tuple[int, float]]
    resumed_from: str | None
    template: str | None
    modules_to_save: tuple[str, ...]
    trainable_params: int
    train_seconds: float
    steps_per_second: float
    tokens_per_second: float
    memory: "MemoryEstimate | None" = None

    def __repr__(self) -> str:
        loss = f", loss {self.first_loss:.4f} -> {self.last_loss:.4f}" if self.losses else ""
        resumed = f", resumed from {Path(self.resumed_from).name}" if self.resumed_from else ""
        return (f"FinetuneResult(out={str(self.out)!r}, steps={self.global_step}{loss}{resumed}, "
                f"{self.steps_per_second:.2f} steps/s, {self.tokens_per_second:.0f} tokens/s)")

    @property
    def adapter_dir(self) -> Path:
        """The folder to pass to the merge as ``--lora`` (same as ``out``)."""
        return self.out

    @property
    def first_loss(self) -> float | None:
        return self.losses[0][1] if self.losses else None

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None


def finetune(config: FinetuneConfig, *, callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Train a LoRA (or QLoRA) adapter and write it where ``python -m helpers merge --lora`` reads it.

    Args:
        config: the run settings.
        callbacks: extra ``transformers.TrainerCallback`` objects.

    Raises:
        UserError: bad data, a device too small for the settings (see :func:`estimate_memory`), 4-bit without GPU.
    """
    import torch

    from . import load_tokenizer
    from .env import resolve_model
    from .templates import get_template

    out = Path(config.out)
    base_dir = resolve_model(config.base, what="base model")
    tok_dir = resolve_model(config.tokenizer, what="tokenizer") if config.tokenizer else base_dir
    if not (base_dir / "config.json").is_file():
        raise UserError(f"{base_dir} has no config.json; give a Hugging Face model folder as --base")
    model_cfg = read_json(base_dir / "config.json")
    cuda = torch.cuda.is_available()
    if config.load_in_4bit and not cuda:
        raise UserError("--4bit (QLoRA) needs a CUDA GPU (bitsandbytes); on CPU train without --4bit")
    precision = _precision(config, cuda)
    tokenizer = load_tokenizer(tok_dir)
    vocab = len(tokenizer)
    resize = vocab > int(model_cfg["vocab_size"])
    modules_to_save = config.modules_to_save if config.modules_to_save is not None else (EMBEDDINGS if resize else ())
    grad_ckpt = config.gradient_checkpointing if config.gradient_checkpointing is not None else cuda
    seq = config.block_size if config.mode == "pt" else config.max_seq_length
    memory = estimate_memory(model_cfg, load_in_4bit=config.load_in_4bit, lora_r=config.lora_r, seq_len=seq,
                             batch_size=config.batch_size, vocab_size=max(vocab, int(model_cfg["vocab_size"])),
                             modules_to_save=modules_to_save, target_modules=config.target_modules,
                             gradient_checkpointing=grad_ckpt, bytes_per_value=4 if precision == "fp32" else 2)
    print(memory.summary(), file=sys.stderr)
    if config.check_memory:
        memory.check()

    template = get_template(_resolve_template(config, model_cfg, tok_dir)) if config.mode == "sft" else None
    dataset = build_dataset(config, tokenizer, template)
    out.mkdir(parents=True, exist_ok=True)
    resume_from = _prepare_out(out, config.resume)
    rows = read_loss_csv(out / "loss.csv") if resume_from else []

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import PrinterCallback, Trainer, TrainingArguments, set_seed

    set_seed(config.seed)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    model = _load_base(base_dir, dtype=dtype, load_in_4bit=config.load_in_4bit,
                       skip_modules={"lm_head", *modules_to_save})
    if resize:
        model.resize_token_embeddings(vocab)
    model.config.use_cache = False
    if config.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=grad_ckpt,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), modules_to_save=list(modules_to_save) or None,
                      bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    for p in model.parameters():  # fp16 AMP needs fp32 master weights; full embeddings included
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1, learning_rate=config.learning_rate, lr_scheduler_type="cosine",
        weight_decay=0.0, logging_steps=config.logging_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not cuda, seed=config.seed,
        remove_unused_columns=False, report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        **_version_kwargs(TrainingArguments, warmup=config.warmup, checkpointing=grad_ckpt), **config.extra)
    LossLog, LivePlot = _callbacks()
    log = LossLog(out / "loss.csv", rows)
    notebook = in_notebook() if config.live_plot is None else config.live_plot
    cbs = [log, LivePlot(rows, every=config.plot_every, notebook=notebook and in_notebook()), *callbacks]
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=DataCollator(pad_id_of(tokenizer)),
                      callbacks=cbs)
    trainer.remove_callback(PrinterCallback)  # our bar and log lines replace its dict dumps
    t0 = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - t0
    steps_done = trainer.state.global_step - log.step0

    model.peft_config["default"].base_model_name_or_path = config.base
    _save_adapter(model, out, embeddings_saved=set(EMBEDDINGS) <= set(modules_to_save))
    _copy_tokenizer(tok_dir, out)
    write_loss_csv(out / "loss.csv", rows)
    save_loss_plot(rows, out / "loss.png")
    result = FinetuneResult(
        out=out, global_step=trainer.state.global_step, losses=list(rows), resumed_from=resume_from,
        template=template.name if template else None, modules_to_save=tuple(modules_to_save),
        trainable_params=trainable, train_seconds=seconds, steps_per_second=steps_done / max(seconds, 1e-9),
        tokens_per_second=log.tokens_per_second, memory=memory)
    write_json(out / "finetune.json", {
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "extra"},
        "template": result.template, "modules_to_save": list(modules_to_save), "precision": precision,
        "trainable_params": trainable, "global_step": result.global_step, "resumed_from": resume_from,
        "first_loss": result.first_loss, "last_loss": result.last_loss,
        "train_loss": output.training_loss if math.isfinite(output.training_loss or math.nan) else None,
        "steps_per_second": result.steps_per_second, "tokens_per_second": result.tokens_per_second})
    del trainer, model
    if cuda:
        torch.cuda.empty_cache()
    return result


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers finetune``."""
    p = parser
    p.add_argument("--base", required=True, help="base model folder or hub id (e.g. hfl/chinese-alpaca-2-7b)")
    p.add_argument("--data", required=True, help="SFT: Alpaca JSON/JSONL file or folder; PT: .txt file or folder")
    p.add_argument("--out", required=True, help="output folder for the adapter (and checkpoints/)")
    p.add_argument("--mode", choices=("sft", "pt"), default="sft", help="instruction tuning or continued pre-training")
    p.add_argument("--template", help="prompt template for SFT (default: the model's own)")
    p.add_argument("--tokenizer", help="tokenizer folder when not the base's (expanded vocabulary)")
    p.add_argument("--max-steps", type=int, help="optimizer steps (default: --epochs over the data)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, help="learning rate (default 1e-4 SFT, 2e-4 PT)")
    p.add_argument("--lora-r", type=int, default=64)
    p.add_argument("--lora-alpha", type=float, default=128.0)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--target-modules", default=",".join(TARGETS), help="comma-separated LoRA targets")
    p.add_argument("--modules-to-save", help="comma-separated fully trained modules ('none' for none; "
                   "default: embed_tokens,lm_head only when the tokenizer is larger than the model vocabulary)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--block-size", type=int, default=512)
    p.add_argument("--warmup-ratio", type=float)
    p.add_argument("--4bit", dest="load_in_4bit", action="store_true", help="QLoRA: NF4 base weights (GPU)")
    p.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false", default=None)
    p.add_argument("--precision", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--save-steps", type=int, default=100)
    p.add_argument("--max-samples", type=int, help="use only the first N records/blocks")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", dest="resume", action="store_true", default=None,
                   help="continue from the last checkpoint (the default when one exists)")
    g.add_argument("--restart", dest="resume", action="store_false", help="delete old checkpoints and start over")
    p.add_argument("--no-memory-check", dest="check_memory", action="store_false",
                   help="train even when the memory estimate exceeds the device")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers finetune``."""
    mts = args.modules_to_save
    mts = () if mts is not None and mts.strip().lower() == "none" else mts
    config = FinetuneConfig(
        base=args.base, data=args.data, out=args.out, mode=args.mode, template=args.template, tokenizer=args.tokenizer,
        max_steps=args.max_steps, epochs=args.epochs, lr=args.lr, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, target_modules=args.target_modules, modules_to_save=mts,
        batch_size=args.batch_size, grad_accum=args.grad_accum, max_seq_length=args.max_seq_length,
        block_size=args.block_size, warmup_ratio=args.warmup_ratio, load_in_4bit=args.load_in_4bit,
        gradient_checkpointing=args.gradient_checkpointing, precision=args.precision, seed=args.seed,
        save_steps=args.save_steps, resume=args.resume, check_memory=args.check_memory, max_samples=args.max_samples,
        live_plot=False)
    result = finetune(config)
    losses = f", loss {result.first_loss:.4f} -> {result.last_loss:.4f}" if result.losses else ""
    resumed = f" (resumed from {Path(result.resumed_from).name})" if result.resumed_from else ""
    print(f"adapter written to {result.out}: {result.global_step} steps{resumed}{losses}, "
          f"{result.tokens_per_second:.0f} tokens/s")
    print(f"merge it with: python -m helpers merge --base {args.base} --lora {result.out} --out MERGED --format hf")
    return 0
