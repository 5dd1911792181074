# -*- test-case-name: tests.test_benchmarks -*-
"""
W4 written against the least a Deferred-returning socket API can do on
Twisted: a L{Protocol} with a Deferred fired when it connects, one per
C{read()} and one per C{close()}, and a server whose C{accept()} is a
Deferred, driven by coroutines in the same idiom as tcpext's W4 (await the
connect, await the end of the stream, await the close; the server takes
each connection with an awaited accept).

It has none of tcpext's features (no backpressure, no half-close, no TLS,
no buffer limits, no error reporting beyond the end of the stream): it is
the floor of the idiom, to tell the cost of Deferreds and coroutine
resumption apart from the cost of tcpext's own code.  Not one of the
compared implementations: run it by hand, e.g.
C{python _child.py floor W4 '{"scale": 1}'}.
"""

from __future__ import annotations

import time
from typing import Any

from _common import BACKLOG, BenchmarkFailure, Params, rate
from impl_twisted import HOST, drive, reactor
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure


class FloorSocket(Protocol):
    """
    A connection with Deferred-returning C{read()} and C{close()}.
    """

    transport: Any

    def __init__(self, server: FloorServer | None = None) -> None:
        self.server = server
        self.opened: Deferred[FloorSocket] = Deferred()
        self.reader: Deferred[bytes] | None = None
        self.closing: Deferred[None] | None = None
        self.buffered: list[bytes] = []
        self.ended = False

    def connectionMade(self) -> None:
        if self.server is not None:
            self.server.arrived(self)
        else:
            self.opened.callback(self)

    def dataReceived(self, data: bytes) -> None:
        reader = self.reader
        if reader is not None:
            self.reader = None
            reader.callback(data)
        else:
            self.buffered.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.ended = True
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.callback(b"")
        closing, self.closing = self.closing, None
        if closing is not None:
            closing.callback(None)

    def read(self) -> Deferred[bytes]:
        if self.buffered:
            data = b"".join(self.buffered)
            self.buffered = []
            return succeed(data)
        if self.ended:
            return succeed(b"")
        self.reader = Deferred()
        return self.reader

    def close(self) -> Deferred[None]:
        if self.ended:
            return succeed(None)
        self.closing = Deferred()
        self.transport.loseConnection()
        return self.closing


class FloorServer(Factory):
    """
    Accepts L{FloorSocket}s; C{accept()} fires with the next one.
    """

    noisy = False

    def __init__(self) -> None:
        self.queue: list[FloorSocket] = []
        self.waiter: Deferred[FloorSocket] | None = None

    def buildProtocol(self, addr: object) -> FloorSocket:
        return FloorSocket(self)

    def arrived(self, sock: FloorSocket) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.callback(sock)
        else:
            self.queue.append(sock)

    def accept(self) -> Deferred[FloorSocket]:
        if self.queue:
            return succeed(self.queue.pop(0))
        self.waiter = Deferred()
        return self.waiter


class FloorConnector(ClientFactory):
    """
    Connects one L{FloorSocket}.
    """

    noisy = False

    def __init__(self) -> None:
        self.socket = FloorSocket()

    def buildProtocol(self, addr: object) -> FloorSocket:
        return self.socket

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        self.socket.opened.errback(reason)


def connect(port: int) -> Deferred[FloorSocket]:
    """
    Connect a L{FloorSocket} to C{port} on loopback.
    """
    factory = FloorConnector()
    reactor.connectTCP(HOST, port, factory)
    return factory.socket.opened


async def connectionRate(params: Params) -> dict[str, Any]:
    """
    W4: connect, let the server accept and close, see EOF, close; repeat.
    """
    cycles = params.sizes("W4")["cycles"]
    server = FloorServer()
    port = reactor.listenTCP(0, server, interface=HOST, backlog=BACKLOG)
    accepted = 0

    async def closer() -> None:
        nonlocal accepted
        for _ in range(cycles):
            conn = await server.accept()
            accepted += 1
            conn.close()

    closing = ensureDeferred(closer())
    portNumber = port.getHost().port
    start = time.perf_counter()
    for _ in range(cycles):
        sock = await connect(portNumber)
        if await sock.read() != b"":
            raise BenchmarkFailure("expected EOF")
        await sock.close()
    elapsed = time.perf_counter() - start
    await closing
    if accepted != cycles:
        raise BenchmarkFailure(f"{accepted} accepted, expected {cycles}")
    await port.stopListening()
    return rate(cycles, elapsed, "conn/s")


def run(workload: str, params: Params) -> dict[str, Any]:
    """
    Run C{workload} (W4 only) and return its result.
    """
    if workload != "W4":
        raise BenchmarkFailure(f"the floor implementation has no {workload}")
    return drive(lambda: connectionRate(params))
