"""The plugin contract cannot drift (datasette's test_plugin_hooks_are_documented / _have_tests): every hook
of webui/plugins.py is documented with its exact arguments in docs/extensions.md or docs/loaders.md, says
in its docstring when it is called and what it returns, and has a test of its own named ``test_hook_<hook>``
(``grep -rn "def test_hook_" tests/``). Those tests are below (``test_hook_hearth_loaders`` is in
test_loader_contract.py): each registers a tiny extension through the real hooks (the App's plugin manager)
and shows the hook's effect on a real App over the scripted model, or on the real, served UI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import pytest
import torch

from tests.scripted_loader import ScriptedModel, write_script
from webui.app import App
from webui.chat_service import ChatOptions, ChatService, ChatUpdate
from webui.config import Settings
from webui.events import Finished, TextChunk
from webui.generation import GenerationRequest
from webui.plugins import hookimpl, make_plugin_manager
from webui.prompts.chat import ChatPrompt
from webui.prompts.history import ChatHistory
from webui.sampling import SamplingParams

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "extensions.md", ROOT / "docs" / "loaders.md")
GREEDY = SamplingParams(do_sample=False)


def hook_specs() -> dict[str, Any]:
    """Every hook Hearth's plugin manager declares, by name (its pluggy HookSpec)."""
    hooks = make_plugin_manager(load_entry_points=False).hook
    return {name: caller.spec for name, caller in vars(hooks).items() if getattr(caller, "spec", None)}


HOOKS = sorted(hook_specs())


# -- documented and tested ----------------------------------------------------------------------------
@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_are_documented(hook: str) -> None:
    spec = hook_specs()[hook]
    signature = f"`{hook}({', '.join(spec.argnames)})`"
    assert any(signature in doc.read_text(encoding="utf-8") for doc in DOCS), f"{signature} is in no doc"
    doc = " ".join((spec.function.__doc__ or "").split())
    assert doc.startswith("Called") and "return" in doc.lower(), (
        f"{hook}: say when it is called, what it returns"
    )


def test_documented_hooks_exist() -> None:
    """The hook tables name no hook that is gone (renamed or removed)."""
    documented = set()
    for doc in DOCS:
        for row in re.findall(r"^\|([^|\n]*)\|", doc.read_text(encoding="utf-8"), flags=re.MULTILINE):
            documented |= set(re.findall(r"`(\w+)\(", row))
    assert documented and documented <= set(HOOKS), documented - set(HOOKS)


def test_plugin_hooks_have_tests() -> None:
    tests = {
        name
        for path in (ROOT / "tests").glob("test_*.py")
        for name in re.findall(
            r"^def test_hook_(\w+)\(", path.read_text(encoding="utf-8"), flags=re.MULTILINE
        )
    }
    assert not set(HOOKS) - tests, f"hooks without a test_hook_<hook>: {sorted(set(HOOKS) - tests)}"
    assert not tests - set(HOOKS), f"test_hook_<name> tests of no hook: {sorted(tests - set(HOOKS))}"


# -- helpers --------------------------------------------------------------------------------------------
def load_script(app: App, *replies: list[str], **params: Any) -> ScriptedModel:
    # byte tokens make chat prompts long
    write_script(app.settings.models_dir, "script", *replies, n_ctx=4096)
    return app.models.load("script", params=params)


def add(app: App, name: str, plugin: object) -> None:
    app.extensions.add(name, plugin)
    assert app.extensions.enable(name) and app.extensions.notices == []


def generate(app: App, prompt: str = "Tell me:", **fields: Any) -> Finished:
    return app.core.generate(
        GenerationRequest(**{"prompt": prompt, "max_new_tokens": 10, "sampling": GREEDY} | fields)
    )


def chat(app: App, text: str, history: ChatHistory | None = None) -> ChatUpdate:
    settings = {"max_new_tokens": 10, "sampling": GREEDY.model_dump()}
    history = history or ChatHistory.new("Assistant", "Hello there.")
    *_, last = ChatService(app).stream_reply(history, text, ChatOptions(mode="chat"), settings)
    return last


