"""The sampler debugger's core (`webui.sampling.trace`), its API route and the UI's branch planning, on the
tiny GGUF: the distribution after each step of the active chain, the tokens each step removed, the order,
and the last stage being exactly what a generation draws from."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.test_api_server import Served, assert_error, serve_api
from webui.events import TextChunk
from webui.generation import GenerationCore, GenerationRequest
from webui.input_errors import InvalidInput, InvalidTokenId
from webui.models import ModelManager
from webui.sampling import DEFAULT_SAMPLER_PRIORITY, SamplingParams, build_sampler
from webui.sampling.registry import active_chain
from webui.sampling.trace import SamplerTrace, sampler_trace
from webui.ui.sampler_debugger import debugger_html, plan_branch, trace_at
from webui.ui.textviews import Segment

PROMPT = "Once upon a time, once upon a time there was a fox"


@pytest.fixture(scope="module")
def core(models_dir: Path, loaders: dict) -> Iterator[GenerationCore]:
    manager = ModelManager(models_dir, loaders)
    manager.load("tiny-llama.gguf")
    yield GenerationCore(manager)
    manager.unload()


def raw_order(trace: SamplerTrace) -> list[int]:
    """Candidate ids, most likely under the model first."""
    raw = trace.stages[0].probabilities
    return [c.token_id for _, c in sorted(zip(raw, trace.candidates, strict=True), key=lambda pc: -pc[0])]


def stage(trace: SamplerTrace, name: str):
    return next(s for s in trace.stages if s.name == name)


def drawn_from(core: GenerationCore, text: str, params: SamplingParams) -> torch.Tensor:
    """`Sampler.probabilities` over the model's logits: what a generation draws the next token from."""
    model = core.models.require()
    ids = model.tokenize(text)
    sampler = build_sampler(
        params,
        vocab_size=model.vocab_size,
        eos_token_ids=model.eos_token_ids,
        prompt_ids=ids,
        vocabulary=model.vocabulary,
    )
    return sampler.probabilities(torch.tensor([ids]), model.logits(ids)[None].clone())


SETTINGS = [
    {"temperature": 0.8, "top_k": 30, "top_p": 0.95, "min_p": 0.02, "repetition_penalty": 1.3},
    {"presence_penalty": 0.5, "dry_multiplier": 0.8, "typical_p": 0.9, "tfs": 0.95},
    {"mirostat_mode": 2, "mirostat_tau": 3.0},
    {"adaptive_target": 0.3, "top_k": 40},
    {"temperature": 0, "top_k": 5},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "+".join(s))
def test_the_last_stage_is_what_a_generation_draws_from(core: GenerationCore, settings: dict):
    params = SamplingParams(**settings)
    trace = sampler_trace(core, PROMPT, sampling=params, top_k=10)
    expected = drawn_from(core, PROMPT, params)
    for candidate, p in zip(trace.candidates, trace.final.probabilities, strict=True):
        assert math.isclose(p, float(expected[candidate.token_id]), rel_tol=1e-4, abs_tol=1e-7), candidate
    inspected = core.top_tokens(PROMPT, 10, use_samplers=True, sampling=params)  # the logits inspector
    for entry in inspected:
        if entry.logprob > -math.inf:
            assert math.isclose(
                trace.probability(trace.final, entry.token_id), math.exp(entry.logprob), rel_tol=1e-4
            )
    raw = core.top_tokens(PROMPT, 10)
    assert [c.token_id for c in raw] == raw_order(trace)[:10]
    assert all(
        math.isclose(trace.probability(trace.stages[0], t.token_id), math.exp(t.logprob), rel_tol=1e-5)
        for t in raw
    )
    assert trace.stages[0].name == "raw" and trace.stages[0].survivors == core.models.require().vocab_size


def test_top_k_removes_exactly_the_tokens_past_k(core: GenerationCore):
    trace = sampler_trace(core, PROMPT, sampling=SamplingParams(top_k=3), top_k=10)
    vocab = core.models.require().vocab_size
    top_k, order = stage(trace, "top_k"), raw_order(trace)
    assert trace.chain == ["top_k"] and len(trace.candidates) == 10
    assert top_k.survivors == 3 and top_k.removed_total == vocab - 3
    assert set(top_k.removed) == set(order[3:])
    raw = trace.stages[0]
    kept = sum(trace.probability(raw, i) for i in order[:3])
    for i in order[:3]:  # the survivors keep their proportions
        assert math.isclose(trace.probability(top_k, i), trace.probability(raw, i) / kept, rel_tol=1e-5)
    assert top_k.entropy < raw.entropy


