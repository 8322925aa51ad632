"""GGUF output: a streaming writer for merged LLaMA-family models, and the ``to-gguf`` command.

:class:`GGUFSink` receives the merge's float32 tensors (Hugging Face names, plan order) and writes one
GGUF file (or llama.cpp-style ``-00001-of-0000N.gguf`` shards) as they arrive, so memory stays at about one
tensor. The file matches what llama.cpp's ``convert_hf_to_gguf.py`` writes for ``LlamaForCausalLM``:

- tensor names from :func:`gguf.get_tensor_name_map` (``blk.N.attn_q``, ``ffn_down``, ``token_embd``, ``output``);
- q/k rows reordered from Hugging Face's rotate-half RoPE layout to llama.cpp's interleaved one
  (k with the number of key/value heads, for grouped-query attention);
- 1-D tensors and norms in F32, the rest in the chosen type (F32, F16, BF16 or Q8_0, quantized with
  :func:`gguf.quants.quantize`; Q8_0 falls back to F16 for rows that are not multiples of 32, as the converter does);
- the same hyper-parameter keys, ``general.file_type`` and quantization version;
- the vocabulary: sentencepiece (``llama`` model, scores and token types from ``tokenizer.model``, added tokens such
  as v1 Alpaca's ``[PAD]``, ``[PAD{i}]`` rows up to ``vocab_size``) or Llama-3's byte-level BPE (``gpt2`` model,
  ``llama-bpe`` pre-tokenizer, merges), special token ids through :class:`gguf.SpecialVocab`.

On top of the converter it writes the chat template of the model's generation (``helpers.templates``),
``<|eot_id|>`` as the end-of-turn token, and the long-context RoPE scaling the catalog knows.

The vocabulary part lives in :mod:`helpers.gguf_vocab`; Modelfile, checksum, shards and Colab export of the
finished file in :mod:`helpers.export`. Their public names are re-exported here.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .export import export_file, gguf_template, read_metadata, split_gguf, write_checksum, write_modelfile
from .gguf_vocab import LLAMA3_PRE_PATTERN, add_tokenizer, bpe_vocab, sentencepiece_vocab
from .sink import TensorPlan
from .sources import open_checkpoint, rope_to_meta
from .util import UserError, human_bytes, progress, remove, tmp_name

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "OUTTYPES", "GGUFSink", "permute_qk", "model_template", "convert_hf_to_gguf", "add_arguments", "run",
    # re-exported from helpers.gguf_vocab and helpers.export
    "LLAMA3_PRE_PATTERN", "sentencepiece_vocab", "bpe_vocab", "add_tokenizer",
    "read_metadata", "gguf_template", "write_modelfile", "write_checksum", "split_gguf", "export_file",
]

OUTTYPES = ("f32", "f16", "bf16", "q8_0")
_SKIP_SUFFIXES = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")


def _types(outtype: str):
    """(GGML tensor type, llama file type) for an ``--outtype``."""
    import gguf

    table = {
        "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
        "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
        "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
        "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    }
    if outtype not in table:
        raise UserError(f"unknown GGUF output type {outtype!r}; choose one of {', '.join(OUTTYPES)} "
                        "(K-quants such as q4_k_m: write f16, then run `python -m helpers quantize`)")
    return table[outtype]


def permute_qk(w: "torch.Tensor", n_head: int) -> "torch.Tensor":
    """Reorder q/k projection rows from HF's rotate-half RoPE layout to llama.cpp's interleaved layout.

    Within each head, HF keeps the first and second halves of the rotary pairs apart; llama.cpp expects
    them interleaved. ``n_head`` is the number of heads the rows belong to (key/value heads for k).
    """
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise UserError(f"cannot reorder a q/k projection of {rows} rows into {n_head} heads; check the config")
    return rope_to_meta(w, n_head)  # llama.cpp's interleaved order is Meta's


def _rope(config: dict) -> tuple[float | None, dict]:
    """(rope theta, scaling dict with ``type``/``factor``/...) from an HF config (old or transformers-5 keys)."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    params = dict(params) if isinstance(params, dict) else {}
    theta = config.get("rope_theta", params.get("rope_theta"))
    kind = params.get("rope_type", params.get("type"))
    scaling = {} if kind in (None, "default") else {**params, "type": kind}
    return theta, scaling


def _catalog_entry(*names: str | None):
    from . import catalog

    for n in names:
        if n:
            entry = catalog.find(n)
            if entry is not None:
                return entry
    return None


