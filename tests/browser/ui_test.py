#!/usr/bin/env python3
"""The web UI in a real browser: headless Chromium from Debian, driven by
chromedriver through selenium, against a running broker's management port.

    UI_URL=http://127.0.0.1:15672 python3 tests/browser/ui_test.py

Environment: UI_URL (the management server), UI_USER / UI_PASSWORD (an
administrator; default guest/guest), UI_VHOST (default "/"),
UI_SCREENSHOTS (directory, default target/ui-screenshots), UI_TIMEOUT
(seconds a change may take to show, default 30), CHROMEDRIVER (default
/usr/bin/chromedriver), CHROMIUM (default /usr/bin/chromium).

The steps run in order, each one a check: a wrong password is refused; log
in; declare a queue through the add form; publish to it through the queue
page; see its ready count go 0 -> 1; peek the message back (requeued) and
check its payload; get it with ack (count 1 -> 0); publish again and purge;
delete the queue; log out. What the UI shows is cross-checked with the HTTP
API where it matters. Every wait is for a condition (WebDriverWait), never
a fixed sleep. A screenshot of the page is saved after each step. A step
that fails stops the run; the steps after it count as failed. The last line
is `N passed, N failed`; the exit status is non-zero on any failure.
"""

import base64
import json
import os
import secrets
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = os.environ.get("UI_URL", "http://127.0.0.1:15672").rstrip("/")
USER = os.environ.get("UI_USER", "guest")
PASSWORD = os.environ.get("UI_PASSWORD", "guest")
VHOST = os.environ.get("UI_VHOST", "/")
SHOTS = os.environ.get("UI_SCREENSHOTS", "target/ui-screenshots")
TIMEOUT = float(os.environ.get("UI_TIMEOUT", "30"))
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

QUEUE = f"ui-test-{os.getpid()}-{secrets.token_hex(3)}"
PAYLOAD = f"hello from the browser {secrets.token_hex(4)} \u00e9\u00e8"
WINDOW = (1400, 1000)


# ---------------------------------------------------------------- the API, for cross-checks


def api(method, path, body=None, user=USER, password=PASSWORD):
    """(status, parsed JSON or None) of one management API call."""
    request = urllib.request.Request(URL + "/api" + path, method=method)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, data, timeout=10) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text) if text else None
        except ValueError:
            return e.code, text


def queue_path():
    return f"/queues/{urllib.parse.quote(VHOST, safe='')}/{urllib.parse.quote(QUEUE, safe='')}"


# ---------------------------------------------------------------- the browser


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Ui:
    def __init__(self, driver):
        self.d = driver
        self.wait = WebDriverWait(driver, TIMEOUT, poll_frequency=0.1)
        self.shot_number = 0

    def find(self, testid):
        return self.d.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')

    def visible(self, css, what=None):
        try:
            return self.wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))
        except TimeoutException:
            raise AssertionError(f"{what or css} did not appear within {TIMEOUT:.0f} s") from None

    def by_testid(self, testid):
        return self.visible(f'[data-testid="{testid}"]', testid)

    def text_becomes(self, testid, expected):
        """Waits until the element's text is `expected` (the page's poll and
        the refresh after each action update it)."""
        seen = []

        def check(_):
            try:
                text = self.find(testid).text.strip()
            except Exception:  # replaced while the page re-renders
                return False
            if not seen or seen[-1] != text:
                seen.append(text)
            return text == expected

        try:
            self.wait.until(check)
        except TimeoutException:
            raise AssertionError(f"{testid} showed {seen}, never {expected!r}, within {TIMEOUT:.0f} s") from None

    def flash(self, kind, contains):
        """Waits for a flash message of `kind` that says `contains`."""
        seen = []

        def check(_):
            try:
                text = self.find(f"flash-{kind}").text
            except Exception:  # none shown yet, or replaced
                return False
            seen.append(text)
            return contains in text

        try:
            self.wait.until(check)
        except TimeoutException:
            raise AssertionError(f"no {kind} flash saying {contains!r} (saw {sorted(set(seen))})") from None

    def type_into(self, testid, text):
        element = self.by_testid(testid)
        element.clear()
        element.send_keys(text)

    def click_css(self, css):
        """Clicks the element; lists re-render on every poll, so an element
        replaced between finding and clicking is found again."""
        clicked = []

        def attempt(_):
            try:
                element = self.d.find_element(By.CSS_SELECTOR, css)
                if not (element.is_displayed() and element.is_enabled()):
                    return False
                element.click()
            except (NoSuchElementException, StaleElementReferenceException):
                return False
            clicked.append(element)
            return True

        try:
            self.wait.until(attempt)
        except TimeoutException:
            raise AssertionError(f"could not click {css} within {TIMEOUT:.0f} s") from None
        return clicked[0]

    def click(self, testid):
        return self.click_css(f'[data-testid="{testid}"]')

    def confirm(self, testid):
        """A destructive button: the first click arms it, the second acts."""
        button = self.click(testid)
        self.wait.until(lambda _: "armed" in button.get_attribute("class"))
        button.click()

    def screenshot(self, name):
        self.shot_number += 1
        os.makedirs(SHOTS, exist_ok=True)
        self.d.execute_script("window.scrollTo(0, 0)")
        height = self.d.execute_script("return document.documentElement.scrollHeight")
        self.d.set_window_size(WINDOW[0], max(WINDOW[1], min(height + 40, 4000)))
        path = os.path.join(SHOTS, f"{self.shot_number:02d}-{name}.png")
        self.d.save_screenshot(path)
        self.d.set_window_size(*WINDOW)
        return path

    def console_errors(self):
        """Errors the page's scripts logged, less the 401 the wrong-password
        step asks for."""
        errors = []
        for entry in self.d.get_log("browser"):
            if entry["level"] != "SEVERE":
                continue
            if "/api/whoami" in entry["message"] and "401" in entry["message"]:
                continue
            errors.append(entry["message"])
        return errors


