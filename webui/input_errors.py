"""Mistakes in what a client sent that only the backend can see: a token id past the vocabulary, a grammar
that does not parse, a JSON schema the grammar library cannot enforce. Each is the client's to fix (a 400
naming the field in the API, a message in the UI), never a crash: llama.cpp aborts the whole process on an
id outside its vocabulary, so ids are checked before they reach it.
"""

from __future__ import annotations

from collections.abc import Sequence

from webui.errors import HearthError


class InvalidInput(HearthError):
    """A value a client sent that the model cannot take; `param` names the request field when known."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class InvalidTokenId(InvalidInput):
    """A token id outside 0..vocab_size-1."""


class InvalidGrammar(InvalidInput):
    """A grammar_string that is not a valid GBNF grammar."""


class InvalidSchema(InvalidInput):
    """A json_schema that is not a valid JSON schema, or asks for what the grammar library cannot enforce."""


def check_token_ids(ids: Sequence[int], vocab_size: int, param: str = "tokens") -> None:
    """InvalidTokenId naming `param` when any id is outside the vocabulary (min/max run in C: cheap)."""
    if ids and (min(ids) < 0 or max(ids) >= vocab_size):
        bad = [t for t in ids if not 0 <= t < vocab_size][:5]
        raise InvalidTokenId(f"{param}: token ids outside the vocabulary (0..{vocab_size - 1}): {bad}", param)
