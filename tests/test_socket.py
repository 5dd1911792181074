"""
Tests for L{tcpext._socket.TCPClientSocket}, in memory: the state machine,
read buffering, write backpressure and every error path.
"""

from __future__ import annotations

import gc
import os
import time
from io import BytesIO
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor as globalReactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import (
    IConsumer,
    IOpenSSLClientConnectionCreator,
    IPushProducer,
    ITCPTransport,
    ITLSTransport,
)
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tcpext._errors import IncompleteReadError, LimitOverrunError, SocketClosed
from tcpext._socket import DEFAULT_HIGH_WATER, ReadyState, TCPClientSocket
from tcpext.endpoints import (
    ClientSocketFactory,
    startSocket,
)
from tests._loopback import loopbackPair

PEER = IPv4Address("TCP", "192.0.2.7", 4321)
HOST = IPv4Address("TCP", "10.0.0.1", 55555)


@implementer(IOpenSSLClientConnectionCreator)
class FakeTLSOptions:
    """
    Client TLS options that the fake transports only remember.
    """

    def clientConnectionForTLS(self, tlsProtocol: object) -> None:
        """
        Never called: the fake transports do no TLS.
        """


@implementer(ITCPTransport, ITLSTransport)
class FakeTCPTransport(StringTransport):
    """
    A L{StringTransport} that also behaves like a TCP transport where tcpext
    cares: a write buffer that pauses the registered producer past
    C{bufferSize} (as Twisted's file descriptors do) and resumes it on
    L{drain}, half-close, TCP options and C{startTLS}.
    """

    def __init__(self, bufferSize: int | None = None) -> None:
        """
        @param bufferSize: Pause the producer once more than this many bytes
            are buffered (L{None}: never).
        """
        super().__init__(hostAddress=HOST, peerAddress=PEER)
        self.bufferSize = bufferSize
        self.producerPaused = False
        self.writeClosed = False
        self.options: dict[str, bool] = {}
        self.tlsStarted: list[Any] = []
        self.log: list[str] = []

    def write(self, data: bytes) -> None:
        """
        Buffer C{data}; pause the producer past the buffer size.
        """
        super().write(data)
        if (
            self.bufferSize is not None
            and self.producer is not None
            and not self.producerPaused
            and len(self.io.getvalue()) > self.bufferSize
        ):
            self.producerPaused = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """
        Take everything written and resume a paused producer.
        """
        data = self.value()
        self.clear()
        if self.producerPaused:
            self.producerPaused = False
            if self.producer is not None:
                self.producer.resumeProducing()
        return data

    def unregisterProducer(self) -> None:
        """
        Record the order of unregistering and closing.
        """
        self.log.append("unregisterProducer")
        super().unregisterProducer()

    def loseConnection(self) -> None:
        """
        Record the order of unregistering and closing.
        """
        self.log.append("loseConnection")
        super().loseConnection()

    def loseWriteConnection(self) -> None:
        """
        Record a half-close.
        """
        self.log.append("loseWriteConnection")
        self.writeClosed = True

    def setTcpNoDelay(self, enabled: bool) -> None:
        """
        Record the option.
        """
        self.options["noDelay"] = enabled

    def setTcpKeepAlive(self, enabled: bool) -> None:
        """
        Record the option.
        """
        self.options["keepAlive"] = enabled

    def getTcpNoDelay(self) -> bool:
        """
        The recorded option.
        """
        return self.options.get("noDelay", False)

    def getTcpKeepAlive(self) -> bool:
        """
        The recorded option.
        """
        return self.options.get("keepAlive", False)

    def startTLS(self, contextFactory: Any, normal: bool = True) -> None:
        """
        Record a STARTTLS.
        """
        self.tlsStarted.append(contextFactory)


def connecting(
    host: str = "example.com", port: int = 80, highWater: int = DEFAULT_HIGH_WATER
) -> tuple[TCPClientSocket, Any]:
    """
    A socket in C{"connecting"} state and its protocol.
    """
    factory = ClientSocketFactory(host, port, highWater)
    protocol = factory.buildProtocol(PEER)
    return factory.socket, protocol


def connected(
    bufferSize: int | None = None, highWater: int = DEFAULT_HIGH_WATER
) -> tuple[TCPClientSocket, Any, FakeTCPTransport]:
    """
    An open socket, its protocol and its in-memory transport.
    """
    sock, protocol = connecting(highWater=highWater)
    transport = FakeTCPTransport(bufferSize)
    protocol.makeConnection(transport)
    return sock, protocol, transport


class ClosingTransportTests(SynchronousTestCase):
    """
    A transport that resumes the write producer while it is closing: Twisted's
    file descriptors, asked to close while they had paused their producer,
    resume it instead of closing, and close only once it unregisters (this
    happens when TLS closes the connection on the peer's close-notify while
    a big write was pending).
    """

    def test_released(self) -> None:
        """
        Resumed with nothing left to send while the transport is closing, the
        socket unregisters its producer, so that the close can complete.
        """
        sock, protocol, transport = connected(bufferSize=10)
        sock.write(b"x" * 100)
        self.assertTrue(transport.producerPaused)
        transport.disconnecting = True
        transport.drain()
        self.assertIsNone(transport.producer)
        self.assertEqual(transport.log, ["unregisterProducer"])

    def test_releasedBelowTLS(self) -> None:
        """
        The same when the transport that is closing is the one under the
        socket's own (TCP under TLS).
        """
        sock, protocol, transport = connected(bufferSize=10)
        below = StringTransport()
        below.disconnecting = True
        transport.transport = below  # type: ignore[attr-defined]
        sock.write(b"x" * 100)
        transport.drain()
        self.assertIsNone(transport.producer)

    def test_keptWhileOpen(self) -> None:
        """
        While the transport is open, a drain leaves the producer registered.
        """
        sock, protocol, transport = connected(bufferSize=10)
        sock.write(b"x" * 100)
        transport.drain()
        self.assertIs(transport.producer, protocol)


class StateTests(SynchronousTestCase):
    """
    The socket's states and its C{opened}/C{closed} outcomes.
    """

    def test_initialState(self) -> None:
        """
        A new socket is C{"connecting"}, with no addresses yet.
        """
        sock, _ = connecting()
        self.assertEqual(sock.readyState, "connecting")
        self.assertIs(sock.readyState, ReadyState.CONNECTING)
        self.assertIsInstance(sock.readyState, str)
        self.assertEqual((sock.host, sock.port), ("example.com", 80))
        self.assertIsNone(sock.remoteAddress)
        self.assertIsNone(sock.remotePort)
        self.assertIsNone(sock.localAddress)
        self.assertIsNone(sock.localPort)
        self.assertFalse(sock.ssl)
        self.assertEqual(sock.bufferedAmount, 0)
        self.assertNoResult(sock.opened)
        self.assertNoResult(sock.closed)

    def test_readyStateText(self) -> None:
        """
        C{str()} of a state is its plain name.
        """
        self.assertEqual(str(ReadyState.CLOSING), "closing")
        self.assertEqual(
            [s.value for s in ReadyState], ["connecting", "open", "closing", "closed"]
        )

    def test_open(self) -> None:
        """
        Once connected the socket is C{"open"}, C{opened} fires and the
        addresses come from the transport.
        """
        sock, protocol = connecting()
        opened = sock.opened
        protocol.makeConnection(FakeTCPTransport())
        self.assertIsNone(self.successResultOf(opened))
        self.assertIsNone(self.successResultOf(sock.opened))
        self.assertEqual(sock.readyState, "open")
        self.assertEqual((sock.remoteAddress, sock.remotePort), ("192.0.2.7", 4321))
        self.assertEqual((sock.localAddress, sock.localPort), ("10.0.0.1", 55555))

    def test_outcomesObservableManyTimes(self) -> None:
        """
        Every access of C{opened} and C{closed} gives a new Deferred with the
        same outcome.
        """
        sock, protocol, _ = connected()
        first, second = sock.opened, sock.opened
        self.assertIsNot(first, second)
        self.successResultOf(first)
        self.successResultOf(second)
        c1, c2 = sock.closed, sock.closed
        self.assertIsNot(c1, c2)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(c1, ConnectionLost)
        self.failureResultOf(c2, ConnectionLost)
        self.failureResultOf(sock.closed, ConnectionLost)

    def test_openedFailsOnConnectError(self) -> None:
        """
        A failed connection attempt fails C{opened} and C{closed} with the
        error (the reference never rejected C{opened}).
        """
        reactor = MemoryReactorClock()
        sock = startSocket(TCP4ClientEndpoint(reactor, "192.0.2.1", 9))
        self.assertEqual((sock.host, sock.port), ("192.0.2.1", 9))
        opened = sock.opened
        factory = reactor.tcpClients[0][2]
        factory.clientConnectionFailed(
            reactor.connectors[0], Failure(ConnectionRefusedError())
        )
        self.failureResultOf(opened, ConnectionRefusedError)
        self.failureResultOf(sock.opened, ConnectionRefusedError)
        self.failureResultOf(sock.closed, ConnectionRefusedError)
        self.assertEqual(sock.readyState, "closed")

    def test_readsFailAfterConnectError(self) -> None:
        """
        Reads and queued writes of a socket that never opened fail with the
        connect error.
        """
        reactor = MemoryReactorClock()
        sock = startSocket(TCP4ClientEndpoint(reactor, "192.0.2.1", 9))
        reading = sock.read()
        writing = sock.write(b"x")
        reactor.tcpClients[0][2].clientConnectionFailed(
            reactor.connectors[0], Failure(ConnectionRefusedError())
        )
        self.failureResultOf(reading, ConnectionRefusedError)
        self.failureResultOf(writing, ConnectionRefusedError)
        self.failureResultOf(sock.read(), ConnectionRefusedError)

    def test_unobservedFailureNotLogged(self) -> None:
        """
        A failed C{opened}/C{closed} that nobody consumes is not logged as an
        unhandled error.
        """
        sock, protocol = connecting()
        ignored = [sock.opened, sock.closed]
        protocol.makeConnection(FakeTCPTransport())
        closedBefore = sock.closed
        writes = [sock.write(b"x")]
        protocol.connectionLost(Failure(ConnectionLost()))
        ignored += [sock.opened, sock.closed, closedBefore]
        del ignored, closedBefore, writes
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_connectRaises(self) -> None:
        """
        A reactor whose C{connectTCP} raises (for example a permission
        check) fails the socket instead of raising from C{startSocket}.
        """

        class Refusing(MemoryReactorClock):
            def connectTCP(self, *args: object, **kwargs: object) -> Any:
                raise PermissionError("permission denied: 192.0.2.1:9")

        sock = startSocket(TCP4ClientEndpoint(Refusing(), "192.0.2.1", 9))
        f = self.failureResultOf(sock.opened, PermissionError)
        self.assertIn("permission denied", str(f.value))
        self.failureResultOf(sock.closed, PermissionError)
        self.assertEqual(sock.readyState, "closed")

    def test_directClientFactory(self) -> None:
        """
        L{ClientSocketFactory} works with C{connectTCP} directly: a failure
        reported to the factory fails the socket.
        """
        reactor = MemoryReactorClock()
        factory = ClientSocketFactory("192.0.2.1", 9)
        reactor.connectTCP("192.0.2.1", 9, factory)
        factory.clientConnectionFailed(
            reactor.connectors[0], Failure(ConnectionRefusedError())
        )
        self.failureResultOf(factory.socket.opened, ConnectionRefusedError)

    def test_factoryBuildsOnce(self) -> None:
        """
        A client factory connects its one socket only once.
        """
        sock, protocol, _ = connected()
        factory = ClientSocketFactory()
        first = factory.buildProtocol(PEER)
        first.makeConnection(FakeTCPTransport())
        self.assertIsNone(factory.buildProtocol(PEER))

    def test_highWaterValidated(self) -> None:
        """
        A non-positive high-water mark is refused.
        """
        self.assertRaises(ValueError, TCPClientSocket, highWater=0)
        self.assertRaises(ValueError, TCPClientSocket, highWater=1.5)

    def test_repr(self) -> None:
        """
        The repr shows the destination and the state.
        """
        sock, _ = connecting()
        self.assertEqual(repr(sock), "<TCPClientSocket example.com:80 connecting>")


