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
:func:`helpers.vocab.merge_sentencepiece`, as the Chinese-LLaMA releases did.
"""
from __future__ import annotations

import argparse
import io
import json
import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .util import atomic_path, write_json

DATA = Path(__file__).with_name("data")
TARGETS = ("q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "down_proj", "up_proj")
LLAMA3_SPECIAL = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 6: "<|start_header_id|>", 7: "<|end_header_id|>", 9: "<|eot_id|>"}
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny LLaMA-family model (widths are multiples of 256 for K-quants)."""

    hidden: int = 256
    intermediate: int = 768  # what Meta's formula gives for dim 256 with multiple_of 256
    layers: int = 2
    heads: int = 4
    kv_heads: int = 4
    max_positions: int = 4096
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError("hidden must divide by heads and heads by kv_heads")


V1 = TinySpec(max_positions=2048, rms_eps=1e-6)
V2 = TinySpec()
V2_SMALL = TinySpec(layers=1)
V3 = TinySpec(kv_heads=2, max_positions=8192, rope_theta=500000.0)


# ---------------------------------------------------------------------------------------------
# text and tokenizers
def corpus(lang: str) -> list[str]:
    """The shipped demo corpus lines (``zh`` or ``en``)."""
    return [line for line in (DATA / f"corpus_{lang}.txt").read_text(encoding="utf-8").splitlines() if line.strip()]


