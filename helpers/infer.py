"""Talk to a model: one interface over transformers and llama.cpp, long context, speculative decoding.

:func:`load_backend` takes an HF folder, a ``.gguf`` file, a hub id or a catalog name and returns a
:class:`Backend` whose :meth:`Backend.chat` renders the release's own prompt template
(:mod:`helpers.templates`), drops the oldest turns beyond a token budget, generates (streamed or not)
and stops at the template's end-of-turn tokens and stop strings, which never appear in the reply.

Long context (``rope=``), applied before the weights load:

- ``None`` / ``"config"``: what ``config.json`` or the GGUF says (the 16K models' linear/PI scaling and
  the 64K models' YaRN; transformers 5 reads them into ``config.rope_parameters``). A catalog model whose
  config lacks its scaling gets the catalog's.
- ``"ntk:<alpha>"``: static NTK-aware scaling, ``rope_theta' = rope_theta * alpha ** (d / (d - 2))`` with
  ``d`` the head dimension (the seeds' formula).
- ``"ntk"``: alpha from the context wanted (``n_ctx``, default twice the native context) with the seeds'
  adaptive formula ``alpha = max(n_ctx / (native_ctx / 2) - 1, 1)``. The seeds recomputed alpha on every
  forward pass from the current length; here it is computed once for ``n_ctx`` (static NTK).
- ``"auto"``: the config's scaling if it has one, else ``"ntk"`` when ``n_ctx`` exceeds the native context.
- ``"linear:<factor>"`` / ``"yarn:<factor>"``: position interpolation / YaRN by hand.

``python -m helpers chat --model M [--prompt P]`` is the command-line front end; the notebook chat box
and the OpenAI-compatible server live in :mod:`helpers.chatui`.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .util import UserError

GEN_KEYS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "do_sample")
HISTORY_TOKENS_LLAMA2 = 1024  # the Chinese-Alpaca-2 scripts keep at most 1024 tokens of history


# ----------------------------------------------------------------------------- long context
def ntk_alpha(n_ctx: int, native_ctx: int, *, coeff: float = 1.0) -> float:
    """The seeds' adaptive NTK alpha: ``max((n_ctx / (native_ctx / 2) - 1) * coeff, 1)``."""
    if n_ctx <= 0 or native_ctx <= 0:
        raise UserError(f"context lengths must be positive (got n_ctx={n_ctx}, native={native_ctx})")
    return max((n_ctx / (native_ctx / 2) - 1) * coeff, 1.0)


def ntk_rope_base(base: float, alpha: float, head_dim: int) -> float:
    """NTK-aware RoPE base: ``base * alpha ** (head_dim / (head_dim - 2))``."""
    if head_dim <= 2:
        raise UserError(f"head dimension {head_dim} is too small for NTK scaling")
    return float(base) * float(alpha) ** (head_dim / (head_dim - 2))


@dataclass(frozen=True)
class RopePlan:
    """What to do with RoPE: ``kind`` is ``config``, ``ntk``, ``linear`` or ``yarn``.

    ``factor`` is alpha for ``ntk`` and the scaling factor otherwise; ``base`` the new rope theta (ntk).
    """

    kind: str
    factor: float = 1.0
    base: float | None = None
    native_ctx: int = 0
    n_ctx: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("config", "ntk", "linear", "yarn"):
            raise ValueError(f"unknown rope kind {self.kind!r}")

    def describe(self) -> str:
        """One line for the user."""
        if self.kind == "config":
            return "RoPE as configured"
        if self.kind == "ntk":
            return f"NTK-aware RoPE: alpha {self.factor:.3g}, base {self.base:.6g} (context {self.n_ctx})"
        return f"{self.kind} RoPE scaling, factor {self.factor:g}"


