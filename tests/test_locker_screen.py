"""The locker screen in the system Chromium, through the running agent; the Kerong emulator on a real pty
plays the lock board and the people at the doors."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, expect

from edge_agent.config import AgentConfig
from edge_agent.runtime import Agent
from firmware_bridge.emulators.kerong import Action, LockBoardEmulator, Person
from firmware_bridge.emulators.pty_line import PtyPort
from tests.conftest import agent_config, running_agent, wait_until
from tests.support.broker import Broker
from tests.support.browser import LANDSCAPE, PORTRAIT, chromium
from tests.support.lockers import compartment, idle_emulator, one_board
from tests.support.subscriber import CloudSubscriber

# One browser for the module: every test runs in the module's event loop, where the browser lives.
pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY_ENV = {"EDGE_AGENT_STORE_HMAC_KEY": "ab" * 32}
DOOR_12 = "Door 12 is open: second row from the top, third from the left"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


def lockers_config(tmp_path: Path, cloud: Broker | None) -> tuple[LockBoardEmulator, PtyPort, AgentConfig]:
    """Bank A: a small door 1 (top left) and a medium door 12 (second row, third from the left)."""
    emulator = idle_emulator()
    pty = tmp_path / "lockers0"
    bank = one_board(pty, compartment("A-01", 1, size="S"), compartment("A-12", 12, row=2, column=3))
    config = agent_config(tmp_path / "data", cloud, lockers=bank)
    return emulator, PtyPort(pty), config


@contextlib.asynccontextmanager
async def lockers_agent(tmp_path: Path, cloud: Broker | None) -> AsyncIterator[tuple[Agent, LockBoardEmulator]]:
    emulator, port, config = lockers_config(tmp_path, cloud)
    async with emulator.running(port), running_agent(config, env=KEY_ENV, wait_for_cloud=cloud is not None) as agent:
        assert agent.lockers is not None
        yield agent, emulator


async def loaded_order(agent: Agent, emulator: LockBoardEmulator, order_id: str) -> str:
    """A medium parcel loaded into door 12 by staff; returns the customer's code."""
    assert agent.lockers is not None
    lockers = agent.lockers
    code = await lockers.create_pickup(order_id, "M", int(time.time() * 1000) + 86_400_000)
    assert code is not None
    emulator.compartments[(0, 12)].person = Person(open_after_s=0.1, hold_s=0.2, action=Action.PLACE)
    await lockers.start_load(order_id, actor="staff-1")
    await wait_until(lambda: (p := lockers.pickup(order_id)) is not None and p.state == "ready", timeout=10)
    return code


def console_error(msg: ConsoleMessage) -> bool:
    # Chromium logs every 4xx answer as "Failed to load resource"; the API's 401, 409 and 429 are answers
    # the page handles, not errors.
    url = str(msg.location.get("url", ""))
    return msg.type == "error" and not (msg.text.startswith("Failed to load resource") and "/api/" in url)


async def open_screen(browser: Browser, agent: Agent, query: str = "", viewport: dict[str, int] = PORTRAIT) -> Page:
    page = await browser.new_page(viewport=viewport)  # type: ignore[arg-type]
    errors: list[str] = []
    # A CSP violation or a script error shows up here: the tests fail on it rather than on a timeout.
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(f"{msg.text} {msg.location.get('url')}") if console_error(msg) else None)
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(f"http://127.0.0.1:{agent.web_port}/locker/A{query}")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page


async def tap_code(page: Page, code: str) -> None:
    for digit in code:
        await page.click(f'#keypad [data-key="{digit}"]')


async def answered(page: Page) -> None:
    """Wait until the screen has the agent's answer to the code just sent (Open is disabled meanwhile)."""
    # Locator assertions rather than wait_for_function: the page's CSP forbids the eval that one needs.
    await expect(page.locator("#key-enter")).to_be_enabled()


async def test_a_chinese_screen_says_which_door_opened_in_chinese(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber, browser: Browser
) -> None:
    async with lockers_agent(tmp_path, cloud_broker) as (agent, emulator):
        code = await loaded_order(agent, emulator, "order-zh")
        emulator.compartments[(0, 12)].person = Person(open_after_s=0.1, hold_s=0.3, action=Action.TAKE)
        page = await open_screen(browser, agent, "?lang=zh-CN")
        await tap_code(page, "99999999")
        await page.click('#keypad [data-key="enter"]')
        await expect(page.locator("#code-message")).to_have_text("此取件码无法开门，请核对后重试。")
        await tap_code(page, code)
        await page.click('#keypad [data-key="enter"]')
        await expect(page.locator("#door-message")).to_have_text("12 号柜门已打开：从上往下第 2 排，从左往右第 3 个")
        assert page.errors == []  # type: ignore[attr-defined]


