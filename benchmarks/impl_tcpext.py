# -*- test-case-name: tests.test_benchmarks -*-
"""
The workloads written with tcpext's socket API, as its users would write
them: C{listenSocket} / C{connectSocket} over Twisted endpoints, C{async for}
over C{server.connections}, C{await sock.read()}, C{await sock.write()}
(backpressure), C{readExactly}, C{close()}.

Two variants of W4, W5 and W8: the default one (implementation C{tcpext})
and the user idiom of C{docs/tutorial.md} (implementation C{tcpext-idiom},
C{run(..., idiom=True)}): the accept loop hands every connection to its own
coroutine (C{async for conn in server.connections:
ensureDeferred(handle(conn))}), and each client connection is a coroutine
that awaits C{connectSocket} and then C{opened}, and reads with C{read()}.

Client and server run in this one process on the default reactor, except in
W8 where the server is a separate process (C{W8-server}).
"""

from __future__ import annotations

import json
import sys
import time
import zlib
from collections.abc import Callable, Coroutine
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
    checkEcho,
    corruptOnce,
    memoryResult,
    message,
    raiseFileLimit,
    rate,
    rssBytes,
    throughput,
)
from impl_twisted import HOST, drive, reactor, tlsOptions
from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
)
from twisted.python.failure import Failure

from tcpext._server import TCPServerSocket
from tcpext._socket import TCPClientSocket
from tcpext.endpoints import connectSocket, listenSocket


async def listen(backLog: int = 128, tls: Any = None) -> TCPServerSocket:
    """
    A tcpext server on a loopback port chosen by the system.
    """
    if tls is not None:
        endpoint: Any = SSL4ServerEndpoint(
            reactor, 0, tls, backlog=BACKLOG, interface=HOST
        )
    else:
        endpoint = TCP4ServerEndpoint(reactor, 0, backlog=BACKLOG, interface=HOST)
    return await listenSocket(endpoint, backLog)


def clientEndpoint(port: int, tls: Any = None) -> Any:
    """
    The endpoint a client connects through.
    """
    if tls is not None:
        return SSL4ClientEndpoint(reactor, HOST, port, tls)
    return TCP4ClientEndpoint(reactor, HOST, port)


async def bulk(params: Params, workload: str) -> dict[str, Any]:
    """
    W1 and W6: one connection, C{total} bytes in C{chunk}-byte writes, each
    write awaited (backpressure).
    """
    sizes = params.sizes(workload)
    serverTLS = clientTLS = None
    if workload == "W6":
        serverTLS, clientTLS = tlsOptions(params.certDir)
    server = await listen(tls=serverTLS)

    async def sink() -> int:
        async for conn in server.connections:
            received = 0
            while True:
                chunk = await conn.read()
                if not chunk:
                    break
                received += len(chunk)
            await conn.close()
            return received
        raise BenchmarkFailure("the server closed before a connection came")

    sinking = ensureDeferred(sink())
    assert server.localPort is not None
    sock = await connectSocket(clientEndpoint(server.localPort, clientTLS))
    block = bulkBlock(sizes["chunk"])
    count = sizes["total"] // sizes["chunk"]
    start = time.perf_counter()
    if params.corrupt:
        count -= 1
        await sock.write(block[1:])
    for _ in range(count):
        await sock.write(block)
    version = tlsVersion(sock)
    await sock.close()
    received = await sinking
    elapsed = time.perf_counter() - start
    checkBulk(received, sizes["total"])
    await server.close()
    result = throughput(sizes["total"], elapsed)
    if version:
        result["extra"]["tls"] = version
    return result


def tlsVersion(sock: TCPClientSocket) -> str | None:
    """
    The negotiated TLS version of C{sock}, if it uses TLS.
    """
    transport: Any = sock.transport
    handle: Any = transport.getHandle() if transport is not None else None
    if hasattr(handle, "get_protocol_version_name"):
        return str(handle.get_protocol_version_name())
    return None


