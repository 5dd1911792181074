"""
Tests for L{tcpext._broker} and L{tcpext._supervisor}: the host side of
process isolation, and the child's brokered reactor
(L{tcpext.sandbox.BrokeredReactor}), connected over real UNIX socket pairs
in this process (the wire format is L{tcpext._wire}).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from errno import ECONNREFUSED
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpext._broker import (
    BrokerProtocol,
    SyncListenProtocol,
    dialTCP,
    openListener,
)
from tcpext._childoutput import ChildOutput
from tcpext._hosts import parseHost
from tcpext._supervisor import IsolatedExtension, RestartPolicy
from tcpext._wire import (
    ERRORS,
    EXIT_NO_NAMESPACE,
    SYNC_MAX_LENGTH,
    BadRequest,
    BrokerLimit,
    Connect,
    Denied,
    DialFailed,
    ListenFailed,
    NotSaved,
    Refused,
    Release,
    Resolve,
    SyncChannel,
    TimedOut,
    encodeLogRecord,
    errorCode,
    errorFromCode,
)
from tcpext.permissions import PermissionDenied, PermissionSet
from tcpext.sandbox import BrokeredReactor, HostConnection
from tests.test_examples import freePort, freePorts


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


class _Accepted(Protocol):
    def __init__(self, record: list[Any]) -> None:
        self.lost: defer.Deferred[None] = defer.Deferred()
        record.append(self)

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(None)


def _adopt(sock: socket.socket, protocol: Any) -> None:
    sock.setblocking(False)
    reactor.adoptStreamConnection(  # type: ignore[attr-defined]
        sock.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: protocol)
    )
    sock.close()


class _BrokerPairTestCase(TestCase):
    """
    A broker and a child's connection in one process, over a socket pair.
    """

    def connectBroker(self, broker: BrokerProtocol) -> None:
        """
        Connect C{broker} to a new child connection, C{self.child};
        disconnected at cleanup.
        """
        self.broker = broker
        self.child = HostConnection()
        hostEnd, childEnd = socket.socketpair()
        _adopt(hostEnd, self.broker)
        _adopt(childEnd, self.child)
        syncHost, syncChild = socket.socketpair()
        _adopt(syncHost, SyncListenProtocol(broker))
        self.sync = SyncChannel(syncChild)
        self.sync.timeout = 10.0

        def cleanUp() -> defer.Deferred[Any]:
            syncChild.close()
            if self.child.transport is not None:
                self.child.transport.loseConnection()
            return defer.DeferredList([self.broker.lost, self.child.lost])

        self.addCleanup(cleanUp)

    async def listen(self, port: int, interface: str, backlog: int) -> dict[str, Any]:
        """
        Ask for a listening socket over the synchronous channel, as the
        child's reactor does (its blocking call runs in a thread here, so
        that this reactor can answer it).

        @return: C{socketId}, C{descriptor} and C{family}.
        @raise Exception: the error of L{tcpext._wire.ERRORS} answered.
        """
        request = {
            "op": "listen",
            "port": port,
            "interface": interface,
            "backlog": backlog,
        }
        answer, fds = await threads.deferToThread(self.sync.call, request)
        if not answer["ok"]:
            self.assertEqual(fds, [])
            raise errorFromCode(answer["error"], answer["message"])
        self.assertEqual(len(fds), 1)
        return {
            "socketId": answer["socketId"],
            "descriptor": fds[0],
            "family": answer["family"],
        }

    def echoServer(self) -> int:
        """
        An echo server on 127.0.0.1, stopped at cleanup; its port.
        """
        port = reactor.listenTCP(  # type: ignore[attr-defined]
            0, Factory.forProtocol(_Echo), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)


class BrokerLoopbackTests(_BrokerPairTestCase):
    """
    A broker and a child's connection in one process, real loopback sockets.
    """

    def setUp(self) -> None:
        self.grants = PermissionSet()
        self.connectBroker(BrokerProtocol(reactor, self.grants, Logger()))

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
        self.grants.add(f"tcp-connect:127.0.0.1:{port}")
        answer = await self.child.callRemote(
            Connect, host="127.0.0.1", port=port, timeout=5.0
        )
        protocol = self.adoptClient(answer)
        protocol.transport.write(b"hello!")  # type: ignore[union-attr]
        self.assertEqual(await protocol.done, b"hello!")
        self.assertIn(answer["socketId"], self.broker._held)
        await self.child.callRemote(Release, socketIds=[answer["socketId"]])
        self.assertNotIn(answer["socketId"], self.broker._held)

    async def test_heldLimit(self) -> None:
        """
        The host keeps at most C{maxHeld} handed-over sockets open: past it
        a granted connect or listen fails with L{BrokerLimit} (the socket it
        opened closed at once, nothing handed over), and once the child
        releases one, the next is handed over again.
        """
        self.broker.maxHeld = 2
        port = self.echoServer()
        listenPort = freePort()
        self.grants.add(f"tcp-connect:127.0.0.1:{port}")
        self.grants.add(f"tcp-listen:{listenPort}")
        answers = []
        for _ in range(2):
            answer = await self.child.callRemote(
                Connect, host="127.0.0.1", port=port, timeout=5.0
            )
            os.close(answer["descriptor"])
            answers.append(answer)
        d = self.child.callRemote(Connect, host="127.0.0.1", port=port, timeout=5.0)
        error = await self.assertFailure(d, BrokerLimit)
        self.assertIn("2 sockets handed over and open", str(error))
        refused = defer.ensureDeferred(
            self.listen(port=listenPort, interface="127.0.0.1", backlog=5)
        )
        await self.assertFailure(refused, BrokerLimit)
        self.assertEqual(
            sorted(self.broker._held), sorted(a["socketId"] for a in answers)
        )
        # The listening socket the host opened was closed: the port is free.
        probe = socket.socket()
        self.addCleanup(probe.close)
        probe.bind(("127.0.0.1", listenPort))

        await self.child.callRemote(Release, socketIds=[answers[0]["socketId"]])
        answer = await self.child.callRemote(
            Connect, host="127.0.0.1", port=port, timeout=5.0
        )
        os.close(answer["descriptor"])
        self.assertIn(answer["socketId"], self.broker._held)
        self.assertEqual(len(self.broker._held), 2)

    async def test_lostChannelShutsDown(self) -> None:
        """
        When the channel ends, the host shuts down every socket it handed
        over and that was not released, so that a copy of its descriptor
        kept elsewhere (by a process the child started) is useless: a
        listening socket stops accepting, a dialed connection ends.
        """
        port = self.echoServer()
        listenPort = freePort()
        self.grants.add(f"tcp-connect:127.0.0.1:{port}")
        self.grants.add(f"tcp-listen:{listenPort}")
        dialed = await self.child.callRemote(
            Connect, host="127.0.0.1", port=port, timeout=5.0
        )
        listening = await self.listen(port=listenPort, interface="127.0.0.1", backlog=5)
        kept = [
            socket.socket(fileno=dialed["descriptor"]),
            socket.socket(fileno=listening["descriptor"]),
        ]
        for copy in kept:
            self.addCleanup(copy.close)
        self.child.transport.loseConnection()  # type: ignore[union-attr]
        await self.broker.lost
        self.assertEqual(self.broker._held, {})
        connection, server = kept
        connection.settimeout(10)
        self.assertEqual(connection.recv(10), b"")
        self.assertRaises(OSError, connection.send, b"x")
        refused = socket.socket()
        self.addCleanup(refused.close)
        self.assertEqual(refused.connect_ex(("127.0.0.1", listenPort)), ECONNREFUSED)

    async def test_lostChannelEndsListenChannel(self) -> None:
        """
        When the AMP channel ends, the host closes the listen channel too: a
        process that still holds it (one the child started, which outlives
        it) gets no new listening socket.
        """
        listenPort = freePort()
        self.grants.add(f"tcp-listen:{listenPort}")
        self.child.transport.loseConnection()  # type: ignore[union-attr]
        await self.broker.lost
        d = defer.ensureDeferred(
            self.listen(port=listenPort, interface="127.0.0.1", backlog=5)
        )
        await self.assertFailure(d, ConnectionError)
        self.assertEqual(self.broker._held, {})
        probe = socket.socket()
        self.addCleanup(probe.close)
        probe.bind(("127.0.0.1", listenPort))

    async def test_releasedListenerShutDown(self) -> None:
        """
        A listening socket the child releases is shut down by the host: a
        copy of its descriptor kept elsewhere (by a process the child
        started) accepts nothing more.
        """
        listenPort = freePort()
        self.grants.add(f"tcp-listen:{listenPort}")
        listening = await self.listen(port=listenPort, interface="127.0.0.1", backlog=5)
        kept = socket.socket(fileno=listening["descriptor"])
        self.addCleanup(kept.close)
        await self.child.callRemote(Release, socketIds=[listening["socketId"]])
        self.assertEqual(self.broker._held, {})
        refused = socket.socket()
        self.addCleanup(refused.close)
        self.assertEqual(refused.connect_ex(("127.0.0.1", listenPort)), ECONNREFUSED)

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
        A host the policy rejects as invalid (a space, a numeric alias) is a
        L{BadRequest}.
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
        self.grants.add(f"tcp-connect:127.0.0.1:{port}")
        d = self.child.callRemote(Connect, host="127.0.0.1", port=port, timeout=5.0)
        await self.assertFailure(d, Refused)

    async def test_connectName(self) -> None:
        """
        A name grant: the host resolves (C{localhost} without DNS), applies
        the rebinding check, and dials an address that passed.
        """
        port = self.echoServer()
        self.grants.add(f"tcp-connect:localhost:{port}")
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
        self.grants.add(f"tcp-connect:localhost:{port}")
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
        self.grants.add(f"tcp-listen:{portNumber}")
        answer = await self.listen(port=portNumber, interface="127.0.0.1", backlog=5)
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
        d = defer.ensureDeferred(
            self.listen(port=freePort(), interface="127.0.0.1", backlog=5)
        )
        await self.assertFailure(d, Denied)

    async def test_listenBadInterface(self) -> None:
        """
        An interface that is not an IP literal is a L{BadRequest}.
        """
        port = freePort()
        self.grants.add(f"tcp-listen:{port}")
        d = defer.ensureDeferred(self.listen(port=port, interface="eth0", backlog=5))
        await self.assertFailure(d, BadRequest)

    async def test_brokeredConnectTCP(self) -> None:
        """
        L{BrokeredReactor.connectTCP} gets its socket from the host and
        drives the client factory as a real connector would.
        """
        port = self.echoServer()
        self.grants.add(f"tcp-connect:127.0.0.1:{port}")
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
        # AMP answers in order: once this is answered, the child's Release
        # of the closed socket has been handled.
        await self.child.callRemote(Release, socketIds=[])
        self.assertEqual(self.broker._held, {})

    async def test_brokeredConnectRefused(self) -> None:
        """
        A refused brokered connect reaches the factory as Twisted's
        L{ConnectionRefusedError}.
        """
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        self.grants.add(f"tcp-connect:127.0.0.1:{port}")
        brokered = BrokeredReactor(reactor, self.child, None)
        failed: defer.Deferred[Any] = defer.Deferred()

        class F(ClientFactory):
            def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
                failed.callback([reason])

        brokered.connectTCP("127.0.0.1", port, F())
        (reason,) = await failed
        self.assertTrue(reason.check(ConnectionRefusedError))

    async def test_brokeredResolver(self) -> None:
        """
        The child's resolver reads an address as the host does (an
        IPv4-mapped one is its IPv4 address, a zone is kept) without asking
        the host, and reports the host's refusal as a placeholder address
        carrying it (as a checked resolver does).
        """
        from tcpext._resolution import DeniedHost

        resolver = BrokeredReactor(reactor, self.child, None).nameResolver
        found: list[Any] = []
        done: list[bool] = []

        class Receiver:
            def resolutionBegan(self, resolution: Any) -> None:
                pass

            def addressResolved(self, address: Any) -> None:
                found.append(address.host)

            def resolutionComplete(self) -> None:
                done.append(True)

        resolver.resolveHostName(Receiver(), "::ffff:127.0.0.1", 80)
        resolver.resolveHostName(Receiver(), "fe80::1%eth0", 80)
        self.assertEqual(found, ["127.0.0.1", "fe80::1%eth0"])
        resolver.resolveHostName(Receiver(), "example.com", 80)
        await self.child.callRemote(Release, socketIds=[])
        [denied] = found[2:]
        self.assertIsInstance(denied, DeniedHost)
        self.assertIn("permission denied", denied.message)
        self.assertEqual(len(done), 3)

    async def test_enforce(self) -> None:
        """
        L{BrokerProtocol.enforce} shuts down, from the host, the handed-over
        sockets the grants no longer allow; the child's copy ends with them.
        """
        accepted: list[_Accepted] = []
        server = reactor.listenTCP(  # type: ignore[attr-defined]
            0, Factory.forProtocol(lambda: _Accepted(accepted)), interface="127.0.0.1"
        )
        self.addCleanup(server.stopListening)
        port = server.getHost().port
        self.grants.add(f"tcp-connect:127.0.0.1:{port}")
        self.grants.add("tcp-listen:*")
        answer = await self.child.callRemote(
            Connect, host="127.0.0.1", port=port, timeout=5.0
        )
        listening = await self.listen(port=0, interface="127.0.0.1", backlog=5)
        os.close(listening["descriptor"])
        protocol = self.adoptClient(answer)
        lost: defer.Deferred[None] = defer.Deferred()
        protocol.connectionLost = lambda reason: lost.callback(None)  # type: ignore[method-assign]
        self.assertEqual(self.broker.enforce(), [])
        self.grants.discard(f"tcp-connect:127.0.0.1:{port}")
        self.assertEqual(self.broker.enforce(), [answer["socketId"]])
        await lost
        await accepted[0].lost
        self.assertEqual(list(self.broker._held), [listening["socketId"]])

    async def test_hostnameEndpoint(self) -> None:
        """
        C{HostnameEndpoint} over a L{BrokeredReactor}: the name is resolved
        by the host (L{Resolve}) and the address it passed is then dialed
        by the host as a connection to that name.
        """
        from twisted.internet.endpoints import HostnameEndpoint, connectProtocol

        port = self.echoServer()
        self.grants.add(f"tcp-connect:localhost:{port}")
        brokered = BrokeredReactor(reactor, self.child, None)
        protocol = _Collect()
        endpoint = HostnameEndpoint(brokered, "localhost", port, timeout=5)
        await connectProtocol(endpoint, protocol)
        self.addCleanup(protocol.transport.abortConnection)  # type: ignore[union-attr]
        protocol.transport.write(b"by name!")  # type: ignore[union-attr]
        self.assertEqual(await protocol.done, b"by name!")
        self.assertEqual(
            self.broker.policy.memory.namesFor(
                parseHost("127.0.0.1").ip,  # type: ignore[arg-type]
                reactor.seconds(),  # type: ignore[attr-defined]
            ),
            ["localhost"],
        )

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
        self.grants.add("tcp-connect:example.com:80")
        calls = [
            self.child.callRemote(Resolve, name="example.com", port=80)
            for _ in range(10)
        ]
        for d in calls:
            d.addErrback(lambda f: None)
        await self.broker.lost


def _pair(key: bytes, value: bytes) -> bytes:
    """
    One AMP key/value pair as it travels: each string after its 16-bit
    length.
    """
    return len(key).to_bytes(2, "big") + key + len(value).to_bytes(2, "big") + value


class HostBoundsTests(SynchronousTestCase):
    """
    What a child can make the host hold is bounded: the size of an AMP box,
    descriptors, the requests' rate, answers it does not read, and the
    lines its refusals log.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.events: list[dict[str, Any]] = []
        self.log = Logger(namespace="tcpext.extension.x", observer=self.events.append)
        self.grants = PermissionSet()
        self.broker = BrokerProtocol(self.reactor, self.grants, self.log)
        self.transport = StringTransport()
        self.broker.makeConnection(self.transport)

    def errors(self) -> list[str]:
        from twisted.logger import LogLevel, formatEvent

        return [formatEvent(e) for e in self.events if e["log_level"] == LogLevel.error]

    def test_tooManyKeys(self) -> None:
        """
        A box that goes on past C{maxBoxKeys} keys (never terminated) ends
        the connection; the host keeps no more than the limit, logs it once,
        and ignores the rest.
        """
        limit = self.broker.maxBoxKeys
        data = b"".join(_pair(b"k%d" % i, b"v") for i in range(limit))
        self.broker.dataReceived(data)
        self.assertFalse(self.transport.disconnecting)
        self.broker.dataReceived(_pair(b"one-more", b"v") + _pair(b"and", b"more"))
        self.assertTrue(self.transport.disconnected)
        self.assertLessEqual(len(self.broker._currentBox or {}), limit)
        self.broker.dataReceived(b"".join(_pair(b"x%d" % i, b"v") for i in range(99)))
        self.assertLessEqual(len(self.broker._currentBox or {}), limit)
        self.assertEqual(
            self.errors(),
            [
                f"the extension sent a message of more than {limit} keys on its "
                "channel; disconnecting it"
            ],
        )

    def test_tooManyBytes(self) -> None:
        """
        A box past C{maxBoxBytes} bytes ends the connection, even when it
        repeats one key.
        """
        big = b"x" * 60000
        self.broker.dataReceived(_pair(b"k", big) + _pair(b"k", big))
        self.assertFalse(self.transport.disconnecting)
        self.broker.dataReceived(_pair(b"k", big))
        self.assertTrue(self.transport.disconnected)
        self.assertIn("more than 131072 bytes", self.errors()[0])

    def test_boxesWithinLimits(self) -> None:
        """
        The limits are per box: many boxes within them are answered.
        """
        box = (
            _pair(b"_command", b"Release")
            + _pair(b"_ask", b"1")
            + _pair(b"socketIds", b"")
            + b"\x00\x00"
        )
        for _ in range(500):
            self.broker.dataReceived(box)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.transport.value().count(b"_answer"), 500)

    def test_descriptorRefused(self) -> None:
        """
        A descriptor from the child is closed at once and ends the
        connection (no request carries one; AMP would keep it for ever).
        """
        fd = os.open(os.devnull, os.O_RDONLY)
        self.broker.fileDescriptorReceived(fd)
        self.assertRaises(OSError, os.fstat, fd)
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.broker._descriptors, {})
        self.assertIn("a file descriptor", self.errors()[0])

    def test_requestRate(self) -> None:
        """
        Past its request rate, a child's requests are refused with
        L{BrokerLimit} (the rate refills over time), and the refusal is
        logged like the others.
        """
        from tcpext._limits import TokenBucket
        from tcpext._wire import BrokerLimit

        self.broker.requests = TokenBucket(2, 2, self.reactor.seconds)
        self.broker.removePermissions([])
        self.broker.removePermissions([])
        error = self.assertRaises(BrokerLimit, self.broker.removePermissions, [])
        self.assertIn("more than 2 requests a second", str(error))
        self.assertRaises(BrokerLimit, self.broker.listen, 0, "127.0.0.1", 5)
        d = defer.maybeDeferred(self.broker.resolve, "example.com", 80)
        self.failureResultOf(d, BrokerLimit)
        self.reactor.advance(0.5)
        self.broker.removePermissions([])
        self.assertIn(
            "broker refused a permissions removal: more than 2 requests",
            formatEvent(self.events[0]),
        )

    def test_denialsRateLimited(self) -> None:
        """
        Refusals are logged at most C{burst} times a window, then one
        summary line says how many were left out.
        """
        from tcpext._audit import DenialLimiter
        from tcpext._limits import RateLimitedLog

        limiter = DenialLimiter(burst=5, window=10, clock=self.reactor.seconds)
        self.broker.denials = RateLimitedLog(self.log, self.reactor, "x", limiter)
        for _ in range(100):
            d = self.broker.connect(host="127.0.0.1", port=80, timeout=1.0)
            self.failureResultOf(d, Denied)
        refused = [e for e in self.events if "broker refused" in e["log_format"]]
        self.assertEqual(len(refused), 5)
        self.reactor.advance(10)
        self.assertIn("95 more denials suppressed", formatEvent(self.events[-1]))

    def test_childRefusedVerbs(self) -> None:
        """
        A refusal report from the child reaches the owner only with a verb
        the child's own policy refuses (connect, listen, resolve, use); a
        report with any other verb (one that passes for the operator's, or
        a new one each time) is dropped and logged as refused.
        """
        reports: list[tuple[str, str, str]] = []

        class Owner:
            def childRefused(self, verb: str, target: str, reason: str) -> None:
                reports.append((verb, target, reason))

        self.broker.owner = Owner()  # type: ignore[assignment]
        for verb in ["connect", "listen", "resolve", "use"]:
            self.broker.childRefused(verb, "t", "r")
        for verb in ["revoke", "grant", "request", "suppressed", "v1", "x" * 999]:
            self.broker.childRefused(verb, "t", "r")
        self.assertEqual(
            reports,
            [(v, "t", "r") for v in ["connect", "listen", "resolve", "use"]],
        )
        refused = [formatEvent(e) for e in self.events]
        self.assertEqual(len(refused), 6)
        self.assertIn(
            "broker refused a refusal report with the verb 'revoke': not a "
            "request an extension's process refuses itself",
            refused[0],
        )
        self.assertLess(len(refused[-1]), 200)

    def test_secondHello(self) -> None:
        """
        Only a connection's first C{Hello} reaches the owner: a later one
        (extension code posing as the process's start, to put "extension
        process N started" or "not confined" lines of its making in the
        host's log) is refused with L{BadRequest} and logged as refused.
        """
        hellos: list[tuple[bool, str, int, list[str]]] = []

        class Owner:
            def childHello(
                self,
                broker: Any,
                confined: bool,
                reason: str,
                pid: int,
                layers: list[str],
            ) -> dict[str, object]:
                hellos.append((confined, reason, pid, layers))
                return {}

        self.broker.owner = Owner()  # type: ignore[assignment]
        self.broker.hello(True, "", 42, ["seccomp"])
        for confined, reason in [(True, ""), (False, "\x1b[31mforged\nline")]:
            self.assertRaises(
                BadRequest, self.broker.hello, confined, reason, 1, ["seccomp"]
            )
        self.assertEqual(hellos, [(True, "", 42, ["seccomp"])])
        refused = [formatEvent(e) for e in self.events]
        self.assertEqual(len(refused), 2)
        self.assertIn(
            "broker refused a second Hello: the process said hello at its start",
            refused[0],
        )
        self.assertNotIn("forged", "".join(refused))

    def test_unreadAnswers(self) -> None:
        """
        While the host's answers are not sent (the transport's buffer is
        full: the child does not read them), the host stops reading the
        child; it reads again once they went out.  Too many requests in
        progress stop it too, independently.
        """
        gate = self.transport.producer
        self.assertTrue(self.transport.streaming)
        gate.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.broker._begin()
        self.broker._end(None)
        self.assertEqual(self.transport.producerState, "paused")
        gate.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")
        self.broker.maxOutstanding = 2
        for _ in range(3):
            self.broker._begin()
        self.assertEqual(self.transport.producerState, "paused")
        gate.pauseProducing()
        gate.resumeProducing()
        self.assertEqual(self.transport.producerState, "paused")
        for _ in range(3):
            self.broker._end(None)
        self.assertEqual(self.transport.producerState, "producing")


