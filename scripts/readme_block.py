"""A generated block of README.md between two markers: rewritten by its script, checked by ``--check`` in the tests.

Used by ``scripts/colab_table.py`` and ``scripts/laptop_table.py``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block_main(description: str, start: str, end: str, make: Callable[[], str], what: str,
                      script: str) -> int:
    """The command line of a block's script: rewrite the block with ``make()``, or (``--check``) exit 1 naming the
    first changed lines when README.md's block is out of date."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="exit 1 when README.md's table is out of date")
    args = parser.parse_args()
    text = README.read_text(encoding="utf-8")
    if start not in text or end not in text:
        sys.exit(f"README.md lacks the {start} / {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    rows = make()
    new = f"{head}{start}\n{rows}\n{end}{tail}"
    if args.check:
        if new != text:
            old = rest.split(end, 1)[0].strip().splitlines()
            changed = [f"  README: {o}\n  now:    {n}" for o, n in zip(old, rows.splitlines()) if o != n]
            print(f"README.md's {what} is out of date: run python scripts/{script}\n" + "\n".join(changed[:5]))
            return 1
        return 0
    if new != text:
        README.write_text(new, encoding="utf-8")
        print(f"rewrote the {what} in README.md")
    return 0
