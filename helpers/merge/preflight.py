"""Everything checked before a merge writes anything: shapes, families, vocabulary order, tokenizers, disk, RAM.

:func:`merge_layout` turns the opened inputs into a :class:`MergeLayout` (every output tensor's name and shape, the
merged config, the tokenizer that goes with it) or stops with one :class:`UserError` that names the input at
fault; :func:`check_resources` checks the free disk and reports the memory the merge will need.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..catalog import check_family, family_of_config, family_of_lora
from ..checkpoint import Adapter, TensorSpec
from ..tokens import tokenizer_files, tokenizer_vocab_size
from ..disk import require_free_disk
from ..util import UserError, read_json, tree_bytes
from .inputs import MergeInputs
from .options import MergeOptions
from .sizes import output_size, peak_ram

VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")
_SKIP = "rotary_emb.inv_freq"  # buffers some old checkpoints saved; never merged or written


@dataclass(frozen=True)
class MergeLayout:
    """What the merge will produce.

    Attributes:
        tensors: every output tensor in output order, with its final shape.
        config: the merged HF ``config.json`` dict (``vocab_size`` updated, long-context RoPE of the LoRAs).
        tokenizer_dir: the folder whose tokenizer goes with the merged model (the last LoRA's, else the base's).
        vocab_size: rows of the merged embeddings.
        base_vocab: rows of the base model's embeddings.
    """

    tensors: list[TensorSpec]
    config: dict
    tokenizer_dir: Path
    vocab_size: int
    base_vocab: int


def check_config(config: dict, shapes: dict, *, source: str, vocab: int | None = None) -> None:
    """Every size ``config`` states must be what the tensors have: vocabulary (``vocab``, else the embedding
    rows), hidden and FFN widths, layers, attention and key/value heads (grouped-query attention).

    Args:
        config: an HF config.json dict.
        shapes: tensor name -> shape of the weights it describes.
        source: the config's file, named in the message beside the tensor it contradicts.
        vocab: the vocabulary the config must state (default: the rows of ``embed_tokens``).
    """
    def refuse(key: str, actual: object, evidence: str) -> None:
        raise UserError(f"{source} says {key} {config[key]} but the weights have {actual} ({evidence}): the config "
                        "does not belong to these weights; download config.json again")

    def shape(name: str) -> tuple[int, ...] | None:
        return shapes.get(name)

    def has(key: str) -> bool:
        return isinstance(config.get(key), int) and not isinstance(config.get(key), bool)

    emb, q, k = (shape("model.embed_tokens.weight"), shape("model.layers.0.self_attn.q_proj.weight"),
                 shape("model.layers.0.self_attn.k_proj.weight"))
    rows = vocab if vocab is not None else emb[0] if emb else None
    if has("vocab_size") and rows is not None and config["vocab_size"] != rows:
        refuse("vocab_size", rows, f"model.embed_tokens.weight has {rows} rows")
    hidden = emb[1] if emb else q[1] if q else None
    if has("hidden_size") and hidden is not None and config["hidden_size"] != hidden:
        refuse("hidden_size", hidden, f"model.embed_tokens.weight is {list(emb or q)}")
    gate = shape("model.layers.0.mlp.gate_proj.weight")
    if has("intermediate_size") and gate and config["intermediate_size"] != gate[0]:
        refuse("intermediate_size", gate[0], f"model.layers.0.mlp.gate_proj.weight is {list(gate)}")
    layers = len({n.split(".")[2] for n in shapes if n.startswith("model.layers.")})
    if has("num_hidden_layers") and layers and config["num_hidden_layers"] != layers:
        refuse("num_hidden_layers", layers, f"model.layers.0 to model.layers.{layers - 1}")
    if not (has("num_attention_heads") and q and hidden):
        return
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or (hidden // heads if heads and hidden % heads == 0 else None)
    if not head_dim or heads * head_dim != q[0]:
        refuse("num_attention_heads", f"q_proj rows {q[0]}", f"model.layers.0.self_attn.q_proj.weight is {list(q)}")
    kv = config.get("num_key_value_heads") or heads
    if k and kv * head_dim != k[0]:
        config = {**config, "num_key_value_heads": kv}
        refuse("num_key_value_heads", f"k_proj rows {k[0]}, not {kv * head_dim}",
               f"model.layers.0.self_attn.k_proj.weight is {list(k)}")


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
    vocab, vocab_from = (rows, label) if rows is not None else (vocab, vocab_from)
    if (ad.path / "config.json").is_file():  # long-context LoRAs ship the config of the merged model
        check_config(read_json(ad.path / "config.json"), shapes, source=f"{label}'s config.json ({ad.path})",
                     vocab=vocab)
    return vocab, vocab_from


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


def _pick_tokenizer(inputs: MergeInputs, vocab: int, vocab_from: str) -> Path:
    """The last LoRA's tokenizer, else the base's. It must not define more ids than the merged embeddings have,
    nor fewer when the embeddings come from another input (a LoRA that expands the vocabulary without its
    tokenizer would otherwise get the base's, beside embeddings of another size)."""
    tok_from = next(((lb, a) for lb, a in reversed(inputs.adapters) if a.tokenizer_dir), None)
    tok_dir = tok_from[1].tokenizer_dir if tok_from else inputs.base.tokenizer_dir
    if tok_dir is None:
        raise UserError(f"no tokenizer (tokenizer.model or tokenizer.json) in {inputs.base.path} or the LoRA folders; "
                        "download the tokenizer files of the base model")
    tv = tok_from[1].tokenizer_vocab if tok_from else tokenizer_vocab_size(tok_dir)  # an adapter counted its own
    if tv is not None and tv > vocab:
        raise UserError(f"the tokenizer in {tok_dir} has {tv} tokens but the merged model only {vocab} embedding rows; "
                        "use the tokenizer that belongs to the last LoRA or the base")
    tok_label = tok_from[0] if tok_from else "the base model"
    if tv is not None and tv != vocab and tok_label != vocab_from:
        own = dict(inputs.adapters).get(vocab_from)
        fix = (f"{vocab_from} ships no tokenizer: put the tokenizer files that came with it into its folder "
               "(download them again)" if own is not None and own.tokenizer_dir is None
               else "use LoRAs made to go together, in their order")
        raise UserError(f"{vocab_from} gives the merged model {vocab} embedding rows but the tokenizer that would go "
                        f"with them ({tok_label}'s, in {tok_dir}) has {tv} tokens; {fix}")
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


def replaced_first(inputs: MergeInputs) -> list[str]:
    """The tensors a LoRA replaces whole (its saved embeddings and head), in the order its weights file holds them:
    they are merged first, so that a LoRA read while it downloads is merged from as its bytes come (the rest needs
    its LoRA pairs, at the file's end, and the base's shards, which download after it)."""
    names: dict[str, None] = {}
    for _, ad in reversed(inputs.adapters):
        names.update((n, None) for n in ad.saved_in_file_order() if n not in names)
    return list(names)


def merge_layout(inputs: MergeInputs) -> MergeLayout:
    """Check the inputs against each other and plan the output (nothing is read but headers and configs).

    Raises:
        UserError: a LoRA of another family or size, a vocabulary applied out of order, mixed tokenizers,
            embeddings that disagree, a patch that does not fit.
    """
    base = inputs.base
    family = family_of_config(base.config)
    shapes = {n: base.shape(n) for n in base.names() if not n.endswith(_SKIP)}
    folder = base.path if base.path.is_dir() else base.path.parent
    cfg_file = next((f for f in (folder / "config.json", folder / "params.json") if f.is_file()), folder)
    check_config(base.config, shapes, source=f"the base model's {cfg_file.name} ({cfg_file})")
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
    first = [n for n in replaced_first(inputs) if n in shapes]
    order = [*first, *(n for n in shapes if n not in first)]
    return MergeLayout(tensors=[TensorSpec(n, tuple(shapes[n])) for n in order],
                     config=_merged_config(inputs, vocab), tokenizer_dir=_pick_tokenizer(inputs, vocab, vocab_from),
                     vocab_size=vocab, base_vocab=base_vocab)


def output_bytes(layout: MergeLayout, options: MergeOptions) -> int:
    """Disk the finished output needs (:func:`.sizes.output_size`)."""
    tokenizer = sum(f.stat().st_size for f in tokenizer_files(layout.tokenizer_dir))
    return output_size(layout.config, layout.tensors, options, tokenizer)


def check_resources(layout: MergeLayout, target: Path, options: MergeOptions, *, partial: Path | None = None,
                    planned: tuple[int, int] | None = None) -> int:
    """Refuse when the output's filesystem lacks the space still needed (what ``partial``, the unfinished output of
    an interrupted run, already holds is not needed again); returns the estimated peak RAM in bytes. ``planned``:
    ``(output bytes still to write, peak RAM)`` of the merge's resource plan, made before the download; its figures
    are the ones checked."""
    resuming = ", resuming" if partial is not None and partial.exists() else ""
    if planned is not None:
        need, ram = planned
    else:
        need = output_bytes(layout, options) - (tree_bytes(partial) if partial is not None else 0)
        ram = peak_ram(layout.config, layout.tensors, options)
    require_free_disk(target.parent, max(need, 1 << 20), what=f"the merged model ({options.fmt}){resuming}")
    return ram
