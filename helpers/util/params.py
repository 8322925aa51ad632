"""Settings declared once: a frozen dataclass field made with :func:`param` carries its default, its help and its
allowed values, and everything that shows the setting is generated from it: a notebook's form (the stages), and a
command's flags (:func:`add_arguments`, read back by :func:`from_arguments`).

Flags: ``--name`` (underscores become dashes) unless ``flag`` says otherwise; a ``False`` default is a switch, a
``True`` default a ``--no-...`` switch, a ``bool | None`` field a ``--name`` / ``--no-name`` pair (None: neither
given); ``parse`` turns the command line's text into the value (argparse's ``type``).
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping


@dataclass(frozen=True)
class Entry:
    """How one setting shows to the user.

    Attributes:
        help: one line for the user (a form's comment above the entry; a flag's help).
        choices: the allowed values (a form's dropdown); empty for a free entry.
        allow_input: a dropdown that also accepts other values (Colab's ``allow-input``).
        flag: the command-line flag, when not ``--<name>`` (or ``--no-<name>`` for a ``True`` default).
        parse: the command line's text -> the value (default: the text).
        metavar: the value's name in ``--help``.
    """

    help: str
    choices: tuple = ()
    allow_input: bool = False
    flag: str | None = None
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None


def param(default: Any, help: str, *, choices: Iterable = (), allow_input: bool = False, flag: str | None = None,
          parse: Callable[[str], Any] | None = None, metavar: str | None = None) -> Any:
    """A dataclass field that is a setting (see :class:`Entry`)."""
    return field(default=default, metadata={"form": Entry(help, tuple(choices), allow_input, flag, parse, metavar)})


def entries(cls: type) -> list[tuple[dataclasses.Field, Entry]]:
    """The :func:`param` fields of dataclass ``cls``, in order, with their entries."""
    return [(f, f.metadata["form"]) for f in dataclasses.fields(cls) if "form" in f.metadata]


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, only: Iterable[str] | None = None,
                  defaults: Mapping[str, Any] | None = None) -> None:
    """Add one flag per :func:`param` field of ``cls`` (``only`` these attributes; ``defaults`` overriding the
    dataclass's own, shown in the help)."""
    keep = set(only) if only is not None else None
    for f, entry in entries(cls):
        if keep is not None and f.name not in keep:
            continue
        default = (defaults or {}).get(f.name, f.default)
        name = f.name.replace("_", "-")
        if f.default is None and str(f.type).replace(" ", "").startswith("bool|"):
            pair = parser.add_mutually_exclusive_group()
            pair.add_argument(entry.flag or f"--{name}", dest=f.name, action="store_true", default=default,
                              help=entry.help)
            pair.add_argument(f"--no-{name}", dest=f.name, action="store_false", help=f"not --{name}")
        elif isinstance(default, bool):
            flag = entry.flag or (f"--no-{name}" if default else f"--{name}")
            parser.add_argument(flag, dest=f.name, action="store_false" if default else "store_true",
                                default=default, help=entry.help)
        else:
            shown = f" (default: {default})" if default not in (None, "") else ""
            parser.add_argument(entry.flag or f"--{name}", dest=f.name, default=default, type=entry.parse,
                                choices=entry.choices or None, metavar=entry.metavar, help=entry.help + shown)


def from_arguments(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """``cls`` from the flags :func:`add_arguments` added (those ``args`` has) and ``values``."""
    given = {f.name: getattr(args, f.name) for f, _ in entries(cls) if hasattr(args, f.name)}
    return cls(**(given | values))
