#!/usr/bin/env python3
"""
A standalone tcpext echo server (no extension host, no permissions): every
connection gets back what it sends, until it closes its side.

    python examples/echo_server.py --port 7000
    python examples/echo_server.py --port 0 --interface ::1

It prints C{listening on HOST:PORT} once it listens (the real port when
C{--port 0} lets the system choose) and runs until interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from tcpext import TCPClientSocket
from tcpext.endpoints import listenSocket

log = Logger(namespace="echo_server")


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """
    Parse the command line.
    """
    parser = argparse.ArgumentParser(description="A tcpext echo server.")
    parser.add_argument(
        "--port", type=int, default=7000, help="port to listen on (0: any free port)"
    )
    parser.add_argument("--interface", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--backlog", type=int, default=128, help="accepted connections to queue"
    )
    parser.add_argument("--quiet", action="store_true", help="log nothing")
    options = parser.parse_args(list(argv))
    if not 0 <= options.port <= 65535:
        parser.error(f"--port must be in 0..65535, not {options.port}")
    return options


async def echo(conn: TCPClientSocket) -> None:
    """
    Send back everything C{conn} sends, then close.
    """
    peer = f"{conn.host}:{conn.port}"
    log.info("connection from {peer}", peer=peer)
    total = 0
    try:
        async for chunk in conn:
            total += len(chunk)
            await conn.write(chunk)
        await conn.close()
    except Exception as e:
        log.info("connection from {peer} failed: {error}", peer=peer, error=e)
        conn.closeImmediately()
        return
    log.info("{peer} closed after {total} bytes", peer=peer, total=total)


async def main(reactor: Any, argv: Sequence[str]) -> None:
    """
    Listen and echo until the reactor stops.
    """
    options = parseArguments(argv)
    if not options.quiet:
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    endpointType = (
        TCP6ServerEndpoint if ":" in options.interface else TCP4ServerEndpoint
    )
    server = await listenSocket(
        endpointType(reactor, options.port, interface=options.interface),
        backLog=options.backlog,
    )
    print(f"listening on {server.localAddress}:{server.localPort}", flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", server.close)
    async for conn in server.connections:
        defer.ensureDeferred(echo(conn))


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
