"""
Tests for the kernel confinement of an isolated extension's process:
L{tcpext._landlock}, L{tcpext._seccomp} and L{tcpext._isolation.confine},
each layer alone in a real child process, then the whole of it against
hostile extensions run by a real C{twistd tcpext --isolation process}.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tcpext import _isolation, _landlock, _seccomp
from tcpext._isolation import (
    ConfinementUnavailable,
    _childEnvironment,
    checkConfinement,
    missingConfinement,
)
from tests._extensions import extensionWithScript
from tests._folders import shortFolder
from tests.test_examples import (
    STARTUP_TIMEOUT,
    Twistd,
    assertEchoes,
    canConnect,
    copyExamples,
    freePort,
    readLine,
)
from tests.test_isolation import _NO_CONFINEMENT

_SYSCALLS = """
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def outcome(function, *args):
    try:
        function(*args)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return "ok"


def raw(result):
    if result >= 0:
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), "?")


class sockaddr(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("data", ctypes.c_char * 14)]
"""
"""
What the code of every child of these tests may use: C{libc} (its
C{syscall} returning a C{long}), C{outcome(function, *args)} and
C{raw(result)} (C{"ok"} or the errno's name), and C{sockaddr} (an empty
one is C{AF_UNSPEC}).  It needs C{ctypes} and C{errno} imported, and has no
braces (it is part of a C{str.format} template too).
"""

_PRELUDE = (
    """
import ctypes, errno, os, socket, sys
from tcpext import _isolation, _landlock, _seccomp
"""
    + _SYSCALLS
    + """

def disconnect(fd):
    return raw(libc.connect(fd, ctypes.byref(sockaddr(0)), ctypes.sizeof(sockaddr)))
"""
)


def _runChild(
    code: str, passFds: tuple[int, ...] = (), timeout: float = 60
) -> dict[str, str]:
    """
    Run C{code} (after L{_PRELUDE}) in a fresh Python that can import
    tcpext; it prints one JSON object, which is returned.
    """
    result = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_childEnvironment(),
        pass_fds=passFds,
    )
    try:
        answer: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise AssertionError(f"the child printed no result: {result!r}") from None
    return answer


def _listener(case: SynchronousTestCase) -> socket.socket:
    """
    A TCP server socket on 127.0.0.1 (a free port), closed after the test.
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(5)
    s.settimeout(1.0)
    case.addCleanup(s.close)
    return s


def _assertNothingAccepted(case: SynchronousTestCase, server: socket.socket) -> None:
    """
    No connection is waiting on C{server} (checked for a second).
    """
    ready, _, _ = select.select([server], [], [], 1.0)
    case.assertEqual(ready, [], "a connection reached the ungranted listener")


def _sacrificialProcess(case: SynchronousTestCase) -> subprocess.Popen[bytes]:
    """
    A process of the test's that a confined child must not be able to
    signal; killed after the test.
    """
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])

    def stop() -> None:
        process.kill()
        process.wait(timeout=30)

    case.addCleanup(stop)
    return process


