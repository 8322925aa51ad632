"""Plumbing around the transformers Trainer for :func:`helpers.train.finetune`.

Template and precision choice, keywords whose names depend on the transformers version, the resume
policy of the output folder, and writing the adapter and tokenizer files into it.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..catalog import family_of_config, find
from ..device import bf16_native, dtype_kwarg
from ..tokens import template_for_model
from ..util import UserError

if TYPE_CHECKING:
    from .config import FinetuneConfig

_FAMILY_TEMPLATE = {"llama": "alpaca", "llama2": "llama2-zh", "llama3": "llama3"}


def resolve_template(config: FinetuneConfig, model_cfg: dict, tok_dir: Path) -> str:
    """The SFT template: the configured one, the catalog's, the tokenizer files', else the generation's Alpaca's."""
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


def pick_precision(config: FinetuneConfig, cuda: bool) -> str:
    """``bf16``, ``fp16`` or ``fp32``: the configured one (refused on CPU unless fp32), else the device's best."""
    if config.precision:
        if config.precision != "fp32" and not cuda:
            raise UserError(f"{config.precision} training needs a GPU here; use --precision fp32 on CPU")
        return config.precision
    if not cuda:
        return "fp32"
    return "bf16" if bf16_native() else "fp16"


def load_base(base_dir: Path, *, dtype: Any, load_in_4bit: bool, skip_modules: Sequence[str] = ()):
    """The base model of a run: ``dtype`` weights, on the GPU when there is one.

    ``load_in_4bit`` is QLoRA's NF4 with double quantization, computing in ``dtype``; ``skip_modules``
    stay unquantized.
    """
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    load: dict[str, Any] = {dtype_kwarg(): dtype}
    if torch.cuda.is_available():
        load["device_map"] = {"": torch.cuda.current_device()}
    if load_in_4bit:
        skip = {"llm_int8_skip_modules": sorted(skip_modules)} if skip_modules else {}
        load["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, **skip)
    return AutoModelForCausalLM.from_pretrained(str(base_dir), **load)


def version_kwargs(training_arguments: type, *, warmup: float, checkpointing: bool) -> dict:
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


def complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """The Trainer's checkpoints in step order, after removing those a killed run left unfinished (and the
    temporary folders of :func:`save_adapter`). The Trainer writes ``trainer_state.json`` last, so a checkpoint
    without a readable one was interrupted while being saved."""
    for tmp in ckpt_dir.parent.glob(".adapter-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    found = []
    for d in sorted(ckpt_dir.glob("checkpoint-*")) if ckpt_dir.is_dir() else []:
        try:
            step = int(d.name.split("-", 1)[1])
            json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
        except (ValueError, OSError):
            print(f"note: removing {d.name}, which an interrupted run left incomplete", file=sys.stderr)
            shutil.rmtree(d, ignore_errors=True)
            continue
        found.append((step, d))
    return [d for _, d in sorted(found)]


def prepare_out(out: Path, resume: bool | None) -> str | None:
    """Return the checkpoint to resume from (or None), applying the resume policy."""
    ckpt_dir = out / "checkpoints"
    done = complete_checkpoints(ckpt_dir)
    last = str(done[-1]) if done else None
    if resume is True and last is None:
        raise UserError(f"--resume: no checkpoint in {ckpt_dir}; run without --resume to start")
    if resume is False and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
        for name in ("loss.csv", "loss.png"):
            (out / name).unlink(missing_ok=True)
        return None
    return last


def save_adapter(model, out: Path, *, embeddings_saved: bool) -> None:
    """``save_pretrained`` into a temporary folder, then move each file into ``out`` (config last).

    With embed_tokens/lm_head in modules_to_save, only their trained copies are written, under the
    releases' names (``base_model.model.model.embed_tokens.weight``); PEFT would otherwise add the
    original and wrapped modules of a resized vocabulary as well.
    """
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=out))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True,
                              save_embedding_layers=False if embeddings_saved else "auto")
        cfg = tmp / "adapter_config.json"
        data = json.loads(cfg.read_text(encoding="utf-8"))
        for key in ("target_modules", "modules_to_save"):  # PEFT keeps them in sets: same run, same bytes
            if isinstance(data.get(key), list):
                data[key] = sorted(data[key])
        cfg.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        files = sorted(tmp.iterdir(), key=lambda p: p.name == "adapter_config.json")
        for f in files:
            if f.is_file() and f.name != "README.md":  # skip PEFT's boilerplate model card
                os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
