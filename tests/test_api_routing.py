"""Routing by the `model` field over HTTP: two real tiny GGUFs with different weights answer differently; the
scripted loader (registered through the real plugin hook) makes a load slow or fail on purpose."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.model_factory import TinyConfig, build_pair
from tests.scripted_loader import ScriptedLoader, write_script
from tests.test_api_server import API_KEY, Served, assert_error, serve_api

GREEDY = {"temperature": 0, "ban_eos_token": True}
PROMPT = "Once upon a time there was a little village"


@pytest.fixture(scope="module")
def two_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-llama.gguf and other.gguf: same shape, other random weights."""
    root = tmp_path_factory.mktemp("two-models")
    shutil.copy(models_dir / "tiny-llama.gguf", root / "tiny-llama.gguf")
    other = tmp_path_factory.mktemp("other")
    _, gguf = build_pair(other, TinyConfig(seed=99))
    shutil.copy(gguf, root / "other.gguf")
    return root


@pytest.fixture(scope="module")
def served(two_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    user_data = tmp_path_factory.mktemp("user_data")
    (user_data / "model_aliases.yaml").write_text("second: other.gguf\ngpt-3.5-turbo: ''\n", encoding="utf-8")
    with serve_api(two_models, user_data, api_key=API_KEY) as s:
        yield s
        s.app.close()


def complete(served: Served, model: str | None, **extra) -> str:
    body = {"prompt": PROMPT, "max_tokens": 8, **GREEDY, **extra}
    if model != "<absent>":
        body["model"] = model
    with served.client() as c:
        response = c.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def test_a_named_model_is_loaded_and_answers_and_the_ui_one_is_unchanged(served: Served):
    ui_text = complete(served, "<absent>")
    assert [complete(served, m) for m in (None, "", "tiny-llama.gguf", "gpt-3.5-turbo")] == [ui_text] * 4
    other_text = complete(served, "other.gguf")
    assert other_text != ui_text and complete(served, "second") == other_text  # alias
    assert served.app.models.model_name == "tiny-llama.gguf"  # the UI still talks to its model
    client = openai.OpenAI(base_url=f"{served.base}/v1", api_key=API_KEY, max_retries=0)
    chat = [{"role": "user", "content": "Hi"}]
    routed = client.chat.completions.create(
        model="other.gguf", messages=chat, max_tokens=6, extra_body=GREEDY
    )
    ui = client.chat.completions.create(model="", messages=chat, max_tokens=6, extra_body=GREEDY)
    assert routed.model == "other.gguf" and ui.model == "tiny-llama.gguf"
    assert routed.choices[0].message.content != ui.choices[0].message.content
    stream = client.completions.create(
        model="other.gguf", prompt=PROMPT, max_tokens=8, stream=True, extra_body=GREEDY
    )
    assert "".join(chunk.choices[0].text for chunk in stream) == other_text


def test_models_list_says_what_is_loaded(served: Served):
    complete(served, "other.gguf")
    with served.client() as c:
        cards = c.get("/v1/models").json()["data"]
        one = c.get("/v1/models/other.gguf").json()
    assert [(m["id"], m["loaded"]) for m in cards] == [("tiny-llama.gguf", True), ("other.gguf", True)]
    assert one == {"id": "other.gguf", "object": "model", "created": 0, "owned_by": "hearth", "loaded": True}
    with served.client() as c:
        c.post("/v1/internal/model/unload", json={"model": "other.gguf"}).raise_for_status()
        cards = c.get("/v1/models").json()["data"]
        assert c.get("/v1/internal/model/info").json()["model_name"] == "tiny-llama.gguf"
    assert [(m["id"], m["loaded"]) for m in cards] == [("tiny-llama.gguf", True), ("other.gguf", False)]


def test_an_unknown_name_is_a_404_listing_the_models(served: Served):
    with served.client() as c:
        for path in ("/v1/completions", "/v1/chat/completions"):
            body = {
                "model": "gpt-4",
                "prompt": "x",
                "messages": [{"role": "user", "content": "x"}],
                "stream": True,
            }
            error = assert_error(c.post(path, json=body), 404, "model")
            assert error["code"] == "model_not_found"
            assert "Models: other.gguf, tiny-llama.gguf" in error["message"] and "second" in error["message"]



def test_token_logits_and_chat_prompt_routes_take_model_too(served: Served):
    """/v1/internal/encode, decode, token-count, logits, logits/trace and chat-prompt answer with the model
    `model` names (loaded first when it is not), as completions do; without it, with the UI's model."""
    with served.client() as c:
        c.post("/v1/internal/model/unload", json={"model": "other.gguf"}).raise_for_status()
        probe = {"prompt": PROMPT, "top_logits": 5, "detailed": True}
        ui = c.post("/v1/internal/logits", json=probe).json()["top_logits"]
        other = c.post("/v1/internal/logits", json={**probe, "model": "second"}).json()["top_logits"]
        assert "other.gguf" in served.app.pool.loaded_names()  # loaded for the request, by its alias
        assert [t["token_id"] for t in other] != [t["token_id"] for t in ui]
        assert other == c.post("/v1/internal/logits", json={**probe, "model": "other.gguf"}).json()["top_logits"]
        assert ui == c.post("/v1/internal/logits", json={**probe, "model": ""}).json()["top_logits"]
        # the greedy next token of each model, as its own completion says
        first = complete(served, "other.gguf", max_tokens=1)
        assert other[0]["token"] == first
        traced = c.post("/v1/internal/logits/trace", json={"prompt": PROMPT, "model": "other.gguf"}).json()
        raw = traced["stages"][0]["probs"]  # the model's own distribution, over the response's candidates
        assert traced["candidates"][raw.index(max(raw))]["token_id"] == other[0]["token_id"]
        tokens = c.post("/v1/internal/encode", json={"text": PROMPT, "model": "other.gguf"}).json()["tokens"]
        assert c.post("/v1/internal/token-count", json={"text": PROMPT, "model": "other.gguf"}).json()["length"] == len(tokens)
        assert c.post("/v1/internal/decode", json={"tokens": tokens[1:], "model": "other.gguf"}).json()["text"] == PROMPT
        chat = {"messages": [{"role": "user", "content": "Hi"}], "model": "other.gguf"}
        assert "Hi" in c.post("/v1/internal/chat-prompt", json=chat).json()["prompt"]
        for path, body in (("/v1/internal/encode", {"text": "x"}), ("/v1/internal/logits", {"prompt": "x"}),
                           ("/v1/internal/chat-prompt", chat)):
            error = assert_error(c.post(path, json={**body, "model": "gpt-4"}), 404, "model")
            assert error["code"] == "model_not_found" and "other.gguf" in error["message"], path

# -- a slow and a failing load (scripted loader) ------------------------------------------------------
@pytest.fixture
def scripted(tmp_path: Path, scripted_plugins) -> Iterator[Served]:
    models = tmp_path / "models"
    write_script(models, "ui", ["Home", "!"])
    write_script(models, "slow", ["Fast", "er"])
    broken = models / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "hearth-scripted", "replies": []}', encoding="utf-8")
    with serve_api(
        models, tmp_path / "user", model="ui", plugins=scripted_plugins, memory_budget="none"
    ) as s:
        yield s
        s.app.close()


