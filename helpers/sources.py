"""Lazy, memory-lean access to the tensors of a model checkpoint or a LoRA adapter.

:func:`open_checkpoint` reads only headers when it opens a model; each :meth:`Checkpoint.get` then
returns one tensor, in Hugging Face naming, whatever the layout on disk:

* safetensors (``model.safetensors`` or shards + ``model.safetensors.index.json``): the header is
  parsed here and each tensor is fetched with positioned reads. (A memory map would be simpler, but
  every page it touches stays in the process's resident set until the file is closed, so reading a
  13 GB model through one grows RSS by 13 GB.) Conversion to float32 happens in small chunks.
* legacy pickled shards (``pytorch_model-*.bin`` + index, or ``pytorch_model.bin``): loaded with
  ``torch.load(weights_only=True, mmap=True)``, one shard at a time.
* Meta's ``consolidated.NN.pth`` + ``params.json``: tensor-parallel pieces are concatenated, names
  are mapped to Hugging Face's, and ``wq``/``wk`` are permuted from Meta's interleaved RoPE layout
  to Hugging Face's rotate-half layout (``wk`` with ``n_kv_heads``).

:func:`open_adapter` does the same for a PEFT LoRA folder, old (2023) layouts included.
"""
from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .util import UserError, read_json

if TYPE_CHECKING:
    import torch

CHUNK_BYTES = 64 << 20  # conversion buffer for float32 reads
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
              "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
              "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}

# Meta <-> Hugging Face names. Split dims of Meta's tensor-parallel shards: None = replicated.
_META_LAYER = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj",
               "attention.wv": "self_attn.v_proj", "attention.wo": "self_attn.o_proj",
               "feed_forward.w1": "mlp.gate_proj", "feed_forward.w2": "mlp.down_proj",
               "feed_forward.w3": "mlp.up_proj", "attention_norm": "input_layernorm",
               "ffn_norm": "post_attention_layernorm"}
_META_TOP = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}
_SPLIT_DIM = {"tok_embeddings": 1, "output": 0, "norm": None, "wq": 0, "wk": 0, "wv": 0, "wo": 1,
              "w1": 0, "w2": 1, "w3": 0, "attention_norm": None, "ffn_norm": None}
_HF_LAYER = {v: k for k, v in _META_LAYER.items()}
_HF_TOP = {v: k for k, v in _META_TOP.items()}


def _corrupt(path: Path, why: object) -> str:
    why = str(why).strip().splitlines()[0].split(". ")[0][:160] if str(why).strip() else "unreadable"
    return f"{path} is truncated or corrupt ({why}); delete it and download it again"


# ---------------------------------------------------------------------------------------------
# name mapping and the RoPE permutation
def _rename(name: str, top: dict[str, str], layer: dict[str, str], src: str, dst: str) -> str | None:
    """Map ``name`` through ``top`` or, for ``<src>N.<part>``, ``layer`` (to ``<dst>N.<new part>``)."""
    stem = name.removesuffix(".weight")
    if stem in top:
        return top[stem] + ".weight"
    m = re.fullmatch(re.escape(src) + r"(\d+)\.(.+)", stem)
    if m and m.group(2) in layer:
        return f"{dst}{m.group(1)}.{layer[m.group(2)]}.weight"
    return None


def meta_to_hf_name(name: str) -> str | None:
    """HF name of a Meta checkpoint tensor (``None`` for tensors HF does not keep, like ``rope.freqs``)."""
    return _rename(name, _META_TOP, _META_LAYER, "layers.", "model.layers.")


def hf_to_meta_name(name: str) -> str | None:
    """Meta name of an HF tensor (``None`` when Meta's layout has no such tensor)."""
    return _rename(name, _HF_TOP, _HF_LAYER, "model.layers.", "layers.")


def meta_split_dim(meta_name: str) -> int | None:
    """Dimension along which Meta splits this tensor across tensor-parallel shards (None: replicated)."""
    return _SPLIT_DIM[meta_name.removesuffix(".weight").rsplit(".", 1)[-1]]


