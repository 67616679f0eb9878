"""The demo in a real browser: ``socketio-adapters demo --workers 2`` (real uvicorn
workers sharing one port, one cluster over the embedded ``local://`` backend) and
two tabs of Debian's headless Chromium, driven by playwright (which never downloads
a browser here). The tabs are on different workers; messages go both ways, labelled
with the worker that relayed them; a tab drops its connection, misses messages, comes
back and shows each of them once, in order, and says it recovered them.

scripts/test.sh installs chromium when it is missing and sets SIOA_REQUIRE_BROWSER=1,
so there a missing browser fails instead of skipping. SIOA_DEMO_SCREENSHOT=path saves
the screenshot there too (docs/demo.png is made so).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from conformance.brokers import HOST, free_port

from .demo_processes import answers, stop_group

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking"]
START_SECONDS = 60.0
WAIT_MS = 20_000
MAX_PAGES = 12
"""Pages opened at most to find two on different workers (the kernel picks)."""

pytestmark = pytest.mark.browser

if not CHROMIUM.exists() and os.environ.get("SIOA_REQUIRE_BROWSER") != "1":
    pytest.skip(f"{CHROMIUM} is not installed (scripts/test.sh installs it)",
                allow_module_level=True)


@dataclass
class Demo:
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    port = free_port()
    cluster = f"local://sioa-demo-test-{secrets.token_hex(4)}"
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "socketio_adapters", "demo", "--workers", "2",
             "--host", HOST, "--port", str(port), "--url", cluster],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    running = Demo(f"http://{HOST}:{port}/", log)
    try:
        deadline = time.monotonic() + START_SECONDS
        while not (answers(running.url)
                   and running.log_text().count("Application startup complete") >= 2):
            assert proc.poll() is None, f"the demo exited:\n{running.log_text()}"
            assert time.monotonic() < deadline, (
                f"the demo did not start in {START_SECONDS}s:\n{running.log_text()}")
            time.sleep(0.1)
        yield running
    finally:
        stop_group(proc, 15)


def _worker(page: Page) -> str:
    expect(page.locator("#worker")).not_to_have_attribute("data-pid", "")
    pid = page.locator("#worker").get_attribute("data-pid")
    assert pid
    return pid


def _send(page: Page, text: str) -> None:
    page.locator("#text").fill(text)
    page.locator("#text").press("Enter")


def _messages(page: Page) -> Locator:
    return page.locator("#messages li")


def test_two_tabs_on_two_workers_chat_and_recover(demo: Demo, tmp_path: Path) -> None:
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                         args=CHROMIUM_ARGS)
        try:
            expect.set_options(timeout=WAIT_MS)
            _scenario(browser, demo, tmp_path)
        except BaseException:
            print(f"demo log:\n{demo.log_text()}")
            raise
        finally:
            browser.close()


def _tab(browser: Browser) -> Page:
    """A tab in a context of its own: tabs of one context share its pooled HTTP
    connections, so their long-polling handshakes would all reach one worker (the
    one that owns their sessions), and two tabs on two workers are what this needs."""
    context = browser.new_context(viewport={"width": 1000, "height": 720})
    context.set_default_timeout(WAIT_MS)
    return context.new_page()


def _scenario(browser: Browser, demo: Demo, tmp_path: Path) -> None:
    # tabs until two are on different workers; the others are closed
    tabs: dict[str, Page] = {}
    for _ in range(MAX_PAGES):
        page = _tab(browser)
        page.goto(demo.url)
        pid = _worker(page)
        if pid in tabs:
            page.context.close()
        else:
            tabs[pid] = page
        if len(tabs) == 2:
            break
    assert len(tabs) == 2, f"{MAX_PAGES} tabs all landed on worker {list(tabs)}"
    (pid_a, a), (pid_b, b) = tabs.items()
    name_a, name_b = (p.locator("#me").inner_text() for p in (a, b))
    # the client keeps its defaults: long-polling, then the upgrade to websocket,
    # whichever workers its requests and its websocket reach
    for page in (a, b):
        expect(page.locator("#transport")).to_have_attribute("data-transport",
                                                              "websocket")
    for page in (a, b):  # who is online, on both workers
        for name, pid in ((name_a, pid_a), (name_b, pid_b)):
            expect(page.locator(f'#online li[data-name="{name}"]')).to_have_attribute(
                "data-pid", pid)

    # both ways, each message labelled with the worker that relayed it
    _send(a, "hello from A")
    expect(_messages(b).locator(".text")).to_have_text(["hello from A"])
    _send(b, "hello from B")
    for page in (a, b):
        expect(_messages(page).locator(".text")).to_have_text(
            ["hello from A", "hello from B"])
        assert [li.get_attribute("data-pid") for li in _messages(page).all()] == [
            pid_a, pid_b]
        assert [li.get_attribute("data-name") for li in _messages(page).all()] == [
            name_a, name_b]
    expect(a.locator("#recovery")).to_have_text("new session")

    # B drops its connection; A talks meanwhile
    b.locator("#drop").click()
    expect(b.locator("#state")).to_have_attribute("data-state", "disconnected")
    expect(a.locator(f'#online li[data-name="{name_b}"]')).to_have_count(0)
    missed = [f"while B was away {n}" for n in (1, 2, 3)]
    for text in missed:
        _send(a, text)
    expect(_messages(a).locator(".text")).to_have_text(
        ["hello from A", "hello from B", *missed])
    expect(_messages(b)).to_have_count(2)

    # B comes back (on either worker): every missed message, in order, once
    b.locator("#drop").click()
    expect(b.locator("#transport")).to_have_attribute("data-transport", "websocket")
    expect(b.locator("#recovery")).to_have_attribute("data-state", "recovered")
    expect(b.locator("#recovery")).to_have_text("recovered 3 missed messages")
    marked = re.compile(r"\brecovered\b")  # the page marks what it recovered
    for index in range(5):
        item = expect(_messages(b).nth(index))
        if index < 2:
            item.not_to_have_class(marked)
        else:
            item.to_have_class(marked)
    pid_b_now = _worker(b)
    _send(b, "back from B")  # a later marker: no duplicate can come after it
    everything = ["hello from A", "hello from B", *missed, "back from B"]
    for page in (a, b):
        expect(_messages(page).locator(".text")).to_have_text(everything)
    assert [li.get_attribute("data-pid") for li in _messages(b).all()] == [
        pid_a, pid_b, pid_a, pid_a, pid_a, pid_b_now]
    expect(a.locator(f'#online li[data-name="{name_b}"]')).to_have_attribute(
        "data-pid", pid_b_now)

    shot = tmp_path / "demo.png"
    b.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    target = os.environ.get("SIOA_DEMO_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)
