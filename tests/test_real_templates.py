"""Real models' chat templates (llama.cpp's collection, tests/data/chat_templates) render through Hearth.

Every file renders a plain conversation, and a tool call with its result: through its own tool support
where it reads ``tools``, through the generic Hermes tool prompt where it does not. The rules that make
them render (system text folded, ids mapped, arguments reshaped, calls split) each get a test of their own.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path

import pytest

from webui.prompts.chat_template import (
    render_chat,
    template_caps,
    template_mentions_tools,
    tool_call_ids,
)
from webui.prompts.template_polyfills import (
    ToolCallFormatError,
    fold_system_messages,
    short_tool_call_id,
)
from webui.prompts.templates import TemplateError, load_template, render
from webui.prompts.tool_prompt import apply_tool_prompt, tools_system_text

ROOT = Path(__file__).resolve().parent.parent
COLLECTION = Path(__file__).resolve().parent / "data" / "chat_templates"
TEMPLATE_FILES = sorted(COLLECTION.glob("*.jinja"))

PLAIN = [
    {"role": "system", "content": "You answer briefly (SYSTEM-NEEDLE)."},
    {"role": "user", "content": "What is a kettle (USER-ONE)?"},
    {"role": "assistant", "content": "It boils water (ASSISTANT-ONE)."},
    {"role": "user", "content": "And a teapot (USER-TWO)?"},
]
# As the openai client sends them: arguments a JSON string, content None beside tool calls, and a
# parameter without a description.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
TOOL_TURNS = [
    {"role": "system", "content": "You are a weather bot."},
    {"role": "user", "content": "Weather in Paris (USER-ONE)?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_weather_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {
        "role": "tool",
        "tool_call_id": "call_weather_1",
        "name": "get_weather",
        "content": '{"temperature_c": 22, "sky": "TOOL-RESULT-SUNNY"}',
    },
]


def _template(stem: str) -> str:
    return (COLLECTION / f"{stem}.jinja").read_text(encoding="utf-8")


def _chat(text: str, messages: list[dict], **kwargs) -> str:
    return render_chat(
        text, messages, add_generation_prompt=True, bos_token="<s>", eos_token="</s>", **kwargs
    )


def test_the_collection_and_its_licence_note_are_present() -> None:
    assert len(TEMPLATE_FILES) == 70
    note = (COLLECTION / "README.md").read_text(encoding="utf-8")
    assert "llama.cpp" in note and "0c1e57098" in note and "MIT License" in note


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.stem)
def test_every_real_template_renders_a_plain_conversation(path: Path) -> None:
    out = _chat(path.read_text(encoding="utf-8"), PLAIN, template_name=path.stem)
    for needle in ("SYSTEM-NEEDLE", "USER-ONE", "ASSISTANT-ONE", "USER-TWO"):
        assert needle in out


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.stem)
def test_every_real_template_renders_a_tool_call_and_its_result(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    out = _chat(text, TOOL_TURNS, tools=TOOLS, template_name=path.stem)
    for needle in ("USER-ONE", "TOOL-RESULT-SUNNY", "get_weather", "Paris"):
        assert needle in out
    if not template_mentions_tools(text):  # the generic prompt stands in
        assert "<tools>" in out and '{"name": "get_weather", "arguments": {"city": "Paris"}}' in out


def test_which_templates_read_tools() -> None:
    assert template_mentions_tools(_template("Qwen-Qwen2.5-7B-Instruct"))
    assert template_mentions_tools(_template("fireworks-ai-llama-3-firefunction-v2"))  # as `functions`
    assert not template_mentions_tools(_template("google-gemma-2-2b-it"))
    assert not template_mentions_tools(load_template(ROOT / "templates", "ChatML"))
    reading = [p.stem for p in TEMPLATE_FILES if template_mentions_tools(p.read_text(encoding="utf-8"))]
    assert len(reading) == 63


# -- system role ---------------------------------------------------------------------------------


def test_a_refused_system_role_is_folded_into_the_first_user_turn() -> None:
    gemma2 = _template("google-gemma-2-2b-it")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Capital of France?"},
    ]
    with pytest.raises(TemplateError, match="System role not supported"):
        render(gemma2, messages, True, "<bos>")
    assert not template_caps(gemma2).system_role
    assert render_chat(gemma2, messages, add_generation_prompt=True, bos_token="<bos>") == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\n"
    )
    assert template_caps(_template("Qwen-Qwen2.5-7B-Instruct")).system_role


def test_folding_keeps_every_system_text_and_content_parts() -> None:
    assert fold_system_messages([{"role": "system", "content": "Only rules."}]) == [
        {"role": "user", "content": "Only rules."}
    ]
    parts = [{"type": "text", "text": "Look"}]
    folded = fold_system_messages(
        [
            {"role": "system", "content": "A."},
            {"role": "user", "content": parts},
            {"role": "system", "content": "B."},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "next"},
        ]
    )
    assert folded == [
        {"role": "user", "content": [{"type": "text", "text": "A.\n\n"}, *parts]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "B.\n\nnext"},
    ]


# -- tool-call ids -------------------------------------------------------------------------------


def test_mistral_templates_get_nine_character_ids_mapped_deterministically() -> None:
    nemo = _template("mistralai-Mistral-Nemo-Instruct-2407")
    with pytest.raises(TemplateError, match="length 9"):
        render(nemo, TOOL_TURNS, True, tools=TOOLS)
    short = short_tool_call_id("call_weather_1")
    assert short == "QSs1lIoTg"  # a hash, not per process: the same after a restart, on every request
    assert tool_call_ids(nemo, TOOL_TURNS) == {"call_weather_1": short}
    out = _chat(nemo, TOOL_TURNS, tools=TOOLS)
    assert f'"id": "{short}"' in out and f'"call_id": "{short}"' in out and "call_weather_1" not in out
    assert _chat(nemo, TOOL_TURNS, tools=TOOLS) == out
    small = _chat(_template("Mistral-Small-3.2-24B-Instruct-2506"), TOOL_TURNS, tools=TOOLS)
    assert f"[CALL_ID]{short}" in small and f"[TOOL_RESULTS]{short}" in small
    # The API inverts the map to give a client its own id back.
    back = {template_id: client_id for client_id, template_id in tool_call_ids(nemo, TOOL_TURNS).items()}
    assert back[short] == "call_weather_1"


def test_ids_stay_as_given_where_the_template_takes_any() -> None:
    assert short_tool_call_id("abcDEF123") == "abcDEF123"
    kimi = _template("moonshotai-Kimi-K2")
    assert tool_call_ids(kimi, TOOL_TURNS) == {"call_weather_1": "call_weather_1"}
    assert "call_weather_1" in _chat(kimi, TOOL_TURNS, tools=TOOLS)


# -- arguments -----------------------------------------------------------------------------------


def test_arguments_reach_each_template_in_the_form_it_takes() -> None:
    coder = _template("Qwen3-Coder")  # iterates arguments.items()
    assert template_caps(coder).object_arguments
    assert "<parameter=city>\nParis\n</parameter>" in _chat(coder, TOOL_TURNS, tools=TOOLS)

    functionary = _template("meetkai-functionary-medium-v3.2")  # concatenates them as text
    assert not template_caps(functionary).object_arguments
    as_object = copy.deepcopy(TOOL_TURNS)
    as_object[2]["tool_calls"][0]["function"]["arguments"] = {"city": "Paris"}
    assert '>>>get_weather\n{"city": "Paris"}<|eot_id|>' in _chat(functionary, as_object, tools=TOOLS)

    hermes = _template("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use")  # either
    assert _chat(hermes, as_object, tools=TOOLS) == _chat(hermes, TOOL_TURNS, tools=TOOLS)


def test_malformed_tool_call_arguments_name_the_field() -> None:
    broken = copy.deepcopy(TOOL_TURNS)
    broken[2]["tool_calls"][0]["function"]["arguments"] = '{"city": '
    for stem in ("Qwen3-Coder", "google-gemma-2-2b-it"):  # the template's own support, the fallback
        with pytest.raises(ToolCallFormatError, match=r"messages\[2\]\.tool_calls\[0\]\.function\.arguments"):
            _chat(_template(stem), broken, tools=TOOLS)
    nameless = copy.deepcopy(TOOL_TURNS)
    del nameless[2]["tool_calls"][0]["function"]["name"]
    with pytest.raises(ToolCallFormatError, match=r"messages\[2\]\.tool_calls\[0\]\.function\.name"):
        _chat(_template("Qwen3-Coder"), nameless, tools=TOOLS)


def test_parameter_descriptions_are_filled_for_templates_that_print_them() -> None:
    command_r = _template("CohereForAI-c4ai-command-r-plus-tool_use")
    with pytest.raises(TemplateError, match="description"):
        render(command_r, TOOL_TURNS, True, tools=TOOLS)
    assert template_caps(command_r).tool_descriptions
    assert "city (str): \n" in _chat(command_r, TOOL_TURNS, tools=TOOLS)


def test_parallel_calls_are_split_for_templates_that_take_one_at_a_time() -> None:
    llama = _template("meta-llama-Llama-3.1-8B-Instruct")
    turns = copy.deepcopy(TOOL_TURNS)
    second = {
        "id": "call_weather_2",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    turns[2]["tool_calls"].append(second)
    turns.append(
        {"role": "tool", "tool_call_id": "call_weather_2", "name": "get_weather", "content": "OSLO-RAIN"}
    )
    with pytest.raises(TemplateError, match="single tool-calls"):
        render(llama, turns, True, tools=TOOLS)
    out = _chat(llama, turns, tools=TOOLS)
    order = [out.index(s) for s in ('"Paris"', "TOOL-RESULT-SUNNY", '"Oslo"', "OSLO-RAIN")]
    assert order == sorted(order)
    assert template_caps(_template("Qwen-Qwen2.5-7B-Instruct")).parallel_calls


# -- the generic tool prompt ---------------------------------------------------------------------


def test_a_template_without_tools_gets_the_hermes_tool_prompt() -> None:
    chatml = load_template(ROOT / "templates", "ChatML")
    out = render_chat(chatml, TOOL_TURNS, add_generation_prompt=True, tools=TOOLS)
    assert out == (
        "<|im_start|>system\nYou are a weather bot.\n\n" + tools_system_text(TOOLS) + "<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris (USER-ONE)?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "</tool_call><|im_end|>\n"
        '<|im_start|>user\n<tool_response>\n{"temperature_c": 22, "sky": "TOOL-RESULT-SUNNY"}\n'
        "</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert tools_system_text(TOOLS) == (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + json.dumps(TOOLS[0])
        + "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def test_tool_results_share_one_user_turn_so_roles_still_alternate() -> None:
    turns = [
        {"role": "user", "content": "Two cities?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                },
                {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "b", "content": "rain"},
        {"role": "user", "content": "Thanks"},
    ]
    converted = apply_tool_prompt(turns, None)
    assert [m["role"] for m in converted] == ["user", "assistant", "user"]
    assert converted[1]["content"] == (
        'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>'
    )
    assert converted[2]["content"] == (
        "<tool_response>\nsunny\n</tool_response>\n<tool_response>\nrain\n</tool_response>\nThanks"
    )
    # Gemma 2 demands strict alternation and no system role; the history alone (no tools) still renders.
    out = _chat(_template("google-gemma-2-2b-it"), [{"role": "system", "content": "Rules."}, *turns])
    assert "Rules.\n\nTwo cities?" in out and "# Tools" not in out and "Thanks" in out


# -- variables and the sandbox -------------------------------------------------------------------


def test_template_variables_peers_pass() -> None:
    qwen3 = _template("Qwen-Qwen3-0.6B")
    assert _chat(qwen3, PLAIN, enable_thinking=False).endswith("<think>\n\n</think>\n\n")
    assert _chat(qwen3, PLAIN, enable_thinking=None).endswith("<|im_start|>assistant\n")  # None: unset

    firefunction = _template("fireworks-ai-llama-3-firefunction-v2")
    today = datetime.now().strftime("%b %d %Y")
    assert f"Available functions as JSON spec:\n\nToday is {today}." in _chat(firefunction, PLAIN)
    assert '"name": "get_weather"' in _chat(firefunction, TOOL_TURNS, tools=TOOLS)

    llama = _template("meta-llama-Llama-3.1-8B-Instruct")
    assert "Today Date: 26 Jul 2024" in _chat(llama, PLAIN, date_string="26 Jul 2024")
    assert f"Today Date: {datetime.now().strftime('%d %b %Y')}" in _chat(llama, PLAIN)


def test_template_code_may_change_what_it_builds_but_not_the_callers_data() -> None:
    assert (
        render(
            "{% set xs = [] %}{% set _ = xs.append('a') %}{% set d = {} %}"
            "{% set _ = d.update({'k': 'v'}) %}{{ xs | join }}{{ d.k }}",
            [],
            False,
        )
        == "av"
    )
    meddler = (
        "{{ messages[0].content }}|{% set _ = messages[0].update({'content': 'changed'}) %}"
        "{% set _ = messages.append({}) %}{% if tools %}{% set _ = tools.pop() %}{% endif %}"
        "{% for m in messages if m.tool_calls %}{% set _ = m.tool_calls[0].function.update(name='x') %}"
        "{% endfor %}"
        "{{ messages[0].content }} {{ messages | length }} {{ tools | length }}"
    )
    messages, tools = copy.deepcopy(TOOL_TURNS), copy.deepcopy(TOOLS)
    assert render_chat(meddler, messages, add_generation_prompt=False, tools=tools) == (
        "You are a weather bot.|changed 5 0"
    )
    for stem in (
        "Kimi-K2-Instruct",
        "mistralai-Mistral-Nemo-Instruct-2407",
        "google-gemma-2-2b-it",
        "meetkai-functionary-medium-v3.2",
        "meta-llama-Llama-3.1-8B-Instruct",
    ):
        _chat(_template(stem), messages, tools=tools)
    popper = "{% for m in messages if m.tool_calls %}{% set _ = m.tool_calls.pop() %}{% endfor %}ok"
    assert render(popper, messages, False) == "ok"
    assert messages == TOOL_TURNS and tools == TOOLS


def test_json_filters_of_real_templates() -> None:
    text = "{{ [1, 2] | map('string') | tojson }}|{{ ('{\"a\": 1}' | from_json).a }}"
    assert render(text, [], False) == '["1", "2"]|1'
    with pytest.raises(TemplateError):
        render("{{ messages.__class__.__mro__ }}", [], False)  # the sandbox still guards attributes
