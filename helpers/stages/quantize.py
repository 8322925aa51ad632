"""Notebook 02: from a model (a full release, a LoRA/patch release merged on the fly, an HF folder, a float GGUF, or
the authors' own published GGUFs) to one or several llama.cpp types, with an optional size / perplexity / KL table
that says what each costs.

The plan decides where the files come from (the authors' published GGUF of that type when there is one, else a
float GGUF given, found in the workspace, merged or converted) and what every output is called, sizes them before
anything is downloaded, and refuses an output that would replace an input; outputs already made from the same float
GGUF are kept.
"""
from __future__ import annotations

import hashlib
import json
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
from ..gguf import FLOAT_TYPES, QuantizeOptions, convert_hf_to_gguf, export_file, gguf_type, qtype_name, quantize
from ..gguf.layout import requantized_bytes
from ..gguf.llama_quantize import already_quantized
from ..hub import file_sizes, resolve_model
from ..merge import (MergeOptions, Recipe, ResourcePlan, SourceFiles, Sources, gather_sources, made_from, merge,
                     resource_plan)
from ..publish import ReleaseCard
from ..publish.workspace import saved_job
from ..util import UserError, human_bytes
from .base import Plan, Stage, form_path
from .form import param
from .merge import release_inputs
from .names import quant_target, release_stem, release_target
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


