"""Model references: a local folder, an offline mirror folder, or a Hugging Face Hub download.

:func:`resolve_model` looks, in order, at:

1. an existing local path;
2. ``$HELPERS_LOCAL_MODELS/<repo name>`` (an offline mirror: the demo assets, or a Drive folder of
   downloaded models; smoke mode points it at the demo assets);
3. the Hugging Face Hub (resumable download with ``huggingface_hub``; the token comes from Colab
   secrets or ``HF_TOKEN`` and is never printed). ``HF_ENDPOINT`` points it at a mirror.
"""
from __future__ import annotations

import os
from pathlib import Path

from .catalog import find
from .env import get_secret
from .util import UserError

LOCAL_MODELS_ENV = "HELPERS_LOCAL_MODELS"


def looks_like_hub_id(ref: str) -> bool:
    """True for ``owner/name`` references (not a path such as ``./x/y`` or ``/x``)."""
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))


def resolve_model(ref: str | Path, *, allow_patterns: list[str] | None = None, what: str = "model") -> Path:
    """Return a local directory (or file) for ``ref``: a path, a mirrored repo or a hub download.

    Args:
        ref: a local path, a hub id such as ``hfl/chinese-alpaca-2-lora-7b``, or a catalog name.
        allow_patterns: file patterns to download from the hub (default: everything).
        what: how to name the reference in error messages (``base model``, ``LoRA``).
    """
    ref_s = str(ref)
    path = Path(ref_s).expanduser()
    if path.exists():
        return path
    if not looks_like_hub_id(ref_s):  # a catalog name such as "chinese-alpaca-2-7b"
        entry = find(ref_s)
        if entry is not None:
            ref_s = entry.hub_id
    mirror = os.environ.get(LOCAL_MODELS_ENV)
    if mirror and looks_like_hub_id(ref_s):
        candidate = Path(mirror) / ref_s.split("/")[-1]
        if candidate.exists():
            return candidate
    if not looks_like_hub_id(ref_s):
        raise UserError(f"{what} {ref_s!r} not found: give an existing folder or a hub id like 'hfl/chinese-alpaca-2-lora-7b'")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"{what} {ref_s!r} is not available offline: download it first or set {LOCAL_MODELS_ENV}")
    return _download(ref_s, allow_patterns=allow_patterns, what=what)


# Weight formats in order of preference; a repo often carries the same weights in several.
_WEIGHT_FORMATS = (("*.safetensors",), ("*.bin",), ("*.pth",))
_OTHER_WEIGHTS = ["*.safetensors", "*.bin", "*.pth", "*.pt", "*.h5", "*.msgpack", "*.ckpt", "*.onnx", "*.gguf"]


def redundant_weights(files: list[str]) -> list[str]:
    """Patterns of files not to download: every weight copy but the preferred format's.

    Llama-2/3 repos carry the same weights as safetensors, as ``.bin`` shards and (Llama-3) as
    Meta's ``original/consolidated.00.pth``; downloading them all would double or triple the
    download and the disk a free Colab runtime has. Safetensors win, then ``.bin``, then ``.pth``.
    """
    import fnmatch

    top = [f for f in files if "/" not in f]
    for fmt in _WEIGHT_FORMATS:
        if any(fnmatch.fnmatch(f, pat) for f in top for pat in fmt):
            return [p for p in _OTHER_WEIGHTS if p not in fmt] + ["original/*"]
    return []


def _download(repo_id: str, *, allow_patterns: list[str] | None, what: str) -> Path:
    import logging

    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    _check_reachable(repo_id)
    token = get_secret("HF_TOKEN")
    retries = logging.getLogger("huggingface_hub.utils._http")  # its "Retrying in 8s" lines
    level = retries.level
    retries.setLevel(logging.ERROR)
    try:
        ignore = None if allow_patterns else redundant_weights(HfApi().list_repo_files(repo_id, token=token))
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns, ignore_patterns=ignore, token=token))
    except GatedRepoError:
        raise UserError(
            f"{repo_id} is gated: accept its licence on the hub, then add your token as the HF_TOKEN "
            "secret (Colab: the key icon) or environment variable"
        ) from None
    except RepositoryNotFoundError:
        raise UserError(f"{what} {repo_id!r} does not exist on the hub (or needs a token); check the name") from None
    except Exception as exc:
        if _NO_CONNECTION & {c.__name__ for c in type(exc).__mro__}:
            raise hub_unreachable(repo_id, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__) from None
        raise
    finally:
        retries.setLevel(level)


_NO_CONNECTION = {"ConnectError", "ConnectTimeout", "ConnectionError", "TimeoutException", "LocalEntryNotFoundError"}


def hub_unreachable(repo_id: str, why: str) -> UserError:
    """The error for a hub that cannot be reached: what failed and the three ways out."""
    return UserError(f"cannot reach the Hugging Face hub to download {repo_id} ({why}); check the network, or set "
                     "HF_ENDPOINT to a mirror, or give a local folder instead of the hub id")


def _check_reachable(repo_id: str) -> None:
    """Fail at once when the hub's host name does not resolve (no DNS), instead of after a minute of retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    try:
        socket.getaddrinfo(url.hostname or "", url.port or 443)
    except (socket.gaierror, UnicodeError) as exc:
        raise hub_unreachable(repo_id, f"{url.hostname}: {exc.strerror or exc}") from None