async def serveEcho(server: TCPServerSocket, corrupt: list[bool]) -> None:
    """
    Echo on every connection C{server} accepts, until it is closed.
    """
    async for conn in server.connections:
        ensureDeferred(echoConnection(conn, corrupt))


async def echoConnection(conn: TCPClientSocket, corrupt: list[bool]) -> None:
    """
    Send back what arrives until EOF, then close.
    """
    try:
        while True:
            chunk = await conn.read()
            if not chunk:
                break
            if corrupt[0]:
                corrupt[0] = False
                chunk = corruptOnce(chunk)
            await conn.write(chunk)
            # Do not keep the chunk alive while waiting for the next one: a
            # variable held across an await costs 64 KiB per connection.
            del chunk
    except Exception:
        pass
    await conn.close()


async def echo(params: Params, workload: str) -> dict[str, Any]:
    """
    W2 and W3: C{connections} clients each making C{roundTrips} sequential
    round trips, all at once.
    """
    sizes = params.sizes(workload)
    count = sizes.get("connections", 1)
    roundTrips, size = sizes["roundTrips"], sizes["size"]
    server = await listen()
    serving = ensureDeferred(serveEcho(server, [params.corrupt]))
    assert server.localPort is not None
    endpoint = clientEndpoint(server.localPort)
    socks = [await connectSocket(endpoint) for _ in range(count)]

    async def client(sock: TCPClientSocket) -> None:
        for i in range(roundTrips):
            sent = message(i, size)
            await sock.write(sent)
            checkEcho(await sock.readExactly(size), sent, i)
        await sock.close()

    start = time.perf_counter()
    for d in [ensureDeferred(client(sock)) for sock in socks]:
        await d
    elapsed = time.perf_counter() - start
    await server.close()
    await serving
    return rate(count * roundTrips, elapsed, "rt/s")


async def connectionRate(params: Params) -> dict[str, Any]:
    """
    W4: connect, let the server accept and close, see EOF, close; repeat.
    """
    cycles = params.sizes("W4")["cycles"]
    server = await listen()
    accepted = 0

    async def closer() -> None:
        nonlocal accepted
        async for conn in server.connections:
            accepted += 1
            conn.close()

    closing = ensureDeferred(closer())
    assert server.localPort is not None
    endpoint = clientEndpoint(server.localPort)
    start = time.perf_counter()
    for _ in range(cycles):
        sock = await connectSocket(endpoint)
        if await sock.read() != b"":
            raise BenchmarkFailure("expected EOF")
        await sock.close()
    elapsed = time.perf_counter() - start
    if accepted != cycles:
        raise BenchmarkFailure(f"{accepted} accepted, expected {cycles}")
    await server.close()
    await closing
    return rate(cycles, elapsed, "conn/s")


async def connectMany(count: int, port: int) -> list[TCPClientSocket]:
    """
    Open C{count} connections to C{port}, a bounded number at a time.
    """
    endpoint = clientEndpoint(port)
    semaphore = DeferredSemaphore(CONNECT_CONCURRENCY)
    attempts: list[Deferred[TCPClientSocket]] = [
        semaphore.run(connectSocket, endpoint) for _ in range(count)
    ]
    return [await d for d in attempts]


async def memory(params: Params) -> dict[str, Any]:
    """
    W5: resident memory per idle connection, both ends in this process; each
    end has one C{read()} pending, as an idle server has.
    """
    raiseFileLimit()
    count = params.sizes("W5")["connections"]
    server = await listen(backLog=BACKLOG)
    accepted: list[tuple[TCPClientSocket, Deferred[bytes]]] = []
    allOpen: Deferred[None] = Deferred()

    async def idle() -> None:
        async for conn in server.connections:
            accepted.append((conn, conn.read()))
            if len(accepted) == count:
                allOpen.callback(None)

    accepting = ensureDeferred(idle())
    before = rssBytes()
    assert server.localPort is not None
    clients = [
        (sock, sock.read()) for sock in await connectMany(count, server.localPort)
    ]
    await allOpen
    after = rssBytes()
    if len(clients) != count:
        raise BenchmarkFailure(f"only {len(clients)} of {count} connected")
    accepting.addErrback(lambda f: None)
    return memoryResult(before, after, count)


