"""Model references: a local folder, an offline mirror folder, or a Hugging Face Hub download.

:func:`resolve_model` looks, in order, at:

1. an existing local path;
2. ``$HELPERS_LOCAL_MODELS/<repo name>`` (an offline mirror: the demo assets, or a Drive folder of
   downloaded models; offline smoke mode points it at the demo assets);
3. the Hugging Face Hub (resumable download with ``huggingface_hub``; the token comes from Colab
   secrets or ``HF_TOKEN`` and is never printed). ``HF_ENDPOINT`` points it at a mirror such as
   ``https://hf-mirror.com`` (read at each call, so setting it in a notebook cell takes effect at once).

Repos that moved on the hub (the v1 LoRAs went from ``ziqingyang/`` to ``hfl/``) are downloaded from
their current id whichever id is given. Files whose SHA256 the release's authors published (catalog
``sha256``) are checked after download; a mismatch is one :class:`~helpers.util.UserError` and the bad
copy is removed from the cache. ``HELPERS_VERIFY_SHA256=0`` skips that check.
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from .catalog import ModelEntry, find
from .env import get_secret
from .util import UserError, sha256_file

LOCAL_MODELS_ENV = "HELPERS_LOCAL_MODELS"
VERIFY_ENV = "HELPERS_VERIFY_SHA256"


def looks_like_hub_id(ref: str) -> bool:
    """True for ``owner/name`` references (not a path such as ``./x/y`` or ``/x``)."""
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))


def hub_endpoint() -> str | None:
    """The hub (or mirror) downloads go to: ``$HF_ENDPOINT``, or ``None`` for huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def current_hub_id(ref: str) -> str:
    """The id to download ``ref`` from: a catalog repo's current hub id when ``ref`` is its former id,
    a catalog name's hub id, else ``ref`` unchanged."""
    entry = find(ref)
    return ref if entry is None else entry.hub_id


def resolve_model(ref: str | Path, *, allow_patterns: list[str] | None = None, what: str = "model") -> Path:
    """Return a local directory (or file) for ``ref``: a path, a mirrored repo or a hub download.

    Args:
        ref: a local path, a hub id such as ``hfl/chinese-alpaca-2-lora-7b``, or a catalog name.
        allow_patterns: file patterns to download from the hub (default: everything but duplicate weights).
        what: how to name the reference in error messages (``base model``, ``LoRA``).

    Raises:
        UserError: not found, offline, gated, or a download that does not match its published SHA256.
    """
    ref_s = str(ref)
    path = Path(ref_s).expanduser()
    if path.exists():
        return path
    hub_id = current_hub_id(ref_s.strip())
    if hub_id.lower() != ref_s.strip().lower() and looks_like_hub_id(ref_s.strip()):
        print(f"note: {ref_s} moved to {hub_id} on the hub; using {hub_id}", file=sys.stderr)
    mirror = os.environ.get(LOCAL_MODELS_ENV)
    if mirror and looks_like_hub_id(hub_id):
        candidate = Path(mirror) / hub_id.split("/")[-1]
        if candidate.exists():
            return candidate
    if not looks_like_hub_id(hub_id):
        raise UserError(f"{what} {ref_s!r} not found: give an existing folder or a hub id like 'hfl/chinese-alpaca-2-lora-7b'")
    _require_online(hub_id, what)
    return _download(hub_id, allow_patterns=allow_patterns, what=what)


def list_files(ref: str | Path, *, what: str = "model") -> list[str]:
    """Names (relative, ``/``-separated) of the files in ``ref``: a local folder, a mirrored repo or a hub repo.

    Lists without downloading, so a caller can choose one file of a repo that holds several (GGUF quants).
    """
    ref_s = str(ref)
    path = _local_path(ref_s)
    hub_id = current_hub_id(ref_s.strip())
    if path is not None and path.is_dir():
        return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    if path is not None:
        return [path.name]
    if not looks_like_hub_id(hub_id):
        raise UserError(f"{what} {ref_s!r} not found: give an existing folder or a hub id like 'hfl/chinese-alpaca-2-lora-7b'")
    _require_online(hub_id, what)
    from huggingface_hub import HfApi

    with _hub_errors(hub_id, what):
        return sorted(HfApi(endpoint=hub_endpoint()).list_repo_files(hub_id, token=get_secret("HF_TOKEN")))


def file_sizes(ref: str | Path, *, what: str = "model") -> dict[str, int]:
    """``{file name: bytes}`` of the files a :func:`resolve_model` of ``ref`` would fetch or read (duplicate
    weight copies left out), from the local folder or the hub's listing; nothing is downloaded.

    Raises:
        UserError: not found, offline with no local copy, or the hub cannot be reached.
    """
    return {n: size for n, (size, _sha) in file_listing(ref, what=what).items()}


