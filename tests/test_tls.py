"""
TLS over real loopback connections: TLS from the start (client and server),
STARTTLS with C{upgradeToSecure()}, and the failures (untrusted issuer, name
mismatch, handshake garbage).
"""

from __future__ import annotations

import os
import shutil
import socket as stdsocket
import ssl as stdssl
from typing import Any

from OpenSSL.SSL import Error as SSLError
from service_identity import VerificationError
from twisted.internet import reactor as globalReactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionClosed, ConnectionLost
from twisted.internet.ssl import optionsForClientTLS, trustRootFromCertificates
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tcpext._errors import SocketClosed
from tcpext._server import TCPServerSocket
from tcpext._socket import TCPClientSocket
from tcpext.endpoints import (
    ClientSocketFactory,
    ServerSocketFactory,
    connectSocket,
    listenSocket,
    startSocket,
)
from tests._certs import testPKI
from tests._loopback import loopbackPair
from tests.test_server import assertSuspendHolds
from tests.test_socket import connected

#: What a failed handshake may surface as, depending on which side noticed.
HANDSHAKE_ERRORS = (SSLError, VerificationError, ConnectionClosed)


def serveEcho(
    case: TestCase,
    server: TCPServerSocket,
    accepted: list[TCPClientSocket] | None = None,
) -> None:
    """
    Echo on every connection of C{server} until it closes; each accepted
    socket is added to C{accepted} (if given) and aborted after the test.
    """

    async def echo(sock: TCPClientSocket) -> None:
        try:
            async for chunk in sock:
                await sock.write(chunk)
        except Exception:
            sock.closeImmediately()
            return
        await sock.close()

    async def serve() -> None:
        async for sock in server.connections:
            if accepted is not None:
                accepted.append(sock)
            case.addCleanup(sock.closeImmediately)
            ensureDeferred(echo(sock))

    ensureDeferred(serve())


