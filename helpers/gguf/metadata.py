"""Reading a GGUF's key/value metadata back: one reader for every caller, and the quantization type it says;
:func:`check_gguf` tells a truncated or corrupt GGUF from a complete one."""
from __future__ import annotations

import math
import re
import struct
from pathlib import Path
from typing import Any

from ..util import UserError


JOB_KEY = "helpers.merge.job"  # a merged GGUF's record of its job (inputs by content, options), as a JSON string

def read_metadata(path: str | Path, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Key/value metadata of a GGUF as Python values.

    Args:
        path: the GGUF file.
        keys: only these keys (arrays such as the vocabulary included when asked for by name); ``None``: every
            scalar and string key (arrays are left out).

    Raises:
        UserError: the file is not a readable GGUF.
    """
    import gguf

    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as exc:  # noqa: BLE001 - numpy's reshape/view errors on a short file, IndexError, ValueError...
        if not Path(path).is_file():
            raise UserError(f"GGUF file {path} not found") from None
        check_gguf(path)  # says what is wrong when it can tell
        raise UserError(f"{path} is not a readable GGUF file ({exc}); re-download or re-convert it") from None
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if keys is not None and key not in keys:
            continue
        if keys is None and (not field.types or field.types[0] == gguf.GGUFValueType.ARRAY):
            continue
        try:
            value = field.contents()
        except Exception:  # noqa: BLE001 - an unreadable field is not worth failing for
            continue
        out[key] = value.item() if hasattr(value, "item") else value
    return out


def gguf_type(path: str | Path) -> str:
    """Quantization type of a GGUF (``F16``, ``Q8_0``, ``Q4_K_M``...), from its metadata or else its name."""
    try:
        from gguf import LlamaFileType

        file_type = read_metadata(path, ("general.file_type",)).get("general.file_type")
        if file_type is not None:
            return LlamaFileType(int(file_type)).name.replace("MOSTLY_", "").replace("ALL_", "")
    except Exception:  # noqa: BLE001 - fall back to the file name
        pass
    m = re.search(r"(i?q\d_[a-z0-9_]+?|bf16|f16|f32)(?=\.gguf$|$)", Path(path).name, re.IGNORECASE)
    return m.group(1).upper() if m else Path(path).stem


class _Short(Exception):
    """The file ended before the header said it would."""


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class _HeaderReader:
    def __init__(self, f, size: int) -> None:
        self.f, self.size, self.pos = f, size, 0

    def read(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise _Short
        data = self.f.read(n)
        self.pos += n
        return data

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> bytes:
        return self.read(self.unpack("<Q"))

    def value(self, vtype: int):
        if vtype == 8:
            return self.string()
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype != 9:
            raise ValueError(f"unknown value type {vtype}")
        atype, n = self.unpack("<I"), self.unpack("<Q")
        if atype in _SCALARS:  # skip the elements
            self.read(n * struct.calcsize(_SCALARS[atype]))
            return None
        for _ in range(n):
            self.value(atype)
        return None


def check_gguf(path: str | Path) -> None:
    """Raise :class:`UserError` unless ``path`` is a whole GGUF: the magic, a known version, every key/value and
    tensor description, and all the tensor data the header describes.

    A cut download or an interrupted copy fails here with "is truncated" and the sizes, instead of an error
    from deep inside a reader.
    """
    import gguf

    path = Path(path)
    size = path.stat().st_size
    fix = "re-download or re-convert it"
    with open(path, "rb") as f:
        r = _HeaderReader(f, size)
        try:
            if r.read(4) != b"GGUF":
                raise UserError(f"{path} is not a GGUF file (give a .gguf or a Hugging Face model folder)")
            version = r.unpack("<I")
            if version not in (2, 3):
                raise ValueError(f"GGUF version {version}, which no llama.cpp knows")
            n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
            alignment = 32
            for _ in range(n_kv):
                key = r.string()
                value = r.value(r.unpack("<I"))
                if key == b"general.alignment" and isinstance(value, int) and value > 0:
                    alignment = value
            end = 0
            for _ in range(n_tensors):
                name = r.string()
                dims = [r.unpack("<Q") for _ in range(r.unpack("<I"))]
                qtype, offset = gguf.GGMLQuantizationType(r.unpack("<I")), r.unpack("<Q")
                block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
                if math.prod(dims) % block:
                    raise ValueError(f"tensor {name.decode(errors='replace')} does not fill its blocks")
                end = max(end, offset + math.prod(dims) // block * nbytes)
        except _Short:
            raise UserError(f"{path} is truncated: its {size} bytes end inside the header; {fix}") from None
        except (ValueError, KeyError) as exc:
            raise UserError(f"{path} is corrupt ({exc}); {fix}") from None
    data_start = -(-r.pos // alignment) * alignment
    if data_start + end > size:
        raise UserError(f"{path} is truncated: {size} bytes, but its header describes {data_start + end}; {fix}")
