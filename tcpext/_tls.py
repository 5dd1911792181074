# -*- test-case-name: tests.test_tls -*-
"""
TLS on a L{tcpext.TCPClientSocket}: STARTTLS (C{upgradeToSecure}), the
handshake and close timeouts (only sockets that use TLS have timers), and
the batching of the TLS records that one network read carries, so that a
pending C{read()} wakes once per network read rather than once per 16 KiB
record.

State: C{_tls} (a L{TLSState}); the upgrade's Deferred and the timer live in
the socket's L{Extras}; the protocol's C{batch} gathers the records of the
network read being decrypted (handed to the socket as one chunk once it is
decrypted, or before any other event the TLS layer reports meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import TimeoutError as UserTimeoutError
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    ITLSTransport,
)

from tcpext._errors import SocketClosed
from tcpext._extras import Extras
from tcpext._state import OPENED, State, TLSEvent, TLSState, tlsTransition
from tcpext._twistedcompat import answerALPN, clockOf, tlsLayer, wrapTLSReceive

__all__ = ["TLSPart", "alpnOffer", "alpnProtocolList", "isTLSOptions"]

_CLOSED = State.CLOSED


def alpnProtocolList(value: object, what: str = "alpnProtocols") -> tuple[bytes, ...]:
    """
    The ALPN protocol names of an C{alpnProtocols} option, in order of
    preference: a list or tuple of names, each a non-empty C{str} of ASCII
    characters (C{"h2"}, C{"http/1.1"}) or C{bytes}, at most 255 bytes.
    L{None} is no ALPN (an empty tuple).

    @param what: How to name the option in errors.

    @raise TypeError: If C{value} is no list or tuple of names.
    @raise ValueError: If a name is empty, too long, not ASCII, or repeated.
    """
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise TypeError(
            f"{what} must be a list of protocol names such as ['h2', 'http/1.1'], "
            f"not {type(value).__name__}"
        )
    names: list[bytes] = []
    for item in value:
        if isinstance(item, str):
            try:
                name = item.encode("ascii")
            except UnicodeEncodeError:
                raise ValueError(
                    f"{what}: protocol name {item!r} is not ASCII"
                ) from None
        elif isinstance(item, bytes):
            name = item
        else:
            raise TypeError(
                f"{what}: protocol names are str or bytes, not {type(item).__name__}"
            )
        if not 1 <= len(name) <= 255:
            raise ValueError(
                f"{what}: protocol name {item!r} must be 1 to 255 bytes long"
            )
        if name in names:
            raise ValueError(f"{what}: protocol name {item!r} is listed twice")
        names.append(name)
    return tuple(names)


def alpnOffer(tlsProtocol: object) -> tuple[bytes, ...]:
    """
    The ALPN protocols a tcpext server offers on the TLS connection of
    C{tlsProtocol}: the C{alpnProtocols} of the server factory whose
    protocol it wraps (none for other protocols).
    """
    protocol = getattr(tlsProtocol, "wrappedProtocol", None)
    offer = getattr(getattr(protocol, "factory", None), "alpnProtocols", None)
    return offer if isinstance(offer, tuple) else ()


def isTLSOptions(options: object) -> bool:
    """
    Whether C{options} is something Twisted's C{startTLS} accepts: a TLS
    connection creator, or an old-style context factory.
    """
    return (
        IOpenSSLClientConnectionCreator.providedBy(options)
        or IOpenSSLServerConnectionCreator.providedBy(options)
        or callable(getattr(options, "getContext", None))
    )


class TLSPart:
    """
    The TLS part of L{tcpext.TCPClientSocket} (the socket class holds the
    state in its slots).
    """

    if not TYPE_CHECKING:
        # (no slots of its own: TCPClientSocket declares them all)
        __slots__ = ()

    #: Seconds a TLS C{close()} waits for the peer's close-notify before it
    #: aborts the connection (C{closed} then fails with
    #: L{twisted.internet.error.TimeoutError});
    #: L{None}: wait as long as the peer takes.
    tlsCloseTimeout: float | None = 30.0

    #: Seconds a TLS handshake (TLS from the start, or C{upgradeToSecure()})
    #: may take before the connection is aborted (C{opened} or the upgrade's
    #: Deferred, and C{closed}, then fail with
    #: L{twisted.internet.error.TimeoutError}); L{None}: no limit.
    tlsHandshakeTimeout: float | None = 60.0

    if TYPE_CHECKING:
        host: str | None
        _state: State
        _tls: TLSState
        _transport: Any
        _protocol: Any
        _writeEnd: object
        _watching: bool
        _direct: bool
        _more: Extras | None

        def _extras(self) -> Extras: ...
        def _abortWith(self, reason: BaseException) -> None: ...
        def _watch(self, transport: Any) -> None: ...
        def _whenWritable(self, action: Callable[[], None]) -> None: ...

    @property
    def ssl(self) -> bool:
        """
        L{True} once TLS is in use (its handshake completed).
        """
        return self._tls is TLSState.ON

    @property
    def alpnProtocol(self) -> str | None:
        """
        The application protocol agreed with ALPN during the TLS handshake
        (for example C{"h2"} or C{"http/1.1"}); L{None} without TLS, before
        the handshake completed, or when none was agreed.
        """
        more = self._more
        return None if more is None else more.alpnProtocol

    def _tlsDone(self) -> Deferred[None] | None:
        """
        A TLS handshake completed: TLS is in use (and the protocol agreed
        with ALPN is known); the pending upgrade's Deferred, if any, is
        returned (taken) to fire.
        """
        self._tls = tlsTransition(self._tls, TLSEvent.HANDSHAKE_DONE)
        self._stopTimer()
        agreed = getattr(self._transport, "negotiatedProtocol", None)
        if agreed:
            self._extras().alpnProtocol = agreed.decode("latin-1")
        more = self._more
        if more is None or more.tlsWaiter is None:
            return None
        waiter = more.tlsWaiter
        more.tlsWaiter = None
        return waiter

    def upgradeToSecure(self, tlsOptions: Any = None) -> Deferred[None]:
        """
        Start TLS on the open connection (STARTTLS), after every queued write.

        @param tlsOptions: Client TLS options (an L{IOpenSSLClientConnectionCreator}
            such as L{twisted.internet.ssl.optionsForClientTLS}'s); by default
            the socket's C{host} is verified against the system trust roots.
            An accepted socket needs server options (for example a
            L{twisted.internet.ssl.CertificateOptions}).

        @return: A Deferred that fires once the handshake completed (then
            C{ssl} is L{True}); it fails with the TLS error (which also ends
            the socket), with L{RuntimeError} if the socket is not open or
            TLS is already in use, with L{TypeError} if C{tlsOptions} are
            no TLS options (the socket stays usable), or with
            L{SocketClosed} after a close.
        """
        if self._state is _CLOSED or self._writeEnd is not None:
            return fail(SocketClosed("upgradeToSecure() on a closed or closing socket"))
        if self._state not in OPENED:
            return fail(
                RuntimeError(
                    "upgradeToSecure(): the socket is not open yet; wait for opened"
                )
            )
        if self._tls is not TLSState.NONE:
            return fail(
                RuntimeError(
                    "upgradeToSecure(): TLS is already in use or being negotiated"
                )
            )
        if not ITLSTransport.providedBy(self._transport):
            return fail(
                RuntimeError(
                    f"upgradeToSecure(): the transport {self._transport!r} "
                    "cannot start TLS"
                )
            )
        if tlsOptions is None:
            if self._protocol.factory is not None:
                return fail(
                    ValueError(
                        "upgradeToSecure(): an accepted socket needs server tlsOptions"
                    )
                )
            if not self.host:
                return fail(
                    ValueError(
                        "upgradeToSecure(): no host name to verify; pass tlsOptions"
                    )
                )
            try:
                from twisted.internet.ssl import optionsForClientTLS

                tlsOptions = optionsForClientTLS(self.host)
            except Exception:
                return fail()
        elif not isTLSOptions(tlsOptions):
            return fail(
                TypeError(
                    "upgradeToSecure(): tlsOptions must be Twisted TLS options "
                    "(for example twisted.internet.ssl.optionsForClientTLS(...) "
                    "or CertificateOptions), not "
                    f"{type(tlsOptions).__name__}"
                )
            )
        d: Deferred[None] = Deferred()
        self._tls = tlsTransition(self._tls, TLSEvent.UPGRADE)
        self._extras().tlsWaiter = d
        options = tlsOptions

        def start() -> None:
            if self._state is _CLOSED:
                return
            if not self._watching:
                # TLS queues its records in the transport: watch from now on
                # (Twisted moves a registered producer onto the TLS layer).
                self._watch(self._transport)
            self._direct = False
            if self._protocol.factory is not None:
                # an accepted socket: answer the client's ALPN offer
                answerALPN(options, alpnOffer)
            try:
                self._transport.startTLS(options)
            except Exception as e:
                self._abortWith(e)
                return
            self._batchRecords(tlsLayer(self._transport))
            self._startHandshakeTimer()

        self._whenWritable(start)
        return d

    def _batchRecords(self, layer: Any) -> None:
        """
        Make C{layer}, the TLS protocol under this socket, hand over the
        records of one network read as one chunk: a 64 KiB read carries
        four 16 KiB records, which would otherwise wake a pending C{read()}
        four times.
        """
        protocol = self._protocol

        def around(receive: Callable[[bytes], None], data: bytes) -> None:
            if protocol.batch is not None:
                receive(data)
                return
            protocol.batch = []
            try:
                receive(data)
            finally:
                protocol._handOver()
                protocol.batch = None

        wrapTLSReceive(layer, around)

    # -- timers (TLS only)

    def _startHandshakeTimer(self) -> None:
        """
        Give the TLS handshake that just started C{tlsHandshakeTimeout}
        seconds.
        """
        timeout = self.tlsHandshakeTimeout
        if timeout is None or (self._more is not None and self._more.timer):
            return
        clock = clockOf(self._transport)
        if clock is not None:
            self._extras().timer = clock.callLater(timeout, self._handshakeTimedOut)

    def _handshakeTimedOut(self) -> None:
        """
        The TLS handshake did not complete in time: abort the connection.
        """
        self._extras().timer = None
        self._abortWith(
            UserTimeoutError(
                string=f"the TLS handshake did not complete within "
                f"{self.tlsHandshakeTimeout} seconds; the connection was aborted"
            )
        )

    def _startCloseTimer(self) -> None:
        """
        Give the peer C{tlsCloseTimeout} seconds to answer our TLS close.
        """
        clock = clockOf(self._transport)
        timeout = self.tlsCloseTimeout
        if clock is not None and timeout is not None:
            self._extras().timer = clock.callLater(timeout, self._closeTimedOut)

    def _closeTimedOut(self) -> None:
        """
        The peer did not answer a TLS close in time: abort the connection.
        """
        self._extras().timer = None
        self._abortWith(
            UserTimeoutError(
                string=f"the peer did not complete the TLS close within "
                f"{self.tlsCloseTimeout} seconds; the connection was aborted"
            )
        )

    def _stopTimer(self) -> None:
        """
        Cancel the pending handshake or close timer, if any.
        """
        more = self._more
        if more is None or more.timer is None:
            return
        timer = more.timer
        more.timer = None
        if timer.active():
            timer.cancel()
