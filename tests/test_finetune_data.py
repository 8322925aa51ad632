"""Training data checked before anything is trained (issue 26): every bad file is one line naming the file, the line
or record as an editor counts them (from 1), the field and the fix; what will be trained is measured with the
project's sentencepiece-exact tokenizer and agrees with sentencepiece itself; each fine-tuning job's names read back
(round trip) and the workspace never replaces another job's output."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers.util import UserError

RECORD = {"instruction": "请计算三加五等于多少？", "input": "", "output": "八。"}


def _refusal(read, path: Path) -> str:
    with pytest.raises(UserError) as info:
        read(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


BAD_SFT = [  # (file name, contents, what the one line must say)
    ("empty.json", json.dumps([RECORD, {**RECORD, "instruction": "  \t"}], indent=1),
     ["record 2 (line 7)", "'instruction' is empty", "write the instruction, or delete the record"]),
    ("no_output.jsonl", json.dumps(RECORD) + "\n\n" + json.dumps({"instruction": "x", "output": " "}) + "\n",
     ["line 3:", "'output' is empty"]),
    ("number.json", json.dumps([{**RECORD, "output": 8}]), ["record 1 (line 1)", "'output' is a number (8), not text"]),
    ("input.json", json.dumps([RECORD, {**RECORD, "input": ["a"]}]), ["record 2", "'input' is a list"]),
    ("missing.json", json.dumps([RECORD, RECORD, {"question": "x", "answer": "y"}], indent=2),
     ["record 3 (line 12)", "has no 'instruction' field (it has 'question', 'answer')"]),
    ("one.json", json.dumps(RECORD), ["holds one record (an object), not a list of records"]),
    ("dict_list.json", json.dumps({"examples": [RECORD, RECORD]}),
     ["holds an object whose 'examples' is a list (2 items), not a list of records", "name its key 'data'"]),
    ("broken.jsonl", json.dumps(RECORD) + "\n" + json.dumps(RECORD)[:-1] + "\n", ["line 2: not valid JSON"]),
    ("lines.json", json.dumps(RECORD) + "\n" + json.dumps(RECORD) + "\n", ["line 2", "rename it to .jsonl"]),
    ("text.json", json.dumps("hello"), ["holds text", "not a list of records"]),
    ("strings.json", json.dumps(["a", "b"]), ["record 1", "is text", "not a {\"instruction\""]),
    ("blank.json", " \n", ["is empty"]),
    ("empty_list.json", "[]", ["holds no records"]),
    ("data.txt", "some text\n", ["not .txt files", "mode pt"]),
]


@pytest.mark.parametrize("name, text, says", BAD_SFT, ids=[c[0] for c in BAD_SFT])
def test_bad_sft_data_is_one_line_with_the_place_an_editor_shows(tmp_path, name, text, says):
    from helpers.train import read_sft_records

    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    message = _refusal(read_sft_records, path)
    assert all(s in message for s in says), message


def test_the_line_named_is_the_line_the_bad_record_starts_on(tmp_path):
    """Independent of the reader: the line of the bad record's opening brace, found by counting in the file."""
    from helpers.train import read_sft_records

    records = [dict(RECORD, instruction=f"问题{i}") for i in range(6)]
    records[4]["instruction"] = ""
    text = json.dumps({"data": records}, ensure_ascii=False, indent=3)
    path = tmp_path / "nested.json"
    path.write_text(text, encoding="utf-8")
    braces = [n for n, line in enumerate(text.split("\n"), 1) if line.strip() == "{"][1:]  # the records' own
    assert f"record 5 (line {braces[4]}):" in _refusal(read_sft_records, path)


def test_a_byte_that_is_not_utf8_is_named_by_line_and_column(tmp_path):
    from helpers.train import read_pt_lines, read_sft_records

    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(RECORD).encode() + b'\n{"instruction": "caf\xe9", "output": "x"}\n')
    assert "line 2: byte 0xe9 at column 21 is not UTF-8" in _refusal(read_sft_records, path)
    text = tmp_path / "corpus.txt"
    text.write_bytes("第一行\n".encode() + b"\xff\xfe")
    assert "line 2: byte 0xff at column 1" in _refusal(read_pt_lines, text)