async def test_a_code_tapped_on_the_keypad_opens_its_door(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber, browser: Browser
) -> None:
    async with lockers_agent(tmp_path, cloud_broker) as (agent, emulator):
        code = await loaded_order(agent, emulator, "order-1")
        emulator.compartments[(0, 12)].person = Person(open_after_s=0.1, hold_s=0.3, action=Action.TAKE)
        loads = emulator.unlock_count(0, 12)
        page = await open_screen(browser, agent)
        await tap_code(page, code[:3])
        await page.click('#keypad [data-key="delete"]')
        await tap_code(page, code[2:])
        await expect(page.locator("#field-code")).to_have_attribute("data-value", code)
        # Grouped for reading: "1234 5678".
        groups = await page.locator("#field-code .group").all_inner_texts()
        assert groups == [code[i : i + 4] for i in range(0, len(code), 4)]
        await page.click('#keypad [data-key="enter"]')
        await expect(page.locator("#door-message")).to_have_text(DOOR_12)
        await expect(page.locator("#screen-door")).to_be_visible()
        await expect(page.locator("#keypad")).to_be_hidden()
        await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.collected")
        assert emulator.unlock_count(0, 12) == loads + 1, "exactly one unlock for the customer"
        assert emulator.unlock_count(0, 1) == 0
        # Done: back to an empty keypad for the next customer.
        await page.click("#door-done")
        await expect(page.locator("#screen-code")).to_be_visible()
        await expect(page.locator("#field-code")).to_have_attribute("data-value", "")
        assert page.errors == []  # type: ignore[attr-defined]


async def test_ten_wrong_codes_lock_the_screen_with_a_countdown(
    tmp_path: Path, cloud_broker: Broker, browser: Browser
) -> None:
    async with lockers_agent(tmp_path, cloud_broker) as (agent, emulator):
        code = await loaded_order(agent, emulator, "order-2")
        loads = emulator.unlock_count(0, 12)
        page = await open_screen(browser, agent)
        message = page.locator("#code-message")
        # A USB keypad: digits and Enter from the keyboard.
        wrong = [f"{n:08d}" for n in range(10)]
        assert code not in wrong
        for n, guess in enumerate(wrong):
            await page.keyboard.type(guess)
            await page.keyboard.press("Enter")
            await answered(page)
            if n < 9:
                await expect(message).to_have_text("This code does not open a door. Please check it and try again.")
        # The tenth failure started the lockout; the screen says so at once, with a countdown.
        await expect(message).to_have_attribute("data-kind", "lockout")
        await expect(message).to_have_text(re.compile(r"Too many wrong codes\. Please try again in \d+ s\."))
        first = int(await message.get_attribute("data-seconds-left") or 0)
        assert 0 < first <= 30
        await expect(message).not_to_have_attribute("data-seconds-left", str(first), timeout=5000)
        assert 0 < int(await message.get_attribute("data-seconds-left") or 0) < first, "counting down"
        # The right code opens nothing now.
        await tap_code(page, code)
        await page.click('#keypad [data-key="enter"]')
        await answered(page)
        await expect(message).to_have_attribute("data-kind", "lockout")
        await expect(page.locator("#screen-door")).to_be_hidden()
        # A reload (or a restarted screen) learns of the lockout from the status endpoint.
        await page.reload()
        await expect(page.locator("#code-message")).to_have_attribute("data-kind", "lockout")
        await asyncio.sleep(0.5)
        assert emulator.unlock_count(0, 12) == loads, "no door opened while locked out"


async def test_the_screen_resets_after_idle_time(tmp_path: Path, browser: Browser) -> None:
    async with lockers_agent(tmp_path, None) as (agent, _emulator):
        page = await open_screen(browser, agent, "?idle_s=3")
        field = page.locator("#field-code")
        await tap_code(page, "12345678")
        await page.click('#keypad [data-key="enter"]')
        await answered(page)
        await expect(page.locator("#code-message")).to_have_attribute("data-kind", "error")
        await tap_code(page, "42")
        await expect(field).to_have_attribute("data-value", "42")
        touched = time.monotonic()
        await expect(field).to_have_attribute("data-value", "", timeout=8000)
        assert time.monotonic() - touched > 2.5, "reset only after the idle time"
        await expect(page.locator("#code-message")).to_be_empty()
        # Sign-in screens go back to the customer's keypad too.
        await page.click("#staff-button")
        await expect(page.locator("#screen-signin")).to_be_visible()
        await tap_code(page, "77")
        await expect(page.locator("#field-staff-number")).to_have_attribute("data-value", "77")
        await expect(page.locator("#screen-code")).to_be_visible(timeout=8000)
        await expect(page.locator("#screen-signin")).to_be_hidden()
        await expect(page.locator("#field-staff-number")).to_have_attribute("data-value", "")
        assert page.errors == []  # type: ignore[attr-defined]


