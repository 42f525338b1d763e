#!/usr/bin/env python3
"""The web UI in a real browser: headless Chromium from Debian, driven by
chromedriver through selenium, against a running broker's management port.

    UI_URL=http://127.0.0.1:15672 python3 tests/browser/ui_test.py

Environment: UI_URL (the management server), UI_USER / UI_PASSWORD (an
administrator; default guest/guest), UI_VHOST (default "/"),
UI_SCREENSHOTS (directory, default target/ui-screenshots), UI_TIMEOUT
(seconds a change may take to show, default 30), UI_AMQP_URL (an AMQP
URI of the same broker, for the connection-close step), CHROMEDRIVER (default
/usr/bin/chromedriver), CHROMIUM (default /usr/bin/chromium).

The steps run in groups, in order, each step a check. The queue: a wrong
password is refused; log in; declare a queue through the add form; publish
to it through the queue page; see its ready count go 0 -> 1; peek the
message back (requeued) and check its payload; get it with ack (1 -> 0);
publish twice and purge; delete the queue; the overview shows one card per
shard. An exchange: declare, bind a queue, publish through it (routed, and
unroutable), unbind, delete. Users, vhosts, permissions, policies: add a
user, change its tags (its password must survive), add a vhost, set and
clear permissions and a policy, delete both. Definitions: export (a
download) and import (an upload). Connections: one opened with pika
(UI_AMQP_URL) is closed from the UI. Then log out, and no script errors in
the console. What the UI shows is cross-checked with the HTTP API. Every
wait is for a condition (WebDriverWait), never a fixed sleep. A screenshot
is saved after each step. A failed step stops its group (the rest of the
group counts as failed); the next group runs. Objects are named `ui-test-*`
and removed at the end. The last line is `N passed, N failed`; the exit
status is non-zero on any failure.
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
AMQP_URL = os.environ.get("UI_AMQP_URL", "")
DOWNLOADS = os.path.abspath(os.path.join(SHOTS, "downloads"))

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
    os.makedirs(DOWNLOADS, exist_ok=True)
    options.add_experimental_option(
        "prefs", {"download.default_directory": DOWNLOADS, "download.prompt_for_download": False}
    )
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


# ---------------------------------------------------------------- exchanges, bindings

EXCHANGE = f"ui-test-x-{os.getpid()}-{secrets.token_hex(3)}"
BOUND = f"{QUEUE}-bound"


def row_button(table_testid, first_cell, button_testid):
    """The button of the table row whose first cell is `first_cell`."""
    return (
        f'//*[@data-testid="{table_testid}"]//tr[td[1][normalize-space()="{first_cell}"]]'
        f'//button[@data-testid="{button_testid}"]'
    )


def confirm_xpath(ui, xpath):
    """A destructive button found by XPath: arm, then act (rows re-render on
    every poll, so each click finds the button again)."""

    def click(expect_armed):
        def attempt(_):
            try:
                button = ui.d.find_element(By.XPATH, xpath)
                if expect_armed and "armed" not in button.get_attribute("class"):
                    return False
                button.click()
                return True
            except (NoSuchElementException, StaleElementReferenceException):
                return False

        ui.wait.until(attempt)

    click(False)
    try:
        click(True)
    except TimeoutException:
        raise AssertionError(f"{xpath} did not arm or could not be clicked") from None


def wait_api(ui, what, predicate):
    """Waits until the API's answer satisfies predicate (the broker applies
    some changes a moment after it answers)."""
    last = []

    def check(_):
        last[:] = [predicate()]
        return last[0]

    try:
        ui.wait.until(check)
    except TimeoutException:
        raise AssertionError(f"the API never showed {what}") from None


def exchange_bind_publish(ui):
    assert api("PUT", f"/queues/{urllib.parse.quote(VHOST, safe='')}/{BOUND}", {"durable": False})[0] in (201, 204)
    ui.d.get(URL + "/#/exchanges")
    ui.type_into("add-exchange-name", EXCHANGE)
    ui.click("add-exchange-submit")
    ui.flash("ok", f"Exchange {EXCHANGE} declared")
    ui.type_into("exchanges-filter", EXCHANGE)
    ui.click_css(f'[data-testid="exchanges"] a[href$="/{EXCHANGE}"]')
    ui.type_into("bind-destination", BOUND)
    ui.type_into("bind-key", "ui.key")
    ui.click("bind-submit")
    ui.flash("ok", "Binding added")
    ui.visible(f'[data-testid="exchange-bindings"] a[href$="/{BOUND}"]', "the new binding")
    ui.type_into("exchange-publish-key", "ui.key")
    ui.type_into("exchange-publish-payload", "through the exchange")
    ui.click("exchange-publish-submit")
    ui.flash("ok", "Message published.")
    qpath = f"/queues/{urllib.parse.quote(VHOST, safe='')}/{BOUND}"
    wait_api(ui, f"1 message in {BOUND}", lambda: api("GET", qpath)[1].get("messages") == 1)
    ui.type_into("exchange-publish-key", "no.such.key")
    ui.click("exchange-publish-submit")
    ui.flash("warn", "not routed")


def exchange_unbind_delete(ui):
    confirm_xpath(ui, row_button("exchange-bindings", EXCHANGE, "unbind"))
    ui.flash("ok", "Binding removed")
    ui.wait.until(lambda _: not ui.d.find_elements(By.CSS_SELECTOR, f'[data-testid="exchange-bindings"] a[href$="/{BOUND}"]'))
    bindings = api("GET", f"/exchanges/{urllib.parse.quote(VHOST, safe='')}/{EXCHANGE}/bindings/source")[1]
    assert bindings == [], f"the API still has bindings: {bindings}"
    ui.confirm("delete-exchange")
    ui.flash("ok", f"Exchange {EXCHANGE} deleted")
    assert api("GET", f"/exchanges/{urllib.parse.quote(VHOST, safe='')}/{EXCHANGE}")[0] == 404


# ---------------------------------------------------------------- users, vhosts, permissions, policies

USER_NEW = f"ui-test-u-{os.getpid()}"
USER_NEW_PASSWORD = secrets.token_hex(8)
VHOST_NEW = f"ui-test-vh-{os.getpid()}"
POLICY = f"ui-test-pol-{os.getpid()}"


def users_add_and_retag(ui):
    ui.d.get(URL + "/#/admin/users")
    ui.type_into("user-name", USER_NEW)
    ui.d.find_element(By.CSS_SELECTOR, '[data-testid="add-user"] input[name="password"]').send_keys(USER_NEW_PASSWORD)
    ui.d.find_element(By.CSS_SELECTOR, '[data-testid="add-user"] input[name="tags"]').send_keys("monitoring")
    ui.click("add-user-submit")
    ui.flash("ok", f"User {USER_NEW} saved")
    ui.wait.until(EC.visibility_of_element_located((By.XPATH, f'//*[@data-testid="users"]//td[normalize-space()="{USER_NEW}"]')))
    assert api("GET", "/whoami", user=USER_NEW, password=USER_NEW_PASSWORD)[0] == 200, "the new user cannot log in"
    # New tags, no password: the stored password must survive.
    ui.type_into("user-name", USER_NEW)
    tags = ui.d.find_element(By.CSS_SELECTOR, '[data-testid="add-user"] input[name="tags"]')
    tags.clear()
    tags.send_keys("management, policymaker")
    ui.click("add-user-submit")
    ui.flash("ok", f"User {USER_NEW} saved")
    wait_api(ui, "the new tags", lambda: sorted(api("GET", f"/users/{USER_NEW}")[1].get("tags", [])) == ["management", "policymaker"])
    status, me = api("GET", "/whoami", user=USER_NEW, password=USER_NEW_PASSWORD)
    assert status == 200, f"the password was lost when the tags changed ({status} {me})"


def vhost_permissions_policy(ui):
    ui.d.get(URL + "/#/admin/vhosts")
    ui.type_into("vhost-name", VHOST_NEW)
    ui.click("add-vhost-submit")
    ui.flash("ok", f"Virtual host {VHOST_NEW} added")
    wait_api(ui, f"vhost {VHOST_NEW}", lambda: api("GET", f"/vhosts/{VHOST_NEW}")[0] == 200)

    ui.d.get(URL + "/#/admin/permissions")
    ui.by_testid("set-permissions")
    Select(ui.d.find_element(By.CSS_SELECTOR, '[data-testid="set-permissions"] select[name="user"]')).select_by_value(USER_NEW)
    Select(ui.d.find_element(By.CSS_SELECTOR, '[data-testid="set-permissions"] select[name="vhost"]')).select_by_value(VHOST_NEW)
    read = ui.d.find_element(By.CSS_SELECTOR, '[data-testid="set-permissions"] input[name="read"]')
    read.clear()
    read.send_keys("^ui-")
    ui.click("set-permissions-submit")
    ui.flash("ok", f"Permissions of {USER_NEW} in {VHOST_NEW} set")
    status, perm = api("GET", f"/permissions/{VHOST_NEW}/{USER_NEW}")
    assert status == 200 and perm["read"] == "^ui-" and perm["configure"] == ".*", perm
    ui.screenshot("permissions")
    confirm_xpath(ui, row_button("permissions", USER_NEW, "clear-permissions"))
    ui.flash("ok", "cleared")
    wait_api(ui, "the permissions gone", lambda: api("GET", f"/permissions/{VHOST_NEW}/{USER_NEW}")[0] == 404)

    ui.d.get(URL + "/#/admin/policies")
    form = '[data-testid="set-policy"]'
    ui.by_testid("set-policy")
    Select(ui.d.find_element(By.CSS_SELECTOR, f'{form} select[name="vhost"]')).select_by_value(VHOST_NEW)
    ui.d.find_element(By.CSS_SELECTOR, f'{form} input[name="name"]').send_keys(POLICY)
    ui.d.find_element(By.CSS_SELECTOR, f'{form} input[name="pattern"]').send_keys("^ui-test-")
    Select(ui.d.find_element(By.CSS_SELECTOR, f'{form} select[name="apply_to"]')).select_by_value("queues")
    ui.d.find_element(By.CSS_SELECTOR, f'{form} textarea[name="definition"]').send_keys("max-length = 10\noverflow = reject-publish")
    ui.click("set-policy-submit")
    ui.flash("ok", f"Policy {POLICY} set")
    status, policy = api("GET", f"/policies/{VHOST_NEW}/{POLICY}")
    assert status == 200, f"GET the policy: {status}"
    assert policy["definition"] == {"max-length": 10, "overflow": "reject-publish"}, policy
    assert policy["apply-to"] == "queues" and policy["pattern"] == "^ui-test-", policy
    ui.screenshot("policy")
    confirm_xpath(ui, row_button("policies", VHOST_NEW, "clear-policy"))
    ui.flash("ok", f"Policy {POLICY} cleared")
    assert api("GET", f"/policies/{VHOST_NEW}/{POLICY}")[0] == 404


def delete_vhost_and_user(ui):
    ui.d.get(URL + "/#/admin/vhosts")
    confirm_xpath(ui, row_button("vhosts", VHOST_NEW, "delete-vhost"))
    ui.flash("ok", f"Virtual host {VHOST_NEW} deleted")
    wait_api(ui, f"vhost {VHOST_NEW} gone", lambda: api("GET", f"/vhosts/{VHOST_NEW}")[0] == 404)
    ui.d.get(URL + "/#/admin/users")
    confirm_xpath(ui, row_button("users", USER_NEW, "delete-user"))
    ui.flash("ok", f"User {USER_NEW} deleted")
    assert api("GET", f"/users/{USER_NEW}")[0] == 404
    assert api("GET", "/whoami", user=USER_NEW, password=USER_NEW_PASSWORD)[0] == 401


# ---------------------------------------------------------------- definitions

IMPORTED = f"ui-test-imported-{os.getpid()}"


def definitions_export_import(ui):
    ui.d.get(URL + "/#/admin/definitions")
    before = set(os.listdir(DOWNLOADS))
    ui.click("export-submit")
    ui.flash("ok", "Definitions exported")

    def downloaded(_):
        new = [f for f in set(os.listdir(DOWNLOADS)) - before if f.endswith(".json")]
        return new[0] if new else False

    name = ui.wait.until(downloaded)
    with open(os.path.join(DOWNLOADS, name)) as f:
        exported = json.load(f)
    for key in ("users", "vhosts", "permissions", "queues", "exchanges", "bindings"):
        assert key in exported, f"the export has no {key}: {sorted(exported)}"
    assert any(u["name"] == USER for u in exported["users"]), "the export lacks the logged-in user"

    upload = os.path.join(DOWNLOADS, "ui-test-import.json")
    with open(upload, "w") as f:
        queue = {"name": IMPORTED, "vhost": VHOST, "durable": True, "auto_delete": False, "arguments": {}}
        json.dump({"queues": [queue]}, f)
    ui.d.find_element(By.CSS_SELECTOR, '[data-testid="import"] input[type="file"]').send_keys(upload)
    ui.d.find_element(By.CSS_SELECTOR, '[data-testid="import"] button[type="submit"]').click()
    ui.flash("ok", "Definitions imported")
    qpath = f"/queues/{urllib.parse.quote(VHOST, safe='')}/{IMPORTED}"
    wait_api(ui, f"the imported queue {IMPORTED}", lambda: api("GET", qpath)[0] == 200)


# ---------------------------------------------------------------- connections


def close_a_connection(ui):
    if not AMQP_URL:
        return  # no AMQP address given: nothing to connect
    import pika

    name = f"ui-test-conn-{os.getpid()}"
    params = pika.URLParameters(AMQP_URL)
    params.client_properties = {"connection_name": name}
    connection = pika.BlockingConnection(params)
    try:
        ui.d.get(URL + "/#/connections")
        row = f'//*[@data-testid="connections"]//tr[td[1][contains(., "{name}")]]'
        try:
            ui.wait.until(EC.visibility_of_element_located((By.XPATH, row)))
        except TimeoutException:
            raise AssertionError(f"the connection {name} is not listed") from None
        ui.screenshot("connections")
        confirm_xpath(ui, row + '//button[@data-testid="close-connection"]')
        ui.flash("ok", "closed")
        closed = []

        def broker_closed(_):
            try:
                connection.process_data_events(time_limit=0.1)
            except pika.exceptions.AMQPConnectionError as e:
                closed.append(e)
                return True
            return False

        ui.wait.until(broker_closed)
        ui.wait.until(lambda _: not ui.d.find_elements(By.XPATH, row))
    finally:
        if connection.is_open:
            connection.close()


STEPS = [
    [
        ("wrong password is refused", wrong_password_is_refused, "login-refused"),
        ("log in", log_in, "overview"),
        ("declare a queue", declare_queue, "queue-declared"),
        ("publish and see the count change", publish_and_see_the_count, "published"),
        ("peek the message back (requeued)", peek_the_message, "peeked"),
        ("get the message with ack", get_with_ack, "got"),
        ("purge", purge, "purged"),
        ("delete the queue", delete_queue, "deleted"),
        ("overview after the run", overview_after, "overview-after"),
    ],
    [
        ("exchange: declare, bind a queue, publish through it", exchange_bind_publish, "exchange-published"),
        ("exchange: unbind, delete", exchange_unbind_delete, "exchange-deleted"),
    ],
    [
        ("users: add, change tags keeping the password", users_add_and_retag, "users"),
        ("vhost, permissions and a policy: set and clear", vhost_permissions_policy, "vhosts"),
        ("vhost and user: delete", delete_vhost_and_user, "users-deleted"),
    ],
    [("definitions: export (download) and import (upload)", definitions_export_import, "definitions")],
    [("connections: close one", close_a_connection, "connection-closed")],
    [
        ("log out", log_out, "logged-out"),
        ("no script errors in the console", no_script_errors, None),
    ],
]


def cleanup():
    """Leaves nothing behind when a step failed half-way."""
    vh = urllib.parse.quote(VHOST, safe="")
    for path in (queue_path(), f"/queues/{vh}/{BOUND}", f"/queues/{vh}/{IMPORTED}", f"/exchanges/{vh}/{EXCHANGE}",
                 f"/vhosts/{VHOST_NEW}", f"/users/{USER_NEW}"):
        try:
            api("DELETE", path)
        except OSError:
            pass


def main():
    print(f"web UI at {URL} in {CHROMIUM} (queue {QUEUE}); screenshots in {SHOTS}")
    passed = failed = 0
    driver = browser()
    ui = Ui(driver)
    try:
        for group in STEPS:
            for index, (name, step, shot) in enumerate(group):
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
                    for later, _, _ in group[index + 1 :]:
                        failed += 1
                        print(f"FAIL {later}: not run (an earlier step of its group failed)")
                    break
                passed += 1
                where = f" -> {ui.screenshot(shot)}" if shot else ""
                print(f"ok   {name} ({time.monotonic() - started:.1f} s){where}")
    finally:
        driver.quit()
        cleanup()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
