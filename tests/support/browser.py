"""A real headless browser for the dashboard's tests: Debian's `chromium` driven through its own
`chromedriver` by selenium. Nothing is downloaded: no Selenium Manager, no browser builds (only
package registries are reachable). Missing pieces fail the test with how to install them."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import ROOT

INSTALL = (
    "the dashboard's browser tests need Debian's chromium and its driver: "
    "`apt-get install -y --no-install-recommends chromium chromium-driver` "
    "(`make test` runs .ci/ensure-chromium, which does this when run as root)"
)
AXE = ROOT / "tests" / "ui" / "node_modules" / "axe-core" / "axe.min.js"


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{names[0]} is not on PATH: {INSTALL}", pytrace=False)


def start_chromium(width: int = 1200, height: int = 900) -> Any:
    """Headless chromium with console logging on, so tests can count CSP violations."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        f"--window-size={width},{height}", "--no-first-run", "--disable-sync",
        "--disable-background-networking", "--disable-component-update",
        "--disable-default-apps", "--disable-extensions", "--hide-scrollbars",
        "--force-device-scale-factor=1", "--lang=en-GB",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=_binary("chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def axe_source() -> str:
    if not AXE.exists():
        pytest.fail(
            f"{AXE.relative_to(ROOT)} is missing: run `make install` (or "
            "`npm ci --prefix tests/ui`), which installs the pinned axe-core from npm",
            pytrace=False,
        )
    return AXE.read_text()


def save_small_png(png: bytes, path: Path, colours: int = 96) -> int:
    """A screenshot as a palette PNG (a few tens of KB, fit to commit); returns its size."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    small = image.quantize(
        colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    small.save(path, optimize=True)
    return path.stat().st_size
