"""Issue 26's last points, through the hub twin as a user meets them: one workspace folder, a fresh ``HF_HOME`` (and
local disk) for each runtime.

- reruns that must not redo work: 02 in a new runtime takes the types already in the workspace; 01 reusing a merge
  honours ``DOWNLOAD``, prints the ``ollama create`` line and the vocabulary the file holds;
- 02 makes a release's type in low-disk mode (no F16 file), the 33B releases' way onto free Colab;
- one release name: written by 01 and read back by every notebook's lookup, for every release, type and format;
- the smoke stand-ins are the stage's, applied to the entries left at their defaults, with one shared workspace;
- by hand through the twin, the v1 releases merge with every check on, and the real check still refuses;
- the notebook headers say what the plans say; setup prints no bitsandbytes noise.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import catalog
from helpers.gguf import WRITE_TYPES
from helpers.stages import STAGES, MergeStage, QuantizeStage
from helpers.stages.names import parse_release_file, release_file_name
from helpers.stages.names import output_maker

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (".safetensors", ".bin", ".gguf", ".pth")


def helpers_run(runtime: Path, *args: str, command: str = "run", **env: str) -> subprocess.CompletedProcess:
    """``python -m helpers run ...`` in a new runtime: its own empty download cache (``HF_HOME``)."""
    runtime.mkdir(parents=True, exist_ok=True)
    full = {**os.environ, "HF_HOME": str(runtime / "hf-home"), "XDG_CACHE_HOME": str(runtime / "xdg"),
            "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "helpers", command, *args], cwd=runtime, env=full,
                          capture_output=True, text=True, timeout=900)


def sets(**form) -> list[str]:
    return [a for k, v in form.items() for a in ("--set", f"{k}={v}")]


def weights_downloaded(twin, since: int) -> set[str]:
    """Weight files downloaded whole since ``since`` (a plan's header read is a 206 of a few kB)."""
    return {"/".join(r.file) for r in twin.requests(since)
            if r.method == "GET" and r.status == 200 and r.file and r.file[1].endswith(WEIGHTS)}


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def gguf_vocab(path: Path) -> int:
    """The rows of the token embedding, as the gguf package reads the file (independent of helpers' reader)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    (emb,) = [t for t in reader.tensors if t.name == "token_embd.weight"]
    return int(emb.shape[1])


def gguf_tensors(path: Path) -> dict[str, bytes]:
    import gguf

    return {t.name: bytes(t.data.tobytes()) for t in gguf.GGUFReader(str(path)).tensors}


# ------------------------------------------------------------------------------------------------ reruns
@pytest.mark.slow
@pytest.mark.hub
@pytest.mark.parametrize("model", ["chinese-alpaca-2-7b-lora", "chinese-alpaca-2-7b"], ids=["merged", "converted"])
def test_02_in_a_new_runtime_takes_the_types_in_the_workspace(hub_env, tmp_path, model):
    """02 run twice, from a LoRA release (merged to F16) or a full model (converted), each in a new runtime: the
    second downloads no weights, quantizes nothing, and hands over the workspace's files unchanged."""
    drive = tmp_path / "drive"
    form = dict(MODEL=model, QUANT_TYPES="q8_0,q4_k_m", PUBLISHED="no", WORKSPACE=drive)
    first = helpers_run(tmp_path / "rt1", "02", *sets(OUTPUT_DIR=tmp_path / "rt1" / "q", **form))
    assert first.returncode == 0, first.stderr
    names = {"chinese-alpaca-2-7b-q8_0.gguf", "chinese-alpaca-2-7b-q4_k_m.gguf"}
    assert names <= set(digests(drive))
    saved, since = digests(drive), hub_env.log_size()
    second = helpers_run(tmp_path / "rt2", "02", *sets(OUTPUT_DIR=tmp_path / "rt2" / "q", **form))
    assert second.returncode == 0, second.stderr
    assert weights_downloaded(hub_env, since) == set()
    assert "kept as they are" in second.stdout and "nothing to download or quantize" in second.stdout
    assert "quantized to q8_0, q4_k_m (q8_0, q4_k_m kept from your workspace):" in second.stdout
    assert "quantizing" not in second.stderr
    assert digests(drive) == saved and not list((tmp_path / "rt2").rglob("*.gguf"))
    for name in names:
        assert str(drive / name) in second.stdout


@pytest.mark.slow
@pytest.mark.hub
def test_01_reusing_the_workspace_merge_honours_download_and_shows_the_files_vocabulary(hub_env, tmp_path):
    """01 in a new runtime finds its merge in the workspace: as the fresh run did, it prints the ``ollama create``
    line; with ``DOWNLOAD`` it hands the file over (outside Colab it says so); the vocabulary is the file's, as the
    gguf package reads it."""
    drive = tmp_path / "drive"
    first = helpers_run(tmp_path / "rt1", "01", *sets(OUTTYPE="q8_0", OUTPUT_DIR=tmp_path / "rt1" / "m",
                                                      WORKSPACE=drive))
    assert first.returncode == 0, first.stderr
    saved = drive / "chinese-alpaca-2-7b-q8_0.gguf"
    vocab = gguf_vocab(saved)
    assert "Ollama: ollama create" in first.stdout
    since = hub_env.log_size()
    second = helpers_run(tmp_path / "rt2", "01", *sets(OUTTYPE="q8_0", OUTPUT_DIR=tmp_path / "rt2" / "m",
                                                       WORKSPACE=drive, DOWNLOAD="true"))
    assert second.returncode == 0, second.stderr
    assert weights_downloaded(hub_env, since) == set()
    out = second.stdout
    assert f"already made earlier, nothing merged ({vocab}-token vocabulary)" in out, out
    assert re.search(r"Ollama: ollama create \S+ -f chinese-alpaca-2-7b-q8_0\.Modelfile", out), out
    assert "(not in Colab: nothing copied or downloaded)" in out  # DOWNLOAD was honoured, as far as here allows


# ------------------------------------------------------------------------------------------------ 02 low-disk
@pytest.mark.slow
@pytest.mark.hub
def test_02_low_disk_merges_each_type_straight_from_the_release_as_01_does(hub_env, tmp_path):
    """``LOW_DISK=yes``: no F16 file, and the type's tensors are those 01's merge into that type writes."""
    drive = tmp_path / "drive"
    made = helpers_run(tmp_path / "rt1", "02", *sets(MODEL="chinese-alpaca-2-7b-lora", QUANT_TYPES="q8_0",
                                                     PUBLISHED="no", LOW_DISK="yes", OUTPUT_DIR=tmp_path / "q",
                                                     WORKSPACE=drive))
    assert made.returncode == 0, made.stderr
    assert "low-disk mode: each type merged straight from the release" in made.stdout
    assert not list(tmp_path.rglob("*-f16.gguf"))
    merged = helpers_run(tmp_path / "rt2", "01", *sets(OUTTYPE="q8_0", OUTPUT_DIR=tmp_path / "m",
                                                       WORKSPACE=tmp_path / "drive01"))
    assert merged.returncode == 0, merged.stderr
    assert gguf_tensors(tmp_path / "q" / "chinese-alpaca-2-7b-q8_0.gguf") == \
        gguf_tensors(tmp_path / "m" / "chinese-alpaca-2-7b-q8_0.gguf")


def test_02_offers_low_disk_for_the_33b_releases_on_free_colab(monkeypatch, capsys):
    """The 33B LoRA on free Colab's CPU runtime: the F16 route needs more disk than Colab has; the refusal's fix is
    ``LOW_DISK='yes'``, with which the plan fits in the disk 01's low-disk merge of the same type needs."""
    from helpers.colab import Runtime

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # sizes from the catalog, as the header tables
    colab = Runtime.free_colab(gpu=False, setup=QuantizeStage.SETUP)
    refused = QuantizeStage(model="chinese-alpaca-33b-lora", low_disk="no").plan(colab)
    assert not refused.fits and {"low_disk": "yes"} in refused.fixes
    assert "LOW_DISK='yes'" in refused.refusal()
    low = QuantizeStage(model="chinese-alpaca-33b-lora").plan(colab)
    assert low.fits and low.job.source == "direct" and low.job.f16 is None
    disk = next(n for n in low.needs if n.what == "disk")
    merge = MergeStage(model="chinese-alpaca-33b-lora", low_disk="yes").plan(colab)
    assert disk.need.split(" (")[0] == next(n for n in merge.needs if n.what == "disk").need.split(" (")[0]


# ------------------------------------------------------------------------------------------------ one name
def test_every_release_name_reads_back_as_its_release_type_and_format():
    """The round trip of :func:`release_file_name` for every LoRA and patch release, every GGUF type and format; the
    workspace's lookup names 01 (and its form values) for each."""
    releases = catalog.names(kind="lora") + catalog.names(kind="patch")
    assert "open-chinese-llama-7b-patch" in releases
    for name in releases:
        entry = catalog.get(name)
        for fmt, kinds in (("gguf", WRITE_TYPES), ("hf", ("f16",)), ("pth", ("f16",))):
            for kind in kinds:
                file = release_file_name(entry, fmt, kind)
                assert parse_release_file(file) == (entry, fmt, kind if fmt == "gguf" else ""), file
                assert f"01_merge_lora (MODEL={name!r}" in output_maker(file), file
    patch = catalog.get("open-chinese-llama-7b-patch")
    assert release_file_name(patch, "gguf", "q4_k_m") == "open-chinese-llama-7b-patch-q4_k_m.gguf"
    assert parse_release_file("open-chinese-llama-7b-q8_0.gguf") is None  # a name 01 never writes
    assert MergeStage(model=patch.name).step_name() == "merge patch" and MergeStage().step_name() == "merge lora"


@pytest.mark.slow
@pytest.mark.hub
def test_the_patch_merge_is_named_and_logged_as_a_patch(hub_env, tmp_path):
    """``run 01`` of the patch release writes the one name, and its cost line says ``merge patch``."""
    r = helpers_run(tmp_path / "rt", "01", *sets(MODEL="open-chinese-llama-7b-patch", OUTTYPE="q8_0",
                                                 OUTPUT_DIR=tmp_path / "m", WORKSPACE=tmp_path / "drive"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "drive" / "open-chinese-llama-7b-patch-q8_0.gguf").is_file()
    assert re.search(r"^merge patch: [\d.]+ s", r.stdout, re.M) and "merge lora" not in r.stdout


# ------------------------------------------------------------------------------------------------ smoke settings
def test_smoke_stand_ins_change_only_the_entries_left_at_their_defaults(monkeypatch, demo, tmp_path):
    """Under ``NOTEBOOK_SMOKE=1`` a form built from a notebook's globals keeps what was typed and gets the stand-in
    values elsewhere; every notebook shares one workspace; outside smoke mode nothing changes."""
    from helpers.stages.smoke import SMOKE_WORKSPACE

    monkeypatch.chdir(tmp_path)  # the notebooks' folder: smoke stand-ins are written relative to it
    monkeypatch.setenv("HELPERS_DEMO_DIR", str(demo))
    monkeypatch.setenv("NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # through a twin: no environment changed
    typed = MergeStage.from_form({"OUTTYPE": "q8_0", "WORKSPACE": "mine"})
    assert (typed.outtype, typed.workspace, typed.imatrix_chunks) == ("q8_0", "mine", 4)
    assert MergeStage.from_form({}).outtype == "iq3_xxs"
    assert {cls.from_form({}).workspace for cls in STAGES.values()} == {SMOKE_WORKSPACE}
    assert len({getattr(cls.from_form({}), "output_dir", cls.NOTEBOOK) for cls in STAGES.values()}) == len(STAGES)
    monkeypatch.delenv("NOTEBOOK_SMOKE")
    assert MergeStage.from_form({}) == MergeStage()


@pytest.mark.slow
@pytest.mark.hub
def test_smoke_notebooks_share_one_workspace_as_a_users_do(hub_env, tmp_path, monkeypatch):
    """01 then 02 in smoke mode, neither told where the workspace is: 02 finds 01's F16 by name in the shared smoke
    workspace and downloads no weights."""
    import nbformat
    from nbclient import NotebookClient

    from helpers.stages.smoke import SMOKE_WORKSPACE

    monkeypatch.setenv("NOTEBOOK_SMOKE", "1")

    def run(name: str, **form) -> None:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        nb.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in form.items())))
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                       ).execute()

    run("01_merge_lora", OUTTYPE="f16")
    workspace = tmp_path / SMOKE_WORKSPACE
    assert (workspace / "chinese-alpaca-2-7b-f16.gguf").is_file()
    since = hub_env.log_size()
    run("02_quantize_gguf", INPUT_PATH="chinese-alpaca-2-7b-f16.gguf", QUANT_TYPES="q8_0", QUALITY_TABLE=False)
    assert (workspace / "chinese-alpaca-2-7b-q8_0.gguf").is_file() and weights_downloaded(hub_env, since) == set()


