"""One-pass merge -> Q4_K_M beside the two-step path (merge -> F16 GGUF -> llama.cpp's quantizer).

The synthetic inputs are those of ``merge_memory.py``: a base with 7B-wide tensors (hidden 4096, FFN 11008,
32 heads, vocabulary 32000) and a Chinese-LLaMA-2-style LoRA (r=64 on the 7 projections, embeddings and
lm_head expanded to 55296 rows), ``--layers`` deep (3 by default), built in ``--workdir``. Each command runs
in its own child process; for each the table gives wall time, peak RSS (``wait4``) and the bytes the
process sent to storage (``write_bytes`` of ``/proc/<pid>/io``, read before the child is reaped):

* one pass:  ``python -m helpers merge --format gguf --outtype q4_k_m``;
* two steps: ``python -m helpers merge --format gguf --outtype f16``, then ``helpers.gguf.quantize`` (llama.cpp's
  ``llama_model_quantize``) to q4_k_m, both on every core.

The two Q4_K_M files are then compared byte for byte. With ``--repeat N`` the two paths alternate N times and
the best run of each is shown (on a shared machine). Then, with ``--hub`` (on by default), the same inputs are
served by the tests' hub twin (olah on 127.0.0.1, ``tests/hubtwin.py``) under hub ids, and the one-pass merge
runs from the hub into an empty cache twice: downloading the base whole, and in low-disk mode (one shard at a
time, each deleted once merged); a thread samples the bytes under the cache and the output folder, for the
peak disk of each against the target "largest shard + LoRA + output". The generated inputs stay in
``--workdir`` for the next run. Not part of the test suite; needs about 10 GB of disk for 3 layers:

    .venv/bin/python benchmarks/merge_quant.py [--layers 3] [--qtype q4_k_m] [--repeat 3] [--no-hub] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from merge_memory import build_inputs, tokenizers  # noqa: E402 - the same synthetic 7B-wide model and LoRA

# Runs one command as its child, waits without reaping it, reads its I/O counters, then reaps it for rusage.
RUNNER = r"""
import json, os, subprocess, sys
p = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL)
os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
try:
    io = dict(line.split(": ") for line in open(f"/proc/{p.pid}/io").read().splitlines())
except OSError:
    io = {}
_, status, usage = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss,
               "cpu": usage.ru_utime + usage.ru_stime,
               "write_bytes": int(io.get("write_bytes", -1)), "wchar": int(io.get("wchar", -1))}, f)
"""
QUANTIZE = ("import sys; from helpers.gguf import QuantizeOptions, quantize; "
            "quantize(sys.argv[1], sys.argv[2], QuantizeOptions(qtype=sys.argv[3], modelfile=False))")


def measure(cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` in a child process: wall seconds, peak RSS bytes, bytes sent to storage."""
    with tempfile.NamedTemporaryFile(suffix=".json") as res:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", RUNNER, res.name, *cmd], env={**os.environ, **env},
                              stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
        info = json.loads(Path(res.name).read_text() or "{}")
    if proc.returncode != 0 or info.get("rc") != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr.decode(errors='replace')[-3000:]}")
    return {"wall": wall, "cpu": info["cpu"], "rss": info["maxrss_kb"] * 1024, "written": info["write_bytes"]}


