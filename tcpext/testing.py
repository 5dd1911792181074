# -*- test-case-name: tests.test_testing -*-
"""
In-memory doubles for testing extensions without a network.

L{StubBrowser} builds a real C{browser} namespace (the same permission checks
as under C{twistd tcpext}) over an in-memory reactor, with a L{FakeResolver}
for names.  The test then plays the other end of each connection with a
L{Peer}::

    stub = StubBrowser(permissions=["tcp-listen:7000"])
    main(stub.browser)                  # the extension listens on 7000
    peer = stub.dialListener(7000)      # a client connects to it
    peer.write(b"hello")
    stub.flush()                        # deliver bytes both ways
    assert peer.received == b"hello"

Connections the extension makes are answered with L{StubBrowser.connectPeer}
(or refused with L{StubBrowser.refuseConnection}); nothing happens until the
test says so.  Bytes move only in L{StubBrowser.flush}; time moves only in
L{StubBrowser.advance}.

An extension folder (its C{manifest.json} and background script) loads as
the host loads it, with L{StubBrowser.fromFolder}; register
L{StubBrowser.close} as the test's cleanup, so that what the extension still
runs ends within the test::

    stub = StubBrowser.fromFolder("examples/echo-server")
    self.addCleanup(stub.close)
    stub.start()                        # main(browser), as the host calls it
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IListeningPort,
    IProtocol,
    IResolutionReceiver,
)
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connect
from zope.interface import directlyProvides, implementer, providedBy

from tcpext._resolution import resolveAtOnce, tcpAddress
from tcpext.browser import (
    Browser,
    GrantStore,
    MemoryGrantStore,
    PromptPolicy,
    denyAll,
    makeBrowser,
)
from tcpext.extension import Manifest, loadMain, loadManifest

__all__ = ["FakeResolver", "Peer", "StubBrowser", "StubReactor", "withResolver"]

_P = TypeVar("_P", bound=IProtocol)


@implementer(IHostnameResolver)
class FakeResolver:
    """
    An L{IHostnameResolver} that answers from a table of names.

    Names are compared case-insensitively and without a trailing dot.  A name
    that is not in the table resolves to no address (a C{DNSLookupError} for
    whoever dials it).

    @ivar lookups: The names looked up, in order (for asserting that a name
        was resolved exactly once).
    """

    def __init__(self, names: Mapping[str, Iterable[str]] | None = None) -> None:
        """
        @param names: The initial table: name -> IP addresses.
        """
        self._names: dict[str, list[str]] = {}
        self.lookups: list[str] = []
        for name, addresses in (names or {}).items():
            self.add(name, *addresses)

    @staticmethod
    def _key(name: str) -> str:
        """
        The table key of a name.
        """
        return name.lower().rstrip(".")

    def add(self, name: str, *addresses: str) -> None:
        """
        Make C{name} resolve to C{addresses} (replacing earlier answers).
        """
        self._names[self._key(name)] = list(addresses)

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        """
        Report the addresses of C{hostName} at once.
        """
        self.lookups.append(hostName)
        return resolveAtOnce(
            resolutionReceiver,
            hostName,
            self._names.get(self._key(hostName), ()),
            portNumber,
        )


@implementer(IListeningPort)
class _StubPort:
    """
    A listening port of L{StubReactor}: it knows its real port (automatic
    ports are numbered from 30000), whether it is still listening and
    whether it is paused.
    """

    def __init__(self, factory: Any, address: IPv4Address | IPv6Address) -> None:
        """
        @param factory: The server factory.
        @param address: Where it listens.
        """
        self.factory = factory
        self.address = address
        self.listening = True
        self.paused = False
        factory.doStart()

    def startListening(self) -> None:
        """
        Already listening.
        """

    def stopListening(self) -> defer.Deferred[None]:
        """
        Stop listening (once).
        """
        if self.listening:
            self.listening = False
            self.factory.doStop()
        return defer.succeed(None)

    loseConnection = stopListening

    def getHost(self) -> IPv4Address | IPv6Address:
        """
        Where it listens.
        """
        return self.address

    def pauseProducing(self) -> None:
        """
        Stop accepting (the stub still connects dialers; see L{paused}).
        """
        self.paused = True

    def resumeProducing(self) -> None:
        """
        Accept again.
        """
        self.paused = False

    stopReading = pauseProducing
    startReading = resumeProducing


class StubReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} whose listening ports remember their state and
    get real port numbers when the port is chosen automatically.
    """

    def __init__(self) -> None:
        """
        Start with no ports.
        """
        super().__init__()
        self._nextPort = itertools.count(30000)
        self.ports: list[_StubPort] = []

    def _listen(self, port: int, factory: Any, interface: str) -> _StubPort:
        """
        Make a L{_StubPort}.
        """
        if port == 0:
            port = next(self._nextPort)
        stub = _StubPort(factory, tcpAddress(interface or "0.0.0.0", port))
        self.ports.append(stub)
        return stub

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> _StubPort:
        """
        Record the call and return a L{_StubPort}.
        """
        super().listenTCP(port, factory, backlog, interface)
        return self._listen(port, factory, interface)

    def listenSSL(
        self,
        port: int,
        factory: Any,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> _StubPort:
        """
        Record the call and return a L{_StubPort} (TLS is left to the peer).
        """
        super().listenSSL(port, factory, contextFactory, backlog, interface)
        return self._listen(port, factory, interface)


class _ResolverView:
    """
    A real reactor seen through a different name resolver.
    """

    def __init__(self, reactor: Any, resolver: IHostnameResolver) -> None:
        """
        @param reactor: The real reactor.
        @param resolver: The resolver to use instead of its own.
        """
        self._reactor = reactor
        self.nameResolver = resolver
        directlyProvides(self, *providedBy(reactor))

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        """
        Replace the resolver of this view only.
        """
        previous, self.nameResolver = self.nameResolver, resolver
        return previous

    def __getattr__(self, name: str) -> Any:
        """
        Everything else is the real reactor's.
        """
        return getattr(self._reactor, name)


def withResolver(reactor: Any, resolver: IHostnameResolver) -> Any:
    """
    A view of C{reactor} that resolves names with C{resolver} (for example a
    L{FakeResolver}) and forwards everything else; the real reactor is not
    changed.  Useful to give L{tcpext.browser.makeBrowser} made-up names that
    point at real loopback servers.
    """
    return _ResolverView(reactor, resolver)


class Peer(Protocol):
    """
    The other end of a connection in a test: records what it receives.

    @ivar received: Every byte received so far.
    @ivar connected: C{True} while connected.
    @ivar reason: Why the connection ended (a L{Failure}), or L{None}.
    """

    def __init__(self) -> None:
        """
        Start unconnected with nothing received.
        """
        self._chunks: list[bytes] = []
        self.connected = False
        self.reason: Failure | None = None

    @property
    def received(self) -> bytes:
        """
        Everything received so far.
        """
        return b"".join(self._chunks)

    def take(self) -> bytes:
        """
        Return what was received so far and forget it.
        """
        data = self.received
        self._chunks.clear()
        return data

    @property
    def disconnected(self) -> bool:
        """
        Has the connection ended?
        """
        return self.reason is not None

    def connectionMade(self) -> None:
        """
        Note the connection.
        """
        self.connected = True

    def dataReceived(self, data: bytes) -> None:
        """
        Record C{data}.
        """
        self._chunks.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        Note the end.
        """
        self.connected = False
        self.reason = reason if reason is not None else Failure(ConnectionDone())

    def write(self, data: bytes) -> None:
        """
        Send C{data} to the extension (delivered by the next flush).
        """
        assert self.transport is not None, "the peer is not connected"
        self.transport.write(data)

    def loseConnection(self) -> None:
        """
        Close the connection (after the queued bytes).
        """
        assert self.transport is not None, "the peer is not connected"
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        """
        Drop the connection now.
        """
        transport: Any = self.transport
        assert transport is not None, "the peer is not connected"
        transport.abortConnection()


def _ignoreCancelled(failure: Failure) -> Failure | None:
    """
    Swallow the L{defer.CancelledError} of a cancelled C{main}; pass on any
    other failure.
    """
    return None if failure.check(defer.CancelledError) else failure


class StubBrowser:
    """
    A C{browser} namespace over an in-memory network, for extension tests.

    @ivar browser: The namespace to give to C{main(browser)}.
    @ivar reactor: The L{StubReactor} underneath.
    @ivar resolver: The L{FakeResolver} answering names (also the reactor's
        C{nameResolver}).
    @ivar grantStore: Where runtime grants are saved.
    @ivar main: The extension's C{main}, when loaded from a folder (see
        L{fromFolder}), else L{None}.
    @ivar manifest: The loaded L{Manifest <tcpext.extension.Manifest>}, when
        loaded from a folder, else L{None}.
    """

    main: Callable[[Browser], object] | None = None
    manifest: Manifest | None = None

    @classmethod
    def fromFolder(cls, folder: str, **kwargs: Any) -> StubBrowser:
        """
        Load the extension in C{folder} as the host does: its
        C{manifest.json} is read and checked, and its background script is
        imported as a module of its own (with C{__file__} set, so it finds
        files next to it); the stub's browser gets the manifest and the
        manifest's C{name} as its id.  Call L{start} to run C{main}.

        @param kwargs: More arguments for L{StubBrowser} (C{grants},
            C{names}, C{prompt}, ...; not C{manifest}).
        @raise tcpext.extension.ExtensionError: If the folder is not a valid
            extension, with the same message the host would log.
        """
        manifest = loadManifest(folder)
        main = loadMain(manifest)
        stub = cls(manifest.raw, extensionId=manifest.id, **kwargs)
        stub.manifest = manifest
        stub.main = main
        return stub

    def __init__(
        self,
        manifest: Mapping[str, Any] | None = None,
        *,
        permissions: Iterable[str] = (),
        optionalPermissions: Iterable[str] = (),
        grants: Iterable[str] = (),
        names: Mapping[str, Iterable[str]] | None = None,
        extensionId: str | None = None,
        prompt: PromptPolicy = denyAll,
        grantStore: GrantStore | None = None,
        log: Logger | None = None,
    ) -> None:
        """
        @param manifest: The manifest; by default one with C{permissions} and
            C{optionalPermissions}.
        @param permissions: The manifest's C{permissions} (when no manifest
            is given).
        @param optionalPermissions: The manifest's C{optional_permissions}
            (when no manifest is given).
        @param grants: Optional permissions granted up front, as an operator
            would with C{--grant}.
        @param names: Name -> addresses for the L{FakeResolver}.
        @param extensionId: The extension's id (C{browser.runtime.id});
            by default the manifest's C{name}, or C{"test-extension"}
            without a manifest.
        @param prompt: How C{browser.permissions.request} is answered.
        @param grantStore: Where runtime grants live (a fresh
            L{MemoryGrantStore} by default).
        @param log: The extension's logger.
        """
        if extensionId is None:
            name = manifest.get("name") if manifest is not None else None
            extensionId = name if isinstance(name, str) else "test-extension"
        if manifest is None:
            manifest = {
                "manifest_version": 2,
                "name": extensionId,
                "version": "0",
                "permissions": list(permissions),
                "optional_permissions": list(optionalPermissions),
            }
        self.reactor = StubReactor()
        self.resolver = FakeResolver(names)
        self.reactor.installNameResolver(self.resolver)
        self.grantStore = grantStore if grantStore is not None else MemoryGrantStore()
        self.browser: Browser = makeBrowser(
            extensionId=extensionId,
            manifest=manifest,
            reactor=self.reactor,
            grantStore=self.grantStore,
            prompt=prompt,
            operatorGrants=grants,
            log=log,
        )
        self._pumps: list[IOPump] = []
        self._answered: set[int] = set()
        self._ephemeral = itertools.count(50000)
        self._running: list[defer.Deferred[object]] = []

    # outgoing connections (made by the extension)

    def _pending(self) -> list[tuple[int, str, int]]:
        """
        The unanswered connection attempts: (index, host, port).
        """
        result = []
        for index, (host, port, *_rest) in enumerate(self.reactor.tcpClients):
            connector = self.reactor.connectors[index]
            if index in self._answered or connector.stoppedConnecting:
                continue
            result.append((index, host, port))
        return result

    def pendingConnections(self) -> list[tuple[str, int]]:
        """
        The connection attempts the extension started that the test has not
        answered yet, as C{(address, port)} (the address actually dialed).
        """
        return [(host, port) for _, host, port in self._pending()]

    def _take(self, host: str | None, port: int | None) -> tuple[int, str, int]:
        """
        Find the oldest unanswered attempt to C{host:port}.

        @raise LookupError: If there is none.
        """
        for index, eachHost, eachPort in self._pending():
            if (host is None or host == eachHost) and (
                port is None or port == eachPort
            ):
                self._answered.add(index)
                return index, eachHost, eachPort
        raise LookupError(
            f"no pending connection to {host or '*'}:{port or '*'}; "
            f"pending: {self.pendingConnections()}"
        )

    def connectPeer(
        self,
        host: str | None = None,
        port: int | None = None,
        protocol: _P | None = None,
    ) -> Any:
        """
        Answer a connection attempt of the extension: C{protocol} (a new
        L{Peer} by default) plays the server.

        @param host: The dialed address to match (any if L{None}).
        @param port: The port to match (any if L{None}).
        @param protocol: The server-side protocol.

        @return: The server-side protocol, connected.

        @raise LookupError: If no attempt matches.
        """
        index, host, port = self._take(host, port)
        factory = self.reactor.tcpClients[index][2]
        server: Any = protocol if protocol is not None else Peer()
        serverAddress = tcpAddress(host, port)
        clientAddress = tcpAddress(
            "::1" if ":" in host else "127.0.0.1", next(self._ephemeral)
        )
        client = factory.buildProtocol(serverAddress)
        self._connect(server, serverAddress, client, clientAddress)
        return server

    def refuseConnection(
        self,
        host: str | None = None,
        port: int | None = None,
        reason: BaseException | None = None,
    ) -> None:
        """
        Fail a connection attempt of the extension.

        @param reason: The error (C{ConnectionRefusedError} by default).

        @raise LookupError: If no attempt matches.
        """
        index, _, _ = self._take(host, port)
        factory = self.reactor.tcpClients[index][2]
        connector = self.reactor.connectors[index]
        factory.clientConnectionFailed(
            connector,
            Failure(reason if reason is not None else ConnectionRefusedError()),
        )
        self.flush()

    # incoming connections (to the extension's servers)

    def listening(self) -> list[tuple[str, int]]:
        """
        Where the extension listens now, as C{(interface, port)}.
        """
        return [
            (port.address.host, port.address.port)
            for port in self.reactor.ports
            if port.listening
        ]

    def dialListener(
        self,
        port: int,
        host: str | None = None,
        protocol: _P | None = None,
        peerAddress: str = "127.0.0.1",
    ) -> Any:
        """
        Connect a client to a server the extension listens on.

        @param port: The port it listens on.
        @param host: Its interface (any if L{None}).
        @param protocol: The client-side protocol (a new L{Peer} by default).
        @param peerAddress: The client's address, as the extension sees it.

        @return: The client-side protocol, connected.

        @raise LookupError: If nothing listens there.
        """
        for listening in reversed(self.reactor.ports):
            address = listening.address
            if (
                listening.listening
                and address.port == port
                and (host is None or address.host == host)
            ):
                break
        else:
            raise LookupError(
                f"nothing listens on {host or '*'}:{port}; "
                f"listening: {self.listening()}"
            )
        client: Any = protocol if protocol is not None else Peer()
        clientAddress = tcpAddress(peerAddress, next(self._ephemeral))
        server = listening.factory.buildProtocol(clientAddress)
        if server is None:
            raise ConnectionRefusedError(f"the server on port {port} refused")
        self._connect(server, address, client, clientAddress)
        return client

    def _connect(
        self,
        server: Any,
        serverAddress: IAddress,
        client: Any,
        clientAddress: IAddress,
    ) -> None:
        """
        Join two protocols with in-memory transports and deliver their
        greetings.
        """
        serverTransport = FakeTransport(
            server, isServer=True, hostAddress=serverAddress, peerAddress=clientAddress
        )
        clientTransport = FakeTransport(
            client, isServer=False, hostAddress=clientAddress, peerAddress=serverAddress
        )
        pump = connect(
            server,
            serverTransport,
            client,
            clientTransport,
            greet=False,
            clock=self.reactor,
        )
        self._pumps.append(pump)
        self.flush()

    def run(self, main: Callable[[Browser], object]) -> defer.Deferred[object]:
        """
        Call an extension's C{main(browser)} as the host does.

        @param main: The extension's entry point; it may return L{None}, a
            L{Deferred <twisted.internet.defer.Deferred>} or a coroutine.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} that fires with its result (or fails with its
            error).
        """
        try:
            result = main(self.browser)
        except BaseException:
            return defer.fail()
        if isinstance(result, Coroutine):
            running: defer.Deferred[object] = defer.ensureDeferred(result)
        else:
            running = defer.maybeDeferred(lambda: result)
        if not running.called:
            self._running.append(running)
            running.addBoth(self._finished, running)
        return running

    def _finished(self, result: object, running: defer.Deferred[object]) -> object:
        """
        A C{main} started by L{run} has ended: forget it.
        """
        if running in self._running:
            self._running.remove(running)
        return result

    def start(self) -> defer.Deferred[object]:
        """
        Run the C{main} loaded by L{fromFolder} (see L{run}).

        @raise RuntimeError: If the stub was not loaded from a folder.
        """
        if self.main is None:
            raise RuntimeError(
                "nothing to start: load the extension with StubBrowser.fromFolder"
            )
        return self.run(self.main)

    def close(self) -> defer.Deferred[None]:
        """
        End the extension as the host does when it stops: cancel every
        C{main} started by L{run} that is still running, close every socket
        and server it opened (L{Browser.close}), and deliver what that
        causes, so that its coroutines finish now, inside the test.  (A
        cancelled C{main}'s L{Deferred <twisted.internet.defer.Deferred>} then
        fires with L{None}.)

        Register it with C{self.addCleanup(stub.close)}: a coroutine left
        waiting when the test ends is closed by the garbage collector later,
        where one that waits in a C{finally} (as C{await sock.close()}
        does) makes Python print C{coroutine ignored GeneratorExit}.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} that has
            fired once everything is closed (at once, on this in-memory
            network).
        """
        for running in list(self._running):
            running.addErrback(_ignoreCancelled)
            running.cancel()
        closed = self.browser.close()
        self.flush()
        return closed

    # time and data

    def flush(self) -> None:
        """
        Deliver every pending byte and disconnection, and run the calls due
        now, until nothing moves.

        @raise RuntimeError: If data keeps moving after many rounds (two
            ends that never stop talking).
        """
        for _ in range(10000):
            self.reactor.advance(0)
            moved = False
            for pump in list(self._pumps):
                if pump.pump(advanceClock=False):
                    moved = True
                elif pump.serverIO.disconnected and pump.clientIO.disconnected:
                    self._pumps.remove(pump)
            if not moved:
                return
        raise RuntimeError("flush: the connections never went quiet")

    def advance(self, seconds: float) -> None:
        """
        Move the clock forward by C{seconds}, then L{flush}.
        """
        self.flush()
        self.reactor.advance(seconds)
        self.flush()
