"""What a fine-tuning will train on, shown before it starts: the number of records, their token lengths (median,
95th percentile, longest), how many the length limit cuts, and the first example exactly as it is trained (the
prompt in the model's template, the reply the loss is on), as unsloth's notebooks show it.

Lengths are counted with the run's own tokenizer and :func:`.data.tokenize_sft`, the function training uses, so
what is shown is what is trained.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

from .data import IGNORE, eot_id, group_texts, tokenize_sft

MEASURED = 20_000  # records tokenized to measure lengths; a larger set is measured on its first ones
SHOWN = 400  # characters of the first example shown


@dataclass(frozen=True)
class DataStats:
    """Token lengths of the records (SFT: prompt + reply + end of turn; PT: each line) and the first example.

    Attributes:
        source: the data, as the user named it.
        records: records (SFT) or non-empty lines (PT) read.
        lengths: the token lengths measured, in ascending order (the first :data:`MEASURED` records).
        limit: ``max_seq_length`` (SFT) or the block length (PT).
        cut: SFT records longer than ``limit`` (their end is cut off).
        skipped: SFT records whose prompt alone fills ``limit`` (nothing left to learn: skipped).
        blocks: PT blocks of ``limit`` tokens.
        first: the first example as trained, decoded; ``reply``: the part the loss is on.
        partial: only the first rows were read (a hub data set, checked before its download).
    """

    source: str
    mode: str
    records: int
    lengths: tuple[int, ...]
    limit: int
    cut: int = 0
    skipped: int = 0
    blocks: int = 0
    first: str = ""
    reply: str = ""
    partial: bool = False

    @property
    def median(self) -> int:
        return int(statistics.median(self.lengths)) if self.lengths else 0

    @property
    def p95(self) -> int:
        """The 95th percentile (nearest rank)."""
        return self.lengths[max(math.ceil(0.95 * len(self.lengths)) - 1, 0)] if self.lengths else 0

    def lines(self, limit_name: str = "max_seq_length", template: str | None = None) -> list[str]:
        """The report: what is trained, in a few lines (``limit_name``: how the user sets the limit)."""
        unit = "records" if self.mode == "sft" else "lines"
        which = " (the first rows; the rest is checked when the set is downloaded)" if self.partial else ""
        some = f" of the first {len(self.lengths)}" if len(self.lengths) < self.records and not self.partial else ""
        stats = (f"tokens per {unit[:-1]}{some}: median {self.median}, 95th percentile {self.p95}, longest "
                 f"{self.lengths[-1] if self.lengths else 0}")
        if self.mode == "sft":
            cut = f"{self.cut} longer than {limit_name}={self.limit} (cut)" if self.cut else \
                f"none longer than {limit_name}={self.limit}"
            cut += f", {self.skipped} skipped (the prompt alone fills it)" if self.skipped else ""
        else:
            cut = f"{self.blocks} blocks of {limit_name}={self.limit} tokens"
        out = [f"data: {self.source}: {self.records} {unit}{which}; {stats}; {cut}"]
        if self.mode == "sft":
            out.append(f"first record as trained ({f'{template} template; ' if template else ''}the loss is on the "
                       "reply):")
        else:
            out.append("first block as trained:")
        out += [f"  | {line}" for line in _clip(self.first).splitlines() or [""]]
        if self.mode == "sft":
            out.append(f"  reply: {_clip(self.reply)!r}")
        return out


def _clip(text: str) -> str:
    return text if len(text) <= SHOWN else text[:SHOWN] + " [...]"


def sft_stats(records: Sequence[dict], tokenizer: Any, template: Any, *, max_seq_length: int, source: str,
              partial: bool = False) -> DataStats:
    """:class:`DataStats` of SFT ``records`` as :func:`.data.tokenize_sft` makes them for ``template``."""
    eot = eot_id(tokenizer, template)
    lengths, cut, skipped, first = [], 0, 0, None
    for record in records[:MEASURED]:
        ex = tokenize_sft(record, tokenizer, template, max_seq_length=1 << 30, eot=eot)
        prompt = sum(1 for x in ex["labels"] if x == IGNORE)
        lengths.append(len(ex["input_ids"]))
        cut += len(ex["input_ids"]) > max_seq_length
        skipped += prompt >= max_seq_length
        first = first or ex
    ids = first["input_ids"][:max_seq_length]
    reply = [x for x in first["labels"][:max_seq_length] if x != IGNORE]
    return DataStats(source, "sft", len(records), tuple(sorted(lengths)), max_seq_length, cut, skipped,
                     first=tokenizer.decode(ids), reply=tokenizer.decode(reply), partial=partial)


def pt_stats(lines: Sequence[str], tokenizer: Any, *, block_size: int, source: str, partial: bool = False
             ) -> DataStats:
    """:class:`DataStats` of PT ``lines``: their token lengths and the blocks they pack into."""
    ids = [tokenizer(line)["input_ids"] for line in lines[:MEASURED]]
    blocks = group_texts(ids, block_size)
    total = sum(len(x) for x in ids)
    if len(lines) > MEASURED:  # the rest, by the measured lines' average
        total = total * len(lines) // MEASURED
    return DataStats(source, "pt", len(lines), tuple(sorted(len(x) for x in ids)), block_size,
                     blocks=total // block_size, first=tokenizer.decode(blocks[0]) if blocks else "",
                     partial=partial)
