"""
The host is bounded whatever an isolated extension sends: hostile
extensions run by a real C{twistd tcpext --isolation process} flood their
channel with an AMP box that never ends, and trigger denials in a tight
loop; the service's memory and log stay bounded.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests._extensions import extensionWithScript
from tests.test_examples import STARTUP_TIMEOUT, Twistd, readLine
from tests.test_isolation import _NO_CONFINEMENT

_PRELUDE = """
import gc, json, os, socket, struct, time
from twisted.internet import task
from tcpext import sandbox
from tcpext._wire import Connect

REPORT = {report}


def hostConnection():
    for thing in gc.get_objects():
        if isinstance(thing, sandbox.HostConnection):
            return thing
"""

_FLOODER = """
async def main(browser):
    # Wait for the test's word, then write AMP key/value pairs straight to
    # the channel, distinct keys, never ending the box.
    sock = await browser.TCPSocket.connect(host="127.0.0.1", port=REPORT)
    await sock.opened
    await sock.readExactly(3)
    channel = socket.socket(fileno=os.dup(hostConnection().transport.fileno()))
    channel.setblocking(True)
    value = b"v" * 60000
    pairs = 0
    try:
        while True:
            key = b"k%d" % pairs
            channel.sendall(
                struct.pack("!H", len(key)) + key
                + struct.pack("!H", len(value)) + value
            )
            pairs += 1
    except OSError:
        pass
"""

_DENIED = """
async def main(browser):
    # Ask the host directly for what the grants refuse, as fast as it
    # answers, for ten seconds.
    host = hostConnection()
    tries = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            await host.callRemote(
                Connect, host="127.0.0.1", port={target}, timeout=1.0
            )
        except Exception:
            pass
        tries += 1
    # The request rate refills (it refuses the flood's excess, and would
    # refuse the report too, at once).
    await task.deferLater(browser.reactor, 3, lambda: None)
    sock = await browser.TCPSocket.connect(host="127.0.0.1", port=REPORT)
    await sock.opened
    await sock.write(json.dumps({{"tries": tries}}).encode() + b"\\n")
    await sock.close()
"""


def _rss(pid: int) -> int:
    """
    The resident memory of process C{pid}, in bytes.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class HostBoundsAttackTests(SynchronousTestCase):
    """
    An isolated extension cannot grow the host's memory or fill its log.
    """

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"

    def setUp(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(5)
        self.addCleanup(self.server.close)
        self.report = self.server.getsockname()[1]

    def extension(self, name: str, script: str, **values: object) -> str:
        """
        Write an extension that may connect to the test's report server.
        """
        return extensionWithScript(
            os.path.abspath(self.mktemp()),
            name,
            [f"tcp-connect:127.0.0.1:{self.report}"],
            _PRELUDE.format(report=self.report) + script.format(**values),
        )

    def accept(self, twistd: Twistd, what: str) -> socket.socket:
        """
        Wait (bounded) for the extension's connection to the report server.
        """
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            twistd.check(lambda: False, what)
            ready, _, _ = select.select([self.server], [], [], 0.2)
            if ready:
                conn, _ = self.server.accept()
                self.addCleanup(conn.close)
                conn.settimeout(STARTUP_TIMEOUT)
                return conn
        raise twistd.timedOut(what)

    def test_unterminatedBox(self) -> None:
        """
        Attack 4: an extension writes AMP key/value pairs to its channel
        forever, never ending the box.  The host disconnects it at the box
        limit, its memory stays flat (less than 50 MiB above what it was
        before the flood), and the extension is restarted with backoff.
        """
        folder = self.extension("flooder", _FLOODER)
        twistd = Twistd(self, ["--extension", folder], isolation="process")
        conn = self.accept(twistd, "the flooder's connection")
        before = _rss(twistd.process.pid)
        conn.sendall(b"go\n")
        peak = before
        deadline = time.monotonic() + STARTUP_TIMEOUT
        restarted = False
        while time.monotonic() < deadline:
            peak = max(peak, _rss(twistd.process.pid))
            self.assertLess(
                peak - before,
                50 * 2**20,
                f"twistd grew from {before} to {peak} bytes",
            )
            if "restarting in" in twistd.log():
                restarted = True
                break
            twistd.check(lambda: False, "the flooder's restart")
            time.sleep(0.05)
        self.assertTrue(restarted, twistd.timedOut("the flooder's restart"))
        # A few more samples, while the restarted one starts.
        for _ in range(20):
            peak = max(peak, _rss(twistd.process.pid))
            time.sleep(0.05)
        self.assertLess(peak - before, 50 * 2**20)
        log = twistd.log()
        self.assertIn(
            "the extension sent a message of more than 131072 bytes on its "
            "channel; disconnecting it",
            log,
        )
        self.assertIn("crashed", log)

    def test_denialFlood(self) -> None:
        """
        Attack 5: an extension that triggers refusals in a tight loop for
        10 s leaves a bounded number of log lines (at most 50 every 10 s)
        and a summary of how many more were suppressed.
        """
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            target = closed.getsockname()[1]
        folder = self.extension("denied", _DENIED, target=target)
        twistd = Twistd(self, ["--extension", folder], isolation="process")
        conn = self.accept(twistd, "the denied extension's report")
        tries = json.loads(readLine(conn))["tries"]
        self.assertGreater(tries, 2000, "the extension did not hammer the host")
        twistd.waitFor(
            lambda: "more denials suppressed" in twistd.log(),
            "the summary of the suppressed denials",
        )
        lines = twistd.log().splitlines()
        refused = [line for line in lines if "broker refused" in line]
        self.assertLessEqual(len(refused), 150, f"{len(refused)} lines")
        self.assertLess(len(lines), 400, f"{len(lines)} log lines")
        suppressed = sum(
            int(line.split(" more denials suppressed")[0].rsplit(" ", 1)[-1])
            for line in lines
            if "more denials suppressed" in line
        )
        self.assertGreater(suppressed, tries - 200)
