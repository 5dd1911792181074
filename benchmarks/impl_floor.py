# -*- test-case-name: tests.test_benchmarks -*-
"""
W4 and W6 written against the least a Deferred-returning socket API can do
on Twisted: a L{Protocol} with a Deferred fired when it connects, one per
C{read()} and one per C{close()}, and a server whose C{accept()} is a
Deferred, driven by coroutines in the same idiom as tcpext's W4 (await the
connect, await the end of the stream, await the close; the server takes
each connection with an awaited accept).  For W6 (TLS bulk) and W8 (10,000
connections, checksummed echo), C{write()} returns a Deferred (fired at
once unless the transport paused the writer); over TLS the records of one
network read reach a pending C{read()} together, as in tcpext; in W8 a
socket stops reading while more than 64 KiB wait unread (as tcpext's read
high-water mark does), so the echo server's memory stays bounded.

It has none of tcpext's other features (no read backpressure, no
half-close, no STARTTLS, no buffer limits, no error reporting beyond the
end of the stream): it is the floor of the idiom, to tell the cost of
Deferreds and coroutine resumption apart from the cost of tcpext's own
code.  C{run.py} runs it next to the other implementations for W4, W6 and
W8; by hand: C{python _child.py floor W4 '{"scale": 1}'} (W8 needs its
server: C{python _child.py floor W8-server '{}'} prints its port).
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from typing import Any

from _common import (
    BACKLOG,
    CONNECT_CONCURRENCY,
    BenchmarkFailure,
    Params,
    ScaleData,
    ScaleTally,
    bulkBlock,
    checkBulk,
    corruptOnce,
    raiseFileLimit,
    rate,
    throughput,
)
from impl_twisted import HOST, drive, reactor, tlsOptions
from twisted.internet.defer import (
    Deferred,
    DeferredSemaphore,
    ensureDeferred,
    succeed,
)
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer


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


@implementer(IPushProducer)
class FloorStream(FloorSocket):
    """
    A L{FloorSocket} that also streams: C{write()} returns a Deferred that
    fires at once unless the transport paused us (then when it resumes us),
    and over TLS the records of one network read reach a pending C{read()}
    together (one wake-up per network read, as tcpext does).
    """

    def __init__(self, server: FloorServer | None = None) -> None:
        super().__init__(server)
        self.paused = False
        self.drained: Deferred[None] | None = None
        self.batching = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        layer = self.transport
        if isinstance(layer, TLSMemoryBIOProtocol):
            receive = layer.dataReceived

            def gathered(data: bytes) -> None:
                self.batching = True
                try:
                    receive(data)
                finally:
                    self.batching = False
                    if self.reader is not None and self.buffered:
                        reader, self.reader = self.reader, None
                        data, self.buffered = b"".join(self.buffered), []
                        reader.callback(data)

            layer.dataReceived = gathered  # type: ignore[method-assign]
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if self.batching:
            self.buffered.append(data)
        else:
            super().dataReceived(data)

    def write(self, data: bytes) -> Deferred[None]:
        self.transport.write(data)
        if self.paused:
            self.drained = Deferred()
            return self.drained
        return succeed(None)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        drained, self.drained = self.drained, None
        if drained is not None:
            drained.callback(None)

    def stopProducing(self) -> None:
        pass

    def close(self) -> Deferred[None]:
        self.transport.unregisterProducer()
        return super().close()


class FloorStreamServer(FloorServer):
    """
    Accepts L{FloorStream}s.
    """

    def buildProtocol(self, addr: object) -> FloorStream:
        return FloorStream(self)


class FloorStreamConnector(FloorConnector):
    """
    Connects one L{FloorStream}.
    """

    def __init__(self) -> None:
        self.socket = FloorStream()


async def tlsBulk(params: Params) -> dict[str, Any]:
    """
    W6: one TLS connection, C{total} bytes in C{chunk}-byte writes, each
    write awaited; the server reads with C{read()} until the end.
    """
    sizes = params.sizes("W6")
    serverOptions, clientOptions = tlsOptions(params.certDir)
    server = FloorStreamServer()
    port = reactor.listenSSL(0, server, serverOptions, interface=HOST)

    async def sink() -> int:
        conn: Any = await server.accept()
        received = 0
        while True:
            chunk = await conn.read()
            if not chunk:
                break
            received += len(chunk)
        await conn.close()
        return received

    sinking = ensureDeferred(sink())
    connector = FloorStreamConnector()
    reactor.connectSSL(HOST, port.getHost().port, connector, clientOptions)
    sock: Any = await connector.socket.opened
    block = bulkBlock(sizes["chunk"])
    count = sizes["total"] // sizes["chunk"]
    start = time.perf_counter()
    if params.corrupt:
        count -= 1
        await sock.write(block[1:])
    for _ in range(count):
        await sock.write(block)
    await sock.close()
    received = await sinking
    elapsed = time.perf_counter() - start
    checkBulk(received, sizes["total"])
    await port.stopListening()
    return throughput(sizes["total"], elapsed)


async def connectionRateIdiom(params: Params) -> dict[str, Any]:
    """
    W4 in the user idiom (as C{impl_tcpext.connectionRateIdiom}): the accept
    loop hands each connection to its own coroutine, which awaits its
    close; the client awaits the connect, then C{opened} (a new, fired
    Deferred), the end of the stream and its close.
    """
    cycles = params.sizes("W4")["cycles"]
    server = FloorServer()
    port = reactor.listenTCP(0, server, interface=HOST, backlog=BACKLOG)
    accepted = 0

    async def handle(conn: FloorSocket) -> None:
        nonlocal accepted
        accepted += 1
        await conn.close()

    async def serve() -> None:
        for _ in range(cycles):
            conn = await server.accept()
            ensureDeferred(handle(conn))

    serving = ensureDeferred(serve())
    portNumber = port.getHost().port
    start = time.perf_counter()
    for _ in range(cycles):
        sock = await connect(portNumber)
        await succeed(None)  # what awaiting an open socket's opened costs
        if await sock.read() != b"":
            raise BenchmarkFailure("expected EOF")
        await sock.close()
    elapsed = time.perf_counter() - start
    await serving
    if accepted != cycles:
        raise BenchmarkFailure(f"{accepted} accepted, expected {cycles}")
    await port.stopListening()
    return rate(cycles, elapsed, "conn/s")


#: Unread bytes past which a L{FloorScaleSocket} stops reading (as tcpext's
#: default read high-water mark).
HIGH_WATER = 64 * 1024


class FloorScaleSocket(FloorStream):
    """
    A L{FloorStream} that stops reading from the network while more than
    L{HIGH_WATER} bytes wait unread, and reads again once they are read:
    the least read backpressure that keeps an echo server's memory bounded
    (W8).
    """

    def __init__(self, server: FloorServer | None = None) -> None:
        super().__init__(server)
        self.unread = 0
        self.full = False

    def dataReceived(self, data: bytes) -> None:
        reader = self.reader
        if reader is not None:
            self.reader = None
            reader.callback(data)
            return
        self.buffered.append(data)
        self.unread += len(data)
        if self.unread > HIGH_WATER and not self.full:
            self.full = True
            self.transport.pauseProducing()

    def read(self) -> Deferred[bytes]:
        if self.buffered:
            data = b"".join(self.buffered)
            self.buffered = []
            self.unread = 0
            if self.full:
                self.full = False
                if not self.ended:
                    self.transport.resumeProducing()
            return succeed(data)
        return super().read()


class FloorScaleServer(FloorServer):
    """
    Accepts L{FloorScaleSocket}s.
    """

    def buildProtocol(self, addr: object) -> FloorScaleSocket:
        return FloorScaleSocket(self)


class FloorScaleConnector(FloorConnector):
    """
    Connects one L{FloorScaleSocket}.
    """

    def __init__(self) -> None:
        self.socket = FloorScaleSocket()


def connectScale(port: int) -> Deferred[FloorSocket]:
    """
    Connect a L{FloorScaleSocket} to C{port} on loopback.
    """
    factory = FloorScaleConnector()
    reactor.connectTCP(HOST, port, factory)
    return factory.socket.opened


async def scale(params: Params) -> dict[str, Any]:
    """
    W8 client (as C{impl_tcpext.scale}): open every connection (a bounded
    number of attempts at a time), then on each at once write its data
    (each write awaited) while a second coroutine reads the echo with
    C{read()} and checksums it.
    """
    raiseFileLimit()
    sizes = params.sizes("W8")
    count = sizes["connections"]
    data = ScaleData(sizes["perConnection"], sizes["chunk"])
    tally = ScaleTally(data, count)
    perConnection = data.perConnection

    async def reading(sock: Any) -> tuple[int, int]:
        received = crc = 0
        while received < perConnection:
            chunk = await sock.read()
            if not chunk:
                break
            received += len(chunk)
            crc = zlib.crc32(chunk, crc)
            del chunk  # not kept alive across the next await
        return received, crc

    async def one(index: int, sock: Any) -> None:
        readDone = ensureDeferred(reading(sock))
        try:
            for chunk in data.chunks(index):
                await sock.write(chunk)
            received, crc = await readDone
        except Exception:
            received, crc = -1, 0
        tally.check(index, received, crc)
        sock.close()

    start = time.perf_counter()
    semaphore = DeferredSemaphore(CONNECT_CONCURRENCY)
    attempts = [semaphore.run(connectScale, params.port) for _ in range(count)]
    socks = [await d for d in attempts]
    connected = time.perf_counter()
    for d in [ensureDeferred(one(i, sock)) for i, sock in enumerate(socks)]:
        await d
    elapsed = time.perf_counter() - connected
    return tally.result(elapsed, connected - start)


async def echoConnection(conn: Any, corrupt: list[bool]) -> None:
    """
    Send back what arrives on C{conn} until the end of the stream (each
    write awaited), then close.
    """
    while True:
        chunk = await conn.read()
        if not chunk:
            break
        if corrupt[0]:
            corrupt[0] = False
            chunk = corruptOnce(chunk)
        await conn.write(chunk)
        del chunk  # not kept alive across the next await
    await conn.close()


def serveScale(params: Params) -> None:
    """
    The W8 server: accept each connection with C{accept()}, hand it to its
    own echo coroutine, until killed.
    """
    raiseFileLimit()
    server = FloorScaleServer()
    port = reactor.listenTCP(0, server, interface=HOST, backlog=BACKLOG)
    corrupt = [params.corrupt]

    async def serve() -> None:
        while True:
            conn = await server.accept()
            ensureDeferred(echoConnection(conn, corrupt))

    print(json.dumps({"port": port.getHost().port}), flush=True)
    reactor.callWhenRunning(lambda: ensureDeferred(serve()))
    reactor.run(installSignalHandlers=True)


def run(workload: str, params: Params, idiom: bool = False) -> dict[str, Any]:
    """
    Run C{workload} (W4, W6 or W8, or W8's server; W4 in the user idiom if
    C{idiom}) and return its result.
    """
    if workload == "W4":
        if idiom:
            return drive(lambda: connectionRateIdiom(params))
        return drive(lambda: connectionRate(params))
    if idiom:
        raise BenchmarkFailure(f"the floor of the user idiom has no {workload}")
    if workload == "W6":
        return drive(lambda: tlsBulk(params))
    if workload == "W8-server":
        serveScale(params)
        sys.exit(0)
    if workload == "W8":
        return drive(lambda: scale(params))
    raise BenchmarkFailure(f"the floor implementation has no {workload}")
