"""A fault-injecting HTTP proxy for the tests of a failing mirror: it stands between ``huggingface_hub`` and the
hub twin (``tests/hubtwin.py``) and misbehaves as a flaky mirror does, on the requests a rule matches.

- :class:`Fault` ``kind``: ``status`` (answer 503, 429 ... with an optional ``Retry-After``), ``drop`` (send the
  headers and ``after_bytes`` bytes of the body, then close the connection), ``delay`` (wait ``seconds`` before
  forwarding: a slow HEAD), ``stall`` (send ``after_bytes`` bytes of the body, wait ``seconds``, send the rest: a
  download caught half-way), ``corrupt`` (XOR the byte at ``offset`` of the file with ``xor``, sizes intact; a ranged answer
  is changed where it covers that byte, and only answers that held the byte count towards ``times``; with ``seconds``
  it also stalls as ``stall`` does); with
  ``ignore_range`` a rule also answers a ``Range`` request with the whole file and 200, as some servers do;
- a rule applies to the next ``times`` requests whose method is ``method`` (``*``: any), whose path matches the
  ``path`` regular expression and whose ``Range`` header (``""`` when none) matches ``range`` (``re.search``);
  ``times=-1``: to all of them;
- :attr:`FaultProxy.log` lists every request: method, path, the status sent, the ``Range`` asked for, the time it
  came, the fault applied and the body bytes the client took before it hung up (``sent``: the body is written in
  64 kB pieces, so a client that closes early stops it, give or take the sockets' buffers).

Runs in a thread of the test process (``http.server``), so CLI subprocesses reach it at :attr:`FaultProxy.endpoint`.
"""
from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "content-length", "host"}
_KINDS = ("status", "drop", "delay", "stall", "corrupt")
_PIECE = 64 * 1024


@dataclass
class Fault:
    """One rule (see the module's docstring)."""

    kind: str
    path: str = ""
    method: str = "GET"
    times: int = 1
    status: int = 503
    retry_after: int | None = None
    after_bytes: int = 0
    seconds: float = 0.0
    offset: int = 0
    xor: int = 0xFF
    range: str = ""
    ignore_range: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")

    def matches(self, method: str, path: str, asked: str = "") -> bool:
        return (self.times != 0 and self.method in ("*", method) and re.search(self.path, path) is not None
                and re.search(self.range, asked) is not None)


@dataclass
class Logged:
    """One request the proxy answered."""

    method: str
    path: str
    status: int
    range: str
    time: float
    fault: str = ""
    sent: int = 0


@dataclass
class FaultProxy:
    """The proxy in front of ``upstream`` (the twin's endpoint)."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    log: list[Logged] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``: what ``HF_ENDPOINT`` points at."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, fault: Fault) -> Fault:
        """Add a rule (checked before the earlier ones)."""
        with self._lock:
            self.faults.insert(0, fault)
        return fault

    def clear(self) -> None:
        """Remove every rule and forget the log."""
        with self._lock:
            self.faults.clear()
            self.log.clear()

    def take(self, method: str, path: str, asked: str = "") -> Fault | None:
        """The rule for this request (its count goes down by one), or None."""
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path, asked):
                    if fault.kind != "corrupt":  # that one counts only answers that held its byte
                        fault.times -= 1 if fault.times > 0 else 0
                    return fault
        return None

    def used(self, fault: Fault) -> None:
        """Count one use of a rule that counts only what it changed."""
        with self._lock:
            fault.times -= 1 if fault.times > 0 else 0

    def record(self, entry: Logged) -> None:
        with self._lock:
            self.log.append(entry)

    def requests(self, method: str = "*", path: str = "") -> list[Logged]:
        """The logged requests with this method whose path matches ``path``."""
        with self._lock:
            return [e for e in self.log if method in ("*", e.method) and re.search(path, e.path)]

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a client that gave up (timeout, dropped): expected
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, *args) -> None:  # the proxy keeps its own log
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve()

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        asked = self.headers.get("Range", "")
        fault = self.owner.take(self.command, self.path, asked)
        entry = Logged(self.command, self.path, 0, asked, time.monotonic(), fault.kind if fault else "")
        self.owner.record(entry)
        if fault is not None and fault.kind == "status":
            entry.status = fault.status
            return self._answer_status(fault)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        status, reason, headers, body = self._forward(ranged=fault is None or not fault.ignore_range)
        entry.status = status
        if fault is not None and fault.kind == "corrupt":
            body, done = _corrupt(body, fault.offset, fault.xor, headers)
            if done:
                self.owner.used(fault)
            else:
                entry.fault = ""
        self.send_response(status, reason)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if self.command != "HEAD" else _length(headers, body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault is not None and fault.kind == "drop":
            self.wfile.write(body[:fault.after_bytes])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        stalls = fault is not None and (fault.kind == "stall" or fault.kind == "corrupt" and fault.seconds > 0)
        stall = fault.after_bytes if stalls else -1
        for at in range(0, len(body), _PIECE):
            end = min(at + _PIECE, len(body))
            try:
                if at <= stall < end:
                    self.wfile.write(body[at:stall])
                    self.wfile.flush()
                    time.sleep(fault.seconds)
                    at = stall
                self.wfile.write(body[at:end])
            except OSError:  # the client hung up
                self.close_connection = True
                return
            entry.sent = end

    def _answer_status(self, fault: Fault) -> None:
        body = b'{"error": "injected fault"}' if self.command != "HEAD" else b""
        self.send_response(fault.status)
        if fault.retry_after is not None:
            self.send_header("Retry-After", str(fault.retry_after))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, *, ranged: bool = True) -> tuple[int, str, list[tuple[str, str]], bytes]:
        up = urlsplit(self.owner.upstream)
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP and (ranged or k.lower() != "range")}
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
        try:
            conn.request(self.command, self.path, body=data, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            out = [(k, v.replace(self.owner.upstream, self.owner.endpoint)) for k, v in resp.getheaders()
                   if k.lower() not in _HOP]
            if self.command == "HEAD":
                out.append(("X-Upstream-Length", resp.getheader("Content-Length") or ""))
            return resp.status, resp.reason, out, body
        finally:
            conn.close()


def _length(headers: list[tuple[str, str]], body: bytes) -> str:
    return next((v for k, v in headers if k == "X-Upstream-Length"), str(len(body)))


def _corrupt(body: bytes, offset: int, xor: int, headers: list[tuple[str, str]]) -> tuple[bytes, bool]:
    """``body`` with the file's byte ``offset`` XORed with ``xor`` where the answer covers it, and whether it did."""
    start = 0
    rng = next((v for k, v in headers if k.lower() == "content-range"), "")
    m = re.match(r"bytes (\d+)-", rng)
    if m:
        start = int(m[1])
    at = offset - start
    if not 0 <= at < len(body):
        return body, False
    return body[:at] + bytes([body[at] ^ xor]) + body[at + 1:], True
