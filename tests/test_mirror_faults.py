"""A failing mirror, through the hub twin behind a fault-injecting proxy (tests/faultproxy.py): a byte changed on the
way, a connection dropped mid-file, 503 / 429 answers, a HEAD that does not come back. Each case runs the merge as
a user does (``python -m helpers merge`` from hub ids, ``HF_ENDPOINT`` at the proxy) and checks the error contract
(one ``error:`` line naming what to change), that nothing is left under a final name (no output, no partial, no
blob in the hub cache that does not match its digest), and that a rerun through a healthy mirror gives the bytes of
a clean merge.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import pytest

from faultproxy import Fault, FaultProxy
from faults import assert_error_line, cli, hidden
from helpers.hub.integrity import DamagedDownload, Digest, hash_file

BASE, LORA = "meta-llama/Llama-2-7b-hf", "hfl/chinese-alpaca-2-lora-7b"
ADAPTER = "adapter_model.safetensors"
SHARD = "model-00001-of-00002.safetensors"


def merge_args(out: Path) -> list:
    return ["merge", "--base", BASE, "--lora", LORA, "--out", out, "--format", "gguf", "--outtype", "q8_0"]


def env_for(endpoint: str, home: Path, **extra: str) -> dict[str, str]:
    """A fresh runtime pointed at ``endpoint``: empty hub cache, online, no local mirror, no progress bars."""
    import hubtwin

    return {"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "HELPERS_LOCAL_MODELS": "",
            "NO_PROXY": hubtwin.no_proxy_for_loopback(), "HF_HUB_DISABLE_PROGRESS_BARS": "1", **extra}


@pytest.fixture(scope="module")
def proxy(hub_twin):
    p = FaultProxy(hub_twin.endpoint)
    yield p
    p.stop()


@pytest.fixture
def mirror(proxy):
    """The proxy with no rules and an empty log."""
    proxy.clear()
    yield proxy
    proxy.clear()


@pytest.fixture(scope="module")
def clean(hub_twin, tmp_path_factory) -> bytes:
    """The merge's bytes through the twin itself (no proxy), into an empty cache."""
    work = tmp_path_factory.mktemp("clean")
    r = cli(*merge_args(work / "m.gguf"), env=env_for(hub_twin.endpoint, work / "home"))
    assert r.returncode == 0, r.stderr
    return (work / "m.gguf").read_bytes()


def sign_byte(path: Path) -> int:
    """The offset of the byte holding the sign of the middle value of a safetensors file's largest tensor: XORed
    with 0x80 it negates that one weight, a change every output type keeps and that makes no NaN."""
    import json

    raw = path.read_bytes()
    header = int.from_bytes(raw[:8], "little")
    tensors = {k: v for k, v in json.loads(raw[8:8 + header]).items() if k != "__metadata__"}
    begin, end = max((v["data_offsets"] for v in tensors.values()), key=lambda o: o[1] - o[0])
    size = {"F32": 4, "F16": 2, "BF16": 2}[next(v["dtype"] for v in tensors.values() if v["data_offsets"] == [begin, end])]
    middle = (end - begin) // size // 2
    return 8 + header + begin + middle * size + size - 1  # little-endian: the last byte holds the sign


def bad_blobs(home: Path) -> list[str]:
    """Blobs in the hub cache whose bytes do not match the digest they are named by, and leftover temporaries."""
    wrong = []
    for blob in (home / "hub").glob("models--*/blobs/*"):
        digest = Digest.named(blob.name)
        if digest is None or hash_file(blob, digest.algo) != digest.hex:
            wrong.append(blob.name)
    return wrong


def assert_nothing_final(out: Path, home: Path) -> None:
    assert not out.exists() and hidden(out.parent) == [], hidden(out.parent)
    assert bad_blobs(home) == []