class SyncListenTests(SynchronousTestCase):
    """
    L{SyncListenProtocol} answers listen requests with a descriptor.
    """

    def setUp(self) -> None:
        self.grants = PermissionSet()
        self.broker = BrokerProtocol(MemoryReactorClock(), self.grants, Logger())
        self.protocol = SyncListenProtocol(self.broker)
        self.sent: list[int] = []
        transport = StringTransport()
        transport.sendFileDescriptor = self.sent.append  # type: ignore[attr-defined]
        self.transport = transport
        self.protocol.makeConnection(transport)

        def closeAll() -> None:
            for held in self.broker._held.values():
                held.sock.close()

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
        self.grants.add("tcp-listen:*")
        answer = self.ask(
            {"op": "listen", "port": 0, "interface": "127.0.0.1", "backlog": 5}
        )
        self.assertTrue(answer["ok"])
        self.assertEqual(len(self.sent), 1)
        sock = self.broker._held[answer["socketId"]].sock
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


class SyncBoundsTests(SynchronousTestCase):
    """
    The synchronous channel's bounds: a descriptor from the child ends it,
    its requests count against the child's rate, and answers the child does
    not read stop the host reading it.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.reactor = MemoryReactorClock()
        self.broker = BrokerProtocol(
            self.reactor, PermissionSet(), Logger(observer=self.events.append)
        )
        self.protocol = SyncListenProtocol(self.broker)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_descriptor(self) -> None:
        """
        A descriptor is closed at once and ends the channel.
        """
        fd = os.open(os.devnull, os.O_RDONLY)
        self.protocol.fileDescriptorReceived(fd)
        self.assertRaises(OSError, os.fstat, fd)
        self.assertTrue(self.transport.disconnected)

    def test_rate(self) -> None:
        """
        Past the child's rate, a listen request is answered C{LIMIT}.
        """
        from tcpext._limits import TokenBucket

        self.broker.requests = TokenBucket(1, 1, self.reactor.seconds)
        for expected in ("DENIED", "LIMIT"):
            payload = json.dumps({"op": "listen", "port": 7, "backlog": 1}).encode()
            self.protocol.dataReceived(len(payload).to_bytes(4, "big") + payload)
            answer = json.loads(self.transport.value()[4:])
            self.transport.clear()
            self.assertEqual(answer["error"], expected)

    def test_unreadAnswers(self) -> None:
        """
        The channel stops being read while its answers are not sent.
        """
        self.transport.producer.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.transport.producer.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")


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
        listener = openListener("127.0.0.1", 0, 1)
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        error = self.assertRaises(ListenFailed, openListener, "127.0.0.1", port, 1)
        self.assertIn(str(port), str(error))


class _FakeProcess:
    """
    What L{_FakeProcessReactor.spawnProcess} returns.
    """

    def __init__(
        self,
        protocol: Any,
        args: list[str],
        childFDs: dict[int, Any],
        env: dict[str, str],
    ):
        self.protocol = protocol
        self.args = args
        self.childFDs = childFDs
        self.env = env
        self.pid: int | None = 4242
        self.signals: list[str] = []
        self.outputClosed = False

    def closeStdin(self) -> None:
        pass

    def loseConnection(self) -> None:
        self.outputClosed = True

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)

    def end(self, exitCode: int | None = None, signal: int | None = None) -> None:
        from twisted.internet.error import ProcessTerminated
        from twisted.python.failure import Failure

        self.pid = None
        self.protocol.processEnded(Failure(ProcessTerminated(exitCode, signal)))


class _FakeProcessReactor(MemoryReactorClock):
    """
    Records spawned processes; adopted UNIX connections get a
    L{StringTransport}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[_FakeProcess] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], **kw: Any):  # type: ignore[no-untyped-def]
        process = _FakeProcess(protocol, args, kw["childFDs"], kw["env"])
        self.processes.append(process)
        protocol.makeConnection(process)
        return process

    def adoptStreamConnection(self, fileDescriptor: int, family: int, factory: Any):  # type: ignore[no-untyped-def]
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        return protocol.transport


