"""The Gradio shell: shared states, the tabs in order, and launching (for real and for tests).

Each tab lives in its own module and is built by ``build_<name>_tab(ctx: UIContext) -> None`` inside the
shell's ``gr.Tabs`` (`TABS`); extensions' own blocks follow on an Extensions tab. Gradio 6 takes
css/theme/js in ``launch()``, not ``Blocks()``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import gradio as gr
from starlette.middleware import Middleware

from webui.access import Login, ui_logins
from webui.host_guard import AllowedHosts, HostGuard
from webui.ui.chat_tab import build_chat_tab
from webui.ui.context import UIContext, default_character_state, default_params
from webui.ui.default_tab import build_default_tab
from webui.ui.extensions_ui import build_extension_blocks, watch_notices
from webui.ui.model_tab import build_model_tab
from webui.ui.notebook_tab import build_notebook_tab
from webui.ui.parameters_tab import build_parameters_tab
from webui.ui.session_tab import build_session_tab, is_dark
from webui.ui.training_tab import build_training_tab

if TYPE_CHECKING:
    from webui.app import App

log = logging.getLogger(__name__)

#: (tab label, builder) in display order.
TABS: tuple[tuple[str, Callable[[UIContext], None]], ...] = (
    ("Chat", build_chat_tab),
    ("Default", build_default_tab),
    ("Notebook", build_notebook_tab),
    ("Parameters", build_parameters_tab),
    ("Model", build_model_tab),
    ("Training", build_training_tab),
    ("Session", build_session_tab),
)

CSS = """
.hearth-membar { display: flex; height: 14px; border-radius: 4px; overflow: hidden; background: var(--neutral-200); }
.hearth-membar > span { display: block; height: 100%; }
.hearth-membar .w { background: #4f7cff; } .hearth-membar .kv { background: #f0a030; }
.hearth-membar .o { background: #9a6bd8; } .hearth-membar .over { background: #e04848; }
.hearth-legend span { margin-right: 1em; font-size: 0.9em; }
.hearth-keys { font-size: 0.8em; opacity: 0.7; }
.hearth-legend i { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.3em; border-radius: 2px; }
/* Gradio marks every output of a failed event "error", and its status tracker then covers each one with an
   opaque "Error" badge until dismissed (a chat hidden, an input box no longer clickable). Hearth says what
   went wrong in one toast and failed events keep their outputs' values, so the badge is never drawn. */
[data-testid="status-tracker"]:has(> .error) { display: none !important; }
.hearth-refresh { align-self: center; margin-top: 1.5em; }
.hearth-notice { border-left: 4px solid var(--color-accent); padding: 0.2em 0.8em; }
#chat-chatbot img { max-height: 12em; width: auto; }  /* an attached image: a thumbnail in its message */
"""

LOGIN_MESSAGE = "Log in to Hearth (accounts from --gradio-auth / --gradio-auth-path)."

#: Applies the saved light/dark choice on page load (Gradio reads the `dark` class on <body>).
DARK_JS = "() => { document.body.classList.add('dark'); }"

#: Keyboard shortcuts (listed under each input box). Gradio's own textbox handling makes Enter send in the
#: one-line Chat input (Shift+Enter is a newline there) but Shift+Enter *submit* in multi-line boxes; this
#: capture-phase listener runs first: Shift+Enter in the Default/Notebook boxes only types a newline (typed
#: here, keeping the undo history, since Gradio's handler is kept from seeing the key),
#: Ctrl+Enter generates there (regenerates in Chat), and Esc presses the visible tab's Stop button. While a
#: chat reply is being written (its buttons disabled), Enter and Ctrl+Enter in the chat box press the hidden
#: #chat-busy button, which says so, instead of being silently ignored.
KEYS_JS = """() => {
  const ctrlEnter = {"chat-input": "#chat-regenerate", "default-prompt": "#default-generate",
                     "notebook-text": "#notebook-generate"};
  const visible = (el) => el && el.offsetParent !== null;
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      for (const stop of document.querySelectorAll("#chat-stop, #default-stop, #notebook-stop")) {
        if (visible(stop)) stop.click();
      }
      return;
    }
    const box = e.key === "Enter" && e.target.closest && e.target.closest("#chat-input, #default-prompt, #notebook-text");
    if (!box) return;
    const chatButton = box.id === "chat-input" && !e.shiftKey &&
      document.querySelector(e.ctrlKey || e.metaKey ? "#chat-regenerate" : "#chat-generate");
    if (chatButton && chatButton.disabled) {
      e.preventDefault();
      e.stopPropagation();
      document.querySelector("#chat-busy")?.click();
    } else if (e.ctrlKey || e.metaKey) {
      e.preventDefault();
      e.stopPropagation();
      document.querySelector(ctrlEnter[box.id])?.click();
    } else if (e.shiftKey && box.id !== "chat-input") {
      e.preventDefault();
      e.stopPropagation();
      document.execCommand("insertText", false, "\\n");
    }
  }, true);
}"""


def build_ui(app: App) -> gr.Blocks:
    """The whole UI. States are created first so every tab shares them."""
    with gr.Blocks(title="Hearth") as blocks:
        ctx = UIContext(
            app=app,
            params=gr.State(default_params(app)),
            character=gr.State(default_character_state(app)),
            history=gr.State(None),
            prompt_transfer=gr.State(None),
        )
        with gr.Tabs():
            for label, builder in TABS:
                with gr.Tab(label, id=label.lower(), elem_id=f"tab-{label.lower()}"):
                    builder(ctx)
            _extension_tab(ctx)  # runs the extensions' ui hooks, which may add tabs of their own
            for extra in ctx.extra_tabs:
                extra(ctx)
    return blocks


def _extension_tab(ctx: UIContext) -> None:
    """Enabled extensions' own blocks in an Extensions tab; their failure notices as toasts everywhere."""
    manager = ctx.app.extensions
    if manager is None:
        return
    if any(manager.has_hook(name, "ui") for name in manager.enabled):
        with gr.Tab("Extensions", id="extensions", elem_id="tab-extensions"):
            build_extension_blocks(ctx)
    else:
        watch_notices(manager)


