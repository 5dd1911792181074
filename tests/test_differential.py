# -*- test-case-name: tests.test_differential -*-
"""
One table of requests, every path: the same answers.

The same extension (manifest, grants, a grant store that cannot save one of
its optional permissions) runs the same table of requests (connect by
address, by name, to C{localhost}, numeric aliases, IPv4-mapped IPv6, a
zone, names resolving to non-public addresses, listen on granted and
ungranted ports and interfaces, an automatic port, a runtime request, a
remove, a request whose save fails) through:

  - in-process C{browser.TCPSocket} and C{browser.reactor};
  - an isolated extension (a real, confined child process run by
    L{IsolatedExtension}): its C{browser.TCPSocket}, its C{browser.reactor},
    and the host directly (the wire's C{Connect} and listen request, as a
    child that skips its own checks would).

Every path must give each request the same answer: C{open} (allowed and
connected / listening), C{deny} (refused by the policy: L{PermissionDenied}
or, for a request that is not valid, L{ValueError}) or C{failed} (allowed,
but the network said no).  Names are answered by a resolver of the test's
(the host's, for the isolated extension), so the rebinding rule is tested
without DNS.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.trial.unittest import TestCase
from zope.interface import directlyProvides, providedBy

from tcpext._isolation import missingConfinement
from tcpext._ledger import MemoryGrantStore
from tcpext._supervisor import IsolatedExtension, RestartPolicy
from tcpext.browser import allowAll, makeBrowser
from tcpext.testing import FakeResolver

_NO_CONFINEMENT = "; ".join(missingConfinement()) or None

NAMES = {
    "intranet.test": ["127.0.0.1"],
    "both.test": ["127.0.0.1"],
    "half.test": ["10.255.255.1", "127.0.0.1"],
    "gone.test": [],
}
"""What the test's resolver answers (anything else: nothing)."""


