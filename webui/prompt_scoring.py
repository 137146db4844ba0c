"""Scoring a prompt (an echoed completion's logprobs): one entry per token the client sent.

Evaluation clients (lm-evaluation-harness) read `token_logprobs` by position: entry i must be the i-th
token of the prompt they sent, so a BOS that Hearth added is left out and a BOS they sent is kept (its
logprob is null: nothing precedes it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from webui.events import TokenLogprob
from webui.pipeline_path import logprob_entry

if TYPE_CHECKING:
    from webui.loader_api import Model


def added_tokens(model: Model, text: str, ids: list[int]) -> int:
    """How many leading tokens of `ids` (the tokenized `text`) tokenizing added: 1 for a BOS that the
    text itself does not start with, else 0."""
    bos = model.bos_token_id
    if bos is None or not ids or ids[0] != bos:
        return 0
    plain = model.tokenize(text, add_bos=False)
    return 0 if len(plain) == len(ids) and plain[:1] == [bos] else 1


def token_piece(model: Model, token: int, from_text: bool) -> str:
    """The text a prompt token stands for in the echo. A special token written in a text prompt ("<s>")
    is its own text there; the echo of token ids is decoded with special tokens skipped, so there it is ""."""
    piece = model.detokenize([token])
    if piece or not from_text:
        return piece
    return model.token_text(token).decode("utf-8", errors="replace")


def prompt_entries(model: Model, ids: list[int], skip: int, n: int, from_text: bool) -> list[TokenLogprob]:
    """Entries for ids[skip:], each scored given the ids before it with its top `n` alternatives; a first
    token with nothing before it has logprob None. Reads the prompt one token at a time through the prefix
    cache, which every backend can do; the cache then holds the prompt for the generation that follows."""
    entries = []
    for i in range(skip, len(ids)):
        text = token_piece(model, ids[i], from_text)
        if i == 0:
            entries.append(TokenLogprob(ids[0], text, None))
        else:
            entry = logprob_entry(model, model.logits(ids[:i]), ids[i], n)
            entry.text = text
            entries.append(entry)
    return entries
