"""The transformers back end: :class:`TransformersBackend`, its threaded text streamer and :func:`load_transformers`."""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

from .backend import Backend
from .guidance import OFF
from ..device import dtype_kwarg, free_memory, torch_dtype
from ..tokens import load_tokenizer
from ..util import UserError
from .longctx import RopeScaling, apply_rope_to_config, choose_rope


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
        """``model.generate`` keyword arguments for ``settings`` (stop tokens, greedy or sampling, and CFG sampling
        through transformers' own ``guidance_scale`` / ``negative_prompt_ids``)."""
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
            guidance_scale=settings["guidance_scale"] if settings["guidance_scale"] != OFF else None,
        )
        kwargs: dict[str, Any] = {"generation_config": config}
        if config.guidance_scale is not None and settings["negative_prompt"]:
            ids, mask = self.encode(settings["negative_prompt"])  # with BOS, as the prompt
            kwargs.update(negative_prompt_ids=ids, negative_prompt_attention_mask=mask)
        return kwargs

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
        self.model = None
        free_memory()


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


def load_transformers(path: Path, *, template: str, quantization: str | None = None, device: str | None = None,
                      dtype: Any = None, n_ctx: int | None = None, rope: str | None = None,
                      trust_remote_code: bool = False, catalog_rope: dict | None = None,
                      defaults: dict | None = None) -> TransformersBackend:
    """Load an HF folder with transformers (see :func:`helpers.chat.load_backend` for the arguments)."""
    model, tokenizer, ctx, where = load_hf_model(path, quantization=quantization, device=device, dtype=dtype,
                                            n_ctx=n_ctx, rope=rope, trust_remote_code=trust_remote_code,
                                            catalog_rope=catalog_rope)
    print(f"loaded {path.name} with transformers on {where}; template {template}", file=sys.stderr)
    return TransformersBackend(model, tokenizer, template=template, path=path, n_ctx=ctx, defaults=defaults)


def _check_device(device: str | None, quantization: str | None) -> str:
    """The device to load on (CUDA when available), refusing what cannot work there."""
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
    return device


def _config_with_rope(path: Path, *, n_ctx: int | None, rope: str | None, trust_remote_code: bool,
                      catalog_rope: dict | None) -> tuple[Any, RopeScaling]:
    """The model's config with the long-context plan (:mod:`.longctx`) applied, and the plan."""
    from transformers import AutoConfig

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
    plan = choose_rope(rope, n_ctx=n_ctx, native_ctx=native, base=base, head_dim=head_dim,
                     configured=configured or (catalog_rope or {}).get("type"))
    apply_rope_to_config(config, plan, catalog_rope)
    if plan.kind != "config":
        print(f"rope: {plan.describe()}", file=sys.stderr)
    return config, plan


def _quantization_kwargs(quantization: str | None, dtype_key: str) -> dict[str, Any]:
    """``from_pretrained`` keywords for bitsandbytes 8-bit or NF4 4-bit (both compute in fp16)."""
    if not quantization:
        return {}
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("8/4-bit loading needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=torch.float16)
    else:  # LLM.int8 computes in fp16; a bf16 model would be cast on every matmul (and warn each time)
        config = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": config, dtype_key: torch.float16}


def load_hf_model(path: Path, *, quantization: str | None = None, device: str | None = None, dtype: Any = None,
                  n_ctx: int | None = None, rope: str | None = None, trust_remote_code: bool = False,
                  catalog_rope: dict | None = None) -> tuple[Any, Any, int, str]:
    """Model (in eval mode, on its device) and tokenizer of an HF folder, the context in use and a
    ``device (dtype)`` description; the arguments are those of :func:`load_transformers`."""
    import torch
    from transformers import AutoModelForCausalLM

    device = _check_device(device, quantization)
    config, plan = _config_with_rope(path, n_ctx=n_ctx, rope=rope, trust_remote_code=trust_remote_code,
                                     catalog_rope=catalog_rope)
    chosen, dtype_key = torch_dtype(dtype, device.startswith("cuda")), dtype_kwarg()
    kwargs: dict[str, Any] = {"config": config, dtype_key: chosen, "trust_remote_code": trust_remote_code,
                              **_quantization_kwargs(quantization, dtype_key)}
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
    return model, tokenizer, ctx, f"{device} ({quantization or str(chosen).replace('torch.', '')})"
