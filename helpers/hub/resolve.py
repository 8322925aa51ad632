"""Model references: a local folder, an offline mirror folder, or a Hugging Face Hub download.

:func:`resolve_model` looks, in order, at:

1. an existing local path;
2. ``$HELPERS_LOCAL_MODELS/<repo name>`` (an offline mirror: the demo assets, or a Drive folder of
   downloaded models; offline smoke mode points it at the demo assets);
3. the Hugging Face Hub (resumable download with ``huggingface_hub``; the token comes from Colab
   secrets or ``HF_TOKEN`` and is never printed). ``HF_ENDPOINT`` points it at a mirror such as
   ``https://hf-mirror.com`` (read at each call, so setting it in a notebook cell takes effect at once).

Repos that moved on the hub (the v1 LoRAs went from ``ziqingyang/`` to ``hfl/``) are downloaded from
their current id whichever id is given. Downloads go through :mod:`helpers.hub.fetch` (several files at once,
bounded retries of an overloaded mirror) and every downloaded file is checked against the hub's own digest
(:mod:`helpers.hub.integrity`) while the next ones download; so are the files whose SHA256 the release's authors
published (catalog ``sha256``). A mismatch is one :class:`~helpers.util.UserError` and the bad copy is removed
from the cache. ``HELPERS_VERIFY_SHA256=0`` skips both checks. A published sum is the real release's: the one
exception is a download from the project's hub twin on this machine that is byte for byte a demo stand-in built
here (:func:`twin_standin`), so a by-hand run through the twin keeps every check on.
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import sys
from pathlib import Path

from ..catalog import ModelEntry, find
from ..env import get_secret
from .environment import (cache_not_writable, demo_dir, loopback_endpoint, offline_error, offline_setting,
                          token_rejected, unreachable_error)
from .fetch import Remote, RemoteFile, fetch_all, fetch_verified, quiet_hub_logs, retrying
from .arriving import Arriving
from .meter import Meter
from .integrity import VERIFY_ENV, Digest, cached_blob, is_verified, remove_cached, verification_enabled
from ..util import UserError, sha256_file
from .ref import ModelRef, current_hub_id
from ..util.timings import phase


def hub_endpoint() -> str | None:
    """The hub (or mirror) downloads go to: ``$HF_ENDPOINT``, or ``None`` for huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def resolve_model(ref: str | Path | ModelRef, *, allow_patterns: list[str] | None = None, what: str = "model") -> Path:
    """Return a local directory (or file) for ``ref``: a path, a mirrored repo or a hub download.

    Args:
        ref: a local path, a hub id such as ``hfl/chinese-alpaca-2-lora-7b``, or a catalog name.
        allow_patterns: file patterns to download from the hub (default: everything but duplicate weights).
        what: how to name the reference in error messages (``base model``, ``LoRA``).

    Raises:
        UserError: not found, offline, gated, or a download that does not match its published SHA256.
    """
    model = ModelRef.of(ref)
    if model.kind == "local":
        return model.path
    hub_id = model.require_hub_id(what)
    if model.moved:
        print(f"note: {model} moved to {hub_id} on the hub; using {hub_id}", file=sys.stderr)
    if model.path is not None:  # the offline mirror's copy
        return model.path
    require_online(hub_id, what)
    return _download(hub_id, allow_patterns=allow_patterns, what=what)


def list_files(ref: str | Path | ModelRef, *, what: str = "model") -> list[str]:
    """Names (relative, ``/``-separated) of the files in ``ref``: a local folder, a mirrored repo or a hub repo.

    Lists without downloading, so a caller can choose one file of a repo that holds several (GGUF quants).
    """
    model = ModelRef.of(ref)
    path = model.path
    if path is not None and path.is_dir():
        return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    if path is not None:
        return [path.name]
    hub_id = model.require_hub_id(what)
    require_online(hub_id, what)
    from huggingface_hub import HfApi

    remote = _remote()
    with quiet_hub_logs(), _hub_errors(hub_id, what):
        return sorted(retrying(lambda: HfApi(endpoint=remote.endpoint).list_repo_files(hub_id, token=remote.token),
                               remote=remote, what=f"the file list of {hub_id}", retries=0))  # paged: retried inside


