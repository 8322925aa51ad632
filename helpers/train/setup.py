"""Plumbing around the transformers Trainer for :func:`helpers.train.finetune`.

Template and precision choice, loading the base, keywords whose names depend on the transformers version, and
writing the adapter into the output folder.
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


def version_kwargs(training_arguments: type, *, warmup: float, checkpointing: bool, shuffle: bool = True) -> dict:
    """TrainingArguments keywords whose names changed in transformers 5 (Colab may still ship 4.x), plus the loss
    averaged over every token of the global batch (all processes, all accumulation steps) where supported.

    Raises:
        UserError: ``shuffle=False`` with a transformers that has no sequential sampling option.
    """
    import inspect

    params = inspect.signature(training_arguments.__init__).parameters
    ckpt = "activation_checkpointing" if "activation_checkpointing" in params else "gradient_checkpointing"
    kw: dict[str, Any] = {ckpt: checkpointing, f"{ckpt}_kwargs": {"use_reentrant": False} if checkpointing else None}
    kw["warmup_ratio" if "warmup_ratio" in params else "warmup_steps"] = warmup
    kw["include_num_input_tokens_seen"] = True
    if "non_padding" in (inspect.getdoc(training_arguments) or ""):
        kw["include_num_input_tokens_seen"] = "non_padding"  # count real tokens, not padding
    if "average_tokens_across_devices" in params:
        kw["average_tokens_across_devices"] = True
    if not shuffle:
        if "train_sampling_strategy" not in params:
            raise UserError("--no-shuffle needs a transformers with TrainingArguments(train_sampling_strategy=...): "
                            "pip install -U transformers")
        kw["train_sampling_strategy"] = "sequential"
    return kw


def save_adapter(model, out: Path, *, embeddings_saved: bool, state_dict: dict | None = None) -> None:
    """``save_pretrained`` into a temporary folder, then move each file into ``out`` (config last).

    With embed_tokens/lm_head in modules_to_save, only their trained copies are written, under the
    releases' names (``base_model.model.model.embed_tokens.weight``); PEFT would otherwise add the
    original and wrapped modules of a resized vocabulary as well. ``state_dict``: the full weights gathered
    from the ranks when they are partitioned (DeepSpeed ZeRO-3, FSDP).
    """
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=out))
    try:
        extra = {"state_dict": state_dict} if state_dict is not None else {}
        model.save_pretrained(str(tmp), safe_serialization=True,
                              save_embedding_layers=False if embeddings_saved else "auto", **extra)
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
