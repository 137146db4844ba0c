"""The ordered chain: settings, order, greedy, validation, extra processors and sampling statistics."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from webui.sampling import DEFAULT_SAMPLER_PRIORITY, SamplingError, SamplingParams, build_sampler
from webui.sampling.vocabulary import sequence_breaker_ids

IDS = torch.tensor([[0]])


def build(**kwargs):
    return build_sampler(SamplingParams(**kwargs), vocab_size=5, eos_token_ids=[4])


def logits(probs):
    return torch.log(torch.tensor([probs], dtype=torch.float64)).float()


def test_default_priority_is_text_generation_webuis():
    assert list(DEFAULT_SAMPLER_PRIORITY) == [
        "repetition_penalty", "presence_penalty", "frequency_penalty", "dry", "temperature", "dynamic_temperature",
        "quadratic_sampling", "top_n_sigma", "top_k", "top_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "tfs",
        "top_a", "min_p", "adaptive_p", "mirostat", "xtc", "encoder_repetition_penalty", "no_repeat_ngram",
    ]  # fmt: skip
    assert SamplingParams().sampler_priority == list(DEFAULT_SAMPLER_PRIORITY)


def test_neutral_settings_build_an_empty_chain():
    assert build().processors == [] and SamplingParams().active_samplers() == []
    assert SamplingParams().non_neutral() == {}
    assert build(temperature=0.7, min_p=0.1).names == ["temperature", "min_p"]


def test_active_samplers_follow_priority_temperature_last_and_mirostat_last():
    params = SamplingParams(
        temperature=0.7, min_p=0.1, repetition_penalty=1.1, mirostat_mode=2, xtc_probability=0.5
    )
    assert params.active_samplers() == ["repetition_penalty", "temperature", "min_p", "xtc", "mirostat"]
    params.temperature_last = True
    assert params.active_samplers() == ["repetition_penalty", "min_p", "xtc", "temperature", "mirostat"]
    assert build_sampler(params, vocab_size=5, eos_token_ids=[]).names == params.active_samplers()
    # dynamic temperature replaces the plain one
    assert SamplingParams(temperature=0.5, dynamic_temperature=True).active_samplers() == [
        "dynamic_temperature"
    ]


def test_presence_and_frequency_run_at_their_own_places():
    params = SamplingParams(
        presence_penalty=0.5,
        frequency_penalty=0.2,
        temperature=0.5,
        sampler_priority=["presence_penalty", "temperature", "frequency_penalty"],
    )
    sampler = build_sampler(params, vocab_size=5, eos_token_ids=[])
    assert sampler.names == ["presence_penalty", "temperature", "frequency_penalty"]
    ids = torch.tensor([[1, 1]])
    out = sampler.process(ids, torch.zeros(1, 5))
    assert out[0, 1].item() == pytest.approx(
        -0.5 / 0.5 - 0.2 * 2
    )  # presence scaled by temperature, frequency not


def test_order_is_data_and_changes_results():
    # probs 0.6/0.3/0.1. min_p 0.4 first: cut at 0.24 keeps two, then temperature 3 flattens them.
    # Temperature first flattens to ~0.46/0.37/0.17 and min_p 0.4 (cut 0.19)... keeps all three.
    probs = [0.6, 0.3, 0.1, 1e-9, 1e-9]
    first = build(temperature=3.0, min_p=0.4, sampler_priority=["min_p", "temperature"])
    last = build(temperature=3.0, min_p=0.4)
    assert first.names == ["min_p", "temperature"] and last.names == ["temperature", "min_p"]
    assert (first.probabilities(IDS, logits(probs)) > 0).sum().item() == 2
    assert (last.probabilities(IDS, logits(probs)) > 0).sum().item() == 3
    assert build(temperature=3.0, min_p=0.4, temperature_last=True).names == ["min_p", "temperature"]


def test_greedy_keeps_penalties_and_bans_but_skips_warpers():
    sampler = build(do_sample=False, temperature=5, top_k=3, xtc_probability=1.0, repetition_penalty=3.0)
    assert sampler.names == ["repetition_penalty"]
    assert sampler.choose(IDS, logits([0.1, 0.5, 0.2, 0.1, 0.1])) == 1
    assert sampler.choose(torch.tensor([[1]]), logits([0.1, 0.5, 0.2, 0.1, 0.1])) == 2  # 1 penalised
    banned = build(temperature=0, custom_token_bans="1, 2", ban_eos_token=True)
    assert banned.names == ["logit_bias"]
    assert banned.choose(IDS, logits([0.1, 0.5, 0.2, 0.1, 0.3])) == 0
    assert banned.probabilities(IDS, logits([0.1, 0.5, 0.2, 0.1, 0.3])).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_vocabulary_errors_are_sampling_errors():
    with pytest.raises(SamplingError, match="logit_bias: token ids outside"):
        build(logit_bias={7: 1.0})
    with pytest.raises(SamplingError, match="custom_token_bans"):
        build(custom_token_bans=[5])
    with pytest.raises(SamplingError, match="dynamic_temperature"):
        build(dynamic_temperature=True, dynatemp_low=2.0, dynatemp_high=1.0)


def test_sequence_breakers_use_every_id_of_the_breaker_mid_text():
    vocab = {"a": 1, "\n": 2, "#": 3, "a:": 4, ":": 5, "<bos>": 0}

    def encode(text: str) -> list[int]:  # a toy tokenizer: BOS, then 'a:' merged, else one id per char
        ids, i = [0], 0
        while i < len(text):
            piece = text[i : i + 2] if text[i : i + 2] in vocab else text[i]
            ids.append(vocab[piece])
            i += len(piece)
        return ids

    assert sequence_breaker_ids(["\n", "##", ":"], encode) == {2, 3, 4}
    assert sequence_breaker_ids(["\n"], None) == set()


def test_seed_makes_sampling_reproducible():
    scores = torch.log(torch.tensor([[0.3, 0.3, 0.2, 0.1, 0.1]]))
    a, b = build(seed=42), build(seed=42)
    assert a.seed == 42
    assert [a.choose(IDS, scores) for _ in range(30)] == [b.choose(IDS, scores) for _ in range(30)]
    assert build().seed >= 0  # -1: a random seed, reported


def test_transformers_processors_mix_into_the_chain():
    from transformers.generation.logits_process import NoBadWordsLogitsProcessor, TopKLogitsWarper

    sampler = build_sampler(
        SamplingParams(temperature=0.5),
        vocab_size=5,
        eos_token_ids=[],
        extra_processors=[TopKLogitsWarper(top_k=2), NoBadWordsLogitsProcessor([[1]], eos_token_id=4)],
    )
    assert sampler.names == ["temperature", "TopKLogitsWarper", "NoBadWordsLogitsProcessor"]
    probs = sampler.probabilities(IDS, logits([0.1, 0.4, 0.3, 0.1, 0.1]))
    assert (probs > 0).nonzero().flatten().tolist() == [2]


def test_the_callers_scores_stay_intact_even_with_a_processor_that_writes_in_place():
    def in_place_ban(input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, 0] = float("-inf")
        return scores

    scores = logits([0.1, 0.4, 0.3, 0.1, 0.1])
    before = scores.clone()
    ours = SamplingParams(temperature=0.7, min_p=0.001, ban_eos_token=True, logit_bias={1: 2.0})
    for params, extra in ((ours, []), (SamplingParams(), [in_place_ban]), (ours, [in_place_ban])):
        sampler = build_sampler(params, vocab_size=5, eos_token_ids=[4], extra_processors=extra)
        probs = sampler.probabilities(IDS, scores)
        assert (probs[4] == 0) == params.ban_eos_token and (probs[0] == 0) == bool(extra)
        assert torch.equal(scores, before)


def test_validation_errors_name_the_field():
    for field, value in [
        ("top_p", 1.5),
        ("min_p", -0.1),
        ("mirostat_mode", 3),
        ("temperature", "hot"),
        ("top_k", -1),
        ("logit_bias", {"-3": 1.0}),
        ("logit_bias", {"3": 500}),
        ("custom_token_bans", [-1]),
        ("dry_base", 0.5),
        ("xtc_probability", 2),
        ("seed", -2),
    ]:
        with pytest.raises(ValidationError, match=field):
            SamplingParams(**{field: value})
    with pytest.raises(ValidationError, match="unknown sampler 'warp'"):
        SamplingParams(sampler_priority=["warp", "top_k"])
    with pytest.raises(ValidationError, match="nonsense"):
        SamplingParams(nonsense=1)
    params = SamplingParams()
    with pytest.raises(ValidationError, match="top_p"):
        params.top_p = 2.0  # assignments are validated too


def test_client_string_forms_are_parsed():
    params = SamplingParams(
        dry_sequence_breakers='["\\n", ":", "\\"", "*"]',
        custom_token_bans="5, 7",
        logit_bias={"12": -2},
        sampler_priority="top_k\ntemperature",
    )
    assert params.dry_sequence_breakers == ["\n", ":", '"', "*"]
    assert params.custom_token_bans == [5, 7] and params.logit_bias == {12: -2.0}
    assert params.sampler_priority[:2] == ["top_k", "temperature"]
    assert sorted(params.sampler_priority) == sorted(DEFAULT_SAMPLER_PRIORITY)
    tgw_ui = SamplingParams(
        dry_sequence_breakers='"\\n", ":", "\\"", "*"'
    )  # tgw's UI: the list without brackets
    assert tgw_ui.dry_sequence_breakers == ["\n", ":", '"', "*"]
    assert SamplingParams(dry_sequence_breakers="###, END").dry_sequence_breakers == ["###", "END"]
    assert SamplingParams(custom_token_bans="").custom_token_bans == []


def chi_square(counts: torch.Tensor, probs: torch.Tensor, n: int) -> tuple[float, int]:
    mask = probs > 0
    expected = probs[mask] * n
    stat = float(((counts[mask] - expected) ** 2 / expected).sum())
    return stat, int(mask.sum()) - 1


# 0.999 quantiles of the chi-square distribution by degrees of freedom (standard tables).
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32}


@pytest.mark.parametrize("settings", [
    {"temperature": 0.8},
    {"temperature": 1.3, "top_k": 4, "min_p": 0.02},
    {"top_p": 0.9, "repetition_penalty": 1.3, "dynamic_temperature": True, "dynatemp_low": 0.5, "dynatemp_high": 1.5},
    {"smoothing_factor": 0.4, "top_a": 0.2, "presence_penalty": 0.3, "logit_bias": {7: 1.0}},
])  # fmt: skip
def test_sampled_frequencies_match_processed_probabilities(settings):
    vocab = 8
    scores = torch.log(torch.tensor([[0.3, 0.2, 0.15, 0.12, 0.1, 0.07, 0.04, 0.02]]))
    ids = torch.tensor([[0, 3]])
    sampler = build_sampler(SamplingParams(seed=1234, **settings), vocab_size=vocab, eos_token_ids=[])
    probs = sampler.probabilities(ids, scores)
    assert 1 < int((probs > 0).sum()) < vocab or "top_k" not in settings
    n = 20000
    counts = torch.bincount(
        torch.tensor([sampler.choose(ids, scores) for _ in range(n)]), minlength=vocab
    ).double()
    assert counts[probs == 0].sum() == 0  # removed tokens never appear
    stat, dof = chi_square(counts, probs.double(), n)
    assert stat < CHI2_999[dof], (stat, dof)
