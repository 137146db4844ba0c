"""The API over a remote model: listed in /v1/models and /v1/internal/model/list, loaded through
/v1/internal/model/load, completions served by the remote, an unsupported sampler a 400 naming it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.remote_servers import llama_cpp_server
from tests.test_api_server import Served, serve_api

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")


@pytest.fixture(scope="module")
def served(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("remote_api")
    with llama_cpp_server(models_dir / "tiny-llama.gguf", root / "server.log") as url:
        user_data = root / "user_data"
        user_data.mkdir()
        remotes = user_data / "remotes.yaml"
        remotes.write_text(
            yaml.safe_dump({"remotes": {"lcp": {"url": url, "kind": "llama-cpp-python", "n_ctx": 512}}})
        )
        with serve_api(models_dir, user_data, model=None) as s:  # App.create reads user_data/remotes.yaml
            yield s


def test_remote_is_listed_loaded_and_served(served: Served, models_dir: Path) -> None:
    name = f"remote:lcp/{models_dir / 'tiny-llama.gguf'}"
    assert name in [m["id"] for m in httpx.get(f"{served.base}/v1/models").json()["data"]]
    assert name in httpx.get(f"{served.base}/v1/internal/model/list").json()["model_names"]
    loaded = httpx.post(f"{served.base}/v1/internal/model/load", json={"model_name": name}, timeout=60)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["loader"] == "Remote" and loaded.json()["info"]["context_length"] == 512

    body = {"model": name, "prompt": "hello world", "max_tokens": 6, "temperature": 0}
    reply = httpx.post(f"{served.base}/v1/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] == 6

    refused = httpx.post(
        f"{served.base}/v1/completions", json={**body, "temperature": 0.8, "dry_multiplier": 0.8}, timeout=60
    )
    assert refused.status_code == 400
    assert "dry_multiplier" in refused.json()["error"]["message"]
