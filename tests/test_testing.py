# -*- test-case-name: tests.test_testing -*-
"""
Tests for L{tcpext.testing}, including the example of docs/extensions.md.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionLost, DNSLookupError
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase

from tcpext.testing import FakeResolver, Peer, StubBrowser

# The echo extension of docs/extensions.md ("Testing with tcpext.testing").


async def main(browser):  # type: ignore[no-untyped-def]
    server = await browser.TCPSocket.listen({"port": 7000})
    defer.ensureDeferred(serve(server))


async def serve(server):  # type: ignore[no-untyped-def]
    async for conn in server.connections:
        defer.ensureDeferred(echo(conn))


async def echo(conn):  # type: ignore[no-untyped-def]
    async for chunk in conn:
        await conn.write(chunk)
    await conn.close()


class EchoTests(SynchronousTestCase):
    def test_echo(self):  # type: ignore[no-untyped-def]
        """
        The echo extension sends back what a client sends (the example in
        docs/extensions.md, verbatim).
        """
        stub = StubBrowser(permissions=["tcp-listen:7000"])
        self.successResultOf(stub.run(main))
        peer = stub.dialListener(7000)
        peer.write(b"hello")
        stub.flush()
        self.assertEqual(peer.received, b"hello")
        peer.loseConnection()
        stub.flush()
        self.assertTrue(peer.disconnected)


# A client extension: asks a line of a time server by name.


async def clientMain(browser: Any) -> bytes:
    """
    Connect to time.example:37 and return the first line.
    """
    sock = await browser.TCPSocket.connect(host="time.example", port=37)
    await sock.write(b"time?\n")
    line: bytes = await sock.readUntil(b"\n")
    await sock.close()
    return line


class ClientExtensionTests(SynchronousTestCase):
    """
    Driving an extension that connects out.
    """

    def test_client(self) -> None:
        """
        L{StubBrowser.connectPeer} answers the extension's connection with a
        L{Peer}; the name is resolved by the L{FakeResolver}.
        """
        stub = StubBrowser(
            permissions=["tcp-connect:time.example:37"],
            names={"time.example": ["93.184.216.34"]},
        )
        d = stub.run(clientMain)
        self.assertEqual(stub.pendingConnections(), [("93.184.216.34", 37)])
        peer = stub.connectPeer("93.184.216.34", 37)
        self.assertEqual(peer.take(), b"time?\n")
        peer.write(b"12:00\n")
        stub.flush()
        self.assertEqual(self.successResultOf(d), b"12:00\n")
        self.assertTrue(peer.disconnected)
        self.assertEqual(stub.resolver.lookups, ["time.example"])

    def test_refused(self) -> None:
        """
        L{StubBrowser.refuseConnection} fails the attempt.
        """
        stub = StubBrowser(
            permissions=["tcp-connect:time.example:37"],
            names={"time.example": ["93.184.216.34"]},
        )
        d = stub.run(clientMain)
        stub.refuseConnection()
        self.assertTrue(self.failureResultOf(d))
        self.assertEqual(stub.pendingConnections(), [])

    def test_customServerProtocol(self) -> None:
        """
        C{connectPeer} accepts any protocol to play the server.
        """

        class Greeter(Protocol):
            def connectionMade(self) -> None:
                assert self.transport is not None
                self.transport.write(b"hi\n")

        stub = StubBrowser(
            permissions=["tcp-connect:time.example:37"],
            names={"time.example": ["93.184.216.34"]},
        )
        d = stub.run(clientMain)
        server = stub.connectPeer(protocol=Greeter())
        self.assertIsInstance(server, Greeter)
        self.assertEqual(self.successResultOf(d), b"hi\n")

    def test_noSuchConnection(self) -> None:
        """
        Answering a connection that was not made is a L{LookupError} that
        lists what is pending.
        """
        stub = StubBrowser()
        exc = self.assertRaises(LookupError, stub.connectPeer, "192.0.2.1", 80)
        self.assertIn("192.0.2.1:80", str(exc))
        self.assertRaises(LookupError, stub.refuseConnection)

    def test_unknownName(self) -> None:
        """
        A name not in the resolver's table does not resolve.
        """
        stub = StubBrowser(permissions=["tcp-connect:time.example:37"])
        self.failureResultOf(stub.run(clientMain), DNSLookupError)


class ListenerTests(SynchronousTestCase):
    """
    Tests for L{StubBrowser.dialListener} and L{StubBrowser.listening}.
    """

    def test_nothingListens(self) -> None:
        """
        Dialing a port nobody listens on is a L{LookupError}.
        """
        stub = StubBrowser()
        exc = self.assertRaises(LookupError, stub.dialListener, 7000)
        self.assertIn("7000", str(exc))

    def test_automaticPort(self) -> None:
        """
        An automatic port gets a real number that C{dialListener} reaches.
        """
        stub = StubBrowser(permissions=["tcp-listen:*"])
        server = self.successResultOf(stub.browser.TCPSocket.listen())
        self.assertNotEqual(server.localPort, 0)
        self.assertEqual(stub.listening(), [("0.0.0.0", server.localPort)])
        peer = stub.dialListener(server.localPort)
        conn = self.successResultOf(
            defer.ensureDeferred(server.connections.__anext__())
        )
        self.assertEqual(conn.remoteAddress, "127.0.0.1")
        peer.write(b"x")
        stub.flush()
        self.assertEqual(self.successResultOf(conn.read()), b"x")

    def test_closedServer(self) -> None:
        """
        Once the server is closed, nothing listens there.
        """
        stub = StubBrowser(permissions=["tcp-listen:7000"])
        server = self.successResultOf(stub.browser.TCPSocket.listen(port=7000))
        self.successResultOf(server.close())
        self.assertEqual(stub.listening(), [])
        self.assertRaises(LookupError, stub.dialListener, 7000)

    def test_abort(self) -> None:
        """
        A peer can drop the connection; the extension's socket sees it.
        """
        stub = StubBrowser(permissions=["tcp-listen:7000"])
        server = self.successResultOf(stub.browser.TCPSocket.listen(port=7000))
        peer = stub.dialListener(7000)
        conn = self.successResultOf(
            defer.ensureDeferred(server.connections.__anext__())
        )
        closed = conn.closed
        peer.abortConnection()
        stub.flush()
        self.assertTrue(peer.disconnected)
        self.assertTrue(closed.called)


class FakeResolverTests(SynchronousTestCase):
    """
    Tests for L{FakeResolver}.
    """

    def resolve(self, resolver: FakeResolver, name: str) -> list[Any]:
        """
        The addresses C{resolver} gives for C{name} on port 80.
        """
        got: list[Any] = []
        done: list[bool] = []

        class Receiver:
            def resolutionBegan(self, resolution: Any) -> None:
                pass

            def addressResolved(self, address: Any) -> None:
                got.append(address)

            def resolutionComplete(self) -> None:
                done.append(True)

        resolver.resolveHostName(Receiver(), name, 80)
        self.assertEqual(done, [True])
        return got

    def test_resolve(self) -> None:
        """
        Names resolve to their addresses, case-insensitively and ignoring a
        trailing dot; lookups are recorded.
        """
        resolver = FakeResolver({"Example.com": ["192.0.2.1", "2001:db8::1"]})
        self.assertEqual(
            self.resolve(resolver, "EXAMPLE.com."),
            [
                IPv4Address("TCP", "192.0.2.1", 80),
                IPv6Address("TCP", "2001:db8::1", 80),
            ],
        )
        self.assertEqual(self.resolve(resolver, "other.example"), [])
        self.assertEqual(resolver.lookups, ["EXAMPLE.com.", "other.example"])

    def test_add(self) -> None:
        """
        C{add} replaces a name's answers.
        """
        resolver = FakeResolver({"example.com": ["192.0.2.1"]})
        resolver.add("example.com", "192.0.2.2")
        self.assertEqual(
            self.resolve(resolver, "example.com"),
            [IPv4Address("TCP", "192.0.2.2", 80)],
        )


class PeerTests(SynchronousTestCase):
    """
    Tests for L{Peer}.
    """

    def test_unconnected(self) -> None:
        """
        A new peer has received nothing and is not connected.
        """
        peer = Peer()
        self.assertEqual(
            (peer.received, peer.connected, peer.disconnected), (b"", False, False)
        )

    def test_take(self) -> None:
        """
        C{take} returns and forgets what was received.
        """
        peer = Peer()
        peer.dataReceived(b"a")
        peer.dataReceived(b"b")
        self.assertEqual(peer.take(), b"ab")
        self.assertEqual(peer.received, b"")

    def test_disconnected(self) -> None:
        """
        C{connectionLost} records the reason.
        """
        peer = Peer()
        peer.connectionLost(defer.Failure(ConnectionLost()))  # type: ignore[attr-defined]
        self.assertTrue(peer.disconnected)


class FlushTests(SynchronousTestCase):
    """
    Tests for L{StubBrowser.flush} and L{StubBrowser.advance}.
    """

    def test_chatty(self) -> None:
        """
        Two ends that never stop talking make C{flush} raise instead of
        hanging.
        """

        class Chatty(Peer):
            def dataReceived(self, data: bytes) -> None:
                assert self.transport is not None
                self.transport.write(data)

        stub = StubBrowser(permissions=["tcp-listen:7000"])
        server = self.successResultOf(stub.browser.TCPSocket.listen(port=7000))
        stub.dialListener(7000, protocol=Chatty())
        conn = self.successResultOf(
            defer.ensureDeferred(server.connections.__anext__())
        )

        async def bounce() -> None:
            async for chunk in conn:
                await conn.write(chunk)

        defer.ensureDeferred(bounce())
        conn.write(b"ping")
        self.assertRaises(RuntimeError, stub.flush)

    def test_advance(self) -> None:
        """
        C{advance} moves the clock.
        """
        stub = StubBrowser()
        called: list[bool] = []
        stub.reactor.callLater(5, called.append, True)
        stub.advance(4)
        self.assertEqual(called, [])
        stub.advance(1)
        self.assertEqual(called, [True])
