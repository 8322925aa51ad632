"""Merging straight into a llama.cpp quantization type, and resuming an interrupted GGUF write.

The reference is llama.cpp's own quantizer (``llama_model_quantize`` from llama-cpp-python) run on the F16
GGUF of the same merge: the one-pass output must hold the same tensors (names, types, shapes, bytes), and in
fact be the same file.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

from helpers.merge import MergeOptions, Recipe, merge  # noqa: E402
from helpers.merge.stream import INTERRUPT_ENV  # noqa: E402
from helpers.util import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["q4_0", "q8_0", "q4_k_m", "q4_k_s", "q5_k_m", "q6_k", "q3_k_l", "q2_k"]
DEMO_CASES = {  # demo base, LoRAs
    "llama2": ("Llama-2-7b-hf", ["chinese-alpaca-2-lora-7b"]),
    "alpaca-v1": ("llama-7b", ["chinese-alpaca-lora-7b"]),
    "llama3-gqa": ("Meta-Llama-3-8B-Instruct", ["llama-3-chinese-8b-instruct-v2-lora"]),
}
IMATRIX_DATASET, IMATRIX_CHUNKS = "synthetic-zh", 3


# ------------------------------------------------------------------------------------------------ inputs
def tiny_model(root: Path, demo: Path, name: str, spec, seed: int) -> tuple[Path, Path]:
    """A base model of ``spec`` with the demo Llama-2 tokenizer, and a LoRA on its 7 projections."""
    from helpers.demo.weights import base_state_dict, hf_config, lora_state_dict, write_hf_model, write_lora
    from helpers.tokens import piece_count

    tok = demo / "Llama-2-7b-hf"
    vocab = piece_count((tok / "tokenizer.model").read_bytes())
    sd = base_state_dict(spec, vocab, seed=seed)
    base, lora = root / name, root / f"{name}-lora"
    base.mkdir()
    lora.mkdir()
    write_hf_model(base, sd, hf_config(spec, vocab), fmt="safetensors", single=True)
    for f in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tok / f, base / f)
    write_lora(lora, lora_state_dict(sd, spec, r=8, vocab=None, seed=seed + 1), r=8, alpha=16.0,
               base_name="meta-llama/Llama-2-7b-hf", old_peft=False, fmt="safetensors", modules_to_save=False)
    return base, lora


@pytest.fixture(scope="module")
def cases(demo, tmp_path_factory) -> dict:
    """{case: (base, [loras])}: the demo merges, plus

    - ``odd``: widths that are not multiples of 256 (hidden 320, FFN 880, which is not even a multiple of 32),
      10 layers, 4 query heads per key/value head: the K-quant fallbacks, F16 fallbacks and GQA rules;
    - ``deep``: 80 layers with grouped-query attention, which llama.cpp treats as a 70B (more bits for attn_v).
    """
    from helpers.demo.weights import TinySpec

    root = tmp_path_factory.mktemp("quant-models")
    out = {k: (demo / b, [demo / x for x in ls]) for k, (b, ls) in DEMO_CASES.items()}
    base, lora = tiny_model(root, demo, "odd", TinySpec(hidden=320, intermediate=880, layers=10, heads=8, kv_heads=2), 5)
    out["odd"] = (base, [lora])
    base, lora = tiny_model(root, demo, "deep", TinySpec(hidden=256, intermediate=256, layers=80, heads=8,
                                                         kv_heads=2), 6)
    out["deep"] = (base, [lora])
    return out


@pytest.fixture(scope="module")
def f16(cases, tmp_path_factory):
    """The F16 GGUF of each case's merge (what the two-step path writes first), made once."""
    d = tmp_path_factory.mktemp("f16")
    made: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in made:
            base, loras = cases[case]
            made[case] = merge(Recipe(base, loras), d / case / "model.gguf",
                               MergeOptions(fmt="gguf", outtype="f16", progress=False, write_sha256=False)).outputs[0]
        return made[case]

    return get


