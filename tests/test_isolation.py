"""
Tests for process isolation: L{tcpext._isolation} (the network namespace),
L{tcpext.sandbox} (the child) and L{tcpext._supervisor.IsolatedExtension} (the
host), with real child processes over loopback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpext._isolation import (
    NamespaceUnavailable,
    _childEnvironment,
    checkNetworkNamespace,
    missingConfinement,
)
from tcpext._supervisor import IsolatedExtension, RestartPolicy
from tcpext._wire import EXIT_NO_NAMESPACE, Revoke
from tests.test_examples import twistdCommand


def _namespaceWorks() -> str | None:
    """
    L{None} if this system gives a process a network namespace, else why not.
    """
    try:
        checkNetworkNamespace()
    except NamespaceUnavailable as e:
        return str(e)
    return None


_NO_NAMESPACE = _namespaceWorks()

_NO_CONFINEMENT = "; ".join(missingConfinement()) or None
"""L{None} if this system can confine an extension's process (every layer of
C{--isolation process}), else what is missing."""


def _browserMissing() -> str | None:
    """
    L{None} if the child can build a C{browser}, else why not (while the
    modules it needs are still being written).
    """
    try:
        import tcpext.browser  # noqa: F401
    except ImportError as e:
        return str(e)
    return None


def _runChild(code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """
    Run C{code} in a fresh Python that can import tcpext.
    """
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_childEnvironment(),
    )


class NamespaceTests(SynchronousTestCase):
    """
    L{tcpext._isolation.enterNetworkNamespace} in real child processes.
    """

    if _NO_NAMESPACE is not None:
        skip = f"no network namespaces here: {_NO_NAMESPACE}"

    def listener(self) -> socket.socket:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(5)
        self.addCleanup(s.close)
        return s

    def test_onlyLoopback(self) -> None:
        """
        Inside the namespace only C{lo} exists, and it is up.
        """
        result = _runChild(
            """
            import fcntl, socket, struct
            from tcpext._isolation import enterNetworkNamespace, interfaceNames
            enterNetworkNamespace()
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            flags = struct.unpack("16sh", fcntl.ioctl(
                s.fileno(), 0x8913, struct.pack("16sh", b"lo", 0))[:18])[1]
            print(interfaceNames(), bool(flags & 1))
            """
        )
        self.assertEqual(result.stdout.strip(), "['lo'] True", result.stderr)

    def test_hostLoopbackUnreachable(self) -> None:
        """
        A raw C{connect} from inside the namespace to a server listening on
        the host's loopback fails, while the same connect from outside works.
        """
        server = self.listener()
        port = server.getsockname()[1]
        outside = socket.create_connection(("127.0.0.1", port), timeout=5)
        outside.close()
        result = _runChild(
            f"""
            import socket
            from tcpext._isolation import enterNetworkNamespace
            enterNetworkNamespace()
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=5)
            except OSError as e:
                print("failed", e.errno)
            else:
                print("connected")
            """
        )
        self.assertTrue(result.stdout.startswith("failed"), result)

    def test_childListenerUnreachable(self) -> None:
        """
        A port bound and listening inside the namespace cannot be reached from
        the host.
        """
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(
                    f"""
                    import socket, sys
                    from tcpext._isolation import enterNetworkNamespace
                    enterNetworkNamespace()
                    s = socket.socket()
                    s.bind(("127.0.0.1", {port}))
                    s.listen(5)
                    print("listening", flush=True)
                    sys.stdin.read()
                    """
                ),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_childEnvironment(),
        )
        self.addCleanup(child.wait, 10)
        self.addCleanup(child.stdin.close)  # type: ignore[union-attr]
        self.assertEqual(child.stdout.readline().strip(), "listening")  # type: ignore[union-attr]
        self.assertRaises(
            ConnectionRefusedError,
            socket.create_connection,
            ("127.0.0.1", port),
            5,
        )

    def test_cannotLeave(self) -> None:
        """
        Even as root, a process in the namespace cannot C{setns} back into
        its parent's network namespace (it holds no capability over it),
        whether the user namespace was created or, where it could not be,
        every capability was dropped instead.
        """
        for userNamespace in (True, False):
            result = _runChild(
                f"""
                import ctypes, os
                from tcpext._isolation import enterNetworkNamespace, interfaceNames
                enterNetworkNamespace(userNamespace={userNamespace})
                libc = ctypes.CDLL(None, use_errno=True)
                try:
                    fd = os.open("/proc/%d/ns/net" % os.getppid(), os.O_RDONLY)
                except OSError as e:
                    print("refused", interfaceNames())
                else:
                    if libc.setns(fd, 0x40000000) == 0:
                        print("escaped", interfaceNames())
                    else:
                        print("refused", interfaceNames())
                """
            )
            self.assertEqual(result.stdout.strip(), "refused ['lo']", result)

    def test_probe(self) -> None:
        """
        L{checkNetworkNamespace} succeeds here and fails, with the reason,
        when the probe cannot enter a namespace (simulated by an interpreter
        that exits with an error).
        """
        checkNetworkNamespace()
        script = self.mktemp()
        with open(script, "w") as f:
            f.write("#!/bin/sh\necho 'unshare: Operation not permitted' >&2\nexit 1\n")
        os.chmod(script, 0o755)
        error = self.assertRaises(
            NamespaceUnavailable, checkNetworkNamespace, python=script
        )
        self.assertIn("Operation not permitted", str(error))

    def test_refusalReported(self) -> None:
        """
        When the kernel refuses C{unshare}, L{NamespaceUnavailable} carries
        its reason (an invalid flag makes it refuse, harmlessly, in this
        process).
        """
        from tcpext._isolation import _unshare

        error = self.assertRaises(NamespaceUnavailable, _unshare, 0x7FFFFFFF)
        self.assertIn("Invalid argument", str(error))


# End to end: IsolatedExtension (host) + tcpext.sandbox (child).

_REPORTER = """
import gc
import os
import socket

