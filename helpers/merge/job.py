"""The identity of a merge job, and whether an output already holds it.

"Already merged" must mean: the same inputs and the same options. Inputs are identified by content, not by
path, and cheaply, without hashing a 13 GB model on every run: each input file (weights, index, configs,
tokenizer files, the LoRA's own ``config.json``) is recorded as ``[name, size, sample digest]``, where the sample
digest (:func:`helpers.util.sample_digest`) hashes small files whole and, of large ones, the first MiB (the
safetensors header: names, shapes, dtypes), the last 64 KiB and 64 blocks spread evenly in between.

What it catches: another release or version of a file, a re-trained LoRA written over the old one (its data
differs everywhere), a truncated or grown file, any edit of a config or tokenizer, a file added or removed.
What it does not: an in-place edit that keeps the size and touches none of the sampled blocks (a flipped bit in
the middle of a shard); ``--sha256`` verification is the tool for that. Modification times are left out on
purpose: copying the same inputs elsewhere (Drive to local disk) must not make a finished merge look stale,
and the output's bytes must not depend on the inputs' dates.

The job is recorded where a later run reads it back cheaply and where it cannot drift from the output: in
``merge.json`` inside an HF / ``.pth`` folder, and as the GGUF metadata key :data:`JOB_KEY` inside a GGUF (a
sidecar file beside a GGUF could survive the GGUF being replaced by another tool; the key travels with the bytes
it describes and is written in the same atomic rename).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

from ..gguf import JOB_KEY, gguf_sidecars, read_metadata
from ..hub import DamagedDownload
from ..util import UserError, partial_path, read_json, remove, sample_digest
from .inputs import MergeInputs
from .awq import is_hub_file
from .options import MergeOptions
from .sources import SourceFiles



def file_digest(path: Path) -> str:
    """The digest that identifies a file: the hub's sha256 of a large file downloaded into the hub cache (its blob
    is named by it, so nothing is read, and it equals what the hub's listing says of a file never downloaded),
    else :func:`helpers.util.sample_digest`."""
    blob = path.resolve()
    if path.is_symlink() and blob.parent.name == "blobs" and len(blob.name) == 64:
        return f"sha256:{blob.name}"
    return sample_digest(path)


def _files(root: Path, files: list[Path], remote: list[list] = ()) -> list[list]:
    """``[name relative to root, size, digest]`` of each distinct file (and of the ``remote`` ones, files on the hub
    not downloaded: ``[name, size, sha256]``), in name order."""
    rows = {os.path.relpath(f, root): [f.stat().st_size, file_digest(f)] for f in files if f.is_file()}
    rows.update({name: [size, f"sha256:{sha}" if sha else ""] for name, size, sha in remote})
    return [[name, *rows[name]] for name in sorted(rows)]


def input_fingerprint(inputs: MergeInputs) -> list[dict]:
    """Every input file by content, per input (``base``, ``lora 1``..., ``patch``), in merge order."""
    base = inputs.base
    extra = base.tokenizer_files
    remote = getattr(base, "remote_files", [])  # a base streamed from the hub: its shards by the hub's sha256
    roles = [("base", inputs.base_dir, [*base.files, *extra, inputs.base_dir / "generation_config.json"], remote)]
    roles += [(f"lora {i}", a.path, [*a.files, a.path / "config.json"], a.remote_files)  # remote: still arriving
              for i, (_, a) in enumerate(inputs.adapters, 1)]
    if inputs.patch is not None:
        roles.append(("patch", inputs.patch.path, list(inputs.patch.files), []))
    return [{"role": role, "files": _files(root if root.is_dir() else root.parent, files, remote)}
            for role, root, files, remote in roles]


def job_identity(inputs: MergeInputs, options: MergeOptions) -> dict:
    """What makes two merges the same job: the inputs by content and every option that changes the output."""
    return {"inputs": input_fingerprint(inputs), "options": job_options(options)}


def job_options(options: MergeOptions) -> dict:
    """The options of a job record: every option that changes the output."""
    opts: dict = {"format": options.fmt, "outtype": options.outtype}
    if options.fmt != "gguf":  # SHA256SUMS lives inside the folder; a GGUF's .sha256 is beside it, not in it
        opts["sha256"] = options.write_sha256
    if options.fmt == "hf":
        opts["shard_bytes"] = options.max_shard_bytes
    if options.fmt == "pth":
        opts["pth_shards"] = options.pth_shards
    if options.imatrix is not None:
        opts["imatrix"] = sample_digest(Path(options.imatrix))
    if options.awq is not None:  # a hub file by name (its bytes are checked against the hub's digest when fetched)
        opts["awq"] = str(options.awq) if is_hub_file(options.awq) else sample_digest(Path(options.awq).expanduser())
    return opts


def made_from(target: Path, options: MergeOptions, sources: list[SourceFiles]) -> bool:
    """True when ``target`` (a finished output saved earlier, e.g. in a Drive workspace) holds this job as far as can
    be told before any download: the same options, the same inputs in the same roles, and every file it records
    with the hub's SHA256 is the file the hub lists under that name now (same size, same digest)."""
    old = recorded_job(target, options.fmt)
    if not isinstance(old, dict) or old.get("options") != job_options(options):
        return False
    inputs = old.get("inputs") or []
    if len(inputs) != len(sources):
        return False
    for recorded, source in zip(inputs, sources):
        hub_rows = [r for r in recorded["files"] if str(r[2]).startswith("sha256:")]
        if not hub_rows or any(source.files.get(name) != size or source.digests.get(name) != digest[7:]
                               for name, size, digest in hub_rows):
            return False
    return True


