# -*- test-case-name: tests.test_browser -*-
"""
The C{browser} namespace that an extension's C{main(browser)} receives.

C{makeBrowser} builds one per extension: C{browser.TCPSocket} (C{connect} and
C{listen}, each present only when the manifest mentions that kind of
permission), C{browser.permissions} (runtime requests and removal of optional
permissions), C{browser.runtime} and C{browser.reactor} (a permission-checking
reactor for Twisted libraries).  Everything is checked against one live
L{PermissionSet}, C{browser.grants}.

Connecting to a name resolves it once, checks every address under the
rebinding rule, and dials exactly the addresses that passed (Happy Eyeballs
over that list); nothing is looked up a second time.
"""

from __future__ import annotations

import copy
import ipaddress
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, Union

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
    wrapClientTLS,
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
from zope.interface import Interface, implementer

from tcpext._options import (
    ConnectOptions,
    ListenOptions,
    parseConnectOptions,
    parseListenOptions,
)
from tcpext._resolution import resolveAtOnce
from tcpext.endpoints import listenSocket, startSocket
from tcpext.permissions import (
    LOCALHOST_ADDRESSES,
    Permission,
    PermissionDenied,
    PermissionSet,
    canonicalHost,
    isLocalhostName,
    parseManifestPermissions,
    parsePermission,
)
from tcpext.reactor import AddressForName, PermissionCheckingReactor

__all__ = [
    "Browser",
    "GrantStore",
    "MemoryGrantStore",
    "PromptPolicy",
    "allowAll",
    "denyAll",
    "makeBrowser",
]

_Options = TypeVar("_Options", ConnectOptions, ListenOptions)

PromptPolicy = Callable[[str, list[str]], Union[bool, "Deferred[bool]"]]
"""
How a runtime C{permissions.request} is answered: called with the
extension's id and the canonical text of the permissions asked for (those not
granted yet); returns C{True} to grant them all, C{False} to refuse, or a
L{Deferred} that fires with one of those.
"""


class GrantStore(Interface):
    """
    Where the optional permissions granted at runtime are kept between runs.
    """

    def load(extensionId: str) -> list[str]:
        """
        The canonical text of the permissions granted to C{extensionId} at
        runtime (empty if none).
        """

    def save(extensionId: str, entries: list[str]) -> None:
        """
        Replace what is kept for C{extensionId} with C{entries} (canonical
        permission text).
        """


@implementer(GrantStore)
class MemoryGrantStore:
    """
    A L{GrantStore} that keeps grants in memory, for tests and for hosts that
    do not persist them.
    """

    def __init__(self, grants: Mapping[str, Iterable[str]] | None = None) -> None:
        """
        @param grants: Initial grants, by extension id.
        """
        self._grants: dict[str, list[str]] = {
            key: list(value) for key, value in (grants or {}).items()
        }

    def load(self, extensionId: str) -> list[str]:
        """
        Return a copy of what was saved for C{extensionId}.
        """
        return list(self._grants.get(extensionId, ()))

    def save(self, extensionId: str, entries: list[str]) -> None:
        """
        Keep a copy of C{entries} for C{extensionId}.
        """
        self._grants[extensionId] = list(entries)


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


def _stripBrackets(host: str) -> str:
    """
    Remove the brackets around an IPv6 literal.
    """
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def _isIPLiteral(host: str) -> bool:
    """
    Is this canonical host an IP address (as opposed to a name)?
    """
    try:
        ipaddress.ip_address(_stripBrackets(host).split("%", 1)[0])
    except ValueError:
        return False
    return True


def _interfaceAddress(host: str) -> str:
    """
    The canonical text of a C{listen} C{host} option, which must be the IP
    address of an interface.

    @raise ValueError: For a name or an invalid address.
    """
    address = _stripBrackets(canonicalHost(_stripBrackets(host)))
    if not _isIPLiteral(address):
        raise ValueError(
            f"listen option 'host' must be an IP address of an interface, not {host!r}"
        )
    return address


