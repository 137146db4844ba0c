"""Each sampler on small hand-made logits, against numbers worked out by hand or by an independent formula."""

from __future__ import annotations

import math

import pytest
import torch

from webui.sampling.penalties import (
    DRY,
    EncoderRepetitionPenalty,
    NoRepeatNGram,
    PresenceFrequencyPenalty,
    RepetitionPenalty,
)
from webui.sampling.special import XTC, LogitBias, Mirostat
from webui.sampling.temperature import DynamicTemperature, QuadraticSmoothing, Temperature
from webui.sampling.truncation import (
    EpsilonCutoff,
    EtaCutoff,
    MinP,
    TailFree,
    TopA,
    TopK,
    TopNSigma,
    TopP,
    TypicalP,
)

INF = float("-inf")
IDS = torch.tensor([[0]])


def logits_for(probs: list[float]) -> torch.Tensor:
    """Logits whose softmax is exactly `probs`."""
    return torch.log(torch.tensor([probs], dtype=torch.float64)).float()


def kept(scores: torch.Tensor) -> list[int]:
    return torch.isfinite(scores[0]).nonzero().flatten().tolist()


P = [0.5, 0.25, 0.15, 0.07, 0.03]


def test_temperature_divides_logits():
    out = Temperature(0.5)(IDS, torch.tensor([[1.0, 2.0, -4.0]]))
    assert out.tolist() == [[2.0, 4.0, -8.0]]
    with pytest.raises(ValueError):
        Temperature(0)


def test_top_k_keeps_k_best():
    assert kept(TopK(2)(IDS, logits_for(P))) == [0, 1]
    assert kept(TopK(50)(IDS, logits_for(P))) == [0, 1, 2, 3, 4]


def test_top_p_keeps_smallest_nucleus():
    # cumulative 0.5, 0.75, 0.90, 0.97: p=0.8 needs the first three tokens (0.75 < 0.8 <= 0.90).
    assert kept(TopP(0.8)(IDS, logits_for(P))) == [0, 1, 2]
    assert kept(TopP(0.75)(IDS, logits_for(P))) == [0, 1]
    assert kept(TopP(0.0)(IDS, logits_for(P))) == [0]


def test_min_p_relative_to_top_token():
    # threshold = 0.2 * 0.5 = 0.1: keeps 0.5, 0.25, 0.15.
    assert kept(MinP(0.2)(IDS, logits_for(P))) == [0, 1, 2]


def test_top_a_uses_square_of_max():
    # threshold = 0.5 * 0.5^2 = 0.125 (keep p >= 0.125).
    assert kept(TopA(0.5)(IDS, logits_for(P))) == [0, 1, 2]
    assert kept(TopA(0.9)(IDS, logits_for(P))) == [0, 1]


def test_typical_p_against_direct_computation():
    probs = torch.tensor(P, dtype=torch.float64)
    entropy = float(-(probs * probs.log()).sum())
    distance = (-probs.log() - entropy).abs()
    order = distance.argsort()
    mass, expected = 0.0, []
    for i in order.tolist():  # add tokens closest to the entropy until mass >= 0.6
        expected.append(i)
        mass += P[i]
        if mass >= 0.6:
            break
    assert sorted(kept(TypicalP(0.6)(IDS, logits_for(P)))) == sorted(expected)


def test_tail_free_cuts_where_curve_flattens():
    probs = [0.4, 0.3, 0.2, 0.05, 0.03, 0.02]
    d1 = [probs[i + 1] - probs[i] for i in range(5)]
    d2 = [abs(d1[i + 1] - d1[i]) for i in range(4)]
    cdf = [sum(d2[: i + 1]) / sum(d2) for i in range(4)]
    keep_n = 1 + sum(1 for c in cdf if c <= 0.5)  # the first token plus those with cdf <= z
    assert kept(TailFree(0.5)(IDS, logits_for(probs))) == list(range(keep_n))


