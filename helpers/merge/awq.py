"""AWQ search results (activation-aware scales and clipping ranges) applied to the merged weights, a tensor at a time.

The results are llm-awq's dump (``torch.save`` of ``run_awq``'s return value; the Chinese-LLaMA-Alpaca-2 authors
publish theirs in ``hfl/chinese-llama-alpaca-2-awq``, e.g. ``chinese-alpaca-2-7b-w4-g128.pt``)::

    {"scale": [(prev_op_name, (layer_name, ...), scales), ...], "clip": [(layer_name, max_val), ...]}

with full module names (``model.layers.0.input_layernorm``). llm-awq's ``apply_awq`` (and llama.cpp's former
``awq-py``, which applied them before conversion) does, in order:

1. every ``scale`` entry (``apply_scale``): the previous op divided by ``scales`` (an RMSNorm's weight, or a
   linear's *last* ``len(scales)`` output rows and its bias) and each following linear's input columns multiplied
   by them (``scale_ln_fcs``, ``scale_fc_fc``); for Llama: ``input_layernorm -> q/k/v``, ``v_proj -> o_proj``
   (only without grouped-query attention), ``post_attention_layernorm -> gate/up``, ``up_proj -> down_proj``;
2. every ``clip`` entry (``apply_clip``): the weight viewed as ``max_val``'s ``[rows, groups, ...]`` and clamped to
   ``±max_val``.

Before quantization the scaling is an identity of the model's function (``x/s`` then ``W·diag(s)``); it moves
quantization error away from the input channels with large activations. Each tensor's adjustment depends only on
its own name, so the merge applies it as it streams, after the LoRAs and before any layout change or quantization.

The file is a pickle: it is read only with ``torch.load(weights_only=True)`` (plain tensors and containers; a
pickle that holds code is refused), and checked against the model's tensors before anything slow starts.
"""
from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..util import UserError

if TYPE_CHECKING:
    import torch

AWQ_REPO = "hfl/chinese-llama-alpaca-2-awq"  # the authors' published search results (one .pt per model)
# the models with a file <name>-w4-g128.pt there (W4, group 128), from the repo's listing (main, 6 commits)
AWQ_PUBLISHED = frozenset({
    "chinese-llama-2-1.3b", "chinese-llama-2-7b", "chinese-llama-2-13b", "chinese-llama-2-7b-16k",
    "chinese-llama-2-13b-16k", "chinese-alpaca-2-1.3b", "chinese-alpaca-2-7b", "chinese-alpaca-2-13b",
    "chinese-alpaca-2-7b-16k", "chinese-alpaca-2-13b-16k", "chinese-alpaca-2-1.3b-rlhf", "chinese-alpaca-2-7b-rlhf",
})


def published_awq(model: str) -> str | None:
    """The authors' AWQ results for the merged model ``model`` (e.g. ``chinese-alpaca-2-7b``) as a hub file
    reference, or None when they published none for it."""
    return f"{AWQ_REPO}/{model}-w4-g128.pt" if model in AWQ_PUBLISHED else None


@dataclass(frozen=True)
class AwqStep:
    """One change to one tensor.

    Attributes:
        kind: ``divide`` (a vector: ``w /= s``), ``divide_rows`` (``w[-len(s):] /= s`` per row), ``scale_columns``
            (``w *= s`` per input column) or ``clip`` (``w`` clamped to ``±max_val`` per row and group).
        values: the scales or ``max_val`` (float32).
        entry: where it comes from, for messages (``scale 3``, ``clip 7``).
    """

    kind: str
    values: "torch.Tensor"
    entry: str


@dataclass(frozen=True)
class AwqAdjustment:
    """The checked results as per-tensor steps, in llm-awq's order (every scale, then every clip).

    Attributes:
        steps: tensor name (``...weight`` / ``...bias``) -> its steps in order.
        source: the results file, named in messages.
    """

    steps: Mapping[str, tuple[AwqStep, ...]] = field(default_factory=dict)
    source: str = ""

    def apply(self, name: str, w: "torch.Tensor") -> "torch.Tensor":
        """Adjust the float32 tensor ``name`` in place (unchanged when no entry names it); returns it (a contiguous
        copy first when it must be viewed in groups and is not contiguous)."""
        steps = self.steps.get(name, ())
        if steps and not w.is_contiguous():
            w = w.contiguous()
        for step in steps:
            apply_step(step, w)
        return w

    def summary(self) -> str:
        """One line: how many tensors are scaled and clipped."""
        kinds = [{s.kind for s in steps} for steps in self.steps.values()]
        scaled = sum(1 for k in kinds if k - {"clip"})
        clipped = sum(1 for k in kinds if "clip" in k)
        return f"AWQ results {self.source}: {scaled} tensors scaled, {clipped} clipped"


