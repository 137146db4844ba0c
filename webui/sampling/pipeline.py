"""Building the ordered sampler chain from SamplingParams, and picking a token with it.

Order is data: `registry.active_chain(params)` gives the active samplers in order, and each one's
registry entry builds its processor. Neutral settings add nothing, so the common case costs only the
samplers in use. The chain is: logit_bias (biases and bans, always first), the active samplers in order, then the
`extra_processors` (transformers' own LogitsProcessors or an extension's), then the pick: argmax when
greedy, else the picking sampler when one is on (mirostat or adaptive_p), else a draw from the softmax
with the Sampler's seeded generator.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from webui.sampling.bias import LogitBias, token_bias
from webui.sampling.params import SamplingError, SamplingParams
from webui.sampling.registry import BuildContext, Picker, Processor, active_chain
from webui.sampling.tensor_ops import sample_from
from webui.sampling.vocabulary import Vocabulary

__all__ = ["Processor", "Sampler", "build_sampler"]


class Sampler:
    """One generation's ordered chain of logits processors plus the final pick.

    `processors` is the ordered list (each of ours has a `.name`; `names` lists them for debugging). Our
    processors never modify their input in place, and foreign ones (extensions', transformers') get a
    copy, so the caller's scores (possibly a model's cached logits) stay intact. Stateful parts
    (the picker's state: mirostat's mu, adaptive-p's average; the generator) belong to this object:
    build one Sampler per request."""

    def __init__(
        self,
        processors: list[Processor],
        generator: torch.Generator,
        seed: int,
        greedy: bool = False,
        picker: Picker | None = None,
    ):
        self.processors = processors
        self.generator = generator
        self.seed = seed
        self.greedy = greedy
        self.picker = picker

    @property
    def names(self) -> list[str]:
        names = [getattr(p, "name", type(p).__name__) for p in self.processors if not isinstance(p, _CopyScores)]
        return names + ([self.picker.name] if self.picker is not None else [])

    def __repr__(self) -> str:
        return f"Sampler(seed={self.seed}, greedy={self.greedy}, chain={self.names})"

    def process(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Run the chain on [batch, vocab] scores (half precision is widened to float32 first)."""
        if scores.dtype not in (torch.float32, torch.float64):
            scores = scores.float()
        for processor in self.processors:
            scores = processor(input_ids, scores)
        return scores

    def choose(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> int:
        """Run the chain on [1, vocab] scores (input_ids [1, seq]: prompt + generated) and pick one id."""
        scores = self.process(input_ids, scores)
        if self.greedy:
            return int(scores[0].argmax())
        if self.picker is not None:
            return self.picker.choose(scores[0])
        return sample_from(scores[0], self.generator)

    def probabilities(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        """The distribution `choose` samples from (1-D), for the logits inspector ("after samplers").
        The picker's state is not advanced; XTC, when on, flips its coin on the generator as in `choose`."""
        scores = self.process(input_ids, scores)[0].float()
        if self.greedy:
            probs = torch.zeros_like(scores)
            probs[scores.argmax()] = 1.0
            return probs
        if self.picker is not None:
            scores = self.picker.keep(scores)
        return torch.softmax(scores, dim=-1)


def build_sampler(
    params: SamplingParams,
    *,
    vocab_size: int,
    eos_token_ids: Iterable[int],
    prompt_ids: Sequence[int] = (),
    vocabulary: Vocabulary | None = None,
    extra_processors: Sequence[Any] = (),
) -> Sampler:
    """The Sampler for one generation: a fresh picker state, a generator seeded from params.seed (a random
    seed when it is -1; the one used is `Sampler.seed`, so a reply can be replayed).

    `vocabulary` is the model's (DRY's sequence breakers, XTC's newline; without it, neither has any);
    `prompt_ids` feed the encoder repetition penalty. Settings that cannot work with this vocabulary
    (a biased or banned id outside it, dynatemp_low above dynatemp_high) raise SamplingError."""
    seed = params.seed if params.seed >= 0 else random.randrange(2**63)
    generator = torch.Generator().manual_seed(seed)
    eos = {t for t in eos_token_ids if 0 <= t < vocab_size}
    processors: list[Processor] = []
    for field, ids in (("logit_bias", params.logit_bias), ("custom_token_bans", params.custom_token_bans)):
        outside = sorted(t for t in ids if t >= vocab_size)
        if outside:
            raise SamplingError(
                f"{field}: token ids outside the vocabulary (0..{vocab_size - 1}): {outside[:5]}"
            )
    bias = token_bias(params, eos)
    if bias:
        processors.append(LogitBias(bias, vocab_size))
    picker: Picker | None = None
    context = BuildContext(generator, tuple(prompt_ids), vocabulary, frozenset(eos))
    for spec in active_chain(params):
        try:
            built = spec.build(params, context)
        except ValueError as exc:
            raise SamplingError(f"{spec.name}: {exc}") from None
        if spec.picker:
            picker = built
        else:
            processors.append(built)
    if extra_processors:  # ours never write to their input; a foreign processor may: give it a copy
        processors.append(_CopyScores())
        processors.extend(extra_processors)
    return Sampler(processors, generator, seed, params.greedy, picker)


class _CopyScores:
    """Hands the processors after it a copy (they may write to their input)."""

    name = "copy"

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.clone()