from tcpext import sandbox
from tcpext._wire import Connect, Denied
from tcpext.permissions import PermissionDenied

_kept = []


async def report(browser, text):
    sock = await browser.TCPSocket.connect(host="127.0.0.1", port=REPORT)
    await sock.opened
    await sock.write((text + "\\n").encode())
    await sock.close()


def hostConnection():
    for thing in gc.get_objects():
        if isinstance(thing, sandbox.HostConnection):
            return thing
"""

_HOSTILE = (
    _REPORTER
    + """

async def main(browser):
    results = []
    try:
        socket.create_connection(("127.0.0.1", TARGET), timeout=5).close()
        results.append("raw-connect=connected")
    except OSError as e:
        results.append("raw-connect=failed")
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", FREE))
        s.listen(5)
        _kept.append(s)
        results.append("raw-listen=listening")
    except PermissionError:
        results.append("raw-listen=denied")
    try:
        await browser.TCPSocket.connect(host="127.0.0.1", port=TARGET)
        results.append("denied-connect=allowed")
    except PermissionDenied:
        results.append("denied-connect=denied")
    try:
        await hostConnection().callRemote(
            Connect, host="127.0.0.1", port=TARGET, timeout=5.0)
        results.append("bypass=allowed")
    except Denied:
        results.append("bypass=denied")
    server = await browser.TCPSocket.listen(host="127.0.0.1", port=LISTEN)
    results.append("listen=%d" % server.localPort)
    await report(browser, " ".join(results))
    async for sock in server.connections:
        data = await sock.read()
        await sock.write(data.upper())
        await sock.close()
"""
)

_ECHO = (
    _REPORTER
    + """

async def main(browser):
    server = await browser.TCPSocket.listen(host="127.0.0.1", port=LISTEN)
    await report(browser, "echo ready")
    async for sock in server.connections:
        async for chunk in sock:
            await sock.write(chunk)
        await sock.close()
"""
)

_CRASHER = (
    _REPORTER
    + """

async def main(browser):
    await report(browser, "started %d" % os.getpid())
    from twisted.internet import reactor
    reactor.callLater(0.1, os._exit, 9)
"""
)

_HOLDER = (
    _REPORTER
    + """

async def main(browser):
    sock = await browser.TCPSocket.connect(host="127.0.0.1", port=TARGET)
    await sock.opened
    await report(browser, "holding")
    try:
        await sock.closed
        await report(browser, "closed")
    except PermissionDenied as e:
        await report(browser, "revoked")
