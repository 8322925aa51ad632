"""One typed stage per notebook step: the form (a frozen dataclass of the notebook's parameters), ``plan(runtime)``
(what the parameters need against this machine or free Colab's, the verdict, fixes phrased as the notebook's own
parameters) and ``run``, which executes exactly what the plan decided.

- :mod:`.form`: form fields (:func:`~.form.param`), built from a notebook's globals or ``--set`` overrides;
- :mod:`.base`: :class:`Stage` and :class:`Plan`; :mod:`.held`: models an earlier run of a notebook still holds;
- :mod:`.merge`, :mod:`.quantize`, :mod:`.chat`, :mod:`.finetune`, :mod:`.evaluate`: notebooks 01 to 05 (05's run:
  :mod:`.eval_session`; 03 and 05 share the ``QUANTIZATION`` choice of :mod:`.memory`);
- :mod:`.cli`: ``python -m helpers colab-check NOTEBOOK`` and ``python -m helpers run NOTEBOOK``.

In a notebook: the parameters cell fills the form, the check cell runs ``plan = MergeStage.from_form(globals())
.check()``, the run cell ``result = plan.run(globals())``; ``python -m helpers run`` then runs the later cells
(:meth:`~.base.Stage.headless`) and prints the result's ``summary()``.
"""
from __future__ import annotations

from .base import Plan, Stage
from .chat import ChatSession, ChatStage
from .evaluate import EvalSession, EvalStage
from .finetune import FinetuneStage
from .form import FormField, param
from .merge import MergeStage
from .names import parse_release_file, release_file_name, release_target
from .quantize import QuantizeResult, QuantizeStage, quant_target

STAGES: dict[str, type[Stage]] = {s.NOTEBOOK: s for s in (MergeStage, QuantizeStage, ChatStage, FinetuneStage,
                                                         EvalStage)}

__all__ = ["STAGES", "ChatSession", "ChatStage", "EvalSession", "EvalStage", "FinetuneStage", "FormField",
           "MergeStage", "Plan", "QuantizeResult", "QuantizeStage", "Stage", "param", "parse_release_file",
           "quant_target", "release_file_name", "release_target"]