def test_pt_data_is_refused_when_empty_json_or_missing(tmp_path):
    from helpers.train import read_pt_lines

    (tmp_path / "empty.txt").write_text(" \n\n", encoding="utf-8")
    assert "is empty" in _refusal(read_pt_lines, tmp_path / "empty.txt")
    (tmp_path / "i.json").write_text("[]", encoding="utf-8")
    assert "--mode pt trains on plain text" in _refusal(read_pt_lines, tmp_path / "i.json")
    folder = tmp_path / "folder"
    folder.mkdir()
    assert "holds no .txt files" in _refusal(read_pt_lines, folder)
    (folder / "a.txt").write_text("一\n二\n", encoding="utf-8")
    (folder / "b.txt").write_text("", encoding="utf-8")
    assert _refusal(read_pt_lines, folder).startswith(str(folder / "b.txt"))


def test_good_data_reads_every_record_and_layout(tmp_path):
    from helpers.train import read_sft_records

    (tmp_path / "a.json").write_text(json.dumps({"train": [RECORD, {**RECORD, "input": None}]}), encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in [RECORD] * 3) + "\n\n", encoding="utf-8")
    assert len(read_sft_records(tmp_path)) == 5


# ------------------------------------------------------------------------------------------- what is trained
def test_lengths_and_cuts_agree_with_sentencepiece(demo):
    """Each record's length is sentencepiece's count of the prompt (with BOS) and the reply, plus the end-of-turn
    token; the median and the 95th percentile are numpy's (nearest rank); the cut count is those over the limit."""
    import numpy as np
    import sentencepiece as spm

    from helpers.tokens import build_prompt, get_template, load_tokenizer
    from helpers.train import read_sft_records, sft_stats

    folder = demo / "Llama-2-7b-hf"
    records = read_sft_records(demo / "data" / "sft_zh.json")
    template = get_template("llama2-zh")
    stats = sft_stats(records, load_tokenizer(folder), template, max_seq_length=120, source="sft_zh.json")
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))

    def length(r):
        prompt = build_prompt(template, r["instruction"] + (f"\n{r['input']}" if r["input"] else ""))
        return 1 + len(sp.encode(prompt)) + len(sp.encode(r["output"])) + 1

    expected = sorted(length(r) for r in records)
    assert list(stats.lengths) == expected and stats.records == len(records)
    assert stats.median == int(np.median(expected))
    assert stats.p95 == int(np.percentile(expected, 95, method="inverted_cdf"))
    assert stats.cut == sum(n > 120 for n in expected) > 0 and stats.cut < len(records)
    lines = stats.lines("MAX_SEQ_LENGTH", template.name)
    assert f"{len(records)} records" in lines[0] and f"{stats.cut} longer than MAX_SEQ_LENGTH=120" in lines[0]
    assert records[0]["output"] in stats.reply and "[INST]" in stats.first


def test_pt_blocks_are_the_packed_tokens(demo):
    from helpers.tokens import load_tokenizer
    from helpers.train import pt_stats, read_pt_lines
    from helpers.train.data import group_texts

    tok = load_tokenizer(demo / "Llama-2-7b-hf")
    lines = read_pt_lines(demo / "data" / "pt_zh.txt")
    stats = pt_stats(lines, tok, block_size=64, source="pt")
    assert stats.blocks == len(group_texts((tok(x)["input_ids"] for x in lines), 64)) > 0


# ------------------------------------------------------------------------------------------- job names
NAMES = [("chinese-alpaca-2-7b", "sft", "sample"), ("/content/my-llama_base", "pt", "/content/drive/corpus/"),
         ("hfl/chinese-llama-2-13b", "sft", "org/alpaca-zh-51k"), ("x-sft-y-pt-z", "pt", "我的 数据-v2.jsonl"),
         ("llama-3-8b-instruct", "sft", "a.b.c.json")]


