"""Which prompt template a model was trained with, from the catalog, a GGUF's metadata or its tokenizer files."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..catalog import find
from ..util import UserError
from .files import tokenizer_vocab_size
from .templates import TEMPLATES


def template_from_chat_template(text: Any) -> str | None:
    """Template id for the text of a Jinja chat template (or HF's list of named templates); None: unknown."""
    if isinstance(text, list):
        text = " ".join(str(item.get("template", "")) for item in text if isinstance(item, dict))
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        return None
    if "<|start_header_id|>" in text:
        return "llama3"
    if "[INST]" in text:
        return "llama2-zh"
    if "### Instruction" in text:
        return "alpaca"
    return None


def _from_catalog(model: str) -> str | None:
    names = [model]
    if Path(model).exists():
        names.append(Path(model).resolve().name)
    for name in names:
        entry = find(name)
        if entry is not None and entry.template in TEMPLATES:
            return entry.template
    return None


def _vocab_size(folder: Path) -> int | None:
    """``vocab_size`` of the folder's config.json, else the size of its tokenizer (None: neither is readable)."""
    config = folder / "config.json"
    if config.is_file():
        try:
            size = json.loads(config.read_text(encoding="utf-8")).get("vocab_size")
            if isinstance(size, int):
                return size
        except (OSError, ValueError, AttributeError):
            pass
    try:
        return tokenizer_vocab_size(folder)
    except UserError:
        return None


def _from_folder(folder: Path) -> str | None:
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            found = template_from_chat_template(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
        except (OSError, ValueError, AttributeError):
            found = None
        if found:
            return found
    jinja = folder / "chat_template.jinja"
    if jinja.is_file() and (found := template_from_chat_template(jinja.read_text(encoding="utf-8", errors="replace"))):
        return found
    tok_json = folder / "tokenizer.json"
    if tok_json.is_file() and "<|eot_id|>" in tok_json.read_text(encoding="utf-8", errors="replace"):
        return "llama3"
    return {49954: "alpaca", 55296: "llama2-zh"}.get(_vocab_size(folder) or 0)


def template_for_model(model_name_or_path: str, *, gguf_metadata: dict | None = None) -> str:
    """Pick the template id for a model.

    Looks, in order, at the model catalog (``helpers.catalog.find``), the GGUF ``tokenizer.chat_template``
    metadata, and the tokenizer files of a local folder (chat template, ``<|eot_id|>`` in tokenizer.json,
    vocabulary size 49954 = v1 Alpaca, 55296 = v2). Falls back to ``raw`` with a warning on stderr.

    Args:
        model_name_or_path: a catalog name, hub id or local folder.
        gguf_metadata: the key/value metadata of a GGUF file, if the model is one.
    """
    found = _from_catalog(str(model_name_or_path))
    if not found and gguf_metadata:
        found = template_from_chat_template(gguf_metadata.get("tokenizer.chat_template"))
    folder = Path(model_name_or_path)
    if not found and folder.is_dir():
        found = _from_folder(folder)
    if found:
        return found
    print(
        f"warning: could not tell which prompt template {model_name_or_path} uses; using 'raw' (plain text). "
        f"Pass one of {', '.join(TEMPLATES)} explicitly for a chat model.",
        file=sys.stderr,
    )
    return "raw"
