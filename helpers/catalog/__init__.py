"""The released Chinese LLaMA/Alpaca models: hub ids, bases, vocabularies, templates, contexts.

Notebooks use :func:`names` for dropdowns, :func:`get` to resolve what the user typed, and
:func:`release_recipe` to know which base and which adapters to apply, in which order (Alpaca-Plus/Pro need
the LLaMA-Plus LoRA first); :func:`check_family` refuses a LoRA from another generation than the base.

- :mod:`.entry`: :class:`ModelEntry` and the allowed kinds, generations, families, templates;
- :mod:`.releases`: the data, :data:`CATALOG`;
- :mod:`.lookup`: :func:`find`, :func:`get`, :func:`names`, :func:`release_recipe`;
- :mod:`.family`: :func:`family_of_config`, :func:`family_of_lora`, :func:`check_family`;
- :mod:`.shapes`: the architectures of the released sizes (:func:`config_of`);
- :mod:`.command`: ``python -m helpers catalog``.
"""
from __future__ import annotations

from .entry import ModelEntry
from .family import check_family, family_of_config, family_of_lora
from .lookup import find, get, release_recipe, names
from .shapes import config_of

__all__ = ["ModelEntry", "check_family", "config_of", "family_of_config", "family_of_lora", "find", "get",
           "release_recipe", "names"]
