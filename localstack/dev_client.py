"""What a client needs to reach the local stack: `make dev` writes it, the CLI reads it.

`.local/dev-client.json` (mode 0600: it holds the secret that signs dev tokens) names the URLs
of `submit` and `sweep`, that secret, and the stack's database (for the operator commands that
talk to it: `limit`, `migrate`), so a second terminal needs no `export` lines. The CLI
uses it only when no flag or variable says otherwise, and never for a URL that is not loopback:
a token minted from the local secret has no business going anywhere else.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

from localstack.paths import ROOT

FILE_NAME = "dev-client.json"


class DevClientFileError(Exception):
    """The file exists but cannot be trusted or read; the message says what to do."""


@dataclass(frozen=True)
class DevClient:
    submit_url: str
    sweep_url: str
    secret: str
    user: str = "dev"
    database_url: str = ""  # files written before it was added have none


def default_path() -> Path:
    """Beside the dev stack's other state: DEV_DATA_DIR if set (as `make dev` reads it), else
    `.local/` in this checkout, wherever the command is run from."""
    return Path(os.environ.get("DEV_DATA_DIR", ROOT / ".local")) / FILE_NAME


def write(path: Path, client: DevClient) -> None:
    """Atomically, created 0600 from the start (never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(client), fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def read(path: Path | None = None) -> DevClient | None:
    """The file's contents, or None if there is none. A file others may read is refused, as
    ssh refuses a private key with loose permissions."""
    path = path or default_path()
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise DevClientFileError(f"{path} is readable by others; run: chmod 600 {path}")
    try:
        data = json.loads(path.read_text())
        return DevClient(**{k: str(data[k]) for k in ("submit_url", "sweep_url", "secret")},
                         user=str(data.get("user", "dev")),
                         database_url=str(data.get("database_url", "")))
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise DevClientFileError(f"{path} is unreadable ({type(exc).__name__}); "
                                 "restart `make dev` to write it again") from None


def is_loopback(url: str) -> bool:
    """True for http(s) URLs on this machine only (127.0.0.0/8, ::1, localhost)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https"):
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