class TLSTests(TestCase):
    """
    TLS with the test CA over 127.0.0.1.
    """

    # generous: a loaded machine makes TLS handshakes slow (bounded all the same)
    timeout = 120

    async def tlsServer(self, options: Any = None) -> TCPServerSocket:
        """
        A TLS echo server (TLS from the start) on 127.0.0.1.
        """
        pki = testPKI()
        server = await listenSocket(
            SSL4ServerEndpoint(
                globalReactor,
                0,
                options if options is not None else pki.serverOptions(),
                interface="127.0.0.1",
            )
        )
        self.addCleanup(server.close)
        serveEcho(self, server)
        return server

    async def plainServer(self) -> TCPServerSocket:
        """
        A plain TCP server on 127.0.0.1 whose connections are up to the test.
        """
        server = await listenSocket(
            TCP4ServerEndpoint(globalReactor, 0, interface="127.0.0.1")
        )
        self.addCleanup(server.close)
        return server

    def tlsEndpoint(self, server: TCPServerSocket, options: Any) -> Any:
        """
        A client TLS endpoint to C{server}.
        """
        assert server.localPort is not None
        return wrapClientTLS(
            options, TCP4ClientEndpoint(globalReactor, "127.0.0.1", server.localPort)
        )

    async def test_tlsFromStart(self) -> None:
        """
        A TLS endpoint opens once the handshake completed: C{ssl} is L{True}
        and data round-trips; C{close()} completes.
        """
        server = await self.tlsServer()
        sock = await connectSocket(self.tlsEndpoint(server, testPKI().clientOptions()))
        self.assertTrue(sock.ssl)
        self.assertFalse(sock._direct)
        self.assertEqual(sock.readyState, "open")
        await sock.write(b"over tls")
        self.assertEqual(await sock.readExactly(8), b"over tls")
        await sock.close()
        self.assertEqual(sock.readyState, "closed")
        await sock.closed

    async def test_connectSSL(self) -> None:
        """
        An L{SSL4ClientEndpoint} (the reactor's C{connectSSL}) works the same:
        open after the handshake, C{ssl} L{True}; a wrong name fails.
        """
        pki = testPKI()
        server = await self.tlsServer()
        assert server.localPort is not None
        sock = await connectSocket(
            SSL4ClientEndpoint(
                globalReactor, "127.0.0.1", server.localPort, pki.clientOptions()
            )
        )
        self.assertTrue(sock.ssl)
        self.assertFalse(sock._direct)
        await sock.write(b"ssl4")
        self.assertEqual(await sock.readExactly(4), b"ssl4")
        await sock.close()
        wrong = startSocket(
            SSL4ClientEndpoint(
                globalReactor,
                "127.0.0.1",
                server.localPort,
                pki.clientOptions("wrong.example"),
            )
        )
        with self.assertRaises(VerificationError):
            await wrong.opened
        self.assertEqual(wrong.readyState, "closed")

    async def test_tlsConnectingState(self) -> None:
        """
        While the handshake runs, the socket is still C{"connecting"}; writes
        made then are sent after it.
        """
        server = await self.tlsServer()
        sock = startSocket(self.tlsEndpoint(server, testPKI().clientOptions()))
        self.addCleanup(sock.closeImmediately)
        self.assertEqual(sock.readyState, "connecting")
        written = sock.write(b"early")
        await sock.opened
        await written
        self.assertEqual(await sock.readExactly(5), b"early")

    async def test_suspendOverTLS(self) -> None:
        """
        C{suspend()} on a TLS socket stops reading until C{resume()}.
        """
        server = await self.tlsServer()
        sock = await connectSocket(self.tlsEndpoint(server, testPKI().clientOptions()))
        self.addCleanup(sock.closeImmediately)
        # The server echoes: the socket's own write comes back to it.
        await assertSuspendHolds(self, sock, sock, b"echo while suspended")

    async def test_closeWhileNotReading(self) -> None:
        """
        C{close()} completes on a TLS socket that is suspended, and on one
        whose read buffer is full (a TLS close waits for the peer's
        close-notify, so the socket must read again to finish closing);
        the peers read the end.
        """
        pki = testPKI()
        server = await listenSocket(
            SSL4ServerEndpoint(
                globalReactor, 0, pki.serverOptions(), interface="127.0.0.1"
            )
        )
        self.addCleanup(server.close)
        endpoint = self.tlsEndpoint(server, pki.clientOptions())

        suspended = await connectSocket(endpoint)
        self.addCleanup(suspended.closeImmediately)
        peer = await server.accept()
        assert peer is not None
        self.addCleanup(peer.closeImmediately)
        suspended.suspend()
        await peer.write(b"unread")
        await deferLater(globalReactor, 0.02, lambda: None)
        closing = suspended.close()
        closing.addTimeout(10, globalReactor)
        await closing
        self.assertEqual(suspended.readyState, "closed")
        self.assertIsNone(await suspended.closed)
        self.assertEqual(await peer.read(), b"")

        client = await connectSocket(endpoint)
        self.addCleanup(client.closeImmediately)
        full = await server.accept()
        assert full is not None
        self.addCleanup(full.closeImmediately)
        sending = client.write(b"f" * (300 * 1000))
        for _ in range(200):
            if full._full:
                break
            await deferLater(globalReactor, 0.01, lambda: None)
        self.assertTrue(full._full)
        buffered = full._bufSize
        closing = full.close()
        closing.addTimeout(10, globalReactor)
        await closing
        self.assertEqual(full.readyState, "closed")
        # what was buffered before the close is still there to read; what
        # came past the mark while closing was dropped
        data = await full.read()
        self.assertGreaterEqual(len(data), buffered)
        self.assertLess(len(data), 300 * 1000)
        self.assertEqual(data, b"f" * len(data))
        sending.addErrback(lambda _: None)
        end = client.read()
        end.addErrback(lambda _: b"")
        self.assertEqual(await end, b"")

    async def test_closeWithPeerNotReading(self) -> None:
        """
        A TLS C{close()} whose peer does not read (so never answers the
        close-notify) ends after C{tlsCloseTimeout}: the connection is
        aborted and C{closed} fails with L{TimeoutError}.
        """
        from twisted.internet.error import TimeoutError as UserTimeoutError

        self.patch(TCPClientSocket, "tlsCloseTimeout", 0.2)
        pki = testPKI()
        server = await listenSocket(
            SSL4ServerEndpoint(
                globalReactor, 0, pki.serverOptions(), interface="127.0.0.1"
            )
        )
        self.addCleanup(server.close)
        client = await connectSocket(self.tlsEndpoint(server, pki.clientOptions()))
        self.addCleanup(client.closeImmediately)
        peer = await server.accept()
        assert peer is not None
        self.addCleanup(peer.closeImmediately)
        peer.suspend()
        await deferLater(globalReactor, 0.02, lambda: None)
        closing = client.close()
        closing.addTimeout(10, globalReactor)
        await closing
        self.assertEqual(client.readyState, "closed")
        with self.assertRaises(UserTimeoutError):
            await client.closed

    async def test_silentPeersTimeOut(self) -> None:
        """
        Over loopback, a TLS handshake the peer never answers ends after
        C{tlsHandshakeTimeout}: a client connecting to a server that says
        nothing fails with L{TimeoutError}; a TLS server drops a client that
        sends nothing.
        """
        from twisted.internet.error import TimeoutError as UserTimeoutError

        self.patch(TCPClientSocket, "tlsHandshakeTimeout", 0.2)
        pki = testPKI()
        silent = await self.plainServer()
        self.addCleanup(lambda: [s.closeImmediately() for s in silent._queue])
        connecting = connectSocket(self.tlsEndpoint(silent, pki.clientOptions()))
        connecting.addTimeout(10, globalReactor)
        with self.assertRaises(UserTimeoutError):
            await connecting

        server = await self.tlsServer()
        assert server.localPort is not None
        plain = await connectSocket(
            TCP4ClientEndpoint(globalReactor, "127.0.0.1", server.localPort)
        )
        self.addCleanup(plain.closeImmediately)
        reading = plain.read()
        reading.addTimeout(10, globalReactor)
        try:
            self.assertEqual(await reading, b"")
        except ConnectionClosed:
            pass  # the server's abort may arrive as a reset

    async def test_clientCertificate(self) -> None:
        """
        A client certificate given in C{tlsOptions} satisfies a server that
        requires one.
        """
        pki = testPKI()
        server = await self.tlsServer(pki.serverOptions(requireClientCertificate=True))
        sock = await connectSocket(
            self.tlsEndpoint(server, pki.clientOptions(withClientCertificate=True))
        )
        self.addCleanup(sock.closeImmediately)
        await sock.write(b"mutual")
        self.assertEqual(await sock.readExactly(6), b"mutual")

    async def assertHandshakeFails(self, sock: TCPClientSocket) -> None:
        """
        C{opened} and C{closed} of C{sock} fail with a TLS error and the
        socket ends C{"closed"}.
        """
        with self.assertRaises(HANDSHAKE_ERRORS):
            await sock.opened
        with self.assertRaises(HANDSHAKE_ERRORS):
            await sock.closed
        self.assertEqual(sock.readyState, "closed")

    async def test_untrustedIssuer(self) -> None:
        """
        A server certificate from an untrusted issuer fails C{opened} and
        C{closed} with the TLS error.
        """
        server = await self.tlsServer()
        sock = startSocket(
            self.tlsEndpoint(server, testPKI().otherTrustClientOptions())
        )
        with self.assertRaises(SSLError):
            await sock.opened
        await self.assertHandshakeFails(sock)

    async def test_nameMismatch(self) -> None:
        """
        A server certificate for another name fails with
        L{VerificationError}.
        """
        server = await self.tlsServer()
        sock = startSocket(
            self.tlsEndpoint(server, testPKI().clientOptions("example.com"))
        )
        with self.assertRaises(VerificationError):
            await sock.opened
        await self.assertHandshakeFails(sock)

    async def test_garbageFromServer(self) -> None:
        """
        A "TLS server" that answers with garbage fails the handshake.
        """
        server = await self.plainServer()

        async def garbage() -> None:
            accepted = await server.accept()
            assert accepted is not None
            self.addCleanup(accepted.closeImmediately)
            await accepted.write(b"HTTP/1.0 400 not TLS at all\r\n\r\n" * 10)

        serving = ensureDeferred(garbage())
        sock = startSocket(self.tlsEndpoint(server, testPKI().clientOptions()))
        await self.assertHandshakeFails(sock)
        await serving

    async def test_garbageToServer(self) -> None:
        """
        A TLS server that receives garbage never hands the connection out,
        and closes it.
        """
        pki = testPKI()
        server = await listenSocket(
            SSL4ServerEndpoint(
                globalReactor, 0, pki.serverOptions(), interface="127.0.0.1"
            )
        )
        self.addCleanup(server.close)
        assert server.localPort is not None
        client = await connectSocket(
            TCP4ClientEndpoint(globalReactor, "127.0.0.1", server.localPort)
        )
        self.addCleanup(client.closeImmediately)
        await client.write(b"\x00" * 64 + b"not a client hello\r\n")
        data = b""
        for _ in range(100):
            chunk = await client.read()
            if not chunk:
                break
            data += chunk
        self.assertEqual(len(server._queue), 0)
        pending = server.accept()
        self.assertFalse(pending.called)

    async def test_closeEndsHandshakingConnections(self) -> None:
        """
        Closing a TLS server closes the connections still waiting for their
        handshake (never handed out): their clients read EOF.
        """
        pki = testPKI()
        server = await listenSocket(
            SSL4ServerEndpoint(
                globalReactor, 0, pki.serverOptions(), interface="127.0.0.1"
            )
        )
        assert server.localPort is not None
        client = await connectSocket(
            TCP4ClientEndpoint(globalReactor, "127.0.0.1", server.localPort)
        )
        self.addCleanup(client.closeImmediately)
        for _ in range(100):
            if server._handshaking:
                break
            await deferLater(globalReactor, 0.01, lambda: None)
        self.assertEqual(len(server._handshaking or ()), 1)
        await server.close()
        data = b""
        for _ in range(100):
            try:
                chunk = await client.read()
            except ConnectionClosed:
                break
            if not chunk:
                break
            data += chunk
        self.assertEqual(client.readyState, "closed")

    async def test_starttls(self) -> None:
        """
        C{upgradeToSecure()} on both ends: the plain exchange, then TLS; the
        handshake completes on both and C{ssl} becomes L{True}.
        """
        pki = testPKI()
        server = await self.plainServer()
        serverSaw: list[bytes] = []

        async def starttlsServer() -> None:
            accepted = await server.accept()
            assert accepted is not None
            self.addCleanup(accepted.closeImmediately)
            serverSaw.append(await accepted.readUntil(b"\n"))
            await accepted.write(b"OK go ahead\n")
            await accepted.upgradeToSecure(pki.serverOptions())
            self.assertTrue(accepted.ssl)
            serverSaw.append(await accepted.readExactly(6))
            await accepted.write(b"secret reply")
            await accepted.close()

        serving = ensureDeferred(starttlsServer())
        assert server.localPort is not None
        sock = await connectSocket(
            TCP4ClientEndpoint(globalReactor, "127.0.0.1", server.localPort)
        )
        self.addCleanup(sock.closeImmediately)
        self.assertFalse(sock.ssl)
        sock.write(b"STARTTLS\n")
        self.assertEqual(await sock.readUntil(b"\n"), b"OK go ahead\n")
        upgraded = sock.upgradeToSecure(pki.clientOptions())
        sock.write(b"secret")
        with self.assertRaises(RuntimeError):
            await sock.upgradeToSecure(pki.clientOptions())
        await upgraded
        self.assertTrue(sock.ssl)
        self.assertFalse(sock._direct)
        reply = b""
        async for chunk in sock:
            reply += chunk
        self.assertEqual(reply, b"secret reply")
        await serving
        self.assertEqual(serverSaw, [b"STARTTLS\n", b"secret"])

    async def test_closeRightAfterUpgrade(self) -> None:
        """
        C{close()} right after C{upgradeToSecure()} (not awaited) waits for
        the handshake, then closes cleanly.
        """
        pki = testPKI()
        server = await self.plainServer()

        async def starttlsServer() -> bytes:
            accepted = await server.accept()
            assert accepted is not None
            self.addCleanup(accepted.closeImmediately)
            await accepted.upgradeToSecure(pki.serverOptions())
            data = b""
            async for chunk in accepted:
                data += chunk
            await accepted.close()
            return data

        serving = ensureDeferred(starttlsServer())
        assert server.localPort is not None
        sock = await connectSocket(
            TCP4ClientEndpoint(globalReactor, "127.0.0.1", server.localPort)
        )
        upgraded = sock.upgradeToSecure(pki.clientOptions())
        closing = sock.close()
        await upgraded
        self.assertTrue(sock.ssl)
        await closing
        self.assertIsNone(await sock.closed)
        self.assertEqual(await serving, b"")

    async def test_starttlsUntrusted(self) -> None:
        """
        A failed STARTTLS handshake fails the upgrade and C{closed} with the
        TLS error; the socket ends C{"closed"}.
        """
        pki = testPKI()
        server = await self.plainServer()

        async def starttlsServer() -> None:
            accepted = await server.accept()
            assert accepted is not None
            self.addCleanup(accepted.closeImmediately)
            try:
                await accepted.upgradeToSecure(pki.untrustedServerOptions())
            except Exception:
                pass

        serving = ensureDeferred(starttlsServer())
        assert server.localPort is not None
        sock = await connectSocket(
            TCP4ClientEndpoint(globalReactor, "127.0.0.1", server.localPort)
        )
        with self.assertRaises(SSLError):
            await sock.upgradeToSecure(pki.clientOptions())
        with self.assertRaises(SSLError):
            await sock.closed
        self.assertEqual(sock.readyState, "closed")
        self.assertFalse(sock.ssl)
        await serving

    async def test_upgradeWhenAlreadySecure(self) -> None:
        """
        C{upgradeToSecure()} on a TLS connection fails with L{RuntimeError};
        so does C{closeWrite()} (TLS cannot half-close) with L{ValueError}.
        """
        server = await self.tlsServer()
        sock = await connectSocket(self.tlsEndpoint(server, testPKI().clientOptions()))
        self.addCleanup(sock.closeImmediately)
        with self.assertRaises(RuntimeError):
            await sock.upgradeToSecure(testPKI().clientOptions())
        with self.assertRaises(ValueError):
            await sock.closeWrite()

    async def test_upgradeAfterClose(self) -> None:
        """
        C{upgradeToSecure()} on a closed socket fails with L{SocketClosed}.
        """
        server = await self.plainServer()
        assert server.localPort is not None
        sock = await connectSocket(
            TCP4ClientEndpoint(globalReactor, "127.0.0.1", server.localPort)
        )
        sock.closeImmediately()
        with self.assertRaises(SocketClosed):
            await sock.upgradeToSecure(testPKI().clientOptions())

    def test_bulkOverTLS(self) -> Deferred[None]:
        """
        256 KiB echo over TLS arrives whole, and closing with a producer
        registered on the TLS transport completes.
        """

        async def go() -> None:
            server = await self.tlsServer()
            sock = await connectSocket(
                self.tlsEndpoint(server, testPKI().clientOptions())
            )
            payload = bytes(range(256)) * 1024
            writing = sock.write(payload)
            received = await sock.readExactly(len(payload))
            await writing
            self.assertEqual(received, payload)
            await sock.close()
            await sock.closed
            for _ in range(3):
                await deferLater(globalReactor, 0, lambda: None)

        return ensureDeferred(go())