# ------------------------------------------------------------------------------------------------ by hand
def _adapter_entry():
    return catalog.get("chinese-alpaca-7b-lora")


@pytest.mark.hub
def test_by_hand_a_v1_release_downloads_through_the_twin_with_every_check_on(hub_env, demo, tmp_path, monkeypatch,
                                                                           capsys):
    """No ``HELPERS_VERIFY_SHA256=0`` and no patched check: the v1 LoRA from the twin fails the authors' published
    sums (it is a stand-in), and passes because it is byte for byte the stand-in this machine built; with another
    demo folder (a twin's files this machine did not build) the same download is refused."""
    from helpers.hub.resolve import resolve_model, verify_published

    entry = _adapter_entry()
    monkeypatch.setenv("HELPERS_DEMO_DIR", str(demo))
    folder = resolve_model(entry.hub_id)
    got = hashlib.sha256((folder / "adapter_model.bin").read_bytes()).hexdigest()
    assert got != entry.sha256["adapter_model.bin"]  # it is not the published release
    assert verify_published(entry, folder) == 2
    assert "hub twin's stand-in built on this machine" in capsys.readouterr().err
    other = tmp_path / "not-built-here"
    (other / "x").mkdir(parents=True)
    (other / "manifest.json").write_text("{}")
    monkeypatch.setenv("HELPERS_DEMO_DIR", str(other))
    with pytest.raises(Exception, match="published SHA256"):
        verify_published(entry, resolve_model(entry.hub_id))