async def scale(params: Params) -> dict[str, Any]:
    """
    W8 client: many connections, each echoing checksummed data at once.
    """
    raiseFileLimit()
    sizes = params.sizes("W8")
    count = sizes["connections"]
    data = ScaleData(sizes["perConnection"], sizes["chunk"])
    tally = ScaleTally(data, count)
    perConnection = data.perConnection

    async def reading(sock: TCPClientSocket) -> tuple[int, int]:
        received = crc = 0
        while received < perConnection:
            chunk = await sock.read()
            if not chunk:
                break
            received += len(chunk)
            crc = zlib.crc32(chunk, crc)
            del chunk  # not kept alive across the next await
        return received, crc

    async def one(index: int, sock: TCPClientSocket) -> None:
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
    socks = await connectMany(count, params.port)
    connected = time.perf_counter()
    for d in [ensureDeferred(one(i, sock)) for i, sock in enumerate(socks)]:
        await d
    elapsed = time.perf_counter() - connected
    return tally.result(elapsed, connected - start)


def failEarly(waiting: Deferred[None]) -> None:
    """
    A connection's coroutine failed (the exception being handled) before
    C{waiting} (every connection is open) fired: fail C{waiting} with it
    instead of waiting for ever.  (Called from the coroutine's own C{except}
    rather than added to each coroutine's Deferred, which would cost
    memory per connection that the idiom does not.)
    """
    if not waiting.called:
        waiting.errback(Failure())


async def connectionRateIdiom(params: Params) -> dict[str, Any]:
    """
    W4 in the user idiom: the server hands each accepted connection to a
    coroutine that closes it; the client awaits C{connectSocket}, C{opened},
    the end of the stream and C{close()}.
    """
    cycles = params.sizes("W4")["cycles"]
    server = await listen()
    accepted = 0

    async def handle(conn: TCPClientSocket) -> None:
        nonlocal accepted
        accepted += 1
        await conn.close()

    async def serve() -> None:
        async for conn in server.connections:
            ensureDeferred(handle(conn))

    serving = ensureDeferred(serve())
    assert server.localPort is not None
    endpoint = clientEndpoint(server.localPort)
    start = time.perf_counter()
    for _ in range(cycles):
        sock = await connectSocket(endpoint)
        await sock.opened
        if await sock.read() != b"":
            raise BenchmarkFailure("expected EOF")
        await sock.close()
    elapsed = time.perf_counter() - start
    if accepted != cycles:
        raise BenchmarkFailure(f"{accepted} accepted, expected {cycles}")
    await server.close()
    await serving
    return rate(cycles, elapsed, "conn/s")


async def memoryIdiom(params: Params) -> dict[str, Any]:
    """
    W5 in the user idiom: each accepted connection has its own coroutine
    waiting in C{read()}, and so has each client connection (after awaiting
    C{connectSocket} and C{opened}).
    """
    raiseFileLimit()
    count = params.sizes("W5")["connections"]
    server = await listen(backLog=BACKLOG)
    accepted = 0
    connected = 0
    allOpen: Deferred[None] = Deferred()

    def arrived() -> None:
        if accepted == count and connected == count and not allOpen.called:
            allOpen.callback(None)

    async def handle(conn: TCPClientSocket) -> None:
        nonlocal accepted
        accepted += 1
        arrived()
        try:
            while await conn.read():
                pass
        except Exception:
            pass  # the process ends with these connections open

    async def serve() -> None:
        async for conn in server.connections:
            ensureDeferred(handle(conn))

    async def client(endpoint: Any, semaphore: DeferredSemaphore) -> None:
        nonlocal connected
        try:
            sock = await semaphore.run(connectSocket, endpoint)
            await sock.opened
        except Exception:
            failEarly(allOpen)
            return
        connected += 1
        arrived()
        try:
            while await sock.read():
                pass
        except Exception:
            pass  # the process ends with these connections open

    serving = ensureDeferred(serve())
    before = rssBytes()
    assert server.localPort is not None
    endpoint = clientEndpoint(server.localPort)
    semaphore = DeferredSemaphore(CONNECT_CONCURRENCY)
    for _ in range(count):
        ensureDeferred(client(endpoint, semaphore))
    await allOpen
    after = rssBytes()
    serving.addErrback(lambda f: None)
    return memoryResult(before, after, count)


