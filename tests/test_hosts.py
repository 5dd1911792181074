# -*- test-case-name: tests.test_hosts -*-
"""
Tests for L{tcpext._hosts}: canonical hosts, numeric alias refusal and the
public address rule.
"""

from __future__ import annotations

import ipaddress
import socket

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tcpext._hosts import (
    LOCALHOST_ADDRESSES,
    canonicalHost,
    describeAddress,
    formatHostPort,
    isIPLiteral,
    isLocalhostName,
    isPublicAddress,
    parseHost,
    parseIP,
)


def _inetAton(text: str) -> bytes | None:
    """
    What C{inet_aton} reads C{text} as, or L{None} if it refuses it.
    """
    try:
        return socket.inet_aton(text)
    except (OSError, ValueError):
        return None


class CanonicalHostTests(SynchronousTestCase):
    """
    L{canonicalHost} gives one spelling per host.
    """

    def test_names(self) -> None:
        """
        Names are lower case, without a trailing dot.
        """
        self.assertEqual(canonicalHost("Example.COM."), "example.com")
        self.assertEqual(canonicalHost("a-b_c.example"), "a-b_c.example")
        self.assertEqual(canonicalHost("localhost"), "localhost")

    def test_idna(self) -> None:
        """
        Internationalized names are IDNA-encoded; the encoded form is already
        canonical.
        """
        self.assertEqual(canonicalHost("bücher.example"), "xn--bcher-kva.example")
        self.assertEqual(canonicalHost("BÜCHER.example"), "xn--bcher-kva.example")
        self.assertEqual(
            canonicalHost("XN--BCHER-KVA.example"), "xn--bcher-kva.example"
        )
        self.assertEqual(canonicalHost("straße.example"), "xn--strae-oqa.example")

    def test_uts46Mapping(self) -> None:
        """
        UTS 46 maps full-width letters and ideographic full stops to their
        plain forms, so those spellings are the same name.
        """
        self.assertEqual(
            canonicalHost("\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com"),
            "example.com",
        )
        self.assertEqual(canonicalHost("a\u3002example.com"), "a.example.com")

    def test_homograph(self) -> None:
        """
        A look-alike made of other scripts' letters is a different name.
        """
        self.assertEqual(canonicalHost("\u0435xample.com"), "xn--xample-2of.com")
        self.assertNotEqual(canonicalHost("\u0435xample.com"), "example.com")

    def test_invalidNames(self) -> None:
        """
        Empty labels, bad characters, over-long labels and names, and broken
        IDNA labels are refused with a message naming the host.
        """
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "a b",
            "a/b",
            "a*b.com",
            "x" * 64 + ".com",
            ".".join(["abcdefghi"] * 26),
            "xn--abc",
            "xn--bcher-kva\u00fc.example",
            "[a.example]",
        ]:
            with self.assertRaises(ValueError, msg=bad) as caught:
                canonicalHost(bad)
            self.assertTrue(str(caught.exception), bad)

    def test_notAString(self) -> None:
        """
        A non-string host is a L{TypeError}.
        """
        self.assertRaises(TypeError, canonicalHost, b"example.com")
        self.assertRaises(TypeError, canonicalHost, 2130706433)

    def test_ipv4(self) -> None:
        """
        A canonical dotted quad is itself.
        """
        self.assertEqual(canonicalHost("127.0.0.1"), "127.0.0.1")
        self.assertEqual(canonicalHost("0.0.0.0"), "0.0.0.0")

    def test_ipv6(self) -> None:
        """
        IPv6 addresses are compressed, lower case, without brackets.
        """
        self.assertEqual(canonicalHost("[::1]"), "::1")
        self.assertEqual(canonicalHost("0:0:0:0:0:0:0:1"), "::1")
        self.assertEqual(canonicalHost("[FD00:0::AB]"), "fd00::ab")

    def test_ipv4Mapped(self) -> None:
        """
        An IPv4-mapped IPv6 address is its IPv4 address, in either spelling.
        """
        self.assertEqual(canonicalHost("::ffff:127.0.0.1"), "127.0.0.1")
        self.assertEqual(canonicalHost("[::ffff:7f00:1]"), "127.0.0.1")
        self.assertEqual(canonicalHost("::FFFF:1.2.3.4"), "1.2.3.4")

    def test_zoneIndex(self) -> None:
        """
        A zone index is kept in the text but not in the address.
        """
        host = parseHost("[FE80::1%eth0]")
        self.assertEqual(host.text, "fe80::1%eth0")
        self.assertEqual(host.ip, ipaddress.IPv6Address("fe80::1"))
        self.assertEqual(host.zone, "eth0")

    def test_badZoneIndex(self) -> None:
        """
        Zone indexes with odd characters, empty ones, and zones on IPv4 or
        IPv4-mapped addresses are refused.
        """
        for bad in [
            "fe80::1%",
            "fe80::1%eth0]",
            "fe80::1%a b",
            "fe80::1%x/y",
            "fe80::1%eth0%1",
            "::ffff:1.2.3.4%eth0",
            "1.2.3.4%eth0",
        ]:
            self.assertRaises(ValueError, canonicalHost, bad)

    def test_badBrackets(self) -> None:
        """
        Brackets must balance and hold an IPv6 address.
        """
        for bad in ["[::1", "::1]", "[]", "[1.2.3.4]", "[[::1]]"]:
            self.assertRaises(ValueError, canonicalHost, bad)

    def test_numericAliases(self) -> None:
        """
        Every numeric spelling the resolver reads as IPv4 but which is not a
        canonical dotted quad is refused, and the message says why.
        """
        for alias in [
            "2130706433",
            "0x7f000001",
            "0X7F000001",
            "0177.0.0.1",
            "127.1",
            "127.0.1",
            "127.0.0.01",
            "0x7f.1",
            "0x7f.0.0.1",
            "017700000001",
            "1.2.3.4.",
            "0",
            "0x",
            "1.2.3.4 trailing",
            "\uff11\uff12\uff17.0.0.1",
        ]:
            with self.assertRaises(ValueError, msg=alias) as caught:
                canonicalHost(alias)
            self.assertIn(repr(alias), str(caught.exception))
            self.assertIn("canonical", str(caught.exception))

    def test_numericLastLabel(self) -> None:
        """
        A name whose last label is numeric is refused even when inet_aton
        would not read it (it is not a name anyone can register).
        """
        self.assertRaises(ValueError, canonicalHost, "example.123")
        self.assertRaises(ValueError, canonicalHost, "example.0x1f")
        self.assertEqual(canonicalHost("123.example"), "123.example")

    @given(
        st.text(alphabet="0123456789abcdefxX. \t\n", min_size=1, max_size=20),
    )
    @settings(max_examples=500, deadline=None)
    def test_inetAtonAcceptsOnlyCanonical(self, text: str) -> None:
        """
        If inet_aton reads C{text}, then either C{text} is the canonical dotted
        quad of what it reads, or L{canonicalHost} refuses it; whatever
        L{canonicalHost} takes as an IPv4 address is such a dotted quad.
        """
        packed = _inetAton(text)
        if packed is not None and text != socket.inet_ntoa(packed):
            self.assertRaises(ValueError, canonicalHost, text)
            return
        try:
            host = parseHost(text)
        except ValueError:
            return
        if host.ip is not None:
            self.assertEqual(host.text, text)
            self.assertIsNotNone(packed)

    @given(
        st.one_of(
            st.text(alphabet="0123456789abcdefxX.:% \t", min_size=1, max_size=24),
            st.ip_addresses().map(str),
            st.ip_addresses(v=6).map(lambda a: f"{a}%lo"),
        )
    )
    @settings(max_examples=500, deadline=None)
    def test_resolverNumericFormsAreAddresses(self, text: str) -> None:
        """
        Whatever the system resolver reads as a numeric address (C{getaddrinfo}
        with C{AI_NUMERICHOST}, which never asks DNS) is either refused or
        taken as that same address, never as a name.
        """
        try:
            infos = socket.getaddrinfo(
                text, 80, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
            )
        except (OSError, UnicodeError, ValueError):
            infos = []
        try:
            host = parseHost(text)
        except ValueError:
            return
        if not infos:
            return
        self.assertIsNotNone(host.ip, text)
        resolved = str(infos[0][4][0]).split("%", 1)[0]
        self.assertEqual(host.ip, parseIP(resolved), text)

    @given(
        st.lists(
            st.one_of(
                st.integers(0, 0xFFFFFFFF).map(str),
                st.integers(0, 0xFFFFFFFF).map(hex),
                st.integers(0, 0o37777777777).map(lambda n: "0" + format(n, "o")),
                st.integers(0, 255).map(str),
            ),
            min_size=1,
            max_size=4,
        ).map(".".join)
    )
    @settings(max_examples=500, deadline=None)
    def test_numericFormsAreCanonicalOrRefused(self, text: str) -> None:
        """
        Any mix of decimal, octal and hexadecimal parts: accepted only as the
        canonical dotted quad, which means the same address to inet_aton.
        """
        packed = _inetAton(text)
        try:
            result = canonicalHost(text)
        except ValueError:
            return
        self.assertEqual(result, text)
        self.assertIsNotNone(packed)
        assert packed is not None
        self.assertEqual(socket.inet_ntoa(packed), text)

    @given(st.ip_addresses())
    @settings(max_examples=300, deadline=None)
    def test_canonicalIsFixedPoint(self, address: object) -> None:
        """
        The canonical text of any address is canonical; IPv6 with and without
        brackets agree.
        """
        text = str(address)
        once = canonicalHost(text)
        self.assertEqual(canonicalHost(once), once)
        if ":" in text:
            self.assertEqual(canonicalHost(f"[{text}]"), once)


