#!/usr/bin/env python
# -*- test-case-name: tests.test_benchmarks -*-
"""
Count what one connection costs in the user idiom of docs/tutorial.md: the
Deferreds made, the coroutine steps (starts and resumptions), the function
calls (all, and those in tcpext's own code) and the objects and bytes still
alive after each phase of a connection's life, per connection pair (both
ends).

    python benchmarks/count_idiom.py                 # a table
    python benchmarks/count_idiom.py --json          # the figures as JSON

Two measurements:

  - B{phases}, on in-memory transports (C{twisted.test.iosim}) so that each
    phase is exact: C{connect} (the client calls C{connectSocket}),
    C{accept} (the server's transport connects: the accept loop hands the
    socket to a new handler coroutine, which waits in C{read()}), C{open}
    (the client's transport connects: C{connectSocket} fires, the client
    awaits C{opened}, writes 5 bytes and waits in C{read()}), C{first read}
    (the bytes reach the server, are echoed, reach the client) and C{close}
    (the client awaits C{close()}, the server's handler sees the end of the
    stream and awaits C{close()}, both coroutines end).  The client's
    coroutine waits on a gate between C{first read} and C{close}: that is
    one of the resumptions counted in C{close}.
  - B{cycles}, over real loopback TCP: W4 of the C{tcpext-idiom} benchmark
    (connect, accept, the server's handler closes, the client reads the end
    of the stream and closes), totals divided by the number of cycles.

No timing: these are exact counts (objects and bytes are what is left
allocated after a garbage collection, so they vary by a few between runs).
"""

from __future__ import annotations

import argparse
import dis
import gc
import inspect
import json
import os
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from twisted.internet.defer import Deferred, ensureDeferred  # noqa: E402
from twisted.internet.endpoints import (  # noqa: E402
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
)
from twisted.internet.testing import MemoryReactorClock  # noqa: E402
from twisted.test.iosim import FakeTransport, IOPump  # noqa: E402

from tcpext._socket import TCPClientSocket  # noqa: E402
from tcpext.endpoints import connectSocket, listenSocket  # noqa: E402

TCPEXT = os.path.join(ROOT, "tcpext") + os.sep
PHASES = ["connect", "accept", "open", "first read", "close"]
FIGURES = ["deferreds", "coroutineSteps", "coroutinesStarted", "calls"]
FIGURES += ["tcpextCalls", "objectsKept", "bytesKept"]


class Counter:
    """
    Counts Deferreds, coroutine steps and function calls while active.
    """

    def __init__(self) -> None:
        self.deferreds = 0
        self.coroutineSteps = 0
        self.calls = 0
        self.tcpextCalls = 0
        self.coroutinesStarted = 0

    def _profile(self, frame: Any, event: str, arg: object) -> None:
        """
        The profile hook: count calls and coroutine steps.
        """
        if event != "call":
            return
        code = frame.f_code
        if code is _countingInit.__code__:
            return
        self.calls += 1
        if code.co_filename.startswith(TCPEXT):
            self.tcpextCalls += 1
        if code.co_flags & inspect.CO_COROUTINE:
            self.coroutineSteps += 1
            if frame.f_lasti <= _firstResume(code):
                self.coroutinesStarted += 1

    @contextmanager
    def counting(self) -> Iterator[None]:
        """
        Count while the block runs.
        """
        global _active
        _active = self
        sys.setprofile(self._profile)
        try:
            yield
        finally:
            sys.setprofile(None)
            _active = None

    def figures(self) -> dict[str, int]:
        """
        The counts so far.
        """
        return {
            "deferreds": self.deferreds,
            "coroutineSteps": self.coroutineSteps,
            "coroutinesStarted": self.coroutinesStarted,
            "calls": self.calls,
            "tcpextCalls": self.tcpextCalls,
        }


_firstResumes: dict[Any, int] = {}


def _firstResume(code: Any) -> int:
    """
    The offset of the instruction where a new coroutine of C{code} starts
    (its first C{RESUME}; before Python 3.11, the first instruction): a step
    that enters the frame at or before it is the coroutine's start.
    """
    offset = _firstResumes.get(code)
    if offset is None:
        offset = 0
        for instruction in dis.get_instructions(code):
            if instruction.opname == "RESUME":
                offset = instruction.offset
                break
        _firstResumes[code] = offset
    return offset


_active: Counter | None = None
_originalInit = Deferred.__init__


def _countingInit(self: Deferred[Any], canceller: Any = None) -> None:
    """
    C{Deferred.__init__}, counted while a L{Counter} is active.
    """
    if _active is not None:
        _active.deferreds += 1
    _originalInit(self, canceller)


def liveFigures() -> tuple[int, int]:
    """
    The number of objects the collector tracks and the bytes traced, after a
    collection.
    """
    gc.collect()
    return len(gc.get_objects()), tracemalloc.get_traced_memory()[0]


def measure(step: Callable[[], None], pairs: int) -> dict[str, float]:
    """
    Run C{step} under a counter; return its counts per connection pair and
    the objects and bytes it left alive.
    """
    objectsBefore, bytesBefore = liveFigures()
    counter = Counter()
    with counter.counting():
        step()
    figures: dict[str, float] = dict(counter.figures())
    del counter
    objectsAfter, bytesAfter = liveFigures()
    figures["objectsKept"] = objectsAfter - objectsBefore
    figures["bytesKept"] = bytesAfter - bytesBefore
    return {name: value / pairs for name, value in figures.items()}