class LandlockTests(SynchronousTestCase):
    """
    L{tcpext._landlock.restrictSelf} alone, in a child process that shares
    the host's network namespace (so what Landlock refuses would otherwise
    succeed).
    """

    if _landlock.abiVersion() < _landlock.NEEDED_ABI:
        skip = f"Landlock ABI {_landlock.NEEDED_ABI} is not offered here"

    def test_abiVersion(self) -> None:
        """
        L{abiVersion} reports the kernel's ABI as a positive number here.
        """
        self.assertGreaterEqual(_landlock.abiVersion(), _landlock.NEEDED_ABI)

    def test_tooOld(self) -> None:
        """
        Where the kernel offers an ABI below L{NEEDED_ABI}, L{restrictSelf}
        raises, naming both versions, and restricts nothing.
        """
        self.patch(_landlock, "abiVersion", lambda: 3)
        error = self.assertRaises(
            _landlock.LandlockUnavailable, _landlock.restrictSelf, None
        )
        self.assertEqual(
            str(error), "Landlock ABI 6 is needed; this kernel offers ABI 3"
        )
        self.patch(_landlock, "abiVersion", lambda: 0)
        error = self.assertRaises(
            _landlock.LandlockUnavailable, _landlock.restrictSelf, None
        )
        self.assertIn("offers none", str(error))

    def test_passedSocketNotReaimed(self) -> None:
        """
        A connected TCP socket handed to the restricted process can be
        disconnected (C{AF_UNSPEC}: Landlock lets that through) but not
        connected elsewhere, neither with C{connect} nor with TCP Fast
        Open's C{sendto(MSG_FASTOPEN)}; a new socket cannot bind or
        connect either.  The other listener receives nothing.
        """
        granted, other = _listener(self), _listener(self)
        passed = socket.create_connection(granted.getsockname(), timeout=10)
        self.addCleanup(passed.close)
        host, port = other.getsockname()
        answer = _runChild(
            f"""
            import json
            _isolation._noNewPrivileges()
            _landlock.restrictSelf(None)
            s = socket.socket(fileno={passed.fileno()})
            result = {{"unspec": disconnect(s.fileno())}}
            result["connect"] = outcome(s.connect, ({host!r}, {port}))
            result["fastopen"] = outcome(
                s.sendto, b"x", socket.MSG_FASTOPEN, ({host!r}, {port}))
            new = socket.socket()
            result["new-fastopen"] = outcome(
                new.sendto, b"x", socket.MSG_FASTOPEN, ({host!r}, {port}))
            result["new-connect"] = outcome(new.connect, ({host!r}, {port}))
            result["bind"] = outcome(socket.socket().bind, ("127.0.0.1", 0))
            print(json.dumps(result))
            """,
            passFds=(passed.fileno(),),
        )
        self.assertEqual(
            answer,
            {
                "unspec": "ok",
                "connect": "EACCES",
                "fastopen": "EACCES",
                "new-fastopen": "EACCES",
                "new-connect": "EACCES",
                "bind": "EACCES",
            },
        )
        _assertNothingAccepted(self, other)

    def test_filesystem(self) -> None:
        """
        The restricted process reads anywhere, writes only beneath its
        scratch folder and to C{/dev/null}: it cannot create, change,
        rename into or remove anything elsewhere.
        """
        outside = os.path.abspath(self.mktemp())
        os.makedirs(outside)
        existing = os.path.join(outside, "existing")
        with open(existing, "w") as f:
            f.write("before")
        scratch = os.path.abspath(self.mktemp())
        os.makedirs(scratch)
        answer = _runChild(
            f"""
            import json
            _isolation._noNewPrivileges()
            _landlock.restrictSelf({scratch!r})
            outside, existing, scratch = {outside!r}, {existing!r}, {scratch!r}
            result = {{}}
            result["read"] = open(existing).read()
            result["create"] = outcome(open, outside + "/new", "w")
            result["append"] = outcome(open, existing, "a")
            result["mkdir"] = outcome(os.mkdir, outside + "/folder")
            result["remove"] = outcome(os.unlink, existing)
            with open(scratch + "/mine", "w") as f:
                f.write("scratch")
            result["scratch"] = open(scratch + "/mine").read()
            result["rename-out"] = outcome(os.rename, scratch + "/mine",
                                           outside + "/moved")
            result["link-out"] = outcome(os.link, existing, scratch + "/hard")
            with open("/dev/null", "w") as f:
                result["devnull"] = str(f.write("x"))
            print(json.dumps(result))
            """
        )
        self.assertEqual(
            answer,
            {
                "read": "before",
                "create": "EACCES",
                "append": "EACCES",
                "mkdir": "EACCES",
                "remove": "EACCES",
                "scratch": "scratch",
                "rename-out": "EACCES",
                "link-out": "EXDEV",
                "devnull": "1",
            },
        )
        self.assertEqual(sorted(os.listdir(outside)), ["existing"])
        with open(existing) as f:
            self.assertEqual(f.read(), "before")

    def test_signalsTraceAbstractSockets(self) -> None:
        """
        The restricted process cannot signal, trace or read the memory of
        a process outside its domain, nor connect to an abstract UNIX
        socket bound outside it; it can still signal its own children.
        """
        victim = _sacrificialProcess(self)
        abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(abstract.close)
        name = f"\0tcpext-test-{os.getpid()}-{time.monotonic_ns()}"
        abstract.bind(name)
        abstract.listen(1)
        answer = _runChild(
            f"""
            import json, signal, subprocess
            _isolation._noNewPrivileges()
            _landlock.restrictSelf(None)
            victim = {victim.pid}
            result = {{}}
            result["kill"] = outcome(os.kill, victim, signal.SIGKILL)
            result["kill-parent"] = outcome(os.kill, os.getppid(), 0)
            result["mem"] = outcome(open, "/proc/%d/mem" % victim, "rb")
            result["ptrace"] = raw(libc.ptrace(16, victim, 0, 0))
            u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            result["abstract"] = outcome(u.connect, {name!r})
            own = subprocess.Popen([sys.executable, "-c", "input()"],
                                   stdin=subprocess.PIPE)
            result["own-child"] = outcome(os.kill, own.pid, signal.SIGKILL)
            own.wait()
            print(json.dumps(result))
            """
        )
        self.assertEqual(
            answer,
            {
                "kill": "EPERM",
                "kill-parent": "EPERM",
                "mem": "EACCES",
                "ptrace": "EPERM",
                "abstract": "EPERM",
                "own-child": "ok",
            },
        )
        self.assertIsNone(victim.poll())


