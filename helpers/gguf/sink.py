"""The GGUF writer: :class:`GGUFSink` streams float32 tensors in Hugging Face naming into a GGUF file.

Memory stays at about one tensor. At ``f32`` / ``f16`` / ``bf16`` the file matches what llama.cpp's
``convert_hf_to_gguf.py`` writes for ``LlamaForCausalLM``:

- tensor names from :func:`gguf.get_tensor_name_map` (``blk.N.attn_q``, ``ffn_down``, ``token_embd``, ``output``);
- q/k rows reordered from Hugging Face's rotate-half RoPE layout to llama.cpp's interleaved one
  (k with the number of key/value heads, for grouped-query attention);
- 1-D tensors and norms in F32, the rest in the chosen type;
- the same hyper-parameter keys (:mod:`.hparams`), ``general.file_type`` and quantization version;
- the vocabulary (:mod:`.vocab`).

At a llama.cpp quantization type (``q4_k_m``, ``q8_0``, ``iq4_xs`` ...) each tensor is quantized in memory as
it arrives (in the background, while the next one is computed), with llama.cpp's kernels (:mod:`.ggml`) and
its per-tensor type rules (:mod:`.quant_rules`), from the values an F16 GGUF would hold, and written into its
slot in llama.cpp's tensor order, with the metadata in llama.cpp's key order: the file is byte for byte the
one llama.cpp's quantizer makes from this writer's F16 output (with an importance matrix, the
``quantize.imatrix.*`` keys the llama-quantize tool adds are written too), without that F16 file ever being
written.

On top of the converter it writes the chat template of the model's generation, ``<|eot_id|>`` as the
end-of-turn token, and the long-context RoPE scaling the catalog knows, all from the :class:`ModelCard` the
caller passes.

The file is built in ``.<name>.partial/`` beside the output (:class:`PartialGGUF`), which records how far it
is complete. Reopened for the same job (same inputs, type, importance matrix, metadata), the sink goes on
from there and reports the tensors already written as :meth:`done`; a partial folder of another job is
discarded. Split output (``split_max_size``) resumes the same way.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..checkpoint import TensorSpec, rope_to_meta
from ..util import UserError, partial_path, remove
from .card import ModelCard
from .export import write_checksum
from .hparams import add_hparams
from .layout import ALIGNMENT, gguf_names, tensor_nbytes, tensor_types
from .imatrix import add_imatrix_keys, imatrix_weights, read_imatrix
from .partial import PartialGGUF, render_headers
from .types import FLOAT_TYPES, FTYPES, gguf_outtype
from .vocab import add_tokenizer

if TYPE_CHECKING:
    import torch

def permute_qk(w: "torch.Tensor", n_head: int) -> "torch.Tensor":
    """Reorder q/k projection rows from HF's rotate-half RoPE layout to llama.cpp's interleaved layout.

    Within each head, HF keeps the first and second halves of the rotary pairs apart; llama.cpp expects
    them interleaved. ``n_head`` is the number of heads the rows belong to (key/value heads for k).
    """
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise UserError(f"cannot reorder a q/k projection of {rows} rows into {n_head} heads; check the config")
    return rope_to_meta(w, n_head)  # llama.cpp's interleaved order is Meta's


class _Entry(NamedTuple):
    hf: str  # name in the layout
    name: str  # GGUF name ("" for buffers that are not written)
    qtype: Any  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]
    shard: int  # which file
    offset: int  # where its data goes in that file
    imatrix: Any  # importance weights for this tensor (numpy) or None


def _layout(headers: list[bytes], slots: list[dict[str, int]]) -> tuple[dict[str, tuple[int, int]], list[int]]:
    """Where each tensor's data starts (``{name: (shard, offset)}``) and each shard's size, from the rendered headers
    and the tensors' byte counts in order (each padded to the GGUF alignment)."""
    where, sizes = {}, []
    for i, (header, shard) in enumerate(zip(headers, slots)):
        offset = len(header)
        for n, nbytes in shard.items():
            where[n] = (i, offset)
            offset += nbytes + (-nbytes % ALIGNMENT)
        sizes.append(offset)
    return where, sizes


