# -*- test-case-name: tests.test_serviceconsole -*-
"""
Tests for L{tcpext._serviceconsole.ServiceConsole}: the console of a
L{TCPExtService}, with an extension running in process on a memory reactor.
"""

from __future__ import annotations

import json
import os

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tcpext._console import BadRequest, Conflict, IConsole, NotFound, Unavailable
from tcpext.service import TCPExtService
from tests._extensions import extensionWithScript

OPTIONAL = "tcp-connect:127.0.0.1:1024-65535"


class ServiceConsoleTests(SynchronousTestCase):
    """
    What the console sees and does on a running service.
    """

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        folder = os.path.join(base, "ext")
        os.makedirs(folder)
        with open(os.path.join(folder, "manifest.json"), "w") as f:
            json.dump(
                {
                    "manifest_version": 2,
                    "name": "ext",
                    "version": "2.5",
                    "permissions": ["tcp-listen:7000"],
                    "optional_permissions": [OPTIONAL, "tcp-listen:8000"],
                    "background": {"scripts": ["background.py"]},
                },
                f,
            )
        with open(os.path.join(folder, "background.py"), "w") as f:
            f.write("def main(browser):\n    pass\n")
        self.service = TCPExtService(
            extensionPaths=[folder],
            stateDirectory=os.path.join(base, "state"),
            grants=[("ext", "tcp-listen:8000")],
            reactor=MemoryReactorClock(),
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.console = self.service.console

    def test_interface(self) -> None:
        """
        It provides L{IConsole}.
        """
        verifyObject(IConsole, self.console)

    def test_extensions(self) -> None:
        """
        Each extension with its state and grants by source.
        """
        self.assertEqual(
            self.console.extensions(),
            [
                {
                    "id": "ext",
                    "name": "ext",
                    "version": "2.5",
                    "isolation": "none",
                    "state": "running",
                    "grants": {
                        "manifest": ["tcp-listen:7000"],
                        "operator": ["tcp-listen:8000"],
                        "stored": [],
                    },
                    "sockets": 0,
                }
            ],
        )

    def test_grant(self) -> None:
        """
        Granting an optional permission stores it (canonical text), takes
        effect, and is audited; anything not optional is refused.
        """
        self.successResultOf(
            self.console.grant("ext", "tcp-connect:127.0.0.1:1024-65535")
        )
        self.assertEqual(self.console.grants("ext")["stored"], [OPTIONAL])
        self.assertEqual(self.service.grantStore.load("ext"), [OPTIONAL])
        [event] = self.console.audit(0)
        self.assertEqual(
            (event["verb"], event["target"], event["decision"]),
            ("grant", OPTIONAL, "allow"),
        )
        for bad in ["tcp-connect:example.com:80", "nonsense", "tcp-listen:99999"]:
            self.assertRaises(BadRequest, self.console.grant, "ext", bad)
        self.assertRaises(NotFound, self.console.grant, "nope", OPTIONAL)

    def test_ledger(self) -> None:
        """
        The service keeps the ledger of an extension it runs in its process:
        the browser decides over that ledger's grants, and the console grants
        and revokes through it.  Once the extension stopped, the console
        reads and changes the grant store.
        """
        ledger = self.service.ledgers["ext"]
        [child] = list(self.service)
        self.assertEqual(set(child.browser.grants), set(ledger.grants))
        self.successResultOf(self.console.grant("ext", OPTIONAL))
        self.assertEqual(ledger.grantsBySource()["stored"], [OPTIONAL])
        self.assertTrue(child.browser.grants.allowsConnect("127.0.0.1", 2000))
        self.successResultOf(self.console.revoke("ext", OPTIONAL))
        self.assertFalse(child.browser.grants.allowsConnect("127.0.0.1", 2000))
        self.successResultOf(child.stopService())
        self.successResultOf(self.console.grant("ext", OPTIONAL))
        self.assertEqual(ledger.grantsBySource()["stored"], [])
        self.assertEqual(self.console.grants("ext")["stored"], [OPTIONAL])

    def test_grantNotSaved(self) -> None:
        """
        When the grant store cannot save, nothing is granted and the console
        says so (503).
        """

        def failing(extensionId: str, entries: list[str]) -> None:
            raise OSError("disk full")

        self.service.grantStore.save = failing
        failure = self.failureResultOf(self.console.grant("ext", OPTIONAL), Unavailable)
        self.assertIn("disk full", str(failure.value))
        self.assertEqual(self.console.grants("ext")["stored"], [])

    def test_revoke(self) -> None:
        """
        Revoking a stored grant removes it from the store; a manifest
        permission is a conflict; one not granted is not found.
        """
        self.successResultOf(self.console.grant("ext", OPTIONAL))
        self.successResultOf(self.console.revoke("ext", OPTIONAL))
        self.assertEqual(self.console.grants("ext")["stored"], [])
        self.assertEqual(self.service.grantStore.load("ext"), [])
        self.assertRaises(Conflict, self.console.revoke, "ext", "tcp-listen:7000")
        self.assertRaises(NotFound, self.console.revoke, "ext", OPTIONAL)
        self.assertRaises(NotFound, self.console.revoke, "nope", OPTIONAL)

    def test_revokeOperator(self) -> None:
        """
        Revoking a C{--grant} takes it away for this run.
        """
        self.successResultOf(self.console.revoke("ext", "tcp-listen:8000"))
        self.assertEqual(self.console.grants("ext")["operator"], [])

    def test_requestsWithoutAdminPrompt(self) -> None:
        """
        Without C{--prompt admin} nothing is pending and answering is 404.
        """
        self.assertEqual(self.console.requests(), [])
        self.assertRaises(NotFound, self.console.answer, "1", True)

    def test_sockets(self) -> None:
        """
        No sockets yet; an unknown extension is not found.
        """
        self.assertEqual(self.console.sockets("ext"), [])
        self.assertRaises(NotFound, self.console.sockets, "nope")

    def test_metrics(self) -> None:
        """
        The metrics count decisions and show each extension's state.
        """
        self.successResultOf(self.console.grant("ext", OPTIONAL))
        text, contentType = self.console.metrics()
        self.assertTrue(contentType.startswith("text/plain"))
        self.assertIn(
            b'tcpext_decisions_total{extension="ext",outcome="allow",verb="grant"} 1.0',
            text,
        )
        self.assertIn(
            b'tcpext_extension_state{extension="ext",state="running"} 1.0', text
        )
        self.assertIn(b'tcpext_open_sockets{extension="ext",kind="client"} 0.0', text)


class RememberedRefusalTests(SynchronousTestCase):
    """
    With C{--prompt admin}, a refusal is remembered until the operator
    grants that permission from the console.
    """

    def test_clearedByConsoleGrant(self) -> None:
        """
        A request the operator denies is then refused without asking; once
        the operator grants the permission from the console (and later
        revokes it), the extension's next request is asked again.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        folder = extensionWithScript(
            base, "ext", [], "def main(browser):\n    pass\n", optional=[OPTIONAL]
        )
        from tcpext._admin import parseAdminEndpoint
        from tests._folders import shortFolder

        state = os.path.join(base, "state")
        service = TCPExtService(
            extensionPaths=[folder],
            stateDirectory=state,
            prompt="admin",
            admin=parseAdminEndpoint(
                "unix:" + os.path.join(shortFolder(self), "admin.sock"), state
            ),
            reactor=MemoryReactorClock(),
        )
        service.startService()
        self.addCleanup(service.stopService)
        console = service.console

        first = service.prompt("ext", [OPTIONAL])
        [pending] = console.requests()
        console.answer(pending["id"], False)
        self.assertIs(self.successResultOf(first), False)
        self.assertIs(self.successResultOf(service.prompt("ext", [OPTIONAL])), False)
        self.assertEqual(console.requests(), [])

        self.successResultOf(console.grant("ext", OPTIONAL))
        self.successResultOf(console.revoke("ext", OPTIONAL))
        again = service.prompt("ext", [OPTIONAL])
        self.assertNoResult(again)
        [pending] = console.requests()
        console.answer(pending["id"], True)
        self.assertIs(self.successResultOf(again), True)


class KernelCountsTests(SynchronousTestCase):
    """
    L{kernelByteCounts} reads what the kernel counted on a TCP socket.
    """

    def test_loopback(self) -> None:
        """
        The bytes sent (and acknowledged) and received, data only, on both
        ends of a loopback connection; L{None} for a socket that is not TCP.
        """
        import socket

        from tcpext._metrics import kernelByteCounts

        with socket.create_server(("127.0.0.1", 0)) as server:
            client = socket.create_connection(server.getsockname(), timeout=10)
            self.addCleanup(client.close)
            accepted, _ = server.accept()
            self.addCleanup(accepted.close)
            client.sendall(b"x" * 1000)
            received = b""
            while len(received) < 1000:
                received += accepted.recv(4096)
            accepted.sendall(b"y" * 10)
            self.assertEqual(client.recv(10), b"y" * 10)
            self.assertEqual(kernelByteCounts(accepted), (1000, 10))
            self.assertEqual(kernelByteCounts(client), (10, 1000))
        unix = socket.socket(socket.AF_UNIX)
        self.addCleanup(unix.close)
        self.assertIsNone(kernelByteCounts(unix))


class AddressTextTests(SynchronousTestCase):
    """
    L{addressText} writes a socket's address as the console shows it.
    """

    def test_forms(self) -> None:
        """
        C{"HOST:PORT"}, an IPv6 host (with its zone, if any) in brackets; an
        unknown host or port is L{None}.
        """
        from tcpext._serviceconsole import addressText

        self.assertEqual(addressText("127.0.0.1", 7001), "127.0.0.1:7001")
        self.assertEqual(addressText("::1", 7001), "[::1]:7001")
        self.assertEqual(addressText("fe80::1%lo", 22), "[fe80::1%lo]:22")
        self.assertIsNone(addressText(None, 80))
        self.assertIsNone(addressText("::1", None))
