# -*- test-case-name: tests.test_browser -*-
"""
The C{browser} namespace that an extension's C{main(browser)} receives.

C{makeBrowser} builds one per extension: C{browser.TCPSocket} (C{connect} and
C{listen}, each present only when the manifest mentions that kind of
permission), C{browser.permissions} (runtime requests and removal of optional
permissions), C{browser.runtime} and C{browser.reactor} (a permission-checking
reactor for Twisted libraries).

The extension's grants are kept by its L{tcpext._ledger.GrantLedger}; every
request is decided by its L{tcpext._policy.Policy}, which the namespace and
its reactor share, and every decision is reported to the policy's observers
(the denial log lines, the operator console's audit).

Connecting to a name resolves it once, checks every address under the
rebinding rule, and dials exactly the addresses that passed (Happy Eyeballs
over that list); nothing is looked up a second time.  The real reactor is
given plain, canonical values (a C{str} address or interface, an C{int}
port), never the caller's objects.
"""

from __future__ import annotations

import copy
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Union

from attrs import define, field
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
    TCP6ServerEndpoint,
)
from twisted.internet.error import DNSLookupError, TimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    ILoggingContext,
    IProtocolFactory,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorTime,
    IResolutionReceiver,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpext._hosts import formatHostPort, parseHost
from tcpext._ledger import GrantLedger, GrantNotSaved, GrantStore, MemoryGrantStore
from tcpext._options import parseConnectOptions, parseListenOptions
from tcpext._policy import (
    CONNECT,
    LISTEN,
    REQUEST,
    ConnectTarget,
    Decision,
    DecisionObserver,
    DenialLog,
    Grounds,
    ListenTarget,
    Policy,
    connectTarget,
    listenTarget,
    localhostAddresses,
)
from tcpext._resolution import DeniedHost, resolveAtOnce
from tcpext._twistedcompat import wrapClientTLSOn
from tcpext.endpoints import listenSocket, startSocket
from tcpext.permissions import (
    Permission,
    PermissionDenied,
    PermissionSet,
    parsePermission,
)
from tcpext.reactor import AddressForName, IDialsForNames, PermissionCheckingReactor

__all__ = [
    "Browser",
    "GrantLedger",
    "GrantNotSaved",
    "GrantStore",
    "MemoryGrantStore",
    "PromptPolicy",
    "allowAll",
    "denyAll",
    "makeBrowser",
]

PromptPolicy = Callable[[str, list[str]], Union[bool, "Deferred[bool]"]]
"""
How a runtime C{permissions.request} is answered: called with the
extension's id and the canonical text of the permissions asked for (those not
granted yet); returns C{True} to grant them all, C{False} to refuse, or a
L{Deferred} that fires with one of those.
"""


def denyAll(extensionId: str, permissions: list[str]) -> bool:
    """
    The prompt policy that refuses every runtime permission request.
    """
    return False


def allowAll(extensionId: str, permissions: list[str]) -> bool:
    """
    The prompt policy that grants every runtime permission request (for
    tests; the manifest's C{optional_permissions} still bound what may be
    asked for).
    """
    return True


@implementer(IHostnameResolver)
@define
class _PinnedResolver:
    """
    A resolver that answers every name with the addresses that were already
    resolved and checked, so that the dialer cannot look the name up again.
    """

    addresses: Sequence[str]

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        """
        Report the checked addresses, on C{portNumber}.
        """
        return resolveAtOnce(resolutionReceiver, hostName, self.addresses, portNumber)


@implementer(IReactorTCP, IReactorTime, IReactorPluggableNameResolver)
class _PinnedReactor:
    """
    What L{HostnameEndpoint} sees: the real reactor's TCP and time, and a
    L{_PinnedResolver} instead of its name resolver.
    """

    def __init__(self, reactor: Any, addresses: Sequence[str]) -> None:
        """
        @param reactor: The real reactor.
        @param addresses: The checked addresses to dial.
        """
        self._reactor = reactor
        self.nameResolver: IHostnameResolver = _PinnedResolver(addresses)

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        """
        Refused: the addresses are pinned.
        """
        raise TypeError("the resolver of a checked connection cannot be replaced")

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: Any,
        timeout: float = 30,
        bindAddress: tuple[str, int] | None = None,
    ) -> Any:
        """
        Forward to the real reactor.
        """
        return self._reactor.connectTCP(host, port, factory, timeout, bindAddress)

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        """
        Refused: this reactor only dials.
        """
        raise TypeError("a checked connection cannot listen")

    def seconds(self) -> float:
        """
        Forward to the real reactor.
        """
        return float(self._reactor.seconds())

    def callLater(self, delay: float, callable: Any, *args: Any, **kw: Any) -> Any:
        """
        Forward to the real reactor.
        """
        return self._reactor.callLater(delay, callable, *args, **kw)

    def getDelayedCalls(self) -> Any:
        """
        Forward to the real reactor.
        """
        return self._reactor.getDelayedCalls()


