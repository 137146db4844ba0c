"""Reasoning blocks: the marker rules, detection over real chat templates, and the split of a reply into
reasoning and answer, streamed (every chunking) exactly as whole."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from webui.prompts.reasoning import (
    ReasoningFormat,
    ReasoningSplitter,
    detect_reasoning,
    disabled_thinking_prefill,
    reasoning_rules,
    split_reasoning,
    starts_inside,
)
from webui.prompts.templates import TemplateError, render

RULES = {fmt.name: fmt for fmt in reasoning_rules()}
THINK = RULES["think"]
_HERE = Path(__file__).resolve().parent
_TEMPLATE_DIRS = (
    _HERE / "data" / "chat_templates",
    Path("/tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates"),
)
TEMPLATES = next((d for d in _TEMPLATE_DIRS if d.is_dir() and any(d.glob("*.jinja"))), None)
needs_templates = pytest.mark.skipif(TEMPLATES is None, reason="the real chat template collection is absent")


def _template(name: str) -> str:
    assert TEMPLATES is not None
    return (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")


def _chunkings(text: str) -> list[list[str]]:
    """Every split point, one character at a time, and a few random chunkings."""
    result = [[text[:k], text[k:]] for k in range(len(text) + 1)] + [list(text)]
    rng = random.Random(len(text))
    for _ in range(5):
        chunks, i = [], 0
        while i < len(text):
            n = rng.randint(1, 6)
            chunks.append(text[i : i + n])
            i += n
        result.append(chunks)
    return result


def _streamed(text: str, fmt: ReasoningFormat | None, inside: bool, chunks: list[str]) -> tuple[str, str]:
    splitter = ReasoningSplitter(fmt, inside)
    reasoning = content = ""
    for chunk in chunks:
        r, c = splitter.feed(chunk)
        reasoning, content = reasoning + r, content + c
    r, c = splitter.flush()
    assert (splitter.reasoning, splitter.content) == (reasoning + r, content + c)
    return reasoning + r, content + c


CASES = [
    # (format, inside, reply, reasoning, answer): shapes from the templates and peers' fixtures
    (
        "think",
        False,
        "<think>\nThe user wants 2+2.\n\nThat is 4.\n</think>\n\nThe answer is **4**.",
        "The user wants 2+2.\n\nThat is 4.",
        "The answer is **4**.",
    ),
    ("think", True, "Okay, let me think.\n</think>\n\nParis.", "Okay, let me think.", "Paris."),
    (
        "think",
        True,
        "<think>\nThe prompt opened it already.</think>Hi",
        "The prompt opened it already.",
        "Hi",
    ),
    ("think", False, "  \n<think></think>\n\nNo thinking needed.", "", "No thinking needed."),
    (
        "think",
        False,
        "Just an answer, <think> mentioned later.",
        "",
        "Just an answer, <think> mentioned later.",
    ),
    (
        "think",
        True,
        "Cut off by the token limit while still thinking",
        "Cut off by the token limit while still thinking",
        "",
    ),
    ("think", False, "<think>a</think>b</think>c", "a", "b</think>c"),
    ("seed", False, "<seed:think>Budget is fine.</seed:think>Hello!", "Budget is fine.", "Hello!"),
    (
        "mistral",
        False,
        "[THINK]Let me call [TOOL_CALLS]f[ARGS]{} maybe[/THINK][TOOL_CALLS]f[ARGS]{}",
        "Let me call [TOOL_CALLS]f[ARGS]{} maybe",
        "[TOOL_CALLS]f[ARGS]{}",
    ),
    (
        "cohere",
        True,
        "Plan the reply.<|END_THINKING|><|START_RESPONSE|>Hello there.<|END_RESPONSE|>",
        "Plan the reply.",
        "Hello there.",
    ),
    (
        "harmony",
        False,
        "<|channel|>analysis<|message|>User asks 2+2. Simple.<|end|><|start|>assistant<|channel|>final<|message|>4",
        "User asks 2+2. Simple.",
        "4",
    ),
    (
        "harmony",
        False,
        "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary "
        'to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}',
        "Need weather.",
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
        '{"city":"Paris"}',
    ),
    (
        "gemma4",
        False,
        "<|channel>thought\nShort thought.<channel|>The answer.",
        "Short thought.",
        "The answer.",
    ),
    (
        "granite",
        False,
        "<think>Reason here.</think><response>Final answer.</response>",
        "Reason here.",
        "Final answer.",
    ),
    (
        "kimi-k3",
        True,
        "hmm<|close|>think<|sep|><|open|>response<|sep|>Done.<|close|>response<|sep|>",
        "hmm",
        "Done.",
    ),
    (
        "apriel",
        True,
        "Step 1: think.\n[BEGIN FINAL RESPONSE]\nIt is 4.\n[END FINAL RESPONSE]",
        "Step 1: think.",
        "It is 4.\n",
    ),
    ("solar", False, "<|think|>Consider.<|end|><|begin|>assistant<|content|>Answer.", "Consider.", "Answer."),
    ("hunyuan", False, "<think:opensource>Hmm.</think:opensource>\nYes.", "Hmm.", "Yes."),
]


@pytest.mark.parametrize(("name", "inside", "reply", "reasoning", "answer"), CASES)
def test_split_matches_the_format_and_streams_the_same_in_every_chunking(
    name, inside, reply, reasoning, answer
):
    fmt = RULES[name]
    assert split_reasoning(reply, fmt, inside) == (reasoning, answer)
    for chunks in _chunkings(reply):
        assert _streamed(reply, fmt, inside, chunks) == (reasoning, answer), chunks


def test_a_partial_marker_is_held_back_until_the_next_chunk_decides():
    splitter = ReasoningSplitter(THINK)
    assert splitter.feed("<thi") == ("", "")
    assert splitter.feed("nk>Let me see") == ("Let me see", "")
    assert splitter.in_reasoning and not splitter.reasoning_closed
    assert splitter.feed(" </th") == ("", "")  # the space may end the reasoning: held with the marker
    assert splitter.feed("ink>\n\n") == ("", "")
    assert splitter.reasoning_closed and not splitter.in_reasoning
    assert splitter.feed("Done") == ("", "Done")
    assert splitter.flush() == ("", "")
    assert (splitter.reasoning, splitter.content) == ("Let me see", "Done")


def test_text_that_only_looked_like_a_marker_is_released():
    splitter = ReasoningSplitter(THINK)
    assert splitter.feed("<thi") == ("", "")
    assert splitter.feed("s is fine") == ("", "<this is fine")
    splitter = ReasoningSplitter(THINK, inside=True)
    assert splitter.feed("a </thi") == ("a", "")
    assert splitter.flush() == (" </thi", "")  # never closed: all reasoning, nothing lost


def test_an_unclosed_block_is_all_reasoning():
    splitter = ReasoningSplitter(THINK)
    splitter.feed("<think>\nStill going when max_tokens hit")
    assert splitter.in_reasoning
    splitter.flush()
    assert (splitter.reasoning, splitter.content, splitter.reasoning_closed) == (
        "Still going when max_tokens hit",
        "",
        False,
    )


def test_without_a_format_everything_is_answer():
    assert split_reasoning(" <think>x</think>y", None) == ("", " <think>x</think>y")
    assert not starts_inside("<think>\n", None)


def test_rules_file_lists_every_family_with_markers():
    assert {"think", "seed", "mistral", "cohere", "harmony", "gemma4", "granite", "kimi-k3", "apriel"} <= set(
        RULES
    )
    assert (THINK.start, THINK.end) == ("<think>", "</think>")
    assert (RULES["seed"].start, RULES["mistral"].start, RULES["cohere"].end) == (
        "<seed:think>",
        "[THINK]",
        "<|END_THINKING|>",
    )
    assert RULES["harmony"].start == "<|channel|>analysis<|message|>"


EXPECTED_DETECTION = {
    "Qwen-Qwen3-0.6B": "think",
    "Qwen-QwQ-32B": "think",
    "Qwen3.5-4B": "think",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": "think",
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B": "think",
    "deepseek-ai-DeepSeek-V3.1": "think",
    "GLM-4.6": "think",
    "GLM-4.7-Flash": "think",
    "MiniMax-M2": "think",
    "Kimi-K2-Thinking": "think",
    "HuggingFaceTB-SmolLM3-3B": "think",
    "NVIDIA-Nemotron-Nano-v2": "think",
    "ByteDance-Seed-OSS": "seed",
    "mistralai-Ministral-3-14B-Reasoning-2512": "mistral",
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use": "cohere",
    "openai-gpt-oss-120b": "harmony",
    "google-gemma-4-31B-it": "gemma4",
    "ibm-granite-granite-3.3-2B-Instruct": "granite",
    "MiniMax-M3": "minimax-m3",
    "Kimi-K3": "kimi-k3",
    "tencent-Hy3": "hunyuan",
    "unsloth-Apriel-1.5": "apriel",
    "Apriel-1.6-15b-Thinker-fixed": "apriel",
    "upstage-Solar-Open-100B": "solar",
    # no reasoning markers in the template
    "Qwen-Qwen2.5-7B-Instruct": None,
    "Qwen3-Coder": None,
    "meta-llama-Llama-3.1-8B-Instruct": None,
    "mistralai-Mistral-Nemo-Instruct-2407": None,
    "google-gemma-2-2b-it": None,
    "moonshotai-Kimi-K2": None,
}


@needs_templates
@pytest.mark.parametrize(("template", "expected"), EXPECTED_DETECTION.items())
def test_detection_over_the_real_templates(template, expected):
    fmt = detect_reasoning(_template(template))
    assert (fmt.name if fmt else None) == expected


def test_vocabulary_decides_when_the_template_shows_no_markers():
    vocab = ["<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    assert detect_reasoning("{{ messages }}", vocab) == THINK  # MiMo-VL: thinks, template never says so
    assert detect_reasoning(None, vocab) == THINK
    assert detect_reasoning(None, ["<|channel|>", "<|message|>", "<|end|>"]).name == "harmony"
    assert detect_reasoning("{{ messages }}", ["<|im_start|>"]) is None
    assert detect_reasoning(None) is None


def test_rules_come_from_the_file_given(tmp_path):
    rules = tmp_path / "reasoning_rules.yaml"
    rules.write_text(
        "rules:\n  - {name: mine, template: ['<reason>'], start: '<reason>', end: '</reason>'}\n"
    )
    fmt = detect_reasoning("... <reason> ...", rules_path=rules)
    assert fmt == ReasoningFormat("<reason>", "</reason>", "mine")
    assert split_reasoning("<reason>r</reason>a", fmt) == ("r", "a")
    assert detect_reasoning("<think>", rules_path=rules) is None
    rules.write_text("rules:\n  - {name: broken, start: '<x>'}\n")
    with pytest.raises(TemplateError, match="invalid reasoning rules"):
        detect_reasoning("<x>", rules_path=rules)


CONVERSATION = [{"role": "user", "content": "What is 2+2?"}]


@needs_templates
@pytest.mark.parametrize(
    ("template", "kwargs", "inside"),
    [
        ("Qwen-Qwen3-0.6B", {}, False),  # the model opens the block itself
        ("Qwen-Qwen3-0.6B", {"enable_thinking": False}, False),  # an empty block closes it
        ("Qwen-QwQ-32B", {"enable_thinking": True}, True),
        ("Qwen-QwQ-32B", {}, False),  # this copy closes the block unless enable_thinking is set
        ("Qwen3.5-4B", {}, True),
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", {"enable_thinking": True}, True),
        ("llama-cpp-deepseek-r1", {}, True),
        ("GLM-4.7-Flash", {}, True),
        ("GLM-4.7-Flash", {"enable_thinking": False}, False),
        ("openai-gpt-oss-120b", {}, False),
    ],
)
def test_starts_inside_reads_the_rendered_generation_prompt(template, kwargs, inside):
    text = _template(template)
    prompt = render(text, CONVERSATION, add_generation_prompt=True, **kwargs)
    assert starts_inside(prompt, detect_reasoning(text)) is inside


@needs_templates
def test_the_no_thinking_prefill_is_what_qwen3s_own_switch_writes():
    text = _template("Qwen-Qwen3-0.6B")
    on = render(text, CONVERSATION, add_generation_prompt=True)
    off = render(text, CONVERSATION, add_generation_prompt=True, enable_thinking=False)
    assert off == on + disabled_thinking_prefill(detect_reasoning(text))
    assert not starts_inside(off, THINK)


def test_no_thinking_prefill_of_each_family():
    assert disabled_thinking_prefill(THINK) == "<think>\n\n</think>\n\n"
    assert disabled_thinking_prefill(RULES["mistral"]) == "[THINK][/THINK]"
    assert disabled_thinking_prefill(RULES["gemma4"]) == "<|channel>thought\n<channel|>"
    prefill = disabled_thinking_prefill(RULES["harmony"])
    assert split_reasoning(prefill + "4", RULES["harmony"]) == ("", "4")
    for fmt in RULES.values():  # a prefilled reply then starts outside the block, straight at the answer
        prompt = "<prompt>" + disabled_thinking_prefill(fmt)
        assert not starts_inside(prompt, fmt) or not fmt.start
        assert (
            split_reasoning(disabled_thinking_prefill(fmt) + "Answer.", fmt, starts_inside("", fmt))[1]
            == "Answer."
        )
