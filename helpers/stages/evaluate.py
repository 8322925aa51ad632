"""Notebook 05: expand a LLaMA tokenizer with the Chinese pieces, then measure a model: perplexity on Chinese text
and C-Eval-style multiple choice.

The plan sizes the scored model where it runs (llama.cpp for a GGUF, transformers otherwise) with what scoring
really keeps: a window's logits for perplexity, the last position's for multiple choice.
"""
from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import catalog
from ..colab import Runtime, bytes_need
from ..colab.sizing import gguf_file
from ..evaluate import (MC_WINDOW, PPL_WINDOW, compare_results, default_eval_text, multiple_choice, perplexity,
                        plan_exam, published_row, run_exam)
from ..hub import resolve_model
from ..tokens import expand_vocab
from ..util import UserError, atomic_path, read_utf8, sha256_file
from .base import Plan, Stage, form_path
from .form import param
from .memory import llama_cpp_needs, transformers_loaded, transformers_needs
from .needs import MORE_DISK
from .workspace import AUTO, WORKSPACE_HELP, Workspace, locate

BENCHES = ("ceval", "cmmlu", "none")

# The released Chinese sentencepiece model (Chinese-LLaMA-Alpaca, Apache-2.0) and its SHA256 (tests/data/README.md)
CHINESE_SP_URL = "https://raw.githubusercontent.com/ymcui/Chinese-LLaMA-Alpaca/main/scripts/merge_tokenizer/chinese_sp.model"
CHINESE_SP_SHA256 = "0f5f6f717181694ec2e1c9be4398e2db2e40a3902932325b06e12ad4cd64ac09"


def fetch_file(ref: str, out_dir: str | Path, *, sha256: str | None = None) -> Path:
    """A local path for ``ref``: an existing file, or a URL downloaded once into ``out_dir`` and checked against
    ``sha256`` when one is known (a copy that does not match is removed).

    Raises:
        UserError: a missing file, or a download whose digest differs.
    """
    if not ref.startswith(("http://", "https://")):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise UserError(f"{ref} not found: give an existing file or an https:// URL")
        return path
    target = Path(out_dir).expanduser() / ref.rstrip("/").rsplit("/", 1)[-1]
    if not target.is_file():
        with atomic_path(target) as tmp, urllib.request.urlopen(ref, timeout=60) as r:  # noqa: S310 - user-given URL
            tmp.write_bytes(r.read())
    if sha256 and sha256_file(target) != sha256:
        target.unlink()
        raise UserError(f"{ref} downloaded with another SHA256 than the released file's ({sha256}); the copy was "
                        "removed: run again, or give the file's path")
    return target


@dataclass(frozen=True)
class EvalJob:
    """What is measured: the model (found in the workspace, or as given), how it runs (``llama.cpp`` for a GGUF,
    else ``transformers``), and the text and questions (files in the workspace, or as given)."""

    model: str
    backend: str
    eval_text: str
    mc_csv: str
    exam_data: str | None = None
    compare_with: str = ""


@dataclass
class EvalSession:
    """The notebook's measurements, as the plan decided them."""

    stage: EvalStage
    job: EvalJob

    def text(self) -> str:
        """The evaluation text: ``EVAL_TEXT``'s file, or a Chinese sample."""
        path = form_path(self.job.eval_text)
        return read_utf8(path) if path is not None else default_eval_text()

    def expand_vocabulary(self) -> Any:
        """Merge the Chinese pieces into ``BASE_TOKENIZER``'s tokenizer (``merged_tokenizer`` in the output)."""
        s = self.stage
        sha = CHINESE_SP_SHA256 if s.chinese_sp_model == CHINESE_SP_URL else None
        base = resolve_model(s.base_tokenizer, allow_patterns=["tokenizer*", "special_tokens_map.json"])
        return expand_vocab(base, fetch_file(s.chinese_sp_model, s.output_dir, sha256=sha),
                            Path(s.output_dir).expanduser() / "merged_tokenizer", sample_text=self.text())

    def perplexity(self) -> float:
        value = perplexity(self.job.model, self.text(), backend=self.job.backend)
        print(f"perplexity of {self.stage.model}: {value:.3f}")
        return value

    def exam(self, model: str | None = None) -> Any:
        """``BENCH`` on the model (or ``model``) as the releases score it, with a progress bar: the category table
        beside the release's published row, the files ``summary.json`` / ``submission.json`` written and saved to
        the workspace. None when ``BENCH`` is none."""
        s = self.stage
        if s.bench == "none":
            return None
        model = model or self.job.model
        result = run_exam(model, s.bench, data=self.job.exam_data, shots=s.shots, with_prompt=s.with_prompt,
                          subjects=s.subject_list())
        out = Path(s.output_dir).expanduser() / f"{s.bench}-{Path(model).name}-{s.shots}shot"
        result.write(out)
        Workspace.of(s.workspace, s.output_dir).save([out])
        published = published_row(model, s.bench, split=result.split)
        for row in result.table():
            print(f"  {row['category']:15s} {row['accuracy']:5.1f}  ({row['correct']}/{row['num']})")
        if published is not None and published.accuracy(s.shots) is not None:
            print(f"  the release reports {published.accuracy(s.shots):.1f} ({s.shots}-shot)")
        return result

    def compare(self, result: Any) -> Any:
        """``COMPARE_WITH`` on the same questions, and the paired difference with its 95% interval (None when it is
        empty or no benchmark ran)."""
        if not self.job.compare_with or result is None:
            return None
        comparison = compare_results(result, self.exam(self.job.compare_with), name_a=self.stage.model,
                                     name_b=self.stage.compare_with)
        print(comparison.text())
        return comparison

    def multiple_choice(self) -> Any:
        """C-Eval-style accuracy on ``MC_CSV`` (None when it is empty)."""
        if not self.job.mc_csv:
            return None
        report = multiple_choice(self.job.model, self.job.mc_csv, shots=self.stage.shots, backend=self.job.backend)
        print(f"accuracy {report.accuracy:.3f} on {report.n} questions")
        return report


