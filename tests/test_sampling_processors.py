"""Temperature-family and truncation samplers, and the tensor helpers under them, on small hand-made
logits against numbers worked out by hand or by an independent formula written here."""

from __future__ import annotations

import math

import pytest
import torch

from tests.sampling_helpers import IDS, INF, P, kept, logits_for
from webui.sampling.temperature import DynamicTemperature, QuadraticSmoothing, Temperature
from webui.sampling.tensor_ops import remove_below, sample_from
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


def test_remove_below_equals_masked_fill_and_keeps_values_exact():
    scores = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0)) * 5
    scores[0, :10] = INF
    threshold = torch.tensor([[0.5], [-1.0], [3.0]])
    out = remove_below(scores, threshold)
    assert torch.equal(out, scores.masked_fill(scores < threshold, INF))
    assert not torch.isnan(out).any()
    tiny = torch.tensor([[1.0, 1.0 - 1e-7, 1.0 + 1e-7]])  # gaps of one float step still remove exactly
    assert kept(remove_below(tiny, torch.tensor([[1.0]]))) == [0, 2]


def test_sample_from_never_draws_removed_tokens_and_matches_softmax():
    gen = torch.Generator().manual_seed(7)
    scores = torch.full((2600,), INF)
    live = {5: 0.0, 1023: 1.0, 1024: -0.5, 2048: 0.7, 2599: 0.2}  # across chunk edges and the remainder
    for i, v in live.items():
        scores[i] = v
    n = 20000
    probs = torch.softmax(scores, dim=0)
    ids = torch.tensor(list(live))
    for whole_below in (65536, 0):  # one cumsum over all tokens, and the chunked draw of large vocabularies
        counts = torch.zeros(2600)
        for _ in range(n):
            counts[sample_from(scores, gen, whole_below=whole_below)] += 1
        assert set(counts.nonzero().flatten().tolist()) == set(live)
        stat = float(((counts[ids] - n * probs[ids]) ** 2 / (n * probs[ids])).sum())
        assert stat < 18.47  # chi-square 0.999 quantile, 4 degrees of freedom


def test_temperature_divides_logits():
    out = Temperature(0.5)(IDS, torch.tensor([[1.0, 2.0, -4.0]]))
    assert out.tolist() == [[2.0, 4.0, -8.0]]
    with pytest.raises(ValueError):
        Temperature(0)


def test_dynamic_temperature_from_entropy():
    probs = [0.7, 0.2, 0.1]
    scores = logits_for(probs)
    entropy = -sum(p * math.log(p) for p in probs)
    t = 0.5 + (1.5 - 0.5) * (entropy / math.log(3)) ** 2.0
    out = DynamicTemperature(0.5, 1.5, 2.0)(IDS, scores)
    assert torch.allclose(out, scores / t, atol=1e-5)
    # Removed tokens do not count as possible: H_max = log(3) with a fourth token at -inf.
    with_removed = torch.cat([scores, torch.tensor([[INF]])], dim=-1)
    assert torch.allclose(DynamicTemperature(0.5, 1.5, 2.0)(IDS, with_removed)[0, :3], out[0], atol=1e-5)
    with pytest.raises(ValueError):
        DynamicTemperature(2.0, 1.0, 1.0)


def test_quadratic_smoothing():
    scores = torch.tensor([[3.0, 2.0, 0.0, INF]])
    out = QuadraticSmoothing(0.5, 1.0)(IDS, scores)  # curve 1: -f * d^2 with d = logit - max
    assert out[0, :3].tolist() == pytest.approx([0.0, -0.5, -4.5])
    assert out[0, 3] == INF
    cubic = QuadraticSmoothing(0.5, 2.0)(IDS, scores)  # k = 0.5, s = 0.5: -0.25 d^2 + 0.25 d^3
    assert cubic[0, :3].tolist() == pytest.approx([0.0, -0.25 - 0.25, -0.25 * 9 - 0.25 * 27])
    assert cubic[0, 3] == INF


def test_top_k_keeps_k_best():
    assert kept(TopK(2)(IDS, logits_for(P))) == [0, 1]
    assert kept(TopK(50)(IDS, logits_for(P))) == [0, 1, 2, 3, 4]


def test_top_p_keeps_smallest_nucleus():
    # cumulative 0.5, 0.75, 0.90, 0.97: p=0.8 needs the first three tokens (0.75 < 0.8 <= 0.90).
    assert kept(TopP(0.8)(IDS, logits_for(P))) == [0, 1, 2]
    assert kept(TopP(0.75)(IDS, logits_for(P))) == [0, 1]
    assert kept(TopP(0.0)(IDS, logits_for(P))) == [0]


