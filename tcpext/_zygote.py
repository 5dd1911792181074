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

The wire between host and template (two UNIX stream socket pairs), every
message a length-prefixed JSON object.  On the I{request} channel
(template descriptor 3) the template first says C{{"op": "ready", "pid":
N}}; from then on the host sends requests, C{{"op": "spawn", "id": I,
"args": [...], "env": {...}, "cwd": ...}} with the child's four
descriptors.  The host does not wait for an answer before sending the next
request, so that a burst of starts costs the template one fork each and the
host nothing but a write.  On the I{event} channel (descriptor 4) the
template answers each request in order, C{{"op": "forked", "id": I, "pid":
N}} with a pidfd of the new process (or C{{"op": "refused", "id": I,
"message": ...}}), and says C{{"op": "exited", "pid": N, "status": S}} (a
C{waitpid} status) for each child that ended.  One channel carries both, so
a child's C{exited} always comes after its C{forked}.
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
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IFileDescriptorReceiver, IProcessTransport
from twisted.internet.process import ProcessReader
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpext._isolation import _childEnvironment, _exitForked

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
    import resource  # noqa: F401

    import twisted.internet.epollreactor  # noqa: F401
    import twisted.internet.tcp  # noqa: F401
    import twisted.internet.threads  # noqa: F401
    import twisted.internet.unix  # noqa: F401
    import twisted.protocols.tls  # noqa: F401

    import tcpext  # noqa: F401
    import tcpext.sandbox
    from tcpext import _isolation, _seccomp

    # Find the C library and build the argument parser now, not in every
    # child.
    _isolation._libc()
    tcpext.sandbox._parser()

    # Load libseccomp and build the filter now: children only load it.
    if _seccomp.seccompMissing() is None:
        _seccomp.prepareFilter()
    import twisted.internet.default  # noqa: F401

    if "twisted.internet.reactor" in sys.modules:  # pragma: no cover
        raise RuntimeError("a reactor was installed while preloading")
    _declareInterfaces()
    _declared.extend(_declareReactors())


_PRELOADED = (
    "attr",
    "automat",
    "hyperlink",
    "OpenSSL",
    "tcpext",
    "twisted",
    "zope",
)
"""The packages whose classes' interface declarations the template works
out before it forks."""


_declared: list[Any] = []
"""What L{_declareReactors} made, kept alive for the children."""


def _declareReactors() -> list[Any]:
    """
    Make the interface declarations of the reactors every child builds:
    its L{tcpext.sandbox.BrokeredReactor} over the default (epoll)
    reactor, and the permission-checking reactor over that.  Each declares
    what it provides when it is made, and zope.interface shares one
    declaration between all objects of a class that provide the same
    interfaces, for as long as one of them is alive: made here (on
    stand-ins made without running their constructors), and kept, they are
    shared by every child instead of worked out in each.

    @return: the stand-ins, to keep.
    """
    from twisted.internet.epollreactor import EPollReactor
    from zope.interface import directlyProvides, implementedBy

    from tcpext.reactor import (
        KNOWN_INTERFACES,
        IDialsForNames,
        PermissionCheckingReactor,
    )
    from tcpext.sandbox import BrokeredReactor

    # As BrokeredReactor.__init__ and PermissionCheckingReactor.__init__
    # declare them.
    brokered = object.__new__(BrokeredReactor)
    directlyProvides(brokered, *implementedBy(EPollReactor), IDialsForNames)
    checking = object.__new__(PermissionCheckingReactor)
    directlyProvides(checking, *[i for i in KNOWN_INTERFACES if i.providedBy(brokered)])
    return [brokered, checking]


def _declareInterfaces() -> None:
    """
    Work out the interface declarations (C{implementedBy}) of every class
    the preloaded packages define.  zope.interface does this lazily, the
    first time an object of the class is asked what it provides: in each
    child, that cost a few milliseconds of CPU (the C3 resolution of each
    declaration) and wrote to shared pages.  Done here once, it is shared.
    """
    from zope.interface import implementedBy

    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in _PRELOADED:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, type) and value.__module__ == name:
                try:
                    implementedBy(value)
                except TypeError:
                    # A class zope.interface cannot declare anything on.
                    continue


