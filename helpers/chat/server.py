"""An OpenAI-compatible server over a GGUF (llama-cpp-python's), and a standard-library client for it.

``start_openai_server(gguf)`` starts the server (what laptop users plug other tools into) and
``openai_chat(url, messages)`` calls its ``/v1/chat/completions`` with nothing but the standard library.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from ..util import UserError

SERVER_MODULES = ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


def start_openai_server(gguf_path: str | Path, *, port: int = 8000, host: str = "127.0.0.1",
                        chat_format: str | None = None, n_ctx: int = 4096, n_gpu_layers: int | None = None,
                        wait: float = 120.0, log_path: str | Path | None = None) -> subprocess.Popen:
    """Start ``python -m llama_cpp.server`` on a GGUF and wait until it answers.

    Without ``chat_format`` the server formats chats with the GGUF's own ``tokenizer.chat_template``
    (our GGUFs carry the release's template). Stop it with ``proc.terminate()``.

    Args:
        gguf_path: the model file.
        port: TCP port; host: the interface (``0.0.0.0`` to serve other machines).
        chat_format: a llama-cpp-python chat format name (e.g. ``llama-2``, ``llama-3``), if wanted.
        n_ctx: context length; n_gpu_layers: layers on the GPU (default: all when supported).
        wait: seconds to wait for the server to come up (0: do not wait).
        log_path: where the server's output goes (default: beside the GGUF, ``<name>.server.log``).

    Raises:
        UserError: llama-cpp-python's server extras are missing, or the server exits or never answers.
    """
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if importlib.util.find_spec("llama_cpp") is None:
        missing.insert(0, "llama_cpp")
    if missing:
        raise UserError(f"the OpenAI-compatible server needs llama-cpp-python's server extras (missing: "
                        f"{', '.join(missing)}); install them with: pip install 'llama-cpp-python[server]'")
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise UserError(f"GGUF file {gguf_path} not found")
    if n_gpu_layers is None:
        import llama_cpp

        n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path), "--host", host, "--port", str(port),
           "--n_ctx", str(n_ctx), "--n_gpu_layers", str(n_gpu_layers)]
    if chat_format:
        cmd += ["--chat_format", chat_format]
    log = Path(log_path) if log_path else gguf_path.with_name(gguf_path.name + ".server.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    if wait:
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/v1/models"
        deadline = time.monotonic() + wait
        while True:
            if proc.poll() is not None:
                tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
                raise UserError(f"the server exited with status {proc.returncode}: {' | '.join(tail)} (log: {log})")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    proc.terminate()
                    raise UserError(f"the server did not answer on port {port} within {wait:.0f}s (log: {log})") from None
                time.sleep(0.5)
    return proc


def openai_chat(base_url: str, messages: Sequence[dict], *, model: str | None = None, timeout: float = 300.0,
                **gen: Any) -> str:
    """Ask an OpenAI-compatible server for one chat reply (plain HTTP, no SDK).

    Args:
        base_url: ``http://host:port`` or ``http://host:port/v1``.
        messages: ``[{"role": "system"|"user"|"assistant", "content": ...}, ...]``.
        model: the model name to send (llama-cpp-python's server ignores it).
        timeout: seconds to wait for the reply.
        **gen: request fields such as ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``repeat_penalty``,
            ``stop`` (``max_new_tokens`` and ``repetition_penalty`` are translated).

    Returns:
        The assistant's reply text.
    """
    url = base_url.rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    if "max_new_tokens" in gen:
        gen["max_tokens"] = gen.pop("max_new_tokens")
    if "repetition_penalty" in gen:
        gen["repeat_penalty"] = gen.pop("repetition_penalty")
    body = {"model": model or "local", "messages": list(messages), "stream": False, **gen}
    req = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode("utf-8"),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", errors="replace")[:300]
        raise UserError(f"the server at {base_url} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"cannot reach {base_url} ({exc}); is the server running?") from None
    try:
        return data["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise UserError(f"unexpected answer from {base_url}: {str(data)[:300]}") from None