def plan_rope(rope: str | None, *, n_ctx: int | None, native_ctx: int, base: float, head_dim: int,
              configured: str | None = None) -> RopePlan:
    """Turn a ``rope=`` option into a :class:`RopePlan` (see the module docstring for the options).

    Args:
        rope: the option.
        n_ctx: the context the user wants (None: not given).
        native_ctx: the context the model was trained for (including configured scaling).
        base: the model's rope theta.
        head_dim: the attention head dimension.
        configured: the scaling type already in the config (``linear``, ``yarn``...), if any.
    """
    text = (rope or "config").strip().lower()
    kind, _, arg = text.partition(":")
    if kind in ("config", "none", "default"):
        return RopePlan("config", native_ctx=native_ctx, n_ctx=n_ctx)
    if kind == "auto":
        if configured or n_ctx is None or n_ctx <= native_ctx:
            return RopePlan("config", native_ctx=native_ctx, n_ctx=n_ctx)
        kind, arg = "ntk", ""
    try:
        value = float(arg) if arg else None
    except ValueError:
        value = None
        arg = "bad"
    if kind == "ntk" and arg != "bad":
        target = n_ctx or 2 * native_ctx
        alpha = value if value is not None else ntk_alpha(target, native_ctx)
        if alpha < 1:
            raise UserError(f"NTK alpha must be >= 1, got {alpha:g}")
        return RopePlan("ntk", alpha, ntk_rope_base(base, alpha, head_dim), native_ctx, target)
    if kind in ("linear", "yarn") and value is not None and value > 1:
        return RopePlan(kind, value, None, native_ctx, n_ctx or int(native_ctx * value))
    raise UserError(f"unknown rope option {rope!r}; use config, auto, ntk, ntk:<alpha>, linear:<factor> or yarn:<factor>")


def _apply_rope_to_config(config: Any, plan: RopePlan, catalog_rope: dict | None) -> None:
    """Write ``plan`` (or the catalog's scaling missing from the config) into a transformers config."""
    params = getattr(config, "rope_parameters", None)
    legacy = not isinstance(params, dict)  # transformers 4: rope_theta / rope_scaling attributes
    if legacy:
        params = dict(getattr(config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    scaled = params.get("rope_type", params.get("type", "default")) not in ("default", None)
    if plan.kind == "config" and catalog_rope and not scaled:
        params.update({k: v for k, v in catalog_rope.items() if k != "type"}, rope_type=catalog_rope["type"])
        if catalog_rope["type"] == "yarn":
            params.setdefault("original_max_position_embeddings", config.max_position_embeddings)
        config.max_position_embeddings = int(config.max_position_embeddings * catalog_rope["factor"])
    elif plan.kind == "ntk":
        params["rope_theta"] = plan.base
    elif plan.kind in ("linear", "yarn"):
        params.update(rope_type=plan.kind, factor=plan.factor)
        if plan.kind == "yarn":
            params["original_max_position_embeddings"] = config.max_position_embeddings
    if plan.n_ctx and plan.kind != "config":
        config.max_position_embeddings = max(int(config.max_position_embeddings), int(plan.n_ctx))
    if legacy:
        config.rope_theta = params.pop("rope_theta")
        config.rope_scaling = params if params.get("rope_type", params.get("type", "default")) != "default" else None
    else:
        params.setdefault("rope_type", "default")
        config.rope_parameters = params


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
    """A loaded model behind one interface (see :class:`TransformersBackend`, :class:`LlamaCppBackend`).

    Attributes:
        name: ``transformers`` or ``llama.cpp``.
        template: the prompt template id (:mod:`helpers.templates`).
        tokenizer: the tokenizer (``helpers.load_tokenizer`` for HF folders).
        path: the model folder or GGUF file.
        n_ctx: the context length in use.
        defaults: sampling settings applied when a call leaves them out.
        last_stats: ``new_tokens``, ``seconds`` and ``tokens_per_s`` of the last generation.
    """

    name = "base"

    def __init__(self, *, template: str, path: Path, n_ctx: int, defaults: dict | None = None) -> None:
        from .templates import generation_defaults, get_template

        self.template = get_template(template).name
        self.path = Path(path)
        self.n_ctx = int(n_ctx)
        base = generation_defaults(self.template).as_kwargs()
        self.defaults = {**base, **(defaults or {})}
        self.last_stats: dict[str, float] = {}
        self.tokenizer: Any = None

    # -- to implement
    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as the model sees it (BOS included)."""
        raise NotImplementedError

    def stop_strings(self) -> list[str]:
        """Strings that end a reply."""
        from .templates import get_template

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
        return s

    def generate(self, prompt_text: str, *, stream: bool = False, stop_event: threading.Event | None = None,
                 **gen: Any) -> str | Iterator[str]:
        """Continue ``prompt_text`` (already templated; the tokenizer adds BOS).

        Args:
            prompt_text: the prompt.
            stream: return an iterator of text pieces instead of the whole reply.
            stop_event: set it (e.g. from a stop button) to end generation early.
            **gen: ``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``,
                ``do_sample`` (temperature 0 or ``do_sample=False`` decodes greedily).

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
            **gen: sampling settings, as for :meth:`generate`.
        """
        from .templates import build_prompt, get_template, truncate_history

        template = get_template(self.template)
        s = self.settings(**gen)
        budget = max_history_tokens or self._history_budget(s["max_new_tokens"])
        kept = truncate_history(template, user, list(history), count_tokens=self.count_tokens,
                                max_tokens=budget, system=system)
        prompt = build_prompt(template, user, history=kept, system=system)
        pieces = _lstrip_stream(self._stream(prompt, s, stop_event))
        return pieces if stream else "".join(pieces)

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


def _lstrip_stream(pieces: Iterator[str]) -> Iterator[str]:
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


# ----------------------------------------------------------------------------- transformers
class TransformersBackend(Backend):
    """A transformers causal LM (fp16/bf16 on GPU, fp32 on CPU, optional bitsandbytes 8/4-bit)."""

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, *, template: str, path: Path, n_ctx: int,
                 defaults: dict | None = None) -> None:
        super().__init__(template=template, path=path, n_ctx=n_ctx, defaults=defaults)
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = _stop_token_ids(model, tokenizer, self.stop_strings())

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def encode(self, text: str):
        """``(input_ids, attention_mask)`` tensors on the model's device."""
        enc = self.tokenizer(text, return_tensors="pt")
        return enc["input_ids"].to(self.model.device), enc["attention_mask"].to(self.model.device)

    def generate_kwargs(self, settings: dict) -> dict:
        """``model.generate`` keyword arguments for ``settings`` (stop tokens, greedy or sampling)."""
        import copy

        config = copy.deepcopy(self.model.generation_config)
        sample = settings["do_sample"]
        config.update(
            do_sample=sample, max_new_tokens=settings["max_new_tokens"], num_beams=1,
            temperature=float(settings["temperature"]) if sample else None,
            top_k=int(settings["top_k"]) if sample and settings["top_k"] else None,
            top_p=float(settings["top_p"]) if sample else None,
            repetition_penalty=(float(settings["repetition_penalty"])
                                if settings["repetition_penalty"] not in (None, 1, 1.0) else None),
            eos_token_id=list(self.stop_ids),
            pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0],
        )
        return {"generation_config": config}

    def _pieces(self, prompt_text, settings, user_stop, halt):
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        ids, mask = self.encode(prompt_text)
        n_prompt = ids.shape[1]
        stats = self.last_stats

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                stats["new_tokens"] = int(input_ids.shape[1] - n_prompt)
                stop = halt.is_set() or (user_stop is not None and user_stop.is_set())
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

        streamer = _TokenTextQueue(self.tokenizer)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(input_ids=ids, attention_mask=mask, streamer=streamer,
                                        stopping_criteria=StoppingCriteriaList([_Stop()]),
                                        **self.generate_kwargs(settings))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, name="helpers-generate", daemon=True)
        thread.start()
        try:
            for text in streamer:
                yield text
        finally:
            halt.set()
            thread.join()
        if errors:
            _raise_generation_error(errors[0])

    def close(self) -> None:
        import gc

        self.model = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