# ---------------------------------------------------------------- the steps


def wrong_password_is_refused(ui):
    ui.d.get(URL + "/")
    ui.visible("#login-user", "the login form")
    ui.d.find_element(By.ID, "login-user").send_keys(USER)
    ui.d.find_element(By.ID, "login-password").send_keys(PASSWORD + "-wrong")
    ui.d.find_element(By.ID, "login-submit").click()
    error = ui.by_testid("login-error")
    assert "Login failed" in error.text, f"login error says {error.text!r}"
    assert not ui.d.find_element(By.ID, "nav").is_displayed(), "the navigation shows without a login"
    stored = ui.d.execute_script("return sessionStorage.getItem('lepus.auth')")
    assert stored is None, "refused credentials were kept in sessionStorage"
    assert api("GET", "/whoami", password=PASSWORD + "-wrong")[0] == 401, "the API let the wrong password in"


def log_in(ui):
    password = ui.d.find_element(By.ID, "login-password")
    password.clear()
    password.send_keys(PASSWORD)
    ui.d.find_element(By.ID, "login-submit").click()
    ui.wait.until(lambda _: ui.find("whoami").text.startswith(USER))
    ui.by_testid("overview-queues")
    ui.by_testid("rates-chart")
    assert ui.d.execute_script("return sessionStorage.getItem('lepus.auth')"), "credentials not kept"


def declare_queue(ui):
    ui.d.get(URL + "/#/queues")
    ui.by_testid("add-queue-name")
    Select(ui.by_testid("add-queue-vhost")).select_by_value(VHOST)
    ui.type_into("add-queue-name", QUEUE)
    ui.click("add-queue-submit")
    ui.flash("ok", f"Queue {QUEUE} declared")
    ui.type_into("queues-filter", QUEUE)
    link = ui.visible(f'[data-testid="queues"] a[href$="/{urllib.parse.quote(QUEUE, safe="")}"]', f"{QUEUE} in the list")
    assert link.text == QUEUE, link.text
    status, queue = api("GET", queue_path())
    assert status == 200, f"the API does not know the queue: {status} {queue}"
    assert queue["durable"] is True and queue["auto_delete"] is False, queue


def publish_and_see_the_count(ui):
    ui.click_css(f'[data-testid="queues"] a[href$="/{urllib.parse.quote(QUEUE, safe="")}"]')
    ui.text_becomes("queue-name", QUEUE)
    ui.text_becomes("queue-ready", "0")
    ui.type_into("publish-payload", PAYLOAD)
    ui.click("publish-submit")
    ui.flash("ok", "Message published.")
    ui.text_becomes("queue-ready", "1")
    ui.text_becomes("queue-messages", "1")
    status, queue = api("GET", queue_path())
    assert status == 200 and queue["messages_ready"] == 1, f"the API says {queue.get('messages_ready')}"


def peek_the_message(ui):
    Select(ui.by_testid("get-ackmode")).select_by_value("ack_requeue_true")
    ui.click("get-submit")
    payload = ui.by_testid("message-payload")
    assert payload.text == PAYLOAD, f"payload {payload.text!r}, published {PAYLOAD!r}"
    assert len(ui.d.find_elements(By.CSS_SELECTOR, '[data-testid="message"]')) == 1
    # Requeued: still one ready message.
    ui.text_becomes("queue-ready", "1")


