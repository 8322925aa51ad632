"""Everything checked before a merge writes anything: shapes, families, vocabulary order, tokenizers, disk, RAM.

:func:`plan_merge` turns the opened inputs into a :class:`MergePlan` (every output tensor's name and shape, the
merged config, the tokenizer that goes with it) or stops with one :class:`UserError` that names the input at
fault; :func:`check_resources` checks the free disk and reports the memory the merge will need.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..catalog import check_family, family_of_config, family_of_lora
from ..checkpoint import Adapter, TensorPlan
from ..env import available_ram_bytes
from ..tokens import tokenizer_vocab_size
from ..util import UserError, human_bytes, read_json, require_free_disk
from .inputs import MergeInputs
from .options import BYTES_PER_VALUE, MergeOptions

VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")
_SKIP = "rotary_emb.inv_freq"  # buffers some old checkpoints saved; never merged or written


@dataclass(frozen=True)
class MergePlan:
    """What the merge will produce.

    Attributes:
        tensors: every output tensor in output order, with its final shape.
        config: the merged HF ``config.json`` dict (``vocab_size`` updated, long-context RoPE of the LoRAs).
        tokenizer_dir: the folder whose tokenizer goes with the merged model (the last LoRA's, else the base's).
        vocab_size: rows of the merged embeddings.
        base_vocab: rows of the base model's embeddings.
    """

    tensors: list[TensorPlan]
    config: dict
    tokenizer_dir: Path
    vocab_size: int
    base_vocab: int

    @property
    def largest_bytes(self) -> int:
        """Bytes of the largest tensor in float32."""
        return max(tp.numel for tp in self.tensors) * 4


def _fit_adapter(label: str, ad: Adapter, shapes: dict, family: str, vocab: int, vocab_from: str) -> tuple[int, str]:
    """Check one LoRA against the model merged so far (``shapes`` updated in place); returns the new vocabulary
    and where it comes from."""
    rows = ad.embed_rows
    check_family(family, family_of_lora(ad.config, vocab_size=rows or ad.tokenizer_vocab), what=label)
    for name in ad.lora:
        if name not in shapes:
            raise UserError(f"{label} has LoRA weights for {name}, which the base model lacks; "
                            "it was trained for another architecture")
        if ad.delta_shape(name) != shapes[name]:
            raise UserError(f"{label} does not fit this base: {name} is {list(shapes[name])} in the base but "
                            f"{list(ad.delta_shape(name))} in the LoRA; it was made for another model size")
    if rows is not None and ad.tokenizer_vocab is not None and ad.tokenizer_vocab != rows:
        raise UserError(f"the tokenizer in {ad.path} has {ad.tokenizer_vocab} tokens but {label}'s embeddings have "
                        f"{rows} rows: the LLaMA and Alpaca tokenizers must not be mixed; restore the "
                        "tokenizer files that came with this LoRA (download them again)")
    if rows is not None and rows < vocab:
        fix = (f"apply {label} before {vocab_from}" if vocab_from != "the base model"
               else "use the base model it was made for")
        raise UserError(f"{label} has a {rows}-token vocabulary, smaller than the {vocab} tokens of {vocab_from}: "
                        f"LoRAs that expand the vocabulary must go from small to large; {fix}")
    for name in ad.saved:
        s = ad.saved_shape(name)
        if name not in shapes or s[1:] != shapes[name][1:]:
            raise UserError(f"{label} replaces {name} with a {list(s)} tensor, which does not fit the base "
                            f"({list(shapes.get(name, ()))}); it was made for another model")
        shapes[name] = s
    return (rows, label) if rows is not None else (vocab, vocab_from)


def _fit_patch(inputs: MergeInputs, shapes: dict, family: str) -> None:
    """A patch applies to its own base: same family, and every tensor of the shape the merge produces."""
    p = inputs.patch
    check_family(family, family_of_config(p.config), what=inputs.patch_label)
    for name in p.names():
        if name.endswith(_SKIP):
            continue
        if name not in shapes or p.shape(name) != shapes[name]:
            raise UserError(f"the patch's {name} {list(p.shape(name))} does not fit the merged model "
                            f"({list(shapes.get(name, ()))}); a patch applies to its own base, without LoRAs")


def _pick_tokenizer(inputs: MergeInputs, vocab: int) -> Path:
    """The last LoRA's tokenizer, else the base's; it must not define more ids than the merged embeddings have."""
    tok_from = next((a for _, a in reversed(inputs.adapters) if a.tokenizer_dir), None)
    tok_dir = tok_from.tokenizer_dir if tok_from else inputs.base.tokenizer_dir
    if tok_dir is None:
        raise UserError(f"no tokenizer (tokenizer.model or tokenizer.json) in {inputs.base.path} or the LoRA folders; "
                        "download the tokenizer files of the base model")
    tv = tok_from.tokenizer_vocab if tok_from else tokenizer_vocab_size(tok_dir)  # an adapter counted its own
    if tv is not None and tv > vocab:
        raise UserError(f"the tokenizer in {tok_dir} has {tv} tokens but the merged model only {vocab} embedding rows; "
                        "use the tokenizer that belongs to the last LoRA or the base")
    return tok_dir


def _merged_config(inputs: MergeInputs, vocab: int) -> dict:
    """The base's config with the merged vocabulary and the RoPE settings long-context LoRAs ship."""
    config = dict(inputs.base.config)
    config["vocab_size"] = vocab
    for _, ad in inputs.adapters:
        if (ad.path / "config.json").is_file():
            lc = read_json(ad.path / "config.json")
            config.update({k: lc[k] for k in ("rope_scaling", "max_position_embeddings") if k in lc})
    return config


