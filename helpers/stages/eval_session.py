"""Notebook 05's run: the measurements its cells make, exactly as :mod:`.evaluate`'s plan decided them (the model
and how it is loaded, the data, what ``COMPARE_WITH`` is), and :class:`EvalReport`, what they made.
"""
from __future__ import annotations

import hashlib
import json
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..evaluate import (ExamOptions, benchmark, compare_results, default_eval_text, load_result, multiple_choice,
                        perplexity, published_row, run_exam)
from ..hub import resolve_model
from ..tokens import expand_vocab
from ..util import UserError, atomic_path, read_utf8, sha256_file
from .base import form_path
from .workspace import Workspace

if TYPE_CHECKING:
    from .evaluate import EvalStage

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


def exam_folder(bench: str, model: str, shots: int, *, with_prompt: bool = True, subjects: list[str] | None = None,
                data: str | None = None) -> str:
    """The results folder of one benchmark job: ``ceval-<model>-5shot`` for the benchmark as the releases ran it
    (every subject, the default data, the template on), else that name with the 8-hex key of the settings that
    differ, so a run on other subjects, data or prompts never lands on an earlier job's results
    (``ceval-<model>-5shot-1a2b3c4d``), and a rerun of the same job finds its own."""
    name = f"{bench}-{Path(str(model).rstrip('/')).name}-{shots}shot"
    if with_prompt and not subjects and not data:
        return name
    settings = json.dumps([with_prompt, sorted(subjects or []), data or ""])
    return f"{name}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class EvalJob:
    """What is measured: the model (found in the workspace, or as given), how it runs (``llama.cpp`` for a GGUF,
    else ``transformers``, with the quantization really used), the text and questions (files in the workspace, or as
    given), the benchmark's options (None when ``BENCH`` is none), and ``COMPARE_WITH``: a second model with its own
    quantization, or (``earlier``) an earlier run's results folder, which is read, not scored again."""

    model: str
    backend: str
    quantization: str | None
    eval_text: str
    mc_csv: str
    exam: ExamOptions | None = None
    compare_with: str = ""
    compare_quantization: str | None = None
    earlier: bool = False


def exam_table(result: Any) -> list[str]:
    """The category table of an :class:`~helpers.evaluate.ExamResult`, one line per category and ``All``."""
    return [f"  {row['category']:15s} {row['accuracy']:5.1f}  ({row['correct']}/{row['num']})"
            for row in result.table()]


@dataclass
class EvalSession:
    """The notebook's measurements, as the plan decided them; ``written`` collects the results folders."""

    stage: EvalStage
    job: EvalJob
    written: list[Path] = field(default_factory=list)

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
        value = perplexity(self.job.model, self.text(), backend=self.job.backend, quantization=self.job.quantization)
        print(f"perplexity of {self.stage.model}: {value:.3f}")
        return value

    def exam(self, model: str | None = None) -> Any:
        """``BENCH`` on the model (or ``model``, ``COMPARE_WITH``'s) as the releases score it, with a progress bar:
        the category table beside the release's published row, the files ``summary.json`` / ``submission.json``
        written and saved to the workspace. None when ``BENCH`` is none."""
        s, options = self.stage, self.job.exam
        if options is None:
            return None
        if model is None:
            model = self.job.model
        else:
            options = replace(options, quantization=self.job.compare_quantization)
        result = run_exam(model, options)
        out = Path(s.output_dir).expanduser() / exam_folder(s.bench, model, s.shots, with_prompt=s.with_prompt,
                                                             subjects=s.subject_list(), data=options.data)
        result.write(out)
        self.written.append(out)
        settings = [s.bench, model, s.shots, s.with_prompt, s.subject_list(), options.data]  # the exam's job
        Workspace.of(s.workspace, s.output_dir).save([out], job=json.dumps(settings, default=str))
        print("\n".join(exam_table(result)))
        published = published_row(model, s.bench, split=result.split)
        if published is not None and published.accuracy(s.shots) is not None:
            print(f"  the release reports {published.accuracy(s.shots):.1f} ({s.shots}-shot)")
        return result

    def compare(self, result: Any) -> Any:
        """``COMPARE_WITH`` on the same questions (scored now, or its earlier run read back), and the paired
        difference with its 95% interval (None when it is empty or no benchmark ran)."""
        if not self.job.compare_with or result is None:
            return None
        if self.job.earlier:
            other = load_result(self.job.compare_with)
            print(f"{self.stage.compare_with}: the earlier run of {other.model}, read back (not scored again)")
        else:
            other = self.exam(self.job.compare_with)
        comparison = compare_results(result, other, name_a=self.stage.model, name_b=self.stage.compare_with)
        print(comparison.text())
        return comparison

    def multiple_choice(self) -> Any:
        """C-Eval-style accuracy on ``MC_CSV`` (None when it is empty)."""
        if not self.job.mc_csv:
            return None
        report = multiple_choice(self.job.model, self.job.mc_csv, shots=self.stage.shots, backend=self.job.backend,
                                 quantization=self.job.quantization)
        print(f"accuracy {report.accuracy:.3f} on {report.n} questions")
        return report


@dataclass(frozen=True)
class EvalReport:
    """What notebook 05's cells made (``python -m helpers run 05``): the tokenizer, the perplexity, the benchmark's
    result with its comparison, the multiple-choice report, and the results folders written."""

    model: str
    vocab: Any
    perplexity: float
    exam: Any = None
    comparison: Any = None
    mc: Any = None
    written: tuple[Path, ...] = ()

    def summary(self) -> str:
        v = self.vocab
        lines = [f"tokenizer: {v.base_size} + {v.added} Chinese pieces = {v.new_size} in {v.out_dir}; the sample "
                 f"text takes {v.tokens_before} -> {v.tokens_after} tokens",
                 f"perplexity of {self.model}: {self.perplexity:.3f}"]
        if self.exam is not None:
            e = self.exam
            lines += [f"{benchmark(e.benchmark).title} {e.split}, {e.shots}-shot, {e.style} prompts: "
                      f"{e.accuracy:.1f} on {len(e.answers)} questions", *exam_table(e)]
        if self.comparison is not None:
            lines.append(self.comparison.text())
        if self.mc is not None:
            lines.append(f"multiple choice: accuracy {self.mc.accuracy:.3f} on {self.mc.n} questions")
        return "\n".join(lines + [f"wrote {p}" for p in self.written])
