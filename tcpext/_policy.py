# -*- test-case-name: tests.test_policy -*-
"""
Every permission decision tcpext makes, in one place and without I/O.

The in-process C{browser}, the permission-checking reactor and the host side
of isolation (the broker) all ask a L{Policy} and act on its answer; none of
them decides by itself.  Requests go in as plain values, L{Decision}s come
out; the policy never touches a socket, a resolver, a clock or a file (the
caller passes the time and the addresses a name resolved to), so it is
tested with tables and no reactor (C{tests/test_policy.py}).

What is decided here:

  - what a request means: L{connectTarget} and L{listenTarget} check and
    canonicalize the host, the port and the interface, and give back plain
    C{str}/C{int} values (never the caller's objects) to hand to a reactor;
    one set of error messages for every path;
  - the grant check (L{Policy.connect}, L{Policy.listen}) and which grant
    matched, through the extension's live L{PermissionSet};
  - the DNS rebinding rule over the addresses a name resolved to
    (L{Policy.resolved}), and where C{localhost} names go
    (L{localhostAddresses}: loopback, never DNS);
  - the name memory: which names the trusted resolver handed an address out
    for, so that dialing that address right after counts as dialing the name
    (L{Policy.remember}, bounded in size and time);
  - whether an open socket is still allowed after grants were taken away
    (L{Policy.stillAllowed}).

Every decision that answers a request is reported to the policy's observers
(L{Policy.report}): a callable taking the extension's id and the
L{Decision}.  L{DenialLog} is the observer that writes the C{denied ...}
log lines; the operator console adds its own (the audit log).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from twisted.logger import Logger

from tcpext._hosts import (
    DEFAULT_INTERFACE,
    LOCALHOST_ADDRESSES,
    IPAddress,
    ParsedHost,
    _parseHostCached,
    formatHostPort,
    interfaceKey,
    isLocalhostName,
    parseHost,
    parseInterface,
)
from tcpext.permissions import (
    MAX_PORT,
    MIN_PORT,
    Permission,
    PermissionDenied,
    PermissionSet,
    listenRefusal,
    resolvedRefusal,
)

__all__ = [
    "CONNECT",
    "LISTEN",
    "REQUEST",
    "RESOLVE",
    "USE",
    "REMEMBER_ADDRESSES",
    "REMEMBER_SECONDS",
    "ConnectTarget",
    "Decision",
    "DecisionObserver",
    "DenialLog",
    "Grounds",
    "ListenTarget",
    "NameMemory",
    "Policy",
    "connectPort",
    "connectTarget",
    "listenPort",
    "listenTarget",
    "localhostAddresses",
]

CONNECT = "connect"
LISTEN = "listen"
RESOLVE = "resolve"
REQUEST = "request"
USE = "use"
"""The verb of a refused capability (processes, UNIX sockets, UDP, ...)."""

_ACTIONS = {CONNECT: "connect to", LISTEN: "listen on", RESOLVE: "resolve", USE: "use"}

REMEMBER_SECONDS = 300.0
"""
How long an address the trusted resolver handed out for a name counts as
that name (seconds of the caller's clock).
"""

REMEMBER_ADDRESSES = 4096
"""
At most this many addresses are remembered (the least recently resolved
are forgotten first).
"""

_log = Logger(namespace="tcpext.policy")


class Decision(NamedTuple):
    """
    One answer of the policy to one request.

    @ivar verb: C{"connect"}, C{"listen"}, C{"resolve"}, C{"request"} (a
        runtime permission request) or C{"use"} (a refused capability, such
        as running processes).
    @ivar target: What was asked for: C{"host:port"} (IPv6 in brackets) for
        connect and resolve, C{"interface:port"} for listen (port 0: chosen
        automatically), the permissions' canonical texts for a request.
    @ivar allowed: The answer.
    @ivar addresses: The addresses that may be dialed (a connect or a
        resolution of a name), or the address dialed.
    @ivar refused: The resolved addresses that may not be dialed, each with
        the reason (a name whose other addresses were allowed).
    @ivar grant: The grant that allowed it (L{None} when refused, or for a
        request).
    @ivar name: For an address allowed as a name it was resolved for: that
        name.
    @ivar reason: Why it was refused (L{None} when allowed).
    @ivar message: The full text of the refusal, as the exception raised for
        it says (C{""} when allowed).
    @ivar request: How the extension asked, for logs (e.g.
        C{"reactor.connectTCP(example.com:80)"}); C{""}: the verb and target.
    """

    verb: str
    target: str
    allowed: bool
    addresses: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    grant: Permission | None = None
    name: str | None = None
    reason: str | None = None
    message: str = ""
    request: str = ""

    def error(self) -> PermissionDenied:
        """
        The L{PermissionDenied} for this refusal.
        """
        return PermissionDenied(self.message or f"permission denied: {self.reason}")

    def describe(self) -> str:
        """
        How the extension asked: C{request}, or the verb and the target.
        """
        return self.request or f"{_ACTIONS.get(self.verb, self.verb)} {self.target}"

    def auditFields(self) -> dict[str, Any]:
        """
        The fields of an audit record (SPEC section 9): C{verb}, C{target},
        C{decision} (C{"allow"}/C{"deny"}), C{grant} or C{reason}, and the
        C{addresses}.
        """
        fields: dict[str, Any] = {
            "verb": self.verb,
            "target": self.target,
            "decision": "allow" if self.allowed else "deny",
            "addresses": list(self.addresses),
        }
        if self.allowed:
            fields["grant"] = None if self.grant is None else str(self.grant)
        else:
            fields["reason"] = self.reason
        if self.refused:
            fields["refused"] = list(self.refused)
        if self.name is not None:
            fields["name"] = self.name
        return fields


DecisionObserver = Callable[[str, Decision], None]
"""
Told of every decision: called with the extension's id and the L{Decision}.
It must not raise (a failure is logged and ignored) and must not block.
"""


class DenialLog:
    """
    The decision observer that logs each refusal on the extension's logger:
    C{denied {request}: {reason}} at warning level (the format can be
    changed; the host side of isolation says C{broker refused ...}).
    """

    def __init__(self, log: Any, format: str = "denied {request}: {reason}") -> None:
        """
        @param log: The extension's logger (or anything with its C{warn},
            such as the isolated host's rate-limited log).
        @param format: The log format; C{request} and C{reason} are given.
        """
        self.log = log
        self.format = format

    def __call__(self, extensionId: str, decision: Decision) -> None:
        """
        Log C{decision} if it is a refusal, or if it refused some of the
        addresses a name resolved to.
        """
        if not decision.allowed:
            reason = decision.message or decision.reason
        elif decision.refused:
            reason = (
                f"not dialing {'; '.join(decision.refused)}: not allowed by the "
                "grants for this name"
            )
        else:
            return
        self.log.warn(
            self.format,
            request=decision.describe(),
            reason=reason,
            extensionId=extensionId,
        )


class ConnectTarget(NamedTuple):
    """
    A connect request in canonical form.

    @ivar host: The canonical host (a name, or an address with its zone).
    @ivar port: The port, a plain L{int} in 1..65535.
    """

    host: ParsedHost
    port: int

    @property
    def address(self) -> str:
        """
        The canonical text of the host (IPv6 without brackets, with its
        zone): a plain C{str} to hand to a reactor.
        """
        return self.host.text

    @property
    def isName(self) -> bool:
        """
        Is the host a name (rather than an IP address)?
        """
        return self.host.ip is None

    def __str__(self) -> str:
        """
        C{host:port}, IPv6 in brackets.
        """
        return formatHostPort(self.host.text, self.port)


class ListenTarget(NamedTuple):
    """
    A listen request in canonical form.

    @ivar interface: The interface address, or L{None} for the default (every
        IPv4 interface).
    @ivar port: The port, a plain L{int} in 0..65535 (0: chosen
        automatically).
    """

    interface: ParsedHost | None
    port: int

    @property
    def key(self) -> str:
        """
        The interface address listen grants are matched against (no zone).
        """
        return interfaceKey(self.interface)

    @property
    def bindAddress(self) -> str:
        """
        The address to bind, a plain C{str}: the interface's canonical text
        (with its zone), or L{DEFAULT_INTERFACE}.
        """
        return DEFAULT_INTERFACE if self.interface is None else self.interface.text

    def __str__(self) -> str:
        """
        C{interface:port}, IPv6 in brackets.
        """
        return formatHostPort(self.bindAddress, self.port)


def _port(port: object, low: int, what: str) -> int:
    """
    Check a port number and return it as a plain L{int}.
    """
    if port.__class__ is int:
        value: int = port
    elif isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"the {what} port must be an int, not {type(port).__name__}")
    else:
        value = int.__index__(port)
    if not low <= value <= MAX_PORT:
        raise ValueError(f"the {what} port {value} is outside {low}..{MAX_PORT}")
    return value


def connectPort(port: object) -> int:
    """
    Check a connect port: an L{int} (not a L{bool}) in 1..65535.

    @return: It, as a plain L{int}.
    @raise TypeError: Not an L{int}.
    @raise ValueError: Out of range.
    """
    return _port(port, MIN_PORT, "connect")


def listenPort(port: object) -> int:
    """
    Check a listen port: an L{int} (not a L{bool}) in 0..65535 (0: chosen
    automatically).

    @return: It, as a plain L{int}.
    @raise TypeError: Not an L{int}.
    @raise ValueError: Out of range.
    """
    return _port(port, 0, "listen")


def connectTarget(host: object, port: object) -> ConnectTarget:
    """
    Check and canonicalize a connect request.

    @param host: A name or an IP literal (IPv6 with or without brackets, with
        or without a zone, which is kept for dialing and plays no part in
        matching).
    @raise TypeError: C{host} is not a C{str} or C{port} not an L{int}.
    @raise ValueError: C{host} is invalid or a non-canonical numeric form
        (C{127.1}, C{2130706433}, ...), or C{port} is out of range.
    """
    if host.__class__ is str:
        parsed = _parseHostCached(host)
    elif isinstance(host, str):
        parsed = parseHost(host)
    else:
        raise TypeError(f"a host must be a str, not {type(host).__name__}")
    return ConnectTarget(parsed, _port(port, MIN_PORT, "connect"))


def listenTarget(port: object, interface: object = None) -> ListenTarget:
    """
    Check and canonicalize a listen request.

    @param interface: An IP address of an interface, or L{None} / C{""} for
        the default.
    @raise TypeError: C{port} is not an L{int} or C{interface} not a C{str}.
    @raise ValueError: C{port} is out of range, or C{interface} is a name or
        not a valid address.
    """
    number = listenPort(port)
    if interface is not None and not isinstance(interface, str):
        raise TypeError(f"an interface must be a str, not {type(interface).__name__}")
    return ListenTarget(parseInterface(interface), number)


def localhostAddresses(name: str) -> tuple[str, ...] | None:
    """
    The addresses a C{localhost} name (C{localhost} or a name under
    C{.localhost}) stands for, without DNS (RFC 6761): the loopback
    addresses.  L{None} for any other name.
    """
    if isLocalhostName(name):
        return LOCALHOST_ADDRESSES
    return None


class Grounds(NamedTuple):
    """
    What an open socket (or a connection in progress) was allowed for, to
    check again when grants are taken away (L{Policy.stillAllowed}).

    @ivar verb: C{"connect"} or C{"listen"}.
    @ivar port: The port (for a listen, as requested: 0 when chosen
        automatically).
    @ivar addresses: For a connect, the canonical addresses it dials (the
        one it is connected to, once known); for a listen, the interface
        address grants are matched against.
    @ivar name: For a connect, the name the addresses were dialed for, if
        any.
    """

    verb: str
    port: int
    addresses: tuple[str, ...]
    name: str | None = None


class NameMemory:
    """
    Which names the trusted resolver recently handed each address out for:
    bounded in size (the least recently resolved addresses are forgotten
    first) and in time.
    """

    def __init__(
        self, seconds: float = REMEMBER_SECONDS, limit: int = REMEMBER_ADDRESSES
    ) -> None:
        """
        @param seconds: How long an answer counts.
        @param limit: How many addresses are remembered at most.
        """
        self.seconds = seconds
        self.limit = limit
        self._names: OrderedDict[IPAddress, dict[str, float]] = OrderedDict()

    def __len__(self) -> int:
        """
        How many addresses are remembered.
        """
        return len(self._names)

    def remember(self, name: str, addresses: Iterable[str], now: float) -> None:
        """
        Remember that C{name} resolved to C{addresses} at time C{now}.
        """
        until = now + self.seconds
        memory = self._names
        for address in addresses:
            try:
                ip = parseHost(address).ip
            except (TypeError, ValueError):
                continue
            if ip is None:
                continue
            names = memory.get(ip)
            if names is None:
                names = memory[ip] = {}
            else:
                memory.move_to_end(ip)
            names[name] = until
        while len(memory) > self.limit:
            memory.popitem(last=False)

    def namesFor(self, ip: IPAddress, now: float) -> list[str]:
        """
        The names C{ip} was resolved for that still count at time C{now}.
        """
        names = self._names.get(ip)
        if not names:
            return []
        for name, until in list(names.items()):
            if until < now:
                del names[name]
        if not names:
            del self._names[ip]
        return list(names)


class Policy:
    """
    The decisions for one extension, over its live grants.

    @ivar extensionId: The extension's id (given to observers).
    @ivar grants: The live L{PermissionSet} (the ledger changes it; the
        policy only reads it).
    @ivar memory: The L{NameMemory}.
    @ivar observers: Called with every decision L{report}ed.
    """

    def __init__(
        self,
        grants: PermissionSet,
        *,
        extensionId: str = "",
        observers: Iterable[DecisionObserver] = (),
        memory: NameMemory | None = None,
    ) -> None:
        """
        @param grants: The live grants.
        @param extensionId: The extension's id.
        @param observers: The decision observers.
        @param memory: The name memory (a fresh one by default).
        """
        if not isinstance(grants, PermissionSet):
            raise TypeError(
                f"grants must be a PermissionSet, not {type(grants).__name__}"
            )
        self.grants = grants
        self.extensionId = extensionId
        self.observers: list[DecisionObserver] = list(observers)
        self.memory = memory if memory is not None else NameMemory()

    def __repr__(self) -> str:
        """
        Name the extension and the grants.
        """
        return f"<Policy for {self.extensionId!r}: {self.grants!r}>"

    # -- reporting -------------------------------------------------------

    def report(self, decision: Decision) -> Decision:
        """
        Tell every observer of C{decision}.

        @return: C{decision}.
        """
        for observer in list(self.observers):
            try:
                observer(self.extensionId, decision)
            except Exception:
                _log.failure(
                    "a decision observer failed on {decision!r}", decision=decision
                )
        return decision

    def invalid(
        self, verb: str, target: str, error: BaseException, request: str = ""
    ) -> Decision:
        """
        A refusal of a request that is not valid (bad host, port or
        interface): the reason and the message are C{error}'s text.
        """
        text = str(error)
        return Decision(verb, target, False, reason=text, message=text, request=request)

    def requested(self, permissions: Sequence[str], allowed: bool) -> Decision:
        """
        The answer to a runtime request (C{permissions.request}) for
        C{permissions} (their canonical texts, not granted yet): granted, or
        refused (by the prompt, or because the extension is closing).
        """
        target = ", ".join(permissions)
        request = f"permissions.request({list(permissions)!r})"
        if allowed:
            return Decision(REQUEST, target, True, request=request)
        return Decision(
            REQUEST,
            target,
            False,
            reason="the request was refused",
            message="permission denied: the request was refused",
            request=request,
        )

    def removed(
        self,
        verb: str,
        where: str,
        request: str,
        *,
        addresses: tuple[str, ...] = (),
        name: str | None = None,
    ) -> Decision:
        """
        The refusal of what was open (C{request}: C{"connection to
        host:port"}, C{"listening on interface:port"}) once the grant that
        allowed it was taken away (L{stillAllowed} said no).
        """
        return Decision(
            verb,
            where,
            False,
            addresses=addresses,
            name=name,
            reason="the grant was removed",
            message=f"permission denied: {request}: the grant was removed",
            request=request,
        )

    # -- connect ---------------------------------------------------------

    def _denied(
        self,
        verb: str,
        where: str,
        why: str,
        request: str,
        refused: Sequence[str] = (),
        message: str | None = None,
    ) -> Decision:
        """
        A refusal of C{verb} on C{where}.
        """
        if message is None:
            message = f"permission denied: {_ACTIONS[verb]} {where}: {why}"
        return Decision(
            verb,
            where,
            False,
            refused=tuple(refused),
            reason=why,
            message=message,
            request=request,
        )

    def connect(
        self,
        target: ConnectTarget,
        *,
        now: float | None = None,
        claimedName: str | None = None,
        request: str = "",
        verb: str = CONNECT,
    ) -> Decision:
        """
        May the extension connect to C{target}?

        For a name: whether a grant covers the name and port (the addresses
        it resolves to are then judged by L{resolved}).  For an address: an
        IP/CIDR or C{*} grant covering it, or else a name it stands for
        whose grant covers the port and whose rebinding rule accepts the
        address: a name the trusted resolver handed it out for (see
        L{remember}; needs C{now}), or C{claimedName} when that is a
        C{localhost} name (which maps to loopback without DNS) or a name
        remembered for the address.

        @param claimedName: The canonical name the caller says it dials the
            address for (not taken on trust).
        @param verb: C{"resolve"} when the question is whether the name may
            be resolved for that port.
        """
        grants = self.grants
        host, port = target.host, target.port
        where = str(target)
        grant = grants.matchConnect(host, port)
        if host.ip is None:
            if grant is not None:
                return Decision(verb, where, True, grant=grant, request=request)
            return self._denied(verb, where, grants.whyNotConnect(host, port), request)
        if grant is not None:
            return Decision(
                CONNECT,
                where,
                True,
                addresses=(host.text,),
                grant=grant,
                request=request,
            )
        names: list[str] = []
        if claimedName is not None and localhostAddresses(claimedName) is not None:
            if str(host.ip) not in LOCALHOST_ADDRESSES:
                why = (
                    f"{claimedName} means {' or '.join(LOCALHOST_ADDRESSES)} "
                    "(localhost names only reach loopback)"
                )
                return self._denied(
                    CONNECT,
                    where,
                    why,
                    request,
                    message=(
                        f"permission denied: connect to {claimedName} at "
                        f"{host.text}: {why}"
                    ),
                )
            names.append(claimedName)
        remembered = [] if now is None else self.memory.namesFor(host.ip, now)
        if claimedName is not None and claimedName in remembered:
            names.append(claimedName)
        names.extend(n for n in remembered if n not in names)
        for name in names:
            allowed = self._nameAllows(name, port, host.text)
            if allowed is not None:
                return Decision(
                    CONNECT,
                    where,
                    True,
                    addresses=(host.text,),
                    grant=allowed,
                    name=name,
                    request=request,
                )
        why = grants.whyNotConnect(host, port)
        if remembered:
            why = (
                f"{why} (it was resolved for {', '.join(remembered)}, which no "
                f"grant allows on port {port} at this address)"
            )
        elif names:
            why = (
                f"{why} (it was dialed for {', '.join(names)}, which no grant "
                f"allows on port {port} at this address)"
            )
        return self._denied(verb, where, why, request)

    def _nameAllows(self, name: str, port: int, address: str) -> Permission | None:
        """
        The grant that allows C{address}, dialed for C{name}, on C{port}
        (name grant and rebinding rule), if any.
        """
        try:
            parsed = parseHost(name)
        except (TypeError, ValueError):
            return None
        grant = self.grants.matchConnect(parsed, port)
        if grant is None:
            return None
        allowed, _ = self.grants.filterResolved(parsed, port, [address])
        return grant if allowed else None

    def resolved(
        self,
        target: ConnectTarget,
        addresses: Sequence[str],
        *,
        request: str = "",
        verb: str = CONNECT,
    ) -> Decision:
        """
        Which of the addresses C{target}'s name resolved to may be dialed
        (the DNS rebinding rule; the name grant is checked again).

        @return: An allowing decision whose C{addresses} are the canonical
            texts of those that may be dialed (in order, each once) and whose
            C{refused} lists the others with the reason; or a refusal if the
            name is not allowed or no address may be dialed.
        """
        first = self.connect(target, request=request, verb=verb)
        if not first.allowed:
            return first
        host, port = target.host, target.port
        allowed, refusals = self.grants.filterResolved(host, port, addresses)
        if not allowed:
            return self._denied(
                verb,
                str(target),
                f"{host.text} resolved only to refused addresses: "
                f"{'; '.join(refusals) or 'none'}",
                request,
                refused=refusals,
                message=resolvedRefusal(host, port, refusals),
            )
        canonical: list[str] = []
        for address in allowed:
            text = parseHost(address).text
            if text not in canonical:
                canonical.append(text)
        return Decision(
            verb,
            str(target),
            True,
            addresses=tuple(canonical),
            refused=tuple(refusals),
            grant=first.grant,
            name=host.text if host.ip is None else None,
            request=request,
        )

    # -- resolution ------------------------------------------------------

    def candidatePorts(self, name: ParsedHost) -> list[int]:
        """
        Ports on which some grant lets the extension connect to C{name} (one
        per grant: its first port), for a resolution asked without a port.
        """
        ports = set()
        grants = self.grants
        for permission in grants:
            if permission.kind == "connect" and grants.matchConnect(
                name, permission.portLow
            ):
                ports.add(permission.portLow)
        return sorted(ports)

    def resolve(
        self, name: ParsedHost, port: int | None, *, request: str = ""
    ) -> Decision:
        """
        May the extension resolve C{name} for C{port} (L{None}: for any port
        a grant covers)?  Resolving needs a name grant: the answer is only
        useful to connect with.
        """
        if port is not None:
            return self.connect(
                ConnectTarget(name, port), request=request, verb=RESOLVE
            )
        if self.candidatePorts(name):
            return Decision(RESOLVE, name.text, True, request=request)
        return self._denied(
            RESOLVE,
            name.text,
            "no tcp-connect grant covers this name on any port",
            request,
        )

    def resolvedForPorts(
        self,
        name: ParsedHost,
        port: int | None,
        addresses: Sequence[str],
        *,
        request: str = "",
        verb: str = RESOLVE,
    ) -> Decision:
        """
        Like L{resolved}, for a resolution asked for C{port} or, if L{None},
        for every port a grant covers the name on: an address is allowed if
        it may be dialed on one of them.
        """
        if port is not None:
            return self.resolved(
                ConnectTarget(name, port), addresses, request=request, verb=verb
            )
        allowed: list[str] = []
        refusal: Decision | None = None
        grant = None
        for each in self.candidatePorts(name):
            decision = self.resolved(
                ConnectTarget(name, each), addresses, request=request, verb=RESOLVE
            )
            if decision.allowed:
                grant = grant or decision.grant
                allowed.extend(a for a in decision.addresses if a not in allowed)
            elif refusal is None:
                refusal = decision
        if allowed:
            refused = tuple(a for a in addresses if _canonicalOrNone(a) not in allowed)
            return Decision(
                RESOLVE,
                name.text,
                True,
                addresses=tuple(allowed),
                refused=refused,
                grant=grant,
                name=name.text,
                request=request,
            )
        if refusal is not None:
            return refusal
        return self._denied(RESOLVE, name.text, "the grant was removed", request)

    def remember(self, name: str, addresses: Iterable[str], now: float) -> None:
        """
        The trusted resolver handed C{addresses} out for C{name} at time
        C{now}: a connect to one of them counts as a connect to C{name}
        (see L{connect}) for L{REMEMBER_SECONDS}.
        """
        self.memory.remember(name, addresses, now)

    # -- listen ----------------------------------------------------------

    def listen(self, target: ListenTarget, *, request: str = "") -> Decision:
        """
        May the extension listen on C{target}?  Port 0 (chosen
        automatically) needs a grant covering every port; an interface
        grant covers that exact address only.
        """
        grants = self.grants
        key = target.key
        where = str(target)
        grant = grants.matchListen(target.port, key)
        if grant is not None:
            return Decision(LISTEN, where, True, grant=grant, request=request)
        why = grants.whyNotListen(target.port, key)
        return self._denied(
            LISTEN,
            where,
            why,
            request,
            message=listenRefusal(target.bindAddress, target.port, why),
        )

    # -- after a revoke --------------------------------------------------

    def stillAllowed(self, grounds: Grounds) -> bool:
        """
        Do the grants (as they are now) still allow what C{grounds}
        describes?  A connection is kept if any remaining grant allows each
        of its addresses: an IP/CIDR or C{*} grant, or the grant of the name
        it was dialed for under the rebinding rule.  A listening port is
        kept if a grant covers its port (as requested) on its interface.
        """
        grants = self.grants
        if grounds.verb == LISTEN:
            (key,) = grounds.addresses
            return grants.matchListen(grounds.port, key) is not None
        port = grounds.port
        if not grounds.addresses:
            if grounds.name is None:
                return False
            try:
                return grants.matchConnect(parseHost(grounds.name), port) is not None
            except (TypeError, ValueError):
                return False
        for address in grounds.addresses:
            if grants.allowsConnect(address, port):
                continue
            if grounds.name is None:
                return False
            if self._nameAllows(grounds.name, port, address) is None:
                return False
        return True


def _canonicalOrNone(address: str) -> str | None:
    """
    The canonical text of an address, or L{None} if it is not one.
    """
    try:
        return parseHost(address).text
    except (TypeError, ValueError):
        return None
