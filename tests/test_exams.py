"""C-Eval and CMMLU as the releases score them, on the demo models, against a naive re-implementation
(tests/exam_reference.py), on transformers (16-bit; bitsandbytes 8/4-bit) and llama.cpp."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import exam_reference as ref

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CEVAL_SUBJECTS = ["computer_network", "college_economics", "law", "physician"]  # STEM, Social Science, Humanities, Other
CMMLU_SUBJECTS = ["anatomy", "ancient_chinese", "agronomy"]  # STEM, China specific, Other
# processed scores (logits / 0.2), prefix cache vs whole prompt: float16 rounding in transformers (measured up
# to 0.07), llama.cpp's F16 (0.01)
TOL = {"transformers": 0.1, "llama.cpp": 0.02}


def _varied(src: Path, out: Path, tokens, groups: list[list[str]]) -> Path:
    """``src`` with new lm_head rows for the letter tokens, so that the winning letter changes from question to
    question (the demo's random head makes one letter win everywhere). The head's input at the last position
    hardly depends on the question after a long shared prefix, so each row is a random mix of the directions
    in which it varies *within* a group of prompts sharing a prefix, orthogonal to every group's mean (no
    letter is ahead on average), scaled to a logit spread of 1. Saved in float16."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    seen: list = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(i[0][0, -1].double()))
    means, spread = [], []
    with torch.no_grad():
        for texts in groups:
            seen.clear()
            for text in texts:
                model(input_ids=torch.tensor([tokens.prompt(text)]))
            h = torch.stack(seen)
            means.append(h.mean(0))
            spread.append(h - h.mean(0))
    hook.remove()
    q = torch.linalg.qr(torch.stack(means).T).Q  # the span of the group means
    dev = torch.cat(spread)
    dev = dev - (dev @ q) @ q.T
    basis = torch.linalg.svd(dev, full_matrices=False).Vh[:8]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        for i in sorted(set(sum(tokens.letters(), []))):
            w = torch.randn(8, generator=g, dtype=torch.float64) @ basis
            head[i] = (w / (dev @ w).std()).float()
    model.half().save_pretrained(out)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith(("model", "config")):
            shutil.copyfile(f, out / f.name)
    return out


