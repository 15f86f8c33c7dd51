"""The dashboard behind Identity-Aware Proxy (issue 26, item 8), in a real headless browser: a
person IAP let through is signed in as themselves, with no token to paste. IAP is played by a
small reverse proxy in front of a real `submit` server: like IAP, it keeps the person's session
in a cookie, refuses requests without it, and adds a freshly signed ES256
`x-goog-iap-jwt-assertion` to each request it passes on; submit verifies that against the JWK
set served locally. The page must send the session cookie with its API calls (it sent none:
`credentials: 'omit'`), and sees only that person's jobs."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.submit_fixtures import SubmitHarness
from tests.support.browser import start_chromium
from tests.support.google_tokens import IapTokenIssuer
from tests.support.paths import ROOT

pytestmark = pytest.mark.timeout(300)
AUDIENCE = "/projects/42/locations/europe-west1/services/jobs-submit"
ALICE_ID = "104000000000000000001"
COOKIE = "GCP_IAP_UID"


class IapStandIn:
    """Reverse proxy: /_iap_login sets the session cookie; anything else needs it."""

    def __init__(self, upstream: str, iap: IapTokenIssuer) -> None:
        self.passed = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self) -> None:
                if self.path == "/_iap_login":
                    self.send_response(302)
                    self.send_header("Set-Cookie", f"{COOKIE}={ALICE_ID}; Path=/; HttpOnly")
                    self.send_header("Location", "/ui/")
                    self.end_headers()
                    return
                if f"{COOKIE}={ALICE_ID}" not in (self.headers.get("Cookie") or ""):
                    self.send_response(401)  # IAP would send the person to Google's sign-in
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "cookie", "content-length",
                                                "x-goog-iap-jwt-assertion")}
                headers["x-goog-iap-jwt-assertion"] = iap.assertion(
                    sub=f"accounts.google.com:{ALICE_ID}", aud=AUDIENCE,
                    email="alice@example.com")
                request = urllib.request.Request(upstream + self.path, data=body,
                                                 headers=headers, method=self.command)
                try:
                    with urllib.request.urlopen(request, timeout=30) as resp:
                        status, out, got = resp.status, resp.read(), resp.headers
                except urllib.error.HTTPError as err:
                    status, out, got = err.code, err.read(), err.headers
                stand_in.passed += 1
                self.send_response(status)
                for key, value in got.items():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _relay

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture()
def behind_iap(submit_env: SubmitHarness) -> Iterator[tuple[str, str]]:
    from localstack.function_server import FunctionServer

    iap = IapTokenIssuer()
    env = {**submit_env.env, "AUTH_IAP_AUDIENCE": AUDIENCE, "AUTH_IAP_CERTS_URL": iap.certs_url,
           "AUTH_GOOGLE_ALLOWED": json.dumps(["alice@example.com"])}
    server = FunctionServer("submit", ROOT / "main.py", env, probe="/healthz")
    proxy = IapStandIn(server.url, iap)
    try:
        yield proxy.url, server.url
    finally:
        proxy.close()
        server.close()
        iap.stop()


def test_a_person_behind_iap_is_signed_in_as_themselves(
    behind_iap: tuple[str, str], submit_env: SubmitHarness,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    proxy, direct = behind_iap
    # Someone else's job, straight to submit with a service token: never on alice's page.
    other = urllib.request.Request(
        direct + "/jobs", method="POST", headers={**submit_env.auth("bob"),
                                                  "Content-Type": "application/json"},
        data=json.dumps({"preset": "echo", "content": "bob's"}).encode())
    with urllib.request.urlopen(other, timeout=30) as resp:
        assert resp.status == 202
    driver = start_chromium()
    try:
        driver.get(proxy + "/_iap_login")  # IAP's sign-in, then the dashboard
        # Alice's job, made through IAP as the page would: her cookie, no token.
        driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/jobs', {method: 'POST', credentials: 'same-origin', headers: "
            "{'Content-Type': 'application/json'}, body: JSON.stringify({preset: 'echo', "
            "content: 'mine'})}).then(r => done(r.status));")
        driver.refresh()
        wait = WebDriverWait(driver, 30, poll_frequency=0.1)
        wait.until(lambda d: d.execute_script(
            "return !document.getElementById('who').hidden"))
        assert driver.find_elements(By.ID, "token") == []  # no token asked for
        counts = wait.until(lambda d: d.execute_script(
            "const c = [...document.querySelectorAll('.count[data-state]')]"
            ".map(e => Number(e.textContent || 'NaN'));"
            "return c.length && c.every(n => !isNaN(n)) ? c : null"))
        assert sum(counts) == 1, counts  # hers only: bob's job is not counted
        driver.find_element(By.ID, "signout").click()
        wait.until(lambda d: d.find_elements(By.ID, "token"))
    finally:
        driver.quit()
