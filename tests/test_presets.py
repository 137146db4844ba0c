"""Presets: shipped files load, save/load round-trips, bad files are SamplingErrors naming file and field;
user presets live in user_data/presets and win over shipped ones, which cannot be deleted."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from webui.config import Settings
from webui.errors import HearthError
from webui.safe_files import UnsafeNameError
from webui.sampling import (
    SamplingError,
    SamplingParams,
    delete_preset,
    list_presets,
    load_preset,
    save_preset,
)
from webui.sampling.presets import PresetLibrary, user_presets_dir

PRESETS = Path(__file__).resolve().parent.parent / "presets"


def test_every_shipped_preset_loads_and_stores_only_non_neutral_values():
    names = list_presets(PRESETS)
    assert {
        "Simple-1",
        "min_p",
        "Deterministic",
        "Null preset",
        "Mirostat",
        "Big O",
        "Divine Intellect",
    } <= set(names)
    neutral = SamplingParams()
    for name in names:
        params = load_preset(PRESETS, name)
        stored = yaml.safe_load((PRESETS / f"{name}.yaml").read_text(encoding="utf-8")) or {}
        assert all(getattr(neutral, key) != getattr(params, key) for key in stored), name
    assert load_preset(PRESETS, "Null preset") == SamplingParams()
    simple = load_preset(PRESETS, "Simple-1")
    assert (simple.temperature, simple.top_p, simple.top_k, simple.repetition_penalty) == (0.7, 0.9, 20, 1.15)
    assert load_preset(PRESETS, "min_p").active_samplers() == ["min_p"]
    assert load_preset(PRESETS, "Deterministic").greedy


def test_round_trip_writes_only_differences(tmp_path: Path):
    params = SamplingParams(
        temperature=0.6,
        min_p=0.07,
        dry_multiplier=0.8,
        logit_bias={5: -1.5},
        dry_sequence_breakers=["\n", "###"],
        sampler_priority=["min_p", "temperature"],
    )
    path = save_preset(tmp_path, "Mine", params)
    text = path.read_text(encoding="utf-8")
    assert "top_p:" not in text and "min_p: 0.07" in text
    assert load_preset(tmp_path, "Mine") == params
    assert list_presets(tmp_path) == ["Mine"]
    assert [p.name for p in tmp_path.iterdir()] == ["Mine.yaml"]  # no temp file left behind
    save_preset(tmp_path, "Mine", SamplingParams(top_k=5))  # overwrite
    assert load_preset(tmp_path, "Mine") == SamplingParams(top_k=5)
    save_preset(tmp_path, "Empty", SamplingParams())
    assert load_preset(tmp_path, "Empty") == SamplingParams()
    delete_preset(tmp_path, "Mine")
    assert list_presets(tmp_path) == ["Empty"]
    with pytest.raises(SamplingError, match="no preset named"):
        delete_preset(tmp_path, "Mine")


def test_unsafe_names_are_refused_and_nothing_is_written(tmp_path: Path):
    inside = tmp_path / "presets"
    for hostile in ("../../evil/name", "/etc/passwd", "a\\b", "x\x00y", ".hidden", "CON"):
        with pytest.raises(UnsafeNameError, match="not allowed"):
            save_preset(inside, hostile, SamplingParams(top_k=3))
        with pytest.raises(HearthError):
            load_preset(inside, hostile)
    assert not inside.exists() and not (tmp_path / "evil").exists()
    with pytest.raises(SamplingError, match="needs a name"):
        save_preset(inside, " .. ", SamplingParams())
    assert save_preset(inside, "Mon préréglage 1", SamplingParams(top_k=3)).name == "Mon préréglage 1.yaml"


@pytest.mark.parametrize("content, message", [
    ("top_p: 7\n", "bad.yaml: top_p"),
    ("temprature: 1\n", "bad.yaml: temprature"),
    ("top_k: [1, 2\n", "bad.yaml is not valid YAML"),
    ("- top_k\n", "bad.yaml must be a mapping"),
    ("sampler_priority: [top_k, warp]\n", "bad.yaml: sampler_priority"),
])  # fmt: skip
def test_bad_files_name_the_file_and_field(tmp_path: Path, content: str, message: str):
    (tmp_path / "bad.yaml").write_text(content, encoding="utf-8")
    with pytest.raises(SamplingError, match=message):
        load_preset(tmp_path, "bad")


def _library(tmp_path: Path) -> PresetLibrary:
    shipped = tmp_path / "presets"
    shipped.mkdir()
    for name in ("Simple-1", "min_p"):
        (shipped / f"{name}.yaml").write_text((PRESETS / f"{name}.yaml").read_text(encoding="utf-8"), "utf-8")
    return PresetLibrary(shipped, user_presets_dir(tmp_path / "user_data"))


def test_user_presets_go_to_user_data_and_win_over_shipped_ones(tmp_path: Path):
    library = _library(tmp_path)
    shipped_text = (library.shipped / "Simple-1.yaml").read_text(encoding="utf-8")
    assert library.user == tmp_path / "user_data" / "presets"
    path, shadows = library.save("Mine", SamplingParams(top_k=7))
    assert path == library.user / "Mine.yaml" and not shadows
    path, shadows = library.save("Simple-1", SamplingParams(temperature=0.2))
    assert path == library.user / "Simple-1.yaml" and shadows  # a user copy, and the caller is told
    assert (library.shipped / "Simple-1.yaml").read_text(encoding="utf-8") == shipped_text
    assert sorted(p.name for p in library.shipped.iterdir()) == ["Simple-1.yaml", "min_p.yaml"]
    assert library.names() == ["min_p", "Mine", "Simple-1"]  # each name once
    assert library.load("Simple-1") == SamplingParams(temperature=0.2)
    assert load_preset(library.folders, "Mine").top_k == 7  # what the API and --preset use
    assert load_preset(library.folders, "min_p").active_samplers() == ["min_p"]
    # deleting the user copy shows the shipped preset again; a shipped preset itself cannot be deleted
    assert library.delete("Simple-1") is True
    assert library.load("Simple-1").top_k == 20
    with pytest.raises(SamplingError, match="shipped with Hearth and cannot be deleted"):
        library.delete("Simple-1")
    with pytest.raises(SamplingError, match="cannot be deleted"):
        library.delete("min_p")
    assert library.delete("Mine") is False
    with pytest.raises(SamplingError, match="no preset named"):
        library.delete("Mine")
    assert library.is_shipped("simple-1") and not library.is_shipped("Mine")


def test_preset_library_from_settings(tmp_path: Path):
    settings = Settings(presets_dir=tmp_path / "shipped", user_data_dir=tmp_path / "user")
    library = PresetLibrary.for_settings(settings)
    assert (library.shipped, library.user) == (tmp_path / "shipped", tmp_path / "user" / "presets")
    assert library.names() == []  # neither folder exists yet
