# -*- test-case-name: tests.test_browser -*-
"""
Tests for L{tcpext.browser} and the option validation in L{tcpext._options}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tcpext._options import (
    DEFAULT_BACKLOG,
    ConnectOptions,
    ListenOptions,
    parseConnectOptions,
    parseListenOptions,
)


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
