"""``python -m helpers plan MODEL [--outtype TYPE] [--format FORMAT] [--awq FILE] [--out PATH]``: what a merge
will download (the AWQ results too), write and hold, and whether it fits here, before anything is downloaded; for a
GGUF, also what running it at a 4096-token context needs and which laptops it fits (:mod:`.laptop`)."""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..catalog import get, release_recipe
from ..gguf import NEEDS_IMATRIX, gguf_outtype
from ..util import UserError
from ..util.params import param, param_like
from .laptop import GB, LAPTOPS_GB, sources_fit  # GB: the --disk-gb and --ram-gb unit (GiB)
from .options import MergeOptions
from .planner import plan_resources


@dataclass(frozen=True)
class PlanRequest:
    """The merge to plan (a catalog release, or a base and LoRAs) and the machine to plan it for."""

    model: str | None = param(None, "catalog name of a LoRA or patch release (its base and order come from the "
                              "catalog); or give --base / --lora", flag="model")
    base: str | None = param(None, "base model: folder or hub id (default: the release's)")
    lora: list[str] = param([], "LoRA folder or hub id, in order", many=True, metavar="LORA")
    fmt: str = param_like(MergeOptions, "fmt", "gguf")
    outtype: str = param_like(MergeOptions, "outtype", "q4_k_m")
    awq: str | None = param_like(MergeOptions, "awq", None)
    out: str = param(".", "where the output would go (its free space counts)")
    offline: bool = param(False, "estimate catalog releases from their architectures instead of reading the hub's "
                          "file listing")
    disk_gb: float | None = param(None, "assume this much free disk (GiB) instead of measuring it", parse=float)
    ram_gb: float | None = param(None, "assume this much available RAM (GiB) instead of measuring it", parse=float)
    json: bool = param(False, "print the plan as JSON")


OPTIONS = (PlanRequest,)


def main(args: PlanRequest) -> int:
    """Print the plan; exit 1 when it does not fit, even in low-disk mode."""
    patch = None
    if args.model:
        entry = get(args.model)
        base, loras = release_recipe(entry.name)
        if entry.kind == "patch":
            patch = loras.pop()
    elif args.base:
        base, loras = args.base, []
    else:
        raise UserError("give a release (python -m helpers plan chinese-alpaca-2-7b-lora) or --base [--lora ...]")
    base, loras = args.base or base, args.lora or loras
    outtype = gguf_outtype(args.outtype, imatrix=True) if args.fmt == "gguf" else args.outtype
    route = outtype in NEEDS_IMATRIX  # made through the importance-matrix route: a Q8_0 merge first
    options = MergeOptions(fmt=args.fmt, outtype="q8_0" if route else outtype, awq=args.awq)
    plan = plan_resources(base, loras, patch, options=options, out=args.out, offline=args.offline,
                          free_disk=int(args.disk_gb * GB) if args.disk_gb else None,
                          free_ram=int(args.ram_gb * GB) if args.ram_gb else None)
    fit = sources_fit(plan.sources, outtype=outtype) if args.fmt == "gguf" else None
    if args.json:
        run = {"run_ctx": fit.n_ctx, "run_file_bytes": fit.file_bytes, "run_ram_bytes": fit.ram_bytes,
               "run_fits_laptops_gb": [g for g in LAPTOPS_GB if fit.fits(g)]} if fit else {}
        awq = {"awq_bytes": plan.awq.total, "awq_to_download": plan.awq.to_download} if plan.awq else {}
        print(json.dumps({"download_bytes": plan.download_bytes, "output_bytes": plan.output_bytes,
                          "peak_disk": plan.peak_disk, "peak_disk_low_disk": plan.peak_disk_low,
                          "low_disk_shards_at_once": 1 + plan.low_disk_ahead,
                          "peak_ram": plan.ram_bytes, "free_disk": plan.free_disk, "free_ram": plan.free_ram,
                          "fits": plan.fits, "fits_low_disk": plan.fits_low_disk, "ram_fits": plan.ram_fits,
                          **awq, **run}, indent=2))
    else:
        print(plan.summary())
        if route:
            extra = f" (+{fit.file_bytes / GB:.1f} GB on disk until the Q8_0 is deleted)" if fit else ""
            print(f"  {outtype} needs an importance matrix: the merge goes to Q8_0 first (planned above), then "
                  f"{outtype}{extra} (helpers.imatrix.imatrix_route)")
        if fit is not None:
            print("  " + fit.summary())
    return 0 if plan.ram_fits and (plan.fits or plan.fits_low_disk) else 1
