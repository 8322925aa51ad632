"""The tokenizer files of a model folder: which they are, where they are, how many ids they define, copying them."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..util import UserError, atomic_path, read_json
from .sentencepiece import is_sentencepiece, piece_count

LLAMA3_PRE_PATTERN = (  # Llama-3's pre-tokenizer split regex (tokenizer.json); llama.cpp calls it "llama-bpe"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Every file a tokenizer may consist of; all of them travel with a merged model or a trained adapter.
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja")


def has_tokenizer(folder: str | Path) -> bool:
    """True when ``folder`` holds a ``tokenizer.model`` or a ``tokenizer.json``."""
    folder = Path(folder)
    return (folder / "tokenizer.model").is_file() or (folder / "tokenizer.json").is_file()


def find_tokenizer_dir(folder: str | Path) -> Path | None:
    """``folder`` if it holds a tokenizer, else its parent if that does (Meta keeps ``tokenizer.model`` beside the
    size folders), else None."""
    folder = Path(folder)
    return next((d for d in (folder, folder.parent) if has_tokenizer(d)), None)


def tokenizer_files(folder: str | Path) -> list[Path]:
    """The tokenizer files present in ``folder``, in :data:`TOKENIZER_FILES` order."""
    folder = Path(folder)
    return [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]


def copy_tokenizer_files(src: str | Path, dst: str | Path) -> list[Path]:
    """Copy every tokenizer file of ``src`` into the folder ``dst`` (each atomically); returns the copies."""
    out = []
    for f in tokenizer_files(src):
        target = Path(dst) / f.name
        with atomic_path(target) as tmp:
            shutil.copyfile(f, tmp)
        out.append(target)
    return out


def tokenizer_vocab_size(folder: str | Path) -> int | None:
    """Number of token ids of the tokenizer in ``folder`` (sentencepiece + added tokens, or tokenizer.json)."""
    folder = Path(folder)
    ids: list[int] = []
    sp = folder / "tokenizer.model"
    n = 0
    if sp.is_file() and is_sentencepiece(sp):  # Llama-3's Meta tokenizer.model is tiktoken text
        try:
            n = piece_count(sp)
        except UserError:
            n = 0
    if n:
        ids += [int(i) for i in read_json(folder / "added_tokens.json", default={}).values()]
        decoder = read_json(folder / "tokenizer_config.json", default={}).get("added_tokens_decoder") or {}
        ids += [int(i) for i in decoder]
        return max([n, *(i + 1 for i in ids)])
    tj = folder / "tokenizer.json"
    if tj.is_file():
        data = read_json(tj)
        ids += list(((data.get("model") or {}).get("vocab") or {}).values())
        ids += [int(t["id"]) for t in data.get("added_tokens") or []]
        return max(ids) + 1 if ids else None
    return None