def test_a_stream_keeps_alive_while_its_model_loads(scripted: Served, monkeypatch: pytest.MonkeyPatch):
    gate, original = threading.Event(), ScriptedLoader.load
    monkeypatch.setattr(
        ScriptedLoader, "load", lambda self, path, params: (gate.wait(30), original(self, path, params))[1]
    )
    body = {"model": "slow", "prompt": "Say:", "max_tokens": 4, "temperature": 0, "stream": True}
    with scripted.client() as c, c.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines) == ": loading slow"  # answered before the model is loaded
        assert scripted.app.pool.loaded_names() == ["ui"]
        gate.set()
        rest = [line for line in lines if line and not line.startswith(":")]
    assert rest[-1] == "data: [DONE]"
    assert "".join(json.loads(x[6:])["choices"][0]["text"] for x in rest[:-1]) == "Faster"


def test_a_failed_load_is_an_error_event_in_a_stream_and_others_keep_serving(scripted: Served):
    body = {"model": "broken", "prompt": "Say:", "max_tokens": 4, "temperature": 0}
    with scripted.client() as c:
        with c.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line and not line.startswith(":")]
        error = json.loads(lines[0][6:])["error"]
        assert lines[1:] == ["data: [DONE]"] and error["code"] == "model_load_failed"
        assert (
            "cannot load model broken" in error["message"]
            and "config.json is not a script" in error["message"]
        )
        assert assert_error(c.post("/v1/completions", json=body), 500, "model")["code"] == "model_load_failed"
        ok = c.post("/v1/completions", json={**body, "model": "ui"}).json()
    assert ok["choices"][0]["text"] == "Home!" and scripted.app.pool.loaded_names() == ["ui"]


