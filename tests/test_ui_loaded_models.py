"""The Model tab's "Loaded models" panel (webui/ui/loaded_models.py) in a real browser: the UI's model and one the
API loaded by name are listed, "Use in UI" switches the UI without reloading, "Unload" frees one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.test_ui_model import open_model_tab, pick
from webui.ui.loaded_models import loaded_html

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]
GGUF, HF = "tiny-llama.gguf", "tiny-llama"


def rows(page: Any) -> int:
    return page.locator("#loaded-models-table tbody tr").count()


def test_the_table_marks_the_ui_model_and_shows_the_fixed_cost(scripted_app) -> None:
    from tests.scripted_loader import write_script

    write_script(scripted_app.settings.models_dir, "a", ["A"])
    scripted_app.models.load("a")
    text = loaded_html(scripted_app)
    assert 'data-model="a"' in text and "(UI)" in text and "Hearth itself" in text and "MiB" in text
    scripted_app.pool.unload()
    assert "No model is loaded." in loaded_html(scripted_app)


@pytest.mark.browser
def test_loaded_models_use_in_ui_and_unload(page: Any, ui_server: UIServer) -> None:
    app = ui_server.app
    app.pool.load_ui(GGUF)
    routed = app.pool.acquire(app.pool.target(HF))  # what an API request naming it does
    app.pool.release(routed)
    try:
        open_model_tab(page)
        page.locator("#loaded-models-refresh").click()
        page.wait_for_function("document.querySelectorAll('#loaded-models-table tbody tr').length === 2")
        ui_row = page.locator(f'#loaded-models-table tr[data-model="{GGUF}"]').inner_text()
        assert "(UI)" in ui_row and "llama.cpp" in ui_row
        assert "(UI)" not in page.locator(f'#loaded-models-table tr[data-model="{HF}"]').inner_text()
        assert "Hearth itself" in page.locator("#hearth-fixed-cost").inner_text()

        pick(page, "loaded-models-choice", HF)
        page.locator("#loaded-models-use").click()
        page.wait_for_function(f"document.querySelector('#model-status').textContent.includes('{HF} with')")
        assert app.models is routed.models and app.core is routed.core  # switched, not reloaded
        page.wait_for_function(
            f"document.querySelector('#loaded-models-table tr[data-model=\"{HF}\"]')?.textContent.includes('(UI)')"
        )

        pick(page, "loaded-models-choice", GGUF)
        page.locator("#loaded-models-cancel input").check()
        page.locator("#loaded-models-unload").click()
        page.wait_for_function("document.querySelectorAll('#loaded-models-table tbody tr').length === 1")
        assert app.pool.loaded_names() == [HF] and app.models.model_name == HF
    finally:
        app.close()
