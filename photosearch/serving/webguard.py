"""Which requests the HTTP server answers at all: a pure ASGI middleware in front of everything else.

Any web page the user visits can make the browser send requests to 127.0.0.1. It cannot read the answers,
unless it rebinds its own name to 127.0.0.1 (DNS rebinding), and it can still trigger work (CSRF). Three
rules, in this order, close both:

1. **Host.** Only names the server is really reached by: loopback names and addresses, the bound address,
   the machine's name and addresses when bound beyond loopback, and ``server.allowed_hosts``. A rebound page
   sends its own name (``Host: evil.example``), so it gets a 400 and reads nothing.
2. **Origin.** A request from another origin (``Origin`` not this server's and not in
   ``server.cors_origins``, or ``Sec-Fetch-Site: cross-site``/``same-site``) is refused with a 403 when it
   goes to /api/ (a foreign page has no business there, thumbnails included) or changes state. Navigations to
   the page itself stay open; requests that carry neither header (curl, the CLI's client) pass.
3. **Non-simple requests.** A POST (PUT, PATCH, DELETE) must carry what no HTML form and no ``no-cors``
   fetch can send: the ``X-Photosearch`` header, a JSON body, or ``Authorization: Bearer``. This also covers
   browsers that send no Origin or Sec-Fetch-* headers.

Standard library only: the CLI's client imports the header's name from here and must stay cheap to import.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from photosearch.errors import CrossOriginError, MissingHeaderError, RequestRefusedError, UnknownHostError

CSRF_HEADER = "X-Photosearch"  # its presence is the signal; clients send "1"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FOREIGN_SITES = frozenset({"cross-site", "same-site"})  # same-site: another port of 127.0.0.1 is another app

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Origin = tuple[str, str, int]  # scheme, host, port


def split_host(value: str) -> tuple[str, int | None] | None:
    """A Host header (or an allowed_hosts entry) as (name, port): lower case, without IPv6 brackets or a
    trailing dot. None when it is not a host at all."""
    text = value.strip().lower()
    if text.startswith("["):
        name, bracket, rest = text[1:].partition("]")
        if not bracket:
            return None
    elif text.count(":") == 1:
        name, colon, port = text.partition(":")
        rest = colon + port
    else:  # a name, or a bare IPv6 address as an allowed_hosts entry may be written
        name, rest = text, ""
    port_text = rest.removeprefix(":")
    if rest and not (rest.startswith(":") and port_text.isascii() and port_text.isdigit() and int(port_text) < 65536):
        return None
    name = name.rstrip(".")
    return (name, int(port_text) if rest else None) if name else None


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return None
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address  # ::ffff:127.0.0.1 is loopback too (Python < 3.13 says otherwise)


@lru_cache(maxsize=256)
def _is_local_address(name: str) -> bool:
    """Whether an IP address belongs to this machine: binding a socket to it succeeds only then. (An address
    in the Host header cannot be rebound by a foreign page anyway; this keeps the rule exact.)"""
    family = socket.AF_INET6 if ":" in name else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((name, 0))
    except OSError:
        return False
    return True


def _machine_names() -> set[str]:
    """Names a phone on the LAN may use for this machine (its hostname, and the mDNS .local one). Not the
    FQDN: finding it may wait on a DNS timeout at every start; allowed_hosts covers such names."""
    short = socket.gethostname().lower().rstrip(".")
    return {short, f"{short.split('.')[0]}.local"} if short else set()


class HostRule:
    """The Host names a server answers to. (A plain class: dataclasses would cost the CLI 19 ms to import.)"""

    def __init__(self, names: Iterable[str], any_host: bool = False, local_addresses: bool = False) -> None:
        self.names = frozenset(names)
        self.any_host = any_host  # allowed_hosts has "*"
        self.local_addresses = local_addresses  # bound beyond loopback: any address of this machine too

    @classmethod
    def for_server(cls, bound: str, allowed: Iterable[str] = ()) -> HostRule:
        allowed = tuple(allowed)
        bound_name = (split_host(bound) or (bound.lower(), None))[0]
        address = _address(bound_name)
        beyond = bound_name != "localhost" and not (address is not None and address.is_loopback)
        names = {"localhost", bound_name} | (_machine_names() if beyond else set())
        names |= {parsed[0] for parsed in map(split_host, allowed) if parsed is not None}
        return cls(names, any_host="*" in allowed, local_addresses=beyond)

    def allows(self, name: str) -> bool:
        if self.any_host or name in self.names:
            return True
        address = _address(name)
        if address is None:
            return False
        return address.is_loopback or (self.local_addresses and _is_local_address(str(address)))


def _origin(value: str) -> Origin | None:
    """An Origin header (or a cors_origins entry) as (scheme, host, port); None for "null" and nonsense."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.rstrip("."), port or _DEFAULT_PORTS[parts.scheme]


class WebGuard:
    """The middleware: refuses, as a JSON error, what the rules above do not let through."""

    def __init__(self, app: ASGIApp, hosts: HostRule, cors_origins: tuple[str, ...] = ()) -> None:
        self.app = app
        self.hosts = hosts
        self.any_origin = "*" in cors_origins
        self.cors_origins = frozenset(o for o in map(_origin, cors_origins) if o is not None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self.refusal(scope) if scope["type"] == "http" else None
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await _refuse(send, refusal)

    def refusal(self, scope: Scope) -> RequestRefusedError | None:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        host = split_host(headers.get("host", ""))
        if host is None or not self.hosts.allows(host[0]):
            return UnknownHostError(
                f"this server does not answer to the host name {headers.get('host', '')!r}: open it by the name "
                "it is served on (127.0.0.1), or add the name to server.allowed_hosts"
            )
        unsafe = scope["method"] not in SAFE_METHODS
        if (unsafe or f"{scope['path']}/".startswith("/api/")) and self._foreign(scope["scheme"], host, headers):
            return CrossOriginError(
                "requests from other web pages are refused; list an origin in server.cors_origins to allow it"
            )
        if unsafe and not _non_simple(headers):
            return MissingHeaderError(
                f"send the header '{CSRF_HEADER}: 1' with this request (or a JSON body, or the Bearer token), "
                "so that no other web page can make it"
            )
        return None

    def _foreign(self, scheme: str, host: tuple[str, int | None], headers: Mapping[str, str]) -> bool:
        origin = headers.get("origin")
        if origin is not None:
            theirs = _origin(origin)
            if self.any_origin or theirs in self.cors_origins:
                return False  # configured CORS origins are other pages by definition
            if theirs != (scheme, host[0], host[1] or _DEFAULT_PORTS.get(scheme, 80)):
                return True
        return headers.get("sec-fetch-site", "").strip().lower() in _FOREIGN_SITES


def _non_simple(headers: Mapping[str, str]) -> bool:
    """What a form or a no-cors fetch cannot send: a custom header, a JSON body, an Authorization header."""
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    bearer = headers.get("authorization", "").startswith("Bearer ")
    return bool(headers.get(CSRF_HEADER.lower())) or bearer or media_type == "application/json"


async def _refuse(send: Send, error: RequestRefusedError) -> None:
    """The same JSON error body as every other error of the API (httpapi._error)."""
    body = json.dumps({"error": type(error).__name__, "detail": str(error)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
