"""Reasoning ("thinking") blocks: which markers a model thinks between, and splitting them from the answer.

Thinking models write their reasoning between two markers before the answer (``<think>...</think>`` for
most, ``[THINK]``, ``<seed:think>``, ``<|START_THINKING|>``, gpt-oss's analysis channel, ...). The markers
per family are data, in ``templates/reasoning_rules.yaml``; `detect_reasoning` picks a model's from its
chat template and vocabulary. `ReasoningSplitter` splits a streamed reply into reasoning and answer text
(`split_reasoning` a whole one), so the UI and the API get the same split. Tool calls are parsed from the
answer afterwards (``webui.prompts.tool_calls``): a call written while thinking is part of the thinking.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from webui.prompts.templates import TemplateError

log = logging.getLogger(__name__)

RULES_NAME = "reasoning_rules.yaml"
#: The shipped rules (beside ``model_rules.yaml``); pass ``settings.templates_dir / RULES_NAME`` as
#: `rules_path` to follow a templates folder moved by the settings.
REASONING_RULES_FILE = Path(__file__).resolve().parent.parent.parent / "templates" / RULES_NAME


@dataclass(frozen=True)
class ReasoningFormat:
    """The text around a model's reasoning block, and around the answer that follows it.

    An empty `start` means the block opens implicitly: the model thinks from its first token (Apriel).
    """

    start: str
    end: str
    name: str = "think"
    #: Text a model writes at the start of its answer (gpt-oss ``<|channel|>final<|message|>``); dropped.
    answer_start: tuple[str, ...] = ()
    #: Text that closes the answer (Command R7B ``<|END_RESPONSE|>``); dropped wherever it appears.
    answer_end: tuple[str, ...] = ()
    #: Prefill that makes the model skip thinking; None: `start` + `end`.
    no_think: str | None = None


@dataclass(frozen=True)
class _Rule:
    fmt: ReasoningFormat
    template: tuple[str, ...]
    tokens: tuple[str, ...]


@lru_cache(maxsize=4)
def _load_rules(rules_path: Path, mtime: float) -> tuple[_Rule, ...]:
    try:
        data = yaml.safe_load(rules_path.read_text(encoding="utf-8")) or {}
        rules = []
        for rule in data.get("rules", []):
            fmt = ReasoningFormat(
                start=str(rule["start"]),
                end=str(rule["end"]),
                name=str(rule["name"]),
                answer_start=tuple(str(s) for s in rule.get("answer_start", ())),
                answer_end=tuple(str(s) for s in rule.get("answer_end", ())),
                no_think=None if rule.get("no_think") is None else str(rule["no_think"]),
            )
            if not fmt.end:
                raise ValueError(f"rule {fmt.name!r} has an empty end marker")
            template = tuple(str(s) for s in rule.get("template", ()))
            tokens = tuple(str(s) for s in rule.get("tokens", (fmt.start, fmt.end) if fmt.start else ()))
            rules.append(_Rule(fmt, template, tokens))
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise TemplateError(f"{rules_path}: invalid reasoning rules ({exc})") from exc
    return tuple(rules)


def reasoning_rules(rules_path: Path | None = None) -> tuple[ReasoningFormat, ...]:
    """The formats the rule file knows, in the order they are tried."""
    path = rules_path or REASONING_RULES_FILE
    return tuple(rule.fmt for rule in _load_rules(path, path.stat().st_mtime))


def detect_reasoning(
    template_text: str | None, token_texts: Iterable[str] = (), *, rules_path: Path | None = None
) -> ReasoningFormat | None:
    """The reasoning markers a model uses, or None when it does not think.

    The chat template decides first (a thinking model's template writes or strips its markers). The
    vocabulary (special and added token texts) is the fallback for templates that never mention them
    (MiMo-VL); a non-thinking sibling that shares a thinking vocabulary (Qwen3-Coder) then gets a format
    it never uses, which costs nothing: its replies have no block and pass through as answer.
    """
    path = rules_path or REASONING_RULES_FILE
    if not path.is_file():
        return None
    rules = _load_rules(path, path.stat().st_mtime)
    if template_text:
        for rule in rules:
            if rule.template and all(s in template_text for s in rule.template):
                return rule.fmt
    vocabulary = set(token_texts)
    if vocabulary:
        for rule in rules:
            if rule.tokens and all(t in vocabulary for t in rule.tokens):
                return rule.fmt
    return None


def starts_inside(prompt: str, fmt: ReasoningFormat | None) -> bool:
    """Whether the rendered prompt already opened the block, so the reply starts in reasoning.

    DeepSeek-R1 and Qwen3-thinking templates end the generation prompt with ``<think>\\n``; one that ends
    with a closed block (``<think>\\n\\n</think>\\n\\n``: thinking turned off) does not.
    """
    if fmt is None:
        return False
    if not fmt.start:
        return True
    return prompt.rstrip().endswith(fmt.start.rstrip())


def disabled_thinking_prefill(fmt: ReasoningFormat) -> str:
    """Text to append to the prompt so the model answers without thinking (an empty, closed block), for
    templates that have no ``enable_thinking`` switch of their own."""
    return fmt.start + fmt.end if fmt.no_think is None else fmt.no_think


def marker_prefix_length(text: str, markers: Iterable[str]) -> int:
    """Length of the longest end of `text` that is the beginning of one of `markers` (may still become it)."""
    best = 0
    for marker in markers:
        for n in range(min(len(text), len(marker) - 1), best, -1):
            if marker.startswith(text[-n:]):
                best = n
                break
    return best


_LEAD, _THINK_LEAD, _THINK, _ANSWER_LEAD, _ANSWER = range(5)


class ReasoningSplitter:
    """Split a streamed reply into reasoning and answer, chunk by chunk.

    Marker text is never emitted; the end of a chunk that may be the start of a marker is held back until
    the next chunk (or `flush`) decides. A block opens only at the start of the reply; one that never
    closes is all reasoning (a reply cut by the token limit). Whitespace around the reasoning and before
    the answer is dropped. With ``fmt=None`` everything is answer.
    """

    def __init__(self, fmt: ReasoningFormat | None, inside: bool = False):
        self._fmt = fmt
        self._buf = ""
        self._state = _ANSWER if fmt is None else (_THINK_LEAD if inside else _LEAD)
        self._answer_lead_done = False
        self._reasoning: list[str] = []
        self._content: list[str] = []
        self._closed = False

    @property
    def reasoning(self) -> str:
        """All reasoning text so far."""
        return "".join(self._reasoning)

    @property
    def content(self) -> str:
        """All answer text so far."""
        return "".join(self._content)

    @property
    def in_reasoning(self) -> bool:
        """Whether the reply is inside the reasoning block now (a thinking budget counts these tokens)."""
        return self._state in (_THINK_LEAD, _THINK)

    @property
    def reasoning_closed(self) -> bool:
        """Whether the block's end marker has been seen."""
        return self._closed

    def feed(self, text: str) -> tuple[str, str]:
        """Add a chunk; returns the new (reasoning, answer) text it completes."""
        self._buf += text
        return self._run(final=False)

    def flush(self) -> tuple[str, str]:
        """The reply ended: release held text; returns the last (reasoning, answer) text."""
        return self._run(final=True)

    def _run(self, final: bool) -> tuple[str, str]:
        reasoning: list[str] = []
        content: list[str] = []
        while self._step(final, reasoning, content):
            pass
        self._reasoning += reasoning
        self._content += content
        return "".join(reasoning), "".join(content)

    def _step(self, final: bool, reasoning: list[str], content: list[str]) -> bool:
        """Advance one state; False when it must wait for more text (or everything is consumed)."""
        fmt, buf = self._fmt, self._buf
        if self._state == _ANSWER:
            return self._answer(final, content)
        buf = self._buf = buf.lstrip() if self._state != _THINK else buf
        if not buf and not final:
            return False
        assert fmt is not None
        if self._state in (_LEAD, _THINK_LEAD):
            if fmt.start and buf.startswith(fmt.start):
                self._buf = buf[len(fmt.start) :]
                self._state = _THINK_LEAD
                return True
            if fmt.start and fmt.start.startswith(buf) and buf and not final:
                return False
            self._state = _THINK if self._state == _THINK_LEAD else _ANSWER_LEAD
            return True
        if self._state == _THINK:
            at = buf.find(fmt.end)
            if at >= 0:
                reasoning.append(buf[:at].rstrip())
                self._buf = buf[at + len(fmt.end) :]
                self._closed = True
                self._state = _ANSWER_LEAD
                return True
            # hold back what may be the start of the end marker, and whitespace that may precede it
            settled = buf if final else buf[: len(buf) - marker_prefix_length(buf, (fmt.end,))]
            settled = settled.rstrip()
            reasoning.append(settled)
            self._buf = "" if final else buf[len(settled) :]
            return False
        # _ANSWER_LEAD: drop one answer-start marker, then the answer begins
        if not self._answer_lead_done:
            for marker in fmt.answer_start:
                if buf.startswith(marker):
                    self._buf = buf[len(marker) :]
                    self._answer_lead_done = True
                    return True
            if not final and any(m.startswith(buf) for m in fmt.answer_start):
                return False
        self._state = _ANSWER
        return True

    def _answer(self, final: bool, content: list[str]) -> bool:
        buf = self._buf
        markers = self._fmt.answer_end if self._fmt is not None else ()
        while markers:
            found = [(buf.find(m), m) for m in markers if m in buf]
            if not found:
                break
            at, marker = min(found)
            content.append(buf[:at])
            buf = buf[at + len(marker) :]
        keep = 0 if final else marker_prefix_length(buf, markers)
        content.append(buf[: len(buf) - keep])
        self._buf = buf[len(buf) - keep :]
        return False


def split_reasoning(text: str, fmt: ReasoningFormat | None, inside: bool = False) -> tuple[str, str]:
    """(reasoning, answer) of a whole reply; the same split `ReasoningSplitter` streams."""
    splitter = ReasoningSplitter(fmt, inside)
    splitter.feed(text)
    splitter.flush()
    return splitter.reasoning, splitter.content
