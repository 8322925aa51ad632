"""Shards downloaded in the background, in the order a merge reads them, while it merges the ones already here.

:class:`Arrivals` runs one download thread: it fetches each shard in turn (``fetch``: download *and* verify, so a
shard is handed over only once its bytes match the hub's digest) and keeps at most ``ahead`` shards beyond the one
in use (:meth:`Arrivals.release` frees a place), or every shard when ``ahead`` is None. One shard downloads at a
time: the link is shared, so the shard needed next arrives soonest when it has the link to itself (``after``: what
must end first, another :class:`Arrivals`' downloads). ``on_cancel`` hears of each shard that will never be fetched.

The first failure stops the thread; :meth:`Arrivals.wait` for that shard raises it, and so does
:meth:`Arrivals.check` at once, so a merge stops at the next tensor instead of when it reaches the damaged shard.
"""
from __future__ import annotations

import threading
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Callable

from ..util.timings import phase


class Arrivals:
    """Shards in ``order``, fetched one after the other in a background thread (see the module's docstring)."""

    def __init__(self, order: list[str], fetch: Callable[[str], Path], *, ahead: int | None,
                 on_stop: Callable[[], None] = lambda: None, after: Callable[[], None] = lambda: None,
                 on_cancel: Callable[[str], None] = lambda name: None) -> None:
        self.order = list(order)
        self._fetch, self._on_stop, self._after, self._on_cancel = fetch, on_stop, after, on_cancel
        self._slots = threading.Semaphore(ahead + 1) if ahead is not None else None
        self._futures: dict[str, Future] = {s: Future() for s in self.order}
        self._taken: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shard-download", daemon=True)
        self._thread.start()

    def _take_slot(self) -> bool:
        """Wait for a place on disk; False when stopped meanwhile."""
        while self._slots is not None and not self._slots.acquire(timeout=0.1):
            if self._stop.is_set():
                return False
        return not self._stop.is_set()

    def _run(self) -> None:
        self._after()  # another download that has the link first
        for shard in self.order:
            future = self._futures[shard]
            if not self._take_slot() or not future.set_running_or_notify_cancel():
                break
            try:
                future.set_result(self._fetch(shard))
            except BaseException as exc:  # noqa: BLE001 - handed to the merge, which reports it
                future.set_exception(exc)
                break
        for name, future in self._futures.items():
            if future.cancel():  # never started
                self._on_cancel(name)

    def wait(self, shard: str) -> Path:
        """The downloaded, verified ``shard`` (waiting for it).

        Raises:
            whatever its download or check raised; KeyError: a shard not in the order.
        """
        future = self._futures[shard]
        self._taken.add(shard)
        try:
            if future.done():
                return future.result()
            with phase("wait", f"the merge waits for {shard}"):
                return future.result()
        except CancelledError:
            self.check()  # the earlier failure that stopped the downloads
            raise RuntimeError(f"{shard} was not downloaded") from None

    def verified(self, shard: str) -> bool:
        """True once ``shard`` is downloaded and its check has passed."""
        future = self._futures[shard]
        return future.done() and not future.cancelled() and future.exception() is None

    def check(self) -> None:
        """Raise the first failure of a download or check (in order), if one has happened."""
        for future in self._futures.values():
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def release(self) -> None:
        """One shard is no longer on disk: the next may download."""
        if self._slots is not None:
            self._slots.release()

    def join(self) -> None:
        """Wait until the downloads have ended (done, failed or stopped)."""
        self._thread.join()

    def stop(self) -> list[Path]:
        """Stop downloading (the one in progress stops at its next piece, through ``on_stop``) and return the shards
        fetched but never waited for."""
        self._stop.set()
        self._on_stop()
        self._thread.join()
        return [f.result() for s, f in self._futures.items()
                if s not in self._taken and f.done() and not f.cancelled() and f.exception() is None]
