"""/v1/completions and /v1/chat/completions through the official `openai` client and raw SSE, on the tiny GGUF."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.test_api_server import API_KEY, Served, assert_error, serve_api

PROMPT = "Once upon a time there was a little village"
GREEDY = {"temperature": 0, "ban_eos_token": True}
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me a story."}]


@pytest.fixture(scope="module")
def served(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_api(models_dir, tmp_path_factory.mktemp("user_data"), api_key=API_KEY) as s:
        yield s


@pytest.fixture(scope="module")
def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.base}/v1", api_key=API_KEY, max_retries=0)


def sse_events(served: Served, path: str, body: dict[str, Any]) -> list[str]:
    """The raw `data:` payloads of a streamed response, in order."""
    with served.client() as c, c.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    return [line[len("data: "):] for line in lines]


# -- completions ------------------------------------------------------------------------------------
def test_completion_with_openai_client_stream_and_not(client: openai.OpenAI):
    whole = client.completions.create(model="", prompt=PROMPT, max_tokens=20, extra_body=GREEDY)
    assert whole.object == "text_completion" and whole.model == "tiny-llama.gguf"
    assert whole.choices[0].finish_reason == "length" and whole.choices[0].text
    assert whole.usage is not None and whole.usage.completion_tokens == 20
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 20
    chunks = list(client.completions.create(model="", prompt=PROMPT, max_tokens=20, stream=True, extra_body=GREEDY))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_raw_sse_lines_end_with_done(served: Served):
    events = sse_events(served, "/v1/completions", {"prompt": PROMPT, "max_tokens": 12, **GREEDY})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" and len(c["choices"]) == 1 for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] == 12 and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert sum(bool(c["choices"][0]["text"]) for c in chunks) > 1  # really streamed, not one blob


def test_token_id_prompt_and_echo(served: Served, client: openai.OpenAI):
    with served.client() as c:
        ids = c.post("/v1/internal/encode", json={"text": PROMPT}).json()["tokens"]
    by_text = client.completions.create(model="", prompt=PROMPT, max_tokens=8, extra_body=GREEDY)
    by_ids = client.completions.create(model="", prompt=ids, max_tokens=8, echo=True, extra_body=GREEDY)
    assert by_ids.choices[0].text == PROMPT + by_text.choices[0].text
    batch = client.completions.create(model="", prompt=["a", PROMPT], max_tokens=8, extra_body=GREEDY)
    assert [c.index for c in batch.choices] == [0, 1] and batch.choices[1].text == by_text.choices[0].text


def test_legacy_logprobs_shape(client: openai.OpenAI):
    result = client.completions.create(model="", prompt=PROMPT, max_tokens=10, logprobs=3, extra_body=GREEDY)
    text, logprobs = result.choices[0].text, result.choices[0].logprobs
    assert logprobs is not None and len(logprobs.tokens) == 10
    assert "".join(logprobs.tokens) == text
    assert all(lp <= 0 for lp in logprobs.token_logprobs)
    assert all(1 <= len(top) <= 3 and all(v <= 0 for v in top.values()) for top in logprobs.top_logprobs)
    assert logprobs.text_offset[0] == 0 and logprobs.text_offset[1] == len(logprobs.tokens[0])


def test_echo_with_logprobs_scores_the_prompt_tokens(served: Served, client: openai.OpenAI):
    import torch

    result = client.completions.create(model="", prompt=PROMPT, max_tokens=4, echo=True, logprobs=2, extra_body=GREEDY)
    choice, model = result.choices[0], served.app.models.require()
    ids = model.tokenize(PROMPT)  # BOS first: every prompt token has a context
    n_prompt = len(ids) - 1
    lp = choice.logprobs
    assert choice.text.startswith(PROMPT) and len(lp.tokens) == n_prompt + 4
    for i in (1, n_prompt):  # the first and last prompt token: log softmax of the logits before it
        logits = served.app.core.worker.call(lambda i=i: model.logits(ids[:i]))
        assert lp.token_logprobs[i - 1] == pytest.approx(float(torch.log_softmax(logits, -1)[ids[i]]), abs=1e-4)
    assert all(1 <= len(top) <= 2 for top in lp.top_logprobs)
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[n_prompt] == len(PROMPT)

    no_bos = ids[1:]  # token ids without BOS: the first one has nothing before it (null, as OpenAI)
    body = {"prompt": no_bos, "max_tokens": 2, "echo": True, "logprobs": 1, **GREEDY}
    with served.client() as c:
        whole = c.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]
    assert whole["token_logprobs"][0] is None and whole["top_logprobs"][0] is None
    assert len(whole["tokens"]) == len(no_bos) + 2 and all(v <= 0 for v in whole["token_logprobs"][1:])
    first = json.loads(sse_events(served, "/v1/completions", body)[0])["choices"][0]  # the echo chunk
    assert first["logprobs"]["tokens"] == whole["tokens"][: len(no_bos)]


def test_stop_and_stopping_strings_are_merged(client: openai.OpenAI):
    full = client.completions.create(model="", prompt=PROMPT, max_tokens=30, extra_body=GREEDY).choices[0].text
    cut = full[10:13]
    for extra in ({"stop": [cut]}, {"stopping_strings": [cut]}, {"stop": "never-seen", "stopping_strings": cut}):
        body = {k: v for k, v in extra.items() if k != "stop"}
        result = client.completions.create(model="", prompt=PROMPT, max_tokens=30, stop=extra.get("stop"),
                                           extra_body={**GREEDY, **body})
        assert result.choices[0].text == full[: full.index(cut)] and result.choices[0].finish_reason == "stop"


# -- chat -------------------------------------------------------------------------------------------
def test_chat_with_openai_client_stream_and_not(client: openai.OpenAI):
    whole = client.chat.completions.create(model="", messages=MESSAGES, max_tokens=16, extra_body=GREEDY)
    message = whole.choices[0].message
    assert whole.object == "chat.completion" and message.role == "assistant" and message.content
    assert whole.usage.completion_tokens <= 16
    chunks = list(client.chat.completions.create(model="", messages=MESSAGES, max_tokens=16, stream=True,
                                                 extra_body=GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].usage == whole.usage


def test_chat_uses_the_same_prompt_as_chat_prompt_endpoint(served: Served, client: openai.OpenAI):
    body = {"messages": MESSAGES, "max_tokens": 16, **GREEDY}
    with served.client() as c:
        built = c.post("/v1/internal/chat-prompt", json=body).json()
    via_chat = client.chat.completions.create(model="", messages=MESSAGES, max_tokens=16, extra_body=GREEDY)
    via_text = client.completions.create(model="", prompt=built["prompt"], max_tokens=16, stop=built["stop_strings"] or None,
                                         extra_body=GREEDY)
    assert via_chat.choices[0].message.content == via_text.choices[0].text
    assert via_chat.usage.prompt_tokens == via_text.usage.prompt_tokens


def test_chat_logprobs(client: openai.OpenAI):
    result = client.chat.completions.create(model="", messages=MESSAGES, max_tokens=6, logprobs=True, top_logprobs=2,
                                            extra_body=GREEDY)
    content = result.choices[0].logprobs.content
    assert len(content) == result.usage.completion_tokens
    assert all(len(item.top_logprobs) == 2 and item.logprob <= 0 for item in content)


def test_chat_modes_and_character_fields(served: Served):
    with served.client() as c:
        for mode in ("chat", "chat-instruct", "instruct"):
            body = {"messages": MESSAGES, "mode": mode, "name1": "Ann", "max_tokens": 4, **GREEDY}
            prompt = c.post("/v1/internal/chat-prompt", json=body).json()["prompt"]
            assert "Tell me a story." in prompt
            if mode == "chat":
                assert "Ann:" in prompt
            assert c.post("/v1/chat/completions", json=body).status_code == 200
        assert_error(c.post("/v1/chat/completions", json={**body, "character": "Nobody"}), 400)
        assert_error(c.post("/v1/chat/completions", json={**body, "mode": "roleplay"}), 400, "mode")


# -- validation -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": PROMPT, "temperature": "hot"}, "temperature"),
        ({"prompt": PROMPT, "top_p": 1.5}, "top_p"),
        ({"prompt": PROMPT, "max_tokens": -1}, "max_tokens"),
        ({"prompt": PROMPT, "n": 0}, "n"),
        ({"prompt": [PROMPT] * 3, "n": 100}, "n"),
        ({"prompt": PROMPT, "logprobs": "yes"}, "logprobs"),
        ({"prompt": PROMPT, "sampler_priority": ["top_k", "warp_drive"]}, "sampler_priority"),
        ({"prompt": PROMPT, "dry_sequence_breakers": "[not json"}, "dry_sequence_breakers"),
        ({"prompt": PROMPT, "custom_token_bans": "1,two"}, "custom_token_bans"),
        ({"prompt": PROMPT, "logit_bias": {"x": 1}}, "logit_bias.x"),
        ({"temperature": 1}, "prompt"),
    ],
)
def test_bad_fields_are_400_naming_the_field(served: Served, body: dict[str, Any], param: str):
    with served.client() as c:
        error = assert_error(c.post("/v1/completions", json=body), 400, param)
    assert error["type"] == "invalid_request_error"


def test_bad_chat_message_and_preset(served: Served):
    with served.client() as c:
        assert_error(c.post("/v1/chat/completions", json={"messages": [{"role": "robot", "content": "x"}]}), 400,
                     "messages.0.role")
        assert_error(c.post("/v1/chat/completions", json={"messages": []}), 400, "messages")
        error = assert_error(c.post("/v1/completions", json={"prompt": PROMPT, "preset": "No Such Preset"}), 400)
        assert "no preset named" in error["message"]


def test_malformed_json_and_non_object_bodies(served: Served):
    with served.client() as c:
        error = assert_error(c.post("/v1/completions", content=b'{"prompt": "x",', headers={"Content-Type": "application/json"}), 400)
        assert error["code"] == "json_invalid"
        assert_error(c.post("/v1/completions", json=["prompt"]), 400)
        assert_error(c.post("/v1/completions"), 400)


def test_openai_client_raises_bad_request_with_param(client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="", prompt=PROMPT, temperature=-1)
    assert info.value.param == "temperature" and "temperature" in info.value.message


def test_preset_is_the_base_and_fields_override(client: openai.OpenAI):
    deterministic = client.completions.create(model="", prompt=PROMPT, max_tokens=12, extra_body={"preset": "Deterministic", "ban_eos_token": True})
    greedy = client.completions.create(model="", prompt=PROMPT, max_tokens=12, extra_body=GREEDY)
    assert deterministic.choices[0].text == greedy.choices[0].text


def test_long_prompt_is_truncated_from_the_left(client: openai.OpenAI):
    result = client.completions.create(model="", prompt=" ".join(["the quick brown fox"] * 400), max_tokens=8,
                                       extra_body={**GREEDY, "truncation_length": 200})
    assert result.usage.prompt_tokens == 200 - 8 and result.usage.completion_tokens == 8


# -- SillyTavern ------------------------------------------------------------------------------------
def sillytavern_body(prompt: str, **overrides: Any) -> dict[str, Any]:
    """What SillyTavern's 'Text Generation WebUI' backend forwards: its whole settings body."""
    body = {
        "prompt": prompt, "model": None, "max_new_tokens": 16, "max_tokens": 16, "temperature": 0.7, "top_p": 0.9,
        "typical_p": 1, "typical": 1, "sampler_seed": 7, "min_p": 0.05, "repetition_penalty": 1.1, "rep_pen": 1.1,
        "rep_pen_range": 0, "repetition_penalty_range": 0, "frequency_penalty": 0, "presence_penalty": 0, "top_k": 40,
        "top_a": 0, "tfs": 1, "epsilon_cutoff": 0, "eta_cutoff": 0, "min_tokens": 0, "skew": 0, "length_penalty": 1,
        "early_stopping": False, "num_beams": 1, "penalty_alpha": 0, "add_bos_token": True, "ban_eos_token": True,
        "skip_special_tokens": True, "include_reasoning": True, "smoothing_factor": 0, "smoothing_curve": 1,
        "dry_allowed_length": 2, "dry_multiplier": 0.8, "dry_base": 1.75, "dry_penalty_last_n": 0,
        "dry_sequence_breakers": '["\\n", ":", "\\"", "*"]', "max_tokens_second": 0,
        "stopping_strings": ["\nUser:"], "stop": ["\nUser:"], "truncation_length": 1024, "custom_token_bans": "",
        "banned_strings": [], "api_type": "ooba", "api_server": "http://127.0.0.1:5000/", "legacy_api": False,
        "sampler_priority": ["repetition_penalty", "presence_penalty", "frequency_penalty", "dry", "temperature",
                             "dynamic_temperature", "quadratic_sampling", "top_k", "top_p", "typical_p",
                             "epsilon_cutoff", "eta_cutoff", "tfs", "top_a", "min_p", "mirostat", "xtc",
                             "encoder_repetition_penalty", "no_repeat_ngram"],
        "temperature_last": True, "encoder_repetition_penalty": 1, "no_repeat_ngram_size": 0, "seed": 1234,
        "guidance_scale": 1, "negative_prompt": "", "grammar_string": "", "json_schema": {}, "grammar": "",
        "xtc_threshold": 0.1, "xtc_probability": 0, "dynamic_temperature": False, "dynatemp_low": 1,
        "dynatemp_high": 1, "dynatemp_exponent": 1, "mirostat_mode": 0, "mirostat_tau": 5, "mirostat_eta": 0.1,
        "n_predict": 16, "nsigma": 0, "top_n_sigma": 0, "do_sample": True, "logit_bias": {}, "stream": False,
    }
    return {**body, **overrides}