def recorded_job(target: Path, fmt: str) -> dict | None:
    """The job an existing output records (None: it records none, so it is not a merge output)."""
    if fmt == "gguf":
        if not target.is_file():
            return None
        try:
            text = read_metadata(target, (JOB_KEY,)).get(JOB_KEY)
        except UserError:  # not a GGUF at all
            return None
        try:
            return json.loads(text) if isinstance(text, str) else None
        except ValueError:
            return None
    info = target / "merge.json"
    return read_json(info).get("job") if info.is_file() else None


def job_difference(old: dict, new: dict) -> str:
    """What differs between a recorded job and this one, in a few words."""
    if not isinstance(old, dict) or "inputs" not in old or "options" not in old:
        return "its record comes from an older version of this tool"
    changed = [f"{k} {old['options'].get(k)} -> {v}" for k, v in new["options"].items() if old["options"].get(k) != v]
    if changed:
        return "other options: " + ", ".join(changed)
    if [i["role"] for i in old["inputs"]] != [i["role"] for i in new["inputs"]]:
        return f"other inputs: {', '.join(i['role'] for i in old['inputs'])}"
    for was, now in zip(old["inputs"], new["inputs"]):
        before, after = {f[0]: f for f in was["files"]}, {f[0]: f for f in now["files"]}
        differ = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
        if differ:
            return f"{now['role']}: {', '.join(differ[:3])} changed since the run that wrote it"
    return "another job"


def already_done(target: Path, fmt: str, job: dict, *, replace: bool = False) -> bool:
    """True if ``target`` holds this finished job; False if there is nothing there (or, with ``replace``, another
    merge: an earlier job's output that this one replaces); raise if it holds anything else (an unrelated file,
    another merge, the same merge of inputs that changed since)."""
    if not target.exists():
        return False
    old = recorded_job(target, fmt)
    if old == job:
        return True
    if replace and old is not None:
        print(f"{target} holds an earlier merge ({job_difference(old, job)}): replacing it")
        return False
    if old is None:
        if target.is_dir() and not any(target.iterdir()):
            return False
        raise UserError(f"{target} exists and is not the output of this merge (it records no merge job); pass "
                        "--overwrite to replace it or choose another --out")
    raise UserError(f"{target} holds a different merge ({job_difference(old, job)}); pass --overwrite to merge "
                    "again into it, or choose another --out")


@contextlib.contextmanager
def void_outputs_of_damaged_inputs(target: Path, fmt: str) -> Iterator[None]:
    """Around opening (downloading and checking) a merge's inputs: when a file in the hub cache proves damaged
    (:class:`~helpers.hub.integrity.DamagedDownload`, a download made before every file was checked), an output at
    ``target`` whose recorded job names that file's SHA256 was merged from the damaged bytes, and the rerun, once
    the file is downloaded again, would take it for finished (the same job): it is removed, with its partial output
    (a resume could reuse tensors merged from those bytes) and sidecars, and the error says so.
    """
    try:
        yield
    except DamagedDownload as exc:
        old = recorded_job(target, fmt) or {}
        digest = f"sha256:{exc.expected.hex}"
        used = [f for i in old.get("inputs", []) if isinstance(i, dict) for f in i.get("files", []) if digest in f]
        partial = partial_path(target)
        if not used and not partial.exists():
            raise
        for path in ([target, *(gguf_sidecars(target) if fmt == "gguf" else [])] if used else []) + [partial]:
            remove(path)
        what = f"{target} was merged from that damaged copy and has been removed" if used else \
            f"the partial output {partial.name} was removed"
        raise UserError(f"{exc}; {what}") from None
