"""Fitting a prompt into the model's context: shared by the local token loop (`webui.generation`) and
remote generation (`webui.remote_generation`)."""

from __future__ import annotations

from webui.errors import ContextLengthError


def fit_context(
    ids: list[int], n_ctx: int, truncation_length: int, max_new_tokens: int, bos: int | None
) -> tuple[list[int], int]:
    """Drop the oldest prompt tokens so prompt + reply fit; a leading BOS is kept. Returns (ids, dropped).

    The reply's budget never pushes the prompt below half the context: a huge max_new_tokens (a client's
    "as long as it takes") keeps the prompt, and the reply then ends where the context does."""
    budget = min(truncation_length or n_ctx, n_ctx)
    room = max(budget - max_new_tokens, min(len(ids), budget // 2), 1)
    if len(ids) <= room:
        return ids, 0
    keep_bos = bos is not None and ids and ids[0] == bos
    if keep_bos:
        kept = [ids[0], *ids[len(ids) - room + 1 :]] if room > 1 else [ids[0]]
    else:
        kept = ids[len(ids) - room :]
    return kept, len(ids) - len(kept)


def check_fits(ids: list[int], n_ctx: int, truncation_length: int,
               why: str = "its logprobs cannot be computed") -> None:
    """A prompt that must be read whole (scored, or holding images that cannot be cut in half) must fit:
    ContextLengthError otherwise, saying `why`."""
    budget = min(truncation_length or n_ctx, n_ctx)
    if len(ids) > budget:
        raise ContextLengthError(
            f"the prompt is {len(ids)} tokens, more than the context of {budget}: {why} "
            "(shorten it, or load the model with a larger n_ctx)"
        )
