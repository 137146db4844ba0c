"""Features of the pipeline path on real tiny models: CFG, banned strings, logprobs, grammar, logits inspection."""

from __future__ import annotations

import pytest
import torch

from webui.events import TextChunk
from webui.generation import GenerationCore, GenerationRequest
from webui.models import ModelManager
from webui.pipeline_path import guided_scores
from webui.sampling import SamplingParams

PROMPT = "Once upon a time there was a little village"


def greedy(**kwargs) -> SamplingParams:
    return SamplingParams(do_sample=False, ban_eos_token=True, **kwargs)


@pytest.fixture
def core(manager: ModelManager) -> GenerationCore:
    return GenerationCore(manager)


def generate(core: GenerationCore, **kwargs):
    events = list(core.stream(GenerationRequest(**kwargs)))
    return [e for e in events if isinstance(e, TextChunk)], events[-1]


def test_guidance_scale_one_is_exactly_the_plain_result(manager: ModelManager, core: GenerationCore):
    manager.load("tiny-llama.gguf")
    plain = generate(core, prompt=PROMPT, max_new_tokens=16, sampling=greedy())[1]
    manager.load("tiny-llama.gguf", loader="llamacpp_HF")
    same = generate(core, prompt=PROMPT, max_new_tokens=16, sampling=greedy(guidance_scale=1.0, negative_prompt="dragons"))[1]
    assert same.token_ids == plain.token_ids


@pytest.mark.parametrize("model_name", ["tiny-llama.gguf", "tiny-llama"])
def test_cfg_matches_direct_formula_and_costs_one_token_per_step(manager: ModelManager, core: GenerationCore, model_name: str):
    model = manager.load(model_name)
    negative = "The dragon guarded a library of ancient books."
    done = generate(core, prompt=PROMPT, max_new_tokens=6, sampling=greedy(guidance_scale=2.0, negative_prompt=negative))[1]
    ids, neg = model.tokenize(PROMPT), model.tokenize(negative)
    expected = []
    for _ in range(6):  # recompute each step independently of any cache
        scores = guided_scores(model.logits(ids + expected).clone(), model.logits(neg + expected, slot=1).clone(), 2.0)
        expected.append(int(scores.argmax()))
    assert done.token_ids == expected
    plain = generate(core, prompt=PROMPT, max_new_tokens=6, sampling=greedy())[1]
    assert plain.token_ids != expected  # guidance changed something with these weights
    before = model.evaluated_tokens
    generate(core, prompt=PROMPT + " again", max_new_tokens=6, sampling=greedy(guidance_scale=2.0, negative_prompt=negative))
    # the negative prompt is cached: each step evaluates one token per sequence, plus the changed prompt tail
    assert model.evaluated_tokens - before <= 2 * 6 + 4


@pytest.mark.parametrize("model_name", ["tiny-llama.gguf", "tiny-llama"])
def test_banned_string_never_appears_even_across_tokens(manager: ModelManager, core: GenerationCore, model_name: str):
    model = manager.load(model_name)
    free = generate(core, prompt=PROMPT, max_new_tokens=20, sampling=greedy())[1]
    pieces = [model.detokenize(free.token_ids[:i]) for i in range(1, 21)]
    boundary = len(pieces[5])
    phrase = free.text[boundary - 2 : boundary + 2]
    start = free.text.index(phrase)
    chunks, done = generate(core, prompt=PROMPT, max_new_tokens=20, sampling=greedy(banned_strings=[phrase]))
    streamed = "".join(c.text for c in chunks)
    assert phrase not in streamed and streamed == done.text
    assert done.usage.completion_tokens == 20
    # Text before the token where the phrase began is unchanged.
    first_token = max(i for i in range(len(pieces)) if len(pieces[i - 1] if i else "") <= start)
    unchanged = pieces[first_token - 1] if first_token else ""
    assert done.text.startswith(unchanged)


