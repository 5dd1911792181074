# -*- test-case-name: tests.test_permissions -*-
"""
Tests for L{tcpext.permissions}: the grammar, L{PermissionSet} matching, the
DNS rebinding rule, and a table of known bypass attempts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tcpext._hosts import parseHost
from tcpext.permissions import (
    Permission,
    PermissionDenied,
    PermissionSet,
    canonicalHost,
    isIPLiteral,
    parseManifestPermissions,
    parsePermission,
)

# -- strategies ----------------------------------------------------------

_labels = st.from_regex(r"[a-z0-9][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True)
_tlds = st.from_regex(r"[a-z]{1,4}", fullmatch=True)
_names = st.tuples(st.lists(_labels, max_size=3), _tlds).map(
    lambda parts: ".".join([*parts[0], parts[1]])
)
_ports = st.integers(1, 65535)


@st.composite
def _portTexts(draw: st.DrawFn) -> str:
    """
    C{*}, C{N} or C{N-M}.
    """
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return "*"
    low = draw(_ports)
    if choice == 1:
        return str(low)
    return f"{low}-{draw(st.integers(low, 65535))}"


@st.composite
def _connectHosts(draw: st.DrawFn) -> str:
    """
    Any HOST of C{tcp-connect:HOST:PORT}.
    """
    choice = draw(st.integers(0, 6))
    if choice == 0:
        return "*"
    if choice == 1:
        return draw(_names)
    if choice == 2:
        return "*." + draw(_names)
    if choice == 3:
        return str(draw(st.ip_addresses(v=4)))
    if choice == 4:
        return f"[{draw(st.ip_addresses(v=6))}]"
    if choice == 5:
        network = ipaddress.ip_network(
            f"{draw(st.ip_addresses(v=4))}/{draw(st.integers(0, 32))}", strict=False
        )
        return str(network)
    network6 = ipaddress.ip_network(
        f"{draw(st.ip_addresses(v=6))}/{draw(st.integers(0, 128))}", strict=False
    )
    return f"[{network6}]"


@st.composite
def _permissionTexts(draw: st.DrawFn) -> str:
    """
    Any valid permission text.
    """
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return f"tcp-connect:{draw(_connectHosts())}:{draw(_portTexts())}"
    if choice == 1:
        return f"tcp-listen:{draw(_portTexts())}"
    host = draw(
        st.one_of(
            st.just("*"),
            st.ip_addresses(v=4).map(str),
            st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
        )
    )
    return f"tcp-listen:{host}:{draw(_portTexts())}"


# -- grammar ---------------------------------------------------------------


class ParsePermissionTests(SynchronousTestCase):
    """
    L{parsePermission} and L{Permission}.
    """

    def test_connectForms(self) -> None:
        """
        Every HOST and PORT form of C{tcp-connect:} parses to its canonical
        text.
        """
        cases = {
            "tcp-connect:*:*": "tcp-connect:*:*",
            "tcp-connect:example.com:80": "tcp-connect:example.com:80",
            "tcp-connect:EXAMPLE.com.:80": "tcp-connect:example.com:80",
            "tcp-connect:*.Example.COM:443": "tcp-connect:*.example.com:443",
            "tcp-connect:bücher.example:1": "tcp-connect:xn--bcher-kva.example:1",
            "tcp-connect:*.bücher.example:1": "tcp-connect:*.xn--bcher-kva.example:1",
            "tcp-connect:127.0.0.1:8000-8010": "tcp-connect:127.0.0.1:8000-8010",
            "tcp-connect:[::1]:22": "tcp-connect:[::1]:22",
            "tcp-connect:[0:0::1]:22": "tcp-connect:[::1]:22",
            "tcp-connect:[::ffff:127.0.0.1]:22": "tcp-connect:127.0.0.1:22",
            "tcp-connect:10.0.0.0/8:*": "tcp-connect:10.0.0.0/8:*",
            "tcp-connect:10.0.0.1/32:5": "tcp-connect:10.0.0.1:5",
            "tcp-connect:[fd00::/8]:443": "tcp-connect:[fd00::/8]:443",
            "tcp-connect:[::1/128]:443": "tcp-connect:[::1]:443",
            "tcp-connect:[::ffff:10.0.0.0/104]:1": "tcp-connect:10.0.0.0/8:1",
            "tcp-connect:0.0.0.0/0:1": "tcp-connect:0.0.0.0/0:1",
            "tcp-connect:a:1-65535": "tcp-connect:a:*",
            "tcp-connect:a:7-7": "tcp-connect:a:7",
            "tcp-connect:localhost:65535": "tcp-connect:localhost:65535",
        }
        for text, canonical in cases.items():
            permission = parsePermission(text)
            self.assertEqual(permission.kind, "connect")
            self.assertEqual(str(permission), canonical, text)

    def test_listenForms(self) -> None:
        """
        C{tcp-listen:PORT} and C{tcp-listen:HOST:PORT}; C{*} as the host is
        the same as no host.
        """
        cases = {
            "tcp-listen:7000": "tcp-listen:7000",
            "tcp-listen:*": "tcp-listen:*",
            "tcp-listen:1-65535": "tcp-listen:*",
            "tcp-listen:*:7000": "tcp-listen:7000",
            "tcp-listen:127.0.0.1:7000": "tcp-listen:127.0.0.1:7000",
            "tcp-listen:[::1]:7000-7100": "tcp-listen:[::1]:7000-7100",
            "tcp-listen:[::ffff:127.0.0.1]:1": "tcp-listen:127.0.0.1:1",
            "tcp-listen:0.0.0.0:*": "tcp-listen:0.0.0.0:*",
        }
        for text, canonical in cases.items():
            permission = parsePermission(text)
            self.assertEqual(permission.kind, "listen")
            self.assertEqual(str(permission), canonical, text)

    def test_fields(self) -> None:
        """
        A permission exposes its kind, canonical host and port range.
        """
        permission = parsePermission("tcp-connect:[FD00::/8]:80-90")
        self.assertEqual(permission, Permission("connect", "fd00::/8", 80, 90))
        self.assertTrue(permission.coversPort(85))
        self.assertFalse(permission.coversPort(91))
        self.assertFalse(permission.allPorts)
        self.assertTrue(parsePermission("tcp-listen:*").allPorts)
        self.assertIsNone(parsePermission("tcp-listen:*").host)

    def test_frozenAndHashable(self) -> None:
        """
        Permissions are values: immutable, hashable, equal by content.
        """
        permission = parsePermission("tcp-connect:a.example:1")
        self.assertEqual(
            hash(permission), hash(parsePermission("tcp-connect:A.example.:1"))
        )
        with self.assertRaises(AttributeError):
            permission.portLow = 2  # type: ignore[misc]

    def test_badGrammar(self) -> None:
        """
        Each malformed entry is refused with a L{ValueError} whose message
        names the entry and says what is wrong.
        """
        cases = {
            "tcp-connect": "expected tcp-connect:HOST:PORT",
            "tcp-connect:example.com": "needs a HOST and a PORT",
            "tcp-connect:example.com:": "port is missing",
            "tcp-connect::80": "host is missing",
            "tcp-connect:example.com:0": "not a port number",
            "tcp-connect:example.com:65536": "not a port number",
            "tcp-connect:example.com:-1": "not a port number",
            "tcp-connect:example.com:+80": "not a port number",
            "tcp-connect:example.com:080": "not a port number",
            "tcp-connect:example.com:http": "not a port number",
            "tcp-connect:example.com:90-80": "empty",
            "tcp-connect:example.com:1-2-3": "not a port number",
            "tcp-connect:example.com:80-": "not a port number",
            "tcp-connect:::1:80": "too many ':'",
            "tcp-connect:[::1:80": "missing ']'",
            "tcp-connect:[::1]80": "expected ':PORT'",
            "tcp-connect:[1.2.3.4]:80": "brackets are only for IPv6",
            "tcp-connect:[10.0.0.0/8]:80": "brackets are only for IPv6",
            "tcp-connect:[fe80::1%eth0]:80": "zone index",
            "tcp-connect:**.example.com:80": "wildcard",
            "tcp-connect:*example.com:80": "wildcard",
            "tcp-connect:a.*.example.com:80": "wildcard",
            "tcp-connect:*.1.2.3.4:80": "not an IP",
            "tcp-connect:*.[::1]:80": "too many ':'",
            "tcp-connect:127.1:80": "canonical",
            "tcp-connect:2130706433:80": "canonical",
            "tcp-connect:10.0.0.1/8:80": "host bits set",
            "tcp-connect:10.0.0.0/33:80": "not a valid network",
            "tcp-connect:10.0.0.0/08:80": "prefix length",
            "tcp-connect:10.0.0.0/255.0.0.0:80": "prefix length",
            "tcp-connect:example.com/8:80": "not an IP network",
            "tcp-connect:[::/0]/8:80": "expected ':PORT'",
            "tcp-connect:[::ffff:0:0/95]:80": "IPv4-mapped",
            "tcp-connect:a..b:80": "empty label",
            "tcp-connect:exa mple.com:80": "not a valid host name",
            "tcp-listen:": "port is missing",
            "tcp-listen:0": "not a port number",
            "tcp-listen:example.com:80": "interface address",
            "tcp-listen:[fe80::1%eth0]:80": "zone index",
            "tcp-listen:10.0.0.0/8:80": "not a valid host",
            "tcp-listen:1:2:3": "too many ':'",
            "tcp-conect:a:1": "unknown permission kind",
            "TCP-CONNECT:a:1": "unknown permission kind",
            " tcp-connect:a:1": "unknown permission kind",
            "tcp-connect:a:1 ": "not a port number",
            "tcp-connect:a\x1b[31m:1": "not a valid host name",
        }
        for text, what in cases.items():
            with self.assertRaises(ValueError, msg=text) as caught:
                parsePermission(text)
            message = str(caught.exception)
            self.assertIn(repr(text), message, text)
            self.assertIn(what, message, text)

    def test_escapesInMessages(self) -> None:
        """
        Control characters in a bad entry are escaped in the message, so it is
        safe to print on a terminal.
        """
        with self.assertRaises(ValueError) as caught:
            parsePermission("tcp-connect:\x1b]0;owned\x07:1")
        self.assertNotIn("\x1b", str(caught.exception))
        self.assertIn("\\x1b", str(caught.exception))

    def test_notAString(self) -> None:
        """
        A non-string permission is a L{TypeError}.
        """
        self.assertRaises(TypeError, parsePermission, None)
        self.assertRaises(TypeError, parsePermission, b"tcp-listen:1")

    @given(_permissionTexts())
    @settings(max_examples=400, deadline=None)
    def test_roundTrip(self, text: str) -> None:
        """
        Any valid entry parses; its canonical text parses to the same value
        and is its own canonical text.
        """
        permission = parsePermission(text)
        again = parsePermission(str(permission))
        self.assertEqual(again, permission)
        self.assertEqual(str(again), str(permission))


class ParseManifestPermissionsTests(SynchronousTestCase):
    """
    L{parseManifestPermissions}.
    """

    def test_splits(self) -> None:
        """
        C{tcp-*} entries are parsed in order without duplicates; the others
        are returned to be logged.
        """
        permissions, ignored = parseManifestPermissions(
            [
                "tcp-listen:7000",
                "storage",
                "tcp-connect:Example.com:80",
                "<all_urls>",
                "tcp-connect:example.com.:80",
            ]
        )
        self.assertEqual(
            [str(p) for p in permissions],
            ["tcp-listen:7000", "tcp-connect:example.com:80"],
        )
        self.assertEqual(ignored, ["storage", "<all_urls>"])

    def test_invalidTCPEntry(self) -> None:
        """
        An invalid C{tcp-*} entry, including a misspelt kind or odd case or
        spacing, is an error naming it (not silently ignored).
        """
        for bad in ["tcp-connect:a", "tcp-conect:a:1", "TCP-listen:1", " tcp-listen:1"]:
            with self.assertRaises(ValueError) as caught:
                parseManifestPermissions(["storage", bad])
            self.assertIn(repr(bad), str(caught.exception))

    def test_nonStringEntry(self) -> None:
        """
        A non-string entry is a L{TypeError} naming it and its position.
        """
        with self.assertRaises(TypeError) as caught:
            parseManifestPermissions(["tcp-listen:1", 7000])
        self.assertIn("entry 1", str(caught.exception))
        self.assertIn("7000", str(caught.exception))

    def test_stringInsteadOfList(self) -> None:
        """
        A bare string is not a list of permissions.
        """
        self.assertRaises(TypeError, parseManifestPermissions, "tcp-listen:1")


# -- matching --------------------------------------------------------------


class PermissionSetTests(SynchronousTestCase):
    """
    The set operations of L{PermissionSet}.
    """

    def test_setOperations(self) -> None:
        """
        C{add}, C{discard}, C{in}, C{len} and iteration, with permissions or
        their texts.
        """
        grants = PermissionSet(["tcp-listen:1", parsePermission("tcp-connect:a:1")])
        self.assertEqual(len(grants), 2)
        grants.add("tcp-listen:1")
        grants.add("tcp-connect:A.:1")
        self.assertEqual(len(grants), 2)
        self.assertIn("tcp-connect:a:1", grants)
        self.assertIn(parsePermission("tcp-listen:1"), grants)
        self.assertNotIn("tcp-listen:2", grants)
        self.assertNotIn("not a permission", grants)
        grants.discard("tcp-listen:1")
        grants.discard("tcp-listen:1")
        self.assertEqual([str(p) for p in grants], ["tcp-connect:a:1"])
        self.assertIn("tcp-connect:a:1", repr(grants))

    def test_iterationIsASnapshot(self) -> None:
        """
        Grants may be discarded while iterating.
        """
        grants = PermissionSet(["tcp-listen:1", "tcp-listen:2"])
        for permission in grants:
            grants.discard(permission)
        self.assertEqual(len(grants), 0)

    def test_invalidEntries(self) -> None:
        """
        Invalid texts and other types are refused.
        """
        self.assertRaises(ValueError, PermissionSet, ["tcp-listen:0"])
        self.assertRaises(TypeError, PermissionSet, "tcp-listen:1")
        self.assertRaises(TypeError, PermissionSet().add, 7000)

    def test_discardUnindexes(self) -> None:
        """
        A discarded grant no longer allows anything, while overlapping ones
        still do.
        """
        grants = PermissionSet(
            [
                "tcp-connect:a.example:1-10",
                "tcp-connect:a.example:5-20",
                "tcp-connect:*.example:7",
                "tcp-connect:10.0.0.0/8:1",
                "tcp-connect:*:3",
            ]
        )
        # Each grant is the last one left that allows its host and port.
        for entry, host, port in [
            ("tcp-connect:a.example:5-20", "a.example", 15),
            ("tcp-connect:a.example:1-10", "a.example", 10),
            ("tcp-connect:*.example:7", "a.example", 7),
            ("tcp-connect:10.0.0.0/8:1", "10.9.9.9", 1),
            ("tcp-connect:*:3", "10.9.9.9", 3),
        ]:
            self.assertTrue(grants.allowsConnect(host, port), entry)
            grants.discard(entry)
            self.assertFalse(grants.allowsConnect(host, port), entry)


class AllowsConnectTests(SynchronousTestCase):
    """
    L{PermissionSet.allowsConnect} and L{PermissionSet.checkConnect}.
    """

    def test_exactName(self) -> None:
        """
        A name grant allows that name in any spelling, on its ports only.
        """
        grants = PermissionSet(["tcp-connect:example.com:80"])
        for host in ["example.com", "EXAMPLE.COM", "example.com."]:
            self.assertTrue(grants.allowsConnect(host, 80), host)
        self.assertFalse(grants.allowsConnect("example.com", 81))
        self.assertFalse(grants.allowsConnect("www.example.com", 80))
        self.assertFalse(grants.allowsConnect("example.co", 80))

    def test_wildcard(self) -> None:
        """
        C{*.name} allows the name and every name under it, on label
        boundaries only.
        """
        grants = PermissionSet(["tcp-connect:*.example.com:443"])
        for host in ["example.com", "a.example.com", "a.b.c.EXAMPLE.com."]:
            self.assertTrue(grants.allowsConnect(host, 443), host)
        for host in [
            "evilexample.com",
            "example.com.evil",
            "example.co",
            "com",
            "aexample.com",
            "a.evilexample.com",
        ]:
            self.assertFalse(grants.allowsConnect(host, 443), host)

    def test_idnaGrant(self) -> None:
        """
        A grant for an internationalized name matches both spellings, and
        not a look-alike.
        """
        grants = PermissionSet(["tcp-connect:bücher.example:1"])
        self.assertTrue(grants.allowsConnect("xn--bcher-kva.example", 1))
        self.assertTrue(grants.allowsConnect("BÜCHER.example", 1))
        self.assertFalse(grants.allowsConnect("bucher.example", 1))

    def test_anyHost(self) -> None:
        """
        C{*} allows every name and every address on its ports.
        """
        grants = PermissionSet(["tcp-connect:*:80"])
        for host in ["example.com", "127.0.0.1", "::1", "[fe80::1%eth0]"]:
            self.assertTrue(grants.allowsConnect(host, 80), host)
        self.assertFalse(grants.allowsConnect("example.com", 81))

    def test_ipAndNetwork(self) -> None:
        """
        IP and CIDR grants allow the addresses they contain, in any spelling.
        """
        grants = PermissionSet(
            [
                "tcp-connect:192.0.2.7:1",
                "tcp-connect:10.0.0.0/8:2",
                "tcp-connect:[2001:db8::/32]:3",
                "tcp-connect:[::1]:4",
            ]
        )
        self.assertTrue(grants.allowsConnect("192.0.2.7", 1))
        self.assertFalse(grants.allowsConnect("192.0.2.8", 1))
        self.assertTrue(grants.allowsConnect("10.255.0.1", 2))
        self.assertTrue(grants.allowsConnect("::ffff:10.0.0.1", 2))
        self.assertFalse(grants.allowsConnect("11.0.0.1", 2))
        self.assertTrue(grants.allowsConnect("[2001:DB8:0::5]", 3))
        self.assertFalse(grants.allowsConnect("2001:db9::5", 3))
        self.assertTrue(grants.allowsConnect("0:0:0:0:0:0:0:1", 4))
        self.assertFalse(grants.allowsConnect("::2", 4))

    def test_nameNeverMatchesIP(self) -> None:
        """
        A name grant never allows an address, and an address grant never
        allows a name (even one that resolves to it).
        """
        grants = PermissionSet(["tcp-connect:localhost:1"])
        self.assertFalse(grants.allowsConnect("127.0.0.1", 1))
        with self.assertRaises(PermissionDenied) as caught:
            grants.checkConnect("127.0.0.1", 1)
        self.assertIn("a name grant never does", str(caught.exception))
        grants = PermissionSet(["tcp-connect:127.0.0.1:2"])
        self.assertFalse(grants.allowsConnect("localhost", 2))
        with self.assertRaises(PermissionDenied) as caught:
            grants.checkConnect("localhost", 2)
        self.assertIn("an IP/CIDR grant never does", str(caught.exception))

    def test_checkConnectMessage(self) -> None:
        """
        The refusal says "permission denied", the host and port, and why.
        """
        grants = PermissionSet(["tcp-connect:example.com:80"])
        with self.assertRaises(PermissionDenied) as caught:
            grants.checkConnect("EXAMPLE.com", 81)
        message = str(caught.exception)
        self.assertIn("permission denied", message)
        self.assertIn("example.com:81", message)
        self.assertIn(
            "port 81 is not among the ports granted for this host (80)", message
        )
        with self.assertRaises(PermissionDenied) as caught:
            grants.checkConnect("::1", 80)
        self.assertIn("[::1]:80", str(caught.exception))
        self.assertIn("no tcp-connect grant", str(caught.exception))
        grants.checkConnect("example.com", 80)

    def test_invalidInput(self) -> None:
        """
        Invalid hosts and ports: L{allowsConnect} is C{False},
        L{checkConnect} raises L{ValueError} or L{TypeError} saying why.
        """
        grants = PermissionSet(["tcp-connect:*:*"])
        for host, port, error in [
            ("127.1", 80, ValueError),
            ("", 80, ValueError),
            ("a", 0, ValueError),
            ("a", 65536, ValueError),
            ("a", True, TypeError),
            ("a", "80", TypeError),
            ("a", 80.0, TypeError),
            (None, 80, TypeError),
        ]:
            self.assertFalse(grants.allowsConnect(host, port), (host, port))  # type: ignore[arg-type]
            self.assertRaises(error, grants.checkConnect, host, port)

    def test_listenGrantsDoNotConnect(self) -> None:
        """
        A listen grant allows no connection.
        """
        grants = PermissionSet(["tcp-listen:*", "tcp-listen:127.0.0.1:80"])
        self.assertFalse(grants.allowsConnect("127.0.0.1", 80))

    def test_manyPortsForOneHost(self) -> None:
        """
        Single ports and overlapping or adjacent ranges for one host combine.
        """
        grants = PermissionSet(
            [
                "tcp-connect:a:10-20",
                "tcp-connect:a:15-30",
                "tcp-connect:a:31-40",
                "tcp-connect:a:50",
                "tcp-connect:a:60-70",
            ]
        )
        allowed = [p for p in range(1, 100) if grants.allowsConnect("a", p)]
        self.assertEqual(allowed, [*range(10, 41), 50, *range(60, 71)])

    @given(_connectHosts(), _portTexts(), st.ip_addresses(), _ports)
    @settings(max_examples=400, deadline=None)
    def test_addressMatchesIffContained(
        self, host: str, ports: str, address: object, port: int
    ) -> None:
        """
        For IP probes, a single grant allows exactly the addresses its host
        contains (C{*}: all) on exactly its ports.
        """
        permission = parsePermission(f"tcp-connect:{host}:{ports}")
        grants = PermissionSet([permission])
        probe = canonicalHost(str(address))
        inHost: bool
        if permission.host == "*":
            inHost = True
        elif permission.host is not None and (
            "/" in permission.host or isIPLiteral(permission.host)
        ):
            inHost = ipaddress.ip_address(probe) in ipaddress.ip_network(
                permission.host
            )
        else:
            inHost = False
        expected = inHost and permission.coversPort(port)
        self.assertEqual(grants.allowsConnect(str(address), port), expected)

    @given(_connectHosts(), _portTexts(), _names, _ports)
    @settings(max_examples=400, deadline=None)
    def test_nameMatchesIffCovered(
        self, host: str, ports: str, name: str, port: int
    ) -> None:
        """
        For name probes, a single grant allows exactly its name (or, for
        C{*.apex}, the apex and names ending in C{.apex}) on exactly its
        ports; IP grants never do.
        """
        permission = parsePermission(f"tcp-connect:{host}:{ports}")
        grants = PermissionSet([permission])
        granted = permission.host
        assert granted is not None
        if granted == "*":
            inHost = True
        elif granted.startswith("*."):
            apex = granted[2:]
            inHost = name == apex or name.endswith("." + apex)
        else:
            inHost = name == granted
        self.assertEqual(
            grants.allowsConnect(name, port), inHost and permission.coversPort(port)
        )
        if granted.startswith("*."):
            apex = granted[2:]
            self.assertTrue(grants.allowsConnect(apex, permission.portLow))
            self.assertFalse(grants.allowsConnect("evil" + apex, permission.portLow))

    @given(_names, _names, _ports)
    @settings(max_examples=200, deadline=None)
    def test_canonicalFormsMatchIffEqual(self, a: str, b: str, port: int) -> None:
        """
        A grant for name C{a} allows name C{b} exactly when their canonical
        forms are equal, whatever the case or trailing dot.
        """
        grants = PermissionSet([f"tcp-connect:{a.upper()}.:{port}"])
        self.assertEqual(
            grants.allowsConnect(b, port), canonicalHost(a) == canonicalHost(b)
        )
        self.assertTrue(grants.allowsConnect(a.lower() + ".", port))

    def test_manyGrants(self) -> None:
        """
        With thousands of grants of every kind, each allows what it should
        and nothing more.
        """
        grants = PermissionSet()
        for i in range(2000):
            grants.add(f"tcp-connect:host{i}.example:{1000 + i}")
            grants.add(f"tcp-connect:*.zone{i}.example:{2000 + i}")
            grants.add(f"tcp-connect:10.{i // 256}.{i % 256}.0/24:{3000 + i}")
            grants.add(f"tcp-connect:[fd00:{i:x}::/32]:{4000 + i}")
        self.assertEqual(len(grants), 8000)
        for host, allowed, refused in [
            ("host1999.example", 2999, 2998),
            ("a.b.zone7.example", 2007, 2008),
            ("10.3.4.200", 3000 + 3 * 256 + 4, 3000),
            ("fd00:7cf::1", 4000 + 0x7CF, 4000),
        ]:
            self.assertTrue(grants.allowsConnect(host, allowed), host)
            self.assertFalse(grants.allowsConnect(host, refused), host)


class AllowsListenTests(SynchronousTestCase):
    """
    L{PermissionSet.allowsListen} and L{PermissionSet.checkListen}.
    """

    def test_port(self) -> None:
        """
        A port grant allows that port on every interface, and no other port.
        """
        grants = PermissionSet(["tcp-listen:7000"])
        self.assertTrue(grants.allowsListen(7000))
        self.assertTrue(grants.allowsListen(7000, "127.0.0.1"))
        self.assertTrue(grants.allowsListen(7000, "::"))
        self.assertFalse(grants.allowsListen(7001))
        self.assertFalse(grants.allowsListen(0))

    def test_automaticPort(self) -> None:
        """
        Port 0 needs every port: C{*}, or ranges that together cover 1..65535.
        """
        self.assertTrue(PermissionSet(["tcp-listen:*"]).allowsListen(0))
        self.assertFalse(PermissionSet(["tcp-listen:1-65534"]).allowsListen(0))
        self.assertFalse(PermissionSet(["tcp-listen:2-65535"]).allowsListen(0))
        self.assertTrue(
            PermissionSet(["tcp-listen:1", "tcp-listen:2-65535"]).allowsListen(0)
        )
        self.assertTrue(
            PermissionSet(
                ["tcp-listen:1-30000", "tcp-listen:30001-65535"]
            ).allowsListen(0)
        )
        self.assertFalse(
            PermissionSet(
                ["tcp-listen:1-30000", "tcp-listen:30002-65535"]
            ).allowsListen(0)
        )
        interface = PermissionSet(["tcp-listen:127.0.0.1:*"])
        self.assertTrue(interface.allowsListen(0, "127.0.0.1"))
        self.assertFalse(interface.allowsListen(0))

    def test_interface(self) -> None:
        """
        An interface grant allows that exact interface (any spelling) only;
        L{None} and C{""} mean the default, C{0.0.0.0}.
        """
        grants = PermissionSet(["tcp-listen:[::1]:80", "tcp-listen:0.0.0.0:81"])
        self.assertTrue(grants.allowsListen(80, "::1"))
        self.assertTrue(grants.allowsListen(80, "[0::1]"))
        self.assertFalse(grants.allowsListen(80, "127.0.0.1"))
        self.assertFalse(grants.allowsListen(80))
        self.assertTrue(grants.allowsListen(81))
        self.assertTrue(grants.allowsListen(81, ""))
        self.assertTrue(grants.allowsListen(81, "0.0.0.0"))
        self.assertFalse(grants.allowsListen(81, "127.0.0.1"))

    def test_invalid(self) -> None:
        """
        Bad ports and non-address interfaces: L{allowsListen} is C{False},
        L{checkListen} raises saying why.
        """
        grants = PermissionSet(["tcp-listen:*"])
        for port, host, error in [
            (-1, None, ValueError),
            (65536, None, ValueError),
            (True, None, TypeError),
            ("80", None, TypeError),
            (80, "localhost", ValueError),
            (80, "127.1", ValueError),
        ]:
            self.assertFalse(grants.allowsListen(port, host), (port, host))  # type: ignore[arg-type]
            self.assertRaises(error, grants.checkListen, port, host)

    def test_checkListenMessages(self) -> None:
        """
        Refusals say "permission denied", where, and why.
        """
        grants = PermissionSet(["tcp-listen:7000"])
        with self.assertRaises(PermissionDenied) as caught:
            grants.checkListen(0)
        self.assertIn("permission denied", str(caught.exception))
        self.assertIn("tcp-listen:*", str(caught.exception))
        with self.assertRaises(PermissionDenied) as caught:
            grants.checkListen(7001, "::1")
        self.assertIn("[::1]:7001", str(caught.exception))
        self.assertIn("any interface: 7000", str(caught.exception))
        with self.assertRaises(PermissionDenied) as caught:
            PermissionSet(["tcp-connect:*:*"]).checkListen(80)
        self.assertIn("no tcp-listen grant", str(caught.exception))
        grants.checkListen(7000)

    def test_connectGrantsDoNotListen(self) -> None:
        """
        A connect grant allows no listening.
        """
        self.assertFalse(PermissionSet(["tcp-connect:*:*"]).allowsListen(80))


# -- DNS rebinding ---------------------------------------------------------


class CheckResolvedTests(SynchronousTestCase):
    """
    L{PermissionSet.checkResolved}: the DNS rebinding rule.
    """

    def test_publicAddresses(self) -> None:
        """
        A name grant lets public addresses through, in order, as given.
        """
        grants = PermissionSet(["tcp-connect:example.com:80"])
        addresses = ["2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"]
        self.assertEqual(grants.checkResolved("example.com", 80, addresses), addresses)

    def test_nonPublicDropped(self) -> None:
        """
        Non-public addresses are dropped; the public ones are kept.
        """
        grants = PermissionSet(["tcp-connect:example.com:80"])
        self.assertEqual(
            grants.checkResolved(
                "example.com",
                80,
                ["127.0.0.1", "93.184.216.34", "10.0.0.1", "::ffff:8.8.8.8", "::1"],
            ),
            ["93.184.216.34", "::ffff:8.8.8.8"],
        )

    def test_nonPublicAllowedByIPGrant(self) -> None:
        """
        An IP/CIDR grant covering the address and port lets a non-public
        address through; on another port it does not.
        """
        grants = PermissionSet(
            ["tcp-connect:intranet.example:80", "tcp-connect:10.0.0.0/8:80"]
        )
        self.assertEqual(
            grants.checkResolved("intranet.example", 80, ["10.1.1.1", "192.168.0.1"]),
            ["10.1.1.1"],
        )
        grants = PermissionSet(
            ["tcp-connect:intranet.example:*", "tcp-connect:10.0.0.0/8:80"]
        )
        self.assertRaises(
            PermissionDenied, grants.checkResolved, "intranet.example", 81, ["10.1.1.1"]
        )

    def test_nonPublicAllowedByAnyHost(self) -> None:
        """
        A C{*} host grant covering the port lets non-public addresses through.
        """
        grants = PermissionSet(["tcp-connect:*:80"])
        self.assertEqual(
            grants.checkResolved("a.example", 80, ["127.0.0.1", "10.0.0.1"]),
            ["127.0.0.1", "10.0.0.1"],
        )

    def test_localhost(self) -> None:
        """
        C{localhost} (and names under it) may reach loopback, and only
        loopback.
        """
        grants = PermissionSet(
            ["tcp-connect:localhost:80", "tcp-connect:*.localhost:81"]
        )
        self.assertEqual(
            grants.checkResolved("localhost", 80, ["127.0.0.1", "::1"]),
            ["127.0.0.1", "::1"],
        )
        self.assertEqual(
            grants.checkResolved("app.localhost", 81, ["127.0.0.2", "10.0.0.1"]),
            ["127.0.0.2"],
        )
        with self.assertRaises(PermissionDenied) as caught:
            grants.checkResolved("localhost", 80, ["93.184.216.34"])
        self.assertIn("only reach loopback", str(caught.exception))

    def test_nameMustBeAllowed(self) -> None:
        """
        Without a grant for the name and port, nothing gets through.
        """
        grants = PermissionSet(["tcp-connect:example.com:80", "tcp-connect:8.8.8.8:81"])
        self.assertRaises(
            PermissionDenied, grants.checkResolved, "example.org", 80, ["8.8.8.8"]
        )
        self.assertRaises(
            PermissionDenied, grants.checkResolved, "example.com", 81, ["8.8.8.8"]
        )

    def test_badAddressesRefused(self) -> None:
        """
        Addresses that are not canonical IP literals are refused, not
        trusted.
        """
        grants = PermissionSet(["tcp-connect:example.com:80"])
        with self.assertRaises(PermissionDenied) as caught:
            grants.checkResolved(
                "example.com", 80, ["2130706433", "127.1", "evil.example", ""]
            )
        message = str(caught.exception)
        for bad in ["'2130706433'", "'127.1'", "'evil.example'", "''"]:
            self.assertIn(bad, message)

    def test_ipLiteralName(self) -> None:
        """
        An IP literal "resolves" only to itself.
        """
        grants = PermissionSet(["tcp-connect:127.0.0.1:80"])
        self.assertEqual(
            grants.checkResolved("127.0.0.1", 80, ["127.0.0.1", "10.0.0.1"]),
            ["127.0.0.1"],
        )
        self.assertRaises(
            PermissionDenied, grants.checkResolved, "127.0.0.1", 80, ["10.0.0.1"]
        )

    def test_invalidName(self) -> None:
        """
        An invalid name or port is a L{ValueError}.
        """
        grants = PermissionSet(["tcp-connect:*:*"])
        self.assertRaises(ValueError, grants.checkResolved, "127.1", 80, ["127.0.0.1"])
        self.assertRaises(ValueError, grants.checkResolved, "a", 0, ["127.0.0.1"])

    def test_noAddresses(self) -> None:
        """
        An empty answer is a refusal, not an empty list to dial.
        """
        grants = PermissionSet(["tcp-connect:example.com:80"])
        self.assertRaises(PermissionDenied, grants.checkResolved, "example.com", 80, [])


# -- the bypass table ------------------------------------------------------


class BypassTests(SynchronousTestCase):
    """
    Known ways to reach something the grants did not mean to allow; each is
    denied, with the reason in the error.
    """

    def test_numericAliasesOfLoopback(self) -> None:
        """
        Numeric spellings of 127.0.0.1 that the resolver accepts are refused
        with L{ValueError} even under C{*}, and never match an IP grant.
        """
        grants = PermissionSet(["tcp-connect:*:*", "tcp-connect:127.0.0.1:80"])
        for alias in [
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "127.1",
            "127.0.0.01",
            "0x7f.1",
            "127.0.1",
            "0x7F.0x0.0x0.0x1",
        ]:
            self.assertFalse(grants.allowsConnect(alias, 80), alias)
            with self.assertRaises(ValueError) as caught:
                grants.checkConnect(alias, 80)
            self.assertIn("canonical", str(caught.exception))

    def test_mappedLoopbackIsLoopback(self) -> None:
        """
        IPv4-mapped spellings of 127.0.0.1 are 127.0.0.1: denied where
        127.0.0.1 is, allowed where it is.
        """
        grants = PermissionSet(["tcp-connect:[::/0]:80", "tcp-connect:8.8.8.8:80"])
        for host in ["::ffff:127.0.0.1", "[::ffff:7f00:1]", "[::FFFF:127.0.0.1]"]:
            self.assertFalse(grants.allowsConnect(host, 80), host)
            with self.assertRaises(PermissionDenied) as caught:
                grants.checkConnect(host, 80)
            self.assertIn("127.0.0.1:80", str(caught.exception))
        self.assertTrue(
            PermissionSet(["tcp-connect:127.0.0.1:80"]).allowsConnect(
                "[::ffff:7f00:1]", 80
            )
        )

    def test_unspecifiedAddresses(self) -> None:
        """
        0.0.0.0 and :: (which reach this host) are not covered by loopback,
        name or public grants, and a name resolving to them is refused.
        """
        grants = PermissionSet(
            [
                "tcp-connect:127.0.0.1:80",
                "tcp-connect:[::1]:80",
                "tcp-connect:localhost:80",
                "tcp-connect:example.com:80",
            ]
        )
        for host in ["0.0.0.0", "::", "[::]", "0:0:0:0:0:0:0:0"]:
            self.assertFalse(grants.allowsConnect(host, 80), host)
            self.assertRaises(PermissionDenied, grants.checkConnect, host, 80)
        with self.assertRaises(PermissionDenied) as caught:
            grants.checkResolved("example.com", 80, ["0.0.0.0", "::"])
        self.assertIn("unspecified", str(caught.exception))

    def test_rebinding(self) -> None:
        """
        An allowed name resolving to loopback, private, link-local (cloud
        metadata), IPv6 loopback, mapped, NAT64 or 6to4 loopback is refused,
        each with why.
        """
        grants = PermissionSet(["tcp-connect:allowed.example:80"])
        for address, why in [
            ("127.0.0.1", "loopback"),
            ("10.0.0.1", "private"),
            ("169.254.169.254", "link-local"),
            ("::1", "loopback"),
            ("::ffff:7f00:1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("fe80::1%eth0", "link-local"),
            ("fd00::1", "unique local"),
            ("100.64.0.1", "CGNAT"),
            ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1"),
            ("2002:7f00:1::", "6to4 form of 127.0.0.1"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
        ]:
            with self.assertRaises(PermissionDenied, msg=address) as caught:
                grants.checkResolved("allowed.example", 80, [address])
            message = str(caught.exception)
            self.assertIn("permission denied", message)
            self.assertIn("allowed.example:80", message)
            self.assertIn(address, message)
            self.assertIn(why, message)

    def test_ports(self) -> None:
        """
        A missing or out-of-range port is an error; a port outside the grant
        is denied.
        """
        grants = PermissionSet(["tcp-connect:example.com:80"])
        for port in [0, -80, 65536, 80 + 65536]:
            self.assertFalse(grants.allowsConnect("example.com", port))
            with self.assertRaises(ValueError) as caught:
                grants.checkConnect("example.com", port)
            self.assertIn("out of range", str(caught.exception))
        self.assertRaises(TypeError, grants.checkConnect, "example.com", None)
        self.assertRaises(ValueError, parsePermission, "tcp-connect:example.com")
        with self.assertRaises(PermissionDenied) as caught:
            grants.checkConnect("example.com", 8080)
        self.assertIn("port 8080", str(caught.exception))

    def test_wildcardBoundary(self) -> None:
        """
        C{*.example.com} never allows C{evilexample.com} or an IP.
        """
        grants = PermissionSet(["tcp-connect:*.example.com:80"])
        for host in ["evilexample.com", "example.com.evil.net", "93.184.216.34"]:
            self.assertFalse(grants.allowsConnect(host, 80), host)
            with self.assertRaises(PermissionDenied) as caught:
                grants.checkConnect(host, 80)
            self.assertIn("no tcp-connect grant", str(caught.exception))

    def test_caseAndTrailingDot(self) -> None:
        """
        Case and a trailing dot neither widen nor dodge a grant.
        """
        grants = PermissionSet(["tcp-connect:example.com:80"])
        self.assertTrue(grants.allowsConnect("EXAMPLE.COM.", 80))
        self.assertFalse(grants.allowsConnect("EXAMPLE.COM..", 80))
        self.assertRaises(ValueError, grants.checkConnect, "example.com..", 80)

    def test_homographs(self) -> None:
        """
        A look-alike name in another script is not the granted name; full-
        width forms of the granted name are that name.
        """
        grants = PermissionSet(["tcp-connect:example.com:80"])
        for spoof in ["\u0435xample.com", "examp\u04cfe.com", "xn--xample-2of.com"]:
            self.assertFalse(grants.allowsConnect(spoof, 80), spoof)
            self.assertRaises(PermissionDenied, grants.checkConnect, spoof, 80)
        self.assertTrue(grants.allowsConnect("\uff45xample.com", 80))

    def test_zoneIndex(self) -> None:
        """
        A zone index neither widens nor escapes a grant: the address is judged
        as without it, and grants cannot name zones.
        """
        grants = PermissionSet(
            ["tcp-connect:[fe80::1]:80", "tcp-connect:example.com:80"]
        )
        self.assertTrue(grants.allowsConnect("fe80::1%eth0", 80))
        self.assertFalse(grants.allowsConnect("fe80::2%eth0", 80))
        self.assertFalse(grants.allowsConnect("::1%lo", 80))
        self.assertRaises(ValueError, grants.checkConnect, "fe80::1%eth0/8", 80)
        self.assertRaises(ValueError, grants.checkConnect, "fe80::1%example.com]", 80)
        with self.assertRaises(PermissionDenied) as caught:
            grants.checkResolved("example.com", 80, ["fe80::1%eth0%1"])
        self.assertIn("zone index", str(caught.exception))
        self.assertRaises(ValueError, parsePermission, "tcp-connect:[fe80::1%eth0]:80")


# -- more properties and messages -----------------------------------------


def _naiveAllows(grants: list[Permission], host: str, port: int) -> bool:
    """
    A slow reference matcher: try every grant in turn.
    """
    probe = parseHost(host)
    for grant in grants:
        if grant.kind != "connect" or not grant.coversPort(port):
            continue
        granted = grant.host
        assert granted is not None
        if granted == "*":
            return True
        if probe.ip is not None:
            if "/" in granted or isIPLiteral(granted):
                if probe.ip in ipaddress.ip_network(granted):
                    return True
        elif granted.startswith("*."):
            apex = granted[2:]
            if probe.text == apex or probe.text.endswith("." + apex):
                return True
        elif granted == probe.text:
            return True
    return False


_smallNames = st.sampled_from(
    ["a.example", "b.a.example", "example", "c.b.a.example", "other", "a.other"]
)
_smallPorts = st.sampled_from(["1", "2", "1-2", "2-3", "3", "*"])


@st.composite
def _smallGrants(draw: st.DrawFn) -> str:
    """
    Grants drawn from a small world, so that probes often hit them.
    """
    choice = draw(st.integers(0, 4))
    port = draw(_smallPorts)
    if choice == 0:
        return f"tcp-connect:{draw(_smallNames)}:{port}"
    if choice == 1:
        return f"tcp-connect:*.{draw(_smallNames)}:{port}"
    if choice == 2:
        length = draw(st.sampled_from([16, 23, 24, 30, 32]))
        address = f"10.0.{draw(st.integers(0, 3))}.{draw(st.integers(0, 255))}"
        network = ipaddress.ip_network(f"{address}/{length}", strict=False)
        return f"tcp-connect:{network}:{port}"
    if choice == 3:
        length = draw(st.sampled_from([8, 120, 126, 128]))
        address = f"fd00::{draw(st.integers(0, 1023)):x}"
        network6 = ipaddress.ip_network(f"{address}/{length}", strict=False)
        return f"tcp-connect:[{network6}]:{port}"
    return f"tcp-connect:*:{port}"


_smallHosts = st.one_of(
    _smallNames,
    st.integers(0, 1023).map(lambda n: f"10.0.{n // 256}.{n % 256}"),
    st.integers(0, 1023).map(lambda n: f"fd00::{n:x}"),
)


class IndexPropertyTests(SynchronousTestCase):
    """
    The indexed matcher agrees with a naive one, through adds and discards.
    """

    @given(
        st.lists(_smallGrants(), max_size=12),
        st.lists(st.integers(0, 11), max_size=6),
        st.lists(st.tuples(_smallHosts, st.integers(1, 4)), min_size=1, max_size=20),
    )
    @settings(max_examples=300, deadline=None)
    def test_indexAgreesWithNaive(
        self, texts: list[str], drops: list[int], probes: list[tuple[str, int]]
    ) -> None:
        """
        For random grant sets (with some grants discarded again) and probes,
        L{PermissionSet.allowsConnect} equals trying each grant in turn.
        """
        grants = PermissionSet()
        for text in texts:
            grants.add(text)
        for drop in drops:
            if texts:
                grants.discard(texts[drop % len(texts)])
        remaining = list(grants)
        for host, port in probes:
            self.assertEqual(
                grants.allowsConnect(host, port),
                _naiveAllows(remaining, host, port),
                (remaining, host, port),
            )

    @given(st.ip_addresses(), st.ip_addresses(), _ports)
    @settings(max_examples=300, deadline=None)
    def test_addressGrantMatchesIffEqual(self, a: object, b: object, port: int) -> None:
        """
        A grant for address C{a} allows address C{b} exactly when they are
        the same address (after IPv4-mapped addresses become IPv4).
        """
        text = str(a)
        grants = PermissionSet(
            [
                f"tcp-connect:[{text}]:{port}"
                if ":" in text
                else f"tcp-connect:{text}:{port}"
            ]
        )
        same = canonicalHost(str(a)) == canonicalHost(str(b))
        self.assertEqual(grants.allowsConnect(str(b), port), same)

    @given(st.text(max_size=30))
    @settings(max_examples=500, deadline=None)
    def test_canonicalHostIsTotal(self, text: str) -> None:
        """
        For any text, L{canonicalHost} either raises L{ValueError} or returns
        a canonical host (a fixed point), and the checks never raise anything
        unexpected.
        """
        grants = PermissionSet(["tcp-connect:*:*"])
        try:
            canonical = canonicalHost(text)
        except ValueError:
            self.assertFalse(grants.allowsConnect(text, 80))
            return
        self.assertEqual(canonicalHost(canonical), canonical)
        self.assertTrue(grants.allowsConnect(text, 80))


class PermissionValueTests(SynchronousTestCase):
    """
    L{Permission} built directly must be canonical.
    """

    def test_canonicalAccepted(self) -> None:
        """
        Canonical fields make a permission equal to the parsed one.
        """
        self.assertEqual(
            Permission("connect", "*.example.com", 1, 65535),
            parsePermission("tcp-connect:*.example.com:*"),
        )
        self.assertEqual(
            Permission("listen", "::1", 80, 80), parsePermission("tcp-listen:[::1]:80")
        )
        self.assertEqual(
            Permission("listen", None, 5, 6), parsePermission("tcp-listen:5-6")
        )

    def test_nonCanonicalRefused(self) -> None:
        """
        Non-canonical or invalid fields are a L{ValueError}.
        """
        for args in [
            ("connect", "EXAMPLE.com", 1, 1),
            ("connect", "example.com.", 1, 1),
            ("connect", "bücher.example", 1, 1),
            ("connect", "10.0.0.1/8", 1, 1),
            ("connect", "10.0.0.1/32", 1, 1),
            ("connect", "::ffff:1.2.3.4", 1, 1),
            ("connect", "127.1", 1, 1),
            ("connect", None, 1, 1),
            ("connect", "a", 0, 1),
            ("connect", "a", 2, 1),
            ("connect", "a", 1, 65536),
            ("connect", "a", True, 1),
            ("listen", "*", 1, 1),
            ("listen", "example.com", 1, 1),
            ("bind", "a", 1, 1),
        ]:
            self.assertRaises(ValueError, Permission, *args)


class DenialMessageTests(SynchronousTestCase):
    """
    Denials list what is granted for the host, briefly.
    """

    def test_portsOfAllCoveringGrants(self) -> None:
        """
        Exact and wildcard grants covering the host are merged into one list
        of ports.
        """
        grants = PermissionSet(
            [
                "tcp-connect:a.example:80",
                "tcp-connect:*.example:8000-8080",
                "tcp-connect:*.a.example:8081-8090",
                "tcp-connect:b.example:22",
            ]
        )
        with self.assertRaises(PermissionDenied) as caught:
            grants.checkConnect("a.example", 443)
        self.assertIn("(80, 8000-8090)", str(caught.exception))

    def test_networks(self) -> None:
        """
        Every network containing the address contributes its ports.
        """
        grants = PermissionSet(
            ["tcp-connect:10.0.0.0/8:1", "tcp-connect:10.1.0.0/16:2"]
        )
        with self.assertRaises(PermissionDenied) as caught:
            grants.checkConnect("10.1.2.3", 3)
        self.assertIn("(1-2)", str(caught.exception))

    def test_manyPortsAbbreviated(self) -> None:
        """
        A long list of ports is cut short, saying how many more there are.
        """
        grants = PermissionSet([f"tcp-connect:a:{p}" for p in range(100, 200, 2)])
        with self.assertRaises(PermissionDenied) as caught:
            grants.checkConnect("a", 1)
        self.assertIn("and 42 more", str(caught.exception))

    def test_anyHostPorts(self) -> None:
        """
        With only C{*} grants, the refusal lists their ports.
        """
        with self.assertRaises(PermissionDenied) as caught:
            PermissionSet(["tcp-connect:*:443"]).checkConnect("a", 80)
        self.assertIn("ports granted for any host (443)", str(caught.exception))


class BenchmarkScriptTests(SynchronousTestCase):
    """
    C{benchmarks/bench_permissions.py} (W7) runs and reports its figures.
    """

    def test_jsonReport(self) -> None:
        """
        With C{--json} it prints one JSON object with microseconds per check
        for 10 and 10,000 grants (no speed is asserted here).
        """
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        script = os.path.join(root, "benchmarks", "bench_permissions.py")
        done = subprocess.run(
            [sys.executable, script, "--json", "--repeat", "1", "--probes", "20"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=root,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        report = json.loads(done.stdout)
        for key in ["allowsConnect_us", "allowsConnect_cold_us", "checkResolved_us"]:
            self.assertEqual(sorted(report[key]), ["10", "10000"])
            for value in report[key].values():
                self.assertGreater(value, 0)
        self.assertEqual(report["repetitions"], 1)
        self.assertGreater(report["hit_rate"]["10000"], 0)
        self.assertLess(report["hit_rate"]["10000"], 1)
