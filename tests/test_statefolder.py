"""
Tests for the service's state folder (L{tcpext._statefolder}): private
folders, one service at a time, leftovers of interrupted writes cleaned,
and state files nested too deeply for the JSON parser failing closed.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from tcpext._grantstore import JSONGrantStore
from tcpext._statefolder import (
    LOCK_FILE,
    StateFolder,
    StateFolderBusy,
    StateFolderError,
    makePrivateFolders,
)
from tcpext.extension import ExtensionError, loadManifest
from tcpext.service import TCPExtService
from tests.test_examples import REPO, Twistd, twistdCommand
from tests.test_extension import manifestWith, writeExtension

_DEEP = "[" * 100000 + "]" * 100000
"""JSON that the standard parser refuses with C{RecursionError}."""


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class _Logged:
    """
    The formatted messages logged while a test runs.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def messages(self) -> list[str]:
        return [formatEvent(e) for e in self.events]


class PrivateFoldersTests(SynchronousTestCase):
    """
    L{makePrivateFolders}: every folder it creates is mode C{0700}.
    """

    def test_chain(self) -> None:
        """
        Each missing folder on the way is created C{0700}, whatever the
        umask; an existing one is left alone.
        """
        base = self.mktemp()
        os.makedirs(base, mode=0o755)
        os.chmod(base, 0o755)
        old = os.umask(0)
        try:
            makePrivateFolders(os.path.join(base, "a", "b", "c"))
        finally:
            os.umask(old)
        self.assertEqual(_mode(base), 0o755)
        for path in ("a", "a/b", "a/b/c"):
            self.assertEqual(_mode(os.path.join(base, path)), 0o700, path)
        makePrivateFolders(os.path.join(base, "a", "b", "c"))

    def test_notAFolder(self) -> None:
        """
        A file in the way is an error.
        """
        path = self.mktemp()
        with open(path, "w"):
            pass
        self.assertRaises(OSError, makePrivateFolders, os.path.join(path, "x"))

    def test_grantStore(self) -> None:
        """
        The grant store's first save creates the state folder and its
        C{grants} folder C{0700}.
        """
        state = os.path.join(self.mktemp(), "state")
        JSONGrantStore(state).save("a", ["tcp-listen:1"])
        self.assertEqual(_mode(state), 0o700)
        self.assertEqual(_mode(os.path.join(state, "grants")), 0o700)


