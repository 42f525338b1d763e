#!/usr/bin/env python3
"""Screenshots of the web UI's overview while a load runs.

    UI_URL=http://127.0.0.1:15672 python3 tests/browser/overview_shots.py OUT_PREFIX COUNT SPACING_S

Logs in (UI_USER / UI_PASSWORD, default guest/guest), opens the overview,
waits until it shows a publish rate above zero (the load has reached the
charts), then saves COUNT full-page screenshots SPACING_S seconds apart as
OUT_PREFIX-overview-N.png, and one of the queue list as
OUT_PREFIX-queues.png. Prints the paths; exits non-zero if the overview never
shows the load.
"""

import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ.get("UI_URL", "http://127.0.0.1:15672").rstrip("/")
USER = os.environ.get("UI_USER", "guest")
PASSWORD = os.environ.get("UI_PASSWORD", "guest")
WIDTH = 1400


def rate_value(text):
    """'1,234/s' -> 1234.0; anything else -> 0."""
    try:
        return float(text.replace("/s", "").replace(",", ""))
    except ValueError:
        return 0.0


def shot(driver, path):
    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, min(max(height + 40, 900), 4000))
    driver.save_screenshot(path)
    print(path)


def main():
    prefix, count, spacing = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={WIDTH},1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=options)
    try:
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        driver.get(URL + "/")
        wait.until(lambda d: d.find_element(By.ID, "login-user").is_displayed())
        driver.find_element(By.ID, "login-user").send_keys(USER)
        driver.find_element(By.ID, "login-password").send_keys(PASSWORD)
        driver.find_element(By.ID, "login-submit").click()
        rate = lambda: driver.find_element(By.CSS_SELECTOR, '[data-testid="rate-publish"]').text  # noqa: E731
        try:
            wait.until(lambda _: rate_value(rate()) > 0)
        except TimeoutException:
            print(f"the overview never showed a publish rate above 0 (last: {rate()!r})")
            shot(driver, f"{prefix}-overview-no-load.png")
            return 1
        for n in range(1, count + 1):
            # The spacing lets the charts gather samples between pictures;
            # nothing waits on it for correctness.
            time.sleep(spacing)
            shot(driver, f"{prefix}-overview-{n}.png")
            driver.set_window_size(WIDTH, 1000)
        driver.get(URL + "/#/queues")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="queues"] tbody tr'))
        shot(driver, f"{prefix}-queues.png")
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
