"""What the generation core yields: TextChunks (with a PromptRead first when the prompt is scored), then
one Finished. The UI and the API render these; nothing else crosses from the core to an adapter."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenLogprob:
    token_id: int
    text: str
    #: None for a prompt's first token when nothing precedes it.
    logprob: float | None
    top: list[tuple[int, str, float]] = field(default_factory=list)


@dataclass
class TextChunk:
    """Newly generated text (may be empty while a stop string is being ruled out)."""

    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class PromptRead:
    """The prompt's tokens as the client sent them (a BOS Hearth added left out), each with its
    log-probability given those before it. Sent first, when the request asks for prompt_logprobs."""

    logprobs: list[TokenLogprob]


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    truncated_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Finished:
    """The last event. reason: 'stop' (EOS or a stop string), 'length' or 'cancelled'."""

    reason: str
    text: str
    usage: Usage
    seed: int
    stop_string: str | None = None
    token_ids: list[int] = field(default_factory=list)
    #: Extensions' logits processors that failed during this generation (it finished without them).
    extension_errors: list[str] = field(default_factory=list)


Event = TextChunk | PromptRead | Finished