def test_epsilon_cutoff_in_units_of_1e4():
    # epsilon 600 -> 0.06: removes 0.03 only... and 0.07 stays.
    assert kept(EpsilonCutoff(600)(IDS, logits_for(P))) == [0, 1, 2, 3]


def test_eta_cutoff_uses_entropy():
    eta = 0.1
    entropy = -sum(p * math.log(p) for p in P)
    cutoff = min(eta, math.sqrt(eta) * math.exp(-entropy))
    expected = [i for i, p in enumerate(P) if p >= cutoff]
    assert kept(EtaCutoff(eta * 1e4)(IDS, logits_for(P))) == expected


def test_top_n_sigma():
    scores = torch.tensor([[10.0, 9.0, 5.0, 0.0, INF]])
    finite = torch.tensor([10.0, 9.0, 5.0, 0.0])
    std = float(((finite - finite.mean()) ** 2).mean().sqrt())
    expected = [i for i, v in enumerate(finite.tolist()) if v >= 10.0 - 1.0 * std]
    assert kept(TopNSigma(1.0)(IDS, scores)) == expected


def test_dynamic_temperature_from_entropy():
    probs = [0.7, 0.2, 0.1]
    scores = logits_for(probs)
    entropy = -sum(p * math.log(p) for p in probs)
    t = 0.5 + (1.5 - 0.5) * (entropy / math.log(3)) ** 2.0
    out = DynamicTemperature(0.5, 1.5, 2.0)(IDS, scores)
    assert torch.allclose(out, scores / t, atol=1e-5)


def test_quadratic_smoothing():
    scores = torch.tensor([[3.0, 2.0, 0.0, INF]])
    out = QuadraticSmoothing(0.5, 1.0)(IDS, scores)  # curve 1: -f * d^2 with d = logit - max
    assert out[0, :3].tolist() == pytest.approx([0.0, -0.5, -4.5])
    assert out[0, 3] == INF
    cubic = QuadraticSmoothing(0.5, 2.0)(IDS, scores)  # k = 0.5, s = 0.5: -0.25 d^2 + 0.25 d^3
    assert cubic[0, :3].tolist() == pytest.approx([0.0, -0.25 - 0.25, -0.25 * 9 - 0.25 * 27])


def test_repetition_penalty_with_range():
    scores = torch.tensor([[2.0, -2.0, 2.0, 1.0]])
    ids = torch.tensor([[0, 1, 3]])
    out = RepetitionPenalty(2.0)(ids, scores)
    assert out.tolist() == [[1.0, -4.0, 2.0, 0.5]]
    out = RepetitionPenalty(2.0, last_n=1)(ids, scores)  # only token 3 is in range
    assert out.tolist() == [[2.0, -2.0, 2.0, 0.5]]


def test_presence_and_frequency_penalties():
    scores = torch.zeros(1, 4)
    ids = torch.tensor([[1, 1, 1, 2]])
    out = PresenceFrequencyPenalty(presence=0.5, frequency=0.25)(ids, scores)
    assert out.tolist() == [[0.0, -(0.5 + 0.75), -(0.5 + 0.25), 0.0]]
    ranged = PresenceFrequencyPenalty(presence=0.5, frequency=0.25, last_n=2)(ids, scores)
    assert ranged.tolist() == [[0.0, -0.75, -0.75, 0.0]]


def test_encoder_repetition_penalty_favours_prompt_tokens():
    out = EncoderRepetitionPenalty(2.0, prompt_ids=[1, 2])(IDS, torch.tensor([[1.0, 1.0, -1.0, 1.0]]))
    assert out.tolist() == [[1.0, 2.0, -0.5, 1.0]]


def test_no_repeat_ngram_bans_completions():
    ids = torch.tensor([[5, 6, 7, 5, 6]])  # bigram (5,6) was followed by 7; trigram ban on 7
    out = NoRepeatNGram(3)(ids, torch.zeros(1, 10))
    assert [i for i in range(10) if out[0, i] == INF] == [7]
    out = NoRepeatNGram(2)(ids, torch.zeros(1, 10))  # after 6: bigram (6,7) seen -> ban 7
    assert [i for i in range(10) if out[0, i] == INF] == [7]