class RecordBatchTests(SynchronousTestCase):
    """
    The TLS records that one network read carries reach a pending C{read()}
    as one chunk (in memory: L{twisted.test.iosim} hands each side all the
    bytes written so far in one C{dataReceived}).
    """

    def connect(self) -> tuple[TCPClientSocket, TCPClientSocket, IOPump]:
        """
        A TLS client socket and the server socket it connected to, both
        open, over an in-memory connection.
        """
        pki = testPKI()
        clock = Clock()
        server = TCPServerSocket()
        serverFactory = TLSMemoryBIOFactory(
            pki.serverOptions(), False, ServerSocketFactory(server), clock
        )
        clientFactory = ClientSocketFactory("localhost", 443)
        tlsClientFactory = TLSMemoryBIOFactory(
            pki.clientOptions("localhost"), True, clientFactory, clock
        )
        address = IPv4Address("TCP", "127.0.0.1", 443)
        _, _, pump = connectedServerAndClient(
            lambda: serverFactory.buildProtocol(address),
            lambda: tlsClientFactory.buildProtocol(address),
            clock=clock,
        )
        pump.flush()
        accepted = self.successResultOf(server.accept())
        assert accepted is not None
        client = clientFactory.socket
        self.assertTrue(client.ssl)
        self.assertTrue(accepted.ssl)
        return client, accepted, pump

    def test_recordsOfOneReadInOneChunk(self) -> None:
        """
        64 KiB written at once travel as four 16 KiB TLS records; a read
        pending when they arrive gets all 64 KiB, not the first record.
        """
        client, accepted, pump = self.connect()
        reading = accepted.read()
        payload = bytes(range(256)) * 256
        client.write(payload)
        pump.flush()
        self.assertEqual(self.successResultOf(reading), payload)

    def test_recordsThenCloseNotify(self) -> None:
        """
        Data and the peer's close-notify decrypted from the same network
        read: the pending read gets the data, the next one the end.
        """
        client, accepted, pump = self.connect()
        reading = accepted.read()
        payload = b"x" * 40000
        client.write(payload)
        client.close()
        pump.flush()
        self.assertEqual(self.successResultOf(reading), payload)
        self.assertEqual(self.successResultOf(accepted.read()), b"")

    def test_cancelledReadSkipped(self) -> None:
        """
        A pending read cancelled by its user does not swallow the batch: the
        next pending read gets it, in order.
        """
        client, accepted, pump = self.connect()
        first = accepted.read()
        second = accepted.read()
        first.cancel()
        self.failureResultOf(first)
        client.write(b"a" * 20000 + b"b" * 20000)
        pump.flush()
        self.assertEqual(self.successResultOf(second), b"a" * 20000 + b"b" * 20000)

    def test_endInsideBatch(self) -> None:
        """
        Should the stream end while the records of a network read are being
        gathered, the pending read still gets the gathered bytes first and
        the next read the end (or the error).
        """
        for reason, outcome in [
            (None, b""),
            (Failure(ConnectionLost("reset")), ConnectionLost),
        ]:
            sock, protocol, _ = connected()
            reading = sock.read()
            protocol.batch = []
            protocol.dataReceived(b"abc")
            protocol.dataReceived(b"def")
            self.assertNoResult(reading)
            if reason is None:
                protocol.readConnectionLost()
            else:
                protocol.connectionLost(reason)
            self.assertEqual(self.successResultOf(reading), b"abcdef")
            if outcome == b"":
                self.assertEqual(self.successResultOf(sock.read()), b"")
            else:
                self.failureResultOf(sock.read(), outcome)  # type: ignore[arg-type]


