"""One typed stage per notebook step: the form (a frozen dataclass of the notebook's parameters), ``plan(runtime)``
(what the parameters need against this machine or free Colab's, the verdict, fixes phrased as the notebook's own
parameters) and ``run``, which executes exactly what the plan decided.

- :mod:`.form`: form fields (:func:`~.form.param`), built from a notebook's globals or ``--set`` overrides;
- :mod:`.base`: :class:`Stage` and :class:`Plan`; :mod:`.held`: models an earlier run of a notebook still holds;
- :mod:`.merge`, :mod:`.quantize`, :mod:`.chat`, :mod:`.finetune`, :mod:`.evaluate`: notebooks 01 to 05 (05's run:
  :mod:`.eval_session`; 03 and 05 share the ``QUANTIZATION`` choice of :mod:`.memory`);
- :func:`find_stage`: a notebook's stage by its name or number; :mod:`.command`: ``python -m helpers
  colab-check NOTEBOOK`` and ``python -m helpers run NOTEBOOK``.

In a notebook: the parameters cell fills the form, the check cell runs ``plan = MergeStage.from_form(globals())
.check()``, the run cell ``result = plan.run(globals())``; ``python -m helpers run`` then runs the later cells
(:meth:`~.base.Stage.headless`) and prints the result's ``summary()``.
"""
from __future__ import annotations

from ..util import UserError
from .base import Stage
from .chat import ChatStage
from .evaluate import EvalStage
from .finetune import FinetuneStage
from .merge import MergeStage
from .quantize import QuantizeStage

STAGES: dict[str, type[Stage]] = {s.NOTEBOOK: s for s in (MergeStage, QuantizeStage, ChatStage, FinetuneStage,
                                                         EvalStage)}


def find_stage(ref: str) -> type[Stage]:
    """The stage of the notebook ``ref`` names: its name, number, a word of it, or its ``.ipynb`` path.

    Raises:
        UserError: none or several match.
    """
    key = ref.rsplit("/", 1)[-1].removesuffix(".ipynb").lower()
    found = [s for name, s in STAGES.items() if name == key or name.startswith(key) or key in name.split("_")]
    if len(found) == 1:
        return found[0]
    names = ", ".join(STAGES)
    raise UserError(f"{ref!r} {'matches several notebooks' if found else 'is no notebook'}; the notebooks are: {names}")


__all__ = ["STAGES", "ChatStage", "EvalStage", "FinetuneStage", "MergeStage", "QuantizeStage"]
