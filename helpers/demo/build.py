"""Offline demo assets: tiny, deterministic LLaMA-family models laid out like the real releases.

``build_demo(out)`` writes, in a few seconds and with no network, one folder per released repo,
named after the repo it stands in for, so that ``HELPERS_LOCAL_MODELS=<out>`` makes every
notebook and command resolve the real hub ids to these stand-ins:

=====================================  ==================================================================
folder                                 stands in for
=====================================  ==================================================================
``llama-7b``                           LLaMA-1 base, HF layout with legacy ``pytorch_model-*.bin`` shards
``Llama-2-7b-hf``                      Llama-2 base, safetensors shards + index
``Meta-Llama-3-8B-Instruct``           Llama-3 base: byte-level BPE tokenizer, GQA, rope_theta 500000
``chinese-llama-lora-7b``              v1 LoRA, expanded vocabulary, old PEFT config, ``adapter_model.bin``
``chinese-alpaca-lora-7b``             v1 Alpaca LoRA: one more token, ``[PAD]``
``chinese-llama-plus-lora-7b``         Plus pair, first half (applied first)
``chinese-alpaca-plus-lora-7b``        Plus pair, second half (``[PAD]``)
``chinese-llama-2-lora-7b``            v2 LoRA (``adapter_model.bin``)
``chinese-alpaca-2-lora-7b``           v2 Alpaca LoRA (``adapter_model.safetensors``)
``llama-3-chinese-8b-instruct-v2-lora`` v3 instruct LoRA (safetensors, same vocabulary)
``open-chinese-llama-7b-patch``        Open-Chinese-LLaMA full-weight delta, one ``.bin`` shard per layer
``chinese-alpaca-2-1.3b``              a small full model with the v2 vocabulary, single ``pytorch_model.bin``
``chinese-alpaca-2-7b``                the v2 Alpaca LoRA merged into the Llama-2 base (a full release)
``data/``                              Alpaca-format instructions, text, a C-Eval-style CSV, a Chinese sp model
=====================================  ==================================================================

All widths are multiples of 256 so llama.cpp's K-quants apply. The sentencepiece tokenizers are
trained from text shipped in ``helpers/data``; the Chinese ones are merged into the base with
:func:`helpers.tokens.sentencepiece.merge_sentencepiece`, as the Chinese-LLaMA releases did.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..merge import MergeOptions, Recipe, merge
from ..tokens import piece_count
from ..tokens.sentencepiece import merge_sentencepiece
from ..disk import claim_output, disk_errors, require_free_disk
from ..util import atomic_path, fault_point, write_json
from .data import write_data
from .tokenizers import corpus, llama3_tokenizer, sp_tokenizer_folder, train_sentencepiece
from .weights import (V1, V2, V2_SMALL, V3, base_state_dict, generator, hf_config, lora_state_dict, randn,
                      write_hf_model, write_lora)

# LoRA releases: (folder, base folder, generation, pad, r, alpha, old PEFT layout, weights format, seed)
_LORAS = [
    ("chinese-llama-lora-7b", "llama-7b", "v1", False, 8, 32.0, True, "bin", 11),
    ("chinese-alpaca-lora-7b", "llama-7b", "v1", True, 8, 32.0, True, "bin", 12),
    ("chinese-llama-plus-lora-7b", "llama-7b", "v1", False, 8, 32.0, True, "bin", 13),
    ("chinese-alpaca-plus-lora-7b", "llama-7b", "v1", True, 8, 16.0, True, "bin", 14),
    ("chinese-llama-2-lora-7b", "Llama-2-7b-hf", "v2", False, 16, 32.0, False, "bin", 21),
    ("chinese-alpaca-2-lora-7b", "Llama-2-7b-hf", "v2", False, 16, 32.0, False, "safetensors", 22),
]


@dataclass
class _Build:
    """The folder being built, its manifest, and what later steps reuse (tokenizers, base weights)."""

    root: Path
    manifest: dict = field(default_factory=lambda: {"assets": {}})
    sp: dict = field(default_factory=dict)      # base, zh_small, v1, v2: sentencepiece model bytes
    bases: dict = field(default_factory=dict)   # generation -> (folder, state dict, spec, vocab)

    def note(self, name: str, **info) -> None:
        self.manifest["assets"][name] = info


def _tokenizers(b: _Build) -> None:
    """LLaMA-style base sentencepiece, two Chinese ones, and the base merged with each (v1, v2)."""
    b.sp["base"] = train_sentencepiece(corpus("en") + corpus("zh")[-8:], vocab_size=640, model_type="bpe",
                                       llama_style=True)
    b.sp["zh_small"] = train_sentencepiece(corpus("zh"), vocab_size=900, model_type="unigram", llama_style=False)
    zh_big = train_sentencepiece(corpus("zh") + corpus("en"), vocab_size=1200, model_type="unigram", llama_style=False)
    b.sp["v1"] = merge_sentencepiece(b.sp["base"], b.sp["zh_small"])
    b.sp["v2"] = merge_sentencepiece(b.sp["base"], zh_big)


def _originals(b: _Build) -> None:
    """The original bases: LLaMA-1 (.bin shards), Llama-2 (safetensors), Llama-3-Instruct (BPE, GQA, bf16)."""
    v0 = piece_count(b.sp["base"])
    for name, gen, spec, seed, fmt, family, stands_for in (
            ("llama-7b", "v1", V1, 1, "bin", "llama", "huggyllama/llama-7b"),
            ("Llama-2-7b-hf", "v2", V2, 2, "safetensors", "llama2", "meta-llama/Llama-2-7b-hf")):
        sd = base_state_dict(spec, v0, seed=seed)
        (b.root / name).mkdir()
        write_hf_model(b.root / name, sd, hf_config(spec, v0), fmt=fmt)
        sp_tokenizer_folder(b.root / name, b.sp["base"], pad=False)
        b.note(name, kind="full", family=family, vocab=v0, stands_for=stands_for)
        b.bases[gen] = (name, sd, spec, v0)
    d = b.root / "Meta-Llama-3-8B-Instruct"
    v3_vocab, ids = llama3_tokenizer(d)
    v3_base = base_state_dict(V3, v3_vocab, seed=3)
    eos = [ids["<|end_of_text|>"], ids["<|eot_id|>"]]
    write_hf_model(d, v3_base, hf_config(V3, v3_vocab, bos=ids["<|begin_of_text|>"], eos=eos, dtype="bfloat16"),
                   fmt="safetensors", dtype="bfloat16")
    b.note(d.name, kind="full", family="llama3", vocab=v3_vocab, stands_for="meta-llama/Meta-Llama-3-8B-Instruct")
    b.bases["v3"] = (d.name, v3_base, V3, v3_vocab)


def _loras(b: _Build) -> None:
    """The v1 and v2 LoRAs (expanded vocabularies, old and new PEFT layouts) and the v3 instruct LoRA."""
    for name, base, gen, pad, r, alpha, old, fmt, seed in _LORAS:
        d = b.root / name
        _, bsd, spec, _ = b.bases[gen]
        vocab = sp_tokenizer_folder(d, b.sp[gen], pad=pad)
        write_lora(d, lora_state_dict(bsd, spec, r=r, vocab=vocab, seed=seed), r=r, alpha=alpha,
                   base_name=b.manifest["assets"][base]["stands_for"], old_peft=old, fmt=fmt)
        b.note(name, kind="lora", base=base, vocab=vocab, format=fmt)
    base, v3_base, spec, v3_vocab = b.bases["v3"]
    d = b.root / "llama-3-chinese-8b-instruct-v2-lora"
    d.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (d / f).write_bytes((b.root / base / f).read_bytes())
    write_lora(d, lora_state_dict(v3_base, spec, r=16, vocab=v3_vocab, seed=31, infix=True), r=16, alpha=32.0,
               base_name="meta-llama/Meta-Llama-3-8B-Instruct", old_peft=False, fmt="safetensors")
    b.note(d.name, kind="lora", base=base, vocab=v3_vocab, format="safetensors")


def _small_model(b: _Build) -> None:
    """Chinese-Alpaca-2-1.3B: a small full model sharing the v2 vocabulary, one single-file .bin checkpoint as
    released; the draft model for speculative decoding."""
    d = b.root / "chinese-alpaca-2-1.3b"
    vocab = sp_tokenizer_folder(d, b.sp["v2"], pad=False)
    write_hf_model(d, base_state_dict(V2_SMALL, vocab, seed=23), hf_config(V2_SMALL, vocab), fmt="bin", single=True)
    b.note(d.name, kind="full", family="llama2", vocab=vocab, stands_for="hfl/chinese-alpaca-2-1.3b")


def _patch(b: _Build) -> None:
    """Open-Chinese-LLaMA: a full-weight delta over LLaMA-1, one .bin shard per layer (+ one for the rest)."""
    base, v1_base, spec, v0 = b.bases["v1"]
    g = generator(41)
    patch = OrderedDict((k, randn(v.shape, float(v.float().std()) * 0.3, g)) for k, v in v1_base.items())
    shards = [OrderedDict((k, v) for k, v in patch.items() if f"layers.{i}." in k) for i in range(spec.layers)]
    shards.append(OrderedDict((k, v) for k, v in patch.items() if ".layers." not in k))
    d = b.root / "open-chinese-llama-7b-patch"
    d.mkdir()
    write_hf_model(d, patch, hf_config(spec, v0), fmt="bin", shards=shards)
    sp_tokenizer_folder(d, b.sp["base"], pad=False)
    b.note(d.name, kind="patch", base=base, vocab=v0)


def _merged_release(b: _Build) -> None:
    """Chinese-Alpaca-2-7B, the released full model, is the v2 LoRA merged into Llama-2: built the way users do,
    with this project's streaming merge (quietly, fp16 like the release)."""
    out = b.root / "chinese-alpaca-2-7b"
    merge(Recipe(b.root / "Llama-2-7b-hf", (b.root / "chinese-alpaca-2-lora-7b",)), out,
          MergeOptions(fmt="hf", outtype="f16", progress=False, write_sha256=False))
    (out / "merge.json").unlink()  # a release has no job record
    b.note(out.name, kind="full", family="llama2", vocab=b.manifest["assets"]["chinese-alpaca-2-lora-7b"]["vocab"],
           stands_for="hfl/chinese-alpaca-2-7b")


