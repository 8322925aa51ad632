# %% [markdown]
# # Merge a Chinese LLaMA/Alpaca LoRA into its base model
#
# {{BADGE}}
#
# Most Chinese LLaMA/Alpaca releases are LoRA weights (or, for Open-Chinese-LLaMA, a full-weight
# patch) that only work once merged into the original Meta model, with the vocabulary expanded to
# the Chinese one (49953 / 49954 / 55296 tokens). This notebook does that in **one streaming pass**:
# it reads the base model one tensor at a time, applies every LoRA in order (Plus models need two),
# and writes a GGUF for llama.cpp / Ollama, a Hugging Face folder, or Meta `.pth` files.
#
# | needs | 7B | 13B |
# |---|---|---|
# | GPU | not needed (a CPU runtime is enough) | not needed |
# | RAM | about 2-3 GB peak (free Colab has 12.7 GB) | about 3-4 GB |
# | disk | base 13.5 GB + output 13.5 GB (F16) or 7.2 GB (Q8_0) | base 26 GB + output 26 GB / 14 GB |
# | time | 10-20 min, mostly the download | 20-40 min |
#
# The result keeps the LoRA's tokenizer: never mix the LLaMA and Alpaca tokenizers.
# For 4-bit GGUFs continue with `02_quantize_gguf.ipynb`; to chat, `03_inference_chat.ipynb`.

# %% [markdown]
# ## Setup

# %% setup

# %% [markdown]
# ## Parameters
# Pick the release from the catalog; the base model and the merge order come from the catalog.
# Gated base models (Llama-2/3) need your Hugging Face token as the `HF_TOKEN` secret (key icon).

# %% tags=["parameters"]
import os

MODEL = "chinese-alpaca-2-7b-lora"  # @param {{CATALOG:lora,patch}} {allow-input: true}
BASE_MODEL = ""  # @param {type:"string"}
OUTPUT_FORMAT = "gguf"  # @param ["gguf", "hf", "pth"]
OUTTYPE = "f16"  # @param ["f16", "q8_0", "bf16", "f32"]
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
# ## Merge
# Downloads what is missing (resumable), checks that the LoRA fits the base, prints a RAM estimate,
# then streams the merge. Rerunning after an interruption resumes; rerunning a finished merge is a no-op.

# %%
from pathlib import Path

from helpers.pipeline import merge_release

suffix = {"gguf": f"-{OUTTYPE}.gguf", "hf": "-hf", "pth": "-pth"}[OUTPUT_FORMAT]
target = Path(OUTPUT_DIR) / f"{entry.name.removesuffix('-lora')}{suffix}"
result = merge_release(MODEL, target, fmt=OUTPUT_FORMAT, outtype=OUTTYPE, base=BASE_MODEL or None)
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
# - `02_quantize_gguf.ipynb`: Q4_K_M and other llama.cpp types, with a quality table.
# - `03_inference_chat.ipynb`: chat with the merged model (transformers or llama.cpp).
# - On a laptop: `ollama create <name> -f <file>.Modelfile` in the folder holding the GGUF and its Modelfile (the
#   export cell prints the exact command), or `llama-cli -m <file>.gguf`.
