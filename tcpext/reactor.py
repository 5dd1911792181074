# -*- test-case-name: tests.test_reactor -*-
"""
L{PermissionCheckingReactor}: a reactor for extension code, limited by grants.

It wraps a real reactor and provides the reactor interfaces that reactor
provides (declared per instance), forwarding an explicit list of methods.
What would reach the network is checked against a live
L{tcpext.permissions.PermissionSet}:

  - C{connectTCP} / C{connectSSL} need a C{tcp-connect} grant;
  - C{listenTCP} / C{listenSSL} need a C{tcp-listen} grant (an automatically
    chosen port needs C{tcp-listen:*}; the interface is checked too);
  - the C{nameResolver} (and the old C{resolve()}) only resolve names that a
    name grant covers, and only hand out the addresses that the DNS rebinding
    rule lets through.

Processes, UNIX sockets, UDP, adopting file descriptors, threads
(C{callInThread}, C{getThreadPool}, C{suggestThreadPoolSize}: code in a
thread could reach the network unchecked), C{listenWith}/C{connectWith} and
daemonizing are refused with L{PermissionDenied}.  Threads are allowed
where the kernel confines the whole process (an isolated extension's
process, created with C{allowThreads=True}): a thread there can reach
nothing the process cannot.

Forwarded as they are: time (C{seconds}, C{callLater}), the reactor's life
(C{run}, C{stop}, C{crash}, C{iterate}, C{running}, C{callWhenRunning},
system event triggers; note that code holding the wrapper can therefore stop
the reactor it shares with others), C{callFromThread} (it runs code in the
reactor thread, which grants nothing), and the C{IReactorFDSet} methods
(watching a descriptor the code already holds grants no new network access;
the listing and C{removeAll} are limited to this wrapper's own, see below).

How denial is signalled:

  - Everything that can be decided when the call is made raises
    L{PermissionDenied} from the call: C{connectTCP}/C{connectSSL} to a host
    and port no grant covers (or to a non-canonical numeric host such as
    C{127.1}), C{listenTCP}/C{listenSSL}, the refused capabilities, and
    C{IConnector.connect()} again after a grant was removed.
  - What is only known after DNS (a name whose every address is refused by
    the rebinding rule) fails the connection the way Twisted reports DNS
    failures: the factory's C{clientConnectionFailed} receives a
    L{PermissionDenied} failure.
  - L{IHostnameResolver} has no error channel, so the checked C{nameResolver}
    reports a refused resolution as one placeholder address whose host is a
    text subclass carrying the reason; C{connectTCP} to it raises
    L{PermissionDenied}.  That is how C{HostnameEndpoint}, C{Agent} and treq
    fail with L{PermissionDenied} rather than a vague DNS error.  (The
    placeholder's text is C{permission-denied.invalid}, a name that never
    resolves, should it ever reach another reactor.)

Names and DNS rebinding: C{connectTCP(name, ...)} never lets the wrapped
reactor resolve the name (it would look the name up again, after the check:
a rebinding hole).  The wrapper resolves it once through the checked resolver
and dials exactly one checked address (IPv4 first, as Twisted's own
C{connectTCP} does).  The checked resolver also remembers which name each
address it handed out was resolved for, so C{connectTCP(address, port)} right
after (what C{HostnameEndpoint}, C{Agent} and treq do) is allowed as a
connection to that name: the name grant must cover the port and the
rebinding rule must accept the address at the time of the connect.

Confinement: attributes set on the wrapper stay on the wrapper;
C{installNameResolver} and C{installResolver} change the wrapper's resolver
only, and the answers of a resolver the extension installed itself are still
filtered but never count as the name (an address from it needs an IP grant).
C{getReaders}, C{getWriters}, C{removeAll} and C{getDelayedCalls} only see
what was opened or scheduled through this wrapper.

For the host, beyond the reactor interfaces: L{PermissionCheckingReactor.
closeAll} closes everything opened through the wrapper (and, with
C{refuseNew=True}, refuses everything afterwards), and
L{PermissionCheckingReactor.revalidate} closes what no remaining grant allows
after grants were removed.  The grants themselves are not reachable through
the wrapper (the code it is given to must not change them).

This is an advisory boundary, not isolation: the wrapped reactor is kept in
a name-mangled attribute, but Python code running in the same process can
reach it anyway (through the transports and connectors Twisted hands out,
C{gc}, frames).  Hostile code needs the separate isolation feature.
"""

from __future__ import annotations

import ipaddress
import socket
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

from twisted.internet import defer, interfaces
from twisted.internet._resolver import SimpleResolverComplexifier
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import (
    DNSLookupError,
    NotConnectingError,
    ServiceNameUnknownError,
    TimeoutError,
    UserError,
)
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IDelayedCall,
    IHostnameResolver,
    IHostResolution,
    IListeningPort,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    IReactorCore,
    IReactorDaemonize,
    IReactorFDSet,
    IReactorFromThreads,
    IReactorInThreads,
    IReactorMulticast,
    IReactorPluggableNameResolver,
    IReactorPluggableResolver,
    IReactorProcess,
    IReactorSocket,
    IReactorSSL,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IReactorUDP,
    IReactorUNIX,
    IReactorUNIXDatagram,
    IReactorWin32Events,
    IResolutionReceiver,
    IResolverSimple,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer

from tcpext._hosts import ParsedHost, parseHost
from tcpext.permissions import (
    LOCALHOST_ADDRESSES,
    PermissionDenied,
    PermissionSet,
    formatHostPort,
    isLocalhostName,
)

__all__ = ["PermissionCheckingReactor"]

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_IReactorTCP2: Any = getattr(interfaces, "IReactorTCP2", None)

KNOWN_INTERFACES: tuple[Any, ...] = tuple(
    i
    for i in (
        IReactorCore,
        IReactorTime,
        IReactorTCP,
        _IReactorTCP2,
        IReactorSSL,
        IReactorPluggableNameResolver,
        IReactorPluggableResolver,
        IReactorFDSet,
        IReactorFromThreads,
        IReactorInThreads,
        IReactorThreads,
        IReactorProcess,
        IReactorUNIX,
        IReactorUNIXDatagram,
        IReactorUDP,
        IReactorMulticast,
        IReactorSocket,
        IReactorDaemonize,
        IReactorWin32Events,
    )
    if i is not None
)
"""
The reactor interfaces a L{PermissionCheckingReactor} knows how to provide
(forwarding, checking or refusing each method).  It declares those of them
that the wrapped reactor provides; an interface not listed here is not
declared, since nothing of it is forwarded.
"""

REMEMBER_SECONDS = 300.0
"""
How long an address handed out by the checked resolver counts as the name
it was resolved for (reactor time).
"""

REMEMBER_ADDRESSES = 4096
"""
At most this many addresses are remembered (the oldest are forgotten).
"""

CLOSE_DEADLINE = 10.0
"""
L{PermissionCheckingReactor.closeAll} and C{revalidate} fire at the latest
this many seconds (reactor time) after they asked every connection to close,
even if a transport never reported that it did.
"""

_POLL_INTERVAL = 0.01

DENIED_HOST_TEXT = "permission-denied.invalid"


class _DeniedHost(str):
    """
    The host of the placeholder address the checked resolver reports for a
    refused resolution: the text C{permission-denied.invalid} (a name that
    never resolves), carrying the refusal.

    @ivar message: The L{PermissionDenied} message.
    """

    message: str

    def __new__(cls, message: str) -> _DeniedHost:
        """
        @param message: The refusal's message.
        """
        self = super().__new__(cls, DENIED_HOST_TEXT)
        self.message = message
        return self