def get_with_ack(ui):
    shown = ui.find("message-payload")
    Select(ui.by_testid("get-ackmode")).select_by_value("ack_requeue_false")
    ui.click("get-submit")
    ui.wait.until(EC.staleness_of(shown))  # the peeked message's view is replaced
    payload = ui.by_testid("message-payload").text
    assert payload == PAYLOAD, f"payload {payload!r}, published {PAYLOAD!r}"
    ui.text_becomes("queue-ready", "0")
    status, queue = api("GET", queue_path())
    assert status == 200 and queue["messages"] == 0, f"the API still has {queue.get('messages')} messages"


def purge(ui):
    for _ in range(2):
        ui.type_into("publish-payload", PAYLOAD)
        ui.click("publish-submit")
        ui.flash("ok", "Message published.")
    ui.text_becomes("queue-ready", "2")
    ui.screenshot("before-purge")
    ui.confirm("purge")
    ui.flash("ok", f"Queue {QUEUE} purged")
    ui.text_becomes("queue-ready", "0")
    ui.click("get-submit")
    ui.by_testid("get-empty")


def delete_queue(ui):
    ui.confirm("delete-queue")
    ui.flash("ok", f"Queue {QUEUE} deleted")
    ui.wait.until(lambda d: d.current_url.endswith("#/queues"))
    ui.type_into("queues-filter", QUEUE)
    ui.wait.until(lambda _: not ui.d.find_elements(By.CSS_SELECTOR, f'[data-testid="queues"] a[href$="/{QUEUE}"]'))
    status, _ = api("GET", queue_path())
    assert status == 404, f"the API still has the queue ({status})"


def overview_after(ui):
    ui.d.get(URL + "/#/")
    ui.by_testid("rates-chart")
    ui.wait.until(lambda _: ui.find("rate-publish").text.endswith("/s"))
    status, nodes = api("GET", "/nodes")
    assert status == 200, f"GET /api/nodes: {status}"
    shards = nodes[0].get("lepus_shards")
    if shards is None:
        return  # a broker without shards (RabbitMQ): no shard view
    for shard in shards:
        card = ui.by_testid(f"shard-{shard['shard']}")
        assert f"Shard {shard['shard']}" in card.text, card.text
    cards = ui.d.find_elements(By.CSS_SELECTOR, '[data-testid="shards"] .shard')
    assert len(cards) == len(shards), f"{len(cards)} shard cards for {len(shards)} shards"


def log_out(ui):
    ui.d.find_element(By.ID, "logout").click()
    ui.visible("#login-user", "the login form after logout")
    assert ui.d.execute_script("return sessionStorage.getItem('lepus.auth')") is None


def no_script_errors(ui):
    errors = ui.console_errors()
    assert not errors, "the console has errors:\n  " + "\n  ".join(errors)


STEPS = [
    ("wrong password is refused", wrong_password_is_refused, "login-refused"),
    ("log in", log_in, "overview"),
    ("declare a queue", declare_queue, "queue-declared"),
    ("publish and see the count change", publish_and_see_the_count, "published"),
    ("peek the message back (requeued)", peek_the_message, "peeked"),
    ("get the message with ack", get_with_ack, "got"),
    ("purge", purge, "purged"),
    ("delete the queue", delete_queue, "deleted"),
    ("overview after the run", overview_after, "overview-after"),
    ("log out", log_out, "logged-out"),
    ("no script errors in the console", no_script_errors, None),
]


def main():
    print(f"web UI at {URL} in {CHROMIUM} (queue {QUEUE}); screenshots in {SHOTS}")
    passed = failed = 0
    driver = browser()
    ui = Ui(driver)
    try:
        for index, (name, step, shot) in enumerate(STEPS):
            started = time.monotonic()
            try:
                step(ui)
            except Exception as e:  # an assertion, a timeout, a lost element
                failed += 1
                if isinstance(e, WebDriverException):
                    detail = f"{type(e).__name__}: {e.msg}"
                else:
                    detail = str(e) or traceback.format_exc(limit=2)
                print(f"FAIL {name}: {detail}")
                print(f"     screenshot: {ui.screenshot('FAILED-' + (shot or 'step'))}")
                for later, _, _ in STEPS[index + 1 :]:
                    failed += 1
                    print(f"FAIL {later}: not run (an earlier step failed)")
                break
            passed += 1
            where = f" -> {ui.screenshot(shot)}" if shot else ""
            print(f"ok   {name} ({time.monotonic() - started:.1f} s){where}")
    finally:
        driver.quit()
        api("DELETE", queue_path())  # leave nothing behind if a step failed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
