"""The extension manager on a real App and tiny-llama.gguf: discovery, enabling, settings, every hook
changing a real generation or chat prompt, and a failing extension being disabled without losing work."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from webui.app import App
from webui.chat_service import ChatOptions, ChatService
from webui.config import Settings, parse_settings
from webui.extension_sources import discover
from webui.generation import GenerationRequest
from webui.param_specs import ParamSpec
from webui.plugins import hookimpl
from webui.prompts.history import ChatHistory
from webui.sampling import SamplingParams

GREEDY = SamplingParams(do_sample=False, ban_eos_token=True)
PROMPT = "Once upon a time there was a little village"
CHAT_SETTINGS: dict[str, Any] = {"max_new_tokens": 6, "sampling": GREEDY.model_dump()}
BUILTINS = {"example", "lorebook", "long_memory", "character_bias"}


@pytest.fixture
def make_app(models_dir: Path, tmp_path: Path):
    apps: list[App] = []

    def make(*extensions: str, **settings: Any) -> App:
        app = App.create(Settings(models_dir=models_dir, user_data_dir=tmp_path / "user",
                                  extensions=list(extensions), **settings))
        app.models.load("tiny-llama.gguf")
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.models.unload()


def generate(app: App, **fields: Any):
    return app.core.generate(GenerationRequest(**{"prompt": PROMPT, "max_new_tokens": 8, "sampling": GREEDY} | fields))


class Boom:
    """An extension whose hooks raise, to prove they cannot take a request down."""

    def __init__(self, *hooks: str):
        self.hooks = set(hooks)

    def _maybe(self, hook: str) -> None:
        if hook in self.hooks:
            raise RuntimeError(f"boom in {hook}")

    @hookimpl
    def input_modifier(self, text: str) -> str:
        self._maybe("input_modifier")
        return text

    @hookimpl
    def history_modifier(self, history: ChatHistory) -> ChatHistory:
        self._maybe("history_modifier")
        return history

    @hookimpl
    def output_modifier(self, text: str) -> str:
        self._maybe("output_modifier")
        return text

    @hookimpl
    def logits_processor(self) -> list[Any]:
        def explode(input_ids: Any, scores: Any) -> Any:
            self._maybe("processor")
            return scores

        return [explode]


# -- discovery and enabling -------------------------------------------------------------------------
def test_builtins_and_user_drop_ins_are_discovered(tmp_path: Path) -> None:
    assert BUILTINS <= set(discover())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "script.py").write_text("X = 1\n")
    (tmp_path / "_private").mkdir()
    (tmp_path / "_private" / "__init__.py").write_text("")
    (tmp_path / "no_code").mkdir()
    found = discover([tmp_path], entry_points=False)
    assert set(found) == {"mine"} and found["mine"].origin.endswith("mine")


def test_user_extension_from_a_folder_changes_generation(make_app, tmp_path: Path) -> None:
    folder = tmp_path / "exts" / "suffixer"
    folder.mkdir(parents=True)
    (folder / "helper.py").write_text("SUFFIX = ' [seen]'\n")
    (folder / "script.py").write_text(
        "from webui.plugins import hookimpl\nfrom .helper import SUFFIX\n\n"
        "@hookimpl\ndef output_modifier(text):\n    return text + SUFFIX\n"
    )
    app = make_app()
    from webui.extensions import ExtensionManager

    manager = ExtensionManager(app.plugins, app.settings, folders=[tmp_path / "exts"], entry_points=False)
    manager.start(app)
    app.core.extensions = manager
    assert manager.enable("suffixer") and manager.notices == []
    assert generate(app).text.endswith(" [seen]")


def test_entry_point_extension_is_found_and_enabled(make_app, tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site"
    (site / "hearth_demo-0.1.dist-info").mkdir(parents=True)
    (site / "hearth_demo-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: hearth-demo\nVersion: 0.1\n")
    (site / "hearth_demo-0.1.dist-info" / "entry_points.txt").write_text("[hearth.extensions]\ndemo = hearth_demo_ext\n")
    (site / "hearth_demo_ext.py").write_text(
        "from webui.plugins import hookimpl\n\n@hookimpl\ndef custom_css():\n    return '.demo {}'\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "hearth_demo_ext", raising=False)
    app = make_app("demo")
    assert "entry point" in discover()["demo"].origin
    assert app.extensions.enabled == ["demo"] and ".demo {}" in app.extensions.css()


def test_unknown_and_broken_extensions_become_notices(make_app, tmp_path: Path) -> None:
    app = make_app("no_such_extension", "example")
    assert app.extensions.enabled == ["example"]
    [notice] = app.extensions.drain_notices()
    assert notice.extension == "no_such_extension" and "not found" in notice.message
    assert app.extensions.drain_notices() == []

    app.extensions.add("no_hooks", object())  # an extension implementing nothing is fine
    assert app.extensions.enable("no_hooks") and app.extensions.params("no_hooks") == {}
    bad = tmp_path / "bad"
    (bad / "syntax").mkdir(parents=True)
    (bad / "syntax" / "__init__.py").write_text("def (:\n")
    from webui.extensions import ExtensionManager

    manager = ExtensionManager(app.plugins, app.settings, folders=[bad], entry_points=False)
    assert not manager.enable("syntax")
    assert manager.notices[0].hook == "load" and "syntax" not in manager.enabled


def test_params_defaults_apply_and_persist_in_settings_yaml(make_app, tmp_path: Path, loaders) -> None:
    app = make_app("example", "character_bias")
    ext = app.extensions
    assert ext.params("character_bias") == {"activate": True, "bias": "*I am so happy*"}
    ext.set_params("example", {"max_new_tokens": 3.0, "shout": "true"})  # as a form might send them
    assert ext.params("example")["max_new_tokens"] == 3 and ext.params("example")["shout"] is True
    with pytest.raises(ValueError, match="no setting"):
        ext.set_params("example", {"nope": 1})
    path = tmp_path / "settings.yaml"
    path.write_text("theme: dark\n")
    ext.save_settings_file(path)
    saved = yaml.safe_load(path.read_text())
    assert saved["theme"] == "dark" and saved["extensions"] == ["example", "character_bias"]
    assert saved["extension_params"] == {"example": {"max_new_tokens": 3, "shout": True}}

    settings = parse_settings(["--settings", str(path), "--models-dir", str(app.settings.models_dir)], loaders,
                              cmd_flags_file=None)
    again = App.create(settings)
    assert again.extensions.enabled == ["example", "character_bias"]
    assert again.extensions.params("example")["max_new_tokens"] == 3


class TypedSettings(BaseModel):
    depth: int = Field(4, ge=1, le=100, description="Messages searched.")


class Typed:
    """An extension declaring typed settings (specs with ranges and descriptions) through the real hook."""

    def __init__(self, declared: Any):
        self.declared = declared

    @hookimpl
    def params(self) -> Any:
        return self.declared

    @hookimpl
    def output_modifier(self, text: str, state: dict[str, Any]) -> str:
        return f"{text} [{state['params']}]"


def test_typed_params_are_validated_against_their_ranges(make_app, tmp_path: Path) -> None:
    app = make_app(extra={"extension_params": {"typed": {"budget": 99999, "shout": "yes"}}})  # saved: one no longer fits
    spec = ParamSpec("", "int", 512, "Most tokens of entries added to the prompt.", 0, 8192)
    app.extensions.add("typed", Typed({"budget": spec, "shout": False}))
    assert app.extensions.enable("typed")
    assert app.extensions.specs("typed")["budget"] == replace(spec, name="budget")
    assert app.extensions.params("typed") == {"budget": 512, "shout": True}  # the bad saved value is ignored
    with pytest.raises(ValueError, match="extension 'typed': budget: 9000 is above the maximum 8192"):
        app.extensions.set_params("typed", {"budget": 9000})
    assert app.extensions.set_params("typed", {"budget": 256.0}) == {"budget": 256, "shout": True}
    assert generate(app).text.endswith(" [{'budget': 256, 'shout': True}]")  # plain values reach the hooks

    app.extensions.add("model", Typed(TypedSettings))
    assert app.extensions.enable("model") and app.extensions.params("model") == {"depth": 4}
    assert app.extensions.specs("model")["depth"].help == "Messages searched."
    with pytest.raises(ValueError, match="depth: 0 is below the minimum 1"):
        app.extensions.set_params("model", {"depth": 0})

    app.extensions.add("nonsense", Typed({"depth": ParamSpec("", "int", 500, "", 1, 100)}))
    assert not app.extensions.enable("nonsense")
    assert "500 is above the maximum 100" in app.extensions.drain_notices()[-1].message


def test_disabling_at_runtime_stops_the_hooks(make_app) -> None:
    app = make_app("example")
    app.extensions.set_params("example", {"output_suffix": "!!"})
    assert generate(app).text.endswith("!!")
    assert app.extensions.set_enabled([]) == []
    assert not generate(app).text.endswith("!!")
    assert app.extensions.set_enabled(["example"]) == ["example"]
    assert generate(app).text.endswith("!!")  # applied params survive a disable / enable


# -- hooks in the generation core -------------------------------------------------------------------
def test_input_modifier_reaches_the_tokenizer(make_app) -> None:
    app = make_app("example")
    plain = generate(app)
    app.extensions.set_params("example", {"input_suffix": " and a river ran through it"})
    changed = generate(app)
    extra = len(app.core.tokenize(" and a river ran through it", add_bos=False))
    assert changed.usage.prompt_tokens == plain.usage.prompt_tokens + extra


def test_output_and_state_modifiers(make_app) -> None:
    app = make_app("example")
    app.extensions.set_params("example", {"output_suffix": " THE END", "max_new_tokens": 3})
    done = generate(app, max_new_tokens=20)
    assert done.usage.completion_tokens == 3 and done.text.endswith(" THE END")


def test_logits_processor_ban_is_respected(make_app) -> None:
    app = make_app("example")
    first = generate(app).token_ids
    text = app.core.detokenize(first[:2])
    banned = set(app.core.tokenize(text, add_bos=False))
    assert banned & set(first)  # the unbanned reply uses some of them
    app.extensions.set_params("example", {"banned_text": text})
    done = generate(app)
    assert len(done.token_ids) == 8 and not banned & set(done.token_ids)


def test_tokenizer_modifier_changes_the_prompt_ids(make_app) -> None:
    class KeepLastThree:
        @hookimpl
        def tokenizer_modifier(self, input_ids: list[int]) -> list[int]:
            return input_ids[-3:]

    app = make_app()
    app.extensions.add("last_three", KeepLastThree())
    app.extensions.enable("last_three")
    assert generate(app).usage.prompt_tokens == 3


def test_a_raising_hook_is_disabled_and_the_generation_completes(make_app) -> None:
    app = make_app("example")
    app.extensions.set_params("example", {"output_suffix": "!"})
    app.extensions.add("boom", Boom("input_modifier"))
    app.extensions.enable("boom")
    done = generate(app)
    assert done.usage.completion_tokens == 8 and done.text.endswith("!")  # example still ran
    assert app.extensions.enabled == ["example"]
    [notice] = app.extensions.drain_notices()
    assert notice.extension == "boom" and notice.hook == "input_modifier" and "boom in input_modifier" in notice.message


def test_a_logits_processor_raising_mid_generation_is_skipped(make_app) -> None:
    app = make_app()
    app.extensions.add("boom", Boom("processor"))
    app.extensions.enable("boom")
    done = generate(app)
    assert done.usage.completion_tokens == 8
    assert app.extensions.enabled == [] and app.extensions.notices[0].hook == "logits_processor"


def test_a_hook_returning_the_wrong_type_is_disabled(make_app) -> None:
    class Wrong:
        @hookimpl
        def state_modifier(self, request: GenerationRequest) -> Any:
            return request.model_copy(update={"max_new_tokens": -5})  # invalid: validated again

    app = make_app()
    app.extensions.add("wrong", Wrong())
    app.extensions.enable("wrong")
    assert generate(app).usage.completion_tokens == 8
    assert "max_new_tokens" in app.extensions.notices[0].message


# -- hooks in the chat service ----------------------------------------------------------------------
def test_chat_hooks_shape_prompt_reply_and_saved_history(make_app) -> None:
    app = make_app("example")
    app.extensions.set_params("example", {"shout": True, "prompt_note": "NOTE: it is raining.",
                                          "reply_prefix": "Well,", "output_suffix": " (ok)"})
    service = ChatService(app)
    history = ChatHistory.new("Assistant", "Hello there.")
    options = ChatOptions(mode="chat")
    prompt = service.build_prompt(history, "what now?", options, max_new_tokens=6)
    assert prompt.text.startswith("NOTE: it is raining.")
    *_, last = service.stream_reply(history, "what now?", options, CHAT_SETTINGS)
    user, reply = last.history.turns[-2:]
    assert user.content == "WHAT NOW?" and user.metadata["visible"] == "what now?"
    assert reply.content.startswith("Well,") and reply.content.endswith(" (ok)")
    saved = service.histories.load("Assistant", history.chat_id)
    assert saved.turns[-1].content == reply.content


def test_a_raising_chat_hook_never_loses_the_chat(make_app) -> None:
    app = make_app()
    app.extensions.add("boom", Boom("history_modifier", "output_modifier"))
    app.extensions.enable("boom")
    service = ChatService(app)
    history = ChatHistory.new("Assistant", "Hello there.")
    *_, last = service.stream_reply(history, "tell me", ChatOptions(mode="chat"), CHAT_SETTINGS)
    assert last.done and last.finished.usage.completion_tokens == 6
    saved = service.histories.load("Assistant", history.chat_id)
    assert [t.role for t in saved.turns] == ["assistant", "user", "assistant"]
    assert [n.hook for n in app.extensions.notices] == ["history_modifier"]


def test_css_and_js_are_collected(make_app) -> None:
    app = make_app("example")
    assert "hearth-example" in app.extensions.css() and "console.debug" in app.extensions.js()


def test_api_chat_completions_go_through_the_chat_hooks(models_dir: Path, tmp_path: Path) -> None:
    """The API's chat completions plan the reply like the Chat tab: chat input, custom prompt and bot
    prefix hooks shape the prompt, the prefix starts the reply, the output modifier ends a whole one."""
    import json

    from tests.test_api_server import serve_api

    with serve_api(models_dir, tmp_path / "user", extensions=["example"]) as served:
        served.app.extensions.set_params("example", {"shout": True, "prompt_note": "NOTE: it is raining.",
                                                     "reply_prefix": "Well,", "output_suffix": " (ok)"})
        body = {"messages": [{"role": "user", "content": "what now?"}], "mode": "chat", "max_tokens": 6,
                "temperature": 0, "ban_eos_token": True}
        with served.client(None) as client:
            prompt = client.post("/v1/internal/chat-prompt", json=body).json()["prompt"]
            whole = client.post("/v1/chat/completions", json=body).json()
            with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
                lines = [line[6:] for line in response.iter_lines() if line.startswith("data: {")]
    assert prompt.startswith("NOTE: it is raining.") and "WHAT NOW?" in prompt and prompt.endswith("Well,")
    content = whole["choices"][0]["message"]["content"]
    assert content.startswith("Well,") and content.endswith(" (ok)") and whole["usage"]["completion_tokens"] == 6
    deltas = [json.loads(line)["choices"][0]["delta"].get("content") for line in lines]
    assert deltas[:2] == ["", "Well,"]  # the role chunk, then the prefix
    assert content == ("".join(d or "" for d in deltas)).strip() + " (ok)"
