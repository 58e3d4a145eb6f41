"""Full-page screenshot of an HTML report with headless Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``) and ``selenium`` (the ``dev`` extra); no browser is downloaded.
The whole page is captured through the DevTools protocol
(``Page.captureScreenshot`` with ``captureBeyondViewport``), optionally cut at
``--max-height`` pixels.  Broken images (``naturalWidth == 0``) are an error.

    python scripts/screenshot_report.py runs/shop/report.html docs/img/report.png

``--demo RUN_DIR`` first writes the synthetic run of ``tests/test_report.py`` into
RUN_DIR and its report into REPORT (used for the docs until a real run exists)::

    python scripts/screenshot_report.py --demo /tmp/demo_run /tmp/demo_run/report.html docs/img/report.png
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path

from headless_chromium import chrome_driver  # scripts/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]


def screenshot(
    report: Path,
    out: Path,
    width: int = 1280,
    max_height: int | None = None,
    scale: float = 1.0,
    browser: str = "/usr/bin/chromium",
    chromedriver: str = "/usr/bin/chromedriver",
) -> dict:
    """Open ``report`` (a local file), check its images and save a full-page PNG to ``out``.

    Returns
    -------
    dict
        ``title``, ``images`` (how many), ``width`` and ``height`` of the page in CSS pixels.
    """
    driver = chrome_driver(width, 1000, browser, chromedriver)
    try:
        driver.get(report.resolve().as_uri())
        time.sleep(0.5)  # let fonts and images settle
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0, i.alt]);"
        )
        broken = [alt for ok, alt in images if not ok]
        if broken:
            raise SystemExit(f"{report}: {len(broken)} broken image(s): {broken}")
        height = int(driver.execute_script("return document.documentElement.scrollHeight;"))
        shot_height = min(height, max_height) if max_height else height
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": shot_height, "deviceScaleFactor": scale, "mobile": False},
        )
        png = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": shot_height, "scale": 1},
            },
        )["data"]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(png))
        return {"title": driver.title, "images": len(images), "width": width, "height": height}
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the HTML report")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels")
    parser.add_argument("--max-height", type=int, default=None, help="cut the page at this many pixels")
    parser.add_argument("--scale", type=float, default=1.0, help="device scale factor (2 = retina)")
    parser.add_argument("--demo", type=Path, metavar="RUN_DIR",
                        help="first write the synthetic test run to RUN_DIR and its report to REPORT")
    parser.add_argument("--top", type=int, default=3, help="anomalies in the --demo report")
    args = parser.parse_args(argv)
    if args.demo is not None:
        sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
        from test_report import make_run

        from anomaly_ssl.report import build_report

        run = make_run(args.demo, n=2000, seed=7, hostile=False)
        build_report(run["run"], args.report, labels_path=run["labels"], max_anomalies=args.top)
    t0 = time.perf_counter()
    info = screenshot(args.report, args.out, args.width, args.max_height, args.scale)
    print(f"saved {args.out}: page {info['width']}x{info['height']} px, {info['images']} images, "
          f"title {info['title']!r}, in {time.perf_counter() - t0:.1f} s")
    print("command:", " ".join(sys.argv))


if __name__ == "__main__":
    main()
