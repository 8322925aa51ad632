"""Content digests of files: SHA256 (whole, in chunks), ``sha256sum`` listings, and a cheap sampled fingerprint."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from .files import atomic_path


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
