"""Tool calling, reasoning and structured output through /v1/chat/completions, as the official openai
client uses them (issue 16), on tiny random-weight models with real model templates.

Random weights do not choose to call a tool or to think, so the tests force what they check: a tool call by
`tool_choice` (a grammar writes it, on every loader), reasoning by a template whose generation prompt opens
the block (DeepSeek-R1's) and a thinking budget that closes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import openai
import pytest

from tests.test_api_server import Served, assert_error, serve_api

TEMPLATES = Path(__file__).parent / "data" / "chat_templates"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris", "Lyon", "Nice"]}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "integer", "minimum": -12, "maximum": 14}},
                       "required": ["zone"], "additionalProperties": False},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
GREEDY = {"temperature": 0}


def _serve(models_dir: Path, user_data: Path, model: str) -> Iterator[Served]:
    templates = user_data / "templates"
    templates.mkdir(parents=True)
    for name, source in (("qwen25", "Qwen-Qwen2.5-7B-Instruct"), ("r1", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B")):
        (templates / f"{name}.jinja").write_text((TEMPLATES / f"{source}.jinja").read_text(encoding="utf-8"))
    with serve_api(models_dir, user_data, model=model) as served:
        yield served


@pytest.fixture(scope="module")
def gguf(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """llama.cpp: forced calls run on its native grammar sampler."""
    yield from _serve(models_dir, tmp_path_factory.mktemp("user_data"), "tiny-llama.gguf")


@pytest.fixture(scope="module")
def hf(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Transformers: forced calls run through Hearth's pipeline and the constrained-decoding library."""
    yield from _serve(models_dir, tmp_path_factory.mktemp("user_data"), "tiny-llama")


def _client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.base}/v1", api_key="none", max_retries=0)


def _valid(schema: dict[str, Any], arguments: str) -> dict[str, Any]:
    value = json.loads(arguments)
    jsonschema_rs.validate(schema, value)
    return value


def _stream(client: openai.OpenAI, **kwargs: Any) -> dict[str, Any]:
    """A streamed reply put together from its deltas, as a client would."""
    reasoning, content, calls, reasons, first_call_deltas = "", "", {}, [], []
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        choice = chunk.choices[0]
        delta = choice.delta
        reasoning += getattr(delta, "reasoning_content", None) or ""
        content += delta.content or ""
        for call in delta.tool_calls or ():
            if call.index not in calls:
                first_call_deltas.append(call)
                calls[call.index] = {"id": call.id, "name": call.function.name, "arguments": ""}
            calls[call.index]["arguments"] += call.function.arguments or ""
        if choice.finish_reason:
            reasons.append(choice.finish_reason)
    return {"reasoning": reasoning, "content": content, "calls": [calls[i] for i in sorted(calls)],
            "finish_reasons": reasons, "first_call_deltas": first_call_deltas}


# -- tool calling ------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["gguf", "hf"])
def test_full_tool_loop_with_the_openai_client(request: pytest.FixtureRequest, which: str):
    """call -> tool result -> answer, the way an agent loop runs it."""
    served: Served = request.getfixturevalue(which)
    client = _client(served)
    body = {"instruction_template": "qwen25", **GREEDY}
    first = client.chat.completions.create(
        model="", messages=ASK, tools=[WEATHER, TIME], max_tokens=200, parallel_tool_calls=False,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, extra_body=body)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and len(choice.message.tool_calls) >= 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    arguments = _valid(WEATHER["function"]["parameters"], call.function.arguments)

    history = [*ASK, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, **arguments})}]
    with served.client() as http:
        prompt = http.post("/v1/internal/chat-prompt", json={"messages": history, "tools": [WEATHER, TIME],
                                                             "max_tokens": 16, **body}).json()["prompt"]
    assert '"name": "get_weather"' in prompt and "<tool_response>" in prompt and '"temperature": 21' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    second = client.chat.completions.create(model="", messages=history, tools=[WEATHER, TIME], tool_choice="none",
                                            max_tokens=6, extra_body=body)
    answer = second.choices[0]
    assert answer.finish_reason in ("stop", "length") and answer.message.tool_calls is None
    assert isinstance(answer.message.content, str)


@pytest.mark.parametrize("which", ["gguf", "hf"])
def test_streamed_calls_are_openai_deltas_equal_to_the_whole_reply(request: pytest.FixtureRequest, which: str):
    client = _client(request.getfixturevalue(which))
    kwargs = {"model": "", "messages": ASK, "tools": [WEATHER, TIME], "tool_choice": "required", "max_tokens": 200,
              "parallel_tool_calls": False, "extra_body": {"instruction_template": "qwen25", **GREEDY}}
    whole = client.chat.completions.create(**kwargs).choices[0]
    streamed = _stream(client, **kwargs)
    assert streamed["finish_reasons"] == ["tool_calls"] == [whole.finish_reason]
    assert len(whole.message.tool_calls) == 1 and len(streamed["calls"]) == 1
    first = streamed["first_call_deltas"][0]
    assert first.id and first.type == "function" and first.function.name in ("get_weather", "get_time")
    assert [(c["name"], c["arguments"]) for c in streamed["calls"]] == [
        (c.function.name, c.function.arguments) for c in whole.message.tool_calls]
    tool = WEATHER if first.function.name == "get_weather" else TIME
    _valid(tool["function"]["parameters"], streamed["calls"][0]["arguments"])
    assert streamed["content"].strip() == ""


