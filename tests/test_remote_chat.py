"""The Remote loader's two chat modes against llama-cpp-python's own server (which renders the tiny GGUF's
chat template): "hearth" sends Hearth's rendered prompt to /v1/completions, "server" sends an instruct
reply's messages to /v1/chat/completions. Which route was taken is read from the server's own access log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.remote_servers import llama_cpp_server
from tests.test_api_server import serve_api
from webui.app import App
from webui.chat_service import ChatOptions, ChatService, ChatUpdate, request_from_settings
from webui.config import Settings
from webui.errors import HearthError
from webui.prompts.characters import Character
from webui.prompts.chat import build_chat_prompt
from webui.prompts.history import ChatHistory

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")

GGUF = "tiny-llama.gguf"
SETTINGS = {"max_new_tokens": 12, "sampling": {"temperature": 0}}
INSTRUCT = ChatOptions(mode="instruct", default_persona=False)  # no system message: the messages are all
TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"


class Lcp:
    def __init__(self, url: str, log: Path):
        self.url, self.log = url, log

    def routes(self) -> list[str]:
        """The POST routes the server has logged so far, in order."""
        return re.findall(r'"POST (/v1/\S+) HTTP', self.log.read_text())


@pytest.fixture(scope="module")
def lcp(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lcp]:
    log = tmp_path_factory.mktemp("lcp_chat") / "server.log"
    with llama_cpp_server(models_dir / GGUF, log) as url:
        yield Lcp(url, log)


@pytest.fixture(scope="module")
def app(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    root = tmp_path_factory.mktemp("remote_chat")
    app = App.create(Settings(models_dir=models_dir, user_data_dir=root / "user_data"))
    yield app
    app.core.stop_all()
    app.models.unload()


def load(app: App, lcp: Lcp, chat: str | None) -> None:
    entry = {"url": lcp.url, "kind": "llama-cpp-python", "n_ctx": 512, **({"chat": chat} if chat else {})}
    path = app.settings.user_data_dir / "remotes.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"remotes": {"lcp": entry}}))
    app.models.load(next(m.name for m in app.models.list_models() if m.name.startswith("remote:lcp/")))


def reply(app: App, options: ChatOptions, text: str = "hello world") -> ChatUpdate:
    history = ChatHistory.new("Assistant")
    *_, last = ChatService(app).stream_reply(history, text, options, SETTINGS, save=False)
    assert last.done and last.finished is not None
    return last


def new_routes(lcp: Lcp, before: int) -> list[str]:
    return lcp.routes()[before:]


def test_server_mode_replies_through_the_servers_chat_template(app: App, lcp: Lcp) -> None:
    load(app, lcp, "server")
    assert app.models.model.info.extra["remote_chat"] == "server"
    before = len(lcp.routes())
    done = reply(app, INSTRUCT)
    assert new_routes(lcp, before) == ["/v1/chat/completions"]
    probe = request_from_settings(SETTINGS, prompt="")
    stops = (
        ChatService(app)
        .plan_reply(ChatHistory.new("Assistant"), "hello world", INSTRUCT, probe)
        .prompt.stop_strings
    )
    # the same server asked directly, with the same messages, greedy and no repeat penalty
    direct = httpx.post(
        f"{lcp.url}/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "hello world"}],
            "max_tokens": 12,
            "temperature": 0,
            "repeat_penalty": 1.0,
            "stop": list(stops),
        },
        timeout=60,
    ).json()
    expected = direct["choices"][0]["message"]["content"]
    assert done.finished.text.replace("\ufffd", "") == expected.replace("\ufffd", "")
    assert done.finished.usage.completion_tokens == direct["usage"]["completion_tokens"]


def test_hearth_mode_posts_hearths_prompt_to_completions(app: App, lcp: Lcp) -> None:
    load(app, lcp, None)  # the default
    assert app.models.model.info.extra["remote_chat"] == "hearth"
    before = len(lcp.routes())
    reply(app, INSTRUCT)
    assert new_routes(lcp, before) == ["/v1/completions"]


@pytest.mark.parametrize("mode", ["chat", "chat-instruct"])
def test_server_mode_transcripts_fall_back_to_completions(app: App, lcp: Lcp, mode: str) -> None:
    load(app, lcp, "server")
    before = len(lcp.routes())
    reply(app, ChatOptions(mode=mode))
    assert new_routes(lcp, before) == ["/v1/completions"]


def test_server_mode_continue_falls_back_to_completions(app: App, lcp: Lcp) -> None:
    load(app, lcp, "server")
    history = ChatHistory.new("Assistant").with_turn("user", "hi").with_turn("assistant", "Hello")
    before = len(lcp.routes())
    *_, last = ChatService(app).stream_reply(
        history, None, INSTRUCT, SETTINGS, continue_last=True, save=False
    )
    assert last.done
    assert new_routes(lcp, before) == ["/v1/completions"]


def test_chat_prompt_messages_are_the_rendered_kept_turns() -> None:
    history = ChatHistory.new("Assistant")
    for i in range(6):
        history = history.with_turn("user", f"question {i} " * 8).with_turn("assistant", f"answer {i} " * 8)
    kwargs = dict(
        character=Character("Assistant", context="Be brief."),
        user_name="You",
        template_text=TEMPLATE,
        count_tokens=len,
        max_prompt_tokens=400,
    )
    prompt = build_chat_prompt(history, "last one", mode="instruct", **kwargs)
    assert prompt.dropped_turns > 0  # truncated: the messages are the kept turns only
    assert prompt.messages is not None and prompt.messages[0] == {"role": "system", "content": "Be brief."}
    assert prompt.messages[-1] == {"role": "user", "content": "last one"}
    rendered = "".join(f"<{m['role']}>{m['content']}</s>" for m in prompt.messages) + "<assistant>"
    assert prompt.text == rendered
    assert len(prompt.messages) == 1 + 12 - prompt.dropped_turns + 1
    for mode in ("chat", "chat-instruct"):
        assert build_chat_prompt(history, "last one", mode=mode, **kwargs).messages is None
    assert build_chat_prompt(history, None, mode="instruct", continue_last=True, **kwargs).messages is None
    assert build_chat_prompt(history, "I", mode="instruct", impersonate=True, **kwargs).messages is None


def test_unknown_chat_mode_is_refused_naming_it(app: App, lcp: Lcp) -> None:
    with pytest.raises(HearthError, match="remote_chat: 'template' is not one of hearth, server"):
        load(app, lcp, "template")


def test_api_chat_completions_use_the_servers_template_in_server_mode(
    lcp: Lcp, models_dir: Path, tmp_path: Path
) -> None:
    user_data = tmp_path / "user_data"
    user_data.mkdir()
    entry = {"url": lcp.url, "kind": "llama-cpp-python", "n_ctx": 512, "chat": "server"}
    (user_data / "remotes.yaml").write_text(yaml.safe_dump({"remotes": {"lcp": entry}}))
    with serve_api(models_dir, user_data, model=None) as served:
        name = next(m.name for m in served.app.models.list_models() if m.name.startswith("remote:lcp/"))
        assert httpx.post(f"{served.base}/v1/internal/model/load", json={"model_name": name}, timeout=60).is_success
        before = len(lcp.routes())
        body = {"messages": [{"role": "user", "content": "hello world"}], "max_tokens": 8, "temperature": 0}
        answer = httpx.post(f"{served.base}/v1/chat/completions", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] > 0
        assert new_routes(lcp, before) == ["/v1/chat/completions"]
