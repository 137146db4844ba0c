"""The sampler debugger's core: what each sampler of the active chain did to one position's distribution.

For a position in a text (the tokens before it are the context), the model's logits go through the chain a
generation builds (`build_sampler`: logit_bias first, then `active_chain` in order, then the picker), and the
distribution is recorded after every step: which tokens each step removed, how the temperature family
reshaped the rest, the entropy, and the final probabilities, which are those `Sampler.probabilities` gives
(the logits inspector's "after samplers"). Nothing of a generation's state is advanced.

Random and stateful steps are described, not rolled: XTC is shown as when its coin fires (its note gives the
chance), mirostat and adaptive-p with the state a generation starts with. What acts around the chain in a
generation (a grammar's mask, CFG, banned strings' rollback, extensions' processors) is named in `notes`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from webui.errors import ContextLengthError
from webui.input_errors import InvalidInput, check_token_ids
from webui.sampling.adaptive_p import AdaptiveP
from webui.sampling.mirostat import Mirostat
from webui.sampling.params import SamplingParams
from webui.sampling.pipeline import Sampler, build_sampler
from webui.sampling.xtc import XTC

if TYPE_CHECKING:
    from webui.generation import GenerationCore

StageKind = Literal["model", "sampler", "picker", "pick"]
#: Most candidates a trace lists per stage (the API's bound too).
MAX_TOP_K = 100
GREEDY_NOTE = "greedy decoding (temperature 0 or do_sample off): the most likely token is always picked"


@dataclass(frozen=True)
class Candidate:
    token_id: int
    text: str


@dataclass(frozen=True)
class TraceStage:
    """The distribution after one step; per-candidate values line up with `SamplerTrace.candidates`."""

    name: str
    kind: StageKind
    probabilities: tuple[float, ...]
    #: -inf where the token is removed.
    logits: tuple[float, ...]
    #: Shannon entropy of the whole distribution, in bits.
    entropy: float
    #: Tokens of the whole vocabulary still possible after this step.
    survivors: int
    #: Candidates this step removed (possible before it, not after).
    removed: tuple[int, ...]
    #: Tokens of the whole vocabulary this step removed.
    removed_total: int
    note: str = ""


@dataclass(frozen=True)
class SamplerTrace:
    """One position: the model's distribution, then the distribution after each step, in order."""

    #: Tokens of context (the traced token is the text's token at this index, when the text goes on).
    position: int
    #: The token the text has at `position` (None past its end).
    actual: Candidate | None
    #: The top-K of every stage (and `actual`), most likely after the chain first.
    candidates: tuple[Candidate, ...]
    stages: tuple[TraceStage, ...]
    notes: tuple[str, ...] = ()

    @property
    def chain(self) -> list[str]:
        """The steps after the model's logits, in the order they ran."""
        return [stage.name for stage in self.stages[1:]]

    @property
    def final(self) -> TraceStage:
        return self.stages[-1]

    def probability(self, stage: TraceStage, token_id: int) -> float:
        return stage.probabilities[[c.token_id for c in self.candidates].index(token_id)]


Step = tuple[str, StageKind, torch.Tensor, str]


def run_chain(sampler: Sampler, input_ids: torch.LongTensor, logits: torch.Tensor) -> list[Step]:
    """(name, kind, 1-D logits after it, note) for the model's logits and after each step of `sampler`,
    ending with the logits the token is drawn from (as `Sampler.probabilities`)."""
    scores = logits.float().reshape(1, -1).clone()
    steps: list[Step] = [("raw", "model", scores[0], "")]
    for processor in sampler.processors:
        note = ""
        if isinstance(processor, XTC):
            processor, note = _xtc_fires(processor)
        scores = processor(input_ids, scores)
        steps.append((getattr(processor, "name", type(processor).__name__), "sampler", scores[0], note))
    last = scores[0]
    if sampler.greedy:
        pick = torch.full_like(last, float("-inf"))
        pick[last.argmax()] = 0.0
        steps.append(("greedy", "pick", pick, GREEDY_NOTE))
    elif sampler.picker is not None:
        steps.append((sampler.picker.name, "picker", sampler.picker.keep(last), _picker_note(sampler.picker)))
    return steps


def _xtc_fires(xtc: XTC) -> tuple[XTC, str]:
    fires = copy.copy(xtc)
    fires.probability = 1.0  # torch.rand < 1 always: the coin fires
    return fires, (
        f"XTC acts on a coin flip ({xtc.probability:.0%} of tokens): shown as when it fires; otherwise it "
        "changes nothing"
    )


def _picker_note(picker: object) -> str:
    if isinstance(picker, Mirostat):
        return (
            f"mirostat {picker.mode}: shown with mu = {picker.mu:.2f} (2 × tau), where a generation starts; "
            "mu then moves after each pick to keep the surprise near tau"
        )
    if isinstance(picker, AdaptiveP):
        return (
            f"adaptive-p: shown with the target {picker.adapted_target:.2f} a generation starts with; the "
            "target then adapts to the tokens picked"
        )
    return f"{getattr(picker, 'name', 'the picker')} keeps state over a generation: shown with its starting state"


