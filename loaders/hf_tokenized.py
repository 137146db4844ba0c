"""What a model whose tokenizer is a Hugging Face tokenizer answers the same way on every backend.

Transformers and ExLlamaV2 models both tokenize with `transformers.AutoTokenizer` and read their context
from `ModelInfo`; they inherit these members from `HFTokenized` (listed before `Model` in the bases).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from webui.loader_api import ModelInfo


class HFTokenized:
    """n_ctx, EOS/BOS, tokenize and detokenize over `self._tokenizer`, `self._eos` and `self.info`."""

    info: ModelInfo
    _tokenizer: Any
    _eos: frozenset[int]

    @property
    def hf_tokenizer(self) -> Any:
        """The Hugging Face tokenizer itself (constrained decoding builds its token table from it)."""
        return self._tokenizer

    @property
    def n_ctx(self) -> int:
        return self.info.context_length

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos

    @property
    def bos_token_id(self) -> int | None:
        return self._tokenizer.bos_token_id

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        ids = self._tokenizer.encode(text, add_special_tokens=False)
        bos = self.bos_token_id
        if add_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=True)

    def detokenize_special(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)
