"""torch's zip-format checkpoints (``torch.save`` since torch 1.6) read tensor by tensor, without ``torch.load``.

Such a ``.bin`` is an uncompressed zip. ``<archive>/data.pkl`` pickles the state dict; each tensor in it is a
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` call whose storage is a persistent id
``("storage", torch.HalfStorage, key, location, numel)``, and the storage's bytes are the zip member
``<archive>/data/<key>``, stored as they are. :class:`TorchZipFile` parses ``data.pkl`` with an unpickler that
builds nothing but tensor *descriptions* (it never imports or calls anything the file names), then reads each
tensor with positioned reads, like :class:`~.files.SafetensorsFile`. Nothing is memory-mapped: every page of a
memory map that is touched stays in the process's resident set, so reading a whole ``.bin`` through one (as
``torch.load(mmap=True)`` does) grows RSS by the file's size.

:func:`open_pickle` picks the reader: :class:`TorchZipFile`, or :class:`LoadedPickle` for what it cannot rebuild
(pre-1.6 pickles, big-endian files, sparse / quantized / float8 tensors, tensor subclasses), which loads the whole
file with :func:`~.files.torch_load` and so lets ``torch.load(weights_only=True)``'s allowlist judge it.
"""
from __future__ import annotations

import io
import math
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..util import UserError
from .files import corrupt_message, fresh_tensor, read_tensor, refused_message, torch_load

if TYPE_CHECKING:
    import torch

_STORAGE_DTYPES = {"HalfStorage": ("float16", 2), "FloatStorage": ("float32", 4), "BFloat16Storage": ("bfloat16", 2),
                   "DoubleStorage": ("float64", 8), "LongStorage": ("int64", 8), "IntStorage": ("int32", 4),
                   "ShortStorage": ("int16", 2), "CharStorage": ("int8", 1), "ByteStorage": ("uint8", 1),
                   "BoolStorage": ("bool", 1)}
# Globals torch.load(weights_only=True) may accept that this reader does not rebuild: such a file goes to torch_load.
_TORCH_MODULES = frozenset({"torch", "torch._utils", "torch._tensor", "torch.nn.parameter", "torch.serialization",
                            "torch.storage"})
_OTHER_SAFE = frozenset({("collections", "Counter"), ("_codecs", "encode"), ("builtins", "set"),
                         ("builtins", "bytearray"), ("builtins", "complex")})
_LOCAL_HEADER = b"PK\x03\x04"


class UnsupportedPickle(Exception):
    """The file is safe to hand to ``torch.load(weights_only=True)`` but this reader cannot rebuild it."""


class _Refused(pickle.UnpicklingError):
    """``data.pkl`` names a global that is neither a tensor part nor on torch's weights-only allowlist."""