class _FakeProcessMixin:
    """
    Builds L{IsolatedExtension}s over a L{_FakeProcessReactor}.
    """

    def setUp(self) -> None:
        self.reactor = _FakeProcessReactor()
        self.events: list[dict[str, Any]] = []
        self.store: dict[str, list[str]] = {}

    def make(self, **kw: Any) -> IsolatedExtension:
        store = self

        class Store:
            def load(self, extensionId: str) -> list[str]:
                return list(store.store.get(extensionId, ()))

            def save(self, extensionId: str, entries: list[str]) -> None:
                store.store[extensionId] = list(entries)

        manifest = {
            "manifest_version": 2,
            "name": "x",
            "version": "1",
            "permissions": ["tcp-listen:7000"],
            "optional_permissions": [
                "tcp-connect:example.com:443",
                "tcp-connect:10.0.0.1:22",
            ],
            "background": {"scripts": ["background.py"]},
        }
        kw.setdefault(
            "restart",
            RestartPolicy(maxRestarts=2, initialDelay=1.0, pingInterval=None),
        )
        service = IsolatedExtension(
            path=".",
            extensionId="x",
            manifest=manifest,
            reactor=self.reactor,
            grantStore=Store(),
            log=Logger(namespace="x", observer=self.events.append),
            **kw,
        )
        self.addCleanup(service._removeScratch)
        return service

    def logged(self, text: str) -> bool:
        from twisted.logger import formatEvent

        return any(text in formatEvent(e) for e in self.events)

    def hello(
        self,
        service: Any,
        confined: bool = True,
        layers: tuple[str, ...] = ("network namespace", "Landlock ABI 7", "seccomp"),
    ) -> Any:
        reason = "" if confined else "seccomp (libseccomp cannot be loaded)"
        return service.childHello(service.broker, confined, reason, 4242, layers)


