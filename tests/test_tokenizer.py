"""load_tokenizer: ids equal sentencepiece's (the reference), special tokens, vocab sizes, round trips."""
from __future__ import annotations

import io
import json
import pickle
import random
import re
import shutil

import pytest

from helpers.tokens import load_tokenizer
from helpers.tokens.tokenizer import tokenizer_class
from helpers.util import UserError

spm = pytest.importorskip("sentencepiece")

ZH = "我你他是的了在有人这中大为上个国和不们地到以说时要就出会可也"
EN = "the quick brown fox jumps over lazy dog model token hello world data".split()


def _lines(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [
            rng.choice(EN) if rng.random() < 0.5 else "".join(rng.choice(ZH) for _ in range(rng.randint(1, 4)))
            for _ in range(rng.randint(3, 9))
        ]
        out.append(" ".join(words) + rng.choice(["。", "！", ".", "?", "", "  "]))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny byte-fallback BPE sentencepiece model trained here, in a tokenizer folder."""
    folder = tmp_path_factory.mktemp("tinytok")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_lines(0, 400)), model_writer=buf, model_type="bpe", vocab_size=360,
        byte_fallback=True, num_threads=1, normalization_rule_name="identity", remove_extra_whitespaces=False,
        character_coverage=1.0, minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    return folder


def _sp(folder):
    return spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))


TRICKY = [
    "",
    " ",
    "  leading spaces",
    "trailing space ",
    "换行\n\n两次\t制表",
    "未见过的字：龘靐齉 and emoji 😀🚀",
    "Ünïcödé façade — “quotes”",
]


# ----------------------------------------------------------------------------- generated model (always runs)


def test_tiny_model_parity(tiny):
    sp = _sp(tiny)
    tok = load_tokenizer(tiny)
    assert isinstance(tok, tokenizer_class()) and not tok.is_fast
    assert len(tok) == sp.get_piece_size() == 360
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (sp.bos_id(), sp.eos_id(), sp.unk_id())
    assert tok.pad_token is None  # sentencepiece defines none: callers decide
    for text in _lines(1, 200) + TRICKY:
        ids = sp.encode(text)
        assert tok.encode(text, add_special_tokens=False) == ids, text
        assert tok(text)["input_ids"] == [sp.bos_id()] + ids  # BOS added, EOS not
        assert tok.decode(ids) == sp.decode(ids)
        assert tok.decode([sp.bos_id(), *ids, sp.eos_id()], skip_special_tokens=True) == sp.decode(ids)
    assert tok.convert_tokens_to_ids(sp.encode("hello 我", out_type=str)) == sp.encode("hello 我")


def test_special_tokens_in_text(tiny):
    sp = _sp(tiny)
    tok = load_tokenizer(tiny)
    text = "[INST] 我是 [/INST] 你好</s><s>[INST] 再见 [/INST]"
    expected = [1, *sp.encode("[INST] 我是 [/INST] 你好"), 2, 1, *sp.encode("[INST] 再见 [/INST]")]
    assert tok.encode(text) == expected
    # every segment between special tokens gets sentencepiece's dummy-prefix space, and decodes back
    assert tok.decode(tok.encode(text)) == "<s>" + text
    assert tok.decode(tok.encode(text), skip_special_tokens=True) == text.replace("</s><s>", "")


def test_tiny_batch_padding_collator_pickle(tiny):
    tok = load_tokenizer(tiny, padding_side="left")
    with pytest.raises(ValueError):
        tok(["我是", "hello world"], padding=True)  # no pad token until the caller picks one
    tok.pad_token = tok.unk_token
    batch = tok(["我是", "hello world data"], padding=True)
    assert batch["input_ids"][0][0] == tok.pad_token_id and batch["attention_mask"][0][0] == 0
    tok.padding_side = "right"
    from transformers import DataCollatorForSeq2Seq

    feats = [{"input_ids": [1, 5, 6], "labels": [-100, 5, 6]}, {"input_ids": [1, 7], "labels": [-100, 7]}]
    out = DataCollatorForSeq2Seq(tok, padding=True)(feats)
    assert out["input_ids"].tolist() == [[1, 5, 6], [1, 7, tok.pad_token_id]]
    assert out["labels"].tolist() == [[-100, 5, 6], [-100, 7, -100]]
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode("我是 model") == tok.encode("我是 model") and clone.pad_token == tok.pad_token


def test_tiny_generate_with_stop_strings(tiny):
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_tokenizer(tiny)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    enc = tok("我是 model", return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=6, do_sample=False, stop_strings=["</s>"], tokenizer=tok)
    assert out.shape[1] > enc["input_ids"].shape[1]
    assert isinstance(tok.decode(out[0], skip_special_tokens=True), str)


def test_save_load_round_trip_and_added_pad(tiny, tmp_path):
    sp = _sp(tiny)
    size = sp.get_piece_size()
    v1 = tmp_path / "alpaca-like"
    v1.mkdir()
    shutil.copy(tiny / "tokenizer.model", v1 / "tokenizer.model")
    (v1 / "added_tokens.json").write_text(json.dumps({"[PAD]": size}))
    (v1 / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "[PAD]"})
    )
    (v1 / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True}))
    tok = load_tokenizer(v1)
    assert len(tok) == size + 1
    assert tok.pad_token == "[PAD]" and tok.pad_token_id == size
    assert tok.encode("我是[PAD]你") == [1, *sp.encode("我是"), size, *sp.encode("你")]
    assert tok.decode([*sp.encode("我是"), size], skip_special_tokens=True) == "我是"

    saved = tmp_path / "saved"
    files = tok.save_pretrained(saved)
    names = {p.rsplit("/", 1)[-1] for p in files}
    assert {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"} <= names
    config = json.loads((saved / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "LlamaTokenizer" and config["use_fast"] is False
    again = load_tokenizer(saved)
    assert len(again) == len(tok) and again.pad_token_id == size
    for text in _lines(2, 50) + ["[PAD]我</s>"]:
        assert again.encode(text) == tok.encode(text)
    assert (saved / "tokenizer.model").read_bytes() == (tiny / "tokenizer.model").read_bytes()


def test_chat_template_by_id(tiny):
    from helpers.tokens import build_prompt

    sp = _sp(tiny)
    tok = load_tokenizer(tiny, chat_template="llama2-zh")
    msgs = [{"role": "user", "content": "我是"}, {"role": "assistant", "content": "你好"}, {"role": "user", "content": "再见"}]
    prompt = build_prompt("llama2-zh", "再见", history=[("我是", "你好")])
    assert tok.apply_chat_template(msgs, tokenize=False) == prompt
    ids = tok.apply_chat_template(msgs, return_dict=False)
    assert ids == tok.encode(prompt)  # one BOS, as tokenizer(prompt) gives
    assert ids[0] == sp.bos_id() and ids[1] != sp.bos_id()


def test_bpe_folder_uses_fast_tokenizer(tmp_path):
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_lines(3, 300), trainer)
    bpe.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "tokenizer_class": "PreTrainedTokenizerFast"})
    )
    tok = load_tokenizer(tmp_path)
    assert tok.is_fast
    reference = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in _lines(4, 50):
        assert tok.encode(text, add_special_tokens=False) == reference.encode(text, add_special_tokens=False).ids
    assert tok.convert_tokens_to_ids("<|eot_id|>") == reference.token_to_id("<|eot_id|>")


def test_tokenizer_class_for_the_installed_transformers(monkeypatch):
    import sys

    import transformers

    from helpers.tokens.llama_folder import LlamaFolderMixin

    try:  # transformers 5
        from transformers.tokenization_utils_sentencepiece import SentencePieceBackend as base
    except ImportError:  # transformers 4
        base = transformers.LlamaTokenizer
    assert issubclass(tokenizer_class(), base) and issubclass(tokenizer_class(), LlamaFolderMixin)
    # without SentencePieceBackend (transformers 4) the slow LlamaTokenizer is the base
    monkeypatch.setitem(sys.modules, "transformers.tokenization_utils_sentencepiece", None)
    legacy = tokenizer_class()
    assert legacy.__name__ == "LegacyLlamaTokenizer"
    assert issubclass(legacy, transformers.LlamaTokenizer) and issubclass(legacy, LlamaFolderMixin)


def test_missing_or_bad_files(tmp_path):
    with pytest.raises(UserError, match="tokenizer.model"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"IHRoZQ== 0\nIGE= 1\n")  # tiktoken-style, not sentencepiece
    with pytest.raises(UserError, match="not a sentencepiece"):
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match="not found"):
        load_tokenizer(tmp_path / "absent")


# ----------------------------------------------------------------------------- released tokenizers (tests/data)


@pytest.fixture(scope="module")
def zh2(released_tokenizers):
    return released_tokenizers["chinese-llama-2-tokenizer"]


@pytest.fixture(scope="module")
def repo_zh_lines(tmp_path_factory) -> list[str]:
    """Chinese text shipped in the repo, so parity runs on a plain clone: the demo corpus, its clauses, the demo's
    instruction data, the templates' Chinese system prompts, and the tricky strings above."""
    from helpers.demo.tokenizers import corpus
    from helpers.demo.data import write_data
    from helpers.tokens.templates import ZH_SYSTEM, ZH_SYSTEM_LONG

    lines = corpus("zh")
    clauses = [c for line in lines for c in re.split("[，。、；：！？]", line) if c.strip()]
    folder = tmp_path_factory.mktemp("demo-data")
    write_data(folder)
    sft = json.loads((folder / "sft_zh.json").read_text(encoding="utf-8"))
    records = [row[key] for row in sft for key in ("instruction", "input", "output") if row[key]]
    return list(dict.fromkeys(lines + clauses + records + [ZH_SYSTEM, ZH_SYSTEM_LONG] + TRICKY))


def _assert_sentencepiece_parity(tok, sp, lines: list[str]) -> None:
    """Ids, BOS wrapping and decoding equal sentencepiece's (the independent reference) on every line."""
    mismatches = [t for t in lines if tok.encode(t, add_special_tokens=False) != sp.encode(t)]
    assert mismatches == []
    for text in lines:
        ids = sp.encode(text)
        assert tok(text)["input_ids"] == [sp.bos_id(), *ids]
        if sp.unk_id() in ids:  # no byte fallback: "<unk>" in transformers, " ⁇ " in sentencepiece
            continue
        assert tok.decode(ids) == sp.decode(ids)
        assert tok.decode([sp.bos_id(), *ids, sp.eos_id()], skip_special_tokens=True) == sp.decode(ids)


def _auto_mismatches(folder, sp, lines: list[str]) -> int:
    """Lines where transformers' AutoTokenizer (the converted fast tokenizer) disagrees with sentencepiece."""
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(folder))
    return sum(auto.encode(t, add_special_tokens=False) != sp.encode(t) for t in lines)