def test_logprobs_report_top_alternatives(manager: ModelManager, core: GenerationCore):
    model = manager.load("tiny-llama.gguf")
    chunks, done = generate(core, prompt=PROMPT, max_new_tokens=5, logprobs=3, sampling=greedy())
    entries = [lp for c in chunks for lp in c.logprobs]
    assert [e.token_id for e in entries] == done.token_ids
    first = entries[0]
    direct = torch.log_softmax(model.logits(model.tokenize(PROMPT)).float(), dim=-1)
    assert first.logprob == pytest.approx(float(direct.max()), abs=1e-4)
    assert len(first.top) == 3 and first.top[0][0] == first.token_id


def test_grammar_constrains_the_native_path(manager: ModelManager, core: GenerationCore):
    manager.load("tiny-llama.gguf")
    grammar = 'root ::= ("yes" | "no") "." '
    for seed in range(3):
        done = generate(core, prompt=PROMPT, max_new_tokens=10,
                        sampling=SamplingParams(grammar_string=grammar, seed=seed))[1]
        assert done.text in ("yes.", "no.")
    with pytest.raises(Exception, match="not a valid GBNF grammar"):
        generate(core, prompt=PROMPT, max_new_tokens=4, sampling=SamplingParams(grammar_string="root ::= ("))


def test_grammar_constrains_the_pipeline_too(manager: ModelManager, core: GenerationCore):
    manager.load("tiny-llama")  # Transformers: Hearth's pipeline masks with llguidance (tests/test_structured_output.py)
    for seed in range(3):
        done = generate(core, prompt=PROMPT, max_new_tokens=10,
                        sampling=SamplingParams(grammar_string='root ::= ("yes" | "no") "."', seed=seed))[1]
        assert done.text in ("yes.", "no.") and done.reason == "stop"


def test_native_chain_refuses_what_it_cannot_honour(manager: ModelManager):
    model = manager.load("tiny-llama.gguf")
    assert model.unsupported_native(SamplingParams(top_a=0.2, tfs=0.9, min_p=0.1)) == ["tfs", "top_a"]
    assert model.native_generate([1, 2], SamplingParams(top_a=0.2), seed=1) is None
    assert model.unsupported_native(SamplingParams(min_p=0.1, dry_multiplier=0.8, adaptive_target=0.4)) == []
    assert model.unsupported_native(SamplingParams(min_p=0.1, xtc_probability=0.5)) == ["xtc"]  # spares EOS


def test_top_tokens_raw_and_after_samplers(manager: ModelManager, core: GenerationCore):
    model = manager.load("tiny-llama.gguf")
    raw = core.top_tokens(PROMPT, n=5)
    probs = torch.softmax(model.logits(model.tokenize(PROMPT)).float(), dim=-1)
    top = torch.topk(probs, 5)
    assert [t.token_id for t in raw] == top.indices.tolist()
    assert [t.logprob for t in raw] == pytest.approx(torch.log(top.values).tolist(), abs=1e-5)
    after = core.top_tokens(PROMPT, n=5, use_samplers=True, sampling=SamplingParams(top_k=3))
    kept = top.values[:3] / top.values[:3].sum()
    assert [t.logprob for t in after[:3]] == pytest.approx(torch.log(kept).tolist(), abs=1e-5)
    assert all(t.logprob == float("-inf") for t in after[3:])


def test_transformers_reads_a_prompt_in_chunks_with_the_same_logits(manager: ModelManager, monkeypatch):
    """A long prompt is fed PREFILL_CHUNK tokens per forward (bounded activation memory), which must not
    change the logits; a changed start rebuilds the cache from scratch, also in chunks."""
    import loaders.transformers_loader as tl

    model = manager.load("tiny-llama")
    ids = model.tokenize(PROMPT + " and a lighthouse keeper who counted the waves every evening")
    whole = model.logits(ids).clone()
    model._caches.clear()  # forget the cache: read the prompt again
    monkeypatch.setattr(tl, "PREFILL_CHUNK", 3)
    evaluated = model.evaluated_tokens
    assert torch.allclose(model.logits(ids), whole, atol=1e-4)
    assert model.evaluated_tokens - evaluated == len(ids)
    other = [ids[0], ids[2], *ids[1:]]  # a different second token: nothing after BOS is reusable
    model.logits(other)
    assert model.evaluated_tokens - evaluated == len(ids) + len(other) - 1
    assert torch.allclose(model.logits(ids), whole, atol=1e-4)
