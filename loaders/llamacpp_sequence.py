"""One token sequence held in a llama.cpp context's KV cache, with longest-common-prefix reuse.

Hearth drives llama.cpp below `Llama.generate`: it needs the cached prefix to survive across requests
(so a chat's next turn only evaluates new tokens), a second context for the CFG negative prompt, and an
exact count of evaluated tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from webui.errors import ModelRuntimeError
from webui.loader_api import common_prefix_length


class LlamaSequence:
    def __init__(self, ctx: Any, batch: Any, n_batch: int, n_vocab: int, n_ctx: int):
        self._ctx = ctx
        self._batch = batch
        self._n_batch = n_batch
        self._n_vocab = n_vocab
        self._n_ctx = n_ctx
        self.ids: list[int] = []
        #: Tokens evaluated by this sequence since it was created.
        self.evaluated = 0

    @property
    def ctx(self) -> Any:
        return self._ctx

    def sync(self, ids: Sequence[int]) -> int:
        """Make the cache hold exactly `ids` with fresh logits for the last one; return tokens evaluated."""
        ids = list(ids)
        if not ids:
            raise ModelRuntimeError("cannot evaluate an empty token sequence")
        if len(ids) > self._n_ctx:
            raise ModelRuntimeError(f"{len(ids)} tokens do not fit the context of {self._n_ctx}")
        prefix = common_prefix_length(self.ids, ids)
        if prefix == len(ids) == len(self.ids):
            return 0
        prefix = min(prefix, len(ids) - 1)  # the last token is re-fed so that its logits are current
        if prefix < len(self.ids) and not self._ctx.kv_cache_seq_rm(0, prefix, -1):
            self._ctx.kv_cache_clear()
            prefix = 0
        del self.ids[prefix:]
        return self.append(ids[prefix:])

    def append(self, tokens: Sequence[int], out: np.ndarray | None = None) -> int:
        """Evaluate `tokens` after what is cached; with `out` ([len(tokens), n_vocab]), every token's
        logits are requested from llama.cpp and copied into it (perplexity evaluation)."""
        if len(self.ids) + len(tokens) > self._n_ctx:
            raise ModelRuntimeError(f"{len(self.ids) + len(tokens)} tokens do not fit the context of {self._n_ctx}")
        for start in range(0, len(tokens), self._n_batch):
            chunk = list(tokens[start : start + self._n_batch])
            self._batch.set_batch(batch=chunk, n_past=len(self.ids), logits_all=out is not None)
            try:
                self._ctx.decode(self._batch)
            except RuntimeError as exc:
                self._ctx.kv_cache_seq_rm(0, len(self.ids), -1)
                raise ModelRuntimeError(
                    f"llama.cpp failed to evaluate {len(chunk)} tokens at position {len(self.ids)} ({exc}). "
                    "Return code 1 means no free slot in the KV cache: try a larger n_ctx or a smaller n_batch."
                ) from exc
            if out is not None:  # rows in batch order: every token of the chunk was an output
                rows = np.ctypeslib.as_array(self._ctx.get_logits(), shape=(len(chunk), self._n_vocab))
                out[start : start + len(chunk)] = rows
            self.ids.extend(chunk)
            self.evaluated += len(chunk)
        return len(tokens)

    def score_all(self, ids: Sequence[int]) -> np.ndarray:
        """Evaluate `ids` from position 0 with the logits at every position ([len(ids), n_vocab]). Earlier
        positions' logits are not kept by llama.cpp, so the cache is not reused; afterwards it holds `ids`
        (with the last token's logits current), so the next `sync` reuses it truthfully."""
        ids = list(ids)
        if not ids:
            raise ModelRuntimeError("cannot evaluate an empty token sequence")
        if len(ids) > self._n_ctx:
            raise ModelRuntimeError(f"{len(ids)} tokens do not fit the context of {self._n_ctx}")
        self.reset()
        out = np.empty((len(ids), self._n_vocab), dtype=np.float32)
        self.append(ids, out)
        return out

    def last_logits(self) -> np.ndarray:
        """Logits after the last evaluated token, copied out of llama.cpp's buffer."""
        ptr = self._ctx.get_logits_ith(-1)
        if not ptr:
            raise ModelRuntimeError("llama.cpp has no logits for the last token")
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

    def reset(self) -> None:
        self._ctx.kv_cache_clear()
        self.ids.clear()
