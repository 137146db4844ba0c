"""Saved prompts (core) and, in a real browser over tiny-llama.gguf, the Default and Notebook tabs:
generate, read the Logits and Tokens tables, see the Probabilities view, Undo in the Notebook."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from webui.config import Settings
from webui.prompts.prompt_store import PromptStore, PromptStoreError
from webui.safe_files import UnsafeNameError

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]


# -- saved prompts -----------------------------------------------------------------------------------
def test_prompt_store_round_trip_and_listing(tmp_path: Path) -> None:
    store = PromptStore.for_user_data(tmp_path)
    assert store.names() == []
    assert store.save("Alpaca test", "### Instruction:\nHi\n") == "Alpaca test"
    store.save("b-prompt", "second")
    assert store.names() == ["Alpaca test", "b-prompt"]
    assert store.load("Alpaca test") == "### Instruction:\nHi\n"
    store.save("b-prompt", "replaced")
    assert store.load("b-prompt") == "replaced"
    store.delete("b-prompt")
    assert store.names() == ["Alpaca test"]
    with pytest.raises(PromptStoreError, match="no saved prompt"):
        store.load("b-prompt")
    with pytest.raises(PromptStoreError, match="no saved prompt"):
        store.delete("b-prompt")
    with pytest.raises(PromptStoreError, match="name"):
        store.save("  ", "text")


def test_prompt_names_cannot_leave_the_folder(tmp_path: Path) -> None:
    store = PromptStore.for_user_data(tmp_path)
    with pytest.raises(UnsafeNameError, match="prompt name '../../evil/name' is not allowed"):
        store.save("../../evil/name", "x")
    assert not (tmp_path / "prompts").exists() and not (tmp_path.parent / "evil").exists()
    assert store.load(store.save(" Ёлка 雪 ", "x")) == "x"  # spaces around a name are trimmed, unicode kept


def test_prompt_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PromptStore.for_user_data(tmp_path)
    store.save("keep", "old text")

    def crash(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError):
        store.save("keep", "new text")
    assert store.load("keep") == "old text"
    assert [p.name for p in (tmp_path / "prompts").iterdir()] == ["keep.txt"]  # no temp file left


# -- browser -----------------------------------------------------------------------------------------
def carriage_return_ids(models_dir: Path) -> list[int]:
    """Tokens holding a carriage return: a browser textarea turns it into a newline, so a text read back from
    the page would no longer tokenize as the server's did (the Tokens-table check compares the two)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models_dir / "tiny-llama")
    return [i for i in range(len(tokenizer)) if "\r" in tokenizer.decode([i])]


@pytest.fixture
def ui_settings(ui_settings: Settings) -> Settings:
    """Short outputs that never end at once (a random model may pick EOS first) and hold no carriage return."""
    bans = carriage_return_ids(ui_settings.models_dir)
    (ui_settings.presets_dir / "UI test.yaml").write_text(
        yaml.safe_dump({"ban_eos_token": True, "custom_token_bans": bans}), encoding="utf-8"
    )
    ui_settings.preset = "UI test"
    ui_settings.extra["generation"] = {"max_new_tokens": 32}
    return ui_settings


def open_tab(page: Any, server: UIServer, tab: str) -> None:
    server.app.models.load("tiny-llama.gguf")
    page.reload()
    page.click(f"button[role='tab']:has-text('{tab}')")