class IsolatedExtensionUnitTests(_FakeProcessMixin, SynchronousTestCase):
    """
    L{IsolatedExtension}'s grants and process supervision, with a fake
    process reactor.
    """

    def test_spawnArguments(self) -> None:
        """
        The child runs C{python -m tcpext.sandbox} with the confinement
        mode, its scratch folder (a new 0700 folder, also its C{TMPDIR}),
        the resource limits, and the two sockets as descriptors 3 and 4.
        The scratch folder is removed, with what the child left in it, once
        the child has ended; a restarted child gets a new one.
        """
        service = self.make(limits={"RLIMIT_NOFILE": 64})
        service.startService()
        (process,) = self.reactor.processes
        self.assertEqual(
            process.args[1:5], ["-m", "tcpext.sandbox", "--confine", "require"]
        )
        self.assertEqual(process.args[5], "--scratch")
        scratch = process.args[6]
        self.assertEqual(process.env["TMPDIR"], scratch)
        self.assertEqual(os.stat(scratch).st_mode & 0o777, 0o700)
        self.assertIn("--rlimit=RLIMIT_NOFILE=64", process.args)
        self.assertEqual(sorted(process.childFDs), [0, 1, 2, 3, 4])
        os.makedirs(os.path.join(scratch, "sub", "locked"))
        with open(os.path.join(scratch, "sub", "locked", "file"), "w") as f:
            f.write("left behind")
        os.chmod(os.path.join(scratch, "sub", "locked"), 0o500)
        os.chmod(os.path.join(scratch, "sub"), 0o500)
        process.end(exitCode=9)
        self.assertFalse(os.path.exists(scratch))
        self.reactor.advance(10)
        restarted = self.reactor.processes[1]
        self.assertNotEqual(restarted.args[6], scratch)
        self.assertTrue(os.path.isdir(restarted.args[6]))
        unconfined = self.make(mode="process-unconfined")
        unconfined.startService()
        self.assertIn("try", self.reactor.processes[2].args)

    def test_validation(self) -> None:
        """
        An unknown mode, a bad limit, or an operator grant the manifest does
        not list as optional are refused with a C{ValueError}.
        """
        self.assertRaises(ValueError, self.make, mode="none")
        self.assertRaises(ValueError, self.make, limits={"RLIMIT_BOGUS": 1})
        self.assertRaises(ValueError, self.make, limits={"RLIMIT_AS": "1G"})
        error = self.assertRaises(
            ValueError, self.make, operatorGrants=["tcp-connect:*:*"]
        )
        self.assertIn("optional_permissions", str(error))

    def test_hello(self) -> None:
        """
        The hello answer carries the manifest and the grants; the start
        timer is cancelled.
        """
        service = self.make(operatorGrants=["tcp-connect:10.0.0.1:22"])
        service.startService()
        answer = self.hello(service)
        self.assertEqual(json.loads(answer["manifest"])["name"], "x")
        self.assertEqual(answer["operatorGrants"], ["tcp-connect:10.0.0.1:22"])
        self.reactor.advance(1000)
        self.assertEqual(self.reactor.processes[0].signals, [])

    def test_unconfinedRefused(self) -> None:
        """
        In C{process} mode a child that is not confined is refused and
        killed, and not restarted; C{process-unconfined} accepts it with a
        warning.
        """
        service = self.make()
        service.startService()
        self.assertRaises(BadRequest, self.hello, service, False)
        (process,) = self.reactor.processes
        self.assertEqual(process.signals, ["KILL"])
        process.end(signal=9)
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.processes), 1)
        unconfined = self.make(mode="process-unconfined")
        unconfined.startService()
        self.hello(unconfined, False, ("network namespace", "Landlock ABI 7"))
        self.assertTrue(
            self.logged("runs unconfined: missing seccomp (libseccomp cannot")
        )
        self.assertTrue(
            self.logged("started (partly confined: network namespace, Landlock")
        )

    def test_confinedLayersChecked(self) -> None:
        """
        A child that says it is confined but does not name every layer in
        force is refused in C{process} mode; a confined child is logged
        with its layers.
        """
        service = self.make()
        service.startService()
        self.hello(service)
        self.assertTrue(
            self.logged(
                "started (confined: network namespace, Landlock ABI 7, seccomp)"
            )
        )
        lying = self.make()
        lying.startService()
        error = self.assertRaises(
            BadRequest, self.hello, lying, True, ("network namespace", "seccomp")
        )
        self.assertIn("required", str(error))
        self.assertTrue(self.logged("missing Landlock not reported in force"))
        self.assertEqual(self.reactor.processes[-1].signals, ["KILL"])

    def test_restartBackoff(self) -> None:
        """
        A crash is logged and the process restarted after a delay that
        doubles, up to C{maxRestarts}; then the host gives up.
        """
        service = self.make()
        service.startService()
        self.hello(service)
        self.reactor.processes[-1].end(exitCode=9)
        self.assertTrue(self.logged("crashed (exit status 9); restarting in 1.0s"))
        self.reactor.advance(0.9)
        self.assertEqual(len(self.reactor.processes), 1)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.reactor.processes), 2)
        self.hello(service)
        self.reactor.processes[-1].end(signal=11)
        self.assertTrue(self.logged("crashed (signal 11); restarting in 2.0s"))
        self.reactor.advance(2)
        self.assertEqual(len(self.reactor.processes), 3)
        self.reactor.processes[-1].end(exitCode=1)
        self.assertTrue(self.logged("gave up after 2 restarts"))
        self.reactor.advance(1000)
        self.assertEqual(len(self.reactor.processes), 3)

    def test_stableResetsCount(self) -> None:
        """
        A process that ran C{stableAfter} seconds resets the restart count.
        """
        service = self.make(
            restart=RestartPolicy(maxRestarts=1, stableAfter=10, pingInterval=None)
        )
        service.startService()
        self.hello(service)
        self.reactor.advance(11)
        self.reactor.processes[-1].end(exitCode=1)
        self.reactor.advance(1)
        self.hello(service)
        self.reactor.advance(11)
        self.reactor.processes[-1].end(exitCode=1)
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.processes), 3)

    def test_pingUnanswered(self) -> None:
        """
        A running process is pinged every C{pingInterval} seconds; one that
        does not answer within C{pingTimeout} is killed (its reactor is
        blocked) and restarted like a crash.
        """
        service = self.make(
            restart=RestartPolicy(pingInterval=5, pingTimeout=3, initialDelay=1)
        )
        service.startService()
        self.hello(service)
        transport = service.broker.transport  # type: ignore[union-attr]
        self.reactor.advance(4.9)
        self.assertNotIn(b"Ping", transport.value())
        self.reactor.advance(0.1)
        self.assertIn(b"Ping", transport.value())
        self.reactor.advance(2.9)
        self.assertEqual(self.reactor.processes[0].signals, [])
        self.reactor.advance(0.1)
        self.assertEqual(self.reactor.processes[0].signals, ["KILL"])
        self.assertTrue(self.logged("did not answer a ping within 3s"))
        self.reactor.processes[0].end(signal=9)
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.processes), 2)

    def test_hangAtStart(self) -> None:
        """
        A process that does not say hello within C{startTimeout} is killed.
        """
        service = self.make(restart=RestartPolicy(startTimeout=5, pingInterval=None))
        service.startService()
        self.reactor.advance(4.9)
        self.assertEqual(self.reactor.processes[0].signals, [])
        self.reactor.advance(0.1)
        self.assertEqual(self.reactor.processes[0].signals, ["KILL"])
        self.assertTrue(self.logged("did not start within 5s"))

    def test_noNamespaceNotRestarted(self) -> None:
        """
        Exit status 3 (no namespace) is reported and never restarted.
        """
        service = self.make()
        service.startService()
        self.reactor.processes[0].end(exitCode=EXIT_NO_NAMESPACE)
        self.reactor.advance(1000)
        self.assertEqual(len(self.reactor.processes), 1)
        self.assertTrue(self.logged("process-unconfined"))

    def test_mainFailedNotRestarted(self) -> None:
        """
        After C{MainFailed} the process's end is not a crash.
        """
        service = self.make()
        service.startService()
        self.hello(service)
        service.mainFailed("ImportError: nope")
        self.reactor.processes[0].end(exitCode=4)
        self.reactor.advance(1000)
        self.assertEqual(len(self.reactor.processes), 1)
        self.assertTrue(self.logged("stopped after a failure; not restarting"))

    def test_brokerLostKillsAfterGrace(self) -> None:
        """
        When the AMP connection ends, the process gets C{exitGrace} seconds
        to exit, then is killed.
        """
        service = self.make()
        service.startService()
        self.hello(service)
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        service.broker.connectionLost(Failure(ConnectionDone()))  # type: ignore[union-attr]
        self.assertEqual(self.reactor.processes[0].signals, [])
        self.reactor.advance(service.exitGrace)
        self.assertEqual(self.reactor.processes[0].signals, ["KILL"])

    def test_killedButHeldOpen(self) -> None:
        """
        A process killed whose end is still not seen C{abandonGrace}
        seconds later (a process it started holds its channel and output
        open) has its channel aborted and its output closed, which is
        logged; its end then stops the service as usual.  A process that
        ends in time is left alone.
        """
        service = self.make(restart=RestartPolicy(stopTimeout=3, pingInterval=None))
        service.startService()
        self.hello(service)
        channel = service.broker.transport  # type: ignore[union-attr]
        process = self.reactor.processes[0]
        d = service.stopService()
        self.reactor.advance(3)
        self.assertEqual(process.signals, ["KILL"])
        self.reactor.advance(service._supervisor.abandonGrace - 0.1)
        self.assertFalse(process.outputClosed)
        self.assertFalse(channel.disconnecting)
        self.reactor.advance(0.1)
        self.assertTrue(process.outputClosed)
        self.assertTrue(channel.disconnecting)
        self.assertTrue(self.logged("still holds its channel or output open"))
        process.end(signal=9)
        self.successResultOf(d)

        again = self.make(restart=RestartPolicy(stopTimeout=3, pingInterval=None))
        again.startService()
        self.hello(again)
        d = again.stopService()
        self.reactor.advance(3)
        self.reactor.processes[1].end(signal=9)
        self.successResultOf(d)
        self.reactor.advance(1000)
        self.assertFalse(self.reactor.processes[1].outputClosed)

    def test_stopService(self) -> None:
        """
        Stopping asks the child to shut down, kills it after C{stopTimeout},
        fires once it ended, and never restarts it.  Once the process has
        ended, the extension's stop is logged with the same words as an
        in-process extension's.
        """
        service = self.make(restart=RestartPolicy(stopTimeout=3, pingInterval=None))
        service.startService()
        self.hello(service)
        transport = service.broker.transport  # type: ignore[union-attr]
        d = service.stopService()
        self.assertIn(b"Shutdown", transport.value())
        self.assertNoResult(d)
        self.reactor.advance(3)
        self.assertEqual(self.reactor.processes[0].signals, ["KILL"])
        self.assertFalse(self.logged("extension 'x' stopped"))
        self.reactor.processes[0].end(signal=9)
        self.successResultOf(d)
        self.assertTrue(self.logged("extension process 4242 ended (signal 9)"))
        self.reactor.advance(1000)
        self.assertEqual(len(self.reactor.processes), 1)

    def test_requestPermissions(self) -> None:
        """
        A runtime request for optional grants goes to the host's prompt; if
        granted, the host adds and persists them.
        """
        asked = []
        service = self.make(prompt=lambda i, p: asked.append(p) or True)
        self.assertTrue(
            self.successResultOf(
                service.requestPermissions(["tcp-connect:EXAMPLE.com:443"])
            )
        )
        self.assertEqual(asked, [["tcp-connect:example.com:443"]])
        self.assertTrue(service.grants.allowsConnect("example.com", 443))
        self.assertEqual(self.store["x"], ["tcp-connect:example.com:443"])
        self.assertRaises(BadRequest, service.requestPermissions, ["tcp-connect:*:*"])

    def test_requestRefused(self) -> None:
        """
        A refused (or failing) prompt grants nothing.
        """
        service = self.make()
        self.assertFalse(
            self.successResultOf(
                service.requestPermissions(["tcp-connect:example.com:443"])
            )
        )
        self.assertFalse(service.grants.allowsConnect("example.com", 443))

        def broken(i: str, p: list[str]) -> bool:
            raise RuntimeError("tty gone")

        service = self.make(prompt=broken)
        self.assertFalse(
            self.successResultOf(
                service.requestPermissions(["tcp-connect:example.com:443"])
            )
        )
        self.flushLoggedErrors(RuntimeError)

    def test_removePermissions(self) -> None:
        """
        The child can give optional grants up (the host's ledger removes
        them and saves), never add one; a permission that is not optional is
        a L{BadRequest}.
        """
        self.store["x"] = ["tcp-connect:example.com:443"]
        service = self.make()
        self.assertRaises(BadRequest, service.removePermissions, ["tcp-connect:*:*"])
        self.assertFalse(service.removePermissions(["tcp-connect:10.0.0.1:22"]))
        self.assertFalse(service.grants.allowsConnect("10.0.0.1", 22))
        self.assertEqual(self.store["x"], ["tcp-connect:example.com:443"])
        self.assertTrue(service.removePermissions(["tcp-connect:example.com:443"]))
        self.assertFalse(service.grants.allowsConnect("example.com", 443))
        self.assertEqual(self.store["x"], [])

    def test_childCannotWriteGrants(self) -> None:
        """
        Nothing the child sends writes a grant the host did not decide: the
        only grant change it can ask for is a removal (it can ask for a
        grant, which the host's prompt answers); a removal of what is not an
        optional permission (invalid, not optional, a manifest one) is a
        L{BadRequest} and writes nothing, nor does one of what is not
        granted; only the removal of a stored grant is written.
        """
        self.store["x"] = ["tcp-connect:example.com:443"]
        service = self.make()
        saves: list[list[str]] = []
        store = service.ledger._store  # type: ignore[attr-defined]
        real = store.save

        def save(extensionId: str, entries: list[str]) -> None:
            saves.append(list(entries))
            real(extensionId, entries)

        store.save = save
        for entries in (
            ["tcp-connect:*:*"],
            ["tcp-listen:7000"],
            ["not a permission"],
            ["x" * 60000],
        ):
            self.assertRaises(BadRequest, service.removePermissions, entries)
        self.assertFalse(service.removePermissions(["tcp-connect:10.0.0.1:22"]))
        self.assertEqual(saves, [])
        self.assertEqual(self.store["x"], ["tcp-connect:example.com:443"])
        self.assertTrue(service.removePermissions(["tcp-connect:example.com:443"]))
        self.assertEqual(saves, [[]])
        self.assertFalse(service.grants.allowsConnect("example.com", 443))

    def test_revoke(self) -> None:
        """
        Revoking withdraws the grant in the host at once, persists, and tells
        the child.
        """
        self.store["x"] = ["tcp-connect:example.com:443"]
        service = self.make(operatorGrants=["tcp-connect:10.0.0.1:22"])
        service.startService()
        self.hello(service)
        transport = service.broker.transport  # type: ignore[union-attr]
        service.revoke(["tcp-connect:10.0.0.1:22", "tcp-connect:example.com:443"])
        self.assertFalse(service.grants.allowsConnect("10.0.0.1", 22))
        self.assertFalse(service.grants.allowsConnect("example.com", 443))
        self.assertTrue(service.grants.allowsListen(7000))
        self.assertEqual(self.store["x"], [])
        self.assertIn(b"Revoke", transport.value())
        self.assertIn(b"tcp-connect:10.0.0.1:22", transport.value())

    def test_requestNotSaved(self) -> None:
        """
        When the store cannot save a request the prompt granted, the host
        grants nothing (as in-process) and the child's request fails with
        L{NotSaved}; the child is told of no grant.
        """

        def failing(extensionId: str, entries: list[str]) -> None:
            raise OSError("read-only state folder")

        service = self.make(prompt=lambda e, p: True)
        service.ledger._store.save = failing  # type: ignore[attr-defined]
        service.startService()
        self.hello(service)
        transport = service.broker.transport  # type: ignore[union-attr]
        transport.clear()
        failure = self.failureResultOf(
            service.requestPermissions(["tcp-connect:example.com:443"]), NotSaved
        )
        self.assertIn("read-only state folder", str(failure.value))
        self.assertFalse(service.grants.allowsConnect("example.com", 443))
        self.assertEqual(service.ledger.grantsBySource()["stored"], [])
        self.assertNotIn(b"Grant", transport.value())

    def test_grantReachesChild(self) -> None:
        """
        A grant made on the host (the operator's, or a request the prompt
        granted) is saved, allowed at once, and pushed to the running child.
        """
        service = self.make(prompt=lambda e, p: True)
        service.startService()
        self.hello(service)
        transport = service.broker.transport  # type: ignore[union-attr]
        transport.clear()
        self.assertTrue(service.grant("tcp-connect:10.0.0.1:22"))
        self.assertTrue(service.grants.allowsConnect("10.0.0.1", 22))
        self.assertEqual(self.store["x"], ["tcp-connect:10.0.0.1:22"])
        self.assertIn(b"Grant", transport.value())
        self.assertIn(b"tcp-connect:10.0.0.1:22", transport.value())
        transport.clear()
        self.assertTrue(
            self.successResultOf(
                service.requestPermissions(["tcp-connect:example.com:443"])
            )
        )
        self.assertIn(b"tcp-connect:example.com:443", transport.value())
        self.assertRaises(ValueError, service.grant, "tcp-connect:*:*")

    def test_revokeManifestRefused(self) -> None:
        """
        A manifest permission cannot be revoked; an operator grant revoked
        is gone for this run only (the next start of the service has it
        again, from its --grant).
        """
        from tcpext._ledger import CannotRevoke

        service = self.make(operatorGrants=["tcp-connect:10.0.0.1:22"])
        self.assertRaises(CannotRevoke, service.revoke, ["tcp-listen:7000"])
        self.successResultOf(service.revoke(["tcp-connect:10.0.0.1:22"]))
        self.assertEqual(service.ledger.grantsBySource()["operator"], [])
        self.assertNotIn("x", self.store)
        again = self.make(operatorGrants=["tcp-connect:10.0.0.1:22"])
        self.assertTrue(again.grants.allowsConnect("10.0.0.1", 22))

    def test_reapedWithoutSIGCHLD(self) -> None:
        """
        After a kill, the process is polled with C{reapProcess} (bounded),
        so its end is noticed even if the reactor handles no C{SIGCHLD}.
        """
        service = self.make(
            restart=RestartPolicy(startTimeout=1, maxRestarts=0, pingInterval=None)
        )
        service.startService()
        (process,) = self.reactor.processes
        calls = []

        def reapProcess() -> None:
            calls.append(None)
            if len(calls) == 3:
                process.end(signal=9)

        process.reapProcess = reapProcess  # type: ignore[attr-defined]
        self.reactor.advance(1)
        self.assertEqual(process.signals, ["KILL"])
        self.assertEqual(len(calls), 1)
        self.reactor.advance(0.2)
        self.reactor.advance(0.2)
        self.assertEqual(len(calls), 3)
        self.assertTrue(self.logged("gave up"))
        self.reactor.advance(10)
        self.assertEqual(len(calls), 3)


