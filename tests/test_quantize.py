"""Quantization through llama.cpp: types, importance matrices, both back ends, sidecar files, errors."""
from __future__ import annotations

import json
import os
import re
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import helpers.gguf.llama_quantize as hq
from helpers.gguf import QuantizeOptions
import helpers.gguf.llamacpp as hq_llamacpp
from helpers.util import UserError

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def f16(demo, tmp_path_factory) -> Path:
    from helpers.gguf import convert_hf_to_gguf

    return convert_hf_to_gguf(demo / "Llama-2-7b-hf", tmp_path_factory.mktemp("q") / "l2-f16.gguf", outtype="f16")


def file_type(path: Path) -> int:
    return int(gguf.GGUFReader(str(path)).fields["general.file_type"].contents())


def test_type_names():
    assert hq.qtype_name("Q4_K_M") == "q4_k_m" and hq.qtype_name("q4_k") == "q4_k_m"
    assert hq.FTYPES["q4_k_m"] == 15 and hq.FTYPES["q8_0"] == 7 and hq.FTYPES["bf16"] == 32
    with pytest.raises(UserError, match="unknown quantization type"):
        hq.qtype_name("q9_z")


def test_every_type_is_llama_cpps_own_file_type_and_size():
    """The file types and bits per weight come from gguf-py's tables; llama.cpp's own header (llama_cpp's
    LLAMA_FTYPE_*) and the block sizes its ggml library reports are the independent references."""
    from helpers.gguf.types import BITS_PER_WEIGHT, FTYPES, TENSOR_TYPE

    llama_cpp = pytest.importorskip("llama_cpp")
    for name, value in FTYPES.items():
        const = "LLAMA_FTYPE_ALL_F32" if name == "f32" else f"LLAMA_FTYPE_MOSTLY_{name.upper()}"
        assert getattr(llama_cpp, const) == value, name
    from helpers.gguf.ggml import ggml_library

    lib = ggml_library()
    for name, qtype in TENSOR_TYPE.items():
        block, nbytes = lib.ggml_blck_size(int(qtype)), lib.ggml_type_size(int(qtype))
        assert BITS_PER_WEIGHT[name] == 8 * nbytes / block, name
    assert BITS_PER_WEIGHT["q4_k_m"] == 4.5 and BITS_PER_WEIGHT["q8_0"] == 8.5 and BITS_PER_WEIGHT["f16"] == 16


def test_iq_types_need_an_imatrix(f16, tmp_path):
    with pytest.raises(UserError, match="importance matrix"):
        hq.quantize(f16, tmp_path / "x.gguf", QuantizeOptions(qtype="iq2_xxs"))
    assert list(tmp_path.iterdir()) == []


def test_no_quantizer_says_how_to_install(f16, tmp_path, monkeypatch):
    monkeypatch.setattr(hq, "llama_cpp_available", lambda: False)
    monkeypatch.setattr(hq, "quantize_binary", lambda: None)
    with pytest.raises(UserError, match="scripts/setup.sh"):
        hq.quantize(f16, tmp_path / "x.gguf")
    assert list(tmp_path.iterdir()) == []


