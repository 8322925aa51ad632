"""A deliberately naive re-implementation of the releases' C-Eval / CMMLU scoring, for the tests.

Written from the method's description (issue 21 and the scripts' behaviour), sharing no code with
``helpers.evaluate``: pandas reads the CSVs (the scripts' reader), the prompt strings are put together here,
every prompt is tokenized whole (sentencepiece, or the ``tokenizers`` library for Llama-3) and run whole
(transformers without a cache, or a fresh llama.cpp evaluation), and the logits processors are applied to the
whole vocabulary from first principles: repetition penalty 1.1 on every id in the prompt, then temperature 0.2.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SYS_EN_ZH = "You are a helpful assistant. 你是一个乐于助人的助手。"
# The Chinese names the v3 CMMLU script (ymcui/Chinese-LLaMA-Alpaca-3 scripts/cmmlu/eval.py) passes to its evaluator,
# ``name_en2zh[subject]`` from its categories.py, for the subjects the tests use; its header and its few-shot opening
# turn carry this name, never the file key.
CMMLU_V3_NAMES = {"anatomy": "解剖学", "astronomy": "天文学", "college_actuarial_science": "大学精算学",
                  "ancient_chinese": "古汉语", "agronomy": "农学", "marketing": "市场营销",
                  "chinese_history": "中国历史", "elementary_mathematics": "初等数学"}


def read_split(data: Path, bench: str, subject: str, split: str):
    """The scripts' ``pd.read_csv`` of one official file."""
    import pandas as pd

    name = f"{subject}_{split}.csv" if bench == "ceval" else f"{subject}.csv"
    return pd.read_csv(data / split / name)


def _q(row, qcol: str) -> str:
    text = row[qcol]
    for c in "ABCD":
        text += f"\n{c}. {row[c]}"
    return text


def prompts(data: Path, bench: str, subject: str, *, split: str, shots: int, with_prompt: bool, style: str,
            header_name: str | None = None) -> list[str]:
    """Every prompt of one subject, built as the v2 or v3 scripts build it (``header_name``: the subject's name in
    the header, default the file key, or for v3 CMMLU the script's ``name_en2zh``)."""
    qcol, acol = ("question", "answer") if bench == "ceval" else ("Question", "Answer")
    test = read_split(data, bench, subject, split)
    dev = read_split(data, bench, subject, "dev") if shots else None
    name = header_name or (CMMLU_V3_NAMES[subject] if (style, bench) == ("v3", "cmmlu") else subject)
    header = f"以下是中国关于{name}考试的单项选择题，请选出其中的正确答案。\n\n"
    out = []
    for _, row in test.iterrows():
        q = _q(row, qcol) + "\n答案："
        if style == "v2":
            system = SYS_EN_ZH if bench == "ceval" else "你是一个乐于助人的助手。"
            hist = ""
            if shots and not with_prompt:
                hist = header + "".join(_q(dev.iloc[i], qcol) + "\n答案：" + dev.iloc[i][acol] + "\n\n"
                                        for i in range(shots))
            elif shots:
                hist = (f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{header} [/INST]好的，我会结合{name}相关知识回答"
                        + "".join(f"[INST] {_q(dev.iloc[i], qcol)}\n答案：[/INST]{dev.iloc[i][acol]}\n"
                                  for i in range(shots)))
            if with_prompt:
                q = f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{q} [/INST]"
            out.append(hist + q)
        else:  # v3
            user = lambda c: f"<|start_header_id|>user<|end_header_id|>\n\n{c}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"  # noqa: E731
            system = f"<|start_header_id|>system<|end_header_id|>\n\n{SYS_EN_ZH}<|eot_id|>"
            hist = header
            if shots and not with_prompt:
                hist += "".join(_q(dev.iloc[i], qcol) + "\n答案：" + dev.iloc[i][acol] + "\n\n" for i in range(shots))
            if not with_prompt:
                out.append(hist + q)
            elif shots:
                hist = (("<|begin_of_text|>" if bench == "ceval" else "") + system + user(header)
                        + f"好的，我会结合{name}相关知识回答<|eot_id|>"
                        + "".join(user(_q(dev.iloc[i], qcol) + "\n答案：") + dev.iloc[i][acol] + "<|eot_id|>"
                                  for i in range(shots)))
                out.append(hist + user(q))
            else:
                out.append(system + user(header + q))
    return out


class SentencePieceTokens:
    """Sentencepiece of a model folder: BOS + pieces, as the slow LlamaTokenizer(legacy=True)."""

    def __init__(self, folder: Path) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))

    def prompt(self, text: str) -> list[int]:
        return [self.sp.bos_id()] + self.sp.encode(text)

    def letters(self) -> tuple[list[int], list[int]]:
        return [self.sp.encode(c)[0] for c in "ABCD"], [self.sp.encode("：" + c)[-1] for c in "ABCD"]


class JsonTokens:
    """A ``tokenizer.json`` (Llama-3) through the ``tokenizers`` library: its post-processor adds BOS."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))

    def prompt(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def letters(self) -> tuple[list[int], list[int]]:
        return ([self.tok.encode(c, add_special_tokens=False).ids[0] for c in "ABCD"],
                [self.tok.encode("：" + c).ids[-1] for c in "ABCD"])


def processed_scores(logits: np.ndarray, prompt: list[int], bare: list[int], cued: list[int]) -> np.ndarray:
    """The whole vocabulary through the repetition penalty and the temperature, then the letters' sums."""
    x = logits.astype(np.float64).copy()
    ids = np.unique(np.asarray(prompt))
    x[ids] = np.where(x[ids] < 0, x[ids] * 1.1, x[ids] / 1.1)
    x = x / 0.2
    return x[bare] + x[cued]


def hf_last_logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float().numpy()


def gguf_last_logits(llm, ids: list[int]) -> np.ndarray:
    """A fresh evaluation of the whole prompt (``llm`` made with ``logits_all=True``)."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[len(ids) - 1], dtype=np.float64)


def reference(logits_fn, tokens, data: Path, bench: str, subjects: list[str], *, names: dict | None = None,
              **kw) -> dict[tuple[str, int], np.ndarray]:
    """``{(subject, row): the four letter scores}`` over ``subjects`` (``names``: header names, default as
    :func:`prompts` names them)."""
    bare, cued = tokens.letters()
    out = {}
    for subject in subjects:
        for i, text in enumerate(prompts(data, bench, subject, header_name=(names or {}).get(subject), **kw)):
            ids = tokens.prompt(text)
            out[(subject, i)] = processed_scores(logits_fn(ids), ids, bare, cued)
    return out