class CounterTests(SynchronousTestCase):
    """
    C{bytesIn}, C{bytesOut} and C{openedAt}: what an operator's view of a
    socket shows.
    """

    def test_bytesIn(self) -> None:
        """
        Every byte received counts, read or still buffered.
        """
        sock, protocol, transport = connected()
        self.assertEqual(sock.bytesIn, 0)
        protocol.dataReceived(b"abc")
        d = sock.read()
        self.assertEqual(self.successResultOf(d), b"abc")
        reading = sock.read()
        protocol.dataReceived(b"defg")
        self.assertEqual(self.successResultOf(reading), b"defg")
        self.assertEqual(sock.bytesIn, 7)

    def test_bytesOut(self) -> None:
        """
        Bytes count once handed to the transport: held writes when they go.
        """
        sock, protocol = connecting()
        sock.write(b"early")
        self.assertEqual(sock.bytesOut, 0)
        transport = FakeTCPTransport()
        protocol.makeConnection(transport)
        self.assertEqual(sock.bytesOut, 5)
        sock.write(b"late", byteOffset=1)
        sock.write(b"")
        self.assertEqual(sock.bytesOut, 8)
        self.assertEqual(transport.value(), b"earlyate")

    def test_openedAt(self) -> None:
        """
        L{None} until the socket opens, then the Unix time it opened; it
        stays after the socket closed.
        """
        sock, protocol = connecting()
        self.assertIsNone(sock.openedAt)
        before = time.time()
        protocol.makeConnection(FakeTCPTransport())
        after = time.time()
        assert sock.openedAt is not None
        self.assertTrue(before <= sock.openedAt <= after)
        opened = sock.openedAt
        sock.closeImmediately()
        self.assertEqual(sock.openedAt, opened)

    def test_neverOpened(self) -> None:
        """
        A socket that never opened has no C{openedAt} and no bytes.
        """
        sock, protocol = connecting()
        sock.write(b"never sent")
        sock.closeImmediately()
        self.assertEqual((sock.openedAt, sock.bytesIn, sock.bytesOut), (None, 0, 0))


class ReadTests(SynchronousTestCase):
    """
    Reading: buffering, EOF, errors, backpressure to the peer.
    """

    def test_dataBufferedWithoutRead(self) -> None:
        """
        Bytes that arrive while no C{read()} is pending are kept (the
        reference lost them) and returned joined by the next read.
        """
        sock, protocol, _ = connected()
        protocol.dataReceived(b"hello ")
        protocol.dataReceived(b"world")
        self.assertEqual(self.successResultOf(sock.read()), b"hello world")
        self.assertNoResult(sock.read())

    def test_pendingRead(self) -> None:
        """
        A pending read gets the next chunk.
        """
        sock, protocol, _ = connected()
        d = sock.read()
        self.assertNoResult(d)
        protocol.dataReceived(b"abc")
        self.assertEqual(self.successResultOf(d), b"abc")

    def test_concurrentReadsFirstComeFirstServed(self) -> None:
        """
        Concurrent reads are served in order, none dropped (the reference
        dropped all but the last).
        """
        sock, protocol, _ = connected()
        reads = [sock.read() for _ in range(3)]
        for chunk in (b"1", b"2", b"3"):
            protocol.dataReceived(chunk)
        self.assertEqual([self.successResultOf(d) for d in reads], [b"1", b"2", b"3"])

    def test_eofSettlesEveryRead(self) -> None:
        """
        At the end of the stream pending reads give C{b""}, and so does every
        later read (the reference never settled them).
        """
        sock, protocol, _ = connected()
        reads = [sock.read(), sock.read()]
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([self.successResultOf(d) for d in reads], [b"", b""])
        for _ in range(3):
            self.assertEqual(self.successResultOf(sock.read()), b"")
        self.assertIsNone(self.successResultOf(sock.closed))
        self.assertEqual(sock.readyState, "closed")

    def test_callbacksSeeClosedSocket(self) -> None:
        """
        Callbacks run when the connection ends see a closed socket: a write
        made from a read's callback at the end of the stream fails.
        """
        sock, protocol, transport = connected()
        seen: list[object] = []

        def atEnd(data: bytes) -> None:
            seen.append(data)
            seen.append(sock.readyState)
            seen.append(sock.write(b"too late"))

        sock.read().addCallback(atEnd)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(seen[:2], [b"", "closed"])
        self.failureResultOf(seen[2], ConnectionDone)  # type: ignore[arg-type]
        self.assertEqual(transport.value(), b"")

    def test_bufferedDataBeforeEOF(self) -> None:
        """
        Buffered bytes are read before the end of the stream.
        """
        sock, protocol, _ = connected()
        protocol.dataReceived(b"last words")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(sock.read()), b"last words")
        self.assertEqual(self.successResultOf(sock.read()), b"")

    def test_bufferedDataBeforeError(self) -> None:
        """
        If the socket ends with an error, buffered data is read first, then
        every read fails with the error.
        """
        sock, protocol, _ = connected()
        protocol.dataReceived(b"partial")
        protocol.connectionLost(Failure(ConnectionLost("reset")))
        self.assertEqual(self.successResultOf(sock.read()), b"partial")
        self.failureResultOf(sock.read(), ConnectionLost)
        self.failureResultOf(sock.read(), ConnectionLost)
        self.failureResultOf(sock.closed, ConnectionLost)

    def test_pendingReadFailsWithError(self) -> None:
        """
        A pending read fails with the error that ended the socket.
        """
        sock, protocol, _ = connected()
        d = sock.read()
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d, ConnectionLost)

    def test_highWaterPausesTransport(self) -> None:
        """
        Past the high-water mark the transport stops reading until a read
        drains the buffer.
        """
        sock, protocol, transport = connected(highWater=10)
        protocol.dataReceived(b"12345")
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"67890")
        self.assertEqual(transport.producerState, "paused")
        protocol.dataReceived(b"overshoot")
        self.assertEqual(self.successResultOf(sock.read()), b"1234567890overshoot")
        self.assertEqual(transport.producerState, "producing")

    def test_defaultHighWater(self) -> None:
        """
        The default high-water mark is 64 KiB.
        """
        sock, protocol, transport = connected()
        protocol.dataReceived(b"x" * (64 * 1024 - 1))
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"x")
        self.assertEqual(transport.producerState, "paused")

    def test_suspendResume(self) -> None:
        """
        C{suspend()} and C{resume()} pause and resume reading, idempotently.
        """
        sock, protocol, transport = connected()
        sock.suspend()
        sock.suspend()
        self.assertEqual(transport.producerState, "paused")
        sock.resume()
        self.assertEqual(transport.producerState, "producing")
        sock.resume()
        self.assertEqual(transport.producerState, "producing")

    def test_suspendOutlastsDrain(self) -> None:
        """
        Draining a full buffer does not resume a suspended socket, and
        resuming does not resume a full one.
        """
        sock, protocol, transport = connected(highWater=4)
        sock.suspend()
        protocol.dataReceived(b"12345")
        self.successResultOf(sock.read())
        self.assertEqual(transport.producerState, "paused")
        sock.resume()
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"12345")
        sock.suspend()
        sock.resume()
        self.assertEqual(transport.producerState, "paused")

    def test_suspendWhileConnecting(self) -> None:
        """
        A socket suspended while connecting starts paused.
        """
        sock, protocol = connecting()
        sock.suspend()
        transport = FakeTCPTransport()
        protocol.makeConnection(transport)
        self.assertEqual(transport.producerState, "paused")

    def test_pushProducer(self) -> None:
        """
        The socket is an L{IPushProducer} of its input: pause, resume and
        stop map to suspend, resume and closeImmediately.
        """
        sock, protocol, transport = connected()
        verifyObject(IPushProducer, sock)
        sock.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        sock.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        sock.stopProducing()
        self.assertEqual(sock.readyState, "closed")
        self.assertTrue(transport.disconnected)

    def test_asyncIteration(self) -> None:
        """
        C{async for} gives the chunks and ends at the end of the stream.
        """
        sock, protocol, _ = connected()
        chunks: list[bytes] = []

        async def consume() -> None:
            async for chunk in sock:
                chunks.append(chunk)

        done = ensureDeferred(consume())
        protocol.dataReceived(b"a")
        protocol.dataReceived(b"b")
        self.assertNoResult(done)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(done)
        self.assertEqual(chunks, [b"a", b"b"])

    def test_asyncIterationBufferedThenEnded(self) -> None:
        """
        C{async for} over a socket that already ended gives the buffered
        chunk, then stops; after C{closeImmediately()} it stops at once.
        """
        sock, protocol, _ = connected()
        protocol.dataReceived(b"kept")
        protocol.connectionLost(Failure(ConnectionDone()))
        chunks: list[bytes] = []

        async def consume(s: TCPClientSocket) -> None:
            async for chunk in s:
                chunks.append(chunk)

        self.successResultOf(ensureDeferred(consume(sock)))
        self.assertEqual(chunks, [b"kept"])
        other, _, _ = connected()
        pending = ensureDeferred(consume(other))
        other.closeImmediately()
        self.successResultOf(pending)
        self.successResultOf(ensureDeferred(consume(other)))
        self.assertEqual(chunks, [b"kept"])

    def test_asyncIterationError(self) -> None:
        """
        C{async for} raises the error that ended the socket.
        """
        sock, protocol, _ = connected()

        async def consume() -> None:
            async for _ in sock:
                pass

        done = ensureDeferred(consume())
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(done, ConnectionLost)


