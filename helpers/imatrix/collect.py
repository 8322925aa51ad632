"""The activations llama.cpp's importance matrix is made of, read from inside llama.cpp's graph.

llama.cpp's scheduler calls an *eval callback* (``cb_eval`` in the context parameters) for every node of the
graph it computes: first with ``ask=True`` ("do you want this node's data?"), then, for the nodes the callback
wants, with ``ask=False`` once the node is computed. :class:`ActivationCollector` wants what ``llama-imatrix``
wants, and keeps what it keeps:

- nodes that multiply a matrix (``MUL_MAT``) whose weight (``src[0]``) is named ``blk.*`` (the weights of the
  transformer blocks; not ``output.weight``, not the attention's K/V cache views), with a float32 activation
  (``src[1]``) of at least 16 rows;
- for each, per input column, the sum over the activation rows of the squared activation (in float32, added
  row after row as the tool adds them, so the sums are the tool's to the bit), and the number of rows;
- mixture-of-experts products (``MUL_MAT_ID``) are not collected: every model of this project is dense, and such
  a node makes the computation fail with a clear message instead of giving an incomplete matrix.

The activation is read where it lives: in host memory directly, or copied from the GPU with
``ggml_backend_tensor_get``. The ``ggml_tensor`` struct is laid out as ggml.h declares it for the llama.cpp
that llama-cpp-python ships; :func:`ggml_api` checks that layout against the library (its tensor size and the
name it reports) before anything is read through it.
"""
from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass, field
from typing import Any

from ..util import UserError

MIN_ROWS = 16  # llama-imatrix ignores products of fewer activation rows
_OBJECT_SIZE = 32  # sizeof(struct ggml_object), which ggml_tensor_overhead() counts besides the tensor
_MAX_DIMS, _MAX_SRC, _MAX_OP_PARAMS, _MAX_NAME = 4, 10, 64, 64


class GGMLTensor(ctypes.Structure):
    """``struct ggml_tensor`` of ggml.h (the fields read here, and the ones before them, in order)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * _MAX_DIMS),
        ("nb", ctypes.c_size_t * _MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * _MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * _MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


@dataclass(frozen=True)
class GGMLApi:
    """The few ggml functions the collector calls, and the op numbers it looks for."""

    lib: Any
    mul_mat: int
    mul_mat_id: int
    f32: int = 0


@functools.lru_cache(maxsize=1)
def ggml_api() -> GGMLApi:
    """libggml-base of the installed llama-cpp-python, checked against :class:`GGMLTensor`.

    Raises:
        UserError: llama-cpp-python is missing, or its ggml lays its tensors out otherwise than this module
            expects (a llama-cpp-python other than the one this project pins).
    """
    from ..gguf.ggml import ggml_library

    lib = ggml_library()
    lib.ggml_tensor_overhead.restype = ctypes.c_size_t
    lib.ggml_tensor_overhead.argtypes = []
    lib.ggml_op_name.restype = ctypes.c_char_p
    lib.ggml_op_name.argtypes = [ctypes.c_int]
    lib.ggml_get_name.restype = ctypes.c_char_p
    lib.ggml_get_name.argtypes = [ctypes.c_void_p]
    lib.ggml_nbytes.restype = ctypes.c_size_t
    lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_buffer_is_host.restype = ctypes.c_bool
    lib.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_tensor_get.restype = None
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    if lib.ggml_tensor_overhead() != ctypes.sizeof(GGMLTensor) + _OBJECT_SIZE:
        raise UserError("the installed llama-cpp-python's ggml lays out its tensors differently from what the "
                        "importance-matrix code expects; install the llama-cpp-python version this project pins")
    ops = {}
    for i in range(256):
        name = lib.ggml_op_name(i)
        if name in (b"MUL_MAT", b"MUL_MAT_ID"):
            ops[name] = i
        if len(ops) == 2:
            break
    if len(ops) != 2:
        raise UserError("the installed llama-cpp-python's ggml has no MUL_MAT operation; reinstall it")
    return GGMLApi(lib, ops[b"MUL_MAT"], ops[b"MUL_MAT_ID"])


def weight_name(raw: bytes) -> str:
    """A weight's name without the prefix and suffix a backend may add (``CUDA0#blk.0.attn_k.weight#0``)."""
    name = raw.decode("utf-8", "replace")
    if "#" in name:
        name = name.split("#")[1]
    return name


