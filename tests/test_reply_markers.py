"""Markers a reply is split by reach the readers, and a thinking budget closes reasoning, on real loaders.

Reasoning and tool-call markers are special tokens in many models (`[TOOL_CALLS]`, `<|channel|>`); text
is normally decoded without them, so a request that splits its reply asks for them written out
(`special_tokens`). The tiny models' special tokens (`<unk>`, `<s>`) stand in for such markers.
"""

from __future__ import annotations

import pytest

from webui.generation import GenerationCore, GenerationRequest
from webui.models import ModelManager
from webui.sampling import SamplingParams
from webui.thinking_budget import ThinkingBudget


@pytest.fixture(params=["tiny-llama.gguf", "tiny-llama"], ids=["llama.cpp", "transformers"])
def core(request: pytest.FixtureRequest, manager: ModelManager) -> GenerationCore:
    manager.load(request.param)
    return GenerationCore(manager)


def test_special_tokens_are_written_out_only_when_asked(core: GenerationCore):
    model = core.models.require()
    unk = 0
    assert "<unk>" in model.detokenize_special([unk]) and "<unk>" not in model.detokenize([unk])
    forced = SamplingParams(temperature=0, logit_bias={str(unk): 100.0})
    shown = core.generate(GenerationRequest(prompt="Hello", max_new_tokens=3, sampling=forced, special_tokens=True))
    hidden = core.generate(GenerationRequest(prompt="Hello", max_new_tokens=3, sampling=forced))
    assert shown.text == "<unk>" * 3 and hidden.text == ""


@pytest.mark.parametrize("native", [True, False], ids=["native", "pipeline"])
def test_thinking_budget_closes_the_block_after_n_tokens(core: GenerationCore, native: bool):
    """The prompt opened the block; after 5 tokens `</think>` and a blank line follow, then the answer."""
    model = core.models.require()
    sampling = SamplingParams(temperature=0)
    base = {"prompt": "Once upon a time <think>\n", "max_new_tokens": 40, "sampling": sampling,
            "logprobs": 0 if native else 1}
    free = core.generate(GenerationRequest(**base))
    budget = ThinkingBudget(tokens=5, end="</think>")
    held = core.generate(GenerationRequest(**base, thinking_budget=budget))
    closing = model.tokenize("</think>\n\n", add_bos=False)
    assert held.token_ids[:5] == free.token_ids[:5]  # the same reasoning up to the budget
    assert held.token_ids[5 : 5 + len(closing)] == closing
    assert held.text.startswith(model.detokenize(free.token_ids[:5]) + "</think>\n\n")
    assert len(held.token_ids) == 40  # the answer went on after the forced tokens
    # the answer is what the model says after the closed block, as if the prompt had held it
    reread = core.generate(GenerationRequest(**{**base, "prompt": base["prompt"] + held.text[: held.text.index("\n\n") + 2],
                                                "max_new_tokens": 5}))
    assert held.token_ids[5 + len(closing): 10 + len(closing)] == reread.token_ids[:5]


def test_a_budget_waits_for_the_model_to_open_the_block(core: GenerationCore):
    """With `start`, the count begins where the model writes the start marker; a reply without one runs free."""
    sampling = SamplingParams(temperature=0)
    base = {"prompt": "Once upon a time", "max_new_tokens": 12, "sampling": sampling}
    free = core.generate(GenerationRequest(**base))
    held = core.generate(GenerationRequest(**base, thinking_budget=ThinkingBudget(tokens=2, end="</think>",
                                                                                  start="<think>")))
    assert held.token_ids == free.token_ids