class ReadHelperTests(SynchronousTestCase):
    """
    C{readExactly()} and C{readUntil()}.
    """

    def test_readExactly(self) -> None:
        """
        C{readExactly(n)} gathers chunks and leaves the rest buffered.
        """
        sock, protocol, _ = connected()
        d = sock.readExactly(5)
        protocol.dataReceived(b"ab")
        self.assertNoResult(d)
        protocol.dataReceived(b"cdefg")
        self.assertEqual(self.successResultOf(d), b"abcde")
        self.assertEqual(self.successResultOf(sock.read()), b"fg")

    def test_readExactlyZero(self) -> None:
        """
        C{readExactly(0)} gives C{b""} at once.
        """
        sock, _, _ = connected()
        self.assertEqual(self.successResultOf(sock.readExactly(0)), b"")

    def test_readExactlyEOF(self) -> None:
        """
        The end of the stream before C{n} bytes fails with
        L{IncompleteReadError} holding what came.
        """
        sock, protocol, _ = connected()
        d = sock.readExactly(10)
        protocol.dataReceived(b"abc")
        protocol.connectionLost(Failure(ConnectionDone()))
        error = self.failureResultOf(d, IncompleteReadError).value
        self.assertEqual((error.partial, error.expected), (b"abc", 10))
        self.assertIn("3 bytes", str(error))
        self.assertIsInstance(error, EOFError)

    def test_readExactlyError(self) -> None:
        """
        An error fails C{readExactly} and leaves the partial bytes buffered.
        """
        sock, protocol, _ = connected()
        d = sock.readExactly(10)
        protocol.dataReceived(b"abc")
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d, ConnectionLost)
        self.assertEqual(self.successResultOf(sock.read()), b"abc")
        self.failureResultOf(sock.read(), ConnectionLost)

    def test_readExactlyBadArguments(self) -> None:
        """
        A negative or non-int count fails at once.
        """
        sock, _, _ = connected()
        self.failureResultOf(sock.readExactly(-1), ValueError)
        self.failureResultOf(sock.readExactly("3"), TypeError)  # type: ignore[arg-type]

    def test_readUntil(self) -> None:
        """
        C{readUntil()} returns through the separator, across chunks, and
        leaves the rest buffered.
        """
        sock, protocol, _ = connected()
        d = sock.readUntil(b"\r\n")
        protocol.dataReceived(b"GET / HTTP/1.1\r")
        self.assertNoResult(d)
        protocol.dataReceived(b"\nHost: x\r\n")
        self.assertEqual(self.successResultOf(d), b"GET / HTTP/1.1\r\n")
        self.assertEqual(self.successResultOf(sock.readUntil(b"\r\n")), b"Host: x\r\n")

    def test_readUntilLimit(self) -> None:
        """
        Without the separator within C{limit} bytes, C{readUntil} fails with
        L{LimitOverrunError} and the bytes stay buffered.
        """
        sock, protocol, _ = connected()
        d = sock.readUntil(b"\n", limit=8)
        protocol.dataReceived(b"0123456789")
        error = self.failureResultOf(d, LimitOverrunError).value
        self.assertEqual(error.consumed, 10)
        self.assertEqual(self.successResultOf(sock.read()), b"0123456789")

    def test_readUntilSeparatorPastLimit(self) -> None:
        """
        A separator that ends past the limit is an overrun too.
        """
        sock, protocol, _ = connected()
        protocol.dataReceived(b"0123456\n")
        self.failureResultOf(sock.readUntil(b"\n", limit=7), LimitOverrunError)
        self.assertEqual(
            self.successResultOf(sock.readUntil(b"\n", limit=8)), b"0123456\n"
        )

    def test_readUntilEOF(self) -> None:
        """
        The end of the stream before the separator fails with
        L{IncompleteReadError}.
        """
        sock, protocol, _ = connected()
        d = sock.readUntil()
        protocol.dataReceived(b"no newline")
        protocol.connectionLost(Failure(ConnectionDone()))
        error = self.failureResultOf(d, IncompleteReadError).value
        self.assertEqual((error.partial, error.expected), (b"no newline", None))

    def test_manyRecordsInOneChunk(self) -> None:
        """
        Lines and fixed-size records taken from one buffered chunk come out
        in order, and C{read()} then returns the rest.
        """
        sock, protocol, _ = connected()
        protocol.dataReceived(b"one\ntwo\nABCDthree\nrest")
        self.assertEqual(self.successResultOf(sock.readUntil()), b"one\n")
        self.assertEqual(self.successResultOf(sock.readUntil()), b"two\n")
        self.assertEqual(self.successResultOf(sock.readExactly(4)), b"ABCD")
        self.assertEqual(self.successResultOf(sock.readUntil()), b"three\n")
        protocol.dataReceived(b" and more")
        self.assertEqual(self.successResultOf(sock.read()), b"rest and more")
        self.assertEqual(sock._bufSize, 0)

    def test_separatorAcrossChunks(self) -> None:
        """
        A separator split between two buffered chunks is found.
        """
        sock, protocol, _ = connected()
        protocol.dataReceived(b"line\r")
        protocol.dataReceived(b"\nnext")
        self.assertEqual(self.successResultOf(sock.readUntil(b"\r\n")), b"line\r\n")
        self.assertEqual(self.successResultOf(sock.readExactly(4)), b"next")

    def test_readExactlyAcrossChunks(self) -> None:
        """
        C{readExactly} joins buffered chunks when it needs to.
        """
        sock, protocol, _ = connected()
        for chunk in (b"ab", b"cd", b"ef"):
            protocol.dataReceived(chunk)
        self.assertEqual(self.successResultOf(sock.readExactly(1)), b"a")
        self.assertEqual(self.successResultOf(sock.readExactly(4)), b"bcde")
        self.assertEqual(self.successResultOf(sock.read()), b"f")

    def test_takingResumesReading(self) -> None:
        """
        Taking records below the high-water mark resumes the transport.
        """
        sock, protocol, transport = connected(highWater=8)
        protocol.dataReceived(b"1234\n5678\n")
        self.assertEqual(transport.producerState, "paused")
        self.successResultOf(sock.readUntil())
        self.assertEqual(transport.producerState, "producing")

    def test_readExactlyBeyondHighWater(self) -> None:
        """
        C{readExactly(n)} with C{n} past the high-water mark does not stall:
        the transport keeps reading until C{n} bytes came, and the rest is
        buffered (pausing again if it is too much).
        """
        sock, protocol, transport = connected(highWater=8)
        protocol.dataReceived(b"x" * 10)
        self.assertEqual(transport.producerState, "paused")
        d = sock.readExactly(30)
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"y" * 10)
        self.assertNoResult(d)
        protocol.dataReceived(b"z" * 20)
        self.assertEqual(self.successResultOf(d), b"x" * 10 + b"y" * 10 + b"z" * 10)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(self.successResultOf(sock.read()), b"z" * 10)
        self.assertEqual(transport.producerState, "producing")

    def test_readUntilLongLineAcrossChunks(self) -> None:
        """
        A line that arrives in many chunks is found once its separator comes;
        the bytes after it stay buffered.
        """
        sock, protocol, _ = connected()
        d = sock.readUntil(b"END", limit=1000)
        for _ in range(50):
            protocol.dataReceived(b"0123456789")
        protocol.dataReceived(b"EN")
        self.assertNoResult(d)
        protocol.dataReceived(b"Dtail")
        self.assertEqual(self.successResultOf(d), b"0123456789" * 50 + b"END")
        self.assertEqual(self.successResultOf(sock.read()), b"tail")

    def test_readUntilErrorKeepsBytes(self) -> None:
        """
        An error while C{readUntil} waits leaves its bytes buffered.
        """
        sock, protocol, _ = connected()
        protocol.dataReceived(b"partial")
        d = sock.readUntil()
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d, ConnectionLost)
        self.assertEqual(self.successResultOf(sock.read()), b"partial")
        self.failureResultOf(sock.read(), ConnectionLost)

    def test_readUntilBadArguments(self) -> None:
        """
        An empty or non-bytes separator, or a limit shorter than it, fails.
        """
        sock, _, _ = connected()
        self.failureResultOf(sock.readUntil(b""), ValueError)
        self.failureResultOf(sock.readUntil("\n"), TypeError)  # type: ignore[arg-type]
        self.failureResultOf(sock.readUntil(b"\r\n", limit=1), ValueError)
        self.failureResultOf(sock.readUntil(b"\n", limit=None), TypeError)  # type: ignore[arg-type]