@implementer(IResolutionReceiver)
class _Collector:
    """
    Collects the addresses of one name resolution into a L{Deferred}.
    """

    def __init__(self) -> None:
        """
        Start with no addresses.
        """
        self.addresses: list[str] = []
        self.resolution: IHostResolution | None = None
        self.done: Deferred[list[str]] = Deferred(self._cancel)

    def _cancel(self, d: Deferred[list[str]]) -> None:
        """
        Cancel the resolution in progress, if the resolver can.
        """
        if self.resolution is not None:
            try:
                self.resolution.cancel()
            except Exception:
                pass

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        """
        Remember the resolution, to cancel it on timeout.
        """
        self.resolution = resolutionInProgress

    def addressResolved(self, address: IAddress) -> None:
        """
        Keep each IP address once, in order; a refusal reported by a checked
        resolver fails the lookup with L{PermissionDenied}.
        """
        host = getattr(address, "host", None)
        if isinstance(host, DeniedHost):
            if not self.done.called:
                self.done.errback(PermissionDenied(host.message))
        elif isinstance(host, str) and host not in self.addresses:
            self.addresses.append(str.__str__(host))

    def resolutionComplete(self) -> None:
        """
        Fire with what was collected.
        """
        if not self.done.called:
            self.done.callback(self.addresses)


@implementer(IProtocolFactory, ILoggingContext)
class _AcceptTracker:
    """
    A server factory wrapper that remembers the protocols it builds, so that
    connections already accepted can be closed with their server.
    """

    def __init__(self, factory: Any) -> None:
        """
        @param factory: The server factory of the socket core.
        """
        self._factory = factory
        self.accepted: weakref.WeakSet[Any] = weakref.WeakSet()

    def buildProtocol(self, addr: IAddress) -> Any:
        """
        Build with the real factory and remember the protocol.
        """
        protocol = self._factory.buildProtocol(addr)
        if protocol is not None:
            self.accepted.add(protocol)
        return protocol

    def logPrefix(self) -> str:
        """
        The real factory's log prefix (Twisted names the port's factory with
        it in its "starting on" line).
        """
        prefix = getattr(self._factory, "logPrefix", None)
        return str(prefix()) if callable(prefix) else "tcpext"

    def doStart(self) -> None:
        """
        Forward to the real factory.
        """
        self._factory.doStart()

    def doStop(self) -> None:
        """
        Forward to the real factory.
        """
        self._factory.doStop()

    def __getattr__(self, name: str) -> Any:
        """
        Everything else is the real factory's.
        """
        return getattr(self._factory, name)

    def abortAll(self, reason: Exception | None) -> list[Deferred[Any]]:
        """
        End every accepted connection that is still open.

        @return: L{Deferred}s that fire once they are closed.
        """
        waits = []
        for protocol in list(self.accepted):
            d = _abortProtocol(protocol, reason)
            if d is not None:
                waits.append(d)
        return waits


def _abortProtocol(protocol: Any, reason: Exception | None) -> Deferred[Any] | None:
    """
    End one accepted connection: through its socket if the protocol exposes
    it (with C{reason}, or cleanly at once if L{None}), else by aborting the
    transport.

    @return: A L{Deferred} that fires once the socket is closed, if known.
    """
    sock = getattr(protocol, "socket", None)
    if sock is not None and hasattr(sock, "_abortWith"):
        closed: Deferred[Any] = sock.closed
        if reason is None:
            sock.closeImmediately()
        else:
            sock._abortWith(reason)
        return closed
    transport = getattr(protocol, "transport", None)
    if transport is not None and not getattr(transport, "disconnected", False):
        transport.abortConnection()
    return None


