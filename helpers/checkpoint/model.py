"""A model checkpoint opened for lazy, tensor-by-tensor reading in Hugging Face naming: :func:`open_checkpoint`.

Whatever the layout on disk:

* safetensors (``model.safetensors`` or shards + ``model.safetensors.index.json``), read by positioned reads;
* legacy pickled shards (``pytorch_model-*.bin`` + index, or ``pytorch_model.bin``): zip-format ones read tensor
  by tensor with positioned reads (:mod:`.torchzip`), pre-1.6 pickles loaded whole, one shard at a time;
* Meta's ``consolidated.NN.pth`` + ``params.json``, read the same way: tensor-parallel pieces are concatenated, names are mapped to
  Hugging Face's, and ``wq``/``wk`` are permuted from Meta's interleaved RoPE layout to Hugging Face's
  rotate-half layout (``wk`` with ``n_kv_heads``).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..tokens import tokenizer_files
from ..tokens.files import find_tokenizer_dir
from ..util import UserError, read_json
from .files import SafetensorsFile
from .names import meta_split_dim, meta_to_hf_name, rope_to_hf
from .torchzip import open_pickle

if TYPE_CHECKING:
    import torch


class Checkpoint:
    """A model's tensors in HF naming. Use :func:`open_checkpoint`.

    Attributes:
        path: the folder (or file) opened.
        config: HF ``config.json`` dict (synthesized from ``params.json`` for Meta checkpoints).
        files: every file read (weights, index, config), for checksums and change detection.
        tokenizer_dir: folder holding the tokenizer files, or ``None``.
        tokenizer_files: the tokenizer files there (none without a tokenizer).
        format: ``safetensors``, ``bin`` or ``meta``.
    """

    arrives = False  # read while it downloads (StreamedCheckpoint: unverified() and settle())

    def __init__(self, path: Path, config: dict, files: list[Path], fmt: str) -> None:
        self.path, self.config, self.files, self.format = path, config, files, fmt
        folder = path if path.is_dir() else path.parent
        self.tokenizer_dir = find_tokenizer_dir(folder)
        self.tokenizer_files = tokenizer_files(self.tokenizer_dir) if self.tokenizer_dir else []
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._where: dict[str, Any] = {}

    def names(self) -> list[str]:
        """HF tensor names, in file order."""
        return list(self._shapes)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def __contains__(self, name: str) -> bool:
        return name in self._shapes

    def get(self, name: str, *, dtype: "torch.dtype | None" = None) -> "torch.Tensor":
        """One tensor. With ``dtype`` the result is a fresh tensor of that type, owned by the caller."""
        raise NotImplementedError

    def close(self) -> None:
        """Release open files and loaded shards."""

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SafetensorsCheckpoint(Checkpoint):
    def __init__(self, path: Path, config: dict, files: list[Path], shards: list[Path]) -> None:
        super().__init__(path, config, files, "safetensors")
        self._files = [SafetensorsFile(s) for s in shards]
        for f in self._files:
            for k in f.keys():
                self._shapes[k], self._where[k] = f.shape(k), f

    def get(self, name, *, dtype=None):
        return self._where[name].get(name, dtype=dtype)

    def close(self):
        for f in self._files:
            f.close()


class _BinCheckpoint(Checkpoint):
    """Pickled shards (:func:`~.torchzip.open_pickle`): zip-format ones read tensor by tensor, pre-1.6 ones loaded
    whole; at most one shard is open (or loaded) at a time."""

    def __init__(self, path: Path, config: dict, files: list[Path], shards: list[Path]) -> None:
        super().__init__(path, config, files, "bin")
        self._current: Any = None
        for f in map(open_pickle, shards):
            for k in f.keys():
                self._shapes[k], self._where[k] = f.shape(k), f

    def get(self, name, *, dtype=None):
        f = self._where[name]
        if self._current is not f:
            self.close()
            self._current = f
        return f.get(name, dtype=dtype)

    def close(self):
        if self._current is not None:
            self._current.close()
            self._current = None


class _MetaCheckpoint(Checkpoint):
    """Meta ``consolidated.NN.pth`` shards: pieces concatenated, renamed, q/k permuted to HF order."""

    def __init__(self, path: Path, params: dict, files: list[Path], shards: list[Path]) -> None:
        self._parts = [open_pickle(s) for s in shards]  # read tensor by tensor, never whole (13 GB for 7B)
        first = self._parts[0]
        self._meta: dict[str, str] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for k in first.keys():
            hf = meta_to_hf_name(k)
            if hf is None:
                continue
            missing = [s.name for s, p in zip(shards, self._parts) if k not in p.keys()]
            if missing:
                raise UserError(f"{k} is missing from {', '.join(missing)}; the download is incomplete: download it again")
            dim, shape = meta_split_dim(k), list(first.shape(k))
            if dim is not None and len(self._parts) > 1:
                shape[dim] = sum(p.shape(k)[dim] for p in self._parts)
            self._meta[hf], shapes[hf] = k, tuple(shape)
        super().__init__(path, _config_from_params(params, shapes), files, "meta")
        self.params = params
        self._shapes = shapes

    def get(self, name, *, dtype=None):
        import torch

        k = self._meta[name]
        dim = meta_split_dim(k)
        if dim is None or len(self._parts) == 1:
            t = self._parts[0].get(k, dtype=dtype)
        else:
            t = torch.cat([p.get(k, dtype=dtype) for p in self._parts], dim=dim)
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = self.config["num_attention_heads" if "q_proj" in name else "num_key_value_heads"]
            t = rope_to_hf(t, heads).contiguous()
        return t

    def close(self):
        for part in self._parts:
            part.close()
        self._parts = []


def _config_from_params(params: dict, shapes: dict[str, tuple[int, ...]]) -> dict:
    """An HF LlamaForCausalLM config.json dict from Meta's params.json and the tensor shapes."""
    try:
        dim, heads, layers = int(params["dim"]), int(params["n_heads"]), int(params["n_layers"])
    except (KeyError, TypeError, ValueError):
        raise UserError("params.json lacks dim, n_heads or n_layers; download it again") from None
    theta = float(params.get("rope_theta", 10000.0))
    eps = float(params.get("norm_eps", 1e-6))
    vocab = shapes.get("model.embed_tokens.weight", (params.get("vocab_size", -1),))[0]
    llama3 = theta >= 500000 or vocab >= 128000
    ctx = params.get("max_seq_len") or (8192 if llama3 else 4096 if abs(eps - 1e-5) < 1e-12 else 2048)
    bos, eos = (128000, [128001, 128009]) if llama3 else (1, 2)
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "hidden_size": dim, "intermediate_size": shapes["model.layers.0.mlp.gate_proj.weight"][0],
            "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": int(params.get("n_kv_heads") or heads), "max_position_embeddings": int(ctx),
            "rms_norm_eps": eps, "rope_theta": theta, "vocab_size": vocab, "bos_token_id": bos,
            "eos_token_id": eos, "tie_word_embeddings": False, "torch_dtype": "float16"}