def test_binary_backend_command_line(f16, tmp_path, monkeypatch):
    """Without llama-cpp-python, a ``llama-quantize`` on PATH gets llama.cpp's documented arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "args.json"
    fake = bindir / "llama-quantize"
    fake.write_text(f"#!{sys.executable}\nimport json, shutil, sys\njson.dump(sys.argv[1:], open({str(log)!r}, 'w'))\n"
                    "shutil.copy(sys.argv[-4], sys.argv[-3])\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    import gguf
    import numpy as np

    from helpers.gguf.imatrix import ImatrixStats, write_imatrix

    blocks = {t.name: int(t.shape[0]) for t in gguf.GGUFReader(str(f16)).tensors
              if t.name.startswith("blk.") and len(t.shape) == 2}
    imatrix = write_imatrix(tmp_path / "m.imatrix.gguf", ImatrixStats(
        {n: np.ones((1, c), np.float32) for n, c in blocks.items()},
        {n: np.ones(1, np.float32) for n in blocks}, chunk_count=1, chunk_size=8, datasets=("t",)))
    monkeypatch.setattr(hq, "llama_cpp_available", lambda: False)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    out = hq.quantize(f16, tmp_path / "o.gguf", QuantizeOptions(qtype="iq4_xs", imatrix=imatrix, threads=3))
    args = json.loads(log.read_text())
    assert args[:2] == ["--imatrix", str(imatrix)] and args[2] == str(f16)
    assert args[4:] == ["IQ4_XS", "3"] and out.is_file()


def test_quantize_hf_folder_writes_sidecars(demo, tmp_path):
    pytest.importorskip("llama_cpp")
    from helpers.tokens import ollama_template

    out = hq.quantize(demo / "Meta-Llama-3-8B-Instruct", tmp_path / "l3-q4_k_m.gguf", QuantizeOptions(threads=2))
    assert file_type(out) == 15
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l3-q4_k_m.Modelfile", "l3-q4_k_m.gguf",
                                                            "l3-q4_k_m.gguf.sha256"]  # temporary F16 removed
    modelfile = (tmp_path / "l3-q4_k_m.Modelfile").read_text()
    assert ollama_template("llama3") in modelfile and 'PARAMETER stop "<|eot_id|>"' in modelfile


def test_quantize_hf_folder_modelfile_matches_embedded_template(demo, tmp_path):
    """The catalog release named only in config.json's _name_or_path: GGUF and Modelfile agree."""
    pytest.importorskip("llama_cpp")
    import shutil

    from helpers.gguf.metadata import read_metadata
    from helpers.tokens import ollama_template, template_from_chat_template

    model = tmp_path / "my-merged-model"
    shutil.copytree(demo / "chinese-alpaca-2-7b", model)
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config["_name_or_path"] = "hfl/chinese-alpaca-2-7b"
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    out = hq.quantize(model, tmp_path / "q" / "m-q8_0.gguf", QuantizeOptions(qtype="q8_0", threads=2))
    embedded = read_metadata(out, ("tokenizer.chat_template",))["tokenizer.chat_template"]
    assert template_from_chat_template(embedded) == "llama2-zh"
    assert ollama_template("llama2-zh") in (tmp_path / "q" / "m-q8_0.Modelfile").read_text(encoding="utf-8")


@pytest.mark.parametrize("qtype,ftype", [("q8_0", 7), ("q5_k_m", 17), ("q3_k_s", 11)])
def test_types_and_cli(f16, tmp_path, qtype, ftype):
    pytest.importorskip("llama_cpp")
    from helpers.__main__ import main

    out = tmp_path / f"{qtype}.gguf"
    assert main(["quantize", "--model", str(f16), "--out", str(out), "--type", qtype.upper(), "--threads", "2"]) == 0
    assert file_type(out) == ftype and out.stat().st_size < f16.stat().st_size
    assert (tmp_path / f"{qtype}.gguf.sha256").is_file() and (tmp_path / f"{qtype}.Modelfile").is_file()


def test_an_output_that_is_the_input_is_refused_and_the_input_kept(f16, tmp_path):
    import shutil

    from helpers.gguf import QuantizeOptions, quantize

    src = Path(shutil.copy(f16, tmp_path / "model.gguf"))
    before = src.read_bytes()
    with pytest.raises(UserError, match="is the input itself"):
        quantize(src, tmp_path / "." / "model.gguf", QuantizeOptions(qtype="q8_0"))
    assert src.read_bytes() == before


def test_requantizing_is_refused(f16, tmp_path):
    pytest.importorskip("llama_cpp")
    q4 = hq.quantize(f16, tmp_path / "q4.gguf", QuantizeOptions(threads=2, modelfile=False))
    with pytest.raises(UserError, match="start from the F16"):
        hq.quantize(q4, tmp_path / "q2.gguf", QuantizeOptions(qtype="q2_k", threads=2))
    assert not (tmp_path / "q2.gguf").exists()
    with pytest.raises(UserError, match="not a GGUF"):
        (tmp_path / "x.gguf").write_bytes(b"nope")
        hq.quantize(tmp_path / "x.gguf", tmp_path / "y.gguf")


