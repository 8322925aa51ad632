"""A file read while it downloads: the bytes a download has written, handed out as soon as they are there.

A plain HTTP download of an LFS file writes its temporary file front to back (``huggingface_hub``'s
``blobs/<sha256>.incomplete``), so every byte below the file's current size is final, unless the download starts
over (a mirror that answers a resumption with the whole file again: ``huggingface_hub`` then truncates the file,
before its first byte when it resumes an earlier run's file, and tells its progress bar when it happens half-way).
:class:`Arriving` follows such a download for a reader: the download side calls :meth:`Arriving.start` when its
first bytes come (after any such truncation) and :meth:`Arriving.rewind` when it starts over; the reader's
:meth:`Arriving.open` gives a file object once the download has started (None when the file cannot be read early:
it was in the cache already, or comes over Xet, which may write out of order), and :meth:`Arriving.wait` blocks
until the bytes up to an offset are written.

Bytes read this way are not verified yet: their file's digest is checked when its download ends. Whoever reads
them keeps what it makes from them provisional until then (the merge: :mod:`helpers.merge.provisional`), and a
download that started over after its bytes were read is refused (:meth:`Arriving.finish`), since the bytes read
may then differ from the ones verified.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable

from ..util import UserError

POLL_SECONDS = 0.02  # how often a waiting reader looks at the file's size


class Arriving:
    """One file's download, followed for a reader (see the module's docstring).

    Args:
        label: the file as messages name it (``repo/name``).
        size: its final size in bytes (the hub's listing).
    """

    def __init__(self, label: str, size: int) -> None:
        self.label, self.size = label, size
        self._find: Callable[[], Path | None] | None = None
        self._final: Path | None = None
        self._failed: BaseException | None = None
        self._ended = threading.Event()
        self._started = threading.Event()
        self._fh: BinaryIO | None = None
        self._rewritten = False  # the download started over after a reader took bytes
        self.read_early = False  # a reader took bytes before the download ended

    # ------------------------------------------------------------------ the downloading side
    def start(self, find: Callable[[], Path | None]) -> None:
        """The download writes front to back and its first bytes came; ``find`` gives its temporary file."""
        if not self._started.is_set():
            self._find = find
            self._started.set()

    def rewind(self) -> None:
        """The download started over (its file was truncated)."""
        self._rewritten |= self.read_early

    def finish(self, path: Path) -> None:
        """The download ended with the whole file at ``path``.

        Raises:
            UserError: it rewound after a reader had taken bytes, or the file read is not the one it left (the
                bytes read may not be the ones now on disk).
        """
        self._final = path
        self._ended.set()
        self._started.set()
        try:
            elsewhere = self._fh is not None and os.fstat(self._fh.fileno()).st_ino != path.stat().st_ino
        except (OSError, ValueError):  # the reader closed it meanwhile (a merge that stopped)
            elsewhere = self.read_early
        if self._rewritten or (elsewhere and self.read_early):
            raise UserError(f"the download of {self.label} started over while its first part was being merged, so "
                            "what was merged may differ from the file now downloaded; run again (the file is kept "
                            "in the hub cache)")

    def fail(self, exc: BaseException) -> None:
        """The download failed with ``exc`` (a waiting reader raises it)."""
        self._failed = exc
        self._ended.set()
        self._started.set()

    # ------------------------------------------------------------------ the reading side
    def open(self) -> BinaryIO | None:
        """The file object to read from while the download goes on (waiting for the download to start), or None
        when it cannot be read early (the caller waits for the verified file instead)."""
        self._started.wait()
        if self._fh is not None:
            return self._fh
        while self._find is not None and not self._ended.is_set():
            path = self._find()
            if path is not None:
                try:
                    self._fh = open(path, "rb")  # noqa: SIM115 - closed in close(); survives the rename
                    return self._fh
                except FileNotFoundError:
                    pass  # renamed meanwhile: the download has just ended
            time.sleep(POLL_SECONDS)
        return None

    def wait(self, end: int) -> None:
        """Block until the first ``end`` bytes are written (or the download ended: a failure is raised).

        Raises:
            whatever the download raised; EOFError: it ended shorter than ``end``.
        """
        if self._fh is None:
            raise RuntimeError("Arriving.wait before a successful open")
        self.read_early = True
        while os.fstat(self._fh.fileno()).st_size < end:
            if self._failed is not None:
                raise self._failed
            if self._ended.is_set() and os.fstat(self._fh.fileno()).st_size < end:
                raise EOFError(f"it ends after {os.fstat(self._fh.fileno()).st_size} bytes, not {end}")
            time.sleep(POLL_SECONDS)
        if self._failed is not None:
            raise self._failed

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
