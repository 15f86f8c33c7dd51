"""The presets that ship: echo, text-stats and checksum."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.presets.base import Handler, JobContext

WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*", re.UNICODE)
SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
# Very common English words carry no signal as "top terms".
STOPWORDS = frozenset(
    """a an and are as at be but by for from has have he her his i in is it its of on or she so
    that the their them they this to was were will with you your we our not no""".split()  # noqa: SIM905
)


def echo(ctx: JobContext, content: str, options: Any) -> dict[str, Any]:
    return {"content": content}


class TextStatsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top: int = Field(default=10, ge=1, le=100)


def text_stats(ctx: JobContext, content: str, options: TextStatsOptions) -> dict[str, Any]:
    words = [w.lower() for w in WORD.findall(content)]
    terms = Counter(w for w in words if w not in STOPWORDS and len(w) > 1)
    sentences = len(SENTENCE_END.findall(content)) or (1 if words else 0)
    return {
        "characters": len(content),
        "words": len(words),
        "sentences": sentences,
        "lines": content.count("\n") + 1 if content else 0,
        "average_word_length": round(sum(map(len, words)) / len(words), 2) if words else 0,
        "top_terms": [{"term": t, "count": c} for t, c in terms.most_common(options.top)],
    }


class ChecksumOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algorithms: list[Literal["sha256", "sha1", "md5", "blake2b"]] = Field(
        default=["sha256"], min_length=1, max_length=4
    )


# Hashed in chunks, so a large input reports progress and can be cancelled between them.
CHECKSUM_CHUNK = 64 * 1024


def checksum(ctx: JobContext, content: str, options: ChecksumOptions) -> dict[str, Any]:
    data = memoryview(content.encode())
    hashers = {alg: hashlib.new(alg, usedforsecurity=False) for alg in options.algorithms}
    total = len(data)
    for start in range(0, total, CHECKSUM_CHUNK):
        if ctx.cancelled():
            return {}
        chunk = data[start:start + CHECKSUM_CHUNK]
        for hasher in hashers.values():
            hasher.update(chunk)
        done = start + len(chunk)
        ctx.progress(done / total, f"{done} of {total} bytes")
    return {"bytes": total, **{alg: h.hexdigest() for alg, h in hashers.items()}}


BUILTIN_HANDLERS = (
    Handler("echo", echo, time_limit_s=10),
    Handler("text-stats", text_stats, TextStatsOptions, time_limit_s=30),
    Handler("checksum", checksum, ChecksumOptions, time_limit_s=30),
)
