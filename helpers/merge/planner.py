"""Before any download: what a merge will fetch, write and hold, and whether this machine has room for it.

:func:`plan_resources` works from the hub's file listing (sizes, no download) or the local files, and from the
catalog's architectures when the inputs are not here yet:

- **download**: the files of the base, the LoRAs and the patch that are not on this machine yet (duplicate
  weight copies left out, as the download leaves them out);
- **output**: the finished output, exactly as the writers lay it out (GGUF at any type, HF or ``.pth``);
- **peak disk**: downloads + output normally; in *low-disk mode* (the base fetched and deleted one shard at a
  time) the largest base shard + the rest of the downloads + output;
- **peak RAM** (:mod:`.sizes`): about 250 MB of libraries, then at the worst moment a tensor in float32 and
  as written (its float16 copy, or its quantized bytes; two neighbours for a quantized GGUF); flat in depth.

:class:`ResourcePlan` says whether it fits the free disk and RAM it measured (or those it is told to assume, e.g.
free Colab's), and :meth:`ResourcePlan.refusal` names what would fit instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import ModelEntry, config_of, find
from ..checkpoint import TensorPlan, llama_plan
from ..env import available_ram_bytes
from ..gguf import BITS_PER_WEIGHT
from ..hub import (cached_files, current_hub_id, fetch_file, file_sizes, hub_cache_dir, is_local,
                   safetensors_file_header, safetensors_headers)
from ..tokens import tokenizer_files
from ..util import UserError, free_disk_bytes, human_bytes, read_json, tree_bytes
from .options import MergeOptions
from .sizes import output_size, peak_ram

WEIGHTS = (".safetensors", ".bin", ".pth", ".pt")
TOKENIZER = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "added_tokens.json")


@dataclass(frozen=True)
class SourceFiles:
    """One input of a merge: its files with their sizes and which of them still have to be downloaded."""

    role: str  # "base", "LoRA 1", ..., "patch"
    ref: str
    files: dict[str, int]
    missing: dict[str, int] = field(default_factory=dict)
    estimated: bool = False  # sizes from the catalog's architectures (no listing was available)

    @property
    def weights(self) -> dict[str, int]:
        """The weight files among :attr:`files`."""
        return {n: b for n, b in self.files.items() if n.endswith(WEIGHTS)}

    @property
    def total(self) -> int:
        return sum(self.files.values())

    @property
    def to_download(self) -> int:
        return sum(self.missing.values())

    @property
    def streamable(self) -> bool:
        """True when low-disk mode can fetch this base one shard at a time: safetensors shards still on the hub."""
        shards = [n for n in self.missing if n.endswith(".safetensors")]
        return len(shards) > 1 and not any(n.endswith(WEIGHTS[1:]) for n in self.weights)


@dataclass(frozen=True)
class ResourcePlan:
    """What a merge needs, and what this machine (or the one assumed) has.

    Attributes:
        sources: base, LoRAs and patch, with their files.
        options: format and type of the output.
        output_bytes: the finished output.
        ram_bytes: the merge's peak RAM.
        free_disk: free bytes where the downloads and the output go (the smaller, if they differ);
        free_ram: available RAM (None: unknown).
        out_dir: where the output goes.
    """

    sources: list[SourceFiles]
    options: MergeOptions
    output_bytes: int
    ram_bytes: int
    free_disk: int
    free_ram: int | None
    out_dir: Path

    @property
    def download_bytes(self) -> int:
        return sum(s.to_download for s in self.sources)

    @property
    def peak_disk(self) -> int:
        """New bytes on disk at the peak: every download, then the output beside them."""
        return self.download_bytes + self.output_bytes

    @property
    def peak_disk_low(self) -> int | None:
        """The same in low-disk mode (None when the base cannot be streamed: it is local, or not safetensors)."""
        base = self.sources[0]
        if not base.streamable:
            return None
        shards = {n: b for n, b in base.missing.items() if n.endswith(".safetensors")}
        return self.peak_disk - sum(shards.values()) + max(shards.values())

    @property
    def fits(self) -> bool:
        return self.peak_disk <= self.free_disk

    @property
    def fits_low_disk(self) -> bool:
        return self.peak_disk_low is not None and self.peak_disk_low <= self.free_disk

    @property
    def ram_fits(self) -> bool:
        return self.free_ram is None or self.ram_bytes <= self.free_ram

    def summary(self) -> str:
        """A few lines for the user: download, output, peak disk (both modes), peak RAM, the verdict."""
        o = self.options
        lines = [f"plan: {self.sources[0].ref}" + "".join(f" + {s.ref}" for s in self.sources[1:])
                 + f" -> {o.fmt.upper()} {o.outtype}" + (" (sizes estimated from the catalog)"
                                                        if any(s.estimated for s in self.sources) else "")]
        for s in self.sources:
            w = s.weights
            shards = f" in {len(w)} files, largest {human_bytes(max(w.values()))}" if len(w) > 1 else ""
            lines.append(f"  {s.role:8s} {human_bytes(s.total):>9s}{shards}; to download {human_bytes(s.to_download)}"
                         f"  ({s.ref})")
        lines.append(f"  output   {human_bytes(self.output_bytes):>9s}  ({self.out_dir})")
        low = self.peak_disk_low
        lines.append(f"  disk     {human_bytes(self.peak_disk):>9s} at the peak"
                     + (f", {human_bytes(low)} in low-disk mode" if low is not None else "")
                     + f"; {human_bytes(self.free_disk)} free")
        lines.append(f"  RAM      {human_bytes(self.ram_bytes):>9s} at the peak"
                     + (f"; {human_bytes(self.free_ram)} available" if self.free_ram is not None else ""))
        verdict = ("fits" if self.fits else "fits in low-disk mode (one base shard at a time)" if self.fits_low_disk
                   else "does NOT fit the disk")
        lines.append(f"  -> {verdict}" + ("" if self.ram_fits else "; does NOT fit the RAM"))
        return "\n".join(lines)

    def refusal(self, *, low_disk: bool = False) -> str | None:
        """Why the merge cannot run here, naming what would fit (None: it fits, in low-disk mode if asked)."""
        if not self.ram_fits:
            return (f"the merge needs about {human_bytes(self.ram_bytes)} of RAM and "
                    f"{human_bytes(self.free_ram or 0)} are available: close other programs or use a larger runtime")
        if self.fits if not low_disk else self.fits_low_disk:
            return None
        need = self.peak_disk_low if low_disk else self.peak_disk
        return (f"the merge needs {human_bytes(need)} of disk ({human_bytes(self.download_bytes)} to download, "
                f"{human_bytes(self.output_bytes)} of output) but {human_bytes(self.free_disk)} are free: "
                + self.disk_fixes(low_disk=low_disk))

    def disk_fixes(self, *, low_disk: bool = False) -> str:
        """What would make the disk fit: low-disk mode, a smaller type, another place ("use ..., or ...")."""
        ways = []
        if not low_disk and self.fits_low_disk:
            ways.append(f"low-disk mode (--low-disk: {human_bytes(self.peak_disk_low)})")
        smaller = _smaller_type(self)
        if smaller:
            ways.append(smaller)
        ways.append("another output folder or runtime with more free space")
        return "use " + ", or ".join(ways)


def _smaller_type(plan: ResourcePlan) -> str | None:
    """A smaller output type that would make the plan fit, named with its peak (None: none would)."""
    if plan.options.fmt != "gguf":
        return None
    base = plan.peak_disk_low if plan.fits_low_disk or plan.peak_disk_low is not None else plan.peak_disk
    for t in ("q8_0", "q5_k_m", "q4_k_m", "q3_k_m"):
        if t == plan.options.outtype:
            break
        ratio = BITS_PER_WEIGHT[t] / BITS_PER_WEIGHT[plan.options.outtype]
        need = base - plan.output_bytes + int(plan.output_bytes * ratio)
        if need <= plan.free_disk:
            return f"a smaller type such as --outtype {t} (about {human_bytes(need)})"
    return None


# ------------------------------------------------------------------------------------------------ the inputs
def source_files(ref: str | Path, role: str) -> SourceFiles:
    """The files ``ref`` (a folder, a mirrored repo or a hub repo) holds and which are not on this machine yet,
    from the local files or the hub's listing; nothing is downloaded."""
    ref = str(ref)
    files = file_sizes(ref, what=role)
    if is_local(ref):
        return SourceFiles(role, ref, files)
    present = cached_files(ref, list(files))
    return SourceFiles(role, ref, files, {n: b for n, b in files.items() if n not in present})


