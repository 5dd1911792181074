# -*- test-case-name: tests.test_socket,tests.test_tls -*-
"""
L{TCPClientSocket}: a Deferred-based TCP socket over any Twisted transport.

One socket is two small objects: the L{TCPClientSocket} the user holds and
its L{SocketProtocol}, the L{IProtocol} Twisted drives.  The protocol is also
the write-backpressure producer registered with the transport (the socket's
own L{IPushProducer} role is the read side).

The socket class is assembled from parts, each in its own module: the
lifecycle table (C{tcpext._state}: every state and legal transition), the
read side (C{tcpext._reading}), the write side (C{tcpext._writing}) and TLS
(C{tcpext._tls}); every Twisted implementation detail they use is in
C{tcpext._twistedcompat}.  This module holds the lifecycle itself: what
happens on each event (connected, handshake done, close, connection lost)
and the outcomes C{opened} and C{closed}.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocol,
    IPushProducer,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpext._errors import SocketClosed
from tcpext._extras import Extras
from tcpext._outcome import Outcome, observe, settle, silence
from tcpext._reading import DEFAULT_LINE_LIMIT, ReadSide
from tcpext._state import (
    NOT_YET_OPEN,
    OPENED,
    READY_STATES,
    TRANSITIONS,
    Event,
    ReadyState,
    State,
    TLSState,
    transition,
)
from tcpext._tls import TLSPart
from tcpext._twistedcompat import (
    closeAtOnce,
    closingBelow,
    handshakeDone,
    isPlainTCP,
    sendsNothing,
    setNoDelay,
    tlsLayer,
)
from tcpext._writing import Held, WriteSide

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, ITransport

__all__ = [
    "DEFAULT_HIGH_WATER",
    "DEFAULT_LINE_LIMIT",
    "ReadyState",
    "SocketProtocol",
    "TCPClientSocket",
]

#: The default read high-water mark, in bytes.
DEFAULT_HIGH_WATER = 64 * 1024

_CONNECTING = State.CONNECTING
_OPEN = State.OPEN
_CLOSED = State.CLOSED

_CONNECTION_DONE = Failure(ConnectionDone())


class _SocketWaiter(Deferred[Any]):
    """
    A waiter for C{opened} that fires with the socket itself rather than
    L{None}: the Deferred of L{tcpext.endpoints.connectSocket}.
    """


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
    @ivar batch: While the TLS layer decrypts one network read, the records
        it has decrypted so far (they go to the socket together afterwards,
        or before any other event); L{None} otherwise.
    """

    __slots__ = ("socket", "transport", "factory", "batch", "__weakref__")

    def __init__(self, socket: TCPClientSocket, factory: Any = None) -> None:
        """
        @param socket: The socket this protocol feeds.
        @param factory: The accepting server factory, if any.
        """
        self.socket = socket
        self.transport: Any = None
        self.factory = factory
        self.batch: list[bytes] | None = None

    def logPrefix(self) -> str:
        """
        The log prefix of the connection.
        """
        return "tcpext"

    def makeConnection(self, transport: ITransport) -> None:
        """
        Connect to C{transport} and tell the socket.
        """
        self.transport = transport
        self.socket._connectionMade(transport)

    def connectionMade(self) -> None:
        """
        The connection is up (for callers that set C{transport} themselves
        rather than calling C{makeConnection}).
        """
        if self.socket._transport is None:
            self.socket._connectionMade(self.transport)

    def dataReceived(self, data: bytes) -> None:
        """
        Hand C{data} to the socket's read side (or gather it with the other
        records of the network read being decrypted).
        """
        batch = self.batch
        if batch is not None:
            batch.append(data)
            return
        self.socket._received(data)

    def _handOver(self) -> None:
        """
        Give the socket the records gathered so far (as one chunk).
        """
        batch = self.batch
        if batch:
            self.batch = []
            self.socket._received(batch[0] if len(batch) == 1 else b"".join(batch))

    def readConnectionLost(self) -> None:
        """
        The peer sent a FIN: reading ends, writing may go on.
        """
        if self.batch:
            self._handOver()
        self.socket._peerClosed()

    def writeConnectionLost(self) -> None:
        """
        Our FIN was sent.
        """
        if self.batch:
            self._handOver()
        self.socket._writeEnded()

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        """
        The connection is gone.
        """
        if self.batch:
            self._handOver()
        self.socket._connectionLost(reason)

    def handshakeCompleted(self) -> None:
        """
        A TLS handshake completed.
        """
        if self.batch:
            self._handOver()
        self.socket._handshakeCompleted()

    # the write-backpressure producer, driven by the transport

    def pauseProducing(self) -> None:
        """
        The transport's write buffer is full: hold writes.
        """
        self.socket._pauseWriting()

    def resumeProducing(self) -> None:
        """
        The transport's write buffer has drained: send held writes.

        A transport that was asked to close while it had paused us (TLS
        does that on the peer's close-notify) resumes us instead of closing
        (Twisted's C{FileDescriptor.doWrite}), and closes only once we
        unregister: so, with nothing left to send, unregister.
        """
        sock = self.socket
        sock._writeResumed()
        transport = sock._transport
        if sock._held is None and sock._watching and closingBelow(transport):
            sock._unwatch(transport)

    def stopProducing(self) -> None:
        """
        The transport is going away; C{connectionLost} tells the socket.
        """


