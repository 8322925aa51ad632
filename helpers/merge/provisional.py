"""What a merge made from input bytes not verified yet, and what a resume may trust of it.

A hub merge reads a base shard while it downloads (:class:`~helpers.checkpoint.StreamedCheckpoint`); the shard's
digest is checked when its download ends. The tensors made from it meanwhile are provisional: the output is moved to
its final name only after every input file read is verified (a failed check deletes the partial output), and a run
killed before that must not resume from them. :class:`Provisional` keeps a record in the output's partial folder,
``.provisional.json``, of how many tensors (in layout order) came from verified inputs only; it is written before
the first provisional tensor reaches the sink and removed once every input read so far is verified, and a resume
counts no more tensors as written than it says (:meth:`~helpers.checkpoint.TensorSink.resume_until`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from ..checkpoint import TensorSink
from ..util import remove, write_json

PROVISIONAL = ".provisional.json"


class ArrivingInput(Protocol):
    """An input read while it downloads (:class:`~helpers.checkpoint.StreamedCheckpoint`,
    :class:`~helpers.checkpoint.streamed.AdapterDownload`)."""

    def unverified(self) -> list[str]:
        """Its files read before their checks passed."""

    def settle(self) -> None:
        """Wait for its checks; a failed one raises."""


class Provisional:
    """The provisional tensors of one merge (see the module's docstring).

    Args:
        sink: the opened sink (its :attr:`~helpers.checkpoint.TensorSink.partial` folder holds the record).
        arriving: the inputs read while they download (none: nothing is ever provisional).
    """

    def __init__(self, sink: TensorSink, arriving: list[ArrivingInput]) -> None:
        self.sink, self.path, self._arriving = sink, Path(sink.partial) / PROVISIONAL, arriving
        self._made: list[tuple[int, frozenset[str]]] = []  # (tensor index, inputs unverified when it was made)
        self._trusted: int | None = None  # what the record on disk says (None: no record)

    def resume(self) -> None:
        """Apply an interrupted run's record: the sink keeps only the tensors it trusts."""
        try:
            trusted = int(json.loads(self.path.read_text(encoding="utf-8"))["trusted"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError):
            trusted = 0  # an unreadable record trusts nothing
        self.sink.resume_until(trusted)
        self._trusted = trusted

    def made(self, index: int) -> None:
        """Tensor ``index`` (layout order) is about to reach the sink: note the unverified inputs it came from."""
        pending = self._unverified()
        if pending:
            self._made.append((index, frozenset(pending)))
        self._update(set(pending))

    def settle(self) -> None:
        """Wait for every check (a failed one raises), then drop the record."""
        for a in self._arriving:
            a.settle()
        self._update(set(self._unverified()))

    def _unverified(self) -> list[str]:
        return [f for a in self._arriving for f in a.unverified()]

    def _update(self, pending: set[str]) -> None:
        self._made = [(i, inputs) for i, inputs in self._made if inputs & pending]
        trusted = self._made[0][0] if self._made else None
        if trusted == self._trusted:
            return
        if trusted is None:
            remove(self.path)
        else:
            write_json(self.path, {"trusted": trusted})
        self._trusted = trusted
