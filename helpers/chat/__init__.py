"""Chat: one interface over transformers and llama.cpp, long context, speculative decoding, widget and server.

:func:`load_backend` takes an HF folder, a ``.gguf`` file, a hub id or a catalog name and returns a
:class:`Backend` whose :meth:`Backend.chat` renders the release's own prompt template, drops the oldest turns
beyond a token budget, generates (streamed or not) and stops at the template's end-of-turn tokens and stop
strings, which never appear in the reply.

- :mod:`.backend`: the :class:`Backend` interface and :class:`StopFilter`;
- :mod:`.hf` / :mod:`.llamacpp`: the transformers and llama.cpp back ends;
- :mod:`.load`: :func:`load_backend` and :func:`resolve`;
- :mod:`.longctx`: RoPE scaling plans (NTK, linear, YaRN);
- :mod:`.speculative`: :func:`speculative_generate`;
- :mod:`.guidance`: CFG sampling (``guidance_scale``, ``negative_prompt``) on both back ends;
- :mod:`.widget` / :mod:`.server`: the notebook chat box and the OpenAI-compatible server (:func:`serve`); the
  server process is :mod:`.openai_app` (routes :mod:`.openai_routes`, requests and errors :mod:`.openai_types`, the
  worker thread :mod:`.openai_service`, the token loop :mod:`.engine`; bounded queue and API key in
  :mod:`.admission`);
- :mod:`.options`: the settings of a load, a reply and the server, declared once; :mod:`.command` /
  :mod:`.serve_command`: ``python -m helpers chat`` and ``python -m helpers serve``.
"""
from __future__ import annotations

from .backend import Backend
from .hf import load_hf_model
from .llamacpp import DEFAULT_N_CTX
from .load import choose_gguf, load_backend, resolve
from .server import serve
from .speculative import speculative_generate
from .widget import chat_widget

__all__ = ["DEFAULT_N_CTX", "Backend", "chat_widget", "choose_gguf", "load_backend", "load_hf_model", "resolve",
           "serve", "speculative_generate"]