@dataclass
class ActivationCollector:
    """Sums of squared activations per weight, collected through llama.cpp's eval callback.

    Pass :attr:`callback` as ``cb_eval`` of the context parameters; keep this object alive while the context
    runs. After the computation, :attr:`sums` and :attr:`counts` hold what ``llama-imatrix`` would store.

    Attributes:
        sums: ``{weight name: float32 array (columns,)}``.
        counts: ``{weight name: rows summed}``.
        error: the first problem met inside the callback (raised by :meth:`check`).
    """

    sums: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    error: str | None = None

    def __post_init__(self) -> None:
        import llama_cpp

        self.api = ggml_api()
        self._checked = False
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._eval)

    def check(self) -> None:
        """Raise what went wrong inside the callback, if anything (callbacks cannot raise through C)."""
        if self.error is not None:
            raise UserError(self.error)

    def _eval(self, ptr: int, ask: bool, user_data: int) -> bool:  # noqa: ARG002 - ctypes signature
        try:
            t = GGMLTensor.from_address(ptr)
            if ask:
                return self._wanted(t)
            self._collect(t)
        except Exception as exc:  # noqa: BLE001 - nothing may raise through llama.cpp's C frames
            self.error = self.error or f"collecting activations failed: {type(exc).__name__}: {exc}"
        return True

    def _wanted(self, t: GGMLTensor) -> bool:
        api = self.api
        if t.op == api.mul_mat_id:
            self.error = self.error or ("this model has mixture-of-experts layers, which this importance-matrix "
                                        "code does not handle; use llama.cpp's llama-imatrix")
            return False
        if t.op != api.mul_mat or not t.src[0] or not t.src[1]:
            return False
        src0, src1 = GGMLTensor.from_address(t.src[0]), GGMLTensor.from_address(t.src[1])
        if src1.ne[1] < MIN_ROWS or src1.type != api.f32:
            return False
        return weight_name(src0.name).startswith("blk.")

    def _collect(self, t: GGMLTensor) -> None:
        import numpy as np

        api = self.api
        src0, src1 = GGMLTensor.from_address(t.src[0]), GGMLTensor.from_address(t.src[1])
        if not self._checked:  # the struct layout agrees with ggml's own accessor
            if api.lib.ggml_get_name(t.src[0]) != src0.name:
                raise RuntimeError("the ggml_tensor layout does not match this ggml")
            self._checked = True
        name = weight_name(src0.name)
        x = self._activation(src1)
        n_mat = int(src0.ne[2] * src0.ne[3])
        if n_mat != 1:
            raise RuntimeError(f"{name} is a stack of {n_mat} matrices; only 2-D weights are handled")
        rows = x.reshape(-1, x.shape[-1])  # every row of every batch dimension (a copy only if strided)
        sq = rows * rows  # float32, as llama-imatrix squares them
        if name in self.sums:
            sq[0] += self.sums[name]
        # numpy reduces over the first axis row after row: ((acc + x0²) + x1²) + ..., llama-imatrix's own order and
        # float32 rounding, so the sums come out bit for bit as the tool's
        total = np.add.reduce(sq, axis=0)
        if not np.all(np.isfinite(total)):
            raise RuntimeError(f"non-finite activations for {name}; the model or its input is broken")
        self.sums[name] = total
        self.counts[name] = self.counts.get(name, 0) + rows.shape[0]

    def _activation(self, src1: GGMLTensor):
        """``src1``'s values as a float32 array ``(ne3, ne2, ne1, ne0)`` (a view of host memory, or a copy)."""
        import numpy as np

        api = self.api
        nbytes = int(api.lib.ggml_nbytes(ctypes.addressof(src1)))
        if api.lib.ggml_backend_buffer_is_host(src1.buffer):
            raw = (ctypes.c_char * nbytes).from_address(src1.data)
        else:
            raw = ctypes.create_string_buffer(nbytes)
            api.lib.ggml_backend_tensor_get(ctypes.addressof(src1), raw, 0, nbytes)
        if src1.nb[0] != 4:
            raise RuntimeError("the activation's values are not contiguous float32")
        shape = tuple(int(src1.ne[i]) for i in (3, 2, 1, 0))
        strides = tuple(int(src1.nb[i]) for i in (3, 2, 1, 0))
        return np.lib.stride_tricks.as_strided(np.frombuffer(raw, dtype=np.float32), shape=shape, strides=strides,
                                               writeable=False)
