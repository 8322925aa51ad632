"""Notebook 02: from a model (a full release, a LoRA/patch release merged on the fly, an HF folder, a float GGUF, or
the authors' own published GGUFs) to one or several llama.cpp types, with an optional size / perplexity / KL table
that says what each costs.

The plan decides where the files come from (the authors' published GGUF of that type when there is one, else a
float GGUF given, found in the workspace, merged or converted) and what every output is called, sizes them before
anything is downloaded, and refuses an output that would replace an input; outputs already made from the same float
GGUF are kept.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import catalog
from ..catalog import ModelEntry
from ..chat import choose_gguf
from ..colab import NO, Need, Runtime, bytes_need, wheel_need
from ..colab.sizing import TORCH_PROCESS_BYTES
from ..evaluate import compare_quants, default_eval_text, plot_quant_table
from ..gguf import (FLOAT_TYPES, QuantizeOptions, convert_hf_to_gguf, export_file, gguf_type, qtype_name, quantize,
                   requantized_bytes)
from ..hub import file_sizes, resolve_model
from ..merge import MergeOptions, Recipe, ResourcePlan, Sources, gather_sources, merge, resource_plan
from ..publish import ReleaseCard
from ..util import UserError, human_bytes
from .base import Plan, Stage, form_path
from .form import param
from .merge import release_inputs, release_target
from .needs import GET_LLAMA, MORE_DISK, access_needs, listing_fallback
from .workspace import AUTO, PUSH_HELP, WORKSPACE_HELP, Workspace, locate, push, push_needs

PUBLISHED = {"plain": "", "im": "-im", "no": None}  # -> the suffix of the authors' file name (None: never use them)
PUBLISHED_NAMES = {"q4_k_m": "q4_k", "q3_k_m": "q3_k", "q5_k_m": "q5_k"}  # llama.cpp's type -> the hfl file's name


def parse_types(text: str) -> tuple[str, ...]:
    """``"q4_k_m, Q8_0"`` -> ``("q4_k_m", "q8_0")``: llama.cpp type names, normalised, each once, in order.

    Raises:
        UserError: an unknown type, a float type, or none at all.
    """
    types = tuple(dict.fromkeys(qtype_name(t) for t in str(text).split(",") if t.strip()))
    if any(t in FLOAT_TYPES for t in types) or not types:
        raise UserError(f"give one or more quantization types such as q4_k_m,q8_0 (not {text!r}): the float GGUF is "
                        "made anyway")
    return types


def float_stem(path: Path) -> str:
    """The name of a float GGUF without its type: ``chinese-alpaca-2-7b`` for ``chinese-alpaca-2-7b-f16.gguf``."""
    stem = path.name.removesuffix(".gguf")
    for t in FLOAT_TYPES:
        stem = stem.removesuffix(f"-{t}")
    return stem


def quant_target(source: Path, out_dir: str | Path, qtype: str) -> Path:
    """Where the ``qtype`` quant of the float GGUF ``source`` goes: ``<stem>-<qtype>.gguf`` in ``out_dir``."""
    return Path(out_dir).expanduser() / f"{float_stem(source)}-{qtype}.gguf"


def published_file(entry: ModelEntry, qtype: str, suffix: str) -> tuple[str, str, int] | None:
    """``(hub id, file name, bytes)`` of the authors' GGUF of ``entry`` in ``qtype`` (``suffix`` ``-im``: its
    importance-matrix variant), from the hub's listing; None when they publish none (or the hub cannot say)."""
    release = catalog.find(f"{entry.name.removesuffix('-lora').removesuffix('-patch')}-gguf")
    if release is None:
        return None
    try:
        sizes = file_sizes(release.hub_id, what="GGUF release")
        name = choose_gguf(list(sizes), PUBLISHED_NAMES.get(qtype, qtype) + suffix, where=release.hub_id)
    except UserError:
        return None
    return release.hub_id, name, sizes[name]


