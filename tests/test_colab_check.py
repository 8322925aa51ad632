"""The stages' dry run (``helpers.stages``, ``python -m helpers colab-check``): the forms the notebooks show, sizes
against independent references, the verdicts on free Colab's runtimes, and fixes named as the forms' parameters
that the plan then accepts."""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.catalog import config_of, get
from helpers.colab import FREE_COLAB_DISK, NO, OK, SLOW, Runtime
from helpers.colab.params import notebook_params, notebook_setup
from helpers.colab.sizing import kv_cache_bytes, weight_bytes
from helpers.gguf import BITS_PER_WEIGHT
from helpers.merge import MergeOptions, plan_resources
from helpers.stages import STAGES, ChatStage, EvalStage, FinetuneStage, MergeStage
from helpers.stages.merge import release_target
from helpers.stages import find_stage
from helpers.util import UserError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
T4 = Runtime.free_colab(gpu=True, setup=ChatStage.SETUP)
CPU = Runtime.free_colab(gpu=False)


def row(plan, what: str):
    return next(n for n in plan.needs if n.what == what)


# ------------------------------------------------------------------------------------------------ the forms
@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_notebooks_form_is_its_stage(name):
    """The parameters cell shows exactly the stage's fields: names, defaults, dropdowns, in order."""
    path = NOTEBOOKS / f"{name}.ipynb"
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    cell = next("".join(c["source"]) for c in cells if "parameters" in c["metadata"].get("tags", []))
    shown = {m[1]: m[2] for m in re.finditer(r"^(\w+) = .*?  (# @param .*)$", cell, re.M)}
    fields = STAGES[name].form_fields()
    assert notebook_params(path) == {f.name: f.default for f in fields}
    assert list(shown) == [f.name for f in fields] and shown == {f.name: f.annotation() for f in fields}
    assert notebook_setup(path) == STAGES[name].SETUP
    assert ("accelerator" in json.loads(path.read_text(encoding="utf-8"))["metadata"]) == STAGES[name].GPU


def test_no_form_name_is_spelled_elsewhere_in_helpers():
    """A form's names exist only as its fields: no string in helpers/ names one (``"OUTTYPE"``, ``OUTTYPE=``)."""
    names = {f.name for s in STAGES.values() for f in s.form_fields()}
    pattern = re.compile(r"\b(" + "|".join(sorted(names)) + r")\s*=|^(" + "|".join(sorted(names)) + r")$")
    found = []
    for path in sorted((ROOT / "helpers").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.search(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:60]!r}")
    assert found == []


def test_overrides_take_the_defaults_types_and_refuse_unknown_names():
    s = FinetuneStage.from_sets(["LOAD_IN_4BIT=false", "LORA_R=16", "LEARNING_RATE=2e-4", "BASE_MODEL=x=y"])
    assert s.load_in_4bit is False and s.lora_r == 16 and s.learning_rate == 2e-4 and s.base_model == "x=y"
    with pytest.raises(UserError, match="no parameter LORA_RANK; its parameters are: BASE_MODEL, DATA"):
        FinetuneStage.from_sets(["LORA_RANK=8"])
    with pytest.raises(UserError, match="whole number"):
        FinetuneStage.from_sets(["LORA_R=8.5"])
    with pytest.raises(UserError, match="yes/no"):
        FinetuneStage.from_sets(["LOAD_IN_4BIT=maybe"])
    with pytest.raises(UserError, match="NAME=VALUE"):
        FinetuneStage.from_sets(["LORA_R"])
    with pytest.raises(UserError, match="OUTPUT_FORMAT = 'onnx' is not one of"):
        MergeStage(output_format="onnx")


