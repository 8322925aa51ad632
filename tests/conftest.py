"""Shared pytest fixtures: the offline demo assets (built once per session), the released tokenizers vendored
in tests/data, and ../shared fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
DATA = ROOT / "tests" / "data"

os.environ.setdefault("HELPERS_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
    from helpers.demo import build_demo

    out = tmp_path_factory.mktemp("demo") / "assets"
    build_demo(out)
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; the test machine's two cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
