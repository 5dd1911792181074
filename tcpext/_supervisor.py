# -*- test-case-name: tests.test_isolation_broker -*-
"""
The supervisor of an isolated extension's process: L{IsolatedExtension}
starts C{python -m tcpext.sandbox} with the two ends of the wire
(L{tcpext._wire}), attaches a L{tcpext._broker.BrokerProtocol} to it, pings
it, restarts it with backoff when it crashes (L{RestartPolicy}) and stops it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcpext._broker import BrokerProtocol, SyncListenProtocol
from tcpext._isolation import LAYERS, _childEnvironment
from tcpext._wire import (
    AMP_FD,
    EXIT_MAIN_FAILED,
    EXIT_NO_NAMESPACE,
    SYNC_FD,
    BadRequest,
    Ping,
    Revoke,
    Shutdown,
)
from tcpext.browser import _operatorGrants, _storedGrants
from tcpext.extension import _warnIgnored
from tcpext.permissions import (
    PermissionSet,
    parseManifestPermissions,
    parsePermission,
)

__all__ = ["IsolatedExtension", "RestartPolicy"]


@attrs.frozen
class RestartPolicy:
    """
    How a crashed extension process is restarted: after C{initialDelay}
    seconds, doubling up to C{maxDelay}, at most C{maxRestarts} times in a
    row (a process that ran C{stableAfter} seconds resets the count).  A
    process that has not said hello after C{startTimeout} seconds is killed
    and counts as a crash; so is a running process that has not answered a
    ping (sent every C{pingInterval} seconds; L{None} sends none) within
    C{pingTimeout} seconds (its reactor is blocked).  C{stopTimeout} is how
    long a stopping process gets before it is killed.
    """

    maxRestarts: int = 5
    initialDelay: float = 1.0
    maxDelay: float = 60.0
    stableAfter: float = 60.0
    startTimeout: float = 30.0
    stopTimeout: float = 5.0
    pingInterval: float | None = 15.0
    pingTimeout: float = 60.0


class _ChildProcess(ProcessProtocol):
    """
    Watches one child process: logs its output line by line (bounded) and
    reports its end to the L{IsolatedExtension}.
    """

    maxLine = 4096
    maxLinesPerSecond = 200

    def __init__(self, owner: IsolatedExtension) -> None:
        self._owner = owner
        self._buffers = {1: b"", 2: b""}
        self._window = 0.0
        self._lines = 0
        self._dropped = 0
        self.ended: Deferred[None] = Deferred()
        self.pid: int | None = None
        self._closed: set[int] = set()

    def connectionMade(self) -> None:
        """
        The child has no input.
        """
        self.pid = self.transport.pid  # type: ignore[union-attr]
        self.transport.closeStdin()  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """
        Log complete lines; cut endless ones.
        """
        buffer = self._buffers.get(childFD, b"") + data
        *lines, rest = buffer.split(b"\n")
        if len(rest) > self.maxLine:
            lines.append(rest[: self.maxLine])
            rest = b""
        self._buffers[childFD] = rest
        for line in lines:
            self._emit(line[: self.maxLine])

    def _emit(self, line: bytes) -> None:
        now = self._owner._reactor.seconds()
        if now - self._window >= 1.0:
            if self._dropped:
                self._owner.log.warn(
                    "dropped {count} lines of the extension's output",
                    count=self._dropped,
                )
            self._window, self._lines, self._dropped = now, 0, 0
        self._lines += 1
        if self._lines > self.maxLinesPerSecond:
            self._dropped += 1
            return
        self._owner.log.info(
            "[pid {pid}] {line}",
            pid=self.pid,
            line=line.decode("utf-8", "replace").rstrip(),
        )

    def childConnectionLost(self, childFD: int) -> None:
        """
        Once the child's output is closed it is ending: make sure it is
        reaped.
        """
        self._closed.add(childFD)
        if {1, 2} <= self._closed and self.transport is not None:
            self._owner._reapSoon(self.transport, 50)

    def processEnded(self, reason: Failure) -> None:
        """
        Tell the owner how the process ended.
        """
        for rest in self._buffers.values():
            if rest:
                self._emit(rest[: self.maxLine])
        self._buffers = {}
        self._owner._processEnded(self, reason)
        self.ended.callback(None)


class _MemoryStore:
    """
    The default grant store: nothing persists.
    """

    def __init__(self) -> None:
        self._grants: dict[str, list[str]] = {}

    def load(self, extensionId: str) -> list[str]:
        return list(self._grants.get(extensionId, ()))

    def save(self, extensionId: str, entries: list[str]) -> None:
        self._grants[extensionId] = list(entries)


def _refuse(extensionId: str, permissions: list[str]) -> bool:
    """
    The default prompt policy: refuse.
    """
    return False


class IsolatedExtension(Service):
    """
    Runs one extension in its own process and network namespace and brokers
    its sockets; restarts it (bounded, with backoff) when it crashes.

    @ivar grants: The authoritative L{tcpext.permissions.PermissionSet}.
    @ivar log: The extension's logger (C{tcpext.extension.<id>}).
    @ivar starts: How many processes were started.
    @ivar broker: The L{BrokerProtocol} of the current process, if any.
    """

    exitGrace = 2.0
    """Seconds a process whose AMP connection ended gets to exit by itself."""

    revokeGrace = 2.0
    """Seconds the child gets to close revoked sockets itself."""

    def __init__(
        self,
        *,
        path: str,
        extensionId: str,
        manifest: Mapping[str, Any],
        reactor: Any,
        grantStore: Any = None,
        prompt: Callable[[str, list[str]], Any] | None = None,
        operatorGrants: Iterable[str] = (),
        log: Logger | None = None,
        mode: str = "process",
        restart: RestartPolicy = RestartPolicy(),
        python: str | None = None,
        limits: Mapping[str, int] | None = None,
    ) -> None:
        """
        @param path: The extension's folder.
        @param extensionId: Its id.
        @param manifest: The validated manifest mapping.
        @param reactor: The host's reactor (C{IReactorProcess},
            C{IReactorSocket}, C{IReactorFDSet}, a C{nameResolver}).
        @param grantStore: A L{tcpext.browser.GrantStore} (the host keeps it;
            the child never sees it).
        @param prompt: The prompt policy for C{permissions.request}
            (default: refuse).
        @param operatorGrants: Optional permissions the operator pre-grants.
        @param log: The extension's logger.
        @param mode: C{"process"} (refuse to run without a network
            namespace) or C{"process-unconfined"} (run anyway, brokered).
        @param restart: The L{RestartPolicy}.
        @param python: The interpreter for the child (default: this one).
        @param limits: Resource limits for the child, by C{resource} name
            (C{{"RLIMIT_AS": 2**30, "RLIMIT_NOFILE": 1024}}), set soft and
            hard before the extension's code runs.

        @raise ValueError: for an unknown mode, an invalid C{tcp-*} entry, or
            an operator grant the manifest does not list as optional.
        """
        if mode not in ("process", "process-unconfined"):
            raise ValueError(
                f"isolation mode must be 'process' or 'process-unconfined', "
                f"not {mode!r}"
            )
        self.setName(extensionId)
        self.path = os.path.abspath(path)
        self.extensionId = extensionId
        self.manifest = dict(manifest)
        self._reactor = reactor
        self._store = grantStore if grantStore is not None else _MemoryStore()
        self._prompt = prompt if prompt is not None else _refuse
        self.log = log or Logger(namespace=f"tcpext.extension.{extensionId}")
        self.mode = mode
        self.restart = restart
        self._python = python or sys.executable
        self.limits = dict(limits or {})
        for name, value in self.limits.items():
            if not name.startswith("RLIMIT_") or not hasattr(resource, name):
                raise ValueError(f"unknown resource limit {name!r}")
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"resource limit {name}: {value!r} is not an int")
        self._parse = parsePermission

        required, ignored = parseManifestPermissions(
            list(manifest.get("permissions", []))
        )
        optional, ignoredOptional = parseManifestPermissions(
            list(manifest.get("optional_permissions", []))
        )
        self._ignored = [*ignored, *ignoredOptional]
        self._required = {str(p): p for p in required}
        self._optional = {str(p): p for p in optional}
        self._operator: dict[str, Any] = _operatorGrants(
            extensionId, operatorGrants, self._optional
        )
        self._runtime: dict[str, Any] = _storedGrants(
            self._store.load(extensionId), self._optional, self.log
        )
        self.grants = PermissionSet(self._effective().values())

        self.starts = 0
        self.broker: BrokerProtocol | None = None
        self._process: _ChildProcess | None = None
        self._processTransport: Any = None
        self._helloAt: float | None = None
        self._crashes = 0
        self._permanent: str | None = None
        self._startTimer: Any = None
        self._restartTimer: Any = None
        self._killTimer: Any = None
        self._reapTimer: Any = None
        self._pingTimer: Any = None
        self._stopping = False
        self._scratch: str | None = None

    # Grants.

    def _effective(self) -> dict[str, Any]:
        return {**self._required, **self._operator, **self._runtime}

    def _sync(self) -> list[str]:
        """
        Bring C{grants} in line with the three sources; return what was
        withdrawn.
        """
        wanted = self._effective()
        removed = []
        for p in list(self.grants):
            if str(p) not in wanted:
                self.grants.discard(p)
                removed.append(str(p))
        for p in wanted.values():
            if p not in self.grants:
                self.grants.add(p)
        return removed

    def requestPermissions(self, entries: list[str]) -> Deferred[bool]:
        """
        The child's C{permissions.request}: only optional entries; the host's
        prompt decides and the host persists.
        """
        wanted = []
        for entry in entries:
            try:
                p = self._parse(entry)
            except ValueError as e:
                raise BadRequest(str(e))
            if str(p) not in self._optional:
                raise BadRequest(f"{entry!r} is not in optional_permissions")
            if p not in self.grants:
                wanted.append(str(p))
        if not wanted:
            return defer.succeed(True)

        def answered(answer: object) -> bool:
            if answer is not True or self._stopping:
                self.log.warn("refused runtime request for {entries}", entries=wanted)
                return False
            for entry in wanted:
                self._runtime[entry] = self._optional[entry]
            self._sync()
            self._store.save(self.extensionId, sorted(self._runtime))
            self.log.info("granted {entries}", entries=wanted)
            return True

        def failed(reason: Failure) -> bool:
            self.log.failure("the prompt failed; refusing", reason)
            return False

        return (
            defer.maybeDeferred(self._prompt, self.extensionId, list(wanted))
            .addCallback(answered)
            .addErrback(failed)
        )

    def saveGrants(self, entries: list[str]) -> None:
        """
        The child saved its runtime grants: accept removals only.
        """
        keep = set()
        for entry in entries:
            try:
                keep.add(str(self._parse(entry)))
            except ValueError:
                continue
        removed = [e for e in self._runtime if e not in keep]
        if not removed:
            return
        for entry in removed:
            del self._runtime[entry]
        self._sync()
        self._store.save(self.extensionId, sorted(self._runtime))
        self.log.info("removed {entries}", entries=removed)

    def revoke(self, entries: Iterable[str]) -> Deferred[None]:
        """
        Withdraw optional grants (operator or runtime ones): the host stops
        allowing them at once and tells the child, which closes the sockets
        no remaining grant allows.
        """
        for entry in entries:
            key = str(self._parse(entry))
            self._operator.pop(key, None)
            self._runtime.pop(key, None)
        removed = self._sync()
        self._store.save(self.extensionId, sorted(self._runtime))
        if removed:
            self.log.info("revoked {entries}", entries=removed)
        broker = self.broker
        if not removed or broker is None or broker.transport is None:
            return defer.succeed(None)
        # The child closes what the grants no longer allow (its sockets then
        # fail with PermissionDenied); whatever it does, the host then shuts
        # down its own copies of those sockets, which ends them for the child
        # too.  A child that does not answer within revokeGrace seconds gets
        # the same.
        d = broker.callRemote(Revoke, permissions=removed)
        d.addErrback(lambda f: None)
        timer = self._reactor.callLater(self.revokeGrace, d.cancel)

        def enforce(_: object) -> None:
            if timer.active():
                timer.cancel()
            broker.enforce()

        return d.addBoth(enforce)

    # Child messages.

    def childHello(
        self,
        broker: BrokerProtocol,
        confined: bool,
        reason: str,
        pid: int,
        layers: Sequence[str] = (),
    ) -> dict[str, Any]:
        """
        The child is up: check its confinement, send what it needs.

        @param confined: The child says every confinement layer is in force.
        @param reason: What is missing, when not.
        @param layers: The layers in force, as the child names them.
        """
        if broker is not self.broker:
            raise BadRequest("stale connection")
        if self._startTimer is not None and self._startTimer.active():
            self._startTimer.cancel()
        self._startTimer = None
        missing = [
            layer
            for layer in LAYERS
            if not any(active.split(" ABI ")[0] == layer for active in layers)
        ]
        if confined and missing:
            confined = False
            reason = f"{', '.join(missing)} not reported in force"
        if not confined:
            if self.mode == "process":
                self._permanent = f"not confined: {reason}"
                self.log.critical(
                    "extension process {pid} is not confined (missing {reason}); "
                    "stopping it",
                    pid=pid,
                    reason=reason,
                )
                self._kill()
                raise BadRequest("confinement is required")
            self.log.warn(
                "extension process {pid} runs unconfined: missing {reason}",
                pid=pid,
                reason=reason,
            )
        self._helloAt = self._reactor.seconds()
        if self.restart.pingInterval is not None:
            self._pingTimer = self._reactor.callLater(
                self.restart.pingInterval, self._ping, broker
            )
        if confined:
            how = f"confined: {', '.join(layers)}"
        elif layers:
            how = f"partly confined: {', '.join(layers)}"
        else:
            how = "unconfined"
        self.log.info("extension process {pid} started ({how})", pid=pid, how=how)
        return {
            "extensionId": self.extensionId,
            "path": self.path,
            "manifest": json.dumps(self.manifest),
            "runtimeGrants": sorted(self._runtime),
            "operatorGrants": sorted(self._operator),
        }

    def mainFailed(self, reason: str) -> None:
        """
        The script failed: report it; do not restart.
        """
        self._permanent = reason
        self.log.error("extension failed: {reason}", reason=reason)

    # Processes.

    def startService(self) -> None:
        """
        Start the extension's process.
        """
        super().startService()
        _warnIgnored(self.log, self.extensionId, self._ignored)
        self._stopping = False
        self._crashes = 0
        self._permanent = None
        self._spawn()

    def _makeScratch(self) -> str:
        """
        Create the child's private scratch folder (mode 0700), the one
        place it may write to; L{_removeScratch} removes it once the child
        has ended (the child cannot remove it itself).
        """
        self._removeScratch()
        safe = "".join(
            c if c.isalnum() or c in "-_." else "_" for c in self.extensionId
        )
        self._scratch = tempfile.mkdtemp(prefix=f"tcpext-{safe[:40]}-")
        return self._scratch

    def _removeScratch(self) -> None:
        """
        Remove the scratch folder of the last child, whatever it left there.
        """
        scratch, self._scratch = self._scratch, None
        if scratch is None:
            return

        def writable(function: Any, path: str, excinfo: Any) -> None:
            # A folder the child made read-only: open it up and retry.
            os.chmod(os.path.dirname(path), 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
            function(path)

        try:
            shutil.rmtree(scratch, onerror=writable)
        except OSError as e:
            self.log.warn(
                "cannot remove the scratch folder {path}: {error}",
                path=scratch,
                error=e,
            )

    def _spawn(self) -> None:
        self._restartTimer = None
        ampHost, ampChild = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        syncHost, syncChild = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        broker = BrokerProtocol(self._reactor, self.grants, self.log, owner=self)
        self.broker = broker
        broker.lost.addCallback(lambda _: self._brokerLost(broker))
        sync = SyncListenProtocol(broker)
        try:
            for sock, protocol in ((ampHost, broker), (syncHost, sync)):
                sock.setblocking(False)
                self._reactor.adoptStreamConnection(
                    sock.fileno(),
                    socket.AF_UNIX,
                    Factory.forProtocol(lambda p=protocol: p),  # type: ignore[misc]
                )
            confine = "require" if self.mode == "process" else "try"
            scratch = self._makeScratch()
            env = _childEnvironment()
            env["TMPDIR"] = scratch
            process = _ChildProcess(self)
            self._process = process
            self.starts += 1
            self._processTransport = self._reactor.spawnProcess(
                process,
                self._python,
                [
                    self._python,
                    "-m",
                    "tcpext.sandbox",
                    "--confine",
                    confine,
                    "--scratch",
                    scratch,
                    *[f"--rlimit={k}={v}" for k, v in sorted(self.limits.items())],
                ],
                env=env,
                path=self.path,
                childFDs={
                    0: "w",
                    1: "r",
                    2: "r",
                    AMP_FD: ampChild.fileno(),
                    SYNC_FD: syncChild.fileno(),
                },
            )
        except BaseException:
            self._removeScratch()
            raise
        finally:
            for sock in (ampHost, ampChild, syncHost, syncChild):
                sock.close()
        self._helloAt = None
        self._startTimer = self._reactor.callLater(
            self.restart.startTimeout, self._hungAtStart
        )

    def _ping(self, broker: BrokerProtocol) -> None:
        """
        Check that the child's reactor still runs; kill it if it does not
        answer within C{pingTimeout}.
        """
        self._pingTimer = None
        if broker is not self.broker or self._stopping:
            return
        interval = self.restart.pingInterval
        assert interval is not None
        d = broker.callRemote(Ping)
        timeout = self._reactor.callLater(self.restart.pingTimeout, d.cancel)

        def answered(_: object) -> None:
            if timeout.active():
                timeout.cancel()
            if broker is self.broker and not self._stopping:
                self._pingTimer = self._reactor.callLater(interval, self._ping, broker)

        def failed(reason: Failure) -> None:
            if timeout.active():
                timeout.cancel()
            if broker is self.broker and not self._stopping:
                self.log.error(
                    "extension process did not answer a ping within {seconds}s; "
                    "killing it",
                    seconds=self.restart.pingTimeout,
                )
                self._kill()

        d.addCallbacks(answered, failed)

    def _hungAtStart(self) -> None:
        self._startTimer = None
        self.log.error(
            "extension process did not start within {seconds}s; killing it",
            seconds=self.restart.startTimeout,
        )
        self._kill()

    def _brokerLost(self, broker: BrokerProtocol) -> None:
        """
        The AMP connection ended: the process must not outlive it; it gets
        a moment to exit by itself (so that its exit status is seen).
        """
        if broker is self.broker and self._process is not None:
            if self._killTimer is None or not self._killTimer.active():
                self._killTimer = self._reactor.callLater(self.exitGrace, self._kill)

    def _kill(self) -> None:
        transport = self._processTransport
        if transport is None or transport.pid is None:
            return
        try:
            transport.signalProcess("KILL")
        except Exception:
            pass
        self._reapSoon(transport, 50)

    def _reapSoon(self, transport: Any, attempts: int) -> None:
        """
        Make sure an ended process is noticed even where the reactor does not
        handle C{SIGCHLD} (run with C{installSignalHandlers=False}): try to
        reap it every 0.2 seconds, C{attempts} times at most.
        """
        if attempts <= 0 or transport is not self._processTransport:
            return
        reap = getattr(transport, "reapProcess", None)
        if transport.pid is None or reap is None:
            return
        reap()
        if transport.pid is not None and transport is self._processTransport:
            if self._reapTimer is not None and self._reapTimer.active():
                self._reapTimer.cancel()
            self._reapTimer = self._reactor.callLater(
                0.2, self._reapSoon, transport, attempts - 1
            )

    def _processEnded(self, process: _ChildProcess, reason: Failure) -> None:
        if process is not self._process:
            return
        self._process = None
        self._processTransport = None
        for timer in (
            self._startTimer,
            self._killTimer,
            self._reapTimer,
            self._pingTimer,
        ):
            if timer is not None and timer.active():
                timer.cancel()
        self._startTimer = self._killTimer = self._reapTimer = None
        self._pingTimer = None
        broker, self.broker = self.broker, None
        if broker is not None and broker.transport is not None:
            broker.transport.loseConnection()
        self._removeScratch()
        status = reason.value
        code = getattr(status, "exitCode", None)
        signal = getattr(status, "signal", None)
        if self._stopping:
            # The same line as an in-process extension's, for operators.
            self.log.info(
                "extension {extensionId!r} stopped (its process exited)",
                extensionId=self.extensionId,
            )
            return
        if code == EXIT_NO_NAMESPACE:
            self.log.critical(
                "extension refused to run: the system cannot confine it "
                "(its reason is in the line above; --isolation "
                "process-unconfined runs it anyway)"
            )
            return
        if self._permanent is not None or code == EXIT_MAIN_FAILED:
            self.log.error(
                "extension stopped after a failure; not restarting "
                "(exit status {code})",
                code=code,
            )
            return
        how = f"signal {signal}" if signal else f"exit status {code}"
        if (
            self._helloAt is not None
            and self._reactor.seconds() - self._helloAt >= self.restart.stableAfter
        ):
            self._crashes = 0
        self._crashes += 1
        if self._crashes > self.restart.maxRestarts:
            self.log.critical(
                "extension process crashed ({how}); gave up after {count} restarts",
                how=how,
                count=self.restart.maxRestarts,
            )
            return
        delay = min(
            self.restart.initialDelay * 2 ** (self._crashes - 1), self.restart.maxDelay
        )
        self.log.error(
            "extension process crashed ({how}); restarting in {delay}s "
            "(restart {count} of {most})",
            how=how,
            delay=delay,
            count=self._crashes,
            most=self.restart.maxRestarts,
        )
        self._restartTimer = self._reactor.callLater(delay, self._spawn)

    def stopService(self) -> Deferred[None]:
        """
        Ask the process to close the extension's sockets and exit; kill it
        if it has not after C{stopTimeout} seconds.
        """
        super().stopService()
        self._stopping = True
        for timer in (self._restartTimer, self._pingTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._restartTimer = self._pingTimer = None
        process = self._process
        if process is None:
            return defer.succeed(None)
        self._killTimer = self._reactor.callLater(self.restart.stopTimeout, self._kill)
        if self.broker is not None and self.broker.transport is not None:
            self.broker.callRemote(Shutdown).addErrback(lambda f: None)
        else:
            self._kill()
        return process.ended
