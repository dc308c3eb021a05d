"""Writes docs/_static/dashboard.png: the dashboard's signal list in headless chromium, made
the way tests/test_dashboard_browser.py makes its screenshot (same server, browser and data).

    python scripts/dashboard_screenshot.py [OUTPUT.png] [--width 1100]

Needs chromium (Debian's, on PATH) and the test group (playwright); uses the memory store.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gaesignals  # noqa: E402
from gaesignals.dashboard import DashboardApp  # noqa: E402
from tests.browser_support import CHROMIUM_ARGS, activity, chromium, populate, serving  # noqa: E402
from tests.dashboard_support import TOKEN  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default=str(ROOT / "docs/_static/dashboard.png"))
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args()
    executable = chromium()
    if executable is None:
        print("chromium is not installed", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    gaesignals.configure(store="memory://")
    populate(hostile=False)
    with serving(DashboardApp(token=TOKEN)) as base, sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": 700})
        page.goto(f"{base}/login")
        page.fill("input[name=token]", TOKEN)
        page.click("button:has-text('Log in')")
        page.wait_for_url(f"{base}/")
        page.wait_for_selector("text=Collecting samples")  # the first sample is taken
        for taken, count in enumerate((10, 40, 25, 60, 30), start=2):
            activity(count)  # traffic between two samples, for the chart's rates
            page.wait_for_selector(f"text=({taken} samples)", timeout=20_000)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.output, full_page=True)
        browser.close()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