def test_min_p_removes_the_tokens_below_its_share_of_the_top(core: GenerationCore):
    trace = sampler_trace(core, PROMPT, sampling=SamplingParams(min_p=0.15), top_k=10)
    raw, min_p = trace.stages[0], stage(trace, "min_p")
    threshold = 0.15 * max(raw.probabilities)
    below = {c.token_id for c, p in zip(trace.candidates, raw.probabilities, strict=True) if p < threshold}
    assert below and set(min_p.removed) == below
    everything = torch.softmax(
        core.models.require().logits(core.models.require().tokenize(PROMPT)).double(), -1
    )
    assert min_p.survivors == int((everything >= threshold).sum())
    assert all(
        p == 0 for c, p in zip(trace.candidates, min_p.probabilities, strict=True) if c.token_id in below
    )


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_reshapes_and_removes_nothing(core: GenerationCore, temperature: float):
    trace = sampler_trace(core, PROMPT, sampling=SamplingParams(temperature=temperature), top_k=10)
    raw, hot = trace.stages[0], stage(trace, "temperature")
    assert hot.removed == () and hot.removed_total == 0
    for before, after in zip(raw.logits, hot.logits, strict=True):
        assert math.isclose(after, before / temperature, rel_tol=1e-5, abs_tol=1e-5)
    assert (hot.entropy > raw.entropy) == (temperature > 1)
    assert (max(hot.probabilities) > max(raw.probabilities)) == (temperature < 1)


def test_the_stages_follow_sampler_priority(core: GenerationCore):
    biased = core.top_tokens(PROMPT, 8)[-1].token_id
    base = {"logit_bias": {str(biased): 2.0}, "temperature": 1.8, "top_k": 20, "min_p": 0.1}
    default = sampler_trace(core, PROMPT, sampling=SamplingParams(**base))
    last = sampler_trace(core, PROMPT, sampling=SamplingParams(**base, temperature_last=True))
    first = ["min_p", *[n for n in DEFAULT_SAMPLER_PRIORITY if n != "min_p"]]
    custom = sampler_trace(core, PROMPT, sampling=SamplingParams(**base, sampler_priority=first))
    assert default.chain == ["logit_bias", "temperature", "top_k", "min_p"]
    assert last.chain == ["logit_bias", "top_k", "min_p", "temperature"]
    assert custom.chain == ["logit_bias", "min_p", "temperature", "top_k"]
    for trace, settings in ((default, base), (last, {**base, "temperature_last": True})):
        assert trace.chain[1:] == [s.name for s in active_chain(SamplingParams(**settings))]
    # the order is real: min_p after a flattening temperature keeps more tokens than before it
    assert stage(default, "min_p").survivors > stage(last, "min_p").survivors
    bias = stage(default, "logit_bias")
    assert math.isclose(
        bias.logits[[c.token_id for c in default.candidates].index(biased)],
        default.stages[0].logits[[c.token_id for c in default.candidates].index(biased)] + 2.0,
        rel_tol=1e-5,
    )


def test_pickers_and_xtc_are_described_not_rolled(core: GenerationCore):
    mirostat = SamplingParams(mirostat_mode=2, mirostat_tau=3.0)
    once, again = (sampler_trace(core, PROMPT, sampling=mirostat) for _ in range(2))
    assert once == again  # no state advanced between traces
    assert once.final.kind == "picker" and "mu = 6.00" in once.final.note and once.final.removed_total > 0

    greedy = sampler_trace(core, PROMPT, sampling=SamplingParams(temperature=0))
    assert greedy.chain == ["greedy"] and max(greedy.final.probabilities) == 1.0
    assert greedy.candidates[0].token_id == raw_order(greedy)[0]

    hot = sampler_trace(core, PROMPT, sampling=SamplingParams(temperature=3.0), top_k=10)
    flat = sorted(stage(hot, "temperature").probabilities, reverse=True)
    threshold = (flat[2] + flat[3]) / 2  # three tokens pass it: XTC removes the two likeliest
    xtc = sampler_trace(
        core,
        PROMPT,
        sampling=SamplingParams(temperature=3.0, xtc_threshold=threshold, xtc_probability=0.25),
        top_k=10,
    )
    step = stage(xtc, "xtc")
    ahead = sorted(xtc.candidates, key=lambda c: -xtc.probability(stage(xtc, "temperature"), c.token_id))
    assert set(step.removed) == {c.token_id for c in ahead[:2]} and step.removed_total == 2
    assert "coin flip (25% of tokens)" in step.note


def test_a_position_inside_the_text_and_bad_positions(core: GenerationCore):
    ids = core.tokenize(PROMPT)
    inside = sampler_trace(core, ids, 4, top_k=5)
    assert inside.position == 4 and inside.actual is not None and inside.actual.token_id == ids[4]
    assert inside.actual.token_id in {c.token_id for c in inside.candidates}  # listed even if unlikely
    after = sampler_trace(core, ids[:4], top_k=5)  # the same context, given as the whole text
    assert after.actual is None and after.position == 4
    for candidate, p in zip(after.candidates, after.stages[0].probabilities, strict=True):
        assert p == inside.probability(inside.stages[0], candidate.token_id)
    for bad in (0, len(ids) + 1):
        with pytest.raises(InvalidInput, match="position") as info:
            sampler_trace(core, ids, bad)
        assert info.value.param == "position"
    with pytest.raises(InvalidTokenId):
        sampler_trace(core, [1, 10**6])


