"""Fine-tuning records through ``datasets``: a hub data set id as ``--data`` (downloaded, or opened as a stream),
or local shards; the columns SFT and PT read are checked with one error line."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ..env import get_secret
from ..hub import hub_endpoint
from ..util import UserError
from .config import is_hub_dataset
from .datafile import check_record, json_kind

if TYPE_CHECKING:
    from .config import FinetuneConfig

_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
SFT_COLUMNS = ("instruction", "output")
PREVIEW_ROWS = 200  # rows of a hub data set the plan reads before anything is downloaded


def load_records(config: FinetuneConfig, *, streaming: bool):
    """``datasets.load_dataset`` of the run's data (its ``train`` split), hub errors as one :class:`UserError`."""
    from datasets import load_dataset

    try:
        if is_hub_dataset(config.data):
            return load_dataset(config.data, split="train", streaming=streaming, token=get_secret("HF_TOKEN"))
        path = Path(config.data)
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in _BUILDERS) if path.is_dir() else [path]
        kinds = {_BUILDERS.get(f.suffix.lower()) for f in files}
        if not files or None in kinds or len(kinds) > 1:
            raise UserError(f"{config.data}: give .txt, .json/.jsonl, .parquet or .csv files of one kind to stream")
        return load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train", streaming=streaming)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a missing or unreachable set
        where = f" through {hub_endpoint()}" if hub_endpoint() else ""
        raise UserError(f"cannot read the data set {config.data}{where} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); check the id (org/name), HF_TOKEN for a "
                        "private set, the network or HF_ENDPOINT") from None


def check_columns(config: FinetuneConfig, columns: list[str] | None) -> None:
    if columns is None:
        return
    need = SFT_COLUMNS if config.mode == "sft" else (config.text_column,)
    missing = [c for c in need if c not in columns]
    if missing:
        hint = ("SFT reads the Alpaca columns instruction, input (optional) and output" if config.mode == "sft"
                else "PT reads one text column; name it with --text-column")
        raise UserError(f"the data set {config.data} has no column {', '.join(missing)} (it has "
                        f"{', '.join(columns)}): {hint}")


def hub_rows(config: FinetuneConfig, rows: Iterable[Any]) -> list[Any]:
    """``rows`` of the hub data set checked as the mode reads them: SFT records (each with non-empty
    ``instruction`` and ``output`` text, :func:`.datafile.check_record`; ``row N`` counts from 1) or PT texts (the
    non-empty strings of the text column; anything else in it is refused)."""
    out = []
    for number, row in enumerate(rows, 1):
        where = f"the data set {config.data} row {number}"
        if config.mode == "pt":
            text = row.get(config.text_column)
            if text is not None and not isinstance(text, str):
                raise UserError(f"{where}: '{config.text_column}' is {json_kind(text)}, not text: PT reads one text "
                                "column (name it with --text-column)")
            if text and text.strip():
                out.append(text)
            continue
        record = check_record(dict(row), where)
        out.append({"instruction": record["instruction"], "input": record.get("input") or "",
                    "output": record["output"]})
    return out


def hub_records(config: FinetuneConfig) -> list[Any]:
    """A hub data set, downloaded: SFT records (dicts with the Alpaca columns) or PT texts (non-empty strings),
    every row checked (:func:`hub_rows`)."""
    ds = load_records(config, streaming=False)
    check_columns(config, list(ds.column_names))
    return hub_rows(config, ds)


def preview_hub_records(config: FinetuneConfig, rows: int = PREVIEW_ROWS) -> list[Any]:
    """The schema and first ``rows`` rows of a hub data set, read as a stream (the whole set is not downloaded) and
    checked as :func:`hub_records` checks every row.

    Raises:
        UserError: the set cannot be read, lacks the columns the mode reads, or a first row is bad.
    """
    ds = load_records(config, streaming=True)
    try:
        first = list(itertools.islice(iter(ds), rows))
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a file it cannot parse
        raise UserError(f"cannot read the rows of the data set {config.data} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}): check its files") from None
    columns = list(ds.column_names) if ds.column_names else (list(first[0]) if first else None)
    check_columns(config, columns)
    if not first:
        raise UserError(f"the data set {config.data} has no rows in its train split")
    return hub_rows(config, first)
