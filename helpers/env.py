"""Where the notebooks run: Colab detection, secrets, model resolution (local dir or hub id), RAM.

Model references are resolved in this order:

1. an existing local path;
2. ``$HELPERS_LOCAL_MODELS/<repo name>`` (an offline mirror: the demo assets, or a Drive folder of
   downloaded models; smoke mode points it at the demo assets);
3. the Hugging Face Hub (resumable download with ``huggingface_hub``; the token comes from Colab
   secrets or ``HF_TOKEN`` and is never printed).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .util import UserError

LOCAL_MODELS_ENV = "HELPERS_LOCAL_MODELS"


def in_colab() -> bool:
    """True when running inside Google Colab."""
    return "google.colab" in sys.modules or any(k.startswith("COLAB_") for k in os.environ)


def get_secret(name: str) -> str | None:
    """Return a secret from Colab's secrets panel, else from the environment, else None."""
    if in_colab():
        try:
            from google.colab import userdata  # type: ignore[import-not-found]

            value = userdata.get(name)
            if value:
                return value
        except Exception:  # noqa: BLE001 - secret missing or access not granted
            pass
    return os.environ.get(name) or None


def _looks_like_hub_id(ref: str) -> bool:
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
    if not _looks_like_hub_id(ref_s):  # a catalog name such as "chinese-alpaca-2-7b"
        from .catalog import find

        entry = find(ref_s)
        if entry is not None:
            ref_s = entry.hub_id
    mirror = os.environ.get(LOCAL_MODELS_ENV)
    if mirror and _looks_like_hub_id(ref_s):
        candidate = Path(mirror) / ref_s.split("/")[-1]
        if candidate.exists():
            return candidate
    if not _looks_like_hub_id(ref_s):
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
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    token = get_secret("HF_TOKEN")
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


def available_ram_bytes() -> int | None:
    """Available system memory in bytes (None when it cannot be read)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def demo_dir() -> Path:
    """Where smoke mode keeps the demo assets (``$HELPERS_DEMO_DIR`` or a user cache folder)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cllama" / "demo-assets"
    return Path(os.environ.get("HELPERS_DEMO_DIR", default))


def use_demo_assets(path: str | Path | None = None) -> Path:
    """Build (once) the offline demo assets and make hub ids resolve to them.

    Sets ``HELPERS_LOCAL_MODELS`` and ``HF_HUB_OFFLINE=1`` so the notebooks' real defaults
    (``meta-llama/Llama-2-7b-hf``, ``hfl/chinese-alpaca-2-lora-7b``, ...) resolve to the tiny
    stand-ins. Safe to call from several processes at once (a file lock guards the build).
    """
    import fcntl

    from .demo import build_demo

    out = Path(path) if path else demo_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        build_demo(out)
    os.environ[LOCAL_MODELS_ENV] = str(out.resolve())
    os.environ["HF_HUB_OFFLINE"] = "1"
    return out