def prompt_of(model: ScriptedModel) -> str:
    """The text of the first prompt the model read."""
    return model.detokenize(model.calls[0])


# -- extension hooks: enabling and settings -------------------------------------------------------------
def test_hook_setup(scripted_app: App) -> None:
    calls = []

    class Greeter:
        @hookimpl
        def params(self) -> dict[str, Any]:
            return {"greeting": "hi"}

        @hookimpl
        def setup(self, app: App) -> None:
            calls.append((app, app.extensions.params("greeter")))  # params are declared first

    add(scripted_app, "greeter", Greeter())
    assert calls == [(scripted_app, {"greeting": "hi"})]
    scripted_app.extensions.disable("greeter")
    assert scripted_app.extensions.enable("greeter") and len(calls) == 2  # every time it is enabled


def test_hook_params(scripted_app: App) -> None:
    class Knobs:
        @hookimpl
        def params(self) -> dict[str, Any]:
            return {"on": False, "times": 2, "ratio": 0.5, "suffix": "!"}

        @hookimpl
        def output_modifier(self, text: str, state: dict[str, Any]) -> str | None:
            knobs = state["params"]
            return text + knobs["suffix"] * knobs["times"] if knobs["on"] else None

    load_script(scripted_app, ["Hi"])
    add(scripted_app, "knobs", Knobs())
    assert scripted_app.extensions.params("knobs") == {"on": False, "times": 2, "ratio": 0.5, "suffix": "!"}
    assert generate(scripted_app).text == "Hi"
    scripted_app.extensions.set_params("knobs", {"on": "true", "times": 3.0})  # as a form sends them
    assert generate(scripted_app).text == "Hi!!!"
    scripted_app.extensions.store_settings()
    assert scripted_app.settings.extra["extension_params"]["knobs"] == {"on": True, "times": 3}


# -- extension hooks: the generation core ---------------------------------------------------------------
def test_hook_input_modifier(scripted_app: App) -> None:
    seen = []

    class Dogs:
        @hookimpl
        def input_modifier(self, text: str, state: dict[str, Any], is_chat: bool) -> str:
            seen.append((text, is_chat, state["is_chat"]))
            return text.replace("cats", "dogs")

    model = load_script(scripted_app, ["Hi"])
    add(scripted_app, "dogs", Dogs())
    generate(scripted_app, "I like cats:")
    assert model.calls[0] == model.tokenize("I like dogs:")  # the whole prompt, before tokenizing
    model.calls.clear()
    last = chat(scripted_app, "cats?")
    assert seen == [("I like cats:", False, False), ("cats?", True, True)]  # in chat: the new message
    assert last.history.turns[-2].content == "dogs?" and "dogs?" in prompt_of(model)


def test_hook_output_modifier(scripted_app: App) -> None:
    seen = []

    class Loud:
        @hookimpl
        def output_modifier(self, text: str, is_chat: bool) -> str:
            seen.append((text, is_chat))
            return text.upper()

    load_script(scripted_app, ["Hel", "lo"])
    add(scripted_app, "loud", Loud())
    events = list(
        scripted_app.core.stream(GenerationRequest(prompt="Say:", max_new_tokens=5, sampling=GREEDY))
    )
    assert (
        "".join(e.text for e in events if isinstance(e, TextChunk)) == "Hello"
    )  # streamed chunks as they were
    assert events[-1].text == "HELLO"
    last = chat(scripted_app, "greet me")
    assert last.text == "HELLO" and last.history.turns[-1].content == "HELLO"
    assert seen == [("Hello", False), ("Hello", True)]  # the whole reply, once per generation


def test_hook_state_modifier(scripted_app: App) -> None:
    seen = []

    class Short:
        @hookimpl
        def state_modifier(self, request: GenerationRequest, state: dict[str, Any]) -> GenerationRequest:
            seen.append((request.max_new_tokens, state["is_chat"]))
            return request.model_copy(update={"max_new_tokens": 2})

    load_script(scripted_app, ["Hel", "lo", " world"])
    add(scripted_app, "short", Short())
    done = generate(scripted_app, max_new_tokens=10)
    assert (done.text, done.usage.completion_tokens, done.reason) == ("Hello", 2, "length")
    assert chat(scripted_app, "go on").text == "Hello"
    assert seen == [(10, False), (10, True)]  # UI, API and chat generations alike


