"""Where tensors compute: the torch dtype to load a model in, and the keyword transformers names it by."""
from __future__ import annotations

from typing import Any

from .util import UserError


def cuda_gpu() -> tuple[str, int, str] | None:
    """The CUDA GPU torch sees: its short name (``T4``, ``A100-SXM4-40GB``), free bytes and torch's CUDA version;
    None without torch, without a GPU, or with a broken CUDA setup."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        name = torch.cuda.get_device_name(0).replace("Tesla ", "").replace("NVIDIA ", "")
        return name, int(torch.cuda.mem_get_info()[0]), str(torch.version.cuda)
    except Exception:  # noqa: BLE001 - a broken CUDA setup counts as no GPU
        return None


def bf16_native() -> bool:
    """True on a CUDA GPU that computes bf16 natively (compute capability 8.0 and up: A100, L4, H100...).

    ``torch.cuda.is_bf16_supported()`` also says True on a T4 (7.5), where bf16 is emulated and slow; models and
    training there run in fp16.
    """
    import torch

    if not torch.cuda.is_available():
        return False
    major, _minor = torch.cuda.get_device_capability()
    return major >= 8


def torch_dtype(dtype: Any, on_gpu: bool):
    """The torch dtype for ``dtype`` (a name, a torch dtype, or ``None``/``"auto"``: bf16/fp16 on GPU, fp32 on CPU)."""
    import torch

    if dtype is None or dtype == "auto":
        if not on_gpu:
            return torch.float32
        return torch.bfloat16 if bf16_native() else torch.float16
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32"}
    value = getattr(torch, names.get(str(dtype), str(dtype)), None)
    if not isinstance(value, torch.dtype):
        raise UserError(f"unknown dtype {dtype!r}; use float16, bfloat16 or float32")
    return value


def dtype_kwarg() -> str:
    """``from_pretrained``'s dtype keyword: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def free_memory() -> None:
    """Give memory back after a model is dropped: collect garbage, and return torch's cached CUDA blocks."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