class AddressForName(str):
    """
    The text of an IP address dialed because a name resolved to it (or, for
    C{localhost} names, maps to it), carrying that name.

    To every reactor and endpoint on the way it is a plain C{str}.  A
    reactor that has the connection opened elsewhere reads C{name}: the
    isolated extension's L{tcpext.sandbox.BrokeredReactor} passes it to the
    host with the connect request, and the host checks that name against
    its own grants (it never takes the child's word for it).

    @ivar name: The canonical name the address was dialed for.
    """

    name: str

    def __new__(cls, address: str, name: str) -> AddressForName:
        """
        @param address: The IP address text.
        @param name: The name it was dialed for.
        """
        self = super().__new__(cls, address)
        self.name = name
        return self


def _denied(what: str, why: str) -> PermissionDenied:
    """
    A L{PermissionDenied} for C{what}, explained by C{why}.
    """
    return PermissionDenied(f"permission denied: {what}: {why}")


def _logPrefix(factory: object) -> str:
    """
    The log prefix Twisted would use for C{factory}.
    """
    if ILoggingContext.providedBy(factory):
        return str(factory.logPrefix())
    return factory.__class__.__name__


def _connectPort(port: object) -> int:
    """
    Check a connect port: an L{int} in 1..65535 or a TCP service name.

    @raise ServiceNameUnknownError: An unknown service name (as Twisted).
    @raise TypeError: Not an L{int} or L{str}.
    @raise ValueError: Outside 1..65535.
    """
    if isinstance(port, str):
        try:
            return socket.getservbyname(port, "tcp")
        except OSError as e:
            raise ServiceNameUnknownError(string=f"{e} ({port!r})")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"a port must be an int, not {type(port).__name__}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1..65535")
    return port


def _parseConnectHost(host: object, port: object) -> ParsedHost:
    """
    Parse a connect host; an invalid or non-canonical one is refused.

    @raise PermissionDenied: C{host} is a non-canonical numeric form (such as
        C{127.1}), or not a valid host at all; the message says which.
    """
    if isinstance(host, _DeniedHost):
        raise PermissionDenied(host.message)
    if not isinstance(host, str):
        raise TypeError(f"a host must be a str, not {type(host).__name__}")
    try:
        return parseHost(host)
    except ValueError as e:
        raise _denied(f"connect to {host!r} port {port}", str(e))


def _transportClosed(transport: object) -> bool:
    """
    Has this transport (or the transport it wraps) finished closing?

    Transports that do not say are treated as closed.
    """
    seen = 0
    while transport is not None and seen < 8:
        seen += 1
        disconnected = getattr(transport, "disconnected", None)
        if disconnected is not None:
            return bool(disconnected)
        transport = getattr(transport, "transport", None)
    return True


def _reportsClosed(transport: object) -> bool:
    """
    Does this transport (or one it wraps) say that it has closed?
    """
    return any(getattr(t, "disconnected", False) for t in _transportChain(transport))


def _transportChain(transport: object) -> Iterable[object]:
    """
    C{transport} and the transports it wraps (a TLS transport wraps TCP).
    """
    seen = 0
    while transport is not None and seen < 8:
        seen += 1
        yield transport
        transport = getattr(transport, "transport", None)


def _abortTransport(transport: object) -> None:
    """
    Close C{transport} now (abort if it can, else lose the connection).
    """
    if transport is None or _reportsClosed(transport):
        return
    abort = getattr(transport, "abortConnection", None)
    try:
        if abort is not None:
            abort()
        else:
            transport.loseConnection()  # type: ignore[attr-defined]
    except Exception:
        pass


class _Authority:
    """
    Why a connection to an address was allowed: the address itself (an
    IP/CIDR or C{*} grant) or the name it was resolved for.
    """

    __slots__ = ("address", "port", "name")

    def __init__(self, address: str, port: int, name: str | None) -> None:
        """
        @param address: The canonical address dialed.
        @param port: The port dialed.
        @param name: The name the address was resolved for, or L{None}.
        """
        self.address = address
        self.port = port
        self.name = name


class _Listener:
    """
    A port opened through the wrapper and the connections it accepted.
    """

    def __init__(self, port: int, interface: str | None) -> None:
        """
        @param port: The port requested (0: chosen automatically).
        @param interface: The interface requested (L{None}: default).
        """
        self.requestedPort = port
        self.interface = interface
        self.listeningPort: Any = None
        self._weak: weakref.WeakSet[Any] = weakref.WeakSet()
        self._strong: list[Any] = []

    def add(self, protocol: object) -> None:
        """
        Remember an accepted connection's protocol.
        """
        try:
            self._weak.add(protocol)
        except TypeError:
            if len(self._strong) >= 64:
                self._strong = [
                    p
                    for p in self._strong
                    if not _reportsClosed(getattr(p, "transport", None))
                ]
            self._strong.append(protocol)

    def transports(self) -> list[Any]:
        """
        The transports of the accepted connections that do not say they
        have closed.
        """
        result = []
        for protocol in [*self._weak, *self._strong]:
            transport = getattr(protocol, "transport", None)
            if transport is not None and not _reportsClosed(transport):
                result.append(transport)
        return result


@implementer(IProtocolFactory, ILoggingContext)
class _TrackingServerFactory:
    """
    The factory a wrapped port really gets: the extension's factory, plus a
    record of each accepted connection (for C{closeAll} and C{revalidate}).
    Anything else is the extension's own factory's.
    """

    def __init__(self, factory: Any, listener: _Listener) -> None:
        """
        @param factory: The extension's server factory.
        @param listener: Where accepted connections are recorded.
        """
        self.wrappedFactory = factory
        self.__listener = listener

    def doStart(self) -> None:
        """
        Forward to the extension's factory.
        """
        self.wrappedFactory.doStart()

    def doStop(self) -> None:
        """
        Forward to the extension's factory.
        """
        self.wrappedFactory.doStop()

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        """
        Build the extension's protocol and remember it.
        """
        protocol: IProtocol | None = self.wrappedFactory.buildProtocol(addr)
        if protocol is not None:
            self.__listener.add(protocol)
        return protocol

    def logPrefix(self) -> str:
        """
        The extension's factory's log prefix.
        """
        return _logPrefix(self.wrappedFactory)

    def __getattr__(self, name: str) -> Any:
        """
        Other attributes are the extension's factory's.
        """
        if name.startswith("_TrackingServerFactory__"):
            raise AttributeError(name)
        return getattr(self.wrappedFactory, name)


@implementer(IProtocolFactory, ILoggingContext)
class _ConnectorFactory:
    """
    The factory a wrapped client connection really gets: it reports the
    wrapped connector's events to the L{_CheckedConnector} (one attempt).
    """

    def __init__(self, connector: _CheckedConnector, attempt: int) -> None:
        """
        @param connector: The connector the extension holds.
        @param attempt: Which connection attempt this is (stale attempts'
            events are ignored).
        """
        self.__connector = connector
        self.__attempt = attempt

    def doStart(self) -> None:
        """
        Ignored: the connector starts the extension's factory itself.
        """

    def doStop(self) -> None:
        """
        Ignored: the connector stops the extension's factory itself.
        """

    def startedConnecting(self, connector: IConnector) -> None:
        """
        Ignored: the connector reports this itself.
        """

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        """
        Build the extension's protocol (the connection is made).
        """
        return self.__connector._built(self.__attempt, addr)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        """
        Report the failure on the extension's connector.
        """
        self.__connector._ended(self.__attempt, reason, lost=False)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        """
        Report the loss on the extension's connector.
        """
        self.__connector._ended(self.__attempt, reason, lost=True)

    def logPrefix(self) -> str:
        """
        The extension's factory's log prefix.
        """
        return _logPrefix(self.__connector.factory)


