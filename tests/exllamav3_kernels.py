"""exllamav3's real sampler, run on the CPU: the installed package's own
``exllamav3.generator.sampler`` module, imported with its CUDA extension replaced by torch stand-ins for the
few kernels its step-by-step sampler calls.

The packages above it are entered without running their __init__ (which imports the whole model stack and
triton), and `exllamav3.tokenizer` is a stand-in class: the sampler names it in type hints only.
The stand-ins are written here from what the kernels compute (exllamav3_ext/generator/rep_pen.cu and
gumbel.cu in the 1.6.5 wheel): a repetition penalty that divides positive logits and multiplies negative
ones for tokens seen in the window, with a linear fade over ``decay_range``; OpenAI's presence and
frequency penalties over the same window; Gumbel noise for the categorical draw. Any other kernel raises,
so a test that reaches one learns it at once. The fused sampler (one CUDA kernel for a
temperature/truncation/draw tail) is switched off with the library's own switch, EXL3_FUSED_SAMPLER=0, which
keeps "the original step-by-step implementation (for testing/validation)".
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

import torch


def _window_factors(past_ids: torch.Tensor, vocab: int, sustain: int, decay: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token: the strongest penalty factor among its occurrences (1 inside `sustain`, fading linearly to 0
    over `decay` after it) and the sum of the factors (its weighted count)."""
    if past_ids.dtype != torch.long or past_ids.shape[0] != 1:
        raise RuntimeError("the kernels take past_ids as int64 with batch size 1")
    past = past_ids[0]
    n = past.numel()
    distance = n - torch.arange(n, dtype=torch.float32)
    factor = torch.ones(n) if decay <= 0 else (1.0 - (distance - sustain) / decay).clamp(0.0, 1.0)
    factor = torch.where(distance <= sustain, torch.ones(n), factor)
    keep = (distance <= sustain + decay) & (past >= 0) & (past < vocab)
    ids, factor = past[keep], factor[keep]
    strongest = torch.zeros(vocab).scatter_reduce(0, ids, factor, "amax", include_self=True)
    weighted = torch.zeros(vocab).index_add(0, ids, factor)
    return strongest, weighted


class SamplerKernels(types.ModuleType):
    """The `exllamav3_ext` the sampler module sees: sampler kernels in torch, every other kernel refused."""

    @staticmethod
    def apply_rep_pens(in_logits, out_logits, past_ids, rep_p, sustain_range, decay_range) -> None:
        logits = in_logits.float()
        strongest, _ = _window_factors(past_ids, logits.shape[-1], sustain_range, decay_range)
        penalised = torch.where(logits > 0, logits / rep_p, logits * rep_p)
        weight = strongest + 1e-30  # the kernel's blend: never 0 x inf for a banned (-inf) logit
        out_logits.copy_(logits * ((1.0 - weight) + 1e-30) + penalised * weight)

    @staticmethod
    def apply_pres_freq_pens(in_logits, out_logits, past_ids, pres_p, freq_p, sustain_range, decay_range) -> None:
        logits = in_logits.float()
        strongest, weighted = _window_factors(past_ids, logits.shape[-1], sustain_range, decay_range)
        out_logits.copy_(logits - weighted * freq_p - strongest * pres_p)

    @staticmethod
    def _gumbel(shape: torch.Size, seed: int) -> torch.Tensor:
        u = torch.rand(shape, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
        return -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-7))).float()

    @classmethod
    def gumbel_noise_f16(cls, in_logits, out, rand_u32) -> None:
        out.copy_(in_logits.float() + cls._gumbel(in_logits.shape, rand_u32))

    gumbel_noise_f32 = gumbel_noise_f16

    @classmethod
    def gumbel_noise_log(cls, probs, out, rand_u32) -> None:
        out.copy_(torch.log(probs) + cls._gumbel(probs.shape, rand_u32))

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def needs_cuda(*args, **kwargs):
            raise RuntimeError(f"exllamav3_ext.{name} is a CUDA kernel with no CPU stand-in in the tests")

        return needs_cuda


def real_sampler_module() -> types.ModuleType:
    """exllamav3's own `exllamav3.generator.sampler` (the installed package), running on `SamplerKernels`.

    The package is imported privately with a stand-in `exllamav3.ext` (the real one compiles CUDA code on
    import), then sys.modules is put back as it was, so a later real import (a GPU test) is unaffected."""
    saved = {name: mod for name, mod in sys.modules.items() if name == "exllamav3" or name.startswith("exllamav3.")}
    fused = os.environ.get("EXL3_FUSED_SAMPLER")
    for name in saved:
        del sys.modules[name]
    ext = types.ModuleType("exllamav3.ext")
    ext.exllamav3_ext = SamplerKernels("exllamav3_ext")
    sys.modules["exllamav3.ext"] = ext
    # The packages above the sampler, without their __init__ (which imports the whole model stack, triton
    # included): submodules are still found in the installed package's folders.
    spec = importlib.util.find_spec("exllamav3")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("exllamav3 is not installed")
    root = list(spec.submodule_search_locations)[0]
    for name, folder in (("exllamav3", root), ("exllamav3.generator", os.path.join(root, "generator"))):
        package = types.ModuleType(name)
        package.__path__ = [folder]
        sys.modules[name] = package
    tokenizer = types.ModuleType("exllamav3.tokenizer")  # the sampler names the class in type hints only
    tokenizer.Tokenizer = type("Tokenizer", (), {})
    sys.modules["exllamav3.tokenizer"] = tokenizer
    os.environ["EXL3_FUSED_SAMPLER"] = "0"
    try:
        module = importlib.import_module("exllamav3.generator.sampler")
    finally:
        for name in [n for n in sys.modules if n == "exllamav3" or n.startswith("exllamav3.")]:
            del sys.modules[name]
        sys.modules.update(saved)
        if fused is None:
            os.environ.pop("EXL3_FUSED_SAMPLER", None)
        else:
            os.environ["EXL3_FUSED_SAMPLER"] = fused
    return module
