"""Reshape an OpenAI-style conversation into the form a particular model template accepts.

Real chat templates disagree on details the OpenAI message format leaves open; peers (llama.cpp's
``--jinja``, vLLM, text-generation-webui) smooth them over the same way, and so does Hearth:

- A template that refuses or drops the system role (Gemma 2 raises) gets the system text folded into the
  first user turn, separated by a blank line (`fold_system_messages`).
- Tool-call ``arguments`` arrive as a JSON string (OpenAI) or an object; some templates iterate them
  (``.items()``), others concatenate them as text (`with_argument_form`).
- Mistral templates demand 9-character alphanumeric tool-call ids; other ids are mapped to such ids by a
  hash, so the same client id always gets the same short id (`short_tool_call_id`, `tool_call_id_map`).
- An assistant message that only calls tools has ``content`` None or none at all (the OpenAI client sends
  None); many templates test or concatenate it as a string, so it becomes "" (`with_content`).
- Templates that print each parameter's ``description`` (Command R+) get an empty one where a tool has
  none (`with_tool_descriptions`).
- Templates that refuse several calls in one message (Llama 3.x) get one call per assistant message,
  each followed by its result (`split_parallel_tool_calls`).

Every function here is pure: it returns new lists and dicts and never changes its arguments.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from webui.errors import HearthError

_SHORT_ID = re.compile(r"[A-Za-z0-9]{9}")
_ALPHABET = string.ascii_letters + string.digits


class ToolCallFormatError(HearthError, ValueError):
    """A tool call in the history is malformed; the message names the field (``messages[2]...``)."""


def with_content(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the messages in which a missing or None ``content`` is ""."""
    return [{**m, "content": "" if m.get("content") is None else m["content"]} for m in messages]


def fold_system_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Move each system message's text to the start of the next user message (a new one if none follows)."""
    folded: list[dict[str, Any]] = []
    pending: list[str] = []
    for message in messages:
        if message.get("role") == "system":
            text = content_text(message.get("content"))
            if text:
                pending.append(text)
            continue
        message = dict(message)
        if pending and message.get("role") == "user":
            message["content"] = _prepend(pending, message.get("content"))
            pending = []
        folded.append(message)
    if pending:
        folded.append({"role": "user", "content": "\n\n".join(pending)})
    return folded


def _prepend(texts: list[str], content: Any) -> Any:
    prefix = "\n\n".join(texts)
    if isinstance(content, list):  # OpenAI content parts: add a text part in front
        return [{"type": "text", "text": prefix + "\n\n"}, *content]
    text = content_text(content)
    return f"{prefix}\n\n{text}" if text else prefix


def content_text(content: Any) -> str:
    """The text of a message's content: a string, None, or a list of OpenAI content parts."""
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) for part in content if isinstance(part, Mapping) and "text" in part
        )
    return str(content)


def tool_calls_of(messages: Sequence[Mapping[str, Any]]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(message index, call index, call) for every assistant tool call, checking the OpenAI shape."""
    for i, message in enumerate(messages):
        calls = message.get("tool_calls")
        if not calls:
            continue
        if not isinstance(calls, list):
            raise ToolCallFormatError(f"messages[{i}].tool_calls must be a list")
        for j, call in enumerate(calls):
            function = call.get("function") if isinstance(call, Mapping) else None
            if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
                raise ToolCallFormatError(f"messages[{i}].tool_calls[{j}].function.name is missing")
            yield i, j, call


def has_tool_turns(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the history holds tool calls or tool results."""
    return any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)


def parse_arguments(arguments: Any, where: str) -> Any:
    """Tool-call arguments as an object: a JSON string is parsed, an empty one is ``{}``."""
    if arguments is None:
        return {}
    if not isinstance(arguments, str):
        return arguments
    if not arguments.strip():
        return {}
    try:
        return json.loads(arguments)
    except ValueError as exc:
        raise ToolCallFormatError(f"{where} is not valid JSON: {exc}") from None


def arguments_json(arguments: Any) -> str:
    """Tool-call arguments as a JSON string (a string is kept as it is)."""
    if isinstance(arguments, str):
        return arguments
    return json.dumps({} if arguments is None else arguments, ensure_ascii=False)


