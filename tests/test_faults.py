"""Fault injection, through the CLI: kill -9 at chosen points of every long command, full and read-only disks,
two runs racing for one output.

After a kill, a rerun must succeed, give the bytes of an uninterrupted run and leave nothing behind; a failure
must be one ``error:`` line with nothing under the final name. Kills use ``HELPERS_FAULT_KILL=<site>:<n>``
(:func:`helpers.util.fault_point`: SIGKILL, no cleanup runs). GGUF merges (resume, litter) are covered with the
GGUF sink.
"""
from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
from faults import (FAULT_ENV, assert_error_line, assert_same_tree, cli, hidden, readonly_folder, start, tmpfs,
                    tree)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PLUS = ["chinese-llama-plus-lora-7b", "chinese-alpaca-plus-lora-7b"]


def merge_args(demo: Path, fmt: str = "hf") -> list:
    extra = ["--shard-size", "800KB"] if fmt == "hf" else ["--pth-shards", "2"]
    return ["merge", "--base", demo / "llama-7b", "--lora", demo / PLUS[0], "--lora", demo / PLUS[1],
            "--format", fmt, "--no-progress", *extra]


@pytest.fixture(scope="module")
def clean(demo, tmp_path_factory):
    """Uninterrupted outputs of each command, made once: merge (hf, pth), to-gguf, quantize."""
    from helpers.merge import MergeOptions, Recipe, merge

    root = tmp_path_factory.mktemp("clean")
    cache: dict[str, Path] = {}

    def get(what: str) -> Path:
        if what not in cache:
            out = root / what
            if what in ("hf", "pth"):
                merge(Recipe(demo / "llama-7b", [demo / x for x in PLUS]), out,
                      MergeOptions(fmt=what, progress=False, max_shard_bytes=800 << 10 if what == "hf" else None,
                                   pth_shards=2 if what == "pth" else None))
            elif what == "f16.gguf":
                assert cli("to-gguf", "--model", demo / "Llama-2-7b-hf", "--out", out).returncode == 0
            else:  # q4 from the F16 GGUF, or from the HF folder
                src = get("f16.gguf") if what == "q4.gguf" else demo / "Llama-2-7b-hf"
                assert cli("quantize", "--model", src, "--out", out, "--threads", "2").returncode == 0
            cache[what] = out
        return cache[what]

    return get


def _outputs(folder: Path, stem: str) -> dict[str, bytes]:
    """A GGUF and its sidecars (.sha256, .Modelfile), by name."""
    return {k: v for k, v in tree(folder).items() if k.startswith(stem)}


# ------------------------------------------------------------------------------------------------ kill -9
@pytest.mark.parametrize("fmt,site", [("hf", "merge.write:1"), ("hf", "merge.write:9"), ("hf", "merge.finish:1"),
                                      ("pth", "merge.write:3"), ("pth", "merge.assemble:1")])
def test_kill9_merge_then_rerun_is_identical(demo, clean, tmp_path, fmt, site):
    out = tmp_path / "out"
    p = cli(*merge_args(demo, fmt), "--out", out, env={FAULT_ENV: site})
    assert p.returncode == -9, p.stderr
    assert not out.exists()
    p = cli(*merge_args(demo, fmt), "--out", out)
    assert p.returncode == 0, p.stderr
    assert_same_tree(out, clean(fmt))
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("site", ["to-gguf.tensor:1", "to-gguf.tensor:12"])
def test_kill9_to_gguf_then_rerun_is_identical(demo, clean, tmp_path, site):
    args = ["to-gguf", "--model", demo / "Llama-2-7b-hf", "--out", tmp_path / "f16.gguf"]
    assert cli(*args, env={FAULT_ENV: site}).returncode == -9
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []
    p = cli(*args)
    assert p.returncode == 0, p.stderr
    assert _outputs(tmp_path, "f16") == _outputs(clean("f16.gguf").parent, "f16")
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("src,site", [("q4.gguf", "quantize.written:1"), ("q4-hf.gguf", "to-gguf.tensor:3"),
                                      ("q4-hf.gguf", "quantize.f16:1")])
def test_kill9_quantize_then_rerun_is_identical(demo, clean, tmp_path, src, site):
    model = clean("f16.gguf") if src == "q4.gguf" else demo / "Llama-2-7b-hf"
    args = ["quantize", "--model", model, "--out", tmp_path / src, "--threads", "2"]
    assert cli(*args, env={FAULT_ENV: site}).returncode == -9
    assert not (tmp_path / src).exists()
    p = cli(*args)
    assert p.returncode == 0, p.stderr
    stem = src.removesuffix(".gguf")
    assert _outputs(tmp_path, stem) == _outputs(clean(src).parent, stem)
    assert hidden(tmp_path) == []