def plan_merge(inputs: MergeInputs) -> MergePlan:
    """Check the inputs against each other and plan the output (nothing is read but headers and configs).

    Raises:
        UserError: a LoRA of another family or size, a vocabulary applied out of order, mixed tokenizers,
            embeddings that disagree, a patch that does not fit.
    """
    base = inputs.base
    family = family_of_config(base.config)
    shapes = {n: base.shape(n) for n in base.names() if not n.endswith(_SKIP)}
    base_vocab = shapes.get("model.embed_tokens.weight", (int(base.config.get("vocab_size", 0)),))[0]
    vocab, vocab_from = base_vocab, "the base model"
    for label, ad in inputs.adapters:
        vocab, vocab_from = _fit_adapter(label, ad, shapes, family, vocab, vocab_from)
    rows = {shapes[n][0] for n in VOCAB_TENSORS if n in shapes}
    if len(rows) > 1:
        raise UserError(f"after the LoRAs, embed_tokens and lm_head disagree on the vocabulary ({sorted(rows)}); "
                        "a LoRA saves only one of them: check the LoRA order")
    if inputs.patch is not None:
        _fit_patch(inputs, shapes, family)
    return MergePlan(tensors=[TensorPlan(n, tuple(s)) for n, s in shapes.items()],
                     config=_merged_config(inputs, vocab), tokenizer_dir=_pick_tokenizer(inputs, vocab),
                     vocab_size=vocab, base_vocab=base_vocab)


def check_resources(plan: MergePlan, target: Path, options: MergeOptions) -> int:
    """Refuse when the output's filesystem lacks the space; returns the estimated peak RAM in bytes."""
    numel = sum(tp.numel for tp in plan.tensors)
    out_bytes = int(numel * BYTES_PER_VALUE[options.outtype] * (2 if options.fmt == "pth" else 1)) + (16 << 20)
    require_free_disk(target.parent, out_bytes, what=f"the merged model ({options.fmt})")
    return 2 * plan.largest_bytes + (400 << 20)


def describe(plan: MergePlan, inputs: MergeInputs, target: Path, ram_estimate: int) -> str:
    """The one line printed before the merge starts."""
    avail = available_ram_bytes()
    return (f"merging {len(plan.tensors)} tensors: {len(inputs.adapters)} LoRA(s){' + patch' if inputs.patch else ''}, "
            f"vocabulary {plan.base_vocab} -> {plan.vocab_size}; estimated peak RAM {human_bytes(ram_estimate)}"
            + (f" ({human_bytes(avail)} available)" if avail else "") + f"; output {target}")
