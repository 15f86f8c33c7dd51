"""The dashboard in a real headless browser (Debian's chromium through chromium-driver), on the
real stack: a functions-framework `submit` server, PostgreSQL, the Pub/Sub emulator and a real
`process` server that runs the jobs. Jobs are submitted over the HTTP API; the tests look at
what a person sees and do what a person does: sign in, read the queue, filter, open a job,
cancel and retry with confirmation, move around with the keyboard.

Screenshots go to a temporary folder; with UI_SCREENSHOTS=save they replace the ones in
docs/screenshots/ that docs/dashboard.md shows.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from common.store.states import JobState
from tests.process_fixtures import Pipeline
from tests.support.browser import axe_source, save_small_png, start_chromium
from tests.support.paths import ROOT

pytestmark = pytest.mark.timeout(600)

MARKUP = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
NONE = "\u2013"  # what the page shows for a time it does not have (an en dash)
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    driver = start_chromium()
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Dashboard:
    """One signed-out browser tab on a real `submit` server, and the API beside it."""

    driver: Any
    url: str
    pipeline: Pipeline
    shots: Path

    def token(self, owner: str = "alice") -> str:
        return self.pipeline.api.token(owner)

    def call(self, method: str, path: str, body: Any = None, owner: str = "alice") -> Any:
        req = urllib.request.Request(
            self.url + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token(owner)}",
                     "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def submit(self, preset: str, content: str = "hello", owner: str = "alice",
               **body: Any) -> str:
        job = self.call("POST", "/jobs", {"preset": preset, "content": content, **body}, owner)
        return str(job["id"])

    def open(self, fragment: str = "/") -> None:
        self.driver.get(f"{self.url}/ui/#{fragment}")

    def wait(self, check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
                lambda _d: check()
            )
        except TimeoutException:
            main = self.js("return document.getElementById('main').innerText")
            logged = [e["message"] for e in self.driver.get_log("browser")]
            raise AssertionError(f"waited for {what}; the page shows:\n{main}\n"
                                 f"and the console says: {logged}") from None

    def js(self, code: str, *args: Any) -> Any:
        return self.driver.execute_script(code, *args)

    def texts(self, css: str) -> list[str]:
        return list(self.js(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent.trim())",
            css))

    def click(self, css: str, text: str | None = None) -> None:
        """Click the first match; found again if the page re-rendered it meanwhile (a poll
        redraws the workflow and job pages: the element found may be gone by the click)."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By

        for _ in range(20):
            try:
                for el in self.driver.find_elements(By.CSS_SELECTOR, css):
                    if text is None or el.text.strip() == text:
                        el.click()
                        return
            except StaleElementReferenceException:
                time.sleep(0.1)
                continue
            break
        raise AssertionError(f"no {css} with text {text!r}")

    def console(self) -> list[dict[str, Any]]:
        """What the page logged since the last call (CSP violations are logged as errors)."""
        return list(self.driver.get_log("browser"))

    def shot(self, name: str, height: int = 760) -> Path:
        """The window's view as a small PNG; `height` grows the window for a long page."""
        path = self.shots / f"{name}.png"
        self.js("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
        self.driver.set_window_size(1200, height + 140)  # the window's frame takes ~140 px
        try:
            size = save_small_png(self.driver.get_screenshot_as_png(), path)
        finally:
            self.driver.set_window_size(1200, 900)
        assert 3_000 < size < 200_000, (name, size)
        return path

    def axe(self) -> list[str]:
        """axe-core's WCAG A/AA violations on the page as it is now, one line each."""
        if not self.js("return typeof window.axe === 'object'"):
            self.js(axe_source())
        found = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}})"
            ".then(r => done(r.violations.map(v => v.id + ': ' + v.help + ' at ' +"
            " v.nodes.map(n => n.target.join(' ') + ' ' + (n.failureSummary || '')).join('; '))))"
            ".catch(e => done(['axe failed: ' + e]));",
            WCAG,
        )
        return list(found)


@pytest.fixture()
def dash(chromium: Any, pipeline: Pipeline, submit_server: str, tmp_path: Path) -> Dashboard:
    """`pipeline` first: the submit server then inherits its settings (the chaos preset)."""
    shots = ROOT / "docs" / "screenshots" if os.environ.get("UI_SCREENSHOTS") == "save" \
        else tmp_path
    chromium.get(submit_server + "/ui/")
    chromium.execute_script("sessionStorage.clear()")
    chromium.get_log("browser")  # start counting from here
    return Dashboard(chromium, submit_server, pipeline, shots)


def _sign_in_by_link(dash: Dashboard, owner: str = "alice") -> None:
    token = dash.token(owner)
    dash.driver.get(f"{dash.url}/ui/#token={token}")
    dash.wait(lambda: dash.texts("main h1") == ["Overview"], "the overview")
    assert dash.js("return sessionStorage.getItem('jobs.token')") == token
    assert token not in dash.driver.current_url  # the fragment was cleared
    assert dash.driver.current_url.endswith("/ui/#/")
    dash.js("sessionStorage.setItem('jobs.pollMs', '250')")


