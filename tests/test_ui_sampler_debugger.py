"""The sampler debugger in a real browser over tiny-llama.gguf (issue 20 items 3 and 6): generate, click a
token in the Probabilities view, read what each sampler did there, pick another candidate and find the text
cut at that token, the candidate in its place and the generation going on from it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.test_ui_default import carriage_return_ids, open_tab, wait_idle
from webui.config import Settings
from webui.ui.sampler_debugger import decoded

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]

PROMPT = "Once upon a time"
NEW_TOKENS = 10


@pytest.fixture
def ui_settings(ui_settings: Settings) -> Settings:
    """A preset with a chain to look at (the bans make a logit_bias step; top_k removes tokens), short
    outputs that never end early and hold no carriage return (a textarea would turn it into a newline)."""
    preset = {
        "ban_eos_token": True,
        "custom_token_bans": carriage_return_ids(ui_settings.models_dir),
        "temperature": 0.8,
        "top_k": 4,
        "min_p": 0.01,
        "seed": 11,
    }
    (ui_settings.presets_dir / "Debugger test.yaml").write_text(yaml.safe_dump(preset), encoding="utf-8")
    ui_settings.preset = "Debugger test"
    ui_settings.extra["generation"] = {"max_new_tokens": NEW_TOKENS}
    return ui_settings


def generate_and_open(page: Any, server: UIServer, tab: str, box: str, index: int) -> Any:
    """Generate from PROMPT in `tab`, open its Probabilities view and click recorded token `index`."""
    name = tab.lower()
    open_tab(page, server, tab)
    page.fill(f"{box} textarea", PROMPT)
    page.click(f"#{name}-generate")
    tokens = page.locator(f"#{name}-probabilities .hearth-tok")
    page.click(f"#{name}-views button[role='tab']:has-text('Probabilities')")
    page.wait_for_function(
        f"document.querySelectorAll('#{name}-probabilities .hearth-tok').length === {NEW_TOKENS}"
    )
    wait_idle(server)
    tokens.nth(index).click()
    page.locator(f"#{name}-debugger-view .hearth-debug").wait_for()
    return tokens


def whole_character_branch(view: Any, last: bool = False) -> Any:
    """A Branch button whose token is whole characters (a byte-level piece of one would decode as U+FFFD)."""
    rows = view.locator("tbody tr:has(button.hearth-branch)")
    whole = [
        rows.nth(i) for i in range(rows.count()) if "\ufffd" not in rows.nth(i).locator("td.tok").inner_text()
    ]
    return (whole[-1] if last else whole[0]).locator("button.hearth-branch")


def recorded_ids(tokens: Any) -> list[int]:
    return [int(tokens.nth(i).get_attribute("data-id")) for i in range(tokens.count())]


@pytest.mark.browser
def test_notebook_debugger_shows_each_sampler_and_branches_from_an_alternative(
    page: Any, ui_server: UIServer
) -> None:
    tokens = generate_and_open(page, ui_server, "Notebook", "#notebook-text", 3)
    generated = recorded_ids(tokens)
    view = page.locator("#notebook-debugger-view")
    assert f"Token 4 of {NEW_TOKENS}" in view.inner_text()
    columns = view.locator("thead th").all_inner_texts()
    assert columns[2:] == ["raw", "logit_bias", "temperature", "top_k", "min_p"]
    assert view.locator("td.removed").count() > 0  # top_k 4 of the 10 listed per stage
    assert (
        "bits" in view.locator("tfoot").inner_text() and "tokens left" in view.locator("tfoot").inner_text()
    )
    picked = view.locator("tr.picked")
    assert int(picked.get_attribute("data-token-id")) == generated[3] and "(picked)" in picked.inner_text()
    ui_server.shot(page, "sampler-debugger")

    before_branch = page.input_value("#notebook-text textarea")
    branch = whole_character_branch(view)
    alternative = int(branch.get_attribute("data-token-id"))
    assert alternative != generated[3]
    core = ui_server.app.core
    cut = PROMPT + decoded(core, core.tokenize(PROMPT), [*generated[:3], alternative])
    branch.click()
    page.locator("#notebook-debugger").wait_for(state="hidden")  # the new text closes the old trace
    page.wait_for_function(
        f"document.querySelectorAll('#notebook-probabilities .hearth-tok').length === {3 + 1 + NEW_TOKENS}"
    )
    wait_idle(ui_server)
    text = page.input_value("#notebook-text textarea")
    assert text.startswith(cut) and len(text) > len(cut), (text, cut)
    after = recorded_ids(tokens)
    assert after[:4] == [*generated[:3], alternative]
    # the continuation was generated after exactly those ids: the text is their decoding
    assert text == PROMPT + decoded(core, core.tokenize(PROMPT), after)

    page.click("#notebook-undo")  # a branch is undone like a generation
    page.wait_for_function(f"document.querySelector('#notebook-text textarea').value === {before_branch!r}")


@pytest.mark.browser
def test_default_debugger_branches_the_output_and_keeps_the_prompt(page: Any, ui_server: UIServer) -> None:
    tokens = generate_and_open(page, ui_server, "Default", "#default-prompt", 0)
    generated = recorded_ids(tokens)
    view = page.locator("#default-debugger-view")
    assert f"Token 1 of {NEW_TOKENS}" in view.inner_text()
    page.click("#default-debugger-close")
    page.locator("#default-debugger").wait_for(state="hidden")

    tokens.nth(0).click()  # open again, and branch from the last candidate listed
    view.locator("button.hearth-branch").first.wait_for()
    branch = whole_character_branch(view, last=True)
    alternative = int(branch.get_attribute("data-token-id"))
    branch.click()
    page.locator("#default-debugger").wait_for(state="hidden")
    page.wait_for_function(
        f"document.querySelectorAll('#default-probabilities .hearth-tok').length === {1 + NEW_TOKENS}"
    )
    wait_idle(ui_server)
    core = ui_server.app.core
    output = page.input_value("#default-output textarea")
    assert recorded_ids(tokens)[0] == alternative != generated[0]
    assert output == decoded(core, core.tokenize(PROMPT), recorded_ids(tokens))
    assert page.input_value("#default-prompt textarea") == PROMPT

    page.click("#default-continue")  # Continue records after the branch; its tokens open at their own context
    total = 1 + 2 * NEW_TOKENS
    page.wait_for_function(
        f"document.querySelectorAll('#default-probabilities .hearth-tok').length === {total}"
    )
    wait_idle(ui_server)
    tokens.nth(total - 2).click()
    page.locator("#default-debugger-view", has_text=f"Token {total - 1} of {total}").wait_for()
    assert int(view.locator("tr.picked").get_attribute("data-token-id")) == recorded_ids(tokens)[total - 2]
