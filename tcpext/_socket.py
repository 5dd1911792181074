# -*- test-case-name: tests.test_socket,tests.test_tls -*-
"""
L{TCPClientSocket}: a Deferred-based TCP socket over any Twisted transport.

One socket is two small objects: the L{TCPClientSocket} the user holds and
its L{SocketProtocol}, the L{IProtocol} Twisted drives.  The protocol is also
the write-backpressure producer registered with the transport (the socket's
own L{IPushProducer} role is the read side).

Reading: bytes that arrive while no C{read()} is pending are kept in a list
and joined once when read.  Past a high-water mark the transport is paused
until the buffer is drained.  Pending reads are served first come, first
served, directly from C{dataReceived} (no buffering when someone waits).

Writing: while the socket is open and the transport has not paused us, a
write goes straight to the transport and its Deferred fires at once.  While
connecting, while the transport has paused us, or while earlier writes are
held, writes (and the actions that must come after them: close, half-close,
STARTTLS) wait in order in a queue; that queue's size is C{bufferedAmount}.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from socket import IPPROTO_TCP, TCP_NODELAY
from typing import TYPE_CHECKING, Any, Union

from twisted.internet import tcp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.error import TimeoutError as UserTimeoutError
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProducer,
    IProtocol,
    IPushProducer,
    ISSLTransport,
    ITLSTransport,
)
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpext._errors import IncompleteReadError, LimitOverrunError, SocketClosed

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, ITransport

__all__ = ["DEFAULT_HIGH_WATER", "ReadyState", "SocketProtocol", "TCPClientSocket"]

#: The default read high-water mark, in bytes.
DEFAULT_HIGH_WATER = 64 * 1024

#: The default C{limit} of L{TCPClientSocket.readUntil}.
DEFAULT_LINE_LIMIT = 64 * 1024


class ReadyState(str, enum.Enum):
    """
    The state of a L{TCPClientSocket}: a C{str}, so C{sock.readyState ==
    "open"} works.
    """

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"

    def __str__(self) -> str:
        """
        The plain state name.
        """
        return self.value


_CONNECTING = ReadyState.CONNECTING
_OPEN = ReadyState.OPEN
_CLOSING = ReadyState.CLOSING
_CLOSED = ReadyState.CLOSED

_CONNECTION_DONE = Failure(ConnectionDone())

#: Transports whose C{writeSomeData} tcpext may call when their buffer is
#: empty (Twisted's TCP connections on the POSIX reactors).
_DIRECT_TRANSPORTS = (tcp.Client, tcp.Server)

_Outcome = Union[None, bool, Failure]
_Held = tuple[Union[bytes, None], Union[Deferred[None], Callable[[], None], None]]


def _silence(d: Deferred[Any], failure: Failure) -> None:
    """
    Keep C{d} from logging "Unhandled error in Deferred" if nobody consumes
    C{failure}: used for outcomes that are also reported elsewhere (C{closed},
    dropped writes).
    """
    info = d._debugInfo
    if info is not None and d.result is failure:
        info.failResult = None


def _quietFail(failure: Failure) -> Deferred[Any]:
    """
    A new Deferred failed with C{failure} that does not log it if unused.
    """
    d: Deferred[Any] = Deferred()
    d.errback(failure)
    _silence(d, failure)
    return d


def _settle(waiters: list[Deferred[Any]] | None, outcome: Failure | None) -> None:
    """
    Fire every waiter with L{None} or fail it quietly with C{outcome}.
    """
    if not waiters:
        return
    for d in waiters:
        if d.called:
            # cancelled by its user (for example with addTimeout)
            continue
        if outcome is None:
            d.callback(None)
        else:
            d.errback(outcome)
            _silence(d, outcome)


def _observe(
    outcome: _Outcome,
    waiters: list[Deferred[Any]] | None,
    waiter: type[Deferred[Any]] = Deferred,
    value: object = None,
) -> tuple[Deferred[Any], list[Deferred[Any]] | None]:
    """
    A new Deferred for a many-times observable outcome.

    @param waiter: The class of the Deferred to queue while the outcome is
        not known yet.
    @param value: What the Deferred fires with on success (the queued one:
        whatever its settler gives it).

    @return: The Deferred and the (possibly new) waiter list.
    """
    if outcome is None:
        d: Deferred[Any] = waiter()
        if waiters is None:
            waiters = [d]
        else:
            waiters.append(d)
        return d, waiters
    if outcome is True:
        return succeed(value), waiters
    assert isinstance(outcome, Failure)
    return _quietFail(outcome), waiters


def _overrun(separator: bytes, limit: int, consumed: int) -> LimitOverrunError:
    """
    The error of a C{readUntil} that found no separator within its limit.
    """
    return LimitOverrunError(
        f"no separator {separator!r} within the limit of {limit} bytes", consumed
    )


class _IterationRead(Deferred[bytes]):
    """
    A read made by C{async for}: it fails with L{StopAsyncIteration} at the
    end of the stream instead of firing with C{b""}.
    """


class _SocketWaiter(Deferred[Any]):
    """
    A waiter for C{opened} that fires with the socket itself rather than
    L{None}: the Deferred of L{tcpext.endpoints.connectSocket}.
    """


def _endOfStream(d: Deferred[bytes]) -> None:
    """
    Settle a pending read at the end of the stream.
    """
    if d.called:
        return
    if type(d) is _IterationRead:
        d.errback(StopAsyncIteration())
    else:
        d.callback(b"")


def _toBytes(data: object, byteOffset: object, byteLength: object) -> bytes:
    """
    The bytes C{write()} should send: a slice of C{data}, copied when C{data}
    is mutable.

    @raise TypeError: If C{data} is not bytes-like or an offset is no int.
    @raise ValueError: If the offset or length lies outside the buffer.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"write() takes bytes, bytearray or memoryview, not {type(data).__name__}"
        )
    if type(byteOffset) is not int:
        raise TypeError(f"byteOffset must be an int, not {type(byteOffset).__name__}")
    if byteLength is not None and type(byteLength) is not int:
        raise TypeError(
            f"byteLength must be an int or None, not {type(byteLength).__name__}"
        )
    view = memoryview(data)
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        try:
            view = view.cast("B")
        except TypeError as e:
            raise TypeError(f"write() needs a contiguous buffer: {e}") from None
    size = view.nbytes
    if byteOffset < 0 or byteOffset > size:
        raise ValueError(
            f"byteOffset {byteOffset} is outside the buffer of {size} bytes"
        )
    if byteLength is None:
        end = size
    else:
        if byteLength < 0:
            raise ValueError(f"byteLength must not be negative, got {byteLength}")
        end = byteOffset + byteLength
        if end > size:
            raise ValueError(
                f"byteOffset {byteOffset} + byteLength {byteLength} is past the "
                f"end of the buffer of {size} bytes"
            )
    if type(data) is bytes and byteOffset == 0 and end == size:
        return data
    return view[byteOffset:end].tobytes()