# The table and the code that runs it: the same text runs in-process (the
# test executes it) and as the isolated extension's background script.
# Upper-case words are replaced with port numbers first.
TABLE = """
import gc
import json
import os

from twisted.internet import defer
from twisted.internet.protocol import ClientFactory, Factory, Protocol

from tcpext._ledger import GrantNotSaved
from tcpext.permissions import PermissionDenied

ROWS = [
    ("c-ip", "connect", "127.0.0.1", PORTA),
    ("c-ip-other-port", "connect", "127.0.0.1", PORTC),
    ("c-ip6-brackets", "connect", "[::1]", PORTV6),
    ("c-zone", "connect", "::1%lo", PORTV6),
    ("c-mapped", "connect", "::ffff:127.0.0.1", PORTA),
    ("c-mapped-hex", "connect", "[::ffff:7f00:1]", PORTA),
    ("c-alias-int", "connect", "2130706433", PORTA),
    ("c-alias-short", "connect", "127.1", PORTA),
    ("c-localhost", "connect", "localhost", PORTB),
    ("c-localhost-other-port", "connect", "localhost", PORTC),
    ("c-localhost-sub", "connect", "app.localhost", PORTB),
    ("c-rebinding", "connect", "intranet.test", PORTC),
    ("c-rebinding-ip-grant", "connect", "both.test", PORTA),
    ("c-half-refused", "connect", "half.test", PORTA),
    ("c-no-address", "connect", "gone.test", PORTA),
    ("l-port", "listen", None, LISTEN1),
    ("l-port-iface", "listen", "127.0.0.1", LISTEN1),
    ("l-ungranted", "listen", None, LISTEN2),
    ("l-iface", "listen", "127.0.0.1", LISTEN3),
    ("l-iface-default", "listen", None, LISTEN3),
    ("l-iface-mapped", "listen", "::ffff:127.0.0.1", LISTEN3),
    ("l-iface-name", "listen", "localhost", LISTEN1),
    ("l-auto", "listen", None, 0),
    ("r-request", "request", "tcp-connect:127.0.0.1:PORTD", None),
    ("c-after-request", "connect", "127.0.0.1", PORTD),
    ("r-remove", "remove", "tcp-connect:127.0.0.1:PORTD", None),
    ("c-after-remove", "connect", "127.0.0.1", PORTD),
    ("r-request-not-saved", "request", "tcp-connect:127.0.0.1:PORTE", None),
    ("c-after-not-saved", "connect", "127.0.0.1", PORTE),
]


def classify(error):
    if isinstance(error, (PermissionDenied, ValueError, TypeError)):
        return "deny"
    return "failed"


async def viaSocket(browser, kind, host, port):
    try:
        if kind == "connect":
            sock = await browser.TCPSocket.connect(host=host, port=port, timeout=10)
            await sock.opened
            sock.closeImmediately()
        else:
            options = {"port": port}
            if host is not None:
                options["host"] = host
            server = await browser.TCPSocket.listen(options)
            await server.close()
    except Exception as e:
        return classify(e)
    return "open"


async def viaReactor(browser, kind, host, port):
    done = defer.Deferred()

    class Opened(Protocol):
        def connectionMade(self):
            if not done.called:
                done.callback("open")
            self.transport.abortConnection()

    class Client(ClientFactory):
        protocol = Opened

        def clientConnectionFailed(self, connector, reason):
            if not done.called:
                done.callback(classify(reason.value))

    try:
        if kind == "connect":
            browser.reactor.connectTCP(host, port, Client(), timeout=10)
            return await done
        listening = browser.reactor.listenTCP(
            port, Factory.forProtocol(Protocol), interface=host or ""
        )
        await defer.maybeDeferred(listening.stopListening)
    except Exception as e:
        return classify(e)
    return "open"


async def viaPermissions(browser, kind, entry):
    try:
        if kind == "request":
            granted = await browser.permissions.request({"permissions": [entry]})
            return "granted" if granted else "refused"
        removed = await browser.permissions.remove({"permissions": [entry]})
        return "removed" if removed else "kept"
    except GrantNotSaved:
        return "not-saved"
    except Exception as e:
        return "error: " + type(e).__name__


async def runTable(browser, host=None, settle=None):
    results = []
    for name, kind, target, port in ROWS:
        if kind in ("request", "remove"):
            results.append([name, "browser", await viaPermissions(browser, kind, target)])
            continue
        paths = [("TCPSocket", viaSocket), ("reactor", viaReactor)]
        if host is not None:
            paths.append(("host", host))
        for path, run in paths:
            results.append([name, path, await run(browser, kind, target, port)])
            if settle is not None:
                await settle()
    return results
"""

# The isolated extension: the table, plus the host reached directly, and a
# report of the results to the test.
ISOLATED = (
    TABLE
    + """

from tcpext import sandbox
from tcpext._wire import BadRequest, Connect, Denied, Release, SyncChannel


def find(kind):
    for thing in gc.get_objects():
        if isinstance(thing, kind):
            return thing


async def direct(browser, kind, host, port):
    channel = find(sandbox.HostConnection)
    try:
        if kind == "connect":
            answer = await channel.callRemote(
                Connect, host=host, port=port, timeout=10.0
            )
            socketId, fd = answer["socketId"], answer["descriptor"]
        else:
            answer, fds = find(SyncChannel).call(
                {"op": "listen", "port": port, "interface": host or "", "backlog": 5}
            )
            if not answer.get("ok"):
                return "deny" if answer["error"] in ("DENIED", "BAD_REQUEST") else (
                    "failed"
                )
            socketId, fd = answer["socketId"], fds[0]
    except (Denied, BadRequest):
        return "deny"
    except Exception:
        return "failed"
    os.close(fd)
    await channel.callRemote(Release, socketIds=[socketId])
    return "open"


async def settle():
    # The host closes its copy of a released socket before it answers a
    # later request on the same connection.
    await find(sandbox.HostConnection).callRemote(Release, socketIds=[])


async def main(browser):
    results = await runTable(browser, host=direct, settle=settle)
    sock = await browser.TCPSocket.connect(host="127.0.0.1", port=REPORT)
    await sock.opened
    await sock.write((json.dumps(results) + "\\n").encode())
    await sock.close()
"""
)