def file_listing(ref: str | Path, *, what: str = "model") -> dict[str, tuple[int, str]]:
    """``{file name: (bytes, sha256)}`` as :func:`file_sizes`; the sha256 is the hub's LFS digest (``""`` for
    small files and local folders)."""
    ref_s = str(ref)
    path = _local_path(ref_s)
    if path is not None and path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        listing = {n: ((path / n).stat().st_size, "") for n in names}
    elif path is not None:
        return {path.name: (path.stat().st_size, "")}
    else:
        hub_id = current_hub_id(ref_s.strip())
        if not looks_like_hub_id(hub_id):
            raise UserError(f"{what} {ref_s!r} not found: give an existing folder or a hub id")
        _require_online(hub_id, what)
        from huggingface_hub import HfApi

        with _quiet_retries(), _hub_errors(hub_id, what):
            entries = HfApi(endpoint=hub_endpoint()).list_repo_tree(hub_id, recursive=True,
                                                                     token=get_secret("HF_TOKEN"))
            listing = {e.path: (int(e.size), str(getattr(getattr(e, "lfs", None), "sha256", "") or ""))
                       for e in entries if getattr(e, "size", None) is not None}
    skip = redundant_weights(list(listing))
    return {n: v for n, v in sorted(listing.items()) if not any(fnmatch.fnmatch(n, p) for p in skip)}


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``
    (read now, so a notebook that sets ``HF_HOME`` is followed)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def cached_files(repo_id: str, names: list[str]) -> set[str]:
    """Which of ``names`` of hub repo ``repo_id`` are already complete in the hub cache (nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    found = set()
    for name in names:
        path = try_to_load_from_cache(current_hub_id(repo_id), name, cache_dir=hub_cache_dir())
        if isinstance(path, str) and Path(path).is_file():
            found.add(name)
    return found


def is_local(ref: str | Path) -> bool:
    """True when ``ref`` is a file or folder on this machine (directly or through ``$HELPERS_LOCAL_MODELS``)."""
    return _local_path(str(ref)) is not None


def _local_path(ref: str) -> Path | None:
    """The local file or folder ``ref`` names, directly or through the ``$HELPERS_LOCAL_MODELS`` mirror."""
    path = Path(ref).expanduser()
    if path.exists():
        return path
    hub_id = current_hub_id(ref.strip())
    mirror = os.environ.get(LOCAL_MODELS_ENV)
    if mirror and looks_like_hub_id(hub_id) and (Path(mirror) / hub_id.split("/")[-1]).exists():
        return Path(mirror) / hub_id.split("/")[-1]
    return None


# Weight formats in order of preference; a repo often carries the same weights in several.
_WEIGHT_FORMATS = (("*.safetensors",), ("*.bin",), ("*.pth",))
_OTHER_WEIGHTS = ["*.safetensors", "*.bin", "*.pth", "*.pt", "*.h5", "*.msgpack", "*.ckpt", "*.onnx", "*.gguf"]


def redundant_weights(files: list[str]) -> list[str]:
    """Patterns of files not to download: every weight copy but the preferred format's.

    Llama-2/3 repos carry the same weights as safetensors, as ``.bin`` shards and (Llama-3) as
    Meta's ``original/consolidated.00.pth``; downloading them all would double or triple the
    download and the disk a free Colab runtime has. Safetensors win, then ``.bin``, then ``.pth``; the
    index of a skipped copy (``pytorch_model.bin.index.json``) is skipped with it.
    """
    top = [f for f in files if "/" not in f]
    for fmt in _WEIGHT_FORMATS:
        if any(fnmatch.fnmatch(f, pat) for f in top for pat in fmt):
            others = [p for p in _OTHER_WEIGHTS if p not in fmt]
            return others + [f"{p}.index.json" for p in others] + ["original/*"]
    return []


def verify_published(entry: ModelEntry, folder: Path) -> int:
    """Check the files of ``folder`` that ``entry`` publishes a SHA256 for; returns how many were checked.

    A file that does not match is removed (from the hub cache, blob included) so that the next run downloads
    it afresh. ``HELPERS_VERIFY_SHA256=0`` skips the check.

    Raises:
        UserError: a file's digest differs from the published one.
    """
    if not entry.sha256 or os.environ.get(VERIFY_ENV) == "0":
        return 0
    checked = 0
    for name, want in sorted(entry.sha256.items()):
        path = folder / name
        if not path.is_file():
            continue
        real = path.resolve()
        stat = real.stat()
        key = (str(real), stat.st_size, stat.st_mtime_ns)
        if key not in _VERIFIED:
            got = sha256_file(real)
            if got != want:
                _remove_cached(path)
                raise UserError(f"{entry.hub_id}: {name} has SHA256 {got} but its published SHA256 is {want}: the "
                                "download is damaged or not the published release; the bad copy was removed, run again "
                                f"to download it afresh ({VERIFY_ENV}=0 skips this check)")
            _VERIFIED.add(key)
        checked += 1
    return checked


_VERIFIED: set[tuple[str, int, int]] = set()  # files already found to match, by (real path, size, mtime)


def fetch_file(repo_id: str, filename: str, *, what: str = "model") -> Path:
    """Download one file of a hub repo into the hub cache (resumable; nothing else of the repo); returns its path.

    Raises:
        UserError: offline, unreachable, gated or missing (one line, as :func:`resolve_model`).
    """
    from huggingface_hub import hf_hub_download

    hub_id = current_hub_id(repo_id)
    _require_online(hub_id, what)
    with _quiet_retries(), _hub_errors(hub_id, what):
        return Path(hf_hub_download(hub_id, filename, token=get_secret("HF_TOKEN"), endpoint=hub_endpoint(),
                                    cache_dir=hub_cache_dir()))


def forget_file(path: str | Path) -> None:
    """Delete a downloaded file from the hub cache (the snapshot link and its blob) to give its disk back.

    Only files inside :func:`hub_cache_dir` are touched: a user's own folder is never deleted from.
    """
    path = Path(path)
    cache = hub_cache_dir().resolve()
    if cache not in path.absolute().parents and cache not in path.resolve().parents:
        raise ValueError(f"{path} is not in the hub cache {cache}; refusing to delete it")
    _remove_cached(path)


def download_small_files(repo_id: str, *, what: str = "model") -> Path:
    """Download every file of a hub repo but its weights (configs, index, tokenizer); returns the snapshot folder."""
    from huggingface_hub import snapshot_download

    hub_id = current_hub_id(repo_id)
    _require_online(hub_id, what)
    with _quiet_retries(), _hub_errors(hub_id, what):
        return Path(snapshot_download(hub_id, ignore_patterns=[*_OTHER_WEIGHTS, "original/*"],
                                      token=get_secret("HF_TOKEN"), endpoint=hub_endpoint(), cache_dir=hub_cache_dir()))


def safetensors_headers(repo_id: str, *, what: str = "model") -> dict[str, dict[str, tuple[str, tuple[int, ...], int]]]:
    """``{shard: {tensor: (dtype, shape, data start)}}`` of a hub repo's safetensors shards, read with HTTP range
    requests (a few hundred kB), before any shard is downloaded."""
    from huggingface_hub import HfApi

    hub_id = current_hub_id(repo_id)
    _require_online(hub_id, what)
    with _quiet_retries(), _hub_errors(hub_id, what):
        meta = HfApi(endpoint=hub_endpoint()).get_safetensors_metadata(hub_id, token=get_secret("HF_TOKEN"))
    return {shard: {name: (t.dtype, tuple(t.shape), int(t.data_offsets[0])) for name, t in info.tensors.items()}
            for shard, info in meta.files_metadata.items()}


def safetensors_file_header(repo_id: str, filename: str, *, what: str = "model") -> dict[str, tuple[int, ...]]:
    """``{tensor: shape}`` of one safetensors file of a hub repo, read with an HTTP range request (its header
    only)."""
    from huggingface_hub import HfApi

    hub_id = current_hub_id(repo_id)
    _require_online(hub_id, what)
    with _quiet_retries(), _hub_errors(hub_id, what):
        meta = HfApi(endpoint=hub_endpoint()).parse_safetensors_file_metadata(hub_id, filename,
                                                                             token=get_secret("HF_TOKEN"))
    return {name: tuple(t.shape) for name, t in meta.tensors.items()}


def _remove_cached(path: Path) -> None:
    """Delete a downloaded file: the hub cache's snapshot link and the blob it points to, or a plain file."""
    target = path.resolve()
    path.unlink(missing_ok=True)
    if target != path:
        target.unlink(missing_ok=True)