def _tlsLayer(transport: object) -> Any:
    """
    The TLS protocol layer under C{transport} if TLS is already in use on it
    (a TLS endpoint or a TLS listening port), else L{None}.
    """
    if isinstance(transport, TLSMemoryBIOProtocol):
        return transport
    if ISSLTransport.providedBy(transport):
        layer = getattr(transport, "protocol", None)
        if isinstance(layer, TLSMemoryBIOProtocol):
            return layer
        return transport
    return None


@implementer(IProtocol, IHalfCloseableProtocol, IHandshakeListener, IPushProducer)
class SocketProtocol:
    """
    The L{IProtocol} of one L{TCPClientSocket}.  Build sockets with the
    factories of L{tcpext.endpoints} rather than by hand.

    It is also the push producer that tcpext registers with the transport to
    learn when the transport's write buffer is full (C{pauseProducing}) and
    drained (C{resumeProducing}).

    @ivar socket: The L{TCPClientSocket} this protocol feeds.
    @ivar transport: The transport once connected, else L{None}.
    @ivar factory: The server factory that accepted this connection, or
        L{None} for sockets that dialed out.
    """

    __slots__ = (
        "socket",
        "transport",
        "factory",
        "connected",
        "batching",
        "__weakref__",
    )

    def __init__(self, socket: TCPClientSocket, factory: Any = None) -> None:
        """
        @param socket: The socket this protocol feeds.
        @param factory: The accepting server factory, if any.
        """
        self.socket = socket
        self.transport: Any = None
        self.factory = factory
        self.connected = 0
        # True while the TLS layer decrypts one network read: its records
        # are buffered and a pending read gets them together afterwards
        self.batching = False

    def logPrefix(self) -> str:
        """
        The log prefix of the connection.
        """
        return "tcpext"

    def makeConnection(self, transport: ITransport) -> None:
        """
        Connect to C{transport} and tell the socket.
        """
        self.connected = 1
        self.transport = transport
        self.socket._connectionMade(transport)

    def connectionMade(self) -> None:
        """
        The connection is up: the socket opens (or waits for its TLS
        handshake).
        """
        self.socket._connectionMade(self.transport)

    def dataReceived(self, data: bytes) -> None:
        """
        Hand C{data} to the oldest pending C{read()}, or buffer it.
        """
        sock = self.socket
        readers = sock._readers
        if readers and not self.batching:
            d = readers.pop(0)
            if not d.called:
                d.callback(data)
                return
            if sock._giveToReader(data):
                return
        if sock._state is _CLOSED:
            return
        if sock._losing and sock._bufSize >= sock._highWater:
            # Closing, and the buffer is full: the transport reads on only so
            # that the close completes, so what comes past the mark is dropped
            # (as the kernel drops unread bytes when a TCP socket closes).
            return
        buf = sock._buf
        if buf is None:
            sock._buf = [data]
        else:
            buf.append(data)
        size = sock._bufSize + len(data)
        sock._bufSize = size
        if size >= sock._highWater and not sock._full and not readers:
            # (with a read pending, a batch of TLS records goes to it whole
            # once the network read is decrypted: no need to pause for it)
            sock._full = True
            sock._updateReading()

    def readConnectionLost(self) -> None:
        """
        The peer sent a FIN: reading ends, writing may go on.
        """
        self.socket._readEnded()

    def writeConnectionLost(self) -> None:
        """
        Our FIN was sent.
        """
        self.socket._writeEnded()

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        """
        The connection is gone.
        """
        self.connected = 0
        self.socket._connectionLost(reason)

    def handshakeCompleted(self) -> None:
        """
        A TLS handshake completed.
        """
        self.socket._handshakeCompleted()

    # the write-backpressure producer, driven by the transport

    def pauseProducing(self) -> None:
        """
        The transport's write buffer is full: hold writes.
        """
        sock = self.socket
        sock._writePaused = True
        producer = sock._producer
        if producer is not None and sock._streaming:
            producer.pauseProducing()

    def resumeProducing(self) -> None:
        """
        The transport's write buffer has drained: send held writes.
        """
        self.socket._writeResumed()

    def stopProducing(self) -> None:
        """
        The transport is going away; C{connectionLost} tells the socket.
        """


