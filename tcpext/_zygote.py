# -*- test-case-name: tests.test_zygote -*-
"""
The zygote: a preloaded template that isolated extension processes are
forked from.

A fresh C{python -m tcpext.sandbox} imports Python, Twisted and tcpext
again for every extension (tens of MiB of private memory, most of a second
of CPU each).  Instead the host starts one template process
(C{python -m tcpext._zygote}) that imports all of that once, freezes the
garbage collector's view of it (C{gc.freeze()}, so collections in the
children do not write to the shared pages) and waits.  To start an
extension the host sends the template the child's arguments, environment
and folder, with its descriptors (output pipes and the two channels) by
C{SCM_RIGHTS}; the template forks, and the new process runs exactly the
start path of a freshly executed child (L{tcpext.sandbox.main}): resource
limits, channels, then the kernel confinement (its own user and network
namespaces, Landlock, seccomp), and only then the extension's code.

The template never runs extension code, keeps no grants and has no reactor
(a reactor created before a fork would be shared by every child).  It reaps
its children and tells the host how each ended.  It dies with the host
(C{PR_SET_PDEATHSIG}), and its children with it.

Host side: L{Zygote} starts and supervises the template (restarting it with
backoff) and offers L{Zygote.spawnProcess}, with the signature of
C{IReactorProcess.spawnProcess}: it forks from the template when it can and
starts the process afresh otherwise (saying so in the log).  The processes
it forks are driven through L{ForkedProcess}, an C{IProcessTransport}.

The wire between host and template (two UNIX stream socket pairs): on the
I{request} channel (template descriptor 3) the host sends length-prefixed
JSON requests, C{{"op": "spawn", "args": [...], "env": {...}, "cwd": ...}}
with the child's four descriptors, and the template answers
C{{"ok": true, "pid": N}} with a pidfd of the new process (or C{{"ok":
false, "message": ...}}); on the I{event} channel (descriptor 4) it sends
C{{"op": "exited", "pid": N, "status": S}} (a C{waitpid} status) for each
child that ended.
"""

from __future__ import annotations

import gc
import json
import os
import selectors
import signal
import socket
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.process import ProcessReader
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpext._isolation import _childEnvironment

__all__ = ["ForkedProcess", "Zygote", "ZygoteUnavailable", "templateMain"]

REQUEST_FD = 3
"""The template's end of the request channel."""

EVENT_FD = 4
"""The template's end of the event channel."""

_LENGTH = struct.Struct("!I")
_MAX_FRAME = 1 << 20
"""A request carries an environment: up to 1 MiB."""

_SANDBOX = ["-m", "tcpext.sandbox"]


class ZygoteUnavailable(Exception):
    """
    The template cannot fork a process now; the message says why.
    """


# Framing, both ends (blocking sockets).


def _sendFrame(
    sock: socket.socket, message: Mapping[str, Any], fds: Sequence[int] = ()
) -> None:
    data = json.dumps(message).encode("utf-8")
    payload = _LENGTH.pack(len(data)) + data
    sent = socket.send_fds(sock, [payload], list(fds)) if fds else 0
    if sent < len(payload):
        sock.sendall(payload[sent:])