def _finetune_args(demo: Path, out: Path) -> list:
    return ["finetune", "--base", demo / "Llama-2-7b-hf", "--data", demo / "data" / "sft_zh.json", "--out", out,
            "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0", "--lr", "1e-3", "--batch-size", "2",
            "--grad-accum", "1", "--save-steps", "2", "--max-samples", "8", "--max-steps", "4"]


@pytest.fixture(scope="module")
def finetuned(demo, tmp_path_factory):
    """An uninterrupted run, and a run killed just after saving checkpoint-4 (made side by side, once)."""
    root = tmp_path_factory.mktemp("finetune")
    first = start(*_finetune_args(demo, root / "clean"))
    p = cli(*_finetune_args(demo, root / "killed"), env={FAULT_ENV: "finetune.save:2"})
    assert p.returncode == -9, p.stderr
    assert first.wait(timeout=600) == 0, first.stderr.read()
    return root / "clean", root / "killed"


@pytest.mark.parametrize("when", ["after-save", "mid-save"])
def test_kill9_finetune_then_rerun_is_identical(demo, finetuned, tmp_path, when):
    clean_out, killed = finetuned
    out = Path(shutil.copytree(killed, tmp_path / "run"))
    if when == "mid-save":  # what a kill inside the Trainer's save leaves: trainer_state.json is written last
        (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").unlink()
    p = cli(*_finetune_args(demo, out))
    assert p.returncode == 0, p.stderr
    assert ("resumed from checkpoint-2" if when == "mid-save" else "resumed from checkpoint-4") in p.stdout
    for name in ("adapter_model.safetensors", "adapter_config.json", "loss.csv"):
        assert (out / name).read_bytes() == (clean_out / name).read_bytes(), name
    assert hidden(out) == [] and hidden(tmp_path) == []


def test_kill9_demo_then_rerun_is_identical(demo, tmp_path):
    out = tmp_path / "assets"
    assert cli("demo", "--out", out, env={FAULT_ENV: "demo.step:3"}).returncode == -9
    assert not out.exists() and hidden(tmp_path)  # a killed run leaves its temporary folder ...
    p = cli("demo", "--out", out)
    assert p.returncode == 0, p.stderr
    assert hidden(tmp_path) == []  # ... which the rerun removes
    assert_same_tree(out, demo)


# ------------------------------------------------------------------------------------------------ full disks
def test_disk_full_mid_merge_keeps_the_partial_for_a_resume(demo, clean, tmp_path, monkeypatch):
    """In-process: ENOSPC from the third write is one UserError that says so; the rerun resumes, same bytes."""
    from helpers.merge import MergeOptions, Recipe, merge, writers
    from helpers.util import UserError

    real, calls = writers.write_tensor, []

    def failing(fh, t, dtype):
        calls.append(1)
        if len(calls) == 12:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fh, t, dtype)

    monkeypatch.setattr(writers, "write_tensor", failing)
    out = tmp_path / "out"
    recipe, options = Recipe(demo / "llama-7b", [demo / x for x in PLUS]), MergeOptions(max_shard_bytes=800 << 10,
                                                                                         progress=False)
    with pytest.raises(UserError, match="disk is full.*needs about"):
        merge(recipe, out, options)
    assert not out.exists() and hidden(tmp_path) == [".out.partial"]
    monkeypatch.setattr(writers, "write_tensor", real)
    res = merge(recipe, out, options)
    assert res.tensors_resumed > 0
    assert_same_tree(out, clean("hf"))


def _needed(demo: Path) -> int:
    """The space check's estimate for the Plus merge (HF, f16)."""
    from helpers.merge.inputs import open_inputs
    from helpers.merge.options import MergeOptions
    from helpers.merge.preflight import output_bytes, merge_layout

    inputs = open_inputs(demo / "llama-7b", [demo / x for x in PLUS], None)
    try:
        return output_bytes(merge_layout(inputs), MergeOptions())
    finally:
        inputs.close()


