"""The llama.cpp back end: :class:`LlamaCppBackend` over llama-cpp-python, and :func:`load_llama_cpp`."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from .backend import Backend
from .guidance import OFF, LlamaCppGuidance, NegativeContext
from ..gguf import read_metadata
from ..util import UserError
from .longctx import choose_rope

DEFAULT_N_CTX = 4096  # llama.cpp's context when none is asked for: the model's, at most this


class _GGUFTokenizer:
    """``encode``/``decode`` through llama.cpp's own tokenizer (special tokens parsed)."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    def encode(self, text: str, *, add_bos: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def decode(self, ids: Sequence[int]) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", errors="replace")


class LlamaCppBackend(Backend):
    """A GGUF model through llama-cpp-python."""

    name = "llama.cpp"

    def __init__(self, llm: Any, *, template: str, path: Path, n_ctx: int, defaults: dict | None = None) -> None:
        super().__init__(template=template, path=path, n_ctx=n_ctx, defaults=defaults)
        self.llm = llm
        self.tokenizer = _GGUFTokenizer(llm)
        self.negative: NegativeContext | None = None  # CFG sampling's second context, made on first use

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def _pieces(self, prompt_text, settings, user_stop, halt):
        import llama_cpp

        tokens = self.tokenizer.encode(prompt_text)
        room = self.n_ctx - len(tokens)
        if room <= 0:
            raise UserError(f"the prompt has {len(tokens)} tokens, more than the context ({self.n_ctx}); "
                            "shorten it or load with a larger n_ctx")
        stats, n_prompt = self.last_stats, len(tokens)

        def stop(input_ids, logits) -> bool:
            stats["new_tokens"] = max(len(input_ids) - n_prompt + 1, 0)
            return halt.is_set() or (user_stop is not None and user_stop.is_set())

        sample = settings["do_sample"]
        guide, room = self._guidance(settings, room)
        chunks = self.llm.create_completion(
            tokens, max_tokens=min(settings["max_new_tokens"], room), stream=True,
            temperature=float(settings["temperature"]) if sample else 0.0,
            top_k=int(settings["top_k"] or 0) if sample else 1, top_p=float(settings["top_p"]) if sample else 1.0,
            min_p=0.0, repeat_penalty=float(settings["repetition_penalty"] or 1.0),
            stop=self.stop_strings(), stopping_criteria=llama_cpp.StoppingCriteriaList([stop]),
            logits_processor=llama_cpp.LogitsProcessorList([guide]) if guide is not None else None)
        try:
            for chunk in chunks:
                text = chunk["choices"][0]["text"]
                if text:
                    yield text
        finally:
            chunks.close()

    def _guidance(self, settings: dict, room: int) -> tuple[LlamaCppGuidance | None, int]:
        """CFG sampling's logits processor for one generation (None when off) and the tokens left to generate: the
        negative branch shares the context length."""
        if settings["guidance_scale"] == OFF:
            return None, room
        negative = self.tokenizer.encode(settings["negative_prompt"]) if settings["negative_prompt"] else None
        if negative is not None and len(negative) >= self.n_ctx:
            raise UserError(f"the negative prompt has {len(negative)} tokens, more than the context ({self.n_ctx}); "
                            "shorten it or load with a larger n_ctx")
        if self.negative is None:
            self.negative = NegativeContext(self.llm)
        guide = LlamaCppGuidance(self.negative, settings["guidance_scale"], negative)
        return guide, min(room, self.n_ctx - len(negative or [0]))

    def close(self) -> None:
        negative, self.negative = self.negative, None
        if negative is not None:
            negative.close()
        llm, self.llm = self.llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()


def load_llama_cpp(path: Path, *, template: str, n_gpu_layers: int | None = None, n_ctx: int | None = None,
                   rope: str | None = None, defaults: dict | None = None,
                   metadata: dict | None = None) -> LlamaCppBackend:
    """Load a GGUF with llama-cpp-python (see :func:`helpers.chat.load_backend` for the arguments)."""
    try:
        import llama_cpp
    except ImportError:
        raise UserError("the llama.cpp back end needs llama-cpp-python: pip install llama-cpp-python") from None
    meta = metadata if metadata is not None else read_metadata(path)
    arch = meta.get("general.architecture", "llama")
    native = int(meta.get(f"{arch}.context_length", 4096))
    heads = int(meta.get(f"{arch}.attention.head_count", 1))
    head_dim = int(meta.get(f"{arch}.rope.dimension_count", 0) or int(meta.get(f"{arch}.embedding_length", 128)) // heads)
    base = float(meta.get(f"{arch}.rope.freq_base", 10000.0))
    configured = meta.get(f"{arch}.rope.scaling.type")
    configured = None if configured in (None, "none") else configured
    plan = choose_rope(rope, n_ctx=n_ctx, native_ctx=native, base=base, head_dim=head_dim, configured=configured)
    kwargs: dict[str, Any] = {}
    if plan.kind == "ntk":
        kwargs["rope_freq_base"] = plan.base
    elif plan.kind in ("linear", "yarn"):
        kwargs["rope_scaling_type"] = (llama_cpp.LLAMA_ROPE_SCALING_TYPE_LINEAR if plan.kind == "linear"
                                       else llama_cpp.LLAMA_ROPE_SCALING_TYPE_YARN)
        kwargs["rope_freq_scale"] = 1.0 / plan.factor
        if plan.kind == "yarn":
            kwargs["yarn_orig_ctx"] = native
    if plan.kind != "config":
        print(f"rope: {plan.describe()}", file=sys.stderr)
    ctx = int(n_ctx or plan.n_ctx or min(native, DEFAULT_N_CTX))
    if n_gpu_layers is None:
        n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
    try:
        llm = llama_cpp.Llama(model_path=str(path), n_gpu_layers=n_gpu_layers, n_ctx=ctx, verbose=False, **kwargs)
    except ValueError as exc:
        raise UserError(f"llama.cpp cannot load {path}: {exc}; check that the file is a complete GGUF "
                        "and that llama-cpp-python is recent enough") from None
    print(f"loaded {path.name} with llama.cpp ({'GPU' if n_gpu_layers else 'CPU'}); template {template}",
          file=sys.stderr)
    return LlamaCppBackend(llm, template=template, path=path, n_ctx=ctx, defaults=defaults)