class SupervisorStateTests(_FakeProcessMixin, SynchronousTestCase):
    """
    The supervision of an isolated extension's process as a state machine:
    the state an operator sees (C{IsolatedExtension.state}) through each
    life, and events that arrive while another is handled.
    """

    def test_lifeAndStop(self) -> None:
        """
        C{stopped} before the start, C{running} while the first process
        starts and once it said hello, C{stopped} once stopping.
        """
        service = self.make()
        self.assertEqual(service.state, "stopped")
        service.startService()
        self.assertEqual(service.state, "running")
        self.hello(service)
        self.assertEqual(service.state, "running")
        d = service.stopService()
        self.assertEqual(service.state, "stopped")
        self.assertNoResult(d)
        self.reactor.processes[0].end(exitCode=0)
        self.successResultOf(d)
        self.assertEqual(service.state, "stopped")
        # Stopping again is immediate.
        self.successResultOf(service.stopService())

    def test_restarting(self) -> None:
        """
        After a crash, C{restarting} during the backoff delay and while the
        next process starts; C{running} again once it said hello.
        """
        service = self.make()
        service.startService()
        self.hello(service)
        self.reactor.processes[0].end(exitCode=1)
        self.assertEqual(service.state, "restarting")
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.processes), 2)
        self.assertEqual(service.state, "restarting")
        self.hello(service)
        self.assertEqual(service.state, "running")

    def test_failed(self) -> None:
        """
        A failed script, a refused namespace, and too many crashes in a row
        end in C{failed}; a new start of the service starts afresh.
        """
        service = self.make()
        service.startService()
        self.hello(service)
        service.mainFailed("ImportError: nope")
        self.assertEqual(service.state, "running")
        self.reactor.processes[-1].end(exitCode=4)
        self.assertEqual(service.state, "failed")
        noNamespace = self.make()
        noNamespace.startService()
        self.reactor.processes[-1].end(exitCode=EXIT_NO_NAMESPACE)
        self.assertEqual(noNamespace.state, "failed")
        crasher = self.make(restart=RestartPolicy(maxRestarts=0, pingInterval=None))
        crasher.startService()
        self.reactor.processes[-1].end(signal=11)
        self.assertEqual(crasher.state, "failed")
        self.successResultOf(crasher.stopService())
        self.assertEqual(crasher.state, "stopped")
        crasher.startService()
        self.assertEqual(crasher.state, "running")
        self.hello(crasher)
        self.assertEqual(crasher.starts, 2)

    def test_spawnFails(self) -> None:
        """
        A process that cannot be spawned is reported and the extension is
        C{failed}, not restarted; stopping it is immediate.
        """

        def refuse(*args: Any, **kw: Any) -> None:
            raise OSError(24, "Too many open files")

        self.reactor.spawnProcess = refuse  # type: ignore[assignment]
        service = self.make()
        service.startService()
        self.assertEqual(service.state, "failed")
        [failure] = [e["log_failure"] for e in self.events if "log_failure" in e]
        self.assertTrue(failure.check(OSError))
        self.assertTrue(self.logged("could not start the extension process"))
        self.assertTrue(self.logged("not restarting"))
        self.successResultOf(service.stopService())
        self.assertEqual(service.state, "stopped")

    def test_stopWhileWaiting(self) -> None:
        """
        A stop during the backoff delay is immediate and cancels the
        restart.
        """
        service = self.make()
        service.startService()
        self.reactor.processes[0].end(exitCode=1)
        self.successResultOf(service.stopService())
        self.assertEqual(service.state, "stopped")
        self.reactor.advance(1000)
        self.assertEqual(len(self.reactor.processes), 1)

    def test_stopFromCrashLog(self) -> None:
        """
        A stop asked by code that the crash's log line runs (while the end
        is judged) wins: no restart, the service is C{stopped} and the stop
        fires.
        """
        service = self.make()
        stops: list[Any] = []

        def observe(event: dict[str, Any]) -> None:
            if "crashed" in event.get("log_format", "") and not stops:
                stops.append(service.stopService())

        service.log.observer = observe
        service.startService()
        self.reactor.processes[0].end(exitCode=1)
        self.assertEqual(service.state, "stopped")
        self.successResultOf(stops[0])
        self.reactor.advance(1000)
        self.assertEqual(len(self.reactor.processes), 1)

    def test_startWhileStopping(self) -> None:
        """
        A start while the process is still stopping is not a second process.
        """
        service = self.make()
        service.startService()
        d = service.stopService()
        service.startService()
        self.assertEqual(len(self.reactor.processes), 1)
        self.assertTrue(self.logged("still stopping"))
        self.reactor.processes[0].end(exitCode=0)
        self.successResultOf(d)


