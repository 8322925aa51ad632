"""``python -m helpers catalog [NAME] [--kind K] [--generation G] [--json]``: print the catalog."""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..util.params import param
from .entry import GENERATIONS, KINDS
from .lookup import get, release_recipe, names
from .releases import CATALOG


@dataclass(frozen=True)
class CatalogQuery:
    """Which releases to show, and how."""

    name: str | None = param(None, "show one model (catalog name or hub id) and its merge plan", flag="name")
    kind: str | None = param(None, "only this kind of release", choices=KINDS)
    generation: str | None = param(None, "only this generation", choices=GENERATIONS)
    json: bool = param(False, "print JSON instead of a table")


OPTIONS = (CatalogQuery,)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def main(args: CatalogQuery) -> int:
    """Print the catalog (or one entry) as a table or JSON."""
    if args.name:
        entry = get(args.name)
        data = entry.to_dict()
        if entry.base:
            base, steps = release_recipe(entry.name)
            data["release_recipe"] = {"base": base, "apply": steps}
        if args.json:
            print(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            print("\n".join(f"{k}: {v}" for k, v in data.items()))
        return 0
    entries = [CATALOG[n] for n in names(kind=args.kind, generation=args.generation)]
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2, ensure_ascii=False))
        return 0
    rows = [["name", "kind", "hub id", "vocab", "template", "context"]]
    rows += [[e.name, e.kind, e.hub_id, str(e.vocab_size), e.template, str(e.context_length)] for e in entries]
    print(_table(rows))
    return 0
