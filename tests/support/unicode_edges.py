"""Unicode edge cases for the submit fuzzing, and how each part of a request carries them.

A lone surrogate cannot be encoded as UTF-8, so it reaches a server in one of two ways: as a
JSON escape (`"\\ud800"`, valid JSON naming an invalid string) or as the bytes Python's
`surrogatepass` writes (invalid UTF-8). Headers travel as bytes a WSGI server decodes as
Latin-1; query strings and paths as percent-encoded bytes. The `wire_*` helpers put a string
on the wire as a client sending its UTF-8 (surrogates and all) would, so the test client never
refuses to send what a real client can.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import quote

# name -> string. Kept small and explicit: each name appears in failure reports.
EDGES: dict[str, str] = {
    "lone-high-surrogate": "\ud800",
    "lone-low-surrogate": "\udfff",
    "surrogate-in-text": "ab\ud83dcd",
    "reversed-surrogate-pair": "\ude00\ud83d",
    "nul": "\x00",
    "nul-in-text": "a\x00b",
    "long-ascii": "a" * 20_000,
    "long-astral": "\U0001f642" * 3_000,  # 12,000 bytes of UTF-8
    "long-within-limits": "\u00e9" * 4_000,  # 8,000 bytes
    "rtl-override": "\u202eabc",
    "rtl-marks": "\u200f\u05e9\u05dc\u05d5\u05dd\u200f",  # Hebrew between RLMs
    "rtl-embedding": "\u202b\u0645\u0631\u062d\u0628\u0627\u202c",  # Arabic in RLE/PDF
    "combining": "e\u0301",
    "combining-pile": "a" + "\u0301" * 300,
    "emoji": "\U0001f642",
    "zwj-sequence": "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "astral-letters": "\U0001d573\U0001d58a\U0001d591\U0001d591\U0001d594",  # Fraktur
    "max-code-point": "\U0010ffff",
    "bom": "\ufeff",
    "bom-prefix": "\ufeffecho",
    "noncharacters": "\ufffe\uffff",
    "replacement-char": "\ufffd",
    "line-separators": "\u2028\u2029",
    "zero-width": "\u200b\u200c\u200d",
    "escape-and-delete": "\x1b[31m\x7f",
    "tab-and-newlines": "a\tb\nc\r",  # never in a header: no server would deliver one
    "fullwidth": "\uff45\uff43\uff48\uff4f",  # 'echo' in fullwidth letters
    "arabic-indic-digits": "\u0661\u0662",  # isdigit(), and int() reads 12
    "superscript-digit": "\u00b2",  # isdigit(), but int() refuses it
    "math-digit": "\U0001d7d7",  # isdigit(), and int() reads 9
}

# Strings PostgreSQL cannot store (jsonb and text refuse NUL; UTF-8 has no surrogates): a body
# field holding one must be refused, never accepted.
UNSTORABLE = frozenset(
    name for name, value in EDGES.items()
    if "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value)
)


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def wire_header(text: str) -> str:
    """A header value as a WSGI server hands it over: the sent UTF-8 bytes, read as Latin-1."""
    return utf8(text).decode("latin-1")


def wire_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{quote(utf8(k), safe='')}={quote(utf8(v), safe='')}"
                    for k, v in params.items())


def wire_path(segment: str) -> str:
    """One path segment, percent-encoded ('/' and '?' included)."""
    return quote(utf8(segment), safe="")


def json_bodies(body: object) -> dict[str, bytes]:
    """The two encodings of a JSON body: escaped (ASCII; surrogates as \\uXXXX escapes) and raw
    UTF-8 (surrogates as invalid bytes)."""
    return {
        "escaped": json.dumps(body).encode(),
        "raw": utf8(json.dumps(body, ensure_ascii=False)),
    }
