# -*- test-case-name: tests.test_console_browser -*-
"""
The console's page in a real headless Chromium (Debian's C{chromium} and
C{chromium-driver}, driven with selenium): the operator approves a pending
request by clicking, and the extension's new socket appears on the page.

The test saves a screenshot of the page; with C{TCPEXT_UPDATE_SCREENSHOT=1}
it also writes it to C{docs/console.png} (the one docs/operations.md
shows).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests._folders import shortFolder
from tests.test_console import TIMEOUT, ConsoleService, waitUntil
from tests.test_examples import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "console-test-token-0123456789"


def startBrowser(case: SynchronousTestCase) -> Any:
    """
    A headless Chromium under selenium, with a new empty profile, that
    fetches nothing on its own; quit at the end of the test.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tcpext-chromium-")
    case.addCleanup(shutil.rmtree, profile, True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(
        service=Service(executable_path=CHROMEDRIVER), options=options
    )
    case.addCleanup(driver.quit)
    driver.set_page_load_timeout(TIMEOUT)
    return driver


def startConsole(
    case: SynchronousTestCase, tokenText: str
) -> tuple[ConsoleService, int]:
    """
    Run C{twistd tcpext} with its console on a TCP port of loopback, the
    token read from a file that holds C{tokenText}; wait for the console.

    @return: The service and the console's port.
    """
    tokenFile = os.path.join(shortFolder(case), "token")
    with open(tokenFile, "w") as f:
        f.write(tokenText)
    service = ConsoleService(
        case,
        None,
        admin="tcp:0:interface=127.0.0.1",
        extra=["--admin-token-file", tokenFile],
    )
    service.waitForConsole()
    [line] = [
        line
        for line in service.twistd.log().splitlines()
        if "tcpext: operator console on" in line
    ]
    return service, int(line.rsplit(":", 1)[1])


class ConsolePageTests(SynchronousTestCase):
    """
    The page at C{/}, over a TCP console with a token.
    """

    def test_approveByClicking(self) -> None:
        """
        The page takes its token from the URL fragment, lists the pending
        request, and a click on Approve grants it: the extension's socket
        to the echo server then shows on the page, with its bytes, without
        a reload.  The token never stays in the address bar.
        """
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By

        service, port = startConsole(self, TOKEN + "\n")
        twistd = service.twistd
        driver = startBrowser(self)
        driver.get(f"http://127.0.0.1:{port}/#token={TOKEN}")
        self.assertNotIn(TOKEN, driver.current_url)

        def approveButton() -> Any:
            found = driver.find_elements(By.CSS_SELECTOR, "#requests button.approve")
            return found[0] if found else None

        def clickApprove() -> bool:
            # The page redraws itself every second: an element found just
            # before may be gone; try again then.
            try:
                button = approveButton()
                if button is None:
                    return False
                row = driver.find_element(By.CSS_SELECTOR, "#requests tbody tr")
                self.assertIn("on-demand", row.text)
                self.assertIn("tcp-connect:127.0.0.1:1024-65535", row.text)
                button.click()
            except StaleElementReferenceException:
                return False
            return True

        waitUntil(twistd, clickApprove, "the pending request on the page")

        remote = f"127.0.0.1:{service.echoPort}"

        def socketRow() -> Any:
            # Read the table in one step (the page may redraw between two).
            rows = driver.execute_script(
                "return Array.from(document.querySelectorAll("
                "'.extension[data-extension=\"on-demand\"] table.sockets tbody tr'"
                ")).map((r) => Array.from(r.cells).map((c) => c.textContent));"
            )
            for cells in rows:
                if len(cells) >= 5 and cells[2] == remote and int(cells[3] or 0) > 0:
                    return cells
            return None

        cells = waitUntil(twistd, socketRow, "the new socket on the page")
        self.assertEqual(cells[0], "client")
        self.assertEqual(
            driver.find_elements(By.CSS_SELECTOR, "#requests button.approve"), []
        )
        stored = driver.execute_script(
            "return document.querySelector("
            "'.extension[data-extension=\"on-demand\"] .grants').textContent;"
        )
        self.assertIn("tcp-connect:127.0.0.1:1024-65535", stored)
        waitUntil(
            twistd,
            lambda: (
                "approved in the operator console"
                in driver.find_element(By.ID, "audit").text
            ),
            "the approval in the audit table",
        )
        self.assertNotIn(TOKEN, driver.current_url)
        time.sleep(0.5)
        shot = os.path.join(os.path.abspath(self.mktemp()) + ".png")
        self.assertTrue(driver.save_screenshot(shot))
        if os.environ.get("TCPEXT_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, os.path.join(REPO, "docs", "console.png"))

    def test_asksForToken(self) -> None:
        """
        Without a token in the URL the page asks for one, and works once
        it is typed.
        """
        from selenium.webdriver.common.by import By

        service, port = startConsole(self, TOKEN)
        twistd = service.twistd
        driver = startBrowser(self)
        driver.get(f"http://127.0.0.1:{port}/")
        login = waitUntil(
            twistd,
            lambda: (
                driver.find_element(By.ID, "login").is_displayed()
                and driver.find_element(By.ID, "login")
            ),
            "the token form",
        )
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        login.find_element(By.CSS_SELECTOR, "button").click()
        waitUntil(
            twistd,
            lambda: driver.find_elements(
                By.CSS_SELECTOR, '.extension[data-extension="on-demand"]'
            ),
            "the extension on the page",
        )
        self.assertFalse(driver.find_element(By.ID, "login").is_displayed())