def test_chinese_llama2_parity_on_repo_text(zh2, repo_zh_lines):
    sp = _sp(zh2)
    assert len(repo_zh_lines) > 300
    _assert_sentencepiece_parity(load_tokenizer(zh2), sp, repo_zh_lines)
    # the same check catches transformers' converted fast tokenizer (the trap load_tokenizer avoids)
    auto_mismatches = _auto_mismatches(zh2, sp, repo_zh_lines)
    assert auto_mismatches > 0, ("transformers' converted fast tokenizer now matches sentencepiece: the trap "
                                 "load_tokenizer avoids is gone; revisit DESIGN.md's known traps")


def test_chinese_sp_20k_parity_on_repo_text(released_tokenizers, repo_zh_lines):
    model = released_tokenizers["chinese_sp_20k.model"]
    sp = spm.SentencePieceProcessor(model_file=str(model))
    tok = load_tokenizer(model)  # a bare .model file: no configs beside it
    assert len(tok) == sp.get_piece_size() == 20000
    _assert_sentencepiece_parity(tok, sp, repo_zh_lines)


def _fixture_lines(shared_fixtures) -> list[str]:
    data = json.loads((shared_fixtures / "ruozhiba_qa2449_gpt4o.json").read_text(encoding="utf-8"))
    return [row[key] for row in data for key in ("instruction", "output") if row.get(key)]


