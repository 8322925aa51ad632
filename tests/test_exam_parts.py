"""The pieces of the C-Eval / CMMLU runner: cells as pandas reads them, the subject tables, the paired
statistics, the published rows, the time estimate, archives."""
from __future__ import annotations

import csv
import io
import math
import os
import random
import re
import zipfile
from pathlib import Path

import pytest

from helpers.util import UserError

SEEDS = Path(os.environ.get("SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")) / "seeds"


def _random_cell(rng: random.Random, kind: str) -> str:
    pick = {"int": lambda: str(rng.randint(-50, 5000)), "float": lambda: f"{rng.uniform(-9, 9):.{rng.randint(0, 4)}f}",
            "exp": lambda: f"{rng.uniform(1, 9):.2f}e{rng.randint(-6, 17)}", "na": lambda: rng.choice(["", "NA", "nan", "None", "null"]),
            "bool": lambda: rng.choice(["True", "false", "TRUE"]), "text": lambda: rng.choice(["甲", "B. 3", "1/2", "3.5元", " 7", "0x1F"])}
    return pick[kind]()


def test_cells_print_as_pandas_reads_them():
    """Random columns of ints, floats, NA markers, booleans and text, each printed as pandas.read_csv + f-string."""
    pd = pytest.importorskip("pandas")
    from helpers.evaluate.cells import render_column

    rng = random.Random(0)
    mixes = [["int"], ["int", "float"], ["int", "na"], ["float", "exp"], ["bool"], ["bool", "na"], ["text"],
             ["text", "int"], ["na"], ["int", "exp", "na"], ["float", "na", "bool"]]
    for trial in range(60):
        cols = [[_random_cell(rng, rng.choice(mix)) for _ in range(7)] for mix in mixes]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([f"c{i}" for i in range(len(cols))])
        w.writerows(zip(*cols))
        frame = pd.read_csv(io.StringIO(buf.getvalue()))
        for i, col in enumerate(cols):
            want = [f"{row[f'c{i}']}" for _, row in frame.iterrows()]
            assert render_column(col) == want, (trial, col)


def test_subject_tables():
    from helpers.evaluate import benchmark

    ceval, cmmlu = benchmark("ceval"), benchmark("C-Eval") and benchmark("cmmlu")
    assert len(ceval.subjects) == 52 and len(cmmlu.subjects) == 67
    count = {g: sum(s.group == g for s in ceval.subjects.values()) for g in ceval.groups}
    assert count == {"STEM": 20, "Social Science": 10, "Humanities": 11, "Other": 11}
    assert ceval.subjects["mao_zedong_thought"].v3_name == "毛泽东思想和中国特色社会主义理论概论"
    # every CMMLU subject with a "china specific" tag counts there only, the rest under their one category
    assert cmmlu.subjects["ancient_chinese"].group == "China specific" and cmmlu.subjects["anatomy"].group == "STEM"
    assert sum(s.group == "China specific" for s in cmmlu.subjects.values()) == 15
    assert ceval.file_name("law", "dev") == "law_dev.csv" and cmmlu.file_name("law", "test") == "law.csv"
    with pytest.raises(UserError, match="unknown benchmark"):
        benchmark("mmlu")


def test_mcnemar_and_bootstrap():
    from helpers.evaluate.paired import bootstrap_interval, mcnemar_p

    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(0, 5) == pytest.approx(2 / 32) and mcnemar_p(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_p(1, 9) == pytest.approx(2 * 11 / 1024)
    big = mcnemar_p(300, 360)  # normal approximation with continuity correction: z = (|b-c|-1)/sqrt(b+c)
    z = (60 - 1) / math.sqrt(660)
    assert big == pytest.approx(math.erfc(z / math.sqrt(2)), rel=0.05)
    rng = random.Random(0)
    a = [rng.random() < 0.5 for _ in range(2000)]
    b = [x if rng.random() < 0.8 else not x for x in a]
    lo, hi = bootstrap_interval(a, b, samples=4000)
    n = len(a)
    d = [int(y) - int(x) for x, y in zip(a, b)]
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1) / n)
    assert lo == pytest.approx(100 * (mean - 1.96 * sd), abs=0.4) and hi == pytest.approx(100 * (mean + 1.96 * sd), abs=0.4)
    assert bootstrap_interval(a, a, samples=200) == (0.0, 0.0)


