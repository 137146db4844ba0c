"""Presets: shipped files load, save/load round-trips, bad files are SamplingErrors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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


def test_names_are_sanitised_into_the_folder(tmp_path: Path):
    inside = tmp_path / "presets"
    path = save_preset(inside, "../../evil/name", SamplingParams(top_k=3))
    assert path.parent == inside and "/" not in path.stem and ".." not in path.stem
    assert not (tmp_path / "evil").exists()
    with pytest.raises(SamplingError, match="no preset named"):
        load_preset(inside, "../../etc/passwd")
    with pytest.raises(SamplingError, match="needs a name"):
        save_preset(inside, " .. ", SamplingParams())


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