def test_chinese_llama2_parity_on_every_line(zh2, shared_fixtures):
    sp = _sp(zh2)
    tok = load_tokenizer(zh2)
    lines = _fixture_lines(shared_fixtures)
    assert len(lines) > 4000
    mismatches = [t for t in lines if tok.encode(t, add_special_tokens=False) != sp.encode(t)]
    assert mismatches == []
    assert [t for t in lines if tok.decode(sp.encode(t)) != sp.decode(sp.encode(t))] == []
    # the same check catches transformers' converted fast tokenizer (the trap load_tokenizer avoids)
    auto_mismatches = _auto_mismatches(zh2, sp, lines)
    assert auto_mismatches > 0, ("transformers' converted fast tokenizer now matches sentencepiece: the trap "
                                 "load_tokenizer avoids is gone; revisit DESIGN.md's known traps")


def test_chinese_llama2_known_ids_specials_decode(zh2, repo_zh_lines):
    sp = _sp(zh2)
    tok = load_tokenizer(zh2)
    assert len(tok) == 55296
    assert sp.encode("详细介绍一下") == [29871, 50302, 32095]
    assert tok.encode("详细介绍一下") == [1, 29871, 50302, 32095]
    assert tok("详细介绍一下", add_special_tokens=False)["input_ids"] == [29871, 50302, 32095]
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (1, 2, 0)
    assert tok.pad_token == "<pad>" and tok.pad_token_id == 32000  # named by special_tokens_map.json, in the vocab
    prompt = "[INST] <<SYS>>\n系统\n<</SYS>>\n\n问 [/INST] 答</s><s>[INST] 详细介绍一下 [/INST]"
    expected = [1, *sp.encode("[INST] <<SYS>>\n系统\n<</SYS>>\n\n问 [/INST] 答"), 2, 1,
                *sp.encode("[INST] 详细介绍一下 [/INST]")]
    assert tok.encode(prompt) == expected
    for text in repo_zh_lines[:300]:
        ids = sp.encode(text)
        assert tok.decode(ids) == sp.decode(ids)
        assert tok.decode(tok.encode(text), skip_special_tokens=True) == sp.decode(ids)


def test_chinese_llama2_save_load(zh2, tmp_path, repo_zh_lines):
    tok = load_tokenizer(zh2)
    tok.save_pretrained(tmp_path / "out")
    again = load_tokenizer(tmp_path / "out")
    assert len(again) == 55296 and again.pad_token_id == tok.pad_token_id
    for text in repo_zh_lines[:200]:
        assert again.encode(text) == tok.encode(text)


def test_llama2_32k_vocab(shared_fixtures):
    folder = shared_fixtures / "llama-2-tokenizer-32k"
    if not (folder / "tokenizer.model").is_file():
        pytest.skip("llama-2-tokenizer-32k fixture not available")
    tok = load_tokenizer(folder)
    sp = _sp(folder)
    assert len(tok) == 32000
    assert tok.pad_token is None  # "<pad>" is named but not in this vocabulary: left unset, not added
    assert tok.encode("详细介绍一下") == [1, *sp.encode("详细介绍一下")]