class _TokenTextQueue:
    """A transformers streamer: decodes new tokens to text for another thread to read.

    Text is emitted as soon as it is complete: an unfinished UTF-8 sequence (byte-fallback tokens) is held
    back, and bytes that never form a character are dropped, as llama.cpp does. Each decode starts from the
    token before the new ones, so sentencepiece keeps the space that begins a continuation.
    """

    _END = object()

    def __init__(self, tokenizer: Any) -> None:
        import queue

        self.tokenizer = tokenizer
        self.queue: Any = queue.Queue()
        self.cache: list[int] = []
        self.skip = self.shown = 0
        self.prompt_seen = False

    def _decode(self) -> str:
        return self.tokenizer.decode(self.cache, skip_special_tokens=True)

    def _restart(self, tail: list[int]) -> None:
        """Start a new cache from the shortest suffix of ``tail`` that decodes to whole characters."""
        self.shown = 0
        for k in range(1, len(tail) + 1):
            self.cache = list(tail[-k:])
            text = self._decode()
            if "\ufffd" not in text:
                self.skip = len(text)
                return
        self.cache, self.skip = [], 0

    def put(self, value: Any) -> None:
        ids = [int(i) for i in value.reshape(-1).tolist()]
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            self._restart(ids[-8:])
            return
        self.cache.extend(ids)
        text = self._decode()[self.skip:]
        complete = text.rstrip("\ufffd")
        self._emit(complete[self.shown:])
        self.shown = len(complete)
        if text.endswith("\n"):  # start a new cache so decoding stays cheap
            self._restart(self.cache[-8:])

    def end(self) -> None:
        self._emit(self._decode()[self.skip:][self.shown:])
        self.cache, self.skip, self.shown = [], 0, 0
        self.queue.put(self._END)

    def _emit(self, text: str) -> None:
        text = text.replace("\ufffd", "")
        if text:
            self.queue.put(text)

    def __iter__(self) -> Iterator[str]:
        while (item := self.queue.get()) is not self._END:
            yield item