def file_sizes(ref: str | Path | ModelRef, *, what: str = "model") -> dict[str, int]:
    """``{file name: bytes}`` of the files a :func:`resolve_model` of ``ref`` would fetch or read (duplicate
    weight copies left out), from the local folder or the hub's listing; nothing is downloaded.

    Raises:
        UserError: not found, offline with no local copy, or the hub cannot be reached.
    """
    return {n: size for n, (size, _sha) in file_listing(ref, what=what).items()}


def file_listing(ref: str | Path | ModelRef, *, what: str = "model") -> dict[str, tuple[int, str]]:
    """``{file name: (bytes, sha256)}`` as :func:`file_sizes`; the sha256 is the hub's LFS digest (``""`` for
    small files and local folders)."""
    model = ModelRef.of(ref)
    path = model.path
    if path is not None and path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        listing = {n: ((path / n).stat().st_size, "") for n in names}
    elif path is not None:
        return {path.name: (path.stat().st_size, "")}
    else:
        hub_id = model.require_hub_id(what)
        require_online(hub_id, what)
        with quiet_hub_logs(), _hub_errors(hub_id, what):
            tree = _tree(hub_id, _remote())
        listing = {f.name: (f.size, f.digest if len(f.digest) == 64 else "") for f in tree.values()}
    skip = redundant_weights(list(listing))
    return {n: v for n, v in sorted(listing.items()) if not any(fnmatch.fnmatch(n, p) for p in skip)}