def test_top_p_head_and_full_sort_agree():
    """The fast path (nucleus inside the top HEADS tokens) and the full sort give the same set."""
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(2, 5000, generator=gen) * 2
    reference = TopP(0.9)
    reference.HEADS = ()  # always sort
    for heads in [(64,), (64, 4096), (4096,)]:
        fast = TopP(0.9)
        fast.HEADS = heads
        assert torch.equal(fast(IDS, scores), reference(IDS, scores))
    probs = torch.softmax(scores[0].double(), dim=0)
    order = probs.argsort(descending=True)
    size = int((probs[order].cumsum(0) < 0.9).sum()) + 1  # independent: first prefix reaching 0.9
    assert set(kept(reference(IDS, scores[:1]))) == set(order[:size].tolist())


def test_min_p_relative_to_top_token():
    # threshold = 0.2 * 0.5 = 0.1: keeps 0.5, 0.25, 0.15.
    assert kept(MinP(0.2)(IDS, logits_for(P))) == [0, 1, 2]
    assert kept(MinP(1.0)(IDS, logits_for(P))) == [0]


def test_top_a_uses_square_of_max():
    # threshold = 0.5 * 0.5^2 = 0.125 (keep p >= 0.125).
    assert kept(TopA(0.5)(IDS, logits_for(P))) == [0, 1, 2]
    assert kept(TopA(0.9)(IDS, logits_for(P))) == [0, 1]


def test_typical_p_against_direct_computation():
    probs = torch.tensor(P, dtype=torch.float64)
    entropy = float(-(probs * probs.log()).sum())
    distance = (-probs.log() - entropy).abs()
    mass, expected = 0.0, []
    for i in distance.argsort().tolist():  # add tokens closest to the entropy until mass >= 0.6
        expected.append(i)
        mass += P[i]
        if mass >= 0.6:
            break
    assert sorted(kept(TypicalP(0.6)(IDS, logits_for(P)))) == sorted(expected)


def test_typical_p_partial_order_matches_a_full_sort():
    """The topk search for the threshold (growing k) keeps exactly what a full sort would, flat or peaked."""
    gen = torch.Generator().manual_seed(3)
    for scale in (0.1, 1.0, 4.0):  # near-flat (the mass needs thousands of tokens) to peaked
        scores = torch.randn(2, 5000, generator=gen) * scale
        for mass in (0.3, 0.9, 0.99):
            logp = torch.log_softmax(scores, dim=-1)
            p = logp.exp()
            distance = (-logp + (logp * p).sum(dim=-1, keepdim=True)).abs()
            sorted_distance, order = torch.sort(distance, dim=-1)
            last = (p.gather(-1, order).cumsum(dim=-1) < mass).sum(dim=-1, keepdim=True)
            expected = distance <= sorted_distance.gather(-1, last)
            sampler = TypicalP(mass)
            sampler.first_k = 16  # force the growing search
            assert torch.equal(sampler(IDS, scores) > float("-inf"), expected)


def test_tail_free_cuts_where_curve_flattens():
    probs = [0.4, 0.3, 0.2, 0.05, 0.03, 0.02]
    d1 = [probs[i + 1] - probs[i] for i in range(5)]
    d2 = [abs(d1[i + 1] - d1[i]) for i in range(4)]
    cdf = [sum(d2[: i + 1]) / sum(d2) for i in range(4)]
    keep_n = 1 + sum(1 for c in cdf if c <= 0.5)  # the first token plus those with cdf <= z
    assert kept(TailFree(0.5)(IDS, logits_for(probs))) == list(range(keep_n))


def test_tail_free_over_survivors_matches_the_full_sort():
    """After earlier truncation only the survivors are sorted; the cut must equal the whole-vocabulary one."""

    def full_sort_keep(scores: torch.Tensor, z: float) -> torch.Tensor:  # the textbook computation
        sorted_logits, order = torch.sort(scores, descending=True)
        d2 = torch.softmax(sorted_logits, dim=-1).diff().diff().abs()
        cdf = (d2 / d2.sum()).cumsum(dim=-1)
        keep_sorted = torch.cat([torch.tensor([True]), cdf <= z, torch.tensor([False])])
        return torch.zeros_like(keep_sorted).scatter(0, order, keep_sorted) & torch.isfinite(scores)

    gen = torch.Generator().manual_seed(5)
    for survivors in (2, 3, 40, 2998, 3000):  # 2998: exactly two removed tokens; 3000: none removed
        scores = torch.randn(3000, generator=gen) * 2
        scores[torch.randperm(3000, generator=gen)[survivors:]] = float("-inf")
        for z in (0.5, 0.95):
            out = TailFree(z)(IDS, scores.unsqueeze(0))[0]
            assert torch.equal(out > float("-inf"), full_sort_keep(scores, z)), (survivors, z)