@implementer(IStreamServerEndpoint)
class _TrackingServerEndpoint:
    """
    A server endpoint whose factory is wrapped in an L{_AcceptTracker}.
    """

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        """
        @param endpoint: The real endpoint.
        """
        self._endpoint = endpoint
        self.tracker: _AcceptTracker | None = None

    def listen(self, protocolFactory: Any) -> Deferred[Any]:
        """
        Listen with the wrapped factory.
        """
        self.tracker = _AcceptTracker(protocolFactory)
        return self._endpoint.listen(self.tracker)


@define(eq=False)
class _Listen:
    """
    What an open server socket was allowed for, where it listens, what it
    accepted, and when it was opened (Unix seconds, for the operator
    console).
    """

    grounds: Grounds
    where: str
    tracker: _AcceptTracker | None = None
    openedAt: float = field(factory=time.time)

    def abortAccepted(self, reason: Exception | None) -> list[Deferred[Any]]:
        """
        End the connections this server accepted (cleanly if C{reason} is
        L{None}).
        """
        if self.tracker is None:
            return []
        return self.tracker.abortAll(reason)


class TCPSocketNamespace:
    """
    C{browser.TCPSocket}: C{connect} exists only when the manifest mentions a
    C{tcp-connect:} permission (required or optional), C{listen} only when it
    mentions a C{tcp-listen:} permission.
    """

    connect: Callable[..., Deferred[Any]]
    listen: Callable[..., Deferred[Any]]

    def __init__(self, browser: Browser, canConnect: bool, canListen: bool) -> None:
        """
        @param browser: The namespace this belongs to.
        @param canConnect: Whether to expose C{connect}.
        @param canListen: Whether to expose C{listen}.
        """
        self._browser = browser
        if canConnect:
            self.connect = self._connect
        if canListen:
            self.listen = self._listen

    def __repr__(self) -> str:
        """
        Name the extension and what is exposed.
        """
        present = [name for name in ("connect", "listen") if name in vars(self)]
        return f"<TCPSocket of {self._browser.runtime.id!r}: {', '.join(present)}>"

    def _connect(
        self, options: Mapping[str, object] | None = None, **kwargs: object
    ) -> Deferred[Any]:
        """
        Open a TCP connection, as allowed by the grants.

        @param options: C{host} (or C{address}), C{port},
            C{useSecureTransport}, C{tlsOptions}, C{alpnProtocols},
            C{timeout}; also accepted as keyword arguments.

        @return: A L{Deferred} that fires with a
            L{tcpext.TCPClientSocket} in C{"connecting"} state once the
            permission is checked and the attempt started, or fails with
            L{TypeError}/L{ValueError} (bad options),
            L{tcpext.PermissionDenied} or L{DNSLookupError}.
        """
        return self._browser._connect(options, kwargs)

    def _listen(
        self, options: Mapping[str, object] | None = None, **kwargs: object
    ) -> Deferred[Any]:
        """
        Listen for TCP connections, as allowed by the grants.

        @param options: C{port}, C{backLog}, C{host}, C{useSecureTransport},
            C{tlsOptions}, C{alpnProtocols}; also accepted as keyword
            arguments.

        @return: A L{Deferred} that fires with a L{tcpext.TCPServerSocket}
            once listening, or fails with L{TypeError}/L{ValueError} (bad
            options) or L{tcpext.PermissionDenied}.
        """
        return self._browser._listen(options, kwargs)