def test_a_model_larger_than_the_budget_is_refused_with_the_numbers(scripted: Served):
    from webui.memory_estimate import GiB, MemoryEstimate
    from webui.model_pool import parse_budget

    pool = scripted.app.pool
    pool.budget = parse_budget("1", {})
    pool.estimator = lambda local, loader, params: MemoryEstimate(0, 3 * GiB, 0, 0, 0, 3 * GiB)
    with scripted.client() as c:
        error = assert_error(c.post("/v1/completions", json={"model": "slow", "prompt": "x"}), 503, "model")
    assert error["code"] == "insufficient_memory" and "3.00 GiB RAM" in error["message"]
    assert "1.00 GiB RAM" in error["message"] and "cannot fit even alone" in error["message"]


def test_unload_with_cancel_stops_the_running_request(scripted: Served):
    pool = scripted.app.pool
    slot = pool.acquire("slow")
    pool.release(slot)
    started = threading.Event()
    slot.models.model.on_logits = lambda ids: started.set()
    body = {"model": "slow", "prompt": "Say:", "max_tokens": 100000, "temperature": 0, "ban_eos_token": True}
    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.setdefault("r", scripted.client().post("/v1/completions", json=body))
    )
    worker.start()
    assert started.wait(20)
    with scripted.client() as c:
        c.post("/v1/internal/model/unload", json={"model": "slow", "cancel": True}).raise_for_status()
    worker.join(20)
    assert result["r"].json()["choices"][0]["finish_reason"] in ("cancelled", "stop", "length")
    assert pool.loaded_names() == ["ui"] and scripted.app.models.model_name == "ui"
    with scripted.client() as c:  # the old body-less unload still unloads the UI's model
        assert c.post("/v1/internal/model/unload").json()["model_name"] == "None"


def test_stop_generation_stops_every_models_requests(scripted: Served):
    """text-generation-webui's Stop (SillyTavern's stop button) reaches a routed model's request too."""
    pool = scripted.app.pool
    slow = pool.acquire("slow")
    pool.release(slow)
    results: dict[str, object] = {}
    started = {name: threading.Event() for name in ("ui", "slow")}
    stopped = threading.Event()  # each model's first token waits until Stop was pressed
    workers = []
    for name, models in (("ui", scripted.app.models), ("slow", slow.models)):
        models.model.on_logits = lambda ids, event=started[name]: (event.set(), stopped.wait(20))
        body = {"model": name, "prompt": "Say:", "max_tokens": 100000, "temperature": 0, "ban_eos_token": True}
        worker = threading.Thread(
            target=lambda name=name, body=body: results.setdefault(
                name, scripted.client().post("/v1/completions", json=body)
            )
        )
        worker.start()
        workers.append(worker)
    try:
        assert all(event.wait(20) for event in started.values())
        with scripted.client() as c:
            assert c.post("/v1/internal/stop-generation").json()["stopped"] == 2
    finally:
        stopped.set()
    for worker in workers:
        worker.join(20)
    for name in ("ui", "slow"):
        reply = results[name].json()["choices"][0]
        assert reply["finish_reason"] == "stop" and len(reply["text"]) <= 1, name
    assert pool.loaded_names() == ["ui", "slow"]  # stopped, not unloaded

def test_a_remote_model_is_routed_by_name_like_a_local_one(models_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    import yaml

    from tests.remote_servers import llama_cpp_server

    with llama_cpp_server(models_dir / "tiny-llama.gguf", tmp_path / "server.log") as url:
        user_data = tmp_path / "user_data"
        user_data.mkdir()
        remote = {"url": url, "kind": "llama-cpp-python", "n_ctx": 512}
        (user_data / "remotes.yaml").write_text(yaml.safe_dump({"remotes": {"lcp": remote}}))
        with serve_api(models_dir, user_data, model="tiny-llama.gguf", api_key=API_KEY) as s:
            name = f"remote:lcp/{models_dir / 'tiny-llama.gguf'}"
            try:
                with s.client() as c:
                    body = {"model": name, "prompt": PROMPT, "max_tokens": 6, "temperature": 0}
                    reply = c.post("/v1/completions", json=body)
                    assert reply.status_code == 200, reply.text
                    assert reply.json()["model"] == name and reply.json()["usage"]["completion_tokens"] == 6
                    cards = {m["id"]: m["loaded"] for m in c.get("/v1/models").json()["data"]}
                assert (
                    cards[name] and cards["tiny-llama.gguf"] and s.app.models.model_name == "tiny-llama.gguf"
                )
            finally:
                s.app.close()
