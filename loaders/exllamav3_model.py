"""The ExLlamav3 loader's Model: exllamav3's `Model.prefill` / `Model.forward` driven over per-slot caches
that reuse the longest common prefix, and exllamav3's own sampler for the native path.

Hearth drives `Model.prefill` and `Model.forward` (exllamav3/model/model.py) directly with the rectangular-batch
parameters of exllamav3/modules/attn.py `prepare_flash_attn`: {"attn_mode": "flash_attn", "cache",
"batch_shape": (1, cache tokens), "past_len"}. Each slot keeps the ids its cache holds, so a request reuses the
longest common prefix (positions past `past_len` are overwritten). Models with recurrent layers (linear
attention, or sliding-window layers unless swa_full) carry `recurrent_states` that cannot be rolled back
(exllamav3/cache/recurrent_util.py `prepare_for_recurrence` asserts their position equals past_len): their
prefix is reused only when the new request extends what the slot holds.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loaders import exllamav3_sampling as native
from loaders.exllamav3_lora import ExLlamav3Loras
from loaders.hf_tokenized import HFTokenized
from webui.errors import ModelRuntimeError
from webui.loader_api import Model, ModelInfo, common_prefix_length
from webui.sampling.bias import token_bias

if TYPE_CHECKING:
    import torch

    from webui.sampling import SamplingParams

MAX_DEFAULT_CTX = 8192
#: Cache pages: max_num_tokens and a batch_shape's length must be multiples of this (exllamav3/constants.py).
PAGE_SIZE = 256
#: Tokens per prefill/forward call; also load's max_chunk_size, which sizes the autosplit's activations.
CHUNK = 2048


def cache_tokens(n_ctx: int) -> int:
    """The cache size for a context: rounded up to whole pages."""
    return -(-n_ctx // PAGE_SIZE) * PAGE_SIZE


@dataclass
class _Slot:
    """One cache, the ids it holds, the raw logits (device, head width) after the last one and, for
    recurrent models, the states at that position."""

    cache: Any
    ids: list[int] = field(default_factory=list)
    raw: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    states: list[Any] | None = None


class ExLlamav3Model(ExLlamav3Loras, HFTokenized, Model):
    """A loaded ExLlamaV3 model: slot 0 is the main cache, slot 1 (CFG) the second one made at load."""

    prefer_native = True

    def __init__(
        self,
        model: Any,
        caches: dict[int, Any],
        tokenizer: Any,
        info: ModelInfo,
        eos: frozenset[int],
        max_tokens: int,
    ) -> None:
        import torch

        self._torch = torch
        self._model = model
        self._tokenizer = tokenizer
        self._slots = {slot: _Slot(cache) for slot, cache in caches.items()}
        self._eos = eos
        self._max_tokens = max_tokens
        self._adapters = []
        self._recurrent = bool(model.get_recurrent_layers())  # linear attention / SWA state: forward-only
        self.info = info

    @property
    def vocab_size(self) -> int:
        return self.info.vocab_size

    def _slot(self, slot: int) -> _Slot:
        if slot not in self._slots:
            raise ModelRuntimeError(
                f"no cache for slot {slot}: CFG needs a second cache, made at load (reload with cfg_cache on)"
            )
        return self._slots[slot]

    def _params(self, state: _Slot, past_len: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "attn_mode": "flash_attn",
            "cache": state.cache,
            "batch_shape": (1, self._max_tokens),
            "past_len": past_len,
        }
        if state.states is not None and past_len > 0:
            params["recurrent_states"] = state.states
        return params

    def _reset(self, state: _Slot) -> None:
        """Forget what the slot holds and give its recurrent states back to the cache (Cache.release_state)."""
        for held in state.states or []:
            state.cache.release_state(held)
        state.ids, state.raw, state.logits, state.states = [], None, None, None

    def _run(
        self, state: _Slot, ids: list[int], start: int, last_only: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Evaluate ids[start:] after the slot's first `start` positions, CHUNK tokens per call; returns the
        logits of every position (CPU, float32; None with last_only) and the raw last row (device, head width).

        With last_only, all but the last token go through `Model.prefill` (it stops at the last module that
        writes the cache and returns None) and the last through `forward`; otherwise every chunk goes through
        `forward`, which returns every position's logits."""
        torch = self._torch
        rows, out = [], None
        end = len(ids) - 1 if last_only else len(ids)
        for at in range(start, end, CHUNK):
            chunk = torch.tensor([ids[at : min(at + CHUNK, end)]], dtype=torch.long)
            params = self._params(state, at)
            if last_only:
                self._model.prefill(chunk, params)
            else:
                out = self._model.forward(chunk, params)
                rows.append(out[0].float().cpu())
            state.states = params.get("recurrent_states", state.states)
        if not last_only:
            return torch.cat(rows), out[0, -1]
        params = self._params(state, len(ids) - 1)
        out = self._model.forward(torch.tensor([ids[-1:]], dtype=torch.long), params)
        state.states = params.get("recurrent_states", state.states)
        return None, out[0, -1]

    def _sync(self, ids: Sequence[int], slot: int) -> torch.Tensor:
        """Make the slot's cache hold `ids`; the raw logits after the last one (device, head width)."""
        ids = list(ids)
        if not ids:
            raise ModelRuntimeError("cannot evaluate an empty token sequence")
        if len(ids) > self.n_ctx:
            raise ModelRuntimeError(f"{len(ids)} tokens do not fit max_seq_len {self.n_ctx}")
        state = self._slot(slot)
        prefix = common_prefix_length(state.ids, ids)
        if prefix == len(ids) == len(state.ids) and state.raw is not None:
            return state.raw
        prefix = min(prefix, len(ids) - 1)  # the last token is re-fed so that its logits are current
        if self._recurrent and prefix < len(state.ids):
            prefix = 0  # recurrent states only move forward
        held = state.states if prefix else None
        if not prefix:
            self._reset(state)
        # until forward succeeds, nothing in the cache is trusted
        state.ids, state.raw, state.logits, state.states = [], None, None, held
        try:
            _, raw = self._run(state, ids, prefix, last_only=True)
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
            self._reset(state)
            raise ModelRuntimeError(
                f"ExLlamaV3 failed to evaluate {len(ids) - prefix} tokens: {exc}"
            ) from exc
        state.ids, state.raw = ids, raw
        self.evaluated_tokens += len(ids) - prefix
        return raw

    def logits(self, ids: Sequence[int], slot: int = 0) -> torch.Tensor:
        self._sync(ids, slot)
        state = self._slots[slot]
        if state.logits is None:
            state.logits = state.raw[: self.vocab_size].float().cpu()
        return state.logits

    def sequence_logits(self, ids: Sequence[int]) -> torch.Tensor:
        """Every position's logits from `Model.forward` over `ids` on an emptied slot-0 cache, which then holds
        them: forward returns [bsz, q_len, head width] for every position unless params ask for
        "last_tokens_only" (exllamav3/model/model_ls.py `forward_ls`)."""
        ids = list(ids)
        if not ids:
            raise ModelRuntimeError("cannot compute logits for an empty sequence")
        if len(ids) > self.n_ctx:
            raise ModelRuntimeError(f"{len(ids)} tokens do not fit max_seq_len {self.n_ctx}")
        state = self._slot(0)
        self._reset(state)
        try:
            logits, raw = self._run(state, ids, 0, last_only=False)
        except RuntimeError as exc:
            self._reset(state)
            raise ModelRuntimeError(f"ExLlamaV3 failed to evaluate {len(ids)} tokens: {exc}") from exc
        state.ids, state.raw = ids, raw
        self.evaluated_tokens += len(ids)
        return logits[:, : self.vocab_size]

    # -- native sampling ---------------------------------------------------------------------------

    @property
    def native_sampler(self) -> str | None:  # type: ignore[override]
        return "ExLlamaV3" if self.prefer_native else None

    def native_limits(self, params: SamplingParams) -> dict[str, str]:
        return {
            name: "ExLlamaV3's sampler cannot reproduce it exactly" for name in native.unsupported(params)
        }

    def native_generate(self, ids: Sequence[int], params: SamplingParams, seed: int) -> Iterator[int] | None:
        if not self.prefer_native or self.unsupported_native(params):
            return None
        bias = token_bias(params, self._eos)
        if any(not 0 <= t < self.vocab_size for t in bias):
            return None  # Hearth's LogitBias names the ids outside the vocabulary
        from exllamav3.generator import sampler as ex_sampler

        steps = [getattr(ex_sampler, name)(**kwargs) for name, kwargs in native.steps(params, bias)]
        return self._native_loop(list(ids), ex_sampler.CustomSampler(steps), seed)

    def _native_loop(self, ids: list[int], sampler: Any, seed: int) -> Iterator[int]:
        torch = self._torch
        rng = random.Random(seed)
        raw = self._sync(ids, 0)
        while True:
            # CustomSampler.forward(logits [bsz, 1, vocab], sequence_ids [bsz, seq_len], rand_u32, tokenizer)
            # -> token ids [bsz, 1] (exllamav3/generator/sampler/custom.py); a copy, the slot keeps its logits
            logits = raw[: self.vocab_size].reshape(1, 1, -1).clone()
            past = (
                torch.tensor([ids], dtype=torch.long, device=logits.device) if sampler.reqs_past_ids else None
            )
            token = int(sampler.forward(logits, past, rng.getrandbits(32), None).view(-1)[0])
            yield token
            ids.append(token)
            raw = self._sync(ids, 0)

    def unload(self) -> None:
        for state in self._slots.values():
            self._reset(state)
        self._slots.clear()
        self._unload_adapters()
        if self._model is not None:
            self._model.unload()
        self._model = self._tokenizer = None
        gc.collect()
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()
