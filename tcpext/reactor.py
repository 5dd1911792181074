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

How denial is signalled (as Twisted signals the same kind of failure):

  - A refused connection is a failed connection: C{connectTCP} /
    C{connectSSL} always return a connector, and when no grant allows the
    host and port (or the host is a non-canonical numeric form such as
    C{127.1}, or a name's every address is refused by the rebinding rule),
    the factory's C{clientConnectionFailed} receives a L{PermissionDenied}
    failure on a later reactor turn, after C{startedConnecting}, as for a
    refused connection.  C{IConnector.connect()} on a retry (after a grant
    was removed, or once C{closeAll} closed the connector) does the same.
    So C{ReconnectingClientFactory}, C{ClientService} and the endpoints see
    it and apply their own policy.
  - C{listenTCP}/C{listenSSL} raise L{PermissionDenied} from the call, as
    C{listenTCP} raises when it cannot listen; so do the refused
    capabilities.
  - L{IHostnameResolver} has no error channel, so the checked C{nameResolver}
    reports a refused resolution as one placeholder address whose host is a
    text subclass carrying the reason; C{connectTCP} to it fails with
    L{PermissionDenied}.  That is how C{HostnameEndpoint}, C{Agent} and treq
    fail with L{PermissionDenied} rather than a vague DNS error.  (The
    placeholder's text is C{permission-denied.invalid}, a name that never
    resolves, should it ever reach another reactor.)

Every decision is the extension's L{tcpext._policy.Policy}'s (the one its
C{browser} uses), and is reported to the policy's observers.  The wrapped
reactor is only ever given plain, canonical values: a C{str} address or
interface, an C{int} port (never the caller's objects).

A C{listenSSL} port answers clients that offer ALPN: with the protocols of
the extension's factory (C{IProtocolNegotiationFactory}, as twisted.web's
C{Site}) and of the TLS options, or, when there are none, by ignoring the
offer (Twisted's own answer then fails every such handshake).

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
import time
import weakref
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
    IProtocolNegotiationFactory,
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
from twisted.internet.tcp import makeBinding
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, alsoProvides, directlyProvides, implementer

from tcpext._hosts import ParsedHost, parseHost
from tcpext._policy import (
    CONNECT,
    LISTEN,
    RESOLVE,
    USE,
    ConnectTarget,
    Decision,
    DenialLog,
    Grounds,
    Policy,
    connectPort,
    listenTarget,
    localhostAddresses,
)
from tcpext._resolution import DeniedHost
from tcpext._twistedcompat import answerALPN
from tcpext.permissions import PermissionDenied, PermissionSet, formatHostPort

__all__ = ["AddressForName", "IDialsForNames", "PermissionCheckingReactor"]

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

CLOSE_DEADLINE = 10.0
"""
L{PermissionCheckingReactor.closeAll} and C{revalidate} fire at the latest
this many seconds (reactor time) after they asked every connection to close,
even if a transport never reported that it did.
"""

_POLL_INTERVAL = 0.01

_DeniedHost = DeniedHost


class IDialsForNames(Interface):
    """
    A reactor whose connections are opened elsewhere and that reads the
    C{name} of an L{AddressForName} handed to its C{connectTCP} (the
    isolated extension's L{tcpext.sandbox.BrokeredReactor}: the host checks
    that name against its own grants).  Other reactors are only ever given
    plain C{str} addresses.
    """


class AddressForName(str):
    """
    The text of an IP address dialed because a name resolved to it (or, for
    C{localhost} names, maps to it), carrying that name.

    It is only handed to a reactor that provides L{IDialsForNames} (one
    that has the connection opened elsewhere and reads C{name}: the isolated
    extension's L{tcpext.sandbox.BrokeredReactor} passes it to the host with
    the connect request, and the host checks that name against its own
    grants; it never takes the child's word for it).  Every other reactor
    gets the plain C{str}.

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
    if isinstance(host, DeniedHost):
        raise PermissionDenied(host.message)
    if not isinstance(host, str):
        raise TypeError(f"a host must be a str, not {type(host).__name__}")
    try:
        return parseHost(host)
    except ValueError as e:
        raise _denied(f"connect to {str.__str__(host)!r} port {port}", str(e))


def _plainBindAddress(bindAddress: Any) -> Any:
    """
    A client's local address to bind, as plain values: L{None}, a C{(host,
    port)} tuple of a C{str} and an C{int}, or a new binding.

    @raise TypeError: For anything else.
    """
    if bindAddress is None:
        return None
    if isinstance(bindAddress, tuple) and len(bindAddress) == 2:
        host, port = bindAddress
        if (
            isinstance(host, str)
            and isinstance(port, int)
            and not isinstance(port, bool)
        ):
            return (str.__str__(host), int.__index__(port))
    if hasattr(bindAddress, "_port") and hasattr(bindAddress, "_address"):
        address = bindAddress._address
        return makeBinding(
            "" if address is None else str.__str__(address),
            int.__index__(bindAddress._port),
            bool(bindAddress._reuseAddress),
            bool(bindAddress._reusePort),
        )
    raise TypeError(f"bindAddress must be (host, port) or None, not {bindAddress!r}")


def _canonical(address: str) -> str | None:
    """
    The canonical text of an address, or L{None} if it is not one.
    """
    try:
        return parseHost(address).text
    except (TypeError, ValueError):
        return None


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


class _Listener:
    """
    A port opened through the wrapper and the connections it accepted.
    """

    def __init__(self, grounds: Grounds) -> None:
        """
        @param grounds: What the port was allowed for (the port as
            requested, 0 if chosen automatically, and the interface).
        """
        self.grounds = grounds
        self.listeningPort: Any = None
        self.openedAt: float | None = None
        self._weak: weakref.WeakSet[Any] = weakref.WeakSet()
        self._strong: list[Any] = []
        self._acceptedAt: weakref.WeakKeyDictionary[Any, float] = (
            weakref.WeakKeyDictionary()
        )

    def add(self, protocol: object) -> None:
        """
        Remember an accepted connection's protocol.
        """
        try:
            self._weak.add(protocol)
            self._acceptedAt[protocol] = time.time()
        except TypeError:
            if len(self._strong) >= 64:
                self._strong = [
                    p
                    for p in self._strong
                    if not _reportsClosed(getattr(p, "transport", None))
                ]
            self._strong.append(protocol)

    def acceptedAt(self, transport: Any) -> float | None:
        """
        When the connection of C{transport} was accepted (Unix seconds), if
        known.
        """
        protocol = getattr(transport, "protocol", None)
        try:
            return self._acceptedAt.get(protocol)
        except TypeError:
            return None

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

    It provides L{IProtocolNegotiationFactory} when the extension's factory
    does (twisted.web's C{Site} does), so that a TLS port offers its
    protocols over ALPN: Twisted looks for that interface on the factory the
    port was given, and fails the handshake of every client that offers
    ALPN when it finds nothing to agree on.
    """

    def __init__(self, factory: Any, listener: _Listener) -> None:
        """
        @param factory: The extension's server factory.
        @param listener: Where accepted connections are recorded.
        """
        self.wrappedFactory = factory
        self.__listener = listener
        if IProtocolNegotiationFactory.providedBy(factory):
            alsoProvides(self, IProtocolNegotiationFactory)

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
    policy that decides, what was opened through it, and the checked
    resolution.
    """

    def __init__(
        self,
        reactor: Any,
        policy: Policy,
        trustedResolver: IHostnameResolver | None,
    ) -> None:
        """
        @param reactor: The wrapped reactor.
        @param policy: The extension's policy (over its live grants).
        @param trustedResolver: The resolver whose answers count as the
            name, or L{None} for the wrapped reactor's C{nameResolver}.
        """
        self.reactor = reactor
        self.policy = policy
        self.permissions = policy.grants
        self.trustedResolver = trustedResolver
        self.namesRideAlong = IDialsForNames.providedBy(reactor)
        self.connectors: dict[_CheckedConnector, None] = {}
        self.listeners: dict[int, _Listener] = {}
        self.readers: dict[int, Any] = {}
        self.writers: dict[int, Any] = {}
        self.delayed: weakref.WeakSet[Any] = weakref.WeakSet()
        self.closedReason: str | None = None
        self.nameResolver = _CheckedNameResolver(self, None, trusted=True)
        self.simpleResolver = _CheckedSimpleResolver(self, self.nameResolver)

    # -- refusal ---------------------------------------------------------

    def refuse(
        self, verb: str, target: str, error: PermissionDenied, request: str
    ) -> PermissionDenied:
        """
        Report a refusal that is not the policy's own (the wrapper closed,
        a refused capability); the error to raise or deliver.
        """
        self.policy.report(
            Decision(
                verb,
                target,
                False,
                reason=str(error),
                message=str(error),
                request=request,
            )
        )
        return error

    def closedRefusal(self, what: str) -> PermissionDenied | None:
        """
        The refusal of anything new once C{closeAll(refuseNew=True)} was
        called, or L{None}.
        """
        if self.closedReason is not None:
            return _denied(what, self.closedReason)
        return None

    def refuseIfClosed(self, verb: str, target: str, what: str, request: str) -> None:
        """
        Refuse (report and raise) anything new once the wrapper is closed.
        """
        error = self.closedRefusal(what)
        if error is not None:
            raise self.refuse(verb, target, error, request)

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
        request: str,
        verb: str = RESOLVE,
    ) -> Deferred[list[IAddress]]:
        """
        Resolve a name (already allowed by L{Policy.resolve}) and keep the
        addresses the rebinding rule lets through.

        @return: A L{Deferred} firing with the allowed addresses, or failing
            with L{PermissionDenied} (all refused) or L{DNSLookupError}.
        """
        name = host.text
        trusted = resolver.trusted
        local = localhostAddresses(name)
        if local is not None:
            trusted = True
            found: list[IAddress] = []
            for address in local:
                kind = IPv6Address if ":" in address else IPv4Address
                if addressTypes is None or kind in addressTypes:
                    found.append(kind("TCP", address, port or 0))
            d = defer.succeed(found)
        else:
            d = self.query(resolver.source(), name, port or 0, addressTypes)
        return d.addCallback(self.filter, host, port, trusted, request, verb)

    def filter(
        self,
        found: list[IAddress],
        host: ParsedHost,
        port: int | None,
        trusted: bool,
        request: str,
        verb: str = RESOLVE,
    ) -> list[IAddress]:
        """
        The addresses in C{found} that may be dialed for C{host} (reported
        as one decision).  A refusal the resolver itself reported (the
        isolated host's, through a placeholder address) stands as it is.
        """
        addresses = [a for a in found if isinstance(a, (IPv4Address, IPv6Address))]
        for address in addresses:
            if isinstance(address.host, DeniedHost):
                raise self.refuse(
                    verb,
                    host.text,
                    PermissionDenied(address.host.message),
                    request,
                )
        if not addresses:
            raise DNSLookupError(f"no addresses found for {host.text}")
        hosts = [str.__str__(a.host) for a in addresses]
        decision = self.policy.resolvedForPorts(
            host, port, hosts, request=request, verb=verb
        )
        self.policy.report(decision)
        if not decision.allowed:
            raise decision.error()
        allowed = set(decision.addresses)
        kept: list[IAddress] = [a for a in addresses if _canonical(a.host) in allowed]
        if trusted:
            self.policy.remember(host.text, decision.addresses, self.reactor.seconds())
        return kept

    # -- connect checks --------------------------------------------------

    def authorizeAddress(
        self, host: ParsedHost, port: int, request: str
    ) -> tuple[Decision, Grounds]:
        """
        Decide a connection to an IP address: a grant covers it, either
        literally or as a name it was resolved for.
        """
        target = ConnectTarget(host, port)
        closed = self.closedRefusal(f"connect to {target}")
        if closed is not None:
            decision = Decision(
                CONNECT,
                str(target),
                False,
                reason=str(closed),
                message=str(closed),
                request=request,
            )
        else:
            decision = self.policy.connect(
                target, now=self.reactor.seconds(), request=request
            )
        return decision, Grounds(CONNECT, port, (host.text,), decision.name)

    def dialPlan(
        self, addresses: list[IAddress], name: ParsedHost, port: int, trusted: bool
    ) -> tuple[str, Grounds]:
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
                return text, Grounds(CONNECT, port, (text,), name.text)
            if self.permissions.allowsConnect(text, port):
                return text, Grounds(CONNECT, port, (text,), None)
        raise _denied(
            f"connect to {formatHostPort(name.text, port)}",
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
        guard = self.__guard
        request = f"nameResolver.resolveHostName({hostName!r}, {portNumber})"

        def placeholder(message: str) -> None:
            kind: type[IPv4Address] | type[IPv6Address] = IPv4Address
            if addressTypes is not None and IPv4Address not in addressTypes:
                kind = IPv6Address
            resolutionReceiver.addressResolved(
                kind("TCP", DeniedHost(message), portNumber)
            )
            resolutionReceiver.resolutionComplete()

        def deny(error: PermissionDenied) -> None:
            guard.refuse(RESOLVE, str(hostName), error, request)
            placeholder(str(error))

        if transportSemantics != "TCP":
            deny(
                PermissionDenied(
                    f"permission denied: resolve {hostName!r} for "
                    f"{transportSemantics}: only TCP is allowed"
                )
            )
            return resolution
        try:
            host = _parseConnectHost(hostName, portNumber)
        except (PermissionDenied, TypeError, ValueError) as e:
            if isinstance(e, PermissionDenied):
                deny(e)
            else:
                deny(PermissionDenied(f"permission denied: resolve {hostName!r}: {e}"))
            return resolution
        if host.ip is not None:
            kind = IPv6Address if host.ip.version == 6 else IPv4Address
            if addressTypes is None or kind in addressTypes:
                resolutionReceiver.addressResolved(kind("TCP", host.text, portNumber))
            resolutionReceiver.resolutionComplete()
            return resolution
        closed = guard.closedRefusal(f"resolve {host.text}")
        if closed is not None:
            deny(closed)
            return resolution
        decision = guard.policy.resolve(host, port, request=request)
        if not decision.allowed:
            guard.policy.report(decision)
            placeholder(decision.message)
            return resolution

        d = guard.lookup(host, port, addressTypes, self, request)
        resolution._deferred = d

        def deliver(addresses: list[IAddress]) -> None:
            for address in addresses:
                resolutionReceiver.addressResolved(address)
            resolutionReceiver.resolutionComplete()

        def failed(reason: Failure) -> None:
            # A refusal by the rebinding rule was reported by the lookup.
            if reason.check(PermissionDenied):
                placeholder(str(reason.value))
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
    request = f"reactor.resolve({name!r})"
    try:
        host = _parseConnectHost(name, "any")
    except PermissionDenied as e:
        return defer.fail(guard.refuse(RESOLVE, str(name), e, request))
    except Exception:
        return defer.fail()
    if host.ip is not None:
        return defer.succeed(host.text)
    closed = guard.closedRefusal(f"resolve {host.text}")
    if closed is not None:
        return defer.fail(guard.refuse(RESOLVE, host.text, closed, request))
    decision = guard.policy.resolve(host, None, request=request)
    if not decision.allowed:
        guard.policy.report(decision)
        return defer.fail(decision.error())

    def first(addresses: list[IAddress]) -> str:
        address = addresses[0]
        assert isinstance(address, IPv4Address)
        return str.__str__(address.host)

    d = guard.lookup(host, None, [IPv4Address], resolver, request)
    return d.addCallback(first)


@implementer(IConnector)
class _CheckedConnector:
    """
    The connector C{connectTCP}/C{connectSSL} return: every C{connect()}
    checks the grants again, names are resolved through the checked resolver
    and only a checked address is handed to the wrapped reactor.  A refusal
    fails the attempt (the factory's C{clientConnectionFailed} gets a
    L{PermissionDenied} failure on a later reactor turn), as a refused
    connection would.

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
        parsed: ParsedHost | PermissionDenied,
        port: int,
        factory: Any,
        timeout: float | None,
        bindAddress: Any,
        contextFactory: Any = None,
        tls: bool = False,
    ) -> None:
        """
        See the instance variables; C{contextFactory} and C{tls} for
        C{connectSSL}.  C{parsed} is the canonical host, or the refusal of a
        host that is not valid (every attempt then fails with it).
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
        self.connectedAt: float | None = None
        self.state = "disconnected"
        self.__attempt = 0
        self.__inner: Any = None
        self.__protocol: IProtocol | None = None
        self.__lookup: Deferred[Any] | None = None
        self.__timer: Any = None
        self.__grounds: Grounds | None = None
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
        parsed = self.__parsed
        if isinstance(parsed, ParsedHost) and parsed.ip and parsed.ip.version == 6:
            return IPv6Address("TCP", self.host, self.port)
        return IPv4Address("TCP", self.host, self.port)

    def connect(self) -> None:
        """
        Start connecting (see L{IConnector.connect}), after checking the
        grants again: if they refuse, the attempt fails on a later reactor
        turn with L{PermissionDenied}, after C{startedConnecting}.

        @raise RuntimeError: If not disconnected.
        """
        if self.state != "disconnected":
            raise RuntimeError("can't connect in this state")
        guard = self.__guard
        parsed = self.__parsed
        self.__attempt += 1
        attempt = self.__attempt
        self.state = "connecting"
        self.__grounds = None
        guard.connectors[self] = None
        self.__started = guard.reactor.seconds()
        self.factory.doStart()
        refusal: PermissionDenied | None = None
        if isinstance(parsed, PermissionDenied):
            refusal = parsed
        else:
            where = str(ConnectTarget(parsed, self.port))
            if self.__finished is not None:
                refusal = guard.refuse(
                    CONNECT,
                    where,
                    _denied(f"connect to {where}", self.__finished),
                    self.__request,
                )
            elif parsed.ip is not None:
                decision, grounds = guard.authorizeAddress(
                    parsed, self.port, self.__request
                )
                guard.policy.report(decision)
                if decision.allowed:
                    self.__grounds = grounds
                    try:
                        self.__dial(attempt, parsed.text)
                    except BaseException:
                        self.__attempt += 1
                        self.state = "disconnected"
                        self.__forget()
                        self.factory.doStop()
                        raise
                else:
                    refusal = decision.error()
            else:
                closed = guard.closedRefusal(f"connect to {where}")
                if closed is not None:
                    refusal = guard.refuse(CONNECT, where, closed, self.__request)
                else:
                    decision = guard.policy.connect(
                        ConnectTarget(parsed, self.port), request=self.__request
                    )
                    if decision.allowed:
                        self.__resolve(attempt, parsed)
                    else:
                        guard.policy.report(decision)
                        refusal = decision.error()
        if self.state == "connecting" and attempt == self.__attempt:
            self.factory.startedConnecting(self)
            if refusal is not None:
                self.__timer = guard.reactor.callLater(
                    0, self._ended, attempt, Failure(refusal), False
                )

    def __resolve(self, attempt: int, parsed: ParsedHost) -> None:
        """
        Resolve the name through the checked resolver, then dial.
        """
        guard = self.__guard
        resolver = guard.nameResolver
        synchronous = True
        where = str(ConnectTarget(parsed, self.port))

        def resolved(addresses: list[IAddress]) -> None:
            if attempt != self.__attempt:
                return
            self.__lookup = None
            self.__cancelTimer()
            try:
                address, grounds = guard.dialPlan(
                    addresses, parsed, self.port, resolver.trusted
                )
            except PermissionDenied as e:
                guard.refuse(CONNECT, where, e, self.__request)
                failed(Failure())
                return
            try:
                self.__grounds = grounds
                self.__dial(attempt, address)
            except BaseException:
                failed(Failure())

        def failed(reason: Failure) -> None:
            if attempt != self.__attempt:
                return
            self.__lookup = None
            self.__cancelTimer()
            if synchronous:
                # As in Twisted, startedConnecting comes before any failure.
                self.__timer = guard.reactor.callLater(
                    0, self._ended, attempt, reason, False
                )
            else:
                self._ended(attempt, reason, False)

        d = guard.lookup(
            parsed, self.port, None, resolver, self.__request, verb=CONNECT
        )
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
        Hand the checked address (a plain C{str}, or an L{AddressForName} to
        a reactor that reads names) and port to the wrapped reactor.
        """
        guard = self.__guard
        reactor = guard.reactor
        timeout = self.timeout
        if timeout is not None:
            timeout = max(timeout - (reactor.seconds() - self.__started), 0.001)
        grounds = self.__grounds
        host: str = address
        if grounds is not None and grounds.name is not None and guard.namesRideAlong:
            host = AddressForName(address, grounds.name)
        factory = _ConnectorFactory(self, attempt)
        if self.__tls:
            inner = reactor.connectSSL(
                host,
                self.port,
                factory,
                self.__contextFactory,
                timeout,
                self.bindAddress,
            )
        else:
            inner = reactor.connectTCP(
                host, self.port, factory, timeout, self.bindAddress
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
        self.connectedAt = time.time()
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
        grounds = self.__grounds
        if grounds is None:
            parsed = self.__parsed
            if isinstance(parsed, PermissionDenied):
                return False
            grounds = Grounds(CONNECT, self.port, (), parsed.text)
        return self.__guard.policy.stillAllowed(grounds)

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


def _noMoreProtocols(tlsProtocol: object) -> tuple[bytes, ...]:
    """
    No ALPN protocols beyond the TLS options' and the server factory's.
    """
    return ()


def _refused(what: str, why: str) -> Callable[..., Any]:
    """
    A method that refuses C{what} with L{PermissionDenied}.
    """

    def refuse(self: object, *args: object, **kwargs: object) -> Any:
        error = _denied(what, why)
        guard = getattr(self, "_PermissionCheckingReactor__guard", None)
        if guard is not None:
            guard.refuse(USE, what, error, f"reactor.{what}()")
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
        policy: Policy | None = None,
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
            logged, only raised or reported.  Not with C{policy}.
        @param allowThreads: Forward the thread methods (C{callInThread},
            C{getThreadPool}, C{suggestThreadPoolSize}) instead of refusing
            them; only for a process the kernel confines as a whole.
        @param policy: The extension's L{Policy} over C{permissions} (its
            observers are told of every decision); by default one of this
            wrapper's own.
        """
        if not isinstance(permissions, PermissionSet):
            raise TypeError(
                f"permissions must be a PermissionSet, not {type(permissions).__name__}"
            )
        if policy is None:
            policy = Policy(
                permissions, observers=[DenialLog(log)] if log is not None else []
            )
        elif policy.grants is not permissions:
            raise ValueError("the policy must decide over the same permissions")
        elif log is not None:
            raise TypeError("give the log to the policy's observers, not both")
        self.__guard = _Guard(reactor, policy, nameResolver)
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
        Check and start a client connection: a refusal fails the connector
        (on a later reactor turn), it is never raised.
        """
        guard = self.__guard
        try:
            parsed: ParsedHost | PermissionDenied = _parseConnectHost(host, port)
        except PermissionDenied as e:
            if not isinstance(host, DeniedHost):
                # (A placeholder's refusal was reported by the resolver.)
                request = "connectSSL" if tls else "connectTCP"
                guard.refuse(
                    CONNECT,
                    formatHostPort(str.__str__(host), port),
                    e,
                    f"reactor.{request}({str.__str__(host)!r}, {port!r})",
                )
            parsed = e
        number = connectPort(_connectPort(port))
        connector = _CheckedConnector(
            guard,
            str.__str__(host),
            parsed,
            number,
            factory,
            None if timeout is None else float(timeout),
            _plainBindAddress(bindAddress),
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
        Check and open a listening port; the wrapped reactor is given the
        canonical interface and port (plain values).
        """
        guard = self.__guard
        reuse: tuple[bool, bool] | None = None
        number: Any = port
        host: Any = interface
        if not isinstance(port, int):
            # A Binding (IReactorTCP2): its address and port are what counts.
            number = getattr(port, "_port", port)
            host = getattr(port, "_address", interface)
            reuse = (
                bool(getattr(port, "_reuseAddress", False)),
                bool(getattr(port, "_reusePort", False)),
            )
            if interface and host != interface:
                raise ValueError("Inconsistent interface vs Binding specifiers")
        if host is not None and not isinstance(host, str):
            raise TypeError(f"an interface must be a str, not {type(host).__name__}")
        request = f"reactor.{'listenSSL' if tls else 'listenTCP'}({number!r}, {host or None!r})"
        what = f"listen on port {number}" + (f" of {host!r}" if host else "")
        try:
            target = listenTarget(number, None)
        except (TypeError, ValueError) as e:
            raise guard.refuse(LISTEN, str(number), PermissionDenied(str(e)), request)
        try:
            target = listenTarget(target.port, host)
        except ValueError as e:
            raise guard.refuse(LISTEN, str(target), _denied(what, str(e)), request)
        guard.refuseIfClosed(LISTEN, str(target), what, request)
        decision = guard.policy.listen(target, request=request)
        guard.policy.report(decision)
        if not decision.allowed:
            raise decision.error()
        guard.pruneListeners()
        listener = _Listener(Grounds(LISTEN, target.port, (target.key,)))
        tracking = _TrackingServerFactory(factory, listener)
        address = "" if target.interface is None else target.bindAddress
        where: Any = target.port
        if reuse is not None:
            where = makeBinding(address, target.port, *reuse)
            address = ""
        backlog = int.__index__(backlog)
        if tls:
            # Answer clients that offer ALPN (curl does by default): with the
            # factory's protocols if it has some (a Site), else by ignoring
            # the offer; Twisted's own answer refuses them all then.
            answerALPN(contextFactory, _noMoreProtocols)
            listening = guard.reactor.listenSSL(
                where, tracking, contextFactory, backlog, address
            )
        else:
            listening = guard.reactor.listenTCP(where, tracking, backlog, address)
        listener.listeningPort = listening
        listener.openedAt = time.time()
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
            if not guard.policy.stillAllowed(listener.grounds):
                waits.extend(guard.closeListener(listener))
        for connector in list(guard.connectors):
            if not connector._stillAllowed():
                waits.append(connector._abort(None))
        return guard.gather(waits)

    def openTransports(self) -> list[tuple[str, Any, float | None]]:
        """
        What is open through this reactor now, for the operator console:
        C{("client", transport, openedAt)} for each connected connection,
        C{("server", port, openedAt)} for each listening port and
        C{("accepted", transport, openedAt)} for each connection a port
        accepted that is still open (C{openedAt}: Unix seconds, L{None} if
        not known).
        """
        guard = self.__guard
        result: list[tuple[str, Any, float | None]] = []
        for connector in list(guard.connectors):
            transport = connector.transport
            if (
                connector.state == "connected"
                and transport is not None
                and not _reportsClosed(transport)
            ):
                result.append(("client", transport, connector.connectedAt))
        for listener in list(guard.listeners.values()):
            if listener.listeningPort is not None:
                result.append(("server", listener.listeningPort, listener.openedAt))
            result.extend(
                ("accepted", t, listener.acceptedAt(t)) for t in listener.transports()
            )
        return result
