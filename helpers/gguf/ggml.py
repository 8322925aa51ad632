"""llama.cpp's quantization kernels, called through ctypes from the libggml that llama-cpp-python ships.

Only a handful of ggml functions are bound (``ggml_quantize_chunk``, ``ggml_quantize_init``,
``ggml_quantize_requires_imatrix``, ``ggml_row_size``, ``ggml_blck_size``, ``ggml_type_size`` and the float16
row conversions), so the bytes written are those llama.cpp's own quantizer would write. :func:`quantize` splits a tensor's rows into
chunks and quantizes them on a thread pool: ctypes releases the GIL during each call, and quantizing a row
never depends on another row, so the result does not depend on how the rows are split.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from ..util import UserError
from .llamacpp import install_hint

if TYPE_CHECKING:
    import numpy as np
    import torch

QUANT_CHUNK_ELEMENTS = 1 << 20  # at most this many values per work item (tens of ms of work; small chunks balance the load)
SMALL_ELEMENTS = 1 << 18  # tensors this small are quantized on the calling thread
_pools: dict[int, ThreadPoolExecutor] = {}


def _library_names() -> list[str]:
    if sys.platform == "win32":
        return ["ggml-base.dll", "libggml-base.dll"]
    if sys.platform == "darwin":
        return ["libggml-base.dylib", "libggml-base.so"]
    return ["libggml-base.so"]


@functools.lru_cache(maxsize=1)
def ggml_library() -> ctypes.CDLL:
    """libggml-base from the installed llama-cpp-python, with the argument types of the functions used here.

    Raises:
        UserError: llama-cpp-python is not installed (with the install hint) or ships no libggml-base.
    """
    try:
        import llama_cpp  # loads ggml's dependencies the way llama-cpp-python does
    except Exception:  # noqa: BLE001 - ImportError, or OSError from a broken native library
        raise UserError(install_hint()) from None
    lib_dir = Path(llama_cpp.__file__).resolve().parent / "lib"
    path = next((lib_dir / n for n in _library_names() if (lib_dir / n).is_file()), None)
    if path is None:
        raise UserError(f"llama-cpp-python is installed but {lib_dir} holds no libggml-base; reinstall it. "
                        + install_hint())
    lib = ctypes.CDLL(str(path))
    i64, size_t, c_int = ctypes.c_int64, ctypes.c_size_t, ctypes.c_int
    lib.ggml_quantize_chunk.argtypes = [c_int, ctypes.c_void_p, ctypes.c_void_p, i64, i64, i64, ctypes.c_void_p]
    lib.ggml_quantize_chunk.restype = size_t
    lib.ggml_quantize_init.argtypes = [c_int]
    lib.ggml_quantize_init.restype = None
    lib.ggml_quantize_requires_imatrix.argtypes = [c_int]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_row_size.argtypes = [c_int, i64]
    lib.ggml_row_size.restype = size_t
    lib.ggml_blck_size.argtypes = [c_int]
    lib.ggml_blck_size.restype = i64
    lib.ggml_type_size.argtypes = [c_int]
    lib.ggml_type_size.restype = size_t
    for f in (lib.ggml_fp32_to_fp16_row, lib.ggml_fp16_to_fp32_row):
        f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, i64]
        f.restype = None
    return lib


def check_type(qtype: int) -> None:
    """Refuse a type whose block layout differs between the ``gguf`` package and this libggml (a mismatched
    llama-cpp-python would otherwise write a file llama.cpp cannot read)."""
    import gguf

    lib = ggml_library()
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
    if (lib.ggml_blck_size(qtype), lib.ggml_type_size(qtype)) != (block, size):
        raise UserError(f"the installed llama-cpp-python and the gguf package disagree on the layout of "
                        f"{gguf.GGMLQuantizationType(qtype).name}; install matching versions")


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _round_f16(ptr: int, n: int) -> "np.ndarray":
    """``n`` float32 values at address ``ptr`` rounded to float16 and back, in a new float32 array."""
    import numpy as np

    lib = ggml_library()
    half = np.empty(n, dtype=np.float16)
    out = np.empty(n, dtype=np.float32)
    lib.ggml_fp32_to_fp16_row(ptr, half.ctypes.data, n)
    lib.ggml_fp16_to_fp32_row(half.ctypes.data, out.ctypes.data, n)
    return out


def _pool(threads: int) -> ThreadPoolExecutor:
    """A thread pool of ``threads`` workers, kept for the next tensor (starting threads is not free)."""
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="ggml-quantize")
    return _pools[threads]


def quantize(t: "torch.Tensor", qtype: int, *, imatrix: "np.ndarray | None" = None, via_f16: bool = False,
             threads: int | None = None) -> "np.ndarray":
    """Quantize a 2-D float32 tensor row by row with ggml; returns the tensor's bytes (a uint8 array).

    Args:
        t: ``(rows, n_per_row)`` float32 on the CPU (made contiguous if it is not).
        qtype: the ggml type (a :class:`gguf.GGMLQuantizationType` value).
        imatrix: importance weights, one per column (float32), or None.
        via_f16: round every value through float16 first, chunk by chunk (what a quantizer reading an F16
            GGUF sees), without a float16 copy of the whole tensor. ggml's own conversions are used (round to
            nearest even, as torch's ``.half()`` which writes the F16 GGUF: the tests compare the results); they
            run single-threaded inside each worker, where torch's would start thread teams of their own.
        threads: worker threads (default: every core this process may use).
    """
    import numpy as np
    import torch

    lib = ggml_library()
    if t.dim() != 2 or t.dtype != torch.float32:
        raise ValueError(f"quantize wants a 2-D float32 tensor, got {t.dim()}-D {t.dtype}")
    t = t.contiguous()
    nrows, n_per_row = t.shape
    if n_per_row % lib.ggml_blck_size(qtype):
        raise ValueError(f"rows of {n_per_row} values do not split into blocks of type {qtype}")
    if lib.ggml_quantize_requires_imatrix(qtype) and imatrix is None:
        raise UserError(f"ggml type {qtype} needs an importance matrix; pass --imatrix")
    weights = None
    if imatrix is not None:
        weights = np.ascontiguousarray(imatrix, dtype=np.float32)
        if weights.size != n_per_row:
            raise ValueError(f"importance matrix has {weights.size} values for rows of {n_per_row}")
    lib.ggml_quantize_init(qtype)  # the iq tables, once, before the threads share them
    rsize = int(lib.ggml_row_size(qtype, n_per_row))
    out = np.empty(nrows * rsize, dtype=np.uint8)
    src, dst = t.data_ptr(), out.ctypes.data
    w_ptr = weights.ctypes.data if weights is not None else None
    threads = max(1, threads or default_threads())
    step = max(1, min(-(-nrows // (8 * threads)), QUANT_CHUNK_ELEMENTS // n_per_row))

    def work(r0: int) -> int:
        n = min(step, nrows - r0)
        ptr = src + r0 * n_per_row * 4
        scratch = None
        if via_f16:
            scratch = _round_f16(ptr, n * n_per_row)
            ptr = scratch.ctypes.data
        done = lib.ggml_quantize_chunk(qtype, ptr, dst + r0 * rsize, 0, n, n_per_row, w_ptr)
        del scratch
        return int(done)

    starts = range(0, nrows, step)
    if threads == 1 or len(starts) == 1 or nrows * n_per_row <= SMALL_ELEMENTS:
        total = sum(map(work, starts))
    else:
        total = sum(_pool(threads).map(work, starts))
    if total != out.size:
        raise RuntimeError(f"ggml wrote {total} bytes, expected {out.size}")
    return out
