"""GGUF: the streaming writer, llama.cpp quantization, metadata, Ollama Modelfiles and exports.

- :mod:`.sink`: :class:`GGUFSink`, the writer the merge and ``to-gguf`` stream tensors into (float types, or any
  llama.cpp quantization type in the same pass, with :mod:`.ggml` (llama.cpp's kernels) and :mod:`.quant_rules`
  (its per-tensor type choice)); resumable after an interruption;
- :mod:`.card`: :class:`ModelCard` (name, chat template, catalog RoPE scaling), resolved by
  :func:`~.card.describe_model`;
- :mod:`.hparams`, :mod:`.vocab`: the hyper-parameter keys and the tokenizer, as llama.cpp's converter writes them;
- :mod:`.convert`: ``to-gguf`` (an HF folder to GGUF);
- :mod:`.llama_quantize`: ``quantize`` with llama.cpp's quantizer;
- :mod:`.imatrix`: importance matrices in llama-imatrix's GGUF format (read, written, checked against a model)
  and its legacy ``.dat`` (read);
- :mod:`.types`: the output and quantization type names (:func:`gguf_outtype` checks one);
- :mod:`.metadata`: reading a GGUF's metadata back (template, type);
- :mod:`.export`: Modelfile, checksum, shards, Drive/download from Colab;
- :mod:`.llamacpp`: llama-cpp-python's availability, its Colab install and a quiet log.
"""
from __future__ import annotations

from .card import ModelCard
from .convert import convert_hf_to_gguf, gguf_sidecars
from .export import export_file, write_modelfile
from .layout import data_bytes
from .llamacpp import colab_install_llama_cpp, llama_cpp_available, server_extras_missing
from .metadata import JOB_KEY, gguf_type, read_metadata
from .llama_quantize import QuantizeOptions, quantize
from .sink import GGUFSink
from .types import BITS_PER_WEIGHT, FLOAT_TYPES, NEEDS_IMATRIX, WRITE_TYPES, gguf_outtype, qtype_name

__all__ = ["BITS_PER_WEIGHT", "FLOAT_TYPES", "GGUFSink", "JOB_KEY", "ModelCard", "NEEDS_IMATRIX", "WRITE_TYPES",
           "colab_install_llama_cpp", "convert_hf_to_gguf", "data_bytes", "export_file", "gguf_outtype",
           "gguf_sidecars", "gguf_type", "llama_cpp_available", "qtype_name", "QuantizeOptions", "quantize",
           "read_metadata", "server_extras_missing", "write_modelfile"]