class _Frozen:
    """A description built while unpickling; the pickle cannot set its attributes (BUILD)."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise pickle.UnpicklingError(f"BUILD on a {type(self).__name__.strip('_')}")


class _StorageType(_Frozen):
    __slots__ = ("dtype", "itemsize")

    def __init__(self, dtype: str, itemsize: int) -> None:
        self.dtype, self.itemsize = dtype, itemsize


class _Storage(_Frozen):
    __slots__ = ("key", "kind", "numel")

    def __init__(self, key: str, kind: _StorageType, numel: int) -> None:
        self.key, self.kind, self.numel = key, kind, numel


class _TensorRef(_Frozen):
    __slots__ = ("offset", "shape", "storage", "stride")

    def __init__(self, storage: object, offset: object, shape: object, stride: object) -> None:
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError("a tensor without a storage")
        ok = isinstance(shape, tuple) and isinstance(stride, tuple) and len(shape) == len(stride)
        if not ok or any(type(i) is not int or i < 0 for i in (offset, *shape, *stride)):
            raise pickle.UnpicklingError(f"a tensor with offset {offset!r}, size {shape!r}, stride {stride!r}")
        numel = math.prod(shape)
        end = offset + 1 + sum((n - 1) * s for n, s in zip(shape, stride)) if numel else 0
        if end > storage.numel:
            raise pickle.UnpicklingError(f"a tensor reaching element {end} of a storage of {storage.numel}")
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    @property
    def contiguous(self) -> bool:
        expect = 1
        for n, s in zip(reversed(self.shape), reversed(self.stride)):
            if n != 1 and s != expect:
                return False
            expect *= n
        return True


def _rebuild_tensor_v2(*args: Any) -> _TensorRef:  # (storage, offset, size, stride, requires_grad, hooks[, metadata])
    if len(args) not in (6, 7) or (len(args) == 7 and args[6]):
        raise UnsupportedPickle("a tensor with conj/neg metadata or unknown arguments")
    return _TensorRef(*args[:4])


def _rebuild_tensor(*args: Any) -> _TensorRef:  # (storage, offset, size, stride)
    if len(args) != 4:
        raise UnsupportedPickle("_rebuild_tensor with unknown arguments")
    return _TensorRef(*args)


def _rebuild_parameter(data: object, *rest: Any) -> _TensorRef:  # (data, requires_grad, hooks[, state])
    if not isinstance(data, _TensorRef) or len(rest) not in (2, 3):
        raise UnsupportedPickle("a parameter that is not a plain tensor")
    return data


_REBUILD = {"_rebuild_tensor_v2": _rebuild_tensor_v2, "_rebuild_tensor": _rebuild_tensor,
            "_rebuild_parameter": _rebuild_parameter, "_rebuild_parameter_with_state": _rebuild_parameter}


class _DescriptionUnpickler(pickle.Unpickler):
    """Rebuilds state dicts as :class:`_TensorRef` descriptions; every global it may meet is answered from the
    tables above (nothing is imported), so no callable from the file can run."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name in _REBUILD:
            return _REBUILD[name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(*_STORAGE_DTYPES[name])
        if module in _TORCH_MODULES or (module, name) in _OTHER_SAFE:
            raise UnsupportedPickle(f"{module}.{name}")
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:60]}")
        kind, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(kind, _StorageType):
            raise UnsupportedPickle("a storage of another type")
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError(f"a storage {key!r} of {numel!r} elements")
        st = self.storages.setdefault(key, _Storage(key, kind, numel))
        if (st.kind.dtype, st.numel) != (kind.dtype, numel):
            raise pickle.UnpicklingError(f"storage {key} described twice differently")
        return st


def _tensors(path: Path, obj: object) -> dict[str, _TensorRef]:
    """The tensors of an unpickled checkpoint, as :func:`~.files.torch_load` picks them."""
    if isinstance(obj, dict) and set(obj) in ({"state_dict"}, {"model"}):
        obj = next(iter(obj.values()))
    if not isinstance(obj, dict) or not any(isinstance(v, _TensorRef) for v in obj.values()):
        raise UserError(f"{path} holds no tensors; it is not a model or adapter checkpoint")
    return {k: v for k, v in obj.items() if isinstance(v, _TensorRef)}


