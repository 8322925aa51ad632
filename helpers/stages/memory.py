"""The memory a model takes where a stage loads it: llama.cpp running a GGUF (on the GPU with a CUDA wheel, else in
RAM), or transformers (16-bit or 8/4-bit on a GPU, float32 on a CPU), with its KV cache and the logits scoring keeps."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..colab import Need, Runtime, bytes_need, wheel_need
from ..colab.sizing import (CHAT_CONTEXT, RUNTIME_OVERHEAD, TORCH_PROCESS_BYTES, GGUFFile, kv_cache_bytes, model_files,
                            weight_bytes)
from ..util import human_bytes
from .needs import GET_LLAMA, MORE_RAM


@dataclass(frozen=True)
class Loaded:
    """A model as a stage loads it: bytes in GPU memory (or RAM), bytes to download, and its config."""

    memory: int
    download: int
    detail: str
    config: dict


def llama_cpp_needs(gguf: GGUFFile, rt: Runtime, what: str, *, n_ctx: int = CHAT_CONTEXT) -> tuple[list[Need], int]:
    """llama.cpp running ``gguf``: the wheel, and its memory on the GPU (CUDA wheel) or in RAM; and the download."""
    config = gguf.config or {}
    n_ctx = min(int(config.get("max_position_embeddings") or n_ctx), n_ctx)
    mem = gguf.size + (kv_cache_bytes(config, n_ctx) if config else 0) + RUNTIME_OVERHEAD
    detail = f"{what} {gguf.name} {human_bytes(gguf.size)} + {n_ctx}-token KV cache"
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


def transformers_needs(loaded: Loaded, rt: Runtime, *, n_ctx: int, logits_positions: int = 0,
                       fix: str) -> list[Need]:
    """Memory rows for a transformers model (with its KV cache of ``n_ctx`` tokens and the float32 logits of
    ``logits_positions`` positions): GPU memory and the libraries' RAM on a GPU, else RAM."""
    config = loaded.config
    n_ctx = min(int(config.get("max_position_embeddings") or n_ctx), n_ctx)
    on_gpu = rt.gpu is not None
    mem = loaded.memory + kv_cache_bytes(config, n_ctx, bytes_per_value=2 if on_gpu else 4) + RUNTIME_OVERHEAD
    mem += logits_positions * int(config["vocab_size"]) * 4
    detail = loaded.detail + f" + {n_ctx}-token KV cache" + (" and logits" if logits_positions else "")
    if on_gpu:
        return [bytes_need("GPU memory", mem, rt.vram, detail=detail, fix=fix),
                bytes_need("RAM", TORCH_PROCESS_BYTES, rt.ram, fix=MORE_RAM, detail="libraries; weights go to the GPU")]
    return [bytes_need("RAM", mem + TORCH_PROCESS_BYTES, rt.ram, detail=detail, fix=fix)]
