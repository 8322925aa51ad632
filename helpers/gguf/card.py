"""What a GGUF says about its model beyond the tensors: name, chat template, long-context RoPE scaling.

:func:`describe_model` looks these up once (explicit choices, the catalog, the tokenizer files) and hands a
:class:`ModelCard` to the writer, which then looks nothing up itself.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import ModelEntry, find
from ..tokens import get_template, template_for_model


@dataclass(frozen=True)
class ModelCard:
    """The model facts a GGUF carries besides its weights and hyper-parameters.

    Attributes:
        name: ``general.name`` (None: the writer uses the output file's stem).
        template: template id for ``tokenizer.chat_template`` (None: no chat template).
        template_explicit: the caller chose the template (then even ``raw`` is embedded).
        rope_scaling: the catalog's RoPE scaling of a long-context release whose config lacks one.
        context_length: the catalog's context length, written for RoPE-scaled models.
        extra_metadata: more string keys for the header (the merge's job record, ``helpers.merge.job``).
    """

    name: str | None = None
    template: str | None = None
    template_explicit: bool = False
    rope_scaling: dict | None = None
    context_length: int | None = None
    extra_metadata: dict[str, str] = field(default_factory=dict)


def catalog_entry(*names: str | None) -> ModelEntry | None:
    """The catalog entry of the first of ``names`` the catalog knows (None: none)."""
    for n in names:
        if n:
            entry = find(n)
            if entry is not None:
                return entry
    return None


def resolve_template(template: str | None, entry: ModelEntry | None, tokenizer_dir: Path) -> str | None:
    """The template id to embed: explicit, else the catalog's, else what the tokenizer files say (None: unknown)."""
    if template is not None:
        return get_template(template).name
    if entry is not None and entry.template:
        return entry.template
    if tokenizer_dir.is_dir():
        with contextlib.redirect_stderr(io.StringIO()):  # its "could not tell" warning is ours to give
            found = template_for_model(str(tokenizer_dir))
        return None if found == "raw" else found
    return None


def describe_model(config: dict, tokenizer_dir: str | Path, *, name: str | None = None,
                   template: str | None = None) -> ModelCard:
    """The :class:`ModelCard` of a model: ``name`` (else the config's ``_name_or_path``), its catalog entry
    (looked up by ``name``, the tokenizer folder's name and ``_name_or_path``) and its template."""
    tokenizer_dir = Path(tokenizer_dir)
    source = str(config.get("_name_or_path") or "")
    entry = catalog_entry(name, tokenizer_dir.name, source)
    return ModelCard(
        name=name or source.rstrip("/").split("/")[-1] or None,
        template=resolve_template(template, entry, tokenizer_dir),
        template_explicit=template is not None,
        rope_scaling=dict(entry.rope_scaling) if entry is not None and entry.rope_scaling else None,
        context_length=entry.context_length if entry is not None else None,
    )
