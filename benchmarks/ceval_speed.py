"""C-Eval questions per second: the subject prefix evaluated once (``helpers.evaluate``) against re-reading the
whole prompt for every question, as the releases' script does, on the same model; both back ends.

    .venv/bin/python benchmarks/ceval_speed.py [--hidden 1024] [--layers 8] [--subjects 1] [--questions 26]
                                               [--shots 5] [--threads 1] [--repeat 2]

The model is a random LLaMA of the given width and depth with the released Chinese-LLaMA-2 tokenizer (vendored in
tests/data, 55,296 pieces), so prompts have the releases' token counts; the questions are C-Eval-sized stand-ins
(three sentences and sentence-long options), 26 per subject as in C-Eval's val split (1,346 questions, 52
subjects; CMMLU's test split has about 170 per subject, which favours the shared prefix more). Rows, side by side:

- transformers, the scripts' way: ``tokenizer(prompt)`` and ``model.generate`` with their GenerationConfig
  (one step, repetition penalty 1.1, temperature 0.2, ``output_scores``) per question;
- transformers, shared prefix: :func:`helpers.evaluate.exam.score_exam` (one question at a time on CPU);
- llama.cpp (the model's F16 GGUF), each whole prompt from an empty cache, and with the prefix kept in the
  KV cache.

Each row also says whether its predictions equal the first row's. Times are CPU seconds of this process, the
fastest of ``--repeat`` runs: on a shared machine the wall clock mostly measures the other jobs.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests" / "data" / "chinese-llama-2-tokenizer"


def build_model(out: Path, hidden: int, layers: int) -> Path:
    """A random LLaMA (width ``hidden``, ``layers`` blocks) with the Chinese-LLaMA-2 tokenizer, in float16."""
    from helpers.demo.weights import TinySpec, base_state_dict, hf_config, write_hf_model

    spec = TinySpec(hidden=hidden, intermediate=hidden * 11 // 4 // 256 * 256, layers=layers, heads=hidden // 64,
                    kv_heads=hidden // 64)
    vocab = 55296
    out.mkdir(parents=True)
    write_hf_model(out, base_state_dict(spec, vocab, seed=0), hf_config(spec, vocab), fmt="safetensors", single=True)
    for f in TOKENIZER.iterdir():
        if f.is_file():
            shutil.copyfile(f, out / f.name)
    return out


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def scripts_way(model_dir: Path, exam, style) -> tuple[tuple[float, float], list[str]]:
    """The releases' loop: whole prompt, ``generate`` with their config, letters from the processed scores."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from helpers.tokens import load_tokenizer

    tok = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    config = GenerationConfig(temperature=0.2, top_k=0, top_p=1.0, do_sample=True, num_beams=1,
                              repetition_penalty=1.1, max_new_tokens=1, output_scores=True,
                              return_dict_in_generate=True, pad_token_id=0)
    bare = [tok.encode(c, add_special_tokens=False)[0] for c in "ABCD"]
    cued = [tok.encode("：" + c)[-1] for c in "ABCD"]
    preds = []
    start = _clock()
    for sd in exam.subjects:
        for item in sd.items:
            inputs = tok(style.prompt(sd.subject, sd.dev, item), return_tensors="pt")
            with torch.no_grad():
                scores = model.generate(**inputs, generation_config=config).scores[0][0]
            preds.append("ABCD"[int((scores[bare] + scores[cued]).argmax())])
    return _since(start), preds


def ours(model, exam, style, *, reuse: bool) -> tuple[tuple[float, float], list[str]]:
    from helpers.evaluate.exam import open_scorer, score_exam

    with open_scorer(model) as (scorer, _, _):
        start = _clock()
        result = score_exam(scorer, exam, style, reuse=reuse, show_progress=False)
        return _since(start), [a.pred for a in result.answers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--subjects", type=int, default=1)
    parser.add_argument("--questions", type=int, default=26, help="questions per subject (C-Eval val: 26 on average)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each method; the fastest counts")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (llama.cpp takes llama-cpp-python's default, half the cores)")
    args = parser.parse_args()
    import os

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HELPERS_NO_PROGRESS", "1")
    from helpers.evaluate import benchmark, load_exam, write_standin
    from helpers.evaluate.prompts import PromptStyle
    from helpers.gguf import convert_hf_to_gguf

    with tempfile.TemporaryDirectory(prefix="ceval-speed-") as tmp:
        work = Path(tmp)
        model = build_model(work / "model", args.hidden, args.layers)
        gguf = convert_hf_to_gguf(model, work / "model-f16.gguf", outtype="f16")
        spec = benchmark("ceval")
        data = write_standin(work / "data", "ceval", subjects=list(spec.subjects)[:args.subjects],
                             questions=args.questions, long=True)
        exam = load_exam(spec, data, shots=args.shots)
        style = PromptStyle("v2", spec)
        from helpers.tokens import load_tokenizer

        tok = load_tokenizer(model)
        lengths = [len(tok(style.prompt(s.subject, s.dev, i))["input_ids"]) for s in exam.subjects for i in s.items]
        n = len(lengths)
        print(f"model: hidden {args.hidden}, {args.layers} layers, vocabulary 55296; {n} C-Eval-sized questions, "
              f"{args.shots}-shot, prompts of {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / n:.0f}); "
              f"{args.threads} threads", flush=True)
        runs = [("transformers", "whole prompt + generate (the scripts)", lambda: scripts_way(model, exam, style)),
                ("transformers", "shared prefix (helpers)", lambda: ours(model, exam, style, reuse=True)),
                ("llama.cpp F16", "whole prompt from an empty cache", lambda: ours(gguf, exam, style, reuse=False)),
                ("llama.cpp F16", "shared prefix in the KV cache (helpers)", lambda: ours(gguf, exam, style, reuse=True))]
        rows = []
        for backend, method, run in runs:
            timings = [run() for _ in range(args.repeat)]
            best = min(timings, key=lambda t: t[0][1])
            rows.append((backend, method, best[0], best[1]))
    print(f"{'back end':<15}{'method':<42}{'wall s':>8}{'CPU s':>8}{'questions/s':>13}{'speed-up':>10}  "
          "same predictions")
    for i, (backend, method, (wall, cpu), preds) in enumerate(rows):
        base = rows[i - i % 2]
        print(f"{backend:<15}{method:<42}{wall:>8.1f}{cpu:>8.1f}{n / cpu:>13.2f}{base[2][1] / cpu:>9.1f}x  "
              f"{sum(p == q for p, q in zip(preds, base[3]))}/{n}")
    print("questions/s and speed-up are per CPU second of this process (the wall clock counts other jobs on a "
          "shared machine)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
