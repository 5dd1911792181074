# -*- test-case-name: tests.test_isolation -*-
"""
The child side of process isolation: C{python -m tcpext.sandbox}.

The host (L{tcpext._supervisor.IsolatedExtension}) starts this module in a
new process with two UNIX sockets inherited as descriptors 3 (an AMP
connection) and 4 (a synchronous channel for listening sockets); their
format is L{tcpext._wire}.  It:

 1. asks to be killed if the host dies, applies its resource limits,
    adopts the two channels and, still single-threaded and before any
    extension code is imported, confines itself
    (L{tcpext._isolation.confine}: a network namespace, Landlock, seccomp),
    or exits with L{EXIT_NO_NAMESPACE} if a layer is missing and
    confinement is required;
 2. says L{Hello} to the host, which answers with the extension's manifest
    and grants;
 3. builds the extension's C{browser} over a L{BrokeredReactor}, whose
    C{connectTCP}/C{listenTCP} ask the host for sockets and adopt the
    descriptors it passes back, and installs the permission-checking
    C{browser.reactor} as the global C{twisted.internet.reactor} (so
    libraries that use the global reactor, such as treq, stay within the
    grants);
 4. runs the extension as the host's own process would, through
    L{tcpext.extension.ExtensionService} (loads the background script,
    calls C{main(browser)}, logs the same lines); if that fails, it reports
    why and exits with L{EXIT_MAIN_FAILED} (the host does not restart it).

Its log events go to the host as record lines on its standard error
(L{LogRecordWriter}; the host's L{tcpext._childoutput.ChildOutput} logs
them with their namespace, level and text).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError, UserError
from twisted.internet.interfaces import (
    IConnector,
    IHostnameResolver,
    IHostResolution,
    IResolutionReceiver,
)
from twisted.internet.protocol import Factory
from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel, eventAsText
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from tcpext._hosts import parseHost
from tcpext._isolation import confine
from tcpext._ledger import GrantChange, GrantLedger, MemoryGrantStore
from tcpext._policy import REQUEST, Decision
from tcpext._resolution import DeniedHost, ImmediateResolution, tcpAddress
from tcpext._twistedcompat import actAsClient
from tcpext._wire import (
    AMP_FD,
    EXIT_MAIN_FAILED,
    EXIT_NO_NAMESPACE,
    SYNC_FD,
    BadRequest,
    ChildRefused,
    Connect,
    Denied,
    Grant,
    Hello,
    MainFailed,
    Ping,
    QuietAMP,
    Release,
    RemovePermissions,
    RequestPermissions,
    Resolve,
    Revoke,
    Shutdown,
    SyncChannel,
    encodeLogRecord,
    errorFromCode,
    translateError,
)
from tcpext.browser import makeBrowser
from tcpext.extension import (
    ExtensionError,
    ExtensionService,
    extensionLogger,
    loadManifest,
)
from tcpext.permissions import Permission, PermissionDenied, parsePermission
from tcpext.reactor import IDialsForNames

__all__ = [
    "EXIT_MAIN_FAILED",
    "EXIT_NO_NAMESPACE",
    "BrokeredReactor",
    "ChildRunner",
    "HostConnection",
    "SyncChannel",
    "applyLimits",
    "installGlobalReactor",
    "main",
]

_log = Logger(namespace="tcpext.sandbox")

PHASES_VARIABLE = "TCPEXT_START_PHASES"
"""When this environment variable is set (to anything), the process writes
one line on its standard error once the extension's C{main} has returned:
C{start phases: NAME=T/C ...}: for each step of its start, the
C{CLOCK_MONOTONIC} time (seconds) at which it reached it and the CPU time
(seconds) the process had used by then.  The host logs it with the rest of
the process's output; C{benchmarks/bench_template.py --phases} reads it."""


