"""Downloads as a Colab user makes them, through the hub twin (tests/hubtwin.py): listing with sizes, downloads,
resumed downloads, one copy of the weights, GGUF release repos, moved repos and published SHA256 sums.

Everything here talks to 127.0.0.1 only. The twin tests share one server (the session fixture ``hub_twin``);
keep them in this file so that ``pytest -n 2 --dist loadfile`` starts it once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import catalog
from helpers.catalog.releases import CATALOG
from helpers.chat import choose_gguf, resolve
from helpers.chat.load import pick_gguf
from helpers.hub.resolve import list_files, resolve_model, verify_published
from helpers.util import UserError, sha256_file

ROOT = Path(__file__).resolve().parents[1]
GGUF_REPO = "hfl/chinese-alpaca-2-7b-gguf"
RELEASE = ["ggml-model-f16.gguf", "ggml-model-q4_k-im.gguf", "ggml-model-q4_k.gguf", "ggml-model-q8_0.gguf"]


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------- choosing a GGUF
def test_plain_quant_is_chosen_over_its_imatrix_variant(tmp_path):
    for name in RELEASE:
        (tmp_path / name).write_bytes(b"GGUF")
    assert pick_gguf(tmp_path, "q4_k") == tmp_path / "ggml-model-q4_k.gguf"
    assert pick_gguf(tmp_path, "Q4_K-im") == tmp_path / "ggml-model-q4_k-im.gguf"
    assert pick_gguf(tmp_path, "q8_0") == tmp_path / "ggml-model-q8_0.gguf"
    with pytest.raises(UserError, match="q8_0-im.*does not pick one") as err:
        pick_gguf(tmp_path, "q8_0-im")
    assert "ggml-model-q4_k-im.gguf" in str(err.value) and "\n" not in str(err.value)


def test_a_whole_name_part_wins_over_a_longer_quant():
    names = ["m.Q4_K.gguf", "m.Q4_K_M.gguf", "m.Q4_K_S.gguf", "README.md"]
    assert choose_gguf(names, "q4_k") == "m.Q4_K.gguf"
    assert choose_gguf(names, "q4_k_m") == "m.Q4_K_M.gguf"
    assert choose_gguf(["only-one.gguf"], "q8_0") == "only-one.gguf"
    with pytest.raises(UserError, match="no .gguf"):
        choose_gguf(["README.md"], "q4_k")


# ------------------------------------------------------------------------------------------- the twin itself
def test_the_twin_serves_every_demo_asset_under_its_real_hub_id(hub_env, demo):
    import hubtwin
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_env.endpoint)
    expected = hubtwin.demo_hub_ids(demo)
    assert {"meta-llama/Llama-2-7b-hf", "hfl/chinese-alpaca-2-lora-7b", "huggyllama/llama-7b",
            "hfl/chinese-alpaca-lora-7b", "hfl/chinese-alpaca-2-7b", "hfl/chinese-alpaca-2-1.3b",
            "meta-llama/Meta-Llama-3-8B-Instruct", "hfl/llama-3-chinese-8b-instruct-v2-lora",
            "openlmlab/open-chinese-llama-7b-patch"} <= set(expected)
    from helpers.merge.awq import AWQ_REPO

    # and a stand-in each, and the authors' AWQ results repo (tests/awqstandin.py)
    assert set(hub_env.repos) == set(expected) | {e.hub_id for e in CATALOG.values()} | {AWQ_REPO}
    for hub_id, folder in expected.items():
        assert catalog.get(hub_id).hub_id == hub_id  # the current id of a catalog release
        listed = set(api.list_repo_files(hub_id))
        local = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert local <= listed, hub_id
    assert set(api.list_repo_files(GGUF_REPO)) >= set(RELEASE)


def test_listings_carry_sizes_and_lfs_digests(hub_env, demo):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_env.endpoint)
    info = api.model_info("meta-llama/Llama-2-7b-hf", files_metadata=True)
    sizes = {s.rfilename: s for s in info.siblings}
    weights = demo / "Llama-2-7b-hf" / "model-00001-of-00002.safetensors"
    assert sizes[weights.name].size == weights.stat().st_size
    assert sizes[weights.name].lfs.sha256 == digest(weights)
    assert sizes["config.json"].size == (demo / "Llama-2-7b-hf" / "config.json").stat().st_size
    tree = {e.path: e for e in api.list_repo_tree("meta-llama/Meta-Llama-3-8B-Instruct", recursive=True)}
    assert tree["original/consolidated.00.pth"].size > 0 and tree["original/consolidated.00.pth"].lfs
    assert len(api.model_info(GGUF_REPO).sha) == 40  # repo info without a revision, as HfApi asks by default


def test_a_download_is_the_demo_files_byte_for_byte(hub_env, demo):
    since = hub_env.log_size()
    folder = resolve_model("hfl/chinese-alpaca-2-lora-7b", what="LoRA")
    assert str(folder).startswith(os.environ["HF_HOME"])
    for f in (demo / "chinese-alpaca-2-lora-7b").iterdir():
        assert digest(folder / f.name) == digest(f), f.name
    got = {name for repo, name in hub_env.downloads(since) if repo == "hfl/chinese-alpaca-2-lora-7b"}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.model"} <= got


def test_an_interrupted_download_resumes_where_it_stopped(hub_env, demo, monkeypatch):
    from huggingface_hub import constants, hf_hub_download

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)  # the hub's files are larger than one chunk
    name = "ggml-model-q8_0.gguf"
    hub_env.drop_once(GGUF_REPO, name, 300_000)
    since = hub_env.log_size()
    path = hf_hub_download(GGUF_REPO, name, endpoint=hub_env.endpoint)
    gets = [r for r in hub_env.requests(since) if r.method == "GET" and r.file == (GGUF_REPO, name)]
    assert [r.status for r in gets] == [200, 206]  # dropped after 300 kB, then only the rest was asked for
    assert digest(path) == [s.lfs.sha256 for s in _siblings(hub_env, GGUF_REPO) if s.rfilename == name][0]


def _siblings(twin, repo):
    from huggingface_hub import HfApi

    return HfApi(endpoint=twin.endpoint).model_info(repo, files_metadata=True).siblings


@pytest.mark.parametrize("hub_id, kept, skipped", [
    ("meta-llama/Llama-2-7b-hf", "model-00001-of-00002.safetensors", "pytorch_model-00001-of-00002.bin"),
    ("meta-llama/Meta-Llama-3-8B-Instruct", "model-00001-of-00002.safetensors", "original/consolidated.00.pth"),
])
def test_a_base_download_fetches_one_copy_of_the_weights(hub_env, hub_id, kept, skipped):
    listed = list_files(hub_id)
    assert kept in listed and skipped in listed  # the twin holds both copies, as the hub does
    since = hub_env.log_size()
    folder = resolve_model(hub_id, what="base model")
    got = [name for repo, name in hub_env.downloads(since) if repo == hub_id]
    assert kept in got and skipped not in got
    assert not [n for n in got if n.endswith((".bin", ".pth")) or n.startswith("pytorch_model")]
    assert (folder / kept).is_file() and not (folder / skipped).exists()


def test_a_gguf_release_downloads_only_the_chosen_quant(hub_env):
    since = hub_env.log_size()
    path, entry = resolve("chinese-alpaca-2-7b-gguf")
    assert path.name == "ggml-model-q4_k.gguf" and entry.kind == "gguf"
    got = {name for repo, name in hub_env.downloads(since) if repo == GGUF_REPO}
    assert "ggml-model-q4_k.gguf" in got and not got & {"ggml-model-q4_k-im.gguf", "ggml-model-q8_0.gguf",
                                                           "ggml-model-f16.gguf"}
    path, _ = resolve("hfl/chinese-alpaca-2-7b-gguf", gguf_quant="q4_k-im")
    assert path.name == "ggml-model-q4_k-im.gguf"
    assert digest(path) != digest(path.with_name("ggml-model-q4_k.gguf"))  # a real imatrix quant, not a copy
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"


# ------------------------------------------------------------------------------- moved repos, published sums
def _matching(entry, folder: Path):
    """``entry`` with published sums that the demo stand-ins match (the real ones cannot)."""
    return dataclasses.replace(entry, sha256={n: sha256_file(folder / n) for n in entry.sha256})


def test_a_moved_repo_downloads_from_its_current_id_and_verifies(hub_env, demo, monkeypatch, capsys):
    entry = catalog.get("chinese-llama-plus-7b-lora")
    assert entry.hub_id == "hfl/chinese-llama-plus-lora-7b" and "ziqingyang/chinese-llama-plus-lora-7b" in entry.aliases
    monkeypatch.setitem(CATALOG, entry.name, _matching(entry, demo / "chinese-llama-plus-lora-7b"))
    since = hub_env.log_size()
    folder = resolve_model("ziqingyang/chinese-llama-plus-lora-7b", what="LoRA")
    assert "moved to hfl/chinese-llama-plus-lora-7b" in capsys.readouterr().err
    paths = [r.path for r in hub_env.requests(since)]
    assert paths and not [p for p in paths if "ziqingyang" in p]
    assert ("hfl/chinese-llama-plus-lora-7b", "adapter_model.bin") in hub_env.downloads(since)
    assert verify_published(CATALOG[entry.name], folder) == 2


def test_a_download_that_differs_from_the_published_sum_is_refused(hub_env, demo, tmp_path, monkeypatch):
    monkeypatch.setenv("HELPERS_DEMO_DIR", str(tmp_path / "no-stand-ins"))  # whatever another test built
    entry = catalog.get("chinese-alpaca-7b-lora")
    assert entry.sha256["adapter_model.bin"] != sha256_file(demo / "chinese-alpaca-lora-7b" / "adapter_model.bin")
    with pytest.raises(UserError) as err:
        resolve_model("hfl/chinese-alpaca-lora-7b", what="LoRA")
    msg = str(err.value)
    assert "\n" not in msg and "adapter_model.bin has SHA256" in msg and entry.sha256["adapter_model.bin"] in msg
    blobs = Path(os.environ["HF_HOME"]) / "hub" / "models--hfl--chinese-alpaca-lora-7b" / "blobs"
    assert not [b for b in blobs.iterdir() if digest(b) == sha256_file(demo / "chinese-alpaca-lora-7b" /
                                                                       "adapter_model.bin")]  # the bad copy is gone


def test_the_cli_prints_one_error_line_for_a_published_sum_mismatch(hub_env, tmp_path):
    env = {**os.environ, "HF_ENDPOINT": hub_env.endpoint, "HF_HOME": str(tmp_path / "home"),
           "HELPERS_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT),
           "HELPERS_DEMO_DIR": str(tmp_path / "no-stand-ins")}  # whatever another test built there
    env.pop("HF_HUB_OFFLINE", None)
    out = tmp_path / "merged.gguf"
    r = subprocess.run([sys.executable, "-m", "helpers", "merge", "--base", "huggyllama/llama-7b",
                        "--lora", "ziqingyang/chinese-alpaca-lora-7b", "--out", str(out), "--format", "gguf"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2, r.stderr
    assert len(errors) == 1 and "hfl/chinese-alpaca-lora-7b: adapter_model.bin has SHA256" in errors[0], r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
    env["HELPERS_VERIFY_SHA256"] = "0"  # the documented way past the check (e.g. a re-uploaded release)
    r = subprocess.run([sys.executable, "-m", "helpers", "merge", "--base", "huggyllama/llama-7b",
                        "--lora", "hfl/chinese-alpaca-lora-7b", "--out", str(out), "--format", "gguf"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.is_file()


# ------------------------------------------------------------------------------------------------ smoke mode
def test_smoke_mode_downloads_through_hf_endpoint_when_set(tmp_path, monkeypatch, demo):
    from helpers.demo import use_demo_assets

    # set before deleted, so that monkeypatch records their absence and removes what use_demo_assets sets: a
    # HELPERS_LOCAL_MODELS left behind makes later tests of this worker plan the demo models as the real ones
    for name in ("HELPERS_LOCAL_MODELS", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert use_demo_assets(demo) == demo
    assert "HELPERS_LOCAL_MODELS" not in os.environ and "HF_HUB_OFFLINE" not in os.environ
    assert use_demo_assets(demo, through_hub=False) == demo  # the offline demo job stays offline
    assert os.environ["HELPERS_LOCAL_MODELS"] == str(demo.resolve()) and os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.delenv("HF_ENDPOINT")
    monkeypatch.delenv("HELPERS_LOCAL_MODELS")
    use_demo_assets(demo)
    assert os.environ["HELPERS_LOCAL_MODELS"] == str(demo.resolve())


def test_an_unreachable_endpoint_is_one_error_line(monkeypatch):
    """A mirror that does not answer (wrong HF_ENDPOINT) ends in one line naming it (huggingface_hub's own
    retries are skipped here: the connection error is raised at once)."""
    from helpers.hub import resolve as hub

    httpx2 = pytest.importorskip("httpx2")  # the HTTP client of huggingface_hub >= 1.0

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(UserError, match=r"cannot reach HF_ENDPOINT=http://127\.0\.0\.1:9 to download hfl/x \(.*refused.*"
                                         r"unset it to use huggingface\.co") as e:
        with hub.hub_errors("hfl/x", "model"):
            raise httpx2.ConnectError("[Errno 111] Connection refused")
    assert "\n" not in str(e.value)
