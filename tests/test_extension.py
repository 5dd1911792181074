"""
Tests for L{tcpext.extension}: manifest validation, loading the background
script, and running C{main(browser)} under L{ExtensionService}.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from tcpext.extension import (
    ExtensionError,
    ExtensionService,
    Manifest,
    loadMain,
    loadManifest,
    validateExtensionId,
)


def writeExtension(
    base: FilePath[str],
    folder: str,
    manifest: object = None,
    script: str | None = "def main(browser):\n    pass\n",
    scriptName: str = "background.py",
    rawManifest: bytes | None = None,
) -> str:
    """
    Create an extension folder under C{base}.

    @param manifest: The manifest object (default: a valid one named after
        the folder).
    @param script: The background script's text, or L{None} for none.
    @param rawManifest: Bytes written as the manifest instead of
        C{manifest}.
    @return: The folder's path.
    """
    path = base.child(folder)
    path.makedirs(ignoreExistingDirectory=True)
    if manifest is None:
        manifest = {
            "manifest_version": 2,
            "name": folder,
            "version": "1.0",
            "permissions": ["tcp-listen:7000"],
            "optional_permissions": ["tcp-connect:example.com:80"],
            "background": {"scripts": [scriptName]},
        }
    if rawManifest is None:
        rawManifest = json.dumps(manifest).encode("utf-8")
    path.child("manifest.json").setContent(rawManifest)
    if script is not None:
        path.child(scriptName).setContent(script.encode("utf-8"))
    return path.path


def manifestWith(**fields: object) -> dict[str, object]:
    """
    A valid manifest named C{ext}, with C{fields} replaced (a value of
    L{None} removes the field).
    """
    manifest: dict[str, object] = {
        "manifest_version": 2,
        "name": "ext",
        "version": "1.0",
        "permissions": [],
        "background": {"scripts": ["background.py"]},
    }
    for key, value in fields.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    return manifest


class LoadManifestTests(SynchronousTestCase):
    """
    Tests for L{loadManifest}.
    """

    def setUp(self) -> None:
        """
        A scratch folder.
        """
        self.base = FilePath(self.mktemp())
        self.base.makedirs()

    def assertError(self, path: str, extension: str, field: str, *words: str) -> None:
        """
        Loading C{path} fails with an L{ExtensionError} naming C{extension}
        and C{field}, whose message contains C{words}.
        """
        error = self.assertRaises(ExtensionError, loadManifest, path)
        self.assertEqual((error.extension, error.field), (extension, field))
        message = str(error)
        self.assertIn(repr(extension), message)
        self.assertIn(field, message)
        for word in words:
            self.assertIn(word, message)

    def test_valid(self) -> None:
        """
        A valid manifest gives a L{Manifest} with the id, version, parsed
        permissions and the script's absolute path.
        """
        path = writeExtension(self.base, "echo")
        manifest = loadManifest(path)
        self.assertIsInstance(manifest, Manifest)
        self.assertEqual(manifest.id, "echo")
        self.assertEqual(manifest.version, "1.0")
        self.assertEqual([str(p) for p in manifest.permissions], ["tcp-listen:7000"])
        self.assertEqual(
            [str(p) for p in manifest.optionalPermissions],
            ["tcp-connect:example.com:80"],
        )
        self.assertEqual(manifest.script, os.path.join(path, "background.py"))
        self.assertEqual(manifest.raw["name"], "echo")
        self.assertEqual(manifest.ignored, ())

    def test_otherPermissionsIgnored(self) -> None:
        """
        WebExtension permissions other than C{tcp-*} are kept aside in
        C{ignored}, not refused.
        """
        path = writeExtension(
            self.base,
            "x",
            manifestWith(
                name="x",
                permissions=["storage", "tcp-listen:80"],
                optional_permissions=["tabs"],
            ),
        )
        manifest = loadManifest(path)
        self.assertEqual(manifest.ignored, ("storage", "tabs"))
        self.assertEqual([str(p) for p in manifest.permissions], ["tcp-listen:80"])

    def test_missingFolder(self) -> None:
        """
        A path that is not a folder is reported.
        """
        self.assertError(self.base.child("nope").path, "nope", "folder")

    def test_missingManifest(self) -> None:
        """
        A folder without C{manifest.json} is reported under the folder's name.
        """
        self.base.child("empty").makedirs()
        self.assertError(
            self.base.child("empty").path, "empty", "manifest.json", "missing"
        )

    def test_invalidJSON(self) -> None:
        """
        Invalid JSON is reported under the folder's name.
        """
        path = writeExtension(self.base, "broken", rawManifest=b'{"name": ')
        self.assertError(path, "broken", "manifest.json", "invalid JSON")

    def test_notUTF8(self) -> None:
        """
        A manifest that is not UTF-8 is reported.
        """
        path = writeExtension(self.base, "latin", rawManifest=b'{"name": "\xff"}')
        self.assertError(path, "latin", "manifest.json", "UTF-8")

    def test_notAnObject(self) -> None:
        """
        A manifest that is JSON but not an object is reported.
        """
        path = writeExtension(self.base, "list", rawManifest=b"[1, 2]")
        self.assertError(path, "list", "manifest.json", "object")

    def test_manifestVersion(self) -> None:
        """
        A C{manifest_version} other than the integer 2 is reported under the
        manifest's name.
        """
        for version in (3, "2", True, None):
            path = writeExtension(
                self.base, "v", manifestWith(manifest_version=version, name="named")
            )
            self.assertError(path, "named", "manifest_version", "must be 2")

    def test_missingName(self) -> None:
        """
        A manifest without a name is reported under the folder's name.
        """
        path = writeExtension(self.base, "folder", manifestWith(name=None))
        self.assertError(path, "folder", "name", "missing")

    def test_unsafeName(self) -> None:
        """
        A name that cannot be an id (path separators, spaces, control
        characters, too long, not a string) is refused.
        """
        for name in ["../x", "a b", "x\x1b[31m", "a" * 65, "-x", ".x", "é"]:
            path = writeExtension(self.base, "f", manifestWith(name=name))
            self.assertError(path, name, "name", "not a valid extension id")
        path = writeExtension(self.base, "f", manifestWith(name=5))
        self.assertError(path, "f", "name", "must be a string")

    def test_version(self) -> None:
        """
        A missing or non-string C{version} is reported.
        """
        for version in (None, 1, ""):
            path = writeExtension(self.base, "f", manifestWith(version=version))
            self.assertError(path, "ext", "version")

    def test_unsafeVersion(self) -> None:
        """
        A C{version} with a control or format character (an escape sequence,
        a line break that would forge a log line, a bidirectional override)
        or longer than 64 characters is refused, and the message shows it
        escaped; printable text of any script is a version.
        """
        for version in [
            "1.0\x1b[2J",
            "1.0\n2026-01-01 [tcpext.service#info] forged",
            "1.0\t",
            "1.0\u202e",
            "1" * 65,
        ]:
            path = writeExtension(self.base, "f", manifestWith(version=version))
            error = self.assertRaises(ExtensionError, loadManifest, path)
            self.assertEqual(error.field, "version")
            self.assertIn("is not a version", str(error))
            self.assertTrue(str(error).isprintable(), str(error))
        for version in ["1.0", "2.1.3-beta+build.7", "1.0 (ünïcode)", "1" * 64]:
            path = writeExtension(self.base, "f", manifestWith(version=version))
            self.assertEqual(loadManifest(path).version, version)

    def test_invalidPermission(self) -> None:
        """
        An invalid C{tcp-*} entry is reported, naming the field and the entry.
        """
        path = writeExtension(
            self.base, "f", manifestWith(permissions=["tcp-connect:host:99999"])
        )
        self.assertError(path, "ext", "permissions", "tcp-connect:host:99999")
        path = writeExtension(
            self.base, "f", manifestWith(optional_permissions=["tcp-listen:x-y"])
        )
        self.assertError(path, "ext", "optional_permissions", "tcp-listen:x-y")

    def test_permissionsNotAList(self) -> None:
        """
        C{permissions} must be a list of strings.
        """
        path = writeExtension(self.base, "f", manifestWith(permissions="tcp-listen:1"))
        self.assertError(path, "ext", "permissions", "list")
        path = writeExtension(self.base, "f", manifestWith(permissions=[1]))
        self.assertError(path, "ext", "permissions")

    def test_background(self) -> None:
        """
        C{background.scripts} must name exactly one existing C{.py} file.
        """
        cases: list[tuple[object, str]] = [
            (None, "background"),
            ({"page": "x.html"}, "background.scripts"),
            ({"scripts": []}, "background.scripts"),
            ({"scripts": ["a.py", "b.py"]}, "background.scripts"),
            ({"scripts": ["a.js"]}, "background.scripts"),
            ({"scripts": ["missing.py"]}, "background.scripts"),
            ({"scripts": [1]}, "background.scripts"),
        ]
        for background, field in cases:
            path = writeExtension(self.base, "f", manifestWith(background=background))
            self.assertError(path, "ext", field)

    def test_scriptOutsideFolder(self) -> None:
        """
        A script path that escapes the folder (C{..}, absolute, or a symbolic
        link to outside) is refused.
        """
        self.base.child("outside.py").setContent(b"def main(b): pass\n")
        for script in ["../outside.py", self.base.child("outside.py").path]:
            path = writeExtension(
                self.base, "f", manifestWith(background={"scripts": [script]})
            )
            self.assertError(path, "ext", "background.scripts", "folder")
        path = writeExtension(
            self.base, "g", manifestWith(background={"scripts": ["link.py"]})
        )
        os.symlink(self.base.child("outside.py").path, os.path.join(path, "link.py"))
        self.assertError(path, "ext", "background.scripts", "outside")


class ValidateExtensionIdTests(SynchronousTestCase):
    """
    Tests for L{validateExtensionId}.
    """

    def test_valid(self) -> None:
        """
        Letters, digits, C{-} and C{_} are accepted.
        """
        for name in ["echo", "echo-server", "a_1", "A" * 64]:
            self.assertEqual(validateExtensionId(name), name)

    def test_invalid(self) -> None:
        """
        Anything else raises L{ValueError}.
        """
        for name in ["", "a/b", "a.b", "a\n", "_x", object()]:
            self.assertRaises(ValueError, validateExtensionId, name)


class LoadMainTests(SynchronousTestCase):
    """
    Tests for L{loadMain}.
    """

    def setUp(self) -> None:
        """
        A scratch folder.
        """
        self.base = FilePath(self.mktemp())
        self.base.makedirs()

    def test_loadsMain(self) -> None:
        """
        The script's C{main} is returned, from a module that is not left in
        C{sys.modules}; loading twice gives independent modules.
        """
        path = writeExtension(
            self.base,
            "ext",
            script="import sys\nloaded = __name__\ndef main(browser):\n"
            "    return (__name__, __name__ in sys.modules)\n",
        )
        before = set(sys.modules)
        first = loadMain(loadManifest(path))
        second = loadMain(loadManifest(path))
        self.assertEqual(set(sys.modules) - before, set())
        name1, present = first(None)
        name2, _ = second(None)
        self.assertNotEqual(name1, name2)
        self.assertIn("ext", name1)
        self.assertFalse(present)
        self.assertIsNot(first, second)

    def test_importError(self) -> None:
        """
        An exception at import is an L{ExtensionError} naming the extension
        and the exception.
        """
        path = writeExtension(self.base, "ext", script="import no_such_module_x\n")
        error = self.assertRaises(ExtensionError, loadMain, loadManifest(path))
        self.assertEqual(error.extension, "ext")
        self.assertIn("ModuleNotFoundError", str(error))
        self.assertIn("no_such_module_x", str(error))

    def test_systemExit(self) -> None:
        """
        A script that calls C{sys.exit()} at import is an extension error,
        not the end of the service.
        """
        path = writeExtension(self.base, "ext", script="import sys\nsys.exit(3)\n")
        error = self.assertRaises(ExtensionError, loadMain, loadManifest(path))
        self.assertIn("SystemExit", str(error))

    def test_syntaxError(self) -> None:
        """
        A syntax error is reported too.
        """
        path = writeExtension(self.base, "ext", script="def main(:\n")
        error = self.assertRaises(ExtensionError, loadMain, loadManifest(path))
        self.assertIn("SyntaxError", str(error))

    def test_noMain(self) -> None:
        """
        A script without a callable C{main} is reported.
        """
        path = writeExtension(self.base, "ext", script="main = 3\n")
        error = self.assertRaises(ExtensionError, loadMain, loadManifest(path))
        self.assertEqual(error.field, "main")


class FakeBrowser:
    """
    A stand-in for the browser namespace that records C{close()}.
    """

    def __init__(self, **kw: Any) -> None:
        self.kw = kw
        self.closing: Deferred[None] | None = None

    def close(self) -> Deferred[None]:
        self.closing = Deferred()
        return self.closing


class ExtensionServiceTests(SynchronousTestCase):
    """
    Tests for L{ExtensionService}.
    """

    def setUp(self) -> None:
        """
        A scratch folder and a log catcher.
        """
        self.base = FilePath(self.mktemp())
        self.base.makedirs()
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.browsers: list[FakeBrowser] = []

    def makeBrowser(self, **kw: Any) -> FakeBrowser:
        """
        Build and remember a L{FakeBrowser}.
        """
        browser = FakeBrowser(**kw)
        self.browsers.append(browser)
        return browser

    def service(self, script: str, name: str = "ext") -> ExtensionService:
        """
        An L{ExtensionService} for an extension with C{script}.
        """
        path = writeExtension(self.base, name, script=script)
        return ExtensionService(loadManifest(path), self.makeBrowser)

    def messages(self, namespace: str = "tcpext.extension.ext") -> list[str]:
        """
        The formatted log messages in C{namespace}.
        """
        return [
            formatEvent(e) for e in self.events if e.get("log_namespace") == namespace
        ]

    def test_callsMain(self) -> None:
        """
        Starting builds the browser with the extension's id, raw manifest and
        logger, and calls C{main(browser)}.
        """
        service = self.service(
            "calls = []\ndef main(browser):\n    browser.kw['called'] = True\n"
        )
        service.startService()
        [browser] = self.browsers
        self.assertEqual(browser.kw["extensionId"], "ext")
        self.assertEqual(browser.kw["manifest"]["name"], "ext")
        self.assertEqual(browser.kw["log"].namespace, "tcpext.extension.ext")
        self.assertTrue(browser.kw["called"])
        self.assertIsNone(service.failed)
        self.assertTrue(any("started" in m for m in self.messages()))

    def test_mainRaises(self) -> None:
        """
        An exception from C{main} is logged with the extension's name and
        does not propagate.
        """
        service = self.service("def main(browser):\n    raise RuntimeError('boom')\n")
        service.startService()
        self.assertIsNotNone(service.failed)
        self.assertTrue(
            any("'ext'" in m and "boom" in m for m in self.messages()),
            self.messages(),
        )
        self.flushLoggedErrors(RuntimeError)

    def test_portTaken(self) -> None:
        """
        A C{main} that fails at once because its port is taken is reported as
        one error line naming the extension, the port and the reason, without
        a traceback; the extension is failed and was never "started".
        """
        service = self.service(
            "import errno, os\n"
            "from twisted.internet.error import CannotListenError\n"
            "def main(browser):\n"
            "    raise CannotListenError('127.0.0.1', 7001,\n"
            "        OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)))\n"
        )
        service.startService()
        self.assertEqual(
            self.messages(),
            [
                "extension 'ext': main(browser) failed: cannot listen on "
                "127.0.0.1:7001: Address already in use"
            ],
        )
        [event] = [
            e for e in self.events if e.get("log_namespace") == service.log.namespace
        ]
        self.assertEqual(event["log_level"].name, "error")
        self.assertNotIn("log_failure", event)
        assert service.failed is not None
        self.assertEqual(
            str(service.failed),
            "extension 'ext': main: cannot listen on 127.0.0.1:7001: "
            "Address already in use",
        )

    def test_portTakenMessage(self) -> None:
        """
        A port error that carries only a message (as an isolated extension's
        does, with the host's words) reads the same as one with an errno.
        """
        from twisted.internet.error import CannotListenError
        from twisted.python.failure import Failure

        from tcpext.extension import describeMainFailure

        for cause in (
            OSError(98, "Address already in use"),
            OSError(
                "cannot listen on 127.0.0.1:7001: [Errno 98] Address already in use"
            ),
            OSError("[Errno 98] Address already in use"),
        ):
            self.assertEqual(
                describeMainFailure(
                    Failure(CannotListenError("127.0.0.1", 7001, cause))
                ),
                ("cannot listen on 127.0.0.1:7001: Address already in use", True),
            )

    def test_expectedFailures(self) -> None:
        """
        A permission denied, a refused connection or a lost one ending C{main}
        is one error line with the error's message, without a traceback.
        """
        for raising, message in [
            (
                "from tcpext import PermissionDenied\n"
                "error = PermissionDenied('permission denied: connect to x:1')",
                "permission denied: connect to x:1",
            ),
            (
                "from twisted.internet.error import ConnectionRefusedError\n"
                "error = ConnectionRefusedError()",
                "Connection was refused by other side",
            ),
        ]:
            self.events.clear()
            service = self.service(
                f"{raising}\nasync def main(browser):\n    raise error\n",
                name=f"ext{len(self.browsers)}",
            )
            service.startService()
            [event] = [
                e
                for e in self.events
                if e.get("log_namespace") == service.log.namespace
            ]
            self.assertEqual(event["log_level"].name, "error")
            self.assertNotIn("log_failure", event)
            self.assertIn(f"main(browser) failed: {message}", formatEvent(event))

    def test_unexpectedFailureKeepsTraceback(self) -> None:
        """
        Any other error (a bug in the extension) is critical and carries its
        traceback.
        """
        service = self.service("def main(browser):\n    raise KeyError('k')\n")
        service.startService()
        [event] = [
            e for e in self.events if e.get("log_namespace") == service.log.namespace
        ]
        self.assertEqual(event["log_level"].name, "critical")
        self.assertIn("log_failure", event)
        self.assertIn("main(browser) failed: KeyError: 'k'", formatEvent(event))
        self.flushLoggedErrors(KeyError)

    def test_mainExits(self) -> None:
        """
        C{sys.exit()} in C{main} is reported like any failure.
        """
        service = self.service("import sys\ndef main(browser):\n    sys.exit(1)\n")
        service.startService()
        self.assertIsNotNone(service.failed)
        self.assertTrue(any("SystemExit" in m for m in self.messages()))
        self.flushLoggedErrors(SystemExit)

    def test_coroutineFails(self) -> None:
        """
        A coroutine C{main} is awaited; its failure is reported.
        """
        service = self.service(
            "async def main(browser):\n"
            "    await browser.kw['wait']\n"
            "    raise ValueError('later')\n"
        )
        wait: Deferred[None] = Deferred()
        original = self.makeBrowser

        def makeBrowser(**kw: Any) -> FakeBrowser:
            browser = original(**kw)
            browser.kw["wait"] = wait
            return browser

        service._makeBrowser = makeBrowser
        service.startService()
        self.assertIsNone(service.failed)
        wait.callback(None)
        self.assertIsNotNone(service.failed)
        self.assertTrue(any("later" in m for m in self.messages()))
        self.flushLoggedErrors(ValueError)

    def test_deferredMain(self) -> None:
        """
        A L{Deferred} returned by C{main} is awaited; its success is logged.
        """
        service = self.service(
            "from twisted.internet.defer import Deferred\n"
            "d = Deferred()\n"
            "def main(browser):\n    browser.kw['d'] = d\n    return d\n"
        )
        service.startService()
        self.assertFalse(any("finished" in m for m in self.messages()))
        self.browsers[0].kw["d"].callback(None)
        self.assertTrue(any("finished" in m for m in self.messages()))

    def test_importFails(self) -> None:
        """
        A script that cannot be imported is reported; stopping still closes
        the browser.
        """
        service = self.service("raise ImportError('nope')\n")
        service.startService()
        assert service.failed is not None
        self.assertEqual(service.failed.field, "background.scripts")
        self.assertTrue(any("nope" in m for m in self.messages()))
        d = service.stopService()
        self.assertNoResult(d)
        closing = self.browsers[0].closing
        assert closing is not None
        closing.callback(None)
        self.successResultOf(d)

    def test_browserRefused(self) -> None:
        """
        When the browser cannot be built (e.g. an operator grant the manifest
        does not allow), the extension is reported and not run.
        """
        path = writeExtension(
            self.base, "ext", script="raise AssertionError('must not run')\n"
        )

        def refuse(**kw: Any) -> None:
            raise ValueError("cannot grant it")

        service = ExtensionService(loadManifest(path), refuse)
        service.startService()
        assert service.failed is not None
        self.assertIn("cannot grant it", str(service.failed))
        self.successResultOf(service.stopService())

    def test_stopCancelsAndCloses(self) -> None:
        """
        Stopping cancels a still-running C{main}, closes the browser and waits
        for it; the cancellation is not reported as a failure.
        """
        service = self.service(
            "from twisted.internet.defer import Deferred\n"
            "async def main(browser):\n    await Deferred()\n"
        )
        service.startService()
        d = service.stopService()
        self.assertNoResult(d)
        closing = self.browsers[0].closing
        assert closing is not None
        closing.callback(None)
        self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(service.failed)
        self.assertFalse(any("failed" in m for m in self.messages()))
        self.assertTrue(any("stopped" in m for m in self.messages()))

    def test_ignoredPermissionsWarned(self) -> None:
        """
        Permissions tcpext does not implement are logged as ignored.
        """
        path = writeExtension(
            self.base,
            "ext",
            manifestWith(permissions=["storage"]),
        )
        ExtensionService(loadManifest(path), self.makeBrowser).startService()
        self.assertTrue(
            any("ignoring permission 'storage'" in m for m in self.messages())
        )
