# -*- test-case-name: tests.test_socket -*-
"""
What few L{tcpext.TCPClientSocket}s need, kept out of the socket itself: a
socket makes its L{Extras} the first time it needs one of these (most short
or idle connections never do), which keeps every socket small.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

__all__ = ["Extras"]


class Extras:
    """
    The rarely used state of one socket.

    @ivar drainWaiters: Writes waiting for the transport to drain.
    @ivar producer: The producer registered through C{IConsumer}, if any.
    @ivar streaming: Whether C{producer} is a push producer.
    @ivar pulling: Whether a pull producer is being asked for data now.
    @ivar pullAgain: Whether it wrote while asked (ask once more).
    @ivar shutWaiter: C{closeWrite()}'s Deferred while its FIN waits.
    @ivar tlsWaiter: C{upgradeToSecure()}'s Deferred while its handshake
        runs.
    @ivar timer: The timer that ends a TLS handshake or a TLS close the
        peer does not answer (never both: a close waits for the handshake).
    @ivar options: TCP options set before the socket opened (applied then).
    @ivar failure: The error that ended the socket (L{None}: a clean end or
        not ended).
    @ivar alpnProtocol: The protocol agreed with ALPN, once known.
    """

    __slots__ = (
        "drainWaiters",
        "producer",
        "streaming",
        "pulling",
        "pullAgain",
        "shutWaiter",
        "tlsWaiter",
        "timer",
        "options",
        "failure",
        "alpnProtocol",
    )

    def __init__(self) -> None:
        """
        Nothing in use yet.
        """
        self.drainWaiters: list[Deferred[None]] | None = None
        self.producer: Any = None
        self.streaming = False
        self.pulling = False
        self.pullAgain = False
        self.shutWaiter: Deferred[None] | None = None
        self.tlsWaiter: Deferred[None] | None = None
        self.timer: IDelayedCall | None = None
        self.options: dict[str, bool] | None = None
        self.failure: Failure | None = None
        self.alpnProtocol: str | None = None
