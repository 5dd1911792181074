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
from typing import Any, Protocol

import attrs
from automat import TypeMachineBuilder, pep614
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcpext._broker import BrokerProtocol, SyncListenProtocol
from tcpext._childoutput import DEFAULT_LOG_RATE, ChildOutput
from tcpext._isolation import LAYERS, _childEnvironment
from tcpext._ledger import (
    GrantChange,
    GrantLedger,
    GrantNotSaved,
    NotGranted,
)
from tcpext._limits import RateLimitedLog, TokenBucket
from tcpext._policy import DecisionObserver, DenialLog, Policy
from tcpext._wire import (
    AMP_FD,
    EXIT_MAIN_FAILED,
    EXIT_NO_NAMESPACE,
    REQUEST_BURST,
    REQUEST_RATE,
    SYNC_FD,
    BadRequest,
    Grant,
    NotSaved,
    Ping,
    Revoke,
    Shutdown,
)
from tcpext.extension import _warnIgnored
from tcpext.permissions import Permission, parseManifestPermissions

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
    Watches one child process: logs its output (L{ChildOutput}) and reports
    its end to the L{_Supervisor} once its output has been read to the end.
    """

    def __init__(self, owner: _Supervisor, output: ChildOutput) -> None:
        self._owner = owner
        self.output = output
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
        Log its output.
        """
        self.output.received(childFD, data)

    def childConnectionLost(self, childFD: int) -> None:
        """
        Once the child's output is closed it is ending: make sure it is
        reaped.
        """
        self._closed.add(childFD)
        if {1, 2} <= self._closed and self.transport is not None:
            self._owner.reapSoon(self.transport, 50)

    def processEnded(self, reason: Failure) -> None:
        """
        The process has ended and its output is read to the end (Twisted
        calls this once both are true): log the rest of its output, then
        tell the owner how it ended.
        """
        self.output.close()
        self.ended.callback(None)
        self._owner.ended(self, reason)


class _Inputs(Protocol):
    """
    The events that drive the supervision of an isolated extension's
    process; L{_makeMachine} declares what each does in each state.
    """

    def start(self) -> None:
        """
        The service starts: spawn a process.
        """

    def stop(self, waiter: Deferred[None]) -> None:
        """
        The service stops: end the process; fire C{waiter} once it has
        ended.
        """

    def helloReceived(self) -> None:
        """
        The process said hello (confined as required): it runs.
        """

    def unconfined(self) -> None:
        """
        The process said hello unconfined where confinement is required.
        """

    def mainFailed(self, reason: str) -> None:
        """
        The process reported that the extension failed.
        """

    def startTimedOut(self) -> None:
        """
        The process did not say hello within C{startTimeout}.
        """

    def pingDue(self) -> None:
        """
        Time to ping the running process.
        """

    def pingAnswered(self) -> None:
        """
        The process answered a ping.
        """

    def pingTimedOut(self) -> None:
        """
        The process did not answer a ping within C{pingTimeout}.
        """

    def brokerLost(self) -> None:
        """
        The AMP connection with the process ended.
        """

    def processEnded(self, code: int | None, signal: int | None) -> None:
        """
        The process ended with exit status C{code} or by C{signal}.
        """

    def _restartLater(self, delay: float) -> None:
        """
        The ended process was a crash: spawn another after C{delay} seconds.
        """

    def _giveUp(self) -> None:
        """
        The ended process is not to be restarted.
        """

    def _respawn(self) -> None:
        """
        The restart delay is over.
        """


