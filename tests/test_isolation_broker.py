"""
Tests for L{tcpext._broker}: the host side of process isolation, and the
child's brokered reactor (L{tcpext.sandbox.BrokeredReactor}), connected over
a real UNIX socket pair in this process.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpext._broker import (
    BadRequest,
    BrokerProtocol,
    Connect,
    Denied,
    Listen,
    Refused,
    Release,
    Resolve,
    SyncListenProtocol,
    TimedOut,
    dialTCP,
    openListener,
)
from tcpext.sandbox import BrokeredReactor, HostConnection


class _NotAllowed(Exception):
    """
    The grants double's refusal.
    """


class _Grants:
    """
    A small stand-in for L{tcpext.permissions.PermissionSet}: exact
    (host, port) pairs, and listen ports.
    """

    def __init__(
        self,
        connect: set[tuple[str, int]] | None = None,
        listen: set[int] | None = None,
        public: set[str] | None = None,
    ) -> None:
        self.connect = connect or set()
        self.listenPorts = listen or set()
        self.public = public or set()

    def checkConnect(self, host: str, port: int) -> None:
        if host == "bad host":
            raise ValueError("invalid host 'bad host'")
        if (host, port) not in self.connect:
            raise _NotAllowed(f"permission denied: {host}:{port}")

    def checkListen(self, port: int, host: str | None = None) -> None:
        if port not in self.listenPorts:
            raise _NotAllowed(f"permission denied: listen on {port}")

    def checkResolved(self, name: str, port: int, addresses: list[str]) -> list[str]:
        allowed = [a for a in addresses if a in self.public or name == "localhost"]
        if not allowed:
            raise _NotAllowed(f"permission denied: {name}:{port} -> {addresses}")
        return allowed


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class _Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.made: defer.Deferred[None] = defer.Deferred()
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.data.endswith(b"!"):
            self.done.callback(self.data)


def _adopt(sock: socket.socket, protocol: Any) -> None:
    sock.setblocking(False)
    reactor.adoptStreamConnection(  # type: ignore[attr-defined]
        sock.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: protocol)
    )
    sock.close()


class BrokerLoopbackTests(TestCase):
    """
    A broker and a child's connection in one process, real loopback sockets.
    """

    def setUp(self) -> None:
        self.grants = _Grants()
        self.broker = BrokerProtocol(reactor, self.grants, Logger())
        self.child = HostConnection()
        hostEnd, childEnd = socket.socketpair()
        _adopt(hostEnd, self.broker)
        _adopt(childEnd, self.child)

        def cleanUp() -> defer.Deferred[Any]:
            self.child.transport.loseConnection()  # type: ignore[union-attr]
            return defer.DeferredList([self.broker.lost, self.child.lost])

        self.addCleanup(cleanUp)

    def echoServer(self) -> int:
        port = reactor.listenTCP(  # type: ignore[attr-defined]
            0, Factory.forProtocol(_Echo), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def adoptClient(self, answer: dict[str, Any]) -> _Collect:
        protocol = _Collect()
        transport = reactor.adoptStreamConnection(  # type: ignore[attr-defined]
            answer["descriptor"],
            answer["family"],
            Factory.forProtocol(lambda: protocol),
        )
        os.close(answer["descriptor"])
        self.addCleanup(transport.abortConnection)
        return protocol

    async def test_connectGranted(self) -> None:
        """
        A granted connect is dialed by the host; the descriptor it passes is
        a connected socket that carries data.
        """
        port = self.echoServer()
        self.grants.connect.add(("127.0.0.1", port))
        answer = await self.child.callRemote(
            Connect, host="127.0.0.1", port=port, timeout=5.0
        )
        protocol = self.adoptClient(answer)
        protocol.transport.write(b"hello!")  # type: ignore[union-attr]
        self.assertEqual(await protocol.done, b"hello!")
        self.assertIn(answer["socketId"], self.broker._unreleased)
        await self.child.callRemote(Release, socketIds=[answer["socketId"]])
        self.assertNotIn(answer["socketId"], self.broker._unreleased)

    async def test_connectDenied(self) -> None:
        """
        A connect outside the grants fails with L{Denied} and is never
        dialed.
        """
        accepted = []

        class Count(Protocol):
            def connectionMade(self) -> None:
                accepted.append(self)

        port = reactor.listenTCP(  # type: ignore[attr-defined]
            0, Factory.forProtocol(Count), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        d = self.child.callRemote(
            Connect, host="127.0.0.1", port=port.getHost().port, timeout=5.0
        )
        error = await self.assertFailure(d, Denied)
        self.assertIn("permission denied", str(error))
        self.assertEqual(accepted, [])

    async def test_connectBadHost(self) -> None:
        """
        A host the permission code rejects as invalid is a L{BadRequest}.
        """
        d = self.child.callRemote(Connect, host="bad host", port=80, timeout=5.0)
        await self.assertFailure(d, BadRequest)

    async def test_connectBadPort(self) -> None:
        """
        A port outside 1..65535 is a L{BadRequest}.
        """
        d = self.child.callRemote(Connect, host="127.0.0.1", port=0, timeout=5.0)
        await self.assertFailure(d, BadRequest)

    async def test_connectRefused(self) -> None:
        """
        A granted connect to a closed port fails with L{Refused}.
        """
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        self.grants.connect.add(("127.0.0.1", port))
        d = self.child.callRemote(Connect, host="127.0.0.1", port=port, timeout=5.0)
        await self.assertFailure(d, Refused)

    async def test_connectName(self) -> None:
        """
        A name grant: the host resolves (C{localhost} without DNS), applies
        the rebinding check, and dials an address that passed.
        """
        port = self.echoServer()
        self.grants.connect.add(("localhost", port))
        answer = await self.child.callRemote(
            Connect, host="localhost", port=port, timeout=5.0
        )
        protocol = self.adoptClient(answer)
        protocol.transport.write(b"name!")  # type: ignore[union-attr]
        self.assertEqual(await protocol.done, b"name!")

    async def test_resolveThenConnectAddress(self) -> None:
        """
        After L{Resolve} of a granted name, a connect to an address that
        passed the rebinding check is allowed as a connection to that name;
        other addresses stay denied.
        """
        port = self.echoServer()
        self.grants.connect.add(("localhost", port))
        answer = await self.child.callRemote(Resolve, name="localhost", port=port)
        self.assertIn("127.0.0.1", answer["addresses"])
        answer = await self.child.callRemote(
            Connect, host="127.0.0.1", port=port, timeout=5.0
        )
        self.adoptClient(answer)
        d = self.child.callRemote(Connect, host="127.0.0.2", port=port, timeout=5.0)
        await self.assertFailure(d, Denied)

    async def test_resolveDenied(self) -> None:
        """
        Resolving a name the grants do not cover is refused.
        """
        d = self.child.callRemote(Resolve, name="example.com", port=80)
        await self.assertFailure(d, Denied)

    async def test_listenGranted(self) -> None:
        """
        A granted listen: the host opens the port and hands it over; the
        child's adopted port accepts a connection from outside.
        """
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        portNumber = s.getsockname()[1]
        s.close()
        self.grants.listenPorts.add(portNumber)
        answer = await self.child.callRemote(
            Listen, port=portNumber, interface="127.0.0.1", backlog=5
        )
        port = reactor.adoptStreamPort(  # type: ignore[attr-defined]
            answer["descriptor"], answer["family"], Factory.forProtocol(_Echo)
        )
        os.close(answer["descriptor"])
        self.addCleanup(port.stopListening)
        self.assertEqual(port.getHost().port, portNumber)
        protocol = _Collect()
        factory = ClientFactory.forProtocol(lambda: protocol)
        connector = reactor.connectTCP(  # type: ignore[attr-defined]
            "127.0.0.1", portNumber, factory
        )
        self.addCleanup(connector.disconnect)
        await protocol.made
        protocol.transport.write(b"in!")  # type: ignore[union-attr]
        self.assertEqual(await protocol.done, b"in!")

    async def test_listenDenied(self) -> None:
        """
        A listen outside the grants fails with L{Denied}.
        """
        d = self.child.callRemote(Listen, port=7, interface="127.0.0.1", backlog=5)
        await self.assertFailure(d, Denied)

    async def test_listenBadInterface(self) -> None:
        """
        An interface that is not an IP literal is a L{BadRequest}.
        """
        self.grants.listenPorts.add(7000)
        d = self.child.callRemote(Listen, port=7000, interface="eth0", backlog=5)
        await self.assertFailure(d, BadRequest)

    async def test_brokeredConnectTCP(self) -> None:
        """
        L{BrokeredReactor.connectTCP} gets its socket from the host and
        drives the client factory as a real connector would.
        """
        port = self.echoServer()
        self.grants.connect.add(("127.0.0.1", port))
        brokered = BrokeredReactor(reactor, self.child, None)
        protocol = _Collect()
        lost: defer.Deferred[None] = defer.Deferred()

        class F(ClientFactory):
            def buildProtocol(self, addr: Any) -> Protocol:
                return protocol

            def clientConnectionLost(self, connector: Any, reason: Any) -> None:
                lost.callback(None)

        connector = brokered.connectTCP("127.0.0.1", port, F())
        await protocol.made
        self.assertEqual(connector.getDestination().port, port)
        protocol.transport.write(b"via broker!")  # type: ignore[union-attr]
        self.assertEqual(await protocol.done, b"via broker!")
        connector.disconnect()
        await lost

    async def test_brokeredConnectRefused(self) -> None:
        """
        A refused brokered connect reaches the factory as Twisted's
        L{ConnectionRefusedError}.
        """
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        self.grants.connect.add(("127.0.0.1", port))
        brokered = BrokeredReactor(reactor, self.child, None)
        failed: defer.Deferred[Any] = defer.Deferred()

        class F(ClientFactory):
            def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
                failed.callback([reason])

        brokered.connectTCP("127.0.0.1", port, F())
        (reason,) = await failed
        self.assertTrue(reason.check(ConnectionRefusedError))

    async def test_flood(self) -> None:
        """
        A child with more requests in flight than C{maxFlood} is
        disconnected; before that, the host stops reading it.
        """

        class Hanging:
            def resolveHostName(self, receiver: Any, *a: Any, **kw: Any) -> None:
                pass

        class R:
            nameResolver = Hanging()

        self.broker._reactor = R()
        self.broker.maxOutstanding = 2
        self.broker.maxFlood = 5
        self.grants.connect.add(("example.com", 80))
        calls = [
            self.child.callRemote(Resolve, name="example.com", port=80)
            for _ in range(10)
        ]
        for d in calls:
            d.addErrback(lambda f: None)
        await self.broker.lost


class SyncListenTests(SynchronousTestCase):
    """
    L{SyncListenProtocol} answers listen requests with a descriptor.
    """

    def setUp(self) -> None:
        self.grants = _Grants()
        self.broker = BrokerProtocol(MemoryReactorClock(), self.grants, Logger())
        self.protocol = SyncListenProtocol(self.broker)
        self.sent: list[int] = []
        transport = StringTransport()
        transport.sendFileDescriptor = self.sent.append  # type: ignore[attr-defined]
        self.transport = transport
        self.protocol.makeConnection(transport)

        def closeAll() -> None:
            for sock in self.broker._unreleased.values():
                sock.close()

        self.addCleanup(closeAll)

    def ask(self, request: object) -> dict[str, Any]:
        payload = json.dumps(request).encode()
        self.protocol.dataReceived(len(payload).to_bytes(4, "big") + payload)
        data = self.transport.value()
        self.transport.clear()
        answer: dict[str, Any] = json.loads(data[4:])
        return answer

    def test_listen(self) -> None:
        """
        A granted listen answers C{ok} and sends the listening descriptor.
        """
        self.grants.listenPorts.add(0)
        answer = self.ask(
            {"op": "listen", "port": 0, "interface": "127.0.0.1", "backlog": 5}
        )
        self.assertTrue(answer["ok"])
        self.assertEqual(len(self.sent), 1)
        sock = self.broker._unreleased[answer["socketId"]]
        self.assertEqual(sock.fileno(), self.sent[0])
        self.assertNotEqual(sock.getsockname()[1], 0)

    def test_denied(self) -> None:
        """
        A listen outside the grants answers C{DENIED} and sends nothing.
        """
        answer = self.ask({"op": "listen", "port": 7, "interface": "", "backlog": 5})
        self.assertEqual(answer["error"], "DENIED")
        self.assertEqual(self.sent, [])

    def test_badRequest(self) -> None:
        """
        An unknown or malformed request answers C{BAD_REQUEST}.
        """
        self.assertEqual(self.ask({"op": "connect"})["error"], "BAD_REQUEST")
        self.assertEqual(
            self.ask({"op": "listen", "port": "x"})["error"], "BAD_REQUEST"
        )

    def test_tooLong(self) -> None:
        """
        An oversized request disconnects the channel.
        """
        self.protocol.dataReceived((100000).to_bytes(4, "big"))
        self.assertTrue(self.transport.disconnecting)


class DialTests(SynchronousTestCase):
    """
    L{dialTCP} and L{openListener}.
    """

    def test_timeout(self) -> None:
        """
        A connect that does not complete within the timeout fails with
        L{TimedOut} and the socket is closed.
        """
        listener = openListener("127.0.0.1", 0, 1)
        self.addCleanup(listener.close)
        clock = MemoryReactorClock()
        d = dialTCP(clock, "127.0.0.1", listener.getsockname()[1], timeout=3)
        self.assertNoResult(d)
        (pending,) = clock.getWriters()
        clock.advance(3)
        self.failureResultOf(d, TimedOut)
        self.assertEqual(pending.fileno(), -1)
        self.assertEqual(clock.getWriters(), [])

    def test_listenerBusy(self) -> None:
        """
        L{openListener} on a port in use fails with a message naming it.
        """
        from tcpext._broker import ListenFailed

        listener = openListener("127.0.0.1", 0, 1)
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        error = self.assertRaises(ListenFailed, openListener, "127.0.0.1", port, 1)
        self.assertIn(str(port), str(error))
