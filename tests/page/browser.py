"""Headless Chromium for the page tests: Debian's `chromium` + `chromium-driver`, via Selenium.

Nothing is downloaded: the browser and its driver are found on PATH (or in
CONVSERVE_CHROMIUM / CONVSERVE_CHROMEDRIVER). Without them the tests skip and
say why; with CI=true a missing browser is a failure, because CI installs it
(.ci/run) and a silent skip would hide that the page went untested.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CONVSERVE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "page"
WAIT_S = 30.0  # generous: two shared cores, a browser and a server


def _find(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    return next((found for name in names if (found := shutil.which(name))), None)


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not _find("CONVSERVE_CHROMIUM", "chromium", "chromium-browser", "google-chrome"):
        return "no Chromium on PATH (apt-get install chromium chromium-driver)"
    if not _find("CONVSERVE_CHROMEDRIVER", "chromedriver"):
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    return None


def require_browser() -> None:
    reason = missing_browser()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"CI=true but the browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}")


def start_chromium(width: int = 1280, height: int = 1000, *, phone: bool = False):
    """A headless Chromium that keeps its console log (CSP violations show up there).

    `phone`: emulate a phone's viewport of width x height CSS pixels (headless
    windows have a minimum width of about 500 px, a phone is narrower)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _find("CONVSERVE_CHROMIUM", "chromium", "chromium-browser",
                                    "google-chrome")  # fmt: skip
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if phone:
        metrics = {"width": width, "height": height, "pixelRatio": 2, "touch": True}
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    service = Service(executable_path=_find("CONVSERVE_CHROMEDRIVER", "chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def wait_for(driver, condition: Callable[[Any], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll `condition(driver)` until truthy; the failure names what was awaited."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        error = driver.execute_script(
            "const e = document.querySelector('[data-testid=error]');"
            "return e && !e.hidden ? e.textContent : '';"
        )
        shot = screenshot(driver, "timeout")
        raise AssertionError(
            f"timed out after {timeout:g} s waiting for {what}; page error: {error!r}; "
            f"screenshot {shot}"
        ) from None


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def image_loaded(driver, test_id: str) -> int:
    """naturalWidth of the visible <img data-testid=...> once it has loaded, else 0."""
    return driver.execute_script(
        "const i = document.querySelector(`[data-testid='${arguments[0]}']`);"
        "return i && !i.hidden && i.complete ? i.naturalWidth : 0;",
        test_id,
    )