def write_imatrix(f16_path: Path, out: Path, *, seed: int = 0, skip: str | None = None) -> Path:
    """A synthetic importance matrix (llama-imatrix's GGUF layout) for every 2-D block tensor of ``f16_path``."""
    g = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(out), "imatrix")
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", [IMATRIX_DATASET])
    w.add_uint32("imatrix.chunk_count", IMATRIX_CHUNKS)
    w.add_uint32("imatrix.chunk_size", 512)
    for t in gguf.GGUFReader(str(f16_path)).tensors:
        if t.name.startswith("blk.") and len(t.shape) == 2 and t.name != skip:
            w.add_tensor(t.name + ".in_sum2", (g.random((1, int(t.shape[0]))) * 50 + 0.01).astype(np.float32))
            w.add_tensor(t.name + ".counts", np.array([[40.0]], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def llama_quantize(src: Path, dst: Path, qtype: str, imatrix: Path | None = None) -> Path:
    """llama.cpp's quantizer on ``src``, with the ``quantize.imatrix.*`` keys the llama-quantize tool adds."""
    from helpers.gguf.llamacpp import quiet_llama_log
    from helpers.gguf.types import FTYPES
    from helpers.gguf.imatrix import imatrix_struct, read_imatrix

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype]
    params.nthread = 2
    keep = []
    if imatrix is not None:
        data = read_imatrix(imatrix)
        arr, bufs = imatrix_struct(data)
        params.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        kvs = [("quantize.imatrix.file", str(imatrix)), ("quantize.imatrix.dataset", IMATRIX_DATASET),
               ("quantize.imatrix.entries_count", len(data)), ("quantize.imatrix.chunks_count", IMATRIX_CHUNKS)]
        overrides = (llama_cpp.llama_model_kv_override * (len(kvs) + 1))()
        for o, (key, value) in zip(overrides, kvs):
            o.key = key.encode()
            if isinstance(value, str):
                o.tag, o.value.val_str = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR, value.encode()
            else:
                o.tag, o.value.val_i64 = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT, value
        overrides[len(kvs)].key = b""
        params.kv_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_kv_override))
        keep += [arr, bufs, overrides]
    with quiet_llama_log():
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    assert rc == 0, f"llama.cpp could not quantize {src} to {qtype}"
    return dst


def tensors(path: Path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def assert_same_quantization(ours: Path, ref: Path) -> None:
    """Tensor for tensor (name, type, shape, bytes), their order and padding in the data section, then the
    metadata. A merge records its job (inputs and options, ``helpers.merge.job``) in its GGUF; the F16 the
    reference was quantized from records its own (f16) job, so that one key may differ: nothing else may."""
    from helpers.gguf import JOB_KEY

    a, b = tensors(ours), tensors(ref)
    assert list(a) == list(b)  # the same order
    base_a, base_b = min(t.data_offset for t in a.values()), min(t.data_offset for t in b.values())
    for name, t in a.items():
        r = b[name]
        assert (t.tensor_type.name, list(t.shape)) == (r.tensor_type.name, list(r.shape)), name
        assert t.data_offset - base_a == r.data_offset - base_b, name  # the same padding
        assert np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(r.data).view(np.uint8)), name
    fa, fb = gguf.GGUFReader(str(ours)).fields, gguf.GGUFReader(str(ref)).fields
    assert list(fa) == list(fb)
    assert all(fa[k].contents() == fb[k].contents() for k in fa if not k.startswith("GGUF.") and k != JOB_KEY)
    if JOB_KEY not in fa:
        assert ours.read_bytes() == ref.read_bytes()  # to-gguf: the whole file


def one_pass(cases, case: str, qtype: str, out: Path, **kw) -> Path:
    base, loras = cases[case]
    options = MergeOptions(fmt="gguf", outtype=qtype, progress=False, write_sha256=False, **kw)
    return merge(Recipe(base, loras), out, options).outputs[0]


# ------------------------------------------------------------------------------------------------ vs llama.cpp
@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("case", [*DEMO_CASES, "odd"])
def test_one_pass_equals_llama_cpp_quantizer(cases, f16, tmp_path, case, qtype):
    ours = one_pass(cases, case, qtype, tmp_path / f"{qtype}.gguf")
    ref = llama_quantize(f16(case), tmp_path / "ref.gguf", qtype)
    assert_same_quantization(ours, ref)
    from helpers.gguf.types import FTYPES

    assert gguf.GGUFReader(str(ours)).fields["general.file_type"].contents() == FTYPES[qtype]
    assert not list(tmp_path.glob(".*"))  # no partial folder left


