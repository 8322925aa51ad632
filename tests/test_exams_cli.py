"""``python -m helpers ceval|cmmlu`` end to end: the data sets from the hub twin in their hub layouts, the output
files in the scripts' formats, ``--compare``, and one ``error:`` line for each kind of bad input."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from helpers.__main__ import main

CEVAL = ["computer_network", "college_economics", "law", "physician"]  # STEM, Social Science, Humanities, Other
CMMLU = ["anatomy", "ancient_chinese", "agronomy"]  # STEM, China specific, Other

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, Path]:
    """The same stand-ins in the official CSV layout and in the hub repos' layouts (C-Eval parquet, CMMLU zip)."""
    from helpers.evaluate import write_standin

    d = tmp_path_factory.mktemp("exam-standins")
    return {"ceval": write_standin(d / "ceval", "ceval", subjects=CEVAL, questions=5),
            "cmmlu": write_standin(d / "cmmlu", "cmmlu", subjects=CMMLU, questions=5),
            "ceval-hub": write_standin(d / "ceval-hub", "ceval", subjects=CEVAL, questions=5, layout="parquet"),
            "cmmlu-hub": write_standin(d / "cmmlu-hub", "cmmlu", subjects=CMMLU, questions=5, layout="zip")}


@pytest.fixture
def exam_hub(hub_env, standins, tmp_path, monkeypatch):
    """The hub twin serving the stand-ins as ``ceval/ceval-exam`` and ``haonan-li/cmmlu`` dataset repos."""
    import hubtwin

    hubtwin.add_dataset_repo(hub_env.mirror, "ceval/ceval-exam", standins["ceval-hub"])
    hubtwin.add_dataset_repo(hub_env.mirror, "haonan-li/cmmlu", standins["cmmlu-hub"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # where the CMMLU zip is unpacked
    return hub_env


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_layouts_read_the_same(standins):
    from helpers.evaluate import benchmark, load_exam

    for name in ("ceval", "cmmlu"):
        spec = benchmark(name)
        a = load_exam(spec, standins[name], shots=5)
        b = load_exam(spec, standins[name + "-hub"], shots=5)
        assert [s.subject.key for s in a.subjects] == sorted(CEVAL if name == "ceval" else CMMLU)
        assert [(s.subject, s.items, s.dev) for s in a.subjects] == [(s.subject, s.items, s.dev) for s in b.subjects]
        assert a.has_answers and len(a.subjects[0].dev) == 5


def _check_summary(out: Path, bench: str, subjects: list[str]) -> dict:
    """summary.json / submission.json in the scripts' formats, the figures recomputed from predictions.json."""
    from helpers.evaluate import benchmark

    spec = benchmark(bench)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    submission = json.loads((out / "submission.json").read_text(encoding="utf-8"))
    answers = json.loads((out / "predictions.json").read_text(encoding="utf-8"))["answers"]
    assert list(summary)[-2:] == ["grouped", "All"] and set(summary) - {"grouped", "All"} == set(subjects)
    assert set(submission) == set(subjects)
    for s in subjects:
        mine = [a for a in answers if a[0] == s]
        right = sum(a[2] == a[3] for a in mine)
        assert summary[s] == {"score": 100 * right / len(mine), "num": len(mine),
                              "correct": 100 * right / len(mine) * len(mine) / 100}
        assert submission[s] == {str(a[1]): a[3] for a in mine} and all(v in "ABCD" for v in submission[s].values())
    groups = {spec.subjects[s].group for s in subjects}
    assert list(summary["grouped"]) == [g for g in spec.groups if g in groups]
    for g, v in summary["grouped"].items():
        members = [s for s in spec.subjects if spec.subjects[s].group == g and s in subjects]
        assert list(v) == ["correct", "num", "score"] and v["num"] == sum(summary[s]["num"] for s in members)
        assert math.isclose(v["score"], v["correct"] / v["num"])
    total = sum(v["correct"] for v in summary["grouped"].values())
    assert summary["All"]["num"] == len(answers) and math.isclose(summary["All"]["correct"], total)
    assert math.isclose(summary["All"]["score"], sum(a[2] == a[3] for a in answers) / len(answers))
    return summary


def test_ceval_and_cmmlu_from_the_hub(exam_hub, standins, demo, tmp_path, capsys):
    """Without --data the data sets come from the hub (here its twin), in their hub layouts; the predictions are
    those of the same stand-ins read from the official CSV layout."""
    from helpers.evaluate import ExamOptions, load_result, run_exam

    model = demo / "chinese-alpaca-2-7b"
    for bench, subjects in (("ceval", CEVAL), ("cmmlu", CMMLU)):
        out = tmp_path / bench
        assert main([bench, "--model", str(model), "--shots", "5", "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        _check_summary(out, bench, subjects)
        assert "All" in printed and "published for chinese-alpaca-2-7b" in printed
        from_csv = run_exam(model, ExamOptions(benchmark=bench, data=standins[bench], shots=5, show_progress=False))
        assert [(a.subject, a.index, a.pred) for a in load_result(out).answers] == \
               [(a.subject, a.index, a.pred) for a in from_csv.answers]
    fetched = [r.path.split("?")[0] for r in exam_hub.requests() if r.method == "GET" and r.status == 200
               and "/resolve/" in r.path]
    assert any(f.startswith("/datasets/ceval/ceval-exam/") and f.endswith(".parquet") for f in fetched)
    assert any(f.startswith("/datasets/haonan-li/cmmlu/") and f.endswith("/cmmlu_v1_0_1.zip") for f in fetched)
    assert not any(f.endswith(".py") for f in fetched)  # the loading script is never fetched


def test_test_split_submission_only(standins, demo, tmp_path, capsys):
    """C-Eval's test split has no answers: --submission-only writes the leaderboard's file and no summary."""
    out = tmp_path / "test"
    assert main(["ceval", "--model", str(demo / "chinese-alpaca-2-7b"), "--data", str(standins["ceval-hub"]),
                 "--split", "test", "--shots", "0", "--submission-only", "--out", str(out)]) == 0
    assert not (out / "summary.json").exists()
    submission = json.loads((out / "submission.json").read_text(encoding="utf-8"))
    assert set(submission) == set(CEVAL) and all(list(v) == [str(i) for i in range(5)] for v in submission.values())


def test_compare_two_models(standins, demo, tmp_path, capsys):
    """--compare: both runs on the same questions, and the paired figures recomputed from their predictions."""
    from helpers.evaluate import load_result
    from helpers.evaluate.paired import mcnemar_p
    from helpers.gguf import QuantizeOptions, convert_hf_to_gguf, quantize

    model = demo / "chinese-alpaca-2-7b"
    f16 = convert_hf_to_gguf(model, tmp_path / "m-f16.gguf", outtype="f16")
    q4 = quantize(f16, tmp_path / "m-q4_0.gguf", QuantizeOptions(qtype="q4_0", modelfile=False))
    out = tmp_path / "cmp"
    assert main(["cmmlu", "--compare", str(f16), str(q4), "--data", str(standins["cmmlu"]), "--shots", "0",
                 "--out", str(out)]) == 0
    assert "B - A" in capsys.readouterr().out
    c = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    a, b = load_result(out / "a"), load_result(out / "b")
    right_a = [x.correct for x in a.answers]
    right_b = [x.correct for x in b.answers]
    n = len(right_a)
    assert c["n"] == n == 15 and c["accuracy_a"] == pytest.approx(100 * sum(right_a) / n)
    only_a = sum(x and not y for x, y in zip(right_a, right_b))
    only_b = sum(y and not x for x, y in zip(right_a, right_b))
    assert (c["only_a"], c["only_b"]) == (only_a, only_b) and c["p_value"] == mcnemar_p(only_a, only_b)
    assert c["ci_low"] <= c["difference"] <= c["ci_high"]
    # a folder of an earlier run is read back instead of run again
    assert main(["cmmlu", "--compare", str(out / "a"), str(out / "b"), "--out", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "comparison.json").read_text(encoding="utf-8"))["n"] == n


def _bad(tmp_path: Path, standins: dict[str, Path], case: str) -> tuple[list[str], str]:
    """A copy of the C-Eval stand-in broken as ``case``; the arguments and the expected message."""
    data = tmp_path / case
    shutil.copytree(standins["ceval"], data)
    val = data / "val" / "law_val.csv"
    if case == "columns":
        val.write_text("id,question,A,B\n0,q,a,b\n", encoding="utf-8")
        return [], "lacks the column(s) C, D"
    if case == "answer":
        val.write_text(val.read_text(encoding="utf-8").replace(",A,\n", ",E,\n", 1).replace(",B,\n", ",E,\n", 1)
                       .replace(",C,\n", ",E,\n", 1).replace(",D,\n", ",E,\n", 1), encoding="utf-8")
        return [], "answer 'E' is not one of A, B, C, D"
    if case == "dev":
        (data / "dev" / "law_dev.csv").unlink()
        return ["--shots", "5"], "need the subject's dev split"
    if case == "test":
        return ["--split", "test"], "has no answers"
    if case == "subject":
        return ["--subjects", "law,astronomy"], "astronomy not in"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["columns", "answer", "dev", "test", "subject"])
def test_bad_input_is_one_error_line(standins, demo, tmp_path, capsys, case):
    extra, message = _bad(tmp_path, standins, case)
    out = tmp_path / "out"
    rc = main(["ceval", "--model", str(demo / "chinese-alpaca-2-7b"), "--data", str(tmp_path / case), *extra,
               "--out", str(out)])
    err = _lines(capsys.readouterr().err)
    errors = [line for line in err if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in "\n".join(err) and not (out / "summary.json").exists()


def test_damaged_download_is_refused_and_removed(exam_hub):
    """Each LFS file of a data set is checked against the SHA256 the hub lists; a bad copy is removed."""
    from helpers.hub.access import resolve_dataset
    from helpers.util import UserError

    folder = resolve_dataset("haonan-li/cmmlu")
    assert not list(folder.glob("*.py"))
    archive = folder / "cmmlu_v1_0_1.zip"
    blob = archive.resolve()
    blob.chmod(0o644)
    data = blob.read_bytes()
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped (a zip ends in zero bytes)
    with pytest.raises(UserError, match="does not match the SHA256"):
        resolve_dataset("haonan-li/cmmlu")
    assert not archive.exists() and not blob.exists()
    assert resolve_dataset("haonan-li/cmmlu") == folder and archive.is_file()  # downloaded again
