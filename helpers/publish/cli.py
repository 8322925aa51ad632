"""``python -m helpers push PATH... --repo ID``: upload outputs to the hub with a model card."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..util import UserError
from .card import CARD_KINDS, ReleaseCard
from .push import push_to_hub

# a GGUF type in a file name: ggml-model-q4_k.gguf, model.Q4_K_M.gguf, x-f16.gguf, y-iq2_xs-im.gguf
_QUANT_IN_NAME = re.compile(r"(?i)(?:^|[-_.])((?:i?q\d(?:_[a-z0-9]+)*)|bf16|f16|f32)(?=[-.]|$)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers push``."""
    parser.add_argument("paths", nargs="+", help="files and folders to push (one folder: its files at the root)")
    parser.add_argument("--repo", required=True, help="owner/name, or name for your own account")
    parser.add_argument("--base", help="the base model (catalog name, hub id or folder): writes a model card")
    parser.add_argument("--lora", action="append", default=[], help="a LoRA merged into the base, in order")
    parser.add_argument("--kind", choices=CARD_KINDS, help="what is pushed (default: gguf when a .gguf is among "
                        "the paths, adapter for an adapter folder, else merged)")
    parser.add_argument("--quant", help="the GGUF type (default: read from the .gguf file name)")
    parser.add_argument("--how", default="", help="how it was made, for the model card")
    parser.add_argument("--public", action="store_true", help="create the repo public (default: private)")


def card_from_args(args: argparse.Namespace) -> ReleaseCard | None:
    """The model card the arguments describe (``None`` without ``--base``)."""
    if not args.base:
        return None
    paths = [Path(p) for p in args.paths]
    ggufs = [p for p in paths if p.suffix == ".gguf"]
    adapter = any((p / "adapter_config.json").is_file() for p in paths if p.is_dir())
    kind = args.kind or ("gguf" if ggufs else "adapter" if adapter and not args.lora else "merged")
    quant = args.quant
    if kind == "gguf" and not quant:
        found = {m.group(1).lower() for p in ggufs if (m := _QUANT_IN_NAME.search(p.stem))}
        if len(found) != 1:
            raise UserError("cannot tell the GGUF type from the file names; give --quant (e.g. --quant q4_k_m)")
        quant = found.pop()
    return ReleaseCard(args.base, tuple(args.lora), kind=kind, quant=quant if kind == "gguf" else None,
                       how=args.how)


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers push``."""
    result = push_to_hub(args.paths, args.repo, card=card_from_args(args), private=not args.public)
    print(result)
    return 0
