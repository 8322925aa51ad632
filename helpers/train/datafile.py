"""Fine-tuning data read and checked before anything is trained, every problem one line that names the file, the
line or record as an editor counts them (from 1), the field and the fix.

- SFT: an Alpaca JSON list (``[{"instruction", "input", "output"}, ...]``, or that list under a top-level ``data`` or
  ``train`` key), JSON Lines (one record per line) or a folder of them. ``instruction`` and ``output`` must be
  non-empty text, ``input`` text or absent; a record is an object. A file holding one record (an object), an object
  with the records under another key, a number or a string is refused, saying what it holds.
- PT: a UTF-8 ``.txt`` file or a folder of them, with some text in each.

:func:`check_record` is the one rule a record obeys, for local files and hub data sets alike.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ..util import UserError

REQUIRED = ("instruction", "output")
OPTIONAL = ("input",)
RECORD = '{"instruction", "input", "output"}'
LIST_KEYS = ("data", "train")  # a top-level object holding the record list under one of these is read as that list
SFT_SUFFIXES = (".json", ".jsonl")
PT_SUFFIXES = (".txt",)


def json_kind(value: Any) -> str:
    """What a JSON value is, in words: ``an object``, ``a list``, ``a number``..."""
    if isinstance(value, bool):
        return "true/false"
    kinds = {dict: "an object", list: "a list", str: "text", int: "a number", float: "a number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def check_record(item: Any, where: str) -> dict:
    """``item`` if it is a valid SFT record, else :class:`UserError` ``"<where>: <what is wrong>: <fix>"``."""
    if not isinstance(item, dict):
        raise UserError(f"{where}: is {json_kind(item)} ({_short(item)}), not a {RECORD} record: write each record "
                        "as an object")
    for name in REQUIRED:
        if name not in item:
            have = ", ".join(f"'{k}'" for k in list(item)[:5]) or "no fields"
            raise UserError(f"{where}: has no '{name}' field (it has {have}): every record needs 'instruction' and "
                            "'output' (and optionally 'input')")
    for name in (*REQUIRED, *OPTIONAL):
        value = item.get(name)
        if name in OPTIONAL and value is None:
            continue
        if not isinstance(value, str):
            raise UserError(f"{where}: '{name}' is {json_kind(value)} ({_short(value)}), not text: write it as a "
                            "string in quotes")
        if name in REQUIRED and not value.strip():
            raise UserError(f"{where}: '{name}' is empty: write the {name}, or delete the record")
    return item


def read_utf8_text(file: Path, *, what: str) -> str:
    """``file`` as UTF-8 text (a byte-order mark dropped); a byte that is not UTF-8 is one line naming its line and
    column."""
    if not file.is_file():
        raise UserError(f"{file} not found")
    data = file.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UserError(f"{file} line {line}: byte {data[exc.start]:#04x} at column {column} is not UTF-8: save the "
                        f"file as UTF-8 ({what})") from None


def data_files(path: Path, suffixes: tuple[str, ...], *, what: str) -> list[Path]:
    """The files of ``path`` to read: the file itself, or a folder's files with these suffixes (by name)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes and p.is_file())
        if not files:
            raise UserError(f"{path} holds no {'/'.join(suffixes)} files: put {what} in it")
        return files
    if not path.is_file():
        raise UserError(f"{path} not found")
    return [path]


# ---------------------------------------------------------------------------------------------------- SFT
def read_sft_file(file: Path) -> list[dict]:
    """The records of one SFT file (``.json`` or ``.jsonl``), every one checked."""
    suffix = file.suffix.lower()
    if suffix not in SFT_SUFFIXES:
        hint = " (plain text trains with mode pt)" if suffix == ".txt" else ""
        kind = f"{suffix} files" if suffix else "a file without a suffix"
        raise UserError(f"{file}: SFT reads Alpaca records from .json or .jsonl files, not {kind}{hint}: save the "
                        f"records as a JSON list of {RECORD} objects")
    text = read_utf8_text(file, what=f"a JSON file of {RECORD} records")
    if not text.strip():
        raise UserError(f"{file} is empty: write the records as a JSON list of {RECORD} objects")
    records = _jsonl(file, text) if suffix == ".jsonl" else _json(file, text)
    if not records:
        raise UserError(f"{file} holds no records: write at least one {RECORD} object")
    return records


def _jsonl(file: Path, text: str) -> list[dict]:
    records = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{file} line {number}: not valid JSON ({exc.msg} at column {exc.colno}): each line of a "
                            f".jsonl file is one {RECORD} object") from None
        records.append(check_record(item, f"{file} line {number}"))
    return records


