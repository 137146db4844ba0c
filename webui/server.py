"""Starting the servers: the Gradio UI on --listen-port and, with --api, the API on --api-port."""

from __future__ import annotations

import logging
import threading
import time

from webui.app import App

log = logging.getLogger(__name__)


def start_api(app: App) -> tuple[object, threading.Thread]:
    """Run the API with uvicorn in a background thread; returns (server, thread)."""
    import uvicorn

    from webui.api import create_api

    config = uvicorn.Config(create_api(app), host=app.settings.host, port=app.settings.api_port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="hearth-api", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    print(f"API listening on http://{app.settings.host}:{app.settings.api_port}/v1", flush=True)
    return server, thread


def serve(app: App) -> int:
    settings = app.settings
    api_thread = None
    if settings.api:
        _, api_thread = start_api(app)
    if settings.no_browser_ui:
        if api_thread is None:
            print("Nothing to run: --no-browser-ui without --api.")
            return 2
        try:
            api_thread.join()
        except KeyboardInterrupt:
            pass
        return 0
    from webui.ui import launch_ui

    print(f"Hearth web UI: http://127.0.0.1:{settings.listen_port}", flush=True)
    launch_ui(app)
    return 0
