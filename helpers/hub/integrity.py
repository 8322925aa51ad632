"""Downloads checked against the hub's own digests, once per file.

The hub names every file of a repo by a digest: an LFS file (weights, adapters, ``tokenizer.model``) by the SHA256
of its bytes (the listing's ``lfs.sha256``, the download's ``X-Linked-Etag``), a small file kept in git (configs,
``tokenizer.json``) by its git blob id, the SHA1 of ``blob <size>\\0`` and its bytes. ``huggingface_hub`` stores a
download under ``blobs/<that digest>`` in its cache and links it from ``snapshots/<commit>/<name>``, but never
checks the bytes against the name: a byte changed on the way by a failing mirror stays in the cache and is used
by every later run. :func:`check_file` compares a cached file's SHA256 or git blob id with the digest its blob is
named by (and with the listing's, when the caller has it); a mismatch removes that blob, and only that blob, and
raises :class:`DamagedDownload`. The bytes are hashed as they arrive where possible (:class:`GrowingFileHash`),
else after the download, in background threads (:class:`Verifier`) while the other files download.

A file that matched is recorded beside its repo's cache (``<repo>/.cllama-verified/<blob>``, holding the blob's
size and modification time), so it is hashed once and not at every run; a blob downloaded again no longer matches
its record and is hashed again. ``HELPERS_VERIFY_SHA256=0`` turns every check off (also the authors' published
sums, :func:`helpers.hub.verify_published`).
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from ..util import UserError
from ..util.timings import phase
from .arriving import POLL_SECONDS

VERIFY_ENV = "HELPERS_VERIFY_SHA256"  # "0": trust downloads unchecked
RECORD_DIR = ".cllama-verified"  # in a repo's cache folder: one record per verified blob
HASH_CHUNK = 8 << 20  # bytes read per step when hashing
HASH_WORKERS = 2  # files hashed at once (hashlib releases the GIL, so threads run in parallel)
_HEX = re.compile(r"[0-9a-f]+")
_ALGOS = {64: "sha256", 40: "git-sha1"}  # a blob's name length -> what the hub named it by


def verification_enabled() -> bool:
    """False when ``HELPERS_VERIFY_SHA256=0`` (read at each call, so a notebook cell can set it)."""
    return os.environ.get(VERIFY_ENV) != "0"


@dataclass(frozen=True)
class Digest:
    """A digest the hub names a file by: ``algo`` is ``sha256`` (LFS files) or ``git-sha1`` (git blob id)."""

    algo: str
    hex: str

    def __post_init__(self) -> None:
        if self.algo not in _ALGOS.values() or _ALGOS.get(len(self.hex)) != self.algo or not _HEX.fullmatch(self.hex):
            raise ValueError(f"not a {self.algo} digest: {self.hex!r}")

    @classmethod
    def named(cls, name: str) -> Digest | None:
        """The digest a blob file name stands for (64 hex digits: SHA256, 40: git blob id), else None."""
        name = name.lower()
        algo = _ALGOS.get(len(name))
        return cls(algo, name) if algo and _HEX.fullmatch(name) else None

    @property
    def label(self) -> str:
        """How messages name the kind of digest."""
        return "SHA256" if self.algo == "sha256" else "git blob id"


def hash_file(path: str | Path, algo: str = "sha256") -> str:
    """The hex digest of a file's bytes (``sha256``) or its git blob id (``git-sha1``), read in large chunks."""
    path = Path(path)
    h = hashlib.sha256() if algo == "sha256" else hashlib.sha1()
    if algo == "git-sha1":
        h.update(f"blob {path.stat().st_size}\0".encode())
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def cached_blob(path: str | Path) -> Path | None:
    """The hub-cache blob a snapshot file links to (``<repo>/blobs/<etag>``, the link's first hop), or None for a
    file that is not a link into a repo cache's ``blobs`` folder (a user's own file)."""
    path = Path(path)
    if not path.is_symlink():
        return None
    blob = Path(os.path.normpath(path.parent / os.readlink(path)))
    if blob.parent.name != "blobs" or "--" not in blob.parent.parent.name:
        return None
    return blob