async def scaleIdiom(params: Params) -> dict[str, Any]:
    """
    W8 client in the user idiom: each connection is one coroutine that
    awaits C{connectSocket} and C{opened}, waits for every connection to be
    open, then writes its data (each write awaited) while a second coroutine
    reads the echo with C{read()}, and awaits C{close()}.
    """
    raiseFileLimit()
    sizes = params.sizes("W8")
    count = sizes["connections"]
    data = ScaleData(sizes["perConnection"], sizes["chunk"])
    tally = ScaleTally(data, count)
    perConnection = data.perConnection
    endpoint = clientEndpoint(params.port)
    semaphore = DeferredSemaphore(CONNECT_CONCURRENCY)
    go: Deferred[None] = Deferred()
    allOpen: Deferred[None] = Deferred()
    opened = 0

    async def reading(sock: TCPClientSocket) -> tuple[int, int]:
        received = crc = 0
        while received < perConnection:
            chunk = await sock.read()
            if not chunk:
                break
            received += len(chunk)
            crc = zlib.crc32(chunk, crc)
            del chunk  # not kept alive across the next await
        return received, crc

    async def one(index: int) -> None:
        nonlocal opened
        try:
            sock = await semaphore.run(connectSocket, endpoint)
            await sock.opened
        except Exception:
            failEarly(allOpen)
            return
        opened += 1
        if opened == count:
            allOpen.callback(None)
        await go
        readDone = ensureDeferred(reading(sock))
        try:
            for chunk in data.chunks(index):
                await sock.write(chunk)
            received, crc = await readDone
        except Exception:
            received, crc = -1, 0
        tally.check(index, received, crc)
        await sock.close()

    start = time.perf_counter()
    connections = [ensureDeferred(one(i)) for i in range(count)]
    await allOpen
    connected = time.perf_counter()
    # (every coroutine waits on go: firing it runs them one after the other
    # up to their first write that has to wait)
    go.callback(None)
    for d in connections:
        await d
    elapsed = time.perf_counter() - connected
    return tally.result(elapsed, connected - start)


def serveScale(params: Params) -> None:
    """
    The W8 server: echo on loopback until killed.
    """
    raiseFileLimit()

    async def start() -> None:
        server = await listen(backLog=BACKLOG)
        print(json.dumps({"port": server.localPort}), flush=True)
        await serveEcho(server, [params.corrupt])

    reactor.callWhenRunning(lambda: ensureDeferred(start()))
    reactor.run(installSignalHandlers=True)


#: The workloads of the user-idiom variant (C{tcpext-idiom}).
IDIOM_WORKLOADS = ("W4", "W5", "W8")


def run(workload: str, params: Params, idiom: bool = False) -> dict[str, Any]:
    """
    Run one workload (in the user idiom if C{idiom}); return its result.
    """
    if idiom and workload.split("-")[0] not in IDIOM_WORKLOADS:
        raise BenchmarkFailure(f"the user-idiom variant has no {workload}")
    if workload == "W8-server":
        # the server of W8 hands each connection to its own coroutine in
        # both variants
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
    if idiom:
        work.update(
            W4=lambda: connectionRateIdiom(params),
            W5=lambda: memoryIdiom(params),
            W8=lambda: scaleIdiom(params),
        )
    return drive(work[workload])
