"""Importance matrices in llama.cpp's formats: read (``llama-imatrix``'s GGUF format or its legacy ``.dat``),
written (the GGUF format, :func:`write_imatrix`), checked against a model (:func:`check_imatrix_fits`), and
handed to llama.cpp's quantizer with the ``quantize.imatrix.*`` keys the llama-quantize tool records."""
from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass
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


def check_imatrix_fits(data: dict, columns: dict[str, int], *, source: str = "the importance matrix") -> None:
    """Refuse an importance matrix made for another model: one whose entries name tensors the model lacks, or
    lack a block weight the model has, or whose widths differ from the model's rows.

    llama.cpp's quantizer would quietly skip such entries (and quantize the rest without importance data);
    ``llama-imatrix`` records every matrix multiplication of every block, so on a model of this family a
    mismatch means the file belongs to another model.

    Args:
        data: the importance matrix (:func:`read_imatrix`).
        columns: ``{GGUF name: columns}`` of every 2-D weight of the model.
        source: how to name the matrix in the message (its file).

    Raises:
        UserError: the first mismatch, naming the tensor and how to fix it.
    """
    fix = "; it was computed for another model: compute it on this model (python -m helpers imatrix)"
    for name in sorted(data):
        if name not in columns and name != "output.weight":
            raise UserError(f"{source} has an entry for {name}, which this model does not have{fix}")
    for name in sorted(columns):
        if name.startswith("blk.") and name not in data:
            raise UserError(f"{source} has no entry for {name}, which this model has{fix}")
    for name, vals in sorted(data.items()):
        n = columns.get(name)
        if n is not None and vals.size != n and name != "token_embd.weight":  # llama.cpp ignores that one
            raise UserError(f"{source} has {vals.size} values for {name}, which has {n} columns{fix}")


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
    if data is not None:
        check_imatrix_fits(data, {n: int(s[-1]) for n, s, _ in tensors if len(s) == 2})
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


@dataclass(frozen=True)
class ImatrixStats:
    """An importance matrix as ``llama-imatrix`` stores it in its GGUF format (raw sums, not yet divided).

    Attributes:
        sums: ``{weight name: (n_mat, columns) float32}``: over every activation row the weight multiplied, the
            sum of each column's squared activation (``<name>.in_sum2``; ``n_mat`` is 1 for a dense weight).
        counts: ``{weight name: (n_mat,) float32}``: how many activation rows were summed (``<name>.counts``).
        chunk_count: chunks of text the statistics cover (``imatrix.chunk_count``).
        chunk_size: tokens per chunk (``imatrix.chunk_size``).
        datasets: the text files they were computed on (``imatrix.datasets``).
    """

    sums: dict
    counts: dict
    chunk_count: int
    chunk_size: int
    datasets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if set(self.sums) != set(self.counts):
            raise ValueError("every tensor needs both its sums and its counts")
        for name, s in self.sums.items():
            if s.ndim != 2 or self.counts[name].shape != (s.shape[0],):
                raise ValueError(f"{name}: sums {s.shape} do not fit counts {self.counts[name].shape}")
        if self.chunk_count < 0 or self.chunk_size < 1:
            raise ValueError("chunk_count must be >= 0 and chunk_size >= 1")


def write_imatrix(path: str | Path, stats: ImatrixStats) -> Path:
    """Write ``stats`` in llama-imatrix's GGUF format (atomically): the keys ``general.type = imatrix``,
    ``imatrix.datasets``, ``imatrix.chunk_count``, ``imatrix.chunk_size``, then per weight, in name order, an F32
    ``<name>.in_sum2`` of ``columns x n_mat`` and an F32 ``<name>.counts`` of ``1 x n_mat`` (1-D for a dense weight,
    ``n_mat`` = 1, as ggml stores them). ``llama-quantize --imatrix`` and :func:`read_imatrix` read it."""
    import gguf
    import numpy as np

    from ..util import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), "imatrix")
        w.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)  # llama-imatrix writes no architecture
        w.add_type("imatrix")
        w.add_array("imatrix.datasets", list(stats.datasets))
        w.add_uint32("imatrix.chunk_count", stats.chunk_count)
        w.add_uint32("imatrix.chunk_size", stats.chunk_size)
        for name in sorted(stats.sums):
            sums = np.ascontiguousarray(stats.sums[name], dtype=np.float32)
            counts = np.asarray(stats.counts[name], dtype=np.float32).reshape(-1, 1)
            if len(counts) == 1:  # ggml drops trailing dimensions of 1: a dense weight's entries are 1-D
                sums, counts = sums.reshape(-1), counts.reshape(-1)
            w.add_tensor(f"{name}.in_sum2", sums)
            w.add_tensor(f"{name}.counts", counts)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def read_imatrix_stats(path: str | Path) -> ImatrixStats:
    """The raw statistics of a GGUF importance matrix (what :func:`write_imatrix` writes, or llama-imatrix).

    Raises:
        UserError: not a GGUF importance matrix (a legacy ``.dat`` holds only the divided values:
            :func:`read_imatrix` reads those).
    """
    import gguf
    import numpy as np

    path = Path(path)
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise UserError(f"{path} is not a GGUF importance matrix")
    reader = gguf.GGUFReader(str(path))
    sums, counts = {}, {}
    for t in reader.tensors:
        data = np.array(t.data, dtype=np.float32)
        if t.name.endswith(".in_sum2"):
            sums[t.name[: -len(".in_sum2")]] = data.reshape(-1, int(t.shape[0]))
        elif t.name.endswith(".counts"):
            counts[t.name[: -len(".counts")]] = data.reshape(-1)
    fields = reader.fields

    def value(key: str, default):
        return fields[key].contents() if key in fields else default

    try:
        return ImatrixStats(sums, counts, int(value("imatrix.chunk_count", 0)), int(value("imatrix.chunk_size", 1)),
                            tuple(str(d) for d in value("imatrix.datasets", [])))
    except ValueError as exc:
        raise UserError(f"{path} is not a complete llama.cpp importance matrix ({exc})") from None
