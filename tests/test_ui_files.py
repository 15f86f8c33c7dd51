"""The dashboard's files as `submit` serves them: the security headers on every /ui answer,
the right types, no token needed for the files and still needed for the data, read from disk
on first request only, and nothing outside ui_static/ reachable."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from common.api.ui import STATIC
from tests.submit_fixtures import SubmitHarness
from tests.support.paths import ROOT

FILES = sorted(p.name for p in STATIC.iterdir())


def _assert_safe_headers(headers: object) -> None:
    csp = headers["Content-Security-Policy"]  # type: ignore[index]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
    assert directives["require-trusted-types-for"] == "'script'"
    assert "unsafe" not in csp and "http" not in csp  # no inline code, no other origin
    assert headers["X-Content-Type-Options"] == "nosniff"  # type: ignore[index]
    assert headers["Referrer-Policy"] == "no-referrer"  # type: ignore[index]


def test_ui_redirects_to_its_folder_and_serves_the_page(api: SubmitHarness) -> None:
    first = api.client.get("/ui")
    assert first.status_code == 308 and first.headers["Location"].endswith("ui/")
    _assert_safe_headers(first.headers)
    page = api.client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    _assert_safe_headers(page.headers)
    html = page.get_data(as_text=True)
    assert '<script type="module" src="app.js"></script>' in html
    assert not re.search(r"<script>|<style|style=|\son[a-z]+=", html)  # nothing inline
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # no CDN


@pytest.mark.parametrize("name", FILES)
def test_every_file_has_its_type_and_the_headers(api: SubmitHarness, name: str) -> None:
    resp = api.client.get(f"/ui/{name}")
    assert resp.status_code == 200
    assert resp.get_data() == (STATIC / name).read_bytes()
    expected = {".html": "text/html", ".css": "text/css", ".js": "text/javascript",
                ".svg": "image/svg+xml"}[(STATIC / name).suffix]
    assert resp.headers["Content-Type"].startswith(expected)
    _assert_safe_headers(resp.headers)
    again = api.client.get(f"/ui/{name}", headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status_code == 304 and again.get_data() == b""


def test_script_never_parses_markup(api: SubmitHarness) -> None:
    """Safe by construction: the code builds DOM from text only (CSP Trusted Types backs it)."""
    for name in FILES:
        if name.endswith(".js"):
            code = "\n".join(line for line in (STATIC / name).read_text().splitlines()
                             if not line.lstrip().startswith(("//", "/*", "*")))
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                         "eval(", "new Function", ".style."):
                assert sink not in code, (name, sink)


@pytest.mark.parametrize(
    "path", ["/ui/nope.js", "/ui/../main.py", "/ui/%2e%2e/main.py", "/ui/ui.py", "/ui/app.js/x"]
)
def test_only_the_dashboard_s_files_are_reachable(api: SubmitHarness, path: str) -> None:
    resp = api.client.get(path)
    assert resp.status_code == 404
    assert resp.headers["Content-Type"] in ("application/problem+json", "application/json")
    assert b"import" not in resp.get_data()


def test_files_need_no_token_but_data_still_does(api: SubmitHarness) -> None:
    assert api.client.get("/ui/app.js").status_code == 200
    assert api.client.get("/jobs").status_code == 401
    assert api.client.get("/stats").status_code == 401
    assert api.client.post("/ui/").status_code == 405


def test_files_are_read_on_first_request_not_at_import() -> None:
    probe = (
        "import builtins, pathlib; opened = []\n"
        "orig = pathlib.Path.read_bytes\n"
        "pathlib.Path.read_bytes = lambda self: opened.append(str(self)) or orig(self)\n"
        "import main, sys; main.submit\n"
        "print([p for p in opened if 'ui_static' in p], 'common.api.ui' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.strip()
    assert out == "[] False"


def test_the_openapi_document_leaves_the_ui_out(api: SubmitHarness) -> None:
    doc = api.client.get("/openapi.json").get_json()
    assert not [p for p in doc["paths"] if p.startswith("/ui")]
    preset = next(p for p in doc["paths"]["/jobs"]["get"]["parameters"] if p["name"] == "preset")
    assert re.fullmatch(preset["schema"]["pattern"], "text-stats")
    assert re.fullmatch(preset["schema"]["pattern"], "")
    assert not re.fullmatch(preset["schema"]["pattern"], "x<y")


def test_the_deploy_uploads_the_dashboard() -> None:
    ignored = [ln.strip() for ln in (ROOT / ".gcloudignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    assert not [ln for ln in ignored if ln.rstrip("/") in ("common", "common/api", "ui_static",
                                                            "common/api/ui_static", "*.js",
                                                            "*.css", "*.html")]


@pytest.mark.parametrize("name", [n for n in FILES if n.endswith(".js")])
def test_every_script_parses_as_a_module(name: str) -> None:
    """A syntax error in one module stops the whole page without a word in the console (seen:
    a parameter named like a later `const`), so each file is parsed as an ES module by node,
    which `make install` needs anyway (npm, for axe-core)."""
    import shutil

    node = shutil.which("node")
    assert node, "node is missing: install nodejs (make install uses npm for axe-core)"
    checked = subprocess.run([node, "--input-type=module", "--check"],
                             input=(STATIC / name).read_text(), capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stderr