@pytest.mark.parametrize("which", ["gguf", "hf"])
def test_forced_arguments_keep_every_schema_keyword(request: pytest.FixtureRequest, which: str):
    """Integer bounds and string lengths hold on every path (llguidance writes the JSON), sampled too."""
    client = _client(request.getfixturevalue(which))
    note = {"type": "function", "function": {"name": "note", "parameters": {
        "type": "object", "properties": {"text": {"type": "string", "minLength": 2, "maxLength": 6},
                                         "zone": {"type": "integer", "minimum": -12, "maximum": 14}},
        "required": ["text", "zone"], "additionalProperties": False}}}
    for seed in (1, 2, 3):
        reply = client.chat.completions.create(
            model="", messages=ASK, tools=[note, TIME], max_tokens=120, parallel_tool_calls=False,
            tool_choice={"type": "function", "function": {"name": "note"}},
            extra_body={"instruction_template": "qwen25", "temperature": 1.0, "seed": seed}).choices[0]
        assert reply.finish_reason == "tool_calls", reply
        _valid(note["function"]["parameters"], reply.message.tool_calls[0].function.arguments)


def test_a_template_without_tools_gets_the_generic_tool_prompt(gguf: Served):
    """The tiny model's own template knows no tools: Hearth describes them (Hermes convention) and still
    reads the forced call back."""
    client = _client(gguf)
    with gguf.client() as http:
        prompt = http.post("/v1/internal/chat-prompt", json={"messages": ASK, "tools": [WEATHER], "max_tokens": 16}).json()["prompt"]
    assert "<tools>" in prompt and '"get_weather"' in prompt and "<tool_call>" in prompt
    reply = client.chat.completions.create(model="", messages=ASK, tools=[WEATHER], tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=200, extra_body=GREEDY).choices[0]
    assert reply.finish_reason == "tool_calls" and reply.message.tool_calls[0].function.name == "get_weather"


# -- reasoning ---------------------------------------------------------------------------------------
def test_reasoning_content_is_split_from_the_answer(gguf: Served):
    """DeepSeek-R1's template opens <think>; a budget of 4 tokens closes it, then the answer follows."""
    client = _client(gguf)
    body = {"instruction_template": "r1", "thinking_budget": 4, **GREEDY}
    whole = client.chat.completions.create(model="", messages=ASK, max_tokens=30, extra_body=body).choices[0]
    message = whole.message.model_dump()
    assert message["reasoning_content"] and "</think>" not in message["reasoning_content"]
    assert message["content"] and "<think>" not in message["content"] and "</think>" not in message["content"]
    streamed = _stream(client, model="", messages=ASK, max_tokens=30, extra_body=body)
    assert (streamed["reasoning"], streamed["content"]) == (message["reasoning_content"], message["content"])


def test_thinking_off_closes_the_block_in_the_prompt(gguf: Served):
    with gguf.client() as http:
        def prompt(**fields: Any) -> str:
            return http.post("/v1/internal/chat-prompt", json={"messages": ASK, "instruction_template": "r1",
                                                               **fields}).json()["prompt"]

        assert prompt().endswith("<think>\n")
    client = _client(gguf)
    for off in ({"enable_thinking": False}, {"chat_template_kwargs": {"enable_thinking": False}}):
        reply = client.chat.completions.create(model="", messages=ASK, max_tokens=6,
                                               extra_body={"instruction_template": "r1", **off, **GREEDY})
        assert reply.choices[0].message.model_dump().get("reasoning_content") is None
        assert reply.usage.prompt_tokens > 0


# -- structured output -------------------------------------------------------------------------------
PERSON = {"type": "object", "properties": {"name": {"enum": ["Ann", "Bob"]},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.mark.parametrize("which", ["gguf", "hf"])
def test_response_format_on_both_routes(request: pytest.FixtureRequest, which: str):
    client = _client(request.getfixturevalue(which))
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    chat = client.chat.completions.create(model="", messages=ASK, response_format=fmt, max_tokens=120,
                                          extra_body=GREEDY).choices[0]
    assert chat.finish_reason == "stop"
    _valid(PERSON, chat.message.content)
    any_object = client.chat.completions.create(model="", messages=ASK, response_format={"type": "json_object"},
                                                max_tokens=120, extra_body={"temperature": 0.7, "seed": 3}).choices[0]
    if any_object.finish_reason == "stop":  # a random model may fill an object past max_tokens
        assert isinstance(json.loads(any_object.message.content), dict)
    text = client.completions.create(model="", prompt="Person:", max_tokens=120, extra_body={"response_format": fmt,
                                                                                             **GREEDY}).choices[0]
    assert text.finish_reason == "stop"
    _valid(PERSON, text.text)


# -- bad input: a 400 naming the field ---------------------------------------------------------------
def test_bad_tool_requests_are_400s_naming_the_field(gguf: Served):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
    cases = [
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [WEATHER], "mode": "chat"}, "tools"),
        ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_x", "content": "21"}]}, "messages.1.tool_call_id"),
        ({"messages": [*ASK, {"role": "tool", "content": "21"}]}, "messages.1"),
        ({"messages": [*ASK, {"role": "assistant", "tool_calls": [{**call, "function": {"name": "get_weather",
                                                                                         "arguments": "{not json"}}]},
                       {"role": "tool", "tool_call_id": "call_1", "content": "21"}], "tools": [WEATHER],
          "instruction_template": "qwen25"}, "arguments"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
         "json_schema"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"response_format": {"type": "json_object"}, "grammar_string": 'root ::= "a"'}, "response_format"),
        ({"grammar_string": "root ::= (", "max_tokens": 4}, "grammar_string"),
        ({"tools": [WEATHER], "tool_choice": "required", "grammar_string": 'root ::= "a"'}, "tool_choice"),
    ]
    with gguf.client() as http:
        for fields, param in cases:
            response = http.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 4, **fields})
            error = assert_error(response, 400)
            assert param in (error["param"] or "") or param in error["message"], (fields, error)