class _Supervisor:
    """
    The data of the supervision of one extension's processes (the state
    machine of L{_makeMachine} decides what happens to it), and the actions
    on the process: spawn, ping, kill, reap.

    @ivar broker: The L{BrokerProtocol} of the current process, if any.
    @ivar process: The L{_ChildProcess} watching the current process.
    @ivar starts: How many processes were started.
    @ivar crashes: Crashes in a row (reset by a process that ran
        C{stableAfter} seconds, and by a new start of the service).
    @ivar permanent: Why the current process must not be restarted when it
        ends, if it must not.
    @ivar status: What an operator sees of the machine's state: C{running},
        C{failed}, C{restarting} or C{stopped} (set by every transition that
        changes the state).
    """

    abandonGrace = 2.0
    """Seconds after a kill before the host stops waiting for the channel
    and the output of the killed process to close (see L{_abandon})."""

    def __init__(
        self,
        *,
        reactor: Any,
        log: Logger,
        extensionId: str,
        policy: RestartPolicy,
        launch: Callable[[_Supervisor], tuple[BrokerProtocol, _ChildProcess, Any]],
        exitGrace: Callable[[], float],
        cleanUp: Callable[[], None] = lambda: None,
    ) -> None:
        """
        @param launch: Spawns a process for this supervisor: returns its
            broker, its L{_ChildProcess} and its process transport.
        @param cleanUp: Called once a process has ended (to remove what it
            left behind).
        @param exitGrace: The seconds a process whose AMP connection ended
            gets to exit by itself (asked each time).
        """
        self.reactor = reactor
        self.log = log
        self.extensionId = extensionId
        self.policy = policy
        self._launch = launch
        self._exitGrace = exitGrace
        self._cleanUp = cleanUp
        self.inputs: _Inputs
        self.broker: BrokerProtocol | None = None
        self.process: _ChildProcess | None = None
        self.transport: Any = None
        self.starts = 0
        self.crashes = 0
        self.permanent: str | None = None
        self.helloAt: float | None = None
        self.stopWaiters: list[Deferred[None]] = []
        self.status = "stopped"
        self._startTimer: Any = None
        self._restartTimer: Any = None
        self._killTimer: Any = None
        self._reapTimer: Any = None
        self._pingTimer: Any = None
        self._abandonTimer: Any = None

    # Spawning.

    def spawn(self) -> None:
        """
        Start a process; it has C{startTimeout} seconds to say hello.
        """
        self._restartTimer = None
        self.helloAt = None
        self.permanent = None
        try:
            broker, process, transport = self._launch(self)
        except Exception:
            # Out of descriptors or processes, or no interpreter: the end
            # of a process that never ran, and not one to retry.
            self.log.failure("could not start the extension process")
            self.permanent = "could not start"
            self.inputs.processEnded(None, None)
            return
        self.broker, self.process, self.transport = broker, process, transport
        self.starts += 1
        broker.lost.addCallback(lambda _: self._lostFrom(broker))
        self._startTimer = self.reactor.callLater(
            self.policy.startTimeout, self.inputs.startTimedOut
        )

    def _lostFrom(self, broker: BrokerProtocol) -> None:
        if broker is self.broker:
            self.inputs.brokerLost()

    def ended(self, process: _ChildProcess, reason: Failure) -> None:
        """
        C{process} has ended (a process that is not the current one any
        more is ignored).
        """
        if process is not self.process:
            return
        status = reason.value
        self.inputs.processEnded(
            getattr(status, "exitCode", None), getattr(status, "signal", None)
        )

    def forget(self) -> None:
        """
        The current process has ended: cancel its timers, close its AMP
        connection.
        """
        self.process = None
        self.transport = None
        for timer in (
            self._startTimer,
            self._killTimer,
            self._reapTimer,
            self._pingTimer,
            self._abandonTimer,
        ):
            if timer is not None and timer.active():
                timer.cancel()
        self._startTimer = self._killTimer = self._reapTimer = None
        self._abandonTimer = None
        self._pingTimer = None
        broker, self.broker = self.broker, None
        if broker is not None and broker.transport is not None:
            broker.transport.loseConnection()
        self._cleanUp()

    # Timers.

    def cancelStart(self) -> None:
        """
        The process said hello (or is being stopped): no start timeout.
        """
        if self._startTimer is not None and self._startTimer.active():
            self._startTimer.cancel()
        self._startTimer = None

    def schedulePing(self) -> None:
        """
        Ping the process in C{pingInterval} seconds (if pings are wanted).
        """
        if self.policy.pingInterval is not None:
            self._pingTimer = self.reactor.callLater(
                self.policy.pingInterval, self.inputs.pingDue
            )

    def cancelPing(self) -> None:
        """
        No more pings for this process.
        """
        if self._pingTimer is not None and self._pingTimer.active():
            self._pingTimer.cancel()
        self._pingTimer = None

    def ping(self) -> None:
        """
        Ping the process; it has C{pingTimeout} seconds to answer.
        """
        self._pingTimer = None
        broker = self.broker
        if broker is None:
            return
        d = broker.callRemote(Ping)
        timeout = self.reactor.callLater(self.policy.pingTimeout, d.cancel)

        def answered(_: object) -> None:
            if timeout.active():
                timeout.cancel()
            if broker is self.broker:
                self.inputs.pingAnswered()

        def failed(reason: Failure) -> None:
            if timeout.active():
                timeout.cancel()
            if broker is self.broker:
                self.inputs.pingTimedOut()

        d.addCallbacks(answered, failed)

    def scheduleRestart(self, delay: float) -> None:
        """
        Spawn again in C{delay} seconds.
        """
        self._restartTimer = self.reactor.callLater(delay, self.inputs._respawn)

    def cancelRestart(self) -> None:
        """
        No restart after all.
        """
        if self._restartTimer is not None and self._restartTimer.active():
            self._restartTimer.cancel()
        self._restartTimer = None

    def killLater(self, delay: float) -> None:
        """
        Kill the process in C{delay} seconds unless it ends first (an
        earlier kill deadline stays).
        """
        if self._killTimer is None or not self._killTimer.active():
            self._killTimer = self.reactor.callLater(delay, self.kill)

    def exitGrace(self) -> float:
        """
        The seconds a process whose AMP connection ended gets to exit.
        """
        return self._exitGrace()

    # Ending the process.

    def askToStop(self) -> None:
        """
        Ask the process to close the extension's sockets and exit; kill it
        after C{stopTimeout} seconds.
        """
        self.killLater(self.policy.stopTimeout)
        if self.broker is not None and self.broker.transport is not None:
            self.broker.callRemote(Shutdown).addErrback(lambda f: None)
        else:
            self.kill()

    def kill(self) -> None:
        """
        Kill the process now.
        """
        transport = self.transport
        if transport is None:
            return
        try:
            # A process that has ended says so (ProcessExitedAlready); one
            # forked from the template that does not exist yet is killed
            # as soon as it does.
            transport.signalProcess("KILL")
        except Exception:
            pass
        self.reapSoon(transport, 50)
        if self._abandonTimer is None or not self._abandonTimer.active():
            self._abandonTimer = self.reactor.callLater(
                self.abandonGrace, self._abandon, transport
            )

    def _abandon(self, transport: Any) -> None:
        """
        The process was killed C{abandonGrace} seconds ago and its end has
        still not been seen: its channel or its output is held open by
        another process, one the extension started (a process it forked
        shares its descriptors and outlives it).  Close the channel (the
        host shuts down every socket it handed over, so that process cannot
        keep serving on them) and stop reading the output, so that the end
        is seen and a stop does not wait for that other process.
        """
        if transport is not self.transport:
            return
        self.log.warn(
            "extension process {pid} was killed, but a process it started "
            "still holds its channel or output open: closing them",
            pid=getattr(self.process, "pid", None),
        )
        broker = self.broker
        channel: Any = broker.transport if broker is not None else None
        if channel is not None:
            channel.abortConnection()
        transport.loseConnection()
        self.reapSoon(transport, 50)

    def reapSoon(self, transport: Any, attempts: int) -> None:
        """
        Make sure an ended process is noticed even where the reactor does not
        handle C{SIGCHLD} (run with C{installSignalHandlers=False}): try to
        reap it every 0.2 seconds, C{attempts} times at most.
        """
        if attempts <= 0 or transport is not self.transport:
            return
        reap = getattr(transport, "reapProcess", None)
        if transport.pid is None or reap is None:
            return
        reap()
        if transport.pid is not None and transport is self.transport:
            if self._reapTimer is not None and self._reapTimer.active():
                self._reapTimer.cancel()
            self._reapTimer = self.reactor.callLater(
                0.2, self.reapSoon, transport, attempts - 1
            )

    def finishStopping(self) -> None:
        """
        Fire everyone waiting for the stop.
        """
        self.stopWaiters, waiting = [], self.stopWaiters
        for d in waiting:
            d.callback(None)

    def starting(self) -> None:
        """
        The status while a process starts: the first one runs, a later one
        restarts.
        """
        self.status = "restarting" if self.crashes else "running"

    # Judging an ended process.

    def judge(self, code: int | None, signal: int | None) -> float | None:
        """
        Log how the process ended; the delay before the next start, or
        L{None} if it is not to be restarted.
        """
        if code == EXIT_NO_NAMESPACE:
            self.log.critical(
                "extension refused to run: the system cannot confine it "
                "(its reason is in the line above; --isolation "
                "process-unconfined runs it anyway)"
            )
            return None
        if self.permanent is not None or code == EXIT_MAIN_FAILED:
            self.log.error(
                "extension stopped after a failure; not restarting "
                "(exit status {code})",
                code=code,
            )
            return None
        how = f"signal {signal}" if signal else f"exit status {code}"
        policy = self.policy
        if (
            self.helloAt is not None
            and self.reactor.seconds() - self.helloAt >= policy.stableAfter
        ):
            self.crashes = 0
        self.crashes += 1
        if self.crashes > policy.maxRestarts:
            self.log.critical(
                "extension process crashed ({how}); gave up after {count} restarts",
                how=how,
                count=policy.maxRestarts,
            )
            return None
        delay = min(policy.initialDelay * 2 ** (self.crashes - 1), policy.maxDelay)
        self.log.error(
            "extension process crashed ({how}); restarting in {delay}s "
            "(restart {count} of {most})",
            how=how,
            delay=delay,
            count=self.crashes,
            most=policy.maxRestarts,
        )
        return delay


