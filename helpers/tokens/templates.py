"""Prompt templates of the Chinese LLaMA/Alpaca releases, rendered byte for byte as they were trained.

Four formats are known (plus a long-answer system prompt for the v2 chat models):

- ``alpaca`` (v1 Chinese-Alpaca): ``### Instruction:`` / ``### Response: `` blocks under a header sentence.
- ``llama2-zh`` / ``llama2-zh-long`` (Chinese-Alpaca-2): ``[INST] <<SYS>>...<</SYS>> ... [/INST]``; later turns
  are joined with a literal ``</s><s>``. The first BOS comes from the tokenizer, never from the text.
- ``llama3`` (Llama-3-Chinese-Instruct): header/``<|eot_id|>`` blocks; ``<|begin_of_text|>`` comes from the tokenizer.
- ``raw``: plain continuation for base (non-chat) models.

A system prompt of ``None`` means the template's default; an empty string means "no system block".
The same formats are exported as a Jinja2 chat template (HF ``tokenizer_config.json``: :func:`jinja_chat_template`;
GGUF ``tokenizer.chat_template``: :func:`gguf_chat_template`, the same with ``{{ bos_token }}`` first) and as an
Ollama ``TEMPLATE``; all render exactly what :meth:`Template.render` does, and every path feeds the model the same
token ids, one BOS first (``tests/test_prompt_paths.py``):

- transformers: the tokenizer adds the BOS to :meth:`Template.render`'s text (the HF template has none);
- llama-cpp-python's ``create_chat_completion``: the GGUF template's ``{{ bos_token }}``, tokenized with special
  tokens parsed and no BOS added (its Jinja formatter says the template added it);
- llama.cpp (``llama-server --jinja``, ``common/chat.cpp``): strips a leading ``bos_token`` from the rendered text and
  lets the tokenizer add the BOS;
- Ollama: renders the Modelfile ``TEMPLATE`` turn by turn and lets the tokenizer add the BOS, so that template has
  none first.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from ..util import UserError

ALPACA_HEADER = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
ZH_SYSTEM = "You are a helpful assistant. 你是一个乐于助人的助手。"
ZH_SYSTEM_LONG = ZH_SYSTEM + "请你提供专业、有逻辑、内容真实、有价值的详细回复。"

_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Template:
    """One prompt format.

    Attributes:
        name: the template id (a key of :data:`TEMPLATES`).
        default_system: the system prompt used when none is given (``None``: the format has none).
        stop_strings: strings that end a reply when they appear in generated text.
        eot_token: the token that ends an assistant turn (``"<|eot_id|>"`` for llama3, ``"</s>"`` otherwise).
        family: the rendering rules (``alpaca``, ``llama2``, ``llama3``, ``raw``); defaults to ``name``.
    """

    name: str
    default_system: str | None
    stop_strings: tuple[str, ...]
    eot_token: str | None
    family: str = ""

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", self.name)
        if self.family not in _RENDERERS:
            raise ValueError(f"unknown template family {self.family!r}")

    def render(self, messages: Sequence[dict], *, add_generation_prompt: bool = True) -> str:
        """Render OpenAI-style messages as the prompt text the model was trained on.

        Args:
            messages: ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``; a system message
                may only come first.
            add_generation_prompt: append the assistant-turn opener (``### Response: `` for alpaca, the
                assistant header for llama3; llama2-zh and raw have none).

        Returns:
            The prompt text, without the BOS the tokenizer adds.
        """
        system, turns = _split_system(messages, self.default_system)
        return _RENDERERS[self.family](system, turns, add_generation_prompt)


def _split_system(messages: Sequence[dict], default: str | None) -> tuple[str | None, list[tuple[str, str]]]:
    """Validate ``messages``; return (system prompt, [(role, content), ...] without the system message)."""
    turns: list[tuple[str, str]] = []
    system = default
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise UserError(f"message {i} must be a dict with 'role' and 'content'; got {message!r}")
        role, content = message["role"], message["content"]
        if role not in _ROLES:
            raise UserError(f"message {i} has role {role!r}; use one of {', '.join(_ROLES)}")
        if not isinstance(content, str):
            raise UserError(f"message {i} content must be a string, not {type(content).__name__}")
        if role == "system":
            if i != 0:
                raise UserError("a system message may only be the first message")
            system = content
        else:
            turns.append((role, content))
    return system, turns


def _render_alpaca(system: str | None, turns: list[tuple[str, str]], gen: bool) -> str:
    parts = [system + "\n\n"] if system else []
    for role, content in turns:
        parts.append(f"### Instruction:\n{content}\n\n" if role == "user" else f"### Response: {content}\n\n")
    if gen:
        parts.append("### Response: ")
    return "".join(parts)


def _render_llama2(system: str | None, turns: list[tuple[str, str]], gen: bool) -> str:
    parts: list[str] = []
    first = True
    for role, content in turns:
        if role == "user":
            if first:
                sys_block = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if system else ""
                parts.append(f"[INST] {sys_block}{content} [/INST]")
                first = False
            else:
                parts.append(f"<s>[INST] {content} [/INST]")
        else:
            parts.append(f" {content}</s>")
    return "".join(parts)  # the generation prompt is empty: the model continues after "[/INST]"


def _render_llama3(system: str | None, turns: list[tuple[str, str]], gen: bool) -> str:
    def block(role: str, content: str) -> str:
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"

    parts = [block("system", system)] if system else []
    parts += [block(role, content) for role, content in turns]
    if gen:
        parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


def _render_raw(system: str | None, turns: list[tuple[str, str]], gen: bool) -> str:
    return "".join(content for _, content in turns)  # roles and system prompts are ignored


_RENDERERS: dict[str, Callable[[str | None, list[tuple[str, str]], bool], str]] = {
    "alpaca": _render_alpaca,
    "llama2": _render_llama2,
    "llama3": _render_llama3,
    "raw": _render_raw,
}

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template("alpaca", ALPACA_HEADER, ("</s>", "### Instruction:"), "</s>"),
        Template("llama2-zh", ZH_SYSTEM, ("</s>",), "</s>", family="llama2"),
        Template("llama2-zh-long", ZH_SYSTEM_LONG, ("</s>",), "</s>", family="llama2"),
        Template("llama3", ZH_SYSTEM, ("<|eot_id|>", "<|end_of_text|>"), "<|eot_id|>"),
        Template("raw", None, ("</s>",), "</s>"),
    )
}


def get_template(name: str | Template) -> Template:
    """Return the template called ``name`` (a :class:`Template` is returned unchanged).

    Raises:
        UserError: for an unknown name, listing the valid ones.
    """
    if isinstance(name, Template):
        return name
    try:
        return TEMPLATES[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown prompt template {name!r}; choose one of: {', '.join(TEMPLATES)}") from None


def _messages(user: str, history: Iterable[tuple[str, str]], system: str | None) -> list[dict]:
    messages = [] if system is None else [{"role": "system", "content": system}]
    for question, answer in history:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": user})
    return messages


def build_prompt(
    template: str | Template,
    user: str,
    *,
    history: Iterable[tuple[str, str]] = (),
    system: str | None = None,
) -> str:
    """Build the generation prompt for ``user`` after earlier ``(question, answer)`` turns.

    Args:
        template: a template id or :class:`Template`.
        user: the current question.
        history: earlier turns, oldest first.
        system: the system prompt; ``None`` uses the template default, ``""`` omits the system block.
    """
    return get_template(template).render(_messages(user, history, system), add_generation_prompt=True)


def truncate_history(
    template: str | Template,
    user: str,
    history: Sequence[tuple[str, str]],
    *,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    system: str | None = None,
) -> list[tuple[str, str]]:
    """Drop the oldest turns until the prompt fits in ``max_tokens`` (as counted by ``count_tokens``).

    The current question is always kept, even when it alone is longer than ``max_tokens``.

    Returns:
        The turns to keep, oldest first.
    """
    kept = list(history)
    while kept and count_tokens(build_prompt(template, user, history=kept, system=system)) > max_tokens:
        kept.pop(0)
    return kept


# ----------------------------------------------------------------------------- Jinja / Ollama exports


def _lit(text: str) -> str:
    """A Jinja2 string literal for ``text`` (JSON string escaping is valid Jinja2 syntax)."""
    return json.dumps(text, ensure_ascii=False)


_JINJA_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set system = DEFAULT %}"
    "{% set loop_messages = messages %}{% endif %}"
)
_JINJA_BAD_ROLE = "{% else %}{{ raise_exception('Only user and assistant roles may follow the system message') }}"


def jinja_chat_template(name: str | Template) -> str:
    """Return a Jinja2 chat template that renders exactly what :meth:`Template.render` renders.

    The template never emits the leading BOS (the tokenizer adds it); it is written on one line with all
    text in string literals, so HF's ``trim_blocks``/``lstrip_blocks`` and llama.cpp's minja render it alike.
    """
    t = get_template(name)
    head = _JINJA_SYSTEM.replace("DEFAULT", _lit(t.default_system) if t.default_system is not None else "''")
    loop = "{% for message in loop_messages %}"
    if t.family == "alpaca":
        body = (
            head + "{% if system %}{{ system + " + _lit("\n\n") + " }}{% endif %}" + loop
            + "{% if message['role'] == 'user' %}{{ " + _lit("### Instruction:\n") + " + message['content'] + "
            + _lit("\n\n") + " }}{% elif message['role'] == 'assistant' %}{{ " + _lit("### Response: ")
            + " + message['content'] + " + _lit("\n\n") + " }}" + _JINJA_BAD_ROLE + "{% endif %}{% endfor %}"
            + "{% if add_generation_prompt %}{{ " + _lit("### Response: ") + " }}{% endif %}"
        )
    elif t.family == "llama2":
        body = (
            head + "{% set ns = namespace(first=true) %}" + loop
            + "{% if message['role'] == 'user' %}{% if ns.first %}{{ '[INST] ' }}{% if system %}{{ "
            + _lit("<<SYS>>\n") + " + system + " + _lit("\n<</SYS>>\n\n") + " }}{% endif %}"
            + "{% set ns.first = false %}{% else %}{{ '<s>[INST] ' }}{% endif %}"
            + "{{ message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
            + "{{ ' ' + message['content'] + '</s>' }}" + _JINJA_BAD_ROLE + "{% endif %}{% endfor %}"
        )
    elif t.family == "llama3":
        hdr = "'<|start_header_id|>' + {} + '<|end_header_id|>" + "\\n\\n'"
        body = (
            head + "{% if system %}{{ " + hdr.format("'system'") + " + system + '<|eot_id|>' }}{% endif %}" + loop
            + "{% if message['role'] in ['user', 'assistant'] %}{{ " + hdr.format("message['role']")
            + " + message['content'] + '<|eot_id|>' }}" + _JINJA_BAD_ROLE + "{% endif %}{% endfor %}"
            + "{% if add_generation_prompt %}{{ " + hdr.format("'assistant'") + " }}{% endif %}"
        )
    else:  # raw
        body = (
            "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['content'] }}"
            "{% endif %}{% endfor %}"
        )
    return body


def gguf_chat_template(name: str | Template) -> str:
    """The chat template a GGUF carries: :func:`jinja_chat_template` with ``{{ bos_token }}`` first.

    llama-cpp-python's Jinja chat path tokenizes the rendered text without adding a BOS, so the template must give it;
    llama.cpp's own (``common/chat.cpp``) strips a leading ``bos_token`` and adds it back when tokenizing; both end
    with exactly one BOS, as the releases were trained (the tokenizer's BOS before :meth:`Template.render`'s text).
    """
    return "{{ bos_token }}" + jinja_chat_template(name)


def ollama_template(name: str | Template) -> str:
    """Return an Ollama Modelfile ``TEMPLATE`` (Go template using ``.System``, ``.Prompt``, ``.Response``).

    Ollama renders such a template once per turn and sets ``.System`` only on the turn that follows a
    system message, i.e. the first one; the Modelfile's ``SYSTEM`` (:attr:`Template.default_system`) is that message
    unless the request brings its own (an empty one: no system block). Text after ``{{ .Response }}`` is left out
    while generating, so the generation prompt ends exactly like :meth:`Template.render`'s. Ollama's tokenizer adds
    the BOS (``Tokenize(prompt, addSpecial=true)`` in its runner), so the template never starts with one; for
    llama2-zh the ``</s><s>`` between turns ends the turn before, so a first turn without a system block gets no
    second BOS.
    """
    t = get_template(name)
    if t.family == "alpaca":
        return (
            "{{ if .System }}{{ .System }}\n\n{{ end }}"
            "### Instruction:\n{{ .Prompt }}\n\n### Response: {{ .Response }}\n\n"
        )
    if t.family == "llama2":
        return (
            "[INST] {{ if .System }}<<SYS>>\n{{ .System }}\n<</SYS>>\n\n{{ end }}"
            "{{ .Prompt }} [/INST]{{ if .Response }} {{ .Response }}</s><s>{{ end }}"
        )
    if t.family == "llama3":
        return (
            "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
            "{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}"
            "<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>"
        )
    return "{{ .Prompt }}{{ .Response }}"


# ----------------------------------------------------------------------------- generation defaults


@dataclass(frozen=True)
class GenerationDefaults:
    """Sampling settings recommended by a release (``model.generate`` keyword names)."""

    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    max_new_tokens: int
    do_sample: bool = True

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(f"invalid sampling settings: {self}")
        if self.repetition_penalty <= 0 or self.max_new_tokens <= 0:
            raise ValueError(f"invalid sampling settings: {self}")

    def as_kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments for ``model.generate``."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


_GENERATIONS = {"v1": "alpaca", "v2": "llama2-zh", "v3": "llama3"}


def generation_defaults(template_or_generation: str) -> GenerationDefaults:
    """Recommended sampling for a template id or a release generation (``v1``, ``v2``, ``v3``).

    The releases' ``inference_hf.py`` scripts all sample with temperature 0.2, top-k 40, top-p 0.9,
    repetition penalty 1.1 and 400 new tokens (their demos and servers vary; these are the documented
    HF-inference values), so every template gets the same defaults.
    """
    key = _GENERATIONS.get(template_or_generation, template_or_generation)
    if key not in TEMPLATES:
        valid = ", ".join([*TEMPLATES, *_GENERATIONS])
        raise UserError(f"unknown template or generation {template_or_generation!r}; choose one of: {valid}")
    return GenerationDefaults(temperature=0.2, top_k=40, top_p=0.9, repetition_penalty=1.1, max_new_tokens=400)