class SeccompTests(SynchronousTestCase):
    """
    L{tcpext._seccomp.installFilter} alone, in a child process.
    """

    if _seccomp.seccompMissing() is not None:
        skip = f"seccomp is unavailable here: {_seccomp.seccompMissing()}"

    def test_unavailable(self) -> None:
        """
        Without the binding, L{seccompMissing} says so and L{installFilter}
        raises L{SeccompUnavailable} (filtering nothing).
        """
        saved = sys.modules.get("pyseccomp")
        sys.modules["pyseccomp"] = None  # type: ignore[assignment]

        def restore() -> None:
            if saved is None:
                del sys.modules["pyseccomp"]
            else:
                sys.modules["pyseccomp"] = saved

        self.addCleanup(restore)
        self.assertIn("pyseccomp", _seccomp.seccompMissing() or "")
        self.assertRaises(_seccomp.SeccompUnavailable, _seccomp.installFilter)

    def test_refused(self) -> None:
        """
        Once filtered, the process cannot C{connect()} anything (a TCP
        address, a pathname UNIX socket, the C{AF_UNSPEC} disconnect of a
        passed socket), create a UNIX socket (so no datagram C{sendto} to a
        socket file) or a datagram socket pair, or use io_uring, ptrace,
        C{process_vm_readv}, C{unshare}, C{setns}, a namespace C{clone},
        C{mount}, C{umount2}, C{chroot}, C{bpf}, C{perf_event_open},
        C{userfaultfd}, the key ring (C{keyctl}, C{add_key},
        C{request_key}) or C{TIOCSTI}; each refusal is C{EPERM}, and
        C{clone3} is C{ENOSYS}.
        A family number with high bits set (read as C{AF_UNIX} by the
        kernel) is refused too.
        """
        granted = _listener(self)
        passed = socket.create_connection(granted.getsockname(), timeout=10)
        self.addCleanup(passed.close)
        path = os.path.join(shortFolder(self), "unix.sock")
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(unix.close)
        unix.bind(path)
        unix.listen(1)
        import pyseccomp

        def number(name: str) -> int:
            return int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))

        answer = _runChild(
            f"""
            import json
            _isolation._noNewPrivileges()
            unixClient = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            _seccomp.installFilter()
            passed = socket.socket(fileno={passed.fileno()})
            result = {{}}
            result["unspec"] = disconnect(passed.fileno())
            result["tcp"] = outcome(socket.socket().connect, ("127.0.0.1", 9))
            result["unix-path"] = outcome(unixClient.connect, {path!r})
            result["unix-socket"] = outcome(socket.socket, socket.AF_UNIX)
            result["unix-dgram"] = outcome(
                socket.socket, socket.AF_UNIX, socket.SOCK_DGRAM)
            result["high-bits"] = raw(libc.syscall(
                {number("socket")}, ctypes.c_long(0x100000001), 1, 0))
            result["dgram-pair"] = outcome(
                socket.socketpair, socket.AF_UNIX, socket.SOCK_DGRAM)
            result["stream-pair"] = outcome(socket.socketpair)
            result["vsock"] = outcome(socket.socket, 40, socket.SOCK_STREAM)
            result["io_uring"] = raw(libc.syscall(
                {number("io_uring_setup")}, 8, ctypes.create_string_buffer(256)))
            result["ptrace"] = raw(libc.ptrace(16, os.getppid(), 0, 0))
            result["vm_readv"] = raw(libc.syscall(
                {number("process_vm_readv")}, os.getppid(), 0, 0, 0, 0, 0))
            result["unshare"] = raw(libc.unshare(0x10000000))
            result["clone-ns"] = raw(libc.syscall(
                {number("clone")}, 0x40000000 | 17, 0, 0, 0, 0))
            result["clone3"] = raw(libc.syscall({number("clone3")}, 0, 0))
            result["bpf"] = raw(libc.syscall({number("bpf")}, 0, 0, 0))
            # Each of these fails harmlessly without the filter (a null
            # pointer, a bad descriptor or flag, a path that does not
            # exist), with an error other than EPERM.
            result["perf_event_open"] = raw(libc.syscall(
                {number("perf_event_open")}, None, 0, -1, -1, 0))
            result["userfaultfd"] = raw(libc.syscall({number("userfaultfd")}, 3))
            result["keyctl"] = raw(libc.syscall({number("keyctl")}, 9999, 0, 0))
            result["add_key"] = raw(libc.syscall(
                {number("add_key")}, None, None, None, 0, 0))
            result["request_key"] = raw(libc.syscall(
                {number("request_key")}, None, None, None, 0))
            result["setns"] = raw(libc.syscall({number("setns")}, -1, 0))
            result["mount"] = raw(libc.mount(
                b"none", b"/nonexistent/tcpext", b"tmpfs", 0, None))
            result["umount2"] = raw(libc.umount2(b"/nonexistent/tcpext", 0))
            result["chroot"] = raw(libc.chroot(b"/nonexistent/tcpext"))
            result["tiocsti"] = raw(libc.ioctl(0, 0x5412, ctypes.c_char_p(b"x")))
            print(json.dumps(result))
            """,
            passFds=(passed.fileno(),),
        )
        self.assertEqual(
            answer,
            {
                "unspec": "EPERM",
                "tcp": "EPERM",
                "unix-path": "EPERM",
                "unix-socket": "EPERM",
                "unix-dgram": "EPERM",
                "high-bits": "EPERM",
                "dgram-pair": "EPERM",
                "stream-pair": "ok",
                "vsock": "EPERM",
                "io_uring": "EPERM",
                "ptrace": "EPERM",
                "vm_readv": "EPERM",
                "unshare": "EPERM",
                "clone-ns": "EPERM",
                "clone3": "ENOSYS",
                "bpf": "EPERM",
                "perf_event_open": "EPERM",
                "userfaultfd": "EPERM",
                "keyctl": "EPERM",
                "add_key": "EPERM",
                "request_key": "EPERM",
                "setns": "EPERM",
                "mount": "EPERM",
                "umount2": "EPERM",
                "chroot": "EPERM",
                "tiocsti": "EPERM",
            },
        )
        unix.settimeout(0)
        self.assertRaises(BlockingIOError, unix.accept)

    def test_threadsAndProcesses(self) -> None:
        """
        Threads (C{clone} without namespace flags, after C{clone3} fails
        with C{ENOSYS}), a thread pool, C{fork} and running a program work
        in a filtered process, and a thread is filtered as its parent is.
        """
        answer = _runChild(
            """
            import json, subprocess, threading
            from concurrent.futures import ThreadPoolExecutor
            _isolation._noNewPrivileges()
            _seccomp.installFilter()
            result = {}
            seen = []
            def work():
                seen.append(outcome(socket.socket, socket.AF_UNIX))
            t = threading.Thread(target=work)
            t.start()
            t.join()
            result["thread"] = seen[0]
            with ThreadPoolExecutor(4) as pool:
                result["pool"] = sum(pool.map(lambda n: n * n, range(10)))
            def forkOnce():
                pid = os.fork()
                if pid == 0:
                    os._exit(7)
                os.waitpid(pid, 0)
            result["fork"] = outcome(forkOnce)
            result["exec"] = outcome(subprocess.run, ["true"])
            result["spawn"] = outcome(
                os.posix_spawn, "/bin/true", ["true"], dict(os.environ))
            print(json.dumps(result))
            """
        )
        self.assertEqual(
            answer,
            {
                "thread": "EPERM",
                "pool": 285,
                "fork": "EPERM",
                "exec": "EPERM",
                "spawn": "EPERM",
            },
        )