def test_the_rules_are_exercised(cases, f16, tmp_path):
    """What the comparisons above cover: mixes, fallbacks for rows that do not split into blocks, GQA."""
    types = {n: t.tensor_type.name for n, t in tensors(one_pass(cases, "odd", "q4_k_m", tmp_path / "a.gguf")).items()}
    assert types["output.weight"] == "Q8_0"  # K-quant output with rows of 320: Q8_0
    assert types["blk.0.ffn_down.weight"] == "F16"  # rows of 880 fit no block
    assert types["blk.0.attn_q.weight"] == "Q5_0"  # Q4_K -> Q5_0
    assert types["blk.0.attn_norm.weight"] == "F32"
    types = {n: t.tensor_type.name for n, t in tensors(one_pass(cases, "llama2", "q4_k_m", tmp_path / "b.gguf")).items()}
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"
    assert types["blk.1.attn_v.weight"] == "Q6_K" and types["blk.1.ffn_down.weight"] == "Q6_K"  # use_more_bits
    assert types["blk.0.attn_v.weight"] == "Q4_K" and types["blk.0.ffn_down.weight"] == "Q4_K"


def test_80_layer_gqa_is_treated_as_70b(cases, f16, tmp_path):
    ours = one_pass(cases, "deep", "q3_k_m", tmp_path / "deep.gguf")
    assert_same_quantization(ours, llama_quantize(f16("deep"), tmp_path / "ref.gguf", "q3_k_m"))
    types = {n: t.tensor_type.name for n, t in tensors(ours).items()}
    assert {types[f"blk.{i}.attn_v.weight"] for i in range(80)} == {"Q5_K"}  # the 70B bump
    assert types["blk.0.ffn_down.weight"] == "Q5_K" and types["blk.40.ffn_down.weight"] == "Q4_K"


@pytest.mark.parametrize("case,qtype", [("llama2", "iq4_xs"), ("odd", "iq4_xs"), ("odd", "iq2_xxs"),
                                        ("llama3-gqa", "q2_k_s"), ("alpaca-v1", "q4_k_m"), ("odd", "q4_0")])
def test_with_importance_matrix(cases, f16, tmp_path, case, qtype):
    imatrix = write_imatrix(f16(case), tmp_path / "m.imatrix")
    ours = one_pass(cases, case, qtype, tmp_path / f"{qtype}.gguf", imatrix=imatrix)
    assert_same_quantization(ours, llama_quantize(f16(case), tmp_path / "ref.gguf", qtype, imatrix))
    if qtype in ("q4_k_m", "q4_0"):  # the weights change how the same types round: the comparison can fail
        a, b = tensors(ours), tensors(llama_quantize(f16(case), tmp_path / "plain.gguf", qtype))
        assert {n: t.tensor_type for n, t in a.items()} == {n: t.tensor_type for n, t in b.items()}
        assert any(not np.array_equal(a[n].data, b[n].data) for n in a)


# ------------------------------------------------------------------------------------------------ low-bit types
LOW_BIT = ["iq3_xxs", "iq3_s", "iq4_xs", "q3_k_m", "q2_k"]


@pytest.fixture(scope="module")
def real_imatrix(f16, tmp_path_factory) -> Path:
    """This project's importance matrix of the llama2 demo merge (its F16), on the demo's Chinese text."""
    from helpers.evaluate import ChunkSettings
    from helpers.imatrix.compute import compute_imatrix

    out = tmp_path_factory.mktemp("imatrix") / "imatrix.gguf"
    text = ROOT / "helpers" / "data" / "corpus_zh.txt"
    return compute_imatrix(f16("llama2"), text, out, settings=ChunkSettings(n_ctx=64, chunks=6),
                           show_progress=False).path