class WriteTests(SynchronousTestCase):
    """
    Writing: argument checks, queueing while connecting, backpressure.
    """

    def test_write(self) -> None:
        """
        A write on an open socket goes to the transport and fires at once.
        """
        sock, _, transport = connected()
        self.assertIsNone(self.successResultOf(sock.write(b"hello")))
        self.assertEqual(transport.value(), b"hello")
        self.assertEqual(sock.bufferedAmount, 0)

    def test_writeBuffers(self) -> None:
        """
        C{bytearray} and C{memoryview} are accepted, with offset and length.
        """
        sock, _, transport = connected()
        sock.write(bytearray(b"0123456789"), 2, 3)
        sock.write(memoryview(b"abcdef"), 4)
        sock.write(b"xyz", byteLength=1)
        sock.write(b"xyz", 3)
        self.assertEqual(transport.value(), b"234efx")

    def test_writeTypedMemoryview(self) -> None:
        """
        A memoryview of another format is sent as its bytes.
        """
        import array

        sock, _, transport = connected()
        data = array.array("H", [1, 2])
        sock.write(memoryview(data))
        self.assertEqual(transport.value(), data.tobytes())

    def test_mutableBufferCopied(self) -> None:
        """
        A mutable buffer may be reused as soon as C{write()} returns.
        """
        sock, protocol = connecting()
        buf = bytearray(b"first")
        sock.write(buf)
        buf[:] = b"XXXXX"
        transport = FakeTCPTransport()
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), b"first")

    def test_writeBadOffsets(self) -> None:
        """
        Offsets and lengths outside the buffer fail with L{ValueError} that
        says what was wrong.
        """
        sock, _, transport = connected()
        for offset, length in [(-1, None), (4, None), (0, 4), (2, 2), (0, -1)]:
            f = self.failureResultOf(sock.write(b"abc", offset, length), ValueError)
            self.assertIn("byte", str(f.value))
        self.assertEqual(transport.value(), b"")
        self.successResultOf(sock.write(b"abc", 3, 0))

    def test_writeBadTypes(self) -> None:
        """
        Data that is no bytes-like object, or offsets that are no ints, fail
        with L{TypeError}.
        """
        sock, _, transport = connected()
        for args in [("text",), (42,), ([1, 2],), (None,)]:
            f = self.failureResultOf(sock.write(*args), TypeError)  # type: ignore[arg-type]
            self.assertIn("bytes", str(f.value))
        for offset, length in [(1.0, None), (True, None), (0, "1")]:
            self.failureResultOf(sock.write(b"abc", offset, length), TypeError)  # type: ignore[arg-type]
        self.assertEqual(transport.value(), b"")

    def test_writesQueuedWhileConnecting(self) -> None:
        """
        Writes made while connecting are held (C{bufferedAmount}) and sent in
        order once open; their Deferreds fire then.
        """
        sock, protocol = connecting()
        first = sock.write(b"one ")
        second = sock.write(b"two")
        self.assertEqual(sock.bufferedAmount, 7)
        self.assertNoResult(first)
        transport = FakeTCPTransport()
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), b"one two")
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(sock.bufferedAmount, 0)

    def test_queuedWritesBeforeOpenedCallbacks(self) -> None:
        """
        Writes made in an C{opened} callback go after the queued ones.
        """
        sock, protocol = connecting()
        sock.write(b"queued ")
        sock.opened.addCallback(lambda _: sock.write(b"callback"))
        transport = FakeTCPTransport()
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), b"queued callback")

    def test_backpressure(self) -> None:
        """
        A write that fills the transport's buffer waits until it drains;
        writes made meanwhile are held (C{bufferedAmount}) and sent then.
        """
        sock, _, transport = connected(bufferSize=10)
        first = sock.write(b"x" * 8)
        self.successResultOf(first)
        second = sock.write(b"y" * 8)
        self.assertNoResult(second)
        third = sock.write(b"z" * 5)
        self.assertNoResult(third)
        self.assertEqual(sock.bufferedAmount, 5)
        self.assertEqual(transport.drain(), b"x" * 8 + b"y" * 8)
        self.successResultOf(second)
        self.successResultOf(third)
        self.assertEqual(sock.bufferedAmount, 0)
        self.assertEqual(transport.drain(), b"z" * 5)

    def test_manyWritesAgainstFullTransport(self) -> None:
        """
        256 writes of 64 KiB against a transport that does not drain stay
        pending until it drains, in order.
        """
        sock, _, transport = connected(bufferSize=64 * 1024)
        chunk = b"c" * (64 * 1024)
        writes = [sock.write(chunk) for _ in range(256)]
        self.successResultOf(writes[0])
        for d in writes[1:]:
            self.assertNoResult(d)
        self.assertEqual(sock.bufferedAmount, 254 * len(chunk))
        total = 0
        for _ in range(300):
            data = transport.drain()
            if not data:
                break
            total += len(data)
        self.assertEqual(total, 256 * len(chunk))
        for d in writes:
            self.successResultOf(d)

    def test_writeAfterClose(self) -> None:
        """
        A write after C{close()} fails with L{SocketClosed}.
        """
        sock, _, transport = connected()
        sock.close()
        self.failureResultOf(sock.write(b"late"), SocketClosed)
        self.assertEqual(transport.value(), b"")

    def test_writeAfterCloseImmediately(self) -> None:
        """
        A write after C{closeImmediately()} fails with L{SocketClosed}.
        """
        sock, _, _ = connected()
        sock.closeImmediately()
        f = self.failureResultOf(sock.write(b"late"), SocketClosed)
        self.assertIn("closed", str(f.value))

    def test_heldWritesFailWithConnectionError(self) -> None:
        """
        Writes still held when the connection dies fail with its error, and
        that is not logged as unhandled.
        """
        sock, protocol, _ = connected(bufferSize=1)
        waiting = sock.write(b"ab")
        held = sock.write(b"cd")
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(waiting, ConnectionLost)
        self.failureResultOf(held, ConnectionLost)
        later = sock.write(b"ef")
        self.failureResultOf(later, ConnectionLost)
        unobserved = [sock.write(b"x")]
        sock2, protocol2, _ = connected(bufferSize=1)
        unobserved += [sock2.write(b"ab"), sock2.write(b"cd")]
        protocol2.connectionLost(Failure(ConnectionLost()))
        del unobserved
        gc.collect()
        self.assertEqual(len(self.flushLoggedErrors(ConnectionLost)), 1)

    def test_emptyWrite(self) -> None:
        """
        An empty write fires and sends nothing.
        """
        sock, _, transport = connected()
        self.successResultOf(sock.write(b""))
        self.assertEqual(transport.value(), b"")

    def test_socketOptions(self) -> None:
        """
        C{setNoDelay} and C{setKeepAlive} set the transport's options, or
        remember them until the socket opens.
        """
        sock, protocol = connecting()
        sock.setNoDelay(True)
        transport = FakeTCPTransport()
        protocol.makeConnection(transport)
        self.assertEqual(transport.options, {"noDelay": True})
        sock.setKeepAlive(True)
        sock.setNoDelay(False)
        self.assertEqual(transport.options, {"noDelay": False, "keepAlive": True})

    def test_socketOptionsBadValues(self) -> None:
        """
        C{setNoDelay} and C{setKeepAlive} take a C{bool} (or C{0}/C{1});
        anything else raises a L{TypeError} that shows the value, and the
        option is left as it was.
        """
        sock, _, transport = connected()
        for method in [sock.setNoDelay, sock.setKeepAlive]:
            for bad in ["false", None, 2, 1.0]:
                with self.assertRaises(TypeError) as caught:
                    method(bad)  # type: ignore[arg-type]
                self.assertIn(repr(bad), str(caught.exception))
                self.assertIn(method.__name__, str(caught.exception))
        self.assertEqual(transport.options, {"noDelay": True})
        sock.setKeepAlive(1)  # type: ignore[arg-type]
        sock.setNoDelay(0)  # type: ignore[arg-type]
        self.assertEqual(transport.options, {"noDelay": False, "keepAlive": True})

    def test_noDelayByDefault(self) -> None:
        """
        Sockets turn Nagle's algorithm off when they open, unless told
        otherwise while connecting.
        """
        _, _, transport = connected()
        self.assertEqual(transport.options, {"noDelay": True})
        sock, protocol = connecting()
        sock.setNoDelay(False)
        transport = FakeTCPTransport()
        protocol.makeConnection(transport)
        self.assertEqual(transport.options, {"noDelay": False})

    def test_socketOptionsWithoutTCP(self) -> None:
        """
        Socket options are ignored on a transport without them.
        """
        sock, protocol = connecting()
        protocol.makeConnection(StringTransport())
        sock.setNoDelay(True)
        sock.setKeepAlive(False)
        self.assertEqual(sock.readyState, "open")