def _receiveFrame(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """
    One frame and the descriptors that came with it; L{None} at end of
    stream.

    @raise ConnectionError: for a frame longer than L{_MAX_FRAME} or a
        stream that ends inside a frame.
    """
    data = b""
    fds: list[int] = []
    needed = _LENGTH.size
    try:
        while len(data) < needed:
            chunk, received, _, _ = socket.recv_fds(sock, needed - len(data), 8)
            fds.extend(received)
            if not chunk:
                if data:
                    raise ConnectionError("the channel ended inside a frame")
                for fd in fds:
                    os.close(fd)
                return None
            data += chunk
            if needed == _LENGTH.size and len(data) >= needed:
                (length,) = _LENGTH.unpack(data)
                if length > _MAX_FRAME:
                    raise ConnectionError(f"a {length}-byte frame is too long")
                needed += length
        message = json.loads(data[_LENGTH.size :].decode("utf-8"))
        if not isinstance(message, dict):
            raise ConnectionError(f"not a message: {message!r}")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return message, fds


# The template process.


def _preload() -> None:
    """
    Import what every extension process needs, without creating a reactor.
    """
    import twisted.internet.epollreactor  # noqa: F401
    import twisted.internet.tcp  # noqa: F401
    import twisted.internet.threads  # noqa: F401
    import twisted.internet.unix  # noqa: F401
    import twisted.protocols.tls  # noqa: F401

    import tcpext  # noqa: F401
    import tcpext.sandbox  # noqa: F401
    from tcpext import _seccomp

    # Load libseccomp and build the filter now: children only load it.
    if _seccomp.seccompMissing() is None:
        _seccomp.prepareFilter()
    import twisted.internet.default  # noqa: F401

    if "twisted.internet.reactor" in sys.modules:  # pragma: no cover
        raise RuntimeError("a reactor was installed while preloading")


def _runChild(request: dict[str, Any], fds: list[int], template: int) -> None:
    """
    In the forked process: take the descriptors, folder and environment of
    the request and run the sandbox's start path.  Never returns.

    @param template: The template's pid.
    """
    code = 1
    try:
        # Die with the template, even if it died before this line ran.
        from tcpext.sandbox import _dieWithParent

        _dieWithParent()
        if os.getppid() != template:
            os._exit(1)
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(number, signal.SIG_DFL)
        stdout, stderr, amp, sync = fds
        stdin = os.open(os.devnull, os.O_RDONLY)
        for source, target in (
            (stdin, 0),
            (stdout, 1),
            (stderr, 2),
            (amp, 3),
            (sync, 4),
        ):
            os.dup2(source, target)
        os.closerange(5, os.sysconf("SC_OPEN_MAX"))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import tempfile

        tempfile.tempdir = None
        args = [str(a) for a in request["args"]]
        sys.argv = ["tcpext.sandbox", *args]
        from tcpext.sandbox import main

        code = main(args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _spawn(request: dict[str, Any], fds: list[int]) -> tuple[dict[str, Any], list[int]]:
    """
    Fork one child for C{request}; the answer and the pidfd to send.
    """
    if request.get("op") != "spawn" or len(fds) != 4:
        return {"ok": False, "message": f"not a spawn request: {request!r}"}, []
    if (
        not isinstance(request.get("args"), list)
        or not isinstance(request.get("env"), dict)
        or not isinstance(request.get("cwd"), str)
    ):
        return {"ok": False, "message": "a spawn request needs args, env and cwd"}, []
    sys.stdout.flush()
    sys.stderr.flush()
    template = os.getpid()
    pid = os.fork()
    if pid == 0:
        _runChild(request, fds, template)
    pidfd = os.pidfd_open(pid)
    return {"ok": True, "pid": pid}, [pidfd]


def templateMain() -> int:
    """
    The template process: preload, then fork a child per request until the
    host closes the request channel.

    @return: the exit status.
    """
    from tcpext.sandbox import _dieWithParent

    _dieWithParent()
    requests = socket.socket(fileno=REQUEST_FD)
    events = socket.socket(fileno=EVENT_FD)
    _preload()
    wakeR, wakeW = os.pipe()
    os.set_blocking(wakeW, False)
    os.set_blocking(wakeR, False)
    signal.set_wakeup_fd(wakeW)
    signal.signal(signal.SIGCHLD, lambda number, frame: None)
    gc.collect()
    gc.freeze()
    selector = selectors.DefaultSelector()
    selector.register(requests, selectors.EVENT_READ, "request")
    selector.register(wakeR, selectors.EVENT_READ, "child")
    _sendFrame(requests, {"op": "ready", "pid": os.getpid()})
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                try:
                    while os.read(wakeR, 512):
                        pass
                except BlockingIOError:
                    pass
                _reap(events)
                continue
            received = _receiveFrame(requests)
            if received is None:
                return 0
            request, fds = received
            try:
                answer, passed = _spawn(request, fds)
            except OSError as e:
                answer, passed = {"ok": False, "message": f"fork failed: {e}"}, []
            finally:
                for fd in fds:
                    os.close(fd)
            try:
                _sendFrame(requests, answer, passed)
            finally:
                for fd in passed:
                    os.close(fd)


def _reap(events: socket.socket) -> None:
    """
    Reap every ended child and tell the host.
    """
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _sendFrame(events, {"op": "exited", "pid": pid, "status": status})


# The host side.


def _endOf(status: int | None) -> Failure:
    """
    The failure a C{ProcessProtocol.processEnded} gets for a C{waitpid}
    status (L{None}: killed with the template).
    """
    if status is None:
        return Failure(error.ProcessTerminated(None, signal.SIGKILL, None))
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        if code == 0:
            return Failure(error.ProcessDone(status))
        return Failure(error.ProcessTerminated(code, None, status))
    return Failure(error.ProcessTerminated(None, os.WTERMSIG(status), status))


class _PidfdWatch:
    """
    Tells a L{ForkedProcess} when its pidfd becomes readable (the process
    has ended).
    """

    def __init__(self, process: ForkedProcess, fd: int) -> None:
        self._process = process
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "ForkedProcess"

    def doRead(self) -> None:
        self._process._ended()

    def connectionLost(self, reason: Failure) -> None:
        pass


@implementer(IProcessTransport)
class ForkedProcess:
    """
    A process forked by the template, as its L{ProcessProtocol} sees it:
    output on descriptors 1 and 2, signals (through a pidfd, so never to a
    reused pid), and C{processEnded} once it has ended, its output is
    closed and the template has reported its exit status.

    @ivar pid: The process id (L{None} once it has ended).
    """

    def __init__(
        self,
        reactor: Any,
        protocol: ProcessProtocol,
        pid: int,
        pidfd: int,
        outputs: Mapping[int, int],
    ) -> None:
        self._reactor = reactor
        self.proto = protocol
        self.pid: int | None = pid
        self._pidfd: int | None = pidfd
        self._status: int | None = None
        self._statusKnown = False
        self._exited = False
        self._readers = {
            name: ProcessReader(reactor, self, name, fd) for name, fd in outputs.items()
        }
        self._watch = _PidfdWatch(self, pidfd)
        reactor.addReader(self._watch)
        protocol.makeConnection(self)

    # IProcessTransport

    def closeStdin(self) -> None:
        """
        Nothing to close: the process reads C{/dev/null}.
        """

    def closeStdout(self) -> None:
        """
        Stop reading the process's standard output.
        """
        self.closeChildFD(1)

    def closeStderr(self) -> None:
        """
        Stop reading the process's standard error.
        """
        self.closeChildFD(2)

    def closeChildFD(self, descriptor: int) -> None:
        """
        Stop reading C{descriptor} (1 or 2).
        """
        reader = self._readers.get(descriptor)
        if reader is not None:
            reader.loseConnection()

    def writeToChild(self, childFD: int, data: bytes) -> None:
        """
        The process has no input.
        """
        raise KeyError(childFD)

    def write(self, data: bytes) -> None:
        """
        The process has no input.
        """
        raise KeyError(0)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """
        The process has no input.
        """
        raise KeyError(0)

    def loseConnection(self) -> None:
        """
        Stop reading its output.
        """
        for name in list(self._readers):
            self.closeChildFD(name)

    def getPeer(self) -> Any:
        """
        Like Twisted's processes: no address.
        """
        return ("process", self.pid)

    def getHost(self) -> Any:
        """
        Like Twisted's processes: no address.
        """
        return ("process",)

    def signalProcess(self, signalID: str | int) -> None:
        """
        Send a signal (a name such as C{"KILL"}, or a number).

        @raise twisted.internet.error.ProcessExitedAlready: once it has
            ended.
        """
        if isinstance(signalID, str):
            number = getattr(signal, f"SIG{signalID}")
        else:
            number = signalID
        if self._pidfd is None or self._exited:
            raise error.ProcessExitedAlready()
        try:
            signal.pidfd_send_signal(self._pidfd, number)
        except ProcessLookupError:
            raise error.ProcessExitedAlready() from None

    # From the readers, the pidfd and the template.

    def childDataReceived(self, name: int, data: bytes) -> None:
        """
        Output from the process.
        """
        self.proto.childDataReceived(name, data)

    def childConnectionLost(self, name: int, reason: Failure) -> None:
        """
        One of its output pipes closed.
        """
        reader = self._readers.pop(name, None)
        if reader is not None:
            os.close(reader.fd)
        self.proto.childConnectionLost(name)
        self._maybeEnded()

    def _ended(self) -> None:
        """
        The pidfd says the process has ended.
        """
        self._reactor.removeReader(self._watch)
        self._exited = True
        self._maybeEnded()

    def exited(self, status: int | None) -> None:
        """
        The template reported its status (L{None}: the template ended, and
        took the process with it).
        """
        if not self._statusKnown:
            self._status, self._statusKnown = status, True
            self._maybeEnded()

    def _maybeEnded(self) -> None:
        if not (self._exited and self._statusKnown and not self._readers):
            return
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self.pid is None:
            return
        self.pid = None
        self.proto.processEnded(_endOf(self._status))


class _TemplateOutput(ProcessProtocol):
    """
    The template process's output and end.
    """

    def __init__(self, zygote: Zygote) -> None:
        self._zygote = zygote
        self.ended: Deferred[None] = Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines()[:50]:
            self._zygote.log.info("[template] {line}", line=line[:4096])

    def processEnded(self, reason: Failure) -> None:
        self._zygote._templateEnded(self, reason)
        self.ended.callback(None)


class _Events(Int32StringReceiver):
    """
    The host's end of the event channel.
    """

    MAX_LENGTH = _MAX_FRAME

    def __init__(self, zygote: Zygote) -> None:
        self._zygote = zygote

    def stringReceived(self, data: bytes) -> None:
        try:
            event = json.loads(data.decode("utf-8"))
            pid, status = int(event["pid"]), int(event["status"])
        except (ValueError, KeyError, TypeError) as e:
            self._zygote.log.error("bad event from the template: {error}", error=e)
            return
        self._zygote._exited(pid, status)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        The template's event channel closed.
        """
        self._zygote._eventsLost(self)


class _ReadyWatch:
    """
    Waits, in the reactor, for a restarted template's first message.
    """

    def __init__(
        self,
        zygote: Zygote,
        output: _TemplateOutput,
        requests: socket.socket,
        events: socket.socket,
    ) -> None:
        self._zygote = zygote
        self._output = output
        self._requests = requests
        self._events = events
        self._done = False
        self.timer: Any = None

    def fileno(self) -> int:
        return self._requests.fileno()

    def logPrefix(self) -> str:
        return "Zygote"

    def doRead(self) -> None:
        try:
            self._requests.settimeout(self._zygote.startTimeout)
            hello = _receiveFrame(self._requests)
            why = f"no ready message ({hello!r})"
        except (OSError, ValueError) as e:
            hello, why = None, str(e)
        self._finish(hello, why)

    def timedOut(self) -> None:
        self.timer = None
        self._finish(None, f"no ready message within {self._zygote.startTimeout}s")

    def _finish(self, hello: tuple[dict[str, Any], list[int]] | None, why: str) -> None:
        if self._done:
            return
        self._done = True
        self._zygote._reactor.removeReader(self)
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self._zygote._ready(self._output, self._requests, self._events, hello, why)

    def connectionLost(self, reason: Failure) -> None:
        pass


class Zygote:
    """
    The host's side of the template: starts it, restarts it with backoff
    when it ends, forks extension processes from it.

    @ivar log: Where the template's events and output are logged
        (C{tcpext.template}).
    @ivar pid: The template's process id while it runs.
    @ivar forked: How many processes were forked from a template.
    """

    startTimeout = 60.0
    """Seconds the template gets to preload and say it is ready."""

    requestTimeout = 10.0
    """Seconds a fork request may take."""

    initialDelay = 1.0
    maxDelay = 60.0
    """Restart backoff (seconds): doubling from C{initialDelay}."""

    def __init__(
        self, reactor: Any, python: str | None = None, log: Logger | None = None
    ) -> None:
        """
        @param reactor: The host's reactor (C{IReactorProcess},
            C{IReactorSocket}, C{IReactorFDSet}).
        @param python: The interpreter for the template (default: this one).
        """
        self._reactor = reactor
        self._python = python or sys.executable
        self.log = log or Logger(namespace="tcpext.template")
        self.pid: int | None = None
        self._requests: socket.socket | None = None
        self._events: _Events | None = None
        self._output: _TemplateOutput | None = None
        self._transport: Any = None
        self._children: dict[int, ForkedProcess] = {}
        self._restarts = 0
        self._restartTimer: Any = None
        self._stopping = False
        self._why = "the template has not started"
        self.forked = 0

    @property
    def ready(self) -> bool:
        """
        Whether processes are forked from the template now.
        """
        return self._requests is not None

    def start(self) -> bool:
        """
        Start the template and wait (blocking, bounded by L{startTimeout})
        until it has preloaded.

        @return: whether it is ready; if not, the reason is logged and
            processes start afresh until a restart succeeds.
        """
        self._stopping = False
        return self._start(wait=True)

    def _restart(self) -> None:
        """
        Start the template again, without blocking the reactor: it is used
        once it says it is ready.
        """
        self._restartTimer = None
        self._start(wait=False)

    def _start(self, wait: bool) -> bool:
        self._restartTimer = None
        requestHost, requestChild = socket.socketpair(
            socket.AF_UNIX, socket.SOCK_STREAM
        )
        eventHost, eventChild = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        output = _TemplateOutput(self)
        try:
            self._transport = self._reactor.spawnProcess(
                output,
                self._python,
                [self._python, "-m", "tcpext._zygote"],
                env=_childEnvironment(),
                childFDs={
                    0: "w",
                    1: "r",
                    2: "r",
                    REQUEST_FD: requestChild.fileno(),
                    EVENT_FD: eventChild.fileno(),
                },
            )
        except Exception as e:
            for s in (requestHost, requestChild, eventHost, eventChild):
                s.close()
            return self._failed(f"cannot start the template: {e}")
        requestChild.close()
        eventChild.close()
        self._output = output
        self.pid = self._transport.pid
        if not wait:
            watch = _ReadyWatch(self, output, requestHost, eventHost)
            self._reactor.addReader(watch)
            watch.timer = self._reactor.callLater(self.startTimeout, watch.timedOut)
            return False
        try:
            requestHost.settimeout(self.startTimeout)
            hello = _receiveFrame(requestHost)
        except (OSError, ValueError) as e:
            hello = None
            why = str(e)
        else:
            why = f"no ready message ({hello!r})"
        return self._ready(output, requestHost, eventHost, hello, why)

    def _ready(
        self,
        output: _TemplateOutput,
        requestHost: socket.socket,
        eventHost: socket.socket,
        hello: tuple[dict[str, Any], list[int]] | None,
        why: str,
    ) -> bool:
        """
        The template's first message (or L{None}, and why) arrived: use it
        from now on, or give up on this one.
        """
        if output is not self._output or hello is None or hello[0].get("op") != "ready":
            requestHost.close()
            eventHost.close()
            if output is not self._output:
                return False
            self._kill()
            return self._failed(f"the template did not start: {why}")
        requestHost.settimeout(self.requestTimeout)
        self._requests = requestHost
        events = _Events(self)
        self._events = events
        eventHost.setblocking(False)
        self._reactor.adoptStreamConnection(
            eventHost.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: events)
        )
        eventHost.close()
        self._restarts = 0
        self.log.info("template process {pid} ready", pid=self.pid)
        return True

    def _failed(self, why: str) -> bool:
        self._why = why
        self.log.error(
            "{why}; extension processes start afresh until it is back", why=why
        )
        self._scheduleRestart()
        return False

    def _scheduleRestart(self) -> None:
        if self._stopping or self._restartTimer is not None:
            return
        delay = min(self.initialDelay * 2**self._restarts, self.maxDelay)
        self._restarts += 1
        self._restartTimer = self._reactor.callLater(delay, self._restart)

    def _kill(self) -> None:
        transport = self._transport
        if transport is not None and transport.pid is not None:
            try:
                transport.signalProcess("KILL")
            except Exception:
                pass

    def _drop(self, why: str) -> None:
        """
        Stop using the template (it ended, or its channel broke).
        """
        self._why = why
        if self._requests is not None:
            self._requests.close()
            self._requests = None
        events, self._events = self._events, None
        if events is not None and events.transport is not None:
            events.transport.loseConnection()

    def _templateEnded(self, output: _TemplateOutput, reason: Failure) -> None:
        if output is not self._output:
            return
        self._output = None
        self._transport = None
        self.pid = None
        self._drop("the template process ended")
        # Its children were killed with it (their parent died).
        for child in list(self._children.values()):
            child.exited(None)
        self._children.clear()
        if self._stopping:
            return
        self.log.error(
            "template process ended ({reason}); extension processes start "
            "afresh until it is back",
            reason=reason.getErrorMessage(),
        )
        self._scheduleRestart()

    def _eventsLost(self, events: _Events) -> None:
        if events is self._events:
            self._drop("the template's event channel closed")
            self._kill()

    def _exited(self, pid: int, status: int) -> None:
        child = self._children.pop(pid, None)
        if child is not None:
            child.exited(status)

    def spawnProcess(
        self,
        processProtocol: ProcessProtocol,
        executable: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        path: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,
        childFDs: Mapping[int, Any] | None = None,
    ) -> Any:
        """
        C{IReactorProcess.spawnProcess}: an extension process
        (C{PYTHON -m tcpext.sandbox ...}, descriptors 0, 1, 2 as Twisted's
        C{"w"}, C{"r"}, C{"r"} and 3, 4 the channels) is forked from the
        template; anything else, or any process while the template is not
        ready, is started by the reactor (the log says why).
        """
        reason = self._unforkable(executable, args, uid, gid, usePTY, childFDs)
        if reason is None:
            assert childFDs is not None
            try:
                return self._fork(
                    processProtocol,
                    list(args[3:]),
                    dict(env or {}),
                    path or os.getcwd(),
                    childFDs[3],
                    childFDs[4],
                )
            except ZygoteUnavailable as e:
                reason = str(e)
        self.log.info(
            "starting {what} afresh: {reason}",
            what=" ".join(args[1:3]) or executable,
            reason=reason,
        )
        return self._reactor.spawnProcess(
            processProtocol,
            executable,
            args,
            env=env,
            path=path,
            uid=uid,
            gid=gid,
            usePTY=usePTY,
            childFDs=childFDs,
        )

    def _unforkable(
        self,
        executable: str,
        args: Sequence[str],
        uid: int | None,
        gid: int | None,
        usePTY: bool,
        childFDs: Mapping[int, Any] | None,
    ) -> str | None:
        """
        Why this spawn cannot be a fork of the template (L{None}: it can).
        """
        if not self.ready:
            return self._why
        if executable != self._python or list(args[1:3]) != _SANDBOX:
            return "not an extension process of this interpreter"
        if uid is not None or gid is not None or usePTY:
            return "another user, group or a terminal is asked for"
        fds = dict(childFDs or {})
        if fds.get(0) != "w" or fds.get(1) != "r" or fds.get(2) != "r":
            return "other standard descriptors are asked for"
        if sorted(fds) != [0, 1, 2, 3, 4] or not all(
            isinstance(fds[n], int) for n in (3, 4)
        ):
            return "other descriptors are asked for"
        return None

    def _fork(
        self,
        protocol: ProcessProtocol,
        args: list[str],
        env: dict[str, str],
        cwd: str,
        amp: int,
        sync: int,
    ) -> ForkedProcess:
        requests = self._requests
        if requests is None:
            raise ZygoteUnavailable(self._why)
        outR, outW = os.pipe()
        errR, errW = os.pipe()
        try:
            _sendFrame(
                requests,
                {"op": "spawn", "args": args, "env": env, "cwd": cwd},
                [outW, errW, amp, sync],
            )
            answer = _receiveFrame(requests)
            if answer is None:
                raise ConnectionError("the template closed its channel")
        except (OSError, ValueError) as e:
            for fd in (outR, errR):
                os.close(fd)
            self._drop(f"the template did not answer: {e}")
            self._kill()
            raise ZygoteUnavailable(self._why) from e
        finally:
            os.close(outW)
            os.close(errW)
        message, fds = answer
        if not message.get("ok") or len(fds) != 1:
            for fd in (outR, errR, *fds):
                os.close(fd)
            raise ZygoteUnavailable(
                f"the template refused: {message.get('message', message)}"
            )
        pid = int(message["pid"])
        child = ForkedProcess(self._reactor, protocol, pid, fds[0], {1: outR, 2: errR})
        self._children[pid] = child
        self.forked += 1
        return child

    def stop(self) -> Deferred[None]:
        """
        Stop the template (call once the extension processes have ended):
        closing its request channel makes it exit.

        @return: fires once it has ended.
        """
        self._stopping = True
        if self._restartTimer is not None and self._restartTimer.active():
            self._restartTimer.cancel()
        self._restartTimer = None
        output = self._output
        self._drop("the service is stopping")
        if output is None:
            return defer.succeed(None)
        timer = self._reactor.callLater(10.0, self._kill)

        def ended(_: object) -> None:
            if timer.active():
                timer.cancel()

        return output.ended.addCallback(ended)


if __name__ == "__main__":  # pragma: no cover - the template process
    try:
        status = templateMain()
    except ConnectionError as e:
        sys.stderr.write(f"template: {e}\n")
        status = 1
    sys.exit(status)
