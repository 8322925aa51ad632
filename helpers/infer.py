"""Talk to a model: one interface over transformers and llama.cpp, long context, speculative decoding.

:func:`load_backend` takes an HF folder, a ``.gguf`` file, a hub id or a catalog name and returns a
:class:`Backend` whose :meth:`Backend.chat` renders the release's own prompt template
(:mod:`helpers.templates`), drops the oldest turns beyond a token budget, generates (streamed or not)
and stops at the template's end-of-turn tokens and stop strings, which never appear in the reply.

Long context (``rope=``: ``config``, ``auto``, ``ntk``, ``ntk:<alpha>``, ``linear:<factor>``,
``yarn:<factor>``) is applied before the weights load; the options are described in :mod:`helpers.longctx`.

The pieces live in their own modules and are re-exported here:

- :mod:`helpers.backend`: the :class:`Backend` interface and :class:`StopFilter`;
- :mod:`helpers.backend_hf`: :class:`TransformersBackend` and ``load_transformers``;
- :mod:`helpers.backend_llamacpp`: :class:`LlamaCppBackend`, ``load_llama_cpp`` and :func:`gguf_metadata`;
- :mod:`helpers.longctx`: :func:`ntk_alpha`, :func:`ntk_rope_base`, :func:`plan_rope`, :class:`RopePlan`;
- :mod:`helpers.speculative`: :func:`speculative_generate`.

``python -m helpers chat --model M [--prompt P]`` is the command-line front end; the notebook chat box
and the OpenAI-compatible server live in :mod:`helpers.chatui`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterator

from .backend import GEN_KEYS, HISTORY_TOKENS_LLAMA2, Backend, StopFilter, _lstrip_stream  # noqa: F401
from .backend_hf import (  # noqa: F401
    TransformersBackend, _raise_generation_error, _stop_token_ids, _TokenTextQueue, _torch_dtype, load_transformers,
)
from .backend_llamacpp import LlamaCppBackend, _GGUFTokenizer, gguf_metadata, load_llama_cpp  # noqa: F401
from .longctx import RopePlan, _apply_rope_to_config, ntk_alpha, ntk_rope_base, plan_rope  # noqa: F401
from .speculative import _cut, _shared_vocabulary, speculative_generate  # noqa: F401
from .util import UserError


# ----------------------------------------------------------------------------- one entry point
def _pick_gguf(folder: Path, quant: str) -> Path:
    files = sorted(folder.rglob("*.gguf"))
    if not files:
        raise UserError(f"no .gguf file in {folder} (looked for names containing {quant!r}; "
                        "pass gguf_quant=... or the path of the file)")
    if len(files) == 1:
        return files[0]
    chosen = [f for f in files if quant.lower() in f.name.lower()]
    if len(chosen) == 1:
        return chosen[0]
    raise UserError(f"{folder} holds several GGUF files ({', '.join(f.name for f in files)}); pass one file")


def resolve(model: str | Path, *, gguf_quant: str = "q4_k") -> tuple[Path, Any]:
    """Resolve ``model`` to a local HF folder or ``.gguf`` file; also return its catalog entry (or None)."""
    from . import catalog
    from .env import resolve_model

    ref = str(model)
    path = Path(ref).expanduser()
    entry = None if path.exists() else catalog.find(ref)
    if entry is not None:
        if entry.kind in ("lora", "patch"):
            raise UserError(f"{entry.name} is a {entry.kind}, not a model you can chat with: merge it first "
                            f"(python -m helpers merge ...) and chat with the merged folder or GGUF")
        patterns = [f"*{gguf_quant}*.gguf", "*.md", "*.json"] if entry.kind == "gguf" else None
        path = resolve_model(entry.hub_id, allow_patterns=patterns)
        if entry.kind == "gguf" and path.is_dir():
            return _pick_gguf(path, gguf_quant), entry
    else:
        path = resolve_model(ref)
        if path.is_dir():
            entry = catalog.find(path.resolve().name)
    if path.is_dir() and not (path / "config.json").is_file() and any(path.rglob("*.gguf")):
        path = _pick_gguf(path, gguf_quant)
    return path, entry


def load_backend(model: str | Path, *, backend: str = "auto", quantization: str | None = None,
                 device: str | None = None, dtype: Any = None, n_gpu_layers: int | None = None,
                 n_ctx: int | None = None, rope: str | None = None, trust_remote_code: bool = False,
                 template: str | None = None, gguf_quant: str = "q4_k", **defaults: Any) -> Backend:
    """Load a model for chatting.

    Args:
        model: an HF folder, a ``.gguf`` file, a hub id or a catalog name (``chinese-alpaca-2-7b``).
        backend: ``auto`` (GGUF -> llama.cpp, else transformers), ``transformers`` or ``llama.cpp``.
        quantization: ``None``, ``"8bit"`` or ``"4bit"`` (bitsandbytes NF4 + double quantization; GPU only).
        device: ``cuda``/``cpu`` for transformers (default: CUDA when available).
        dtype: transformers weights dtype (default: bf16/fp16 on GPU, fp32 on CPU).
        n_gpu_layers: llama.cpp layers on the GPU (default: all when llama.cpp has GPU support, else 0).
        n_ctx: context length wanted (llama.cpp default: the model's, at most 4096).
        rope: long-context option, see :mod:`helpers.longctx`.
        trust_remote_code: run the model repo's own Python code (the 64K models ship some); off unless asked.
        template: force a template id; by default it comes from the catalog or the model's files/metadata.
        gguf_quant: which GGUF of a catalog GGUF repo to fetch (file name contains it).
        **defaults: sampling defaults for this backend (``temperature``, ``max_new_tokens``...).
    """
    from .templates import get_template, template_for_model

    if backend not in ("auto", "transformers", "llama.cpp", "llama_cpp", "llamacpp"):
        raise UserError(f"unknown backend {backend!r}; use auto, transformers or llama.cpp")
    backend = "llama.cpp" if backend in ("llama_cpp", "llamacpp") else backend
    unknown = set(defaults) - set(GEN_KEYS)
    if unknown:
        raise UserError(f"unknown settings {sorted(unknown)}")
    path, entry = resolve(model, gguf_quant=gguf_quant)
    is_gguf = path.is_file() and path.suffix == ".gguf"
    if not is_gguf and not (path / "config.json").is_file():
        raise UserError(f"{path} is neither a .gguf file nor a Hugging Face model folder (no config.json)")
    chosen = "llama.cpp" if (backend == "auto" and is_gguf) else ("transformers" if backend == "auto" else backend)
    if chosen == "llama.cpp" and not is_gguf:
        raise UserError(f"{path} is a Hugging Face folder; convert it first (python -m helpers to-gguf) "
                        "or use backend='transformers'")
    if chosen == "transformers" and is_gguf:
        raise UserError(f"{path} is a GGUF file; use backend='llama.cpp' (or 'auto')")
    if entry is not None and entry.needs_trust_remote_code and not trust_remote_code and not is_gguf:
        print(f"note: {entry.name} ships its own modelling code; it is not run unless trust_remote_code=True. "
              "transformers' built-in YaRN from config.json is used instead.", file=sys.stderr)
    metadata = gguf_metadata(path) if is_gguf else None
    if template is not None:
        name = get_template(template).name
    elif entry is not None:
        name = entry.template
    else:
        name = template_for_model(str(path), gguf_metadata=metadata)
    if chosen == "llama.cpp":
        if quantization:
            raise UserError("quantization applies to the transformers back end; for llama.cpp pick a quantized "
                            "GGUF (e.g. Q4_K_M) instead")
        return load_llama_cpp(path, template=name, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx, rope=rope,
                              defaults=defaults, metadata=metadata)
    return load_transformers(path, template=name, quantization=quantization, device=device, dtype=dtype,
                             n_ctx=n_ctx, rope=rope, trust_remote_code=trust_remote_code,
                             catalog_rope=entry.rope_scaling if entry is not None else None, defaults=defaults)


# ----------------------------------------------------------------------------- CLI
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
    gen = {k: getattr(args, k) for k in ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty")}
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


def _print_stream(pieces: Iterator[str]) -> str:
    parts = []
    for piece in pieces:
        parts.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(parts)


def __getattr__(name: str) -> Any:
    # the notebook pieces live in helpers.chatui; keep them reachable from here
    if name in ("chat_widget", "ChatBox", "start_openai_server", "openai_chat"):
        from . import chatui

        return getattr(chatui, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Backend", "TransformersBackend", "LlamaCppBackend", "load_backend", "speculative_generate",
           "ntk_alpha", "ntk_rope_base", "plan_rope", "RopePlan", "gguf_metadata", "StopFilter",
           "chat_widget", "start_openai_server", "openai_chat", "add_arguments", "run"]
