"""Turning a growing list of token ids into safe text deltas.

Two problems live here: a token may end in the middle of a UTF-8 character or a SentencePiece word
(so text is decoded over a small window and held back while it ends in U+FFFD), and a stop string may
arrive split across several tokens (so text that could still become a stop string is held back until
it cannot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Decodes token ids one at a time; `push` returns only the newly completed text.

    Decoding always restarts from `prefix_offset`, a few tokens back, so that tokenizers that drop or
    add a leading space at the start of a sequence still produce the same text as a full decode.
    """

    def __init__(self, detokenize: Callable[[Sequence[int]], str], context_ids: Sequence[int] = ()):
        self._detokenize = detokenize
        # A few context tokens before the output make the first generated word decode as it would in place.
        self._ids: list[int] = list(context_ids[-4:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self.text = ""

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix_text = self._detokenize(self._ids[self._prefix_offset : self._read_offset])
        full_text = self._detokenize(self._ids[self._prefix_offset :])
        if full_text.endswith(REPLACEMENT) or len(full_text) < len(prefix_text):
            return ""  # an unfinished multi-byte character: wait for the next token
        delta = full_text[len(prefix_text) :]
        self._prefix_offset = max(self._read_offset, len(self._ids) - 6)
        self._read_offset = len(self._ids)
        self.text += delta
        return delta

    def flush(self) -> str:
        """Whatever is still pending at the end (an incomplete character is emitted as U+FFFD)."""
        if self._read_offset == len(self._ids):
            return ""
        prefix_text = self._detokenize(self._ids[self._prefix_offset : self._read_offset])
        delta = self._detokenize(self._ids[self._prefix_offset :])[len(prefix_text) :]
        self._read_offset = len(self._ids)
        self.text += delta
        return delta


class StopMatcher:
    """Finds stop strings in streamed text without ever emitting any part of one."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self._pending = ""
        self.stopped_by: str | None = None

    def feed(self, text: str) -> str:
        """Add streamed text; return the part that is safe to show now. Sets `stopped_by` on a match."""
        if self.stopped_by is not None:
            return ""
        self._pending += text
        if not self.stops:
            out, self._pending = self._pending, ""
            return out
        first = min(
            ((idx, s) for s in self.stops if (idx := self._pending.find(s)) >= 0), default=None, key=lambda t: t[0]
        )
        if first is not None:
            out = self._pending[: first[0]]
            self._pending = ""
            self.stopped_by = first[1]
            return out
        hold = self._partial_suffix(self._pending)
        out = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(self._pending) - hold :]
        return out

    def flush(self) -> str:
        """At the end of generation, held-back text that never became a stop string is released."""
        out, self._pending = ("" if self.stopped_by else self._pending), ""
        return out

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best


class BannedStringGuard:
    """Keeps banned phrases out of the output, even when they form across token boundaries.

    Text that could still grow into a banned phrase is held back, aligned to the start of the token it
    begins in. When a phrase completes, `check` names the token index where it began: the caller rolls
    generation back to there and bans that token at that position (KoboldCpp's phrase banning).
    """

    def __init__(self, phrases: Sequence[str]):
        self.phrases = [p for p in phrases if p]
        self._partial = StopMatcher(self.phrases)

    def find(self, text: str, start: int) -> int | None:
        """Char offset of the earliest banned phrase in text[start:], or None."""
        hits = [i for p in self.phrases if (i := text.find(p, start)) >= 0]
        return min(hits) if hits else None

    def safe_end(self, text: str, token_offsets: Sequence[int]) -> int:
        """How much of `text` can be shown: up to the token where a possible banned phrase begins."""
        if not self.phrases:
            return len(text)
        hold = self._partial._partial_suffix(text)
        if not hold:
            return len(text)
        return token_offsets[token_index(token_offsets, len(text) - hold)]


def token_index(token_offsets: Sequence[int], char: int) -> int:
    """Index of the first token that contributes to char offset `char` (offsets are each token's start;
    a token that ended mid-character has the same offset as the one completing it)."""
    import bisect

    first = bisect.bisect_left(token_offsets, char)
    if first < len(token_offsets) and token_offsets[first] == char:
        return first
    return max(first - 1, 0)
