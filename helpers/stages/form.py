"""A notebook's parameters form, as a frozen dataclass: one field per form entry, with its default, its allowed values
and its help.

A stage's dataclass *is* the form: the notebook builder renders the parameters cell from it (``NAME = default  #
@param ...``), :meth:`Stage.from_form` fills it back from a running notebook's globals, and ``--set NAME=VALUE``
overrides fill it from a terminal. A form name is its field's name in upper case; no other code spells it.
Fields are declared with :func:`helpers.util.params.param`, the mechanism the operations' options use too.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..util import UserError
from ..util.params import Entry, param


@dataclass(frozen=True)
class FormField:
    """A form entry as the notebook shows it: ``name`` (upper case), the dataclass ``attr``, default and entry."""

    name: str
    attr: str
    default: Any
    entry: Entry

    @property
    def kind(self) -> str:
        """Colab's form type of a free entry: ``boolean``, ``integer``, ``number`` or ``string``."""
        return {bool: "boolean", int: "integer", float: "number"}.get(type(self.default), "string")

    def annotation(self) -> str:
        """The ``# @param`` comment Colab reads."""
        if self.entry.choices:
            text = f"# @param {json.dumps(list(self.entry.choices), ensure_ascii=False)}"
            return text + (" {allow-input: true}" if self.entry.allow_input else "")
        return f'# @param {{type:"{self.kind}"}}'

    def coerce(self, text: str) -> Any:
        """``text`` (from ``--set NAME=VALUE``) as a value of the default's type."""
        if isinstance(self.default, bool):
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise UserError(f"{self.name} is a yes/no parameter: give {self.name}=true or {self.name}=false, "
                            f"not {text!r}")
        if isinstance(self.default, (int, float)):
            try:
                return type(self.default)(text)
            except ValueError:
                kind = "a whole number" if isinstance(self.default, int) else "a number"
                raise UserError(f"{self.name} is {kind}: {text!r} is not one") from None
        return text


class Form:
    """What every stage inherits: its form fields, building it from a form or overrides, and checking values."""

    @classmethod
    def form_fields(cls) -> list[FormField]:
        """The form's entries, in order."""
        return [FormField(f.name.upper(), f.name, f.default, f.metadata["form"])
                for f in dataclasses.fields(cls) if "form" in f.metadata]

    @classmethod
    def from_form(cls, namespace: Mapping[str, Any]):
        """The stage a notebook's parameters describe (its ``globals()``); entries it lacks keep their defaults."""
        return cls(**{f.attr: namespace[f.name] for f in cls.form_fields() if f.name in namespace})

    @classmethod
    def from_sets(cls, sets: Iterable[str], base: Any = None):
        """The stage with ``NAME=VALUE`` overrides of its defaults (or of ``base``'s values).

        Raises:
            UserError: a malformed override, or a name the form does not have (the message lists its names).
        """
        fields = {f.name: f for f in cls.form_fields()}
        values = {f.attr: getattr(base, f.attr) if base is not None else f.default for f in fields.values()}
        for item in sets:
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or not name:
                raise UserError(f"--set takes NAME=VALUE, not {item!r}")
            if name not in fields:
                raise UserError(f"the notebook has no parameter {name}; its parameters are: {', '.join(fields)}")
            values[fields[name].attr] = fields[name].coerce(value)
        return cls(**values)

    def check_form(self) -> None:
        """Refuse a value outside its dropdown (when the dropdown takes no other input) or of the wrong type."""
        for f in self.form_fields():
            value = getattr(self, f.attr)
            if f.entry.choices and not f.entry.allow_input and value not in f.entry.choices:
                raise UserError(f"{f.name} = {value!r} is not one of {', '.join(map(repr, f.entry.choices))}")
            expected = type(f.default)
            ok = isinstance(value, expected) or (expected is float and isinstance(value, int)
                                                 and not isinstance(value, bool))
            if not ok:
                raise UserError(f"{f.name} = {value!r} should be {FormField.kind.fget(f)} like {f.default!r}")

    def changes(self, other: Any) -> dict[str, tuple[Any, Any]]:
        """``{NAME: (this value, other's)}`` of the entries where ``other`` differs."""
        return {f.name: (getattr(self, f.attr), getattr(other, f.attr)) for f in self.form_fields()
                if getattr(self, f.attr) != getattr(other, f.attr)}

    def assignment(self, attr: str, value: Any) -> str:
        """How a user writes ``attr = value`` in this form: ``NAME='value'``."""
        return assignment(attr, value)


def assignment(attr: str, value: Any) -> str:
    """How a user writes the form field ``attr`` set to ``value``: ``NAME='value'``."""
    return f"{attr.upper()}={value!r}"