def phases(pairs: int) -> dict[str, dict[str, float]]:
    """
    The in-memory measurement: C{pairs} connections taken through each phase
    together, counted phase by phase.
    """
    reactor = MemoryReactorClock()
    listening = listenSocket(TCP4ServerEndpoint(reactor, 7000, interface="127.0.0.1"))
    server = listening.result
    serverFactory = reactor.tcpServers[0][1]
    handlers: list[Deferred[None]] = []
    gate: Deferred[None] = Deferred()
    clients: list[Deferred[None]] = []
    accepted: list[tuple[Any, FakeTransport]] = []
    pumps: list[IOPump] = []

    async def handle(conn: TCPClientSocket) -> None:
        async for chunk in conn:
            await conn.write(chunk)
        await conn.close()

    async def serve() -> None:
        async for conn in server.connections:
            handlers.append(ensureDeferred(handle(conn)))

    async def client() -> None:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", 7000)
        sock = await connectSocket(endpoint)
        await sock.opened
        await sock.write(b"hello")
        if await sock.read() != b"hello":
            raise RuntimeError("the echo was wrong")
        await gate
        await sock.close()

    ensureDeferred(serve())

    def connect() -> None:
        for _ in range(pairs):
            clients.append(ensureDeferred(client()))

    def accept() -> None:
        for _ in range(pairs):
            protocol = serverFactory.buildProtocol(None)
            transport = FakeTransport(protocol, isServer=True)
            protocol.makeConnection(transport)
            accepted.append((protocol, transport))

    def openClients() -> None:
        for index, (_, _, factory, _, _) in enumerate(reactor.tcpClients):
            protocol = factory.buildProtocol(None)
            transport = FakeTransport(protocol, isServer=False)
            protocol.makeConnection(transport)
            serverProtocol, serverTransport = accepted[index]
            pumps.append(
                IOPump(protocol, serverProtocol, transport, serverTransport, False)
            )

    def firstRead() -> None:
        for pump in pumps:
            pump.flush()

    def close() -> None:
        gate.callback(None)
        for pump in pumps:
            pump.flush()

    results = {}
    for name, step in zip(
        PHASES, [connect, accept, openClients, firstRead, close], strict=True
    ):
        results[name] = measure(step, pairs)
    del pumps[:], accepted[:]
    for d in clients + handlers:
        if not d.called or d.result is not None:
            raise RuntimeError(f"a coroutine did not end cleanly: {d!r}")
    results["total"] = {name: sum(results[p][name] for p in PHASES) for name in FIGURES}
    return results


def cycles(count: int) -> dict[str, float]:
    """
    The loopback measurement: W4 of the user idiom, C{count} cycles, totals
    per cycle.
    """
    from twisted.internet import reactor

    sys.path.insert(0, HERE)
    from _common import Params
    from impl_tcpext import connectionRateIdiom

    outcome: list[Any] = []
    counter = Counter()

    def run() -> None:
        d = ensureDeferred(connectionRateIdiom(Params(scale=count / 5000)))
        d.addBoth(outcome.append).addBoth(lambda _: reactor.stop())

    # Everything the reactor runs is counted, its own loop included.
    reactor.callWhenRunning(run)
    sys.setprofile(counter._profile)
    global _active
    _active = counter
    try:
        reactor.run(installSignalHandlers=False)
    finally:
        sys.setprofile(None)
        _active = None
    if not isinstance(outcome[0], dict):
        raise RuntimeError(f"the cycles failed: {outcome[0]}")
    figures = counter.figures()
    return {name: value / count for name, value in figures.items()}


def table(results: dict[str, dict[str, float]], loopback: dict[str, float]) -> str:
    """
    The figures as a Markdown table.
    """
    header = (
        "| phase | Deferreds | coroutine steps | coroutines started | calls | "
        "calls in tcpext | objects kept | bytes kept |"
    )
    lines = [header, "|---|" + "---:|" * 7]
    for name in PHASES + ["total"]:
        row = results[name]
        cells = " | ".join(f"{row[f]:,.1f}" for f in FIGURES)
        lines.append(f"| {name} | {cells} |")
    lines += [
        "",
        "W4 of the user idiom over loopback, per cycle: "
        + ", ".join(
            f"{label} {loopback[key]:,.1f}"
            for key, label in [
                ("deferreds", "Deferreds"),
                ("coroutineSteps", "coroutine steps"),
                ("coroutinesStarted", "coroutines started"),
                ("calls", "calls"),
                ("tcpextCalls", "calls in tcpext"),
            ]
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """
    Measure and print.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.cycles < 1:
        parser.error("--pairs and --cycles must be at least 1")
    Deferred.__init__ = _countingInit  # type: ignore[method-assign]
    tracemalloc.start()
    try:
        results = phases(args.pairs)
    finally:
        tracemalloc.stop()
    loopback = cycles(args.cycles)
    if args.json:
        print(json.dumps({"phases": results, "loopback": loopback}))
    else:
        print(table(results, loopback))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