class GGUFSink:
    """A :class:`helpers.sink.TensorSink` that streams a merge into one GGUF file (architecture ``llama``).

    Args:
        out_path: the final ``.gguf`` path (shards, if any, are named ``<stem>-00001-of-0000N.gguf``).
        outtype: ``f32``, ``f16``, ``bf16`` or ``q8_0`` for the 2-D weights.
        template: prompt template id for ``tokenizer.chat_template``; ``None``: from the catalog / tokenizer files.
        name: ``general.name`` and the catalog name to look up (template, long-context RoPE scaling).
        split_max_size: start a new shard before this many bytes of tensor data (0: one file).
    """

    def __init__(self, out_path: str | Path, *, outtype: str = "f16", template: str | None = None,
                 name: str | None = None, split_max_size: int = 0) -> None:
        self.out_path = Path(out_path)
        self.outtype = outtype.lower()
        self.qtype, self.ftype = _types(self.outtype)
        self.template_arg = template
        self.template: str | None = None  # resolved in open()
        self.name = name
        self.split_max_size = int(split_max_size)
        self._writer = None
        self._tmpdir: Path | None = None
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

        entry = _catalog_entry(self.name, Path(tokenizer_dir).name, config.get("_name_or_path"))
        self.template = _resolve_template(self.template_arg, entry, Path(tokenizer_dir))
        w = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA], split_max_size=self.split_max_size)
        self._writer = w
        w.add_type(gguf.GGUFType.MODEL)
        w.add_name(self.name or config.get("_name_or_path", "").rstrip("/").split("/")[-1] or self.out_path.stem)
        _add_hparams(w, config, n_layers, n_head, n_kv, vocab_size, entry)
        w.add_file_type(int(self.ftype))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_tokenizer(w, Path(tokenizer_dir), vocab_size=vocab_size, config=config, template=self.template,
                      template_explicit=self.template_arg is not None)
        for _, new, qtype, shape in self._expected:
            if not new:
                continue
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            n = int(np.prod(shape)) if shape else 1
            w.add_tensor_info(new, shape, np.dtype(np.float32), n // block * size, raw_dtype=qtype)
        total = sum(int(np.prod(s)) for _, new, _, s in self._expected if new)
        w.add_size_label(gguf.size_label(total, total, 0, 0))
        self._tmpdir = tmp_name(self.out_path)
        self._tmpdir.mkdir(parents=True)
        w.write_header_to_file(path=self._tmpdir / self.out_path.name)
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
        """Finish the file(s) and move them to their final names; returns the paths (first shard first)."""
        if self._writer is None or self._tmpdir is None:
            raise RuntimeError("GGUFSink.close called before open")
        missing = [e[0] for e in self._expected[self._pos:] if e[1]]
        if missing:
            self.abort()
            raise RuntimeError(f"GGUFSink closed with {len(missing)} tensors not written (first: {missing[0]})")
        self._writer.close()
        names = self._writer.format_shard_names(self._tmpdir / self.out_path.name)
        finals = []
        for src in names:
            dst = self.out_path.with_name(src.name)
            if dst.exists():
                remove(dst)
            os.replace(src, dst)
            finals.append(dst)
        remove(self._tmpdir)
        self._writer = None
        return finals

    def abort(self) -> None:
        """Close and delete the temporary output; final names are never touched."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - best effort while cleaning up
                pass
            self._writer = None
        if self._tmpdir is not None:
            remove(self._tmpdir)


def _add_hparams(w, config: dict, n_layers: int, n_head: int, n_kv: int, vocab_size: int, entry) -> None:
    """The converter's LLaMA hyper-parameter keys (plus catalog RoPE scaling for long-context models)."""
    import gguf

    hidden = int(config["hidden_size"])
    ctx = int(config.get("max_position_embeddings") or 2048)
    theta, scaling = _rope(config)
    if not scaling and entry is not None and getattr(entry, "rope_scaling", None):
        scaling = dict(entry.rope_scaling)
    if scaling and entry is not None and getattr(entry, "context_length", 0) > ctx:
        ctx = int(entry.context_length)  # scaled models: tell llama.cpp / Ollama the context they were tuned for
    w.add_block_count(n_layers)
    w.add_context_length(ctx)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(int(config["intermediate_size"]))
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    kind, factor = scaling.get("type"), scaling.get("factor")
    if kind == "linear" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(factor))
    elif kind == "yarn" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(factor))
        orig = scaling.get("original_max_position_embeddings") or config.get("max_position_embeddings")
        w.add_rope_scaling_orig_ctx_len(int(orig))
    elif kind:
        print(f"warning: RoPE scaling {kind!r} is not written to the GGUF", file=sys.stderr)
    if theta is not None:
        w.add_rope_freq_base(float(theta))
    eps = config.get("rms_norm_eps")
    if eps is not None:
        w.add_layer_norm_rms_eps(float(eps))
    head_dim = int(config.get("head_dim") or hidden // n_head)
    w.add_key_length(head_dim)  # the converter writes these from transformers' config (which fills head_dim)
    w.add_value_length(head_dim)
    w.add_vocab_size(vocab_size)
    w.add_rope_dimension_count(head_dim)



# ---------------------------------------------------------------------------------------------- template
def _resolve_template(template: str | None, entry, tokenizer_dir: Path) -> str | None:
    """The template id to embed: explicit, else the catalog's, else what the tokenizer files say (None: unknown)."""
    from .templates import get_template, template_for_model

    if template is not None:
        return get_template(template).name
    if entry is not None and getattr(entry, "template", None):
        return entry.template
    if tokenizer_dir.is_dir():
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):  # its "could not tell" warning is ours to give
            found = template_for_model(str(tokenizer_dir))
        return None if found == "raw" else found
    return None


