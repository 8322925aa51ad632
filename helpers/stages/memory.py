"""The memory a model takes where a stage loads it: llama.cpp running a GGUF (on the GPU with a CUDA wheel, else in
RAM), or transformers (16-bit or 8/4-bit on a GPU, float32 on a CPU), with its KV cache and the logits scoring keeps;
and the ``QUANTIZATION`` choice the notebooks that load a model for transformers share (03 and 05): its form entry
(:func:`quantization_param`) and how a plan sizes it (:func:`quantized_needs`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typing import Any

from ..colab import SLOW, Need, Runtime, bytes_need, wheel_need
from ..colab.sizing import (CHAT_CONTEXT, RUNTIME_OVERHEAD, TORCH_PROCESS_BYTES, GGUFFile, kv_cache_bytes, model_files,
                            weight_bytes)
from ..util import human_bytes
from .form import assignment, param
from .needs import GET_GPU, GET_LLAMA, MORE_RAM

QUANTIZATIONS = ("4bit", "8bit", "none")


def quantization_param(help: str = "transformers on a GPU: load in 4-bit (NF4) or 8-bit (bitsandbytes); none: "
                                   "16-bit") -> Any:
    """The ``QUANTIZATION`` form entry (default ``4bit``)."""
    return param("4bit", help, choices=QUANTIZATIONS)


@dataclass(frozen=True)
class Loaded:
    """A model as a stage loads it: bytes in GPU memory (or RAM), bytes to download, and its config."""

    memory: int
    download: int
    detail: str
    config: dict


def _kv_words(n_ctx: int, kv_copies: int) -> str:
    """``4096-token KV cache``, or with CFG sampling's negative branch ``2 x 4096-token KV cache (CFG)``."""
    return f"{n_ctx}-token KV cache" if kv_copies == 1 else f"{kv_copies} x {n_ctx}-token KV cache (CFG)"


def llama_cpp_needs(gguf: GGUFFile, rt: Runtime, what: str, *, n_ctx: int = CHAT_CONTEXT,
                    kv_copies: int = 1) -> tuple[list[Need], int]:
    """llama.cpp running ``gguf``: the wheel, and its memory on the GPU (CUDA wheel) or in RAM; and the download.
    ``kv_copies`` contexts share the weights (CFG sampling's negative branch is a second one)."""
    config = gguf.config or {}
    n_ctx = min(int(config.get("max_position_embeddings") or n_ctx), n_ctx)
    mem = gguf.size + kv_copies * ((kv_cache_bytes(config, n_ctx) if config else 0) + RUNTIME_OVERHEAD)
    detail = f"{what} {gguf.name} {human_bytes(gguf.size)} + {_kv_words(n_ctx, kv_copies)}"
    if rt.llama_cpp_gpu:
        need = bytes_need("GPU memory", mem, rt.vram, detail=detail, slow_fix="fewer layers on the GPU (n_gpu_layers)")
    else:
        need = bytes_need("RAM", mem, rt.ram, detail=detail, slow_fix="llama.cpp maps the file and reads what does "
                                                                        "not fit from disk: it runs, slowly")
    return [wheel_need("llama.cpp", rt.llama_cpp, fix=GET_LLAMA), need], 0 if gguf.local else gguf.size


def transformers_loaded(ref: str, quantization: str | None, rt: Runtime) -> Loaded:
    """``ref`` loaded by transformers on ``rt``: 16-bit (or ``quantization``) on a GPU, float32 on a CPU."""
    files = model_files(ref)
    on_gpu = rt.gpu is not None
    weights = weight_bytes(files.config, quantization, bytes_per_value=2 if on_gpu else 4)
    precision = quantization or ("16-bit" if on_gpu else "float32")
    detail = f"{Path(ref).name} {precision} {human_bytes(weights)}" + (" (estimated)" if files.estimated else "")
    return Loaded(weights, files.download(fresh=rt.assumed), detail, files.config)