@pytest.mark.parametrize("base, mode, data", NAMES)
def test_a_jobs_names_read_back(base, mode, data):
    """Round trip: every name made parses back to the same parts, and the workspace names the notebook and the
    form values that make it."""
    from helpers.gguf import WRITE_TYPES
    from helpers.stages.names import FinetuneName
    from helpers.stages.names import output_maker

    name = FinetuneName.of(base, mode, data, "0f1e2d3c")
    assert FinetuneName.parse(name.adapter) == (name, None)
    for outtype in WRITE_TYPES:
        assert FinetuneName.parse(name.gguf(outtype)) == (name, outtype)
    maker = output_maker(name.gguf("q4_k_m"))
    for part in ("04_finetune_lora", f"BASE_MODEL={name.base!r}", f"MODE={mode!r}", f"'{name.data}'", "0f1e2d3c",
                 "OUTTYPE='q4_k_m'"):
        assert part in maker, maker
    assert "-" not in name.data and name.data


def test_other_notebooks_names_are_not_finetune_names():
    from helpers.catalog.releases import CATALOG
    from helpers.stages.merge import release_target
    from helpers.stages.names import FinetuneName
    from helpers.stages.names import output_maker

    for entry in [e for e in CATALOG.values() if e.kind == "lora"]:
        target = release_target(entry, ".", "gguf", "q4_k_m").name
        assert FinetuneName.parse(target) is None and output_maker(target).startswith("01_merge_lora")


def test_the_job_key_follows_data_content_and_settings(tmp_path):
    from helpers.train import FinetuneConfig, planned_job_key

    data = tmp_path / "d.json"
    data.write_text(json.dumps([RECORD]), encoding="utf-8")
    config = FinetuneConfig(base="chinese-alpaca-2-7b", data=str(data), out="/a", max_steps=10)
    key = planned_job_key(config, "hfl/chinese-alpaca-2-7b")
    assert planned_job_key(FinetuneConfig(base="x", data=str(data), out="/b", max_steps=10, resume="no"),
                           "hfl/chinese-alpaca-2-7b") == key  # not the output folder, not the resume policy
    assert planned_job_key(config, "chinese-alpaca-2-7b") == key  # a catalog name is its hub id
    assert planned_job_key(FinetuneConfig(base="b", data=str(data), out="/a", max_steps=11), "hfl/x") != key
    data.write_text(json.dumps([RECORD, RECORD]), encoding="utf-8")
    assert planned_job_key(config, "hfl/chinese-alpaca-2-7b") != key


# ------------------------------------------------------------------------------------------- the workspace rule
def test_the_workspace_never_replaces_another_jobs_output(tmp_path):
    from helpers.publish import copy_to_workspace

    ws, a, b = tmp_path / "ws", tmp_path / "a" / "out.gguf", tmp_path / "b" / "out.gguf"
    for path, data in ((a, b"job a"), (b, b"job b")):
        path.parent.mkdir()
        path.write_bytes(data)
    copy_to_workspace(a, ws, show_progress=False, job="A")
    with pytest.raises(UserError, match="holds another job's output.*rename or move out.gguf"):
        copy_to_workspace(b, ws, show_progress=False, job="B")
    with pytest.raises(UserError, match="another job's output"):
        copy_to_workspace(b, ws, show_progress=False)  # another source, no job
    assert (ws / "out.gguf").read_bytes() == b"job a"
    a.write_bytes(b"job a, trained again")
    assert copy_to_workspace(a, ws, show_progress=False, job="A").copied  # the same job updates its own output
    assert copy_to_workspace(b, ws, show_progress=False, job="B", replace=True).copied  # the explicit choice
    assert (ws / "out.gguf").read_bytes() == b"job b"


def test_a_folder_of_another_job_is_kept_whole(tmp_path):
    from helpers.publish import copy_to_workspace

    ws = tmp_path / "ws"
    for job in ("A", "B"):
        folder = tmp_path / job / "adapter"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(os.urandom(1000))
        if job == "A":
            copy_to_workspace(folder, ws, show_progress=False, job=job)
            kept = (ws / "adapter" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(UserError, match="another job's output"):
        copy_to_workspace(folder, ws, show_progress=False, job="B")
    assert (ws / "adapter" / "adapter_model.safetensors").read_bytes() == kept
    assert sorted(p.name for p in ws.iterdir()) == [".helpers-saved.json", "adapter"]
