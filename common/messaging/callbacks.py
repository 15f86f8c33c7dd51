"""Callback URLs: which ones a job may carry, and a POST that cannot be turned against us (SSRF).

A callback URL is chosen by the caller, and the request to it is made from inside our network,
so it could aim at the metadata server (169.254.169.254), at a private service, or at a name
that resolves to one. So:

- its form is exact (the pattern below, which the OpenAPI document repeats): https, a DNS name
  with an alphabetic top-level label (never an IP literal, never a bare `localhost`), an
  optional port, a printable-ASCII path; no user info. Where loopback is allowed (make dev,
  tests), `http://localhost`, `http://127.0.0.1` and `http://[::1]` too;
- the name is resolved and every address it resolves to must be public: no private, loopback
  (unless allowed), link-local (the metadata server), shared, reserved or multicast address.
  This runs at submit (a forbidden target is refused with 422) and again at every delivery;
- a delivery connects to the address it checked, never resolving the name a second time (a
  DNS-rebinding answer between check and connect changes nothing), with TLS verified against
  the URL's host name; with a timeout, a bounded read of the answer, and no redirect followed.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_PORT = (
    r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}"
    r"|[1-9][0-9]{0,3}))?"
)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PATH = r"(?:/[!-~]*)?"
PUBLIC_URL_PATTERN = rf"^https://(?:{_LABEL}\.)+[A-Za-z]{{2,63}}{_PORT}{_PATH}$"
LOOPBACK_URL_PATTERN = rf"^https?://(?:localhost|127\.0\.0\.1|\[::1\]){_PORT}{_PATH}$"
MAX_URL = 2048
RESOLVE_TIMEOUT_S = 2.0

_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


class ForbiddenTarget(ValueError):
    """The URL or an address it resolves to may not be called. The message says why and is
    safe to show to the URL's owner (it names no internal detail beyond their own URL)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line


def url_patterns(allow_loopback: bool) -> list[str]:
    return [PUBLIC_URL_PATTERN, LOOPBACK_URL_PATTERN] if allow_loopback else [PUBLIC_URL_PATTERN]


def parse(url: str, *, allow_loopback: bool) -> Target:
    """The URL's parts if its form is allowed, else ForbiddenTarget."""
    if len(url) > MAX_URL or not any(re.fullmatch(p, url) for p in url_patterns(allow_loopback)):
        shapes = "https://<public DNS name>[:port][/path]"
        if allow_loopback:
            shapes += " or http(s)://localhost|127.0.0.1|[::1][:port][/path]"
        raise ForbiddenTarget(f"must be {shapes}, at most {MAX_URL} characters")
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path)


def address_allowed(ip: IPAddress, *, allow_loopback: bool) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_loopback
    return ip.is_global and not ip.is_multicast


def resolve(target: Target, *, allow_loopback: bool,
            timeout_s: float = RESOLVE_TIMEOUT_S) -> list[IPAddress]:
    """Every address the host resolves to, if all of them are allowed; [] if it does not
    resolve (now); ForbiddenTarget if any is forbidden (one bad answer is enough to refuse:
    which one a client would pick is not ours to guess)."""
    future = _resolver.submit(socket.getaddrinfo, target.host, target.port,
                              type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout_s)
    except (OSError, FutureTimeout, UnicodeError):
        return []
    addresses: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address_allowed(ip, allow_loopback=allow_loopback):
            raise ForbiddenTarget("resolves to an address that may not be called "
                                  "(private, loopback, link-local, metadata or reserved)")
        if ip not in addresses:
            addresses.append(ip)
    return addresses


def check_at_submit(url: str, *, allow_loopback: bool) -> None:
    """Refuse a URL whose form or current DNS answer is forbidden. A name that does not resolve
    yet is accepted: it is checked again at every delivery, which is the guard that counts."""
    resolve(parse(url, allow_loopback=allow_loopback), allow_loopback=allow_loopback)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # at most the bound given


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, ip: IPAddress, port: int, timeout: float) -> None:
        super().__init__(str(ip), port, timeout=timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """TLS to a fixed address, verified against the URL's host name (SNI and certificate)."""

    def __init__(self, ip: IPAddress, host: str, port: int, timeout: float) -> None:
        super().__init__(str(ip), port, timeout=timeout, context=ssl.create_default_context())
        self._server_name = host

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(  # type: ignore[attr-defined]
            sock, server_hostname=self._server_name
        )


def post(url: str, body: bytes, headers: dict[str, str], *, allow_loopback: bool,
         timeout_s: float, max_read: int) -> Answer:
    """POST `body` to `url` after checking where it resolves, connecting to that checked
    address. Raises ForbiddenTarget (never retried into success) or OSError/HTTPException."""
    target = parse(url, allow_loopback=allow_loopback)
    addresses = resolve(target, allow_loopback=allow_loopback)
    if not addresses:
        raise OSError(f"{target.host} does not resolve")
    ip = addresses[0]
    conn: http.client.HTTPConnection = (
        _PinnedHTTPS(ip, target.host, target.port, timeout_s) if target.scheme == "https"
        else _PinnedHTTP(ip, target.port, timeout_s)
    )
    try:
        host_header = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
        conn.putrequest("POST", target.path, skip_host=True, skip_accept_encoding=True)
        for name, value in {"Host": host_header, "Content-Length": str(len(body)),
                            **headers}.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()  # a 3xx is an answer like any other: never followed
        return Answer(response.status, response.read(max_read))
    finally:
        conn.close()