# ------------------------------------------------------------------------------------------------ a damaged byte
def test_a_byte_changed_on_the_way_is_refused_and_the_rerun_is_a_clean_merge(mirror, demo, clean, tmp_path):
    adapter = demo / "chinese-alpaca-2-lora-7b" / ADAPTER
    want = hashlib.sha256(adapter.read_bytes()).hexdigest()
    mirror.add(Fault("corrupt", path=f"{LORA}/resolve/.*/{ADAPTER}", offset=sign_byte(adapter), xor=0x80))
    out, home = tmp_path / "m.gguf", tmp_path / "home"
    r = cli(*merge_args(out), env=env_for(mirror.endpoint, home))
    line = assert_error_line(r, ADAPTER, want, mirror.endpoint)
    got = line.split(" has SHA256 ")[1].split(",")[0]
    assert len(got) == 64 and got != want
    assert_nothing_final(out, home)
    assert not list((home / "hub").glob(f"models--*/blobs/{want}"))  # the bad copy left the cache
    r = cli(*merge_args(out), env=env_for(mirror.endpoint, home))  # the rule was used up: a healthy mirror
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == clean



def test_an_older_unchecked_download_is_verified_before_already_merged(mirror, demo, clean, tmp_path):
    """What a run before this check (or with it off) left behind: a damaged LoRA in the cache and a wrong model that
    records the same job. The rerun verifies the cached file before saying "already merged", removes it and the
    model merged from it, and the next run gives the clean merge's bytes."""
    adapter = demo / "chinese-alpaca-2-lora-7b" / ADAPTER
    want = hashlib.sha256(adapter.read_bytes()).hexdigest()
    mirror.add(Fault("corrupt", path=f"{LORA}/resolve/.*/{ADAPTER}", offset=sign_byte(adapter), xor=0x80))
    out, home = tmp_path / "m.gguf", tmp_path / "home"
    r = cli(*merge_args(out), env=env_for(mirror.endpoint, home, HELPERS_VERIFY_SHA256="0"))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() != clean  # silently wrong: what the check is for
    r = cli(*merge_args(out), env=env_for(mirror.endpoint, home))
    line = assert_error_line(r, ADAPTER, want, "in the hub cache", mirror.endpoint)
    assert f"{out} was merged from that damaged copy and has been removed" in line
    assert_nothing_final(out, home)
    assert not out.with_name(out.stem + ".Modelfile").exists()
    r = cli(*merge_args(out), env=env_for(mirror.endpoint, home))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == clean
    r = cli(*merge_args(out), env=env_for(mirror.endpoint, home))
    assert r.returncode == 0 and "already merged" in r.stdout, r.stdout


# ------------------------------------------------------------------------------------------ dropped connections
WHOLE_OR_RESUMED = r"^$|^bytes=[1-9]"  # a download or its resumption, not the planner's header reads (bytes=0-...)


def test_a_dropped_connection_is_resumed_in_the_same_run(mirror, clean, tmp_path):
    """The CLI recovers from two drops of a shard; huggingface_hub asks again for what it had not written yet (it
    writes 10 MB chunks, so for these small files that is the whole file: the next test shows the Range)."""
    mirror.add(Fault("drop", path=f"{BASE}/resolve/.*/{SHARD}", range=WHOLE_OR_RESUMED, after_bytes=300_000, times=2))
    out, home = tmp_path / "m.gguf", tmp_path / "home"
    r = cli(*merge_args(out), env=env_for(mirror.endpoint, home))
    assert r.returncode == 0, r.stderr
    gets = [e.fault for e in mirror.requests("GET", f"{BASE}/resolve/.*/{SHARD}") if re.search(WHOLE_OR_RESUMED,
                                                                                              e.range)]
    assert gets == ["drop", "drop", ""]
    assert out.read_bytes() == clean and bad_blobs(home) == []


def test_a_resumed_download_asks_only_for_the_rest(mirror, hub_env, monkeypatch):
    from huggingface_hub import constants

    from helpers.hub import resolve_model

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)  # written to disk 64 KiB at a time
    monkeypatch.setenv("HF_ENDPOINT", mirror.endpoint)
    mirror.add(Fault("drop", path=f"{BASE}/resolve/.*/{SHARD}", range=WHOLE_OR_RESUMED, after_bytes=300_000, times=2))
    folder = resolve_model(BASE, what="base model")
    gets = [e.range for e in mirror.requests("GET", f"{BASE}/resolve/.*/{SHARD}") if re.search(WHOLE_OR_RESUMED,
                                                                                               e.range)]
    done = 300_000 // (1 << 16) * (1 << 16)  # the whole chunks that arrived before each drop
    assert gets == ["", f"bytes={done}-", f"bytes={2 * done}-"]
    assert bad_blobs(Path(os.environ["HF_HOME"])) == [] and (folder / SHARD).is_file()