def _record(blob: Path) -> Path:
    return blob.parent.parent / RECORD_DIR / blob.name


def _stamp(blob: Path) -> str:
    st = blob.stat()
    return f"{st.st_size} {st.st_mtime_ns}\n"


def is_verified(path: str | Path) -> bool:
    """True when ``path``'s blob was hashed and matched since it was last written (its record is current)."""
    blob = cached_blob(path)
    if blob is None or not blob.is_file():
        return False
    try:
        return _record(blob).read_text(encoding="ascii") == _stamp(blob)
    except (OSError, UnicodeDecodeError):
        return False


def _remember(blob: Path) -> None:
    """Record a verified blob (best effort: a read-only cache is simply hashed again next time)."""
    record = _record(blob)
    try:
        record.parent.mkdir(exist_ok=True)
        tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
        tmp.write_text(_stamp(blob), encoding="ascii")
        os.replace(tmp, record)
    except OSError:
        pass


def remove_cached(path: str | Path) -> None:
    """Delete a downloaded file: its snapshot link, the blob it points to and the blob's record, or a plain file.

    Other snapshots' links to the same blob are removed too (a link to nothing reads as a corrupted cache)."""
    path = Path(path)
    blob = cached_blob(path)
    target = path.resolve()
    path.unlink(missing_ok=True)
    if blob is None:
        if target != path:
            target.unlink(missing_ok=True)
        return
    snapshots = blob.parent.parent / "snapshots"
    for link in snapshots.rglob("*") if snapshots.is_dir() else ():
        if link.is_symlink() and cached_blob(link) == blob:
            link.unlink(missing_ok=True)
    if target != blob and blob.parent.parent.parent in target.parents:  # a shared payload inside the same cache
        target.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)
    _record(blob).unlink(missing_ok=True)


class DamagedDownload(UserError):
    """A cached download whose bytes do not match the hub's digest (its blob has been removed).

    Attributes: ``repo_id``, ``name`` (the file in the repo), ``expected`` and ``actual`` (:class:`Digest`).
    """

    def __init__(self, repo_id: str, name: str, expected: Digest, actual: Digest, *, endpoint: str,
                 fresh: bool) -> None:
        self.repo_id, self.name, self.expected, self.actual = repo_id, name, expected, actual
        where = f"downloaded from {endpoint}" if fresh else "in the hub cache (an earlier, unchecked download)"
        super().__init__(
            f"{repo_id}: {name} {where} has {expected.label} {actual.hex}, but the hub lists {expected.hex}: the "
            "bytes were damaged on the way (a failing mirror or connection); the bad copy was removed from the hub "
            f"cache, run again to download it afresh from {endpoint} ({VERIFY_ENV}=0 skips this check)")


def check_file(path: str | Path, *, repo_id: str, name: str, endpoint: str, expected: str = "",
               fresh: bool = True, known: str = "") -> bool:
    """Verify one downloaded file of the hub cache against the digest its blob is named by.

    Args:
        path: the snapshot path ``huggingface_hub`` returned.
        repo_id, name: the repo and the file, for the message.
        endpoint: the hub or mirror it comes from, for the message.
        expected: the digest the hub's listing gives (LFS SHA256 or git blob id), if known; it must agree too.
        fresh: downloaded just now (else: found in the cache), for the message.
        known: the digest of these very bytes, computed while they were written (:class:`GrowingFileHash`): taken
            instead of reading the file again.

    Returns:
        True when the file was hashed now, False when it needed no hashing (already verified, checks turned off,
        or not a hub-cache file: a user's own file is never hashed or touched here).

    Raises:
        DamagedDownload: the bytes do not match; the blob was removed from the cache first.
    """
    blob = cached_blob(path)
    if blob is None or not verification_enabled() or is_verified(path):
        return False
    named = Digest.named(blob.name)  # a mirror that sends another kind of ETag names blobs otherwise
    want = (Digest.named(expected) if expected else None) or named
    if want is None:
        raise UserError(f"{repo_id}: {name} cannot be checked: {endpoint} gave no digest for it (its ETag is "
                        f"{blob.name!r}, and the listing none); use another mirror (HF_ENDPOINT) or {VERIFY_ENV}=0")
    with phase("verify", f"{repo_id}/{name}" + (" (hashed as it arrived)" if known else "")):
        got = Digest(want.algo, known if known and want.algo == "sha256" else hash_file(path, want.algo))
    if got != want or (named is not None and named != want):
        remove_cached(path)
        raise DamagedDownload(repo_id, name, want, got, endpoint=endpoint, fresh=fresh)
    _remember(blob)
    return True


