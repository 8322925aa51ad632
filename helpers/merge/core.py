"""``merge()``: LoRA adapters (one or several, in order) or a full-weight patch into a base model, in one pass.

Three named steps:

1. **preflight** (:mod:`.preflight`): resolve and open the inputs, verify their checksums, check them against
   each other, plan the output and check the disk, all before anything is written;
2. **stream** (:mod:`.stream`): compute each tensor in float32 and hand it to a sink, the HF or Meta ``.pth``
   writer (:mod:`.writers`) or :class:`helpers.gguf.GGUFSink`;
3. **finish**: the sink renames its partial output into place (with checksums), a GGUF gets its Ollama Modelfile,
   and the result is reported.

Outputs are built under a hidden partial name and renamed when complete; a rerun resumes an interrupted job and
says so when the job is already done (the same inputs, by content, and the same options: :mod:`.job`). One run at
a time writes an output (a lock beside it); a full or read-only disk is one error line that says how much is needed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

from ..checkpoint import TensorSink
from ..disk import claim_output, disk_errors
from ..env import available_ram_bytes
from ..gguf import JOB_KEY, GGUFSink, ModelCard, gguf_sidecars, write_modelfile
from ..gguf.card import describe_model
from ..gguf.hparams import context_length
from ..hub import ModelRef
from ..tokens import get_template, jinja_chat_template, load_tokenizer
from ..util import UserError, human_bytes, read_json
from .awq import AwqAdjustment, prepare_awq
from ..util.timings import phase, report as report_timings
from .inputs import MergeInputs, label, open_inputs, verify_inputs
from .job import already_done, job_identity, void_outputs_of_damaged_inputs
from .options import DTYPES, MergeOptions, MergeResult, Recipe
from .planner import ResourcePlan, checked_plan
from .preflight import MergeLayout, check_resources, output_bytes, merge_layout
from .awq_plan import with_awq
from .sources import gather_sources
from .stream import stream
from .writers import DEFAULT_SHARD_BYTES, HFSink, PthSink


def peak_rss() -> int:
    """Peak resident memory of this process so far, in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_sink(options: MergeOptions, target: Path, layout: MergeLayout, inputs: MergeInputs, *, job: dict,
              name: str) -> TensorSink:
    """The writer for ``options.fmt``, given everything it writes besides the tensors."""
    if options.fmt == "gguf":
        card = describe_model(layout.config, layout.tokenizer_dir, name=name)
        card = dataclasses.replace(card, extra_metadata={JOB_KEY: json.dumps(job, sort_keys=True)})
        return GGUFSink(target, outtype=options.outtype, card=card, sha256=options.write_sha256,
                        imatrix=options.imatrix, job=json.dumps(job, sort_keys=True))
    fingerprint = json.dumps(job, sort_keys=True)
    extra: dict[str, Any] = {"merge.json": {"job": job, "vocab_size": layout.vocab_size}}
    dtype = DTYPES[options.outtype]
    if options.fmt == "pth":
        return PthSink(target, n_shards=options.pth_shards, dtype=dtype, job=fingerprint, sha256=options.write_sha256,
                       extra_json=extra)
    card = describe_model(layout.config, layout.tokenizer_dir, name=name) if layout.tokenizer_dir is not None else None
    updates, extra["generation_config.json"] = serving_files(layout, inputs, card)
    template = chat_template_file(layout, card)
    if template is not None:
        extra["chat_template.jinja"] = template
    return HFSink(target, max_shard_bytes=options.max_shard_bytes or DEFAULT_SHARD_BYTES, dtype=dtype,
                  job=fingerprint, sha256=options.write_sha256, extra_json=extra, config_updates=updates)