def _result(answers):
    from helpers.evaluate import ExamResult
    from helpers.evaluate.results import Answer

    return ExamResult("ceval", "val", 5, False, "v2", "m", "transformers",
                      tuple(Answer(s, i, a, p, (0.0, 0.0, 0.0, 0.0)) for s, i, a, p in answers))


def test_compare_refuses_different_questions():
    from helpers.evaluate import compare_results

    a = _result([("law", 0, "A", "A"), ("law", 1, "B", "C")])
    with pytest.raises(UserError, match="same questions"):
        compare_results(a, _result([("law", 0, "A", "A"), ("law", 2, "B", "C")]))
    with pytest.raises(UserError, match="needs answers"):
        compare_results(a, _result([("law", 0, "", "A"), ("law", 1, "", "C")]))
    same = compare_results(a, a)
    assert (same.difference, same.p_value, same.ci_low, same.ci_high, same.significant) == (0, 1.0, 0, 0, False)


def test_summary_uses_the_scripts_arithmetic():
    result = _result([("law", i, "A", "A" if i < 2 else "B") for i in range(3)]
                     + [("computer_network", i, "B", "B") for i in range(7)])
    summary = result.summary()
    assert summary["law"] == {"score": 100 * 2 / 3, "num": 3, "correct": 100 * 2 / 3 * 3 / 100}
    assert summary["grouped"]["Humanities"]["score"] == summary["law"]["correct"] / 3
    assert summary["All"] == {"score": (7.0 + 100 * 2 / 3 * 3 / 100) / 10, "num": 10,
                              "correct": 7.0 + 100 * 2 / 3 * 3 / 100}
    assert [r["category"] for r in result.table()] == ["STEM", "Humanities", "All"]


def _readme_rows(text: str, marker: str) -> dict[str, list[float]]:
    """``{model: figures}`` of the markdown table after ``marker`` (both halves of two-model rows)."""
    table = text[text.index(marker):].split("\n\n")[1]
    rows: dict[str, list[float]] = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        for name, *figures in (cells[:3], cells[3:]) if len(cells) == 6 else (cells,):
            rows[name.lower()] = [float(x) for f in figures for x in re.findall(r"\d+\.\d", f)]
    return rows


def test_published_rows_are_the_readme_tables():
    from helpers.evaluate import published_row

    assert (published_row("chinese-alpaca-2-7b").zero_shot, published_row("chinese-alpaca-2-7b").five_shot) == (41.3, 42.9)
    assert published_row("hfl/chinese-alpaca-2-lora-7b", "cmmlu").five_shot == 41.8
    assert published_row("/content/chinese-alpaca-2-7b-q4_k_m.gguf", "ceval", split="test").zero_shot == 40.3
    assert published_row("llama-3-chinese-8b-instruct-v3").accuracy(0) == 55.2
    assert published_row("chinese-llama-2-7b", quant="4bit").five_shot == 32.8
    assert published_row("my-finetune") is None
    readme = SEEDS / "chinese-llama-alpaca-2-readme.md"
    if not readme.is_file():
        pytest.skip("../shared/seeds not available")
    text = readme.read_text(encoding="utf-8")
    for name, figures in _readme_rows(text, "### 客观效果评测：C-Eval").items():
        val, test = published_row(name, "ceval", split="val"), published_row(name, "ceval", split="test")
        assert [val.zero_shot, val.five_shot, test.zero_shot, test.five_shot] == figures, name
    for name, figures in _readme_rows(text, "### 客观效果评测：CMMLU").items():
        row = published_row(name, "cmmlu")
        assert [row.zero_shot, row.five_shot] == figures, name


def test_time_estimate(tmp_path):
    from helpers.evaluate import benchmark, load_exam, write_standin
    from helpers.evaluate.prompts import PromptStyle
    from helpers.evaluate.timing import estimate_time
    from helpers.evaluate.timing import TOKENS_PER_SECOND_7B, count_tokens

    spec = benchmark("ceval")
    exam = load_exam(spec, write_standin(tmp_path / "d", "ceval", questions=8), shots=5)
    style = PromptStyle("v2", spec)
    shared, naive = count_tokens(exam, style, count=len)  # characters as tokens: checkable by hand
    prefixes = [len(style.prefix(s.subject, s.dev)) for s in exam.subjects]
    questions = [len(style.question(i, shots=True)) for s in exam.subjects for i in s.items]
    assert shared == sum(prefixes) + sum(questions) and naive == 8 * sum(prefixes) + sum(questions)
    est = estimate_time(exam, style, params_b=14, runtime="t4", weights="gguf", count=len)
    assert est.seconds == pytest.approx(shared / (TOKENS_PER_SECOND_7B[("t4", "gguf")] / 2) + 0.02 * 24)
    assert est.naive_seconds > 3 * est.seconds and "questions" in est.text()
    with pytest.raises(UserError, match="no speed figure"):
        estimate_time(exam, style, runtime="tpu")


