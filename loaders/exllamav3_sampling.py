"""Hearth's sampler settings as an ExLlamaV3 `CustomSampler` step list, or the reasons they cannot be.

exllamav3 1.6.5's sampler (exllamav3/generator/sampler/custom.py) is a list of steps run in the order given,
so Hearth's `sampler_priority` maps onto it directly, step for step, where a step computes what Hearth's
sampler computes:
- SS_LogitBias / SS_BanTokens: additive bias, -inf bans (Hearth's token bias, always first);
- SS_RepP(rep_p, sustain_range, decay_range=0): HF-style penalty over the last `sustain_range` ids, as
  webui/sampling/penalties.py RepetitionPenalty (range 0 = the whole context);
- SS_PresFreqP(pres_p, freq_p, sustain_range, 0): OpenAI's formula over the same window, as
  PresenceFrequencyPenalty;
- SS_Temperature(t): logits / t (after truncation it raises the kept probabilities to 1/t, the same
  distribution once normalised);
- SS_TopK / SS_TopP / SS_MinP: keep the k most likely; keep a token while the mass before it is < p (the
  rule of webui/sampling/truncation.py TopP); keep p >= min_p * max.
- SS_Argmax for greedy decoding, SS_Sample (a Gumbel-max categorical draw) otherwise.
The penalty steps only accept logits that were not yet normalised or sorted (`run` raises "Sampling logic
error" otherwise), so an order that puts a penalty after temperature or truncation is reported as
`sampler_priority`. Not mapped, and reported: XTC (SS_XTC averages the two outcomes of the roll instead of
drawing one, a different per-step distribution from Hearth's), DRY (SS_DRY resolves breaker strings to
single tokens only, without llama.cpp's multi-token restart sequences that Hearth's DRY keeps), Adaptive-P,
Mirostat, dynamic temperature, top_a, tfs, typical_p, epsilon/eta, top_n_sigma, quadratic smoothing,
no_repeat_ngram and grammars: Hearth's pipeline runs those on ExLlamaV3's logits. Top-k and top-p keep
positions in a sorted list where Hearth keeps values above a threshold: they differ only on exactly tied
probabilities at the cut. CustomSampler collapses a temperature/truncation/draw tail into its fused kernel
(SS_Fused), which its docstring gives as equivalent up to exact ties, and for top-k up to tokens 32 nats or
more below the best (relative weight below e^-32) when the cut falls among them.

This module never imports exllamav3: `steps` returns (class name, keyword arguments) pairs, so the mapping
is tested on every machine and the model only builds the steps from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webui.sampling import SamplingParams

_PENALTIES = ("repetition_penalty", "presence_penalty", "frequency_penalty")
_AFTER = ("temperature", "top_k", "top_p", "min_p")
#: exllamav3's "no limit" for a penalty window (SS_RepP's own default sustain_range, int(10e7)).
WHOLE_CONTEXT = int(10e7)


def unsupported(params: SamplingParams) -> list[str]:
    """Settings ExLlamaV3's sampler cannot honour exactly, in Hearth's names ([] = native is exact)."""
    active = params.active_samplers()
    missing = [name for name in active if name not in _PENALTIES + _AFTER]
    if params.grammar_string:
        missing.append("grammar_string")
    if params.json_schema is not None:
        missing.append("json_schema")
    if not missing and not _penalties_first(active):
        missing.append("sampler_priority")
    return list(dict.fromkeys(missing))


def _penalties_first(active: list[str]) -> bool:
    """Penalties before every other step, and presence/frequency next to each other (one SS_PresFreqP)."""
    kinds = [name in _PENALTIES for name in active]
    if kinds != sorted(kinds, reverse=True):
        return False
    pf = [i for i, name in enumerate(active) if name in ("presence_penalty", "frequency_penalty")]
    return len(pf) < 2 or pf[1] == pf[0] + 1


def _window(last_n: int) -> int:
    return WHOLE_CONTEXT if last_n <= 0 else last_n


def steps(params: SamplingParams, bias: dict[int, float]) -> list[tuple[str, dict[str, Any]]]:
    """The CustomSampler steps for `params` (caller checked `unsupported`), as (SS_ class name, kwargs).

    `bias` is webui.sampling.bias.token_bias: logit_bias with the bans (custom bans, a banned EOS) at -inf."""
    out: list[tuple[str, dict[str, Any]]] = []
    banned = sorted(int(t) for t, v in bias.items() if v == float("-inf"))
    finite = {int(t): float(v) for t, v in bias.items() if v != float("-inf") and v != 0}
    if banned:  # Hearth's LogitBias fills the bans, then adds the rest: both commute
        out.append(("SS_BanTokens", {"token_ids": banned}))
    if finite:
        out.append(("SS_LogitBias", {"logit_bias": finite}))
    window = _window(params.repetition_penalty_range)
    pres_freq_done = False
    for name in params.active_samplers():
        if name == "repetition_penalty":
            out.append(
                ("SS_RepP", {"rep_p": params.repetition_penalty, "sustain_range": window, "decay_range": 0})
            )
        elif name in ("presence_penalty", "frequency_penalty"):
            if not pres_freq_done:
                active = set(params.active_samplers())
                out.append(
                    (
                        "SS_PresFreqP",
                        {
                            "pres_p": params.presence_penalty if "presence_penalty" in active else 0.0,
                            "freq_p": params.frequency_penalty if "frequency_penalty" in active else 0.0,
                            "sustain_range": window,
                            "decay_range": 0,
                        },
                    )
                )
                pres_freq_done = True
        elif params.greedy:
            continue  # greedy: only the penalties run before the argmax, as in Hearth's pipeline
        elif name == "temperature":
            out.append(("SS_Temperature", {"temperature": params.temperature}))
        elif name == "top_k":
            out.append(("SS_TopK", {"top_k": int(params.top_k)}))
        elif name == "top_p":
            out.append(("SS_TopP", {"top_p": params.top_p}))
        elif name == "min_p":
            out.append(("SS_MinP", {"min_p": params.min_p}))
    out.append(("SS_Argmax", {}) if params.greedy else ("SS_Sample", {}))
    return out
