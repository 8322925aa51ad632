"""Vocabulary expansion: merge a Chinese sentencepiece model into a LLaMA tokenizer.

The Chinese-LLaMA recipe keeps every piece and id of the base tokenizer and appends each piece of
the Chinese model that the base lacks, with score 0. With LLaMA's 32,000-piece tokenizer and the
20,000-piece Chinese model this yields the 49,953-piece Chinese-LLaMA tokenizer.
"""
from __future__ import annotations

from pathlib import Path

from .util import UserError


def _load_proto(src: str | Path | bytes):
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
    base_proto = _load_proto(base)
    add_proto = _load_proto(add)
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
    proto = _load_proto(base)
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
    return len(_load_proto(model).pieces)
