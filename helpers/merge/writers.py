"""Sinks that stream merged tensors to Hugging Face safetensors shards or Meta ``.pth`` files.

Both implement :class:`helpers.checkpoint.TensorSink`. They build the output in a hidden sibling folder
``.<out>.partial`` and rename it to ``<out>`` only when every file is complete. A small
``.merge-state.json`` in that folder records what is already on disk, so a rerun after an
interruption skips finished work (:meth:`done`) instead of recomputing it.

* :class:`HFSink`: shard boundaries and every safetensors header are known from the tensors, so each
  shard is written front to back as tensors arrive (peak memory: one tensor); a finished shard is
  renamed into place and recorded, an unfinished one is redone on resume.
* :class:`PthSink`: Meta's layout (``consolidated.NN.pth`` + ``params.json``): q/k permuted back to
  Meta's interleaved RoPE order, split into tensor-parallel shards. Each piece is staged as a raw
  file; at the end every shard is pickled by ``torch.save`` from memory-mapped pieces.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoint import TensorSpec, rope_to_meta
from ..checkpoint.names import hf_to_meta_name, meta_split_dim
from ..tokens import tokenizer_files
from ..util import (UserError, atomic_path, fault_point, partial_path, remove, tmp_name, write_json,
                    write_sha256_listing)

if TYPE_CHECKING:
    import torch

DEFAULT_SHARD_BYTES = 2 << 30
MERGE_STATE = ".merge-state.json"  # what a partial HF / .pth output holds already, for a resume
WRITE_CHUNK_ELEMENTS = 16 << 20  # values converted to the output dtype at a time
META_SHARDS = {4096: 1, 5120: 2, 6656: 4, 8192: 8}  # hidden size -> tensor-parallel shards of the releases
_ST_CODE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def write_tensor(fh, t: "torch.Tensor", dtype: "torch.dtype") -> int:
    """Write ``t`` converted to ``dtype`` as raw little-endian bytes, chunk by chunk; return the byte count."""
    import torch

    flat = t.contiguous().view(-1)
    for i in range(0, flat.numel(), WRITE_CHUNK_ELEMENTS):
        c = flat[i:i + WRITE_CHUNK_ELEMENTS].to(dtype).contiguous()
        fh.write(memoryview(c.view(torch.uint8).numpy()))
    fault_point("merge.write")
    return flat.numel() * dtype.itemsize


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _FolderSink:
    """Shared machinery: the hidden work folder, the resume state, the final rename."""

    def __init__(self, out_dir: str | Path, *, dtype: str, job: str, sha256: bool,
                 extra_json: dict[str, Any] | None) -> None:
        import torch

        if dtype not in _ST_CODE:
            raise UserError(f"unsupported dtype {dtype!r}; use one of {', '.join(_ST_CODE)}")
        self.final = Path(out_dir)
        self.partial = partial_path(self.final)
        self.dtype_name, self.dtype = dtype, getattr(torch, dtype)
        self.job, self.sha256, self.extra_json = job, sha256, dict(extra_json or {})
        self.state: dict[str, Any] = {}
        self._fh = None
        self._fh_path: Path | None = None

    def _begin(self, layout: Any, tokenizer_dir: Path | None) -> None:
        key = _digest([self.job, layout])
        state_path = self.partial / MERGE_STATE
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = None
        if not isinstance(state, dict) or state.get("key") != key:
            if self.partial.exists():
                remove(self.partial)  # left by another job: start over
            state = {"key": key}
        for stale in self.partial.glob("**/*.tmp*") if self.partial.is_dir() else ():
            remove(stale)  # files a killed run was writing (shards, staged pieces, the state's temporary)
        self.partial.mkdir(parents=True, exist_ok=True)
        self.state = state
        self._save_state()
        if tokenizer_dir is not None:
            for f in tokenizer_files(tokenizer_dir):
                shutil.copyfile(f, self.partial / f.name)

    def _save_state(self) -> None:
        write_json(self.partial / MERGE_STATE, self.state)

    def _open_tmp(self, final: Path):
        self._fh_path = final.with_name(final.name + ".tmp")
        self._fh = open(self._fh_path, "wb")  # noqa: SIM115 - closed in _commit or abort
        return self._fh

    def _commit(self, final: Path) -> None:
        fh, self._fh = self._fh, None
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        os.replace(self._fh_path, final)
        self._fh_path = None

    def _finish(self) -> list[Path]:
        for name, data in self.extra_json.items():
            if isinstance(data, str):  # a text file (chat_template.jinja)
                with atomic_path(self.partial / name) as tmp:
                    tmp.write_text(data, encoding="utf-8")
            else:
                write_json(self.partial / name, data)
        (self.partial / MERGE_STATE).unlink(missing_ok=True)
        if self.sha256:
            files = [p for p in self.partial.iterdir() if p.is_file() and p.name != "SHA256SUMS"]
            write_sha256_listing(files, self.partial / "SHA256SUMS")
        fault_point("merge.finish")
        if self.final.exists():  # --overwrite: swap, then drop the old output
            trash = tmp_name(self.final)
            os.replace(self.final, trash)
            os.replace(self.partial, self.final)
            remove(trash)
        else:
            os.replace(self.partial, self.final)
        return sorted(p for p in self.final.iterdir() if p.is_file())

    def abort(self, *, keep_partial: bool = True) -> None:
        """Drop the file being written; finished pieces and the state stay for a resume unless ``keep_partial``
        is false (then the whole partial folder goes)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._fh_path is not None:
            self._fh_path.unlink(missing_ok=True)
            self._fh_path = None
        if not keep_partial:
            remove(self.partial)