def llama_quantize_tool(tool: Path, src: Path, dst: Path, qtype: str, imatrix: Path | None = None) -> Path:
    """The ``llama-quantize`` program itself (built from the sdist by scripts/setup.sh)."""
    args = [str(tool)] + (["--imatrix", str(imatrix)] if imatrix is not None else []) + [str(src), str(dst),
                                                                                          qtype.upper(), "2"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return dst


@pytest.mark.parametrize("qtype", LOW_BIT)
def test_low_bit_one_pass_equals_llama_quantize_tool(cases, f16, real_imatrix, llama_tool, tmp_path, qtype):
    """merge --outtype <low-bit> --imatrix FILE == llama-quantize --imatrix FILE on the merge's F16, byte for byte
    (the importance matrix computed here on the model itself)."""
    ours = one_pass(cases, "llama2", qtype, tmp_path / "ours.gguf", imatrix=real_imatrix)
    ref = llama_quantize_tool(llama_tool("llama-quantize"), f16("llama2"), tmp_path / "ref.gguf", qtype, real_imatrix)
    assert_same_quantization(ours, ref)
    fields = gguf.GGUFReader(str(ours)).fields
    assert fields["quantize.imatrix.entries_count"].contents() == 2 * 7
    if qtype in ("iq3_xxs", "q2_k"):  # the two-step path (quantize an F16 GGUF) is the tool's file too
        from helpers.gguf import QuantizeOptions, quantize

        two = quantize(f16("llama2"), tmp_path / "two.gguf",
                       QuantizeOptions(qtype=qtype, imatrix=real_imatrix, modelfile=False))
        assert two.read_bytes() == ref.read_bytes()


def test_low_bit_imatrix_changes_the_result(cases, f16, real_imatrix, tmp_path):
    """The matrix is used: IQ4_XS with and without it differ in the quantized bytes, not in the types."""
    a = tensors(one_pass(cases, "llama2", "iq4_xs", tmp_path / "a.gguf", imatrix=real_imatrix))
    b = tensors(one_pass(cases, "llama2", "iq4_xs", tmp_path / "b.gguf"))
    assert {n: t.tensor_type for n, t in a.items()} == {n: t.tensor_type for n, t in b.items()}
    assert sum(not np.array_equal(a[n].data, b[n].data) for n in a if n.startswith("blk.")) >= 10


def test_imatrix_of_another_model_is_one_error_line(cases, f16, real_imatrix, tmp_path, capfd):
    from helpers.__main__ import main

    base, loras = cases["odd"]  # 10 layers, rows of 320 and 880: the llama2 demo's matrix does not fit
    runs = [["merge", "--base", str(base), "--lora", str(loras[0]), "--out", str(tmp_path / "m.gguf"), "--format",
             "gguf", "--outtype", "iq4_xs", "--imatrix", str(real_imatrix)],
            ["quantize", "--model", str(f16("odd")), "--out", str(tmp_path / "q.gguf"), "--type", "iq4_xs",
             "--imatrix", str(real_imatrix)],
            ["quantize", "--model", str(f16("odd")), "--out", str(tmp_path / "q.gguf"), "--type", "iq3_xxs"]]
    for args, message in zip(runs, ["computed for another model", "computed for another model",
                                    "iq3_xxs needs an importance matrix"]):
        assert main(args) == 2
        err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
        assert err[-1].startswith("error: ") and message in err[-1], err
        assert sum(line.startswith("error") for line in err) == 1
    assert list(tmp_path.iterdir()) == []


def test_float16_rounding_is_torchs():
    """The quantizer rounds through float16 with ggml's conversion; the F16 GGUF is written by torch's."""
    import numpy as np
    import torch

    from helpers.gguf.ggml import ggml_library

    def round_through_f16(a: np.ndarray) -> np.ndarray:  # ggml's own conversions, as the quantizer uses them
        lib, half, out = ggml_library(), np.empty(a.size, np.float16), np.empty(a.size, np.float32)
        lib.ggml_fp32_to_fp16_row(a.ctypes.data, half.ctypes.data, a.size)
        lib.ggml_fp16_to_fp32_row(half.ctypes.data, out.ctypes.data, a.size)
        return out

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1 << 20, generator=g) * torch.exp(torch.randn(1 << 20, generator=g) * 7)  # 1e-20 ... 1e+20
    x[:8] = torch.tensor([65504.0, 65519.99, 65520.0, 6.1035e-05, 5.9605e-08, 2.9802e-08, -2.9803e-08, -0.0])
    assert torch.equal(torch.from_numpy(round_through_f16(x.numpy())), x.half().float())


def test_imatrix_metadata_of_legacy_files(tmp_path):
    """llama-imatrix's old .dat: entries, then (optionally) the chunk count and the dataset name."""
    import struct

    from helpers.gguf.imatrix import imatrix_metadata

    body = struct.pack("<i", 1) + struct.pack("<i", 3) + b"abc" + struct.pack("<ii", 2, 4) + b"\0" * 16
    (tmp_path / "a.dat").write_bytes(body)
    (tmp_path / "b.dat").write_bytes(body + struct.pack("<ii", 7, 5) + b"wiki2")
    assert imatrix_metadata(tmp_path / "a.dat") == ([], 0)
    assert imatrix_metadata(tmp_path / "b.dat") == (["wiki2"], 7)