def _texts(data: dict[str, Path], kind: str) -> list[list[str]]:
    """The prompts the tests score with the ``kind`` model, one list per subject and case."""
    from helpers.evaluate import benchmark

    groups = []
    for bench, _, shots, with_prompt in (c for c in CASES if c[1] == kind):
        spec = benchmark(bench)
        for s in (CEVAL_SUBJECTS if bench == "ceval" else CMMLU_SUBJECTS):
            name = (spec.subjects[s].v3_name or spec.subjects[s].zh) if (kind, bench) == ("v3", "ceval") else None
            groups.append(ref.prompts(data[bench], bench, s, split=spec.default_split, shots=shots,
                                      with_prompt=with_prompt, style=kind, header_name=name))
    return groups


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Stand-in C-Eval and CMMLU in the official CSV layout."""
    from helpers.evaluate import write_standin

    d = tmp_path_factory.mktemp("exam-data")
    return {"ceval": write_standin(d / "ceval", "ceval", subjects=CEVAL_SUBJECTS, questions=6),
            "cmmlu": write_standin(d / "cmmlu", "cmmlu", subjects=CMMLU_SUBJECTS, questions=6)}


@pytest.fixture(scope="module")
def models(demo, data, tmp_path_factory) -> dict[str, Path]:
    """v2 (Chinese-Alpaca-2 demo) and v3 (Llama-3-Instruct demo) models, as HF folders and F16 GGUFs."""
    pytest.importorskip("llama_cpp")
    from helpers.gguf import convert_hf_to_gguf

    d = tmp_path_factory.mktemp("exam-models")
    v2, v3 = demo / "chinese-alpaca-2-7b", demo / "Meta-Llama-3-8B-Instruct"
    out = {"v2": _varied(v2, d / "chinese-alpaca-2-7b", ref.SentencePieceTokens(v2), _texts(data, "v2")),
           "v3": _varied(v3, d / "llama-3-instruct", ref.JsonTokens(v3), _texts(data, "v3"))}
    for k in ("v2", "v3"):
        out[k + "-gguf"] = convert_hf_to_gguf(out[k], d / f"{k}-f16.gguf", outtype="f16")
    return out


def _hf_reference(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float16).eval()
    return lambda ids: ref.hf_last_logits(model, ids)


def _gguf_reference(path: Path):
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=2048, logits_all=True, verbose=False, n_threads=1)
    return lambda ids: ref.gguf_last_logits(llm, ids)


def _check(result, expected: dict, *, tol: float, min_clear: float = 0.5) -> None:
    """Same questions; scores within ``tol``; the same prediction wherever the reference's margin is clear
    (more than ``2 * tol``, on at least ``min_clear`` of the questions); not one letter everywhere."""
    got = {(a.subject, a.index): a for a in result.answers}
    assert got.keys() == expected.keys()
    clear = 0
    for key, want in expected.items():
        np.testing.assert_allclose(got[key].scores, want, atol=tol, err_msg=str(key))
        top = np.sort(want)
        if top[-1] - top[-2] > 2 * tol:
            clear += 1
            assert got[key].pred == "ABCD"[int(np.argmax(want))], key
    assert clear >= min_clear * len(expected)
    assert len({"ABCD"[int(np.argmax(w))] for w in expected.values()}) >= 2  # not one letter everywhere


CASES = [  # (benchmark, model, shots, with_prompt)
    ("ceval", "v2", 5, False), ("ceval", "v2", 0, False), ("ceval", "v2", 5, True), ("cmmlu", "v2", 5, True),
    ("ceval", "v3", 5, True), ("ceval", "v3", 0, True), ("cmmlu", "v3", 5, False), ("cmmlu", "v3", 5, True),
]


@pytest.mark.parametrize("backend", ["transformers", "llama.cpp"])
@pytest.mark.parametrize("bench,kind,shots,with_prompt", CASES)
def test_predictions_match_the_naive_method(models, data, backend, bench, kind, shots, with_prompt):
    from helpers.evaluate import ExamOptions, benchmark, run_exam

    subjects = CEVAL_SUBJECTS if bench == "ceval" else CMMLU_SUBJECTS
    spec = benchmark(bench)
    names = ({s: spec.subjects[s].v3_name or spec.subjects[s].zh for s in subjects}
             if (kind, bench) == ("v3", "ceval") else None)
    gguf = backend == "llama.cpp"
    model = models[kind + "-gguf"] if gguf else models[kind]
    result = run_exam(model, ExamOptions(benchmark=bench, data=data[bench], shots=shots, with_prompt=with_prompt,
                                         dtype="float16", show_progress=False))
    assert (result.style, result.backend, result.shots) == (kind, backend, shots)
    tokens = ref.JsonTokens(models[kind]) if kind == "v3" else ref.SentencePieceTokens(models[kind])
    logits = _gguf_reference(model) if gguf else _hf_reference(model)
    expected = ref.reference(logits, tokens, data[bench], bench, subjects, names=names, split=spec.default_split,
                             shots=shots, with_prompt=with_prompt, style=kind)
    _check(result, expected, tol=TOL[backend])


def test_processed_scores_are_those_transformers_generate_returns(models, data):
    """The reference's first-principles processing equals generate(output_scores=True) with the scripts' config."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(models["v2"], dtype=torch.float32).eval()
    tokens = ref.SentencePieceTokens(models["v2"])
    config = GenerationConfig(do_sample=True, temperature=0.2, top_k=0, top_p=1.0, repetition_penalty=1.1,
                              num_beams=1, max_new_tokens=1, output_scores=True, return_dict_in_generate=True,
                              pad_token_id=0)
    bare, cued = tokens.letters()
    for text in ref.prompts(data["ceval"], "ceval", "law", split="val", shots=5, with_prompt=True, style="v2")[:2]:
        ids = tokens.prompt(text)
        with torch.no_grad():
            scores = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    generation_config=config).scores[0][0].double().numpy()
        mine = ref.processed_scores(ref.hf_last_logits(model, ids), ids, bare, cued)
        np.testing.assert_allclose(scores[bare] + scores[cued], mine, rtol=1e-5, atol=1e-4)
        raw = ref.hf_last_logits(model, ids)
        assert not np.allclose((raw[bare] + raw[cued]) / 0.2, mine)  # the penalty did apply (letters are in the prompt)


