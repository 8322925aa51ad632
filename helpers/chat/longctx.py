"""Long context: plan RoPE scaling (NTK-aware, position interpolation, YaRN) before the weights load.

The ``rope=`` option of :func:`helpers.chat.load_backend` (and ``python -m helpers chat --rope``):

- ``None`` / ``"config"``: what ``config.json`` or the GGUF says (the 16K models' linear/PI scaling and
  the 64K models' YaRN; transformers 5 reads them into ``config.rope_parameters``). A catalog model whose
  config lacks its scaling gets the catalog's.
- ``"ntk:<alpha>"``: static NTK-aware scaling, ``rope_theta' = rope_theta * alpha ** (d / (d - 2))`` with
  ``d`` the head dimension (the seeds' formula).
- ``"ntk"``: alpha from the context wanted (``n_ctx``, default twice the native context) with the seeds'
  adaptive formula ``alpha = max(n_ctx / (native_ctx / 2) - 1, 1)``. The seeds recomputed alpha on every
  forward pass from the current length; here it is computed once for ``n_ctx`` (static NTK).
- ``"auto"``: the config's scaling if it has one, else ``"ntk"`` when ``n_ctx`` exceeds the native context.
- ``"linear:<factor>"`` / ``"yarn:<factor>"``: position interpolation / YaRN by hand.

:func:`choose_rope` turns the option into a :class:`RopeScaling`; the back ends apply it
(:func:`apply_rope_to_config` for transformers configs, llama.cpp's own rope arguments for GGUFs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..util import UserError


def ntk_alpha(n_ctx: int, native_ctx: int, *, coeff: float = 1.0) -> float:
    """The seeds' adaptive NTK alpha: ``max((n_ctx / (native_ctx / 2) - 1) * coeff, 1)``."""
    if n_ctx <= 0 or native_ctx <= 0:
        raise UserError(f"context lengths must be positive (got n_ctx={n_ctx}, native={native_ctx})")
    return max((n_ctx / (native_ctx / 2) - 1) * coeff, 1.0)


def ntk_rope_base(base: float, alpha: float, head_dim: int) -> float:
    """NTK-aware RoPE base: ``base * alpha ** (head_dim / (head_dim - 2))``."""
    if head_dim <= 2:
        raise UserError(f"head dimension {head_dim} is too small for NTK scaling")
    return float(base) * float(alpha) ** (head_dim / (head_dim - 2))


@dataclass(frozen=True)
class RopeScaling:
    """What to do with RoPE: ``kind`` is ``config``, ``ntk``, ``linear`` or ``yarn``.

    ``factor`` is alpha for ``ntk`` and the scaling factor otherwise; ``base`` the new rope theta (ntk).
    """

    kind: str
    factor: float = 1.0
    base: float | None = None
    native_ctx: int = 0
    n_ctx: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("config", "ntk", "linear", "yarn"):
            raise ValueError(f"unknown rope kind {self.kind!r}")

    def describe(self) -> str:
        """One line for the user."""
        if self.kind == "config":
            return "RoPE as configured"
        if self.kind == "ntk":
            return f"NTK-aware RoPE: alpha {self.factor:.3g}, base {self.base:.6g} (context {self.n_ctx})"
        return f"{self.kind} RoPE scaling, factor {self.factor:g}"


def choose_rope(rope: str | None, *, n_ctx: int | None, native_ctx: int, base: float, head_dim: int,
              configured: str | None = None) -> RopeScaling:
    """Turn a ``rope=`` option into a :class:`RopeScaling` (see the module docstring for the options).

    Args:
        rope: the option.
        n_ctx: the context the user wants (None: not given).
        native_ctx: the context the model was trained for (including configured scaling).
        base: the model's rope theta.
        head_dim: the attention head dimension.
        configured: the scaling type already in the config (``linear``, ``yarn``...), if any.
    """
    text = (rope or "config").strip().lower()
    kind, _, arg = text.partition(":")
    if kind in ("config", "none", "default"):
        return RopeScaling("config", native_ctx=native_ctx, n_ctx=n_ctx)
    if kind == "auto":
        if configured or n_ctx is None or n_ctx <= native_ctx:
            return RopeScaling("config", native_ctx=native_ctx, n_ctx=n_ctx)
        kind, arg = "ntk", ""
    try:
        value = float(arg) if arg else None
    except ValueError:
        value = None
        arg = "bad"
    if kind == "ntk" and arg != "bad":
        target = n_ctx or 2 * native_ctx
        alpha = value if value is not None else ntk_alpha(target, native_ctx)
        if alpha < 1:
            raise UserError(f"NTK alpha must be >= 1, got {alpha:g}")
        return RopeScaling("ntk", alpha, ntk_rope_base(base, alpha, head_dim), native_ctx, target)
    if kind in ("linear", "yarn") and value is not None and value > 1:
        return RopeScaling(kind, value, None, native_ctx, n_ctx or int(native_ctx * value))
    raise UserError(f"unknown rope option {rope!r}; use config, auto, ntk, ntk:<alpha>, linear:<factor> or yarn:<factor>")


def apply_rope_to_config(config: Any, plan: RopeScaling, catalog_rope: dict | None) -> None:
    """Write ``plan`` (or the catalog's scaling missing from the config) into a transformers config."""
    params = getattr(config, "rope_parameters", None)
    legacy = not isinstance(params, dict)  # transformers 4: rope_theta / rope_scaling attributes
    if legacy:
        params = dict(getattr(config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    scaled = params.get("rope_type", params.get("type", "default")) not in ("default", None)
    if plan.kind == "config" and catalog_rope and not scaled:
        params.update({k: v for k, v in catalog_rope.items() if k != "type"}, rope_type=catalog_rope["type"])
        if catalog_rope["type"] == "yarn":
            params.setdefault("original_max_position_embeddings", config.max_position_embeddings)
        config.max_position_embeddings = int(config.max_position_embeddings * catalog_rope["factor"])
    elif plan.kind == "ntk":
        params["rope_theta"] = plan.base
    elif plan.kind in ("linear", "yarn"):
        params.update(rope_type=plan.kind, factor=plan.factor)
        if plan.kind == "yarn":
            params["original_max_position_embeddings"] = config.max_position_embeddings
    if plan.n_ctx and plan.kind != "config":
        config.max_position_embeddings = max(int(config.max_position_embeddings), int(plan.n_ctx))
    if legacy:
        config.rope_theta = params.pop("rope_theta")
        config.rope_scaling = params if params.get("rope_type", params.get("type", "default")) != "default" else None
    else:
        params.setdefault("rope_type", "default")
        config.rope_parameters = params

