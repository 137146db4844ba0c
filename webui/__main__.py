"""`python -m webui`: parse flags, decide who may connect, build the App, launch the web UI (and the API
with --api). Every start-up error is one line on stderr and exit code 2."""

from __future__ import annotations

import logging
import sys

from webui.access import plan_access
from webui.app import App
from webui.config import parse_settings
from webui.errors import HearthError
from webui.plugins import collect_loaders, make_plugin_manager


def check_startup(app: App) -> None:
    """Fail fast, before any server starts, on a model or loader name that does not exist."""
    settings = app.settings
    if settings.loader:
        app.models.get_loader(settings.loader)
    if settings.model:
        app.models.resolve_path(settings.model)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plugins = make_plugin_manager()
    loaders = collect_loaders(plugins)
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv, loaders)
        access = plan_access(settings)  # before anything loads: refusing to listen openly is instant
        app = App.create(settings, plugins)
        check_startup(app)
        app.load_startup_model()
    except HearthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from webui.server import serve  # here: --help and errors above answer without loading the servers

    return serve(app, access)


if __name__ == "__main__":
    sys.exit(main())
