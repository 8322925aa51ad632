"""Fine-tuning on 1 process or 2 gloo processes on this machine's CPUs: tokens/s and peak RSS per process.

The same job each time (the demo Llama-2 stand-in, PT on the first 40 64-token blocks of the demo corpus, LoRA r 8,
data in file order, the same global batch of 8 blocks, so every epoch ends on a full global batch and the runs
train the same adapter: the last losses agree), run as:

* 1 process, batch 8, 1 thread;
* 1 process, batch 8, 2 threads (the same cores as two processes);
* 2 processes (``torchrun --nproc_per_node 2``, gloo), batch 4 each, 1 thread each.

Tokens/s are the run's own count (all processes' input tokens over the training time); peak RSS is each process's
``getrusage`` high-water mark, as every rank reports it in ``finetune.json``. Not part of the test suite:

    .venv/bin/python benchmarks/ddp_scaling.py --steps 30
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _run(demo: Path, out: Path, *, nproc: int, batch: int, threads: int, steps: int) -> dict:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
                if nproc > 1 else [sys.executable])
    cmd = [*launcher, "-m", "helpers", "finetune", "--base", str(demo / "Llama-2-7b-hf"), "--data",
           str(demo / "data" / "pt_zh.txt"), "--mode", "pt", "--block-size", "64", "--max-samples", "40",
           "--out", str(out), "--lora-r", "8",
           "--lora-alpha", "16", "--lora-dropout", "0", "--no-shuffle", "--batch-size", str(batch), "--grad-accum",
           "1", "--max-steps", str(steps), "--save-steps", str(10 * steps)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT), "HELPERS_NO_PROGRESS": "1"}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    info = json.loads((out / "finetune.json").read_text())
    peaks = [max(s["peak_bytes"] for s in rank) for rank in info["stats_per_rank"]]
    return {"processes": nproc, "batch": batch, "threads": threads, "tokens_per_s": info["tokens_per_second"],
            "train_s": info["stats"][1]["seconds"], "wall_s": wall, "peak_rss_mb": [p / 2 ** 20 for p in peaks],
            "last_loss": info["last_loss"]}


def main() -> int:
    """Run the three configurations and print them side by side."""
    from helpers.demo.build import build_demo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--workdir", help="folder for the demo assets and outputs (default: a temp folder)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ddp-scaling-"))
    demo = work / "demo"
    if not demo.is_dir():
        build_demo(demo)
    runs = [_run(demo, work / f"run-{n}p-{t}t", nproc=n, batch=8 // n, threads=t, steps=args.steps)
            for n, t in ((1, 1), (1, 2), (2, 1))]
    print(f"{'processes':>9} {'batch/proc':>10} {'threads':>7} {'tokens/s':>9} {'train s':>8} {'wall s':>7} "
          f"{'peak RSS per process (MB)':>26} {'last loss':>9}")
    for r in runs:
        rss = " / ".join(f"{m:.0f}" for m in r["peak_rss_mb"])
        print(f"{r['processes']:>9} {r['batch']:>10} {r['threads']:>7} {r['tokens_per_s']:>9.0f} {r['train_s']:>8.1f} "
              f"{r['wall_s']:>7.1f} {rss:>26} {r['last_loss']:>9.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
