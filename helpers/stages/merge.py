"""Notebook 01: merge a LoRA (or patch) release into its base, in one streaming pass, into the GGUF (quantized in
the same pass), HF or Meta ``.pth`` output the user asked for.

The plan resolves the release (base, LoRAs in order, patch), names the output, plans the merge's disk and RAM
before anything is downloaded (the merge's own :class:`~helpers.merge.ResourcePlan`, low-disk mode decided), and
checks that gated bases can be downloaded; the run executes that plan as it is.

Low-bit types (below 4.5 bits per weight: IQ4_XS, Q3_K_M, IQ3_S, IQ3_XXS, Q2_K) go through the importance-matrix
route (:func:`helpers.imatrix.imatrix_route`): the merge writes an intermediate Q8_0 (or F16), llama.cpp computes the
importance matrix of that merge on Chinese calibration text, then quantizes to the low-bit type with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import catalog
from ..catalog import ModelEntry
from ..colab import NO, Need, Runtime, bytes_need, wheel_need
from ..evaluate import ChunkSettings
from ..gguf import BITS_PER_WEIGHT, FLOAT_TYPES, NEEDS_IMATRIX, export_file, gguf_type, read_metadata
from ..imatrix import (CALIBRATION_NAME, IMATRIX_CHUNK, INTERMEDIATES, RouteOptions, imatrix_path, imatrix_route,
                       imatrix_seconds, intermediate_path, offload_layers, route_recommended)
from ..merge import (FORMATS, MergeOptions, MergeResult, Recipe, ResourcePlan, made_from, merge, plan_resources,
                     merged_layout, sources_fit)
from ..merge.awq import AWQ_REPO, is_hub_file, published_awq
from ..publish import ReleaseCard
from ..tokens import piece_count
from ..util import UserError, human_bytes, human_seconds, read_json
from .base import Plan, Stage, form_path
from .form import param
from .names import release_stem, release_target
from .needs import GET_LLAMA, MORE_DISK, MORE_RAM, access_needs, listing_fallback
from .workspace import AUTO, PUSH_HELP, WORKSPACE_HELP, Workspace, locate, push, push_needs

# notebook 01's OUTTYPE dropdown (any of gguf.WRITE_TYPES can be typed in)
OUTTYPE_CHOICES = ("q4_k_m", "q5_k_m", "q6_k", "q8_0", "q4_0", "iq4_xs", "q3_k_m", "iq3_s", "iq3_xxs", "q2_k", "f16",
                   "bf16", "f32")
LOW_DISK = {"auto": None, "yes": True, "no": False}
IMATRIX = ("auto", "yes", "no")
AWQ = ("", "auto")  # notebook 01's AWQ dropdown (an llm-awq .pt file or hub file can be typed in)


def release_inputs(entry: ModelEntry, base: str = "") -> tuple[str, list[str], str | None]:
    """(base, LoRAs in order, patch) of a catalog LoRA or patch release; ``base`` replaces the catalog's."""
    default_base, steps = catalog.release_recipe(entry.name)
    patch = steps.pop() if entry.kind == "patch" else None
    return base or default_base, steps, patch


@dataclass(frozen=True)
class MergeJob:
    """What the merge run does: the inputs, the output, the merge's resource plan (low-disk mode decided), and
    ``saved``: the same merge already in the workspace (then nothing is downloaded or merged)."""

    entry: ModelEntry
    base: str
    loras: tuple[str, ...]
    patch: str | None
    target: Path
    options: MergeOptions | None
    resources: ResourcePlan | None
    saved: Path | None = None
    route: Route | None = None


@dataclass(frozen=True)
class Route:
    """The importance-matrix route's decisions: the intermediate type, the calibration text (None: the default data
    set), the chunks of :data:`~helpers.imatrix.IMATRIX_CHUNK` tokens, the low-bit output's bytes, the model's
    parameters and layers (for the matrix's time and GPU layers), whether the matrix
    runs on a GPU (a CUDA build of llama.cpp there), and the layers it puts on it (-1: all; fewer when the
    intermediate does not fit the GPU's memory)."""

    intermediate: str
    calibration: Path | None
    chunks: int | None
    output_bytes: int
    params: int
    n_layers: int
    gpu: bool = False
    gpu_layers: int = -1

    def gpu_share(self) -> float:
        """The share of the model's layers the matrix's run puts on the GPU (0: it runs on the CPU)."""
        if not self.gpu:
            return 0.0
        return 1.0 if self.gpu_layers < 0 else self.gpu_layers / max(self.n_layers, 1)


