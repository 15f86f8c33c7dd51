"""How callers authenticate, in the OpenAPI document: bearer tokens always, and IAP's signed
header too when submit is behind Identity-Aware Proxy (AUTH_IAP_AUDIENCE). The dashboard reads
the document to tell that a person IAP let through needs no token (common/api/auth.py)."""

from __future__ import annotations

from typing import Any

from common.settings import Settings


def security_schemes(settings: Settings) -> dict[str, Any]:
    schemes: dict[str, Any] = {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "An HS256 or Google-signed ID token."},
    }
    if settings.auth_iap_audience:
        schemes["iap"] = {
            "type": "apiKey", "in": "header", "name": "x-goog-iap-jwt-assertion",
            "description": "Set by Identity-Aware Proxy in front of submit (ES256, issuer "
                           "https://cloud.google.com/iap): the person it let through.",
        }
    return schemes


def with_iap(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Behind IAP, every authenticated operation takes a bearer token or IAP's header."""
    if settings.auth_iap_audience:
        for operations in document["paths"].values():
            for op in operations.values():
                if op.get("security"):
                    op["security"] = [{"bearer": []}, {"iap": []}]
    return document