def _counts(dash: Dashboard) -> dict[str, str]:
    return dict(dash.js(
        "return [...document.querySelectorAll('.count')].map(e => [e.dataset.state, e.textContent])"
    ))


def _wait_state(dash: Dashboard, job_id: str, *states: JobState) -> None:
    dash.pipeline.wait(job_id, *states)


def test_dashboard_shows_the_queue_and_steers_it(dash: Dashboard) -> None:
    _sign_in_by_link(dash)
    dash.driver.refresh()  # polls every 250 ms from now on
    dash.wait(lambda: _counts(dash).get("PENDING") == "0", "an empty queue")
    # Jobs arrive in waves while the overview polls.
    done = []
    for wave, content in enumerate(["Hello there.", "General Kenobi!"], start=1):
        done.append(dash.submit("echo", content))
        dash.pipeline.wait(done[-1], JobState.COMPLETED)
        dash.wait(lambda n=wave: dash.texts("#finished") == [str(n)], f"{wave} finished")
    done.append(dash.submit("text-stats", "One. Two words. Three words here."))
    broken = dash.submit("chaos", "x", metadata={"options": {"fail_permanently": True}},
                         max_attempts=1)
    sleeper = dash.submit("chaos", "x", metadata={"options": {"sleep_s": 120}})
    dash.pipeline.wait(done[-1], JobState.COMPLETED)
    dash.pipeline.wait(broken, JobState.FAILED)
    dash.pipeline.wait(sleeper, JobState.PROCESSING)
    want = {"WAITING": "0", "PENDING": "0", "PROCESSING": "1", "COMPLETED": "3", "FAILED": "1",
            "CANCELLED": "0"}
    dash.wait(lambda: _counts(dash) == want, f"the depth per state {want}")
    dash.wait(lambda: dash.texts("#finished") == ["4"], "four finished")
    assert dash.texts("#throughput") == ["0.8 jobs/min"]  # 4 finishes in 5 minutes
    # The history is the server's: the same after a reload (a tab's own samples would be gone).
    hour_label = "return document.querySelector('#history-hour svg').getAttribute('aria-label')"
    ended = "3 completed, 1 failed, 0 cancelled"
    dash.wait(lambda: ended in dash.js(hour_label), "the hour's history")
    dash.driver.refresh()
    dash.wait(lambda: ended in (dash.js("const e = document.querySelector('#history-hour svg');"
                                        "return e ? e.getAttribute('aria-label') : ''")),
              "the same history after a reload")
    day = dash.js("return document.querySelector('#history-day svg').getAttribute('aria-label')")
    assert ended in day and "last day" in day
    assert dash.js("return document.querySelectorAll('#history-hour rect.bar-completed').length") \
        >= 1
    assert dash.js("return document.querySelectorAll('#history-hour rect.bar-failed').length") == 1
    dash.shot("overview", height=1000)

    dash.click("#nav a", "Jobs")
    dash.wait(lambda: len(dash.texts("tbody tr")) == 5, "five jobs in the list")
    assert dash.texts("tbody tr td:nth-child(3) .badge") == [
        "PROCESSING", "FAILED", "COMPLETED", "COMPLETED", "COMPLETED"]  # newest first
    # Whole ids: made within a minute, their first characters are the same.
    assert dash.texts("tbody tr td:first-child a") == [sleeper, broken, *done[::-1]]
    assert dash.texts("tbody tr td.due") == [NONE] * 5
    dash.shot("jobs")

    _choose(dash, "state", "FAILED")
    dash.wait(lambda: dash.texts("tbody tr td:nth-child(2)") == ["chaos"], "the failed job")
    _choose(dash, "state", "")
    dash.wait(lambda: len(dash.texts("tbody tr")) == 5, "all five jobs again")
    _choose(dash, "preset", "echo")
    dash.wait(lambda: dash.texts("tbody tr td:nth-child(2)") == ["echo", "echo"], "echo jobs")
    assert "preset=echo" in dash.driver.current_url

    # Cancel the running job, confirming in the dialog; the worker ends it CANCELLED.
    dash.open(f"/jobs/{sleeper}")
    dash.wait(lambda: dash.texts(".fields .badge") == ["PROCESSING"], "the running job")
    dash.click(".actions button", "Cancel job…")
    dash.wait(lambda: dash.js("return !!document.querySelector('dialog[open]')"), "the dialog")
    assert dash.texts("dialog h2") == ["Cancel this job?"]
    dash.click("dialog button", "Cancel job")
    dash.wait(lambda: dash.texts(".fields .badge") == ["CANCELLED"], "the job cancelled")
    dash.wait(lambda: dash.texts(".timeline li .badge")[-1:] == ["CANCELLED"], "the timeline")
    timeline = dash.texts(".timeline li .reason")
    assert timeline[0] == "created" and "cancel-requested" in timeline
    assert dash.texts(".timeline li .badge")[-1] == "CANCELLED"
    assert dash.texts(".actions button") == []  # nothing left to do to it
    assert dash.call("GET", f"/jobs/{sleeper}")["state"] == "CANCELLED"
    dash.shot("job", height=1000)

    # Retry the failed job: back to PENDING, run again, FAILED again with a second attempt.
    dash.open(f"/jobs/{broken}")
    dash.wait(lambda: dash.texts(".failure strong") == ["PermanentError"], "the error")
    assert dash.texts(".failure pre") == ["chaos: asked to fail permanently"]
    before = len(dash.texts(".timeline li"))
    dash.click(".actions button", "Retry job…")
    dash.wait(lambda: dash.js("return !!document.querySelector('dialog[open]')"), "the dialog")
    dash.click("dialog button", "Retry job")
    dash.wait(lambda: len(dash.texts(".timeline li")) >= before + 3 and
              dash.texts(".fields .badge") == ["FAILED"], "the retried job to fail again")
    assert dash.call("GET", f"/jobs/{broken}")["attempts"] == 2
    assert "retried" in " ".join(dash.texts(".timeline li .reason"))
    dash.shot("job-failed", height=1180)

    problems = [e for e in dash.console() if e["level"] == "SEVERE"]
    assert problems == []


