"""Structured output on every loader: a JSON schema or a GBNF grammar shapes what tiny random-weight models
write. Random weights left alone never write JSON; constrained, every reply validates against the schema
(checked by a JSON-schema validator, jsonschema_rs) and ends because the grammar is complete. Through
Transformers, llamacpp_HF and llama.cpp (its native grammar sampler, and its pipeline when logprobs or banned
strings send a request there), greedy and sampled; bad grammars and schemas are errors naming the field
before any token is generated."""

from __future__ import annotations

import json
import re

import jsonschema_rs
import pytest
from pydantic import ValidationError

from webui.errors import GenerationError
from webui.events import Finished, TextChunk
from webui.generation import GenerationCore, GenerationRequest
from webui.input_errors import InvalidGrammar, InvalidSchema
from webui.models import ModelManager
from webui.sampling import SamplingParams, constraints
from webui.sampling.constraints import (
    ANY_JSON_OBJECT,
    framed_json_grammar,
    json_schema_grammar,
    model_tokenizer,
)
from webui.sampling.routing import route

pytest_plugins = ["tests.ui_harness"]

PROMPT = "Once upon a time there was a little village"
#: Required string, integer, enum and array fields; lengths are bounded so random weights finish.
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer"},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "tags"],
    "additionalProperties": False,
}
VALIDATOR = jsonschema_rs.validator_for(SCHEMA)
#: (model, loader, request fields, the path the request takes)
PATHS = {
    "transformers": ("tiny-llama", "Transformers", {}, "pipeline"),
    "llamacpp_hf": ("tiny-llama.gguf", "llamacpp_HF", {}, "pipeline"),
    "llamacpp_native": ("tiny-llama.gguf", "llama.cpp", {}, "native"),
    "llamacpp_pipeline": ("tiny-llama.gguf", "llama.cpp", {"logprobs": 2}, "pipeline"),
}
SAMPLINGS = {
    "greedy": [{"do_sample": False}],
    "sampled": [{"temperature": 1.0, "seed": s} for s in (1, 2, 3)],
}


@pytest.fixture
def core(manager: ModelManager) -> GenerationCore:
    return GenerationCore(manager)


def generate(
    core: GenerationCore, max_new_tokens: int = 300, request: dict | None = None, **sampling
) -> Finished:
    return core.generate(
        GenerationRequest(
            prompt=PROMPT,
            max_new_tokens=max_new_tokens,
            sampling=SamplingParams(**sampling),
            **(request or {}),
        )
    )


def load(manager: ModelManager, path: str, params: SamplingParams) -> dict:
    name, loader, request, expected = PATHS[path]
    model = manager.load(name, loader=loader)
    assert route(model, params, logprobs=request.get("logprobs", 0)).path == expected
    return request


@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("path", PATHS)
def test_random_weights_write_json_that_validates_against_the_schema(manager, core, path, sampling):
    request = load(manager, path, SamplingParams(json_schema=SCHEMA))
    plain = generate(core, 40, request, **SAMPLINGS[sampling][0])
    with pytest.raises(ValueError):
        json.loads(plain.text)  # left alone, the weights write no JSON
    for settings in SAMPLINGS[sampling]:
        done = generate(core, request=request, json_schema=SCHEMA, **settings)
        assert done.reason == "stop" and done.token_ids[-1] in manager.require().eos_token_ids, done.text
        VALIDATOR.validate(json.loads(done.text))


@pytest.mark.parametrize("path", ["transformers", "llamacpp_hf", "llamacpp_native"])
def test_a_gbnf_grammar_shapes_the_reply_and_ends_it_even_with_eos_banned(manager, core, path):
    grammar = 'root ::= "[" [0-9] ("," [0-9]){2} "] " ("yes" | "no")'
    request = load(manager, path, SamplingParams(grammar_string=grammar))
    for seed in range(3):
        done = generate(core, 40, request, grammar_string=grammar, seed=seed, ban_eos_token=True)
        assert done.reason == "stop" and re.fullmatch(r"\[\d,\d,\d\] (yes|no)", done.text), done.text


@pytest.mark.parametrize("path", ["transformers", "llamacpp_native"])
def test_a_lark_grammar_runs_in_llguidance_on_both_paths(manager, core, path):
    grammar = '%llguidance {}\nstart: "id-" /[0-9]{3}/ "!"'
    request = load(manager, path, SamplingParams(grammar_string=grammar))
    for seed in range(3):
        done = generate(core, 20, request, grammar_string=grammar, seed=seed)
        assert done.reason == "stop" and re.fullmatch(r"id-\d{3}!", done.text), done.text


