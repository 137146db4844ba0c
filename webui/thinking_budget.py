"""A thinking budget: after N tokens of reasoning the block is closed and the answer starts.

It works on any token source (a backend's native sampler or Hearth's pipeline): the tokens of the
closing marker (``</think>`` and a blank line) are put in as if generated, then a new source continues
from the sequence that now holds them. The prefix cache keeps that restart cheap: only the forced tokens
are read. Reasoning that closes by itself within the budget is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from webui.errors import GenerationError

if TYPE_CHECKING:
    from webui.events import TokenLogprob
    from webui.loader_api import Model
    from webui.pipeline_path import TokenSource


class ThinkingBudget(BaseModel):
    """How a reply that starts inside a reasoning block is held to a budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: int = Field(ge=1, description="Most reasoning tokens before the block is closed.")
    end: str = Field(min_length=1, description="The text that closes the reasoning block, e.g. '</think>'.")
    #: The text that opens the block when the model writes it itself ('' when the prompt opened it): the
    #: budget counts from there, and a reply that never opens a block is left alone.
    start: str = ""
    #: What follows the closing marker before the answer (the templates' own spacing).
    after: str = "\n\n"


class BudgetedTokens:
    """Tokens from `start(ids)`; once `budget.tokens` tokens passed without the closing marker, the marker's
    tokens follow (logprob None) and a source started on the sequence including them continues."""

    def __init__(self, model: Model, ids: Sequence[int], budget: ThinkingBudget,
                 start: Callable[[list[int]], TokenSource]):
        self._model, self._ids, self._budget, self._start = model, list(ids), budget, start
        self._generated: list[int] = []
        self._source: TokenSource | None = start(list(ids))
        self._closed = False
        self._opened_at: int | None = None if budget.start else 0  # generated tokens before the block opened
        self.forced = False  # the budget ran out and the block was closed by Hearth
        self._offset = 0  # generated tokens the current source was started after

    def __iter__(self) -> Iterator[tuple[int, TokenLogprob | None]]:
        while self._source is not None:
            for token, logprob in self._source:
                self._generated.append(token)
                yield token, logprob
                if self._closed:
                    continue
                if self._opened_at is None:
                    if self._marker_seen(self._budget.start):
                        self._opened_at = len(self._generated)
                    continue
                if self._marker_seen(self._budget.end):
                    self._closed = True
                elif len(self._generated) - self._opened_at >= self._budget.tokens:
                    break
            else:
                return
            yield from self._close()

    def _marker_seen(self, marker: str) -> bool:
        """Whether `marker` is in the recent text (a few tokens are decoded, not the whole reply)."""
        return marker in self._model.detokenize_special(self._generated[-8:])

    def _close(self) -> Iterator[tuple[int, TokenLogprob | None]]:
        self._closed, self.forced = True, True
        self._end_source()
        forced = self._model.tokenize(self._budget.end + self._budget.after, add_bos=False)
        for token in forced:
            self._generated.append(token)
            yield token, None
        self._source = self._start(self._ids + self._generated)
        self._offset = len(self._generated)

    def rollback(self, n_generated: int, ban: int) -> None:
        """Banned strings: forget generated tokens from `n_generated` on (see `SampledTokens.rollback`)."""
        if n_generated < self._offset:
            raise GenerationError("a banned string began in the reasoning that the thinking budget closed: "
                                  "raise the budget or remove the banned string")
        self._source.rollback(n_generated - self._offset, ban)  # type: ignore[union-attr]
        del self._generated[n_generated:]

    def _end_source(self) -> None:
        close = getattr(self._source, "close", None)
        if close:
            close()
        self._source = None

    def close(self) -> None:
        self._end_source()
