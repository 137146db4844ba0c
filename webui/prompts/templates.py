"""Instruction templates: Jinja files rendered exactly the way Hugging Face chat templates are.

A model's own chat template (from GGUF metadata or tokenizer_config.json), the shipped files in
``templates/`` and the ones a user saves in ``user_data/templates/`` (`TemplateLibrary`) use one
convention, so either can be dropped in: ``messages`` ([{role, content}]), ``add_generation_prompt``,
``bos_token``, ``eos_token``, plus ``raise_exception``, ``strftime_now`` and the filters ``tojson``
(generators serialise as lists, as in llama.cpp) and ``from_json`` (DeepSeek V3.2).

Templates run in jinja2's sandbox because model templates come from downloaded files: attribute access is
checked (no ``__class__`` escapes), but template code may change the lists and dicts it builds (real
templates call ``list.append``); what it is given is deep-copied, so the caller's data never changes.

`render` renders one template as it is; `webui.prompts.chat_template.render_chat` renders an OpenAI-style
conversation with tools through any of them.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import jinja2
import yaml
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import SandboxedEnvironment

from webui.errors import HearthError
from webui.safe_files import atomic_write_text, check_name, path_inside

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "ChatML"
"""Used when a model has no template and no rule matches. ChatML is the most common format among current
open models and fine-tunes, and its explicit role markers keep turns apart even for a model trained on
something else; Alpaca's plain-text headers blur into ordinary prose."""

MODEL_TEMPLATE_NAME = "Model's own"
_TEMPLATE_SUFFIX = ".jinja"
_RULES_FILE = "model_rules.yaml"


class TemplateError(HearthError):
    """An instruction template could not be loaded, compiled or rendered."""


class DetectedTemplate(NamedTuple):
    """Which template a model gets and why: source is "model", "rules" or "default"."""

    name: str
    text: str
    source: str


