"""Notebook 03: chat with a model, on the back end that fits it (llama.cpp for a GGUF, transformers for an HF
model, 4/8-bit on a GPU); opt-in, an OpenAI-compatible server and speculative decoding with a draft model.

By default the notebook downloads and loads one model. The plan decides the back end, the quantization that will
really be used, whether speculative decoding runs (asked for with a draft model, which must share the model's
vocabulary; its download and memory are counted) and what the server serves (asked for; a GGUF it downloads is
counted); the run loads exactly that, after freeing what this notebook's earlier run loaded.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import catalog
from ..chat import Backend, chat_widget, load_backend, serve, speculative_generate
from ..chat.docqa import DOCQA_PACKAGES, DocAnswer, document_qa, missing_docqa_packages
from ..chat.options import BACKENDS, ServeOptions
from ..colab import NO, Need, Runtime, bytes_need, wheel_need
from ..colab.sizing import CHAT_CONTEXT, GGUFFile, gguf_file, model_files
from ..env import in_colab
from ..util import UserError, read_utf8
from .base import Plan, Stage
from .form import param
from .held import hold, release
from .memory import llama_cpp_needs, quantization_note, quantization_param, quantized_needs, transformers_loaded
from .needs import MORE_DISK, access_needs
from .workspace import AUTO, WORKSPACE_HELP, Workspace, locate

ROPES = ("none", "auto", "ntk")
SERVER_PORT = 8000


@dataclass(frozen=True)
class ChatJob:
    """What the run loads: ``model`` (found in the workspace, or as given), ``backend`` (``llama.cpp`` or
    ``transformers``), the quantization really used (None: the GGUF's own type, or 16/32-bit), the draft model for
    speculative decoding (None: none) and the GGUF the server serves (None: no server)."""

    model: str
    backend: str
    quantization: str | None
    draft: str | None
    server: str | None


@dataclass
class ChatSession:
    """A loaded model and what the notebook's cells do with it, as the plan decided."""

    stage: ChatStage
    job: ChatJob
    bot: Backend
    extra: dict = field(default_factory=dict)

    def reply(self) -> str:
        """Stream the reply to ``PROMPT`` (with ``SYSTEM_PROMPT``), printing it as it comes."""
        parts = []
        for piece in self.bot.chat(self.stage.prompt, system=self.stage.system_prompt or None,
                                   max_new_tokens=self.stage.max_new_tokens, stream=True):
            print(piece, end="", flush=True)
            parts.append(piece)
        print()
        return "".join(parts)

    def widget(self) -> Any:
        """The chat box (history kept and trimmed by tokens, stop button, sampling sliders)."""
        return chat_widget(self.bot, max_new_tokens=self.stage.max_new_tokens)

    def serve(self) -> str | None:
        """Start the OpenAI-compatible server on the planned GGUF, ask it ``PROMPT`` once, stop it; None when the
        form turned the server off."""
        if self.job.server is None:
            print(f"no server ({self.stage.assignment('start_server', True)} starts one)")
            return None
        served = str(self.bot.path) if self.job.server == "model" else self.job.server
        with serve(ServeOptions(model=served, port=SERVER_PORT)) as server:
            print(f"serving {server.model.name} at {server.url} (OpenAI API)")
            reply = server.chat([{"role": "user", "content": self.stage.prompt}], max_tokens=self.stage.max_new_tokens)
            print(f"its reply to PROMPT: {reply}")
            if self.stage.doc_file:
                self.extra["documents"] = self._documents(server)
            return reply

    def _documents(self, server: Any) -> DocAnswer:
        """``DOC_QUESTION`` about ``DOC_FILE``, through LangChain's OpenAI classes and the running server."""
        missing = missing_docqa_packages()
        if missing:  # the check allowed it: on Colab, installed now (pure Python, seconds)
            import subprocess
            import sys

            subprocess.run([sys.executable, "-m", "pip", "install", "-q", *DOCQA_PACKAGES], check=True)
        s = self.stage
        found = document_qa(s.doc_text(), s.doc_question, base_url=server.url, model=server.model_id,
                            api_key=server.api_key or "none", max_tokens=s.max_new_tokens)
        print(f"document QA on {s.doc_file}: {s.doc_question}")
        for i, chunk in enumerate(found.chunks, 1):
            print(f"  retrieved {i}: {chunk}")
        print(f"  answer: {found.answer}")
        return found

    def speculative(self) -> dict | None:
        """Speculative decoding of the templated ``PROMPT`` with the planned draft model; its figures, or None when
        the plan decided against it (the reason was in the check)."""
        if self.job.draft is None:
            why = "see the check cell" if self.stage.draft_model else self.stage.assignment("draft_model", "")
            print(f"no speculative decoding ({why})")
            return None
        if "draft" not in self.extra:
            self.extra["draft"] = load_backend(self.job.draft, backend="transformers")
            hold(self.stage.NOTEBOOK, self.extra["draft"])
        prompt = self.bot.prompt(self.stage.prompt, system=self.stage.system_prompt or None)  # what chat() sends
        _, stats = speculative_generate(self.bot, self.extra["draft"], prompt, max_new_tokens=self.stage.max_new_tokens)
        return stats


@dataclass(frozen=True)
class ChatReport:
    """What the notebook's cells made (``python -m helpers run 03``): the reply to ``PROMPT`` (printed as it
    streamed), the server's reply when it ran, the speculative decoding figures when it ran."""

    stage: ChatStage
    job: ChatJob
    template: str
    reply: str
    server_reply: str | None = None
    speculative: dict | None = None
    documents: DocAnswer | None = None

    def summary(self) -> str:
        s = self.stage
        quant = f", {self.job.quantization}" if self.job.quantization else ""
        lines = [f"chatted with {self.job.model} ({self.job.backend}{quant}, template {self.template}): a reply of "
                 f"{len(self.reply)} characters to {s.prompt!r} (above)"]
        if self.job.server is None:
            lines.append(f"  no server ({s.assignment('start_server', True)} starts one)")
        else:
            lines.append(f"  the OpenAI-compatible server answered {len(self.server_reply or '')} characters")
        if self.documents is not None:
            lines.append(f"  document QA on {s.doc_file}: {len(self.documents.chunks)} chunks retrieved, an answer of "
                         f"{len(self.documents.answer)} characters")
        if self.speculative is None:
            lines.append("  no speculative decoding" + ("" if s.draft_model else " (no draft model asked for)"))
        else:
            st = self.speculative
            lines.append(f"  speculative decoding with {self.job.draft}: {st['tokens_per_s']:.1f} tokens/s, "
                         f"{st['draft_accepted']}/{st['draft_proposed']} draft tokens accepted")
        return "\n".join(lines)


@dataclass(frozen=True)
class ChatStage(Stage[ChatJob]):
    """The inference notebook's form."""

    NOTEBOOK = "03_inference_chat"
    SETUP = frozenset({"llama_cpp", "gpu", "server"})
    GPU = True

    model: str = param("chinese-alpaca-2-7b", "a model from the catalog (an HF model or a GGUF release), a .gguf "
                       "file, a folder or a hub id",
                       choices=[n for k in ("full", "gguf") for n in catalog.names(kind=k)], allow_input=True)
    backend: str = param("auto", "auto: llama.cpp for a GGUF, transformers for an HF model", choices=BACKENDS)
    quantization: str = quantization_param()
    system_prompt: str = param("", "system prompt (empty: the release's own)")
    prompt: str = param("请详细介绍一下北京的名胜古迹。", "the first question")
    max_new_tokens: int = param(400, "longest reply, in tokens")
    rope: str = param("none", "long context: auto (NTK-aware scaling past the native context), ntk, or none",
                      choices=ROPES)
    draft_model: str = param("", "speculative decoding: a small model with the same vocabulary, downloaded too "
                             "(chinese-alpaca-2-1.3b for the Alpaca-2 models); empty: none")
    start_server: bool = param(False, "also start the OpenAI-compatible server once, as a laptop user would (a "
                               "transformers chat downloads SERVER_MODEL for it)")
    server_model: str = param("chinese-alpaca-2-7b-gguf", "the GGUF the server serves when the chat uses "
                              "transformers")
    cfg_scale: float = param(1.0, "CFG sampling's guidance scale: 1 is off; above 1 steers the replies away from "
                             "the negative prompt (e.g. 1.5)")
    negative_prompt: str = param("", "CFG sampling's negative prompt, put in the system prompt's place (empty: the "
                                 "question's last token)")
    doc_file: str = param("", "a UTF-8 text file of your own to ask DOC_QUESTION about through LangChain and the "
                          "server (split, embedded by the GGUF, the nearest chunks answered from; with the "
                          "server on; empty: skip)")
    doc_question: str = param("这份资料主要讲了什么？", "the question about DOC_FILE")
    workspace: str = param(AUTO, WORKSPACE_HELP)

    def smoke_values(self, demo: Path) -> dict[str, Any]:
        values: dict[str, Any] = {"quantization": "none", "max_new_tokens": 16}  # CPU, short replies
        if self.start_server and not os.environ.get("HF_ENDPOINT"):  # offline: no GGUF release repo, make a GGUF
            from .quantize import QuantizeStage

            made = QuantizeStage(model="chinese-alpaca-2-7b", quant_types="q8_0",
                                 output_dir="smoke-output/03_inference").check().run()
            values["server_model"] = str(made.f16)
        return values

    def settings(self) -> str:
        return f"{self.model} ({self.backend}, {self.quantization})"

    def located(self, ref: str) -> str:
        """``ref`` as a path when it names a file another notebook saved in the workspace (else as given)."""
        return locate(ref, Workspace.of(self.workspace, "."))

    # ---------------------------------------------------------------------------------------------------- plan
    def make_plan(self, runtime: Runtime) -> Plan[ChatJob]:
        model = self.located(self.model)
        gguf = gguf_file(model)
        backend = ("llama.cpp" if gguf is not None else "transformers") if self.backend == "auto" else self.backend
        notes: list[str] = []
        if (backend == "transformers") == (gguf is not None):
            kind = "a GGUF" if gguf is not None else "a Hugging Face model"
            return Plan(self, runtime, [Need("back end", f"one that loads {kind}", backend, NO, "")],
                        ChatJob(model, backend, None, None, None))
        draft = self._draft(model, backend, notes)
        kv_copies = 1 if self.cfg_scale == 1 else 2  # CFG sampling's negative branch keeps a KV cache of its own
        if backend == "llama.cpp":
            needs, download = llama_cpp_needs(gguf, runtime, "model", kv_copies=kv_copies)
            quant, notes = None, quantization_note(self.quantization) + notes
        else:
            drafted = transformers_loaded(draft, None, runtime) if draft else None  # as speculative() loads it
            needs, download, quant = quantized_needs(model, self.quantization, runtime, n_ctx=CHAT_CONTEXT,
                                                     fix="a smaller model or its GGUF with llama.cpp", draft=drafted,
                                                     kv_copies=kv_copies)
        server, server_needs, server_download = self._server(backend, gguf, runtime)
        needs = [bytes_need("disk", download + server_download, runtime.disk, fix=MORE_DISK, detail="downloads"),
                 *needs, *server_needs, *self._guidance(backend, notes), *self._doc_needs(server, notes),
                 *access_needs(("model", model), ("draft model", draft),
                               ("server model", server if server != "model" else None))]
        return Plan(self, runtime, needs, ChatJob(model, backend, quant, draft, server), notes)

    def _doc_needs(self, server: str | None, notes: list[str]) -> list[Need]:
        """Document QA: the server it runs through, the file (read now: UTF-8, not empty) and LangChain."""
        if not self.doc_file:
            return []
        if server is None:
            return [Need("document QA", "the server", self.assignment("start_server", self.start_server), NO,
                         f"set {self.assignment('start_server', True)} (or {self.assignment('doc_file', '')})")]
        text = self.doc_text()
        missing = missing_docqa_packages()
        notes.append(f"document QA: {self.doc_file} ({len(text)} characters) through LangChain and the server"
                     + (f"; the run installs {', '.join(DOCQA_PACKAGES)} (pip, seconds)" if missing and in_colab()
                        else ""))
        if missing and not in_colab():
            return [Need("LangChain", ", ".join(DOCQA_PACKAGES), f"missing {', '.join(missing)}", NO,
                         "pip install " + " ".join(DOCQA_PACKAGES))]
        return []

    def doc_text(self) -> str:
        """``DOC_FILE``'s text (found in the workspace, or as given).

        Raises:
            UserError: the file is missing, not UTF-8, or empty.
        """
        text = read_utf8(Path(self.located(self.doc_file)).expanduser(),
                         what=f"a UTF-8 text file as DOC_FILE (on Colab, upload it in the Files pane), or "
                              f"{self.assignment('doc_file', '')} to skip document QA")
        if not text.strip():
            raise UserError(f"DOC_FILE {self.doc_file!r} is empty: give a UTF-8 text file with some text in it")
        return text

    def _guidance(self, backend: str, notes: list[str]) -> list[Need]:
        """CFG sampling: a refusal for a scale it cannot take, or a note on what it does and costs."""
        if not self.cfg_scale >= 0:
            return [Need("CFG sampling", "a guidance scale of 0 or more", self.assignment("cfg_scale", self.cfg_scale),
                         NO, f"set {self.assignment('cfg_scale', 1.0)} (off) or above 1 (e.g. 1.5)")]
        if self.cfg_scale == 1:
            if self.negative_prompt:
                notes.append(f"note: the negative prompt is ignored while CFG sampling is off (e.g. "
                             f"{self.assignment('cfg_scale', 1.5)} uses it)")
            return []
        how = "transformers' own guidance" if backend == "transformers" else "a second llama.cpp context (same weights)"
        against = (f"{self.assignment('negative_prompt', self.negative_prompt)} in the system prompt's place"
                   if self.negative_prompt else "the question's last token")
        notes.append(f"note: CFG sampling (scale {self.cfg_scale:g}) against {against}, through {how}: every token "
                     "also runs through the negative branch, whose KV cache is counted above (2 x)")
        return []

    def _draft(self, model: str, backend: str, notes: list[str]) -> str | None:
        """The draft model speculative decoding will use, or None (why goes into ``notes``)."""
        if not self.draft_model:
            return None
        if self.cfg_scale != 1:
            notes.append("note: speculative decoding does not combine with CFG sampling; skipped")
            return None
        if backend != "transformers":
            notes.append("note: speculative decoding runs on the transformers back end; skipped with llama.cpp")
            return None
        try:
            ours, theirs = (int(model_files(r).config["vocab_size"]) for r in (model, self.draft_model))
        except (UserError, KeyError):
            notes.append(f"note: the draft model {self.draft_model} cannot be read; speculative decoding skipped")
            return None
        if ours != theirs:
            notes.append(f"note: {self.draft_model} has a {theirs}-token vocabulary and {self.model} {ours}: "
                         f"speculative decoding skipped ({self.assignment('draft_model', '')} hides this note)")
            return None
        return self.draft_model

    def _server(self, backend: str, gguf: GGUFFile | None, rt: Runtime) -> tuple[str | None, list[Need], int]:
        """What the server serves (``model``: the GGUF the chat loaded), its needs and its download."""
        if not self.start_server:
            return None, [], 0
        needs = [wheel_need("llama.cpp server", rt.llama_cpp_server, fix="pip install 'llama-cpp-python[server]'")]
        if backend == "llama.cpp":
            return "model", needs, 0
        server_model = self.located(self.server_model) if self.server_model else ""
        served = gguf_file(server_model) if server_model else None
        if served is None:
            return None, needs + [Need("server model", "a GGUF", self.server_model or "none", NO, "")], 0
        server_needs, download = llama_cpp_needs(served, rt.cpu_only(), "server")
        return server_model, needs + [server_needs[1].renamed("RAM (server)")], download

    def candidate_fixes(self, plan: Plan[ChatJob]) -> list[dict[str, Any]]:
        fixes: list[dict[str, Any]] = [{"backend": "auto"}] if self.backend != "auto" else []
        if self.quantization != "4bit":
            fixes.append({"quantization": "4bit"})
        if self.start_server:
            fixes.append({"start_server": False})
        if self.draft_model:
            fixes.append({"draft_model": ""})
        gguf = catalog.find(f"{self.model}-gguf")
        if gguf is not None:
            fixes.append({"model": gguf.name})
        return fixes

    # ---------------------------------------------------------------------------------------------------- run
    def execute(self, plan: Plan[ChatJob]) -> ChatSession:
        job: ChatJob = plan.job
        release(self.NOTEBOOK)  # what this notebook's earlier run loaded: the plan counted it as free
        rope = None if self.rope == "none" else self.rope
        bot = load_backend(job.model, backend=job.backend, quantization=job.quantization, rope=rope,
                           guidance_scale=self.cfg_scale, negative_prompt=self.negative_prompt or None)
        hold(self.NOTEBOOK, bot)
        print("template:", bot.template)
        return ChatSession(self, job, bot)

    def headless(self, plan: Plan[ChatJob], result: ChatSession) -> ChatReport:
        """The notebook's cells: the reply to ``PROMPT``, streamed; the server and speculative decoding when the
        plan runs them (the chat box needs a notebook)."""
        reply = result.reply()
        served = result.serve() if result.job.server is not None else None
        stats = result.speculative() if result.job.draft is not None else None
        return ChatReport(self, result.job, str(result.bot.template), reply, served, stats,
                          result.extra.get("documents"))
