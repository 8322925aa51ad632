"""Before / after: the same prompt answered by the base model and by base + fine-tuned adapter."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..device import torch_dtype
from ..hub import resolve_model
from ..tokens import build_prompt, get_template, load_tokenizer, template_for_model
from ..util import UserError, read_json
from .data import eot_id, pad_id_of
from .setup import load_base


@dataclass(frozen=True)
class Comparison:
    """The same prompt answered by the base model and by base + adapter (greedy)."""

    prompt: str
    before: str
    after: str

    def __iter__(self):  # ``before, after = compare_answers(...)``
        return iter((self.before, self.after))


def compare_answers(base: str | Path, adapter: str | Path, prompt: str, *, template: str | None = None,
                    max_new_tokens: int = 128, system: str | None = None, load_in_4bit: bool | None = None
                    ) -> Comparison:
    """Answer ``prompt`` greedily with the base model and with the fine-tuned adapter applied.

    Args:
        base: the base model folder or hub id the adapter was trained on.
        adapter: the folder written by :func:`finetune` (its tokenizer files are used).
        prompt: the user question.
        template: prompt template; ``None``: the one recorded in ``finetune.json``, else the model's.
        max_new_tokens: reply length limit.
        system: system prompt (``None``: the template's default).
        load_in_4bit: load the base in NF4 (GPU); ``None``: on a GPU, yes (right after training, an unquantized
            7B base would not fit beside what is left on a 15 GB T4), on CPU no.
    """
    import torch
    from peft import PeftModel

    base_dir, adapter = resolve_model(base, what="base model"), Path(adapter)
    info = read_json(adapter / "finetune.json") if (adapter / "finetune.json").is_file() else {}
    name = template or info.get("template") or template_for_model(str(adapter))
    tmpl = get_template(name)
    tokenizer = load_tokenizer(adapter if (adapter / "tokenizer_config.json").is_file() else base_dir)
    cuda = torch.cuda.is_available()
    if load_in_4bit is None:
        load_in_4bit = cuda
    if load_in_4bit and not cuda:
        raise UserError("load_in_4bit needs a CUDA GPU")
    model = load_base(base_dir, dtype=torch_dtype(None, cuda), load_in_4bit=load_in_4bit)
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
