"""Pushing outputs to the user's hub account: adapters, merged HF folders and GGUFs, with a model card.

:func:`push_to_hub` creates the repo when needed (private unless told otherwise) and uploads through
``huggingface_hub``'s ``HfApi.upload_folder``: with ``hf_xet`` installed (the default) large files are chunked and
deduplicated, big folders are committed in batches, and running the same push again after an interruption
resumes it (what was committed is skipped, what was uploaded is not sent again); without ``hf_xet`` the files go
through git LFS in one commit, and objects the hub already holds are not sent again. The token comes from the
``HF_TOKEN`` Colab secret or environment variable and is never printed.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..env import get_secret
from ..hub import hub_endpoint
from ..hub.resolve import hub_errors
from ..hub.environment import TOKENS_PAGE, token_origin, token_rejected
from ..util import UserError, sha256_file
from .card import ReleaseCard, model_card

NO_TOKEN = ("no Hugging Face token to push with: add a token with the Write role as the HF_TOKEN secret (Colab: the "
            f"key icon) or environment variable; make one at {TOKENS_PAGE}")


@dataclass(frozen=True)
class PushResult:
    """A finished push: the repo (``owner/name``), its page, the commit, the files pushed (paths in the repo)."""

    repo_id: str
    url: str
    commit: str
    files: tuple[str, ...]

    def __str__(self) -> str:
        return f"pushed {len(self.files)} file(s) to {self.url} (commit {self.commit[:10]})"


def upload_layout(paths: str | Path | Sequence[str | Path] | Mapping[str, str | Path]) -> dict[str, Path]:
    """``{path in the repo: local file}`` for ``paths``.

    A mapping gives each local file or folder its place in the repo (``""`` is the root). A list puts files at
    the root under their names, and a folder's files at the root when it is the only folder, else under the
    folder's name. Hidden files (names starting with ``.``) are left out.

    Raises:
        UserError: a path that does not exist, nothing to push, or two files for one place in the repo.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not isinstance(paths, Mapping):
        items = [Path(p).expanduser() for p in paths]
        folders = [p for p in items if p.is_dir()]
        paths = {("" if p.is_dir() and len(folders) == 1 else p.name): p for p in items}
        if len(paths) < len(items):
            raise UserError("two of the paths to push have the same name; give a mapping {path in repo: path}")
    layout: dict[str, Path] = {}
    for place, local in paths.items():
        local = Path(local).expanduser()
        if not local.exists():
            raise UserError(f"{local} not found: nothing to push there")
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
        for f in files:
            rel = f.relative_to(local).as_posix() if local.is_dir() else ""
            name = "/".join(part for part in (str(place).strip("/"), rel) if part) or f.name
            if any(part.startswith(".") for part in name.split("/")):
                continue
            if name in layout and layout[name] != f:
                raise UserError(f"{layout[name]} and {f} would both be {name!r} in the repo; give a mapping "
                                "{path in repo: path} to place them")
            layout[name] = f
    if not layout:
        raise UserError("nothing to push: the paths hold no files")
    return layout


def push_to_hub(paths: str | Path | Sequence[str | Path] | Mapping[str, str | Path], repo_id: str, *,
                token: str | None = None, card: ReleaseCard | str | None = None, private: bool = True,
                commit_message: str | None = None, endpoint: str | None = None) -> PushResult:
    """Upload files and folders to a model repo on the hub, creating it (private by default) when needed.

    Args:
        paths: what to push (see :func:`upload_layout`): a merged HF folder, an adapter folder, GGUF files...
        repo_id: ``owner/name``, or ``name`` for the token's own account.
        token: a token with write access (default: the ``HF_TOKEN`` Colab secret or environment variable).
        card: a :class:`ReleaseCard` to write ``README.md`` from, or the card's text; ``None`` writes none.
        private: create the repo private (an existing repo keeps its visibility).
        commit_message: default ``"Upload <files> with chinese-llama-notebooks"``.
        endpoint: the hub (default ``$HF_ENDPOINT``, else huggingface.co).
    Returns:
        the repo id, its page, the commit and the files pushed.
    Raises:
        UserError: no token or a rejected one, a token that may not write there, an endpoint that takes no
            uploads, a hub that cannot be reached, a path that does not exist.
    """
    from huggingface_hub import HfApi

    layout = upload_layout(paths)
    token = token or get_secret("HF_TOKEN")
    if not token:
        raise UserError(NO_TOKEN)
    endpoint = (endpoint or hub_endpoint() or "").rstrip("/") or None
    api = HfApi(endpoint=endpoint, token=token)
    with _upload_errors(repo_id, endpoint, token):
        full_id = repo_id if "/" in repo_id else f"{api.whoami()['name']}/{repo_id}"
        api.create_repo(full_id, private=private, exist_ok=True)
    if isinstance(card, ReleaseCard):
        card = model_card(card, [(name, f.stat().st_size, sha256_file(f)) for name, f in layout.items()
                                 if name != "README.md"], repo_id=full_id)
    message = commit_message or f"Upload {', '.join(sorted(layout)[:3])}{' ...' if len(layout) > 3 else ''} " \
                                "with chinese-llama-notebooks"
    with _staged(layout, card) as folder, _quiet_bars(), _upload_errors(full_id, endpoint, token):
        info = api.upload_folder(repo_id=full_id, folder_path=folder, commit_message=message)
    names = tuple(sorted({*layout, *(["README.md"] if card is not None else [])}))
    return PushResult(full_id, f"{endpoint or 'https://huggingface.co'}/{full_id}", str(info.oid), names)


@contextlib.contextmanager
def _staged(layout: dict[str, Path], card: str | None) -> Iterator[Path]:
    """A temporary folder laid out as the repo: links to the files (nothing copied), and the card."""
    folder = Path(tempfile.mkdtemp(prefix="cllama-push-"))
    try:
        for name, local in layout.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(local.resolve(), folder / name)
        if card is not None:
            (folder / "README.md").unlink(missing_ok=True)
            (folder / "README.md").write_text(card, encoding="utf-8")
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _quiet_bars() -> Iterator[None]:
    """huggingface_hub's upload bars off when ``HELPERS_NO_PROGRESS=1``."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet = os.environ.get("HELPERS_NO_PROGRESS") == "1" and not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        yield
    finally:
        if quiet:
            enable_progress_bars()


@contextlib.contextmanager
def _upload_errors(repo_id: str, endpoint: str | None, token: str) -> Iterator[None]:
    """The hub's answers to an upload as one line: a rejected token, a token that may not write, a mirror
    (``HF_ENDPOINT``) that takes no uploads; the rest as for downloads (:func:`helpers.hub.resolve.hub_errors`)."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    origin = token_origin() if token in (os.environ.get("HF_TOKEN"), get_secret("HF_TOKEN")) else "the token given"
    where = endpoint or "huggingface.co"
    with hub_errors(repo_id, "repo", action="upload"):
        try:
            yield
        except HfHubHTTPError as exc:
            status = getattr(exc.response, "status_code", None)
            if status == 401:
                raise token_rejected(exc, where=where, origin=origin) or exc from None
            if status == 403:
                raise UserError(f"{origin} may not write {repo_id} on {where} (403): use a token with the Write "
                                f"role, from {TOKENS_PAGE}, or push to your own account") from None
            if endpoint and endpoint == hub_endpoint() and status and not isinstance(exc, RepositoryNotFoundError):
                raise UserError(f"HF_ENDPOINT={endpoint} answered {status} to an upload: a mirror takes no "
                                "uploads; unset HF_ENDPOINT to push to huggingface.co") from None
            raise
