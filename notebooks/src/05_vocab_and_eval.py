# %% [markdown]
# # Expand the vocabulary and evaluate models
#
# {{BADGE}}
#
# The Chinese-LLaMA releases added about 20,000 Chinese pieces to LLaMA's 32,000-piece tokenizer,
# which roughly halves the tokens a Chinese text needs. This notebook repeats that merge (with
# LLaMA's tokenizer and the released Chinese sentencepiece model it gives the 49,953-piece
# Chinese-LLaMA tokenizer), prepares a model's embeddings for it, and measures models: perplexity on
# Chinese text, C-Eval-style multiple choice, and what quantization costs.
#
# | needs | vocabulary only | evaluating a 7B model |
# |---|---|---|
# | GPU | not needed | a T4 for transformers; CPU for a GGUF |
# | RAM | under 1 GB | about 6 GB (4-bit) or the GGUF size |
# | disk | a few MB | the model |
# | time | under a minute | minutes per 100 questions |

# %% [markdown]
# ## Setup

# %% setup llama_cpp

# %% [markdown]
# ## Parameters
# `CHINESE_SP_MODEL` is the released Chinese sentencepiece model (a URL or a path); `MC_CSV` any file
# in the C-Eval column layout (`id,question,A,B,C,D,answer`), for example a C-Eval `val` file.

# %% tags=["parameters"]
import os

BASE_TOKENIZER = "huggyllama/llama-7b"  # @param {type:"string"}
CHINESE_SP_MODEL = "https://raw.githubusercontent.com/ymcui/Chinese-LLaMA-Alpaca/main/scripts/merge_tokenizer/chinese_sp.model"  # @param {type:"string"}
MODEL = "chinese-alpaca-2-7b"  # @param {{CATALOG:full,gguf}} {allow-input: true}
EVAL_TEXT = ""  # @param {type:"string"}
MC_CSV = ""  # @param {type:"string"}
SHOTS = 0  # @param [0, 5]
OUTPUT_DIR = "/content/vocab_eval"  # @param {type:"string"}

if os.environ.get("NOTEBOOK_SMOKE") == "1":  # CI: tiny stand-ins (from HF_ENDPOINT if set)
    from helpers.demo import use_demo_assets

    DEMO = use_demo_assets()
    CHINESE_SP_MODEL = str(DEMO / "data" / "chinese_sp.model")
    EVAL_TEXT, MC_CSV = str(DEMO / "data" / "heldout_zh.txt"), str(DEMO / "data" / "ceval_sample.csv")
    OUTPUT_DIR = "smoke-output/05_vocab_eval"

# %% [markdown]
# ## Does it fit this runtime?
# Before any download: what these parameters need (GPU and its memory, RAM, disk, llama.cpp, bitsandbytes)
# against what this runtime has. It stops here, saying what to change, when they will not fit.
# (From a terminal: `python -m helpers colab-check 05_vocab_and_eval --colab t4 --set NAME=VALUE`.)

# %%
from helpers.colab import colab_check

fit = colab_check("05_vocab_and_eval", globals())

# %% [markdown]
# ## Merge the Chinese pieces into the tokenizer

# %%
from pathlib import Path

from helpers.hub import resolve_model
from helpers.pipeline import default_eval_text, fetch_file
from helpers.tokens import expand_vocab

text = Path(EVAL_TEXT).read_text(encoding="utf-8") if EVAL_TEXT else default_eval_text()
base_tokenizer = resolve_model(BASE_TOKENIZER, allow_patterns=["tokenizer*", "special_tokens_map.json"])
report = expand_vocab(base_tokenizer, fetch_file(CHINESE_SP_MODEL, OUTPUT_DIR),
                      Path(OUTPUT_DIR) / "merged_tokenizer", sample_text=text)
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
from helpers.evaluate import perplexity

print(f"perplexity of {MODEL}: {perplexity(MODEL, text):.3f}")

# %% [markdown]
# ## Multiple choice (C-Eval style)
# The answer is the option letter with the highest next-token logit after `答案：`, as the releases scored it.

# %%
from helpers.evaluate import multiple_choice

if MC_CSV:
    mc = multiple_choice(MODEL, MC_CSV, shots=SHOTS)
    print(f"accuracy {mc.accuracy:.3f} on {mc.n} questions")

# %% [markdown]
# ## Next steps
# - Prepare a model for the new vocabulary with `helpers.tokens.init_new_embeddings`, then continue
#   pre-training with `04_finetune_lora.ipynb` in `pt` mode.
# - `02_quantize_gguf.ipynb` compares quantization types on the same text.