def sslClient(
    port: int, caPEM: bytes, offer: list[str], payload: bytes
) -> tuple[str | None, bytes]:
    """
    Connect with the standard C{ssl} module (blocking: run it in a thread),
    offering C{offer} with ALPN; send C{payload} and read as much back.

    @return: The protocol agreed with ALPN, and what came back.
    """
    context = stdssl.create_default_context(cadata=caPEM.decode("ascii"))
    if offer:
        context.set_alpn_protocols(offer)
    with stdsocket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = tls.recv(65536)
                if not chunk:
                    break
                got += chunk
            return tls.selected_alpn_protocol(), got


class ALPNTests(TestCase):
    """
    ALPN: TLS listeners accept clients that offer it, agree to the
    protocols they are given, and sockets show the one agreed.
    """

    timeout = 120

    async def listener(
        self, alpnProtocols: list[str] | None = None
    ) -> tuple[TCPServerSocket, list[TCPClientSocket]]:
        """
        A TLS echo server on 127.0.0.1 (TLS from the start) with
        C{alpnProtocols}, and the list of the sockets it accepted.
        """
        server = await listenSocket(
            SSL4ServerEndpoint(
                globalReactor, 0, testPKI().serverOptions(), interface="127.0.0.1"
            ),
            alpnProtocols=alpnProtocols,
        )
        self.addCleanup(server.close)
        accepted: list[TCPClientSocket] = []
        serveEcho(self, server, accepted)
        return server, accepted

    async def offer(
        self, server: TCPServerSocket, offer: list[str]
    ) -> tuple[str | None, bytes]:
        """
        Connect to C{server} with the standard C{ssl} module offering
        C{offer}; echo 5 bytes.
        """
        assert server.localPort is not None
        return await deferToThread(
            sslClient, server.localPort, testPKI().caPEM, offer, b"hello"
        )

    async def test_offerToServerWithout(self) -> None:
        """
        A client offering ALPN to a listener with no protocols of its own
        is accepted: nothing is agreed, data flows.  (Twisted's own answer
        to such an offer fails the handshake with an internal error alert.)
        """
        server, accepted = await self.listener()
        agreed, echoed = await self.offer(server, ["h2", "http/1.1"])
        self.assertEqual((agreed, echoed), (None, b"hello"))
        self.assertEqual(len(accepted), 1)
        self.assertIsNone(accepted[0].alpnProtocol)
        self.assertTrue(accepted[0].ssl)
        # and a client offering nothing too
        self.assertEqual(await self.offer(server, []), (None, b"hello"))

    async def test_agreed(self) -> None:
        """
        A listener with C{alpnProtocols} agrees to the first of its own that
        the client offers; both ends know it.
        """
        server, accepted = await self.listener(["http/1.1", "h2"])
        agreed, echoed = await self.offer(server, ["h2", "http/1.1"])
        self.assertEqual((agreed, echoed), ("http/1.1", b"hello"))
        self.assertEqual(accepted[0].alpnProtocol, "http/1.1")
        # a client without ALPN still connects: nothing agreed
        self.assertEqual(await self.offer(server, []), (None, b"hello"))
        self.assertIsNone(accepted[1].alpnProtocol)

    async def test_noOverlapRefusedAndLogged(self) -> None:
        """
        A listener with C{alpnProtocols} refuses a client that offers none
        of them; the failed handshake is logged at debug level with the
        peer and the reason, and never shows up in C{connections}.
        """
        events: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "tcpext.server":
                events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        server, accepted = await self.listener(["h2"])
        with self.assertRaises(stdssl.SSLError):
            await self.offer(server, ["http/1.1"])
        for _ in range(500):
            if events:
                break
            await deferLater(globalReactor, 0.01, lambda: None)
        self.assertEqual(accepted, [])
        [event] = events
        self.assertIs(event["log_level"], LogLevel.debug)
        text = formatEvent(event)
        self.assertRegex(text, r"^TLS handshake with 127\.0\.0\.1:\d+ failed: .+")

    async def test_tcpextClient(self) -> None:
        """
        C{connectSocket(..., alpnProtocols=...)} offers the protocols; the
        client socket shows the one agreed, as does the accepted socket.
        """
        server, accepted = await self.listener(["http/1.1"])
        assert server.localPort is not None
        sock = await connectSocket(
            wrapClientTLS(
                testPKI().clientOptions(),
                TCP4ClientEndpoint(globalReactor, "127.0.0.1", server.localPort),
            ),
            alpnProtocols=["h2", "http/1.1"],
        )
        self.addCleanup(sock.closeImmediately)
        self.assertEqual(sock.alpnProtocol, "http/1.1")
        await sock.write(b"ping")
        self.assertEqual(await sock.readExactly(4), b"ping")
        self.assertEqual(accepted[0].alpnProtocol, "http/1.1")
        await sock.close()

    async def test_starttls(self) -> None:
        """
        An accepted socket's STARTTLS answers a client's ALPN offer too.
        """
        pki = testPKI()
        client, accepted = await loopbackPair(self)
        options = optionsForClientTLS(
            "localhost",
            trustRoot=trustRootFromCertificates([pki.caCertificate()]),
            acceptableProtocols=[b"h2"],
        )
        upgrading = accepted.upgradeToSecure(pki.serverOptions())
        await client.upgradeToSecure(options)
        await upgrading
        self.assertIsNone(client.alpnProtocol)
        self.assertIsNone(accepted.alpnProtocol)
        await client.write(b"over tls")
        self.assertEqual(await accepted.readExactly(8), b"over tls")

    def test_badProtocolNames(self) -> None:
        """
        Bad C{alpnProtocols} fail at the call, saying what was wrong.
        """
        endpoint = TCP4ServerEndpoint(globalReactor, 0, interface="127.0.0.1")
        for value, error, text in [
            ("h2", TypeError, "list of protocol names"),
            (["h2", 2], TypeError, "str or bytes"),
            ([""], ValueError, "1 to 255 bytes"),
            (["x" * 256], ValueError, "1 to 255 bytes"),
            (["h\u00e9"], ValueError, "not ASCII"),
            (["h2", b"h2"], ValueError, "listed twice"),
        ]:
            failure = self.failureResultOf(
                listenSocket(endpoint, alpnProtocols=value), error
            )
            self.assertIn(text, str(failure.value))
        self.assertRaises(
            TypeError,
            startSocket,
            TCP4ClientEndpoint(globalReactor, "127.0.0.1", 1),
            alpnProtocols="h2",
        )

    async def test_curl(self) -> None:
        """
        curl, which offers ALPN (h2, http/1.1) by default, gets a page from
        a tcpext TLS listener with no protocols, and from one that agrees to
        C{http/1.1}.
        """
        curl = shutil.which("curl")
        if curl is None:
            raise SkipTest("curl is not installed")
        caFile = self.mktemp()
        with open(caFile, "wb") as f:
            f.write(testPKI().caPEM)
        for alpnProtocols, expected in [(None, None), (["http/1.1"], "http/1.1")]:
            server = await listenSocket(
                SSL4ServerEndpoint(
                    globalReactor, 0, testPKI().serverOptions(), interface="127.0.0.1"
                ),
                alpnProtocols=alpnProtocols,
            )
            self.addCleanup(server.close)
            seen: list[str | None] = []

            async def page(server: TCPServerSocket, seen: list[str | None]) -> None:
                async for sock in server.connections:
                    seen.append(sock.alpnProtocol)
                    await sock.readUntil(b"\r\n\r\n")
                    await sock.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n"
                        b"Connection: close\r\n\r\ntcpext"
                    )
                    await sock.close()

            serving = ensureDeferred(page(server, seen))
            serving.addErrback(lambda f: None)
            out, err, code = await getProcessOutputAndValue(
                curl,
                [
                    "-sS",
                    "--max-time",
                    "30",
                    "--cacert",
                    caFile,
                    f"https://localhost:{server.localPort}/",
                ],
                env=dict(os.environ),
            )
            self.assertEqual((code, out), (0, b"tcpext"), err)
            self.assertEqual(seen, [expected])
