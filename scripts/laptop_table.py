#!/usr/bin/env python3
"""Write README's "does it fit my laptop?" table, from ``helpers.merge.laptop``.

Every release of the catalog (LoRA, patch and full Chinese releases) x {Q8_0, Q6_K, Q4_K_M, IQ4_XS, Q3_K_M, IQ3_XXS}:
the GGUF's size (exact layout), the RAM llama.cpp needs to run it at a 4096-token context, and the smallest
laptop of 8, 16 or 32 GB it fits, from the catalog's architectures (no download). The table sits between two
marker comments in README.md.

    python scripts/laptop_table.py          # rewrite it
    python scripts/laptop_table.py --check  # exit 1 when README.md is out of date
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from readme_block import readme_block_main  # noqa: E402
from helpers import catalog  # noqa: E402
from helpers.merge.laptop import GB, LAPTOP_TYPES, release_fit  # noqa: E402

os.environ.pop("HELPERS_LOCAL_MODELS", None)  # the table is of the real releases, never of a local stand-in

START, END = "<!-- laptop-fit:start -->", "<!-- laptop-fit:end -->"


def releases() -> list[str]:
    """The releases in the table: every LoRA and patch release, and the Chinese full releases (not Meta's bases)."""
    full = [n for n in catalog.names(kind="full") if catalog.get(n).generation != "original"]
    return catalog.names(kind="lora") + catalog.names(kind="patch") + full


def cell(name: str, outtype: str) -> str:
    fit = release_fit(name, outtype)
    where = f"{fit.smallest_laptop} GB" if fit.smallest_laptop else "-"
    return f"{fit.file_bytes / GB:.1f} / {fit.ram_bytes / GB:.1f} / {where}"


def table() -> str:
    """The markdown table (one row per release, one column per type)."""
    rows = ["| release | size | " + " | ".join(t.upper() for t in LAPTOP_TYPES) + " |",
            "|---|---|" + "---|" * len(LAPTOP_TYPES)]
    for name in releases():
        rows.append(f"| {name} | {catalog.get(name).size} | " + " | ".join(cell(name, t) for t in LAPTOP_TYPES) + " |")
    return "\n".join(rows)


def main() -> int:
    return readme_block_main(__doc__.splitlines()[0], START, END, table, "laptop table", "laptop_table.py")


if __name__ == "__main__":
    sys.exit(main())
