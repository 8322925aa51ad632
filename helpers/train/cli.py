"""``python -m helpers finetune --base BASE --data FILE --out DIR [--mode sft|pt] [--4bit] ...``: one flag per
:class:`~.config.FinetuneConfig` and :class:`~.command.LaunchOptions` setting, made from their declarations.

The same command runs under ``torchrun --nproc_per_node N -m helpers finetune ...`` and ``accelerate launch``.
"""
from __future__ import annotations

import argparse

from ..util.params import add_arguments as option_arguments, from_arguments
from .config import FinetuneConfig
from .command import LaunchOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers finetune``."""
    option_arguments(parser, FinetuneConfig)
    option_arguments(parser, LaunchOptions)


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers finetune``."""
    from .command import run_command

    return run_command(from_arguments(FinetuneConfig, args, live_plot=False), from_arguments(LaunchOptions, args))
