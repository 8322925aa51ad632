"""``python -m helpers plan MODEL [--outtype TYPE] [--format FORMAT] [--out PATH]``: what a merge will download,
write and hold, and whether it fits here, before anything is downloaded."""
from __future__ import annotations

import argparse
import json

from ..catalog import get, merge_plan
from .options import FORMATS, MergeOptions
from .planner import plan_resources

GB = 1 << 30  # the --disk-gb and --ram-gb unit (GiB)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers plan``."""
    parser.add_argument("model", nargs="?", help="catalog name of a LoRA or patch release (its base and order come "
                                                 "from the catalog); or give --base / --lora")
    parser.add_argument("--base", help="base model: folder or hub id (default: the release's)")
    parser.add_argument("--lora", action="append", default=None, metavar="LORA", help="LoRA folder or hub id, in order")
    parser.add_argument("--format", choices=FORMATS, default="gguf", help="output format (default: gguf)")
    parser.add_argument("--outtype", default="q4_k_m", type=str.lower, help="output type (default: q4_k_m)")
    parser.add_argument("--out", default=".", help="where the output would go (its free space counts)")
    parser.add_argument("--offline", action="store_true", help="estimate catalog releases from their architectures "
                                                                "instead of reading the hub's file listing")
    parser.add_argument("--disk-gb", type=float, help="assume this much free disk (GiB) instead of measuring it")
    parser.add_argument("--ram-gb", type=float, help="assume this much available RAM (GiB) instead of measuring it")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers plan``: print the plan; exit 1 when it does not fit, even in low-disk mode."""
    from ..util import UserError

    patch = None
    if args.model:
        entry = get(args.model)
        base, loras = merge_plan(entry.name)
        if entry.kind == "patch":
            patch = loras.pop()
    elif args.base:
        base, loras = args.base, []
    else:
        raise UserError("give a release (python -m helpers plan chinese-alpaca-2-7b-lora) or --base [--lora ...]")
    base, loras = args.base or base, args.lora if args.lora is not None else loras
    options = MergeOptions(fmt=args.format, outtype=args.outtype)
    plan = plan_resources(base, loras, patch, options=options, out=args.out, offline=args.offline,
                          free_disk=int(args.disk_gb * GB) if args.disk_gb else None,
                          free_ram=int(args.ram_gb * GB) if args.ram_gb else None)
    if args.json:
        print(json.dumps({"download_bytes": plan.download_bytes, "output_bytes": plan.output_bytes,
                          "peak_disk": plan.peak_disk, "peak_disk_low_disk": plan.peak_disk_low,
                          "peak_ram": plan.ram_bytes, "free_disk": plan.free_disk, "free_ram": plan.free_ram,
                          "fits": plan.fits, "fits_low_disk": plan.fits_low_disk, "ram_fits": plan.ram_fits}, indent=2))
    else:
        print(plan.summary())
    return 0 if plan.ram_fits and (plan.fits or plan.fits_low_disk) else 1