def _makeMachine() -> Callable[[_Supervisor], _Inputs]:
    """
    The supervision of one extension's process as a state machine: every
    state, every event, and what an event does in each state, in one place.

    States: C{stopped} (the initial state; no process), C{starting} (spawned,
    no hello yet), C{running} (said hello; pinged), C{ended} (a process just
    ended while not stopping: judged at once, leaving for C{waiting} or
    C{failed}), C{waiting} (the backoff delay before the next start),
    C{failed} (ended and not to be restarted: the script failed, the kernel
    refused confinement, or too many crashes in a row) and C{stopping}
    (asked to exit, then killed after C{stopTimeout}).  An event a state
    does not list is a bug (automat raises).  Every event returns L{None}, so
    an event that arrives while another is handled (a callback run by an
    action) waits for it to finish.  Each transition to another state sets
    the status an operator sees (L{_Supervisor.status}).
    """
    machine = TypeMachineBuilder(_Inputs, _Supervisor)
    stopped = machine.state("stopped")
    starting = machine.state("starting")
    running = machine.state("running")
    ended = machine.state("ended")
    waiting = machine.state("waiting")
    failed = machine.state("failed")
    stopping = machine.state("stopping")

    # Starting and stopping the service.

    @pep614(stopped.upon(_Inputs.start).to(starting))
    @pep614(failed.upon(_Inputs.start).to(starting))
    def spawnFirst(c: _Inputs, s: _Supervisor) -> None:
        s.crashes = 0
        s.starting()
        s.spawn()

    for state in (starting, running, waiting, ended):
        state.upon(_Inputs.start).loop().returns(None)

    @pep614(stopping.upon(_Inputs.start).loop())
    def startWhileStopping(c: _Inputs, s: _Supervisor) -> None:
        s.log.warn("extension process still stopping; not started again")

    @pep614(stopped.upon(_Inputs.stop).loop())
    def alreadyStopped(c: _Inputs, s: _Supervisor, waiter: Deferred[None]) -> None:
        waiter.callback(None)

    @pep614(failed.upon(_Inputs.stop).to(stopped))
    @pep614(waiting.upon(_Inputs.stop).to(stopped))
    @pep614(ended.upon(_Inputs.stop).to(stopped))
    def stopWithoutProcess(c: _Inputs, s: _Supervisor, waiter: Deferred[None]) -> None:
        s.cancelRestart()
        s.status = "stopped"
        waiter.callback(None)

    @pep614(starting.upon(_Inputs.stop).to(stopping))
    @pep614(running.upon(_Inputs.stop).to(stopping))
    def stopProcess(c: _Inputs, s: _Supervisor, waiter: Deferred[None]) -> None:
        s.status = "stopped"
        s.stopWaiters.append(waiter)
        s.cancelStart()
        s.cancelPing()
        s.askToStop()

    @pep614(stopping.upon(_Inputs.stop).loop())
    def stopAgain(c: _Inputs, s: _Supervisor, waiter: Deferred[None]) -> None:
        s.stopWaiters.append(waiter)

    # The process's life.

    @pep614(starting.upon(_Inputs.helloReceived).to(running))
    def started(c: _Inputs, s: _Supervisor) -> None:
        s.status = "running"
        s.cancelStart()
        s.helloAt = s.reactor.seconds()
        s.schedulePing()

    running.upon(_Inputs.helloReceived).loop().returns(None)
    stopping.upon(_Inputs.helloReceived).loop().returns(None)

    @pep614(starting.upon(_Inputs.unconfined).loop())
    @pep614(running.upon(_Inputs.unconfined).loop())
    @pep614(stopping.upon(_Inputs.unconfined).loop())
    def refuseUnconfined(c: _Inputs, s: _Supervisor) -> None:
        s.cancelStart()
        s.permanent = "not confined"
        s.kill()

    @pep614(starting.upon(_Inputs.mainFailed).loop())
    @pep614(running.upon(_Inputs.mainFailed).loop())
    @pep614(stopping.upon(_Inputs.mainFailed).loop())
    def scriptFailed(c: _Inputs, s: _Supervisor, reason: str) -> None:
        # The child has logged the failure itself, as an extension in the
        # host's process would have.
        s.permanent = reason

    for state in (waiting, failed, stopped):
        # From a process that has ended already.
        state.upon(_Inputs.mainFailed).loop().returns(None)

    @pep614(starting.upon(_Inputs.startTimedOut).loop())
    def hungAtStart(c: _Inputs, s: _Supervisor) -> None:
        s.log.error(
            "extension process did not start within {seconds}s; killing it",
            seconds=s.policy.startTimeout,
        )
        s.kill()

    @pep614(running.upon(_Inputs.pingDue).loop())
    def sendPing(c: _Inputs, s: _Supervisor) -> None:
        s.ping()

    @pep614(running.upon(_Inputs.pingAnswered).loop())
    def pingAgainLater(c: _Inputs, s: _Supervisor) -> None:
        s.schedulePing()

    @pep614(running.upon(_Inputs.pingTimedOut).loop())
    def blocked(c: _Inputs, s: _Supervisor) -> None:
        s.log.error(
            "extension process did not answer a ping within {seconds}s; killing it",
            seconds=s.policy.pingTimeout,
        )
        s.kill()

    for event in (_Inputs.pingDue, _Inputs.pingAnswered, _Inputs.pingTimedOut):
        stopping.upon(event).loop().returns(None)

    @pep614(starting.upon(_Inputs.brokerLost).loop())
    @pep614(running.upon(_Inputs.brokerLost).loop())
    @pep614(stopping.upon(_Inputs.brokerLost).loop())
    def exitSoon(c: _Inputs, s: _Supervisor) -> None:
        # The process must not outlive its AMP connection; it gets a moment
        # to exit by itself (so that its exit status is seen).
        s.killLater(s.exitGrace())

    # The process's end.

    @pep614(starting.upon(_Inputs.processEnded).to(ended))
    @pep614(running.upon(_Inputs.processEnded).to(ended))
    def crashed(
        c: _Inputs, s: _Supervisor, code: int | None, signal: int | None
    ) -> None:
        s.status = "restarting"
        s.forget()
        delay = s.judge(code, signal)
        if delay is None:
            c._giveUp()
        else:
            c._restartLater(delay)

    @pep614(ended.upon(_Inputs._giveUp).to(failed))
    def gaveUp(c: _Inputs, s: _Supervisor) -> None:
        s.status = "failed"

    @pep614(ended.upon(_Inputs._restartLater).to(waiting))
    def backOff(c: _Inputs, s: _Supervisor, delay: float) -> None:
        s.scheduleRestart(delay)

    # A stop that arrived while the end was judged (from a callback the
    # judgement's log ran) has won.
    stopped.upon(_Inputs._giveUp).loop().returns(None)
    stopped.upon(_Inputs._restartLater).loop().returns(None)

    @pep614(waiting.upon(_Inputs._respawn).to(starting))
    def restart(c: _Inputs, s: _Supervisor) -> None:
        s.starting()
        s.spawn()

    @pep614(stopping.upon(_Inputs.processEnded).to(stopped))
    def stoppedNow(
        c: _Inputs, s: _Supervisor, code: int | None, signal: int | None
    ) -> None:
        pid = s.process.pid if s.process is not None else None
        s.forget()
        # (The child has logged "extension ... stopped", as an extension in
        # the host's process does, if it could.)
        s.log.info(
            "extension process {pid} ended ({how})",
            pid=pid,
            how=f"signal {signal}" if signal else f"exit status {code}",
        )
        s.finishStopping()

    return machine.build()