# -- the UI's part: the table and a branch -----------------------------------------------------------
def test_debugger_table_marks_removed_tokens_and_offers_the_others(core: GenerationCore):
    trace = sampler_trace(core, core.tokenize(PROMPT), 6, SamplingParams(top_k=3, temperature=0.7), top_k=6)
    out = debugger_html(trace, 2, 9)
    assert "Token 3 of 9" in out and "<th>raw</th><th>temperature</th><th>top_k</th></tr>" in out
    assert out.count("<td class='removed' title='removed by top_k'") == len(stage(trace, "top_k").removed) > 0
    assert out.count("class='hearth-branch'") == len(trace.candidates) - 1  # all but the picked token
    assert "(picked)" in out and out.count(" bits</td>") == 3


def test_branch_cuts_at_the_token_and_puts_the_alternative_in_place(core: GenerationCore):
    prompt = "Once upon a time"
    request = GenerationRequest(
        prompt=prompt,
        max_new_tokens=8,
        logprobs=5,
        sampling=SamplingParams(temperature=0.9, seed=7, ban_eos_token=True),
    )
    tokens = [e for event in core.stream(request) if isinstance(event, TextChunk) for e in event.logprobs]
    segments = [Segment(0, tuple(core.tokenize(prompt)), prompt)]
    params = {"sampling": SamplingParams(temperature=0.9).model_dump()}
    opened = trace_at(core, tokens, segments, 3, params)
    # the debugger reads exactly what the generation read: its raw stage holds the recorded probability
    assert math.isclose(
        opened.trace.probability(opened.trace.stages[0], tokens[3].token_id),
        math.exp(tokens[3].logprob),
        rel_tol=1e-4,
    )
    alternative = next(c.token_id for c in opened.trace.candidates if c.token_id != tokens[3].token_id)
    branch = plan_branch(core, opened, tokens, segments, alternative)
    ids = [t.token_id for t in tokens]
    assert branch.prompt_ids == [*segments[0].prompt_ids, *ids[:3], alternative]
    assert branch.before == prompt + core.detokenize([*ids[:3], alternative])
    assert [t.token_id for t in branch.keep] == [*ids[:3], alternative] and branch.segments == segments
    assert math.isclose(
        math.exp(branch.keep[3].logprob), opened.trace.probability(opened.trace.stages[0], alternative)
    )
    changed = [*tokens[:3], tokens[4]]  # the text changed since the token was opened
    with pytest.raises(Exception, match="click the token again"):
        plan_branch(core, opened, changed, segments, alternative)


# -- the API ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_api(models_dir, tmp_path_factory.mktemp("user_data")) as s:
        yield s


def test_trace_route_answers_with_the_per_sampler_breakdown(served: Served):
    fields = {"preset": "Simple-1", "min_p": 0.05}
    with served.client() as c:
        body = c.post("/v1/internal/logits/trace", json={"prompt": PROMPT, "top_logits": 5, **fields}).json()
        inspected = c.post(
            "/v1/internal/logits",
            json={"prompt": PROMPT, "top_logits": 5, "use_samplers": True, "detailed": True, **fields},
        ).json()["top_logits"]
    assert body["chain"] == [s["name"] for s in body["stages"][1:]] and body["stages"][0]["name"] == "raw"
    assert body["chain"] == ["repetition_penalty", "temperature", "top_k", "top_p", "min_p"]
    ids = [c["token_id"] for c in body["candidates"]]
    final = dict(zip(ids, body["stages"][-1]["probs"], strict=True))
    for entry in inspected:
        if entry["prob"] > 0:
            assert math.isclose(final[entry["token_id"]], entry["prob"], rel_tol=1e-4)
    for step in body["stages"]:
        assert len(step["probs"]) == len(step["logits"]) == len(ids) and step["entropy_bits"] >= 0
        assert all(
            (p == 0) == (logit is None) for p, logit in zip(step["probs"], step["logits"], strict=True)
        )
        assert set(step["removed"]) <= set(ids)
    assert body["actual"] is None and body["position"] == len(served.app.core.tokenize(PROMPT))


def test_trace_route_rejects_bad_input_naming_the_field(served: Served):
    n = len(served.app.core.tokenize(PROMPT))
    with served.client() as c:
        inside = c.post("/v1/internal/logits/trace", json={"prompt": PROMPT, "position": 2}).json()
        assert inside["position"] == 2 and inside["actual"]["token_id"] == served.app.core.tokenize(PROMPT)[2]
        assert_error(
            c.post("/v1/internal/logits/trace", json={"prompt": PROMPT, "position": 0}), 400, "position"
        )
        assert_error(
            c.post("/v1/internal/logits/trace", json={"prompt": PROMPT, "position": n + 1}), 400, "position"
        )
        assert_error(c.post("/v1/internal/logits/trace", json={"prompt": PROMPT, "top_k": -1}), 400, "top_k")
        assert_error(
            c.post("/v1/internal/logits/trace", json={"prompt": PROMPT, "top_logits": 0}), 400, "top_logits"
        )
        assert_error(c.post("/v1/internal/logits/trace", json={"top_logits": 3}), 400, "prompt")
