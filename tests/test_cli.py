# -*- test-case-name: tests.test_cli -*-
"""
Tests for the C{tcpext} command (L{tcpext._cli}): C{check}, exit statuses,
and the console commands against an admin API served in the test.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet import defer, utils
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpext._admin import makeAdminSite, parseAdminEndpoint
from tcpext._cli import checkExtension
from tcpext.extension import ExtensionError, ExtensionService, loadManifest
from tests._folders import shortFolder
from tests.test_admin import FakeConsole

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
EXAMPLES = os.path.join(REPO, "examples")


def makeExtension(case: SynchronousTestCase, manifest: object, script: str) -> str:
    """
    Write an extension folder with this manifest (a JSON value, or the text
    of the file if a C{str}) and this C{background.py}.
    """
    folder = os.path.abspath(case.mktemp())
    os.makedirs(folder)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        f.write(manifest if isinstance(manifest, str) else json.dumps(manifest))
    with open(os.path.join(folder, "background.py"), "w") as f:
        f.write(script)
    return folder


def manifestFor(name: str = "probe", **extra: object) -> dict[str, object]:
    """
    A valid manifest, with C{extra} fields.
    """
    return {
        "manifest_version": 2,
        "name": name,
        "version": "1.0",
        "permissions": ["tcp-listen:7000"],
        "background": {"scripts": ["background.py"]},
        **extra,
    }


class CheckTests(SynchronousTestCase):
    """
    C{tcpext check FOLDER} validates without running anything.
    """

    def test_examples(self) -> None:
        """
        Every bundled extension passes.
        """
        folders = [
            os.path.join(EXAMPLES, name)
            for name in sorted(os.listdir(EXAMPLES))
            if os.path.isfile(os.path.join(EXAMPLES, name, "manifest.json"))
        ]
        self.assertGreater(len(folders), 3)
        for folder in folders:
            summary = checkExtension(folder)
            self.assertEqual(summary["id"], loadManifest(folder).id)

    def test_notRun(self) -> None:
        """
        The script is parsed, never run: what its top level would do does
        not happen.
        """
        marker = os.path.abspath(self.mktemp())
        folder = makeExtension(
            self,
            manifestFor(),
            f"open({marker!r}, 'w').close()\n\ndef main(browser):\n    pass\n",
        )
        self.assertEqual(checkExtension(folder)["permissions"], ["tcp-listen:7000"])
        self.assertFalse(os.path.exists(marker))

    def test_mainForms(self) -> None:
        """
        C{main} may be a function, a coroutine function, an assignment, an
        import, or defined inside a top-level C{if}/C{try}.
        """
        for script in [
            "def main(browser):\n    pass\n",
            "async def main(browser):\n    pass\n",
            "main = lambda browser: None\n",
            "from os import getcwd as main\n",
            "try:\n    import x\nexcept ImportError:\n    def main(b): pass\n",
            "if True:\n    main = print\n",
        ]:
            folder = makeExtension(self, manifestFor(), script)
            checkExtension(folder)

    def assertSameAsService(self, folder: str) -> str:
        """
        C{check} fails with the message the service logs for this folder.
        """
        checked = self.assertRaises(ExtensionError, checkExtension, folder)
        try:
            manifest = loadManifest(folder)
        except ExtensionError as e:
            loaded = e
        else:
            service = ExtensionService(manifest, lambda **kw: object())
            service.startService()
            assert service.failed is not None
            loaded = service.failed
            self.flushLoggedErrors()
        self.assertEqual(str(checked), str(loaded))
        return str(checked)

    def test_noMain(self) -> None:
        """
        A script without a top-level C{main} fails as in the service.
        """
        folder = makeExtension(
            self, manifestFor(), "def helper():\n    def main(b): pass\n"
        )
        message = self.assertSameAsService(folder)
        self.assertIn("defines no main(browser)", message)

    def test_manifestProblems(self) -> None:
        """
        Manifest problems give the service's messages.
        """
        cases: list[object] = [
            "{not json",
            manifestFor(manifest_version=3),
            manifestFor(permissions=["tcp-connect:bad host:80"]),
            manifestFor(name="bad name!"),
            manifestFor(background={"scripts": ["missing.py"]}),
        ]
        for manifest in cases:
            folder = makeExtension(self, manifest, "def main(b): pass\n")
            self.assertSameAsService(folder)

    def test_syntaxError(self) -> None:
        """
        A script that does not parse is reported with the extension's name.
        """
        folder = makeExtension(self, manifestFor(), "def main(:\n")
        e = self.assertRaises(ExtensionError, checkExtension, folder)
        self.assertIn("probe", str(e))
        self.assertIn("SyntaxError", str(e))


def runCommand(*args: str) -> defer.Deferred[tuple[bytes, bytes, int]]:
    """
    Run C{python -m tcpext ARGS}; fire with its output, errors and status.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return utils.getProcessOutputAndValue(
        sys.executable, ["-m", "tcpext", *args], env=env, path=REPO
    )


