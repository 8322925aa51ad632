"""The notebook chat box: ipywidgets transcript, question box, Send / Stop / Reset and sampling sliders.

``chat_widget(backend)`` builds it; replies stream in token by token from a background thread, so the Stop
button works while the model is talking. It runs on ipywidgets 7 (Colab ships 7.7.1 and does not support 8) and 8:
only the API both share is used (accordion titles through ``set_title``, display through ``IPython.display``).
"""
from __future__ import annotations

import html
import threading
from typing import Any

from ..tokens import get_template
from ..util import UserError


# ----------------------------------------------------------------------------- chat box
class ChatBox:
    """An ipywidgets chat box bound to a :class:`helpers.chat.Backend`.

    Attributes:
        widget: the ``ipywidgets.VBox`` to display (the object itself also displays as it).
        history: the finished ``(question, answer)`` turns.
        stop_event: set by the Stop button; generation ends after the current token.
    """

    def __init__(self, backend: Any, *, system: str | None = None, **defaults: Any) -> None:
        import ipywidgets as w

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
        for name in ("transcript", "question", "status"):  # stable hooks for styling and the browser test
            getattr(self, name).add_class(f"cllama-{name}")
        self.send_button.on_click(self._on_send)
        self.stop_button.on_click(lambda _: self.stop())
        self.reset_button.on_click(lambda _: self.reset())
        sliders = w.VBox([self.temperature, self.top_k, self.top_p, self.repetition_penalty, self.max_new_tokens])
        # Collapsed at first; ipywidgets 7 opens the first page by default and has no ``titles`` argument.
        settings = w.Accordion(children=[w.VBox([self.system, sliders])], selected_index=None)
        settings.set_title(0, "settings")
        self.widget = w.VBox([
            self.transcript, self.question,
            w.HBox([self.send_button, self.stop_button, self.reset_button]),
            settings,
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

    def _ipython_display_(self) -> None:
        # ipywidgets 7 widgets display through _ipython_display_, 8 through _repr_mimebundle_: let IPython choose.
        from IPython.display import display

        display(self.widget)


def _bubble(who: str, text: str) -> str:
    color = "#eef" if who == "you" else "#efe"
    return (f'<div style="background:{color};padding:4px 8px;margin:4px 0;border-radius:6px;white-space:pre-wrap">'
            f"<b>{who}:</b> {html.escape(text)}</div>")


def chat_widget(backend: Any, *, system: str | None = None, **defaults: Any) -> ChatBox:
    """Build the notebook chat box for ``backend`` (display the returned object, or its ``.widget``).

    Args:
        backend: a loaded :class:`helpers.chat.Backend`.
        system: the system prompt to start with (default: the template's).
        **defaults: initial slider values (``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``,
            ``max_new_tokens``); the release's recommended values otherwise.
    """
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        raise UserError("the chat box needs ipywidgets: pip install ipywidgets") from None
    return ChatBox(backend, system=system, **defaults)
