"""The model card (``README.md``) of a pushed model: what it is, what it was made from, how, under which licence.

:class:`ReleaseCard` says what was made; :func:`model_card` writes the card: YAML front matter the hub reads
(``base_model``, ``license``, ``library_name``, ``tags``; written with ``huggingface_hub.ModelCardData``), then the
base, the LoRAs merged in order, the format and quantization type, how it was made, the files with their sizes
and SHA256, and the licence. The licence is the catalog's for the base's family (a LoRA merged into Llama-2 is a
Llama-2 derivative).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..catalog import find
from ..hub import current_hub_id, looks_like_hub_id
from ..util import UserError, human_bytes

CARD_KINDS = ("merged", "gguf", "adapter")  # an HF folder with LoRAs merged in; a GGUF; a (fine-tuned) LoRA adapter
_LIBRARY = {"merged": "transformers", "gguf": "gguf", "adapter": "peft"}
_RELATION = {"gguf": "quantized", "adapter": "adapter"}  # a merged folder: left for the hub to infer
_WHAT = {"merged": "a Hugging Face model folder", "gguf": "GGUF", "adapter": "a LoRA adapter (PEFT)"}


@dataclass(frozen=True)
class ReleaseCard:
    """What a pushed model is and how it was made.

    Attributes:
        base: the base model: a catalog name, a hub id, or a local folder (then not linked).
        loras: the LoRAs (or patches) merged into it, in the order they were applied (catalog names or hub ids).
        kind: ``merged`` (an HF folder), ``gguf`` or ``adapter`` (a LoRA trained on ``base``).
        quant: the GGUF type (``q4_k_m``, ``f16``...); required for ``gguf``, not allowed otherwise.
        how: how it was made, one or more sentences (the notebook and its settings, or the command).
        title: the card's heading (default: made from the above).
        license: the hub licence id (default: the catalog's for the base's or a LoRA's family, else ``other``).
    """

    base: str
    loras: tuple[str, ...] = ()
    kind: str = "merged"
    quant: str | None = None
    how: str = ""
    title: str | None = None
    license: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "loras", tuple(self.loras))
        if not str(self.base).strip():
            raise UserError("a model card needs the base model it was made from")
        if self.kind not in CARD_KINDS:
            raise UserError(f"model card kind {self.kind!r} is not one of {', '.join(CARD_KINDS)}")
        if (self.kind == "gguf") != bool(self.quant):
            raise UserError("give the quantization type (quant=) for a GGUF card, and only for one")

    @property
    def base_id(self) -> str | None:
        """The base's hub id (``None`` for a local folder)."""
        return _hub_id(self.base)

    def license_info(self) -> tuple[str, str]:
        """``(hub licence id, licence name)``: the explicit one, else the catalog's for the first catalog model
        among the base and the LoRAs, else ``("other", ...)``."""
        entries = [e for e in (find(str(r)) for r in (self.base, *self.loras)) if e is not None]
        if self.license:
            return self.license, self.license
        if entries:
            return entries[0].license
        return "other", "unknown: see the base model's licence"


def _hub_id(ref: str) -> str | None:
    hub_id = current_hub_id(str(ref).strip())
    return hub_id if looks_like_hub_id(hub_id) and not Path(ref).expanduser().exists() else None


def model_card(card: ReleaseCard, files: Sequence[tuple[str, int, str]], *, repo_id: str | None = None) -> str:
    """The text of ``README.md`` for ``card`` and ``files`` (``(path in repo, bytes, sha256)`` each)."""
    from huggingface_hub import ModelCardData

    license_id, license_name = card.license_info()
    entry = find(card.base)
    family = entry.family if entry is not None else None
    tags = ["chinese-llama-alpaca", *([family] if family else []), *(["lora-merged"] if card.loras else []),
            *(["gguf", card.quant.lower()] if card.quant else [])]
    data = ModelCardData(base_model=card.base_id, license=license_id, language=["zh", "en"],
                         library_name=_LIBRARY[card.kind], pipeline_tag="text-generation", tags=tags,
                         base_model_relation=_RELATION.get(card.kind),
                         license_name=f"{family or 'base'}-license" if license_id == "other" else None)
    made = [f"- base model: {_link(card.base)}"]
    made += [f"- LoRAs merged, in this order: {', '.join(_link(r) for r in card.loras)}"] if card.loras else []
    made += [f"- format: {_WHAT[card.kind]}" + (f", quantized to {card.quant.upper()} with llama.cpp's quantizer"
                                                 if card.quant else "")]
    made += [f"- how: {card.how}"] if card.how else []
    made += [f"- made with chinese-llama-notebooks helpers {_version()}"]
    rows = [f"| `{name}` | {human_bytes(size)} | `{sha}` |" for name, size, sha in sorted(files)]
    body = [f"# {card.title or _title(card)}", "", _summary(card), "", "## How it was made", "", *made, "",
            "## Files", "", "| file | size | SHA256 |", "|---|---|---|", *rows, "", "## Licence", "",
            f"The weights derive from the base model: the {license_name} applies (`license: {license_id}`). "
            "Check the terms of the base model and of each LoRA on their pages before use.", "",
            "## Use", "", _usage(card, repo_id), ""]
    return f"---\n{data.to_yaml()}\n---\n" + "\n".join(body)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chinese-llama-notebooks-helpers")
    except PackageNotFoundError:
        return "(not installed)"


def _link(ref: str) -> str:
    hub_id = _hub_id(ref)
    return f"[{hub_id}](https://huggingface.co/{hub_id})" if hub_id else f"`{Path(ref).name}` (a local folder)"


def _title(card: ReleaseCard) -> str:
    ref = card.loras[-1] if card.loras else card.base
    name = (_hub_id(ref) or Path(ref).name).split("/")[-1]
    return {"merged": f"{name} (merged)", "gguf": f"{name} {card.quant.upper() if card.quant else ''} GGUF",
            "adapter": f"{name} LoRA"}[card.kind].strip()


def _summary(card: ReleaseCard) -> str:
    base = _link(card.base)
    if card.kind == "adapter":
        return f"A LoRA adapter for {base}; load it on top of that model with PEFT."
    merged = f"{base} with {', '.join(_link(r) for r in card.loras)} merged in" if card.loras else base
    return f"{merged}, as {_WHAT[card.kind]}" + (f" ({card.quant.upper()})." if card.quant else ".")


def _usage(card: ReleaseCard, repo_id: str | None) -> str:
    repo = repo_id or "<this repo>"
    if card.kind == "gguf":
        return (f"llama.cpp: `llama-cli -hf {repo}`, or download the `.gguf` and `llama-cli -m <file>`; "
                "Ollama: `ollama create NAME -f <file>.Modelfile` when a Modelfile is included.")
    if card.kind == "adapter":
        return (f"`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(\"{card.base_id or card.base}\"), "
                f"\"{repo}\")`")
    return f"`AutoModelForCausalLM.from_pretrained(\"{repo}\")` with `AutoTokenizer.from_pretrained(\"{repo}\")`."