@implementer(IHostResolution)
class _Resolution:
    """
    A resolution in progress through the checked resolver.
    """

    def __init__(self, name: str) -> None:
        """
        @param name: The name being resolved.
        """
        self.name = name
        self._deferred: Deferred[Any] | None = None

    def cancel(self) -> None:
        """
        Stop the resolution; the receiver is told it is complete.
        """
        if self._deferred is not None and not self._deferred.called:
            self._deferred.cancel()


class _Guard:
    """
    The state of one L{PermissionCheckingReactor}: the wrapped reactor, the
    grants, what was opened through it, and the checked resolution.
    """

    def __init__(
        self,
        reactor: Any,
        permissions: PermissionSet,
        trustedResolver: IHostnameResolver | None,
        log: Logger | None = None,
    ) -> None:
        """
        @param reactor: The wrapped reactor.
        @param permissions: The live grants.
        @param trustedResolver: The resolver whose answers count as the
            name, or L{None} for the wrapped reactor's C{nameResolver}.
        @param log: Where refusals are logged, if anywhere.
        """
        self.reactor = reactor
        self.log = log
        self.permissions = permissions
        self.trustedResolver = trustedResolver
        self.connectors: dict[_CheckedConnector, None] = {}
        self.listeners: dict[int, _Listener] = {}
        self.readers: dict[int, Any] = {}
        self.writers: dict[int, Any] = {}
        self.delayed: weakref.WeakSet[Any] = weakref.WeakSet()
        self.memory: OrderedDict[IPAddress, dict[str, float]] = OrderedDict()
        self.closedReason: str | None = None
        self.nameResolver = _CheckedNameResolver(self, None, trusted=True)
        self.simpleResolver = _CheckedSimpleResolver(self, self.nameResolver)

    # -- refusal ---------------------------------------------------------

    def logDenied(self, request: str, reason: BaseException | None) -> None:
        """
        Log a refused request with its reason (if there is a log).
        """
        if self.log is not None:
            self.log.warn(
                "denied {request}: {reason}", request=request, reason=str(reason)
            )

    def refuseIfClosed(self, what: str) -> None:
        """
        Refuse anything new once C{closeAll(refuseNew=True)} was called.
        """
        if self.closedReason is not None:
            raise _denied(what, self.closedReason)

    # -- resolution ------------------------------------------------------

    def trustedSource(self) -> IHostnameResolver | None:
        """
        The resolver whose answers count as the name.
        """
        if self.trustedResolver is not None:
            return self.trustedResolver
        if IReactorPluggableNameResolver.providedBy(self.reactor):
            resolver: IHostnameResolver = self.reactor.nameResolver
            return resolver
        return None

    def candidatePorts(self, name: str) -> list[int]:
        """
        Ports on which some grant lets code connect to C{name} (one per
        grant: its first port), for checks made without a port.
        """
        ports = set()
        for permission in self.permissions:
            if permission.kind == "connect" and self.permissions.allowsConnect(
                name, permission.portLow
            ):
                ports.add(permission.portLow)
        return sorted(ports)

    def checkName(self, name: str, port: int | None) -> None:
        """
        May C{name} be resolved for C{port} (L{None}: for some port)?

        @raise PermissionDenied: If not.
        """
        self.refuseIfClosed(f"resolve {name}")
        if port is not None:
            self.permissions.checkConnect(name, port)
        elif not self.candidatePorts(name):
            raise _denied(
                f"resolve {name}", "no tcp-connect grant covers this name on any port"
            )

    def query(
        self,
        source: IHostnameResolver | None,
        name: str,
        port: int,
        addressTypes: Sequence[type[IAddress]] | None,
    ) -> Deferred[list[IAddress]]:
        """
        Ask C{source} for the addresses of C{name}, unchecked.
        """
        if source is None:
            return defer.fail(
                DNSLookupError(f"no name resolver to look up {name!r} with")
            )
        begun: list[IHostResolution] = []

        def cancel(d: Deferred[list[IAddress]]) -> None:
            for resolution in begun:
                try:
                    resolution.cancel()
                except Exception:
                    pass

        done: Deferred[list[IAddress]] = Deferred(cancel)
        found: list[IAddress] = []

        @implementer(IResolutionReceiver)
        class Collector:
            @staticmethod
            def resolutionBegan(resolution: IHostResolution) -> None:
                begun.append(resolution)

            @staticmethod
            def addressResolved(address: IAddress) -> None:
                found.append(address)

            @staticmethod
            def resolutionComplete() -> None:
                if not done.called:
                    done.callback(found)

        try:
            source.resolveHostName(
                Collector(),
                name,
                portNumber=port,
                addressTypes=addressTypes,
                transportSemantics="TCP",
            )
        except Exception:
            if not done.called:
                done.errback()
        return done

    def lookup(
        self,
        host: ParsedHost,
        port: int | None,
        addressTypes: Sequence[type[IAddress]] | None,
        resolver: _CheckedNameResolver,
    ) -> Deferred[list[IAddress]]:
        """
        Resolve a name (already checked with L{checkName}) and keep the
        addresses the rebinding rule lets through.

        @return: A L{Deferred} firing with the allowed addresses, or failing
            with L{PermissionDenied} (all refused) or L{DNSLookupError}.
        """
        name = host.text
        trusted = resolver.trusted
        if isLocalhostName(name):
            trusted = True
            found: list[IAddress] = []
            for address in LOCALHOST_ADDRESSES:
                kind = IPv6Address if ":" in address else IPv4Address
                if addressTypes is None or kind in addressTypes:
                    found.append(kind("TCP", address, port or 0))
            d = defer.succeed(found)
        else:
            d = self.query(resolver.source(), name, port or 0, addressTypes)
        return d.addCallback(self.filter, name, port, trusted)

    def filter(
        self,
        found: list[IAddress],
        name: str,
        port: int | None,
        trusted: bool,
    ) -> list[IAddress]:
        """
        The addresses in C{found} that may be dialed for C{name}.
        """
        addresses = [a for a in found if isinstance(a, (IPv4Address, IPv6Address))]
        if not addresses:
            raise DNSLookupError(f"no addresses found for {name}")
        hosts = [a.host for a in addresses]
        ports = [port] if port else self.candidatePorts(name)
        allowed: set[str] = set()
        refusal: PermissionDenied | None = None
        for each in ports:
            try:
                allowed.update(self.permissions.checkResolved(name, each, hosts))
            except PermissionDenied as e:
                refusal = refusal or e
        if not allowed:
            raise refusal or _denied(f"resolve {name}", "the grant was removed")
        kept = [a for a in addresses if a.host in allowed]
        if trusted:
            self.remember(name, [a.host for a in kept])
        result: list[IAddress] = list(kept)
        return result

    def remember(self, name: str, hosts: Iterable[str]) -> None:
        """
        Remember that the trusted resolver gave C{hosts} for C{name}.
        """
        until = self.reactor.seconds() + REMEMBER_SECONDS
        memory = self.memory
        for host in hosts:
            try:
                ip = parseHost(host).ip
            except ValueError:
                continue
            if ip is None:
                continue
            names = memory.get(ip)
            if names is None:
                names = memory[ip] = {}
            else:
                memory.move_to_end(ip)
            names[name] = until
        while len(memory) > REMEMBER_ADDRESSES:
            memory.popitem(last=False)

    def namesFor(self, ip: IPAddress) -> list[str]:
        """
        The names C{ip} was recently resolved for (trusted answers only).
        """
        names = self.memory.get(ip)
        if not names:
            return []
        now = self.reactor.seconds()
        for name, until in list(names.items()):
            if until < now:
                del names[name]
        if not names:
            del self.memory[ip]
        return list(names)

    # -- connect checks --------------------------------------------------

    def nameAllows(self, name: str, port: int, address: str) -> bool:
        """
        Does a grant still allow C{address}, resolved for C{name}, on C{port}?
        """
        if not self.permissions.allowsConnect(name, port):
            return False
        try:
            self.permissions.checkResolved(name, port, [address])
        except (PermissionDenied, ValueError):
            return False
        return True

    def authorizeAddress(self, host: ParsedHost, port: int) -> _Authority:
        """
        Check a connection to an IP address.

        @raise PermissionDenied: If no grant covers it, either literally or
            as a name it was resolved for.
        """
        assert host.ip is not None
        self.refuseIfClosed(f"connect to {formatHostPort(host.text, port)}")
        if self.permissions.allowsConnect(host.text, port):
            return _Authority(host.text, port, None)
        names = self.namesFor(host.ip)
        for name in names:
            if self.nameAllows(name, port, host.text):
                return _Authority(host.text, port, name)
        try:
            self.permissions.checkConnect(host.text, port)
        except PermissionDenied as e:
            if names:
                raise PermissionDenied(
                    f"{e} (it was resolved for {', '.join(names)}, which no "
                    f"grant allows on port {port} at this address)"
                )
            raise
        raise AssertionError("checkConnect allowed what allowsConnect refused")

    def stillAllowed(self, authority: _Authority) -> bool:
        """
        Does a grant still allow the connection C{authority} describes?
        """
        if authority.name is None:
            return self.permissions.allowsConnect(authority.address, authority.port)
        return self.nameAllows(authority.name, authority.port, authority.address)

    def dialPlan(
        self, addresses: list[IAddress], name: str, port: int, trusted: bool
    ) -> tuple[str, _Authority]:
        """
        Choose the address to dial for C{name} (IPv4 first, as Twisted's
        C{connectTCP} does).

        @raise PermissionDenied: If none may be dialed.
        """
        ordered = [a for a in addresses if isinstance(a, IPv4Address)] + [
            a for a in addresses if isinstance(a, IPv6Address)
        ]
        for address in ordered:
            text = parseHost(address.host).text
            if trusted:
                return text, _Authority(text, port, name)
            if self.permissions.allowsConnect(text, port):
                return text, _Authority(text, port, None)
        raise _denied(
            f"connect to {formatHostPort(name, port)}",
            "the addresses from a resolver installed on this reactor need an "
            "IP/CIDR grant: " + ", ".join(a.host for a in ordered),
        )

    # -- tracking --------------------------------------------------------

    def scope(self) -> set[int]:
        """
        The ids of the selectables that belong to this wrapper.
        """
        ids = set(self.readers) | set(self.writers)
        for listener in self.listeners.values():
            ids.add(id(listener.listeningPort))
            for transport in listener.transports():
                ids.update(id(t) for t in _transportChain(transport))
        for connector in self.connectors:
            ids.update(id(t) for t in _transportChain(connector.transport))
        return ids

    def pruneListeners(self) -> None:
        """
        Forget ports that stopped listening and accepted nothing still open.
        """
        for key, listener in list(self.listeners.items()):
            port = listener.listeningPort
            if getattr(port, "connected", True) is False and not listener.transports():
                del self.listeners[key]

    def waitClosed(self, transport: object) -> Deferred[None]:
        """
        A L{Deferred} that fires once C{transport} has closed (polled, for
        at most L{CLOSE_DEADLINE} seconds).
        """
        done: Deferred[None] = Deferred()
        polls = [int(CLOSE_DEADLINE / _POLL_INTERVAL)]

        def check() -> None:
            polls[0] -= 1
            if _transportClosed(transport) or polls[0] <= 0:
                done.callback(None)
            else:
                self.reactor.callLater(_POLL_INTERVAL, check)

        check()
        return done

    def closeListener(self, listener: _Listener) -> list[Deferred[Any]]:
        """
        Stop listening and abort the accepted connections.
        """
        self.listeners.pop(id(listener.listeningPort), None)
        waits: list[Deferred[Any]] = [
            defer.maybeDeferred(listener.listeningPort.stopListening)
        ]
        for transport in listener.transports():
            _abortTransport(transport)
            waits.append(self.waitClosed(transport))
        return waits

    def gather(self, waits: list[Deferred[Any]]) -> Deferred[None]:
        """
        A L{Deferred} that fires once every one of C{waits} has, or after
        L{CLOSE_DEADLINE}; it never fails.  (C{waits} are not cancelled.)
        """
        done: Deferred[None] = Deferred()
        remaining = [len(waits)]
        timer: list[Any] = []

        def finish() -> None:
            if not done.called:
                for call in timer:
                    if call.active():
                        call.cancel()
                done.callback(None)

        def one(result: object) -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                finish()

        for d in waits:
            d.addBoth(one)
        if not done.called:
            if remaining[0] <= 0:
                finish()
            else:
                timer.append(self.reactor.callLater(CLOSE_DEADLINE, finish))
        return done