"""
)


class _Lines(Protocol):
    """
    Collects the lines one connection sends.
    """

    def __init__(self, sink: list[str], waiters: list[Any]) -> None:
        self.sink = sink
        self.waiters = waiters
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        self.sink.extend(line.decode() for line in lines)
        for check, d in list(self.waiters):
            if not d.called and check():
                d.callback(None)


class _Accepted(Protocol):
    """
    Counts connections and notices when they end.
    """

    def __init__(self, record: list[Any]) -> None:
        self.record = record
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.record.append(self)

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(None)


def _freePort() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class IsolatedExtensionTests(TestCase):
    """
    Real extension processes in their own network namespaces.
    """

    timeout = 90

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"
    elif _browserMissing() is not None:
        skip = f"the browser namespace is not importable: {_browserMissing()}"

    def setUp(self) -> None:
        self.lines: list[str] = []
        self.waiters: list[Any] = []
        port = reactor.listenTCP(  # type: ignore[attr-defined]
            0,
            Factory.forProtocol(lambda: _Lines(self.lines, self.waiters)),
            interface="127.0.0.1",
        )
        self.addCleanup(port.stopListening)
        self.report = port.getHost().port
        self.accepted: list[_Accepted] = []
        target = reactor.listenTCP(  # type: ignore[attr-defined]
            0,
            Factory.forProtocol(lambda: _Accepted(self.accepted)),
            interface="127.0.0.1",
        )
        self.addCleanup(target.stopListening)
        self.target = target.getHost().port
        self.events: list[dict[str, Any]] = []

    def waitFor(self, check: Any) -> defer.Deferred[None]:
        """
        Fire once C{check()} is true (checked as lines and log events
        arrive); the test's timeout bounds the wait.
        """
        d: defer.Deferred[None] = defer.Deferred()
        if check():
            d.callback(None)
        else:
            self.waiters.append((check, d))
        return d

    def observe(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        globalLogPublisher(event)
        for check, d in list(self.waiters):
            if not d.called and check():
                d.callback(None)

    def logged(self, text: str) -> bool:
        return any(text in formatEvent(e) for e in self.events)

    def extension(
        self,
        name: str,
        script: str,
        permissions: list[str],
        optional: tuple[str, ...] = (),
        **kw: Any,
    ) -> IsolatedExtension:
        """
        Write an extension folder and start it isolated.
        """
        path = os.path.join(self.mktemp(), name)
        os.makedirs(path)
        manifest = {
            "manifest_version": 2,
            "name": name,
            "version": "1.0",
            "permissions": permissions,
            "optional_permissions": list(optional),
            "background": {"scripts": ["background.py"]},
        }
        with open(os.path.join(path, "manifest.json"), "w") as f:
            json.dump(manifest, f)
        with open(os.path.join(path, "background.py"), "w") as f:
            f.write(script)
        kw.setdefault(
            "restart",
            RestartPolicy(initialDelay=0.05, startTimeout=30, stopTimeout=10),
        )
        service = IsolatedExtension(
            path=path,
            extensionId=name,
            manifest=manifest,
            reactor=reactor,
            log=Logger(namespace=f"tcpext.extension.{name}", observer=self.observe),
            **kw,
        )
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def echo(self, listen: int) -> IsolatedExtension:
        """
        Start an isolated echo server on C{listen}; it reports C{echo ready}.
        """
        return self.extension(
            "echo",
            _ECHO.replace("REPORT", str(self.report)).replace("LISTEN", str(listen)),
            [f"tcp-connect:127.0.0.1:{self.report}", f"tcp-listen:{listen}"],
        )

    async def dial(self, port: int, data: bytes) -> bytes:
        """
        Connect to C{port}, send C{data}, half-close, return the answer.
        """
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10)
        received: list[bytes] = []
        done: defer.Deferred[None] = defer.Deferred()

        class Client(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(data)  # type: ignore[union-attr]
                self.transport.loseWriteConnection()  # type: ignore[union-attr]

            def dataReceived(self, chunk: bytes) -> None:
                received.append(chunk)

            def connectionLost(self, reason: Any) -> None:
                done.callback(None)

        await endpoint.connect(Factory.forProtocol(Client))
        await done
        return b"".join(received)

    async def test_hostileExtension(self) -> None:
        """
        Under isolation a hostile extension's raw C{socket.connect} to the
        test's loopback server fails, a raw C{bind} is refused by the kernel
        (so nothing listens, inside or out), a connect outside its grants is
        denied (by its browser and, when it calls the broker directly, by
        the host), while the permitted connect (the report) and listen work
        and move data.
        """
        free, listen = _freePort(), _freePort()
        script = (
            _HOSTILE.replace("REPORT", str(self.report))
            .replace("TARGET", str(self.target))
            .replace("FREE", str(free))
            .replace("LISTEN", str(listen))
        )
        self.extension(
            "hostile",
            script,
            [f"tcp-connect:127.0.0.1:{self.report}", f"tcp-listen:{listen}"],
        )
        await self.waitFor(lambda: bool(self.lines))
        results = dict(item.split("=") for item in self.lines[0].split())
        self.assertEqual(
            results,
            {
                "raw-connect": "failed",
                "raw-listen": "denied",
                "denied-connect": "denied",
                "bypass": "denied",
                "listen": str(listen),
            },
        )
        self.assertEqual(self.accepted, [])
        self.assertTrue(self.logged("broker refused connect to 127.0.0.1"))
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", free), timeout=5)
        self.assertEqual(await self.dial(listen, b"permitted"), b"PERMITTED")

    async def test_crashRestartedOthersServe(self) -> None:
        """
        A child that crashes is logged and restarted with backoff, up to the
        bound, while another isolated extension keeps serving.
        """
        listen = _freePort()
        self.echo(listen)
        crasher = self.extension(
            "crasher",
            _CRASHER.replace("REPORT", str(self.report)),
            [f"tcp-connect:127.0.0.1:{self.report}"],
            restart=RestartPolicy(maxRestarts=2, initialDelay=0.05, maxDelay=0.2),
        )
        await self.waitFor(lambda: self.logged("gave up after 2 restarts"))
        started = [line for line in self.lines if line.startswith("started")]
        self.assertEqual(len(started), 3)
        self.assertEqual(len(set(started)), 3)
        self.assertEqual(crasher.starts, 3)
        self.assertTrue(self.logged("crashed (exit status 9); restarting"))
        await self.waitFor(lambda: "echo ready" in self.lines)
        self.assertEqual(await self.dial(listen, b"still here"), b"still here")

    async def test_hangAtStart(self) -> None:
        """
        A child that never says hello is killed after the start timeout and
        restarted, up to the bound.
        """
        script = os.path.abspath(self.mktemp())
        with open(script, "w") as f:
            f.write("#!/bin/sh\nexec sleep 60\n")
        os.chmod(script, 0o755)
        service = self.extension(
            "sleepy",
            "",
            [],
            python=script,
            restart=RestartPolicy(maxRestarts=1, initialDelay=0.05, startTimeout=0.5),
        )
        await self.waitFor(lambda: self.logged("gave up after 1 restarts"))
        self.assertEqual(service.starts, 2)
        self.assertTrue(self.logged("did not start within 0.5s"))

    async def test_blockedChildRestarted(self) -> None:
        """
        A child whose reactor is blocked (its C{main} never returns control)
        does not answer pings: it is killed and restarted; a healthy child
        pinged as often keeps running.
        """
        listen = _freePort()
        healthy = self.extension(
            "echo",
            _ECHO.replace("REPORT", str(self.report)).replace("LISTEN", str(listen)),
            [f"tcp-connect:127.0.0.1:{self.report}", f"tcp-listen:{listen}"],
            restart=RestartPolicy(pingInterval=0.05, pingTimeout=5),
        )
        script = (
            _REPORTER.replace("REPORT", str(self.report))
            + """

