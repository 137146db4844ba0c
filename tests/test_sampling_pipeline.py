"""The ordered chain, validation, sampling statistics and presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from webui.sampling import (
    DEFAULT_SAMPLER_PRIORITY,
    SamplingError,
    SamplingParams,
    build_sampler,
    delete_preset,
    list_presets,
    load_preset,
    save_preset,
)

ROOT = Path(__file__).resolve().parent.parent
IDS = torch.tensor([[0]])


def build(**kwargs):
    return build_sampler(SamplingParams(**kwargs), vocab_size=5, eos_token_ids=[4])


def logits(probs):
    return torch.log(torch.tensor([probs], dtype=torch.float64)).float()


def test_neutral_settings_build_an_empty_chain():
    assert build().processors == []
    assert build(temperature=0.7, min_p=0.1).names == ["temperature", "min_p"]


def test_order_is_data_and_changes_results():
    # probs 0.6/0.3/0.1. min_p 0.4 first: cut at 0.24 keeps two, then temperature 3 flattens them.
    # temperature first: 0.6^(1/3).. flattened, min_p 0.4 then keeps all three.
    probs = [0.6, 0.3, 0.1, 1e-9, 1e-9]
    first = build(temperature=3.0, min_p=0.4, sampler_priority=["min_p", "temperature"])
    last = build(temperature=3.0, min_p=0.4, temperature_last=False)
    assert first.names == ["min_p", "temperature"] and last.names == ["temperature", "min_p"]
    kept_first = (first.probabilities(IDS, logits(probs)) > 0).sum().item()
    kept_last = (last.probabilities(IDS, logits(probs)) > 0).sum().item()
    assert (kept_first, kept_last) == (2, 3)
    assert build(temperature=3.0, min_p=0.4, temperature_last=True).names == ["min_p", "temperature"]


def test_greedy_and_bans():
    sampler = build(do_sample=False, temperature=5, top_k=3)
    assert sampler.names == [] and sampler.choose(IDS, logits([0.1, 0.5, 0.2, 0.1, 0.1])) == 1
    banned = build(do_sample=False, custom_token_bans="1, 2", ban_eos_token=True)
    assert banned.choose(IDS, logits([0.1, 0.5, 0.2, 0.1, 0.1])) in (0, 3)


def chi_square(counts: torch.Tensor, probs: torch.Tensor, n: int) -> tuple[float, int]:
    mask = probs > 0
    expected = probs[mask] * n
    stat = float(((counts[mask] - expected) ** 2 / expected).sum())
    return stat, int(mask.sum()) - 1


# 0.999 quantiles of the chi-square distribution by degrees of freedom.
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32}


@pytest.mark.parametrize("settings", [
    {"temperature": 0.8},
    {"temperature": 1.3, "top_k": 4, "min_p": 0.02},
    {"top_p": 0.9, "repetition_penalty": 1.3, "dynamic_temperature": True, "dynatemp_low": 0.5, "dynatemp_high": 1.5},
])
def test_sampled_frequencies_match_processed_probabilities(settings):
    vocab = 8
    scores = torch.log(torch.tensor([[0.3, 0.2, 0.15, 0.12, 0.1, 0.07, 0.04, 0.02]]))
    ids = torch.tensor([[0, 3]])
    sampler = build_sampler(SamplingParams(seed=1234, **settings), vocab_size=vocab, eos_token_ids=[])
    probs = sampler.probabilities(ids, scores.clone())
    n = 20000
    counts = torch.bincount(torch.tensor([sampler.choose(ids, scores.clone()) for _ in range(n)]), minlength=vocab).double()
    assert counts[probs == 0].sum() == 0  # removed tokens never appear
    stat, dof = chi_square(counts, probs.double(), n)
    assert stat < CHI2_999[dof], (stat, dof)


def test_seed_makes_sampling_reproducible():
    scores = torch.log(torch.tensor([[0.3, 0.3, 0.2, 0.1, 0.1]]))
    picks = [[build(seed=42).choose(IDS, scores.clone()) for _ in range(1)] for _ in range(2)]
    a, b = build(seed=42), build(seed=42)
    assert [a.choose(IDS, scores.clone()) for _ in range(30)] == [b.choose(IDS, scores.clone()) for _ in range(30)]
    assert picks[0] == picks[1]


def test_transformers_processors_mix_into_the_chain():
    from transformers.generation.logits_process import TopKLogitsWarper

    sampler = build_sampler(SamplingParams(temperature=0.5), vocab_size=5, eos_token_ids=[],
                            extra_processors=[TopKLogitsWarper(top_k=2)])
    assert sampler.names == ["temperature", "TopKLogitsWarper"]
    probs = sampler.probabilities(IDS, logits([0.1, 0.4, 0.3, 0.1, 0.1]))
    assert (probs > 0).nonzero().flatten().tolist() == [1, 2]


def test_validation_errors_name_the_field():
    for field, value in [("top_p", 1.5), ("min_p", -0.1), ("mirostat_mode", 3), ("temperature", "hot"), ("top_k", -1)]:
        with pytest.raises(ValidationError, match=field):
            SamplingParams(**{field: value})
    with pytest.raises(ValidationError, match="unknown sampler 'warp'"):
        SamplingParams(sampler_priority=["warp", "top_k"])
    with pytest.raises(ValidationError, match="nonsense"):
        SamplingParams(nonsense=1)


def test_sillytavern_string_forms_are_parsed():
    params = SamplingParams(dry_sequence_breakers='["\\n", ":", "\\"", "*"]', custom_token_bans="5, 7",
                            logit_bias={"12": -2}, sampler_priority=["top_k", "temperature"])
    assert params.dry_sequence_breakers == ["\n", ":", '"', "*"]
    assert params.custom_token_bans == [5, 7] and params.logit_bias == {12: -2.0}
    assert params.sampler_priority[:2] == ["top_k", "temperature"]
    assert sorted(params.sampler_priority) == sorted(DEFAULT_SAMPLER_PRIORITY)


def test_every_shipped_preset_loads():
    names = list_presets(ROOT / "presets")
    assert {"Simple-1", "min_p", "Deterministic", "Null preset"} <= set(names)
    for name in names:
        load_preset(ROOT / "presets", name)
    assert load_preset(ROOT / "presets", "Null preset") == SamplingParams()
    assert load_preset(ROOT / "presets", "Simple-1").top_k == 20


def test_preset_round_trip_and_errors(tmp_path: Path):
    params = SamplingParams(temperature=0.6, min_p=0.07, dry_multiplier=0.8, sampler_priority=["min_p", "temperature"])
    path = save_preset(tmp_path, "Mine", params)
    assert "top_p:" not in path.read_text() and "min_p: 0.07" in path.read_text()  # only non-neutral values
    assert load_preset(tmp_path, "Mine") == params
    assert list_presets(tmp_path) == ["Mine"]
    delete_preset(tmp_path, "Mine")
    assert list_presets(tmp_path) == []
    (tmp_path / "bad.yaml").write_text("top_p: 7\n")
    with pytest.raises(SamplingError, match="bad.yaml: top_p"):
        load_preset(tmp_path, "bad")
    (tmp_path / "typo.yaml").write_text("temprature: 1\n")
    with pytest.raises(SamplingError, match="typo.yaml: temprature"):
        load_preset(tmp_path, "typo")
    with pytest.raises(SamplingError, match="no preset named"):
        load_preset(tmp_path, "../../etc/passwd")