def _member_start(fh: Any, info: zipfile.ZipInfo, size: int) -> int:
    """Byte offset of a stored (uncompressed) zip member's data, from its local header."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1:
        raise ValueError(f"{info.filename} is compressed or encrypted")
    fh.seek(info.header_offset)
    head = fh.read(30)
    if len(head) < 30 or head[:4] != _LOCAL_HEADER or struct.unpack_from("<H", head, 8)[0] != zipfile.ZIP_STORED:
        raise ValueError(f"bad local header of {info.filename}")
    name_len, extra_len = struct.unpack_from("<HH", head, 26)
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.file_size > size:
        raise ValueError(f"{info.filename} runs past the end of the file")
    return start


class TorchZipFile:
    """One zip-format ``torch.save`` file: ``data.pkl`` parsed at open, tensors read on demand (no memory map).

    The interface is :class:`~.files.SafetensorsFile`'s: ``keys()``, ``shape(name)``, ``dtype(name)``,
    ``get(name, dtype=...)``, ``close()``.

    Raises:
        UserError: the file is truncated or corrupt, holds no tensors, or pickles anything besides tensors
            (refused before anything from it runs).
        UnsupportedPickle: a safe file this reader cannot rebuild (use :class:`LoadedPickle`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path = Path(path)
        try:
            size = path.stat().st_size
            with open(path, "rb") as fh:
                if fh.read(4) != _LOCAL_HEADER:
                    raise UnsupportedPickle("not a zip file (a pre-1.6 pickle)")
                with zipfile.ZipFile(fh) as zf:
                    infos = {i.filename: i for i in zf.infolist()}
                    pkl = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
                    if len(pkl) != 1:
                        raise UnsupportedPickle("no single <archive>/data.pkl")
                    prefix = pkl[0].removesuffix("data.pkl")
                    if prefix + "byteorder" in infos and zf.read(prefix + "byteorder") != b"little":
                        raise UnsupportedPickle("a big-endian file")
                    unpickler = _DescriptionUnpickler(zf.read(pkl[0]))
                    self._refs = _tensors(path, unpickler.load())
                self._start: dict[str, int] = {}
                for st in unpickler.storages.values():
                    info = infos.get(f"{prefix}data/{st.key}")
                    if info is None:
                        raise ValueError(f"the data of storage {st.key} is missing")
                    if info.file_size < st.numel * st.kind.itemsize:
                        raise ValueError(f"storage {st.key} has {info.file_size} bytes, fewer than its tensors need")
                    self._start[st.key] = _member_start(fh, info, size)
        except _Refused:
            raise UserError(refused_message(path)) from None
        except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError, TypeError, KeyError,
                IndexError, AttributeError, RecursionError, struct.error) as exc:
            raise UserError(corrupt_message(path, exc)) from None
        self._fh: Any = None

    def keys(self) -> list[str]:
        return list(self._refs)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._refs[name].shape

    def dtype(self, name: str) -> "torch.dtype":
        import torch

        return getattr(torch, self._refs[name].storage.kind.dtype)

    def get(self, name: str, *, dtype: "torch.dtype | None" = None) -> "torch.Tensor":
        """Read one tensor (a fresh, contiguous tensor); with ``dtype``, converted chunk by chunk."""
        import torch

        ref = self._refs[name]
        src = self.dtype(name)
        pos = self._start[ref.storage.key] + ref.offset * src.itemsize
        if self._fh is None:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - kept open between reads, closed in close()
        if ref.contiguous:
            return read_tensor(self._fh, self.path, pos, ref.shape, src, dtype=dtype)
        span = 1 + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))  # a view: read what it spans
        flat = read_tensor(self._fh, self.path, pos, (span,), src)
        return flat.as_strided(ref.shape, ref.stride).to(dtype or src, memory_format=torch.contiguous_format,
                                                                copy=True)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class LoadedPickle:
    """A pickled checkpoint only ``torch.load(weights_only=True)`` can rebuild (:func:`~.files.torch_load`):
    loaded whole when a tensor is read, until :meth:`close`. Same interface as :class:`TorchZipFile`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        sd = torch_load(self.path)
        self._meta = {k: (tuple(v.shape), v.dtype) for k, v in sd.items()}
        self._sd: dict[str, Any] | None = None  # not kept: a pre-1.6 pickle is in RAM, not memory-mapped

    def keys(self) -> list[str]:
        return list(self._meta)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._meta[name][0]

    def dtype(self, name: str) -> "torch.dtype":
        return self._meta[name][1]

    def get(self, name: str, *, dtype: "torch.dtype | None" = None) -> "torch.Tensor":
        """One tensor; with ``dtype``, a fresh tensor of that type."""
        if self._sd is None:
            self._sd = torch_load(self.path)
        t = self._sd[name]
        return fresh_tensor(t, dtype) if dtype is not None else t

    def close(self) -> None:
        self._sd = None


def open_pickle(path: str | Path) -> TorchZipFile | LoadedPickle:
    """Open a pickled checkpoint (``pytorch_model*.bin``, ``adapter_model.bin``) for tensor-by-tensor reading:
    by positioned reads when it is a zip-format file of plain tensors, else whole with ``torch_load``.

    Raises:
        UserError: truncated or corrupt, no tensors, or pickled Python objects besides tensors (never run).
    """
    try:
        return TorchZipFile(path)
    except UnsupportedPickle:
        return LoadedPickle(path)