async def main(browser):
    import time
    await report(browser, "blocking %d" % os.getpid())
    time.sleep(60)
"""
        )
        blocked = self.extension(
            "blocker",
            script,
            [f"tcp-connect:127.0.0.1:{self.report}"],
            restart=RestartPolicy(
                maxRestarts=1, initialDelay=0.05, pingInterval=0.1, pingTimeout=0.5
            ),
        )
        await self.waitFor(lambda: self.logged("gave up after 1 restarts"))
        self.assertEqual(blocked.starts, 2)
        self.assertTrue(self.logged("did not answer a ping within 0.5s"))
        await self.waitFor(lambda: "echo ready" in self.lines)
        self.assertEqual(await self.dial(listen, b"alive"), b"alive")
        self.assertEqual(healthy.starts, 1)

    async def test_floodContained(self) -> None:
        """
        A child that writes garbage on its AMP channel is disconnected,
        killed and restarted; another extension keeps serving.
        """
        listen = _freePort()
        self.echo(listen)
        script = (
            _REPORTER.replace("REPORT", str(self.report))
            + """

async def main(browser):
    await report(browser, "flooding %d" % os.getpid())
    hostConnection().transport.write(b"\\xff" * 1000000)
"""
        )
        flooder = self.extension(
            "flooder",
            script,
            [f"tcp-connect:127.0.0.1:{self.report}"],
            restart=RestartPolicy(maxRestarts=1, initialDelay=0.05),
        )
        await self.waitFor(lambda: self.logged("gave up after 1 restarts"))
        self.assertEqual(flooder.starts, 2)
        self.assertEqual(len([x for x in self.lines if x.startswith("flooding")]), 2)
        await self.waitFor(lambda: "echo ready" in self.lines)
        self.assertEqual(await self.dial(listen, b"unbothered"), b"unbothered")

    async def test_revoke(self) -> None:
        """
        Revoking a grant from the host closes the child's socket that it
        allowed, and the host refuses new connects under it.
        """
        grant = f"tcp-connect:127.0.0.1:{self.target}"
        service = self.extension(
            "holder",
            _HOLDER.replace("REPORT", str(self.report)).replace(
                "TARGET", str(self.target)
            ),
            [f"tcp-connect:127.0.0.1:{self.report}"],
            optional=(grant,),
            operatorGrants=[grant],
        )
        await self.waitFor(lambda: "holding" in self.lines)
        self.assertEqual(len(self.accepted), 1)
        await service.revoke([grant])
        await self.accepted[0].lost
        await self.waitFor(lambda: "revoked" in self.lines)
        self.assertFalse(service.grants.allowsConnect("127.0.0.1", self.target))

    async def test_revokeEnforced(self) -> None:
        """
        A hostile child that ignores the host's L{Revoke} still loses the
        connection: the host shuts down its own copy of the socket.
        """
        grant = f"tcp-connect:127.0.0.1:{self.target}"
        script = (
            _REPORTER.replace("REPORT", str(self.report))
            + """

async def main(browser):
    hostConnection().onRevoke = lambda entries: None
    sock = await browser.TCPSocket.connect(host="127.0.0.1", port=TARGET)
    await sock.opened
    await report(browser, "holding")
    data = await sock.read()
    await report(browser, "eof=%r" % (data,))
