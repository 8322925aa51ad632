"""Safetensors headers read off the hub before any download (the merge planner's shard order, the low-disk stream,
a LoRA's embedding rows), through the hub twin behind a proxy that ignores ``Range`` and answers 200 with the whole
file, as olah itself and some mirrors do: the read costs about the header's bytes, not the file's, and gives what
the ``safetensors`` library reads from the same file on disk."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from faultproxy import Fault, FaultProxy

pytestmark = [pytest.mark.hub, pytest.mark.slow]
REPO, SHARDED = "cllama-tests/big-single", "cllama-tests/big-sharded"
BIG = 48 * 2**20  # far beyond what loopback sockets buffer: a client that reads the whole body is seen


def _write(path, seed: int) -> None:
    """A safetensors file of about :data:`BIG` bytes, its tensors named after ``seed`` (shards hold different ones)."""
    rng = np.random.default_rng(seed)
    save_file({f"model.big{seed}.weight": np.zeros((BIG // 4 // 1024, 1024), np.float32),
               **{f"model.layers.{40 * seed + i}.mlp.up_proj.weight": rng.standard_normal((8, 4 + i)).astype(np.float16)
                  for i in range(40)}}, str(path), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def repos(hub_twin, tmp_path_factory):
    import hubtwin

    work = tmp_path_factory.mktemp("big")
    single, sharded = work / "single", work / "sharded"
    single.mkdir(), sharded.mkdir()
    _write(single / "model.safetensors", 0)
    index = {"metadata": {}, "weight_map": {}}
    for k in (1, 2):
        name = f"model-0000{k}-of-00002.safetensors"
        _write(sharded / name, k)
        with safe_open(sharded / name, "np") as f:
            index["weight_map"].update({t: name for t in f.keys()})
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    hubtwin.add_model_repo(hub_twin.mirror, REPO, single)
    hubtwin.add_model_repo(hub_twin.mirror, SHARDED, sharded)
    return {REPO: single, SHARDED: sharded}


@pytest.fixture
def ignoring_range(hub_env, repos, monkeypatch):
    """This process online (``hub_env``), through a proxy that answers every safetensors GET with the whole file."""
    proxy = FaultProxy(hub_env.endpoint)
    proxy.add(Fault("delay", path=r"\.safetensors$", seconds=0, times=-1, ignore_range=True))
    monkeypatch.setenv("HF_ENDPOINT", proxy.endpoint)
    yield proxy
    proxy.stop()


def _reference(path) -> dict:
    """``{tensor: (dtype, shape, data start)}`` as the safetensors library and the file's own header give them."""
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    with safe_open(path, "np") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return {k: (v["dtype"], shapes[k], v["data_offsets"][0]) for k, v in header.items() if k != "__metadata__"}


@pytest.mark.parametrize("repo", [REPO, SHARDED])
def test_headers_from_a_mirror_that_ignores_range_cost_the_header_not_the_file(ignoring_range, repos, repo):
    from helpers.hub import safetensors_file_header, safetensors_headers

    headers = safetensors_headers(repo)
    files = sorted(repos[repo].glob("*.safetensors"))
    assert headers == {f.name: _reference(f) for f in files}
    first = files[0]
    assert safetensors_file_header(repo, first.name) == {k: v[1] for k, v in _reference(first).items()}
    gets = [e for e in ignoring_range.requests("GET", r"\.safetensors$")]
    assert gets and all(e.status == 200 for e in gets)  # the whole file was offered each time...
    size = first.stat().st_size
    assert all(e.sent < size / 4 for e in gets), [(e.path, e.sent, size) for e in gets]  # ...and not taken
