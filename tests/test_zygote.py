"""
Tests for L{tcpext._zygote}: the preloaded template that isolated extension
processes are forked from, with real template and child processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from typing import Any

from twisted.internet import defer, error, reactor, task
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.testing import MemoryReactor
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpext import _zygote
from tcpext._isolation import _childEnvironment
from tcpext._zygote import ForkedProcess, Zygote, _endOf, _spawn
from tcpext.permissions import PermissionSet
from tcpext.reactor import PermissionCheckingReactor
from tcpext.sandbox import PHASES_VARIABLE, BrokeredReactor
from tests import test_isolation
from tests.test_examples import Twistd, assertEchoes, copyExamples
from tests.test_isolation import _NO_CONFINEMENT, _freePort


class _Recorder(ProcessProtocol):
    """
    Records a process's output and end.
    """

    def __init__(self) -> None:
        self.output: dict[int, bytes] = {1: b"", 2: b""}
        self.lost: list[int] = []
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output[childFD] = self.output.get(childFD, b"") + data

    def childConnectionLost(self, childFD: int) -> None:
        self.lost.append(childFD)

    def processEnded(self, reason: Failure) -> None:  # type: ignore[override]
        self.ended.callback(reason.value)

    def makeConnection(self, transport: Any) -> None:
        self.madeWith = transport.pid
        super().makeConnection(transport)


class EndOfTests(SynchronousTestCase):
    """
    L{_endOf}: a C{waitpid} status as Twisted reports a process's end.
    """

    def test_statuses(self) -> None:
        """
        Exit status 0 is L{error.ProcessDone}; another status or a signal is
        L{error.ProcessTerminated} with it; an unknown status (the template
        ended, taking the process with it) is C{SIGKILL}.
        """
        done = _endOf(0)
        self.assertIsInstance(done.value, error.ProcessDone)
        four = _endOf(4 << 8).value
        self.assertIsInstance(four, error.ProcessTerminated)
        self.assertEqual((four.exitCode, four.signal), (4, None))
        killed = _endOf(signal.SIGTERM).value
        self.assertEqual((killed.exitCode, killed.signal), (None, signal.SIGTERM))
        lost = _endOf(None).value
        self.assertEqual((lost.exitCode, lost.signal), (None, signal.SIGKILL))


class PendingProcessTests(SynchronousTestCase):
    """
    L{ForkedProcess} before the template has answered, and the template's
    refusals, without a template.
    """

    def test_pendingThenForked(self) -> None:
        """
        Until the template says it forked the process, the protocol is not
        connected, C{pid} is L{None} and a signal waits; once it has, the
        protocol is connected with the pid, and the signal is sent (here to
        a pidfd of this very test process, so a harmless signal 0).
        """
        recorder = _Recorder()
        r, w = os.pipe()
        self.addCleanup(os.close, w)
        process = ForkedProcess(MemoryReactor(), recorder, {1: r})
        started = process.whenStarted()
        self.assertIsNone(process.pid)
        self.assertIsNone(recorder.transport)
        process.signalProcess(0)
        self.assertNoResult(started)
        pidfd = os.pidfd_open(os.getpid())
        process.forked(os.getpid(), pidfd)
        self.assertEqual(self.successResultOf(started), os.getpid())
        self.assertEqual(recorder.madeWith, os.getpid())
        self.assertEqual(self.successResultOf(process.whenStarted()), os.getpid())
        process.exited(0)
        process._ended()
        process.childConnectionLost(1, Failure(error.ConnectionDone()))
        self.assertIsInstance(self.successResultOf(recorder.ended), error.ProcessDone)
        self.assertIsNone(process.pid)
        self.assertEqual(self.successResultOf(process.whenStarted()), os.getpid())

    def test_notStarted(self) -> None:
        """
        A process the template will never fork (it refused, or ended
        first) connects its protocol and ends at once, with the status
        given, its output pipes closed; signals sent meanwhile are dropped
        and later ones say it has exited.
        """
        recorder = _Recorder()
        r, w = os.pipe()
        self.addCleanup(os.close, w)
        process = ForkedProcess(MemoryReactor(), recorder, {1: r})
        started = process.whenStarted()
        process.signalProcess("KILL")
        process.notStarted(1 << 8)
        self.assertIsNone(self.successResultOf(started))
        reason = self.successResultOf(recorder.ended)
        self.assertIsInstance(reason, error.ProcessTerminated)
        self.assertEqual(reason.exitCode, 1)
        self.assertIsNone(recorder.madeWith)
        with self.assertRaises(OSError):
            os.fstat(r)
        self.assertRaises(error.ProcessExitedAlready, process.signalProcess, "KILL")
        self.assertIsNone(self.successResultOf(process.whenStarted()))

    def test_refusedRequests(self) -> None:
        """
        The template refuses, naming why, a request that is not a spawn
        request with four descriptors, args, env and cwd; the answer
        carries the request's id.
        """
        answer, fds = _spawn({"op": "bogus", "id": 7}, [])
        self.assertEqual((answer["op"], answer["id"], fds), ("refused", 7, []))
        self.assertIn("not a spawn request", answer["message"])
        answer, fds = _spawn({"op": "spawn", "id": 8, "args": []}, [0, 1, 2, 3])
        self.assertEqual((answer["op"], answer["id"], fds), ("refused", 8, []))
        self.assertIn("needs args, env and cwd", answer["message"])


class DeclarationTests(SynchronousTestCase):
    """
    The interface declarations the template works out before it forks.
    """

    def test_reactorsShareDeclarations(self) -> None:
        """
        The brokered reactor a child builds over the default reactor, and
        the permission-checking reactor over that, get the declarations the
        template made (the same objects), so a child does not work them out
        again.
        """
        declared = _zygote._declareReactors()
        real = object.__new__(EPollReactor)
        brokered = BrokeredReactor(real, None, None)  # type: ignore[arg-type]
        checking = PermissionCheckingReactor(brokered, PermissionSet())
        self.assertIs(brokered.__provides__, declared[0].__provides__)
        self.assertIs(checking.__provides__, declared[1].__provides__)

    def test_classesDeclared(self) -> None:
        """
        After L{_zygote._declareInterfaces}, every class of the preloaded
        packages has its declaration worked out (it is in the class's own
        namespace).
        """
        _zygote._declareInterfaces()
        from twisted.internet import unix

        from tcpext import sandbox

        for cls in (unix.Server, sandbox.HostConnection, sandbox.BrokeredReactor):
            self.assertIn("__implemented__", vars(cls))


class ZygoteTests(TestCase):
    """
    A real template: forking, exit statuses, signals, fallback and restart.
    """

    timeout = 120

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.zygote = Zygote(
            reactor,
            log=Logger(namespace="tcpext.template", observer=self.events.append),
        )

    def logged(self, text: str) -> bool:
        return any(text in formatEvent(e) for e in self.events)

    def start(self) -> None:
        """
        Start the template; stop it after the test.
        """
        self.assertTrue(self.zygote.start())
        self.addCleanup(self.zygote.stop)

    def spawn(self, *args: str, python: str | None = None) -> tuple[Any, _Recorder]:
        """
        Spawn C{python -m tcpext.sandbox ARGS} through the zygote, with two
        fresh channels (their host ends are closed after the test).
        """
        transport, recorder, ampHost = self.spawnOpen(*args, python=python)
        return transport, recorder

    def spawnOpen(
        self, *args: str, python: str | None = None
    ) -> tuple[Any, _Recorder, socket.socket]:
        """
        Spawn C{python -m tcpext.sandbox ARGS} through the zygote and keep
        the host's end of its AMP channel open (the process waits for the
        host's answer to its hello); return that end too.
        """
        python = python or sys.executable
        recorder = _Recorder()
        ampHost, ampChild = socket.socketpair()
        syncHost, syncChild = socket.socketpair()
        try:
            transport = self.zygote.spawnProcess(
                recorder,
                python,
                [python, "-m", "tcpext.sandbox", *args],
                env=_childEnvironment(),
                path=os.getcwd(),
                childFDs={
                    0: "w",
                    1: "r",
                    2: "r",
                    3: ampChild.fileno(),
                    4: syncChild.fileno(),
                },
            )
        finally:
            for s in (ampChild, syncChild):
                s.close()
        self.addCleanup(ampHost.close)
        self.addCleanup(syncHost.close)
        return transport, recorder, ampHost

    async def test_forkAndEnd(self) -> None:
        """
        A sandbox process is forked from the template (a L{ForkedProcess},
        whose parent is the template), its output arrives, and its end is
        reported with its exit status once its output is closed.
        """
        self.start()
        transport, recorder, ampHost = self.spawnOpen()
        self.assertIsInstance(transport, ForkedProcess)
        pid = await transport.whenStarted()
        self.assertEqual(transport.pid, pid)
        with open(f"/proc/{pid}/status") as f:
            ppid = [line for line in f if line.startswith("PPid:")]
        self.assertEqual(ppid, [f"PPid:\t{self.zygote.pid}\n"])
        ampHost.close()
        await recorder.ended
        self.assertIsNone(transport.pid)
        self.assertRaises(error.ProcessExitedAlready, transport.signalProcess, "KILL")
        transport, recorder = self.spawn("--rlimit=RLIMIT_BOGUS=1")
        self.assertIsInstance(transport, ForkedProcess)
        reason = await recorder.ended
        self.assertIsInstance(reason, error.ProcessTerminated)
        self.assertEqual(reason.exitCode, 4)
        self.assertIn(b"unknown resource limit", recorder.output[2])
        self.assertEqual(sorted(recorder.lost), [1, 2])
        self.assertEqual(self.zygote.forked, 2)

    async def test_signal(self) -> None:
        """
        C{signalProcess} reaches the forked process (through its pidfd).
        """
        self.start()
        transport, recorder = self.spawn("--rlimit=RLIMIT_NOFILE=64")
        transport.signalProcess("KILL")
        reason = await recorder.ended
        self.assertEqual(reason.signal, signal.SIGKILL)

    async def test_fallback(self) -> None:
        """
        While the template is not ready, or for a process that is not a
        sandbox of this interpreter, the reactor starts it afresh and the
        log says why.
        """
        transport, recorder = self.spawn("--rlimit=RLIMIT_BOGUS=1")
        self.assertNotIsInstance(transport, ForkedProcess)
        self.assertTrue(self.logged("the template has not started"))
        reason = await recorder.ended
        self.assertEqual(reason.exitCode, 4)
        self.start()
        other = os.path.abspath(self.mktemp())
        with open(other, "w") as f:
            f.write("#!/bin/sh\nexit 3\n")
        os.chmod(other, 0o755)
        transport, recorder = self.spawn(python=other)
        self.assertNotIsInstance(transport, ForkedProcess)
        self.assertTrue(self.logged("not an extension process of this interpreter"))
        reason = await recorder.ended
        self.assertEqual(reason.exitCode, 3)
        self.assertEqual(self.zygote.forked, 0)

    async def test_templateDies(self) -> None:
        """
        When the template dies, the processes forked from it end too
        (reported as killed), starts fall back to fresh processes (said in
        the log), and the template is restarted with backoff.
        """
        self.zygote.initialDelay = 0.1
        self.start()
        transport, recorder = self.spawn()
        first = self.zygote.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        reason = await recorder.ended
        self.assertEqual(reason.signal, signal.SIGKILL)
        for _ in range(600):
            if not self.zygote.ready and self.logged("template process ended"):
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(self.zygote.ready)
        self.assertTrue(self.logged("template process ended"))
        fresh, recorder = self.spawn("--rlimit=RLIMIT_BOGUS=1")
        self.assertNotIsInstance(fresh, ForkedProcess)
        self.assertTrue(self.logged("afresh: the template process ended"))
        await recorder.ended
        for _ in range(600):
            if self.zygote.ready:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertTrue(self.zygote.ready)
        self.assertNotEqual(self.zygote.pid, first)
        forked, recorder = self.spawn("--rlimit=RLIMIT_BOGUS=1")
        self.assertIsInstance(forked, ForkedProcess)
        await recorder.ended

    async def test_pipelined(self) -> None:
        """
        Several starts in a row are all sent before any answer (each
        L{ForkedProcess} is returned pending), then forked: each gets its
        own pid, and each ends with its own status.
        """
        self.start()
        spawned = [self.spawn("--rlimit=RLIMIT_BOGUS=1") for _ in range(5)]
        self.assertTrue(all(t.pid is None for t, _ in spawned))
        pids = [await transport.whenStarted() for transport, _ in spawned]
        self.assertEqual(len(set(pids)), 5)
        self.assertNotIn(None, pids)
        for _, recorder in spawned:
            reason = await recorder.ended
            self.assertEqual(reason.exitCode, 4)
        self.assertEqual(self.zygote.forked, 5)

    async def test_signalBeforeForked(self) -> None:
        """
        A signal sent while the process is still pending reaches it once
        it is forked.
        """
        self.start()
        transport, recorder, ampHost = self.spawnOpen()
        self.assertIsNone(transport.pid)
        transport.signalProcess("KILL")
        reason = await recorder.ended
        self.assertEqual(reason.signal, signal.SIGKILL)

    async def test_noAnswer(self) -> None:
        """
        A template that does not answer within C{requestTimeout} is
        killed: the process it was asked for ends as killed, the log says
        why, and a new template is started.
        """
        self.zygote.requestTimeout = 1.0
        self.zygote.initialDelay = 0.1
        self.start()
        first = self.zygote.pid
        assert first is not None
        os.kill(first, signal.SIGSTOP)
        transport, recorder = self.spawn()
        reason = await recorder.ended
        self.assertEqual(reason.signal, signal.SIGKILL)
        self.assertTrue(self.logged("did not answer within 1.0s"))
        self.assertTrue(self.logged("were not forked"))
        for _ in range(600):
            if self.zygote.ready:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertNotEqual(self.zygote.pid, first)

    async def test_beginThenWait(self) -> None:
        """
        L{Zygote.begin} starts the template without waiting: until
        L{Zygote.wait} has seen it ready, processes start afresh.
        """
        self.zygote.begin()
        self.addCleanup(self.zygote.stop)
        self.assertFalse(self.zygote.ready)
        transport, recorder = self.spawn("--rlimit=RLIMIT_BOGUS=1")
        self.assertNotIsInstance(transport, ForkedProcess)
        await recorder.ended
        self.assertTrue(self.zygote.wait())
        self.assertTrue(self.zygote.wait())
        transport, recorder = self.spawn("--rlimit=RLIMIT_BOGUS=1")
        self.assertIsInstance(transport, ForkedProcess)
        await recorder.ended

    async def test_stopBeforeWait(self) -> None:
        """
        A template begun and never waited for ends when the zygote stops.
        """
        self.zygote.begin()
        pid = self.zygote.pid
        assert pid is not None
        await self.zygote.stop()
        self.assertFalse(self.zygote.ready)
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)

    async def test_stop(self) -> None:
        """
        L{Zygote.stop} ends the template; later starts are fresh ones.
        """
        self.assertTrue(self.zygote.start())
        pid = self.zygote.pid
        await self.zygote.stop()
        self.assertFalse(self.zygote.ready)
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)  # type: ignore[arg-type]


class ForkedIsolatedExtensionTests(test_isolation.IsolatedExtensionTests):
    """
    Every test of real isolated extensions, again with the processes forked
    from the template: restart with backoff, pings, revocation, limits,
    threads and the rest work unchanged on this path.
    """

    def setUp(self) -> None:
        super().setUp()
        self.otherInterpreter = False
        self.zygote = Zygote(reactor)
        self.assertTrue(self.zygote.start())
        # Cleanups run last first: the template stops after the extensions.
        self.addCleanup(self.zygote.stop)
        self.addCleanup(self.assertForked)

    def assertForked(self) -> None:
        """
        The processes were forked from the template (unless the test asked
        for another interpreter, which is started afresh).
        """
        if not self.otherInterpreter:
            self.assertGreater(self.zygote.forked, 0)

    async def test_startPhases(self) -> None:
        """
        With C{TCPEXT_START_PHASES} set, a forked process logs, once its
        extension's C{main} has returned, the time and the CPU time at
        which it reached each step of its start, in order.
        """
        os.environ[PHASES_VARIABLE] = "1"
        self.addCleanup(os.environ.pop, PHASES_VARIABLE, None)
        port = _freePort()
        self.extension(
            "listener",
            "async def main(browser):\n"
            f"    await browser.TCPSocket.listen(host='127.0.0.1', port={port})\n",
            [f"tcp-listen:127.0.0.1:{port}"],
        )
        await self.waitFor(lambda: self.logged("start phases:"))
        [line] = [
            formatEvent(e) for e in self.events if "start phases:" in formatEvent(e)
        ]
        marks = [item.split("=") for item in line.split("start phases:")[1].split()]
        names = [name for name, _ in marks]
        self.assertEqual(
            names,
            [
                "forked",
                "start",
                "limits",
                "reactor",
                "channels",
                "namespace",
                "landlock",
                "seccomp",
                "running",
                "hello",
                "loaded",
                "main",
            ],
        )
        times = [tuple(map(float, value.split("/"))) for _, value in marks]
        self.assertEqual(times, sorted(times))
        self.assertEqual([cpu for _, cpu in times], sorted(cpu for _, cpu in times))

    def extension(self, *args: Any, **kw: Any) -> Any:
        """
        Start the extension with processes forked from the template.
        """
        self.otherInterpreter = getattr(self, "otherInterpreter", False) or (
            "python" in kw
        )
        kw.setdefault("spawnProcess", self.zygote.spawnProcess)
        return super().extension(*args, **kw)


class BenchmarkSmokeTests(SynchronousTestCase):
    """
    C{benchmarks/bench_template.py} at a tiny size.
    """

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"

    def bench(self, *args: str) -> Any:
        """
        Run the benchmark with C{args}; return its JSON results.
        """
        script = os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            "benchmarks",
            "bench_template.py",
        )
        results = os.path.abspath(self.mktemp())
        done = subprocess.run(
            [sys.executable, script, *args, "--json", results],
            capture_output=True,
            text=True,
            timeout=300,
            env=_childEnvironment(),
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(results) as f:
            return json.load(f), done.stdout

    def test_template(self) -> None:
        """
        Two extensions forked from the template all listen; the run
        reports their PSS, the CPU time the start cost, the load average,
        and with C{--phases} the median time of each step of a child's
        start.
        """
        [result], output = self.bench(
            "--counts", "2", "--modes", "template", "--phases"
        )
        self.assertEqual(result["listening"], 2)
        self.assertGreater(result["child_pss_mib"], 0)
        self.assertGreater(result["children_cpu_s"], 0)
        self.assertGreaterEqual(result["load"], 0)
        steps = [step["step"] for step in result["phases"]]
        self.assertEqual(steps[0], "forked -> start")
        self.assertEqual(steps[-1], "loaded -> main")
        self.assertIn("all listen s", output)

    def test_floor(self) -> None:
        """
        C{--floor} creates the namespaces of N processes and nothing else,
        and reports it.
        """
        [result], output = self.bench("--floor", "--counts", "3")
        self.assertEqual((result["done"], result["failed"]), (3, 0))
        self.assertGreater(result["namespace_cpu_s_sum"], 0)


class TwistdTemplateTests(SynchronousTestCase):
    """
    C{twistd tcpext --isolation process} forks extension processes from the
    template by default; C{--no-template} starts each afresh.
    """

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"

    def serve(self, *extra: str, isolation: str = "process") -> str:
        """
        Run the echo example isolated (with C{extra} options), check that it
        echoes, stop twistd; return its log.
        """
        examples, ports = copyExamples(self, ["echo-server"])
        twistd = Twistd(
            self,
            ["--extension", os.path.join(examples, "echo-server"), *extra],
            isolation=isolation,
        )
        assertEchoes(self, twistd, ports[7001], b"template\n")
        self.assertEqual(twistd.terminate(), 0)
        return twistd.log()

    def test_default(self) -> None:
        """
        By default the template starts, the extension's process is forked
        from it (nothing starts afresh), and stopping the service stops the
        template too.
        """
        log = self.serve()
        self.assertIn("[tcpext.template#info] template process ", log)
        self.assertNotIn("afresh", log)
        pid = int(log.split("template process ")[1].split()[0])
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)

    def test_noTemplate(self) -> None:
        """
        With C{--no-template} no template starts.
        """
        log = self.serve("--no-template")
        self.assertNotIn("template process", log)
        self.assertIn("(confined: network namespace, Landlock ABI ", log)

    def test_autoByDefault(self) -> None:
        """
        Without C{--isolation} (C{auto}), where the system can confine, the
        extension runs isolated, confined, forked from the template.
        """
        log = self.serve(isolation="")
        self.assertIn("(confined: network namespace, Landlock ABI ", log)
        self.assertIn("[tcpext.template#info] template process ", log)
        self.assertNotIn("cannot confine", log)
