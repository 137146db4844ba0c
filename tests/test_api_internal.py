"""The /v1/internal routes (text-generation-webui's), on the tiny GGUF through a real server."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_api_server import Served, assert_error, serve_api

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def served(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_api(models_dir, tmp_path_factory.mktemp("user_data")) as s:
        yield s


def test_models_list_and_info(served: Served):
    with served.client() as c:
        ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
        assert ids == ["tiny-llama.gguf", "tiny-llama"]  # the loaded model first
        assert c.get("/v1/models/tiny-llama").json()["id"] == "tiny-llama"
        assert c.get("/v1/internal/model/list").json() == {"model_names": ["tiny-llama", "tiny-llama.gguf"]}
        info = c.get("/v1/internal/model/info").json()
    assert info["model_name"] == "tiny-llama.gguf" and info["loader"] == "llama.cpp" and info["lora_names"] == []
    assert info["info"]["vocab_size"] == served.app.models.model.vocab_size


def test_encode_decode_token_count_round_trip(served: Served):
    model = served.app.models.require()
    with served.client() as c:
        encoded = c.post("/v1/internal/encode", json={"text": PROMPT}).json()
        assert encoded == {"tokens": model.tokenize(PROMPT), "length": len(model.tokenize(PROMPT))}
        no_bos = c.post("/v1/internal/encode", json={"text": PROMPT, "add_bos_token": False}).json()
        assert no_bos["length"] == encoded["length"] - 1
        assert c.post("/v1/internal/decode", json={"tokens": no_bos["tokens"]}).json() == {"text": PROMPT}
        assert c.post("/v1/internal/token-count", json={"text": PROMPT}).json() == {"length": encoded["length"]}
        assert_error(c.post("/v1/internal/decode", json={"tokens": "1 2"}), 400, "tokens")


def test_logits_raw_and_after_samplers(served: Served):
    raw = served.app.core.top_tokens(PROMPT, 5)
    with served.client() as c:
        flat = c.post("/v1/internal/logits", json={"prompt": PROMPT, "top_logits": 5}).json()
        body = c.post("/v1/internal/logits", json={"prompt": PROMPT, "top_logits": 5, "detailed": True}).json()
        assert [t["token_id"] for t in body["top_logits"]] == [t.token_id for t in raw]
        assert all(math.isclose(t["prob"], math.exp(t["logprob"])) for t in body["top_logits"])
        assert body["logits"][body["top_logits"][0]["token"]] == body["top_logits"][0]["prob"]
        sampled = c.post("/v1/internal/logits", json={"prompt": PROMPT, "top_logits": 5, "use_samplers": True,
                                                        "top_k": 2, "rep_pen": 9, "detailed": True}).json()["top_logits"]
        sampled_flat = c.post("/v1/internal/logits", json={"prompt": PROMPT, "top_logits": 5, "use_samplers": True,
                                                             "top_k": 2}).json()
        assert_error(c.post("/v1/internal/logits", json={"prompt": PROMPT, "top_k": -1}), 400, "top_k")
    # text-generation-webui's wire shape: one flat {token: probability} object, most likely first
    assert flat == body["logits"] and list(flat) == list(dict.fromkeys(t.text for t in raw))
    assert [t["token_id"] for t in sampled[:2]] == [t.token_id for t in raw[:2]]
    assert math.isclose(sum(t["prob"] for t in sampled[:2]), 1, rel_tol=1e-4) and sampled[2]["prob"] == 0
    assert list(sampled_flat.values())[:2] == [t["prob"] for t in sampled[:2]] and sampled_flat[sampled[2]["token"]] == 0


def test_logits_of_a_text_longer_than_the_context_is_a_clear_400(served: Served):
    n_ctx = served.app.models.require().n_ctx
    with served.client() as c:
        response = c.post("/v1/internal/logits", json={"prompt": "word " * (2 * n_ctx)})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and f"context of {n_ctx}" in error["message"]


def test_chat_prompt_reports_stops_and_length(served: Served):
    body = {"messages": [{"role": "user", "content": "Hi there"}], "mode": "chat", "user_name": "Ann"}
    with served.client() as c:
        result = c.post("/v1/internal/chat-prompt", json=body).json()
        assert result["prompt"].rstrip().endswith("Assistant:") and "Ann: Hi there" in result["prompt"]
        assert "\nAnn:" in result["stop_strings"] and result["dropped_turns"] == 0
        assert result["length"] == len(served.app.models.require().tokenize(result["prompt"]))


def test_load_and_unload(served: Served):
    with served.client() as c:
        loaded = c.post("/v1/internal/model/load", json={"model_name": "tiny-llama.gguf", "args": {"n_ctx": 512}}).json()
        assert loaded["model_name"] == "tiny-llama.gguf" and served.app.models.require().n_ctx >= 512
        assert_error(c.post("/v1/internal/model/load", json={"model_name": "tiny-llama.gguf", "args": {"warp": 9}}), 400)
        assert c.post("/v1/internal/model/unload").json()["model_name"] == "None"
        assert_error(c.post("/v1/completions", json={"prompt": PROMPT}), 503)
        again = c.post("/v1/internal/model/load", json={"model_name": "tiny-llama.gguf", "args": {"loader": "llama.cpp"}})
        assert again.json()["loader"] == "llama.cpp"


def test_stop_generation_with_nothing_running(served: Served):
    with served.client() as c:
        assert c.post("/v1/internal/stop-generation").json() == {"status": "ok", "stopped": 0}


def test_a_refused_load_keeps_the_model(served: Served):
    """Issue 13: a loader that cannot load the model is refused before the loaded model is freed."""
    with served.client() as c:
        hf_with_llamacpp = c.post("/v1/internal/model/load", json={"model_name": "tiny-llama", "loader": "llama.cpp"})
        gguf_with_transformers = c.post("/v1/internal/model/load",
                                        json={"model_name": "tiny-llama.gguf", "args": {"loader": "Transformers"}})
        info = c.get("/v1/internal/model/info").json()
        tokens = c.post("/v1/internal/token-count", json={"text": PROMPT})
    assert "llama.cpp loader cannot load tiny-llama" in assert_error(hf_with_llamacpp, 400)["message"]
    assert "Transformers loader cannot load tiny-llama.gguf" in assert_error(gguf_with_transformers, 400)["message"]
    assert (info["model_name"], info["loader"]) == ("tiny-llama.gguf", "llama.cpp")
    assert tokens.status_code == 200 and tokens.json()["length"] > 0


def test_a_load_failing_after_the_unload_reports_no_model(served: Served, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    """When loading fails after the old model was freed, the error says so and model/info tells the truth:
    text-generation-webui's 'None' (modules/shared.py, modules/api/models.py), with no loader and no info."""
    (tmp_path / "truncated.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\0" * 10)
    models = served.app.models
    original = models.models_dir
    monkeypatch.setattr(models, "models_dir", tmp_path)
    try:
        with served.client() as c:
            failed = c.post("/v1/internal/model/load", json={"model_name": "truncated.gguf"})
            info = c.get("/v1/internal/model/info").json()
    finally:
        monkeypatch.setattr(models, "models_dir", original)
        models.load("tiny-llama.gguf")  # the module's other tests need it
    assert "the previous model was unloaded (tiny-llama.gguf)" in assert_error(failed, 400)["message"]
    assert info == {"model_name": "None", "loader": None, "lora_names": [], "info": None}
