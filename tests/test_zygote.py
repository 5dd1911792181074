"""
Tests for L{tcpext._zygote}: the preloaded template that isolated extension
processes are forked from, with real template and child processes.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any

from twisted.internet import defer, error, reactor, task
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpext._isolation import _childEnvironment
from tcpext._zygote import ForkedProcess, Zygote, _endOf
from tests import test_isolation
from tests.test_examples import Twistd, assertEchoes, copyExamples
from tests.test_isolation import _NO_CONFINEMENT


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
        fresh channels whose host ends are closed at once (so the child
        ends as soon as it has started).
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
        return transport, recorder

    async def test_forkAndEnd(self) -> None:
        """
        A sandbox process is forked from the template (a L{ForkedProcess},
        whose parent is the template), its output arrives, and its end is
        reported with its exit status once its output is closed.
        """
        self.start()
        transport, recorder, ampHost = self.spawnOpen()
        pid = transport.pid
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

    def spawnOpen(self) -> tuple[Any, _Recorder, socket.socket]:
        """
        Spawn a sandbox process through the zygote and keep the host's end
        of its AMP channel open (it waits for the host's answer to its
        hello); return that end too.
        """
        python = sys.executable
        recorder = _Recorder()
        ampHost, ampChild = socket.socketpair()
        syncHost, syncChild = socket.socketpair()
        try:
            transport = self.zygote.spawnProcess(
                recorder,
                python,
                [python, "-m", "tcpext.sandbox"],
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
        for _ in range(100):
            if not self.zygote.ready:
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

    def extension(self, *args: Any, **kw: Any) -> Any:
        """
        Start the extension with processes forked from the template.
        """
        self.otherInterpreter = getattr(self, "otherInterpreter", False) or (
            "python" in kw
        )
        kw.setdefault("spawnProcess", self.zygote.spawnProcess)
        return super().extension(*args, **kw)


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