class _StartPhases:
    """
    The times of the steps of this process's start, kept only when
    L{PHASES_VARIABLE} is set.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.marks: list[tuple[str, float, float]] = []

    def enable(self, environment: Mapping[str, str]) -> None:
        """
        Keep marks from now on if C{environment} asks for them.
        """
        self.enabled = PHASES_VARIABLE in environment

    def mark(self, name: str) -> None:
        """
        The process reached step C{name}.
        """
        if self.enabled:
            self.marks.append((name, time.monotonic(), time.process_time()))

    def report(self) -> None:
        """
        Write the marks (once).
        """
        if self.enabled and self.marks:
            line = " ".join(
                f"{name}={when:.6f}/{cpu:.6f}" for name, when, cpu in self.marks
            )
            self.marks = []
            sys.stderr.write(f"start phases: {line}\n")
            sys.stderr.flush()


phases = _StartPhases()
"""This process's start times (see L{PHASES_VARIABLE})."""


class HostConnection(QuietAMP):
    """
    The child's end of the AMP connection with the host.

    @ivar onGrant: Called with the canonical text of new grants.
    @ivar onRevoke: Called with the canonical text of withdrawn grants.
    @ivar onShutdown: Called when the host asks the child to stop; returns a
        L{Deferred} that fires once the extension is closed.
    @ivar lost: Fires when the connection with the host is gone.
    """

    def __init__(self) -> None:
        super().__init__()
        self.onGrant: Callable[[list[str]], None] = lambda entries: None
        self.onRevoke: Callable[[list[str]], None] = lambda entries: None
        self.onShutdown: Callable[[], Any] = lambda: None
        self.lost: Deferred[None] = Deferred()

    @Grant.responder
    def grant(self, permissions: list[str]) -> dict[str, object]:
        """
        Add grants the host gave to the child's copy.
        """
        self.onGrant(permissions)
        return {}

    @Revoke.responder
    def revoke(self, permissions: list[str]) -> dict[str, object]:
        """
        Withdraw grants in the child's copy and close what they allowed.
        """
        self.onRevoke(permissions)
        return {}

    @Ping.responder
    def ping(self) -> dict[str, object]:
        """
        The reactor runs.
        """
        return {}

    @Shutdown.responder
    def shutdown(self) -> Deferred[dict[str, object]]:
        """
        Close the extension, answer, then let the caller exit.
        """
        return defer.maybeDeferred(self.onShutdown).addBoth(lambda _: {})

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """
        The host went away.
        """
        super().connectionLost(reason)
        if not self.lost.called:
            self.lost.callback(None)


@implementer(IConnector)
class _BrokeredConnector:
    """
    A connection attempt made by the host on behalf of the child.
    """

    def __init__(
        self,
        reactor: BrokeredReactor,
        host: str,
        port: int,
        factory: Any,
        timeout: float,
    ) -> None:
        self._reactor = reactor
        self.host = host
        self.port = port
        self.factory = factory
        self.timeout = timeout
        self.state = "disconnected"
        self.transport: Any = None

    def connect(self) -> None:
        """
        Connect (again).
        """
        self.startConnecting()

    def startConnecting(self) -> None:
        """
        Ask the host to connect.
        """
        if self.state != "disconnected":
            raise RuntimeError("can't connect in this state")
        self.state = "connecting"
        self.factory.doStart()
        self.factory.startedConnecting(self)
        # An address dialed for a name (tcpext.reactor.AddressForName)
        # carries the name: the host checks it against its own grants, which
        # is how a localhost name grant reaches the loopback address the
        # name maps to without any lookup in the host.
        name = getattr(self.host, "name", None)
        extra = {"name": str(name)} if isinstance(name, str) else {}
        d = self._reactor._host.callRemote(
            Connect,
            host=str(self.host),
            port=self.port,
            timeout=float(self.timeout or 30),
            **extra,
        )
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, answer: dict[str, Any]) -> None:
        fd, socketId = answer["descriptor"], answer["socketId"]
        transport = None
        try:
            if self.state != "connecting":
                return
            transport = self._reactor._real.adoptStreamConnection(
                fd, answer["family"], _AdoptingFactory(self.factory)
            )
            if transport is not None:
                # this side dialed: a STARTTLS on it is a TLS client
                actAsClient(transport)
        except Exception:
            self.state = "disconnected"
            self.factory.clientConnectionFailed(self, Failure())
            self.factory.doStop()
            return
        finally:
            os.close(fd)
            if transport is None:
                self._reactor._release(socketId)
        if transport is None:
            self.state = "disconnected"
            self.factory.doStop()
            return
        self.state = "connected"
        self.transport = transport
        lost = transport.connectionLost

        def connectionLost(reason: Failure) -> None:
            try:
                lost(reason)
            finally:
                self._reactor._release(socketId)
            self.state = "disconnected"
            self.transport = None
            self.factory.clientConnectionLost(self, reason)
            self.factory.doStop()

        transport.connectionLost = connectionLost

    def _failed(self, failure: Failure) -> None:
        if self.state != "connecting":
            return
        self.state = "disconnected"
        self.factory.clientConnectionFailed(self, translateError(failure))
        self.factory.doStop()

    def stopConnecting(self) -> None:
        """
        Give up the attempt (a late answer's socket is closed).
        """
        if self.state != "connecting":
            raise RuntimeError("we're not trying to connect")
        self.state = "disconnected"
        self.factory.clientConnectionFailed(self, Failure(UserError()))
        self.factory.doStop()

    def disconnect(self) -> None:
        """
        Stop connecting, or drop the connection.
        """
        if self.state == "connecting":
            self.stopConnecting()
        elif self.state == "connected" and self.transport is not None:
            self.transport.loseConnection()

    def getDestination(self) -> IPv4Address | IPv6Address:
        """
        Where this connector connects.
        """
        return tcpAddress(self.host, self.port)