def apply_step(step: AwqStep, w: "torch.Tensor") -> None:
    """One step on ``w`` in place, with llm-awq's operations."""
    import torch

    s = step.values
    if step.kind == "divide":
        w.div_(s)
    elif step.kind == "divide_rows":
        w[-s.numel():].div_(s.view(-1, 1))
    elif step.kind == "scale_columns":
        w.mul_(s.view(1, -1))
    elif step.kind == "clip":
        w.view(*s.shape[:2], -1).clamp_(-s, s)
    else:
        raise ValueError(f"unknown AWQ step {step.kind!r}")


def load_awq_results(path: str | Path) -> dict:
    """Read an llm-awq results file with ``torch.load(weights_only=True)`` onto the CPU.

    Raises:
        UserError: missing, not a torch file, or a pickle that holds more than tensors and containers (it is not
            loaded: untrusted code is never run).
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"AWQ results {path} not found; give llm-awq's .pt file or a hub file "
                        f"({AWQ_REPO}/<model>-w4-g128.pt)")
    try:
        with warnings.catch_warnings():  # torch's note on a plain pickle's protocol: refused below anyway
            warnings.simplefilter("ignore", UserWarning)
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"AWQ results {path} hold more than tensors and lists ({first[:160]}); they were not loaded "
                        "(a pickle can run code): use llm-awq's own dump of the search results") from None
    except Exception as exc:  # noqa: BLE001 - whatever else a file that is not a torch file makes torch raise
        raise UserError(f"AWQ results {path} are not a torch file ({type(exc).__name__}: "
                        f"{str(exc).strip()[:160]}); download them again") from None
    if not isinstance(data, dict) or not {"scale", "clip"} <= set(data):
        got = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise UserError(f"AWQ results {path} are not llm-awq's format (a dict with 'scale' and 'clip'; got {got})")
    return data


def _tensor(value: Any, what: str, *, dims: tuple[int, ...]) -> "torch.Tensor":
    """``value`` as a finite float32 tensor of one of ``dims`` dimensions, else a refusal naming ``what``."""
    import torch

    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() not in dims:
        kind = f"a {value.dim()}-D {value.dtype} tensor" if isinstance(value, torch.Tensor) else type(value).__name__
        raise UserError(f"{what} should be a {' or '.join(f'{d}-D' for d in dims)} float tensor, not {kind}")
    v = value.detach().to(torch.float32).contiguous()
    if not bool(torch.isfinite(v).all()):
        raise UserError(f"{what} holds NaN or Inf")
    return v


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value \
            or not all(isinstance(n, str) for n in value):
        raise UserError(f"{what} should list the names of the layers it scales")
    return tuple(value)


def _entry(value: Any, size: int, what: str) -> Sequence:
    if not isinstance(value, (tuple, list)) or len(value) != size:
        raise UserError(f"{what} should be a tuple of {size}, not {type(value).__name__}"
                        + (f" of {len(value)}" if isinstance(value, (tuple, list)) else ""))
    return value


def awq_adjustment(data: Mapping, shapes: Mapping[str, tuple[int, ...]], *, source: str = "") -> AwqAdjustment:
    """Check llm-awq ``data`` against the model's tensors and turn it into per-tensor steps.

    Args:
        data: the loaded results (:func:`load_awq_results`).
        shapes: every tensor of the merged model, name -> shape (HF naming, ``...weight``).
        source: the file, for messages.

    Raises:
        UserError: one line naming the first entry that does not fit this model (a module it lacks, a size that
            differs, a scale that is not positive, a clip that is not a whole number of groups).
    """
    steps: dict[str, list[AwqStep]] = {}
    where = f"AWQ results {source}: " if source else "AWQ results: "
    for i, raw in enumerate(_list(data, "scale", where), 1):
        for name, step in _scale_steps(i, raw, shapes, where):
            steps.setdefault(name, []).append(step)
    for i, raw in enumerate(_list(data, "clip", where), 1):
        name, step = _clip_step(i, raw, shapes, where)
        steps.setdefault(name, []).append(step)
    return AwqAdjustment({k: tuple(v) for k, v in steps.items()}, source)


def _weight(shapes: Mapping, module: str, what: str, *, dims: tuple[int, ...] = (1, 2)) -> tuple[int, ...]:
    """The shape of ``module``'s weight, refused when the model lacks it or it is not ``dims``-D."""
    name = f"{module}.weight"
    shape = shapes.get(name)
    if shape is None:
        raise UserError(f"{what}: this model has no {name}; the results belong to another model, use the file made "
                        "for this one")
    if len(shape) not in dims:
        raise UserError(f"{what} names {module}, whose weight is {list(shape)}, not a "
                        f"{' or '.join(f'{d}-D' for d in dims)} layer that AWQ can scale")
    return tuple(shape)