PER_TENSOR = re.compile(r"^\[\s*\d+/\s*\d+\]|converting to", re.M)  # llama.cpp's "[  3/ 21] blk.0... converting to"


def test_cli_quantize_is_quiet(f16, tmp_path):
    """``python -m helpers quantize`` shows its own progress lines, not llama.cpp's per-tensor log."""
    pytest.importorskip("llama_cpp")
    out = tmp_path / "q.gguf"
    cmd = [sys.executable, "-m", "helpers", "quantize", "--model", str(f16), "--out", str(out), "--threads", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert file_type(out) == 15 and "quantizing l2-f16.gguf to q4_k_m" in r.stderr
    assert not PER_TENSOR.search(r.stderr) and "llama_model_loader" not in r.stderr, r.stderr
    assert f"wrote {out}" in r.stdout
    loud = subprocess.run(cmd + ["--verbose"], capture_output=True, text=True, timeout=300)  # the check can fail
    assert loud.returncode == 0 and len(PER_TENSOR.findall(loud.stderr)) >= 21, loud.stderr


def test_quiet_log_is_restored_and_kept_on_failure(f16, imatrix, tmp_path, capfd, monkeypatch):
    """In-process: quiet, then llama-cpp-python's own logging works again; a run llama.cpp fails keeps the log it
    collected in a file the one-line error names, instead of printing it."""
    pytest.importorskip("llama_cpp")
    q8 = hq.quantize(f16, tmp_path / "q8.gguf", QuantizeOptions(qtype="q8_0", threads=2, modelfile=False))
    err = capfd.readouterr().err
    assert not PER_TENSOR.search(err) and "quantizing" in err
    hq.quantize(f16, tmp_path / "v.gguf", QuantizeOptions(qtype="q8_0", threads=2, modelfile=False, verbose=True))
    assert len(PER_TENSOR.findall(capfd.readouterr().err)) >= 21
    with pytest.raises(UserError, match="start from the F16"):  # refused before llama.cpp runs: no log at all
        hq.quantize(q8, tmp_path / "q2.gguf", QuantizeOptions(qtype="q2_k", threads=2))
    assert "llama_model_loader" not in capfd.readouterr().err
    monkeypatch.setenv("HELPERS_LOG_DIR", str(tmp_path / "logs"))
    path, sums, n = imatrix  # an importance matrix of the wrong width
    bad = write_imatrix_gguf(tmp_path / "bad.imatrix", {k: v[:10] for k, v in sums.items()}, n)
    with pytest.raises(UserError, match=r"has 10 values for blk\.0\.attn_k\.weight, which has 256 columns; it was "
                                        "computed for another model"):  # refused before llama.cpp runs
        hq.quantize(f16, tmp_path / "iq.gguf", QuantizeOptions(qtype="iq4_xs", imatrix=bad, threads=2))
    assert not (tmp_path / "logs" / "quantize-iq.log").exists()
    monkeypatch.setattr(hq, "_check_imatrix_for", lambda src, imatrix: None)  # now llama.cpp finds out itself
    with pytest.raises(UserError, match=r"imatrix size 10 is different.*its log is in .*quantize-iq\.log"):
        hq.quantize(f16, tmp_path / "iq.gguf", QuantizeOptions(qtype="iq4_xs", imatrix=bad, threads=2))
    assert "llama_model_loader" not in capfd.readouterr().err and not (tmp_path / "iq.gguf").exists()
    assert "llama_model_loader" in (tmp_path / "logs" / "quantize-iq.log").read_text()
    print("still on stderr", file=sys.stderr)
    os.write(2, b"fd 2 restored\n")
    err = capfd.readouterr().err
    assert "still on stderr" in err and "fd 2 restored" in err


# ------------------------------------------------------------------------------------------------ imatrix
def activation_stats(model_dir: Path, texts: list[str]) -> tuple[dict[str, np.ndarray], int]:
    """Sum of squared inputs of every projection (GGUF names), as llama-imatrix collects them."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = LlamaTokenizer.from_pretrained(model_dir)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    sums: dict[str, np.ndarray] = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        for path, short in names.items():
            mod = layer.get_submodule(path)
            key = f"blk.{i}.{short}.weight"

            def hook(_m, inputs, _out, key=key):
                x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
                sums[key] = sums.get(key, 0) + (x * x).sum(0).numpy()

            hooks.append(mod.register_forward_hook(hook))
    n = 0
    with torch.no_grad():
        for t in texts:
            ids = tok(t, return_tensors="pt").input_ids
            n += ids.shape[1]
            model(ids)
    for h in hooks:
        h.remove()
    return {k: v.astype(np.float32) for k, v in sums.items()}, n


def write_imatrix_gguf(path: Path, sums: dict[str, np.ndarray], count: int) -> Path:
    w = gguf.GGUFWriter(str(path), "imatrix")
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", ["corpus_zh"])
    w.add_uint32("imatrix.chunk_count", 1)
    w.add_uint32("imatrix.chunk_size", count)
    for name, s in sums.items():
        w.add_tensor(name + ".in_sum2", s.reshape(1, -1))
        w.add_tensor(name + ".counts", np.array([[float(count)]], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_imatrix_legacy(path: Path, means: dict[str, np.ndarray], ncall: int) -> Path:
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(means)))
        for name, v in means.items():
            f.write(struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", ncall, v.size))
            f.write((v * ncall).astype("<f4").tobytes())
        f.write(struct.pack("<i", 1) + struct.pack("<i", 4) + b"demo")
    return path


@pytest.fixture(scope="module")
def imatrix(demo, tmp_path_factory):
    from helpers.demo.tokenizers import corpus

    sums, n = activation_stats(demo / "Llama-2-7b-hf", corpus("zh")[:20])
    d = tmp_path_factory.mktemp("imatrix")
    return write_imatrix_gguf(d / "imatrix.gguf", sums, n), sums, n


def test_read_imatrix_formats(imatrix, tmp_path):
    path, sums, n = imatrix
    got = hq.read_imatrix(path)
    assert set(got) == set(sums) and len(got) == 14
    for k in sums:
        np.testing.assert_allclose(got[k], sums[k] / n, rtol=1e-6)
    legacy = hq.read_imatrix(write_imatrix_legacy(tmp_path / "old.dat", got, ncall=5))
    for k in got:
        np.testing.assert_allclose(legacy[k], got[k], rtol=1e-6)
    (tmp_path / "bad.dat").write_bytes(b"\x02\x00\x00\x00\xff")
    with pytest.raises(UserError, match="not a llama.cpp importance matrix"):
        hq.read_imatrix(tmp_path / "bad.dat")


def test_imatrix_quantization(f16, imatrix, tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    from llama_cpp import Llama

    path, _, _ = imatrix
    iq = hq.quantize(f16, tmp_path / "iq4_xs.gguf",
                     QuantizeOptions(qtype="iq4_xs", imatrix=path, threads=2, verbose=True))
    assert "have importance matrix data with 14 entries" in capsys.readouterr().err
    assert file_type(iq) == 30
    llm = Llama(model_path=str(iq), logits_all=True, n_ctx=64, n_threads=2, verbose=False)
    toks = llm.tokenize("北京是中国的首都。".encode(), add_bos=True, special=False)
    llm.eval(toks)
    assert np.isfinite(np.array(llm.scores[: len(toks)])).all()
    # the importance matrix changes how K-quants round: same type, different bytes
    plain = hq.quantize(f16, tmp_path / "plain.gguf", QuantizeOptions(qtype="q4_k_m", threads=2, modelfile=False))
    weighted = hq.quantize(f16, tmp_path / "weighted.gguf",
                           QuantizeOptions(qtype="q4_k_m", imatrix=path, threads=2, modelfile=False))
    import gguf

    a, b = gguf.GGUFReader(str(plain)), gguf.GGUFReader(str(weighted))
    assert [(t.name, t.tensor_type) for t in a.tensors] == [(t.name, t.tensor_type) for t in b.tensors]
    assert any(not np.array_equal(x.data, y.data) for x, y in zip(a.tensors, b.tensors))
    assert "quantize.imatrix.file" in b.fields and "quantize.imatrix.file" not in a.fields  # as llama-quantize


def test_install_hint_and_availability():
    assert "scripts/setup.sh" in hq.install_hint() and "llama-quantize" in hq.install_hint()
    assert isinstance(hq.llama_cpp_available(), bool)


# ---------------------------------------------------------------------------------------------- Colab install plan
@pytest.mark.parametrize("cuda, want_gpu, tags, expect_tag, expect_gpu", [
    (None, False, (), "cpu", False),                           # CPU runtime
    (None, True, ("cu121", "cu124"), "cpu", False),            # notebook 01 asks for CUDA; a CPU runtime: CPU wheel
    ("12.4", False, ("cu121", "cu124"), "cpu", False),         # conversion / quantization: the CPU wheel
    ("12.4", True, ("cu121", "cu122", "cu124", "cu125"), "cu124", True),  # the matching CUDA wheel
    ("12.6", True, ("cu121", "cu122", "cu124", "cu125"), "cu125", True),  # newest wheel a 12.6 runtime runs
    ("12.0", True, ("cu121", "cu124"), "cpu", False),          # no wheel old enough: CPU, never a silent build
    ("13.0", True, ("cu121", "cu124"), "cpu", False),          # another major version
])
def test_colab_wheel_choice(cuda, want_gpu, tags, expect_tag, expect_gpu):
    plan = hq_llamacpp.choose_wheel(cuda=cuda, want_gpu=want_gpu, cuda_tags=tags)
    assert (plan.tag, plan.gpu) == (expect_tag, expect_gpu)
    if want_gpu and cuda and not expect_gpu:
        assert "20-60 minutes" in plan.note and "build_from_source=True" in plan.note


def test_colab_install_never_builds_from_source_unasked(monkeypatch):
    """A missing CUDA wheel means the CPU wheel, and a failed wheel install is an error that names the source
    build and its time, never a 20-60 minute build nobody asked for."""
    import subprocess
    import sys
    import types

    calls = []
    monkeypatch.setattr(hq_llamacpp, "llama_cpp_available", lambda: False)
    monkeypatch.setattr(hq_llamacpp, "available_cuda_tags", lambda version: ["cu121"])
    fake_torch = types.SimpleNamespace(version=types.SimpleNamespace(cuda="12.0"),
                                       cuda=types.SimpleNamespace(is_available=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: calls.append(cmd) or 1)
    with pytest.raises(UserError, match="build_from_source=True"):
        hq_llamacpp.colab_install_llama_cpp(gpu=True)
    assert len(calls) == 1 and "--only-binary" in calls[0] and calls[0][-1].endswith("/cpu")
    calls.clear()
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: calls.append((cmd, kw.get("env", {}))) or 0)
    plan = hq_llamacpp.colab_install_llama_cpp(gpu=True, build_from_source=True)
    assert plan.tag is None and "--no-binary" in calls[0][0] and "GGML_CUDA=on" in calls[0][1]["CMAKE_ARGS"]


def test_colab_install_adds_the_server_extra_when_asked_even_over_an_installed_wheel(monkeypatch):
    """Notebook 03 starts llama-cpp-python's OpenAI server, whose web modules the plain wheel lacks: its setup asks
    for the ``[server]`` extra, which is installed even when llama-cpp-python itself already is."""
    import subprocess
    import sys
    import types

    calls = []
    monkeypatch.setattr(hq_llamacpp, "llama_cpp_available", lambda: True)
    monkeypatch.setattr(hq_llamacpp, "server_extras_missing", lambda: ["sse_starlette"])
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(
        version=types.SimpleNamespace(cuda=None), cuda=types.SimpleNamespace(is_available=lambda: False)))
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: calls.append(cmd) or 0)
    hq_llamacpp.colab_install_llama_cpp(server=True)
    assert len(calls) == 1 and f"llama-cpp-python[server]=={hq_llamacpp.LLAMA_CPP_VERSION}" in calls[0]
    calls.clear()
    monkeypatch.setattr(hq_llamacpp, "server_extras_missing", lambda: [])
    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(__version__="x",
                                                                        llama_supports_gpu_offload=lambda: False))
    assert hq_llamacpp.colab_install_llama_cpp(server=True).tag == "installed" and calls == []


def test_a_rerun_keeps_the_same_quantization_of_a_merge_and_redoes_another(demo, tmp_path, capsys):
    """quantize() of a merge's GGUF: the output carries the merge's job (the quantizer copies the source's keys), so
    the same source, type and matrix are not quantized again; another merge in the same place is."""
    from helpers.gguf import QuantizeOptions, quantize
    from helpers.merge import MergeOptions, Recipe, merge

    src = tmp_path / "m-f16.gguf"
    merge(Recipe(demo / "Llama-2-7b-hf", [demo / "chinese-alpaca-2-lora-7b"]), src,
          MergeOptions(fmt="gguf", outtype="f16", progress=False))
    out = quantize(src, tmp_path / "m-q8_0.gguf", QuantizeOptions(qtype="q8_0"))
    first = out.read_bytes()
    mtime = out.stat().st_mtime_ns
    capsys.readouterr()
    quantize(src, out, QuantizeOptions(qtype="q8_0"))
    assert "already the q8_0" in capsys.readouterr().err and out.stat().st_mtime_ns == mtime
    merge(Recipe(demo / "Llama-2-7b-hf", [demo / "chinese-llama-2-lora-7b"]), src,
          MergeOptions(fmt="gguf", outtype="f16", progress=False, overwrite=True))
    quantize(src, out, QuantizeOptions(qtype="q8_0"))
    assert "already" not in capsys.readouterr().err and out.read_bytes() != first


def test_the_quantizer_log_drives_a_progress_bar(f16, tmp_path, monkeypatch):
    """Without --verbose, the per-tensor lines llama.cpp logs move a progress bar to the tensor count."""
    from helpers.gguf import llama_quantize as lq

    monkeypatch.setenv("HELPERS_NO_PROGRESS", "0")  # the tests' environment turns bars off
    seen = []
    real = lq._TensorProgress.__call__
    monkeypatch.setattr(lq._TensorProgress, "__call__", lambda self, text: (real(self, text), seen.append(
        self.bar.n if self.bar is not None else None)))
    lq.quantize(f16, tmp_path / "q.gguf", QuantizeOptions(qtype="q8_0", modelfile=False))
    counts = [n for n in seen if n is not None]
    assert counts and counts == sorted(counts) and counts[-1] == len(gguf.GGUFReader(str(f16)).tensors)


@pytest.mark.parametrize("qtype", ["f16", "q4_k_m", "q2_k"])
def test_requantized_bytes_is_the_quantizers_data_to_the_byte(smollm2, tmp_path, qtype):
    """The size the plans use for llama.cpp's quantizer's output: its tensor data exactly, on a real 30-layer model
    (per-tensor rules, a tied output, widths that force fallbacks), float targets included."""
    from helpers.gguf.layout import requantized_bytes

    out = hq.quantize(smollm2, tmp_path / f"{qtype}.gguf",
                      QuantizeOptions(qtype=qtype, requantize=True, modelfile=False))
    src_offset = gguf.GGUFReader(str(smollm2)).data_offset
    written = out.stat().st_size - gguf.GGUFReader(str(out)).data_offset
    assert requantized_bytes(str(smollm2), qtype) - src_offset == written
