# -*- test-case-name: tests.test_benchmarks -*-
"""
The workloads written with bare Twisted: C{Protocol} subclasses driven by
callbacks, with C{IPushProducer} for backpressure (the baseline every other
implementation is compared with).

Client and server run in this one process on the default reactor, except in
W8 where the server is a separate process (C{W8-server}).
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from collections.abc import Callable, Coroutine, Iterator
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
    memoryResult,
    message,
    raiseFileLimit,
    rate,
    rssBytes,
    throughput,
)
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

HOST = "127.0.0.1"
reactor: Any = _reactor
_DONE = Failure(ConnectionDone())


class BenchProtocol(Protocol):
    """
    A protocol whose transport is typed loosely: each workload knows which
    transport (TCP or TLS) it runs on.
    """

    transport: Any


def drive(work: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    """
    Run the reactor until the coroutine C{work()} is done; return its result.
    """
    outcome: list[Any] = []

    def start() -> None:
        d = ensureDeferred(work())

        def finish(result: object) -> None:
            outcome.append(result)
            reactor.stop()

        d.addBoth(finish)

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


class OneProtocolFactory(Factory):
    """
    Hands out one given protocol instance.  (Twisted's C{connectProtocol}
    defines a new class on every call: about 2 KiB per connection, which
    would be charged to bare Twisted in W5.)
    """

    def __init__(self, protocol: Protocol) -> None:
        self.instance = protocol

    def buildProtocol(self, addr: object) -> Protocol:
        return self.instance


def connectProtocol(endpoint: Any, protocol: Protocol) -> Deferred[Any]:
    """
    Connect C{protocol} through C{endpoint}; fires with it once connected.
    """
    return endpoint.connect(OneProtocolFactory(protocol))


@implementer(IPushProducer)
class BulkSource(BenchProtocol):
    """
    Writes C{count} blocks as fast as the transport takes them, then closes.
    """

    def __init__(self, block: bytes, count: int, short: bool) -> None:
        self.block = block
        self.remaining = count
        self.paused = False
        self.finished = False
        self.short = short
        self.version = ""

    def start(self) -> None:
        self.transport.registerProducer(self, True)
        if self.short:
            self.remaining -= 1
            self.transport.write(self.block[1:])
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        write = self.transport.write
        block = self.block
        while not self.paused and self.remaining > 0:
            self.remaining -= 1
            write(block)
        if self.remaining == 0 and not self.finished:
            self.finished = True
            handle = self.transport.getHandle()
            if hasattr(handle, "get_protocol_version_name"):
                self.version = handle.get_protocol_version_name()
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def stopProducing(self) -> None:
        self.remaining = 0


class BulkSink(BenchProtocol):
    """
    Counts what arrives; fires C{done} with the count when the peer closes.
    """

    def __init__(self, done: Deferred[int]) -> None:
        self.done = done
        self.received = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        self.done.callback(self.received)


@implementer(IPushProducer)
class EchoServer(BenchProtocol):
    """
    Sends back what it receives; stops reading while its transport's buffer
    is full.
    """

    factory: EchoFactory

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        if self.factory.corrupt:
            self.factory.corrupt = False
            data = corruptOnce(data)
        self.transport.write(data)

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class EchoFactory(Factory):
    """
    Makes L{EchoServer}s; C{corrupt} damages the first echo once.
    """

    protocol: Any = EchoServer

    def __init__(self, corrupt: bool) -> None:
        self.corrupt = corrupt


class EchoClient(BenchProtocol):
    """
    Makes C{roundTrips} sequential round trips of C{size}-byte messages.
    """

    def __init__(self, roundTrips: int, size: int, done: Deferred[None]) -> None:
        self.roundTrips = roundTrips
        self.size = size
        self.done = done
        self.i = 0
        self.expected = b""
        self.pending = b""

    def start(self) -> None:
        self.expected = message(0, self.size)
        self.transport.write(self.expected)

    def dataReceived(self, data: bytes) -> None:
        if self.pending:
            data = self.pending + data
        if len(data) < self.size:
            self.pending = data
            return
        self.pending = b""
        if data != self.expected:
            self.transport.abortConnection()
            self.done.errback(
                BenchmarkFailure(f"round trip {self.i}: echo corrupted or out of order")
            )
            return
        self.i += 1
        if self.i == self.roundTrips:
            self.transport.loseConnection()
            self.done.callback(None)
            return
        self.expected = message(self.i, self.size)
        self.transport.write(self.expected)


async def listenAndConnect(
    serverFactory: Any, client: Protocol
) -> tuple[Any, Protocol]:
    """
    Listen on loopback and connect C{client} to it.
    """
    port = reactor.listenTCP(0, serverFactory, interface=HOST)
    endpoint = TCP4ClientEndpoint(reactor, HOST, port.getHost().port)
    proto = await connectProtocol(endpoint, client)
    return port, proto


async def bulk(params: Params, workload: str) -> dict[str, Any]:
    """
    W1 and W6: one connection, C{total} bytes in C{chunk}-byte writes.
    """
    sizes = params.sizes(workload)
    done: Deferred[int] = Deferred()
    serverFactory = Factory.forProtocol(lambda: BulkSink(done))
    block = bulkBlock(sizes["chunk"])
    source = BulkSource(block, sizes["total"] // sizes["chunk"], params.corrupt)
    if workload == "W6":
        from twisted.internet.endpoints import SSL4ClientEndpoint

        serverOptions, clientOptions = tlsOptions(params.certDir)
        port = reactor.listenSSL(0, serverFactory, serverOptions, interface=HOST)
        endpoint: Any = SSL4ClientEndpoint(
            reactor, HOST, port.getHost().port, clientOptions
        )
        await connectProtocol(endpoint, source)
    else:
        port, _ = await listenAndConnect(serverFactory, source)
    start = time.perf_counter()
    source.start()
    received = await done
    elapsed = time.perf_counter() - start
    checkBulk(received, sizes["total"])
    await port.stopListening()
    result = throughput(sizes["total"], elapsed)
    if source.version:
        result["extra"]["tls"] = source.version
    return result


def tlsOptions(certDir: str) -> tuple[Any, Any]:
    """
    Server and client TLS 1.3 options from the runner's certificate.
    """
    from twisted.internet.ssl import (
        Certificate,
        CertificateOptions,
        PrivateCertificate,
        TLSVersion,
        optionsForClientTLS,
    )

    with open(f"{certDir}/cert.pem", "rb") as f:
        certPem = f.read()
    with open(f"{certDir}/key.pem", "rb") as f:
        keyPem = f.read()
    private = PrivateCertificate.loadPEM(certPem + keyPem)
    server = CertificateOptions(
        privateKey=private.privateKey.original,
        certificate=private.original,
        raiseMinimumTo=TLSVersion.TLSv1_3,
    )
    client = optionsForClientTLS(
        "localhost",
        trustRoot=Certificate.loadPEM(certPem),
        extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_3},
    )
    return server, client


async def echo(params: Params, workload: str) -> dict[str, Any]:
    """
    W2 and W3: C{connections} clients each making C{roundTrips} sequential
    round trips, all at once.
    """
    sizes = params.sizes(workload)
    count = sizes.get("connections", 1)
    port = reactor.listenTCP(0, EchoFactory(params.corrupt), interface=HOST)
    endpoint = TCP4ClientEndpoint(reactor, HOST, port.getHost().port)
    clients = []
    dones = []
    for _ in range(count):
        done: Deferred[None] = Deferred()
        client = EchoClient(sizes["roundTrips"], sizes["size"], done)
        await connectProtocol(endpoint, client)
        clients.append(client)
        dones.append(done)
    start = time.perf_counter()
    for client in clients:
        client.start()
    for done in dones:
        await done
    elapsed = time.perf_counter() - start
    await port.stopListening()
    return rate(count * sizes["roundTrips"], elapsed, "rt/s")


class Closer(BenchProtocol):
    """
    Closes every connection as soon as it is accepted.
    """

    factory: CloserFactory

    def connectionMade(self) -> None:
        self.factory.accepted += 1
        self.transport.loseConnection()


class CloserFactory(Factory):
    """
    Counts the connections its L{Closer}s accepted.
    """

    protocol: Any = Closer
    accepted = 0


class Cycler(BenchProtocol):
    """
    A client that waits for the server to close, then starts the next cycle.
    """

    factory: CycleFactory

    def connectionLost(self, reason: Failure = _DONE) -> None:
        self.factory.cycleDone(reason)


class CycleFactory(ClientFactory):
    """
    Connects C{cycles} times, one after the other.
    """

    protocol: Any = Cycler

    def __init__(self, cycles: int, port: int, done: Deferred[int]) -> None:
        self.cycles = cycles
        self.port = port
        self.done = done
        self.count = 0

    def next(self) -> None:
        reactor.connectTCP(HOST, self.port, self)

    def cycleDone(self, reason: Failure) -> None:
        if not reason.check(ConnectionDone):
            self.done.errback(reason)
            return
        self.count += 1
        if self.count == self.cycles:
            self.done.callback(self.count)
        else:
            self.next()

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        self.done.errback(reason)


async def connectionRate(params: Params) -> dict[str, Any]:
    """
    W4: connect, let the server accept and close, see EOF, close; repeat.
    """
    cycles = params.sizes("W4")["cycles"]
    serverFactory = CloserFactory()
    port = reactor.listenTCP(0, serverFactory, interface=HOST, backlog=BACKLOG)
    done: Deferred[int] = Deferred()
    factory = CycleFactory(cycles, port.getHost().port, done)
    start = time.perf_counter()
    factory.next()
    count = await done
    elapsed = time.perf_counter() - start
    if serverFactory.accepted != cycles or count != cycles:
        raise BenchmarkFailure(
            f"{serverFactory.accepted} accepted, {count} cycles, expected {cycles}"
        )
    await port.stopListening()
    return rate(cycles, elapsed, "conn/s")


class Idle(BenchProtocol):
    """
    An idle connection, remembered by its factory.
    """

    factory: IdleFactory

    def connectionMade(self) -> None:
        self.factory.open.append(self)
        if len(self.factory.open) == self.factory.expected:
            self.factory.allOpen.callback(None)


class IdleFactory(Factory):
    """
    Keeps the accepted idle connections.
    """

    protocol: Any = Idle

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.open: list[Idle] = []
        self.allOpen: Deferred[None] = Deferred()


async def connectMany(
    count: int, port: int, makeProtocol: Callable[[int], Protocol]
) -> list[Protocol]:
    """
    Open C{count} connections to C{port}, a bounded number at a time.
    """
    endpoint = TCP4ClientEndpoint(reactor, HOST, port)
    semaphore = DeferredSemaphore(CONNECT_CONCURRENCY)
    results: list[Deferred[Protocol]] = [
        semaphore.run(connectProtocol, endpoint, makeProtocol(i)) for i in range(count)
    ]
    return [await d for d in results]


async def memory(params: Params) -> dict[str, Any]:
    """
    W5: resident memory per idle connection, both ends in this process.
    """
    raiseFileLimit()
    count = params.sizes("W5")["connections"]
    factory = IdleFactory(count)
    port = reactor.listenTCP(0, factory, interface=HOST, backlog=BACKLOG)
    before = rssBytes()
    clients = await connectMany(count, port.getHost().port, lambda i: Protocol())
    await factory.allOpen
    after = rssBytes()
    if len(clients) != count:
        raise BenchmarkFailure(f"only {len(clients)} of {count} connected")
    return memoryResult(before, after, count)


@implementer(IPushProducer)
class ScaleClient(BenchProtocol):
    """
    W8: sends its checksummed data with backpressure and checks the echo.
    """

    def __init__(self, index: int, data: ScaleData, finished: Callable[[], None]):
        self.index = index
        self.data = data
        self.finished = finished
        self.tally: ScaleTally | None = None
        self.chunks: Iterator[bytes] = iter(())
        self.paused = False
        self.received = 0
        self.crc = 0
        self.done = False

    def start(self, tally: ScaleTally) -> None:
        self.tally = tally
        self.chunks = self.data.chunks(self.index)
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        for chunk in self.chunks:
            self.transport.write(chunk)
            if self.paused:
                return
        if self.transport.producer is self:
            self.transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.chunks = iter(())

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.crc = zlib.crc32(data, self.crc)
        if self.received >= self.data.perConnection:
            self.transport.loseConnection()
            self.end()

    def connectionLost(self, reason: Failure = _DONE) -> None:
        self.end()

    def end(self) -> None:
        if not self.done and self.tally is not None:
            self.done = True
            self.tally.check(self.index, self.received, self.crc)
            self.finished()


async def scale(params: Params) -> dict[str, Any]:
    """
    W8 client: many connections, each echoing checksummed data at once.
    """
    raiseFileLimit()
    sizes = params.sizes("W8")
    count = sizes["connections"]
    data = ScaleData(sizes["perConnection"], sizes["chunk"])
    tally = ScaleTally(data, count)
    allDone: Deferred[None] = Deferred()
    remaining = [count]

    def finished() -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            allDone.callback(None)

    start = time.perf_counter()
    clients: list[Any] = await connectMany(
        count, params.port, lambda i: ScaleClient(i, data, finished)
    )
    connected = time.perf_counter()
    for client in clients:
        client.start(tally)
    await allDone
    elapsed = time.perf_counter() - connected
    return tally.result(elapsed, connected - start)


def serveScale(params: Params) -> None:
    """
    The W8 server: echo on loopback until killed.
    """
    raiseFileLimit()
    port = reactor.listenTCP(
        0, EchoFactory(params.corrupt), interface=HOST, backlog=BACKLOG
    )
    print(json.dumps({"port": port.getHost().port}), flush=True)
    reactor.run(installSignalHandlers=True)


def run(workload: str, params: Params) -> dict[str, Any]:
    """
    Run one workload; return its result.
    """
    if workload == "W8-server":
        serveScale(params)
        sys.exit(0)
    work: dict[str, Callable[[], Coroutine[Any, Any, dict[str, Any]]]] = {
        "W1": lambda: bulk(params, "W1"),
        "W2": lambda: echo(params, "W2"),
        "W3": lambda: echo(params, "W3"),
        "W4": lambda: connectionRate(params),
        "W5": lambda: memory(params),
        "W6": lambda: bulk(params, "W6"),
        "W8": lambda: scale(params),
    }
    return drive(work[workload])