def chain_notes(params: SamplingParams) -> list[str]:
    """What a generation does around the chain that a trace does not show."""
    notes = []
    if params.constrained:
        notes.append("a grammar or JSON schema removes the tokens it forbids before these steps; not shown")
    if params.guidance_scale != 1:
        notes.append(
            "CFG (guidance_scale) mixes in the negative prompt's logits before these steps; not shown"
        )
    if params.banned_strings:
        notes.append("banned_strings are enforced after a pick (rolled back and drawn again); not shown")
    return notes


def entropy_bits(logits: torch.Tensor) -> float:
    return float(torch.special.entr(torch.softmax(logits.double(), dim=-1)).sum()) / math.log(2)


def summarize(
    steps: Sequence[Step],
    detokenize: Callable[[Sequence[int]], str],
    top_k: int = 10,
    position: int = 0,
    actual: int | None = None,
    notes: Sequence[str] = (),
) -> SamplerTrace:
    """The steps' distributions reduced to the top `top_k` candidates of each stage (and `actual`)."""
    k = max(1, min(top_k, MAX_TOP_K, steps[0][2].numel()))
    probs = [torch.softmax(logits.double(), dim=-1) for _, _, logits, _ in steps]
    wanted = {int(i) for p in probs for v, i in zip(*torch.topk(p, k), strict=True) if v > 0}
    if actual is not None:
        wanted.add(actual)
    ids = sorted(wanted, key=lambda i: (-float(probs[-1][i]), -float(probs[0][i]), i))
    index = torch.tensor(ids)
    stages, alive = [], torch.isfinite(steps[0][2])
    for (name, kind, logits, note), p in zip(steps, probs, strict=True):
        now = torch.isfinite(logits)
        gone = alive & ~now
        stages.append(TraceStage(
            name, kind,
            probabilities=tuple(float(v) for v in p[index]),
            logits=tuple(float(v) for v in logits[index]),
            entropy=entropy_bits(logits),
            survivors=int(now.sum()),
            removed=tuple(i for i in ids if gone[i]),
            removed_total=int(gone.sum()),
            note=note,
        ))  # fmt: skip
        alive = now
    candidates = tuple(Candidate(i, detokenize([i])) for i in ids)
    actual_candidate = Candidate(actual, detokenize([actual])) if actual is not None else None
    return SamplerTrace(position, actual_candidate, candidates, tuple(stages), tuple(notes))


def sampler_trace(
    core: GenerationCore,
    text_or_ids: str | Sequence[int],
    position: int | None = None,
    sampling: SamplingParams | None = None,
    top_k: int = 10,
    *,
    add_bos: bool = True,
    prompt_length: int | None = None,
) -> SamplerTrace:
    """Trace the token at `position` of a text (a string, tokenized with `add_bos`, or token ids): the
    tokens before it are the context; None traces the next token after the whole text. `prompt_length`
    is how much of the context was the prompt (the encoder repetition penalty's; default: all of it).
    Runs in its turn through `GenerationCore.inspect` (beside the generations in progress on a model with
    `parallel` slots)."""
    params = sampling or SamplingParams()
    return core.inspect(lambda: _trace(core, text_or_ids, position, params, top_k, add_bos, prompt_length))


def _trace(
    core: GenerationCore,
    text_or_ids: str | Sequence[int],
    position: int | None,
    params: SamplingParams,
    top_k: int,
    add_bos: bool,
    prompt_length: int | None,
) -> SamplerTrace:
    model = core.models.require()
    if isinstance(text_or_ids, str):
        ids = model.tokenize(text_or_ids, add_bos) or [model.bos_token_id or 0]
    else:
        ids = list(text_or_ids)
        check_token_ids(ids, model.vocab_size, "prompt_ids")
    position = len(ids) if position is None else position
    if not 1 <= position <= len(ids):
        raise InvalidInput(
            f"position: the text has {len(ids)} tokens; give 1..{len(ids)} (the tokens before it are the "
            f"context), got {position}",
            "position",
        )
    context = ids[:position]
    if len(context) > model.n_ctx:
        raise ContextLengthError(
            f"the context is {len(context)} tokens, more than the model's context of {model.n_ctx}"
        )
    sampler = build_sampler(
        params,
        vocab_size=model.vocab_size,
        eos_token_ids=model.eos_token_ids,
        prompt_ids=context[:prompt_length],
        vocabulary=model.vocabulary,
    )
    notes = chain_notes(params)
    if core.extra_processors:
        notes.append("extensions' logits processors also run in a generation; not shown")
    steps = run_chain(sampler, torch.tensor([context]), model.logits(context))
    actual = ids[position] if position < len(ids) else None
    return summarize(steps, model.detokenize, top_k, position, actual, notes)
