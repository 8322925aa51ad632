"""``python -m helpers serve --model MODEL [--host 127.0.0.1] [--port 8000] [--api-key KEY]``: the OpenAI-compatible
server as a command (like ``llama-server``), on a GGUF file, a catalog name or a hub id, until Ctrl-C."""
from __future__ import annotations

import argparse
import os
import signal
import sys

from ..util import UserError
from .admission import DEFAULT_QUEUE
from .llamacpp import DEFAULT_N_CTX
from .server import serve

API_KEY_ENV = "HELPERS_API_KEY"  # the key may come from here instead of the command line (which others can read)


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
    parser.add_argument("--chat-format", default=None, help="a llama-cpp-python chat format (default: the GGUF's "
                                                            "own chat template)")
    parser.add_argument("--max-queue", type=int, default=DEFAULT_QUEUE,
                        help=f"requests waiting behind the one being answered before new ones get 503 (default "
                             f"{DEFAULT_QUEUE})")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers serve``: start the server, print where it is, serve until Ctrl-C or SIGTERM."""
    if args.max_queue < 0:
        raise UserError("--max-queue must be 0 or more")
    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    server = serve(args.model, host=args.host, port=args.port, api_key=key, gguf_quant=args.gguf_quant,
                   n_ctx=args.n_ctx, n_gpu_layers=args.n_gpu_layers, chat_format=args.chat_format,
                   max_queue=args.max_queue)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on the way out, as Ctrl-C does
    try:
        print(f"serving {server.model.name} at {server.url} (OpenAI API: /chat/completions, /completions, /models"
              f"{'; key required' if key else ''}); log: {server.log_path}; Ctrl-C stops it", flush=True)
        rc = server.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
    raise UserError(f"the server stopped by itself (status {rc}); see its log {server.log_path}")