def _raise_generation_error(exc: BaseException) -> None:
    if type(exc).__name__ == "OutOfMemoryError":
        raise UserError("out of GPU memory while generating: load with quantization='4bit', shorten the "
                        "prompt/history or lower max_new_tokens") from None
    raise exc


def _stop_token_ids(model: Any, tokenizer: Any, stop_strings: Sequence[str]) -> list[int]:
    """Ids that end a turn: the model's eos id(s), the tokenizer's eos and every stop string that is one token."""
    ids: list[int] = []

    def add(value: Any) -> None:
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)

    add(getattr(model.generation_config, "eos_token_id", None))
    add(getattr(model.config, "eos_token_id", None))
    add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    for s in stop_strings:
        if s in vocab:
            add(vocab[s])
    if not ids:
        raise UserError("the model and tokenizer define no end-of-sequence token; add eos_token to tokenizer_config.json")
    return ids


def _torch_dtype(dtype: Any, on_gpu: bool):
    import torch

    if dtype is None or dtype == "auto":
        if not on_gpu:
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32"}
    value = getattr(torch, names.get(str(dtype), str(dtype)), None)
    if not isinstance(value, torch.dtype):
        raise UserError(f"unknown dtype {dtype!r}; use float16, bfloat16 or float32")
    return value


def load_transformers(path: Path, *, template: str, quantization: str | None = None, device: str | None = None,
                      dtype: Any = None, n_ctx: int | None = None, rope: str | None = None,
                      trust_remote_code: bool = False, catalog_rope: dict | None = None,
                      defaults: dict | None = None) -> TransformersBackend:
    """Load an HF folder with transformers (see :func:`load_backend` for the arguments)."""
    import torch

    cuda = torch.cuda.is_available()
    device = device or ("cuda" if cuda else "cpu")
    on_gpu = device.startswith("cuda")
    if on_gpu and not cuda:
        raise UserError(f"device {device!r} asked for but no CUDA GPU is visible; use device='cpu'")
    if quantization not in (None, "8bit", "4bit"):
        raise UserError(f"unknown quantization {quantization!r}; use None, '8bit' or '4bit'")
    if quantization and not on_gpu:
        raise UserError(f"{quantization} loading needs a CUDA GPU (bitsandbytes); on CPU load without "
                        "quantization (float32), or use a quantized GGUF with the llama.cpp back end")
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    from . import load_tokenizer

    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path / 'config.json'}: {str(exc).splitlines()[0]}") from None
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    configured = params.get("rope_type", params.get("type")) if isinstance(params, dict) else None
    configured = None if configured in (None, "default") else configured
    base = (params.get("rope_theta") if isinstance(params, dict) else None) or getattr(config, "rope_theta", 10000.0)
    native = int(config.max_position_embeddings)
    if configured == "linear":
        native = int(native * float(params.get("factor", 1.0)))
    plan = plan_rope(rope, n_ctx=n_ctx, native_ctx=native, base=base, head_dim=head_dim,
                     configured=configured or (catalog_rope or {}).get("type"))
    _apply_rope_to_config(config, plan, catalog_rope)
    if plan.kind != "config":
        print(f"rope: {plan.describe()}", file=sys.stderr)

    torch_dtype = _torch_dtype(dtype, on_gpu)
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    kwargs: dict[str, Any] = {"config": config, dtype_key: torch_dtype, "trust_remote_code": trust_remote_code}
    if quantization:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise UserError("8/4-bit loading needs bitsandbytes: pip install bitsandbytes") from None
        from transformers import BitsAndBytesConfig

        if quantization == "4bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float16)
            kwargs[dtype_key] = torch.float16
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    # load straight onto the device: a 7B fp16 model does not fit in Colab's CPU RAM on the way to the GPU
    kwargs["device_map"] = {"": torch.cuda.current_device() if device == "cuda" else device}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load the model in {path}: {str(exc).splitlines()[0]}") from None
    model.eval()
    tokenizer = load_tokenizer(path)
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise UserError(f"the tokenizer in {path} has {len(tokenizer)} tokens but the model only {rows} "
                        "embedding rows: the tokenizer files belong to another model (e.g. Alpaca vs LLaMA); "
                        "copy the tokenizer that was merged with these weights")
    ctx = plan.n_ctx or int(config.max_position_embeddings)
    where = f"{device} ({quantization or str(torch_dtype).replace('torch.', '')})"
    print(f"loaded {path.name} with transformers on {where}; template {template}", file=sys.stderr)
    return TransformersBackend(model, tokenizer, template=template, path=path, n_ctx=ctx, defaults=defaults)


