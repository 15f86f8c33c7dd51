"""The dashboard's files (`ui_static/`), served by `submit` at /ui/ with the headers that keep
them safe.

The dashboard is a static page that calls the JSON API with the caller's own bearer token, so it
needs no auth path of its own: its files hold no data and are public; every data call it makes
goes through the owner-scoped API like any other client's.

Why these choices:
- This module is imported, and the files read, on the first /ui request: a cold `submit`
  that never serves the dashboard pays nothing for it (bench/cold_start.py).
- Only the files found in `ui_static/` (one flat folder) have names here, so no request path
  can reach anything else on disk.
- The Content-Security-Policy allows only this origin's scripts and styles (no inline code, no
  CDN), no framing, and requires Trusted Types, so even a future `innerHTML = data` would throw
  instead of parsing user data as markup.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from common.api.http import Request, Response
from common.api.problems import ProblemError

STATIC = Path(__file__).with_name("ui_static")
INDEX = "index.html"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # for browsers that predate frame-ancestors
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Small files, revalidated each time by ETag: a deploy is seen at once, unchanged files
    # cost a 304.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class _File:
    body: bytes
    content_type: str
    etag: str


def _read(root: Path) -> dict[str, _File]:
    files = {}
    for path in sorted(root.iterdir()):
        ctype = TYPES.get(path.suffix)
        if ctype is None or not path.is_file():
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[path.name] = _File(body, ctype, etag)
    return files


class UiFiles:
    """The dashboard's files, read once per instance on first use."""

    def __init__(self, root: Path = STATIC) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._files: dict[str, _File] | None = None

    def _all(self) -> dict[str, _File]:
        with self._lock:
            if self._files is None:
                self._files = _read(self._root)
            return self._files

    def serve(self, request: Request, asset: str | None) -> Response:
        if asset is None and not request.path.endswith("/"):
            # /ui → /ui/, so that the page's relative URLs (its files, the API one level up)
            # resolve the same wherever the service is mounted. Browsers keep the #fragment.
            return Response(308, b"", {**HEADERS, "Location": "ui/"})
        found = self._all().get(asset or INDEX)
        if found is None:
            raise ProblemError(404, "not-found", "No such file", headers=HEADERS)
        headers = {**HEADERS, "Content-Type": found.content_type, "ETag": found.etag}
        if found.etag in request.headers.get("If-None-Match", ""):
            return Response(304, b"", headers)
        return Response(200, found.body, headers)


FILES = UiFiles()
