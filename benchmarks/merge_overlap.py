"""Time to the first GGUF from the hub: the merge that downloads and merges at once, beside the download and the
merge taken one after the other.

A 7B-wide synthetic base (``merge_memory.py``'s builder: the embeddings, one shard per layer and the head, so
``--layers`` + 2 shards) and its LoRA (r=64 on the seven projections, embeddings and head expanded to 55296 rows)
are served under hub ids by the hub twin (olah) behind :class:`CdnProxy`: a link of ``rate`` bytes per second
shared by every connection, answering ``Range`` requests for the weights from the LFS objects as the hub's CDN
does (olah itself answers 200 with the whole file). Each command runs in its own process, into an empty hub cache:

- **download**: ``huggingface_hub.snapshot_download`` of both repos;
- **local merge** (once, no link involved): ``python -m helpers merge --base <folder> --lora <folder> --outtype
  q4_k_m``;
- **serial**: the two added up (what taking turns costs);
- **overlapped**: ``python -m helpers merge --base <hub id> --lora <hub id> --outtype q4_k_m``;
- **low-disk**: the same with ``--low-disk``: its peak disk (hub cache + output folder, polled every 50 ms)
  beside the budget the planner states (``python -m helpers plan --json``: ``peak_disk_low_disk``).

Both merges' tensors are compared with the local merge's. By default two rates: one where the download takes
about as long as the local merge (total bytes / local merge time: the hardest case, serial is 2x) and half of it
(the download dominates); ``--rates`` (MB/s) overrides. Each hub merge runs with ``HELPERS_TIMINGS=1``; its
per-phase lines are kept in ``--workdir``/logs. Not part of the test suite; needs about 8 GB in ``--workdir``::

    .venv/bin/python benchmarks/merge_overlap.py [--layers 3] [--rates 60 30]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from verify_cost import Link  # noqa: E402 - benchmarks/ is on the path only now

BASE_ID, LORA_ID = "bench/wide-7b-base", "bench/wide-7b-lora"
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/[^/]+/(?P<file>[^?]+)")
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-range", "accept-ranges",
        "date", "server"}
PIECE = 1 << 20


# ------------------------------------------------------------------------------------------------ the link
class CdnProxy:
    """A link of ``rate`` bytes/s (0: unlimited) to the twin at ``upstream``: a weight file's bytes come from its LFS
    object in ``mirror`` with the headers olah gives it (asked once per file, as a CDN's edge keeps them: olah
    takes about a second per HEAD of a large file), a ``Range`` answered 206 as the hub's CDN does; anything else is
    forwarded to olah."""

    def __init__(self, upstream: str, mirror: Path, rate: float) -> None:
        self.upstream, self.mirror, self.link = upstream, mirror, Link(rate)
        self.heads: dict[str, tuple[int, list[tuple[str, str]]]] = {}  # path -> olah's status and headers
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self.server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def lfs_object(self, repo: str, name: str) -> Path | None:
        """The LFS object a repo file's pointer names, or None for a file kept in git."""
        pointer = self.mirror / "models" / repo / name
        if not pointer.is_file() or pointer.stat().st_size > 1024:
            return None
        m = re.search(r"oid sha256:([0-9a-f]{64})", pointer.read_text(errors="replace"))
        if m is None:
            return None
        oid = m[1]
        return self.mirror / "models" / repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a client that hung up (a header read): expected
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: CdnProxy

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve()

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve()

    def _upstream(self, method: str) -> tuple[int, list[tuple[str, str]], bytes, int]:
        """Olah's answer to this request by ``method``: status, headers, body and the length it stated."""
        up = urlsplit(self.owner.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP and k.lower() != "range"}
            conn.request(method, self.path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            out = [(k, v.replace(self.owner.upstream, self.owner.endpoint)) for k, v in resp.getheaders()
                   if k.lower() not in _HOP]
            return resp.status, out, body, int(resp.getheader("Content-Length") or len(body))
        finally:
            conn.close()

    def _serve(self) -> None:
        m = _RESOLVE.match(self.path)
        blob = self.owner.lfs_object(m["repo"], m["file"]) if m else None
        if blob is None:
            status, headers, body, length = self._upstream(self.command)
            self._send(status, headers, length, [body] if self.command == "GET" else [])
            return
        key = self.path.split("?")[0]
        if key not in self.owner.heads:
            self.owner.heads[key] = self._upstream("HEAD")[:2]
        status, headers = self.owner.heads[key][0], list(self.owner.heads[key][1])
        size = blob.stat().st_size
        start, end = 0, size - 1
        asked = re.match(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if status == 200 and asked and asked[1]:
            start, end = int(asked[1]), min(int(asked[2]) if asked[2] else size - 1, size - 1)
            status = 206
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        headers.append(("Accept-Ranges", "bytes"))
        self._send(status, headers, end - start + 1, self._pieces(blob, start, end) if self.command == "GET" else [])

    def _pieces(self, blob: Path, start: int, end: int):
        with open(blob, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                piece = f.read(min(PIECE, left))
                self.owner.link.take(len(piece))
                left -= len(piece)
                yield piece

    def _send(self, status: int, headers: list[tuple[str, str]], length: int, body) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        try:
            for piece in body:
                self.wfile.write(piece)
        except OSError:  # the client hung up (a header read closes early)
            self.close_connection = True


# ------------------------------------------------------------------------------------------------ measuring
class DiskPeak:
    """The largest total size of the files under ``folders`` seen while running (polled every 50 ms)."""

    def __init__(self, *folders: Path) -> None:
        self.folders, self.peak, self._stop = folders, 0, threading.Event()
        self.at_peak: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def files(self) -> dict[str, int]:
        """``{path: bytes}`` of the regular files under the folders now (links not counted)."""
        found = {}
        for folder in self.folders:
            for root, _dirs, files in os.walk(folder):
                for f in files:
                    path = os.path.join(root, f)
                    try:
                        if not os.path.islink(path):
                            found[path] = os.lstat(path).st_size
                    except OSError:
                        continue
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            files = self.files()
            if sum(files.values()) > self.peak:
                self.peak, self.at_peak = sum(files.values()), files
            time.sleep(0.05)

    def __enter__(self) -> DiskPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds so far: this process (the link: :class:`CdnProxy`, and the disk poller) and its finished
    children (the commands :func:`timed` ran)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Run ``cmd`` (its output into ``log``) and return its wall time; exit when it fails."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"failed ({rc}): {' '.join(map(str, cmd))}\n{log.read_text()[-3000:]}")
    return wall


def hub_env(endpoint: str, home: Path) -> dict[str, str]:
    """A fresh runtime downloading from ``endpoint`` into ``home``."""
    import hubtwin

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    return {"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "HELPERS_LOCAL_MODELS": "",
            "NO_PROXY": hubtwin.no_proxy_for_loopback(), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HELPERS_NO_PROGRESS": "1", "TOKENIZERS_PARALLELISM": "false", "HELPERS_TIMINGS": "1"}


def same_tensors(a: Path, b: Path) -> bool:
    """True when two GGUF files hold the same tensors, byte for byte."""
    import gguf

    ta = {t.name: t for t in gguf.GGUFReader(str(a)).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(str(b)).tensors}
    return ta.keys() == tb.keys() and all(bytes(ta[k].data) == bytes(tb[k].data) for k in ta)


def serve(work: Path, layers: int):
    """Build (once) the base and LoRA, the twin's repos of them, and start olah; returns ``(twin, base, lora)``."""
    import hubtwin
    import merge_memory

    tok_base, tok_lora = merge_memory.tokenizers(work)
    base, lora = merge_memory.build_inputs(work, layers, tok_base, tok_lora)

    def stage(folder: Path) -> dict[str, Path]:
        repos = {}
        for hub_id, src in ((BASE_ID, base), (LORA_ID, lora)):
            repos[hub_id] = dst = folder / hub_id
            dst.mkdir(parents=True)
            for f in src.iterdir():
                if f.name != "done":
                    os.link(f, dst / f.name)
        return repos

    mirror = work / f"twin-L{layers}"
    hubtwin.build_mirror_from(mirror, stage)
    (work / "olah").mkdir(exist_ok=True)
    return hubtwin.start(mirror, work / "olah"), base, lora


# ------------------------------------------------------------------------------------------------ the runs
def merge_cmd(base: str, lora: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "helpers", "merge", "--base", base, "--lora", lora, "--out", str(out),
            "--format", "gguf", "--outtype", "q4_k_m", *extra]


def budget(proxy: CdnProxy, home: Path, out: Path, logs: Path) -> tuple[int, int]:
    """The planner's low-disk peak and shards held at once, for this merge from the hub."""
    env = hub_env(proxy.endpoint, home)
    cmd = [sys.executable, "-m", "helpers", "plan", "--base", BASE_ID, "--lora", LORA_ID, "--outtype", "q4_k_m",
           "--out", str(out), "--json"]
    timed(cmd, env, logs / "plan.json")
    text = (logs / "plan.json").read_text()
    data = json.loads(text[text.index("{"):])
    return data["peak_disk_low_disk"], data["low_disk_shards_at_once"]


def warm_heads(proxy: CdnProxy, repos: dict[str, list[str]]) -> None:
    """Ask the proxy once for the headers of every weight file, so that no measured run pays olah's HEADs."""
    import urllib.request

    for repo, names in repos.items():
        for name in names:
            if proxy.lfs_object(repo, name) is not None:
                urllib.request.urlopen(urllib.request.Request(f"{proxy.endpoint}/{repo}/resolve/main/{name}",
                                                              method="HEAD")).read()


def at_rate(twin, rate_mb: float, work: Path, local: tuple[float, Path], logs: Path) -> dict:
    """Every hub figure at one rate."""
    proxy = CdnProxy(twin.endpoint, twin.mirror, rate_mb * 1e6)
    warm_heads(proxy, twin.repos)
    home, out = work / "home", work / "out"
    row = {"rate": rate_mb}
    try:
        script = ("import sys; from huggingface_hub import snapshot_download as s; "
                  f"[s(r) for r in ({BASE_ID!r}, {LORA_ID!r})]")
        before = cpu_seconds()[1]
        row["download"] = timed([sys.executable, "-c", script], hub_env(proxy.endpoint, home),
                                 logs / f"download-{rate_mb:g}.log")
        row["download cpu"] = cpu_seconds()[1] - before
        for mode, extra in (("overlapped", ()), ("low-disk", ("--low-disk",))):
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            env = hub_env(proxy.endpoint, home)
            before = cpu_seconds()
            with DiskPeak(home, out) as disk:
                row[mode] = timed(merge_cmd(BASE_ID, LORA_ID, out / "m.gguf", *extra), env,
                                  logs / f"{mode}-{rate_mb:g}.log")
            (own0, kids0), (own1, kids1) = before, cpu_seconds()
            row[f"{mode} cpu"], row[f"{mode} link cpu"] = kids1 - kids0, own1 - own0
            row[f"{mode} disk"] = disk.peak
            (logs / f"{mode}-{rate_mb:g}-peak.json").write_text(json.dumps(disk.at_peak, indent=1))
            row[f"{mode} same"] = same_tensors(out / "m.gguf", local[1])
        row["budget"], row["shards"] = budget(proxy, home, out / "m.gguf", logs)
    finally:
        proxy.stop()
    return row


def table(rows: list[dict], local: float, total: int, first: int) -> str:
    """The figures side by side; ``first``: the bytes the merge's first tensor needs (the LoRA's head, which it
    merges first), before which it can only wait."""
    gb = 1e9
    lines = ["link MB/s | download | local merge | serial | first tensor's bytes in | overlapped (x max) | "
             "low-disk (x max) | low-disk peak disk / budget | tensors = local",
             "---|---|---|---|---|---|---|---|---"]
    for r in rows:
        top = max(r["download"], local)
        wait = first / (r["rate"] * 1e6)
        lines.append(
            f"{r['rate']:g} | {r['download']:.0f} s | {local:.0f} s | {r['download'] + local:.0f} s | {wait:.0f} s | "
            f"{r['overlapped']:.0f} s ({r['overlapped'] / top:.2f}x) | {r['low-disk']:.0f} s "
            f"({r['low-disk'] / top:.2f}x) | {r['low-disk disk'] / gb:.2f} / {r['budget'] / gb:.2f} GB "
            f"({r['shards']} shards at once) | {r['overlapped same'] and r['low-disk same']}")
    return "\n".join(lines) + f"\n(total download {total / gb:.2f} GB)"


def first_tensor_bytes(lora: Path) -> int:
    """The bytes of the LoRA's weights file up to the end of its first tensor (the header included)."""
    raw = (lora / "adapter_model.safetensors").open("rb")
    with raw:
        n = int.from_bytes(raw.read(8), "little")
        header = json.loads(raw.read(n))
    header.pop("__metadata__", None)
    return 8 + n + min(end for _, end in (v["data_offsets"] for v in header.values()) if end > 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=3, help="layers of the base (shards: layers + 2)")
    ap.add_argument("--rates", type=float, nargs="+", help="link rates in MB/s (default: download = local merge, "
                                                           "and half that rate)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/overlap-bench"))
    args = ap.parse_args()
    work, logs = args.workdir, args.workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    twin, base, lora = serve(work, args.layers)
    try:
        total = sum(f.stat().st_size for d in (base, lora) for f in d.iterdir() if f.name != "done")
        shutil.rmtree(work / "local", ignore_errors=True)
        (work / "local").mkdir()
        local_out = work / "local" / "m.gguf"
        env = {"HELPERS_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        before = cpu_seconds()[1]
        local = timed(merge_cmd(str(base), str(lora), local_out), env, logs / "local.log")
        local_cpu = cpu_seconds()[1] - before
        print(f"local merge {local:.1f} s ({local_cpu:.0f} CPU s); {total / 1e9:.2f} GB to download", flush=True)
        rates = args.rates or [round(total / local / 1e6, 1), round(total / local / 2e6, 1)]
        rows = []
        for rate in rates:
            rows.append(at_rate(twin, rate, work, (local, local_out), logs))
            print(json.dumps(rows[-1]), flush=True)
        print(table(rows, local, total, first_tensor_bytes(lora)))
        for r in rows:
            print(f"CPU seconds at {r['rate']:g} MB/s: the download alone {r['download cpu']:.0f}; the local merge "
                  f"{local_cpu:.0f}; the overlapped merge's process "
                  f"{r['overlapped cpu']:.0f} (its download included) and the link simulator {r['overlapped link cpu']:.0f}; "
                  f"low-disk {r['low-disk cpu']:.0f} and {r['low-disk link cpu']:.0f}")
    finally:
        twin.stop()


if __name__ == "__main__":
    main()