class _GenerationTag(Extension):
    """Accept ``{% generation %}...{% endgeneration %}`` (used by some model templates) as a plain block."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_passthrough"), [], [], body).set_lineno(lineno)

    def _passthrough(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=separators,
        sort_keys=sort_keys,
        default=_json_default,
    )


def _json_default(value: Any) -> Any:
    """Generators from ``map``/``select`` serialise as lists, as minja (llama.cpp) does."""
    if isinstance(value, jinja2.Undefined):
        raise TypeError("an undefined value is not JSON serializable")
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _from_json(text: str) -> Any:
    return json.loads(text)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.filters["from_json"] = _from_json
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _environment()


class _Compiled(NamedTuple):
    template: jinja2.Template
    reads: frozenset[str]  # the context variables the template reads


@lru_cache(maxsize=128)
def _compile_text(template_text: str) -> _Compiled:
    """Parse once: the tree gives the variables read, then compiles. Keyed by text, whatever the name."""
    tree = _ENV.parse(template_text)
    reads = frozenset(n.name for n in tree.find_all(nodes.Name) if n.ctx == "load")
    return _Compiled(_ENV.from_string(tree), reads)


def _compile(template_text: str, template_name: str) -> _Compiled:
    try:
        return _compile_text(template_text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template {template_name!r}, line {exc.lineno}: {exc.message}") from exc


def check_template(template_text: str, template_name: str = "template") -> None:
    """Compile without rendering, so a UI can reject a broken custom template when it is typed in."""
    _compile(template_text, template_name)


def render(
    template_text: str,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool,
    bos_token: str = "",
    eos_token: str = "",
    *,
    template_name: str = "template",
    **extra: Any,
) -> str:
    """Render a chat template; any failure becomes a TemplateError naming the template and the line."""
    template = _compile(template_text, template_name).template
    try:
        return template.render(
            messages=_copied(list(messages)),
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            **_copied(extra),
        )
    except jinja2.TemplateError as exc:
        where = _template_line(exc)
        raise TemplateError(f"template {template_name!r}{where}: {exc.message or exc}") from exc
    except Exception as exc:  # noqa: BLE001 - template code may raise anything (TypeError on None + str, ...)
        where = _template_line(exc)
        raise TemplateError(f"template {template_name!r}{where}: {type(exc).__name__}: {exc}") from exc


def _copied(value: Any) -> Any:
    """A copy of the containers in ``value`` (the only things the sandbox lets template code change)."""
    if isinstance(value, Mapping):
        return {key: _copied(item) for key, item in value.items()}
    for kind in (list, tuple, set):
        if isinstance(value, kind):
            return kind(_copied(item) for item in value)
    return value


def _template_line(exc: BaseException) -> str:
    """The template line a runtime error came from; jinja rewrites tracebacks to point at template lines."""
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == "<template>":
            line = lineno
    lineno = getattr(exc, "lineno", None) or line
    return f", line {lineno}" if lineno else ""


def template_variables(template_text: str, template_name: str = "template") -> frozenset[str]:
    """The names a template reads from its context (``messages``, ``tools``, ``enable_thinking``...)."""
    return _compile(template_text, template_name).reads


def list_templates(templates_dir: Path) -> list[str]:
    """Names of the shipped and user templates (file stems), sorted case-insensitively."""
    if not templates_dir.is_dir():
        return []
    return sorted(
        (p.name[: -len(_TEMPLATE_SUFFIX)] for p in templates_dir.glob(f"*{_TEMPLATE_SUFFIX}")), key=str.lower
    )


def load_template(templates_dir: Path, name: str) -> str:
    """The text of one template; names come from users and API clients, so one that is not a plain name is refused."""
    path = path_inside(templates_dir, name, _TEMPLATE_SUFFIX, what="instruction template")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        available = ", ".join(list_templates(templates_dir)) or "none"
        raise TemplateError(f"no instruction template named {name!r} (available: {available})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read template {name!r}: {exc}") from exc


def user_templates_dir(user_data_dir: Path) -> Path:
    """Where templates a user saves go: never among the shipped ones, so an update cannot clobber them."""
    return user_data_dir / "templates"


@dataclass(frozen=True)
class TemplateLibrary:
    """The shipped templates plus the user's own. A shipped name always means the shipped file (a user
    template cannot shadow it), and saving under a shipped name is refused."""

    shipped: Path
    user: Path | None = None

    def names(self) -> list[str]:
        """Shipped and user template names, sorted case-insensitively."""
        user = list_templates(self.user) if self.user is not None else []
        return sorted({*list_templates(self.shipped), *user}, key=str.lower)

    def is_shipped(self, name: str) -> bool:
        """Whether `name` is a shipped template, ignoring case (as Windows and macOS file systems do)."""
        return name.lower() in {n.lower() for n in list_templates(self.shipped)}

    def load(self, name: str) -> str:
        """The text of a template; the error lists every available name."""
        if self.user is None or self.is_shipped(name):
            return load_template(self.shipped, name)
        try:
            return load_template(self.user, name)
        except TemplateError:
            if self.is_shipped(name):
                raise
            available = ", ".join(self.names()) or "none"
            raise TemplateError(f"no instruction template named {name!r} (available: {available})") from None

    def save(self, name: str, text: str) -> tuple[Path, bool]:
        """Write a user template after checking that it compiles; returns (path, replaced an older one)."""
        if self.user is None:
            raise TemplateError("there is no folder for user templates")
        name = check_name(name, "template name")
        if self.is_shipped(name):
            raise TemplateError(f"{name!r} is a shipped template; save yours under another name")
        check_template(text, name)
        path = path_inside(self.user, name, _TEMPLATE_SUFFIX, what="template name")
        existed = path.is_file()
        atomic_write_text(path, text)
        return path, existed

    def detect(self, model_chat_template: str | None, model_name: str) -> DetectedTemplate:
        """`detect_template` over the shipped templates and rules."""
        return detect_template(model_chat_template, model_name, self.shipped)


@lru_cache(maxsize=8)
def _load_rules(rules_path: Path, mtime: float) -> tuple[tuple[re.Pattern[str], str], ...]:
    try:
        data = yaml.safe_load(rules_path.read_text(encoding="utf-8")) or {}
        rules = []
        for rule in data.get("rules", []):
            rules.append((re.compile(str(rule["pattern"]), re.IGNORECASE), str(rule["template"])))
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, re.error) as exc:
        raise TemplateError(f"{rules_path}: invalid model rules ({exc})") from exc
    return tuple(rules)


def match_rules(model_name: str, templates_dir: Path) -> str | None:
    """The template name the first matching rule in model_rules.yaml gives, or None."""
    rules_path = templates_dir / _RULES_FILE
    if not rules_path.is_file():
        return None
    for pattern, template in _load_rules(rules_path, rules_path.stat().st_mtime):
        if pattern.search(model_name):
            return template
    return None


def detect_template(
    model_chat_template: str | None, model_name: str, templates_dir: Path
) -> DetectedTemplate:
    """Pick the instruction template for a model: its own, else a name rule, else `DEFAULT_TEMPLATE`.

    A model template that does not compile is logged and skipped, so a broken GGUF field does not make
    the model unusable.
    """
    if model_chat_template and model_chat_template.strip():
        try:
            check_template(model_chat_template, MODEL_TEMPLATE_NAME)
            return DetectedTemplate(MODEL_TEMPLATE_NAME, model_chat_template, "model")
        except TemplateError as exc:
            log.warning("ignoring the chat template of %s: %s", model_name, exc)
    name = match_rules(model_name, templates_dir)
    if name is not None:
        return DetectedTemplate(name, load_template(templates_dir, name), "rules")
    return DetectedTemplate(DEFAULT_TEMPLATE, load_template(templates_dir, DEFAULT_TEMPLATE), "default")


def read_model_chat_template(path: Path) -> str | None:
    """The chat template a model ships: HF folder files, or the GGUF ``tokenizer.chat_template`` field."""
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _gguf_chat_template(path)
    if not path.is_dir():
        return None
    jinja_file = path / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    for json_name in ("chat_template.json", "tokenizer_config.json"):
        found = _json_chat_template(path / json_name)
        if found:
            return found
    from webui.gguf_files import model_ggufs

    ggufs = model_ggufs(path)  # never the projector (mmproj) beside the model
    return _gguf_chat_template(ggufs[0]) if ggufs else None


def _json_chat_template(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError, AttributeError):
        log.warning("cannot read %s", path)
        return None
    if isinstance(value, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, dict)}
        value = named.get("default") or next(iter(named.values()), None)
    return value if isinstance(value, str) and value.strip() else None


def _gguf_chat_template(path: Path) -> str | None:
    """Read one metadata field; GGUFReader memory-maps the file, so tensor data is never read."""
    try:
        from gguf import GGUFReader

        field = GGUFReader(path, "r").fields.get("tokenizer.chat_template")
    except Exception as exc:  # noqa: BLE001 - a corrupt header must not stop template detection
        log.warning("cannot read GGUF metadata of %s: %s", path, exc)
        return None
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
