"""Owners' webhook signing secrets: made, sealed for storage, and used to sign (Standard Webhooks).

Signing is the `standardwebhooks` package (the spec's reference library; pure standard library,
no dependency): `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one
signature per valid secret (the current one, and the previous one during a rotation's grace),
space-separated, as the spec allows, so a receiver may switch secrets without losing a delivery.

At rest a secret is sealed with AES-GCM under WEBHOOK_SECRET_KEY (a key that lives in Secret
Manager, not in the database), with the owner as associated data, so a copy of the database or
a backup alone reveals no secret, and a sealed value moved to another owner does not open.
Without that key (local development) secrets are stored as they are, marked `plain:`.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from pydantic import SecretStr

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
SEALED, PLAIN = "aesgcm:", "plain:"


def new_secret() -> str:
    """24 random bytes, as the spec's `whsec_<base64>` form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(key: SecretStr) -> bytes:
    return base64.b64decode(key.get_secret_value())


def seal(secret: str, owner: str, key: SecretStr | None) -> str:
    if key is None:
        return PLAIN + secret
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # only when sealing

    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_key(key)).encrypt(nonce, secret.encode(), owner.encode())
    return SEALED + base64.b64encode(nonce + sealed).decode()


def unseal(stored: str, owner: str, key: SecretStr | None) -> str:
    """The secret; ValueError if it cannot be opened (wrong key, another owner's value)."""
    if stored.startswith(PLAIN):
        return stored[len(PLAIN):]
    if not stored.startswith(SEALED) or key is None:
        raise ValueError("sealed secret, and no WEBHOOK_SECRET_KEY to open it")
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = base64.b64decode(stored[len(SEALED):])
    try:
        return AESGCM(_key(key)).decrypt(raw[:12], raw[12:], owner.encode()).decode()
    except InvalidTag:
        raise ValueError("sealed secret does not open with WEBHOOK_SECRET_KEY") from None


def signature_header(secrets_: list[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """`v1,<sig>` for each secret, space-separated."""
    from standardwebhooks.webhooks import Webhook

    return " ".join(Webhook(s).sign(msg_id, timestamp, body) for s in secrets_)
