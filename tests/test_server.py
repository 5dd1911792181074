"""
Tests for L{tcpext._server.TCPServerSocket}: the accept queue, the
C{connections} iterator and closing, in memory and over real loopback.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as globalReactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpext._server import ServerSocketFactory, TCPServerSocket
from tcpext._socket import TCPClientSocket
from tcpext.endpoints import ClientSocketFactory, connectSocket, listenSocket

LOCAL = IPv4Address("TCP", "127.0.0.1", 7000)


class FakePort:
    """
    A listening port double that records whether it accepts.
    """

    def __init__(self) -> None:
        """
        A port that accepts.
        """
        self.reading = True
        self.listening = True

    def stopReading(self) -> None:
        """
        Stop accepting.
        """
        self.reading = False

    def startReading(self) -> None:
        """
        Accept again.
        """
        self.reading = True

    def stopListening(self) -> Deferred[None]:
        """
        Stop listening.
        """
        self.listening = False
        return succeed(None)

    def getHost(self) -> IPv4Address:
        """
        Where it listens.
        """
        return LOCAL


def listening(
    backLog: int = 128,
) -> tuple[TCPServerSocket, ServerSocketFactory, FakePort]:
    """
    A server listening on a L{FakePort}.
    """
    server = TCPServerSocket(backLog)
    port = FakePort()
    server._listening(port)  # type: ignore[arg-type]
    return server, ServerSocketFactory(server), port


def accept(factory: ServerSocketFactory, peerPort: int = 40000) -> StringTransport:
    """
    Accept a connection from 192.0.2.9:C{peerPort} with an in-memory
    transport.
    """
    protocol = factory.buildProtocol(IPv4Address("TCP", "192.0.2.9", peerPort))
    assert protocol is not None
    transport = StringTransport(
        hostAddress=LOCAL, peerAddress=IPv4Address("TCP", "192.0.2.9", peerPort)
    )
    transport.protocol = protocol  # type: ignore[attr-defined]
    protocol.makeConnection(transport)
    return transport


async def assertSuspendHolds(
    case: TestCase, reader: TCPClientSocket, writer: TCPClientSocket, data: bytes
) -> None:
    """
    Suspend C{reader}, have C{writer} send C{data} to it, and check that none
    of it is read over a few turns of the real reactor; then resume C{reader}
    and check it reads all of C{data}.
    """
    reader.suspend()
    await writer.write(data)
    for _ in range(10):
        await deferLater(globalReactor, 0.005, lambda: None)
    case.assertEqual(reader._bufSize, 0)
    reader.resume()
    case.assertEqual(await reader.readExactly(len(data)), data)


class ServerTests(SynchronousTestCase):
    """
    The server socket in memory.
    """

    def test_addresses(self) -> None:
        """
        C{localAddress} and C{localPort} come from the port.
        """
        server, _, _ = listening()
        self.assertEqual((server.localAddress, server.localPort), ("127.0.0.1", 7000))
        self.assertIsNone(TCPServerSocket().localPort)
        self.assertIsNone(TCPServerSocket().localAddress)

    def test_acceptedSocket(self) -> None:
        """
        An accepted socket is open; its C{host}/C{port} are the peer's.
        """
        server, factory, _ = listening()
        accept(factory, 40001)
        sock = self.successResultOf(server.accept())
        assert sock is not None
        self.assertEqual(sock.readyState, "open")
        self.assertEqual((sock.host, sock.port), ("192.0.2.9", 40001))
        self.assertEqual((sock.remoteAddress, sock.remotePort), ("192.0.2.9", 40001))

    def test_queuedWithoutPendingNext(self) -> None:
        """
        Connections accepted while nobody iterates wait in the queue (the
        reference closed them) and keep the bytes they receive.
        """
        server, factory, _ = listening()
        transports = [accept(factory, 40000 + i) for i in range(3)]
        first = self.successResultOf(server.accept())
        assert first is not None
        self.assertEqual(first.port, 40000)
        self.assertFalse(transports[0].disconnecting)
        ports = []
        for _ in range(2):
            sock = self.successResultOf(server.accept())
            assert sock is not None
            ports.append(sock.port)
        self.assertEqual(ports, [40001, 40002])

    def test_pendingNext(self) -> None:
        """
        A pending C{accept()} gets the next connection.
        """
        server, factory, _ = listening()
        d = server.accept()
        self.assertNoResult(d)
        accept(factory)
        self.assertIsInstance(self.successResultOf(d), TCPClientSocket)

    def test_asyncIteration(self) -> None:
        """
        C{async for} over C{connections} gives the connections and ends when
        the server closes; breaking out does not close the server.
        """
        server, factory, port = listening()
        got: list[TCPClientSocket] = []

        async def takeOne() -> None:
            async for sock in server.connections:
                got.append(sock)
                break

        d = ensureDeferred(takeOne())
        accept(factory)
        self.successResultOf(d)
        self.assertEqual(len(got), 1)
        self.assertTrue(port.listening)
        self.assertNoResult(server.closed)

        async def takeAll() -> None:
            async for sock in server.connections:
                got.append(sock)

        d = ensureDeferred(takeAll())
        accept(factory)
        self.assertNoResult(d)
        server.close()
        self.successResultOf(d)
        self.assertEqual(len(got), 2)

    def test_queueFullStopsAccepting(self) -> None:
        """
        When the queue holds C{backLog} connections the port stops accepting;
        it resumes once the consumer takes one.
        """
        server, factory, port = listening(backLog=2)
        accept(factory)
        self.assertTrue(port.reading)
        accept(factory)
        self.assertFalse(port.reading)
        # Twisted accepts in batches: one more may come, and is kept.
        extra = accept(factory)
        self.assertFalse(extra.disconnecting)
        self.successResultOf(server.accept())
        self.assertFalse(port.reading)
        self.successResultOf(server.accept())
        self.assertTrue(port.reading)
        self.successResultOf(server.accept())

    def test_close(self) -> None:
        """
        C{close()} stops the port, ends pending iterations and closes the
        connections nobody took; later accepts give L{None}.
        """
        server, factory, port = listening()
        queued = accept(factory)
        closed = server.closed
        done = server.close()
        self.assertFalse(port.listening)
        self.assertTrue(queued.disconnecting)
        self.successResultOf(done)
        self.successResultOf(closed)
        self.successResultOf(server.closed)
        self.assertIsNone(self.successResultOf(server.accept()))
        self.assertIsNone(factory.buildProtocol(LOCAL))
        self.successResultOf(server.close())

    def test_closeEndsPendingAccept(self) -> None:
        """
        A pending C{accept()} gives L{None} once the server is closed.
        """
        server, _, _ = listening()
        d = server.accept()
        server.close()
        self.assertIsNone(self.successResultOf(d))

    def test_closeBeforeListening(self) -> None:
        """
        A server closed before its port is known stops the port once it is.
        """
        server = TCPServerSocket()
        closed = server.close()
        self.assertNoResult(closed)
        port = FakePort()
        server._listening(port)  # type: ignore[arg-type]
        self.assertFalse(port.listening)
        self.successResultOf(closed)

    def test_backLogValidated(self) -> None:
        """
        The backlog must be a positive int.
        """
        self.assertRaises(ValueError, TCPServerSocket, 0)
        self.assertRaises(TypeError, TCPServerSocket, "5")

    def test_acceptedCloseSendsFIN(self) -> None:
        """
        C{close()} on an accepted socket closes its transport (the reference
        sent no FIN); C{suspend()}/C{resume()} pause and resume it (the
        reference ignored them).
        """
        server, factory, _ = listening()
        transport = accept(factory)
        sock = self.successResultOf(server.accept())
        assert sock is not None
        sock.suspend()
        self.assertEqual(transport.producerState, "paused")
        sock.resume()
        self.assertEqual(transport.producerState, "producing")
        d = sock.close()
        self.assertTrue(transport.disconnecting)
        transport.protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)

    def test_echoInMemory(self) -> None:
        """
        A client and an accepted socket talk over an in-memory connection.
        """
        server, factory, _ = listening()
        clientFactory = ClientSocketFactory("127.0.0.1", 7000)
        client, serverProtocol, pump = connectedServerAndClient(
            lambda: factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000)),
            lambda: clientFactory.buildProtocol(LOCAL),
        )
        accepted = self.successResultOf(server.accept())
        assert accepted is not None
        sock = clientFactory.socket
        sock.write(b"ping")
        pump.flush()
        self.assertEqual(self.successResultOf(accepted.read()), b"ping")
        accepted.write(b"pong")
        pump.flush()
        self.assertEqual(self.successResultOf(sock.read()), b"pong")
        sock.close()
        pump.flush()
        self.assertEqual(self.successResultOf(accepted.read()), b"")
        self.successResultOf(sock.closed)


class LoopbackServerTests(TestCase):
    """
    The server socket over real loopback connections.
    """

    timeout = 30

    async def listen(self, backLog: int = 128) -> TCPServerSocket:
        """
        Listen on 127.0.0.1, port chosen automatically; closed at cleanup.
        """
        server = await listenSocket(
            serverFromString(globalReactor, "tcp:0:interface=127.0.0.1"), backLog
        )
        self.addCleanup(server.close)
        return server

    async def dial(self, server: TCPServerSocket) -> TCPClientSocket:
        """
        Connect to C{server}; the client is closed at cleanup.
        """
        assert server.localPort is not None
        sock = await connectSocket(
            TCP4ClientEndpoint(globalReactor, "127.0.0.1", server.localPort)
        )
        self.addCleanup(sock.closeImmediately)
        return sock

    async def test_listenAutomaticPort(self) -> None:
        """
        Listening on port 0 reports the real port.
        """
        server = await self.listen()
        self.assertEqual(server.localAddress, "127.0.0.1")
        self.assertGreater(server.localPort or 0, 0)

    async def test_acceptedPeerAddress(self) -> None:
        """
        An accepted socket's C{host}/C{port} are the client's address.
        """
        server = await self.listen()
        client = await self.dial(server)
        accepted = await server.accept()
        assert accepted is not None
        self.addCleanup(accepted.closeImmediately)
        self.assertEqual(
            (accepted.host, accepted.port), ("127.0.0.1", client.localPort)
        )
        self.assertEqual(accepted.localPort, server.localPort)

    async def test_acceptQueue(self) -> None:
        """
        With a backlog of 2, connections beyond it wait in the kernel until
        the consumer takes some; none is accepted and dropped.
        """
        server = await self.listen(backLog=2)
        clients = [await self.dial(server) for _ in range(5)]
        for index, client in enumerate(clients):
            await client.write(b"%d" % (index,))
        for _ in range(50):
            if len(server._queue) >= 2:
                break
            await deferLater(globalReactor, 0.01, lambda: None)
        self.assertTrue(server._paused)
        seen = set()
        for _ in range(5):
            accepted = await server.accept()
            assert accepted is not None
            self.addCleanup(accepted.closeImmediately)
            seen.add(await accepted.read())
        self.assertEqual(seen, {b"0", b"1", b"2", b"3", b"4"})
        self.assertFalse(server._paused)

    async def test_acceptedCloseSendsFIN(self) -> None:
        """
        C{close()} on an accepted socket sends a FIN: the client reads EOF.
        """
        server = await self.listen()
        client = await self.dial(server)
        accepted = await server.accept()
        assert accepted is not None
        await accepted.write(b"bye")
        await accepted.close()
        self.assertEqual(await client.read(), b"bye")
        self.assertEqual(await client.read(), b"")
        self.assertEqual(accepted.readyState, "closed")

    async def test_acceptedSuspendResume(self) -> None:
        """
        C{suspend()} on an accepted socket stops reading until C{resume()}.
        """
        server = await self.listen()
        client = await self.dial(server)
        accepted = await server.accept()
        assert accepted is not None
        self.addCleanup(accepted.closeImmediately)
        await assertSuspendHolds(self, accepted, client, b"held back")

    async def test_closeEndsIteration(self) -> None:
        """
        Closing the server ends an C{async for} over its connections and
        closes connections nobody took (their clients read EOF).
        """
        server = await self.listen()
        client = await self.dial(server)
        for _ in range(50):
            if server._queue:
                break
            await deferLater(globalReactor, 0.01, lambda: None)
        await server.close()
        self.assertEqual(await client.read(), b"")

        async def iterate() -> int:
            count = 0
            async for _ in server.connections:
                count += 1
            return count

        self.assertEqual(await iterate(), 0)

    async def test_breakKeepsServer(self) -> None:
        """
        Breaking out of C{async for} does not close the server.
        """
        server = await self.listen()
        await self.dial(server)
        async for accepted in server.connections:
            accepted.closeImmediately()
            break
        client = await self.dial(server)
        accepted2 = await server.accept()
        assert accepted2 is not None
        self.addCleanup(accepted2.closeImmediately)
        await client.write(b"again")
        self.assertEqual(await accepted2.read(), b"again")

    def test_listenFailure(self) -> Deferred[Any]:
        """
        Listening on a port in use fails with C{CannotListenError}.
        """
        from twisted.internet.error import CannotListenError

        async def go() -> None:
            server = await self.listen()
            d = listenSocket(
                serverFromString(
                    globalReactor, f"tcp:{server.localPort}:interface=127.0.0.1"
                )
            )
            with self.assertRaises(CannotListenError):
                await d

        return ensureDeferred(go())


class AcceptCancellationTests(SynchronousTestCase):
    """
    Cancelling an C{accept()} only stops waiting.
    """

    def test_cancelledAccept(self) -> None:
        """
        A connection that arrives after a cancelled accept goes to the next
        waiter, or to the queue.
        """
        from twisted.internet.defer import CancelledError

        server, factory, _ = listening()
        first, second = server.accept(), server.accept()
        first.cancel()
        self.failureResultOf(first, CancelledError)
        accept(factory)
        self.assertIsInstance(self.successResultOf(second), TCPClientSocket)
        third = server.accept()
        third.cancel()
        self.failureResultOf(third, CancelledError)
        accept(factory)
        self.assertIsInstance(self.successResultOf(server.accept()), TCPClientSocket)
        cancelledAtClose = server.accept()
        cancelledAtClose.cancel()
        server.close()
        self.failureResultOf(cancelledAtClose, CancelledError)
