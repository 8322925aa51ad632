"""Command-line interface: ``python -m helpers <command> ...``.

Each command names a module of its sub-package, which provides ``OPTIONS`` (the frozen dataclasses whose
:func:`~helpers.util.params.param` fields are its flags, or :class:`~helpers.util.params.Flags` for some of them) and
``main(*options) -> int``, called with one instance of each, built from the command line. Only the chosen command's
module is imported, so ``--help`` stays fast and a command never pays for another's imports.

Contract for every command: exit 0 on success; on bad input one line ``error: ...`` on stderr and
a non-zero exit, with a traceback only under ``--debug``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from .disk import disk_error_message
from .util import UserError
from .util.params import Flags, add_arguments, from_arguments

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("helpers.demo.command", "build the offline demo models (tiny, deterministic, in the released layouts)"),
    "catalog": ("helpers.catalog.command", "list the released models this project knows"),
    "colab-check": ("helpers.stages.command", "before any download: what a notebook's parameters need (GPU, RAM, disk, "
                                              "wheels) against this runtime or free Colab's"),
    "run": ("helpers.stages.command", "a notebook's step from a terminal: its check, then its run (--set NAME=VALUE)"),
    "plan": ("helpers.merge.plan_command", "what a merge will download, write and hold, and whether it fits here"),
    "merge": ("helpers.merge.command", "merge LoRA(s) or a patch into a base model -> HF, Meta .pth or GGUF"),
    "to-gguf": ("helpers.gguf.convert_command", "convert a merged Hugging Face model folder to GGUF"),
    "quantize": ("helpers.gguf.quantize_command", "quantize a GGUF (or an HF folder) with llama.cpp's quantizer"),
    "chat": ("helpers.chat.command", "one reply or an interactive chat with an HF folder, a GGUF or a catalog model"),
    "serve": ("helpers.chat.serve_command", "the OpenAI-compatible server (like llama-server) on a GGUF, a catalog "
                                            "name or a hub id"),
    "finetune": ("helpers.train.command", "LoRA / QLoRA fine-tuning (SFT on Alpaca JSON, or PT on text)"),
    "expand-vocab": ("helpers.tokens.vocab_command", "add a Chinese sentencepiece vocabulary to a LLaMA tokenizer"),
    "imatrix": ("helpers.imatrix.command", "llama.cpp's importance matrix of a GGUF on a text (for low-bit types), "
                                           "computed by llama.cpp itself"),
    "evaluate": ("helpers.evaluate.eval_command", "perplexity, KL divergence of quants, C-Eval-style multiple choice"),
    "save": ("helpers.publish.save_command", "copy outputs to a workspace folder (Google Drive): progress, SHA256 "
                                             "verified, atomic, skipping what is already saved"),
    "push": ("helpers.publish.push_command", "upload outputs (adapter, merged folder, GGUF) to your hub account with a "
                                             "model card"),
    "ceval": ("helpers.evaluate.exam_command", "C-Eval as the releases score it: summary.json / submission.json; "
                                               "--compare A B for a paired comparison"),
    "cmmlu": ("helpers.evaluate.exam_command", "CMMLU as the releases score it: summary.json / submission.json; "
                                               "--compare A B for a paired comparison"),
    "pipeline": ("helpers.pipeline.command", "the offline demo job: demo assets -> merge -> GGUF -> quantize -> a "
                                             "reply"),
}
# option values a command sets itself (two commands of one module)
PRESETS: dict[str, dict[str, object]] = {"run": {"execute": True}, "ceval": {"benchmark": "ceval"},
                                         "cmmlu": {"benchmark": "cmmlu"}}


def _flags(module: str) -> list[Flags]:
    return [o if isinstance(o, Flags) else Flags(o) for o in importlib.import_module(module).OPTIONS]


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """Build the top-level parser; only ``command``'s own arguments are loaded."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers",
        description="Chinese LLaMA/Alpaca notebooks: merge, convert, quantize, chat, fine-tune, evaluate.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        if name == command:
            for flags in _flags(module):
                add_arguments(p, flags.cls, only=flags.only, defaults=flags.defaults)
            p.set_defaults(**PRESETS.get(name, {}))
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    for a in argv:
        if a in COMMANDS:
            return a
        if not a.startswith("-"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HELPERS_DEBUG") == "1"
    try:
        command = _command_in(argv)
        parser = build_parser(command)
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 0
        module = COMMANDS[args.command][0]
        options = [from_arguments(flags.cls, args) for flags in _flags(module)]
        return int(importlib.import_module(module).main(*options) or 0)
    except UserError as exc:
        if debug:
            raise
        from .train.dist import quiet_unless_main

        quiet_unless_main(exc)  # under torchrun every rank meets the same bad input: rank 0 alone says so
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the contract is one line, traceback only with --debug
        if debug:
            raise
        disk = disk_error_message(exc)  # a full or read-only disk, wherever it was met
        if disk is not None:
            print(f"error: {disk}", file=sys.stderr)
            return 2
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {msg} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
