"""Saving outputs to a workspace folder (Google Drive in Colab): copied with a progress bar, checked, atomic.

A Colab runtime's disk vanishes with it; large outputs are written to the fast local disk first and then saved
with :func:`copy_to_workspace`. Each file is copied under a temporary name, flushed, read back and compared with
the SHA256 of what was read from the source, and only then renamed: a file under its final name is always a
complete, verified copy. A folder is assembled in ``.<name>.partial`` beside its final place and swapped in when
every file is there, so a half-saved model folder is never taken for a model; an interrupted save resumes, keeping
the files already verified. A file already saved with the same SHA256 is not copied again.

The workspace keeps what it knows in ``.helpers-saved.json``: for each copy, its size, modification time and
SHA256 (so a rerun checks a 13 GB copy on Drive without reading it back), for each source the same (so a
rerun in the same runtime does not hash it again), and for each saved name the job that made it. A record counts
only while size and time still match.

A user's work is never replaced by another job's: a name already in the workspace with other contents is replaced
only by the job that made it (the same ``job`` id; without one, a newer version of the same source file), or when
the caller says ``replace``; otherwise the save is refused with one line, and the new output stays where it is.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..disk import claim_output, disk_errors, stale_temps
from ..util import (UserError, atomic_path, fault_point, human_bytes, partial_path, progress, read_json, remove,
                    sha256_file, write_json)

MANIFEST = ".helpers-saved.json"
CHUNK = 1 << 20  # bytes per read/write; the progress bar counts MiB


@dataclass(frozen=True)
class SavedFile:
    """One file in the workspace: its path, size, SHA256, and whether this call copied it (``False``: an identical
    copy was already there)."""

    path: Path
    size: int
    sha256: str
    copied: bool


@dataclass(frozen=True)
class Saved:
    """What :func:`copy_to_workspace` saved: ``path`` (``dest_dir / <source name>``, a file or a folder) and its
    files."""

    path: Path
    files: tuple[SavedFile, ...]

    @property
    def size(self) -> int:
        """Bytes of all the files."""
        return sum(f.size for f in self.files)

    @property
    def copied(self) -> tuple[SavedFile, ...]:
        """The files this call copied."""
        return tuple(f for f in self.files if f.copied)

    def __str__(self) -> str:
        new = self.copied
        done = "already saved" if not new else f"{len(new)} copied ({human_bytes(sum(f.size for f in new))})"
        return f"saved {self.path}: {len(self.files)} file(s), {human_bytes(self.size)}; {done}, SHA256 verified"


class _Records:
    """The workspace's ``.helpers-saved.json``: ``{"files": {relative path: [size, mtime_ns, sha256]},
    "sources": {absolute path: [size, mtime_ns, sha256]}}``."""

    def __init__(self, dest_dir: Path) -> None:
        self.path = dest_dir / MANIFEST
        data = read_json(self.path, default={})
        self.files: dict = data.get("files", {}) if isinstance(data, dict) else {}
        self.sources: dict = data.get("sources", {}) if isinstance(data, dict) else {}
        self.makers: dict = data.get("made_by", {}) if isinstance(data, dict) else {}
        self.root = dest_dir

    @staticmethod
    def _key(path: Path) -> list[int]:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]

    def _known(self, table: dict, key: str, path: Path) -> str | None:
        rec = table.get(key)
        return rec[2] if isinstance(rec, list) and len(rec) == 3 and rec[:2] == self._key(path) else None

    def source_sha(self, src: Path) -> str:
        """The SHA256 of a source file (hashed once per version of the file)."""
        key = str(src.resolve())
        sha = self._known(self.sources, key, src)
        if sha is None:
            sha = sha256_file(src)
            self.sources[key] = [*self._key(src), sha]
        return sha

    def copy_sha(self, copy: Path) -> str:
        """The SHA256 of a file in the workspace (read back only when no record matches it)."""
        key = copy.relative_to(self.root).as_posix()
        sha = self._known(self.files, key, copy)
        if sha is None:
            sha = sha256_file(copy)
            self.files[key] = [*self._key(copy), sha]
        return sha

    def record(self, copy: Path, sha: str) -> None:
        """``copy`` (in the workspace) has SHA256 ``sha``."""
        self.files[copy.relative_to(self.root).as_posix()] = [*self._key(copy), sha]

    def learn_source(self, src: Path, sha: str) -> None:
        """Source ``src`` has SHA256 ``sha`` (it was just read whole)."""
        self.sources[str(src.resolve())] = [*self._key(src), sha]

    def moved(self, old: Path, new: Path) -> None:
        """Records under folder ``old`` now describe folder ``new`` (renamed); ``new``'s earlier records go."""
        o, n = old.relative_to(self.root).as_posix() + "/", new.relative_to(self.root).as_posix() + "/"
        kept = {k: v for k, v in self.files.items() if not k.startswith(n)}
        self.files = {(n + k[len(o):] if k.startswith(o) else k): v for k, v in kept.items()}

    def maker(self, name: str) -> dict | None:
        """Who made the saved ``name``: ``{"job": id or None, "source": absolute path}`` (None: not recorded)."""
        rec = self.makers.get(name)
        return rec if isinstance(rec, dict) else None

    def made(self, name: str, src: Path, job: str | None) -> None:
        """``name`` now holds ``src``'s copy, made by ``job``."""
        self.makers[name] = {"job": job, "source": str(src.resolve())}

    def save(self) -> None:
        self.sources = {k: v for k, v in self.sources.items() if Path(k).exists()}
        write_json(self.path, {"files": dict(sorted(self.files.items())), "sources": self.sources,
                               "made_by": dict(sorted(self.makers.items()))})


