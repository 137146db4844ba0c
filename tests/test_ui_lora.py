"""The Model tab's LoRA selector in a real browser: pick an adapter, set its scale, apply, remove."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import gradio as gr
import pytest

from tests.model_factory import make_peft_adapter
from tests.test_loras import loras_dir  # noqa: F401  (a fixture)
from tests.test_ui_model import open_model_tab, pick
from webui.config import Settings
from webui.models import ModelManager
from webui.ui.lora_panel import LoraPanel, lora_status

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]


@pytest.fixture
def ui_settings(ui_settings: Settings, models_dir: Path, tmp_path: Path) -> Settings:
    """The harness's settings with a LoRA folder holding `style`, an adapter made for tiny-llama."""
    loras = tmp_path / "loras"
    make_peft_adapter(models_dir / "tiny-llama", loras / "style")
    return replace(ui_settings, loras_dir=loras)


def test_panel_errors_are_one_toast_and_keep_the_applied_set(manager: ModelManager, loras_dir: Path) -> None:  # noqa: F811
    app: Any = SimpleNamespace(models=manager, settings=SimpleNamespace(loras_dir=loras_dir))
    panel = LoraPanel(app)
    assert panel.choices() == ["other-base", "style"]
    with pytest.raises(gr.Error, match="no model is loaded"):
        panel.apply(["style"], 1.0)
    manager.load("tiny-llama", "Transformers")
    assert "style" in panel.apply(["style"], 0.25, 1.0, 1.0, 1.0) and manager.loras[0].scale == 0.25
    with pytest.raises(
        gr.Error, match=r"LoRA not applied: LoRA other-base does not fit this model"
    ) as refused:
        panel.apply(["other-base"], 1.0)
    assert refused.value.print_exception is False
    with pytest.raises(gr.Error, match="no LoRA named '../style'"):
        panel.apply(["../style"], 1.0)
    assert manager.lora_names == ["style"] and lora_status(app).endswith("**style** ×0.25")
    assert panel.remove()[0] == "No LoRA applied to tiny-llama." and manager.loras == []


@pytest.mark.browser
def test_select_scale_apply_and_remove_a_lora(page: Any, ui_server: UIServer) -> None:
    app = ui_server.app
    app.models.load("tiny-llama", "Transformers")
    open_model_tab(page)
    page.locator("#lora-box").get_by_text("LoRA adapters").click()
    page.wait_for_function("document.querySelector('#lora-status')?.textContent.includes('No LoRA applied')")
    pick(page, "lora-dropdown", "style")
    scale = page.locator("#lora-scale-0 input[type=number]")
    scale.fill("0.5")
    scale.press("Enter")
    page.locator("#lora-apply").click()
    page.wait_for_function("document.querySelector('#lora-status')?.textContent.includes('style ×0.5')")
    ui_server.shot(page, "lora-applied")
    assert [(x.name, x.scale) for x in app.models.loras] == [("style", 0.5)]
    assert app.models.model_name == "tiny-llama"  # applied without reloading

    page.locator("#lora-remove").click()
    page.wait_for_function("document.querySelector('#lora-status')?.textContent.includes('No LoRA applied')")
    assert app.models.loras == []
