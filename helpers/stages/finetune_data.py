"""Notebook 04's check of ``DATA``, before anything is downloaded: a local file or folder is read and checked whole, a
hub data set by its schema and first rows; a bad one stops the check with one line (the file, the record or line
from 1, the field, the fix). Then what will be trained: the records, their token lengths with the base's own
tokenizer (its small files only are fetched), how many the length limit cuts, and the first record as trained.
"""
from __future__ import annotations

import functools

from ..hub import resolve_model
from ..tokens import get_template, load_tokenizer
from ..train import (FinetuneConfig, is_hub_dataset, planned_job_key, preview_hub_records, pt_stats, read_pt_lines,
                     read_sft_records, resolve_template, sft_stats)
from ..util import UserError, read_json

TOKENIZER_PATTERNS = ["tokenizer*", "special_tokens_map.json", "added_tokens.json", "config.json"]


def data_report(config: FinetuneConfig, base: str, *, tokenizer: bool, limit_name: str) -> list[str]:
    """The lines the check shows about ``config.data``; ``tokenizer``: the base can be downloaded, so its tokenizer
    measures the lengths. Checked once per content and settings (the plan is made again for each fix it tries).

    Raises:
        UserError: the data is bad, or too short for one block (PT) / every prompt fills the limit (SFT).
    """
    return list(_report(config, base, tokenizer, limit_name, planned_job_key(config, base)))


@functools.lru_cache(maxsize=8)
def _report(config: FinetuneConfig, base: str, tokenizer: bool, limit_name: str, _content_key: str
            ) -> tuple[str, ...]:
    hub = is_hub_dataset(config.data)
    if hub:
        rows = preview_hub_records(config)
    else:
        rows = read_pt_lines(config.data) if config.mode == "pt" else read_sft_records(config.data)
    unit = "lines" if config.mode == "pt" else "records"
    checked = f"data: {config.data}: {len(rows)} {unit} checked" + (" (the first rows)" if hub else "")
    if not tokenizer:
        return (f"{checked}; token lengths once the base model can be downloaded",)
    try:
        tok_dir = resolve_model(base, allow_patterns=TOKENIZER_PATTERNS, what="tokenizer")
        tok = load_tokenizer(tok_dir)
    except (UserError, OSError, ValueError) as exc:
        return (f"{checked}; token lengths not measured: the tokenizer could not be read ({exc})",)
    if config.mode == "pt":
        stats = pt_stats(rows, tok, block_size=config.block_size, source=config.data, partial=hub)
        if not stats.blocks and not hub:
            raise UserError(f"{config.data} has {sum(stats.lengths)} tokens, fewer than one block of {limit_name}="
                            f"{config.block_size}: add text, or lower {limit_name}")
        return tuple(stats.lines(limit_name))
    model_cfg = read_json(tok_dir / "config.json", default={}) or {}
    template = get_template(resolve_template(config, model_cfg, tok_dir))
    stats = sft_stats(rows, tok, template, max_seq_length=config.max_seq_length, source=config.data, partial=hub)
    if stats.skipped == len(stats.lengths):
        raise UserError(f"{config.data}: every prompt alone is longer than {limit_name}={config.max_seq_length} "
                        f"tokens (median {stats.median}), so nothing is left to learn: raise {limit_name}")
    return tuple(stats.lines(limit_name, template.name))
