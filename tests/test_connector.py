# -*- test-case-name: tests.test_connector -*-
"""
A denied connection through C{browser.reactor} arrives the Twisted way: the
connector's factory hears C{clientConnectionFailed} with a
L{PermissionDenied} failure, on a later reactor turn, as for a refused
connection.  So Twisted's own clients apply their own policy:
C{ReconnectingClientFactory} retries (and stops when it is told to),
C{ClientService} retries and reports, and C{twisted.mail.smtp.sendmail}
returns a failed L{Deferred}.  In-process and isolated, over real loopback.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.application.internet import ClientService
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import (
    ClientFactory,
    Factory,
    Protocol,
    ReconnectingClientFactory,
)
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.mail.smtp import SMTPConnectError, sendmail
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tcpext._isolation import missingConfinement
from tcpext._supervisor import IsolatedExtension, RestartPolicy
from tcpext.browser import makeBrowser
from tcpext.permissions import PermissionDenied

_NO_CONFINEMENT = "; ".join(missingConfinement()) or None


class _SMTPServer(LineReceiver):
    """
    Just enough of an SMTP server: greets, says yes to everything, keeps the
    messages it is sent.
    """

    delimiter = b"\r\n"

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = messages
        self.data: list[bytes] | None = None

    def connectionMade(self) -> None:
        self.sendLine(b"220 test.invalid ESMTP")

    def lineReceived(self, line: bytes) -> None:
        if self.data is not None:
            if line == b".":
                self.messages.append(b"\n".join(self.data))
                self.data = None
                self.sendLine(b"250 queued")
            else:
                self.data.append(line)
            return
        command = line.split(b" ", 1)[0].upper()
        if command in (b"EHLO", b"HELO"):
            self.sendLine(b"250 test.invalid")
        elif command in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            self.sendLine(b"250 ok")
        elif command == b"DATA":
            self.data = []
            self.sendLine(b"354 go ahead")
        elif command == b"QUIT":
            self.sendLine(b"221 bye")
            self.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self.sendLine(b"500 unknown command")


class _Hangup(Protocol):
    """
    Closes every connection at once.
    """

    def connectionMade(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


class _Counting(ReconnectingClientFactory):
    """
    A reconnecting client that records every failure and loss, and fires
    C{gaveUp} once it stops retrying.
    """

    protocol = Protocol
    initialDelay = 0.01
    maxDelay = 0.05
    maxRetries = 3

    def __init__(self) -> None:
        self.connections = 0
        self.failures: list[Failure] = []
        self.gaveUp: defer.Deferred[None] = defer.Deferred()
        self.connected: defer.Deferred[None] = defer.Deferred()

    def buildProtocol(self, addr: Any) -> Any:
        self.connections += 1
        if not self.connected.called:
            self.connected.callback(None)
        return super().buildProtocol(addr)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.failures.append(reason)
        super().clientConnectionFailed(connector, reason)

    def retry(self, connector: Any = None) -> None:
        super().retry(connector)
        if self.retries > self.maxRetries and not self.gaveUp.called:
            self.gaveUp.callback(None)


class _Servers(TestCase):
    """
    An SMTP server and a server that hangs up, on loopback; an in-process
    browser allowed the first and (by the operator) the second.
    """

    def setUp(self) -> None:
        self.messages: list[bytes] = []
        smtp = reactor.listenTCP(  # type: ignore[attr-defined]
            0,
            Factory.forProtocol(lambda: _SMTPServer(self.messages)),
            interface="127.0.0.1",
        )
        self.addCleanup(smtp.stopListening)
        self.smtp = smtp.getHost().port
        hangup = reactor.listenTCP(  # type: ignore[attr-defined]
            0, Factory.forProtocol(_Hangup), interface="127.0.0.1"
        )
        self.addCleanup(hangup.stopListening)
        self.hangup = hangup.getHost().port
        self.browser = makeBrowser(
            extensionId="client",
            manifest={
                "manifest_version": 2,
                "name": "client",
                "version": "1",
                "permissions": [f"tcp-connect:127.0.0.1:{self.smtp}"],
                "optional_permissions": [f"tcp-connect:127.0.0.1:{self.hangup}"],
                "background": {"scripts": ["background.py"]},
            },
            reactor=reactor,
            operatorGrants=[f"tcp-connect:127.0.0.1:{self.hangup}"],
            log=Logger(observer=lambda e: None),
        )
        self.addCleanup(self.browser.close)


class InProcessTests(_Servers):
    """
    Through an in-process C{browser.reactor}.
    """

    timeout = 60

    async def test_connectTCP(self) -> None:
        """
        A denied C{connectTCP} returns a connector at once, and its factory
        hears of the refusal on a later reactor turn.
        """
        events: list[str] = []
        failed: defer.Deferred[list[Failure]] = defer.Deferred()

        class Client(ClientFactory):
            def startedConnecting(self, connector: Any) -> None:
                events.append("started")

            def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
                events.append("failed")
                failed.callback([reason])

        connector = self.browser.reactor.connectTCP("127.0.0.1", 9, Client())
        self.assertEqual(events, ["started"])
        [reason] = await failed
        self.assertTrue(reason.check(PermissionDenied))
        self.assertIn("127.0.0.1:9", reason.getErrorMessage())
        self.assertEqual(connector.state, "disconnected")  # type: ignore[attr-defined]

    async def test_reconnectingClientFactory(self) -> None:
        """
        A C{ReconnectingClientFactory} reconnects while its grant lasts;
        after C{permissions.remove}, its retries fail with
        L{PermissionDenied} and it applies its own policy (here: stop after
        C{maxRetries}); nothing is logged as an error.
        """
        factory = _Counting()
        self.browser.reactor.connectTCP("127.0.0.1", self.hangup, factory)
        await factory.connected
        await self.browser.permissions.remove(
            {"permissions": [f"tcp-connect:127.0.0.1:{self.hangup}"]}
        )
        await factory.gaveUp
        self.assertGreaterEqual(factory.connections, 1)
        self.assertTrue(factory.failures)
        for reason in factory.failures:
            self.assertTrue(reason.check(PermissionDenied), reason)

    async def test_clientService(self) -> None:
        """
        C{ClientService} over an endpoint on C{browser.reactor}: allowed, it
        connects; denied, it retries with its policy and C{whenConnected}
        fails with L{PermissionDenied}.
        """
        allowed = ClientService(
            TCP4ClientEndpoint(self.browser.reactor, "127.0.0.1", self.smtp),
            Factory.forProtocol(Protocol),
            retryPolicy=lambda attempt: 0.01,
        )
        allowed.startService()
        await allowed.whenConnected(failAfterFailures=1)
        # Out of the service's own transition before stopping it.
        await deferLater(reactor, 0, lambda: None)
        await allowed.stopService()
        denied = ClientService(
            TCP4ClientEndpoint(self.browser.reactor, "127.0.0.1", 9),
            Factory.forProtocol(Protocol),
            retryPolicy=lambda attempt: 0.01,
        )
        denied.startService()
        with self.assertRaises(PermissionDenied):
            await denied.whenConnected(failAfterFailures=3)
        # Out of the service's own transition before stopping it.
        await deferLater(reactor, 0, lambda: None)
        await denied.stopService()

    async def test_sendmail(self) -> None:
        """
        C{twisted.mail.smtp.sendmail} on C{browser.reactor}: to the granted
        server it delivers; to a denied host it returns a failed
        L{Deferred} (after its own retries: sendmail reports an
        C{SMTPConnectError} naming the refusal), it does not raise.
        """
        message = b"Subject: hello\n\nhello from tcpext\n"
        sent = await sendmail(
            "127.0.0.1",
            b"a@test.invalid",
            [b"b@test.invalid"],
            message,
            port=self.smtp,
            reactor=self.browser.reactor,
        )
        self.assertEqual(sent[0], 1)
        self.assertIn(b"hello from tcpext", self.messages[0])
        d = sendmail(
            "127.0.0.1",
            b"a@test.invalid",
            [b"b@test.invalid"],
            message,
            port=9,
            reactor=self.browser.reactor,
        )
        with self.assertRaises(SMTPConnectError) as caught:
            await d
        self.assertIn(
            "permission denied: connect to 127.0.0.1:9", str(caught.exception)
        )


_ISOLATED = """
import json

