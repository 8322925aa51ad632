"""Sizes a notebook needs before anything is downloaded: a model's files, its weights in memory at each
precision, its KV cache, and a GGUF chosen from a release repo."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..catalog import ModelEntry, config_of, find
from ..chat import DEFAULT_N_CTX, choose_gguf
from ..checkpoint import llama_tensors
from ..gguf import BITS_PER_WEIGHT, qtype_name, read_metadata
from ..hub import file_sizes, looks_like_hub_id
from ..merge import SourceFiles
from ..merge.sources import estimated_source, source_config, source_files
from ..util import UserError
from .runtime import GIB


RUNTIME_OVERHEAD = GIB // 2  # CUDA context / allocator slack and activations of one forward pass
TORCH_PROCESS_BYTES = 3 * GIB // 2  # torch + transformers loaded in the Python process
CHAT_CONTEXT = DEFAULT_N_CTX  # tokens of history a chat can reach: llama.cpp's default context cap


@dataclass(frozen=True)
class ModelFiles:
    """A model to load: its files (with what still has to be downloaded) and its ``config.json``."""

    source: SourceFiles
    config: dict
    estimated: bool = False  # sizes from the catalog's architecture: the hub's listing could not be read

    def download(self, *, fresh: bool) -> int:
        """Bytes to download (``fresh``: a new runtime, where nothing is downloaded yet)."""
        return self.source.total if fresh else self.source.to_download


def model_files(ref: str, role: str = "model") -> ModelFiles:
    """The files and config of ``ref`` (a folder, a hub id or a catalog name of a full model), from the local
    files or the hub's listing (only ``config.json`` is fetched); a catalog release whose listing cannot be read
    is estimated from its architecture.

    Raises:
        UserError: ``ref`` cannot be listed and is not a catalog release.
    """
    entry = None if Path(ref).expanduser().exists() else find(ref)
    try:
        source = source_files(entry.hub_id if entry else ref, role)
        return ModelFiles(source, source_config(source))
    except UserError:
        if entry is None:
            raise
        source = estimated_source(entry, role)
        return ModelFiles(source, source_config(source), estimated=True)


def weight_bytes(config: dict, quantization: str | None, *, bytes_per_value: int = 2) -> int:
    """Bytes of the weights once loaded by transformers: 16-bit (``bytes_per_value``: 4 for float32 on a CPU), or
    bitsandbytes ``8bit`` / ``4bit`` (NF4 with double quantization) for the linear layers, whose embeddings,
    ``lm_head`` and norms stay 16-bit."""
    tensors = llama_tensors(config)
    total = sum(t.numel for t in tensors)
    if quantization not in ("4bit", "8bit"):
        return total * bytes_per_value
    emb = sum(t.numel for t in tensors if "embed_tokens" in t.name or "lm_head" in t.name)
    linear = sum(t.numel for t in tensors if len(t.shape) == 2) - emb
    per_param = 0.5 + 1 / 64 if quantization == "4bit" else 1.0
    return int(linear * per_param) + (total - linear) * 2


def kv_cache_bytes(config: dict, n_ctx: int, *, bytes_per_value: int = 2) -> int:
    """Keys and values of ``n_ctx`` tokens in every layer."""
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    kv_dim = int(config.get("num_key_value_heads") or heads) * head_dim
    return 2 * int(config["num_hidden_layers"]) * kv_dim * n_ctx * bytes_per_value


@dataclass(frozen=True)
class GGUFFile:
    """One GGUF to run with llama.cpp: its name, size, whether it is here already, and the model's shape."""

    name: str
    size: int
    local: bool
    config: dict | None
    estimated: bool = False


def gguf_file(ref: str, quant: str = "q4_k") -> GGUFFile | None:
    """The GGUF ``ref`` names: a ``.gguf`` file, a folder holding GGUFs, or a catalog GGUF release (the file
    :func:`helpers.chat.choose_gguf` picks, sized from the hub's listing or estimated); None when ``ref`` is not
    a GGUF."""
    path = Path(ref).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        found = {p.relative_to(path).as_posix(): p for p in path.rglob("*.gguf")}
        path = found[choose_gguf(list(found), quant, where=str(path))] if found else path
    if path.is_file() and path.suffix == ".gguf":
        return GGUFFile(path.name, path.stat().st_size, True, _gguf_config(path))
    entry = None if path.exists() else find(ref)
    if entry is None and not path.exists() and looks_like_hub_id(ref):
        return _hub_gguf(ref, quant)
    if entry is None or entry.kind != "gguf":
        return None
    try:
        sizes = file_sizes(entry.hub_id, what="model")
        name = choose_gguf(list(sizes), quant, where=entry.hub_id)
        return GGUFFile(name, sizes[name], False, config_of(entry))
    except UserError:
        return _estimated_gguf(entry, quant)


def _hub_gguf(hub_id: str, quant: str) -> GGUFFile | None:
    """The GGUF a hub repo outside the catalog holds (a repo of GGUFs without a ``config.json``), else None."""
    try:
        sizes = file_sizes(hub_id, what="model")
    except UserError:
        return None
    if "config.json" in sizes or not any(n.endswith(".gguf") for n in sizes):
        return None
    name = choose_gguf(list(sizes), quant, where=hub_id)
    return GGUFFile(name, sizes[name], False, None)


def _estimated_gguf(entry: ModelEntry, quant: str) -> GGUFFile:
    config = config_of(entry)
    try:
        qtype = qtype_name(quant.removesuffix("-im"))  # q4_k -> q4_k_m; the -im variant has the same size
    except UserError:
        qtype = "q4_k_m"
    bits = BITS_PER_WEIGHT.get(qtype, BITS_PER_WEIGHT["q4_k_m"])
    size = int(sum(t.numel for t in llama_tensors(config)) * bits / 8) if config else 0
    return GGUFFile(f"ggml-model-{quant}.gguf", size, False, config, estimated=True)


def _gguf_config(path: Path) -> dict | None:
    """The shape keys :func:`kv_cache_bytes` needs, from a GGUF's metadata."""
    meta = read_metadata(path)
    arch = meta.get("general.architecture", "llama")
    try:
        return {"num_hidden_layers": meta[f"{arch}.block_count"], "hidden_size": meta[f"{arch}.embedding_length"],
                "num_attention_heads": meta[f"{arch}.attention.head_count"],
                "num_key_value_heads": meta.get(f"{arch}.attention.head_count_kv"),
                "max_position_embeddings": meta.get(f"{arch}.context_length")}
    except KeyError:
        return None