@implementer(IPushProducer, IConsumer)
class TCPClientSocket(ReadSide, WriteSide, TLSPart):  # type: ignore[override]
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
        # lifecycle (tcpext._state)
        "_state",
        "_protocol",
        "_transport",
        "_connecting",
        "_openedAt",
        "_openedWaiters",
        "_closedWaiters",
        "_closeWaiters",
        # read side (tcpext._reading)
        "_buf",
        "_bufOffset",
        "_bufSize",
        "_reader",
        "_readEnd",
        "_highWater",
        "_full",
        "_suspended",
        "_readPaused",
        "_bytesIn",
        # write side (tcpext._writing)
        "_writeEnd",
        "_writePaused",
        "_writeShut",
        "_direct",
        "_watching",
        "_held",
        "_heldSize",
        "_bytesOut",
        # TLS (tcpext._tls)
        "_tls",
        # what few sockets need (tcpext._extras)
        "_more",
        "__weakref__",
    )

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
        # the connection attempt, to cancel: the endpoint's Deferred, or the
        # IConnector when startSocket called connectTCP itself
        self._connecting: Any = None
        self._openedAt: float | None = None
        self._openedWaiters: list[Deferred[Any]] | None = None
        self._closedWaiters: list[Deferred[None]] | None = None
        self._closeWaiters: list[Deferred[None]] | None = None
        self._buf: list[bytes] | None = None
        self._bufOffset = 0
        self._bufSize = 0
        self._reader: Deferred[bytes] | list[Deferred[bytes]] | None = None
        self._readEnd: bool | Failure | None = None
        self._highWater = highWater
        self._full = False
        self._suspended = False
        self._readPaused = False
        self._bytesIn = 0
        self._writeEnd: Failure | str | None = None
        self._writePaused = False
        self._writeShut = False
        self._direct = False
        self._watching = False
        self._held: deque[Held] | None = None
        self._heldSize = 0
        self._bytesOut = 0
        self._tls = TLSState.NONE
        self._more: Extras | None = None

    def __repr__(self) -> str:
        """
        Show where the socket goes and its state.
        """
        return f"<TCPClientSocket {self.host}:{self.port} {self.readyState.value}>"

    def _extras(self) -> Extras:
        """
        The socket's L{Extras}, made on first use.
        """
        more = self._more
        if more is None:
            more = self._more = Extras()
        return more

    def _move(self, event: Event) -> None:
        """
        Take the lifecycle transition of C{event} (L{transition}, with the
        table looked up here: this runs several times per connection).
        """
        try:
            self._state = TRANSITIONS[self._state][event]
        except KeyError:
            transition(self._state, event)  # raises, saying what was illegal
            raise

    # -- public attributes

    @property
    def readyState(self) -> ReadyState:
        """
        C{"connecting"}, C{"open"}, C{"closing"} or C{"closed"}.
        """
        return READY_STATES[self._state]

    @property
    def bytesIn(self) -> int:
        """
        Bytes received so far (after TLS decryption).
        """
        return self._bytesIn

    @property
    def bytesOut(self) -> int:
        """
        Bytes handed to the transport so far (before TLS encryption).
        """
        return self._bytesOut

    @property
    def openedAt(self) -> float | None:
        """
        When the socket opened, in Unix seconds; L{None} until then.
        """
        return self._openedAt

    def _address(self, peer: bool) -> Any:
        """
        The transport's peer or host address, if connected.
        """
        transport = self._transport
        if transport is None or self._openedAt is None:
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

    # -- outcomes

    def _notOpened(self) -> Failure:
        """
        Why a closed socket never opened: the error that ended it, or
        L{SocketClosed} for a local close.
        """
        more = self._more
        if more is not None and more.failure is not None:
            return more.failure
        return Failure(SocketClosed("the socket was closed before it opened"))

    def _openOutcome(self) -> Outcome:
        """
        Whether the socket opened: L{None} while it may still, L{True} once
        it did, else why it never will.
        """
        if self._state in NOT_YET_OPEN:
            return None
        if self._openedAt is not None:
            return True
        return self._notOpened()

    @property
    def opened(self) -> Deferred[None]:
        """
        A new Deferred that fires with L{None} once the socket is open, or
        fails with the error that kept it from opening.
        """
        d, self._openedWaiters = observe(self._openOutcome(), self._openedWaiters)
        return d

    def _whenOpen(self) -> Deferred[TCPClientSocket]:
        """
        A Deferred that fires with this socket once it is open, or fails as
        C{opened} does (without logging the failure if it is not consumed).
        """
        d, self._openedWaiters = observe(
            self._openOutcome(), self._openedWaiters, _SocketWaiter, self
        )
        return d

    @property
    def closed(self) -> Deferred[None]:
        """
        A new Deferred that fires with L{None} once the socket closed cleanly,
        or fails with the error that ended it.
        """
        outcome: Outcome = None
        if self._state is _CLOSED:
            more = self._more
            failure = None if more is None else more.failure
            outcome = True if failure is None else failure
        d, self._closedWaiters = observe(outcome, self._closedWaiters)
        return d

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
        after = transition(state, Event.CLOSE)
        if after is not state:
            self._state = after
            if self._writeEnd is None:
                self._writeEnd = "write() after close()"
            self._whenWritable(self._loseConnection)
            if self._state is _CLOSED:
                # closed at once (nothing was left to send)
                return succeed(None)
        d: Deferred[None] = Deferred()
        if self._closeWaiters is None:
            self._closeWaiters = [d]
        else:
            self._closeWaiters.append(d)
        return d

    def _loseConnection(self) -> None:
        """
        Everything queued before C{close()} was handed over: close the
        transport (after unregistering our producer, which a TLS transport
        waits for).
        """
        transport = self._transport
        if transport is None or self._state is _CLOSED:
            return
        more = self._more
        if more is not None and more.tlsWaiter is not None:
            # A TLS transport aborts a close during its handshake: finish the
            # STARTTLS first.
            def afterHandshake(result: object) -> object:
                self._loseConnection()
                return result

            more.tlsWaiter.addBoth(afterHandshake)
            return
        if more is not None and more.producer is not None:
            self._stopProducer()
        if self._watching:
            self._unwatch(transport)
        self._move(Event.DISCONNECT)
        if self._direct and sendsNothing(transport):
            # Nothing is left to send: close now, as Twisted's loseConnection
            # does on its next write attempt, rather than after a reactor
            # round that flushes nothing.
            closeAtOnce(transport)
            return
        self._readOnForClose()
        if not self._direct and tlsLayer(transport) is not None:
            self._startCloseTimer()
        transport.loseConnection()

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
        if self._tls is not TLSState.NONE:
            return fail(
                ValueError(
                    "closeWrite(): a TLS connection cannot be half-closed; use close()"
                )
            )
        self._writeEnd = "write() after closeWrite()"
        d: Deferred[None] = Deferred()
        more = self._extras()
        more.shutWaiter = d

        def shut() -> None:
            transport = self._transport
            if transport is None or self._state is _CLOSED:
                return
            more.shutWaiter = None
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
        self._move(Event.END)
        if self._more is not None:
            self._stopTimer()
        readers = self._endReading(failure)
        if self._writeEnd is None:
            self._writeEnd = writeFailure
        held = self._held
        self._held = None
        self._heldSize = 0
        drain = tls = shut = producer = None
        more = self._more
        if more is None and failure is not None:
            more = self._extras()
        if more is not None:
            drain, more.drainWaiters = more.drainWaiters, None
            tls, more.tlsWaiter = more.tlsWaiter, None
            shut, more.shutWaiter = more.shutWaiter, None
            producer, more.producer = more.producer, None
            more.failure = failure
        openedWaiters: list[Deferred[Any]] | None = None
        notOpened: Failure | None = None
        if self._openedAt is None:
            notOpened = self._notOpened()
            openedWaiters = self._openedWaiters
            self._openedWaiters = None
        closedWaiters = self._closedWaiters
        self._closedWaiters = None
        closeWaiters = self._closeWaiters
        self._closeWaiters = None

        # Now the callbacks, in the order things happen for the user.
        if notOpened is not None:
            settle(openedWaiters, notOpened)
        for waiter in (shut, tls):
            if waiter is not None and not waiter.called:
                outcome = failure if failure is not None else writeFailure
                waiter.errback(outcome)
                silence(waiter, outcome)
        if drain:
            settle(drain, writeFailure)
        if held:
            for _, what in held:
                if isinstance(what, Deferred) and not what.called:
                    what.errback(writeFailure)
                    silence(what, writeFailure)
        if producer is not None:
            producer.stopProducing()
        if readers:
            self._settleReads(readers, failure)
        if closedWaiters:
            settle(closedWaiters, failure)
        if closeWaiters:
            settle(closeWaiters, None)
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
        direct = self._direct = isPlainTCP(transport)
        if direct:
            self._move(Event.CONNECTED)
            self._becomeOpen()
            return
        self._watching = True
        transport.registerProducer(self._protocol, True)
        tls = tlsLayer(transport)
        if tls is not None:
            self._batchRecords(tls)
            if not handshakeDone(tls):
                # TLS from the start: open once the handshake completed.
                self._move(Event.HANDSHAKE_STARTED)
                self._startHandshakeTimer()
                factory = self._protocol.factory
                if factory is not None:
                    factory._socketHandshaking(self)
                return
            self._tlsDone()
        self._move(Event.CONNECTED)
        self._becomeOpen()

    def _becomeOpen(self) -> None:
        """
        The socket is connected (and its TLS handshake done, if any): send
        what was queued, then fire C{opened}.
        """
        self._openedAt = time.time()
        transport = self._transport
        more = self._more
        options = None if more is None else more.options
        if options is None:
            # TCP_NODELAY by default (as asyncio streams): no Nagle delay on
            # small writes such as a TLS close-notify or a request line.
            if self._direct:
                setNoDelay(transport)
            else:
                setter = getattr(transport, "setTcpNoDelay", None)
                if setter is not None:
                    setter(True)
        else:
            assert more is not None
            more.options = None
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
                    waiter.callback(self if type(waiter) is _SocketWaiter else None)
        factory = self._protocol.factory
        if factory is not None and self._state is not _CLOSED:
            factory._socketOpened(self)
        if self._more is not None and self._more.producer is not None:
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
        if self._state in NOT_YET_OPEN:
            self._tlsDone()
            self._move(Event.HANDSHAKE_DONE)
            self._becomeOpen()
            return
        if self._tls is TLSState.UPGRADING:
            waiter = self._tlsDone()
            if waiter is not None and not waiter.called:
                waiter.callback(None)

    def _peerClosed(self) -> None:
        """
        The peer half-closed: reads give C{b""} once the buffer is read; if
        our FIN went out already, the connection is done.
        """
        if self._readEnded() and self._writeShut and self._transport is not None:
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
        if self._openedAt is not None and isinstance(reason.value, ConnectionDone):
            self._finish(None, reason)
        else:
            self._finish(reason, reason)

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
        if self._state not in OPENED:
            more = self._extras()
            if more.options is None:
                more.options = {}
            more.options[name] = value
            return
        setter = getattr(self._transport, name, None)
        if setter is not None:
            setter(value)


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
