"""Does it fit my laptop? The sizes against what the writer and llama.cpp really produce and allocate, and the
README table against the code."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

from helpers.merge.laptop import GB, LAPTOP_TYPES, RUNTIME, RunFit, run_buffers, run_fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _config(path: Path) -> dict:
    """A GGUF's shape as an HF config."""
    f = gguf.GGUFReader(str(path)).fields
    arch = f["general.architecture"].contents()
    get = lambda k: int(f[f"{arch}.{k}"].contents())  # noqa: E731
    vocab = len(f["tokenizer.ggml.tokens"].contents())
    return {"num_hidden_layers": get("block_count"), "hidden_size": get("embedding_length"),
            "intermediate_size": get("feed_forward_length"), "num_attention_heads": get("attention.head_count"),
            "num_key_value_heads": get("attention.head_count_kv"), "vocab_size": vocab}


def _llama_buffers(path: Path, n_ctx: int) -> tuple[float, float]:
    """llama.cpp's own KV cache and compute buffer (MiB) for ``path`` at ``n_ctx`` (no flash attention), from its
    log."""
    from helpers.gguf.llamacpp import quiet_llama_log

    with quiet_llama_log() as log:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, flash_attn=False, verbose=True)
        llm.close()
    sizes = {}
    for line in "".join(log).splitlines():
        for what in ("KV buffer size", "compute buffer size"):
            if what in line and "=" in line:
                sizes[what] = float(line.split("=")[1].split()[0])
    return sizes["KV buffer size"], sizes["compute buffer size"]


@pytest.fixture(scope="module")
def demo_f16(demo, tmp_path_factory) -> Path:
    from helpers.gguf import convert_hf_to_gguf

    return convert_hf_to_gguf(demo / "chinese-alpaca-2-7b", tmp_path_factory.mktemp("f16") / "m.gguf")


@pytest.mark.parametrize("n_ctx", [512, 4096])
def test_run_buffers_against_llama_cpp(smollm2, demo_f16, n_ctx):
    """The KV cache exactly as llama.cpp allocates it; the compute buffer at or a little above its own (a trained
    model with a 49k vocabulary, where the logits dominate, and a tiny one, where the attention scores do)."""
    for path in (smollm2, demo_f16):
        kv, compute = run_buffers(_config(path), n_ctx)
        real_kv, real_compute = _llama_buffers(path, n_ctx)
        assert kv / 2**20 == pytest.approx(real_kv, abs=0.01), path.name
        assert real_compute <= compute / 2**20 <= 1.15 * real_compute + 1, (path.name, compute / 2**20, real_compute)


@pytest.mark.parametrize("outtype", ["q4_k_m", "q8_0", "q3_k_m"])
def test_file_size_is_the_writers(demo, tmp_path, outtype):
    """The file size the table uses is the size of the GGUF the merge writes (its data section to the byte)."""
    from helpers.merge import MergeOptions, Recipe, merge

    base, loras = demo / "Llama-2-7b-hf", [demo / "chinese-alpaca-2-lora-7b"]
    fit = run_fit(str(base), [str(x) for x in loras], outtype=outtype)
    out = merge(Recipe(base, loras), tmp_path / "m.gguf",
                MergeOptions(fmt="gguf", outtype=outtype, progress=False, write_sha256=False)).outputs[0]
    reader = gguf.GGUFReader(str(out))
    data = out.stat().st_size - min(t.data_offset for t in reader.tensors)
    from helpers.gguf import data_bytes
    from helpers.merge.sources import inputs_of, merged_layout

    config, tensors, _ = merged_layout(inputs_of(str(base), [str(x) for x in loras], None))
    assert data_bytes(config, tensors, outtype) == data
    assert abs(fit.file_bytes - out.stat().st_size) < 128 << 10  # the header: the vocabulary, estimated


def test_fit_arithmetic():
    fit = RunFit("q4_k_m", 4096, 10 * GB, 1 * GB, GB // 2)
    assert fit.ram_bytes == int(11.5 * GB) + RUNTIME
    assert not fit.fits(8) and fit.fits(16) and fit.smallest_laptop == 16
    assert "fits laptops with 16, 32 GB" in fit.summary()
    with pytest.raises(ValueError):
        RunFit("q4_k_m", 0, 1, 1, 1)


def test_lower_types_fit_smaller_laptops():
    fits = [run_fit("meta-llama/Llama-2-7b-hf", ["hfl/chinese-alpaca-2-lora-7b"], outtype=t) for t in LAPTOP_TYPES]
    assert [f.file_bytes for f in fits] == sorted((f.file_bytes for f in fits), reverse=True)
    assert fits[0].kv_bytes == 2 * 32 * 4096 * 4096 * 2  # Llama-2-7B: 32 layers of 4096, F16
    assert fits[2].file_bytes / GB == pytest.approx(3.9, abs=0.1)  # Q4_K_M 7B with the 55296-token vocabulary


def test_readme_laptop_table_is_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "laptop_table.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_plan_prints_the_laptop_line(capsys):
    from helpers.__main__ import main

    rc = main(["plan", "chinese-alpaca-33b-lora", "--outtype", "iq3_xxs", "--offline", "--disk-gb", "100",
               "--ram-gb", "12"])
    out = capsys.readouterr().out
    assert rc == 0 and "-> GGUF q8_0" in out and "iq3_xxs needs an importance matrix" in out
    line = run_fit("huggyllama/llama-30b", ["hfl/chinese-alpaca-lora-33b"], outtype="iq3_xxs").summary()
    assert line in out and "fits laptops with 32 GB" in line
