# %% [markdown]
# # Chat with a Chinese LLaMA/Alpaca model
#
# {{BADGE}}
#
# Loads a model with the right prompt template and stop tokens for its generation (Alpaca v1,
# Alpaca-2, Llama-3-Chinese-Instruct), on transformers (4-bit or 8-bit with bitsandbytes on a GPU)
# or llama.cpp (a GGUF), then gives you a chat box with streaming output. By default it downloads and loads one
# model; on request (`START_SERVER`, `DRAFT_MODEL`) it also starts an OpenAI-compatible server over a GGUF and runs
# speculative decoding with a small draft model, and the check counts what they download and load.
#
# {{NEEDS}}
#
# Time on free Colab (measured, not planned): 5-10 min to download and load a 7B for transformers, 2-5 min for a
# Q4_K_M GGUF.

# %% [markdown]
# ## Setup

# %% setup

# %% [markdown]
# ## Parameters

# %% parameters

# %% [markdown]
# ## Does it fit this runtime?
# `MODEL` may also name a GGUF or folder that notebooks 01, 02 or 04 saved in your workspace
# (`chinese-alpaca-2-7b-q4_k_m.gguf`). Before any download: the back end (llama.cpp for a GGUF, transformers for an
# HF model), the quantization that will be used, and, when asked for, the draft model and the server's GGUF, with
# their downloads and memory against what this runtime has. It stops here, naming the parameters to change, when
# they will not fit. When you run the cells again, the memory the earlier run's model holds counts as free (it is
# released before loading again).

# %%
from helpers.stages import ChatStage

plan = ChatStage.from_form(globals()).check()

# %% [markdown]
# ## Load the model

# %%
chat = plan.run(globals())

# %% [markdown]
# ## One reply, streamed

# %%
reply = chat.reply()

# %% [markdown]
# ## Chat box
# History is kept and trimmed by tokens; the stop button interrupts a reply; the sliders set sampling.

# %%
chat.widget()

# %% [markdown]
# ## An OpenAI-compatible server over a GGUF, and questions about your own documents
# This is how a laptop user plugs the model into other tools: `python -m helpers serve` speaks OpenAI's
# `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings` with the release's own template. With
# `START_SERVER = True` it serves the GGUF loaded above, or `SERVER_MODEL` (the release's Q4_K GGUF, an extra
# download) when the chat runs on transformers, and answers `PROMPT` once. With `DOC_FILE` set to a UTF-8 text file
# (upload it in the Files pane), LangChain's OpenAI classes then answer `DOC_QUESTION` from it through the same
# server: the text is split into chunks, each embedded by the GGUF, the nearest chunks retrieved and the model
# answers from them; the cell prints the chunks it used.

# %%
chat.serve()

# %% [markdown]
# ## Speculative decoding
# A small draft model proposes tokens that the big model checks in one pass; the reply is the same, only faster.
# Set `DRAFT_MODEL = "chinese-alpaca-2-1.3b"` (it shares the Alpaca-2 models' 55296 vocabulary) to try it; the
# check cell counts its download and memory, or says why it is skipped.

# %%
chat.speculative()

# %% [markdown]
# ## Next steps
# - Long documents: set `ROPE = "auto"` (NTK-aware scaling) or use a 16K/64K model from the catalog.
# - `04_finetune_lora.ipynb` teaches the model your own data.
