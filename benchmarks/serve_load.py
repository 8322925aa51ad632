"""``helpers serve`` against llama-cpp-python's own server (``python -m llama_cpp.server``) on the same GGUF, side by
side in one run: streamed time to first token, tokens per second and p50 / p95 latency for 1, 4 and 16 concurrent
clients, and how long a request waits behind a client that hung up.

The demo's Chinese-Alpaca-2-7B stand-in (``python -m helpers demo``, built into ``--workdir`` if missing) is converted
to an F16 GGUF and served by each server in turn, with the same context and one generation at a time (llama-cpp-python
with ``--interrupt_requests False``, so that a new request does not cut a stream short). For each number of clients N,
N threads each send ``--requests`` streamed chat completions back to back over plain HTTP, every reply exactly
``--max-tokens`` tokens (EOS banned with ``logit_bias``), sampled at temperature 0.7. Figures:

- TTFT p50: request sent to the first chunk with text;
- tok/s: all the replies' tokens over the run's wall time;
- p50 / p95: request sent to the end of the stream (``[DONE]``);
- after hang-up: a client starts a long reply (``--hangup-tokens`` tokens) and disconnects after its first chunk;
  the seconds the next request (``--max-tokens`` tokens) then takes (median of 5);
- 503 / other: answers other than 200 (none expected: 16 clients fit ``helpers serve``'s default queue);
- the greedy ``--greedy-tokens`` reply to 你好, unstreamed and streamed: its second token is a lone ``0xCC`` byte
  (half a character), which made llama-cpp-python's stream re-detokenize the growing text at every token.

Not part of the test suite::

    .venv/bin/python benchmarks/serve_load.py [--clients 1 4 16] [--requests 8] [--max-tokens 32] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_CTX = 2048
HANGUP_WAIT = 60.0  # seconds the request after a hang-up may wait before the figure says "more than"
EOS = 2  # </s> of the demo's Llama-2 vocabulary
MESSAGES = [{"role": "user", "content": "用一句话介绍你自己。"}]
HELLO = [{"role": "user", "content": "你好"}]  # greedy, the demo's reply has a lone 0xCC byte as its second token


def demo_gguf(work: Path) -> Path:
    """The demo's merged Chinese-Alpaca-2-7B stand-in as an F16 GGUF (built once in ``work``)."""
    from helpers.demo.build import build_demo
    from helpers.gguf import convert_hf_to_gguf

    assets, out = work / "demo", work / "chinese-alpaca-2-7b-demo-f16.gguf"
    if not out.is_file():
        if not (assets / "manifest.json").is_file():
            build_demo(assets)
        convert_hf_to_gguf(assets / "chinese-alpaca-2-7b", out, outtype="f16")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, gguf: Path, port: int, log: Path) -> subprocess.Popen:
    """Start ``helpers`` (``python -m helpers serve``) or ``llama-cpp-python`` on ``gguf`` and wait for it."""
    if kind == "helpers":
        cmd = [sys.executable, "-m", "helpers", "serve", "--model", str(gguf), "--port", str(port), "--n-ctx",
               str(N_CTX)]
    else:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port), "--n_ctx",
               str(N_CTX), "--interrupt_requests", "False", "--host", "127.0.0.1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HELPERS_NO_PROGRESS": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v1/models")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"error: the {kind} server did not start (log: {log})")


def body(max_tokens: int, stream: bool = True, *, greedy: bool = False) -> str:
    return json.dumps({"messages": HELLO if greedy else MESSAGES, "max_tokens": max_tokens, "stream": stream,
                       "temperature": 0 if greedy else 0.7, "logit_bias": {str(EOS): -100}})


def streamed(port: int, max_tokens: int, *, greedy: bool = False, timeout: float = 600
             ) -> tuple[int, float, float]:
    """``(status, seconds to the first text, seconds to the end)`` of one streamed chat completion."""
    t0 = time.perf_counter()
    first = None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=body(max_tokens, greedy=greedy),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        for line in resp:
            if time.perf_counter() - t0 > timeout:  # a server may keep the stream open with pings
                raise TimeoutError(f"no answer within {timeout:.0f} s")
            if first is None and line.startswith(b"data: {") and _text(json.loads(line[len(b"data: "):])):
                first = time.perf_counter() - t0
        status = resp.status
    finally:
        conn.close()
    end = time.perf_counter() - t0
    return status, first if first is not None else end, end


def _text(chunk: dict) -> str:
    choices = chunk.get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content") or ""


