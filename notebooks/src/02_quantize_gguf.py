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
# | needs | 7B | 13B |
# |---|---|---|
# | GPU | not needed (quantization runs on the CPU; a GPU speeds up the perplexity table) | not needed |
# | RAM | about 4 GB, plus the F16 model mapped from disk | about 8 GB |
# | disk | F16 13.5 GB + 3.9 GB per Q4_K_M | F16 26 GB + 7.8 GB per Q4_K_M |
# | time | download 5-10 min, F16 conversion 3 min, each quant 3-5 min on Colab's 2 CPUs | about twice |
#
# Q4_K_M is the usual choice for a laptop (Chinese-LLaMA-2-7B: PPL 9.24 vs 9.13 at F16, 3.9 GB).

# %% [markdown]
# ## Setup
# llama.cpp comes from a prebuilt `llama-cpp-python` wheel when one matches this runtime; otherwise it is
# compiled once (about 10 minutes; the cell says so before it starts).

# %% setup

# %% [markdown]
# ## Parameters

# %% parameters
if os.environ.get("NOTEBOOK_SMOKE") == "1":  # CI: tiny stand-ins for the same hub ids (from HF_ENDPOINT if set)
    from helpers.demo import use_demo_assets

    DEMO = use_demo_assets()
    MODEL, QUANT_TYPES, OUTPUT_DIR = "chinese-alpaca-2-7b-lora", "q8_0,q4_k_m", "smoke-output/02_quantize"
    EVAL_TEXT = str(DEMO / "data" / "heldout_zh.txt")

# %% [markdown]
# ## Does it fit this runtime?
# Before any download: where the F16 GGUF comes from (your file, a merge, or a conversion), every output's name
# and exact size, the disk and RAM, against what this runtime has. It stops here, saying what to change, when
# they will not fit. (From a terminal: `python -m helpers colab-check 02 --colab cpu --set NAME=VALUE`.)

# %%
from helpers.stages import QuantizeStage

plan = QuantizeStage.from_form(globals()).check()

# %% [markdown]
# ## Make the F16 GGUF and quantize it
# A LoRA or patch release is merged straight into a GGUF; a full model is converted tensor by tensor; then
# llama.cpp's quantizer makes each type.

# %%
result = plan.run(globals())
print(QuantizeStage.sizes(result))

# %% [markdown]
# ## Compare quality and size
# Perplexity (lower is better) on held-out Chinese text and the mean KL divergence of each quant's
# next-token distribution from the F16 model's (0 means identical).

# %%
from helpers.evaluate import plot_quant_table

rows = plan.stage.quality(result)
plot_quant_table(rows)

# %% [markdown]
# ## Save to Drive or download
# Each GGUF has a `<file>.Modelfile` (for `ollama create`) and a `.sha256` beside it; the export prints the
# `ollama create` command.

# %%
from helpers.gguf import export_file

for path in result.quants.values():
    export_file(path, to_drive=SAVE_TO_DRIVE, download=DOWNLOAD, split_gb=SPLIT_GB or None)

# %% [markdown]
# ## Next steps
# - On a laptop, in the folder holding both files: `ollama create chinese-alpaca-2 -f <file>.Modelfile`, then
#   `ollama run chinese-alpaca-2`.
# - `03_inference_chat.ipynb` chats with the GGUF through llama.cpp.
