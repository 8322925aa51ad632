"""GGUF: the streaming writer, llama.cpp quantization, metadata, Ollama Modelfiles and exports.

- :mod:`.sink`: :class:`GGUFSink`, the writer the merge and ``to-gguf`` stream tensors into (float types, or any
  llama.cpp quantization type in the same pass, with :mod:`.ggml` (llama.cpp's kernels) and :mod:`.quant_rules`
  (its per-tensor type choice)); resumable after an interruption;
- :mod:`.card`: :class:`ModelCard` (name, chat template, catalog RoPE scaling), resolved by :func:`describe_model`;
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

from .card import ModelCard, describe_model
from .convert import convert_hf_to_gguf, convert_to_gguf_files, gguf_bytes, gguf_sidecars, write_gguf
from .export import DRIVE_ROOT, export_file, modelfile_path, ollama_command, split_gguf, write_checksum, write_modelfile
from .hparams import rope_settings
from .imatrix import ImatrixStats, check_imatrix_fits, read_imatrix, read_imatrix_stats, write_imatrix
from .layout import data_bytes, gguf_names, requantized_bytes, tensor_nbytes, tensor_types
from .llamacpp import (LLAMA_CPP_VERSION, SERVER_MODULES, colab_install_llama_cpp, install_hint, llama_cpp_available,
                       quantize_binary, quiet_llama_log, server_extras_missing)
from .metadata import JOB_KEY, check_gguf, gguf_template, gguf_type, read_metadata
from .llama_quantize import already_quantized, quantize
from .sink import GGUFSink, permute_qk
from .types import BITS_PER_WEIGHT, DEFAULT_QUANT, FLOAT_TYPES, FTYPES, NEEDS_IMATRIX, WRITE_TYPES, gguf_outtype, qtype_name
from .vocab import add_tokenizer, bpe_vocab, sentencepiece_vocab

__all__ = [
    "already_quantized", "BITS_PER_WEIGHT", "DEFAULT_QUANT", "DRIVE_ROOT", "FLOAT_TYPES", "FTYPES", "GGUFSink", "ImatrixStats", "JOB_KEY",
    "LLAMA_CPP_VERSION", "ModelCard", "check_imatrix_fits", "read_imatrix_stats", "write_imatrix",
    "NEEDS_IMATRIX", "SERVER_MODULES", "WRITE_TYPES", "add_tokenizer", "bpe_vocab", "check_gguf",
    "colab_install_llama_cpp",
    "convert_hf_to_gguf", "convert_to_gguf_files", "data_bytes", "describe_model", "export_file", "gguf_bytes",
    "gguf_names", "gguf_outtype", "gguf_sidecars", "gguf_template", "gguf_type", "install_hint",
    "llama_cpp_available", "modelfile_path", "ollama_command", "permute_qk", "qtype_name", "quantize",
    "quantize_binary", "quiet_llama_log", "read_imatrix", "read_metadata", "requantized_bytes", "rope_settings", "sentencepiece_vocab",
    "server_extras_missing",
    "split_gguf", "tensor_nbytes", "tensor_types", "write_checksum", "write_gguf", "write_modelfile",
]
