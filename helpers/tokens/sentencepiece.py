"""Sentencepiece models as data: read, count, merge and extend their pieces, and write tokenizer folders.

The released LLaMA/Alpaca tokenizers are sentencepiece ``tokenizer.model`` files; Llama-3's file of the same
name is tiktoken text, which :func:`is_sentencepiece` tells apart.
"""
from __future__ import annotations

from pathlib import Path

from ..util import UserError, atomic_path, write_json


def load_proto(src: str | Path | bytes):
    """The ``ModelProto`` of a sentencepiece model file or its bytes (UserError when it is not one)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    data = src if isinstance(src, (bytes, bytearray)) else Path(src).read_bytes()
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception:  # noqa: BLE001 - protobuf raises its own DecodeError
        raise UserError(f"{src if not isinstance(src, bytes) else 'input'} is not a sentencepiece model") from None
    if not proto.pieces:
        raise UserError("the sentencepiece model has no pieces; pass a real tokenizer.model")
    return proto


def merge_sentencepiece(base: str | Path | bytes, add: str | Path | bytes) -> bytes:
    """Append the pieces of ``add`` missing from ``base``; return the merged model's bytes.

    Base pieces keep their ids, scores and types. New pieces get score 0 and type NORMAL;
    control/unknown/byte pieces of ``add`` are skipped (the base has its own).

    Args:
        base: the base tokenizer (path to ``tokenizer.model`` or its bytes).
        add: the sentencepiece model whose pieces are added.
    """
    base_proto = load_proto(base)
    add_proto = load_proto(add)
    seen = {p.piece for p in base_proto.pieces}
    normal = type(base_proto.pieces[0]).NORMAL
    for p in add_proto.pieces:
        if p.type != normal or p.piece in seen:
            continue
        new = base_proto.pieces.add()
        new.piece, new.score, new.type = p.piece, 0.0, normal
        seen.add(p.piece)
    return base_proto.SerializeToString()


def add_pieces(base: str | Path | bytes, pieces: list[str]) -> bytes:
    """Append ``pieces`` (skipping ones already present) with score 0; return the model's bytes."""
    proto = load_proto(base)
    seen = {p.piece for p in proto.pieces}
    normal = type(proto.pieces[0]).NORMAL
    for piece in pieces:
        if piece not in seen:
            new = proto.pieces.add()
            new.piece, new.score, new.type = piece, 0.0, normal
            seen.add(piece)
    return proto.SerializeToString()


def piece_count(model: str | Path | bytes) -> int:
    """Number of pieces in a sentencepiece model."""
    return len(load_proto(model).pieces)


def sp_model_path(src: str | Path) -> Path:
    """``tokenizer.model`` itself, or the one inside a tokenizer/model folder."""
    p = Path(src)
    if p.is_dir():
        p = p / "tokenizer.model"
    if not p.is_file():
        raise UserError(f"{p} not found; pass a sentencepiece tokenizer.model or a folder that holds one "
                        "(Llama-3's BPE tokenizer.json cannot be expanded this way)")
    return p


def sp_processor(model: str | Path | bytes, *, dummy_prefix: bool | None = None):
    """A ``SentencePieceProcessor`` for a model file/folder/bytes (optionally toggling the dummy prefix)."""
    import sentencepiece as spm

    proto = load_proto(model if isinstance(model, (bytes, bytearray)) else sp_model_path(model))
    if dummy_prefix is not None:
        proto.normalizer_spec.add_dummy_prefix = dummy_prefix
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto.SerializeToString())
    return sp


def count_tokens(model: str | Path | bytes, text: str) -> int:
    """Tokens sentencepiece gives ``text`` (line by line, no BOS), as the released tokenizers encode it."""
    sp = model if hasattr(model, "EncodeAsIds") else sp_processor(model)
    return sum(len(sp.encode(line)) for line in text.splitlines() if line.strip())


def _special_names(sp) -> dict[str, str]:
    names = {}
    for key, idx in (("bos_token", sp.bos_id()), ("eos_token", sp.eos_id()), ("unk_token", sp.unk_id())):
        if idx >= 0:
            names[key] = sp.id_to_piece(idx)
    return names


def write_sp_tokenizer_files(folder: str | Path, model: bytes, *, pad: bool = False) -> int:
    """Write ``tokenizer.model`` plus slow-``LlamaTokenizer`` configs into an existing folder.

    With ``pad`` a ``[PAD]`` token is added after the pieces (as Chinese-Alpaca v1 did). Returns the
    vocabulary size (pieces, plus one with ``pad``).
    """
    folder = Path(folder)
    sp = sp_processor(model)
    special = _special_names(sp)
    config = {**special, "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
              "legacy": True, "model_max_length": 1000000000000000019884624838656, "sp_model_kwargs": {},
              "tokenizer_class": "LlamaTokenizer", "use_fast": False}
    n = sp.get_piece_size()
    (folder / "tokenizer.model").write_bytes(model)
    if pad:
        special["pad_token"] = config["pad_token"] = "[PAD]"
        write_json(folder / "added_tokens.json", {"[PAD]": n})
        n += 1
    write_json(folder / "special_tokens_map.json", special)
    write_json(folder / "tokenizer_config.json", config)
    return n


def write_tokenizer_dir(out_dir: str | Path, model: bytes) -> Path:
    """Write ``tokenizer.model`` plus slow-``LlamaTokenizer`` config files into a new folder (atomically)."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        write_sp_tokenizer_files(tmp, model)
    return Path(out_dir)


def model_bytes(model: str | Path | bytes) -> bytes:
    """The serialized model: ``model`` itself when it is bytes, else the file (or the folder's ``tokenizer.model``)."""
    return bytes(model) if isinstance(model, (bytes, bytearray)) else sp_model_path(model).read_bytes()


def is_sentencepiece(path: str | Path) -> bool:
    """True when ``path`` loads as a sentencepiece model (Llama-3's tiktoken ``tokenizer.model`` does not)."""
    import sentencepiece as spm

    try:
        spm.SentencePieceProcessor(model_file=str(path))
    except Exception:  # noqa: BLE001 - OSError, RuntimeError: not a sentencepiece file
        return False
    return True