class PermissionsNamespace:
    """
    C{browser.permissions}: ask for, inspect and give up optional
    permissions at runtime.
    """

    def __init__(self, browser: Browser) -> None:
        """
        @param browser: The namespace this belongs to.
        """
        self._browser = browser

    def request(self, permissions: Mapping[str, object]) -> Deferred[bool]:
        """
        Ask for optional permissions.

        @param permissions: C{{"permissions": [...]}}: entries that the
            manifest lists in C{optional_permissions}.

        @return: A L{Deferred} that fires C{True} if they are all granted
            now (asking the prompt policy for those not granted yet), C{False}
            if refused, or fails with L{ValueError} for an entry that is not
            an optional permission.
        """
        return defer.ensureDeferred(self._browser._request(permissions))

    def contains(self, permissions: Mapping[str, object]) -> Deferred[bool]:
        """
        Are these exact permissions all granted?

        @return: A L{Deferred} firing with a C{bool}, or failing with
            L{ValueError} for an invalid C{tcp-*} entry.
        """
        try:
            entries = _entries(permissions)
            granted = all(
                p is not None and p in self._browser.grants
                for p in map(_parseOrNone, entries)
            )
        except Exception:
            return defer.fail()
        return defer.succeed(granted)

    def getAll(self) -> Deferred[dict[str, list[str]]]:
        """
        Every permission granted now.

        @return: A L{Deferred} firing with C{{"permissions": [...],
            "origins": []}} (canonical text, sorted).
        """
        return defer.succeed(
            {
                "permissions": sorted(str(p) for p in self._browser.grants),
                "origins": [],
            }
        )

    def remove(self, permissions: Mapping[str, object]) -> Deferred[bool]:
        """
        Give up optional permissions, closing the sockets and servers that no
        remaining grant allows.

        @return: A L{Deferred} firing C{True} if any of them was granted (and
            is removed now), C{False} if none was, or failing with
            L{ValueError} for an entry that is not an optional permission.
        """
        try:
            return defer.succeed(self._browser._remove(permissions))
        except Exception:
            return defer.fail()


@define
class RuntimeNamespace:
    """
    C{browser.runtime}: the extension's id and manifest.
    """

    id: str
    _manifest: Mapping[str, Any] = field(alias="manifest")

    def getManifest(self) -> dict[str, Any]:
        """
        A deep copy of the extension's manifest.
        """
        return copy.deepcopy(dict(self._manifest))


def _entries(permissions: Mapping[str, object]) -> list[str]:
    """
    The permission strings of a C{{"permissions": [...]}} argument.

    @raise TypeError: If it is not shaped like that.
    @raise ValueError: If it names origins (tcpext has none).
    """
    if not isinstance(permissions, Mapping):
        raise TypeError(
            'expected {"permissions": [...]}, not ' + type(permissions).__name__
        )
    unknown = sorted(set(permissions) - {"permissions", "origins"})
    if unknown:
        raise TypeError(f"unknown keys {unknown}: expected {{'permissions': [...]}}")
    if permissions.get("origins"):
        raise ValueError("tcpext has no origin permissions; use tcp-connect: entries")
    entries = permissions.get("permissions", [])
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Iterable):
        raise TypeError("'permissions' must be a list of strings")
    result = list(entries)
    for entry in result:
        if not isinstance(entry, str):
            raise TypeError(f"permission entries must be strings, not {entry!r}")
    return result


def _parseOrNone(entry: str) -> Permission | None:
    """
    Parse a C{tcp-*} entry; other WebExtension permissions give L{None}.

    @raise ValueError: For an invalid C{tcp-*} entry.
    """
    if not entry.startswith("tcp-"):
        return None
    return parsePermission(entry)


class GrantsView:
    """
    A read-only view of an extension's live grants: it answers the same
    questions as a L{PermissionSet} but has no way to change it.
    """

    __slots__ = ("__grants",)

    def __init__(self, grants: PermissionSet) -> None:
        """
        @param grants: The live set to view.
        """
        self.__grants = grants

    def allowsConnect(self, host: str, port: int) -> bool:
        """
        See L{PermissionSet.allowsConnect}.
        """
        return self.__grants.allowsConnect(host, port)

    def allowsListen(self, port: int, host: str | None = None) -> bool:
        """
        See L{PermissionSet.allowsListen}.
        """
        return self.__grants.allowsListen(port, host)

    def __contains__(self, entry: object) -> bool:
        """
        Is this permission (a L{Permission} or its text) granted?
        """
        return entry in self.__grants

    def __iter__(self) -> Iterator[Permission]:
        """
        The granted permissions.
        """
        return iter(list(self.__grants))

    def __len__(self) -> int:
        """
        How many permissions are granted.
        """
        return len(self.__grants)

    def __repr__(self) -> str:
        """
        List the grants.
        """
        return f"<GrantsView {sorted(str(p) for p in self)!r}>"


