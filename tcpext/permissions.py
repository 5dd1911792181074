# -*- test-case-name: tests.test_permissions -*-
"""
The tcpext permission system: the C{tcp-connect:} / C{tcp-listen:} grammar,
canonical hosts, L{PermissionSet} (indexed matching) and the DNS rebinding
rule.

Grammar::

    tcp-connect:HOST:PORT   HOST := * | name | *.name | IPv4 | [IPv6]
                                    | CIDR | [IPv6-CIDR]
    tcp-listen:PORT         PORT := * | N | N-M   (1 <= N <= M <= 65535)
    tcp-listen:HOST:PORT    HOST := * | IPv4 | [IPv6]   (the interface)

See C{docs/permissions.md} for the rules in prose.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal, Union

import attrs

from tcpext._hosts import (
    DEFAULT_INTERFACE,
    LOCALHOST_ADDRESSES,
    IPAddress,
    IPNetwork,
    ParsedHost,
    _parseHostCached,
    _whyNotPublic,
    canonicalHost,
    describeAddress,
    formatHostPort,
    interfaceKey,
    isIPLiteral,
    isLocalhostName,
    isPublicAddress,
    parseHost,
    parseInterface,
)

__all__ = [
    "LOCALHOST_ADDRESSES",
    "Permission",
    "PermissionDenied",
    "PermissionSet",
    "canonicalHost",
    "describeAddress",
    "formatHostPort",
    "isIPLiteral",
    "isLocalhostName",
    "isPublicAddress",
    "parseManifestPermissions",
    "parsePermission",
]

MIN_PORT = 1
MAX_PORT = 65535

_PORT_NUMBER = re.compile(r"[1-9][0-9]{0,4}\Z")
_CIDR_PREFIX = re.compile(r"(?:0|[1-9][0-9]{0,2})\Z")


class PermissionDenied(Exception):
    """
    An operation was refused because no grant allows it.

    The message contains C{"permission denied"}, the denied C{host:port} and,
    when relevant, the resolved address that was refused and why.
    """


@attrs.frozen(order=False)
class Permission:
    """
    One C{tcp-connect:} or C{tcp-listen:} grant, in canonical form.

    Two permissions are equal exactly when their canonical texts
    (C{str(permission)}) are, and C{parsePermission(str(p)) == p}.

    @ivar kind: C{"connect"} or C{"listen"}.
    @ivar host: The canonical host: C{"*"}, a name, C{"*.name"}, an IP address
        or a CIDR network (IPv6 without brackets); for C{listen}, L{None}
        means any interface.
    @ivar portLow: The first port allowed.
    @ivar portHigh: The last port allowed (C{portLow == portHigh} for one
        port; C{1}-C{65535} is written C{*}).
    """

    kind: Literal["connect", "listen"]
    host: str | None
    portLow: int
    portHigh: int

    def __attrs_post_init__(self) -> None:
        """
        Refuse values that are not canonical, so that a L{Permission} built
        directly matches exactly what its text says.

        @raise ValueError: A field is invalid or not in canonical form (use
            L{parsePermission} to build one from text).
        """
        for port in (self.portLow, self.portHigh):
            if port.__class__ is not int or not MIN_PORT <= port <= MAX_PORT:
                raise ValueError(f"invalid port {port!r} in a Permission")
        if self.portLow > self.portHigh:
            raise ValueError("a Permission's portLow must be <= portHigh")
        host = self.host
        if self.kind == "connect":
            if not isinstance(host, str):
                raise ValueError("a tcp-connect Permission needs a host")
            text = f"[{host}]" if ":" in host else host
            canonical: str | None = _parseConnectHost(f"tcp-connect:{text}:*", text)
        elif self.kind == "listen":
            if host is None:
                return
            if not isinstance(host, str):
                raise ValueError(f"invalid listen host {host!r}")
            text = f"[{host}]" if ":" in host else host
            canonical = _parseListenHost(f"tcp-listen:{text}:*", text)
        else:
            raise ValueError(f"unknown permission kind {self.kind!r}")
        if canonical != host:
            raise ValueError(
                f"{host!r} is not the canonical host {canonical!r}; build "
                "permissions with parsePermission()"
            )

    def __str__(self) -> str:
        """
        The canonical text, e.g. C{tcp-connect:[::1]:80}.
        """
        if self.portLow == MIN_PORT and self.portHigh == MAX_PORT:
            port = "*"
        elif self.portLow == self.portHigh:
            port = str(self.portLow)
        else:
            port = f"{self.portLow}-{self.portHigh}"
        if self.host is None:
            return f"tcp-{self.kind}:{port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp-{self.kind}:{host}:{port}"

    @property
    def allPorts(self) -> bool:
        """
        Does this grant cover every port (C{*})?
        """
        return self.portLow == MIN_PORT and self.portHigh == MAX_PORT

    def coversPort(self, port: int) -> bool:
        """
        Is C{port} within this grant's port range?
        """
        return self.portLow <= port <= self.portHigh


def _invalid(entry: str, why: str) -> ValueError:
    """
    The L{ValueError} for an invalid C{tcp-*} entry: names it and says why.
    """
    return ValueError(f"invalid permission {entry!r}: {why}")


def _parsePort(entry: str, text: str) -> tuple[int, int]:
    """
    Parse C{*}, C{N} or C{N-M}.
    """
    if text == "*":
        return MIN_PORT, MAX_PORT
    if not text:
        raise _invalid(entry, "the port is missing (expected *, N or N-M)")
    low, dash, high = text.partition("-")
    for part in (low, high) if dash else (low,):
        if not _PORT_NUMBER.match(part) or not MIN_PORT <= int(part) <= MAX_PORT:
            raise _invalid(
                entry,
                f"{part!r} is not a port number (1..65535, no sign or leading "
                "zeros; the port is *, N or N-M)",
            )
    first = int(low)
    last = int(high) if dash else first
    if first > last:
        raise _invalid(entry, f"the port range {text} is empty (N must be <= M)")
    return first, last


def _parseNetwork(entry: str, text: str) -> str:
    """
    Parse a CIDR network (no brackets); its canonical text.
    """
    address, _, prefix = text.partition("/")
    if not _CIDR_PREFIX.match(prefix):
        raise _invalid(entry, f"{prefix!r} is not a CIDR prefix length")
    try:
        host = parseHost(address)
    except ValueError as e:
        raise _invalid(entry, str(e))
    if host.ip is None or host.zone is not None:
        raise _invalid(entry, f"{address!r} is not an IP network address")
    length = int(prefix)
    if ":" in address and host.ip.version == 4:
        # An IPv4-mapped IPv6 network is the IPv4 network it maps.
        if length < 96:
            raise _invalid(
                entry,
                "an IPv6 network that contains the IPv4-mapped range only in "
                "part is ambiguous: write the IPv4 network instead",
            )
        length -= 96
    try:
        network = ipaddress.ip_network(f"{host.ip}/{length}", strict=True)
    except ValueError as e:
        raise _invalid(entry, f"{text!r} is not a valid network: {e}")
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _parseConnectHost(entry: str, text: str) -> str:
    """
    Parse the HOST of a C{tcp-connect:} entry; its canonical text.
    """
    if text == "*":
        return "*"
    if not text:
        raise _invalid(entry, "the host is missing")
    if text.startswith("["):
        if not text.endswith("]"):
            raise _invalid(entry, f"{text!r} has unbalanced brackets")
        inner = text[1:-1]
        if "/" in inner:
            if ":" not in inner:
                raise _invalid(entry, "brackets are only for IPv6 networks")
            return _parseNetwork(entry, inner)
        if "%" in inner:
            raise _invalid(entry, "a grant cannot name an IPv6 zone index")
    elif "/" in text:
        return _parseNetwork(entry, text)
    if text.startswith("*."):
        try:
            name = parseHost(text[2:])
        except ValueError as e:
            raise _invalid(entry, str(e))
        if name.ip is not None:
            raise _invalid(
                entry, "a wildcard '*.' must be followed by a name, not an IP"
            )
        return "*." + name.text
    if "*" in text:
        raise _invalid(entry, "the host wildcard is '*' alone or '*.' before a name")
    try:
        host = parseHost(text)
    except ValueError as e:
        raise _invalid(entry, str(e))
    return host.text


def _parseListenHost(entry: str, text: str) -> str | None:
    """
    Parse the HOST of a C{tcp-listen:HOST:PORT} entry (an interface).
    """
    if text == "*":
        return None
    if not text:
        raise _invalid(entry, "the interface is missing")
    if "%" in text:
        raise _invalid(entry, "a grant cannot name an IPv6 zone index")
    try:
        host = parseHost(text)
    except ValueError as e:
        raise _invalid(entry, str(e))
    if host.ip is None:
        raise _invalid(
            entry, "the listen host is an interface address (IPv4, [IPv6] or *)"
        )
    return host.text


def _splitHostPort(entry: str, rest: str) -> tuple[str | None, str]:
    """
    Split C{HOST:PORT} (HOST may be a bracketed IPv6 literal) or C{PORT}.
    """
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise _invalid(entry, "missing ']' after the IPv6 address")
        host, after = rest[: close + 1], rest[close + 1 :]
        if not after.startswith(":"):
            raise _invalid(entry, "expected ':PORT' after the ']'")
        return host, after[1:]
    parts = rest.split(":")
    if len(parts) == 1:
        return None, rest
    if len(parts) == 2:
        return parts[0], parts[1]
    raise _invalid(entry, "too many ':' (write IPv6 addresses in brackets: [::1]:80)")


def parsePermission(text: str) -> Permission:
    """
    Parse one C{tcp-connect:} or C{tcp-listen:} entry.

    @raise ValueError: The entry is not valid; the message names the entry
        and says what is wrong.
    @raise TypeError: C{text} is not a L{str}.
    """
    if not isinstance(text, str):
        raise TypeError(f"a permission must be a str, not {type(text).__name__}")
    kind, colon, rest = text.partition(":")
    if not colon:
        raise _invalid(text, "expected tcp-connect:HOST:PORT or tcp-listen:PORT")
    if kind == "tcp-connect":
        host, port = _splitHostPort(text, rest)
        if host is None:
            raise _invalid(text, "tcp-connect needs a HOST and a PORT: HOST:PORT")
        return Permission(
            "connect", _parseConnectHost(text, host), *_parsePort(text, port)
        )
    if kind == "tcp-listen":
        host, port = _splitHostPort(text, rest)
        listenHost = None if host is None else _parseListenHost(text, host)
        return Permission("listen", listenHost, *_parsePort(text, port))
    raise _invalid(
        text, f"unknown permission kind {kind!r} (tcp-connect or tcp-listen)"
    )


def _isTCPEntry(entry: str) -> bool:
    """
    Is this manifest entry meant as a C{tcp-*} permission (even if misspelt)?
    """
    return entry.strip().lower().startswith("tcp-")


def parseManifestPermissions(
    entries: Iterable[object],
) -> tuple[list[Permission], list[str]]:
    """
    Parse a manifest's C{permissions} (or C{optional_permissions}) list.

    @return: The C{tcp-*} permissions (in order, duplicates dropped) and the
        other entries, which tcpext ignores (the caller logs them).
    @raise ValueError: A C{tcp-*} entry is invalid (the message names it), or
        C{entries} is a string rather than a list.
    @raise TypeError: An entry is not a string (the message names it).
    """
    if isinstance(entries, (str, bytes)):
        raise TypeError("permissions must be a list of strings, not a string")
    permissions: list[Permission] = []
    ignored: list[str] = []
    seen: set[Permission] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise TypeError(
                f"permission entry {index} ({entry!r}) is a "
                f"{type(entry).__name__}, not a string"
            )
        if _isTCPEntry(entry):
            permission = parsePermission(entry)
            if permission not in seen:
                seen.add(permission)
                permissions.append(permission)
        else:
            ignored.append(entry)
    return permissions, ignored


class _Ports:
    """
    The port ranges granted for one host key: a set of single ports plus
    merged ranges searched with L{bisect}, and the grant behind each range.
    """

    __slots__ = ("_ranges", "_singles", "_starts", "_ends", "_dirty", "_grants")

    def __init__(self) -> None:
        self._ranges: set[tuple[int, int]] = set()
        self._singles: set[int] = set()
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._dirty = False
        self._grants: dict[tuple[int, int], Permission] = {}

    def add(self, permission: Permission) -> None:
        """
        Add the port range of C{permission}.
        """
        low, high = permission.portLow, permission.portHigh
        self._grants[(low, high)] = permission
        if low == high:
            self._singles.add(low)
        else:
            self._ranges.add((low, high))
            self._dirty = True

    def discard(self, permission: Permission) -> None:
        """
        Remove the port range of a permission added before.
        """
        low, high = permission.portLow, permission.portHigh
        self._grants.pop((low, high), None)
        if low == high:
            self._singles.discard(low)
        else:
            self._ranges.discard((low, high))
            self._dirty = True

    def grantFor(self, port: int) -> Permission | None:
        """
        The grant that covers C{port}: the single port if there is one,
        else the narrowest range.
        """
        grants = self._grants
        single = grants.get((port, port))
        if single is not None:
            return single
        best: Permission | None = None
        for (low, high), permission in grants.items():
            if low <= port <= high and (
                best is None or high - low < best.portHigh - best.portLow
            ):
                best = permission
        return best

    def widest(self) -> Permission | None:
        """
        The grant with the widest port range.
        """
        return max(
            self._grants.values(),
            key=lambda p: p.portHigh - p.portLow,
            default=None,
        )

    def __bool__(self) -> bool:
        """
        Is any port left?
        """
        return bool(self._singles or self._ranges)

    def _rebuild(self) -> None:
        """
        Merge the ranges into sorted, disjoint C{starts}/C{ends} lists.
        """
        starts: list[int] = []
        ends: list[int] = []
        for low, high in sorted(self._ranges):
            if ends and low <= ends[-1] + 1:
                ends[-1] = max(ends[-1], high)
            else:
                starts.append(low)
                ends.append(high)
        self._starts, self._ends = starts, ends
        self._dirty = False

    def coversAll(self) -> bool:
        """
        Do these ranges and single ports together cover 1..65535?
        """
        covered = MIN_PORT - 1
        for low, high in self.pieces():
            if low > covered + 1:
                return False
            covered = max(covered, high)
        return covered >= MAX_PORT

    def pieces(self) -> list[tuple[int, int]]:
        """
        The granted ranges and single ports, sorted.
        """
        return sorted([*self._ranges, *((p, p) for p in self._singles)])

    def __contains__(self, port: int) -> bool:
        """
        Is C{port} granted?
        """
        if port in self._singles:
            return True
        if not self._ranges:
            return False
        if self._dirty:
            self._rebuild()
        i = bisect.bisect_right(self._starts, port) - 1
        return i >= 0 and port <= self._ends[i]


_Key = Union[str, tuple[int, int, int]]


class _Index:
    """
    One kind of host index: a dict of L{_Ports} by key, created on demand and
    dropped when empty.
    """

    __slots__ = ("ports",)

    def __init__(self) -> None:
        self.ports: dict[_Key, _Ports] = {}

    def add(self, key: _Key, permission: Permission) -> None:
        """
        Grant the ports of C{permission} for C{key}.
        """
        ports = self.ports.get(key)
        if ports is None:
            ports = self.ports[key] = _Ports()
        ports.add(permission)

    def discard(self, key: _Key, permission: Permission) -> None:
        """
        Take back the ports of C{permission} for C{key}.
        """
        ports = self.ports.get(key)
        if ports is not None:
            ports.discard(permission)
            if not ports:
                del self.ports[key]

    def allows(self, key: _Key, port: int) -> bool:
        """
        Is C{port} granted for C{key}?
        """
        ports = self.ports.get(key)
        return ports is not None and port in ports

    def hasKey(self, key: _Key) -> bool:
        """
        Is anything granted for C{key}?
        """
        return key in self.ports


def _networkKey(network: IPNetwork) -> tuple[int, int, int]:
    """
    The index key of a network: (version, prefix length, network as int).
    """
    return (network.version, network.prefixlen, int(network.network_address))


def _checkPort(port: object, low: int = MIN_PORT) -> int:
    """
    Validate a port number: an L{int} (not L{bool}) in C{low..65535}.
    """
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"the port must be an int, not {type(port).__name__}")
    if not low <= port <= MAX_PORT:
        raise ValueError(f"port {port} is out of range ({low}..{MAX_PORT})")
    return port


_DEFAULT_INTERFACE = DEFAULT_INTERFACE


class PermissionSet:
    """
    A mutable set of L{Permission}s with indexed matching.

    Connect grants are indexed by exact name, by wildcard suffix, by IP
    network (one dict per prefix length) and C{*}; each index entry keeps its
    ports as a set plus merged ranges, so a check costs a few dictionary
    lookups however many grants there are.
    """

    def __init__(self, entries: Iterable[Permission | str] = ()) -> None:
        """
        @param entries: L{Permission}s or their texts.
        @raise ValueError: An entry text is invalid (named in the message).
        @raise TypeError: C{entries} is a single string, or an entry is
            neither a L{Permission} nor a string.
        """
        if isinstance(entries, (str, bytes)):
            raise TypeError("PermissionSet takes a list of permissions, not a string")
        self._entries: dict[Permission, None] = {}
        self._anyHost = _Ports()
        self._names = _Index()
        self._suffixes = _Index()
        self._networks = _Index()
        # version -> {prefix length: number of grants}, longest first when read
        self._prefixes: dict[int, dict[int, int]] = {4: {}, 6: {}}
        self._prefixOrder: dict[int, list[int]] = {4: [], 6: []}
        self._listen = _Index()
        for entry in entries:
            self.add(entry)

    # -- the set ---------------------------------------------------------

    def add(self, entry: Permission | str) -> None:
        """
        Add a grant (no-op if present).

        @raise ValueError: If C{entry} is text that does not parse.
        """
        permission = _coerce(entry)
        if permission in self._entries:
            return
        self._entries[permission] = None
        self._index(permission, add=True)

    def discard(self, entry: Permission | str) -> None:
        """
        Remove a grant if present.

        @raise ValueError: If C{entry} is text that does not parse.
        """
        permission = _coerce(entry)
        if permission not in self._entries:
            return
        del self._entries[permission]
        self._index(permission, add=False)

    def __iter__(self) -> Iterator[Permission]:
        """
        The grants, in the order they were added.
        """
        return iter(list(self._entries))

    def __contains__(self, entry: object) -> bool:
        """
        Is this exact grant present? (Text is parsed; invalid text: C{False}.)
        """
        if isinstance(entry, str):
            try:
                entry = parsePermission(entry)
            except ValueError:
                return False
        return entry in self._entries

    def __len__(self) -> int:
        """
        The number of grants.
        """
        return len(self._entries)

    def __repr__(self) -> str:
        """
        The grants' canonical texts.
        """
        return f"PermissionSet({[str(p) for p in self._entries]!r})"

    def _index(self, permission: Permission, add: bool) -> None:
        """
        Add C{permission} to, or remove it from, the lookup indexes.
        """
        host = permission.host
        index: _Index
        key: _Key
        if permission.kind == "listen":
            index, key = self._listen, ("*" if host is None else host)
        elif host == "*":
            if add:
                self._anyHost.add(permission)
            else:
                self._anyHost.discard(permission)
            return
        else:
            assert host is not None
            if host.startswith("*."):
                index, key = self._suffixes, host[2:]
            elif isIPLiteral(host) or "/" in host:
                network = ipaddress.ip_network(host)
                index, key = self._networks, _networkKey(network)
                counts = self._prefixes[network.version]
                length = network.prefixlen
                counts[length] = counts.get(length, 0) + (1 if add else -1)
                if not counts[length]:
                    del counts[length]
                self._prefixOrder[network.version] = sorted(counts, reverse=True)
            else:
                index, key = self._names, host
        if add:
            index.add(key, permission)
        else:
            index.discard(key, permission)

    # -- matching --------------------------------------------------------

    def _matchIP(self, ip: IPAddress, port: int) -> bool:
        """
        Does an IP or CIDR grant (not C{*}) cover C{ip:port}?
        """
        version = ip.version
        value = int(ip)
        bits = ip.max_prefixlen
        ports = self._networks.ports
        for length in self._prefixOrder[version]:
            key = (version, length, (value >> (bits - length)) << (bits - length))
            found = ports.get(key)
            if found is not None and port in found:
                return True
        return False

    def _matchName(self, name: str, port: int) -> bool:
        """
        Does a name or C{*.name} grant (not C{*}) cover C{name:port}?
        """
        found = self._names.ports.get(name)
        if found is not None and port in found:
            return True
        suffixes = self._suffixes.ports
        if not suffixes:
            return False
        key = name
        while True:
            found = suffixes.get(key)
            if found is not None and port in found:
                return True
            dot = key.find(".")
            if dot < 0:
                return False
            key = key[dot + 1 :]

    def _matches(self, host: ParsedHost, port: int) -> bool:
        """
        Does any connect grant cover this canonical host and port?
        """
        if port in self._anyHost:
            return True
        if host.ip is not None:
            return self._matchIP(host.ip, port)
        return self._matchName(host.text, port)

    def allowsConnect(self, host: str, port: int) -> bool:
        """
        May code connect to C{host:port}? The literal check: no DNS.

        A name is matched against name grants only, an IP address against
        IP/CIDR grants only; C{*} matches both.

        @return: C{False} also for anything invalid (a non-canonical numeric
            host such as C{127.1}, a port out of range): use L{checkConnect}
            to learn why.
        """
        if port.__class__ is not int or not MIN_PORT <= port <= MAX_PORT:
            return False
        try:
            parsed = (
                _parseHostCached(host) if host.__class__ is str else parseHost(host)
            )
        except (TypeError, ValueError):
            return False
        if port in self._anyHost:
            return True
        if parsed.ip is not None:
            return self._matchIP(parsed.ip, port)
        return self._matchName(parsed.text, port)

    def checkConnect(self, host: str, port: int) -> None:
        """
        Like L{allowsConnect}, but explain a refusal.

        @raise ValueError: C{host} is invalid or a non-canonical numeric form
            (C{2130706433}, C{127.1}, ...), or C{port} is outside 1..65535.
        @raise TypeError: C{port} is not an L{int}.
        @raise PermissionDenied: No grant covers C{host:port}.
        """
        parsed = parseHost(host)
        _checkPort(port)
        if self._matches(parsed, port):
            return
        where = formatHostPort(parsed.text, port)
        raise PermissionDenied(
            f"permission denied: connect to {where}: {self._whyNot(parsed, port)}"
        )

    def _hostPorts(self, host: ParsedHost) -> list[_Ports]:
        """
        The port sets of every connect grant (not C{*}) whose host covers
        C{host}, found through the indexes.
        """
        found: list[_Ports] = []
        if host.ip is not None:
            ip = host.ip
            value, bits = int(ip), ip.max_prefixlen
            for length in self._prefixOrder[ip.version]:
                key = (
                    ip.version,
                    length,
                    (value >> (bits - length)) << (bits - length),
                )
                ports = self._networks.ports.get(key)
                if ports is not None:
                    found.append(ports)
            return found
        exact = self._names.ports.get(host.text)
        if exact is not None:
            found.append(exact)
        name = host.text
        while True:
            ports = self._suffixes.ports.get(name)
            if ports is not None:
                found.append(ports)
            dot = name.find(".")
            if dot < 0:
                return found
            name = name[dot + 1 :]

    def _whyNot(self, host: ParsedHost, port: int) -> str:
        """
        Explain why no grant covers C{host:port}.
        """
        found = self._hostPorts(host)
        if found:
            return (
                f"port {port} is not among the ports granted for this host "
                f"({_describePorts(found)})"
            )
        if self._anyHost:
            return (
                f"port {port} is not among the ports granted for any host "
                f"({_describePorts([self._anyHost])})"
            )
        kind = "IP/CIDR" if host.ip is not None else "name"
        other = "a name" if host.ip is not None else "an IP/CIDR"
        return (
            f"no tcp-connect grant covers this host (only {kind} and '*' "
            f"grants can match it; {other} grant never does)"
        )

    def matchConnect(self, host: ParsedHost, port: int) -> Permission | None:
        """
        The grant that allows connecting to C{host:port}, the most specific
        first (exact name or address, then wildcard or network, then C{*}).

        @param host: A canonical host (see L{tcpext._hosts.parseHost}).
        @param port: A valid port number.
        @return: L{None} if no grant covers it.
        """
        if host.ip is not None:
            ip = host.ip
            version, value, bits = ip.version, int(ip), ip.max_prefixlen
            networks = self._networks.ports
            for length in self._prefixOrder[version]:
                key = (version, length, (value >> (bits - length)) << (bits - length))
                found = networks.get(key)
                if found is not None and port in found:
                    return found.grantFor(port)
        else:
            name = host.text
            found = self._names.ports.get(name)
            if found is not None and port in found:
                return found.grantFor(port)
            suffixes = self._suffixes.ports
            key2 = name
            while suffixes:
                found = suffixes.get(key2)
                if found is not None and port in found:
                    return found.grantFor(port)
                dot = key2.find(".")
                if dot < 0:
                    break
                key2 = key2[dot + 1 :]
        if port in self._anyHost:
            return self._anyHost.grantFor(port)
        return None

    def whyNotConnect(self, host: ParsedHost, port: int) -> str:
        """
        Why no grant covers C{host:port} (for a host and port that
        L{matchConnect} refused).
        """
        return self._whyNot(host, port)

    def filterResolved(
        self, name: ParsedHost, port: int, addresses: Sequence[str]
    ) -> tuple[list[str], list[str]]:
        """
        The DNS rebinding rule, without the check of C{name:port} itself:
        which of the addresses C{name} resolved to may be dialed for
        C{name:port}.

        A public address may; a non-public one (see L{isPublicAddress}) only
        if an IP/CIDR grant covers it and the port, or a grant with host C{*}
        covers the port, or C{name} is C{localhost} (or under C{.localhost})
        and the address is loopback.  An address that is not an IP literal
        may not.  An IP literal C{name} "resolves" to itself only.

        @param name: The canonical name (or IP literal).
        @return: The addresses that may be dialed (as given, in order), and
            one text per refused address saying why.
        """
        allowed: list[str] = []
        refusals: list[str] = []
        if name.ip is not None:
            for address in addresses:
                try:
                    ip = parseHost(address).ip
                except (TypeError, ValueError) as e:
                    refusals.append(f"{address!r} ({e})")
                    continue
                if ip == name.ip:
                    allowed.append(address)
                else:
                    refusals.append(f"{address} (not the address {name.text})")
            return allowed, refusals
        anyHost = port in self._anyHost
        localhost = isLocalhostName(name.text)
        for address in addresses:
            try:
                host = parseHost(address)
            except (TypeError, ValueError) as e:
                refusals.append(f"{address!r} (not an IP address: {e})")
                continue
            ip = host.ip
            if ip is None:
                refusals.append(f"{address!r} (a name, not an address)")
                continue
            why = _whyNotPublic(ip)
            if localhost:
                if ip.is_loopback:
                    allowed.append(address)
                else:
                    refusals.append(
                        f"{address} ({why or 'public'}: localhost names only "
                        "reach loopback)"
                    )
            elif why is None or anyHost or self._matchIP(ip, port):
                allowed.append(address)
            else:
                refusals.append(
                    f"{address} ({why}: a non-public address needs an IP/CIDR "
                    "grant or a '*' host grant)"
                )
        return allowed, refusals

    def checkResolved(
        self, name: str, port: int, addresses: Sequence[str]
    ) -> list[str]:
        """
        The addresses C{name} resolved to that may be dialed for C{name:port}
        (the DNS rebinding rule of L{filterResolved}), in their order, as
        given.

        C{name:port} itself must be allowed (as L{checkConnect}).

        @raise PermissionDenied: C{name:port} is not allowed, or no address
            may be dialed (the message names each refused address and why).
        @raise ValueError: C{name} or C{port} is invalid.
        """
        parsed = parseHost(name)
        _checkPort(port)
        self.checkConnect(name, port)
        allowed, refusals = self.filterResolved(parsed, port, addresses)
        if not allowed:
            raise PermissionDenied(resolvedRefusal(parsed, port, refusals))
        return allowed

    def _listenMatches(self, port: int, key: str) -> bool:
        """
        Does a listen grant cover C{port} on interface C{key}?
        """
        listen = self._listen
        if port == 0:
            return any(
                listen.ports[k].coversAll() for k in ("*", key) if listen.hasKey(k)
            )
        return listen.allows("*", port) or listen.allows(key, port)

    def matchListen(self, port: int, interface: str) -> Permission | None:
        """
        The grant that allows listening on C{port} (0: chosen automatically)
        of C{interface}, an interface grant first.

        @param interface: The canonical interface address without zone
            (C{"0.0.0.0"} for the default).
        @return: L{None} if no grant covers it.
        """
        listen = self._listen.ports
        for key in (interface, "*"):
            ports = listen.get(key)
            if ports is None:
                continue
            if port == 0:
                if ports.coversAll():
                    return ports.widest()
            elif port in ports:
                return ports.grantFor(port)
        return None

    def whyNotListen(self, port: int, interface: str) -> str:
        """
        Why no grant covers listening on C{port} of C{interface} (for a port
        and interface L{matchListen} refused).
        """
        listen = self._listen.ports
        if port == 0:
            return "an automatically chosen port needs tcp-listen:* (every port)"
        if not listen:
            return "there is no tcp-listen grant"
        granted = [
            f"{'any interface' if k == '*' else k}: {_describePorts([v])}"
            for k, v in list(listen.items())[:5]
        ]
        return (
            f"no tcp-listen grant covers port {port} on {interface} "
            f"(granted: {'; '.join(granted)})"
        )

    def allowsListen(self, port: int, host: str | None = None) -> bool:
        """
        May code listen on C{port} (0: chosen automatically) on interface
        C{host} (L{None}: the default, all IPv4 interfaces)?

        Port 0 needs a grant covering every port (C{tcp-listen:*} or
        C{1-65535}). An interface grant covers that exact address only.

        @return: C{False} also for invalid input.
        """
        try:
            _checkPort(port, 0)
            key = interfaceKey(parseInterface(host))
        except (TypeError, ValueError):
            return False
        return self._listenMatches(port, key)

    def checkListen(self, port: int, host: str | None = None) -> None:
        """
        Like L{allowsListen}, but explain a refusal.

        @raise ValueError: C{port} is outside 0..65535 or C{host} is not an IP
            address.
        @raise TypeError: C{port} is not an L{int}.
        @raise PermissionDenied: No C{tcp-listen} grant covers it.
        """
        _checkPort(port, 0)
        key = interfaceKey(parseInterface(host))
        if self._listenMatches(port, key):
            return
        raise PermissionDenied(listenRefusal(key, port, self.whyNotListen(port, key)))


def resolvedRefusal(name: ParsedHost, port: int, refusals: Sequence[str]) -> str:
    """
    The message of a connection to a name refused because no address it
    resolved to may be dialed.
    """
    where = formatHostPort(name.text, port)
    if name.ip is not None:
        return (
            f"permission denied: connect to {where}: "
            f"refused {', '.join(refusals) or 'no addresses'}"
        )
    return (
        f"permission denied: connect to {where}: {name.text} resolved "
        f"only to refused addresses: {'; '.join(refusals) or 'none'}"
    )


def listenRefusal(interface: str, port: int, why: str) -> str:
    """
    The message of a refused listen.
    """
    where = formatHostPort(interface, port) + (" (automatic port)" if not port else "")
    return f"permission denied: listen on {where}: {why}"


def _describePorts(sets: Iterable[_Ports], limit: int = 8) -> str:
    """
    The ports of some port sets, merged, as text: C{"80, 8000-8080"}.
    """
    merged: list[tuple[int, int]] = []
    for low, high in sorted(piece for ports in sets for piece in ports.pieces()):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    texts = [
        "*"
        if (low, high) == (MIN_PORT, MAX_PORT)
        else str(low)
        if low == high
        else f"{low}-{high}"
        for low, high in merged[:limit]
    ]
    if len(merged) > limit:
        texts.append(f"and {len(merged) - limit} more")
    return ", ".join(texts)


def _coerce(entry: Permission | str) -> Permission:
    """
    A L{Permission} from a permission or its text.
    """
    if isinstance(entry, Permission):
        return entry
    if isinstance(entry, str):
        return parsePermission(entry)
    raise TypeError(f"expected a Permission or its text, not {type(entry).__name__}")
