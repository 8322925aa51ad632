"""The small shared modules on their own: ``helpers.util`` (errors, atomic files, JSON, hashing, progress, logs,
fault points), ``helpers.disk`` (free space, locks, disk errors) and ``helpers.env`` (Colab, secrets, RAM)."""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import disk, env
from helpers.util import (UserError, atomic_path, fault_point, human_bytes, log_dir, partial_path, read_json,
                          read_utf8, sample_digest, sha256_file, tmp_name, tree_bytes, write_json,
                          write_sha256_listing)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ util.files
def test_atomic_path_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "sub" / "out.bin"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".out.bin.tmp-")
        tmp.write_bytes(b"new")
        assert not final.exists()
    assert final.read_bytes() == b"new"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert final.read_bytes() == b"new" and sorted(p.name for p in final.parent.iterdir()) == ["out.bin"]
    with atomic_path(tmp_path / "folder", is_dir=True) as tmp:
        (tmp / "a").write_text("x")
    assert (tmp_path / "folder" / "a").read_text() == "x"


def test_partial_path_is_one_hidden_sibling_per_output_and_every_writer_uses_it(tmp_path):
    from helpers.gguf import GGUFSink
    from helpers.merge.writers import HFSink, PthSink

    for final in (tmp_path / "m.gguf", tmp_path / "merged", tmp_path / "sub" / "a.b.c"):
        work = partial_path(final)
        assert work.parent == final.parent and work.name == f".{final.name}.partial"
        assert work != final and not tmp_name(final).name.startswith(work.name)  # not a temporary file's name
        assert partial_path(str(final)) == work  # a string names the same place
    assert len({partial_path(tmp_path / n) for n in ("m", "m.gguf", ".m", "m.partial")}) == 4  # one per output
    assert HFSink(tmp_path / "hf", job="j").partial == partial_path(tmp_path / "hf")
    assert PthSink(tmp_path / "pth", job="j").partial == partial_path(tmp_path / "pth")
    assert GGUFSink(tmp_path / "m.gguf").partial == partial_path(tmp_path / "m.gguf")


def test_json_and_text_reading_turn_bad_files_into_one_line(tmp_path):
    write_json(tmp_path / "a.json", {"名": 1})
    assert "名" in (tmp_path / "a.json").read_text(encoding="utf-8") and read_json(tmp_path / "a.json") == {"名": 1}
    assert read_json(tmp_path / "none.json", default={}) == {}
    with pytest.raises(UserError, match="not found"):
        read_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")
    (tmp_path / "bom.txt").write_bytes("\ufeff中文".encode())
    assert read_utf8(tmp_path / "bom.txt") == "中文"
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="not UTF-8 text .*byte 0 is 0xff"):
        read_utf8(tmp_path / "bin.txt")


def test_tree_bytes_counts_files_and_folders(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "a").write_bytes(b"12")
    (tmp_path / "d" / "e" / "b").write_bytes(b"345")
    assert tree_bytes(tmp_path / "d") == 5 and tree_bytes(tmp_path / "d" / "a") == 2 and tree_bytes(tmp_path / "x") == 0


