"""LoRA / QLoRA fine-tuning with the releases' recipes; the adapter goes straight back into the merge.

- :mod:`.config`: :class:`FinetuneConfig`;
- :mod:`.finetune`: :func:`finetune` (plan, data, resume decision, build the model, train, finish);
  :mod:`.result`: :class:`FinetuneResult`;
- :mod:`.plan`: the checks and choices made before loading; :mod:`.memory`: the peak-memory estimate (per GPU
  under DDP / ZeRO / FSDP); :mod:`.stats`: peak memory and wall time after loading and after training;
- :mod:`.data`: Alpaca records (SFT) and text blocks (PT), tokenized with prompt-masked labels; :mod:`.datafile`:
  local data read and checked (one line naming the file, the record or line from 1, the field, the fix);
  :mod:`.datastats`: what will be trained (records, token lengths, the first example as trained);
  :mod:`.stream`: hub data sets and streamed corpora (``datasets``), split among the processes;
- :mod:`.jobs`: the job a run's checkpoints belong to, and the resume policy (auto / yes / no);
- :mod:`.dist`: running under torchrun / accelerate launch; :mod:`.launch`: DeepSpeed / accelerate configs and
  ``launch.sh`` for an N-GPU machine; :mod:`.vocab_stage`: the two-stage recipe for a new vocabulary;
- :mod:`.callbacks`: ``loss.csv``, ``loss.png``, the progress bar and the live plot;
- :mod:`.setup`: template and precision choice, the base model, saving the adapter;
- :mod:`.compare`: the same prompt before and after;
- :mod:`.command`: ``python -m helpers finetune`` (:class:`~.command.LaunchOptions`).
"""
from __future__ import annotations

from .compare import compare_answers
from .config import DATA_SUFFIXES, RESUME_CHOICES, FinetuneConfig, is_hub_dataset
from .datafile import read_pt_lines, read_sft_records
from .datastats import pt_stats, sft_stats
from .finetune import finetune
from .jobs import CHECKPOINTS, list_checkpoints, planned_job_key
from .launch import STRATEGIES, LaunchFiles, write_launch_files
from .memory import MemoryEstimate, estimate_memory
from .result import FinetuneResult, finished_record, result_from_record
from .setup import resolve_template
from .records import preview_hub_records

__all__ = ["STRATEGIES", "CHECKPOINTS", "DATA_SUFFIXES", "RESUME_CHOICES", "FinetuneConfig", "FinetuneResult",
           "finished_record", "planned_job_key", "preview_hub_records", "pt_stats", "read_pt_lines", "read_sft_records",
           "resolve_template", "result_from_record", "sft_stats", "LaunchFiles", "MemoryEstimate", "compare_answers",
           "estimate_memory", "finetune", "is_hub_dataset", "list_checkpoints", "write_launch_files"]