# ---------------------------------------------------------------------------------------------- HF dir -> GGUF
def model_template(model_dir: str | Path, template: str | None = None, *, name: str | None = None) -> str | None:
    """The template id :class:`GGUFSink` embeds for ``model_dir`` (explicit, catalog, tokenizer files; None: none)."""
    model_dir = Path(model_dir)
    return _resolve_template(template, _catalog_entry(name, model_dir.name), model_dir)


def convert_hf_to_gguf(model_dir: str | Path, out_path: str | Path, *, outtype: str = "f16",
                       template: str | None = None, name: str | None = None, split_max_size: int = 0) -> Path:
    """Convert a Hugging Face LLaMA folder to GGUF, one tensor at a time; returns the (first) output file.

    Args:
        model_dir: folder with config.json, the weights (safetensors or .bin shards) and the tokenizer.
        out_path: the ``.gguf`` to write (atomically: a temporary name until complete).
        outtype: ``f32``, ``f16``, ``bf16`` or ``q8_0``.
        template: prompt template id for the embedded chat template (default: from catalog / tokenizer).
        name: ``general.name`` / catalog name (default: the folder's name).
        split_max_size: bytes of tensor data per shard (0: one file); shards are ``<stem>-0000i-of-0000N.gguf``.
    """
    files, _ = _convert(model_dir, out_path, outtype=outtype, template=template, name=name,
                        split_max_size=split_max_size)
    return files[0]


def _convert(model_dir: str | Path, out_path: str | Path, *, outtype: str, template: str | None, name: str | None,
             split_max_size: int) -> tuple[list[Path], str | None]:
    """Convert; returns the files written and the template id embedded (None: none)."""
    model_dir = Path(model_dir)
    sink = GGUFSink(out_path, outtype=outtype, template=template, name=name or model_dir.name,
                    split_max_size=split_max_size)
    with open_checkpoint(model_dir) as ckpt:
        names = list(ckpt.names())
        plan = [TensorPlan(n, tuple(ckpt.shape(n))) for n in names]
        tokenizer_dir = getattr(ckpt, "tokenizer_dir", None) or model_dir
        try:
            sink.open(config=dict(ckpt.config), tokenizer_dir=Path(tokenizer_dir), plan=plan)
            for n in progress(names, desc=f"to GGUF {outtype}", unit="tensor"):
                sink.write(n, ckpt.get(n))
            return sink.close(), sink.template
        except BaseException:
            sink.abort()
            raise



# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hugging Face model folder (merged model)")
    parser.add_argument("--out", required=True, help="output .gguf file")
    parser.add_argument("--outtype", default="f16", choices=OUTTYPES, help="type of the 2-D weights (default f16)")
    parser.add_argument("--template", default=None, help="prompt template id (alpaca, llama2-zh, llama3, raw); "
                                                         "default: from the catalog / tokenizer files")
    parser.add_argument("--split-gb", type=float, default=None, help="split into shards of at most this many GiB")


def run(args: argparse.Namespace) -> int:
    model = Path(args.model)
    if not (model / "config.json").is_file():
        raise UserError(f"{model} is not a Hugging Face model folder (no config.json)")
    split = int(args.split_gb * 1024**3) if args.split_gb else 0
    files, template = _convert(model, args.out, outtype=args.outtype, template=args.template, name=None,
                               split_max_size=split)
    template = template or "raw"  # the Modelfile uses the template embedded in the GGUF
    for f in files:
        write_checksum(f)
        print(f"wrote {f} ({human_bytes(f.stat().st_size)})")
    if len(files) == 1:
        print(f"wrote {write_modelfile(files[0], template=template)} (template {template})")
    return 0
