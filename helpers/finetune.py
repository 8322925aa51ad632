"""LoRA / QLoRA fine-tuning of the Chinese LLaMA/Alpaca models, with the releases' recipes.

Two modes, as the releases trained:

- ``sft``: Alpaca-format JSON (``[{"instruction", "input", "output"}]``; ``input`` is appended to the
  instruction after a newline). The prompt is the model's own template; the labels are -100 over the
  prompt and the target is ``output`` followed by the end-of-turn token (``</s>``, or ``<|eot_id|>``
  for Llama-3), truncated to ``max_seq_length``.
- ``pt``: plain text files, one document per line, tokenized, concatenated and cut into ``block_size``
  blocks (continued pre-training).

LoRA goes on q/k/v/o/gate/up/down (r 64, alpha 128, dropout 0.05, cosine schedule, batch 1 x 8
accumulation); ``embed_tokens``/``lm_head`` are trained in full (``modules_to_save``) when the tokenizer
is larger than the model's vocabulary. ``load_in_4bit`` is QLoRA (NF4, double quantization, gradient
checkpointing). The output folder is what ``python -m helpers merge --lora`` reads: adapter_config.json,
adapter_model.safetensors and the tokenizer files, plus ``loss.csv``, ``loss.png`` and ``finetune.json``.
Trainer checkpoints go to ``OUT/checkpoints``; rerunning the same command resumes from the last one.

``python -m helpers finetune --base BASE --data FILE --out DIR [--mode sft|pt] [--4bit] ...``
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .util import UserError, atomic_path, human_bytes, progress, write_json

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EMBEDDINGS = ("embed_tokens", "lm_head")
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja")
DEFAULT_LR = {"sft": 1e-4, "pt": 2e-4}
DEFAULT_WARMUP = {"sft": 0.03, "pt": 0.05}
IGNORE = -100
_FAMILY_TEMPLATE = {"llama": "alpaca", "llama2": "llama2-zh", "llama3": "llama3"}
# (hidden, intermediate, layers, heads, kv heads) of the released sizes, for estimates before download
_SHAPES = {"1.3B": (4096, 11008, 4, 32, 32), "7B": (4096, 11008, 32, 32, 32), "8B": (4096, 14336, 32, 32, 8),
           "13B": (5120, 13824, 40, 40, 40), "33B": (6656, 17920, 60, 52, 52)}


def _names(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of one fine-tuning run (defaults: the releases' recipes).

    Attributes:
        base: base model folder or hub id (resolved with :func:`helpers.env.resolve_model`).
        data: SFT: an Alpaca JSON/JSONL file or a folder of ``*.json``; PT: a ``.txt`` file or folder of them.
        out: output folder (adapter, tokenizer, loss.csv, loss.png, checkpoints/).
        mode: ``sft`` or ``pt``.
        template: prompt template id for SFT; ``None`` picks the model's own (catalog, tokenizer files).
        tokenizer: tokenizer folder when it is not the base's (e.g. an expanded Chinese vocabulary).
        max_steps: optimizer steps; ``None`` trains ``epochs`` epochs.
        epochs: passes over the data when ``max_steps`` is ``None``.
        lr: learning rate; ``None``: 1e-4 (SFT) or 2e-4 (PT) as released.
        lora_r, lora_alpha, lora_dropout: LoRA rank, scaling numerator and dropout.
        target_modules: projections that get LoRA.
        modules_to_save: fully trained modules; ``None``: ``embed_tokens,lm_head`` only when the tokenizer is
            larger than the model's vocabulary.
        batch_size, grad_accum: per-step batch and gradient accumulation (effective batch = product).
        max_seq_length: SFT truncation length; block_size: PT block length.
        warmup_ratio: share of steps with linear warmup; ``None``: 0.03 (SFT) / 0.05 (PT).
        load_in_4bit: QLoRA (NF4, double quant); needs a CUDA GPU.
        gradient_checkpointing: ``None``: on with a GPU, off on CPU.
        precision: ``bf16``, ``fp16`` or ``fp32``; ``None``: bf16/fp16 on GPU, fp32 on CPU.
        seed, save_steps, save_total_limit, logging_steps: trainer settings.
        resume: ``None``: resume when OUT/checkpoints has a checkpoint; ``True``: require one; ``False``: restart.
        check_memory: refuse before loading when the estimate exceeds the device memory.
        live_plot: ``None``: live loss plot in a notebook, log lines elsewhere.
        plot_every: steps between live plot updates / log lines.
        max_samples: use only the first N records (SFT) or blocks (PT).
        extra: more ``transformers.TrainingArguments`` keywords (e.g. ``{"optim": "paged_adamw_8bit"}``).
    """

    base: str
    data: str
    out: str
    mode: str = "sft"
    template: str | None = None
    tokenizer: str | None = None
    max_steps: int | None = None
    epochs: float = 1.0
    lr: float | None = None
    lora_r: int = 64
    lora_alpha: float = 128.0
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = TARGETS
    modules_to_save: tuple[str, ...] | None = None
    batch_size: int = 1
    grad_accum: int = 8
    max_seq_length: int = 512
    block_size: int = 512
    warmup_ratio: float | None = None
    load_in_4bit: bool = False
    gradient_checkpointing: bool | None = None
    precision: str | None = None
    seed: int = 42
    save_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 1
    resume: bool | None = None
    check_memory: bool = True
    live_plot: bool | None = None
    plot_every: int = 10
    max_samples: int | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        def bad(msg: str) -> UserError:
            return UserError(f"finetune: {msg}")

        for name in ("base", "data", "out"):
            if not str(getattr(self, name) or "").strip():
                raise bad(f"--{name} is required")
            object.__setattr__(self, name, str(getattr(self, name)))
        if self.mode not in ("sft", "pt"):
            raise bad(f"mode {self.mode!r} is not 'sft' (instruction JSON) or 'pt' (plain text)")
        if not Path(self.data).exists():
            raise bad(f"data {self.data} not found; give an Alpaca JSON file (sft) or a .txt file/folder (pt)")
        object.__setattr__(self, "target_modules", _names(self.target_modules))
        object.__setattr__(self, "modules_to_save", _names(self.modules_to_save))
        if not self.target_modules:
            raise bad("target_modules is empty; LoRA needs at least one projection such as q_proj")
        if self.template is not None:
            from .templates import get_template

            get_template(self.template)
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps <= 0):
            raise bad(f"max_steps must be a positive integer, not {self.max_steps!r}")
        checks = [("epochs", self.epochs > 0), ("lora_r", self.lora_r >= 1), ("lora_alpha", self.lora_alpha > 0),
                  ("lora_dropout", 0 <= self.lora_dropout < 1), ("batch_size", self.batch_size >= 1),
                  ("grad_accum", self.grad_accum >= 1), ("max_seq_length", self.max_seq_length >= 8),
                  ("block_size", self.block_size >= 8), ("save_steps", self.save_steps >= 1),
                  ("save_total_limit", self.save_total_limit >= 1), ("logging_steps", self.logging_steps >= 1),
                  ("plot_every", self.plot_every >= 1), ("lr", self.lr is None or 0 < self.lr < 1),
                  ("warmup_ratio", self.warmup_ratio is None or 0 <= self.warmup_ratio < 1),
                  ("max_samples", self.max_samples is None or self.max_samples >= 1)]
        for name, ok in checks:
            if not ok:
                raise bad(f"{name} = {getattr(self, name)!r} is out of range")
        if self.precision not in (None, "bf16", "fp16", "fp32"):
            raise bad(f"precision {self.precision!r}: use bf16, fp16 or fp32")
        if self.load_in_4bit and self.precision == "fp32":
            raise bad("4-bit (QLoRA) computes in bf16 or fp16; drop --precision fp32")

    @property
    def learning_rate(self) -> float:
        """The learning rate in use (the release default for the mode when ``lr`` is None)."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.mode]

    @property
    def warmup(self) -> float:
        """The warmup ratio in use."""
        return self.warmup_ratio if self.warmup_ratio is not None else DEFAULT_WARMUP[self.mode]


@dataclass(frozen=True, repr=False)
class FinetuneResult:
    """What a run produced.

    Attributes:
        out: the adapter folder (merge it with ``python -m helpers merge --lora OUT``).
        global_step: optimizer steps done in total (including those before a resume).
        losses: ``(step, loss)`` of the whole run, as in ``loss.csv``.
        resumed_from: the checkpoint the run continued from, if any.
        template: the SFT prompt template (``None`` for PT).
        modules_to_save: modules trained in full.
        trainable_params: trainable parameter count.
        train_seconds, steps_per_second, tokens_per_second: speed of this invocation.
        memory: the memory estimate checked before loading.
    """

    out: Path
    global_step: int
    losses: list[tuple[int, float]]
    resumed_from: str | None
    template: str | None
    modules_to_save: tuple[str, ...]
    trainable_params: int
    train_seconds: float
    steps_per_second: float
    tokens_per_second: float
    memory: "MemoryEstimate | None" = None

    def __repr__(self) -> str:
        loss = f", loss {self.first_loss:.4f} -> {self.last_loss:.4f}" if self.losses else ""
        resumed = f", resumed from {Path(self.resumed_from).name}" if self.resumed_from else ""
        return (f"FinetuneResult(out={str(self.out)!r}, steps={self.global_step}{loss}{resumed}, "
                f"{self.steps_per_second:.2f} steps/s, {self.tokens_per_second:.0f} tokens/s)")

    @property
    def adapter_dir(self) -> Path:
        """The folder to pass to the merge as ``--lora`` (same as ``out``)."""
        return self.out

    @property
    def first_loss(self) -> float | None:
        return self.losses[0][1] if self.losses else None

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None


# ----------------------------------------------------------------------------- memory estimate


@dataclass(frozen=True)
class MemoryEstimate:
    """Approximate peak memory of a LoRA/QLoRA run (bytes), and the device it is checked against."""

    params: int
    weights_bytes: int
    trainable_params: int
    trainable_bytes: int
    activation_bytes: int
    overhead_bytes: int
    load_in_4bit: bool
    device_name: str
    device_bytes: int | None

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.trainable_bytes + self.activation_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        return self.device_bytes is None or self.total_bytes <= self.device_bytes

    def summary(self) -> str:
        """One line: the estimate and the device."""
        room = human_bytes(self.device_bytes) if self.device_bytes is not None else "unknown memory"
        return (f"memory estimate: about {human_bytes(self.total_bytes)} (weights {human_bytes(self.weights_bytes)}, "
                f"LoRA + Adam {human_bytes(self.trainable_bytes)}, activations {human_bytes(self.activation_bytes)}); "
                f"{self.device_name} has {room}")

    def __str__(self) -> str:
        return self.summary()

    def check(self) -> None:
        """Raise :class:`UserError` when the run cannot fit the device."""
        if self.fits:
            return
        hint = ("use --4bit (QLoRA)" if not self.load_in_4bit else
                "use a smaller model, a lower --lora-r, --max-seq-length/--block-size or --batch-size")
        raise UserError(f"fine-tuning needs about {human_bytes(self.total_bytes)}, the {self.device_name} has "
                        f"{human_bytes(self.device_bytes or 0)}: {hint}")


def detect_device() -> tuple[str, int | None]:
    """Name and usable bytes of the training device: free GPU memory, else available RAM."""
    try:
        import torch

        if torch.cuda.is_available():
            free, _total = torch.cuda.mem_get_info()
            return torch.cuda.get_device_name(0).replace("Tesla ", "").replace("NVIDIA ", ""), int(free)
    except Exception:  # noqa: BLE001 - a broken CUDA setup falls back to RAM
        pass
    from .env import available_ram_bytes

    return "machine's RAM", available_ram_bytes()


def _model_shape(base: str | Path | dict) -> dict:
    if isinstance(base, dict):
        return base
    path = Path(str(base)).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    from .catalog import find

    entry = find(str(base))
    if entry is None or entry.size not in _SHAPES:
        raise UserError(f"cannot estimate memory for {base}: give a model folder with config.json or a catalog name")
    h, f, n, a, kv = _SHAPES[entry.size]
    return {"hidden_size": h, "intermediate_size": f, "num_hidden_layers": n, "num_attention_heads": a,
            "num_key_value_heads": kv, "vocab_size": entry.vocab_size}


def estimate_memory(base: str | Path | dict, *, load_in_4bit: bool, lora_r: int = 64, seq_len: int = 512,
                    batch_size: int = 1, vocab_size: int | None = None, modules_to_save: Sequence[str] = (),
                    target_modules: Sequence[str] = TARGETS, gradient_checkpointing: bool = True,
                    bytes_per_value: int = 2, device_bytes: int | None = None,
                    device_name: str | None = None) -> MemoryEstimate:
    """Estimate peak training memory from the model's config.json.

    Weights at 16-bit (or NF4 with double quantization for the linear layers; embeddings and lm_head stay
    16-bit and are upcast to fp32 by k-bit preparation), LoRA (and modules_to_save) parameters in fp32 with
    their gradients and two Adam moments, activations with gradient checkpointing (one hidden state per layer
    plus one layer's recompute and the fp32 logits), and a fixed runtime overhead.

    Args:
        base: model folder, catalog name or config dict.
        load_in_4bit: QLoRA.
        lora_r, seq_len, batch_size: run settings.
        vocab_size: rows after resizing to the tokenizer (default: the config's).
        modules_to_save: modules trained in full (``embed_tokens``, ``lm_head``).
        target_modules: LoRA targets.
        gradient_checkpointing: without it every layer keeps its activations.
        bytes_per_value: 2 for fp16/bf16, 4 for fp32 (CPU).
        device_bytes, device_name: the device to check against; ``None`` detects it (free GPU memory or RAM).
    """
    cfg = _model_shape(base)
    h, f, n = int(cfg["hidden_size"]), int(cfg["intermediate_size"]), int(cfg["num_hidden_layers"])
    heads = int(cfg.get("num_attention_heads") or h // 128)
    kv = int(cfg.get("num_key_value_heads") or heads) * (h // heads)
    vocab = int(vocab_size or cfg["vocab_size"])
    shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
              "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h)}
    linear = n * sum(i * o for i, o in shapes.values())
    emb = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    params = linear + emb + n * 2 * h + h
    if load_in_4bit:
        weights = int(linear * (0.5 + 1 / 64)) + emb * 4 + (n * 2 * h + h) * 4
    else:
        weights = params * bytes_per_value
    lora = n * sum(lora_r * (shapes[t][0] + shapes[t][1]) for t in target_modules if t in shapes)
    full = vocab * h * sum(1 for m in modules_to_save if m in EMBEDDINGS)
    trainable = lora + full
    s, b, bv = seq_len, batch_size, bytes_per_value
    per_layer = s * b * (34 * h + 5 * heads * s) * bv // 2 + 10 * s * b * h * bv
    acts = (n * s * b * h * bv + per_layer) if gradient_checkpointing else n * per_layer
    acts += s * b * vocab * (bv + 8)  # logits, their fp32 copy and its gradient
    if device_bytes is None and device_name is None:
        device_name, device_bytes = detect_device()
    overhead = (1 << 30) if bytes_per_value == 2 else (1 << 29)
    return MemoryEstimate(params=params, weights_bytes=int(weights), trainable_params=trainable,
                          trainable_bytes=16 * trainable, activation_bytes=int(acts), overhead_bytes=overhead,
                          load_in_4bit=load_in_4bit, device_name=device_name or "device", device_bytes=device_bytes)


# ----------------------------------------------------------------------------- data


def _files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes and p.is_file())
        if not files:
            raise UserError(f"no {'/'.join(suffixes)} files in {path}")
        return files
    return [path]


def load_sft_records(path: str | Path) -> list[dict]:
    """Read Alpaca-format records from a JSON list, a JSONL file or a folder of ``*.json``/``*.jsonl``."""
    records: list[dict] = []
    for file in _files(Path(path), (".json", ".jsonl")):
        text = file.read_text(encoding="utf-8-sig")
        try:
            if file.suffix.lower() == ".jsonl":
                items = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{file} is not valid JSON ({exc}); SFT data is a list of "
                            '{"instruction", "input", "output"} records') from None
        if isinstance(items, dict):
            items = items.get("data", items.get("train", [items]))
        if not isinstance(items, list):
            raise UserError(f"{file} must hold a list of instruction records")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("instruction"), str) \
                    or not isinstance(item.get("output"), str):
                raise UserError(f"{file} record {i} needs string 'instruction' and 'output' fields "
                                "(and optionally 'input'); got " + repr(item)[:120])
            if item.get("input") is not None and not isinstance(item["input"], str):
                raise UserError(f"{file} record {i}: 'input' must be a string")
            records.append(item)
    if not records:
        raise UserError(f"{path} holds no instruction records")
    return records


def eot_id(tokenizer, template) -> int:
    """Id of the template's end-of-turn token (``</s>`` or ``<|eot_id|>``), falling back to EOS."""
    token = getattr(template, "eot_token", None)
    if token:
        idx = tokenizer.convert_tokens_to_ids(token)
        if isinstance(idx, int) and idx >= 0 and idx != tokenizer.unk_token_id:
            return idx
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no end-of-sequence token; use the model's own tokenizer files")
    return int(tokenizer.eos_token_id)


def tokenize_sft(record: dict, tokenizer, template, *, max_seq_length: int, eot: int | None = None) -> dict:
    """One SFT example: ``input_ids`` = prompt + output + end-of-turn, ``labels`` -100 over the prompt.

    The prompt is tokenized with the tokenizer's BOS (none for Llama-3, as its SFT did) and the target
    without special tokens; both are truncated together to ``max_seq_length``.
    """
    from .templates import build_prompt, get_template

    template = get_template(template)
    instruction = record["instruction"]
    if record.get("input"):
        instruction = f"{instruction}\n{record['input']}"
    prompt = build_prompt(template, instruction)
    add_bos = template.family != "llama3"
    prompt_ids = list(tokenizer(prompt, add_special_tokens=add_bos)["input_ids"])
    target_ids = list(tokenizer(record["output"], add_special_tokens=False)["input_ids"])
    target_ids.append(eot if eot is not None else eot_id(tokenizer, template))
    ids = (prompt_ids + target_ids)[:max_seq_length]
    labels = ([IGNORE] * len(prompt_ids) + target_ids)[:max_seq_length]
    return {"input_ids": ids, "labels": labels}


def group_texts(token_lists: Iterable[Sequence[int]], block_size: int) -> list[list[int]]:
    """Concatenate token lists and cut them into ``block_size`` blocks (the remainder is dropped)."""
    flat = [t for ids in token_lists for t in ids]
    return [flat[i:i + block_size] for i in range(0, len(flat) - block_size + 1, block_size)]


def build_dataset(config: FinetuneConfig, tokenizer, template=None) -> list[dict]:
    """Tokenize the run's data into ``{"input_ids", "labels"}`` examples."""
    if config.mode == "pt":
        lines = []
        for file in _files(Path(config.data), (".txt",)):
            lines += [ln for ln in file.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
        blocks = group_texts((tokenizer(ln)["input_ids"] for ln in lines), config.block_size)
        if not blocks:
            raise UserError(f"{config.data} has fewer than block_size={config.block_size} tokens; "
                            "add text or lower --block-size")
        examples = [{"input_ids": b, "labels": list(b)} for b in blocks]
    else:
        records = load_sft_records(config.data)[: config.max_samples]
        eot = eot_id(tokenizer, template)
        examples = [tokenize_sft(r, tokenizer, template, max_seq_length=config.max_seq_length, eot=eot)
                    for r in progress(records, desc="tokenizing", unit="record")]
        kept = [e for e in examples if any(x != IGNORE for x in e["labels"])]
        if len(kept) < len(examples):
            print(f"note: {len(examples) - len(kept)} records whose prompt fills max_seq_length="
                  f"{config.max_seq_length} were skipped", file=sys.stderr)
        if not kept:
            raise UserError("every prompt is longer than --max-seq-length; raise it")
        examples = kept
    return examples[: config.max_samples] if config.max_samples else examples


def sample_data(out_dir: str | Path, *, mode: str = "sft") -> Path:
    """Write a small Chinese sample (96 Alpaca records, or plain text for ``pt``) and return its path."""
    from .demo import write_data

    folder = Path(out_dir) / "sample_data"
    target = folder / ("pt_zh.txt" if mode == "pt" else "sft_zh.json")
    if not target.is_file():
        with atomic_path(folder, is_dir=True) as tmp:
            write_data(tmp)
    return target


def pad_id_of(tokenizer) -> int:
    """Padding id: the tokenizer's pad, else unk, else eos (as the releases did)."""
    for idx in (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id):
        if idx is not None:
            return int(idx)
    return 0


class DataCollator:
    """Right-pads ``input_ids`` with ``pad_id``, ``labels`` with -100, and builds the attention mask."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.tensor(f["labels"], dtype=torch.long)
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


# ----------------------------------------------------------------------------- loss log, plots, callbacks


def read_loss_csv(path: str | Path) -> list[tuple[int, float]]:
    """Rows of a ``loss.csv`` (``step,loss``); empty when the file is absent."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def write_loss_csv(path: str | Path, rows: list[tuple[int, float]]) -> None:
    """Write ``step,loss`` rows atomically."""
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["step", "loss"])
            w.writerows((s, f"{v:.6f}") for s, v in rows)


def loss_figure(rows: list[tuple[int, float]], *, title: str = "training loss"):
    """A matplotlib Figure of the loss curve (no pyplot, so no GUI backend is touched)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), dpi=100)
    ax = fig.add_subplot()
    if rows:
        steps, losses = zip(*rows)
        ax.plot(steps, losses, lw=1.2)
        if len(rows) >= 10:  # a running mean makes the trend readable
            k = max(2, len(rows) // 10)
            smooth = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1])
                      for i in range(len(losses))]
            ax.plot(steps, smooth, lw=2, alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_loss_plot(rows: list[tuple[int, float]], path: str | Path) -> None:
    """Write the loss curve as a PNG (atomically)."""
    fig = loss_figure(rows)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def in_notebook() -> bool:
    """True inside a Jupyter/Colab kernel."""
    try:
        from IPython import get_ipython  # type: ignore[import-not-found]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ in ("ZMQInteractiveShell", "Shell")


def _callbacks():
    """Trainer callbacks (defined lazily: transformers is imported only when training)."""
    from transformers import TrainerCallback

    class LossLog(TrainerCallback):
        """Collects ``(step, loss)``, rewrites loss.csv, shows a progress bar with tokens/s and time left."""

        def __init__(self, csv_path: Path, rows: list[tuple[int, float]]) -> None:
            self.csv_path, self.rows = csv_path, rows
            self.bar = None
            self.t0 = time.perf_counter()
            self.tokens0 = 0
            self.step0 = 0
            self.tokens_per_second = 0.0

        def on_train_begin(self, args, state, control, **kw):
            self.step0, self.tokens0 = state.global_step, state.num_input_tokens_seen or 0
            self.t0 = time.perf_counter()
            self.rows[:] = [r for r in self.rows if r[0] <= state.global_step]
            self.bar = progress([], total=state.max_steps, desc="finetune", unit="step")
            self.bar.n = state.global_step
            self.bar.refresh()

        def on_step_end(self, args, state, control, **kw):
            dt = max(time.perf_counter() - self.t0, 1e-9)
            self.tokens_per_second = ((state.num_input_tokens_seen or 0) - self.tokens0) / dt
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)
                post = {"tok/s": f"{self.tokens_per_second:.0f}"}
                if self.rows:
                    post["loss"] = f"{self.rows[-1][1]:.4f}"
                self.bar.set_postfix(post)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs and "train_loss" not in logs:
                self.rows.append((state.global_step, float(logs["loss"])))
                write_loss_csv(self.csv_path, self.rows)
                if self.bar is not None:
                    self.bar.set_postfix({"tok/s": f"{self.tokens_per_second:.0f}", "loss": f"{logs['loss']:.4f}"})

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()

    class LivePlot(TrainerCallback):
        """Every ``every`` steps: redraw the loss plot in a notebook, or print one log line elsewhere."""

        def __init__(self, rows: list[tuple[int, float]], *, every: int, notebook: bool) -> None:
            self.rows, self.every, self.notebook = rows, every, notebook
            self.handle = None

        def _show(self, final: bool = False) -> None:
            if self.notebook:
                from IPython.display import Image, display  # type: ignore[import-not-found]

                buf = io.BytesIO()
                loss_figure(self.rows).savefig(buf, format="png")
                image = Image(data=buf.getvalue())
                if self.handle is None:
                    self.handle = display(image, display_id=True)
                else:
                    self.handle.update(image)
            elif self.rows and not final:
                from tqdm.auto import tqdm

                step, loss = self.rows[-1]
                tqdm.write(f"step {step}: loss {loss:.4f}", file=sys.stderr)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs and state.global_step % self.every == 0:
                self._show()

        def on_train_end(self, args, state, control, **kw):
            if self.notebook:
                self._show(final=True)

    return LossLog, LivePlot


# ----------------------------------------------------------------------------- training


def _resolve_template(config: FinetuneConfig, model_cfg: dict, tok_dir: Path) -> str:
    from .catalog import family_of_config, find
    from .templates import template_for_model

    if config.template:
        return config.template
    entry = find(config.base) or find(Path(config.base).name)
    if entry is not None and entry.template != "raw":
        return entry.template
    with contextlib.redirect_stderr(io.StringIO()):
        found = template_for_model(str(tok_dir))
    if found == "raw":  # a base (non-chat) model: use the template its generation's Alpaca was trained with
        found = _FAMILY_TEMPLATE[family_of_config(model_cfg)]
        print(f"note: {config.base} has no chat template; training with the {found!r} template "
              "(pass --template to choose another)", file=sys.stderr)
    return found


def _precision(config: FinetuneConfig, cuda: bool) -> str:
    if config.precision:
        if config.precision != "fp32" and not cuda:
            raise UserError(f"{config.precision} training needs a GPU here; use --precision fp32 on CPU")
        return config.precision
    if not cuda:
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _dtype_key() -> str:
    """``from_pretrained``'s dtype keyword: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _version_kwargs(training_arguments: type, *, warmup: float, checkpointing: bool) -> dict:
    """TrainingArguments keywords whose names changed in transformers 5 (Colab may still ship 4.x)."""
    import inspect

    params = inspect.signature(training_arguments.__init__).parameters
    ckpt = "activation_checkpointing" if "activation_checkpointing" in params else "gradient_checkpointing"
    kw: dict[str, Any] = {ckpt: checkpointing, f"{ckpt}_kwargs": {"use_reentrant": False} if checkpointing else None}
    kw["warmup_ratio" if "warmup_ratio" in params else "warmup_steps"] = warmup
    kw["include_num_input_tokens_seen"] = True
    if "non_padding" in (inspect.getdoc(training_arguments) or ""):
        kw["include_num_input_tokens_seen"] = "non_padding"  # count real tokens, not padding
    return kw


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            with atomic_path(dst / name) as tmp:
                shutil.copyfile(src / name, tmp)


def _prepare_out(out: Path, resume: bool | None) -> str | None:
    """Return the checkpoint to resume from (or None), applying the resume policy."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = out / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if resume is True and last is None:
        raise UserError(f"--resume: no checkpoint in {ckpt_dir}; run without --resume to start")
    if resume is False and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
        for name in ("loss.csv", "loss.png"):
            (out / name).unlink(missing_ok=True)
        return None
    return last


def finetune(config: FinetuneConfig, *, callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Train a LoRA (or QLoRA) adapter and write it where ``python -m helpers merge --lora`` reads it.

    Args:
        config: the run settings.
        callbacks: extra ``transformers.TrainerCallback`` objects.

    Raises:
        UserError: bad data, a device too small for the settings (see :func:`estimate_memory`), 4-bit without GPU.
    """
    import torch

    from . import load_tokenizer
    from .env import resolve_model
    from .templates import get_template

    out = Path(config.out)
    base_dir = resolve_model(config.base, what="base model")
    tok_dir = resolve_model(config.tokenizer, what="tokenizer") if config.tokenizer else base_dir
    if not (base_dir / "config.json").is_file():
        raise UserError(f"{base_dir} has no config.json; give a Hugging Face model folder as --base")
    model_cfg = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    cuda = torch.cuda.is_available()
    if config.load_in_4bit and not cuda:
        raise UserError("--4bit (QLoRA) needs a CUDA GPU (bitsandbytes); on CPU train without --4bit")
    precision = _precision(config, cuda)
    tokenizer = load_tokenizer(tok_dir)
    vocab = len(tokenizer)
    resize = vocab > int(model_cfg["vocab_size"])
    modules_to_save = config.modules_to_save if config.modules_to_save is not None else (EMBEDDINGS if resize else ())
    grad_ckpt = config.gradient_checkpointing if config.gradient_checkpointing is not None else cuda
    seq = config.block_size if config.mode == "pt" else config.max_seq_length
    memory = estimate_memory(model_cfg, load_in_4bit=config.load_in_4bit, lora_r=config.lora_r, seq_len=seq,
                             batch_size=config.batch_size, vocab_size=max(vocab, int(model_cfg["vocab_size"])),
                             modules_to_save=modules_to_save, target_modules=config.target_modules,
                             gradient_checkpointing=grad_ckpt, bytes_per_value=4 if precision == "fp32" else 2)
    print(memory.summary(), file=sys.stderr)
    if config.check_memory:
        memory.check()

    template = get_template(_resolve_template(config, model_cfg, tok_dir)) if config.mode == "sft" else None
    dataset = build_dataset(config, tokenizer, template)
    out.mkdir(parents=True, exist_ok=True)
    resume_from = _prepare_out(out, config.resume)
    rows = read_loss_csv(out / "loss.csv") if resume_from else []

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (AutoModelForCausalLM, BitsAndBytesConfig, PrinterCallback, Trainer, TrainingArguments,
                              set_seed)

    set_seed(config.seed)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    load: dict[str, Any] = {_dtype_key(): dtype}
    if cuda:
        load["device_map"] = {"": torch.cuda.current_device()}
    if config.load_in_4bit:
        load["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=sorted({"lm_head", *modules_to_save}))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), **load)
    if resize:
        model.resize_token_embeddings(vocab)
    model.config.use_cache = False
    if config.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=grad_ckpt,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), modules_to_save=list(modules_to_save) or None,
                      bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    for p in model.parameters():  # fp16 AMP needs fp32 master weights; full embeddings included
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1, learning_rate=config.learning_rate, lr_scheduler_type="cosine",
        weight_decay=0.0, logging_steps=config.logging_steps,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=config.save_total_limit,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not cuda, seed=config.seed,
        remove_unused_columns=False, report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        **_version_kwargs(TrainingArguments, warmup=config.warmup, checkpointing=grad_ckpt), **config.extra)
    LossLog, LivePlot = _callbacks()
    log = LossLog(out / "loss.csv", rows)
    notebook = in_notebook() if config.live_plot is None else config.live_plot
    cbs = [log, LivePlot(rows, every=config.plot_every, notebook=notebook and in_notebook()), *callbacks]
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=DataCollator(pad_id_of(tokenizer)),
                      callbacks=cbs)
    trainer.remove_callback(PrinterCallback)  # our bar and log lines replace its dict dumps
    t0 = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - t0
    steps_done = trainer.state.global_step - log.step0

    model.peft_config["default"].base_model_name_or_path = config.base
    _save_adapter(model, out, embeddings_saved=set(EMBEDDINGS) <= set(modules_to_save))
    _copy_tokenizer(tok_dir, out)
    write_loss_csv(out / "loss.csv", rows)
    save_loss_plot(rows, out / "loss.png")
    result = FinetuneResult(
        out=out, global_step=trainer.state.global_step, losses=list(rows), resumed_from=resume_from,
        template=template.name if template else None, modules_to_save=tuple(modules_to_save),
        trainable_params=trainable, train_seconds=seconds, steps_per_second=steps_done / max(seconds, 1e-9),
        tokens_per_second=log.tokens_per_second, memory=memory)
    write_json(out / "finetune.json", {
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "extra"},
        "template": result.template, "modules_to_save": list(modules_to_save), "precision": precision,
        "trainable_params": trainable, "global_step": result.global_step, "resumed_from": resume_from,
        "first_loss": result.first_loss, "last_loss": result.last_loss,
        "train_loss": output.training_loss if math.isfinite(output.training_loss or math.nan) else None,
        "steps_per_second": result.steps_per_second, "tokens_per_second": result.tokens_per_second})
    del trainer, model
    if cuda:
        torch.cuda.empty_cache()
    return result