class _FakeResolver:
    """
    Answers every name with fixed addresses.
    """

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.asked: list[str] = []

    def resolveHostName(
        self, receiver: Any, name: str, portNumber: int = 0, **kw: Any
    ) -> None:
        from twisted.internet.address import IPv4Address, IPv6Address

        self.asked.append(name)
        receiver.resolutionBegan(None)
        for address in self.addresses:
            kind = IPv6Address if ":" in address else IPv4Address
            receiver.addressResolved(kind("TCP", address, portNumber))
        receiver.resolutionComplete()


class _ResolvingReactor:
    """
    The trial reactor with a fake name resolver.
    """

    def __init__(self, resolver: _FakeResolver) -> None:
        self.nameResolver = resolver

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


class BrokerRealPermissionsTests(_BrokerPairTestCase):
    """
    The broker with the real L{tcpext.permissions.PermissionSet}: the same
    grammar, matching and rebinding rule as in-process code.
    """

    def connect(self, grants: list[str], addresses: list[str]) -> None:
        from tcpext.permissions import PermissionSet, parsePermission

        self.resolver = _FakeResolver(addresses)
        self.connectBroker(
            BrokerProtocol(
                _ResolvingReactor(self.resolver),
                PermissionSet([parsePermission(g) for g in grants]),
                Logger(),
            )
        )

    async def test_rebindingRefused(self) -> None:
        """
        A name grant does not reach a loopback address the name resolves to
        (DNS rebinding): the connect is denied, naming the address; a
        L{Resolve} of the name is denied the same way (the host never tells
        the child an address it refused), and the address stays denied
        afterwards.
        """
        port = self.echoServer()
        self.connect([f"tcp-connect:intranet.example:{port}"], ["127.0.0.1"])
        d = self.child.callRemote(
            Connect, host="intranet.example", port=port, timeout=5.0
        )
        error = await self.assertFailure(d, Denied)
        self.assertIn("127.0.0.1", str(error))
        d = self.child.callRemote(Resolve, name="intranet.example", port=port)
        error = await self.assertFailure(d, Denied)
        self.assertIn("resolved only to refused addresses", str(error))
        d = self.child.callRemote(Connect, host="127.0.0.1", port=port, timeout=5.0)
        await self.assertFailure(d, Denied)

    async def test_resolveAnswersDialableOnly(self) -> None:
        """
        L{Resolve} answers the addresses that may be dialed for the name,
        never those the rebinding rule refused; an IPv4-mapped address is
        answered as its IPv4 address.
        """
        self.connect(
            ["tcp-connect:mixed.example:443"],
            ["127.0.0.1", "93.184.216.34", "10.0.0.1", "::ffff:93.184.216.35"],
        )
        answer = await self.child.callRemote(Resolve, name="mixed.example", port=443)
        self.assertEqual(answer["addresses"], ["93.184.216.34", "93.184.216.35"])
        answer = await self.child.callRemote(Resolve, name="::ffff:127.0.0.1", port=443)
        self.assertEqual(answer["addresses"], ["127.0.0.1"])

    async def test_mappedAndZone(self) -> None:
        """
        An IPv4-mapped IPv6 address is its IPv4 address to the host, as to
        the child; a zone is kept to dial with (an unknown one fails the
        dial, it is never dropped).
        """
        port = self.echoServer()
        self.connect([f"tcp-connect:127.0.0.1:{port}", f"tcp-connect:[::1]:{port}"], [])
        answer = await self.child.callRemote(
            Connect, host="::ffff:127.0.0.1", port=port, timeout=5.0
        )
        os.close(answer["descriptor"])
        d = self.child.callRemote(
            Connect, host="::1%nosuchzone0", port=port, timeout=5.0
        )
        error = await self.assertFailure(d, DialFailed)
        self.assertIn("nosuchzone0", str(error))

    async def test_cidrGrantAllowsResolved(self) -> None:
        """
        With a network grant covering the address too, the name's loopback
        address may be dialed, directly or after L{Resolve}.
        """
        port = self.echoServer()
        self.connect(
            [f"tcp-connect:intranet.example:{port}", f"tcp-connect:127.0.0.0/8:{port}"],
            ["127.0.0.1"],
        )
        answer = await self.child.callRemote(
            Connect, host="intranet.example", port=port, timeout=5.0
        )
        os.close(answer["descriptor"])
        self.assertEqual(self.resolver.asked, ["intranet.example"])

    async def test_localhostWithoutDNS(self) -> None:
        """
        C{localhost} maps to loopback without asking the resolver.
        """
        port = self.echoServer()
        self.connect([f"tcp-connect:localhost:{port}"], ["203.0.113.9"])
        answer = await self.child.callRemote(
            Connect, host="localhost", port=port, timeout=5.0
        )
        os.close(answer["descriptor"])
        self.assertEqual(self.resolver.asked, [])

    async def test_loopbackByLocalhostGrant(self) -> None:
        """
        A connect to a loopback address for the name C{localhost} (the
        child's browser maps C{localhost} itself and says so) is allowed by
        a C{localhost} grant for that port, checked by the host; another
        port is still denied, and so is the address without the name (an
        address never matches a name grant).
        """
        port = self.echoServer()
        self.connect([f"tcp-connect:localhost:{port}"], ["203.0.113.9"])
        answer = await self.child.callRemote(
            Connect, host="127.0.0.1", port=port, timeout=5.0, name="localhost"
        )
        os.close(answer["descriptor"])
        d = self.child.callRemote(
            Connect, host="127.0.0.1", port=port + 1, timeout=5.0, name="localhost"
        )
        await self.assertFailure(d, Denied)
        d = self.child.callRemote(Connect, host="127.0.0.1", port=port, timeout=5.0)
        await self.assertFailure(d, Denied)
        self.assertEqual(self.resolver.asked, [])

    async def test_brokeredLocalhostName(self) -> None:
        """
        The child's brokered reactor passes the name an address is dialed
        for (L{tcpext.reactor.AddressForName}) to the host, whose
        C{*.localhost} grant then allows the loopback connection; the same
        address as a plain string is denied.
        """
        from tcpext.reactor import AddressForName

        port = self.echoServer()
        self.connect([f"tcp-connect:*.localhost:{port}"], ["203.0.113.9"])
        brokered = BrokeredReactor(reactor, self.child, None)
        protocol = _Collect()
        lost: defer.Deferred[None] = defer.Deferred()
        failed: defer.Deferred[Any] = defer.Deferred()

        class F(ClientFactory):
            def buildProtocol(self, addr: Any) -> Protocol:
                return protocol

            def clientConnectionLost(self, connector: Any, reason: Any) -> None:
                lost.callback(None)

            def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
                failed.callback([reason])

        connector = brokered.connectTCP(
            AddressForName("127.0.0.1", "App.localhost"), port, F()
        )
        await protocol.made
        protocol.transport.write(b"hi!")  # type: ignore[union-attr]
        self.assertEqual(await protocol.done, b"hi!")
        [held] = self.broker._held.values()
        self.assertEqual(held.name, "app.localhost")
        connector.disconnect()
        await lost

        brokered.connectTCP("127.0.0.1", port, F())
        (reason,) = await failed
        self.assertTrue(reason.check(PermissionDenied), reason)

    async def test_nonCanonicalRefused(self) -> None:
        """
        A numeric host the OS would read as IPv4 but is not canonical is a
        bad request, never looked up.
        """
        self.connect(["tcp-connect:*:80"], ["127.0.0.1"])
        d = self.child.callRemote(Connect, host="2130706433", port=80, timeout=5.0)
        await self.assertFailure(d, BadRequest)
        self.assertEqual(self.resolver.asked, [])

    async def test_listenRealGrant(self) -> None:
        """
        C{tcp-listen:PORT} allows that port only; port 0 needs C{*}.
        """
        granted, other = freePorts(2)
        self.connect([f"tcp-listen:{granted}"], [])
        d = defer.ensureDeferred(self.listen(port=0, interface="127.0.0.1", backlog=5))
        await self.assertFailure(d, Denied)
        d = defer.ensureDeferred(
            self.listen(port=other, interface="127.0.0.1", backlog=5)
        )
        await self.assertFailure(d, Denied)


