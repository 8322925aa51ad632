"""``python -m helpers chat --model M [--prompt P]``: one streamed reply, or an interactive chat in the terminal."""
from __future__ import annotations

import argparse
import sys
from typing import Iterator

from ..util import UserError
from .guidance import OFF, check_scale
from .load import load_backend


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers chat``."""
    parser.add_argument("--model", required=True, help="HF folder, .gguf file, hub id or catalog name")
    parser.add_argument("--prompt", help="one question: print one streamed reply and exit (default: interactive)")
    parser.add_argument("--system", help="system prompt (default: the template's; '' for none)")
    parser.add_argument("--backend", default="auto", choices=["auto", "transformers", "llama.cpp"])
    parser.add_argument("--template", help="force a prompt template (alpaca, llama2-zh, llama2-zh-long, llama3, raw)")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--temperature", type=float, help="0 decodes greedily")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--repetition-penalty", type=float)
    parser.add_argument("--guidance-scale", type=float,
                        help="CFG sampling: 1 is off, above 1 steers away from --negative-prompt (e.g. 1.5)")
    parser.add_argument("--negative-prompt", help="CFG sampling: put in place of the system prompt for the "
                        "unconditional branch (default: the prompt's last token)")
    quant = parser.add_mutually_exclusive_group()
    quant.add_argument("--4bit", dest="quantization", action="store_const", const="4bit", help="bitsandbytes NF4 (GPU)")
    quant.add_argument("--8bit", dest="quantization", action="store_const", const="8bit", help="bitsandbytes 8-bit (GPU)")
    parser.add_argument("--n-ctx", type=int, help="context length")
    parser.add_argument("--rope", help="config | auto | ntk | ntk:<alpha> | linear:<f> | yarn:<f>")
    parser.add_argument("--n-gpu-layers", type=int, help="llama.cpp layers on the GPU (-1: all)")
    parser.add_argument("--device", help="transformers device (cuda, cpu)")
    parser.add_argument("--trust-remote-code", action="store_true", help="run the model repo's own code (64K models)")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers chat``."""
    gen = {k: getattr(args, k) for k in ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty",
                                         "guidance_scale", "negative_prompt")}
    _check_guidance(args.guidance_scale, args.negative_prompt)
    backend = load_backend(args.model, backend=args.backend, quantization=args.quantization, device=args.device,
                           n_gpu_layers=args.n_gpu_layers, n_ctx=args.n_ctx, rope=args.rope,
                           trust_remote_code=args.trust_remote_code, template=args.template)
    if args.prompt is not None:
        _print_stream(backend.chat(args.prompt, system=args.system, stream=True, **gen))
        return 0
    history: list[tuple[str, str]] = []
    print(f"chatting with {backend.path.name} ({backend.name}, template {backend.template}); "
          "empty line or /exit quits, /reset clears the history", file=sys.stderr)
    while True:
        try:
            user = input("> ").strip()
        except EOFError:
            break
        if not user or user in ("/exit", "/quit"):
            break
        if user == "/reset":
            history.clear()
            print("(history cleared)", file=sys.stderr)
            continue
        reply = _print_stream(backend.chat(user, history=history, system=args.system, stream=True, **gen))
        history.append((user, reply))
    return 0


def _check_guidance(scale: float | None, negative: str | None) -> None:
    """Refuse CFG options that cannot take effect, before the model loads."""
    if scale is not None:
        check_scale(scale)
    if negative and (scale is None or scale == OFF):
        raise UserError("--negative-prompt only acts with CFG sampling: add --guidance-scale above 1 (e.g. 1.5)")


def _print_stream(pieces: Iterator[str]) -> str:
    parts = []
    for piece in pieces:
        parts.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(parts)
