"""In a real browser: the Generation sub-tab's panel says where the current settings run on the loaded model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]


def wait_for_panel(page: Any, *parts: str) -> None:
    checks = " && ".join(f"text.includes({part!r})" for part in parts)
    page.wait_for_function(
        f"(() => {{ const text = document.querySelector('#sampler-routing')?.textContent || ''; return {checks}; }})()"
    )


@pytest.mark.browser
def test_panel_follows_the_model_and_names_what_forces_the_pipeline(page: Any, ui_server: UIServer) -> None:
    page.get_by_role("tab", name="Parameters", exact=True).click()
    page.get_by_role("tab", name="Generation", exact=True).click()
    wait_for_panel(page, "no model loaded")

    ui_server.app.models.load("tiny-llama.gguf")  # as the API would: no event; selecting the tab refreshes
    page.get_by_role("tab", name="Model", exact=True).click()
    page.get_by_role("tab", name="Parameters", exact=True).click()
    wait_for_panel(page, "(llama.cpp)", "llama.cpp's native chain", "No sampler setting is active")

    box = page.locator("#param-top_a input[type=number]")
    box.fill("0.2")
    box.press("Tab")
    wait_for_panel(page, "slower", "Sent to the pipeline by top_a", "llama.cpp has no such sampler")
    ui_server.shot(page, "sampler-routing")
    assert "Hearth's pipeline: top_a" in page.locator("#sampler-routing").inner_text()
