"""Presets: shipped files load, save/load round-trips, bad files are SamplingErrors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from webui.loader_api import HearthError
from webui.prompts.safe_files import UnsafeNameError
from webui.sampling import (
    SamplingError,
    SamplingParams,
    delete_preset,
    list_presets,
    load_preset,
    save_preset,
)

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