class BrokerNameTests(SynchronousTestCase):
    """
    L{Connect} to an address with the C{name} the child dials it for, with
    the real L{tcpext.permissions.PermissionSet}: the host checks the name
    against its own grants and the address against what the name maps to
    (C{localhost} names: loopback, as in-process; other names: the host's
    own resolution).  No network: the dial is recorded, not made.
    """

    def setUp(self) -> None:
        import tcpext._broker

        self.dialed: list[tuple[str, int]] = []
        self.sockets: list[socket.socket] = []

        def dial(
            reactor: Any, address: str, port: int, timeout: float = 30.0
        ) -> defer.Deferred[socket.socket]:
            self.dialed.append((address, port))
            mine, theirs = socket.socketpair()
            self.sockets += [mine, theirs]
            return defer.succeed(mine)

        self.patch(tcpext._broker, "dialTCP", dial)
        self.addCleanup(lambda: [s.close() for s in self.sockets])
        self.events: list[dict[str, Any]] = []

    def broker(
        self, grants: list[str], addresses: tuple[str, ...] = ()
    ) -> BrokerProtocol:
        """
        A broker holding C{grants}, whose resolver answers C{addresses}.
        """
        from tcpext.permissions import PermissionSet, parsePermission

        self.resolver = _FakeResolver(list(addresses))
        return BrokerProtocol(
            _ResolvingReactor(self.resolver),
            PermissionSet([parsePermission(g) for g in grants]),
            Logger(observer=self.events.append),
        )

    def allowed(
        self, broker: BrokerProtocol, host: str, port: int, name: str | None
    ) -> str | None:
        """
        Connect through C{broker}: it must succeed, dialing C{host}:C{port}.

        @return: The name the host recorded for the connection.
        """
        answer = self.successResultOf(broker.connect(host, port, 5.0, name))
        self.assertEqual(self.dialed[-1], (host, port))
        name = broker._held[answer["socketId"]].name
        return name

    def denied(
        self,
        broker: BrokerProtocol,
        host: str,
        port: int,
        name: str | None,
        error: type[Exception] = Denied,
    ) -> str:
        """
        Connect through C{broker}: it must fail with C{error} and dial
        nothing.

        @return: The error's message.
        """
        before = list(self.dialed)
        failure = self.failureResultOf(broker.connect(host, port, 5.0, name), error)
        self.assertEqual(self.dialed, before)
        return str(failure.value)

    def test_localhostNameGranted(self) -> None:
        """
        A grant for C{localhost} or a name under it, on that port, allows
        each loopback address the name maps to when the child says it dials
        the address for that name; no resolver is asked.
        """
        broker = self.broker(
            [
                "tcp-connect:localhost:8080",
                "tcp-connect:foo.localhost:*",
                "tcp-connect:*.apps.localhost:9000-9001",
            ]
        )
        self.assertEqual(
            self.allowed(broker, "127.0.0.1", 8080, "localhost"), "localhost"
        )
        self.assertEqual(
            self.allowed(broker, "127.0.0.1", 1234, "foo.localhost"), "foo.localhost"
        )
        self.assertEqual(
            self.allowed(broker, "::1", 1234, "Foo.Localhost."), "foo.localhost"
        )
        self.assertEqual(
            self.allowed(broker, "127.0.0.1", 9001, "a.apps.localhost"),
            "a.apps.localhost",
        )
        self.assertEqual(self.resolver.asked, [])

    def test_localhostNameNotGranted(self) -> None:
        """
        A name no grant covers on that port is refused, whatever other
        C{localhost} names are granted: C{localhost} does not cover
        C{foo.localhost}, nor C{foo.localhost} C{localhost} or
        C{bar.localhost}.
        """
        broker = self.broker(
            ["tcp-connect:localhost:8080", "tcp-connect:foo.localhost:8080"]
        )
        message = self.denied(broker, "127.0.0.1", 8080, "bar.localhost")
        self.assertIn("permission denied", message)
        self.assertIn("bar.localhost", message)
        self.denied(broker, "127.0.0.1", 8081, "localhost")
        self.denied(broker, "127.0.0.1", 8081, "foo.localhost")
        other = self.broker(["tcp-connect:foo.localhost:8080"])
        self.denied(other, "127.0.0.1", 8080, "localhost")
        self.assertTrue(
            any("broker refused" in str(e.get("log_format")) for e in self.events)
        )

    def test_localhostNameOtherAddress(self) -> None:
        """
        A C{localhost} name claimed for an address it does not map to is
        refused, even with the name granted: a public address, a private
        one, and loopback addresses other than the two it means.
        """
        broker = self.broker(
            ["tcp-connect:foo.localhost:*", "tcp-connect:*.localhost:*"]
        )
        for address in ["203.0.113.9", "10.0.0.1", "127.0.0.2", "::ffff:10.0.0.1"]:
            message = self.denied(broker, address, 80, "foo.localhost")
            self.assertIn("localhost names only reach loopback", message)

    def test_addressWithoutName(self) -> None:
        """
        Without a name, a loopback address needs an IP grant: a
        C{localhost} grant does not cover it (an address never matches a
        name grant, as in-process).
        """
        broker = self.broker(["tcp-connect:localhost:*", "tcp-connect:*.localhost:*"])
        self.denied(broker, "127.0.0.1", 8080, None)
        allowing = self.broker(["tcp-connect:127.0.0.1:8080"])
        self.assertIsNone(self.allowed(allowing, "127.0.0.1", 8080, None))

    def test_otherNameNeedsHostResolution(self) -> None:
        """
        A name that is not a C{localhost} name is only taken for an address
        the host itself resolved it to (for that port): a child claiming
        C{example.com} for an address gets nothing until the host's own
        L{Resolve} gave that address.
        """
        broker = self.broker(["tcp-connect:example.com:443"], ("93.184.215.14",))
        self.denied(broker, "93.184.215.14", 443, "example.com")
        self.denied(broker, "8.8.8.8", 443, "example.com")
        self.successResultOf(broker.resolve("example.com", 443))
        self.assertEqual(
            self.allowed(broker, "93.184.215.14", 443, "example.com"), "example.com"
        )
        self.denied(broker, "8.8.8.8", 443, "example.com")
        self.denied(broker, "93.184.215.14", 444, "example.com")

    def test_badName(self) -> None:
        """
        A name that is not a valid host name, an IP address given as the
        name, or a name with a name (rather than an address) as the host is
        a bad request.
        """
        broker = self.broker(["tcp-connect:*:*"])
        self.denied(broker, "127.0.0.1", 80, "bad name!", BadRequest)
        self.denied(broker, "127.0.0.1", 80, "127.0.0.1", BadRequest)
        self.denied(broker, "localhost", 80, "localhost", BadRequest)

    def test_revokedNameEnforced(self) -> None:
        """
        A connection allowed by a C{localhost} name grant is shut down by
        the host when that grant is withdrawn; one allowed by another,
        remaining name grant is kept.
        """
        from tcpext.permissions import parsePermission

        broker = self.broker(
            ["tcp-connect:foo.localhost:80", "tcp-connect:bar.localhost:80"]
        )
        self.allowed(broker, "127.0.0.1", 80, "foo.localhost")
        self.allowed(broker, "127.0.0.1", 80, "bar.localhost")
        broker.grants.discard(parsePermission("tcp-connect:foo.localhost:80"))
        [closed] = broker.enforce()
        [(kept, held)] = broker._held.items()
        self.assertNotEqual(kept, closed)
        self.assertEqual(held.name, "bar.localhost")


