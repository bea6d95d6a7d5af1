"""
The page in a real browser: serve web/ on a loopback port and open it in headless Chromium, for the
tests (tests/test_web_page.py), the benchmark (bench/bench_web.py) and the README's screenshots.

    python web/browser.py      # -> docs/figures/web-1280x720.png and web-390x844.png

Needs Chromium (Debian: apt-get install chromium) and Playwright for Python (pip install
playwright; no browser download: it drives the installed Chromium).
"""
import contextlib
import functools
import http.server
import os
import shutil
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from files import write_atomically  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# headless, and no connection of Chromium's own to the network (this page needs none)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOTS = [((1280, 720), "3", 12, "en"), ((390, 844), "3", 12, "zh")]  # (size, preset, steps, language)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory=HERE):
    """An HTTP server for `directory` on 127.0.0.1 and a free port, in a thread: yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=directory))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium():
    """Headless Chromium, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, url, width=1280, height=720, lang="en"):
    """The page at `url`, ready to use; page.errors collects what its console reports as errors."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.errors = []
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(url + ("index.html?lang=zh" if lang == "zh" else "index.html"))
    page.wait_for_selector("body[data-ready]", timeout=30_000)
    return page


def main():
    with serve() as url, chromium() as browser:
        for (width, height), preset, steps, lang in SCREENSHOTS:
            page = open_page(browser, url, width, height, lang)
            page.select_option("#preset", preset)
            for _ in range(steps):
                page.keyboard.press("s")
            page.evaluate("window.scrollTo(0, 0)")
            path = os.path.join(ROOT, "docs", "figures", f"web-{width}x{height}.png")
            picture = page.screenshot()
            write_atomically(path, lambda f: f.write(picture))
            print(f"wrote {os.path.relpath(path, ROOT)}")
            assert not page.errors, page.errors
    return 0


if __name__ == "__main__":
    sys.exit(main())