EXPECTED = {
    "c-ip": "open",
    "c-ip-other-port": "deny",
    "c-ip6-brackets": "open",
    # The zone is kept for dialing (never dropped): the system cannot read
    # "lo" as the zone of ::1, so the connection fails; without the zone it
    # would have reached the server on [::1].
    "c-zone": "failed",
    "c-mapped": "open",
    "c-mapped-hex": "open",
    "c-alias-int": "deny",
    "c-alias-short": "deny",
    "c-localhost": "open",
    "c-localhost-other-port": "deny",
    "c-localhost-sub": "deny",
    "c-rebinding": "deny",
    "c-rebinding-ip-grant": "open",
    "c-half-refused": "open",
    "c-no-address": "failed",
    "l-port": "open",
    "l-port-iface": "open",
    "l-ungranted": "deny",
    "l-iface": "open",
    "l-iface-default": "deny",
    "l-iface-mapped": "open",
    "l-iface-name": "deny",
    "l-auto": "deny",
    "r-request": "granted",
    "c-after-request": "open",
    "r-remove": "removed",
    "c-after-remove": "deny",
    "r-request-not-saved": "not-saved",
    "c-after-not-saved": "deny",
}


class _NamedReactor:
    """
    The global reactor, with the test's resolver as its C{nameResolver}.
    """

    def __init__(self) -> None:
        self.nameResolver = FakeResolver(NAMES)
        directlyProvides(self, *providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


class _PickyStore(MemoryGrantStore):
    """
    A grant store that cannot save one permission.
    """

    def __init__(self, unsavable: str) -> None:
        super().__init__()
        self.unsavable = unsavable

    def save(self, extensionId: str, entries: list[str]) -> None:
        if self.unsavable in entries:
            raise OSError("the state folder is read-only")
        super().save(extensionId, entries)


class _Lines(Protocol):
    """
    Collects the lines of one connection into C{lines}.
    """

    def __init__(self, lines: list[str], arrived: defer.Deferred[None]) -> None:
        self.lines, self.arrived, self.buffer = lines, arrived, b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.lines.append(line.decode())
            if not self.arrived.called:
                self.arrived.callback(None)


def _freePort(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class DifferentialTests(TestCase):
    """
    The table, in-process and isolated.
    """

    timeout = 180

    def setUp(self) -> None:
        self.ports: dict[str, int] = {}
        for name, host in [
            ("PORTA", "127.0.0.1"),
            ("PORTB", "127.0.0.1"),
            ("PORTC", "127.0.0.1"),
            ("PORTD", "127.0.0.1"),
            ("PORTE", "127.0.0.1"),
            ("PORTV6", "::1"),
        ]:
            port = reactor.listenTCP(  # type: ignore[attr-defined]
                0, Factory.forProtocol(Protocol), interface=host
            )
            self.addCleanup(port.stopListening)
            self.ports[name] = port.getHost().port
        for name in ("LISTEN1", "LISTEN2", "LISTEN3"):
            self.ports[name] = _freePort()
        self.lines: list[str] = []
        self.arrived: defer.Deferred[None] = defer.Deferred()
        report = reactor.listenTCP(  # type: ignore[attr-defined]
            0,
            Factory.forProtocol(lambda: _Lines(self.lines, self.arrived)),
            interface="127.0.0.1",
        )
        self.addCleanup(report.stopListening)
        self.ports["REPORT"] = report.getHost().port

    def fill(self, text: str) -> str:
        """
        Put the port numbers in.
        """
        for name in sorted(self.ports, key=len, reverse=True):
            text = text.replace(name, str(self.ports[name]))
        return text

    def manifest(self) -> dict[str, Any]:
        """
        The extension's manifest, the same for every path.
        """
        p = self.ports
        return {
            "manifest_version": 2,
            "name": "table",
            "version": "1.0",
            "permissions": [
                f"tcp-connect:127.0.0.1:{p['PORTA']}",
                f"tcp-connect:[::1]:{p['PORTV6']}",
                f"tcp-connect:localhost:{p['PORTB']}",
                f"tcp-connect:intranet.test:{p['PORTC']}",
                f"tcp-connect:both.test:{p['PORTA']}",
                f"tcp-connect:half.test:{p['PORTA']}",
                f"tcp-connect:gone.test:{p['PORTA']}",
                f"tcp-connect:127.0.0.1:{p['REPORT']}",
                f"tcp-listen:{p['LISTEN1']}",
                f"tcp-listen:127.0.0.1:{p['LISTEN3']}",
            ],
            "optional_permissions": [
                f"tcp-connect:127.0.0.1:{p['PORTD']}",
                f"tcp-connect:127.0.0.1:{p['PORTE']}",
            ],
            "background": {"scripts": ["background.py"]},
        }

    def store(self) -> _PickyStore:
        """
        A store that cannot save the grant of PORTE.
        """
        return _PickyStore(f"tcp-connect:127.0.0.1:{self.ports['PORTE']}")

    def check(self, results: list[list[str]], paths: set[str]) -> None:
        """
        Every row has the expected answer on every path.
        """
        byRow: dict[str, dict[str, str]] = {}
        for name, path, outcome in results:
            byRow.setdefault(name, {})[path] = outcome
        self.assertEqual(set(byRow), set(EXPECTED))
        wrong = {}
        for name, outcomes in byRow.items():
            wanted = paths if not name.startswith("r-") else {"browser"}
            self.assertEqual(set(outcomes), wanted, name)
            if set(outcomes.values()) != {EXPECTED[name]}:
                wrong[name] = outcomes
        self.assertEqual(wrong, {}, "rows answered otherwise than expected")

    async def inProcess(self) -> list[list[str]]:
        """
        The table through an in-process browser.
        """
        namespace: dict[str, Any] = {}
        exec(compile(self.fill(TABLE), "<table>", "exec"), namespace)
        browser = makeBrowser(
            extensionId="table",
            manifest=self.manifest(),
            reactor=_NamedReactor(),
            grantStore=self.store(),
            prompt=allowAll,
            log=Logger(observer=lambda e: None),
        )
        self.addCleanup(browser.close)
        results: list[list[str]] = await namespace["runTable"](browser)
        return results

    async def test_inProcess(self) -> None:
        """
        In-process, C{browser.TCPSocket} and C{browser.reactor} answer the
        table as expected.
        """
        self.check(await self.inProcess(), {"TCPSocket", "reactor"})

    async def test_isolated(self) -> None:
        """
        An isolated extension answers the table as expected through its own
        C{browser.TCPSocket} and C{browser.reactor} and when it asks the host
        directly, and exactly as the same extension does in-process.
        """
        if _NO_CONFINEMENT is not None:
            raise self.skipTest(f"this system cannot confine: {_NO_CONFINEMENT}")
        path = os.path.join(self.mktemp(), "table")
        os.makedirs(path)
        manifest = self.manifest()
        with open(os.path.join(path, "manifest.json"), "w") as f:
            json.dump(manifest, f)
        with open(os.path.join(path, "background.py"), "w") as f:
            f.write(self.fill(ISOLATED))
        store = self.store()
        service = IsolatedExtension(
            path=path,
            extensionId="table",
            manifest=manifest,
            reactor=_NamedReactor(),
            grantStore=store,
            prompt=allowAll,
            log=Logger(namespace="tcpext.extension.table"),
            restart=RestartPolicy(maxRestarts=0, startTimeout=60, stopTimeout=10),
        )
        service.startService()
        self.addCleanup(service.stopService)
        await self.arrived
        isolated = json.loads(self.lines[0])
        self.check(isolated, {"TCPSocket", "reactor", "host"})
        self.assertEqual(store.load("table"), [])
        self.assertFalse(service.grants.allowsConnect("127.0.0.1", self.ports["PORTD"]))
        inProcess = await self.inProcess()
        self.assertEqual(
            {(n, o) for n, p, o in isolated if p != "host"},
            {(n, o) for n, p, o in inProcess},
        )
