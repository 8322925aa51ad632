"""What saving to the workspace costs: ``copy_to_workspace`` beside a plain ``shutil.copyfile``, and its rerun.

A file of ``--mib`` random MiB (a stand-in for a GGUF) and a folder of ``--shards`` such files (a merged HF model)
are saved into a workspace folder (``--workspace``: a Drive mount in Colab, a local folder here). Printed side by
side, in one run: ``cp`` (shutil.copyfile, the floor: the same bytes written, nothing checked); ours, first save
(copy + SHA256 of what was read + the copy read back and hashed + rename); ours again (nothing changed: the
records in ``.helpers-saved.json`` answer, no byte is read); ours after the source changed (hashed, copied).

Not part of the test suite:

    .venv/bin/python benchmarks/workspace_copy.py --mib 1024 --shards 3
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _write(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    from helpers.publish import copy_to_workspace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="size of each file (MiB)")
    parser.add_argument("--shards", type=int, default=2, help="files in the folder case")
    parser.add_argument("--workdir", default=None, help="where the sources go (default: a temp folder)")
    parser.add_argument("--workspace", default=None, help="where they are saved (default: beside the sources)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ws-bench-"))
    ws = Path(args.workspace or work / "workspace")
    src = work / "src"
    (src / "model").mkdir(parents=True, exist_ok=True)
    _write(src / "model.gguf", args.mib)
    for i in range(args.shards):
        _write(src / "model" / f"model-{i + 1:05d}-of-{args.shards:05d}.safetensors", args.mib)
    rows = []
    for name, path in (("file", src / "model.gguf"), ("folder", src / "model")):
        total = sum(f.stat().st_size for f in ([path] if path.is_file() else path.iterdir()))
        plain = ws / "plain"
        plain.mkdir(parents=True, exist_ok=True)
        cp = _timed(lambda: shutil.copyfile(path, plain / path.name) if path.is_file()
                    else shutil.copytree(path, plain / path.name, dirs_exist_ok=True))
        first = _timed(lambda: copy_to_workspace(path, ws, show_progress=False))
        again = _timed(lambda: copy_to_workspace(path, ws, show_progress=False))
        changed = next(iter([path] if path.is_file() else sorted(path.iterdir())))
        with open(changed, "r+b") as f:
            f.write(os.urandom(16))
        after = _timed(lambda: copy_to_workspace(path, ws, show_progress=False))
        rows.append((name, total / (1 << 20), cp, first, again, after))
    print(f"{'case':8s} {'MiB':>8s} {'cp s':>8s} {'ours s':>8s} {'rerun s':>8s} {'1 changed s':>12s}")
    for name, mib, cp, first, again, after in rows:
        print(f"{name:8s} {mib:8.0f} {cp:8.2f} {first:8.2f} {again:8.3f} {after:12.2f}")
    shutil.rmtree(work, ignore_errors=True) if not args.workdir else None
    return 0


if __name__ == "__main__":
    sys.exit(main())
