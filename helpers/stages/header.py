"""The needs table in each notebook's header, made from the stage's own plan, so the header cannot say other than
the check cell: ``scripts/build_notebooks.py`` writes it where a source says ``{{NEEDS}}``, and its ``--check``
fails when a plan changed and the notebook was not rebuilt.

Each column is one setting of the form (:data:`COLUMNS`) planned on free Colab (a T4 or a CPU runtime, after the
notebook's setup) before anything is downloaded, with the sizes from the catalog (the hub is not asked, so the
table is the same on every machine). Each row is one of the plan's needs (GPU, GPU memory, RAM, disk, ...) as the
check cell prints it; the last row is the verdict. Times are not planned, so they are not in the table.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from typing import Any, Iterator

from ..colab import NO, SLOW, Runtime

# notebook -> columns: (heading, form values, on a T4 GPU runtime (else a CPU one))
COLUMNS: dict[str, tuple[tuple[str, dict[str, Any], bool], ...]] = {
    "01_merge_lora": (("7B, Q4_K_M", {"model": "chinese-alpaca-2-7b-lora"}, False),
                      ("13B, Q4_K_M", {"model": "chinese-alpaca-2-13b-lora"}, False),
                      ("33B, Q4_K_M", {"model": "chinese-alpaca-33b-lora"}, False)),
    "02_quantize_gguf": (("7B: F16 + Q4_K_M", {"model": "chinese-alpaca-2-7b", "published": "no"}, False),
                         ("13B: F16 + Q4_K_M", {"model": "chinese-alpaca-2-13b", "published": "no"}, False),
                         ("33B LoRA: Q4_K_M", {"model": "chinese-alpaca-33b-lora"}, False)),
    "03_inference_chat": (("7B, 4-bit (transformers, T4)", {}, True),
                          ("7B GGUF (llama.cpp, CPU)", {"model": "chinese-alpaca-2-7b-gguf"}, False),
                          ("13B, 4-bit (transformers, T4)", {"model": "chinese-alpaca-2-13b"}, True)),
    "04_finetune_lora": (("7B QLoRA (T4)", {}, True),
                         ("13B QLoRA (T4)", {"base_model": "chinese-alpaca-2-13b"}, True)),
    "05_vocab_and_eval": (("7B, 4-bit (T4)", {}, True),
                          ("7B GGUF (CPU)", {"model": "chinese-alpaca-2-7b-gguf"}, False)),
}
_MARK = {NO: " (does not fit)", SLOW: " (slow)"}


def _words(what: str, need: str) -> str:
    """The check's terse words as a table cell."""
    if need == "it":  # a wheel: llama.cpp comes from the setup cell, the others with Colab
        return f"needed ({'the setup cell installs it' if what.startswith('llama.cpp') else 'Colab has it'})"
    return "not needed" if need == "no GPU" else need


@contextlib.contextmanager
def _offline() -> Iterator[str]:
    """No hub (sizes from the catalog) and no local stand-ins while planning; a scratch folder to write in."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HELPERS_LOCAL_MODELS", "NOTEBOOK_SMOKE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    for k in ("HELPERS_LOCAL_MODELS", "NOTEBOOK_SMOKE"):
        os.environ.pop(k, None)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            yield scratch
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def needs_table(stage_cls: Any) -> str:
    """The markdown table of ``stage_cls``'s needs for its :data:`COLUMNS` on free Colab (one row per need)."""
    columns = COLUMNS[stage_cls.NOTEBOOK]
    plans = []
    with _offline() as scratch, contextlib.redirect_stdout(io.StringIO()):
        for _, values, gpu in columns:
            folders = {k: os.path.join(scratch, k) for k in ("output_dir", "workspace")
                       if k in {f.attr for f in stage_cls.form_fields()}}
            stage = stage_cls(**{**folders, **values})
            plans.append(stage.plan(Runtime.free_colab(gpu=gpu, setup=stage_cls.SETUP)))
    rows: dict[str, list[str]] = {}
    for i, plan in enumerate(plans):
        for need in plan.needs:
            text = _words(need.what, need.need) + _MARK.get(need.status, "")
            rows.setdefault(need.what, ["-"] * len(plans))[i] = text.replace("|", "/")
    lines = ["| on free Colab | " + " | ".join(h for h, _, _ in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {what} | " + " | ".join(cells) + " |" for what, cells in rows.items()]
    verdicts = ["fits" if p.fits else f"does not fit: {p.fix_text() or 'see the check cell'}" for p in plans]
    lines.append("| **verdict** | " + " | ".join(verdicts) + " |")
    return "\n".join(lines)