# ----------------------------------------------------------------------------- llama.cpp
def gguf_metadata(path: str | Path) -> dict[str, Any]:
    """Scalar and string key/values of a GGUF file (arrays such as the vocabulary are left out)."""
    from gguf import GGUFReader, GGUFValueType

    try:
        reader = GGUFReader(str(path), "r")
    except (ValueError, OSError) as exc:
        raise UserError(f"{path} is not a readable GGUF file ({exc}); re-download or re-convert it") from None
    meta: dict[str, Any] = {}
    for name, field in reader.fields.items():
        if not field.types or field.types[0] == GGUFValueType.ARRAY:
            continue
        try:
            value = field.contents()
        except Exception:  # noqa: BLE001 - an unreadable field is not worth failing for
            continue
        meta[name] = value.item() if hasattr(value, "item") else value
    return meta


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
        chunks = self.llm.create_completion(
            tokens, max_tokens=min(settings["max_new_tokens"], room), stream=True,
            temperature=float(settings["temperature"]) if sample else 0.0,
            top_k=int(settings["top_k"] or 0) if sample else 1, top_p=float(settings["top_p"]) if sample else 1.0,
            min_p=0.0, repeat_penalty=float(settings["repetition_penalty"] or 1.0),
            stop=self.stop_strings(), stopping_criteria=llama_cpp.StoppingCriteriaList([stop]))
        try:
            for chunk in chunks:
                text = chunk["choices"][0]["text"]
                if text:
                    yield text
        finally:
            chunks.close()

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()


