"""The AWQ results file in a merge's plan, before anything is downloaded: its size (the hub's listing, else an
estimate from the model's shape) and whether it is still to download, so the plan's download and peak disk count
it. The merge downloads it first, before the weights (:func:`helpers.merge.core.merge` checks it against the model
at once)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

from ..checkpoint import TensorSpec
from ..hub import cached_files, file_listing
from ..util import UserError
from .awq import is_hub_file
from .sources import SourceFiles, Sources

ROLE = "AWQ file"  # the role the plan names it by
SCALE_BYTES = 2  # llm-awq searches a float16 model: its scales and clipping ranges are float16 tensors
CLIP_GROUP = 128  # the published results' group size (``-w4-g128``): a clipping range per row and 128 inputs
CLIPPED = ("self_attn.v_proj.weight", "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
           "mlp.down_proj.weight")  # llm-awq's auto_clip_block leaves q/k unclipped


def estimated_awq_bytes(tensors: Iterable[TensorSpec]) -> int:
    """About the size of llm-awq's results for a Llama model of ``tensors`` (float16, group 128): per layer the
    scales of ``input_layernorm``, ``v_proj -> o_proj`` (without grouped-query attention), ``post_attention_layernorm``
    and ``up_proj``, and a clipping range per row and group of v/o/gate/up/down."""
    shapes = {t.name: tuple(t.shape) for t in tensors}
    values = 0
    for name, shape in shapes.items():
        if name.endswith(("input_layernorm.weight", "post_attention_layernorm.weight", "mlp.up_proj.weight")):
            values += shape[0]
        elif name.endswith("self_attn.v_proj.weight") and shape == shapes.get(name.replace("v_proj", "o_proj")):
            values += shape[0]
        if name.endswith(CLIPPED) and len(shape) == 2:
            values += shape[0] * max(shape[1] // CLIP_GROUP, 1)
    return values * SCALE_BYTES


def awq_source(ref: str | Path, tensors: Iterable[TensorSpec], *, offline: bool = False,
               fresh: bool = False) -> SourceFiles:
    """The AWQ results ``ref`` as one more input of the merge: a local file (nothing to download), or a hub file
    ``owner/repo/name`` sized from the repo's listing (``offline``: estimated from the model's ``tensors``);
    ``fresh`` counts it as still to download (a new runtime).

    Raises:
        UserError: the repo can be listed and has no such file (the message names the files it has).
    """
    if not is_hub_file(ref):
        path = Path(ref).expanduser()
        return SourceFiles(ROLE, str(ref), {path.name: path.stat().st_size if path.is_file() else 0})
    owner, repo, name = str(ref).split("/", 2)
    repo_id = f"{owner}/{repo}"
    if offline:
        size = estimated_awq_bytes(tensors)
        return SourceFiles(ROLE, str(ref), {name: size}, {name: size}, estimated=True)
    listing = file_listing(repo_id, what="AWQ results")
    if name not in listing:
        held = ", ".join(n for n in listing if n.endswith(".pt")) or "no .pt files"
        raise UserError(f"AWQ results {ref}: {repo_id} has no {name} (it has {held})")
    size, sha = listing[name]
    cached = set() if fresh else cached_files(repo_id, [name])
    return SourceFiles(ROLE, str(ref), {name: size}, {} if name in cached else {name: size},
                       digests={name: sha} if sha else {})


def with_awq(sources: Sources, awq: str | Path | None, *, offline: bool = False, fresh: bool = False) -> Sources:
    """``sources`` with the AWQ results file ``awq`` as one more input (:func:`awq_source`); unchanged without one."""
    if awq is None:
        return sources
    return dataclasses.replace(sources, awq=awq_source(awq, sources.tensors, offline=offline, fresh=fresh))
