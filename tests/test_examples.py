"""
Tests for the example extensions in C{examples/}, each run in a real
C{twistd -n tcpext} subprocess, as the README says to run them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from twisted.internet import protocol, task
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server

from tests._certs import testPKI

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
STARTUP_TIMEOUT = 60.0
"""
Seconds a twistd subprocess gets to reach a state a test waits for (plugin
discovery and imports on a busy 2-core machine take a few).
"""
POLL = 0.05


def twistdCommand(logPath: str, state: str, *args: str) -> list[str]:
    """
    The command line of C{twistd -n tcpext --state STATE ARGS} run by this
    Python, logging to C{logPath} (C{-}: standard output), without a pid
    file.
    """
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        "--logfile",
        logPath,
        "tcpext",
        "--state",
        state,
        *args,
    ]


class Twistd:
    """
    A C{twistd -n tcpext} subprocess, its log file and its state folder.
    """

    def __init__(
        self,
        case: SynchronousTestCase,
        args: Sequence[str],
        cwd: str | None = None,
        state: str | None = None,
        isolation: str | None = None,
        **popen: Any,
    ) -> None:
        """
        Start C{twistd -n --logfile LOG tcpext --state STATE ARGS} with the
        repository on C{PYTHONPATH} (so the plugin in C{twisted/plugins} is
        found from the source tree), in a scratch folder by default.

        @param state: The state folder (default: a new one).
        @param isolation: Run with C{--isolation ISOLATION} (default: the
            test case's C{isolation} attribute, if it has one, which is how
            C{tests.test_isolation_examples} runs these same tests isolated;
            otherwise C{none}, unless C{args} choose); C{""} gives no
            C{--isolation} at all (the default, C{auto}).
        @param popen: More arguments for L{subprocess.Popen}.
        """
        if isolation is None:
            isolation = getattr(case, "isolation", None)
        if isolation is None and not any(
            a == "--isolation" or a.startswith("--isolation=") for a in args
        ):
            isolation = "none"
        if isolation:
            args = [*args, "--isolation", isolation]
        if not any(a == "--admin" or a.startswith("--admin=") for a in args):
            # The console's default socket, in a state folder this deep in
            # the scratch folder, would pass the UNIX socket path limit
            # (twistd refuses that); tests of the console give --admin.
            args = [*args, "--admin", "none"]
        base = os.path.abspath(case.mktemp())
        os.makedirs(base)
        self.logPath = os.path.join(base, "twistd.log")
        self.statePath = state if state is not None else os.path.join(base, "state")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        self.outputPath = os.path.join(base, "output")
        with open(self.outputPath, "wb") as output:
            self.process = subprocess.Popen(
                twistdCommand(self.logPath, self.statePath, *args),
                cwd=cwd if cwd is not None else base,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                **popen,
            )
        case.addCleanup(self.kill)
        if isolation == "process":
            case.addCleanup(self.assertConfined)

    def assertConfined(self) -> None:
        """
        Every extension process this twistd started reported every
        confinement layer in force (its own network namespace, Landlock,
        seccomp), and none ran unconfined.
        """
        log = self.log()
        started = [line for line in log.splitlines() if "extension process " in line]
        started = [line for line in started if " started (" in line]
        layers = "(confined: network namespace, Landlock ABI "
        if not started or not all(layers in s and ", seccomp)" in s for s in started):
            raise AssertionError(f"an extension ran unconfined:\n{log}")

    def log(self) -> str:
        """
        The log so far (and whatever twistd printed outside it).
        """
        text = ""
        for path in (self.logPath, self.outputPath):
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    text += f.read()
            except FileNotFoundError:
                pass
        return text

    def failure(self, extension: str) -> str | None:
        """
        The first log line saying that C{extension}'s C{main} failed (in
        process or isolated), or L{None}.
        """
        for line in self.log().splitlines():
            if not (
                f"tcpext.extension.{extension}#" in line
                or f"extension {extension!r}" in line
            ):
                continue
            if "main(browser) failed" in line or "extension failed" in line:
                return line
        return None

    def check(
        self, condition: Callable[[], bool], what: str, extensions: Sequence[str] = ()
    ) -> bool:
        """
        Evaluate C{condition}; fail at once if twistd has exited instead, or
        if one of C{extensions} has failed.
        """
        if condition():
            return True
        if self.process.poll() is not None:
            raise AssertionError(
                f"twistd exited ({self.process.returncode}) before {what}:\n{self.log()}"
            )
        for extension in extensions:
            line = self.failure(extension)
            if line is not None:
                raise AssertionError(
                    f"extension {extension!r} failed before {what}: {line}\n"
                    f"log:\n{self.log()}"
                )
        return False

    def timedOut(self, what: str) -> AssertionError:
        """
        The error for a condition that never came.
        """
        return AssertionError(
            f"no {what} within {STARTUP_TIMEOUT} s; log:\n{self.log()}"
        )

    def waitFor(
        self, condition: Callable[[], bool], what: str, extensions: Sequence[str] = ()
    ) -> None:
        """
        Block until C{condition()} is true (bounded); stop at once if twistd
        exits or one of C{extensions} fails first.
        """
        for _ in range(int(STARTUP_TIMEOUT / POLL)):
            if self.check(condition, what, extensions):
                return
            time.sleep(POLL)
        raise self.timedOut(what)

    async def waitForAsync(
        self, condition: Callable[[], bool], what: str, extensions: Sequence[str] = ()
    ) -> None:
        """
        Wait, letting the test's reactor run, until C{condition()} is true
        (bounded); stop at once if twistd exits or one of C{extensions}
        fails first.
        """
        from twisted.internet import reactor

        for _ in range(int(STARTUP_TIMEOUT / POLL)):
            if self.check(condition, what, extensions):
                return
            await task.deferLater(reactor, POLL, lambda: None)
        raise self.timedOut(what)

    def logged(self, *texts: str) -> Callable[[], bool]:
        """
        A condition: every one of C{texts} is in the log.
        """
        return lambda: all(text in self.log() for text in texts)

    def terminate(self) -> int:
        """
        Send C{SIGTERM} and wait (bounded) for the exit status.
        """
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STARTUP_TIMEOUT)

    def kill(self) -> None:
        """
        Make sure the process is gone.
        """
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STARTUP_TIMEOUT)


def canConnect(port: int) -> bool:
    """
    Whether something accepts connections on 127.0.0.1:C{port}.
    """
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def connect(port: int) -> socket.socket:
    """
    A blocking client connection to 127.0.0.1:C{port}, with a timeout.
    """
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def readLine(sock: socket.socket) -> bytes:
    """
    Read up to and including a newline (bounded by the socket's timeout and
    by length).
    """
    data = b""
    while not data.endswith(b"\n") and len(data) < 65536:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def freePorts(count: int) -> list[int]:
    """
    C{count} different ports that were free on 127.0.0.1 a moment ago.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def freePort() -> int:
    """
    A port that was free on 127.0.0.1 a moment ago.
    """
    [port] = freePorts(1)
    return port


