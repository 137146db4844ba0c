"""Several sequences of one llama.cpp context decoded together: the `webui.lanes.Stepper` of `parallel` slots.

Each running request is a lane holding one sequence (seq_id) of a context made with n_seq_max = parallel.
When a sequence needs tokens evaluated (a prompt chunk, the next token), it parks its lane with a
`Wanted`; once every lane is parked, `step` fills one llama_batch with every lane's tokens (the single
tokens of lanes that are generating first, then prompt tokens up to n_batch, as llama.cpp's server
does), runs one llama_decode, and resumes the lanes whose tokens are all in. Each reads its logits at
its own row of that batch (`LlamaSequence.logits_index`) before the next step overwrites them.

What cannot share a batch (an image's embeddings, a pass that keeps the logits of every token) asks for
the context alone (`Wanted(exclusive=True)`): it is resumed between steps, when no lane has logits left
to read, and decodes by itself until it parks again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from webui.errors import ModelRuntimeError
from webui.loader_api import common_prefix_length

if TYPE_CHECKING:
    from loaders.llamacpp_sequence import LlamaSequence
    from webui.lanes import Lane


@dataclass(eq=False)
class Wanted:
    """What a parked lane waits for: `tokens` appended to `seq` (in as many steps as n_batch needs), or,
    with `exclusive`, the context to itself."""

    seq: LlamaSequence | None = None
    tokens: list[int] = field(default_factory=list)
    exclusive: bool = False
    #: Tokens of `tokens` already decoded.
    done: int = 0

    @property
    def left(self) -> int:
        return len(self.tokens) - self.done


def fill_batch(batch: Any, entries: Sequence[tuple[Sequence[int], int, int]], logits_all: bool = False) -> list[int]:
    """Write `entries` ((tokens, seq_id, first position) each) into a llama_batch; logits are asked for
    the last token of each entry (of every token with `logits_all`). Returns each entry's last row."""
    raw = batch.batch
    n = 0
    rows = []
    for tokens, seq_id, pos in entries:
        for i, token in enumerate(tokens):
            raw.token[n] = token
            raw.pos[n] = pos + i
            raw.seq_id[n][0] = seq_id
            raw.n_seq_id[n] = 1
            raw.logits[n] = logits_all
            n += 1
        raw.logits[n - 1] = True
        rows.append(n - 1)
    raw.n_tokens = n
    return rows


def decode_failed(seq: LlamaSequence, n_tokens: int, exc: RuntimeError) -> ModelRuntimeError:
    """llama_decode failed on `n_tokens` of `seq`: drop what it may have written of them, and say why."""
    seq.ctx.kv_cache_seq_rm(seq.seq_id, seq.n_past, -1)
    return ModelRuntimeError(
        f"llama.cpp failed to evaluate {n_tokens} tokens at position {seq.n_past} ({exc}). "
        "Return code 1 means no free slot in the KV cache: try a larger n_ctx or a smaller n_batch."
    )


class LlamaBatcher:
    """Steps the lanes of a `parallel` context (see the module docstring)."""

    def __init__(self, ctx: Any, batch: Any, n_batch: int):
        self._ctx = ctx
        self._batch = batch
        self._n_batch = n_batch
        #: llama_decode calls made (for tests and the bench: batching is real).
        self.steps = 0
        #: Most lanes one decode served.
        self.widest = 0
        self._held: set[int] = set()  # sequence indices held by running lanes
        self._released: dict[int, int] = {}  # sequence index -> when it was last released
        self._clock = 0

    def hold(self, lane: Lane, seqs: Sequence[LlamaSequence], ids: Sequence[int]) -> int:
        """The index of the sequence `lane` holds; on its first call, the free one whose cached tokens
        share the longest prefix with `ids` (of equals, the one released longest ago)."""
        index = lane.data.get("seq")
        if index is None:
            free = [i for i in range(len(seqs)) if i not in self._held]
            if not free:
                raise ModelRuntimeError(f"all {len(seqs)} slots are taken")
            index = max(free, key=lambda i: (common_prefix_length(seqs[i].ids, ids), -self._released.get(i, 0)))
            self._held.add(index)
            lane.data["seq"] = index
        return index

    def step(self, lanes: Sequence[Lane]) -> list[tuple[Lane, Any, BaseException | None]]:
        parked = [lane for lane in lanes if isinstance(lane.parked, Wanted)]
        alone = next((lane for lane in parked if lane.parked.exclusive), None)
        if alone is not None:  # between steps, so no lane has logits left to read
            return [(alone, None, None)]
        if not parked:
            return []
        # generating lanes' single tokens first, then prompts in the order their lanes started
        order = sorted(parked, key=lambda lane: lane.parked.left > 1)
        chunks: list[tuple[Lane, list[int]]] = []
        room = self._n_batch
        for lane in order:
            wanted: Wanted = lane.parked
            take = min(room, wanted.left)
            if take <= 0:
                break
            chunks.append((lane, wanted.tokens[wanted.done : wanted.done + take]))
            room -= take
        entries = [(tokens, lane.parked.seq.seq_id, lane.parked.seq.n_past) for lane, tokens in chunks]
        rows = fill_batch(self._batch, entries)
        try:
            self._ctx.decode(self._batch)
        except RuntimeError as exc:
            return [(lane, None, decode_failed(lane.parked.seq, len(tokens), exc)) for lane, tokens in chunks]
        self.steps += 1
        self.widest = max(self.widest, len(chunks))
        resumed = []
        for (lane, tokens), row in zip(chunks, rows, strict=True):
            wanted = lane.parked
            wanted.seq.appended(tokens)
            wanted.done += len(tokens)
            if wanted.left == 0:
                wanted.seq.logits_index = row
                resumed.append((lane, None, None))
        return resumed

    def release(self, lane: Lane) -> None:
        """The sequence `lane` held is free for the next request (its cached tokens stay for reuse)."""
        index = lane.data.pop("seq", None)
        if index is not None:
            self._held.discard(index)
            self._clock += 1
            self._released[index] = self._clock
