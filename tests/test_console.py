# -*- test-case-name: tests.test_console -*-
"""
End-to-end tests of the operator console: a real C{twistd tcpext} (in
process and C{--isolation process}), steered with the C{tcpext} command.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests._extensions import extensionWithScript
from tests._folders import shortFolder
from tests.test_examples import (
    REPO,
    Twistd,
    copyExample,
    freePorts,
    twistdCommand,
)
from tests.test_isolation import _NO_CONFINEMENT

PERMISSION = "tcp-connect:127.0.0.1:1024-65535"
TIMEOUT = 60.0
POLL = 0.1


class _Echo(socketserver.BaseRequestHandler):
    """
    Sends back what it receives.
    """

    def handle(self) -> None:
        self.request.settimeout(TIMEOUT)
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def startEcho(case: SynchronousTestCase) -> int:
    """
    An echo server on 127.0.0.1 (a free port), in a thread, stopped at the
    end of the test.

    @return: Its port.
    """
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)

    case.addCleanup(stop)
    return int(server.server_address[1])


def waitUntil(
    twistd: Twistd, condition: Callable[[], Any], what: str, timeout: float = TIMEOUT
) -> Any:
    """
    Poll C{condition} until it returns something true (bounded); stop at
    once if twistd has exited.

    @return: What it returned.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if twistd.process.poll() is not None:
            raise AssertionError(f"twistd exited before {what}:\n{twistd.log()}")
        time.sleep(POLL)
    raise AssertionError(f"no {what} within {timeout} s; log:\n{twistd.log()}")