def test_archives_unpack_only_their_csv_files(tmp_path, monkeypatch):
    from helpers.evaluate import benchmark, load_exam, write_standin

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hub = write_standin(tmp_path / "hub", "cmmlu", layout="zip")
    with zipfile.ZipFile(hub / "cmmlu_v1_0_1.zip", "a") as z:
        z.writestr("../escape.csv", "x")
        z.writestr("test/notes.txt", "x")
    exam = load_exam(benchmark("cmmlu"), hub, shots=5)
    assert len(exam.subjects) == 3
    unpacked = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert unpacked and all(p.suffix == ".csv" for p in unpacked) and not (tmp_path / "cache" / "escape.csv").exists()
    (hub / "cmmlu_v1_0_1.zip").write_bytes(b"PK\x03\x04 broken")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    with pytest.raises(UserError, match="not a readable archive"):
        load_exam(benchmark("cmmlu"), hub, shots=5)


def test_plan_before_loading_the_model(tmp_path):
    """The notebook's estimate before a run: style, size and weights from the catalog, nothing loaded."""
    from helpers.evaluate import ExamOptions, benchmark, load_exam, estimate_exam, write_standin
    from helpers.evaluate.prompts import PromptStyle
    from helpers.evaluate.timing import estimate_time

    data = write_standin(tmp_path / "d", "ceval", questions=4)
    gguf = estimate_exam("chinese-alpaca-2-13b-gguf", ExamOptions(data=data), runtime="cpu")
    exam = load_exam(benchmark("ceval"), data, shots=5)
    assert gguf == estimate_time(exam, PromptStyle("v2", benchmark("ceval")), params_b=13, runtime="cpu", weights="gguf")
    v3 = estimate_exam("llama-3-chinese-8b-instruct", ExamOptions(data=data, with_prompt=True,
                                                                     quantization="4bit"))
    assert v3 == estimate_time(exam, PromptStyle("v3", benchmark("ceval"), with_prompt=True), params_b=8,
                               weights="4bit")
    assert estimate_exam(tmp_path / "my-model", ExamOptions(data=data)).weights == "f16"


@pytest.mark.parametrize("shots", [0, 5])
@pytest.mark.parametrize("with_prompt", [False, True], ids=["plain", "with-prompt"])
def test_v3_cmmlu_prompts_are_the_authors_question_by_question(tmp_path, shots, with_prompt):
    """v3 CMMLU (Llama-3 models): every question's prompt is the one the authors' v3 script builds
    (tests/exam_reference.py): the header and the few-shot opening turn name the subject in Chinese
    (``name_en2zh``: 市场营销), never by its file key (marketing)."""
    pytest.importorskip("pandas")
    import exam_reference as ref
    from helpers.evaluate import benchmark, load_exam, write_standin
    from helpers.evaluate.prompts import PromptStyle

    spec = benchmark("cmmlu")
    data = write_standin(tmp_path, "cmmlu", subjects=["marketing", "anatomy", "ancient_chinese"], questions=4)
    exam = load_exam(spec, data, shots=shots)
    style = PromptStyle("v3", spec, with_prompt)
    for sd in exam.subjects:
        want = ref.prompts(data, "cmmlu", sd.subject.key, split="test", shots=shots, with_prompt=with_prompt,
                           style="v3")
        got = [style.prompt(sd.subject, sd.dev, item) for item in sd.items]
        assert got == want, sd.subject.key
        name = ref.CMMLU_V3_NAMES[sd.subject.key]
        assert all(f"关于{name}考试" in p and f"关于{sd.subject.key}" not in p for p in got)
        if shots and with_prompt:
            assert all(f"好的，我会结合{name}相关知识回答" in p for p in got)