def rope_to_hf(w: "torch.Tensor", n_heads: int) -> "torch.Tensor":
    """Meta q/k rows (pairs ``2i, 2i+1`` per head) -> HF rows (pairs ``i, i + head_dim/2``)."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, -1).transpose(1, 2).reshape(w.shape)


def rope_to_meta(w: "torch.Tensor", n_heads: int) -> "torch.Tensor":
    """Inverse of :func:`rope_to_hf`."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, head_dim // 2, -1).transpose(1, 2).reshape(w.shape)


# ---------------------------------------------------------------------------------------------
# file readers
class SafetensorsFile:
    """One ``.safetensors`` file: header parsed at open, tensors read on demand (no memory map)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        size = self.path.stat().st_size
        try:
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise ValueError("shorter than a safetensors header")
                (n,) = struct.unpack("<Q", head)
                if n > size - 8 or n > 256 << 20:
                    raise ValueError("header runs past the end of the file")
                header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(_corrupt(self.path, exc)) from None
        self.metadata = header.pop("__metadata__", None) or {}
        self._start = 8 + n
        self.entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        end = 0
        try:
            for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                b, e = (int(x) for x in info["data_offsets"])
                shape = tuple(int(s) for s in info["shape"])
                dtype = _ST_DTYPES[info["dtype"]]
                self.entries[name] = (dtype, shape, b, e)
                end = max(end, e)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(_corrupt(self.path, f"bad header entry {exc}")) from None
        if self._start + end > size:
            raise UserError(_corrupt(self.path, f"{size} bytes, the header promises {self._start + end}"))
        self._fh = None

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def dtype(self, name: str) -> "torch.dtype":
        import torch

        return getattr(torch, self.entries[name][0])

    def _readinto(self, buf: "torch.Tensor") -> None:
        view = memoryview(buf.numpy()).cast("B")
        got = 0
        while got < len(view):
            n = self._fh.readinto(view[got:])
            if not n:
                raise UserError(_corrupt(self.path, "unexpected end of file"))
            got += n

    def get(self, name: str, *, dtype: "torch.dtype | None" = None) -> "torch.Tensor":
        """Read one tensor; with ``dtype``, convert chunk by chunk (peak: the result + 64 MB)."""
        import torch

        sdt, shape, b, e = self.entries[name]
        src = getattr(torch, sdt)
        if self._fh is None:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - kept open between reads, closed in close()
        self._fh.seek(self._start + b)
        if dtype is None or dtype == src:
            buf = torch.empty(e - b, dtype=torch.uint8)
            self._readinto(buf)
            return buf.view(src).reshape(shape)
        out = torch.empty(shape, dtype=dtype)
        flat, item = out.view(-1), src.itemsize
        step = max(1, CHUNK_BYTES // item)
        buf = torch.empty(min(step, flat.numel()) * item, dtype=torch.uint8)
        for i in range(0, flat.numel(), step):
            n = min(step, flat.numel() - i)
            self._readinto(buf[: n * item])
            flat[i:i + n].copy_(buf[: n * item].view(src))
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def torch_load(path: Path) -> dict[str, Any]:
    """``torch.load`` a pickled checkpoint safely (``weights_only``, memory-mapped when possible)."""
    import pickle

    import torch

    def load(mmap: bool):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            obj = load(True)
        except RuntimeError as exc:
            if "mmap can only be used" not in str(exc):
                raise
            obj = load(False)  # pre-1.6 (non-zip) serialization cannot be memory-mapped
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise UserError(
                f"{path} contains pickled Python objects besides tensors, which could run code when loaded; "
                "refused (nothing was executed). Download the file again from the official repository, or use "
                "its .safetensors version") from None
        raise UserError(_corrupt(path, exc)) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as exc:
        raise UserError(_corrupt(path, exc)) from None
    if isinstance(obj, dict) and set(obj) in ({"state_dict"}, {"model"}):
        obj = next(iter(obj.values()))
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} holds no tensors; it is not a model or adapter checkpoint")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _fresh(t: "torch.Tensor", dtype: "torch.dtype | None") -> "torch.Tensor":
    """A tensor this process owns (never a view of a memory-mapped file)."""
    return t.to(dtype if dtype is not None else t.dtype, copy=True)


# ---------------------------------------------------------------------------------------------
class Checkpoint:
    """A model's tensors in HF naming. Use :func:`open_checkpoint`.

    Attributes:
        path: the folder (or file) opened.
        config: HF ``config.json`` dict (synthesized from ``params.json`` for Meta checkpoints).
        files: every file read (weights, index, config), for checksums and change detection.
        tokenizer_dir: folder holding the tokenizer files, or ``None``.
        format: ``safetensors``, ``bin`` or ``meta``.
    """

    def __init__(self, path: Path, config: dict, files: list[Path], fmt: str) -> None:
        self.path, self.config, self.files, self.format = path, config, files, fmt
        folder = path if path.is_dir() else path.parent
        self.tokenizer_dir = _tokenizer_dir(folder)
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
    """Pickled shards; at most one is loaded (memory-mapped) at a time."""

    def __init__(self, path: Path, config: dict, files: list[Path], shards: list[Path]) -> None:
        super().__init__(path, config, files, "bin")
        self._current: tuple[Path, dict] | None = None
        for s in shards:
            sd = torch_load(s)
            for k, v in sd.items():
                self._shapes[k], self._where[k] = tuple(v.shape), s
            del sd

    def get(self, name, *, dtype=None):
        shard = self._where[name]
        if self._current is None or self._current[0] != shard:
            self._current = None
            self._current = (shard, torch_load(shard))
        t = self._current[1][name]
        return _fresh(t, dtype) if dtype is not None else t

    def close(self):
        self._current = None


class _MetaCheckpoint(Checkpoint):
    """Meta ``consolidated.NN.pth`` shards: pieces concatenated, renamed, q/k permuted to HF order."""

    def __init__(self, path: Path, params: dict, files: list[Path], shards: list[Path]) -> None:
        self._parts = [torch_load(s) for s in shards]
        first = self._parts[0]
        self._meta: dict[str, str] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for k, v in first.items():
            hf = meta_to_hf_name(k)
            if hf is None:
                continue
            missing = [s.name for s, p in zip(shards, self._parts) if k not in p]
            if missing:
                raise UserError(f"{k} is missing from {', '.join(missing)}; the download is incomplete: download it again")
            dim, shape = meta_split_dim(k), list(v.shape)
            if dim is not None and len(self._parts) > 1:
                shape[dim] = sum(p[k].shape[dim] for p in self._parts)
            self._meta[hf], shapes[hf] = k, tuple(shape)
        super().__init__(path, _config_from_params(params, shapes), files, "meta")
        self.params = params
        self._shapes = shapes

    def get(self, name, *, dtype=None):
        import torch

        k = self._meta[name]
        dim = meta_split_dim(k)
        if dim is None or len(self._parts) == 1:
            t = self._parts[0][k]
            t = _fresh(t, dtype) if dtype is not None else t
        else:
            t = torch.cat([p[k] for p in self._parts], dim=dim)
            t = t.to(dtype) if dtype is not None else t
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = self.config["num_attention_heads" if "q_proj" in name else "num_key_value_heads"]
            t = rope_to_hf(t, heads).contiguous()
        return t

    def close(self):
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


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.model").is_file() or (folder / "tokenizer.json").is_file()


def _tokenizer_dir(folder: Path) -> Path | None:
    # Meta releases keep tokenizer.model beside the size folders
    return next((d for d in (folder, folder.parent) if _has_tokenizer(d)), None)


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


# ---------------------------------------------------------------------------------------------
# LoRA adapters
_LORA_KEY = re.compile(r"(?P<mod>.+)\.(?P<ab>lora_A|lora_B)(?:\.[\w-]+)?\.weight")
_LORA_EMB_KEY = re.compile(r"(?P<mod>.+)\.(?P<ab>lora_embedding_A|lora_embedding_B)(?:\.[\w-]+)?")
_SAVED_KEY = re.compile(r"(?P<mod>.+)\.modules_to_save\.[\w-]+\.(?P<p>weight|bias)")


@dataclass(frozen=True)
class LoraPair:
    """Keys of one LoRA pair in the adapter file and how to apply it to a base weight."""

    a: str
    b: str
    scaling: float
    transpose: bool  # fan_in_fan_out (Conv1D-style weights) or an embedding LoRA


class Adapter:
    """A PEFT LoRA folder. Use :func:`open_adapter`.

    Attributes:
        path: the folder.
        config: ``adapter_config.json`` as a dict.
        r, alpha, scaling: rank, ``lora_alpha`` and ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA).
        fan_in_fan_out: base weights stored transposed (GPT-2 ``Conv1D``).
        lora: HF weight name -> :class:`LoraPair`.
        saved: HF weight name -> key of its ``modules_to_save`` replacement in the adapter file.
        tokenizer_dir, tokenizer_vocab: the folder's tokenizer and its size (``None`` without one).
        files: files read (config, weights), for checksums.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        cfg_path = path / "adapter_config.json"
        if not cfg_path.is_file():
            raise UserError(f"{path} has no adapter_config.json, so it is not a complete LoRA folder; "
                            "download adapter_config.json from the LoRA's repository")
        self.config = cfg = read_json(cfg_path)
        if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
            raise UserError(f"{path} is a {cfg.get('peft_type')} adapter; only LoRA adapters can be merged")
        try:
            self.r = int(cfg["r"])
            self.alpha = float(cfg.get("lora_alpha", 8))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{cfg_path} lacks a valid 'r'; download it again") from None
        self.use_rslora = bool(cfg.get("use_rslora", False))
        self.fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
        self.scaling = self._scale(self.r, self.alpha)
        st, binf = path / "adapter_model.safetensors", path / "adapter_model.bin"
        if st.is_file():
            self._store: Any = SafetensorsFile(st)
            self.weights_file = st
        elif binf.is_file():
            self._store = torch_load(binf)
            self.weights_file = binf
        else:
            raise UserError(f"{path} has no adapter_model.safetensors or adapter_model.bin; download it again")
        self.files = [cfg_path, self.weights_file]
        self.lora: dict[str, LoraPair] = {}
        self.saved: dict[str, str] = {}
        self._parse_keys(list(self._store.keys()))
        self.tokenizer_dir = path if _has_tokenizer(path) else None
        self.tokenizer_vocab = tokenizer_vocab_size(path) if self.tokenizer_dir else None
        if self.tokenizer_dir:
            self.files += [path / f for f in TOKENIZER_FILES if (path / f).is_file()]

    def _scale(self, r: int, alpha: float) -> float:
        return alpha / (math.sqrt(r) if self.use_rslora else r)

    def _module_scale(self, module: str) -> float:
        def pick(pattern: dict, default: float) -> float:
            for key, value in (pattern or {}).items():
                if re.match(rf"(.*\.)?({key})$", module):
                    return float(value)
            return default

        r = pick(self.config.get("rank_pattern"), self.r)
        return self._scale(int(r), pick(self.config.get("alpha_pattern"), self.alpha))

    def _parse_keys(self, keys: list[str]) -> None:
        halves: dict[str, dict[str, str]] = {}
        for key in keys:
            k = key.removeprefix("base_model.model.")
            if m := (_LORA_KEY.fullmatch(k) or _LORA_EMB_KEY.fullmatch(k)):
                halves.setdefault(m["mod"], {})[m["ab"]] = key
            elif m := _SAVED_KEY.fullmatch(k):
                self.saved[f"{m['mod']}.{m['p']}"] = key
            elif ".original_module." in k:
                continue
            elif "lora_magnitude_vector" in k:
                raise UserError(f"{self.path} is a DoRA adapter; merging DoRA is not supported")
            elif k.endswith((".weight", ".bias")):  # old PEFT: modules_to_save saved under the plain name
                self.saved[k] = key
        for mod, ab in halves.items():
            emb = "lora_embedding_A" in ab or "lora_embedding_B" in ab
            a, b = (ab.get("lora_embedding_A"), ab.get("lora_embedding_B")) if emb else (ab.get("lora_A"), ab.get("lora_B"))
            if a is None or b is None:
                raise UserError(_corrupt(self.weights_file, f"{mod} has only half of its LoRA pair"))
            self.lora[f"{mod}.weight"] = LoraPair(a, b, self._module_scale(mod), emb or self.fan_in_fan_out)

    def key_shape(self, key: str) -> tuple[int, ...]:
        s = self._store
        return s.shape(key) if isinstance(s, SafetensorsFile) else tuple(s[key].shape)

    def _get(self, key: str, dtype: "torch.dtype") -> "torch.Tensor":
        s = self._store
        return s.get(key, dtype=dtype) if isinstance(s, SafetensorsFile) else _fresh(s[key], dtype)

    def delta_shape(self, name: str) -> tuple[int, ...]:
        """Shape of the weight the LoRA pair for ``name`` adds to."""
        p = self.lora[name]
        a, b = self.key_shape(p.a), self.key_shape(p.b)
        return (a[1], b[0]) if p.transpose else (b[0], a[1])

    def saved_shape(self, name: str) -> tuple[int, ...]:
        return self.key_shape(self.saved[name])

    def get_saved(self, name: str) -> "torch.Tensor":
        """The ``modules_to_save`` replacement for ``name``, as a fresh float32 tensor."""
        import torch

        return self._get(self.saved[name], torch.float32)

    def add_delta(self, w: "torch.Tensor", name: str) -> None:
        """``w += scaling * B @ A`` in place (transposed for fan_in_fan_out / embedding LoRAs)."""
        import torch

        p = self.lora[name]
        a, b = self._get(p.a, torch.float32), self._get(p.b, torch.float32)
        if p.transpose:
            w.addmm_(a.t(), b.t(), alpha=p.scaling)
        else:
            w.addmm_(b, a, alpha=p.scaling)

    @property
    def embed_rows(self) -> int | None:
        """Rows of the saved embeddings (or lm_head): the LoRA's vocabulary, ``None`` if it saves neither."""
        for n in ("model.embed_tokens.weight", "lm_head.weight"):
            if n in self.saved:
                return self.saved_shape(n)[0]
        return None

    def close(self) -> None:
        if isinstance(self._store, SafetensorsFile):
            self._store.close()
        self._store = {}