def _launch(
    app: App, blocks: gr.Blocks, server_name: str, logins: list[Login], **kwargs: object
) -> tuple[object, str, str]:
    """Launch with Gradio's login when `logins` is not empty, behind the Host/Origin guard."""
    css, extra_js = CSS, ""
    if app.extensions is not None:
        css += "\n" + app.extensions.css()
        extra_js = app.extensions.js()
    # Gradio runs one function on load: ours (keys, theme), then the extensions' code
    dark = f"({DARK_JS})();" if is_dark(app) else ""
    js = f"() => {{ ({KEYS_JS})(); {dark} {extra_js} }}"
    hosts = AllowedHosts.for_server(server_name, app.settings.allowed_hosts)
    return blocks.queue(default_concurrency_limit=4).launch(
        css=css,
        js=js,
        show_error=True,
        quiet=True,
        server_name=server_name,
        auth=logins or None,
        auth_message=LOGIN_MESSAGE if logins else None,
        # Gradio's run history keeps every call (chats included) in the browser and adds unguarded
        # routes that reach the Hugging Face hub; Hearth has its own chat history
        run_history=False,
        # Gradio hands app_kwargs to its FastAPI app: the guard runs before every Gradio route
        app_kwargs={"middleware": [Middleware(HostGuard, hosts=hosts)]},
        **kwargs,
    )


def launch_ui(app: App, logins: list[Login] | None = None) -> None:
    """Serve the UI on --listen-port (blocks until interrupted); `logins` from `webui.access.plan_access`."""
    logins = ui_logins(app.settings) if logins is None else logins
    _launch(app, build_ui(app), app.settings.host, logins, server_port=app.settings.listen_port)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ui_for_tests(app: App) -> tuple[str, Callable[[], None]]:
    """Start the UI in the background on a free local port; returns (url, close). Logins and allowed
    hosts come from `app.settings`, as in `launch_ui`."""
    blocks = build_ui(app)
    _, url, _ = _launch(
        app, blocks, "127.0.0.1", ui_logins(app.settings), server_port=free_port(), prevent_thread_lock=True
    )
    return url, blocks.close
