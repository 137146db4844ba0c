"""One way to declare a setting a person can change: loader parameters, extension settings, sampler fields.

A `ParamSpec` says what a setting is: its name, kind, default, range, choices and a one-line description.
Every target is generated from it by one builder: command-line flags (``webui.config``), Gradio widgets with
the description as their tooltip (``webui.ui.param_widgets.widget_for``) and validation of a value
(`ParamSpec.coerce`). Loaders declare `webui.loader_api.LoaderParam`, a ParamSpec.

Sampler settings stay pydantic fields (`webui.sampling.SamplingParams`): pydantic validates the API with
them and writes the OpenAPI document from them. `spec_from_field` reads such a field as a ParamSpec, so the
UI builds it like any other. An extension's ``params`` hook may return plain defaults, specs or a pydantic
model class: `specs_from` turns each into specs.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from webui.errors import HearthError

#: What a setting holds. ``list``, ``dict`` and ``any`` are values a widget shows as text (or not at all).
KINDS = ("bool", "int", "float", "str", "choice", "list", "dict", "any")
#: The step of a float read from a pydantic field (pydantic has none): two decimals.
FIELD_FLOAT_STEP = 0.01
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ParamError(HearthError, ValueError):
    """A value does not fit its setting's declaration; the message names the setting."""


@dataclass(frozen=True)
class ParamSpec:
    """One setting. `kind` is one of `KINDS`; `minimum` / `maximum` are inclusive; `help` is the one-line
    description shown as the CLI help and the widget's tooltip; `step` is the UI's increment (None: 1 for
    an int, a hundredth of the range for a float)."""

    name: str
    kind: str
    default: Any
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    step: float | None = None
    #: A secret (an API key): shown as a password box, never printed back (`shown`) or saved in settings.
    secret: bool = False
    #: The error `coerce` raises (a loader's parameters raise LoaderError).
    error: ClassVar[type[HearthError]] = ParamError

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        object.__setattr__(self, "choices", tuple(self.choices))

    def shown(self, value: Any) -> Any:
        """`value` as it may be displayed: a set secret is '***'."""
        return "***" if self.secret and value else value

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "float")

    def coerce(self, value: Any) -> Any:
        """Validate and convert one value (from the CLI, a settings file, JSON or a UI widget); None is the
        default."""
        if value is None:
            return self.default
        try:
            converted = self._convert(value)
        except (TypeError, ValueError):
            raise self.error(f"{self.name}: expected {self.kind}, got {value!r}") from None
        if self.kind == "choice" and converted not in self.choices:
            raise self.error(f"{self.name}: {converted!r} is not one of {', '.join(self.choices)}")
        if self.minimum is not None and converted < self.minimum:
            raise self.error(f"{self.name}: {converted} is below the minimum {self.minimum}")
        if self.maximum is not None and converted > self.maximum:
            raise self.error(f"{self.name}: {converted} is above the maximum {self.maximum}")
        return converted

    def _convert(self, value: Any) -> Any:
        if self.kind == "bool":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in _TRUE | _FALSE:
                    raise ValueError(value)
                return lowered in _TRUE
            return bool(value)
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if self.kind == "float":
            return float(value)
        if self.kind == "list":
            if not isinstance(value, list | tuple):
                raise TypeError(value)
            return list(value)
        if self.kind == "dict":
            if not isinstance(value, dict):
                raise TypeError(value)
            return dict(value)
        if self.kind == "any":
            return value
        return str(value)


def spec_from_value(name: str, default: Any, help: str = "") -> ParamSpec:
    """The spec a bare default implies (an extension's ``params`` returning ``{name: default}``)."""
    kinds: tuple[tuple[type, str], ...] = (
        (bool, "bool"),
        (int, "int"),
        (float, "float"),
        (str, "str"),
        (list, "list"),
        (dict, "dict"),
    )
    kind = next((k for t, k in kinds if isinstance(default, t)), "any")
    return ParamSpec(name, kind, default, help)


def field_bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    """A pydantic field's ge/gt and le/lt as (minimum, maximum)."""
    low = high = None
    for item in info.metadata:
        if isinstance(item, Ge | Gt):
            low = item.ge if isinstance(item, Ge) else item.gt
        elif isinstance(item, Le | Lt):
            high = item.le if isinstance(item, Le) else item.lt
    return low, high


def _kind(annotation: Any) -> tuple[str, tuple[str, ...]]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):  # Optional[X]: None means the default
        members = [a for a in get_args(annotation) if a is not type(None)]
        return _kind(members[0]) if len(members) == 1 else ("any", ())
    if origin is Literal and all(isinstance(a, str) for a in get_args(annotation)):
        return "choice", get_args(annotation)
    simple = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}
    return simple.get(origin or annotation, "any"), ()


def spec_from_field(name: str, info: FieldInfo) -> ParamSpec:
    """A pydantic field as a spec: its type, default, ge/le (gt/lt read as inclusive) and description."""
    kind, choices = _kind(info.annotation)
    low, high = field_bounds(info)
    step = FIELD_FLOAT_STEP if kind == "float" else None
    default = info.get_default(call_default_factory=True)
    return ParamSpec(name, kind, default, info.description or "", low, high, choices, step)


def specs_from(declared: Any) -> dict[str, ParamSpec]:
    """What an extension's ``params`` hook returns, as specs by name: a pydantic model class (its fields),
    or a mapping whose values are specs (named by their key when their name is empty) or plain defaults.
    A declaration that does not make sense (a default outside its own range) is a TypeError."""
    if isinstance(declared, type) and issubclass(declared, BaseModel):
        return {name: spec_from_field(name, info) for name, info in declared.model_fields.items()}
    if not isinstance(declared, Mapping) or not all(isinstance(k, str) for k in declared):
        raise TypeError(
            f"params must return a dict of name -> default or spec, or a pydantic model class, "
            f"got {type(declared).__name__}"
        )
    specs: dict[str, ParamSpec] = {}
    for name, item in declared.items():
        if isinstance(item, ParamSpec):
            if item.name not in ("", name):
                raise TypeError(f"params: the spec under {name!r} is named {item.name!r}")
            spec = replace(item, name=name)
            try:
                spec.coerce(spec.default)
            except HearthError as exc:
                raise TypeError(f"params: the default of {exc}") from None
        else:
            spec = spec_from_value(name, item)
        specs[name] = spec
    return specs
