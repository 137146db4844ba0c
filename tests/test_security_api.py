"""The API played as an attacker on the network would: keys on every route, names that try to leave the
models folder, remote code, foreign hosts and cross-site posts, oversized bodies, token ids that used to
abort llama.cpp, and the inputs that used to be 500s. A real uvicorn server on the tiny GGUF throughout;
only the --listen cases run the same app in-process, so no test opens a port on every interface.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from starlette.testclient import TestClient

from tests.test_api_server import Served, assert_error, serve_api
from webui.__main__ import check_startup
from webui.api import create_api
from webui.app import App
from webui.config import Settings
from webui.errors import ModelNotFound, RemoteCodeNotAllowed
from webui.input_errors import InvalidTokenId
from webui.models import ModelManager
from webui.plugins import hookimpl

KEYS = ("key-one", "key-two")
FILE_KEY = "key-from-file"
ADMIN = "the-admin-key"
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def keyed(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# one key per line\n{FILE_KEY}\n", encoding="utf-8")
    with serve_api(models_dir, tmp_path_factory.mktemp("user_data"), api_key=list(KEYS), api_key_file=key_file,
                   admin_key=ADMIN, cors_origins=["http://localhost:8000"], allowed_hosts=["hearth.lan"],
                   max_request_mb=1) as s:
        yield s


@pytest.fixture(scope="module")
def open_api(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_api(models_dir, tmp_path_factory.mktemp("user_data")) as s:
        yield s


def _routes(served: Served) -> list[tuple[str, str]]:
    with served.client(key=KEYS[0]) as c:
        doc = c.get("/openapi.json").json()
    return [(method.upper(), path.replace("{model_id}", "tiny-llama.gguf"))
            for path, ops in doc["paths"].items() for method in ops]


# -- keys -------------------------------------------------------------------------------------------
def test_every_route_refuses_a_missing_or_wrong_key(keyed: Served):
    routes = _routes(keyed)
    assert len(routes) >= 16
    for key in (None, "wrong", KEYS[0][:-1]):
        with keyed.client(key=key) as c:
            for method, path in routes:
                error = assert_error(c.request(method, path, json={}), 401)
                assert error["code"] == "invalid_api_key", (method, path)
    assert keyed.app.models.model_name == "tiny-llama.gguf"


@pytest.mark.parametrize("key", [*KEYS, FILE_KEY])
def test_each_api_key_works_and_none_is_an_admin_key(keyed: Served, key: str):
    with keyed.client(key=key) as c:
        assert c.get("/v1/models").status_code == 200
        assert_error(c.post("/v1/internal/model/unload"), 401)
    assert keyed.app.models.model_name == "tiny-llama.gguf"


def test_admin_key_defaults_to_any_api_key(models_dir: Path, tmp_path: Path):
    with serve_api(models_dir, tmp_path, model=None, api_key=list(KEYS)) as s:
        for key in KEYS:
            with s.client(key=key) as c:
                assert c.post("/v1/internal/model/unload").status_code == 200


def _in_process(models_dir: Path, tmp_path: Path, **settings: Any) -> TestClient:
    """The API app of a --listen Hearth, without binding every interface (no socket at all)."""
    app = App.create(Settings(models_dir=models_dir, user_data_dir=tmp_path, listen=True, **settings))
    return TestClient(create_api(app), base_url="http://127.0.0.1:5000")


def test_listening_without_a_key_refuses_admin_routes(models_dir: Path, tmp_path: Path):
    with _in_process(models_dir, tmp_path) as c:
        error = assert_error(c.post("/v1/internal/model/load", json={"model_name": "tiny-llama.gguf"}), 403)
        assert error["code"] == "admin_key_required" and "--admin-key" in error["message"]
        assert "--api-key" in error["message"] and "--allow-unauthenticated" in error["message"]
        assert c.get("/v1/internal/model/info").status_code == 200  # the rest stays usable
    with _in_process(models_dir, tmp_path, allow_unauthenticated=True) as c:
        assert c.post("/v1/internal/model/unload").status_code == 200
    with _in_process(models_dir, tmp_path, api_key=KEYS[0]) as c:
        assert_error(c.post("/v1/internal/model/unload"), 401)
        assert c.post("/v1/internal/model/unload", headers={"Authorization": f"Bearer {KEYS[0]}"}).status_code == 200


# -- names stay inside models/ ----------------------------------------------------------------------
def test_model_names_outside_the_models_folder_are_404_and_fast(open_api: Served, models_dir: Path):
    outside = models_dir.parent / "outside.gguf"
    outside.write_bytes((models_dir / "tiny-llama.gguf").read_bytes())
    names = ["", ".", "..", "/usr", "/", "../outside.gguf", str(outside), str(models_dir / "tiny-llama.gguf"),
             "tiny-llama/../tiny-llama.gguf", "./tiny-llama.gguf", "tiny-llama.gguf/", "..\\outside.gguf", "\0"]
    with open_api.client() as c:
        for name in names:
            started = time.monotonic()
            error = assert_error(c.post("/v1/internal/model/load", json={"model_name": name}), 404)
            assert error["code"] == "model_not_found" and time.monotonic() - started < 1, name
            if name not in {"", ".", ".."}:  # (a URL cannot hold those as one segment)
                assert_error(c.get(f"/v1/models/{quote(name, safe='')}"), 404)
    assert open_api.app.models.model_name == "tiny-llama.gguf"


@pytest.mark.parametrize("field,route", [("preset", "/v1/completions"), ("preset", "/v1/internal/logits"),
                                         ("preset", "/v1/internal/samplers"), ("character", "/v1/internal/chat-prompt"),
                                         ("instruction_template", "/v1/internal/chat-prompt")])
def test_other_names_cannot_leave_their_folders(open_api: Served, tmp_path: Path, field: str, route: str):
    (tmp_path / "evil.yaml").write_text("name: Evil\ncontext: EVIL\ntemperature: 0.5\n", encoding="utf-8")
    body = {"prompt": "Hi", "mode": "chat", **CHAT}
    with open_api.client() as c:
        for name in ("../../evil", str(tmp_path / "evil"), str(tmp_path / "evil.yaml"), "..", ""):
            response = c.post(route, json={**body, field: name})
            assert response.status_code in (200, 400, 404), response.text
            assert "EVIL" not in response.text


# -- remote code --------------------------------------------------------------------------------------
def test_trust_remote_code_without_the_flag_is_403(open_api: Served):
    with open_api.client() as c:
        for args in ({"trust_remote_code": True}, {"trust_remote_code": "yes"}):
            body = {"model_name": "tiny-llama", "loader": "Transformers", "args": args}
            error = assert_error(c.post("/v1/internal/model/load", json=body), 403)
            assert error["code"] == "remote_code_not_allowed" and "--trust-remote-code" in error["message"]
    assert open_api.app.models.model_name == "tiny-llama.gguf"  # refused before anything was unloaded


def test_trust_remote_code_with_the_flag_loads(models_dir: Path, tmp_path: Path):
    with serve_api(models_dir, tmp_path, model=None, loader_args={"trust_remote_code": True}) as s, s.client() as c:
        body = {"model_name": "tiny-llama", "loader": "Transformers", "args": {"trust_remote_code": True}}
        assert c.post("/v1/internal/model/load", json=body).json()["loader"] == "Transformers"


# -- hosts and origins --------------------------------------------------------------------------------
@pytest.mark.parametrize("host,status", [("evil.example", 403), ("evil.example:5000", 403), ("localhost.evil", 403),
                                         ("192.168.1.20:5000", 403), ("", 403), ("localhost", 200),
                                         ("LOCALHOST:5000", 200), ("127.0.0.1", 200), ("[::1]:5000", 200),
                                         ("hearth.lan", 200), ("hearth.lan:5000", 200)])
def test_foreign_host_is_refused(keyed: Served, host: str, status: int):
    with keyed.client(key=KEYS[0]) as c:
        response = c.get("/v1/models", headers={"Host": host})
    assert response.status_code == status, response.text
    if status == 403:
        assert "--allowed-hosts" in assert_error(response, 403)["message"]


def test_cross_site_and_non_json_posts_are_refused(keyed: Served):
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with keyed.client(key=None) as c:
        text = c.post("/v1/internal/model/unload", content=b"{}", headers={**admin, "Content-Type": "text/plain"})
        assert assert_error(text, 415)["code"] == "unsupported_media_type"
        form = c.post("/v1/internal/model/unload", data={"a": "b"}, headers=admin)
        assert_error(form, 415)
        bare = c.post("/v1/internal/model/unload", content=b"{}", headers=admin)  # a body without a type
        assert_error(bare, 415)
        for origin in ("http://evil.example", "null", "http://localhost:8001"):
            crossed = c.post("/v1/internal/model/unload", json={}, headers={**admin, "Origin": origin})
            assert assert_error(crossed, 403)["code"] == "origin_not_allowed"
        assert keyed.app.models.model_name == "tiny-llama.gguf"
        own = {"Origin": keyed.base, "Authorization": f"Bearer {KEYS[0]}"}  # the API's own /docs page
        assert c.post("/v1/internal/encode", json={"text": "Hi"}, headers=own).status_code == 200
        allowed = {**own, "Origin": "http://localhost:8000"}  # --cors-origins
        assert c.post("/v1/internal/encode", json={"text": "Hi"}, headers=allowed).status_code == 200
        assert c.get("/v1/models", headers={"Origin": "http://evil.example", "Authorization": own["Authorization"]}).status_code == 200


# -- body size ----------------------------------------------------------------------------------------
def _raw(served: Served, head: str, chunks: Iterable[bytes] = ()) -> str:
    """Send a request by hand; returns the status line. Stops sending as soon as the server answers."""
    port = int(served.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        sock.settimeout(0.05)
        for chunk in chunks:
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except TimeoutError:
                pass
            sock.sendall(chunk)
        sock.settimeout(10)
        return sock.recv(200).decode("latin-1").split("\r\n", 1)[0]


def test_oversized_bodies_are_413_before_they_are_read(keyed: Served):
    head = ("POST /v1/internal/encode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {KEYS[0]}\r\n")
    assert _raw(keyed, head + "Content-Length: 5000000000\r\n\r\n").startswith("HTTP/1.1 413")
    piece = b"x" * 65536
    chunked = (f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for _ in range(200))  # 12.5 MiB if all sent
    assert _raw(keyed, head + "Transfer-Encoding: chunked\r\n\r\n", chunked).startswith("HTTP/1.1 413")
    with keyed.client(key=KEYS[0]) as c:
        error = assert_error(c.post("/v1/internal/encode", content=b" " * (2 << 20),
                                    headers={"Content-Type": "application/json"}), 413)
        assert error["code"] == "request_too_large" and "--max-request-mb" in error["message"]
        near = c.post("/v1/internal/encode", json={"text": "a " * 200_000})  # under the limit: served
        assert near.status_code == 200


# -- inputs that used to kill the process or answer 500 ---------------------------------------------------
def test_out_of_range_token_ids_are_400_and_the_server_lives(open_api: Served):
    vocab = open_api.app.models.require().vocab_size
    with open_api.client() as c:
        for tokens in ([vocab], [263 + vocab], [-1], [2**70], [1, 2, vocab]):
            assert_error(c.post("/v1/internal/decode", json={"tokens": tokens}), 400, "tokens")
            for extra in ({}, {"echo": True}, {"echo": True, "logprobs": 2}, {"stream": True, "echo": True}):
                assert_error(c.post("/v1/completions", json={"prompt": tokens, "max_tokens": 2, **extra}), 400, "prompt")
        assert_error(c.post("/v1/completions", json={"prompt": [[vocab]], "echo": True}), 400, "prompt")
        for field, value in (("logit_bias", {str(vocab): 5}), ("custom_token_bans", [vocab]),
                             ("custom_token_bans", f"1,{vocab}")):
            response = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2, field: value})
            assert_error(response, 400) and field in response.json()["error"]["message"]
        assert c.post("/v1/internal/decode", json={"tokens": [1, vocab - 1]}).status_code == 200
        assert c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200


def test_continue_without_an_assistant_message_is_400(open_api: Served):
    body = {"messages": [{"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Hi"}],
            "continue_": True, "max_tokens": 2}
    with open_api.client() as c:
        for route in ("/v1/chat/completions", "/v1/internal/chat-prompt"):
            assert_error(c.post(route, json=body), 400, "continue_")
        ok = {**body, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}]}
        assert c.post("/v1/chat/completions", json=ok).status_code == 200


@pytest.mark.parametrize("route,body,param", [
    ("/v1/completions", '{"prompt": "a\\ud800b", "max_tokens": 2}', "prompt"),
    ("/v1/internal/encode", '{"text": "\\udfff"}', "text"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "x\\ud800"}]}', "messages.0.content"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud83d"}]}]}',
     "messages.0.content.0.text"),
    ("/v1/completions", '{"prompt": "Hi", "stop": ["\\ud800"]}', "stop.0"),
])
def test_lone_surrogates_are_400_naming_the_field(open_api: Served, route: str, body: str, param: str):
    with open_api.client() as c:
        assert_error(c.post(route, content=body, headers={"Content-Type": "application/json"}), 400, param)
        paired = body.replace("\\ud800", "\\ud83d\\ude00").replace("\\udfff", "\\ud83d\\ude00")
        if paired != body:  # a real emoji, escaped as a pair, is fine
            assert c.post(route, content=paired, headers={"Content-Type": "application/json"}).status_code == 200


def test_malformed_message_parts_and_grammar_are_400(open_api: Served):
    with open_api.client() as c:
        for part in ({"type": "text", "text": 5}, {"type": "text"}, {"text": "no type"}):
            body = {"messages": [{"role": "user", "content": [part]}], "max_tokens": 2}
            assert_error(c.post("/v1/chat/completions", json=body), 400)
        image = {"type": "image_url", "image_url": {"url": "data:,"}}
        parts = [{"type": "text", "text": "Hi"}, image]
        assert_error(c.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": parts}]}),
                     400, "messages[0].content[1]")  # an empty data URL is not an image: refused, never dropped
        grammar = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "grammar_string": "root ::= ("})
        assert_error(grammar, 400, "grammar_string")
        assert c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "grammar_string": 'root ::= "a"'}).status_code == 200


# -- extension failures reach the client ---------------------------------------------------------------
class BrokenProcessor:
    @hookimpl
    def logits_processor(self) -> list[Any]:
        def explode(input_ids: Any, scores: Any) -> Any:
            raise RuntimeError("processor exploded")

        return [explode]


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_extension_processor_is_an_error_for_the_client(open_api: Served, stream: bool):
    extensions = open_api.app.extensions
    extensions.add("broken", BrokenProcessor())
    assert extensions.enable("broken")
    try:
        with open_api.client() as c:
            response = c.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 3, "stream": stream})
    finally:
        extensions.disable("broken")
        extensions.drain_notices()
    if not stream:
        error = assert_error(response, 500)
        assert error["code"] == "extension_error" and "processor exploded" in error["message"]
        return
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and "extension_error" in events[-2] and "processor exploded" in events[-2]
    assert '"finish_reason"' in events[-3]


def test_the_process_survives_the_whole_attack(open_api: Served):
    with open_api.client() as c:
        assert c.get("/v1/internal/model/info").json()["model_name"] == "tiny-llama.gguf"
    assert isinstance(httpx.get(f"{open_api.base}/v1/models", timeout=10).json()["data"], list)


# -- the layers below the API hold the same rules ---------------------------------------------------------
def test_model_manager_resolves_names_only_inside_the_folder(manager: ModelManager, models_dir: Path):
    absolute = str(models_dir / "tiny-llama.gguf")
    for name in (absolute, "../" + models_dir.name + "/tiny-llama.gguf", "", ".."):
        with pytest.raises(ModelNotFound):
            manager.resolve(name)
    assert manager.resolve_path(absolute).path == Path(absolute)  # the command line may name a path
    assert manager.resolve("tiny-llama.gguf").name == manager.resolve_path("tiny-llama.gguf").name
    with pytest.raises(RemoteCodeNotAllowed, match="--trust-remote-code"):
        manager.load("tiny-llama", loader="Transformers", params={"trust_remote_code": True})
    assert manager.model is None


def test_startup_may_name_a_model_by_path(models_dir: Path, tmp_path: Path):
    app = App.create(Settings(models_dir=tmp_path / "empty", user_data_dir=tmp_path,
                              model=str(models_dir / "tiny-llama.gguf")))
    check_startup(app)
    app.load_startup_model()
    try:
        assert app.models.model_name == "tiny-llama.gguf"
    finally:
        app.models.unload()


def test_llama_cpp_model_refuses_ids_outside_its_vocabulary(manager: ModelManager):
    model = manager.load("tiny-llama.gguf")
    for call in (lambda: model.detokenize([model.vocab_size]), lambda: model.detokenize([-1]),
                 lambda: model.token_bytes(model.vocab_size), lambda: model.token_text(-5)):
        with pytest.raises(InvalidTokenId, match="outside the vocabulary"):
            call()
    assert model.detokenize([model.vocab_size - 1]) is not None
