"""Read C-Eval / CMMLU from a folder or the hub, in any layout they are published in, and check it.

Layouts (found anywhere up to two folders deep, so an unpacked archive's top folder does not matter):

- the official CSV layout: ``dev/``, ``val/``, ``test/`` with ``{subject}_{split}.csv`` (C-Eval) or
  ``{subject}.csv`` (CMMLU); the subjects are the files of the split's folder, as in the authors' scripts;
- the hub's parquet layouts, one folder per subject: ``{subject}/{split}-00000-of-00001.parquet``
  (``ceval/ceval-exam`` today), ``{subject}/{split}/0000.parquet`` or ``{subject}/*-{split}.parquet``
  (the hub's parquet conversions);
- a ``.zip`` / ``.tar`` of the CSV layout (``haonan-li/cmmlu``'s ``cmmlu_v1_0_1.zip``): its CSV files are
  unpacked once into ``~/.cache/cllama/exams/<digest>`` (nothing else is taken from it).

Every cell is rendered as the authors' ``pandas.read_csv`` saw it (:mod:`.cells`). Bad input is one
:class:`~helpers.util.UserError`: a file without the columns, an answer outside A-D, a subject without its
dev file when shots are asked for, a split without answers when accuracy is asked for.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from ..util import UserError, atomic_path, read_utf8
from .cells import render_column
from .subjects import LETTERS, Benchmark, Subject

_ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class Item:
    """One question: its row ``index`` in its file (the key of ``submission.json``), text, options, answer."""

    index: int
    question: str
    options: tuple[str, str, str, str]
    answer: str  # "" where the split has no answer


@dataclass(frozen=True)
class SubjectData:
    """The questions of one subject in the chosen split, and its dev rows (the shots) when asked for."""

    subject: Subject
    items: tuple[Item, ...]
    dev: tuple[Item, ...]
    file: str


@dataclass(frozen=True)
class ExamData:
    """One benchmark split: every subject's questions, and where they were read from."""

    bench: Benchmark
    split: str
    source: str
    subjects: tuple[SubjectData, ...]

    @property
    def n_questions(self) -> int:
        return sum(len(s.items) for s in self.subjects)

    @property
    def has_answers(self) -> bool:
        return all(item.answer for s in self.subjects for item in s.items)


# ---------------------------------------------------------------------------------------------- tables
def read_csv_table(path: Path) -> tuple[list[str], list[list[str | None]]]:
    """``(header, rows)`` of a UTF-8 CSV; short rows are padded with None (a missing cell)."""
    text = read_utf8(path, what="a UTF-8 CSV")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        return [], []
    header = rows[0]
    body = [r + [None] * (len(header) - len(r)) for r in rows[1:] if r]
    return header, [r[: len(header)] for r in body]


