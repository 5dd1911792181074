# -*- test-case-name: tests.test_twistedcompat -*-
"""
Every use tcpext makes of a Twisted implementation detail (private
attributes, undocumented behaviour), in one place.

Each function here names the detail it relies on;
C{tests/test_twistedcompat.py} checks every one of them against the
installed Twisted, so an upgrade that changes one fails there rather than
somewhere in the socket's behaviour.

The details:

  - C{Deferred._debugInfo.failResult}: cleared so that a failure that is
    also reported elsewhere is not logged as "Unhandled error in Deferred"
    (L{silence}).
  - Twisted's own TCP transports (C{twisted.internet.tcp.Client} and
    C{Server}): C{writeSomeData}, C{dataBuffer}, C{_tempDataLen},
    C{bufferSize}, C{producerPaused}, C{connected}, C{disconnecting},
    C{socket}, C{TLS}, and C{connectionLost} called after C{stopReading}
    and C{stopWriting} (L{isPlainTCP}, L{sendsNothing}, L{sendAtOnce},
    L{overBufferSize}, L{markPaused}, L{setNoDelay}, L{closeAtOnce}).
  - C{TLSMemoryBIOProtocol}: C{_handshakeDone}, the C{protocol} of a TLS
    listening port's transport, and an instance's C{dataReceived} replaced
    (L{tlsLayer}, L{handshakeDone}, L{wrapTLSReceive}).
  - ALPN on a server: C{CertificateOptions._acceptableProtocols} and
    C{twisted.internet._sslverify.protosFromProtocol}, to replace Twisted's
    ALPN selection, which refuses every client that offers ALPN to a server
    with nothing to offer (L{answerALPN}); C{SSL4ServerEndpoint}'s
    C{_sslContextFactory} (L{serverTLSOptions}).
  - A connection's C{reactor} attribute, and its C{disconnecting} (set
    by C{loseConnection}), through TLS wrappers' C{transport} (L{clockOf},
    L{closingBelow}).
  - C{_tlsClientDefault}, which tells C{startTLS} which side of the
    handshake a TCP transport plays; a transport adopted from a connected
    descriptor is a C{tcp.Server}, so the side an isolated extension
    dialed is told it is the client (L{actAsClient}).
  - The endpoints' private attributes: C{_wrappedEndpoint}, C{_hostText},
    C{_host}, C{_port}, C{_path}; C{TCP4ClientEndpoint}'s C{_reactor},
    C{_timeout} and C{_bindAddress} (L{requestedAddress},
    L{plainTCPEndpoint}).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Sequence
from socket import IPPROTO_TCP, TCP_NODELAY
from typing import Any

from OpenSSL.SSL import NO_OVERLAPPING_PROTOCOLS
from twisted.internet import tcp
from twisted.internet._sslverify import protosFromProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure

__all__ = [
    "actAsClient",
    "answerALPN",
    "wrapClientTLSOn",
    "clockOf",
    "closeAtOnce",
    "closingBelow",
    "handshakeDone",
    "isPlainTCP",
    "markPaused",
    "overBufferSize",
    "plainTCPEndpoint",
    "requestedAddress",
    "serverTLSOptions",
    "sendAtOnce",
    "sendsNothing",
    "setNoDelay",
    "silence",
    "tlsLayer",
    "wrapTLSReceive",
]

_CONNECTION_DONE = Failure(ConnectionDone())

#: Twisted's TCP connections on the POSIX reactors.
_PLAIN_TCP = (tcp.Client, tcp.Server)


# -- Deferreds


def silence(d: Deferred[Any], failure: Failure) -> None:
    """
    Keep C{d}, failed with C{failure}, from logging "Unhandled error in
    Deferred" if nobody consumes it (C{Deferred._debugInfo.failResult}).
    """
    info = d._debugInfo
    if info is not None and d.result is failure:
        info.failResult = None


# -- Twisted's own TCP transports


def isPlainTCP(transport: object) -> bool:
    """
    Whether C{transport} is one of Twisted's own TCP connections, without
    TLS: one whose write buffer tcpext may look at and bypass.
    """
    return type(transport) in _PLAIN_TCP and not getattr(transport, "TLS", True)


def sendsNothing(transport: Any) -> bool:
    """
    Whether a plain TCP C{transport} has nothing queued to send and is
    connected (C{dataBuffer}, C{_tempDataLen}, C{connected},
    C{disconnecting}).
    """
    return (
        not transport._tempDataLen
        and not transport.dataBuffer
        and transport.connected
        and not transport.disconnecting
    )


def sendAtOnce(transport: Any, data: bytes) -> bytes:
    """
    Give C{data} to the kernel now (C{writeSomeData}) on a plain TCP
    C{transport} that L{sendsNothing}.

    @return: What the kernel did not take, to queue in the transport as
        usual (C{b""}: all sent).  If sending failed, C{data} is queued in
        the transport here, which reports the error on its next try, and
        C{b""} is returned.
    """
    sent = transport.writeSomeData(data)
    if type(sent) is not int:
        transport.write(data)
        return b""
    return data[sent:] if sent else data


def overBufferSize(transport: Any) -> bool:
    """
    Whether a plain TCP C{transport} holds more than its C{bufferSize}
    (what makes it pause its producer on a write).
    """
    return bool(
        len(transport.dataBuffer) + transport._tempDataLen > transport.bufferSize
    )


def markPaused(transport: Any) -> None:
    """
    Record on a plain TCP C{transport} that its producer is paused, as the
    transport does itself when a write fills its buffer (it then resumes the
    producer once drained).
    """
    transport.producerPaused = True


def setNoDelay(transport: Any) -> None:
    """
    Turn Nagle's algorithm off on a plain TCP C{transport}'s socket directly
    (one call instead of the transport's getter and setter).
    """
    transport.socket.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)


def closeAtOnce(transport: Any) -> None:
    """
    Close a plain TCP C{transport} now, the way its C{loseConnection} does
    once nothing is left to send and its write side is shut (without the
    reactor round that would flush nothing).
    """
    transport.stopReading()
    transport.stopWriting()
    transport.connectionLost(_CONNECTION_DONE)


def actAsClient(transport: Any) -> None:
    """
    Make a TCP C{transport} that Twisted adopted from a connected descriptor
    (C{adoptStreamConnection} makes a C{tcp.Server}) play the client side
    when it starts TLS, as a transport from C{connectTCP} does: its
    C{startTLS(options)} (STARTTLS in twisted.mail's ESMTP client, for
    instance) then uses the client options it is given instead of failing
    to read them as a server's.
    """
    transport._tlsClientDefault = True


# -- TLS


def tlsLayer(transport: object) -> Any:
    """
    The TLS protocol layer under C{transport} if TLS is already in use on it
    (a TLS endpoint, or a TLS listening port whose transport's C{protocol}
    is the TLS layer), the transport itself for other TLS transports, else
    L{None}.
    """
    if isinstance(transport, TLSMemoryBIOProtocol):
        return transport
    if ISSLTransport.providedBy(transport):
        layer = getattr(transport, "protocol", None)
        if isinstance(layer, TLSMemoryBIOProtocol):
            return layer
        return transport
    return None


def handshakeDone(layer: object) -> bool:
    """
    Whether the TLS handshake of C{layer} (from L{tlsLayer}) completed
    (C{TLSMemoryBIOProtocol._handshakeDone}); L{False} when it cannot say.
    """
    return bool(getattr(layer, "_handshakeDone", False))


def wrapTLSReceive(
    layer: object, around: Callable[[Callable[[bytes], None], bytes], None]
) -> None:
    """
    Route every network read of the TLS C{layer} through C{around(receive,
    data)}, where C{receive} is the layer's own C{dataReceived} (replaced on
    the instance): the records one read carries can then be handled
    together.  Does nothing for other TLS transports.
    """
    if not isinstance(layer, TLSMemoryBIOProtocol):
        return
    receive = layer.dataReceived

    def dataReceived(data: bytes) -> None:
        around(receive, data)

    layer.dataReceived = dataReceived  # type: ignore[method-assign]


#: The TLS contexts whose ALPN selection L{answerALPN} has set.
_alpnContexts: weakref.WeakSet[Any] = weakref.WeakSet()


def answerALPN(
    options: object, extraProtocols: Callable[[Any], Sequence[bytes]]
) -> bool:
    """
    Make a server's TLS C{options} answer a client's ALPN offer correctly,
    before any connection uses them.

    Twisted's selection (C{_sslverify.setupForALPN}, on every context its
    C{CertificateOptions} make) answers C{b""} when the server has no
    protocol to offer, which OpenSSL turns into a fatal "internal error"
    alert: every client that offers ALPN (curl does by default) is refused.
    This replaces it on the options' context (C{getContext()}, made now if
    need be) with the same choice (the options' C{_acceptableProtocols} and
    the wrapped factory's C{IProtocolNegotiationFactory}, through Twisted's
    C{protosFromProtocol}), plus C{extraProtocols(tlsProtocol)}, except that
    a server with no protocol at all ignores the offer: the handshake goes
    on, nothing is agreed.  A server with protocols of which the client
    offers none still refuses the handshake, as Twisted intends.

    @return: Whether the context answers ALPN this way now; L{False} if the
        options have no context (other TLS implementations), or pyOpenSSL
        refuses to change a context that already made a connection.
    """
    getContext = getattr(options, "getContext", None)
    if not callable(getContext):
        return False
    try:
        context = getContext()
    except Exception:
        # bad options: listening with them reports the error
        return False
    if context in _alpnContexts:
        return True
    configured = tuple(getattr(options, "_acceptableProtocols", None) or ())

    def select(conn: Any, offered: list[bytes]) -> Any:
        tlsProtocol = conn.get_app_data()
        acceptable = list(protosFromProtocol(tlsProtocol, configured))
        for name in extraProtocols(tlsProtocol):
            if name not in acceptable:
                acceptable.append(name)
        if not acceptable:
            return NO_OVERLAPPING_PROTOCOLS
        for name in acceptable:
            if name in offered:
                return name
        return b""

    try:
        context.set_alpn_select_callback(select)
    except ValueError:
        # pyOpenSSL: "Context has already been used to create a Connection"
        return False
    _alpnContexts.add(context)
    return True


def serverTLSOptions(endpoint: object) -> Any:
    """
    The TLS options of a TLS server endpoint (C{SSL4ServerEndpoint}'s
    C{_sslContextFactory}), through wrapping endpoints' C{_wrappedEndpoint}
    or C{_endpoint}; L{None} for other endpoints.
    """
    for _ in range(10):
        if isinstance(endpoint, SSL4ServerEndpoint):
            return endpoint._sslContextFactory
        inner = getattr(endpoint, "_wrappedEndpoint", None)
        if inner is None:
            inner = getattr(endpoint, "_endpoint", None)
        if inner is None:
            return None
        endpoint = inner
    return None


def closingBelow(transport: object) -> bool:
    """
    Whether C{transport}, or a transport it is layered on (a TLS layer's
    C{transport}), has been asked to close: its C{disconnecting} is set
    (both C{FileDescriptor} and C{TLSMemoryBIOProtocol} set it in
    C{loseConnection}).
    """
    for _ in range(4):
        if transport is None:
            return False
        if getattr(transport, "disconnecting", False):
            return True
        transport = getattr(transport, "transport", None)
    return False


def clockOf(transport: object) -> Any:
    """
    The reactor under C{transport} (a connection's C{reactor}, through TLS
    layers' C{transport}), to set a timer on; L{None} if it cannot be found.
    """
    for _ in range(4):
        if transport is None:
            return None
        clock = getattr(transport, "reactor", None)
        if clock is not None and callable(getattr(clock, "callLater", None)):
            return clock
        transport = getattr(transport, "transport", None)
    return None


# -- endpoints


def wrapClientTLSOn(clock: Any, connectionCreator: Any, wrappedEndpoint: Any) -> Any:
    """
    Twisted's C{wrapClientTLS}, with C{clock} for the TLS layer's batching
    of small writes where Twisted batches them (its C{clock} argument;
    without it the batching waits for the global reactor, which never runs
    under an in-memory reactor such as L{tcpext.testing}'s).
    """
    if "clock" in inspect.signature(wrapClientTLS).parameters:
        return wrapClientTLS(connectionCreator, wrappedEndpoint, clock=clock)
    return wrapClientTLS(connectionCreator, wrappedEndpoint)


def requestedAddress(endpoint: object) -> tuple[str | None, int | None]:
    """
    The host and port an endpoint was made for, when Twisted's endpoint says
    (best effort: through TLS and other wrappers' C{_wrappedEndpoint}; the
    C{_hostText}/C{_host} and C{_port}, or a UNIX endpoint's C{_path}).
    """
    for _ in range(10):
        inner = getattr(endpoint, "_wrappedEndpoint", None)
        if inner is None:
            break
        endpoint = inner
    host = getattr(endpoint, "_hostText", None) or getattr(endpoint, "_host", None)
    if host is None:
        path = getattr(endpoint, "_path", None)
        if isinstance(path, bytes):
            path = path.decode("utf-8", "replace")
        return (path if isinstance(path, str) else None), None
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    port = getattr(endpoint, "_port", None)
    return (host if isinstance(host, str) else None), (
        port if isinstance(port, int) else None
    )


def plainTCPEndpoint(endpoint: object) -> tuple[Any, str, int, Any, Any] | None:
    """
    For a C{TCP4ClientEndpoint} (exactly that class), what its C{connect}
    passes to its reactor's C{connectTCP}: C{(reactor, host, port, timeout,
    bindAddress)}; L{None} for any other endpoint.
    """
    if type(endpoint) is not TCP4ClientEndpoint:
        return None
    tcp4: Any = endpoint
    return tcp4._reactor, tcp4._host, tcp4._port, tcp4._timeout, tcp4._bindAddress
