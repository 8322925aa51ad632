"""``python -m helpers run NOTEBOOK`` as a user runs it from a terminal, through the hub twin: every step the notebook's
cells take, then a readable summary (never a repr); one workspace folder shared by the runs, a fresh ``HF_HOME`` for
each runtime. And notebook 05's check: what its run could not use (benchmark data that cannot be read, a
``COMPARE_WITH`` that is neither a model nor a results folder of the same questions) stops it before any model is
downloaded."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.stages.eval_session import exam_folder

ROOT = Path(__file__).resolve().parents[1]
EXAMS = "cllama-tests/ceval-05"  # a hub data set of this file's own (the twin keeps the first repo of an id)
SUBJECTS = ["computer_network", "law"]
WEIGHTS = (".safetensors", ".bin", ".gguf", ".pth")
pytestmark = [pytest.mark.slow, pytest.mark.hub]


def helpers_run(runtime: Path, *args: str, command: str = "run") -> subprocess.CompletedProcess:
    """``python -m helpers run ...`` in a new runtime: its own empty download cache (``HF_HOME``)."""
    env = {**os.environ, "HF_HOME": str(runtime / "hf-home"), "XDG_CACHE_HOME": str(runtime / "xdg")}
    runtime.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", "helpers", command, *args], cwd=runtime, env=env,
                          capture_output=True, text=True, timeout=900)


def sets(**form) -> list[str]:
    return [a for k, v in form.items() for a in ("--set", f"{k}={v}")]


def weights_downloaded(twin, since: int) -> set[str]:
    """Hub ids whose weight files were downloaded since ``since``."""
    return {hub_id for hub_id, name in twin.downloads(since) if name.endswith(WEIGHTS)}


def no_repr(out: str) -> None:
    assert not re.search(r"\b\w+(Result|Session|Report)\(", out), out


@pytest.fixture
def exam_hub(hub_env):
    """The twin serving a C-Eval stand-in in the hub's parquet layout as the data set :data:`EXAMS`."""
    import hubtwin
    from helpers.evaluate import write_standin

    hubtwin.add_dataset_repo(hub_env.mirror, EXAMS, write_standin(hub_env.mirror.parent / "ceval-05", "ceval",
                                                                  subjects=SUBJECTS, questions=3, layout="parquet"))
    return hub_env


def eval_form(demo: Path, out: Path, drive: Path, **form) -> dict:
    data = demo / "data"
    return {"CHINESE_SP_MODEL": data / "chinese_sp.model", "EVAL_TEXT": data / "heldout_zh.txt",
            "MC_CSV": data / "ceval_sample.csv", "EXAM_DATA": EXAMS, "OUTPUT_DIR": out, "WORKSPACE": drive, **form}


# ------------------------------------------------------------------------------------------------ 05
def test_run_05_scores_writes_the_files_and_compares_with_an_earlier_results_folder(exam_hub, demo, tmp_path):
    """``run 05`` does what the notebook's cells do: the tokenizer, perplexity, the benchmark (files written and saved
    to the workspace, the table printed), the multiple-choice file. A second runtime measures the GGUF and compares it
    with the first run's results folder, found in the workspace by name: read back, not scored again (the HF model is
    not downloaded again), the paired difference printed."""
    drive = tmp_path / "drive"
    first = helpers_run(tmp_path / "rt1", "05", *sets(**eval_form(demo, tmp_path / "rt1" / "out", drive)))
    assert first.returncode == 0, first.stderr
    folder = exam_folder("ceval", "chinese-alpaca-2-7b", 5, data=EXAMS)  # the job's own name: not the default data
    assert folder.startswith("ceval-chinese-alpaca-2-7b-5shot-") and f"results in {folder}" in first.stdout
    for where in (tmp_path / "rt1" / "out", drive):
        summary = json.loads((where / folder / "summary.json").read_text(encoding="utf-8"))
        assert summary["All"]["num"] == 6 and (where / folder / "predictions.json").is_file()
    out = first.stdout
    no_repr(out)
    assert "perplexity of chinese-alpaca-2-7b:" in out and "multiple choice: accuracy" in out
    assert re.search(r"C-Eval val, 5-shot, v2 prompts: [\d.]+ on 6 questions", out)
    assert re.search(r"^\s+All\s+[\d.]+\s+\(\d/6\)$", out, re.M) and f"wrote {tmp_path / 'rt1' / 'out' / folder}" in out

    since = exam_hub.log_size()
    second = helpers_run(tmp_path / "rt2", "05", *sets(**eval_form(
        demo, tmp_path / "rt2" / "out", drive, MODEL="chinese-alpaca-2-7b-gguf", COMPARE_WITH=folder)))
    assert second.returncode == 0, second.stderr
    no_repr(second.stdout)
    assert f"the earlier run in {drive / folder}" in second.stdout and "read back" in second.stdout
    assert re.search(r"B - A = [+-][\d.]+ points, 95% CI", second.stdout)
    assert weights_downloaded(exam_hub, since) == {"hfl/chinese-alpaca-2-7b-gguf"}


