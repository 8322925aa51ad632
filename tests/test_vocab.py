"""Vocabulary expansion (sentencepiece merge, HF tokenizer folder) and the new-embedding initialisation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.util import UserError


def _pieces(model_file: Path):
    """(piece, score, type) of every piece, read straight from sentencepiece's protobuf."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    return [(p.piece, p.score, p.type) for p in proto.pieces]


def _sp(model_file: Path):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(model_file))


def _n_tokens(model_file: Path, lines: list[str]) -> int:
    sp = _sp(model_file)
    return sum(len(sp.encode(line)) for line in lines)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A LLaMA-style base (BPE, byte fallback, mostly English) and a Chinese unigram model, trained here."""
    from helpers.demo.tokenizers import corpus, train_sentencepiece

    d = tmp_path_factory.mktemp("sp")
    base, add = d / "base.model", d / "zh.model"
    base.write_bytes(train_sentencepiece(corpus("en") + corpus("zh")[:4], vocab_size=500, model_type="bpe",
                                         llama_style=True))
    add.write_bytes(train_sentencepiece(corpus("zh"), vocab_size=800, model_type="unigram", llama_style=False))
    return base, add


def test_expand_generated_tokenizers(tiny_pair, tmp_path):
    from helpers.tokens import load_tokenizer
    from helpers.demo.tokenizers import corpus
    from helpers.tokens import expand_vocab

    base, add = tiny_pair
    base_pieces, add_pieces = _pieces(base), _pieces(add)
    known = {p for p, _, _ in base_pieces}
    normal = 1  # sentencepiece ModelProto.SentencePiece.NORMAL
    expected_new = [p for p, _, t in add_pieces if t == normal and p not in known]
    zh = corpus("zh")
    report = expand_vocab(base, add, tmp_path / "tok", sample_text="\n".join(zh))

    merged = _pieces(tmp_path / "tok" / "tokenizer.model")
    assert report.base_size == len(base_pieces) and report.new_size == len(merged)
    assert len(merged) == len(base_pieces) + len(expected_new) and report.added == len(expected_new)
    assert merged[: len(base_pieces)] == base_pieces  # ids, scores and types of the base untouched
    assert [p for p, _, _ in merged[len(base_pieces):]] == expected_new
    assert all(s == 0.0 and t == normal for _, s, t in merged[len(base_pieces):])

    # the report's counts are sentencepiece's own, and Chinese gets much cheaper
    before, after = _n_tokens(base, zh), _n_tokens(tmp_path / "tok" / "tokenizer.model", zh)
    assert (report.tokens_before, report.tokens_after) == (before, after)
    assert before >= 1.5 * after and report.ratio >= 1.5
    assert report.sample_chars == sum(len("".join(line.split())) for line in zh)
    assert report.tokens_per_char_after < report.tokens_per_char_before

    # HF tokenizer files: slow LlamaTokenizer, and the project's loader encodes exactly like sentencepiece
    cfg = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["tokenizer_class"] == "LlamaTokenizer" and cfg["use_fast"] is False
    special = json.loads((tmp_path / "tok" / "special_tokens_map.json").read_text(encoding="utf-8"))
    assert special == {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    tok = load_tokenizer(tmp_path / "tok")
    sp = _sp(tmp_path / "tok" / "tokenizer.model")
    for line in zh[:5]:
        assert tok.encode(line, add_special_tokens=False) == sp.encode(line)
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind


def test_expand_llama_32k_plus_chinese_20k(shared_fixtures, released_tokenizers, tmp_path):
    from helpers.tokens import expand_vocab

    base = shared_fixtures / "llama-2-tokenizer-32k" / "tokenizer.model"
    add = released_tokenizers["chinese_sp_20k.model"]
    qa = shared_fixtures / "ruozhiba_qa2449_gpt4o.json"
    for f in (base, qa):
        if not f.is_file():
            pytest.skip(f"{f.name} not in ../shared/fixtures")
    lines = [item["output"] for item in json.loads(qa.read_text(encoding="utf-8"))[:300]]
    report = expand_vocab(base.parent, add, tmp_path / "zh", sample_text="\n".join(lines))
    merged = _pieces(tmp_path / "zh" / "tokenizer.model")
    assert len(merged) == report.new_size == 49953 and report.base_size == 32000
    assert merged[:32000] == _pieces(base)
    before, after = _n_tokens(base, lines), _n_tokens(tmp_path / "zh" / "tokenizer.model", lines)
    assert before >= 1.5 * after, (before, after)
    assert report.ratio >= 1.5


def test_expand_with_released_chinese_20k(tiny_pair, released_tokenizers, tmp_path):
    """The real 20k Chinese model (vendored) merged into the generated LLaMA-style base: runs on a plain clone."""
    from helpers.demo.tokenizers import corpus
    from helpers.tokens import expand_vocab, load_tokenizer

    base, add = tiny_pair[0], released_tokenizers["chinese_sp_20k.model"]
    base_pieces = _pieces(base)
    known = {p for p, _, _ in base_pieces}
    expected_new = [p for p, _, t in _pieces(add) if t == 1 and p not in known]  # 1: NORMAL
    assert len(expected_new) > 19000
    zh = corpus("zh")
    report = expand_vocab(base, add, tmp_path / "zh", sample_text="\n".join(zh))
    merged = _pieces(tmp_path / "zh" / "tokenizer.model")
    assert merged[: len(base_pieces)] == base_pieces
    assert [p for p, _, _ in merged[len(base_pieces):]] == expected_new and report.added == len(expected_new)
    before, after = _n_tokens(base, zh), _n_tokens(tmp_path / "zh" / "tokenizer.model", zh)
    assert (report.tokens_before, report.tokens_after) == (before, after) and before >= 1.5 * after
    tok, sp = load_tokenizer(tmp_path / "zh"), _sp(tmp_path / "zh" / "tokenizer.model")
    assert len(tok) == len(merged)
    assert all(tok.encode(line, add_special_tokens=False) == sp.encode(line) for line in zh)


def test_cli_expand_vocab(tiny_pair, tmp_path, capsys):
    from helpers.__main__ import main

    base, add = tiny_pair
    sample = tmp_path / "sample.txt"
    sample.write_text("北京是中国的首都。\n今天天气很好。\n", encoding="utf-8")
    assert main(["expand-vocab", "--base", str(base), "--add", str(add), "--out", str(tmp_path / "o"),
                 "--sample", str(sample)]) == 0
    out = capsys.readouterr().out
    assert f"{len(_pieces(base))} -> {len(_pieces(tmp_path / 'o' / 'tokenizer.model'))} pieces" in out
    assert "tokens/char" in out
    assert main(["expand-vocab", "--base", str(tmp_path / "missing"), "--add", str(add), "--out",
                 str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "x").exists()


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(folder.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    return sd


def test_init_new_embeddings_mean_of_old_pieces(demo, tmp_path):
    import torch

    from helpers.tokens import piece_count
    from helpers.tokens.vocab import init_new_embeddings, split_new_pieces
    from helpers.tokens.sentencepiece import sp_processor

    base = demo / "Llama-2-7b-hf"
    new_tok = demo / "chinese-llama-2-lora-7b"  # the demo base tokenizer + a Chinese vocabulary
    report = init_new_embeddings(base, new_tok, tmp_path / "m")
    n_old, n_new = piece_count(base / "tokenizer.model"), piece_count(new_tok / "tokenizer.model")
    assert (report.old_size, report.new_size) == (n_old, n_new) and n_new > n_old
    old, new = _weights(base), _weights(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    assert cfg["vocab_size"] == n_new
    assert (tmp_path / "m" / "tokenizer.model").read_bytes() == (new_tok / "tokenizer.model").read_bytes()

    splits = split_new_pieces(base, new_tok)
    assert sorted(splits) == list(range(n_old, n_new))
    # independent check of the split: the old pieces spell the new piece exactly
    old_sp, new_sp = sp_processor(base, dummy_prefix=False), sp_processor(new_tok)
    for i, ids in splits.items():
        assert old_sp.decode(ids) == new_sp.id_to_piece(i).replace("\u2581", " ")
        assert all(0 <= j < n_old for j in ids) and old_sp.unk_id() not in ids
    assert any(len(ids) > 1 for ids in splits.values())
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        w_old, w_new = old[key].float(), new[key].float()
        assert w_new.shape == (n_new, w_old.shape[1])
        assert torch.equal(w_new[:n_old], w_old)  # old rows untouched
        ref = torch.stack([w_old[splits[i]].mean(0) for i in range(n_old, n_new)]).to(new[key].dtype).float()
        assert torch.equal(w_new[n_old:], ref)
    # the other weights are copied unchanged
    assert torch.equal(new["model.layers.0.self_attn.q_proj.weight"], old["model.layers.0.self_attn.q_proj.weight"])


def test_init_new_embeddings_added_pad_and_errors(demo, tiny_pair, tmp_path):
    import torch

    from helpers.tokens import piece_count
    from helpers.tokens.vocab import init_new_embeddings

    base = demo / "Llama-2-7b-hf"
    alpaca = demo / "chinese-alpaca-lora-7b"  # Chinese vocabulary on the same base pieces, plus an added [PAD]
    assert (alpaca / "added_tokens.json").is_file()
    n = piece_count(alpaca / "tokenizer.model")
    report = init_new_embeddings(base, alpaca, tmp_path / "m")
    assert report.new_size == n + 1
    old, new = _weights(base), _weights(tmp_path / "m")
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(new[key][n].float(), old[key].float().mean(0).to(torch.float16).float())
    assert (tmp_path / "m" / "added_tokens.json").is_file()

    with pytest.raises(UserError, match="does not extend"):
        init_new_embeddings(base, tiny_pair[1], tmp_path / "bad")  # an unrelated sentencepiece model
    with pytest.raises(UserError, match="not found"):
        init_new_embeddings(base, demo / "Meta-Llama-3-8B-Instruct", tmp_path / "bad")  # BPE, no tokenizer.model
    assert not (tmp_path / "bad").exists()


def test_init_new_embeddings_counts_tokens_added_in_tokenizer_config(demo, tmp_path):
    """transformers' newer tokenizer folders list an added ``[PAD]`` only in tokenizer_config.json."""
    import shutil

    from helpers.tokens import piece_count
    from helpers.tokens.vocab import init_new_embeddings

    src = demo / "chinese-llama-2-lora-7b"
    tok = tmp_path / "tok"
    tok.mkdir()
    shutil.copyfile(src / "tokenizer.model", tok / "tokenizer.model")
    n = piece_count(tok / "tokenizer.model")
    config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = {str(n): {"content": "[PAD]", "lstrip": False, "normalized": False,
                                                "rstrip": False, "single_word": False, "special": True}}
    config["pad_token"] = "[PAD]"
    (tok / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    assert not (tok / "added_tokens.json").exists()
    report = init_new_embeddings(demo / "Llama-2-7b-hf", tok, tmp_path / "m")
    assert report.new_size == n + 1  # the [PAD] id n needs a row
    cfg = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    assert cfg["vocab_size"] == n + 1
    assert _weights(tmp_path / "m")["model.embed_tokens.weight"].shape[0] == n + 1