class ConsumerTests(SynchronousTestCase):
    """
    The socket as an L{IConsumer}.
    """

    def test_interface(self) -> None:
        """
        The socket provides L{IConsumer}.
        """
        sock, _, _ = connected()
        verifyObject(IConsumer, sock)

    def test_fileSender(self) -> None:
        """
        L{FileSender} streams a file into the socket, paced by the
        transport's backpressure.
        """
        sock, _, transport = connected(bufferSize=20000)
        data = bytes(range(256)) * 400
        done = FileSender().beginFileTransfer(BytesIO(data), sock)
        received = b""
        for _ in range(100):
            received += transport.drain()
            if done.called:
                break
        received += transport.drain()
        self.successResultOf(done)
        self.assertEqual(received, data)

    def test_streamingProducer(self) -> None:
        """
        A streaming producer is paused when the transport pauses the socket
        and resumed when it drains.
        """

        @implementer(IPushProducer)
        class Producer:
            state = "producing"

            def pauseProducing(self) -> None:
                self.state = "paused"

            def resumeProducing(self) -> None:
                self.state = "producing"

            def stopProducing(self) -> None:
                self.state = "stopped"

        sock, _, transport = connected(bufferSize=4)
        producer = Producer()
        sock.registerProducer(producer, True)
        self.assertRaises(RuntimeError, sock.registerProducer, Producer(), True)
        sock.write(b"12345")
        self.assertEqual(producer.state, "paused")
        transport.drain()
        self.assertEqual(producer.state, "producing")
        sock.closeImmediately()
        self.assertEqual(producer.state, "stopped")

    def test_streamingProducerWhileConnecting(self) -> None:
        """
        A streaming producer registered while connecting waits for the open.
        """
        sock, protocol = connecting()
        states: list[str] = []

        @implementer(IPushProducer)
        class Producer:
            def pauseProducing(self) -> None:
                states.append("paused")

            def resumeProducing(self) -> None:
                states.append("producing")

            def stopProducing(self) -> None:
                states.append("stopped")

        sock.registerProducer(Producer(), True)
        protocol.makeConnection(FakeTCPTransport())
        self.assertEqual(states, ["paused", "producing"])
        sock.unregisterProducer()
        sock.close()
        self.assertEqual(states, ["paused", "producing"])


class CloseTests(SynchronousTestCase):
    """
    C{close()}, C{closeImmediately()}, C{closeWrite()}, C{_abortWith()}.
    """

    def test_close(self) -> None:
        """
        C{close()} unregisters the write producer, then closes the transport;
        it fires once the connection is gone.
        """
        sock, protocol, transport = connected()
        d = sock.close()
        self.assertEqual(sock.readyState, "closing")
        self.assertEqual(transport.log, ["unregisterProducer", "loseConnection"])
        self.assertNoResult(d)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(self.successResultOf(sock.closed))
        self.assertEqual(sock.readyState, "closed")
        self.successResultOf(sock.close())

    def test_closeReadsAgain(self) -> None:
        """
        C{close()} on a socket that does not read (suspended, or its buffer
        full) resumes the transport's reading, so that a close that waits
        for the peer (TLS) can finish; later C{suspend()}s are ignored, and
        bytes that come past the high-water mark while closing are dropped,
        while those buffered before stay readable.
        """
        sock, protocol, transport = connected(highWater=4)
        sock.suspend()
        self.assertEqual(transport.producerState, "paused")
        protocol.dataReceived(b"abcd")
        d = sock.close()
        self.assertEqual(transport.producerState, "producing")
        self.assertTrue(transport.disconnecting)
        sock.suspend()
        sock.resume()
        sock.suspend()
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"dropped")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)
        self.assertEqual(self.successResultOf(sock.read()), b"abcd")
        self.assertEqual(self.successResultOf(sock.read()), b"")

        sock, protocol, transport = connected(highWater=4)
        protocol.dataReceived(b"full")
        self.assertEqual(transport.producerState, "paused")
        sock.close()
        self.assertEqual(transport.producerState, "producing")

    def test_tlsCloseTimeout(self) -> None:
        """
        A TLS close the peer does not answer within C{tlsCloseTimeout}
        seconds aborts the connection: C{close()} fires and C{closed} fails
        with L{twisted.internet.error.TimeoutError}, which says why.  An
        answered close cancels the timer; plain TCP sets none.
        """
        from twisted.internet.error import TimeoutError as UserTimeoutError
        from twisted.internet.interfaces import ISSLTransport
        from twisted.internet.task import Clock
        from zope.interface import directlyProvides

        def tlsConnected() -> tuple[TCPClientSocket, Any, Any, Clock]:
            sock, protocol = connecting()
            transport = FakeTCPTransport()
            directlyProvides(transport, ISSLTransport)
            transport.reactor = clock = Clock()  # type: ignore[attr-defined]
            protocol.makeConnection(transport)
            protocol.handshakeCompleted()
            return sock, protocol, transport, clock

        sock, protocol, transport, clock = tlsConnected()
        self.assertTrue(sock.ssl)
        d = sock.close()
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        clock.advance(TCPClientSocket.tlsCloseTimeout - 1)  # type: ignore[operator]
        self.assertNoResult(d)
        clock.advance(1)
        self.assertTrue(transport.disconnected)
        self.assertIsNone(self.successResultOf(d))
        f = self.failureResultOf(sock.closed, UserTimeoutError)
        self.assertIn("TLS close", str(f.value))

        sock, protocol, transport, clock = tlsConnected()
        d = sock.close()
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.successResultOf(sock.closed)

        self.patch(TCPClientSocket, "tlsCloseTimeout", None)
        sock, protocol, transport, clock = tlsConnected()
        sock.close()
        self.assertEqual(clock.getDelayedCalls(), [])

        sock, protocol, transport = connected()
        transport.reactor = clock = Clock()  # type: ignore[attr-defined]
        sock.close()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_closeTwice(self) -> None:
        """
        A second C{close()} while closing fires at the same time.
        """
        sock, protocol, transport = connected()
        first, second = sock.close(), sock.close()
        self.assertEqual(transport.log.count("loseConnection"), 1)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(first)
        self.successResultOf(second)

    def test_closeWaitsForWrites(self) -> None:
        """
        C{close()} sends every held write before closing.
        """
        sock, protocol, transport = connected(bufferSize=3)
        sock.write(b"abcd")
        sock.write(b"efgh")
        d = sock.close()
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.drain(), b"abcd")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.drain(), b"efgh")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.log, ["unregisterProducer", "loseConnection"])
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)

    def test_closeWhileConnecting(self) -> None:
        """
        C{close()} while connecting waits for the connection, sends what was
        queued, then closes.
        """
        sock, protocol = connecting()
        sock.write(b"queued")
        d = sock.close()
        self.assertEqual(sock.readyState, "closing")
        transport = FakeTCPTransport()
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), b"queued")
        self.assertTrue(transport.disconnecting)
        self.successResultOf(sock.opened)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)
        self.successResultOf(sock.closed)

    def test_closeWhileConnectingFails(self) -> None:
        """
        If the connection fails after C{close()}, C{close()} fires and
        C{closed} fails with the connect error.
        """
        reactor = MemoryReactorClock()
        sock = startSocket(TCP4ClientEndpoint(reactor, "192.0.2.1", 9))
        d = sock.close()
        reactor.tcpClients[0][2].clientConnectionFailed(
            reactor.connectors[0], Failure(ConnectionRefusedError())
        )
        self.assertIsNone(self.successResultOf(d))
        self.failureResultOf(sock.closed, ConnectionRefusedError)

    def test_closeImmediately(self) -> None:
        """
        C{closeImmediately()} discards input, settles reads with C{b""}, fails
        held writes with L{SocketClosed}, aborts, and C{closed} fires.
        """
        sock, protocol, transport = connected(bufferSize=1)
        protocol.dataReceived(b"discarded")
        waiting = sock.write(b"ab")
        held = sock.write(b"cd")
        sock.closeImmediately()
        self.assertTrue(transport.disconnected)
        self.assertEqual(sock.readyState, "closed")
        self.assertEqual(self.successResultOf(sock.read()), b"")
        self.failureResultOf(waiting, SocketClosed)
        self.failureResultOf(held, SocketClosed)
        self.assertIsNone(self.successResultOf(sock.closed))
        protocol.dataReceived(b"late")
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.successResultOf(sock.read()), b"")
        self.assertIsNone(self.successResultOf(sock.closed))
        sock.closeImmediately()

    def test_closeImmediatelySettlesPendingRead(self) -> None:
        """
        A read pending at C{closeImmediately()} gives C{b""}.
        """
        sock, _, _ = connected()
        d = sock.read()
        sock.closeImmediately()
        self.assertEqual(self.successResultOf(d), b"")

    def test_closeImmediatelyWhileConnecting(self) -> None:
        """
        C{closeImmediately()} while connecting cancels the attempt: C{opened}
        fails with L{SocketClosed} and C{closed} fires.
        """
        reactor = MemoryReactorClock()
        sock = startSocket(TCP4ClientEndpoint(reactor, "192.0.2.1", 9))
        opened = sock.opened
        sock.closeImmediately()
        self.assertTrue(reactor.connectors[0].stoppedConnecting)
        self.failureResultOf(opened, SocketClosed)
        self.successResultOf(sock.closed)

    def test_connectionAfterCloseImmediately(self) -> None:
        """
        A connection that arrives after C{closeImmediately()} is aborted.
        """
        sock, protocol = connecting()
        sock.closeImmediately()
        transport = FakeTCPTransport()
        protocol.makeConnection(transport)
        self.assertTrue(transport.disconnected)

    def test_abortWith(self) -> None:
        """
        C{_abortWith(error)} ends the socket with that error: C{closed} and
        writes fail with it, reads give the buffer, then fail with it.
        """
        sock, protocol, transport = connected()
        protocol.dataReceived(b"kept")
        closed = sock.closed
        sock._abortWith(PermissionError("grant removed"))
        self.assertTrue(transport.disconnected)
        self.assertEqual(sock.readyState, "closed")
        self.failureResultOf(closed, PermissionError)
        self.failureResultOf(sock.write(b"x"), PermissionError)
        self.assertEqual(self.successResultOf(sock.read()), b"kept")
        self.failureResultOf(sock.read(), PermissionError)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(sock.closed, PermissionError)

    def test_abortWithWhileConnecting(self) -> None:
        """
        C{_abortWith()} while connecting fails C{opened} with the error.
        """
        reactor = MemoryReactorClock()
        sock = startSocket(TCP4ClientEndpoint(reactor, "192.0.2.1", 9))
        sock._abortWith(PermissionError("no"))
        self.failureResultOf(sock.opened, PermissionError)
        self.assertTrue(reactor.connectors[0].stoppedConnecting)

    def test_peerHalfClose(self) -> None:
        """
        A FIN from the peer ends reading only: the socket stays open and can
        write; C{closed} fires once it is closed too.
        """
        sock, protocol, transport = connected()
        protocol.dataReceived(b"request")
        protocol.readConnectionLost()
        self.assertEqual(self.successResultOf(sock.read()), b"request")
        self.assertEqual(self.successResultOf(sock.read()), b"")
        self.assertEqual(sock.readyState, "open")
        self.successResultOf(sock.write(b"response"))
        self.assertEqual(transport.value(), b"response")
        closed = sock.closed
        self.assertNoResult(closed)
        sock.close()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(closed)

    def test_closeWrite(self) -> None:
        """
        C{closeWrite()} half-closes after held writes; reading goes on, and
        writes fail with L{SocketClosed}.
        """
        sock, protocol, transport = connected(bufferSize=3)
        sock.write(b"abcd")
        d = sock.closeWrite()
        self.assertNoResult(d)
        self.failureResultOf(sock.write(b"x"), SocketClosed)
        transport.drain()
        self.successResultOf(d)
        self.assertTrue(transport.writeClosed)
        self.assertEqual(transport.log, ["unregisterProducer", "loseWriteConnection"])
        protocol.dataReceived(b"still reading")
        self.assertEqual(self.successResultOf(sock.read()), b"still reading")
        self.assertEqual(sock.readyState, "open")
        protocol.writeConnectionLost()
        protocol.readConnectionLost()
        self.assertIn("loseConnection", transport.log)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(sock.closed)

    def test_closeWriteAfterPeerFIN(self) -> None:
        """
        C{closeWrite()} after the peer's FIN closes the connection.
        """
        sock, protocol, transport = connected()
        protocol.readConnectionLost()
        self.successResultOf(sock.closeWrite())
        self.assertEqual(
            transport.log,
            ["unregisterProducer", "loseWriteConnection", "loseConnection"],
        )

    def test_closeWriteTwice(self) -> None:
        """
        C{closeWrite()} twice, or after C{close()}, fails with
        L{SocketClosed}.
        """
        sock, _, _ = connected()
        sock.closeWrite()
        self.failureResultOf(sock.closeWrite(), SocketClosed)
        sock2, _, _ = connected()
        sock2.close()
        self.failureResultOf(sock2.closeWrite(), SocketClosed)

    def test_closeAfterCloseWrite(self) -> None:
        """
        C{close()} after C{closeWrite()} closes (without unregistering twice).
        """
        sock, protocol, transport = connected()
        sock.closeWrite()
        d = sock.close()
        self.assertEqual(
            transport.log,
            ["unregisterProducer", "loseWriteConnection", "loseConnection"],
        )
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)

    def test_closeWriteWithoutHalfClose(self) -> None:
        """
        C{closeWrite()} on a transport that cannot half-close fails with a
        clear error.
        """
        sock, protocol = connecting()
        protocol.makeConnection(StringTransport())
        f = self.failureResultOf(sock.closeWrite(), ValueError)
        self.assertIn("half-close", str(f.value))