@dataclass(frozen=True)
class QuantizeJob:
    """What the run does: make (or take) the float GGUF, then each quantized file, or download the published ones.

    Attributes:
        source: ``gguf`` (a float GGUF given or found in the workspace), ``merge`` (a LoRA/patch release),
            ``convert`` (a full model) or ``published`` (the authors' GGUFs of every type asked for).
        ref: what is merged or converted (a catalog name, hub id or folder); the GGUF itself for ``gguf``.
        f16: the float GGUF (None for ``published``).
        outputs: ``{type: file}``; published: ``{type: (hub id, file name)}`` in ``downloads``.
        resources: the merge's or conversion's plan.
    """

    source: str
    ref: str
    f16: Path | None
    outputs: dict[str, Path]
    resources: ResourcePlan | None = None
    entry: ModelEntry | None = None
    downloads: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class QuantizeResult:
    """The float GGUF (None when the published files were taken), and the quantized files by type."""

    f16: Path | None
    quants: dict[str, Path]
    quality: tuple[dict, ...] = ()  # the quality table's rows, when it was measured (python -m helpers run)

    def summary(self) -> str:
        """One line per file written (size and path), then the quality table when it was measured."""
        lines = [f"quantized to {', '.join(self.quants)}:", QuantizeStage.sizes(self)]
        lines += [f"  {r['type']:>8}  {r['size_gb']:.2f} GB  perplexity {r['ppl']:.3f}  mean KLD {r['kld']:.4f}"
                  for r in self.quality]
        return "\n".join(lines)