def test_repetition_penalty_can_change_the_answer():
    """A letter that leads on raw logits loses once its in-prompt token is penalized (hand-computed numbers)."""
    from helpers.evaluate.engine import LetterIds, letter_scores, predict

    ids = LetterIds(bare=(10, 11, 12, 13), cued=(20, 21, 22, 23))
    raw = [0.0, 1.9, 0.0, 0.0, 10.0, 8.0, -1.0, -2.0]  # bare A-D, then cued A-D
    prompt = [1, 20, 21, 22, 23, 5]  # every cued letter occurs in the prompt, no bare one
    assert predict([(raw[i] + raw[i + 4]) / 0.2 for i in range(4)]) == "A"  # raw: A 10.0 > B 9.9
    scores = letter_scores(raw, ids, prompt)
    assert scores == pytest.approx([10 / 1.1 / 0.2, (1.9 + 8 / 1.1) / 0.2, -1.1 / 0.2, -2.2 / 0.2])
    assert predict(scores) == "B"
    assert predict([1.0, 3.0, 3.0, 0.0]) == "B"  # a tie goes to the first letter, as numpy.argmax


def test_batched_questions_equal_one_at_a_time(models, data):
    """The GPU path (several questions per forward pass after the shared prefix, right-padded) on CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    from helpers.evaluate import benchmark, load_exam
    from helpers.evaluate.engine import HFExamScorer
    from helpers.evaluate.prompts import PromptStyle
    from helpers.evaluate.exam import score_exam
    from helpers.tokens import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(models["v2"], dtype=torch.float32).eval()
    spec = benchmark("ceval")
    exam = load_exam(spec, data["ceval"], shots=5)
    style = PromptStyle("v2", spec, with_prompt=True)
    runs = [score_exam(HFExamScorer(model, load_tokenizer(models["v2"]), batch_size=b), exam, style,
                       show_progress=False, reuse=r) for b, r in ((1, False), (1, True), (4, True))]
    for other in runs[1:]:
        np.testing.assert_allclose([a.scores for a in other.answers], [a.scores for a in runs[0].answers], atol=1e-3)


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_bitsandbytes_models_score_like_the_naive_method(models, data, bits):
    """bitsandbytes 8/4-bit (its CPU back end here, CUDA on Colab) through the same scorer."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from helpers.evaluate import ExamOptions, run_exam
    from helpers.tokens import load_tokenizer

    config = (BitsAndBytesConfig(load_in_8bit=True) if bits == "8bit" else
              BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32))
    model = AutoModelForCausalLM.from_pretrained(models["v2"], quantization_config=config,
                                                 device_map={"": "cpu"}).eval()
    assert any("bit" in type(m).__name__ for m in model.modules())  # Linear8bitLt / Linear4bit
    subjects = CEVAL_SUBJECTS[:2]
    result = run_exam((model, load_tokenizer(models["v2"])), ExamOptions(data=data["ceval"], subjects=subjects,
                                                                         shots=5, style="v2", show_progress=False))
    expected = ref.reference(lambda ids: ref.hf_last_logits(model, ids), ref.SentencePieceTokens(models["v2"]),
                             data["ceval"], "ceval", subjects, split="val", shots=5, with_prompt=False, style="v2")
    # LLM.int8 picks its outlier columns per forward pass, so a question run after a cached prefix is not rounded
    # as the whole prompt is (scores differ by up to ~0.5 here); NF4 only rounds the weights
    _check(result, expected, tol=0.75, min_clear=0.25) if bits == "8bit" else _check(result, expected,
                                                                                      tol=TOL["transformers"])


