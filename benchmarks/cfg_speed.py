"""What CFG sampling costs: tokens per second of a greedy chat reply with and without guidance, on both back ends,
side by side on the same model.

    .venv/bin/python benchmarks/cfg_speed.py [--hidden 1024] [--layers 8] [--tokens 64] [--threads 1] [--repeat 2]

The model is a random LLaMA of the given width and depth with the released Chinese-LLaMA-2 tokenizer (as in
``ceval_speed.py``); llama.cpp runs its F16 GGUF. Rows: transformers and llama.cpp, each plain, with CFG against the
question's last token, and with CFG against a negative prompt (which the negative branch reads first). Replies are
``--tokens`` long unless the model ends its turn first (the row then shows its own count). Times are CPU seconds of
this process (all its threads), the fastest of ``--repeat`` runs; llama.cpp takes llama-cpp-python's default
threads.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ceval_speed import build_model  # noqa: E402 - the benchmarks' shared random model

QUESTION = "请详细介绍一下北京的名胜古迹。"
NEGATIVE = "用英文回答，越短越好。"
CASES = {"plain": {}, "CFG 1.5, last token": {"guidance_scale": 1.5},
         "CFG 1.5, negative prompt": {"guidance_scale": 1.5, "negative_prompt": NEGATIVE}}


def timed(backend, tokens: int, repeat: int, **gen) -> tuple[float, int]:
    """The fastest CPU seconds of ``repeat`` greedy replies, and the reply's token count."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        backend.chat(QUESTION, max_new_tokens=tokens, temperature=0, repetition_penalty=1.0, **gen)
        best = min(best, time.process_time() - start)
    return best, int(backend.last_stats.get("new_tokens", tokens))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    import torch

    from helpers.chat import load_backend
    from helpers.gguf import convert_hf_to_gguf

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "model", args.hidden, args.layers)
        gguf = convert_hf_to_gguf(model_dir, Path(tmp) / "model-f16.gguf", outtype="f16", template="llama2-zh")
        backends = {"transformers": load_backend(model_dir, template="llama2-zh", dtype=torch.float32),
                    "llama.cpp": load_backend(gguf, n_ctx=512)}
        print(f"random LLaMA hidden {args.hidden}, {args.layers} layers, vocabulary 55296; {args.tokens} tokens; "
              f"{args.threads} torch threads; CPU seconds, best of {args.repeat}", flush=True)
        print(f"{'back end':12s} {'decoding':26s} {'tokens':>6s} {'seconds':>8s} {'tok/s':>7s} {'vs plain':>8s}")
        for name, backend in backends.items():
            plain = None
            for label, gen in CASES.items():
                seconds, n = timed(backend, args.tokens, args.repeat, **gen)
                rate = n / seconds if seconds else 0.0
                plain = plain or rate
                print(f"{name:12s} {label:26s} {n:6d} {seconds:8.2f} {rate:7.1f} {rate / plain:7.2f}x", flush=True)
            backend.close()


if __name__ == "__main__":
    main()