from twisted.internet import defer
from twisted.internet.protocol import Protocol, ReconnectingClientFactory
from twisted.mail.smtp import SMTPConnectError, sendmail


class Counting(ReconnectingClientFactory):
    protocol = Protocol
    initialDelay = 0.01
    maxDelay = 0.05
    maxRetries = 3

    def __init__(self):
        self.failures = []
        self.connected = defer.Deferred()
        self.gaveUp = defer.Deferred()

    def buildProtocol(self, addr):
        if not self.connected.called:
            self.connected.callback(None)
        return ReconnectingClientFactory.buildProtocol(self, addr)

    def clientConnectionFailed(self, connector, reason):
        self.failures.append(type(reason.value).__name__)
        ReconnectingClientFactory.clientConnectionFailed(self, connector, reason)

    def retry(self, connector=None):
        ReconnectingClientFactory.retry(self, connector)
        if self.retries > self.maxRetries and not self.gaveUp.called:
            self.gaveUp.callback(None)


async def main(browser):
    results = {}
    sent = await sendmail(
        "127.0.0.1", b"a@test.invalid", [b"b@test.invalid"],
        b"Subject: hi\\n\\nfrom an isolated extension\\n",
        port=SMTP_PORT, reactor=browser.reactor,
    )
    results["sendmail"] = sent[0]
    try:
        await sendmail(
            "127.0.0.1", b"a@test.invalid", [b"b@test.invalid"], b"x\\n",
            port=9, reactor=browser.reactor,
        )
        results["sendmail-denied"] = "sent"
    except SMTPConnectError as e:
        results["sendmail-denied"] = str(e).split(": ", 1)[1].split(":")[0]
    factory = Counting()
    browser.reactor.connectTCP("127.0.0.1", HANGUP_PORT, factory)
    await factory.connected
    await browser.permissions.remove({"permissions": ["tcp-connect:127.0.0.1:HANGUP_PORT"]})
    await factory.gaveUp
    results["reconnecting"] = sorted(set(factory.failures))
    sock = await browser.TCPSocket.connect(host="127.0.0.1", port=REPORT_PORT)
    await sock.opened
    await sock.write((json.dumps(results) + "\\n").encode())
    await sock.close()