def _hostPort(host: str, port: int) -> str:
    """
    C{host:port}, with brackets around an IPv6 host.
    """
    host = _stripBrackets(host)
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


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
        Keep each IP address once, in order.
        """
        host = getattr(address, "host", None)
        if isinstance(host, str) and host not in self.addresses:
            self.addresses.append(host)

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
class _Dial:
    """
    What an open client socket was allowed for: re-checked when a grant is
    removed.
    """

    host: str
    port: int
    isName: bool
    addresses: list[str]


@define(eq=False)
class _Listen:
    """
    What an open server socket was allowed for.
    """

    port: int
    host: str
    tracker: _AcceptTracker | None = None

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
            C{useSecureTransport}, C{tlsOptions}, C{timeout}; also accepted
            as keyword arguments.

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
            C{tlsOptions}; also accepted as keyword arguments.

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


def _operatorGrants(
    extensionId: str, entries: Iterable[str], optional: Mapping[str, Permission]
) -> dict[str, Permission]:
    """
    Parse the operator's grants for one extension; each must be one of the
    optional permissions its manifest lists.

    @param optional: The manifest's optional permissions by canonical text.
    @return: The grants by canonical text.
    @raise ValueError: For an invalid entry or one that is not optional.
    """
    granted: dict[str, Permission] = {}
    for entry in entries:
        p = parsePermission(entry)
        if str(p) not in optional:
            raise ValueError(
                f"cannot grant {entry!r} to {extensionId!r}: its manifest "
                "does not list it in optional_permissions"
            )
        granted[str(p)] = p
    return granted


def _storedGrants(
    entries: Iterable[str], optional: Mapping[str, Permission], log: Logger
) -> dict[str, Permission]:
    """
    Parse the grants a L{GrantStore} holds for one extension, skipping (with a
    warning on C{log}) the invalid ones and those its manifest does not list as
    optional: a stored grant never widens what the manifest allows.

    @param optional: The manifest's optional permissions by canonical text.
    @return: The grants by canonical text.
    """
    granted: dict[str, Permission] = {}
    for entry in entries:
        try:
            p = parsePermission(entry)
        except ValueError as e:
            log.warn(
                "ignoring stored grant {entry!r}: {reason}",
                entry=entry,
                reason=str(e),
            )
            continue
        if str(p) not in optional:
            log.warn(
                "ignoring stored grant {entry!r}: not in optional_permissions",
                entry=entry,
            )
            continue
        granted[str(p)] = p
    return granted


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
    @ivar reactor: A L{PermissionCheckingReactor} over C{grants}.
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
        grantStore: GrantStore,
        prompt: PromptPolicy,
        operatorGrants: Iterable[str],
        log: Logger,
        allowThreads: bool = False,
    ) -> None:
        """
        Use L{makeBrowser}.
        """
        self._reactor = reactor
        self._grantStore = grantStore
        self._prompt = prompt
        self._closed = False
        self.log = log
        self._id = extensionId

        required, _ = parseManifestPermissions(list(manifest.get("permissions", [])))
        optional, _ = parseManifestPermissions(
            list(manifest.get("optional_permissions", []))
        )
        self._required = {str(p): p for p in required}
        self._optional = {str(p): p for p in optional}

        operator = _operatorGrants(extensionId, operatorGrants, self._optional)
        self._runtime = _storedGrants(grantStore.load(extensionId), self._optional, log)

        self._grants = PermissionSet(
            [*self._required.values(), *operator.values(), *self._runtime.values()]
        )
        self.grants = GrantsView(self._grants)
        kinds = {p.kind for p in [*required, *optional]}
        self.TCPSocket = TCPSocketNamespace(
            self, canConnect="connect" in kinds, canListen="listen" in kinds
        )
        self.permissions = PermissionsNamespace(self)
        self.runtime = RuntimeNamespace(extensionId, copy.deepcopy(dict(manifest)))
        self.reactor = PermissionCheckingReactor(
            reactor, self._grants, log=log, allowThreads=allowThreads
        )
        self._sockets: dict[Any, _Dial] = {}
        self._servers: dict[Any, _Listen] = {}

    def __repr__(self) -> str:
        """
        Name the extension.
        """
        return f"<Browser for {self._id!r}>"

    # TCPSocket

    def _deny(self, request: str, reason: BaseException) -> None:
        """
        Log a refused request with its reason.
        """
        self.log.warn(
            "denied {request}: {reason}",
            request=request,
            reason=str(reason),
            extensionId=self._id,
        )

    def _admit(
        self,
        verb: str,
        *,
        parse: Callable[[], _Options],
        canonical: Callable[[str], str],
        check: Callable[[str, int], None],
    ) -> tuple[_Options, str, str]:
        """
        The checks that start a C{connect} or C{listen}: parse the options,
        refuse once the namespace is closed, put the host in canonical form and
        check the grants. A refusal is logged with the request as precisely as
        it is known by then, and raised.

        @param verb: C{"connect to"} or C{"listen on"}; its first word alone
            names a request whose options do not parse.
        @param parse: Parses the call's options.
        @param canonical: The canonical form of the C{host} option; raises for
            a host the request cannot use.
        @param check: Raises L{PermissionDenied} unless the grants allow the
            canonical host and the port.
        @return: The options, the canonical host, and the request's text.
        """
        request = verb.partition(" ")[0]
        try:
            parsed = parse()
            request = f"{verb} {_hostPort(parsed.host, parsed.port)}"
            self._checkOpen()
            host = canonical(parsed.host)
            request = f"{verb} {_hostPort(host, parsed.port)}"
            check(host, parsed.port)
        except Exception as e:
            self._deny(request, e)
            raise
        return parsed, host, request

    def _connect(
        self, options: Mapping[str, object] | None, keywords: Mapping[str, object]
    ) -> Deferred[Any]:
        """
        Implement C{TCPSocket.connect}: never raises.
        """
        try:
            parsed, host, request = self._admit(
                "connect to",
                parse=lambda: parseConnectOptions(options, keywords),
                canonical=lambda host: canonicalHost(_stripBrackets(host)),
                check=self._grants.checkConnect,
            )
        except Exception:
            return defer.fail()
        d = defer.ensureDeferred(self._resolveAndDial(parsed, host, request))
        return d

    async def _resolveAndDial(
        self, parsed: ConnectOptions, host: str, request: str
    ) -> Any:
        """
        Resolve C{host} once, check the addresses, and start dialing exactly
        those.
        """
        port = parsed.port
        isName = not _isIPLiteral(host)
        try:
            if not isName:
                addresses = [_stripBrackets(host)]
            else:
                if isLocalhostName(host):
                    resolved = list(LOCALHOST_ADDRESSES)
                else:
                    resolved = await self._resolve(host, port, parsed.timeout)
                if not resolved:
                    raise DNSLookupError(f"no addresses for {host!r}")
                checked = self._grants.checkResolved(host, port, resolved)
                refused = [a for a in resolved if a not in checked]
                addresses = []
                for address in checked:
                    address = _stripBrackets(canonicalHost(address))
                    if address not in addresses:
                        # The name rides along (an isolated extension's
                        # host checks it against its own grants).
                        addresses.append(AddressForName(address, host))
                if refused:
                    self._deny(
                        request,
                        PermissionDenied(
                            f"not dialing {', '.join(refused)}: "
                            "not allowed by the grants for this name"
                        ),
                    )
            self._checkOpen()
        except PermissionDenied as e:
            self._deny(request, e)
            raise
        except Exception as e:
            self.log.warn("{request} failed: {reason}", request=request, reason=str(e))
            raise
        timeout = parsed.timeout if parsed.timeout is not None else 30
        endpoint: IStreamClientEndpoint
        if len(addresses) == 1:
            [address] = addresses
            endpointType = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
            endpoint = endpointType(self._reactor, address, port, timeout=timeout)
        else:
            # Happy Eyeballs over the checked addresses only.
            endpoint = HostnameEndpoint(
                _PinnedReactor(self._reactor, addresses), host, port, timeout=timeout
            )
        if parsed.useSecureTransport:
            creator = parsed.tlsOptions
            if creator is None:
                creator = optionsForClientTLS(_stripBrackets(host))
            endpoint = wrapClientTLS(creator, endpoint)
        sock = startSocket(endpoint, host=parsed.host, port=port)
        self._track(sock, self._sockets, _Dial(host, port, isName, addresses))
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
        try:
            parsed, host, request = self._admit(
                "listen on",
                parse=lambda: parseListenOptions(options, keywords),
                canonical=_interfaceAddress,
                check=lambda host, port: self._grants.checkListen(port, host),
            )
        except Exception:
            return defer.fail()
        endpoint: IStreamServerEndpoint
        if parsed.useSecureTransport:
            endpoint = SSL4ServerEndpoint(
                self._reactor,
                parsed.port,
                parsed.tlsOptions,
                backlog=parsed.backLog,
                interface=host,
            )
        elif ":" in host:
            endpoint = TCP6ServerEndpoint(
                self._reactor, parsed.port, backlog=parsed.backLog, interface=host
            )
        else:
            endpoint = TCP4ServerEndpoint(
                self._reactor, parsed.port, backlog=parsed.backLog, interface=host
            )
        tracking = _TrackingServerEndpoint(endpoint)
        record = _Listen(parsed.port, host)

        def listening(server: Any) -> Any:
            record.tracker = tracking.tracker
            if self._closed:
                server.close()
                raise PermissionDenied(
                    f"permission denied: listen on {_hostPort(host, parsed.port)}: "
                    "the extension was unloaded"
                )
            self._track(server, self._servers, record)
            return server

        def failed(reason: Failure) -> Failure:
            self.log.warn(
                "{request} failed: {reason}",
                request=request,
                reason=reason.getErrorMessage(),
            )
            return reason

        return listenSocket(tracking, parsed.backLog).addCallbacks(listening, failed)

    def _checkOpen(self) -> None:
        """
        Refuse new sockets once the namespace is closed.
        """
        if self._closed:
            raise PermissionDenied(
                "permission denied: the extension was unloaded (browser closed)"
            )

    def _track(self, thing: Any, table: dict[Any, Any], record: Any) -> None:
        """
        Remember an open socket or server until it closes.
        """
        table[thing] = record

        def forget(result: object) -> None:
            table.pop(thing, None)

        thing.closed.addBoth(forget)

    # permissions

    def _optionalEntries(self, permissions: Mapping[str, object]) -> list[str]:
        """
        The canonical text of the entries asked for, all optional.

        @raise ValueError: For an entry the manifest does not list in
            C{optional_permissions}.
        """
        result = []
        for entry in _entries(permissions):
            p = _parseOrNone(entry)
            if p is None or str(p) not in self._optional:
                raise ValueError(
                    f"{entry!r} is not in the manifest's optional_permissions"
                )
            if str(p) not in result:
                result.append(str(p))
        return result

    async def _request(self, permissions: Mapping[str, object]) -> bool:
        """
        Implement C{permissions.request}.
        """
        try:
            entries = self._optionalEntries(permissions)
            self._checkOpen()
        except Exception as e:
            self._deny(f"permissions.request({permissions!r})", e)
            raise
        missing = [e for e in entries if self._optional[e] not in self.grants]
        if not missing:
            return True
        try:
            answer = await defer.maybeDeferred(self._prompt, self._id, list(missing))
        except Exception as e:
            self.log.failure(
                "the prompt for {permissions} failed; refusing",
                Failure(e),
                permissions=missing,
            )
            answer = False
        if answer is not True or self._closed:
            self._deny(
                f"permissions.request({missing!r})",
                PermissionDenied("permission denied: the request was refused"),
            )
            return False
        # Saved first: if the grant store fails, nothing was granted.
        self._grantStore.save(self._id, sorted({*self._runtime, *missing}))
        for entry in missing:
            self._runtime[entry] = self._optional[entry]
            self._grants.add(self._optional[entry])
        self.log.info("granted {permissions}", permissions=missing)
        return True

    def _remove(self, permissions: Mapping[str, object]) -> bool:
        """
        Implement C{permissions.remove}.
        """
        entries = self._optionalEntries(permissions)
        removed = False
        for entry in entries:
            p = self._optional[entry]
            if entry in self._required or p not in self.grants:
                continue
            self._grants.discard(p)
            removed = True
        stored = any(e in self._runtime for e in entries)
        for entry in entries:
            self._runtime.pop(entry, None)
        try:
            if stored:
                self._grantStore.save(self._id, sorted(self._runtime))
        finally:
            # Even when saving fails, what the removed grants allowed is closed.
            if removed:
                self.log.info("removed {permissions}", permissions=entries)
                self._revalidate()
        return removed

    def revoke(self, permissions: Iterable[Permission | str]) -> None:
        """
        Take grants away on the host's behalf (required, operator or runtime
        ones alike), without touching the grant store, and close what the
        remaining grants no longer allow.

        @param permissions: The permissions to take away.
        """
        changed = False
        for entry in permissions:
            p = entry if isinstance(entry, Permission) else parsePermission(entry)
            self._runtime.pop(str(p), None)
            if p in self._grants:
                self._grants.discard(p)
                changed = True
        if changed:
            self._revalidate()

    def _stillAllowed(self, dial: _Dial, sock: Any) -> bool:
        """
        Do the grants still allow this client socket?
        """
        if not self._grants.allowsConnect(dial.host, dial.port):
            return False
        if not dial.isName:
            return True
        remote = getattr(sock, "remoteAddress", None)
        addresses = [remote] if remote else dial.addresses
        try:
            allowed = self._grants.checkResolved(dial.host, dial.port, addresses)
        except PermissionDenied:
            return False
        return len(allowed) == len(addresses)

    def _revalidate(self) -> None:
        """
        Close what the remaining grants no longer allow.
        """
        for sock, dial in list(self._sockets.items()):
            if not self._stillAllowed(dial, sock):
                reason = PermissionDenied(
                    f"permission denied: connection to "
                    f"{_hostPort(dial.host, dial.port)}: the grant was removed"
                )
                self._deny(f"connection to {_hostPort(dial.host, dial.port)}", reason)
                self._sockets.pop(sock, None)
                sock._abortWith(reason)
        for server, listen in list(self._servers.items()):
            if not self._grants.allowsListen(listen.port, listen.host):
                where = _hostPort(listen.host, listen.port)
                reason = PermissionDenied(
                    f"permission denied: listening on {where}: the grant was removed"
                )
                self._deny(f"listening on {where}", reason)
                self._servers.pop(server, None)
                server.close()
                listen.abortAccepted(reason)
        self.reactor.revalidate()

    # lifetime

    def close(self) -> Deferred[None]:
        """
        Close every socket and server opened through this namespace or its
        reactor, and refuse new ones.

        @return: A L{Deferred} that fires once they are all closed.
        """
        self._closed = True
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
) -> Browser:
    """
    Build the C{browser} namespace of one extension.

    @param extensionId: The extension's id (C{browser.runtime.id}).
    @param manifest: The validated manifest mapping.
    @param reactor: The real reactor (or a L{MemoryReactorClock} in tests);
        it must provide L{IReactorPluggableNameResolver}: its C{nameResolver}
        answers connections to names.
    @param grantStore: Where runtime grants are loaded from and saved to; a
        fresh L{MemoryGrantStore} by default.
    @param prompt: How C{permissions.request} is answered.
    @param operatorGrants: Optional permissions the operator pre-grants.
    @param log: The extension's logger; by default one in the namespace
        C{tcpext.extension.<extensionId>}.
    @param allowThreads: Let C{browser.reactor} run code in threads
        (C{callInThread}, C{getThreadPool}); only where the kernel confines
        the whole process (an isolated extension's), never in the service's
        own process.

    @raise ValueError: For an invalid C{tcp-*} entry in the manifest or in
        C{operatorGrants}, or an operator grant that the manifest does not
        list in C{optional_permissions}.
    """
    if log is None:
        log = Logger(namespace=f"tcpext.extension.{extensionId}")
    return Browser(
        extensionId=extensionId,
        manifest=manifest,
        reactor=reactor,
        grantStore=grantStore if grantStore is not None else MemoryGrantStore(),
        prompt=prompt,
        operatorGrants=operatorGrants,
        log=log,
        allowThreads=allowThreads,
    )