""".replace("TARGET", str(self.target))
        )
        service = self.extension(
            "stubborn",
            script,
            [f"tcp-connect:127.0.0.1:{self.report}"],
            optional=(grant,),
            operatorGrants=[grant],
        )
        service.revokeGrace = 0.1
        await self.waitFor(lambda: "holding" in self.lines)
        await service.revoke([grant])
        await self.accepted[0].lost
        await self.waitFor(lambda: "eof=b''" in self.lines)
        self.assertTrue(self.logged("shut down connection to 127.0.0.1"))

    async def test_revokeEnforcedListener(self) -> None:
        """
        A hostile child that ignores the host's L{Revoke} of its listen
        grant still loses its listening socket: the host shuts down its own
        copy, and the port stops accepting.
        """
        listen = _freePort()
        grant = f"tcp-listen:{listen}"
        script = (
            _REPORTER.replace("REPORT", str(self.report))
            + """

async def main(browser):
    hostConnection().onRevoke = lambda entries: None
    server = await browser.TCPSocket.listen(host="127.0.0.1", port=LISTEN)
    await report(browser, "listening")
    async for sock in server.connections:
        async for chunk in sock:
            await sock.write(chunk)
        await sock.close()
""".replace("LISTEN", str(listen))
        )
        service = self.extension(
            "stubborn",
            script,
            [f"tcp-connect:127.0.0.1:{self.report}"],
            optional=(grant,),
            operatorGrants=[grant],
        )
        service.revokeGrace = 0.1
        await self.waitFor(lambda: "listening" in self.lines)
        self.assertEqual(await self.dial(listen, b"before"), b"before")
        await service.revoke([grant])
        await self.waitFor(lambda: self.logged("shut down listening socket"))
        from twisted.internet.error import ConnectionRefusedError as Refused

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", listen, timeout=10)
        with self.assertRaises(Refused):
            await endpoint.connect(Factory.forProtocol(Protocol))

    async def test_closedListenerReleased(self) -> None:
        """
        When the extension closes its server, the host closes its copy of
        the listening socket too: the port stops accepting.
        """
        listen = _freePort()
        script = (
            _REPORTER.replace("REPORT", str(self.report))
            + """

async def main(browser):
    server = await browser.TCPSocket.listen(host="127.0.0.1", port=LISTEN)
    await report(browser, "listening")
    async for sock in server.connections:
        await sock.write(b"bye")
        await sock.close()
        break
    await server.close()
    await report(browser, "closed")
