"""Penalties, DRY, bias, XTC and mirostat on small hand-made inputs, several steps where state matters."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from tests.sampling_helpers import IDS, INF, P, kept, logits_for
from webui.sampling.bias import LogitBias
from webui.sampling.dry import DRY
from webui.sampling.mirostat import Mirostat
from webui.sampling.penalties import (
    EncoderRepetitionPenalty,
    NoRepeatNGram,
    PresenceFrequencyPenalty,
    RepetitionPenalty,
)
from webui.sampling.xtc import XTC


def test_repetition_penalty_with_range():
    scores = torch.tensor([[2.0, -2.0, 2.0, 1.0]])
    ids = torch.tensor([[0, 1, 3, 3]])
    assert RepetitionPenalty(2.0)(ids, scores).tolist() == [[1.0, -4.0, 2.0, 0.5]]  # token 3 penalised once
    assert RepetitionPenalty(2.0, last_n=1)(ids, scores).tolist() == [[2.0, -2.0, 2.0, 0.5]]
    assert scores.tolist() == [[2.0, -2.0, 2.0, 1.0]]


def test_presence_and_frequency_penalties():
    scores = torch.zeros(1, 4)
    ids = torch.tensor([[1, 1, 1, 2]])
    out = PresenceFrequencyPenalty(presence=0.5, frequency=0.25)(ids, scores)
    assert out.tolist() == [[0.0, -(0.5 + 0.75), -(0.5 + 0.25), 0.0]]
    ranged = PresenceFrequencyPenalty(presence=0.5, frequency=0.25, last_n=2)(ids, scores)
    assert ranged.tolist() == [[0.0, -0.75, -0.75, 0.0]]
    assert PresenceFrequencyPenalty(0.0, 0.25).name == "frequency_penalty"


def test_encoder_repetition_penalty_favours_prompt_tokens():
    out = EncoderRepetitionPenalty(2.0, prompt_ids=[1, 2, 2])(IDS, torch.tensor([[1.0, 1.0, -1.0, 1.0]]))
    assert out.tolist() == [[1.0, 2.0, -0.5, 1.0]]


def test_no_repeat_ngram_bans_completions():
    ids = torch.tensor([[5, 6, 7, 5, 6]])  # (5, 6) was followed by 7: trigram ban on 7
    out = NoRepeatNGram(3)(ids, torch.zeros(1, 10))
    assert [i for i in range(10) if out[0, i] == INF] == [7]
    out = NoRepeatNGram(2)(ids, torch.zeros(1, 10))  # after 6: bigram (6, 7) seen -> ban 7
    assert [i for i in range(10) if out[0, i] == INF] == [7]
    out = NoRepeatNGram(1)(ids, torch.zeros(1, 10))  # unigrams: every seen token
    assert [i for i in range(10) if out[0, i] == INF] == [5, 6, 7]


def test_logit_bias_and_bans():
    out = LogitBias({1: 2.5, 3: INF}, vocab_size=4)(IDS, torch.zeros(1, 4))
    assert out.tolist() == [[0.0, 2.5, 0.0, INF]]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        LogitBias({99: 1.0}, vocab_size=4)


def test_dry_penalty_over_several_steps():
    """A B C D x y A B ...: each step extends the repeat of 'A B C D'; the token that followed before
    is penalised by multiplier * base^(match_len - allowed), growing as the repeat gets longer."""
    dry = DRY(multiplier=0.8, base=1.75, allowed_length=2, breakers=[99])
    seq = [10, 11, 12, 13, 50, 51, 10]
    assert dry.penalties(np.array(seq)) == {}  # match length 1 < allowed 2
    for step, (nxt, expected_token) in enumerate([(11, 12), (12, 13), (13, 50)]):
        seq.append(nxt)
        length = step + 2  # the repeated suffix: 10 11, then 10 11 12, then 10 11 12 13
        assert dry.penalties(np.array(seq)) == pytest.approx({expected_token: 0.8 * 1.75 ** (length - 2)})
    out = dry(torch.tensor([seq]), torch.zeros(1, 100))
    assert out[0, 50] == pytest.approx(-0.8 * 1.75**2)
    assert int((out != 0).sum()) == 1


def test_dry_takes_the_longest_match_per_token_and_respects_window():
    dry = DRY(multiplier=1.0, base=2.0, allowed_length=1, breakers=[])
    # 7 follows "3" twice: after "1 2 3" (match 3 with the end "1 2 3") and after "9 3" (match 1).
    seq = [1, 2, 3, 7, 9, 3, 7, 5, 1, 2, 3]
    assert dry.penalties(np.array(seq)) == pytest.approx({7: 2.0 ** (3 - 1)})
    windowed = DRY(multiplier=1.0, base=2.0, allowed_length=1, breakers=[], last_n=6)  # sees 3 7 5 1 2 3
    out = windowed(torch.tensor([seq]), torch.zeros(1, 10))
    assert out[0, 7] == pytest.approx(-1.0)


def test_dry_stops_at_sequence_breakers():
    dry = DRY(multiplier=1.0, base=2.0, allowed_length=2, breakers=[99])
    assert dry.penalties(np.array([10, 99, 11, 12, 5, 99, 11])) == {}  # match stops at 99: length 1
    assert dry.penalties(np.array([10, 11, 12, 5, 10, 11, 99])) == {}  # ends on a breaker
    assert dry.penalties(np.array([10, 11, 99, 5, 10, 11])) == {}  # the follower is a breaker


def naive_dry(tokens: list[int], multiplier: float, base: float, allowed: int, breakers: set[int], max_match: int) -> dict:
    """DRY written the slow, obvious way, as a reference for the vectorised one."""
    if len(tokens) < 2 or tokens[-1] in breakers:
        return {}
    best: dict[int, int] = {}
    for i in range(len(tokens) - 1):
        if tokens[i] != tokens[-1] or tokens[i + 1] in breakers:
            continue
        length = 1
        while length < max_match and i - length >= 0:
            a, b = tokens[i - length], tokens[len(tokens) - 1 - length]
            if a != b or b in breakers:
                break
            length += 1
        if length >= allowed:
            best[tokens[i + 1]] = max(best.get(tokens[i + 1], 0), length)
    return {t: multiplier * base ** (n - allowed) for t, n in best.items()}


def test_dry_matches_a_naive_reference_on_random_repetitive_text():
    rng = random.Random(0)
    dry = DRY(multiplier=0.8, base=1.75, allowed_length=2, breakers=[0])
    for _ in range(200):
        phrase = [rng.randrange(6) for _ in range(rng.randrange(2, 8))]
        tokens = (phrase * rng.randrange(1, 5) + [rng.randrange(6) for _ in range(rng.randrange(0, 6))]) * 2
        tokens = tokens[: rng.randrange(2, len(tokens) + 1)]
        assert dry.penalties(np.array(tokens)) == pytest.approx(naive_dry(tokens, 0.8, 1.75, 2, {0}, dry.max_match)), tokens


def test_dry_follows_a_match_until_its_penalty_is_decisive():
    """Past the length where multiplier * base^(L - allowed) >= 1e4 a longer match changes nothing
    (exp(-1e4) is 0): 0.8 * 1.75^16 < 1e4 <= 0.8 * 1.75^17, so matches are followed to length 2 + 17."""
    dry = DRY(multiplier=0.8, base=1.75, allowed_length=2, breakers=[])
    assert dry.max_match == 19
    tokens = np.array(list(range(30)) + list(range(29)))
    assert dry.penalties(tokens) == pytest.approx({29: 0.8 * 1.75**17})
    assert DRY(multiplier=1.0, base=1.0, allowed_length=3, breakers=[]).max_match == 3  # base 1: no growth


def test_dry_multi_token_breaker_ends_a_match_only_when_complete():
    """Head 20 with tail (21,) is the breaker "20 21": a complete one bounds the match, a lone 20 does not,
    and only a token that is a whole breaker on its own (30) is spared as a follower."""
    dry = DRY(multiplier=1.0, base=2.0, allowed_length=2, breakers={20: frozenset({(21,)}), 30: frozenset({()})})
    assert dry.penalties(np.array([5, 6, 7, 8, 5, 6, 7])) == {8: 2.0}
    # "21 6 7" repeats, but the match may not reach back past the complete breaker "20 21": length 2.
    assert dry.penalties(np.array([9, 21, 6, 7, 8, 20, 21, 6, 7])) == {8: 1.0}
    assert DRY(1.0, 2.0, 2, breakers=[]).penalties(np.array([9, 21, 6, 7, 8, 20, 21, 6, 7])) == {8: 2.0}
    assert dry.penalties(np.array([5, 20, 7, 8, 5, 20, 7])) == {8: 2.0}  # 20 alone breaks nothing
    assert dry.penalties(np.array([5, 6, 30, 1, 5, 6])) == {}  # follower 30 is a breaker by itself
    assert dry.penalties(np.array([5, 6, 20, 1, 5, 6])) == {20: 1.0}  # a head with a tail is penalised


def test_xtc_removes_top_choices_but_the_least_likely_of_them():
    probs = [0.4, 0.3, 0.2, 0.1]
    always = XTC(threshold=0.15, probability=1.0, generator=torch.Generator().manual_seed(0))
    assert kept(always(IDS, logits_for(probs))) == [2, 3]
    # As text-generation-webui: if EOS or newline would be removed, the step is skipped.
    protected = XTC(
        threshold=0.15, probability=1.0, generator=torch.Generator().manual_seed(0), protected=[0]
    )
    assert kept(protected(IDS, logits_for(probs))) == [0, 1, 2, 3]
    one_above = XTC(threshold=0.35, probability=1.0, generator=torch.Generator().manual_seed(0))
    assert kept(one_above(IDS, logits_for(probs))) == [0, 1, 2, 3]


def test_xtc_coin_flip_follows_probability_and_seed():
    def removals(seed: int) -> list[bool]:
        xtc = XTC(threshold=0.15, probability=0.3, generator=torch.Generator().manual_seed(seed))
        return [len(kept(xtc(IDS, logits_for([0.4, 0.3, 0.2, 0.1])))) < 4 for _ in range(2000)]

    first = removals(5)
    assert first == removals(5)
    assert abs(sum(first) / 2000 - 0.3) < 0.04  # 4 standard deviations


def test_mirostat_v2_truncates_by_surprise_and_tracks_tau():
    miro = Mirostat(2, tau=1.5, eta=0.5, generator=torch.Generator().manual_seed(3))
    assert miro.mu == 3.0
    scores = logits_for(P)[0]
    # surprise -log2 p: 1.0, 2.0, 2.74, 3.84, 5.06 -> with mu 3 keep the first three
    assert kept(miro.keep(scores)[None]) == [0, 1, 2]
    picks = set()
    for _ in range(50):  # each step: mu -= eta * (surprise of the pick in the truncated distribution - tau)
        mu = miro.mu
        truncated = torch.softmax(miro.keep(scores).double(), dim=-1)
        token = miro.choose(scores)
        picks.add(token)
        assert truncated[token] > 0
        assert miro.mu == pytest.approx(mu - 0.5 * (-math.log2(float(truncated[token])) - 1.5), rel=1e-5)
    assert 0 in picks and len(picks) > 1


def test_mirostat_v1_zipf_estimate_against_the_formula():
    n, s = 200, 1.5
    probs = torch.tensor([(i + 1) ** -s for i in range(n)], dtype=torch.float64)
    scores = torch.log(probs / probs.sum()).float()
    miro = Mirostat(1, tau=3.0, eta=0.1, generator=torch.Generator().manual_seed(0))
    # Exact Zipf: the estimate s_hat is s, so k = ((e * 2^mu) / (1 - n^-e))^(1/s) with e = s - 1, mu = 2 tau.
    e = s - 1
    k = int(((e * 2**6.0) / (1 - n ** (-e))) ** (1 / s))
    assert len(kept(miro.keep(scores)[None])) == k == 10
    for _ in range(30):  # the pick is always among the tokens kept for the current mu
        allowed = kept(miro.keep(scores)[None])
        mu = miro.mu
        token = miro.choose(scores)
        assert token in allowed
        assert miro.mu == pytest.approx(
            mu - 0.1 * (-math.log2(float(probs[token] / probs[allowed].sum())) - 3.0), rel=1e-4
        )