class ConfineTests(SynchronousTestCase):
    """
    L{tcpext._isolation.confine} (every layer) and the capability check.
    """

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"

    def test_allLayers(self) -> None:
        """
        L{confine} applies the three layers and says so; the confined
        process sees only C{lo}, cannot reach the host's loopback, and
        writes only to its scratch folder.
        """
        server = _listener(self)
        scratch = os.path.abspath(self.mktemp())
        os.makedirs(scratch)
        answer = _runChild(
            f"""
            import json
            c = _isolation.confine({scratch!r})
            result = {{"active": c.active, "missing": c.missing,
                       "complete": c.complete}}
            result["interfaces"] = _isolation.interfaceNames()
            result["connect"] = outcome(
                socket.socket().connect, {server.getsockname()!r})
            result["write"] = outcome(open, {scratch!r} + "/../escape", "w")
            result["scratch"] = outcome(open, {scratch!r} + "/mine", "w")
            print(json.dumps(result))
            """
        )
        self.assertEqual(
            answer,
            {
                "active": [
                    "network namespace",
                    f"Landlock ABI {_landlock.abiVersion()}",
                    "seccomp",
                ],
                "missing": [],
                "complete": True,
                "interfaces": ["lo"],
                "connect": "EPERM",
                "write": "EACCES",
                "scratch": "ok",
            },
        )
        _assertNothingAccepted(self, server)

    def test_partial(self) -> None:
        """
        A layer that cannot be applied is listed as missing, with the
        reason, and the others still are.
        """
        answer = _runChild(
            """
            import json
            _landlock.abiVersion = lambda: 5
            c = _isolation.confine(None)
            print(json.dumps({"active": c.active, "missing": c.missing}))
            """
        )
        self.assertEqual(answer["active"], ["network namespace", "seccomp"])
        self.assertEqual(
            answer["missing"],
            ["Landlock (Landlock ABI 6 is needed; this kernel offers ABI 5)"],
        )

    def test_probe(self) -> None:
        """
        Here nothing is missing: L{missingConfinement} is empty,
        L{checkConfinement} passes, and C{python -m tcpext._isolation}
        prints the layers in one line with exit status 0.
        """
        self.assertEqual(missingConfinement(), [])
        checkConfinement()
        result = subprocess.run(
            [sys.executable, "-m", "tcpext._isolation"],
            capture_output=True,
            text=True,
            timeout=60,
            env=_childEnvironment(),
        )
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(
            result.stdout,
            "can confine: network namespace, "
            f"Landlock ABI {_landlock.abiVersion()}, seccomp\n",
        )


class ForkedProbeTests(SynchronousTestCase):
    """
    The probe run in a fork of the caller (L{_isolation._forkProbe}), the
    way L{missingConfinement} runs it when no interpreter is named.
    """

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"

    def test_sameAnswer(self) -> None:
        """
        The forked probe answers as a fresh interpreter does, and confines
        only the forked process (this one can still bind, which Landlock
        would refuse).
        """
        forked = _isolation._forkProbe(60, ["--json"])
        assert forked is not None
        fresh = _isolation._runProbe(sys.executable, 60, "--json")
        self.assertEqual(forked.returncode, 0, forked)
        self.assertEqual(json.loads(forked.stdout), json.loads(fresh.stdout))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))

    def test_noNewInterpreter(self) -> None:
        """
        L{missingConfinement} and L{checkNetworkNamespace} without an
        interpreter start none: they answer even where none can start.
        """

        def noInterpreter(*args: Any, **kw: Any) -> Any:
            raise OSError("no interpreter here")

        self.patch(subprocess, "run", noInterpreter)
        self.assertEqual(missingConfinement(), [])
        _isolation.checkNetworkNamespace()

    def test_notWithThreads(self) -> None:
        """
        With another thread running, the probe is not forked (a fork copies
        only the calling thread): L{_isolation._forkProbe} says so with
        L{None}, and L{missingConfinement} runs a fresh interpreter.
        """
        import threading

        done = threading.Event()
        thread = threading.Thread(target=done.wait, args=(60,))
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(done.set)
        self.assertIsNone(_isolation._forkProbe(60, ["--json"]))
        self.assertEqual(missingConfinement(), [])