class StateFolderTests(SynchronousTestCase):
    """
    L{StateFolder}: created private, locked for one service, cleaned.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(os.path.join(self.mktemp(), "state"))

    def folder(self) -> StateFolder:
        folder = StateFolder(self.path)
        self.addCleanup(folder.close)
        return folder

    def test_open(self) -> None:
        """
        Opening creates the folder and its C{grants} folder C{0700} and a
        C{0600} lock file holding this process's pid.
        """
        folder = self.folder()
        self.assertEqual(folder.open(), [])
        self.assertTrue(folder.held)
        self.assertEqual(_mode(self.path), 0o700)
        self.assertEqual(_mode(os.path.join(self.path, "grants")), 0o700)
        lock = os.path.join(self.path, LOCK_FILE)
        self.assertEqual(_mode(lock), 0o600)
        with open(lock) as f:
            self.assertEqual(f.read(), f"{os.getpid()}\n")

    def test_busy(self) -> None:
        """
        While one holds the folder, another cannot: the error names the
        folder and the holder's pid.  Once released, it can.
        """
        first = self.folder()
        first.open()
        second = self.folder()
        error = self.assertRaises(StateFolderBusy, second.open)
        self.assertEqual(error.pid, os.getpid())
        self.assertEqual(
            str(error),
            f"the state folder {self.path} is in use by another tcpext service "
            f"(pid {os.getpid()}); refusing to start",
        )
        self.assertFalse(second.held)
        first.close()
        second.open()
        self.assertTrue(second.held)

    def test_busyPidUnknown(self) -> None:
        """
        A holder that recorded no pid is not named.
        """
        first = self.folder()
        first.open()
        os.truncate(os.path.join(self.path, LOCK_FILE), 0)
        error = self.assertRaises(StateFolderBusy, self.folder().open)
        self.assertIsNone(error.pid)
        self.assertIn("another tcpext service; refusing", str(error))

    def test_otherProcess(self) -> None:
        """
        The lock holds against another process too (C{flock}).
        """
        first = self.folder()
        first.open()
        code = (
            "import sys\n"
            "from tcpext._statefolder import StateFolder, StateFolderBusy\n"
            "try:\n"
            "    StateFolder(sys.argv[1]).open()\n"
            "except StateFolderBusy as e:\n"
            "    print(e.pid)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, self.path],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        self.assertEqual(result.stdout.strip(), str(os.getpid()), result)

    def test_leftovers(self) -> None:
        """
        The temporary files of interrupted grant writes are removed; grant
        files, other files and links are not.
        """
        grants = os.path.join(self.path, "grants")
        os.makedirs(grants)
        for name in (".a.x1y2.tmp", ".b.zz.tmp", "a.json", "notes.tmp"):
            with open(os.path.join(grants, name), "w") as f:
                f.write("{}")
        os.symlink("a.json", os.path.join(grants, ".link.tmp"))
        logged = _Logged(self)
        removed = self.folder().open()
        self.assertEqual(
            sorted(os.path.basename(p) for p in removed), [".a.x1y2.tmp", ".b.zz.tmp"]
        )
        self.assertEqual(
            sorted(os.listdir(grants)), [".link.tmp", "a.json", "notes.tmp"]
        )
        self.assertTrue(
            any("removed 2 temporary file(s)" in m for m in logged.messages())
        )

    def test_notAFolder(self) -> None:
        """
        A state "folder" that is a file cannot be used; the error names it.
        """
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "w"):
            pass
        error = self.assertRaises(StateFolderError, self.folder().open)
        self.assertIn(self.path, str(error))

    def test_serviceHoldsIt(self) -> None:
        """
        A running service holds its state folder; a second one on the same
        folder cannot start; once the first has stopped, it can.
        """
        extensions = FilePath(self.mktemp())
        extensions.makedirs()
        writeExtension(extensions, "one")

        def service() -> TCPExtService:
            return TCPExtService(
                extensionPaths=[],
                extensionDirectories=[extensions.path],
                stateDirectory=self.path,
                reactor=MemoryReactorClock(),
            )

        first = service()
        first.startService()
        second = service()
        self.assertRaises(StateFolderBusy, second.startService)
        self.successResultOf(first.stopService())
        second.startService()
        self.successResultOf(second.stopService())


class TwistdStateLockTests(SynchronousTestCase):
    """
    A second C{twistd tcpext} on a state folder in use refuses to start.
    """

    def test_secondRefused(self) -> None:
        """
        The second service exits with status 1 and one line on its standard
        error naming the folder and the first service's pid; the first keeps
        running.
        """
        extensions = FilePath(self.mktemp())
        extensions.makedirs()
        writeExtension(extensions, "one")
        state = os.path.abspath(self.mktemp())
        first = Twistd(self, ["--extensions", extensions.path], state=state)
        first.waitFor(
            lambda: "extension(s) loaded" in first.log(), "the first service's start"
        )
        env = dict(os.environ, PYTHONPATH=REPO)
        second = subprocess.run(
            twistdCommand(
                os.path.join(self.mktemp() + ".log"),
                state,
                "--admin",
                "none",
                "--extensions",
                extensions.path,
            ),
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=REPO,
        )
        self.assertEqual(second.returncode, 1, second)
        self.assertEqual(
            second.stderr.strip().splitlines(),
            [
                f"tcpext: the state folder {state} is in use by another tcpext "
                f"service (pid {first.process.pid}); refusing to start"
            ],
        )
        self.assertIsNone(first.process.poll())


class DeeplyNestedTests(SynchronousTestCase):
    """
    A grant file or manifest nested deeply enough that the JSON parser
    gives up (C{RecursionError}) is reported and fails closed, as any
    corrupt file.
    """

    def test_grantFile(self) -> None:
        """
        The grant store reports it and loads no grants.
        """
        state = self.mktemp()
        store = JSONGrantStore(state)
        os.makedirs(store.directory)
        with open(store.pathFor("deep"), "w") as f:
            f.write('{"format": 1, "extension": "deep", "grants": ' + _DEEP + "}")
        logged = _Logged(self)
        self.assertEqual(store.load("deep"), [])
        self.assertTrue(any("nested too deeply" in m for m in logged.messages()))

    def test_extensionKeepsManifestGrants(self) -> None:
        """
        An isolated extension whose grant file is nested too deeply still
        runs with its manifest's grants (and none stored).
        """
        from tcpext._supervisor import IsolatedExtension

        state = self.mktemp()
        store = JSONGrantStore(state)
        os.makedirs(store.directory)
        with open(store.pathFor("deep"), "w") as f:
            f.write(_DEEP)
        manifest = manifestWith(
            name="deep",
            permissions=["tcp-listen:7000"],
            optional_permissions=["tcp-connect:example.com:443"],
        )
        events: list[dict[str, Any]] = []
        _Logged(self)
        extension = IsolatedExtension(
            path=".",
            extensionId="deep",
            manifest=manifest,
            reactor=MemoryReactorClock(),
            grantStore=store,
            log=Logger(observer=events.append),
        )
        self.assertEqual(sorted(str(p) for p in extension.grants), ["tcp-listen:7000"])

    def test_manifest(self) -> None:
        """
        The manifest is reported as invalid JSON, nested too deeply.
        """
        base = FilePath(self.mktemp())
        base.makedirs()
        folder = writeExtension(base, "deep", rawManifest=_DEEP.encode())
        error = self.assertRaises(ExtensionError, loadManifest, folder)
        self.assertIn("nested too deeply", str(error))

    def test_serviceReportsManifest(self) -> None:
        """
        The service reports that extension failed and runs the others.
        """
        base = FilePath(self.mktemp())
        base.makedirs()
        writeExtension(base, "good")
        writeExtension(base, "deep", rawManifest=_DEEP.encode())
        logged = _Logged(self)
        service = TCPExtService(
            extensionPaths=[],
            extensionDirectories=[base.path],
            stateDirectory=self.mktemp(),
            reactor=MemoryReactorClock(),
        )
        loaded = service.loadExtensions()
        self.assertEqual([m.id for m in loaded], ["good"])
        self.assertEqual([e.extension for e in service.errors], ["deep"])
        self.assertTrue(
            any("invalid JSON: nested too deeply" in m for m in logged.messages())
        )

    def test_syncRequest(self) -> None:
        """
        A request on the listen channel nested too deeply is answered
        C{BAD_REQUEST} (it fits in the frame limit).
        """
        from twisted.internet.testing import StringTransport

        from tcpext._broker import BrokerProtocol, SyncListenProtocol
        from tcpext.permissions import PermissionSet

        broker = BrokerProtocol(MemoryReactorClock(), PermissionSet(), Logger())
        protocol = SyncListenProtocol(broker)
        transport = StringTransport()
        protocol.makeConnection(transport)
        payload = b"[" * 2000 + b"]" * 2000
        protocol.dataReceived(len(payload).to_bytes(4, "big") + payload)
        answer = json.loads(transport.value()[4:])
        self.assertEqual(answer["error"], "BAD_REQUEST")
        self.assertFalse(transport.disconnecting)