class Browser:
    """
    The C{browser} namespace of one extension.

    @ivar TCPSocket: C{connect} / C{listen}.
    @ivar permissions: C{request} / C{contains} / C{getAll} / C{remove}.
    @ivar runtime: C{id} / C{getManifest()}.
    @ivar reactor: A L{PermissionCheckingReactor} deciding with the same
        policy.
    @ivar grants: A read-only view of this extension's live grants (a
        L{GrantsView}): extension code can test them but not widen them.
    @ivar log: The extension's logger; every denial is recorded there.
    """

    def __init__(
        self,
        *,
        extensionId: str,
        manifest: Mapping[str, Any],
        reactor: Any,
        ledger: GrantLedger,
        prompt: PromptPolicy,
        log: Logger,
        allowThreads: bool = False,
        decisionObservers: Iterable[DecisionObserver] = (),
    ) -> None:
        """
        Use L{makeBrowser}.
        """
        self._reactor = reactor
        self._ledger = ledger
        self._grants = ledger.grants
        self._prompt = prompt
        self._closed = False
        self.log = log
        self._id = extensionId
        self._policy = Policy(
            ledger.grants,
            extensionId=extensionId,
            observers=[DenialLog(log), *decisionObservers],
        )
        # Only a reactor that has connections opened elsewhere (an isolated
        # extension's) needs to know the name an address is dialed for.
        self._namesRideAlong = IDialsForNames.providedBy(reactor)
        self.grants = GrantsView(self._grants)
        kinds = {p.kind for p in [*ledger.required.values(), *ledger.optional.values()]}
        self.TCPSocket = TCPSocketNamespace(
            self, canConnect="connect" in kinds, canListen="listen" in kinds
        )
        self.permissions = PermissionsNamespace(self)
        self.runtime = RuntimeNamespace(extensionId, copy.deepcopy(dict(manifest)))
        self.reactor = PermissionCheckingReactor(
            reactor, self._grants, policy=self._policy, allowThreads=allowThreads
        )
        self._sockets: dict[Any, Grounds] = {}
        self._servers: dict[Any, _Listen] = {}
        ledger.addObserver(self._grantsChanged)

    def __repr__(self) -> str:
        """
        Name the extension.
        """
        return f"<Browser for {self._id!r}>"

    # decisions

    def _refuse(self, decision: Decision) -> PermissionDenied:
        """
        Report a refusal; the exception to fail the request with.
        """
        self._policy.report(decision)
        return decision.error()

    def _closedRefusal(self, verb: str, target: str, request: str) -> Decision:
        """
        The refusal of anything new once the namespace is closed.
        """
        return Decision(
            verb,
            target,
            False,
            reason="the extension was unloaded (browser closed)",
            message="permission denied: the extension was unloaded (browser closed)",
            request=request,
        )

    # TCPSocket

    def _connect(
        self, options: Mapping[str, object] | None, keywords: Mapping[str, object]
    ) -> Deferred[Any]:
        """
        Implement C{TCPSocket.connect}: never raises.
        """
        request, where = "connect", ""
        try:
            parsed = parseConnectOptions(options, keywords)
            where = formatHostPort(str.__str__(parsed.host), parsed.port)
            request = f"connect to {where}"
            target = connectTarget(parsed.host, parsed.port)
            where = str(target)
            request = f"connect to {where}"
        except Exception as e:
            self._policy.report(self._policy.invalid(CONNECT, where, e, request))
            return defer.fail()
        if self._closed:
            return defer.fail(
                self._refuse(self._closedRefusal(CONNECT, where, request))
            )
        decision = self._policy.connect(target, request=request)
        if not decision.allowed:
            return defer.fail(self._refuse(decision))
        if not target.isName:
            self._policy.report(decision)
        return defer.ensureDeferred(
            self._resolveAndDial(target, parsed.useSecureTransport, parsed, request)
        )

    async def _resolveAndDial(
        self, target: ConnectTarget, secure: bool, parsed: Any, request: str
    ) -> Any:
        """
        Resolve a name once, check the addresses, and start dialing exactly
        those.
        """
        port = target.port
        name: str | None = None
        try:
            if not target.isName:
                addresses = [target.address]
            else:
                name = target.address
                local = localhostAddresses(name)
                if local is not None:
                    resolved = list(local)
                else:
                    resolved = await self._resolve(name, port, parsed.timeout)
                if not resolved:
                    raise DNSLookupError(f"no addresses for {name!r}")
                decision = self._policy.resolved(target, resolved, request=request)
                if not decision.allowed:
                    raise self._refuse(decision)
                self._policy.report(decision)
                addresses = list(decision.addresses)
            if self._closed:
                raise self._refuse(self._closedRefusal(CONNECT, str(target), request))
        except PermissionDenied:
            raise
        except Exception as e:
            self.log.warn("{request} failed: {reason}", request=request, reason=str(e))
            raise
        timeout = parsed.timeout if parsed.timeout is not None else 30
        dialed: list[str] = (
            [AddressForName(a, name) for a in addresses]
            if name is not None and self._namesRideAlong
            else addresses
        )
        endpoint: IStreamClientEndpoint
        if len(dialed) == 1:
            [address] = dialed
            endpointType = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
            endpoint = endpointType(self._reactor, address, port, timeout=timeout)
        else:
            # Happy Eyeballs over the checked addresses only.
            endpoint = HostnameEndpoint(
                _PinnedReactor(self._reactor, dialed),
                target.address,
                port,
                timeout=timeout,
            )
        if secure:
            creator = parsed.tlsOptions
            if creator is None:
                creator = optionsForClientTLS(target.address)
            endpoint = wrapClientTLSOn(self._reactor, creator, endpoint)
        sock = startSocket(
            endpoint,
            host=str.__str__(parsed.host),
            port=port,
            alpnProtocols=parsed.alpnProtocols,
        )
        self._track(sock, self._sockets, Grounds(CONNECT, port, tuple(addresses), name))
        return sock

    async def _resolve(self, host: str, port: int, timeout: float | None) -> list[str]:
        """
        Resolve C{host} once with the reactor's name resolver.
        """
        collector = _Collector()
        resolver = IReactorPluggableNameResolver(self._reactor).nameResolver
        resolver.resolveHostName(collector, host, portNumber=port)
        done = collector.done
        if timeout is not None:
            done.addTimeout(timeout, self._reactor)
        try:
            return await done
        except defer.TimeoutError:
            raise TimeoutError(f"looking up {host!r} took more than {timeout}s")

    def _listen(
        self, options: Mapping[str, object] | None, keywords: Mapping[str, object]
    ) -> Deferred[Any]:
        """
        Implement C{TCPSocket.listen}: never raises.
        """
        request, where = "listen", ""
        try:
            parsed = parseListenOptions(options, keywords)
            where = formatHostPort(str.__str__(parsed.host), parsed.port)
            request = f"listen on {where}"
            target = listenTarget(parsed.port, parsed.host)
            where = str(target)
            request = f"listen on {where}"
            backLog = int.__index__(parsed.backLog)
        except Exception as e:
            self._policy.report(self._policy.invalid(LISTEN, where, e, request))
            return defer.fail()
        if self._closed:
            return defer.fail(self._refuse(self._closedRefusal(LISTEN, where, request)))
        decision = self._policy.listen(target, request=request)
        self._policy.report(decision)
        if not decision.allowed:
            return defer.fail(decision.error())
        return self._startListening(target, parsed, backLog, request)

    def _startListening(
        self, target: ListenTarget, parsed: Any, backLog: int, request: str
    ) -> Deferred[Any]:
        """
        Listen on the checked interface and port (plain values only).
        """
        interface, port = target.bindAddress, target.port
        endpoint: IStreamServerEndpoint
        if parsed.useSecureTransport:
            endpoint = SSL4ServerEndpoint(
                self._reactor,
                port,
                parsed.tlsOptions,
                backlog=backLog,
                interface=interface,
            )
        elif ":" in interface:
            endpoint = TCP6ServerEndpoint(
                self._reactor, port, backlog=backLog, interface=interface
            )
        else:
            endpoint = TCP4ServerEndpoint(
                self._reactor, port, backlog=backLog, interface=interface
            )
        tracking = _TrackingServerEndpoint(endpoint)
        record = _Listen(Grounds(LISTEN, port, (target.key,)), str(target))

        def listening(server: Any) -> Any:
            record.tracker = tracking.tracker
            if self._closed:
                server.close()
                raise self._refuse(
                    Decision(
                        LISTEN,
                        str(target),
                        False,
                        reason="the extension was unloaded",
                        message=(
                            f"permission denied: listen on {target}: the "
                            "extension was unloaded"
                        ),
                        request=request,
                    )
                )
            self._track(server, self._servers, record)
            return server

        # A listen that fails (a port already taken) fails the Deferred and
        # nothing more: the extension decides; if that ends its main, the
        # host reports it once, naming the port and the reason.
        return listenSocket(
            tracking, backLog, alpnProtocols=parsed.alpnProtocols
        ).addCallback(listening)

    def _track(self, thing: Any, table: dict[Any, Any], record: Any) -> None:
        """
        Remember an open socket or server until it closes.
        """
        table[thing] = record

        def forget(result: object) -> None:
            table.pop(thing, None)

        thing.closed.addBoth(forget)

    # permissions

    def _optional(self, permissions: Mapping[str, object]) -> list[Permission]:
        """
        The optional permissions asked for, in order, each once.

        @raise ValueError: For an entry the manifest does not list in
            C{optional_permissions}, or an invalid C{tcp-*} entry.
        @raise TypeError: If C{permissions} is not C{{"permissions": [...]}}.
        """
        result: list[Permission] = []
        for entry in _entries(permissions):
            if not entry.startswith("tcp-"):
                raise ValueError(
                    f"{entry!r} is not in the manifest's optional_permissions"
                )
            p = self._ledger.optionalPermission(parsePermission(entry))
            if p not in result:
                result.append(p)
        return result

    async def _request(self, permissions: Mapping[str, object]) -> bool:
        """
        Implement C{permissions.request}: ask the prompt for what is not
        granted yet, then have the ledger save and grant it.
        """
        request = f"permissions.request({permissions!r})"
        try:
            wanted = self._optional(permissions)
            if self._closed:
                raise self._closedRefusal(REQUEST, "", request).error()
        except Exception as e:
            self._policy.report(self._policy.invalid(REQUEST, "", e, request))
            raise
        missing = [str(p) for p in self._ledger.missing(wanted)]
        if not missing:
            return True
        try:
            answer = await defer.maybeDeferred(self._prompt, self._id, list(missing))
        except GrantNotSaved:
            # The host answered yes but could not save: as in-process.
            raise
        except Exception as e:
            self.log.failure(
                "the prompt for {permissions} failed; refusing",
                Failure(e),
                permissions=missing,
            )
            answer = False
        if answer is not True or self._closed:
            self._refuse(self._policy.requested(missing, False))
            return False
        # Saved first: if the grant store fails, nothing is granted.
        self._ledger.request(missing)
        self._policy.report(self._policy.requested(missing, True))
        return True

    def _remove(self, permissions: Mapping[str, object]) -> bool:
        """
        Implement C{permissions.remove}.
        """
        return self._ledger.remove(self._optional(permissions))

    def revoke(self, permissions: Iterable[Permission | str]) -> None:
        """
        Take grants away on the host's behalf (required, operator or runtime
        ones alike), without touching the grant store, and close what the
        remaining grants no longer allow (an isolated extension's copy
        following its host).

        @param permissions: The permissions to take away.
        """
        self._ledger.mirror(revoked=list(permissions))

    def _grantsChanged(self, change: Any) -> None:
        """
        The ledger changed: close what a revoke no longer allows.
        """
        if change.revoked and not self._closed:
            self._revalidate()

    def _revalidate(self) -> None:
        """
        Close what the remaining grants no longer allow.
        """
        policy = self._policy
        for sock, grounds in list(self._sockets.items()):
            remote = getattr(sock, "remoteAddress", None)
            if remote:
                try:
                    grounds = Grounds(
                        CONNECT, grounds.port, (parseHost(remote).text,), grounds.name
                    )
                except (TypeError, ValueError):
                    pass
            if policy.stillAllowed(grounds):
                continue
            where = formatHostPort(grounds.name or grounds.addresses[0], grounds.port)
            reason = self._refuse(
                policy.removed(
                    CONNECT,
                    where,
                    f"connection to {where}",
                    addresses=grounds.addresses,
                    name=grounds.name,
                )
            )
            self._sockets.pop(sock, None)
            sock._abortWith(reason)
        for server, listen in list(self._servers.items()):
            if policy.stillAllowed(listen.grounds):
                continue
            reason = self._refuse(
                policy.removed(LISTEN, listen.where, f"listening on {listen.where}")
            )
            self._servers.pop(server, None)
            server.close()
            listen.abortAccepted(reason)
        self.reactor.revalidate()

    # lifetime

    def openSockets(self) -> list[tuple[str, Any, float | None]]:
        """
        What this namespace has open now, for the operator's console.

        @return: C{("client", socket, None)} for each connection the
            extension made, C{("server", server, openedAt)} for each server
            it listens with, and C{("accepted", socket, None)} for each
            connection such a server accepted that is not closed.
        """
        result: list[tuple[str, Any, float | None]] = [
            ("client", sock, None) for sock in list(self._sockets)
        ]
        for server, listen in list(self._servers.items()):
            result.append(("server", server, listen.openedAt))
            tracker = listen.tracker
            if tracker is None:
                continue
            for protocol in list(tracker.accepted):
                sock = getattr(protocol, "socket", None)
                if sock is not None and sock.readyState != "closed":
                    result.append(("accepted", sock, None))
        return result

    def close(self) -> Deferred[None]:
        """
        Close every socket and server opened through this namespace or its
        reactor, and refuse new ones.

        @return: A L{Deferred} that fires once they are all closed.
        """
        self._closed = True
        self._ledger.removeObserver(self._grantsChanged)
        waits: list[Deferred[Any]] = []
        for sock in list(self._sockets):
            waits.append(sock.closed)
            sock.closeImmediately()
        for server, listen in list(self._servers.items()):
            waits.append(defer.maybeDeferred(server.close))
            waits.extend(listen.abortAccepted(None))
        waits.append(defer.maybeDeferred(self.reactor.closeAll, refuseNew=True))
        self._sockets.clear()
        self._servers.clear()
        return defer.DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)


