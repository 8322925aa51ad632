# %% [markdown]
# # Quantize a Chinese LLaMA/Alpaca model to GGUF for llama.cpp and Ollama
#
# {{BADGE}}
#
# Turns a model (a released full model, a LoRA release merged on the fly, an HF folder or an F16
# GGUF) into one or several llama.cpp quantization types, then measures what each costs in quality:
# file size, perplexity on held-out Chinese text, and KL divergence against the F16 model. Each GGUF
# gets an Ollama `<file>.Modelfile` (right template and stop tokens) and a SHA256 beside it.
#
# {{NEEDS}}
#
# Time on free Colab (measured, not planned): for 7B, the download 5-10 min, the F16 conversion 3 min, each type 3-5
# min on Colab's 2 CPUs; 13B about twice that. Types already in your workspace from the same source are kept, not
# made again; the 33B releases go through low-disk mode (`LOW_DISK`: each type merged straight from the release).
#
# Q4_K_M is the usual choice for a laptop (Chinese-LLaMA-2-7B: PPL 9.24 vs 9.13 at F16, 3.9 GB).

# %% [markdown]
# ## Setup
# llama.cpp comes from the prebuilt `llama-cpp-python` CPU wheel, as in the other notebooks: never a slow build (a
# source build, about 10 minutes, happens only if you ask for it: `colab_install_llama_cpp(build_from_source=True)`).

# %% setup

# %% [markdown]
# ## Parameters

# %% parameters

# %% [markdown]
# ## Does it fit this runtime?
# Before any download: where the files come from (the authors' published GGUF of a type when there is one, a
# float GGUF you have or that 01_merge_lora saved in your workspace, a merge, or a conversion), every output's
# name and size, the disk and RAM, against what this runtime has. It stops here, saying what to change, when
# they will not fit. (From a terminal: `python -m helpers colab-check 02 --colab cpu --set NAME=VALUE`.)

# %%
from helpers.stages import QuantizeStage

plan = QuantizeStage.from_form(globals()).check()

# %% [markdown]
# ## Make the GGUFs, and keep them
# The published files are downloaded; otherwise a LoRA or patch release is merged straight into an F16 GGUF, a
# full model converted tensor by tensor, and llama.cpp's quantizer makes each type. The files are copied to
# your workspace (checked), pushed to `PUSH_TO_HUB` when you name a repo, and downloaded when asked.

# %%
result = plan.run(globals())
print(QuantizeStage.sizes(result))

# %% [markdown]
# ## Compare quality and size
# With `QUALITY_TABLE`: perplexity (lower is better) on held-out Chinese text and the mean KL divergence of each
# type's next-token distribution from the F16 model's (0 means identical), one model in memory at a time.

# %%
rows = plan.stage.quality(result)

# %% [markdown]
# ## Next steps
# - On a laptop, in the folder holding both files: `ollama create chinese-alpaca-2 -f <file>.Modelfile`, then
#   `ollama run chinese-alpaca-2`.
# - `03_inference_chat.ipynb` chats with a GGUF from your workspace (`MODEL = "<file>.gguf"`).
