"""Outputs that are never half-written (temporary sibling + rename), JSON and UTF-8 text read with one clear error,
and the package's own data folder.

Outputs are written under a temporary name next to their final place and renamed only when complete, so an
interrupted run never leaves a file that looks finished.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

DATA_DIR = Path(__file__).resolve().parents[1] / "data"  # text shipped with the package (demo corpus)


def partial_path(final: str | Path) -> Path:
    """Where ``final`` is built before it takes its name: the hidden sibling ``.<name>.partial`` (same folder, so
    the last rename is atomic; kept across an interrupted run for a resume, which reads what it already holds).
    Every writer of an output that outlives one call (merge sinks, the GGUF sink, the workspace's copies) and the
    planner that counts what an interrupted run left use this one rule."""
    final = Path(final)
    return final.with_name(f".{final.name}.partial")


def tmp_name(final: Path) -> Path:
    """Return a unique temporary sibling path for ``final`` (same directory, so rename is atomic)."""
    final = Path(final)
    return final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(final: str | Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``final``, on failure remove it.

    Args:
        final: where the finished file or directory should end up.
        is_dir: create the temporary path as a directory.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(final)
    if is_dir:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    if final.exists():
        remove(final)
    os.replace(tmp, final)


def remove(path: Path) -> None:
    """Remove a file or a directory tree if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as pretty JSON atomically (UTF-8, non-ASCII kept readable)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


_REQUIRED: Any = object()


def read_json(path: str | Path, *, default: Any = _REQUIRED) -> Any:
    """Read a JSON file, turning a missing or malformed file into a :class:`UserError`.

    Args:
        path: the file.
        default: returned when the file does not exist (optional files such as ``added_tokens.json``);
            without it a missing file is an error.
    """
    path = Path(path)
    if not path.is_file():
        if default is not _REQUIRED:
            return default
        raise UserError(f"{path} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); re-download it") from None


def read_utf8(path: str | Path, *, what: str = "a UTF-8 text file") -> str:
    """Read a text file as UTF-8 (a byte-order mark is dropped), turning a missing or binary file into a
    :class:`UserError` that says what was expected (``what``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found: give {what}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
                        f"give {what}") from None


def tree_bytes(path: str | Path) -> int:
    """Bytes of the files under ``path`` (a file's own size; 0 when it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0
