"""Every API failure leaves as OpenAI's error body: {"error": {"message", "type", "param", "code"}}.

Clients (the `openai` package, SillyTavern) show `error.message` to a person, so messages name the field
and say what was expected. Hearth's own exceptions are mapped to status codes here, in one table, so the
routes just raise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from webui.errors import (
    ContextLengthError,
    HearthError,
    ModelNotFound,
    ModelRuntimeError,
    NoModelLoaded,
    RemoteCodeNotAllowed,
)
from webui.input_errors import InvalidInput

log = logging.getLogger(__name__)

#: First match wins, so subclasses come before their bases.
_HEARTH_STATUS: tuple[tuple[type[HearthError], int, str], ...] = (
    (NoModelLoaded, 503, "model_not_loaded"),
    (ModelNotFound, 404, "model_not_found"),
    (RemoteCodeNotAllowed, 403, "remote_code_not_allowed"),
    (InvalidInput, 400, "invalid_value"),
    (ContextLengthError, 400, "context_length_exceeded"),
    (ModelRuntimeError, 500, "model_error"),
    (HearthError, 400, "invalid_request"),
)
#: Pydantic's loc holds union-member tags ("str", "list[int]", "function-after[...]"): not field names.
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "json-or-python"}


class APIError(Exception):
    """An error raised by a route with its HTTP status and OpenAI-style fields."""

    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers
        self.type = type or ("server_error" if status >= 500 else "invalid_request_error")


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error_body(error.message, error.type, error.param, error.code), status_code=error.status,
                        headers=error.headers)


def from_hearth(exc: HearthError) -> APIError:
    for cls, status, code in _HEARTH_STATUS:
        if isinstance(exc, cls):
            return APIError(status, str(exc), param=getattr(exc, "param", None), code=code)
    raise AssertionError("HearthError is the last row")  # pragma: no cover


def param_name(loc: Sequence[int | str]) -> str | None:
    """'messages.0.role' from pydantic's ('body', 'messages', 0, 'role'), without union tags."""
    parts = [str(p) for p in loc if p != "body" and not (isinstance(p, str) and _is_tag(p))]
    return ".".join(parts) or None


def _is_tag(part: str) -> bool:
    return part in _TYPE_TAGS or "[" in part or part.startswith(("function-", "constrained-"))


def from_validation(errors: Sequence[Any]) -> APIError:
    """The first validation problem, named by its field; malformed JSON gets its own code."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return APIError(400, f"malformed JSON body: {detail}".rstrip(": "), code="json_invalid")
    param = param_name(first.get("loc", ()))
    if param is None:
        return APIError(400, "the request body must be a JSON object", code="invalid_body")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return APIError(400, f"{param}: {first.get('msg', 'invalid value')}{more}", param=param, code="invalid_value")


def install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @api.exception_handler(HearthError)
    async def _hearth(_: Request, exc: HearthError) -> JSONResponse:
        return error_response(from_hearth(exc))

    @api.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(from_validation(exc.errors()))

    @api.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        return error_response(from_validation(exc.errors()))

    @api.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        body = error_body(str(exc.detail), kind, code="invalid_api_key" if exc.status_code == 401 else None)
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @api.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("API request failed")
        return JSONResponse(error_body(f"internal error: {exc}", "server_error"), status_code=500)