_SINGLE_PORT = re.compile(r"^(tcp-(?:listen|connect):(?:.*:)?)(\d+)$")


def fixedPorts(folder: str) -> set[int]:
    """
    The single ports (not C{*}, not ranges) that the C{permissions} of the
    extension in C{folder} name: the ports it listens on or dials as
    shipped.
    """
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    ports = set()
    for entry in manifest.get("permissions", []):
        match = _SINGLE_PORT.match(entry)
        if match is not None:
            ports.add(int(match.group(2)))
    return ports


def relocate(folder: str, ports: dict[int, int]) -> None:
    """
    Move the extension in C{folder} to other ports: every port of C{ports}
    named in its C{permissions} and in its C{config.json} (a number, or
    C{:PORT} inside a string such as a URL) becomes the port it maps to.
    """

    def mapPort(match: re.Match[str]) -> str:
        port = int(match.group(2))
        return match.group(1) + str(ports.get(port, port))

    path = os.path.join(folder, "manifest.json")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    manifest["permissions"] = [
        _SINGLE_PORT.sub(mapPort, entry) for entry in manifest.get("permissions", [])
    ]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f)

    def mapValue(value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return ports.get(value, value)
        if isinstance(value, str):
            return re.sub(r"(:)(\d+)\b", mapPort, value)
        if isinstance(value, list):
            return [mapValue(v) for v in value]
        if isinstance(value, dict):
            return {k: mapValue(v) for k, v in value.items()}
        return value

    path = os.path.join(folder, "config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            config = mapValue(json.load(f))
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f)


def copyExamples(
    case: SynchronousTestCase, names: Sequence[str] | None = None
) -> tuple[str, dict[int, int]]:
    """
    Copy the examples C{names} (default: every extension in C{examples/})
    into a scratch folder, each moved from the fixed ports it ships with to
    ports that were free a moment ago, so that the test does not depend on
    (or disturb) whatever runs on the shipped ports.

    @return: The folder holding the copies, and the map from each shipped
        port to the port the copies use.
    """
    from tcpext.service import findExtensions

    base = os.path.abspath(case.mktemp())
    if names is None:
        names = [os.path.basename(p) for p in findExtensions(EXAMPLES)]
    for name in names:
        shutil.copytree(
            os.path.join(EXAMPLES, name),
            os.path.join(base, name),
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    shipped = sorted(set().union(*(fixedPorts(f"{base}/{n}") for n in names)))
    ports = dict(zip(shipped, freePorts(len(shipped)), strict=True))
    for name in names:
        relocate(os.path.join(base, name), ports)
    return base, ports


def assertEchoes(
    case: SynchronousTestCase, twistd: Twistd, port: int, line: bytes
) -> None:
    """
    Wait (bounded) for the C{echo-server} example in C{twistd} to listen on
    127.0.0.1:C{port} (stopping at once if it fails), then check that it
    sends C{line} back.
    """
    twistd.waitFor(
        twistd.logged(f"echo server listening on 127.0.0.1:{port}"),
        "the echo server",
        ["echo-server"],
    )
    with connect(port) as echo:
        echo.sendall(line)
        case.assertEqual(readLine(echo), line)


@contextmanager
def echoServerOnTakenPort(case: SynchronousTestCase) -> Iterator[tuple[Twistd, int]]:
    """
    Hold a port of 127.0.0.1 and start C{twistd tcpext} with the echo-server
    example on it (its C{main} fails: the port is taken); the port is held
    until the block ends.

    @return: A context manager giving the twistd and the port.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        examples, ports = copyExamples(case, ["echo-server"])
        relocate(os.path.join(examples, "echo-server"), {ports[7001]: port})
        twistd = Twistd(case, ["--extension", os.path.join(examples, "echo-server")])
        yield twistd, port


def copyExample(case: SynchronousTestCase, name: str, **config: Any) -> str:
    """
    Copy the example C{name} into a scratch folder, moved to free ports (see
    L{copyExamples}), and update its C{config.json} with C{config}.
    """
    base, ports = copyExamples(case, [name])
    target = os.path.join(base, name)
    if config:
        path = os.path.join(target, "config.json")
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
        content.update(config)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(content, f)
    return target


class ExamplesFolderTests(SynchronousTestCase):
    """
    C{twistd -n tcpext --extensions examples/}, the README's command, on a
    copy of C{examples/} moved to free ports.
    """

    def test_echoAndChat(self) -> None:
        """
        The echo server and the chat room serve raw socket clients; a chat
        client leaving mid-line does not disturb the others; C{SIGTERM} stops
        the service with exit status 0 after closing the servers.
        """
        examples, ports = copyExamples(self)
        echoPort, chatPort = ports[7001], ports[7002]
        twistd = Twistd(self, ["--extensions", examples])
        twistd.waitFor(
            twistd.logged(
                f"echo server listening on 127.0.0.1:{echoPort}",
                f"chat server listening on 127.0.0.1:{chatPort}",
            ),
            "echo and chat servers",
            ["echo-server", "chat-server"],
        )
        # The servers log that line once they listen. (No probe connection
        # to the chat room: it would count as a member coming and going.)

        with connect(echoPort) as echo:
            echo.sendall(b"hello echo\n")
            self.assertEqual(readLine(echo), b"hello echo\n")
            echo.sendall(b"again\n")
            self.assertEqual(readLine(echo), b"again\n")

        clients = [connect(chatPort) for _ in range(3)]
        self.addCleanup(lambda: [c.close() for c in clients])
        twistd.waitFor(twistd.logged("(3 online)"), "three chat clients")
        a, b, c = clients
        a.sendall(b"hello room\n")
        for other in (b, c):
            line = readLine(other)
            self.assertTrue(line.endswith(b"> hello room\n"), line)

        leaver = connect(chatPort)
        leaverName = f"127.0.0.1:{leaver.getsockname()[1]}"
        twistd.waitFor(twistd.logged("(4 online)"), "a fourth chat client")
        leaver.sendall(b"half a mess")
        leaver.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        leaver.close()
        twistd.waitFor(twistd.logged(f"{leaverName} left"), "the leaver to be gone")
        b.sendall(b"still here\n")
        for other in (a, c):
            line = readLine(other)
            self.assertTrue(line.endswith(b"> still here\n"), line)
            self.assertNotIn(b"half", line)

        # A client that says goodbye as clients do (its end of the stream,
        # after a full line) just "left".
        cName = f"127.0.0.1:{c.getsockname()[1]}"
        c.shutdown(socket.SHUT_WR)
        twistd.waitFor(twistd.logged(f"{cName} left"), "the third client to leave")
        [left] = [line for line in twistd.log().splitlines() if f"{cName} left" in line]
        self.assertTrue(left.endswith(f"{cName} left"), left)
        self.assertNotIn("IncompleteReadError", twistd.log())

        self.assertEqual(twistd.terminate(), 0)
        log = twistd.log()
        self.assertIn("extension 'echo-server' stopped", log)
        self.assertIn("extension 'chat-server' stopped", log)
        self.assertIn("tcpext: stopped", log)
        self.assertFalse(canConnect(echoPort))

    def test_isolated(self) -> None:
        """
        With C{--isolation process-unconfined} the echo extension runs in a
        process of its own and still serves; C{SIGTERM} stops everything
        with status 0.
        """
        examples, ports = copyExamples(self, ["echo-server"])
        twistd = Twistd(
            self,
            [
                "--extension",
                os.path.join(examples, "echo-server"),
                "--isolation",
                "process-unconfined",
            ],
        )
        assertEchoes(self, twistd, ports[7001], b"isolated\n")
        self.assertIn("extension process", twistd.log())
        self.assertEqual(twistd.terminate(), 0)
        self.assertIn("tcpext: stopped", twistd.log())

    def test_badNeighbours(self) -> None:
        """
        Next to a broken manifest, a script that raises, a script that cannot
        be imported, an invalid permission and a bad grant, a good extension
        keeps serving; each problem is logged with the extension's name.
        """
        base, ports = copyExamples(self, ["echo-server"])

        def make(folder: str, manifest: bytes | dict[str, Any], script: str) -> None:
            os.makedirs(f"{base}/{folder}")
            with open(f"{base}/{folder}/manifest.json", "wb") as f:
                f.write(
                    manifest
                    if isinstance(manifest, bytes)
                    else json.dumps(manifest).encode()
                )
            with open(f"{base}/{folder}/background.py", "w") as f:
                f.write(script)

        def manifest(name: str, *permissions: str) -> dict[str, Any]:
            return {
                "manifest_version": 2,
                "name": name,
                "version": "1",
                "permissions": list(permissions),
                "background": {"scripts": ["background.py"]},
            }

        make("broken-json", b'{"name": "broken-json",', "")
        make(
            "raiser",
            manifest("raiser"),
            "def main(browser):\n    raise RuntimeError('raiser exploded')\n",
        )
        make("importer", manifest("importer"), "import no_such_module_tcpext\n")
        make("badperm", manifest("badperm", "tcp-connect:example.com:0"), "")
        os.makedirs(f"{base}/no-manifest")

        twistd = Twistd(
            self,
            [
                "--extensions",
                base,
                "--grant",
                "echo-server=tcp-connect:example.com:80",
                "--grant",
                "ghost=tcp-listen:9",
            ],
        )
        assertEchoes(self, twistd, ports[7001], b"ping\n")
        twistd.waitFor(twistd.logged("raiser exploded"), "the raiser's failure")
        log = twistd.log()
        for expected in [
            "[tcpext.extension.broken-json#error] extension 'broken-json': "
            "manifest.json: invalid JSON",
            "[tcpext.extension.raiser#critical] extension 'raiser': main(browser) "
            "failed: RuntimeError: raiser exploded",
            "[tcpext.extension.importer#error] extension 'importer': "
            "background.scripts: importing 'background.py' failed: "
            "ModuleNotFoundError",
            "[tcpext.extension.badperm#error] extension 'badperm': permissions: ",
            "tcp-connect:example.com:0",
            "extension 'no-manifest': manifest.json: missing",
            "extension 'echo-server': --grant: 'tcp-connect:example.com:80' is "
            "not in its optional_permissions",
            "extension 'ghost': --grant: no extension named 'ghost' is loaded",
        ]:
            self.assertIn(expected, log)
        self.assertEqual(twistd.terminate(), 0)


class TwistdHelperTests(SynchronousTestCase):
    """
    The helpers these tests use to run the examples away from their shipped
    ports and to wait for them.
    """

    def test_relocated(self) -> None:
        """
        L{copyExamples} moves every single port the examples' manifests name
        to a free one, in the manifests and in the configurations the
        scripts read: no copy names a shipped port.
        """
        examples, ports = copyExamples(self)
        self.assertTrue({7001, 7002}.issubset(ports))
        self.assertEqual(len(set(ports.values())), len(ports))
        for name in os.listdir(examples):
            self.assertFalse(
                fixedPorts(os.path.join(examples, name)) & set(ports), name
            )
            path = os.path.join(examples, name, "config.json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                for shipped in ports:
                    self.assertNotRegex(text, rf"\b{shipped}\b", path)

    def test_waitStopsAtFailure(self) -> None:
        """
        Waiting for an extension that has already failed (its port is taken)
        stops as soon as the log says so, with that line and the log, instead
        of waiting out the timeout.
        """
        with echoServerOnTakenPort(self) as (twistd, port):
            error = self.assertRaises(
                AssertionError, assertEchoes, self, twistd, port, b"never\n"
            )
        message = str(error)
        self.assertIn("extension 'echo-server' failed before the echo server", message)
        self.assertIn(str(port), message)
        self.assertNotIn(f"within {STARTUP_TIMEOUT} s", message)


class ExampleSourceTests(SynchronousTestCase):
    """
    The examples are written as users should write: public API only.
    """

    def test_publicAPIOnly(self) -> None:
        """
        No example imports a private tcpext module (C{tcpext._...}).
        """
        import ast

        private = []
        for folder, _, files in os.walk(EXAMPLES):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        modules = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.module:
                        modules = [node.module]
                    else:
                        continue
                    private += [
                        f"{os.path.relpath(path, EXAMPLES)}: {module}"
                        for module in modules
                        if module.startswith("tcpext._")
                    ]
        self.assertEqual(private, [])


class StartupErrorTests(SynchronousTestCase):
    """
    How C{twistd tcpext} reports an extension that cannot start.
    """

    def test_portTaken(self) -> None:
        """
        An extension whose port is taken is one error line naming the
        extension, the port and the reason; it is never logged as started,
        and no traceback is logged.
        """
        with echoServerOnTakenPort(self) as (twistd, port):
            twistd.waitFor(twistd.logged("main(browser) failed"), "the failure")
        self.assertEqual(twistd.terminate(), 0)
        log = twistd.log()
        mentions = [line for line in log.splitlines() if "echo-server" in line]
        failures = [line for line in mentions if "failed" in line]
        self.assertEqual(len(failures), 1, log)
        self.assertTrue(
            failures[0].endswith(
                "[tcpext.extension.echo-server#error] extension 'echo-server': "
                f"main(browser) failed: cannot listen on 127.0.0.1:{port}: "
                "Address already in use"
            ),
            failures[0],
        )
        self.assertNotIn("Traceback", log)
        self.assertNotIn("'echo-server' 1.0 started", log)


class ExampleExtensionTests(TestCase):
    """
    The fetcher, the TLS client and the gossip pair, each against servers
    the test runs on loopback.
    """

    def listenWeb(self, interface: str, body: bytes) -> tuple[int, list[bytes]]:
        """
        Serve C{body} over HTTP on C{interface}, port 0.

        @return: The port and the list of paths requested (filled in as
            requests come).
        """
        from twisted.internet import reactor

        requested: list[bytes] = []

        class Page(resource.Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                requested.append(request.path)
                return body

        port = reactor.listenTCP(0, server.Site(Page()), interface=interface)
        self.addCleanup(port.stopListening)
        return port.getHost().port, requested

    async def test_httpFetcher(self) -> None:
        """
        The fetcher, granted 127.0.0.1's unprivileged ports by the operator,
        fetches a page there with treq through its reactor, and is denied
        127.0.0.2: no request reaches that server and the denial is logged.
        """
        allowedPort, allowedRequests = self.listenWeb("127.0.0.1", b"allowed page")
        deniedPort, deniedRequests = self.listenWeb("127.0.0.2", b"secret")
        allowed = f"http://127.0.0.1:{allowedPort}/allowed"
        denied = f"http://127.0.0.2:{deniedPort}/denied"
        folder = copyExample(
            self, "http-fetcher", urls=[allowed, denied], attempts=2, retryDelay=0.1
        )
        twistd = Twistd(
            self,
            [
                "--extension",
                folder,
                "--grant",
                "http-fetcher=tcp-connect:127.0.0.1:1024-65535",
            ],
        )
        await twistd.waitForAsync(
            twistd.logged("http-fetcher done"), "the fetches", ["http-fetcher"]
        )
        log = twistd.log()
        self.assertIn(f"fetched {allowed}: 200, 12 bytes: b'allowed page'", log)
        self.assertIn(f"not fetching {denied}", log)
        self.assertIn("permission denied", log)
        self.assertIn("127.0.0.2", log)
        self.assertEqual(allowedRequests, [b"/allowed"])
        self.assertEqual(deniedRequests, [])
        self.assertEqual(twistd.terminate(), 0)

    def runTLSClient(
        self, trusted: bool, **config: Any
    ) -> tuple[Twistd, int, list[bytes]]:
        """
        Serve TLS on 127.0.0.1, port 0, with a certificate the test CA signed
        (or, if not C{trusted}, one it did not): the server records each line
        and answers C{you said: LINE}.  Run the C{tls-client} example against
        it in a C{twistd}, trusting the test CA, with localhost's unprivileged
        ports granted by the operator.

        @param config: More C{config.json} settings for the client.
        @return: The C{twistd}, the server's port, and the lines the server
            received (filled in as they come).
        """
        from twisted.internet import reactor

        pki = testPKI()
        lines: list[bytes] = []

        class Reply(LineReceiver):
            delimiter = b"\n"

            def lineReceived(self, line: bytes) -> None:
                lines.append(line)
                self.sendLine(b"you said: " + line)

        port = reactor.listenSSL(
            0,
            protocol.Factory.forProtocol(Reply),
            pki.serverOptions() if trusted else pki.untrustedServerOptions(),
            interface="127.0.0.1",
        )
        self.addCleanup(port.stopListening)
        folder = copyExample(
            self,
            "tls-client",
            port=port.getHost().port,
            caFile="test-ca.pem",
            retryDelay=0.1,
            **config,
        )
        with open(os.path.join(folder, "test-ca.pem"), "wb") as f:
            f.write(pki.caPEM)
        twistd = Twistd(
            self,
            [
                "--extension",
                folder,
                "--grant",
                "tls-client=tcp-connect:localhost:1024-65535",
            ],
        )
        return twistd, port.getHost().port, lines

    async def test_tlsClient(self) -> None:
        """
        The TLS client verifies a loopback server against the test CA (from
        its C{caFile}), sends its line and logs the reply.
        """
        twistd, port, lines = self.runTLSClient(trusted=True)
        await twistd.waitForAsync(
            twistd.logged("TLS reply from"), "the TLS reply", ["tls-client"]
        )
        self.assertIn(
            f"TLS reply from localhost:{port}: 'you said: hello over TLS'",
            twistd.log(),
        )
        self.assertEqual(lines, [b"hello over TLS"])
        self.assertEqual(twistd.terminate(), 0)

    async def test_tlsClientUntrusted(self) -> None:
        """
        A server whose certificate the configured CA did not sign is refused:
        the client sends nothing and gives up after its bounded retries.
        """
        twistd, port, lines = self.runTLSClient(trusted=False, attempts=2)
        await twistd.waitForAsync(
            twistd.logged("giving up on localhost"), "giving up", ["tls-client"]
        )
        self.assertIn("TLS exchange failed (attempt 2 of 2)", twistd.log())
        self.assertEqual(lines, [])
        self.assertEqual(twistd.terminate(), 0)

    async def test_gossip(self) -> None:
        """
        Two gossip extensions in one service, each listening and dialing the
        other, learn each other's rumours.
        """
        portA, portB = freePort(), freePort()
        a = copyExample(
            self, "gossip-a", listenPort=portA, peerPort=portB, interval=0.2
        )
        b = copyExample(
            self, "gossip-b", listenPort=portB, peerPort=portA, interval=0.2
        )
        twistd = Twistd(
            self,
            [
                "--extension",
                a,
                "--extension",
                b,
                "--grant",
                "gossip-a=tcp-listen:1024-65535",
                "--grant",
                "gossip-a=tcp-connect:127.0.0.1:1024-65535",
                "--grant",
                "gossip-b=tcp-listen:1024-65535",
                "--grant",
                "gossip-b=tcp-connect:127.0.0.1:1024-65535",
            ],
        )
        await twistd.waitForAsync(
            twistd.logged(
                "gossip-a learned 'gossip-b#2: hello from gossip-b'",
                "gossip-b learned 'gossip-a#2: hello from gossip-a'",
            ),
            "rumours from both sides",
            ["gossip-a", "gossip-b"],
        )
        self.assertEqual(twistd.terminate(), 0)
        self.assertIn("extension 'gossip-a' stopped", twistd.log())


class PromptTests(SynchronousTestCase):
    """
    C{--prompt tty} in a real C{twistd}, with a pseudo-terminal as its
    controlling terminal, and the grant kept across restarts.
    """

    def test_grantedAndKept(self) -> None:
        """
        The operator's C{y} on the terminal grants the request; the grant is
        stored and given back at the next start without asking (with
        C{--prompt deny}).
        """
        import fcntl
        import select
        import termios

        base = os.path.abspath(self.mktemp())
        os.makedirs(f"{base}/asker")
        with open(f"{base}/asker/manifest.json", "w") as f:
            json.dump(
                {
                    "manifest_version": 2,
                    "name": "asker",
                    "version": "1",
                    "optional_permissions": ["tcp-connect:example.com:443"],
                    "background": {"scripts": ["background.py"]},
                },
                f,
            )
        with open(f"{base}/asker/background.py", "w") as f:
            f.write(
                "from twisted.logger import Logger\n"
                "log = Logger(namespace='tcpext.extension.asker')\n"
                "async def main(browser):\n"
                "    ok = await browser.permissions.request(\n"
                "        {'permissions': ['tcp-connect:example.com:443']})\n"
                "    log.info('request answered {ok}', ok=ok)\n"
            )
        master, slave = os.openpty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)

        def controllingTerminal() -> None:
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

        state = os.path.join(base, "state")
        twistd = Twistd(
            self,
            ["--extension", f"{base}/asker", "--prompt", "tty"],
            state=state,
            preexec_fn=controllingTerminal,
            pass_fds=(slave,),
        )
        shown = b""
        for _ in range(int(STARTUP_TIMEOUT / POLL)):
            if b"Allow?" in shown:
                break
            twistd.check(lambda: False, "the question")
            if select.select([master], [], [], POLL)[0]:
                shown += os.read(master, 4096)
        self.assertIn(b"extension 'asker' asks for:", shown)
        self.assertIn(b"tcp-connect:example.com:443", shown)
        os.write(master, b"y\n")
        twistd.waitFor(twistd.logged("request answered True"), "the grant", ["asker"])
        self.assertEqual(twistd.terminate(), 0)
        with open(os.path.join(state, "grants", "asker.json")) as f:
            self.assertEqual(json.load(f)["grants"], ["tcp-connect:example.com:443"])

        again = Twistd(self, ["--extension", f"{base}/asker"], state=state)
        again.waitFor(
            again.logged("request answered True"), "the stored grant", ["asker"]
        )
        self.assertNotIn("denied", again.log())
        self.assertEqual(again.terminate(), 0)


class _KitCase(SynchronousTestCase):
    """
    The bundled examples in memory, with L{tcpext.testing}: each loaded from
    its folder as the host loads it, the test playing the network.
    """

    def setUp(self) -> None:
        """
        Collect the log messages of the test.
        """
        from twisted.logger import globalLogPublisher

        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def load(self, name: str, folder: str | None = None, **kwargs: Any) -> Any:
        """
        Load the example C{name} (from C{folder}, default C{examples/NAME})
        into a stub browser that the test's cleanup closes, and start it.
        """
        from tcpext.testing import StubBrowser

        stub = StubBrowser.fromFolder(folder or os.path.join(EXAMPLES, name), **kwargs)
        self.addCleanup(stub.close)
        self.running = stub.start()
        return stub

    def messages(self, name: str) -> list[str]:
        """
        The formatted messages the extension C{name} logged.
        """
        from twisted.logger import formatEvent

        return [
            formatEvent(e)
            for e in self.events
            if e.get("log_namespace") == f"tcpext.extension.{name}"
        ]


class EchoServerKitTests(_KitCase):
    """
    C{examples/echo-server} in memory.
    """

    def test_echoes(self) -> None:
        """
        It listens on 127.0.0.1:7001 (its C{config.json}) and sends each
        client back what it sends, until the client closes its side.
        """
        stub = self.load("echo-server")
        self.assertEqual(stub.listening(), [("127.0.0.1", 7001)])
        self.assertIn(
            "echo server listening on 127.0.0.1:7001", self.messages("echo-server")
        )
        one, two = stub.dialListener(7001), stub.dialListener(7001)
        one.write(b"hello\n")
        two.write(b"other\n")
        stub.flush()
        self.assertEqual((one.received, two.received), (b"hello\n", b"other\n"))
        one.loseConnection()
        stub.flush()
        self.assertTrue(one.disconnected)
        self.assertFalse(two.disconnected)


class ChatServerKitTests(_KitCase):
    """
    C{examples/chat-server} in memory.
    """

    def test_room(self) -> None:
        """
        A line from one client reaches every other one, prefixed with its
        sender; a client that leaves is logged as having left.
        """
        stub = self.load("chat-server")
        self.assertEqual(stub.listening(), [("127.0.0.1", 7002)])
        a, b, c = (stub.dialListener(7002) for _ in range(3))
        stub.flush()
        a.write(b"hello room\n")
        stub.flush()
        self.assertEqual(a.received, b"")
        for other in (b, c):
            self.assertTrue(other.take().endswith(b"> hello room\n"))
        c.loseConnection()
        stub.flush()
        left = [m for m in self.messages("chat-server") if " left" in m]
        self.assertEqual(len(left), 1, left)
        self.assertTrue(left[0].endswith(" left"), left)

    def test_partialLine(self) -> None:
        """
        A client leaving mid-line loses that line, and the log says so; the
        others get nothing from it.
        """
        stub = self.load("chat-server")
        a, b = stub.dialListener(7002), stub.dialListener(7002)
        a.write(b"half a li")
        a.loseConnection()
        stub.flush()
        self.assertEqual(b.received, b"")
        self.assertTrue(
            any(
                m.endswith("left (in the middle of a line)")
                for m in self.messages("chat-server")
            ),
            self.messages("chat-server"),
        )

    def test_longLine(self) -> None:
        """
        A line over 4 KiB disconnects its sender.
        """
        stub = self.load("chat-server")
        a, b = stub.dialListener(7002), stub.dialListener(7002)
        a.write(b"x" * 5000)
        stub.flush()
        self.assertTrue(a.disconnected)
        self.assertFalse(b.disconnected)
        self.assertTrue(
            any(m.endswith("(line too long)") for m in self.messages("chat-server"))
        )


class GossipKitTests(_KitCase):
    """
    C{examples/gossip-a} and C{gossip-b} in memory, the test playing the
    other node.
    """

    def gossip(self, name: str, listenPort: int, peerPort: int) -> None:
        """
        The node listens on C{listenPort}, dials its peer on C{peerPort}
        every interval to swap rumours, and answers a peer that dials in.
        """
        from twisted.internet.protocol import Protocol

        stub = self.load(name)
        self.assertEqual(stub.listening(), [("127.0.0.1", listenPort)])

        class OtherNode(Protocol):
            """
            The peer's side of an exchange it answers.
            """

            received = b""

            def dataReceived(self, data: bytes) -> None:
                self.received += data
                if self.received.endswith(b"END\n"):
                    assert self.transport is not None
                    self.transport.write(b"peer#1: from the test\nEND\n")

        stub.advance(1.0)
        node = OtherNode()
        stub.connectPeer("127.0.0.1", peerPort, protocol=node)
        stub.flush()
        self.assertEqual(node.received, f"{name}#1: hello from {name}\nEND\n".encode())
        self.assertIn(
            f"{name} learned 'peer#1: from the test' from 127.0.0.1:{peerPort}",
            self.messages(name),
        )

        dialer = stub.dialListener(listenPort)
        dialer.write(b"peer#2: dialed in\nEND\n")
        stub.flush()
        answer = dialer.received.decode()
        self.assertTrue(answer.endswith("END\n"), answer)
        self.assertIn("peer#1: from the test\n", answer)
        self.assertTrue(dialer.disconnected)

    def test_gossipA(self) -> None:
        """
        C{gossip-a}: listens on 7011, dials 7012.
        """
        self.gossip("gossip-a", 7011, 7012)

    def test_gossipB(self) -> None:
        """
        C{gossip-b}: listens on 7012, dials 7011.
        """
        self.gossip("gossip-b", 7012, 7011)


class HTTPFetcherKitTests(_KitCase):
    """
    C{examples/http-fetcher} in memory.
    """

    def test_fetches(self) -> None:
        """
        It fetches its configured URL (127.0.0.1:8080, which its manifest
        allows) with treq through C{browser.reactor}, and logs the answer.
        """
        from twisted.web import resource, server

        class Page(resource.Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                return b"a page"

        stub = self.load("http-fetcher")
        stub.flush()
        self.assertEqual(stub.pendingConnections(), [("127.0.0.1", 8080)])
        site = server.Site(Page())
        stub.connectPeer("127.0.0.1", 8080, protocol=site.buildProtocol(None))
        stub.flush()
        self.assertIn(
            "fetched http://127.0.0.1:8080/: 200, 6 bytes: b'a page'",
            self.messages("http-fetcher"),
        )
        self.assertIn("http-fetcher done", self.messages("http-fetcher"))
        self.assertIsNone(self.successResultOf(self.running))

    def test_givesUp(self) -> None:
        """
        A refused connection is retried after C{retryDelay}, a bounded number
        of times, then given up.
        """
        stub = self.load("http-fetcher")
        for _ in range(3):
            stub.flush()
            stub.refuseConnection("127.0.0.1", 8080)
            # HostnameEndpoint notices the refusal on its next attempt tick
            # (0.3 s); the fetcher then waits retryDelay (2 s).
            stub.advance(0.5)
            stub.advance(2.0)
        self.assertIn(
            "giving up on http://127.0.0.1:8080/", self.messages("http-fetcher")
        )
        self.assertIsNone(self.successResultOf(self.running))


class TLSClientKitTests(_KitCase):
    """
    C{examples/tls-client} in memory, over real TLS between the example and
    a TLS server the test plays.
    """

    def test_exchange(self) -> None:
        """
        With the test CA as its C{caFile}, it verifies the server as
        C{localhost}, sends its line and logs the reply.
        """
        from twisted.internet.protocol import Factory, Protocol
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from tests._certs import testPKI

        pki = testPKI()
        folder = os.path.join(os.path.abspath(self.mktemp()), "tls-client")
        shutil.copytree(os.path.join(EXAMPLES, "tls-client"), folder)
        with open(os.path.join(folder, "ca.pem"), "wb") as f:
            f.write(pki.caPEM)
        stub = self.load("tls-client", folder)
        stub.flush()
        heard: list[bytes] = []

        class Reply(Protocol):
            def dataReceived(self, data: bytes) -> None:
                heard.append(data)
                assert self.transport is not None
                self.transport.write(b"you said: " + data)

        tls = TLSMemoryBIOFactory(
            pki.serverOptions(), False, Factory.forProtocol(Reply), clock=stub.reactor
        ).buildProtocol(None)
        stub.connectPeer("127.0.0.1", 7443, protocol=tls)
        # HostnameEndpoint reports the connection on its next tick (0.3 s).
        stub.advance(0.5)
        self.assertEqual(heard, [b"hello over TLS\n"])
        self.assertIn(
            "TLS reply from localhost:7443: 'you said: hello over TLS'",
            self.messages("tls-client"),
        )


class OnDemandKitTests(_KitCase):
    """
    C{examples/on-demand} in memory.
    """

    def test_asksThenTalks(self) -> None:
        """
        It holds no permission at start; it asks for its optional one, and
        once granted connects and pings.
        """
        asked: list[tuple[str, list[str]]] = []

        def prompt(extensionId: str, permissions: list[str]) -> bool:
            asked.append((extensionId, list(permissions)))
            return True

        stub = self.load("on-demand", prompt=prompt)
        stub.flush()
        self.assertEqual(asked, [("on-demand", ["tcp-connect:127.0.0.1:1024-65535"])])
        peer = stub.connectPeer("127.0.0.1", 7001)
        stub.flush()
        self.assertEqual(peer.take(), b"ping 1\n")
        peer.write(b"ping 1\n")
        stub.flush()
        self.assertIn("echo: ping 1", self.messages("on-demand"))

    def test_refused(self) -> None:
        """
        Refused, it asks again later and connects nowhere meanwhile.
        """
        asked: list[str] = []

        def prompt(extensionId: str, permissions: list[str]) -> bool:
            asked.append(extensionId)
            return False

        stub = self.load("on-demand", prompt=prompt)
        stub.flush()
        self.assertEqual(stub.pendingConnections(), [])
        self.assertEqual(len(asked), 1)
