# -*- test-case-name: tests.test_hosts -*-
"""
Canonical host names and IP addresses, and the public/non-public address rule.

Every host tcpext compares against a grant goes through L{parseHost} first, so
that one host has exactly one spelling:

  - names are IDNA-encoded (UTS 46 mapping, non-transitional), lower case,
    without a trailing dot;
  - IP addresses are the text of L{ipaddress}, IPv4-mapped IPv6 addresses are
    their IPv4 address, and IPv6 literals are written without brackets;
  - every numeric form that the C library's C{inet_aton} (and so the OS
    resolver) would still read as an IPv4 address but that is not a canonical
    dotted quad (C{2130706433}, C{0x7f000001}, C{0177.0.0.1}, C{127.1}, ...)
    is refused with L{ValueError}, never looked up;
  - an IPv6 zone index (C{fe80::1%eth0}) is kept for dialing but plays no part
    in matching: the address is judged exactly as it would be without it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from functools import lru_cache
from typing import NamedTuple, Union

import idna

__all__ = [
    "DEFAULT_INTERFACE",
    "LOCALHOST_ADDRESSES",
    "IPAddress",
    "IPNetwork",
    "ParsedHost",
    "canonicalHost",
    "describeAddress",
    "formatHostPort",
    "interfaceKey",
    "isIPLiteral",
    "isLocalhostName",
    "isPublicAddress",
    "parseHost",
    "parseIP",
    "parseInterface",
]

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

LOCALHOST_ADDRESSES: tuple[str, ...] = ("127.0.0.1", "::1")
"""
The addresses tcpext dials for C{localhost} (and names under C{.localhost}),
in this order, without asking DNS (RFC 6761, as browsers do).
"""

DEFAULT_INTERFACE = "0.0.0.0"
"""
The interface a listen without one uses: every IPv4 interface (as in the
reference implementation and in Twisted).
"""

_MAX_NAME = 253
_MAX_LABEL = 63
_ASCII_LABEL = re.compile(r"[a-z0-9_-]{1,63}\Z")
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)\Z")
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
# Exactly the canonical dotted quads: four decimal octets, no leading zeros.
_QUAD = re.compile(r"\.".join([_OCTET] * 4) + r"\Z")
# A plain name whose last label starts with a letter: neither inet_aton nor
# the numeric-label rule can read it as an address, and it has no IDNA label.
_PLAIN_NAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z][a-z0-9_-]{0,62}\Z")
_ZONE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


class ParsedHost(NamedTuple):
    """
    A host in canonical form.

    @ivar text: The canonical text: a name, or an IP address without brackets
        (with C{%zone} when one was given).
    @ivar ip: The address without its zone, or L{None} for a name.
    @ivar zone: The IPv6 zone index, or L{None}.
    """

    text: str
    ip: IPAddress | None
    zone: str | None


def _ipv4Of(address: IPAddress) -> IPAddress:
    """
    The IPv4 address of an IPv4-mapped IPv6 address; any other unchanged.
    """
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped
    return address


def _parseNumericV4(text: str) -> ipaddress.IPv4Address | None:
    """
    A canonical dotted quad, or L{None} if C{text} is not one.
    """
    match = _QUAD.match(text)
    if match is None:
        return None
    a, b, c, d = match.groups()
    return ipaddress.IPv4Address(
        (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
    )


def _refuseAlias(text: str, what: str) -> ValueError:
    """
    The error for a numeric host that is not a canonical dotted quad.
    """
    return ValueError(
        f"{text!r} is refused: {what}; tcpext takes IPv4 addresses only as a "
        "canonical dotted quad (four decimal numbers without leading zeros, "
        "like 127.0.0.1) because the system resolver reads other numeric "
        "forms as addresses"
    )


def _inetAtonAccepts(text: str) -> bool:
    """
    Would the C library's C{inet_aton} read C{text} as an IPv4 address?
    """
    if not text[:1].isdigit():
        # Every form inet_aton reads starts with a digit: skip the call.
        return False
    try:
        socket.inet_aton(text)
    except (OSError, ValueError):
        return False
    return True


def _parseIPv6(text: str, original: str) -> ParsedHost:
    """
    Parse an IPv6 literal (no brackets), with an optional zone index.
    """
    zone: str | None = None
    address = text
    if "%" in text:
        address, zone = text.split("%", 1)
        if not _ZONE.match(zone):
            raise ValueError(
                f"{original!r} has an invalid IPv6 zone index {zone!r} "
                "(expected an interface name or number)"
            )
    try:
        ip6 = ipaddress.IPv6Address(address)
    except ValueError as e:
        raise ValueError(f"{original!r} is not a valid IPv6 address: {e}")
    ip = _ipv4Of(ip6)
    if zone is not None and ip.version == 4:
        raise ValueError(
            f"{original!r}: a zone index makes no sense on an IPv4(-mapped) address"
        )
    canonical = str(ip) if zone is None else f"{ip}%{zone}"
    return ParsedHost(canonical, ip, zone)


def _checkName(name: str, original: str) -> str:
    """
    Check an ASCII name (already lower case, no trailing dot) label by label.
    """
    if len(name) > _MAX_NAME:
        raise ValueError(f"{original!r} is too long for a host name")
    if _PLAIN_NAME.match(name) and "xn--" not in name:
        return name
    labels = name.split(".")
    for label in labels:
        if not label:
            raise ValueError(f"{original!r} has an empty label")
        if len(label) > _MAX_LABEL:
            raise ValueError(f"{original!r} has a label longer than 63 characters")
        if not _ASCII_LABEL.match(label):
            raise ValueError(
                f"{original!r} is not a valid host name (labels are letters, "
                "digits, '-' and '_')"
            )
        if label.startswith("xn--"):
            try:
                decoded = idna.decode(label)
                again = idna.encode(decoded, uts46=True).decode("ascii")
            except UnicodeError as e:
                raise ValueError(f"{original!r} has an invalid IDNA label: {e}")
            if again != label:
                raise ValueError(
                    f"{original!r} has a non-canonical IDNA label {label!r} "
                    f"(canonical: {again!r})"
                )
    if _NUMERIC_LABEL.match(labels[-1]) or _inetAtonAccepts(name):
        raise _refuseAlias(original, "a numeric host that is not a canonical address")
    return name


@lru_cache(maxsize=8192)
def _parseHostCached(text: str) -> ParsedHost:
    """
    The cached body of L{parseHost} (canonicalization is a pure function).
    """
    original = text
    if not text:
        raise ValueError("the host is empty")
    if text.startswith("[") or text.endswith("]"):
        if not (text.startswith("[") and text.endswith("]")) or len(text) < 3:
            raise ValueError(f"{original!r} has unbalanced brackets")
        inner = text[1:-1]
        if ":" not in inner:
            raise ValueError(f"{original!r}: brackets are only for IPv6 addresses")
        return _parseIPv6(inner, original)
    if ":" in text or "%" in text:
        return _parseIPv6(text, original)
    v4 = _parseNumericV4(text)
    if v4 is not None:
        return ParsedHost(text, v4, None)
    if text.isascii():
        if text.endswith("."):
            text = text[:-1]
        name = text.lower()
        if not name:
            raise ValueError(f"{original!r} is not a host name")
        if _parseNumericV4(name) is not None:
            raise _refuseAlias(original, "an IPv4 address with a trailing dot")
        if _inetAtonAccepts(original):
            raise _refuseAlias(original, "a non-canonical numeric address")
        return ParsedHost(_checkName(name, original), None, None)
    # Non-ASCII: UTS 46 mapping (case folding, full-width forms, ideographic
    # full stops) then IDNA 2008 encoding, done by the idna package.
    try:
        encoded = idna.encode(text, uts46=True, transitional=False).decode("ascii")
    except UnicodeError as e:
        raise ValueError(f"{original!r} is not a valid internationalized name: {e}")
    if encoded.endswith("."):
        encoded = encoded[:-1]
    if _parseNumericV4(encoded) is not None or ":" in encoded:
        raise _refuseAlias(original, "an address written with non-ASCII characters")
    return ParsedHost(_checkName(encoded, original), None, None)


def parseHost(text: str) -> ParsedHost:
    """
    Parse a host name or IP literal into its canonical form.

    @param text: A name (C{example.com}, C{bücher.example}), an IPv4 dotted
        quad, or an IPv6 address with or without brackets, optionally with a
        zone index.
    @raise TypeError: If C{text} is not a L{str}.
    @raise ValueError: If C{text} is not a valid host or is a non-canonical
        numeric form; the message says what is wrong.
    """
    if text.__class__ is not str:
        if not isinstance(text, str):
            raise TypeError(f"a host must be a str, not {type(text).__name__}")
        # A str subclass may redefine equality, hashing or its text: only
        # its plain characters count (and only they reach the cache).
        text = str.__str__(text)
    return _parseHostCached(text)


def canonicalHost(text: str) -> str:
    """
    The canonical text of a host name or IP literal.

    Names are lower case, IDNA-encoded, without a trailing dot; IP addresses
    are the canonical text (IPv6 without brackets, IPv4-mapped as IPv4).

    @param text: See L{parseHost}.
    @raise ValueError: As L{parseHost}.
    """
    return parseHost(text).text


def isIPLiteral(text: str) -> bool:
    """
    Is C{text} a valid IP literal (IPv4, or IPv6 with or without brackets or
    zone index)?

    @return: C{True} if L{canonicalHost} would give an IP address; C{False}
        for names and for anything invalid (including non-canonical numeric
        forms such as C{127.1}, which L{canonicalHost} refuses).
    """
    try:
        return parseHost(text).ip is not None
    except (TypeError, ValueError):
        return False


def isLocalhostName(text: str) -> bool:
    """
    Is C{text} the name C{localhost} or a name under it (C{app.localhost})?

    tcpext never asks DNS for these names: they mean the loopback addresses
    L{LOCALHOST_ADDRESSES} (RFC 6761 section 6.3).
    """
    try:
        host = parseHost(text)
    except (TypeError, ValueError):
        return False
    return host.ip is None and (
        host.text == "localhost" or host.text.endswith(".localhost")
    )


def parseIP(text: str) -> IPAddress:
    """
    Parse an IP address (canonical rules of L{parseHost}; zone ignored).

    @raise ValueError: If C{text} is not a valid IP address.
    """
    host = parseHost(text)
    if host.ip is None:
        raise ValueError(f"{text!r} is a name, not an IP address")
    return host.ip


def parseInterface(host: str | None) -> ParsedHost | None:
    """
    Parse the interface of a listen: an IP address (IPv6 with or without
    brackets; a zone index is kept for binding), or L{None} / C{""} for the
    default (L{DEFAULT_INTERFACE}).

    @return: The canonical interface, or L{None} for the default.
    @raise ValueError: C{host} is a name or not a valid address; the message
        names it.
    @raise TypeError: C{host} is not a L{str}.
    """
    if host is None or (isinstance(host, str) and not str.__len__(host)):
        return None
    parsed = parseHost(host)
    if parsed.ip is None:
        raise ValueError(
            f"the listen interface {host!r} must be the IP address of an "
            "interface, not a name"
        )
    return parsed


def interfaceKey(interface: ParsedHost | None) -> str:
    """
    The address a listen grant is matched against: the interface's address
    without zone, or L{DEFAULT_INTERFACE}.
    """
    if interface is None:
        return DEFAULT_INTERFACE
    return str(interface.ip)


def formatHostPort(host: str, port: object) -> str:
    """
    C{host:port}, with brackets around an IPv6 host.
    """
    if host.startswith("["):
        return f"{host}:{port}"
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


# Non-public ranges beyond what ipaddress flags (its flags also vary between
# Python releases; these make the rule the same everywhere).
_NON_PUBLIC_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(n), why)
    for n, why in [
        ("0.0.0.0/8", "unspecified/this network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "CGNAT shared address space"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    ]
)

_NON_PUBLIC_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(n), why)
    for n, why in [
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/8", "reserved (IPv4-compatible, local-use NAT64 and others)"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignment"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing"),
        ("fc00::/7", "unique local (ULA)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    ]
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")


@lru_cache(maxsize=8192)
def _whyNotPublic(address: IPAddress) -> str | None:
    """
    Why C{address} is not public, or L{None} if it is.
    """
    address = _ipv4Of(address)
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            why = _whyNotPublic(embedded)
            return None if why is None else f"NAT64 form of {embedded} ({why})"
        sixtofour = address.sixtofour
        if sixtofour is not None:
            why = _whyNotPublic(sixtofour)
            return None if why is None else f"6to4 form of {sixtofour} ({why})"
        if address in _TEREDO:
            teredo = address.teredo
            assert teredo is not None
            for embedded in teredo:
                why = _whyNotPublic(embedded)
                if why is not None:
                    return f"Teredo form of {embedded} ({why})"
            return None
        for network6, why in _NON_PUBLIC_V6:
            if address in network6:
                return why
    else:
        for network4, why in _NON_PUBLIC_V4:
            if address in network4:
                return why
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not globally reachable"
    return None


def describeAddress(ip: str | IPAddress) -> str:
    """
    Why an address is not public (C{"loopback"}, C{"private"}, ...), or
    C{"public"}.

    @raise ValueError: If C{ip} is not a valid IP address.
    """
    address = ip if not isinstance(ip, str) else parseIP(ip)
    return _whyNotPublic(address) or "public"


def isPublicAddress(ip: str | IPAddress) -> bool:
    """
    Is C{ip} a public (globally reachable unicast) address?

    Not public: loopback, private, link-local, unspecified, CGNAT
    (100.64.0.0/10), unique local, site-local, multicast, broadcast, reserved,
    documentation and benchmarking ranges, and the IPv4-mapped, NAT64
    (C{64:ff9b::/96}), 6to4 (C{2002::/16}) and Teredo forms of any of those.
    This is L{ipaddress}'s C{is_global} plus those extras.

    @param ip: An IP address (text in any form L{canonicalHost} accepts, or an
        L{ipaddress} address object).
    @raise ValueError: If C{ip} is not a valid IP address.
    """
    address = ip if not isinstance(ip, str) else parseIP(ip)
    return _whyNotPublic(address) is None
