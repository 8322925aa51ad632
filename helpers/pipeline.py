"""The offline demo job, end to end: demo assets -> merge -> GGUF -> quantize -> a reply.

It runs the same functions as the notebooks, with the notebooks' real defaults
(``meta-llama/Llama-2-7b-hf`` + ``hfl/chinese-alpaca-2-lora-7b``), resolved to the tiny demo
stand-ins through ``HELPERS_LOCAL_MODELS``. On CPU it takes well under a minute after setup.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .util import human_bytes

DEFAULT_MODEL = "chinese-alpaca-2-7b-lora"
DEFAULT_PROMPT = "请详细介绍一下北京的名胜古迹。"


def run_pipeline(out: str | Path, *, model: str = DEFAULT_MODEL, qtype: str = "q4_k_m",
                 prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 32) -> dict:
    """Run the demo job into ``out`` and return what it produced (paths, sizes, reply, timings).

    Args:
        out: output folder (demo assets go to ``out/assets``).
        model: catalog name of the LoRA release to merge.
        qtype: llama.cpp quantization type for the final GGUF.
        prompt: the question asked to the quantized model.
        max_new_tokens: length of the reply.
    """
    from . import catalog
    from .env import use_demo_assets
    from .infer import load_backend
    from .merge import merge
    from .quantize import quantize

    out = Path(out)
    timings: dict[str, float] = {}

    def step(name: str, t0: float) -> None:
        timings[name] = time.perf_counter() - t0
        print(f"[{name}] done in {timings[name]:.1f}s", flush=True)

    t0 = time.perf_counter()
    assets = use_demo_assets(out / "assets")
    step("demo assets", t0)

    base, loras = catalog.merge_plan(model)
    print(f"merging {' + '.join(loras)} into {base} (offline stand-ins from {assets})", flush=True)
    t0 = time.perf_counter()
    f16 = out / "merged-f16.gguf"
    merge(base, loras, out=f16, fmt="gguf", outtype="f16")
    step("merge -> GGUF f16", t0)

    t0 = time.perf_counter()
    quant = out / f"merged-{qtype}.gguf"
    quantize(f16, quant, qtype=qtype)
    step(f"quantize {qtype}", t0)

    t0 = time.perf_counter()
    backend = load_backend(str(quant), backend="llama.cpp")
    reply = backend.chat(prompt, max_new_tokens=max_new_tokens, temperature=0.0, do_sample=False)
    if not isinstance(reply, str):
        reply = "".join(reply)
    step("reply", t0)

    sizes = {p.name: p.stat().st_size for p in (f16, quant)}
    print()
    for name, size in sizes.items():
        print(f"  {name:28s} {human_bytes(size)}")
    print(f"  template: {backend.template}")
    print(f"  prompt:   {prompt}")
    print(f"  reply:    {reply!r}")
    print("(the demo models are tiny and random, so the reply is not meaningful; in Colab the same steps run on the real models)")
    return {"f16": f16, "quant": quant, "sizes": sizes, "reply": reply, "timings": timings, "template": backend.template}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="catalog name of the LoRA release to merge")
    parser.add_argument("--type", dest="qtype", default="q4_k_m", help="quantization type (default q4_k_m)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="question for the model")
    parser.add_argument("--max-new-tokens", type=int, default=32)


def run(args: argparse.Namespace) -> int:
    run_pipeline(args.out, model=args.model, qtype=args.qtype, prompt=args.prompt, max_new_tokens=args.max_new_tokens)
    return 0
