"""API request bodies -> the core's typed `GenerationRequest`.

Where OpenAI and text-generation-webui name the same thing twice (max_tokens / max_new_tokens,
stop / stopping_strings) both are accepted: the OpenAI name wins for counts, stop lists are merged.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from webui.api.errors import APIError, from_validation
from webui.api.schemas import SAMPLER_FIELD_NAMES, ChatFields, CompletionRequest, GenerationFields
from webui.generation import GenerationRequest
from webui.sampling import SamplingParams, load_preset
from webui.session import ChatOptions, ChatService, ReplyPlan

M = TypeVar("M", bound=BaseModel)

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions
DEFAULT_CHAT_TOKENS = 512


def validated(model: type[M], data: dict[str, Any]) -> M:
    """Validate `data`; a problem becomes a 400 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc.errors()) from None


def sampling_from(body: BaseModel, presets_dir: Path) -> SamplingParams:
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


def generation_request(body: GenerationFields, presets_dir: Path, *, default_max: int, logprobs: int = 0,
                       extra_stop: Iterable[str] = (), **prompt: Any) -> GenerationRequest:
    """`prompt` is prompt=text or prompt_ids=[...]."""
    data = {
        **prompt,
        "max_new_tokens": max_new_tokens(body, default_max),
        "stop": _unique([*_strings(body.stop), *_strings(body.stopping_strings), *extra_stop]),
        "add_bos_token": body.add_bos_token,
        "truncation_length": body.truncation_length or 0,
        "logprobs": logprobs,
        "sampling": sampling_from(body, presets_dir),
    }
    return validated(GenerationRequest, data)


def completion_prompt(body: CompletionRequest) -> dict[str, Any]:
    """{'prompt': text} or {'prompt_ids': ids} from OpenAI's four prompt forms (one prompt only)."""
    prompt = body.prompt
    if isinstance(prompt, str):
        return {"prompt": prompt}
    if prompt and all(isinstance(t, int) for t in prompt):
        return {"prompt_ids": list(prompt)}
    if len(prompt) != 1:
        raise APIError(400, f"prompt: one prompt per request is supported, got {len(prompt)}", param="prompt")
    only = prompt[0]
    return {"prompt": only} if isinstance(only, str) else {"prompt_ids": list(only)}


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