def _parquet_table(paths: list[Path]) -> tuple[list[str], list[list[str | None]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("reading the hub's parquet files needs pyarrow: pip install pyarrow") from None
    header: list[str] = []
    rows: list[list[str | None]] = []
    for path in paths:
        try:
            data = pq.read_table(path).to_pydict()
        except Exception as exc:  # noqa: BLE001 - a damaged file is one line
            raise UserError(f"{path} is not a readable parquet file ({type(exc).__name__}: {exc})") from None
        header = header or list(data)
        n = len(next(iter(data.values()), []))
        rows += [[None if data[c][i] is None else str(data[c][i]) for c in header] for i in range(n)]
    return header, rows


def _require_columns(bench: Benchmark, file: str, header: list[str], need: list[str]) -> None:
    missing = [c for c in need if c not in header]
    if missing:
        raise UserError(f"{file} lacks the column(s) {', '.join(missing)}; a {bench.title} file has the columns "
                        f"{bench.question},A,B,C,D,{bench.answer}")


def _items(bench: Benchmark, file: str, header: list[str], rows: list[list[str | None]], *,
           need_answers: bool) -> tuple[Item, ...]:
    """The rows of one file as :class:`Item` s, cells rendered per column as pandas typed them."""
    need = [bench.question, *LETTERS] + ([bench.answer] if need_answers else [])
    _require_columns(bench, file, header, need)
    cols = {c: render_column([r[header.index(c)] for r in rows]) for c in need}
    answers = ([r[header.index(bench.answer)] for r in rows] if bench.answer in header else [None] * len(rows))
    items = []
    for i, raw in enumerate(answers):
        answer = "" if raw is None or raw == "" else raw
        if answer and answer not in LETTERS:
            raise UserError(f"{file} row {i + 1}: the answer {answer!r} is not one of A, B, C, D; fix the file")
        if need_answers and not answer:
            raise UserError(f"{file} row {i + 1} has no answer; every row needs one of A, B, C, D")
        items.append(Item(i, cols[bench.question][i], tuple(cols[c][i] for c in LETTERS), answer))
    return tuple(items)


# ---------------------------------------------------------------------------------------------- layouts
class _Layout:
    """Where a benchmark's tables are in one folder: the CSV layout (``root/{split}/``) or per-subject parquet."""

    def __init__(self, bench: Benchmark, root: Path, kind: str) -> None:
        self.bench, self.root, self.kind = bench, root, kind

    def subjects(self, split: str) -> list[str]:
        """The subject keys present in ``split``, sorted."""
        if self.kind == "csv":
            folder = self.root / split
            keys = (self.bench.subject_of(p.name, split) for p in folder.glob("*.csv")) if folder.is_dir() else ()
            return sorted(k for k in keys if k)
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.parquet_files(p.name, split))

    def parquet_files(self, subject: str, split: str) -> list[Path]:
        folder = self.root / subject
        for pattern in (f"{split}-*.parquet", f"{split}/*.parquet", f"*-{split}.parquet"):
            found = sorted(folder.glob(pattern))
            if found:
                return found
        return []

    def table(self, subject: str, split: str) -> tuple[str, list[str], list[list[str | None]]] | None:
        """``(file name for messages, header, rows)`` of ``subject`` in ``split``, or None when it has no file."""
        if self.kind == "csv":
            path = self.root / split / self.bench.file_name(subject, split)
            return (str(path), *read_csv_table(path)) if path.is_file() else None
        files = self.parquet_files(subject, split)
        return (str(files[0]), *_parquet_table(files)) if files else None


def _candidates(root: Path, depth: int = 2) -> Iterable[Path]:
    yield root
    if depth:
        for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            yield from _candidates(child, depth - 1)


def _find_layout(bench: Benchmark, root: Path, split: str) -> _Layout | None:
    for folder in _candidates(root):
        csv_layout = _Layout(bench, folder, "csv")
        if csv_layout.subjects(split):
            return csv_layout
        parquet = _Layout(bench, folder, "parquet")
        if any(parquet.parquet_files(s, split) for s in bench.subjects if (folder / s).is_dir()):
            return parquet
    return None


def exams_cache() -> Path:
    """Where archives are unpacked: ``$XDG_CACHE_HOME/cllama/exams`` (``~/.cache/...``), else the temp folder."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cllama" / "exams"
    try:
        base.mkdir(parents=True, exist_ok=True)
        return base
    except OSError:
        return Path(tempfile.gettempdir()) / "cllama-exams"


def _safe_member(name: str) -> str | None:
    """A member name that stays inside the target (no absolute path, no ``..``) and is a CSV, else None."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or path.suffix.lower() != ".csv":
        return None
    return path.as_posix()


def _archive_members(archive: Path) -> Iterable[tuple[str, bytes]]:
    """``(name, bytes)`` of the CSV files of a zip or tar archive; links and other files are skipped."""
    if archive.suffix.lower() == ".zip":
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                name = None if info.is_dir() else _safe_member(info.filename)
                if name:
                    yield name, z.read(info)
        return
    with tarfile.open(archive) as t:
        for member in t.getmembers():
            name = _safe_member(member.name) if member.isfile() else None
            f = t.extractfile(member) if name else None
            if f is not None:
                yield name, f.read()


def unpack_archive(archive: str | Path) -> Path:
    """The CSV files of ``archive`` unpacked into the exams cache (once per archive content); their folder.

    Raises:
        UserError: the archive is damaged.
    """
    archive = Path(archive)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    out = exams_cache() / digest
    if out.is_dir():
        return out
    try:
        with atomic_path(out, is_dir=True) as tmp:
            for name, data in _archive_members(archive):
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise UserError(f"{archive} is not a readable archive ({exc}); download it again") from None
    return out


def locate(bench: Benchmark, root: Path, split: str) -> _Layout:
    """The layout holding ``split`` under ``root``, unpacking archives found there when no table is.

    Raises:
        UserError: nothing of ``bench``'s ``split`` is there.
    """
    found = _find_layout(bench, root, split)
    if found is None:
        archives = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(_ARCHIVES))
        for archive in archives:
            found = _find_layout(bench, unpack_archive(archive), split)
            if found:
                break
    if found is None:
        example = bench.file_name(next(iter(bench.subjects)), split)
        raise UserError(f"no {bench.title} {split} split in {root}: expected {split}/{example} (the official layout), "
                        f"the hub's per-subject parquet files, or an archive of them")
    return found


