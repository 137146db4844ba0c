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
from webui.api.errors import install_error_handlers
from webui.app import App
from webui.session import ChatService


def create_api(app: App) -> FastAPI:
    api = FastAPI(
        title="Hearth API",
        summary="OpenAI-compatible API with text-generation-webui's extensions (SillyTavern's 'Text Generation WebUI' type).",
        version="1",
    )
    api.state.hearth = app
    api.state.chat = ChatService(app)
    if app.settings.cors_origins:
        api.add_middleware(CORSMiddleware, allow_origins=list(app.settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])
    install_error_handlers(api)
    api.include_router(openai.router)
    api.include_router(internal.router)
    api.include_router(internal.admin)
    api.openapi = lambda: _openapi(api)  # type: ignore[method-assign]
    return api


def _openapi(api: FastAPI) -> dict[str, Any]:
    """FastAPI's document, made true to this server: validation errors are 400s in OpenAI's shape (not
    FastAPI's 422), and the streamed chunk models are listed."""
    if api.openapi_schema:
        return api.openapi_schema
    doc = get_openapi(title=api.title, version=api.version, summary=api.summary, routes=api.routes)
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    for path in doc["paths"].values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for model in openai.STREAMED_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    api.openapi_schema = doc
    return doc


__all__ = ["create_api"]
