"""The hub beyond a model's files: whether a gated repo can be downloaded with this machine's token
(:func:`access_problem`, asked before any download), and data sets (:func:`resolve_dataset`: a verified snapshot)."""
from __future__ import annotations

from pathlib import Path

from ..catalog import find
from ..env import get_secret
from .ref import current_hub_id, looks_like_hub_id
from .resolve import check_reachable, hub_cache_dir, hub_endpoint, hub_errors, is_local, require_online
from .environment import offline_setting
from .fetch import quiet_hub_logs
from .integrity import check_file, remove_cached
from ..util import UserError, sha256_file


def access_problem(ref: str, *, what: str = "model") -> str | None:
    """Why this machine cannot download ``ref`` although it exists: a gated repo (Meta's Llama-2/3) and no token,
    or a token the repo does not accept yet; None when it can (or when nothing can be asked: a local folder,
    offline mode, an unreachable hub without a catalog entry to go by). Nothing is downloaded."""
    if is_local(ref) or offline_setting() is not None or not looks_like_hub_id(current_hub_id(ref)):
        return None
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    hub_id, token = current_hub_id(ref), get_secret("HF_TOKEN")
    api = HfApi(endpoint=hub_endpoint())
    try:
        gated = bool(api.model_info(hub_id, token=token).gated)
    except Exception:  # noqa: BLE001 - the hub cannot say: go by the catalog
        entry = find(hub_id)
        gated = bool(entry is not None and entry.gated)
    if not gated:
        return None
    page = f"{(hub_endpoint() or 'https://huggingface.co')}/{hub_id}"
    if not token:
        return (f"the {what} {hub_id} is gated: accept its licence at {page}, then add your Hugging Face token as the "
                "HF_TOKEN secret (Colab: the key icon in the left bar, with notebook access on) or environment "
                "variable")
    try:
        api.auth_check(hub_id, token=token)
    except GatedRepoError:
        return f"your HF_TOKEN has no access to the {what} {hub_id} yet: accept its licence at {page} and wait for it"
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return f"the hub refused your HF_TOKEN for {hub_id}: create a new read token" if status == 401 else None
    except Exception:  # noqa: BLE001 - the check itself failed (a mirror without it): the download will tell
        return None
    return None


def resolve_dataset(repo_id: str, *, what: str = "data set") -> Path:
    """A local snapshot of the hub data set ``repo_id`` (``repo_type="dataset"``), downloaded or from the hub
    cache; its loading script (``*.py``) is never fetched. Each LFS file is checked against the SHA256 the hub
    lists for it; a mismatch removes the bad copy and is one :class:`UserError`.

    Raises:
        UserError: offline without a cached copy, not found, unreachable, or a file that does not match.
    """
    from huggingface_hub import HfApi, snapshot_download

    token, endpoint = get_secret("HF_TOKEN"), hub_endpoint()
    kwargs = {"repo_type": "dataset", "token": token, "endpoint": endpoint, "ignore_patterns": ["*.py"]}
    if offline_setting() is not None:
        try:
            return Path(snapshot_download(repo_id, local_files_only=True, **kwargs))
        except Exception:  # noqa: BLE001 - not cached: one line below
            raise UserError(f"{what} {repo_id!r} is not available offline: download it first, or give the folder "
                            "of its files") from None
    check_reachable(repo_id)
    with quiet_hub_logs(), hub_errors(repo_id, what):
        tree = HfApi(endpoint=endpoint).list_repo_tree(repo_id, repo_type="dataset", recursive=True, token=token)
        digests = {e.path: e.lfs.sha256 for e in tree if getattr(e, "lfs", None) and not e.path.endswith(".py")}
        folder = Path(snapshot_download(repo_id, **kwargs))
    for name, digest in digests.items():
        path = folder / name
        if path.is_file() and sha256_file(path) != digest:
            remove_cached(path)
            raise UserError(f"{repo_id}/{name} does not match the SHA256 the hub lists for it (damaged download); "
                            "it was removed, rerun to download it again")
    return folder


def fetch_dataset_file(repo_id: str, filename: str, *, revision: str | None = None, what: str = "data set") -> Path:
    """Download one file of a hub *data set* repo into the hub cache (resumable, through ``HF_ENDPOINT``) and check
    it against the digest the hub lists for it (:func:`helpers.hub.integrity.check_file`: the LFS SHA256 of a large file,
    the git blob id of a small one); a file that does not match is removed, so the next call downloads it afresh.

    Raises:
        UserError: offline, unreachable, missing, or a download that does not match the hub's digest.
    """
    from huggingface_hub import HfApi, hf_hub_download

    require_online(repo_id, what)
    token, endpoint = get_secret("HF_TOKEN"), hub_endpoint()
    with quiet_hub_logs(), hub_errors(repo_id, what):
        infos = HfApi(endpoint=endpoint).get_paths_info(repo_id, [filename], repo_type="dataset", revision=revision,
                                                        token=token)
        if not infos:
            raise UserError(f"{what} {repo_id} has no file {filename} on {endpoint or 'huggingface.co'}")
        path = Path(hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision, token=token,
                                    endpoint=endpoint, cache_dir=hub_cache_dir()))
    lfs = getattr(infos[0], "lfs", None)
    expected = str(lfs.sha256) if lfs is not None else str(infos[0].blob_id)
    check_file(path, repo_id=repo_id, name=filename, endpoint=endpoint or "huggingface.co", expected=expected)
    return path
