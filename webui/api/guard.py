"""The API's front door, an ASGI middleware run before any route: foreign `Host`s, cross-site and non-JSON
posts, oversized bodies, and lone Unicode surrogates are refused in OpenAI's error shape.

Which `Host`s are served is `webui.host_guard.AllowedHosts`, shared with the web UI (DNS rebinding: a
foreign page reaches us under its own name). A page of another site may still make a browser post here (a
form, a `text/plain` fetch): such a request carries an `Origin`, and a POST is served only when that
origin is the API's own (its /docs page) or one of --cors-origins. Clients outside a browser send none.

The body is read here, counting bytes, and handed on to the route; one larger than --max-request-mb is
refused as soon as its `Content-Length` says so, or, for a chunked upload, as soon as the count passes the
limit: a huge body is never held in memory.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webui.api.errors import error_body
from webui.host_guard import AllowedHosts

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
#: A JSON escape of a UTF-16 surrogate: only then can the parsed body hold a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class Refused(Exception):
    def __init__(self, status: int, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def response(self) -> JSONResponse:
        kind = "permission_error" if self.status == 403 else "invalid_request_error"
        return JSONResponse(error_body(self.message, kind, self.param, self.code), status_code=self.status)


class RequestGuard:
    def __init__(self, app: ASGIApp, hosts: AllowedHosts, origins: list[str], max_body_bytes: int):
        self.app, self.hosts, self.max_body_bytes = app, hosts, max_body_bytes
        self.origins = frozenset(o.strip().rstrip("/").lower() for o in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            headers = _headers(scope)
            self._check_headers(scope["method"], headers)
            body = await self._read_body(receive, headers)
            if scope["method"] not in SAFE_METHODS:
                check_surrogates(body)
        except Refused as refused:
            await refused.response()(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def _check_headers(self, method: str, headers: dict[str, str]) -> None:
        host = headers.get("host")
        if not self.hosts.allows(host):
            raise Refused(403, f"Host {host!r} is not served here: use localhost or the address Hearth listens "
                               "on, or allow the name with --allowed-hosts", "host_not_allowed")
        if method in SAFE_METHODS:
            return
        origin = headers.get("origin")
        if origin is not None and not self._allows_origin(origin, host):
            raise Refused(403, f"cross-site request from {origin!r} refused: allow that origin with "
                               "--cors-origins", "origin_not_allowed")
        kind = headers.get("content-type")
        if kind is not None and not is_json(kind):
            raise Refused(415, f"the request body must be JSON (Content-Type: application/json), got {kind!r}",
                          "unsupported_media_type")

    def _allows_origin(self, origin: str, host: str | None) -> bool:
        """The API's own pages (same scheme-less host:port as `Host`), or an origin of --cors-origins."""
        origin = origin.strip().rstrip("/").lower()
        if "*" in self.origins or origin in self.origins:
            return True
        scheme, _, netloc = origin.partition("://")
        return bool(host) and scheme in {"http", "https"} and netloc == host.strip().lower()

    def _too_large(self) -> Refused:
        mib = self.max_body_bytes / (1 << 20)
        return Refused(413, f"the request body is larger than {mib:g} MiB (the server's --max-request-mb)",
                       "request_too_large")

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise Refused(400, f"invalid Content-Length {declared!r}", "invalid_body")
            if int(declared) > self.max_body_bytes:
                raise self._too_large()
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: the route sees the disconnect
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and "content-type" not in headers:
            raise Refused(415, "the request body must be JSON: send Content-Type: application/json",
                          "unsupported_media_type")
        return body


class _ClientGone(Refused):
    def __init__(self) -> None:
        super().__init__(400, "the client closed the connection while sending the body", "client_gone")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the route the body read here, then passes on (disconnects) as before."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def check_surrogates(body: bytes) -> None:
    """400 naming the field when a JSON string holds a lone UTF-16 surrogate (no text can be made of it)."""
    if not _SURROGATE_ESCAPE.search(body):
        return
    try:
        data = json.loads(body)
        path = _lone_surrogate(data, ())
    except (ValueError, RecursionError):
        return  # malformed or absurdly nested JSON: the route's parser refuses it
    if path is not None:
        param = ".".join(map(str, path)) or None
        where = f"{param}: " if param else ""
        raise Refused(400, f"{where}the text holds a lone Unicode surrogate (e.g. \\ud800), which is not a character",
                      "invalid_value", param)


def _lone_surrogate(node: Any, path: tuple[Any, ...]) -> tuple[Any, ...] | None:
    if isinstance(node, str):
        try:
            node.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(key, str) and _lone_surrogate(key, ()) is not None:
            return (*path, key)
        found = _lone_surrogate(value, (*path, key))
        if found is not None:
            return found
    return None
