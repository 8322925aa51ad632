"""``python -m helpers save PATH... --to DIR``: copy outputs to a workspace folder (Google Drive), verified."""
from __future__ import annotations

from dataclasses import MISSING, dataclass

from ..util.params import param
from .workspace import copy_to_workspace


@dataclass(frozen=True)
class SaveOptions:
    """What is saved, where, and how."""

    paths: list[str] = param(MISSING, "files and folders to save", flag="paths", many=True)
    to: str = param(MISSING, "the workspace folder, e.g. /content/drive/MyDrive/chinese-llama")
    progress: bool = param(True, "no progress bar")
    replace: bool = param(False, "replace a file or folder of the same name that another job saved (without it, such "
                          "a save is refused and nothing is replaced)")


OPTIONS = (SaveOptions,)


def main(options: SaveOptions) -> int:
    """Save each path; print what was done."""
    for path in options.paths:
        print(copy_to_workspace(path, options.to, show_progress=None if options.progress else False,
                                replace=options.replace))
    return 0
