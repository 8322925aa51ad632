"""The environment variables that steer huggingface_hub, and the one-line errors that name them.

A user's shell or notebook often sets ``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` (a mirror), ``HF_HOME`` or ``HF_TOKEN``
and forgets it. When one of them is why a download fails, the error says which variable, its value, and the one
change that fixes it, instead of a network error: :func:`offline_error`, :func:`unreachable_error`,
:func:`cache_not_writable`, :func:`token_rejected`. :mod:`helpers.hub` raises them; nothing here talks to the hub.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from ..env import get_secret
from ..util import UserError

# huggingface_hub's offline switches in the order it reads them (the first one set decides), and its true values
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}
CACHE_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME")  # the first one set chooses the hub cache
LOCAL_MODELS_ENV = "HELPERS_LOCAL_MODELS"
DEMO_DIR_ENV = "HELPERS_DEMO_DIR"
TOKENS_PAGE = "https://huggingface.co/settings/tokens"


def offline_setting() -> str | None:
    """``NAME=value`` of the variable that puts huggingface_hub in offline mode now, read as huggingface_hub
    reads it (``HF_HUB_OFFLINE``, else ``TRANSFORMERS_OFFLINE``; ``1``/``on``/``yes``/``true``), else ``None``."""
    for name in OFFLINE_VARS:
        value = os.environ.get(name)
        if value:
            return f"{name}={value}" if value.upper() in _TRUE else None
    return None


def offline_error(target: str, setting: str | None) -> UserError:
    """The error for a download refused in offline mode. ``setting`` is :func:`offline_setting`; ``None`` means
    huggingface_hub was imported in offline mode and the variable was changed since (it reads it once)."""
    if setting is None:
        return UserError(f"cannot download {target}: huggingface_hub was imported in offline mode (it reads "
                         "HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE once); restart the runtime (Colab: Runtime > Restart "
                         "session) or the process with them unset, or give a local folder")
    return UserError(f"{setting} is set: unset it to download {target}, or give a local folder (or set "
                     f"{LOCAL_MODELS_ENV} to a folder of downloaded models)")


def unreachable_error(repo_id: str, why: str, *, endpoint: str | None, action: str = "download") -> UserError:
    """The error for a hub that does not answer: what failed and the ways out. When ``HF_ENDPOINT`` chose the host
    (``endpoint``), it names the variable and how to go back to huggingface.co."""
    if endpoint:
        return UserError(f"cannot reach HF_ENDPOINT={endpoint} to {action} {repo_id} ({why}): HF_ENDPOINT is set; "
                         "unset it to use huggingface.co (`unset HF_ENDPOINT`), or set it to a mirror that answers, "
                         "or give a local folder instead of the hub id")
    return UserError(f"cannot reach the Hugging Face hub to {action} {repo_id} ({why}); check the network, or set "
                     "HF_ENDPOINT to a (working) mirror, or give a local folder instead of the hub id")


def token_origin() -> str | None:
    """Where the token sent to the hub comes from, in words (the Colab secret, ``HF_TOKEN``, the token saved by
    ``hf auth login``), or ``None`` when none is sent."""
    env = os.environ.get("HF_TOKEN")
    secret = get_secret("HF_TOKEN")
    if secret and secret != env:
        return "the HF_TOKEN secret"
    if env:
        return "HF_TOKEN"
    from huggingface_hub import get_token

    return "the token saved by `hf auth login`" if get_token() else None


def token_rejected(exc: BaseException, *, where: str, origin: str | None = None) -> UserError | None:
    """The error for a 401 answer from ``where`` to a request that carried a token (wrong, expired or revoked),
    naming where the token came from (``origin``, default :func:`token_origin`); ``None`` for any other error (a
    missing or gated repo included)."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if not isinstance(exc, HfHubHTTPError) or isinstance(exc, (GatedRepoError, RepositoryNotFoundError)):
        return None
    response = exc.response
    if getattr(response, "status_code", None) != 401:
        return None
    sent = getattr(getattr(response, "request", None), "headers", {}).get("authorization")
    origin = origin or token_origin()
    if not sent or origin is None:
        return None
    fix = {"HF_TOKEN": "unset HF_TOKEN (public models need none)",
           "the HF_TOKEN secret": "replace or delete the secret (Colab: the key icon)",
           "the token saved by `hf auth login`": "remove it (`hf auth logout`)"}.get(origin, "give another")
    return UserError(f"{where} rejected {origin} (401: the token is wrong, expired or revoked): {fix}, or set a "
                     f"valid token from {TOKENS_PAGE}")


def cache_not_writable(exc: BaseException, *, roots: Iterable[str | Path]) -> UserError | None:
    """The error for a download that cannot write the hub cache (a read-only or someone else's ``HF_HOME``), naming
    the variable that chose the folder; ``None`` for any other error. ``roots`` are the cache folders in use."""
    if not isinstance(exc, OSError) or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not exc.filename:
        return None
    target = Path(os.fsdecode(exc.filename)).absolute()
    folders = {Path(r).expanduser().absolute() for r in roots}
    if not any(target == r or r in target.parents for r in folders):
        return None
    why = f"{target} is {'on a read-only disk' if exc.errno == errno.EROFS else 'not writable'}"
    setting = next((f"{n}={os.environ[n]}" for n in CACHE_VARS if os.environ.get(n)), None)
    if setting is None:
        return UserError(f"cannot write the Hugging Face cache ({why}): set HF_HOME to a writable folder, e.g. "
                         "`export HF_HOME=/tmp/hf-home`")
    name = setting.partition("=")[0]
    return UserError(f"cannot write the Hugging Face cache that {setting} chooses ({why}): set {name} to a writable "
                     f"folder (e.g. `export {name}=/tmp/hf-home`) or unset it")


def demo_dir() -> Path:
    """Where this machine builds the demo stand-ins (``$HELPERS_DEMO_DIR`` or a user cache folder), which smoke mode
    and the hub twin serve."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cllama" / "demo-assets"
    return Path(os.environ.get(DEMO_DIR_ENV, default))


def loopback_endpoint(endpoint: str | None) -> bool:
    """True when ``endpoint`` (``HF_ENDPOINT``) is a server on this machine (127.0.0.0/8, ::1, localhost), as the
    project's hub twin is; never for huggingface.co (``None``) or any other host."""
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(endpoint or "").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
