"""Hearth's public contracts as text: ``python -m webui --help``, the API's OpenAPI document and every file
format Hearth writes (chat, character, preset, UI settings, per-model settings, saved prompt).

tests/test_public_contracts.py compares them with the copies in tests/contracts/, so a refactor that
changes one of them by accident fails. When a change is meant, regenerate the copies and review the diff:

    .venv/bin/python -m tests.public_contracts --write
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = Path(__file__).with_name("contracts")


def help_text() -> str:
    """`python -m webui --help` at a fixed width, with the checkout's path replaced by <ROOT>."""
    env = {**os.environ, "COLUMNS": "120"}
    result = subprocess.run(
        [sys.executable, "-m", "webui", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    result.check_returncode()
    return result.stdout.replace(str(ROOT), "<ROOT>")


def openapi_text(user_data: Path) -> str:
    from webui.api import create_api
    from webui.app import App
    from webui.config import Settings

    app = App.create(Settings(models_dir=user_data / "models", user_data_dir=user_data))
    return json.dumps(create_api(app).openapi(), indent=1, sort_keys=True) + "\n"


def saved_files(user_data: Path) -> dict[str, str]:
    """Each file format as Hearth writes it, from fixed inputs."""
    from webui.app import App
    from webui.config import Settings
    from webui.prompts.characters import Character, CharacterStore, character_from_dict
    from webui.prompts.history import ChatHistory, HistoryStore, Turn
    from webui.prompts.prompt_store import PromptStore
    from webui.sampling import SamplingParams
    from webui.sampling.presets import save_preset
    from webui.ui.context import default_character_state, default_params
    from webui.ui.session_tab import save_ui_settings

    chat = ChatHistory(
        "Ada",
        (Turn("assistant", "Hello, {{user}}.", {"greeting": True}), Turn("user", "a<b then b>a"),
         Turn("assistant", "Noted.", {"visible": "Noted!"})),
        chat_id="20260101-000000", title="Contracts", created="2026-01-01T00:00:00", updated="2026-01-01T00:01:00",
    )
    card = {"spec": "chara_card_v2", "spec_version": "2.0",
            "data": {"name": "Ada", "description": "A mathematician.", "first_mes": "Hello.",
                     "mes_example": "<START>\n{{user}}: hi\n{{char}}: hello", "creator_notes": "kept",
                     "tags": ["math"], "alternate_greetings": ["Hi."], "extensions": {"x": 1}}}
    files = {
        "chat.json": HistoryStore(user_data).save(chat),
        "character.yaml": CharacterStore(user_data).save(character_from_dict(card)),
        "character_plain.yaml": CharacterStore(user_data).save(Character("Bob", "Context.", "Hi.", user_name="Eve")),
        "preset.yaml": save_preset(user_data / "presets", "p", SamplingParams(temperature=0.7, min_p=0.05,
                                                                               dry_multiplier=0.8)),
    }
    prompts = PromptStore.for_user_data(user_data)
    prompts.save("story", "Once upon a time\n")
    files["prompt.txt"] = prompts.folder / "story.txt"
    settings = Settings(models_dir=user_data / "models", user_data_dir=user_data, listen=True, api=True)
    app = App.create(settings)
    files["settings.yaml"] = save_ui_settings(app, default_params(app), default_character_state(app), "dark")
    return {name: Path(path).read_text(encoding="utf-8") for name, path in files.items()}


def snapshot() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        user_data = Path(tmp)
        (user_data / "models").mkdir()
        return {"help.txt": help_text(), "openapi.json": openapi_text(user_data), **saved_files(user_data)}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    CONTRACTS.mkdir(exist_ok=True)
    for name, text in snapshot().items():
        (CONTRACTS / name).write_text(text, encoding="utf-8")
        print("wrote", CONTRACTS / name)