@dataclass(frozen=True)
class MergeStage(Stage[MergeJob]):
    """The merge notebook's form."""

    NOTEBOOK = "01_merge_lora"
    SETUP = frozenset({"llama_cpp", "gpu"})  # llama.cpp's CUDA wheel on a GPU runtime: the importance matrix there

    model: str = param("chinese-alpaca-2-7b-lora", "the release: a LoRA or patch from the catalog (its base and, for "
                       "Plus/Pro, the LoRA before it come from the catalog)",
                       choices=catalog.names(kind="lora") + catalog.names(kind="patch"), allow_input=True)
    base_model: str = param("", "another base model (folder or hub id) instead of the catalog's; empty: the "
                            "catalog's")
    output_format: str = param("gguf", "gguf for llama.cpp and Ollama, hf for transformers, pth for Meta's layout",
                               choices=tuple(sorted(FORMATS, key=lambda f: f != "gguf")))
    outtype: str = param("q4_k_m", "the GGUF type, quantized in the same pass (iq4_xs and below: through the "
                         "importance-matrix route; f16/bf16/f32 for every format)",
                         choices=OUTTYPE_CHOICES)
    imatrix: str = param("auto", "the importance-matrix route: merge to INTERMEDIATE, compute llama.cpp's "
                         "importance matrix on CALIBRATION_TEXT, quantize to OUTTYPE with it (auto: for the types "
                         "below 4.5 bits, where it helps most; iq3_xxs cannot do without)", choices=IMATRIX)
    calibration_text: str = param("", f"a UTF-8 text file for the importance matrix (empty: {CALIBRATION_NAME}, "
                                  "Chinese stories from the hub)")
    imatrix_chunks: int = param(100, f"chunks of {IMATRIX_CHUNK} tokens of calibration text (0: the whole text)")
    intermediate: str = param("q8_0", "the route's intermediate GGUF, deleted at the end: q8_0 (half the disk) or "
                              "f16 (exactly what llama-quantize makes from the F16)", choices=INTERMEDIATES)
    awq: str = param("", "AWQ search results applied to each tensor as it is merged, so a 4-bit GGUF keeps more "
                     f"quality (auto: the authors' file in {AWQ_REPO} for this release, downloaded first, when they "
                     "published one; or an llm-awq .pt file or hub file; empty: none)", choices=AWQ, allow_input=True)
    low_disk: str = param("auto", "delete each base shard once merged, the next one downloading meanwhile (auto: "
                          "only when the full download does not fit)", choices=tuple(LOW_DISK))
    output_dir: str = param("/content/merged", "where the merge is written on this runtime")
    workspace: str = param(AUTO, WORKSPACE_HELP)
    push_to_hub: str = param("", PUSH_HELP)
    download: bool = param(False, "also download a GGUF to your computer (Colab)")

    def settings(self) -> str:
        route = f" (importance matrix via {self.intermediate})" if self.uses_route() else ""
        awq = f", AWQ {self.awq}" if self.awq else ""
        return f"{self.model} -> {self.output_format} {self.outtype}{route}{awq}"

    def smoke_values(self, demo: Path) -> dict[str, Any]:
        return {"outtype": "iq3_xxs", "imatrix_chunks": 4}  # the importance-matrix route, on the calibration stand-in

    def step_name(self) -> str:
        """``merge lora`` or ``merge patch``, as the release is."""
        return f"merge {catalog.get(self.model).kind}" if catalog.find(self.model) is not None else "merge"

    def uses_route(self) -> bool:
        """True when the output is made through the importance-matrix route."""
        if self.output_format != "gguf" or self.outtype in FLOAT_TYPES:
            return False
        return self.imatrix == "yes" or (self.imatrix == "auto" and route_recommended(self.outtype))

    def entry(self) -> ModelEntry:
        """The release, from the catalog.

        Raises:
            UserError: an unknown name, or a model with nothing to merge.
        """
        entry = catalog.get(self.model)
        if entry.kind not in ("lora", "patch"):
            raise UserError(f"{entry.name} is a {entry.kind} model: there is nothing to merge; chat with it in "
                            "03_inference_chat or quantize it in 02_quantize_gguf")
        return entry

    # ---------------------------------------------------------------------------------------------------- plan
    def make_plan(self, runtime: Runtime) -> Plan[MergeJob]:
        entry = self.entry()
        base, loras, patch = release_inputs(entry, self.base_model)
        target = release_target(entry, self.output_dir, self.output_format, self.outtype)
        job = MergeJob(entry, base, tuple(loras), patch, target, None, None)
        if self.output_format != "gguf" and self.outtype not in FLOAT_TYPES:
            need = Need("output type", f"{self.outtype} (a GGUF quantization type)", f"format {self.output_format}",
                        NO, "the hf and pth formats hold f16, bf16 or f32")
            return Plan(self, runtime, [need], job)
        if refused := self._imatrix_refusal():
            return Plan(self, runtime, [refused], job)
        intermediate = self.intermediate if self.uses_route() else self.outtype
        notes: list[str] = []
        awq = self.awq_results(entry, notes)
        options = MergeOptions(fmt=self.output_format, outtype=intermediate, low_disk=LOW_DISK[self.low_disk],
                               awq=awq)
        written = intermediate_path(target, intermediate) if self.uses_route() else target
        resources = listing_fallback(notes, lambda offline: plan_resources(
            base, loras, patch, options=options, out=written, offline=offline, fresh=runtime.assumed,
            free_disk=runtime.disk, free_ram=runtime.ram))
        fit = sources_fit(resources.sources, outtype=self.outtype) if self.output_format == "gguf" else None
        route = self._route(resources, fit.file_bytes, runtime) if self.uses_route() else None
        job = MergeJob(entry, base, tuple(loras), patch, target, options, resources, self._saved(target, resources),
                       route)
        if job.saved is not None:
            note = f"{job.saved.name} is in your workspace from an earlier session (the same merge): nothing to do"
            return Plan(self, runtime, [Need("GPU", "no GPU", runtime.gpu or "none")], job, [note])
        needs = [Need("GPU", "no GPU", runtime.gpu or "none"), *self._access_needs(job), self._disk_need(job),
                 bytes_need("RAM", resources.ram_bytes, resources.free_ram, fix=MORE_RAM,
                            detail="peak of the streaming merge"), *push_needs(self.push_to_hub)]
        if route is not None:
            needs.append(bytes_need("RAM (importance matrix)", resources.output_bytes, resources.free_ram,
                                    detail=f"the {intermediate} merge, mapped", slow_fix="llama.cpp reads what does "
                                    "not fit from disk: the matrix is computed, slowly"))
            notes.append(self._route_note(route, resources, runtime))
        if self.output_format == "gguf" and self.outtype not in FLOAT_TYPES:
            needs.append(wheel_need("llama.cpp", runtime.llama_cpp, fix=GET_LLAMA))
        if self.output_format == "gguf":
            notes.append("on a laptop: " + fit.summary())
        if resources.awq is not None:
            notes.append(awq_note(resources))
        return Plan(self, runtime, needs, job, notes + [resources.summary()])

    def awq_results(self, entry: ModelEntry, notes: list[str]) -> str | None:
        """The AWQ results the merge applies (a hub file or a path), None for none; ``auto`` is the authors'
        published file for this release, and a note says when they published none."""
        if not self.awq.strip():
            return None
        if self.awq == "auto":
            ref = published_awq(release_stem(entry))
            if ref is None:
                notes.append(f"AWQ: the authors published no AWQ results for {release_stem(entry)} ({AWQ_REPO} has "
                             "them for the Chinese-LLaMA-2/Alpaca-2 1.3B, 7B, 13B, 16K and RLHF models): merged "
                             "without AWQ")
            return ref
        return self.awq if is_hub_file(self.awq) else locate(self.awq, self.workspace_folder())

    def _imatrix_refusal(self) -> Need | None:
        """A type that cannot be made without an importance matrix, with the route turned off."""
        if self.output_format == "gguf" and self.imatrix == "no" and self.outtype in NEEDS_IMATRIX:
            return Need("importance matrix", f"one for {self.outtype}", self.assignment("imatrix", "no"), NO,
                        f"llama.cpp makes {self.outtype} only with an importance matrix")
        return None

    def _route(self, resources: ResourcePlan, output_bytes: int, runtime: Runtime) -> Route:
        calibration = form_path(locate(self.calibration_text, self.workspace_folder()))
        if calibration is not None and not calibration.is_file():
            raise UserError(f"CALIBRATION_TEXT {calibration} is not a file: give a UTF-8 text file, or leave it "
                            f"empty for {CALIBRATION_NAME}")
        config, tensors, _ = merged_layout(resources.sources)
        n_layers = int(config["num_hidden_layers"])
        gpu = bool(runtime.gpu) and runtime.llama_cpp_gpu
        layers = offload_layers(resources.output_bytes, n_layers, runtime.vram) if gpu else -1
        return Route(self.intermediate, calibration, self.imatrix_chunks or None, output_bytes,
                     sum(t.numel for t in tensors), n_layers, gpu, layers)

    def _route_note(self, route: Route, resources: ResourcePlan, runtime: Runtime) -> str:
        text = str(route.calibration) if route.calibration else f"{CALIBRATION_NAME} (downloaded, about 800 kB)"
        how_much = f"{route.chunks} chunks of {IMATRIX_CHUNK} tokens" if route.chunks else "the whole text"
        cost = ""
        if route.gpu and route.gpu_layers >= 0:
            how_much += (f", {route.gpu_layers} of {route.n_layers} layers on the GPU (the {route.intermediate} does "
                         "not fit it)")
        if route.chunks:
            tokens, share = route.chunks * IMATRIX_CHUNK, route.gpu_share()
            seconds = (imatrix_seconds(route.params, tokens, gpu=True) * share
                       + imatrix_seconds(route.params, tokens, gpu=False) * (1.0 - share))
            cost = f", about {human_seconds(seconds)} on this runtime"
            if not route.gpu:
                gpu = imatrix_seconds(route.params, tokens, gpu=True)
                cost += f" (a T4 GPU runtime: about {human_seconds(gpu)} if the model fits its 15 GB)"
        return (f"importance-matrix route: merge to {route.intermediate} (deleted at the end), the matrix on {text}, "
                f"{how_much}{cost}, then {self.outtype} ({human_bytes(route.output_bytes)}); the matrix is kept "
                "beside the GGUF")

    def workspace_folder(self) -> Workspace:
        return Workspace.of(self.workspace, self.output_dir)

    def _saved(self, target: Path, resources: ResourcePlan) -> Path | None:
        """The workspace's copy of this very merge, when an earlier session saved it and the local one is gone."""
        saved = self.workspace_folder().find(target.name)
        if saved is None or target.exists() or saved == target:
            return None
        return saved if made_from(saved, resources.options, resources.sources) else None

    @staticmethod
    def _access_needs(job: MergeJob) -> list[Need]:
        return access_needs(("base model", job.base), *(("LoRA", x) for x in job.loras), ("patch", job.patch))

    def _disk_need(self, job: MergeJob) -> Need:
        resources, route = job.resources, job.route
        mode = f", low-disk mode ({resources.low_disk_held})" if resources.low_disk else ""
        written, peak = f"{human_bytes(resources.output_bytes)} output", resources.chosen_peak_disk
        if route is not None:
            written = (f"{human_bytes(resources.output_bytes)} {route.intermediate} + "
                       f"{human_bytes(route.output_bytes)} {self.outtype}")
            peak += route.output_bytes
        detail = f"{human_bytes(resources.download_bytes)} download + {written}{mode}"
        need = bytes_need("disk", peak, resources.free_disk, fix=MORE_DISK, detail=detail)
        if resources.low_disk and not resources.sources[0].streamable:
            return Need("low-disk mode", "a base on the hub in several safetensors shards",
                        f"{resources.sources[0].ref}, which is not", NO, "")
        return need

    def candidate_fixes(self, plan: Plan[MergeJob]) -> list[dict[str, Any]]:
        fixes: list[dict[str, Any]] = []
        if self._imatrix_refusal() is not None:
            return [{"imatrix": "auto"}, {"outtype": "q3_k_m"}]
        if plan.job.options is None:  # a quantization type with an hf / pth format
            return [{"outtype": "f16"}, {"output_format": "gguf"}]
        if self.low_disk != "yes":
            fixes.append({"low_disk": "yes"})
        if self.low_disk == "yes":
            fixes.append({"low_disk": "auto"})
        if self.push_to_hub:
            fixes.append({"push_to_hub": ""})
        if self.uses_route() and self.intermediate == "f16":
            fixes.append({"intermediate": "q8_0"})
        if self.output_format == "gguf":
            bits = BITS_PER_WEIGHT[self.outtype]
            smaller = sorted((t for t in OUTTYPE_CHOICES if BITS_PER_WEIGHT[t] < bits), key=BITS_PER_WEIGHT.get,
                             reverse=True)
            fixes += [{"outtype": t} for t in smaller] + [{"outtype": t, "low_disk": "yes"} for t in smaller]
        else:
            fixes.append({"output_format": "gguf", "outtype": "q4_k_m"})
        return fixes

    # ---------------------------------------------------------------------------------------------------- run
    def execute(self, plan: Plan[MergeJob]) -> MergeResult:
        job: MergeJob = plan.job
        if job.saved is not None:
            print(f"{job.saved} holds this merge already (saved by an earlier session)")
            self.hand_over(job.saved)
            return MergeResult([job.saved], output_vocab(job.saved), 0, already_merged=True)
        if job.route is not None:
            result = self._through_imatrix(job)
        else:
            result = merge(Recipe(job.base, job.loras, job.patch), job.target, job.options, job.resources)
        self.keep(job)
        return result

    def _through_imatrix(self, job: MergeJob) -> MergeResult:
        """The importance-matrix route; a low-bit output of these inputs already here is kept as it is."""
        matrix = imatrix_path(job.target)
        if (job.target.is_file() and matrix.is_file() and gguf_type(job.target).lower() == self.outtype
                and made_from(job.target, job.options, job.resources.sources)):
            print(f"{job.target} holds this merge already (importance matrix: {matrix.name})")
            return MergeResult([job.target, matrix], output_vocab(job.target), 0, already_merged=True)
        route = job.route
        options = RouteOptions(outtype=self.outtype, intermediate=route.intermediate, calibration=route.calibration,
                               settings=ChunkSettings(n_ctx=IMATRIX_CHUNK, chunks=route.chunks,
                                                      n_gpu_layers=route.gpu_layers), awq=job.options.awq)
        done = imatrix_route(Recipe(job.base, job.loras, job.patch), job.target, options, job.resources)
        return MergeResult([done.output, done.imatrix], output_vocab(done.output), 0)

    def keep(self, job: MergeJob) -> list[Path]:
        """Save the output to the workspace, push it when asked, download a GGUF when asked; returns where it is."""
        ws = self.workspace_folder()
        matrix = imatrix_path(job.target)
        extra = [matrix] if job.route is not None and matrix.is_file() else []
        kept = [s.path for s in ws.save([job.target, *extra])][:1] or [job.target]
        kind = "gguf" if self.output_format == "gguf" else "merged"
        card = ReleaseCard(job.base, (*job.loras, *([job.patch] if job.patch else [])), kind=kind,
                           quant=self.outtype if kind == "gguf" else None,
                           how=f"merged by notebook 01_merge_lora: {self.settings()}")
        push([job.target], self.push_to_hub, card)
        self.hand_over(job.target)
        return kept

    def hand_over(self, output: Path) -> None:
        """For a GGUF: its size, the exact ``ollama create`` command for its Modelfile, and (``DOWNLOAD``) the
        browser download; the same for a merge made now and one found in the workspace."""
        if self.output_format == "gguf" and output.is_file():
            export_file(output, download=self.download)