def test_sillytavern_body_is_accepted_and_applied(served: Served):
    with served.client() as c:
        first = c.post("/v1/completions", json=sillytavern_body(PROMPT))
        assert first.status_code == 200, first.text
        again = c.post("/v1/completions", json=sillytavern_body(PROMPT)).json()
        assert first.json()["choices"][0]["text"] == again["choices"][0]["text"]  # the seed was honoured
        assert again["usage"]["completion_tokens"] <= 16
        greedy = sillytavern_body(PROMPT, temperature=0, dry_multiplier=0, repetition_penalty=1, min_p=0, top_k=0)
        plain = c.post("/v1/completions", json=greedy).json()["choices"][0]["text"]
        logits = c.post("/v1/internal/logits", json={"prompt": PROMPT, "detailed": True}).json()
        first_token = logits["top_logits"][0]["token_id"]
        banned = c.post("/v1/completions", json={**greedy, "custom_token_bans": f"{first_token}, 1"}).json()
        assert banned["choices"][0]["text"] != plain  # the comma-separated string was applied


def test_sillytavern_streaming_and_token_probabilities(served: Served):
    events = sse_events(served, "/v1/completions", sillytavern_body(PROMPT, stream=True, logprobs=5))
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]" and all("text" in c["choices"][0] for c in chunks)
    probs = [c["choices"][0]["logprobs"] for c in chunks if c["choices"][0].get("logprobs")]
    assert probs and all(isinstance(p["top_logprobs"][0], dict) for p in probs)
    with served.client() as c:
        whole = c.post("/v1/completions", json=sillytavern_body(PROMPT, logprobs=5)).json()
    assert len(whole["choices"][0]["logprobs"]["top_logprobs"]) == whole["usage"]["completion_tokens"]


def test_sillytavern_connect_sequence(served: Served):
    with served.client() as c:
        assert "tiny-llama.gguf" in [m["id"] for m in c.get("/v1/models").json()["data"]]
        assert c.get("/v1/internal/model/info").json()["model_name"] == "tiny-llama.gguf"
        encoded = c.post("/v1/internal/encode", json={"text": "Hello there"}).json()
        assert encoded["length"] == len(encoded["tokens"]) > 0


def test_streaming_error_before_first_token_gets_a_status(served: Served):
    with served.client() as c:
        response = c.post("/v1/completions", json={"prompt": [999999], "stream": True})
        assert_error(response, 400)
        assert "outside the vocabulary" in response.json()["error"]["message"]


def test_http_client_reads_json_content_type(served: Served):
    response = httpx.post(f"{served.base}/v1/completions", json={"prompt": PROMPT, "max_tokens": 2},
                          headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