class HFSink(_FolderSink):
    """Hugging Face layout: ``model-0000i-of-0000N.safetensors`` + index (``model.safetensors`` when
    one shard suffices), ``config.json`` and the tokenizer files; loadable without PEFT.

    Args:
        out_dir: the final folder.
        max_shard_bytes: shard size limit (a single larger tensor gets its own shard).
        dtype: ``float16``, ``bfloat16`` or ``float32``.
        job: identity of the merge job; a partial folder from another job is discarded.
        sha256: write a ``SHA256SUMS`` listing of the outputs.
        extra_json: more files to write: JSON data (``generation_config.json``, ``merge.json``...), or text given
            as a str (``chat_template.jinja``).
    """

    def __init__(self, out_dir: str | Path, *, max_shard_bytes: int = DEFAULT_SHARD_BYTES, dtype: str = "float16",
                 job: str = "", sha256: bool = True, extra_json: dict[str, Any] | None = None,
                 config_updates: dict[str, Any] | None = None) -> None:
        super().__init__(out_dir, dtype=dtype, job=job, sha256=sha256, extra_json=extra_json)
        self.max_shard_bytes = int(max_shard_bytes)
        self.config_updates = dict(config_updates or {})  # what serving needs beyond the base's config.json
        self.shards: list[tuple[str, list[TensorSpec]]] = []

    def open(self, *, config: dict, tokenizer_dir: Path | None, tensors: list[TensorSpec]) -> None:
        item = self.dtype.itemsize
        groups: list[list[TensorSpec]] = []
        size = 0
        for tp in tensors:
            if not groups or (size + tp.numel * item > self.max_shard_bytes and groups[-1]):
                groups.append([])
                size = 0
            groups[-1].append(tp)
            size += tp.numel * item
        n = len(groups)
        names = ["model.safetensors"] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
        self.shards = list(zip(names, groups))
        self._shard_of = {tp.name: i for i, (_, g) in enumerate(self.shards) for tp in g}
        self._begin([self.dtype_name, [(f, [(t.name, t.shape) for t in g]) for f, g in self.shards]], tokenizer_dir)
        done = self.state.setdefault("shards", {})
        for fname in list(done):
            if not (self.partial / fname).is_file() or (self.partial / fname).stat().st_size != done[fname]:
                del done[fname]
        cfg = {**config, **self.config_updates}
        cfg.pop("dtype", None)  # transformers 5's name for it; torch_dtype is read by old and new versions
        cfg["torch_dtype"] = self.dtype_name
        write_json(self.partial / "config.json", cfg)
        self._cur: int | None = None
        self._k = 0

    def done(self, name: str) -> bool:
        return self.shards[self._shard_of[name]][0] in self.state["shards"]

    def resume_until(self, count: int) -> None:
        """Forget the finished shards holding any tensor past the first ``count`` (:class:`TensorSink`)."""
        seen = 0
        for fname, group in self.shards:
            seen += len(group)
            if seen > count:
                self.state["shards"].pop(fname, None)
        self._save_state()

    def _header(self, group: list[TensorSpec]) -> bytes:
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        off, item = 0, self.dtype.itemsize
        for tp in group:
            header[tp.name] = {"dtype": _ST_CODE[self.dtype_name], "shape": list(tp.shape),
                               "data_offsets": [off, off + tp.numel * item]}
            off += tp.numel * item
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        return struct.pack("<Q", len(raw)) + raw

    def write(self, name: str, tensor: "torch.Tensor") -> None:
        i = self._shard_of[name]
        fname, group = self.shards[i]
        if self._cur != i:
            if self._fh is not None or group[0].name != name:
                raise RuntimeError(f"HFSink: tensors must arrive in layout order (got {name})")
            self._open_tmp(self.partial / fname).write(self._header(group))
            self._cur, self._k = i, 0
        tp = group[self._k]
        if tp.name != name or tuple(tensor.shape) != tp.shape:
            raise RuntimeError(f"HFSink: expected {tp.name} {tp.shape}, got {name} {tuple(tensor.shape)}")
        write_tensor(self._fh, tensor, self.dtype)
        self._k += 1
        if self._k == len(group):
            self._commit(self.partial / fname)
            self.state["shards"][fname] = (self.partial / fname).stat().st_size
            self._save_state()
            self._cur = None

    def close(self) -> list[Path]:
        missing = [f for f, _ in self.shards if f not in self.state["shards"]]
        if missing:
            raise RuntimeError(f"HFSink: shards never completed: {', '.join(missing)}")
        if len(self.shards) > 1:
            item = self.dtype.itemsize
            write_json(self.partial / "model.safetensors.index.json", {
                "metadata": {"total_size": sum(t.numel * item for _, g in self.shards for t in g)},
                "weight_map": {t.name: f for f, g in self.shards for t in g}})
        return self._finish()


