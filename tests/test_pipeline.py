"""`make demo`'s job (``python -m helpers pipeline``): the one-pass path the README describes, run as the user does."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gguf import GGUFReader, LlamaFileType

pytestmark = [pytest.mark.slow, pytest.mark.llama_cpp]


def _demo(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers", "pipeline", "--out", str(out), "--max-new-tokens", "4"],
                          capture_output=True, text=True, timeout=600)


def test_the_demo_quantizes_in_the_merge_pass_and_a_rerun_reuses_it(tmp_path):
    out = tmp_path / "demo"
    first = _demo(out)
    assert first.returncode == 0, first.stderr
    ggufs = sorted(p.name for p in out.glob("*.gguf"))
    assert ggufs == ["chinese-alpaca-2-7b-q4_k_m.gguf"], ggufs  # no F16 file in between
    assert not list(out.rglob("*.partial")), "a half-written file was left behind"
    gguf = out / ggufs[0]
    fields = GGUFReader(gguf).fields
    assert int(fields["general.file_type"].parts[-1][0]) == LlamaFileType.MOSTLY_Q4_K_M
    assert "reply:" in first.stdout and "merge -> GGUF q4_k_m" in first.stdout

    stamp = gguf.stat().st_mtime_ns
    again = _demo(out)
    assert again.returncode == 0, again.stderr
    assert gguf.stat().st_mtime_ns == stamp, "the second run rewrote the first run's GGUF"
    assert "reply:" in again.stdout
