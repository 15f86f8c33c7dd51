"""The built-in preset handlers (and `demo`, which make dev turns on) and the registry that
finds presets, a user's own included."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from common.presets.base import InvalidContent, JobContext, PermanentError, TransientError
from common.presets.builtin import BUILTIN_HANDLERS
from common.presets.demo import DEMO_HANDLER, SECONDS, DemoOptions, demo
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


def test_the_demo_preset_is_registered_only_when_enabled(settings: Settings) -> None:
    assert "demo" not in load_registry(settings).names()
    enabled = load_registry(settings.model_copy(update={"enable_demo_preset": True}))
    assert "demo" in enabled.names()


@pytest.mark.parametrize("content", ["0", "2", "2.5", "29.999", "30", "30.000"])
def test_demo_content_is_a_number_of_seconds_up_to_30(content: str) -> None:
    assert DEMO_HANDLER.parse(content, {}) == DemoOptions()


@pytest.mark.parametrize("content", ["", "30.001", "31", "-1", "1e1", " 2", "2 ", "2.", ".5",
                                     "02", "2.0001", "abc", "٣", "2\n", "1\u0000"])
def test_demo_refuses_any_other_content_as_content(content: str) -> None:
    with pytest.raises(InvalidContent) as err:
        DEMO_HANDLER.parse(content, {})
    assert "0 to 30" in str(err.value)
    # The OpenAPI pattern agrees: JSON Schema searches with it, and ECMAScript's `$` is
    # Python's `\Z` (it never matches before a final newline).
    assert re.search(SECONDS.replace("$", r"\Z"), content) is None


def _demo(content: str, options: DemoOptions, attempt: int = 1,
          cancelled: Callable[[], bool] = lambda: False,
          ) -> tuple[object, list[tuple[float, str | None]]]:
    reports: list[tuple[float, str | None]] = []
    ctx = JobContext(job_id="j", attempt=attempt, cancelled=cancelled,
                     progress=lambda f, n=None: reports.append((f, n)))
    return demo(ctx, content, options), reports


@pytest.mark.parametrize("options", [{"fail": 1}, {"fail": "true"}, {"fail_attempts": False},
                                     {"fail_attempts": "2"}, {"fail_attempts": 11}, {"x": 1}])
def test_demo_options_are_exactly_what_the_schema_says(options: dict[str, object]) -> None:
    with pytest.raises(PermanentError):
        DEMO_HANDLER.parse("1", {"options": options})


def test_demo_takes_an_integral_number_as_an_integer_as_json_schema_does() -> None:
    """Schemathesis sent `"fail_attempts": 5.0`, valid for the schema's `integer`."""
    assert DEMO_HANDLER.parse("1", {"options": {"fail_attempts": 5.0}}).fail_attempts == 5
    with pytest.raises(PermanentError):
        DEMO_HANDLER.parse("1", {"options": {"fail_attempts": 5.5}})


def test_demo_sleeps_reporting_its_progress_in_steps() -> None:
    out, reports = _demo("0.5", DemoOptions())
    assert out == {"slept_s": 0.5, "attempt": 1}
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[0] < 0.1 and fractions[-1] == 1.0
    assert len(reports) >= 3  # a tenth of a second per step: not one report for the whole sleep
    assert reports[-1][1] == "slept 0.5 of 0.5 s"


def test_demo_stops_at_once_when_cancelled() -> None:
    checks = 0

    def cancelled() -> bool:
        nonlocal checks
        checks += 1
        return checks > 3

    out, reports = _demo("30", DemoOptions(), cancelled=cancelled)
    assert set(out) == {"stopped_after_s"}  # type: ignore[arg-type]
    assert len(reports) == 3 and all(f < 1 for f, _ in reports)


def test_demo_fails_on_request() -> None:
    with pytest.raises(PermanentError, match="asked to fail"):
        _demo("0", DemoOptions(fail=True))
    with pytest.raises(TransientError, match="attempt 2 fails"):
        _demo("0", DemoOptions(fail_attempts=2), attempt=2)
    assert _demo("0", DemoOptions(fail_attempts=2), attempt=3)[0] == {"slept_s": 0, "attempt": 3}