@pytest.mark.parametrize("bench,kind,shots,with_prompt", CASES + [("ceval", "v1", 5, True), ("ceval", "v1", 0, True)])
def test_prompts_and_tokens_are_the_scripts(models, data, bench, kind, shots, with_prompt):
    """Every prompt, as text and as token ids on both back ends, is the one the naive method builds."""
    from llama_cpp import Llama

    from helpers.evaluate import benchmark, load_exam
    from helpers.evaluate.engine import HFExamScorer, LlamaCppExamScorer
    from helpers.evaluate.prompts import PromptStyle
    from helpers.tokens import load_tokenizer

    spec = benchmark(bench)
    exam = load_exam(spec, data[bench], shots=shots)
    style = PromptStyle(kind, spec, with_prompt=with_prompt)
    model = models["v3" if kind == "v3" else "v2"]
    tokens = ref.JsonTokens(model) if kind == "v3" else ref.SentencePieceTokens(model)
    scorers = [HFExamScorer(None, load_tokenizer(model)),
               LlamaCppExamScorer(Llama(model_path=str(models[("v3" if kind == "v3" else "v2") + "-gguf"]),
                                        vocab_only=True, verbose=False))]
    for sd in exam.subjects:
        name = (sd.subject.v3_name or sd.subject.zh) if (kind, bench) == ("v3", "ceval") else None
        if kind == "v1":
            want = _v1_prompts(data[bench], sd.subject.key, shots)
        else:
            want = ref.prompts(data[bench], bench, sd.subject.key, split=spec.default_split, shots=shots,
                               with_prompt=with_prompt, style=kind, header_name=name)
        got = [style.prompt(sd.subject, sd.dev, item) for item in sd.items]
        assert got == want
        for scorer in scorers:
            assert [scorer.prompt_ids(t) for t in got] == [tokens.prompt(t) for t in want], scorer.backend
    for scorer in scorers:
        letters = scorer.letter_ids()
        assert (list(letters.bare), list(letters.cued)) == tokens.letters()


def _v1_prompts(folder: Path, subject: str, shots: int) -> list[str]:
    """The v1 (Chinese-LLaMA-Alpaca) script's --with_prompt prompts: the Alpaca template around everything."""
    test, dev = ref.read_split(folder, "ceval", subject, "val"), ref.read_split(folder, "ceval", subject, "dev")
    hist = (f"以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"
            + "".join(ref._q(dev.iloc[i], "question") + "\n答案：" + dev.iloc[i]["answer"] + "\n\n" for i in range(shots))
            if shots else "")
    return ["Below is an instruction that describes a task. Write a response that appropriately completes the "
            f"request.\n\n### Instruction:\n{hist}{ref._q(row, 'question')}\n答案是什么？ \n\n### Response: "
            for _, row in test.iterrows()]


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_quant_option_loads_through_bitsandbytes(models, data, monkeypatch, bits):
    """``--quant 8bit|4bit`` (``ExamOptions(quantization=...)``) loads through helpers.chat's bitsandbytes path (a GPU
    path: CUDA is faked here, and bitsandbytes' CPU back end computes), and the quantized model is scored as
    the naive method scores that same model."""
    import torch

    from helpers.evaluate import benchmark, load_exam
    from helpers.evaluate.prompts import PromptStyle
    from helpers.evaluate.exam import open_scorer, score_exam

    import bitsandbytes  # noqa: F401 - imported first, so that it registers its CPU kernels, not CUDA's

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: "cpu")  # device_map={"": "cpu"}
    spec = benchmark("ceval")
    exam = load_exam(spec, data["ceval"], subjects=CEVAL_SUBJECTS[:1], shots=5)
    with open_scorer(models["v2"], quantization=bits) as (scorer, template, _):
        kinds = {type(m).__name__ for m in scorer.model.modules()}
        assert ("Linear8bitLt" if bits == "8bit" else "Linear4bit") in kinds and template == "llama2-zh"
        result = score_exam(scorer, exam, PromptStyle("v2", spec), show_progress=False)
        expected = ref.reference(lambda ids: ref.hf_last_logits(scorer.model, ids),
                                 ref.SentencePieceTokens(models["v2"]), data["ceval"], "ceval", CEVAL_SUBJECTS[:1],
                                 split="val", shots=5, with_prompt=False, style="v2")
    got = {(a.subject, a.index): a.scores for a in result.answers}
    for key, want in expected.items():
        np.testing.assert_allclose(got[key], want, atol=0.75 if bits == "8bit" else TOL["transformers"])
