"""Starting the servers: the Gradio UI on --listen-port and, with --api, the API on --api-port.

The start-up lines name the addresses a browser can really use: with --listen that is localhost and the
machine's LAN addresses, not the bound 0.0.0.0 alone.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from webui.access import AccessPlan, plan_access
from webui.app import App
from webui.host_guard import ALL_INTERFACES, machine_addresses

log = logging.getLogger(__name__)


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def reachable_urls(host: str, port: int, path: str = "") -> list[str]:
    """The URLs a server bound to `host` answers on: localhost and the LAN addresses for all interfaces."""
    if host in ALL_INTERFACES:
        ipv4_only = host == "0.0.0.0"  # an IPv4 bind does not answer on the IPv6 addresses
        hosts = ["localhost", *(a for a in machine_addresses() if not (ipv4_only and ":" in a))]
    else:
        hosts = [host]
    return [f"http://{_url_host(name)}:{port}{path}" for name in hosts]


def startup_lines(what: str, host: str, port: int, path: str = "") -> list[str]:
    """'<what>: URL' on a local bind; on all interfaces, the bound address and every reachable URL."""
    urls = reachable_urls(host, port, path)
    if host not in ALL_INTERFACES:
        return [f"{what}: {urls[0]}"]
    return [f"{what} listening on {_url_host(host)}:{port} (all interfaces), reachable at:"] + [
        f"  {url}" for url in urls
    ]


def start_api(app: App) -> tuple[object, threading.Thread]:
    """Run the API with uvicorn in a background thread; returns (server, thread)."""
    import uvicorn  # here and below: an API-only or UI-only run loads only what it serves

    from webui.api import create_api

    settings = app.settings
    config = uvicorn.Config(create_api(app), host=settings.host, port=settings.api_port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="hearth-api", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    print("\n".join(startup_lines("API", settings.host, settings.api_port, "/v1")), flush=True)
    return server, thread


def warn_loudly(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"\n{'!' * 78}\n{warning}\n{'!' * 78}\n", file=sys.stderr, flush=True)


def serve(app: App, access: AccessPlan | None = None) -> int:
    """Start what the settings ask for and block; `access` is start-up's decision (made here if None)."""
    settings = app.settings
    access = access if access is not None else plan_access(settings)
    warn_loudly(access.warnings)
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

    print("\n".join(startup_lines("Hearth web UI", settings.host, settings.listen_port)), flush=True)
    launch_ui(app, access.logins)
    return 0
