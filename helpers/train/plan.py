"""What a fine-tuning run decides before anything heavy is loaded: :func:`plan_run`.

Every check here runs on every rank of a torchrun / accelerate launch from the same inputs, so a bad input stops
all ranks alike before any of them joins the process group or loads a model (:mod:`.dist`).
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..hub import resolve_model
from ..tokens import Template, get_template, load_tokenizer
from ..util import UserError, read_json
from .config import FinetuneConfig
from .dist import Launch, check_launch, is_main_process
from .launch import deepspeed_config, zero_stage
from .memory import EMBEDDINGS, MemoryEstimate, estimate_memory
from .setup import pick_precision, resolve_template


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
    launch: Launch
    deepspeed: dict | None = None

    @property
    def zero_stage(self) -> int | None:
        """The DeepSpeed ZeRO stage, or ``None`` without DeepSpeed."""
        return zero_stage(self.deepspeed) if self.deepspeed is not None else None


def deepspeed_installed() -> bool:
    """Whether ``import deepspeed`` would find the package (without importing it)."""
    return importlib.util.find_spec("deepspeed") is not None


def _check_paths(config: FinetuneConfig, base_dir: Path, tok_dir: Path) -> None:
    out = Path(config.out).resolve()
    for what, folder in (("base model", base_dir), ("tokenizer", tok_dir)):
        if out == folder.resolve():
            raise UserError(f"--out {config.out} is the {what} folder; the adapter goes into a folder of its own")


def _memory(config: FinetuneConfig, run_cfg: dict, *, vocab: int, modules_to_save, grad_ckpt: bool, precision: str,
            launch: Launch, stage: int | None, cuda: bool) -> MemoryEstimate:
    seq = config.block_size if config.mode == "pt" else config.max_seq_length
    return estimate_memory(run_cfg, load_in_4bit=config.load_in_4bit, lora_r=config.lora_r, seq_len=seq,
                           batch_size=config.batch_size, vocab_size=max(vocab, int(run_cfg["vocab_size"])),
                           modules_to_save=modules_to_save, target_modules=config.target_modules,
                           gradient_checkpointing=grad_ckpt, bytes_per_value=4 if precision == "fp32" else 2,
                           zero_stage=stage or 0, num_gpus=launch.world_size if cuda else 1,
                           processes=1 if cuda else launch.local_world_size)


def plan_run(config: FinetuneConfig, launch: Launch) -> RunPlan:
    """Check the launch, resolve the base and tokenizer, choose precision and trained modules, and check the
    memory estimate (per GPU; on a CPU machine for all the processes that share its RAM).

    Raises:
        UserError: a launch that cannot work, no model folder, 4-bit without a GPU, or a run that does not fit.
    """
    import torch

    ds = deepspeed_config(config.deepspeed) if config.deepspeed else None
    cuda = torch.cuda.is_available()
    check_launch(launch, gpus=torch.cuda.device_count() if cuda else 0, deepspeed_stage=zero_stage(ds) if ds else None,
                 load_in_4bit=config.load_in_4bit, deepspeed_installed=deepspeed_installed())
    base_dir = resolve_model(config.base, what="base model")
    tok_dir = resolve_model(config.tokenizer, what="tokenizer") if config.tokenizer else base_dir
    _check_paths(config, base_dir, tok_dir)
    if not (base_dir / "config.json").is_file():
        raise UserError(f"{base_dir} has no config.json; give a Hugging Face model folder as --base")
    model_cfg = read_json(base_dir / "config.json")
    if config.load_in_4bit and not cuda:
        raise UserError("--4bit (QLoRA) needs a CUDA GPU (bitsandbytes); on CPU train without --4bit")
    precision = pick_precision(config, cuda)
    tokenizer = load_tokenizer(tok_dir)
    resize = len(tokenizer) > int(model_cfg["vocab_size"])
    modules_to_save = config.modules_to_save if config.modules_to_save is not None else (EMBEDDINGS if resize else ())
    grad_ckpt = config.gradient_checkpointing if config.gradient_checkpointing is not None else cuda
    memory = _memory(config, model_cfg, vocab=len(tokenizer), modules_to_save=modules_to_save, grad_ckpt=grad_ckpt,
                     precision=precision, launch=launch, stage=zero_stage(ds) if ds else None, cuda=cuda)
    if is_main_process():
        print(memory.summary(), file=sys.stderr)
    if config.check_memory:
        memory.check()
    template = get_template(resolve_template(config, model_cfg, tok_dir)) if config.mode == "sft" else None
    return RunPlan(base_dir, tok_dir, model_cfg, cuda, precision, tokenizer, resize, tuple(modules_to_save), grad_ckpt,
                   memory, template, launch, ds)