def _index_shards(folder: Path, index: Path) -> list[Path]:
    data = read_json(index)
    names = sorted(set((data.get("weight_map") or {}).values()))
    if not names:
        raise UserError(f"{index} lists no weight files; download it again")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise UserError(f"{folder} lacks {', '.join(missing[:3])} listed in {index.name}; the download is incomplete: "
                        "download the missing files again")
    return [folder / n for n in names]


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a model folder (or one weights file) for lazy, tensor-by-tensor reading.

    Raises:
        UserError: no weights found, a listed shard is missing, or a file is truncated or corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} not found")
    folder = path if path.is_dir() else path.parent
    if path.is_file():
        shards, kind, extra = [path], {".safetensors": "st", ".bin": "bin", ".pth": "meta"}.get(path.suffix), []
        if kind is None:
            raise UserError(f"{path}: unknown weights format; expected .safetensors, .bin or .pth")
    elif (folder / "model.safetensors.index.json").is_file():
        extra = [folder / "model.safetensors.index.json"]
        shards, kind = _index_shards(folder, extra[0]), "st"
    elif (folder / "pytorch_model.bin.index.json").is_file():
        extra = [folder / "pytorch_model.bin.index.json"]
        shards, kind = _index_shards(folder, extra[0]), "bin"
    else:
        extra = []
        globs = (("model*.safetensors", "st"), ("pytorch_model*.bin", "bin"), ("consolidated.*.pth", "meta"))
        shards, kind = next(((sorted(folder.glob(g)), k) for g, k in globs if list(folder.glob(g))), ([], None))
        if kind is None:
            raise UserError(f"no model weights in {folder}: expected model*.safetensors, pytorch_model*.bin or "
                            "consolidated.*.pth with params.json; check the path or download the model again")
    if kind == "meta":
        params = read_json(folder / "params.json")
        return _MetaCheckpoint(path, params, [*shards, folder / "params.json"], shards)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{folder} has weights but no config.json; download it from the model's repository")
    config = read_json(cfg_path)
    files = [*shards, *extra, cfg_path]
    if kind == "st":
        return _SafetensorsCheckpoint(path, config, files, shards)
    return _BinCheckpoint(path, config, files, shards)
