# %% [markdown]
# # Fine-tune a Chinese Alpaca model on your own data (LoRA / QLoRA on a free T4)
#
# {{BADGE}}
#
# Teaches a model your instructions with LoRA (QLoRA: the base in 4-bit NF4 on a T4), using the
# model's own prompt template and a tokenizer that matches sentencepiece exactly. The adapter is
# written in the layout the merge notebook reads, so the last cell turns it into a GGUF.
#
# {{NEEDS}}
#
# Time on a T4 (measured, not planned): about 10 min per 100 steps at batch 1 x 8 for 7B, about twice for 13B.
#
# Data: a JSON list (or JSON Lines) of `{"instruction", "input", "output"}` records (Alpaca format), a hub data
# set id, or plain text for `pt`. Put your file in your workspace (your Google Drive folder) or upload it in the
# Files panel and set `DATA`, or keep `sample` to try it. Each job (data and settings) gets its own names, shown by
# the check cell: the adapter and the GGUF are saved to your workspace under them, so another job never replaces
# them. A rerun of the same job continues it, or, finished, reuses it without downloading anything.

# %% [markdown]
# ## Setup

# %% setup

# %% [markdown]
# ## Parameters

# %% parameters

# %% [markdown]
# ## Does it fit this runtime?
# Before the base model is downloaded: your data, read and checked whole (a bad record stops here with its file,
# line and field), what will be trained (records, token lengths, the first record as the model sees it), this
# job's names, the memory estimate (weights, LoRA parameters with their optimizer state, activations with
# gradient checkpointing), the GPU that QLoRA needs, access to a gated base, and the disk. It stops here (for
# example 13B in 16-bit on a T4) instead of crashing an hour later.
# (From a terminal: `python -m helpers colab-check 04 --colab t4 --set LOAD_IN_4BIT=false`.)

# %%
from helpers.stages import FinetuneStage

plan = FinetuneStage.from_form(globals()).check()

# %% [markdown]
# ## Train
# Downloads the base model, then trains; the loss plot updates while it trains. The adapter is saved to your
# workspace when training ends; an interrupted run continues from its last checkpoint; a finished job is reused.

# %%
result = plan.run(globals())
result

# %% [markdown]
# ## Before and after
# The same prompt, answered by the base model and by the base model with the new adapter.

# %%
before, after = plan.stage.compare(plan, result)

# %% [markdown]
# ## Merge the adapter into a GGUF
# The same streaming merge as `01_merge_lora.ipynb`, quantized to `OUTTYPE` in the same pass; saved to your
# workspace and, with `PUSH_TO_HUB`, uploaded with the adapter.

# %%
gguf = plan.stage.to_gguf(plan, result)

# %% [markdown]
# ## Outgrow Colab: the same training on N GPUs
# A rented machine with `GPUS` GPUs runs the same job with `bash launch.sh` (torchrun with DeepSpeed ZeRO-2 as
# the releases were trained, or DDP, ZeRO-3, FSDP: `STRATEGY`); this writes the script and its configs, and says
# how much memory each GPU needs.

# %%
files = plan.stage.outgrow(plan)