@pytest.mark.slow
@pytest.mark.hub
def test_by_hand_run_01_merges_a_v1_release_through_the_twin(hub_env, demo, tmp_path, monkeypatch):
    """``python -m helpers run 01`` of a v1 Alpaca LoRA through the twin, as the README's by-hand lines set it up
    (``HELPERS_DEMO_DIR`` the stand-ins the twin serves), with every check on: the merge is made, and says why the
    published sums were passed."""
    env = {"HELPERS_DEMO_DIR": str(demo)}
    monkeypatch.delenv("HELPERS_VERIFY_SHA256", raising=False)
    r = helpers_run(tmp_path / "rt", "01", *sets(MODEL="chinese-alpaca-7b-lora", OUTTYPE="q8_0",
                                                 OUTPUT_DIR=tmp_path / "m", WORKSPACE=tmp_path / "drive"), **env)
    assert r.returncode == 0, r.stderr
    assert "hub twin's stand-in built on this machine" in r.stderr
    assert gguf_vocab(tmp_path / "drive" / "chinese-alpaca-7b-q8_0.gguf") > 0
    assert "published SHA256" not in r.stderr


def test_the_real_hub_never_passes_a_stand_in(demo, tmp_path, monkeypatch):
    """The same stand-in bytes, said to come from huggingface.co (no HF_ENDPOINT) or a remote mirror: refused."""
    from helpers.hub.resolve import twin_standin, verify_published
    from helpers.util import UserError

    entry = _adapter_entry()
    monkeypatch.setenv("HELPERS_DEMO_DIR", str(demo))
    monkeypatch.delenv("HELPERS_VERIFY_SHA256", raising=False)
    folder = tmp_path / "lora"
    folder.mkdir()
    for name in ("adapter_model.bin", "tokenizer.model"):
        (folder / name).write_bytes((demo / "chinese-alpaca-lora-7b" / name).read_bytes())
    sha = hashlib.sha256((folder / "adapter_model.bin").read_bytes()).hexdigest()
    for endpoint in (None, "https://huggingface.co", "https://hf-mirror.com"):
        if endpoint is None:
            monkeypatch.delenv("HF_ENDPOINT", raising=False)
        else:
            monkeypatch.setenv("HF_ENDPOINT", endpoint)
        assert not twin_standin(folder / "adapter_model.bin", sha)
        with pytest.raises(UserError, match="published SHA256"):
            verify_published(entry, folder)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    assert twin_standin(folder / "adapter_model.bin", sha)
    (folder / "adapter_model.bin").write_bytes(b"x" + (folder / "adapter_model.bin").read_bytes()[1:])
    assert not twin_standin(folder / "adapter_model.bin",
                            hashlib.sha256((folder / "adapter_model.bin").read_bytes()).hexdigest())


