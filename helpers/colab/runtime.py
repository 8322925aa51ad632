"""The machine a notebook runs on: GPU and its memory, RAM, disk, and the native wheels it can use.

:meth:`Runtime.detect` measures this machine; :meth:`Runtime.free_colab` describes free Colab's runtimes
(a T4 with about 15 GB, or CPU only; 12.7 GiB of RAM, 78 GiB of free disk) so a plan can be checked against
Colab from anywhere before a single byte is downloaded.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..device import cuda_gpu
from ..env import available_ram_bytes, in_colab
from ..gguf import llama_cpp_available, server_extras_missing
from ..hub import hub_cache_dir
from ..disk import free_disk_bytes
from ..util import human_bytes

GIB = 1 << 30
FREE_COLAB_RAM = int(12.7 * GIB)  # what free Colab reports as the session's RAM
FREE_COLAB_DISK = 78 * GIB  # free space on /content of a fresh free Colab runtime
T4_VRAM = int(14.7 * GIB)  # a T4's 15360 MiB less what the CUDA context takes


@dataclass(frozen=True)
class Runtime:
    """What a runtime offers.

    Attributes:
        name: for the report (``this machine``, ``free Colab, T4 GPU``...).
        gpu: GPU name, None without a CUDA GPU.
        vram: free GPU memory in bytes.
        ram: available RAM in bytes (None: unknown).
        disk: free disk where the downloads and outputs go (the smaller of the output folder's and the hub
            cache's filesystems; None: unknown).
        cuda: the CUDA version torch was built for (``12.4``), None without a GPU.
        llama_cpp: llama-cpp-python can be imported (or the notebook's setup cell installs it).
        llama_cpp_gpu: that llama.cpp build offloads layers to the GPU.
        llama_cpp_server: llama-cpp-python's ``[server]`` extra is installed too (the OpenAI-compatible server).
        bitsandbytes: bitsandbytes is installed (8/4-bit loading, QLoRA; it needs a GPU too).
        assumed: a described runtime rather than this machine: nothing is downloaded there yet.
    """

    name: str
    gpu: str | None = None
    vram: int | None = None
    ram: int | None = None
    disk: int | None = None
    cuda: str | None = None
    llama_cpp: bool = False
    llama_cpp_gpu: bool = False
    llama_cpp_server: bool = False
    bitsandbytes: bool = False
    assumed: bool = False

    @classmethod
    def detect(cls, out_dir: str | Path = ".") -> Runtime:
        """Measure this machine; ``out_dir`` is where the notebook writes (its filesystem's free space counts)."""
        gpu, vram, cuda = cuda_gpu() or (None, None, None)
        out = Path(out_dir).expanduser().resolve()
        while not out.exists():  # the output folder is made later: its nearest existing parent
            out = out.parent
        llama, llama_gpu = llama_cpp_available(), False
        if llama:
            import llama_cpp

            llama_gpu = bool(llama_cpp.llama_supports_gpu_offload())
        return cls(name="this Colab runtime" if in_colab() else "this machine", gpu=gpu, vram=vram,
                   ram=available_ram_bytes(), disk=min(free_disk_bytes(out), free_disk_bytes(hub_cache_dir())),
                   cuda=cuda, llama_cpp=llama, llama_cpp_gpu=llama_gpu and gpu is not None,
                   llama_cpp_server=llama and not server_extras_missing(),
                   bitsandbytes=importlib.util.find_spec("bitsandbytes") is not None)

    @classmethod
    def free_colab(cls, *, gpu: bool = True, setup: frozenset[str] = frozenset({"llama_cpp"})) -> Runtime:
        """Free Colab with a T4 (``gpu``) or a CPU runtime, after the notebook's setup cell.

        Args:
            gpu: the T4 runtime (else the CPU one).
            setup: what the notebook's setup cell installs (:func:`helpers.colab.params.notebook_setup`): ``llama_cpp``
                (the prebuilt CPU wheel), ``gpu`` (the CUDA wheel, which fits Colab's CUDA 12), ``server``.
        """
        llama = "llama_cpp" in setup
        return cls(name=f"free Colab, {'T4 GPU' if gpu else 'CPU'} runtime", gpu="T4" if gpu else None,
                   vram=T4_VRAM if gpu else None, ram=FREE_COLAB_RAM, disk=FREE_COLAB_DISK,
                   cuda="12.4" if gpu else None, llama_cpp=llama, llama_cpp_gpu=llama and gpu and "gpu" in setup,
                   llama_cpp_server=llama and "server" in setup, bitsandbytes=True, assumed=True)

    def cpu_only(self) -> Runtime:
        """This runtime for a llama.cpp process that runs on the CPU (the OpenAI-compatible server)."""
        return dataclasses.replace(self, llama_cpp_gpu=False)

    def describe(self) -> str:
        """One line: GPU, RAM, disk and wheels."""
        def size(n: int | None) -> str:
            return human_bytes(n) if n is not None else "unknown"

        gpu = f"{self.gpu} GPU with {size(self.vram)} free" if self.gpu else "no GPU"
        llama = ("llama.cpp (GPU)" if self.llama_cpp_gpu else "llama.cpp (CPU)") if self.llama_cpp else "no llama.cpp"
        return (f"{self.name}: {gpu}, {size(self.ram)} RAM available, {size(self.disk)} disk free, {llama}, "
                f"{'bitsandbytes' if self.bitsandbytes else 'no bitsandbytes'}")
