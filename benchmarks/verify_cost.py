"""What checking every download against the hub's digest costs, beside not checking it.

1. **hashing speed** on this machine: SHA256 (LFS files) and the git blob id (small files) of a file in the page
   cache, in GB/s (``helpers.hub.integrity.hash_file``);
2. **a download**: a repo of ``--shards`` files of ``--shard-mb`` MB of random bytes, fetched by
   ``helpers.hub.resolve_model`` into an empty cache, with ``HELPERS_VERIFY_SHA256=0`` and with the check on (each
   file hashed while the others download), beside "download, then hash every file" (the separate pass the overlap
   avoids); best of ``--repeat``, alternating. The files are served by a small hub stand-in in this script (the
   listing, HEAD and ranged GET the way huggingface.co answers them, from files on disk, in its own process) at
   each ``--rates`` MB/s,
   shared by all connections, like a network link (0: as fast as loopback goes); the tests' hub twin (olah) is
   too slow for this, about 15 MB/s;
3. **an older cache**: the same files already downloaded unchecked, then resolved with the check on: the one
   verification pass such a cache gets (afterwards the files are recorded as verified and not hashed again).

Not part of the test suite; needs about 2 x shards x shard-mb of disk in ``--workdir``::

    .venv/bin/python benchmarks/verify_cost.py [--shards 4] [--shard-mb 256] [--rates 100 400 0] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REPO, COMMIT = "bench/random-shards", "c0ffee" + "0" * 34
GB = 1e9


class Link:
    """A shared byte budget of ``rate`` bytes per second (0: unlimited), as one network link.

    A token bucket ``burst`` seconds deep: a sender that fell behind (descheduled, a slow write) may catch up by that
    much, as a link's queue keeps the line busy meanwhile, so its long-run rate is ``rate``; without the depth each
    delay of the sending thread would be lost from the link, which a CPU-busy machine would then be charged for.
    """

    def __init__(self, rate: float, burst: float = 0.1) -> None:
        self.rate, self.burst, self.lock, self.next = rate, burst, threading.Lock(), time.monotonic()

    def take(self, n: int) -> None:
        if not self.rate:
            return
        with self.lock:
            now = time.monotonic()
            self.next = max(self.next, now - self.burst) + n / self.rate
            wait = self.next - now
        time.sleep(max(0.0, wait))


def hub_server(folder: Path, files: dict[str, dict], link: Link) -> ThreadingHTTPServer:
    """Serve ``folder`` as repo :data:`REPO` at commit :data:`COMMIT`: the tree listing, HEAD, GET with Range."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _head(self, status: int, headers: dict) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, str(v))
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._serve(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(body=False)

        def _serve(self, *, body: bool) -> None:
            path = self.path.split("?")[0].rstrip("/")
            if path == f"/api/models/{REPO}/tree/main":
                data = json.dumps([{"type": "file", "path": n, "size": f["size"], "oid": f["oid"],
                                    **({"lfs": {"oid": f["sha256"], "size": f["size"], "pointerSize": 134}}
                                       if f["sha256"] else {})} for n, f in files.items()]).encode()
                self._head(200, {"Content-Type": "application/json", "Content-Length": len(data)})
                return self.wfile.write(data) if body else None
            name = path.removeprefix(f"/{REPO}/resolve/main/").removeprefix(f"/{REPO}/resolve/{COMMIT}/")
            if name not in files:
                self._head(404, {"Content-Length": 0, "X-Error-Code": "EntryNotFound"})
                return None
            f, size = files[name], files[name]["size"]
            start = int(self.headers.get("Range", "bytes=0-").split("=")[1].split("-")[0] or 0)
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{f["oid"]}"', "Content-Length": size - start,
                       "Accept-Ranges": "bytes"}
            if f["sha256"]:
                headers.update({"X-Linked-Etag": f'"{f["sha256"]}"', "X-Linked-Size": size})
            if start:
                headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
            self._head(206 if start else 200, headers)
            if body:
                with open(folder / name, "rb") as src:
                    src.seek(start)
                    while chunk := src.read(1 << 20):
                        link.take(len(chunk))
                        self.wfile.write(chunk)
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


def _serve_in_child(folder: Path, files: dict[str, dict], rate: float, ports) -> None:
    server = hub_server(folder, files, Link(rate))
    ports.put(server.server_address[1])
    server.serve_forever()