# ------------------------------------------------------------------------------------------------ text
@pytest.mark.parametrize("notebook", sorted(STAGES))
def test_the_header_says_what_the_plan_says(notebook, monkeypatch, tmp_path):
    """Each column of the header's needs table carries its plan's needs as the check cell prints them (04's 13B
    QLoRA: the GPU memory its check computes)."""
    from helpers.colab import Runtime
    from helpers.stages.header import COLUMNS

    header = "".join(json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())["cells"][0]["source"])
    cls = STAGES[notebook]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HELPERS_LOCAL_MODELS", raising=False)
    for heading, values, gpu in COLUMNS[notebook]:
        folders = {f.attr: str(tmp_path / f.attr) for f in cls.form_fields() if f.attr in ("output_dir", "workspace")}
        plan = cls(**{**folders, **values}).plan(Runtime.free_colab(gpu=gpu, setup=cls.SETUP))
        assert heading in header
        for need in plan.needs:
            if need.need not in ("it", "no GPU"):
                assert need.need in header, (heading, need)
    if notebook == "04_finetune_lora":
        assert "13.6 GB (weights" in header


def test_setup_reports_versions_without_the_bitsandbytes_noise():
    """setup.sh's version line (run as it is written there) prints the versions and no kernels-community noise."""
    script = (ROOT / "scripts" / "setup.sh").read_text()
    code = script.split("<<'PYEOF'\n", 1)[1].split("\nPYEOF", 1)[0]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert re.search(r"\[setup\] ok: torch \S+ \| transformers \S+ \| peft \S+", r.stdout)
    assert "gemm_4bit" not in r.stdout + r.stderr and "kernels-community" not in r.stdout + r.stderr


def test_build_check_catches_a_header_that_drifted_from_the_plan(monkeypatch):
    """A plan that says other than the committed header (here: the 13B column planned as 7B) makes the built notebook
    differ from the committed one, which is what ``build_notebooks.py --check`` reports."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import build_notebooks

    from helpers.stages import header

    src = ROOT / "notebooks" / "src" / "04_finetune_lora.py"
    committed = (ROOT / "notebooks" / "04_finetune_lora.ipynb").read_text(encoding="utf-8")
    assert build_notebooks.build(src) == committed
    monkeypatch.setitem(header.COLUMNS, "04_finetune_lora", (("13B QLoRA (T4)", {}, True),))
    assert build_notebooks.build(src) != committed
