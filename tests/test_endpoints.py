"""
Tests for L{tcpext.endpoints}: C{startSocket}, C{connectSocket} and
C{listenSocket} over endpoint strings (C{tcp:}, C{tls:}, C{unix:}) and
Twisted's endpoint classes.
"""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import sys

from twisted.internet import reactor as globalReactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    clientFromString,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.testing import MemoryReactorClock
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tcpext._server import TCPServerSocket
from tcpext._socket import TCPClientSocket
from tcpext._twistedcompat import requestedAddress
from tcpext.endpoints import (
    ClientSocketFactory,
    ServerSocketFactory,
    connectSocket,
    listenSocket,
    startSocket,
)
from tests._certs import testPKI
from tests._folders import shortFolder


class StartSocketTests(SynchronousTestCase):
    """
    C{startSocket} in memory.
    """

    def test_returnsConnecting(self) -> None:
        """
        C{startSocket} returns the socket at once, C{"connecting"}, with the
        endpoint's host and port.
        """
        reactor = MemoryReactorClock()
        sock = startSocket(HostnameEndpoint(reactor, "example.com", 443))
        self.assertIsInstance(sock, TCPClientSocket)
        self.assertEqual(sock.readyState, "connecting")
        self.assertEqual((sock.host, sock.port), ("example.com", 443))

    def test_explicitAddress(self) -> None:
        """
        An explicit C{host}/C{port} wins over the endpoint's.
        """
        reactor = MemoryReactorClock()
        sock = startSocket(
            TCP4ClientEndpoint(reactor, "192.0.2.1", 80), host="example.com", port=80
        )
        self.assertEqual((sock.host, sock.port), ("example.com", 80))

    def testrequestedAddress(self) -> None:
        """
        The requested address is read through wrappers and from UNIX
        endpoints; unknown endpoints give L{None}.
        """
        reactor = MemoryReactorClock()
        tls = wrapClientTLS(object(), TCP4ClientEndpoint(reactor, "192.0.2.1", 8443))  # type: ignore[arg-type]
        self.assertEqual(requestedAddress(tls), ("192.0.2.1", 8443))
        self.assertEqual(
            requestedAddress(UNIXClientEndpoint(reactor, "/tmp/sock")),
            ("/tmp/sock", None),
        )
        self.assertEqual(requestedAddress(object()), (None, None))

    def test_endpointRaises(self) -> None:
        """
        An endpoint whose C{connect} raises fails the socket.
        """

        class Broken:
            def connect(self, factory: object) -> None:
                raise OSError("no")

        sock = startSocket(Broken())  # type: ignore[arg-type]
        self.failureResultOf(sock.opened, OSError)
        self.assertEqual(sock.readyState, "closed")

    def test_endpointFailsAfterConnecting(self) -> None:
        """
        An endpoint that connects the protocol and then fails (as a proxy
        endpoint whose handshake fails would) fails the socket and aborts
        the connection.
        """
        from twisted.internet.defer import Deferred
        from twisted.internet.testing import StringTransport

        transport = StringTransport()
        attempt: Deferred[object] = Deferred()

        class Failing:
            def connect(self, factory: ClientSocketFactory) -> Deferred[object]:
                factory.buildProtocol(None).makeConnection(transport)  # type: ignore[arg-type,union-attr]
                return attempt

        sock = startSocket(Failing())  # type: ignore[arg-type]
        attempt.errback(OSError("proxy refused"))
        self.failureResultOf(sock.closed, OSError)
        self.assertTrue(transport.disconnected)
        self.assertEqual(sock.readyState, "closed")

    def test_connectSocketFails(self) -> None:
        """
        C{connectSocket} fails with the connect error.
        """
        reactor = MemoryReactorClock()
        d = connectSocket(TCP4ClientEndpoint(reactor, "192.0.2.1", 9))
        from twisted.python.failure import Failure

        reactor.tcpClients[0][2].clientConnectionFailed(
            reactor.connectors[0], Failure(ConnectionRefusedError())
        )
        self.failureResultOf(d, ConnectionRefusedError)

    def test_listenSocketBadBackLog(self) -> None:
        """
        C{listenSocket} fails with L{ValueError} for a bad backlog.
        """
        reactor = MemoryReactorClock()
        self.failureResultOf(
            listenSocket(serverFromString(reactor, "tcp:0"), backLog=0), ValueError
        )

    def test_badArguments(self) -> None:
        """
        Something that is no endpoint, a bad backlog or a bad high-water
        mark fails the Deferred (or, for C{startSocket}, raises) with an
        error that says what was wrong; nothing listens or connects.
        """
        reactor = MemoryReactorClock()
        f = self.failureResultOf(
            connectSocket("tcp:example.com:80"),  # type: ignore[arg-type]
            TypeError,
        )
        self.assertIn("client endpoint, not str", str(f.value))
        self.assertIn("clientFromString", str(f.value))
        f = self.failureResultOf(listenSocket(7000), TypeError)  # type: ignore[arg-type]
        self.assertIn("server endpoint, not int", str(f.value))
        with self.assertRaises(TypeError) as caught:
            startSocket(None)  # type: ignore[arg-type]
        self.assertIn("client endpoint, not NoneType", str(caught.exception))
        endpoint = TCP4ClientEndpoint(reactor, "192.0.2.1", 9)
        for bad in [0, -1, 1.5, True]:
            f = self.failureResultOf(
                connectSocket(endpoint, highWater=bad),  # type: ignore[arg-type]
                ValueError,
            )
            self.assertIn("highWater", str(f.value))
            f = self.failureResultOf(
                listenSocket(serverFromString(reactor, "tcp:0"), highWater=bad),  # type: ignore[arg-type]
                ValueError,
            )
            self.assertIn("highWater", str(f.value))
        for bad in [None, "128", 1.0]:
            self.failureResultOf(
                listenSocket(serverFromString(reactor, "tcp:0"), backLog=bad),  # type: ignore[arg-type]
                TypeError,
            )
        self.assertEqual((reactor.tcpClients, reactor.tcpServers), ([], []))

    def test_listenSocketMemory(self) -> None:
        """
        C{listenSocket} gives a server whose factory is a
        L{ServerSocketFactory}.
        """
        reactor = MemoryReactorClock()
        server = self.successResultOf(
            listenSocket(serverFromString(reactor, "tcp:7000"))
        )
        self.assertIsInstance(server, TCPServerSocket)
        self.assertIsInstance(reactor.tcpServers[0][1], ServerSocketFactory)
        self.assertEqual(server.backLog, 128)

    def test_publicFactories(self) -> None:
        """
        The factories are usable directly with C{connectTCP}/C{listenTCP}.
        """
        reactor = MemoryReactorClock()
        factory = ClientSocketFactory("example.com", 80)
        reactor.connectTCP("192.0.2.1", 80, factory)
        self.assertEqual(factory.socket.readyState, "connecting")
        serverFactory = ServerSocketFactory()
        reactor.listenTCP(0, serverFactory)
        self.assertIsInstance(serverFactory.server, TCPServerSocket)
        # Twisted's "... starting on PORT" line names tcpext, and the
        # factories log no "Starting factory" lines of their own.
        self.assertEqual(serverFactory.logPrefix(), "tcpext")
        self.assertFalse(serverFactory.noisy)
        self.assertFalse(factory.noisy)


