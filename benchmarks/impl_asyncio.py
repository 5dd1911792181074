# -*- test-case-name: tests.test_benchmarks -*-
"""
The workloads written with asyncio streams (C{asyncio.start_server},
C{asyncio.open_connection}, C{StreamReader}/C{StreamWriter} with
C{drain()}), on asyncio's default event loop or on uvloop.

Client and server run in this one process on one event loop, except in W8
where the server is a separate process (C{W8-server}).
"""

from __future__ import annotations

import asyncio
import json
import ssl
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

HOST = "127.0.0.1"

#: How much one C{read()} asks for: asyncio's own largest socket read.  The
#: streams keep their default buffer limit (64 KiB), as tcpext keeps its
#: default read high-water mark (64 KiB).
READ = 256 * 1024


def listeningPort(server: asyncio.base_events.Server) -> int:
    """
    The port C{server} listens on.
    """
    return int(server.sockets[0].getsockname()[1])


def tlsContexts(certDir: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """
    Server and client TLS 1.3 contexts from the runner's certificate.
    """
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.load_cert_chain(f"{certDir}/cert.pem", f"{certDir}/key.pem")
    client = ssl.create_default_context(cafile=f"{certDir}/cert.pem")
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    return server, client


async def bulk(params: Params, workload: str) -> dict[str, Any]:
    """
    W1 and W6: one connection, C{total} bytes in C{chunk}-byte writes, each
    followed by C{drain()}.
    """
    sizes = params.sizes(workload)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = 0
        while True:
            data = await reader.read(READ)
            if not data:
                break
            received += len(data)
        writer.close()
        done.set_result(received)

    serverContext = clientContext = None
    if workload == "W6":
        serverContext, clientContext = tlsContexts(params.certDir)
    server = await asyncio.start_server(sink, HOST, 0, ssl=serverContext)
    reader, writer = await asyncio.open_connection(
        HOST,
        listeningPort(server),
        ssl=clientContext,
        server_hostname="localhost" if clientContext else None,
    )
    block = bulkBlock(sizes["chunk"])
    count = sizes["total"] // sizes["chunk"]
    start = time.perf_counter()
    if params.corrupt:
        count -= 1
        writer.write(block[1:])
    for _ in range(count):
        writer.write(block)
        await writer.drain()
    version = None
    sslObject = writer.get_extra_info("ssl_object")
    if sslObject is not None:
        version = sslObject.version()
    writer.close()
    await writer.wait_closed()
    received = await done
    elapsed = time.perf_counter() - start
    checkBulk(received, sizes["total"])
    server.close()
    result = throughput(sizes["total"], elapsed)
    if version:
        result["extra"]["tls"] = version
    return result


def echoHandler(
    corrupt: list[bool],
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]:
    """
    An echo connection handler; C{corrupt[0]} damages the first echo once.
    """

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                data = await reader.read(READ)
                if not data:
                    break
                if corrupt[0]:
                    corrupt[0] = False
                    data = corruptOnce(data)
                writer.write(data)
                # Not kept alive across the awaits (64 KiB per connection).
                del data
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    return handle


async def echo(params: Params, workload: str) -> dict[str, Any]:
    """
    W2 and W3: C{connections} clients each making C{roundTrips} sequential
    round trips, all at once.
    """
    sizes = params.sizes(workload)
    count = sizes.get("connections", 1)
    roundTrips, size = sizes["roundTrips"], sizes["size"]
    server = await asyncio.start_server(echoHandler([params.corrupt]), HOST, 0)
    port = listeningPort(server)
    streams = [await asyncio.open_connection(HOST, port) for _ in range(count)]

    async def client(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        for i in range(roundTrips):
            sent = message(i, size)
            writer.write(sent)
            checkEcho(await reader.readexactly(size), sent, i)
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*[client(r, w) for r, w in streams])
    elapsed = time.perf_counter() - start
    server.close()
    return rate(count * roundTrips, elapsed, "rt/s")


async def connectionRate(params: Params) -> dict[str, Any]:
    """
    W4: connect, let the server accept and close, see EOF, close; repeat.
    """
    cycles = params.sizes("W4")["cycles"]
    accepted = 0

    async def closer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    server = await asyncio.start_server(closer, HOST, 0, backlog=BACKLOG)
    port = listeningPort(server)
    start = time.perf_counter()
    for _ in range(cycles):
        reader, writer = await asyncio.open_connection(HOST, port)
        if await reader.read(READ) != b"":
            raise BenchmarkFailure("expected EOF")
        writer.close()
        await writer.wait_closed()
    elapsed = time.perf_counter() - start
    if accepted != cycles:
        raise BenchmarkFailure(f"{accepted} accepted, expected {cycles}")
    server.close()
    return rate(cycles, elapsed, "conn/s")


async def connectMany(count: int, port: int) -> list[Any]:
    """
    Open C{count} connections to C{port}, a bounded number at a time.
    """
    semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one() -> Any:
        async with semaphore:
            return await asyncio.open_connection(HOST, port)

    return list(await asyncio.gather(*[one() for _ in range(count)]))


async def memory(params: Params) -> dict[str, Any]:
    """
    W5: resident memory per idle connection, both ends in this process; each
    end has a task waiting in C{read()}, as an idle streams server has.
    """
    raiseFileLimit()
    count = params.sizes("W5")["connections"]
    loop = asyncio.get_running_loop()
    allOpen: asyncio.Future[None] = loop.create_future()
    accepted = []

    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        if len(accepted) == count:
            allOpen.set_result(None)
        await reader.read(READ)

    server = await asyncio.start_server(idle, HOST, 0, backlog=BACKLOG)
    before = rssBytes()
    clients = await connectMany(count, listeningPort(server))
    waiting = [asyncio.ensure_future(reader.read(READ)) for reader, _ in clients]
    await allOpen
    await asyncio.sleep(0)
    after = rssBytes()
    if len(waiting) != count:
        raise BenchmarkFailure(f"only {len(waiting)} of {count} connected")
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

    async def one(
        index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def reading() -> tuple[int, int]:
            received = crc = 0
            while received < perConnection:
                chunk = await reader.read(READ)
                if not chunk:
                    break
                received += len(chunk)
                crc = zlib.crc32(chunk, crc)
                del chunk  # not kept alive across the next await
            return received, crc

        readTask = asyncio.ensure_future(reading())
        try:
            for chunk in data.chunks(index):
                writer.write(chunk)
                await writer.drain()
            received, crc = await readTask
        except ConnectionError:
            received, crc = -1, 0
        tally.check(index, received, crc)
        writer.close()

    start = time.perf_counter()
    streams = await connectMany(count, params.port)
    connected = time.perf_counter()
    await asyncio.gather(*[one(i, r, w) for i, (r, w) in enumerate(streams)])
    elapsed = time.perf_counter() - connected
    return tally.result(elapsed, connected - start)


async def serveScale(params: Params) -> None:
    """
    The W8 server: echo on loopback until killed.
    """
    raiseFileLimit()
    server = await asyncio.start_server(
        echoHandler([params.corrupt]), HOST, 0, backlog=BACKLOG
    )
    print(json.dumps({"port": listeningPort(server)}), flush=True)
    await server.serve_forever()


def runOn(
    factory: Callable[[], asyncio.AbstractEventLoop],
    coroutine: Coroutine[Any, Any, Any],
) -> Any:
    """
    Run C{coroutine} to the end on a new event loop from C{factory}, then
    close the loop (what C{asyncio.Runner} does, which Python 3.10 lacks).
    """
    eventLoop = factory()
    asyncio.set_event_loop(eventLoop)
    try:
        return eventLoop.run_until_complete(coroutine)
    finally:
        try:
            pending = asyncio.all_tasks(eventLoop)
            for task in pending:
                task.cancel()
            eventLoop.run_until_complete(
                asyncio.gather(*pending, return_exceptions=True)
            )
            eventLoop.run_until_complete(eventLoop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            eventLoop.close()


def run(workload: str, params: Params, loop: str) -> dict[str, Any]:
    """
    Run one workload on the named event loop; return its result.
    """
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    if workload == "W8-server":
        runOn(factory, serveScale(params))
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
    result: dict[str, Any] = runOn(factory, work[workload]())
    return result