DEMO_BYTES = 48 << 20  # about the disk the demo assets take (35 MB), with a margin


def build_demo(out: str | Path, *, overwrite: bool = False) -> Path:
    """Build every demo asset under ``out`` (deterministic: the same bytes on every run).

    Args:
        out: destination folder; created atomically (one run at a time; a rerun after a killed run removes the
            killed run's temporary folder).
        overwrite: replace an existing folder (otherwise an existing complete one is kept).

    Raises:
        UserError: another run building ``out``, a read-only or too small disk.
    """
    out = Path(out)
    with claim_output(out, what="the demo assets"):
        if (out / "manifest.json").is_file() and not overwrite:
            return out
        import torch

        require_free_disk(out.parent, DEMO_BYTES, what="the demo assets")
        torch.manual_seed(0)
        with disk_errors(out.parent, needed=DEMO_BYTES, what="the demo assets"), atomic_path(out, is_dir=True) as tmp:
            b = _Build(tmp)
            for step in (_tokenizers, _originals, _loras, _small_model, _patch, _merged_release):
                step(b)
                fault_point("demo.step")
            write_data(tmp / "data")
            (tmp / "data" / "chinese_sp.model").write_bytes(b.sp["zh_small"])  # for the vocabulary-expansion notebook
            b.manifest["note"] = "tiny random models for tests and smoke runs; their replies are not meaningful"
            write_json(tmp / "manifest.json", b.manifest)
    return out