def _save_adapter(model, out: Path, *, embeddings_saved: bool) -> None:
    """``save_pretrained`` into a temporary folder, then move each file into ``out`` (config last).

    With embed_tokens/lm_head in modules_to_save, only their trained copies are written, under the
    releases' names (``base_model.model.model.embed_tokens.weight``); PEFT would otherwise add the
    original and wrapped modules of a resized vocabulary as well.
    """
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=out))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True,
                              save_embedding_layers=False if embeddings_saved else "auto")
        files = sorted(tmp.iterdir(), key=lambda p: p.name == "adapter_config.json")
        for f in files:
            if f.is_file() and f.name != "README.md":  # skip PEFT's boilerplate model card
                os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- before / after


@dataclass(frozen=True)
class Comparison:
    """The same prompt answered by the base model and by base + adapter (greedy)."""

    prompt: str
    before: str
    after: str

    def __iter__(self):  # ``before, after = compare_answers(...)``
        return iter((self.before, self.after))


def compare_answers(base: str | Path, adapter: str | Path, prompt: str, *, template: str | None = None,
                    max_new_tokens: int = 128, system: str | None = None, load_in_4bit: bool = False) -> Comparison:
    """Answer ``prompt`` greedily with the base model and with the fine-tuned adapter applied.

    Args:
        base: the base model folder or hub id the adapter was trained on.
        adapter: the folder written by :func:`finetune` (its tokenizer files are used).
        prompt: the user question.
        template: prompt template; ``None``: the one recorded in ``finetune.json``, else the model's.
        max_new_tokens: reply length limit.
        system: system prompt (``None``: the template's default).
        load_in_4bit: load the base in NF4 (GPU), e.g. a 7B model on a T4.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from . import load_tokenizer
    from .env import resolve_model
    from .templates import build_prompt, get_template, template_for_model

    base_dir, adapter = resolve_model(base, what="base model"), Path(adapter)
    info = json.loads((adapter / "finetune.json").read_text(encoding="utf-8")) \
        if (adapter / "finetune.json").is_file() else {}
    name = template or info.get("template") or template_for_model(str(adapter))
    tmpl = get_template(name)
    tokenizer = load_tokenizer(adapter if (adapter / "tokenizer_config.json").is_file() else base_dir)
    cuda = torch.cuda.is_available()
    load: dict[str, Any] = {_dtype_key(): (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
                            if cuda else torch.float32}
    if cuda:
        load["device_map"] = {"": torch.cuda.current_device()}
    if load_in_4bit:
        if not cuda:
            raise UserError("load_in_4bit needs a CUDA GPU")
        load["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                         bnb_4bit_use_double_quant=True,
                                                         bnb_4bit_compute_dtype=load[_dtype_key()])
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), **load)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    text = build_prompt(tmpl, prompt, system=system)
    ids = tokenizer(text, add_special_tokens=tmpl.family != "llama3", return_tensors="pt")["input_ids"]
    ids = ids.to(model.device)
    stops = sorted({eot_id(tokenizer, tmpl), *([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])})

    def reply() -> str:
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=stops, pad_token_id=pad_id_of(tokenizer))
        answer = tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
        for s in tmpl.stop_strings:
            answer = answer.split(s)[0]
        return answer.strip()

    with model.disable_adapter():
        before = reply()
    after = reply()
    return Comparison(prompt=prompt, before=before, after=after)


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m helpers finetune``."""
    p = parser
    p.add_argument("--base", required=True, help="base model folder or hub id (e.g. hfl/chinese-alpaca-2-7b)")
    p.add_argument("--data", required=True, help="SFT: Alpaca JSON/JSONL file or folder; PT: .txt file or folder")
    p.add_argument("--out", required=True, help="output folder for the adapter (and checkpoints/)")
    p.add_argument("--mode", choices=("sft", "pt"), default="sft", help="instruction tuning or continued pre-training")
    p.add_argument("--template", help="prompt template for SFT (default: the model's own)")
    p.add_argument("--tokenizer", help="tokenizer folder when not the base's (expanded vocabulary)")
    p.add_argument("--max-steps", type=int, help="optimizer steps (default: --epochs over the data)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, help="learning rate (default 1e-4 SFT, 2e-4 PT)")
    p.add_argument("--lora-r", type=int, default=64)
    p.add_argument("--lora-alpha", type=float, default=128.0)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--target-modules", default=",".join(TARGETS), help="comma-separated LoRA targets")
    p.add_argument("--modules-to-save", help="comma-separated fully trained modules ('none' for none; "
                   "default: embed_tokens,lm_head only when the tokenizer is larger than the model vocabulary)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--block-size", type=int, default=512)
    p.add_argument("--warmup-ratio", type=float)
    p.add_argument("--4bit", dest="load_in_4bit", action="store_true", help="QLoRA: NF4 base weights (GPU)")
    p.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false", default=None)
    p.add_argument("--precision", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--save-steps", type=int, default=100)
    p.add_argument("--max-samples", type=int, help="use only the first N records/blocks")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", dest="resume", action="store_true", default=None,
                   help="continue from the last checkpoint (the default when one exists)")
    g.add_argument("--restart", dest="resume", action="store_false", help="delete old checkpoints and start over")
    p.add_argument("--no-memory-check", dest="check_memory", action="store_false",
                   help="train even when the memory estimate exceeds the device")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m helpers finetune``."""
    mts = args.modules_to_save
    mts = () if mts is not None and mts.strip().lower() == "none" else mts
    config = FinetuneConfig(
        base=args.base, data=args.data, out=args.out, mode=args.mode, template=args.template, tokenizer=args.tokenizer,
        max_steps=args.max_steps, epochs=args.epochs, lr=args.lr, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, target_modules=args.target_modules, modules_to_save=mts,
        batch_size=args.batch_size, grad_accum=args.grad_accum, max_seq_length=args.max_seq_length,
        block_size=args.block_size, warmup_ratio=args.warmup_ratio, load_in_4bit=args.load_in_4bit,
        gradient_checkpointing=args.gradient_checkpointing, precision=args.precision, seed=args.seed,
        save_steps=args.save_steps, resume=args.resume, check_memory=args.check_memory, max_samples=args.max_samples,
        live_plot=False)
    result = finetune(config)
    losses = f", loss {result.first_loss:.4f} -> {result.last_loss:.4f}" if result.losses else ""
    resumed = f" (resumed from {Path(result.resumed_from).name})" if result.resumed_from else ""
    print(f"adapter written to {result.out}: {result.global_step} steps{resumed}{losses}, "
          f"{result.tokens_per_second:.0f} tokens/s")
    print(f"merge it with: python -m helpers merge --base {args.base} --lora {result.out} --out MERGED --format hf")
    return 0
