"""One entry point for chatting: :func:`load_backend` takes an HF folder, a ``.gguf`` file, a hub id or a catalog
name and returns a :class:`Backend` with the release's own prompt template.

GGUFs go to llama.cpp, HF folders to transformers; ``rope=`` (long context, :mod:`.longctx`) is applied
before the weights load.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from ..catalog import ModelEntry, find
from ..gguf import read_metadata
from ..hub import list_files, resolve_model
from ..tokens import get_template, template_for_model
from ..util import UserError
from .backend import GEN_KEYS, Backend
from .hf import load_transformers
from .llamacpp import load_llama_cpp


def _is_imatrix(name: str) -> bool:
    """``ggml-model-q4_k-im.gguf``: the release's importance-matrix variant of a quant (``-im`` suffix)."""
    return Path(name).stem.lower().endswith("-im")


def choose_gguf(names: list[str], quant: str, *, where: str = "the repo") -> str:
    """Pick one GGUF among ``names`` for ``quant``.

    The GGUF releases hold several quants, each also as an importance-matrix (``-im``) variant
    (``ggml-model-q4_k.gguf``, ``ggml-model-q4_k-im.gguf``, ...). ``quant`` picks the files whose name
    contains it; the plain file unless ``quant`` itself ends in ``-im`` (``q4_k-im``); among several, the one
    where it is a whole name part (``q4_k`` prefers ``q4_k`` over ``q4_k_m``).

    Raises:
        UserError: no GGUF, or no single file for ``quant``; the message lists the files to choose from.
    """
    ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
    if not ggufs:
        raise UserError(f"no .gguf file in {where} (looked for names containing {quant!r}; "
                        "pass gguf_quant=... or the path of the file)")
    if len(ggufs) == 1:
        return ggufs[0]
    q = quant.lower().strip()
    want_im = q.endswith("-im")
    q = q.removesuffix("-im")
    chosen = [n for n in ggufs if q in Path(n).name.lower() and _is_imatrix(n) == want_im]
    if len(chosen) > 1:
        whole = [n for n in chosen if q in re.split(r"[-.]", Path(n).stem.lower().removesuffix("-im"))]
        chosen = whole or chosen
    if len(chosen) == 1:
        return chosen[0]
    listing = ", ".join(Path(n).name for n in ggufs)
    raise UserError(f"{where} holds several GGUF files ({listing}) and {quant!r} does not pick one: pass "
                    "gguf_quant= with a quant from those names (add '-im' for the importance-matrix variant) "
                    "or the path of one file")


def pick_gguf(folder: Path, quant: str) -> Path:
    """The GGUF in ``folder`` for ``quant`` (see :func:`choose_gguf`), or the only GGUF there."""
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*.gguf")]
    return folder / choose_gguf(names, quant, where=str(folder))


def resolve(model: str | Path, *, gguf_quant: str = "q4_k") -> tuple[Path, ModelEntry | None]:
    """Resolve ``model`` to a local HF folder or ``.gguf`` file; also return its catalog entry (or None).

    For a catalog GGUF repo only the one chosen file is downloaded (see :func:`choose_gguf`).
    """
    ref = str(model)
    path = Path(ref).expanduser()
    entry = None if path.exists() else find(ref)
    if entry is not None:
        if entry.kind in ("lora", "patch"):
            raise UserError(f"{entry.name} is a {entry.kind}, not a model you can chat with: merge it first "
                            f"(python -m helpers merge ...) and chat with the merged folder or GGUF")
        if entry.kind == "gguf":
            name = choose_gguf(list_files(entry.hub_id), gguf_quant, where=entry.hub_id)
            path = resolve_model(entry.hub_id, allow_patterns=[name, "*.md", "*.json"])
            return (path / name if path.is_dir() else path), entry
        path = resolve_model(entry.hub_id)
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
        gguf_quant: which GGUF of a catalog GGUF repo to fetch (``q4_k``, ``q8_0``, ``q4_k-im`` for the
            importance-matrix variant ...; see :func:`choose_gguf`).
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
