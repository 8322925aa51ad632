# %% [markdown]
# # Fine-tune a Chinese Alpaca model on your own data (LoRA / QLoRA on a free T4)
#
# {{BADGE}}
#
# Teaches a model your instructions with LoRA (QLoRA: the base in 4-bit NF4 on a T4), using the
# model's own prompt template and a tokenizer that matches sentencepiece exactly. The adapter is
# written in the layout the merge notebook reads, so the last cell turns it into a GGUF.
#
# | needs | 7B QLoRA | 13B QLoRA |
# |---|---|---|
# | GPU | a T4 (15 GB): about 7 GB of VRAM at 512 tokens | about 11 GB |
# | RAM | about 6 GB while loading | about 10 GB |
# | disk | 13.5 GB base + a few hundred MB of adapter | 26 GB |
# | time | about 10 min per 100 steps at batch 1 x 8 | about twice |
#
# Data: a JSON list of `{"instruction", "input", "output"}` records (Alpaca format). Upload your
# file in the Files panel and set `DATA`, or keep `sample` to try it.

# %% [markdown]
# ## Setup

# %% setup

# %% [markdown]
# ## Parameters

# %% parameters
if os.environ.get("NOTEBOOK_SMOKE") == "1":  # CI: tiny stand-ins (from HF_ENDPOINT if set), a few CPU steps
    from helpers.demo import use_demo_assets

    use_demo_assets()
    LOAD_IN_4BIT, MAX_STEPS, LEARNING_RATE, LORA_R, LORA_ALPHA = False, 6, 1e-3, 8, 16
    OUTPUT_DIR = "smoke-output/04_finetune"

# %% [markdown]
# ## Does it fit this runtime?
# Before the base model is downloaded: the memory estimate (weights, LoRA parameters with their optimizer
# state, activations with gradient checkpointing), the GPU that QLoRA needs, and the disk. It stops here
# (for example 13B in 16-bit on a T4) instead of crashing an hour later.
# (From a terminal: `python -m helpers colab-check 04 --colab t4 --set LOAD_IN_4BIT=false`.)

# %%
from helpers.stages import FinetuneStage

plan = FinetuneStage.from_form(globals()).check()

# %% [markdown]
# ## Train
# Downloads the base model, then trains; the loss plot updates while it trains; an interrupted run resumes from
# its last checkpoint.

# %%
result = plan.run(globals())
result

# %% [markdown]
# ## Before and after
# The same prompt, answered by the base model and by the base model with the new adapter.

# %%
before, after = plan.stage.compare(result)

# %% [markdown]
# ## Merge the adapter and write a GGUF
# The same streaming merge as `01_merge_lora.ipynb`; quantize it with `02_quantize_gguf.ipynb`.

# %%
gguf = plan.stage.to_gguf(result)
