"""The back-end interface: :class:`Backend` (settings, templated chat, history budget, streaming) and
:class:`StopFilter`, which cuts streamed text at the template's stop strings.

The concrete back ends are :class:`.hf.TransformersBackend` and :class:`.llamacpp.LlamaCppBackend`;
:func:`helpers.chat.load_backend` picks one.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..tokens import build_prompt, generation_defaults, get_template
from ..tokens.templates import truncate_history
from ..util import UserError
from .guidance import OFF, check_scale, negative_chat_text

GEN_KEYS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "do_sample", "guidance_scale",
            "negative_prompt")
HISTORY_TOKENS_LLAMA2 = 1024  # the Chinese-Alpaca-2 scripts keep at most 1024 tokens of history


# ----------------------------------------------------------------------------- stop strings
class StopFilter:
    """Cut streamed text at the first stop string, holding back text that may start one."""

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = [s for s in stops if s]
        self.buffer = ""
        self.hit = False

    def feed(self, text: str) -> str:
        """Add ``text``; return what is safe to show now."""
        if self.hit:
            return ""
        self.buffer += text
        found = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if found:
            out, self.buffer, self.hit = self.buffer[:min(found)], "", True
            return out
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.buffer)), hold, -1):
                if self.buffer.endswith(s[:k]):
                    hold = k
                    break
        out = self.buffer[:len(self.buffer) - hold]
        self.buffer = self.buffer[len(self.buffer) - hold:]
        return out

    def flush(self) -> str:
        """The held-back text once generation has ended."""
        out, self.buffer = ("" if self.hit else self.buffer), ""
        return out


# ----------------------------------------------------------------------------- the interface
class Backend:
    """A loaded model behind one interface.

    The back ends are :class:`.hf.TransformersBackend` and
    :class:`.llamacpp.LlamaCppBackend`.

    Attributes:
        name: ``transformers`` or ``llama.cpp``.
        template: the prompt template id (:mod:`helpers.templates`).
        tokenizer: the tokenizer (:func:`helpers.tokens.load_tokenizer` for HF folders).
        path: the model folder or GGUF file.
        n_ctx: the context length in use.
        defaults: sampling settings applied when a call leaves them out.
        last_stats: ``new_tokens``, ``seconds`` and ``tokens_per_s`` of the last generation.
    """

    name = "base"

    def __init__(self, *, template: str, path: Path, n_ctx: int, defaults: dict | None = None) -> None:
        self.template = get_template(template).name
        self.path = Path(path)
        self.n_ctx = int(n_ctx)
        base = {**generation_defaults(self.template).as_kwargs(), "guidance_scale": OFF, "negative_prompt": None}
        self.defaults = {**base, **(defaults or {})}
        self.last_stats: dict[str, float] = {}
        self.tokenizer: Any = None

    # -- to implement
    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as the model sees it (BOS included)."""
        raise NotImplementedError

    def stop_strings(self) -> list[str]:
        """Strings that end a reply."""
        return list(get_template(self.template).stop_strings)

    def _pieces(self, prompt_text: str, settings: dict, user_stop: threading.Event | None,
                halt: threading.Event) -> Iterator[str]:
        raise NotImplementedError

    # -- shared
    def settings(self, **gen: Any) -> dict:
        """The sampling settings for a call: ``defaults`` overridden by ``gen`` (None values ignored)."""
        unknown = set(gen) - set(GEN_KEYS)
        if unknown:
            raise UserError(f"unknown generation settings {sorted(unknown)}; use {', '.join(GEN_KEYS)}")
        s = {**self.defaults, **{k: v for k, v in gen.items() if v is not None}}
        s["max_new_tokens"] = int(s["max_new_tokens"])
        if s["max_new_tokens"] <= 0:
            raise UserError("max_new_tokens must be positive")
        if s["temperature"] is None or float(s["temperature"]) <= 0:
            s["do_sample"] = False
        s["do_sample"] = bool(s["do_sample"])
        s["guidance_scale"] = check_scale(s["guidance_scale"])
        s["negative_prompt"] = (s["negative_prompt"] or None) if s["guidance_scale"] != OFF else None
        return s

    def generate(self, prompt_text: str, *, stream: bool = False, stop_event: threading.Event | None = None,
                 **gen: Any) -> str | Iterator[str]:
        """Continue ``prompt_text`` (already templated; the tokenizer adds BOS).

        Args:
            prompt_text: the prompt.
            stream: return an iterator of text pieces instead of the whole reply.
            stop_event: set it (e.g. from a stop button) to end generation early.
            **gen: ``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``,
                ``do_sample`` (temperature 0 or ``do_sample=False`` decodes greedily); ``guidance_scale`` and
                ``negative_prompt`` for CFG sampling (:mod:`.guidance`; here the negative prompt is used as given).

        Returns:
            The reply (stop strings and end-of-turn tokens removed), or an iterator of its pieces.
        """
        it = self._stream(prompt_text, self.settings(**gen), stop_event)
        return it if stream else "".join(it)

    def _stream(self, prompt_text: str, settings: dict, stop_event: threading.Event | None) -> Iterator[str]:
        halt = threading.Event()
        cut = StopFilter(self.stop_strings())
        start = time.perf_counter()
        self.last_stats = {"new_tokens": 0, "seconds": 0.0, "tokens_per_s": 0.0}
        pieces = self._pieces(prompt_text, settings, stop_event, halt)
        try:
            for piece in pieces:
                out = cut.feed(piece)
                if out:
                    yield out
                if cut.hit:
                    halt.set()
                    break
            tail = cut.flush()
            if tail:
                yield tail
        finally:
            halt.set()
            pieces.close()
            dt = time.perf_counter() - start
            n = self.last_stats.get("new_tokens", 0)
            self.last_stats.update(seconds=dt, tokens_per_s=n / dt if dt > 0 else 0.0)

    def chat(self, user: str, *, history: Sequence[tuple[str, str]] = (), system: str | None = None,
             stream: bool = False, max_history_tokens: int | None = None,
             stop_event: threading.Event | None = None, **gen: Any) -> str | Iterator[str]:
        """Reply to ``user`` after earlier ``(question, answer)`` turns, in the model's own template.

        The oldest turns are dropped until the prompt fits ``max_history_tokens`` (default: 1024 for the
        Alpaca-2 template as the releases did, else the context minus ``max_new_tokens``).

        Args:
            user: the question.
            history: earlier turns, oldest first.
            system: system prompt (None: the template's default; "": none).
            stream: return an iterator of text pieces.
            max_history_tokens: token budget of the whole prompt.
            stop_event: set it to stop early.
            **gen: sampling settings, as for :meth:`generate`; a ``negative_prompt`` (CFG sampling) takes the system
                prompt's place in the same template and turns (:func:`.guidance.negative_chat_text`).
        """
        s = self.settings(**gen)
        budget = max_history_tokens or self._history_budget(s["max_new_tokens"])
        kept = self._kept(user, history, system, budget)
        prompt = build_prompt(get_template(self.template), user, history=kept, system=system)
        if s["negative_prompt"]:
            s["negative_prompt"] = negative_chat_text(self.template, user, kept, s["negative_prompt"])
        pieces = lstrip_stream(self._stream(prompt, s, stop_event))
        return pieces if stream else "".join(pieces)

    def prompt(self, user: str, *, history: Sequence[tuple[str, str]] = (), system: str | None = None,
               max_tokens: int | None = None) -> str:
        """The prompt :meth:`chat` sends for ``user``: the model's template around the turns, the oldest turns
        dropped until it fits ``max_tokens`` (no limit when None). Give it to :meth:`generate` or to
        :func:`helpers.chat.speculative_generate`, which take templated text."""
        kept = self._kept(user, history, system, max_tokens)
        return build_prompt(get_template(self.template), user, history=kept, system=system)

    def _kept(self, user: str, history: Sequence[tuple[str, str]], system: str | None,
              max_tokens: int | None) -> list[tuple[str, str]]:
        """The turns of ``history`` the prompt keeps within ``max_tokens`` (all when None)."""
        if max_tokens is None:
            return list(history)
        return truncate_history(get_template(self.template), user, list(history), count_tokens=self.count_tokens,
                                max_tokens=max_tokens, system=system)

    def _history_budget(self, max_new_tokens: int) -> int:
        room = max(self.n_ctx - max_new_tokens, 64)
        return min(HISTORY_TOKENS_LLAMA2, room) if self.template.startswith("llama2") else room

    def close(self) -> None:
        """Free the model's memory."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path.name} template={self.template} n_ctx={self.n_ctx}>"


def lstrip_stream(pieces: Iterator[str]) -> Iterator[str]:
    started = False
    try:
        for piece in pieces:
            if not started:
                piece = piece.lstrip()
                started = bool(piece)
            if piece:
                yield piece
    finally:
        pieces.close()

