"""Where logs go: a writable folder for the logs of native tools (llama.cpp) and servers."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import UserError


def log_dir() -> Path:
    """A writable folder for logs: ``$HELPERS_LOG_DIR``, else ``~/.cache/cllama/logs``, else the temp folder."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for d in (os.environ.get("HELPERS_LOG_DIR"), cache / "cllama" / "logs", Path(tempfile.gettempdir()) / "cllama-logs"):
        if d:
            with contextlib.suppress(OSError):
                Path(d).mkdir(parents=True, exist_ok=True)
                if os.access(d, os.W_OK):
                    return Path(d)
    raise UserError("no writable folder for logs; set HELPERS_LOG_DIR to one")
