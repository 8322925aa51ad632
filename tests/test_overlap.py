"""A hub merge reads the base as its shards arrive (the next shards download while the ones here merge), through the
hub twin: a base in four shards (the demo's Llama-2 stand-in cut into four, so low-disk mode holds two at a time)
and the Alpaca-2 LoRA. The output has the local merge's tensors and the same bytes however it was made (normal,
low-disk, from a warm cache); a kill in the middle resumes; a shard is merged while it arrives, and what was made
from it before its check passed is not resumed from; a shard damaged on the way stops the merge in one line and
leaves nothing behind."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from faultproxy import Fault, FaultProxy
from faults import FAULT_ENV, assert_error_line, cli, hidden
from helpers.merge import MergeOptions, Recipe, merge
from test_mirror_faults import bad_blobs, sign_byte

BASE4, LORA = "cllama-tests/llama-2-four-shards", "hfl/chinese-alpaca-2-lora-7b"
SHARDS = [f"model-0000{k}-of-00004.safetensors" for k in range(1, 5)]
Q4 = MergeOptions(fmt="gguf", outtype="q4_k_m", progress=False)


def tensors(path: Path) -> dict:
    import gguf

    return {t.name: bytes(t.data) for t in gguf.GGUFReader(str(path)).tensors}


@pytest.fixture(scope="module")
def four_shards(hub_twin, demo, tmp_path_factory) -> Path:
    """The demo's Llama-2 base cut into four safetensors shards (in its own tensor order), served by the twin as
    :data:`BASE4`; returns the folder."""
    import shutil

    from safetensors.torch import load_file, save_file

    import hubtwin
    from helpers.checkpoint import open_checkpoint

    src, folder = demo / "Llama-2-7b-hf", tmp_path_factory.mktemp("four") / "base"
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.index.json"))
    with open_checkpoint(src) as ckpt:
        names = ckpt.names()
    weights = {k: v for f in sorted(src.glob("*.safetensors")) for k, v in load_file(f).items()}
    cut = [names[i * len(names) // 4:(i + 1) * len(names) // 4] for i in range(4)]
    for shard, part in zip(SHARDS, cut):
        save_file({n: weights[n] for n in part}, str(folder / shard), metadata={"format": "pt"})
    weight_map = {n: shard for shard, part in zip(SHARDS, cut) for n in part}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    hubtwin.add_model_repo(hub_twin.mirror, BASE4, folder)
    return folder


@pytest.fixture(scope="module")
def reference(demo, four_shards, tmp_path_factory) -> dict:
    """The tensors of the same merge from the local folders."""
    out = tmp_path_factory.mktemp("ref") / "m.gguf"
    merge(Recipe(four_shards, [demo / "chinese-alpaca-2-lora-7b"]), out, Q4)
    return tensors(out)


def cached_shards() -> list[str]:
    from helpers.hub import hub_cache_dir

    return sorted(p.name for p in hub_cache_dir().rglob("model-*-of-00004.safetensors") if p.exists())


@pytest.fixture
def shards_seen(monkeypatch):
    """Each shard fetch (not the LoRA's, which a streamed base fetches too), with the shards in the hub cache at that
    moment."""
    from helpers.checkpoint import streamed

    seen: list[tuple[str, list[str]]] = []
    real = streamed.fetch_file

    def fetch(repo_id, filename, **kw):
        if filename in SHARDS:
            seen.append((filename, cached_shards()))
        return real(repo_id, filename, **kw)

    monkeypatch.setattr(streamed, "fetch_file", fetch)
    return seen


def test_overlapped_merges_equal_the_local_one_byte_for_byte(hub_env, four_shards, reference, shards_seen,
                                                             tmp_path, monkeypatch):
    from helpers.merge import plan_resources

    normal = merge(Recipe(BASE4, [LORA]), tmp_path / "normal.gguf", Q4).outputs[0]
    assert tensors(normal) == reference
    assert [f for f, _ in shards_seen] == SHARDS and cached_shards() == SHARDS  # in order, kept in the cache
    since = hub_env.log_size()
    warm = merge(Recipe(BASE4, [LORA]), tmp_path / "warm.gguf", Q4).outputs[0]  # every file here already
    assert [f for f in hub_env.downloads(since) if f[1] in SHARDS] == []
    assert warm.read_bytes() == normal.read_bytes()

    monkeypatch.setenv("HF_HOME", str(tmp_path / "another-home"))  # a fresh runtime, in low-disk mode
    plan = plan_resources(BASE4, [LORA], options=MergeOptions(fmt="gguf", outtype="q4_k_m", low_disk=True),
                          out=tmp_path / "low.gguf")
    assert plan.low_disk_ahead == 1 and "two base shards at a time" in plan.summary()
    shards_seen.clear()
    low = merge(Recipe(BASE4, [LORA]), tmp_path / "low.gguf",
                MergeOptions(fmt="gguf", outtype="q4_k_m", low_disk=True, progress=False)).outputs[0]
    assert low.read_bytes() == normal.read_bytes()
    assert [f for f, _ in shards_seen] == SHARDS
    assert all(len(cached) <= 1 for _, cached in shards_seen)  # the one merging, beside the one downloading
    assert cached_shards() == []


def env_for(endpoint: str, home: Path, **extra: str) -> dict[str, str]:
    """A fresh runtime pointed at ``endpoint``: empty hub cache, online, no local mirror."""
    import hubtwin

    return {"HF_ENDPOINT": endpoint, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "HELPERS_LOCAL_MODELS": "",
            "NO_PROXY": hubtwin.no_proxy_for_loopback(), "HF_HUB_DISABLE_PROGRESS_BARS": "1", **extra}


def merge_args(out: Path, *extra: str) -> list:
    return ["merge", "--base", BASE4, "--lora", LORA, "--out", out, "--format", "gguf", "--outtype", "q4_k_m", *extra]


WHOLE_OR_RESUMED = r"^$|^bytes=[1-9]"  # a download or its resumption, not a header read (bytes=0-...)


@pytest.fixture
def proxy(hub_twin):
    p = FaultProxy(hub_twin.endpoint)
    yield p
    p.stop()


@pytest.mark.parametrize("mode", [(), ("--low-disk",)], ids=["normal", "low-disk"])
def test_a_kill_in_the_middle_resumes(proxy, four_shards, first_of_third, reference, tmp_path, mode):
    """Killed (``kill -9``) just after the first tensor of the third shard, which came 3 s late (so the partial
    output had recorded its progress: it does every 2 s, once a tensor is complete; the sink quantizes in the
    background, so the kill comes one tensor later): the rerun resumes there and downloads neither of the finished
    shards."""
    proxy.add(Fault("delay", path=f"{BASE4}/resolve/.*/{SHARDS[2]}", range=WHOLE_OR_RESUMED, seconds=3))
    out, home = tmp_path / "m.gguf", tmp_path / "home"
    kill = {FAULT_ENV: f"merge.tensor:{first_of_third + 1}"}
    r = cli(*merge_args(out, *mode), env=env_for(proxy.endpoint, home, **kill))
    assert r.returncode == -9, r.stderr
    assert not out.exists()
    proxy.clear()
    r = cli(*merge_args(out, *mode), env=env_for(proxy.endpoint, home))
    assert r.returncode == 0, r.stderr
    resumed = re.search(r", (\d+) resumed", r.stdout)
    # the third shard's first tensor counts when its download was verified before the kill (it is small and fast)
    assert resumed and first_of_third - 1 <= int(resumed[1]) <= first_of_third + 1, r.stdout
    gets = {e.path.rsplit("/", 1)[1] for e in proxy.requests("GET", f"{BASE4}/resolve/") if re.search(WHOLE_OR_RESUMED,
                                                                                                    e.range)}
    assert not gets & set(SHARDS[:2]), gets
    # huggingface_hub's temporary file of a download the kill cut short (a per-process name, never reused) may stay
    assert tensors(out) == reference and [b for b in bad_blobs(home) if not b.endswith(".incomplete")] == []


def file_order(path: Path) -> list[tuple[str, int]]:
    """A safetensors file's tensors in the order of their data, each with the byte just past it."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = {k: v["data_offsets"] for k, v in json.loads(raw[8:8 + n]).items() if k != "__metadata__"}
    return sorted(((k, 8 + n + end) for k, (_, end) in header.items()), key=lambda item: item[1])


def after_tensor(path: Path, k: int) -> int:
    """The byte of a safetensors file just past its ``k``-th tensor's data (in file order)."""
    return file_order(path)[k - 1][1]


@pytest.fixture(scope="module")
def first_of_third(demo, four_shards) -> int:
    """The position (from 1) in the merge of the first tensor read from the third shard (the merge makes the LoRA's
    own embeddings and head first, then the rest in shard order)."""
    from helpers.merge.inputs import open_inputs
    from helpers.merge.preflight import merge_layout

    inputs = open_inputs(four_shards, [demo / "chinese-alpaca-2-lora-7b"], None)
    try:
        order = [t.name for t in merge_layout(inputs).tensors]
        replaced = {n for _, a in inputs.adapters for n in a.saved}
    finally:
        inputs.close()
    weight_map = json.loads((four_shards / "model.safetensors.index.json").read_text())["weight_map"]
    return 1 + next(i for i, n in enumerate(order) if weight_map[n] == SHARDS[2] and n not in replaced)


STALL = 6.0  # seconds the third shard's download stops half-way


@pytest.fixture
def stalled(proxy, four_shards, hub_twin, tmp_path, monkeypatch):
    """A fresh runtime whose downloads go through ``proxy``, with ``huggingface_hub`` writing what it receives in
    64 kB pieces (its own are 10 MB, more than these shards), so that a shard's first part is on disk while the
    rest is stalled, and the LoRA's saved tensors written a part of their rows at a time as they arrive; returns a function that stalls the third shard after the ``k``-th tensor (and corrupts a byte
    before it with ``corrupt=offset``)."""
    from huggingface_hub import constants

    from conftest import _online

    from helpers.merge import stream

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 << 10)
    monkeypatch.setattr(stream, "ROWS_BYTES", 256 << 10)  # the LoRA's saved tensors in several parts
    _online(monkeypatch, proxy.endpoint, tmp_path / "home")

    def stall(k: int, corrupt: int | None = None) -> None:
        where = dict(path=f"{BASE4}/resolve/.*/{SHARDS[2]}", range=WHOLE_OR_RESUMED, seconds=STALL,
                     after_bytes=after_tensor(four_shards / SHARDS[2], k))
        proxy.add(Fault("stall", **where) if corrupt is None else Fault("corrupt", offset=corrupt, xor=0x80, **where))

    return stall