def load_llama_cpp(path: Path, *, template: str, n_gpu_layers: int | None = None, n_ctx: int | None = None,
                   rope: str | None = None, defaults: dict | None = None,
                   metadata: dict | None = None) -> LlamaCppBackend:
    """Load a GGUF with llama-cpp-python (see :func:`load_backend` for the arguments)."""
    try:
        import llama_cpp
    except ImportError:
        raise UserError("the llama.cpp back end needs llama-cpp-python: pip install llama-cpp-python") from None
    meta = metadata if metadata is not None else gguf_metadata(path)
    arch = meta.get("general.architecture", "llama")
    native = int(meta.get(f"{arch}.context_length", 4096))
    heads = int(meta.get(f"{arch}.attention.head_count", 1))
    head_dim = int(meta.get(f"{arch}.rope.dimension_count", 0) or int(meta.get(f"{arch}.embedding_length", 128)) // heads)
    base = float(meta.get(f"{arch}.rope.freq_base", 10000.0))
    configured = meta.get(f"{arch}.rope.scaling.type")
    configured = None if configured in (None, "none") else configured
    plan = plan_rope(rope, n_ctx=n_ctx, native_ctx=native, base=base, head_dim=head_dim, configured=configured)
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
    ctx = int(n_ctx or plan.n_ctx or min(native, 4096))
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


# ----------------------------------------------------------------------------- one entry point
def _pick_gguf(folder: Path, quant: str) -> Path:
    files = sorted(folder.rglob("*.gguf"))
    if not files:
        raise UserError(f"no .gguf file in {folder} (looked for names containing {quant!r}; "
                        "pass gguf_quant=... or the path of the file)")
    if len(files) == 1:
        return files[0]
    chosen = [f for f in files if quant.lower() in f.name.lower()]
    if len(chosen) == 1:
        return chosen[0]
    raise UserError(f"{folder} holds several GGUF files ({', '.join(f.name for f in files)}); pass one file")


def resolve(model: str | Path, *, gguf_quant: str = "q4_k") -> tuple[Path, Any]:
    """Resolve ``model`` to a local HF folder or ``.gguf`` file; also return its catalog entry (or None)."""
    from . import catalog
    from .env import resolve_model

    ref = str(model)
    path = Path(ref).expanduser()
    entry = None if path.exists() else catalog.find(ref)
    if entry is not None:
        if entry.kind in ("lora", "patch"):
            raise UserError(f"{entry.name} is a {entry.kind}, not a model you can chat with: merge it first "
                            f"(python -m helpers merge ...) and chat with the merged folder or GGUF")
        patterns = [f"*{gguf_quant}*.gguf", "*.md", "*.json"] if entry.kind == "gguf" else None
        path = resolve_model(entry.hub_id, allow_patterns=patterns)
        if entry.kind == "gguf" and path.is_dir():
            return _pick_gguf(path, gguf_quant), entry
    else:
        path = resolve_model(ref)
        if path.is_dir():
            entry = catalog.find(path.resolve().name)
    if path.is_dir() and not (path / "config.json").is_file() and any(path.rglob("*.gguf")):
        path = _pick_gguf(path, gguf_quant)
    return path, entry


def load_backend(model: str | Path, *, backend: str = "auto", quantization: str | None = None,
                 device: str | None = None, dtype: Any = None, n_gpu_layers: int | None = None,
                 n_ctx: int | None = None, rope: str | None = None, trust_remote_code: bool = False,
                 template: str | None = None, gguf_quant: str = "q4_k", **defaults: Any) -> Backend:
    """Load a model for chatting.

    Args:
        model: an HF folder, a ``.gguf`` file, a hub id or a catalog name (``chinese-alpaca-2-7b``).
        backend: ``auto`` (GGUF -> llama.cpp, else transformers), ``transformers`` or ``llama.cpp``.
        quantization: ``None``, ``"8bit"`` or ``"4bit"`` (bitsandbytes NF4 + double quantization; GPU only).
        device: ``cuda``/``cpu`` for transformers (default: CUDA when available).
        dtype: transformers weights dtype (default: bf16/fp16 on GPU, fp32 on CPU).
        n_gpu_layers: llama.cpp layers on the GPU (default: all when llama.cpp has GPU support, else 0).
        n_ctx: context length wanted (llama.cpp default: the model's, at most 4096).
        rope: long-context option, see the module docstring.
        trust_remote_code: run the model repo's own Python code (the 64K models ship some); off unless asked.
        template: force a template id; by default it comes from the catalog or the model's files/metadata.
        gguf_quant: which GGUF of a catalog GGUF repo to fetch (file name contains it).
        **defaults: sampling defaults for this backend (``temperature``, ``max_new_tokens``...).
    """
    from .templates import get_template, template_for_model

    if backend not in ("auto", "transformers", "llama.cpp", "llama_cpp", "llamacpp"):
        raise UserError(f"unknown backend {backend!r}; use auto, transformers or llama.cpp")
    backend = "llama.cpp" if backend in ("llama_cpp", "llamacpp") else backend
    unknown = set(defaults) - set(GEN_KEYS)
    if unknown:
        raise UserError(f"unknown settings {sorted(unknown)}")
    path, entry = resolve(model, gguf_quant=gguf_quant)
    is_gguf = path.is_file() and path.suffix == ".gguf"
    if not is_gguf and not (path / "config.json").is_file():
        raise UserError(f"{path} is neither a .gguf file nor a Hugging Face model folder (no config.json)")
    chosen = "llama.cpp" if (backend == "auto" and is_gguf) else ("transformers" if backend == "auto" else backend)
    if chosen == "llama.cpp" and not is_gguf:
        raise UserError(f"{path} is a Hugging Face folder; convert it first (python -m helpers to-gguf) "
                        "or use backend='transformers'")
    if chosen == "transformers" and is_gguf:
        raise UserError(f"{path} is a GGUF file; use backend='llama.cpp' (or 'auto')")
    if entry is not None and entry.needs_trust_remote_code and not trust_remote_code and not is_gguf:
        print(f"note: {entry.name} ships its own modelling code; it is not run unless trust_remote_code=True. "
              "transformers' built-in YaRN from config.json is used instead.", file=sys.stderr)
    metadata = gguf_metadata(path) if is_gguf else None
    if template is not None:
        name = get_template(template).name
    elif entry is not None:
        name = entry.template
    else:
        name = template_for_model(str(path), gguf_metadata=metadata)
    if chosen == "llama.cpp":
        if quantization:
            raise UserError("quantization applies to the transformers back end; for llama.cpp pick a quantized "
                            "GGUF (e.g. Q4_K_M) instead")
        return load_llama_cpp(path, template=name, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx, rope=rope,
                              defaults=defaults, metadata=metadata)
    return load_transformers(path, template=name, quantization=quantization, device=device, dtype=dtype,
                             n_ctx=n_ctx, rope=rope, trust_remote_code=trust_remote_code,
                             catalog_rope=entry.rope_scaling if entry is not None else None, defaults=defaults)


# ----------------------------------------------------------------------------- speculative decoding
def _shared_vocabulary(target: TransformersBackend, draft: TransformersBackend) -> None:
    t_rows = target.model.get_output_embeddings().weight.shape[0]
    d_rows = draft.model.get_output_embeddings().weight.shape[0]
    if t_rows != d_rows or target.tokenizer.get_vocab() != draft.tokenizer.get_vocab():
        raise UserError(f"the draft model's vocabulary ({len(draft.tokenizer)} tokens, {d_rows} rows) differs from "
                        f"the target's ({len(target.tokenizer)} tokens, {t_rows} rows); speculative decoding needs "
                        "the same tokenizer (e.g. Chinese-Alpaca-2-1.3B as draft for Chinese-Alpaca-2-7B/13B)")


def speculative_generate(target: Backend, draft: Backend, prompt: str, *, num_assistant_tokens: int | None = None,
                         compare: bool = True, verbose: bool = True, **gen: Any) -> tuple[str, dict]:
    """Generate with a small draft model proposing tokens that the target verifies (transformers' assistant path).

    Args:
        target: the big model (transformers back end).
        draft: the small model with the same vocabulary (transformers back end).
        prompt: the prompt text (already templated).
        num_assistant_tokens: draft tokens per step (transformers' default schedule when None).
        compare: also time the target alone to report the speed-up.
        verbose: print the figures.
        **gen: sampling settings as for :meth:`Backend.generate`.

    Returns:
        ``(reply, stats)``; stats has ``tokens``, ``seconds``, ``tokens_per_s``, ``draft_proposed``,
        ``draft_accepted``, ``acceptance_rate``, ``target_passes`` and, with ``compare``, ``plain_tokens``,
        ``plain_seconds``, ``plain_tokens_per_s``, ``speedup`` and ``same_text`` (both runs gave the same
        reply, as they must under greedy decoding).
    """
    import torch

    if not (isinstance(target, TransformersBackend) and isinstance(draft, TransformersBackend)):
        raise UserError("speculative decoding uses the transformers back end for both the target and the draft")
    _shared_vocabulary(target, draft)
    s = target.settings(**gen)
    ids, mask = target.encode(prompt)
    kwargs = target.generate_kwargs(s)
    steps: list[tuple[int, int]] = []  # (draft tokens proposed, accepted) per verification pass
    model = target.model
    original = getattr(model, "_get_candidate_generator", None)

    def recording(*args: Any, **kw: Any):
        generator = original(*args, **kw)
        update = generator.update_candidate_strategy

        def update_and_record(input_ids, scores, num_matches):
            steps.append((int(scores.shape[1]) - 1, int(num_matches)))
            return update(input_ids, scores, num_matches)

        generator.update_candidate_strategy = update_and_record
        return generator

    def timed(**extra: Any) -> tuple[Any, float]:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, **kwargs, **extra)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out[0, ids.shape[1]:], time.perf_counter() - start

    for m in (model, draft.model):  # warm up both so the timings compare steady states
        with torch.inference_mode():
            m.generate(input_ids=ids[:, -8:], attention_mask=mask[:, -8:], max_new_tokens=2, do_sample=False,
                       pad_token_id=kwargs["generation_config"].pad_token_id)
    draft_config = draft.model.generation_config
    saved = (draft_config.num_assistant_tokens, draft_config.num_assistant_tokens_schedule)
    if num_assistant_tokens:
        draft_config.num_assistant_tokens, draft_config.num_assistant_tokens_schedule = int(num_assistant_tokens), "constant"
    if original is not None:
        model._get_candidate_generator = recording
    try:
        new, dt = timed(assistant_model=draft.model)
    finally:
        if original is not None:
            del model._get_candidate_generator
        draft_config.num_assistant_tokens, draft_config.num_assistant_tokens_schedule = saved
    text = _cut(target, new)
    proposed, accepted = sum(p for p, _ in steps), sum(a for _, a in steps)
    stats: dict[str, Any] = {
        "tokens": int(new.shape[0]), "seconds": dt, "tokens_per_s": new.shape[0] / dt if dt else 0.0,
        "target_passes": len(steps), "draft_proposed": proposed, "draft_accepted": accepted,
        "acceptance_rate": accepted / proposed if proposed else None,
    }
    if compare:
        plain, pdt = timed()
        stats.update(plain_tokens=int(plain.shape[0]), plain_seconds=pdt,
                     plain_tokens_per_s=plain.shape[0] / pdt if pdt else 0.0)
        stats["speedup"] = stats["tokens_per_s"] / stats["plain_tokens_per_s"] if stats["plain_tokens_per_s"] else None
        stats["same_text"] = _cut(target, plain) == text
    if verbose:
        rate = f"{stats['acceptance_rate']:.0%}" if stats["acceptance_rate"] is not None else "n/a"
        line = f"speculative: {stats['tokens_per_s']:.1f} tok/s, {accepted}/{proposed} draft tokens accepted ({rate})"
        if compare and stats["speedup"] is not None:
            line += f"; target alone {stats['plain_tokens_per_s']:.1f} tok/s -> speed-up {stats['speedup']:.2f}x"
        print(line)
    return text, stats


