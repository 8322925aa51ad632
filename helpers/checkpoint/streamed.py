"""A hub base model read shard by shard as its safetensors shards arrive: the merge overlaps the download.

:class:`StreamedCheckpoint` knows every tensor's name and shape from the shards' headers (read off the hub) before
any shard is downloaded. :meth:`StreamedCheckpoint.prefetch` starts downloading the shards the merge will read, in
the order it reads them, in the background (:class:`~.arrivals.Arrivals`). A shard downloading front to back is
read while it arrives, each tensor as soon as its bytes are written (:class:`~helpers.hub.Arriving`); its digest is
checked when its download ends, and the merge moves to the next shard only after that. Until then what was made
from it is provisional (:meth:`StreamedCheckpoint.unverified` names such shards; :meth:`StreamedCheckpoint.settle`
waits for their checks). A shard that cannot be read early (found in the cache, or fetched over Xet) is verified
before its first tensor is read. Each shard is checked against the header the hub gave. Tensors come in the order of
a fully downloaded checkpoint (shard by shard, by position in the file), which is the order a merge asks for them.

Two modes:

* ``keep=True`` (a normal hub merge): every shard stays in the hub cache, as a full download leaves it;
* ``keep=False`` (low-disk mode): a shard is deleted from the hub cache once the merge moves on, and at most
  ``ahead`` shards download beyond the one in use (1: the next one downloads while this one merges; 0: one shard
  on disk at a time). Shards that were in the cache before this run are left there; nothing outside the hub cache
  is ever deleted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn

from ..hub import (Arriving, Meter, cached_files, download_small_files, fetch_file, file_listing, forget_file,
                   safetensors_headers)
from ..util import UserError, read_json
from .arrivals import Arrivals
from .adapter import open_adapter
from .files import SafetensorsFile
from .model import Checkpoint

INDEX = "model.safetensors.index.json"  # a sharded safetensors base's index: what streaming it needs


class StreamedCheckpoint(Checkpoint):
    """A hub repo's safetensors shards, read as they arrive (see the module's docstring for ``keep`` and ``ahead``).

    Attributes (besides :class:`Checkpoint`'s):
        repo_id: the hub repo.
        shards: the shard file names, in reading order.
        meter: the bytes the shards' downloads received (the merge's progress line).
        remote_files: ``[name, size, sha256]`` of each shard from the hub's listing (what identifies the weights
            without downloading them).
        fetched: shards downloaded so far in this run.
    """

    arrives = True

    def __init__(self, repo_id: str, *, what: str = "base model", keep: bool = False, ahead: int = 0,
                 meter: Meter | None = None, after: Callable[[], None] = lambda: None) -> None:
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
        self._sizes = {s: size for s, size, _sha in self.remote_files}
        self._kept = cached_files(repo_id, self.shards)  # already here before this run: never deleted
        self.keep, self.ahead, self.what = keep, ahead, what
        self.meter = meter or Meter()
        self._after = after  # downloads that have the link first (the LoRAs')
        self._current: tuple[str, SafetensorsFile] | None = None
        self._arrivals: Arrivals | None = None
        self._arriving: dict[str, Arriving] = {}  # shards downloading in the background, followed for early reads
        self._early: list[str] = []  # shards read before their download was verified, in order
        self.fetched: list[str] = []
        for shard in sorted(self._kept):  # an earlier download is checked before anything is merged from it
            self._fetch(shard)

    def _fetch(self, shard: str) -> Path:
        """Download ``shard`` (or find it in the cache) and verify it; the bytes count into :attr:`meter`."""
        return fetch_file(self.repo_id, shard, what=self.what, sha256=self._digests.get(shard, ""), meter=self.meter,
                          arriving=self._arriving.get(shard))

    def prefetch(self, names: Iterable[str]) -> None:
        """Start downloading, in the background, the shards holding ``names`` (the tensors the merge will read from
        the base), in the order of their first tensor."""
        order = list(dict.fromkeys(self._where[n] for n in names if n in self._where))
        self.meter.total += sum(self._sizes.get(s, 0) for s in order if s not in self._kept)
        self._arriving = {s: Arriving(f"{self.repo_id}/{s}", self._sizes.get(s, 0)) for s in order if s not in self._kept}
        self._arrivals = Arrivals(order, self._fetch, ahead=None if self.keep else self.ahead,
                                  on_stop=self.meter.cancel, after=self._after, on_cancel=self._never)

    def _never(self, shard: str) -> None:
        """``shard`` will not be downloaded (an earlier one failed, or the merge stopped): no reader waits for it."""
        if shard in self._arriving:
            self._arriving[shard].fail(RuntimeError(f"{self.repo_id}/{shard} was not downloaded"))

    def get(self, name: str, *, dtype: Any = None):
        shard = self._where[name]
        if self._arrivals is not None:
            self._arrivals.check()  # a shard that failed to arrive stops the merge now
        if self._current is None or self._current[0] != shard:
            self._release()
            self.fetched.append(shard)
            self._current = (shard, self._open(shard))
        try:
            return self._current[1].get(name, dtype=dtype)
        except UserError as exc:
            if shard not in self._early:
                raise
            self._damaged(shard, exc)

    def _damaged(self, shard: str, exc: UserError, path: Path | None = None) -> NoReturn:
        """A shard turned out damaged: for one read early, the download's own verdict first (a download that failed
        its check is reported as such); else the file went bad on this disk and is removed from the cache (so that
        the next run downloads it afresh, instead of trusting it)."""
        self._drop(shard, path or self._wait(shard))
        raise UserError(f"{exc}; it was removed from the hub cache: run again to download it afresh") from None

    def _wait(self, shard: str) -> Path:
        """The shard downloaded and verified (waiting for it), or fetched now when it is not among those arriving."""
        arriving = self._arrivals is not None and shard in self._arrivals.order
        return self._arrivals.wait(shard) if arriving else self._fetch(shard)

    def _open(self, shard: str) -> SafetensorsFile:
        """The shard read while it downloads (see :class:`~helpers.hub.Arriving`), or once it is downloaded and
        verified; checked against the header the hub gave (a damaged one: :meth:`_damaged`)."""
        arriving = self._arriving.get(shard)
        early = arriving is not None and arriving.open() is not None
        path = None
        if early:
            self._early.append(shard)
        else:
            path = self._wait(shard)
        try:
            reader = SafetensorsFile(Path(self.repo_id) / shard, arriving=arriving) if early else SafetensorsFile(path)
        except UserError as exc:
            self._damaged(shard, exc, path)
        wrong = self._mismatch(shard, reader)
        if wrong:
            reader.close()
            self._damaged(shard, UserError(f"{self.repo_id}: the downloaded {shard} does not hold what its header on "
                                           f"the hub said ({wrong})"), path)
        return reader

    def _mismatch(self, shard: str, reader: SafetensorsFile) -> str | None:
        """The first tensor the hub's header puts in ``shard`` that ``reader`` lacks or shapes otherwise."""
        return next((n for n, s in self._shapes.items() if self._where[n] == shard
                     and (n not in reader.entries or reader.shape(n) != s)), None)

    def unverified(self) -> list[str]:
        """Shards read before their download was verified whose check has not passed yet."""
        return [s for s in self._early if self._arrivals is None or not self._arrivals.verified(s)]

    def settle(self) -> None:
        """Wait until every shard read early is verified.

        Raises:
            UserError: a shard's download or check failed (its bytes are then not the hub's).
        """
        for shard in self.unverified():
            self._wait(shard)

    def _release(self, *, stopping: bool = False) -> None:
        """Close the current shard and, in low-disk mode, unless it was in the cache before this run, delete it; a
        shard read early is verified first (unless ``stopping``: then the downloads' stop deals with it)."""
        if self._current is None:
            return
        shard, reader = self._current
        self._current = None
        reader.close()
        if shard in self._early and stopping:
            return
        path = self._wait(shard) if shard in self._early else reader.path  # verified before the merge moves on
        self._drop(shard, path)
        if self._arrivals is not None and shard in self._arrivals.order:
            self._arrivals.release()

    def _drop(self, shard: str, path: Path) -> None:
        if not self.keep and shard not in self._kept:
            forget_file(path)

    def close(self) -> None:
        """Release the shard in use and stop the downloads still going; in low-disk mode a finished or interrupted
        merge never leaves a fetched shard behind."""
        self._release(stopping=True)
        if self._arrivals is not None:
            for path in self._arrivals.stop():
                self._drop(path.name, path)