async def test_touch_targets_kiosk_hygiene_and_headers(tmp_path: Path, browser: Browser) -> None:
    async with lockers_agent(tmp_path, None) as (agent, _emulator):
        base = f"http://127.0.0.1:{agent.web_port}"
        for viewport in (PORTRAIT, LANDSCAPE):
            page = await open_screen(browser, agent, viewport=viewport)
            keys = page.locator("#keypad button")
            assert await keys.count() == 13  # 0-9, Clear, Delete, Open
            for button in [*await keys.all(), page.locator("#staff-button"), page.locator("#lang-button")]:
                box = await button.bounding_box()
                assert box is not None
                label = await button.inner_text()
                assert box["width"] >= 48 and box["height"] >= 48, (viewport, label, box)
                # On screen, not scrolled away: the page never scrolls.
                assert box["y"] + box["height"] <= viewport["height"] and box["x"] + box["width"] <= viewport["width"]
            digit = await page.locator('#keypad [data-key="5"]').bounding_box()
            assert digit is not None and digit["height"] >= 90, "about 96 px on the screens we ship for"
            await page.close()

        page = await open_screen(browser, agent)
        prevented = await page.evaluate(
            """() => {
                const event = new MouseEvent('contextmenu', {bubbles: true, cancelable: true});
                document.querySelector('#keypad [data-key="5"]').dispatchEvent(event);
                return event.defaultPrevented;
            }"""
        )
        assert prevented is True
        kiosk: dict[str, Any] = await page.evaluate(
            """() => ({
                userSelect: getComputedStyle(document.body).userSelect,
                touchAction: getComputedStyle(document.body).touchAction,
                links: document.querySelectorAll('a, [href]:not(link)').length,
                viewport: document.querySelector('meta[name=viewport]').content,
            })"""
        )
        assert kiosk["userSelect"] == "none" and kiosk["touchAction"] == "manipulation"
        assert kiosk["links"] == 0, "no way out of the app"
        assert "user-scalable=no" in kiosk["viewport"]
        assert page.errors == []  # type: ignore[attr-defined]

        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            screen = await client.get("/locker/A")
            assert screen.status_code == 200
            csp = screen.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
            assert screen.headers["x-frame-options"] == "DENY"
            assert screen.headers["cache-control"] == "no-store"
            assert "<script>" not in screen.text and " style=" not in screen.text
            for path in ("/locker/Z", "/locker/A..B", "/locker/%2e%2e"):
                missing = await client.get(path)
                assert missing.status_code == 404, path
                assert "content-security-policy" in missing.headers
            assert (await client.get("/static/locker/index.html")).status_code == 404
            js = re.search(r'src="([^"]+)"', screen.text)
            assert js is not None
            script = await client.get(js.group(1))
            assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")


# -- staff and couriers (the staff API: edge_agent/web/locker_staff_api.py) ----------------------------

STAFF, PIN = "1234", "482915"


async def sign_in_staff(page: Page, staff_number: str = STAFF, pin: str = PIN) -> None:
    await page.click("#staff-button")
    await expect(page.locator("#screen-signin")).to_be_visible()
    await tap_code(page, staff_number)
    await expect(page.locator("#key-enter")).to_have_text("Next")
    await page.click('#keypad [data-key="enter"]')
    await tap_code(page, pin)
    # The PIN is masked on screen.
    pin_field = page.locator("#field-pin")
    await expect(pin_field).to_have_attribute("data-length", str(len(pin)))
    assert not re.search(r"\d", await pin_field.inner_text())
    await expect(page.locator("#key-enter")).to_have_text("Sign in")
    await page.click('#keypad [data-key="enter"]')