def wait_idle(server: UIServer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while server.app.core.busy:
        assert time.monotonic() < deadline, "generation did not end"
        time.sleep(0.05)


def table_rows(page: Any, selector: str) -> list[list[str]]:
    """The rows a Gradio 6 Dataframe has rendered (it virtualizes: only those in view)."""
    rows = f"{selector} [role='row'].virtual-row"
    page.wait_for_selector(rows)
    return page.eval_on_selector_all(
        rows,
        "rows => rows.map(r => Array.from(r.querySelectorAll('[role=gridcell]')).map(c => c.innerText.trim()))",
    )


@pytest.mark.browser
def test_default_generates_and_shows_logits_tokens_and_probabilities(page: Any, ui_server: UIServer) -> None:
    open_tab(page, ui_server, "Default")
    page.fill("#default-prompt textarea", "Once upon a time")
    page.wait_for_selector("#default-token-count >> text=/\\d+ tokens/")
    page.click("#default-generate")
    page.wait_for_function("document.querySelector('#default-output textarea').value.length > 0")
    wait_idle(ui_server)

    # Probabilities: one shaded span per generated token, each with its alternatives
    page.click("button[role='tab']:has-text('Probabilities')")
    page.wait_for_selector("#default-probabilities .hearth-tok")
    output = page.input_value("#default-output textarea")  # final: it comes with the probabilities
    spans = page.locator("#default-probabilities .hearth-tok")
    assert spans.count() == 32  # max_new_tokens, EOS banned
    first = spans.first
    assert "--tok-bg: hsl(" in (first.get_attribute("style") or "")
    assert 0 <= float(first.get_attribute("data-p") or "-1") <= 1
    first.hover()
    assert first.locator(".hearth-alts").is_visible()
    page.screenshot(path=str(ui_server.shots / "probabilities.png"))
    assert "%" in first.locator(".hearth-alts").inner_text()

    # Logits: rows of tokens with probabilities (as percentages) and logprobs, most likely first
    page.click("button[role='tab']:has-text('Logits')")
    rows = table_rows(page, "#default-logits")
    logprobs = [float(r[3]) for r in rows]
    assert len(rows) >= 5 and [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    assert logprobs == sorted(logprobs, reverse=True)
    assert 0 < sum(math.exp(lp) for lp in logprobs) <= 1.001
    assert all(r[2].endswith("%") and r[2] != "0.0%" for r in rows)

    # Tokens: ids and pieces of prompt + output
    page.click("button[role='tab']:has-text('Tokens')")
    rows = table_rows(page, "#default-tokens")
    ids = ui_server.app.core.tokenize("Once upon a time" + output)
    shown = {int(r[0]): int(r[1]) for r in rows}  # the virtual rows are not in DOM order
    assert len(shown) >= 5 and shown == {i: ids[i] for i in shown}, (len(ids), output, rows)

    page.click("button[role='tab']:has-text('Markdown')")
    assert page.locator("#default-markdown").inner_text().strip()


@pytest.mark.browser
def test_notebook_appends_and_undo_restores(page: Any, ui_server: UIServer) -> None:
    open_tab(page, ui_server, "Notebook")
    page.fill("#notebook-text textarea", "Once upon a time")
    page.click("#notebook-generate")
    page.wait_for_function("document.querySelector('#notebook-text textarea').value != 'Once upon a time'")
    wait_idle(ui_server)
    text = page.input_value("#notebook-text textarea")
    assert text.startswith("Once upon a time") and len(text) > len("Once upon a time")
    page.click("#notebook-undo")
    page.wait_for_function("document.querySelector('#notebook-text textarea').value == 'Once upon a time'")


@pytest.mark.browser
def test_template_sent_to_default_then_saved_and_reloaded_as_a_prompt(page: Any, ui_server: UIServer) -> None:
    open_tab(page, ui_server, "Parameters")
    page.click("button[role='tab']:has-text('Instruction template')")
    page.locator("#template-dropdown input").click()
    page.get_by_role("option", name="ChatML", exact=True).click()
    page.wait_for_function("document.querySelector('#template-text')?.textContent.includes('im_start')")
    page.click("#template-to-default")
    expected = "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n"
    page.click("button[role='tab']:has-text('Default')")
    prompt = page.locator("#default-prompt textarea")
    page.wait_for_function(f"document.querySelector('#default-prompt textarea')?.value === {expected!r}")
    page.wait_for_selector("#default-token-count >> text=/\\d+ tokens/")

    page.get_by_text("Saved prompts").click()
    page.locator("#default-save-name textarea, #default-save-name input").first.fill("haiku")
    page.click("#default-save")
    saved = ui_server.app.settings.user_data_dir / "prompts" / "haiku.txt"
    deadline = time.monotonic() + 90
    while not saved.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert saved.read_text() == expected

    prompt.fill("something else")
    page.locator("#default-saved input").click()
    page.get_by_role("option", name="haiku", exact=True).click()
    page.wait_for_function(f"document.querySelector('#default-prompt textarea')?.value === {expected!r}")


def toasts(page: Any) -> Any:
    return page.locator(".toast-body.error")


def assert_no_error_badge(page: Any, *selectors: str) -> None:
    """Gradio's status tracker marks a failed event's outputs "error" (an opaque badge over them)."""
    for selector in selectors:
        assert page.locator(f"{selector} [data-testid='status-tracker'] > .error").count() == 0, selector


@pytest.mark.browser
def test_default_without_a_model_says_so_and_generate_is_one_toast(page: Any, ui_server: UIServer) -> None:
    """Issue 13 item 6: the tab says up front that no model is loaded; Generate is one toast and the
    prompt stays visible and editable."""
    page.click("button[role='tab']:has-text('Default')")
    notice = page.locator("#default-no-model")
    notice.wait_for()
    assert "No model is loaded" in notice.inner_text() and "Model tab" in notice.inner_text()
    prompt = page.locator("#default-prompt textarea")
    prompt.fill("Dear diary,")
    page.click("#default-generate")
    toasts(page).first.wait_for()
    assert toasts(page).count() == 1 and "Model tab" in toasts(page).first.inner_text()
    assert_no_error_badge(page, "#default-prompt", "#default-output")
    prompt.press("End")
    prompt.type(" today")
    assert prompt.input_value() == "Dear diary, today"
    ui_server.shot(page, "default-no-model")

    ui_server.app.models.load("tiny-llama.gguf")  # elsewhere (the Model tab, the API): the notice goes
    page.click("button[role='tab']:has-text('Chat')")
    page.click("button[role='tab']:has-text('Default')")
    notice.wait_for(state="hidden")


@pytest.mark.browser
def test_saved_prompt_lists_follow_the_folder(page: Any, ui_server: UIServer) -> None:
    """Issue 13 item 4: a prompt saved elsewhere (another tab, another browser) is offered when the tab is
    selected and after a page reload, in Default and Notebook alike."""
    store = PromptStore.for_user_data(ui_server.app.settings.user_data_dir)
    store.save("from elsewhere", "Hello from another tab")
    for tab in ("Default", "Notebook"):
        page.click(f"button[role='tab']:has-text('{tab}')")
        name = tab.lower()
        page.locator(f"#{name}-saved-prompts").get_by_text("Saved prompts").click()
        page.locator(f"#{name}-saved input").click()
        page.get_by_role("option", name="from elsewhere", exact=True).click()
        box = "#default-prompt textarea" if tab == "Default" else "#notebook-text textarea"
        page.wait_for_function(f"document.querySelector({box!r})?.value === 'Hello from another tab'")
    store.delete("from elsewhere")
    store.save("after reload", "x")
    page.reload()
    page.click("button[role='tab']:has-text('Default')")
    page.locator("#default-saved-prompts").get_by_text("Saved prompts").click()
    page.locator("#default-saved input").click()
    page.get_by_role("option", name="after reload", exact=True).wait_for()
    assert page.get_by_role("option", name="from elsewhere", exact=True).count() == 0