class UpgradeTests(SynchronousTestCase):
    """
    C{upgradeToSecure()}'s state checks and ordering (the real handshakes are
    in L{tests.test_tls}).
    """

    def test_beforeOpen(self) -> None:
        """
        C{upgradeToSecure()} before the socket is open fails clearly.
        """
        sock, _ = connecting()
        f = self.failureResultOf(sock.upgradeToSecure(FakeTLSOptions()), RuntimeError)
        self.assertIn("not open", str(f.value))

    def test_upgrade(self) -> None:
        """
        C{upgradeToSecure()} starts TLS on the transport and fires once the
        handshake completed; then C{ssl} is L{True}.
        """
        sock, protocol, transport = connected()
        options = FakeTLSOptions()
        d = sock.upgradeToSecure(options)
        self.assertEqual(transport.tlsStarted, [options])
        self.assertNoResult(d)
        self.assertFalse(sock.ssl)
        protocol.handshakeCompleted()
        self.successResultOf(d)
        self.assertTrue(sock.ssl)
        protocol.handshakeCompleted()

    def test_twice(self) -> None:
        """
        A second C{upgradeToSecure()} fails, during and after the first.
        """
        sock, protocol, _ = connected()
        sock.upgradeToSecure(FakeTLSOptions())
        f = self.failureResultOf(sock.upgradeToSecure(FakeTLSOptions()), RuntimeError)
        self.assertIn("already", str(f.value))
        protocol.handshakeCompleted()
        self.failureResultOf(sock.upgradeToSecure(FakeTLSOptions()), RuntimeError)

    def test_afterClose(self) -> None:
        """
        C{upgradeToSecure()} after a close fails with L{SocketClosed}.
        """
        sock, _, _ = connected()
        sock.close()
        self.failureResultOf(sock.upgradeToSecure(FakeTLSOptions()), SocketClosed)

    def test_waitsForQueuedWrites(self) -> None:
        """
        TLS starts after the held writes were handed over; writes made after
        the call wait for it.
        """
        sock, _, transport = connected(bufferSize=3)
        sock.write(b"plain")
        options = FakeTLSOptions()
        d = sock.upgradeToSecure(options)
        sock.write(b"secret")
        self.assertEqual(transport.tlsStarted, [])
        self.assertEqual(transport.drain(), b"plain")
        self.assertEqual(transport.tlsStarted, [options])
        self.assertEqual(transport.drain(), b"secret")
        self.assertNoResult(d)

    def test_failure(self) -> None:
        """
        A failed handshake fails the upgrade and C{closed} with the error.
        """
        sock, protocol, _ = connected()
        d = sock.upgradeToSecure(FakeTLSOptions())
        protocol.connectionLost(Failure(ValueError("bad handshake")))
        self.failureResultOf(d, ValueError)
        self.failureResultOf(sock.closed, ValueError)
        self.assertEqual(sock.readyState, "closed")

    def test_handshakeTimeout(self) -> None:
        """
        A STARTTLS handshake that does not complete within
        C{tlsHandshakeTimeout} seconds aborts the connection: the upgrade
        and C{closed} fail with L{twisted.internet.error.TimeoutError},
        which says why.  A completed handshake cancels the timer; with
        L{None} there is none.
        """
        from twisted.internet.error import TimeoutError as UserTimeoutError
        from twisted.internet.task import Clock

        def upgrading() -> tuple[TCPClientSocket, Any, Any, Clock, Deferred[None]]:
            sock, protocol, transport = connected()
            transport.reactor = clock = Clock()
            d = sock.upgradeToSecure(FakeTLSOptions())
            return sock, protocol, transport, clock, d

        sock, protocol, transport, clock, d = upgrading()
        timeout = TCPClientSocket.tlsHandshakeTimeout
        assert timeout is not None
        clock.advance(timeout - 1)
        self.assertNoResult(d)
        clock.advance(1)
        f = self.failureResultOf(d, UserTimeoutError)
        self.assertIn("TLS handshake", str(f.value))
        self.failureResultOf(sock.closed, UserTimeoutError)
        self.assertTrue(transport.disconnected)

        sock, protocol, transport, clock, d = upgrading()
        protocol.handshakeCompleted()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertTrue(sock.ssl)

        self.patch(TCPClientSocket, "tlsHandshakeTimeout", None)
        sock, protocol, transport, clock, d = upgrading()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_handshakeTimeoutFromStart(self) -> None:
        """
        With TLS from the start, a handshake that does not complete within
        C{tlsHandshakeTimeout} seconds fails C{opened} and C{closed} with
        L{twisted.internet.error.TimeoutError}; a close of the socket in
        the meantime cancels the timer.
        """
        from twisted.internet.error import TimeoutError as UserTimeoutError
        from twisted.internet.interfaces import ISSLTransport
        from twisted.internet.task import Clock
        from zope.interface import directlyProvides

        def handshaking() -> tuple[TCPClientSocket, Any, Clock]:
            sock, protocol = connecting()
            transport = FakeTCPTransport()
            directlyProvides(transport, ISSLTransport)
            transport.reactor = clock = Clock()  # type: ignore[attr-defined]
            protocol.makeConnection(transport)
            return sock, transport, clock

        sock, transport, clock = handshaking()
        self.assertEqual(sock.readyState, "connecting")
        clock.advance(TCPClientSocket.tlsHandshakeTimeout)  # type: ignore[arg-type]
        self.failureResultOf(sock.opened, UserTimeoutError)
        self.failureResultOf(sock.closed, UserTimeoutError)
        self.assertEqual(sock.readyState, "closed")
        self.assertTrue(transport.disconnected)

        sock, transport, clock = handshaking()
        sock.closeImmediately()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_noTLSTransport(self) -> None:
        """
        A transport without C{startTLS} cannot be upgraded.
        """
        sock, protocol = connecting()
        protocol.makeConnection(StringTransport())
        f = self.failureResultOf(sock.upgradeToSecure(FakeTLSOptions()), RuntimeError)
        self.assertIn("cannot start TLS", str(f.value))

    def test_badOptions(self) -> None:
        """
        Options that are no TLS options fail the upgrade with a L{TypeError}
        that names their type; the socket stays open and usable, and a
        later upgrade with real options works.
        """
        sock, protocol, transport = connected()
        for bad in ["options", 42, object()]:
            f = self.failureResultOf(sock.upgradeToSecure(bad), TypeError)
            self.assertIn("tlsOptions must be", str(f.value))
            self.assertIn(type(bad).__name__, str(f.value))
        self.assertEqual(transport.tlsStarted, [])
        self.assertEqual(sock.readyState, "open")
        self.successResultOf(sock.write(b"still open"))
        self.assertEqual(transport.value(), b"still open")
        options = FakeTLSOptions()
        d = sock.upgradeToSecure(options)
        self.assertEqual(transport.tlsStarted, [options])
        protocol.handshakeCompleted()
        self.successResultOf(d)

        class OldStyle:
            def getContext(self) -> None:
                """
                An old-style context factory.
                """

        sock2, _, transport2 = connected()
        sock2.upgradeToSecure(OldStyle())
        self.assertEqual(len(transport2.tlsStarted), 1)

    def test_noHostName(self) -> None:
        """
        Without options, a socket that knows no host name cannot verify one.
        """
        factory = ClientSocketFactory()
        factory.buildProtocol(PEER).makeConnection(FakeTCPTransport())
        self.failureResultOf(factory.socket.upgradeToSecure(), ValueError)

    def test_defaultOptions(self) -> None:
        """
        Without options, the socket's host is verified.
        """
        sock, _, transport = connected()
        sock.upgradeToSecure()
        [options] = transport.tlsStarted
        self.assertEqual(options._hostname, "example.com")