def estimated_source(entry: ModelEntry, role: str, *, lora_rank: int = 64) -> SourceFiles:
    """The files of a catalog release estimated from its architecture (when its listing cannot be read): fp16
    safetensors shards filled up to 10 GB (5 GB for Llama-3), or a LoRA of ``lora_rank`` on the seven projections
    with the full embeddings when its vocabulary is the expanded one."""
    config = config_of(entry)
    if config is None:
        return SourceFiles(role, entry.hub_id, {}, {}, estimated=True)
    if entry.kind == "lora":
        h, f, n = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
        kv = h * config["num_key_value_heads"] // config["num_attention_heads"]
        lora = n * lora_rank * (2 * (h + h) + 2 * (h + kv) + 2 * (h + f) + (f + h)) * 2
        base = find(entry.base[0]) if entry.base else None
        embeddings = 2 * entry.vocab_size * h * 2 if base is None or base.vocab_size != entry.vocab_size else 0
        files = {"adapter_model.safetensors": lora + embeddings, "adapter_config.json": 1 << 10}
    else:
        total = sum(tp.numel for tp in llama_plan(config)) * 2
        cap = (5 if entry.family == "llama3" else 10) * 10**9  # transformers fills each shard up to its cap
        sizes = [cap] * (total // cap) + ([total % cap] if total % cap else [])
        files = {f"model-{i:05d}-of-{len(sizes):05d}.safetensors": b for i, b in enumerate(sizes, 1)}
        files["config.json"] = 1 << 10
    files["tokenizer.model"] = 1 << 20
    return SourceFiles(role, entry.hub_id, files, dict(files), estimated=True)


def inputs_of(base: str, loras: list[str], patch: str | None, *, offline: bool = False) -> list[SourceFiles]:
    """The :class:`SourceFiles` of every input; with ``offline`` (or when a listing fails) catalog releases are
    estimated from their architectures."""
    refs = [("base", base)] + [(f"LoRA {i}" if len(loras) > 1 else "LoRA", x) for i, x in enumerate(loras, 1)]
    refs += [("patch", patch)] if patch else []
    out = []
    for role, ref in refs:
        entry = find(str(ref)) if not is_local(ref) else None
        if offline and entry is not None:
            out.append(estimated_source(entry, role))
            continue
        out.append(source_files(ref, role))
    return out


# ------------------------------------------------------------------------------------------------ the output
def planned_model(sources: list[SourceFiles]) -> tuple[dict, list[TensorPlan], int]:
    """The merged model's config, tensors and tokenizer bytes, before anything is downloaded.

    Local inputs are opened (headers only) and planned exactly as the merge plans them; otherwise the base's
    architecture comes from the catalog (or its local config.json) and the vocabulary from the last LoRA that
    sets one (its catalog entry, or its saved embeddings when it is local).

    Raises:
        UserError: a base neither local nor in the catalog.
    """
    if all(is_local(s.ref) for s in sources):
        from .inputs import open_inputs
        from .preflight import plan_merge

        loras = [s.ref for s in sources[1:] if s.role.startswith("LoRA")]
        patch = next((s.ref for s in sources[1:] if s.role == "patch"), None)
        inputs = open_inputs(sources[0].ref, loras, patch)
        try:
            plan = plan_merge(inputs)
        finally:
            inputs.close()
        tokenizer = sum(f.stat().st_size for f in tokenizer_files(plan.tokenizer_dir))
        return plan.config, plan.tensors, tokenizer
    config = source_config(sources[0])
    for s in sources[1:]:
        vocab = _lora_vocab(s)
        if vocab and vocab > config["vocab_size"]:
            config["vocab_size"] = vocab
    tokenizer = next((sum(b for n, b in s.files.items() if n in TOKENIZER) for s in reversed(sources)
                      if any(n in TOKENIZER for n in s.files)), 0)
    return config, _hub_order(sources[0], llama_plan(config)), tokenizer


def source_config(source: SourceFiles) -> dict:
    """A model's config.json: from disk, from the hub (one small file), or, for an estimated catalog release,
    the catalog's architecture.

    Raises:
        UserError: a base neither local nor on the hub nor in the catalog.
    """
    if is_local(source.ref):
        return _local_config(source)
    if not source.estimated and "config.json" in source.files:
        return read_json(fetch_file(source.ref, "config.json", what="base model"))
    entry = find(current_hub_id(source.ref))
    config = config_of(entry) if entry is not None else None
    if config is None:
        raise UserError(f"cannot plan {source.ref}: it has no config.json and is not a catalog release")
    return config


def _lora_vocab(source: SourceFiles) -> int | None:
    """The vocabulary a LoRA sets: the rows of its saved embeddings (from its files, or from the safetensors
    header on the hub), else its catalog entry's."""
    if is_local(source.ref):
        from ..checkpoint import open_adapter
        from ..hub import resolve_model

        adapter = open_adapter(resolve_model(source.ref))
        try:
            return adapter.embed_rows
        finally:
            adapter.close()
    if not source.estimated and "adapter_model.safetensors" in source.files:
        shapes = safetensors_file_header(source.ref, "adapter_model.safetensors", what=source.role)
        rows = [s[0] for n, s in shapes.items() if ("embed_tokens" in n or "lm_head" in n) and "lora_" not in n]
        return max(rows) if rows else None
    entry = find(current_hub_id(source.ref))
    return entry.vocab_size if entry is not None and entry.kind == "lora" else None


def _hub_order(source: SourceFiles, tensors: list[TensorPlan]) -> list[TensorPlan]:
    """``tensors`` in the order the hub base's safetensors shards hold them (the order they are merged in), read
    from the shards' headers; unchanged when the base has no safetensors or its headers cannot be read."""
    if source.estimated or is_local(source.ref) or not any(n.endswith(".safetensors") for n in source.files):
        return tensors
    try:
        headers = safetensors_headers(source.ref, what=source.role)
    except UserError:
        return tensors
    order = {name: i for i, name in enumerate(n for shard in sorted(headers)
                                              for n, _ in sorted(headers[shard].items(), key=lambda kv: kv[1][2]))}
    return sorted(tensors, key=lambda tp: order.get(tp.name, len(order)))


def plan_resources(base: str, loras: list[str] = (), patch: str | None = None, *, options: MergeOptions,
                   out: str | Path, offline: bool = False, free_disk: int | None = None,
                   free_ram: int | None = None, partial: str | Path | None = None) -> ResourcePlan:
    """Plan a merge before anything is downloaded.

    Args:
        base, loras, patch: as for :func:`helpers.merge.merge`.
        options: format, type and the rest of the merge's settings.
        out: the output path (its filesystem's free space counts, and the hub cache's).
        offline: estimate catalog releases from their architectures instead of reading the hub's listing.
        free_disk, free_ram: assume these instead of measuring (e.g. free Colab's 78 GB and 12.7 GB).
        partial: the unfinished output of an interrupted run: what it holds is not needed again.

    Raises:
        UserError: an input that cannot be found or listed, or a base whose architecture is unknown here.
    """
    loras = [str(x) for x in loras]
    sources = inputs_of(str(base), loras, str(patch) if patch else None, offline=offline)
    config, tensors, tokenizer = planned_model(sources)
    target = options.target(out)
    if free_disk is None:
        places = {free_disk_bytes(target.parent), free_disk_bytes(hub_cache_dir())}
        free_disk = min(places)
    written = tree_bytes(partial) if partial is not None else 0
    return ResourcePlan(sources=sources, options=options,
                        output_bytes=max(output_size(config, tensors, options, tokenizer) - written, 0),
                        ram_bytes=peak_ram(config, tensors, options), free_disk=free_disk,
                        free_ram=available_ram_bytes() if free_ram is None else free_ram, out_dir=target)


def _local_config(source: SourceFiles) -> dict | None:
    """The config.json of a local base (or of a Meta checkpoint's params.json), read from disk."""
    if not is_local(source.ref):
        return None
    from ..checkpoint import open_checkpoint
    from ..hub import resolve_model

    with open_checkpoint(resolve_model(source.ref)) as ckpt:
        return dict(ckpt.config)
