"""Every sampler the llama.cpp loader runs natively means the same as in Hearth's pipeline.

The same logits and token history go through llama.cpp's own chain and through Hearth's pipeline
(tests/sampler_parity.py); surviving tokens must be the same and their probabilities agree within
PROB_TOLERANCE, alone, in random orders, over several steps for the samplers with state. What cannot
agree is declared by `limits()` and reroutes; the tests show both that it disagrees and that it reroutes.
End to end, greedy runs on both paths agree token for token with each penalty and DRY on.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from loaders import llamacpp_sampling as native
from tests.sampler_parity import NativeChain, PipelineChain, Survivors, compare, zipf_logits
from webui.generation import GenerationCore, GenerationRequest
from webui.models import ModelManager
from webui.sampling import DEFAULT_SAMPLER_PRIORITY, SamplingParams

HISTORY = 'User: The cat sat on the mat.\nAssistant: The cat sat on the mat. The cat sat on the mat. "The cat* sat: on the'
ALONE = {
    "repetition_penalty": {"repetition_penalty": 1.8},
    "repetition_penalty_range": {"repetition_penalty": 1.5, "repetition_penalty_range": 8},
    "presence_penalty": {"presence_penalty": 1.5},
    "frequency_penalty": {"frequency_penalty": 1.0},
    "negative_penalties": {"presence_penalty": -0.5, "frequency_penalty": -0.3},
    "dry": {"dry_multiplier": 2.0},
    "dry_allowed_1": {"dry_multiplier": 0.8, "dry_allowed_length": 1, "dry_base": 1.2},
    "dry_range": {"dry_multiplier": 0.8, "dry_penalty_last_n": 20},
    "dry_multi_token_breaker": {"dry_multiplier": 0.8, "dry_sequence_breakers": ["sat: on", "\n"]},
    "temperature": {"temperature": 0.7},
    "dynamic_temperature": {
        "dynamic_temperature": True,
        "dynatemp_low": 0.5,
        "dynatemp_high": 1.5,
        "dynatemp_exponent": 1.3,
    },
    "top_k": {"top_k": 20},
    "top_p": {"top_p": 0.8},
    "min_p": {"min_p": 0.05},
    "typical_p": {"typical_p": 0.7},
    "top_n_sigma": {"top_n_sigma": 1.0},
    "logit_bias": {
        "logit_bias": {5: 3.0, 6: -2.0},
        "custom_token_bans": [7],
        "ban_eos_token": True,
        "min_p": 0.01,
    },
}
#: What a case is checked against to show it changes something (default: neutral settings).
REFERENCE = {"dry_multi_token_breaker": {"dry_multiplier": 0.8, "dry_sequence_breakers": ["\n"]}}
#: Samplers with state, compared over several steps (llama.cpp's pick drives both).
PICKERS = {
    "mirostat_1": {"mirostat_mode": 1, "mirostat_tau": 4.0, "mirostat_eta": 0.2},
    "mirostat_2": {"mirostat_mode": 2, "mirostat_tau": 3.0, "mirostat_eta": 0.3, "temperature": 0.8},
    "adaptive_p": {"adaptive_target": 0.3, "adaptive_decay": 0.5},
    "adaptive_p_after_min_p": {"adaptive_target": 0.6, "min_p": 0.02, "repetition_penalty": 1.2},
}
#: Values for the random mixes: each native sampler with a value that changes something.
MIX_VALUES = {
    "repetition_penalty": {"repetition_penalty": 1.3},
    "presence_penalty": {"presence_penalty": 0.7},
    "frequency_penalty": {"frequency_penalty": 0.4},
    "dry": {"dry_multiplier": 1.0},
    "temperature": {"temperature": 1.4},
    "dynamic_temperature": {"dynamic_temperature": True, "dynatemp_low": 0.6, "dynatemp_high": 1.6},
    "top_n_sigma": {"top_n_sigma": 1.5},
    "top_k": {"top_k": 60},
    "top_p": {"top_p": 0.9},
    "typical_p": {"typical_p": 0.9},
    "min_p": {"min_p": 0.03},
}


@pytest.fixture(scope="module")
def gguf(models_dir, loaders):
    manager = ModelManager(models_dir, loaders)
    model = manager.load("tiny-llama.gguf")
    yield model
    manager.unload()


@pytest.fixture(scope="module")
def history(gguf) -> list[int]:
    return gguf.tokenize(HISTORY)


@pytest.fixture(scope="module")
def steps(gguf, history) -> list[np.ndarray]:
    """The model's own next-token logits, then LM-shaped synthetic ones (flatter, so truncation bites)."""
    return [gguf.logits(history).numpy().copy(), *(zipf_logits(gguf.vocab_size, seed) for seed in range(5))]


def _first_step(model, params: SamplingParams, history: list[int], logits: np.ndarray) -> Survivors:
    chain = NativeChain(model, params, history)
    try:
        return chain.apply(logits)
    finally:
        chain.close()


@pytest.mark.parametrize("case", list(ALONE))
def test_each_native_sampler_alone_matches_the_pipeline(gguf, history, steps, case):
    params = SamplingParams(**ALONE[case])
    assert native.limits(params) == {}
    assert compare(gguf, params, history, steps) == []
    # Not vacuous: the setting changes what survives, or how likely it is.
    plain = _first_step(gguf, SamplingParams(**REFERENCE.get(case, {})), history, steps[1])
    assert _first_step(gguf, params, history, steps[1]).differences(plain, 1e-4)


@pytest.mark.parametrize("case", list(PICKERS))
def test_samplers_with_state_match_over_steps(gguf, history, steps, case):
    params = SamplingParams(**PICKERS[case])
    assert native.limits(params) == {}
    assert compare(gguf, params, history, steps * 2) == []