def open_adapter(path: str | Path) -> Adapter:
    """Open a PEFT LoRA folder (``adapter_config.json`` + ``adapter_model.{safetensors,bin}``).

    Raises:
        UserError: missing config or weights, pickled code in ``adapter_model.bin``, a corrupt file.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"LoRA folder {path} not found")
    return Adapter(path)


def tokenizer_vocab_size(folder: str | Path) -> int | None:
    """Number of token ids of the tokenizer in ``folder`` (sentencepiece + added tokens, or tokenizer.json)."""
    folder = Path(folder)
    ids: list[int] = []
    sp = folder / "tokenizer.model"
    n = 0
    if sp.is_file():
        from .vocab import piece_count

        try:
            n = piece_count(sp)
        except UserError:
            n = 0  # Llama-3's Meta tokenizer.model is tiktoken text, not sentencepiece
    if n:
        ids += [int(i) for i in read_json(folder / "added_tokens.json", default={}).values()]
        ids += [int(i) for i in (read_json(folder / "tokenizer_config.json", default={}).get("added_tokens_decoder") or {})]
        return max([n, *(i + 1 for i in ids)])
    tj = folder / "tokenizer.json"
    if tj.is_file():
        data = read_json(tj)
        ids += list(((data.get("model") or {}).get("vocab") or {}).values())
        ids += [int(t["id"]) for t in data.get("added_tokens") or []]
        return max(ids) + 1 if ids else None
    return None
