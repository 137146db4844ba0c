"""The Session tab's "Save UI settings": UI state only, under user_data/, and read back on the next start.

Issue 13 item 8: the old save wrote every non-default setting, so a one-off ``--listen`` or ``--api`` (and
ports, folders, the model) became permanent, and it wrote into the install folder.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from webui.app import App
from webui.config import UI_STATE_KEYS, Settings, parse_settings
from webui.ui import is_dark
from webui.ui.context import default_character_state, default_params
from webui.ui.session_tab import save_ui_settings

if TYPE_CHECKING:
    from tests.ui_harness import UIServer

pytest_plugins = ["tests.ui_harness"]

#: Flags of a one-off run: none of them may reach the saved file.
ONE_OFF = shlex.split(
    "--listen --allow-unauthenticated --listen-port 7123 --api --api-port 5123 --api-key secret-key "
    "--admin-key admin-secret --allowed-hosts box.lan --cors-origins http://x.test --max-request-mb 7 "
    "--model tiny-llama.gguf --loader llama.cpp --n-ctx 256 --preset 'Divine Intellect'"
)


@pytest.fixture
def started(models_dir: Path, tmp_path: Path, loaders: dict) -> Iterator[tuple[App, Path]]:
    """An App started with one-off flags and a user_data folder (no --settings, no install-folder file)."""
    user_data = tmp_path / "user_data"
    argv = ["--models-dir", str(models_dir), "--user-data-dir", str(user_data), *ONE_OFF]
    app = App.create(parse_settings(argv, loaders, None, legacy_settings=None))
    yield app, user_data
    app.core.stop_all()


def restart(models_dir: Path, user_data: Path, loaders: dict, *extra: str) -> App:
    argv = ["--models-dir", str(models_dir), "--user-data-dir", str(user_data), *extra]
    return App.create(parse_settings(argv, loaders, None, legacy_settings=None))


def test_save_writes_ui_state_only_and_the_next_start_reads_it(
    started: tuple[App, Path], models_dir: Path, loaders: dict
) -> None:
    app, user_data = started
    assert app.settings.settings_path == user_data / "settings.yaml"
    params = default_params(app)
    params = {**params, "max_new_tokens": 77, "stop": ["###"], "sampling": {**params["sampling"], "top_k": 7}}
    character = {**default_character_state(app), "mode": "instruct", "user_name": "Peter"}
    path = save_ui_settings(app, params, character, "dark")

    assert path == user_data / "settings.yaml"
    doc = yaml.safe_load(path.read_text())
    assert set(doc) <= set(UI_STATE_KEYS), sorted(set(doc) - set(UI_STATE_KEYS))
    text = path.read_text()
    for leaked in ("7123", "5123", "secret", "box.lan", "x.test", "tiny-llama", "n_ctx", "Divine"):
        assert leaked not in text
    assert doc["theme"] == "dark" and doc["generation"]["max_new_tokens"] == 77

    again = restart(models_dir, user_data, loaders)
    try:
        settings = again.settings
        assert (
            not settings.listen
            and not settings.api
            and settings.api_keys == []
            and settings.loader_args == {}
        )
        assert (settings.model, settings.loader, settings.preset) == (None, None, None)
        assert (settings.listen_port, settings.api_port, settings.max_request_mb) == (7860, 5000, 32)
        assert is_dark(again)
        assert default_params(again) == params  # the preset's samplers, as edited, without --preset
        assert default_character_state(again) == character
    finally:
        again.core.stop_all()


def test_save_keeps_what_a_person_wrote_in_the_file_and_the_enabled_extensions(
    models_dir: Path, tmp_path: Path, loaders: dict
) -> None:
    """A settings file a person wrote keeps its flags (theirs, not this run's); extensions are UI state."""
    own = tmp_path / "mine.yaml"
    own.write_text("listen_port: 7001\nchat_style: cai\ntheme: light\n")
    argv = ["--models-dir", str(models_dir), "--user-data-dir", str(tmp_path / "u"), "--settings", str(own)]
    app = App.create(parse_settings([*argv, "--api", "--extensions", "example"], loaders, None))
    try:
        assert app.settings.settings_path == own
        app.extensions.set_enabled(["character_bias"])
        save_ui_settings(app, default_params(app), default_character_state(app), "dark")
    finally:
        app.core.stop_all()
    doc = yaml.safe_load(own.read_text())
    assert doc["listen_port"] == 7001 and doc["chat_style"] == "cai" and doc["theme"] == "dark"
    assert doc["extensions"] == ["character_bias"] and "api" not in doc
    again = App.create(parse_settings(argv, loaders, None))
    try:
        assert again.extensions.enabled == ["character_bias"] and not again.settings.api
        assert again.settings.listen_port == 7001 and is_dark(again)
    finally:
        again.core.stop_all()


def test_an_unreadable_settings_file_is_left_alone(started: tuple[App, Path]) -> None:
    from webui.config import ConfigError

    app, user_data = started
    path = user_data / "settings.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("- not\n- a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        save_ui_settings(app, default_params(app), default_character_state(app), "dark")
    assert path.read_text() == "- not\n- a mapping\n"


# -- in the browser ----------------------------------------------------------------------------------------


@pytest.fixture
def ui_settings(ui_settings: Settings) -> Settings:
    """Started with one-off flags; no --settings: the file goes where a plain start puts it."""
    ui_settings.settings_file = None
    ui_settings.listen, ui_settings.allow_unauthenticated, ui_settings.listen_port = True, True, 7321
    ui_settings.api, ui_settings.api_port, ui_settings.api_key = True, 5321, "secret-key"
    ui_settings.loader_args = {"n_ctx": 256}
    return ui_settings


@pytest.mark.browser
def test_save_ui_settings_button_writes_no_flags_under_user_data(page: Any, ui_server: UIServer) -> None:
    settings = ui_server.app.settings
    page.get_by_role("tab", name="Session").click()
    page.get_by_label("dark").check()
    page.wait_for_function("document.body.classList.contains('dark')")
    page.locator("#session-save").click()
    page.wait_for_function("document.querySelector('#session-saved')?.textContent.includes('Saved')")
    saved = settings.user_data_dir / "settings.yaml"
    doc = yaml.safe_load(saved.read_text())
    assert doc["theme"] == "dark" and doc["generation"]["max_new_tokens"] == 512
    assert set(doc) <= set(UI_STATE_KEYS), sorted(set(doc) - set(UI_STATE_KEYS))
    assert str(saved) in page.locator("#session-saved").inner_text()
    ui_server.shot(page, "session-saved")