def _require_online(hub_id: str, what: str) -> None:
    """Refuse in offline mode, and fail at once (not after a minute of retries) when the hub's name does not
    resolve."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"{what} {hub_id!r} is not available offline: download it first or set {LOCAL_MODELS_ENV}")
    _check_reachable(hub_id)


class _hub_errors:
    """Turn the hub's errors (gated, missing, unreachable) into one-line :class:`UserError`\\ s."""

    def __init__(self, repo_id: str, what: str) -> None:
        self.repo_id, self.what = repo_id, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            return False
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

        where = hub_endpoint() or "huggingface.co"
        if isinstance(exc, GatedRepoError):
            raise UserError(
                f"{self.repo_id} is gated: accept its licence on the hub, then add your token as the HF_TOKEN "
                "secret (Colab: the key icon) or environment variable") from None
        if isinstance(exc, RepositoryNotFoundError):
            raise UserError(f"{self.what} {self.repo_id!r} does not exist on {where} (or needs a token); "
                            "check the name") from None
        if _NO_CONNECTION & {c.__name__ for c in type(exc).__mro__}:
            raise hub_unreachable(self.repo_id, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
                                  ) from None
        if isinstance(exc, HfHubHTTPError) or type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore",
                                                                                      "requests"):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"could not download {self.repo_id} from {where}: {first} (check the network, or "
                            "HF_ENDPOINT if you use a mirror)") from None
        return False


