"""Downloads from the hub or a mirror that may fail on the way.

:func:`fetch_all` downloads a repo's files with ``huggingface_hub`` (resumable, into its cache), several at once,
largest first, and checks each against the hub's digest without a pass of its own over the weights: a large file
is hashed as its bytes are written (:class:`helpers.hub.integrity.GrowingFileHash` follows the download's temporary
file; the digest counts only for a file written front to back once, which the download's progress bar and the
file itself attest), anything else right after it finished, by a :class:`helpers.hub.integrity.Verifier` while the
other files download. What a failing mirror does is answered as follows; everything that is still wrong afterwards is one :class:`~helpers.util.UserError` naming the mirror and
``HF_ENDPOINT`` (or the setting to change):

- **429 / 5xx** (:data:`RETRY_STATUS`): retried :data:`MAX_RETRIES` times with exponential backoff from
  :data:`FIRST_WAIT` to :data:`MAX_WAIT` seconds, or after the ``Retry-After`` the mirror asks for: by
  ``huggingface_hub`` itself where it does so (``utils.http_backoff``, whose defaults these are: paged listings,
  HEAD requests with ``retry_on_errors=True``, a 429 to a download), by :func:`retrying` where it does not (a
  5xx to a download, the safetensors header reads), never both;
- **a slow HEAD**: each HEAD may take ``HF_HUB_ETAG_TIMEOUT`` seconds (read at each call; when it is not set,
  :data:`SLOW_HEAD_TIMEOUT`, as patient as ``huggingface_hub``'s own retried HEAD); a file not yet in the cache is
  asked for once with that timeout before its download, so a stalled mirror ends in a message naming the setting
  instead of minutes of silent retries;
- **a dropped connection**: ``huggingface_hub`` resumes the file with a ``Range`` request, in the same run; a run
  that still fails keeps every finished file in the cache, and the rerun downloads only the rest;
- **a damaged byte**: :func:`helpers.hub.integrity.check_file`.

``huggingface_hub``'s own retry lines are silenced (:func:`quiet_hub_logs`, its public verbosity setting);
:func:`retrying` prints one ``note:`` line per retry instead.
"""
from __future__ import annotations

import contextlib
import http
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

from .arriving import Arriving
from .integrity import GrowingFileHash, Verifier, cached_blob, check_file, verification_enabled
from .meter import Meter
from ..util import UserError
from ..util.timings import note, phase

T = TypeVar("T")

DOWNLOAD_WORKERS = 8  # files downloaded at once (snapshot_download's default)
MAX_RETRIES, FIRST_WAIT, MAX_WAIT = 5, 1.0, 8.0  # huggingface_hub.utils.http_backoff's defaults
MAX_RETRY_AFTER = 60.0  # a longer Retry-After is waited for this long
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})  # an overloaded or restarting server: worth waiting for
GET_RETRY_STATUS = RETRY_STATUS - {429}  # huggingface_hub retries a 429 answer to a download itself
SLOW_HEAD_TIMEOUT = 60.0  # seconds per HEAD when HF_HUB_ETAG_TIMEOUT is not set
FOLLOW_MIN_BYTES = 16 << 20  # a download this large is hashed as it is written (a smaller one: afterwards)
ETAG_TIMEOUT_ENV, DOWNLOAD_TIMEOUT_ENV = "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"
_DROPPED = {"RemoteProtocolError", "ReadError", "WriteError", "ProtocolError", "ChunkedEncodingError"}
_NOT_OURS = {"ConnectError", "ConnectTimeout", "ProxyError"}  # no connection at all: helpers.hub says so


