"""Hearth's sampler settings mapped onto llama.cpp's native sampler chain, in Hearth's order.

The chain is built in the order of `SamplingParams.active_samplers()`, so `sampler_priority` means the
same on the native path as in Hearth's pipeline: each penalty is its own llama.cpp penalties sampler at
its own place. What llama.cpp cannot reproduce exactly is reported by `limits()`, with the reason; the
generation core then runs Hearth's own pipeline on llama.cpp's logits instead, so no setting is ever
dropped or reordered silently. tests/test_sampler_parity.py holds both paths to the same numbers.

Ranges: Hearth's 0 means "the whole context". llama.cpp's sampler API clamps a negative `last_n` to 0,
which disables penalties and DRY (-1 = context size exists only in its command-line layer), so 0 is
passed on as the context size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from webui.sampling.bias import token_bias
from webui.sampling.registry import PICKERS

if TYPE_CHECKING:
    from webui.sampling import SamplingParams

#: Hearth sampler names (registry.SAMPLERS) llama.cpp's chain implements the same way.
NATIVE = frozenset({
    "repetition_penalty", "presence_penalty", "frequency_penalty", "dry", "temperature",
    "dynamic_temperature", "top_n_sigma", "top_k", "top_p", "typical_p", "min_p", "mirostat", "adaptive_p",
})
_PENALTIES = ("repetition_penalty", "presence_penalty", "frequency_penalty")
#: With mirostat, llama.cpp's chain ends in the mirostat sampler; these may run before it.
_BEFORE_MIROSTAT = frozenset({*_PENALTIES, "dry", "temperature", "dynamic_temperature"})
#: Samplers that leave removed tokens in llama.cpp's candidate list at -inf instead of dropping them.
_LEAVES_MINUS_INF = frozenset({"top_n_sigma"})
_REASONS = {
    "xtc": "Hearth's XTC spares EOS and newline (as text-generation-webui); llama.cpp's removes them too",
    "dynamic_temperature": "after top_n_sigma or token bans, llama.cpp counts removed tokens in the entropy's maximum",
    "typical_p": "llama.cpp's typical_p turns a removed token's 0 * log 0 into NaN (after top_n_sigma or token bans)",
    "mirostat": "llama.cpp runs only penalties, DRY and temperature before mirostat",
}


def limits(params: SamplingParams) -> dict[str, str]:
    """Active settings the native chain cannot honour exactly, each with why ({} = native is exact)."""
    active = params.active_samplers()
    missing = {name: _REASONS.get(name, "llama.cpp has no such sampler") for name in active if name not in NATIVE}
    minus_inf = bool(params.custom_token_bans or params.ban_eos_token or _banned(params.logit_bias))
    for name in active:
        if name in ("dynamic_temperature", "typical_p") and minus_inf:
            missing[name] = _REASONS[name]
        minus_inf |= name in _LEAVES_MINUS_INF
    if params.mirostat_mode:
        for name in active:
            if name in NATIVE and name not in _BEFORE_MIROSTAT and name != "mirostat":
                missing[name] = _REASONS["mirostat"]
    return missing


def unsupported(params: SamplingParams) -> list[str]:
    """Names of the active settings the native chain cannot honour exactly."""
    return list(limits(params))


def _banned(bias: dict[int, float]) -> bool:
    return any(value == float("-inf") for value in bias.values())


def _range(last_n: int, n_ctx: int) -> int:
    """Hearth's 0 (the whole context) as llama.cpp's sampler API needs it: the context size."""
    return n_ctx if last_n <= 0 else last_n


def build_chain(
    params: SamplingParams, *, model: Any, n_vocab: int, n_ctx: int, eos_ids: frozenset[int], seed: int,
    pick: bool = True,
) -> Any:
    """A llama.cpp sampler chain equivalent to `params` (caller checked `limits` is empty).

    `pick=False` leaves out the final draw (dist or greedy) so the candidates can be read after the
    chain, as the parity tests do; mirostat and adaptive_p pick the token and are always added."""
    from llama_cpp._internals import LlamaSampler

    chain = LlamaSampler()
    bias = token_bias(params, eos_ids)
    if bias:
        chain.add_logit_bias(n_vocab, bias)
    active = params.active_samplers()
    for name in active:
        _add(chain, name, params, model=model, n_vocab=n_vocab, n_ctx=n_ctx, seed=seed)
    if pick and params.greedy:
        chain.add_greedy()
    elif pick and not set(PICKERS) & set(active):
        chain.add_dist(seed)
    return chain


def _add(chain: Any, name: str, params: SamplingParams, *, model: Any, n_vocab: int, n_ctx: int, seed: int) -> None:
    """One Hearth sampler as one llama.cpp sampler (active_samplers already skips what greedy ignores)."""
    from llama_cpp import llama_cpp as capi

    p = params
    if name in _PENALTIES:
        chain.add_penalties(
            n_vocab=n_vocab,
            penalty_last_n=_range(p.repetition_penalty_range, n_ctx),
            penalty_repeat=p.repetition_penalty if name == "repetition_penalty" else 1.0,
            penalty_freq=p.frequency_penalty if name == "frequency_penalty" else 0.0,
            penalty_present=p.presence_penalty if name == "presence_penalty" else 0.0,
        )
    elif name == "dry":
        chain.add_dry(model, p.dry_multiplier, p.dry_base, p.dry_allowed_length,
                      _range(p.dry_penalty_last_n, n_ctx), list(p.dry_sequence_breakers))
    elif name == "temperature":
        chain.add_temp(p.temperature)
    elif name == "dynamic_temperature":
        low, high = p.dynatemp_low, p.dynatemp_high
        chain.add_temp_ext((low + high) / 2, (high - low) / 2, p.dynatemp_exponent)
    elif name == "top_k":
        chain.add_top_k(p.top_k)
    elif name == "top_p":
        chain.add_top_p(p.top_p, 1)
    elif name == "typical_p":
        chain.add_typical(p.typical_p, 1)
    elif name == "min_p":
        chain.add_min_p(p.min_p, 1)
    elif name == "top_n_sigma":
        chain.add_top_n_sigma(p.top_n_sigma)
    elif name == "mirostat" and p.mirostat_mode == 1:
        chain.add_mirostat(n_vocab, seed, p.mirostat_tau, p.mirostat_eta, 100)
    elif name == "mirostat":
        chain.add_mirostat_v2(seed, p.mirostat_tau, p.mirostat_eta)
    elif name == "adaptive_p":
        capi.llama_sampler_chain_add(chain.sampler, capi.llama_sampler_init_adaptive_p(p.adaptive_target, p.adaptive_decay, seed))
    else:
        raise ValueError(f"{name} has no native llama.cpp sampler (limits() should have said so)")


def needs_history(params: SamplingParams) -> int:
    """How many prompt tokens the chain must be shown before sampling (penalties and DRY look back).

    Returns -1 for the whole prompt, 0 for none."""
    active = set(params.active_samplers())
    ranges = []
    if active & set(_PENALTIES):
        ranges.append(params.repetition_penalty_range)
    if "dry" in active:
        ranges.append(params.dry_penalty_last_n)
    if not ranges:
        return 0
    return -1 if any(r <= 0 for r in ranges) else max(ranges)