@dataclass(frozen=True)
class QuantizeStage(Stage[QuantizeJob]):
    """The quantize notebook's form."""

    NOTEBOOK = "02_quantize_gguf"
    SETUP = frozenset({"llama_cpp"})

    model: str = param("chinese-alpaca-2-7b", "a model from the catalog (full, LoRA or patch), a hub id or an HF "
                       "folder", choices=[n for k in ("full", "lora", "patch") for n in catalog.names(kind=k)],
                       allow_input=True)
    input_path: str = param("", "an F16/BF16/F32 GGUF you have (here or in your workspace); then MODEL is not used")
    quant_types: str = param("q4_k_m", "llama.cpp types, comma-separated (q4_k_m, q5_k_m, q6_k, q8_0, ...)")
    published: str = param("plain", "take the authors' own GGUF of a type when they publish one (plain, or im: their "
                           "importance-matrix variant) instead of converting the model here; no: always convert",
                           choices=tuple(PUBLISHED))
    quality_table: bool = param(False, "measure each type: size, perplexity and KL divergence on EVAL_TEXT")
    eval_text: str = param("", "a UTF-8 text file to score the quants on (empty: a Chinese sample)")
    output_dir: str = param("/content/gguf", "where the GGUF files are written on this runtime")
    workspace: str = param(AUTO, WORKSPACE_HELP)
    push_to_hub: str = param("", PUSH_HELP)
    split_gb: float = param(0.0, "split GGUFs larger than this many GB for downloading (0: never)")
    download: bool = param(False, "download the results to your computer (Colab)")

    def settings(self) -> str:
        return f"{self.input_path or self.model} -> {self.quant_types}"

    def types(self) -> tuple[str, ...]:
        return parse_types(self.quant_types)

    def workspace_folder(self) -> Workspace:
        return Workspace.of(self.workspace, self.output_dir)

    # ---------------------------------------------------------------------------------------------------- plan
    def make_plan(self, runtime: Runtime) -> Plan[QuantizeJob]:
        types, notes = self.types(), []
        job, sizes, peak = self._source(types, runtime, notes)
        needs = [Need("GPU", "no GPU", runtime.gpu or "none")]
        if job.source != "published":
            needs.append(wheel_need("llama.cpp", runtime.llama_cpp, fix=GET_LLAMA))
        needs += access_needs(*downloaded_from(job))
        needs += [Need("output name", f"{p.name} not to be an input", "it is the input", NO, "rename the input GGUF")
                  for p in job.outputs.values() if job.f16 is not None and p.resolve() == job.f16.resolve()]
        what = "the published GGUF(s)" if job.source == "published" else f"F16 GGUF and {len(types)} quantized file(s)"
        needs.append(bytes_need("disk", peak + sum(sizes.values()), runtime.disk, fix=MORE_DISK,
                                detail=f"{what}: {', '.join(types)}"))
        if job.resources is not None:
            needs.append(bytes_need("RAM (merge)", job.resources.ram_bytes, job.resources.free_ram,
                                    detail="the F16 conversion"))
        if self.quality_table:
            scored = max(sizes.values()) if job.f16 is None else peak or job.f16.stat().st_size
            needs.append(bytes_need("RAM (quality table)", scored + TORCH_PROCESS_BYTES, runtime.ram,
                                    detail="scoring the largest GGUF", slow_fix="llama.cpp maps the file and reads what "
                                    "does not fit from disk: the table is made, slowly"))
        return Plan(self, runtime, needs + push_needs(self.push_to_hub), job, notes)

    def _source(self, types: tuple[str, ...], runtime: Runtime, notes: list[str]
                ) -> tuple[QuantizeJob, dict[str, int], int]:
        """The job, the bytes of each output, and the peak disk before them."""
        ws = self.workspace_folder()
        given = form_path(locate(self.input_path, ws)) if self.input_path else None
        if given is not None:
            return self._given(given, types)
        entry = None if Path(self.model).expanduser().exists() else catalog.get(self.model)
        if entry is not None and entry.kind == "gguf":
            raise UserError(f"{entry.name} is already quantized: download a file from {entry.hub_id} with "
                            "03_inference_chat, or choose the full model it was made from")
        published = self._published(entry, types)
        if published is not None:
            notes.append(f"the authors publish {', '.join(types)}: downloading their file(s), nothing is converted")
            return published
        saved = ws.find(release_target(entry, ".", "gguf", "f16").name) if entry is not None else None
        if saved is not None:
            notes.append(f"{saved.name} is in your workspace (01_merge_lora made it): quantizing that")
            return self._given(saved, types)
        return self._made(entry, types, runtime, notes)

    def _published(self, entry: ModelEntry | None, types: tuple[str, ...]
                   ) -> tuple[QuantizeJob, dict[str, int], int] | None:
        suffix = PUBLISHED[self.published]
        if entry is None or suffix is None:
            return None
        found = {t: published_file(entry, t, suffix) for t in types}
        if not all(found.values()):
            return None
        stem = release_target(entry, ".", "gguf", "f16")
        outputs = {t: quant_target(stem, self.output_dir, t) for t in types}
        job = QuantizeJob("published", entry.name, None, outputs, entry=entry,
                          downloads={t: (hub_id, name) for t, (hub_id, name, _) in found.items()})
        return job, {t: size for t, (_, _, size) in found.items()}, 0

    def _given(self, path: Path, types: tuple[str, ...]) -> tuple[QuantizeJob, dict[str, int], int]:
        if not path.is_file() or path.suffix != ".gguf":
            raise UserError(f"{path} is not a .gguf file: give a float GGUF, or start from MODEL")
        kind = gguf_type(path).lower()
        if kind not in FLOAT_TYPES:
            raise UserError(f"{path} is already quantized ({kind}): llama.cpp quantizes from F16, BF16 or F32")
        outputs = {t: quant_target(path, self.output_dir, t) for t in types}
        return QuantizeJob("gguf", str(path), path, outputs), {t: requantized_bytes(str(path), t) for t in types}, 0

    def _made(self, entry: ModelEntry | None, types: tuple[str, ...], runtime: Runtime, notes: list[str]
              ) -> tuple[QuantizeJob, dict[str, int], int]:
        path = Path(self.model).expanduser()
        if entry is not None and entry.kind in ("lora", "patch"):
            (base, loras, patch), source = release_inputs(entry), "merge"
            f16 = release_target(entry, self.output_dir, "gguf", "f16")
        else:
            base, loras, patch, source = (str(path) if entry is None else entry.hub_id), [], None, "convert"
            f16 = Path(self.output_dir).expanduser() / (f"{path.name}-f16.gguf" if entry is None
                                                        else release_target(entry, ".", "gguf", "f16").name)
        sources: Sources = listing_fallback(notes, lambda offline: gather_sources(
            base, loras, patch, offline=offline, fresh=runtime.assumed))

        def planned(outtype: str) -> ResourcePlan:
            return resource_plan(sources, options=MergeOptions(fmt="gguf", outtype=outtype), out=f16,
                                 free_disk=runtime.disk, free_ram=runtime.ram)

        resources = planned("f16")
        notes.append(resources.summary())
        outputs = {t: quant_target(f16, self.output_dir, t) for t in types}
        job = QuantizeJob(source, entry.name if entry is not None else str(path), f16, outputs, resources, entry)
        return job, {t: planned(t).output_bytes for t in types}, resources.chosen_peak_disk

    def candidate_fixes(self, plan: Plan[QuantizeJob]) -> list[dict[str, Any]]:
        types = self.types()
        fixes: list[dict[str, Any]] = [{"quant_types": types[0]}] if len(types) > 1 else []
        if self.published == "no":
            fixes.append({"published": "plain"})
        if self.quality_table:
            fixes.append({"quality_table": False})
        return fixes + ([{"push_to_hub": ""}] if self.push_to_hub else [])

    # ---------------------------------------------------------------------------------------------------- run
    def execute(self, plan: Plan[QuantizeJob]) -> QuantizeResult:
        job: QuantizeJob = plan.job
        if job.source == "published":
            result = QuantizeResult(None, {t: self._download(job, t) for t in job.outputs})
        else:
            f16 = self._float_gguf(job)
            result = QuantizeResult(f16, {t: quantize(f16, out, QuantizeOptions(qtype=t))
                                          for t, out in job.outputs.items()})
        self.keep(job, result)
        return result

    @staticmethod
    def _download(job: QuantizeJob, qtype: str) -> Path:
        """The authors' GGUF of ``qtype``, under this notebook's name for it (a link to the download cache)."""
        hub_id, name = job.downloads[qtype]
        cached = resolve_model(hub_id, allow_patterns=[name], what="GGUF release") / name
        out = job.outputs[qtype]
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            os.link(cached.resolve(), out) if _same_device(cached.resolve(), out.parent) else out.symlink_to(cached)
        return out

    @staticmethod
    def _float_gguf(job: QuantizeJob) -> Path:
        if job.source == "gguf":
            return job.f16
        if job.source == "merge":  # a finished merge of the same inputs is recognised and kept
            base, loras, patch = release_inputs(job.entry)
            merge(Recipe(base, loras, patch), job.f16, MergeOptions(fmt="gguf", outtype="f16"), job.resources)
            return job.f16
        if job.f16.is_file():
            return job.f16
        template = job.entry.template if job.entry is not None else None
        folder = resolve_model(job.entry.hub_id if job.entry is not None else job.ref, what="model")
        return convert_hf_to_gguf(folder, job.f16, outtype="f16", template=template)

    def keep(self, job: QuantizeJob, result: QuantizeResult) -> None:
        """Save the quantized files to the workspace, push them when asked, download them when asked."""
        files = list(result.quants.values())
        self.workspace_folder().save(files)
        base = job.entry.name if job.entry is not None else job.ref
        for qtype, path in result.quants.items():
            push([path], self.push_to_hub, ReleaseCard(base, kind="gguf", quant=qtype,
                                                       how=f"notebook 02_quantize_gguf: {self.settings()}"))
            if self.download or self.split_gb:
                export_file(path, download=self.download, split_gb=self.split_gb or None)

    def quality(self, result: QuantizeResult) -> list[dict]:
        """The size / perplexity / KL table of ``result`` on ``EVAL_TEXT`` (a Chinese sample when empty), one model
        loaded at a time on every core, against the F16 (or, without one, the largest file); its plot is shown.
        Empty when ``QUALITY_TABLE`` is off."""
        if not self.quality_table:
            print("quality table skipped: " + self.assignment("quality_table", True) + " measures each type")
            return []
        text = form_path(locate(self.eval_text, self.workspace_folder())) or default_eval_text()
        quants = sorted(result.quants.values(), key=lambda p: p.stat().st_size)
        reference = result.f16 or quants.pop()
        rows = compare_quants(reference, quants, text, n_threads=os.cpu_count())
        show(plot_quant_table(rows))
        return rows

    @staticmethod
    def sizes(result: QuantizeResult) -> str:
        """One line per file written."""
        files = [*([result.f16] if result.f16 is not None else []), *result.quants.values()]
        return "\n".join(f"{human_bytes(p.stat().st_size):>10}  {p}" for p in files)

    def headless(self, plan: Plan[QuantizeJob], result: QuantizeResult) -> QuantizeResult:
        """The notebook's quality cell (when ``QUALITY_TABLE`` asks for it), its rows kept in the result."""
        return QuantizeResult(result.f16, result.quants, tuple(self.quality(result)))


def downloaded_from(job: QuantizeJob) -> list[tuple[str, str | None]]:
    """``(role, ref)`` of every repo the run downloads from (the merge's inputs, the model converted, the release)."""
    if job.source == "merge":
        base, loras, patch = release_inputs(job.entry)
        return [("base model", base), *(("LoRA", x) for x in loras), ("patch", patch)]
    if job.source == "convert":
        return [("model", job.entry.hub_id if job.entry is not None else job.ref)]
    return [("GGUF release", hub_id) for hub_id, _ in job.downloads.values()]


def _same_device(a: Path, folder: Path) -> bool:
    return a.stat().st_dev == folder.stat().st_dev


def show(figure: Any) -> None:
    """Display a matplotlib figure in a notebook (a returned figure is only shown as a cell's last value)."""
    try:
        from IPython.display import display

        display(figure)
    except ImportError:
        pass
