# -*- test-case-name: tests.test_testing -*-
"""
Tests for L{tcpext.testing}, including the example of docs/extensions.md.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionLost, DNSLookupError
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase

from tcpext.testing import FakeResolver, Peer, StubBrowser

# The echo extension of docs/extensions.md ("Testing with tcpext.testing").


async def main(browser):  # type: ignore[no-untyped-def]
    server = await browser.TCPSocket.listen({"port": 7000})
    defer.ensureDeferred(serve(server))


async def serve(server):  # type: ignore[no-untyped-def]
    async for conn in server.connections:
        defer.ensureDeferred(echo(conn))


async def echo(conn):  # type: ignore[no-untyped-def]
    async for chunk in conn:
        await conn.write(chunk)
    await conn.close()


class EchoTests(SynchronousTestCase):
    def test_echo(self):  # type: ignore[no-untyped-def]
        """
        The echo extension sends back what a client sends (the example in
        docs/extensions.md, verbatim).
        """
        stub = StubBrowser(permissions=["tcp-listen:7000"])
        self.successResultOf(stub.run(main))
        peer = stub.dialListener(7000)
        peer.write(b"hello")
        stub.flush()
        self.assertEqual(peer.received, b"hello")
        peer.loseConnection()
        stub.flush()
        self.assertTrue(peer.disconnected)


# A client extension: asks a line of a time server by name.


async def clientMain(browser: Any) -> bytes:
    """
    Connect to time.example:37 and return the first line.
    """
    sock = await browser.TCPSocket.connect(host="time.example", port=37)
    await sock.write(b"time?\n")
    line: bytes = await sock.readUntil(b"\n")
    await sock.close()
    return line


class ClientExtensionTests(SynchronousTestCase):
    """
    Driving an extension that connects out.
    """

    def test_client(self) -> None:
        """
        L{StubBrowser.connectPeer} answers the extension's connection with a
        L{Peer}; the name is resolved by the L{FakeResolver}.
        """
        stub = StubBrowser(
            permissions=["tcp-connect:time.example:37"],
            names={"time.example": ["93.184.216.34"]},
        )
        d = stub.run(clientMain)
        self.assertEqual(stub.pendingConnections(), [("93.184.216.34", 37)])
        peer = stub.connectPeer("93.184.216.34", 37)
        self.assertEqual(peer.take(), b"time?\n")
        peer.write(b"12:00\n")
        stub.flush()
        self.assertEqual(self.successResultOf(d), b"12:00\n")
        self.assertTrue(peer.disconnected)
        self.assertEqual(stub.resolver.lookups, ["time.example"])

    def test_refused(self) -> None:
        """
        L{StubBrowser.refuseConnection} fails the attempt.
        """
        stub = StubBrowser(
            permissions=["tcp-connect:time.example:37"],
            names={"time.example": ["93.184.216.34"]},
        )
        d = stub.run(clientMain)
        stub.refuseConnection()
        self.assertTrue(self.failureResultOf(d))
        self.assertEqual(stub.pendingConnections(), [])

    def test_customServerProtocol(self) -> None:
        """
        C{connectPeer} accepts any protocol to play the server.
        """

        class Greeter(Protocol):
            def connectionMade(self) -> None:
                assert self.transport is not None
                self.transport.write(b"hi\n")

        stub = StubBrowser(
            permissions=["tcp-connect:time.example:37"],
            names={"time.example": ["93.184.216.34"]},
        )
        d = stub.run(clientMain)
        server = stub.connectPeer(protocol=Greeter())
        self.assertIsInstance(server, Greeter)
        self.assertEqual(self.successResultOf(d), b"hi\n")

    def test_noSuchConnection(self) -> None:
        """
        Answering a connection that was not made is a L{LookupError} that
        lists what is pending.
        """
        stub = StubBrowser()
        exc = self.assertRaises(LookupError, stub.connectPeer, "192.0.2.1", 80)
        self.assertIn("192.0.2.1:80", str(exc))
        self.assertRaises(LookupError, stub.refuseConnection)

    def test_unknownName(self) -> None:
        """
        A name not in the resolver's table does not resolve.
        """
        stub = StubBrowser(permissions=["tcp-connect:time.example:37"])
        self.failureResultOf(stub.run(clientMain), DNSLookupError)


class ListenerTests(SynchronousTestCase):
    """
    Tests for L{StubBrowser.dialListener} and L{StubBrowser.listening}.
    """

    def test_nothingListens(self) -> None:
        """
        Dialing a port nobody listens on is a L{LookupError}.
        """
        stub = StubBrowser()
        exc = self.assertRaises(LookupError, stub.dialListener, 7000)
        self.assertIn("7000", str(exc))

    def test_automaticPort(self) -> None:
        """
        An automatic port gets a real number that C{dialListener} reaches.
        """
        stub = StubBrowser(permissions=["tcp-listen:*"])
        server = self.successResultOf(stub.browser.TCPSocket.listen())
        self.assertNotEqual(server.localPort, 0)
        self.assertEqual(stub.listening(), [("0.0.0.0", server.localPort)])
        peer = stub.dialListener(server.localPort)
        conn = self.successResultOf(
            defer.ensureDeferred(server.connections.__anext__())
        )
        self.assertEqual(conn.remoteAddress, "127.0.0.1")
        peer.write(b"x")
        stub.flush()
        self.assertEqual(self.successResultOf(conn.read()), b"x")

    def test_closedServer(self) -> None:
        """
        Once the server is closed, nothing listens there.
        """
        stub = StubBrowser(permissions=["tcp-listen:7000"])
        server = self.successResultOf(stub.browser.TCPSocket.listen(port=7000))
        self.successResultOf(server.close())
        self.assertEqual(stub.listening(), [])
        self.assertRaises(LookupError, stub.dialListener, 7000)

    def test_abort(self) -> None:
        """
        A peer can drop the connection; the extension's socket sees it.
        """
        stub = StubBrowser(permissions=["tcp-listen:7000"])
        server = self.successResultOf(stub.browser.TCPSocket.listen(port=7000))
        peer = stub.dialListener(7000)
        conn = self.successResultOf(
            defer.ensureDeferred(server.connections.__anext__())
        )
        closed = conn.closed
        peer.abortConnection()
        stub.flush()
        self.assertTrue(peer.disconnected)
        self.assertTrue(closed.called)


class FakeResolverTests(SynchronousTestCase):
    """
    Tests for L{FakeResolver}.
    """

    def resolve(self, resolver: FakeResolver, name: str) -> list[Any]:
        """
        The addresses C{resolver} gives for C{name} on port 80.
        """
        got: list[Any] = []
        done: list[bool] = []

        class Receiver:
            def resolutionBegan(self, resolution: Any) -> None:
                pass

            def addressResolved(self, address: Any) -> None:
                got.append(address)

            def resolutionComplete(self) -> None:
                done.append(True)

        resolver.resolveHostName(Receiver(), name, 80)
        self.assertEqual(done, [True])
        return got

    def test_resolve(self) -> None:
        """
        Names resolve to their addresses, case-insensitively and ignoring a
        trailing dot; lookups are recorded.
        """
        resolver = FakeResolver({"Example.com": ["192.0.2.1", "2001:db8::1"]})
        self.assertEqual(
            self.resolve(resolver, "EXAMPLE.com."),
            [
                IPv4Address("TCP", "192.0.2.1", 80),
                IPv6Address("TCP", "2001:db8::1", 80),
            ],
        )
        self.assertEqual(self.resolve(resolver, "other.example"), [])
        self.assertEqual(resolver.lookups, ["EXAMPLE.com.", "other.example"])

    def test_add(self) -> None:
        """
        C{add} replaces a name's answers.
        """
        resolver = FakeResolver({"example.com": ["192.0.2.1"]})
        resolver.add("example.com", "192.0.2.2")
        self.assertEqual(
            self.resolve(resolver, "example.com"),
            [IPv4Address("TCP", "192.0.2.2", 80)],
        )


class PeerTests(SynchronousTestCase):
    """
    Tests for L{Peer}.
    """

    def test_unconnected(self) -> None:
        """
        A new peer has received nothing and is not connected.
        """
        peer = Peer()
        self.assertEqual(
            (peer.received, peer.connected, peer.disconnected), (b"", False, False)
        )

    def test_take(self) -> None:
        """
        C{take} returns and forgets what was received.
        """
        peer = Peer()
        peer.dataReceived(b"a")
        peer.dataReceived(b"b")
        self.assertEqual(peer.take(), b"ab")
        self.assertEqual(peer.received, b"")

    def test_disconnected(self) -> None:
        """
        C{connectionLost} records the reason.
        """
        peer = Peer()
        peer.connectionLost(defer.Failure(ConnectionLost()))  # type: ignore[attr-defined]
        self.assertTrue(peer.disconnected)


class FlushTests(SynchronousTestCase):
    """
    Tests for L{StubBrowser.flush} and L{StubBrowser.advance}.
    """

    def test_chatty(self) -> None:
        """
        Two ends that never stop talking make C{flush} raise instead of
        hanging.
        """

        class Chatty(Peer):
            def dataReceived(self, data: bytes) -> None:
                assert self.transport is not None
                self.transport.write(data)

        stub = StubBrowser(permissions=["tcp-listen:7000"])
        server = self.successResultOf(stub.browser.TCPSocket.listen(port=7000))
        stub.dialListener(7000, protocol=Chatty())
        conn = self.successResultOf(
            defer.ensureDeferred(server.connections.__anext__())
        )

        async def bounce() -> None:
            async for chunk in conn:
                await conn.write(chunk)

        defer.ensureDeferred(bounce())
        conn.write(b"ping")
        self.assertRaises(RuntimeError, stub.flush)

    def test_advance(self) -> None:
        """
        C{advance} moves the clock.
        """
        stub = StubBrowser()
        called: list[bool] = []
        stub.reactor.callLater(5, called.append, True)
        stub.advance(4)
        self.assertEqual(called, [])
        stub.advance(1)
        self.assertEqual(called, [True])


class ManifestIdTests(SynchronousTestCase):
    """
    The stub browser's id is the manifest's name, as under the host.
    """

    def test_manifestName(self) -> None:
        """
        Given a manifest, C{browser.runtime.id} is its C{name}.
        """
        stub = StubBrowser({"manifest_version": 2, "name": "greeter", "version": "1"})
        self.assertEqual(stub.browser.runtime.id, "greeter")

    def test_explicitId(self) -> None:
        """
        An explicit C{extensionId} still wins.
        """
        stub = StubBrowser(
            {"manifest_version": 2, "name": "greeter", "version": "1"},
            extensionId="other",
        )
        self.assertEqual(stub.browser.runtime.id, "other")

    def test_noManifest(self) -> None:
        """
        Without a manifest the id is C{test-extension}, also the name of the
        manifest made up for it.
        """
        stub = StubBrowser(permissions=["tcp-listen:7000"])
        self.assertEqual(stub.browser.runtime.id, "test-extension")
        self.assertEqual(stub.browser.runtime.getManifest()["name"], "test-extension")


def writeFolder(base: str, name: str, script: str, **manifest: Any) -> str:
    """
    Write an extension folder C{base/name} with C{script} as its background
    script; C{manifest} adds to (or replaces) the manifest's fields.
    """
    import json
    import os

    folder = os.path.join(base, name)
    os.makedirs(folder)
    fields: dict[str, Any] = {
        "manifest_version": 2,
        "name": name,
        "version": "1.0",
        "permissions": ["tcp-listen:7000"],
        "background": {"scripts": ["background.py"]},
    }
    fields.update(manifest)
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(fields, f)
    with open(os.path.join(folder, "background.py"), "w", encoding="utf-8") as f:
        f.write(script)
    return folder


ECHO_SCRIPT = """
import json, os
from twisted.internet import defer

