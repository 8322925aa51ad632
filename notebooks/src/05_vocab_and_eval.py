# %% [markdown]
# # Expand the vocabulary and evaluate models
#
# {{BADGE}}
#
# The Chinese-LLaMA releases added about 20,000 Chinese pieces to LLaMA's 32,000-piece tokenizer,
# which roughly halves the tokens a Chinese text needs. This notebook repeats that merge (with
# LLaMA's tokenizer and the released Chinese sentencepiece model it gives the 49,953-piece
# Chinese-LLaMA tokenizer), prepares a model's embeddings for it, and measures models: perplexity on
# Chinese text, and C-Eval / CMMLU exactly as the releases report them, so your merged, quantized or fine-tuned
# model goes into the same table, with what quantization (or a LoRA) changed beyond the noise.
#
# {{NEEDS}}
#
# The vocabulary merge alone needs a few MB and under a minute. Time (measured, not planned): minutes per 100
# questions.

# %% [markdown]
# ## Setup

# %% setup

# %% [markdown]
# ## Parameters
# `CHINESE_SP_MODEL` is the released Chinese sentencepiece model (a URL or a path); `MC_CSV` any file
# in the C-Eval column layout (`id,question,A,B,C,D,answer`), for example a C-Eval `val` file. `COMPARE_WITH` takes
# a second model, or the results folder an earlier run saved to your workspace (`ceval-<model>-5shot`), which is read
# back instead of scored again.

# %% parameters

# %% [markdown]
# ## Does it fit this runtime?
# Before any model is downloaded: the measured model where it runs (llama.cpp for a GGUF, transformers in
# `QUANTIZATION` on a GPU) with the context and logits scoring keeps, against what this runtime has; the benchmark's
# questions read and checked (`EXAM_DATA`, or the hub's data set: a few MB) with the time they take here; and what
# `COMPARE_WITH` names: a second model, sized too, or an earlier run's results folder holding the same questions. It
# stops here, naming the parameters to change, when something will not work. (From a terminal:
# `python -m helpers colab-check 05 --colab t4 --set NAME=VALUE`; `python -m helpers run 05` runs every cell.)

# %%
from helpers.stages import EvalStage

plan = EvalStage.from_form(globals()).check()

# %% [markdown]
# ## The measurements, as the check planned them

# %%
session = plan.run(globals())

# %% [markdown]
# ## Merge the Chinese pieces into the tokenizer

# %%
report = session.expand_vocabulary()
report

# %% [markdown]
# ## Tokens before and after

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(["before", "after"], [report.tokens_before, report.tokens_after], color=["#999", "#c33"])
ax.set_ylabel("tokens for the sample text")
plt.show()

# %% [markdown]
# ## Perplexity on Chinese text

# %%
ppl = session.perplexity()

# %% [markdown]
# ## C-Eval or CMMLU, as the releases report them
# The authors' prompts and shots, scored as their scripts score them (the processed first-step scores of the
# option letters); the few-shot prefix of a subject is read once for all its questions. The category table is
# printed beside the release's published figure; `summary.json` and `submission.json` (C-Eval's leaderboard
# format) are saved to your workspace. The check cell said how long it takes here.

# %%
exam = session.exam()

# %% [markdown]
# ## Did quantizing (or your LoRA) change anything?
# `COMPARE_WITH` scored on the same questions: both accuracies and their difference with a 95% interval (paired
# bootstrap, McNemar's test), so a difference within the noise is not taken for a loss.

# %%
comparison = session.compare(exam)

# %% [markdown]
# ## Your own multiple-choice file
# `MC_CSV` in C-Eval's columns, scored the same way.

# %%
mc = session.multiple_choice()

# %% [markdown]
# ## Next steps
# - Prepare a model for the new vocabulary with `helpers.tokens.init_new_embeddings`, then continue
#   pre-training with `04_finetune_lora.ipynb` in `pt` mode.
# - `02_quantize_gguf.ipynb` compares quantization types on the same text.
