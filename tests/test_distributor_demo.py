"""The distributor demo in a real browser: ``socketio-adapters distributor-demo``
(an edge of two uvicorn workers on one port, a chat backend and a counter game
backend in processes of their own, over the embedded ``local://`` backend) and two
tabs of Debian's headless Chromium, driven by playwright (which never downloads a
browser here). A chat message goes from one tab to the other, both tabs click the
counter and agree on the total, each labelled with the backend and edge worker
that handled it; then the counter backend is killed, the command starts another,
and the game goes on with the total and each player's score (kept in the socket's
session, on the edge) intact.

scripts/test.sh installs chromium when it is missing and sets SIOA_REQUIRE_BROWSER=1,
so there a missing browser fails instead of skipping. SIOA_DISTRIBUTOR_SCREENSHOT=path
saves the screenshot there too (docs/distributor-demo.png is made so).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .distributor_demo import RunningDemo, running_demo

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking"]
WAIT_MS = 20_000

pytestmark = pytest.mark.browser

if not CHROMIUM.exists() and os.environ.get("SIOA_REQUIRE_BROWSER") != "1":
    pytest.skip(f"{CHROMIUM} is not installed (scripts/test.sh installs it)",
                allow_module_level=True)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[RunningDemo]:
    with running_demo(tmp_path) as running:
        yield running


def test_chat_and_counter_survive_a_backend_restart(demo: RunningDemo,
                                                     tmp_path: Path) -> None:
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                         args=CHROMIUM_ARGS)
        try:
            expect.set_options(timeout=WAIT_MS)
            _scenario(browser, demo, tmp_path)
        except BaseException:
            print(f"demo log:\n{demo.log_text()[-6000:]}")
            raise
        finally:
            browser.close()


def _tab(browser: Browser, url: str) -> Page:
    """A tab in a context of its own (its own connections, so it may reach the
    other edge worker), ready: both backends answered its hello."""
    context = browser.new_context(viewport={"width": 1180, "height": 820})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(url)
    for pid in ("#edge", "#chat-backend", "#counter-backend"):
        expect(page.locator(pid)).not_to_have_attribute("data-pid", "")
    expect(page.locator("#click")).to_be_enabled()
    return page


def _pid(page: Page, selector: str) -> str:
    value = page.locator(selector).get_attribute("data-pid")
    assert value
    return value


def _click(page: Page, times: int) -> None:
    for _ in range(times):
        page.locator("#click").click()  # waits until the last click's ack enabled it


def _game(page: Page, total: int, score: int) -> None:
    expect(page.locator("#total")).to_have_attribute("data-total", str(total))
    expect(page.locator("#score")).to_have_attribute("data-score", str(score))


def _scenario(browser: Browser, demo: RunningDemo, tmp_path: Path) -> None:
    a, b = _tab(browser, demo.url), _tab(browser, demo.url)
    name_a, name_b = (page.locator("#me").inner_text() for page in (a, b))
    edge_a, edge_b = _pid(a, "#edge"), _pid(b, "#edge")
    (chat_pid,), (counter_pid,) = demo.backend_pids("chat"), demo.backend_pids("counter")
    for page in (a, b):
        assert _pid(page, "#chat-backend") == str(chat_pid)
        assert _pid(page, "#counter-backend") == str(counter_pid)
        assert {_pid(page, "#edge")} <= {str(pid) for pid in demo.edge_pids()}
        for name, edge in ((name_a, edge_a), (name_b, edge_b)):  # members, both edges
            expect(page.locator(f'#online li[data-name="{name}"]')).to_have_attribute(
                "data-edge", edge)

    # chat: A's message reaches B, labelled with the chat backend and A's edge worker
    a.locator("#text").fill("hello from A")
    a.locator("#text").press("Enter")
    for page in (a, b):
        message = page.locator("#messages li")
        expect(message.locator(".text")).to_have_text(["hello from A"])
        expect(message).to_have_attribute("data-backend", str(chat_pid))
        expect(message).to_have_attribute("data-edge", edge_a)

    # the counter: both tabs click, both agree on the total
    _click(a, 3)
    _click(b, 2)
    for page in (a, b):
        expect(page.locator("#total")).to_have_attribute("data-total", "5")
        expect(page.locator("#leaders li")).to_have_text([f"{name_a}: 3", f"{name_b}: 2"])
        expect(page.locator("#clicks li")).to_have_count(5)
        assert {li.get_attribute("data-backend")
                for li in page.locator("#clicks li").all()} == {str(counter_pid)}
    _game(a, 5, 3)
    _game(b, 5, 2)
    last = b.locator("#clicks li").last
    expect(last).to_have_attribute("data-name", name_b)
    expect(last).to_have_attribute("data-edge", edge_b)

    # the counter backend dies; the command starts another; the game goes on
    os.kill(counter_pid, signal.SIGKILL)
    _click(a, 1)  # waits at the edge until the new backend takes the socket over
    expect(a.locator("#counter-backend")).not_to_have_attribute(
        "data-pid", str(counter_pid))
    (replacement,) = set(demo.backend_pids("counter")) - {counter_pid}
    for page in (a, b):
        expect(page.locator("#counter-backend")).to_have_attribute(
            "data-pid", str(replacement))
        expect(page.locator("#total")).to_have_attribute("data-total", "6")
    _game(a, 6, 4)  # A's score came from its session, on the edge
    _click(b, 1)
    _game(b, 7, 3)
    _game(a, 7, 4)
    for page in (a, b):
        expect(page.locator("#clicks li").last).to_have_attribute(
            "data-backend", str(replacement))
        expect(page.locator("#leaders li")).to_have_text([f"{name_a}: 4", f"{name_b}: 3"])
    # the chat backend was not touched: the chat goes on too
    b.locator("#text").fill("still here")
    b.locator("#text").press("Enter")
    expect(a.locator("#messages li .text")).to_have_text(["hello from A", "still here"])

    shot = tmp_path / "distributor-demo.png"
    a.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    target = os.environ.get("SIOA_DISTRIBUTOR_SCREENSHOT")
    if target:
        shutil.copyfile(shot, target)
