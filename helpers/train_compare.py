"""Before / after: the same prompt answered by the base model and by base + fine-tuned adapter."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sft_data import eot_id, pad_id_of
from .train_setup import _dtype_key
from .util import UserError


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
