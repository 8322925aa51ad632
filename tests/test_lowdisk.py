"""Low-disk mode through the hub twin: the base fetched one shard at a time and deleted once merged, the same
tensors as a full download, resumable, chosen automatically when only it fits, and never deleting a user's file."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers.merge import MergeOptions, Recipe, merge
from helpers.merge.stream import INTERRUPT_ENV
from helpers.util import UserError

BASE, LORA = "meta-llama/Llama-2-7b-hf", "hfl/chinese-alpaca-2-lora-7b"
SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def tensors(path: Path) -> dict:
    import gguf

    return {t.name: bytes(t.data) for t in gguf.GGUFReader(str(path)).tensors}


@pytest.fixture
def reference(demo, tmp_path_factory):
    """The same merge from the local demo folders (full inputs on disk)."""
    out = tmp_path_factory.mktemp("ref") / "m.gguf"
    merge(Recipe(demo / "Llama-2-7b-hf", [demo / "chinese-alpaca-2-lora-7b"]), out,
          MergeOptions(fmt="gguf", outtype="q4_k_m", progress=False))
    return tensors(out)


@pytest.fixture
def shards_seen(monkeypatch):
    """Each shard fetch (not the LoRA's, which a streamed base fetches too), with the shards present in the hub cache
    at that moment."""
    from helpers.checkpoint import streamed
    from helpers.hub import hub_cache_dir

    seen: list[tuple[str, list[str]]] = []
    real = streamed.fetch_file

    def fetch(repo_id, filename, **kw):
        cached = sorted(p.name for p in hub_cache_dir().rglob("model-*.safetensors") if p.exists())
        if filename.startswith("model-"):
            seen.append((filename, cached))
        return real(repo_id, filename, **kw)

    monkeypatch.setattr(streamed, "fetch_file", fetch)
    return seen


def cached_shards() -> list[str]:
    from helpers.hub import hub_cache_dir

    return sorted(p.name for p in hub_cache_dir().rglob("model-*.safetensors") if p.exists())


def test_low_disk_merge_equals_a_full_download(hub_env, reference, shards_seen, tmp_path, capsys):
    since = hub_env.log_size()
    res = merge(Recipe(BASE, [LORA]), tmp_path / "m.gguf",
                MergeOptions(fmt="gguf", outtype="q4_k_m", low_disk=True, progress=False))
    assert tensors(res.outputs[0]) == reference
    assert [f for f, _ in shards_seen] == SHARDS  # each shard fetched once, in order
    assert all(cached == [] for _, cached in shards_seen)  # the previous one was gone before the next came
    assert cached_shards() == []  # and the last one once the merge finished
    whole = [r.file[1] for r in hub_env.requests(since) if r.method == "GET" and r.status == 200 and r.file
             and r.file[0] == BASE and r.file[1] in SHARDS]
    assert whole == SHARDS  # each downloaded once (besides range requests for the headers)
    assert "plan:" in capsys.readouterr().out


def test_low_disk_merge_resumes_without_fetching_finished_shards(hub_env, reference, shards_seen, tmp_path,
                                                                 monkeypatch):
    out = tmp_path / "m.gguf"
    monkeypatch.setenv(INTERRUPT_ENV, "15")  # past the first shard's tensors
    with pytest.raises(KeyboardInterrupt):
        merge(Recipe(BASE, [LORA]), out, MergeOptions(fmt="gguf", outtype="q4_k_m", low_disk=True, progress=False))
    assert not out.exists() and cached_shards() == []  # an interruption releases the shard in use too
    monkeypatch.delenv(INTERRUPT_ENV)
    shards_seen.clear()
    res = merge(Recipe(BASE, [LORA]), out, MergeOptions(fmt="gguf", outtype="q4_k_m", low_disk=True, progress=False))
    assert res.tensors_resumed == 15
    assert [f for f, _ in shards_seen] == SHARDS[1:]  # the first shard's tensors were all done
    assert tensors(out) == reference


def test_low_disk_is_chosen_when_only_it_fits(hub_env, reference, shards_seen, tmp_path, monkeypatch, capsys):
    from helpers.merge import planner, plan_resources
    from helpers.merge.options import MergeOptions

    plan = plan_resources(BASE, [LORA], options=MergeOptions(fmt="gguf", outtype="q4_k_m"), out=tmp_path / "m.gguf")
    assert plan.peak_disk_low < plan.peak_disk
    monkeypatch.setattr(planner, "free_disk_bytes", lambda path: (plan.peak_disk_low + plan.peak_disk) // 2)
    res = merge(Recipe(BASE, [LORA]), tmp_path / "m.gguf", MergeOptions(fmt="gguf", outtype="q4_k_m", progress=False))
    assert "low-disk mode" in capsys.readouterr().out
    assert [f for f, _ in shards_seen] == SHARDS and tensors(res.outputs[0]) == reference


def test_what_does_not_fit_is_refused_before_any_download(hub_env, tmp_path, monkeypatch):
    from helpers.merge import planner

    since = hub_env.log_size()
    monkeypatch.setattr(planner, "free_disk_bytes", lambda path: 1 << 20)
    with pytest.raises(UserError) as e:
        merge(Recipe(BASE, [LORA]), tmp_path / "out" / "m.gguf",
              MergeOptions(fmt="gguf", outtype="f16", progress=False))
    message = str(e.value)
    assert "\n" not in message and "disk" in message and "free" in message
    assert "smaller type" in message or "another output folder" in message
    whole = [r.file[1] for r in hub_env.requests(since) if r.method == "GET" and r.status == 200 and r.file]
    assert [f for f in whole if f.endswith((".safetensors", ".bin"))] == []  # headers only (206), no weights
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_corrupted_shard_is_one_error_line_and_leaves_the_cache_consistent(hub_env, tmp_path, monkeypatch):
    from helpers.checkpoint import streamed

    real = streamed.fetch_file

    def damaged(repo_id, filename, **kw):
        path = real(repo_id, filename, **kw)
        if filename == SHARDS[1]:
            blob = path.resolve()
            blob.write_bytes(blob.read_bytes()[:1000])  # a download cut short
        return path

    monkeypatch.setattr(streamed, "fetch_file", damaged)
    out = tmp_path / "m.gguf"
    with pytest.raises(UserError, match="truncated or corrupt|does not hold"):
        merge(Recipe(BASE, [LORA]), out, MergeOptions(fmt="gguf", outtype="q4_k_m", low_disk=True, progress=False))
    assert not out.exists()
    assert cached_shards() == []  # the damaged copy is not left in the cache for the next run to trust
    monkeypatch.setattr(streamed, "fetch_file", real)
    merge(Recipe(BASE, [LORA]), out,
          MergeOptions(fmt="gguf", outtype="q4_k_m", low_disk=True, progress=False))  # a rerun recovers
    assert out.is_file()


def test_a_local_base_is_never_deleted(demo, tmp_path, capsys):
    import shutil

    base = shutil.copytree(demo / "Llama-2-7b-hf", tmp_path / "base")
    before = sorted(p.name for p in base.iterdir())
    merge(Recipe(base, [demo / "chinese-alpaca-2-lora-7b"]), tmp_path / "m.gguf",
          MergeOptions(fmt="gguf", outtype="q8_0", low_disk=True, progress=False))
    assert sorted(p.name for p in base.iterdir()) == before
    assert "already on this machine" in capsys.readouterr().out


def test_forget_file_only_touches_the_hub_cache(tmp_path, monkeypatch):
    from helpers.hub import forget_file

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    mine = tmp_path / "my-model.safetensors"
    mine.write_bytes(b"x")
    with pytest.raises(ValueError, match="not in the hub cache"):
        forget_file(mine)
    assert mine.is_file()
