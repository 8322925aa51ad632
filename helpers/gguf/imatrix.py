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


def imatrix_metadata(path: str | Path) -> tuple[list[str], int]:
    """The datasets an importance matrix was computed on and its number of chunks (0: not recorded), as
    llama-quantize records them in the GGUFs it writes (``quantize.imatrix.dataset`` / ``.chunks_count``)."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        import gguf

        fields = gguf.GGUFReader(str(path)).fields
        datasets = fields["imatrix.datasets"].contents() if "imatrix.datasets" in fields else []
        chunks = fields["imatrix.chunk_count"].contents() if "imatrix.chunk_count" in fields else 0
        return [str(d) for d in datasets], int(chunks)
    with open(path, "rb") as f:  # legacy: the entries, then optionally the chunk count and one dataset name
        (n,) = struct.unpack("<i", f.read(4))
        for _ in range(n):
            (length,) = struct.unpack("<i", f.read(4))
            f.seek(length, 1)
            _, nval = struct.unpack("<ii", f.read(8))
            f.seek(4 * nval, 1)
        tail = f.read(8)
        if len(tail) < 4:
            return [], 0
        (chunks,) = struct.unpack("<i", tail[:4])
        if len(tail) < 8:
            return [], chunks
        (length,) = struct.unpack("<i", tail[4:])
        name = f.read(length) if length > 0 else b""
        return ([name.decode("utf-8", "replace")] if len(name) == length > 0 else []), chunks


def imatrix_weights(data: dict | None, tensors: list, ftype: str) -> dict:
    """The importance weights of each tensor llama.cpp's quantizer would quantize with them, checked as it checks
    them.

    Args:
        data: the importance matrix (:func:`read_imatrix`), or None.
        tensors: ``(GGUF name, shape in torch order, target type)`` of every tensor; those that stay F32 or F16
            are not quantized and take no weights.
        ftype: the quantization mix (``iq2_xxs``, ``q2_k_s``...), for the types that cannot do without weights.

    Raises:
        UserError: non-finite values, an entry of the wrong length (another model), or a tensor that needs
            weights has none.
    """
    import gguf
    import numpy as np

    from .quant_rules import requires_imatrix

    for name, vals in (data or {}).items():
        if not np.all(np.isfinite(vals)):
            raise UserError(f"importance matrix entry {name} has non-finite values; recompute it")
    found = {}
    for name, shape, qtype in tensors:
        if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            continue
        vals = (data or {}).get(name)
        if vals is not None and vals.size != shape[-1]:
            if name != "token_embd.weight":  # llama.cpp ignores a token_embd entry that does not fit
                raise UserError(f"the importance matrix has {vals.size} values for {name}, which has {shape[-1]} "
                                "columns; it was computed for another model")
            vals = None
        if vals is None and requires_imatrix(name, qtype, ftype):
            why = "no importance matrix" if data is None else "no entry for it in the importance matrix"
            raise UserError(f"{name} needs importance data for {qtype.name} in {ftype}, and there is {why}; "
                            "compute the importance matrix on this model (llama-imatrix)")
        if vals is not None:
            found[name] = vals
    return found


def add_imatrix_keys(writer, path: str | Path, n_entries: int) -> None:
    """Add the ``quantize.imatrix.*`` keys llama-quantize writes when it quantizes with importance matrix ``path``
    (its name as given, the first dataset, the number of entries, the number of chunks)."""
    datasets, chunks = imatrix_metadata(path)
    writer.add_string("quantize.imatrix.file", str(path)[:127])
    if datasets:
        writer.add_string("quantize.imatrix.dataset", datasets[0][:127])
    writer.add_uint32("quantize.imatrix.entries_count", n_entries)
    if chunks > 0:
        writer.add_uint32("quantize.imatrix.chunks_count", chunks)


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
