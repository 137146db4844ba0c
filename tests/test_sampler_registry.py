"""The sampler registry is the one declaration of every sampler: these tests run over all of its entries,
so a sampler added to it is checked without a new test, and a settings field no entry declares fails."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from annotated_types import Ge, Gt, Le, Lt

from loaders import exllamav2_sampling, llamacpp_sampling
from webui.api.schemas import ChatCompletionRequest, CompletionRequest
from webui.sampling import DEFAULT_SAMPLER_PRIORITY, SamplingParams, build_sampler
from webui.sampling.registry import (
    CHAIN_FIELDS,
    REQUEST_SETTINGS,
    SAMPLERS,
    BuildContext,
    SamplerSpec,
    active_chain,
)
from webui.sampling.routing import active_settings
from webui.sampling.vocabulary import Vocabulary

NAMES = [spec.name for spec in SAMPLERS]
FIELDS = SamplingParams.model_fields
#: Token-count fields with no upper bound: any context length is valid.
UNBOUNDED_ABOVE = {"top_k", "repetition_penalty_range", "dry_penalty_last_n"}

#: A toy vocabulary: id 0 is BOS, 1 a newline, 2 ':', then one token per lowercase letter, then filler.
VOCAB = 64
_TEXTS = [b"<s>", b"\n", b":", *(bytes([c]) for c in range(ord("a"), ord("z") + 1))]
_TEXTS += [f"<t{i}>".encode() for i in range(VOCAB - len(_TEXTS))]


def _encode(text: str) -> list[int]:
    return [0, *(_TEXTS.index(ch.encode()) for ch in text)]


VOCABULARY = Vocabulary(VOCAB, _TEXTS.__getitem__, _encode)
#: The history the processors see: 5 6 7 5 6 repeats a 2-gram (DRY, no_repeat_ngram act on token 7).
HISTORY = torch.tensor([[3, 5, 6, 7, 5, 6], [4, 5, 6, 7, 5, 6]])


def _scores() -> torch.Tensor:
    """Two rows of logits falling off steadily (p ~ e^{-0.3 rank}) from token 10 on (so XTC's top choices are
    not the protected newline), the second in another token order: every truncation has a tail to cut."""
    falling = (-0.3 * torch.arange(VOCAB, dtype=torch.float32)).roll(10)
    shuffled = falling[torch.randperm(VOCAB, generator=torch.Generator().manual_seed(3))]
    return torch.stack([falling, shuffled])


def _example(spec: SamplerSpec) -> SamplingParams:
    return SamplingParams.model_validate(
        {**spec.example, "xtc_probability": 1.0} if spec.name == "xtc" else spec.example
    )


def _context() -> BuildContext:
    return BuildContext(
        torch.Generator().manual_seed(0), prompt_ids=(5, 9), vocabulary=VOCABULARY, eos=frozenset({VOCAB - 1})
    )


class _Recorder:
    """Stands in for SamplingParams and records which fields are read."""

    def __init__(self, params: SamplingParams):
        self._params = params
        self.read: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.read.add(name)
        return getattr(self._params, name)


def test_the_default_order_and_the_accepted_names_are_the_registry():
    assert list(DEFAULT_SAMPLER_PRIORITY) == NAMES and len(set(NAMES)) == len(NAMES)
    assert SamplingParams().sampler_priority == NAMES
    assert SamplingParams(sampler_priority=NAMES[::-1]).sampler_priority == NAMES[::-1]
    with pytest.raises(ValueError, match="unknown sampler 'warp'"):
        SamplingParams(sampler_priority=["warp"])


def test_every_field_is_read_by_a_sampler_or_declared_request_level():
    sampler_reads = {name for spec in SAMPLERS for name in spec.reads}
    request_reads = {name for setting in REQUEST_SETTINGS for name in setting.reads}
    declared = sampler_reads | request_reads | CHAIN_FIELDS
    assert set(FIELDS) - declared == set(), "fields no sampler reads and no request-level declaration names"
    assert declared - set(FIELDS) == set(), "declared fields SamplingParams does not have"
    assert not CHAIN_FIELDS & (sampler_reads | request_reads)
    assert [s.name for s in REQUEST_SETTINGS] == [s.name for s in REQUEST_SETTINGS if s.name in s.reads]


@pytest.mark.parametrize("spec", SAMPLERS, ids=NAMES)
def test_an_entry_reads_exactly_the_fields_it_declares(spec: SamplerSpec):
    recorder = _Recorder(_example(spec))
    assert spec.active(recorder)  # type: ignore[arg-type]
    spec.build(recorder, _context())  # type: ignore[arg-type]
    assert recorder.read == set(spec.reads)


@pytest.mark.parametrize("spec", SAMPLERS, ids=NAMES)
def test_its_example_turns_on_that_sampler_alone_and_greedy_skips_it_as_declared(spec: SamplerSpec):
    params = _example(spec)
    assert params.active_samplers() == [spec.name] and active_settings(params) == [spec.name]
    assert [s.name for s in SAMPLERS if s.active(params)] == [spec.name]
    params.do_sample = False
    assert params.active_samplers() == ([] if spec.greedy_skip else [spec.name])
    sampler = build_sampler(_example(spec), vocab_size=VOCAB, eos_token_ids=[VOCAB - 1])
    assert sampler.names == [spec.name]
    assert (sampler.picker is not None) == spec.picker and len(sampler.processors) == (not spec.picker)


@pytest.mark.parametrize("spec", SAMPLERS, ids=NAMES)
def test_a_processor_never_changes_its_input(spec: SamplerSpec):
    """Scores may be a model's cached logits: every sampler returns new scores and leaves its input alone
    (and does change the scores here, so the check means something)."""
    built = spec.build(_example(spec), _context())
    scores = _scores()
    before = scores.clone()
    if spec.picker:
        for row in scores:
            kept = built.keep(row)  # type: ignore[union-attr]
            built.choose(row)  # type: ignore[union-attr]
            assert not torch.equal(kept, row)
    else:
        out = built(HISTORY, scores)  # type: ignore[call-arg, operator]
        assert out.shape == scores.shape and not torch.equal(out, scores)
    assert torch.equal(scores, before)


def test_greedy_skips_and_pickers_shape_the_chain():
    params = SamplingParams(
        temperature=0.7,
        min_p=0.1,
        repetition_penalty=1.1,
        adaptive_target=0.3,
        sampler_priority=["adaptive_p", "temperature", "min_p"],
        temperature_last=True,
    )
    assert [s.name for s in active_chain(params)] == [
        "min_p",
        "repetition_penalty",
        "temperature",
        "adaptive_p",
    ]
    params.do_sample = False
    kept = [s.name for s in SAMPLERS if not s.greedy_skip]
    assert [s.name for s in active_chain(params)] == ["repetition_penalty"] and "repetition_penalty" in kept


def test_native_mappings_name_registered_samplers_and_refuse_the_rest():
    """llama.cpp's chain and ExLlamaV2's sampler each run a registered sampler natively or name it as the
    reason to use the pipeline: a sampler added to the registry is never dropped on a native path."""
    assert llamacpp_sampling.NATIVE <= set(NAMES)
    exl2 = set(exllamav2_sampling._STAGE)
    assert exl2 <= set(NAMES)
    for spec in SAMPLERS:
        params = _example(spec)
        assert (llamacpp_sampling.limits(params) == {}) == (spec.name in llamacpp_sampling.NATIVE), spec.name
        assert (exllamav2_sampling.unsupported(params) == []) == (spec.name in exl2), spec.name
        assert spec.name in llamacpp_sampling.NATIVE or spec.name in llamacpp_sampling.limits(params)
        assert spec.name in exl2 or spec.name in exllamav2_sampling.unsupported(params)


def test_every_field_has_a_one_sentence_description_and_a_range():
    for name, info in FIELDS.items():
        text = info.description or ""
        assert text[:1].isalpha() and text.endswith(".") and "\n" not in text, name
        assert ". " not in text.rstrip("."), f"{name}: one sentence"
        if info.annotation in (int, float):
            bounds = {type(item) for item in info.metadata}
            assert bounds & {Ge, Gt}, f"{name}: no lower bound"
            assert bounds & {Le, Lt} or name in UNBOUNDED_ABOVE, f"{name}: no upper bound"


@pytest.mark.parametrize("model", [CompletionRequest, ChatCompletionRequest])
def test_descriptions_reach_the_api_schema(model):
    properties = model.model_json_schema()["properties"]
    for name, info in FIELDS.items():
        assert properties[name]["description"].startswith(f"{info.description} Default: "), name
