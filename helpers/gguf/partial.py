"""The files of a GGUF being written, kept resumable: :class:`PartialGGUF`.

The GGUF (or its shards) is built in a hidden folder beside the output, ``.<name>.partial/``. Everything but
the tensor data is known in advance: each file is created at its final size with its header (metadata and
tensor infos) in front, and every tensor is written into its own slot (its offset in the tensor infos) as it
arrives, in whatever order the infos list them. A small state record, ``.gguf-state.json``, says how many
tensors (in arrival order) are complete. It is written only after their data has been synced to disk (at
most every :data:`SYNC_SECONDS`, and when the writer stops), so whatever happens to the process (Ctrl-C,
``kill -9``), the recorded tensors are intact. Reopened for the same job (same key), writing goes on with the
next tensor, whose slot is simply written again; a folder of another job is removed.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..util import remove, write_json
from .layout import ALIGNMENT

GGUF_STATE = ".gguf-state.json"
SYNC_SECONDS = 2.0  # record progress (after syncing the data) at most this often: a kill loses at most this much


def render_headers(writer: Any, folder: Path, file_name: str) -> list[bytes]:
    """Each file's header, metadata and tensor infos as :class:`gguf.GGUFWriter` ``writer`` writes them for
    ``file_name`` (into a scratch folder inside ``folder``, read back), padded to :data:`ALIGNMENT`; in the order
    of ``writer.format_shard_names``."""
    scratch = Path(folder) / ".headers"
    existed = scratch.parent.is_dir()
    remove(scratch)
    scratch.mkdir(parents=True)
    try:
        writer.write_header_to_file(path=scratch / file_name)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.close()
        out = []
        for path in writer.format_shard_names(scratch / file_name):
            data = path.read_bytes()
            out.append(data + b"\0" * (-len(data) % ALIGNMENT))
        return out
    finally:
        writer.close()
        remove(scratch)
        if not existed and not any(scratch.parent.iterdir()):
            scratch.parent.rmdir()


def _sync(fh) -> None:
    fh.flush()
    (getattr(os, "fdatasync", None) or os.fsync)(fh.fileno())


class PartialGGUF:
    """The files of one GGUF job in ``folder``: headers in front, tensors written into their slots.

    Args:
        folder: the hidden partial folder (``.<name>.partial`` beside the output).
        names: file name of each shard (one name for an unsplit GGUF).
        headers: each file's header bytes (metadata and tensor infos), padded to :data:`ALIGNMENT`.
        sizes: each file's final size in bytes.
        key: identity of the job; a folder recorded under another key is discarded.
    """

    def __init__(self, folder: Path, names: list[str], headers: list[bytes], sizes: list[int], key: str) -> None:
        self.folder, self.names, self.key = Path(folder), list(names), key
        self._files: list[Any] = []
        self._done = 0
        self._synced_at = 0.0
        self._open(headers, sizes)

    @property
    def done(self) -> int:
        """Tensors complete (the first ``done`` in arrival order), including those of an interrupted run."""
        return self._done

    def _open(self, headers: list[bytes], sizes: list[int]) -> None:
        try:
            state = json.loads((self.folder / GGUF_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = None
        paths = [self.folder / n for n in self.names]
        if (isinstance(state, dict) and state.get("key") == self.key and isinstance(state.get("done"), int)
                and all(p.is_file() and p.stat().st_size == size for p, size in zip(paths, sizes))):
            self._files = [open(p, "r+b") for p in paths]  # noqa: SIM115 - closed in finish/abort
            self._done = state["done"]
        else:
            remove(self.folder)  # nothing yet, or another job's files
            self.folder.mkdir(parents=True)
            self._files = [open(p, "w+b") for p in paths]  # noqa: SIM115 - closed in finish/abort
            for fh, data, size in zip(self._files, headers, sizes):
                fh.write(data)
                fh.truncate(size)  # the slots read as zeros until written (a sparse file where supported)
                _sync(fh)
            self._done = 0
            self._record()
        self._synced_at = time.monotonic()

    def rewind(self, done: int) -> None:
        """Count at most ``done`` tensors as complete (and record it): the later slots are written again."""
        if done < self._done:
            self._done = done
            self._record()

    def _record(self) -> None:
        write_json(self.folder / GGUF_STATE, {"key": self.key, "done": self._done})

    def put(self, shard: int, offset: int, data: Any, *, pad: bool = True) -> None:
        """Write one tensor's bytes (any C-contiguous buffer) at ``offset`` of file ``shard``, then its padding
        (not for a part of a tensor: ``pad=False``)."""
        fh = self._files[shard]
        view = memoryview(data).cast("B")
        fh.seek(offset)
        fh.write(view)
        if pad:
            fh.write(b"\0" * (-len(view) % ALIGNMENT))

    def advance(self) -> None:
        """One more tensor is complete (after its :meth:`put`, or a tensor that has no data); record the progress
        when the last record is older than :data:`SYNC_SECONDS`."""
        self._done += 1
        if time.monotonic() - self._synced_at >= SYNC_SECONDS:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Sync the data and record the progress."""
        for fh in self._files:
            _sync(fh)
        self._record()
        self._synced_at = time.monotonic()

    def finish(self, out_dir: Path) -> list[Path]:
        """Close the files and move them into ``out_dir`` under their names (replacing older ones); the partial
        folder goes. Returns the final paths."""
        for fh in self._files:
            fh.close()
        self._files = []
        (self.folder / GGUF_STATE).unlink(missing_ok=True)  # from here on, a rerun starts over
        finals = []
        for name in self.names:
            os.replace(self.folder / name, out_dir / name)
            finals.append(out_dir / name)
        remove(self.folder)
        return finals

    def abort(self, *, keep: bool) -> None:
        """Close the files; with ``keep``, record the complete tensors for a resume, else remove the folder."""
        try:
            if keep and self._files:
                self.checkpoint()
        except OSError:
            pass  # the last record stays valid
        finally:
            for fh in self._files:
                try:
                    fh.close()
                except OSError:
                    pass
            self._files = []
            if not keep:
                remove(self.folder)
