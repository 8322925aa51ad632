"""Keeping a session's work: saving to a workspace folder (helpers.publish.copy_to_workspace) and pushing to the
hub (helpers.publish.push_to_hub) with a model card.

Pushes go to the upload stand-in (tests/hubstandin.py; olah, the hub twin, takes no uploads), which keeps what it
was sent: the files it holds are compared with the local ones byte for byte, and its request log shows what was
(not) sent again. Both upload paths of huggingface_hub are covered: git LFS (``hf_xet`` switched off) and the
pipelined upload used when ``hf_xet`` is installed (its regular-file commits; the stand-in has no Xet storage).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hubstandin
from faults import FAULT_ENV, cli, readonly_folder
from helpers.publish import ReleaseCard, copy_to_workspace, push_to_hub
from helpers.publish.card import model_card
from helpers.publish.push import upload_layout
from helpers.publish.push import NO_TOKEN
from helpers.util import UserError

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_alice_write_token"  # alice's on the stand-in (tests/conftest.py)
ADAPTER = "chinese-alpaca-2-lora-7b"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files(folder: Path) -> dict[str, bytes]:
    return hubstandin.tree(folder)


@pytest.fixture
def outputs(tmp_path, demo) -> dict[str, Path]:
    """What a notebook pushes: an adapter folder (the demo LoRA's files) and a GGUF (random bytes > 1 MiB)."""
    out = tmp_path / "out"
    adapter = out / "adapter"
    adapter.mkdir(parents=True)
    for f in (demo / ADAPTER).iterdir():
        (adapter / f.name).write_bytes(f.read_bytes())
    gguf = out / "model-q4_k_m.gguf"
    gguf.write_bytes(b"GGUF" + os.urandom(3 << 20))
    return {"adapter": adapter, "gguf": gguf}


@pytest.fixture
def no_xet(monkeypatch):
    """huggingface_hub without hf_xet: uploads go through git LFS (the stand-in's LFS batch API)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


# ------------------------------------------------------------------------------------------------ the workspace
def test_a_file_is_saved_verified_and_reported(tmp_path):
    src = tmp_path / "local" / "m.gguf"
    src.parent.mkdir()
    src.write_bytes(os.urandom((2 << 20) + 5))
    saved = copy_to_workspace(src, tmp_path / "drive" / "ws", show_progress=False)
    copy = tmp_path / "drive" / "ws" / "m.gguf"
    assert saved.path == copy and copy.read_bytes() == src.read_bytes()
    assert [(f.path, f.size, f.sha256, f.copied) for f in saved.files] == \
        [(copy, src.stat().st_size, sha(src.read_bytes()), True)]
    assert sorted(p.name for p in copy.parent.iterdir()) == [".helpers-saved.json", "m.gguf"]  # no temporaries
    assert "1 copied" in str(saved) and "SHA256 verified" in str(saved)


def test_a_second_save_copies_nothing_and_reads_nothing(tmp_path, monkeypatch):
    from helpers.publish import workspace

    src = tmp_path / "m.gguf"
    src.write_bytes(os.urandom(1 << 20))
    copy_to_workspace(src, tmp_path / "ws", show_progress=False)
    before = (tmp_path / "ws" / "m.gguf").stat().st_mtime_ns
    hashed = []
    monkeypatch.setattr(workspace, "sha256_file", lambda p, **kw: hashed.append(p) or "x")
    again = copy_to_workspace(src, tmp_path / "ws", show_progress=False)
    assert not again.copied and hashed == [] and "already saved" in str(again)
    assert (tmp_path / "ws" / "m.gguf").stat().st_mtime_ns == before


def test_a_changed_source_replaces_the_copy_and_a_foreign_copy_is_checked_by_content(tmp_path):
    src, ws = tmp_path / "a.bin", tmp_path / "ws"
    src.write_bytes(b"1" * 1000)
    ws.mkdir()
    (ws / "a.bin").write_bytes(b"1" * 1000)  # copied by hand before: the same bytes, no record
    assert not copy_to_workspace(src, ws, show_progress=False).copied
    src.write_bytes(b"2" * 1000)  # same size, other bytes
    assert copy_to_workspace(src, ws, show_progress=False).copied
    assert (ws / "a.bin").read_bytes() == b"2" * 1000


def test_a_folder_is_swapped_in_whole_and_stale_files_go(tmp_path):
    src, ws = tmp_path / "merged", tmp_path / "ws"
    (src / "sub").mkdir(parents=True)
    for name, data in {"config.json": b"{}", "model.safetensors": os.urandom(3 << 20), "sub/x.txt": b"x"}.items():
        (src / name).write_bytes(data)
    (ws / "merged").mkdir(parents=True)
    (ws / "merged" / "model-00002-of-00002.safetensors").write_bytes(b"an older merge")
    (ws / "merged" / "config.json").write_bytes(b"{}")
    saved = copy_to_workspace(src, ws, show_progress=False, replace=True)  # another job's folder: replaced only
    assert files(ws / "merged") == files(src)                                # when asked (issue 26)
    assert sorted(p.name for p in ws.iterdir()) == [".helpers-saved.json", "merged"]
    assert {f.path.relative_to(ws / "merged").as_posix(): f.sha256 for f in saved.files} == \
        {k: sha(v) for k, v in files(src).items()}
    assert not copy_to_workspace(src, ws, show_progress=False).copied


def test_a_killed_save_leaves_no_half_copy_and_resumes(tmp_path):
    src, ws = tmp_path / "merged", tmp_path / "ws"
    src.mkdir()
    for i in range(3):
        (src / f"model-0000{i + 1}-of-00003.safetensors").write_bytes(os.urandom(1 << 20))
    p = cli("save", src, "--to", ws, env={FAULT_ENV: "save.file:2"})
    assert p.returncode == -9
    assert not (ws / "merged").exists()  # never a half-saved folder under its name
    staged = ws / ".merged.partial"
    assert len(files(staged)) == 2 and not [n for n in os.listdir(staged) if ".tmp-" in n]
    (staged / "model-00009-of-00009.safetensors").write_bytes(b"from an interrupted save of another version")
    p = cli("save", src, "--to", ws)
    assert p.returncode == 0, p.stderr
    assert "3 file(s)" in p.stdout and "1 copied" in p.stdout  # the two verified files were kept
    assert files(ws / "merged") == files(src) and not staged.exists()


def test_a_copy_that_reads_back_other_bytes_is_refused(tmp_path, monkeypatch):
    from helpers.publish import workspace

    src, ws = tmp_path / "m.gguf", tmp_path / "ws"
    src.write_bytes(os.urandom(1 << 20))
    monkeypatch.setattr(workspace, "sha256_file", lambda p, **kw: "0" * 64)  # Drive returns other bytes
    with pytest.raises(UserError, match=r"reads back different bytes .* run the save again"):
        copy_to_workspace(src, ws, show_progress=False)
    assert sorted(os.listdir(ws)) == [".helpers-saved.json"]


def test_saving_where_it_already_is_copies_nothing(tmp_path):
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF")
    saved = copy_to_workspace(src, tmp_path, show_progress=False)
    assert saved.path == src and not saved.copied and saved.files[0].sha256 == sha(b"GGUF")
    with pytest.raises(UserError, match="a folder inside it"):
        copy_to_workspace(tmp_path, tmp_path / "inner")


def test_a_read_only_workspace_is_one_line(tmp_path):
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF")
    with readonly_folder(tmp_path / "ro") as ro:
        p = cli("save", src, "--to", ro / "ws")
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert p.returncode == 2 and len(errors) == 1 and "cannot write" in errors[0], p.stderr


# -------------------------------------------------------------------------------------------------- the card
def test_the_card_names_base_loras_type_and_licence():
    from huggingface_hub import ModelCard

    card = ReleaseCard("llama-2-7b", ("chinese-alpaca-2-7b-lora",), kind="gguf", quant="q4_k_m", how="notebook 02")
    text = model_card(card, [("m.gguf", 3, "ab" * 32)], repo_id="alice/m")
    parsed = ModelCard(text)
    assert parsed.data.base_model == "meta-llama/Llama-2-7b-hf" and parsed.data.license == "llama2"
    assert parsed.data.base_model_relation == "quantized" and parsed.data.library_name == "gguf"
    assert {"gguf", "q4_k_m", "lora-merged"} <= set(parsed.data.tags)
    assert "[hfl/chinese-alpaca-2-lora-7b](https://huggingface.co/hfl/chinese-alpaca-2-lora-7b)" in parsed.text
    assert "Q4_K_M" in parsed.text and "notebook 02" in parsed.text and f"`{'ab' * 32}`" in parsed.text
    v1 = ModelCard(model_card(ReleaseCard("huggyllama/llama-7b", ("hfl/chinese-alpaca-lora-7b",)), []))
    assert v1.data.license == "other" and v1.data.license_name == "llama-license"
    assert "non-commercial" in v1.text and v1.data.library_name == "transformers"
    assert ModelCard(model_card(ReleaseCard("meta-llama/Meta-Llama-3-8B-Instruct", kind="adapter"), [])
                     ).data.license == "llama3"


@pytest.mark.parametrize("kwargs", [{"kind": "gguf"}, {"quant": "q4_k_m"}, {"kind": "checkpoint"}, {"base": " "}])
def test_a_card_that_contradicts_itself_is_refused(kwargs):
    with pytest.raises(UserError):
        ReleaseCard(**{"base": "llama-2-7b", **kwargs})


def test_the_upload_layout(outputs, tmp_path):
    adapter, gguf = outputs["adapter"], outputs["gguf"]
    (adapter / ".helpers-saved.json").write_text("{}")
    one = upload_layout(adapter)
    assert set(one) == {p.name for p in adapter.iterdir() if not p.name.startswith(".")}
    both = upload_layout([adapter, gguf])
    assert both[gguf.name] == gguf and both["adapter_config.json"] == adapter / "adapter_config.json"
    two = upload_layout([adapter, tmp_path / "out"])
    assert "adapter/adapter_config.json" in two and "out/adapter/adapter_config.json" in two
    assert set(upload_layout({"lora": adapter, "": gguf})) == {f"lora/{n}" for n in one} | {gguf.name}
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.gguf").write_bytes(b"another file")
    with pytest.raises(UserError, match="would both be 'x.gguf'"):
        upload_layout({"x.gguf": gguf, "": other})
    with pytest.raises(UserError, match="not found"):
        upload_layout([tmp_path / "missing"])


# ------------------------------------------------------------------------------------------------- the hub
def test_a_push_makes_a_private_repo_with_the_files_and_a_card(hub_standin, outputs, monkeypatch, no_xet):
    from huggingface_hub import ModelCard

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    card = ReleaseCard("llama-2-7b", ("chinese-alpaca-2-7b-lora",), kind="gguf", quant="q4_k_m")
    result = push_to_hub([outputs["adapter"], outputs["gguf"]], "my-model", card=card)
    repo = hub_standin.repos["alice/my-model"]
    assert result.repo_id == "alice/my-model" and repo.private and result.commit == repo.sha
    local = {**files(outputs["adapter"]), outputs["gguf"].name: outputs["gguf"].read_bytes()}
    assert {k: v.data for k, v in repo.files.items() if k != "README.md"} == local
    lfs = {k for k in local if k.endswith((".safetensors", ".gguf", ".model"))}  # weights, tokenizer: git LFS
    assert {k for k, v in repo.files.items() if v.lfs} == lfs and outputs["gguf"].name in lfs
    puts = hub_standin.calls("PUT", r"^/lfs/")
    assert sorted(r.received for r in puts) == sorted(len(local[k]) for k in lfs)
    readme = ModelCard(repo.files["README.md"].data.decode())
    assert readme.data.base_model == "meta-llama/Llama-2-7b-hf" and readme.data.license == "llama2"
    assert all(sha(data) in readme.text for data in local.values())
    assert set(result.files) == set(local) | {"README.md"}


def test_pushing_again_sends_nothing_again(hub_standin, outputs, no_xet):
    push_to_hub(outputs["gguf"], "alice/m", token=TOKEN)
    since = len(hub_standin.requests)
    again = push_to_hub(outputs["gguf"], "alice/m", token=TOKEN)
    later = hub_standin.requests[since:]
    assert not [r for r in later if r.method == "PUT" or "/commit/" in r.path], later
    assert len(hub_standin.repos["alice/m"].commits) == 1 and again.commit == hub_standin.repos["alice/m"].sha


@pytest.mark.parametrize("hub_standin", [{"lfs": False}], indirect=True)
def test_the_pipelined_upload_of_hf_xet_installs(hub_standin, outputs):
    """With hf_xet (Colab's default) upload_folder commits in batches and skips what the hub already has."""
    push_to_hub([outputs["adapter"], outputs["gguf"]], "alice/x", token=TOKEN,
                card=ReleaseCard("llama-2-7b", kind="adapter"))
    repo = hub_standin.repos["alice/x"]
    assert {k: v.data for k, v in repo.files.items() if k != "README.md"} == \
        {**files(outputs["adapter"]), outputs["gguf"].name: outputs["gguf"].read_bytes()}
    outputs["gguf"].write_bytes(b"GGUF" + os.urandom(1000))
    push_to_hub([outputs["adapter"], outputs["gguf"]], "alice/x", token=TOKEN,
                card=ReleaseCard("llama-2-7b", kind="adapter"))
    assert repo.commits[-1]["paths"] == ["README.md", outputs["gguf"].name]  # only what changed
    assert repo.files[outputs["gguf"].name].data == outputs["gguf"].read_bytes()


def test_no_token_names_the_secret(hub_standin, outputs, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(UserError) as err:
        push_to_hub(outputs["gguf"], "alice/m")
    assert str(err.value) == NO_TOKEN and "HF_TOKEN secret" in NO_TOKEN
    assert hub_standin.requests == []


def test_a_rejected_or_read_only_token_is_one_line(hub_standin, outputs, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_revoked")
    with pytest.raises(UserError, match=r"rejected HF_TOKEN \(401.*unset HF_TOKEN"):
        push_to_hub(outputs["gguf"], "alice/m")
    with pytest.raises(UserError, match=r"the token given may not write bob/m on http://127\.0\.0\.1:\d+ \(403\)"):
        push_to_hub(outputs["gguf"], "bob/m", token=TOKEN)
    assert hub_standin.repos == {}


def test_a_mirror_takes_no_uploads_and_says_which_variable(hub_env, outputs):
    with pytest.raises(UserError, match=rf"^HF_ENDPOINT={hub_env.endpoint} answered \d+ to an upload: .* unset "
                                        "HF_ENDPOINT to push to huggingface.co$"):
        push_to_hub(outputs["gguf"], "alice/m", token=TOKEN)


def test_the_push_command(hub_standin, outputs, tmp_path, test_env):
    env = {**test_env, "HF_ENDPOINT": hub_standin.endpoint, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1"}
    env.pop("HF_HUB_OFFLINE")
    p = subprocess.run([sys.executable, "-m", "helpers", "push", str(outputs["gguf"]), "--repo", "q", "--base",
                        "llama-2-7b", "--lora", "chinese-alpaca-2-7b-lora", "--how", "make test"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"pushed 2 file(s) to {hub_standin.endpoint}/alice/q")
    repo = hub_standin.repos["alice/q"]
    assert repo.files[outputs["gguf"].name].data == outputs["gguf"].read_bytes()
    readme = repo.files["README.md"].data.decode()
    assert "- q4_k_m" in readme and "make test" in readme and json.dumps(repo.private) == "true"


def test_export_to_drive_saves_the_gguf_and_its_sidecars_verified(tmp_path, monkeypatch, capsys):
    """Notebooks 01/02's export cell (helpers.gguf.export_file) saves through copy_to_workspace in Colab."""
    from helpers.gguf import export
    from helpers.gguf.export import write_checksum

    monkeypatch.setattr(export, "in_colab", lambda: True)
    g = tmp_path / "out" / "m.gguf"
    g.parent.mkdir()
    g.write_bytes(b"GGUF" + os.urandom(1 << 20))
    write_checksum(g)
    drive = tmp_path / "MyDrive"
    drive.mkdir()
    export.export_file(g, to_drive=True, drive_root=drive, drive_dir="ws")
    assert files(drive / "ws") == files(g.parent) | {
        ".helpers-saved.json": (drive / "ws" / ".helpers-saved.json").read_bytes()}
    assert capsys.readouterr().out.count("SHA256 verified") == 2  # the GGUF and its .sha256
    export.export_file(g, to_drive=True, drive_root=drive, drive_dir="ws")
    assert capsys.readouterr().out.count("already saved") == 2