def _ffn_params(dim: int, hidden: int) -> tuple[int, float | None]:
    """``multiple_of`` (and ``ffn_dim_multiplier``) for which Meta's FFN-size formula gives ``hidden``."""
    base = int(2 * 4 * dim / 3)
    for mult in (None, 1.3, 1.5, 2.0):
        h = int(mult * base) if mult else base
        for mo in (256, 1024, 4096, 512, 2048, 128, 64, 32):
            if mo * -(-h // mo) == hidden:
                return mo, mult
    return 1, (hidden + 0.5) / base


def meta_params(config: dict) -> dict:
    """Meta ``params.json`` for an HF LLaMA config."""
    dim, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    kv = int(config.get("num_key_value_heads") or heads)
    mo, mult = _ffn_params(dim, int(config["intermediate_size"]))
    params: dict[str, Any] = {"dim": dim, "multiple_of": mo, "n_heads": heads,
                              "n_layers": int(config["num_hidden_layers"]),
                              "norm_eps": float(config.get("rms_norm_eps", 1e-6)), "vocab_size": -1}
    if mult is not None:
        params["ffn_dim_multiplier"] = mult
    if kv != heads:
        params["n_kv_heads"] = kv
    theta = float(config.get("rope_theta") or 10000.0)
    if theta != 10000.0:
        params["rope_theta"] = theta
    return params


class PthSink(_FolderSink):
    """Meta layout: ``consolidated.NN.pth`` tensor-parallel shards + ``params.json`` + tokenizer.

    Args:
        out_dir: the final folder.
        n_shards: tensor-parallel shards; default as the releases (hidden 4096: 1, 5120: 2, 6656: 4,
            8192: 8; anything else: 1).
        dtype, job, sha256, extra_json: as for :class:`HFSink`.
    """

    def __init__(self, out_dir: str | Path, *, n_shards: int | None = None, dtype: str = "float16",
                 job: str = "", sha256: bool = True, extra_json: dict[str, Any] | None = None) -> None:
        super().__init__(out_dir, dtype=dtype, job=job, sha256=sha256, extra_json=extra_json)
        self.n_shards = n_shards

    def open(self, *, config: dict, tokenizer_dir: Path | None, tensors: list[TensorSpec]) -> None:
        self.n = int(self.n_shards or META_SHARDS.get(int(config["hidden_size"]), 1))
        if self.n < 1:
            raise UserError("the number of .pth shards must be at least 1")
        self.heads = int(config["num_attention_heads"])
        self.kv_heads = int(config.get("num_key_value_heads") or self.heads)
        self.tensors = tensors
        self.meta: dict[str, str] = {}
        for tp in tensors:
            m = hf_to_meta_name(tp.name)
            if m is None:
                raise UserError(f"{tp.name} has no place in Meta's .pth layout; use --format hf or gguf")
            dim = meta_split_dim(m)
            if dim is not None and tp.shape[dim] < self.n:
                raise UserError(f"{tp.name} {list(tp.shape)} cannot be split into {self.n} shards")
            self.meta[tp.name] = m
        self.params = meta_params(config)
        self._begin([self.dtype_name, self.n, [(t.name, t.shape) for t in tensors]], tokenizer_dir)
        self.staging = self.partial / "staging"
        self.state.setdefault("staged", [])
        self.state.setdefault("assembled", [])
        self._staged = {n for n in self.state["staged"]
                        if all(self._piece(i, n).is_file() for i in range(self.n))}

    def _piece(self, shard: int, name: str) -> Path:
        return self.staging / f"{shard:02d}" / f"{self.meta[name]}.raw"

    def _pieces(self, name: str, t: "torch.Tensor") -> list["torch.Tensor"]:
        import torch

        m = self.meta[name]
        if m.endswith(("attention.wq.weight", "attention.wk.weight")):
            t = rope_to_meta(t, self.heads if ".wq." in m else self.kv_heads)
        dim = meta_split_dim(m)
        return [t] * self.n if dim is None else list(torch.tensor_split(t, self.n, dim=dim))

    def done(self, name: str) -> bool:
        return name in self._staged

    def resume_until(self, count: int) -> None:
        """Forget the staged tensors past the first ``count`` (:class:`TensorSink`)."""
        later = {tp.name for tp in self.tensors[count:]}
        self._staged -= later
        self.state["staged"] = [n for n in self.state["staged"] if n not in later]
        self._save_state()

    def write(self, name: str, tensor: "torch.Tensor") -> None:
        for i, piece in enumerate(self._pieces(name, tensor)):
            path = self._piece(i, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_tensor(self._open_tmp(path), piece, self.dtype)
            self._commit(path)
        self._staged.add(name)
        self.state["staged"].append(name)
        self._save_state()

    def _piece_shape(self, name: str, shard: int) -> tuple[int, ...]:
        shape = list(self.tensors[self._index[name]].shape)
        dim = meta_split_dim(self.meta[name])
        if dim is not None:
            q, r = divmod(shape[dim], self.n)
            shape[dim] = q + (1 if shard < r else 0)  # torch.tensor_split's sizes
        return tuple(shape)

    def close(self) -> list[Path]:
        import torch

        missing = [tp.name for tp in self.tensors if tp.name not in self._staged]
        if missing:
            raise RuntimeError(f"PthSink: tensors never written: {', '.join(missing[:5])}")
        self._index = {tp.name: i for i, tp in enumerate(self.tensors)}
        for i in range(self.n):
            final = self.partial / f"consolidated.{i:02d}.pth"
            if final.name in self.state["assembled"] and final.is_file():
                continue
            sd = {}
            for tp in self.tensors:
                shape = self._piece_shape(tp.name, i)
                sd[self.meta[tp.name]] = torch.from_file(str(self._piece(i, tp.name)), shared=False,
                                                         size=math.prod(shape), dtype=self.dtype).view(shape)
            self._fh_path = final.with_name(final.name + ".tmp")
            torch.save(sd, self._fh_path)
            del sd
            os.replace(self._fh_path, final)
            self._fh_path = None
            self.state["assembled"].append(final.name)
            self._save_state()
            fault_point("merge.assemble")
        write_json(self.partial / "params.json", self.params)
        remove(self.staging)
        return self._finish()
