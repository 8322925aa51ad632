"""Notebook 05: expand a LLaMA tokenizer with the Chinese pieces, then measure a model: perplexity on Chinese text,
C-Eval or CMMLU as the releases score them (with ``COMPARE_WITH`` on the same questions), and multiple choice on a
file of the user's.

The plan sizes the scored model where it runs (llama.cpp for a GGUF, transformers otherwise, with the ``QUANTIZATION``
notebook 03 offers) with what scoring really keeps: a window's logits for perplexity, the last position's for multiple
choice. Before any model is downloaded it reads and checks the benchmark's data (a folder, or the hub's data set: a
few MB) and what ``COMPARE_WITH`` names: a model (sized as the first, scored after it) or an earlier run's results
folder (its ``predictions.json``), which must hold the same questions asked the same way. The run is
:mod:`.eval_session`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import catalog
from ..colab import Need, Runtime, bytes_need
from ..colab.sizing import gguf_file
from ..evaluate import (MC_WINDOW, PPL_WINDOW, PREDICTIONS, ExamData, ExamOptions, ExamResult, benchmark, load_exam,
                        load_result, estimate_exam)
from ..hub import require_online
from ..util import UserError
from .base import Plan, Stage
from .eval_session import CHINESE_SP_URL, EvalJob, EvalReport, EvalSession, exam_folder
from .form import param
from .memory import llama_cpp_needs, quantization_note, quantization_param, quantized_needs
from .needs import MORE_DISK, access_needs
from .workspace import AUTO, WORKSPACE_HELP, Workspace, locate

BENCHES = ("ceval", "cmmlu", "none")
RESULTS_HELP = "an earlier run's results folder (predictions.json, written by this notebook or `helpers ceval --out`)"


@dataclass(frozen=True)
class Sized:
    """A model as this notebook loads it: its memory rows, its download, its back end and quantization used."""

    needs: list[Need]
    download: int
    backend: str
    quantization: str | None
    notes: list[str]


@dataclass(frozen=True)
class EvalStage(Stage[EvalJob]):
    """The vocabulary and evaluation notebook's form."""

    NOTEBOOK = "05_vocab_and_eval"
    SETUP = frozenset({"llama_cpp"})
    GPU = True

    base_tokenizer: str = param("huggyllama/llama-7b", "the tokenizer to expand (a folder or hub id)")
    chinese_sp_model: str = param(CHINESE_SP_URL, "the Chinese sentencepiece model to add (a URL or a path)")
    model: str = param("chinese-alpaca-2-7b", "the model to measure (catalog name, .gguf, folder or hub id)",
                       choices=[n for k in ("full", "gguf") for n in catalog.names(kind=k)], allow_input=True)
    quantization: str = quantization_param("transformers on a GPU: load in 4-bit (NF4) or 8-bit (bitsandbytes); "
                                           "none: 16-bit, as the releases scored")
    eval_text: str = param("", "a UTF-8 text file for perplexity (empty: a Chinese sample)")
    bench: str = param("ceval", "the benchmark the releases report, scored as their scripts score it (none: skip)",
                       choices=BENCHES)
    exam_data: str = param("", "the benchmark's data: a folder in the official layout or a hub data set id (empty: "
                           "ceval/ceval-exam or haonan-li/cmmlu from the hub)")
    subjects: str = param("", "subject keys to run, comma-separated (empty: all)")
    with_prompt: bool = param(True, "wrap the questions in the model's chat template, as the releases did for "
                              "Alpaca / Instruct models")
    compare_with: str = param("", "a second model scored on the same questions (e.g. its Q4_K_M GGUF), or "
                              f"{RESULTS_HELP}: each accuracy and the difference with a 95% interval")
    mc_csv: str = param("", "multiple-choice items of your own in C-Eval's columns (id,question,A,B,C,D,answer); "
                        "empty: skip")
    shots: int = param(5, "solved examples before each question", choices=(5, 0))
    output_dir: str = param("/content/vocab_eval", "where the tokenizer and downloads go")
    workspace: str = param(AUTO, WORKSPACE_HELP)

    def smoke_values(self, demo: Path) -> dict[str, Any]:
        from ..evaluate import write_standin

        return {"exam_data": str(write_standin("smoke-output/05_ceval", "ceval")),
                "compare_with": "chinese-alpaca-2-7b-gguf", "chinese_sp_model": str(demo / "data" / "chinese_sp.model"),
                "eval_text": str(demo / "data" / "heldout_zh.txt"), "mc_csv": str(demo / "data" / "ceval_sample.csv")}

    def settings(self) -> str:
        """What the run measures: perplexity, the benchmark (and against what), the multiple-choice file."""
        parts = ["perplexity"]
        if self.bench != "none":
            versus = f" against {self.compare_with}" if self.compare_with else ""
            parts.append(f"{benchmark(self.bench).title} {self.shots}-shot{versus}")
        if self.mc_csv:
            parts.append(f"multiple choice {self.shots}-shot")
        return f"{self.model} ({', '.join(parts)})"

    def subject_list(self) -> list[str] | None:
        return [x.strip() for x in self.subjects.split(",") if x.strip()] or None

    # ---------------------------------------------------------------------------------------------------- plan
    def make_plan(self, runtime: Runtime) -> Plan[EvalJob]:
        ws = Workspace.of(self.workspace, self.output_dir)
        model, text, mc, data = (locate(r, ws) for r in (self.model, self.eval_text, self.mc_csv, self.exam_data))
        window = MC_WINDOW if self.mc_csv or self.bench != "none" else PPL_WINDOW
        sized = self._sized(model, runtime, window)
        exam, notes = self._exam(data or None, runtime)
        compare, other, earlier = self._compare(locate(self.compare_with, ws), runtime, window, exam, notes)
        needs = [*sized.needs, *(n.renamed(f"{n.what} (compared model)")  # scored after the first is freed
                                 for n in (other.needs if other else []) if n.amount is not None)]
        download = sized.download + (other.download if other else 0)
        needs.insert(0, bytes_need("disk", download, runtime.disk, fix=MORE_DISK,
                                   detail="downloads; the tokenizers and benchmark data are a few MB"))
        options = None if self.bench == "none" else ExamOptions(
            benchmark=self.bench, data=data or None, shots=self.shots, with_prompt=self.with_prompt,
            subjects=self.subject_list(), quantization=sized.quantization)
        job = EvalJob(model, sized.backend, sized.quantization, text, mc, options, compare,
                      other.quantization if other else None, earlier)
        needs += access_needs(("model", model), ("model", compare if other else None),
                              ("tokenizer", self.base_tokenizer))
        if exam is not None:
            notes.insert(0, self._time_note(job, exam, runtime))
        return Plan(self, runtime, needs, job, sized.notes + notes)

    def _sized(self, ref: str, runtime: Runtime, window: int) -> Sized:
        """``ref`` where it runs: llama.cpp for a GGUF, else transformers with ``QUANTIZATION`` (on a GPU)."""
        gguf = gguf_file(ref)
        if gguf is not None:
            needs, download = llama_cpp_needs(gguf, runtime, "model", n_ctx=window)
            return Sized(needs, download, "llama.cpp", None, quantization_note(self.quantization))
        needs, download, quant = quantized_needs(ref, self.quantization, runtime, n_ctx=window,
                                                 logits_positions=PPL_WINDOW,
                                                 fix="the model's GGUF (llama.cpp), or a smaller model")
        return Sized(needs, download, "transformers", quant, [])

    def _exam(self, data: str | None, runtime: Runtime) -> tuple[ExamData | None, list[str]]:
        """The benchmark's questions, read and checked now (the hub's data set is downloaded: a few MB), so that
        data that cannot be read stops the check, not the run. Planning for another runtime (``--colab``) on a
        machine that cannot ask the hub, a note instead."""
        if self.bench == "none":
            return None, []
        spec = benchmark(self.bench)
        try:
            return load_exam(spec, data, subjects=self.subject_list(), shots=self.shots), []
        except UserError as exc:
            ref = data or spec.hub_id
            if runtime.assumed and not Path(ref).expanduser().exists() and not _hub_answers(ref):
                return None, [f"note: the {spec.title} data {ref} cannot be read from here ({exc}); the run reads it"]
            given = f"{self.assignment('exam_data', self.exam_data)}: " if self.exam_data else ""
            fix = (f"; or {self.assignment('exam_data', '')} for {spec.hub_id} from the hub" if self.exam_data
                   else "")
            raise UserError(f"{given}{exc}{fix}") from None

    def _compare(self, ref: str, runtime: Runtime, window: int, exam: ExamData | None, notes: list[str]
                 ) -> tuple[str, Sized | None, bool]:
        """What ``COMPARE_WITH`` is: ``(ref, the model sized, False)``, or ``(ref, None, True)`` for an earlier
        run's results folder on the same questions; ``("", None, False)`` when there is nothing to compare."""
        if not ref:
            return "", None, False
        if self.bench == "none":
            notes.append(f"note: {self.assignment('compare_with', self.compare_with)} is compared on the benchmark, "
                         f"and {self.assignment('bench', 'none')} runs none")
            return "", None, False
        path = Path(ref).expanduser()
        if (path / PREDICTIONS).is_file():
            self._check_earlier(load_result(path), exam)
            notes.append(f"{self.assignment('compare_with', self.compare_with)}: the earlier run in {path}, on the "
                         "same questions (read back, not scored again)")
            return ref, None, True
        if path.is_dir() and not (path / "config.json").is_file() and gguf_file(ref) is None:
            raise UserError(f"{self.assignment('compare_with', self.compare_with)} is a folder with neither a "
                            f"{PREDICTIONS} nor a model (config.json or a .gguf): give {RESULTS_HELP}, or a model")
        try:
            return ref, self._sized(ref, runtime, window), False
        except UserError as exc:
            raise UserError(f"{self.assignment('compare_with', self.compare_with)}: {exc}; give a model, or "
                            f"{RESULTS_HELP}") from None

    def _check_earlier(self, earlier: ExamResult, exam: ExamData | None) -> None:
        """Refuse an earlier run that is not the same questions asked the same way as this one."""
        why = None
        if earlier.benchmark != self.bench:
            why = f"it is a {earlier.benchmark} run (set {self.assignment('bench', earlier.benchmark)})"
        elif earlier.shots != self.shots or earlier.with_prompt != self.with_prompt:
            why = (f"it was asked {earlier.shots}-shot, {'with' if earlier.with_prompt else 'without'} the template "
                   f"(set {self.assignment('shots', earlier.shots)} and "
                   f"{self.assignment('with_prompt', earlier.with_prompt)})")
        elif not earlier.has_answers:
            why = "it holds predictions only (a split without answers)"
        elif exam is not None:
            theirs = {(a.subject, a.index): a.answer for a in earlier.answers}
            ours = {(sd.subject.key, it.index): it.answer for sd in exam.subjects for it in sd.items}
            if earlier.split != exam.split or theirs != ours:
                why = (f"it answered {len(theirs)} questions of the {earlier.split} split, this run asks "
                       f"{len(ours)} of the {exam.split} split, not the same ones (other data or subjects)")
        if why:
            raise UserError(f"{self.assignment('compare_with', self.compare_with)} cannot be compared with this run: "
                            f"{why}")

    def _time_note(self, job: EvalJob, exam: ExamData, runtime: Runtime) -> str:
        """How long the benchmark will take here (from its data and the model's size), before the model loads."""
        estimate = estimate_exam(job.model, job.exam, exam=exam, runtime="t4" if runtime.gpu else "cpu")
        twice = job.compare_with and not job.earlier
        folders = [exam_folder(self.bench, m, self.shots, with_prompt=self.with_prompt, subjects=self.subject_list(),
                               data=job.exam.data) for m in (job.model, job.compare_with if twice else None) if m]
        return (f"{self.bench}: {estimate.text()}" + (f" (twice: {self.compare_with} too)" if twice else "")
                + f"; results in {', '.join(folders)}")

    def candidate_fixes(self, plan: Plan[EvalJob]) -> list[dict[str, Any]]:
        fixes: list[dict[str, Any]] = [] if self.quantization == "4bit" else [{"quantization": "4bit"}]
        gguf = catalog.find(f"{self.model}-gguf")
        return fixes + ([{"model": gguf.name}] if gguf is not None else [])

    # ---------------------------------------------------------------------------------------------------- run
    def execute(self, plan: Plan[EvalJob]) -> EvalSession:
        return EvalSession(self, plan.job)

    def headless(self, plan: Plan[EvalJob], result: EvalSession) -> EvalReport:
        """The notebook's cells in order: the tokenizer, perplexity, the benchmark and its comparison, the
        multiple-choice file."""
        vocab, ppl = result.expand_vocabulary(), result.perplexity()
        exam = result.exam()
        comparison, mc = result.compare(exam), result.multiple_choice()
        return EvalReport(self.model, vocab, ppl, exam, comparison, mc, tuple(result.written))


def _hub_answers(ref: str) -> bool:
    """Whether the hub can be asked about ``ref`` from here (not offline, its host name resolves)."""
    try:
        require_online(ref, "data set")
    except UserError:
        return False
    return True