def test_the_readmes_run_and_check_lines_name_real_notebooks_and_parameters():
    """Every ``python -m helpers run|colab-check NN --set NAME=VALUE`` line of the README builds its notebook's form."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = re.findall(r"^python -m helpers (?:run|colab-check) (\S+)(.*)$", text, re.M)
    assert len([n for n, _ in lines]) >= 5 and {find_stage(n).NOTEBOOK[:2] for n, _ in lines} >= {"01", "03", "05"}
    for notebook, rest in lines:
        find_stage(notebook).from_sets(re.findall(r"--set (\S+)", rest))


def test_notebooks_are_found_by_name_number_or_word():
    assert find_stage("01") is MergeStage and find_stage("finetune") is FinetuneStage
    assert find_stage(str(NOTEBOOKS / "05_vocab_and_eval.ipynb")) is EvalStage
    with pytest.raises(UserError, match="is no notebook"):
        find_stage("99")


# ------------------------------------------------------------------------------------------------ sizes
def test_weight_bytes_match_a_transformers_model_built_from_the_same_config():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = config_of(get("chinese-alpaca-2-7b"))
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**config))
    params = sum(p.numel() for p in model.parameters())
    assert weight_bytes(config, None) == params * 2
    assert weight_bytes(config, None, bytes_per_value=4) == params * 4
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and n != "lm_head")
    assert weight_bytes(config, "8bit") == linear + (params - linear) * 2
    assert linear * 0.5 < weight_bytes(config, "4bit") - (params - linear) * 2 < linear * 0.52


def test_kv_cache_bytes_match_the_cache_transformers_keeps():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 256}
    model = LlamaForCausalLM(LlamaConfig(**config)).eval()
    with torch.no_grad():
        cache = model(torch.arange(37)[None], use_cache=True).past_key_values
    held = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert kv_cache_bytes(config, 37, bytes_per_value=4) == held


def test_this_machine_is_measured(tmp_path):
    rt = Runtime.detect(tmp_path / "not" / "made" / "yet")
    assert rt.disk is not None and 0 < rt.disk and rt.ram is not None and rt.ram > 0
    assert not rt.assumed and "this" in rt.describe()


# ------------------------------------------------------------------------------------------------ merge
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_a_7b_q4_k_m_merge_fits_free_colab_and_matches_the_planner(monkeypatch):
    _offline(monkeypatch)
    plan = MergeStage().plan(CPU)
    assert plan.fits and row(plan, "llama.cpp").status == OK
    entry = get("chinese-alpaca-2-7b-lora")
    target = release_target(entry, "/content/merged", "gguf", "q4_k_m")
    assert plan.job.target == target and target.name == "chinese-alpaca-2-7b-q4_k_m.gguf"
    ref = plan_resources("meta-llama/Llama-2-7b-hf", ["hfl/chinese-alpaca-2-lora-7b"],
                         options=MergeOptions(fmt="gguf", outtype="q4_k_m"), out=target, offline=True,
                         free_disk=FREE_COLAB_DISK)
    assert row(plan, "disk").amount == ref.peak_disk and row(plan, "RAM").amount == ref.ram_bytes
    assert plan.job.resources.low_disk is False


def test_a_33b_merge_fits_free_colab_only_in_low_disk_mode_and_the_fix_says_so(monkeypatch):
    _offline(monkeypatch)
    auto = MergeStage(model="chinese-alpaca-33b-lora").plan(CPU)
    assert auto.fits and auto.job.resources.low_disk and "low-disk mode" in row(auto, "disk").need
    assert row(auto, "disk").amount == auto.job.resources.peak_disk_low < FREE_COLAB_DISK < auto.job.resources.peak_disk
    full = MergeStage(model="chinese-alpaca-33b-lora", low_disk="no").plan(CPU)
    assert not full.fits and row(full, "disk").status == NO
    assert full.fixes[0] == {"low_disk": "yes"}, full.fixes
    for fix in full.fixes:  # every fix is the notebook's own parameter, never a larger type, and it fits
        smaller = fix.get("outtype") is None or BITS_PER_WEIGHT[fix["outtype"]] < BITS_PER_WEIGHT["q4_k_m"]
        assert set(fix) <= {"low_disk", "outtype"} and smaller, fix
        assert dataclasses.replace(full.stage, **fix).plan(CPU).fits
    refusal = full.refusal()
    assert "LOW_DISK='yes'" in refusal and "--low-disk" not in refusal and "q8_0" not in refusal
    with pytest.raises(UserError, match="will not fit free Colab, CPU runtime"):
        full.check()


def test_a_quantization_type_with_an_hf_folder_is_refused_with_both_ways_out(monkeypatch):
    _offline(monkeypatch)
    plan = MergeStage(output_format="hf").plan(CPU)
    assert not plan.fits and row(plan, "output type").status == NO
    assert plan.fixes == [{"outtype": "f16"}, {"output_format": "gguf"}]


def test_a_quantized_gguf_without_llama_cpp_is_refused_with_the_install_hint(monkeypatch):
    _offline(monkeypatch)
    bare = dataclasses.replace(CPU, llama_cpp=False)
    plan = MergeStage().plan(bare)
    assert not plan.fits and "setup cell" in row(plan, "llama.cpp").fix
    f16 = MergeStage(outtype="f16").plan(bare)
    assert f16.fits and all(n.what != "llama.cpp" for n in f16.needs)


def test_a_gated_base_without_a_token_is_a_no_that_names_the_secret(monkeypatch):
    """Asked of the hub when it answers, else of the catalog: Llama-2 is gated; never "fits" without a token."""
    from helpers.hub import access as hub

    _offline(monkeypatch)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online, but the hub cannot be asked: the catalog decides
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert hub.access_problem("meta-llama/Llama-2-7b-hf") is not None
    assert hub.access_problem("huggyllama/llama-7b") is None
    monkeypatch.setattr("helpers.stages.merge.plan_resources", lambda *a, **kw: plan_resources(
        *a, **{**kw, "offline": True}))
    plan = MergeStage().plan(CPU)
    need = row(plan, "access to meta-llama/Llama-2-7b-hf")
    assert not plan.fits and need.status == NO and "HF_TOKEN" in need.fix and "licence" in need.fix
    assert MergeStage(model="chinese-alpaca-7b-lora").plan(CPU).fits  # LLaMA-1 (huggyllama) is not gated


# ------------------------------------------------------------------------------------------------ finetune
def test_finetuning_13b_in_16_bit_on_a_t4_is_refused_and_qlora_7b_fits(monkeypatch):
    _offline(monkeypatch)
    big = FinetuneStage(base_model="chinese-alpaca-2-13b", load_in_4bit=False).plan(T4)
    assert not big.fits and row(big, "GPU memory").status == NO and {"load_in_4bit": True} in big.fixes
    small = FinetuneStage().plan(T4)
    assert small.fits and row(small, "bitsandbytes").status == OK


def test_qlora_without_a_gpu_is_refused_naming_the_t4_runtime(monkeypatch):
    _offline(monkeypatch)
    plan = FinetuneStage().plan(CPU)
    assert row(plan, "GPU").status == NO and "T4 GPU" in plan.refusal()


# ------------------------------------------------------------------------------------------------ chat
def test_chat_on_a_t4_fits_4bit_and_not_16_bit_with_a_long_context(monkeypatch):
    _offline(monkeypatch)
    four = ChatStage().plan(T4)
    assert four.fits, four.summary()
    sixteen = ChatStage(quantization="none", draft_model="").plan(T4)
    assert row(sixteen, "GPU memory").status == NO and {"quantization": "4bit"} in sixteen.fixes


def test_4bit_chat_on_a_cpu_runtime_is_slow_in_float32_and_too_big_for_its_ram(monkeypatch):
    _offline(monkeypatch)
    plan = ChatStage().plan(CPU)
    assert row(plan, "GPU").status == SLOW and plan.job.quantization is None
    ram = row(plan, "RAM")
    assert "float32" in ram.need and ram.status == NO


def test_a_gguf_release_runs_in_llama_cpp_whatever_quantization_says(monkeypatch):
    """The dropdown's GGUF releases with the default 4bit: llama.cpp, the GGUF's own type, a note; never a
    refusal after the download."""
    _offline(monkeypatch)
    plan = ChatStage(model="chinese-alpaca-2-13b-gguf").plan(T4)
    assert plan.fits and plan.job.backend == "llama.cpp" and plan.job.quantization is None
    assert "q4_k" in row(plan, "GPU memory").need and any("transformers" in n for n in plan.notes)
    no_server = dataclasses.replace(T4, llama_cpp_server=False)
    refused = ChatStage(model="chinese-alpaca-2-13b-gguf", start_server=True).plan(no_server)
    assert "START_SERVER=False" in refused.refusal()
    assert ChatStage(model="chinese-alpaca-2-13b-gguf", start_server=False).plan(no_server).fits


def test_a_back_end_that_cannot_load_the_model_is_refused_before_the_download(monkeypatch):
    _offline(monkeypatch)
    gguf = ChatStage(model="chinese-alpaca-2-7b-gguf", backend="transformers").plan(T4)
    hf = ChatStage(backend="llama.cpp").plan(T4)
    for plan in (gguf, hf):
        assert not plan.fits and row(plan, "back end").status == NO and {"backend": "auto"} in plan.fixes


def test_a_draft_of_another_vocabulary_is_skipped_before_anything_loads(monkeypatch):
    _offline(monkeypatch)
    plan = ChatStage(model="llama-3-chinese-8b-instruct-v3", draft_model="chinese-alpaca-2-1.3b").plan(T4)
    assert plan.fits and plan.job.draft is None and any("speculative decoding skipped" in n for n in plan.notes)
    assert ChatStage(draft_model="chinese-alpaca-2-1.3b").plan(T4).job.draft == "chinese-alpaca-2-1.3b"


def test_the_chat_defaults_load_one_model_and_count_the_opt_ins_when_on(monkeypatch):
    """By default notebook 03 downloads and loads one model: no draft, no server. Asked for, the draft's download
    and memory join the model's (it is loaded beside it), and the server's GGUF is downloaded and counted too."""
    from helpers.colab.sizing import gguf_file, model_files, weight_bytes

    _offline(monkeypatch)
    one = ChatStage().plan(T4)
    assert (one.job.draft, one.job.server) == (None, None) and not any("server" in n.what for n in one.needs)
    draft = model_files("chinese-alpaca-2-1.3b")
    both = ChatStage(draft_model="chinese-alpaca-2-1.3b").plan(T4)
    assert both.job.draft == "chinese-alpaca-2-1.3b"
    assert row(both, "disk").amount == row(one, "disk").amount + draft.download(fresh=True)
    extra = row(both, "GPU memory").amount - row(one, "GPU memory").amount
    assert extra > weight_bytes(draft.config, None) and "draft chinese-alpaca-2-1.3b" in row(both, "GPU memory").need
    served = ChatStage(start_server=True).plan(T4)
    gguf = gguf_file(ChatStage().server_model)
    assert served.job.server and row(served, "disk").amount == row(one, "disk").amount + gguf.size
    assert row(served, "RAM (server)").status == OK


def test_the_rope_dropdown_has_no_blank_item():
    rope = next(f for f in ChatStage.form_fields() if f.attr == "rope")
    assert "" not in rope.entry.choices and rope.default in rope.entry.choices


def test_memory_this_notebooks_earlier_run_holds_is_counted_as_free(monkeypatch):
    """Run all twice: the first run's model is freed before loading again, so the check counts it as free."""
    from helpers.stages import held

    class Bot:  # a loaded transformers model of 3 GB on the GPU
        class model:
            device = "cuda:0"

            @staticmethod
            def get_memory_footprint():
                return 3 << 30

        closed = False

        def close(self):
            Bot.closed = True

    monkeypatch.setattr(held, "_HELD", {})
    held.hold(ChatStage.NOTEBOOK, Bot())
    rt = held.held_runtime(ChatStage.NOTEBOOK, T4)
    assert rt.vram == T4.vram + (3 << 30) and rt.ram == T4.ram
    assert held.held_runtime(EvalStage.NOTEBOOK, T4) == T4
    held.release(ChatStage.NOTEBOOK)
    assert Bot.closed and held.held_memory(ChatStage.NOTEBOOK) == (0, 0)


