"""
Tests for L{tcpext.service} (options, C{makeService}, loading extensions),
the persistent grant store (L{tcpext._grantstore}) and the terminal prompt
(L{tcpext._prompt}).
"""

from __future__ import annotations

import json
import os
import platform
import stat
import subprocess
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

import tcpext
from tcpext._grantstore import JSONGrantStore
from tcpext._prompt import TTYPrompt, escapeForTerminal
from tcpext.permissions import PermissionDenied
from tcpext.service import (
    PLUGIN_CACHE_COMMAND,
    Options,
    TCPExtService,
    defaultStateDirectory,
    findExtensions,
    makeService,
    pluginCacheProblem,
)
from tests.test_extension import manifestWith, writeExtension


class LogCatcher:
    """
    Collects formatted log messages while a test runs.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def messages(self, namespace: str | None = None) -> list[str]:
        """
        The formatted messages, optionally only those in C{namespace}.
        """
        return [
            formatEvent(e)
            for e in self.events
            if namespace is None or e.get("log_namespace") == namespace
        ]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runTwistd(
    case: SynchronousTestCase, *args: str, newSession: bool = False
) -> subprocess.CompletedProcess[str]:
    """
    Run C{twistd ARGS} to its end (bounded) in a scratch folder, with the
    source tree on C{PYTHONPATH} (so the plugin is found), and return what it
    printed on stdout and stderr and its status.

    @param newSession: Run it in a session of its own, without a
        controlling terminal.
    """
    cwd = os.path.abspath(case.mktemp())
    os.makedirs(cwd)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=newSession,
        capture_output=True,
        text=True,
        timeout=120,
    )


class CommandLineTests(SynchronousTestCase):
    """
    C{twistd tcpext} as an operator types it: a real C{twistd} process.
    """

    def test_version(self) -> None:
        """
        C{twistd tcpext --version} prints the versions of tcpext, Twisted and
        Python, and exits 0.
        """
        from twisted import copyright

        result = runTwistd(self, "tcpext", "--version")
        self.assertEqual(result.returncode, 0, result.stderr)
        line = result.stdout.strip().splitlines()[-1]
        self.assertTrue(
            line.startswith(
                f"tcpext {tcpext.__version__} (Twisted {copyright.version}, "
            ),
            line,
        )
        self.assertTrue(line.endswith(f" {platform.python_version()})"), line)

    def assertUsageError(self, message: str, *args: str) -> None:
        """
        C{twistd -n tcpext ARGS} exits with status 1 after printing, on
        stderr only, C{message} on one line and where to get help.
        """
        result = runTwistd(self, "-n", "--pidfile=", "tcpext", *args)
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(result.stdout, "")
        self.assertEqual(
            result.stderr.splitlines(),
            [f"twistd tcpext: {message}", "see: twistd tcpext --help"],
        )

    def test_badGrant(self) -> None:
        """
        A malformed C{--grant} is one line on stderr, then where to get help.
        """
        self.assertUsageError(
            "--grant: 'bad' is not NAME=PERMISSION "
            "(e.g. chat=tcp-connect:example.com:6667)",
            "--extensions",
            ROOT,
            "--grant",
            "bad",
        )

    def test_missingFolder(self) -> None:
        """
        A missing extension folder is one line on stderr.
        """
        missing = os.path.join(ROOT, "no-such-extension-folder")
        self.assertUsageError(
            f"--extension: {missing!r} is not a directory", "--extension", missing
        )

    def test_unknownPrompt(self) -> None:
        """
        An unknown C{--prompt} is one line on stderr.
        """
        examples = os.path.join(ROOT, "examples")
        self.assertUsageError(
            "--prompt must be one of deny, tty, admin, not 'ask'",
            "--extensions",
            examples,
            "--prompt",
            "ask",
        )

    def test_promptTTYWithoutTerminal(self) -> None:
        """
        C{--prompt tty} in a process without a controlling terminal is
        refused at start (not at the first request).
        """
        result = runTwistd(
            self,
            "-n",
            "--pidfile=",
            "tcpext",
            "--extensions",
            os.path.join(ROOT, "examples"),
            "--prompt",
            "tty",
            newSession=True,
        )
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(result.stdout, "")
        [message, hint] = result.stderr.splitlines()
        self.assertTrue(
            message.startswith("twistd tcpext: --prompt tty: no terminal to ask on"),
            message,
        )
        self.assertEqual(hint, "see: twistd tcpext --help")


class TerminalCheckTests(SynchronousTestCase):
    """
    C{--prompt tty} is refused at start when there is no terminal to ask on.
    """

    def setUp(self) -> None:
        """
        A folder to point options at.
        """
        self.base = FilePath(self.mktemp())
        self.base.makedirs()

    def test_noTerminal(self) -> None:
        """
        Without a controlling terminal, C{--prompt tty} is a usage error that
        says so and names the alternatives.
        """

        def noTerminal() -> int:
            raise OSError(6, "No such device or address")

        self.patch(Options, "openTerminal", staticmethod(noTerminal))
        error = self.assertRaises(
            usage.UsageError,
            Options().parseOptions,
            ["--extension", self.base.path, "--prompt", "tty"],
        )
        self.assertEqual(
            str(error),
            "--prompt tty: no terminal to ask on (No such device or address); "
            "use --prompt deny or --prompt admin",
        )

    def test_daemon(self) -> None:
        """
        Under a C{twistd} that would daemonize (no C{-n}), C{--prompt tty} is
        refused: a daemon has no terminal.
        """
        self.patch(
            Options,
            "openTerminal",
            staticmethod(lambda: os.open(os.devnull, os.O_RDWR)),
        )
        options = Options()
        options.parent = {"nodaemon": False}  # type: ignore[assignment]
        error = self.assertRaises(
            SystemExit,
            options.parseOptions,
            ["--extension", self.base.path, "--prompt", "tty"],
        )
        self.assertEqual(error.code, 1)

    def test_terminalClosed(self) -> None:
        """
        The terminal opened for the check is closed again.
        """
        opened: list[int] = []

        def openTerminal() -> int:
            fd = os.open(os.devnull, os.O_RDWR)
            opened.append(fd)
            return fd

        self.patch(Options, "openTerminal", staticmethod(openTerminal))
        Options().parseOptions(["--extension", self.base.path, "--prompt", "tty"])
        [fd] = opened
        self.assertRaises(OSError, os.fstat, fd)


class PluginCacheTests(SynchronousTestCase):
    """
    L{pluginCacheProblem}: Twisted's plugin cache beside the plugin file.
    """

    def setUp(self) -> None:
        """
        A plugin folder with a plugin file and a cache.
        """
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.plugin = os.path.join(self.folder, "tcpext_plugin.py")
        self.cache = os.path.join(self.folder, "dropin.cache")
        for path in (self.plugin, self.cache):
            with open(path, "wb"):
                pass

    def age(self, path: str, seconds: float) -> None:
        """
        Make C{path} C{seconds} old.
        """
        when = os.path.getmtime(path) - seconds
        os.utime(path, (when, when))

    def test_fresh(self) -> None:
        """
        A cache newer than every plugin file is no problem, writable or not.
        """
        self.age(self.plugin, 10)
        self.assertIsNone(pluginCacheProblem(self.plugin, lambda path: False))

    def test_staleButWritable(self) -> None:
        """
        A stale cache that this user can rewrite is no problem: twistd
        rewrote it.
        """
        self.age(self.cache, 10)
        self.assertIsNone(pluginCacheProblem(self.plugin, lambda path: True))

    def test_staleAndReadOnly(self) -> None:
        """
        A stale cache that this user cannot rewrite is reported, naming the
        cache and the command that regenerates it.
        """
        self.age(self.cache, 10)
        asked: list[str] = []

        def writable(path: str) -> bool:
            asked.append(path)
            return False

        problem = pluginCacheProblem(self.plugin, writable)
        assert problem is not None
        self.assertIn(self.cache, problem)
        self.assertIn(PLUGIN_CACHE_COMMAND, problem)
        self.assertEqual(asked, [self.folder])

    def test_missingAndReadOnly(self) -> None:
        """
        No cache at all, in a folder this user cannot write, is reported.
        """
        os.remove(self.cache)
        self.assertIsNotNone(pluginCacheProblem(self.plugin, lambda path: False))

    def test_loadedPlugin(self) -> None:
        """
        By default the plugin file is the one Twisted loaded, if any; in this
        process (the source tree, writable) there is nothing to report.
        """
        self.assertIsNone(pluginCacheProblem())


class OptionsTests(SynchronousTestCase):
    """
    Tests for L{Options}.
    """

    def setUp(self) -> None:
        """
        A folder to point options at, and a terminal for C{--prompt tty}.
        """
        self.base = FilePath(self.mktemp())
        self.base.makedirs()
        self.patch(
            Options,
            "openTerminal",
            staticmethod(lambda: os.open(os.devnull, os.O_RDWR)),
        )

    def parse(self, *args: str) -> Options:
        """
        Parse C{args}.
        """
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_defaults(self) -> None:
        """
        The prompt refuses, isolation is C{auto} (resolved by the
        service), the state folder is the default one.
        """
        options = self.parse("--extensions", self.base.path)
        self.assertEqual(options["extensions"], [self.base.path])
        self.assertEqual(options["extension"], [])
        self.assertEqual(options["prompt"], "deny")
        self.assertEqual(options["isolation"], "auto")
        self.assertEqual(options["state"], defaultStateDirectory())
        self.assertEqual(options["grant"], [])
        self.assertEqual(options["log-rate"], 200)

    def test_auditLogLink(self) -> None:
        """
        C{--audit-log} naming a symbolic link is a usage error that names
        it.
        """
        target = self.base.child("real.log")
        target.touch()
        link = self.base.child("audit.log")
        os.symlink(target.path, link.path)
        error = self.assertRaises(
            usage.UsageError,
            self.parse,
            "--extensions",
            self.base.path,
            "--audit-log",
            link.path,
        )
        self.assertIn("symbolic link", str(error))
        self.assertIn(link.path, str(error))

    def test_defaultStateDirectory(self) -> None:
        """
        The default state folder follows C{XDG_STATE_HOME}, else
        C{~/.local/state}.
        """
        self.patch(os, "environ", {"XDG_STATE_HOME": "/x/state", "HOME": "/h"})
        self.assertEqual(defaultStateDirectory(), "/x/state/tcpext")
        self.patch(os, "environ", {"HOME": "/h"})
        self.assertEqual(defaultStateDirectory(), "/h/.local/state/tcpext")

    def test_repeatable(self) -> None:
        """
        C{--extension}, C{--extensions} and C{--grant} may be repeated;
        grants are kept in canonical form.
        """
        options = self.parse(
            "--extension",
            self.base.path,
            "--extension",
            self.base.path,
            "--grant",
            "a=tcp-connect:EXAMPLE.com:80",
            "--grant",
            "b=tcp-listen:7000",
            "--state",
            "/tmp/st",
            "--prompt",
            "tty",
        )
        self.assertEqual(options["extension"], [self.base.path, self.base.path])
        self.assertEqual(
            options["grant"],
            [("a", "tcp-connect:example.com:80"), ("b", "tcp-listen:7000")],
        )
        self.assertEqual(options["state"], "/tmp/st")
        self.assertEqual(options["prompt"], "tty")

    def test_errors(self) -> None:
        """
        Bad values are usage errors that say what is wrong.
        """
        cases = [
            (["--extensions", "/no/such/dir"], "not a directory"),
            (["--extension", "/no/such/dir"], "not a directory"),
            ([], "nothing to run"),
            (["--extensions", self.base.path, "--prompt", "yes"], "--prompt"),
            (["--extensions", self.base.path, "--isolation", "vm"], "--isolation"),
            (["--extensions", self.base.path, "--grant", "x"], "NAME=PERMISSION"),
            (
                ["--extensions", self.base.path, "--grant", "a/b=tcp-listen:1"],
                "extension id",
            ),
            (
                ["--extensions", self.base.path, "--grant", "a=tcp-listen:0"],
                "tcp-listen:0",
            ),
            (["--extensions", self.base.path, "--log-rate", "0"], "--log-rate"),
            (["--extensions", self.base.path, "--log-rate", "many"], "--log-rate"),
        ]
        # --extensions pointed at an extension rather than at its parent
        extension = self.base.child("echo")
        extension.makedirs()
        extension.child("manifest.json").setContent(b"{}")
        cases.append((["--extensions", extension.path], "run it with --extension"))
        aFile = self.base.child("a-file")
        aFile.setContent(b"")
        cases.append(
            (
                ["--extensions", self.base.path, "--state", aFile.path],
                "is not a directory",
            )
        )
        for args, words in cases:
            error = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertIn(words, str(error), args)

    def test_isolationFailsClosed(self) -> None:
        """
        C{--isolation process} where the system cannot confine an extension
        is a usage error (the service does not start) whose one line names
        every missing piece; C{process-unconfined} does not probe.
        """
        from tcpext import _isolation

        def missing(*args: object, **kw: object) -> list[str]:
            return [
                "network namespace (unshare: Operation not permitted)",
                "Landlock (Landlock ABI 6 is needed; this kernel offers ABI 3)",
            ]

        self.patch(_isolation, "missingConfinement", missing)
        error = self.assertRaises(
            usage.UsageError,
            self.parse,
            "--extensions",
            self.base.path,
            "--isolation",
            "process",
        )
        self.assertIn("Operation not permitted", str(error))
        self.assertIn("offers ABI 3", str(error))
        self.assertIn("refusing to start", str(error))
        self.assertNotIn("\n", str(error))
        options = self.parse(
            "--extensions", self.base.path, "--isolation", "process-unconfined"
        )
        self.assertEqual(options["isolation"], "process-unconfined")

    def test_help(self) -> None:
        """
        C{--help} describes every option.
        """
        text = str(Options())
        for option in [
            "--extension=",
            "--extensions=",
            "--state=",
            "--grant=",
            "--prompt=",
            "--isolation=",
            "--no-template",
        ]:
            self.assertIn(option, text)

    def test_makeService(self) -> None:
        """
        C{makeService} builds a L{TCPExtService} from the options.
        """
        # A folder of this test's own: makeService locks it.
        state = os.path.abspath(self.mktemp())
        options = self.parse(
            "--extensions",
            self.base.path,
            "--extension",
            self.base.path,
            "--state",
            state,
            # The console's default socket would sit in the state folder, deep
            # in the scratch folder: past the UNIX socket path limit when the
            # checkout itself is deep.
            "--admin",
            "none",
            "--grant",
            "a=tcp-listen:7000",
            "--prompt",
            "tty",
            "--log-rate",
            "50",
        )
        from tcpext import _isolation

        self.patch(_isolation, "missingConfinement", lambda: [])
        service = makeService(options)
        # makeService holds the state folder (a scratch one here).
        self.addCleanup(service.stateFolder.close)  # type: ignore[union-attr]
        self.assertTrue(service.stateFolder.held)  # type: ignore[union-attr]
        self.assertIsInstance(service, TCPExtService)
        self.assertEqual(service.extensionDirectories, [self.base.path])
        self.assertEqual(service.extensionPaths, [self.base.path])
        self.assertEqual(service.stateDirectory, state)
        self.assertEqual(service.logRate, 50)
        self.assertEqual(service.operatorGrants, [("a", "tcp-listen:7000")])
        self.assertEqual(service.promptMode, "tty")
        self.assertEqual(service.isolation, "process")


class FindExtensionsTests(SynchronousTestCase):
    """
    Tests for L{findExtensions}.
    """

    def test_folders(self) -> None:
        """
        Subfolders are listed in name order; files and hidden or private
        folders are skipped.
        """
        base = FilePath(self.mktemp())
        for name in ["b", "a", ".git", "__pycache__", "_private"]:
            base.child(name).makedirs()
        base.child("file.py").setContent(b"")
        self.assertEqual(
            findExtensions(base.path), [base.child("a").path, base.child("b").path]
        )


class LoadExtensionsTests(SynchronousTestCase):
    """
    Tests for L{TCPExtService.loadExtensions} and the checks of operator
    grants.
    """

    def setUp(self) -> None:
        """
        A folder of extensions and a log catcher.
        """
        self.base = FilePath(self.mktemp())
        self.base.makedirs()
        self.log = LogCatcher(self)

    def service(self, **kw: Any) -> TCPExtService:
        """
        A service over C{self.base}.
        """
        return TCPExtService(
            extensionPaths=kw.pop("extensionPaths", []),
            extensionDirectories=[self.base.path],
            stateDirectory=self.mktemp(),
            reactor=MemoryReactorClock(),
            **kw,
        )

    def test_isolationAuto(self) -> None:
        """
        C{isolation="auto"} is C{process} where the system can confine; where
        it cannot, it is C{none}, and starting says so in one warning line
        that names what is missing and that grants are then advisory.
        """
        from tcpext import _isolation

        self.patch(_isolation, "missingConfinement", lambda: [])
        service = self.service(isolation="auto")
        self.assertEqual(service.isolation, "process")
        missing = ["Landlock (Landlock ABI 6 is needed; this kernel offers ABI 3)"]
        self.patch(_isolation, "missingConfinement", lambda: missing)
        writeExtension(self.base, "good")
        service = self.service(isolation="auto", template=False)
        self.assertEqual(service.isolation, "none")
        service.startService()
        self.addCleanup(service.stopService)
        [warning] = [m for m in self.log.messages() if "cannot confine" in m]
        self.assertIn("offers ABI 3", warning)
        self.assertIn("advisory", warning)
        self.assertNotIn("\n", warning)

    def test_badOnesReported(self) -> None:
        """
        Valid extensions are loaded; each bad one is reported with its name
        and the problem, in its own log namespace.
        """
        writeExtension(self.base, "good")
        writeExtension(self.base, "json", rawManifest=b"{")
        writeExtension(
            self.base,
            "perm",
            manifestWith(name="perm", permissions=["tcp-listen:70000"]),
        )
        service = self.service()
        loaded = service.loadExtensions()
        self.assertEqual([m.id for m in loaded], ["good"])
        self.assertEqual(sorted(e.extension for e in service.errors), ["json", "perm"])
        self.assertTrue(
            any("invalid JSON" in m for m in self.log.messages("tcpext.extension.json"))
        )
        self.assertTrue(
            any("70000" in m for m in self.log.messages("tcpext.extension.perm"))
        )

    def test_emptyFolderWarned(self) -> None:
        """
        A folder given with C{--extensions} that holds no extension folder is
        reported, so the operator learns why nothing runs.
        """
        service = self.service()
        self.assertEqual(service.loadExtensions(), [])
        self.assertIn(
            f"no extension folders in {self.base.path}",
            self.log.messages(),
        )

    def test_unexpectedError(self) -> None:
        """
        Even an unexpected exception while loading one manifest is reported
        under that extension's folder name, and the others load.
        """
        from tcpext import service as serviceModule

        writeExtension(self.base, "good")
        writeExtension(self.base, "weird")
        real = serviceModule.loadManifest

        def loadManifest(path: str) -> Any:
            if path.endswith("weird"):
                raise MemoryError("no memory today")
            return real(path)

        self.patch(serviceModule, "loadManifest", loadManifest)
        service = self.service()
        self.assertEqual([m.id for m in service.loadExtensions()], ["good"])
        [error] = service.errors
        self.assertEqual(error.extension, "weird")
        self.assertIn("MemoryError: no memory today", str(error))

    def test_duplicateRefused(self) -> None:
        """
        A second extension with the same name is refused with a clear error;
        the same folder given twice is loaded once.
        """
        writeExtension(self.base, "one", manifestWith(name="same"))
        writeExtension(self.base, "two", manifestWith(name="same"))
        service = self.service(extensionPaths=[self.base.child("one").path])
        loaded = service.loadExtensions()
        self.assertEqual(len(loaded), 1)
        self.assertEqual(loaded[0].path, self.base.child("one").path)
        [error] = service.errors
        self.assertEqual(error.extension, "same")
        self.assertIn("duplicate", str(error))
        self.assertIn(self.base.child("two").path, str(error))

    def test_grants(self) -> None:
        """
        Operator grants are passed on only when the manifest lists them as
        optional; others are reported and dropped.
        """
        writeExtension(self.base, "ext")
        service = self.service(
            grants=[
                ("ext", "tcp-connect:example.com:80"),
                ("ext", "tcp-connect:evil.example:80"),
            ]
        )
        [manifest] = service.loadExtensions()
        self.assertEqual(service._grantsFor(manifest), ["tcp-connect:example.com:80"])
        [error] = service.errors
        self.assertEqual(error.field, "--grant")
        self.assertIn("evil.example", str(error))


class GrantStoreTests(SynchronousTestCase):
    """
    Tests for L{JSONGrantStore}.
    """

    def setUp(self) -> None:
        """
        A store in a fresh state folder.
        """
        self.state = FilePath(self.mktemp())
        self.store = JSONGrantStore(self.state.path)
        self.log = LogCatcher(self)

    def test_interface(self) -> None:
        """
        L{JSONGrantStore} provides L{tcpext.browser.GrantStore}.
        """
        from zope.interface.verify import verifyObject

        from tcpext.browser import GrantStore

        self.assertTrue(verifyObject(GrantStore, self.store))

    def test_roundTrip(self) -> None:
        """
        What is saved is loaded back, per extension; nothing saved is empty.
        """
        self.assertEqual(self.store.load("a"), [])
        self.store.save("a", ["tcp-connect:example.com:80"])
        self.store.save("b", [])
        self.assertEqual(self.store.load("a"), ["tcp-connect:example.com:80"])
        self.assertEqual(self.store.load("b"), [])
        again = JSONGrantStore(self.state.path)
        self.assertEqual(again.load("a"), ["tcp-connect:example.com:80"])

    def test_modes(self) -> None:
        """
        The folder is private to the user, and so is the file.
        """
        self.store.save("a", ["tcp-listen:1"])
        folder = os.stat(self.store.directory).st_mode
        self.assertEqual(stat.S_IMODE(folder), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(self.store.pathFor("a")).st_mode), 0o600)

    def test_atomicReplace(self) -> None:
        """
        Saving writes a temporary file, fsyncs it and renames it over the
        old one; if that fails, the old grants are intact and no temporary
        file is left.
        """
        self.store.save("a", ["tcp-listen:1"])
        calls: list[tuple[str, ...]] = []
        realFsync = os.fsync

        def fsync(fd: int) -> None:
            calls.append(("fsync",))
            realFsync(fd)

        def replace(src: str, dst: str) -> None:
            calls.append(("replace", os.path.dirname(src), dst))
            with open(src) as f:
                self.assertEqual(json.load(f)["grants"], ["tcp-listen:2"])
            raise OSError("disk on fire")

        self.patch(os, "fsync", fsync)
        self.patch(os, "replace", replace)
        self.assertRaises(OSError, self.store.save, "a", ["tcp-listen:2"])
        self.assertEqual(
            calls,
            [("fsync",), ("replace", self.store.directory, self.store.pathFor("a"))],
        )
        self.assertEqual(self.store.load("a"), ["tcp-listen:1"])
        self.assertEqual(os.listdir(self.store.directory), ["a.json"])

    def test_corrupt(self) -> None:
        """
        A corrupt file is reported (naming the extension and the file) and
        treated as no grants: never as all grants.
        """
        self.store.save("a", ["tcp-listen:1"])
        path = FilePath(self.store.pathFor("a"))
        bad = [
            b"{not json",
            b"\xff\xfe",
            b'["tcp-connect:*:*"]',
            b'{"format": 1, "extension": "a", "grants": "tcp-connect:*:*"}',
            b'{"format": 1, "extension": "a", "grants": [1]}',
            b'{"format": 2, "extension": "a", "grants": []}',
            b'{"format": 1, "extension": "b", "grants": ["tcp-connect:*:*"]}',
        ]
        for content in bad:
            path.setContent(content)
            self.assertEqual(self.store.load("a"), [], content)
        errors = [m for m in self.log.messages() if "treating it as no grants" in m]
        self.assertEqual(len(errors), len(bad))
        self.assertIn("'a'", errors[0])
        self.assertIn(path.path, errors[0])

    def test_badId(self) -> None:
        """
        An id that could escape the folder is refused.
        """
        self.assertRaises(ValueError, self.store.save, "../x", [])
        self.assertRaises(ValueError, self.store.load, "../x")


class EscapeTests(SynchronousTestCase):
    """
    Tests for L{escapeForTerminal}.
    """

    def test_plain(self) -> None:
        """
        Printable text is unchanged.
        """
        text = "tcp-connect:bücher.example:443 [::1]"
        self.assertEqual(escapeForTerminal(text), text)

    def test_controls(self) -> None:
        """
        Control, format and separator characters are escaped, and so is the
        backslash, so no escape sequence reaches the terminal.
        """
        self.assertEqual(
            escapeForTerminal("a\x1b]0;pwned\x07\r\n\x9b\\x"),
            "a\\x1b]0;pwned\\x07\\x0d\\x0a\\x9b\\\\x",
        )
        self.assertEqual(
            escapeForTerminal("\u202eevil\u2028\u200b\x7f"),
            "\\u202eevil\\u2028\\u200b\\x7f",
        )
        self.assertEqual(escapeForTerminal("\U000e0001"), "\\U000e0001")

    def test_noControlsLeft(self) -> None:
        """
        Whatever the input, the output has no character below U+0020 and
        none in U+007F..U+009F.
        """
        text = "".join(chr(c) for c in range(0x200)) + "\u2028\u2029\ufeff"
        escaped = escapeForTerminal(text)
        self.assertFalse(
            [c for c in escaped if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F]
        )


class TTYPromptTests(TestCase):
    """
    Tests for L{TTYPrompt} over a real pseudo-terminal.
    """

    def setUp(self) -> None:
        """
        A pseudo-terminal: the prompt gets (a copy of) the child side, the
        test plays the operator on the parent side.
        """
        from twisted.internet import reactor

        self.reactor = reactor
        self.parent, self.child = os.openpty()
        self.addCleanup(os.close, self.parent)
        self.addCleanup(os.close, self.child)
        self.log = LogCatcher(self)

    def prompt(self, timeout: float = 30.0) -> TTYPrompt:
        """
        A prompt on the pseudo-terminal.
        """
        return TTYPrompt(self.reactor, lambda: os.dup(self.child), timeout=timeout)

    def readQuestion(self) -> str:
        """
        What the prompt wrote on the terminal (it is written before the
        prompt returns), up to its closing C{[y/N] }: the terminal may hand
        it over in pieces.  At most 100 reads, each waiting up to 5 seconds.
        """
        import select

        text = b""
        for _ in range(100):
            if text.endswith(b"[y/N] "):
                break
            ready, _, _ = select.select([self.parent], [], [], 5)
            if not ready:
                break
            text += os.read(self.parent, 4096)
        return text.decode("utf-8")

    async def test_yes(self) -> None:
        """
        C{y} grants; the question names the extension and the permission.
        """
        d = self.prompt()("ext", ["tcp-connect:example.com:80"])
        question = self.readQuestion()
        self.assertIn("'ext'", question)
        self.assertIn("tcp-connect:example.com:80", question)
        os.write(self.parent, b"y\n")
        self.assertTrue(await d)

    async def test_other(self) -> None:
        """
        Anything but y/yes refuses.
        """
        prompt = self.prompt()
        for answer in [b"n\n", b"\n", b"yess\n", b"ja\n"]:
            d = prompt("ext", ["tcp-listen:1"])
            self.readQuestion()
            os.write(self.parent, answer)
            self.assertFalse(await d, answer)
        d = prompt("ext", ["tcp-listen:1"])
        self.readQuestion()
        os.write(self.parent, b"YES\n")
        self.assertTrue(await d)

    async def test_typeAheadIgnored(self) -> None:
        """
        Input typed before the question is discarded: it cannot answer it.
        """
        os.write(self.parent, b"y\n")
        d = self.prompt()("ext", ["tcp-listen:1"])
        self.readQuestion()
        os.write(self.parent, b"n\n")
        self.assertFalse(await d)

    async def test_escaped(self) -> None:
        """
        Escape sequences in the extension's name or the permissions are shown
        escaped, never sent to the terminal.
        """
        d = self.prompt()("e\x1b[2Jx", ["tcp-connect:\x1b]0;t\x07:1"])
        question = self.readQuestion()
        self.assertNotIn("\x1b", question)
        self.assertNotIn("\x07", question)
        self.assertIn("e\\x1b[2Jx", question)
        os.write(self.parent, b"n\n")
        self.assertFalse(await d)

    async def test_noTerminal(self) -> None:
        """
        Without a terminal the request is refused and that is logged.
        """

        def noTTY() -> int:
            raise OSError(6, "No such device or address")

        prompt = TTYPrompt(self.reactor, noTTY)
        self.assertFalse(await prompt("ext", ["tcp-listen:1"]))
        self.assertTrue(any("no terminal" in m for m in self.log.messages()))

    def test_timeout(self) -> None:
        """
        No answer within the timeout refuses (and is logged).
        """
        clock = MemoryReactorClock()
        prompt = TTYPrompt(clock, lambda: os.dup(self.child), timeout=5)
        d = prompt("ext", ["tcp-listen:1"])
        self.assertNoResult(d)
        self.assertEqual(len(clock.readers), 1)
        clock.advance(5)
        self.assertFalse(self.successResultOf(d))
        self.assertEqual(len(clock.readers), 0)
        self.assertTrue(any("no answer" in m for m in self.log.messages()))

    def test_oneAtATimeAndStop(self) -> None:
        """
        Questions are asked one at a time; C{stop} refuses the current and
        every later one.
        """
        clock = MemoryReactorClock()
        prompt = TTYPrompt(clock, lambda: os.dup(self.child), timeout=5)
        first = prompt("a", ["tcp-listen:1"])
        second: Deferred[bool] = prompt("b", ["tcp-listen:2"])
        self.assertIn("'a'", self.readQuestion())
        self.assertNoResult(second)
        prompt.stop()
        self.assertFalse(self.successResultOf(first))
        self.assertFalse(self.successResultOf(second))
        self.assertEqual(len(clock.readers), 0)


class ExitSignalReactor(MemoryReactorClock):
    """
    A memory reactor that records the signal that stopped it, as the real
    reactor does for twistd.
    """

    _exitSignal: int | None = None


class HostingTests(SynchronousTestCase):
    """
    Tests for L{TCPExtService} starting and stopping extensions on a memory
    reactor.
    """

    def setUp(self) -> None:
        """
        A folder of extensions, a state folder and a memory reactor.
        """
        self.base = FilePath(self.mktemp())
        self.base.makedirs()
        self.state = FilePath(self.mktemp())
        self.reactor = ExitSignalReactor()
        self.log = LogCatcher(self)

    def service(self, **kw: Any) -> TCPExtService:
        """
        A service over C{self.base}.
        """
        return TCPExtService(
            extensionPaths=[],
            extensionDirectories=[self.base.path],
            stateDirectory=self.state.path,
            reactor=self.reactor,
            **kw,
        )

    def listener(self, name: str, port: int, **fields: object) -> None:
        """
        An extension C{name} that listens on C{port} (its manifest's
        permission) and has C{tcp-connect:example.com:80} as an optional
        permission.
        """
        writeExtension(
            self.base,
            name,
            manifestWith(
                name=name,
                permissions=[f"tcp-listen:{port}"],
                optional_permissions=["tcp-connect:example.com:80"],
                **fields,
            ),
            script=(
                "def main(browser):\n"
                f"    return browser.TCPSocket.listen(port={port})\n"
            ),
        )

    def children(self, service: TCPExtService) -> dict[str, Any]:
        """
        The extension services, by name.
        """
        return {child.name: child for child in service}

    def test_startAndStop(self) -> None:
        """
        Starting runs every extension (here: each listens); a failing one is
        reported and the others run; stopping closes their servers and
        fires once done.
        """
        self.listener("one", 7001)
        self.listener("two", 7002)
        writeExtension(
            self.base,
            "bad",
            manifestWith(name="bad"),
            script="def main(browser):\n    raise RuntimeError('bad main')\n",
        )
        service = self.service()
        service.startService()
        self.assertEqual(
            sorted(port for port, *_ in self.reactor.tcpServers), [7001, 7002]
        )
        children = self.children(service)
        self.assertEqual(sorted(children), ["bad", "one", "two"])
        self.assertIsNotNone(children["bad"].failed)
        self.assertIsNone(children["one"].failed)
        self.flushLoggedErrors(RuntimeError)
        d = service.stopService()
        self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(children["one"].browser)
        self.assertTrue(any("tcpext: stopped" in m for m in self.log.messages()))

    def test_exitStatus(self) -> None:
        """
        After a clean stop caused by C{SIGTERM} the service clears the signal
        twistd would re-raise, so the process exits with status 0; C{SIGINT}
        is left alone.
        """
        import signal

        self.listener("one", 7001)
        service = self.service()
        service.startService()
        self.reactor._exitSignal = signal.SIGTERM
        self.successResultOf(service.stopService())
        self.assertIsNone(self.reactor._exitSignal)

        service = self.service()
        service.startService()
        self.reactor._exitSignal = signal.SIGINT
        self.successResultOf(service.stopService())
        self.assertEqual(self.reactor._exitSignal, signal.SIGINT)

    def test_grants(self) -> None:
        """
        An extension's browser holds its manifest's permissions, its valid
        operator grants and the runtime grants stored in the state folder.
        """
        self.listener("one", 7001)
        JSONGrantStore(self.state.path).save("one", ["tcp-connect:example.com:80"])
        service = self.service()
        service.startService()
        grants = {str(p) for p in self.children(service)["one"].browser.grants}
        self.assertEqual(grants, {"tcp-listen:7001", "tcp-connect:example.com:80"})
        self.successResultOf(service.stopService())

        service = self.service(grants=[("one", "tcp-connect:example.com:80")])
        FilePath(JSONGrantStore(self.state.path).pathFor("one")).remove()
        service.startService()
        grants = {str(p) for p in self.children(service)["one"].browser.grants}
        self.assertEqual(grants, {"tcp-listen:7001", "tcp-connect:example.com:80"})
        self.successResultOf(service.stopService())

    def test_corruptGrantsFailClosed(self) -> None:
        """
        A corrupt grant file is reported and the extension runs with only
        its manifest's permissions.
        """
        self.listener("one", 7001)
        store = JSONGrantStore(self.state.path)
        store.save("one", ["tcp-connect:example.com:80"])
        FilePath(store.pathFor("one")).setContent(b'{"grants": ["tcp-connect:*:*"')
        service = self.service()
        service.startService()
        grants = {str(p) for p in self.children(service)["one"].browser.grants}
        self.assertEqual(grants, {"tcp-listen:7001"})
        self.assertTrue(
            any("treating it as no grants" in m for m in self.log.messages())
        )
        self.successResultOf(service.stopService())

    def test_runtimeRequestDeniedAndLogged(self) -> None:
        """
        With the default prompt, a runtime request is refused, nothing is
        stored, and the denial is logged in the extension's namespace.
        """
        writeExtension(
            self.base,
            "asker",
            manifestWith(
                name="asker", optional_permissions=["tcp-connect:example.com:80"]
            ),
            script=(
                "def main(browser):\n"
                "    return browser.permissions.request(\n"
                "        {'permissions': ['tcp-connect:example.com:80']})\n"
            ),
        )
        service = self.service()
        service.startService()
        self.assertEqual(JSONGrantStore(self.state.path).load("asker"), [])
        self.assertTrue(
            any(
                "denied" in m and "tcp-connect:example.com:80" in m
                for m in self.log.messages("tcpext.extension.asker")
            ),
            self.log.messages("tcpext.extension.asker"),
        )
        self.successResultOf(service.stopService())

    def test_isolationChild(self) -> None:
        """
        With an isolation mode, each extension runs under an
        L{tcpext._supervisor.IsolatedExtension} (not started here), with
        the service's output rate.
        """
        from tcpext._supervisor import IsolatedExtension

        self.listener("one", 7001)
        service = self.service(isolation="process-unconfined", logRate=7)
        service.grantStore = JSONGrantStore(self.state.path)
        [manifest] = service.loadExtensions()
        child = service._makeChild(manifest, [])
        self.assertIsInstance(child, IsolatedExtension)
        self.assertEqual(child.logRate, 7)  # type: ignore[attr-defined]

    def test_unload(self) -> None:
        """
        Removing one extension's service stops it and closes its server;
        the others keep theirs.
        """
        self.listener("one", 7001)
        self.listener("two", 7002)
        service = self.service()
        service.startService()
        children = self.children(service)
        browser = children["one"].browser
        d = service.removeService(children["one"])
        self.successResultOf(d)
        self.assertFalse(children["one"].running)
        self.assertIsNone(children["one"].browser)
        self.failureResultOf(browser.TCPSocket.listen(port=7001), PermissionDenied)
        self.assertTrue(children["two"].running)
        self.assertIsNotNone(children["two"].browser)
        self.successResultOf(service.stopService())

    def test_restart(self) -> None:
        """
        A service stopped and started again loads its extensions afresh
        (no false duplicates, the script runs again).
        """
        self.listener("one", 7001)
        service = self.service()
        service.startService()
        self.successResultOf(service.stopService())
        service.startService()
        self.assertEqual(service.errors, [])
        [child] = list(service)
        self.assertTrue(child.running)
        self.assertEqual(len(self.reactor.tcpServers), 2)
        self.successResultOf(service.stopService())


class LoopbackHostingTests(TestCase):
    """
    Stopping the service on real loopback sockets.
    """

    timeout = 30

    async def test_stopClosesSocketsAndWaits(self) -> None:
        """
        Stopping the service closes the extension's listening port and the
        connections it holds (its peers read the end), and the stop's
        Deferred fires only once the port is really closed.
        """
        from twisted.internet import reactor as globalReactor
        from twisted.internet.endpoints import TCP4ClientEndpoint
        from twisted.internet.error import ConnectionLost, ConnectionRefusedError
        from twisted.internet.task import deferLater

        from tcpext.endpoints import connectSocket

        base = FilePath(self.mktemp())
        base.makedirs()
        portFile = FilePath(self.mktemp())
        writeExtension(
            base,
            "holder",
            manifestWith(name="holder", permissions=["tcp-listen:127.0.0.1:*"]),
            script=(
                "from twisted.internet.defer import ensureDeferred\n"
                "held = []\n"
                "async def serve(server):\n"
                "    async for sock in server.connections:\n"
                "        held.append(sock)\n"
                "        await sock.write(b'hello')\n"
                "async def main(browser):\n"
                "    server = await browser.TCPSocket.listen(host='127.0.0.1')\n"
                f"    with open({portFile.path!r}, 'w') as f:\n"
                "        f.write(str(server.localPort))\n"
                "    ensureDeferred(serve(server))\n"
            ),
        )
        service = TCPExtService(
            extensionPaths=[base.child("holder").path],
            stateDirectory=self.mktemp(),
            reactor=globalReactor,
        )
        service.startService()
        self.addCleanup(service.stopService)
        for _ in range(200):
            if portFile.exists() and portFile.getContent():
                break
            await deferLater(globalReactor, 0.01, lambda: None)
        port = int(portFile.getContent())
        clients = []
        for _ in range(2):
            client = await connectSocket(
                TCP4ClientEndpoint(globalReactor, "127.0.0.1", port)
            )
            self.addCleanup(client.closeImmediately)
            self.assertEqual(await client.readExactly(5), b"hello")
            clients.append(client)

        stopping = service.stopService()
        self.assertNoResult(stopping)
        await stopping
        for client in clients:
            try:
                end = await client.read()
            except ConnectionLost:
                end = b""
            self.assertEqual(end, b"")
        with self.assertRaises(ConnectionRefusedError):
            await connectSocket(TCP4ClientEndpoint(globalReactor, "127.0.0.1", port))
