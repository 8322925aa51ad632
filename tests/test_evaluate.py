"""Perplexity, KL divergence of quants and C-Eval-style multiple choice on tiny demo models."""
from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

import pytest

from helpers.util import UserError

TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for f in TOKENIZER_FILES:
        shutil.copyfile(src / f, dst / f)


def _lines(path: Path, n: int) -> str:
    return "\n".join(path.read_text(encoding="utf-8").splitlines()[:n]) + "\n"


def _shuffled(text: str, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "\n".join("".join(rng.sample(line, len(line))) for line in text.splitlines()) + "\n"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory) -> Path:
    """The demo Llama-2 base after 40 Adam steps on pt_zh.txt (fp32 CPU), saved in fp16."""
    import torch
    from transformers import AutoModelForCausalLM

    from helpers.tokens import load_tokenizer

    src = demo / "Llama-2-7b-hf"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    ids = torch.tensor(load_tokenizer(src).encode((demo / "data" / "pt_zh.txt").read_text(encoding="utf-8")))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        starts = torch.randint(0, len(ids) - 65, (4,), generator=g)
        batch = torch.stack([ids[s:s + 64] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("trained") / "model"
    model.half().save_pretrained(out)
    _copy_tokenizer(src, out)
    return out


@pytest.fixture(scope="module")
def ggufs(trained, tmp_path_factory) -> dict[str, Path]:
    """F16 GGUF of the trained model and its Q8_0 / Q4_K_M quants (helpers.gguf)."""
    pytest.importorskip("llama_cpp")
    from helpers.gguf import QuantizeOptions, convert_hf_to_gguf, quantize

    d = tmp_path_factory.mktemp("gguf")
    f16 = convert_hf_to_gguf(trained, d / "tiny-f16.gguf", outtype="f16")
    return {"F16": f16, "Q8_0": quantize(f16, d / "tiny-q8_0.gguf", QuantizeOptions(qtype="q8_0", modelfile=False)),
            "Q4_K_M": quantize(f16, d / "tiny-q4_k_m.gguf", QuantizeOptions(qtype="q4_k_m", modelfile=False))}


# ---------------------------------------------------------------------------------------------- perplexity
def test_windows_score_every_token_once():
    from helpers.evaluate.perplexity import windows

    for n, n_ctx, stride in [(1000, 128, 64), (1000, 128, 128), (129, 128, 64), (5, 512, 256), (2, 8, 8), (300, 100, 37)]:
        seen = []
        for begin, end, first in windows(n, n_ctx, stride):
            assert end - begin <= n_ctx and begin < first <= end
            assert first - begin == (1 if begin == 0 else max(n_ctx - stride, 1))  # later windows keep context
            seen += range(first, end)
        assert seen == list(range(1, n))
    with pytest.raises(UserError):
        list(windows(10, 8, 9))


def test_perplexity_matches_transformers_loss(trained, demo):
    """One window: the perplexity is exp of the mean token loss transformers computes itself."""
    import math

    import torch
    from transformers import AutoModelForCausalLM

    from helpers.tokens import load_tokenizer
    from helpers.evaluate import perplexity

    text = _lines(demo / "data" / "heldout_zh.txt", 3)
    ids = torch.tensor([load_tokenizer(trained).encode(text)])
    assert ids.shape[1] < 256
    model = AutoModelForCausalLM.from_pretrained(trained, dtype=torch.float32)
    with torch.no_grad():
        ref = math.exp(model(input_ids=ids, labels=ids).loss.item())
    assert perplexity(trained, text, n_ctx=256, stride=128) == pytest.approx(ref, rel=1e-4)
    # several windows of the same text stay close (less context per token, same tokens)
    assert perplexity(trained, text, n_ctx=32, stride=16) == pytest.approx(ref, rel=0.5)


def test_open_model_uses_the_dtype_keyword_of_older_transformers(demo, monkeypatch):
    """Before transformers 4.56 ``from_pretrained`` takes ``torch_dtype``; ``dtype`` would not set the precision."""
    import torch
    import transformers

    from helpers.evaluate.scorers import open_model

    seen: dict = {}

    class Stop(Exception):
        pass

    def fake_from_pretrained(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(transformers, "__version__", "4.50.0")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    with pytest.raises(Stop):
        open_model(demo / "Llama-2-7b-hf", backend="transformers", dtype="bfloat16")
    assert seen.get("torch_dtype") is torch.bfloat16 and "dtype" not in seen


def test_perplexity_lower_on_training_text_than_shuffled(trained, demo, tmp_path):
    from helpers.evaluate import perplexity

    text = _lines(demo / "data" / "pt_zh.txt", 20)
    f = tmp_path / "pt.txt"
    f.write_text(text, encoding="utf-8")
    ppl = perplexity(trained, f, n_ctx=128, stride=64)  # a path to a file
    ppl_shuffled = perplexity(trained, _shuffled(text), n_ctx=128, stride=64)
    assert 1.0 < ppl < 0.7 * ppl_shuffled, (ppl, ppl_shuffled)
    ppl_base = perplexity(demo / "Llama-2-7b-hf", text, n_ctx=128, stride=64)
    assert ppl < 0.5 * ppl_base  # the training did something


def test_perplexity_backends_agree(trained, ggufs, demo):
    from helpers.evaluate import perplexity

    text = _lines(demo / "data" / "heldout_zh.txt", 20)
    hf = perplexity(trained, text, backend="transformers", n_ctx=128, stride=64)
    cpp = perplexity(ggufs["F16"], text, backend="llama.cpp", n_ctx=128, stride=64)
    assert cpp == pytest.approx(hf, rel=0.03), (hf, cpp)
    # llama-perplexity's chunks: the tool's own run on the GGUF, the same chunks through transformers
    hf_chunks = perplexity(trained, text, backend="transformers", n_ctx=64, method="llama.cpp", chunks=3)
    cpp_chunks = perplexity(ggufs["F16"], text, n_ctx=64, method="llama.cpp", chunks=3)
    assert cpp_chunks == pytest.approx(hf_chunks, rel=0.03) and cpp_chunks != pytest.approx(cpp, rel=1e-3)


# ---------------------------------------------------------------------------------------------- KL divergence
def test_kl_divergence_grows_with_quantization(ggufs, demo):
    from helpers.evaluate import perplexity
    from helpers.evaluate.perplexity import kl_divergence

    text = _lines(demo / "data" / "heldout_zh.txt", 20)
    same = kl_divergence(ggufs["F16"], ggufs["F16"], text, n_ctx=128, stride=64)
    assert same.mean_kld < 1e-6 and same.max_kld < 1e-6 and same.top1_agreement == 1.0
    assert same.ppl_ref == pytest.approx(same.ppl_quant, rel=1e-9)
    assert same.ppl_ref == pytest.approx(perplexity(ggufs["F16"], text, n_ctx=128, stride=64), rel=1e-9)
    q8 = kl_divergence(ggufs["F16"], ggufs["Q8_0"], text, n_ctx=128, stride=64)
    q4 = kl_divergence(ggufs["F16"], ggufs["Q4_K_M"], text, n_ctx=128, stride=64)
    assert 1e-6 < q8.mean_kld < q4.mean_kld, (q8, q4)
    assert q8.max_kld <= q4.max_kld * 10 and q8.top1_agreement >= q4.top1_agreement
    assert q8.n_tokens == q4.n_tokens == same.n_tokens > 100


def test_compare_quants_table_and_plot(ggufs, demo, tmp_path):
    from matplotlib.figure import Figure

    from helpers.evaluate import compare_quants, plot_quant_table
    from helpers.gguf import gguf_type

    rows = compare_quants(ggufs["F16"], [ggufs["Q8_0"], ggufs["Q4_K_M"]], _lines(demo / "data" / "heldout_zh.txt", 10),
                          n_ctx=128, stride=64)
    assert [r["type"] for r in rows] == ["F16", "Q8_0", "Q4_K_M"]
    assert [gguf_type(p) for p in ggufs.values()] == list(ggufs)
    unnamed = tmp_path / "model.gguf"  # no type in the name: it comes from general.file_type
    shutil.copyfile(ggufs["Q4_K_M"], unnamed)
    assert gguf_type(unnamed) == "Q4_K_M"
    assert rows[0]["size"] > rows[1]["size"] > rows[2]["size"]
    assert rows[0]["kld"] == 0.0 and rows[1]["kld"] < rows[2]["kld"]
    assert all(r["ppl"] > 1 for r in rows)
    fig = plot_quant_table(rows)
    assert isinstance(fig, Figure) and len(fig.axes) == 3


def test_quality_table_loads_one_model_at_a_time(ggufs, demo, monkeypatch):
    """An F16 7B and its Q4_K_M do not fit a T4 (or Colab's RAM) together: never hold two models at once,
    and get the same figures as measuring each pair directly."""
    import llama_cpp

    from helpers.evaluate import compare_quants, perplexity
    from helpers.evaluate.perplexity import kl_divergence

    text = _lines(demo / "data" / "heldout_zh.txt", 10)
    direct = [perplexity(ggufs["F16"], text, n_ctx=128, stride=64),
              *(kl_divergence(ggufs["F16"], ggufs[t], text, n_ctx=128, stride=64) for t in ("Q8_0", "Q4_K_M"))]
    live, peak = set(), []
    real_init, real_close = llama_cpp.Llama.__init__, llama_cpp.Llama.close

    def init(self, *a, **k):
        real_init(self, *a, **k)
        live.add(id(self))
        peak.append(len(live))

    def close(self):
        live.discard(id(self))
        real_close(self)

    monkeypatch.setattr(llama_cpp.Llama, "__init__", init)
    monkeypatch.setattr(llama_cpp.Llama, "close", close)
    rows = compare_quants(ggufs["F16"], [ggufs["Q8_0"], ggufs["Q4_K_M"]], text, n_ctx=128, stride=64)
    assert len(peak) == 3 and max(peak) == 1 and not live
    assert rows[0]["ppl"] == pytest.approx(direct[0], rel=1e-9)
    for row, kl in zip(rows[1:], direct[1:]):
        assert (row["ppl"], row["kld"], row["top1"]) == pytest.approx((kl.ppl_quant, kl.mean_kld, kl.top1_agreement),
                                                                      rel=1e-9)


# ---------------------------------------------------------------------------------------------- multiple choice
def _sp_letter_ids(model_dir: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Sentencepiece ids of each letter right after ``答案：`` and with the dummy-prefix space (``▁A``)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    after = {c: sp.encode("答案：" + c)[-1] for c in "ABCD"}
    spaced = {c: sp.piece_to_id("\u2581" + c) for c in "ABCD"}
    return after, {c: i for c, i in spaced.items() if i != sp.unk_id()}  # the tiny vocabulary lacks some


def _planted(demo: Path, out: Path, letter: str) -> Path:
    """The demo base rigged so that, at every position, ``letter`` (as encoded after ``：``) beats the others.

    Channel 0 of the residual stream is held at a constant (embeddings set to 10, no layer writes to it);
    the letter rows of lm_head read only that channel: +50 for the planted letter's in-context token,
    +20 for the other letters' in-context tokens, 0 for every ``▁X`` variant (the releases' scoring adds the
    score of ``encode("X")[0]``, which is ``▁X`` where the vocabulary has it).
    """
    import torch
    from transformers import AutoModelForCausalLM

    src = demo / "Llama-2-7b-hf"
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    after, spaced = _sp_letter_ids(src)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 10.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        model.model.norm.weight[0] = 1.0
        head = model.lm_head.weight
        for c in "ABCD":
            head[after[c]] = 0.0
            head[after[c], 0] = 50.0 if c == letter else 20.0
            if c in spaced:
                head[spaced[c]] = 0.0
    model.save_pretrained(out)
    _copy_tokenizer(src, out)
    return out


@pytest.fixture(scope="module")
def planted_b(demo, tmp_path_factory) -> Path:
    return _planted(demo, tmp_path_factory.mktemp("planted") / "b", "B")


def _answers(csv_path: Path) -> list[str]:
    with csv_path.open(encoding="utf-8") as f:
        return [row["answer"] for row in csv.DictReader(f)]


def test_mc_prompt_format():
    from helpers.evaluate.choice import format_item, mc_prompt

    row = {"id": "0", "question": "1加2等于多少？", "A": "3", "B": "4", "C": "1", "D": "5", "answer": "A"}
    item = "1加2等于多少？\nA. 3\nB. 4\nC. 1\nD. 5\n答案："
    assert format_item(row, with_answer=False) == item
    assert mc_prompt(row) == item
    shot = {**row, "question": "2加2等于多少？", "answer": "B"}
    shot_text = "2加2等于多少？\nA. 3\nB. 4\nC. 1\nD. 5\n答案：B\n\n"
    assert mc_prompt(row, shots=[shot, shot], subject="数学") == (
        "以下是中国关于数学考试的单项选择题，请选出其中的正确答案。\n\n" + shot_text * 2 + item)
    chat = mc_prompt(row, shots=[shot], subject="数学", template="llama2-zh")
    assert chat.index("以下是中国关于数学考试") < chat.index("2加2等于多少？") < chat.index(item)
    assert chat.rstrip().endswith("[/INST]") and "[INST]" in chat


def test_letter_ids_are_the_scripts(planted_b):
    """The ids the releases' scripts read: ``encode("A", add_special_tokens=False)[0]`` and ``encode("：A")[-1]``."""
    import sentencepiece as spm

    from helpers.evaluate.choice import letter_ids
    from helpers.evaluate.exam import open_scorer

    sp = spm.SentencePieceProcessor(model_file=str(planted_b / "tokenizer.model"))
    with open_scorer(planted_b) as (scorer, _, _):
        ids = letter_ids(scorer)
    assert list(ids.bare) == [sp.encode(c)[0] for c in "ABCD"]
    assert list(ids.cued) == [sp.encode("：" + c)[-1] for c in "ABCD"]
    assert len(set(ids.cued)) == 4


def test_multiple_choice_picks_planted_answer(planted_b, demo, tmp_path):
    from helpers.evaluate import multiple_choice

    csv_path = demo / "data" / "ceval_sample.csv"
    answers = _answers(csv_path)
    report = multiple_choice(planted_b, csv_path)
    assert report.n == len(answers) == len(report.per_item)
    assert [it["pred"] for it in report.per_item] == ["B"] * len(answers)
    assert report.accuracy == pytest.approx(answers.count("B") / len(answers))
    assert report.correct == answers.count("B")
    assert all(it["probs"]["B"] > 0.9 for it in report.per_item)

    five = multiple_choice(planted_b, csv_path, shots=5, subject="数学", template="llama2-zh", limit=3)
    assert five.n == 3 and all(it["pred"] == "B" and it["shots"] == 5 for it in five.per_item)

    other = _planted(demo, tmp_path / "d", "D")
    report_d = multiple_choice(other, csv_path, shots=2)
    assert {it["pred"] for it in report_d.per_item} == {"D"}
    assert report_d.accuracy == pytest.approx(answers.count("D") / len(answers))


def test_multiple_choice_through_llama_cpp(planted_b, demo, tmp_path):
    pytest.importorskip("llama_cpp")
    from helpers.evaluate import multiple_choice
    from helpers.gguf import convert_hf_to_gguf

    gguf = convert_hf_to_gguf(planted_b, tmp_path / "planted-f16.gguf", outtype="f16")
    csv_path = demo / "data" / "ceval_sample.csv"
    report = multiple_choice(gguf, csv_path, shots=5, n_ctx=1024)
    assert [it["pred"] for it in report.per_item] == ["B"] * report.n
    assert report.accuracy == pytest.approx(_answers(csv_path).count("B") / report.n)


def test_multiple_choice_bad_csv(planted_b, tmp_path):
    from helpers.evaluate import multiple_choice

    bad = tmp_path / "bad.csv"
    bad.write_text("id,q,a\n1,x,y\n", encoding="utf-8")
    with pytest.raises(UserError, match="C-Eval columns"):
        multiple_choice(planted_b, bad)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_evaluate(trained, planted_b, demo, tmp_path, capsys):
    import json

    from helpers.__main__ import main

    text = tmp_path / "t.txt"
    text.write_text(_lines(demo / "data" / "pt_zh.txt", 5), encoding="utf-8")
    assert main(["evaluate", "--model", str(trained), "--ppl", str(text), "--n-ctx", "64", "--stride", "32",
                 "--json", str(tmp_path / "ppl.json")]) == 0
    assert capsys.readouterr().out.startswith("perplexity ")
    assert json.loads((tmp_path / "ppl.json").read_text(encoding="utf-8"))["perplexity"] > 1
    csv_path = demo / "data" / "ceval_sample.csv"
    assert main(["evaluate", "--model", str(planted_b), "--mc", str(csv_path), "--shots", "1"]) == 0
    n_b = _answers(csv_path).count("B")
    assert f"({n_b}/{len(_answers(csv_path))}, 1-shot)" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(trained), "--kld-ref", str(trained)]) == 2
    assert "--text" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--ppl", str(text)]) != 0