def data_digest(path: Path, start: int) -> str:
    """SHA256 of ``path`` from byte ``start`` (the tensor data section) to its end."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def same_quantization(a: Path, b: Path) -> bool:
    """The same tensors (names, types, shapes, order) and the same data section byte for byte, and the same
    metadata but for the merge's job record (``helpers.merge.job``), which names each file's own options."""
    import gguf

    from helpers.merge.job import JOB_KEY

    def layout(path: Path) -> tuple[list, dict, str]:
        r = gguf.GGUFReader(str(path))
        fields = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.") and k != JOB_KEY}
        start = min(t.data_offset for t in r.tensors)
        return [(t.name, t.tensor_type, list(t.shape)) for t in r.tensors], fields, data_digest(path, start)

    return layout(a) == layout(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--qtype", default="q4_k_m")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/merge-quant-bench"))
    ap.add_argument("--repeat", type=int, default=1, help="alternate the two paths this many times, keep the best")
    ap.add_argument("--keep", action="store_true", help="keep the outputs (the generated inputs are always kept)")
    ap.add_argument("--no-hub", dest="hub", action="store_false", help="skip the low-disk run through the hub twin")
    args = ap.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    tok_base, tok_lora = tokenizers(work)
    print(f"building the {args.layers}-layer 7B-wide base and its r=64 LoRA in {work} ...", flush=True)
    base, lora = build_inputs(work, args.layers, tok_base, tok_lora)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    py, env = sys.executable, {"HELPERS_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    merge = [py, "-m", "helpers", "merge", "--base", str(base), "--lora", str(lora), "--format", "gguf",
             "--no-sha256", "--no-progress"]

    def one_pass() -> dict:
        r = measure([*merge, "--outtype", args.qtype, "--out", str(out / "one.gguf")], env)
        return {**r, "size": (out / "one.gguf").stat().st_size}

    def two_steps() -> tuple[dict, dict]:
        (out / "two.gguf").unlink(missing_ok=True)
        r1 = measure([*merge, "--outtype", "f16", "--out", str(out / "f16.gguf"), "--overwrite"], env)
        r1["size"] = (out / "f16.gguf").stat().st_size
        r2 = measure([py, "-c", QUANTIZE, str(out / "f16.gguf"), str(out / "two.gguf"), args.qtype], env)
        r2["size"] = (out / "two.gguf").stat().st_size
        return r1, r2

    runs: list[tuple[dict, dict, dict]] = []
    for i in range(args.repeat):  # alternate, so that a busy moment of a shared machine hits both
        print(f"  run {i + 1}/{args.repeat}: one pass, then two steps ...", flush=True)
        (out / "one.gguf").unlink(missing_ok=True)
        one = one_pass()
        step1, step2 = two_steps()
        runs.append((one, step1, step2))
        print(f"    one pass {one['wall']:.1f}s, two steps {step1['wall']:.1f}s + {step2['wall']:.1f}s", flush=True)
    same = same_quantization(out / "one.gguf", out / "two.gguf")
    one = min((r[0] for r in runs), key=lambda r: r["wall"])
    step1, step2 = min((r[1:] for r in runs), key=lambda r: r[0]["wall"] + r[1]["wall"])
    two = {"wall": step1["wall"] + step2["wall"], "cpu": step1["cpu"] + step2["cpu"],
           "rss": max(step1["rss"], step2["rss"]), "written": step1["written"] + step2["written"],
           "size": step1["size"] + step2["size"]}

    gb = 1 << 30
    print(f"\n{args.layers} layers, 7B-wide (hidden 4096, FFN 11008), vocabulary 32000 -> 55296, LoRA r=64, "
          f"{os.cpu_count()} CPUs")
    print(f"best of {args.repeat} run(s) each")
    print(f"{'variant':36s} {'wall':>8s} {'CPU':>8s} {'peak RSS':>10s} {'written':>10s} {'files':>10s}")
    rows = [(f"one pass: merge -> {args.qtype}", one), ("two steps: merge -> f16", step1),
            (f"two steps: quantize -> {args.qtype}", step2), ("two steps: total", two)]
    for name, r in rows:
        print(f"{name:36s} {r['wall']:7.1f}s {r['cpu']:7.1f}s {r['rss'] / gb:7.2f} GB {r['written'] / gb:7.2f} GB "
              f"{r['size'] / gb:7.2f} GB")
    print(f"\none pass / two steps: wall {one['wall'] / two['wall']:.2f} (target <= 0.9), "
          f"bytes written {one['written'] / two['written']:.2f} (target <= 0.4), "
          f"peak RSS {one['rss'] / two['rss']:.2f}")
    print(f"the two {args.qtype} files hold {'identical' if same else 'DIFFERENT'} tensors and metadata "
          "(but for each merge's own job record)")
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    if args.hub:
        low_disk(work, base, lora, args.qtype, args.layers)


def apparent(*folders: Path) -> int:
    """Bytes of the regular files under ``folders`` (symbolic links not counted twice)."""
    total = 0
    for folder in folders:
        for p in folder.rglob("*"):
            try:
                if p.is_file() and not p.is_symlink():
                    total += p.stat().st_size
            except FileNotFoundError:  # renamed or deleted while listed
                pass
    return total


def peak_disk(cmd: list[str], env: dict, folders: list[Path]) -> tuple[int, float]:
    """Run ``cmd``; the peak of the bytes under ``folders`` while it runs (sampled every 10 ms), and its wall time."""
    import threading

    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], apparent(*folders))
            time.sleep(0.01)

    thread = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    thread.start()
    proc = subprocess.run(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done.set()
    thread.join()
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr.decode(errors='replace')[-3000:]}")
    return max(peak[0], apparent(*folders)), time.perf_counter() - t0


def low_disk(work: Path, base: Path, lora: Path, qtype: str, layers: int) -> None:
    """The one-pass merge from the hub twin: the base downloaded whole vs one shard at a time."""
    sys.path.insert(0, str(ROOT / "tests"))
    import hubtwin

    def stage(folder: Path) -> dict[str, Path]:
        return {"bench/llama-7b-wide": base, "bench/chinese-lora-7b-wide": lora}

    print(f"\nserving the inputs from the hub twin (building the mirror in {work / 'mirror'} once) ...", flush=True)
    hubtwin.build_mirror_from(work / f"mirror-L{layers}", stage)
    twin = hubtwin.start(work / f"mirror-L{layers}", work / "twin")
    gb = 1 << 30
    try:
        shards = sorted(f.stat().st_size for f in base.glob("*.safetensors"))
        lora_bytes = sum(f.stat().st_size for f in lora.iterdir() if f.is_file())
        rows = []
        for mode in ("--no-low-disk", "--low-disk"):
            home, out = work / "hf-home", work / "hub-out"
            for d in (home, out):
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir()
            env = {"HF_ENDPOINT": twin.endpoint, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0",
                   "NO_PROXY": hubtwin.no_proxy_for_loopback(), "HELPERS_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT),
                   # the twin reads each 1 GB blob out of git before it answers: more than the hub's 10 s
                   "HF_HUB_DOWNLOAD_TIMEOUT": "600", "HF_HUB_ETAG_TIMEOUT": "600"}
            cmd = [sys.executable, "-m", "helpers", "merge", "--base", "bench/llama-7b-wide", "--lora",
                   "bench/chinese-lora-7b-wide", "--format", "gguf", "--outtype", qtype, "--no-sha256",
                   "--no-progress", "--out", str(out / "m.gguf"), mode]
            peak, wall = peak_disk(cmd, env, [home, out])
            rows.append((mode, peak, wall, (out / "m.gguf").stat().st_size))
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        twin.stop()
    output = rows[0][3]
    print(f"base {sum(shards) / gb:.2f} GB in {len(shards)} shards (largest {shards[-1] / gb:.2f} GB), "
          f"LoRA {lora_bytes / gb:.2f} GB, output {output / gb:.2f} GB")
    for mode, peak, wall, _ in rows:
        print(f"  merge {mode:14s} peak disk {peak / gb:6.2f} GB, {wall:6.1f}s")
    target = shards[-1] + lora_bytes + output
    print(f"low-disk peak / full download peak: {rows[1][1] / rows[0][1]:.2f}; low-disk peak {rows[1][1] / gb:.2f} GB "
          f"vs largest shard + LoRA + output {target / gb:.2f} GB")


if __name__ == "__main__":
    main()
