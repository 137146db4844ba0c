"""Hearth's sampler pipeline: typed settings, one small class per sampler, one ordered registry of them
(`registry.SAMPLERS`), the chain built from it, presets."""

from webui.sampling.params import SamplingError, SamplingParams
from webui.sampling.pipeline import Sampler, build_sampler
from webui.sampling.presets import delete_preset, list_presets, load_preset, save_preset
from webui.sampling.registry import DEFAULT_SAMPLER_PRIORITY

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