def train_sentencepiece(lines: list[str], *, vocab_size: int, model_type: str, llama_style: bool) -> bytes:
    """Train a sentencepiece model in memory (single thread, so the bytes are reproducible)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    opts = dict(sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size, model_type=model_type,
                num_threads=1, hard_vocab_limit=False, character_coverage=1.0, minloglevel=2,
                unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    if llama_style:  # LLaMA's settings: BPE with byte fallback, digits split, no normalisation
        opts.update(byte_fallback=True, split_digits=True, normalization_rule_name="identity",
                    remove_extra_whitespaces=False, allow_whitespace_only_pieces=True)
    spm.SentencePieceTrainer.train(**opts)
    return buf.getvalue()


def _sp_tokenizer_files(d: Path, model: bytes, *, pad: bool) -> int:
    """Write tokenizer.model + LlamaTokenizer configs (v1 Alpaca adds ``[PAD]``); return vocab size."""
    from .vocab import write_sp_tokenizer_files

    d.mkdir(parents=True, exist_ok=True)
    return write_sp_tokenizer_files(d, model, pad=pad)


def _llama3_tokenizer(d: Path) -> tuple[int, dict[str, int]]:
    """Train a byte-level BPE like Llama-3's (its regex, byte-level, 256 special tokens at the end)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=768, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus("en") + corpus("zh"), trainer=trainer)
    n_regular = tok.get_vocab_size()
    specials = [LLAMA3_SPECIAL.get(i, f"<|reserved_special_token_{i - sum(1 for k in LLAMA3_SPECIAL if k < i)}|>")
                for i in range(256)]
    tok.add_special_tokens(specials)
    ids = {s: n_regular + i for i, s in enumerate(specials)}
    bos = ids["<|begin_of_text|>"]
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    from .templates import jinja_chat_template

    added = {str(ids[s]): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                           "single_word": False, "special": True} for s in specials}
    write_json(d / "tokenizer_config.json", {
        "added_tokens_decoder": added, "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "clean_up_tokenization_spaces": True, "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 8192, "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": jinja_chat_template("llama3"),
    })
    write_json(d / "special_tokens_map.json", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
    return n_regular + 256, ids


# ---------------------------------------------------------------------------------------------
# weights
def _gen(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


def _randn(shape, std: float, g):
    import torch

    return torch.randn(*shape, generator=g) * std


def base_state_dict(spec: TinySpec, vocab: int, *, seed: int):
    """A random LLaMA state dict in HF names; layers are scaled so every block matters."""
    import torch

    g = _gen(seed)
    h, f, hd = spec.hidden, spec.intermediate, spec.hidden // spec.heads
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    sd["model.embed_tokens.weight"] = _randn((vocab, h), 1.0, g)
    for i in range(spec.layers):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = _randn((h, h), h ** -0.5, g)
        sd[p + "self_attn.k_proj.weight"] = _randn((spec.kv_heads * hd, h), h ** -0.5, g)
        sd[p + "self_attn.v_proj.weight"] = _randn((spec.kv_heads * hd, h), h ** -0.5, g)
        sd[p + "self_attn.o_proj.weight"] = _randn((h, h), h ** -0.5, g)
        sd[p + "mlp.gate_proj.weight"] = _randn((f, h), h ** -0.5, g)
        sd[p + "mlp.up_proj.weight"] = _randn((f, h), h ** -0.5, g)
        sd[p + "mlp.down_proj.weight"] = _randn((h, f), f ** -0.5, g)
        sd[p + "input_layernorm.weight"] = 1.0 + _randn((h,), 0.1, g)
        sd[p + "post_attention_layernorm.weight"] = 1.0 + _randn((h,), 0.1, g)
    sd["model.norm.weight"] = 1.0 + _randn((h,), 0.1, g)
    sd["lm_head.weight"] = _randn((vocab, h), 3 * h ** -0.5, g)
    return sd


def hf_config(spec: TinySpec, vocab: int, *, bos: int = 1, eos: int | list[int] = 2, dtype: str = "float16") -> dict:
    """A ``LlamaForCausalLM`` config.json for ``spec``."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": spec.hidden, "intermediate_size": spec.intermediate, "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads, "num_key_value_heads": spec.kv_heads,
        "max_position_embeddings": spec.max_positions, "rms_norm_eps": spec.rms_eps, "rope_theta": spec.rope_theta,
        "rope_scaling": None, "vocab_size": vocab, "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": None,
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "initializer_range": 0.02,
        "pretraining_tp": 1, "use_cache": True, "torch_dtype": dtype,
    }


def _split_two(sd):
    """Split a state dict into two shards the way sharded releases look (layer boundaries)."""
    first, second = OrderedDict(), OrderedDict()
    for k, v in sd.items():
        (first if (k.startswith("model.embed_tokens") or k.startswith("model.layers.0.")) else second)[k] = v
    return [first, second]


def write_hf_model(d: Path, sd, config: dict, *, fmt: str, dtype: str = "float16", shards: list | None = None,
                   single: bool = False) -> None:
    """Write an HF checkpoint: ``safetensors`` or legacy ``bin`` shards plus the index and configs.

    ``single`` writes one ``model.safetensors`` / ``pytorch_model.bin`` without an index.
    """
    import torch
    from safetensors.torch import save_file

    tdtype = getattr(torch, dtype)
    shards = [sd] if single else (shards if shards is not None else _split_two(sd))
    n = len(shards)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        shard = OrderedDict((k, v.to(tdtype).contiguous()) for k, v in shard.items())
        name = (f"model-{i:05d}-of-{n:05d}.safetensors" if fmt == "safetensors" else f"pytorch_model-{i:05d}-of-{n:05d}.bin")
        if single:
            name = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
        if fmt == "safetensors":
            save_file(shard, str(d / name), metadata={"format": "pt"})
        else:
            torch.save(shard, d / name)
        for k, v in shard.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    if not single:
        write_json(d / index, {"metadata": {"total_size": total}, "weight_map": weight_map})
    write_json(d / "config.json", config)
    gen = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"], "pad_token_id": 0 if fmt == "bin" else None}
    write_json(d / "generation_config.json", {k: v for k, v in gen.items() if v is not None})


def lora_state_dict(base_sd, spec: TinySpec, *, r: int, vocab: int | None, seed: int, infix: bool = False):
    """A PEFT LoRA state dict on the 7 projections; with ``vocab``, full embed/lm_head as modules_to_save."""
    g = _gen(seed)
    sd = OrderedDict()
    for i in range(spec.layers):
        for t in TARGETS:
            mod = "self_attn" if t.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            out_f, in_f = base_sd[f"model.layers.{i}.{mod}.{t}.weight"].shape
            p = f"base_model.model.model.layers.{i}.{mod}.{t}."
            sd[p + "lora_A.weight"] = _randn((r, in_f), 0.05, g)
            sd[p + "lora_B.weight"] = _randn((out_f, r), 0.05, g)
    if vocab is not None:
        mid = ".modules_to_save.default" if infix else ""
        for key, std in (("model.embed_tokens", 1.0), ("lm_head", 3 * spec.hidden ** -0.5)):
            old = base_sd[key + ".weight"]
            new = _randn((vocab, old.shape[1]), std, g)
            n = min(vocab, old.shape[0])
            new[:n] = old[:n] + _randn((n, old.shape[1]), std * 0.1, g)
            sd[f"base_model.model.{key}{mid}.weight"] = new
    return sd


def write_lora(d: Path, sd, *, r: int, alpha: float, base_name: str, old_peft: bool, fmt: str,
               modules_to_save: bool = True) -> None:
    """Write ``adapter_config.json`` + ``adapter_model.{bin,safetensors}`` as the releases did."""
    import torch
    from safetensors.torch import save_file

    cfg = {"base_model_name_or_path": base_name, "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
           "lora_alpha": alpha, "lora_dropout": 0.05, "modules_to_save": ["embed_tokens", "lm_head"] if modules_to_save else None,
           "peft_type": "LORA", "r": r, "target_modules": list(TARGETS), "task_type": "CAUSAL_LM"}
    if old_peft:  # fields of the 2023 PEFT that newer versions do not know
        cfg.update(enable_lora=None, merge_weights=False)
    else:
        cfg.update(init_lora_weights=True, layers_pattern=None, layers_to_transform=None, revision=None, use_rslora=False)
    write_json(d / "adapter_config.json", dict(sorted(cfg.items())))
    sd = OrderedDict((k, v.half().contiguous()) for k, v in sd.items())
    if fmt == "safetensors":
        save_file(sd, str(d / "adapter_model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(sd, d / "adapter_model.bin")


# ---------------------------------------------------------------------------------------------
# data files
def write_data(d: Path) -> None:
    """Instruction data (Alpaca JSON), held-out text and a C-Eval-style CSV for the notebooks."""
    import csv

    d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    digits = "零一二三四五六七八九十"
    sft = []
    for _ in range(64):
        a, b = rng.randint(1, 9), rng.randint(0, 9)
        sft.append({"instruction": f"请计算{digits[a]}加{digits[b]}等于多少？", "input": "",
                    "output": f"{digits[a]}加{digits[b]}等于{a + b}。"})
    lines = corpus("zh")
    sft += [{"instruction": "请把下面这句话复述一遍。", "input": s, "output": s} for s in lines[:32]]
    (d / "sft_zh.json").write_text(json.dumps(sft, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (d / "pt_zh.txt").write_text("\n".join(lines[:60]) + "\n", encoding="utf-8")
    (d / "heldout_zh.txt").write_text("\n".join(lines[60:]) + "\n", encoding="utf-8")
    with (d / "ceval_sample.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "A", "B", "C", "D", "answer"])
        for i in range(8):
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            options = [a + b, a + b + 1, abs(a - b), a * b + 2]
            order = rng.sample(range(4), 4)
            opts = [str(options[j]) for j in order]
            w.writerow([i, f"{a}加{b}等于多少？", *opts, "ABCD"[order.index(0)]])


# ---------------------------------------------------------------------------------------------
def build_demo(out: str | Path, *, overwrite: bool = False) -> Path:
    """Build every demo asset under ``out`` (deterministic: the same bytes on every run).

    Args:
        out: destination folder; created atomically.
        overwrite: replace an existing folder (otherwise an existing complete one is kept).
    """
    out = Path(out)
    if (out / "manifest.json").is_file() and not overwrite:
        return out
    import torch

    from .vocab import merge_sentencepiece, piece_count

    torch.manual_seed(0)
    with atomic_path(out, is_dir=True) as tmp:
        base_sp = train_sentencepiece(corpus("en") + corpus("zh")[-8:], vocab_size=640, model_type="bpe", llama_style=True)
        zh_small = train_sentencepiece(corpus("zh"), vocab_size=900, model_type="unigram", llama_style=False)
        zh_big = train_sentencepiece(corpus("zh") + corpus("en"), vocab_size=1200, model_type="unigram", llama_style=False)
        v1_sp = merge_sentencepiece(base_sp, zh_small)
        v2_sp = merge_sentencepiece(base_sp, zh_big)
        v0 = piece_count(base_sp)
        manifest: dict = {"assets": {}}

        def note(name, **info):
            manifest["assets"][name] = info

        def original(name, spec, *, seed, fmt, family, stands_for):
            """A sentencepiece-tokenizer base model in the layout its release used."""
            sd = base_state_dict(spec, v0, seed=seed)
            (tmp / name).mkdir()
            write_hf_model(tmp / name, sd, hf_config(spec, v0), fmt=fmt)
            _sp_tokenizer_files(tmp / name, base_sp, pad=False)
            note(name, kind="full", family=family, vocab=v0, stands_for=stands_for)
            return sd

        # originals
        v1_base = original("llama-7b", V1, seed=1, fmt="bin", family="llama", stands_for="huggyllama/llama-7b")
        v2_base = original("Llama-2-7b-hf", V2, seed=2, fmt="safetensors", family="llama2",
                           stands_for="meta-llama/Llama-2-7b-hf")
        d = tmp / "Meta-Llama-3-8B-Instruct"
        v3_vocab, ids = _llama3_tokenizer(d)
        v3_base = base_state_dict(V3, v3_vocab, seed=3)
        eos = [ids["<|end_of_text|>"], ids["<|eot_id|>"]]
        write_hf_model(d, v3_base, hf_config(V3, v3_vocab, bos=ids["<|begin_of_text|>"], eos=eos, dtype="bfloat16"),
                       fmt="safetensors", dtype="bfloat16")
        note("Meta-Llama-3-8B-Instruct", kind="full", family="llama3", vocab=v3_vocab,
             stands_for="meta-llama/Meta-Llama-3-8B-Instruct")

        # LoRA releases: (folder, base folder, base sd, spec, tokenizer, pad, r, alpha, old_peft, fmt, seed)
        loras = [
            ("chinese-llama-lora-7b", "llama-7b", v1_base, V1, v1_sp, False, 8, 32.0, True, "bin", 11),
            ("chinese-alpaca-lora-7b", "llama-7b", v1_base, V1, v1_sp, True, 8, 32.0, True, "bin", 12),
            ("chinese-llama-plus-lora-7b", "llama-7b", v1_base, V1, v1_sp, False, 8, 32.0, True, "bin", 13),
            ("chinese-alpaca-plus-lora-7b", "llama-7b", v1_base, V1, v1_sp, True, 8, 16.0, True, "bin", 14),
            ("chinese-llama-2-lora-7b", "Llama-2-7b-hf", v2_base, V2, v2_sp, False, 16, 32.0, False, "bin", 21),
            ("chinese-alpaca-2-lora-7b", "Llama-2-7b-hf", v2_base, V2, v2_sp, False, 16, 32.0, False, "safetensors", 22),
        ]
        for name, base, bsd, spec, sp, pad, r, alpha, old, fmt, seed in loras:
            d = tmp / name
            vocab = _sp_tokenizer_files(d, sp, pad=pad)
            write_lora(d, lora_state_dict(bsd, spec, r=r, vocab=vocab, seed=seed), r=r, alpha=alpha,
                       base_name=manifest["assets"][base]["stands_for"], old_peft=old, fmt=fmt)
            note(name, kind="lora", base=base, vocab=vocab, format=fmt)
        d = tmp / "llama-3-chinese-8b-instruct-v2-lora"
        d.mkdir()
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (d / f).write_bytes((tmp / "Meta-Llama-3-8B-Instruct" / f).read_bytes())
        write_lora(d, lora_state_dict(v3_base, V3, r=16, vocab=v3_vocab, seed=31, infix=True), r=16, alpha=32.0,
                   base_name="meta-llama/Meta-Llama-3-8B-Instruct", old_peft=False, fmt="safetensors")
        note("llama-3-chinese-8b-instruct-v2-lora", kind="lora", base="Meta-Llama-3-8B-Instruct", vocab=v3_vocab,
             format="safetensors")

        # Chinese-Alpaca-2-1.3B: a small full model sharing the v2 vocabulary, one single-file .bin
        # checkpoint as released; the draft model for speculative decoding
        d = tmp / "chinese-alpaca-2-1.3b"
        vocab = _sp_tokenizer_files(d, v2_sp, pad=False)
        write_hf_model(d, base_state_dict(V2_SMALL, vocab, seed=23), hf_config(V2_SMALL, vocab), fmt="bin", single=True)
        note("chinese-alpaca-2-1.3b", kind="full", family="llama2", vocab=vocab, stands_for="hfl/chinese-alpaca-2-1.3b")

        # Open-Chinese-LLaMA: a full-weight delta, one .bin shard per layer (+ one for the rest)
        g = _gen(41)
        patch = OrderedDict((k, _randn(v.shape, float(v.float().std()) * 0.3, g)) for k, v in v1_base.items())
        shards = [OrderedDict((k, v) for k, v in patch.items() if f"layers.{i}." in k) for i in range(V1.layers)]
        shards.append(OrderedDict((k, v) for k, v in patch.items() if ".layers." not in k))
        d = tmp / "open-chinese-llama-7b-patch"
        d.mkdir()
        write_hf_model(d, patch, hf_config(V1, v0), fmt="bin", shards=shards)
        _sp_tokenizer_files(d, base_sp, pad=False)
        note("open-chinese-llama-7b-patch", kind="patch", base="llama-7b", vocab=v0)

        # Chinese-Alpaca-2-7B, the released full model, is the v2 LoRA merged into Llama-2: build it
        # the way users do, with this project's streaming merge (quietly, fp16 like the release)
        from .merge import merge

        merge(tmp / "Llama-2-7b-hf", [tmp / "chinese-alpaca-2-lora-7b"], out=tmp / "chinese-alpaca-2-7b", fmt="hf",
              outtype="f16", progress=False, write_sha256=False)
        (tmp / "chinese-alpaca-2-7b" / "merge.json").unlink()  # the job record holds absolute paths
        note("chinese-alpaca-2-7b", kind="full", family="llama2", vocab=manifest["assets"]["chinese-alpaca-2-lora-7b"]["vocab"],
             stands_for="hfl/chinese-alpaca-2-7b")

        write_data(tmp / "data")
        (tmp / "data" / "chinese_sp.model").write_bytes(zh_small)  # for the vocabulary-expansion notebook
        manifest["note"] = "tiny random models for tests and smoke runs; their replies are not meaningful"
        write_json(tmp / "manifest.json", manifest)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to write the demo assets to")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if the folder is complete")


def run(args: argparse.Namespace) -> int:
    out = build_demo(args.out, overwrite=args.overwrite)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for name, info in manifest["assets"].items():
        print(f"{name:40s} {info['kind']:6s} vocab {info['vocab']}")
    print(f"demo assets in {out}; use them offline with: export HELPERS_LOCAL_MODELS={out.resolve()}")
    return 0