""".replace("LISTEN", str(listen))
        )
        service = self.extension(
            "once",
            script,
            [f"tcp-connect:127.0.0.1:{self.report}", f"tcp-listen:{listen}"],
        )
        await self.waitFor(lambda: "listening" in self.lines)
        self.assertEqual(await self.dial(listen, b""), b"bye")
        await self.waitFor(lambda: "closed" in self.lines)
        broker = service.broker
        assert broker is not None
        await broker.callRemote(Revoke, permissions=[])
        # (The report connections may still be closing; the listener is not
        # held any more.)
        self.assertNotIn("listen", [h.kind for h in broker._held.values()])
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", listen), timeout=5)

    async def test_stopServiceStopsChild(self) -> None:
        """
        Stopping the service closes the extension's sockets and ends its
        process.
        """
        listen = _freePort()
        service = self.echo(listen)
        await self.waitFor(lambda: "echo ready" in self.lines)
        self.assertEqual(await self.dial(listen, b"up"), b"up")
        process = service._supervisor.process
        assert process is not None
        self.assertEqual(service.state, "running")
        await service.stopService()
        self.assertTrue(process.ended.called)
        self.assertIsNone(service._supervisor.process)
        self.assertEqual(service.state, "stopped")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", listen), timeout=5)
        # The child says so as an extension in the host's process would; the
        # host then sees its process end.
        self.assertTrue(self.logged("extension 'echo' stopped"))
        self.assertTrue(self.logged("ended (exit status 0)"))

    async def test_refusesUnconfined(self) -> None:
        """
        A child in C{process} mode that cannot enter a namespace exits with
        L{EXIT_NO_NAMESPACE}; the host reports it and does not restart it.
        """
        script = os.path.abspath(self.mktemp())
        with open(script, "w") as f:
            f.write(
                f"#!/bin/sh\necho 'unshare: refused' >&2\nexit {EXIT_NO_NAMESPACE}\n"
            )
        os.chmod(script, 0o755)
        service = self.extension("refused", "", [], python=script)
        await self.waitFor(lambda: self.logged("refused to run"))
        self.assertEqual(service.starts, 1)
        self.assertTrue(self.logged("unshare: refused"))

    async def test_mainFails(self) -> None:
        """
        A C{main} that raises is reported with the reason and not
        restarted.
        """
        service = self.extension(
            "broken", "def main(browser):\n    raise RuntimeError('no luck')\n", []
        )
        await self.waitFor(lambda: self.logged("not restarting"))
        self.assertTrue(self.logged("RuntimeError: no luck"))
        self.assertEqual(service.starts, 1)

    async def test_outputBurst(self) -> None:
        """
        An isolated extension that logs a burst past the output rate: the
        count of the lines dropped is logged within a second, and again when
        it exits; its last lines (its last words and the failure of its
        C{main}) arrive, with their namespace and level, before the host
        reports its end.
        """
        seen: list[tuple[float, dict[str, Any]]] = []
        real = self.observe

        def observe(event: dict[str, Any]) -> None:
            seen.append((reactor.seconds(), event))  # type: ignore[attr-defined]
            real(event)

        self.observe = observe  # type: ignore[method-assign]
        script = (
            "from twisted.internet import task\n"
            "from twisted.logger import Logger\n"
            "log = Logger(namespace='tcpext.extension.burst')\n"
            "async def main(browser):\n"
            "    await task.deferLater(browser.reactor, 0.5, lambda: None)\n"
            "    for i in range(1000):\n"
            "        log.info('first {i}', i=i)\n"
            "    await task.deferLater(browser.reactor, 2.5, lambda: None)\n"
            "    for i in range(1000):\n"
            "        log.info('second {i}', i=i)\n"
            "    log.warn('last words')\n"
            "    raise ValueError('the end')\n"
        )
        self.extension("burst", script, [], logRate=100)
        await self.waitFor(lambda: self.logged("not restarting"))
        texts = [formatEvent(e) for _, e in seen]

        def when(text: str) -> float:
            return next(t for t, e in seen if formatEvent(e) == text)

        reports = [t for t in texts if "lines of output from burst dropped" in t]
        self.assertEqual(len(reports), 2, reports)
        self.assertLess(when(reports[0]) - when("first 0"), 2.0)
        self.assertLess(texts.index(reports[0]), texts.index("second 0"))
        # At the end: the count, then the last lines, then the process's end.
        end = texts.index(reports[1])
        words = texts.index("last words")
        failed = next(
            i
            for i, t in enumerate(texts)
            if t.startswith("extension 'burst': main(browser) failed: ValueError")
        )
        stopped = next(i for i, t in enumerate(texts) if "not restarting" in t)
        self.assertLess(end, words)
        self.assertLess(words, failed)
        self.assertLess(failed, stopped)
        events = [e for _, e in seen]
        self.assertEqual(events[words]["log_namespace"], "tcpext.extension.burst")
        self.assertEqual(events[words]["log_level"].name, "warn")
        self.assertEqual(events[failed]["log_level"].name, "critical")
        self.assertIn("ValueError: the end", texts[failed])
        # Nothing lost but what was counted.
        counted = sum(int(t.split()[0]) for t in reports)
        logged = [t for t in texts if t.startswith(("first ", "second "))]
        self.assertEqual(len(logged) + counted, 2000)

    async def test_threadsWSGI(self) -> None:
        """
        The thread APIs work in a confined child: C{deferToThread} answers,
        and a WSGI application served by C{twisted.web.wsgi.WSGIResource}
        on the reactor's thread pool answers an HTTP request from a worker
        thread, which the kernel confines as it does the rest of the process
        (it cannot create a UNIX socket).
        """
        from twisted.web.client import Agent, readBody

        listen = _freePort()
        script = (
            _REPORTER.replace("REPORT", str(self.report))
            + """

import threading

from twisted.internet.threads import deferToThread
from twisted.web.server import Site
from twisted.web.wsgi import WSGIResource


def application(environ, start_response):
    try:
        socket.socket(socket.AF_UNIX)
        unix = "allowed"
    except PermissionError:
        unix = "refused"
    worker = threading.current_thread() is not threading.main_thread()
    start_response("200 OK", [("Content-Type", "text/plain")])
    text = "path=%s worker=%s unix=%s" % (environ["PATH_INFO"], worker, unix)
    return [text.encode()]


async def main(browser):
    reactor = browser.reactor
    answer = await deferToThread(lambda: 6 * 7)
    resource = WSGIResource(reactor, reactor.getThreadPool(), application)
    reactor.listenTCP(LISTEN, Site(resource), interface="127.0.0.1")
    await report(browser, "wsgi ready %d" % answer)
""".replace("LISTEN", str(listen))
        )
        self.extension(
            "wsgi",
            script,
            [f"tcp-connect:127.0.0.1:{self.report}", f"tcp-listen:{listen}"],
        )
        await self.waitFor(lambda: bool(self.lines))
        self.assertEqual(self.lines, ["wsgi ready 42"])
        response = await Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{listen}/hello".encode()
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(
            await readBody(response), b"path=/hello worker=True unix=refused"
        )

    async def test_treqGlobalReactor(self) -> None:
        """
        The global reactor in the child is the permission-checking one:
        treq with its default reactor fetches from a granted server, and a
        request to a server outside the grants never reaches it.
        """
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        class Hello(Resource):
            isLeaf = True
            hits = 0

            def render_GET(self, request: Any) -> bytes:
                Hello.hits += 1
                return b"hello from the host"

        granted = reactor.listenTCP(  # type: ignore[attr-defined]
            0, Site(Hello()), interface="127.0.0.1"
        )
        self.addCleanup(granted.stopListening)
        other = reactor.listenTCP(  # type: ignore[attr-defined]
            0, Site(Hello()), interface="127.0.0.1"
        )
        self.addCleanup(other.stopListening)
        script = (
            _REPORTER.replace("REPORT", str(self.report))
            + """

