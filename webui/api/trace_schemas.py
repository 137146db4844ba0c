"""Request and response of POST /v1/internal/logits/trace: what each sampler did at one position
(`webui.sampling.trace`), for scripts that study a preset."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from webui.api.schemas import SamplerFields, routed_model_field
from webui.sampling.trace import MAX_TOP_K, Candidate, SamplerTrace


class LogitsTraceRequest(SamplerFields):  # type: ignore[misc, valid-type]
    """A prompt and the sampler fields of a completion request (same names, string forms and `preset`)."""

    prompt: str
    model: str | None = routed_model_field()
    position: int | None = Field(
        None, ge=1,
        description="Trace the prompt's token at this index (BOS counted): the tokens before it are the context "
        "and `actual` names the token the prompt has there. Absent: the next token after the whole prompt.",
    )  # fmt: skip
    top_logits: int = Field(
        10, ge=1, le=MAX_TOP_K, description="How many of the most likely tokens of each stage to list."
    )
    add_bos_token: bool = True


class TraceToken(BaseModel):
    token_id: int
    token: str


def _token(candidate: Candidate) -> TraceToken:
    return TraceToken(token_id=candidate.token_id, token=candidate.text)


class TraceStageInfo(BaseModel):
    """The distribution after one step; `probs` and `logits` line up with the response's `candidates`."""

    name: str = Field(description="'raw' (the model's), a sampler_priority name, 'logit_bias', or 'greedy'.")
    kind: Literal["model", "sampler", "picker", "pick"] = Field(
        description="model: the logits; sampler: a step of the chain; picker: mirostat / adaptive_p, which pick "
        "the token; pick: greedy decoding's argmax."
    )
    probs: list[float] = Field(description="Each candidate's probability after this step (0: removed).")
    logits: list[float | None] = Field(description="Each candidate's logit after this step (null: removed).")
    entropy_bits: float = Field(description="Entropy of the whole distribution after this step, in bits.")
    survivors: int = Field(description="Tokens of the vocabulary still possible after this step.")
    removed: list[int] = Field(description="Candidates' token ids this step removed.")
    removed_total: int = Field(description="Tokens of the whole vocabulary this step removed.")
    note: str | None = Field(
        None, description="How a random or stateful step is shown (XTC's coin, mirostat's mu)."
    )


class LogitsTraceResponse(BaseModel):
    """The model's distribution at `position`, then after each step of the active chain, in order."""

    position: int = Field(description="Tokens of context before the traced token.")
    chain: list[str] = Field(description="The steps after the model's logits, in the order they ran.")
    actual: TraceToken | None = Field(description="The prompt's token at `position` (null after its end).")
    candidates: list[TraceToken] = Field(
        description="Each stage's top tokens, most likely after the chain first."
    )
    stages: list[TraceStageInfo]
    notes: list[str] = Field(description="What a generation does around the chain that is not shown.")

    @classmethod
    def of(cls, trace: SamplerTrace) -> LogitsTraceResponse:
        stages = [
            TraceStageInfo(
                name=s.name, kind=s.kind, probs=list(s.probabilities),
                logits=[v if v > float("-inf") else None for v in s.logits],
                entropy_bits=s.entropy, survivors=s.survivors, removed=list(s.removed),
                removed_total=s.removed_total, note=s.note or None,
            )
            for s in trace.stages
        ]  # fmt: skip
        return cls(
            position=trace.position,
            chain=trace.chain,
            actual=_token(trace.actual) if trace.actual else None,
            candidates=[_token(c) for c in trace.candidates],
            stages=stages,
            notes=list(trace.notes),
        )
