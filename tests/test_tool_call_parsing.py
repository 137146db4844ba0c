"""Tool calls read from model output: each family's format with realistic replies, streamed deltas that add
up to the whole-reply parse in every chunking, held partial markers, unfinished and malformed calls,
detection over real chat templates, and the frame + schema that forced calls are constrained with."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from webui.prompts.tool_calls import (
    ArgumentsDelta,
    CallStartDelta,
    ContentDelta,
    ToolCallFormat,
    ToolCallStreamer,
    call_frame,
    call_schema,
    detect_tool_format,
    parse_tool_calls,
)

F = ToolCallFormat
_HERE = Path(__file__).resolve().parent
_TEMPLATE_DIRS = (
    _HERE / "data" / "chat_templates",
    Path("/tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates"),
)
TEMPLATES = next((d for d in _TEMPLATE_DIRS if d.is_dir() and any(d.glob("*.jinja"))), None)
CALL_ID = re.compile(r"call_[A-Za-z0-9]{24}")
DS = {
    k: f"<｜{k}｜>"
    for k in ("tool▁calls▁begin", "tool▁calls▁end", "tool▁call▁begin", "tool▁call▁end", "tool▁sep")
}


def _whole(text, fmt, names=None, tools=None):
    content, calls = parse_tool_calls(text, fmt, names, tools=tools)
    for call in calls:
        assert isinstance(json.loads(call.arguments), dict)  # strict JSON, always an object
    return content, [(c.name, c.arguments) for c in calls]


def _streamed(fmt, chunks, names=None, tools=None):
    streamer = ToolCallStreamer(fmt, names, tools=tools)
    deltas = [d for chunk in chunks for d in streamer.feed(chunk)] + streamer.finish()
    content, calls = "", {}
    for delta in deltas:
        if isinstance(delta, ContentDelta):
            content += delta.text
        elif isinstance(delta, CallStartDelta):
            assert delta.index == len(calls) and CALL_ID.fullmatch(delta.id) or delta.id
            calls[delta.index] = [delta.name, ""]
        else:
            assert isinstance(delta, ArgumentsDelta) and delta.index in calls
            calls[delta.index][1] += delta.text
    result = content, [tuple(calls[i]) for i in sorted(calls)]
    assert (streamer.content, [(c.name, c.arguments) for c in streamer.calls]) == result
    return result


def _chunkings(text):
    result = [[text[:k], text[k:]] for k in range(len(text) + 1)] + [list(text)]
    rng = random.Random(len(text))
    for _ in range(4):
        chunks, i = [], 0
        while i < len(text):
            n = rng.randint(1, 8)
            chunks.append(text[i : i + n])
            i += n
        result.append(chunks)
    return result


def _assert_streams_as_whole(text, fmt, names=None, tools=None):
    whole = _whole(text, fmt, names, tools)
    for chunks in _chunkings(text):
        assert _streamed(fmt, chunks, names, tools) == whole, chunks
    return whole


WEATHER = '{"location": "Tokyo", "unit": "celsius"}'
CASES = [
    # Hermes / Qwen2.5 / Qwen3: the shape their templates teach
    (
        F.HERMES,
        f'<tool_call>\n{{"name": "get_weather", "arguments": {WEATHER}}}\n</tool_call>',
        "",
        [("get_weather", WEATHER)],
    ),
    (
        F.HERMES,
        'Let me check both.\n<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}\n</tool_call>',
        "Let me check both.",
        [("get_weather", '{"location": "Paris"}'), ("get_time", '{"tz": "Europe/Paris"}')],
    ),
    # Hermes 2 Pro writes the arguments first
    (
        F.HERMES,
        '<tool_call>\n{"arguments": {"symbol": "TSLA"}, "name": "get_stock_fundamentals"}\n</tool_call>',
        "",
        [("get_stock_fundamentals", '{"symbol": "TSLA"}')],
    ),
    # arguments double-encoded as a string, an extra closing brace, a trailing comma
    (
        F.HERMES,
        '<tool_call>\n{"name": "f", "arguments": "{\\"a\\": 1}"}}\n</tool_call>',
        "",
        [("f", '{"a": 1}')],
    ),
    (
        F.HERMES,
        '<tool_call>\n{"name": "f", "arguments": {"a": [1, 2,], "b": null,}}\n</tool_call>',
        "",
        [("f", '{"a": [1, 2], "b": null}')],
    ),
    # a raw newline inside a string (generated code) comes out escaped
    (
        F.HERMES,
        '<tool_call>\n{"name": "write", "arguments": {"code": "def f():\n\treturn 1"}}\n</tool_call>',
        "",
        [("write", '{"code": "def f():\\n\\treturn 1"}')],
    ),
    # no template format known: a reply that is only the JSON call
    (
        F.HERMES,
        '{"name": "get_weather", "arguments": {"location": "Tokyo"}}',
        "",
        [("get_weather", '{"location": "Tokyo"}')],
    ),
    (F.HERMES, '<tool_calls>[{"name": "f", "arguments": {"a": 1}}]</tool_calls>', "", [("f", '{"a": 1}')]),
    # Qwen3-Coder / Qwen3.5 XML, and the opening tag some models skip
    (
        F.QWEN3_CODER,
        "<tool_call>\n<function=get_weather>\n<parameter=location>\nTokyo\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
        "",
        [("get_weather", '{"location": "Tokyo", "days": 3}')],
    ),
    (
        F.QWEN3_CODER,
        "Let me call it.\n<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n</function>\n"
        "</tool_call>",
        "Let me call it.",
        [("special_function", '{"arg1": 1}')],
    ),
    (
        F.QWEN3_CODER,
        "<tool_call>\n<function=write_file>\n<parameter=content>\nline 1\n  line 2\n</parameter>\n"
        "<parameter=path>\n/tmp/a.txt\n</parameter>\n</function>\n</tool_call>",
        "",
        [("write_file", '{"content": "line 1\\n  line 2", "path": "/tmp/a.txt"}')],
    ),
    # GLM-4.6 (newlines) and GLM-4.7 (none)
    (
        F.GLM,
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Beijing</arg_value>\n"
        "<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n</tool_call>",
        "",
        [("get_weather", '{"city": "Beijing", "days": 2}')],
    ),
    (
        F.GLM,
        "Checking.<tool_call>special_function<arg_key>arg1</arg_key><arg_value>1</arg_value></tool_call>",
        "Checking.",
        [("special_function", '{"arg1": 1}')],
    ),
    (F.GLM, "<tool_call>read_file_diff_md</tool_call>", "", [("read_file_diff_md", "{}")]),
    (
        F.SEED_OSS,
        "<seed:tool_call>\n<function=get_weather>\n<parameter=location>Tokyo</parameter>\n</function>\n"
        "</seed:tool_call>",
        "",
        [("get_weather", '{"location": "Tokyo"}')],
    ),
    # Llama 3.x: bare JSON with "parameters", after <|python_tag|>, several, <function=...>
    (
        F.LLAMA3,
        '{"name": "get_weather", "parameters": {"location": "Tokyo"}}',
        "",
        [("get_weather", '{"location": "Tokyo"}')],
    ),
    (
        F.LLAMA3,
        'Here are some results: <|python_tag|>{"name": "search", "parameters": {"query": "weather"}}',
        "Here are some results:",
        [("search", '{"query": "weather"}')],
    ),
    (
        F.LLAMA3,
        '{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"x": 1}}',
        "",
        [("a", "{}"), ("b", '{"x": 1}')],
    ),
    (
        F.LLAMA3,
        '<function=get_weather>{"location": "Tokyo"}</function>',
        "",
        [("get_weather", '{"location": "Tokyo"}')],
    ),
    # Mistral: v0.3 list with ids (Nemo), [ARGS] (Magistral, Devstral), [CALL_ID] (Small 3.2)
    (
        F.MISTRAL,
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abc123def"}, '
        '{"name": "get_time", "arguments": {}, "id": "ghi456jkl"}]',
        "",
        [("get_weather", '{"city": "Paris"}'), ("get_time", "{}")],
    ),
    (
        F.MISTRAL,
        '[TOOL_CALLS]special_function[ARGS]{"arg1": 1}[TOOL_CALLS]special_function_with_opt[ARGS]'
        '{"arg1": 1, "arg2": 2}',
        "",
        [("special_function", '{"arg1": 1}'), ("special_function_with_opt", '{"arg1": 1, "arg2": 2}')],
    ),
    (
        F.MISTRAL,
        'Sure.[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"}',
        "Sure.",
        [("get_weather", '{"city": "Paris"}')],
    ),
    # DeepSeek R1 (fenced JSON) and V3.1
    (
        F.DEEPSEEK,
        f"{DS['tool▁calls▁begin']}{DS['tool▁call▁begin']}function{DS['tool▁sep']}get_weather\n```json\n"
        f'{{"location": "Tokyo"}}\n```{DS["tool▁call▁end"]}{DS["tool▁calls▁end"]}',
        "",
        [("get_weather", '{"location": "Tokyo"}')],
    ),
    (
        F.DEEPSEEK,
        f'CONTENT{DS["tool▁calls▁begin"]}{DS["tool▁call▁begin"]}get_time{DS["tool▁sep"]}{{"city": "Paris"}}'
        f'{DS["tool▁call▁end"]}{DS["tool▁call▁begin"]}get_weather{DS["tool▁sep"]}{{"city": "Paris"}}'
        f"{DS['tool▁call▁end']}{DS['tool▁calls▁end']}",
        "CONTENT",
        [("get_time", '{"city": "Paris"}'), ("get_weather", '{"city": "Paris"}')],
    ),
    (
        F.KIMI_K2,
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
        '{"city": "Beijing"}<|tool_call_end|><|tool_calls_section_end|>',
        "",
        [("get_weather", '{"city": "Beijing"}')],
    ),
    # gpt-oss: recipient in the channel header, or in the role header as its template writes it
    (
        F.HARMONY,
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
        '{"location":"Tokyo"}<|call|>',
        "",
        [("get_weather", '{"location":"Tokyo"}')],
    ),
    (
        F.HARMONY,
        '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"location":"Tokyo"}',
        "",
        [("get_weather", '{"location":"Tokyo"}')],
    ),
    (F.HARMONY, "<|start|>assistant<|channel|>final<|message|>The answer is 4.", "The answer is 4.", []),
    (
        F.GRANITE,
        '<|tool_call|>[{"name": "get_weather", "arguments": {"location": "Tokyo"}}]',
        "",
        [("get_weather", '{"location": "Tokyo"}')],
    ),
    # MiniMax-M2 and Command R7B, as their templates write a call
    (
        F.MINIMAX,
        'Checking.\n<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n'
        '<parameter name="days">2</parameter>\n</invoke>\n<invoke name="get_time">\n</invoke>\n</minimax:tool_call>',
        "Checking.",
        [("get_weather", '{"city": "Paris", "days": 2}'), ("get_time", "{}")],
    ),
    (
        F.COMMAND_R,
        '<|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "web_search", "parameters": {"query": "ai"}},\n'
        '    {"tool_call_id": "1", "tool_name": "get_time", "parameters": {}}\n]<|END_ACTION|>',
        "",
        [("web_search", '{"query": "ai"}'), ("get_time", "{}")],
    ),
    (
        F.JSON,
        '```json\n[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]\n```',
        "",
        [("a", '{"x": 1}'), ("b", "{}")],
    ),
    (F.JSON, "Plain answer, no calls.", "Plain answer, no calls.", []),
]


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
def test_each_format_parses_and_streams_the_same_in_every_chunking(fmt, text, content, calls):
    assert _whole(text, fmt) == (content, calls)
    assert _assert_streams_as_whole(text, fmt) == (content, calls)


MALFORMED = [
    (F.HERMES, "<tool_call>\nI should call the weather tool.\n</tool_call>"),
    (F.HERMES, "<tool_call>\n{'name': 'get_weather', 'arguments': {}}\n</tool_call>"),
    (F.HERMES, '{"name": "Bob", "age": 42}'),  # a JSON answer, not a call
    (F.HERMES, '<tool_call>\n{"name": "get_wea'),  # cut before the name ended
    (F.JSON, "[1, 2, 3]"),
    (F.MISTRAL, "[TOOL_CALLS] I cannot call tools."),
    (F.DEEPSEEK, DS["tool▁calls▁begin"] + "nothing here"),
    (
        F.HARMONY,
        '<|channel|>commentary to=browser.search<|message|>{"query": "x"}',
    ),  # a built-in, not a function
    (F.LLAMA3, '<|python_tag|>brave_search.call(query="weather")'),
]


@pytest.mark.parametrize(("fmt", "text"), MALFORMED)
def test_text_that_only_looks_like_a_call_stays_content(fmt, text):
    content, calls = _assert_streams_as_whole(text, fmt)
    assert calls == []
    assert content.replace("\n", "") == text.replace("\n", "").strip()


def test_calls_to_unknown_functions_stay_content():
    text = '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call><tool_call>\n{"name": "ok", "arguments": {}}\n</tool_call>'
    content, calls = _assert_streams_as_whole(text, F.HERMES, names=["ok"])
    assert calls == [("ok", "{}")]
    assert content == '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>'


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        (
            F.HERMES,
            'Sure.\n<tool_call>\n{"name": "write", "arguments": {"path": "a.txt", "n": 12.5, "ok": true, '
            '"text": "unicode \\u00e9 and \\"quotes\\""}}\n</tool_call>',
        ),
        (
            F.QWEN3_CODER,
            "<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n<parameter=b>\nx y\n</parameter>\n"
            "</function>\n</tool_call>",
        ),
        (F.GLM, "<tool_call>f\n<arg_key>a</arg_key>\n<arg_value>[1, 2]</arg_value>\n</tool_call>"),
        (F.MISTRAL, '[TOOL_CALLS]f[ARGS]{"a": {"b": [1, {"c": null}]}}'),
        (
            F.DEEPSEEK,
            f'{DS["tool▁calls▁begin"]}{DS["tool▁call▁begin"]}function{DS["tool▁sep"]}f\n```json\n{{"a": 1}}\n```'
            f"{DS['tool▁call▁end']}{DS['tool▁calls▁end']}",
        ),
    ],
)
def test_a_reply_cut_anywhere_closes_its_call_or_keeps_it_as_content(fmt, text):
    """Every prefix is a reply cut by the token limit: a started call is closed into valid JSON where it
    stopped, an unstarted one is content, and streaming agrees with the whole parse."""
    for end in range(len(text) + 1):
        cut = text[:end]
        whole = _whole(cut, fmt)
        for chunks in ([cut[: end // 2], cut[end // 2 :]], list(cut) if end % 5 == 0 else [cut]):
            assert _streamed(fmt, chunks) == whole, cut


def test_an_unfinished_call_keeps_what_it_has():
    assert _whole('<tool_call>\n{"name": "f", "arguments": {"city": "Par', F.HERMES) == (
        "",
        [("f", '{"city": "Par"}')],
    )
    assert _whole('<tool_call>\n{"name": "f", "arguments": {"a": 1, "b', F.HERMES) == (
        "",
        [("f", '{"a": 1}')],
    )
    assert _whole("<tool_call>\n<function=f>\n<parameter=city>\nPar", F.QWEN3_CODER) == (
        "",
        [("f", '{"city": "Par"}')],
    )


def test_a_partial_marker_is_held_back_and_released_when_it_is_not_one():
    streamer = ToolCallStreamer(F.HERMES)
    assert streamer.feed("Hello <tool_") == [ContentDelta("Hello")]
    assert streamer.feed("box> is a tag") == [ContentDelta(" <tool_box> is a tag")]
    streamer = ToolCallStreamer(F.HERMES)
    assert streamer.feed("Checking. <tool_") == [ContentDelta("Checking.")]
    assert streamer.feed('call>\n{"name": "get_weather", ') == []
    deltas = streamer.feed('"arguments": {"location": "To')
    assert [type(d) for d in deltas] == [CallStartDelta, ArgumentsDelta]
    assert (deltas[0].index, deltas[0].name, deltas[1].text) == (0, "get_weather", '{"location": "To')
    assert CALL_ID.fullmatch(deltas[0].id)
    assert streamer.feed('kyo"}}\n</tool_call>') == [ArgumentsDelta(0, 'kyo"}')]
    assert streamer.finish() == []
    assert [c.arguments for c in streamer.calls] == ['{"location": "Tokyo"}']


def test_deltas_convert_to_openai_chunks():
    streamer = ToolCallStreamer(F.HERMES)
    deltas = (
        streamer.feed('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>') + streamer.finish()
    )
    start, args = deltas
    assert start.to_openai() == {
        "index": 0,
        "id": start.id,
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    assert args.to_openai() == {"index": 0, "function": {"arguments": '{"a": 1}'}}


def test_ids_are_the_models_or_new_openai_style_ones():
    _, calls = parse_tool_calls('[TOOL_CALLS][{"name": "f", "arguments": {}, "id": "abc123def"}]', F.MISTRAL)
    assert calls[0].id == "abc123def"
    _, calls = parse_tool_calls(
        "<|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{}<|tool_call_end|>", F.KIMI_K2
    )
    assert calls[0].id == "functions.f:0"
    _, calls = parse_tool_calls('<tool_call>{"name": "f", "arguments": {}}</tool_call>' * 2, F.HERMES)
    assert all(CALL_ID.fullmatch(c.id) for c in calls) and calls[0].id != calls[1].id
    assert calls[0].to_openai() == {
        "id": calls[0].id,
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
    }


def test_xml_values_take_the_type_their_schema_gives():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "zip": {"type": "string"},
                        "n": {"type": "integer"},
                        "tags": {"type": "array"},
                    },
                },
            },
        }
    ]
    text = (
        "<tool_call>\n<function=f>\n<parameter=zip>\n02134\n</parameter>\n<parameter=n>\n7\n</parameter>\n"
        '<parameter=tags>\n["a", "b"]\n</parameter>\n</function>\n</tool_call>'
    )
    _, calls = _assert_streams_as_whole(text, F.QWEN3_CODER, tools=tools)
    assert json.loads(calls[0][1]) == {"zip": "02134", "n": 7, "tags": ["a", "b"]}
    _, calls = parse_tool_calls(
        text.replace("02134", "2134"), F.QWEN3_CODER
    )  # untyped: JSON where it reads as such
    assert json.loads(calls[0].arguments)["zip"] == 2134
    content, calls = parse_tool_calls(
        text, F.QWEN3_CODER, tools=[{"type": "function", "function": {"name": "g"}}]
    )
    assert (content, calls) == (text, [])  # tools also name the functions that may be called


EXPECTED_FORMATS = {
    "Qwen-Qwen2.5-7B-Instruct": F.HERMES,
    "Qwen-Qwen3-0.6B": F.HERMES,
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use": F.HERMES,
    "ibm-granite-granite-4.0": F.HERMES,
    "Qwen3-Coder": F.QWEN3_CODER,
    "Qwen3.5-4B": F.QWEN3_CODER,
    "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16": F.QWEN3_CODER,
    "GLM-4.6": F.GLM,
    "GLM-4.7-Flash": F.GLM,
    "ByteDance-Seed-OSS": F.SEED_OSS,
    "meta-llama-Llama-3.1-8B-Instruct": F.LLAMA3,
    "meta-llama-Llama-3.2-3B-Instruct": F.LLAMA3,
    "mistralai-Mistral-Nemo-Instruct-2407": F.MISTRAL,
    "mistralai-Ministral-3-14B-Reasoning-2512": F.MISTRAL,
    "Mistral-Small-3.2-24B-Instruct-2506": F.MISTRAL,
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": F.DEEPSEEK,
    "deepseek-ai-DeepSeek-V3.1": F.DEEPSEEK,
    "moonshotai-Kimi-K2": F.KIMI_K2,
    "Kimi-K2-Thinking": F.KIMI_K2,
    "openai-gpt-oss-120b": F.HARMONY,
    "ibm-granite-granite-3.3-2B-Instruct": F.GRANITE,
    "MiniMax-M2": F.MINIMAX,
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use": F.COMMAND_R,
    "Cohere2MoE": F.COMMAND_R,
    "google-gemma-2-2b-it": F.HERMES,  # no tools in the template: Hearth's generic prompt asks for Hermes
}


@pytest.mark.skipif(TEMPLATES is None, reason="the real chat template collection is absent")
@pytest.mark.parametrize(("template", "expected"), EXPECTED_FORMATS.items())
def test_detection_over_the_real_templates(template, expected):
    assert detect_tool_format((TEMPLATES / f"{template}.jinja").read_text(encoding="utf-8")) is expected


def test_no_template_means_hermes():
    assert detect_tool_format(None) is F.HERMES
    assert detect_tool_format("") is F.HERMES


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
        },
    },
    {"type": "function", "function": {"name": "get_time"}},
]


def test_call_schema_describes_one_call_object_per_allowed_function():
    one = call_schema(F.HERMES, TOOLS, ["get_weather"])
    assert one == {
        "type": "object",
        "properties": {"name": {"const": "get_weather"}, "arguments": TOOLS[0]["function"]["parameters"]},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }
    both = call_schema(F.LLAMA3, TOOLS, ["get_weather", "get_time"])
    assert [o["properties"]["name"]["const"] for o in both["anyOf"]] == ["get_weather", "get_time"]
    assert both["anyOf"][1]["properties"]["parameters"] == {"type": "object", "properties": {}}
    assert both["anyOf"][1]["required"] == ["name", "parameters"]
    with pytest.raises(ValueError, match="no tool named 'nope'"):
        call_schema(F.HERMES, TOOLS, ["nope"])


@pytest.mark.parametrize("fmt", list(F))
def test_forced_output_in_the_frame_parses_back(fmt):
    """What a grammar from `call_frame` + `call_schema` lets a model write is read back exactly; formats
    without a frame read the Hermes frame."""
    frame = call_frame(fmt) or call_frame(F.HERMES)
    prefix, suffix, separator = frame
    schema = call_schema(fmt, TOOLS, ["get_weather", "get_time"])
    name_key, key = schema["anyOf"][0]["required"]
    objects = [{name_key: "get_weather", key: {"location": "Paris"}}, {name_key: "get_time", key: {}}]
    text = separator.join(prefix + json.dumps(o) + suffix for o in objects)
    content, calls = _assert_streams_as_whole(text, fmt, names=["get_weather", "get_time"])
    assert (content, calls) == ("", [("get_weather", '{"location": "Paris"}'), ("get_time", "{}")])
    if call_frame(fmt) is None:
        assert fmt in (F.DEEPSEEK, F.KIMI_K2, F.HARMONY, F.MINIMAX)
