"""The CLI contract shared by every command: --help lists them, bad input -> one `error:` line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from helpers.__main__ import COMMANDS


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers", *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_command():
    r = cli("--help")
    assert r.returncode == 0
    for name in COMMANDS:
        assert name in r.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_has_help(name):
    r = cli(name, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout


MISSING = "/nonexistent/path/for/the/test"

BAD_INPUTS = {
    "merge": ["merge", "--base", MISSING, "--lora", MISSING + "-lora", "--out", "{tmp}/out", "--format", "hf"],
    "to-gguf": ["to-gguf", "--model", MISSING, "--out", "{tmp}/out.gguf"],
    "quantize": ["quantize", "--model", MISSING + ".gguf", "--out", "{tmp}/out.gguf", "--type", "q4_k_m"],
    "chat": ["chat", "--model", MISSING, "--prompt", "你好"],
    "finetune": ["finetune", "--base", MISSING, "--data", MISSING + ".json", "--out", "{tmp}/out"],
    "expand-vocab": ["expand-vocab", "--base", MISSING, "--add", MISSING + ".model", "--out", "{tmp}/out"],
    "evaluate": ["evaluate", "--model", MISSING, "--ppl", MISSING + ".txt"],
    "imatrix": ["imatrix", "--model", MISSING + ".gguf", "--text", MISSING + ".txt", "--out", "{tmp}/imatrix.gguf"],
    "catalog": ["catalog", "no-such-model-anywhere"],
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_gives_one_error_line(name, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in BAD_INPUTS[name]]
    r = cli(*args)
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith(("WARNING", "warnings.warn"))]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert not [p for p in tmp_path.iterdir()], "nothing may be left under the output name"


def test_debug_shows_the_traceback(tmp_path):
    r = cli("--debug", "merge", "--base", MISSING, "--lora", MISSING, "--out", str(tmp_path / "o"), "--format", "hf")
    assert r.returncode != 0
    assert "Traceback" in r.stderr


def test_unknown_argument_is_a_usage_error():
    r = cli("merge", "--no-such-flag")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def _options(command: str) -> list:
    """Non-default options of ``command``: positionals, repeated flags, two-value flags, --no- switches, presets."""
    from helpers.catalog.command import CatalogQuery
    from helpers.evaluate import ExamOptions
    from helpers.evaluate.exam_command import ExamModels
    from helpers.merge.plan_command import PlanRequest
    from helpers.publish.push_command import PushOptions
    from helpers.publish.save_command import SaveOptions
    from helpers.stages.command import NotebookRun

    return {"save": [SaveOptions(paths=["a b", "c"], to="d", progress=False, replace=True)],
            "push": [PushOptions(paths=["x.gguf"], repo="me/r", base="b", lora=["l1", "l2"], kind="gguf", public=True)],
            "cmmlu": [ExamModels(out="o", compare=("a", "b")),
                      ExamOptions(shots=0, quantization="4bit", subjects=("law", "art"), benchmark="cmmlu")],
            "catalog": [CatalogQuery(name="chinese-alpaca-2-7b", generation="v2", json=True)],
            "run": [NotebookRun(notebook="01", sets=["BASE=x", "OUTTYPE=f16"], execute=True)],
            "plan": [PlanRequest(base="b", lora=["l1", "l2"], fmt="hf", outtype="f32", disk_gb=1.5)]}[command]


@pytest.mark.parametrize("command", ["save", "push", "cmmlu", "catalog", "run", "plan"])
def test_options_round_trip_through_their_flags(command):
    """A command's options, written as flags and read back by the command's parser, are the same value."""
    from helpers.__main__ import build_parser
    from helpers.util.params import from_arguments, to_arguments

    given = _options(command)  # a command's options classes together, as its command line holds them
    args = build_parser(command).parse_args([command, *(flag for options in given for flag in to_arguments(options))])
    for options in given:
        assert from_arguments(type(options), args) == options


def test_exclusive_flags_are_one_error_line():
    for args, message in [(["evaluate", "--model", "m", "--ppl", "a", "--mc", "b"], "one of --ppl"),
                          (["ceval", "--out", "o"], "--model MODEL, or --compare"),
                          (["run", "01", "--colab", "t4"], "drop --colab")]:
        r = cli(*args)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
