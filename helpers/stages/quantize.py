"""Notebook 02: from a model (a full release, a LoRA/patch release merged on the fly, an HF folder, or a float GGUF)
to one or several llama.cpp types, with the size / perplexity / KL table that says what each costs.

The plan decides where the float GGUF comes from (given, merged, or converted) and what every output is called,
sizes them exactly before anything is downloaded, and refuses an output that would replace an input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import catalog
from ..colab import NO, Need, Runtime, bytes_need, wheel_need
from ..colab.sizing import TORCH_PROCESS_BYTES
from ..evaluate import compare_quants, default_eval_text
from ..gguf import FLOAT_TYPES, convert_hf_to_gguf, gguf_type, qtype_name, quantize, requantized_bytes
from ..hub import resolve_model
from ..merge import MergeOptions, ResourcePlan, Sources, gather_sources, merge, resource_plan
from ..util import UserError, human_bytes
from .base import Plan, Stage, form_path
from .form import param
from .merge import release_inputs, release_target
from .needs import GET_LLAMA, MORE_DISK, listing_fallback


def parse_types(text: str) -> tuple[str, ...]:
    """``"q4_k_m, Q8_0"`` -> ``("q4_k_m", "q8_0")``: llama.cpp type names, normalised, each once, in order.

    Raises:
        UserError: an unknown type, a float type, or none at all.
    """
    types = tuple(dict.fromkeys(qtype_name(t) for t in str(text).split(",") if t.strip()))
    floats = [t for t in types if t in FLOAT_TYPES]
    if floats or not types:
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


@dataclass(frozen=True)
class QuantizeJob:
    """What the run does: make (or take) the float GGUF, then each quantized file.

    Attributes:
        source: ``gguf`` (a float GGUF given), ``merge`` (a LoRA/patch release) or ``convert`` (a full model).
        ref: what is merged or converted (a catalog name, hub id or folder); the GGUF itself for ``gguf``.
        f16: the float GGUF.
        outputs: ``{type: file}``.
        resources: the merge's or conversion's plan (None for a given GGUF).
    """

    source: str
    ref: str
    f16: Path
    outputs: dict[str, Path]
    resources: ResourcePlan | None = None
    entry: Any = None


@dataclass(frozen=True)
class QuantizeResult:
    """The float GGUF, the quantized files by type, and the quality table's rows."""

    f16: Path
    quants: dict[str, Path]
    rows: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class QuantizeStage(Stage):
    """The quantize notebook's form."""

    NOTEBOOK = "02_quantize_gguf"
    SETUP = frozenset({"llama_cpp"})

    model: str = param("chinese-alpaca-2-7b", "a model from the catalog (full, LoRA or patch), a hub id or an HF "
                       "folder", choices=[n for k in ("full", "lora", "patch") for n in catalog.names(kind=k)],
                       allow_input=True)
    input_path: str = param("", "an F16/BF16/F32 GGUF you already have (then MODEL is not used)")
    quant_types: str = param("q4_k_m", "llama.cpp types, comma-separated (q4_k_m, q5_k_m, q6_k, q8_0, ...)")
    eval_text: str = param("", "a UTF-8 text file to score the quants on (empty: a Chinese sample)")
    output_dir: str = param("/content/gguf", "where the GGUF files go")
    split_gb: float = param(0.0, "split GGUFs larger than this many GB (0: never)")
    save_to_drive: bool = param(False, "copy the results to Google Drive")
    download: bool = param(False, "download the results to your computer (Colab)")

    def settings(self) -> str:
        return f"{self.input_path or self.model} -> F16 -> {self.quant_types}"

    def types(self) -> tuple[str, ...]:
        return parse_types(self.quant_types)

    # ---------------------------------------------------------------------------------------------------- plan
    def make_plan(self, runtime: Runtime) -> Plan:
        types = self.types()
        notes: list[str] = []
        given = form_path(self.input_path)
        if given is not None:
            job, sizes, peak = self._given(given, types)
        else:
            job, sizes, peak = self._made(types, runtime, notes)
        needs = [Need("GPU", "no GPU", runtime.gpu or "none"), wheel_need("llama.cpp", runtime.llama_cpp, fix=GET_LLAMA)]
        needs += [Need("output name", f"{p.name} not to be an input", "it is the input", NO, "rename the input GGUF")
                  for p in job.outputs.values() if p.resolve() == job.f16.resolve() and job.source == "gguf"]
        detail = f"F16 GGUF and {len(types)} quantized file(s): {', '.join(types)}"
        needs.append(bytes_need("disk", peak + sum(sizes.values()), runtime.disk, fix=MORE_DISK, detail=detail))
        if job.resources is not None:
            needs.append(bytes_need("RAM", job.resources.ram_bytes, job.resources.free_ram, detail="the F16 conversion"))
        f16_size = job.f16.stat().st_size if given is not None else job.resources.output_bytes
        needs.append(bytes_need("RAM", f16_size + TORCH_PROCESS_BYTES, runtime.ram, detail="scoring the F16 GGUF",
                                slow_fix="llama.cpp maps the file and reads what does not fit from disk: the "
                                         "comparison runs, slowly"))
        return Plan(self, runtime, needs, job, notes)

    def _given(self, path: Path, types: tuple[str, ...]) -> tuple[QuantizeJob, dict[str, int], int]:
        if not path.is_file() or path.suffix != ".gguf":
            raise UserError(f"INPUT_PATH {path} is not a .gguf file; empty it to start from MODEL")
        kind = gguf_type(path).lower()
        if kind not in FLOAT_TYPES:
            raise UserError(f"{path} is already quantized ({kind}): llama.cpp quantizes from F16, BF16 or F32")
        outputs = {t: quant_target(path, self.output_dir, t) for t in types}
        return QuantizeJob("gguf", str(path), path, outputs), {t: requantized_bytes(str(path), t) for t in types}, 0

    def _made(self, types: tuple[str, ...], runtime: Runtime, notes: list[str]
              ) -> tuple[QuantizeJob, dict[str, int], int]:
        path = Path(self.model).expanduser()
        entry = None if path.exists() else catalog.get(self.model)
        if entry is not None and entry.kind == "gguf":
            raise UserError(f"{entry.name} is already quantized: download a file from {entry.hub_id} with "
                            "03_inference_chat, or choose the full model it was made from")
        if entry is not None and entry.kind in ("lora", "patch"):
            base, loras, patch = release_inputs(entry)
            source, f16 = "merge", release_target(entry, self.output_dir, "gguf", "f16")
        else:
            base, loras, patch = (str(path) if path.exists() else entry.hub_id), [], None
            source = "convert"
            f16 = Path(self.output_dir).expanduser() / (f"{path.name}-f16.gguf" if entry is None
                                                        else release_target(entry, ".", "gguf", "f16").name)
        sources: Sources = listing_fallback(notes, lambda offline: gather_sources(
            base, loras, patch, offline=offline, fresh=runtime.assumed))

        def planned(outtype: str) -> ResourcePlan:
            return resource_plan(sources, options=MergeOptions(fmt="gguf", outtype=outtype), out=f16,
                                 free_disk=runtime.disk, free_ram=runtime.ram,
                                 partial=f16.with_name(f".{f16.name}.partial"))

        resources = planned("f16")
        notes.append(resources.summary())
        outputs = {t: quant_target(f16, self.output_dir, t) for t in types}
        job = QuantizeJob(source, entry.name if entry is not None else str(path), f16, outputs, resources, entry)
        return job, {t: planned(t).output_bytes for t in types}, resources.chosen_peak_disk

    def candidate_fixes(self, plan: Plan) -> list[dict[str, Any]]:
        types = self.types()
        return [{"quant_types": types[0]}] if len(types) > 1 else []

    # ---------------------------------------------------------------------------------------------------- run
    def execute(self, plan: Plan) -> QuantizeResult:
        job: QuantizeJob = plan.job
        f16 = self._float_gguf(job)
        quants = {t: quantize(f16, out, qtype=t) for t, out in job.outputs.items()}
        return QuantizeResult(f16, quants)

    @staticmethod
    def _float_gguf(job: QuantizeJob) -> Path:
        if job.source == "gguf":
            return job.f16
        if job.source == "merge":  # a finished merge of the same inputs is recognised and kept
            base, loras, patch = release_inputs(job.entry)
            merge(base, loras, patch=patch, out=job.f16, fmt="gguf", outtype="f16", resources=job.resources)
            return job.f16
        if job.f16.is_file():
            return job.f16
        template = job.entry.template if job.entry is not None else None
        folder = resolve_model(job.entry.hub_id if job.entry is not None else job.ref, what="model")
        return convert_hf_to_gguf(folder, job.f16, outtype="f16", template=template)

    def quality(self, result: QuantizeResult) -> list[dict]:
        """The size / perplexity / KL table of ``result`` on ``EVAL_TEXT`` (a Chinese sample when empty)."""
        text = form_path(self.eval_text) or default_eval_text()
        return compare_quants(result.f16, list(result.quants.values()), text)

    @staticmethod
    def sizes(result: QuantizeResult) -> str:
        """One line per file written."""
        return "\n".join(f"{human_bytes(p.stat().st_size):>10}  {p}" for p in [result.f16, *result.quants.values()])
