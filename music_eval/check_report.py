"""`python -m music_eval.check_report REPORT.html [--screenshot=PNG] [--full_page]`.

Opens an HTML report in headless Chromium (`music_eval.browser`: Playwright driving the system's
Chromium, no browser download), waits for every player and image, and reports console errors,
page errors, failed requests and broken media.  Exit status 1 if any; the last stdout line is JSON.
"""
from __future__ import annotations

import argparse
import os
import sys

from common import cli
from music_eval import browser


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html")
    ap.add_argument("--screenshot", default=None)
    ap.add_argument("--full_page", action="store_true")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=900)
    a = ap.parse_args(argv)
    if not os.path.exists(a.html):
        cli.fail(f"{a.html}: no such file")
    res = browser.check(a.html, a.screenshot, a.full_page, a.width, a.height)
    print(f"[browser] {res['path']}: {res['audio']} players ({len(res['broken_audio'])} broken), {res['images']} "
          f"images ({len(res['broken_images'])} broken), {len(res['console_errors'])} console errors, "
          f"{len(res['page_errors'])} page errors" + (f"; screenshot {res['screenshot']}" if a.screenshot else ""),
          file=sys.stderr)
    cli.print_json({k: v for k, v in res.items() if k != "audio_seconds"})
    if not res["ok"]:
        sys.exit(1)
    return res


if __name__ == "__main__":
    main()