def test_random_orders_and_mixes_match(gguf, history, steps):
    """40 random mixes of native samplers in random sampler_priority orders, some with temperature_last."""
    rng = random.Random(20261201)
    compared = 0
    for _ in range(40):
        names = rng.sample(sorted(MIX_VALUES), rng.randint(2, 6))
        settings = {k: v for name in names for k, v in MIX_VALUES[name].items()}
        order = rng.sample(list(DEFAULT_SAMPLER_PRIORITY), len(DEFAULT_SAMPLER_PRIORITY))
        params = SamplingParams(**settings, sampler_priority=order, temperature_last=rng.random() < 0.3)
        if native.limits(params):
            assert gguf.native_generate(history, params, seed=1) is None
            continue
        compared += 1
        assert compare(gguf, params, history, steps[:3]) == [], params.active_samplers()
    assert compared >= 25


def test_penalties_keep_their_place_in_the_order(gguf, history, steps):
    """presence_penalty after temperature is not the same as before it, on both paths alike."""
    late = ["repetition_penalty", "temperature", "presence_penalty"]
    early = SamplingParams(temperature=0.5, presence_penalty=1.5, repetition_penalty=1.3)
    moved = early.model_copy(
        update={"sampler_priority": SamplingParams(sampler_priority=late).sampler_priority}
    )
    assert compare(gguf, moved, history, steps) == []
    assert _first_step(gguf, moved, history, steps[0]).differences(
        _first_step(gguf, early, history, steps[0]), 1e-4
    )


def _top_with(logits: np.ndarray, tokens: list[int]) -> np.ndarray:
    out, top = logits.copy(), float(logits.max())
    for rank, token in enumerate(tokens):
        out[token] = top + 2.0 - 0.1 * rank
    return out


def test_xtc_reroutes_because_llamacpp_removes_eos(gguf, history, steps):
    """Hearth's XTC (as text-generation-webui's) never removes EOS or newline; llama.cpp's does. With no
    protected token among the top choices the two agree; with EOS among them they differ, so XTC reroutes."""
    from llama_cpp._internals import LlamaSampler

    params = SamplingParams(xtc_probability=1.0, xtc_threshold=0.1)
    assert "xtc" in native.limits(params)
    assert gguf.native_generate(history, params, seed=1) is None

    def llama_xtc(logits: np.ndarray) -> Survivors:
        chain = NativeChain(gguf, SamplingParams(), history)
        chain.chain.close()
        chain.chain = LlamaSampler()
        chain.chain.add_xtc(1.0, 0.1, 1, 1)
        try:
            return chain.apply(logits)
        finally:
            chain.close()

    eos = next(iter(gguf.eos_token_ids))
    plain = _top_with(steps[1], [10, 11, 12])
    assert llama_xtc(plain).differences(PipelineChain(gguf, params, history).apply(plain)) == []
    assert 10 not in llama_xtc(plain).probs  # XTC did act
    with_eos = _top_with(steps[1], [10, eos, 12])
    assert llama_xtc(with_eos).differences(PipelineChain(gguf, params, history).apply(with_eos))


@pytest.mark.parametrize(
    "settings",
    [
        {"typical_p": 0.7, "ban_eos_token": True},
        {
            "dynamic_temperature": True,
            "dynatemp_low": 0.5,
            "dynatemp_high": 1.5,
            "top_n_sigma": 1.0,
            "sampler_priority": ["top_n_sigma", "dynamic_temperature"],
        },
    ],
    ids=["typical_p_after_a_ban", "dynamic_temperature_after_top_n_sigma"],
)
def test_what_llamacpp_computes_otherwise_reroutes(gguf, history, steps, settings):
    params = SamplingParams(**settings)
    assert native.limits(params)
    assert gguf.native_generate(history, params, seed=1) is None
    assert compare(gguf, params, history, steps)  # the reason is real: llama.cpp's answer differs


def test_mirostat_after_truncation_reroutes(gguf, history):
    params = SamplingParams(mirostat_mode=2, top_k=40)
    assert native.limits(params) == {"top_k": native._REASONS["mirostat"]}
    assert gguf.native_generate(history, params, seed=1) is None


@pytest.mark.parametrize(
    "settings",
    [
        {"repetition_penalty": 1.8},
        {"presence_penalty": 1.5},
        {"frequency_penalty": 1.0},
        {"dry_multiplier": 2.0},
    ],
    ids=lambda s: next(iter(s)),
)
def test_greedy_runs_agree_on_both_paths_with_each_penalty(manager: ModelManager, settings):
    """The defaults (ranges 0 = the whole context) penalise natively too: the same tokens as the pipeline
    (taken by asking for logprobs), and not the tokens of an unpenalised run."""
    model = manager.load("tiny-llama.gguf")
    core = GenerationCore(manager)

    def greedy(ids: list[int], n: int, logprobs: int = 0, **sampling) -> list[int]:
        params = SamplingParams(temperature=0, ban_eos_token=True, **sampling)
        return core.generate(
            GenerationRequest(prompt_ids=ids, max_new_tokens=n, sampling=params, logprobs=logprobs)
        ).token_ids

    # A repetitive prompt that also holds, near its start, its last three tokens followed by the model's
    # own next pick: a verbatim repeat for DRY to break (random weights rarely repeat on their own).
    plain = model.tokenize("The cat sat on the mat. The cat sat on the mat. The cat sat on the mat. The cat")
    prompt = [plain[0], *plain[-3:], *greedy(plain, 1), *plain[1:]]
    penalised = greedy(prompt, 48, **settings)
    assert penalised == greedy(prompt, 48, logprobs=1, **settings)
    assert penalised != greedy(prompt, 48)