def test_space_check_counts_the_partial_output(demo, tmp_path, monkeypatch):
    """In-process: a resume needs only the space the partial output does not hold yet."""
    from helpers import disk
    from helpers.merge import MergeOptions, Recipe, merge
    from helpers.util import UserError

    out, args = tmp_path / "out", (demo / "llama-7b", [demo / x for x in PLUS])
    monkeypatch.setenv("HELPERS_MERGE_INTERRUPT_AFTER", "14")
    with pytest.raises(KeyboardInterrupt):
        merge(Recipe(*args), out, MergeOptions(max_shard_bytes=800 << 10, progress=False))
    monkeypatch.delenv("HELPERS_MERGE_INTERRUPT_AFTER")
    held = sum(f.stat().st_size for f in (tmp_path / ".out.partial").iterdir())
    assert held > 1 << 20
    monkeypatch.setattr(disk, "free_disk_bytes", lambda _p: _needed(demo) - held // 2)
    with pytest.raises(UserError, match="not enough disk space"):  # a fresh merge elsewhere does not fit ...
        merge(Recipe(*args), tmp_path / "other", MergeOptions(max_shard_bytes=800 << 10, progress=False))
    res = merge(Recipe(*args), out, MergeOptions(max_shard_bytes=800 << 10, progress=False))  # ... the resume does
    assert res.tensors_resumed > 0


def test_merge_resumes_on_a_nearly_full_disk(demo, clean, tmp_path):
    """A real small disk (tmpfs): a merge killed half-way resumes with less free space than a whole merge needs."""
    need = _needed(demo)
    with tmpfs(tmp_path / "disk", str(need + (need // 3) // 4096 * 4096)) as disk:
        out = disk / "out"
        assert cli(*merge_args(demo), "--out", out, env={FAULT_ENV: "merge.write:14"}).returncode == -9
        p = cli(*merge_args(demo), "--out", out)
        assert p.returncode == 0, p.stderr
        assert "resumed" in p.stdout
        assert_same_tree(out, clean("hf"))
        assert hidden(disk) == []


SMALL_DISK = {  # command, its output under the small disk, free space of the disk
    "merge": (lambda d, o: [*merge_args(d), "--out", o / "m"], "2m"),
    "to-gguf": (lambda d, o: ["to-gguf", "--model", d / "Llama-2-7b-hf", "--out", o / "f16.gguf"], "2m"),
    "quantize": (lambda d, o: ["quantize", "--model", d / "Llama-2-7b-hf", "--out", o / "q.gguf"], "600k"),
    "demo": (lambda d, o: ["demo", "--out", o / "assets"], "5m"),
}


@pytest.mark.parametrize("command", list(SMALL_DISK))
def test_small_disk_is_refused_before_writing(demo, tmp_path, command):
    make, size = SMALL_DISK[command]
    with tmpfs(tmp_path / "disk", size) as disk:
        assert_error_line(cli(*make(demo, disk)), "disk", "need")
        assert list(disk.iterdir()) == []


FILE_LIMIT = {  # command, file-size limit (bytes) that stops it mid-write
    "merge": (lambda d, o: [*merge_args(d), "--out", o / "m"], 300_000),
    "to-gguf": (lambda d, o: ["to-gguf", "--model", d / "Llama-2-7b-hf", "--out", o / "f16.gguf"], 1_000_000),
    "quantize": (lambda d, o: ["quantize", "--model", d / "Llama-2-7b-hf", "--out", o / "q.gguf"], 300_000),
    "demo": (lambda d, o: ["demo", "--out", o / "assets"], 1_000_000),
}


@pytest.mark.parametrize("command", list(FILE_LIMIT))
def test_write_failure_mid_write_is_one_line(demo, clean, tmp_path, command):
    """A write refused half-way (RLIMIT_FSIZE: the kernel's EFBIG, without root): one line that says why and how
    much is needed; a merge keeps its partial output and resumes."""
    make, limit = FILE_LIMIT[command]
    assert_error_line(cli(*make(demo, tmp_path), fsize=limit), "no space", "needs about")
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []
    if command == "merge":
        assert hidden(tmp_path) == [".m.partial"]
        assert cli(*make(demo, tmp_path)).returncode == 0
        assert_same_tree(tmp_path / "m", clean("hf"))
    if command == "to-gguf":  # a conversion keeps its partial for a resume; quantize's temporary F16 leaves nothing
        assert hidden(tmp_path) == [".f16.gguf.partial"]
        assert cli(*make(demo, tmp_path)).returncode == 0
    assert hidden(tmp_path) == []


WRITE_FAILURES = {
    "ENOSPC": OSError(errno.ENOSPC, "No space left on device", "/x/out/model.safetensors"),
    "EDQUOT": OSError(errno.EDQUOT, "Disk quota exceeded", "/x/out/f"),
    "numpy": OSError("196608 requested and 135136 written"),
    "torch": RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0"
                          " PytorchStreamWriter failed writing file data/0: file write failed"),
    "safetensors": Exception("Error while serializing: I/O error: No space left on device (os error 28)"),
    "EROFS": OSError(errno.EROFS, "Read-only file system", "/x/out"),
}


@pytest.mark.parametrize("case", list(WRITE_FAILURES))
def test_write_failures_map_to_one_line(case, monkeypatch, capsys):
    """Wherever a write fails for lack of space or a read-only disk, the CLI says so in one line."""
    import helpers.__main__ as cli_main
    from helpers.catalog import command as catalog_command

    def fail(_query):
        raise WRITE_FAILURES[case]

    monkeypatch.setattr(catalog_command, "main", fail)
    assert cli_main.main(["catalog"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("read-only" if case == "EROFS" else "disk is full") in err[0], err


# ------------------------------------------------------------------------------------------------ read-only
READ_ONLY = {
    "merge": lambda d, o: [*merge_args(d), "--out", o / "m"],
    "to-gguf": lambda d, o: ["to-gguf", "--model", d / "Llama-2-7b-hf", "--out", o / "f16.gguf"],
    "quantize": lambda d, o: ["quantize", "--model", d / "Llama-2-7b-hf", "--out", o / "q.gguf"],
    "demo": lambda d, o: ["demo", "--out", o / "assets"],
}


@pytest.mark.parametrize("command", list(READ_ONLY))
def test_read_only_output_folder_is_one_line(demo, tmp_path, command):
    with readonly_folder(tmp_path / "ro") as ro:
        assert_error_line(cli(*READ_ONLY[command](demo, ro)), "cannot write", str(ro))
        assert list(ro.iterdir()) == []


def test_read_only_check_before_writing(tmp_path, monkeypatch):
    """In-process, wherever tests run as root: a folder os.access calls read-only is refused before writing."""
    import os

    from helpers.disk import require_writable
    from helpers.util import UserError

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == tmp_path else real(p, mode, **kw))
    with pytest.raises(UserError, match=f"cannot write the GGUF in {tmp_path}"):
        require_writable(tmp_path / "sub", what="the GGUF")


# ------------------------------------------------------------------------------------------------ races
LOCKED = {
    "merge": lambda d, o: [*merge_args(d), "--out", o],
    "to-gguf": lambda d, o: ["to-gguf", "--model", d / "Llama-2-7b-hf", "--out", o],
    "quantize": lambda d, o: ["quantize", "--model", d / "Llama-2-7b-hf", "--out", o],
}


@pytest.mark.parametrize("command", list(LOCKED))
def test_second_run_on_a_busy_output_fails_fast(demo, tmp_path, command):
    """While a run holds the output (here: this test), another fails at once, naming it, and touches nothing."""
    import os

    from helpers.disk import output_lock

    out = tmp_path / ("out.gguf" if command != "merge" else "out")
    with output_lock(out):
        assert_error_line(cli(*LOCKED[command](demo, out)), "another run", f"pid {os.getpid()}")
        assert [p.name for p in tmp_path.iterdir()] == [".out.gguf.run.lock" if command != "merge" else ".out.run.lock"]
    assert hidden(tmp_path) == []


def test_two_merges_racing_for_one_output(demo, clean, tmp_path):
    """Two different merges into one folder at once: at most one reports success, and the folder then holds
    that merge's bytes."""
    out = tmp_path / "out"
    other = ["merge", "--base", demo / "llama-7b", "--lora", demo / "chinese-llama-lora-7b", "--no-progress",
             "--out", out]
    a, b = start(*merge_args(demo), "--out", out), start(*other)
    ra, rb = a.wait(timeout=600), b.wait(timeout=600)
    assert (ra, rb) != (0, 0), "both runs reported success for one output"
    for p, rc in ((a, ra), (b, rb)):
        if rc != 0:
            err = p.stderr.read()
            assert err.count("error: ") == 1 and ("another run" in err or "different merge" in err), err
    if ra == 0:
        assert_same_tree(out, clean("hf"))
    elif rb == 0:
        job = json.loads((out / "merge.json").read_text())["job"]
        assert [i["role"] for i in job["inputs"]] == ["base", "lora 1"]
    assert hidden(tmp_path) == []
