#!/usr/bin/env python3
"""Write README's table of which releases fit free Colab, from the planner (``helpers.merge.planner``).

Every LoRA and patch release of the catalog x {Q4_K_M, Q8_0}: peak RAM, output size, peak disk normally and in
low-disk mode, and the verdict, assuming free Colab's 12.7 GiB of RAM and 78 GiB of disk and the catalog's
architectures (no download). The table sits between two marker comments in README.md.

    python scripts/colab_table.py          # rewrite it
    python scripts/colab_table.py --check  # exit 1 when README.md is out of date
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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
        base, loras = catalog.merge_plan(name)
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when README.md's table is out of date")
    args = parser.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        sys.exit(f"README.md lacks the {START} / {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    rows = table()
    new = f"{head}{START}\n{rows}\n{END}{tail}"
    if args.check:
        if new != text:
            old = rest.split(END, 1)[0].strip().splitlines()
            changed = [f"  README: {o}\n  now:    {n}" for o, n in zip(old, rows.splitlines()) if o != n]
            print("README.md's free-Colab table is out of date: run python scripts/colab_table.py\n"
                  + "\n".join(changed[:5]))
            return 1
        return 0
    if new != text:
        readme.write_text(new, encoding="utf-8")
        print("rewrote the free-Colab table in README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