class GGUFSink:
    """A :class:`helpers.checkpoint.TensorSink` that streams tensors into one GGUF file (architecture ``llama``).

    Args:
        out_path: the final ``.gguf`` path (shards, if any, are named ``<stem>-00001-of-0000N.gguf``).
        outtype: ``f32``, ``f16``, ``bf16``, or any llama.cpp quantization type (``q8_0``, ``q4_k_m``,
            ``q6_k``, ...; ``iq*`` and ``q2_k_s`` need ``imatrix``).
        card: name, chat template and catalog RoPE scaling (:func:`helpers.gguf.card.describe_model`).
        split_max_size: start a new shard before this many bytes of tensor data (0: one file).
        sha256: write ``<file>.sha256`` beside each finished file.
        imatrix: an importance matrix (llama-imatrix's output, GGUF tensor names) for the quantized types.
        job: identity of the job (inputs and settings); a partial output of another job is not resumed.
        threads: quantization threads (default: every core this process may use).

    Raises:
        UserError: an unknown type, or a type that needs an importance matrix without one.
    """

    def __init__(self, out_path: str | Path, *, outtype: str = "f16", card: ModelCard | None = None,
                 split_max_size: int = 0, sha256: bool = False, imatrix: str | Path | None = None, job: str = "",
                 threads: int | None = None) -> None:
        self.out_path = Path(out_path)
        self.outtype = gguf_outtype(outtype, imatrix=imatrix is not None)
        self.quantized = self.outtype not in FLOAT_TYPES
        if imatrix is not None and not self.quantized:
            raise UserError(f"an importance matrix is used only when quantizing; {self.outtype} takes none")
        self.card = card or ModelCard()
        self.split_max_size = int(split_max_size)
        self.sha256 = sha256
        self.job = job
        self.threads = threads
        self.imatrix_path = Path(imatrix) if imatrix is not None else None
        self._imatrix_name = os.fspath(imatrix) if imatrix is not None else ""  # as given, for quantize.imatrix.file
        self._imatrix: dict | None = None
        if self.imatrix_path is not None:
            self._imatrix = read_imatrix(self.imatrix_path)
        if self.quantized:
            from .ggml import ggml_library

            ggml_library()  # llama-cpp-python missing: say so before anything is written
        self.partial: Path = partial_path(self.out_path)
        self._entries: list[_Entry] = []
        self._index: dict[str, int] = {}
        self._files: PartialGGUF | None = None
        self._names: list[str] = []  # file name of each shard
        self._resumed = 0
        self._pos = 0
        self._pending: Any = None  # the tensor being quantized in the background (a Future)
        self._worker: Any = None
        self._heads = (0, 0)

    # ------------------------------------------------------------------ TensorSink protocol
    def open(self, *, config: dict, tokenizer_dir: Path, tensors: list[TensorSpec]) -> None:
        """Plan every tensor's type, then write the header, metadata and tensor infos, or resume an interrupted
        file of the same job; tensors follow through :meth:`write`."""
        import gguf

        n_layers, vocab_size = self._check_config(config)
        names, embed_rows = gguf_names(tensors, n_layers)
        vocab_size = vocab_size or embed_rows or 0
        if embed_rows is not None and embed_rows != vocab_size:
            raise UserError(f"config vocab_size {vocab_size} differs from the {embed_rows} rows of embed_tokens; "
                            "fix config.json (the merge sets it from the tokenizer)")
        types = tensor_types(tensors, names, self.outtype, n_layers=n_layers, n_head=self._heads[0], n_kv=self._heads[1],
                             has_imatrix=self._imatrix is not None)
        w = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA], split_max_size=self.split_max_size)
        self._add_metadata(w, config, tokenizer_dir, n_layers, vocab_size)
        order = self._add_tensor_infos(w, tensors, names, types)
        imatrix = self._add_quantization(w, order, types) if self.quantized else {}
        self._names = [p.name for p in w.format_shard_names(Path(self.out_path.name))]
        slots = [{n: ti.nbytes for n, ti in shard.items()} for shard in w.tensors]  # before the writer forgets them
        headers = render_headers(w, self.partial, self.out_path.name)
        where, sizes = _layout(headers, slots)
        self._entries = [_Entry(p.name, new, types.get(new), tuple(p.shape), *where.get(new, (0, 0)), imatrix.get(new))
                         for p, new in zip(tensors, names)]
        self._index = {e.hf: i for i, e in enumerate(self._entries)}
        self._files = PartialGGUF(self.partial, self._names, headers, sizes, self._key(headers))
        self._pos = self._resumed = self._files.done

    def _check_config(self, config: dict) -> tuple[int, int]:
        """Refuse what is not a LLaMA config; returns the layers and the vocabulary (and keeps the heads)."""
        arch = (config.get("architectures") or [""])[0]
        if config.get("model_type") not in (None, "llama") and arch not in ("LlamaForCausalLM", "LLaMAForCausalLM"):
            what = arch or config.get("model_type")
            raise UserError(f"GGUF export supports LLaMA-architecture models; this config is {what!r}")
        n_head = int(config["num_attention_heads"])
        self._heads = (n_head, int(config.get("num_key_value_heads") or n_head))
        return int(config["num_hidden_layers"]), int(config.get("vocab_size") or 0)

    def _add_metadata(self, w: Any, config: dict, tokenizer_dir: Path, n_layers: int, vocab_size: int) -> None:
        """The header's keys: name, hyper-parameters, the card's extra keys, the file type, the tokenizer."""
        import gguf

        card = self.card
        w.add_type(gguf.GGUFType.MODEL)
        w.add_name(card.name or self.out_path.stem)
        add_hparams(w, config, n_layers, *self._heads, vocab_size, card)
        for key, value in card.extra_metadata.items():  # e.g. the merge's job record
            w.add_string(key, value)
        if not self.quantized:  # the converter's place for them; llama.cpp's quantizer moves them to the end
            w.add_file_type(FTYPES[self.outtype])
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_tokenizer(w, Path(tokenizer_dir), vocab_size=vocab_size, config=config, template=card.template,
                      template_explicit=card.template_explicit)

    def _add_tensor_infos(self, w: Any, tensors: list[TensorSpec], names: list[str], types: dict) -> list:
        """Every written tensor's info, in the order llama.cpp's converter (or its quantizer) writes them."""
        import gguf
        import numpy as np

        order = [(p, new) for p, new in zip(tensors, names) if new]
        if self.quantized:  # llama.cpp's quantizer writes the tensors sorted (by block, then name): so do we
            from .quant_rules import order_key

            order.sort(key=lambda item: order_key(item[1]))
        for p, new in order:
            w.add_tensor_info(new, p.shape, np.dtype(np.float32), tensor_nbytes(p.shape, types[new]),
                              raw_dtype=types[new])
        total = sum(p.numel for p, _ in order)
        w.add_size_label(gguf.size_label(total, total, 0, 0))
        return order

    def _add_quantization(self, w: Any, order: list, types: dict) -> dict:
        """The quantized types' checks and keys (as llama.cpp's quantizer writes them, at the end); returns the
        importance-matrix weights of each tensor."""
        import gguf

        from .ggml import check_type

        for qtype in set(types.values()):
            check_type(int(qtype))
        imatrix = imatrix_weights(self._imatrix, [(n, p.shape, types[n]) for p, n in order], self.outtype)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_file_type(FTYPES[self.outtype])
        if self._imatrix is not None:
            add_imatrix_keys(w, self._imatrix_name, len(self._imatrix))
        return imatrix

    def done(self, name: str) -> bool:
        """True for the tensors an interrupted run of the same job already wrote (they come first in the layout)."""
        return self._index[name] < self._resumed

    def resume_until(self, count: int) -> None:
        """At most the first ``count`` tensors count as written by the earlier run (:class:`TensorSink`)."""
        if self._files is None:
            raise RuntimeError("GGUFSink.resume_until called before open")
        self._files.rewind(count)
        self._pos = self._resumed = self._files.done

    def write(self, name: str, tensor: "torch.Tensor") -> None:
        """Convert one tensor (permute q/k, cast or quantize), write it into its slot and record it.

        A tensor to quantize is quantized in the background while the caller computes the next one (at most one
        at a time, so memory holds two tensors); the sink keeps a reference to ``tensor`` until then.
        """
        import gguf

        e = self._next(name)
        if e.name:
            t = self._rows_of(e, tensor, None)
            if name.endswith(("q_proj.weight", "q_proj.bias")):
                t = permute_qk(t, self._heads[0])
            elif name.endswith(("k_proj.weight", "k_proj.bias")):
                t = permute_qk(t, self._heads[1])
            T = gguf.GGMLQuantizationType
            if e.qtype not in (T.F32, T.F16, T.BF16):
                self._wait()
                self._pending = self._background().submit(self._quantize, e, t)
                self._pos += 1
                return
            out = self._convert(e, t)
            del t
            self._wait()
            self._files.put(e.shard, e.offset, out)
        else:
            self._wait()
        self._pos += 1
        self._files.advance()

    def write_rows(self, name: str, first: int, rows: "torch.Tensor", *, last: bool) -> None:
        """Write rows ``[first, first + len(rows))`` of the tensor :meth:`write` expects next, converted as the whole
        tensor would be (every type converts and quantizes each row on its own); with ``last`` the tensor is
        complete. For a large tensor whose rows arrive one part at a time (a LoRA's saved head while it downloads);
        not for the q/k projections, whose rows are reordered."""
        e = self._next(name)
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            raise RuntimeError(f"GGUFSink.write_rows: {name}'s rows are reordered; write it whole")
        self._wait()
        if e.name:
            at = e.offset + first * tensor_nbytes(e.shape[1:], e.qtype)
            self._files.put(e.shard, at, self._convert(e, self._rows_of(e, rows, first)), pad=False)
        if last:
            self._pos += 1
            self._files.advance()

    def _next(self, name: str) -> _Entry:
        """The entry of the tensor expected now (tensors come in layout order)."""
        if self._files is None:
            raise RuntimeError("GGUFSink.write called before open")
        if self._pos >= len(self._entries) or self._entries[self._pos].hf != name:
            want = self._entries[self._pos].hf if self._pos < len(self._entries) else "nothing"
            raise RuntimeError(f"GGUFSink got {name!r}, expected {want!r} (tensors must come in layout order)")
        return self._entries[self._pos]

    @staticmethod
    def _rows_of(e: _Entry, tensor: "torch.Tensor", first: int | None) -> "torch.Tensor":
        """``tensor`` as float32 on the CPU, checked against the layout: the whole tensor (``first`` None), or rows
        from ``first``."""
        import torch

        t = tensor.detach().to("cpu", torch.float32)
        fits = (tuple(t.shape) == e.shape if first is None
                else tuple(t.shape[1:]) == e.shape[1:] and first + t.shape[0] <= e.shape[0])
        if not fits:
            raise UserError(f"tensor {e.hf} has shape {tuple(t.shape)}, the layout said {e.shape}")
        return t

    def _convert(self, e: _Entry, t: "torch.Tensor") -> Any:
        """The bytes of ``t`` (float32, converted as :meth:`write` converts) in ``e``'s type."""
        import gguf
        import torch

        from .ggml import quantize

        T = gguf.GGMLQuantizationType
        if e.qtype == T.F32:
            return t.contiguous().numpy()
        if e.qtype == T.F16:  # torch's cast is several times faster than numpy's
            return t.to(torch.float16).contiguous().numpy()
        if e.qtype == T.BF16:
            return gguf.quants.quantize(t.contiguous().numpy(), e.qtype)
        return quantize(t.reshape(-1, e.shape[-1]), int(e.qtype), imatrix=e.imatrix, via_f16=True,
                        threads=self.threads)

    def _quantize(self, e: _Entry, t: "torch.Tensor") -> None:
        """Quantize one tensor with llama.cpp's kernels from its float16 values, write and record it."""
        out = self._convert(e, t)
        del t
        self._files.put(e.shard, e.offset, out)
        self._files.advance()

    def _background(self):
        if self._worker is None:
            from concurrent.futures import ThreadPoolExecutor

            self._worker = ThreadPoolExecutor(1, thread_name_prefix="gguf-sink")
        return self._worker

    def _wait(self) -> None:
        """Wait for the tensor being quantized in the background (its error, if any, is raised here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> list[Path]:
        """Finish the file(s), move them to their final names and write their checksums when asked; returns the
        GGUF paths (first shard first)."""
        if self._files is None:
            raise RuntimeError("GGUFSink.close called before open")
        self._wait()
        missing = [e.hf for e in self._entries[self._pos:] if e.name]
        if missing:
            self.abort(keep_partial=False)
            raise RuntimeError(f"GGUFSink closed with {len(missing)} tensors not written (first: {missing[0]})")
        finals = self._files.finish(self.out_path.parent)
        self._files = None
        self._stop_worker()
        if self.sha256:
            for f in finals:
                write_checksum(f)
        return finals

    def abort(self, *, keep_partial: bool = False) -> None:
        """Stop: keep the partial output for a resume (``keep_partial``; only complete tensors are recorded), or
        delete it (bad input). Final names are never touched."""
        try:
            self._wait()  # a tensor being quantized finishes (and counts) first
        except BaseException:  # noqa: BLE001 - it is not recorded, which is all a resume needs
            pass
        self._stop_worker()
        if self._files is not None:
            self._files.abort(keep=keep_partial)
            self._files = None
        elif not keep_partial:
            remove(self.partial)

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

    # ------------------------------------------------------------------ planning
    def _key(self, headers: list[bytes]) -> str:
        h = hashlib.sha256(json.dumps([self.job, self.outtype, str(self.imatrix_path or "")]).encode())
        if self.imatrix_path is not None:
            h.update(self.imatrix_path.read_bytes())
        for data in headers:
            h.update(hashlib.sha256(data).digest())
        return h.hexdigest()[:32]