def test_epsilon_cutoff_in_units_of_1e4():
    # epsilon 600 -> 0.06: removes 0.03 only; 0.07 stays.
    assert kept(EpsilonCutoff(600)(IDS, logits_for(P))) == [0, 1, 2, 3]
    assert kept(EpsilonCutoff(9000)(IDS, logits_for(P))) == [0]  # never removes the top token


def test_eta_cutoff_uses_entropy():
    eta = 0.1
    entropy = -sum(p * math.log(p) for p in P)
    cutoff = min(eta, math.sqrt(eta) * math.exp(-entropy))
    expected = [i for i, p in enumerate(P) if p >= cutoff]
    assert kept(EtaCutoff(eta * 1e4)(IDS, logits_for(P))) == expected
    removed_first = torch.cat([logits_for(P), torch.tensor([[INF]])], dim=-1)  # -inf inputs: no NaN
    assert kept(EtaCutoff(eta * 1e4)(IDS, removed_first)) == expected


def test_top_n_sigma():
    scores = torch.tensor([[10.0, 9.0, 5.0, 0.0, INF]])
    finite = torch.tensor([10.0, 9.0, 5.0, 0.0])
    std = float(((finite - finite.mean()) ** 2).mean().sqrt())
    expected = [i for i, v in enumerate(finite.tolist()) if v >= 10.0 - 1.0 * std]
    assert kept(TopNSigma(1.0)(IDS, scores)) == expected


@pytest.mark.parametrize(
    "processor",
    [
        TopK(2),
        TopP(0.5),
        MinP(0.5),
        TopA(0.5),
        TypicalP(0.5),
        TailFree(0.5),
        EpsilonCutoff(100),
        EtaCutoff(100),
        TopNSigma(1.0),
        Temperature(0.7),
    ],
)
def test_processors_work_on_batches_and_leave_their_input_alone(processor):
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(2))
    before = scores.clone()
    out = processor(IDS, scores)
    assert torch.equal(scores, before)
    for row in range(3):
        assert torch.equal(out[row], processor(IDS, scores[row : row + 1])[0])
        assert torch.isfinite(out[row]).any()


def test_top_k_after_a_cut_that_left_fewer_tokens_keeps_them_all():
    """top_k 4 after a sampler left 2 tokens: its k-th value is -inf; both stay, nothing becomes NaN."""
    scores = torch.tensor([[1.0, 0.5, INF, INF, INF]])
    out = TopK(4)(None, scores)
    assert out.tolist() == scores.tolist()
    assert not torch.isnan(out).any()


def test_adaptive_p_reshapes_around_the_adapted_target_and_steers_it():
    """p = 0.5, 0.3, 0.2 with target 0.3 (decay 0.5, average starts at the target): d = |p - 0.3| / 0.3 and
    logit = 5 - 10 d^2 / (1 + d) gives 2.3333, 5, 4.1667. Picking the 0.5 token moves the average to
    (0.5 + 0.5 * 0.6) / (1 + 0.5 * 2) = 0.4, so the next target is 2 * 0.3 - 0.4 = 0.2."""
    from webui.sampling.adaptive_p import AdaptiveP

    scores = torch.log(torch.tensor([0.5, 0.3, 0.2, 0.0]))
    picker = AdaptiveP(0.3, 0.5, torch.Generator().manual_seed(0))
    assert picker.adapted_target == pytest.approx(0.3)
    reshaped = picker.keep(scores)
    assert reshaped[:3].tolist() == pytest.approx([5 - 10 * (2 / 3) ** 2 / (5 / 3), 5.0, 5 - 10 * (1 / 3) ** 2 / (4 / 3)], abs=1e-5)
    assert reshaped[3] == INF  # removed tokens stay removed
    picker.observe(0.5)
    assert picker.adapted_target == pytest.approx(0.2)
    with pytest.raises(ValueError):
        AdaptiveP(0.3, 1.0, torch.Generator())