def _runChild(request: dict[str, Any], fds: list[int], template: int) -> None:
    """
    In the forked process: take the descriptors, folder and environment of
    the request and run the sandbox's start path.  Never returns.

    @param template: The template's pid.
    """
    code = 1
    try:
        from tcpext.sandbox import phases

        phases.enable(request["env"])
        phases.mark("forked")
        # Die with the template, even if it died before this line ran.
        from tcpext.sandbox import _dieWithParent

        _dieWithParent()
        if os.getppid() != template:
            os._exit(1)
        signal.set_wakeup_fd(-1)
        # SIGINT, SIGTERM and SIGHUP stay ignored, as in the template.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
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
        # The environment differs from the template's in a few entries
        # (TMPDIR at least): change only those.
        env = request["env"]
        for name in [name for name in os.environ if name not in env]:
            del os.environ[name]
        for name, value in env.items():
            if os.environ.get(name) != value:
                os.environ[name] = value
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
        _exitForked(code)


def _spawn(request: dict[str, Any], fds: list[int]) -> tuple[dict[str, Any], list[int]]:
    """
    Fork one child for C{request}; the answer and the pidfd to send.
    """
    ident = request.get("id")
    if request.get("op") != "spawn" or len(fds) != 4:
        return {
            "op": "refused",
            "id": ident,
            "message": f"not a spawn request: {request!r}",
        }, []
    if (
        not isinstance(request.get("args"), list)
        or not isinstance(request.get("env"), dict)
        or not isinstance(request.get("cwd"), str)
    ):
        return {
            "op": "refused",
            "id": ident,
            "message": "a spawn request needs args, env and cwd",
        }, []
    sys.stdout.flush()
    sys.stderr.flush()
    template = os.getpid()
    pid = os.fork()
    if pid == 0:
        _runChild(request, fds, template)
    pidfd = os.pidfd_open(pid)
    return {"op": "forked", "id": ident, "pid": pid}, [pidfd]