def published_file(entry: ModelEntry, qtype: str, suffix: str) -> tuple[str, str, int] | None:
    """``(hub id, file name, bytes)`` of the authors' GGUF of ``entry`` in ``qtype`` (``suffix`` ``-im``: its
    importance-matrix variant), from the hub's listing; None when they publish none (or the hub cannot say)."""
    release = catalog.find(f"{release_stem(entry).removesuffix('-patch')}-gguf")
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
        saved: ``{type: file}`` of the outputs an earlier session saved in the workspace from the same source (the
            same float GGUF, or the same release's inputs): taken as they are, never quantized again.
    """

    source: str
    ref: str
    f16: Path | None
    outputs: dict[str, Path]
    resources: ResourcePlan | None = None
    entry: ModelEntry | None = None
    downloads: dict[str, tuple[str, str]] = field(default_factory=dict)
    saved: dict[str, Path] = field(default_factory=dict)
    direct: dict[str, ResourcePlan] = field(default_factory=dict)  # low-disk mode: each type's own merge

    def todo(self) -> tuple[str, ...]:
        """The types this run makes (those not saved in the workspace already)."""
        return tuple(t for t in self.outputs if t not in self.saved)


@dataclass(frozen=True)
class QuantizeResult:
    """The float GGUF (None when the published files were taken), and the quantized files by type."""

    f16: Path | None
    quants: dict[str, Path]
    quality: tuple[dict, ...] = ()  # the quality table's rows, when it was measured (python -m helpers run)
    kept: tuple[str, ...] = ()  # the types taken from the workspace as they were (an earlier session made them)

    def summary(self) -> str:
        """One line per file (size and path), then the quality table when it was measured."""
        kept = f" ({', '.join(self.kept)} kept from your workspace)" if self.kept else ""
        lines = [f"quantized to {', '.join(self.quants)}{kept}:", QuantizeStage.sizes(self)]
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
    low_disk: str = param("auto", "for a LoRA or patch release: merge straight into each type, deleting each base "
                          "shard once merged (the next one downloading meanwhile), with no F16 file (as "
                          "01_merge_lora does; no quality table then); auto: only when the F16 route does not fit "
                          "the disk",
                          choices=("auto", "yes", "no"))
    quality_table: bool = param(False, "measure each type: size, perplexity and KL divergence on EVAL_TEXT")
    eval_text: str = param("", "a UTF-8 text file to score the quants on (empty: a Chinese sample)")
    output_dir: str = param("/content/gguf", "where the GGUF files are written on this runtime")
    workspace: str = param(AUTO, WORKSPACE_HELP)
    push_to_hub: str = param("", PUSH_HELP)
    split_gb: float = param(0.0, "split GGUFs larger than this many GB for downloading (0: never)")
    download: bool = param(False, "download the results to your computer (Colab)")

    def settings(self) -> str:
        return f"{self.input_path or self.model} -> {self.quant_types}"

    def smoke_values(self, demo: Path) -> dict[str, Any]:
        values = {"model": "chinese-alpaca-2-7b-lora", "quant_types": "q8_0,q4_k_m", "published": "no",
                  "quality_table": True, "eval_text": str(demo / "data" / "heldout_zh.txt")}
        trained = os.environ.get("NOTEBOOK_TRAINED_GGUF")  # the tests' trained model (SmolLM2-135M, F16): the
        return {**values, "input_path": trained} if trained else values  # table measures a trained model

    def types(self) -> tuple[str, ...]:
        return parse_types(self.quant_types)

    def workspace_folder(self) -> Workspace:
        return Workspace.of(self.workspace, self.output_dir)

    # ---------------------------------------------------------------------------------------------------- plan
    def make_plan(self, runtime: Runtime) -> Plan[QuantizeJob]:
        types, notes = self.types(), []
        job, sizes, peak = self._source(types, runtime, notes)
        needs = [Need("GPU", "no GPU", runtime.gpu or "none")]
        if job.saved:
            notes.append(f"in your workspace from an earlier session (the same source), kept as they are: "
                         f"{', '.join(p.name for p in job.saved.values())}")
        if not job.todo() and not self.quality_table:
            notes.append("nothing to download or quantize")
            return Plan(self, runtime, needs + push_needs(self.push_to_hub), job, notes)
        if job.source != "published":
            needs.append(wheel_need("llama.cpp", runtime.llama_cpp, fix=GET_LLAMA))
        needs += access_needs(*downloaded_from(job))
        needs += [Need("output name", f"{p.name} not to be an input", "it is the input", NO, "rename the input GGUF")
                  for p in job.outputs.values() if job.f16 is not None and p.resolve() == job.f16.resolve()]
        types = job.todo() or types
        what = {"published": "the published GGUF(s)", "direct": f"{len(types)} GGUF(s) merged in low-disk mode"}.get(
            job.source, f"F16 GGUF and {len(types)} quantized file(s)")
        needs.append(bytes_need("disk", peak + sum(sizes[t] for t in job.todo()), runtime.disk, fix=MORE_DISK,
                                detail=f"{what}: {', '.join(types)}"))
        if job.resources is not None:
            ram = max([job.resources.ram_bytes, *(p.ram_bytes for p in job.direct.values())])
            needs.append(bytes_need("RAM (merge)", ram, job.resources.free_ram,
                                    detail="the merges" if job.direct else "the F16 conversion"))
        if job.source == "direct" and not job.resources.sources[0].streamable:
            needs.append(Need("low-disk mode", "a base on the hub in several safetensors shards",
                              f"{job.resources.sources[0].ref}, which is not", NO, ""))
        if self.low_disk == "yes" and job.source in ("gguf", "convert"):
            needs.append(Need("low-disk mode", "a LoRA or patch release to merge", f"a {job.source} source", NO,
                              "low-disk mode merges a release straight into each type"))
        if self.quality_table and job.source == "direct":
            needs.append(Need("quality table", "the F16 GGUF to compare with", "none in low-disk mode", NO,
                              "the table compares each type with the F16, which low-disk mode never writes"))
        elif self.quality_table:
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
        saved = {t: c for t, c in self._in_workspace(outputs).items() if already_quantized(c, path, t, None)}
        return (QuantizeJob("gguf", str(path), path, outputs, saved=saved),
                {t: requantized_bytes(str(path), t) for t in types}, 0)

    def _in_workspace(self, outputs: dict[str, Path]) -> dict[str, Path]:
        """``{type: the workspace's file of that output's name}``, for the outputs saved there (not in place)."""
        ws = self.workspace_folder()
        found = {t: ws.find(p.name) for t, p in outputs.items()}
        return {t: c for t, c in found.items() if c is not None and c.is_file() and c.resolve() != outputs[t].resolve()}

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
        outputs = {t: quant_target(f16, self.output_dir, t) for t in types}
        if source == "merge" and self.low_disk != "no":
            direct = {t: resource_plan(sources, options=MergeOptions(fmt="gguf", outtype=t, low_disk=True), out=out,
                                       free_disk=runtime.disk, free_ram=runtime.ram) for t, out in outputs.items()}
            f16_peak = resources.chosen_peak_disk + sum(planned(t).output_bytes for t in types)
            streamable = resources.sources[0].streamable
            only_fit = streamable and f16_peak > runtime.disk and direct_peak(direct) <= runtime.disk
            if self.low_disk == "yes" or only_fit:
                notes.append("low-disk mode: each type merged straight from the release (no F16 file), each base "
                             f"shard deleted once merged ({resources.low_disk_held})")
                notes.append(next(iter(direct.values())).summary())
                saved = {t: c for t, c in self._in_workspace(outputs).items() if same_release(c, t, resources)}
                job = QuantizeJob("direct", entry.name, None, outputs, resources, entry, saved=saved, direct=direct)
                return job, {t: 0 for t in types}, direct_peak({t: p for t, p in direct.items() if t not in saved})
        notes.append(resources.summary())
        model = sources.files[0]
        saved = {t: c for t, c in self._in_workspace(outputs).items()
                 if (same_release(c, t, resources) if source == "merge" else
                     converted_job(model, t) is not None and saved_job(c.parent, c.name) == converted_job(model, t))}
        job = QuantizeJob(source, entry.name if entry is not None else str(path), f16, outputs, resources, entry,
                          saved=saved)
        return job, {t: planned(t).output_bytes for t in types}, resources.chosen_peak_disk

    def candidate_fixes(self, plan: Plan[QuantizeJob]) -> list[dict[str, Any]]:
        types = self.types()
        fixes: list[dict[str, Any]] = [{"quant_types": types[0]}] if len(types) > 1 else []
        if self.published == "no":
            fixes.append({"published": "plain"})
        if self.quality_table:
            fixes.append({"quality_table": False})
        entry = catalog.find(self.model) if not self.input_path else None
        if self.low_disk != "yes" and entry is not None and entry.kind in ("lora", "patch"):
            fixes.append({"low_disk": "yes"})
        if self.low_disk == "yes":
            fixes.append({"low_disk": "auto"})
        return fixes + ([{"push_to_hub": ""}] if self.push_to_hub else [])

    # ---------------------------------------------------------------------------------------------------- run
    def execute(self, plan: Plan[QuantizeJob]) -> QuantizeResult:
        job: QuantizeJob = plan.job
        if job.source == "published":
            result = QuantizeResult(None, {t: self._download(job, t) for t in job.outputs})
        elif job.source == "direct":
            base, loras, patch = release_inputs(job.entry)
            result = QuantizeResult(None, {t: job.saved.get(t) or merge(
                Recipe(base, loras, patch), out, MergeOptions(fmt="gguf", outtype=t, low_disk=True),
                job.direct[t]).outputs[0] for t, out in job.outputs.items()}, kept=tuple(job.saved))
        else:
            f16 = self._float_gguf(job) if job.todo() or self.quality_table else None
            result = QuantizeResult(f16, {t: job.saved.get(t) or quantize(f16, out, QuantizeOptions(qtype=t))
                                          for t, out in job.outputs.items()}, kept=tuple(job.saved))
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
        ws = self.workspace_folder()
        for qtype, path in result.quants.items():  # a conversion's file records no job: the workspace records it
            model = job.resources.sources[0] if job.source == "convert" and job.resources is not None else None
            ws.save([path], job=converted_job(model, qtype) if model is not None else None)
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
        return QuantizeResult(result.f16, result.quants, tuple(self.quality(result)), result.kept)


def direct_peak(plans: dict[str, ResourcePlan]) -> int:
    """The peak disk of merging each type in turn in low-disk mode: the outputs made before, plus the worst merge's
    own peak (its shard and its output)."""
    if not plans:
        return 0
    outputs = sum(p.output_bytes for p in plans.values())
    return outputs + max(p.chosen_peak_disk - p.output_bytes for p in plans.values())


def converted_job(model: SourceFiles, qtype: str) -> str | None:
    """The job a ``qtype`` GGUF converted from ``model`` (a full model on the hub) is saved under: its files by the
    hub's SHA256 and the type; None when the hub's digests are not known (then nothing is taken as the same)."""
    if model.estimated or not model.digests or set(model.weights) - set(model.digests):
        return None
    files = sorted([name, size, model.digests.get(name, "")] for name, size in model.files.items())
    return hashlib.sha256(json.dumps([files, qtype]).encode()).hexdigest()[:16]


def same_release(copy: Path, qtype: str, resources: ResourcePlan) -> bool:
    """``copy`` is the ``qtype`` GGUF of the release ``resources`` merges, from the same inputs: quantized by llama.cpp
    from its F16 merge (this notebook) or merged straight into ``qtype`` (01_merge_lora), as the job it records says."""
    try:
        if gguf_type(copy).lower() != qtype:
            return False
    except UserError:  # not a readable GGUF: not this output
        return False
    return any(made_from(copy, MergeOptions(fmt="gguf", outtype=o), resources.sources) for o in ("f16", qtype))


def downloaded_from(job: QuantizeJob) -> list[tuple[str, str | None]]:
    """``(role, ref)`` of every repo the run downloads from (the merge's inputs, the model converted, the release)."""
    if job.source in ("merge", "direct"):
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
