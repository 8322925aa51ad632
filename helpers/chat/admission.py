"""The server's front door: the API key, and a bounded queue in front of the model.

The engine answers one generation at a time (:mod:`.openai_service`: one worker thread, in arrival order). Without a
bound, under many clients a request could wait for minutes; so:

- :class:`ApiKey` (ASGI middleware, outermost): with a key set, every request but ``GET /health`` needs
  ``Authorization: Bearer <key>`` (compared in constant time), else 401 with an OpenAI-style error;
- :class:`Admission`: at most ``1 + max_queue`` generation requests (chat, completions, embeddings) are admitted at
  once, one generating and the rest queued in arrival order; one more gets 503 at once, with ``Retry-After``: the
  seconds the queue ahead of it should take, from the average time of the requests served so far. A request is
  admitted after it was checked (a malformed one gets its 400 whatever the load) and leaves when its answer is sent,
  streamed or not, or its client has gone.
"""
from __future__ import annotations

import hmac
import json
import math
import time
from typing import Any, Awaitable, Callable

API_KEY_ENV = "HELPERS_API_KEY"  # the one name of the server's key variable (the CLI reads it, the server process
# gets the key in it: never on a command line, which other users of the machine can read)
DEFAULT_TIMEOUT = 600.0  # seconds one generation may run before it ends (``--timeout``)
DEFAULT_QUEUE = 16  # requests waiting behind the one being generated before new ones get 503
FIRST_ESTIMATE = 2.0  # seconds per request assumed before any was served
LONGEST_RETRY_AFTER = 60  # the most seconds a 503's Retry-After asks a client to wait


async def send_json(send: Callable[[dict], Awaitable[None]], status: int, error: dict,
                    headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Answer with ``{"error": error}`` (OpenAI's error shape)."""
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class ApiKey:
    """ASGI middleware: requests without ``Authorization: Bearer <api_key>`` get 401 (no key set: all pass)."""

    def __init__(self, app: Any, *, api_key: str | None) -> None:
        self.app, self.api_key = app, api_key

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not self.api_key or (scope.get("method"), scope.get("path")) == ("GET",
                                                                                                      "/health"):
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            return await self.app(scope, receive, send)
        await send_json(send, 401, {"message": "missing or wrong API key: send 'Authorization: Bearer <key>' with "
                                               "the key the server was started with", "type": "invalid_request_error",
                                    "param": None, "code": "invalid_api_key"},
                        [(b"www-authenticate", b"Bearer")])


class Admission:
    """A bounded count of generation requests in the server; beyond it, :meth:`admit` refuses with the seconds to
    wait."""

    def __init__(self, *, max_queue: int = DEFAULT_QUEUE) -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more, got {max_queue}")
        self.limit = 1 + max_queue
        self.active = 0  # admitted and not finished (one event loop: no lock needed)
        self.served = 0
        self.busy_seconds = 0.0  # time with at least one request in, over finished busy periods
        self._busy_since = 0.0

    def retry_after(self) -> int:
        """Seconds until the queue ahead of a new request should have drained: the requests in, times the busy time
        per request served so far."""
        busy = self.busy_seconds + (time.monotonic() - self._busy_since if self.active else 0.0)
        per_request = busy / self.served if self.served else FIRST_ESTIMATE
        return max(1, min(LONGEST_RETRY_AFTER, math.ceil(per_request * self.active)))

    def admit(self) -> Callable[[], None] | int:
        """Admit one request: its ``release`` (call it once the answer is sent; more calls do nothing), or, when the
        queue is full, the seconds to wait (for ``Retry-After``)."""
        if self.active >= self.limit:
            return self.retry_after()
        if self.active == 0:
            self._busy_since = time.monotonic()
        self.active += 1
        done = False

        def release() -> None:
            nonlocal done
            if done:
                return
            done = True
            self.active -= 1
            self.served += 1
            if self.active == 0:
                self.busy_seconds += time.monotonic() - self._busy_since

        return release