def test_a_run_cut_short_keeps_its_finished_files_for_the_rerun(mirror, hub_twin, clean, tmp_path):
    """A file whose connection breaks at once, every time: the run ends in one line after huggingface_hub's own
    retries; every other file finished, and the rerun downloads only the missing one (the twin's access log)."""
    second = SHARD.replace("00001", "00002")
    mirror.add(Fault("drop", path=f"{BASE}/resolve/.*/{second}", range=WHOLE_OR_RESUMED, after_bytes=0, times=-1))
    out, home = tmp_path / "m.gguf", tmp_path / "home"
    r = cli(*merge_args(out), env=env_for(mirror.endpoint, home))
    assert_error_line(r, "kept breaking", second, mirror.endpoint, "run again", "HF_ENDPOINT")
    assert_nothing_final(out, home)
    mirror.clear()
    since = hub_twin.log_size()
    r = cli(*merge_args(out), env=env_for(mirror.endpoint, home))
    assert r.returncode == 0, r.stderr
    fetched = [f for f in hub_twin.requests(since) if f.method == "GET" and f.status == 200 and f.file]
    assert [f.file for f in fetched] == [(BASE, second)]
    assert out.read_bytes() == clean


# ------------------------------------------------------------------------------------------ hashed as written
@pytest.fixture
def followed(mirror, hub_env, monkeypatch):
    """In-process downloads through the proxy, every LFS file hashed as it is written (64 KiB chunks)."""
    from huggingface_hub import constants

    from helpers.hub import fetch as hubfetch

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    monkeypatch.setattr(hubfetch, "FOLLOW_MIN_BYTES", 0)
    monkeypatch.setenv("HF_ENDPOINT", mirror.endpoint)
    hashed: list[str] = []
    real = hubfetch.check_file

    def check(path, **kw):
        hashed.append(Path(path).name if not kw.get("known") else "")
        return real(path, **kw)

    monkeypatch.setattr(hubfetch, "check_file", check)
    monkeypatch.setattr(hubfetch.Verifier, "submit", lambda self, path, **kw: self._pending.append(
        self._pool.submit(check, path, endpoint=self.endpoint, **kw)))
    return hashed


def test_a_download_hashed_as_it_is_written_needs_no_second_read(followed, mirror, demo):
    from helpers.hub import resolve_model
    from helpers.hub.integrity import is_verified

    mirror.add(Fault("drop", path=f"{LORA}/resolve/.*/{ADAPTER}", range=WHOLE_OR_RESUMED, after_bytes=300_000))
    folder = resolve_model(LORA, what="LoRA")  # dropped once and resumed (appended): still one front-to-back write
    assert is_verified(folder / ADAPTER) and is_verified(folder / "tokenizer.model")
    lfs = {ADAPTER, "tokenizer.model"}
    assert not lfs & set(followed)  # their digests came from the download itself, not from reading them again
    assert (folder / ADAPTER).read_bytes() == (demo / "chinese-alpaca-2-lora-7b" / ADAPTER).read_bytes()


def test_a_file_rewritten_during_its_download_is_hashed_again(followed, mirror, demo):
    """The dangerous case for hashing as it is written: the first attempt delivers good bytes and breaks, the server
    ignores the resume's Range and sends the whole file again, damaged at a byte that was already hashed. The file is
    rewritten from the start, so its digest is taken again from the finished file, and the damage is caught."""
    from helpers.hub import resolve_model

    path = f"{LORA}/resolve/.*/{ADAPTER}"
    mirror.add(Fault("drop", path=path, range="^$", after_bytes=300_000))
    mirror.add(Fault("corrupt", path=path, range="^bytes=[1-9]", offset=1000, xor=0x80, ignore_range=True))
    with pytest.raises(DamagedDownload, match=ADAPTER):
        resolve_model(LORA, what="LoRA")
    assert ADAPTER in followed  # read again after the download, not trusted from the follower
    assert [(e.fault, e.status) for e in mirror.requests("GET", path) if not e.range.startswith("bytes=0-")][:2] == [
        ("drop", 200), ("corrupt", 200)]


