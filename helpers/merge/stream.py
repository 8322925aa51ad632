"""The streaming pass: each output tensor computed in float32 from its inputs and handed to a sink.

For every tensor of the layout, in order:

1. start from the base tensor, or from the ``modules_to_save`` replacement of the *last* LoRA that has one (the
   expanded ``embed_tokens`` / ``lm_head``: its row count becomes the vocabulary);
2. add ``scaling * B @ A`` of every later LoRA, in the order given (Alpaca-Plus: LLaMA-Plus first);
3. add the patch tensor (Open-Chinese-LLaMA: ``patched = base + patch``);
4. apply the AWQ search results when given (:mod:`.awq`: the scales folded in, the clipping ranges applied);
5. check for NaN/Inf and values beyond the output type, and write it.

A base read while it downloads makes provisional tensors until its shards' checks pass (:mod:`.provisional`): the
pass ends only once every input read is verified, and a resume trusts only what was made from verified bytes. A
LoRA's saved tensor read while the LoRA downloads is written a part of its rows at a time as they arrive
(:func:`rows_from`), when nothing else adds to it and the sink takes rows.

Peak memory is about one tensor plus the LoRAs, whatever the depth of the model.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from ..checkpoint import Adapter, TensorSink, TensorSpec
from ..util import UserError, fault_point, progress
from .awq import AwqAdjustment
from .inputs import MergeInputs
from .preflight import MergeLayout
from .provisional import Provisional

if TYPE_CHECKING:
    import torch

INTERRUPT_ENV = "HELPERS_MERGE_INTERRUPT_AFTER"  # tests: simulate Ctrl-C after N tensors
ROWS_BYTES = 64 << 20  # a saved tensor written as its rows arrive: parts of about this many float32 bytes


def merged_tensor(name: str, inputs: MergeInputs) -> "torch.Tensor":
    """The merged float32 tensor ``name`` (a fresh tensor the caller owns)."""
    import torch

    ads = [a for _, a in inputs.adapters]
    start = max((i for i, a in enumerate(ads) if name in a.saved), default=-1)
    w = ads[start].get_saved(name) if start >= 0 else inputs.base.get(name, dtype=torch.float32)
    for ad in ads[max(start, 0):]:
        if name in ad.lora:
            ad.add_delta(w, name)
    if inputs.patch is not None and name in inputs.patch:
        w.add_(inputs.patch.get(name))
    return w


def check_values(name: str, w: "torch.Tensor", outtype: str) -> None:
    """Refuse NaN/Inf (a damaged input) and values float16 cannot hold when writing f16 or a quantized GGUF
    (quantized from the values an F16 GGUF would hold, as llama.cpp's quantizer does)."""
    if w.numel() == 0:
        return
    import torch

    lo, hi = (float(x) for x in torch.aminmax(w))
    if not (math.isfinite(hi) and math.isfinite(lo)):
        raise UserError(f"the merged {name} contains NaN or Inf: an input file is damaged; verify the downloads "
                        "(--sha256) and download the damaged files again")
    if outtype not in ("f32", "bf16") and max(abs(hi), abs(lo)) > 65504:
        what = "float16" if outtype == "f16" else f"float16, through which {outtype} is quantized"
        raise UserError(f"the merged {name} has values up to {max(abs(hi), abs(lo)):.4g}, beyond {what}; "
                        "use --outtype bf16 or f32")


def rows_from(name: str, inputs: MergeInputs, sink: TensorSink, awq: AwqAdjustment | None) -> Adapter | None:
    """The LoRA still downloading whose saved replacement of ``name`` is written a part of its rows at a time (as
    its bytes arrive), or None: the tensor is computed whole (another LoRA, the patch or AWQ changes it, or the
    sink takes whole tensors only)."""
    ads = [a for _, a in inputs.adapters]
    start = max((i for i, a in enumerate(ads) if name in a.saved), default=-1)
    if start < 0 or awq is not None or getattr(sink, "write_rows", None) is None:
        return None
    arriving = ads[start] in [d.adapter for d in inputs.downloads] and ads[start].reads_rows
    changed = any(name in a.lora for a in ads[start:]) or (inputs.patch is not None and name in inputs.patch)
    return ads[start] if arriving and not changed else None


def _write_rows(name: str, shape: tuple[int, ...], adapter: Adapter, sink: TensorSink, outtype: str) -> None:
    """Write ``adapter``'s saved ``name`` a part of its rows at a time (:data:`ROWS_BYTES`), each checked."""
    step = max(1, ROWS_BYTES // (4 * math.prod(shape[1:])))
    for first in range(0, shape[0], step):
        w = adapter.get_saved(name, rows=(first, min(shape[0], first + step)))
        check_values(name, w, outtype)
        sink.write_rows(name, first, w, last=first + step >= shape[0])  # type: ignore[attr-defined]


def reads_base(name: str, inputs: MergeInputs) -> bool:
    """True when :func:`merged_tensor` reads ``name`` from the base (no LoRA saves a replacement of it)."""
    return name in inputs.base and not any(name in a.saved for _, a in inputs.adapters)


def _start_downloads(layout: MergeLayout, inputs: MergeInputs, sink: TensorSink, bar) -> None:
    """A base that arrives while it is merged (:class:`~helpers.checkpoint.StreamedCheckpoint`): start downloading
    the shards of the tensors still to write that are read from it, and show its bytes beside the tensors."""
    prefetch, meter = getattr(inputs.base, "prefetch", None), getattr(inputs.base, "meter", None)
    if prefetch is None:
        return
    prefetch([tp.name for tp in layout.tensors if not sink.done(tp.name) and reads_base(tp.name, inputs)])
    if meter is not None:
        meter.listener = lambda: bar.set_postfix_str(meter.text())


def _write(tp: TensorSpec, inputs: MergeInputs, sink: TensorSink, outtype: str, awq: AwqAdjustment | None,
           provisional: Provisional, index: int) -> None:
    """Compute tensor ``tp`` whole (AWQ-adjusted, given ``awq``), check it and write it."""
    w = merged_tensor(tp.name, inputs)
    if awq is not None:
        w = awq.apply(tp.name, w)
    if tuple(w.shape) != tp.shape:
        raise RuntimeError(f"{tp.name}: computed {tuple(w.shape)}, planned {tp.shape}")
    check_values(tp.name, w, outtype)
    provisional.made(index)
    sink.write(tp.name, w)


def stream(layout: MergeLayout, inputs: MergeInputs, sink: TensorSink, *, outtype: str, show_progress: bool,
           awq: AwqAdjustment | None = None) -> tuple[int, int]:
    """Compute (and AWQ-adjust, given ``awq``) every tensor the sink does not already hold and write it; returns
    ``(written, resumed)``."""
    written = resumed = 0
    limit = int(os.environ.get(INTERRUPT_ENV, "0") or 0)
    provisional = Provisional(sink, inputs.arriving())
    provisional.resume()
    bar = progress(layout.tensors, total=len(layout.tensors), desc="merge", unit="tensor",
                   disable=not show_progress or None)
    _start_downloads(layout, inputs, sink, bar)
    for index, tp in enumerate(bar):
        if sink.done(tp.name):
            resumed += 1
            continue
        adapter = rows_from(tp.name, inputs, sink, awq)
        if adapter is not None:
            provisional.made(index)
            _write_rows(tp.name, tp.shape, adapter, sink, outtype)
        else:
            _write(tp, inputs, sink, outtype, awq, provisional, index)
        written += 1
        fault_point("merge.tensor")
        if limit and written >= limit:
            raise KeyboardInterrupt
    if written + resumed != len(layout.tensors):
        raise RuntimeError(f"only {written + resumed} of {len(layout.tensors)} tensors were written")
    provisional.settle()
    return written, resumed