@pytest.mark.parametrize("path", ["transformers", "llamacpp_pipeline"])
def test_banned_strings_and_a_schema_together(manager, core, path):
    request = load(manager, path, SamplingParams(json_schema=SCHEMA))
    free = generate(core, request=request, json_schema=SCHEMA, do_sample=False)
    value = json.loads(free.text)["name"]
    assert len(value) >= 2
    phrase = value[:2]  # the greedy reply writes it; banned, the reply must find another valid way
    chunks = [
        e
        for e in core.stream(
            GenerationRequest(
                prompt=PROMPT,
                max_new_tokens=300,
                sampling=SamplingParams(json_schema=SCHEMA, do_sample=False, banned_strings=[phrase]),
                **request,
            )
        )
        if isinstance(e, TextChunk | Finished)
    ]
    done = chunks[-1]
    assert done.reason == "stop" and phrase not in done.text and done.text != free.text
    assert "".join(c.text for c in chunks[:-1]) == done.text
    VALIDATOR.validate(json.loads(done.text))


@pytest.mark.parametrize("path", ["transformers", "llamacpp_native"])
def test_schema_keywords_beyond_llama_cpp_s_converter_hold_on_both_paths(manager, core, path):
    """llama-cpp-python's GBNF converter would drop integer bounds; llguidance, natively too, keeps them."""
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 3, "maximum": 7}},
        "required": ["n"],
        "additionalProperties": False,
    }
    request = load(manager, path, SamplingParams(json_schema=schema))
    for seed in range(4):
        done = generate(core, 60, request, json_schema=schema, seed=seed)
        assert done.reason == "stop" and 3 <= json.loads(done.text)["n"] <= 7


@pytest.mark.parametrize("path", ["transformers", "llamacpp_native"])
def test_framed_json_grammar_forces_a_tool_call_on_both_paths(manager, core, path):
    # llguidance writes the JSON on both paths: a length counted in characters holds even for random byte
    # tokens (llama.cpp's GBNF sampler decodes UTF-8 leniently and can break it)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 10}},
        "required": ["city"],
        "additionalProperties": False,
    }
    prefix, suffix = '<tool_call>\n{"name": "get_weather", "arguments": ', "}\n</tool_call>\n"
    grammar = framed_json_grammar(schema, prefix, suffix, repeat=True)
    request = load(manager, path, SamplingParams(grammar_string=grammar))
    call = re.compile(re.escape(prefix) + r"(.*?)" + re.escape(suffix), re.DOTALL)
    validator = jsonschema_rs.validator_for(schema)
    for settings in ({"do_sample": False}, {"seed": 4}):
        once = generate(
            core, 300, request, grammar_string=framed_json_grammar(schema, prefix, suffix), **settings
        )
        (arguments,) = call.findall(once.text)
        assert once.reason == "stop" and once.text == prefix + arguments + suffix
        validator.validate(json.loads(arguments))
        # repeated: random weights may go on calling until the token limit; every finished call is whole
        calls = call.findall(generate(core, 300, request, grammar_string=grammar, **settings).text)
        assert calls and all(validator.is_valid(json.loads(arguments)) for arguments in calls)


def test_json_object_schema_and_its_text_forms():
    assert SamplingParams(json_schema=json.dumps(SCHEMA)).json_schema == SCHEMA
    assert SamplingParams(json_schema=dict(ANY_JSON_OBJECT)).constrained
    for none in ("", "  ", {}, None):  # SillyTavern sends {} for "no schema"
        assert SamplingParams(json_schema=none).json_schema is None
    assert "root ::= object" in json_schema_grammar(ANY_JSON_OBJECT)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"json_schema": {"type": "colour"}}, "Invalid type: colour"),
        ({"json_schema": '{"type": '}, "not valid JSON"),
        ({"json_schema": {"not": {"type": "string"}}}, "Unimplemented keys"),
        ({"json_schema": SCHEMA, "grammar_string": 'root ::= "a"'}, "grammar_string and json_schema"),
    ],
)
def test_a_bad_schema_is_refused_where_it_is_typed_naming_the_field(fields, message):
    with pytest.raises(ValidationError) as caught:
        SamplingParams(**fields)
    error = caught.value.errors()[0]
    assert error["loc"] == ("json_schema",) and message in error["msg"]


def test_setting_both_one_after_the_other_is_refused_too():
    params = SamplingParams(json_schema=SCHEMA)
    with pytest.raises(ValidationError, match="grammar_string and json_schema"):
        params.grammar_string = 'root ::= "a"'


def test_helpers_refuse_what_llama_cpp_cannot_convert():
    with pytest.raises(InvalidSchema) as caught:
        json_schema_grammar({"type": "string", "pattern": "[a-"})
    assert caught.value.param == "json_schema"