class NameCarriedTests(SynchronousTestCase):
    """
    In the child, the address dialed for a name reaches the wrapped reactor
    (there, L{BrokeredReactor}, which provides
    L{tcpext.reactor.IDialsForNames}) as a L{tcpext.reactor.AddressForName}
    carrying the name, from C{browser.TCPSocket.connect} and from
    C{browser.reactor}; an address dialed as an address carries none.
    """

    def test_brokeredReactorReadsNames(self) -> None:
        """
        L{BrokeredReactor} declares that it reads the names.
        """
        from tcpext.reactor import IDialsForNames

        brokered = BrokeredReactor(MemoryReactorClock(), None, None)  # type: ignore[arg-type]
        self.assertTrue(IDialsForNames.providedBy(brokered))

    def browser(self, *grants: str) -> Any:
        from zope.interface import alsoProvides

        from tcpext.browser import makeBrowser
        from tcpext.reactor import IDialsForNames

        self.reactor = MemoryReactorClock()
        alsoProvides(self.reactor, IDialsForNames)
        return makeBrowser(
            extensionId="x",
            manifest={
                "manifest_version": 2,
                "name": "x",
                "version": "1",
                "permissions": list(grants),
                "background": {"scripts": ["background.py"]},
            },
            reactor=self.reactor,
            log=Logger(observer=lambda e: None),
        )

    def dialed(self) -> list[tuple[str, int, str | None]]:
        """
        What reached the memory reactor: address, port, and carried name.
        """
        return [
            (str(host), port, getattr(host, "name", None))
            for host, port, *_ in self.reactor.tcpClients
        ]

    def test_browserTCPSocket(self) -> None:
        """
        C{browser.TCPSocket.connect} to a C{localhost} name dials loopback
        with the name attached.
        """
        browser = self.browser("tcp-connect:*.localhost:8080")
        self.successResultOf(
            browser.TCPSocket.connect({"host": "App.localhost", "port": 8080})
        )
        self.reactor.advance(1)
        dialed = self.dialed()
        self.assertTrue(dialed)
        for address, port, name in dialed:
            self.assertIn(address, ("127.0.0.1", "::1"))
            self.assertEqual((port, name), (8080, "app.localhost"))

    def test_reactorConnectTCP(self) -> None:
        """
        C{browser.reactor.connectTCP} to a C{localhost} name, and to the
        address its checked resolver gave for that name, both attach it.
        """
        from twisted.internet.address import IPv4Address

        browser = self.browser("tcp-connect:foo.localhost:8080")
        browser.reactor.connectTCP("foo.localhost", 8080, ClientFactory())
        self.assertEqual(self.dialed(), [("127.0.0.1", 8080, "foo.localhost")])
        found: list[Any] = []

        class Receiver:
            def resolutionBegan(self, resolution: Any) -> None:
                pass

            def addressResolved(self, address: Any) -> None:
                found.append(address)

            def resolutionComplete(self) -> None:
                pass

        browser.reactor.nameResolver.resolveHostName(
            Receiver(), "foo.localhost", portNumber=8080
        )
        [address] = [a for a in found if isinstance(a, IPv4Address)]
        browser.reactor.connectTCP(address.host, 8080, ClientFactory())
        self.assertEqual(self.dialed()[1], ("127.0.0.1", 8080, "foo.localhost"))

    def test_addressCarriesNoName(self) -> None:
        """
        An address dialed because an IP grant allows it carries no name.
        """
        browser = self.browser("tcp-connect:127.0.0.1:8080")
        browser.reactor.connectTCP("127.0.0.1", 8080, ClientFactory())
        self.successResultOf(
            browser.TCPSocket.connect({"host": "127.0.0.1", "port": 8080})
        )
        self.assertEqual(
            self.dialed(),
            [("127.0.0.1", 8080, None), ("127.0.0.1", 8080, None)],
        )


class ChildOutputTests(SynchronousTestCase):
    """
    L{ChildOutput}: the child's log records become the host's events with
    their namespace, level and text; other lines are plain text; lines are
    bounded; past the rate, drops are counted and reported within a second
    and at the end, and the last lines still arrive.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.events: list[dict[str, Any]] = []
        log = Logger(namespace="tcpext.extension.x", observer=self.events.append)
        self.output = ChildOutput(self.reactor, log, "x", rate=10)

    def seen(self) -> list[tuple[str, str, str]]:
        """
        The events so far: namespace, level name and text.
        """
        return [
            (e["log_namespace"], e["log_level"].name, formatEvent(e))
            for e in self.events
        ]

    def test_records(self) -> None:
        """
        A record keeps its namespace (the extension's, or below it), level
        and text, braces and traceback lines included; the events say which
        extension they came from.
        """
        self.output.received(
            2,
            encodeLogRecord("tcpext.extension.x", "critical", "failed {x}\n  tb")
            + encodeLogRecord("tcpext.extension.x.mine", "debug", "detail"),
        )
        self.assertEqual(
            self.seen(),
            [
                ("tcpext.extension.x", "critical", "failed {x}\n  tb"),
                ("tcpext.extension.x.mine", "debug", "detail"),
            ],
        )
        self.assertEqual({e["extensionId"] for e in self.events}, {"x"})

    def test_otherNamespaces(self) -> None:
        """
        A record in any other namespace (the service's, another
        extension's, a library's) is logged below the extension's.
        """
        self.output.received(
            2,
            encodeLogRecord("tcpext.service", "info", "all is well")
            + encodeLogRecord("tcpext.extension.xy", "info", "not x")
            + encodeLogRecord("twisted.web.server", "warn", "slow"),
        )
        self.assertEqual(
            [n for n, _, _ in self.seen()],
            [
                "tcpext.extension.x.tcpext.service",
                "tcpext.extension.x.tcpext.extension.xy",
                "tcpext.extension.x.twisted.web.server",
            ],
        )

    def test_plainText(self) -> None:
        """
        Other lines are plain text: standard output at C{info}, standard
        error at C{error}; a malformed record is plain text too.  A partial
        line waits for its end (or for the process's end).
        """
        self.output.received(1, b"printed {1}\npart")
        self.output.received(2, b"raw\n\x1e{not json\n\x1e[1]\n")
        self.output.received(
            2, b'\x1e{"n": "tcpext.extension.x", "l": "loud", "t": "x"}\n'
        )
        self.output.received(1, b"ial")
        self.assertEqual(
            self.seen(),
            [
                ("tcpext.extension.x.stdout", "info", "printed {1}"),
                ("tcpext.extension.x.stderr", "error", "raw"),
                ("tcpext.extension.x.stderr", "error", "\x1e{not json"),
                ("tcpext.extension.x.stderr", "error", "\x1e[1]"),
                (
                    "tcpext.extension.x.stderr",
                    "error",
                    '\x1e{"n": "tcpext.extension.x", "l": "loud", "t": "x"}',
                ),
            ],
        )
        self.output.close()
        self.assertEqual(
            self.seen()[-1], ("tcpext.extension.x.stdout", "info", "partial")
        )

    def test_longLine(self) -> None:
        """
        A line longer than C{maxLine} is cut, and the rest of it skipped,
        however it arrives.
        """
        self.output.maxLine = 100
        self.output.received(1, b"x" * 150)
        self.output.received(1, b"y" * 300)
        self.output.received(1, b"z\nnext\n")
        self.assertEqual([t for _, _, t in self.seen()], ["x" * 100, "next"])
        self.assertLessEqual(len(self.output._buffers[1]), 100)

    def test_dropsReportedWithinASecond(self) -> None:
        """
        Past C{rate} lines in a second, lines are counted, and the count is
        logged when that second is over, even if nothing else comes.
        """
        self.output.received(1, b"".join(b"line %d\n" % i for i in range(100)))
        self.assertEqual(len(self.events), 10)
        self.reactor.advance(0.99)
        self.assertEqual(len(self.events), 10)
        self.reactor.advance(0.01)
        self.assertEqual(
            self.seen()[-1],
            (
                "tcpext.extension.x",
                "warn",
                "90 lines of output from x dropped (more than 10 a second)",
            ),
        )
        self.output.received(1, b"later\n")
        self.assertEqual(self.seen()[-1][2], "later")

    def test_endOfProcess(self) -> None:
        """
        When the process ends, the count of the lines dropped is logged at
        once, then its last lines (up to C{keepLast} of the dropped ones)
        arrive, in order.
        """
        log = Logger(namespace="tcpext.extension.x", observer=self.events.append)
        self.output = ChildOutput(self.reactor, log, "x", rate=10, keepLast=3)
        lines = b"".join(b"line %d\n" % i for i in range(50))
        self.output.received(1, lines + b"last words\n")
        self.output.received(2, encodeLogRecord("tcpext.extension.x", "info", "bye"))
        self.output.close()
        texts = [t for _, _, t in self.seen()]
        self.assertEqual(texts[:10], [f"line {i}" for i in range(10)])
        self.assertEqual(
            texts[10:],
            [
                "39 lines of output from x dropped (more than 10 a second)",
                "line 49",
                "last words",
                "bye",
            ],
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_invalidRate(self) -> None:
        """
        A rate below 1 is refused.
        """
        self.assertRaises(ValueError, ChildOutput, self.reactor, Logger(), "x", 0)


class WireTests(SynchronousTestCase):
    """
    L{tcpext._wire}: one error table, the synchronous channel's framing, and
    an import graph without a cycle between the host and the child.
    """

    def test_errorCodes(self) -> None:
        """
        Every error of L{ERRORS} survives the synchronous channel's code; an
        unknown code is a failure, never a success.
        """
        for kind, code in ERRORS.items():
            error = kind("why")
            self.assertEqual(errorCode(error), code.decode())
            back = errorFromCode(errorCode(error), "why")
            self.assertIs(type(back), kind)
            self.assertEqual(str(back), "why")
        self.assertIsInstance(errorFromCode("NONSENSE", "x"), DialFailed)
        self.assertIsInstance(errorFromCode(None, "x"), DialFailed)
        self.assertRaises(ValueError, errorCode, RuntimeError("not ours"))

    def test_answerTooLong(self) -> None:
        """
        The child's L{SyncChannel} refuses an answer frame longer than
        L{SYNC_MAX_LENGTH} without reading it, and closes any descriptor
        that came with it.
        """
        mine, theirs = socket.socketpair()
        self.addCleanup(mine.close)
        self.addCleanup(theirs.close)
        channel = SyncChannel(theirs)
        channel.timeout = 10.0
        passed = os.open(os.devnull, os.O_RDONLY)
        self.addCleanup(os.close, passed)
        header = (SYNC_MAX_LENGTH + 1).to_bytes(4, "big")
        socket.send_fds(mine, [header], [passed])
        before = set(os.listdir("/proc/self/fd"))
        error = self.assertRaises(ConnectionError, channel.call, {"op": "listen"})
        # The descriptor received with the frame was closed.
        self.assertEqual(set(os.listdir("/proc/self/fd")), before)
        self.assertIn(f"{SYNC_MAX_LENGTH + 1}-byte answer", str(error))
        # The request went out, framed.
        request = mine.recv(65536)
        self.assertEqual(json.loads(request[4:]), {"op": "listen"})
        self.assertEqual(int.from_bytes(request[:4], "big"), len(request) - 4)

    def test_noImportCycle(self) -> None:
        """
        The child's modules import no host module: importing
        L{tcpext.sandbox} loads neither L{tcpext._broker} nor
        L{tcpext._supervisor}, and L{tcpext._wire} loads neither side.
        """
        code = (
            "import sys\n"
            "import tcpext._wire\n"
            "print(sorted(m for m in sys.modules if m in "
            "('tcpext._broker', 'tcpext._supervisor', 'tcpext.sandbox')))\n"
            "import tcpext.sandbox\n"
            "print(sorted(m for m in sys.modules if m in "
            "('tcpext._broker', 'tcpext._supervisor')))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split("\n")
        self.assertEqual(out[:2], ["[]", "[]"])
