"""Peak memory of a merge whose LoRA is a 2023-style ``adapter_model.bin`` (a torch zip pickle), by depth.

The 2023 releases (Chinese-LLaMA/Alpaca v1, some v2) ship ``adapter_model.bin`` holding the LoRA pairs *and*
the expanded ``embed_tokens`` / ``lm_head`` (49954 x 4096 float16, ~400 MB each for 7B). Here: the 7B-wide
synthetic base of ``merge_memory.py`` with LLaMA-1's config (hidden 4096, FFN 11008, vocabulary 32000;
``--layers`` deep, one safetensors shard per layer) and such a LoRA, written with ``torch.save`` in the old PEFT layout (r=8 on
``--targets`` q,v or all seven projections, embeddings saved under their plain names, ``enable_lora`` in the
config). Each ``python -m helpers merge`` runs in its own child process (peak RSS from ``wait4``), once per
``--code`` checkout (``NAME=DIR``: the folder holding the ``helpers`` package to run, the child's working directory and first
on PYTHONPATH),
to each ``--outputs`` (``gguf-q4_k_m``, ``hf-f16``, ...). For a before/after comparison, export the other
branch's package first, e.g. ``git archive main helpers | tar -x -C /tmp/code-main``. Not part of the test
suite; needs about 2 GB (1 layer) to 4 GB (3 layers) of disk in ``--workdir``:

    .venv/bin/python benchmarks/merge_bin_lora.py --layers 1 3 --code main=/tmp/code-main --code this=.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from merge_memory import (  # noqa: E402 - the 7B-wide synthetic base of merge_memory.py
    HIDDEN, PROJECTIONS, VOCAB, build_base, built, lora_state, measure, random_fp16, tokenizer)

LORA_VOCAB, RANK, ALPHA = 49954, 8, 32.0  # Chinese-Alpaca (v1): 49954 pieces, r=8, lora_alpha=32
TARGETS = {"qv": ("q_proj", "v_proj"), "all": tuple(PROJECTIONS)}


def build_bin_lora(workdir: Path, layers: int, targets: str) -> Path:
    """Write a 2023-style LoRA folder (``adapter_model.bin`` via ``torch.save``, old PEFT config and keys)."""
    import torch

    lora = workdir / f"binlora-{targets}-L{layers}"
    if built(lora):
        return lora
    sd = lora_state(layers, TARGETS[targets], RANK, LORA_VOCAB, random_fp16(2))
    torch.save(sd, lora / "adapter_model.bin")
    del sd
    (lora / "adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": "decapoda-research/llama-7b-hf", "bias": "none", "enable_lora": None,
        "fan_in_fan_out": False, "inference_mode": True, "lora_alpha": ALPHA, "lora_dropout": 0.05,
        "merge_weights": False, "modules_to_save": ["embed_tokens", "lm_head"], "peft_type": "LORA", "r": RANK,
        "target_modules": list(TARGETS[targets]), "task_type": "CAUSAL_LM"}))
    for f in tokenizer(workdir, LORA_VOCAB).iterdir():
        shutil.copyfile(f, lora / f.name)
    (lora / "done").touch()
    return lora


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--targets", choices=sorted(TARGETS), default="all")
    ap.add_argument("--outputs", nargs="+", default=["gguf-q4_k_m", "hf-f16"], help="FORMAT-OUTTYPE of each merge")
    ap.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                    help="a checkout whose helpers package runs the merge (default: this one); repeatable")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/merge-bench-bin"))
    ap.add_argument("--keep", action="store_true", help="keep the generated models")
    args = ap.parse_args()
    codes = [(c.split("=", 1)[0], Path(c.split("=", 1)[1]).resolve()) for c in args.code] or [("this", ROOT)]
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {"HELPERS_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    for layers in args.layers:
        print(f"building the {layers}-layer base and LoRA ...", flush=True)
        base = build_base(work, layers, tokenizer(work, VOCAB), llama1=True)
        lora = build_bin_lora(work, layers, args.targets)
        for name, code in codes:
            for output in args.outputs:
                fmt, outtype = output.split("-", 1)
                out = work / f"out-{name}-L{layers}" / ("model.gguf" if fmt == "gguf" else "hf")
                shutil.rmtree(out.parent, ignore_errors=True)
                out.parent.mkdir()
                print(f"  {name}: {output} ...", flush=True)
                t, rss = measure([sys.executable, "-m", "helpers", "merge", "--base", str(base), "--lora", str(lora),
                                  "--out", str(out), "--format", fmt, "--outtype", outtype, "--no-sha256",
                                  "--no-progress"], env={**env, "PYTHONPATH": str(code)}, cwd=code)
                rows.append((name, output, layers, rss, t))
                shutil.rmtree(out.parent)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(lora, ignore_errors=True)
    gb, mb = 1 << 30, 1 << 20
    print(f"\nadapter_model.bin: r={RANK} on {args.targets} projections + embed_tokens/lm_head {LORA_VOCAB} x {HIDDEN} "
          "float16")
    print(f"{'code':10s} {'output':14s} {'layers':>6s} {'peak RSS':>10s} {'wall':>8s}")
    for name, output, layers, rss, t in rows:
        print(f"{name:10s} {output:14s} {layers:6d} {rss / gb:8.2f} GB {t:7.1f}s")
    lo, hi = min(args.layers), max(args.layers)
    by = {(n, o, l): r for n, o, l, r, _ in rows}
    for name, _ in codes:
        for output in args.outputs:
            r_lo, r_hi = by[(name, output, lo)], by[(name, output, hi)]
            print(f"{name} {output}: L{hi} - L{lo} = {(r_hi - r_lo) / mb:+.0f} MB; max {max(r_lo, r_hi) / gb:.2f} GB")


if __name__ == "__main__":
    main()