@dataclass(frozen=True)
class Remote:
    """Where downloads come from and go: ``endpoint`` (None: huggingface.co), ``token``, the hub ``cache_dir``."""

    endpoint: str | None
    token: str | None
    cache_dir: Path

    @property
    def name(self) -> str:
        """The endpoint as messages name it."""
        return self.endpoint or "https://huggingface.co"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a hub repo as its listing gives it: ``digest`` is the LFS SHA256 or the git blob id."""

    name: str
    size: int = 0
    digest: str = ""


def head_timeout() -> float:
    """Seconds one HEAD request may take: ``$HF_HUB_ETAG_TIMEOUT`` (read now), else :data:`SLOW_HEAD_TIMEOUT`."""
    value = os.environ.get(ETAG_TIMEOUT_ENV, "").strip()
    try:
        return float(value) if value else SLOW_HEAD_TIMEOUT
    except ValueError:
        raise UserError(f"{ETAG_TIMEOUT_ENV}={value!r} is not a number of seconds") from None


@contextlib.contextmanager
def quiet_hub_logs() -> Iterator[None]:
    """Silence ``huggingface_hub``'s warnings ("Retrying in 8s", "HTTP Error 503 thrown ...") for the block, through
    its public verbosity setting; a failure is reported once, by the caller."""
    from huggingface_hub.utils import logging as hub_logging

    before = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()
    try:
        yield
    finally:
        hub_logging.set_verbosity(before)


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    seen: list[BaseException] = []
    while exc is not None and all(exc is not s for s in seen):
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a ``huggingface_hub`` HTTP error anywhere in ``exc``'s chain."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _method(exc: BaseException) -> str:
    try:
        return str(exc.request.method)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return ""


def transport_problem(exc: BaseException, *, remote: Remote, what: str) -> str | None:
    """The one-line explanation of a transfer that failed for a reason waiting or the settings can fix (an
    overloaded mirror, a timeout, a connection that kept breaking), or None for anything else."""
    status = _status(exc)
    if status in RETRY_STATUS:
        phrase = http.HTTPStatus(status).phrase
        return (f"{remote.name} answered {status} {phrase} to {what} after {MAX_RETRIES} retries with backoff: the "
                "server is overloaded or down; try again later, or set HF_ENDPOINT to another mirror (unset it for "
                "huggingface.co)")
    for e in _chain(exc):
        names = _names(e)
        if names & _NOT_OURS:
            return None
        if "TimeoutException" in names or "Timeout" in names:
            if _method(e) == "HEAD":
                return (f"{remote.name} did not answer the HEAD request for {what} within {head_timeout():g} s "
                        f"({ETAG_TIMEOUT_ENV}), in {MAX_RETRIES + 1} tries: a slow or stalled mirror; set "
                        f"{ETAG_TIMEOUT_ENV} higher (e.g. 120) or HF_ENDPOINT to another mirror")
            return (f"{remote.name} stopped sending {what} (no data for {DOWNLOAD_TIMEOUT_ENV} seconds, several "
                    f"times); finished files are kept: run again to go on, set {DOWNLOAD_TIMEOUT_ENV} higher, or "
                    "HF_ENDPOINT to another mirror")
        if names & _DROPPED or "Consistency check failed" in str(e):
            return (f"the connection to {remote.name} kept breaking while downloading {what}; finished files are "
                    "kept in the hub cache: run again to go on (check the network, or set HF_ENDPOINT to another "
                    "mirror)")
    return None


def _retry_after(exc: BaseException) -> float | None:
    for e in _chain(exc):
        headers = getattr(getattr(e, "response", None), "headers", None)
        value = headers.get("retry-after") if headers is not None else None
        if value is not None and str(value).strip().isdigit():
            return float(value)
    return None


def retrying(call: Callable[[], T], *, remote: Remote, what: str, retries: int = MAX_RETRIES,
             statuses: frozenset[int] = RETRY_STATUS) -> T:
    """``call()``, retried ``retries`` times with backoff when it raises an HTTP error with one of ``statuses`` (its
    own, not one a library call already retried and wrapped); a failure :func:`transport_problem` explains becomes
    a UserError.

    Raises:
        UserError: still 429 / 5xx after the retries, a timeout, a connection that kept breaking.
    """
    wait = FIRST_WAIT
    for attempt in range(1, retries + 2):
        try:
            return call()
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything else is the caller's to report
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in statuses and attempt <= retries:
                delay = min(_retry_after(exc) or wait, MAX_RETRY_AFTER)
                print(f"note: {remote.name} answered {status} to {what}; retrying in {delay:g} s "
                      f"({attempt}/{retries})", file=sys.stderr, flush=True)
                time.sleep(delay)
                wait = min(MAX_WAIT, wait * 2)
                continue
            problem = transport_problem(exc, remote=remote, what=what)
            if problem is None:
                raise
            raise UserError(problem) from None
    raise AssertionError("unreachable")


def _in_cache(repo_id: str, name: str, digest: str, remote: Remote) -> bool:
    """True when the cache already holds ``name`` with this digest (no download, so no HEAD needed first)."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, name, cache_dir=remote.cache_dir)
    blob = cached_blob(path) if isinstance(path, str) else None
    return blob is not None and blob.is_file() and (not digest or blob.name == digest)


