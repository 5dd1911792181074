# -*- test-case-name: tests.test_extension -*-
"""
Extensions: loading and validating a manifest, importing the background
script, and running its C{main(browser)}.

An extension is a folder holding C{manifest.json} and one Python background
script that defines C{main(browser)}.  L{loadManifest} reads and checks the
manifest; L{loadMain} imports the script as a module of its own and returns
its C{main}; L{ExtensionService} runs one extension under a service (build
the browser, call C{main}, close everything when stopped).

Every problem is an L{ExtensionError} whose message names the extension, the
field and what was wrong.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from attrs import frozen
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import CannotListenError, ConnectError, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcpext.permissions import (
    Permission,
    PermissionDenied,
    parseManifestPermissions,
)

__all__ = [
    "EXPECTED_FAILURES",
    "MANIFEST_FILE",
    "ExtensionError",
    "ExtensionService",
    "Manifest",
    "describeMainFailure",
    "extensionLogger",
    "loadMain",
    "loadManifest",
    "validateExtensionId",
]

MANIFEST_FILE = "manifest.json"
"""
The name of the manifest file inside an extension's folder.
"""

MAX_MANIFEST_BYTES = 1 << 20
"""
Manifests larger than this are refused without being parsed.
"""

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")

MAX_VERSION_LENGTH = 64
"""
The longest manifest C{version} (characters).
"""


def _printable(text: str) -> bool:
    """
    Is C{text} made of printable characters and plain spaces only (nothing
    that could move a terminal's cursor, recolour it, break a log line or
    reorder what is shown)?
    """
    return all(
        c == " " or (unicodedata.category(c)[0] not in "CZ" and c.isprintable())
        for c in text
    )


class ExtensionError(Exception):
    """
    An extension could not be loaded or run.

    @ivar extension: The extension's name (its folder's name when its
        manifest gives none).
    @ivar field: What was wrong (a manifest field, C{"manifest.json"},
        C{"background.scripts"}, C{"main"}, ...).
    @ivar problem: What was wrong with it.
    """

    def __init__(self, extension: str, field: str, problem: str) -> None:
        """
        @param extension: The extension's name.
        @param field: The field or stage at fault.
        @param problem: The problem.
        """
        super().__init__(extension, field, problem)
        self.extension = extension
        self.field = field
        self.problem = problem

    def __str__(self) -> str:
        """
        C{extension 'NAME': FIELD: PROBLEM}.
        """
        return f"extension {self.extension!r}: {self.field}: {self.problem}"


@frozen
class Manifest:
    """
    A validated extension manifest.

    @ivar id: The extension's id: its manifest C{name}.
    @ivar name: The manifest C{name}.
    @ivar version: The manifest C{version}.
    @ivar path: The extension's folder (absolute).
    @ivar script: The background script (absolute path, inside C{path}).
    @ivar permissions: The C{tcp-*} entries of C{permissions}.
    @ivar optionalPermissions: The C{tcp-*} entries of C{optional_permissions}.
    @ivar ignored: Other permission entries, which tcpext ignores.
    @ivar raw: The manifest mapping as read (what C{makeBrowser} and
        C{browser.runtime.getManifest()} see).
    """

    id: str
    name: str
    version: str
    path: str
    script: str
    permissions: tuple[Permission, ...]
    optionalPermissions: tuple[Permission, ...]
    ignored: tuple[str, ...]
    raw: Mapping[str, Any]


def validateExtensionId(name: object) -> str:
    """
    Check that C{name} can be an extension id: 1 to 64 ASCII letters,
    digits, C{-} or C{_}, starting with a letter or a digit (ids appear in
    log namespaces and state file names).

    @return: C{name}.
    @raise ValueError: Saying what is wrong.
    """
    if not isinstance(name, str):
        raise ValueError(f"must be a string, not {type(name).__name__}")
    if not _ID.match(name):
        raise ValueError(
            f"{name!r} is not a valid extension id: use 1 to 64 ASCII letters, "
            "digits, '-' or '_', starting with a letter or a digit"
        )
    return name


def _permissions(
    extension: str, field: str, value: object
) -> tuple[list[Permission], list[str]]:
    """
    Parse one permission list of a manifest.
    """
    if not isinstance(value, list):
        raise ExtensionError(
            extension, field, f"must be a list of strings, not {type(value).__name__}"
        )
    try:
        return parseManifestPermissions(value)
    except (ValueError, TypeError) as e:
        raise ExtensionError(extension, field, str(e))


def _script(extension: str, folder: str, background: object) -> str:
    """
    Find the background script named by the manifest's C{background}.
    """
    if not isinstance(background, dict):
        raise ExtensionError(
            extension, "background", "missing or not an object with 'scripts'"
        )
    scripts = background.get("scripts")
    if not isinstance(scripts, list) or not all(isinstance(s, str) for s in scripts):
        raise ExtensionError(
            extension, "background.scripts", "missing or not a list of strings"
        )
    if len(scripts) != 1:
        raise ExtensionError(
            extension,
            "background.scripts",
            f"must name exactly one Python script, not {len(scripts)}",
        )
    [script] = scripts
    if not script.endswith(".py"):
        raise ExtensionError(
            extension, "background.scripts", f"{script!r} is not a .py file"
        )
    if "\0" in script or os.path.isabs(script):
        raise ExtensionError(
            extension,
            "background.scripts",
            f"{script!r} must be a relative path inside the extension's folder",
        )
    root = os.path.realpath(folder)
    full = os.path.realpath(os.path.join(root, script))
    if os.path.commonpath([root, full]) != root:
        raise ExtensionError(
            extension,
            "background.scripts",
            f"{script!r} is outside the extension's folder",
        )
    if not os.path.isfile(full):
        raise ExtensionError(
            extension, "background.scripts", f"{script!r} does not exist"
        )
    return full


def loadManifest(path: str) -> Manifest:
    """
    Read and validate the manifest of the extension in the folder C{path}.

    @raise ExtensionError: For a missing or unreadable manifest, invalid
        JSON, a C{manifest_version} other than 2, a missing or invalid
        C{name} or C{version}, an invalid C{tcp-*} permission, or a
        background script that is missing, not exactly one C{.py} file, or
        outside the folder.
    """
    folder = os.path.abspath(path)
    label = os.path.basename(folder.rstrip(os.sep)) or folder
    manifestPath = os.path.join(folder, MANIFEST_FILE)
    if not os.path.isdir(folder):
        raise ExtensionError(label, "folder", f"{path!r} is not a directory")
    try:
        with open(manifestPath, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ExtensionError(label, MANIFEST_FILE, "missing")
    except OSError as e:
        raise ExtensionError(label, MANIFEST_FILE, f"cannot be read: {e}")
    if len(data) > MAX_MANIFEST_BYTES:
        raise ExtensionError(
            label, MANIFEST_FILE, f"larger than {MAX_MANIFEST_BYTES} bytes"
        )
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ExtensionError(label, MANIFEST_FILE, f"not UTF-8: {e}")
    except ValueError as e:
        raise ExtensionError(label, MANIFEST_FILE, f"invalid JSON: {e}")
    except RecursionError:
        raise ExtensionError(label, MANIFEST_FILE, "invalid JSON: nested too deeply")
    if not isinstance(raw, dict):
        raise ExtensionError(label, MANIFEST_FILE, "must hold a JSON object")

    name = raw.get("name")
    if isinstance(name, str) and name:
        label = name
    version = raw.get("manifest_version")
    if version != 2 or isinstance(version, bool):
        raise ExtensionError(
            label,
            "manifest_version",
            f"must be 2, not {json.dumps(version) if version is not None else 'missing'}",
        )
    if name is None:
        raise ExtensionError(label, "name", "missing")
    try:
        extensionId = validateExtensionId(name)
    except ValueError as e:
        raise ExtensionError(label, "name", str(e))
    extensionVersion = raw.get("version")
    if not isinstance(extensionVersion, str) or not extensionVersion:
        raise ExtensionError(label, "version", "missing or not a non-empty string")
    if len(extensionVersion) > MAX_VERSION_LENGTH or not _printable(extensionVersion):
        raise ExtensionError(
            label,
            "version",
            f"{extensionVersion[: MAX_VERSION_LENGTH + 1]!r} is not a version: "
            f"use at most {MAX_VERSION_LENGTH} printable characters (no control "
            "or format characters, line breaks or tabs)",
        )

    required, ignoredRequired = _permissions(
        label, "permissions", raw.get("permissions", [])
    )
    optional, ignoredOptional = _permissions(
        label, "optional_permissions", raw.get("optional_permissions", [])
    )
    script = _script(label, folder, raw.get("background"))
    return Manifest(
        id=extensionId,
        name=name,
        version=extensionVersion,
        path=folder,
        script=script,
        permissions=tuple(required),
        optionalPermissions=tuple(optional),
        ignored=tuple(ignoredRequired + ignoredOptional),
        raw=raw,
    )


_moduleCounter = itertools.count(1)


def loadMain(manifest: Manifest) -> Callable[[Any], Any]:
    """
    Import the background script of C{manifest} as a module of its own and
    return its C{main}.

    The module gets a unique name (C{_tcpext_extension_<id>_<n>}); it is in
    C{sys.modules} only while it runs its top level, so loading the same
    extension twice gives two independent modules and nothing is left behind.

    @raise ExtensionError: If the script cannot be imported (the message
        carries the exception) or defines no callable C{main}.
    """
    moduleName = (
        f"_tcpext_extension_{manifest.id.replace('-', '_')}_{next(_moduleCounter)}"
    )
    spec = importlib.util.spec_from_file_location(moduleName, manifest.script)
    if spec is None or spec.loader is None:
        raise ExtensionError(
            manifest.id, "background.scripts", f"cannot load {manifest.script!r}"
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[moduleName] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        # SystemExit too: an extension cannot stop the service.
        if isinstance(e, (KeyboardInterrupt, GeneratorExit)):
            raise
        raise ExtensionError(
            manifest.id,
            "background.scripts",
            f"importing {os.path.basename(manifest.script)!r} failed: "
            f"{type(e).__name__}: {e}",
        ) from e
    finally:
        sys.modules.pop(moduleName, None)
    main = getattr(module, "main", None)
    if not callable(main):
        raise ExtensionError(
            manifest.id,
            "main",
            f"{os.path.basename(manifest.script)!r} defines no main(browser)",
        )
    return main


def extensionLogger(extensionId: str) -> Logger:
    """
    The logger of one extension, in the namespace
    C{tcpext.extension.<extensionId>}.
    """
    return Logger(namespace=f"tcpext.extension.{extensionId}")


def _warnIgnored(log: Logger, extensionId: str, entries: Iterable[str]) -> None:
    """
    Warn on C{log} about each manifest permission in C{entries}, which
    tcpext does not implement (they are ignored).
    """
    for entry in entries:
        log.warn(
            "extension {extensionId!r}: ignoring permission {entry!r} "
            "(not a tcp-* permission; tcpext does not implement it)",
            extensionId=extensionId,
            entry=entry,
        )


def _describe(failure: Failure) -> str:
    """
    C{Type: message} for a failure.
    """
    name = failure.type.__name__ if failure.type is not None else "Error"
    return f"{name}: {failure.getErrorMessage()}"


EXPECTED_FAILURES: tuple[type[BaseException], ...] = (
    CannotListenError,
    ConnectError,
    ConnectionLost,
    PermissionDenied,
)
"""
Errors that end C{main} for a reason outside the extension's code (a port
already taken, a peer that refuses, a permission the operator did not grant):
reported as one error line, without a traceback.
"""


def describeMainFailure(failure: Failure) -> tuple[str, bool]:
    """
    What to say when C{main(browser)} fails with C{failure}, and whether the
    failure is an expected one (see L{EXPECTED_FAILURES}), to report without a
    traceback.

    @return: The reason (C{cannot listen on 127.0.0.1:7001: Address already in
        use} for a port that cannot be bound, the message for another
        expected error, C{Type: message} otherwise) and whether it is
        expected.
    """
    error = failure.value
    if isinstance(error, CannotListenError):
        where = f"{error.interface or '*'}:{error.port}"
        cause = error.socketError
        if isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror
        else:
            # An isolated extension's listen fails with the host's message,
            # which may say "cannot listen on ..." already.
            reason = re.sub(
                r"^\[Errno \d+\] ",
                "",
                str(cause).removeprefix(f"cannot listen on {where}: "),
            )
        return f"cannot listen on {where}: {reason}", True
    if isinstance(error, EXPECTED_FAILURES):
        return failure.getErrorMessage().rstrip("."), True
    return _describe(failure), False


class ExtensionService(Service):
    """
    Runs one extension in this process: builds its C{browser}, imports its
    script, calls C{main(browser)} and, when stopped, closes everything the
    extension opened.

    A failure at any stage is logged with the extension's name and leaves the
    extension stopped; it never propagates to the parent service.

    @ivar manifest: The extension's L{Manifest}.
    @ivar browser: Its C{browser} namespace once started, else L{None}.
    @ivar failed: The L{ExtensionError} that stopped it, if any.
    @ivar running: Whether the service is started.
    """

    def __init__(
        self,
        manifest: Manifest,
        makeBrowser: Callable[..., Any],
        *,
        log: Logger | None = None,
        onFailure: Callable[[ExtensionError], object] | None = None,
        onMainDone: Callable[[], object] | None = None,
    ) -> None:
        """
        @param manifest: The validated manifest.
        @param makeBrowser: Builds the browser: called with
            C{extensionId}, C{manifest} (the raw mapping) and C{log}; the
            host binds the rest (reactor, grant store, prompt, operator
            grants).
        @param log: The extension's logger (default: L{extensionLogger}).
        @param onFailure: Called with the L{ExtensionError} once the
            extension has failed (its browser, its script or its C{main}),
            after the failure is logged (an isolated extension's process
            reports it to the host this way).
        @param onMainDone: Called once C{main} has returned (its Deferred or
            coroutine included), after that is logged.
        """
        self.manifest = manifest
        self._onFailure = onFailure
        self._onMainDone = onMainDone
        self.name = manifest.id
        self._makeBrowser = makeBrowser
        self.log = log if log is not None else extensionLogger(manifest.id)
        self.browser: Any = None
        self.failed: ExtensionError | None = None
        self._main: Deferred[Any] | None = None
        self._stopping = False

    def _fail(self, error: ExtensionError) -> None:
        """
        Record and log why the extension stopped.
        """
        self.failed = error
        self.log.error("{error}", error=str(error), extensionId=self.manifest.id)
        if self._onFailure is not None:
            self._onFailure(error)

    def startService(self) -> None:
        """
        Build the browser, import the script and call C{main(browser)}.
        """
        Service.startService(self)
        self._stopping = False
        self.failed = None
        manifest = self.manifest
        _warnIgnored(self.log, manifest.id, manifest.ignored)
        try:
            self.browser = self._makeBrowser(
                extensionId=manifest.id, manifest=manifest.raw, log=self.log
            )
        except Exception as e:
            self._fail(ExtensionError(manifest.id, "permissions", str(e)))
            return
        try:
            main = loadMain(manifest)
        except ExtensionError as e:
            self._fail(e)
            return
        except Exception as e:
            self._fail(
                ExtensionError(
                    manifest.id, "background.scripts", f"{type(e).__name__}: {e}"
                )
            )
            return
        self._main = running = defer.maybeDeferred(main, self.browser)
        if not (running.called and isinstance(running.result, Failure)):
            # An extension whose main failed at once (its port is taken,
            # say) did not start: only the failure is reported.
            self.log.info(
                "extension {extensionId!r} {version} started from {path}",
                extensionId=manifest.id,
                version=manifest.version,
                path=manifest.path,
            )
        running.addCallbacks(self._mainDone, self._mainFailed)

    def _mainDone(self, result: object) -> None:
        """
        C{main} has finished (its Deferred or coroutine included).
        """
        self._main = None
        self.log.info(
            "extension {extensionId!r}: main(browser) finished",
            extensionId=self.manifest.id,
        )
        if self._onMainDone is not None:
            self._onMainDone()

    def _mainFailed(self, failure: Failure) -> None:
        """
        C{main} raised, or its Deferred or coroutine failed.
        """
        self._main = None
        if self._stopping:
            if not failure.check(CancelledError):
                self.log.info(
                    "extension {extensionId!r}: main(browser) ended while "
                    "stopping: {reason}",
                    extensionId=self.manifest.id,
                    reason=_describe(failure),
                )
            return
        reason, expected = describeMainFailure(failure)
        if expected:
            self.log.error(
                "extension {extensionId!r}: main(browser) failed: {reason}",
                extensionId=self.manifest.id,
                reason=reason,
            )
        else:
            self.log.failure(
                "extension {extensionId!r}: main(browser) failed: {reason}",
                failure,
                extensionId=self.manifest.id,
                reason=reason,
            )
        self.failed = ExtensionError(self.manifest.id, "main", reason)
        if self._onFailure is not None:
            self._onFailure(self.failed)

    def stopService(self) -> Deferred[None]:
        """
        Cancel C{main} if it is still running, then close every socket and
        server of the extension.

        @return: A L{Deferred} that fires once they are closed.
        """
        Service.stopService(self)
        self._stopping = True
        if self._main is not None:
            self._main.cancel()
        browser, self.browser = self.browser, None
        if browser is None:
            return defer.succeed(None)

        def closed(result: object) -> None:
            self.log.info(
                "extension {extensionId!r} stopped", extensionId=self.manifest.id
            )

        def closeFailed(failure: Failure) -> None:
            self.log.failure(
                "extension {extensionId!r}: closing failed",
                failure,
                extensionId=self.manifest.id,
            )

        return (
            defer.maybeDeferred(browser.close)
            .addCallbacks(closed, closeFailed)
            .addCallback(lambda _: None)
        )
