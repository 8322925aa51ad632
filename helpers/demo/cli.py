"""``python -m helpers demo --out DIR``: build the offline demo assets."""
from __future__ import annotations

import argparse
import json

from .build import build_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers demo``."""
    parser.add_argument("--out", required=True, help="folder to write the demo assets to")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if the folder is complete")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers demo``."""
    out = build_demo(args.out, overwrite=args.overwrite)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for name, info in manifest["assets"].items():
        print(f"{name:40s} {info['kind']:6s} vocab {info['vocab']}")
    print(f"demo assets in {out}; use them offline with: export HELPERS_LOCAL_MODELS={out.resolve()}")
    return 0
