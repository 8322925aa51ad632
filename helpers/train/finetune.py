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

:func:`finetune` runs in four named steps: :func:`plan_run` (resolve, tokenizer, memory check),
:func:`build_model` (base + LoRA), :func:`train` (the Trainer, resumable) and :func:`finish` (adapter,
tokenizer, loss files, ``finetune.json``).
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..disk import claim_output
from ..hub import resolve_model
from ..tokens import Template, copy_tokenizer_files, get_template, load_tokenizer
from ..util import UserError, read_json, write_json
from .callbacks import in_notebook, read_loss_csv, save_loss_plot, trainer_callbacks, write_loss_csv
from .config import FinetuneConfig
from .data import DataCollator, build_dataset, pad_id_of
from .memory import EMBEDDINGS, MemoryEstimate, estimate_memory
from .setup import load_base, pick_precision, prepare_out, resolve_template, save_adapter, version_kwargs


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


@dataclass
class RunPlan:
    """What :func:`plan_run` decided before anything heavy is loaded."""

    base_dir: Path
    tok_dir: Path
    model_cfg: dict
    cuda: bool
    precision: str
    tokenizer: Any
    resize: bool
    modules_to_save: tuple[str, ...]
    gradient_checkpointing: bool
    memory: MemoryEstimate
    template: Template | None


def plan_run(config: FinetuneConfig) -> RunPlan:
    """Resolve the base and tokenizer, choose precision and trained modules, and check the memory estimate.

    Raises:
        UserError: no model folder, 4-bit without a GPU, or a run that does not fit the device.
    """
    import torch

    base_dir = resolve_model(config.base, what="base model")
    tok_dir = resolve_model(config.tokenizer, what="tokenizer") if config.tokenizer else base_dir
    if not (base_dir / "config.json").is_file():
        raise UserError(f"{base_dir} has no config.json; give a Hugging Face model folder as --base")
    model_cfg = read_json(base_dir / "config.json")
    cuda = torch.cuda.is_available()
    if config.load_in_4bit and not cuda:
        raise UserError("--4bit (QLoRA) needs a CUDA GPU (bitsandbytes); on CPU train without --4bit")
    precision = pick_precision(config, cuda)
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
    template = get_template(resolve_template(config, model_cfg, tok_dir)) if config.mode == "sft" else None
    return RunPlan(base_dir, tok_dir, model_cfg, cuda, precision, tokenizer, resize, tuple(modules_to_save), grad_ckpt,
                   memory, template)


def build_model(config: FinetuneConfig, run: RunPlan):
    """The base model (NF4 for QLoRA) with LoRA on the target modules; trainable parameters in fp32.

    Returns:
        ``(peft model, trainable parameter count)``.
    """
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    set_seed(config.seed)  # the LoRA initialisation is random
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[run.precision]
    model = load_base(run.base_dir, dtype=dtype, load_in_4bit=config.load_in_4bit,
                      skip_modules={"lm_head", *run.modules_to_save})
    if run.resize:
        model.resize_token_embeddings(len(run.tokenizer))
    model.config.use_cache = False
    if config.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=run.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), modules_to_save=list(run.modules_to_save) or None,
                      bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    for p in model.parameters():  # fp16 AMP needs fp32 master weights; full embeddings included
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model, sum(p.numel() for p in model.parameters() if p.requires_grad)


def train(config: FinetuneConfig, run: RunPlan, model, dataset: list[dict], *, resume_from: str | None,
          rows: list[tuple[int, float]], callbacks: Sequence[Any] = ()):
    """Run the transformers Trainer (checkpoints in ``OUT/checkpoints``); ``rows`` collects ``(step, loss)``.

    Returns:
        ``(trainer, train output, loss log callback, seconds)``.
    """
    from transformers import PrinterCallback, Trainer, TrainingArguments

    out = Path(config.out)
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1, learning_rate=config.learning_rate, lr_scheduler_type="cosine",
        weight_decay=0.0, logging_steps=config.logging_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit,
        bf16=run.precision == "bf16", fp16=run.precision == "fp16", use_cpu=not run.cuda, seed=config.seed,
        remove_unused_columns=False, report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        **version_kwargs(TrainingArguments, warmup=config.warmup, checkpointing=run.gradient_checkpointing),
        **config.extra)
    LossLog, LivePlot = trainer_callbacks()
    log = LossLog(out / "loss.csv", rows)
    notebook = in_notebook() if config.live_plot is None else config.live_plot
    cbs = [log, LivePlot(rows, every=config.plot_every, notebook=notebook and in_notebook()), *callbacks]
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=DataCollator(pad_id_of(run.tokenizer)), callbacks=cbs)
    trainer.remove_callback(PrinterCallback)  # our bar and log lines replace its dict dumps
    t0 = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    return trainer, output, log, time.perf_counter() - t0


def finish(config: FinetuneConfig, run: RunPlan, model, trainer, output, log, *, seconds: float, trainable: int,
           resume_from: str | None, rows: list[tuple[int, float]]) -> FinetuneResult:
    """Write the adapter, the tokenizer, ``loss.csv``/``loss.png`` and ``finetune.json``; return the result."""
    out = Path(config.out)
    model.peft_config["default"].base_model_name_or_path = config.base
    save_adapter(model, out, embeddings_saved=set(EMBEDDINGS) <= set(run.modules_to_save))
    copy_tokenizer_files(run.tok_dir, out)
    write_loss_csv(out / "loss.csv", rows)
    save_loss_plot(rows, out / "loss.png")
    steps_done = trainer.state.global_step - log.step0
    result = FinetuneResult(
        out=out, global_step=trainer.state.global_step, losses=list(rows), resumed_from=resume_from,
        template=run.template.name if run.template else None, modules_to_save=run.modules_to_save,
        trainable_params=trainable, train_seconds=seconds, steps_per_second=steps_done / max(seconds, 1e-9),
        tokens_per_second=log.tokens_per_second, memory=run.memory)
    write_json(out / "finetune.json", {
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "extra"},
        "template": result.template, "modules_to_save": list(run.modules_to_save), "precision": run.precision,
        "trainable_params": trainable, "global_step": result.global_step, "resumed_from": resume_from,
        "first_loss": result.first_loss, "last_loss": result.last_loss,
        "train_loss": output.training_loss if math.isfinite(output.training_loss or math.nan) else None,
        "steps_per_second": result.steps_per_second, "tokens_per_second": result.tokens_per_second})
    return result


def finetune(config: FinetuneConfig, *, callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Train a LoRA (or QLoRA) adapter and write it where ``python -m helpers merge --lora`` reads it.

    Args:
        config: the run settings.
        callbacks: extra ``transformers.TrainerCallback`` objects.

    Raises:
        UserError: bad data, a device too small for the settings (see :func:`estimate_memory`), 4-bit without GPU.
    """
    import torch

    run = plan_run(config)
    dataset = build_dataset(config, run.tokenizer, run.template)
    out = Path(config.out)
    with claim_output(out, what="the adapter and its checkpoints"):
        out.mkdir(parents=True, exist_ok=True)
        resume_from = prepare_out(out, config.resume)
        rows = read_loss_csv(out / "loss.csv") if resume_from else []
        model, trainable = build_model(config, run)
        trainer, output, log, seconds = train(config, run, model, dataset, resume_from=resume_from, rows=rows,
                                              callbacks=callbacks)
        result = finish(config, run, model, trainer, output, log, seconds=seconds, trainable=trainable,
                        resume_from=resume_from, rows=rows)
    del trainer, model
    if run.cuda:
        torch.cuda.empty_cache()
    return result
