"""Where a notebook's work outlives its Colab runtime: the workspace (a folder on the user's Google Drive in Colab,
the output folder elsewhere), what each stage saves there and pushes to the hub, and how a later notebook finds it.

Large outputs are written to the runtime's local disk first, then copied to the workspace with a progress bar and a
SHA256 check (:func:`helpers.publish.copy_to_workspace`); a rerun copies nothing already saved. A name that looks
like one of the notebooks' outputs (``chinese-alpaca-2-7b-q4_k_m.gguf``) and is found nowhere is refused with the
notebook (and form values) that make it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..colab import NO, Need
from ..env import get_secret, in_colab
from ..gguf import JOB_KEY, gguf_sidecars, read_metadata
from ..gguf.export import DRIVE_ROOT
from ..publish import NO_TOKEN, ReleaseCard, Saved, copy_to_workspace, push_to_hub
from ..util import UserError, read_json
from .names import output_maker

AUTO = "auto"
DRIVE_FOLDER = "chinese-llama-notebooks"  # under MyDrive
WORKSPACE_HELP = ("where your work is kept between Colab sessions: auto = your Google Drive (MyDrive/"
                  f"{DRIVE_FOLDER}) in Colab, the output folder elsewhere; or any folder")
PUSH_HELP = ("also upload the result to this hub repo of yours (name or owner/name, private; needs the HF_TOKEN secret "
             "with write access); empty: no upload")
CONSENT = ("Colab now asks for access to your Google Drive: allow it, so the results outlive this runtime (it is "
           "recycled after 12 hours or when idle). To keep them only on this runtime, set WORKSPACE to a local folder.")


@dataclass(frozen=True)
class Workspace:
    """The folder work is kept in, and whether it is on Google Drive (mounted before use)."""

    folder: Path
    on_drive: bool

    @classmethod
    def of(cls, value: str, output_dir: str | Path) -> Workspace:
        """``WORKSPACE``'s value: ``auto`` (Drive in Colab, else ``output_dir``) or a folder."""
        drive = Path(DRIVE_ROOT)
        if value == AUTO:
            return cls(drive / DRIVE_FOLDER, True) if in_colab() else cls(Path(output_dir).expanduser(), False)
        folder = Path(value).expanduser()
        return cls(folder, drive in folder.parents or folder == drive)

    def ready(self) -> None:
        """Mount Google Drive when the workspace is on it and it is not mounted yet (Colab asks for consent)."""
        if not self.on_drive or Path(DRIVE_ROOT).is_dir():
            return
        if not in_colab():
            raise UserError(f"the workspace {self.folder} is on Google Drive, which only Colab mounts: set WORKSPACE "
                            "to a local folder")
        print(CONSENT)
        from google.colab import drive  # type: ignore[import-not-found]

        drive.mount(str(Path(DRIVE_ROOT).parent))

    def save(self, paths: Iterable[Path], *, job: str | None = None, replace: bool = False) -> list[Saved]:
        """Copy ``paths`` (files or folders) into the workspace, verified; what is already there is not copied. A
        GGUF's sidecars (its Ollama ``.Modelfile`` and ``.sha256``) go with it, so the workspace folder is what a
        laptop needs; the list returned holds ``paths``' copies only.

        A name the workspace holds with other contents is replaced only when the same job made it: ``job`` (an id
        of the inputs and settings), else the job a merged output records in itself (:func:`made_by`), else the
        same source file; or with ``replace`` (the user's explicit choice). Otherwise :class:`UserError`, and the
        new output stays where it is.
        """
        saved = []
        for path in paths:
            if path.exists() and path.resolve().parent != self.folder.resolve():
                self.ready()
                maker = job or made_by(path)
                saved.append(copy_to_workspace(path, self.folder, job=maker, replace=replace))
                print(saved[-1])
                sidecars = gguf_sidecars(path) if path.suffix == ".gguf" else []
                for extra in (p for p in sidecars if p.is_file()):
                    copy_to_workspace(extra, self.folder, show_progress=False, job=maker, replace=replace)
        return saved

    def find(self, ref: str) -> Path | None:
        """The file or folder ``ref`` names in the workspace (None: not there, or ``ref`` is a path already)."""
        if not ref or Path(ref).expanduser().is_absolute():
            return None
        candidate = self.folder / ref
        return candidate if candidate.exists() else None


def made_by(path: Path) -> str | None:
    """The job an output records in itself, as a short id: a merged GGUF's inputs and options (with its type), a
    merged folder's ``merge.json``; None when it records none."""
    record: object = None
    if path.suffix == ".gguf" and path.is_file():
        try:
            meta = read_metadata(path, (JOB_KEY, "general.file_type"))
        except UserError:
            return None
        record = [meta.get(JOB_KEY), meta.get("general.file_type")] if meta.get(JOB_KEY) else None
    elif (path / "merge.json").is_file():
        record = read_json(path / "merge.json", default={}).get("job")
    if not record:
        return None
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def push_needs(repo_id: str) -> list[Need]:
    """What pushing to ``repo_id`` needs before anything runs: a token (the HF_TOKEN secret)."""
    if not repo_id or get_secret("HF_TOKEN"):
        return []
    return [Need(f"a token to push to {repo_id}", "the HF_TOKEN secret with write access", "none", NO, NO_TOKEN)]


def push(paths: list[Path], repo_id: str, card: ReleaseCard) -> Any:
    """Upload ``paths`` to the user's hub repo ``repo_id`` with ``card`` (nothing when ``repo_id`` is empty)."""
    if not repo_id:
        return None
    result = push_to_hub(paths, repo_id, card=card)
    print(result)
    return result


def locate(ref: str, workspace: Workspace) -> str:
    """``ref`` as the stage should read it: an existing path, else the workspace's file of that name, else ``ref``
    itself (a catalog name or hub id).

    Raises:
        UserError: ``ref`` is named like a notebook's output and is nowhere: the message names that notebook.
    """
    if not ref or Path(ref).expanduser().exists():
        return ref
    found = workspace.find(ref)
    if found is not None:
        return str(found)
    maker = output_maker(Path(ref).name)
    if maker is not None:
        raise UserError(f"{ref} is neither here nor in your workspace {workspace.folder}: {maker} makes it, into "
                        "the same workspace")
    return ref
