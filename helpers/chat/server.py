"""An OpenAI-compatible server over a GGUF (llama-cpp-python's), and a standard-library client for it.

``start_openai_server(gguf)`` starts the server (what laptop users plug other tools into) and
``openai_chat(url, messages)`` calls its ``/v1/chat/completions`` with nothing but the standard library.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import uuid
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from ..disk import disk_errors
from ..gguf import server_extras_missing
from ..util import UserError, log_dir
from .llamacpp import DEFAULT_N_CTX

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding ``helpers``, for the server process


def _port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port`` (the check uvicorn's own bind would fail)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _instance(url: str) -> str | None:
    """The instance id the server at ``url`` reports (None: no answer, or not one of ours)."""
    try:
        with urllib.request.urlopen(url + "/helpers/instance", timeout=2) as resp:
            return json.loads(resp.read().decode("utf-8")).get("instance")
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return None


def start_openai_server(gguf_path: str | Path, *, port: int = 8000, host: str = "127.0.0.1",
                        chat_format: str | None = None, n_ctx: int = DEFAULT_N_CTX, n_gpu_layers: int | None = None,
                        wait: float = 120.0, log_path: str | Path | None = None) -> subprocess.Popen:
    """Start an OpenAI-compatible server (llama-cpp-python's, :mod:`.openai_app`) on a GGUF and wait until it answers.

    Without ``chat_format`` the server formats chats with the GGUF's own ``tokenizer.chat_template``
    (our GGUFs carry the release's template). A malformed request gets HTTP 400. It listens on ``host`` only
    (127.0.0.1 unless told otherwise; the ``HOST``/``PORT`` environment variables do not change that). Stop it
    with ``proc.terminate()``; ``proc.log_path`` is where its output goes.

    Args:
        gguf_path: the model file.
        port: TCP port; host: the interface (``0.0.0.0`` to serve other machines).
        chat_format: a llama-cpp-python chat format name (e.g. ``llama-2``, ``llama-3``), if wanted.
        n_ctx: context length; n_gpu_layers: layers on the GPU (default: all when supported).
        wait: seconds to wait for the server to come up (0: do not wait).
        log_path: where the server's output goes (default: ``openai-server-<port>.log`` in
            :func:`helpers.util.log_dir`, so a model in a read-only folder can be served).

    Raises:
        UserError: llama-cpp-python's server extras are missing, the port is taken, or the server exits or never
            answers (the error quotes the end of its log).
    """
    missing = server_extras_missing()
    if importlib.util.find_spec("llama_cpp") is None:
        missing.insert(0, "llama_cpp")
    if missing:
        raise UserError(f"the OpenAI-compatible server needs llama-cpp-python's server extras (missing: "
                        f"{', '.join(missing)}); install them with: pip install 'llama-cpp-python[server]'")
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise UserError(f"GGUF file {gguf_path} not found")
    if _port_in_use(host, port):
        raise UserError(f"port {port} on {host} is already in use (another server?); stop it or choose another port")
    if n_gpu_layers is None:
        import llama_cpp

        n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
    instance = uuid.uuid4().hex
    cmd = [sys.executable, "-m", "helpers.chat.openai_app", "--model", str(gguf_path), "--host", host,
           "--port", str(port), "--n_ctx", str(n_ctx), "--n_gpu_layers", str(n_gpu_layers), "--instance", instance]
    if chat_format:
        cmd += ["--chat_format", chat_format]
    log = Path(log_path) if log_path else log_dir() / f"openai-server-{port}.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
    with disk_errors(log.parent, what="the server log"), open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    proc.log_path = log  # type: ignore[attr-defined]
    if wait:
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        deadline = time.monotonic() + wait
        while _instance(url) != instance:
            if proc.poll() is not None:
                tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
                raise UserError(f"the server exited with status {proc.returncode}: {' | '.join(tail)} (log: {log})")
            if time.monotonic() > deadline:
                proc.terminate()
                raise UserError(f"the server did not answer on port {port} within {wait:.0f}s (log: {log})")
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
