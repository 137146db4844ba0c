"""The generic tool prompt: tool calling for templates that know nothing about tools.

Used by `webui.prompts.chat_template.render_chat` automatically when a request has tools (or its history has
tool calls or tool results) and the template never reads ``tools`` (``template_mentions_tools``):
Hearth's shipped ChatML/Alpaca/... templates, and model templates such as Gemma 2, Phi-3.5 or the
DeepSeek-R1 distills. It follows the Hermes convention (NousResearch Hermes 2 Pro, Qwen 2.5/3), the
tool format most open models have seen in training, and the conversation is rewritten into plain
system/user/assistant turns that any template renders:

1. **Tools** are described at the end of the system message (one is added if there is none):

   .. code-block:: text

      # Tools

      You may call one or more functions to assist with the user query.

      You are provided with function signatures within <tools></tools> XML tags:
      <tools>
      {"type": "function", "function": {"name": "get_weather", "description": ..., "parameters": {...}}}
      </tools>

      For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
      <tool_call>
      {"name": <function-name>, "arguments": <args-json-object>}
      </tool_call>

   Each tool is one line of JSON, exactly as the client sent it.

2. **Assistant tool calls** in the history become the assistant's text, after any content it had, one
   block per call (the arguments as a JSON object)::

      <tool_call>
      {"name": "get_weather", "arguments": {"city": "Paris"}}
      </tool_call>

3. **Tool results** (``tool`` messages) become a user turn, one block per result, consecutive results in
   one turn, joined to an adjacent user message so user and assistant turns still alternate::

      <tool_response>
      22 C and sunny
      </tool_response>

**What the model is asked to write**, and so what the output parser must read (the Hermes format): zero
or more blocks ``<tool_call>\\n{"name": "<function name>", "arguments": {<arguments object>}}\\n</tool_call>``,
optionally after ordinary text. Nothing here constrains the output; ``tool_choice`` ``required`` or a
named function is enforced by a grammar on the generation side.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from webui.prompts.template_polyfills import content_text, parse_arguments, tool_calls_of

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"

_INSTRUCTIONS = (
    "# Tools\n\n"
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def tools_system_text(tools: Sequence[Mapping[str, Any]]) -> str:
    """The block that describes the tools and the answer format, for the end of the system message."""
    lines = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return _INSTRUCTIONS.format(tools=lines)


def tool_call_text(name: str, arguments: Any) -> str:
    """One tool call as the model is asked to write it."""
    call = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{call}\n{TOOL_CALL_CLOSE}"


def tool_response_text(content: Any) -> str:
    """One tool result as the model is shown it."""
    return f"{TOOL_RESPONSE_OPEN}\n{content_text(content)}\n{TOOL_RESPONSE_CLOSE}"


def apply_tool_prompt(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """The conversation as plain system/user/assistant turns in the Hermes format (see the module doc)."""
    list(tool_calls_of(messages))  # a malformed call fails here, naming the field
    result: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            _add_user_text(result, tool_response_text(message.get("content")), joins_tools=True)
        elif role == "assistant" and message.get("tool_calls"):
            result.append(_assistant_with_calls(message, i))
        elif role == "user" and result and result[-1].get("_tool_results"):
            _add_user_text(result, content_text(message.get("content")), joins_tools=False)
        else:
            result.append(dict(message))
    for message in result:
        message.pop("_tool_results", None)
    if tools:
        result = _with_tools_in_system(result, tools)
    return result


def _assistant_with_calls(message: Mapping[str, Any], index: int) -> dict[str, Any]:
    parts = [content_text(message.get("content")).strip()]
    for j, call in enumerate(message["tool_calls"]):
        function = call["function"]
        where = f"messages[{index}].tool_calls[{j}].function.arguments"
        parts.append(tool_call_text(function["name"], parse_arguments(function.get("arguments"), where)))
    converted = {k: v for k, v in message.items() if k != "tool_calls"}
    converted["content"] = "\n".join(part for part in parts if part)
    return converted


def _add_user_text(result: list[dict[str, Any]], text: str, joins_tools: bool) -> None:
    """Append to the last turn if it is a user turn (tool results stay in one turn), else start one."""
    last = result[-1] if result else None
    if last is not None and last.get("role") == "user" and (joins_tools or last.get("_tool_results")):
        last["content"] = f"{content_text(last.get('content'))}\n{text}" if text else last["content"]
        last["_tool_results"] = True
        return
    result.append({"role": "user", "content": text, "_tool_results": joins_tools})


def _with_tools_in_system(
    messages: list[dict[str, Any]], tools: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    block = tools_system_text(tools)
    if messages and messages[0].get("role") == "system":
        system = content_text(messages[0].get("content")).strip()
        first = {**messages[0], "content": f"{system}\n\n{block}" if system else block}
        return [first, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]