@implementer(IHostnameResolver)
class _CheckedNameResolver:
    """
    The C{nameResolver} of a L{PermissionCheckingReactor}: resolves a name
    only when a name grant covers it (and the port, if one is given), and
    reports only the addresses the rebinding rule lets through.

    A refusal is reported as a single placeholder address whose host carries
    the refusal (L{IResolutionReceiver} has no error channel); the wrapper's
    C{connectTCP} raises L{PermissionDenied} for it.
    """

    def __init__(
        self, guard: _Guard, source: IHostnameResolver | None, trusted: bool
    ) -> None:
        """
        @param guard: The wrapper's state.
        @param source: The resolver asked, or L{None} for the trusted one.
        @param trusted: Do this resolver's answers count as the name?
        """
        self.__guard = guard
        self.__source = source
        self.trusted = trusted

    def _isFor(self, guard: _Guard) -> bool:
        """
        Does this resolver belong to C{guard}'s wrapper?
        """
        return self.__guard is guard

    def source(self) -> IHostnameResolver | None:
        """
        The resolver that answers the questions.
        """
        if self.__source is None:
            return self.__guard.trustedSource()
        return self.__source

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        """
        See L{IHostnameResolver.resolveHostName}; checked as described in
        the class docstring.
        """
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        port = portNumber or None

        def deny(message: str) -> None:
            self.__guard.logDenied(
                f"nameResolver.resolveHostName({hostName!r}, {portNumber})",
                PermissionDenied(message),
            )
            kind: type[IPv4Address] | type[IPv6Address] = IPv4Address
            if addressTypes is not None and IPv4Address not in addressTypes:
                kind = IPv6Address
            resolutionReceiver.addressResolved(
                kind("TCP", _DeniedHost(message), portNumber)
            )
            resolutionReceiver.resolutionComplete()

        if transportSemantics != "TCP":
            deny(
                f"permission denied: resolve {hostName!r} for "
                f"{transportSemantics}: only TCP is allowed"
            )
            return resolution
        try:
            host = _parseConnectHost(hostName, portNumber)
            if host.ip is not None:
                kind = IPv6Address if host.ip.version == 6 else IPv4Address
                if addressTypes is None or kind in addressTypes:
                    resolutionReceiver.addressResolved(
                        kind("TCP", host.text, portNumber)
                    )
                resolutionReceiver.resolutionComplete()
                return resolution
            self.__guard.checkName(host.text, port)
        except (PermissionDenied, TypeError, ValueError) as e:
            if isinstance(e, PermissionDenied):
                deny(str(e))
            else:
                deny(f"permission denied: resolve {hostName!r}: {e}")
            return resolution

        d = self.__guard.lookup(host, port, addressTypes, self)
        resolution._deferred = d

        def deliver(addresses: list[IAddress]) -> None:
            for address in addresses:
                resolutionReceiver.addressResolved(address)
            resolutionReceiver.resolutionComplete()

        def failed(reason: Failure) -> None:
            if reason.check(PermissionDenied):
                deny(str(reason.value))
            else:
                resolutionReceiver.resolutionComplete()

        d.addCallbacks(deliver, failed)
        return resolution


