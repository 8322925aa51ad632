"""``python -m helpers evaluate --model M (--ppl FILE | --mc CSV | --kld-ref F16 --text FILE)``."""
from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from ..util import UserError, write_json
from .choice import multiple_choice
from .perplexity import kl_divergence, perplexity


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="GGUF file or HF model folder to evaluate "
                        "(with --kld-ref: the quantized GGUF)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--ppl", metavar="FILE", help="perplexity on this UTF-8 text file")
    mode.add_argument("--mc", metavar="CSV", help="multiple choice on a CSV with columns id,question,A,B,C,D,answer")
    mode.add_argument("--kld-ref", metavar="F16_GGUF", help="KL divergence of --model from this reference GGUF")
    parser.add_argument("--text", metavar="FILE", help="text for --kld-ref")
    parser.add_argument("--backend", default="auto", choices=["auto", "transformers", "llama.cpp"])
    parser.add_argument("--n-ctx", type=int, default=None, help="context window (default 512; 2048 for --mc)")
    parser.add_argument("--stride", type=int, default=None,
                        help="sliding windows moved by this many tokens for --ppl / --kld-ref (default: "
                             "llama-perplexity's chunks of --n-ctx tokens, the second half of each scored)")
    parser.add_argument("--chunks", type=int, default=None, help="at most this many chunks (without --stride)")
    parser.add_argument("--shots", type=int, default=0, help="few-shot examples for --mc (the releases used 0 and 5)")
    parser.add_argument("--dev", metavar="CSV", help="few-shot examples for --mc (default: other items of --mc)")
    parser.add_argument("--subject", help="subject name in the few-shot header (default: from the CSV name)")
    parser.add_argument("--template", help="chat template for instruct models: alpaca, llama2-zh, llama3")
    parser.add_argument("--limit", type=int, help="score only the first N items of --mc")
    parser.add_argument("--json", metavar="OUT", help="also write the result as JSON")


def run(args: argparse.Namespace) -> int:
    method = "sliding" if args.stride is not None else "llama.cpp"
    stride = min(args.stride or 256, args.n_ctx or 512)
    if args.ppl:
        n_ctx = args.n_ctx or 512
        ppl = perplexity(args.model, Path(args.ppl), backend=args.backend, n_ctx=n_ctx, stride=stride, method=method,
                         chunks=args.chunks)
        result: dict = {"model": args.model, "text": args.ppl, "n_ctx": n_ctx, "method": method, "perplexity": ppl}
        print(f"perplexity {ppl:.4f} ({args.ppl}, n_ctx {n_ctx}, "
              + (f"windows moved by {stride})" if method == "sliding" else "llama-perplexity's chunks)"))
    elif args.mc:
        rep = multiple_choice(args.model, args.mc, shots=args.shots, dev_csv=args.dev, subject=args.subject,
                              template=args.template, backend=args.backend, n_ctx=args.n_ctx or 2048, limit=args.limit)
        result = {"model": args.model, "csv": args.mc, "shots": args.shots, "accuracy": rep.accuracy, "n": rep.n,
                  "correct": rep.correct, "items": rep.per_item}
        print(f"accuracy {rep.accuracy:.4f} ({rep.correct}/{rep.n}, {args.shots}-shot)")
    else:
        if not args.text:
            raise UserError("--kld-ref needs --text FILE")
        n_ctx = args.n_ctx or 512
        rep = kl_divergence(args.kld_ref, args.model, Path(args.text), n_ctx=n_ctx, stride=stride, backend=args.backend,
                            method=method, chunks=args.chunks)
        result = {"reference": args.kld_ref, "model": args.model, **asdict(rep)}
        print(f"mean KLD {rep.mean_kld:.6f}  max {rep.max_kld:.6f}  top-1 agreement {rep.top1_agreement:.4f}  "
              f"PPL {rep.ppl_ref:.4f} -> {rep.ppl_quant:.4f} ({rep.n_tokens} tokens)")
    if args.json:
        write_json(args.json, result)
    return 0
