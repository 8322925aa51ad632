# %% [markdown]
# # Chat with a Chinese LLaMA/Alpaca model
#
# {{BADGE}}
#
# Loads a model with the right prompt template and stop tokens for its generation (Alpaca v1,
# Alpaca-2, Llama-3-Chinese-Instruct), on transformers (4-bit or 8-bit with bitsandbytes on a GPU)
# or llama.cpp (a GGUF), then gives you a chat box with streaming output. It also shows an
# OpenAI-compatible server over the GGUF, long context, and speculative decoding.
#
# | needs | 7B 4-bit (transformers) | 7B Q4_K_M GGUF (llama.cpp) |
# |---|---|---|
# | GPU | a T4 (free Colab) | optional (CPU works, slower) |
# | RAM | about 6 GB while loading | about 5 GB |
# | disk | 13.5 GB download | 3.9 GB |
# | time | 5-10 min to download and load | 2-5 min |

# %% [markdown]
# ## Setup

# %% setup llama_cpp_gpu

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
import os

MODEL = "chinese-alpaca-2-7b"  # @param {{CATALOG:full,gguf}} {allow-input: true}
BACKEND = "auto"  # @param ["auto", "transformers", "llama.cpp"]
QUANTIZATION = "4bit"  # @param ["4bit", "8bit", "none"]
SYSTEM_PROMPT = ""  # @param {type:"string"}
PROMPT = "请详细介绍一下北京的名胜古迹。"  # @param {type:"string"}
MAX_NEW_TOKENS = 400  # @param {type:"integer"}
ROPE = ""  # @param ["", "auto", "ntk"]
DRAFT_MODEL = "chinese-alpaca-2-1.3b"  # @param {type:"string"}
START_SERVER = True  # @param {type:"boolean"}
SERVER_MODEL = "chinese-alpaca-2-7b-gguf"  # @param {type:"string"}

if os.environ.get("NOTEBOOK_SMOKE") == "1":  # CI: tiny stand-ins (from HF_ENDPOINT if set), CPU, short replies
    from helpers.demo import use_demo_assets

    use_demo_assets()
    QUANTIZATION, MAX_NEW_TOKENS = "none", 16
    if not os.environ.get("HF_ENDPOINT"):  # offline, the demo assets hold no GGUF release repo: make a GGUF
        from helpers.pipeline import f16_gguf

        SERVER_MODEL = str(f16_gguf("chinese-alpaca-2-7b", "smoke-output/03_inference"))

# %% [markdown]
# ## Does it fit this runtime?
# Before any download: what these parameters need (GPU and its memory, RAM, disk, llama.cpp, bitsandbytes)
# against what this runtime has. It stops here, saying what to change, when they will not fit.
# (From a terminal: `python -m helpers colab-check 03_inference_chat --colab t4 --set NAME=VALUE`.)

# %%
from helpers.colab import colab_check

fit = colab_check("03_inference_chat", globals())

# %% [markdown]
# ## Load the model
# On a CPU runtime 4/8-bit loading is refused (bitsandbytes needs a GPU): choose `none` or a GGUF.

# %%
import torch

from helpers.chat import load_backend

quant = None if QUANTIZATION == "none" or not torch.cuda.is_available() else QUANTIZATION
bot = load_backend(MODEL, backend=BACKEND, quantization=quant, rope=ROPE or None)
print("template:", bot.template)

# %% [markdown]
# ## One reply, streamed

# %%
for piece in bot.chat(PROMPT, system=SYSTEM_PROMPT or None, max_new_tokens=MAX_NEW_TOKENS, stream=True):
    print(piece, end="", flush=True)
print()

# %% [markdown]
# ## Chat box
# History is kept and trimmed by tokens; the stop button interrupts a reply; the sliders set sampling.

# %%
from helpers.chat import chat_widget

chat_widget(bot, max_new_tokens=MAX_NEW_TOKENS)

# %% [markdown]
# ## An OpenAI-compatible server over a GGUF
# This is how a laptop user plugs the model into other tools: `llama_cpp.server` speaks the
# `/v1/chat/completions` API. It serves the GGUF loaded above, or `SERVER_MODEL` (the release's Q4_K GGUF;
# `resolve(SERVER_MODEL, gguf_quant="q4_k-im")` picks its importance-matrix variant instead).

# %%
from helpers.chat import openai_chat, resolve, start_openai_server

if START_SERVER:
    gguf_path = bot.path if bot.name == "llama.cpp" else resolve(SERVER_MODEL)[0]
    server = start_openai_server(gguf_path, port=8000)
    try:
        print(openai_chat("http://127.0.0.1:8000/v1", [{"role": "user", "content": PROMPT}], max_tokens=MAX_NEW_TOKENS))
    finally:
        server.terminate()

# %% [markdown]
# ## Speculative decoding
# A small draft model (Chinese-Alpaca-2-1.3B shares the 55296 vocabulary) proposes tokens that the
# big model checks in one pass; the reply is the same, only faster.

# %%
from helpers.chat import speculative_generate

if DRAFT_MODEL and bot.name == "transformers":
    draft = load_backend(DRAFT_MODEL, backend="transformers")
    prompt = bot.prompt(PROMPT, system=SYSTEM_PROMPT or None)  # the templated text chat() would send
    text, stats = speculative_generate(bot, draft, prompt, max_new_tokens=MAX_NEW_TOKENS)
    print(stats)

# %% [markdown]
# ## Next steps
# - Long documents: set `ROPE = "auto"` (NTK-aware scaling) or use a 16K/64K model from the catalog.
# - `04_finetune_lora.ipynb` teaches the model your own data.
