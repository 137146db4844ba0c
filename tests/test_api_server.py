"""The API server as a whole: a real uvicorn on a free port, keys, CORS, errors, the OpenAPI document.

`serve_api` is shared with the other test_api_* modules (they import it): one real App per module, the
tiny GGUF loaded through the llama.cpp loader.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from webui.app import App
from webui.config import Settings
from webui.sampling import SamplingParams
from webui.server import start_api

API_KEY = "test-key"
ADMIN_KEY = "admin-key"


@dataclass
class Served:
    app: App
    base: str  # http://127.0.0.1:PORT

    def client(self, key: str | None = API_KEY, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        kwargs.setdefault("timeout", 60)
        return httpx.Client(base_url=self.base, headers=headers, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_api(models_dir: Path, user_data: Path, *, model: str | None = "tiny-llama.gguf",
              params: dict[str, Any] | None = None, plugins: Any = None, **settings: Any) -> Iterator[Served]:
    """The API on a free port over `models_dir` with `model` loaded (`plugins`: a plugin manager of one's own)."""
    app = App.create(Settings(models_dir=models_dir, user_data_dir=user_data, api_port=free_port(), **settings),
                     plugins=plugins)
    if model:
        app.models.load(model, params=params)
    server, thread = start_api(app)
    try:
        yield Served(app, f"http://127.0.0.1:{app.settings.api_port}")
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(10)
        app.models.unload()


@pytest.fixture(scope="module")
def served(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_api(models_dir, tmp_path_factory.mktemp("user_data"), api_key=API_KEY, admin_key=ADMIN_KEY,
                   cors_origins=["http://localhost:8000"]) as s:
        yield s


@pytest.fixture(scope="module")
def no_model(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_api(models_dir, tmp_path_factory.mktemp("user_data"), model=None) as s:
        yield s


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param and param in error["message"]
    return error


# -- keys -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/models", "/v1/internal/model/info"])
def test_missing_or_wrong_key_is_401(served: Served, path: str):
    with served.client(key=None) as c:
        error = assert_error(c.get(path), 401)
        assert error["type"] == "authentication_error" and "Bearer" in error["message"]
    with served.client(key="wrong") as c:
        assert_error(c.get(path), 401)
    with served.client() as c:
        assert c.get(path).status_code == 200


def test_admin_key_guards_load_and_unload(served: Served):
    with served.client() as c:  # the API key is not the admin key
        assert_error(c.post("/v1/internal/model/unload"), 401)
    assert served.app.models.model_name == "tiny-llama.gguf"
    with served.client(key=ADMIN_KEY) as c:  # and the admin key alone is enough for admin routes
        assert c.post("/v1/internal/model/load", json={"model_name": "tiny-llama.gguf"}).status_code == 200


def test_admin_key_defaults_to_api_key(models_dir: Path, tmp_path: Path):
    with serve_api(models_dir, tmp_path, api_key=API_KEY) as s, s.client() as c:
        assert c.post("/v1/internal/model/unload").json()["model_name"] == "None"
        with s.client(key="nope") as bad:
            assert_error(bad.post("/v1/internal/model/load", json={"model_name": "tiny-llama.gguf"}), 401)


def test_cors_preflight_allows_configured_origin_only(served: Served):
    headers = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    with served.client(key=None) as c:
        ok = c.options("/v1/completions", headers={**headers, "Origin": "http://localhost:8000"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://localhost:8000"
        other = c.options("/v1/completions", headers={**headers, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# -- errors -----------------------------------------------------------------------------------------
def test_no_model_loaded_is_503(no_model: Served):
    with no_model.client(key=None) as c:
        for path, body in [("/v1/completions", {"prompt": "Hi"}),
                           ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
                           ("/v1/internal/encode", {"text": "Hi"})]:
            error = assert_error(c.post(path, json=body), 503)
            assert error["code"] == "model_not_loaded" and "no model is loaded" in error["message"]
        assert c.get("/v1/internal/model/info").json()["model_name"] == "None"


def test_unknown_route_and_model_are_404_in_openai_shape(served: Served):
    with served.client() as c:
        assert_error(c.get("/v1/nothing-here"), 404)
        assert_error(c.post("/v1/internal/model/load", json={"model_name": "missing.gguf"},
                            headers={"Authorization": f"Bearer {ADMIN_KEY}"}), 404)
        assert_error(c.get("/v1/models/missing.gguf"), 404)


# -- the OpenAPI document ---------------------------------------------------------------------------
ROUTES = {
    ("/v1/completions", "post"), ("/v1/chat/completions", "post"), ("/v1/models", "get"),
    ("/v1/models/{model_id}", "get"), ("/v1/internal/model/info", "get"), ("/v1/internal/model/list", "get"),
    ("/v1/internal/model/load", "post"), ("/v1/internal/model/unload", "post"), ("/v1/internal/lora/list", "get"),
    ("/v1/internal/lora/load", "post"), ("/v1/internal/lora/unload", "post"), ("/v1/internal/encode", "post"),
    ("/v1/internal/decode", "post"), ("/v1/internal/token-count", "post"), ("/v1/internal/logits", "post"), ("/v1/internal/logits/trace", "post"),
    ("/v1/internal/chat-prompt", "post"), ("/v1/internal/stop-generation", "post"),
    ("/v1/internal/samplers", "get"), ("/v1/internal/samplers", "post"),
}


def test_openapi_document_lists_every_route_and_sampler(served: Served):
    with served.client(key=None) as c:
        doc = c.get("/openapi.json").json()
        assert c.get("/docs").status_code == 200
    assert {(path, method) for path, ops in doc["paths"].items() for method in ops} == ROUTES
    completion = doc["components"]["schemas"]["CompletionRequest"]["properties"]
    assert set(SamplingParams.model_fields) <= set(completion)
    assert {"max_tokens", "max_new_tokens", "stop", "stopping_strings", "preset", "truncation_length"} <= set(completion)
    temperature = next(s for s in completion["temperature"]["anyOf"] if s.get("type") == "number")
    assert temperature["minimum"] == 0 and temperature["maximum"] == 100
    responses = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert "422" not in responses and "text/event-stream" in responses["200"]["content"]
    assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert "ChatCompletionChunk" in doc["components"]["schemas"]
    assert {ref.rsplit("/", 1)[1] for ref in _refs(doc)} <= set(doc["components"]["schemas"])


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)
