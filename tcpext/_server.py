# -*- test-case-name: tests.test_server -*-
"""
L{TCPServerSocket}: a listening port whose accepted connections are
L{TCPClientSocket}s, handed out through an async iterator.

Connections accepted while nobody iterates wait in a queue of C{backLog}
entries.  When it is full the port stops accepting (the kernel's backlog holds
the rest) until the consumer takes one; nothing is accepted and then dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolNegotiationFactory,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpext._outcome import Outcome, observe, settle
from tcpext._socket import (
    DEFAULT_HIGH_WATER,
    SocketProtocol,
    TCPClientSocket,
    _hostOf,
)
from tcpext._tls import alpnProtocolList

__all__ = ["DEFAULT_BACKLOG", "ServerSocketFactory", "TCPServerSocket"]

_log = Logger(namespace="tcpext.server")

#: The default length of the accept queue.
DEFAULT_BACKLOG = 128


class TCPServerSocket:
    """
    A listening TCP socket (the libdweb C{TCPServerSocket}).

    Obtain one from L{tcpext.endpoints.listenSocket} or
    C{browser.TCPSocket.listen}; take connections with C{async for sock in
    server.connections}.
    """

    __slots__ = (
        "_backLog",
        "_port",
        "_queue",
        "_waiters",
        "_paused",
        "_closing",
        "_closed",
        "_closedWaiters",
        "_handshaking",
        "__weakref__",
    )

    def __init__(self, backLog: int = DEFAULT_BACKLOG) -> None:
        """
        @param backLog: How many accepted connections may wait to be taken.
        """
        if type(backLog) is not int:
            raise TypeError(f"backLog must be an int, not {type(backLog).__name__}")
        if backLog < 1:
            raise ValueError(f"backLog must be at least 1, got {backLog}")
        self._backLog = backLog
        self._port: IListeningPort | None = None
        self._queue: deque[TCPClientSocket] = deque()
        self._waiters: deque[Deferred[TCPClientSocket | None]] = deque()
        self._paused = False
        self._closing = False
        self._closed: Outcome = None
        self._closedWaiters: list[Deferred[None]] | None = None
        self._handshaking: set[TCPClientSocket] | None = None

    def __repr__(self) -> str:
        """
        Show where the server listens.
        """
        state = "closed" if self._closing else "listening"
        return f"<TCPServerSocket {self.localAddress}:{self.localPort} {state}>"

    def _listening(self, port: IListeningPort) -> TCPServerSocket:
        """
        The endpoint is listening on C{port}.
        """
        self._port = port
        if self._closing:
            self._stopPort()
        return self

    @property
    def port(self) -> IListeningPort | None:
        """
        The Twisted listening port.
        """
        return self._port

    @property
    def backLog(self) -> int:
        """
        The length of the accept queue.
        """
        return self._backLog

    @property
    def localPort(self) -> int | None:
        """
        The port it listens on (the real one when chosen automatically).
        """
        if self._port is None:
            return None
        return getattr(self._port.getHost(), "port", None)

    @property
    def localAddress(self) -> str | None:
        """
        The address (or UNIX socket path) it listens on.
        """
        if self._port is None:
            return None
        return _hostOf(self._port.getHost())

    @property
    def connections(self) -> _Connections:
        """
        An async iterator of accepted L{TCPClientSocket}s; it ends once the
        server is closed.  Leaving an C{async for} early does not close the
        server.
        """
        return _Connections(self)

    @property
    def closed(self) -> Deferred[None]:
        """
        A new Deferred that fires once the server closed (its port stopped
        listening), or fails with the error that stopped it.
        """
        d, self._closedWaiters = observe(self._closed, self._closedWaiters)
        return d

    def accept(self) -> Deferred[TCPClientSocket | None]:
        """
        The next accepted connection.

        @return: A Deferred that fires with the next L{TCPClientSocket}, or
            with L{None} once the server is closed.
        """
        queue = self._queue
        if queue:
            sock = queue.popleft()
            if self._paused and len(queue) < self._backLog:
                self._resumeAccepting()
            return succeed(sock)
        if self._closing:
            return succeed(None)
        d: Deferred[TCPClientSocket | None] = Deferred()
        self._waiters.append(d)
        return d

    def _socketOpened(self, sock: TCPClientSocket) -> None:
        """
        An accepted socket opened (after its TLS handshake, if any): hand it
        to a waiting consumer or queue it.
        """
        handshaking = self._handshaking
        if handshaking:
            handshaking.discard(sock)
        if self._closing:
            sock.close()
            return
        waiters = self._waiters
        while waiters:
            d = waiters.popleft()
            if not d.called:  # else cancelled by its user
                d.callback(sock)
                return
        self._queue.append(sock)
        if len(self._queue) >= self._backLog and not self._paused:
            self._pauseAccepting()

    def _pauseAccepting(self) -> None:
        """
        Stop accepting: the queue is full.
        """
        stop = getattr(self._port, "stopReading", None)
        if stop is not None:
            self._paused = True
            stop()

    def _resumeAccepting(self) -> None:
        """
        Accept again: the consumer took a connection.
        """
        self._paused = False
        if self._closing:
            return
        start = getattr(self._port, "startReading", None)
        if start is not None:
            start()

    def close(self) -> Deferred[None]:
        """
        Stop listening; end pending and later iterations; close the accepted
        connections nobody took.

        @return: A Deferred that fires once the port is closed.
        """
        if not self._closing:
            self._closing = True
            queue = self._queue
            self._queue = deque()
            for sock in queue:
                sock.close()
            handshaking = self._handshaking
            self._handshaking = None
            for sock in handshaking or ():
                sock.closeImmediately()
            waiters = self._waiters
            self._waiters = deque()
            for d in waiters:
                if d.called:
                    continue
                if type(d) is _IterationAccept:
                    d.errback(StopAsyncIteration())
                else:
                    d.callback(None)
            if self._port is not None:
                self._stopPort()
        return self.closed

    def _stopPort(self) -> None:
        """
        Stop the port and settle C{closed}.
        """
        port = self._port
        assert port is not None
        try:
            stopped = port.stopListening()
        except Exception:
            stopped = fail()

        def done(result: object) -> None:
            outcome: Failure | None = result if isinstance(result, Failure) else None
            self._closed = True if outcome is None else outcome
            waiters = self._closedWaiters
            self._closedWaiters = None
            settle(waiters, outcome)

        if isinstance(stopped, Deferred):
            stopped.addBoth(done)
        else:
            done(None)

    def _listenFailed(self, reason: Failure) -> Failure:
        """
        The endpoint could not listen: the server is closed with C{reason}.
        """
        self._closing = True
        self._closed = reason
        waiters = self._closedWaiters
        self._closedWaiters = None
        settle(waiters, reason)
        return reason


class _Connections:
    """
    The async iterator of a server's accepted connections.
    """

    __slots__ = ("_server",)

    def __init__(self, server: TCPServerSocket) -> None:
        """
        @param server: The server whose connections to iterate.
        """
        self._server = server

    def __aiter__(self) -> _Connections:
        """
        Iterate over the connections.
        """
        return self

    def __anext__(self) -> Deferred[TCPClientSocket]:
        """
        The next accepted connection; L{StopAsyncIteration} once the server
        is closed.  (A L{Deferred} rather than a coroutine: no coroutine per
        connection.)
        """
        server = self._server
        if server._queue or server._closing:
            d = server.accept()
            if d.result is None:
                return fail(StopAsyncIteration())
            return d  # type: ignore[return-value]
        waiter: Deferred[TCPClientSocket] = _IterationAccept()
        server._waiters.append(waiter)  # type: ignore[arg-type]
        return waiter


class _IterationAccept(Deferred[TCPClientSocket]):
    """
    An accept made by C{async for}: it fails with L{StopAsyncIteration} once
    the server closes, instead of firing with L{None}.
    """


@implementer(IProtocolNegotiationFactory)
class ServerSocketFactory(Factory):
    """
    A server factory whose protocols are accepted L{TCPClientSocket}s,
    delivered to a L{TCPServerSocket}: give it to any stream server endpoint
    or C{listenTCP}/C{listenSSL}/C{listenUNIX}.

    @ivar server: The server socket that receives the connections.
    @ivar alpnProtocols: The protocols a TLS listener agrees to with ALPN,
        preferred first (C{bytes}); empty: none (a client's offer is then
        ignored and the handshake goes on).
    """

    noisy = False

    def __init__(
        self,
        server: TCPServerSocket | None = None,
        highWater: int = DEFAULT_HIGH_WATER,
        alpnProtocols: Sequence[str | bytes] | None = None,
    ) -> None:
        """
        @param server: The server socket to deliver to (a new one by default).
        @param highWater: The read high-water mark of accepted sockets.
        @param alpnProtocols: The ALPN protocol names to agree to over TLS,
            preferred first (for example C{["h2", "http/1.1"]}).

        @raise ValueError: If C{highWater} is not a positive int, or a
            protocol name is invalid (checked now, not when the first
            connection arrives).
        @raise TypeError: If C{alpnProtocols} is no list of names.
        """
        if type(highWater) is not int or highWater < 1:
            raise ValueError(f"highWater must be a positive int, got {highWater!r}")
        self.alpnProtocols = alpnProtocolList(alpnProtocols)
        self.server = server if server is not None else TCPServerSocket()
        self.highWater = highWater

    def acceptableProtocols(self) -> list[bytes]:
        """
        L{IProtocolNegotiationFactory}: the ALPN protocols to agree to.
        """
        return list(self.alpnProtocols)

    def logPrefix(self) -> str:
        """
        The prefix of Twisted's log lines about the listening port.
        """
        return "tcpext"

    def buildProtocol(self, addr: IAddress) -> SocketProtocol | None:  # type: ignore[override]
        """
        Make the socket of an accepted connection (none once the server is
        closed: the connection is refused).
        """
        if self.server._closing:
            return None
        host = _hostOf(addr)
        sock = TCPClientSocket(
            host,
            getattr(addr, "port", None),
            highWater=self.highWater,
            factory=self,
        )
        return sock._protocol

    def _socketOpened(self, sock: TCPClientSocket) -> None:
        """
        An accepted socket opened: give it to the server.
        """
        self.server._socketOpened(sock)

    def _socketHandshaking(self, sock: TCPClientSocket) -> None:
        """
        An accepted socket waits for its TLS handshake: the server closes it
        if it closes first.
        """
        server = self.server
        if server._handshaking is None:
            server._handshaking = set()
        server._handshaking.add(sock)

    def _socketEnded(self, sock: TCPClientSocket) -> None:
        """
        An accepted socket closed (if it was still in its TLS handshake, the
        handshake failed: logged at debug level with the peer and the reason).
        """
        handshaking = self.server._handshaking
        if handshaking and sock in handshaking:
            handshaking.discard(sock)
            more = sock._more
            if more is not None and more.failure is not None:
                _log.debug(
                    "TLS handshake with {peer} failed: {reason}",
                    peer=_peerText(sock),
                    reason=_reasonText(more.failure),
                    failure=more.failure,
                )


def _peerText(sock: TCPClientSocket) -> str:
    """
    C{HOST:PORT} of an accepted socket's peer (IPv6 hosts in brackets).
    """
    host, port = sock.host, sock.port
    if port is None:
        return str(host)
    if host is not None and ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _reasonText(failure: Failure) -> str:
    """
    What a failed handshake's error says, on one line.
    """
    text = str(failure.value) or type(failure.value).__name__
    return " ".join(text.split())