@implementer(IResolverSimple)
class _CheckedSimpleResolver:
    """
    The old-style resolver of a L{PermissionCheckingReactor}
    (C{installResolver}'s return value, C{resolver}): C{getHostByName} is the
    wrapper's checked C{resolve}.
    """

    def __init__(self, guard: _Guard, nameResolver: _CheckedNameResolver) -> None:
        """
        @param guard: The wrapper's state.
        @param nameResolver: The checked resolver it answers with.
        """
        self.__guard = guard
        self.nameResolver = nameResolver

    def _isFor(self, guard: _Guard) -> bool:
        """
        Does this resolver belong to C{guard}'s wrapper?
        """
        return self.__guard is guard

    def getHostByName(
        self, name: str, timeout: Sequence[int] = (1, 3, 11, 45)
    ) -> Deferred[str]:
        """
        Resolve C{name} to one IPv4 address, checked.
        """
        return _resolveOne(self.__guard, self.nameResolver, name)


def _resolveOne(
    guard: _Guard, resolver: _CheckedNameResolver, name: str
) -> Deferred[str]:
    """
    The checked C{resolve()}: one IPv4 address for C{name}.
    """

    def logged(reason: Failure) -> Failure:
        if reason.check(PermissionDenied):
            guard.logDenied(f"reactor.resolve({name!r})", reason.value)
        return reason

    try:
        host = _parseConnectHost(name, "any")
        if host.ip is not None:
            return defer.succeed(host.text)
        guard.checkName(host.text, None)
    except Exception:
        return defer.fail().addErrback(logged)

    def first(addresses: list[IAddress]) -> str:
        address = addresses[0]
        assert isinstance(address, IPv4Address)
        return address.host

    d = guard.lookup(host, None, [IPv4Address], resolver)
    return d.addCallback(first).addErrback(logged)


@implementer(IConnector)
class _CheckedConnector:
    """
    The connector C{connectTCP}/C{connectSSL} return: every C{connect()}
    checks the grants again, names are resolved through the checked resolver
    and only a checked address is handed to the wrapped reactor.

    @ivar host: The host as given.
    @ivar port: The port.
    @ivar factory: The extension's client factory.
    @ivar timeout: The connection timeout in seconds (or L{None}).
    @ivar bindAddress: The local address to bind, as given.
    @ivar state: C{"disconnected"}, C{"connecting"} or C{"connected"}.
    """

    def __init__(
        self,
        guard: _Guard,
        host: str,
        parsed: ParsedHost,
        port: int,
        factory: Any,
        timeout: float | None,
        bindAddress: Any,
        contextFactory: Any = None,
        tls: bool = False,
    ) -> None:
        """
        See the instance variables; C{contextFactory} and C{tls} for
        C{connectSSL}.
        """
        self.__guard = guard
        self.__parsed = parsed
        self.__contextFactory = contextFactory
        self.__tls = tls
        self.__request = (
            f"reactor.{'connectSSL' if tls else 'connectTCP'}"
            f"({formatHostPort(host, port)})"
        )
        self.host = host
        self.port = port
        self.factory = factory
        self.timeout = timeout
        self.bindAddress = bindAddress
        self.state = "disconnected"
        self.__attempt = 0
        self.__inner: Any = None
        self.__protocol: IProtocol | None = None
        self.__lookup: Deferred[Any] | None = None
        self.__timer: Any = None
        self.__authority: _Authority | None = None
        self.__waiters: list[Deferred[None]] = []
        self.__finished: str | None = None
        self.__started = 0.0

    def __repr__(self) -> str:
        """
        Describe the connector.
        """
        where = formatHostPort(self.host, self.port)
        return f"<PermissionCheckingReactor connector to {where} ({self.state})>"

    @property
    def transport(self) -> Any:
        """
        The transport of the current attempt, or L{None}.
        """
        if self.state == "connected":
            transport = getattr(self.__protocol, "transport", None)
            if transport is not None:
                return transport
        inner = self.__inner
        return None if inner is None else getattr(inner, "transport", None)

    def getDestination(self) -> IAddress:
        """
        The destination as given (see L{IConnector.getDestination}).
        """
        if self.__parsed.ip is not None and self.__parsed.ip.version == 6:
            return IPv6Address("TCP", self.host, self.port)
        return IPv4Address("TCP", self.host, self.port)

    def connect(self) -> None:
        """
        Start connecting (see L{IConnector.connect}), after checking the
        grants again.

        @raise PermissionDenied: If no grant allows the connection now.
        @raise RuntimeError: If not disconnected.
        """
        if self.state != "disconnected":
            raise RuntimeError("can't connect in this state")
        guard = self.__guard
        where = f"connect to {formatHostPort(self.__parsed.text, self.port)}"
        try:
            if self.__finished is not None:
                raise _denied(where, self.__finished)
            authority = None
            if self.__parsed.ip is not None:
                authority = guard.authorizeAddress(self.__parsed, self.port)
            else:
                guard.refuseIfClosed(where)
                guard.permissions.checkConnect(self.__parsed.text, self.port)
        except PermissionDenied as e:
            guard.logDenied(self.__request, e)
            raise
        self.__attempt += 1
        attempt = self.__attempt
        self.state = "connecting"
        self.__authority = authority
        guard.connectors[self] = None
        self.__started = guard.reactor.seconds()
        self.factory.doStart()
        if authority is not None:
            try:
                self.__dial(attempt, authority.address)
            except BaseException:
                self.__attempt += 1
                self.state = "disconnected"
                self.__forget()
                self.factory.doStop()
                raise
        else:
            self.__resolve(attempt)
        if self.state == "connecting" and attempt == self.__attempt:
            self.factory.startedConnecting(self)

    def __resolve(self, attempt: int) -> None:
        """
        Resolve the name through the checked resolver, then dial.
        """
        guard = self.__guard
        resolver = guard.nameResolver
        synchronous = True

        def resolved(addresses: list[IAddress]) -> None:
            if attempt != self.__attempt:
                return
            self.__lookup = None
            self.__cancelTimer()
            try:
                address, authority = guard.dialPlan(
                    addresses, self.__parsed.text, self.port, resolver.trusted
                )
                self.__authority = authority
                self.__dial(attempt, address)
            except BaseException:
                failed(Failure())

        def failed(reason: Failure) -> None:
            if attempt != self.__attempt:
                return
            if reason.check(PermissionDenied):
                guard.logDenied(self.__request, reason.value)
            self.__lookup = None
            self.__cancelTimer()
            if synchronous:
                # As in Twisted, startedConnecting comes before any failure.
                self.__timer = guard.reactor.callLater(
                    0, self._ended, attempt, reason, False
                )
            else:
                self._ended(attempt, reason, False)

        d = guard.lookup(self.__parsed, self.port, None, resolver)
        if not d.called:
            self.__lookup = d
            if self.timeout is not None:
                self.__timer = guard.reactor.callLater(
                    self.timeout, self.__timedOut, attempt
                )
        d.addCallbacks(resolved, failed)
        d.addErrback(lambda f: None)
        synchronous = False

    def __dial(self, attempt: int, address: str) -> None:
        """
        Hand the checked address to the wrapped reactor.
        """
        reactor = self.__guard.reactor
        timeout = self.timeout
        if timeout is not None:
            timeout = max(timeout - (reactor.seconds() - self.__started), 0.001)
        authority = self.__authority
        if authority is not None and authority.name is not None:
            address = AddressForName(address, authority.name)
        factory = _ConnectorFactory(self, attempt)
        if self.__tls:
            inner = reactor.connectSSL(
                address,
                self.port,
                factory,
                self.__contextFactory,
                timeout,
                self.bindAddress,
            )
        else:
            inner = reactor.connectTCP(
                address, self.port, factory, timeout, self.bindAddress
            )
        if attempt == self.__attempt and self.state != "disconnected":
            self.__inner = inner

    def __cancelTimer(self) -> None:
        """
        Cancel the lookup timeout or the scheduled failure, if any.
        """
        timer, self.__timer = self.__timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def __timedOut(self, attempt: int) -> None:
        """
        The lookup took longer than the connection timeout.
        """
        self.__timer = None
        if attempt != self.__attempt:
            return
        self.__detach()
        self.__end(Failure(TimeoutError()), lost=False)

    def __detach(self) -> None:
        """
        Abandon the attempt in progress: stop its lookup or wrapped
        connection attempt, whose reports are then ignored.
        """
        self.__attempt += 1
        lookup, self.__lookup = self.__lookup, None
        inner, self.__inner = self.__inner, None
        self.__cancelTimer()
        if lookup is not None:
            lookup.cancel()
        if inner is not None:
            try:
                inner.stopConnecting()
            except Exception:
                pass

    def __forget(self) -> None:
        """
        Stop tracking this connector and tell whoever waits for its end.
        """
        self.__guard.connectors.pop(self, None)
        waiters, self.__waiters = self.__waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)

    def __end(self, reason: Failure, lost: bool) -> None:
        """
        Report the end of the attempt or connection to the factory.
        """
        self.__inner = None
        self.__protocol = None
        self.state = "disconnected"
        try:
            if lost:
                self.factory.clientConnectionLost(self, reason)
            else:
                self.factory.clientConnectionFailed(self, reason)
        finally:
            if self.state == "disconnected":
                self.factory.doStop()
                self.__forget()

    def _built(self, attempt: int, addr: IAddress) -> IProtocol | None:
        """
        The wrapped connection was made: build the extension's protocol.
        """
        if attempt != self.__attempt or self.state != "connecting":
            return None
        self.state = "connected"
        protocol: IProtocol | None = self.factory.buildProtocol(addr)
        self.__protocol = protocol
        return protocol

    def _ended(self, attempt: int, reason: Failure, lost: bool) -> None:
        """
        An attempt failed or a connection was lost (stale reports ignored).
        """
        if attempt != self.__attempt or self.state == "disconnected":
            return
        self.__timer = None
        self.__end(reason, lost)

    def stopConnecting(self) -> None:
        """
        Stop the attempt in progress (see L{IConnector.stopConnecting}): the
        factory's C{clientConnectionFailed} receives L{UserError}.
        """
        if self.state != "connecting":
            raise NotConnectingError("we're not trying to connect")
        self.__detach()
        self.__end(Failure(UserError()), lost=False)

    def disconnect(self) -> None:
        """
        Stop connecting or close the connection (see L{IConnector.disconnect}).
        """
        if self.state == "connecting":
            self.stopConnecting()
        elif self.state == "connected" and self.__inner is not None:
            self.__inner.disconnect()

    def _stillAllowed(self) -> bool:
        """
        Do the grants still allow this connection (or attempt)?
        """
        if self.__authority is not None:
            return self.__guard.stillAllowed(self.__authority)
        return self.__guard.permissions.allowsConnect(self.__parsed.text, self.port)

    def _abort(self, finished: str | None) -> Deferred[None]:
        """
        Close now; with C{finished}, also refuse later C{connect()} calls.

        @return: A L{Deferred} that fires once the connector has ended.
        """
        if finished is not None:
            self.__finished = finished
        if self.state == "disconnected":
            self.__forget()
            return defer.succeed(None)
        done: Deferred[None] = Deferred()
        self.__waiters.append(done)
        if self.state == "connecting":
            self.stopConnecting()
        else:
            _abortTransport(self.transport)
        return done