# ------------------------------------------------------------------------------------------------ util.hashing
def test_sha256_and_the_listing_agree_with_hashlib_and_sha256sum(tmp_path):
    files = []
    for name, data in (("b.gguf", os.urandom(5 << 20)), ("a.txt", b"abc")):
        (tmp_path / name).write_bytes(data)
        assert sha256_file(tmp_path / name, chunk=1 << 16) == hashlib.sha256(data).hexdigest()
        files.append(tmp_path / name)
    listing = write_sha256_listing(files, tmp_path / "SHA256SUMS")
    assert listing.read_text().splitlines()[0].endswith("  a.txt")
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_sample_digest_sees_small_files_whole_and_large_ones_by_samples(tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"x" * 1000)
    before = sample_digest(small)
    small.write_bytes(b"x" * 999 + b"y")
    assert sample_digest(small) != before
    data = bytearray(os.urandom(20 << 20))
    big.write_bytes(data)
    before = sample_digest(big)
    data[0] ^= 1  # in the header block: seen
    big.write_bytes(data)
    assert sample_digest(big) != before
    data[0] ^= 1
    data[(20 << 20) // 2 + 12345] ^= 1  # between the sampled blocks: not seen, as documented
    big.write_bytes(data)
    assert sample_digest(big) == before


# ------------------------------------------------------------------------------------------------ util.progress, logs
def test_human_bytes():
    assert [human_bytes(n) for n in (5, 2048, 3 << 30, 5 << 40)] == ["5 B", "2.0 KB", "3.0 GB", "5.0 TB"]


def test_log_dir_follows_the_environment_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("HELPERS_LOG_DIR", str(tmp_path / "logs"))
    assert log_dir() == tmp_path / "logs" and (tmp_path / "logs").is_dir()
    monkeypatch.delenv("HELPERS_LOG_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert log_dir() == tmp_path / "cache" / "cllama" / "logs"


def test_a_fault_point_kills_only_where_and_when_it_is_named(monkeypatch):
    monkeypatch.delenv("HELPERS_FAULT_KILL", raising=False)
    fault_point("anywhere")  # does nothing
    code = "from helpers.util import fault_point\nfor i in range(3):\n    print(i, flush=True)\n    fault_point('s')\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "HELPERS_FAULT_KILL": "s:2", "PYTHONPATH": str(ROOT)})
    assert run.returncode == -9 and run.stdout.split() == ["0", "1"]


# ------------------------------------------------------------------------------------------------ disk
def test_free_space_is_read_at_the_nearest_existing_folder(tmp_path):
    assert disk.free_disk_bytes(tmp_path / "not" / "yet") == disk.free_disk_bytes(tmp_path) > 0
    with pytest.raises(UserError, match=r"not enough disk space for the output in .*: need about .*free"):
        disk.require_free_disk(tmp_path, disk.free_disk_bytes(tmp_path) * 2)


def test_stale_temps_are_only_those_of_the_output(tmp_path):
    final = tmp_path / "m.gguf"
    mine = [tmp_path / ".m.gguf.tmp-0123abcd", tmp_path / ".m.gguf.tmp-0123abcd.f16.gguf",
            tmp_path / "..m.gguf.tmp-0123abcd.f16.gguf.tmp-89abcdef"]
    other = [tmp_path / ".n.gguf.tmp-0123abcd", tmp_path / ".m.gguf.tmp-xyz", tmp_path / "m.gguf.tmp-0123abcd"]
    for p in mine + other:
        p.write_bytes(b"")
    assert disk.stale_temps(final) == sorted(mine)


def test_a_second_run_for_the_same_output_fails_at_once_naming_the_first(tmp_path):
    out = tmp_path / "x.gguf"
    (tmp_path / ".x.gguf.tmp-00000000").write_bytes(b"litter of a killed run")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom helpers.disk import output_lock\n"
                               f"with output_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(30)\n"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not (tmp_path / ".x.gguf.tmp-00000000").exists()  # removed once the lock was held
        with pytest.raises(UserError, match=rf"{out} is being written by another run \(pid {holder.pid}"):
            with disk.output_lock(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    with disk.output_lock(out):  # the kernel released the dead holder's lock
        pass
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("exc, kind", [
    (OSError(errno.ENOSPC, "No space left on device"), "full"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only"),
    (OSError(errno.EACCES, "Permission denied"), "denied"),
    (RuntimeError("[enforce fail at inline_container.cc:123] . unexpected pos 64 vs 0"), "full"),
    (ValueError("1024 requested and 512 written"), "full"),
    (OSError(errno.ENOENT, "No such file"), None),
    (ValueError("shape mismatch"), None)])
def test_disk_problems_are_recognised_through_the_libraries_wrappers(exc, kind):
    assert disk.disk_problem(exc) == kind
    message = disk.disk_error_message(exc, folder="/tmp", needed=1 << 30)
    assert (message is None) == (kind is None)
    if kind == "full":
        assert "disk is full" in message and "1.0 GB" in message


def test_disk_errors_become_one_line_and_others_pass(tmp_path):
    with pytest.raises(UserError, match="no space to write the output in"):
        with disk.disk_errors(tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(KeyError), disk.disk_errors(tmp_path):
        raise KeyError("not a disk problem")


# ------------------------------------------------------------------------------------------------ env
def test_colab_is_detected_by_its_module_or_environment(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    for key in [k for k in os.environ if k.startswith("COLAB_")]:
        monkeypatch.delenv(key)
    assert not env.in_colab()
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20260101")
    assert env.in_colab()


def test_secrets_come_from_the_environment_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    for key in [k for k in os.environ if k.startswith("COLAB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    assert env.get_secret("HF_TOKEN") == "hf_dummy"
    monkeypatch.setenv("HF_TOKEN", "")
    assert env.get_secret("HF_TOKEN") is None


def test_available_ram_is_what_the_kernel_reports(monkeypatch):
    ram = env.available_ram_bytes()
    meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()}
    assert ram is not None and abs(ram - meminfo["MemAvailable"]) < max(256 << 20, meminfo["MemAvailable"] // 10)
    monkeypatch.setitem(sys.modules, "psutil", None)  # without psutil: /proc/meminfo itself
    assert abs(env.available_ram_bytes() - meminfo["MemAvailable"]) < 256 << 20

