"""Fine-tuning data through ``datasets``: a hub data set id as ``--data``, and corpora streamed rather than loaded.

- :func:`.records.hub_records`: a hub data set (``org/name``), downloaded with ``datasets.load_dataset``: the Alpaca columns
  (``instruction``, ``input``, ``output``) for SFT, a text column for PT.
- :func:`open_records` / :func:`streamed_examples`: ``--streaming`` reads a hub data set or local shards
  (``.txt``, ``.json``/``.jsonl``, ``.parquet``, a file or a folder of them) as a ``datasets.IterableDataset``,
  never all of it at once. Each process keeps its own share (``datasets.distributed.split_dataset_by_node``):
  when the shards (files) divide among the processes, each process reads and packs only its own shards; otherwise
  each reads the whole stream and keeps every N-th block of it (``datasets`` applies that split at the end of
  the pipeline). Either way, within one pass no record or block goes to two processes and none is skipped; give
  a data set as N (or a multiple of N) shards so that no process reads what it does not train on. Records are
  tokenized on the fly (in the data loader's worker processes, ``--data-workers``) and PT text is packed into
  ``block_size`` blocks as the authors' ``group_texts`` does (concatenate a batch of 1,000 texts, cut, drop the
  remainder). The stream repeats pass after
  pass, so every process always has a next batch and the processes never fall out of step; ``--max-steps`` ends
  the run.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .records import SFT_COLUMNS, check_columns, load_records

if TYPE_CHECKING:
    from .config import FinetuneConfig

PACK_BATCH = 1000  # texts concatenated before cutting into blocks (the authors' map batch size)


def open_records(config: FinetuneConfig, *, rank: int = 0, world_size: int = 1):
    """This process's share of the data as a streamed ``datasets.IterableDataset`` of records (one pass).

    Returns:
        ``(records, column names)``: only the columns the mode reads are kept.
    """
    from datasets.distributed import split_dataset_by_node

    ds = load_records(config, streaming=True)
    columns = ds.column_names
    if columns is None:  # some streamed sets describe their columns only in their records
        columns = list(next(iter(ds)).keys())
    check_columns(config, columns)
    ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
    keep = [*SFT_COLUMNS, *(["input"] if "input" in columns else [])] if config.mode == "sft" else [config.text_column]
    return ds.select_columns(keep), keep


def pack_batch(ids_lists: list[list[int]], block_size: int) -> list[list[int]]:
    """Concatenate token lists and cut them into ``block_size`` blocks, dropping the remainder (``group_texts``)."""
    flat = [t for ids in ids_lists for t in ids]
    return [flat[i:i + block_size] for i in range(0, len(flat) - block_size + 1, block_size)]


def _pt_encoder(config: FinetuneConfig, tokenizer) -> Callable[[dict], dict]:
    column, block = config.text_column, config.block_size

    def encode(batch: dict) -> dict:
        texts = [t for t in batch[column] if isinstance(t, str) and t.strip()]
        blocks = pack_batch(tokenizer(texts)["input_ids"] if texts else [], block)
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]}
    return encode


def _sft_encoder(config: FinetuneConfig, tokenizer, template) -> Callable[[dict], dict]:
    from .data import IGNORE, eot_id, tokenize_sft

    eot = eot_id(tokenizer, template)

    def encode(batch: dict) -> dict:
        out: dict[str, list] = {"input_ids": [], "labels": []}
        for i, (instruction, output) in enumerate(zip(batch["instruction"], batch["output"])):
            record = {"instruction": instruction, "input": (batch.get("input") or [""] * (i + 1))[i] or "",
                      "output": output}
            ex = tokenize_sft(record, tokenizer, template, max_seq_length=config.max_seq_length, eot=eot)
            if any(x != IGNORE for x in ex["labels"]):  # a prompt that fills max_seq_length teaches nothing
                out["input_ids"].append(ex["input_ids"])
                out["labels"].append(ex["labels"])
        return out
    return encode


def streamed_examples(config: FinetuneConfig, tokenizer, template=None, *, rank: int = 0, world_size: int = 1,
                      repeat: bool = True):
    """This process's examples (``{"input_ids", "labels"}``), tokenized on the fly; endless unless ``repeat`` is
    False (then one pass). Pass it to a ``torch.utils.data.DataLoader`` (any number of workers)."""
    records, columns = open_records(config, rank=rank, world_size=world_size)
    encode = _pt_encoder(config, tokenizer) if config.mode == "pt" else _sft_encoder(config, tokenizer, template)
    examples = records.map(encode, batched=True, batch_size=PACK_BATCH, remove_columns=columns)
    return examples.repeat(None) if repeat else examples