def saved_job(dest_dir: str | Path, name: str) -> str | None:
    """The job recorded as having made ``dest_dir / name`` when it was saved (None: none recorded, or not there)."""
    dest_dir = Path(dest_dir).expanduser()
    if not (dest_dir / name).exists():
        return None
    maker = _Records(dest_dir).maker(name)
    return maker.get("job") if maker is not None else None


def copy_to_workspace(src: str | Path, dest_dir: str | Path, *, show_progress: bool | None = None,
                      job: str | None = None, replace: bool = False) -> Saved:
    """Copy a file or folder into ``dest_dir`` as ``dest_dir / src.name``, verified by SHA256, atomically.

    Files already there with the same SHA256 are kept as they are; a folder replaces an earlier folder of the same
    name only once its new copy is complete. Nothing is copied when ``src`` already is that place. Different contents
    under the name replace it only when the same job made it (see the module's rule) or with ``replace``.

    Args:
        src: the file or folder to save (typically on the local disk).
        dest_dir: the workspace folder (created if missing), e.g. ``/content/drive/MyDrive/chinese-llama``.
        show_progress: show a progress bar in MiB (default: unless ``HELPERS_NO_PROGRESS=1``).
        job: what made ``src`` (an id of its inputs and settings), recorded with the copy; ``None``: the source
            file itself stands for its job.
        replace: replace another job's copy (the user's explicit choice).
    Returns:
        what was saved: the final path and each file's size and SHA256.
    Raises:
        UserError: ``src`` missing, ``dest_dir`` inside ``src``, a disk full or read-only, a copy that reads back
            different bytes, another job's output under the same name.
    """
    src, dest_dir = Path(src).expanduser(), Path(dest_dir).expanduser()
    if not src.exists():
        raise UserError(f"{src} not found: nothing to save")
    final = dest_dir / src.name
    if final.absolute() == src.absolute() or (final.exists() and final.resolve() == src.resolve()):
        records = _Records(dest_dir)
        files = sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]
        return Saved(final, tuple(SavedFile(f, f.stat().st_size, records.source_sha(f), False) for f in files))
    if src.is_dir() and src.resolve() in [dest_dir.resolve(), *dest_dir.resolve().parents]:
        raise UserError(f"cannot save {src} into {dest_dir}, a folder inside it; choose a workspace outside it")
    with disk_errors(dest_dir, what=f"the copy of {src.name}"):
        dest_dir.mkdir(parents=True, exist_ok=True)
        with claim_output(final, what=f"the copy of {src.name}"):
            records = _Records(dest_dir)
            try:
                if not replace:
                    _refuse_another_jobs(src, final, records, job)
                saved = _save_dir(src, final, records, show_progress) if src.is_dir() else \
                    Saved(final, tuple(_copy_files([(src, final)], records, show_progress, src.name)))
                if saved.copied or records.maker(final.name) is None:
                    records.made(final.name, src, job)
            finally:
                records.save()
    return saved