def _download(repo_id: str, *, allow_patterns: list[str] | None, what: str) -> Path:
    from huggingface_hub import HfApi, snapshot_download

    _check_reachable(repo_id)
    token = get_secret("HF_TOKEN")
    endpoint = hub_endpoint()
    with _quiet_retries(), _hub_errors(repo_id, what):
        ignore = None if allow_patterns else redundant_weights(
            HfApi(endpoint=endpoint).list_repo_files(repo_id, token=token))
        folder = Path(snapshot_download(repo_id, allow_patterns=allow_patterns, ignore_patterns=ignore, token=token,
                                        endpoint=endpoint))
    entry = find(repo_id)
    if entry is not None and entry.hub_id.lower() == repo_id.lower():
        verify_published(entry, folder)
    return folder


@contextlib.contextmanager
def _quiet_retries() -> Iterator[None]:
    """Silence huggingface_hub's "Retrying in 8s" lines; an unreachable hub is reported once, with the fixes."""
    import logging

    retries = logging.getLogger("huggingface_hub.utils._http")
    level = retries.level
    retries.setLevel(logging.ERROR)
    try:
        yield
    finally:
        retries.setLevel(level)


_NO_CONNECTION = {"ConnectError", "ConnectTimeout", "ConnectionError", "TimeoutException", "LocalEntryNotFoundError"}


def hub_unreachable(repo_id: str, why: str) -> UserError:
    """The error for a hub that cannot be reached: what failed and the three ways out."""
    where = hub_endpoint() or "the Hugging Face hub"
    return UserError(f"cannot reach {where} to download {repo_id} ({why}); check the network, or set HF_ENDPOINT "
                     "to a (working) mirror, or give a local folder instead of the hub id")


def _check_reachable(repo_id: str) -> None:
    """Fail at once when the hub's host name does not resolve (no DNS), instead of after a minute of retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(hub_endpoint() or constants.ENDPOINT)
    try:
        socket.getaddrinfo(url.hostname or "", url.port or 443)
    except (socket.gaierror, UnicodeError) as exc:
        raise hub_unreachable(repo_id, f"{url.hostname}: {exc.strerror or exc}") from None


def fetch_dataset_file(repo_id: str, filename: str, *, revision: str | None = None, what: str = "data set") -> Path:
    """Download one file of a hub *data set* repo into the hub cache (resumable, through ``HF_ENDPOINT``) and check
    it against the digest the hub lists for it: the LFS SHA256 of a large file, the git blob id of a small one.

    A file that does not match is removed from the cache (the next call downloads it afresh).

    Raises:
        UserError: offline, unreachable, missing, or a download that does not match the hub's digest.
    """
    import hashlib

    from huggingface_hub import HfApi, hf_hub_download

    _require_online(repo_id, what)
    token = get_secret("HF_TOKEN")
    with _quiet_retries(), _hub_errors(repo_id, what):
        infos = HfApi(endpoint=hub_endpoint()).get_paths_info(repo_id, [filename], repo_type="dataset",
                                                               revision=revision, token=token)
        if not infos:
            raise UserError(f"{what} {repo_id} has no file {filename} on {hub_endpoint() or 'huggingface.co'}")
        path = Path(hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision, token=token,
                                    endpoint=hub_endpoint(), cache_dir=hub_cache_dir()))
    info = infos[0]
    lfs = getattr(info, "lfs", None)
    if lfs is not None:
        want, got = str(lfs.sha256), sha256_file(path)
    else:  # git's blob id: sha1 of "blob <size>\0" + the bytes
        data = path.read_bytes()
        want, got = str(info.blob_id), hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    if got != want:
        _remove_cached(path)
        raise UserError(f"{repo_id}: the download of {filename} does not match the hub's digest ({got} instead of "
                        f"{want}): it is damaged or the mirror altered it; it was removed, run again")
    return path
