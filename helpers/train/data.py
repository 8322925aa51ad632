"""Training data of the fine-tuning: Alpaca records (SFT) or plain text blocks (PT), tokenized and batched.

SFT examples are prompt + output + end-of-turn with labels -100 over the prompt; PT text is concatenated
and cut into ``block_size`` blocks. :class:`DataCollator` right-pads a batch.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from ..tokens import build_prompt, get_template
from ..util import UserError, progress
from .config import is_hub_dataset
from .datafile import read_pt_lines, read_sft_records

if TYPE_CHECKING:
    from .config import FinetuneConfig

IGNORE = -100


def load_sft_records(path: str | Path) -> list[dict]:
    """Read Alpaca-format records from a JSON list, a JSONL file or a folder of ``*.json``/``*.jsonl``, every record
    checked (:mod:`.datafile`: a bad one is one line naming the file, the record or line from 1, and the field)."""
    return read_sft_records(path)


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


def _pt_examples(config: FinetuneConfig, tokenizer) -> list[dict]:
    if is_hub_dataset(config.data):
        from .records import hub_records

        lines = hub_records(config)
    else:
        lines = read_pt_lines(config.data)
    blocks = group_texts((tokenizer(ln)["input_ids"] for ln in lines), config.block_size)
    if not blocks:
        raise UserError(f"{config.data} has fewer than block_size={config.block_size} tokens; "
                        "add text or lower --block-size")
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


def _sft_examples(config: FinetuneConfig, tokenizer, template) -> list[dict]:
    if is_hub_dataset(config.data):
        from .records import hub_records

        records = hub_records(config)[: config.max_samples]
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
    return kept


def build_dataset(config: FinetuneConfig, tokenizer, template=None) -> list[dict]:
    """Tokenize the run's data (a local file or folder, or a hub data set) into ``{"input_ids", "labels"}``
    examples, in data order."""
    examples = _pt_examples(config, tokenizer) if config.mode == "pt" else _sft_examples(config, tokenizer, template)
    return examples[: config.max_samples] if config.max_samples else examples


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
