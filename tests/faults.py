"""Support for the fault-injection tests: the CLI as a subprocess, the error contract, small or read-only file
systems, and what a run leaves behind."""
from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAULT_ENV = "HELPERS_FAULT_KILL"  # helpers.util.faults.FAULT_ENV: "<site>:<n>" kills the command at its n-th pass
QUIET = {"HELPERS_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _limit_file_size(limit: int):
    def apply() -> None:  # runs in the child: files it writes cannot grow past ``limit`` (EFBIG, as a full disk)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def start(*args: object, env: Mapping[str, str] | None = None, fsize: int | None = None) -> subprocess.Popen:
    """Start ``python -m helpers ARGS`` from the repository root (so this checkout's package is the one run)."""
    e = {**os.environ, **QUIET, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "helpers", *map(str, args)], cwd=ROOT, env=e, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_limit_file_size(fsize) if fsize else None)


def cli(*args: object, env: Mapping[str, str] | None = None, fsize: int | None = None,
        timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m helpers ARGS`` and wait for it."""
    p = start(*args, env=env, fsize=fsize)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def run_all(commands: Mapping[str, Sequence[object]], *, env: Mapping[str, str] | None = None,
            workers: int = 3) -> dict[str, subprocess.CompletedProcess]:
    """Run several CLI commands concurrently (their start-up dominates on small inputs)."""
    with ThreadPoolExecutor(workers) as pool:
        futures = {k: pool.submit(cli, *args, env=env) for k, args in commands.items()}
        return {k: f.result() for k, f in futures.items()}


PROGRESS = ("quantizing ", "converting ", "note: ", "memory estimate: ")  # the commands' own lines, which may come before an error


def assert_error_line(p: subprocess.CompletedProcess, *needles: str) -> str:
    """The error contract: non-zero exit (not a crash), one ``error: ...`` line on stderr and nothing else there
    but the command's own progress lines (no traceback, no library log); returns the line."""
    assert p.returncode not in (0, -9), (p.returncode, p.stdout, p.stderr)
    assert p.returncode > 0, f"killed by signal {-p.returncode}: {p.stderr[-2000:]}"
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip() and not line.startswith(PROGRESS)]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def hidden(folder: Path) -> list[str]:
    """Names starting with a dot in ``folder``: partial outputs, temporaries, locks."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(".")) if Path(folder).is_dir() else []


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (or the file itself) by relative name, with its bytes."""
    path = Path(path)
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def assert_same_tree(got: Path, want: Path) -> None:
    a, b = tree(got), tree(want)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at ``path`` (root only; the test is skipped where mounting is impossible)."""
    path.mkdir(parents=True, exist_ok=True)
    if not can_mount():
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def readonly_folder(path: Path, *, files: Sequence[Path] = ()) -> Iterator[Path]:
    """A folder no command can write to, holding copies of ``files``: ``chmod 555`` for an ordinary user (root
    ignores modes, so there a tmpfs remounted read-only); skipped when neither works."""
    if os.geteuid() != 0:
        path.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, path / Path(f).name)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    with tmpfs(path, f"{4 + sum(Path(f).stat().st_size for f in files) // (1 << 20)}m"):
        for f in files:
            shutil.copyfile(f, path / Path(f).name)
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