def unstreamed(port: int, max_tokens: int, *, greedy: bool = False) -> tuple[int, float]:
    """``(completion tokens the server reports, seconds)`` of one unstreamed request of ``max_tokens``."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/v1/chat/completions", body=body(max_tokens, stream=False, greedy=greedy),
                     headers={"Content-Type": "application/json"})
        return json.loads(conn.getresponse().read())["usage"]["completion_tokens"], time.perf_counter() - t0
    finally:
        conn.close()


def load(port: int, clients: int, requests: int, max_tokens: int) -> dict:
    """``clients`` threads of ``requests`` streamed requests each: TTFT p50, tokens/s, p50 and p95 latency, errors."""
    results: list[tuple[int, float, float]] = []
    lock = threading.Lock()
    start_line = threading.Barrier(clients + 1)

    def client() -> None:
        start_line.wait()
        for _ in range(requests):
            r = streamed(port, max_tokens)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    start_line.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r[0] == 200]
    ends = sorted(r[2] for r in ok)
    return {"ttft": statistics.median(r[1] for r in ok), "tps": len(ok) * max_tokens / wall,
            "p50": statistics.median(ends), "p95": ends[min(len(ends) - 1, int(0.95 * len(ends)))],
            "busy": sum(r[0] == 503 for r in results), "other": sum(r[0] not in (200, 503) for r in results)}


def after_hangup(port: int, long_tokens: int, max_tokens: int, tries: int = 5) -> float:
    """Seconds the next request takes after a client hung up on a ``long_tokens`` reply after its first chunk (the
    median of ``tries``; infinite when one waited more than :data:`HANGUP_WAIT` seconds)."""
    times = []
    for _ in range(tries):
        times.append(_after_hangup(port, long_tokens, max_tokens))
        if math.isinf(times[-1]):
            return times[-1]
    return statistics.median(times)


def _after_hangup(port: int, long_tokens: int, max_tokens: int) -> float:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    data = body(long_tokens).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    received = b""
    while b"data: " not in received:
        received += sock.recv(4096)
    sock.close()
    try:
        return streamed(port, max_tokens, timeout=HANGUP_WAIT)[2]
    except TimeoutError:
        return math.inf


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=8, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--hangup-tokens", type=int, default=1500)
    p.add_argument("--greedy-tokens", type=int, default=400)
    p.add_argument("--workdir", default=None)
    args = p.parse_args()
    work = Path(args.workdir or Path(tempfile.gettempdir()) / "cllama-serve-load")
    work.mkdir(parents=True, exist_ok=True)
    gguf = demo_gguf(work)
    rows: dict[str, list] = {}
    checks: dict[str, tuple] = {}
    for kind in ("helpers", "llama-cpp-python"):
        port = free_port()
        proc = start(kind, gguf, port, work / f"{kind}.log")
        try:
            streamed(port, 4)  # warm up
            tokens = unstreamed(port, args.max_tokens)[0]
            rows[kind] = [(n, load(port, n, args.requests, args.max_tokens)) for n in args.clients]
            greedy = unstreamed(port, args.greedy_tokens, greedy=True)[1], \
                streamed(port, args.greedy_tokens, greedy=True)[2]
            # last: a server that goes on with a hung-up client's reply is busy long after
            checks[kind] = (tokens, after_hangup(port, args.hangup_tokens, args.max_tokens), *greedy)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # uvicorn waits for a reply still being generated
                proc.kill()
                proc.wait()
    print(f"\n{gguf.name} ({gguf.stat().st_size / 1e6:.1f} MB), context {N_CTX}, {args.max_tokens} tokens per reply "
          f"(EOS banned), {args.requests} streamed requests per client, temperature 0.7; CPU threads: llama.cpp's "
          f"default")
    print(f"{'server':<18} {'clients':>7} {'TTFT p50 ms':>11} {'tok/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'503':>4} "
          f"{'other':>5}")
    for kind, table in rows.items():
        for n, r in table:
            print(f"{kind:<18} {n:>7} {r['ttft'] * 1e3:>11.1f} {r['tps']:>8.1f} {r['p50'] * 1e3:>8.1f} "
                  f"{r['p95'] * 1e3:>8.1f} {r['busy']:>4} {r['other']:>5}")
    for kind, (tokens, hangup, plain, stream) in checks.items():
        print(f"{kind}: an unstreamed request of max_tokens {args.max_tokens} generated {tokens} tokens; the request "
              f"after a client hung up on a {args.hangup_tokens}-token reply took "
              f"{'more than %.0f s' % HANGUP_WAIT if math.isinf(hangup) else '%.0f ms' % (hangup * 1e3)}; the greedy "
              f"{args.greedy_tokens}-token reply to 你好 (a lone 0xCC byte second) took {plain * 1e3:.0f} ms "
              f"unstreamed, {stream * 1e3:.0f} ms streamed")


if __name__ == "__main__":
    main()