class ProbeReportTests(SynchronousTestCase):
    """
    How L{missingConfinement} and L{checkConfinement} read the probe's
    answer (simulated by interpreters that print what a probe would).
    """

    def fakePython(self, stdout: str, status: int, stderr: str = "") -> str:
        """
        An executable that prints C{stdout} and C{stderr} and exits with
        C{status}, whatever its arguments.
        """
        script = os.path.abspath(self.mktemp())
        with open(script, "w") as f:
            f.write(
                "#!/bin/sh\n"
                f"printf '%s' '{stdout}'\n"
                f"printf '%s' '{stderr}' >&2\n"
                f"exit {status}\n"
            )
        os.chmod(script, 0o755)
        return script

    def test_everyMissingPieceInOneLine(self) -> None:
        """
        Every missing layer the probe names is returned, and
        L{checkConfinement} raises with all of them in one line.
        """
        missing = [
            "network namespace (unshare(0x50000000) failed: Operation not "
            "permitted (errno 1))",
            "Landlock (Landlock ABI 6 is needed; this kernel offers none)",
            "seccomp (libseccomp cannot be loaded: Unable to find libseccomp)",
        ]
        python = self.fakePython(json.dumps({"active": [], "missing": missing}), 1)
        self.assertEqual(missingConfinement(python), missing)
        error = self.assertRaises(ConfinementUnavailable, checkConfinement, python)
        self.assertEqual(str(error), "; ".join(missing))
        self.assertNotIn("\n", str(error))

    def test_brokenProbe(self) -> None:
        """
        A probe that fails without an answer, or cannot run at all, counts
        as missing confinement, with its last line of error output.
        """
        python = self.fakePython("", 1, "Traceback...\nImportError: no attrs")
        self.assertEqual(
            missingConfinement(python),
            ["the confinement probe failed: ImportError: no attrs"],
        )
        python = self.fakePython(json.dumps({"active": [], "missing": []}), 1)
        self.assertEqual(
            missingConfinement(python),
            ["the confinement probe failed: probe exited with 1"],
        )
        [reason] = missingConfinement(os.path.abspath(self.mktemp()))
        self.assertIn("the confinement probe did not run", reason)

    def test_namespaceUnavailableIsConfinementUnavailable(self) -> None:
        """
        L{NamespaceUnavailable} (the first layer) is a kind of
        L{ConfinementUnavailable}.
        """
        self.assertTrue(
            issubclass(_isolation.NamespaceUnavailable, ConfinementUnavailable)
        )


# Attacks against a real twistd tcpext --isolation process.

_ATTACK_PRELUDE = (
    """
import ctypes, errno, json, os, signal, socket
from twisted.internet import protocol, task
from twisted.internet.defer import Deferred

REPORT = {report}
NAME = {name!r}
"""
    + _SYSCALLS
    + """

async def report(browser, results):
    sock = await browser.TCPSocket.connect(host="127.0.0.1", port=REPORT)
    await sock.opened
    await sock.write((NAME + " " + json.dumps(results) + "\\n").encode())
    await sock.close()


def reaim(fd, other):
    # Take a socket the host connected, disconnect it, aim it elsewhere.
    copy = os.dup(fd)
    results = {{}}
    results["unspec"] = raw(
        libc.connect(copy, ctypes.byref(sockaddr(0)), ctypes.sizeof(sockaddr)))
    s = socket.socket(fileno=copy)
    results["connect"] = outcome(s.connect, ("127.0.0.1", other))
    results["fastopen"] = outcome(
        s.sendto, b"escaped", socket.MSG_FASTOPEN, ("127.0.0.1", other))
    s.detach()
    os.close(copy)
    return results
"""
)

_DIALER = """
class Keep(protocol.Protocol):
    def connectionMade(self):
        self.factory.made.callback(self.transport)


async def main(browser):
    factory = protocol.ClientFactory.forProtocol(Keep)
    factory.made = Deferred()
    browser.reactor.connectTCP("127.0.0.1", {granted}, factory)
    transport = await factory.made
    await report(browser, reaim(transport.fileno(), {other}))
"""

_ACCEPTOR = """
async def main(browser):
    server = await browser.TCPSocket.listen(host="127.0.0.1", port={listen})
    async for sock in server.connections:
        transport = sock.transport
        await report(browser, reaim(transport.fileno(), {other}))
        await sock.close()
        break
"""

_KILLER = """
PIDS = {pids!r}


async def main(browser):
    from twisted.internet import reactor
    for _ in range(1200):
        if os.path.exists(PIDS):
            break
        await task.deferLater(reactor, 0.05, lambda: None)
    with open(PIDS) as f:
        targets = json.load(f)
    targets["parent"] = os.getppid()
    results = {{}}
    for what, pid in sorted(targets.items()):
        results["kill-" + what] = outcome(os.kill, pid, signal.SIGKILL)
        results["ptrace-" + what] = raw(libc.ptrace(16, pid, 0, 0))
        results["mem-" + what] = outcome(open, "/proc/%d/mem" % pid, "rb")
    await report(browser, results)
"""

