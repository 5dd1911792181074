# -*- test-case-name: tests.test_browser -*-
"""
Tests for L{tcpext.browser} and the option validation in L{tcpext._options}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import (
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.internet.protocol import ClientFactory, Factory, ProcessProtocol, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tcpext._options import (
    DEFAULT_BACKLOG,
    ConnectOptions,
    ListenOptions,
    parseConnectOptions,
    parseListenOptions,
)
from tcpext.browser import (
    GrantNotSaved,
    MemoryGrantStore,
    allowAll,
    denyAll,
    makeBrowser,
)
from tcpext.permissions import PermissionDenied
from tcpext.reactor import PermissionCheckingReactor
from tcpext.testing import StubBrowser


class ConnectOptionsTests(SynchronousTestCase):
    """
    Tests for L{parseConnectOptions}.
    """

    def test_mapping(self) -> None:
        """
        A mapping with C{host} and C{port} gives the defaults for the rest.
        """
        self.assertEqual(
            parseConnectOptions({"host": "example.com", "port": 80}, {}),
            ConnectOptions("example.com", 80, False, None, None),
        )

    def test_keywords(self) -> None:
        """
        The same keys work as keyword arguments, and C{address} is an alias
        of C{host}.
        """
        self.assertEqual(
            parseConnectOptions(
                None, {"address": "example.com", "port": 443, "timeout": 5}
            ),
            ConnectOptions("example.com", 443, False, None, 5.0),
        )

    def test_mappingAndKeywords(self) -> None:
        """
        A mapping and keyword arguments combine.
        """
        options = parseConnectOptions(
            {"host": "example.com"}, {"port": 443, "useSecureTransport": True}
        )
        self.assertEqual((options.port, options.useSecureTransport), (443, True))

    def test_givenTwice(self) -> None:
        """
        A key in both the mapping and the keywords is a L{TypeError}.
        """
        exc = self.assertRaises(
            TypeError,
            parseConnectOptions,
            {"host": "example.com", "port": 1},
            {"port": 2},
        )
        self.assertIn("'port' given twice", str(exc))

    def test_hostAndAddress(self) -> None:
        """
        Giving both C{host} and its alias C{address} is a L{TypeError}.
        """
        exc = self.assertRaises(
            TypeError,
            parseConnectOptions,
            {"host": "a.example", "address": "b.example", "port": 1},
            {},
        )
        self.assertIn("aliases", str(exc))

    def test_notMapping(self) -> None:
        """
        Options that are not a mapping are a L{TypeError}.
        """
        exc = self.assertRaises(TypeError, parseConnectOptions, ["host"], {})
        self.assertIn("must be a mapping", str(exc))

    def test_unknownKey(self) -> None:
        """
        An unknown option is a L{TypeError} that names it.
        """
        exc = self.assertRaises(
            TypeError,
            parseConnectOptions,
            {"host": "example.com", "port": 1, "hots": "x"},
            {},
        )
        self.assertIn("'hots'", str(exc))

    def test_missingHost(self) -> None:
        """
        A missing host is a L{ValueError}.
        """
        exc = self.assertRaises(ValueError, parseConnectOptions, {"port": 80}, {})
        self.assertIn("'host'", str(exc))

    def test_emptyHost(self) -> None:
        """
        An empty host is a L{ValueError}; a non-string host a L{TypeError}.
        """
        self.assertRaises(ValueError, parseConnectOptions, {"host": "", "port": 1}, {})
        self.assertRaises(
            TypeError, parseConnectOptions, {"host": b"example.com", "port": 1}, {}
        )

    def test_missingPort(self) -> None:
        """
        A missing port is a L{ValueError}.
        """
        exc = self.assertRaises(
            ValueError, parseConnectOptions, {"host": "example.com"}, {}
        )
        self.assertIn("'port'", str(exc))

    def test_portRange(self) -> None:
        """
        A port outside 1..65535 is a L{ValueError}.
        """
        for port in (0, -1, 65536, 100000):
            exc = self.assertRaises(
                ValueError, parseConnectOptions, {"host": "h", "port": port}, {}
            )
            self.assertIn(str(port), str(exc))
        self.assertEqual(
            parseConnectOptions({"host": "h", "port": 65535}, {}).port, 65535
        )

    def test_portType(self) -> None:
        """
        A port that is not an int (a bool, a string, a float) is a
        L{TypeError}.
        """
        for port in (True, "80", 80.0):
            self.assertRaises(
                TypeError, parseConnectOptions, {"host": "h", "port": port}, {}
            )

    def test_secureType(self) -> None:
        """
        C{useSecureTransport} must be a bool.
        """
        self.assertRaises(
            TypeError,
            parseConnectOptions,
            {"host": "h", "port": 1, "useSecureTransport": 1},
            {},
        )

    def test_tlsOptionsWithoutTLS(self) -> None:
        """
        C{tlsOptions} without C{useSecureTransport} is a L{ValueError}.
        """
        exc = self.assertRaises(
            ValueError,
            parseConnectOptions,
            {"host": "h", "port": 1, "tlsOptions": object()},
            {},
        )
        self.assertIn("useSecureTransport", str(exc))

    def test_timeout(self) -> None:
        """
        C{timeout} must be a positive finite number.
        """
        for bad in (0, -1, float("inf"), float("nan")):
            self.assertRaises(
                ValueError,
                parseConnectOptions,
                {"host": "h", "port": 1, "timeout": bad},
                {},
            )
        for bad in (True, "5"):
            self.assertRaises(
                TypeError,
                parseConnectOptions,
                {"host": "h", "port": 1, "timeout": bad},
                {},
            )
        self.assertEqual(
            parseConnectOptions({"host": "h", "port": 1, "timeout": 0.5}, {}).timeout,
            0.5,
        )


class ListenOptionsTests(SynchronousTestCase):
    """
    Tests for L{parseListenOptions}.
    """

    def test_defaults(self) -> None:
        """
        No options at all: an automatic port, the default backlog, every IPv4
        interface, no TLS.
        """
        self.assertEqual(
            parseListenOptions(None, {}),
            ListenOptions(0, DEFAULT_BACKLOG, "0.0.0.0", False, None),
        )
        self.assertEqual(DEFAULT_BACKLOG, 128)

    def test_minusOne(self) -> None:
        """
        C{-1} for the port or the backlog means the default, like L{None}.
        """
        options = parseListenOptions({"port": -1, "backLog": -1}, {})
        self.assertEqual((options.port, options.backLog), (0, DEFAULT_BACKLOG))
        options = parseListenOptions({"port": None, "backLog": None}, {})
        self.assertEqual((options.port, options.backLog), (0, DEFAULT_BACKLOG))

    def test_values(self) -> None:
        """
        Given values are kept.
        """
        self.assertEqual(
            parseListenOptions(None, {"port": 7000, "backLog": 5, "host": "::1"}),
            ListenOptions(7000, 5, "::1", False, None),
        )

    def test_portRange(self) -> None:
        """
        A port outside 0..65535 (other than -1) is a L{ValueError}.
        """
        for port in (-2, 65536):
            self.assertRaises(ValueError, parseListenOptions, {"port": port}, {})

    def test_portType(self) -> None:
        """
        A non-int port, including a bool or C{-1.0}, is a L{TypeError}.
        """
        for port in (False, "7000", -1.0, 7000.0):
            self.assertRaises(TypeError, parseListenOptions, {"port": port}, {})

    def test_backLog(self) -> None:
        """
        The backlog must be a positive int (or -1 / None).
        """
        for bad in (0, -2):
            self.assertRaises(ValueError, parseListenOptions, {"backLog": bad}, {})
        for bad in (True, "5", 5.0):
            self.assertRaises(TypeError, parseListenOptions, {"backLog": bad}, {})

    def test_unknownKey(self) -> None:
        """
        An unknown option is a L{TypeError} that names it.
        """
        exc = self.assertRaises(TypeError, parseListenOptions, {"backlog": 5}, {})
        self.assertIn("'backlog'", str(exc))

    def test_tlsNeedsOptions(self) -> None:
        """
        Server TLS needs C{tlsOptions}, and C{tlsOptions} needs TLS.
        """
        exc = self.assertRaises(
            ValueError, parseListenOptions, {"useSecureTransport": True}, {}
        )
        self.assertIn("tlsOptions", str(exc))
        self.assertRaises(ValueError, parseListenOptions, {"tlsOptions": object()}, {})
        marker = object()
        options = parseListenOptions(
            {"useSecureTransport": True, "tlsOptions": marker}, {}
        )
        self.assertIs(options.tlsOptions, marker)


def _events() -> tuple[list[dict[str, Any]], Logger]:
    """
    A logger in an extension's namespace that records its events.
    """
    events: list[dict[str, Any]] = []
    return events, Logger(namespace="tcpext.extension.test", observer=events.append)


def _denials(events: list[dict[str, Any]]) -> list[str]:
    """
    The formatted denial events.
    """
    return [
        formatEvent(e) for e in events if e.get("log_format", "").startswith("denied")
    ]


def _refusedConnect(stub: StubBrowser, host: str, port: int) -> Failure:
    """
    Connect to C{host:port} through C{stub}'s C{browser.reactor}; the
    connection must fail with L{PermissionDenied}: that failure.
    """
    failed: list[Failure] = []
    factory = ClientFactory()
    factory.clientConnectionFailed = lambda c, f: failed.append(f)  # type: ignore[method-assign]
    stub.browser.reactor.connectTCP(host, port, factory)
    stub.advance(0)
    [failure] = failed
    failure.trap(PermissionDenied)
    return failure


class NamespaceTests(SynchronousTestCase):
    """
    The shape of the C{browser} namespace.
    """

    def test_connectOnlyWithConnectPermission(self) -> None:
        """
        C{TCPSocket.connect} exists only if the manifest lists a
        C{tcp-connect:} entry (required or optional); likewise C{listen}.
        """
        self.assertFalse(hasattr(StubBrowser().browser.TCPSocket, "connect"))
        self.assertFalse(hasattr(StubBrowser().browser.TCPSocket, "listen"))
        b = StubBrowser(permissions=["tcp-connect:example.com:80"]).browser
        self.assertTrue(hasattr(b.TCPSocket, "connect"))
        self.assertFalse(hasattr(b.TCPSocket, "listen"))
        b = StubBrowser(optionalPermissions=["tcp-listen:7000"]).browser
        self.assertFalse(hasattr(b.TCPSocket, "connect"))
        self.assertTrue(hasattr(b.TCPSocket, "listen"))

    def test_otherPermissionsIgnored(self) -> None:
        """
        Other WebExtension permissions give no socket access.
        """
        b = StubBrowser(permissions=["storage"]).browser
        self.assertFalse(hasattr(b.TCPSocket, "connect"))
        self.assertEqual(len(b.grants), 0)

    def test_runtime(self) -> None:
        """
        C{runtime.id} is the extension id; C{runtime.getManifest()} returns a
        deep copy each time.
        """
        manifest = {
            "manifest_version": 2,
            "name": "x",
            "version": "1",
            "permissions": ["tcp-listen:7000"],
        }
        b = StubBrowser(manifest, extensionId="x@example").browser
        self.assertEqual(b.runtime.id, "x@example")
        copy = b.runtime.getManifest()
        self.assertEqual(copy, manifest)
        copy["permissions"].append("tcp-listen:*")
        self.assertEqual(b.runtime.getManifest()["permissions"], ["tcp-listen:7000"])
        manifest["permissions"].append("tcp-listen:*")
        self.assertEqual(b.runtime.getManifest()["permissions"], ["tcp-listen:7000"])

    def test_grantsAndReactor(self) -> None:
        """
        C{browser.grants} holds the manifest's permissions, and
        C{browser.reactor} is a L{PermissionCheckingReactor}.
        """
        stub = StubBrowser(permissions=["tcp-connect:example.com:80"])
        self.assertEqual(
            [str(p) for p in stub.browser.grants], ["tcp-connect:example.com:80"]
        )
        self.assertIsInstance(stub.browser.reactor, PermissionCheckingReactor)

    def test_invalidManifestPermission(self) -> None:
        """
        An invalid C{tcp-*} entry in the manifest is a L{ValueError} from
        L{makeBrowser}.
        """
        self.assertRaises(
            ValueError, StubBrowser, permissions=["tcp-connect:example.com:0"]
        )

    def test_operatorGrants(self) -> None:
        """
        Operator grants add optional permissions; a grant the manifest does
        not list as optional is a L{ValueError}.
        """
        stub = StubBrowser(
            optionalPermissions=["tcp-connect:example.com:80"],
            grants=["tcp-connect:example.com:80"],
        )
        self.assertTrue(stub.browser.grants.allowsConnect("example.com", 80))
        exc = self.assertRaises(
            ValueError,
            StubBrowser,
            optionalPermissions=["tcp-connect:example.com:80"],
            grants=["tcp-connect:example.com:81"],
        )
        self.assertIn("optional_permissions", str(exc))

    def test_defaultLogger(self) -> None:
        """
        Without a logger, the extension gets one in the namespace
        C{tcpext.extension.<id>}.
        """
        b = makeBrowser(
            extensionId="echo",
            manifest={"permissions": []},
            reactor=MemoryReactorClock(),
        )
        self.assertEqual(b.log.namespace, "tcpext.extension.echo")


class ConnectTests(SynchronousTestCase):
    """
    Tests for C{browser.TCPSocket.connect}.
    """

    def stub(self, *permissions: str, **names: list[str]) -> StubBrowser:
        """
        A L{StubBrowser} with these permissions and DNS names (keyword
        names use C{_} for C{.}).
        """
        self.events, log = _events()
        return StubBrowser(
            permissions=list(permissions),
            names={k.replace("_", "."): v for k, v in names.items()},
            log=log,
        )

    def test_badOptionsFailTheDeferred(self) -> None:
        """
        Bad options fail the L{Deferred} with L{TypeError}/L{ValueError}
        instead of raising.
        """
        stub = self.stub("tcp-connect:*:*")
        connect = stub.browser.TCPSocket.connect
        self.failureResultOf(connect({"host": "h", "port": 0}), ValueError)
        self.failureResultOf(connect({"host": "h", "port": True}), TypeError)
        self.failureResultOf(connect({"host": "h", "port": 1, "bad": 1}), TypeError)
        self.failureResultOf(connect("h:1"), TypeError)  # type: ignore[arg-type]
        self.failureResultOf(connect(host="h", address="h", port=1), TypeError)
        self.assertEqual(stub.reactor.tcpClients, [])

    def test_numericAliasRefused(self) -> None:
        """
        A non-canonical numeric host is refused with L{ValueError} and never
        looked up, even under a C{*} grant.
        """
        stub = self.stub("tcp-connect:*:*")
        for alias in ("2130706433", "0x7f000001", "0177.0.0.1", "127.1"):
            f = self.failureResultOf(
                stub.browser.TCPSocket.connect(host=alias, port=80), ValueError
            )
            self.assertIn(alias, str(f.value))
        self.assertEqual(stub.resolver.lookups, [])
        self.assertEqual(stub.reactor.tcpClients, [])
        self.assertEqual(len(_denials(self.events)), 4)

    def test_denied(self) -> None:
        """
        A host and port no grant covers fail with L{PermissionDenied} that
        says "permission denied" and names C{host:port}; the denial is logged
        on the extension's logger; nothing is looked up or dialed.
        """
        stub = self.stub("tcp-connect:example.com:80", example_com=["93.184.216.34"])
        f = self.failureResultOf(
            stub.browser.TCPSocket.connect({"host": "example.com", "port": 81}),
            PermissionDenied,
        )
        self.assertIn("permission denied", str(f.value))
        self.assertIn("example.com:81", str(f.value))
        self.assertEqual(stub.resolver.lookups, [])
        self.assertEqual(stub.reactor.tcpClients, [])
        [denial] = _denials(self.events)
        self.assertIn("connect to example.com:81", denial)
        self.assertIn("permission denied", denial)

    def test_ipLiteral(self) -> None:
        """
        A granted IP literal is dialed without a lookup; the socket is
        returned while connecting and opens once the peer answers.
        """
        stub = self.stub("tcp-connect:93.184.216.34:80")
        sock = self.successResultOf(
            stub.browser.TCPSocket.connect(host="93.184.216.34", port=80)
        )
        self.assertEqual(sock.readyState, "connecting")
        self.assertEqual(stub.resolver.lookups, [])
        self.assertEqual(stub.pendingConnections(), [("93.184.216.34", 80)])
        peer = stub.connectPeer("93.184.216.34", 80)
        self.assertEqual(sock.readyState, "open")
        self.assertEqual((sock.host, sock.port), ("93.184.216.34", 80))
        sock.write(b"ping")
        stub.flush()
        self.assertEqual(peer.received, b"ping")

    def test_ipv6Literal(self) -> None:
        """
        An IPv6 literal, bracketed or not, is checked in canonical form.
        """
        stub = self.stub("tcp-connect:[2001:db8::1]:443")
        self.successResultOf(
            stub.browser.TCPSocket.connect(host="[2001:DB8:0::1]", port=443)
        )
        self.assertEqual(stub.pendingConnections(), [("2001:db8::1", 443)])

    def test_mappedLiteral(self) -> None:
        """
        An IPv4-mapped IPv6 literal is its IPv4 address: it needs the IPv4
        grant.
        """
        stub = self.stub("tcp-connect:93.184.216.34:80")
        self.successResultOf(
            stub.browser.TCPSocket.connect(host="::ffff:93.184.216.34", port=80)
        )
        self.assertEqual(stub.pendingConnections(), [("93.184.216.34", 80)])
        self.failureResultOf(
            stub.browser.TCPSocket.connect(host="::ffff:127.0.0.1", port=80),
            PermissionDenied,
        )

    def test_nameResolvedOnceAndPinned(self) -> None:
        """
        A name is resolved once, and only the addresses that pass the
        rebinding rule are dialed; changing the DNS answer afterwards changes
        nothing.
        """
        stub = self.stub(
            "tcp-connect:example.com:80",
            example_com=["93.184.216.34", "10.0.0.1", "2606:2800:220:1::1"],
        )
        sock = self.successResultOf(
            stub.browser.TCPSocket.connect(host="Example.COM.", port=80)
        )
        self.assertEqual(sock.readyState, "connecting")
        self.assertEqual(stub.resolver.lookups, ["example.com"])
        stub.resolver.add("example.com", "127.0.0.1")
        stub.advance(1)
        self.assertEqual(
            stub.pendingConnections(),
            [("93.184.216.34", 80), ("2606:2800:220:1::1", 80)],
        )
        self.assertEqual(stub.resolver.lookups, ["example.com"])
        self.assertIn("10.0.0.1", " ".join(_denials(self.events)))

    def test_rebindingDenied(self) -> None:
        """
        A name whose addresses are all non-public fails with
        L{PermissionDenied} naming the address, unless an IP grant or a C{*}
        host grant covers it.
        """
        stub = self.stub("tcp-connect:example.com:80", example_com=["10.0.0.1"])
        f = self.failureResultOf(
            stub.browser.TCPSocket.connect(host="example.com", port=80),
            PermissionDenied,
        )
        self.assertIn("permission denied", str(f.value))
        self.assertIn("10.0.0.1", str(f.value))
        self.assertEqual(stub.reactor.tcpClients, [])
        self.assertTrue(_denials(self.events))

        stub = self.stub(
            "tcp-connect:example.com:80",
            "tcp-connect:10.0.0.0/8:80",
            example_com=["10.0.0.1"],
        )
        self.successResultOf(
            stub.browser.TCPSocket.connect(host="example.com", port=80)
        )
        self.assertEqual(stub.pendingConnections(), [("10.0.0.1", 80)])

        stub = self.stub("tcp-connect:*:80", example_com=["10.0.0.1"])
        self.successResultOf(
            stub.browser.TCPSocket.connect(host="example.com", port=80)
        )
        self.assertEqual(stub.pendingConnections(), [("10.0.0.1", 80)])

    def test_localhost(self) -> None:
        """
        C{localhost} is loopback without a lookup.
        """
        stub = self.stub("tcp-connect:localhost:7000", localhost=["10.0.0.1"])
        self.successResultOf(
            stub.browser.TCPSocket.connect(host="localhost", port=7000)
        )
        stub.advance(1)
        self.assertEqual(stub.resolver.lookups, [])
        self.assertEqual(
            stub.pendingConnections(), [("127.0.0.1", 7000), ("::1", 7000)]
        )

    def test_unknownName(self) -> None:
        """
        A name with no addresses fails with L{DNSLookupError}.
        """
        stub = self.stub("tcp-connect:nowhere.example:80")
        self.failureResultOf(
            stub.browser.TCPSocket.connect(host="nowhere.example", port=80),
            DNSLookupError,
        )

    def test_lookupTimeout(self) -> None:
        """
        The C{timeout} option bounds the name lookup too.
        """
        stub = self.stub("tcp-connect:slow.example:80")
        stub.reactor.installNameResolver(_SilentResolver())
        d = stub.browser.TCPSocket.connect(host="slow.example", port=80, timeout=5)
        self.assertNoResult(d)
        stub.advance(5)
        self.failureResultOf(d, TimeoutError)

    def test_connectionRefused(self) -> None:
        """
        A refused connection fails the socket's C{opened}.
        """
        stub = self.stub("tcp-connect:93.184.216.34:80")
        sock = self.successResultOf(
            stub.browser.TCPSocket.connect(host="93.184.216.34", port=80)
        )
        opened = sock.opened
        stub.refuseConnection()
        self.failureResultOf(opened, ConnectionRefusedError)

    def test_tlsSendsServerName(self) -> None:
        """
        With C{useSecureTransport}, the connection starts with a TLS
        ClientHello for the host name.
        """
        stub = self.stub("tcp-connect:example.com:443", example_com=["93.184.216.34"])
        self.successResultOf(
            stub.browser.TCPSocket.connect(
                host="example.com", port=443, useSecureTransport=True
            )
        )
        peer = stub.connectPeer()
        self.assertEqual(peer.received[:1], b"\x16")
        self.assertIn(b"example.com", peer.received)

    def test_tlsOptions(self) -> None:
        """
        Given C{tlsOptions} are used instead of verifying the host name.
        """
        stub = self.stub("tcp-connect:example.com:443", example_com=["93.184.216.34"])
        options = optionsForClientTLS("other.example")
        self.successResultOf(
            stub.browser.TCPSocket.connect(
                host="example.com",
                port=443,
                useSecureTransport=True,
                tlsOptions=options,
            )
        )
        peer = stub.connectPeer()
        self.assertIn(b"other.example", peer.received)
        self.assertNotIn(b"example.com", peer.received)


class _SilentResolver:
    """
    A resolver that never answers.
    """

    def resolveHostName(self, receiver: Any, hostName: str, **kw: Any) -> None:
        """
        Begin and never finish.
        """


class ListenTests(SynchronousTestCase):
    """
    Tests for C{browser.TCPSocket.listen}.
    """

    def stub(self, *permissions: str) -> StubBrowser:
        """
        A L{StubBrowser} with these permissions.
        """
        self.events, log = _events()
        return StubBrowser(permissions=list(permissions), log=log)

    def test_listen(self) -> None:
        """
        A granted port listens on every IPv4 interface by default, with the
        given backlog.
        """
        stub = self.stub("tcp-listen:7000")
        server = self.successResultOf(
            stub.browser.TCPSocket.listen({"port": 7000, "backLog": 5})
        )
        self.assertEqual(server.localPort, 7000)
        [(port, _, backlog, interface)] = stub.reactor.tcpServers
        self.assertEqual((port, backlog, interface), (7000, 5, "0.0.0.0"))

    def test_denied(self) -> None:
        """
        A port no grant covers fails with L{PermissionDenied}, logged.
        """
        stub = self.stub("tcp-listen:7000")
        f = self.failureResultOf(
            stub.browser.TCPSocket.listen(port=7001), PermissionDenied
        )
        self.assertIn("permission denied", str(f.value))
        self.assertIn("7001", str(f.value))
        self.assertEqual(stub.reactor.tcpServers, [])
        [denial] = _denials(self.events)
        self.assertIn("listen on 0.0.0.0:7001", denial)

    def test_automaticPort(self) -> None:
        """
        An automatic port needs C{tcp-listen:*}.
        """
        stub = self.stub("tcp-listen:7000")
        self.failureResultOf(stub.browser.TCPSocket.listen(), PermissionDenied)
        self.failureResultOf(stub.browser.TCPSocket.listen(port=-1), PermissionDenied)
        stub = self.stub("tcp-listen:*")
        server = self.successResultOf(stub.browser.TCPSocket.listen(port=None))
        self.assertNotEqual(server.localPort, 0)

    def test_interface(self) -> None:
        """
        An IPv6 interface listens with IPv6; a name is not an interface.
        """
        stub = self.stub("tcp-listen:7000")
        self.successResultOf(stub.browser.TCPSocket.listen(port=7000, host="::1"))
        self.assertEqual(stub.reactor.tcpServers[0][3], "::1")
        f = self.failureResultOf(
            stub.browser.TCPSocket.listen(port=7000, host="example.com"), ValueError
        )
        self.assertIn("example.com", str(f.value))

    def test_badOptions(self) -> None:
        """
        Bad options fail the L{Deferred}.
        """
        stub = self.stub("tcp-listen:*")
        self.failureResultOf(stub.browser.TCPSocket.listen(port=65536), ValueError)
        self.failureResultOf(stub.browser.TCPSocket.listen(port="1"), TypeError)
        self.failureResultOf(stub.browser.TCPSocket.listen(backlog=1), TypeError)

    def test_tls(self) -> None:
        """
        Server TLS listens with the given options.
        """
        stub = self.stub("tcp-listen:7443")
        marker = object()
        self.successResultOf(
            stub.browser.TCPSocket.listen(
                port=7443, useSecureTransport=True, tlsOptions=marker
            )
        )
        [(port, _, options, _, _)] = stub.reactor.sslServers
        self.assertEqual(port, 7443)
        self.assertIs(options, marker)

    def test_accept(self) -> None:
        """
        Connections to the server arrive on its C{connections}.
        """
        stub = self.stub("tcp-listen:7000")
        server = self.successResultOf(stub.browser.TCPSocket.listen(port=7000))
        peer = stub.dialListener(7000)
        conn = self.successResultOf(
            defer.ensureDeferred(server.connections.__anext__())
        )
        peer.write(b"hi")
        stub.flush()
        self.assertEqual(self.successResultOf(conn.read()), b"hi")


class PermissionsTests(SynchronousTestCase):
    """
    Tests for C{browser.permissions}.
    """

    def stub(self, prompt: Any = denyAll, **kw: Any) -> StubBrowser:
        """
        A L{StubBrowser} with a required connect grant and two optional ones.
        """
        self.events, log = _events()
        return StubBrowser(
            permissions=["tcp-connect:example.com:80"],
            optionalPermissions=["tcp-connect:*:*", "tcp-listen:7000"],
            names={"example.com": ["93.184.216.34"]},
            prompt=prompt,
            log=log,
            **kw,
        )

    def test_requestNotOptional(self) -> None:
        """
        Asking for a permission the manifest does not list as optional fails
        with L{ValueError}, without asking anyone.
        """
        asked: list[object] = []
        stub = self.stub(prompt=lambda *a: asked.append(a) or True)
        for entry in ("tcp-listen:7001", "tcp-connect:example.com:80", "storage"):
            f = self.failureResultOf(
                stub.browser.permissions.request({"permissions": [entry]}), ValueError
            )
            self.assertIn(entry, str(f.value))
        self.failureResultOf(
            stub.browser.permissions.request({"permissions": ["tcp-listen:0"]}),
            ValueError,
        )
        self.failureResultOf(
            stub.browser.permissions.request(["tcp-listen:7000"]),  # type: ignore[arg-type]
            TypeError,
        )
        self.assertEqual(asked, [])

    def test_requestDenied(self) -> None:
        """
        With L{denyAll}, a request fires C{False} and grants nothing.
        """
        stub = self.stub()
        self.assertIs(
            self.successResultOf(
                stub.browser.permissions.request({"permissions": ["tcp-listen:7000"]})
            ),
            False,
        )
        self.assertFalse(stub.browser.grants.allowsListen(7000))
        self.assertEqual(stub.grantStore.load("test-extension"), [])
        self.assertTrue(_denials(self.events))

    def test_requestGranted(self) -> None:
        """
        A granted request fires C{True}, adds the grant and saves it; the
        prompt sees only what is not granted yet.
        """
        asked: list[tuple[str, list[str]]] = []

        def prompt(extensionId: str, permissions: list[str]) -> bool:
            asked.append((extensionId, permissions))
            return True

        stub = self.stub(prompt=prompt)
        self.assertFalse(hasattr(stub.browser.TCPSocket, "missing"))
        self.failureResultOf(stub.browser.TCPSocket.listen(port=7000), PermissionDenied)
        self.assertIs(
            self.successResultOf(
                stub.browser.permissions.request(
                    {"permissions": ["tcp-listen:7000", "tcp-connect:*:*"]}
                )
            ),
            True,
        )
        self.assertEqual(
            asked, [("test-extension", ["tcp-listen:7000", "tcp-connect:*:*"])]
        )
        self.successResultOf(stub.browser.TCPSocket.listen(port=7000))
        self.assertEqual(
            stub.grantStore.load("test-extension"),
            ["tcp-connect:*:*", "tcp-listen:7000"],
        )
        # Already granted: no prompt.
        self.assertIs(
            self.successResultOf(
                stub.browser.permissions.request({"permissions": ["tcp-listen:7000"]})
            ),
            True,
        )
        self.assertEqual(len(asked), 1)

    def test_requestAsyncPrompt(self) -> None:
        """
        A prompt may answer later with a L{Deferred}.
        """
        answer: Deferred[bool] = Deferred()
        stub = self.stub(prompt=lambda *a: answer)
        d = stub.browser.permissions.request({"permissions": ["tcp-listen:7000"]})
        self.assertNoResult(d)
        answer.callback(True)
        self.assertIs(self.successResultOf(d), True)
        self.assertTrue(stub.browser.grants.allowsListen(7000))

    def test_requestPromptFails(self) -> None:
        """
        A prompt that raises refuses (fail closed).
        """

        def prompt(extensionId: str, permissions: list[str]) -> bool:
            raise RuntimeError("no terminal")

        stub = self.stub(prompt=prompt)
        d = stub.browser.permissions.request({"permissions": ["tcp-listen:7000"]})
        self.assertIs(self.successResultOf(d), False)
        [failure] = [e["log_failure"] for e in self.events if "log_failure" in e]
        self.assertIsInstance(failure.value, RuntimeError)
        self.assertFalse(stub.browser.grants.allowsListen(7000))

    def test_promptMustSayTrue(self) -> None:
        """
        Only C{True} grants: a truthy non-bool answer refuses.
        """
        stub = self.stub(prompt=lambda *a: "yes")
        d = stub.browser.permissions.request({"permissions": ["tcp-listen:7000"]})
        self.assertIs(self.successResultOf(d), False)

    def test_containsAndGetAll(self) -> None:
        """
        C{contains} tells whether exact permissions are granted; C{getAll}
        lists them all.
        """
        stub = self.stub(grants=["tcp-listen:7000"])
        perms = stub.browser.permissions
        self.assertIs(
            self.successResultOf(perms.contains({"permissions": ["tcp-listen:7000"]})),
            True,
        )
        self.assertIs(
            self.successResultOf(
                perms.contains({"permissions": ["tcp-listen:7000", "tcp-connect:*:*"]})
            ),
            False,
        )
        self.assertIs(
            self.successResultOf(perms.contains({"permissions": ["storage"]})), False
        )
        self.failureResultOf(
            perms.contains({"permissions": ["tcp-listen:x"]}), ValueError
        )
        self.assertEqual(
            self.successResultOf(perms.getAll()),
            {
                "permissions": ["tcp-connect:example.com:80", "tcp-listen:7000"],
                "origins": [],
            },
        )

    def test_storedGrantsLoaded(self) -> None:
        """
        Grants in the store are loaded; stored grants that are invalid or not
        optional are ignored with a warning (fail closed).
        """
        store = MemoryGrantStore(
            {"test-extension": ["tcp-listen:7000", "tcp-listen:22", "tcp-bogus"]}
        )
        stub = self.stub(grantStore=store)
        self.assertTrue(stub.browser.grants.allowsListen(7000))
        self.assertFalse(stub.browser.grants.allowsListen(22))
        self.assertEqual(
            len([e for e in self.events if "ignoring" in e.get("log_format", "")]), 2
        )

    def test_removeNotOptional(self) -> None:
        """
        Removing a permission that is not optional fails with L{ValueError}.
        """
        stub = self.stub()
        self.failureResultOf(
            stub.browser.permissions.remove(
                {"permissions": ["tcp-connect:example.com:80"]}
            ),
            ValueError,
        )
        self.assertTrue(stub.browser.grants.allowsConnect("example.com", 80))

    def test_remove(self) -> None:
        """
        C{remove} takes a grant away, saves that, and fires C{True}; removing
        what is not granted fires C{False}.
        """
        stub = self.stub(prompt=allowAll)
        perms = stub.browser.permissions
        self.successResultOf(perms.request({"permissions": ["tcp-listen:7000"]}))
        self.assertIs(
            self.successResultOf(perms.remove({"permissions": ["tcp-listen:7000"]})),
            True,
        )
        self.assertFalse(stub.browser.grants.allowsListen(7000))
        self.assertEqual(stub.grantStore.load("test-extension"), [])
        self.assertIs(
            self.successResultOf(perms.remove({"permissions": ["tcp-listen:7000"]})),
            False,
        )

    def test_removeClosesSockets(self) -> None:
        """
        Removing a grant aborts the sockets and closes the servers that no
        remaining grant allows, with L{PermissionDenied}; the others stay.
        """
        stub = self.stub(grants=["tcp-connect:*:*", "tcp-listen:7000"])
        connect = stub.browser.TCPSocket.connect
        kept = self.successResultOf(connect(host="example.com", port=80))
        stub.connectPeer("93.184.216.34", 80)
        lost = self.successResultOf(connect(host="93.184.216.34", port=8080))
        peer = stub.connectPeer("93.184.216.34", 8080)
        server = self.successResultOf(stub.browser.TCPSocket.listen(port=7000))
        revalidated: list[bool] = []
        stub.browser.reactor.revalidate = lambda: revalidated.append(True)  # type: ignore[method-assign]

        self.successResultOf(
            stub.browser.permissions.remove({"permissions": ["tcp-connect:*:*"]})
        )
        stub.flush()
        f = self.failureResultOf(lost.closed, PermissionDenied)
        self.assertIn("93.184.216.34:8080", str(f.value))
        self.assertTrue(peer.disconnected)
        self.assertEqual(kept.readyState, "open")
        self.assertEqual(stub.listening(), [("0.0.0.0", 7000)])
        self.assertEqual(revalidated, [True])

        self.successResultOf(
            stub.browser.permissions.remove({"permissions": ["tcp-listen:7000"]})
        )
        self.successResultOf(server.closed)
        self.assertEqual(stub.listening(), [])

    def test_removeClosesAccepted(self) -> None:
        """
        Removing the listen grant also ends the connections the server had
        accepted, with L{PermissionDenied}.
        """
        stub = self.stub(grants=["tcp-listen:7000"])
        server = self.successResultOf(stub.browser.TCPSocket.listen(port=7000))
        peer = stub.dialListener(7000)
        conn = self.successResultOf(
            defer.ensureDeferred(server.connections.__anext__())
        )
        waiting = stub.dialListener(7000)
        self.successResultOf(
            stub.browser.permissions.remove({"permissions": ["tcp-listen:7000"]})
        )
        stub.flush()
        f = self.failureResultOf(conn.closed, PermissionDenied)
        self.assertIn("7000", str(f.value))
        self.assertTrue(peer.disconnected)
        self.assertTrue(waiting.disconnected)
        self.assertEqual(stub.listening(), [])

    def test_removeRebindingGrant(self) -> None:
        """
        A name dialed to a private address under a C{*} grant is closed when
        only a name grant remains.
        """
        stub = self.stub(grants=["tcp-connect:*:*"])
        stub.resolver.add("example.com", "10.0.0.1")
        sock = self.successResultOf(
            stub.browser.TCPSocket.connect(host="example.com", port=80)
        )
        stub.connectPeer()
        self.successResultOf(
            stub.browser.permissions.remove({"permissions": ["tcp-connect:*:*"]})
        )
        self.failureResultOf(sock.closed, PermissionDenied)


class CloseTests(SynchronousTestCase):
    """
    Tests for L{Browser.close}.
    """

    def test_close(self) -> None:
        """
        C{close} closes every socket and server and refuses new ones.
        """
        stub = StubBrowser(
            permissions=["tcp-connect:93.184.216.34:80", "tcp-listen:7000"]
        )
        TCPSocket = stub.browser.TCPSocket
        sock = self.successResultOf(TCPSocket.connect(host="93.184.216.34", port=80))
        peer = stub.connectPeer()
        server = self.successResultOf(TCPSocket.listen(port=7000))
        client = stub.dialListener(7000)
        conn = self.successResultOf(
            defer.ensureDeferred(server.connections.__anext__())
        )
        d = stub.browser.close()
        stub.flush()
        self.successResultOf(d)
        self.successResultOf(sock.closed)
        self.successResultOf(server.closed)
        self.successResultOf(conn.closed)
        self.assertTrue(peer.disconnected)
        self.assertTrue(client.disconnected)
        self.assertEqual(stub.listening(), [])
        self.failureResultOf(
            TCPSocket.connect(host="93.184.216.34", port=80), PermissionDenied
        )
        self.failureResultOf(TCPSocket.listen(port=7000), PermissionDenied)


class _FailingStore(MemoryGrantStore):
    """
    A grant store whose C{save} fails, as with a read-only state folder.
    """

    def save(self, extensionId: str, entries: list[str]) -> None:
        """
        Refuse to save.
        """
        raise OSError("read-only state folder")


class GrantsConfinementTests(SynchronousTestCase):
    """
    Extension code can look at its grants but never widen them, and the
    grant store failing never leaves more granted than was saved.
    """

    def test_grantsReadOnly(self) -> None:
        """
        C{browser.grants} answers questions but has no way to add a grant,
        and the live set cannot be reached through it.
        """
        stub = StubBrowser(permissions=["tcp-connect:example.com:80"])
        grants = stub.browser.grants
        self.assertTrue(grants.allowsConnect("example.com", 80))
        self.assertIn("tcp-connect:example.com:80", grants)
        self.assertEqual(len(grants), 1)
        for name in ("add", "discard", "_grants", "grants"):
            self.assertFalse(hasattr(grants, name), name)
        self.assertRaises(AttributeError, setattr, grants, "extra", 1)

    def test_requestNotGrantedWhenSaveFails(self) -> None:
        """
        When the grant store cannot save a granted request, the request fails
        with L{GrantNotSaved} (naming the store's error) and nothing was
        granted.
        """
        stub = StubBrowser(
            optionalPermissions=["tcp-listen:7000"],
            prompt=allowAll,
            grantStore=_FailingStore(),
        )
        failure = self.failureResultOf(
            stub.browser.permissions.request({"permissions": ["tcp-listen:7000"]}),
            GrantNotSaved,
        )
        self.assertIn("read-only state folder", str(failure.value))
        self.assertFalse(stub.browser.grants.allowsListen(7000))
        self.failureResultOf(stub.browser.TCPSocket.listen(port=7000), PermissionDenied)

    def test_removeClosesEvenWhenSaveFails(self) -> None:
        """
        When the grant store cannot save a removal, the grant is still gone
        and what only it allowed is closed; the failure is reported.
        """
        store = MemoryGrantStore({"test-extension": ["tcp-listen:7000"]})
        stub = StubBrowser(optionalPermissions=["tcp-listen:7000"], grantStore=store)
        server = self.successResultOf(stub.browser.TCPSocket.listen(port=7000))
        store.save = _FailingStore().save  # type: ignore[method-assign]
        self.failureResultOf(
            stub.browser.permissions.remove({"permissions": ["tcp-listen:7000"]}),
            OSError,
        )
        self.assertFalse(stub.browser.grants.allowsListen(7000))
        self.successResultOf(server.closed)
        self.assertEqual(stub.listening(), [])

    def test_revoke(self) -> None:
        """
        L{Browser.revoke} takes any grant away, required ones included, and
        closes what it allowed, without touching the grant store.
        """
        store = MemoryGrantStore()
        stub = StubBrowser(permissions=["tcp-listen:7000"], grantStore=store)
        server = self.successResultOf(stub.browser.TCPSocket.listen(port=7000))
        stub.browser.revoke(["tcp-listen:7000"])
        self.successResultOf(server.closed)
        self.assertFalse(stub.browser.grants.allowsListen(7000))
        self.assertEqual(store.load("test-extension"), [])


class ReactorThroughBrowserTests(SynchronousTestCase):
    """
    C{browser.reactor} shares the browser's grants, its log and its end.
    """

    def test_reactorDenialLogged(self) -> None:
        """
        A refusal made through C{browser.reactor} (as by treq or C{Agent}) is
        logged in the extension's namespace with the reason.
        """
        events, log = _events()
        stub = StubBrowser(permissions=["tcp-connect:example.com:80"], log=log)
        _refusedConnect(stub, "10.0.0.1", 22)
        denials = _denials(events)
        self.assertEqual(len(denials), 1)
        self.assertIn("10.0.0.1:22", denials[0])

    def test_closeRefusesReactorUse(self) -> None:
        """
        After C{browser.close()}, C{browser.reactor} refuses new connections
        and listening ports too.
        """
        stub = StubBrowser(
            permissions=["tcp-connect:93.184.216.34:80", "tcp-listen:7000"]
        )
        self.successResultOf(stub.browser.close())
        refused = _refusedConnect(stub, "93.184.216.34", 80)
        self.assertIn("closed", str(refused.value))
        self.assertRaises(
            PermissionDenied, stub.browser.reactor.listenTCP, 7000, object()
        )

    def test_acceptTrackerLogPrefix(self) -> None:
        """
        The factory a browser listens with names itself after the socket
        core's factory in Twisted's port log lines, not after a private
        wrapper class.
        """
        stub = StubBrowser(permissions=["tcp-listen:7000"])
        self.successResultOf(stub.browser.TCPSocket.listen(port=7000))
        factory = stub.reactor.tcpServers[0][1]
        self.assertEqual(factory.logPrefix(), "tcpext")


class _FailureRecorder(Factory):
    """
    A client factory that records why its connection attempt failed.
    """

    protocol = Protocol

    def __init__(self) -> None:
        """
        Nothing failed yet.
        """
        self.failures: list[Failure] = []

    def startedConnecting(self, connector: object) -> None:
        """
        Nothing to do.
        """

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:
        """
        Record the reason.
        """
        self.failures.append(reason)


class DeniedBothWaysTests(SynchronousTestCase):
    """
    Each class of refused request is refused with L{PermissionDenied} both
    through C{browser.TCPSocket} and through C{browser.reactor}, and nothing
    is dialed or bound.
    """

    def stub(self) -> StubBrowser:
        """
        An extension granted one port on one name and one port on one
        address, whose name resolves to loopback for one alias.
        """
        return StubBrowser(
            permissions=[
                "tcp-connect:example.com:80",
                "tcp-connect:93.184.216.34:80",
                "tcp-connect:rebind.example:80",
            ],
            names={
                "example.com": ["93.184.216.34"],
                "other.example": ["93.184.216.34"],
                "rebind.example": ["127.0.0.1"],
            },
        )

    def assertDeniedBoth(self, host: str, port: int, inMessage: str) -> None:
        """
        Connecting to C{host:port} is refused both ways, naming C{inMessage}.
        """
        stub = self.stub()
        f = self.failureResultOf(
            stub.browser.TCPSocket.connect(host=host, port=port),
            PermissionDenied,
            ValueError,
        )
        self.assertIn(inMessage, str(f.value))
        factory = _FailureRecorder()
        try:
            stub.browser.reactor.connectTCP(host, port, factory)
        except (PermissionDenied, ValueError) as e:
            self.assertIn(inMessage, str(e))
        else:
            stub.flush()
            self.assertEqual(len(factory.failures), 1)
            factory.failures[0].trap(PermissionDenied)
            self.assertIn(inMessage, str(factory.failures[0].value))
        self.assertEqual(stub.reactor.tcpClients, [])

    def test_portNotGranted(self) -> None:
        """
        A port not granted.
        """
        self.assertDeniedBoth("93.184.216.34", 8080, "93.184.216.34:8080")

    def test_nameAgainstIPGrant(self) -> None:
        """
        A name that only an IP grant would cover (the name is not granted,
        though it resolves to the granted address).
        """
        self.assertDeniedBoth("other.example", 80, "other.example:80")

    def test_nameResolvingToLoopback(self) -> None:
        """
        A granted name that resolves to loopback.
        """
        self.assertDeniedBoth("rebind.example", 80, "127.0.0.1")

    def test_numericAlias(self) -> None:
        """
        A numeric IPv4 alias of a granted address.
        """
        self.assertDeniedBoth("1572395042", 80, "1572395042")

    def test_listenWithoutPermission(self) -> None:
        """
        Listening without C{tcp-listen}: the namespace has no C{listen}, and
        the reactor refuses C{listenTCP}.
        """
        stub = self.stub()
        self.assertFalse(hasattr(stub.browser.TCPSocket, "listen"))
        e = self.assertRaises(
            PermissionDenied, stub.browser.reactor.listenTCP, 7000, Factory()
        )
        self.assertIn("7000", str(e))
        self.assertEqual(stub.reactor.tcpServers, [])

    def test_spawnProcess(self) -> None:
        """
        Starting a process: the namespace has no way to, and the reactor
        refuses C{spawnProcess}.
        """
        stub = self.stub()
        self.assertEqual(
            [n for n in dir(stub.browser.TCPSocket) if "process" in n.lower()], []
        )
        spawned: list[object] = []
        stub.reactor.spawnProcess = lambda *a, **k: spawned.append(a)  # type: ignore[attr-defined]
        self.assertRaises(
            PermissionDenied,
            stub.browser.reactor.spawnProcess,
            ProcessProtocol(),
            "/bin/sh",
            ["sh", "-c", "true"],
        )
        self.assertEqual(spawned, [])


class _Text(str):
    """
    A str subclass that says something else of itself.
    """

    def __str__(self) -> str:
        return "10.9.9.9"

    def __repr__(self) -> str:
        return "'10.9.9.9'"


class _Number(int):
    """
    An int subclass.
    """


class PlainValuesTests(SynchronousTestCase):
    """
    The real reactor is given plain, canonical values: never the caller's
    objects (a C{str} or C{int} subclass), never a name-carrying address
    (only a reactor that reads names gets those).
    """

    def test_listen(self) -> None:
        """
        C{TCPSocket.listen} hands the reactor a plain C{str} interface and a
        plain C{int} port and backlog.
        """
        stub = StubBrowser(permissions=["tcp-listen:127.0.0.1:7000"])
        self.successResultOf(
            stub.browser.TCPSocket.listen(
                port=_Number(7000), host=_Text("127.0.0.1"), backLog=_Number(5)
            )
        )
        [(port, _, backlog, interface)] = stub.reactor.tcpServers
        self.assertEqual((port, backlog, interface), (7000, 5, "127.0.0.1"))
        self.assertIs(type(port), int)
        self.assertIs(type(backlog), int)
        self.assertIs(type(interface), str)

    def test_connect(self) -> None:
        """
        C{TCPSocket.connect} dials a plain C{str} address and C{int} port;
        a name's address is a plain C{str} for a reactor that does not read
        names.
        """
        stub = StubBrowser(
            permissions=["tcp-connect:127.0.0.1:80", "tcp-connect:localhost:81"]
        )
        self.successResultOf(
            stub.browser.TCPSocket.connect(host=_Text("127.0.0.1"), port=_Number(80))
        )
        self.successResultOf(stub.browser.TCPSocket.connect(host="localhost", port=81))
        stub.advance(1)
        for host, port, *_ in stub.reactor.tcpClients:
            self.assertIs(type(host), str)
            self.assertIs(type(port), int)
        self.assertIn(
            ("127.0.0.1", 80), [(c[0], c[1]) for c in stub.reactor.tcpClients]
        )

    def test_reactor(self) -> None:
        """
        C{browser.reactor}'s C{listenTCP} and C{connectTCP} hand the wrapped
        reactor plain values too, checked on what they stand for.
        """
        stub = StubBrowser(
            permissions=["tcp-listen:127.0.0.1:7000", "tcp-connect:127.0.0.1:80"]
        )
        stub.browser.reactor.listenTCP(
            _Number(7000), Factory(), backlog=_Number(5), interface=_Text("127.0.0.1")
        )
        [(port, _, backlog, interface)] = stub.reactor.tcpServers
        self.assertEqual((type(port), type(backlog), type(interface)), (int, int, str))
        self.assertEqual(interface, "127.0.0.1")
        stub.browser.reactor.connectTCP(
            _Text("127.0.0.1"), _Number(80), ClientFactory()
        )
        [(host, port, *_)] = stub.reactor.tcpClients
        self.assertEqual((host, type(host), type(port)), ("127.0.0.1", str, int))