# ------------------------------------------------------------------------------------------------ eval, quantize
def test_multiple_choice_on_a_t4_fits_and_fixes_name_the_notebooks_own_parameters(monkeypatch):
    _offline(monkeypatch)
    plan = EvalStage(mc_csv="val.csv").plan(T4)
    assert plan.fits, plan.summary()
    big = EvalStage(model="chinese-alpaca-2-13b", mc_csv="val.csv").plan(T4)
    names = {f.attr for f in EvalStage.form_fields()}
    assert all(set(fix) <= names for fix in big.fixes) and "QUANTIZATION" not in (big.refusal() or "")


def test_05_evaluates_8b_and_13b_on_a_t4_in_4_bit_as_03_chats_with_them(monkeypatch):
    """Notebook 05 has notebook 03's ``QUANTIZATION`` (the same values and default, planned by the same code): an 8B
    or 13B fits a T4 in 4-bit, in 16-bit it does not and the fix is 4-bit; a 7B in 4-bit takes about 6 GB."""
    _offline(monkeypatch)
    ours, theirs = ({(f.default, f.entry.choices) for f in s.form_fields() if f.attr == "quantization"}
                    for s in (EvalStage, ChatStage))
    assert ours == theirs == {("4bit", ("4bit", "8bit", "none"))}
    for model in ("llama-3-chinese-8b-instruct-v3", "chinese-alpaca-2-13b"):
        plan = EvalStage(model=model).plan(T4)
        assert plan.fits and plan.job.quantization == ChatStage(model=model).plan(T4).job.quantization == "4bit"
        sixteen = EvalStage(model=model, quantization="none").plan(T4)
        assert not sixteen.fits and sixteen.fixes[0] == {"quantization": "4bit"}, sixteen.summary()
    seven = row(EvalStage().plan(T4), "GPU memory").amount
    assert 4.5e9 < seven < 6.5e9
    assert EvalStage(model="chinese-alpaca-2-7b-gguf").plan(T4).job.quantization is None


