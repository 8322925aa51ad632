"""Notebook conventions, checked for every notebook in notebooks/ (they are executed by nbmake)."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "scripts"))
import build_notebooks  # noqa: E402


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def src(cell: dict) -> str:
    return "".join(cell["source"])


def test_there_are_notebooks_for_every_stage():
    names = [p.name for p in NOTEBOOKS]
    for stage in ("merge", "quantize", "inference", "finetune", "vocab"):
        assert any(stage in n for n in names), f"no notebook for {stage}: {names}"


def test_notebooks_are_built_from_their_sources():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_notebooks.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
class TestConventions:
    def test_name(self, path):
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name)

    def test_title_badge_and_overview(self, path):
        cells = load(path)["cells"]
        first = src(cells[0])
        assert cells[0]["cell_type"] == "markdown" and first.startswith("# ")
        assert f"blob/{build_notebooks.revision()}/notebooks/{path.name})" in first, \
            "Open-in-Colab badge must point at this notebook, at the release it belongs to"
        assert "colab-badge.svg" in first
        text = first.lower()
        for need in ("gpu", "ram", "disk", "time"):
            assert need in text, f"the overview must state the {need} needs"

    def test_setup_installs_the_release_it_belongs_to(self, path):
        """Colab installs the package from the same tag the notebook is opened from, never a moving branch, and
        leaves Colab's own ipywidgets alone (Colab supports 7.x only)."""
        setup = next(src(c) for c in load(path)["cells"] if c["cell_type"] == "code" and "pip" in src(c))
        version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
        assert build_notebooks.revision() == f"v{version}"
        assert f"@v{version}\"" in setup and "@main" not in setup
        assert "ipywidgets" not in setup

    def test_setup_installs_only_on_colab(self, path):
        code = [src(c) for c in load(path)["cells"] if c["cell_type"] == "code"]
        setup = [c for c in code if "pip" in c and "install" in c]
        assert setup, "a Setup cell installs the project on Colab"
        for cell in setup:
            assert '"google.colab" in sys.modules' in cell or "in_colab()" in cell

    def test_exactly_one_parameters_cell(self, path):
        cells = load(path)["cells"]
        params = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
        assert len(params) == 1
        body = src(params[0])
        assert "# @param" in body
        assert "NOTEBOOK_SMOKE" not in body, "smoke mode's stand-ins are the stage's, never in the users' form"
        assert sum("# @param" in src(c) for c in cells) == 1, "all @param forms live in the parameters cell"

    def test_committed_without_outputs(self, path):
        for c in load(path)["cells"]:
            if c["cell_type"] == "code":
                assert c["outputs"] == [] and c["execution_count"] is None

    def test_code_parses_and_stays_thin(self, path):
        for c in load(path)["cells"]:
            if c["cell_type"] != "code":
                continue
            code = "\n".join(line for line in src(c).splitlines() if not line.lstrip().startswith(("%", "!")))
            tree = ast.parse(code)
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef):
                    assert node.end_lineno - node.lineno < 6, "long functions belong in helpers/"
            if "parameters" not in c["metadata"].get("tags", []):  # the form: one entry and its help per field
                assert len(src(c).splitlines()) <= 30, "cells stay short; move logic into helpers/"

    def test_no_secrets(self, path):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"hf_[A-Za-z0-9]{30,}", text)


def test_speculative_decoding_gets_the_templated_prompt(monkeypatch):
    """Speculative decoding measures acceptance and speed-up on what the model really reads: the chat template
    around the question, as chat() sends it, never the raw question."""
    from helpers.stages import ChatStage, chat

    class Bot:
        def prompt(self, text, system=None):
            return f"[INST] {text} [/INST]"

    seen = {}
    monkeypatch.setattr(chat, "load_backend", lambda *a, **kw: "draft")
    monkeypatch.setattr(chat, "speculative_generate", lambda bot, draft, prompt, **kw: seen.update(p=prompt) or ("", {}))
    stage = ChatStage(prompt="你好")
    chat.ChatSession(stage, chat.ChatJob("m", "transformers", None, "chinese-alpaca-2-1.3b", None), Bot()).speculative()
    assert seen["p"] == "[INST] 你好 [/INST]"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_check_cell_plans_the_notebooks_stage_before_anything_runs(path):
    """Right after the form: ``<Stage>.from_form(globals()).check()``; every run cell comes after it and runs the
    checked plan with the form (``plan.run(globals())``), so a changed parameter is checked again."""
    from helpers.stages import STAGES

    cells = load(path)["cells"]
    form = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    stage = STAGES[path.stem].__name__
    checks = [i for i, c in enumerate(cells) if f"{stage}.from_form(globals()).check()" in src(c)]
    runs = [i for i, c in enumerate(cells) if "plan.run(" in src(c)]
    assert len(checks) == 1 and checks[0] > form and runs and all(i >= checks[0] for i in runs), path.name
    assert all("plan.run(globals())" in src(cells[i]) for i in runs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_check_cell_only_checks(path):
    """The check cell plans and stops there; the run is a cell of its own after it (a check that fits never starts
    the step by itself)."""
    from helpers.stages import STAGES

    stage = STAGES[path.stem].__name__
    check = next(src(c) for c in load(path)["cells"] if f"{stage}.from_form(globals()).check()" in src(c))
    assert "plan.run(" not in check and "run(" not in check.replace(".check()", "")


def test_ollama_instructions_name_the_file_that_is_written():
    """The GGUF writers put ``<stem>.Modelfile`` beside each GGUF: no notebook or README tells users to pass a
    file called plain ``Modelfile``."""
    texts = {p.name: p.read_text(encoding="utf-8") for p in [*NOTEBOOKS, ROOT / "README.md"]}
    wrong = {name: m.group(0) for name, text in texts.items()
             for m in re.finditer(r"ollama create\s+\S+\s+-f\s+(\S+)", text) if not m.group(1).strip("`'\",.").endswith(".Modelfile")}
    assert wrong == {}
