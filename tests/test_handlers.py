"""The built-in preset handlers and the registry that finds presets, a user's own included."""

from __future__ import annotations

import pytest

from common.presets.base import JobContext, PermanentError
from common.presets.builtin import BUILTIN_HANDLERS
from common.presets.registry import Registry, load_registry
from common.settings import Settings, SettingsError

CTX = JobContext(job_id="j", attempt=1)
BUILTIN = {h.name: h for h in BUILTIN_HANDLERS}


def _run(name: str, content: str, metadata: dict[str, object] | None = None) -> object:
    handler = BUILTIN[name]
    return handler.run(CTX, content, handler.parse(content, metadata or {}))


def test_echo_returns_the_content() -> None:
    assert _run("echo", "héllo\n") == {"content": "héllo\n"}


def test_text_stats_counts_words_sentences_and_terms() -> None:
    text = "The cat sat. The cat ran! Did the dog? Dogs don't sit"
    stats = _run("text-stats", text, {"options": {"top": 2}})
    assert stats == {
        "characters": len(text),
        "words": 12,
        "sentences": 3,
        "lines": 1,
        "average_word_length": 3.25,  # 39 characters over 12 words (the apostrophe counts)
        "top_terms": [{"term": "cat", "count": 2}, {"term": "sat", "count": 1}],
    }


def test_text_stats_of_empty_content() -> None:
    stats = _run("text-stats", "")
    assert (stats["words"], stats["sentences"], stats["top_terms"]) == (0, 0, [])  # type: ignore[index]


def test_checksum_matches_known_vectors() -> None:
    out = _run("checksum", "abc", {"options": {"algorithms": ["sha256", "md5"]}})
    assert out == {
        "bytes": 3,
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "md5": "900150983cd24fb0d6963f7d28e17f72",
    }


@pytest.mark.parametrize(
    ("name", "metadata"),
    [
        ("text-stats", {"options": {"top": 0}}),
        ("text-stats", {"options": {"unknown": 1}}),
        ("checksum", {"options": {"algorithms": ["crc32"]}}),
        ("echo", {"options": {"x": 1}}),
    ],
)
def test_invalid_options_are_permanent_errors(name: str, metadata: dict[str, object]) -> None:
    with pytest.raises(PermanentError):
        BUILTIN[name].parse("x", metadata)


def test_user_presets_load_from_preset_modules(settings: Settings) -> None:
    tuned = settings.model_copy(update={"preset_modules": ["tests.support.extra_presets"]})
    registry = load_registry(tuned)
    assert registry.names() == ["checksum", "echo", "shout", "text-stats"]
    shout = registry.get("shout")
    assert shout is not None and shout.run(CTX, "hi", None) == {"shout": "HI"}


@pytest.mark.parametrize("module", ["tests.support.no_such_module", "tests.support.broken_presets"])
def test_bad_preset_modules_stop_start_up(settings: Settings, module: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_registry(settings.model_copy(update={"preset_modules": [module]}))
    assert "PRESET_MODULES" in str(err.value)


def test_a_preset_name_is_registered_once() -> None:
    with pytest.raises(SettingsError):
        Registry([BUILTIN["echo"], BUILTIN["echo"]])
