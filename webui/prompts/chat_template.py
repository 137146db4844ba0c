"""Apply a chat template to an OpenAI-style conversation, tools included, whatever the template expects.

`render_chat` is transformers' ``apply_chat_template`` for Hearth: the chat layer and the API call it with
``messages`` that may hold assistant ``tool_calls`` and ``tool`` results, plus the request's ``tools``.
Real model templates disagree on details the OpenAI format leaves open, so each template is probed once
(`template_caps`, cached per template text) and the conversation reshaped to suit it
(`webui.prompts.template_polyfills`): system text folded into the first user turn, tool-call arguments as
an object or a JSON string, 9-character tool-call ids, empty descriptions, one call per message. A
template that never reads ``tools`` (see `template_mentions_tools`) gets the generic Hermes tool prompt
instead (`webui.prompts.tool_prompt`, which documents the format the model is then asked to answer in).

Variables a template receives, besides ``messages``, ``add_generation_prompt``, ``bos_token`` and
``eos_token`` (the names llama.cpp's ``--jinja``, vLLM and transformers pass):

- ``tools``: the OpenAI tools list (``[{"type": "function", "function": {name, description,
  parameters}}]``), only when the request has tools; undefined otherwise, as in llama.cpp.
- ``functions``: the tools as indented JSON text ("" without tools), for templates that read it
  (Firefunction v2).
- ``date_string`` (``26 Jul 2024``, Llama 3.x) and ``datetime`` (``Jul 26 2024``, Firefunction): today.
- every ``template_kwargs`` item (the API's ``chat_template_kwargs``, the thinking toggle):
  ``enable_thinking``, ``reasoning_effort``, ``builtin_tools``, ``documents``, ``tools_in_user_message``,
  ``model_identity``, ... A ``None`` value means "not given" and leaves the variable undefined, so the
  template's own default applies. These override the ones above.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from webui.prompts import template_polyfills as polyfills
from webui.prompts.templates import TemplateError, render, template_variables
from webui.prompts.tool_prompt import apply_tool_prompt


def render_chat(
    template_text: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool,
    bos_token: str = "",
    eos_token: str = "",
    tools: Sequence[Mapping[str, Any]] | None = None,
    template_name: str = "template",
    **template_kwargs: Any,
) -> str:
    """Render a conversation with tools, tool calls and tool results through any chat template.

    ``messages``: OpenAI chat messages; assistant ``tool_calls`` are ``[{"id", "type": "function",
    "function": {"name", "arguments"}}]`` with arguments a JSON string or an object; ``tool`` messages
    carry ``tool_call_id`` (and ``name``). Nothing passed in is changed. Tool-call ids the template sees
    are given by `tool_call_ids`. Raises TemplateError when the template fails, `ToolCallFormatError`
    (a HearthError naming the field, e.g. ``messages[2].tool_calls[0].function.arguments``) for a
    malformed tool call.
    """
    template_variables(template_text, template_name)  # a syntax error names the template
    caps = template_caps(template_text)
    tools = list(tools or [])
    conversation = polyfills.with_content(messages)
    if not caps.tools and (tools or polyfills.has_tool_turns(conversation)):
        conversation, tools = apply_tool_prompt(conversation, tools), []
    elif polyfills.has_tool_turns(conversation):
        conversation = polyfills.with_argument_form(conversation, caps.object_arguments)
        ids = polyfills.tool_call_id_map(conversation, caps.short_ids)
        conversation = polyfills.with_tool_call_ids(conversation, ids)
        if not caps.parallel_calls:
            conversation = polyfills.split_parallel_tool_calls(conversation)
    if caps.tool_descriptions and tools:
        tools = polyfills.with_tool_descriptions(tools)
    if not caps.system_role:
        conversation = polyfills.fold_system_messages(conversation)
    return render(
        template_text,
        conversation,
        add_generation_prompt,
        bos_token,
        eos_token,
        template_name=template_name,
        **_variables(template_text, tools, template_kwargs),
    )


def tool_call_ids(template_text: str, messages: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Each tool-call id in ``messages`` -> the id `render_chat` shows the template: the same id, except
    for templates that demand 9-character alphanumeric ids (Mistral), which get
    `template_polyfills.short_tool_call_id` of it (a hash, so the same on every request).

    Invert it to turn an id the model writes back into the client's own.
    """
    caps = template_caps(template_text)
    return polyfills.tool_call_id_map(messages, caps.tools and caps.short_ids)