# ------------------------------------------------------------------------------------------ 503, 429, a slow HEAD
def test_503_is_retried_with_backoff(mirror, clean, tmp_path):
    """A 503 to the file listing (huggingface_hub's own backoff) and to a download (ours, with a note): waited for,
    1 s then 2 s, and the merge goes on."""
    listing, shard = f"/api/models/{BASE}/tree", f"{BASE}/resolve/.*/{SHARD}"
    mirror.add(Fault("status", status=503, path=listing, times=2))
    mirror.add(Fault("status", status=503, path=shard, range="^$", times=2))
    out, home = tmp_path / "m.gguf", tmp_path / "home"
    r = cli(*merge_args(out), env=env_for(mirror.endpoint, home))
    assert r.returncode == 0, r.stderr
    for tries in (mirror.requests("GET", listing), [e for e in mirror.requests("GET", shard) if not e.range]):
        assert [e.status for e in tries[:2]] == [503, 503] and tries[2].status != 503, tries
        waits = [b.time - a.time for a, b in zip(tries, tries[1:3])]
        assert waits[0] >= 0.9 and waits[1] >= 1.9, waits  # 1 s, then 2 s
    notes = [line for line in r.stderr.splitlines() if "503" in line]
    assert len(notes) == 2 and all(line.startswith("note: ") and SHARD in line for line in notes), r.stderr
    assert out.read_bytes() == clean


def test_a_mirror_that_keeps_answering_503_is_one_error_line(mirror, tmp_path):
    mirror.add(Fault("status", status=503, method="*", times=-1))
    out, home = tmp_path / "m.gguf", tmp_path / "home"
    t0 = time.monotonic()
    r = cli(*merge_args(out), env=env_for(mirror.endpoint, home))
    assert_error_line(r, mirror.endpoint, "503", "HF_ENDPOINT", "5 retries")
    assert time.monotonic() - t0 >= 1 + 2 + 4 + 8 + 8  # the backoff was waited, and it was bounded:
    tries = [e for e in mirror.requests("GET", "/api/models/") if "agent" not in e.path]
    assert len(tries) == 6, [e.path for e in tries]
    assert_nothing_final(out, home)


def test_429_with_retry_after_is_waited_for(mirror, clean, tmp_path):
    path = f"{LORA}/resolve/.*/{ADAPTER}"
    mirror.add(Fault("status", status=429, retry_after=1, path=path, range="^$", times=2))
    out, home = tmp_path / "m.gguf", tmp_path / "home"
    r = cli(*merge_args(out), env=env_for(mirror.endpoint, home))
    assert r.returncode == 0, r.stderr
    tries = [e for e in mirror.requests("GET", path) if not e.range]  # the download, not the planner's header read
    assert [e.status for e in tries] == [429, 429, 200]
    assert all(b.time - a.time >= 1.9 for a, b in zip(tries, tries[1:]))  # Retry-After: 1, plus a second
    assert out.read_bytes() == clean


def test_a_head_that_does_not_come_back_names_hf_hub_etag_timeout(mirror, tmp_path):
    mirror.add(Fault("delay", method="HEAD", path=f"{LORA}/resolve/.*/{ADAPTER}", seconds=5, times=-1))
    out, home = tmp_path / "m.gguf", tmp_path / "home"
    r = cli(*merge_args(out), env=env_for(mirror.endpoint, home, HF_HUB_ETAG_TIMEOUT="1"))
    assert_error_line(r, "HF_HUB_ETAG_TIMEOUT", mirror.endpoint, ADAPTER, "within 1 s")
    heads = mirror.requests("HEAD", f"{LORA}/resolve/.*/{ADAPTER}")
    assert len(heads) == 6  # huggingface_hub's own retries, bounded
    assert_nothing_final(out, home)

