"""The operator console in a real browser (Debian's chromium, headless, driven by Selenium): an operator
logs in, sees two softphones in the room "demo", a key press and its PIE in the timeline, and mutes one
phone, which the other's recording confirms. Without a session nothing is shown and nothing can be done;
with a session but without its CSRF token, nothing can be done either."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from audio import read_wav
from harness import HOST, Process, phone
from sinch_app import NUMBER, OTHER_KEY, OTHER_SECRET, app_config
from test_conference import tone_dbm0, window

from tonebridge.api.access import hash_password

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
OPERATOR, PASSWORD = "night-shift", "correct horse battery staple"
TONE_HZ = 500.0
DEADLINE = 20.0

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(
        f"the console's browser test needs Debian's chromium ({CHROMIUM}) and chromium-driver ({CHROMEDRIVER})",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture
def browser() -> Iterator:
    """Start headless Chromium sessions; each is quit afterwards."""
    drivers: list[WebDriver] = []

    def start() -> WebDriver:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1400,1100",
        ):
            options.add_argument(argument)
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


def operator_config(backend) -> str:  # type: ignore[no-untyped-def]
    return app_config(backend) + (
        f'\n[[operators]]\nname = "{OPERATOR}"\npassword_hash = "{hash_password(PASSWORD)}"\n'
    )


def wait(driver: WebDriver, css: str, text: str = "", timeout: float = DEADLINE):  # type: ignore[no-untyped-def]
    """The first element matching `css` (whose text contains `text`), once the page shows it."""

    def shown(d: WebDriver):  # type: ignore[no-untyped-def]
        found = [e for e in d.find_elements(By.CSS_SELECTOR, css) if text in e.text]
        return found[0] if found else False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(shown)
    except TimeoutException:
        page = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"no {css!r} containing {text!r} within {timeout}s; the page:\n{page}") from None


def log_in(driver: WebDriver, base: str, name: str, password: str) -> None:
    driver.get(f"{base}/console")
    driver.find_element(By.NAME, "name").send_keys(name)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form#login button[type=submit]").click()
    wait(driver, "#viewer", f"operator {name}")


def heard_seconds(process: Process) -> int:
    found = process.matches(r"event=heard .*seconds=(\d+)")
    return int(found[-1].group(1)) if found else 0


def next_second(process: Process) -> int:
    """The first whole second of the phone's recording that begins after now, once it is recorded."""
    start = heard_seconds(process) + 1
    process.wait_for(rf"event=heard .*seconds={start + 1}\b", timeout=DEADLINE)
    return start


def session_client(base: str, name: str, password: str) -> tuple[httpx.Client, str]:
    """A client logged in through the form as a browser would post it, and the session's CSRF token."""
    client = httpx.Client(base_url=base, timeout=10)
    reply = client.post("/console/login", data={"name": name, "password": password}, headers={"Origin": base})
    assert reply.status_code == 303, reply.text
    page = client.get("/console").text
    csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    return client, csrf