async def test_staff_sign_in_load_and_retrieval(
    tmp_path: Path, cloud_broker: Broker, subscriber: CloudSubscriber, browser: Browser
) -> None:
    async with lockers_agent(tmp_path, cloud_broker) as (agent, emulator):
        assert agent.lockers is not None and agent.locker_staff is not None
        lockers, staff = agent.lockers, agent.locker_staff
        await staff.add_staff(STAFF, PIN)
        await lockers.create_pickup("order-5", "M", int(time.time() * 1000) + 86_400_000)
        page = await open_screen(browser, agent, viewport=LANDSCAPE)

        # A wrong PIN: the server's answer, and the PIN is gone from the screen.
        await sign_in_staff(page, pin="903417")
        await expect(page.locator("#signin-message")).to_have_text("Sign-in failed. Please check and try again.")
        await expect(page.locator("#field-pin")).to_have_attribute("data-length", "0")
        await page.click("#signin-back")

        await sign_in_staff(page)
        await expect(page.locator("#screen-menu")).to_be_visible()
        await expect(page.locator("#menu-who")).to_contain_text(STAFF)
        await expect(page.locator("#menu-retrieval")).to_be_visible()
        await expect(page.locator("#menu-alarms")).to_be_visible()

        # Load: a keyboard-wedge scanner types the order number fast and ends with Enter.
        await page.click("#menu-load")
        await expect(page.locator("#screen-load")).to_be_visible()
        emulator.compartments[(0, 12)].person = Person(open_after_s=0.1, hold_s=0.3, action=Action.PLACE)
        await page.keyboard.type("order-5")
        await expect(page.locator("#field-order")).to_have_attribute("data-value", "order-5")
        await page.keyboard.press("Enter")
        await expect(page.locator("#door-message")).to_have_text(DOOR_12)
        ready = await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.ready")
        assert ready[0]["payload"]["order_id"] == "order-5" and ready[0]["payload"]["compartment"] == "A-12"
        await page.click("#door-done")
        await expect(page.locator("#screen-menu")).to_be_visible()

        # Retrieval: the order is cancelled while loaded; staff take it out from the list.
        await lockers.cancel_pickup("order-5")
        await page.click("#menu-retrieval")
        item = page.locator('#retrieval-list button[data-order-id="order-5"]')
        await expect(item).to_be_visible()
        assert (box := await item.bounding_box()) is not None and box["height"] >= 48
        emulator.compartments[(0, 12)].person = Person(open_after_s=0.1, hold_s=0.3, action=Action.TAKE)
        await item.click()
        await expect(page.locator("#door-message")).to_have_text(DOOR_12)
        await asyncio.to_thread(subscriber.wait_events, 1, 20, "pickup.retrieved")
        await page.click("#door-done")

        # The agent ends the session (staff removed, or its own idle timer): the next call goes to sign-in.
        assert staff.sessions.end_actor(f"staff:{STAFF}") == 1
        await page.click("#menu-alarms")
        await expect(page.locator("#screen-signin")).to_be_visible()
        await expect(page.locator("#signin-message")).to_have_text("You were signed out. Please sign in again.")

        # Sign out from the menu ends the session on the agent too.
        await page.click("#signin-back")
        await sign_in_staff(page)
        await expect(page.locator("#screen-menu")).to_be_visible()
        assert len(staff.sessions) == 1
        await page.click("#menu-sign-out")
        await expect(page.locator("#screen-code")).to_be_visible()
        await wait_until(lambda: len(staff.sessions) == 0, timeout=5)
        assert page.errors == []  # type: ignore[attr-defined]


async def test_a_courier_loads_but_sees_no_retrieval(tmp_path: Path, browser: Browser) -> None:
    async with lockers_agent(tmp_path, None) as (agent, emulator):
        assert agent.lockers is not None and agent.locker_staff is not None
        issued = await agent.locker_staff.issue_courier_code("c-17")
        await agent.lockers.create_pickup("order-6", "M", int(time.time() * 1000) + 86_400_000)
        page = await open_screen(browser, agent, "?idle_s=3")
        await page.click("#staff-button")
        await page.click("#tab-courier")
        await expect(page.locator("#signin-courier")).to_be_visible()
        await tap_code(page, issued.code)
        await page.click('#keypad [data-key="enter"]')
        await expect(page.locator("#screen-menu")).to_be_visible()
        await expect(page.locator("#menu-load")).to_be_visible()
        await expect(page.locator("#menu-retrieval")).to_be_hidden()
        await expect(page.locator("#menu-alarms")).to_be_hidden()
        await page.click("#menu-load")
        emulator.compartments[(0, 12)].person = Person(open_after_s=0.1, hold_s=0.3, action=Action.PLACE)
        await page.keyboard.type("order-6\n")
        await expect(page.locator("#door-message")).to_have_text(DOOR_12)
        # Left alone, the screen signs the courier out (on the agent too) and shows the keypad again.
        await expect(page.locator("#screen-code")).to_be_visible(timeout=8000)
        await wait_until(lambda: agent.locker_staff is not None and len(agent.locker_staff.sessions) == 0, timeout=5)
        assert page.errors == []  # type: ignore[attr-defined]