def test_the_05_check_refuses_data_it_cannot_read_before_any_download(exam_hub, tmp_path):
    """``EXAM_DATA`` naming a data set that does not exist, or a folder that is not there: one ``error:`` line naming
    the parameter and the fix, and no model downloaded; the hub's data set (through the twin) and a folder fit."""
    since = exam_hub.log_size()
    for bad in ("nobody/no-such-exam", str(tmp_path / "nowhere")):
        out = helpers_run(tmp_path / "rt", "05", *sets(EXAM_DATA=bad, MODEL="chinese-alpaca-2-7b-gguf"),
                          command="colab-check")
        assert out.returncode != 0 and out.stderr.count("\n") == 1, out.stderr
        assert out.stderr.startswith(f"error: EXAM_DATA={bad!r}: ") and "EXAM_DATA=''" in out.stderr
    assert weights_downloaded(exam_hub, since) == set()
    ok = helpers_run(tmp_path / "rt", "05", *sets(EXAM_DATA=EXAMS, MODEL="chinese-alpaca-2-7b-gguf"),
                     command="colab-check")
    assert ok.returncode == 0 and "ceval: 6 questions" in ok.stdout, ok.stdout + ok.stderr
    assert f"results in {exam_folder('ceval', 'chinese-alpaca-2-7b-gguf', 5, data=EXAMS)}" in ok.stdout


def test_each_benchmark_job_has_its_own_results_folder():
    """The releases' run keeps the README's name; other subjects, data or prompts get the key of what differs, the
    same for the same job (subjects in any order), so a second job never lands on the first one's results."""
    default = exam_folder("ceval", "/content/m/chinese-alpaca-2-7b/", 5)
    assert default == "ceval-chinese-alpaca-2-7b-5shot"
    others = {exam_folder("ceval", "chinese-alpaca-2-7b", 5, subjects=["law"]),
              exam_folder("ceval", "chinese-alpaca-2-7b", 5, subjects=["law", "computer_network"]),
              exam_folder("ceval", "chinese-alpaca-2-7b", 5, data="me/my-ceval"),
              exam_folder("ceval", "chinese-alpaca-2-7b", 5, with_prompt=False)}
    assert len(others) == 4 and all(re.fullmatch(default + r"-[0-9a-f]{8}", o) for o in others)
    assert (exam_folder("ceval", "m", 0, subjects=["law", "computer_network"])
            == exam_folder("ceval", "m", 0, subjects=["computer_network", "law"]))


def test_the_05_check_takes_a_results_folder_of_the_same_questions_only(exam_hub, tmp_path):
    """``COMPARE_WITH`` as a results folder: one of the same questions asked the same way is planned as read back;
    one of other subjects, another shot count or benchmark, or a folder holding neither results nor a model, is
    refused by the check naming what to change."""
    from helpers.evaluate import ExamResult, benchmark, load_exam
    from helpers.evaluate.results import Answer
    from helpers.stages import EvalStage
    from helpers.util import UserError

    exam = load_exam(benchmark("ceval"), EXAMS, shots=5)

    def earlier(name: str, subjects: list[str], **kw) -> str:
        key = (lambda k: "anatomy") if kw.get("benchmark") == "cmmlu" else (lambda k: k)  # a CMMLU subject
        answers = tuple(Answer(key(sd.subject.key), it.index, it.answer, "A", (1.0, 0.0, 0.0, 0.0))
                        for sd in exam.subjects if sd.subject.key in subjects for it in sd.items)
        run = ExamResult(**{"benchmark": "ceval", "split": "val", "shots": 5, "with_prompt": True, "style": "v2",
                            "model": "m", "backend": "llama.cpp", "answers": answers, **kw})
        run.write(tmp_path / name)
        return str(tmp_path / name)

    def plan(compare: str, **form):
        return EvalStage(**{"model": "chinese-alpaca-2-7b-gguf", "exam_data": EXAMS, "compare_with": compare,
                            "output_dir": str(tmp_path / "out"), **form}).plan()

    same = plan(earlier("same", SUBJECTS))
    assert same.fits and same.job.earlier and any("read back" in n for n in same.notes)
    assert "twice" not in same.summary()
    for folder, form, said in [(earlier("fewer", SUBJECTS[:1]), {}, "not the same ones"),
                               (earlier("zero", SUBJECTS, shots=0), {}, "SHOTS=0"),
                               (earlier("cmmlu", SUBJECTS[:1], benchmark="cmmlu", split="test"), {}, "BENCH='cmmlu'"),
                               (str(tmp_path), {}, "neither a predictions.json nor a model")]:
        with pytest.raises(UserError, match=re.escape(said)):
            plan(folder, **form)
    assert plan(earlier("zero2", SUBJECTS, shots=0), shots=0).fits


