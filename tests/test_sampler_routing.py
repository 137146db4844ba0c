"""Where each sampler setting runs, as the API (/v1/internal/samplers) and the Parameters tab's panel say it:
the tiny models on the real loaders, through a real API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_api_server import API_KEY, Served, assert_error, serve_api
from webui.sampling import DEFAULT_SAMPLER_PRIORITY, SamplingParams
from webui.sampling.registry import REQUEST_SETTINGS
from webui.sampling.routing import active_settings
from webui.sampling.routing_table import EXAMPLES
from webui.ui.sampler_routing_view import routing_markdown

GGUF = "tiny-llama.gguf"


@pytest.fixture(scope="module")
def served(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_api(models_dir, tmp_path_factory.mktemp("user_data"), api_key=API_KEY) as s:
        yield s


def where(served: Served, body: dict) -> dict:
    with served.client() as c:
        response = c.post("/v1/internal/samplers", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_every_setting_has_an_example_that_turns_on_only_itself() -> None:
    assert list(EXAMPLES) == [*DEFAULT_SAMPLER_PRIORITY, *(s.name for s in REQUEST_SETTINGS), "logprobs"]
    for name, example in EXAMPLES.items():
        params = SamplingParams.model_validate({k: v for k, v in example.items() if k != "logprobs"})
        assert active_settings(params) == ([] if name == "logprobs" else [name]), name


def test_native_only_preset_runs_natively(served: Served) -> None:
    body = where(served, {"preset": "Simple-1"})
    assert body["loader"] == "llama.cpp" and body["native_sampler"] == "llama.cpp"
    assert body["path"] == "native" and not body["slower"]
    assert body["active"] == ["repetition_penalty", "temperature", "top_k", "top_p"] == body["native"]
    assert body["pipeline"] == [] and body["forced_pipeline"] == {} and body["unavailable"] == {}


def test_a_sampler_llama_cpp_lacks_forces_the_slower_pipeline(served: Served) -> None:
    # SillyTavern's forms: sampler_priority as a string, fields for other backends ignored
    body = where(
        served, {"temperature": 0.7, "top_a": 0.2, "rep_pen": 1.3, "sampler_priority": "top_a\ntemperature"}
    )
    assert body["path"] == "pipeline" and body["slower"]
    assert body["pipeline"] == ["top_a", "temperature"] and body["native"] == []
    assert list(body["forced_pipeline"]) == ["top_a"] and "llama.cpp" in body["forced_pipeline"]["top_a"]


def test_logprobs_force_the_pipeline_as_a_completion_would(served: Served) -> None:
    assert where(served, {"top_k": 40})["path"] == "native"
    for logprobs in (0, 3, True):  # a completion's logprobs: 0 still asks for one; a chat's: true
        body = where(served, {"top_k": 40, "logprobs": logprobs})
        assert body["path"] == "pipeline" and list(body["forced_pipeline"]) == ["logprobs"], logprobs
    assert where(served, {"top_k": 40, "logprobs": False})["path"] == "native"


def test_an_extra_logits_processor_forces_the_pipeline(served: Served) -> None:
    served.app.core.extra_processors.append(lambda ids, scores: scores)
    try:
        body = where(served, {"min_p": 0.1})
    finally:
        served.app.core.extra_processors.clear()
    assert body["path"] == "pipeline" and list(body["forced_pipeline"]) == ["logits_processors"]


def test_bad_fields_and_missing_key_are_errors(served: Served) -> None:
    with served.client() as c:
        assert_error(c.post("/v1/internal/samplers", json={"top_k": -1}), 400, "top_k")
        assert_error(c.post("/v1/internal/samplers", json={"preset": "no such preset"}), 400)
    with served.client(key=None) as c:
        assert_error(c.get("/v1/internal/samplers"), 401)


def test_overview_of_every_setting_on_llama_cpp(served: Served) -> None:
    with served.client() as c:
        body = c.get("/v1/internal/samplers").json()
    assert (
        body["model_name"] == GGUF and body["loader"] == "llama.cpp" and body["native_sampler"] == "llama.cpp"
    )
    settings = body["settings"]
    assert list(settings) == list(EXAMPLES)
    assert settings["min_p"] == {
        "runs": "native",
        "reason": None,
        "slower": False,
        "example": {"min_p": 0.05},
    }
    assert (
        settings["top_a"]["runs"] == "pipeline"
        and settings["top_a"]["slower"]
        and settings["top_a"]["reason"]
    )
    assert (
        settings["logprobs"]["runs"] == "pipeline" and "log-probabilities" in settings["logprobs"]["reason"]
    )
    assert settings["grammar_string"]["runs"] == settings["json_schema"]["runs"] == "native"
    assert all(s["reason"] for s in settings.values() if s["runs"] != "native")


def test_panel_text_follows_the_settings(served: Served) -> None:
    def panel(**sampling: object) -> str:
        return routing_markdown(served.app, {"sampling": SamplingParams(**sampling).model_dump()})

    native = panel(top_k=40)
    assert "llama.cpp's native chain" in native and "`top_k`" in native and "slower" not in native
    forced = panel(top_k=40, top_a=0.2)
    assert "**slower**" in forced and "Sent to the pipeline by `top_a`" in forced
    assert "Hearth's pipeline: `top_k`, `top_a`" in forced
    assert "No sampler setting is active" in panel()


def test_hf_loaders_have_no_native_sampler_and_run_grammars_in_the_pipeline(served: Served) -> None:
    models = served.app.models
    grammar = EXAMPLES["grammar_string"]
    try:
        models.load(GGUF, "llamacpp_HF")
        with served.client() as c:
            overview = c.get("/v1/internal/samplers").json()
        assert overview["loader"] == "llamacpp_HF" and overview["native_sampler"] is None
        assert {s["runs"] for s in overview["settings"].values()} == {"pipeline"}
        assert overview["settings"]["grammar_string"]["runs"] == overview["settings"]["json_schema"]["runs"] == "pipeline"
        assert not any(s["slower"] for s in overview["settings"].values())

        models.load("tiny-llama", "Transformers")
        body = where(served, {"top_k": 40, **grammar})
        assert body["loader"] == "Transformers" and body["native_sampler"] is None
        assert body["path"] == "pipeline" and not body["slower"]
        assert body["pipeline"] == ["top_k", "grammar_string"] and body["unavailable"] == {}
        schema = where(served, {"json_schema": '{"type": "object"}'})  # JSON text, as a form would send it
        assert schema["pipeline"] == ["json_schema"] and schema["unavailable"] == {}
        text = routing_markdown(served.app, {"sampling": SamplingParams(**grammar).model_dump()})
        assert "no native sampler" in text and "Not available" not in text

        models.unload()
        with served.client() as c:
            for response in (c.get("/v1/internal/samplers"), c.post("/v1/internal/samplers", json={})):
                assert assert_error(response, 503)["code"] == "model_not_loaded"
        assert "no model loaded" in routing_markdown(served.app, None)
    finally:
        models.load(GGUF, "llama.cpp")
