"""LoRA / QLoRA fine-tuning with the releases' recipes; the adapter goes straight back into the merge.

- :mod:`.config`: :class:`FinetuneConfig`;
- :mod:`.finetune`: :func:`finetune` (plan, build the model, train, finish) and :class:`FinetuneResult`;
- :mod:`.data`: Alpaca records (SFT) and text blocks (PT), tokenized with prompt-masked labels;
- :mod:`.memory`: the peak-memory estimate checked before loading;
- :mod:`.callbacks`: ``loss.csv``, ``loss.png``, the progress bar and the live plot;
- :mod:`.setup`: template and precision choice, the base model, the resume policy, saving the adapter;
- :mod:`.compare`: the same prompt before and after;
- :mod:`.cli`: ``python -m helpers finetune``.
"""
from __future__ import annotations

from .callbacks import in_notebook, loss_figure, read_loss_csv, save_loss_plot, trainer_callbacks, write_loss_csv
from .compare import Comparison, compare_answers
from .config import FinetuneConfig
from .data import IGNORE, DataCollator, build_dataset, eot_id, group_texts, load_sft_records, pad_id_of, tokenize_sft
from .finetune import FinetuneResult, finetune
from .memory import EMBEDDINGS, MemoryEstimate, detect_device, estimate_memory

__all__ = ["EMBEDDINGS", "IGNORE", "Comparison", "DataCollator", "FinetuneConfig", "FinetuneResult",
           "MemoryEstimate", "build_dataset", "compare_answers", "detect_device", "eot_id", "estimate_memory",
           "finetune", "group_texts", "in_notebook", "load_sft_records", "loss_figure", "pad_id_of", "read_loss_csv",
           "save_loss_plot", "tokenize_sft", "trainer_callbacks", "write_loss_csv"]
