"""Browser-test fixtures shared by every UI test: a real chromium driven by Playwright, and a running UI.

Use from a test module with ``pytest_plugins = ["tests.ui_harness"]`` (import `UIServer` only under
TYPE_CHECKING, or pytest warns that the plugin was imported before it could rewrite its asserts) and
mark browser tests ``@pytest.mark.browser``. Tests skip cleanly when Playwright or /usr/bin/chromium is
missing. Wait for selectors, never for network idle (Gradio keeps a connection open).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from webui.app import App
from webui.config import Settings

CHROMIUM = Path(os.environ.get("HEARTH_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parent.parent

__all__ = ["UIServer", "browser", "page", "ui_app", "ui_server", "ui_settings"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless chromium for the session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def ui_settings(models_dir: Path, tmp_path: Path) -> Settings:
    """Settings over the tiny models; user data, a copy of presets/ and settings.yaml in the test's temp dir
    (so saving a preset or settings in a test never touches the repository)."""
    user_data = tmp_path / "user_data"
    user_data.mkdir()
    presets = tmp_path / "presets"
    shutil.copytree(ROOT / "presets", presets)
    return Settings(
        models_dir=models_dir,
        loras_dir=tmp_path / "loras",
        user_data_dir=user_data,
        presets_dir=presets,
        templates_dir=ROOT / "templates",
        settings_file=tmp_path / "settings.yaml",
    )


@pytest.fixture
def ui_app(ui_settings: Settings) -> Iterator[App]:
    app = App.create(ui_settings)
    yield app
    app.core.stop_all()
    app.models.unload()


class UIServer(NamedTuple):
    """A running UI: ``app, url, shots = ui_server`` (shots: the test's screenshot folder)."""

    app: App
    url: str
    shots: Path

    def shot(self, page: Any, name: str) -> Path:
        """Save a full-page screenshot under the test's temp dir and return its path."""
        path = self.shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def ui_server(ui_app: App, tmp_path: Path) -> Iterator[UIServer]:
    """The UI running on a free port over `ui_app`; yields (app, url, screenshot dir)."""
    from webui.ui import start_ui_for_tests

    url, close = start_ui_for_tests(ui_app)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        yield UIServer(ui_app, url, shots)
    finally:
        close()


@pytest.fixture
def page(browser: Any, ui_server: UIServer) -> Iterator[Any]:
    """A fresh page on the running UI, loaded (the tab bar is visible). A screenshot is kept on failure."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(90_000)  # generous: CI runs the whole suite on 2 busy cores
    pg.goto(ui_server.url)
    pg.wait_for_selector("button[role='tab']")
    yield pg
    pg.screenshot(path=str(ui_server.shots / "last.png"), full_page=True)
    context.close()
