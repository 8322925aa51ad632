"""The tokenizer class :func:`helpers.tokens.load_tokenizer` builds on transformers 5 (imports transformers)."""
from __future__ import annotations

from typing import Any

from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

from .llama_folder import LlamaFolderMixin

__all__ = ["SentencePieceTokenizer"]


class SentencePieceTokenizer(LlamaFolderMixin, SentencePieceBackend):
    """transformers' ``SentencePieceBackend`` (encodes with sentencepiece, so ids equal ``sp.encode``'s) that
    wraps sequences as ``LlamaTokenizer`` does: BOS before each sequence if ``add_bos_token``, EOS after it if
    ``add_eos_token``. Decoding and saving come from :class:`~helpers.tokens.llama_folder.LlamaFolderMixin`.
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str, add_bos_token: bool = True, add_eos_token: bool = False, **kwargs: Any) -> None:
        self.add_bos_token, self.add_eos_token = add_bos_token, add_eos_token
        super().__init__(vocab_file=vocab_file, add_bos_token=add_bos_token, add_eos_token=add_eos_token, **kwargs)

    def _wrap(self, ids: list[int], *, mask: bool = False) -> list[int]:
        """``ids`` with BOS/EOS around them, or (``mask``) the matching special-tokens mask."""
        bos = [self.bos_token_id] if self.add_bos_token and self.bos_token_id is not None else []
        eos = [self.eos_token_id] if self.add_eos_token and self.eos_token_id is not None else []
        if mask:
            return [1] * len(bos) + [0] * len(ids) + [1] * len(eos)
        return bos + list(ids) + eos

    def build_inputs_with_special_tokens(self, token_ids_0: list[int],
                                         token_ids_1: list[int] | None = None) -> list[int]:
        return self._wrap(token_ids_0) + (self._wrap(token_ids_1) if token_ids_1 is not None else [])

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: list[int] | None = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
        second = self._wrap(token_ids_1, mask=True) if token_ids_1 is not None else []
        return self._wrap(token_ids_0, mask=True) + second