@implementer(IPushProducer, IConsumer)
class TCPClientSocket:
    """
    A TCP connection with a Deferred-based API (the libdweb C{TCPSocket}).

    Obtain one from L{tcpext.endpoints.connectSocket} or
    L{tcpext.endpoints.startSocket}, from a L{tcpext.TCPServerSocket}'s
    C{connections}, or from C{browser.TCPSocket.connect}.

    @ivar host: The host as requested (accepted sockets: the peer's address).
    @ivar port: The port as requested (accepted sockets: the peer's port).
    """

    __slots__ = (
        "host",
        "port",
        "_state",
        "_protocol",
        "_transport",
        "_ssl",
        "_connecting",
        # outcomes
        "_opened",
        "_openedWaiters",
        "_closed",
        "_closedWaiters",
        "_closeWaiters",
        "_tlsWaiter",
        # read side
        "_buf",
        "_bufOffset",
        "_bufSize",
        "_readers",
        "_readEnd",
        "_highWater",
        "_full",
        "_suspended",
        "_readPaused",
        "_losing",
        # write side
        "_held",
        "_heldSize",
        "_drainWaiters",
        "_writePaused",
        "_writeEnd",
        "_writeShut",
        "_producer",
        "_streaming",
        "_pulling",
        "_options",
        "_direct",
        "_watching",
        "_shutWaiter",
        "_timer",
        "__weakref__",
    )

    #: Seconds a TLS C{close()} waits for the peer's close-notify before it
    #: aborts the connection (C{closed} then fails with
    #: L{twisted.internet.error.TimeoutError});
    #: L{None}: wait as long as the peer takes.
    tlsCloseTimeout: float | None = 30.0

    #: Seconds a TLS handshake (TLS from the start, or C{upgradeToSecure()})
    #: may take before the connection is aborted (C{opened} or the upgrade's
    #: Deferred, and C{closed}, then fail with
    #: L{twisted.internet.error.TimeoutError}); L{None}: no limit.
    tlsHandshakeTimeout: float | None = 60.0

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        highWater: int = DEFAULT_HIGH_WATER,
        factory: Any = None,
    ) -> None:
        """
        Make a socket in C{"connecting"} state; a transport connects it
        through its L{SocketProtocol}.

        @param host: The host as requested.
        @param port: The port as requested.
        @param highWater: The read buffer's high-water mark, in bytes.
        @param factory: Internal: the L{tcpext.endpoints.ServerSocketFactory}
            that accepted this connection (it is told when the socket opens
            and ends).  L{None} for sockets that dial out.
        """
        if type(highWater) is not int or highWater < 1:
            raise ValueError(f"highWater must be a positive int, got {highWater!r}")
        self.host = host
        self.port = port
        self._state = _CONNECTING
        self._protocol = SocketProtocol(self, factory)
        self._transport: Any = None
        self._ssl = False
        # the connection attempt, to cancel: the endpoint's Deferred, or the
        # IConnector when startSocket called connectTCP itself
        self._connecting: Any = None
        self._opened: _Outcome = None
        self._openedWaiters: list[Deferred[None]] | None = None
        self._closed: _Outcome = None
        self._closedWaiters: list[Deferred[None]] | None = None
        self._closeWaiters: list[Deferred[None]] | None = None
        self._tlsWaiter: Deferred[None] | None = None
        self._buf: list[bytes] | None = None
        # bytes of _buf[0] already consumed (by readExactly/readUntil)
        self._bufOffset = 0
        self._bufSize = 0
        # pending reads, oldest first (a list: smaller than a deque when idle)
        self._readers: list[Deferred[bytes]] | None = None
        # None while reading; True at a clean end; a Failure at an error end.
        self._readEnd: bool | Failure | None = None
        self._highWater = highWater
        self._full = False
        self._suspended = False
        self._readPaused = False
        # True once the transport was asked to close: reading must go on (a
        # TLS close waits for the peer's close-notify)
        self._losing = False
        self._held: deque[_Held] | None = None
        self._heldSize = 0
        self._drainWaiters: list[Deferred[None]] | None = None
        self._writePaused = False
        # None while writable; else the Failure that later writes get (or
        # the message of the SocketClosed to make when one does).
        self._writeEnd: Failure | str | None = None
        self._writeShut = False
        self._producer: Any = None
        self._streaming = False
        self._pulling = 0
        self._options: dict[str, bool] | None = None
        # True on a plain Twisted TCP transport: write() may send at once
        self._direct = False
        # True while our protocol is the transport's registered producer (on
        # a plain TCP transport only from the first write the transport had
        # to queue: most short-lived sockets never need it)
        self._watching = False
        # closeWrite()'s Deferred while its FIN waits for queued writes
        self._shutWaiter: Deferred[None] | None = None
        # the timer that ends a TLS handshake or a TLS close the peer does not
        # answer (never both: a close waits for the handshake to finish)
        self._timer: Any = None

    def __repr__(self) -> str:
        """
        Show where the socket goes and its state.
        """
        return f"<TCPClientSocket {self.host}:{self.port} {self._state.value}>"

    # -- public attributes

    @property
    def readyState(self) -> ReadyState:
        """
        C{"connecting"}, C{"open"}, C{"closing"} or C{"closed"}.
        """
        return self._state

    @property
    def ssl(self) -> bool:
        """
        L{True} once TLS is in use (its handshake completed).
        """
        return self._ssl

    @property
    def bufferedAmount(self) -> int:
        """
        Bytes accepted by C{write()} that were not yet handed to the transport.
        """
        return self._heldSize

    def _address(self, peer: bool) -> Any:
        """
        The transport's peer or host address, if connected.
        """
        transport = self._transport
        if transport is None or self._opened is not True:
            return None
        return transport.getPeer() if peer else transport.getHost()

    @property
    def remoteAddress(self) -> str | None:
        """
        The peer's IP address (or UNIX socket path) once open, else L{None}.
        """
        return _hostOf(self._address(True))

    @property
    def remotePort(self) -> int | None:
        """
        The peer's port once open, else L{None}.
        """
        return getattr(self._address(True), "port", None)

    @property
    def localAddress(self) -> str | None:
        """
        The local IP address (or UNIX socket path) once open, else L{None}.
        """
        return _hostOf(self._address(False))

    @property
    def localPort(self) -> int | None:
        """
        The local port once open, else L{None}.
        """
        return getattr(self._address(False), "port", None)

    @property
    def transport(self) -> Any:
        """
        The Twisted transport, once connected (L{None} before).
        """
        return self._transport

    @property
    def opened(self) -> Deferred[None]:
        """
        A new Deferred that fires with L{None} once the socket is open, or
        fails with the error that kept it from opening.
        """
        d, self._openedWaiters = _observe(self._opened, self._openedWaiters)
        return d

    @property
    def closed(self) -> Deferred[None]:
        """
        A new Deferred that fires with L{None} once the socket closed cleanly,
        or fails with the error that ended it.
        """
        d, self._closedWaiters = _observe(self._closed, self._closedWaiters)
        return d

    def _whenOpen(self) -> Deferred[TCPClientSocket]:
        """
        A Deferred that fires with this socket once it is open, or fails as
        C{opened} does (without logging the failure if it is not consumed).
        """
        d, self._openedWaiters = _observe(
            self._opened, self._openedWaiters, _SocketWaiter, self
        )
        return d

    # -- reading

    def read(self) -> Deferred[bytes]:
        """
        Read the next chunk: everything buffered, else the next bytes to
        arrive.

        @return: A Deferred that fires with non-empty bytes; with C{b""} at
            the end of the stream (and for every read after); or fails with
            the error that ended the socket once the buffer is empty.
        """
        if self._buf:
            return succeed(self._takeAll())
        end = self._readEnd
        if end is None:
            return self._waitFor(Deferred())
        if end is True:
            return succeed(b"")
        assert isinstance(end, Failure)
        return fail(end)

    def _waitFor(self, d: Deferred[bytes]) -> Deferred[bytes]:
        """
        Queue C{d} as a pending read, fired by the next bytes to arrive.
        """
        readers = self._readers
        if readers is None:
            self._readers = [d]
        else:
            readers.append(d)
        return d

    def _takeAll(self) -> bytes:
        """
        Take everything buffered (the buffer is not empty).
        """
        buf = self._buf
        assert buf
        if self._bufOffset:
            data = b"".join([memoryview(buf[0])[self._bufOffset :], *buf[1:]])
            self._bufOffset = 0
        else:
            data = buf[0] if len(buf) == 1 else b"".join(buf)
        self._buf = None
        self._bufSize = 0
        if self._full:
            self._full = False
            self._updateReading()
        return data

    def _deliver(self, readers: list[Deferred[bytes]]) -> None:
        """
        Give what is buffered to the oldest of C{readers}, the pending reads
        (after a batch of TLS records): no read waits while bytes are
        buffered.
        """
        while readers and self._buf:
            d = readers.pop(0)
            if not d.called:  # else cancelled by its user
                d.callback(self._takeAll())

    def _batchRecords(self, layer: Any) -> None:
        """
        Make C{layer}, the TLS protocol under this socket, hand over the
        records of one network read as one chunk: a 64 KiB read carries
        four 16 KiB records, which would otherwise wake a pending C{read()}
        four times.
        """
        if not isinstance(layer, TLSMemoryBIOProtocol):
            return
        receive = layer.dataReceived
        protocol = self._protocol

        def dataReceived(data: bytes) -> None:
            if protocol.batching:
                receive(data)
                return
            protocol.batching = True
            try:
                receive(data)
            finally:
                protocol.batching = False
                if self._readers and self._buf:
                    self._deliver(self._readers)

        layer.dataReceived = dataReceived  # type: ignore[method-assign]

    def _giveToReader(self, data: bytes) -> bool:
        """
        Hand C{data} to the oldest pending read that was not cancelled.

        @return: Whether one took it.
        """
        readers = self._readers
        while readers:
            d = readers.pop(0)
            if not d.called:
                d.callback(data)
                return True
        return False

    # readExactly / readUntil: when the buffer holds what they need they take
    # it in place (an offset into the first chunk), so many small records in
    # one network read cost one copy each; otherwise they take the buffer and
    # read() on until they have it, and put back what they did not use.

    def _checkFull(self) -> None:
        """
        Pause or resume reading after the buffer's size changed.
        """
        full = self._bufSize >= self._highWater
        if full is not self._full:
            self._full = full
            self._updateReading()

    def _consolidate(self) -> bytes:
        """
        Join the buffer into one chunk (dropping the consumed prefix) and
        return it.
        """
        buf = self._buf
        assert buf
        if len(buf) > 1 or self._bufOffset:
            joined = b"".join([memoryview(buf[0])[self._bufOffset :], *buf[1:]])
            buf[:] = [joined]
            self._bufOffset = 0
        return buf[0]

    def _consume(self, first: bytes, end: int) -> bytes:
        """
        Take C{first[offset:end]}, where C{first} is the buffer's first chunk.
        """
        offset = self._bufOffset
        data = first if offset == 0 and end == len(first) else first[offset:end]
        if end >= len(first):
            buf = self._buf
            assert buf
            del buf[0]
            if not buf:
                self._buf = None
            self._bufOffset = 0
        else:
            self._bufOffset = end
        self._bufSize -= end - offset
        self._checkFull()
        return data

    def _takeRest(self) -> bytes:
        """
        Take everything buffered.
        """
        if not self._buf:
            return b""
        return self._consume(self._consolidate(), self._bufSize)

    def _prepend(self, data: bytes) -> None:
        """
        Put C{data} back in front of the buffer (or give it to a pending
        read).
        """
        if not data:
            return
        if self._readers and self._giveToReader(data):
            return
        buf = self._buf
        if buf is None:
            self._buf = [data]
        else:
            if self._bufOffset:
                buf[0] = buf[0][self._bufOffset :]
                self._bufOffset = 0
            buf.insert(0, data)
        self._bufSize += len(data)
        self._checkFull()

    def readExactly(self, n: int) -> Deferred[bytes]:
        """
        Read exactly C{n} bytes.

        @return: A Deferred that fires with C{n} bytes, or fails with
            L{IncompleteReadError} (its C{partial} holds what came) if the
            stream ends first, or with the error that ended the socket (the
            bytes read so far stay buffered).
        """
        if type(n) is not int:
            return fail(
                TypeError(f"readExactly() needs an int, not {type(n).__name__}")
            )
        if n < 0:
            return fail(ValueError(f"readExactly() needs n >= 0, got {n}"))
        if self._bufSize >= n:
            if n == 0:
                return succeed(b"")
            buf = self._buf
            assert buf
            first = buf[0]
            if len(first) - self._bufOffset < n:
                first = self._consolidate()
            return succeed(self._consume(first, self._bufOffset + n))
        return Deferred.fromCoroutine(self._readExactly(n))

    async def _readExactly(self, n: int) -> bytes:
        """
        Gather C{n} bytes with C{read()}.
        """
        first = self._takeRest()
        chunks = [first] if first else []
        got = len(first)
        while got < n:
            try:
                chunk = await self.read()
            except BaseException:
                self._prepend(b"".join(chunks))
                raise
            if not chunk:
                raise IncompleteReadError(b"".join(chunks), n)
            chunks.append(chunk)
            got += len(chunk)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if got > n:
            self._prepend(data[n:])
            data = data[:n]
        return data

    def readUntil(
        self, separator: bytes = b"\n", limit: int = DEFAULT_LINE_LIMIT
    ) -> Deferred[bytes]:
        """
        Read up to and including C{separator}.

        @param separator: The non-empty bytes to look for.
        @param limit: The longest result allowed, separator included.

        @return: A Deferred that fires with the bytes up to and including the
            separator; or fails with L{LimitOverrunError} if C{limit} bytes
            come without it (they stay buffered), with L{IncompleteReadError}
            if the stream ends first (its C{partial} holds the bytes), or
            with the error that ended the socket (the bytes stay buffered).
        """
        if not isinstance(separator, bytes):
            return fail(
                TypeError(
                    f"readUntil() separator must be bytes, not {type(separator).__name__}"
                )
            )
        if not separator:
            return fail(ValueError("readUntil() separator must not be empty"))
        if type(limit) is not int:
            return fail(TypeError(f"limit must be an int, not {type(limit).__name__}"))
        if limit < len(separator):
            return fail(
                ValueError(f"limit {limit} is shorter than the separator {separator!r}")
            )
        if self._buf:
            first = self._buf[0]
            if len(self._buf) > 1 and first.find(separator, self._bufOffset) < 0:
                first = self._consolidate()
            offset = self._bufOffset
            index = first.find(separator, offset, offset + limit)
            if index >= 0:
                return succeed(self._consume(first, index + len(separator)))
            if self._bufSize >= limit:
                return fail(_overrun(separator, limit, self._bufSize))
        return Deferred.fromCoroutine(self._readUntil(separator, limit))

    async def _readUntil(self, separator: bytes, limit: int) -> bytes:
        """
        Gather bytes with C{read()} until the separator.
        """
        acc = bytearray(self._takeRest())
        scanned = 0
        while True:
            start = max(0, scanned - len(separator) + 1)
            index = acc.find(separator, start, limit)
            if index >= 0:
                end = index + len(separator)
                self._prepend(bytes(acc[end:]))
                return bytes(acc[:end])
            if len(acc) >= limit:
                self._prepend(bytes(acc))
                raise _overrun(separator, limit, len(acc))
            scanned = len(acc)
            try:
                chunk = await self.read()
            except BaseException:
                self._prepend(bytes(acc))
                raise
            if not chunk:
                raise IncompleteReadError(bytes(acc), None)
            acc += chunk

    def __aiter__(self) -> TCPClientSocket:
        """
        The socket iterates over its chunks until the end of the stream.
        """
        return self

    def __anext__(self) -> Deferred[bytes]:
        """
        The next chunk, or L{StopAsyncIteration} at the end of the stream.

        (A L{Deferred} rather than a coroutine: no coroutine per chunk.)
        """
        if self._buf:
            return self.read()
        end = self._readEnd
        if end is None:
            return self._waitFor(_IterationRead())
        if end is True:
            return fail(StopAsyncIteration())
        assert isinstance(end, Failure)
        return fail(end)

    def suspend(self) -> None:
        """
        Stop reading from the network (idempotent); bytes stay with the peer
        and the kernel.
        """
        if not self._suspended:
            self._suspended = True
            self._updateReading()

    def resume(self) -> None:
        """
        Read from the network again after L{suspend} (idempotent).
        """
        if self._suspended:
            self._suspended = False
            self._updateReading()

    def _updateReading(self) -> None:
        """
        Pause or resume the transport's reading to match C{suspend()} and the
        buffer's fill.
        """
        want = self._suspended or self._full
        if (
            want is not self._readPaused
            and not self._losing
            and self._opened is True
            and self._readEnd is None
            and self._state is not _CLOSED
            and not getattr(self._transport, "disconnecting", False)
        ):
            self._readPaused = want
            if want:
                self._transport.pauseProducing()
            else:
                self._transport.resumeProducing()

    # IPushProducer: the read side

    def pauseProducing(self) -> None:
        """
        L{IPushProducer}: same as L{suspend}.
        """
        self.suspend()

    def resumeProducing(self) -> None:
        """
        L{IPushProducer}: same as L{resume}.
        """
        self.resume()

    def stopProducing(self) -> None:
        """
        L{IPushProducer}: same as L{closeImmediately}.
        """
        self.closeImmediately()

    # -- writing

    def write(  # type: ignore[override]
        self,
        data: bytes | bytearray | memoryview,
        byteOffset: int = 0,
        byteLength: int | None = None,
    ) -> Deferred[None]:
        """
        Send C{data[byteOffset:byteOffset + byteLength]}.

        @param data: C{bytes}, C{bytearray} or C{memoryview}; mutable buffers
            are copied now, so they may be reused at once.
        @param byteOffset: Where the bytes to send start.
        @param byteLength: How many bytes to send (L{None}: to the end).

        @return: A Deferred that fires with L{None} once the data was handed
            to the transport and the transport is below its high-water mark;
            it fails with L{TypeError} or L{ValueError} for bad arguments,
            with L{SocketClosed} after C{close()}, or with the error that
            ended the connection if the data could not be sent.
        """
        if type(data) is bytes and byteOffset == 0 and byteLength is None:
            chunk = data
        else:
            try:
                chunk = _toBytes(data, byteOffset, byteLength)
            except (TypeError, ValueError):
                return fail()
        if self._writeEnd is not None:
            return fail(self._writeFailure())
        if self._held is None and not self._writePaused and self._opened is True:
            if chunk:
                transport = self._transport
                if (
                    self._direct
                    and not transport._tempDataLen
                    and not transport.dataBuffer
                    and transport.connected
                    and not transport.disconnecting
                ):
                    # Nothing is queued in the transport: send now, as asyncio
                    # does, instead of waiting for the reactor to poll for
                    # writability (saves a reactor round and its syscalls).
                    sent = transport.writeSomeData(chunk)
                    if type(sent) is not int:
                        # An error: the transport reports it on its next try.
                        transport.write(chunk)
                    elif sent < len(chunk):
                        self._queue(transport, chunk[sent:])
                else:
                    self._queue(transport, chunk)
            if self._writePaused:
                d: Deferred[None] = Deferred()
                if self._drainWaiters is None:
                    self._drainWaiters = [d]
                else:
                    self._drainWaiters.append(d)
                return d
            if self._producer is not None and not self._streaming:
                self._pull()
            return succeed(None)
        d = Deferred()
        self._hold(chunk, d)
        return d

    def _hold(self, chunk: bytes | None, what: Any) -> None:
        """
        Queue a chunk (with its Deferred) or an action after the held writes.
        """
        if self._held is None:
            self._held = deque()
        self._held.append((chunk, what))
        if chunk:
            self._heldSize += len(chunk)

    def _queue(self, transport: Any, chunk: bytes) -> None:
        """
        Hand C{chunk} to the transport to send when it can, and from then on
        learn when its buffer fills and drains.
        """
        transport.write(chunk)
        if not self._watching:
            self._watch(transport)

    def _watch(self, transport: Any) -> None:
        """
        Register our protocol as the transport's push producer, to be paused
        while the transport's write buffer is full: done once data waits in
        the transport.  If the buffer is full already, the producer starts
        paused (as if the transport had paused it on that write).
        """
        self._watching = True
        transport.registerProducer(self._protocol, True)
        if (
            self._direct
            and transport.producer is self._protocol
            and len(transport.dataBuffer) + transport._tempDataLen
            > transport.bufferSize
        ):
            transport.producerPaused = True
            self._protocol.pauseProducing()

    def _unwatch(self, transport: Any) -> None:
        """
        Unregister our protocol from the transport (if it is registered).
        """
        if self._watching:
            self._watching = False
            transport.unregisterProducer()

    def _whenWritable(self, action: Callable[[], None]) -> None:
        """
        Run C{action} after every write made so far was handed to the
        transport and the transport is not paused.
        """
        if self._held is None and not self._writePaused and self._opened is True:
            action()
        else:
            self._hold(None, action)

    def _flush(self) -> None:
        """
        Hand held writes to the transport (and run held actions) until the
        transport pauses us or the queue is empty; then fire the Deferreds
        of the writes handed over.
        """
        held = self._held
        fire: list[Deferred[None]] = []
        transport = self._transport
        while held and not self._writePaused and self._state is not _CLOSED:
            chunk, what = held.popleft()
            if chunk is None:
                if what is not None:
                    what()  # type: ignore[operator]
                continue
            self._heldSize -= len(chunk)
            if chunk:
                self._queue(transport, chunk)
            if self._writePaused:
                if self._drainWaiters is None:
                    self._drainWaiters = [what]
                else:
                    self._drainWaiters.append(what)
            else:
                fire.append(what)  # type: ignore[arg-type]
        if not held:
            self._held = None
        for d in fire:
            if not d.called:
                d.callback(None)

    def _writeResumed(self) -> None:
        """
        The transport drained its buffer: fire the writes that waited for it,
        send held ones, and let a registered producer go on.
        """
        self._writePaused = False
        waiters = self._drainWaiters
        if waiters is not None:
            self._drainWaiters = None
            for d in waiters:
                if not d.called:
                    d.callback(None)
        if self._held is not None:
            self._flush()
        self._resumeProducer()

    def _resumeProducer(self) -> None:
        """
        Let a registered producer write again if we can take its data.
        """
        producer = self._producer
        if (
            producer is None
            or self._writePaused
            or self._held is not None
            or self._opened is not True
            or self._writeEnd is not None
        ):
            return
        if self._streaming:
            producer.resumeProducing()
        else:
            self._pull()

    def _pull(self) -> None:
        """
        Ask a non-streaming producer for data while we can take it, without
        recursion (a write from inside C{resumeProducing} asks again).
        """
        if self._pulling:
            self._pulling = 2
            return
        self._pulling = 1
        try:
            for _ in range(1000000):
                producer = self._producer
                if producer is None or self._streaming:
                    break
                producer.resumeProducing()
                if (
                    self._pulling != 2
                    or self._writePaused
                    or self._held is not None
                    or self._writeEnd is not None
                ):
                    break
                self._pulling = 1
        finally:
            self._pulling = 0

    # IConsumer

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        L{IConsumer}: let C{producer} write into this socket, paused and
        resumed with the socket's write backpressure.

        @raise RuntimeError: If a producer is already registered.
        """
        if self._producer is not None:
            raise RuntimeError(
                f"a producer ({self._producer!r}) is already registered with {self!r}"
            )
        if self._writeEnd is not None:
            producer.stopProducing()
            return
        self._producer = producer
        self._streaming = bool(streaming)
        if self._streaming:
            if self._writePaused or self._held is not None or self._opened is not True:
                producer.pauseProducing()  # type: ignore[attr-defined]
        else:
            self._resumeProducer()

    def unregisterProducer(self) -> None:
        """
        L{IConsumer}: forget the registered producer.
        """
        self._producer = None
        self._streaming = False

    def _stopProducer(self) -> None:
        """
        Stop and forget the registered producer: the socket can take no more.
        """
        producer = self._producer
        if producer is not None:
            self._producer = None
            producer.stopProducing()

    # -- closing

    def close(self) -> Deferred[None]:
        """
        Send every queued write, then close (sending a FIN).

        @return: A Deferred that fires with L{None} once the socket is closed,
            whatever the outcome; C{closed} tells whether it was clean.
        """
        state = self._state
        if state is _CLOSED:
            return succeed(None)
        if state is not _CLOSING:
            self._state = _CLOSING
            if self._writeEnd is None:
                self._writeEnd = "write() after close()"
            self._whenWritable(self._loseConnection)
            if self._state is _CLOSED:
                # closed at once (the peer had closed, nothing to send)
                return succeed(None)
        d: Deferred[None] = Deferred()
        if self._closeWaiters is None:
            self._closeWaiters = [d]
        else:
            self._closeWaiters.append(d)
        return d

    def _writeFailure(self) -> Failure:
        """
        The failure of a write refused because writing has ended.
        """
        end = self._writeEnd
        if isinstance(end, str):
            end = self._writeEnd = Failure(SocketClosed(end))
        assert end is not None
        return end

    def _loseConnection(self) -> None:
        """
        Everything queued was handed over: close the transport (after
        unregistering our producer, which a TLS transport waits for).
        """
        transport = self._transport
        if transport is None or self._state is _CLOSED:
            return
        upgrading = self._tlsWaiter
        if upgrading is not None:
            # A TLS transport aborts a close during its handshake: finish the
            # STARTTLS first.
            def afterHandshake(result: object) -> object:
                self._loseConnection()
                return result

            upgrading.addBoth(afterHandshake)
            return
        self._stopProducer()
        self._unwatch(transport)
        if (
            self._direct
            and self._readEnd is True
            and not transport._tempDataLen
            and not transport.dataBuffer
            and transport.connected
            and not transport.disconnecting
        ):
            # The peer's FIN came and nothing is left to send: close now, as
            # Twisted's loseConnection does once the write side is shut,
            # rather than after a reactor round that flushes nothing.
            transport.stopReading()
            transport.stopWriting()
            transport.connectionLost(_CONNECTION_DONE)
            return
        self._losing = True
        if self._readPaused:
            # A TLS close completes only once the peer's close-notify was
            # read: a suspended or full socket must read again, or close()
            # would never finish.
            self._readPaused = False
            transport.resumeProducing()
        if not self._direct and _tlsLayer(transport) is not None:
            clock = _clockOf(transport)
            timeout = self.tlsCloseTimeout
            if clock is not None and timeout is not None:
                self._timer = clock.callLater(timeout, self._closeTimedOut)
        transport.loseConnection()

    def _startHandshakeTimer(self) -> None:
        """
        Give the TLS handshake that just started C{tlsHandshakeTimeout}
        seconds.
        """
        timeout = self.tlsHandshakeTimeout
        if timeout is None or self._timer is not None:
            return
        clock = _clockOf(self._transport)
        if clock is not None:
            self._timer = clock.callLater(timeout, self._handshakeTimedOut)

    def _handshakeTimedOut(self) -> None:
        """
        The TLS handshake did not complete in time: abort the connection.
        """
        self._timer = None
        self._abortWith(
            UserTimeoutError(
                string=f"the TLS handshake did not complete within "
                f"{self.tlsHandshakeTimeout} seconds; the connection was aborted"
            )
        )

    def _stopTimer(self) -> None:
        """
        Cancel the pending handshake or close timer, if any.
        """
        timer = self._timer
        if timer is not None:
            self._timer = None
            if timer.active():
                timer.cancel()

    def _closeTimedOut(self) -> None:
        """
        The peer did not answer a TLS close in time: abort the connection.
        """
        self._timer = None
        self._abortWith(
            UserTimeoutError(
                string=f"the peer did not complete the TLS close within "
                f"{self.tlsCloseTimeout} seconds; the connection was aborted"
            )
        )

    def closeWrite(self) -> Deferred[None]:
        """
        Half-close: send a FIN once the queued writes are sent, and keep
        reading.  Later writes fail with L{SocketClosed}.

        @return: A Deferred that fires with L{None} once the FIN was handed to
            the transport; it fails with L{SocketClosed} if the socket is
            already closed or closing, or with L{ValueError} on a TLS
            connection (TLS has no half-close).
        """
        if self._writeEnd is not None or self._state is _CLOSED:
            return fail(
                SocketClosed("closeWrite() on a socket that is closed or closing")
            )
        if self._ssl or self._tlsWaiter is not None:
            return fail(
                ValueError(
                    "closeWrite(): a TLS connection cannot be half-closed; use close()"
                )
            )
        self._writeEnd = "write() after closeWrite()"
        d: Deferred[None] = Deferred()

        self._shutWaiter = d

        def shut() -> None:
            transport = self._transport
            if transport is None or self._state is _CLOSED:
                return
            self._shutWaiter = None
            loseWrite = getattr(transport, "loseWriteConnection", None)
            if loseWrite is None:
                if not d.called:
                    d.errback(
                        ValueError(f"closeWrite(): {transport!r} cannot half-close")
                    )
                return
            self._stopProducer()
            self._unwatch(transport)
            loseWrite()
            self._writeShut = True
            if self._readEnd is not None:
                transport.loseConnection()
            if not d.called:
                d.callback(None)

        self._whenWritable(shut)
        return d

    def closeImmediately(self) -> None:
        """
        Abort now: queued writes are dropped (their Deferreds fail with
        L{SocketClosed}), buffered input is discarded, reads give C{b""},
        and C{closed} fires with L{None}.
        """
        if self._state is _CLOSED:
            return
        self._buf = None
        self._bufOffset = 0
        self._bufSize = 0
        self._end(None, SocketClosed("the socket was closed by closeImmediately()"))

    def _abortWith(self, reason: BaseException) -> None:
        """
        End the socket with C{reason}: C{closed}, pending writes and, once
        the buffered input was read, reads fail with it.
        """
        if self._state is _CLOSED:
            return
        self._end(Failure(reason), reason)

    def _end(self, failure: Failure | None, writeError: BaseException) -> None:
        """
        End the socket locally and abort the connection (or the attempt).
        """
        transport = self._transport
        connecting = self._connecting
        self._connecting = None
        self._finish(failure, Failure(writeError))
        if transport is not None:
            transport.abortConnection()
        elif isinstance(connecting, Deferred):
            connecting.addErrback(lambda _: None)
            connecting.cancel()
        elif connecting is not None:
            try:
                connecting.stopConnecting()
            except Exception:
                pass

    def _finish(self, failure: Failure | None, writeFailure: Failure) -> None:
        """
        Move to C{"closed"} and settle everything: C{failure} is the error
        that ended the socket (L{None}: a clean end).  All state changes come
        before any callback runs, so callbacks see a closed socket.
        """
        self._state = _CLOSED
        self._stopTimer()
        if self._readEnd is None:
            self._readEnd = True if failure is None else failure
        if self._writeEnd is None:
            self._writeEnd = writeFailure
        readers = self._readers
        self._readers = None
        held = self._held
        self._held = None
        self._heldSize = 0
        drain = self._drainWaiters
        self._drainWaiters = None
        tls = self._tlsWaiter
        self._tlsWaiter = None
        shut = self._shutWaiter
        self._shutWaiter = None
        openedWaiters: list[Deferred[None]] | None = None
        notOpened: Failure | None = None
        if self._opened is None:
            notOpened = (
                failure
                if failure is not None
                else Failure(SocketClosed("the socket was closed before it opened"))
            )
            self._opened = notOpened
            openedWaiters = self._openedWaiters
            self._openedWaiters = None
        self._closed = True if failure is None else failure
        closedWaiters = self._closedWaiters
        self._closedWaiters = None
        closeWaiters = self._closeWaiters
        self._closeWaiters = None
        producer = self._producer
        self._producer = None

        # Now the callbacks, in the order things happen for the user.
        if notOpened is not None:
            _settle(openedWaiters, notOpened)
        if shut is not None and not shut.called:
            shutFailure = failure if failure is not None else writeFailure
            shut.errback(shutFailure)
            _silence(shut, shutFailure)
        if tls is not None and not tls.called:
            tlsFailure = failure if failure is not None else writeFailure
            tls.errback(tlsFailure)
            _silence(tls, tlsFailure)
        if drain:
            _settle(drain, writeFailure)
        if held:
            for _, what in held:
                if isinstance(what, Deferred) and not what.called:
                    what.errback(writeFailure)
                    _silence(what, writeFailure)
        if producer is not None:
            producer.stopProducing()
        if readers:
            if self._buf:
                # the end came in the same TLS batch as the last data
                self._deliver(readers)
            for d in readers:
                if failure is None:
                    _endOfStream(d)
                elif not d.called:
                    d.errback(failure)
        if closedWaiters:
            _settle(closedWaiters, failure)
        if closeWaiters:
            _settle(closeWaiters, None)
        factory = self._protocol.factory
        if factory is not None:
            factory._socketEnded(self)

    # -- events from the protocol and the endpoint

    def _connectionMade(self, transport: Any) -> None:
        """
        The transport connected.
        """
        self._transport = transport
        self._connecting = None
        if self._state is _CLOSED:
            transport.abortConnection()
            return
        direct = self._direct = type(transport) in _DIRECT_TRANSPORTS and not getattr(
            transport, "TLS", True
        )
        if not direct:
            self._watching = True
            transport.registerProducer(self._protocol, True)
        tls = None if direct else _tlsLayer(transport)
        if tls is not None:
            self._batchRecords(tls)
        if tls is not None and not getattr(tls, "_handshakeDone", False):
            # TLS from the start: open once the handshake completed.
            self._startHandshakeTimer()
            factory = self._protocol.factory
            if factory is not None:
                factory._socketHandshaking(self)
            return
        if tls is not None:
            self._ssl = True
        self._becomeOpen()

    def _becomeOpen(self) -> None:
        """
        The socket is connected (and its TLS handshake done, if any): send
        what was queued, then fire C{opened}.
        """
        if self._state is _CONNECTING:
            self._state = _OPEN
        self._opened = True
        options = self._options
        if options is None:
            # TCP_NODELAY by default (as asyncio streams): no Nagle delay on
            # small writes such as a TLS close-notify or a request line.
            if self._direct:
                self._transport.socket.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
            else:
                setter = getattr(self._transport, "setTcpNoDelay", None)
                if setter is not None:
                    setter(True)
        else:
            self._options = None
            options.setdefault("setTcpNoDelay", True)
            for name, value in options.items():
                self._setOption(name, value)
        if self._suspended or self._full:
            self._updateReading()
        if self._held is not None:
            self._flush()
        waiters = self._openedWaiters
        if waiters is not None:
            self._openedWaiters = None
            for waiter in waiters:
                if not waiter.called:  # else cancelled by its user
                    opened: Deferred[Any] = waiter
                    opened.callback(self if type(waiter) is _SocketWaiter else None)
        factory = self._protocol.factory
        if factory is not None and self._state is not _CLOSED:
            factory._socketOpened(self)
        if self._producer is not None:
            self._resumeProducer()

    def _endpointConnected(self, protocol: object) -> object:
        """
        The endpoint's connection attempt succeeded.
        """
        self._connecting = None
        return protocol

    def _connectFailed(self, reason: Failure) -> None:
        """
        The connection attempt failed: C{opened} and C{closed} fail with
        C{reason}.
        """
        self._connecting = None
        if self._state is _CLOSED:
            return None
        self._finish(reason, reason)
        if self._transport is not None:
            # An endpoint that failed after connecting our protocol (a proxy
            # handshake, say): do not leave the connection behind.
            self._transport.abortConnection()
        return None

    def _handshakeCompleted(self) -> None:
        """
        A TLS handshake completed: the connection opens (TLS from the start)
        or C{upgradeToSecure()} fires.
        """
        if self._state is _CLOSED:
            return
        self._stopTimer()
        if self._opened is None:
            self._ssl = True
            self._becomeOpen()
            return
        waiter = self._tlsWaiter
        if waiter is not None:
            self._tlsWaiter = None
            self._ssl = True
            if not waiter.called:
                waiter.callback(None)

    def _readEnded(self) -> None:
        """
        The peer half-closed: reads give C{b""} once the buffer is read.
        """
        if self._readEnd is not None:
            return
        self._readEnd = True
        if self._buf and self._readers:
            # the peer's close came in the same TLS batch as the last data
            self._deliver(self._readers)
        readers = self._readers
        if readers:
            self._readers = None
            for d in readers:
                _endOfStream(d)
        if self._writeShut and self._transport is not None:
            self._transport.loseConnection()

    def _writeEnded(self) -> None:
        """
        Our FIN went out; close fully if the peer's came already.
        """
        self._writeShut = True
        if self._readEnd is not None and self._transport is not None:
            if self._state is not _CLOSED:
                self._transport.loseConnection()

    def _connectionLost(self, reason: Failure) -> None:
        """
        The connection is gone: settle everything with C{reason} (a clean
        end if it is L{ConnectionDone} after the socket opened).
        """
        if self._state is _CLOSED:
            return
        if self._opened is True and isinstance(reason.value, ConnectionDone):
            self._finish(None, reason)
        else:
            self._finish(reason, reason)

    # -- TLS

    def upgradeToSecure(self, tlsOptions: Any = None) -> Deferred[None]:
        """
        Start TLS on the open connection (STARTTLS), after every queued write.

        @param tlsOptions: Client TLS options (an L{IOpenSSLClientConnectionCreator}
            such as L{twisted.internet.ssl.optionsForClientTLS}'s); by default
            the socket's C{host} is verified against the system trust roots.
            An accepted socket needs server options (for example a
            L{twisted.internet.ssl.CertificateOptions}).

        @return: A Deferred that fires once the handshake completed (then
            C{ssl} is L{True}); it fails with the TLS error (which also ends
            the socket), with L{RuntimeError} if the socket is not open or
            TLS is already in use, with L{TypeError} if C{tlsOptions} are
            no TLS options (the socket stays usable), or with
            L{SocketClosed} after a close.
        """
        if self._state is _CLOSED or self._writeEnd is not None:
            return fail(SocketClosed("upgradeToSecure() on a closed or closing socket"))
        if self._opened is not True:
            return fail(
                RuntimeError(
                    "upgradeToSecure(): the socket is not open yet; wait for opened"
                )
            )
        if self._ssl or self._tlsWaiter is not None:
            return fail(
                RuntimeError(
                    "upgradeToSecure(): TLS is already in use or being negotiated"
                )
            )
        if not ITLSTransport.providedBy(self._transport):
            return fail(
                RuntimeError(
                    f"upgradeToSecure(): the transport {self._transport!r} "
                    "cannot start TLS"
                )
            )
        if tlsOptions is None:
            if self._protocol.factory is not None:
                return fail(
                    ValueError(
                        "upgradeToSecure(): an accepted socket needs server tlsOptions"
                    )
                )
            if not self.host:
                return fail(
                    ValueError(
                        "upgradeToSecure(): no host name to verify; pass tlsOptions"
                    )
                )
            try:
                from twisted.internet.ssl import optionsForClientTLS

                tlsOptions = optionsForClientTLS(self.host)
            except Exception:
                return fail()
        elif not _isTLSOptions(tlsOptions):
            return fail(
                TypeError(
                    "upgradeToSecure(): tlsOptions must be Twisted TLS options "
                    "(for example twisted.internet.ssl.optionsForClientTLS(...) "
                    "or CertificateOptions), not "
                    f"{type(tlsOptions).__name__}"
                )
            )
        d: Deferred[None] = Deferred()
        self._tlsWaiter = d
        options = tlsOptions

        def start() -> None:
            if self._state is _CLOSED:
                return
            if not self._watching:
                # TLS queues its records in the transport: watch from now on
                # (Twisted moves a registered producer onto the TLS layer).
                self._watch(self._transport)
            self._direct = False
            try:
                self._transport.startTLS(options)
            except Exception as e:
                self._abortWith(e)
                return
            self._batchRecords(_tlsLayer(self._transport))
            self._startHandshakeTimer()

        self._whenWritable(start)
        return d

    # -- socket options

    def setNoDelay(self, noDelay: bool = True) -> None:
        """
        Turn Nagle's algorithm off (L{True}, the default of tcpext sockets)
        or on; applied once open if called while connecting.  Ignored on
        transports without TCP options.

        @raise TypeError: If C{noDelay} is not a C{bool} (or C{0}/C{1}).
        """
        self._setOption("setTcpNoDelay", _flag("setNoDelay", noDelay))

    def setKeepAlive(self, keepAlive: bool = True) -> None:
        """
        Turn TCP keep-alive on or off; applied once open if called while
        connecting.  Ignored on transports without TCP options.

        @raise TypeError: If C{keepAlive} is not a C{bool} (or C{0}/C{1}).
        """
        self._setOption("setTcpKeepAlive", _flag("setKeepAlive", keepAlive))

    def _setOption(self, name: str, value: bool) -> None:
        """
        Set a TCP option now, or remember it until the socket opens.
        """
        if self._state is _CLOSED:
            return
        if self._opened is not True:
            if self._options is None:
                self._options = {}
            self._options[name] = value
            return
        setter = getattr(self._transport, name, None)
        if setter is not None:
            setter(value)


def _clockOf(transport: object) -> Any:
    """
    The reactor under C{transport} (through TLS layers), to set a timer on;
    L{None} if it cannot be found.
    """
    for _ in range(4):
        if transport is None:
            return None
        clock = getattr(transport, "reactor", None)
        if clock is not None and callable(getattr(clock, "callLater", None)):
            return clock
        transport = getattr(transport, "transport", None)
    return None


def _flag(method: str, value: object) -> bool:
    """
    A socket option's on/off value: a C{bool}, or the ints C{0} and C{1}.

    @raise TypeError: For anything else (C{"false"} would otherwise be true).
    """
    if type(value) is bool:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise TypeError(f"{method}() takes True or False, not {value!r}")


def _isTLSOptions(options: object) -> bool:
    """
    Whether C{options} is something Twisted's C{startTLS} accepts: a TLS
    connection creator, or an old-style context factory.
    """
    return (
        IOpenSSLClientConnectionCreator.providedBy(options)
        or IOpenSSLServerConnectionCreator.providedBy(options)
        or callable(getattr(options, "getContext", None))
    )


def _hostOf(address: IAddress | None) -> str | None:
    """
    The host (or UNIX path) of an address.
    """
    if address is None:
        return None
    host = getattr(address, "host", None)
    if host is None:
        name = getattr(address, "name", None)
        if isinstance(name, bytes):
            return name.decode("utf-8", "replace")
        return name
    return host