def hub_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``
    (read now, so a notebook that sets ``HF_HOME`` is followed)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def cached_files(repo_id: str | ModelRef, names: list[str]) -> set[str]:
    """Which of ``names`` of hub repo ``repo_id`` are already complete in the hub cache (nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    found = set()
    for name in names:
        path = try_to_load_from_cache(current_hub_id(repo_id), name, cache_dir=hub_cache_dir())
        if isinstance(path, str) and Path(path).is_file():
            found.add(name)
    return found


def is_local(ref: str | Path | ModelRef) -> bool:
    """True when ``ref`` is a file or folder on this machine (directly or through ``$HELPERS_LOCAL_MODELS``)."""
    return ModelRef.of(ref).is_local


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
    if not entry.sha256 or not verification_enabled():
        return 0
    checked = 0
    for name, want in sorted(entry.sha256.items()):
        path = folder / name
        if not path.is_file():
            continue
        blob = cached_blob(path)
        known = Digest.named(blob.name) if blob is not None and is_verified(path) else None
        got = known.hex if known is not None and known.algo == "sha256" else sha256_file(path)  # verified: its name
        if got != want and twin_standin(path, got):
            print(f"{entry.hub_id}: {name} is the hub twin's stand-in built on this machine ({standin_note()}), "
                  "not the published release: accepted", file=sys.stderr)
        elif got != want:
            fix = "check the file" if blob is None else "the bad copy was removed, run again to download it afresh"
            if blob is not None:  # only a hub-cache copy is deleted, never a user's own file
                remove_cached(path)
            raise UserError(f"{entry.hub_id}: {name} has SHA256 {got} but its published SHA256 is {want}: the "
                            f"download is damaged or not the published release; {fix} ({VERIFY_ENV}=0 skips this "
                            "check)")
        checked += 1
    return checked


def twin_standin(path: Path, sha256: str) -> bool:
    """True when ``path``, downloaded from ``HF_ENDPOINT``, is byte for byte a demo stand-in this machine built: the
    endpoint is on this machine (the project's hub twin, :func:`~helpers.hub.environment.loopback_endpoint`) and the demo
    folder here (:func:`~helpers.hub.environment.demo_dir`, built by :func:`helpers.demo.build_demo`) holds a file of the same
    name and size whose SHA256 is ``sha256``.

    This is how a by-hand run through the twin merges the v1 releases, whose stand-ins cannot match the authors'
    published sums, with the check on. Nothing received is trusted for it: the reference is a file built on this
    machine, never bytes from the network; the real hub (not on this machine) never qualifies, nor does a file
    that is not exactly a local stand-in, whatever server sends it."""
    if not loopback_endpoint(hub_endpoint()):
        return False
    root = demo_dir()
    if not (root / "manifest.json").is_file():
        return False
    size = path.stat().st_size
    return any(c.is_file() and c.stat().st_size == size and sha256_file(c) == sha256
               for c in root.glob(f"*/{path.name}"))


def standin_note() -> str:
    """Where the stand-ins a twin download was matched with live."""
    return f"HF_ENDPOINT={hub_endpoint()}, stand-ins in {demo_dir()}"


def fetch_file(repo_id: str, filename: str, *, what: str = "model", sha256: str = "", meter: Meter | None = None,
               arriving: Arriving | None = None) -> Path:
    """Download one file of a hub repo into the hub cache (resumable; nothing else of the repo), check it against the
    hub's digest (and ``sha256``, the listing's, when given) and return its path; ``meter`` counts the bytes received
    (and can stop the download: :class:`~helpers.hub.meter.DownloadCancelled`); ``arriving`` follows the download
    for a reader of its first bytes (:class:`~helpers.hub.arriving.Arriving`).

    Raises:
        UserError: offline, unreachable, gated, missing or damaged (one line, as :func:`resolve_model`).
    """
    hub_id = current_hub_id(repo_id)
    require_online(hub_id, what)
    with quiet_hub_logs(), _hub_errors(hub_id, what):
        return fetch_verified(hub_id, filename, remote=_remote(), digest=sha256, meter=meter, arriving=arriving)


def forget_file(path: str | Path) -> None:
    """Delete a downloaded file from the hub cache (the snapshot link and its blob) to give its disk back.

    Only files inside :func:`hub_cache_dir` are touched: a user's own folder is never deleted from.
    """
    path = Path(path)
    cache = hub_cache_dir().resolve()
    if cache not in path.absolute().parents and cache not in path.resolve().parents:
        raise ValueError(f"{path} is not in the hub cache {cache}; refusing to delete it")
    remove_cached(path)


def download_small_files(repo_id: str, *, what: str = "model") -> Path:
    """Download every file of a hub repo but its weights (configs, index, tokenizer), verified; returns the snapshot
    folder."""
    hub_id = current_hub_id(repo_id)
    require_online(hub_id, what)
    return _download(hub_id, allow_patterns=None, ignore_patterns=[*_OTHER_WEIGHTS, "original/*"], what=what)


def require_online(hub_id: str, what: str) -> None:
    """Refuse in offline mode, naming the variable that set it, and fail at once (not after a minute of retries)
    when the hub's name does not resolve."""
    from huggingface_hub import constants

    setting = offline_setting()
    if setting is not None or constants.HF_HUB_OFFLINE:  # what huggingface_hub read when it was imported
        raise offline_error(f"{what} {hub_id!r}", setting)
    check_reachable(hub_id)


def hub_errors(repo_id: str, what: str, *, action: str = "download") -> contextlib.AbstractContextManager[None]:
    """A context that turns the hub's errors into one-line :class:`UserError`\\ s naming the cause (offline mode,
    an ``HF_ENDPOINT`` that does not answer, a read-only ``HF_HOME``, a rejected token, a gated or missing repo);
    ``action`` (``download``, ``upload``) words them."""
    return _hub_errors(repo_id, what, action=action)


