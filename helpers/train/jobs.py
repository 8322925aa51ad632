"""Which checkpoints a fine-tuning may resume from: the job they belong to, and the resume policy.

A rerun of a notebook with new data, another base or other LoRA settings must not resume the old run's
checkpoints (it would train 0 steps and hand back the old adapter, or fail on a shape). So a run records its job in
``OUT/checkpoints/job.json`` and a later run compares:

- the inputs by content (:func:`helpers.util.sample_digest` of the base's weights and config, the tokenizer files,
  the local data files; a hub data set by its id), never by path, so a copy of the same files elsewhere (Drive to
  local disk) is the same job;
- every setting that changes what is trained: mode, template, LoRA rank/alpha/dropout/targets, modules trained in
  full, steps or epochs, learning rate and warmup, the *global* batch (per-process batch x accumulation x
  processes, so a run resumes on another number of processes when the global batch stays), sequence or block
  length, seed, data order, 4-bit, the two-stage recipe; under DeepSpeed also the ZeRO stage and the number of
  processes (its checkpoints are partitioned per process).

The policy (``resume``): ``auto`` resumes the same job and starts the other ones fresh, saying what changed;
``yes`` resumes or refuses; ``no`` starts fresh. Starting fresh removes the old checkpoints and every output of the
old run (adapter, tokenizer files, loss files), so nothing stale is left beside the new run's files.
:func:`decide_resume` only reads (every rank calls it on the same files); :func:`apply_resume` writes (rank 0).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..hub import current_hub_id
from ..tokens import tokenizer_files
from ..util import UserError, read_json, remove, sample_digest, write_json

if TYPE_CHECKING:
    from .config import FinetuneConfig

JOB_FILE = "job.json"
CHECKPOINTS = "checkpoints"
# Everything a run writes into OUT besides the tokenizer files and checkpoints/.
RUN_OUTPUTS = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "loss.csv", "loss.png",
               "finetune.json")
_BASE_FILES = ("config.json", "*.safetensors", "*.bin", "*.index.json")


def _digests(root: Path, files: list[Path]) -> list[list]:
    """``[name, size, sample digest]`` of each file, names relative to ``root``, in name order."""
    return sorted([str(f.relative_to(root)) if f.is_relative_to(root) else f.name, f.stat().st_size,
                   sample_digest(f)] for f in set(files) if f.is_file())


def _data_identity(config: FinetuneConfig) -> dict:
    path = Path(config.data)
    if path.exists():
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        return {"files": _digests(path if path.is_dir() else path.parent, files), "streaming": config.streaming}
    return {"hub": config.data, "streaming": config.streaming, "text_column": config.text_column}


def job_settings(config: FinetuneConfig, *, template: str | None, modules_to_save: tuple[str, ...], world_size: int,
                 zero_stage: int | None = None) -> dict:
    """Every setting of a run that changes what is trained (the part of :func:`job_identity` that is not an input's
    content)."""
    return {
        "mode": config.mode, "template": template,
        "lora_r": config.lora_r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
        "target_modules": sorted(config.target_modules), "modules_to_save": sorted(modules_to_save),
        "max_steps": config.max_steps, "epochs": None if config.max_steps else config.epochs,
        "lr": config.learning_rate, "warmup": config.warmup,
        "global_batch": config.batch_size * config.grad_accum * world_size,
        "seq_len": config.block_size if config.mode == "pt" else config.max_seq_length,
        "seed": config.seed, "shuffle": config.shuffle, "max_samples": config.max_samples,
        "load_in_4bit": config.load_in_4bit, "embedding_stage_steps": config.embedding_stage_steps,
        "deepspeed": None if zero_stage is None else {"zero_stage": zero_stage, "processes": world_size},
    }


def job_identity(config: FinetuneConfig, *, base_dir: Path, tok_dir: Path, template: str | None,
                 modules_to_save: tuple[str, ...], world_size: int, zero_stage: int | None = None) -> dict:
    """What a run trains, by content and settings (JSON-ready); equal dicts mean the same job.

    The number of processes is not part of it (a DDP checkpoint resumes on any number with the same global
    batch), except under DeepSpeed, whose checkpoints hold one optimizer partition per process."""
    base_files = [f for pattern in _BASE_FILES for f in base_dir.glob(pattern)]
    return {"base": _digests(base_dir, base_files), "tokenizer": _digests(tok_dir, tokenizer_files(tok_dir)),
            "data": _data_identity(config),
            **job_settings(config, template=template, modules_to_save=modules_to_save, world_size=world_size,
                           zero_stage=zero_stage)}


def planned_job_key(config: FinetuneConfig, base: str, *, length: int = 8) -> str:
    """A short id of the job ``config`` describes, known before anything is downloaded: the base by content when it
    is a folder here, else by its hub id (a catalog name and its hub id are one base), the tokenizer as named, the
    data by content and every setting of :func:`job_settings` as set (one process). Two runs with the same key
    train the same job; any change of data or settings gives another key."""
    folder = Path(base).expanduser()
    base_ident = _digests(folder, [f for p in _BASE_FILES for f in folder.glob(p)]) if folder.is_dir() \
        else current_hub_id(base)
    ident = {"base": base_ident, "tokenizer": config.tokenizer, "data": _data_identity(config),
             **job_settings(config, template=config.template, modules_to_save=config.modules_to_save or (),
                            world_size=1)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:length]


def job_changes(old: dict, new: dict) -> list[str]:
    """Names of the settings or inputs that differ between two jobs."""
    return [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def list_checkpoints(ckpt_dir: Path) -> tuple[list[Path], list[Path]]:
    """``(complete, incomplete)`` Trainer checkpoints in step order. The Trainer writes ``trainer_state.json`` last,
    so a checkpoint without a readable one was interrupted while being saved."""
    done, broken = [], []
    for d in sorted(ckpt_dir.glob("checkpoint-*")) if ckpt_dir.is_dir() else []:
        try:
            step = int(d.name.split("-", 1)[1])
            json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
        except (ValueError, OSError):
            broken.append(d)
            continue
        done.append((step, d))
    return [d for _, d in sorted(done)], broken


def checkpoint_step(ckpt: Path) -> int:
    """The optimizer step a complete checkpoint was saved at."""
    return int(read_json(ckpt / "trainer_state.json")["global_step"])


@dataclass(frozen=True)
class ResumeDecision:
    """What :func:`decide_resume` decided.

    Attributes:
        resume_from: the checkpoint to continue, or ``None``.
        fresh: remove the old checkpoints and outputs before training.
        message: a note for the user (what changed), or ``None``.
        finished: ``resume_from`` is the job's last step: nothing is left to train (the Trainer would train one
            step past ``max_steps`` when resumed there), so the adapter is written from it.
    """

    resume_from: str | None
    fresh: bool
    message: str | None = None
    finished: bool = False



def decide_resume(out: Path, job: dict, policy: str) -> ResumeDecision:
    """Decide, from what ``out`` holds, whether to resume (reads only).

    Raises:
        UserError: ``policy == "yes"`` with no checkpoint, or with checkpoints of another job.
    """
    ckpt_dir = out / CHECKPOINTS
    done, _ = list_checkpoints(ckpt_dir)
    recorded = read_json(ckpt_dir / JOB_FILE, default=None) if done else None
    if policy == "no" or not done:
        if policy == "yes":
            raise UserError(f"resume=yes, but {ckpt_dir} holds no checkpoint; run with resume auto or no to start")
        note = f"note: resume=no: removing the checkpoints in {ckpt_dir} and starting fresh" if done else None
        return ResumeDecision(None, True, note)
    last = str(done[-1])
    if recorded is None:
        if policy == "yes":
            return ResumeDecision(last, False, f"note: {ckpt_dir} has no record of its job; resuming it as asked")
        return ResumeDecision(None, True, f"note: {ckpt_dir} has no record of the job that wrote it: starting fresh "
                                      "(resume=yes continues it anyway)")
    changed = job_changes(recorded, job)
    if not changed:
        at_end = bool(job.get("max_steps")) and checkpoint_step(done[-1]) >= job["max_steps"]
        return ResumeDecision(last, False, finished=at_end)
    what = ", ".join(changed)
    if policy == "yes":
        raise UserError(f"resume=yes, but the checkpoints in {ckpt_dir} are of another job (changed: {what}); "
                        "give the settings they were made with, or resume auto/no to start fresh")
    return ResumeDecision(None, True, f"note: the checkpoints in {ckpt_dir} are of another job (changed: {what}): "
                                  "starting fresh")


def apply_resume(out: Path, plan: ResumeDecision, job: dict) -> None:
    """Carry out ``plan`` (rank 0 only): remove interrupted checkpoints, and on a fresh start the old checkpoints and
    outputs; record ``job``."""
    ckpt_dir = out / CHECKPOINTS
    for tmp in out.glob(".adapter-*"):  # temporary folders of an interrupted save_adapter
        shutil.rmtree(tmp, ignore_errors=True)
    for d in list_checkpoints(ckpt_dir)[1]:
        print(f"note: removing {d.name}, which an interrupted run left incomplete", file=sys.stderr)
        shutil.rmtree(d, ignore_errors=True)
    if plan.message:
        print(plan.message, file=sys.stderr)
    if plan.fresh:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        for f in [*(out / name for name in RUN_OUTPUTS), *tokenizer_files(out)]:
            if f.is_file():
                remove(f)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_json(ckpt_dir / JOB_FILE, job)