class StatusTests(TestCase):
    """
    The command's exit status and output, in a real process.
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_check(self) -> Any:
        """
        C{check} exits 0 for a good folder (one line), 1 with one line on
        stderr for a bad one.
        """
        out, err, code = yield runCommand("check", os.path.join(EXAMPLES, "on-demand"))
        self.assertEqual((code, err), (0, b""))
        self.assertIn(b"ok: extension 'on-demand'", out)
        folder = makeExtension(self, manifestFor(), "x = 1\n")
        out, err, code = yield runCommand("check", folder)
        self.assertEqual(code, 1)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn(b"defines no main(browser)", err)

    @defer.inlineCallbacks
    def test_usage(self) -> Any:
        """
        A usage error exits 2.
        """
        for args in [(), ("bogus",), ("grant", "only-one"), ("audit", "--after", "x")]:
            out, err, code = yield runCommand(*args)
            self.assertEqual(code, 2, args)

    @defer.inlineCallbacks
    def test_unreachable(self) -> Any:
        """
        No service: exit 1 and one line on stderr naming where it looked.
        """
        state = os.path.join(shortFolder(self), "state")
        out, err, code = yield runCommand("--state", state, "status")
        self.assertEqual(code, 1)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn(b"cannot reach the tcpext console", err)
        self.assertIn(os.path.join(state, "admin.sock").encode(), err)

    @defer.inlineCallbacks
    def test_pathTooLong(self) -> Any:
        """
        A console socket path longer than a UNIX socket path may be: exit 1
        and one line on stderr naming the path and the limit.
        """
        state = os.path.join(shortFolder(self), "s" * 120)
        out, err, code = yield runCommand("--state", state, "status")
        self.assertEqual(code, 1)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn(b"cannot reach the tcpext console", err)
        self.assertIn(b"at most 107 bytes", err)


class ConsoleCommandTests(TestCase):
    """
    The console commands against an admin API (over a fake service) on a
    UNIX socket.
    """

    timeout = 120

    def setUp(self) -> defer.Deferred[None]:
        from twisted.internet import reactor

        self.console = FakeConsole()
        folder = shortFolder(self)
        endpoint = parseAdminEndpoint("", folder)
        assert endpoint is not None and endpoint.unixPath is not None
        self.admin = "unix:" + endpoint.unixPath
        site = makeAdminSite(self.console, endpoint, None)

        def listening(port: Any) -> None:
            self.addCleanup(port.stopListening)

        return endpoint.listen(reactor, site).addCallback(listening)

    def run_(self, *args: str) -> defer.Deferred[tuple[bytes, bytes, int]]:
        """
        Run a console command against the test's service.
        """
        return runCommand("--admin", self.admin, *args)

    @defer.inlineCallbacks
    def test_status(self) -> Any:
        """
        C{status} is a table, C{--json} the API's list.
        """
        out, err, code = yield self.run_("status")
        self.assertEqual((code, err), (0, b""))
        lines = out.decode().splitlines()
        self.assertTrue(lines[0].startswith("EXTENSION"))
        self.assertIn("ext", lines[1])
        self.assertIn("manifest: tcp-listen:7000", lines[1])
        out, err, code = yield self.run_("--json", "status")
        self.assertEqual(json.loads(out)[0]["id"], "ext")

    @defer.inlineCallbacks
    def test_jsonAfterCommand(self) -> Any:
        """
        C{--json} may also follow the command (C{tcpext audit --json}, as
        the operations guide writes it), with the same output as before it.
        """
        for command in [("status",), ("grants", "ext"), ("requests",)]:
            before = yield self.run_("--json", *command)
            after = yield self.run_(*command, "--json")
            self.assertEqual(after[1:], (b"", 0), command)
            self.assertEqual(after[0], before[0], command)
            json.loads(after[0])
        out, err, code = yield self.run_("audit", "--json")
        self.assertEqual((code, err), (0, b""))

    @defer.inlineCallbacks
    def test_grantRevoke(self) -> Any:
        """
        C{grant} and C{revoke} change the grants; a refusal exits 1 with the
        service's reason on one line.
        """
        out, err, code = yield self.run_("grant", "ext", "tcp-connect:a.example:1")
        self.assertEqual(code, 0, err)
        self.assertIn("tcp-connect:a.example:1", self.console.grantsHeld["stored"])
        out, err, code = yield self.run_("grants", "ext")
        self.assertIn(b"stored    tcp-connect:a.example:1", out)
        out, err, code = yield self.run_("revoke", "ext", "tcp-connect:a.example:1")
        self.assertEqual(code, 0, err)
        self.assertNotIn("tcp-connect:a.example:1", self.console.grantsHeld["stored"])
        out, err, code = yield self.run_("revoke", "ext", "tcp-listen:7000")
        self.assertEqual(code, 1)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn(b"409", err)
        out, err, code = yield self.run_("grants", "nope")
        self.assertEqual(code, 1)
        self.assertIn(b"no extension 'nope'", err)

    @defer.inlineCallbacks
    def test_requests(self) -> Any:
        """
        C{requests} lists, C{approve}/C{deny} answer; an answered id exits 1.
        """
        self.console.pendingIds = {"1", "2"}
        out, err, code = yield self.run_("requests")
        self.assertEqual(len(out.decode().splitlines()), 3)
        out, err, code = yield self.run_("approve", "1")
        self.assertEqual((code, out), (0, b"approved request 1\n"))
        out, err, code = yield self.run_("deny", "2")
        self.assertEqual(code, 0)
        out, err, code = yield self.run_("deny", "2")
        self.assertEqual(code, 1)
        self.assertEqual(self.console.answers, [("1", True), ("2", False)])

    @defer.inlineCallbacks
    def test_auditAndSockets(self) -> Any:
        """
        C{audit} asks from C{--after}; C{sockets} asks each extension.
        """
        out, err, code = yield self.run_("audit", "--after", "5")
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(self.console.afters, [5])
        out, err, code = yield self.run_("sockets")
        self.assertEqual(code, 0, err)
        self.assertTrue(out.startswith(b"EXTENSION"))