def _cut(backend: TransformersBackend, new_ids: Any) -> str:
    cut = StopFilter(backend.stop_strings())
    text = cut.feed(backend.tokenizer.decode(new_ids, skip_special_tokens=True).replace("\ufffd", ""))
    return (text + cut.flush()).strip()


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers chat``."""
    parser.add_argument("--model", required=True, help="HF folder, .gguf file, hub id or catalog name")
    parser.add_argument("--prompt", help="one question: print one streamed reply and exit (default: interactive)")
    parser.add_argument("--system", help="system prompt (default: the template's; '' for none)")
    parser.add_argument("--backend", default="auto", choices=["auto", "transformers", "llama.cpp"])
    parser.add_argument("--template", help="force a prompt template (alpaca, llama2-zh, llama2-zh-long, llama3, raw)")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--temperature", type=float, help="0 decodes greedily")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--repetition-penalty", type=float)
    quant = parser.add_mutually_exclusive_group()
    quant.add_argument("--4bit", dest="quantization", action="store_const", const="4bit", help="bitsandbytes NF4 (GPU)")
    quant.add_argument("--8bit", dest="quantization", action="store_const", const="8bit", help="bitsandbytes 8-bit (GPU)")
    parser.add_argument("--n-ctx", type=int, help="context length")
    parser.add_argument("--rope", help="config | auto | ntk | ntk:<alpha> | linear:<f> | yarn:<f>")
    parser.add_argument("--n-gpu-layers", type=int, help="llama.cpp layers on the GPU (-1: all)")
    parser.add_argument("--device", help="transformers device (cuda, cpu)")
    parser.add_argument("--trust-remote-code", action="store_true", help="run the model repo's own code (64K models)")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers chat``."""
    gen = {k: getattr(args, k) for k in ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty")}
    backend = load_backend(args.model, backend=args.backend, quantization=args.quantization, device=args.device,
                           n_gpu_layers=args.n_gpu_layers, n_ctx=args.n_ctx, rope=args.rope,
                           trust_remote_code=args.trust_remote_code, template=args.template)
    if args.prompt is not None:
        _print_stream(backend.chat(args.prompt, system=args.system, stream=True, **gen))
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
        reply = _print_stream(backend.chat(user, history=history, system=args.system, stream=True, **gen))
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


def __getattr__(name: str) -> Any:
    # the notebook pieces live in helpers.chatui; keep them reachable from here
    if name in ("chat_widget", "ChatBox", "start_openai_server", "openai_chat"):
        from . import chatui

        return getattr(chatui, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Backend", "TransformersBackend", "LlamaCppBackend", "load_backend", "speculative_generate",
           "ntk_alpha", "ntk_rope_base", "plan_rope", "RopePlan", "gguf_metadata", "StopFilter",
           "chat_widget", "start_openai_server", "openai_chat", "add_arguments", "run"]
