"""``python -m helpers demo --out DIR``: build the offline demo assets."""
from __future__ import annotations

import json
from dataclasses import MISSING, dataclass

from ..util.params import param
from .build import build_demo


@dataclass(frozen=True)
class DemoOptions:
    """Where the demo assets go."""

    out: str = param(MISSING, "folder to write the demo assets to")
    overwrite: bool = param(False, "rebuild even if the folder is complete")


OPTIONS = (DemoOptions,)


def main(options: DemoOptions) -> int:
    """Build the assets; list them."""
    out = build_demo(options.out, overwrite=options.overwrite)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for name, info in manifest["assets"].items():
        print(f"{name:40s} {info['kind']:6s} vocab {info['vocab']}")
    print(f"demo assets in {out}; use them offline with: export HELPERS_LOCAL_MODELS={out.resolve()}")
    return 0