def _refuse_another_jobs(src: Path, final: Path, records: _Records, job: str | None) -> None:
    """Refuse to put ``src`` over ``final`` when ``final`` holds other contents made by another job."""
    if not final.exists() or _holds(final, src, records):
        return
    maker = records.maker(final.name)
    if maker is not None and maker.get("job") == job and (job is not None or maker.get("source") == str(src.resolve())):
        return
    raise UserError(f"{final} in your workspace holds another job's output, which this run's {src.name} would "
                    f"replace: it is kept, and this run's stays at {src}; rename or move {final.name} in the workspace "
                    "to keep both, or delete it to save this one there")


def _holds(final: Path, src: Path, records: _Records) -> bool:
    """``final`` (a file or folder) holds exactly ``src``'s files."""
    if src.is_file():
        return final.is_file() and _same(src, final, records)
    rels = {p.relative_to(src) for p in src.rglob("*") if p.is_file()}
    return final.is_dir() and {p.relative_to(final) for p in final.rglob("*") if p.is_file()} == rels and \
        all(_same(src / r, final / r, records) for r in rels)


def _save_dir(src: Path, final: Path, records: _Records, show: bool | None) -> Saved:
    """Copy folder ``src`` to ``final`` through ``.<name>.partial`` (kept across interrupted runs), or keep
    ``final`` when it already holds exactly ``src``'s files."""
    rels = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    if _holds(final, src, records):
        return Saved(final, tuple(SavedFile(final / r, (final / r).stat().st_size, records.copy_sha(final / r),
                                            False) for r in rels))
    partial = partial_path(final)
    if partial.exists() and not partial.is_dir():
        remove(partial)
    files = _copy_files([(src / r, partial / r) for r in rels], records, show, src.name)
    for stray in [p for p in partial.rglob("*") if p.is_file() and p.relative_to(partial) not in set(rels)]:
        remove(stray)  # left by an interrupted save of another version of the folder
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, old)
    os.replace(partial, final)
    remove(old)
    records.moved(partial, final)
    return Saved(final, tuple(SavedFile(final / f.path.relative_to(partial), f.size, f.sha256, f.copied)
                              for f in files))


def _same(src: Path, copy: Path, records: _Records) -> bool:
    """``copy`` exists and has ``src``'s size and SHA256."""
    return copy.is_file() and copy.stat().st_size == src.stat().st_size and \
        records.copy_sha(copy) == records.source_sha(src)


def _copy_files(pairs: list[tuple[Path, Path]], records: _Records, show: bool | None, name: str) -> list[SavedFile]:
    """Copy each ``(source, target)`` not already there, with one progress bar for all; records each copy."""
    todo = [(s, t) for s, t in pairs if not (t.exists() and _same(s, t, records))]
    chunks = sum(max(1, -(-s.stat().st_size // CHUNK)) for s, _ in todo)
    done: dict[Path, str] = {}
    bar = progress(_copy_chunks(todo, done, records), total=chunks, desc=f"saving {name}", unit="MiB",
                   disable=None if show is None else not show)
    for _ in bar:
        pass
    return [SavedFile(t, t.stat().st_size, done.get(t) or records.copy_sha(t), t in done) for _, t in pairs]


def _copy_chunks(todo: list[tuple[Path, Path]], done: dict[Path, str], records: _Records) -> Iterator[None]:
    """Copy each file under a temporary name, hashing what is read; read the copy back, compare, rename. Yields
    once per chunk (the progress bar's step)."""
    for src, target in todo:
        for stale in stale_temps(target):
            remove(stale)
        digest = hashlib.sha256()
        with atomic_path(target) as tmp:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while block := fin.read(CHUNK):
                    digest.update(block)
                    fout.write(block)
                    yield
                if src.stat().st_size == 0:
                    yield
                fout.flush()
                os.fsync(fout.fileno())
            back = sha256_file(tmp)
            if back != digest.hexdigest():
                raise UserError(f"the copy of {src} to {target} reads back different bytes (SHA256 {back}, source "
                                f"{digest.hexdigest()}): the disk or Drive failed; run the save again")
        done[target] = digest.hexdigest()
        records.record(target, done[target])
        records.learn_source(src, done[target])
        records.save()
        fault_point("save.file")
