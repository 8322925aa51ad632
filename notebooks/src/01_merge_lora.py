# %% [markdown]
# # Merge a Chinese LLaMA/Alpaca LoRA into its base model
#
# {{BADGE}}
#
# Most Chinese LLaMA/Alpaca releases are LoRA weights (or, for Open-Chinese-LLaMA, a full-weight
# patch) that only work once merged into the original Meta model, with the vocabulary expanded to
# the Chinese one (49953 / 49954 / 55296 tokens). This notebook does that in **one streaming pass**:
# it reads the base model one tensor at a time, applies every LoRA in order (Plus models need two),
# and writes the GGUF you want for llama.cpp / Ollama, **quantized in the same pass** (Q4_K_M by
# default, no F16 file in between), or a Hugging Face folder, or Meta `.pth` files.
#
# {{NEEDS}}
#
# Time on free Colab (measured, not planned): 20-40 min for 7B (the download, then quantizing on 2 cores), 40-80 min
# for 13B, 2-3 h for 33B.
#
# For a laptop with little RAM, the low-bit types (IQ4_XS, Q3_K_M, IQ3_S, IQ3_XXS, Q2_K) go through the
# **importance-matrix route**: a Q8_0 merge first, then llama.cpp's importance matrix computed on Chinese text
# (by default HFL's CMRC 2019 stories, `hfl/cmrc2019`, CC BY-SA 4.0; or `CALIBRATION_TEXT`, a file of your own),
# then the low-bit type quantized with it; the Q8_0 is deleted and the matrix kept beside the GGUF. On a CPU
# runtime the matrix takes about 50 minutes for 7B at the default 100 chunks (a T4 runtime: a few minutes);
# the check cell states the time, and which laptops the result runs on.
#
# `AWQ = "auto"` applies the authors' AWQ search results (`hfl/chinese-llama-alpaca-2-awq`, published for the
# Chinese-LLaMA-2/Alpaca-2 7B, 13B and 16K releases) to each tensor as it is merged, before quantizing; the check
# cell names the file and its size, downloaded first. Whether it beats the importance matrix: see the README's AWQ
# section.
#
# The merge starts as soon as the LoRA and the base's first shard are here, and merges each shard while the
# next ones download. The check cell says before any download whether it fits; when only low-disk mode fits
# (each base shard deleted once merged, the next one downloading meanwhile), the merge switches to it by itself.
# The result keeps the LoRA's tokenizer: never mix the LLaMA and Alpaca tokenizers.
# To compare quantization types, `02_quantize_gguf.ipynb`; to chat, `03_inference_chat.ipynb`.

# %% [markdown]
# ## Setup

# %% setup

# %% [markdown]
# ## Parameters
# Pick the release from the catalog; the base model and the merge order come from the catalog.
# Gated base models (Llama-2/3) need your Hugging Face token as the `HF_TOKEN` secret (key icon).

# %% parameters

# %% [markdown]
# ## Does it fit this runtime?
# Before anything is downloaded: the release (its base and LoRAs in order), the output's name and size, the
# peak disk (normally, and in low-disk mode) and the peak RAM, against what this runtime has, and whether a
# gated base can be downloaded with your token. It stops here, naming the parameters to change, when the merge
# will not fit; when only low-disk mode fits (each base shard deleted once merged; two shards on disk at a time
# where they fit, one merging and the next downloading, else one), the plan switches to it. (From a terminal:
# `python -m helpers colab-check 01 --colab cpu --set MODEL=...`.)

# %%
from helpers.stages import MergeStage

plan = MergeStage.from_form(globals()).check()

# %% [markdown]
# ## Merge, and keep the result
# Runs exactly the plan above (if you changed a parameter since, it checks again first): downloads what is
# missing (resumable, each file checked against the hub's SHA256), checks that the LoRA fits the base, then
# streams the merge, quantizing each tensor as it goes (a low-bit type: to Q8_0, then the importance matrix with a
# progress bar, then the low-bit type). The result is written on this runtime, then copied to
# your workspace (`WORKSPACE`: your Google Drive in Colab; Colab asks once for access), checked, and pushed to
# `PUSH_TO_HUB` when you name a repo. Rerunning after an interruption resumes; rerunning a finished merge, even
# in a new session, finds it in the workspace and does nothing.

# %%
result = plan.run(globals())
result

# %% [markdown]
# ## Next steps
# - `02_quantize_gguf.ipynb`: other llama.cpp types from an F16 GGUF, with a size / perplexity / KL table.
# - `03_inference_chat.ipynb`: chat with the merged model (transformers or llama.cpp).
# - On a laptop: `ollama create <name> -f <file>.Modelfile` in the folder holding the GGUF and its Modelfile (the
#   run cell above printed the exact command, for a merge made now or found in your workspace), or
#   `llama-cli -m <file>.gguf`.