def _refused(what: str, why: str) -> Callable[..., Any]:
    """
    A method that refuses C{what} with L{PermissionDenied}.
    """

    def refuse(self: object, *args: object, **kwargs: object) -> Any:
        error = _denied(what, why)
        guard = getattr(self, "_PermissionCheckingReactor__guard", None)
        if guard is not None:
            guard.logDenied(f"reactor.{what}()", error)
        raise error

    refuse.__name__ = what
    refuse.__doc__ = f"""
        Refused: raises L{{PermissionDenied}} ({why}).
        """
    return refuse


_PROCESSES = "running processes is not allowed to extensions"
_UNIX = "UNIX sockets are not allowed to extensions (only TCP grants exist)"
_UDP = "UDP is not allowed to extensions (only TCP grants exist)"
_ADOPT = "adopting file descriptors is not allowed to extensions"
_THREADS = (
    "threads are not allowed to extensions in the service's process (code in "
    "a thread could reach the network without checks); run the extension "
    "with --isolation process, where the kernel confines its threads too"
)
_HOST = "this is the host's business, not an extension's"


class PermissionCheckingReactor:
    """
    A reactor that forwards to a real one, limited by a live
    L{PermissionSet}.  See the module docstring for what is checked,
    refused and confined.

    Extras for the host (not reactor interfaces):
      - L{closeAll}: close every port and connection opened through it;
      - L{revalidate}: after grants were removed, close what no remaining
        grant allows.
    """

    def __init__(
        self,
        reactor: Any,
        permissions: PermissionSet,
        *,
        nameResolver: IHostnameResolver | None = None,
        log: Logger | None = None,
        allowThreads: bool = False,
    ) -> None:
        """
        @param reactor: The reactor to wrap.
        @param permissions: The live grants (later changes apply at once;
            call L{revalidate} to close what a removed grant allowed).
        @param nameResolver: The resolver whose answers count as the name
            (the operator's); by default the wrapped reactor's
            C{nameResolver}, read at each lookup.
        @param log: Where to log each refusal (C{"denied {request}:
            {reason}"}, at warning level); by default refusals are not
            logged, only raised or reported.
        @param allowThreads: Forward the thread methods (C{callInThread},
            C{getThreadPool}, C{suggestThreadPoolSize}) instead of refusing
            them; only for a process the kernel confines as a whole.
        """
        if not isinstance(permissions, PermissionSet):
            raise TypeError(
                f"permissions must be a PermissionSet, not {type(permissions).__name__}"
            )
        self.__guard = _Guard(reactor, permissions, nameResolver, log)
        self.__threads = allowThreads
        directlyProvides(self, *[i for i in KNOWN_INTERFACES if i.providedBy(reactor)])

    def __repr__(self) -> str:
        """
        Describe the wrapper (without exposing the wrapped reactor).
        """
        return f"<PermissionCheckingReactor {self.__guard.permissions!r}>"

    # -- IReactorCore ----------------------------------------------------

    @property
    def running(self) -> bool:
        """
        Is the wrapped reactor running?
        """
        return bool(self.__guard.reactor.running)

    def resolve(
        self, name: str, timeout: Sequence[int] = (1, 3, 11, 45)
    ) -> Deferred[str]:
        """
        Resolve C{name} to one IPv4 address, checked: a name grant must cover
        C{name} on some port and the address must pass the rebinding rule
        for such a port.  The answer fails with L{PermissionDenied} if not.
        """
        guard = self.__guard
        return _resolveOne(guard, guard.nameResolver, name)

    def run(self) -> None:
        """
        Forward to the wrapped reactor.
        """
        self.__guard.reactor.run()

    def stop(self) -> None:
        """
        Forward to the wrapped reactor.
        """
        self.__guard.reactor.stop()

    def crash(self) -> None:
        """
        Forward to the wrapped reactor.
        """
        self.__guard.reactor.crash()

    def iterate(self, delay: float = 0.0) -> None:
        """
        Forward to the wrapped reactor.
        """
        self.__guard.reactor.iterate(delay)

    def fireSystemEvent(self, eventType: str) -> None:
        """
        Forward to the wrapped reactor.
        """
        self.__guard.reactor.fireSystemEvent(eventType)

    def addSystemEventTrigger(
        self,
        phase: str,
        eventType: str,
        callable: Callable[..., Any],
        *args: object,
        **kwargs: object,
    ) -> Any:
        """
        Forward to the wrapped reactor.
        """
        return self.__guard.reactor.addSystemEventTrigger(
            phase, eventType, callable, *args, **kwargs
        )

    def removeSystemEventTrigger(self, triggerID: Any) -> None:
        """
        Forward to the wrapped reactor.
        """
        self.__guard.reactor.removeSystemEventTrigger(triggerID)

    def callWhenRunning(
        self, callable: Callable[..., Any], *args: object, **kwargs: object
    ) -> Any:
        """
        Forward to the wrapped reactor.
        """
        return self.__guard.reactor.callWhenRunning(callable, *args, **kwargs)

    # -- IReactorTime ----------------------------------------------------

    def seconds(self) -> float:
        """
        Forward to the wrapped reactor.
        """
        return float(self.__guard.reactor.seconds())

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: object, **kw: object
    ) -> IDelayedCall:
        """
        Forward to the wrapped reactor (and remember the call, for
        L{getDelayedCalls}).
        """
        call: IDelayedCall = self.__guard.reactor.callLater(
            delay, callable, *args, **kw
        )
        try:
            self.__guard.delayed.add(call)
        except TypeError:
            pass
        return call

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:
        """
        The pending calls scheduled through this wrapper (not the wrapped
        reactor's others).
        """
        return [call for call in self.__guard.delayed if call.active()]

    # -- IReactorFromThreads / IReactorThreads ---------------------------

    def callFromThread(
        self, callable: Callable[..., Any], *args: object, **kwargs: object
    ) -> None:
        """
        Forward to the wrapped reactor (it runs C{callable} in the reactor
        thread, which grants nothing new).
        """
        self.__guard.reactor.callFromThread(callable, *args, **kwargs)

    _refuseCallInThread = _refused("callInThread", _THREADS)
    _refuseGetThreadPool = _refused("getThreadPool", _THREADS)
    _refuseSuggestThreadPoolSize = _refused("suggestThreadPoolSize", _THREADS)

    def callInThread(
        self, callable: Callable[..., Any], *args: object, **kwargs: object
    ) -> None:
        """
        Run C{callable} in the wrapped reactor's thread pool, where threads
        are allowed; otherwise raise L{PermissionDenied}.
        """
        if not self.__threads:
            self._refuseCallInThread(callable, *args, **kwargs)
        self.__guard.reactor.callInThread(callable, *args, **kwargs)

    def getThreadPool(self) -> Any:
        """
        The wrapped reactor's thread pool, where threads are allowed;
        otherwise raise L{PermissionDenied}.
        """
        if not self.__threads:
            self._refuseGetThreadPool()
        return self.__guard.reactor.getThreadPool()

    def suggestThreadPoolSize(self, size: int) -> None:
        """
        Forward, where threads are allowed; otherwise raise
        L{PermissionDenied}.
        """
        if not self.__threads:
            self._refuseSuggestThreadPoolSize(size)
        self.__guard.reactor.suggestThreadPoolSize(size)

    # -- IReactorPluggableNameResolver / IReactorPluggableResolver -------

    @property
    def nameResolver(self) -> IHostnameResolver:
        """
        The checked resolver (see the module docstring).
        """
        return self.__guard.nameResolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        """
        Use C{resolver} for this wrapper only (the wrapped reactor keeps its
        own).  Its answers are still checked, and do not count as the name:
        connecting to an address it gave needs an IP/CIDR grant.  Installing
        a resolver this wrapper handed out restores it.

        @return: The previous C{nameResolver}.
        """
        guard = self.__guard
        previous = guard.nameResolver
        if isinstance(resolver, _CheckedNameResolver) and resolver._isFor(guard):
            guard.nameResolver = resolver
        else:
            if not IHostnameResolver.providedBy(resolver):
                raise TypeError(f"{resolver!r} does not provide IHostnameResolver")
            guard.nameResolver = _CheckedNameResolver(guard, resolver, trusted=False)
        guard.simpleResolver = _CheckedSimpleResolver(guard, guard.nameResolver)
        return previous

    def installResolver(self, resolver: IResolverSimple) -> IResolverSimple:
        """
        Like L{installNameResolver}, for an old-style resolver.

        @return: The previous C{resolver}.
        """
        guard = self.__guard
        previous = guard.simpleResolver
        if isinstance(resolver, _CheckedSimpleResolver) and resolver._isFor(guard):
            guard.simpleResolver = resolver
            guard.nameResolver = resolver.nameResolver
        else:
            if not IResolverSimple.providedBy(resolver):
                raise TypeError(f"{resolver!r} does not provide IResolverSimple")
            guard.nameResolver = _CheckedNameResolver(
                guard, SimpleResolverComplexifier(resolver), trusted=False
            )
            guard.simpleResolver = _CheckedSimpleResolver(guard, guard.nameResolver)
        return previous

    @property
    def resolver(self) -> IResolverSimple:
        """
        The checked old-style resolver (its C{getHostByName} is L{resolve}).
        """
        return self.__guard.simpleResolver

    # -- IReactorTCP / IReactorSSL ---------------------------------------

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: Any,
        timeout: float | None = 30.0,
        bindAddress: Any = None,
    ) -> IConnector:
        """
        Connect, if a C{tcp-connect} grant allows it (see the module
        docstring for names).

        @raise PermissionDenied: No grant covers C{host:port}, or C{host} is
            a non-canonical numeric form.
        """
        return self.__connect(host, port, factory, timeout, bindAddress, None, False)

    def connectSSL(
        self,
        host: str,
        port: int,
        factory: Any,
        contextFactory: Any,
        timeout: float | None = 30.0,
        bindAddress: Any = None,
    ) -> IConnector:
        """
        Connect with TLS, if a C{tcp-connect} grant allows it (as
        L{connectTCP}).
        """
        return self.__connect(
            host, port, factory, timeout, bindAddress, contextFactory, True
        )

    def __connect(
        self,
        host: str,
        port: object,
        factory: Any,
        timeout: float | None,
        bindAddress: Any,
        contextFactory: Any,
        tls: bool,
    ) -> IConnector:
        """
        Check and start a client connection.
        """
        try:
            parsed = _parseConnectHost(host, port)
        except PermissionDenied as e:
            if not isinstance(host, _DeniedHost):
                request = "connectSSL" if tls else "connectTCP"
                self.__guard.logDenied(f"reactor.{request}({host!r}, {port!r})", e)
            raise
        number = _connectPort(port)
        connector = _CheckedConnector(
            self.__guard,
            host,
            parsed,
            number,
            factory,
            timeout,
            bindAddress,
            contextFactory,
            tls,
        )
        connector.connect()
        return connector

    def listenTCP(
        self, port: Any, factory: Any, backlog: int = 50, interface: str | None = ""
    ) -> IListeningPort:
        """
        Listen, if a C{tcp-listen} grant allows the port on the interface
        (port 0, chosen automatically, needs C{tcp-listen:*}).

        @raise PermissionDenied: If no grant allows it, or C{interface} is
            not a canonical IP address.
        """
        return self.__listen(port, factory, backlog, interface, None, False)

    def listenSSL(
        self,
        port: Any,
        factory: Any,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        """
        Listen with TLS, if a C{tcp-listen} grant allows it (as
        L{listenTCP}).
        """
        return self.__listen(port, factory, backlog, interface, contextFactory, True)

    def __listen(
        self,
        port: Any,
        factory: Any,
        backlog: int,
        interface: str | None,
        contextFactory: Any,
        tls: bool,
    ) -> IListeningPort:
        """
        Check and open a listening port.
        """
        guard = self.__guard
        number, host = port, interface
        if not isinstance(port, int):
            # A Binding (IReactorTCP2): its address and port are what counts.
            number = getattr(port, "_port", port)
            host = getattr(port, "_address", interface)
        if host == "":
            host = None
        what = f"listen on port {number}" + ("" if host is None else f" of {host!r}")
        if host is not None and not isinstance(host, str):
            raise TypeError(f"an interface must be a str, not {type(host).__name__}")
        try:
            guard.refuseIfClosed(what)
            if host is not None:
                try:
                    parsed = parseHost(host)
                except ValueError as e:
                    raise _denied(what, str(e))
                if parsed.ip is None:
                    raise _denied(
                        what, "the interface must be an IP address, not a name"
                    )
            guard.permissions.checkListen(number, host)
        except PermissionDenied as e:
            request = "listenSSL" if tls else "listenTCP"
            guard.logDenied(f"reactor.{request}({number!r}, {host!r})", e)
            raise
        guard.pruneListeners()
        listener = _Listener(number, host)
        tracking = _TrackingServerFactory(factory, listener)
        if tls:
            listening = guard.reactor.listenSSL(
                port, tracking, contextFactory, backlog, interface
            )
        else:
            listening = guard.reactor.listenTCP(port, tracking, backlog, interface)
        listener.listeningPort = listening
        guard.listeners[id(listening)] = listener
        return listening

    # -- refused ---------------------------------------------------------

    spawnProcess = _refused("spawnProcess", _PROCESSES)
    connectUNIX = _refused("connectUNIX", _UNIX)
    listenUNIX = _refused("listenUNIX", _UNIX)
    connectUNIXDatagram = _refused("connectUNIXDatagram", _UNIX)
    listenUNIXDatagram = _refused("listenUNIXDatagram", _UNIX)
    listenUDP = _refused("listenUDP", _UDP)
    listenMulticast = _refused("listenMulticast", _UDP)
    adoptStreamPort = _refused("adoptStreamPort", _ADOPT)
    adoptStreamConnection = _refused("adoptStreamConnection", _ADOPT)
    adoptDatagramPort = _refused("adoptDatagramPort", _ADOPT)
    listenWith = _refused("listenWith", "arbitrary transports are not allowed")
    connectWith = _refused("connectWith", "arbitrary transports are not allowed")
    beforeDaemonize = _refused("beforeDaemonize", _HOST)
    afterDaemonize = _refused("afterDaemonize", _HOST)
    addEvent = _refused("addEvent", _HOST)
    removeEvent = _refused("removeEvent", _HOST)

    # -- IReactorFDSet ---------------------------------------------------

    def addReader(self, reader: Any) -> None:
        """
        Forward to the wrapped reactor.  (Watching a descriptor the code
        already holds grants no new network access.)
        """
        self.__guard.reactor.addReader(reader)
        self.__guard.readers[id(reader)] = reader

    def addWriter(self, writer: Any) -> None:
        """
        Forward to the wrapped reactor (see L{addReader}).
        """
        self.__guard.reactor.addWriter(writer)
        self.__guard.writers[id(writer)] = writer

    def removeReader(self, reader: Any) -> None:
        """
        Forward to the wrapped reactor.
        """
        self.__guard.readers.pop(id(reader), None)
        self.__guard.reactor.removeReader(reader)

    def removeWriter(self, writer: Any) -> None:
        """
        Forward to the wrapped reactor.
        """
        self.__guard.writers.pop(id(writer), None)
        self.__guard.reactor.removeWriter(writer)

    def getReaders(self) -> list[Any]:
        """
        The wrapped reactor's readers that belong to this wrapper (added
        through it, or its ports and connections).
        """
        scope = self.__guard.scope()
        return [r for r in self.__guard.reactor.getReaders() if id(r) in scope]

    def getWriters(self) -> list[Any]:
        """
        The wrapped reactor's writers that belong to this wrapper.
        """
        scope = self.__guard.scope()
        return [w for w in self.__guard.reactor.getWriters() if id(w) in scope]

    def removeAll(self) -> list[Any]:
        """
        Remove this wrapper's readers and writers (not anybody else's).
        """
        guard = self.__guard
        readers = self.getReaders()
        writers = self.getWriters()
        for reader in readers:
            guard.reactor.removeReader(reader)
        for writer in writers:
            guard.reactor.removeWriter(writer)
        guard.readers.clear()
        guard.writers.clear()
        removed = {id(x): x for x in readers + writers}
        return list(removed.values())

    # -- the host's controls ---------------------------------------------

    def closeAll(self, *, refuseNew: bool = False) -> Deferred[None]:
        """
        Close every port and connection opened through this reactor:
        ports stop listening, connections are aborted, connection attempts
        stopped, and their connectors refuse to C{connect()} again; readers
        and writers added through it are removed.

        @param refuseNew: Also refuse every later connect, listen and
            resolution, and cancel the pending calls scheduled through this
            reactor (for an extension being unloaded).
        @return: A L{Deferred} that fires (never fails) once everything has
            closed, or after L{CLOSE_DEADLINE} seconds at the latest.
        """
        guard = self.__guard
        if refuseNew:
            guard.closedReason = "this reactor was closed (the extension was stopped)"
            for call in list(guard.delayed):
                if call.active():
                    call.cancel()
        for reader in list(guard.readers.values()):
            self.removeReader(reader)
        for writer in list(guard.writers.values()):
            self.removeWriter(writer)
        waits: list[Deferred[Any]] = []
        for listener in list(guard.listeners.values()):
            waits.extend(guard.closeListener(listener))
        for connector in list(guard.connectors):
            waits.append(connector._abort("the connection was closed by closeAll()"))
        return guard.gather(waits)

    def revalidate(self) -> Deferred[None]:
        """
        After grants changed: close the ports and connections opened
        through this reactor that no remaining grant allows (a port's
        accepted connections go with it).

        @return: A L{Deferred} that fires (never fails) once they have
            closed, or after L{CLOSE_DEADLINE} seconds at the latest.
        """
        guard = self.__guard
        waits: list[Deferred[Any]] = []
        for listener in list(guard.listeners.values()):
            if not guard.permissions.allowsListen(
                listener.requestedPort, listener.interface
            ):
                waits.extend(guard.closeListener(listener))
        for connector in list(guard.connectors):
            if not connector._stillAllowed():
                waits.append(connector._abort(None))
        return guard.gather(waits)
