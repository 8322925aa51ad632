"""Notebook pieces for chatting: an ipywidgets chat box and an OpenAI-compatible server over a GGUF.

``chat_widget(backend)`` shows a transcript, a question box, Send / Stop / Reset buttons and sliders
for the sampling settings; replies stream in token by token from a background thread, so the Stop
button works while the model is talking. ``start_openai_server(gguf)`` starts llama-cpp-python's
server (what laptop users plug other tools into) and ``openai_chat(url, messages)`` calls its
``/v1/chat/completions`` with nothing but the standard library.
"""
from __future__ import annotations

import html
import importlib.util
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from .util import UserError

SERVER_MODULES = ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


# ----------------------------------------------------------------------------- chat box
class ChatBox:
    """An ipywidgets chat box bound to a :class:`helpers.infer.Backend`.

    Attributes:
        widget: the ``ipywidgets.VBox`` to display (the object itself also displays as it).
        history: the finished ``(question, answer)`` turns.
        stop_event: set by the Stop button; generation ends after the current token.
    """

    def __init__(self, backend: Any, *, system: str | None = None, **defaults: Any) -> None:
        import ipywidgets as w

        from .templates import get_template

        self.backend = backend
        self.history: list[tuple[str, str]] = []
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._done_html = ""
        s = backend.settings(**defaults)
        default_system = get_template(backend.template).default_system
        self.transcript = w.HTML(value="", layout=w.Layout(width="100%", max_height="420px", overflow="auto"))
        self.question = w.Textarea(placeholder="Type a question, then Send", layout=w.Layout(width="100%"))
        self.system = w.Textarea(value=default_system if system is None else system, description="system",
                                 layout=w.Layout(width="100%"))
        self.temperature = w.FloatSlider(value=float(s["temperature"]), min=0.0, max=2.0, step=0.05,
                                         description="temperature")
        self.top_k = w.IntSlider(value=int(s["top_k"] or 0), min=0, max=200, description="top_k")
        self.top_p = w.FloatSlider(value=float(s["top_p"]), min=0.05, max=1.0, step=0.05, description="top_p")
        self.repetition_penalty = w.FloatSlider(value=float(s["repetition_penalty"]), min=1.0, max=2.0, step=0.05,
                                                description="rep. penalty")
        self.max_new_tokens = w.IntSlider(value=int(s["max_new_tokens"]), min=1, max=max(2048, s["max_new_tokens"]), description="max tokens")
        self.send_button = w.Button(description="Send", button_style="primary", icon="paper-plane")
        self.stop_button = w.Button(description="Stop", button_style="warning", icon="stop")
        self.reset_button = w.Button(description="Reset", icon="trash")
        self.status = w.Label(value=f"{backend.name} · {backend.path.name} · template {backend.template}")
        self.send_button.on_click(self._on_send)
        self.stop_button.on_click(lambda _: self.stop())
        self.reset_button.on_click(lambda _: self.reset())
        sliders = w.VBox([self.temperature, self.top_k, self.top_p, self.repetition_penalty, self.max_new_tokens])
        self.widget = w.VBox([
            self.transcript, self.question,
            w.HBox([self.send_button, self.stop_button, self.reset_button]),
            w.Accordion(children=[w.VBox([self.system, sliders])], titles=("settings",)),
            self.status,
        ])

    # -- actions
    def settings(self) -> dict:
        """The sampling settings the sliders show."""
        return {"temperature": self.temperature.value, "top_k": self.top_k.value, "top_p": self.top_p.value,
                "repetition_penalty": self.repetition_penalty.value, "max_new_tokens": self.max_new_tokens.value}

    def send(self, text: str | None = None, *, wait: bool = True) -> str | None:
        """Ask ``text`` (default: the question box); with ``wait`` return the reply when it is complete."""
        text = (self.question.value if text is None else text).strip()
        if not text or (self._thread is not None and self._thread.is_alive()):
            return None
        self.question.value = ""
        self.stop_event.clear()
        result: list[str] = []
        self._thread = threading.Thread(target=self._turn, args=(text, result), daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()
            return result[0] if result else None
        return None

    def stop(self) -> None:
        """Stop the reply being generated."""
        self.stop_event.set()

    def reset(self) -> None:
        """Forget the conversation."""
        self.stop()
        if self._thread is not None:
            self._thread.join()
        self.history.clear()
        self._done_html = ""
        self.transcript.value = ""

    def _on_send(self, _button: Any) -> None:
        self.send(wait=False)

    def _turn(self, text: str, result: list[str]) -> None:
        question = _bubble("you", text)
        parts: list[str] = []
        self.send_button.disabled = True
        try:
            for piece in self.backend.chat(text, history=self.history, system=self.system.value, stream=True,
                                           stop_event=self.stop_event, **self.settings()):
                parts.append(piece)
                self.transcript.value = self._done_html + question + _bubble("model", "".join(parts) + " ▌")
            reply = "".join(parts)
            stats = self.backend.last_stats
            self.status.value = (f"{stats.get('new_tokens', 0)} tokens, {stats.get('tokens_per_s', 0.0):.1f} tok/s"
                                 + (" (stopped)" if self.stop_event.is_set() else ""))
        except Exception as exc:  # noqa: BLE001 - shown in the box; the kernel keeps running
            reply = "".join(parts)
            self.status.value = f"error: {exc}"
        finally:
            self.send_button.disabled = False
        self.history.append((text, reply))
        self._done_html += question + _bubble("model", reply)
        self.transcript.value = self._done_html
        result.append(reply)

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)


def _bubble(who: str, text: str) -> str:
    color = "#eef" if who == "you" else "#efe"
    return (f'<div style="background:{color};padding:4px 8px;margin:4px 0;border-radius:6px;white-space:pre-wrap">'
            f"<b>{who}:</b> {html.escape(text)}</div>")


def chat_widget(backend: Any, *, system: str | None = None, **defaults: Any) -> ChatBox:
    """Build the notebook chat box for ``backend`` (display the returned object, or its ``.widget``).

    Args:
        backend: a loaded :class:`helpers.infer.Backend`.
        system: the system prompt to start with (default: the template's).
        **defaults: initial slider values (``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``,
            ``max_new_tokens``); the release's recommended values otherwise.
    """
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        raise UserError("the chat box needs ipywidgets: pip install ipywidgets") from None
    return ChatBox(backend, system=system, **defaults)


# ----------------------------------------------------------------------------- OpenAI-compatible server
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
