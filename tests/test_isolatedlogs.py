"""
An isolated extension logs exactly as the same extension in the service's
process: the same namespaces, levels and text (the failure summary of a
failing C{main} and its traceback included), without the host-to-child
channel's chatter; only the lines about its process are added.
"""

from __future__ import annotations

import json
import os
import re

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from tests.test_examples import Twistd
from tests.test_isolation import _NO_CONFINEMENT

_SCRIPT = """\
from twisted.logger import Logger

log = Logger(namespace="tcpext.extension.failing")
detail = Logger(namespace="tcpext.extension.failing.detail")


def main(browser):
    log.info("about to fail: {{count}} {count}", count=3)
    detail.debug("a detail")
    detail.warn("a warning with {{braces}}")
    raise ValueError("it went wrong")
"""

_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} ")

_PROCESS_LINES = (
    "extension process ",
    "extension stopped after a failure; not restarting",
)
"""What the host adds about an isolated extension's process."""


def _extensionLines(log: str, extension: str) -> list[str]:
    """
    The lines of C{log} in C{extension}'s namespaces (and the traceback
    lines that follow them), without their time stamps, up to the service's
    shutdown.
    """
    lines: list[str] = []
    keep = False
    for line in log.splitlines():
        if "Received SIGTERM" in line:
            break
        if _STAMP.match(line):
            text = _STAMP.sub("", line)
            keep = text.startswith(f"[tcpext.extension.{extension}")
            if keep:
                lines.append(text)
        elif keep:
            lines.append(line)
    return lines


class IsolatedLogsTests(SynchronousTestCase):
    """
    The same failing extension, in process and isolated.
    """

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"

    def setUp(self) -> None:
        base = FilePath(os.path.abspath(self.mktemp()))
        folder = base.child("failing")
        folder.makedirs()
        folder.child("manifest.json").setContent(
            json.dumps(
                {
                    "manifest_version": 2,
                    "name": "failing",
                    "version": "1.0",
                    "permissions": [],
                    "background": {"scripts": ["background.py"]},
                }
            ).encode()
        )
        folder.child("background.py").setContent(_SCRIPT.encode())
        self.folder = folder

    def runFailing(self, isolation: str) -> str:
        """
        Run the failing extension under C{--isolation ISOLATION} until its
        failure is logged; the log.
        """
        folder = self.folder
        twistd = Twistd(self, ["--extension", folder.path], isolation=isolation)
        done = (
            "not restarting"
            if isolation == "process"
            else "main(browser) failed: ValueError"
        )
        twistd.waitFor(lambda: done in twistd.log(), "the extension's failure")
        twistd.kill()
        return twistd.log()

    def test_failingMain(self) -> None:
        """
        The extension's lines (its own events in its namespaces, the service's
        lines about it, the failure summary with its traceback) are the same
        in both modes, in the same order; the isolated run adds only lines
        about the extension's process.
        """
        inProcess = _extensionLines(self.runFailing("none"), "failing")
        isolatedLog = self.runFailing("process")
        isolated = _extensionLines(isolatedLog, "failing")
        self.assertEqual(
            [line for line in isolated if not any(p in line for p in _PROCESS_LINES)],
            inProcess,
        )
        self.assertIn(
            "[tcpext.extension.failing#critical] extension 'failing': "
            "main(browser) failed: ValueError: it went wrong",
            inProcess,
        )
        self.assertIn(
            "[tcpext.extension.failing#info] about to fail: {count} 3", inProcess
        )
        self.assertIn(
            "[tcpext.extension.failing.detail#warn] a warning with {braces}", inProcess
        )
        self.assertTrue(any("Traceback" in line for line in inProcess))
        # No channel chatter, no prefixes, nothing in the child's other
        # namespaces.
        for noise in (
            "connection established",
            "connection lost",
            "[pid ",
            "tcpext.sandbox",
        ):
            self.assertNotIn(noise, isolatedLog)
        added = [line for line in isolated if line not in inProcess]
        self.assertTrue(added)
        self.assertTrue(
            all(any(p in line for p in _PROCESS_LINES) for line in added), added
        )
