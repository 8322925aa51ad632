"""``python -m helpers serve --model MODEL [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--timeout S]``: the
OpenAI-compatible server as a command (like ``llama-server``), on a GGUF file, a catalog name or a hub id, until
Ctrl-C. The key may come from ``$HELPERS_API_KEY`` instead of the command line (which others can read)."""
from __future__ import annotations

import argparse
import os
import signal
import sys

from ..util import UserError
from .admission import API_KEY_ENV, DEFAULT_QUEUE, DEFAULT_TIMEOUT
from ..tokens import TEMPLATES
from .llamacpp import DEFAULT_N_CTX
from .server import serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers serve``."""
    parser.add_argument("--model", required=True, help="a .gguf file, a catalog name or a hub id (downloaded and "
                                                       "verified)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine "
                                                            "only; any other needs --api-key)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--api-key", default=None, help=f"clients must send 'Authorization: Bearer KEY' (default: "
                                                        f"${API_KEY_ENV}, else none)")
    parser.add_argument("--gguf-quant", default="q4_k", help="which GGUF of a release repo (q4_k, q8_0, q4_k-im ...)")
    parser.add_argument("--n-ctx", type=int, default=DEFAULT_N_CTX, help=f"context length (default {DEFAULT_N_CTX})")
    parser.add_argument("--n-gpu-layers", type=int, default=None, help="layers on the GPU (default: all when "
                                                                       "llama.cpp has GPU support)")
    parser.add_argument("--template", default=None, choices=list(TEMPLATES),
                        help="the prompt template (default: the release's, from the GGUF's chat template)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds one generation may run before it ends (default {DEFAULT_TIMEOUT:.0f})")
    parser.add_argument("--max-queue", type=int, default=DEFAULT_QUEUE,
                        help=f"requests waiting behind the one being answered before new ones get 503 (default "
                             f"{DEFAULT_QUEUE})")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers serve``: start the server, print where it is, serve until Ctrl-C or SIGTERM."""
    if args.max_queue < 0:
        raise UserError("--max-queue must be 0 or more")
    if args.timeout <= 0:
        raise UserError("--timeout must be more than 0 seconds")
    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    server = serve(args.model, host=args.host, port=args.port, api_key=key, gguf_quant=args.gguf_quant,
                   n_ctx=args.n_ctx, n_gpu_layers=args.n_gpu_layers, template=args.template,
                   max_queue=args.max_queue, timeout=args.timeout)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on the way out, as Ctrl-C does
    try:
        print(f"serving {server.model.name} as '{server.model_id}' at {server.url} (OpenAI API: /chat/completions, "
              f"/completions, /embeddings, /models"
              f"{'; key required' if key else ''}); log: {server.log_path}; Ctrl-C stops it", flush=True)
        rc = server.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
    raise UserError(f"the server stopped by itself (status {rc}); see its log {server.log_path}")
