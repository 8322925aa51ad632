"""The GGUF writer: :class:`GGUFSink` streams float32 tensors in Hugging Face naming into a GGUF file.

Memory stays at about one tensor. The file matches what llama.cpp's ``convert_hf_to_gguf.py`` writes for
``LlamaForCausalLM``:

- tensor names from :func:`gguf.get_tensor_name_map` (``blk.N.attn_q``, ``ffn_down``, ``token_embd``, ``output``);
- q/k rows reordered from Hugging Face's rotate-half RoPE layout to llama.cpp's interleaved one
  (k with the number of key/value heads, for grouped-query attention);
- 1-D tensors and norms in F32, the rest in the chosen type (F32, F16, BF16 or Q8_0, quantized with
  :func:`gguf.quants.quantize`; Q8_0 falls back to F16 for rows that are not multiples of 32, as the converter does);
- the same hyper-parameter keys (:mod:`.hparams`), ``general.file_type`` and quantization version;
- the vocabulary (:mod:`.vocab`).

On top of the converter it writes the chat template of the model's generation, ``<|eot_id|>`` as the
end-of-turn token, and the long-context RoPE scaling the catalog knows, all from the :class:`ModelCard` the
caller passes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoint import TensorPlan, rope_to_meta
from ..util import UserError, remove, tmp_name
from .card import ModelCard
from .export import write_checksum
from .hparams import add_hparams
from .types import write_types
from .vocab import add_tokenizer

if TYPE_CHECKING:
    import torch

_SKIP_SUFFIXES = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")


def permute_qk(w: "torch.Tensor", n_head: int) -> "torch.Tensor":
    """Reorder q/k projection rows from HF's rotate-half RoPE layout to llama.cpp's interleaved layout.

    Within each head, HF keeps the first and second halves of the rotary pairs apart; llama.cpp expects
    them interleaved. ``n_head`` is the number of heads the rows belong to (key/value heads for k).
    """
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise UserError(f"cannot reorder a q/k projection of {rows} rows into {n_head} heads; check the config")
    return rope_to_meta(w, n_head)  # llama.cpp's interleaved order is Meta's


class GGUFSink:
    """A :class:`helpers.checkpoint.TensorSink` that streams tensors into one GGUF file (architecture ``llama``).

    Args:
        out_path: the final ``.gguf`` path (shards, if any, are named ``<stem>-00001-of-0000N.gguf``).
        outtype: ``f32``, ``f16``, ``bf16`` or ``q8_0`` for the 2-D weights.
        card: name, chat template and catalog RoPE scaling (:func:`helpers.gguf.describe_model`).
        split_max_size: start a new shard before this many bytes of tensor data (0: one file).
        sha256: write ``<file>.sha256`` beside each finished file.
    """

    def __init__(self, out_path: str | Path, *, outtype: str = "f16", card: ModelCard | None = None,
                 split_max_size: int = 0, sha256: bool = False) -> None:
        self.out_path = Path(out_path)
        self.outtype = outtype.lower()
        self.qtype, self.ftype = write_types(self.outtype)
        self.card = card or ModelCard()
        self.split_max_size = int(split_max_size)
        self.sha256 = sha256
        self.partial: Path = tmp_name(self.out_path)  # a hidden folder beside the output while it is written
        self._writer = None
        self._started = False
        self._expected: list[tuple[str, str, Any, tuple[int, ...]]] = []  # (hf name, gguf name, qtype, shape)
        self._pos = 0
        self._heads = (0, 0)

    # ------------------------------------------------------------------ TensorSink protocol
    def open(self, *, config: dict, tokenizer_dir: Path, plan: list[TensorPlan]) -> None:
        """Write the header, metadata and tensor infos; tensors follow through :meth:`write`."""
        import gguf
        import numpy as np

        arch = (config.get("architectures") or [""])[0]
        if config.get("model_type") not in (None, "llama") and arch not in ("LlamaForCausalLM", "LLaMAForCausalLM"):
            what = arch or config.get("model_type")
            raise UserError(f"GGUF export supports LLaMA-architecture models; this config is {what!r}")
        n_layers = int(config["num_hidden_layers"])
        n_head = int(config["num_attention_heads"])
        n_kv = int(config.get("num_key_value_heads") or n_head)
        self._heads = (n_head, n_kv)
        tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
        embed_rows = None
        for p in plan:
            if p.name.endswith(_SKIP_SUFFIXES):
                self._expected.append((p.name, "", None, p.shape))
                continue
            new = tmap.get_name(p.name, try_suffixes=(".weight", ".bias"))
            if new is None:
                raise UserError(f"tensor {p.name!r} has no GGUF name in the llama architecture; is this a LLaMA model?")
            if new == "token_embd.weight":
                embed_rows = p.shape[0]
            qtype = self.qtype
            if len(p.shape) <= 1 or new.endswith("_norm.weight"):
                qtype = gguf.GGMLQuantizationType.F32
            elif qtype == gguf.GGMLQuantizationType.Q8_0 and p.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
                qtype = gguf.GGMLQuantizationType.F16  # the converter's fallback for rows that do not split into blocks
            self._expected.append((p.name, new, qtype, tuple(p.shape)))
        vocab_size = int(config.get("vocab_size") or embed_rows or 0)
        if embed_rows is not None and embed_rows != vocab_size:
            raise UserError(f"config vocab_size {vocab_size} differs from the {embed_rows} rows of embed_tokens; "
                            "fix config.json (the merge sets it from the tokenizer)")

        card = self.card
        w = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA], split_max_size=self.split_max_size)
        self._writer = w
        w.add_type(gguf.GGUFType.MODEL)
        w.add_name(card.name or self.out_path.stem)
        add_hparams(w, config, n_layers, n_head, n_kv, vocab_size, card)
        for key, value in card.extra_metadata.items():
            w.add_string(key, value)
        w.add_file_type(int(self.ftype))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_tokenizer(w, Path(tokenizer_dir), vocab_size=vocab_size, config=config, template=card.template,
                      template_explicit=card.template_explicit)
        for _, new, qtype, shape in self._expected:
            if not new:
                continue
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            n = int(np.prod(shape)) if shape else 1
            w.add_tensor_info(new, shape, np.dtype(np.float32), n // block * size, raw_dtype=qtype)
        total = sum(int(np.prod(s)) for _, new, _, s in self._expected if new)
        w.add_size_label(gguf.size_label(total, total, 0, 0))
        self.partial.mkdir(parents=True)
        self._started = True
        w.write_header_to_file(path=self.partial / self.out_path.name)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()

    def done(self, name: str) -> bool:
        """A GGUF is written in one pass, so nothing is ever resumed."""
        return False

    def write(self, name: str, tensor: "torch.Tensor") -> None:
        """Convert one tensor (permute q/k, cast or quantize) and append it to the file."""
        import gguf
        import torch

        if self._writer is None:
            raise RuntimeError("GGUFSink.write called before open")
        if self._pos >= len(self._expected) or self._expected[self._pos][0] != name:
            want = self._expected[self._pos][0] if self._pos < len(self._expected) else "nothing"
            raise RuntimeError(f"GGUFSink got {name!r}, expected {want!r} (tensors must come in plan order)")
        _, new, qtype, shape = self._expected[self._pos]
        self._pos += 1
        if not new:
            return
        t = tensor.detach().to("cpu", torch.float32)
        if tuple(t.shape) != shape:
            raise UserError(f"tensor {name} has shape {tuple(t.shape)}, the plan said {shape}")
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            t = permute_qk(t, self._heads[0])
        elif name.endswith(("k_proj.weight", "k_proj.bias")):
            t = permute_qk(t, self._heads[1])
        if qtype == gguf.GGMLQuantizationType.F32:
            out = t.contiguous().numpy()
        elif qtype == gguf.GGMLQuantizationType.F16:  # torch's cast is several times faster than numpy's
            out = t.to(torch.float16).contiguous().numpy()
        else:
            out = gguf.quants.quantize(t.contiguous().numpy(), qtype)
        self._writer.write_tensor_data(out)

    def close(self) -> list[Path]:
        """Finish the file(s), write their checksums when asked and move them to their final names; returns the
        GGUF paths (first shard first)."""
        if self._writer is None or not self._started:
            raise RuntimeError("GGUFSink.close called before open")
        missing = [e[0] for e in self._expected[self._pos:] if e[1]]
        if missing:
            self.abort(keep_partial=False)
            raise RuntimeError(f"GGUFSink closed with {len(missing)} tensors not written (first: {missing[0]})")
        self._writer.close()
        names = self._writer.format_shard_names(self.partial / self.out_path.name)
        finals = []
        for src in names:
            dst = self.out_path.with_name(src.name)
            if dst.exists():
                remove(dst)
            os.replace(src, dst)
            finals.append(dst)
            if self.sha256:
                write_checksum(dst)
        remove(self.partial)
        self._writer = None
        return finals

    def abort(self, *, keep_partial: bool = False) -> None:
        """Close and delete the partial output (a GGUF is written in one pass, so nothing is kept for a resume);
        final names are never touched."""
        del keep_partial
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - best effort while cleaning up
                pass
            self._writer = None
        if self._started:
            remove(self.partial)
