"""The identity of a merge job, and whether an output already holds it."""
from __future__ import annotations

from pathlib import Path

from ..util import UserError, read_json
from .options import MergeOptions


def job_identity(base: str | Path, loras: list[str | Path], patch: str | Path | None, options: MergeOptions) -> dict:
    """What makes two merges the same job: the inputs (resolved paths or hub ids), the format and the type."""
    def ident(ref):
        p = Path(str(ref)).expanduser()
        return str(p.resolve()) if p.exists() else str(ref)

    job = {"base": ident(base), "loras": [ident(x) for x in loras], "patch": ident(patch) if patch else None,
           "format": options.fmt, "outtype": options.outtype}
    if options.imatrix is not None:
        job["imatrix"] = ident(options.imatrix)
    return job


def already_done(target: Path, fmt: str, job: dict) -> bool:
    """True if ``target`` holds this finished job; raise if it holds something else."""
    if not target.exists():
        return False
    if fmt == "gguf":
        return True
    info = target / "merge.json"
    if info.is_file():
        if read_json(info).get("job") == job:
            return True
        raise UserError(f"{target} holds a different merge; pass --overwrite to replace it or choose another --out")
    if target.is_dir() and not any(target.iterdir()):
        return False
    raise UserError(f"{target} exists and is not a merge output; choose another --out or pass --overwrite")
