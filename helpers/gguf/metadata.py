"""Reading a GGUF's key/value metadata back: one reader for every caller, and what it says (template, type)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..tokens import template_from_chat_template
from ..util import UserError


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
    except (ValueError, OSError) as exc:
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


def gguf_template(path: str | Path) -> str | None:
    """The template id a GGUF's ``tokenizer.chat_template`` corresponds to (None: none or unknown)."""
    return template_from_chat_template(read_metadata(path, ("tokenizer.chat_template",)).get("tokenizer.chat_template"))


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
