"""Headless Chromium (Debian's chromium + chromium-driver) driven by Selenium, for the gallery tests.

`open_browser()` returns a driver, or raises pytest's skip with the reason when there is no browser:
CI installs both packages (.ci/run), so there the tests run."""
from __future__ import annotations

import importlib.util
import shutil

import pytest

CHROMIUM = ("chromium", "chromium-browser")
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
    # WebGL without a GPU: SwiftShader through ANGLE, which Chromium now enables only when asked
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    # this machine has no network: no background connections for them to be refused
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
]


def open_browser():
    binary = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("no Chromium/ChromeDriver on this machine (apt-get install chromium chromium-driver; .ci/run does)")
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def console_errors(driver) -> list[str]:
    """The page's console errors (SEVERE), leaving out the GPU driver's performance notes."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
