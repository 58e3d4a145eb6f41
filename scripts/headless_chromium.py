"""Headless Chromium for the screenshot scripts (Debian ``chromium`` + ``chromium-driver``)."""

from __future__ import annotations

from typing import Any

CHROME_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def chrome_driver(
    width: int, height: int, browser: str = "/usr/bin/chromium", chromedriver: str = "/usr/bin/chromedriver"
) -> Any:
    """A selenium Chrome driver with a ``width`` x ``height`` window; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.binary_location = browser
    return webdriver.Chrome(service=Service(chromedriver), options=options)