def templateMain() -> int:
    """
    The template process: preload, then fork a child per request until the
    host closes the request channel.

    @return: the exit status.
    """
    from tcpext.sandbox import _dieWithParent, ignoreGroupSignals

    _dieWithParent()
    ignoreGroupSignals()
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
                answer = {
                    "op": "refused",
                    "id": request.get("id"),
                    "message": f"fork failed: {e}",
                }
                passed = []
            finally:
                for fd in fds:
                    os.close(fd)
            try:
                _sendFrame(events, answer, passed)
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

    It is returned as soon as the request is on its way to the template:
    until the template says it has forked the process, C{pid} is L{None},
    signals wait (and are sent once it exists), and the protocol is not yet
    connected.  The protocol's C{makeConnection} comes once the process
    exists, or, if it never will (the template refused or ended first),
    just before its C{processEnded}.

    @ivar pid: The process id (L{None} until it is forked, and once it has
        ended).
    """

    def __init__(
        self, reactor: Any, protocol: ProcessProtocol, outputs: Mapping[int, int]
    ) -> None:
        """
        @param outputs: The host's ends of the process's output pipes, by
            the process's descriptor number; read once it exists.
        """
        self._reactor = reactor
        self.proto = protocol
        self.pid: int | None = None
        self._forkedPid: int | None = None
        self._pidfd: int | None = None
        self._pending = True
        self._outputs = dict(outputs)
        self._readers: dict[int, ProcessReader] = {}
        self._watch: _PidfdWatch | None = None
        self._signals: list[int] = []
        self._waiting: list[Deferred[int | None]] = []
        self._status: int | None = None
        self._statusKnown = False
        self._exited = False

    def whenStarted(self) -> Deferred[int | None]:
        """
        Fires with the pid once the process is forked, or with L{None} if
        it never will be.
        """
        if not self._pending:
            return defer.succeed(self._forkedPid)
        d: Deferred[int | None] = Deferred()
        self._waiting.append(d)
        return d

    def _started(self, pid: int | None) -> None:
        self._pending = False
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(pid)

    # From the host's end of the template.

    def forked(self, pid: int, pidfd: int) -> None:
        """
        The template forked the process: read its output, watch its pidfd,
        connect the protocol, send the signals that were waiting.
        """
        self.pid = self._forkedPid = pid
        self._pidfd = pidfd
        self._readers = {
            name: ProcessReader(self._reactor, self, name, fd)
            for name, fd in self._outputs.items()
        }
        self._outputs = {}
        self._watch = _PidfdWatch(self, pidfd)
        self._reactor.addReader(self._watch)
        self.proto.makeConnection(self)
        signals, self._signals = self._signals, []
        self._started(pid)
        for number in signals:
            try:
                self.signalProcess(number)
            except error.ProcessExitedAlready:
                break

    def notStarted(self, status: int | None) -> None:
        """
        The process will never exist (the template refused to fork it, or
        ended first): connect the protocol and end the process with
        C{status} (a C{waitpid} status; L{None}: as killed).
        """
        if not self._pending:
            return
        for fd in self._outputs.values():
            os.close(fd)
        self._outputs = {}
        self._signals = []
        self._started(None)
        self.proto.makeConnection(self)
        self.proto.processEnded(_endOf(status))

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
        Send a signal (a name such as C{"KILL"}, or a number); one sent
        before the process is forked is sent once it is.

        @raise twisted.internet.error.ProcessExitedAlready: once it has
            ended (or when it will never start).
        """
        if isinstance(signalID, str):
            number = getattr(signal, f"SIG{signalID}")
        else:
            number = signalID
        if self._pending:
            self._signals.append(number)
            return
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
        if self._watch is not None:
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


class _RequestWriter:
    """
    The host's end of the request channel: sends spawn requests (with their
    descriptors) without blocking the reactor, in order.  It owns the
    descriptors of each queued request and closes them once they are sent
    (the template then holds its own copies) or dropped.
    """

    def __init__(
        self, reactor: Any, sock: socket.socket, failed: Callable[[str], None]
    ) -> None:
        """
        @param sock: A non-blocking socket.
        @param failed: Called with the reason when the channel fails.
        """
        self._reactor = reactor
        self._sock = sock
        self._failed = failed
        self._queue: deque[tuple[bytes, list[int]]] = deque()
        self._writing = False

    def fileno(self) -> int:
        return self._sock.fileno()

    def logPrefix(self) -> str:
        return "Zygote"

    def send(self, message: Mapping[str, Any], fds: list[int]) -> None:
        """
        Send C{message} with C{fds} (now owned by the writer).
        """
        data = json.dumps(message).encode("utf-8")
        self._queue.append((_LENGTH.pack(len(data)) + data, fds))
        if not self._writing:
            self.doWrite()

    def doWrite(self) -> None:
        """
        Send what the socket takes now; wait for it to be writable if that
        is not everything.
        """
        while self._queue:
            payload, fds = self._queue[0]
            try:
                if fds:
                    sent = socket.send_fds(self._sock, [payload], fds)
                else:
                    sent = self._sock.send(payload)
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    self._reactor.addWriter(self)
                return
            except OSError as e:
                self.close()
                self._failed(f"the request channel failed: {e}")
                return
            for fd in fds:
                os.close(fd)
            if sent < len(payload):
                self._queue[0] = (payload[sent:], [])
            else:
                self._queue.popleft()
        if self._writing:
            self._writing = False
            self._reactor.removeWriter(self)

    def close(self) -> None:
        """
        Drop what is queued (closing its descriptors) and close the socket.
        """
        if self._writing:
            self._writing = False
            self._reactor.removeWriter(self)
        while self._queue:
            for fd in self._queue.popleft()[1]:
                os.close(fd)
        self._sock.close()

    def connectionLost(self, reason: Failure) -> None:
        pass


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


