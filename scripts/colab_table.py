#!/usr/bin/env python3
"""Write README's table of which releases fit free Colab, from the planner (``helpers.merge.planner``).

Every LoRA and patch release of the catalog x {Q4_K_M, Q8_0}: peak RAM, output size, peak disk normally and in
low-disk mode, and the verdict, assuming free Colab's 12.7 GiB of RAM and 78 GiB of disk and the catalog's
architectures (no download). The table sits between two marker comments in README.md.

    python scripts/colab_table.py          # rewrite it
    python scripts/colab_table.py --check  # exit 1 when README.md is out of date
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
from helpers.colab import FREE_COLAB_DISK, FREE_COLAB_RAM  # noqa: E402
from helpers.merge.options import MergeOptions  # noqa: E402
from helpers.merge import plan_resources  # noqa: E402

os.environ.pop("HELPERS_LOCAL_MODELS", None)  # the table is of the real releases, never of a local stand-in

GB = 1 << 30
START, END = "<!-- colab-fit:start -->", "<!-- colab-fit:end -->"


def gb(n: int | None) -> str:
    return "-" if n is None else f"{n / GB:.1f}"


def table() -> str:
    """The markdown table (one row per release and type)."""
    rows = ["| release | size | type | RAM GB | output GB | disk GB | low-disk GB | free Colab |",
            "|---|---|---|---|---|---|---|---|"]
    for name in catalog.names(kind="lora") + catalog.names(kind="patch"):
        entry = catalog.get(name)
        base, loras = catalog.release_recipe(name)
        patch = loras.pop() if entry.kind == "patch" else None
        for outtype in ("q4_k_m", "q8_0"):
            p = plan_resources(base, loras, patch, options=MergeOptions(fmt="gguf", outtype=outtype), out="/content",
                               offline=True, free_disk=FREE_COLAB_DISK, free_ram=FREE_COLAB_RAM)
            verdict = ("fits" if p.fits and p.ram_fits else "low-disk mode" if p.fits_low_disk and p.ram_fits
                       else "does not fit")
            rows.append(f"| {name} | {entry.size} | {outtype.upper()} | {gb(p.ram_bytes)} | {gb(p.output_bytes)} | "
                        f"{gb(p.peak_disk)} | {gb(p.peak_disk_low)} | {verdict} |")
    return "\n".join(rows)


def main() -> int:
    return readme_block_main(__doc__.splitlines()[0], START, END, table, "free-Colab table", "colab_table.py")


if __name__ == "__main__":
    sys.exit(main())
