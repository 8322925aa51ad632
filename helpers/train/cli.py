"""``python -m helpers finetune --base BASE --data FILE --out DIR [--mode sft|pt] [--4bit] ...``.

The same command runs under ``torchrun --nproc_per_node N -m helpers finetune ...`` and ``accelerate launch``.
``--check-only`` makes every check of a run (as each of ``--nproc`` processes would) and stops; ``--write-launch
DIR`` writes ``launch.sh`` and the DeepSpeed / accelerate configs for an ``--nproc``-GPU machine instead of training.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..checkpoint import LORA_TARGETS
from ..util import UserError
from .args import NOT_FLAGS
from .config import RESUME_CHOICES, FinetuneConfig
from .launch import STRATEGIES
from .dist import Launch, launch_context, quiet_unless_main

# FinetuneConfig fields whose flag is not ``--field-name`` (or that are switches)

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers finetune``."""
    p = parser
    p.add_argument("--base", required=True, help="base model folder or hub id (e.g. hfl/chinese-alpaca-2-7b)")
    p.add_argument("--data", required=True, help="SFT: Alpaca JSON/JSONL file or folder; PT: .txt file or folder; "
                   "or a hub data set id (org/name)")
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
    p.add_argument("--target-modules", default=",".join(LORA_TARGETS), help="comma-separated LoRA targets")
    p.add_argument("--modules-to-save", help="comma-separated fully trained modules ('none' for none; "
                   "default: embed_tokens,lm_head only when the tokenizer is larger than the model vocabulary)")
    p.add_argument("--batch-size", type=int, default=1, help="per process (global batch: x grad-accum x processes)")
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
    p.add_argument("--no-shuffle", dest="shuffle", action="store_false",
                   help="data in file order (with --lora-dropout 0 the run is deterministic)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", nargs="?", const="yes", default="auto", choices=RESUME_CHOICES,
                   help="auto (default): resume the checkpoints of the same job, start other jobs fresh; "
                   "yes (also bare --resume): resume or refuse; no: start fresh")
    g.add_argument("--restart", dest="resume", action="store_const", const="no", help="the same as --resume no")
    _distributed_arguments(p)


def _distributed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deepspeed", help="zero2, zero3 or a DeepSpeed JSON config (under torchrun)")
    p.add_argument("--streaming", action="store_true", help="stream --data (hub id or local shards); "
                   "needs --max-steps")
    p.add_argument("--text-column", default="text", help="PT: the text column of a data set")
    p.add_argument("--data-workers", type=int, default=0, help="data loader processes tokenizing a stream")
    p.add_argument("--embedding-stage-steps", type=int, default=0, help="two-stage recipe for a new vocabulary: "
                   "the first N steps train only the new embedding rows, then LoRA + embed_tokens/lm_head")
    p.add_argument("--no-memory-check", dest="check_memory", action="store_false",
                   help="train even when the memory estimate exceeds the device")
    p.add_argument("--check-only", action="store_true", help="make every check of the run, as each of --nproc "
                   "processes would, then stop (what launch.sh runs before torchrun)")
    p.add_argument("--nproc", type=int, default=1, help="processes (GPUs) for --check-only / --write-launch")
    p.add_argument("--write-launch", metavar="DIR", help="write launch.sh and the DeepSpeed/accelerate configs for an "
                   "--nproc GPU machine into DIR instead of training")
    p.add_argument("--strategy", choices=tuple(STRATEGIES), default="zero2",
                   help="for --write-launch: plain DDP, DeepSpeed ZeRO-2 / ZeRO-3, or FSDP")
    p.add_argument("--gpu-memory", type=float, metavar="GiB", help="for --write-launch: each GPU's memory, to check "
                   "the per-GPU estimate against (e.g. 80)")


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """The :class:`FinetuneConfig` of parsed ``finetune`` arguments."""
    mts = args.modules_to_save
    mts = () if mts is not None and mts.strip().lower() == "none" else mts
    names = {f.name for f in dataclasses.fields(FinetuneConfig)} - set(NOT_FLAGS)
    values = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return FinetuneConfig(**{**values, "modules_to_save": mts, "live_plot": False})


def _check_only(config: FinetuneConfig, nproc: int) -> int:
    from .plan import plan_run

    if nproc < 1:
        raise UserError(f"--nproc {nproc}: at least one process")
    launch = launch_context()
    if not launch.distributed:
        launch = Launch(0, nproc, 0, nproc)
    plan_run(config, launch)
    print(f"finetune settings checked for {nproc} process(es): nothing stops the run")
    return 0


def _write_launch(config: FinetuneConfig, args: argparse.Namespace) -> int:
    from .launch import write_launch_files

    stage = STRATEGIES[args.strategy]
    gpu = int(args.gpu_memory * (1 << 30)) if args.gpu_memory else None
    files = write_launch_files(config, nproc=args.nproc, out_dir=args.write_launch, zero_stage=stage,
                               fsdp=args.strategy == "fsdp", gpu_bytes=gpu)
    for path in files.paths:
        print(f"wrote {path}")
    if files.memory is not None:
        print(files.memory.summary())
    print(f"on the {args.nproc}-GPU machine: bash {files.script}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers finetune``."""
    from .finetune import finetune

    try:
        config = config_from_args(args)
        if args.write_launch:
            return _write_launch(config, args)
        if args.check_only:
            return _check_only(config, args.nproc)
        result = finetune(config)
    except UserError as exc:
        quiet_unless_main(exc)
        raise
    if not launch_context().is_main:
        return 0
    losses = f", loss {result.first_loss:.4f} -> {result.last_loss:.4f}" if result.losses else ""
    resumed = f" (resumed from {Path(result.resumed_from).name})" if result.resumed_from else ""
    procs = f" on {result.world_size} processes" if result.world_size > 1 else ""
    print(f"adapter written to {result.out}: {result.global_step} steps{procs}{resumed}{losses}, "
          f"{result.tokens_per_second:.0f} tokens/s")
    print(f"merge it with: python -m helpers merge --base {args.base} --lora {result.out} --out MERGED --format hf")
    return 0
