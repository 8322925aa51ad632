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
- :mod:`.cli`: ``python -m helpers finetune``.
"""
from __future__ import annotations

from .callbacks import in_notebook, loss_figure, read_loss_csv, save_loss_plot, trainer_callbacks, write_loss_csv
from .compare import Comparison, compare_answers
from .config import DATA_SUFFIXES, RESUME_CHOICES, FinetuneConfig, is_hub_dataset
from .data import IGNORE, DataCollator, build_dataset, eot_id, group_texts, load_sft_records, pad_id_of, tokenize_sft
from .datafile import check_record, read_pt_lines, read_sft_records
from .datastats import DataStats, pt_stats, sft_stats
from .dist import Launch, launch_context
from .finetune import finetune
from .jobs import CHECKPOINTS, ResumeDecision, job_identity, list_checkpoints, decide_resume, planned_job_key
from .launch import STRATEGIES, LaunchFiles, accelerate_config, deepspeed_config, deepspeed_preset, write_launch_files
from .memory import EMBEDDINGS, MemoryEstimate, detect_device, estimate_memory, memory_per_gpu
from .result import FinetuneResult, finished_record, result_from_record
from .setup import resolve_template
from .stats import StageStats, stage_stats
from .records import hub_records, preview_hub_records
from .stream import pack_batch, streamed_examples

__all__ = ["STRATEGIES", "CHECKPOINTS", "DATA_SUFFIXES", "EMBEDDINGS", "IGNORE", "RESUME_CHOICES", "Comparison", "DataCollator",
           "DataStats", "FinetuneConfig", "FinetuneResult", "check_record", "finished_record", "planned_job_key",
           "preview_hub_records", "pt_stats", "read_pt_lines", "read_sft_records", "resolve_template",
           "result_from_record", "sft_stats",
           "Launch", "LaunchFiles", "MemoryEstimate", "ResumeDecision", "StageStats", "accelerate_config",
           "build_dataset", "compare_answers", "deepspeed_config", "deepspeed_preset", "detect_device", "eot_id",
           "estimate_memory", "finetune", "group_texts", "hub_records", "in_notebook", "is_hub_dataset",
           "job_identity", "launch_context", "list_checkpoints", "load_sft_records", "loss_figure", "memory_per_gpu", "pack_batch",
           "pad_id_of", "decide_resume", "read_loss_csv", "save_loss_plot", "stage_stats", "streamed_examples",
           "tokenize_sft", "trainer_callbacks", "write_launch_files", "write_loss_csv"]