def _scale_steps(i: int, raw: Any, shapes: Mapping, where: str) -> list[tuple[str, AwqStep]]:
    """The steps of scale entry ``i`` (``scale_ln_fcs`` after a norm, ``scale_fc_fc`` after a linear)."""
    what = f"{where}scale entry {i}"
    prev, layers, scales = _entry(raw, 3, what)
    if not isinstance(prev, str):
        raise UserError(f"{what} should start with the previous op's name")
    label = f"scale entry {i} ({prev})"
    what = f"{where}{label}"
    layers = _names(layers, what)
    s = _tensor(scales, f"{what}'s scales", dims=(1,))
    if not bool((s > 0).all()):
        raise UserError(f"{what}'s scales are not all positive; the file is damaged")
    n = s.numel()
    prev_shape = _weight(shapes, prev, what)
    if len(prev_shape) == 1:  # a norm
        if prev_shape[0] != n:
            raise UserError(f"{what} has {n} scales but {prev}.weight has {prev_shape[0]}: the results belong to "
                            "another model size")
        out = [(f"{prev}.weight", AwqStep("divide", s, label))]
    else:  # a linear: its last n output rows
        if len(layers) != 1 or prev_shape[0] < n:
            raise UserError(f"{what} scales a linear layer's {n} outputs into {len(layers)} layers, but "
                            f"{prev}.weight has {prev_shape[0]} rows; a linear scales into one layer of as many inputs")
        out = [(f"{prev}.weight", AwqStep("divide_rows", s, label))]
    if f"{prev}.bias" in shapes:
        if tuple(shapes[f"{prev}.bias"]) != (n,):
            raise UserError(f"{what} has {n} scales but {prev}.bias is {list(shapes[prev + '.bias'])}")
        out.append((f"{prev}.bias", AwqStep("divide", s, label)))
    for layer in layers:
        shape = _weight(shapes, layer, what, dims=(2,))
        if shape[1] != n:
            raise UserError(f"{what} has {n} scales but {layer} takes {shape[1]} inputs: the results belong to "
                            "another model size")
        out.append((f"{layer}.weight", AwqStep("scale_columns", s, label)))
    return out


def _clip_step(i: int, raw: Any, shapes: Mapping, where: str) -> tuple[str, AwqStep]:
    """The step of clip entry ``i`` (``apply_clip``: ``max_val`` is ``[rows, groups, 1]``)."""
    what = f"{where}clip entry {i}"
    layer, max_val = _entry(raw, 2, what)
    if not isinstance(layer, str):
        raise UserError(f"{what} should start with the layer's name")
    label = f"clip entry {i} ({layer})"
    what = f"{where}{label}"
    m = _tensor(max_val, f"{what}'s max_val", dims=(3,))
    rows, cols = _weight(shapes, layer, what, dims=(2,))
    groups = m.shape[1]
    if m.shape[0] != rows or groups == 0 or cols % groups or m.shape[2] != 1:
        raise UserError(f"{what}'s max_val is {list(m.shape)}, which does not divide {layer}.weight [{rows}, {cols}] "
                        "into [rows, groups, 1]: the results belong to another model size")
    if bool((m < 0).any()):
        raise UserError(f"{what}'s max_val has negative values; the file is damaged")
    return f"{layer}.weight", AwqStep("clip", m, label)


def _list(data: Mapping, key: str, where: str) -> Sequence:
    value = data.get(key)
    if not isinstance(value, (list, tuple)):
        raise UserError(f"{where}'{key}' should be a list of entries, not {type(value).__name__}")
    return value


def is_hub_file(ref: str | Path) -> bool:
    """True for a hub file reference ``owner/repo/path/to/file`` that is not a file on this machine."""
    text = str(ref)
    parts = text.split("/")
    return (len(parts) >= 3 and all(parts) and not text.startswith((".", "/", "~"))
            and not Path(text).expanduser().exists())


def awq_file(ref: str | Path) -> Path:
    """The results file on this machine: ``ref`` itself, or the hub file it names, downloaded into the hub cache and
    checked against the hub's digest.

    Raises:
        UserError: not found, or the download failed (one line).
    """
    if is_hub_file(ref):
        from ..hub import fetch_file

        owner, repo, name = str(ref).split("/", 2)
        return fetch_file(f"{owner}/{repo}", name, what="AWQ results")
    return Path(ref).expanduser()


def prepare_awq(ref: str | Path, shapes: Mapping[str, tuple[int, ...]]) -> AwqAdjustment:
    """Fetch (when on the hub), read and check the AWQ results ``ref`` against the model's tensor ``shapes``.

    Raises:
        UserError: one line naming what is wrong (see :func:`load_awq_results`, :func:`awq_adjustment`).
    """
    return awq_adjustment(load_awq_results(awq_file(ref)), shapes, source=str(ref))