def start_hub(folder: Path, files: dict[str, dict], rate: float):
    """:func:`hub_server` in a child process (as a real server is: not competing for this process's GIL); returns
    ``(process, port)``."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    ports = ctx.Queue()
    proc = ctx.Process(target=_serve_in_child, args=(folder, files, rate, ports), daemon=True)
    proc.start()
    return proc, ports.get(timeout=30)


def make_repo(folder: Path, shards: int, shard_mb: int) -> dict[str, dict]:
    """Random shards (LFS files, as weights are) and a small config (a git file), with their digests."""
    from helpers.hub.integrity import hash_file

    folder.mkdir(parents=True, exist_ok=True)
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    for name in names:
        path = folder / name
        if not path.is_file() or path.stat().st_size != shard_mb << 20:
            with open(path, "wb") as f:
                for _ in range(shard_mb):
                    f.write(os.urandom(1 << 20))
    (folder / "config.json").write_text('{"model_type": "llama"}\n')
    return {n: {"size": (folder / n).stat().st_size, "oid": hash_file(folder / n, "git-sha1"),
                "sha256": hash_file(folder / n) if n.endswith(".safetensors") else ""}
            for n in [*names, "config.json"]}


def hash_speed(path: Path) -> dict[str, float]:
    """GB/s of each digest over ``path`` (read once first, so it is in the page cache)."""
    from helpers.hub.integrity import hash_file

    size = path.stat().st_size
    hash_file(path)
    speeds = {}
    for algo in ("sha256", "git-sha1"):
        t0 = time.perf_counter()
        hash_file(path, algo)
        speeds[algo] = size / GB / (time.perf_counter() - t0)
    return speeds


def resolve(home: Path, *, verify: bool, fresh: bool = True) -> float:
    """Seconds to resolve the repo (into an empty cache at ``home`` when ``fresh``)."""
    from helpers.hub import resolve_model

    if fresh:
        shutil.rmtree(home, ignore_errors=True)
    os.environ["HF_HOME"] = str(home)
    os.environ["HELPERS_VERIFY_SHA256"] = "1" if verify else "0"
    t0 = time.perf_counter()
    resolve_model(REPO)
    return time.perf_counter() - t0


def then_hash(home: Path) -> float:
    """Seconds to download unchecked and then hash every file, one after the other (the separate pass)."""
    from helpers.hub.integrity import hash_file

    t0 = time.perf_counter()
    resolve(home, verify=False)
    for blob in (home / "hub").glob("models--*/blobs/*"):
        hash_file(blob, "sha256" if len(blob.name) == 64 else "git-sha1")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--shard-mb", type=int, default=256)
    p.add_argument("--rates", type=float, nargs="+", default=[100, 400, 0], help="MB/s of the link (0: unlimited)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workdir", default=None)
    args = p.parse_args()
    work = Path(args.workdir or Path(tempfile.gettempdir()) / "cllama-verify-cost")
    for name in ("HF_HUB_OFFLINE", "HELPERS_LOCAL_MODELS"):
        os.environ.pop(name, None)
    os.environ.update({"HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "127.0.0.1,localhost"})
    files = make_repo(work / "repo", args.shards, args.shard_mb)
    total = sum(f["size"] for f in files.values())
    speeds = hash_speed(work / "repo" / next(iter(files)))
    print(f"hashing on this machine ({os.cpu_count()} cores), file in the page cache: "
          + ", ".join(f"{algo} {speed:.2f} GB/s" for algo, speed in speeds.items()))
    print(f"\n{total / GB:.2f} GB in {args.shards} files + config.json, best of {args.repeat} (seconds; GB/s):")
    print(f"{'link':>10} {'unchecked':>17} {'checked (overlap)':>19} {'cost':>14} {'then hash':>17} {'older cache':>12}")
    for rate in args.rates:
        server, port = start_hub(work / "repo", files, rate * 1e6)
        os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
        try:
            runs: dict[str, list[float]] = {"off": [], "on": [], "then": []}
            for _ in range(args.repeat):
                runs["off"].append(resolve(work / "home", verify=False))
                runs["on"].append(resolve(work / "home", verify=True))
                runs["then"].append(then_hash(work / "home"))
            resolve(work / "home", verify=False)
            older = resolve(work / "home", verify=True, fresh=False)
        finally:
            server.terminate()
            server.join()
            shutil.rmtree(work / "home", ignore_errors=True)
        off, on, then = (min(runs[k]) for k in ("off", "on", "then"))
        label = f"{rate:.0f} MB/s" if rate else "loopback"
        print(f"{label:>10} {off:7.2f} ({total / GB / off:5.2f}) {on:9.2f} ({total / GB / on:5.2f}) "
              f"{on - off:+6.2f} ({(on - off) / off:+4.0%}) {then:7.2f} ({total / GB / then:5.2f}) {older:12.2f}")


if __name__ == "__main__":
    main()
