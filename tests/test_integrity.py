"""Checking downloads against the hub's digests (helpers.hub.integrity) and the retry and error rules of a failing mirror
(helpers.hub.fetch), on a hub cache laid out by hand and on synthetic HTTP errors: no server, milliseconds each.
Through the hub twin and a fault-injecting proxy: tests/test_mirror_faults.py."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.hub import fetch as hubfetch
from helpers.hub.fetch import Remote, quiet_hub_logs, retrying, transport_problem
from helpers.hub.integrity import (RECORD_DIR, DamagedDownload, Digest, Verifier, check_file, hash_file, is_verified,
                               remove_cached)
from helpers.util import UserError

REMOTE = Remote("http://mirror.test", None, Path("/nonexistent"))


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def cache_file(root: Path, name: str, data: bytes, *, lfs: bool = True, named: str | None = None,
               commit: str = "c" * 40) -> Path:
    """``name`` in a hub-cache layout: the blob named by its digest (or ``named``; an existing blob is kept), linked
    from a snapshot."""
    repo = root / "hub" / "models--org--repo"
    blob = repo / "blobs" / (named or (hashlib.sha256(data).hexdigest() if lfs else git_blob_id(data)))
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        blob.write_bytes(data)
    link = repo / "snapshots" / commit / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


# ------------------------------------------------------------------------------------------------ digests
def test_the_digests_are_the_ones_git_and_sha256sum_compute(tmp_path):
    f = tmp_path / "config.json"
    f.write_bytes(b'{"hidden_size": 4096}\n' * 1000)
    assert hash_file(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    if shutil.which("git"):
        git = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True)
        assert hash_file(f, "git-sha1") == git.stdout.strip()
    assert hash_file(f, "git-sha1") == git_blob_id(f.read_bytes())
    assert Digest.named("a" * 64) == Digest("sha256", "a" * 64) and Digest.named("B" * 40).algo == "git-sha1"
    assert Digest.named("model.safetensors") is None and Digest.named("a" * 63) is None
    with pytest.raises(ValueError):
        Digest("sha256", "a" * 40)


# ------------------------------------------------------------------------------------------------ check_file
def test_a_good_file_is_hashed_once_and_again_when_its_blob_is_rewritten(tmp_path, monkeypatch):
    link = cache_file(tmp_path, "adapter_model.safetensors", b"weights" * 1000)
    assert not is_verified(link)
    assert check_file(link, repo_id="org/repo", name=link.name, endpoint="e") is True
    assert is_verified(link) and check_file(link, repo_id="org/repo", name=link.name, endpoint="e") is False
    blob = link.resolve()
    os.utime(blob, ns=(1, 1))  # downloaded again: a new blob, same name
    assert not is_verified(link) and check_file(link, repo_id="org/repo", name=link.name, endpoint="e") is True
    small = cache_file(tmp_path, "config.json", b"{}", lfs=False)
    assert check_file(small, repo_id="org/repo", name="config.json", endpoint="e", expected=git_blob_id(b"{}"))
    assert (blob.parent.parent / RECORD_DIR / blob.name).is_file()
    monkeypatch.setenv("HELPERS_VERIFY_SHA256", "0")
    bad = cache_file(tmp_path, "other.bin", b"x", named="0" * 64)
    assert check_file(bad, repo_id="org/repo", name="other.bin", endpoint="e") is False  # checks off: left alone


def test_a_damaged_file_is_one_error_and_only_its_blob_leaves_the_cache(tmp_path):
    good = cache_file(tmp_path, "tokenizer.model", b"pieces")
    want = hashlib.sha256(b"weights").hexdigest()
    bad = cache_file(tmp_path, "adapter_model.safetensors", b"weighta", named=want)  # one byte changed
    also = cache_file(tmp_path, "adapter_model.safetensors", b"", named=want, commit="d" * 40)  # same blob, older
    with pytest.raises(DamagedDownload) as err:
        check_file(bad, repo_id="org/repo", name=bad.name, endpoint="http://mirror.test")
    msg = str(err.value)
    assert "\n" not in msg and want in msg and hashlib.sha256(b"weighta").hexdigest() in msg
    assert "org/repo: adapter_model.safetensors downloaded from http://mirror.test" in msg and "run again" in msg
    assert err.value.expected == Digest("sha256", want)
    blobs = good.resolve().parent
    assert sorted(p.name for p in blobs.iterdir()) == [good.resolve().name]
    assert not bad.is_symlink() and not also.is_symlink() and good.read_bytes() == b"pieces"


def test_the_listing_digest_must_agree_too(tmp_path):
    link = cache_file(tmp_path, "w.bin", b"abc")
    with pytest.raises(DamagedDownload, match="the hub lists " + "1" * 64):
        check_file(link, repo_id="org/repo", name="w.bin", endpoint="e", expected="1" * 64, fresh=False)
    assert not link.exists()


def test_a_blob_not_named_by_a_digest_is_checked_against_the_listing(tmp_path):
    """A mirror whose ETag is not the hub's digest: the listing's digest decides; with neither, no trust."""
    link = cache_file(tmp_path, "w.bin", b"abc", named="etag-from-a-mirror")
    assert check_file(link, repo_id="org/repo", name="w.bin", endpoint="e",
                      expected=hashlib.sha256(b"abc").hexdigest()) is True
    other = cache_file(tmp_path, "v.bin", b"abc", named="another-etag")
    with pytest.raises(UserError, match="cannot be checked"):
        check_file(other, repo_id="org/repo", name="v.bin", endpoint="e")
    assert other.read_bytes() == b"abc"


def test_a_users_own_file_is_never_hashed_or_removed(tmp_path):
    own = tmp_path / "mine" / "adapter_model.safetensors"
    own.parent.mkdir()
    own.write_bytes(b"mine")
    assert check_file(own, repo_id="org/repo", name=own.name, endpoint="e", expected="0" * 64) is False
    link = tmp_path / "link.safetensors"
    link.symlink_to(own)  # a link, but not into a hub cache's blobs folder
    assert check_file(link, repo_id="org/repo", name=own.name, endpoint="e", expected="0" * 64) is False
    assert own.read_bytes() == b"mine"


def test_the_verifier_checks_everything_before_reporting_the_first_damage(tmp_path):
    files = [cache_file(tmp_path, f"f{i}", bytes([i]) * 100_000) for i in range(4)]
    damaged = cache_file(tmp_path, "f9", b"y", named=hashlib.sha256(b"x").hexdigest())
    with Verifier(endpoint="e") as v:
        for f in [files[0], damaged, *files[1:]]:
            v.submit(f, repo_id="org/repo", name=f.name)
        with pytest.raises(DamagedDownload, match="f9"):
            v.wait()
    assert all(is_verified(f) for f in files) and not damaged.exists()
    with Verifier(endpoint="e") as v:
        for f in files:
            v.submit(f, repo_id="org/repo", name=f.name)
        assert v.wait() == 0  # all recorded: nothing hashed again


def test_remove_cached_takes_every_link_to_the_blob(tmp_path):
    a = cache_file(tmp_path, "x.bin", b"data")
    b = cache_file(tmp_path, "x.bin", b"data", commit="d" * 40)
    keep = cache_file(tmp_path, "y.bin", b"other")
    remove_cached(a)
    assert not a.is_symlink() and not b.is_symlink() and keep.read_bytes() == b"other"


# ------------------------------------------------------------------------------------------------ retries
def http_error(status: int, retry_after: str | None = None):
    httpx2 = pytest.importorskip("httpx2")
    from huggingface_hub.errors import HfHubHTTPError

    headers = {"retry-after": retry_after} if retry_after else {}
    response = httpx2.Response(status, headers=headers, request=httpx2.Request("GET", "http://mirror.test/x"))
    return HfHubHTTPError(f"{status} error", response=response)


@pytest.fixture
def sleeps(monkeypatch):
    waited: list[float] = []
    monkeypatch.setattr(hubfetch.time, "sleep", waited.append)
    return waited


def test_503_is_retried_with_exponential_backoff_then_one_line(sleeps, capsys):
    calls = []

    def always_503():
        calls.append(1)
        raise http_error(503)

    with pytest.raises(UserError) as err:
        retrying(always_503, remote=REMOTE, what="org/repo/w.bin")
    assert len(calls) == 6 and sleeps == [1, 2, 4, 8, 8]
    msg = str(err.value)
    assert "http://mirror.test answered 503 Service Unavailable to org/repo/w.bin" in msg and "HF_ENDPOINT" in msg
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == 5 and all(n.startswith("note: http://mirror.test answered 503") for n in notes)


def test_retry_after_is_honoured_and_other_errors_are_not_retried(sleeps):
    answers = iter([http_error(429, "3"), http_error(429, "600"), "ok"])

    def flaky():
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    assert retrying(flaky, remote=REMOTE, what="w") == "ok" and sleeps == [3, 60]  # capped at a minute
    with pytest.raises(Exception, match="404"):
        retrying(lambda: (_ for _ in ()).throw(http_error(404)), remote=REMOTE, what="w")
    with pytest.raises(UserError, match="429"):  # a status the caller leaves to the library: not retried again
        retrying(lambda: (_ for _ in ()).throw(http_error(429)), remote=REMOTE, what="w", retries=0)
    assert sleeps == [3, 60]


def test_timeouts_and_broken_connections_name_what_to_change(monkeypatch):
    httpx2 = pytest.importorskip("httpx2")
    head = httpx2.ReadTimeout("timed out", request=httpx2.Request("HEAD", "http://mirror.test/x"))
    get = httpx2.ReadTimeout("timed out", request=httpx2.Request("GET", "http://mirror.test/x"))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "7")
    assert "within 7 s (HF_HUB_ETAG_TIMEOUT)" in transport_problem(head, remote=REMOTE, what="w")
    assert "HF_HUB_DOWNLOAD_TIMEOUT" in transport_problem(get, remote=REMOTE, what="w")
    wrapped = OSError("could not locate the file")
    wrapped.__cause__ = head  # huggingface_hub raises its own error from the timeout
    assert "HF_HUB_ETAG_TIMEOUT" in transport_problem(wrapped, remote=REMOTE, what="w")
    assert "kept breaking" in transport_problem(httpx2.RemoteProtocolError("peer closed"), remote=REMOTE, what="w")
    assert transport_problem(httpx2.ConnectError("refused"), remote=REMOTE, what="w") is None  # helpers.hub's case
    assert transport_problem(ValueError("x"), remote=REMOTE, what="w") is None
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "soon")
    with pytest.raises(UserError, match="HF_HUB_ETAG_TIMEOUT"):
        hubfetch.head_timeout()
    monkeypatch.delenv("HF_HUB_ETAG_TIMEOUT")
    assert hubfetch.head_timeout() == hubfetch.SLOW_HEAD_TIMEOUT


def test_the_librarys_retry_lines_are_silenced_and_restored():
    """The public verbosity setting reaches the modules that log retries; fails if huggingface_hub moves them."""
    import huggingface_hub.file_download  # noqa: F401 - the modules whose warnings are silenced
    from huggingface_hub.utils import logging as hub_logging

    noisy = [logging.getLogger(n) for n in ("huggingface_hub.file_download", "huggingface_hub.utils._http")]
    assert all(n.name in sys.modules for n in noisy)
    before = hub_logging.get_verbosity()
    with quiet_hub_logs():
        assert not any(n.isEnabledFor(logging.WARNING) for n in noisy)
    assert hub_logging.get_verbosity() == before
    assert all(n.isEnabledFor(before) for n in noisy)


# ------------------------------------------------------------------------------------------------ hashed as written
def test_a_file_is_hashed_while_it_is_written(tmp_path):
    import threading
    import time

    from helpers.hub.integrity import GrowingFileHash

    part, final = tmp_path / "blob.incomplete", tmp_path / "blob"
    data = os.urandom(3 << 20)

    def write() -> None:
        with open(part, "wb") as f:
            for i in range(0, len(data), 1 << 18):
                f.write(data[i:i + (1 << 18)])
                f.flush()
                time.sleep(0.005)
        os.replace(part, final)  # the download's rename into place: the same file

    follower = GrowingFileHash(lambda: part if part.exists() else None)
    writer = threading.Thread(target=write)
    writer.start()
    writer.join()
    assert follower.finish(final) == hashlib.sha256(data).hexdigest()
    other = tmp_path / "other"
    other.write_bytes(data)
    follower = GrowingFileHash(lambda: final)
    time.sleep(0.1)
    assert follower.finish(other) is None  # not the file that was read: no digest vouched for
    follower = GrowingFileHash(lambda: None, wait=0.1)
    assert follower.finish(final) is None  # never found
