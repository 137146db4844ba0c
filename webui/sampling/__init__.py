"""Hearth's sampler pipeline: typed settings, one small class per sampler, an ordered chain, presets."""

from webui.sampling.params import DEFAULT_SAMPLER_PRIORITY, SamplingError, SamplingParams
from webui.sampling.pipeline import Sampler, build_sampler
from webui.sampling.presets import delete_preset, list_presets, load_preset, save_preset

__all__ = [
    "DEFAULT_SAMPLER_PRIORITY",
    "SamplingError",
    "SamplingParams",
    "Sampler",
    "build_sampler",
    "delete_preset",
    "list_presets",
    "load_preset",
    "save_preset",
]