ADAPTER_WEIGHTS = "adapter_model.safetensors"


class AdapterDownload:
    """A hub LoRA whose weights download in the background from now on and are read while they arrive: its small
    files (config, tokenizer) first, then :attr:`adapter` opened on ``adapter_model.safetensors`` as it is written
    (once it is verified, when it cannot be read early). A base's shards wait for it (:meth:`join`): one download at
    a time. Until its check passes, what is made from it is provisional (:meth:`unverified`, :meth:`settle`).

    Raises:
        UserError: the LoRA cannot be listed or downloaded, or its weights are damaged.
    """

    def __init__(self, repo_id: str, *, meter: Meter, what: str = "LoRA") -> None:
        folder = download_small_files(repo_id, what=what)
        size, sha = file_listing(repo_id, what=what)[ADAPTER_WEIGHTS]
        self.label, self.meter = f"{repo_id}/{ADAPTER_WEIGHTS}", meter
        meter.total += size
        self._arriving = Arriving(self.label, size)
        self._arrivals = Arrivals([ADAPTER_WEIGHTS], lambda name: fetch_file(
            repo_id, name, what=what, sha256=sha, meter=meter, arriving=self._arriving), ahead=None,
                                  on_stop=meter.cancel)
        self._early = self._arriving.open() is not None
        try:
            weights = SafetensorsFile(folder / ADAPTER_WEIGHTS, arriving=self._arriving) if self._early else None
            if weights is None:
                self._arrivals.wait(ADAPTER_WEIGHTS)
            self.adapter = open_adapter(folder, weights)
        except UserError:
            self.close()
            if self._early:
                self._arrivals.wait(ADAPTER_WEIGHTS)  # a damaged download is reported as such
            raise
        self.adapter.remote_files = [[ADAPTER_WEIGHTS, size, sha]]

    @staticmethod
    def streams(repo_id: str, *, what: str = "LoRA") -> bool:
        """True when ``repo_id``'s weights are one safetensors file still to download (what this class reads)."""
        files = file_listing(repo_id, what=what)
        weights = [n for n in files if n.endswith((".safetensors", ".bin", ".pt", ".pth"))]
        return weights == [ADAPTER_WEIGHTS] and not cached_files(repo_id, weights)

    def unverified(self) -> list[str]:
        """The weights, when read before their download was verified and its check has not passed yet."""
        return [self.label] if self._early and not self._arrivals.verified(ADAPTER_WEIGHTS) else []

    def settle(self) -> None:
        """Wait for the weights' check (raising its failure)."""
        self._arrivals.wait(ADAPTER_WEIGHTS)

    def join(self) -> None:
        """Wait until the download has ended, however it ended."""
        self._arrivals.join()

    def close(self) -> None:
        """Stop the download if it still runs."""
        self._arrivals.stop()