class DeferredHelperTests(SynchronousTestCase):
    """
    Small behaviours that the rest relies on.
    """

    def test_pendingReadIsDeferred(self) -> None:
        """
        C{read()} always returns a L{Deferred}.
        """
        sock, _, _ = connected()
        self.assertIsInstance(sock.read(), Deferred)


class LoopbackTests(TestCase):
    """
    The socket over real loopback connections (127.0.0.1, port 0).
    """

    timeout = 60

    async def pair(self) -> tuple[TCPClientSocket, TCPClientSocket]:
        """
        A connected client socket and the server's accepted socket; both
        aborted at cleanup.
        """
        return await loopbackPair(self)

    async def spin(self, rounds: int = 10) -> None:
        """
        Let the reactor run a few short rounds.
        """
        for _ in range(rounds):
            await deferLater(globalReactor, 0.01, lambda: None)

    async def test_echoOneMebibyte(self) -> None:
        """
        1 MiB echoed through C{read()}/C{write()} comes back byte for byte.
        """
        client, accepted = await self.pair()

        async def echo() -> None:
            async for chunk in accepted:
                await accepted.write(chunk)
            await accepted.close()

        echoing = ensureDeferred(echo())
        payload = os.urandom(1024 * 1024)
        writing = client.write(memoryview(payload))
        received = []
        total = 0
        for _ in range(100000):
            if total >= len(payload):
                break
            chunk = await client.read()
            self.assertTrue(chunk)
            received.append(chunk)
            total += len(chunk)
        await writing
        self.assertEqual(b"".join(received), payload)
        await client.closeWrite()
        self.assertEqual(await client.read(), b"")
        await echoing
        await client.close()
        self.assertIsNone(await client.closed)
        self.assertIsNone(await accepted.closed)

    async def test_peerNotReading(self) -> None:
        """
        300 KB sent while the peer does not read arrive whole once it reads;
        meanwhile the peer buffered only about its high-water mark.
        """
        client, accepted = await self.pair()
        payload = os.urandom(300 * 1000)
        writing = client.write(payload)
        for _ in range(100):
            if accepted._full:
                break
            await deferLater(globalReactor, 0.01, lambda: None)
        self.assertTrue(accepted._full)
        self.assertLess(accepted._bufSize, len(payload))
        self.assertLess(accepted._bufSize, DEFAULT_HIGH_WATER + 256 * 1024)
        received = await accepted.readExactly(len(payload))
        self.assertEqual(received, payload)
        await writing

    async def test_writesPendingAgainstSuspendedPeer(self) -> None:
        """
        256 writes of 64 KiB against a suspended peer: the later ones stay
        pending (C{bufferedAmount} grows) until the peer resumes, then all
        fire and every byte arrives.
        """
        client, accepted = await self.pair()
        accepted.suspend()
        chunk = b"w" * (64 * 1024)
        writes = [client.write(chunk) for _ in range(256)]
        await self.spin(20)
        self.assertFalse(writes[-1].called)
        self.assertGreater(client.bufferedAmount, 0)
        pendingBefore = sum(1 for d in writes if not d.called)
        self.assertGreater(pendingBefore, 100)
        accepted.resume()
        total = 0
        for _ in range(100000):
            if total >= 256 * len(chunk):
                break
            data = await accepted.read()
            self.assertTrue(data)
            self.assertEqual(data.count(b"w"), len(data))
            total += len(data)
        self.assertEqual(total, 256 * len(chunk))
        for d in writes:
            await d
        self.assertEqual(client.bufferedAmount, 0)

    async def test_writeBackpressureFromFirstQueuedWrite(self) -> None:
        """
        On Twisted's TCP transport the socket registers as the transport's
        producer only once a write has to be queued; a first write that
        leaves more than the transport's buffer size queued waits for the
        drain all the same, and every byte arrives.
        """
        client, accepted = await self.pair()
        transport = client.transport
        self.assertIsNone(transport.producer)
        self.assertTrue(client.write(b"small").called)
        self.assertEqual(await accepted.readExactly(5), b"small")
        self.assertIsNone(transport.producer)
        accepted.suspend()
        payload = os.urandom(16 * 1024 * 1024)
        writing = client.write(payload)
        self.assertIs(transport.producer, client._protocol)
        self.assertFalse(writing.called)
        accepted.resume()
        self.assertEqual(await accepted.readExactly(len(payload)), payload)
        await writing
        await client.close()
        self.assertIsNone(transport.producer)

    async def test_counters(self) -> None:
        """
        Over real TCP, C{bytesOut} of one end (sent at once or queued) is
        C{bytesIn} of the other, and both ends know when they opened.
        """
        client, accepted = await self.pair()
        payload = os.urandom(300 * 1024)
        writing = client.write(b"hello")
        writing = client.write(payload)
        self.assertEqual(
            await accepted.readExactly(5 + len(payload)), b"hello" + payload
        )
        await writing
        self.assertEqual(client.bytesOut, 5 + len(payload))
        self.assertEqual(accepted.bytesIn, client.bytesOut)
        self.assertEqual((client.bytesIn, accepted.bytesOut), (0, 0))
        self.assertIsInstance(client.openedAt, float)
        self.assertIsInstance(accepted.openedAt, float)
        await client.close()

    async def test_writeSendsAtOnce(self) -> None:
        """
        On Twisted's TCP transport, a write with nothing queued before it is
        sent during the call (no wait for the reactor to poll for
        writability); a later write still keeps the order.
        """
        client, accepted = await self.pair()
        self.assertTrue(client.transport.getTcpNoDelay())
        self.assertTrue(accepted.transport.getTcpNoDelay())
        self.assertTrue(client._direct)
        d = client.write(b"at once")
        self.assertTrue(d.called)
        transport = client.transport
        self.assertEqual((transport._tempDataLen, transport.dataBuffer), (0, b""))
        client.write(b", then more")
        self.assertEqual(await accepted.readExactly(18), b"at once, then more")

    async def test_halfClose(self) -> None:
        """
        A peer's FIN ends our reading only: we read EOF, can still write,
        and the peer reads what we wrote after its FIN.
        """
        client, accepted = await self.pair()
        await client.write(b"request")
        await client.closeWrite()
        self.assertEqual(await accepted.readExactly(7), b"request")
        self.assertEqual(await accepted.read(), b"")
        self.assertEqual(accepted.readyState, "open")
        await accepted.write(b"response after FIN")
        self.assertEqual(await client.readExactly(18), b"response after FIN")
        await accepted.close()
        self.assertEqual(await client.read(), b"")
        await client.closed
        await accepted.closed
        self.assertEqual(client.readyState, "closed")

    async def test_eof(self) -> None:
        """
        Reads at the end of the stream give C{b""}, every time.
        """
        client, accepted = await self.pair()
        await accepted.close()
        for _ in range(3):
            self.assertEqual(await client.read(), b"")
        # After the peer's FIN, with nothing left to send, the close is done
        # at once.
        closing = client.close()
        self.assertTrue(closing.called)
        await closing
        self.assertIsNone(await client.closed)

    async def test_resetAfterCloseImmediately(self) -> None:
        """
        C{closeImmediately()} aborts: the peer's socket ends (with an error or
        EOF), and the local C{closed} fires with L{None}.
        """
        client, accepted = await self.pair()
        client.closeImmediately()
        self.assertIsNone(await client.closed)
        try:
            data = await accepted.read()
        except ConnectionLost:
            data = b""
        self.assertEqual(data, b"")