@dataclass(frozen=True)
class EvalStage(Stage):
    """The vocabulary and evaluation notebook's form."""

    NOTEBOOK = "05_vocab_and_eval"
    SETUP = frozenset({"llama_cpp"})

    base_tokenizer: str = param("huggyllama/llama-7b", "the tokenizer to expand (a folder or hub id)")
    chinese_sp_model: str = param(CHINESE_SP_URL, "the Chinese sentencepiece model to add (a URL or a path)")
    model: str = param("chinese-alpaca-2-7b", "the model to measure (catalog name, .gguf, folder or hub id)",
                       choices=[n for k in ("full", "gguf") for n in catalog.names(kind=k)], allow_input=True)
    eval_text: str = param("", "a UTF-8 text file for perplexity (empty: a Chinese sample)")
    bench: str = param("ceval", "the benchmark the releases report, scored as their scripts score it (none: skip)",
                       choices=BENCHES)
    exam_data: str = param("", "the benchmark's data: a folder in the official layout or a hub data set id (empty: "
                           "ceval/ceval-exam or haonan-li/cmmlu from the hub)")
    subjects: str = param("", "subject keys to run, comma-separated (empty: all)")
    with_prompt: bool = param(True, "wrap the questions in the model's chat template, as the releases did for "
                              "Alpaca / Instruct models")
    compare_with: str = param("", "a second model scored on the same questions (e.g. its Q4_K_M GGUF): each "
                              "accuracy and the difference with a 95% interval")
    mc_csv: str = param("", "multiple-choice items of your own in C-Eval's columns (id,question,A,B,C,D,answer); "
                        "empty: skip")
    shots: int = param(5, "solved examples before each question", choices=(5, 0))
    output_dir: str = param("/content/vocab_eval", "where the tokenizer and downloads go")
    workspace: str = param(AUTO, WORKSPACE_HELP)

    def settings(self) -> str:
        return f"{self.model} (perplexity" + (f", multiple choice {self.shots}-shot)" if self.mc_csv else ")")

    def make_plan(self, runtime: Runtime) -> Plan:
        ws = Workspace.of(self.workspace, self.output_dir)
        model, text, mc = (locate(r, ws) for r in (self.model, self.eval_text, self.mc_csv))
        gguf = gguf_file(model)
        window = MC_WINDOW if self.mc_csv or self.bench != "none" else PPL_WINDOW
        if gguf is not None:
            needs, download = llama_cpp_needs(gguf, runtime, "model", n_ctx=window)
            backend = "llama.cpp"
        else:
            loaded = transformers_loaded(model, None, runtime)
            needs = transformers_needs(loaded, runtime, n_ctx=window, logits_positions=PPL_WINDOW,
                                       fix="the model's GGUF (llama.cpp), or a smaller model")
            download, backend = loaded.download, "transformers"
        needs.insert(0, bytes_need("disk", download, runtime.disk, fix=MORE_DISK,
                                   detail="downloads; the tokenizers and benchmark data are a few MB"))
        job = EvalJob(model, backend, text, mc, locate(self.exam_data, ws) or None, locate(self.compare_with, ws))
        return Plan(self, runtime, needs, job, self._exam_notes(job, runtime))

    def _exam_notes(self, job: EvalJob, runtime: Runtime) -> list[str]:
        """How long the benchmark will take here (from its data and the model's size), before the model loads."""
        if self.bench == "none":
            return []
        try:
            estimate = plan_exam(job.model, self.bench, data=job.exam_data, shots=self.shots,
                                 with_prompt=self.with_prompt, subjects=self.subject_list(),
                                 runtime="t4" if runtime.gpu else "cpu")
        except UserError as exc:  # the data cannot be read yet (offline): the run will fetch it, or say why
            return [f"note: no time estimate for {self.bench} ({exc})"]
        runs = 2 if job.compare_with else 1
        return [f"{self.bench}: {estimate.text()}" + (f" (twice: {self.compare_with} too)" if runs > 1 else "")]

    def subject_list(self) -> list[str] | None:
        return [x.strip() for x in self.subjects.split(",") if x.strip()] or None

    def candidate_fixes(self, plan: Plan) -> list[dict[str, Any]]:
        gguf = catalog.find(f"{self.model}-gguf")
        return [{"model": gguf.name}] if gguf is not None else []

    def execute(self, plan: Plan) -> EvalSession:
        return EvalSession(self, plan.job)
