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
# | needs (Q4_K_M) | 7B | 13B | 33B |
# |---|---|---|---|
# | GPU | not needed (a CPU runtime is enough) | not needed | not needed |
# | RAM | about 1.3 GB peak (free Colab has 12.7 GB) | about 1.5 GB | about 1.8 GB |
# | disk | 17.5 GB (13.5 GB download + 3.9 GB output) | 33 GB | 81 GB: low-disk mode, 30 GB |
# | time | 20-40 min: the download, then quantizing on 2 cores | 40-80 min | 2-3 h |
#
# The check cell says before any download whether it fits; when only low-disk mode fits (the base
# fetched one shard at a time, each deleted once merged), the merge switches to it by itself.
# The result keeps the LoRA's tokenizer: never mix the LLaMA and Alpaca tokenizers.
# To compare quantization types, `02_quantize_gguf.ipynb`; to chat, `03_inference_chat.ipynb`.

# %% [markdown]
# ## Setup

# %% setup llama_cpp

# %% [markdown]
# ## Parameters
# Pick the release from the catalog; the base model and the merge order come from the catalog.
# Gated base models (Llama-2/3) need your Hugging Face token as the `HF_TOKEN` secret (key icon).

# %% tags=["parameters"]
import os

MODEL = "chinese-alpaca-2-7b-lora"  # @param {{CATALOG:lora,patch}} {allow-input: true}
BASE_MODEL = ""  # @param {type:"string"}
OUTPUT_FORMAT = "gguf"  # @param ["gguf", "hf", "pth"]
OUTTYPE = "q4_k_m"  # @param ["q4_k_m", "q5_k_m", "q6_k", "q8_0", "q4_0", "q3_k_m", "f16", "bf16", "f32"]
LOW_DISK = "auto"  # @param ["auto", "yes", "no"]
OUTPUT_DIR = "/content/merged"  # @param {type:"string"}
SAVE_TO_DRIVE = False  # @param {type:"boolean"}
DOWNLOAD = False  # @param {type:"boolean"}

if os.environ.get("NOTEBOOK_SMOKE") == "1":  # CI: the same hub ids, tiny stand-ins (from HF_ENDPOINT if set)
    from helpers.demo import use_demo_assets

    use_demo_assets()
    OUTPUT_DIR = "smoke-output/01_merge"

# %% [markdown]
# ## Look up the release
# The catalog knows which original model each release needs and, for Plus models, the order.

# %%
from helpers import catalog

entry = catalog.get(MODEL)
base, loras = catalog.merge_plan(MODEL)
base = BASE_MODEL or base
print(f"{entry.name}: {entry.kind}, vocabulary {entry.vocab_size}, template {entry.template}, context {entry.context_length}")
print("base:", base)
for i, lora in enumerate(loras, 1):
    print(f"step {i}:", lora)

# %% [markdown]
# ## Does it fit this runtime?
# From the hub's file listing, before anything is downloaded: what will be fetched, the output's size, the
# peak disk (normally, and in low-disk mode) and the peak RAM, against what this runtime has. It stops here,
# saying what to change, when the merge will not fit. (From a terminal:
# `python -m helpers colab-check 01_merge_lora --colab cpu --set MODEL=chinese-alpaca-2-13b-lora`.)

# %%
from helpers.colab import colab_check
from helpers.pipeline import release_target

target = release_target(MODEL, OUTPUT_DIR, OUTPUT_FORMAT, OUTTYPE)
fit = colab_check("01_merge_lora", globals())

# %% [markdown]
# ## Merge
# Downloads what is missing (resumable), checks that the LoRA fits the base, then streams the merge,
# quantizing each tensor as it goes. Rerunning after an interruption resumes; rerunning a finished
# merge is a no-op; what cannot fit is refused before the download with a line saying what would.

# %%
from helpers.pipeline import merge_release

low_disk = {"auto": None, "yes": True, "no": False}[LOW_DISK]
result = merge_release(MODEL, target, fmt=OUTPUT_FORMAT, outtype=OUTTYPE, base=BASE_MODEL or None,
                       low_disk=low_disk)
result

# %% [markdown]
# ## Check the result

# %%
from helpers.util import human_bytes

files = sorted(target.rglob("*")) if target.is_dir() else [target]
for f in files:
    if f.is_file():
        print(f"{human_bytes(f.stat().st_size):>10}  {f.relative_to(target.parent)}")

# %% [markdown]
# ## Save to Drive or download
# Colab runtimes get recycled: copy the result to Drive before a long download.

# %%
from helpers.gguf import export_file

if target.is_file():
    export_file(target, to_drive=SAVE_TO_DRIVE, download=DOWNLOAD)

# %% [markdown]
# ## Next steps
# - `02_quantize_gguf.ipynb`: other llama.cpp types from an F16 GGUF, with a size / perplexity / KL table.
# - `03_inference_chat.ipynb`: chat with the merged model (transformers or llama.cpp).
# - On a laptop: `ollama create <name> -f <file>.Modelfile` in the folder holding the GGUF and its Modelfile (the
#   export cell prints the exact command), or `llama-cli -m <file>.gguf`.
