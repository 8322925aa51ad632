"""A hub base model read one safetensors shard at a time, for low-disk merges.

:class:`StreamedCheckpoint` knows every tensor's name and shape from the shards' headers (HTTP range requests)
before any shard is downloaded. A shard is fetched when its first tensor is asked for, and deleted from the hub
cache when the stream moves on to the next one, so the disk holds one shard at a time. Tensors come in the order
of a fully downloaded checkpoint (shard by shard, by position in the file), which is the order a merge asks for
them. Shards that were already in the cache before are left there; nothing outside the hub cache is ever deleted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..hub import cached_files, download_small_files, fetch_file, file_listing, forget_file, safetensors_headers
from ..util import UserError, read_json
from .files import SafetensorsFile
from .model import Checkpoint

INDEX = "model.safetensors.index.json"


class StreamedCheckpoint(Checkpoint):
    """A hub repo's safetensors shards, downloaded and released one at a time.

    Attributes (besides :class:`Checkpoint`'s):
        repo_id: the hub repo.
        shards: the shard file names, in reading order.
        remote_files: ``[name, size, sha256]`` of each shard from the hub's listing (what identifies the weights
            without downloading them).
        fetched: shards downloaded so far in this run.
    """

    def __init__(self, repo_id: str, *, what: str = "base model") -> None:
        folder = download_small_files(repo_id, what=what)
        if not (folder / INDEX).is_file():
            raise UserError(f"low-disk mode needs a base in several safetensors shards; {repo_id} has no {INDEX}: "
                            "merge without --low-disk")
        weight_map = (read_json(folder / INDEX).get("weight_map") or {})
        self.repo_id, self.shards = repo_id, sorted(set(weight_map.values()))
        headers = safetensors_headers(repo_id, what=what)
        config = read_json(folder / "config.json")
        super().__init__(folder, config, [folder / INDEX, folder / "config.json"], "safetensors")
        for shard in self.shards:
            if shard not in headers:
                raise UserError(f"{repo_id}: {shard} is listed in {INDEX} but has no safetensors header on the hub")
            for name, (_dtype, shape, _start) in sorted(headers[shard].items(), key=lambda kv: kv[1][2]):
                self._shapes[name], self._where[name] = shape, shard
        listing = file_listing(repo_id, what=what)
        self.remote_files = [[s, *listing.get(s, (0, ""))] for s in self.shards]
        self._digests = {s: sha for s, _size, sha in self.remote_files}  # each fetched shard is checked
        self._kept = cached_files(repo_id, self.shards)  # already here before this run: never deleted
        self._current: tuple[str, SafetensorsFile] | None = None
        self.fetched: list[str] = []
        self.what = what

    def get(self, name: str, *, dtype: Any = None):
        shard = self._where[name]
        if self._current is None or self._current[0] != shard:
            self._release()
            path = fetch_file(self.repo_id, shard, what=self.what, sha256=self._digests.get(shard, ""))
            self.fetched.append(shard)
            self._current = (shard, self._open(shard, path))
        return self._current[1].get(name, dtype=dtype)

    def _open(self, shard: str, path: Path) -> SafetensorsFile:
        """The downloaded shard, checked against the header the hub gave; a damaged one is removed from the cache
        (so that the next run downloads it afresh, instead of trusting it) and reported in one line."""
        try:
            reader = SafetensorsFile(path)
        except UserError as exc:
            self._drop(shard, path)
            raise UserError(f"{exc}; it was removed from the hub cache: run again to download it afresh") from None
        wrong = [n for n, s in self._shapes.items() if self._where[n] == shard
                 and (n not in reader.entries or reader.shape(n) != s)]
        if wrong:
            reader.close()
            self._drop(shard, path)
            raise UserError(f"{self.repo_id}: the downloaded {shard} does not hold what its header on the hub said "
                            f"({wrong[0]}); it was removed from the hub cache: run again to download it afresh")
        return reader

    def _release(self) -> None:
        """Close the current shard and, unless it was in the cache before this run, delete it."""
        if self._current is None:
            return
        shard, reader = self._current
        self._current = None
        reader.close()
        self._drop(shard, reader.path)

    def _drop(self, shard: str, path: Path) -> None:
        if shard not in self._kept:
            forget_file(path)

    def close(self) -> None:
        """Release the shard in use (a finished or interrupted merge never leaves a fetched shard behind)."""
        self._release()

