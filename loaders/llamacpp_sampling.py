"""Hearth's sampler settings mapped onto llama.cpp's native sampler chain, in Hearth's order.

The chain is built in the order of `SamplingParams.active_samplers()`, so `sampler_priority` means the
same on the native path as on the HF path. Samplers llama.cpp has no equivalent for are reported by
`unsupported()`; the generation core then runs Hearth's own pipeline on llama.cpp logits instead, so no
setting is ever dropped silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webui.sampling import SamplingParams

#: Hearth sampler names llama.cpp's chain implements.
NATIVE = frozenset({
    "repetition_penalty", "presence_penalty", "frequency_penalty", "dry", "temperature",
    "dynamic_temperature", "top_n_sigma", "top_k", "top_p", "typical_p", "min_p", "mirostat", "xtc",
})
_PENALTIES = ("repetition_penalty", "presence_penalty", "frequency_penalty")
#: With mirostat, llama.cpp's chain ends in the mirostat sampler; these may run before it.
_BEFORE_MIROSTAT = frozenset({*_PENALTIES, "dry", "temperature", "dynamic_temperature"})


def unsupported(params: SamplingParams) -> list[str]:
    """Active settings the native chain cannot honour exactly."""
    active = params.active_samplers()
    missing = [name for name in active if name not in NATIVE]
    if params.mirostat_mode:
        missing += [n for n in active if n in NATIVE and n not in _BEFORE_MIROSTAT and n != "mirostat"]
    return missing


def _range(last_n: int) -> int:
    """Hearth uses 0 for 'the whole context'; llama.cpp uses -1 (0 disables)."""
    return -1 if last_n <= 0 else last_n


def build_chain(params: SamplingParams, *, model: Any, n_vocab: int, eos_ids: frozenset[int], seed: int) -> Any:
    """A llama.cpp sampler chain equivalent to `params` (caller checked `unsupported` is empty)."""
    from llama_cpp._internals import LlamaSampler

    chain = LlamaSampler()
    bias = {int(k): float(v) for k, v in params.logit_bias.items()}
    for token in params.custom_token_bans:
        bias[int(token)] = float("-inf")
    if params.ban_eos_token:
        bias.update({token: float("-inf") for token in eos_ids})
    if bias:
        chain.add_logit_bias(n_vocab, bias)
    greedy = not params.do_sample or (params.temperature == 0 and not params.dynamic_temperature)
    penalties_added = False
    for name in params.active_samplers():
        if name in _PENALTIES:
            if not penalties_added:
                chain.add_penalties(
                    n_vocab=n_vocab,
                    penalty_last_n=_range(params.repetition_penalty_range),
                    penalty_repeat=params.repetition_penalty,
                    penalty_freq=params.frequency_penalty,
                    penalty_present=params.presence_penalty,
                )
                penalties_added = True
        elif name == "dry":
            chain.add_dry(model, params.dry_multiplier, params.dry_base, params.dry_allowed_length,
                          _range(params.dry_penalty_last_n), list(params.dry_sequence_breakers))
        elif greedy:
            continue  # truncation and temperature cannot change the argmax
        elif name == "temperature":
            chain.add_temp(params.temperature)
        elif name == "dynamic_temperature":
            low, high = params.dynatemp_low, params.dynatemp_high
            chain.add_temp_ext((low + high) / 2, (high - low) / 2, params.dynatemp_exponent)
        elif name == "top_k":
            chain.add_top_k(params.top_k)
        elif name == "top_p":
            chain.add_top_p(params.top_p, 1)
        elif name == "typical_p":
            chain.add_typical(params.typical_p, 1)
        elif name == "min_p":
            chain.add_min_p(params.min_p, 1)
        elif name == "top_n_sigma":
            chain.add_top_n_sigma(params.top_n_sigma)
        elif name == "xtc":
            chain.add_xtc(params.xtc_probability, params.xtc_threshold, 1, seed)
    if greedy:
        chain.add_greedy()
    elif params.mirostat_mode == 1:
        chain.add_mirostat(n_vocab, seed, params.mirostat_tau, params.mirostat_eta, 100)
    elif params.mirostat_mode == 2:
        chain.add_mirostat_v2(seed, params.mirostat_tau, params.mirostat_eta)
    else:
        chain.add_dist(seed)
    return chain


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
