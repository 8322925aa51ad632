"""Small shared utilities: the user-facing error type, atomic outputs, hashing, progress bars.

Every command follows the same contract: bad input raises :class:`UserError` with a message that
says what is wrong and how to fix it; the CLI turns it into one ``error: ...`` line. Outputs are
written under a temporary name next to their final place and renamed only when complete, so an
interrupted run never leaves a file that looks finished.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")


DATA_DIR = Path(__file__).with_name("data")  # text shipped with the package (demo corpus)


class UserError(Exception):
    """A problem with the user's input or environment; the message says how to fix it."""


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
        raise UserError(f"{path} not found")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
                        f"give {what}") from None


def sha256_file(path: str | Path, *, chunk: int = 1 << 22) -> str:
    """Return the hex SHA256 of a file, read in chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_sha256_listing(files: Iterable[Path], out: Path) -> Path:
    """Write a ``sha256sum``-compatible listing of ``files`` (names relative to ``out``'s folder)."""
    lines = [f"{sha256_file(f)}  {Path(f).name}\n" for f in sorted(files, key=lambda p: Path(p).name)]
    with atomic_path(out) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")
    return out


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool | None = None) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm progress bar (auto-selects the notebook widget when available)."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = os.environ.get("HELPERS_NO_PROGRESS") == "1"
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr)


def human_bytes(n: float) -> str:
    """Format a byte count as a short human-readable string (``1.5 GB``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def free_disk_bytes(path: str | Path) -> int:
    """Free bytes on the filesystem holding ``path`` (or its nearest existing parent)."""
    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def require_free_disk(path: str | Path, needed: int, *, what: str = "the output") -> None:
    """Raise :class:`UserError` when the filesystem of ``path`` has less than ``needed`` bytes free."""
    free = free_disk_bytes(path)
    if free < needed:
        raise UserError(
            f"not enough disk space for {what} in {path}: need about {human_bytes(needed)}, "
            f"{human_bytes(free)} free; free some space or choose another --out"
        )


def tree_bytes(path: str | Path) -> int:
    """Bytes of the files under ``path`` (a file's own size; 0 when it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def sample_digest(path: str | Path, *, whole_below: int = 16 << 20, blocks: int = 64, block: int = 64 << 10) -> str:
    """A cheap content fingerprint of a file: SHA256 of its size and of the whole file when it is small, else of
    its first MiB (headers), its last 64 KiB and ``blocks`` blocks spread evenly in between.

    Replacing a file by another version or another download (different data everywhere) changes it; an edit
    that keeps the size and touches no sampled block does not (``--sha256`` verification catches that)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= whole_below:
            while chunk := f.read(1 << 22):
                h.update(chunk)
            return h.hexdigest()
        offsets = [0, size - block] + [(size - block) * i // (blocks + 1) for i in range(1, blocks + 1)]
        for i, off in enumerate(offsets):
            f.seek(off)
            h.update(f.read(1 << 20 if i == 0 else block))
    return h.hexdigest()


# --------------------------------------------------------------------------------------- logs, test faults
def log_dir() -> Path:
    """A writable folder for logs: ``$HELPERS_LOG_DIR``, else ``~/.cache/cllama/logs``, else the temp folder."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for d in (os.environ.get("HELPERS_LOG_DIR"), cache / "cllama" / "logs", Path(tempfile.gettempdir()) / "cllama-logs"):
        if d:
            with contextlib.suppress(OSError):
                Path(d).mkdir(parents=True, exist_ok=True)
                if os.access(d, os.W_OK):
                    return Path(d)
    raise UserError("no writable folder for logs; set HELPERS_LOG_DIR to one")


FAULT_ENV = "HELPERS_FAULT_KILL"  # tests: "<site>:<n>" kills the process the n-th time it passes fault_point(site)
_fault_hits: dict[str, int] = {}


def fault_point(site: str) -> None:
    """A place where the fault-injection tests kill the process with SIGKILL, as ``kill -9`` would (no cleanup
    runs); does nothing unless ``$HELPERS_FAULT_KILL`` names ``site``."""
    spec = os.environ.get(FAULT_ENV)
    if spec and spec.rpartition(":")[0] == site:
        _fault_hits[site] = _fault_hits.get(site, 0) + 1
        if _fault_hits[site] >= int(spec.rpartition(":")[2]):
            os.kill(os.getpid(), signal.SIGKILL)
