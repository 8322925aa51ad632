"""``python -m helpers finetune --base BASE --data FILE --out DIR [--mode sft|pt] [--4bit] ...``."""
from __future__ import annotations

import argparse
from pathlib import Path

from .config import FinetuneConfig
from .finetune import finetune
from ..checkpoint import LORA_TARGETS


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
    p.add_argument("--target-modules", default=",".join(LORA_TARGETS), help="comma-separated LoRA targets")
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
