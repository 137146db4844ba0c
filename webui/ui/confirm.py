"""Two-step confirmation for destructive buttons (delete a preset, a character).

The first click runs a check that may refuse with a toast (a shipped preset, the built-in Assistant); if it
passes, the button gives way to "Confirm delete: NAME" and "Cancel". What was checked is kept, so choosing
something else meanwhile cannot change what gets deleted (and hides the question).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr


class ConfirmButton:
    """A stop-variant button plus its hidden confirm/cancel pair, built where it is created."""

    def __init__(self, label: str, elem_id: str, scale: int = 1):
        self.ask = gr.Button(label, scale=scale, variant="stop", elem_id=elem_id)
        with gr.Column(visible=False, scale=scale, min_width=160) as self.question:
            self.yes = gr.Button("Confirm delete", variant="stop", size="sm", elem_id=f"{elem_id}-confirm")
            self.no = gr.Button("Cancel", size="sm", elem_id=f"{elem_id}-cancel")
        self.pending = gr.State(None)

    def _show(self, asking: bool, target: Any = None) -> tuple[Any, ...]:
        label = f"Confirm delete: {target}" if asking else "Confirm delete"
        return gr.update(visible=not asking), gr.update(visible=asking), gr.update(value=label)

    def wire(
        self,
        check: Callable[..., Any],
        inputs: Sequence[gr.components.Component],
        action: Callable[[Any], Any],
        outputs: Sequence[gr.components.Component],
        action_inputs: Sequence[gr.components.Component] = (),
        cancel_on: Sequence[Any] = (),
    ) -> None:
        """`check(*inputs)` returns what to delete or raises gr.Error; `action(that, *action_inputs)`
        fills `outputs`. Any of `cancel_on` (e.g. choosing another item) withdraws the question."""
        shown = [self.ask, self.question, self.yes]

        def ask(*values: Any) -> tuple[Any, ...]:
            target = check(*values)
            return (*self._show(True, target), target)

        def hide() -> tuple[Any, ...]:
            return self._show(False)

        self.ask.click(ask, list(inputs), [*shown, self.pending], show_progress="hidden")
        gr.on([self.no.click, *cancel_on], hide, None, shown, show_progress="hidden")
        self.yes.click(hide, None, shown, show_progress="hidden").then(
            action, [self.pending, *action_inputs], list(outputs)
        )