@pytest.mark.parametrize("path", PATHS)
def test_a_grammar_that_does_not_parse_is_an_error_naming_it_before_any_token(manager, core, path):
    request = load(manager, path, SamplingParams(grammar_string='root ::= "a"'))
    for grammar in ('root ::= ("yes" | "no"', 'root ::= "a" | missing-rule'):
        request_ = GenerationRequest(
            prompt=PROMPT, max_new_tokens=8, sampling=SamplingParams(grammar_string=grammar), **request
        )
        events = []
        with pytest.raises(InvalidGrammar) as caught:
            for event in core.stream(request_):
                events.append(event)
        assert caught.value.param == "grammar_string" and not events


@pytest.mark.parametrize("path", ["transformers", "llamacpp_native"])
def test_bans_that_leave_the_grammar_nothing_are_an_error_not_a_crash(manager, core, path):
    request = load(manager, path, SamplingParams(grammar_string='root ::= "y"'))
    (only,) = manager.require().tokenize("y", add_bos=False)
    with pytest.raises(GenerationError, match="grammar"):
        generate(core, 5, request, grammar_string='root ::= "y"', custom_token_bans=[only], do_sample=False)
    assert generate(core, 5, request, grammar_string='root ::= "y"').text == "y"  # the model is still fine


def test_the_vocabulary_is_read_once_per_model(manager, core, monkeypatch):
    built = []
    real = constraints._build_tokenizer
    monkeypatch.setattr(constraints, "_build_tokenizer", lambda model: built.append(model) or real(model))
    model = manager.load("tiny-llama", loader="Transformers")
    for seed in range(3):
        generate(core, 60, json_schema=SCHEMA, seed=seed)
    assert built == [model] and model_tokenizer(model) is model_tokenizer(model)
    assert constraints._hf_fast_tokenizer(model) is model.hf_tokenizer  # read exactly from the HF tokenizer
    manager.load("tiny-llama.gguf", loader="llamacpp_HF")
    generate(core, 60, json_schema=SCHEMA, do_sample=False)
    assert len(built) == 2  # another model, its own vocabulary


# -- the Parameters tab's JSON schema box ----------------------------------------------------------------
def test_the_schema_box_sits_beside_the_grammar_box_and_names_a_bad_schema() -> None:
    import gradio as gr

    from webui.ui.context import GENERATION_DEFAULTS
    from webui.ui.generation_panel import GROUPS, GenerationControls, field_widget, generation_widgets

    group = GROUPS["Grammar and bans"]
    assert group.index("json_schema") == group.index("grammar_string") + 1
    with gr.Blocks():
        widgets = generation_widgets(GENERATION_DEFAULTS)
        for name, info in SamplingParams.model_fields.items():
            widgets[name] = field_widget(name, info, getattr(SamplingParams(), name))
    assert isinstance(widgets["json_schema"], gr.Textbox) and widgets["json_schema"].lines > 1
    controls = GenerationControls(widgets)
    values = {n: w.value for n, w in widgets.items()}
    assert (
        controls.params(*(values | {"json_schema": json.dumps(SCHEMA)}).values())["sampling"]["json_schema"]
        == SCHEMA
    )
    assert controls.params(*(values | {"json_schema": ""}).values())["sampling"]["json_schema"] is None
    for text, why in (('{"type": "colour"}', "Invalid type: colour"), ("{oops", "JSON")):
        with pytest.raises(gr.Error, match=f"json_schema: .*{why}"):
            controls.params(*(values | {"json_schema": text}).values())


@pytest.mark.browser
def test_a_bad_schema_typed_in_the_box_is_one_toast_naming_it(page, ui_server) -> None:
    page.get_by_role("tab", name="Parameters", exact=True).click()
    page.get_by_role("tab", name="Generation", exact=True).click()
    page.get_by_text("Grammar and bans", exact=True).click()
    box = page.locator("#param-json_schema textarea")
    box.fill('{"type": "colour"}')
    box.press("Tab")
    toast = page.locator(".toast-body.error [data-testid='toast-text']", has_text="json_schema")
    toast.wait_for()
    assert "Invalid type: colour" in toast.inner_text() and page.locator(".toast-body.error").count() == 1
    assert box.input_value() == '{"type": "colour"}'  # what the user typed stays


def test_exllamav2_s_native_sampler_sends_grammars_and_schemas_to_the_pipeline() -> None:
    from loaders.exllamav2_sampling import unsupported

    assert unsupported(SamplingParams(json_schema=SCHEMA)) == ["json_schema"]
    assert unsupported(SamplingParams(grammar_string='root ::= "a"')) == ["grammar_string"]