# -- extension hooks: the chat service ------------------------------------------------------------------
def test_hook_chat_input_modifier(scripted_app: App) -> None:
    class Polite:
        @hookimpl
        def chat_input_modifier(self, text: str, visible_text: str) -> tuple[str, str]:
            return "Please, " + text, visible_text

    model = load_script(scripted_app, [" Sure", "."])
    add(scripted_app, "polite", Polite())
    last = chat(scripted_app, "help me")
    user, reply = last.history.turns[-2:]
    assert user.content == "Please, help me" and user.metadata["visible"] == "help me"
    assert "Please, help me" in prompt_of(model) and reply.content == "Sure."


def test_hook_bot_prefix_modifier(scripted_app: App) -> None:
    seen = []

    class Well:
        @hookimpl
        def bot_prefix_modifier(self, prefix: str) -> str:
            seen.append(prefix)
            return prefix + "Well,"

    model = load_script(scripted_app, [" yes", "."])
    add(scripted_app, "well", Well())
    last = chat(scripted_app, "ready?")
    assert prompt_of(model).endswith("Well,")  # the model continues the prefix
    assert last.history.turns[-1].content == "Well, yes." and seen == [""]


def test_hook_history_modifier(scripted_app: App) -> None:
    class Forget:
        @hookimpl
        def history_modifier(self, history: ChatHistory) -> ChatHistory:
            return history.with_turns(tuple(t for t in history.turns if "secret" not in t.content))

    model = load_script(scripted_app, [" Hm", "."])
    add(scripted_app, "forget", Forget())
    history = ChatHistory.new("Assistant", "The secret is 42.")
    last = chat(scripted_app, "what is it?", history)
    assert "secret" not in prompt_of(model)
    saved = ChatService(scripted_app).histories.load("Assistant", history.chat_id)
    assert (
        [t.content for t in saved.turns] == [t.content for t in last.history.turns] == ["what is it?", "Hm."]
    )


def test_hook_custom_generate_chat_prompt(scripted_app: App) -> None:
    seen = []

    class Wrap:
        @hookimpl
        def custom_generate_chat_prompt(
            self, user_input, history, options, character, state, build
        ) -> ChatPrompt:
            seen.append(state["user_input"])
            return build(
                user_input.upper(), history, options, character
            )  # the default, with changed arguments

    class Plain:
        @hookimpl
        def custom_generate_chat_prompt(self, user_input: str) -> str:
            return f"Q: {user_input}\nA:"

    model = load_script(scripted_app, [" Ok"])
    add(scripted_app, "wrap", Wrap())
    chat(scripted_app, "hello there")
    assert (
        seen == ["hello there"]
        and "HELLO THERE" in prompt_of(model)
        and "hello there" not in prompt_of(model)
    )
    scripted_app.extensions.disable("wrap")
    add(scripted_app, "plain", Plain())
    model.calls.clear()
    assert chat(scripted_app, "why?").text == "Ok"
    assert model.calls[0] == model.tokenize("Q: why?\nA:")  # a string is the prompt, as it is


