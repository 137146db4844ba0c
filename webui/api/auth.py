"""API keys: `--api-key` guards every endpoint, `--admin-key` (default: the API key) guards load/unload.

Admin routes check only the admin key: a client sends one `Authorization` header, so asking for both
keys at once would make an admin key different from the API key unusable.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

from webui.api.deps import Hearth


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _check(request: Request, expected: str | None, what: str) -> None:
    if not expected:
        return
    given = _bearer(request)
    if given is None:
        raise HTTPException(401, f"missing {what}: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, f"invalid {what}", headers={"WWW-Authenticate": "Bearer"})


def require_api_key(request: Request, hearth: Hearth) -> None:
    _check(request, hearth.settings.api_key, "API key")


def require_admin_key(request: Request, hearth: Hearth) -> None:
    settings = hearth.settings
    _check(request, settings.admin_key or settings.api_key, "admin key")