_Machine = _makeMachine()


def _refuse(extensionId: str, permissions: list[str]) -> bool:
    """
    The default prompt policy: refuse.
    """
    return False


class IsolatedExtension(Service):
    """
    Runs one extension in its own process and network namespace and brokers
    its sockets; restarts it (bounded, with backoff) when it crashes.

    Its process's life is the state machine of L{_makeMachine}; L{state}
    shows it.

    @ivar ledger: The extension's L{GrantLedger}, the authority on its
        grants: every change made through it (a runtime request, the
        operator's grant or revoke, the extension's remove) reaches the
        running child at once (L{Grant}, L{Revoke}), and after a revoke the
        host shuts down its copies of the sockets no remaining grant allows.
    @ivar grants: The ledger's live L{tcpext.permissions.PermissionSet}.
    @ivar policy: The L{Policy} the broker decides with (its observers are
        told of every decision; refusals are logged, rate-limited, on
        C{denials}).
    @ivar log: The extension's logger (C{tcpext.extension.<id>}).
    @ivar denials: Its refusals' log, rate-limited (L{RateLimitedLog}).
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
        spawnProcess: Callable[..., Any] | None = None,
        ledger: GrantLedger | None = None,
        decisionObservers: Iterable[DecisionObserver] = (),
        childRefusals: Callable[[str, str, str, str], None] | None = None,
        logRate: int = DEFAULT_LOG_RATE,
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
        @param spawnProcess: How the child is started, with the signature of
            C{IReactorProcess.spawnProcess}: the reactor's by default (a
            fresh interpreter), or L{tcpext._zygote.Zygote.spawnProcess}
            (forked from the preloaded template).
        @param ledger: The extension's L{GrantLedger}, when the host keeps
            it; by default one built from C{manifest}, C{grantStore} and
            C{operatorGrants}.
        @param decisionObservers: Told of every decision of the broker,
            beside the denial log (see L{tcpext._policy.DecisionObserver}).
        @param childRefusals: Told C{(extensionId, verb, target, reason)}
            of each request the extension's own process refused before
            asking the host (its reports, within its request rate); the
            child logs those refusals itself.
        @param logRate: The most lines of the child's output logged a second
            (L{ChildOutput}).

        @raise ValueError: for an unknown mode, a log rate below 1, an invalid C{tcp-*} entry, or
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
        self._prompt = prompt if prompt is not None else _refuse
        self.log = log or Logger(namespace=f"tcpext.extension.{extensionId}")
        self.mode = mode
        self.restart = restart
        if not isinstance(logRate, int) or isinstance(logRate, bool) or logRate < 1:
            raise ValueError(f"the log rate must be an int >= 1, not {logRate!r}")
        self.logRate = logRate
        self._python = python or sys.executable
        self.limits = dict(limits or {})
        for name, value in self.limits.items():
            if not name.startswith("RLIMIT_") or not hasattr(resource, name):
                raise ValueError(f"unknown resource limit {name!r}")
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"resource limit {name}: {value!r} is not an int")
        _, ignored = parseManifestPermissions(list(manifest.get("permissions", [])))
        _, ignoredOptional = parseManifestPermissions(
            list(manifest.get("optional_permissions", []))
        )
        self._ignored = [*ignored, *ignoredOptional]
        self.ledger = ledger = GrantLedger.keptOrBuilt(
            ledger,
            extensionId=extensionId,
            manifest=manifest,
            store=grantStore,
            operatorGrants=operatorGrants,
            log=self.log,
        )
        self._childRefusals = childRefusals
        self.grants = ledger.grants
        self._pushes: list[Deferred[None]] = []
        ledger.addObserver(self._grantsChanged)

        self._stopping = False
        self._scratch: str | None = None
        # The child's request rate and its logged denials outlive each of
        # its processes: a restart does not start them afresh.
        self._requests = TokenBucket(REQUEST_RATE, REQUEST_BURST, reactor.seconds)
        self.denials = RateLimitedLog(self.log, reactor, extensionId)
        self.policy = Policy(
            ledger.grants,
            extensionId=extensionId,
            observers=[
                DenialLog(self.denials, "broker refused {request}: {reason}"),
                *decisionObservers,
            ],
        )
        self._supervisor = _Supervisor(
            reactor=reactor,
            log=self.log,
            extensionId=extensionId,
            policy=restart,
            launch=self._launch,
            exitGrace=lambda: self.exitGrace,
            cleanUp=self._removeScratch,
        )
        self._machine = _Machine(self._supervisor)
        self._supervisor.inputs = self._machine
        self._spawnProcess = spawnProcess

    # Grants.

    def _grantsChanged(self, change: GrantChange) -> None:
        """
        The ledger changed: tell the running child at once; after a revoke,
        shut down the host's copies of what no remaining grant allows.
        """
        broker = self.broker
        if broker is None or broker.transport is None:
            return
        if change.granted:
            broker.callRemote(
                Grant, permissions=[str(p) for p in change.granted]
            ).addErrback(lambda f: None)
        if change.revoked:
            self._pushes.append(self._pushRevoke(broker, change.revoked))

    def _pushRevoke(
        self, broker: BrokerProtocol, revoked: Iterable[Permission]
    ) -> Deferred[None]:
        """
        Tell the child of a revoke.  The child closes what the grants no
        longer allow (its sockets then fail with PermissionDenied); whatever
        it does, the host then shuts down its own copies of those sockets,
        which ends them for the child too.  A child that does not answer
        within C{revokeGrace} seconds gets the same.
        """
        d = broker.callRemote(Revoke, permissions=[str(p) for p in revoked])
        d.addErrback(lambda f: None)
        timer = self._reactor.callLater(self.revokeGrace, d.cancel)

        def enforce(_: object) -> None:
            if timer.active():
                timer.cancel()
            broker.enforce()

        return d.addBoth(enforce)

    def _enforced(self) -> Deferred[None]:
        """
        A L{Deferred} that fires once the revokes pushed so far are
        enforced.
        """
        pushes, self._pushes = self._pushes, []
        return defer.gatherResults(pushes).addCallback(lambda _: None)

    def requestPermissions(self, entries: list[str]) -> Deferred[bool]:
        """
        The child's C{permissions.request}: only optional entries; the host's
        prompt decides, and the ledger saves then grants (the child hears of
        the grant before the answer).

        @raise BadRequest: For an entry that is not an optional permission.
        """
        try:
            missing = [str(p) for p in self.ledger.missing(entries)]
        except (TypeError, ValueError) as e:
            raise BadRequest(str(e))
        if not missing:
            return defer.succeed(True)

        def answered(answer: object) -> bool:
            if answer is not True or self._stopping:
                self.policy.report(self.policy.requested(missing, False))
                return False
            try:
                self.ledger.request(missing)
            except GrantNotSaved as e:
                raise NotSaved(str(e))
            self.policy.report(self.policy.requested(missing, True))
            return True

        def failed(reason: Failure) -> bool:
            self.log.failure("the prompt failed; refusing", reason)
            return False

        return (
            defer.maybeDeferred(self._prompt, self.extensionId, list(missing))
            .addErrback(failed)
            .addCallback(answered)
        )

    def childRefused(self, verb: str, target: str, reason: str) -> None:
        """
        The extension's process refused a request itself.
        """
        if self._childRefusals is not None:
            self._childRefusals(self.extensionId, verb, target, reason)

    def removePermissions(self, entries: list[str]) -> bool:
        """
        The child's C{permissions.remove}: the ledger takes them away (for
        this run, and from the store).

        @raise BadRequest: For an entry that is not an optional permission.
        """
        try:
            return self.ledger.remove(entries)
        except (TypeError, ValueError) as e:
            raise BadRequest(str(e))

    def grant(self, permission: Permission | str) -> bool:
        """
        Grant one optional permission now, stored as a runtime grant (the
        operator's): the running child hears of it at once.

        @return: C{True} if it was not granted before.
        @raise ValueError: It is not an optional permission.
        @raise GrantNotSaved: The store could not save it (nothing granted).
        """
        return self.ledger.grant(permission)

    def revoke(self, entries: Iterable[Permission | str]) -> Deferred[None]:
        """
        Withdraw optional grants (operator ones for this run, stored ones for
        good): the host stops allowing them at once and tells the child,
        which closes the sockets no remaining grant allows; the host then
        shuts down its own copies of those sockets.

        @return: A L{Deferred} that fires once that is done.
        @raise CannotRevoke: For one of the manifest's permissions.
        """
        for entry in entries:
            try:
                self.ledger.revoke(entry)
            except NotGranted:
                continue
        return self._enforced()

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
                self.log.critical(
                    "extension process {pid} is not confined (missing {reason}); "
                    "stopping it",
                    pid=pid,
                    reason=reason,
                )
                self._machine.unconfined()
                raise BadRequest("confinement is required")
            self.log.warn(
                "extension process {pid} runs unconfined: missing {reason}",
                pid=pid,
                reason=reason,
            )
        self._machine.helloReceived()
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
            "runtimeGrants": self.ledger.grantsBySource()["stored"],
            "operatorGrants": self.ledger.grantsBySource()["operator"],
        }

    def mainFailed(self, reason: str) -> None:
        """
        The script failed: report it; do not restart.
        """
        self._machine.mainFailed(reason)

    # Processes.

    @property
    def state(self) -> str:
        """
        C{running} (or starting), C{restarting} (waiting to start again after
        a crash, or starting again), C{failed} (ended and not restarted) or
        C{stopped}.
        """
        return self._supervisor.status

    @property
    def broker(self) -> BrokerProtocol | None:
        """
        The L{BrokerProtocol} of the current process, if any.
        """
        return self._supervisor.broker

    @property
    def starts(self) -> int:
        """
        How many processes were started.
        """
        return self._supervisor.starts

    def startService(self) -> None:
        """
        Start the extension's process.
        """
        super().startService()
        _warnIgnored(self.log, self.extensionId, self._ignored)
        self._stopping = False
        self._machine.start()

    def stopService(self) -> Deferred[None]:
        """
        Ask the process to close the extension's sockets and exit; kill it
        if it has not after C{stopTimeout} seconds.

        @return: a L{Deferred} that fires once the process has ended.
        """
        super().stopService()
        self._stopping = True
        stopped: Deferred[None] = Deferred()
        self._machine.stop(stopped)
        return stopped.addCallback(lambda _: self.denials.flush())

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

    def _launch(
        self, supervisor: _Supervisor
    ) -> tuple[BrokerProtocol, _ChildProcess, Any]:
        """
        Spawn C{python -m tcpext.sandbox} with the two ends of the wire.
        """
        ampHost, ampChild = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        syncHost, syncChild = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        broker = BrokerProtocol(
            self._reactor,
            self.grants,
            self.log,
            owner=self,
            requests=self._requests,
            denials=self.denials,
            policy=self.policy,
        )
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
            process = _ChildProcess(
                supervisor,
                ChildOutput(self._reactor, self.log, self.extensionId, self.logRate),
            )
            spawn = self._spawnProcess or self._reactor.spawnProcess
            transport = spawn(
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
        return broker, process, transport