def test_a_shard_is_merged_as_it_arrives_and_an_interrupted_run_resumes_before_it(stalled, first_of_third,
                                                                                   reference, tmp_path, monkeypatch):
    """The third shard's download stops for a while after its first four tensors; the merge takes the first three
    meanwhile and is interrupted after the second read from the shard: the partial output's record trusts only the tensors before the first one
    read from that shard (which shows it was made before the shard was verified), and the rerun makes them again
    from verified bytes."""
    from helpers.merge.provisional import PROVISIONAL
    from helpers.merge.stream import INTERRUPT_ENV
    from helpers.util.files import partial_path

    first = first_of_third
    stalled(4)  # what the merge takes ends a tensor earlier: huggingface_hub writes whole pieces
    out = tmp_path / "m.gguf"
    monkeypatch.setenv(INTERRUPT_ENV, str(first + 1))
    with pytest.raises(KeyboardInterrupt):
        merge(Recipe(BASE4, [LORA]), out, Q4)
    assert json.loads((partial_path(out) / PROVISIONAL).read_text()) == {"trusted": first - 1}
    monkeypatch.delenv(INTERRUPT_ENV)
    result = merge(Recipe(BASE4, [LORA]), out, Q4)
    assert result.tensors_resumed <= first - 1
    assert tensors(out) == reference and not partial_path(out).exists()


