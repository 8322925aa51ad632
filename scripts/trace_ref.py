"""Follow a merge's ``base`` reference call by call through ``helpers/`` (issue 29's trace), and count the trip.

    python scripts/trace_ref.py [--base meta-llama/Llama-2-7b-hf] [--lora hfl/chinese-alpaca-2-lora-7b] [--calls]

Runs ``python -m helpers merge --base BASE --lora LORA --format gguf --outtype q8_0`` in this process against the
offline demo mirror (``HELPERS_LOCAL_MODELS``: notebook 01's smoke path, hub ids resolved through ``helpers.hub``)
under :func:`sys.setprofile`, and keeps the calls into ``helpers/`` whose arguments hold the base reference (the
string itself, a path ending in its name, or an object or sequence holding one of those, one level down). Prints:

- files: the distinct modules the reference passes through;
- re-entries: how often the reference enters a module again after having left it;
- trips back up: calls from a module of a lower layer into one of a higher layer (the layers of
  ``tests/test_layout.py``), i.e. control that went back up and came down again;
- ``--calls``: the calls themselves, in order.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _holds(value: object, needles: tuple[str, ...], depth: int = 1) -> bool:
    """True when ``value`` is, or (``depth`` levels down) holds, the reference."""
    if isinstance(value, (str, Path)):
        text = str(value)
        return any(text == n or text.endswith("/" + n.split("/")[-1]) for n in needles)
    if depth <= 0:
        return False
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds(v, needles, depth - 1) for v in list(value)[:16])
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(_holds(getattr(value, f.name, None), needles, depth - 1) for f in dataclasses.fields(value))
    return False


def _unit_layer() -> dict[str, int]:
    from test_layout import LAYER_OF

    return LAYER_OF


def trace(base: str, lora: str) -> list[tuple[str, str]]:
    """The ``(module file, function)`` calls that carry ``base``, in order."""
    from helpers.__main__ import main

    pkg = str(ROOT / "helpers") + os.sep
    needles = (base,)
    calls: list[tuple[str, str]] = []

    def profile(frame, event, arg):  # noqa: ANN001 - sys.setprofile's signature
        if event != "call":
            return
        file = frame.f_code.co_filename
        if not file.startswith(pkg):
            return
        args = frame.f_code.co_varnames[: frame.f_code.co_argcount + frame.f_code.co_kwonlyargcount]
        if any(_holds(frame.f_locals.get(a), needles) for a in args):
            calls.append((file[len(pkg):], frame.f_code.co_name))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.gguf"
        sys.setprofile(profile)
        try:
            rc = main(["merge", "--base", base, "--lora", lora, "--out", str(out), "--format", "gguf",
                       "--outtype", "q8_0"])
        finally:
            sys.setprofile(None)
    if rc != 0:
        raise SystemExit(f"the merge failed (status {rc})")
    return calls


def measures(calls: list[tuple[str, str]]) -> dict[str, int]:
    """Files, re-entries and trips back up of a call sequence."""
    layer_of = _unit_layer()

    def unit(file: str) -> str:
        first = file.split("/")[0]
        return first[:-3] if first.endswith(".py") else first

    files = [f for f, _ in calls]
    runs = [f for i, f in enumerate(files) if i == 0 or files[i - 1] != f]
    seen: set[str] = set()
    reentries = 0
    for f in runs:
        reentries += f in seen
        seen.add(f)
    ups = sum(layer_of.get(unit(b), 0) > layer_of.get(unit(a), 0) for a, b in zip(runs, runs[1:]))
    return {"calls": len(calls), "files": len(seen), "re-entries": reentries, "trips back up": ups}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="meta-llama/Llama-2-7b-hf")
    parser.add_argument("--lora", default="hfl/chinese-alpaca-2-lora-7b")
    parser.add_argument("--calls", action="store_true", help="print the calls in order")
    args = parser.parse_args()
    from helpers.demo.build import build_demo
    from helpers.hub import LOCAL_MODELS_ENV, demo_dir

    os.environ[LOCAL_MODELS_ENV] = str(build_demo(demo_dir()))
    os.environ["HF_HUB_OFFLINE"] = "1"
    calls = trace(args.base, args.lora)
    if args.calls:
        for file, func in calls:
            print(f"  {file}:{func}")
    for name, value in measures(calls).items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
