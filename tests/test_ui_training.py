"""The Train LoRA panel: its status text and loss rows from a job's status, and in a real browser: a bad
start is one toast, then pick a dataset, start, and watch the status reach Done with the loss plotted."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from webui.jobs import JobStatus
from webui.ui.train_panel import describe, loss_frame

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]


def test_status_text_and_loss_rows() -> None:
    running = JobStatus(
        "training",
        "running",
        done=3,
        total=10,
        elapsed=3.0,
        metrics={"loss": 1.25, "steps_per_s": 1.0},
        history=[{"step": 1.0, "loss": 2.0}, {"step": 2.0, "loss": 1.5, "eval_loss": 1.7}],
    )
    text = describe(running)
    assert "step 3 / 10" in text and "loss 1.2500" in text and "ETA 7s" in text and "generation waits" in text
    frame = loss_frame(running)
    assert frame.to_dict("records") == [
        {"step": 1.0, "value": 2.0, "series": "loss"},
        {"step": 2.0, "value": 1.5, "series": "loss"},
        {"step": 2.0, "value": 1.7, "series": "eval_loss"},
    ]
    assert describe(JobStatus("training", "failed", error="boom")).startswith("**Failed**")
    assert "No training" in describe(None) and loss_frame(None).empty


@pytest.mark.browser
def test_train_from_the_tab(page: Any, ui_server: UIServer, tmp_path: Path) -> None:
    app = ui_server.app
    app.settings.loras_dir = tmp_path / "loras"
    datasets = app.settings.user_data_dir / "training" / "datasets"
    datasets.mkdir(parents=True)
    (datasets / "fox.txt").write_text("The quick brown fox jumps over the lazy dog. " * 60, encoding="utf-8")
    app.models.load("tiny-llama", "Transformers")

    page.get_by_role("tab", name="Training").click()
    page.locator("#train-memory", has_text="Training memory on cpu").wait_for()  # the estimate on opening
    page.locator("#train-name input, #train-name textarea").first.fill("ui-lora")
    page.locator("#train-start").click()  # no dataset yet: one toast naming the field
    page.locator(".toast-body", has_text="dataset: choose a dataset file").first.wait_for()

    page.locator("#train-refresh").click()
    page.locator("#train-dataset input").click()
    page.get_by_role("option", name="fox.txt", exact=True).click()
    page.locator("#train-start").click()
    page.locator("#train-status", has_text="Done").wait_for()
    assert "adapter saved to" in page.locator("#train-status").inner_text()
    page.locator("#train-loss-plot canvas, #train-loss-plot svg").first.wait_for()
    assert (tmp_path / "loras" / "ui-lora" / "adapter_model.safetensors").is_file()
    ui_server.shot(page, "trained")
