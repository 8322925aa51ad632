"""What a merge's inputs are, before anything is downloaded: their files (sizes, and which are not here yet) and
the model they make (config, tensors in merge order, tokenizer bytes), from the local files or the hub's listing
and headers, or from the catalog's architectures when neither can be read.

:func:`gather_sources` collects all of it in one place; the planner (:mod:`.planner`) then only computes: it never
goes back to the hub.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import ModelEntry, config_of, find
from ..checkpoint import TensorSpec, llama_tensors
from ..hub import ModelRef, cached_files, fetch_file, file_listing, safetensors_file_header, safetensors_headers
from ..tokens import tokenizer_files
from ..util import UserError, read_json

WEIGHTS = (".safetensors", ".bin", ".pth", ".pt")
TOKENIZER = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "added_tokens.json")


@dataclass(frozen=True)
class SourceFiles:
    """One input of a merge: its files with their sizes and which of them still have to be downloaded."""

    role: str  # "base", "LoRA 1", ..., "patch"
    ref: ModelRef  # text is classified on creation
    files: dict[str, int]
    missing: dict[str, int] = field(default_factory=dict)
    estimated: bool = False  # sizes from the catalog's architectures (no listing was available)
    digests: dict[str, str] = field(default_factory=dict)  # the hub's SHA256 of its LFS files, by name

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "ref", ModelRef.of(self.ref))


@dataclass(frozen=True)
class Sources:
    """Every input of a merge and the model they make.

    Attributes:
        files: base, LoRAs and patch, in merge order, with their files.
        config: the merged model's config (the base's, with the vocabulary the LoRAs set).
        tensors: its tensors, in the order they are merged (the hub base's shard order).
        tokenizer_bytes: the tokenizer files that go with the output.
        awq: the AWQ results file applied to the merge (:mod:`.awq_plan`), None without one.
    """

    files: list[SourceFiles]
    config: dict
    tensors: list[TensorSpec]
    tokenizer_bytes: int
    awq: SourceFiles | None = None


def gather_sources(base: str, loras: list[str] = (), patch: str | None = None, *, offline: bool = False,
                   fresh: bool = False) -> Sources:
    """The :class:`Sources` of a merge, from the local files or the hub (listings, headers, ``config.json``); with
    ``offline`` catalog releases are estimated from their architectures; with ``fresh`` every hub file counts as
    still to download (a new runtime, where nothing is cached yet). An AWQ results file is added by
    :func:`.awq_plan.with_awq`.

    Raises:
        UserError: an input that cannot be found or listed, or a base whose architecture is unknown here.
    """
    files = inputs_of(base, list(loras), patch, offline=offline)
    if fresh:
        files = [dataclasses.replace(f, missing=dict(f.files)) if not f.ref.is_local else f for f in files]
    config, tensors, tokenizer = merged_layout(files)
    return Sources(files, config, tensors, tokenizer)


def source_files(ref: str | Path | ModelRef, role: str) -> SourceFiles:
    """The files ``ref`` (a folder, a mirrored repo or a hub repo) holds and which are not on this machine yet,
    from the local files or the hub's listing; nothing is downloaded."""
    ref = ModelRef.of(ref)
    listing = file_listing(ref, what=role)
    files = {n: size for n, (size, _sha) in listing.items()}
    if ref.is_local:
        return SourceFiles(role, ref, files)
    present = cached_files(ref, list(files))
    return SourceFiles(role, ref, files, {n: b for n, b in files.items() if n not in present},
                       digests={n: sha for n, (_size, sha) in listing.items() if sha})


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
        total = sum(tp.numel for tp in llama_tensors(config)) * 2
        cap = (5 if entry.family == "llama3" else 10) * 10**9  # transformers fills each shard up to its cap
        sizes = [cap] * (total // cap) + ([total % cap] if total % cap else [])
        files = {f"model-{i:05d}-of-{len(sizes):05d}.safetensors": b for i, b in enumerate(sizes, 1)}
        files["config.json"] = 1 << 10
    files["tokenizer.model"] = 1 << 20
    return SourceFiles(role, entry.hub_id, files, dict(files), estimated=True)


def inputs_of(base: str | ModelRef, loras: list, patch: str | ModelRef | None, *, offline: bool = False) -> list[SourceFiles]:
    """The :class:`SourceFiles` of every input; with ``offline`` (or when a listing fails) catalog releases are
    estimated from their architectures."""
    refs = [("base", base)] + [(f"LoRA {i}" if len(loras) > 1 else "LoRA", x) for i, x in enumerate(loras, 1)]
    refs += [("patch", patch)] if patch else []
    out = []
    for role, ref in refs:
        ref = ModelRef.of(ref)
        entry = ref.entry
        if offline and entry is not None:
            out.append(estimated_source(entry, role))
            continue
        out.append(source_files(ref, role))
    return out


def merged_layout(sources: list[SourceFiles]) -> tuple[dict, list[TensorSpec], int]:
    """The merged model's config, tensors and tokenizer bytes, before anything is downloaded.

    Local inputs are opened (headers only) and planned exactly as the merge plans them; otherwise the base's
    architecture comes from the catalog (or its local config.json) and the vocabulary from the last LoRA that
    sets one (its catalog entry, or its saved embeddings when it is local).

    Raises:
        UserError: a base neither local nor in the catalog.
    """
    if all(s.ref.is_local for s in sources):
        from .inputs import open_inputs
        from .preflight import merge_layout

        loras = [s.ref for s in sources[1:] if s.role.startswith("LoRA")]
        patch = next((s.ref for s in sources[1:] if s.role == "patch"), None)
        inputs = open_inputs(sources[0].ref, loras, patch)
        try:
            plan = merge_layout(inputs)
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
    return config, _hub_order(sources[0], llama_tensors(config)), tokenizer


def source_config(source: SourceFiles) -> dict:
    """A model's config.json: from disk, from the hub (one small file), or, for an estimated catalog release,
    the catalog's architecture.

    Raises:
        UserError: a base neither local nor on the hub nor in the catalog.
    """
    if source.ref.is_local:
        return _local_config(source)
    if not source.estimated and "config.json" in source.files:
        return read_json(fetch_file(source.ref, "config.json", what="base model"))
    entry = source.ref.entry
    config = config_of(entry) if entry is not None else None
    if config is None:
        raise UserError(f"cannot plan {source.ref}: it has no config.json and is not a catalog release")
    return config


def _lora_vocab(source: SourceFiles) -> int | None:
    """The vocabulary a LoRA sets: the rows of its saved embeddings (from its files, or from the safetensors
    header on the hub), else its catalog entry's."""
    if source.ref.is_local:
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
    entry = source.ref.entry
    return entry.vocab_size if entry is not None and entry.kind == "lora" else None


def _hub_order(source: SourceFiles, tensors: list[TensorSpec]) -> list[TensorSpec]:
    """``tensors`` in the order the hub base's safetensors shards hold them (the order they are merged in), read
    from the shards' headers; unchanged when the base has no safetensors or its headers cannot be read."""
    if source.estimated or source.ref.is_local or not any(n.endswith(".safetensors") for n in source.files):
        return tensors
    try:
        headers = safetensors_headers(source.ref, what=source.role)
    except UserError:
        return tensors
    order = {name: i for i, name in enumerate(n for shard in sorted(headers)
                                              for n, _ in sorted(headers[shard].items(), key=lambda kv: kv[1][2]))}
    return sorted(tensors, key=lambda tp: order.get(tp.name, len(order)))


def _local_config(source: SourceFiles) -> dict | None:
    """The config.json of a local base (or of a Meta checkpoint's params.json), read from disk."""
    if not source.ref.is_local:
        return None
    from ..checkpoint import open_checkpoint
    from ..hub import resolve_model

    with open_checkpoint(resolve_model(source.ref)) as ckpt:
        return dict(ckpt.config)