class ConsoleClient:
    """
    The C{tcpext} command, and a scrape of C{/metrics}, for a C{twistd
    tcpext} whose console is on the default socket of its state folder.
    """

    def __init__(
        self, case: SynchronousTestCase, twistd: Twistd, state: str, echoPort: int
    ) -> None:
        """
        @param twistd: The service.
        @param state: Its state folder.
        @param echoPort: The port of the echo server its extension talks to.
        """
        self.case = case
        self.twistd = twistd
        self.state = state
        self.socketPath = os.path.join(state, "admin.sock")
        self.echoPort = echoPort

    def waitForConsole(self) -> None:
        """
        Wait until the console listens.
        """
        self.twistd.waitFor(
            self.twistd.logged("tcpext: operator console on"), "the console"
        )

    def tcpext(
        self, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """
        Run C{python -m tcpext --state STATE ARGS} (bounded).

        @param check: Fail the test unless it exits 0.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        result = subprocess.run(
            [sys.executable, "-m", "tcpext", "--state", self.state, *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"tcpext {' '.join(args)} exited {result.returncode}: "
                f"{result.stderr}\nlog:\n{self.twistd.log()}"
            )
        return result

    def json(self, *args: str) -> Any:
        """
        The C{--json} output of a command.
        """
        return json.loads(self.tcpext("--json", *args).stdout)

    def pending(self) -> list[dict[str, Any]]:
        """
        The pending requests.
        """
        result: list[dict[str, Any]] = self.json("requests")
        return result

    def echoSockets(self) -> list[dict[str, Any]]:
        """
        The on-demand extension's open sockets to the echo server that have
        carried data both ways.
        """
        return [
            s
            for s in self.json("sockets", "on-demand")
            if s["remote"] == f"127.0.0.1:{self.echoPort}"
            and s["bytesIn"] > 0
            and s["bytesOut"] > 0
        ]

    def metrics(self) -> str:
        """
        Scrape C{/metrics} over the UNIX socket with a plain HTTP/1.0
        request.
        """
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(TIMEOUT)
            s.connect(self.socketPath)
            s.sendall(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
                if len(data) > 1 << 22:
                    break
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.0 200") and not head.startswith(
            b"HTTP/1.1 200"
        ):
            raise AssertionError(f"/metrics answered {head!r}")
        return body.decode("utf-8")


class ConsoleService(ConsoleClient):
    """
    A C{twistd tcpext --prompt admin} running the C{on-demand} example
    (aimed at an echo server), with its console on a UNIX socket (by
    default), an audit log, and the C{tcpext} command to talk to it.
    """

    def __init__(
        self,
        case: SynchronousTestCase,
        isolation: str | None,
        admin: str | None = None,
        extra: list[str] | None = None,
    ) -> None:
        """
        @param isolation: The C{--isolation} mode, or L{None} for the
            default.
        @param admin: The C{--admin} endpoint (default: a UNIX socket in a
            short folder).
        @param extra: More twistd arguments.
        """
        echoPort = startEcho(case)
        self.folder = shortFolder(case)
        state = os.path.join(self.folder, "state")
        self.auditPath = os.path.join(self.folder, "audit.jsonl")
        self.extension = copyExample(
            case,
            "on-demand",
            host="127.0.0.1",
            port=echoPort,
            retry=0.5,
            interval=0.2,
        )
        if admin is None:
            admin = "unix:" + os.path.join(state, "admin.sock")
        twistd = Twistd(
            case,
            [
                "--extension",
                self.extension,
                "--prompt",
                "admin",
                "--admin",
                admin,
                "--audit-log",
                self.auditPath,
                *(extra or []),
            ],
            state=state,
            isolation=isolation,
        )
        super().__init__(case, twistd, state, echoPort)


class ConsoleEndToEndMixin:
    """
    The console's whole loop, in one isolation mode.
    """

    isolation: str | None = None

    def test_operatorLoop(self) -> None:
        """
        Through the C{tcpext} command: list the extension and its grants;
        approve its runtime request (it then connects); revoke the grant
        (its live socket is closed); deny its next request (it is then
        remembered: asking again is denied without a new pending request);
        grant from the console (it connects again); follow the audit log;
        scrape the metrics.
        """
        case: Any = self
        service = ConsoleService(case, self.isolation)
        twistd = service.twistd
        service.waitForConsole()

        [status] = service.json("status")
        case.assertEqual(status["id"], "on-demand")
        case.assertEqual(
            status["grants"], {"manifest": [], "operator": [], "stored": []}
        )
        table = service.tcpext("status").stdout
        case.assertIn("on-demand", table)
        case.assertIn(
            "extension 'on-demand' grants: manifest [], operator [], stored []",
            twistd.log(),
        )

        # Approve: the extension connects and talks.
        [request] = waitUntil(twistd, service.pending, "a pending request")
        case.assertEqual(request["permissions"], [PERMISSION])
        case.assertEqual(
            service.tcpext("approve", request["id"]).stdout.strip(),
            f"approved request {request['id']}",
        )
        waitUntil(twistd, service.echoSockets, "the extension's socket")
        case.assertEqual(service.json("grants", "on-demand")["stored"], [PERMISSION])
        case.assertIn(PERMISSION, service.tcpext("grants", "on-demand").stdout)
        again = service.tcpext("approve", request["id"], check=False)
        case.assertEqual(again.returncode, 1)
        case.assertEqual(len(again.stderr.splitlines()), 1)

        # Revoke: the live socket is closed.
        service.tcpext("revoke", "on-demand", PERMISSION)
        waitUntil(twistd, lambda: not service.echoSockets(), "the socket closed")
        case.assertEqual(service.json("grants", "on-demand")["stored"], [])

        # Deny the next request; later requests are denied at once.
        [request] = waitUntil(twistd, service.pending, "a second request")
        service.tcpext("deny", request["id"])
        waitUntil(
            twistd,
            twistd.logged("refused earlier in this run; denied without asking"),
            "a remembered refusal",
        )
        case.assertEqual(service.pending(), [])

        # Grant from the console: the memory is cleared, it connects again.
        service.tcpext("grant", "on-demand", PERMISSION)
        waitUntil(twistd, service.echoSockets, "the extension's socket again")

        # The audit trail, followed.
        follow = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tcpext",
                "--state",
                service.state,
                "--json",
                "audit",
                "--follow",
                "--interval",
                "0.2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": REPO},
        )
        case.addCleanup(follow.wait, TIMEOUT)
        case.addCleanup(follow.kill)
        assert follow.stdout is not None
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + TIMEOUT
        wanted = {
            ("request", "allow"),
            ("revoke", "deny"),
            ("request", "deny"),
            ("grant", "allow"),
            ("connect", "allow"),
            ("connect", "deny"),
        }
        # Lines are read in a thread so that the wait for each is bounded.
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(
            target=lambda: [lines.put(line) for line in follow.stdout],  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(json.loads(line))
            if wanted <= {(e["verb"], e["decision"]) for e in seen}:
                break
        follow.kill()
        case.assertTrue(wanted <= {(e["verb"], e["decision"]) for e in seen}, seen)
        case.assertEqual([e["seq"] for e in seen], list(range(1, len(seen) + 1)))
        connects = [e for e in seen if e["verb"] == "connect"]
        case.assertEqual(connects[0]["target"], f"127.0.0.1:{service.echoPort}")
        case.assertEqual(connects[0]["grant"], PERMISSION)
        [closed] = [e for e in connects if e["decision"] == "deny"]
        case.assertEqual(closed["reason"], "the grant was removed")
        if self.isolation == "process":
            # The extension's own process closed it, and told the host.
            case.assertEqual(closed["origin"], "child")
        with open(service.auditPath, encoding="utf-8") as f:
            logged = [json.loads(line) for line in f]
        case.assertEqual(
            [e["seq"] for e in logged[: len(seen)]], [e["seq"] for e in seen]
        )

        # Metrics.
        metrics = service.metrics()
        case.assertIn(
            'tcpext_decisions_total{extension="on-demand",outcome="allow",'
            'verb="request"} 1.0',
            metrics,
        )
        case.assertIn(
            'tcpext_open_sockets{extension="on-demand",kind="client"} 1.0', metrics
        )
        case.assertIn(
            'tcpext_extension_state{extension="on-demand",state="running"}', metrics
        )
        if self.isolation == "process":
            case.assertIn(
                'tcpext_child_restarts_total{extension="on-demand"} 0.0', metrics
            )
        case.assertEqual(twistd.terminate(), 0)


class ConsoleInProcessTests(ConsoleEndToEndMixin, SynchronousTestCase):
    """
    The console with the extension running in the service's process.
    """

    isolation = "none"


class ConsoleIsolatedTests(ConsoleEndToEndMixin, SynchronousTestCase):
    """
    The console with the extension running isolated (C{--isolation
    process}): the grant reaches the running child at once, the revoke
    closes its socket (the host's copy included).
    """

    isolation = "process"

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"


class OperatorGrantTests(SynchronousTestCase):
    """
    Grants given with C{--grant}, and manifest permissions, seen from the
    console.
    """

    def test_revokeForThisRun(self) -> None:
        """
        A C{--grant} is listed as an operator grant; revoking it closes the
        socket it allowed, for this run only: the next run has it again.  A
        manifest permission cannot be revoked (exit 1, 409).
        """
        echoPort = startEcho(self)
        folder = shortFolder(self)
        state = os.path.join(folder, "state")
        extension = copyExample(
            self, "on-demand", port=echoPort, retry=0.5, interval=0.2
        )
        listener = copyExample(self, "echo-server")
        args = [
            "--extension",
            extension,
            "--extension",
            listener,
            "--grant",
            f"on-demand={PERMISSION}",
            "--admin",
            "unix:" + os.path.join(state, "admin.sock"),
        ]

        def start() -> ConsoleClient:
            twistd = Twistd(self, args, state=state, isolation="none")
            service = ConsoleClient(self, twistd, state, echoPort)
            service.waitForConsole()
            return service

        service = start()
        twistd = service.twistd
        waitUntil(twistd, service.echoSockets, "the socket the --grant allows")
        self.assertEqual(
            service.json("grants", "on-demand"),
            {"manifest": [], "operator": [PERMISSION], "stored": []},
        )
        self.assertIn(
            f"extension 'on-demand' grants: manifest [], operator [{PERMISSION}], "
            "stored []",
            twistd.log(),
        )
        service.tcpext("revoke", "on-demand", PERMISSION)
        waitUntil(twistd, lambda: not service.echoSockets(), "the socket closed")
        self.assertEqual(service.json("grants", "on-demand")["operator"], [])
        # The listening socket, and a connection it accepted.
        with open(os.path.join(listener, "config.json"), encoding="utf-8") as f:
            listenPort = json.load(f)["port"]
        [server] = waitUntil(
            twistd,
            lambda: [
                s
                for s in service.json("sockets", "echo-server")
                if s["kind"] == "server"
            ],
            "the echo server's listening socket",
        )
        self.assertEqual(server["local"], f"127.0.0.1:{listenPort}")
        self.assertIsInstance(server["openedAt"], float)
        with socket.create_connection(("127.0.0.1", listenPort), timeout=TIMEOUT) as c:
            c.sendall(b"hello\n")
            self.assertEqual(c.recv(6), b"hello\n")
            [accepted] = [
                s
                for s in service.json("sockets", "echo-server")
                if s["kind"] == "accepted"
            ]
            self.assertEqual(accepted["local"], f"127.0.0.1:{listenPort}")
            self.assertEqual(accepted["remote"], f"127.0.0.1:{c.getsockname()[1]}")
            self.assertEqual((accepted["bytesIn"], accepted["bytesOut"]), (6, 6))
            self.assertIsInstance(accepted["openedAt"], float)
        [manifestGrant] = service.json("grants", "echo-server")["manifest"]
        refused = service.tcpext("revoke", "echo-server", manifestGrant, check=False)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("409", refused.stderr)
        self.assertEqual(len(refused.stderr.splitlines()), 1)
        self.assertEqual(twistd.terminate(), 0)

        again = start()
        self.assertEqual(again.json("grants", "on-demand")["operator"], [PERMISSION])
        waitUntil(again.twistd, again.echoSockets, "the socket in the next run")
        self.assertEqual(again.twistd.terminate(), 0)


class ServerRevokeMixin:
    """
    Revoking a listen grant from the console closes the server it allowed
    and the connections that server accepted, in one isolation mode.
    """

    isolation: str = "none"

    def test_revokeClosesServer(self) -> None:
        """
        The C{echo-server} example listens on a port only its C{--grant}
        allows; C{tcpext revoke} of that grant ends the connection it
        accepted (the client sees the end of the stream) and the port stops
        accepting; the console lists no socket of it any more.
        """
        case: Any = self
        folder = shortFolder(case)
        state = os.path.join(folder, "state")
        [port] = freePorts(1)
        listener = copyExample(case, "echo-server", port=port)
        grant = "tcp-listen:1024-65535"
        twistd = Twistd(
            case,
            [
                "--extension",
                listener,
                "--grant",
                f"echo-server={grant}",
                "--admin",
                "unix:" + os.path.join(state, "admin.sock"),
            ],
            state=state,
            isolation=self.isolation,
        )
        service = ConsoleClient(case, twistd, state, 0)
        service.waitForConsole()
        twistd.waitFor(
            twistd.logged(f"echo server listening on 127.0.0.1:{port}"),
            "the echo server",
            ["echo-server"],
        )
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as c:
            c.sendall(b"hello\n")
            case.assertEqual(c.recv(6), b"hello\n")
            service.tcpext("revoke", "echo-server", grant)
            # The accepted connection ends: EOF, or a reset.
            try:
                ended = c.recv(100)
            except ConnectionResetError:
                ended = b""
            case.assertEqual(ended, b"")
        refused = waitUntil(
            twistd,
            lambda: not _accepts(port),
            "the port to stop accepting",
        )
        case.assertTrue(refused)
        case.assertEqual(service.json("sockets", "echo-server"), [])
        case.assertEqual(service.json("grants", "echo-server")["operator"], [])
        case.assertEqual(twistd.terminate(), 0)


def _accepts(port: int) -> bool:
    """
    Does 127.0.0.1:C{port} accept a connection now?
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT):
            return True
    except OSError:
        return False


class ServerRevokeInProcessTests(ServerRevokeMixin, SynchronousTestCase):
    """
    A listen grant revoked from the console, in the service's process.
    """

    isolation = "none"


class ServerRevokeIsolatedTests(ServerRevokeMixin, SynchronousTestCase):
    """
    A listen grant revoked from the console, isolated: the extension's
    process closes its server and what it accepted, and the host shuts its
    copy of the listening socket down.
    """

    isolation = "process"

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"


RAW_EXTENSION = """
from twisted.internet.protocol import Factory, Protocol


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Hello(Protocol):
    def connectionMade(self):
        self.transport.write(b"hello")


def main(browser):
    reactor = browser.reactor
    reactor.listenTCP(PORT, Factory.forProtocol(Echo), interface="127.0.0.1")
    reactor.connectTCP("127.0.0.1", PORT, Factory.forProtocol(Hello))
"""


class ReactorSocketsTests(SynchronousTestCase):
    """
    What an extension opens through C{browser.reactor} (its own Twisted
    protocols) is listed too.
    """

    def test_listed(self) -> None:
        """
        A port, a connection to it and the connection it accepted, with the
        kernel's byte counts.
        """
        from tests.test_examples import freePort

        port = freePort()
        folder = shortFolder(self)
        state = os.path.join(folder, "state")
        extension = extensionWithScript(
            folder,
            "raw",
            [f"tcp-listen:127.0.0.1:{port}", f"tcp-connect:127.0.0.1:{port}"],
            RAW_EXTENSION.replace("PORT", str(port)),
        )
        twistd = Twistd(
            self,
            [
                "--extension",
                extension,
                "--admin",
                "unix:" + os.path.join(state, "admin.sock"),
            ],
            state=state,
            isolation="none",
        )
        client = ConsoleClient(self, twistd, state, port)
        client.waitForConsole()

        def listed() -> dict[str, dict[str, Any]]:
            sockets = client.json("sockets", "raw")
            kinds = {s["kind"]: s for s in sockets}
            if set(kinds) == {"server", "client", "accepted"} and all(
                s["bytesIn"] + s["bytesOut"] > 0
                for s in sockets
                if s["kind"] != "server"
            ):
                return kinds
            return {}

        kinds = waitUntil(twistd, listed, "the extension's sockets")
        self.assertEqual(kinds["server"]["local"], f"127.0.0.1:{port}")
        self.assertEqual(kinds["client"]["remote"], f"127.0.0.1:{port}")
        self.assertEqual(kinds["client"]["bytesOut"], 5)
        self.assertEqual(kinds["accepted"]["bytesIn"], 5)
        self.assertEqual(kinds["accepted"]["local"], f"127.0.0.1:{port}")
        for s in kinds.values():
            self.assertIsInstance(s["openedAt"], float)
            self.assertIs(s["tls"], False)
        self.assertEqual(twistd.terminate(), 0)


REFUSED_EXTENSION = """
from twisted.internet.protocol import ClientFactory, Protocol


def main(browser):
    # Not granted: this process refuses it without asking the host.
    browser.reactor.connectTCP("127.0.0.1", PORT, ClientFactory.forProtocol(Protocol))
"""


FORGING_EXTENSION = """
import gc

from twisted.internet.protocol import ClientFactory, Protocol

from tcpext import sandbox
from tcpext._wire import ChildRefused, Hello


def main(browser):
    # Skip the browser: report refusals of its own making (invented verbs,
    # and verbs that pass for the operator's) straight to the host.
    [host] = [o for o in gc.get_objects() if isinstance(o, sandbox.HostConnection)]
    # Pose as the process's start: lines of its making in the host's log.
    layers = ["network namespace", "Landlock ABI 7", "seccomp"]
    host.callRemote(
        Hello, confined=True, reason="", pid=1, layers=layers + ["\\x1b[31m\\nFORGED"]
    ).addErrback(lambda f: None)
    host.callRemote(
        Hello, confined=False, reason="FORGED", pid=2, layers=[]
    ).addErrback(lambda f: None)
    verbs = ["revoke", "grant", "request", "suppressed"]
    verbs += ["forged-%d" % i for i in range(COUNT)]
    for verb in verbs:
        host.callRemote(
            ChildRefused,
            verb=verb,
            target="tcp-connect:*:*",
            reason="revoked by the operator (console)",
        )
    # Then one genuine refusal: once it is recorded, so are the reports.
    browser.reactor.connectTCP("127.0.0.1", 2, ClientFactory.forProtocol(Protocol))
"""


class ChildRefusalTests(SynchronousTestCase):
    """
    What an isolated extension's own process refuses reaches the audit
    trail, once.
    """

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"

    def test_reported(self) -> None:
        """
        A connect the extension's grants do not allow is refused in its
        process and recorded by the host as one denial with C{"origin":
        "child"}.
        """
        folder = shortFolder(self)
        state = os.path.join(folder, "state")
        extension = extensionWithScript(
            folder,
            "refused",
            ["tcp-connect:127.0.0.1:1"],
            REFUSED_EXTENSION.replace("PORT", "2"),
        )
        auditPath = os.path.join(folder, "audit.jsonl")
        twistd = Twistd(
            self,
            [
                "--extension",
                extension,
                "--admin",
                "unix:" + os.path.join(state, "admin.sock"),
                "--audit-log",
                auditPath,
            ],
            state=state,
            isolation="process",
        )
        client = ConsoleClient(self, twistd, state, 2)
        client.waitForConsole()

        def refusals() -> list[dict[str, Any]]:
            events = [
                json.loads(line)
                for line in client.tcpext("--json", "audit").stdout.splitlines()
            ]
            return [
                e
                for e in events
                if e["extension"] == "refused" and e["decision"] == "deny"
            ]

        [event] = waitUntil(twistd, refusals, "the child's refusal in the audit")
        self.assertEqual(event["verb"], "connect")
        self.assertEqual(event["target"], "127.0.0.1:2")
        self.assertEqual(event["origin"], "child")
        self.assertTrue(event["reason"])
        self.assertEqual(twistd.terminate(), 0)
        with open(auditPath, encoding="utf-8") as f:
            logged = [json.loads(line) for line in f]
        self.assertEqual(
            [e["origin"] for e in logged if e["decision"] == "deny"], ["child"]
        )

    def test_forgedReports(self) -> None:
        """
        An extension's process that sends the host refusal reports of its
        own making gets only the verbs its process can refuse recorded: an
        invented verb, or one that passes for the operator's (C{revoke},
        C{grant}), is neither in the audit trail nor a new series of the
        metrics (each new verb label would cost the host memory for the
        service's lifetime).  A C{Hello} it sends, posing as its process's
        start, puts no line of its making in the host's log and does not
        stop it.
        """
        folder = shortFolder(self)
        state = os.path.join(folder, "state")
        extension = os.path.join(folder, "forger")
        os.makedirs(extension)
        with open(os.path.join(extension, "manifest.json"), "w") as f:
            json.dump(
                {
                    "manifest_version": 2,
                    "name": "forger",
                    "version": "1.0",
                    "permissions": ["tcp-connect:127.0.0.1:1"],
                    "background": {"scripts": ["background.py"]},
                },
                f,
            )
        with open(os.path.join(extension, "background.py"), "w") as f:
            f.write(FORGING_EXTENSION.replace("COUNT", "40"))
        twistd = Twistd(
            self,
            [
                "--extension",
                extension,
                "--admin",
                "unix:" + os.path.join(state, "admin.sock"),
            ],
            state=state,
            isolation="process",
        )
        client = ConsoleClient(self, twistd, state, 2)
        client.waitForConsole()

        def denials() -> list[dict[str, Any]]:
            events = [
                json.loads(line)
                for line in client.tcpext("--json", "audit").stdout.splitlines()
            ]
            found = [e for e in events if e["extension"] == "forger"]
            if any(e["target"] == "127.0.0.1:2" for e in found):
                return found
            return []

        events = waitUntil(twistd, denials, "the genuine refusal in the audit")
        self.assertEqual(
            [(e["verb"], e["target"], e.get("origin")) for e in events],
            [("connect", "127.0.0.1:2", "child")],
        )
        metrics = client.metrics()
        verbs = {
            line.split('verb="', 1)[1].split('"', 1)[0]
            for line in metrics.splitlines()
            if line.startswith("tcpext_decisions_total{")
        }
        self.assertEqual(verbs, {"connect"})
        log = twistd.log()
        self.assertNotIn("FORGED", log)
        self.assertNotIn("not confined", log)
        self.assertIn("broker refused a second Hello", log)
        self.assertEqual(twistd.terminate(), 0)


CONSOLE_USER_EXTENSION = """
import json

from twisted.logger import Logger

log = Logger()


async def main(browser):
    # It may read the token file (as the service's user), and its grant
    # reaches the console's address: it tries to act as the operator.
    with open(TOKEN_PATH) as f:
        token = f.read().strip()
    sock = await browser.TCPSocket.connect(host="127.0.0.1", port=PORT)
    await sock.opened
    body = json.dumps({"permission": "tcp-connect:*:*"}).encode()
    await sock.write(
        b"POST /api/v1/extensions/intruder/grants HTTP/1.1\\r\\n"
        b"Host: localhost\\r\\nContent-Type: application/json\\r\\n"
        b"Authorization: Bearer " + token.encode() + b"\\r\\n"
        b"Content-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % len(body)
        + body
    )
    answer = b""
    async for chunk in sock:
        answer += chunk
    log.info("the console answered {status}", status=answer.split(b"\\r\\n")[0])
"""


class ExtensionAsOperatorTests(SynchronousTestCase):
    """
    An extension whose grant reaches a TCP console, and that reads the
    token file, cannot use the console.
    """

    def refused(self, isolation: str) -> None:
        """
        Run the intruding extension with C{isolation}: the console answers
        it 403 and it gains no grant.
        """
        from tests.test_examples import freePort

        port = freePort()
        folder = shortFolder(self)
        tokenPath = os.path.join(folder, "token")
        with open(tokenPath, "w") as f:
            f.write("intruder-test-token\n")
        extension = extensionWithScript(
            folder,
            "intruder",
            [f"tcp-connect:127.0.0.1:{port}"],
            CONSOLE_USER_EXTENSION.replace("TOKEN_PATH", repr(tokenPath)).replace(
                "PORT", str(port)
            ),
            optional=["tcp-connect:*:*"],
        )
        twistd = Twistd(
            self,
            [
                "--extension",
                extension,
                "--admin",
                f"tcp:{port}:interface=127.0.0.1",
                "--admin-token-file",
                tokenPath,
            ],
            isolation=isolation,
        )
        twistd.waitFor(
            twistd.logged("the console answered"), "the console's answer", ["intruder"]
        )
        self.assertIn("the console answered b'HTTP/1.1 403 Forbidden'", twistd.log())
        self.assertNotIn("granted", twistd.log())
        self.assertEqual(twistd.terminate(), 0)
        self.assertNotIn("tcp-connect:*:*", twistd.log())

    def test_inProcess(self) -> None:
        """
        In the service's process.
        """
        self.refused("none")

    def test_isolated(self) -> None:
        """
        Isolated (the extension's process may read the token file, but its
        connection is the host's, and recognised).
        """
        if _NO_CONFINEMENT is not None:
            raise SkipTest(f"this system cannot confine: {_NO_CONFINEMENT}")
        self.refused("process")


class ConsoleStartupTests(SynchronousTestCase):
    """
    What the console refuses at start.
    """

    def startFails(self, *args: str) -> str:
        """
        Start twistd with C{args}; it must exit non-zero; return its output.
        """
        folder = shortFolder(self)
        extension = copyExample(self, "on-demand")
        result = subprocess.run(
            twistdCommand(
                os.path.join(folder, "log"),
                os.path.join(folder, "state"),
                "--extension",
                extension,
                *args,
            ),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={**os.environ, "PYTHONPATH": REPO},
            stdin=subprocess.DEVNULL,
        )
        self.assertNotEqual(result.returncode, 0)
        return result.stdout + result.stderr

    def test_adminNoneWithPromptAdmin(self) -> None:
        """
        C{--prompt admin} needs the console.
        """
        out = self.startFails("--admin", "none", "--prompt", "admin")
        self.assertIn("--prompt admin needs the console", out)

    def test_tcpNeedsToken(self) -> None:
        """
        A TCP console without a token file is refused.
        """
        out = self.startFails("--admin", "tcp:0:interface=127.0.0.1")
        self.assertIn("--admin-token-file", out)

    def test_pathTooLong(self) -> None:
        """
        A socket path past the limit is refused, naming the limit.
        """
        out = self.startFails("--admin", "unix:/tmp/" + "x" * 120)
        self.assertIn("at most 107 bytes", out)

    def test_badTimeout(self) -> None:
        """
        C{--prompt-timeout} must be a positive number.
        """
        for value in ("0", "-5", "soon", "inf", "nan"):
            out = self.startFails("--prompt-timeout", value)
            self.assertIn("--prompt-timeout", out)