class GrowingFileHash:
    """The SHA256 of a file computed while another thread writes it, so that checking a download adds no read of its
    own: a thread waits for ``find()`` to name the file, then hashes its bytes as they arrive.

    The digest is only trusted for a file that was written front to back, once: :meth:`finish` returns None (the
    caller then hashes the finished file) unless the file never shrank under the reader, the finished file is the
    very file that was read (same inode) and every byte of it was read.
    """

    POLL = POLL_SECONDS  # seconds between looks at a file that has not grown

    def __init__(self, find: Callable[[], Path | None], *, wait: float = 30.0) -> None:
        self._find, self._wait = find, wait
        self._hash = hashlib.sha256()
        self._file: BinaryIO | None = None
        self._pos, self._broken = 0, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hash-download", daemon=True)
        self._thread.start()

    def _open(self) -> bool:
        deadline = time.monotonic() + self._wait
        while not self._stop.is_set() and time.monotonic() < deadline:
            path = self._find()
            if path is not None:
                try:
                    self._file = open(path, "rb", buffering=0)
                    return True
                except OSError:
                    pass
            time.sleep(self.POLL)
        return False

    def _drain(self, buf: bytearray) -> None:
        view = memoryview(buf)
        while n := self._file.readinto(buf):  # type: ignore[union-attr]
            self._hash.update(view[:n])
            self._pos += n

    def _run(self) -> None:
        if not self._open():
            return
        buf = bytearray(HASH_CHUNK)
        while not self._stop.is_set():
            self._drain(buf)
            if os.fstat(self._file.fileno()).st_size < self._pos:  # type: ignore[union-attr]
                self._broken = True  # rewritten from an earlier point: what was hashed may be gone
                return
            time.sleep(self.POLL)

    def finish(self, final: str | Path) -> str | None:
        """Stop following, hash what is left of ``final`` (the finished download) and return its SHA256, or None
        when the bytes read cannot be vouched for as ``final``'s."""
        self._stop.set()
        self._thread.join()
        if self._file is None:
            return None
        try:
            same = os.fstat(self._file.fileno()).st_ino == os.stat(final).st_ino
            if self._broken or not same:
                return None
            self._drain(bytearray(HASH_CHUNK))
            return self._hash.hexdigest() if self._pos == os.stat(final).st_size else None
        finally:
            self._file.close()


class Verifier:
    """Hash downloaded files in background threads while the caller goes on (downloading the next one).

    Use as a context manager; :meth:`wait` returns how many files were hashed and raises the first
    :class:`DamagedDownload` (in submission order) once every check has finished, so that every good file is
    recorded as verified even when another one is damaged.
    """

    def __init__(self, *, endpoint: str, workers: int = HASH_WORKERS) -> None:
        self.endpoint = endpoint
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify")
        self._pending: list[Future] = []

    def submit(self, path: str | Path, *, repo_id: str, name: str, expected: str = "", fresh: bool = True,
               known: str = "") -> None:
        """Queue one file for :func:`check_file` (returns at once)."""
        self._pending.append(self._pool.submit(check_file, path, repo_id=repo_id, name=name, endpoint=self.endpoint,
                                               expected=expected, fresh=fresh, known=known))

    def wait(self) -> int:
        """Wait for every queued check; returns how many files were hashed.

        Raises:
            DamagedDownload: the first damaged file (its blob removed, as every other damaged one's).
        """
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
        return sum(bool(f.result()) for f in pending)

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self._pending:
            f.cancel()
        self._pool.shutdown(wait=True)