def beside(loaded: Loaded, other: Loaded, what: str, rt: Runtime, *, n_ctx: int = CHAT_CONTEXT) -> Loaded:
    """``loaded`` with ``other`` (a draft model) loaded beside it: its weights and KV cache in the same memory, its
    download with the first's."""
    n_ctx = min(int(other.config.get("max_position_embeddings") or n_ctx), n_ctx)
    kv = kv_cache_bytes(other.config, n_ctx, bytes_per_value=2 if rt.gpu is not None else 4)
    return Loaded(loaded.memory + other.memory + kv, loaded.download + other.download,
                  f"{loaded.detail} + {what} {other.detail}", loaded.config)


def quantized(asked: str, rt: Runtime) -> tuple[list[Need], str | None]:
    """What the form's ``QUANTIZATION`` (``asked``) needs on ``rt`` and the quantization really used: on a GPU, the
    bitsandbytes wheel and ``asked``; without one, a slow row (the model loads in float32 on the CPU) and None."""
    quant = None if asked == "none" else asked
    if quant and rt.gpu is None:
        return [Need("GPU", f"a CUDA GPU for {quant}", "none", SLOW,
                     f"without a GPU the model loads in float32 on the CPU; for {quant}: {GET_GPU}")], None
    if quant:
        return [wheel_need("bitsandbytes", rt.bitsandbytes, fix="pip install bitsandbytes")], quant
    return [], None


def quantized_needs(ref: str, asked: str, rt: Runtime, *, n_ctx: int, fix: str, logits_positions: int = 0,
                    draft: Loaded | None = None, kv_copies: int = 1) -> tuple[list[Need], int, str | None]:
    """``ref`` loaded by transformers with the form's ``QUANTIZATION`` (``asked``): the rows of :func:`quantized`
    and :func:`transformers_needs` (with a ``draft`` model beside it), the download, the quantization used."""
    needs, quant = quantized(asked, rt)
    loaded = transformers_loaded(ref, quant, rt)
    if draft is not None:
        loaded = beside(loaded, draft, "draft", rt, n_ctx=n_ctx)
    needs += transformers_needs(loaded, rt, n_ctx=n_ctx, logits_positions=logits_positions, fix=fix,
                                kv_copies=kv_copies)
    return needs, loaded.download, quant


def quantization_note(asked: str) -> list[str]:
    """The note for a ``QUANTIZATION`` that a GGUF (llama.cpp) does not use."""
    if asked == "none":
        return []
    return [f"note: {assignment('quantization', asked)} is for transformers; the GGUF's own type is used"]


def transformers_needs(loaded: Loaded, rt: Runtime, *, n_ctx: int, logits_positions: int = 0,
                       fix: str, kv_copies: int = 1) -> list[Need]:
    """Memory rows for a transformers model (with ``kv_copies`` KV caches of ``n_ctx`` tokens: 2 with CFG sampling's
    negative branch, and the float32 logits of ``logits_positions`` positions): GPU memory and the libraries' RAM on
    a GPU, else RAM."""
    config = loaded.config
    n_ctx = min(int(config.get("max_position_embeddings") or n_ctx), n_ctx)
    on_gpu = rt.gpu is not None
    kv = kv_copies * kv_cache_bytes(config, n_ctx, bytes_per_value=2 if on_gpu else 4)
    mem = loaded.memory + kv + RUNTIME_OVERHEAD + logits_positions * int(config["vocab_size"]) * 4
    detail = loaded.detail + f" + {_kv_words(n_ctx, kv_copies)}" + (" and logits" if logits_positions else "")
    if on_gpu:
        return [bytes_need("GPU memory", mem, rt.vram, detail=detail, fix=fix),
                bytes_need("RAM", TORCH_PROCESS_BYTES, rt.ram, fix=MORE_RAM, detail="libraries; weights go to the GPU")]
    return [bytes_need("RAM", mem + TORCH_PROCESS_BYTES, rt.ram, detail=detail, fix=fix)]