def test_hook_logits_processor(scripted_app: App) -> None:
    seen = []

    class NoCats:
        @hookimpl
        def logits_processor(self, request: GenerationRequest, state: dict[str, Any]) -> list[Any]:
            seen.append((request.max_new_tokens, state["is_chat"]))
            cat = scripted_app.core.tokenize(" cat", add_bos=False)

            def ban(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                scores[..., cat] = float("-inf")  # as docs/extensions.md's example: in place
                return scores

            return [ban]

    model = load_script(scripted_app, ["The", " cat"], ["The", " dog"], native_greedy=True)
    assert generate(scripted_app).text == "The cat" and model.native_runs == 1
    add(scripted_app, "no_cats", NoCats())
    assert generate(scripted_app, max_new_tokens=5).text == "The dog"
    assert model.native_runs == 1 and seen == [
        (5, False)
    ]  # a processor takes the request off the native path


def test_hook_tokenizer_modifier(scripted_app: App) -> None:
    seen = []

    class LastThree:
        @hookimpl
        def tokenizer_modifier(self, state: dict[str, Any], prompt: str, input_ids: list[int]) -> list[int]:
            seen.append((prompt, input_ids))
            return input_ids[-3:]

    model = load_script(scripted_app, ["Hi"])
    add(scripted_app, "last_three", LastThree())
    done = generate(scripted_app, "abcdef")
    assert seen == [("abcdef", model.tokenize("abcdef"))]
    assert model.calls[0] == model.tokenize("abcdef")[-3:] and done.usage.prompt_tokens == 3


# -- extension hooks: the UI, built and served ----------------------------------------------------------
class Decor:
    """An extension with blocks, a tab of its own, CSS and JS."""

    def __init__(self) -> None:
        self.contexts: list[Any] = []
        self.css_calls = self.js_calls = 0

    @hookimpl
    def ui(self, ctx: Any) -> None:
        self.contexts.append(ctx)
        gr.Textbox(label="Decor note", elem_id="decor-note")
        ctx.extra_tabs.append(self.tab)

    @staticmethod
    def tab(ctx: Any) -> None:
        with gr.Tab("Decor", elem_id="tab-decor"):
            gr.Markdown("decor tab", elem_id="decor-tab-text")

    @hookimpl
    def custom_css(self) -> str:
        self.css_calls += 1
        return ".decor-note { color: teal; }"

    @hookimpl
    def custom_js(self) -> str:
        self.js_calls += 1
        return "console.log('decor loaded');"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """The whole UI of an App with `Decor` enabled, built and served once for the UI hooks."""
    from webui.ui import start_ui_for_tests

    tmp = tmp_path_factory.mktemp("ui-hooks")
    app = App.create(
        Settings(models_dir=tmp / "models", user_data_dir=tmp / "user"),
        plugins=make_plugin_manager(load_entry_points=False),
    )
    decor = Decor()
    add(app, "decor", decor)
    url, close = start_ui_for_tests(app)
    try:
        config = httpx.get(f"{url}config", timeout=60).json()
        yield app, decor, config
    finally:
        close()


def _ancestors(config: dict[str, Any], elem_id: str) -> list[dict[str, Any]]:
    """The served components enclosing the one with `elem_id`, innermost first."""
    components = {c["id"]: c for c in config["components"]}
    [target] = [c for c in components.values() if c.get("props", {}).get("elem_id") == elem_id]

    def path(node: dict[str, Any]) -> list[int] | None:
        if node["id"] == target["id"]:
            return []
        for child in node.get("children", []):
            found = path(child)
            if found is not None:
                return [node["id"], *found]
        return None

    return [components[i] for i in reversed(path(config["layout"]) or []) if i in components]


def test_hook_ui(served) -> None:
    app, decor, config = served
    assert len(decor.contexts) == 1 and decor.contexts[0].app is app
    labels = [(c["type"], c.get("props", {}).get("label")) for c in _ancestors(config, "decor-note")]
    assert next(label for label in labels if label[0] == "accordion") == ("accordion", "decor")  # its own ...
    assert ("tabitem", "Extensions") in labels  # ... on the Extensions tab


def test_ui_hook_can_add_a_tab_of_its_own(served) -> None:
    _, _, config = served
    labels = [(c["type"], c.get("props", {}).get("label")) for c in _ancestors(config, "decor-tab-text")]
    assert labels[0] == ("tabitem", "Decor") and labels[1][0] == "tabs"


def test_hook_custom_css(served) -> None:
    _, decor, config = served
    assert ".decor-note { color: teal; }" in config["css"] and decor.css_calls == 1  # once, at launch


def test_hook_custom_js(served) -> None:
    _, decor, config = served
    assert "console.log('decor loaded');" in config["js"] and decor.js_calls == 1
