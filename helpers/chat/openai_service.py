"""What the server's routes share: the engine, the one worker thread it runs in, and the model's names.

:meth:`Service.run` hands one request's work to the worker thread (one at a time, in arrival order) and yields what
it emits to the event loop, which stays free to answer ``/v1/models`` and ``/health``; a client that disconnects
cancels its work at the engine's next token, or before it starts.
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable

from .admission import DEFAULT_QUEUE, DEFAULT_TIMEOUT, Admission
from .engine import Cancelled, Engine, Sampling
from .openai_types import ApiError


class Service:
    """The engine, the worker thread it runs in, and what the routes share."""

    def __init__(self, engine: Engine, *, model_id: str, timeout: float = DEFAULT_TIMEOUT,
                 max_queue: int = DEFAULT_QUEUE) -> None:
        self.engine, self.model_id, self.timeout = engine, model_id, timeout
        self.admission = Admission(max_queue=max_queue)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self.names = {model_id, engine.path.name, engine.path.stem}
        self.stats = {"generating": False, "finished": 0, "cancelled": 0, "failed": 0}  # GET /helpers/stats

    def admit(self) -> Callable[[], None]:
        """Admit a checked generation request: its ``release``, to call once its answer is sent.

        Raises:
            ApiError: 503 with ``Retry-After`` when ``1 + max_queue`` requests are in already.
        """
        release = self.admission.admit()
        if isinstance(release, int):
            raise ApiError(503, f"the server is busy ({self.admission.active} requests in progress or queued); "
                                f"retry after {release} s", type="server_busy", headers={"Retry-After": str(release)})
        return release

    def check_model(self, name: str | None) -> None:
        """Accept the served model's id (or its file name), or no name; else 404 ``model_not_found``."""
        if name and name not in self.names:
            raise ApiError(404, f"The model '{name}' does not exist; this server serves '{self.model_id}'",
                           param="model", code="model_not_found")

    async def run(self, request: Any, work: Callable[[Callable[[Any], None], threading.Event], None]
                  ) -> AsyncIterator[Any]:
        """Run ``work(emit, cancel)`` in the worker thread and yield what it emits, until it returns.

        A client that disconnects sets ``cancel`` (the engine stops at its next token, or never starts) and raises
        :class:`Cancelled` here; so does leaving the iteration early (a streamed response whose client went away).
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        end = object()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def job() -> None:
            outcome = "failed"
            self.stats["generating"] = True
            try:
                work(emit, cancel)
                outcome = "finished"
            except Cancelled as exc:
                outcome = "cancelled"
                emit(exc)
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop, which answers it
                emit(exc)
            finally:
                self.stats["generating"] = False
                self.stats[outcome] += 1
                emit(end)

        self.pool.submit(job)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    cancel.set()
                    raise Cancelled()
                item = get.result()
                if item is end:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()  # a no-op once the work is done
            gone.cancel()

    def deadline(self) -> float:
        return time.monotonic() + self.timeout

    def generate(self, prompt: list[int], sampling: Sampling, n: int) -> Callable:
        """The work of ``n`` replies to ``prompt``, emitting ``(choice, Token | Finish)``."""

        def work(emit: Callable[[Any], None], cancel: threading.Event) -> None:
            deadline = self.deadline()
            for choice in range(n):
                for item in self.engine.generate(prompt, sampling, cancel=cancel, deadline=deadline):
                    emit((choice, item))

        return work


async def _disconnected(request: Any) -> None:
    """Return once the client has gone (the request body was read before)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
