"""The prompts of the releases' C-Eval / CMMLU scripts, per generation of the project (v1, v2, v3).

Facts from ymcui/Chinese-LLaMA-Alpaca{,-2,-3} ``scripts/ceval`` and ``scripts/cmmlu``:

- an item is ``question\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\n答案：``; a shot adds its answer and ``\\n\\n``;
- the header is ``以下是中国关于{name}考试的单项选择题，请选出其中的正确答案。\\n\\n``. v1/v2 write it only
  before shots (a zero-shot prompt has none) with the subject's file key as ``name``; v3 writes it always,
  with the subject's Chinese name: C-Eval's from the v3 script's own table (which differs from
  ``subject_mapping.json`` for a few subjects), CMMLU's from ``categories.py``'s ``name_en2zh``
  (``marketing`` -> ``市场营销``), the name the v3 ``eval.py`` passes to the evaluator;
- ``--with-prompt`` (instruction models): v1 wraps the whole text in the Alpaca template and ends the item
  with ``\\n答案是什么？ ``; v2 wraps the item in Llama-2's ``[INST] <<SYS>>`` turn and puts the shots in an
  earlier conversation (an opening turn answered ``好的，我会结合{name}相关知识回答``, then
  ``[INST] q\\n答案：[/INST]a\\n`` per shot); v3 does the same in the Llama-3 template.

A prompt is ``prefix + item``: the prefix is the same for every question of a subject, which is what lets
the scorer evaluate it once.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..util import UserError
from .examdata import Item
from .subjects import LETTERS, Benchmark, Subject

STYLES = ("v1", "v2", "v3")
HEADER = "以下是中国关于{name}考试的单项选择题，请选出其中的正确答案。\n\n"
CUE = "\n答案："
OPENING = "好的，我会结合{name}相关知识回答"
SYSTEM_BILINGUAL = "You are a helpful assistant. 你是一个乐于助人的助手。"
SYSTEM_ZH = "你是一个乐于助人的助手。"  # v2's CMMLU script
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes the request."
          "\n\n### Instruction:\n")
ALPACA_END = "\n\n### Response: "
ALPACA_CUE = "\n答案是什么？ "
LLAMA2_SYS = "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n"
L3_SYSTEM = "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
L3_USER = "<|start_header_id|>user<|end_header_id|>\n\n"
L3_TURN_END = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
L3_BOS = "<|begin_of_text|>"


def body(item: Item) -> str:
    """``question\\nA. ...\\nD. ...`` (no cue)."""
    return item.question + "".join(f"\n{c}. {o}" for c, o in zip(LETTERS, item.options))


@dataclass(frozen=True)
class PromptStyle:
    """How one generation's script builds prompts for one benchmark.

    Attributes:
        style: ``v1`` (Alpaca template), ``v2`` (Llama-2 ``[INST]``) or ``v3`` (Llama-3).
        bench: the benchmark (the header's subject name and v2's system prompt depend on it).
        with_prompt: wrap in the instruction template (the scripts' ``--with_prompt``).
    """

    style: str
    bench: Benchmark
    with_prompt: bool = False

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise UserError(f"unknown prompt style {self.style!r}; use one of {', '.join(STYLES)}")

    def name(self, subject: Subject) -> str:
        """The subject's name in the header and v2/v3's opening turn: v3 writes its Chinese name (C-Eval's v3
        table, CMMLU's ``name_en2zh``), v1 and v2 the file key."""
        if self.style == "v3":
            return subject.v3_name or subject.zh
        return subject.key

    def system(self) -> str:
        return SYSTEM_ZH if (self.style == "v2" and self.bench.name == "cmmlu") else SYSTEM_BILINGUAL

    def prefix(self, subject: Subject, shots: tuple[Item, ...]) -> str:
        """The text before each question of ``subject``, with these solved ``shots``."""
        header = HEADER.format(name=self.name(subject))
        solved = "".join(body(s) + CUE + s.answer + "\n\n" for s in shots)
        if self.style == "v3":
            return self._prefix_v3(subject, shots, header)
        if not self.with_prompt:
            return header + solved if shots else ""
        if self.style == "v1":
            return ALPACA + (header + solved if shots else "")
        if not shots:
            return ""
        opening = LLAMA2_SYS.format(system=self.system()) + header + " [/INST]" + OPENING.format(name=self.name(subject))
        return opening + "".join(f"[INST] {body(s)}{CUE}[/INST]{s.answer}\n" for s in shots)

    def _prefix_v3(self, subject: Subject, shots: tuple[Item, ...], header: str) -> str:
        solved = "".join(body(s) + CUE + s.answer + "\n\n" for s in shots)
        if not self.with_prompt:
            return header + solved
        system = L3_SYSTEM.format(system=self.system())
        if not shots:
            return system + L3_USER + header
        opening = (L3_BOS if self.bench.name == "ceval" else "") + system + L3_USER + header + L3_TURN_END
        opening += OPENING.format(name=self.name(subject)) + "<|eot_id|>"
        return opening + "".join(L3_USER + body(s) + CUE + L3_TURN_END + s.answer + "<|eot_id|>" for s in shots)

    def question(self, item: Item, *, shots: bool) -> str:
        """The text of one question after the prefix (``shots``: whether the prefix holds solved examples)."""
        if not self.with_prompt:
            return body(item) + CUE
        if self.style == "v1":
            return body(item) + ALPACA_CUE + ALPACA_END
        if self.style == "v2":
            return LLAMA2_SYS.format(system=self.system()) + body(item) + CUE + " [/INST]"
        if shots:
            return L3_USER + body(item) + CUE + L3_TURN_END
        return body(item) + CUE + L3_TURN_END

    def prompt(self, subject: Subject, shots: tuple[Item, ...], item: Item) -> str:
        """The whole prompt of one question (what the scripts tokenize, BOS added by the tokenizer)."""
        return self.prefix(subject, shots) + self.question(item, shots=bool(shots))


def style_for(template: str | None, *, llama3_vocab: bool) -> str:
    """The generation whose script matches a model: its chat ``template`` (``alpaca`` -> v1, ``llama3`` -> v3,
    ``llama2-zh`` -> v2); a plain model is v3 with Llama-3's vocabulary, else v2 (v1's plain prompts equal v2's)."""
    if template == "llama3" or llama3_vocab:
        return "v3"
    return "v1" if template == "alpaca" else "v2"
