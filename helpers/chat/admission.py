"""The server's front door: the API key, and a bounded queue in front of the model.

llama-cpp-python's server answers one generation at a time and lets every other request wait on a lock, with no
bound: under many clients a request can wait for minutes, and with its default ``interrupt_requests`` a streaming
reply is cut short whenever another request arrives. The server of :mod:`.openai_app` turns that off and puts two
ASGI layers in front (:class:`ApiKey` outermost, then the request validation of :mod:`.openai_app`, then
:class:`Admission`):

- :class:`ApiKey`: with a key set, every request needs ``Authorization: Bearer <key>`` (compared in constant time),
  else 401 with an OpenAI-style error;
- :class:`Admission`: at most ``1 + max_queue`` generation requests (``/v1/chat/completions``, ``/v1/completions``,
  ``/v1/embeddings``) are in the server at once, one generating and the rest queued in arrival order; one more gets
  503 at once, with ``Retry-After``: the seconds the queue ahead of it should take, from the average time of the
  requests served so far. Every admitted request completes (streamed or not).
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
GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
DEFAULT_QUEUE = 16  # requests waiting behind the one being generated before new ones get 503
FIRST_ESTIMATE = 2.0  # seconds per request assumed before any was served
MAX_RETRY_AFTER = 60


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
        if scope["type"] != "http" or not self.api_key:
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
    """ASGI middleware: a bounded queue of generation requests; beyond it, 503 with ``Retry-After``."""

    def __init__(self, app: Any, *, max_queue: int = DEFAULT_QUEUE) -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more, got {max_queue}")
        self.app, self.limit = app, 1 + max_queue
        self.active = 0  # admitted and not finished (one event loop: no lock needed)
        self.served = 0
        self.busy_seconds = 0.0  # time with at least one request in, over finished busy periods
        self._busy_since = 0.0

    def retry_after(self) -> int:
        """Seconds until the queue ahead of a new request should have drained: the requests in, times the busy time
        per request served so far."""
        busy = self.busy_seconds + (time.monotonic() - self._busy_since if self.active else 0.0)
        per_request = busy / self.served if self.served else FIRST_ESTIMATE
        return max(1, min(MAX_RETRY_AFTER, math.ceil(per_request * self.active)))

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in GENERATION_PATHS:
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            wait = self.retry_after()
            return await send_json(send, 503, {
                "message": f"the server is busy ({self.active} requests in progress or queued); retry after {wait} s",
                "type": "server_busy", "param": None, "code": None}, [(b"retry-after", str(wait).encode())])
        if self.active == 0:
            self._busy_since = time.monotonic()
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            self.served += 1
            if self.active == 0:
                self.busy_seconds += time.monotonic() - self._busy_since
