"""API request bodies -> the core's typed `GenerationRequest`.

Where OpenAI and text-generation-webui name the same thing twice (max_tokens / max_new_tokens,
stop / stopping_strings) both are accepted: the OpenAI name wins for counts, stop lists are merged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from webui.api.errors import APIError, from_validation
from webui.api.schemas import (
    MAX_CHOICES,
    SAMPLER_FIELD_NAMES,
    ChatFields,
    CompletionRequest,
    GenerationFields,
)
from webui.chat_service import ChatOptions, ChatService, ReplyPlan
from webui.generation import GenerationRequest
from webui.sampling import SamplingParams, load_preset
from webui.sampling.presets import PresetFolders

M = TypeVar("M", bound=BaseModel)

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions
DEFAULT_CHAT_TOKENS = 512


def validated(model: type[M], data: dict[str, Any]) -> M:
    """Validate `data`; a problem becomes a 400 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc.errors()) from None


def sampling_from(body: BaseModel, presets_dir: PresetFolders) -> SamplingParams:
    """The preset (or neutral defaults) overridden by the sampler fields the client gave."""
    given = {name: value for name in SAMPLER_FIELD_NAMES if (value := getattr(body, name)) is not None}
    preset = getattr(body, "preset", None)
    if not preset:
        return validated(SamplingParams, given)
    return validated(SamplingParams, {**load_preset(presets_dir, preset).model_dump(), **given})


def max_new_tokens(body: GenerationFields, default: int) -> int:
    if body.max_tokens is not None:
        return body.max_tokens
    return body.max_new_tokens if body.max_new_tokens is not None else default


def _strings(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(s for s in items if s))


def generation_request(body: GenerationFields, presets_dir: PresetFolders, *, default_max: int, logprobs: int = 0,
                       prompt_logprobs: int | None = None, extra_stop: Iterable[str] = (), **prompt: Any) -> GenerationRequest:
    """`prompt` is prompt=text or prompt_ids=[...]."""
    data = {
        **prompt,
        "prompt_logprobs": prompt_logprobs,
        "max_new_tokens": max_new_tokens(body, default_max),
        "stop": _unique([*_strings(body.stop), *_strings(body.stopping_strings), *extra_stop]),
        "add_bos_token": body.add_bos_token,
        "truncation_length": body.truncation_length or 0,
        "logprobs": logprobs,
        "sampling": sampling_from(body, presets_dir),
    }
    return validated(GenerationRequest, data)


def completion_prompts(body: CompletionRequest) -> list[dict[str, Any]]:
    """[{'prompt': text} or {'prompt_ids': ids}, ...] from OpenAI's four prompt forms: one text, one list of
    token ids, or a list of either (a batch: one choice each, in order)."""
    prompt = body.prompt
    if isinstance(prompt, str):
        return [{"prompt": prompt}]
    if not prompt:
        raise APIError(400, "prompt: give a text, a list of token ids, or a list of those (got an empty list)",
                       param="prompt", code="invalid_value")
    if all(isinstance(t, int) for t in prompt):
        return [{"prompt_ids": list(prompt)}]
    if len(prompt) * body.n > MAX_CHOICES:
        raise APIError(400, f"n: {len(prompt)} prompts x n={body.n} is more than {MAX_CHOICES} choices in one request",
                       param="n", code="invalid_value")
    return [{"prompt": one} if isinstance(one, str) else {"prompt_ids": list(one)} for one in prompt]


def completion_requests(body: CompletionRequest, prompts: list[dict[str, Any]], presets_dir: PresetFolders) -> list[GenerationRequest]:
    """One request per choice: each prompt `n` times (choice index = prompt * n + sample, as OpenAI's).
    A fixed seed gives sample j the seed + j, so sample 0 is what n=1 gives and the others differ."""
    logprobs = body.logprobs
    scored = max(logprobs, 1) if body.echo and logprobs is not None else None
    requests = []
    for prompt in prompts:
        base = generation_request(body, presets_dir, default_max=DEFAULT_COMPLETION_TOKENS,
                                  logprobs=0 if logprobs is None else max(logprobs, 1), prompt_logprobs=scored, **prompt)
        requests += [base if j == 0 or base.sampling.seed < 0 else
                     base.model_copy(update={"sampling": base.sampling.model_copy(update={"seed": (base.sampling.seed + j) % 2**63})})
                     for j in range(body.n)]
    return requests


def chat_plan(service: ChatService, body: ChatFields, probe: GenerationRequest) -> ReplyPlan:
    """The reply a chat request asks for, planned by the same service and extension hooks as the Chat tab.
    `probe` is the request's settings (`generation_request` without a prompt yet)."""
    if body.continue_ and body.messages[-1].role != "assistant":
        raise APIError(400, "continue_: the last message must be the assistant's (the reply to continue), got "
                            f"{body.messages[-1].role!r}", param="continue_", code="invalid_value")
    defaults = ChatOptions()
    options = ChatOptions(
        mode=body.mode,
        character=body.character,
        user_name=body.user_name or defaults.user_name,
        instruction_template=body.instruction_template,
        chat_instruct_command=body.chat_instruct_command or defaults.chat_instruct_command,
    )
    messages = [m.model_dump() for m in body.messages]
    return service.plan_reply_to_messages(messages, options, probe, continue_last=body.continue_)


def with_chat_prompt(probe: GenerationRequest, plan: ReplyPlan) -> GenerationRequest:
    """The request that generates the planned reply: its prompt, and the template's stop strings added."""
    stop = _unique([*probe.stop, *plan.prompt.stop_strings])
    return probe.model_copy(update={"prompt": plan.prompt.text, "stop": stop})