_WRITER = """
TARGETS = {targets!r}


async def main(browser):
    import tempfile
    results = {{}}
    for what, path in sorted(TARGETS.items()):
        def write():
            with open(path, "w") as f:
                f.write('{{"format": 1, "grants": ["tcp-connect:*:*"]}}')
        results[what] = outcome(write)
    with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write("scratch")
    results["tmpdir"] = os.path.dirname(f.name) == os.environ["TMPDIR"]
    results["scratch"] = os.environ["TMPDIR"]
    results["granted"] = await browser.permissions.contains(
        {{"permissions": ["tcp-connect:*:*"]}})
    await report(browser, results)
"""

_PROBER = """
UNIX_STREAM, UNIX_DGRAM, ABSTRACT = {stream!r}, {dgram!r}, {abstract!r}


async def main(browser):
    results = {{}}
    results["unix-stream"] = outcome(
        lambda: socket.socket(socket.AF_UNIX).connect(UNIX_STREAM))
    results["unix-dgram"] = outcome(
        lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(
            b"escaped", UNIX_DGRAM))
    results["abstract"] = outcome(
        lambda: socket.socket(socket.AF_UNIX).connect(ABSTRACT))
    results["io_uring"] = raw(libc.syscall(
        {ioUring}, 8, ctypes.create_string_buffer(256)))
    results["bind"] = outcome(socket.socket().bind, ("127.0.0.1", 0))

    def forkOnce():
        if os.fork() == 0:
            os._exit(0)

    import subprocess
    results["fork"] = outcome(forkOnce)
    results["subprocess"] = outcome(subprocess.run, ["true"])
    await report(browser, results)
"""

_ECHO = """
async def main(browser):
    server = await browser.TCPSocket.listen(host="127.0.0.1", port={listen})
    async for sock in server.connections:
        async for chunk in sock:
            await sock.write(chunk)
        await sock.close()
"""


