"""Fine-tuning records through ``datasets``: a hub data set id as ``--data`` (downloaded, or opened as a stream),
or local shards; the columns SFT and PT read are checked with one error line."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..env import get_secret
from ..hub import hub_endpoint
from ..util import UserError
from .config import is_hub_dataset

if TYPE_CHECKING:
    from .config import FinetuneConfig

_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
SFT_COLUMNS = ("instruction", "output")


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


def hub_records(config: FinetuneConfig) -> list[Any]:
    """A hub data set, downloaded: SFT records (dicts with the Alpaca columns) or PT texts (non-empty strings)."""
    ds = load_records(config, streaming=False)
    check_columns(config, list(ds.column_names))
    if config.mode == "pt":
        return [t for t in ds[config.text_column] if isinstance(t, str) and t.strip()]
    return [{"instruction": r["instruction"], "input": r.get("input") or "", "output": r["output"]} for r in ds]