def test_logit_bias_and_bans():
    out = LogitBias({1: 2.5, 3: INF * -1 * -1, 99: 1.0}, vocab_size=4)(IDS, torch.zeros(1, 4))
    assert out.tolist() == [[0.0, 2.5, 0.0, INF]]


def test_dry_penalty_over_several_steps():
    """Sequence A B C D ... A B C: the token that followed before (D) is penalised by
    multiplier * base^(match_len - allowed); the penalty grows as the repeat gets longer."""
    dry = DRY(multiplier=0.8, base=1.75, allowed_length=2, breakers=[99])
    seq = [10, 11, 12, 13, 50, 51, 10, 11]
    assert dry.penalties(torch.tensor(seq).numpy()) == pytest.approx({12: 0.8 * 1.75 ** (2 - 2)})
    seq.append(12)
    assert dry.penalties(torch.tensor(seq).numpy()) == pytest.approx({13: 0.8 * 1.75 ** (3 - 2)})
    out = dry(torch.tensor([seq]), torch.zeros(1, 100))
    assert out[0, 13] == pytest.approx(-0.8 * 1.75)
    assert int((out != 0).sum()) == 1


def test_dry_stops_at_sequence_breakers_and_respects_allowed_length():
    dry = DRY(multiplier=1.0, base=2.0, allowed_length=2, breakers=[99])
    assert dry.penalties(torch.tensor([10, 99, 11, 12, 5, 99, 11]).numpy()) == {}  # match length 1 < 2
    assert dry.penalties(torch.tensor([10, 11, 12, 5, 10, 11, 99]).numpy()) == {}  # ends on a breaker


def test_xtc_removes_top_choices_but_the_least_likely_of_them():
    probs = [0.4, 0.3, 0.2, 0.1]
    always = XTC(threshold=0.15, probability=1.0, generator=torch.Generator().manual_seed(0))
    assert kept(always(IDS, logits_for(probs))) == [2, 3]
    protected = XTC(threshold=0.15, probability=1.0, generator=torch.Generator().manual_seed(0), protected=[0])
    assert kept(protected(IDS, logits_for(probs))) == [0, 2, 3]
    one_above = XTC(threshold=0.35, probability=1.0, generator=torch.Generator().manual_seed(0))
    assert kept(one_above(IDS, logits_for(probs))) == [0, 1, 2, 3]


def test_mirostat_v2_truncates_by_surprise_and_tracks_tau():
    gen = torch.Generator().manual_seed(3)
    miro = Mirostat(2, tau=1.5, eta=0.5, generator=gen)
    assert miro.mu == 3.0
    scores = logits_for(P)[0]
    # surprise -log2 p: 1.0, 2.0, 2.74, 3.84, 5.06 -> with mu 3 keep the first three
    assert kept(miro.keep(scores)[None]) == [0, 1, 2]
    for _ in range(50):  # each step: mu -= eta * (surprise of the pick in the truncated distribution - tau)
        mu = miro.mu
        truncated = torch.softmax(miro.keep(scores), dim=-1)
        token = miro.choose(scores)
        assert miro.mu == pytest.approx(mu - 0.5 * (-math.log2(float(truncated[token])) - 1.5))


def test_mirostat_v1_zipf_estimate():
    gen = torch.Generator().manual_seed(0)
    zipf = torch.tensor([1 / (i + 1) for i in range(1000)], dtype=torch.float64)
    zipf /= zipf.sum()
    miro = Mirostat(1, tau=3.0, eta=0.1, generator=gen)
    k = miro._zipf_k(zipf.float())
    # With s_hat = 1 (exact Zipf) the formula degenerates to the whole vocabulary.
    assert k == 1000 or k >= 1
    for _ in range(20):
        miro.choose(torch.log(zipf).float())
    assert miro.mu != 6.0