def test_quantized_outputs_never_replace_their_input(tmp_path):
    from helpers.stages.names import quant_target

    for name in ("m-f16.gguf", "m-bf16.gguf", "m-f32.gguf", "model.gguf"):
        src = tmp_path / name
        out = quant_target(src, tmp_path, "q4_k_m")
        assert out != src and out.name.endswith("-q4_k_m.gguf") and "16" not in out.name.replace(name, "")


# ------------------------------------------------------------------------------------------------ the CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers", "colab-check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_prints_the_report_and_exits_non_zero_with_one_error_line():
    out = _cli("04", "--colab", "cpu")
    assert out.returncode != 0 and "[NO  ] GPU" in out.stdout
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: 04_finetune_lora will not fit")
    small = _cli("04", "--colab", "cpu", "--set", "BASE_MODEL=chinese-alpaca-2-1.3b")
    assert "to fit, set LOAD_IN_4BIT=False" in small.stderr  # the fix, as the form's parameter
    ok = _cli("01_merge_lora", "--colab", "t4", "--json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["fits"] and data["runtime"]["gpu"] == "T4" and {n["what"] for n in data["needs"]} >= {"disk", "RAM"}
    bad = _cli("01", "--set", "NOPE=1")
    assert bad.returncode != 0 and bad.stderr.startswith("error: the notebook has no parameter NOPE") and not bad.stdout


def test_the_check_reads_the_hub_listing_through_the_twin(hub_env, tmp_path):
    plan = MergeStage(output_dir=str(tmp_path)).plan(CPU)
    assert plan.fits and not any("estimated" in n for n in plan.notes)
    assert plan.job.resources.download_bytes > 0 and str(plan.job.resources.sources[0].ref) in plan.notes[-1]


def test_run_executes_the_plan_and_replans_when_the_form_changed(hub_env, tmp_path, capsys):
    """The run cell after a changed OUTTYPE (check cell skipped): the new type, under its own name."""
    form = {f.name: f.default for f in MergeStage.form_fields()} | {"OUTPUT_DIR": str(tmp_path)}
    plan = MergeStage.from_form(form).check()
    form["OUTTYPE"] = "q8_0"
    result = plan.run(form)
    assert "changed since the check (OUTTYPE 'q4_k_m' -> 'q8_0')" in capsys.readouterr().out
    assert result.outputs[0].name == "chinese-alpaca-2-7b-q8_0.gguf"
    assert not (tmp_path / "chinese-alpaca-2-7b-q4_k_m.gguf").exists()


def test_the_importance_matrix_puts_on_a_t4_only_the_layers_that_fit(monkeypatch):
    """A 33B Q8_0 intermediate (32 GB) on a 15 GB T4: as many layers as fit its memory go to the GPU, not all (which
    would run out of GPU memory); a 7B goes there whole; a CPU runtime offloads nothing and says nothing of a GPU."""
    from helpers.imatrix.route import GPU_HEADROOM

    _offline(monkeypatch)
    big = MergeStage(model="chinese-alpaca-33b-lora", outtype="iq3_xxs").plan(T4)
    route, layer = big.job.route, big.job.resources.output_bytes / big.job.route.n_layers
    assert route.n_layers == 60 and 0 < route.gpu_layers < 60
    assert route.gpu_layers * layer <= T4.vram * GPU_HEADROOM < (route.gpu_layers + 1) * layer
    assert f"{route.gpu_layers} of 60 layers on the GPU" in big.summary()
    assert MergeStage(outtype="iq3_xxs").plan(T4).job.route.gpu_layers == -1
    cpu = MergeStage(model="chinese-alpaca-33b-lora", outtype="iq3_xxs").plan(CPU)
    assert cpu.job.route.gpu_layers == -1 and "on the GPU" not in cpu.summary()


def test_03_finds_the_patch_merge_01_makes_by_the_name_01_gives_it(twin_env, tmp_path):
    """Notebook 03 looks 01's outputs up by the one name 01 writes (``release_target``), the patch release's too: the
    merge 01 saved is found in the workspace, and a type 01 has not made yet is traced back to 01 with the form
    values that make it, under that same name."""
    entry = get("open-chinese-llama-7b-patch")
    drive = tmp_path / "drive"
    made = MergeStage(model=entry.name, outtype="q8_0", output_dir=str(tmp_path / "out"),
                      workspace=str(drive)).check().run()
    name = made.outputs[0].name
    assert name == release_target(entry, ".", "gguf", "q8_0").name and (drive / name).is_file()
    found = ChatStage(model=name, workspace=str(drive), start_server=False).plan()
    assert found.fits and found.job.model == str(drive / name) and found.job.backend == "llama.cpp"
    missing = release_target(entry, ".", "gguf", "q5_k_m").name
    with pytest.raises(UserError, match=re.escape(f"01_merge_lora (MODEL={entry.name!r}, OUTTYPE='q5_k_m')")):
        ChatStage(model=missing, workspace=str(drive)).plan()