class PredicateTests(SynchronousTestCase):
    """
    L{isIPLiteral}, L{isLocalhostName}, L{parseIP}, L{formatHostPort}.
    """

    def test_isIPLiteral(self) -> None:
        """
        IP literals in every accepted spelling are; names and invalid or
        non-canonical numeric hosts are not.
        """
        for yes in ["1.2.3.4", "::1", "[::1]", "fe80::1%eth0", "::ffff:1.2.3.4"]:
            self.assertTrue(isIPLiteral(yes), yes)
        for no in ["example.com", "127.1", "2130706433", "", "[1.2.3.4]", "a b"]:
            self.assertFalse(isIPLiteral(no), no)

    def test_isLocalhostName(self) -> None:
        """
        C{localhost} and names under it, in any case, with a trailing dot.
        """
        for yes in ["localhost", "LOCALHOST.", "app.localhost"]:
            self.assertTrue(isLocalhostName(yes), yes)
        for no in ["localhost.example", "mylocalhost", "127.0.0.1", "::1", "a b"]:
            self.assertFalse(isLocalhostName(no), no)

    def test_localhostAddresses(self) -> None:
        """
        The addresses for C{localhost} are IPv4 then IPv6 loopback.
        """
        self.assertEqual(LOCALHOST_ADDRESSES, ("127.0.0.1", "::1"))
        for address in LOCALHOST_ADDRESSES:
            self.assertTrue(parseIP(address).is_loopback)

    def test_parseIPRefusesNames(self) -> None:
        """
        L{parseIP} wants an address.
        """
        self.assertEqual(parseIP("[::ffff:1.2.3.4]"), ipaddress.ip_address("1.2.3.4"))
        self.assertRaises(ValueError, parseIP, "example.com")

    def test_formatHostPort(self) -> None:
        """
        IPv6 hosts get brackets.
        """
        self.assertEqual(formatHostPort("::1", 80), "[::1]:80")
        self.assertEqual(formatHostPort("[::1]", 80), "[::1]:80")
        self.assertEqual(formatHostPort("example.com", 80), "example.com:80")


