"""``python -m helpers save PATH... --to DIR``: copy outputs to a workspace folder (Google Drive), verified."""
from __future__ import annotations

import argparse

from .workspace import copy_to_workspace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers save``."""
    parser.add_argument("paths", nargs="+", help="files and folders to save")
    parser.add_argument("--to", required=True, help="the workspace folder, e.g. /content/drive/MyDrive/chinese-llama")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--replace", action="store_true", help="replace a file or folder of the same name that "
                        "another job saved (without it, such a save is refused and nothing is replaced)")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers save``."""
    for path in args.paths:
        print(copy_to_workspace(path, args.to, show_progress=False if args.no_progress else None,
                                replace=args.replace))
    return 0