def _json(file: Path, text: str) -> list[dict]:
    try:
        top = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = f"write one JSON list of {RECORD} objects"
        if exc.msg == "Extra data" and _first_line_is_object(text):
            hint = "it holds one object per line, which is JSON Lines: rename it to .jsonl"
        raise UserError(f"{file} line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}): {hint}") from None
    items, key = _record_list(file, top)
    records = []
    for i, item in enumerate(items, 1):
        try:
            records.append(check_record(item, f"{file} record {i}"))
        except UserError as exc:
            line = _line_of(text, key, i)
            where = f"{file} record {i}"
            raise UserError(str(exc).replace(where, f"{where} (line {line})", 1) if line else str(exc)) from None
    return records


def _first_line_is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text.lstrip().split("\n", 1)[0]), dict)
    except json.JSONDecodeError:
        return False


def _record_list(file: Path, top: Any) -> tuple[list, str | None]:
    """The list of records a parsed ``.json`` file holds, and the top-level key it is under (None: the top level)."""
    if isinstance(top, list):
        return top, None
    if not isinstance(top, dict):
        raise UserError(f"{file} holds {json_kind(top)} ({_short(top)}), not a list of records: write a JSON list of "
                        f"{RECORD} objects")
    for key in LIST_KEYS:
        if isinstance(top.get(key), list):
            return top[key], key
    if any(name in top for name in (*REQUIRED, *OPTIONAL)):
        raise UserError(f"{file} holds one record (an object), not a list of records: put it in a list, [ ... ], "
                        "with the others")
    lists = [k for k, v in top.items() if isinstance(v, list)]
    if lists:
        raise UserError(f"{file} holds an object whose '{lists[0]}' is a list ({len(top[lists[0]])} items), not a list of "
                        f"records: make that list the whole file, or name its key 'data'")
    keys = ", ".join(f"'{k}'" for k in list(top)[:5]) or "none"
    raise UserError(f"{file} holds an object (keys {keys}), not a list of records: write a JSON list of {RECORD} "
                    "objects")


def _line_of(text: str, key: str | None, index: int) -> int | None:
    """The line the ``index``-th item (from 1) of a ``.json`` file's record list starts on (None: not found)."""
    try:
        starts = _item_offsets(text, key)
    except (IndexError, ValueError):
        return None
    return text.count("\n", 0, starts[index - 1]) + 1 if index - 1 < len(starts) else None


def _item_offsets(text: str, key: str | None) -> list[int]:
    """Where each item of the list at the top level (or under top-level ``key``) starts, as string offsets."""
    decode = json.JSONDecoder().raw_decode
    at = _skip(text, 0)
    if key is not None:  # walk the top-level object to the list under key
        at = _skip(text, at + 1)
        while text[at] == '"':
            name, at = decode(text, at)
            at = _skip(text, _skip(text, at) + 1)  # past the colon
            if name == key:
                break
            at = _skip(text, decode(text, at)[1])
            at = _skip(text, at + 1) if text[at] == "," else at
    starts: list[int] = []
    at = _skip(text, at + 1)  # past [
    while text[at] != "]":
        starts.append(at)
        at = _skip(text, decode(text, at)[1])
        at = _skip(text, at + 1) if text[at] == "," else at
    return starts


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def read_sft_records(path: str | Path) -> list[dict]:
    """Every record of an SFT file or folder (``*.json``/``*.jsonl`` in name order), each checked."""
    files = data_files(Path(path), SFT_SUFFIXES, what=f"JSON files of {RECORD} records")
    return [record for file in files for record in read_sft_file(file)]


# ---------------------------------------------------------------------------------------------------- PT
def read_pt_file(file: Path) -> list[str]:
    """The non-empty lines of one pre-training text file."""
    if file.suffix.lower() in SFT_SUFFIXES:
        raise UserError(f"{file} is JSON (instruction data?), but --mode pt trains on plain text: give a .txt file "
                        "or folder, or use --mode sft for Alpaca JSON")
    text = read_utf8_text(file, what="plain text, one document per line")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise UserError(f"{file} is empty: pre-training reads plain text, one document per line")
    return lines


def read_pt_lines(path: str | Path) -> list[str]:
    """The non-empty lines of a PT ``.txt`` file or folder of them (JSON is refused: it is SFT data)."""
    path = Path(path)
    if path.is_file():
        return read_pt_file(path)
    return [line for file in data_files(path, PT_SUFFIXES, what="plain text") for line in read_pt_file(file)]


def reader(mode: str) -> Callable[[str | Path], list]:
    """The reader of local data for ``mode``: :func:`read_sft_records` or :func:`read_pt_lines`."""
    return read_pt_lines if mode == "pt" else read_sft_records
