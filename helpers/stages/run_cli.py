"""``python -m helpers run NOTEBOOK [--set NAME=VALUE]...``: a notebook's step from a terminal: the check cell's plan,
then its run (the same objects the notebook builds)."""
from __future__ import annotations

import argparse

from ..util import UserError
from . import cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers run``."""
    cli.add_arguments(parser)
    parser.set_defaults(execute=True)


def run(args: argparse.Namespace) -> int:
    """Plan on this machine, then run."""
    if args.colab:
        raise UserError("run executes here: drop --colab (colab-check --colab plans for free Colab)")
    return cli.run(args)