def makeBrowser(
    *,
    extensionId: str,
    manifest: Mapping[str, Any],
    reactor: Any,
    grantStore: GrantStore | None = None,
    prompt: PromptPolicy = denyAll,
    operatorGrants: Iterable[str] = (),
    log: Logger | None = None,
    allowThreads: bool = False,
    ledger: GrantLedger | None = None,
    decisionObservers: Iterable[DecisionObserver] = (),
) -> Browser:
    """
    Build the C{browser} namespace of one extension.

    @param extensionId: The extension's id (C{browser.runtime.id}).
    @param manifest: The validated manifest mapping.
    @param reactor: The real reactor (or a
        L{MemoryReactorClock <twisted.internet.testing.MemoryReactorClock>} in tests);
        it must provide L{IReactorPluggableNameResolver}: its C{nameResolver}
        answers connections to names.
    @param grantStore: Where runtime grants are loaded from and saved to; a
        fresh L{MemoryGrantStore} by default.  Not with C{ledger}.
    @param prompt: How C{permissions.request} is answered.
    @param operatorGrants: Optional permissions the operator pre-grants.  Not
        with C{ledger}.
    @param log: The extension's logger; by default one in the namespace
        C{tcpext.extension.<extensionId>}.
    @param allowThreads: Let C{browser.reactor} run code in threads
        (C{callInThread}, C{getThreadPool}); only where the kernel confines
        the whole process (an isolated extension's), never in the service's
        own process.
    @param ledger: The extension's L{GrantLedger}, when the host keeps it
        (to grant and revoke while the extension runs); by default one built
        from C{manifest}, C{grantStore} and C{operatorGrants}.
    @param decisionObservers: Told of every decision, beside the denial log
        (see L{tcpext._policy.DecisionObserver}).

    @raise ValueError: For an invalid C{tcp-*} entry in the manifest or in
        C{operatorGrants}, or an operator grant that the manifest does not
        list in C{optional_permissions}.
    @raise TypeError: C{ledger} given together with C{grantStore} or
        C{operatorGrants}.
    """
    if log is None:
        log = Logger(namespace=f"tcpext.extension.{extensionId}")
    return Browser(
        extensionId=extensionId,
        manifest=manifest,
        reactor=reactor,
        ledger=GrantLedger.keptOrBuilt(
            ledger,
            extensionId=extensionId,
            manifest=manifest,
            store=grantStore,
            operatorGrants=operatorGrants,
            log=log,
        ),
        prompt=prompt,
        log=log,
        allowThreads=allowThreads,
        decisionObservers=decisionObservers,
    )
