"""``python -m helpers evaluate --model M (--ppl FILE | --mc CSV | --kld-ref F16 --text FILE)``."""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass
from pathlib import Path

from ..util import UserError, write_json
from ..chat.options import LoadOptions
from ..util.params import param, param_like
from .choice import multiple_choice
from .perplexity import kl_divergence, perplexity


@dataclass(frozen=True)
class EvalOptions:
    """One measure of one model: perplexity (``ppl``), multiple choice (``mc``) or KL divergence (``kld_ref``)."""

    model: str = param(MISSING, "GGUF file or HF model folder to evaluate (with --kld-ref: the quantized GGUF)")
    ppl: str | None = param(None, "perplexity on this UTF-8 text file", metavar="FILE")
    mc: str | None = param(None, "multiple choice on a CSV with columns id,question,A,B,C,D,answer", metavar="CSV")
    kld_ref: str | None = param(None, "KL divergence of --model from this reference GGUF", metavar="F16_GGUF")
    text: str | None = param(None, "text for --kld-ref", metavar="FILE")
    backend: str = param_like(LoadOptions, "backend", "auto")
    n_ctx: int | None = param(None, "context window (default 512; 2048 for --mc)", parse=int)
    stride: int | None = param(None, "sliding windows moved by this many tokens for --ppl / --kld-ref (default: "
                               "llama-perplexity's chunks of --n-ctx tokens, the second half of each scored)",
                               parse=int)
    chunks: int | None = param(None, "at most this many chunks (without --stride)", parse=int)
    shots: int = param(0, "few-shot examples for --mc (the releases used 0 and 5)", parse=int)
    dev: str | None = param(None, "few-shot examples for --mc (default: other items of --mc)", metavar="CSV")
    subject: str | None = param(None, "subject name in the few-shot header (default: from the CSV name)")
    template: str | None = param(None, "chat template for instruct models: alpaca, llama2-zh, llama3")
    limit: int | None = param(None, "score only the first N items of --mc", parse=int)
    json: str | None = param(None, "also write the result as JSON", metavar="OUT")

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.ppl, self.mc, self.kld_ref)) != 1:
            raise UserError("give one of --ppl FILE, --mc CSV or --kld-ref F16_GGUF")
        if self.kld_ref and not self.text:
            raise UserError("--kld-ref needs --text FILE")


OPTIONS = (EvalOptions,)


def main(args: EvalOptions) -> int:
    """Measure; print the figure; write the JSON record when asked."""
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
        n_ctx = args.n_ctx or 512
        rep = kl_divergence(args.kld_ref, args.model, Path(args.text), n_ctx=n_ctx, stride=stride, backend=args.backend,
                            method=method, chunks=args.chunks)
        result = {"reference": args.kld_ref, "model": args.model, **asdict(rep)}
        print(f"mean KLD {rep.mean_kld:.6f}  max {rep.max_kld:.6f}  top-1 agreement {rep.top1_agreement:.4f}  "
              f"PPL {rep.ppl_ref:.4f} -> {rep.ppl_quant:.4f} ({rep.n_tokens} tokens)")
    if args.json:
        write_json(args.json, result)
    return 0