def serving_files(layout: MergeLayout, inputs: MergeInputs, card: ModelCard | None) -> tuple[dict, dict]:
    """What an HF output needs, beyond the base's files, to be served as released (vLLM, transformers): the
    long-context RoPE scaling the catalog knows for the release when no input's config.json states it, and a
    ``generation_config.json`` whose stop ids include the chat template's end-of-turn token (``<|eot_id|>`` of a
    Llama-3 instruct LoRA merged into the base model, whose own file stops at ``<|end_of_text|>`` only).

    Returns:
        ``(config.json updates, generation_config.json)``.
    """
    card = card or ModelCard()
    updates: dict[str, Any] = {}
    if card.rope_scaling and not layout.config.get("rope_scaling"):
        updates["rope_scaling"] = dict(card.rope_scaling)
        if card.context_length:
            updates["max_position_embeddings"] = card.context_length
    gen_file = inputs.base_dir / "generation_config.json" if inputs.base_dir.is_dir() else None
    ids = {k: layout.config[k] for k in ("bos_token_id", "eos_token_id") if k in layout.config}
    gen = read_json(gen_file) if gen_file and gen_file.is_file() else ids
    eot = get_template(card.template).eot_token if card.template else None
    if eot and layout.tokenizer_dir is not None:
        tokenizer = load_tokenizer(layout.tokenizer_dir)
        eot_id = tokenizer.convert_tokens_to_ids(eot)
        stops = gen.get("eos_token_id")
        stops = [] if stops is None else list(stops) if isinstance(stops, list) else [stops]
        if isinstance(eot_id, int) and eot_id >= 0 and eot_id != tokenizer.unk_token_id and eot_id not in stops:
            gen = {**gen, "eos_token_id": [*stops, eot_id] if stops else eot_id}
    return updates, gen


def chat_template_file(layout: MergeLayout, card: ModelCard | None) -> str | None:
    """The text of ``chat_template.jinja`` for an HF output whose tokenizer files carry no chat template (the LoRA
    releases' ``tokenizer_config.json`` has none): the release's template, where transformers' tokenizers and
    text-generation-webui look for it; None under the rule a GGUF's ``tokenizer.chat_template`` follows (unknown or
    ``raw`` template) or when the tokenizer files already have one."""
    tok = layout.tokenizer_dir
    if card is None or card.template in (None, "raw") or tok is None or (tok / "chat_template.jinja").is_file():
        return None
    config = tok / "tokenizer_config.json"
    if config.is_file() and read_json(config).get("chat_template"):
        return None
    return jinja_chat_template(card.template)


def plan_hub_merge(base: ModelRef, loras: list[ModelRef], patch: ModelRef | None, options: MergeOptions,
                   target: Path) -> ResourcePlan | None:
    """The merge's resource plan, before anything is downloaded, when something must be (None: every input is
    here, or the hub is off): printed, with low-disk mode decided as ``options.low_disk`` asks.

    Raises:
        UserError: what cannot fit, with a line naming what would.
    """
    refs = [base, *loras, *([patch] if patch else [])]
    if all(r.is_local for r in refs) or os.environ.get("HF_HUB_OFFLINE") == "1":
        if options.low_disk:
            print("note: low-disk mode streams a base from the hub; this one is already on this machine")
        return None
    with phase("plan", "listings, config.json, safetensors headers"):
        sources = with_awq(gather_sources(base, list(loras), patch), options.awq)
    return checked_plan(sources, options=options, out=target)


def open_hub_inputs(base: ModelRef, loras: list[ModelRef], patch: ModelRef | None, plan: ResourcePlan | None
                    ) -> MergeInputs:
    """The inputs opened as ``plan`` says: a hub base in safetensors shards read as its shards arrive (kept in the
    hub cache, or in low-disk mode deleted once merged, with the plan's shards downloading ahead)."""
    streamed = plan is not None and (plan.low_disk or plan.streams_base)
    return open_inputs(base, loras, patch, stream_base=streamed, keep_shards=plan is None or not plan.low_disk,
                       ahead=plan.low_disk_ahead if plan is not None else 0)


def _write(layout: MergeLayout, inputs: MergeInputs, sink: TensorSink, options: MergeOptions,
           awq: AwqAdjustment | None = None) -> tuple[list[Path], int, int]:
    """Open the sink, stream every tensor, close it; returns ``(outputs, written, resumed)``.

    A bad input (:class:`UserError`) fails the same way next time, so its partial output is deleted; any other
    interruption keeps it for a resume.
    """
    try:
        sink.open(config=layout.config, tokenizer_dir=layout.tokenizer_dir, tensors=layout.tensors)
        with phase("merge", f"{len(layout.tensors)} tensors"):
            written, resumed = stream(layout, inputs, sink, outtype=options.outtype, show_progress=options.progress,
                                      awq=awq)
        return sink.close(), written, resumed
    except BaseException as exc:
        sink.abort(keep_partial=not isinstance(exc, UserError))
        raise


