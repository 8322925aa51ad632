"""One entry point for chatting: :func:`load_backend` takes an HF folder, a ``.gguf`` file, a hub id or a catalog
name and returns a :class:`Backend` with the release's own prompt template.

GGUFs go to llama.cpp, HF folders to transformers; ``rope=`` (long context, :mod:`.longctx`) is applied
before the weights load.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..catalog import ModelEntry, find
from ..gguf import read_metadata
from ..hub import resolve_model
from ..tokens import get_template, template_for_model
from ..util import UserError
from .backend import GEN_KEYS, Backend
from .hf import load_transformers
from .llamacpp import load_llama_cpp

def pick_gguf(folder: Path, quant: str) -> Path:
    """The one GGUF in ``folder`` whose name contains ``quant`` (or the only GGUF there)."""
    files = sorted(folder.rglob("*.gguf"))
    if not files:
        raise UserError(f"no .gguf file in {folder} (looked for names containing {quant!r}; "
                        "pass gguf_quant=... or the path of the file)")
    if len(files) == 1:
        return files[0]
    chosen = [f for f in files if quant.lower() in f.name.lower()]
    if len(chosen) == 1:
        return chosen[0]
    raise UserError(f"{folder} holds several GGUF files ({', '.join(f.name for f in files)}); pass one file")


def resolve(model: str | Path, *, gguf_quant: str = "q4_k") -> tuple[Path, ModelEntry | None]:
    """Resolve ``model`` to a local HF folder or ``.gguf`` file; also return its catalog entry (or None)."""
    ref = str(model)
    path = Path(ref).expanduser()
    entry = None if path.exists() else find(ref)
    if entry is not None:
        if entry.kind in ("lora", "patch"):
            raise UserError(f"{entry.name} is a {entry.kind}, not a model you can chat with: merge it first "
                            f"(python -m helpers merge ...) and chat with the merged folder or GGUF")
        patterns = [f"*{gguf_quant}*.gguf", "*.md", "*.json"] if entry.kind == "gguf" else None
        path = resolve_model(entry.hub_id, allow_patterns=patterns)
        if entry.kind == "gguf" and path.is_dir():
            return pick_gguf(path, gguf_quant), entry
    else:
        path = resolve_model(ref)
        if path.is_dir():
            entry = find(path.resolve().name)
    if path.is_dir() and not (path / "config.json").is_file() and any(path.rglob("*.gguf")):
        path = pick_gguf(path, gguf_quant)
    return path, entry


def load_backend(model: str | Path, *, backend: str = "auto", quantization: str | None = None,
                 device: str | None = None, dtype: Any = None, n_gpu_layers: int | None = None,
                 n_ctx: int | None = None, rope: str | None = None, trust_remote_code: bool = False,
                 template: str | None = None, gguf_quant: str = "q4_k", **defaults: Any) -> Backend:
    """Load a model for chatting.

    Args:
        model: an HF folder, a ``.gguf`` file, a hub id or a catalog name (``chinese-alpaca-2-7b``).
        backend: ``auto`` (GGUF -> llama.cpp, else transformers), ``transformers`` or ``llama.cpp``.
        quantization: ``None``, ``"8bit"`` or ``"4bit"`` (bitsandbytes NF4 + double quantization; GPU only).
        device: ``cuda``/``cpu`` for transformers (default: CUDA when available).
        dtype: transformers weights dtype (default: bf16/fp16 on GPU, fp32 on CPU).
        n_gpu_layers: llama.cpp layers on the GPU (default: all when llama.cpp has GPU support, else 0).
        n_ctx: context length wanted (llama.cpp default: the model's, at most 4096).
        rope: long-context option, see :mod:`helpers.longctx`.
        trust_remote_code: run the model repo's own Python code (the 64K models ship some); off unless asked.
        template: force a template id; by default it comes from the catalog or the model's files/metadata.
        gguf_quant: which GGUF of a catalog GGUF repo to fetch (file name contains it).
        **defaults: sampling defaults for this backend (``temperature``, ``max_new_tokens``...).
    """
    if backend not in ("auto", "transformers", "llama.cpp", "llama_cpp", "llamacpp"):
        raise UserError(f"unknown backend {backend!r}; use auto, transformers or llama.cpp")
    backend = "llama.cpp" if backend in ("llama_cpp", "llamacpp") else backend
    unknown = set(defaults) - set(GEN_KEYS)
    if unknown:
        raise UserError(f"unknown settings {sorted(unknown)}")
    path, entry = resolve(model, gguf_quant=gguf_quant)
    is_gguf = path.is_file() and path.suffix == ".gguf"
    if not is_gguf and not (path / "config.json").is_file():
        raise UserError(f"{path} is neither a .gguf file nor a Hugging Face model folder (no config.json)")
    chosen = "llama.cpp" if (backend == "auto" and is_gguf) else ("transformers" if backend == "auto" else backend)
    if chosen == "llama.cpp" and not is_gguf:
        raise UserError(f"{path} is a Hugging Face folder; convert it first (python -m helpers to-gguf) "
                        "or use backend='transformers'")
    if chosen == "transformers" and is_gguf:
        raise UserError(f"{path} is a GGUF file; use backend='llama.cpp' (or 'auto')")
    if entry is not None and entry.needs_trust_remote_code and not trust_remote_code and not is_gguf:
        print(f"note: {entry.name} ships its own modelling code; it is not run unless trust_remote_code=True. "
              "transformers' built-in YaRN from config.json is used instead.", file=sys.stderr)
    metadata = read_metadata(path) if is_gguf else None
    if template is not None:
        name = get_template(template).name
    elif entry is not None:
        name = entry.template
    else:
        name = template_for_model(str(path), gguf_metadata=metadata)
    if chosen == "llama.cpp":
        if quantization:
            raise UserError("quantization applies to the transformers back end; for llama.cpp pick a quantized "
                            "GGUF (e.g. Q4_K_M) instead")
        return load_llama_cpp(path, template=name, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx, rope=rope,
                              defaults=defaults, metadata=metadata)
    return load_transformers(path, template=name, quantization=quantization, device=device, dtype=dtype,
                             n_ctx=n_ctx, rope=rope, trust_remote_code=trust_remote_code,
                             catalog_rope=entry.rope_scaling if entry is not None else None, defaults=defaults)
