"""The command line: grouped help with generated loader flags, clear errors for unknown names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from webui.__main__ import main
from webui.config import parse_settings

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "webui", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_help_groups_flags_and_lists_loader_parameters():
    result = run_cli("--help")
    assert result.returncode == 0
    out = result.stdout
    for flag in ("--model", "--loader", "--listen", "--listen-port", "--api", "--api-port", "--api-key",
                 "--extensions", "--n-ctx", "--n-gpu-layers", "--cache-type", "--alpha-value", "--dtype", "--trust-remote-code"):
        assert flag in out
    assert "Loader parameters (llama.cpp, llamacpp_HF)" in out


def test_unknown_model_exits_nonzero_and_lists_models(models_dir: Path, capsys: pytest.CaptureFixture):
    code = main(["--models-dir", str(models_dir), "--model", "nope.gguf"])
    assert code != 0
    err = capsys.readouterr().err
    assert "no model named 'nope.gguf'" in err and "tiny-llama.gguf" in err


def test_unknown_loader_exits_nonzero_and_lists_loaders(models_dir: Path):
    result = run_cli("--models-dir", str(models_dir), "--model", "tiny-llama.gguf", "--loader", "magic")
    assert result.returncode != 0
    assert "unknown loader 'magic'" in result.stderr and "llama.cpp" in result.stderr and "Transformers" in result.stderr


def test_cmd_flags_and_settings_file_precedence(tmp_path: Path, loaders: dict):
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text("listen_port: 7000\napi_port: 6000\nloader_args:\n  n_ctx: 1024\nchat_style: dark\n")
    cmd_flags = tmp_path / "CMD_FLAGS.txt"
    cmd_flags.write_text("# my flags\n--api-port 6100 --n-ctx 2048\n")
    settings = parse_settings(["--settings", str(settings_file), "--n-ctx", "4096", "--listen"], loaders, cmd_flags)
    assert settings.listen_port == 7000  # from settings.yaml
    assert settings.api_port == 6100  # CMD_FLAGS.txt beats settings.yaml
    assert settings.loader_args["n_ctx"] == 4096  # the command line beats both
    assert settings.host == "0.0.0.0"
    assert settings.extra == {"chat_style": "dark"}


def test_bad_flag_value_is_rejected(loaders: dict):
    with pytest.raises(SystemExit):
        parse_settings(["--cache-type", "q3"], loaders, None)


def test_settings_file_is_user_data_and_the_install_folder_file_is_still_read(tmp_path: Path, loaders: dict):
    """Issue 13: UI settings live in user_data/settings.yaml; an older settings.yaml in the install folder is
    read below it (for compatibility) and never becomes the file saves go to."""
    legacy = tmp_path / "install" / "settings.yaml"
    legacy.parent.mkdir()
    legacy.write_text("listen_port: 7000\ntheme: light\nchat_style: cai\nloader_args:\n  n_ctx: 1024\n")
    user_data = tmp_path / "user_data"
    argv = ["--user-data-dir", str(user_data)]
    settings = parse_settings(argv, loaders, None, legacy_settings=legacy)
    assert settings.settings_path == user_data / "settings.yaml" and settings.settings_file == settings.settings_path
    assert settings.listen_port == 7000 and settings.extra == {"theme": "light", "chat_style": "cai"}

    user_data.mkdir()
    (user_data / "settings.yaml").write_text("theme: dark\nloader_args:\n  n_batch: 64\n")
    settings = parse_settings([*argv, "--n-ctx", "2048"], loaders, None, legacy_settings=legacy)
    assert settings.extra["theme"] == "dark" and settings.listen_port == 7000
    assert settings.loader_args == {"n_ctx": 2048, "n_batch": 64}

    own = tmp_path / "own.yaml"  # --settings: that file alone, and saves go there
    own.write_text("api_port: 6000\n")
    settings = parse_settings([*argv, "--settings", str(own)], loaders, None, legacy_settings=legacy)
    assert settings.settings_path == own and settings.api_port == 6000 and settings.extra == {}


def test_user_data_dir_from_the_install_folder_file_locates_the_settings(tmp_path: Path, loaders: dict):
    legacy = tmp_path / "settings.yaml"
    legacy.write_text(f"user_data_dir: {tmp_path / 'elsewhere'}\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "settings.yaml").write_text("theme: dark\n")
    settings = parse_settings([], loaders, None, legacy_settings=legacy)
    assert settings.settings_path == tmp_path / "elsewhere" / "settings.yaml"
    assert settings.extra == {"theme": "dark"}