class _AdoptingFactory(Factory):
    """
    Builds the protocol of an adopted client connection with the caller's
    factory.
    """

    noisy = False

    def __init__(self, factory: Any) -> None:
        self._factory = factory

    def buildProtocol(self, addr: Any) -> Any:
        """
        Delegate.
        """
        return self._factory.buildProtocol(addr)


@implementer(IHostnameResolver)
class _BrokeredResolver:
    """
    Resolves names through the host (the child's namespace has no DNS).
    """

    def __init__(self, host: HostConnection) -> None:
        self._host = host

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        """
        Ask the host; deliver the addresses of the wanted types.
        """
        resolution = ImmediateResolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        types = tuple(addressTypes) if addressTypes else (IPv4Address, IPv6Address)

        def deliver(addresses: list[str]) -> None:
            for address in addresses:
                resolved = tcpAddress(address, portNumber)
                if type(resolved) in types:
                    resolutionReceiver.addressResolved(resolved)
            resolutionReceiver.resolutionComplete()

        try:
            host = parseHost(hostName)
        except (TypeError, ValueError):
            deliver([])
            return resolution
        if host.ip is not None:
            # An address resolves to itself (canonical, zone kept), as on
            # the host.
            deliver([host.text])
            return resolution
        if not 0 < portNumber < 65536:
            deliver([])
            return resolution

        def failed(reason: Failure) -> None:
            if reason.check(Denied):
                # The host refused: say so, as a checked resolver does.
                kind = IPv4Address if IPv4Address in types else IPv6Address
                resolutionReceiver.addressResolved(
                    kind("TCP", DeniedHost(reason.getErrorMessage()), portNumber)
                )
                resolutionReceiver.resolutionComplete()
                return
            _log.debug(
                "resolving {name} failed: {reason}",
                name=hostName,
                reason=reason.getErrorMessage(),
            )
            deliver([])

        self._host.callRemote(Resolve, name=hostName, port=portNumber).addCallbacks(
            lambda answer: deliver(answer["addresses"]), failed
        )
        return resolution


