# -*- test-case-name: tests.test_browser_loopback -*-
"""
End-to-end tests of the C{browser} namespace over real loopback sockets, with
a L{FakeResolver} giving made-up names loopback and private addresses.
"""

from __future__ import annotations

import datetime
import socket
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.trial.unittest import TestCase

from tcpext.browser import Browser, makeBrowser
from tcpext.permissions import PermissionDenied
from tcpext.testing import FakeResolver, withResolver

NAME = "service.test"


def _certificates(name: str) -> tuple[Certificate, PrivateCertificate]:
    """
    A throwaway CA and a server certificate for C{name} signed by it.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    caKey = ec.generate_private_key(ec.SECP256R1())
    caName = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tcpext test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(caName)
        .issuer_name(caName)
        .public_key(caKey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(caKey, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(caName)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .sign(caKey, hashes.SHA256())
    )
    keyPEM = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return (
        Certificate.loadPEM(ca.public_bytes(serialization.Encoding.PEM)),
        PrivateCertificate.loadPEM(
            cert.public_bytes(serialization.Encoding.PEM) + keyPEM
        ),
    )


def _ipv6Loopback() -> bool:
    """
    Can this host bind ::1?
    """
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAVE_IPV6 = _ipv6Loopback()


class _Hello(Protocol):
    """
    Greets, records what it receives, and notes when it disconnects.
    """

    def connectionMade(self) -> None:
        """
        Say hello.
        """
        assert self.transport is not None
        self.factory.connections.append(self)  # type: ignore[attr-defined]
        self.received = b""
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.transport.write(b"hello\n")

    def dataReceived(self, data: bytes) -> None:
        """
        Keep C{data}.
        """
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        """
        Fire C{lost}.
        """
        self.lost.callback(None)


class LoopbackTests(TestCase):
    """
    Connect and listen through the browser namespace on real loopback.
    """

    timeout = 20

    def setUp(self) -> None:
        """
        Start a greeting server on 127.0.0.1 (and on ::1 on the same port
        when IPv6 is available).
        """
        self.factory = Factory.forProtocol(_Hello)
        self.factory.connections = []  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        if HAVE_IPV6:
            try:
                port6 = reactor.listenTCP(self.port, self.factory, interface="::1")  # type: ignore[attr-defined]
            except Exception:
                pass
            else:
                self.addCleanup(port6.stopListening)
        self.resolver = FakeResolver()

    def browser(self, *permissions: str, optional: tuple[str, ...] = ()) -> Browser:
        """
        A browser namespace on the real reactor, resolving with
        C{self.resolver}; closed at cleanup.
        """
        browser = makeBrowser(
            extensionId="loopback-test",
            manifest={
                "manifest_version": 2,
                "name": "loopback-test",
                "version": "1",
                "permissions": list(permissions),
                "optional_permissions": list(optional),
            },
            reactor=withResolver(reactor, self.resolver),
            operatorGrants=optional,
        )
        self.addCleanup(browser.close)
        return browser

    async def greeting(self, sock: Any) -> bytes:
        """
        Read the server's greeting, then close.
        """
        await sock.opened
        line: bytes = await sock.readUntil(b"\n")
        await sock.close()
        return line

    async def assertDeniedAddress(self, browser: Browser, address: str) -> None:
        """
        Connecting to C{NAME} when it resolves to C{address} is denied, names
        the address, and connects nothing.
        """
        self.resolver.add(NAME, address)
        before = len(self.factory.connections)  # type: ignore[attr-defined]
        try:
            await browser.TCPSocket.connect(host=NAME, port=self.port)
        except PermissionDenied as e:
            self.assertIn("permission denied", str(e))
            self.assertIn(f"{NAME}:{self.port}", str(e))
            self.assertTrue(
                address in str(e)
                or address == "::ffff:7f00:1"
                and "127.0.0.1" in str(e),
                str(e),
            )
        else:
            self.fail(f"{address} was not denied")
        self.assertEqual(len(self.factory.connections), before)  # type: ignore[attr-defined]

    async def test_nonPublicAddressesDenied(self) -> None:
        """
        A name grant does not reach loopback, private, link-local, or
        IPv4-mapped loopback addresses that the name resolves to.
        """
        browser = self.browser(f"tcp-connect:{NAME}:{self.port}")
        for address in (
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "::1",
            "::ffff:7f00:1",
        ):
            await self.assertDeniedAddress(browser, address)

    async def test_ipGrantAllows(self) -> None:
        """
        An IP grant covering the resolved loopback address allows the name.
        """
        browser = self.browser(
            f"tcp-connect:{NAME}:{self.port}", f"tcp-connect:127.0.0.0/8:{self.port}"
        )
        self.resolver.add(NAME, "127.0.0.1")
        sock = await browser.TCPSocket.connect(host=NAME, port=self.port)
        self.assertEqual(sock.readyState, "connecting")
        self.assertEqual(await self.greeting(sock), b"hello\n")
        self.assertEqual(sock.remoteAddress, "127.0.0.1")
        await self.assertDeniedAddress(browser, "10.0.0.1")

    async def test_mappedAddressDialedAsIPv4(self) -> None:
        """
        An IPv4-mapped answer is checked and dialed as its IPv4 address.
        """
        browser = self.browser(f"tcp-connect:*:{self.port}")
        self.resolver.add(NAME, "::ffff:7f00:1")
        sock = await browser.TCPSocket.connect(host=NAME, port=self.port)
        self.assertEqual(await self.greeting(sock), b"hello\n")
        self.assertEqual(sock.remoteAddress, "127.0.0.1")

    async def test_wildcardGrantAllows(self) -> None:
        """
        A C{*} host grant allows names that resolve to loopback.
        """
        browser = self.browser(f"tcp-connect:*:{self.port}")
        addresses = ["127.0.0.1", "::1"] if HAVE_IPV6 else ["127.0.0.1"]
        for address in addresses:
            self.resolver.add(NAME, address)
            sock = await browser.TCPSocket.connect(host=NAME, port=self.port)
            self.assertEqual(await self.greeting(sock), b"hello\n")
            self.assertEqual(sock.remoteAddress, address)

    async def test_localhost(self) -> None:
        """
        C{localhost} reaches loopback without asking the resolver.
        """
        self.resolver.add("localhost", "10.0.0.1")
        browser = self.browser(f"tcp-connect:localhost:{self.port}")
        sock = await browser.TCPSocket.connect(host="localhost", port=self.port)
        self.assertEqual(await self.greeting(sock), b"hello\n")
        self.assertIn(sock.remoteAddress, ("127.0.0.1", "::1"))
        self.assertEqual(self.resolver.lookups, [])

    async def test_numericAliasDenied(self) -> None:
        """
        A numeric alias of 127.0.0.1 is refused even under a C{*} grant.
        """
        browser = self.browser(f"tcp-connect:*:{self.port}")
        for alias in ("2130706433", "0x7f000001", "127.1"):
            with self.assertRaises(ValueError):
                await browser.TCPSocket.connect(host=alias, port=self.port)
        self.assertEqual(self.factory.connections, [])  # type: ignore[attr-defined]
        self.assertEqual(self.resolver.lookups, [])

    async def test_revokeClosesSocket(self) -> None:
        """
        Removing the grant a connection relies on aborts it with
        L{PermissionDenied}; the server sees the connection end.
        """
        grant = f"tcp-connect:127.0.0.1:{self.port}"
        browser = self.browser(optional=(grant,))
        sock = await browser.TCPSocket.connect(host="127.0.0.1", port=self.port)
        self.assertEqual(await sock.readUntil(b"\n"), b"hello\n")
        [server] = self.factory.connections  # type: ignore[attr-defined]
        self.assertIs(await browser.permissions.remove({"permissions": [grant]}), True)
        with self.assertRaises(PermissionDenied):
            await sock.closed
        await server.lost
        with self.assertRaises(PermissionDenied):
            await browser.TCPSocket.connect(host="127.0.0.1", port=self.port)

    async def test_listenAndClose(self) -> None:
        """
        A server on an automatic loopback port accepts a real connection, and
        closing the namespace closes the server and the accepted socket.
        """
        browser = self.browser("tcp-listen:*")
        server = await browser.TCPSocket.listen(host="127.0.0.1", backLog=4)
        self.assertNotEqual(server.localPort, 0)
        received: defer.Deferred[bytes] = defer.Deferred()

        class Client(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.callback(data)

        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", server.localPort), Client()
        )
        conn = await server.connections.__anext__()
        await conn.write(b"hi")
        self.assertEqual(await received, b"hi")
        await browser.close()
        await server.closed
        await conn.closed


class LoopbackTLSTests(TestCase):
    """
    TLS through the browser namespace, client and server, on real loopback.
    """

    timeout = 20

    async def test_tls(self) -> None:
        """
        A TLS server listened through the namespace accepts a TLS client
        connected through it by name, verified against a private CA; the
        system trust roots refuse the same server.
        """
        ca, server = _certificates(NAME)
        resolver = FakeResolver({NAME: ["127.0.0.1"]})
        browser = makeBrowser(
            extensionId="tls-test",
            manifest={
                "permissions": [
                    "tcp-listen:*",
                    f"tcp-connect:{NAME}:*",
                    "tcp-connect:127.0.0.1:*",
                ]
            },
            reactor=withResolver(reactor, resolver),
        )
        self.addCleanup(browser.close)
        listener = await browser.TCPSocket.listen(
            host="127.0.0.1", useSecureTransport=True, tlsOptions=server.options()
        )
        client = await browser.TCPSocket.connect(
            host=NAME,
            port=listener.localPort,
            useSecureTransport=True,
            tlsOptions=optionsForClientTLS(NAME, trustRoot=ca),
        )
        conn = await listener.connections.__anext__()
        await client.write(b"secret\n")
        self.assertEqual(await conn.readUntil(b"\n"), b"secret\n")
        await client.opened
        self.assertTrue(client.ssl)
        await client.close()

        untrusted = await browser.TCPSocket.connect(
            host=NAME, port=listener.localPort, useSecureTransport=True
        )
        with self.assertRaises(Exception) as caught:
            await untrusted.opened
        self.assertNotIsInstance(caught.exception, PermissionDenied)