@dataclass(frozen=True)
class Fetched:
    """A file :func:`fetch` put in (or found in) the hub cache: its ``path``, whether it was ``fresh`` (downloaded
    now) and, when its bytes could be hashed as they arrived, their SHA256 (``sha256``, else ``""``)."""

    path: Path
    fresh: bool
    sha256: str = ""


class _Received:
    """What a download's progress bar was told: bytes received in all (a byte received twice means a part of the
    file was written again, so a digest taken while it was written cannot be trusted). With ``arriving``, the
    first bytes start it (``find`` names the file they go to) and a step back rewinds it."""

    def __init__(self, meter: Meter | None = None, arriving: Arriving | None = None) -> None:
        self.total, self.rewound, self.meter = 0, False, meter
        self.arriving, self.find = arriving, None

    def bar(self) -> type:
        """A ``huggingface_hub`` progress bar class (``tqdm_class=``) that counts into this object."""
        from huggingface_hub.utils import tqdm

        received = self

        class CountingBar(tqdm):
            def update(self, n: float | None = 1) -> bool | None:
                received.total += int(n or 0)
                received.rewound |= bool(n is not None and n < 0)
                if received.meter is not None:
                    received.meter.add(int(n or 0))
                if received.arriving is not None and received.find is not None:
                    if n is not None and n < 0:
                        received.arriving.rewind()
                    elif n:
                        received.arriving.start(received.find)
                return super().update(n)

        return CountingBar


def _sequential(repo_id: str, meta, remote: Remote) -> Callable[[], Path | None] | None:
    """How to find the temporary file of a download ``huggingface_hub`` writes front to back (its repo's ``blobs``
    folder, named after the digest, as the cache layout names blobs), or None: a file not in LFS, or fetched over
    Xet (which may write out of order)."""
    etag = (meta.etag or "").lower()
    if len(etag) != 64 or meta.xet_file_data is not None:
        return None
    blobs = remote.cache_dir / f"models--{repo_id.replace('/', '--')}" / "blobs"

    def find() -> Path | None:
        found = []
        for p in blobs.glob(f"{etag}*.incomplete") if blobs.is_dir() else ():
            try:
                found.append((p.stat().st_mtime, p))
            except FileNotFoundError:
                continue
        # the newest: one left by a killed run is older (a follower checks, when the download ends, that the file
        # it followed is the one in the cache)
        return max(found)[1] if found else None

    return find


def fetch(repo_id: str, name: str, *, remote: Remote, digest: str = "", meter: Meter | None = None,
          arriving: Arriving | None = None) -> Fetched:
    """Download one file into the hub cache (or find it there).

    A file not yet in the cache is first asked for with one HEAD (``huggingface_hub``'s own retries, the timeout
    :func:`head_timeout`), so that a stalled mirror is reported as such, and its bytes are hashed as they are
    written where that can be vouched for (:class:`helpers.hub.integrity.GrowingFileHash`); not verified here (see
    :func:`fetch_all`). Each piece received is counted by ``meter`` (whose :meth:`~Meter.cancel` stops it);
    ``arriving`` is told where the bytes are written while they arrive (:class:`~helpers.hub.arriving.Arriving`).

    Raises:
        UserError: the mirror failed in a way :func:`transport_problem` explains.
    """
    try:
        return _fetch(repo_id, name, remote=remote, digest=digest, meter=meter, arriving=arriving)
    except BaseException as exc:
        if arriving is not None:
            arriving.fail(exc)  # a reader waiting for the first bytes hears of it
        raise