def test_console_shows_the_room_the_timeline_and_mutes_a_phone(
    in_process_server, backend, browser, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    backend.answers["ice"] = lambda event: {
        "action": {
            "name": "connectConf",
            "conferenceId": "demo",
            "conferenceDtmfOptions": {"mode": "detect", "maxDigits": 1, "timeoutMills": 3000},
        }
    }
    backend.answers["pie"] = lambda event: {}
    server = in_process_server(operator_config(backend))
    base = f"http://{HOST}:{server.server.http_port}"
    driver = browser()
    log_in(driver, base, OPERATOR, PASSWORD)

    uri = f"sip:{NUMBER}@{HOST}:{server.server.stack.port}"
    a = phone("dial", uri, "--tone", str(int(TONE_HZ)), "--level", "-15", stdin=True)
    a.wait_for(r"event=answered", timeout=15)
    backend.wait(lambda: len(backend.events("ice")) == 1)
    wav = tmp_path / "b.wav"
    b = phone("dial", uri, "--record", str(wav), stdin=True)
    b.wait_for(r"event=answered", timeout=15)
    backend.wait(lambda: len(backend.events("ice")) == 2)
    a_call, b_call = (event["callid"] for event in backend.events("ice"))

    wait(driver, '.room[data-room="demo"]')
    wait(driver, f'tr[data-call-id="{a_call}"]', a_call)
    wait(driver, f'tr[data-call-id="{b_call}"]', b_call)
    # A's meter moves: the server measures what it sends into the room.
    wait(driver, f'tr[data-call-id="{a_call}"] td.level', "dBFS")

    a.send("dtmf 1")
    press = wait(driver, '#timeline li[data-type="press"]', "press 1")
    assert "mode detect" in press.text and "collected" in press.text, press.text
    pie = wait(driver, '#timeline li[data-type="pie_sent"]', "status 200")
    assert "delivered" in pie.text, pie.text
    wait(driver, '#callbacks tr[data-event="pie"]')
    # The PIE answered, A is back in the mix: B hears A's tone.
    wait(driver, f'tr[data-call-id="{a_call}"] td.collecting', "in mix")
    before = next_second(b)

    wait(driver, f'tr[data-call-id="{a_call}"] button[data-action="mute"]').click()
    wait(driver, f'tr[data-call-id="{a_call}"] td.muted', "muted")
    assert server.server.conferences.rooms.participant(a_call).muted
    after = next_second(b)
    screenshot = tmp_path / "console.png"
    assert driver.save_screenshot(str(screenshot))
    print(f"console screenshot: {screenshot}")

    # A page's script holds the cookie but, without the token, cannot act.
    status = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {method: 'PATCH', credentials: 'same-origin',"
        " headers: {'Content-Type': 'application/json'}, body: JSON.stringify({command: 'unmute'})})"
        ".then(r => done(r.status));",
        f"/calling/v1/conferences/id/demo/{a_call}",
    )
    assert status == 403

    _refused_without_session_or_token(browser, base, a_call)
    assert server.server.conferences.rooms.participant(a_call).muted  # nothing changed

    # The other buttons reach the room too: a DTMF mode, hold.
    Select(wait(driver, f'tr[data-call-id="{a_call}"] td.mode select')).select_by_value("forward")
    wait(driver, '#timeline li[data-type="options_changed"]', "DTMF mode forward")
    assert server.server.conferences.rooms.participant(a_call).options.mode.value == "forward"
    wait(driver, f'tr[data-call-id="{b_call}"] button[data-action="onhold"]').click()
    wait(driver, f'tr[data-call-id="{b_call}"] td.onHold', "on hold")

    b.send("hangup")
    b.wait_for(r"event=recorded", timeout=15)
    samples, _ = read_wav(wav)
    assert tone_dbm0(window(samples, before), TONE_HZ) > -30.0
    heard_after = window(samples, after)
    assert len(heard_after) == 8000
    assert np.abs(heard_after.astype(np.int32)).max() < 300, "B still hears A after the mute"
    a.send("hangup")
    a.wait_exit()


def _refused_without_session_or_token(browser, base: str, a_call: str) -> None:  # type: ignore[no-untyped-def]
    stranger = browser()
    stranger.get(f"{base}/console")
    wait(stranger, "form#login")
    assert a_call not in stranger.page_source and "csrf-token" not in stranger.page_source
    assert not stranger.find_elements(By.CSS_SELECTOR, ".room")

    mute_path = f"/calling/v1/conferences/id/demo/{a_call}"
    with httpx.Client(base_url=base, timeout=10) as anonymous:
        assert anonymous.get("/tonebridge/v1/console/state").status_code == 401
        assert anonymous.get("/tonebridge/v1/console/callbacks").status_code == 401
        assert anonymous.get("/console/console.js").status_code == 401
        assert anonymous.patch(mute_path, json={"command": "unmute"}).status_code == 401
        # A forged cookie is no session.
        forged = anonymous.patch(
            mute_path,
            json={"command": "unmute"},
            headers={"Cookie": "tonebridge_console=forged", "X-CSRF-Token": "forged"},
        )
        assert forged.status_code == 401
        # The login form refuses a post from another site's page (login CSRF).
        foreign = anonymous.post(
            "/console/login",
            data={"name": OPERATOR, "password": PASSWORD},
            headers={"Origin": "http://evil.example"},
        )
        assert foreign.status_code == 403 and "set-cookie" not in foreign.headers
        wrong = anonymous.post(
            "/console/login", data={"name": OPERATOR, "password": "guess"}, headers={"Origin": base}
        )
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers

    client, csrf = session_client(base, OPERATOR, PASSWORD)
    try:
        assert client.patch(mute_path, json={"command": "unmute"}).status_code == 403
        wrong_token = client.patch(
            mute_path, json={"command": "unmute"}, headers={"X-CSRF-Token": "x" + csrf}
        )
        assert wrong_token.status_code == 403
        assert client.post("/console/logout").status_code == 403
        # An operator acts only on calls and conferences that exist, never places calls.
        callout = client.post("/calling/v1/callouts", json={}, headers={"X-CSRF-Token": csrf})
        assert callout.status_code == 403
    finally:
        client.close()

    # An application's login sees only its own rooms, and cannot act on another's.
    other, other_csrf = session_client(base, OTHER_KEY, OTHER_SECRET)
    try:
        assert other.get("/tonebridge/v1/console/state").json()["rooms"] == []
        refused = other.patch(mute_path, json={"command": "unmute"}, headers={"X-CSRF-Token": other_csrf})
        assert refused.status_code == 404
    finally:
        other.close()