def test_to_gguf_quantizes_in_one_pass(demo, tmp_path):
    from helpers.__main__ import main
    from helpers.gguf import convert_hf_to_gguf

    model = demo / "chinese-alpaca-2-7b"
    out = tmp_path / "m.gguf"
    assert main(["to-gguf", "--model", str(model), "--out", str(out), "--outtype", "Q5_K_S"]) == 0
    ref = llama_quantize(convert_hf_to_gguf(model, tmp_path / "f16" / "m.gguf"), tmp_path / "ref.gguf", "q5_k_s")
    assert_same_quantization(out, ref)
    assert (tmp_path / "m.Modelfile").is_file() and (tmp_path / "m.gguf.sha256").is_file()


@pytest.mark.parametrize("case", ["llama2", "odd"])
def test_llama_cpp_loads_and_generates(cases, tmp_path, case):
    path = one_pass(cases, case, "q4_k_m", tmp_path / "q4.gguf")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, logits_all=True, verbose=False)
    toks = llm.tokenize("北京是中国的首都".encode(), add_bos=True, special=False)
    llm.eval(toks)
    assert np.isfinite(np.array(llm.scores[: len(toks)])).all()
    out = llm.create_completion("北京", max_tokens=4, temperature=0.0)
    assert out["usage"]["completion_tokens"] >= 1


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("extra,message", [
    (["--format", "gguf", "--outtype", "iq2_xxs"], "iq2_xxs needs an importance matrix"),
    (["--format", "gguf", "--outtype", "iq3_xxs"], "iq3_xxs needs an importance matrix"),
    (["--format", "gguf", "--outtype", "q9_z"], "unknown GGUF output type 'q9_z'"),
    (["--format", "hf", "--outtype", "q4_k_m"], "not available for --format hf"),
    (["--format", "gguf", "--outtype", "f16", "--imatrix", "x.imatrix"], "--imatrix is used only when quantizing"),
    (["--format", "gguf", "--outtype", "iq4_xs", "--imatrix", "missing.imatrix"], "missing.imatrix not found"),
])
def test_bad_types_give_one_error_line(demo, tmp_path, capfd, extra, message):
    from helpers.__main__ import main

    (tmp_path / "x.imatrix").write_bytes(b"x")
    out = tmp_path / "out"
    args = ["merge", "--base", str(demo / "Llama-2-7b-hf"), "--lora", str(demo / "chinese-alpaca-2-lora-7b"),
            "--out", str(out), *[a if not a.endswith(".imatrix") else str(tmp_path / a) for a in extra]]
    assert main(args) == 2
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], captured.err
    assert "merging" not in captured.out  # refused before the inputs were opened
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.imatrix"]
    assert main(["to-gguf", "--model", str(demo / "chinese-alpaca-2-7b"), "--out", str(tmp_path / "t.gguf"),
                 "--outtype", "iq2_xxs"]) == 2
    assert "needs an importance matrix" in capfd.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.imatrix"]


def test_importance_matrix_that_does_not_fit(cases, f16, tmp_path):
    other = write_imatrix(f16("llama2"), tmp_path / "other.imatrix")  # made for another model's widths
    with pytest.raises(UserError, match="computed for another model"):
        one_pass(cases, "odd", "iq4_xs", tmp_path / "a.gguf", imatrix=other)
    partial = write_imatrix(f16("llama2"), tmp_path / "partial.imatrix", skip="blk.1.ffn_up.weight")
    with pytest.raises(UserError, match="no entry for blk.1.ffn_up.weight, which this model has"):
        one_pass(cases, "llama2", "q4_k_m", tmp_path / "b.gguf", imatrix=partial)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.imatrix", "partial.imatrix"]


# ------------------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("qtype", ["f16", "q4_k_m"])
def test_interrupted_gguf_merge_resumes(cases, tmp_path, monkeypatch, qtype):
    out = tmp_path / "run" / "m.gguf"
    monkeypatch.setenv(INTERRUPT_ENV, "7")
    with pytest.raises(KeyboardInterrupt):
        one_pass(cases, "llama2", qtype, out)
    partial = out.with_name(".m.gguf.partial")
    assert not out.exists() and json.loads((partial / ".gguf-state.json").read_text())["done"] == 7
    monkeypatch.delenv(INTERRUPT_ENV)
    base, loras = cases["llama2"]
    res = merge(Recipe(base, loras), out, MergeOptions(fmt="gguf", outtype=qtype, progress=False, write_sha256=False))
    assert res.tensors_resumed == 7 and res.tensors_written == len(tensors(out)) - 7
    clean = one_pass(cases, "llama2", qtype, tmp_path / "clean" / "m.gguf")
    assert out.read_bytes() == clean.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.Modelfile", "m.gguf"]


