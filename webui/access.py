"""Who may reach Hearth: web UI logins, and the refusal to serve the network without them.

`plan_access` is the decision made once at start, before any model loads or any port opens: on
--listen, the web UI needs logins (--gradio-auth / --gradio-auth-path) and the API needs a key
(--api-key / --api-key-file), unless --allow-unauthenticated accepts the risk (then it warns).
Passwords are read here and handed to Gradio's own login; they never appear in a message or a repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from webui.config import Settings
from webui.errors import HearthError

#: A login: (user, password). Keep these out of logs and reprs.
Login = tuple[str, str]


class AccessError(HearthError):
    """Hearth would be reachable by others without a login or key, or a login list is malformed."""


def _parse_pair(text: str, where: str) -> Login:
    user, sep, password = text.partition(":")
    user, password = user.strip(), password.strip()
    if not sep or not user or not password:
        # Never echo the text: it may hold a password.
        raise AccessError(f"{where}: expected USER:PASSWORD (both non-empty)")
    return user, password


def parse_auth_option(value: str) -> list[Login]:
    """--gradio-auth: "user:pass" pairs separated by commas (empty pieces ignored)."""
    pieces = [piece for piece in value.split(",") if piece.strip()]
    return [_parse_pair(piece, f"--gradio-auth entry {i}") for i, piece in enumerate(pieces, 1)]


def parse_auth_file(path: Path) -> list[Login]:
    """--gradio-auth-path: one "user:password" per line (the password may hold ':' and ','); blank
    lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AccessError(f"cannot read --gradio-auth-path {path}: {exc}") from None
    logins = []
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            logins.append(_parse_pair(line, f"--gradio-auth-path {path} line {number}"))
    return logins


def ui_logins(settings: Settings) -> list[Login]:
    """Every web UI login from --gradio-auth and --gradio-auth-path; an empty list means no login."""
    logins = parse_auth_option(settings.gradio_auth) if settings.gradio_auth else []
    if settings.gradio_auth_path is not None:
        logins += parse_auth_file(settings.gradio_auth_path)
        if not logins:
            raise AccessError(f"--gradio-auth-path {settings.gradio_auth_path} holds no USER:PASSWORD line")
    return logins


@dataclass(frozen=True)
class AccessPlan:
    """What start-up decided: the UI logins (hidden from repr) and the warnings to print loudly."""

    logins: list[Login] = field(default_factory=list, repr=False)
    warnings: list[str] = field(default_factory=list)


def _refusal(what: str, lacking: str, needed: str) -> str:
    return (
        f"--listen would expose {what} to everyone on the network without {lacking}: add {needed}, "
        f"or start with --allow-unauthenticated to accept that risk."
    )


def plan_access(settings: Settings) -> AccessPlan:
    """Validate logins and keys; refuse (AccessError) to listen openly unless --allow-unauthenticated."""
    logins = ui_logins(settings)
    keys = settings.api_keys
    if not settings.listen:
        return AccessPlan(logins)
    open_parts = []
    if not settings.no_browser_ui and not logins:
        open_parts.append(("the web UI", "a login", "--gradio-auth USER:PASSWORD or --gradio-auth-path FILE"))
    if settings.api and not keys:
        open_parts.append(("the API", "a key", "--api-key KEY or --api-key-file FILE"))
    if not open_parts:
        return AccessPlan(logins)
    if not settings.allow_unauthenticated:
        raise AccessError(" ".join(_refusal(*part) for part in open_parts))
    warnings = [
        f"WARNING: --allow-unauthenticated: {what} is open to everyone who can reach this machine "
        f"(they can load and download models and read your chats)."
        for what, _, _ in open_parts
    ]
    return AccessPlan(logins, warnings)