# ---------------------------------------------------------------------------------------------- loading
def data_root(bench: Benchmark, data: str | Path | None) -> Path:
    """A local folder for ``data``: a folder as given, else a hub data set id (default: the benchmark's own),
    downloaded (or taken from the hub cache) with every LFS file checked against the hub's SHA256."""
    from ..hub import looks_like_hub_id
    from ..hub.access import resolve_dataset

    if data is not None and Path(data).expanduser().is_dir():
        return Path(data).expanduser()
    ref = str(data) if data is not None else bench.hub_id
    if data is not None and not looks_like_hub_id(ref):
        raise UserError(f"data {ref!r} not found: give the folder of the {bench.title} CSVs (dev/, "
                        f"{bench.default_split}/...) or a hub data set id such as {bench.hub_id}")
    return resolve_dataset(ref, what=f"{bench.title} data set")


def _pick(bench: Benchmark, present: list[str], subjects: Iterable[str] | None, where: str) -> list[str]:
    unknown = sorted(set(present) - set(bench.subjects))
    if unknown:
        raise UserError(f"{where} has files of unknown {bench.title} subjects: {', '.join(unknown[:5])}; "
                        f"the file names must be the subject keys (e.g. {bench.file_name(next(iter(bench.subjects)), 'dev')})")
    if subjects is None:
        return present
    wanted = list(dict.fromkeys(subjects))
    absent = [s for s in wanted if s not in present]
    if absent:
        raise UserError(f"subject(s) {', '.join(absent)} not in {where}; it has: {', '.join(present)}")
    return wanted


def load_exam(bench: Benchmark, data: str | Path | None = None, *, split: str | None = None,
              subjects: Iterable[str] | None = None, shots: int = 5, need_answers: bool = True) -> ExamData:
    """Read and check one split of ``bench``, with each subject's first ``shots`` dev rows.

    Args:
        bench: :func:`~helpers.evaluate.subjects.benchmark`.
        data: a folder (any supported layout), a hub data set id, or None for ``bench.hub_id``.
        split: ``val`` / ``test`` (default ``bench.default_split``).
        subjects: subject keys to keep (default: every subject the split has).
        shots: dev rows each prompt starts with (0 or 5 in the releases).
        need_answers: the split must have answers (accuracy is asked for).

    Raises:
        UserError: missing data, columns or dev files, answers outside A-D, or no answers when they are needed.
    """
    split = split or bench.default_split
    if split not in bench.splits or split == "dev":
        raise UserError(f"{bench.title} has no {split!r} split to evaluate; use one of "
                        f"{', '.join(s for s in bench.splits if s != 'dev')}")
    if shots < 0:
        raise UserError(f"shots must be 0 or more, not {shots}")
    root = data_root(bench, data)
    layout = locate(bench, root, split)
    keys = _pick(bench, layout.subjects(split), subjects, f"{root} ({split})")
    out = [_subject(bench, layout, key, split, shots=shots, need_answers=need_answers) for key in keys]
    return ExamData(bench=bench, split=split, source=str(data or bench.hub_id), subjects=tuple(out))


def _subject(bench: Benchmark, layout: _Layout, key: str, split: str, *, shots: int,
             need_answers: bool) -> SubjectData:
    file, header, rows = layout.table(key, split)
    _require_columns(bench, file, header, [bench.question, *LETTERS])
    col = header.index(bench.answer) if bench.answer in header else None
    if need_answers and (col is None or not any(r[col] for r in rows)):
        why = (f"{bench.title}'s public {split} split has no answers" if split == "test" and not bench.test_has_answers
               else f"its {bench.answer} column is missing or empty")
        raise UserError(f"{file}: accuracy needs answers, but {why}; use --split {bench.default_split}, or "
                        f"--submission-only to write only submission.json (the predictions)")
    items = _items(bench, file, header, rows, need_answers=need_answers)
    if not items:
        raise UserError(f"{file} has no questions")
    dev: tuple[Item, ...] = ()
    if shots:
        found = layout.table(key, "dev")
        if found is None:
            raise UserError(f"{key}: {shots}-shot prompts need the subject's dev split "
                            f"(dev/{bench.file_name(key, 'dev')}), which is missing; add it, or use --shots 0")
        dev = _items(bench, found[0], found[1], found[2], need_answers=True)
        if len(dev) < shots:
            raise UserError(f"{found[0]} has {len(dev)} rows but {shots}-shot prompts need {shots}; "
                            f"use --shots {len(dev)}")
    return SubjectData(subject=bench.subjects[key], items=items, dev=dev[:shots], file=file)
