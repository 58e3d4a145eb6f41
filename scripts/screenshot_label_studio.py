"""Screenshot one Label Studio task as an annotator sees it (headless Chromium).

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``) and ``selenium`` (the ``dev`` extra); no browser is downloaded.

Two ways to use it:

* demo: start (or reuse) a managed server, push one task built by
  ``ls_mapping.build_task`` from ``--record`` (a JSON record as build_task takes;
  a realistic fabricated shop record by default) and screenshot it::

      python scripts/screenshot_label_studio.py --demo --out docs/img/label_studio_task.png \\
          --fill anomaly card_testing "four cards declined within seconds, then one works"

* existing task: ``--url URL --project ID --task ID`` with ``--username`` and
  ``--password`` (or ``--data-dir`` of a managed server, whose credentials are read
  from its files).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from headless_chromium import chrome_driver  # noqa: E402 (scripts/ is on sys.path)

from active_learning.ls_client import LabelStudioClient  # noqa: E402
from active_learning.ls_mapping import build_task, render_label_config  # noqa: E402
from active_learning.ls_server import LabelStudioServer  # noqa: E402

TAXONOMY = [
    "scraping_bot",
    "order_brushing",
    "card_testing",
    "account_takeover",
    "returns_abuse",
    "coupon_abuse",
    "cart_hoarding",
    "system_failure",
    "other",
]


def demo_record() -> dict:
    """A realistic card-testing shop session (fabricated; regenerate from real scores)."""
    plan = [
        (0, "session_start", {"page": "/", "device": "mobile"}),
        (4, "search", {"page": "/search?q=gift+card"}),
        (9, "view_item", {"page": "/p/88213", "item": "88213", "category": "gift_cards", "price": 50.0}),
        (
            6,
            "add_to_cart",
            {"page": "/p/88213", "item": "88213", "category": "gift_cards", "price": 50.0, "qty": 1},
        ),
        (3, "checkout_start", {"page": "/checkout"}),
    ]
    bins = ["4539xx", "5168xx", "4916xx", "4024xx"]
    for b in bins:
        plan.append((1, "payment_attempt", {"page": "/checkout/pay", "price": 50.0, "card_bin": b}))
        plan.append((1, "payment_declined", {"page": "/checkout/pay", "price": 50.0, "card_bin": b}))
    plan += [
        (1, "payment_attempt", {"page": "/checkout/pay", "price": 50.0, "card_bin": "5425xx"}),
        (2, "payment_ok", {"page": "/checkout/pay", "price": 50.0, "card_bin": "5425xx"}),
        (3, "order_placed", {"page": "/order/done", "price": 50.0, "qty": 1}),
        (41, "view_item", {"page": "/p/88214", "item": "88214", "category": "gift_cards", "price": 100.0}),
        (
            2,
            "add_to_cart",
            {"page": "/p/88214", "item": "88214", "category": "gift_cards", "price": 100.0, "qty": 1},
        ),
        (1, "checkout_start", {"page": "/checkout"}),
        (1, "payment_attempt", {"page": "/checkout/pay", "price": 100.0, "card_bin": "4485xx"}),
        (1, "payment_declined", {"page": "/checkout/pay", "price": 100.0, "card_bin": "4485xx"}),
        (8, "session_end", {"page": "/checkout/pay"}),
    ]
    events, seconds = [], 14 * 3600 + 3 * 60 + 11
    for pos, (gap, event, attrs) in enumerate(plan):
        seconds += gap
        h, rest = divmod(seconds, 3600)
        row = {
            "pos": pos,
            "time": f"2026-03-02T{h:02d}:{rest // 60:02d}:{rest % 60:02d}",
            "gap": "" if pos == 0 else (f"{gap}s" if gap < 60 else f"{gap // 60}m {gap % 60:02d}s"),
            "event": event,
        }
        for key in ("page", "item", "category", "price", "qty", "device", "card_bin"):
            row[key] = attrs.get(key)
        events.append(row)
    return {
        "sequence_id": "u_58213:3",
        "entity_id": "u_58213",
        "score": 4.37,
        "threshold": 2.81,
        "is_anomaly": True,
        "events": events,
        "top_surprising": [
            {"pos": 7, "surprise": 7.91, "expected": "order_placed"},
            {"pos": 9, "surprise": 7.12, "expected": "checkout_start"},
            {"pos": 11, "surprise": 6.58, "expected": "session_end"},
            {"pos": 8, "surprise": 5.44, "expected": "payment_ok"},
            {"pos": 13, "surprise": 4.93, "expected": "session_end"},
        ],
        "neighbors": [
            {
                "sequence_id": "u_10442:0",
                "distance": 0.183,
                "summary": "search → view_item ×3 → add_to_cart → checkout_start → payment_attempt → "
                "payment_ok → order_placed (11 events, 6m)",
            },
            {
                "sequence_id": "u_77310:2",
                "distance": 0.201,
                "summary": "view_item ×2 → add_to_cart → checkout_start → payment_attempt → payment_declined "
                "→ payment_attempt → payment_ok → order_placed (9 events, 4m)",
            },
            {
                "sequence_id": "u_23051:1",
                "distance": 0.224,
                "summary": "search → view_item → add_to_cart → checkout_start → payment_attempt → payment_ok "
                "→ order_placed (8 events, 3m)",
            },
        ],
        "detector_contributions": {"surprise": 3.92, "knn": 2.71, "density": 2.05, "iforest@counts": 1.34},
    }


def screenshot(
    url: str,
    username: str,
    password: str,
    project: int,
    task: int,
    out: Path,
    width: int = 1920,
    height: int = 1200,
    chromedriver: str = "/usr/bin/chromedriver",
    fill: tuple[str, str, str] | None = None,
    submit: bool = False,
) -> None:
    """Log in through the form, open the task in the labeling UI and save a PNG.

    ``fill = (choice, anomaly type, note)`` clicks the answers in as an annotator
    would (before the screenshot); ``submit`` then presses Submit.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chrome_driver(width, height, chromedriver=chromedriver)
    try:
        driver.get(f"{url}/user/login/")
        wait = WebDriverWait(driver, 90)
        wait.until(ec.presence_of_element_located((By.NAME, "email"))).send_keys(username)
        driver.find_element(By.NAME, "password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        wait.until(lambda d: "/user/login" not in d.current_url)
        driver.get(f"{url}/projects/{project}/data?task={task}")
        wait.until(
            ec.presence_of_element_located((By.XPATH, "//*[contains(text(), 'Is this session anomalous?')]"))
        )
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[contains(text(), 'Session ')]")))
        time.sleep(3)  # let fonts and layout settle
        if fill is not None:
            for text in fill[:2]:
                if text:
                    driver.find_element(By.XPATH, f"//span[normalize-space(text())='{text}']").click()
                    time.sleep(0.5)
            if fill[2]:
                driver.find_element(By.CSS_SELECTOR, "textarea").send_keys(fill[2])
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
        if submit:
            driver.find_element(By.XPATH, "//button[normalize-space(.)='Submit']").click()
            time.sleep(3)
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "label_studio_task.png")
    parser.add_argument("--demo", action="store_true", help="push a task from --record and screenshot it")
    parser.add_argument("--record", type=Path, help="JSON record for build_task (default: built-in demo)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="managed server data dir (demo: default a fresh temporary one; else the credentials source)",
    )
    parser.add_argument("--venv", type=Path, default=None, help="Label Studio venv (see ANOMALY_SSL_LS_VENV)")
    parser.add_argument("--url")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--project", type=int)
    parser.add_argument("--task", type=int)
    parser.add_argument(
        "--fill",
        nargs=3,
        metavar=("CHOICE", "TYPE", "NOTE"),
        help="click these answers in before the screenshot, e.g. anomaly card_testing 'note'",
    )
    parser.add_argument("--submit", action="store_true", help="press Submit after the screenshot")
    parser.add_argument("--keep-server", action="store_true", help="do not stop a server started here")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args(argv)

    scratch = None
    if args.data_dir is None and args.demo:
        scratch = Path(tempfile.mkdtemp(prefix="ls-screenshot-"))
    server = LabelStudioServer(args.data_dir or scratch or ".label-studio", port=0, venv_dir=args.venv)
    started = False
    if args.demo:
        was_running = server.status().healthy
        state = server.start()
        started = not was_running
        client = LabelStudioClient(state.url, server.api_key())
        record = json.loads(args.record.read_text()) if args.record else demo_record()
        project = client.get_or_create_project("shop sessions (demo)", render_label_config(TAXONOMY))
        task = build_task(
            record,
            model_version="demo@screenshot",
            pseudonymize_key="screenshot-demo-key",
            run_id="screenshot",
        )
        (task_id,) = client.import_tasks(project, [task])
        url, username, password = state.url, state.username, server.password()
    else:
        if args.url is None or args.project is None or args.task is None:
            parser.error("without --demo, give --url, --project and --task")
        url, project, task_id = args.url.rstrip("/"), args.project, args.task
        username = args.username or (server.read_state().username if server.read_state() else None)
        password = args.password or server.password()
        if username is None:
            parser.error("give --username (or --data-dir of a managed server)")
    try:
        t0 = time.perf_counter()
        screenshot(
            url,
            username,
            password,
            project,
            task_id,
            args.out,
            args.width,
            args.height,
            fill=tuple(args.fill) if args.fill else None,
            submit=args.submit,
        )
        print(f"saved {args.out} (project {project}, task {task_id}) in {time.perf_counter() - t0:.1f} s")
    finally:
        if started and not args.keep_server:
            server.stop()
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
    print("command:", " ".join(sys.argv))


if __name__ == "__main__":
    main()