def _choose(dash: Dashboard, field: str, value: str) -> None:
    """Pick a filter and show. The page renders the form anew when a list arrives, so a
    select found just before that render is stale: find it again (a few times at most)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    for last in (False, False, True):
        try:
            Select(dash.driver.find_element(By.ID, field)).select_by_value(value)
            break
        except StaleElementReferenceException:
            if last:
                raise
    dash.click(".filters button", "Show")


def test_user_data_renders_as_text_and_no_script_runs(dash: Dashboard) -> None:
    markup_job = dash.submit("echo", MARKUP, metadata={"note": MARKUP, MARKUP: "<b>bold?</b>"})
    foreign = dash.submit("echo", "mallory's", owner="mallory")
    _wait_state(dash, markup_job, JobState.COMPLETED)

    _sign_in_by_link(dash)
    dash.open("/jobs")
    dash.wait(lambda: len(dash.texts("tbody tr")) == 1, "alice's one job")  # not mallory's
    dash.open(f"/jobs/{markup_job}")
    dash.wait(lambda: dash.texts(".fields .badge") == ["COMPLETED"], "the job")
    output, metadata = dash.texts("#main pre.json")[1], dash.texts("#main pre.json")[0]
    assert json.loads(output) == {"content": MARKUP}  # the echo shown as the text it is
    assert json.loads(metadata) == {"note": MARKUP, MARKUP: "<b>bold?</b>"}
    assert dash.js("return document.querySelectorAll('#main img, #main script, #main b').length") \
        == 0
    assert dash.js("return window.__pwned") is None
    assert dash.console() == []  # no error, and no CSP violation: nothing even tried to run

    # Another owner's job is as absent as a missing one.
    dash.open(f"/jobs/{foreign}")
    dash.wait(lambda: dash.texts("#main .error") == ["Job not found"], "not found")

    # The second line of defence is on: parsing markup into the page is refused outright.
    refused = dash.js(
        "try { document.getElementById('main').innerHTML = arguments[0]; return 'parsed'; }"
        " catch (e) { return e.name; }", MARKUP)
    assert refused == "TypeError"
    logged = [e["message"] for e in dash.console()]
    violations = [m for m in logged if "TrustedHTML" in m or "Content Security Policy" in m]
    assert len(violations) == 1 and "TrustedHTML" in violations[0]
    others = [m for m in logged if m not in violations]  # the foreign job's 404s, no more
    assert others and all(f"/jobs/{foreign}" in m and "404 (NOT FOUND)" in m for m in others)
    assert dash.js("return window.__pwned") is None


def test_keyboard_and_accessibility(dash: Dashboard) -> None:
    from selenium.webdriver.common.keys import Keys

    sleeper = dash.submit("chaos", "x", metadata={"options": {"sleep_s": 120}})
    _wait_state(dash, sleeper, JobState.PROCESSING)
    driver = dash.driver

    # Sign in with the keyboard alone: the token field has focus, Enter submits.
    dash.open("/")
    dash.wait(lambda: dash.texts("main h1") == ["Sign in"], "the sign-in form")
    assert dash.js("return document.activeElement.id") == "token"
    assert dash.texts("label[for=token]") == ["API token"]
    assert dash.axe() == []
    assert dash.texts("#nav a") == ["Overview", "Jobs", "Workflows", "Schedules"] and not dash.js(
        "return document.getElementById('nav').checkVisibility()")  # no views while signed out
    dash.shot("sign-in")
    field = driver.find_element("css selector", "#token")
    field.send_keys("not-a-token", Keys.ENTER)
    dash.wait(lambda: dash.texts("main [role=alert]") != [], "the refusal")
    assert dash.texts("main [role=alert]")[0].startswith("That token was refused")
    assert dash.js("return document.activeElement.id") == "token"  # back to the field
    field.clear()
    field.send_keys(dash.token(), Keys.ENTER)
    dash.wait(lambda: dash.texts("main h1") == ["Overview"], "the overview")
    dash.wait(lambda: _counts(dash).get("PROCESSING") == "1", "the counts")

    # Tab order: skip link, the four views, sign out, then the state tiles; focus is visible.
    driver.refresh()  # focus starts at the top of the document
    dash.wait(lambda: _counts(dash).get("PROCESSING") == "1", "the counts")
    seen = []
    for _ in range(11):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        seen.append(dash.js(
            "const e = document.activeElement, s = getComputedStyle(e);"
            "return [e.tagName + ':' + e.textContent.trim(), s.outlineStyle,"
            " parseFloat(s.outlineWidth)]"))
    assert [s[0] for s in seen] == [
        "A:Skip to content", "A:Overview", "A:Jobs", "A:Workflows", "A:Schedules",
        "BUTTON:Sign out", "A:WAITING0 jobs: show them", "A:PENDING0 jobs: show them",
        "A:PROCESSING1 jobs: show them",
        "A:COMPLETED0 jobs: show them", "A:FAILED0 jobs: show them"], seen
    assert all(style != "none" and width >= 2 for _, style, width in seen), seen
    assert dash.axe() == []

    for _ in range(2):
        driver.switch_to.active_element.send_keys(Keys.SHIFT, Keys.TAB)  # back to PROCESSING
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    dash.wait(lambda: dash.texts("tbody tr td:nth-child(3) .badge") == ["PROCESSING"], "list")
    assert dash.js("return document.activeElement.tagName") == "H1"  # focus moved to the view
    assert dash.axe() == []

    # A job's actions are real buttons; the confirmation traps focus and Escape backs out.
    dash.open(f"/jobs/{sleeper}")
    dash.wait(lambda: dash.texts(".actions button") == ["Cancel job…"], "the cancel button")
    assert dash.axe() == []
    button = driver.find_element("css selector", ".actions button")
    assert button.tag_name == "button"
    button.send_keys(Keys.ENTER)
    dash.wait(lambda: dash.js("return !!document.querySelector('dialog[open]')"), "the dialog")
    assert dash.js("return document.activeElement.textContent") == "Keep it"
    assert dash.axe() == []
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    dash.wait(lambda: not dash.js("return !!document.querySelector('dialog')"), "no dialog")
    assert dash.js("return document.activeElement.textContent") == "Cancel job…"
    assert dash.call("GET", f"/jobs/{sleeper}")["state"] == "PROCESSING"  # nothing was done
    dash.call("POST", f"/jobs/{sleeper}/cancel")  # let the worker go
    # axe does see contrast: pale grey text on white is reported.
    dash.js("const p = document.createElement('p'); p.textContent = 'pale';"
            "p.style.color = '#c0c0c0'; document.getElementById('main').append(p)")
    assert [v.split(":")[0] for v in dash.axe()] == ["color-contrast"]
    severe = [e["message"] for e in dash.console() if e["level"] == "SEVERE"]
    assert len(severe) == 1 and "/stats" in severe[0] and "401" in severe[0]  # the bad token


def test_an_expired_token_signs_out(dash: Dashboard) -> None:
    dash.driver.get(f"{dash.url}/ui/#token=expired.or.forged")
    # The form may show before the API's 401 comes back: wait for the form with the refusal.
    dash.wait(lambda: dash.texts("main h1") == ["Sign in"]
              and "refused" in " ".join(dash.texts("main [role=alert]")),
              "the sign-in form again, saying the token was refused")
    assert dash.js("return sessionStorage.getItem('jobs.token')") is None
    # the API said 401 once; that is the only thing logged
    assert [e for e in dash.console() if "401" not in e["message"]] == []


def test_optional_fields_show_when_present(dash: Dashboard, engine: Engine) -> None:
    """`not_before` (a retry's wait) from the store as it is; `progress`, which a newer API adds,
    by giving the page's own fetch a job that has it."""
    from sqlalchemy import text

    from common.store.models import NewJob

    job, _ = dash.pipeline.store.create("hs256:alice", NewJob(preset="echo", content="later"))
    with engine.connect() as conn:
        conn.execute(text("UPDATE jobs SET not_before = now() + interval '1 hour' WHERE id = :id"),
                      {"id": job.id})
    _sign_in_by_link(dash)
    dash.open(f"/jobs/{job.id}")
    dash.wait(lambda: "Due" in dash.texts(".fields dt"), "the due field")
    assert "Progress" not in dash.texts(".fields dt")

    dash.js("""
        const real = window.fetch;
        window.fetch = async (url, init) => {
          const res = await real(url, init);
          if (!/\\/jobs\\/[0-9a-f-]+$/.test(new URL(url).pathname)) return res;
          const job = await res.json();
          job.progress = {fraction: 0.42, note: 'chunk 3 of 7'};
          return new Response(JSON.stringify(job), {status: res.status, headers: res.headers});
        };""")
    dash.open("/jobs")
    dash.open(f"/jobs/{job.id}")
    dash.wait(lambda: "Progress" in dash.texts(".fields dt"), "the progress field")
    assert dash.js("return document.querySelector('.fields progress').value") == 42
    assert "42%" in dash.texts(".fields dd")[1] and "chunk 3 of 7" in dash.texts(".fields dd")[1]
    assert dash.axe() == []


def test_a_job_shows_its_priority_key_and_why_and_until_when_it_waits(dash: Dashboard) -> None:
    """Jobs parked and booked by a key's rate (made with the store's own claims, as a worker
    would): the job page names the priority, the key, the reason and the time; a waiting the
    API reports with markup in it is shown as text."""
    from common.store.models import NewJob

    store, owner = dash.pipeline.store, "hs256:alice"
    store.set_key_limit(owner, "api", max_starts=1, interval_s=45)  # a slot every 45 s
    jobs = [store.create(owner, NewJob(preset="echo", content=str(i), priority=9,
                                       limit_key="api"))[0] for i in range(3)]
    assert [store.claim(j.id).reason for j in jobs] == ["claimed", "held", "deferred"]
    booked = dash.call("GET", f"/jobs/{jobs[1].id}")["waiting"]
    parked = dash.call("GET", f"/jobs/{jobs[2].id}")["waiting"]
    assert (booked["reason"], parked["reason"]) == ("rate-reserved", "rate:key")

    def row(term: str) -> str:
        return str(dash.js(
            "const dt = [...document.querySelectorAll('.fields dt')]"
            ".find(e => e.textContent === arguments[0]); "
            "return dt ? dt.nextElementSibling.textContent : null", term))

    _sign_in_by_link(dash)
    dash.open(f"/jobs/{jobs[2].id}")
    dash.wait(lambda: "Waiting" in dash.texts(".fields dt"), "the waiting field")
    assert (row("Priority"), row("Limit key")) == ("9", "api")
    assert row("Waiting").startswith("rate:key (api): its key's rate has no start slot near; "
                                      "next slot 2")
    assert parked["until"] is not None and dash.js(
        "const dt = [...document.querySelectorAll('.fields dt')]"
        ".find(e => e.textContent === 'Waiting'); "
        "return dt.nextElementSibling.querySelector('time').getAttribute('datetime')"
    ) == parked["until"]
    dash.open(f"/jobs/{jobs[1].id}")
    dash.wait(lambda: row("Waiting").startswith("rate-reserved (api): a start slot is booked; "
                                                "starts 2"), "the booked slot")
    dash.open(f"/jobs/{jobs[0].id}")  # PROCESSING: it waits on nothing
    dash.wait(lambda: dash.texts(".fields .badge") == ["PROCESSING"], "the running job")
    assert "Waiting" not in dash.texts(".fields dt") and row("Priority") == "9"
    assert dash.axe() == []

    dash.js("""
        const real = window.fetch;
        window.fetch = async (url, init) => {
          const res = await real(url, init);
          if (!/\\/jobs\\/[0-9a-f-]+$/.test(new URL(url).pathname)) return res;
          const job = await res.json();
          job.waiting = {reason: arguments[0], limit: arguments[0], until: null};
          return new Response(JSON.stringify(job), {status: res.status, headers: res.headers});
        };""".replace("arguments[0]", json.dumps(MARKUP)))
    dash.open("/jobs")
    dash.open(f"/jobs/{jobs[2].id}")
    dash.wait(lambda: MARKUP in row("Waiting"), "the injected waiting")
    assert row("Waiting") == f"{MARKUP} ({MARKUP}): on a limit"
    assert dash.js("return document.querySelectorAll('#main img, #main script').length") == 0
    assert dash.js("return window.__pwned") is None
    assert [e for e in dash.console() if e["level"] == "SEVERE"] == []


def test_the_list_pages_with_the_api_cursor(dash: Dashboard) -> None:
    from common.store.models import NewJob

    made = [dash.pipeline.store.create("hs256:alice", NewJob(preset="echo", content=str(i)))[0]
            for i in range(23)]  # straight into the store: nothing runs them
    newest_first = [str(j.id) for j in reversed(made)]
    _sign_in_by_link(dash)
    dash.open("/jobs?state=PENDING")
    rows = "return [...document.querySelectorAll('tbody tr')].map(r => r.dataset.job)"
    dash.wait(lambda: dash.js(rows) == newest_first[:20], "the first page")
    assert dash.texts(".pager a") == ["Older »"]
    dash.click(".pager a", "Older »")
    dash.wait(lambda: dash.js(rows) == newest_first[20:], "the second page")
    assert "cursor=" in dash.driver.current_url
    assert dash.js("return document.getElementById('state').value") == "PENDING"  # kept
    assert dash.texts(".pager a") == ["« Newest"]
    dash.driver.back()
    dash.wait(lambda: dash.js(rows) == newest_first[:20], "the first page again")


def test_schedules_and_a_job_s_callback_trace_and_webhook_state(dash: Dashboard) -> None:
    """The schedules page lists each schedule with its next fire; a schedule's page shows the
    job it creates and its events, a fire linking to the job it made. A job's page shows its
    callback URL, its trace id and whatever webhook state the API reports, as text."""
    from datetime import timedelta

    from common.store.models import NewJob
    from common.store.schedule_models import DueSchedule

    store = dash.pipeline.store
    ticking = dash.call("POST", "/schedules", {"cron": "*/5 * * * *", "timezone": "Europe/Riga",
                                               "job": {"preset": "echo", "content": "tick",
                                                       "metadata": {"note": MARKUP}}})
    paused = dash.call("POST", "/schedules", {"cron": "0 9 * * MON", "enabled": False,
                                              "job": {"preset": "text-stats", "content": "x"}})
    dash.call("POST", "/schedules", {"cron": "0 9 * * *", "job": {"preset": "echo",
                                                                  "content": "x"}}, "mallory")
    due = DueSchedule.model_validate({**ticking, "next_fire_at": ticking["next_fire_at"]})
    taken, fired_job = store.fire(due, due.next_fire_at, due.next_fire_at + timedelta(minutes=5),
                                  0)
    assert taken and fired_job is not None

    _sign_in_by_link(dash)
    dash.click("#nav a", "Schedules")
    dash.wait(lambda: len(dash.texts("tbody tr")) == 2, "alice's two schedules")  # not mallory's
    assert dash.texts("tbody tr td:first-child a") == [paused["id"], ticking["id"]]
    assert dash.texts("tbody tr td:nth-child(5)") == ["paused", "on"]
    nexts = dash.texts("tbody tr td.next")
    assert nexts[0] == NONE and nexts[1] != NONE
    assert dash.js("return document.querySelector('#nav a[aria-current]').textContent") == \
        "Schedules"
    assert dash.axe() == []
    dash.shot("schedules")

    dash.click("tbody tr td:first-child a", ticking["id"])
    dash.wait(lambda: dash.texts(".events tbody td.kind") == ["fired"], "the fire event")
    assert dash.texts(".events tbody td a") == [str(fired_job)]
    assert json.loads(dash.texts("#main pre.json")[0]) == {"note": MARKUP}  # shown as text
    assert dash.js("return window.__pwned") is None
    assert "Europe/Riga" in dash.texts(".fields dd")
    assert dash.axe() == []
    dash.shot("schedule", height=1000)
    # Pause and resume, each confirmed in the dialog, as a job's cancel is.
    dash.click(".actions button", "Pause schedule…")
    dash.wait(lambda: dash.js("return !!document.querySelector('dialog[open]')"), "the dialog")
    assert dash.texts("dialog h2") == ["Pause this schedule?"] and dash.axe() == []
    dash.click("dialog button", "Pause schedule")
    dash.wait(lambda: dash.texts(".actions button") == ["Resume schedule…"], "paused")
    assert dash.texts(".fields .badge")[0] == "paused"
    assert dash.call("GET", f"/schedules/{ticking['id']}")["enabled"] is False
    assert dash.js("return document.activeElement.textContent") == "Resume schedule…"
    dash.click(".actions button", "Resume schedule…")
    dash.wait(lambda: dash.js("return !!document.querySelector('dialog[open]')"), "the dialog")
    dash.click("dialog button", "Resume schedule")
    dash.wait(lambda: dash.texts(".actions button") == ["Pause schedule…"], "resumed")
    assert dash.call("GET", f"/schedules/{ticking['id']}")["enabled"] is True
    dash.click(".events tbody td a")
    dash.wait(lambda: dash.texts("main h1 .mono") == [str(fired_job)], "the job it made")

    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    job, _ = store.create("hs256:alice", NewJob(preset="echo", content="x",
                                                callback_url="https://example.com/hook?a=<b>"),
                          traceparent=f"00-{trace}-00f067aa0ba902b7-01")
    dash.open(f"/jobs/{job.id}")
    dash.wait(lambda: "Callback URL" in dash.texts(".callback dt"), "the callback")
    assert dash.texts(".callback dd")[0] == "https://example.com/hook?a=<b>"
    # The API's own webhook state: nothing sent before the job ends, and why.
    # Each of its fields a row of its own, so none is squeezed into one grid cell.
    assert dash.texts(".callback dt")[1:3] == ["Webhook state", "Webhook waiting for"]
    assert dash.texts(".callback dd")[1] == "awaiting-end"
    assert "null" not in dash.texts(".callback dd")
    assert trace in dash.texts(".fields dd")
    # A delivery that failed, its error holding markup: shown field by field, as text.
    dash.js("""
        const real = window.fetch;
        window.fetch = async (url, init) => {
          const res = await real(url, init);
          if (!/\\/jobs\\/[0-9a-f-]+$/.test(new URL(url).pathname)) return res;
          const job = await res.json();
          job.webhook = {state: 'pending', waiting_for: 'retry', attempts: 2, last_status: 500,
                         last_error: arguments[0], delivered_at: null};
          return new Response(JSON.stringify(job), {status: res.status, headers: res.headers});
        };""".replace("arguments[0]", json.dumps(MARKUP)))
    dash.open("/jobs")
    dash.open(f"/jobs/{job.id}")
    dash.wait(lambda: "Webhook state" in dash.texts(".callback dt"), "the webhook's state")
    shown = " ".join(dash.texts(".callback dd"))
    assert "pending" in shown and "500" in shown and MARKUP in shown
    assert dash.js("return document.querySelectorAll('#main img, #main script').length") == 0
    assert dash.js("return window.__pwned") is None
    assert dash.axe() == []
    assert [e for e in dash.console() if e["level"] == "SEVERE"] == []


def test_bulk_cancel_and_retry_confirm_with_the_count(dash: Dashboard) -> None:
    """The jobs list's bulk buttons act on what its filters show: the dialog names the count
    the server gave for a dry run; dismissing it changes nothing; confirming moves exactly
    those jobs (not one submitted while the dialog was open), and says how many."""
    from common.store.models import NewJob

    owner = "hs256:alice"
    store = dash.pipeline.store
    pending = [store.create(owner, NewJob(preset="echo", content=str(i)))[0] for i in range(3)]
    store.create(owner, NewJob(preset="text-stats", content="other preset"))
    bobs = store.create("hs256:bob", NewJob(preset="echo", content="bob's"))[0]
    _sign_in_by_link(dash)
    dash.open("/jobs?state=PENDING&preset=echo")
    dash.wait(lambda: len(dash.texts("tbody tr")) == 3, "three pending echo jobs")
    assert dash.texts(".bulk button") == ["Cancel matching…"]  # no retry for PENDING jobs

    # Dismissed: nothing changes.
    dash.click(".bulk button", "Cancel matching…")
    dash.wait(lambda: dash.js("return !!document.querySelector('dialog[open]')"), "the dialog")
    assert dash.texts("dialog h2") == ["Cancel 3 jobs?"]
    assert "3 jobs match (state PENDING, preset echo)" in dash.texts("dialog p")[0]
    assert dash.axe() == []
    dash.shot("bulk-confirm")
    dash.click("dialog button", "Keep them")
    dash.wait(lambda: not dash.js("return !!document.querySelector('dialog[open]')"), "closed")
    assert all(store.get(owner, j.id).state is JobState.PENDING for j in pending)

    # Confirmed, with a fourth job arriving while the dialog is open: three are cancelled.
    dash.click(".bulk button", "Cancel matching…")
    dash.wait(lambda: dash.texts("dialog h2") == ["Cancel 3 jobs?"], "the dialog again")
    late = store.create(owner, NewJob(preset="echo", content="late"))[0]
    dash.click("dialog button", "Cancel 3 jobs")
    dash.wait(lambda: dash.texts(".bulk-notice p") ==
              ["Cancelled 3 jobs; asked 0 jobs running to stop."], "the outcome")
    assert dash.js("return document.getElementById('status').textContent") == \
        "Cancelled 3 jobs; asked 0 jobs running to stop."
    assert [store.get(owner, j.id).state for j in pending] == [JobState.CANCELLED] * 3
    assert store.get(owner, late.id).state is JobState.PENDING
    assert store.get("hs256:bob", bobs.id).state is JobState.PENDING
    dash.wait(lambda: dash.texts("tbody tr td:first-child a") == [str(late.id)],
              "the list reloaded: only the late job is left")

    # Retry on a filter with no FAILED job: nothing to confirm.
    dash.open("/jobs?state=FAILED")
    dash.wait(lambda: dash.texts(".bulk button") == ["Cancel matching…", "Retry matching…"][1:],
              "the retry button")
    dash.click(".bulk button", "Retry matching…")
    dash.wait(lambda: dash.texts(".bulk-notice p") == ["No job matches: nothing to retry."],
              "nothing to retry")
    assert not dash.js("return !!document.querySelector('dialog[open]')")
    assert [e for e in dash.console() if e["level"] == "SEVERE"] == []


def test_a_workflow_is_drawn_as_its_graph_with_each_step_s_state(dash: Dashboard) -> None:
    """The workflow page draws the graph by depth with each step's state and the progress,
    keeps user data as text, links each step to its job and the job back to its workflow, and
    cancels after a confirmation."""
    steps = [
        {"name": "script", "preset": "echo", "content": "s"},
        {"name": "audio", "preset": "chaos", "content": "x", "after": ["script"],
         "metadata": {"options": {"sleep_s": 120}}},
        {"name": "images", "preset": "echo", "content": "i", "after": ["script"]},
        {"name": "render", "preset": "echo", "content": "r", "after": ["audio", "images"]},
    ]
    wf = dash.call("POST", "/workflows", {"name": MARKUP, "steps": steps})
    ids = {st["name"]: st["job_id"] for st in wf["steps"]}
    dash.pipeline.wait(ids["images"], JobState.COMPLETED)
    dash.pipeline.wait(ids["audio"], JobState.PROCESSING)
    _sign_in_by_link(dash)
    dash.open(f"/workflows/{wf['id']}")
    node_states = ("return Object.fromEntries([...document.querySelectorAll('svg.graph a.node')]"
                   ".map(a => [a.dataset.step, a.querySelector('text.state').textContent]))")
    want = {"script": "COMPLETED", "audio": "PROCESSING", "images": "COMPLETED",
            "render": "WAITING"}
    dash.wait(lambda: dash.js(node_states) == want, f"the graph's states {want}")
    assert dash.texts(".progress-text") == ["2 / 4 steps"]
    # Laid out by depth: script, then audio and images side by side, then render.
    xs = dash.js("return Object.fromEntries([...document.querySelectorAll('svg.graph a.node')]"
                 ".map(a => [a.dataset.step, +a.querySelector('rect').getAttribute('x')]))")
    assert xs["script"] < xs["audio"] == xs["images"] < xs["render"]
    assert dash.js("return document.querySelectorAll('svg.graph path.edge').length") == 4
    assert MARKUP in dash.texts("dl.fields dd")[0] and dash.js("return window.__pwned") is None
    assert dash.axe() == []
    dash.shot("workflow")
    # A step's job page links back to its workflow.
    dash.click("table.steps a", "render")
    dash.wait(lambda: "step render of workflow" in " ".join(dash.texts("dl.fields dd")),
              "the job's workflow")
    assert dash.texts("dl.fields .badge")[0] == "WAITING"
    dash.click("dl.fields a")
    dash.wait(lambda: dash.js(node_states) == want, "back on the workflow")
    dash.click(".actions button", "Cancel workflow…")
    dash.wait(lambda: dash.js("return !!document.querySelector('dialog[open]')"), "the dialog")
    dash.click("dialog button", "Cancel workflow")
    dash.wait(lambda: dash.js(node_states).get("render") == "CANCELLED", "render cancelled")
    dash.wait(lambda: dash.texts(".progress-text") == ["4 / 4 steps"], "every step ended")
    assert dash.call("GET", f"/workflows/{wf['id']}")["state"] == "CANCELLED"
    dash.open("/workflows")
    dash.wait(lambda: dash.texts("tbody td:nth-child(4)") == ["4 / 4"], "the list")
    assert [e["message"] for e in dash.console() if e["level"] == "SEVERE"] == []


@pytest.fixture()
def cloud_run_executions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long jobs run in Cloud Run executions here (only the links depend on it: no job in
    these tests starts one). Set before `dash`, so the submit server inherits it."""
    monkeypatch.setenv("LONG_JOB_EXECUTOR", "cloud-run")
    monkeypatch.setenv("CLOUD_RUN_JOB", "jobs-execute")
    monkeypatch.setenv("CLOUD_RUN_REGION", "europe-west1")


def test_a_long_job_links_to_its_execution_s_logs(cloud_run_executions: None, dash: Dashboard,
                                                  engine: Engine) -> None:
    """The job page names a long job's execution and links to its logs and its page in the
    Google Cloud console (issue 29); a name that is not Cloud Run's shows as text, unlinked."""
    from urllib.parse import unquote

    from sqlalchemy import text

    from common.store.models import NewJob

    jobs = {}
    for name in ("jobs-execute-x7k2p", MARKUP):
        job, _ = dash.pipeline.store.create("hs256:alice", NewJob(preset="demo", content="1"))
        with engine.connect() as conn:
            conn.execute(text("UPDATE jobs SET state = 'PROCESSING', attempts = 2, "
                              "lease_expires_at = now() + interval '1 hour', "
                              "execution = :name, execution_attempt = 2 WHERE id = :id"),
                         {"id": job.id, "name": name})
        jobs[name] = str(job.id)
    _sign_in_by_link(dash)
    dash.open(f"/jobs/{jobs['jobs-execute-x7k2p']}")
    dash.wait(lambda: "Execution" in dash.texts(".fields dt"), "the execution field")
    field = dash.texts(".fields dt").index("Execution")
    assert dash.texts(".fields dd")[field] == "jobs-execute-x7k2p (attempt 2) · Logs · Cloud Run"
    links = dash.js("return [...document.querySelectorAll('.fields dd a[target=_blank]')]"
                    ".map(a => [a.textContent, a.href, a.rel])")
    (logs_text, logs, rel), (page_text, page, _) = links
    assert (logs_text, page_text, rel) == ("Logs", "Cloud Run", "noopener noreferrer")
    assert logs.startswith("https://console.cloud.google.com/logs/query;query=")
    assert 'labels."run.googleapis.com/execution_name"="jobs-execute-x7k2p"' in unquote(logs)
    assert page.startswith("https://console.cloud.google.com/run/jobs/executions/details/"
                           "europe-west1/jobs-execute-x7k2p?project=")
    assert dash.axe() == []

    dash.open(f"/jobs/{jobs[MARKUP]}")
    dash.wait(lambda: "Execution" in dash.texts(".fields dt"), "the other execution field")
    field = dash.texts(".fields dt").index("Execution")
    assert dash.texts(".fields dd")[field] == f"{MARKUP} (attempt 2)"
    assert dash.js("return document.querySelectorAll('.fields dd a').length") == 0
    assert dash.js("return window.__pwned === undefined")
    assert [e for e in dash.console() if e["level"] == "SEVERE"] == []
