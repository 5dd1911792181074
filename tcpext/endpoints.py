# -*- test-case-name: tests.test_endpoints -*-
"""
tcpext sockets over any Twisted stream endpoint::

    from twisted.internet.endpoints import clientFromString, serverFromString
    from tcpext.endpoints import connectSocket, listenSocket

    sock = await connectSocket(clientFromString(reactor, "tcp:example.com:80"))
    server = await listenSocket(serverFromString(reactor, "tcp:0"))

The factories are public so that Twisted code can use them directly, for
example with C{reactor.connectTCP(host, port, ClientSocketFactory(host, port))}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IProtocolNegotiationFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ClientFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpext._server import DEFAULT_BACKLOG, ServerSocketFactory, TCPServerSocket
from tcpext._socket import DEFAULT_HIGH_WATER, SocketProtocol, TCPClientSocket
from tcpext._tls import alpnOffer, alpnProtocolList
from tcpext._twistedcompat import (
    answerALPN,
    plainTCPEndpoint,
    requestedAddress,
    serverTLSOptions,
)

__all__ = [
    "ClientSocketFactory",
    "ServerSocketFactory",
    "connectSocket",
    "listenSocket",
    "startSocket",
]


@implementer(IProtocolNegotiationFactory)
class ClientSocketFactory(ClientFactory):
    """
    A client factory for one outgoing connection whose protocol feeds a
    L{TCPClientSocket}: give it to a client endpoint's C{connect} or to
    C{reactor.connectTCP}.

    @ivar socket: The socket, in C{"connecting"} state until the connection
        is made.
    @ivar alpnProtocols: The protocols offered with ALPN over TLS, preferred
        first (C{bytes}); empty: none.
    """

    noisy = False

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        highWater: int = DEFAULT_HIGH_WATER,
        alpnProtocols: Sequence[str | bytes] | None = None,
    ) -> None:
        """
        @param host: The host as requested (the socket's C{host}).
        @param port: The port as requested (the socket's C{port}).
        @param highWater: The socket's read high-water mark.
        @param alpnProtocols: The ALPN protocol names to offer over TLS,
            preferred first (for example C{["h2", "http/1.1"]}), in addition
            to those of the TLS options.

        @raise TypeError: If C{alpnProtocols} is no list of names.
        @raise ValueError: If C{highWater} or a protocol name is invalid.
        """
        self.alpnProtocols = (
            () if alpnProtocols is None else alpnProtocolList(alpnProtocols)
        )
        self.socket = TCPClientSocket(host, port, highWater=highWater)

    def acceptableProtocols(self) -> list[bytes]:
        """
        L{IProtocolNegotiationFactory}: the ALPN protocols to offer.
        """
        return list(self.alpnProtocols)

    def buildProtocol(self, addr: IAddress) -> SocketProtocol | None:  # type: ignore[override]
        """
        The socket's protocol, for the first connection only.
        """
        protocol = self.socket._protocol
        if protocol.transport is not None:
            return None
        return protocol

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        """
        The attempt failed (when used with C{reactor.connectTCP}): the
        socket's C{opened} and C{closed} fail with C{reason}.
        """
        self.socket._connectFailed(reason)


def _notAnEndpoint(kind: str, endpoint: object) -> str:
    """
    The message of a L{TypeError} for an argument that is no endpoint.
    """
    making = "clientFromString" if kind == "client" else "serverFromString"
    hint = (
        f"; for a description string use twisted.internet.endpoints.{making}"
        "(reactor, ...)"
        if isinstance(endpoint, (str, bytes))
        else ""
    )
    return (
        f"expected a Twisted stream {kind} endpoint, not "
        f"{type(endpoint).__name__}{hint}"
    )


def startSocket(
    endpoint: IStreamClientEndpoint,
    host: str | None = None,
    port: int | None = None,
    reactor: Any = None,
    highWater: int = DEFAULT_HIGH_WATER,
    alpnProtocols: Sequence[str | bytes] | None = None,
) -> TCPClientSocket:
    """
    Start connecting through C{endpoint} and return the socket at once, in
    C{"connecting"} state; its C{opened} fires or fails later.

    @param endpoint: Any Twisted stream client endpoint.
    @param host: The socket's C{host} (by default, the endpoint's when it
        can be read from it).  A client C{upgradeToSecure()} verifies this
        name by default.
    @param port: The socket's C{port} (by default, the endpoint's).
    @param reactor: Unused; accepted for symmetry with other tcpext calls.
    @param highWater: The socket's read high-water mark, in bytes.
    @param alpnProtocols: ALPN protocol names to offer when the endpoint
        speaks TLS (the one agreed is the socket's C{alpnProtocol}).

    @return: The socket.  C{closeImmediately()} on it cancels the attempt.

    @raise TypeError: If C{endpoint} is no client endpoint, or
        C{alpnProtocols} no list of names.
    @raise ValueError: If C{highWater} is not a positive int, or a protocol
        name is invalid.
    """
    if not callable(getattr(endpoint, "connect", None)):
        raise TypeError(_notAnEndpoint("client", endpoint))
    plain = plainTCPEndpoint(endpoint)
    if plain is not None:
        # What TCP4ClientEndpoint.connect does, without the wrapping factory,
        # protocol and Deferred (the factory takes connection failures): a
        # third of the cost of a short connection.
        tcpReactor, tcpHost, tcpPort, timeout, bindAddress = plain
        if host is None and port is None:
            host, port = tcpHost, tcpPort
        factory = ClientSocketFactory(host, port, highWater, alpnProtocols)
        sock = factory.socket
        try:
            sock._connecting = tcpReactor.connectTCP(
                tcpHost, tcpPort, factory, timeout=timeout, bindAddress=bindAddress
            )
        except Exception:
            sock._connectFailed(Failure())
        return sock
    if host is None and port is None:
        host, port = requestedAddress(endpoint)
    factory = ClientSocketFactory(host, port, highWater, alpnProtocols)
    sock = factory.socket
    try:
        connecting = endpoint.connect(factory)
    except Exception:
        sock._connectFailed(Failure())
        return sock
    if not connecting.called:
        sock._connecting = connecting
    connecting.addCallbacks(sock._endpointConnected, sock._connectFailed)
    return sock


def connectSocket(
    endpoint: IStreamClientEndpoint,
    highWater: int = DEFAULT_HIGH_WATER,
    alpnProtocols: Sequence[str | bytes] | None = None,
) -> Deferred[TCPClientSocket]:
    """
    Connect through C{endpoint}.

    @param endpoint: Any Twisted stream client endpoint (C{tcp:}, C{tls:},
        C{unix:}, L{HostnameEndpoint <twisted.internet.endpoints.HostnameEndpoint>},
        ...).
    @param highWater: The socket's read high-water mark, in bytes.
    @param alpnProtocols: ALPN protocol names to offer when the endpoint
        speaks TLS, preferred first (for example C{["h2", "http/1.1"]});
        the one agreed is the socket's C{alpnProtocol}.

    @return: A Deferred that fires with the L{TCPClientSocket} once it is
        C{"open"} (for TLS: once the handshake completed), or fails with the
        connection error (L{TypeError} or L{ValueError} for bad arguments).
    """
    try:
        sock = startSocket(endpoint, highWater=highWater, alpnProtocols=alpnProtocols)
    except (TypeError, ValueError) as e:
        failed: Deferred[TCPClientSocket] = Deferred()
        failed.errback(e)
        return failed
    return sock._whenOpen()


def listenSocket(
    endpoint: IStreamServerEndpoint,
    backLog: int = DEFAULT_BACKLOG,
    highWater: int = DEFAULT_HIGH_WATER,
    alpnProtocols: Sequence[str | bytes] | None = None,
) -> Deferred[TCPServerSocket]:
    """
    Listen on C{endpoint}.

    @param endpoint: Any Twisted stream server endpoint.
    @param backLog: How many accepted connections may wait to be taken
        before the server stops accepting.
    @param highWater: The read high-water mark of accepted sockets.
    @param alpnProtocols: On a TLS endpoint, the ALPN protocol names to
        agree to, preferred first; the one agreed is each accepted
        socket's C{alpnProtocol}.  Without them, a client's ALPN offer is
        ignored (the handshake goes on); with them, a client that offers
        none of them is refused.

    @return: A Deferred that fires with the L{TCPServerSocket} once
        listening, or fails with the error (for example
        L{twisted.internet.error.CannotListenError}; L{TypeError} or
        L{ValueError} for bad arguments).
    """
    try:
        if not callable(getattr(endpoint, "listen", None)):
            raise TypeError(_notAnEndpoint("server", endpoint))
        server = TCPServerSocket(backLog)
        factory = ServerSocketFactory(server, highWater, alpnProtocols)
    except (TypeError, ValueError) as e:
        failed: Deferred[TCPServerSocket] = Deferred()
        failed.errback(e)
        return failed
    options = serverTLSOptions(endpoint)
    if options is not None:
        # a TLS listener: answer clients' ALPN offers (Twisted's own answer
        # refuses them all when there is nothing to agree to)
        answerALPN(options, alpnOffer)
    try:
        listening = endpoint.listen(factory)
    except Exception:
        failed = Deferred()
        failed.errback(Failure())
        return failed
    return listening.addCallbacks(server._listening, server._listenFailed)
