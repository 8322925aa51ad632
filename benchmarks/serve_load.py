"""Requests per second and latency of the OpenAI-compatible server (``python -m helpers serve``) under 1, 4 and 16
concurrent clients, on the demo model.

The demo's Chinese-Alpaca-2-7B stand-in (``python -m helpers demo``, built into ``--workdir`` if missing) is converted
to an F16 GGUF and served with :func:`helpers.chat.serve` (its default queue of 16). For each number of clients N,
N threads each send ``--requests`` chat completions back to back (``--max-tokens`` tokens, ``min_tokens`` equal, so
every answer generates as many tokens; every other request streams), over plain HTTP. Printed side by side:
completed requests per second, p50 / p95 latency (request sent to the whole answer read), and 503 answers (none
expected while N <= 1 + the queue). Not part of the test suite::

    .venv/bin/python benchmarks/serve_load.py [--clients 1 4 16] [--requests 20] [--max-tokens 32] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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


def one_request(port: int, *, stream: bool, max_tokens: int) -> tuple[int, float]:
    """``(status, seconds)`` of one chat completion, the whole answer read."""
    body = json.dumps({"messages": [{"role": "user", "content": "用一句话介绍你自己。"}], "max_tokens": max_tokens,
                       "min_tokens": max_tokens, "stream": stream, "temperature": 0.7})
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    return resp.status, time.perf_counter() - t0


def load(port: int, clients: int, requests: int, max_tokens: int) -> dict:
    """Run ``clients`` threads of ``requests`` requests each; requests/s, p50, p95 and 503s."""
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        start.wait()
        for j in range(requests):
            r = one_request(port, stream=(i + j) % 2 == 1, max_tokens=max_tokens)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = sorted(s for status, s in results if status == 200)
    return {"rps": len(ok) / wall, "p50": statistics.median(ok), "p95": ok[min(len(ok) - 1, int(0.95 * len(ok)))],
            "busy": sum(status == 503 for status, _ in results), "other": sum(status not in (200, 503)
                                                                             for status, _ in results)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=20, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--workdir", default=None)
    args = p.parse_args()
    from helpers.chat import serve

    work = Path(args.workdir or Path(tempfile.gettempdir()) / "cllama-serve-load")
    work.mkdir(parents=True, exist_ok=True)
    gguf = demo_gguf(work)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with serve(gguf, port=port, n_ctx=512, log_path=work / "server.log") as server:
        one_request(port, stream=False, max_tokens=4)  # warm up
        rows = [(n, load(port, n, args.requests, args.max_tokens)) for n in args.clients]
    print(f"\n{gguf.name} ({gguf.stat().st_size / 1e6:.1f} MB), {args.max_tokens} tokens per answer, "
          f"{args.requests} requests per client, served at {server.url}")
    print(f"{'clients':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'503':>5} {'other':>6}")
    for n, r in rows:
        print(f"{n:>8} {r['rps']:>8.1f} {r['p50'] * 1e3:>8.1f} {r['p95'] * 1e3:>8.1f} {r['busy']:>5} {r['other']:>6}")


if __name__ == "__main__":
    main()
