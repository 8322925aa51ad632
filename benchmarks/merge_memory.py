"""Peak memory and wall time of a LoRA merge to GGUF: the streaming merge beside the usual path.

A synthetic base with 7B-wide tensors (hidden 4096, FFN 11008, 32 heads, vocabulary 32000) and a
Chinese-LLaMA-2-style LoRA (r=64 on the 7 projections, embeddings and lm_head expanded to 55296
rows) are built at each requested depth. Then, each in its own child process (peak RSS read from
``wait4``'s resource usage of that child, spawned by a small runner process):

* ours:  ``python -m helpers merge --format gguf --outtype f16``;
* usual: PEFT ``resize_token_embeddings`` + ``merge_and_unload`` + ``save_pretrained``, then
  llama.cpp's ``convert_hf_to_gguf.py --outtype f16`` (from the llama-cpp-python 0.3.36 sdist,
  fetched with ``pip download`` unless ``--sdist`` points at a copy; never committed here);
* copy:  ``cp`` of our GGUF (the disk floor: writing the same bytes, nothing else).

Not part of the test suite. Needs about 4 GB (1 layer) to 8 GB (3 layers) of disk in ``--workdir``:

    .venv/bin/python benchmarks/merge_memory.py --layers 1 3
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HIDDEN, FFN, HEADS, VOCAB, NEW_VOCAB, RANK = 4096, 11008, 32, 32000, 55296, 64
SDIST = "llama-cpp-python==0.3.36"
PEFT_SCRIPT = r"""
import shutil, sys, torch
from pathlib import Path
from transformers import AutoModelForCausalLM
from peft import PeftModel
base, lora, out, vocab = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float16)
model.resize_token_embeddings(vocab, mean_resizing=False)
model = PeftModel.from_pretrained(model, lora).merge_and_unload()
model.save_pretrained(out)
for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
    shutil.copyfile(lora / f, out / f)
"""


# A fresh, small process starts each measured command: a child forked straight from this (large) process
# would report this process's resident high-water mark as its own ru_maxrss (Linux keeps it across exec).
RUNNER = r"""
import json, os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss}, f)
"""


def measure(cmd: list[str], *, env: dict | None = None, cwd: Path | None = None) -> tuple[float, int]:
    """Run ``cmd`` in a child process (in ``cwd``); return (wall seconds, peak RSS bytes of that child)."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as res:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", RUNNER, res.name, *cmd], env={**os.environ, **(env or {})},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd)
        wall = time.perf_counter() - t0
        info = json.loads(Path(res.name).read_text() or "{}")
    if proc.returncode != 0 or info.get("rc") != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout.decode(errors='replace')[-3000:]}")
    return wall, info["maxrss_kb"] * 1024


def converter(workdir: Path, sdist: Path | None) -> Path:
    """Folder holding llama.cpp's convert_hf_to_gguf.py (+ conversion/, gguf-py/) from the sdist."""
    dest = workdir / "llama.cpp"
    if (dest / "convert_hf_to_gguf.py").is_file():
        return dest
    if sdist is None:
        dl = workdir / "sdist"
        subprocess.run([sys.executable, "-m", "pip", "download", SDIST, "--no-deps", "--no-binary", ":all:",
                        "-d", str(dl)], check=True)
        sdist = next(dl.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        for m in tar.getmembers():
            parts = Path(m.name).parts
            if len(parts) > 3 and parts[1:3] == ("vendor", "llama.cpp") and (
                    parts[3] in ("convert_hf_to_gguf.py", "conversion", "gguf-py")) and (m.isfile() or m.isdir()):
                target = dest.joinpath(*parts[3:])
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(m).read())
    return dest


def tokenizer(workdir: Path, n: int) -> Path:
    """A sentencepiece tokenizer folder of exactly ``n`` pieces (the demo's, padded with filler pieces)."""
    from helpers.demo.build import build_demo
    from helpers.tokens.sentencepiece import add_pieces, piece_count

    d = workdir / f"tok-{n}"
    if (d / "tokenizer.model").is_file():
        return d
    src = build_demo(workdir / "demo") / "Llama-2-7b-hf"
    d.mkdir(exist_ok=True)
    model = (src / "tokenizer.model").read_bytes()
    model = add_pieces(model, [f"\u2581filler{i}" for i in range(n - piece_count(model))])
    assert piece_count(model) == n
    for f in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(src / f, d / f)
    (d / "tokenizer.model").write_bytes(model)
    return d


def tokenizers(workdir: Path) -> tuple[Path, Path]:
    """Sentencepiece tokenizers of exactly 32000 and 55296 pieces."""
    return tokenizer(workdir, VOCAB), tokenizer(workdir, NEW_VOCAB)


PROJECTIONS = {"q_proj": (HIDDEN, HIDDEN), "k_proj": (HIDDEN, HIDDEN), "v_proj": (HIDDEN, HIDDEN),
               "o_proj": (HIDDEN, HIDDEN), "gate_proj": (FFN, HIDDEN), "up_proj": (FFN, HIDDEN),
               "down_proj": (HIDDEN, FFN)}  # (out, in) of each projection of a layer