async def main(browser):
    import treq
    from twisted.internet import reactor
    assert reactor is browser.reactor, reactor
    response = await treq.get("http://127.0.0.1:GRANTED/")
    body = await response.text()
    try:
        await treq.get("http://127.0.0.1:OTHER/")
        outcome = "reached"
    except Exception as e:
        outcome = "failed"
    await report(browser, body + " / " + outcome)
""".replace("GRANTED", str(granted.getHost().port)).replace(
                "OTHER", str(other.getHost().port)
            )
        )
        self.extension(
            "fetcher",
            script,
            [
                f"tcp-connect:127.0.0.1:{self.report}",
                f"tcp-connect:127.0.0.1:{granted.getHost().port}",
            ],
        )
        await self.waitFor(lambda: bool(self.lines))
        self.assertEqual(self.lines, ["hello from the host / failed"])
        self.assertEqual(Hello.hits, 1)

    async def test_localhostNameGrants(self) -> None:
        """
        A C{*.app.localhost} name grant works isolated as in-process: the
        extension reaches the test's loopback server by that name through
        C{browser.TCPSocket}, through C{browser.reactor.connectTCP} and
        through a C{HostnameEndpoint} on C{browser.reactor} (the child maps
        the name to loopback itself and tells the host which name each
        connect is for).  Calling the broker directly with a C{localhost}
        name that is not granted gets nothing.
        """
        script = (
            _REPORTER.replace("REPORT", str(self.report))
            + """

async def main(browser):
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import HostnameEndpoint
    from twisted.internet.protocol import ClientFactory, Factory, Protocol

    results = []
    sock = await browser.TCPSocket.connect(host="app.localhost", port=TARGET)
    await sock.opened
    await sock.close()
    results.append("tcpsocket=ok")

    made = Deferred()

    class Made(Protocol):
        def connectionMade(self):
            made.callback(None)
            self.transport.loseConnection()

    class Failed(ClientFactory):
        protocol = Made

        def clientConnectionFailed(self, connector, reason):
            made.errback(reason)

    browser.reactor.connectTCP("web.app.localhost", TARGET, Failed())
    await made
    results.append("connectTCP=ok")

    endpoint = HostnameEndpoint(browser.reactor, "app.localhost", TARGET)
    protocol = await endpoint.connect(Factory.forProtocol(Protocol))
    protocol.transport.loseConnection()
    results.append("endpoint=ok")

    try:
        await hostConnection().callRemote(
            Connect, host="127.0.0.1", port=TARGET, timeout=5.0,
            name="other.localhost")
        results.append("bypass=allowed")
    except Denied:
        results.append("bypass=denied")
    await report(browser, " ".join(results))
""".replace("TARGET", str(self.target))
        )
        self.extension(
            "named",
            script,
            [
                f"tcp-connect:127.0.0.1:{self.report}",
                f"tcp-connect:*.app.localhost:{self.target}",
            ],
        )
        await self.waitFor(lambda: bool(self.lines))
        self.assertEqual(
            self.lines,
            ["tcpsocket=ok connectTCP=ok endpoint=ok bypass=denied"],
        )
        self.assertEqual(len(self.accepted), 3)
        self.assertTrue(self.logged("(for other.localhost)"))

    async def test_resourceLimits(self) -> None:
        """
        Resource limits given to L{IsolatedExtension} are set in the child
        before the extension runs.
        """
        script = (
            _REPORTER.replace("REPORT", str(self.report))
            + """

async def main(browser):
    import resource
    await report(browser, "%d %d" % resource.getrlimit(resource.RLIMIT_NOFILE))
"""
        )
        self.extension(
            "limited",
            script,
            [f"tcp-connect:127.0.0.1:{self.report}"],
            limits={"RLIMIT_NOFILE": 100},
        )
        await self.waitFor(lambda: bool(self.lines))
        self.assertEqual(self.lines, ["100 100"])

    async def test_runtimeRequestAndRemove(self) -> None:
        """
        C{browser.permissions.request} in the child is answered by the
        host's prompt; the host grants and persists it, and the connect then
        works; C{remove} withdraws it in the host too.
        """
        grant = f"tcp-connect:127.0.0.1:{self.target}"
        asked: list[list[str]] = []
        script = (
            _REPORTER.replace("REPORT", str(self.report))
            + """

async def main(browser):
    ok = await browser.permissions.request({"permissions": ["GRANT"]})
    sock = await browser.TCPSocket.connect(host="127.0.0.1", port=TARGET)
    await sock.opened
    await report(browser, "request=%s" % ok)
    await browser.permissions.remove({"permissions": ["GRANT"]})
    try:
        await hostConnection().callRemote(
            Connect, host="127.0.0.1", port=TARGET, timeout=5.0)
        await report(browser, "after-remove=allowed")
    except Denied:
        await report(browser, "after-remove=denied")
