"""
Sockets over real loopback for tests.
"""

from __future__ import annotations

from twisted.internet import reactor as globalReactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.trial.unittest import SynchronousTestCase

from tcpext._socket import TCPClientSocket
from tcpext.endpoints import connectSocket, listenSocket


async def loopbackPair(
    case: SynchronousTestCase,
) -> tuple[TCPClientSocket, TCPClientSocket]:
    """
    A client socket connected to a server on 127.0.0.1 (port 0), and the
    server's accepted socket; the server closed and both sockets aborted
    after the test.
    """
    server = await listenSocket(
        TCP4ServerEndpoint(globalReactor, 0, interface="127.0.0.1")
    )
    case.addCleanup(server.close)
    assert server.localPort is not None
    client = await connectSocket(
        TCP4ClientEndpoint(globalReactor, "127.0.0.1", server.localPort)
    )
    case.addCleanup(client.closeImmediately)
    accepted = await server.accept()
    assert accepted is not None
    case.addCleanup(accepted.closeImmediately)
    return client, accepted