def test_a_damaged_byte_merged_before_its_check_is_one_error_and_no_output(stalled, four_shards, tmp_path):
    """The damaged byte lies in a tensor the merge takes while the rest of the shard is stalled: the merge goes on
    until the shard's check fails, then stops with the check's message and leaves nothing behind."""
    from helpers.hub import DamagedDownload
    from helpers.util.files import partial_path

    shard = four_shards / SHARDS[2]
    stalled(4, corrupt=sign_byte(shard))  # in the third tensor
    out = tmp_path / "m.gguf"
    with pytest.raises(DamagedDownload, match=SHARDS[2]):
        merge(Recipe(BASE4, [LORA]), out, Q4)
    assert not out.exists() and not partial_path(out).exists()
    assert bad_blobs(tmp_path / "home") == []


def test_a_corrupt_shard_arriving_while_another_merges_is_one_line_and_no_output(hub_twin, four_shards, tmp_path):
    shard = four_shards / SHARDS[2]
    want = hashlib.sha256(shard.read_bytes()).hexdigest()
    proxy = FaultProxy(hub_twin.endpoint)
    try:
        proxy.add(Fault("corrupt", path=f"{BASE4}/resolve/.*/{SHARDS[2]}", offset=sign_byte(shard), xor=0x80))
        out, home = tmp_path / "m.gguf", tmp_path / "home"
        r = cli(*merge_args(out), env=env_for(proxy.endpoint, home))
    finally:
        proxy.stop()
    assert_error_line(r, SHARDS[2], want, proxy.endpoint)
    assert not out.exists() and hidden(out.parent) == [], hidden(out.parent)
    assert bad_blobs(home) == [] and not list((home / "hub").glob(f"models--*/blobs/{want}"))
