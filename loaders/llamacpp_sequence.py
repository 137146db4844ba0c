"""One token sequence held in a llama.cpp context's KV cache, with longest-common-prefix reuse.

Hearth drives llama.cpp below `Llama.generate`: it needs the cached prefix to survive across requests
(so a chat's next turn only evaluates new tokens), a second context for the CFG negative prompt, and an
exact count of evaluated tokens.

A sequence may hold images (`ImageSpan`, made by `loaders.llamacpp_media`): runs of placeholder ids whose
positions llama.cpp fills with the image's embeddings. The prefix kept across calls ends before the first
image that is not the same image (sha256) at the same place, and never inside one: an image is evaluated
whole (its tokens may attend to each other both ways). Positions are counted apart from token indices:
an M-RoPE model (Qwen2-VL) gives an image fewer positions (`n_pos`) than tokens, and the text after it
continues from the image's last position, as llama.cpp's own server does.

With `parallel` slots several sequences share one context, each its own `seq_id`; inside a lane
(`webui.lanes`) their token evaluations go through the context's `LlamaBatcher` (`loaders.llamacpp_batch`)
and are decoded in one batch with the other lanes' tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loaders.llamacpp_batch import LlamaBatcher, Wanted, decode_failed, fill_batch
from webui import lanes
from webui.errors import ModelRuntimeError
from webui.loader_api import common_prefix_length


@dataclass(frozen=True)
class ImageSpan:
    """One image in a token sequence: ids[start:start + n_tokens] are its placeholders; it takes n_pos
    positions; `chunk.eval(ctx, n_past, n_batch, logits_last) -> next position` writes it into a context."""

    start: int
    n_tokens: int
    n_pos: int
    sha256: str
    chunk: Any

    @property
    def end(self) -> int:
        return self.start + self.n_tokens

    def same_as(self, other: ImageSpan) -> bool:
        return (self.start, self.n_tokens, self.n_pos, self.sha256) == (other.start, other.n_tokens, other.n_pos, other.sha256)


def _reusable(prefix: int, cached: Sequence[ImageSpan], wanted: Sequence[ImageSpan]) -> int:
    """Shorten a common token prefix so that it keeps only the images both sequences hold at the same place
    and ends outside every image."""
    for span in cached:
        if span.start < prefix and not any(span.same_as(w) for w in wanted):
            prefix = span.start
    for span in wanted:
        if span.start < prefix and not any(span.same_as(c) for c in cached):
            prefix = span.start
    for span in wanted:
        if span.start < prefix < span.end:
            prefix = span.start
    return prefix


class LlamaSequence:
    def __init__(self, ctx: Any, batch: Any, n_batch: int, n_vocab: int, n_ctx: int, seq_id: int = 0,
                 batcher: LlamaBatcher | None = None):
        self._ctx = ctx
        self._batch = batch
        self._n_batch = n_batch
        self._n_vocab = n_vocab
        self._n_ctx = n_ctx
        #: This sequence's id in its context (the context holds several with `parallel` slots).
        self.seq_id = seq_id
        #: Set when the context is shared: evaluations inside a lane are batched with the other lanes'.
        self._batcher = batcher
        #: The batch row whose logits are this sequence's current ones (-1: the last of its own decode).
        self.logits_index = -1
        self.ids: list[int] = []
        #: The images among `ids`, in order.
        self.spans: list[ImageSpan] = []
        #: The next position (== len(ids) unless an image takes fewer positions than tokens).
        self.n_past = 0
        #: Tokens evaluated by this sequence since it was created (an image's tokens included).
        self.evaluated = 0

    @property
    def ctx(self) -> Any:
        return self._ctx

    def position(self, index: int) -> int:
        """The position of token `index` (at an image boundary or in text)."""
        return index - sum(s.n_tokens - s.n_pos for s in self.spans if s.end <= index)

    def sync(self, ids: Sequence[int], spans: Sequence[ImageSpan] = ()) -> int:
        """Make the cache hold exactly `ids` (with `spans` as its images) with fresh logits for the last one;
        return tokens evaluated."""
        ids = list(ids)
        if not ids:
            raise ModelRuntimeError("cannot evaluate an empty token sequence")
        if len(ids) > self._n_ctx:
            raise ModelRuntimeError(f"{len(ids)} tokens do not fit the context of {self._n_ctx}")
        prefix = common_prefix_length(self.ids, ids)
        if self.spans or spans:
            prefix = _reusable(prefix, self.spans, spans)
        if prefix == len(ids) == len(self.ids) and self._batcher is None:  # a shared context's logits are
            return 0  # another sequence's by now: the last token is read again below
        prefix = min(prefix, len(ids) - 1)  # the last token is re-fed so that its logits are current:
        prefix = next((s.start for s in spans if s.start < prefix < s.end), prefix)  # a whole image if it ends ids
        prefix = self._truncate(prefix)
        before = self.evaluated
        cursor = prefix
        for span in spans:
            if span.start < prefix:
                continue
            self.append(ids[cursor : span.start])
            self._append_image(span, ids[span.start : span.end], logits_last=span.end == len(ids))
            cursor = span.end
        self.append(ids[cursor:])
        return self.evaluated - before

    def _truncate(self, prefix: int) -> int:
        """Drop the cached tokens from index `prefix` on (the whole cache when llama.cpp cannot cut it);
        return how many are kept."""
        if prefix < len(self.ids):
            position = self.position(prefix)
            if not self._ctx.kv_cache_seq_rm(self.seq_id, position, -1):
                self.reset()
                return 0
            del self.ids[prefix:]
            self.spans = [s for s in self.spans if s.end <= prefix]
            self.n_past = position
        return len(self.ids)

    def _append_image(self, span: ImageSpan, placeholders: list[int], logits_last: bool) -> None:
        if len(self.ids) + span.n_tokens > self._n_ctx:
            raise ModelRuntimeError(f"{len(self.ids) + span.n_tokens} tokens do not fit the context of {self._n_ctx}")
        self._alone()
        try:
            n_past = span.chunk.eval(self._ctx, self.n_past, self._n_batch, logits_last, self.seq_id)
        except ModelRuntimeError:
            self._ctx.kv_cache_seq_rm(self.seq_id, self.n_past, -1)
            raise
        self.logits_index = -1
        self.ids.extend(placeholders)
        self.spans.append(span)
        self.n_past = n_past
        self.evaluated += span.n_tokens

    def append(self, tokens: Sequence[int], out: np.ndarray | None = None) -> int:
        """Evaluate `tokens` after what is cached; with `out` ([len(tokens), n_vocab]), every token's
        logits are requested from llama.cpp and copied into it (perplexity evaluation)."""
        if len(self.ids) + len(tokens) > self._n_ctx:
            raise ModelRuntimeError(f"{len(self.ids) + len(tokens)} tokens do not fit the context of {self._n_ctx}")
        if not tokens:
            return 0
        if self._batcher is not None and out is None and lanes.current() is not None:
            lanes.park(Wanted(self, list(tokens)))  # decoded with the other lanes' tokens (the batcher appends)
            return len(tokens)
        self._alone()
        for start in range(0, len(tokens), self._n_batch):
            chunk = list(tokens[start : start + self._n_batch])
            fill_batch(self._batch, [(chunk, self.seq_id, self.n_past)], logits_all=out is not None)
            try:
                self._ctx.decode(self._batch)
            except RuntimeError as exc:
                raise decode_failed(self, len(chunk), exc) from exc
            if out is not None:  # rows in batch order: every token of the chunk was an output
                rows = np.ctypeslib.as_array(self._ctx.get_logits(), shape=(len(chunk), self._n_vocab))
                out[start : start + len(chunk)] = rows
            self.appended(chunk)
            self.logits_index = -1
        return len(tokens)

    def appended(self, chunk: Sequence[int]) -> None:
        """`chunk` was decoded into this sequence (by `append`, or by the batcher)."""
        self.ids.extend(chunk)
        self.n_past += len(chunk)
        self.evaluated += len(chunk)

    def _alone(self) -> None:
        """Inside a lane of a shared context: wait until this sequence may decode by itself."""
        if self._batcher is not None and lanes.current() is not None:
            lanes.park(Wanted(exclusive=True))

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
        ptr = self._ctx.get_logits_ith(self.logits_index)
        if not ptr:
            raise ModelRuntimeError("llama.cpp has no logits for the last token")
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

    def reset(self) -> None:
        if self._batcher is not None:  # the context holds other sequences too
            self._ctx.kv_cache_seq_rm(self.seq_id, -1, -1)
        else:
            self._ctx.kv_cache_clear()
        self.ids.clear()
        self.spans.clear()
        self.n_past = 0
