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
  An IPv6 address that carries an IPv4 one (IPv4-mapped, IPv4-compatible, IPv4-translated,
  NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo) is judged by the IPv4 inside it too, since a
  translator on the way would deliver it there. This runs at submit (a forbidden target is
  refused with 422) and again at every delivery;
- a delivery connects to the address it checked, never resolving the name a second time (a
  DNS-rebinding answer between check and connect changes nothing), with TLS verified against
  the URL's host name; a bounded read of the answer, and no redirect followed;
- one attempt has ONE wall-clock deadline covering the lookup, the connection, TLS, sending and
  the whole answer. `http.client`'s timeout bounds each socket read, so a receiver dripping one
  byte a second would never time out: a watchdog shuts the socket down at the deadline instead;
- lookups run on `resolver.Resolver`, which bounds them per owner, so one owner's names that
  never answer cannot take the lookups of another owner's deliveries.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

from common.lazy import Lazy
from common.messaging.resolver import DEFAULT as DEFAULT_RESOLVER
from common.messaging.resolver import LookupBusy, Resolver

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
RESOLVE_TIMEOUT_S = 2.0  # at submit: a slow name is accepted and checked at each delivery

# IPv6 ranges whose last 32 bits are an IPv4 address a translator would deliver to.
_EMBEDS_IPV4_LOW32 = tuple(ipaddress.IPv6Network(n) for n in (
    "64:ff9b::/96",       # NAT64 well-known prefix (RFC 6052)
    "::/96",              # IPv4-compatible (deprecated, still routed by some stacks)
    "::ffff:0:0:0/96",    # IPv4-translated (SIIT, RFC 2765)
))
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: a local translator's


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


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, in any of the forms translators use."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in net for net in _EMBEDS_IPV4_LOW32) and int(ip) & 0xFFFFFFFF:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def address_allowed(ip: IPAddress, *, allow_loopback: bool) -> bool:
    if ip.is_loopback:
        return allow_loopback
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_NAT64:
            return False
        inner = embedded_ipv4(ip)
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 host itself
            return address_allowed(ip.ipv4_mapped, allow_loopback=allow_loopback)
        if inner and not all(address_allowed(v4, allow_loopback=False) for v4 in inner):
            return False
    return ip.is_global and not ip.is_multicast


def resolve(target: Target, *, allow_loopback: bool, owner: str = "",
            timeout_s: float = RESOLVE_TIMEOUT_S,
            resolver: Resolver = DEFAULT_RESOLVER) -> list[IPAddress]:
    """Every address the host resolves to, if all of them are allowed; [] if it does not
    resolve (now); ForbiddenTarget if any is forbidden (one bad answer is enough to refuse:
    which one a client would pick is not ours to guess). LookupBusy if the owner's share of
    lookups is in use (nothing was tried)."""
    try:
        infos = resolver.lookup(target.host, target.port, owner=owner, timeout_s=timeout_s)
    except (OSError, UnicodeError):  # also TimeoutError: no answer in time
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


def check_at_submit(url: str, *, allow_loopback: bool, owner: str = "",
                    resolver: Resolver = DEFAULT_RESOLVER) -> None:
    """Refuse a URL whose form or current DNS answer is forbidden. A name that does not resolve
    yet (or cannot be looked up now) is accepted: it is checked again at every delivery, which
    is the guard that counts."""
    target = parse(url, allow_loopback=allow_loopback)
    with contextlib.suppress(LookupBusy):
        resolve(target, allow_loopback=allow_loopback, owner=owner, resolver=resolver)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # at most the bound given


class DeadlineExceeded(TimeoutError):
    """The attempt did not complete (lookup, connect, TLS, request and answer) in time."""


class _Deadline:
    """One wall-clock deadline for a whole attempt. A watchdog shuts the socket down when it
    passes, which ends any read or write in progress, however slowly the peer drips."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer: threading.Timer | None = None
        self.expired = False

    def remaining(self) -> float:
        left = self._at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"no complete answer within {self.seconds:.3g}s")
        return left

    def passed(self) -> bool:
        """Whether the deadline has passed: a socket time-out set to the time that remained
        can fire a moment before the watchdog, and is the same overrun."""
        return time.monotonic() >= self._at

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down at the deadline. A duplicate descriptor is kept: shutdown acts on
        the connection, so it still ends it after TLS has taken over the original object."""
        with self._lock:
            self._socks.append(sock.dup())
            if self._timer is None:
                self._timer = threading.Timer(max(self._at - time.monotonic(), 0.0), self._fire)
                self._timer.daemon = True
                self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Deadline:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            for sock in self._socks:
                sock.close()
            self._socks.clear()


_tls_context = Lazy(ssl.create_default_context)  # loading the CA store once per instance


def _open(ip: IPAddress, target: Target, deadline: _Deadline) -> socket.socket:
    sock = socket.create_connection((str(ip), target.port), timeout=deadline.remaining())
    try:
        deadline.watch(sock)
        if target.scheme != "https":
            return sock
        sock.settimeout(deadline.remaining())
        # TLS to the fixed address, verified against the URL's host name (SNI and certificate).
        return _tls_context.get().wrap_socket(sock, server_hostname=target.host)
    except BaseException:
        sock.close()
        raise


def post(url: str, body: bytes, headers: dict[str, str], *, allow_loopback: bool,
         timeout_s: float, max_read: int, owner: str = "",
         resolver: Resolver = DEFAULT_RESOLVER) -> Answer:
    """POST `body` to `url` after checking where it resolves, connecting to that checked
    address, all within `timeout_s` of wall-clock time. Raises ForbiddenTarget (never retried
    into success), LookupBusy (nothing was tried), DeadlineExceeded, or OSError/HTTPException."""
    with _Deadline(timeout_s) as deadline:
        target = parse(url, allow_loopback=allow_loopback)
        addresses = resolve(target, allow_loopback=allow_loopback, owner=owner,
                            timeout_s=deadline.remaining(), resolver=resolver)
        if not addresses:
            deadline.remaining()  # the lookup's own time-out is the attempt's
            raise OSError(f"{target.host} does not resolve")
        conn = http.client.HTTPConnection(str(addresses[0]), target.port)
        try:
            conn.sock = _open(addresses[0], target, deadline)
            conn.sock.settimeout(deadline.remaining())
            host_header = (target.host if target.port in (80, 443)
                           else f"{target.host}:{target.port}")
            conn.putrequest("POST", target.path, skip_host=True, skip_accept_encoding=True)
            for name, value in {"Host": host_header, "Content-Length": str(len(body)),
                                **headers}.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            response = conn.getresponse()  # a 3xx is an answer like any other: never followed
            answer = Answer(response.status, response.read(max_read))
        except DeadlineExceeded:
            raise
        except Exception as exc:
            if deadline.expired or deadline.passed():
                raise DeadlineExceeded(f"no complete answer within {timeout_s:.3g}s") from exc
            raise
        finally:
            conn.close()
        if deadline.expired:  # the watchdog cut it short: what was read may be partial
            raise DeadlineExceeded(f"no complete answer within {timeout_s:.3g}s")
        return answer
