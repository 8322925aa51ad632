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
Trainer checkpoints go to ``OUT/checkpoints``; rerunning the same job resumes from the last one, and a changed
job starts fresh (:mod:`.jobs`).

``python -m helpers finetune --base BASE --data FILE --out DIR [--mode sft|pt] [--4bit] ...``, unchanged under
``torchrun --nproc_per_node N -m helpers finetune ...`` or ``accelerate launch`` (:mod:`.dist`): every process
trains on its share of each global batch, the loss is averaged over all the global batch's tokens, and rank 0
alone writes the adapter, ``loss.csv`` and the checkpoints (the Trainer adds each rank's RNG state, and DeepSpeed
each rank's optimizer partition).

:func:`finetune` runs in named steps: :func:`helpers.train.plan.plan_run` (launch checks, resolve, tokenizer,
memory check), :func:`training_data`, the resume decision, :func:`build_model` (base + LoRA), :func:`train` (the
Trainer, resumable) and :func:`finish` (adapter, tokenizer, loss files, ``finetune.json``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Sequence

from ..disk import claim_output
from ..tokens.files import copy_tokenizer_files
from ..util import write_json
from .callbacks import in_notebook, read_loss_csv, save_loss_plot, trainer_callbacks, write_loss_csv
from .config import FinetuneConfig
from .data import DataCollator, build_dataset, pad_id_of
from .dist import Launch, barrier, launch_context, note
from .jobs import ResumeDecision, apply_resume, checkpoint_step, job_identity, decide_resume
from .memory import EMBEDDINGS
from .plan import RunPlan, plan_run
from .result import FinetuneResult, reuse_finished
from .setup import load_base, save_adapter, version_kwargs
from .stats import StageStats, stage_stats


def build_model(config: FinetuneConfig, run: RunPlan):
    """The base model (NF4 for QLoRA) with LoRA on the target modules; trainable parameters in fp32.

    Returns:
        ``(peft model, trainable parameter count, extra Trainer callbacks)``.
    """
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    set_seed(config.seed)  # the LoRA initialisation is random (and the same on every rank)
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
    extra = []
    if config.embedding_stage_steps:
        from .vocab_stage import embedding_stage

        extra.append(embedding_stage(model, base_vocab=int(run.model_cfg["vocab_size"]),
                                     steps=config.embedding_stage_steps))
    return model, sum(p.numel() for p in model.parameters() if p.requires_grad), extra


def training_data(config: FinetuneConfig, run: RunPlan):
    """The examples this process trains on: a list in data order (the Trainer splits each global batch among the
    processes), or, with ``streaming``, this process's own endless stream (:mod:`.stream`)."""
    if config.streaming:
        from .stream import streamed_examples

        return streamed_examples(config, run.tokenizer, run.template, rank=run.launch.rank,
                                 world_size=run.launch.world_size)
    return build_dataset(config, run.tokenizer, run.template)


def training_arguments(config: FinetuneConfig, run: RunPlan):
    """The ``TrainingArguments`` of a run; creating them joins the process group under torchrun (gloo on CPU)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(Path(config.out) / "checkpoints"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1, learning_rate=config.learning_rate, lr_scheduler_type="cosine",
        weight_decay=0.0, logging_steps=config.logging_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit,
        bf16=run.precision == "bf16", fp16=run.precision == "fp16", use_cpu=not run.cuda, seed=config.seed,
        remove_unused_columns=False, report_to="none", disable_tqdm=True,
        dataloader_num_workers=config.data_workers if config.streaming else 0,
        ddp_find_unused_parameters=False, deepspeed=run.deepspeed,
        **version_kwargs(TrainingArguments, warmup=config.warmup, checkpointing=run.gradient_checkpointing,
                         shuffle=config.shuffle),
        **config.extra)


def join_deepspeed(run: RunPlan) -> None:
    """Let DeepSpeed use the process group the Trainer joined: ZeRO-3 partitions the weights while they load
    (``deepspeed.zero.Init``), which reads the number of processes from DeepSpeed's own communicator."""
    if run.deepspeed is not None:
        import deepspeed

        deepspeed.init_distributed()


def _trainer_class(streaming: bool):
    from transformers import Trainer

    if not streaming:
        return Trainer

    class StreamTrainer(Trainer):
        """A Trainer whose data loader reads this process's own share of the stream (:mod:`.stream`) as it is:
        accelerate would otherwise split the already split stream once more among the processes."""

        def get_train_dataloader(self):
            from torch.utils.data import DataLoader

            return DataLoader(self.train_dataset, batch_size=self.args.per_device_train_batch_size,
                              collate_fn=self.data_collator, num_workers=self.args.dataloader_num_workers)

    return StreamTrainer


def train(config: FinetuneConfig, run: RunPlan, model, dataset, args, *, resume_from: str | None,
          rows: list[tuple[int, float]], callbacks: Sequence[Any] = ()):
    """Run the transformers Trainer (checkpoints in ``OUT/checkpoints``); ``rows`` collects ``(step, loss)``.

    Returns:
        ``(trainer, train output, loss log callback, seconds)``.
    """
    from transformers import PrinterCallback

    LossLog, LivePlot = trainer_callbacks()
    log = LossLog(Path(config.out) / "loss.csv", rows)
    notebook = in_notebook() if config.live_plot is None else config.live_plot
    cbs = [log, LivePlot(rows, every=config.plot_every, notebook=notebook and in_notebook()), *callbacks]
    trainer = _trainer_class(config.streaming)(model=model, args=args, train_dataset=dataset,
                                               data_collator=DataCollator(pad_id_of(run.tokenizer)), callbacks=cbs)
    trainer.remove_callback(PrinterCallback)  # our bar and log lines replace its dict dumps
    t0 = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    return trainer, output, log, time.perf_counter() - t0


def gather_stats(stats: tuple[StageStats, ...]) -> list[list[dict]]:
    """Every rank's :class:`StageStats` (as dicts), in rank order; a collective call under torchrun."""
    import torch.distributed as dist

    mine = [dataclasses.asdict(st) for st in stats]
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return everyone


def _full_state_dict(trainer, run: RunPlan) -> dict | None:
    """The weights gathered from every rank when they are partitioned (ZeRO-3, FSDP); a collective call."""
    if run.zero_stage == 3 or getattr(trainer, "is_fsdp_enabled", False):
        return trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return None


def write_outputs(config: FinetuneConfig, run: RunPlan, model, result: FinetuneResult, *, job: dict,
                  train_loss: float | None = None, state_dict: dict | None = None) -> None:
    """Rank 0 writes the adapter, the tokenizer, ``loss.csv``/``loss.png`` and ``finetune.json`` (with every rank's
    peak memory)."""
    out = Path(config.out)
    per_rank = gather_stats(result.stats)
    if run.launch.is_main:
        model.peft_config["default"].base_model_name_or_path = config.base
        save_adapter(model, out, embeddings_saved=set(EMBEDDINGS) <= set(run.modules_to_save), state_dict=state_dict)
        copy_tokenizer_files(run.tok_dir, out)
        write_loss_csv(out / "loss.csv", result.losses)
        save_loss_plot(result.losses, out / "loss.png")
        write_json(out / "finetune.json", {**_record(config, run, result, train_loss, job), "stats_per_rank": per_rank})
    barrier()  # the other ranks return once the adapter is complete


def finish(config: FinetuneConfig, run: RunPlan, model, trainer, output, log, *, seconds: float, trainable: int,
           resume_from: str | None, rows: list[tuple[int, float]], stats: tuple[StageStats, ...] = (),
           job: dict | None = None) -> FinetuneResult:
    """Write the outputs (rank 0) and return the result (on every rank)."""
    state_dict = _full_state_dict(trainer, run)
    steps_done = trainer.state.global_step - log.step0
    result = FinetuneResult(
        out=Path(config.out), global_step=trainer.state.global_step, losses=list(rows), resumed_from=resume_from,
        template=run.template.name if run.template else None, modules_to_save=run.modules_to_save,
        trainable_params=trainable, train_seconds=seconds, steps_per_second=steps_done / max(seconds, 1e-9),
        tokens_per_second=log.tokens_per_second, memory=run.memory, stats=stats, world_size=run.launch.world_size)
    loss = output.training_loss if math.isfinite(output.training_loss or math.nan) else None
    write_outputs(config, run, model, result, job=job or {}, train_loss=loss, state_dict=state_dict)
    return result


def finish_from_checkpoint(config: FinetuneConfig, run: RunPlan, ckpt: str, *, job: dict) -> FinetuneResult:
    """The job's last checkpoint is its result (nothing left to train): write the outputs from its adapter."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    model, trainable, _ = build_model(config, run)
    set_peft_model_state_dict(model, load_file(str(Path(ckpt) / "adapter_model.safetensors")))
    rows = read_loss_csv(Path(config.out) / "loss.csv")
    result = FinetuneResult(
        out=Path(config.out), global_step=checkpoint_step(Path(ckpt)), losses=rows, resumed_from=ckpt,
        template=run.template.name if run.template else None, modules_to_save=run.modules_to_save,
        trainable_params=trainable, train_seconds=0.0, steps_per_second=0.0, tokens_per_second=0.0,
        memory=run.memory, world_size=run.launch.world_size)
    write_outputs(config, run, model, result, job=job)
    return result


def _record(config: FinetuneConfig, run: RunPlan, result: FinetuneResult, train_loss: float | None,
            job: dict) -> dict:
    return {
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "extra"},
        "template": result.template, "modules_to_save": list(run.modules_to_save), "precision": run.precision,
        "trainable_params": result.trainable_params, "global_step": result.global_step,
        "resumed_from": result.resumed_from, "first_loss": result.first_loss, "last_loss": result.last_loss,
        "train_loss": train_loss, "steps_per_second": result.steps_per_second,
        "tokens_per_second": result.tokens_per_second, "world_size": run.launch.world_size,
        "global_batch": config.batch_size * config.grad_accum * run.launch.world_size,
        "deepspeed_zero_stage": run.zero_stage, "stats": [dataclasses.asdict(st) for st in result.stats], "job": job}


def _prepare_output(config: FinetuneConfig, run: RunPlan, plan: ResumeDecision, job: dict) -> None:
    """Rank 0 applies the resume decision once every rank has read the folder it decided from."""
    barrier()
    if run.launch.is_main:
        Path(config.out).mkdir(parents=True, exist_ok=True)
        apply_resume(Path(config.out), plan, job)
    barrier()


def finetune(config: FinetuneConfig, *, callbacks: Sequence[Any] = (), launch: Launch | None = None
             ) -> FinetuneResult:
    """Train a LoRA (or QLoRA) adapter and write it where ``python -m helpers merge --lora`` reads it.

    Args:
        config: the run settings.
        callbacks: extra ``transformers.TrainerCallback`` objects.
        launch: this process's place in a torchrun / accelerate launch (default: read from the environment).

    Raises:
        UserError: bad data, a device too small for the settings (see :func:`estimate_memory`), 4-bit without GPU,
            a launch that cannot work, ``resume="yes"`` without a checkpoint of this job.
    """
    t0 = time.perf_counter()
    launch = launch or launch_context()
    run = plan_run(config, launch)
    dataset = training_data(config, run)
    out = Path(config.out)
    job = job_identity(config, base_dir=run.base_dir, tok_dir=run.tok_dir, template=run.template and run.template.name,
                       modules_to_save=run.modules_to_save, world_size=launch.world_size, zero_stage=run.zero_stage)
    plan = decide_resume(out, job, config.resume)  # read-only, on every rank, before any rank writes
    claim = claim_output(out, what="the adapter and its checkpoints") if launch.is_main else contextlib.nullcontext()
    with claim:
        args = training_arguments(config, run)
        join_deepspeed(run)
        _prepare_output(config, run, plan, job)
        if plan.finished:  # nothing left to train: the outputs of this job, else its last checkpoint's adapter
            return reuse_finished(config, run, job) or finish_from_checkpoint(config, run, plan.resume_from, job=job)
        rows = read_loss_csv(out / "loss.csv") if plan.resume_from else []
        model, trainable, extra = build_model(config, run)
        loaded = stage_stats("load", time.perf_counter() - t0, cuda=run.cuda)
        note(loaded.summary())
        trainer, output, log, seconds = train(config, run, model, dataset, args, resume_from=plan.resume_from,
                                              rows=rows, callbacks=[*extra, *callbacks])
        trained = stage_stats("train", seconds, cuda=run.cuda)
        note(trained.summary())
        result = finish(config, run, model, trainer, output, log, seconds=seconds, trainable=trainable,
                        resume_from=plan.resume_from, rows=rows, stats=(loaded, trained), job=job)
    del trainer, model
    if run.cuda:
        import torch

        torch.cuda.empty_cache()
    return result