def module_of(proj: str) -> str:
    return "mlp" if proj in ("gate_proj", "up_proj", "down_proj") else "self_attn"


def random_fp16(seed: int):
    """``rnd(*shape, std=0.02)``: normal float16 tensors from a generator seeded with ``seed``."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=0.02):
        return (torch.randn(*shape, generator=g) * std).half()

    return rnd


def built(folder: Path) -> bool:
    """True when ``folder`` was finished by an earlier run (its ``done`` marker); else it is made empty."""
    if (folder / "done").is_file():
        return True
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return False


def lora_state(layers: int, targets: tuple[str, ...], rank: int, vocab: int, rnd) -> dict:
    """A LoRA state dict in PEFT naming: rank-``rank`` pairs on ``targets`` of every layer, plus the expanded
    ``embed_tokens`` / ``lm_head`` (``vocab`` rows) saved in full under their plain names."""
    sd = {}
    for i in range(layers):
        for t in targets:
            out_f, in_f = PROJECTIONS[t]
            p = f"base_model.model.model.layers.{i}.{module_of(t)}.{t}."
            sd[p + "lora_A.weight"] = rnd(rank, in_f, std=0.01)
            sd[p + "lora_B.weight"] = rnd(out_f, rank, std=0.01)
    sd["base_model.model.model.embed_tokens.weight"] = rnd(vocab, HIDDEN, std=1.0)
    sd["base_model.model.lm_head.weight"] = rnd(vocab, HIDDEN)
    return sd


def build_base(workdir: Path, layers: int, tok_base: Path, *, llama1: bool = False) -> Path:
    """Write the synthetic 7B-wide base (one safetensors shard per layer) into ``workdir/base-L<layers>``
    (``base-v1-L<layers>``: LLaMA-1's config, 2048 positions and rms_norm_eps 1e-6)."""
    import torch
    from safetensors.torch import save_file

    from helpers.demo.weights import TinySpec, hf_config

    base = workdir / f"base-{'v1-' if llama1 else ''}L{layers}"
    if built(base):
        return base
    rnd = random_fp16(0)
    spec = TinySpec(hidden=HIDDEN, intermediate=FFN, layers=layers, heads=HEADS, kv_heads=HEADS,
                    **({"max_positions": 2048, "rms_eps": 1e-6} if llama1 else {}))
    shards, weight_map = [], {}
    shards.append({"model.embed_tokens.weight": rnd(VOCAB, HIDDEN, std=1.0)})
    for i in range(layers):
        sd = {f"model.layers.{i}.{module_of(t)}.{t}.weight": rnd(*shape) for t, shape in PROJECTIONS.items()}
        sd[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(HIDDEN, dtype=torch.float16)
        sd[f"model.layers.{i}.post_attention_layernorm.weight"] = torch.ones(HIDDEN, dtype=torch.float16)
        shards.append(sd)
    shards.append({"model.norm.weight": torch.ones(HIDDEN, dtype=torch.float16), "lm_head.weight": rnd(VOCAB, HIDDEN)})
    n = len(shards)
    for k, sd in enumerate(shards, 1):
        name = f"model-{k:05d}-of-{n:05d}.safetensors"
        save_file(sd, str(base / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(sd, name))
    shards.clear()
    (base / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (base / "config.json").write_text(json.dumps(hf_config(spec, VOCAB)))
    (base / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    for f in tok_base.iterdir():
        shutil.copyfile(f, base / f.name)
    (base / "done").touch()
    return base


def build_inputs(workdir: Path, layers: int, tok_base: Path, tok_lora: Path) -> tuple[Path, Path]:
    """Write the synthetic base (one safetensors shard per layer) and its LoRA."""
    from safetensors.torch import save_file

    from helpers.checkpoint import LORA_TARGETS

    base, lora = build_base(workdir, layers, tok_base), workdir / f"lora-L{layers}"
    if built(lora):
        return base, lora
    sd = lora_state(layers, tuple(PROJECTIONS), RANK, NEW_VOCAB, random_fp16(1))
    save_file(sd, str(lora / "adapter_model.safetensors"), metadata={"format": "pt"})
    del sd
    (lora / "adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": "meta-llama/Llama-2-7b-hf", "bias": "none", "fan_in_fan_out": False,
        "inference_mode": True, "lora_alpha": 128.0, "lora_dropout": 0.05, "modules_to_save": ["embed_tokens", "lm_head"],
        "peft_type": "LORA", "r": RANK, "target_modules": list(LORA_TARGETS), "task_type": "CAUSAL_LM"}))
    for f in tok_lora.iterdir():
        shutil.copyfile(f, lora / f.name)
    (lora / "done").touch()
    return base, lora


def compare_gguf(a: Path, b: Path) -> str:
    """Same tensor names/shapes/types? Largest absolute difference of the values."""
    import numpy as np
    from gguf import GGUFReader

    ta = {t.name: t for t in GGUFReader(a).tensors}
    tb = {t.name: t for t in GGUFReader(b).tensors}
    if set(ta) != set(tb):
        return f"tensor names differ: {sorted(set(ta) ^ set(tb))[:5]}"
    worst = 0.0
    for name, x in ta.items():
        y = tb[name]
        if list(x.shape) != list(y.shape) or x.tensor_type != y.tensor_type:
            return f"{name}: {list(x.shape)} {x.tensor_type.name} vs {list(y.shape)} {y.tensor_type.name}"
        xa, ya = np.asarray(x.data).reshape(-1), np.asarray(y.data).reshape(-1)
        for i in range(0, xa.size, 1 << 24):
            d = np.abs(xa[i:i + (1 << 24)].astype(np.float32) - ya[i:i + (1 << 24)].astype(np.float32))
            worst = max(worst, float(d.max()))
    return f"same {len(ta)} tensors (names, shapes, types); max |difference| {worst:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/merge-bench"))
    ap.add_argument("--sdist", type=Path, help="llama_cpp_python-0.3.36.tar.gz (default: pip download it)")
    ap.add_argument("--skip-usual", action="store_true", help="only our merge and the copy")
    ap.add_argument("--keep", action="store_true", help="keep the generated models and outputs")
    args = ap.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    conv = None if args.skip_usual else converter(work, args.sdist)
    tok_base, tok_lora = tokenizers(work)
    py = sys.executable
    env = {"HELPERS_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    rows, checks = [], []
    for layers in args.layers:
        print(f"building the {layers}-layer base and LoRA ...", flush=True)
        base, lora = build_inputs(work, layers, tok_base, tok_lora)
        out = work / f"out-L{layers}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        ours = out / "ours.gguf"
        print("  ours ...", flush=True)
        t, rss = measure([py, "-m", "helpers", "merge", "--base", str(base), "--lora", str(lora), "--out", str(ours),
                          "--format", "gguf", "--outtype", "f16", "--no-sha256", "--no-progress"], env=env)
        size = ours.stat().st_size
        rows.append(("streaming merge -> GGUF f16", layers, rss, t, size))
        print("  copy ...", flush=True)
        t, rss = measure(["cp", str(ours), str(out / "copy.gguf")])
        rows.append(("cp of the same GGUF (disk floor)", layers, rss, t, size))
        (out / "copy.gguf").unlink()
        if conv is not None:
            print("  usual path ...", flush=True)
            t1, r1 = measure([py, "-c", PEFT_SCRIPT, str(base), str(lora), str(out / "hf"), str(NEW_VOCAB)], env=env)
            usual = out / "usual.gguf"
            t2, r2 = measure([py, str(conv / "convert_hf_to_gguf.py"), str(out / "hf"), "--outtype", "f16",
                              "--outfile", str(usual)], env={**env, "PYTHONPATH": str(conv / "gguf-py")})
            rows.append(("  PEFT merge_and_unload + save_pretrained", layers, r1, t1, None))
            rows.append(("  convert_hf_to_gguf.py --outtype f16", layers, r2, t2, usual.stat().st_size))
            rows.append(("usual path (both steps)", layers, max(r1, r2), t1 + t2, usual.stat().st_size))
            checks.append(f"L{layers}: ours vs llama.cpp's GGUF: {compare_gguf(ours, usual)}")
            shutil.rmtree(out / "hf")
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(lora, ignore_errors=True)

    gb = 1 << 30
    print(f"\n{'variant':44s} {'layers':>6s} {'peak RSS':>10s} {'wall':>8s} {'output':>9s}")
    for name, layers, rss, t, size in rows:
        print(f"{name:44s} {layers:6d} {rss / gb:8.2f} GB {t:7.1f}s {'' if size is None else f'{size / gb:7.2f} GB':>9s}")
    by = {(n, l): (r, t) for n, l, r, t, _ in rows}
    lo, hi = min(args.layers), max(args.layers)
    ours = [by[("streaming merge -> GGUF f16", n)] for n in (lo, hi)]
    print(f"\nours: peak RSS L{hi} - L{lo} = {(ours[1][0] - ours[0][0]) / (1 << 20):.0f} MB; "
          f"max {max(r for r, _ in ours) / gb:.2f} GB")
    if conv is not None:
        for n in args.layers:
            (r0, t0), (r1, t1) = by[("streaming merge -> GGUF f16", n)], by[("usual path (both steps)", n)]
            cp = by[("cp of the same GGUF (disk floor)", n)][1]
            print(f"L{n}: RSS ours/usual = {r0 / r1:.2f}; wall ours/usual = {t0 / t1:.2f}; wall ours/cp = {t0 / cp:.1f}")
    for c in checks:
        print(c)


if __name__ == "__main__":
    main()
