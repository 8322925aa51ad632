"""The disk side of every command: one run per output, temporaries of killed runs, full and read-only disks.

- :func:`output_lock`: an exclusive lock beside an output for the duration of a command; a second run for the
  same output fails at once, naming the first; temporaries of earlier killed runs are removed once it is held.
- :func:`disk_errors` / :func:`disk_error_message`: a write that fails because the disk is full (``ENOSPC``,
  ``EDQUOT``, ``EFBIG`` and the wrappers numpy, torch and safetensors put around them) or read-only becomes one
  line that says so, and how much space is needed when the caller knows.
- :func:`require_writable`: the same, checked before anything is written;
- :func:`free_disk_bytes` / :func:`require_free_disk`: the space left where an output goes.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterable, Iterator

from .util import UserError, human_bytes, remove


def stale_temps(final: str | Path) -> list[Path]:
    """The temporaries :func:`tmp_name` made for ``final`` that are still on disk (``.<name>.tmp-<8 hex>``, with or
    without a further suffix such as ``.f16.gguf``, and temporaries of those: ``..<name>.tmp-<hex>.f16.gguf.tmp-<hex>``):
    left by a run that was killed before it could remove them."""
    final = Path(final)
    pattern = re.compile(rf"\.+{re.escape(final.name)}\.tmp-[0-9a-f]{{8}}(\..+)?")
    folder = final.parent
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name)) if folder.is_dir() else []


# --------------------------------------------------------------------------------------- free space
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


# --------------------------------------------------------------------------------------- one run per output
def _lock_holder(fd: int) -> str:
    try:
        return os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "a run that did not say which"
    except OSError:
        return "another run"


@contextlib.contextmanager
def output_lock(final: str | Path, *, sidecars: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Hold an exclusive lock on ``final`` for the duration of a command, and clean up after killed runs.

    The lock is ``.<name>.run.lock`` beside ``final``, locked with ``flock`` (the kernel releases it when the process
    dies, even by ``kill -9``, so a lock never goes stale). A second run for the same output fails at once with a
    :class:`UserError` naming the first (its pid and command line) rather than waiting: in a notebook a silent
    wait looks like a hang, and after the first run the second would only find "already done" or a conflict.
    Once the lock is held, the temporaries :func:`tmp_name` made for ``final`` and ``sidecars`` by an earlier,
    killed run are removed; a live run's temporaries cannot be touched, because a live run holds the lock.
    """
    import fcntl

    final = Path(final)
    lock = final.with_name(f".{final.name}.run.lock")
    made = [p for p in [final.parent, *final.parent.parents] if not p.exists()]  # folders to remove if left empty
    with disk_errors(final.parent, what=f"the lock file for {final.name}"):
        final.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(fd)
                os.close(fd)
                raise UserError(f"{final} is being written by another run ({holder}); wait for it to finish or "
                                "choose another output") from None
            except OSError:  # a file system without flock (some network mounts): go on unlocked
                pass
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:  # the previous holder removed it between our open and our lock
                same = False
            if same:
                break
            os.close(fd)
    try:
        with contextlib.suppress(OSError):  # a full disk must not stop the run from saying so later
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:300]}".encode())
        for path in (final, *sidecars):
            for stale in stale_temps(path):
                remove(stale)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)
        for folder in made:  # deepest first; a folder something was written into stays
            with contextlib.suppress(OSError):
                folder.rmdir()


# --------------------------------------------------------------------------------------- full and read-only disks
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FULL_TEXT = re.compile(r"No space left on device|os error 28|Disk quota exceeded|File too large|os error 27|"
                        r"\d+ requested and \d+ written|file write failed|failed writing file|"
                        r"inline_container\.cc.*unexpected pos")  # numpy's tofile; torch.save's zip writer
_READONLY_TEXT = re.compile(r"Read-only file system|os error 30")


def disk_problem(exc: BaseException) -> str | None:
    """``full``, ``read-only`` or ``denied`` when ``exc`` is a failed write of that kind (an ``OSError``, or the
    wrappers numpy, torch and safetensors put around one), else None."""
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    text = str(exc)
    if code in _FULL_ERRNOS or (code is None and _FULL_TEXT.search(text)):
        return "full"
    if code == errno.EROFS or (code is None and _READONLY_TEXT.search(text)):
        return "read-only"
    if code in (errno.EACCES, errno.EPERM):
        return "denied"
    return None


def disk_error_message(exc: BaseException, *, folder: str | Path | None = None, needed: int | None = None,
                       what: str = "the output") -> str | None:
    """One line saying that a write failed because the disk is full or read-only (None: ``exc`` is not that)."""
    kind = disk_problem(exc)
    if kind is None:
        return None
    name = getattr(exc, "filename", None) if isinstance(exc, OSError) else None
    folder = Path(folder) if folder is not None else Path(name).parent if name else None
    where = f" in {folder}" if folder is not None else ""
    if kind == "read-only":
        return f"cannot write {what}{where}: the file system is read-only; choose another output folder"
    if kind == "denied":
        return (f"cannot write {what}{where}: permission denied"
                + (f" for {name}" if name else "") + "; choose a folder you can write to")
    free = f"{human_bytes(free_disk_bytes(folder))} free" if folder is not None else ""
    need = f"it needs about {human_bytes(needed)}, {free}" if needed and free else free
    return (f"no space to write {what}{where}: the disk is full (or a quota or file-size limit was reached)"
            + (f"; {need}" if need else "") + "; free some space or choose another output folder, then rerun")


@contextlib.contextmanager
def disk_errors(folder: str | Path, *, needed: int | None = None, what: str = "the output") -> Iterator[None]:
    """Turn a write that fails for lack of space or permission inside the block into a one-line :class:`UserError`
    (how much ``what`` needs in ``folder``, how much is free); any other error passes through."""
    try:
        yield
    except (OSError, RuntimeError, ValueError) as exc:
        msg = disk_error_message(exc, folder=folder, needed=needed, what=what)
        if msg is None:
            raise
        raise UserError(msg) from None


def require_writable(folder: str | Path, *, what: str = "the output") -> None:
    """Raise :class:`UserError` when ``folder`` (or its nearest existing parent) cannot be written to."""
    p = Path(folder).resolve()
    while not p.exists():
        p = p.parent
    if not os.access(p, os.W_OK):
        ro = bool(os.statvfs(p).f_flag & os.ST_RDONLY)
        raise UserError(disk_error_message(OSError(errno.EROFS if ro else errno.EACCES, ""), folder=p, what=what))


@contextlib.contextmanager
def claim_output(final: str | Path, *, what: str, sidecars: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Everything a command does before writing ``final``: refuse a read-only folder, then hold the lock
    (:func:`output_lock`, which also removes the temporaries of killed runs) until the block ends."""
    require_writable(Path(final).parent, what=what)
    with output_lock(final, sidecars=sidecars) as lock:
        yield lock