def test_partial_of_another_job_is_discarded(cases, tmp_path, monkeypatch):
    out = tmp_path / "m.gguf"
    monkeypatch.setenv(INTERRUPT_ENV, "5")
    with pytest.raises(KeyboardInterrupt):
        one_pass(cases, "llama2", "q4_k_m", out)
    monkeypatch.delenv(INTERRUPT_ENV)
    base, loras = cases["llama2"]
    res = merge(Recipe(base, loras), out,
                MergeOptions(fmt="gguf", outtype="q5_k_m", progress=False, write_sha256=False))
    assert res.tensors_resumed == 0
    assert out.read_bytes() == one_pass(cases, "llama2", "q5_k_m", tmp_path / "clean" / "m.gguf").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "m.Modelfile", "m.gguf"]


def test_split_output_resumes(demo, tmp_path, monkeypatch):
    """to-gguf into shards, interrupted inside the second shard, then rerun: the same shards."""
    from helpers.gguf import GGUFSink
    from helpers.gguf.convert import convert_to_gguf_files

    model = demo / "chinese-alpaca-2-7b"
    clean = convert_to_gguf_files(model, tmp_path / "clean" / "s.gguf", outtype="q6_k", split_max_size=400_000)
    assert len(clean) >= 3
    calls, real_write = [], GGUFSink.write

    def write(self, name, tensor):
        if len(calls) == 15:
            raise KeyboardInterrupt
        calls.append(name)
        real_write(self, name, tensor)

    monkeypatch.setattr(GGUFSink, "write", write)
    with pytest.raises(KeyboardInterrupt):
        convert_to_gguf_files(model, tmp_path / "s.gguf", outtype="q6_k", split_max_size=400_000)
    monkeypatch.setattr(GGUFSink, "write", real_write)
    files = convert_to_gguf_files(model, tmp_path / "s.gguf", outtype="q6_k", split_max_size=400_000)
    assert [f.name for f in files] == [f.name for f in clean]
    assert all(f.read_bytes() == c.read_bytes() for f, c in zip(files, clean))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["clean", *(f.name for f in files)])


KILLABLE = r"""
import sys, time
import helpers.gguf.partial as partial
partial.SYNC_SECONDS = 0.0  # record every tensor, so the kill lands after some records
put = partial.PartialGGUF.put
def slow_put(self, shard, offset, data):
    put(self, shard, offset, data)
    print("put", flush=True)
    time.sleep(0.05)  # data written, not yet recorded: the worst moment to be killed
partial.PartialGGUF.put = slow_put
from helpers.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_then_rerun(cases, tmp_path):
    base, loras = cases["odd"]
    out = tmp_path / "m.gguf"
    args = ["merge", "--base", str(base), "--lora", str(loras[0]), "--out", str(out), "--format", "gguf",
            "--outtype", "q4_k_m", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HELPERS_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, *args], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT)
    seen = 0
    while seen < 30:
        line = proc.stdout.readline()
        assert line, "the merge ended before it could be killed"
        seen += line == "put\n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    rerun = subprocess.run([sys.executable, "-m", "helpers", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed" in rerun.stdout
    clean = one_pass(cases, "odd", "q4_k_m", tmp_path / "clean" / "m.gguf")
    assert out.read_bytes() == clean.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "m.Modelfile", "m.gguf", "m.gguf.sha256"]


def test_llama_cpp_log_adapter_finds_the_librarys_callback():
    """llama-cpp-python has no public accessor for its own log callback; the one adapter that reaches for it must
    find it in the installed version (a new version that moves it fails here, not silently in users' logs)."""
    import importlib
    import logging

    from helpers.gguf.llamacpp import LLAMA_CPP_LOGGER, llama_cpp_log_callback

    callback = llama_cpp_log_callback()
    assert callback is not None and isinstance(callback, llama_cpp.llama_log_callback)
    assert logging.getLogger(LLAMA_CPP_LOGGER) is importlib.import_module("llama_cpp._logger").logger
