"""Settings declared once: a frozen dataclass field made with :func:`param` carries its default, its help and its
allowed values, and everything that shows the setting is generated from it: a notebook's form (the stages), and a
command's flags (:func:`add_arguments`, read back by :func:`from_arguments`).

Flags: ``--name`` (underscores become dashes) unless ``flag`` says otherwise; a ``False`` default is a switch, a
``True`` default a ``--no-...`` switch, a ``bool | None`` field a ``--name`` / ``--no-name`` pair (None: neither
given); ``parse`` turns the command line's text into the value (argparse's ``type``). A ``flag`` without dashes
is a positional argument (``nargs="?"`` when it has a default, ``+`` / ``*`` for ``many``). A command takes the flags
of whole classes, or of some fields with other defaults (:class:`Flags`).
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
        flag: the command-line flag, when not ``--<name>`` (or ``--no-<name>`` for a ``True`` default); without
            dashes, a positional argument shown as ``flag``.
        parse: the command line's text -> the value (default: the text).
        metavar: the value's name in ``--help``.
        many: the flag may be repeated; the value is the list of what was given, in order.
        nargs: the flag takes this many values (argparse's ``nargs``).
        const: the value of the bare flag, when ``nargs`` is ``"?"``.
        text: the value -> the command line's text (the inverse of ``parse``; default ``str``).
        cli: False for a setting that has no flag (set by code, not by a user's command line).
    """

    help: str
    choices: tuple = ()
    allow_input: bool = False
    flag: str | None = None
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    many: bool = False
    nargs: int | str | None = None
    const: Any = None
    text: Callable[[Any], str] | None = None
    cli: bool = True


def param(default: Any, help: str, *, choices: Iterable = (), allow_input: bool = False, flag: str | None = None,
          parse: Callable[[str], Any] | None = None, metavar: str | None = None, many: bool = False,
          nargs: int | str | None = None, const: Any = None, text: Callable[[Any], str] | None = None,
          cli: bool = True, compare: bool = True) -> Any:
    """A dataclass field that is a setting (see :class:`Entry`); ``default`` may be ``dataclasses.MISSING`` for a
    required one (a required flag), or a ``list`` / ``dict`` (each instance gets its own copy)."""
    entry = Entry(help, tuple(choices), allow_input, flag, parse, metavar, many, nargs, const, text, cli)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"form": entry}, compare=compare)
    return field(default=default, metadata={"form": entry}, compare=compare)


def param_like(cls: type, name: str, default: Any) -> Any:
    """The setting ``name`` of dataclass ``cls`` (its help, flag, choices...) with another default, for another
    dataclass."""
    return field(default=default, metadata={"form": next(e for f, e in entries(cls) if f.name == name)})


def entries(cls: type) -> list[tuple[dataclasses.Field, Entry]]:
    """The :func:`param` fields of dataclass ``cls``, in order, with their entries."""
    return [(f, f.metadata["form"]) for f in dataclasses.fields(cls) if "form" in f.metadata]


def default_of(f: dataclasses.Field) -> Any:
    """A field's default (``dataclasses.MISSING`` for a required one)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _is_optional_bool(f: dataclasses.Field) -> bool:
    return f.default is None and str(f.type).replace(" ", "").startswith("bool|")


@dataclass(frozen=True)
class Flags:
    """The flags a command takes from ``cls``: ``only`` these fields (all by default), ``defaults`` overriding the
    dataclass's own (an entry of a command's ``OPTIONS`` where the whole class with its defaults is not meant)."""

    cls: type
    only: tuple[str, ...] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, only: Iterable[str] | None = None,
                  defaults: Mapping[str, Any] | None = None) -> None:
    """Add one flag per :func:`param` field of ``cls`` (``only`` these attributes; ``defaults`` overriding the
    dataclass's own, shown in the help)."""
    keep = set(only) if only is not None else None
    for f, entry in entries(cls):
        if not entry.cli or (keep is not None and f.name not in keep):
            continue
        default = (defaults or {}).get(f.name, default_of(f))
        name = f.name.replace("_", "-")
        if entry.flag and not entry.flag.startswith("-"):
            _add_positional(parser, f, entry, default)
        elif _is_optional_bool(f):
            pair = parser.add_mutually_exclusive_group()
            pair.add_argument(entry.flag or f"--{name}", dest=f.name, action="store_true", default=default,
                              help=entry.help)
            pair.add_argument(f"--no-{name}", dest=f.name, action="store_false", help=f"not --{name}")
        elif isinstance(default, bool):
            flag = entry.flag or (f"--no-{name}" if default else f"--{name}")
            parser.add_argument(flag, dest=f.name, action="store_false" if default else "store_true",
                                default=default, help=entry.help)
        else:
            _add_valued(parser, f, entry, default, entry.flag or f"--{name}")


def _add_valued(parser: argparse.ArgumentParser, f: dataclasses.Field, entry: Entry, default: Any, flag: str) -> None:
    required = default is dataclasses.MISSING
    shown = "" if required or default in (None, "", [], ()) else f" (default: {_text(entry, default)})"
    extra: dict[str, Any] = {"action": "append", "default": []} if entry.many else {"default": None if required
                                                                                      else default}
    if entry.nargs == "?":
        extra["const"] = entry.const
    parser.add_argument(flag, dest=f.name, type=entry.parse, required=required, nargs=entry.nargs,
                        choices=entry.choices or None, metavar=entry.metavar, help=entry.help + shown, **extra)


def _add_positional(parser: argparse.ArgumentParser, f: dataclasses.Field, entry: Entry, default: Any) -> None:
    required = default is dataclasses.MISSING
    nargs = ("+" if required else "*") if entry.many else entry.nargs or (None if required else "?")
    parser.add_argument(f.name, type=entry.parse, nargs=nargs, choices=entry.choices or None,
                        metavar=entry.metavar or (entry.flag if entry.flag != f.name else None), help=entry.help,
                        **({} if required else {"default": default}))


def _text(entry: Entry, value: Any) -> str:
    return entry.text(value) if entry.text else str(value)


def from_arguments(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """``cls`` from the flags :func:`add_arguments` added (those ``args`` has) and ``values``."""
    given = {f.name: getattr(args, f.name) for f, _ in entries(cls) if hasattr(args, f.name)}
    return cls(**(given | values))


def to_arguments(options: Any) -> list[str]:
    """The flags that give ``options`` back through :func:`add_arguments` / :func:`from_arguments` (settings at
    their defaults left out)."""
    out: list[str] = []
    for f, entry in entries(type(options)):
        value, default = getattr(options, f.name), default_of(f)
        if not entry.cli or value == default:
            continue
        name = f.name.replace("_", "-")
        if entry.flag and not entry.flag.startswith("-"):
            out += [_text(entry, item) for item in value] if entry.many or entry.nargs else [_text(entry, value)]
        elif _is_optional_bool(f):
            out.append((entry.flag or f"--{name}") if value else f"--no-{name}")
        elif isinstance(default, bool):
            out.append(entry.flag or (f"--no-{name}" if default else f"--{name}"))
        elif entry.many:
            for item in value:
                out += [entry.flag or f"--{name}", _text(entry, item)]
        elif entry.nargs not in (None, "?"):
            out += [entry.flag or f"--{name}", *(_text(entry, item) for item in value)]
        else:
            out += [entry.flag or f"--{name}", _text(entry, value)]
    return out