def template_mentions_tools(template_text: str) -> bool:
    """Whether a template reads the tools it is given (``tools``, or Firefunction's ``functions``)."""
    return bool({"tools", "functions"} & template_variables(template_text))


@dataclass(frozen=True)
class TemplateCaps:
    """What a template needs, found by rendering probe conversations (see `template_caps`)."""

    system_role: bool  # keeps a system message (else it is folded into the first user turn)
    tools: bool  # reads the tools (else the generic tool prompt is used)
    object_arguments: bool = True  # tool-call arguments as an object (else as a JSON string)
    short_ids: bool = False  # needs 9-character alphanumeric tool-call ids (Mistral)
    tool_descriptions: bool = False  # needs a description on every parameter (Command R+)
    parallel_calls: bool = True  # takes several calls in one message (else they are split, Llama 3.x)


_PROBE_USER = "hearth-probe-user"
_PROBE_SYSTEM = "hearth-probe-system"
_PROBE_VALUE = "hearth-probe-value"
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "hearth_probe_tool",
        "description": "A probe.",
        "parameters": {
            "type": "object",
            "properties": {"probe_argument": {"type": "string", "description": "A probe."}},
            "required": ["probe_argument"],
        },
    },
}


@lru_cache(maxsize=128)
def template_caps(template_text: str) -> TemplateCaps:
    """Probe a template once: does it keep a system message, in which form does it take tool calls?

    The forms tried, in order: arguments as an object (the transformers convention) or as a JSON
    string, with an ordinary id or a 9-character one. A form passes when the render succeeds and shows
    the argument value, neither double-encoded nor printed as a Python dict. The form found is then
    tried with a tool that has no parameter descriptions and with two parallel calls. llama.cpp's minja
    decides ``supports_system_role`` and ``requires_object_arguments`` the same way.
    """
    user = {"role": "user", "content": _PROBE_USER}
    system_out = _probe(template_text, [{"role": "system", "content": _PROBE_SYSTEM}, user])
    system_role = system_out is not None and _PROBE_SYSTEM in system_out
    if not template_mentions_tools(template_text):
        return TemplateCaps(system_role, tools=False)
    for short_ids in (False, True):
        for as_object in (True, False):
            if _tool_probe_passes(template_text, [_PROBE_TOOL], as_object, short_ids):
                bare = polyfills.without_descriptions([_PROBE_TOOL])
                descriptions = not _tool_probe_passes(template_text, bare, as_object, short_ids)
                parallel = _tool_probe_passes(template_text, [_PROBE_TOOL], as_object, short_ids, calls=2)
                return TemplateCaps(system_role, True, as_object, short_ids, descriptions, parallel)
    return TemplateCaps(system_role, tools=True)


def _tool_probe_passes(
    template_text: str, tools: list[dict[str, Any]], as_object: bool, short_ids: bool, calls: int = 1
) -> bool:
    ids = [f"hearth00{n}" if short_ids else f"call_hearth_probe_{n}" for n in range(calls)]
    arguments = {"probe_argument": _PROBE_VALUE}
    function = {"name": "hearth_probe_tool", "arguments": arguments if as_object else json.dumps(arguments)}
    tool_calls = [{"id": i, "type": "function", "function": function} for i in ids]
    conversation = [
        {"role": "user", "content": _PROBE_USER},
        {"role": "assistant", "content": "", "tool_calls": tool_calls},
        *({"role": "tool", "tool_call_id": i, "name": "hearth_probe_tool", "content": "result"} for i in ids),
    ]
    out = _probe(template_text, conversation, tools)
    return (
        out is not None
        and _PROBE_VALUE in out
        and '\\"probe_argument' not in out  # a JSON string encoded again
        and "'probe_argument'" not in out  # a dict printed as Python
    )


def _probe(
    template_text: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> str | None:
    try:
        return render(template_text, messages, True, **_variables(template_text, tools, {}))
    except TemplateError:
        return None


def _variables(
    template_text: str, tools: Sequence[Mapping[str, Any]] | None, template_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The context beyond the messages, as the module docstring lists."""
    today = datetime.now()
    variables: dict[str, Any] = {
        "date_string": today.strftime("%d %b %Y"),
        "datetime": today.strftime("%b %d %Y"),
    }
    if tools:
        variables["tools"] = list(tools)
    if "functions" in template_variables(template_text):
        variables["functions"] = json.dumps(list(tools or []), ensure_ascii=False, indent=2) if tools else ""
    variables.update((key, value) for key, value in template_kwargs.items() if value is not None)
    return variables
