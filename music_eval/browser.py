"""Opens an HTML report in headless Chromium and says whether it works (and takes a screenshot).

    res = check("runs/n2m_tiny/eval/report.html", screenshot="docs/x.png")   # python -m music_eval.check_report

Uses Playwright (the `playwright` Python package) driving the system's Chromium (Debian's
`chromium`, `/usr/bin/chromium`, or `$CHROMIUM`): no browser download.  It loads the page from
the file, waits for every <audio> to load its metadata and every <img> to decode, and reports the
console errors, page errors, failed requests and broken media.
"""
from __future__ import annotations

import os
import shutil

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


def chromium_path() -> str | None:
    for p in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
              shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if p and os.path.exists(p):
            return p
    return None


MEDIA_JS = """async () => {
  const audios = [...document.querySelectorAll('audio')];
  const waits = audios.map(a => a.readyState >= 1 ? null : new Promise(r => {
      a.addEventListener('loadedmetadata', r, {once: true}); a.addEventListener('error', r, {once: true});
      setTimeout(r, 15000); a.load(); }));
  await Promise.all(waits.filter(x => x));
  const imgs = [...document.querySelectorAll('img')];
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  return {audio: audios.map(a => ({duration: a.duration, error: a.error ? a.error.code : null})),
          images: imgs.map(i => ({width: i.naturalWidth, height: i.naturalHeight})),
          tables: document.querySelectorAll('table').length, title: document.title};
}"""


def check(path: str, screenshot: str | None = None, full_page: bool = False, width: int = 1280,
          height: int = 900) -> dict:
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("no Chromium found (bash run.sh setup installs Debian's chromium; or set $CHROMIUM)")
    url = "file://" + os.path.abspath(path)
    console, page_errors, failed = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(f"{r.url[:80]}: {r.failure}"))
            page.goto(url, wait_until="load")
            media = page.evaluate(MEDIA_JS)
            if screenshot:
                os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
                page.screenshot(path=screenshot, full_page=full_page)
        finally:
            browser.close()
    broken_audio = [i for i, a in enumerate(media["audio"]) if a["error"] is not None or not a["duration"]
                    or a["duration"] != a["duration"]]
    broken_images = [i for i, m in enumerate(media["images"]) if not m["width"]]
    errors = [c for c in console if c.startswith("error")]
    return {"path": os.path.abspath(path), "title": media["title"], "console_errors": errors,
            "console_warnings": [c for c in console if c.startswith("warning")], "page_errors": page_errors,
            "failed_requests": failed, "audio": len(media["audio"]), "broken_audio": broken_audio,
            "audio_seconds": [round(a["duration"] or 0.0, 2) for a in media["audio"]],
            "images": len(media["images"]), "broken_images": broken_images, "tables": media["tables"],
            "screenshot": os.path.abspath(screenshot) if screenshot else None,
            "ok": not (errors or page_errors or failed or broken_audio or broken_images)}
