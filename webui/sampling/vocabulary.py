"""A model's vocabulary as the samplers see it: each token's bytes, and DRY's sequence-breaker table.

DRY must know which tokens end a repeat. A breaker such as "\\n" is a breaker wherever its text
appears: in the token "\\n" itself, in "\\n\\n", in ".\\n". And a breaker can start inside one token and
finish in the next few ("###" as "#" + "##"). This is the rule KoboldCpp and llama.cpp use, so Hearth's
pipeline and llama.cpp's native DRY agree token for token (tests/test_sampler_parity.py). Scanning the
vocabulary costs ~0.1 s on 150k tokens, so a Vocabulary computes it once per model and breaker list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import cached_property

Encode = Callable[[str], list[int]]

#: head token -> the token sequences that must follow it to complete a breaker (() = the head alone).
BreakerTable = Mapping[int, frozenset[tuple[int, ...]]]

_MAX_BREAKER_BYTES = 40  # as llama.cpp: longer breakers are cut
_MAX_TAIL_TOKENS = 20


class Vocabulary:
    """Token texts of one model (bytes; special tokens as their text) and lookups built on them."""

    def __init__(self, size: int, token_text: Callable[[int], bytes], encode: Encode):
        self.size = size
        self._token_text = token_text
        self.encode = encode
        self._breakers: dict[tuple[str, ...], BreakerTable] = {}

    @cached_property
    def texts(self) -> list[bytes]:
        return [self._token_text(token) for token in range(self.size)]

    def breakers(self, strings: Iterable[str]) -> BreakerTable:
        """DRY's breaker table for `strings`, computed on first use."""
        key = tuple(strings)
        if key not in self._breakers:
            self._breakers[key] = breaker_table(key, self.texts, self.encode)
        return self._breakers[key]


def breaker_table(strings: Iterable[str], texts: list[bytes], encode: Encode) -> BreakerTable:
    """Every token that holds a whole breaker (tail ()), and every token whose text ends with the start
    of a breaker, with the tokens of the breaker's rest as its tail."""
    table: dict[int, set[tuple[int, ...]]] = {}
    for string in strings:
        breaker = string.encode("utf-8")[:_MAX_BREAKER_BYTES]
        if not breaker:
            continue
        first = breaker[:1]
        for token, word in enumerate(texts):
            if first not in word:
                continue
            if breaker in word:
                table.setdefault(token, set()).add(())
                continue
            start = word.find(first)
            while start >= 0:
                rest = word[start:]
                if breaker.startswith(rest):
                    remainder = breaker[len(rest) :].decode("utf-8", errors="ignore")
                    if remainder:
                        table.setdefault(token, set()).add(tuple(encode(remainder)[:_MAX_TAIL_TOKENS]))
                start = word.find(first, start + 1)
    return {token: frozenset(tails) for token, tails in table.items()}


def single_token_table(ids: Iterable[int]) -> BreakerTable:
    """A table where each id breaks on its own (for callers that know their breaker ids)."""
    return {int(token): frozenset({()}) for token in ids}


def sequence_breaker_ids(breakers: Iterable[str], encode: Encode | None) -> set[int]:
    """Token ids of DRY's sequence breakers: every id a breaker encodes to, as it appears mid-text.

    Each breaker is encoded after an 'a' (as text-generation-webui does) so that tokenizers which mark
    the start of a word or of the text give the id seen inside generated text; the ids that follow the
    encoding of 'a' alone are the breaker's. tgw keeps only the last id; we keep all of them, so a
    breaker that splits into several tokens (e.g. "###" or an emoji) stops a match at any of its pieces.
    If 'a' merges with the breaker into one token, that token is used. Without `encode`, no breakers."""
    if encode is None:
        return set()
    prefix = encode("a")
    ids: set[int] = set()
    for breaker in breakers:
        tokens = encode("a" + breaker)
        start = len(prefix) if tokens[: len(prefix)] == prefix else len(tokens) - 1
        ids.update(tokens[start:] or tokens[-1:])
    return ids
