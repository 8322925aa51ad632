"""``python -m helpers chat --model M [--prompt P]``: one streamed reply, or an interactive chat in the terminal."""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Iterator

from ..util.params import param
from .options import ChatOptions, LoadOptions


@dataclass(frozen=True)
class ChatPrompt:
    """What is asked: one question, or an interactive chat; and the system prompt."""

    prompt: str | None = param(None, "one question: print one streamed reply and exit (default: interactive)")
    system: str | None = param(None, "system prompt (default: the template's; '' for none)")


OPTIONS = (LoadOptions, ChatPrompt, ChatOptions)


def main(load: LoadOptions, ask: ChatPrompt, options: ChatOptions) -> int:
    """One streamed reply to ``ask.prompt``, or a chat on the terminal until an empty line or ``/exit``."""
    gen = dataclasses.asdict(options)
    backend = load.load()
    if ask.prompt is not None:
        _print_stream(backend.chat(ask.prompt, system=ask.system, stream=True, **gen))
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
        reply = _print_stream(backend.chat(user, history=history, system=ask.system, stream=True, **gen))
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
