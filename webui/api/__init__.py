"""The `--api` server: OpenAI-compatible and text-generation-webui-compatible routes over the one core.

`create_api(app)` builds the FastAPI app; `webui.server.start_api` runs it with uvicorn. Routes are
adapters only: prompts, sampling and queueing live in the session, sampling and generation modules.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from webui.api import internal, openai
from webui.api.auth import Keys
from webui.api.errors import install_error_handlers
from webui.api.guard import RequestGuard
from webui.app import App
from webui.chat_service import ChatService
from webui.host_guard import AllowedHosts


def create_api(app: App) -> FastAPI:
    api = FastAPI(
        title="Hearth API",
        summary="OpenAI-compatible API with text-generation-webui's extensions (SillyTavern's 'Text Generation WebUI' type).",
        version="1",
    )
    api.state.hearth = app
    api.state.chat = ChatService(app)
    api.state.keys = Keys.from_settings(app.settings)
    if app.settings.cors_origins:
        api.add_middleware(CORSMiddleware, allow_origins=list(app.settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])
    # Added last, so it runs first: foreign hosts, cross-site posts and oversized bodies never reach a route.
    settings = app.settings
    api.add_middleware(RequestGuard, hosts=AllowedHosts.for_server(settings.host, settings.allowed_hosts),  # type: ignore[arg-type]
                       origins=list(settings.cors_origins), max_body_bytes=settings.max_request_mb << 20)
    install_error_handlers(api)
    api.include_router(openai.router)
    api.include_router(internal.router)
    api.include_router(internal.admin)
    api.openapi = lambda: _openapi(api)  # type: ignore[method-assign]
    return api


_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
#: What the request guard (guard.py) answers before any route runs.
_GUARD_RESPONSES = {
    "403": {"description": "A Host or (on POST) an Origin this server does not serve; admin routes without a "
                           "key on a --listen server; trust_remote_code without --trust-remote-code", **_ERROR},
    "413": {"description": "The body is larger than --max-request-mb", **_ERROR},
    "415": {"description": "The body is not application/json", **_ERROR},
}


def _openapi(api: FastAPI) -> dict[str, Any]:
    """FastAPI's document, made true to this server: validation errors are 400s in OpenAI's shape (not
    FastAPI's 422), and the streamed chunk models are listed."""
    if api.openapi_schema:
        return api.openapi_schema
    doc = get_openapi(title=api.title, version=api.version, summary=api.summary, routes=api.routes)
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    for path in doc["paths"].values():
        for method, operation in path.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses.update({k: v for k, v in _GUARD_RESPONSES.items() if method == "post" or k == "403"})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for model in openai.STREAMED_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    api.openapi_schema = doc
    return doc


__all__ = ["create_api"]