class PublicAddressTests(SynchronousTestCase):
    """
    L{isPublicAddress} and L{describeAddress}.
    """

    def test_public(self) -> None:
        """
        Ordinary global unicast addresses are public, also in their NAT64
        and IPv4-mapped forms.
        """
        for address in [
            "8.8.8.8",
            "93.184.216.34",
            "2606:4700::1",
            "2a00:1450:4001:81a::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ]:
            self.assertTrue(isPublicAddress(address), address)
            self.assertEqual(describeAddress(address), "public")

    def test_notPublic(self) -> None:
        """
        Every special-purpose range, and embeddings of them, is not public;
        L{describeAddress} says which.
        """
        cases = {
            "127.0.0.1": "loopback",
            "127.255.0.9": "loopback",
            "::1": "loopback",
            "::ffff:127.0.0.1": "loopback",
            "::ffff:7f00:1": "loopback",
            "0.0.0.0": "unspecified",
            "::": "unspecified",
            "10.0.0.1": "private",
            "172.16.0.1": "private",
            "192.168.1.1": "private",
            "169.254.169.254": "link-local",
            "fe80::1": "link-local",
            "fe80::1%eth0": "link-local",
            "100.64.0.1": "CGNAT",
            "fd00::1": "unique local",
            "fec0::1": "site-local",
            "224.0.0.1": "multicast",
            "ff02::1": "multicast",
            "240.0.0.1": "reserved",
            "255.255.255.255": "broadcast",
            "192.0.2.1": "documentation",
            "198.51.100.1": "documentation",
            "203.0.113.1": "documentation",
            "2001:db8::1": "documentation",
            "198.18.0.1": "benchmarking",
            "64:ff9b::7f00:1": "NAT64 form of 127.0.0.1",
            "64:ff9b::a00:1": "NAT64 form of 10.0.0.1",
            "64:ff9b:1::1": "reserved",
            "2002:7f00:1::": "6to4 form of 127.0.0.1",
            "2002:a9fe:a9fe::1": "6to4 form of 169.254.169.254",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2": "Teredo",
            "::7f00:1": "reserved",
            "100::1": "discard",
        }
        for address, why in cases.items():
            self.assertFalse(isPublicAddress(address), address)
            self.assertIn(why, describeAddress(address), address)

    def test_acceptsAddressObjects(self) -> None:
        """
        L{ipaddress} objects work as well as text.
        """
        self.assertFalse(isPublicAddress(ipaddress.ip_address("10.1.1.1")))
        self.assertTrue(isPublicAddress(ipaddress.ip_address("1.1.1.1")))

    def test_invalid(self) -> None:
        """
        Names and bad text are a L{ValueError}, not an answer.
        """
        self.assertRaises(ValueError, isPublicAddress, "example.com")
        self.assertRaises(ValueError, isPublicAddress, "127.1")

    @given(st.ip_addresses())
    @settings(max_examples=500, deadline=None)
    def test_agreesWithIsGlobal(self, address: object) -> None:
        """
        Whatever L{ipaddress} says is not global is not public (tcpext only
        adds to that list), and a public address is never loopback, private,
        link-local, multicast or unspecified.
        """
        assert isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address))
        public = isPublicAddress(str(address))
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        # NAT64, 6to4 and Teredo are judged by the address they embed.
        special = isinstance(address, ipaddress.IPv6Address) and (
            address in ipaddress.ip_network("64:ff9b::/96")
            or address.sixtofour is not None
            or address.teredo is not None
        )
        assume(not special)
        if not address.is_global:
            self.assertFalse(public, address)
        if public:
            self.assertFalse(
                address.is_loopback
                or address.is_private
                or address.is_link_local
                or address.is_multicast
                or address.is_unspecified,
                address,
            )