def awq_note(resources: ResourcePlan) -> str:
    """What the check says of the AWQ results: the file, its size, when it is downloaded and what it does."""
    awq = resources.awq
    size = human_bytes(awq.total)
    size = f"about {size}, estimated from the model's shape" if awq.estimated else size
    when = ("downloaded at the start of the run, before the weights" if awq.missing
            else "already on this runtime")
    return (f"AWQ: {awq.ref} ({size}), {when}; its scales and clipping ranges are applied to each tensor as it is "
            "merged, before quantizing (the authors searched theirs for 4-bit weights)")


def output_vocab(output: Path) -> int:
    """The vocabulary size a merge's output holds, read from the output itself: a GGUF's ``<arch>.vocab_size``
    (else its token list), an HF folder's ``config.json``, a ``.pth`` folder's ``params.json``."""
    if output.suffix == ".gguf":
        meta = read_metadata(output)
        size = meta.get(f"{meta.get('general.architecture', 'llama')}.vocab_size")
        if size is None:
            size = len(read_metadata(output, ("tokenizer.ggml.tokens",)).get("tokenizer.ggml.tokens") or [])
        return int(size)
    for name in ("config.json", "params.json"):
        size = int(read_json(output / name, default={}).get("vocab_size", -1)) if (output / name).is_file() else -1
        if size > 0:
            return size
    try:  # Meta's params.json says -1: the tokenizer's pieces are the rows
        return piece_count(output / "tokenizer.model")
    except Exception:  # noqa: BLE001 - a tiktoken tokenizer (Llama-3) or none: the size is not known
        return 0
