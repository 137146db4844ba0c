"""In the browser: a remote model (llama-cpp-python's own server on the tiny GGUF, configured in
user_data/remotes.yaml) shows up in the Model tab, loads with the Remote loader, and the Chat tab gets a
reply from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.remote_servers import llama_cpp_server
from webui.app import App
from webui.config import Settings

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]
pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")

BOT = "#chat-chatbot [data-testid='bot']"


@pytest.fixture(scope="module")
def lcp_url(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_cpp_server(
        models_dir / "tiny-llama.gguf", tmp_path_factory.mktemp("lcp") / "server.log"
    ) as url:
        yield url


@pytest.fixture
def ui_app(ui_settings: Settings, lcp_url: str) -> Iterator[App]:
    remotes = ui_settings.user_data_dir / "remotes.yaml"
    remotes.write_text(
        yaml.safe_dump({"remotes": {"lcp": {"url": lcp_url, "kind": "llama-cpp-python", "n_ctx": 512}}})
    )
    ui_settings.extra["generation"] = {"max_new_tokens": 32}  # prompt and reply fit the server's 512
    app = App.create(ui_settings)
    yield app
    app.core.stop_all()
    app.models.unload()


@pytest.mark.browser
def test_remote_model_is_listed_loads_and_chats(page: Any, ui_server: UIServer, models_dir: Path) -> None:
    name = f"remote:lcp/{models_dir / 'tiny-llama.gguf'}"
    page.get_by_role("tab", name="Model").click()
    page.wait_for_selector("#model-load")
    page.locator("#model-dropdown input").click()
    page.get_by_role("option", name=name, exact=True).click()
    page.wait_for_function("document.querySelector('#loader-dropdown input')?.value === 'Remote'")
    page.locator("#model-load").click()
    page.wait_for_function(
        f"document.querySelector('#model-status').textContent.includes({name!r})", timeout=120_000
    )
    assert ui_server.app.models.model_name == name
    assert ui_server.app.models.model.n_ctx == 512  # from remotes.yaml: this server does not tell it
    ui_server.shot(page, "remote-loaded")

    page.reload()  # as a person opening the UI with the remote model loaded
    page.wait_for_selector("button[role='tab']")
    page.wait_for_selector(BOT)  # the Assistant's greeting, in the Chat tab
    page.fill("#chat-input textarea", "Hello over there")
    page.click("#chat-generate")
    page.wait_for_function(f'document.querySelectorAll("{BOT}").length == 2')
    page.wait_for_function(f'[...document.querySelectorAll("{BOT}")].at(-1).innerText.trim().length > 0')
    assert page.locator(".toast-body.error").count() == 0
    ui_server.shot(page, "remote-chat")
