"""Reading weight files without loading a whole model: safetensors by positioned reads, pickles safely.

* :class:`SafetensorsFile`: the header is parsed at open and each tensor is fetched with positioned reads.
  (A memory map would be simpler, but every page it touches stays in the process's resident set until the
  file is closed, so reading a 13 GB model through one grows RSS by 13 GB.) Conversion to float32 happens
  in small chunks.
* :func:`read_tensor`: the positioned, chunk-converting read both that class and :mod:`.torchzip` use.
* :func:`torch_load`: ``torch.load(weights_only=True, mmap=True)``: tensors only, never pickled code.
"""
from __future__ import annotations

import contextlib
import json
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..util import UserError

if TYPE_CHECKING:
    import torch

    from ..hub import Arriving

CHUNK_BYTES = 64 << 20  # conversion buffer for float32 reads
_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
              "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
              "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def corrupt_message(path: Path, why: object) -> str:
    """The error message for a damaged file: what is wrong (first line of ``why``) and to download it again."""
    why = str(why).strip().splitlines()[0].split(". ")[0][:160] if str(why).strip() else "unreadable"
    return f"{path} is truncated or corrupt ({why}); delete it and download it again"


def refused_message(path: Path) -> str:
    """The error message for a pickle that holds Python objects besides tensors (refused, never executed)."""
    return (f"{path} contains pickled Python objects besides tensors, which could run code when loaded; "
            "refused (nothing was executed). Download the file again from the official repository, or use "
            "its .safetensors version")


def _readinto(fh: BinaryIO, path: Path, buf: "torch.Tensor") -> None:
    view = memoryview(buf.numpy()).cast("B")
    got = 0
    while got < len(view):
        n = fh.readinto(view[got:])
        if not n:
            raise UserError(corrupt_message(path, "unexpected end of file"))
        got += n


def read_tensor(fh: BinaryIO, path: Path, pos: int, shape: tuple[int, ...], src: "torch.dtype", *,
                dtype: "torch.dtype | None" = None) -> "torch.Tensor":
    """Read a contiguous tensor of ``src`` values stored at byte ``pos`` of the open file ``fh`` (``path``
    names it in errors). With another ``dtype``, convert chunk by chunk (peak: the result + ``CHUNK_BYTES``).

    Raises:
        UserError: the file ends before the tensor does.
    """
    import torch

    fh.seek(pos)
    numel = math.prod(shape)
    if dtype is None or dtype == src:
        buf = torch.empty(numel * src.itemsize, dtype=torch.uint8)
        _readinto(fh, path, buf)
        return buf.view(src).reshape(shape)
    out = torch.empty(shape, dtype=dtype)
    flat, item = out.view(-1), src.itemsize
    step = max(1, CHUNK_BYTES // item)
    buf = torch.empty(min(step, numel) * item, dtype=torch.uint8)
    for i in range(0, numel, step):
        n = min(step, numel - i)
        _readinto(fh, path, buf[: n * item])
        flat[i:i + n].copy_(buf[: n * item].view(src))
    return out


class SafetensorsFile:
    """One ``.safetensors`` file: header parsed at open, tensors read on demand (no memory map).

    With ``arriving`` (:class:`~helpers.hub.Arriving`, opened), the file is one still downloading: each read waits
    for its bytes, and the size checked is the final one the hub listed.
    """

    def __init__(self, path: str | Path, *, arriving: "Arriving | None" = None) -> None:
        self.path = Path(path)
        self._arriving = arriving
        self._fh: BinaryIO | None = arriving.open() if arriving is not None else None
        size = arriving.size if arriving is not None else self.path.stat().st_size
        try:
            with contextlib.nullcontext(self._fh) if self._fh is not None else open(self.path, "rb") as f:
                head = self._read(f, 0, 8)
                if len(head) < 8:
                    raise ValueError("shorter than a safetensors header")
                (n,) = struct.unpack("<Q", head)
                if n > size - 8 or n > 256 << 20:
                    raise ValueError("header runs past the end of the file")
                header = json.loads(self._read(f, 8, n))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(corrupt_message(self.path, exc)) from None
        self.metadata = header.pop("__metadata__", None) or {}
        self._start = 8 + n
        self.entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        end = 0
        try:
            for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                b, e = (int(x) for x in info["data_offsets"])
                shape = tuple(int(s) for s in info["shape"])
                dtype = _ST_DTYPES[info["dtype"]]
                self.entries[name] = (dtype, shape, b, e)
                end = max(end, e)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(corrupt_message(self.path, f"bad header entry {exc}")) from None
        if self._start + end > size:
            raise UserError(corrupt_message(self.path, f"{size} bytes, the header promises {self._start + end}"))

    def _wait(self, end: int) -> None:
        """For a file still arriving, wait until its first ``end`` bytes are written."""
        if self._arriving is not None:
            try:
                self._arriving.wait(end)
            except EOFError as exc:
                raise UserError(corrupt_message(self.path, exc)) from None

    def _read(self, f: BinaryIO, pos: int, n: int) -> bytes:
        """``n`` bytes at ``pos`` (waiting for a file still arriving)."""
        self._wait(pos + n)
        f.seek(pos)
        return f.read(n)

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def dtype(self, name: str) -> "torch.dtype":
        import torch

        return getattr(torch, self.entries[name][0])

    def get(self, name: str, *, dtype: "torch.dtype | None" = None, rows: tuple[int, int] | None = None
            ) -> "torch.Tensor":
        """Read one tensor, or its rows ``[first, end)`` (along its first dimension); with ``dtype``, convert chunk
        by chunk (peak: the result + 64 MB)."""
        import torch

        sdt, shape, b, e = self.entries[name]
        src = getattr(torch, sdt)
        if e - b != math.prod(shape) * src.itemsize:
            raise UserError(corrupt_message(self.path, f"{name} takes {e - b} bytes, not those of {list(shape)} {sdt}"))
        if rows is not None:
            row = math.prod(shape[1:]) * src.itemsize
            b, e, shape = b + rows[0] * row, b + rows[1] * row, (rows[1] - rows[0], *shape[1:])
        if self._fh is None:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - kept open between reads, closed in close()
        self._wait(self._start + e)
        return read_tensor(self._fh, self.path, self._start + b, shape, src, dtype=dtype)

    def close(self) -> None:
        if self._arriving is not None:
            self._arriving.close()  # owns the file object
            self._arriving, self._fh = None, None
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def torch_load(path: Path) -> dict[str, Any]:
    """``torch.load`` a pickled checkpoint safely (``weights_only``, memory-mapped when possible)."""
    import pickle

    import torch

    def load(mmap: bool):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            obj = load(True)
        except RuntimeError as exc:
            if "mmap can only be used" not in str(exc):
                raise
            obj = load(False)  # pre-1.6 (non-zip) serialization cannot be memory-mapped
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise UserError(refused_message(path)) from None
        raise UserError(corrupt_message(path, exc)) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as exc:
        raise UserError(corrupt_message(path, exc)) from None
    if isinstance(obj, dict) and set(obj) in ({"state_dict"}, {"model"}):
        obj = next(iter(obj.values()))
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} holds no tensors; it is not a model or adapter checkpoint")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def fresh_tensor(t: "torch.Tensor", dtype: "torch.dtype | None") -> "torch.Tensor":
    """A tensor this process owns (never a view of a memory-mapped file)."""
    return t.to(dtype if dtype is not None else t.dtype, copy=True)