class StreamPropertyTests(SynchronousTestCase):
    """
    Property tests: whatever the chunking of the input and the mix of
    C{read}, C{readExactly} and C{readUntil}, the bytes come out whole and in
    order, and reading is paused exactly while the buffer is full.
    """

    @settings(max_examples=300, deadline=None)
    @given(
        data=st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b"\n")),
        cuts=st.lists(st.integers(0, 200), max_size=20),
        ops=st.lists(
            st.one_of(
                st.just(("read", 0)),
                st.tuples(st.just("exactly"), st.integers(0, 40)),
                st.tuples(st.just("until"), st.integers(1, 50)),
            ),
            max_size=30,
        ),
        highWater=st.integers(1, 64),
    )
    def test_streamIntact(
        self,
        data: bytes,
        cuts: list[int],
        ops: list[tuple[str, int]],
        highWater: int,
    ) -> None:
        """
        The concatenation of everything read is the input.
        """
        sock, protocol, transport = connected(highWater=highWater)
        bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
        chunks = [
            data[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a
        ]
        out: list[bytes] = []
        ended = False

        def check() -> None:
            pieces = sock._buf or []
            self.assertEqual(
                sock._bufSize, sum(len(p) for p in pieces) - sock._bufOffset
            )
            self.assertEqual(sock._full, sock._bufSize >= highWater)
            self.assertEqual(transport.producerState == "paused", sock._full)

        for kind, arg in ops:
            if kind == "read":
                d = sock.read()
            elif kind == "exactly":
                d = sock.readExactly(arg)
            else:
                d = sock.readUntil(b"\n", limit=arg)
            while not d.called and chunks:
                protocol.dataReceived(chunks.pop(0))
            if not d.called:
                ended = True
                protocol.connectionLost(Failure(ConnectionDone()))
            failures: list[Failure] = []
            d.addErrback(failures.append)
            if failures:
                error = failures[0].value
                if isinstance(error, IncompleteReadError):
                    out.append(error.partial)
                else:
                    self.assertIsInstance(error, LimitOverrunError)
            else:
                out.append(self.successResultOf(d))
            if not ended:
                check()
        for chunk in chunks:
            protocol.dataReceived(chunk)
        if not ended:
            protocol.connectionLost(Failure(ConnectionDone()))
        for _ in range(3):
            out.append(self.successResultOf(sock.read()))
        self.assertEqual(b"".join(out), data)

    @settings(max_examples=200, deadline=None)
    @given(
        writes=st.lists(
            st.tuples(
                st.binary(max_size=40), st.booleans(), st.booleans(), st.booleans()
            ),
            max_size=30,
        ),
        bufferSize=st.integers(1, 80),
        connectAfter=st.integers(0, 30),
    )
    def test_writesInOrder(
        self,
        writes: list[tuple[bytes, bool, bool, bool]],
        bufferSize: int,
        connectAfter: int,
    ) -> None:
        """
        Whatever the transport's backpressure, when the connection opens and
        whether writes are made from the callbacks of earlier writes, the
        bytes arrive in the order of the C{write()} calls, every write
        Deferred fires once the transport drained, and C{close()} comes after
        the last byte.
        """
        sock, protocol = connecting()
        transport = FakeTCPTransport(bufferSize)
        received: list[bytes] = []
        expected: list[bytes] = []
        deferreds: list[Deferred[None]] = []

        def doWrite(data: bytes, asBytearray: bool) -> None:
            payload: bytes | bytearray = bytearray(data) if asBytearray else data
            expected.append(data)
            deferreds.append(sock.write(payload, 0, len(data)))
            if asBytearray:
                payload[:] = b"\xff" * len(payload)  # type: ignore[index]

        for index, (data, asBytearray, drain, later) in enumerate(writes):
            if index == connectAfter:
                protocol.makeConnection(transport)
            if later and deferreds and not deferreds[-1].called:
                deferreds[-1].addCallback(
                    lambda _, data=data, b=asBytearray: doWrite(data, b)
                )
            else:
                doWrite(data, asBytearray)
            if drain and sock.transport is not None:
                received.append(transport.drain())
        if sock.transport is None:
            protocol.makeConnection(transport)
        for _ in range(2 * len(writes) + 2):
            if all(d.called for d in deferreds) and len(deferreds) == len(writes):
                break
            received.append(transport.drain())
        closing = sock.close()
        for _ in range(len(writes) + 2):
            received.append(transport.drain())
        self.assertEqual(len(deferreds), len(writes))
        self.assertEqual(b"".join(received), b"".join(expected))
        for d in deferreds:
            self.assertTrue(d.called)
        self.assertEqual(sock.bufferedAmount, 0)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.log[-2:], ["unregisterProducer", "loseConnection"])
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(closing)


class CancellationTests(SynchronousTestCase):
    """
    Cancelling a Deferred the socket returned (for example with
    C{addTimeout}) only stops waiting: no data is lost and the socket goes on.
    """

    def test_cancelledReadLosesNothing(self) -> None:
        """
        A cancelled read does not take the next chunk: the next live read, or
        the buffer, does.
        """
        sock, protocol, _ = connected()
        cancelled = sock.read()
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        protocol.dataReceived(b"kept")
        self.assertEqual(self.successResultOf(sock.read()), b"kept")
        first, second = sock.read(), sock.read()
        first.cancel()
        self.failureResultOf(first, CancelledError)
        protocol.dataReceived(b"for the second")
        self.assertEqual(self.successResultOf(second), b"for the second")

    def test_cancelledReadAtEnd(self) -> None:
        """
        The end of the stream after a cancelled read settles the others.
        """
        sock, protocol, _ = connected()
        first, second = sock.read(), sock.read()
        first.cancel()
        self.failureResultOf(first, CancelledError)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(second, ConnectionLost)

    def test_cancelledReadExactly(self) -> None:
        """
        A cancelled C{readExactly} puts back what it had gathered.
        """
        sock, protocol, _ = connected()
        d = sock.readExactly(10)
        protocol.dataReceived(b"abc")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        protocol.dataReceived(b"def")
        self.assertEqual(self.successResultOf(sock.read()), b"abcdef")

    def test_cancelledOutcomes(self) -> None:
        """
        Cancelled C{opened}/C{closed} waiters are skipped when the socket
        opens and closes.
        """
        sock, protocol = connecting()
        opened, closed = sock.opened, sock.closed
        opened.cancel()
        closed.cancel()
        protocol.makeConnection(FakeTCPTransport())
        protocol.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(opened, CancelledError)
        self.failureResultOf(closed, CancelledError)
        self.successResultOf(sock.closed)

    def test_cancelledWriteStillSent(self) -> None:
        """
        A cancelled write Deferred does not unsend its data.
        """
        sock, _, transport = connected(bufferSize=2)
        waiting = sock.write(b"abc")
        held = sock.write(b"def")
        waiting.cancel()
        held.cancel()
        self.assertEqual(transport.drain(), b"abc")
        self.assertEqual(transport.drain(), b"def")
        self.failureResultOf(waiting, CancelledError)
        self.failureResultOf(held, CancelledError)

    def test_closeWriteFailsWhenConnectionDies(self) -> None:
        """
        A C{closeWrite()} waiting for held writes fails with the error that
        ended the connection.
        """
        sock, protocol, _ = connected(bufferSize=1)
        sock.write(b"ab")
        shutting = sock.closeWrite()
        protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(shutting, ConnectionLost)

    def test_closeAfterFailedCloseWrite(self) -> None:
        """
        After C{closeWrite()} failed on a transport without half-close,
        C{close()} still closes.
        """
        sock, protocol = connecting()
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.failureResultOf(sock.closeWrite(), ValueError)
        d = sock.close()
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)
