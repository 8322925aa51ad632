"""Notebook 04's jobs through the hub twin, as a user meets them (issue 26): ``python -m helpers run 04`` trains and
makes the GGUF under the job's own names and prints a summary; a new runtime (empty local disk and download cache)
with the same workspace finds the finished job and downloads no weights; bad data stops the check with one line
before any weight is downloaded (local files whole, a hub data set by its first rows); and a gated base without a
token is refused by the check of every notebook that downloads it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from faults import assert_error_line, cli

pytestmark = [pytest.mark.slow, pytest.mark.hub]

SMOKE = {"LOAD_IN_4BIT": "false", "MAX_STEPS": "2", "LEARNING_RATE": "0.001", "LORA_R": "4", "LORA_ALPHA": "8",
         "STRATEGY": "ddp", "GPUS": "2", "TEST_PROMPT": "三加五等于多少？"}
WEIGHTS = (".safetensors", ".bin", ".pth", ".pt", ".gguf")
RECORD = {"instruction": "请计算三加五等于多少？", "input": "", "output": "八。"}


def weights_downloaded(twin, since: int) -> list[str]:
    """Weight files the twin sent whole since ``since`` (a header read while planning is a 206 of a few kB, and each
    runtime's download cache starts empty, so a download is a 200); tokenizers and configs are not weights."""
    return sorted({"/".join(r.file) for r in twin.requests(since) if r.method == "GET" and r.status == 200
                   and r.file and r.file[1].endswith(WEIGHTS)})


def helpers04(twin, runtime: Path, workspace: Path, command: str = "run", **form: str):
    """``python -m helpers <command> 04`` in a runtime of its own (its output folder and download cache)."""
    import hubtwin

    sets = {**SMOKE, "OUTPUT_DIR": str(runtime / "out"), "WORKSPACE": str(workspace), **form}
    env = {"HF_ENDPOINT": twin.endpoint, "HF_HOME": str(runtime / "hf-home"), "HF_HUB_OFFLINE": "0",
           "NO_PROXY": hubtwin.no_proxy_for_loopback()}
    return cli(command, "04", *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")], env=env, timeout=900)


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def test_run_trains_makes_the_gguf_and_a_new_runtime_reuses_the_finished_job(hub_twin, tmp_path):
    drive = tmp_path / "drive"
    first = helpers04(hub_twin, tmp_path / "rt1", drive)
    assert first.returncode == 0, first.stderr[-3000:]
    adapters = sorted(p.name for p in drive.glob("*-lora"))
    ggufs = sorted(p.name for p in drive.glob("*.gguf"))
    assert len(adapters) == 1 and ggufs == [adapters[0].removesuffix("-lora") + "-q4_k_m.gguf"], (adapters, ggufs)
    job = adapters[0].removesuffix("-lora")
    assert f"job {job.rsplit('-', 1)[1]}: adapter {adapters[0]}" in first.stdout  # the check named it first
    assert "adapter " in first.stdout and "2 steps" in first.stdout and "GGUF " in first.stdout
    assert "FinetuneResult(" not in first.stdout and "launch.sh" in first.stdout
    saved = digests(drive)
    since = hub_twin.log_size()
    again = helpers04(hub_twin, tmp_path / "rt2", drive)  # a new runtime: nothing local, nothing cached
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to train" in again.stdout and "nothing to merge" in again.stdout, again.stdout
    assert weights_downloaded(hub_twin, since) == [] and digests(drive) == saved
    assert not (tmp_path / "rt2" / "out" / adapters[0]).exists()


BAD_LOCAL = [
    ("empty.json", json.dumps([RECORD, RECORD, {**RECORD, "instruction": " "}], indent=1),
     "empty.json record 3 (line 12): 'instruction' is empty"),
    ("one.json", json.dumps(RECORD), "one.json holds one record (an object), not a list of records"),
    ("wrapped.json", json.dumps({"rows": [RECORD]}), "wrapped.json holds an object whose 'rows' is a list (1 items)"),
    ("broken.jsonl", json.dumps(RECORD) + "\n" + '{"instruction": "x" "output": "y"}\n',
     "broken.jsonl line 2: not valid JSON"),
    ("types.jsonl", json.dumps({**RECORD, "instruction": 3}) + "\n", "types.jsonl line 1: 'instruction' is a number"),
]


@pytest.mark.parametrize("name, text, says", BAD_LOCAL, ids=[c[0] for c in BAD_LOCAL])
def test_bad_local_data_stops_the_check_with_one_line_before_any_download(hub_env, tmp_path, name, text, says):
    from helpers.stages import FinetuneStage
    from helpers.util import UserError

    drive = tmp_path / "drive"
    drive.mkdir()
    (drive / name).write_text(text, encoding="utf-8")
    since = hub_env.log_size()
    stage = FinetuneStage(**{"load_in_4bit": False, "output_dir": str(tmp_path / "out"), "workspace": str(drive),
                             "data": name})
    with pytest.raises(UserError) as info:
        stage.check()
    assert says in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert str(info.value).startswith(str(drive / name))
    assert weights_downloaded(hub_env, since) == []


HUB_SETS = {  # data set id -> (its train file, what the check says)
    "cllama-test/alpaca-no-columns": ([{"question": "x", "answer": "y"}], "has no column instruction, output"),
    "cllama-test/alpaca-empty-row": ([RECORD, RECORD, {**RECORD, "output": ""}],
                                     "the data set cllama-test/alpaca-empty-row row 3: 'output' is empty"),
}


@pytest.mark.parametrize("repo", sorted(HUB_SETS))
def test_a_bad_hub_data_set_stops_the_check_from_its_first_rows(hub_twin, tmp_path, repo):
    import hubtwin

    rows, says = HUB_SETS[repo]
    hubtwin.add_dataset_repo(hub_twin.mirror, repo, {"train.jsonl": "".join(json.dumps(r) + "\n" for r in rows)})
    since = hub_twin.log_size()
    p = helpers04(hub_twin, tmp_path / "rt", tmp_path / "drive", command="colab-check", DATA=repo)
    assert says in assert_error_line(p)
    assert weights_downloaded(hub_twin, since) == []


def test_a_good_hub_data_set_is_shown_before_the_download(hub_twin, tmp_path):
    import hubtwin

    repo = "cllama-test/alpaca-good"
    hubtwin.add_dataset_repo(hub_twin.mirror, repo, {"train.jsonl": (json.dumps(RECORD) + "\n") * 5})
    since = hub_twin.log_size()
    p = helpers04(hub_twin, tmp_path / "rt", tmp_path / "drive", command="colab-check", DATA=repo)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"data: {repo}: 5 records (the first rows" in p.stdout and "reply: '八。" in p.stdout, p.stdout
    assert weights_downloaded(hub_twin, since) == []


GATED = ["meta-llama/Llama-2-7b-hf", "meta-llama/Meta-Llama-3-8B-Instruct"]


def _gated_stages(tmp_path):
    from helpers.stages import ChatStage, EvalStage, FinetuneStage, MergeStage, QuantizeStage

    out = {"output_dir": str(tmp_path / "out")}
    return {"01": MergeStage(**out), "02": QuantizeStage(model="llama-2-7b", published="no", **out),
            "03": ChatStage(model="llama-3-8b-instruct", draft_model="", start_server=False),
            "04": FinetuneStage(base_model="llama-2-7b", load_in_4bit=False, **out),
            "05": EvalStage(model="llama-3-8b-instruct", bench="none", **out)}


@pytest.mark.parametrize("notebook", ["01", "02", "03", "04", "05"])
def test_a_gated_base_without_a_token_is_refused_by_every_check(hub_env, tmp_path, monkeypatch, notebook):
    """The twin serves Meta's repos gated, as the hub does: without HF_TOKEN each notebook's check names the licence
    and the secret; with a token the repo accepts, the same check has no such need."""
    from helpers.colab import NO

    monkeypatch.delenv("HF_TOKEN", raising=False)
    with hub_env.gated(*GATED):
        stage = _gated_stages(tmp_path)[notebook]
        plan = stage.plan()
        access = [n for n in plan.needs if n.what.startswith("access to meta-llama/")]
        assert not plan.fits and len(access) == 1 and access[0].status == NO, plan.summary()
        assert "HF_TOKEN" in access[0].fix and "licence" in access[0].fix
        monkeypatch.setenv("HF_TOKEN", "hf_reader_token")
        assert not [n for n in stage.plan().needs if n.what.startswith("access to")]