class _hub_errors:
    """Turn the hub's errors (gated, missing, unreachable, offline, token, cache) into one-line
    :class:`UserError`\\ s."""

    def __init__(self, repo_id: str, what: str, *, action: str = "download") -> None:
        self.repo_id, self.what, self.action = repo_id, what, action

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            return False
        from huggingface_hub import constants
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

        where = hub_endpoint() or "huggingface.co"
        if isinstance(exc, OfflineModeIsEnabled):
            raise offline_error(f"{self.what} {self.repo_id!r}", offline_setting()) from None
        if isinstance(exc, GatedRepoError):
            raise UserError(
                f"{self.repo_id} is gated: accept its licence on the hub, then add your token as the HF_TOKEN "
                "secret (Colab: the key icon) or environment variable") from None
        if isinstance(exc, RepositoryNotFoundError):
            raise UserError(f"{self.what} {self.repo_id!r} does not exist on {where} (or needs a token); "
                            "check the name") from None
        named = token_rejected(exc, where=where) or cache_not_writable(
            exc, roots=(hub_cache_dir(), constants.HF_HUB_CACHE, constants.HF_HOME))
        if named is not None:
            raise named from None
        if _NO_CONNECTION & {c.__name__ for c in type(exc).__mro__}:
            raise hub_unreachable(self.repo_id, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__,
                                  action=self.action) from None
        if isinstance(exc, HfHubHTTPError) or type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore",
                                                                                      "requests"):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"could not {self.action} {self.repo_id} from {where}: {first} (check the network, or "
                            "HF_ENDPOINT if you use a mirror)") from None
        return False


def _remote() -> Remote:
    """Where downloads come from and go, read now: ``HF_ENDPOINT``, the ``HF_TOKEN`` secret, the hub cache."""
    return Remote(hub_endpoint(), get_secret("HF_TOKEN"), hub_cache_dir())


def _tree(repo_id: str, remote: Remote) -> dict[str, RemoteFile]:
    """Every file of a hub repo with its size and the hub's digest (LFS SHA256, else git blob id)."""
    from huggingface_hub import HfApi

    def listing() -> dict[str, RemoteFile]:
        entries = HfApi(endpoint=remote.endpoint).list_repo_tree(repo_id, recursive=True, token=remote.token)
        return {e.path: RemoteFile(e.path, int(e.size), str(getattr(getattr(e, "lfs", None), "sha256", "") or
                                                             getattr(e, "blob_id", "") or ""))
                for e in entries if getattr(e, "size", None) is not None}

    with phase("listing", repo_id):
        return retrying(listing, remote=remote, what=f"the file list of {repo_id}", retries=0)  # paged: retried inside


def _download(repo_id: str, *, allow_patterns: list[str] | None, what: str,
              ignore_patterns: list[str] | None = None) -> Path:
    """Download (verified) the files of a hub repo that the patterns select (``allow_patterns``), else every file
    but duplicate weight copies (:func:`redundant_weights`) and ``ignore_patterns``. Returns the snapshot folder."""
    from huggingface_hub.utils import filter_repo_objects

    check_reachable(repo_id)
    remote = _remote()
    with quiet_hub_logs(), _hub_errors(repo_id, what):
        tree = _tree(repo_id, remote)
        redundant = redundant_weights(list(tree))  # other formats' copies of the weights, and their indexes
        ignore = None if allow_patterns else [*(ignore_patterns or []), *redundant]
        names = filter_repo_objects(list(tree), allow_patterns=allow_patterns, ignore_patterns=ignore)
        folder = fetch_all(repo_id, [tree[n] for n in names], remote=remote)
    entry = find(repo_id)
    if entry is not None and entry.hub_id.lower() == repo_id.lower():
        verify_published(entry, folder)
    return folder


_NO_CONNECTION = {"ConnectError", "ConnectTimeout", "ConnectionError", "TimeoutException", "LocalEntryNotFoundError"}


def hub_unreachable(repo_id: str, why: str, *, action: str = "download") -> UserError:
    """The error for a hub that cannot be reached: what failed and the ways out (naming ``HF_ENDPOINT`` when it
    chose the host)."""
    return unreachable_error(repo_id, why, endpoint=hub_endpoint(), action=action)


def check_reachable(repo_id: str) -> None:
    """Fail at once when the hub's host name does not resolve (no DNS), instead of after a minute of retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(hub_endpoint() or constants.ENDPOINT)
    try:
        socket.getaddrinfo(url.hostname or "", url.port or 443)
    except (socket.gaierror, UnicodeError) as exc:
        raise hub_unreachable(repo_id, f"{url.hostname}: {exc.strerror or exc}") from None
