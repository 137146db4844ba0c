"""The Notebook tab in a real browser: saved prompts (load, save as, delete after a confirmation step, the
same list as the Default tab's) and, with no model loaded, a notice up front and one toast on Generate.
(Generating, Undo and the output views: tests/test_ui_default.py.)"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.test_ui_default import assert_no_error_badge, toasts
from webui.prompts.prompt_store import PromptStore

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]

TEXT = "#notebook-text textarea"


def open_saved_prompts(page: Any, tab: str) -> None:
    page.click(f"button[role='tab']:has-text('{tab}')")
    panel = page.locator(f"#{tab.lower()}-saved-prompts")
    if not panel.locator(f"#{tab.lower()}-save").is_visible():
        panel.get_by_text("Saved prompts").click()


def pick_prompt(page: Any, tab: str, name: str) -> None:
    page.locator(f"#{tab.lower()}-saved input").click()
    page.get_by_role("option", name=name, exact=True).click()


@pytest.mark.browser
def test_notebook_saves_loads_and_deletes_prompts_after_confirming(page: Any, ui_server: UIServer) -> None:
    store = PromptStore.for_user_data(ui_server.app.settings.user_data_dir)
    open_saved_prompts(page, "Notebook")
    page.fill(TEXT, "It was a dark and stormy night;")
    page.locator("#notebook-save-name textarea, #notebook-save-name input").first.fill("storm")
    page.click("#notebook-save")
    page.wait_for_function("document.querySelector('#notebook-saved input')?.value === 'storm'")
    assert store.load("storm") == "It was a dark and stormy night;"

    open_saved_prompts(page, "Default")  # one folder for both tabs: the new prompt is offered there too
    pick_prompt(page, "Default", "storm")
    page.wait_for_function(
        "document.querySelector('#default-prompt textarea')?.value === 'It was a dark and stormy night;'"
    )

    open_saved_prompts(page, "Notebook")
    page.fill(TEXT, "something else")
    pick_prompt(page, "Notebook", "storm")
    page.wait_for_function(f"document.querySelector({TEXT!r}).value === 'It was a dark and stormy night;'")

    page.click("#notebook-delete")  # the first click only asks
    confirm = page.locator("#notebook-delete-confirm")
    confirm.wait_for()
    assert "storm" in confirm.inner_text() and store.names() == ["storm"]
    page.click("#notebook-delete-cancel")
    confirm.wait_for(state="hidden")
    assert store.names() == ["storm"]
    ui_server.shot(page, "notebook-saved-prompts")

    page.click("#notebook-delete")
    confirm.wait_for()
    confirm.click()
    page.locator(".toast-body.info", has_text="Deleted prompt 'storm'").wait_for()
    assert store.names() == []
    page.wait_for_function("document.querySelector('#notebook-saved input')?.value === ''")
    assert page.input_value(TEXT) == "It was a dark and stormy night;"  # the text itself is kept

    page.click("#notebook-delete")  # nothing chosen: one toast naming the field, nothing asked
    toasts(page).first.wait_for()
    assert "Saved prompt" in toasts(page).first.inner_text() and not confirm.is_visible()


@pytest.mark.browser
def test_notebook_without_a_model_says_so_and_keeps_the_text(page: Any, ui_server: UIServer) -> None:
    page.click("button[role='tab']:has-text('Notebook')")
    notice = page.locator("#notebook-no-model")
    notice.wait_for()
    assert "Model tab" in notice.inner_text()
    page.fill(TEXT, "Chapter one")
    page.click("#notebook-generate")
    toasts(page).first.wait_for()
    assert toasts(page).count() == 1 and "No model is loaded" in toasts(page).first.inner_text()
    assert_no_error_badge(page, "#notebook-text", "#notebook-markdown")
    page.locator(TEXT).press("End")
    page.locator(TEXT).type(".")
    assert page.input_value(TEXT) == "Chapter one."
    ui_server.shot(page, "notebook-no-model")
