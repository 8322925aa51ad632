"""The OpenAI requests :mod:`.openai_app` accepts (pydantic models), and the one error shape it answers with.

Every refusal is an :class:`ApiError`, sent as OpenAI's error object ``{"error": {"message", "type", "param",
"code"}}`` (:func:`error_body`). A message never repeats the request body. What is checked here, before anything is
generated (so a streamed request is refused with its status, never with a 200 and an empty stream):

- the body is a JSON object, whatever its ``Content-Type`` (clients that send JSON as ``text/plain`` are served);
- numbers in OpenAI's ranges (``temperature`` 0-2, ``top_p`` 0-1, ``n`` 1-:data:`MAX_N`, ``max_tokens`` and
  ``max_completion_tokens`` 1 or more, penalties -2-2, ``top_logprobs`` 0-20, at most 4 ``stop`` strings);
- messages: roles ``system``, ``developer`` (read as ``system``), ``user``, ``assistant``; content a string or a list
  of text parts (joined with a newline, as vLLM does), ``null`` only for an assistant;
- completions need a ``prompt``; embeddings an ``input``.
"""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_N = 16  # choices per request (each is generated in turn)
ROLES = ("system", "developer", "user", "assistant")
_TYPE_NAMES = {"str", "int", "float", "bool", "dict", "list", "none"}  # pydantic names union members in an error's loc


class ApiError(Exception):
    """A request the server refuses: HTTP ``status`` and OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Sampling(BaseModel):
    """Fields chat and completions share (llama.cpp's extras too: ``top_k``, ``min_p``, ``repeat_penalty``,
    ``min_tokens``, ``grammar``). Unknown fields are ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    n: int | None = Field(None, ge=1, le=MAX_N)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    logit_bias: dict[str, float] | None = None
    min_tokens: int | None = Field(None, ge=0)
    grammar: str | None = None
    user: str | None = None


class ChatRequest(_Sampling):
    messages: list[Any] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict | None = None
    tools: list | None = None
    tool_choice: Any = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    echo: bool | None = False
    logprobs: int | None = Field(None, ge=0, le=5)


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


def parse(model: type[BaseModel], body: bytes) -> Any:
    """``body`` (JSON, whatever the Content-Type said) as a ``model``.

    Raises:
        ApiError: 400, naming the field and what is wrong (never repeating the body).
    """
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        message = f"{exc.msg} at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) \
            else "not UTF-8"
        raise ApiError(400, f"the request body is not valid JSON ({message})") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        request = model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_input=False)[0]
        loc = [str(x) for x in err.get("loc", ())]
        param = loc[0] if loc else None
        where = "".join(f"[{x}]" if x.isdigit() else f".{x}" for x in loc
                        if x.isdigit() or not (x in _TYPE_NAMES or "[" in x)).lstrip(".") or "body"
        raise ApiError(400, f"{where}: {err.get('msg', 'invalid')}", param=param) from None
    stop = getattr(request, "stop", None)
    if isinstance(stop, list) and len(stop) > 4:
        raise ApiError(400, "stop: at most 4 stop sequences", param="stop")
    return request


def chat_messages(messages: list[Any]) -> list[dict]:
    """The messages as ``[{"role": system|user|assistant, "content": str}]`` for the template.

    Raises:
        ApiError: 400 for a message that is not an object, a role this server does not take, or content that is not
            text.
    """
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ApiError(400, f"messages[{i}]: an object with 'role' and 'content' is required", param="messages")
        role = m.get("role")
        if role in ("tool", "function"):
            raise ApiError(400, f"messages[{i}].role: '{role}' messages are not supported (this server does not "
                                "call tools)", param="messages")
        if role not in ROLES:
            raise ApiError(400, f"messages[{i}].role: one of {', '.join(ROLES)} is required", param="messages")
        out.append({"role": "system" if role == "developer" else role,
                    "content": _text(m.get("content"), f"messages[{i}].content", role)})
    return out


def _text(content: Any, where: str, role: str) -> str:
    if isinstance(content, str):
        return content
    if content is None and role == "assistant":
        return ""
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ApiError(400, f"{where}[{j}]: only text parts ({{\"type\": \"text\", \"text\": ...}}) are "
                                    f"supported, not {kind!s}: this model reads text", param="messages")
            texts.append(part["text"])
        return "\n".join(texts)
    raise ApiError(400, f"{where}: a string or a list of text parts is required, not {type(content).__name__}",
                   param="messages")