def with_argument_form(messages: Sequence[Mapping[str, Any]], as_object: bool) -> list[dict[str, Any]]:
    """Every tool call's ``function.arguments`` as an object (``as_object``) or as a JSON string."""
    result = copy.deepcopy([dict(m) for m in messages])
    for i, j, call in tool_calls_of(result):
        function = call["function"]
        where = f"messages[{i}].tool_calls[{j}].function.arguments"
        parsed = parse_arguments(function.get("arguments"), where)  # also checks a string is JSON
        function["arguments"] = parsed if as_object else arguments_json(function.get("arguments") or parsed)
    return result


def short_tool_call_id(tool_call_id: str) -> str:
    """A 9-character alphanumeric id for ``tool_call_id``: itself if it is one already, else a hash of it."""
    if _SHORT_ID.fullmatch(tool_call_id):
        return tool_call_id
    number = int.from_bytes(hashlib.sha256(tool_call_id.encode("utf-8")).digest()[:8], "big")
    chars = []
    for _ in range(9):
        number, index = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[index])
    return "".join(chars)


def tool_call_id_map(messages: Sequence[Mapping[str, Any]], short_ids: bool) -> dict[str, str]:
    """Each tool-call id in the history (assistant calls and tool results) -> the id the template sees."""
    ids = [str(call["id"]) for _, _, call in tool_calls_of(messages) if call.get("id") is not None]
    ids += [str(m["tool_call_id"]) for m in messages if m.get("tool_call_id") is not None]
    return {i: short_tool_call_id(i) if short_ids else i for i in dict.fromkeys(ids)}


def with_tool_call_ids(
    messages: Sequence[Mapping[str, Any]], id_map: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The messages with every tool-call id replaced through ``id_map``."""
    result = copy.deepcopy([dict(m) for m in messages])
    for _, _, call in tool_calls_of(result):
        if call.get("id") is not None:
            call["id"] = id_map.get(str(call["id"]), call["id"])
    for message in result:
        if message.get("tool_call_id") is not None:
            message["tool_call_id"] = id_map.get(str(message["tool_call_id"]), message["tool_call_id"])
    return result


def with_tool_descriptions(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The tools with an empty ``description`` wherever a function or one of its parameters has none."""
    result = copy.deepcopy([dict(t) for t in tools])
    for tool in result:
        function = tool.get("function", tool)
        if not isinstance(function, dict):
            continue
        function.setdefault("description", "")
        properties = (function.get("parameters") or {}).get("properties") or {}
        for spec in properties.values():
            if isinstance(spec, dict):
                spec.setdefault("description", "")
    return result


def without_descriptions(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The tools with every parameter ``description`` removed (to probe templates that need them)."""
    result = copy.deepcopy([dict(t) for t in tools])
    for tool in result:
        function = tool.get("function", tool)
        properties = (function.get("parameters") or {}).get("properties") or {}
        for spec in properties.values():
            if isinstance(spec, dict):
                spec.pop("description", None)
    return result


def split_parallel_tool_calls(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One tool call per assistant message, each followed by its result (matched by id, else by order),
    for templates that refuse parallel calls (Llama 3.x: "only supports single tool-calls at once")."""
    result: list[dict[str, Any]] = []
    index = 0
    while index < len(messages):
        message = dict(messages[index])
        calls = message.get("tool_calls") or []
        index += 1
        if len(calls) < 2:
            result.append(message)
            continue
        end = index
        while end < len(messages) and messages[end].get("role") == "tool":
            end += 1
        answers = [dict(m) for m in messages[index:end]]
        index = end
        call_ids = {call.get("id") for call in calls if call.get("id") is not None}
        by_id = {a["tool_call_id"]: a for a in answers if a.get("tool_call_id") in call_ids}
        unmatched = [a for a in answers if a.get("tool_call_id") not in call_ids]
        for position, call in enumerate(calls):
            result.append(
                {**message, "content": message.get("content") if position == 0 else "", "tool_calls": [call]}
            )
            answer = by_id.get(call.get("id")) or (unmatched.pop(0) if unmatched else None)
            if answer is not None:
                result.append(answer)
        result.extend(unmatched)
    return result