class BrokeredReactor:
    """
    A reactor whose TCP calls are carried out by the host: every other call
    goes to the real reactor.  It provides the interfaces the real reactor
    does.
    """

    def __init__(
        self, reactor: Any, host: HostConnection, sync: SyncChannel | None
    ) -> None:
        """
        @param reactor: The child's real reactor.
        @param host: The AMP connection with the host.
        @param sync: The synchronous channel (for C{listenTCP}).
        """
        self._real = reactor
        self._host = host
        self._sync = sync
        self.nameResolver: IHostnameResolver = _BrokeredResolver(host)
        # It reads the name an address is dialed for (the host checks it).
        directlyProvides(self, *providedBy(reactor), IDialsForNames)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def _release(self, socketId: int) -> None:
        """
        Tell the host that this socket is closed here (it then closes its
        copy).
        """
        self._host.callRemote(Release, socketIds=[socketId]).addErrback(lambda f: None)

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        """
        Replace the resolver (extension code cannot reach this: the
        permission-checking reactor stands in front).
        """
        old, self.nameResolver = self.nameResolver, resolver
        return old

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: Any,
        timeout: float = 30,
        bindAddress: Any = None,
    ) -> IConnector:
        """
        Have the host connect; adopt the socket it hands over.
        """
        connector = _BrokeredConnector(self, host, port, factory, timeout)
        connector.startConnecting()
        return connector

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        """
        Have the host open the listening socket; adopt it.

        @raise CannotListenError: when the host cannot listen.
        @raise tcpext.permissions.PermissionDenied: when the host's grants
            do not allow it.
        """
        if self._sync is None:
            raise CannotListenError(interface, port, OSError("no listen channel"))
        try:
            answer, fds = self._sync.call(
                {
                    "op": "listen",
                    "port": port,
                    "interface": interface,
                    "backlog": backlog,
                }
            )
        except OSError as e:
            raise CannotListenError(interface, port, e) from e
        if not answer.get("ok"):
            for fd in fds:
                os.close(fd)
            message = str(answer.get("message", ""))
            error = errorFromCode(answer.get("error"), message)
            if isinstance(error, Denied):
                raise PermissionDenied(message)
            if isinstance(error, BadRequest):
                raise ValueError(message)
            raise CannotListenError(interface, port, OSError(message))
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise CannotListenError(interface, port, OSError("no socket received"))
        socketId = answer["socketId"]
        try:
            listening = self._real.adoptStreamPort(fds[0], answer["family"], factory)
        except BaseException:
            self._release(socketId)
            raise
        finally:
            os.close(fds[0])
        lost = listening.connectionLost

        def connectionLost(reason: Failure) -> None:
            try:
                lost(reason)
            finally:
                self._release(socketId)

        listening.connectionLost = connectionLost
        return listening

    def connectSSL(
        self,
        host: str,
        port: int,
        factory: Any,
        contextFactory: Any,
        timeout: float = 30,
        bindAddress: Any = None,
    ) -> IConnector:
        """
        TLS over a brokered TCP connection.
        """
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return self.connectTCP(
            host, port, TLSMemoryBIOFactory(contextFactory, True, factory), timeout
        )

    def listenSSL(
        self,
        port: int,
        factory: Any,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> Any:
        """
        TLS over a brokered listening socket.
        """
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return self.listenTCP(
            port,
            TLSMemoryBIOFactory(contextFactory, False, factory),
            backlog,
            interface,
        )


def installGlobalReactor(reactor: Any) -> None:
    """
    Make C{reactor} what C{from twisted.internet import reactor} gives from
    now on (the child's real reactor keeps running underneath).
    """
    import twisted.internet

    sys.modules["twisted.internet.reactor"] = reactor
    twisted.internet.reactor = reactor


class ChildRunner:
    """
    Runs one extension in the child once the reactor is running.

    @ivar exitCode: The status the process exits with.
    @ivar browser: The extension's C{browser} once built.
    @ivar service: The L{ExtensionService} running it, once the host said
        hello.
    """

    def __init__(
        self,
        reactor: Any,
        host: HostConnection,
        sync: SyncChannel | None,
        confined: bool,
        reason: str,
        layers: tuple[str, ...] = (),
    ) -> None:
        """
        @param confined: Every confinement layer is in force.
        @param reason: What is missing, when not.
        @param layers: The layers in force (for the host's log).
        """
        self._reactor = reactor
        self._host = host
        self._sync = sync
        self._confined = confined
        self._reason = reason
        self._layers = list(layers)
        self.exitCode = 0
        self.browser: Any = None
        self.ledger: GrantLedger | None = None
        self.service: ExtensionService | None = None
        self._stopping = False
        self._starting = False
        self._mainReturned = False

    def start(self) -> None:
        """
        Say hello, then run the extension.
        """
        self._host.lost.addCallback(lambda _: self._stop(self.exitCode))
        d = self._host.callRemote(
            Hello,
            confined=self._confined,
            reason=self._reason,
            pid=os.getpid(),
            layers=self._layers,
        )
        d.addCallback(self._run)
        d.addErrback(self._refused)

    def _reportRefusal(self, extensionId: str, decision: Decision) -> None:
        """
        Tell the host of a request this process refused itself (the host
        never saw it), for its audit trail.  A refused runtime request is
        the host's own answer, already recorded there.
        """
        if decision.allowed or decision.verb == REQUEST:
            return
        if self._host.transport is None:
            return
        try:
            self._host.callRemote(
                ChildRefused,
                verb=decision.verb[:64],
                target=decision.target[:512],
                reason=(decision.reason or decision.message or "")[:512],
            )
        except Exception:
            # The channel is closing; the refusal is in this process's log.
            pass

    def _run(self, answer: dict[str, Any]) -> None:
        """
        Run the extension as the host's process would
        (L{tcpext.extension.ExtensionService}, so that it logs the same
        lines), over a C{browser} whose sockets come from the host.
        """
        extensionId = answer["extensionId"]
        hostManifest = json.loads(answer["manifest"])
        log = extensionLogger(extensionId)
        try:
            manifest = loadManifest(answer["path"])
            if manifest.id != extensionId:
                raise ExtensionError(
                    extensionId,
                    "name",
                    f"the manifest now names {manifest.id!r}; restart the service",
                )
        except ExtensionError as e:
            log.error("{error}", error=str(e), extensionId=extensionId)
            self._extensionFailed(e)
            return
        brokered = BrokeredReactor(self._reactor, self._host, self._sync)

        def build(**kw: Any) -> Any:
            # The child's copy of the grants: the host decided and saved
            # them (from its own copy of the manifest), and tells of every
            # change (Grant, Revoke); the child can only give grants up,
            # which it tells the host (RemovePermissions).
            self.ledger = ledger = GrantLedger.fromManifest(
                extensionId=extensionId,
                manifest=hostManifest,
                store=MemoryGrantStore({extensionId: answer["runtimeGrants"]}),
                operatorGrants=answer["operatorGrants"],
                log=kw["log"],
            )
            ledger.addObserver(self._removed)
            self.browser = browser = makeBrowser(
                extensionId=extensionId,
                manifest=hostManifest,
                reactor=brokered,
                ledger=ledger,
                prompt=self._prompt,
                log=kw["log"],
                # The kernel confines this process as a whole (threads
                # included) only when every layer is in force.
                allowThreads=self._confined,
                decisionObservers=[self._reportRefusal],
            )
            installGlobalReactor(browser.reactor)
            phases.mark("hello")
            return browser

        self._host.onGrant = self._grant
        self._host.onRevoke = self._revoke
        self._host.onShutdown = self._shutdown
        # The host has warned about the ignored permissions already.
        self.service = ExtensionService(
            attrs.evolve(manifest, ignored=()),
            build,
            log=log,
            onFailure=self._extensionFailed,
            onMainDone=self._mainDone,
        )
        self._starting = True
        try:
            self.service.startService()
        finally:
            self._starting = False
        # Its script is loaded and its main called.
        phases.mark("loaded")
        if self._mainReturned:
            self._mainDone()

    def _prompt(self, extensionId: str, permissions: list[str]) -> Deferred[bool]:
        """
        Ask the host, which asks its prompt and saves and grants (a store
        that failed: L{tcpext._ledger.GrantNotSaved}, as in-process).
        """
        return self._host.callRemote(
            RequestPermissions, permissions=list(permissions)
        ).addCallbacks(lambda answer: bool(answer["granted"]), translateError)

    def _removed(self, change: GrantChange) -> None:
        """
        The extension gave grants up: the host takes them away too (before
        any later request of the child, which comes after on the wire).
        """
        if change.origin == "remove" and change.revoked:
            self._host.callRemote(
                RemovePermissions, permissions=[str(p) for p in change.revoked]
            ).addErrback(lambda f: None)

    def _parsed(self, entries: list[str]) -> list[Permission]:
        """
        The permissions the host named (text that does not parse skipped).
        """
        permissions = []
        for entry in entries:
            try:
                permissions.append(parsePermission(entry))
            except ValueError:
                continue
        return permissions

    def _grant(self, entries: list[str]) -> None:
        """
        The host granted: the child's copy follows.
        """
        if self.ledger is not None:
            self.ledger.mirror(granted=self._parsed(entries))

    def _revoke(self, entries: list[str]) -> None:
        """
        The host revoked: the child's copy follows, and the browser closes
        what the remaining grants no longer allow.
        """
        if self.ledger is not None:
            self.ledger.mirror(revoked=self._parsed(entries))

    def _shutdown(self) -> Deferred[None]:
        self._stopping = True
        service = self.service
        d: Deferred[Any] = (
            service.stopService() if service is not None else defer.succeed(None)
        )
        d.addBoth(lambda _: self._reactor.callLater(0, self._stop, 0))
        return d

    def _mainDone(self) -> None:
        """
        The extension's C{main} has returned (its Deferred or coroutine
        included); if it did at once, this is noted after the start.
        """
        self._mainReturned = True
        if not self._starting:
            phases.mark("main")
            phases.report()

    def _extensionFailed(self, error: ExtensionError) -> None:
        """
        The extension failed (its failure is logged): tell the host, which
        does not restart it, and exit.
        """
        if self._stopping or self._host.lost.called:
            return
        self.exitCode = EXIT_MAIN_FAILED
        d = self._host.callRemote(MainFailed, reason=str(error))
        d.addBoth(lambda _: self._stop(EXIT_MAIN_FAILED))

    def _refused(self, failure: Failure) -> None:
        """
        The host refused this process (or the connection ended first).
        """
        if self._stopping or self._host.lost.called:
            return
        _log.failure("the host refused this extension process", failure)
        self._stop(EXIT_MAIN_FAILED)

    def _stop(self, code: int) -> None:
        self.exitCode = code
        if self._reactor.running:
            self._reactor.stop()


@implementer(ILogObserver)
class LogRecordWriter:
    """
    Writes each log event of the child as one record line
    (L{tcpext._wire.encodeLogRecord}): its namespace, its level and its text
    as the host's log would show it (with a traceback, if it carries a
    failure).  The child's own reactor's comings and goings ("Main loop
    terminated."), which an extension in the host's process does not log,
    are left out; its warnings and errors are not.
    """

    def __init__(self, output: Any) -> None:
        """
        @param output: A binary file (the child's standard error).
        """
        self._output = output

    def __call__(self, event: LogEvent) -> None:
        """
        Write one event.
        """
        level = event.get("log_level", LogLevel.info)
        namespace = event.get("log_namespace") or "log_legacy"
        if namespace == "twisted.internet.base" and level < LogLevel.warn:
            return
        text = eventAsText(
            event, includeTraceback=True, includeTimestamp=False, includeSystem=False
        )
        try:
            self._output.write(
                encodeLogRecord(str(namespace), getattr(level, "name", "info"), text)
            )
            self._output.flush()
        except (OSError, ValueError):
            pass


def _dieWithParent() -> None:
    """
    Ask the kernel to kill this process when the host dies (Linux only).
    """
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        pass


def _parse(argv: list[str]) -> argparse.Namespace:
    return _parser().parse_args(argv)


@functools.cache
def _parser() -> argparse.ArgumentParser:
    """
    The command line's parser (built once; a template builds it before it
    forks).
    """
    parser = argparse.ArgumentParser(prog="python -m tcpext.sandbox")
    parser.add_argument(
        "--confine",
        choices=["require", "try", "none"],
        default="require",
        help="require every confinement layer, apply what the system offers, "
        "or apply none",
    )
    parser.add_argument(
        "--scratch",
        default=None,
        metavar="PATH",
        help="the one folder the process may write beneath",
    )
    parser.add_argument("--amp-fd", type=int, default=AMP_FD)
    parser.add_argument("--sync-fd", type=int, default=SYNC_FD)
    parser.add_argument(
        "--rlimit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a resource limit (e.g. RLIMIT_AS=536870912), soft and hard",
    )
    return parser


def applyLimits(limits: list[str]) -> None:
    """
    Set each C{NAME=VALUE} resource limit (soft and hard) on this process.

    @raise ValueError: naming an unknown limit or a value that is not an int.
    """
    import resource

    for item in limits:
        name, sep, value = item.partition("=")
        number = getattr(resource, name, None)
        if not sep or not name.startswith("RLIMIT_") or not isinstance(number, int):
            raise ValueError(f"unknown resource limit {item!r}")
        try:
            amount = int(value)
        except ValueError:
            raise ValueError(f"resource limit {item!r}: not an int") from None
        resource.setrlimit(number, (amount, amount))


_GROUP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


def ignoreGroupSignals() -> None:
    """
    Ignore C{SIGINT}, C{SIGTERM} and C{SIGHUP}.  The host alone ends an
    extension's process (C{Shutdown} over its channel, then C{SIGKILL}), and
    the template process is ended by its host; but they share the host's
    process group, and a signal to the whole group (Ctrl-C in the terminal
    running C{twistd -n}, a service manager's stop, C{timeout}) would end
    them before the host's orderly stop: extensions reported crashed and
    restarted while the service stops.
    """
    import signal

    for name in _GROUP_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    """
    Run one isolated extension; see the module docstring.

    @return: the exit status.
    """
    if not phases.enabled:
        phases.enable(os.environ)
    phases.mark("start")
    args = _parse(sys.argv[1:] if argv is None else argv)
    _dieWithParent()
    ignoreGroupSignals()
    # Limits first: raising a hard limit needs privileges the namespace
    # takes away.
    try:
        applyLimits(args.rlimit)
    except (ValueError, OSError) as e:
        sys.stderr.write(f"cannot apply resource limits: {e}\n")
        sys.stderr.flush()
        return EXIT_MAIN_FAILED

    phases.mark("limits")
    from twisted.internet import reactor as real
    from twisted.logger import globalLogBeginner

    phases.mark("reactor")

    host = HostConnection()
    ampSocket = socket.socket(fileno=args.amp_fd)
    ampSocket.setblocking(False)
    real.adoptStreamConnection(  # type: ignore[attr-defined]
        ampSocket.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: host)
    )
    ampSocket.close()
    sync = SyncChannel(socket.socket(fileno=args.sync_fd))

    # Confinement: still single-threaded, Twisted and tcpext imported, the
    # channels open, no extension code imported yet.  Nothing below may
    # need to connect, bind or write outside the scratch folder.
    layers: tuple[str, ...] = ()
    confined, reason = False, "confinement not requested"
    phases.mark("channels")
    if args.confine != "none":
        confinement = confine(args.scratch, mark=phases.mark)
        layers = confinement.active
        confined = confinement.complete
        reason = "; ".join(confinement.missing)
        if not confined and args.confine == "require":
            sys.stderr.write(f"refusing to run unconfined: missing {reason}\n")
            sys.stderr.flush()
            return EXIT_NO_NAMESPACE
    # Extension code is read-only to this process: do not try to cache it.
    sys.dont_write_bytecode = True

    # Each log event goes to the host as one record (tcpext._childoutput);
    # what the extension prints goes out a line at a time.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    globalLogBeginner.beginLoggingTo(
        [LogRecordWriter(sys.stderr.buffer)], redirectStandardIO=False
    )
    runner = ChildRunner(real, host, sync, confined, reason, layers)
    real.callWhenRunning(phases.mark, "running")
    real.callWhenRunning(runner.start)
    # No signal handlers: the host stops this process (see
    # ignoreGroupSignals), and it starts no processes to reap.
    real.run(installSignalHandlers=False)  # type: ignore[call-arg]
    # Its last lines reach the host before the process ends.
    sys.stdout.flush()
    sys.stderr.flush()
    return runner.exitCode


if __name__ == "__main__":  # pragma: no cover - run in a child process
    # Run the copy imported as tcpext.sandbox, not this __main__ one, so that
    # there is one HostConnection class in the process.
    from tcpext.sandbox import main as _main

    sys.exit(_main())