"""


class _Line(Protocol):
    """
    Fires C{arrived} with the first line of the connection.
    """

    def __init__(self, arrived: defer.Deferred[bytes]) -> None:
        self.arrived, self.buffer = arrived, b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" in self.buffer and not self.arrived.called:
            self.arrived.callback(self.buffer.split(b"\n", 1)[0])


class IsolatedTests(_Servers):
    """
    The same, from an isolated extension (a real confined child).
    """

    timeout = 120

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"

    async def test_isolated(self) -> None:
        """
        In an isolated extension, C{sendmail} delivers to the granted server
        and returns a failed L{Deferred} for a denied host, and a
        C{ReconnectingClientFactory} hears L{PermissionDenied} after
        C{permissions.remove} and stops by its own policy.
        """
        arrived: defer.Deferred[bytes] = defer.Deferred()
        report = reactor.listenTCP(  # type: ignore[attr-defined]
            0, Factory.forProtocol(lambda: _Line(arrived)), interface="127.0.0.1"
        )
        self.addCleanup(report.stopListening)
        reportPort = report.getHost().port
        script = (
            _ISOLATED.replace("HANGUP_PORT", str(self.hangup))
            .replace("SMTP_PORT", str(self.smtp))
            .replace("REPORT_PORT", str(reportPort))
        )
        path = os.path.join(self.mktemp(), "mailer")
        os.makedirs(path)
        manifest = {
            "manifest_version": 2,
            "name": "mailer",
            "version": "1",
            "permissions": [
                f"tcp-connect:127.0.0.1:{self.smtp}",
                f"tcp-connect:127.0.0.1:{reportPort}",
            ],
            "optional_permissions": [f"tcp-connect:127.0.0.1:{self.hangup}"],
            "background": {"scripts": ["background.py"]},
        }
        with open(os.path.join(path, "manifest.json"), "w") as f:
            json.dump(manifest, f)
        with open(os.path.join(path, "background.py"), "w") as f:
            f.write(script)
        service = IsolatedExtension(
            path=path,
            extensionId="mailer",
            manifest=manifest,
            reactor=reactor,
            operatorGrants=[f"tcp-connect:127.0.0.1:{self.hangup}"],
            log=Logger(namespace="tcpext.extension.mailer"),
            restart=RestartPolicy(maxRestarts=0, startTimeout=60, stopTimeout=10),
        )
        service.startService()
        self.addCleanup(service.stopService)
        results = json.loads(await arrived)
        self.assertEqual(
            results,
            {
                "sendmail": 1,
                "sendmail-denied": "permission denied",
                "reconnecting": ["PermissionDenied"],
            },
        )
        self.assertIn(b"from an isolated extension", self.messages[0])