HERE = os.path.dirname(os.path.abspath(__file__))

async def main(browser):
    with open(os.path.join(HERE, "port.json")) as f:
        port = json.load(f)
    server = await browser.TCPSocket.listen({"port": port})
    async for conn in server.connections:
        defer.ensureDeferred(echo(conn))

async def echo(conn):
    async for chunk in conn:
        await conn.write(chunk)
    await conn.close()
"""


class FromFolderTests(SynchronousTestCase):
    """
    L{StubBrowser.fromFolder} loads an extension as the host does, and
    L{StubBrowser.close} ends it.
    """

    def setUp(self) -> None:
        """
        A scratch folder.
        """
        import os

        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)

    def test_loadAndRun(self) -> None:
        """
        The folder's manifest and C{main} are loaded (the script finds files
        next to it); the browser has the manifest's id and permissions;
        C{start} runs C{main}.
        """
        import os

        folder = writeFolder(self.base, "echoer", ECHO_SCRIPT)
        with open(os.path.join(folder, "port.json"), "w") as f:
            f.write("7000")
        stub = StubBrowser.fromFolder(folder)
        self.addCleanup(stub.close)
        self.assertEqual(stub.browser.runtime.id, "echoer")
        assert stub.manifest is not None
        self.assertEqual(stub.manifest.path, folder)
        running = stub.start()
        self.assertNoResult(running)
        self.assertEqual(stub.listening(), [("0.0.0.0", 7000)])
        peer = stub.dialListener(7000)
        peer.write(b"hello")
        stub.flush()
        self.assertEqual(peer.received, b"hello")

    def test_badFolder(self) -> None:
        """
        A folder the host would refuse raises the host's error.
        """
        from tcpext.extension import ExtensionError

        folder = writeFolder(
            self.base, "bad", "def main(browser): pass\n", permissions=["tcp-listen:0"]
        )
        error = self.assertRaises(ExtensionError, StubBrowser.fromFolder, folder)
        self.assertIn("tcp-listen:0", str(error))

    def test_startWithoutFolder(self) -> None:
        """
        C{start} needs an extension loaded from a folder.
        """
        self.assertRaises(RuntimeError, StubBrowser().start)

    def test_grants(self) -> None:
        """
        Other arguments reach the stub: operator grants, for one.
        """
        folder = writeFolder(
            self.base,
            "asker",
            "def main(browser): pass\n",
            permissions=[],
            optional_permissions=["tcp-connect:example.com:443"],
        )
        stub = StubBrowser.fromFolder(folder, grants=["tcp-connect:example.com:443"])
        self.assertTrue(stub.browser.grants.allowsConnect("example.com", 443))

    def test_closeEndsMain(self) -> None:
        """
        C{close} cancels a C{main} still running (its L{Deferred} then fires
        with L{None}: the cancellation is not an error of the test), closes
        the extension's servers and sockets, and has fired when it returns;
        the peer sees the end.
        """
        import os

        folder = writeFolder(self.base, "echoer", ECHO_SCRIPT)
        with open(os.path.join(folder, "port.json"), "w") as f:
            f.write("7000")
        stub = StubBrowser.fromFolder(folder)
        running = stub.start()
        peer = stub.dialListener(7000)
        self.successResultOf(stub.close())
        self.assertIsNone(self.successResultOf(running))
        self.assertEqual(stub.listening(), [])
        self.assertTrue(peer.disconnected)

    def test_closeKeepsOtherFailures(self) -> None:
        """
        A C{main} that already failed keeps its failure for the test.
        """
        stub = StubBrowser()

        def main(browser: Any) -> None:
            raise ValueError("mine")

        failed = stub.run(main)
        self.successResultOf(stub.close())
        self.failureResultOf(failed, ValueError)


class CleanupTests(SynchronousTestCase):
    """
    Without the kit's cleanup, a coroutine left waiting in a C{finally} is
    closed by the garbage collector after the test, and Python complains;
    with C{addCleanup(stub.close)} it ends inside the test.
    """

    def runTrial(self, cleanup: bool) -> str:
        """
        Run, in a trial of its own, a test that leaves an extension waiting
        inside C{try: ... finally: await sock.close()}; return what trial
        printed.
        """
        import os
        import subprocess
        import sys
        import textwrap

        base = os.path.abspath(self.mktemp())
        package = os.path.join(base, "kitcheck")
        os.makedirs(package)
        with open(os.path.join(package, "__init__.py"), "w"):
            pass
        waiter = writeFolder(
            base,
            "waiter",
            textwrap.dedent(
                """
                async def main(browser):
                    sock = await browser.TCPSocket.connect(
                        {"host": "127.0.0.1", "port": 7000})
                    await sock.opened
                    try:
                        await sock.read()
                    finally:
                        await sock.close()
                """
            ),
            permissions=["tcp-connect:127.0.0.1:7000"],
        )
        with open(os.path.join(package, "test_waiter.py"), "w") as f:
            f.write(
                textwrap.dedent(
                    f"""
                    from twisted.trial.unittest import SynchronousTestCase
                    from tcpext.testing import StubBrowser

                    class WaiterTests(SynchronousTestCase):
                        def test_waits(self):
                            stub = StubBrowser.fromFolder({waiter!r})
                            if {cleanup!r}:
                                self.addCleanup(stub.close)
                            stub.start()
                            stub.connectPeer("127.0.0.1", 7000)
                    """
                )
            )
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([base, root])
        result = subprocess.run(
            [sys.executable, "-m", "twisted.trial", "--force-gc", "kitcheck"],
            cwd=base,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        return output

    def test_withoutCleanup(self) -> None:
        """
        Without the cleanup, the complaint shows: the kit's cleanup has
        something to prevent.
        """
        self.assertIn("coroutine ignored GeneratorExit", self.runTrial(False))

    def test_withCleanup(self) -> None:
        """
        With C{addCleanup(stub.close)}, the coroutine ends inside the test
        and nothing is printed about it.
        """
        output = self.runTrial(True)
        self.assertNotIn("GeneratorExit", output)
        self.assertNotIn("Exception ignored", output)
