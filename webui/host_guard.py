"""A DNS-rebinding and cross-site guard for Hearth's HTTP servers (the web UI; the API may reuse it).

A page on another site can make a browser talk to a server on this machine or LAN: by rebinding its own
name to our address (the request then carries ``Host: evil.example``) or by sending requests straight
to our address (they carry ``Origin: http://evil.example``). `HostGuard` is an ASGI middleware that
answers both with 403 before any route runs: the ``Host`` must be a name we serve under
(`AllowedHosts`), and an ``Origin``, when a browser sends one, must be our own page.

Use it on any Starlette/FastAPI app::

    hosts = AllowedHosts.for_server(settings.host, settings.allowed_hosts)
    app.add_middleware(HostGuard, hosts=hosts, extra_origins=settings.cors_origins)
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

#: Names that always mean this machine.
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
#: Bind addresses that mean "every interface": the machine's own names and addresses are then valid too.
ALL_INTERFACES = frozenset({"0.0.0.0", "::", ""})
#: `--allowed-hosts '*'` turns the Host check off (behind a reverse proxy that checks it).
ANY_HOST = "*"


def hostname_of(value: str | None) -> str | None:
    """The lower-case host name of a ``Host`` header ("name:port", "[::1]:80") or an origin URL."""
    if not value:
        return None
    if value.count(":") > 1 and "[" not in value and "://" not in value:  # a bare IPv6 address
        return value.lower()
    try:
        parts = urlsplit(value if "://" in value else f"//{value}")
        return parts.hostname or None
    except ValueError:  # "[::1" and other broken brackets
        return None


def _addresses_of(name: str) -> set[str]:
    """What the local resolver (/etc/hosts first) says `name` is; nothing on failure."""
    try:
        return {info[4][0].split("%")[0] for info in socket.getaddrinfo(name, None)}
    except (OSError, UnicodeError):
        return set()


def _outbound_address(family: int, probe: str) -> str | None:
    """The address this machine would use towards `probe`: a UDP connect sends no packet."""
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((probe, 9))
        return sock.getsockname()[0]
    return None


def machine_names() -> set[str]:
    """This machine's host name(s), lower case: what a LAN client may type instead of an address."""
    names = {socket.gethostname().lower()}
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn().lower())
    names |= {f"{name.split('.')[0]}.local" for name in names if name and name not in LOCAL_NAMES}  # mDNS
    return {name for name in names if name}


def machine_addresses() -> list[str]:
    """This machine's non-loopback addresses (LAN first, IPv4 before IPv6), found without network traffic."""
    found: set[str] = set()
    for name in machine_names():
        found |= _addresses_of(name)
    for family, probe in ((socket.AF_INET, "10.255.255.255"), (socket.AF_INET6, "fd00::1")):
        address = _outbound_address(family, probe)
        if address:
            found.add(address)
    found = {a for a in found if a not in LOCAL_NAMES and not a.startswith("127.") and a != "::"}
    return sorted(found, key=lambda a: (":" in a, a))


@dataclass(frozen=True)
class AllowedHosts:
    """The host names a request may address. Build with `for_server`; `any_host` disables the check."""

    names: frozenset[str]
    any_host: bool = False

    @classmethod
    def for_server(cls, bound: str, extra: Iterable[str] = ()) -> AllowedHosts:
        """Localhost, the bound address and `extra`; on all interfaces also the machine's names and addresses."""
        extra = [name.strip().lower() for name in extra if name and name.strip()]
        names = set(LOCAL_NAMES) | {hostname_of(name) or name for name in extra if name != ANY_HOST}
        if bound in ALL_INTERFACES:
            names |= machine_names() | set(machine_addresses())
        else:
            names.add(hostname_of(bound) or bound.lower())
        return cls(frozenset(names), any_host=ANY_HOST in extra)

    def allows(self, host_header: str | None) -> bool:
        if self.any_host:
            return True
        name = hostname_of(host_header)
        return name is not None and name in self.names


class HostGuard:
    """ASGI middleware: 403 for a foreign ``Host``; with `check_origin`, also for a foreign ``Origin``.

    An ``Origin`` is ours when it is the page's own (same host and port as the ``Host``), one of the
    allowed host names, or listed in `extra_origins` (e.g. the API's CORS origins). ``Origin: null``
    (sandboxed frames, local files) is foreign. Requests without an ``Origin`` (curl, the openai client,
    top-level navigation) are judged by their ``Host`` alone. WebSocket handshakes are checked the same way.
    """

    def __init__(
        self, app: ASGIApp, hosts: AllowedHosts, check_origin: bool = True, extra_origins: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.check_origin = check_origin
        self.extra_origins = frozenset(o.rstrip("/").lower() for o in extra_origins)

    def refusal(self, scope: Scope) -> str | None:
        """Why this request is refused, or None to let it through."""
        headers = Headers(scope=scope)
        host = headers.get("host")
        if not self.hosts.allows(host):
            return f"Host {host!r} is not allowed (start Hearth with --allowed-hosts NAME to allow a name)"
        origin = headers.get("origin")
        if self.check_origin and origin is not None and not self.origin_allowed(origin, host):
            return f"cross-site request from Origin {origin!r} refused"
        return None

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.extra_origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        if host is not None and parts.netloc == host.lower():
            return True
        return parts.hostname in self.hosts.names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        reason = self.refusal(scope)
        if reason is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
        else:
            await PlainTextResponse(reason, status_code=403)(scope, receive, send)