def _fetch(repo_id: str, name: str, *, remote: Remote, digest: str, meter: Meter | None,
           arriving: Arriving | None) -> Fetched:
    """:func:`fetch`'s work."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    what = f"{repo_id}/{name}"
    follower, received = None, _Received(meter, arriving)
    cached = _in_cache(repo_id, name, digest, remote)
    if not cached:
        url = hf_hub_url(repo_id, name, endpoint=remote.endpoint)
        with phase("HEAD", what):
            meta = retrying(lambda: get_hf_file_metadata(url, token=remote.token, timeout=head_timeout(),
                                                         endpoint=remote.endpoint, retry_on_errors=True),
                            remote=remote, what=what, retries=0)  # huggingface_hub retried it already
        received.find = find = _sequential(repo_id, meta, remote)
        large = (meta.size or 0) >= FOLLOW_MIN_BYTES
        follower = GrowingFileHash(find) if find is not None and large and verification_enabled() else None
    t0 = time.monotonic()
    try:
        path = Path(retrying(lambda: hf_hub_download(repo_id, name, token=remote.token, endpoint=remote.endpoint,
                                                     cache_dir=remote.cache_dir, etag_timeout=head_timeout(),
                                                     tqdm_class=received.bar()),
                             remote=remote, what=what, statuses=GET_RETRY_STATUS))
    except BaseException:
        if follower is not None:
            follower.finish(os.devnull)
        raise
    spent = time.monotonic() - t0
    note("download" if not cached else "cached", what, spent,
         f"{received.total / 1e6:.0f} MB, {received.total / 1e6 / max(spent, 1e-9):.1f} MB/s" if not cached else "")
    sha256 = follower.finish(path) if follower is not None else None
    once = not received.rewound and received.total == path.stat().st_size
    if arriving is not None:
        arriving.finish(path)
    return Fetched(path, not cached, sha256 if sha256 and once else "")


def fetch_verified(repo_id: str, name: str, *, remote: Remote, digest: str = "", meter: Meter | None = None,
                   arriving: Arriving | None = None) -> Path:
    """:func:`fetch` one file and check it against the hub's digest before returning it (one file: nothing to
    overlap the hash with).

    Raises:
        UserError: the download failed; DamagedDownload: its bytes do not match (the blob is removed).
    """
    got = fetch(repo_id, name, remote=remote, digest=digest, meter=meter, arriving=arriving)
    check_file(got.path, repo_id=repo_id, name=name, endpoint=remote.name, expected=digest, fresh=got.fresh,
               known=got.sha256)
    return got.path


def _snapshot(path: Path, name: str) -> Path:
    """The snapshot folder a downloaded ``name`` lies in."""
    for _ in Path(name).parts:
        path = path.parent
    return path


def fetch_all(repo_id: str, files: Sequence[RemoteFile], *, remote: Remote) -> Path:
    """Download ``files`` of a hub repo (several at once, largest first), each verified while the others download;
    returns the snapshot folder.

    Every file that downloads and verifies is kept in the cache even when another one fails, so a rerun fetches
    only what is missing.

    Raises:
        DamagedDownload: a file's bytes do not match the hub's digest (checked first: its blob is removed).
        UserError: a download failed (the first in size order), or the repo changed meanwhile.
    """
    if not files:
        raise UserError(f"{repo_id} on {remote.name} has none of the files asked for")
    order = sorted(files, key=lambda f: (-f.size, f.name))
    errors: dict[str, BaseException] = {}
    folders: set[Path] = set()
    pool = ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS, thread_name_prefix="download")
    with Verifier(endpoint=remote.name) as verifier:
        try:
            futures: dict[Future, RemoteFile] = {
                pool.submit(fetch, repo_id, f.name, remote=remote, digest=f.digest): f for f in order}
            for future in as_completed(futures):
                f = futures[future]
                try:
                    got = future.result()
                except Exception as exc:  # noqa: BLE001 - the others go on; reported below
                    errors[f.name] = exc
                    continue
                folders.add(_snapshot(got.path, f.name))
                verifier.submit(got.path, repo_id=repo_id, name=f.name, expected=f.digest, fresh=got.fresh,
                                known=got.sha256)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        verifier.wait()
    if errors:
        raise next(errors[f.name] for f in order if f.name in errors)
    if len(folders) != 1:
        raise UserError(f"{repo_id} changed on {remote.name} while it was downloading ({len(folders)} commits); run "
                        "again to download the new version")
    return folders.pop()