""".replace("GRANT", grant).replace("TARGET", str(self.target))
        )
        saved: dict[str, list[str]] = {}

        class Store:
            def load(self, extensionId: str) -> list[str]:
                return list(saved.get(extensionId, ()))

            def save(self, extensionId: str, entries: list[str]) -> None:
                saved[extensionId] = list(entries)

        def prompt(extensionId: str, permissions: list[str]) -> bool:
            asked.append(permissions)
            return True

        service = self.extension(
            "asker",
            script,
            [f"tcp-connect:127.0.0.1:{self.report}"],
            optional=(grant,),
            prompt=prompt,
            grantStore=Store(),
        )
        await self.waitFor(lambda: len(self.lines) == 2)
        self.assertEqual(self.lines, ["request=True", "after-remove=denied"])
        self.assertEqual(asked, [[grant]])
        self.assertEqual(saved["asker"], [])
        self.assertFalse(service.grants.allowsConnect("127.0.0.1", self.target))
        self.assertEqual(len(self.accepted), 1)


class _Twistd(ProcessProtocol):
    """
    Collects a C{twistd} process's output and notices its end.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value)


class TwistdIsolationTests(TestCase):
    """
    C{twistd -n tcpext --isolation process} as users run it.
    """

    timeout = 90

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"
    elif _browserMissing() is not None:
        skip = f"the browser namespace is not importable: {_browserMissing()}"

    async def test_twistdProcessIsolation(self) -> None:
        """
        Under C{twistd tcpext --isolation process} an extension runs in its
        own process and network namespace: its raw connect to the host's
        loopback fails while its granted connect works; stopping twistd ends
        the extension's process.
        """
        lines: list[str] = []
        waiters: list[Any] = []
        port = reactor.listenTCP(  # type: ignore[attr-defined]
            0,
            Factory.forProtocol(lambda: _Lines(lines, waiters)),
            interface="127.0.0.1",
        )
        self.addCleanup(port.stopListening)
        reportPort = port.getHost().port
        base = os.path.abspath(self.mktemp())
        path = os.path.join(base, "probe")
        os.makedirs(path)
        with open(os.path.join(path, "manifest.json"), "w") as f:
            json.dump(
                {
                    "manifest_version": 2,
                    "name": "probe",
                    "version": "1.0",
                    "permissions": [f"tcp-connect:127.0.0.1:{reportPort}"],
                    "background": {"scripts": ["background.py"]},
                },
                f,
            )
        with open(os.path.join(path, "background.py"), "w") as f:
            f.write(
                _REPORTER.replace("REPORT", str(reportPort))
                + """

async def main(browser):
    try:
        socket.create_connection(("127.0.0.1", REPORT), timeout=5).close()
        raw = "connected"
    except OSError:
        raw = "failed"
    await report(browser, "pid=%d raw=%s" % (os.getpid(), raw))
""".replace("REPORT", str(reportPort))
            )
        protocol = _Twistd()
        env = _childEnvironment()
        process = reactor.spawnProcess(  # type: ignore[attr-defined]
            protocol,
            sys.executable,
            twistdCommand(
                "-",
                os.path.join(base, "state"),
                "--extension",
                path,
                "--isolation",
                "process",
                # No console: its default socket in this deep scratch
                # folder would pass the UNIX socket path limit.
                "--admin",
                "none",
            ),
            env=env,
            path=base,
        )

        def stop() -> defer.Deferred[Any]:
            if process.pid is not None:
                process.signalProcess("KILL")
            return protocol.ended

        self.addCleanup(stop)
        d: defer.Deferred[None] = defer.Deferred()
        waiters.append((lambda: bool(lines), d))
        await d
        fields = dict(item.split("=") for item in lines[0].split())
        self.assertEqual(fields["raw"], "failed", protocol.output)
        child = int(fields["pid"])
        self.assertNotEqual(child, process.pid)
        process.signalProcess("TERM")
        await protocol.ended
        self.assertIn(b"(confined: network namespace, Landlock ABI ", protocol.output)
        self.assertIn(
            b"[tcpext.extension.probe#info] extension 'probe' stopped\n",
            protocol.output,
        )
        self.assertIn(
            f"extension process {child} ended (exit status 0)".encode(),
            protocol.output,
        )
        with self.assertRaises(ProcessLookupError):
            os.kill(child, 0)

    def test_benchmarkSmoke(self) -> None:
        """
        C{benchmarks/bench_isolation.py} runs every mode (in-process,
        isolated afresh, forked from the template) at a tiny size and prints
        them side by side.
        """
        script = os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            "benchmarks",
            "bench_isolation.py",
        )
        result = subprocess.run(
            [sys.executable, script, "--total", "1", "--rounds", "1"],
            capture_output=True,
            text=True,
            timeout=120,
            env=_childEnvironment(),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("in-process", result.stdout)
        self.assertIn("isolated / in-process:", result.stdout)
        self.assertIn("forked / in-process:", result.stdout)