class ALPNFactoryTests(SynchronousTestCase):
    """
    The public factories offer their C{alpnProtocols} to Twisted's TLS
    through L{IProtocolNegotiationFactory}.
    """

    def test_factories(self) -> None:
        """
        Both factories provide the interface; their protocols are bytes, in
        the order given; none by default.
        """
        for factory in [
            ClientSocketFactory("example.com", 443, alpnProtocols=["h2", b"http/1.1"]),
            ServerSocketFactory(alpnProtocols=["h2", b"http/1.1"]),
        ]:
            self.assertTrue(verifyObject(IProtocolNegotiationFactory, factory))
            self.assertEqual(factory.acceptableProtocols(), [b"h2", b"http/1.1"])
        self.assertEqual(ClientSocketFactory().acceptableProtocols(), [])
        self.assertEqual(ServerSocketFactory().acceptableProtocols(), [])
        self.assertRaises(ValueError, ServerSocketFactory, alpnProtocols=[""])


class EndpointStringTests(TestCase):
    """
    Real connections through endpoint strings.
    """

    timeout = 30

    async def echo(self, server: TCPServerSocket) -> None:
        """
        Echo one connection of C{server}, then close it.
        """
        accepted = await server.accept()
        assert accepted is not None
        async for chunk in accepted:
            await accepted.write(chunk)
        await accepted.close()

    async def roundTrip(self, server: TCPServerSocket, client: TCPClientSocket) -> None:
        """
        Check an echo round trip and a clean close.
        """
        serving = ensureDeferred(self.echo(server))
        await client.write(b"round trip")
        self.assertEqual(await client.readExactly(10), b"round trip")
        if client.ssl:
            await client.close()
        else:
            await client.closeWrite()
            self.assertEqual(await client.read(), b"")
            await client.close()
        await client.closed
        await serving

    async def test_tcp(self) -> None:
        """
        C{tcp:} strings for both ends.
        """
        server = await listenSocket(
            serverFromString(globalReactor, "tcp:0:interface=127.0.0.1")
        )
        self.addCleanup(server.close)
        client = await connectSocket(
            clientFromString(globalReactor, f"tcp:127.0.0.1:{server.localPort}")
        )
        self.assertEqual(client.readyState, "open")
        self.assertEqual(client.remotePort, server.localPort)
        await self.roundTrip(server, client)

    async def test_tls(self) -> None:
        """
        A C{tls:} client string (trusting the test CA) against an C{ssl:}
        server string.
        """
        pki = testPKI()
        directory = FilePath(self.mktemp())
        directory.makedirs()
        directory.child("cert.pem").setContent(pki.serverCertPEM)
        directory.child("key.pem").setContent(pki.serverKeyPEM)
        roots = directory.child("roots")
        roots.makedirs()
        roots.child("ca.pem").setContent(pki.caPEM)
        server = await listenSocket(
            serverFromString(
                globalReactor,
                "ssl:0:interface=127.0.0.1:"
                f"certKey={directory.child('cert.pem').path}:"
                f"privateKey={directory.child('key.pem').path}",
            )
        )
        self.addCleanup(server.close)
        client = await connectSocket(
            clientFromString(
                globalReactor,
                f"tls:localhost:{server.localPort}:trustRoots={roots.path}",
            )
        )
        self.assertTrue(client.ssl)
        self.assertEqual((client.host, client.port), ("localhost", server.localPort))
        await self.roundTrip(server, client)

    async def test_unix(self) -> None:
        """
        C{unix:} strings for both ends.
        """
        path = os.path.join(shortFolder(self), "echo.sock")
        server = await listenSocket(serverFromString(globalReactor, f"unix:{path}"))
        self.addCleanup(server.close)
        self.assertEqual(server.localAddress, path)
        self.assertIsNone(server.localPort)
        client = await connectSocket(clientFromString(globalReactor, f"unix:{path}"))
        self.assertEqual(client.host, path)
        self.assertEqual(client.remoteAddress, path)
        await self.roundTrip(server, client)

    async def test_ipv6(self) -> None:
        """
        A C{tcp6:} server on C{::1}: addresses are IPv6 text.
        """
        try:
            server = await listenSocket(
                serverFromString(globalReactor, r"tcp6:0:interface=\:\:1")
            )
        except CannotListenError as e:
            raise SkipTest(f"no IPv6 loopback here: {e}")
        self.addCleanup(server.close)
        self.assertEqual(server.localAddress, "::1")
        assert server.localPort is not None
        client = await connectSocket(
            TCP6ClientEndpoint(globalReactor, "::1", server.localPort)
        )
        self.assertEqual((client.remoteAddress, client.localAddress), ("::1", "::1"))
        await self.roundTrip(server, client)

    async def test_hostnameEndpoint(self) -> None:
        """
        A L{HostnameEndpoint} to C{localhost}.
        """
        server = await listenSocket(
            serverFromString(globalReactor, "tcp:0:interface=127.0.0.1")
        )
        self.addCleanup(server.close)
        assert server.localPort is not None
        sock = startSocket(
            HostnameEndpoint(globalReactor, b"127.0.0.1", server.localPort)
        )
        self.assertEqual(sock.readyState, "connecting")
        await sock.opened
        self.assertEqual(sock.readyState, "open")
        await self.roundTrip(server, sock)

    async def test_refused(self) -> None:
        """
        Connecting to a closed port fails C{connectSocket}, C{opened} and
        C{closed} with L{ConnectionRefusedError}.
        """
        server = await listenSocket(
            serverFromString(globalReactor, "tcp:0:interface=127.0.0.1")
        )
        port = server.localPort
        await server.close()
        sock = startSocket(clientFromString(globalReactor, f"tcp:127.0.0.1:{port}"))
        with self.assertRaises(ConnectionRefusedError):
            await sock.opened
        with self.assertRaises(ConnectionRefusedError):
            await sock.closed
        with self.assertRaises(ConnectionRefusedError):
            await connectSocket(
                clientFromString(globalReactor, f"tcp:127.0.0.1:{port}")
            )


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class DocumentedProgramTests(SynchronousTestCase):
    """
    The tutorial's program and C{examples/echo_server.py} really run.
    """

    def test_tutorialProgram(self) -> None:
        """
        The last Python block of C{docs/tutorial.md} prints the two echoed
        lines and exits 0.
        """
        with open(os.path.join(ROOT, "docs", "tutorial.md"), encoding="utf-8") as f:
            blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
        script = os.path.abspath(self.mktemp()) + ".py"
        with open(script, "w", encoding="utf-8") as f:
            f.write(blocks[-1])
        result = subprocess.run(
            [sys.executable, script],
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=ROOT),
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr.decode("utf-8", "replace"))
        self.assertEqual(result.stdout, b"hello\ntcpext\n")

    def test_echoServerExample(self) -> None:
        """
        C{examples/echo_server.py --port 0} reports its port and echoes.
        """
        process = subprocess.Popen(
            [
                sys.executable,
                os.path.join(ROOT, "examples", "echo_server.py"),
                "--port",
                "0",
                "--quiet",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=ROOT),
        )
        self.addCleanup(process.wait, 30)
        self.addCleanup(process.kill)
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        self.assertTrue(ready, "the echo server printed nothing in 30s")
        line = process.stdout.readline().decode("ascii")
        match = re.match(r"listening on 127\.0\.0\.1:(\d+)$", line.strip())
        self.assertIsNotNone(match, line)
        assert match is not None
        with socket.create_connection(("127.0.0.1", int(match.group(1))), 30) as s:
            s.sendall(b"echo me")
            s.shutdown(socket.SHUT_WR)
            received = b""
            for _ in range(100):
                chunk = s.recv(4096)
                if not chunk:
                    break
                received += chunk
        self.assertEqual(received, b"echo me")

    def test_echoServerBadPort(self) -> None:
        """
        A port outside 0..65535 is refused with a message.
        """
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "examples", "echo_server.py"),
                "--port",
                "70000",
            ],
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=ROOT),
            timeout=60,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"--port must be in 0..65535", result.stderr)
