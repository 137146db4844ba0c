"""API keys. Every route needs one of the API keys when any is set (--api-key, repeatable, and
--api-key-file); admin routes (loading and unloading models: what is served) need the admin key, which
is --admin-key or, without it, any API key.

Admin routes check only the admin key: a client sends one `Authorization` header, so asking for both keys
at once would make an admin key different from the API keys unusable. When Hearth listens beyond this
machine (--listen) admin routes refuse to run without a key, unless --allow-unauthenticated says the
owner accepts that anyone on the network may load models.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from webui.api.errors import APIError
from webui.config import Settings


@dataclass(frozen=True)
class Keys:
    """The keys of one server, read once at start (a changed --api-key-file needs a restart)."""

    api: tuple[str, ...]
    admin: tuple[str, ...]
    #: Admin routes with no key configured: allowed (localhost) or refused with this reason.
    keyless_admin_refusal: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Keys:
        api = tuple(settings.api_keys)
        admin = (settings.admin_key,) if settings.admin_key else api
        refusal = None
        if settings.listen and not admin and not settings.allow_unauthenticated:
            refusal = ("admin routes (model load/unload) need a key when Hearth listens on the network: "
                       "start it with --admin-key KEY or --api-key KEY (or --allow-unauthenticated to accept "
                       "that anyone on the network can load models)")
        return cls(api, admin, refusal)


_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def matches(given: str, keys: tuple[str, ...]) -> bool:
    """Constant-time against every key (no early exit, so timing tells nothing about which matched)."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(given.encode(), key.encode())
    return found


def _check(request: Request, keys: tuple[str, ...], what: str) -> None:
    if not keys:
        return
    given = _bearer(request)
    if given is None:
        raise APIError(401, f"missing {what}: send 'Authorization: Bearer <key>'", type="authentication_error",
                       code="invalid_api_key", headers=_CHALLENGE)
    if not matches(given, keys):
        raise APIError(401, f"invalid {what}", type="authentication_error", code="invalid_api_key", headers=_CHALLENGE)


def _keys(request: Request) -> Keys:
    return request.app.state.keys


def require_api_key(request: Request) -> None:
    _check(request, _keys(request).api, "API key")


def require_admin_key(request: Request) -> None:
    keys = _keys(request)
    if not keys.admin and keys.keyless_admin_refusal:
        raise APIError(403, keys.keyless_admin_refusal, type="permission_error", code="admin_key_required")
    _check(request, keys.admin, "admin key")