# ------------------------------------------------------------------------------------------------ 03
def test_run_03_prints_the_reply_and_downloads_one_model(hub_env, tmp_path):
    """``run 03`` with the defaults chats with one model (no draft, no server: the twin serves only its weights) and
    prints the reply to PROMPT as it streams, then a summary that counts that reply."""
    since = hub_env.log_size()
    out = helpers_run(tmp_path / "rt", "03", *sets(QUANTIZATION="none", MAX_NEW_TOKENS=8, WORKSPACE=tmp_path / "ws"))
    assert out.returncode == 0, out.stderr
    no_repr(out.stdout)
    assert weights_downloaded(hub_env, since) == {"hfl/chinese-alpaca-2-7b"}
    stats = re.search(r"^[\w ]+: [\d.]+ s, peak RAM [^\n]*\n", out.stdout, re.M)  # the load cell's line
    m = re.search(r"^chatted with chinese-alpaca-2-7b .+: a reply of (\d+) characters to '(.+)' \(above\)$",
                  out.stdout, re.M)
    assert stats and m and m.group(2) == "请详细介绍一下北京的名胜古迹。", out.stdout
    printed = out.stdout[stats.end():m.start()]  # the reply as it streamed, then a new line
    assert printed.endswith("\n") and len(printed) - 1 == int(m.group(1)) > 0
    assert "no server" in out.stdout and "no speculative decoding" in out.stdout


# ------------------------------------------------------------------------------------------------ 01, 02
def test_run_01_then_02_print_readable_summaries(hub_env, tmp_path):
    """``run 01`` then ``run 02`` on its F16 (found in the workspace): what each wrote, with sizes, the merge's
    tensors and time, never a repr."""
    drive = tmp_path / "drive"
    merged = helpers_run(tmp_path / "rt", "01", *sets(OUTTYPE="f16", OUTPUT_DIR=tmp_path / "rt" / "m", WORKSPACE=drive))
    assert merged.returncode == 0, merged.stderr
    no_repr(merged.stdout)
    from gguf import GGUFReader

    f16 = tmp_path / "rt" / "m" / "chinese-alpaca-2-7b-f16.gguf"
    m = re.search(r"^merged: (\d+) tensors written in \d+ s, (\d+)-token vocabulary, peak RAM", merged.stdout, re.M)
    reader = GGUFReader(f16)  # what the file holds, read by the gguf package
    tokens = reader.fields["tokenizer.ggml.tokens"].data
    assert m and int(m.group(1)) == len(reader.tensors) and int(m.group(2)) == len(tokens)
    assert re.search(rf"^\s+[\d.]+ [KMG]?B  {re.escape(str(f16))}$", merged.stdout, re.M)
    quant = helpers_run(tmp_path / "rt", "02", *sets(INPUT_PATH="chinese-alpaca-2-7b-f16.gguf", QUANT_TYPES="q8_0",
                                                     OUTPUT_DIR=tmp_path / "rt" / "q", WORKSPACE=drive))
    assert quant.returncode == 0, quant.stderr
    no_repr(quant.stdout)
    assert "quantized to q8_0:" in quant.stdout and str(tmp_path / "rt" / "q" / "chinese-alpaca-2-7b-q8_0.gguf") \
        in quant.stdout
