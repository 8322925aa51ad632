"""``python -m helpers serve --model MODEL [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--timeout S]``: the
OpenAI-compatible server as a command (like ``llama-server``), on a GGUF file, a catalog name or a hub id, until
Ctrl-C. The key may come from ``$HELPERS_API_KEY`` instead of the command line (which others can read)."""
from __future__ import annotations

import dataclasses
import os
import signal
import sys

from ..util import UserError
from .admission import API_KEY_ENV
from .options import ServeOptions
from .server import serve

OPTIONS = (ServeOptions,)


def main(options: ServeOptions) -> int:
    """Start the server, print where it is, serve until Ctrl-C or SIGTERM."""
    key = options.api_key or os.environ.get(API_KEY_ENV) or None
    server = serve(dataclasses.replace(options, api_key=key))
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
