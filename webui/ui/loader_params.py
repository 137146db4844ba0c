"""Loader parameter widgets generated from `LoaderParam` declarations (never retyped per loader) by the
shared builder, `webui.ui.param_widgets.widget_for`.

Every loader gets its own group of widgets, built once; the Model tab shows the selected loader's group
and hides the others. Handlers receive all widgets' values as one flat list and `LoaderPanels.values`
picks the selected loader's part, so adding a loader plugin needs no UI change.

A parameter can be *locked* (name -> reason): its widget is shown disabled at the loader's default with
the reason beside it, saved values never fill it, and a request that sends another value is refused
(`LoaderPanels.refusal`). The Model tab locks ``trust_remote_code`` unless Hearth was started with
--trust-remote-code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from webui.errors import HearthError
from webui.loader_api import Loader, LoaderParam
from webui.ui.param_widgets import widget_for


def elem_prefix(loader_name: str) -> str:
    """A DOM id prefix for a loader's widgets (browser tests address them as #loader-<name>-<param>)."""
    return "loader-" + "".join(c if c.isalnum() else "-" for c in loader_name.lower()) + "-"


def _is_default(param: LoaderParam, value: Any) -> bool:
    try:
        return param.coerce(value) == param.default
    except HearthError:  # not even a valid value: certainly not the default
        return False


@dataclass
class LoaderPanels:
    """Per loader: its group (shown only when selected) and its widgets in declaration order; `locked`
    maps a parameter name to why it cannot be changed here."""

    groups: dict[str, gr.Group]
    widgets: dict[str, list[tuple[LoaderParam, gr.components.Component]]]
    locked: dict[str, str] = field(default_factory=dict)

    @property
    def inputs(self) -> list[gr.components.Component]:
        """Every widget of every loader, in a fixed order (handlers take these as `*values`)."""
        return [w for items in self.widgets.values() for _, w in items]

    def values(self, loader: str, flat: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
        """The selected loader's raw values out of the flat list (validation is the loader's job)."""
        index = 0
        for name, items in self.widgets.items():
            if name == loader:
                return {param.name: flat[index + i] for i, (param, _) in enumerate(items)}
            index += len(items)
        return {}

    def refusal(self, loader: str, flat: tuple[Any, ...] | list[Any]) -> str | None:
        """Why these values cannot be used (a locked parameter set away from its default), or None."""
        chosen = self.values(loader, flat)
        for param, _ in self.widgets.get(loader, []):
            reason = self.locked.get(param.name)
            if reason and param.name in chosen and not _is_default(param, chosen[param.name]):
                return f"{param.name} is disabled: {reason}"
        return None

    def visibility(self, loader: str) -> list[Any]:
        """Updates for the groups, in `groups` order: only `loader`'s is visible."""
        return [gr.update(visible=name == loader) for name in self.groups]

    def fill(self, loader: str, params: dict[str, Any]) -> list[Any]:
        """Updates for `inputs`: `loader`'s widgets get `params`, the others stay as they are."""
        updates: list[Any] = []
        for name, items in self.widgets.items():
            for param, _ in items:
                updates.append(
                    gr.update(value=params[param.name])
                    if name == loader and param.name in params and param.name not in self.locked
                    else gr.update()
                )
        return updates


def build_loader_panels(
    loaders: dict[str, type[Loader]],
    selected: str | None,
    values: dict[str, Any] | None = None,
    locked: dict[str, str] | None = None,
) -> LoaderPanels:
    """Create the groups (inside the current Blocks context); `selected`'s is visible, showing `values`;
    `locked` parameters (name -> reason) are disabled at their defaults."""
    locked = dict(locked or {})
    groups: dict[str, gr.Group] = {}
    widgets: dict[str, list[tuple[LoaderParam, gr.components.Component]]] = {}
    for name, cls in loaders.items():
        with gr.Group(visible=name == selected) as group:
            if cls.description:
                gr.Markdown(cls.description)
            shown = (values or {}) if name == selected else {}
            widgets[name] = [
                (p, widget_for(p, shown.get(p.name), elem_prefix(name), locked.get(p.name)))
                for p in cls.params
            ]
        groups[name] = group
    return LoaderPanels(groups, widgets, locked)