class _Reports:
    """
    The test's report server: each hostile extension connects (through its
    grant) and sends one line, C{NAME JSON}.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.server = _listener(case)
        self.port: int = self.server.getsockname()[1]
        self.received: dict[str, dict[str, Any]] = {}

    def collect(self, names: set[str], twistd: Twistd) -> dict[str, dict[str, Any]]:
        """
        Wait (bounded) until each of C{names} has reported.
        """
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not names <= set(self.received):
            if time.monotonic() > deadline:
                raise twistd.timedOut(
                    f"reports from {sorted(names - set(self.received))}"
                )
            twistd.check(lambda: False, "every report")
            ready, _, _ = select.select([self.server], [], [], 0.2)
            if not ready:
                continue
            conn, _ = self.server.accept()
            with conn:
                conn.settimeout(10)
                data = readLine(conn)
            name, _, text = data.decode().strip().partition(" ")
            self.received[name] = json.loads(text)
        return self.received


class AttackTests(SynchronousTestCase):
    """
    Hostile extensions run by C{twistd tcpext --isolation process} try to
    escape their grants through the kernel; each attempt fails, and the
    service and the other extensions keep running.
    """

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"

    def extension(
        self,
        base: str,
        name: str,
        script: str,
        permissions: list[str],
        optional: Sequence[str] = (),
        **values: Any,
    ) -> str:
        """
        Write the extension C{name} into C{base}; return its folder.
        """
        prelude = _ATTACK_PRELUDE.format(report=self.reports.port, name=name)
        return extensionWithScript(
            base,
            name,
            [f"tcp-connect:127.0.0.1:{self.reports.port}", *permissions],
            prelude + script.format(**values),
            optional=optional,
        )

    def test_attacks(self) -> None:
        """
        Under C{--isolation process}:

         1. an extension that takes a socket the host dialed for it (1a) or
            accepted for it (1b), disconnects it with C{AF_UNSPEC} and aims
            it at an ungranted listener (C{connect}, and TCP Fast Open's
            C{sendto}) fails at every step, and the listener receives
            nothing;
         2. an extension (forked from the template, as by default) cannot
            kill, trace or read the memory of twistd, the template, another
            extension's process, or any other process of the host (the
            service and the other extension keep running);
         3. an extension cannot write its grant file, the state folder,
            another extension's folder or its own (only its C{TMPDIR}
            scratch folder, removed when it ends); after a restart it has
            no grant it tried to write;
         4. it cannot connect or send to a pathname UNIX socket (stream or
            datagram) or an abstract one, set up io_uring, bind a TCP port,
            or start a process (C{os.fork}, C{subprocess}): none can
            outlive it with copies of its descriptors.
        """
        self.reports = _Reports(self)
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        state = os.path.join(base, "state")
        # The grants folder exists once any runtime grant was saved.
        os.makedirs(os.path.join(state, "grants"), mode=0o700)
        extensions = os.path.join(base, "extensions")
        other = _listener(self)
        otherPort = other.getsockname()[1]
        granted = _listener(self)
        grantedPort = granted.getsockname()[1]
        acceptorPort, echoPort = freePort(), freePort()

        unixStream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unixDgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        for s in (unixStream, unixDgram, abstract):
            self.addCleanup(s.close)
        sockets = shortFolder(self)
        streamPath = os.path.join(sockets, "stream.sock")
        dgramPath = os.path.join(sockets, "dgram.sock")
        abstractName = f"\0tcpext-attack-{os.getpid()}-{time.monotonic_ns()}"
        unixStream.bind(streamPath)
        unixStream.listen(1)
        unixDgram.bind(dgramPath)
        abstract.bind(abstractName)
        abstract.listen(1)

        import pyseccomp

        self.extension(
            extensions,
            "dialer",
            _DIALER,
            [f"tcp-connect:127.0.0.1:{grantedPort}"],
            granted=grantedPort,
            other=otherPort,
        )
        self.extension(
            extensions,
            "acceptor",
            _ACCEPTOR,
            [f"tcp-listen:{acceptorPort}"],
            listen=acceptorPort,
            other=otherPort,
        )
        pidsPath = os.path.join(base, "pids.json")
        self.extension(extensions, "killer", _KILLER, [], pids=pidsPath)
        echoFolder = self.extension(
            extensions, "echo", _ECHO, [f"tcp-listen:{echoPort}"], listen=echoPort
        )
        writerFolder = os.path.join(extensions, "writer")
        targets = {
            "grants": os.path.join(state, "grants", "writer.json"),
            "state": os.path.join(state, "planted.json"),
            "own-script": os.path.join(writerFolder, "background.py"),
            "own-folder": os.path.join(writerFolder, "planted.py"),
            "other-script": os.path.join(echoFolder, "background.py"),
        }
        self.extension(
            extensions,
            "writer",
            _WRITER,
            [],
            optional=["tcp-connect:*:*"],
            targets=targets,
        )
        self.extension(
            extensions,
            "prober",
            _PROBER,
            [],
            stream=streamPath,
            dgram=dgramPath,
            abstract=abstractName,
            ioUring=pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, "io_uring_setup"),
        )
        with open(os.path.join(echoFolder, "background.py")) as f:
            echoScript = f.read()

        twistd = Twistd(
            self, ["--extensions", extensions], state=state, isolation="process"
        )
        twistd.waitFor(twistd.logged("dialer", "acceptor"), "the extensions")
        # 1b: the acceptor needs a connection to take.
        twistd.waitFor(lambda: _accepts(acceptorPort), "the acceptor's port")
        with socket.create_connection(("127.0.0.1", acceptorPort), timeout=10):
            self.reports.collect({"dialer", "acceptor"}, twistd)
        # seccomp refuses connect() (the disconnect and the reconnect);
        # Landlock refuses the Fast Open send.
        reaimed = {"unspec": "EPERM", "connect": "EPERM", "fastopen": "EACCES"}
        received = self.reports.received
        self.assertEqual(received["dialer"], reaimed)
        self.assertEqual(received["acceptor"], reaimed)
        _assertNothingAccepted(self, other)

        # 2: give the killer its targets: a process of the host's, the
        # echo extension's process (twistd itself it finds as its parent).
        victim = _sacrificialProcess(self)
        twistd.waitFor(lambda: _childPid(twistd, "echo") is not None, "echo's pid")
        echoPid = _childPid(twistd, "echo")
        templatePid = _templatePid(twistd)
        self.assertIsNotNone(templatePid, "no template process")
        with open(pidsPath + ".tmp", "w") as f:
            json.dump(
                {
                    "host-process": victim.pid,
                    "sibling": echoPid,
                    "template": templatePid,
                },
                f,
            )
        os.rename(pidsPath + ".tmp", pidsPath)
        self.reports.collect({"killer", "writer", "prober"}, twistd)
        killed = received["killer"]
        self.assertEqual(
            killed,
            {
                f"{action}-{target}": error
                for target in ("host-process", "sibling", "template", "parent")
                for action, error in (
                    ("kill", "EPERM"),
                    ("ptrace", "EPERM"),
                    ("mem", "EACCES"),
                )
            },
        )
        self.assertIsNone(twistd.process.poll())
        self.assertIsNone(victim.poll())
        os.kill(templatePid, 0)  # type: ignore[arg-type]
        # Every extension process was forked from the template.
        self.assertNotIn("afresh", twistd.log())
        with socket.create_connection(("127.0.0.1", echoPort), timeout=10) as c:
            c.sendall(b"still here")
            self.assertEqual(c.recv(100), b"still here")

        # 3: nothing written outside the scratch folder.
        scratch = received["writer"].pop("scratch")
        self.assertTrue(os.path.isdir(scratch))
        self.assertEqual(
            received["writer"],
            {
                "grants": "EACCES",
                "state": "EACCES",
                "own-script": "EACCES",
                "own-folder": "EACCES",
                "other-script": "EACCES",
                "tmpdir": True,
                "granted": False,
            },
        )
        for what in ("grants", "state", "own-folder"):
            self.assertFalse(os.path.exists(targets[what]), what)
        with open(os.path.join(echoFolder, "background.py")) as f:
            self.assertEqual(f.read(), echoScript)

        # 4: UNIX sockets, io_uring, bind.
        self.assertEqual(
            received["prober"],
            {
                "unix-stream": "EPERM",
                "unix-dgram": "EPERM",
                "abstract": "EPERM",
                "io_uring": "EPERM",
                "bind": "EACCES",
                "fork": "EPERM",
                "subprocess": "EPERM",
            },
        )
        for s in (unixStream, abstract):
            s.settimeout(0)
            self.assertRaises(BlockingIOError, s.accept)
        unixDgram.settimeout(0)
        self.assertRaises(BlockingIOError, unixDgram.recv, 100)

        self.assertEqual(twistd.terminate(), 0)
        self.assertFalse(os.path.exists(scratch), "the scratch folder is left")
        # After a restart on the same state, the writer has no new grant.
        del received["writer"]
        again = Twistd(
            self,
            ["--extension", writerFolder],
            state=state,
            isolation="process",
        )
        self.reports.collect({"writer"}, again)
        self.assertFalse(received["writer"]["granted"])
        self.assertFalse(os.path.exists(targets["grants"]))
        self.assertEqual(again.terminate(), 0)


def _accepts(port: int) -> bool:
    """
    Whether something listens on 127.0.0.1:C{port} (probed without
    connecting: a connection would be taken as the acceptor's).
    """
    with open("/proc/net/tcp") as f:
        lines = f.read().splitlines()[1:]
    wanted = f"0100007F:{port:04X}"
    return any(line.split()[1] == wanted and line.split()[3] == "0A" for line in lines)


def _templatePid(twistd: Twistd) -> int | None:
    """
    The pid of twistd's template process, from its log.
    """
    for line in twistd.log().splitlines():
        if "[tcpext.template#info] template process " in line:
            return int(line.split("template process ")[1].split()[0])
    return None


def _childPid(twistd: Twistd, name: str) -> int | None:
    """
    The pid of extension C{name}'s process, from twistd's log.
    """
    for line in twistd.log().splitlines():
        if f"[tcpext.extension.{name}#info] extension process " in line:
            if " started (" in line:
                return int(line.split("extension process ")[1].split()[0])
    return None


def _alive(pid: int) -> bool:
    """
    Whether process C{pid} exists and has not ended (a zombie, ended but
    not reaped, counts as ended).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _isolatedEcho(
    case: SynchronousTestCase, extra: Sequence[str], **popen: Any
) -> tuple[Twistd, int, int]:
    """
    Run the echo example in C{twistd --isolation process} (with C{extra}
    options and C{popen} arguments for L{Twistd}) and wait until it echoes.

    @return: The twistd, the echo port and the extension process's pid.
    """
    examples, ports = copyExamples(case, ["echo-server"])
    port = ports[7001]
    twistd = Twistd(
        case,
        ["--extension", os.path.join(examples, "echo-server"), *extra],
        isolation="process",
        **popen,
    )
    assertEchoes(case, twistd, port, b"before the test\n")
    child = _childPid(twistd, "echo-server")
    case.assertIsNotNone(child, "no extension process in the log")
    assert child is not None
    return twistd, port, child


class HostDeathTests(SynchronousTestCase):
    """
    When twistd dies without stopping its isolated extensions (killed with
    C{SIGKILL}), the kernel ends their processes, and the template: nothing
    keeps serving without the host.
    """

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"

    def assertDieWithHost(self, *extra: str) -> None:
        """
        Run the echo example isolated (with C{extra} options), kill twistd,
        and check (bounded) that the extension's process and the template
        (when there is one) end and the echo port stops answering.
        """
        twistd, port, child = _isolatedEcho(self, extra)
        pids = [child]
        template = _templatePid(twistd)
        if template is not None:
            pids.append(template)
        self.assertEqual([pid for pid in pids if _alive(pid)], pids)

        def killLeftovers() -> None:
            for pid in pids:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)

        self.addCleanup(killLeftovers)
        twistd.process.kill()
        twistd.process.wait(timeout=STARTUP_TIMEOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual([pid for pid in pids if _alive(pid)], [])
        self.assertFalse(canConnect(port))

    def test_forked(self) -> None:
        """
        A process forked from the template ends with the host, and so does
        the template.
        """
        self.assertDieWithHost()

    def test_fresh(self) -> None:
        """
        A process started afresh (C{--no-template}) ends with the host.
        """
        self.assertDieWithHost("--no-template")


class GroupSignalTests(SynchronousTestCase):
    """
    A signal to twistd's whole process group (Ctrl-C in its terminal, a
    service manager's stop, C{timeout}) stops the service in order: the
    template and the extension processes ignore it and are stopped by the
    host, none is reported crashed or restarted.
    """

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"

    def assertOrderlyStop(self, number: int, *extra: str) -> None:
        """
        Run the echo example isolated (with C{extra} options) in a process
        group of its own, send signal C{number} to the whole group, and
        check the service's stop.
        """
        twistd, port, child = _isolatedEcho(self, extra, start_new_session=True)
        os.killpg(twistd.process.pid, number)
        # twistd ends as its service stopped: status 0 after SIGTERM, and
        # by the signal itself after SIGINT (as programs stopped with
        # Ctrl-C do).
        expected = 0 if number == signal.SIGTERM else -number
        self.assertEqual(twistd.process.wait(timeout=STARTUP_TIMEOUT), expected)
        log = twistd.log()
        self.assertIn("extension 'echo-server' stopped", log)
        self.assertIn(f"extension process {child} ended (exit status 0)", log)
        self.assertNotIn("crashed", log)
        self.assertNotIn("restarting in", log)
        self.assertNotIn("template process ended", log)
        self.assertFalse(canConnect(port))

    def test_terminate(self) -> None:
        """
        C{SIGTERM} to the group, the extension's process forked from the
        template.
        """
        self.assertOrderlyStop(signal.SIGTERM)

    def test_interrupt(self) -> None:
        """
        C{SIGINT} (Ctrl-C) to the group.
        """
        self.assertOrderlyStop(signal.SIGINT)

    def test_terminateFresh(self) -> None:
        """
        C{SIGTERM} to the group, the extension's process started afresh.
        """
        self.assertOrderlyStop(signal.SIGTERM, "--no-template")
