"""Importance matrices (``llama-imatrix`` output, GGUF or legacy ``.dat``) for the ``iq*`` quantization types."""
from __future__ import annotations

import ctypes
import struct
from pathlib import Path

from ..util import UserError


def read_imatrix(path: str | Path) -> dict[str, "list[float]"]:
    """Read an importance matrix (llama-imatrix's GGUF format or the legacy ``.dat``) as per-tensor weights.

    Values are the mean squared activations per input column, as llama-quantize passes them on:
    GGUF files store ``<tensor>.in_sum2`` / ``<tensor>.counts`` (divided here, per expert); legacy files
    store sums already divided by the number of calls.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise UserError(f"importance matrix {path} not found")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        import gguf

        reader = gguf.GGUFReader(str(path))
        sums, counts = {}, {}
        for t in reader.tensors:
            if t.name.endswith(".in_sum2"):
                sums[t.name[: -len(".in_sum2")]] = np.asarray(t.data, dtype=np.float32).reshape(-1)
            elif t.name.endswith(".counts"):
                counts[t.name[: -len(".counts")]] = np.asarray(t.data, dtype=np.float32).reshape(-1)
        if not sums or set(sums) != set(counts):
            raise UserError(f"{path} is not a complete llama.cpp importance matrix (in_sum2 / counts tensors)")
        out = {}
        for name, s in sums.items():
            c = np.rint(counts[name])
            per = s.reshape(len(c), -1)
            vals = np.where(c[:, None] > 0, per / np.where(c > 0, c, 1)[:, None], 1.0)
            out[name] = vals.reshape(-1).astype(np.float32)
        return out
    out = {}
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<i", f.read(4))
            if n < 1:
                raise ValueError("no entries")
            for _ in range(n):
                (length,) = struct.unpack("<i", f.read(4))
                name = f.read(length).decode("utf-8")
                ncall, nval = struct.unpack("<ii", f.read(8))
                vals = np.frombuffer(f.read(4 * nval), dtype="<f4").astype(np.float32)
                if len(vals) != nval or nval < 1:
                    raise ValueError("truncated")
                out[name] = vals / ncall if ncall > 0 else vals
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a llama.cpp importance matrix ({exc})") from None
    return out


def imatrix_struct(data: dict):
    """A NULL-terminated ``llama_model_imatrix_data`` array (and the buffers it points to, to keep alive)."""
    import llama_cpp
    import numpy as np

    cls = llama_cpp.llama_model_imatrix_data
    arr = (cls * (len(data) + 1))()
    keep = []
    for i, (name, vals) in enumerate(sorted(data.items())):
        if not np.all(np.isfinite(vals)):
            raise UserError(f"importance matrix entry {name} has non-finite values; recompute it")
        buf = np.ascontiguousarray(vals, dtype=np.float32)
        cname = ctypes.c_char_p(name.encode())
        keep += [buf, cname]
        arr[i].name = cname.value
        arr[i].data = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        arr[i].size = buf.size
    arr[len(data)].name = None
    return arr, keep