def _merge_into(target: Path, layout: MergeLayout, inputs: MergeInputs, options: MergeOptions, job: dict,
                resources: ResourcePlan | None, *, name: str) -> tuple[list[Path], int, int]:
    """The checked merge written into ``target`` (a GGUF with its Modelfile); returns ``(outputs, written, resumed)``."""
    awq = prepare_awq(options.awq, {t.name: t.shape for t in layout.tensors}) if options.awq is not None else None
    sink = make_sink(options, target, layout, inputs, job=job, name=name)
    planned = (resources.output_bytes, resources.ram_bytes) if resources is not None else None
    print(describe(layout, inputs, target, check_resources(layout, target, options, partial=sink.partial, planned=planned)))
    with disk_errors(target.parent, needed=output_bytes(layout, options), what=f"the merged model ({options.fmt})"):
        if awq is not None:
            print(awq.summary())
        outputs, written, resumed = _write(layout, inputs, sink, options, awq)
        if isinstance(sink, GGUFSink) and len(outputs) == 1:  # Ollama imports one file with its Modelfile
            outputs.append(write_modelfile(outputs[0], template=sink.card.template or "raw",
                                           context_length=context_length(layout.config, sink.card)))
    return outputs, written, resumed


def merge(recipe: Recipe, out: str | Path, options: MergeOptions = MergeOptions(), plan: ResourcePlan | None = None
          ) -> MergeResult:
    """Merge ``recipe``'s LoRAs (in order) and/or patch into its base and write the result to ``out``.

    Args:
        recipe: the base, the LoRAs in order, the patch.
        out: output folder (``hf``/``pth``), or ``.gguf`` file (a folder gets ``ggml-model-<outtype>.gguf``).
        options: format, type and the rest (:class:`MergeOptions`; ``fmt="gguf"`` with a quantization ``outtype``
            such as ``q4_k_m`` quantizes each tensor as it is merged, exactly as llama.cpp's quantizer would
            quantize the F16 GGUF).
        plan: the plan of this merge made beforehand (:func:`plan_resources`, as a notebook's check cell makes it);
            it is executed as it is, low-disk mode included, instead of planning again.

    Raises:
        UserError: any problem with the inputs, found before anything is written.
    """
    t0 = time.time()
    base, loras, patch, fmt = recipe.base, list(recipe.loras), recipe.patch, options.fmt
    target = options.target(out)
    with claim_output(target, what=f"the merged model ({fmt})", sidecars=gguf_sidecars(target) if fmt == "gguf" else ()):
        if plan is None:
            plan = plan_hub_merge(base, loras, patch, options, target)
        if options.awq is not None and plan is not None:  # checked against the model's outline before any download
            prepare_awq(options.awq, {t.name: tuple(t.shape) for t in plan.tensors})
        with void_outputs_of_damaged_inputs(target, fmt), phase("inputs", "LoRAs, patch, the base's small files"):
            inputs = open_hub_inputs(base, loras, patch, plan)
        try:
            job = job_identity(inputs, options)
            if not options.overwrite and already_done(target, fmt, job, replace=options.replace):
                print(f"already merged into {target} (use --overwrite to merge again)")
                return MergeResult([target], 0, 0, seconds=time.time() - t0, peak_rss_bytes=peak_rss(),
                                   already_merged=True)
            if options.verify_sha256:
                inputs.settle()  # the LoRAs still arriving: the listing checks whole files
                print(f"verified SHA256 of {verify_inputs(inputs, options.verify_sha256)} input files")
            layout = merge_layout(inputs)
            outputs, written, resumed = _merge_into(target, layout, inputs, options, job, plan,
                                                    name=label(loras[-1] if loras else patch or base))
        finally:
            inputs.close()
    result = MergeResult(list(outputs), layout.vocab_size, written, resumed, time.time() - t0, peak_rss())
    report_timings()
    print(f"merged into {target}: {written} tensors written" + (f", {resumed} resumed" if resumed else "")
          + f", vocabulary {layout.vocab_size}, {result.seconds:.1f} s, peak RSS {human_bytes(result.peak_rss_bytes)}")
    return result


def describe(layout: MergeLayout, inputs: MergeInputs, target: Path, ram_estimate: int) -> str:
    """The one line printed before the merge starts."""
    avail = available_ram_bytes()
    return (f"merging {len(layout.tensors)} tensors: {len(inputs.adapters)} LoRA(s){' + patch' if inputs.patch else ''}, "
            f"vocabulary {layout.base_vocab} -> {layout.vocab_size}; estimated peak RAM {human_bytes(ram_estimate)}"
            + (f" ({human_bytes(avail)} available)" if avail else "") + f"; output {target}")