@implementer(IFileDescriptorReceiver)
class _Events(Int32StringReceiver):
    """
    The host's end of the event channel: the template's answers to spawn
    requests (each C{forked} comes with a pidfd) and exit statuses.
    """

    MAX_LENGTH = _MAX_FRAME

    def __init__(self, zygote: Zygote) -> None:
        self._zygote = zygote
        self._fds: deque[int] = deque()

    def fileDescriptorReceived(self, descriptor: int) -> None:
        """
        A pidfd, for the next C{forked} event.
        """
        self._fds.append(descriptor)

    def stringReceived(self, data: bytes) -> None:
        try:
            event = json.loads(data.decode("utf-8"))
            op = event["op"]
            if op == "exited":
                self._zygote._exited(int(event["pid"]), int(event["status"]))
            elif op == "forked":
                ident, pid = int(event["id"]), int(event["pid"])
                if not self._fds:
                    raise ValueError("a forked event without its pidfd")
                self._zygote._forked(ident, pid, self._fds.popleft())
            elif op == "refused":
                self._zygote._refused(int(event["id"]), str(event["message"]))
            else:
                raise ValueError(f"unknown event {op!r}")
        except (ValueError, KeyError, TypeError) as e:
            self._zygote.log.error("bad event from the template: {error}", error=e)
            self._zygote._drop(f"the template sent a bad event ({e})")
            self._zygote._kill()

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        The template's event channel closed.
        """
        while self._fds:
            os.close(self._fds.popleft())
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
    """Seconds the template may go without answering while requests wait
    (it answers them in order, so this bounds the wait for each answer, not
    for a whole burst)."""

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
        self._requests: _RequestWriter | None = None
        self._pending: dict[int, ForkedProcess] = {}
        self._lastRequest = 0
        self._answerTimer: Any = None
        self._events: _Events | None = None
        self._output: _TemplateOutput | None = None
        self._transport: Any = None
        self._children: dict[int, ForkedProcess] = {}
        self._restarts = 0
        self._restartTimer: Any = None
        self._stopping = False
        self._why = "the template has not started"
        self._booting: tuple[_TemplateOutput, socket.socket, socket.socket] | None
        self._booting = None
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
        until it has preloaded: L{begin}, then L{wait}.

        @return: whether it is ready; if not, the reason is logged and
            processes start afresh until a restart succeeds.
        """
        self.begin()
        return self.wait()

    def begin(self) -> None:
        """
        Start the template process without waiting for it, so that the
        caller can do its own work while the template preloads; L{wait}
        then waits until it is ready.  Until then, processes start afresh.
        """
        self._stopping = False
        self._booting = self._launch()

    def wait(self) -> bool:
        """
        Wait (blocking, bounded by L{startTimeout}) until the template
        started by L{begin} has preloaded.

        @return: whether it is ready; if not, the reason is logged and
            processes start afresh until a restart succeeds.
        """
        booting, self._booting = self._booting, None
        if booting is None:
            return self.ready
        output, requestHost, eventHost = booting
        try:
            requestHost.settimeout(self.startTimeout)
            hello = _receiveFrame(requestHost)
        except (OSError, ValueError) as e:
            hello = None
            why = str(e)
        else:
            why = f"no ready message ({hello!r})"
        return self._ready(output, requestHost, eventHost, hello, why)

    def _restart(self) -> None:
        """
        Start the template again, without blocking the reactor: it is used
        once it says it is ready.
        """
        self._restartTimer = None
        launched = self._launch()
        if launched is not None:
            output, requestHost, eventHost = launched
            watch = _ReadyWatch(self, output, requestHost, eventHost)
            self._reactor.addReader(watch)
            watch.timer = self._reactor.callLater(self.startTimeout, watch.timedOut)

    def _launch(
        self,
    ) -> tuple[_TemplateOutput, socket.socket, socket.socket] | None:
        """
        Spawn a template process.

        @return: its output's protocol and the host's ends of its two
            channels, or L{None} if it could not be spawned (logged; a
            restart is scheduled).
        """
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
            self._failed(f"cannot start the template: {e}")
            return None
        requestChild.close()
        eventChild.close()
        self._output = output
        self.pid = self._transport.pid
        return output, requestHost, eventHost

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
        requestHost.setblocking(False)
        self._requests = _RequestWriter(self._reactor, requestHost, self._channelFailed)
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
        Stop using the template (it ended, or its channel broke): the
        processes it has not forked yet never will be.
        """
        self._why = why
        if self._requests is not None:
            self._requests.close()
            self._requests = None
        self._cancelAnswerTimer()
        events, self._events = self._events, None
        if events is not None and events.transport is not None:
            events.transport.loseConnection()
        pending, self._pending = self._pending, {}
        if pending:
            self.log.error(
                "{count} extension process(es) were not forked: {why}",
                count=len(pending),
                why=why,
            )
        for child in pending.values():
            # Later, not from within the call that asked for it.
            self._reactor.callLater(0, child.notStarted, None)

    def _channelFailed(self, why: str) -> None:
        self._drop(why)
        self._kill()

    # Answers to spawn requests.

    def _forked(self, ident: int, pid: int, pidfd: int) -> None:
        child = self._pending.pop(ident, None)
        if child is None:
            os.close(pidfd)
            self.log.error(
                "the template forked process {pid} for an unknown request {ident}",
                pid=pid,
                ident=ident,
            )
            return
        self._answered()
        self._children[pid] = child
        self.forked += 1
        child.forked(pid, pidfd)

    def _refused(self, ident: int, message: str) -> None:
        child = self._pending.pop(ident, None)
        self._answered()
        self.log.error(
            "the template could not fork an extension process: {message}",
            message=message,
        )
        if child is not None:
            # Exit status 1: counted as a crash, so restarted with backoff.
            child.notStarted(1 << 8)

    def _answered(self) -> None:
        """
        The template answered a request: the wait for the next answer, if
        any, starts now.
        """
        self._cancelAnswerTimer()
        if self._pending:
            self._answerTimer = self._reactor.callLater(
                self.requestTimeout, self._noAnswer
            )

    def _cancelAnswerTimer(self) -> None:
        if self._answerTimer is not None and self._answerTimer.active():
            self._answerTimer.cancel()
        self._answerTimer = None

    def _noAnswer(self) -> None:
        self._answerTimer = None
        self._channelFailed(
            f"the template did not answer within {self.requestTimeout}s"
        )

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
        """
        Ask the template to fork: the request is queued at once (with copies
        of the channels' descriptors) and the process is returned, pending
        until the template answers.
        """
        requests = self._requests
        if requests is None:
            raise ZygoteUnavailable(self._why)
        opened: list[int] = []
        try:
            outR, outW = os.pipe()
            opened += [outR, outW]
            errR, errW = os.pipe()
            opened += [errR, errW]
            opened.append(os.dup(amp))
            opened.append(os.dup(sync))
        except OSError as e:
            for fd in opened:
                os.close(fd)
            raise ZygoteUnavailable(f"cannot make the process's pipes: {e}") from e
        self._lastRequest += 1
        ident = self._lastRequest
        child = ForkedProcess(self._reactor, protocol, {1: outR, 2: errR})
        self._pending[ident] = child
        if self._answerTimer is None:
            self._answerTimer = self._reactor.callLater(
                self.requestTimeout, self._noAnswer
            )
        requests.send(
            {"op": "spawn", "id": ident, "args": args, "env": env, "cwd": cwd},
            [outW, errW, opened[4], opened[5]],
        )
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
        booting, self._booting = self._booting, None
        if booting is not None:
            # Begun and never waited for: closing its request channel ends
            # it as soon as it has preloaded.
            booting[1].close()
            booting[2].close()
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
