# -*- test-case-name: tests.test_service -*-
"""
The C{twistd tcpext} service: hosts extensions, each with only what its
manifest and the operator grant.

C{twistd -n tcpext --extensions DIR} (or C{--extension PATH}, repeatable)
loads every extension, persists runtime grants in the state folder, answers
C{browser.permissions.request} with the chosen prompt, and closes every
socket and server when it stops.  See C{docs/operations.md}.
"""

from __future__ import annotations

import os
import platform
import signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from twisted import copyright
from twisted.application.service import IService, MultiService
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage

from tcpext import __version__
from tcpext._childoutput import DEFAULT_LOG_RATE
from tcpext._ledger import GrantLedger
from tcpext._prompt import openControllingTerminal
from tcpext._statefolder import StateFolder, StateFolderError
from tcpext.extension import (
    ExtensionError,
    ExtensionService,
    Manifest,
    extensionLogger,
    loadManifest,
    validateExtensionId,
)
from tcpext.permissions import parsePermission

__all__ = [
    "ISOLATION_MODES",
    "PROMPTS",
    "Options",
    "TCPExtService",
    "defaultStateDirectory",
    "findExtensions",
    "makeService",
    "pluginCacheProblem",
    "versionLine",
]

PROMPTS = ("deny", "tty", "admin")
"""
The values of C{--prompt}.
"""

ISOLATION_MODES = ("auto", "none", "process", "process-unconfined")
"""
The values of C{--isolation} (see C{docs/isolation.md}); C{auto}, the
default, is C{process} where the system can confine extensions and C{none}
where it cannot.
"""


def defaultStateDirectory() -> str:
    """
    The default state folder: C{$XDG_STATE_HOME/tcpext}, or
    C{~/.local/state/tcpext} when C{XDG_STATE_HOME} is not set.
    """
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "tcpext")


def findExtensions(directory: str) -> list[str]:
    """
    The extension folders inside C{directory}: every subfolder, in name
    order, except hidden ones (C{.name}) and private ones (C{_name}, such as
    C{__pycache__}).  Plain files are skipped.  A subfolder without a
    manifest is still listed, so that loading it reports the problem.
    """
    found = []
    for entry in sorted(os.listdir(directory)):
        if entry.startswith((".", "_")):
            continue
        path = os.path.join(directory, entry)
        if os.path.isdir(path):
            found.append(path)
    return found


def versionLine() -> str:
    """
    What C{twistd tcpext --version} prints: the versions of tcpext, Twisted
    and Python.
    """
    return (
        f"tcpext {__version__} (Twisted {copyright.version}, "
        f"{platform.python_implementation()} {platform.python_version()})"
    )


class Options(usage.Options):
    """
    The command line of C{twistd tcpext}.
    """

    synopsis = (
        "[--extension PATH ...] [--extensions DIR ...] [--state DIR] "
        "[--grant NAME=PERMISSION ...] [--prompt deny|tty|admin] "
        "[--prompt-timeout SECONDS] "
        "[--isolation auto|none|process|process-unconfined] "
        "[--no-template] [--log-rate LINES] "
        "[--admin ENDPOINT|none] [--admin-token-file PATH] [--audit-log PATH]"
    )
    longdesc = (
        "Run tcpext extensions (folders with a manifest.json and a Python "
        "background script) in one service. Each extension gets only the "
        "tcp-* permissions its manifest lists, the optional ones granted with "
        "--grant, and those granted at runtime (kept in the state folder)."
    )
    optFlags = [
        [
            "no-template",
            None,
            "With an isolation mode: start each extension's process afresh "
            "(a new interpreter) instead of forking it from the preloaded "
            "template process.",
        ],
    ]

    optParameters = [
        [
            "state",
            None,
            None,
            "Folder for the persistent runtime grants "
            "[default: $XDG_STATE_HOME/tcpext or ~/.local/state/tcpext].",
        ],
        [
            "prompt",
            None,
            "deny",
            "How runtime permission requests are answered: 'deny' refuses "
            "them all, 'tty' asks on the controlling terminal, 'admin' waits "
            "for the operator console. A refused request is remembered for "
            "the service's lifetime.",
        ],
        [
            "prompt-timeout",
            None,
            "300",
            "Seconds a request waits for the console under --prompt admin "
            "before it is denied.",
        ],
        [
            "admin",
            None,
            None,
            "Where the operator console listens (a Twisted server endpoint, "
            "or 'none') [default: unix:<state>/admin.sock, mode 0600].",
        ],
        [
            "admin-token-file",
            None,
            None,
            "A file holding the token every admin API request must carry "
            "(Authorization: Bearer TOKEN); required for a TCP --admin.",
        ],
        [
            "audit-log",
            None,
            None,
            "Append every permission decision to PATH as one JSON line.",
        ],
        [
            "isolation",
            None,
            "auto",
            "'process' runs each extension in its own process, network "
            "namespace, Landlock and seccomp confinement (refusing to start "
            "where the system cannot); 'auto' does so where the system can "
            "and otherwise runs them in this process (saying so: grants are "
            "then advisory); 'none' runs them in this process; "
            "'process-unconfined' applies what the system offers.",
        ],
        [
            "log-rate",
            None,
            str(DEFAULT_LOG_RATE),
            "The most lines of an isolated extension's output logged per "
            "second; past it, lines are counted and the count is logged.",
        ],
    ]

    def __init__(self) -> None:
        """
        Start with no extensions and no grants.
        """
        super().__init__()
        self["extension"] = []
        self["extensions"] = []
        self["grant"] = []

    openTerminal: Callable[[], int] = staticmethod(openControllingTerminal)
    """
    Opens the controlling terminal that C{--prompt tty} asks on (raising
    L{OSError} when there is none); replaced in tests.
    """

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse the command line.  Under C{twistd} (which makes these the
        options of its C{tcpext} command), a usage error is one line on
        stderr, then where to get help, and exit status 1 (instead of
        twistd's whole help text on stdout); used directly, it raises
        L{usage.UsageError}.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            sys.stderr.write(f"twistd tcpext: {e}\nsee: twistd tcpext --help\n")
            sys.stderr.flush()
            raise SystemExit(1)

    def opt_version(self) -> None:
        """
        Show the versions of tcpext, Twisted and Python, and exit.
        """
        print(versionLine())
        sys.exit(0)

    def opt_extension(self, path: str) -> None:
        """
        Run the extension in the folder PATH (repeatable).
        """
        if not os.path.isdir(path):
            raise usage.UsageError(f"--extension: {path!r} is not a directory")
        self["extension"].append(path)

    def opt_extensions(self, directory: str) -> None:
        """
        Run every extension folder inside DIR (repeatable).
        """
        if not os.path.isdir(directory):
            raise usage.UsageError(f"--extensions: {directory!r} is not a directory")
        if os.path.exists(os.path.join(directory, "manifest.json")):
            raise usage.UsageError(
                f"--extensions: {directory!r} is itself an extension (it holds "
                "manifest.json); run it with --extension, or give the folder "
                "that contains it"
            )
        self["extensions"].append(directory)

    def opt_grant(self, value: str) -> None:
        """
        NAME=PERMISSION: pre-grant one of extension NAME's
        optional_permissions (repeatable).
        """
        name, sep, entry = value.partition("=")
        if not sep:
            raise usage.UsageError(
                f"--grant: {value!r} is not NAME=PERMISSION "
                "(e.g. chat=tcp-connect:example.com:6667)"
            )
        try:
            validateExtensionId(name)
        except ValueError as e:
            raise usage.UsageError(f"--grant {value!r}: {e}")
        try:
            permission = parsePermission(entry)
        except ValueError as e:
            raise usage.UsageError(f"--grant {value!r}: {e}")
        self["grant"].append((name, str(permission)))

    def postOptions(self) -> None:
        """
        Check the choices and that there is something to run.
        """
        if self["prompt"] not in PROMPTS:
            raise usage.UsageError(
                f"--prompt must be one of {', '.join(PROMPTS)}, not {self['prompt']!r}"
            )
        if self["prompt"] == "tty":
            self._checkTerminal()
        try:
            timeout = float(self["prompt-timeout"])
        except ValueError:
            timeout = -1.0
        if not 0 < timeout < float("inf"):
            raise usage.UsageError(
                f"--prompt-timeout must be a number of seconds > 0, "
                f"not {self['prompt-timeout']!r}"
            )
        self["prompt-timeout"] = timeout
        try:
            rate = int(self["log-rate"])
        except ValueError:
            rate = 0
        if rate < 1:
            raise usage.UsageError(
                f"--log-rate must be a whole number of lines >= 1, "
                f"not {self['log-rate']!r}"
            )
        self["log-rate"] = rate
        if self["isolation"] not in ISOLATION_MODES:
            raise usage.UsageError(
                f"--isolation must be one of {', '.join(ISOLATION_MODES)}, "
                f"not {self['isolation']!r}"
            )
        if not self["extension"] and not self["extensions"]:
            raise usage.UsageError(
                "nothing to run: give --extension PATH or --extensions DIR"
            )
        if self["state"] is None:
            self["state"] = defaultStateDirectory()
        elif os.path.exists(self["state"]) and not os.path.isdir(self["state"]):
            raise usage.UsageError(
                f"--state: {self['state']!r} exists and is not a directory"
            )
        self._checkConsole()
        if self["isolation"] == "process":
            from tcpext._isolation import missingConfinement

            missing = missingConfinement()
            if missing:
                raise usage.UsageError(
                    f"--isolation process: this system cannot confine "
                    f"extensions (missing {'; '.join(missing)}); refusing to "
                    "start (--isolation process-unconfined runs them with "
                    "what it offers)"
                )

    def _checkTerminal(self) -> None:
        """
        C{--prompt tty} needs a terminal to ask on: refuse to start without
        one, rather than fail at the first request.
        """
        parent = self.parent
        if parent is not None and not parent.get("nodaemon"):
            raise usage.UsageError(
                "--prompt tty needs twistd -n (--nodaemon): a daemon has no "
                "terminal to ask on"
            )
        try:
            fd = self.openTerminal()
        except OSError as e:
            raise usage.UsageError(
                f"--prompt tty: no terminal to ask on ({e.strerror or e}); "
                "use --prompt deny or --prompt admin"
            )
        os.close(fd)

    def _checkConsole(self) -> None:
        """
        Check the console's options: the endpoint, the token file, the
        audit log's folder.
        """
        from tcpext._admin import AdminSetupError, parseAdminEndpoint, readTokenFile

        try:
            endpoint = parseAdminEndpoint(self["admin"] or "", self["state"])
            token = (
                readTokenFile(self["admin-token-file"])
                if self["admin-token-file"]
                else None
            )
        except AdminSetupError as e:
            raise usage.UsageError(str(e))
        if endpoint is None and self["prompt"] == "admin":
            raise usage.UsageError(
                "--prompt admin needs the console: it cannot be used with --admin none"
            )
        if endpoint is not None and endpoint.needsToken and token is None:
            raise usage.UsageError(
                f"--admin {endpoint.description!r}: a TCP admin endpoint "
                "needs --admin-token-file (the API is refused without a token)"
            )
        self["admin-endpoint"] = endpoint
        self["admin-token"] = token
        audit = self["audit-log"]
        if audit is not None:
            folder = os.path.dirname(os.path.abspath(audit)) or "."
            if not os.path.isdir(folder):
                raise usage.UsageError(
                    f"--audit-log: the folder {folder!r} does not exist"
                )
            if os.path.isdir(audit):
                raise usage.UsageError(f"--audit-log: {audit!r} is a directory")
            if os.path.islink(audit):
                raise usage.UsageError(
                    f"--audit-log: {audit!r} is a symbolic link; name the file "
                    "itself (the log is not written through a link)"
                )


class TCPExtService(MultiService):
    """
    Hosts extensions: loads each one when started (reporting, and skipping,
    those that cannot be loaded), runs it under an L{ExtensionService} (or
    an isolated process), and stops them all when stopped.

    @ivar extensions: The L{Manifest}s loaded, by extension id.
    @ivar errors: The L{ExtensionError}s met while loading.
    @ivar grantStore: The persistent grant store.
    @ivar ledgers: The L{GrantLedger} of each extension run in this process,
        by extension id (made each time the extension starts): the operator
        console grants and revokes through it.  An isolated extension's is
        its L{IsolatedExtension}'s C{ledger}.
    """

    log = Logger(namespace="tcpext.service")

    def __init__(
        self,
        *,
        extensionPaths: Sequence[str],
        extensionDirectories: Sequence[str] = (),
        stateDirectory: str,
        grants: Iterable[tuple[str, str]] = (),
        prompt: str = "deny",
        isolation: str = "none",
        reactor: Any = None,
        admin: Any = None,
        adminToken: str | None = None,
        promptTimeout: float = 300.0,
        auditLog: str | None = None,
        template: bool = True,
        stateFolder: StateFolder | None = None,
        logRate: int = DEFAULT_LOG_RATE,
    ) -> None:
        """
        @param extensionPaths: Extension folders.
        @param extensionDirectories: Folders whose subfolders are extensions.
        @param stateDirectory: Where runtime grants are kept.
        @param grants: C{(extensionId, permission)} pairs pre-granted by the
            operator (each must be in that extension's
            C{optional_permissions}, else it is reported and not granted).
        @param prompt: One of L{PROMPTS}.
        @param isolation: One of L{ISOLATION_MODES}; C{"auto"} is resolved
            here, with L{tcpext._isolation.missingConfinement}, to
            C{"process"} or C{"none"} (C{isolation} holds the outcome).
        @param reactor: The reactor (the global one by default).
        @param admin: Where the operator console listens (a
            L{tcpext._admin.AdminEndpoint}), or L{None} for no console.
        @param adminToken: The token the console's API requires, if any.
        @param promptTimeout: Seconds a request waits under
            C{--prompt admin}.
        @param auditLog: A file to append every decision to (JSON lines).
        @param template: With an isolation mode, fork extension processes
            from a preloaded template process (L{tcpext._zygote}) rather
            than starting each afresh.
        @param stateFolder: The L{StateFolder} of C{stateDirectory}, already
            opened (locked) by L{makeService}; without one, the service opens
            it when it starts.
        @param logRate: The most lines of an isolated extension's output
            logged per second.
        """
        super().__init__()
        if prompt not in PROMPTS:
            raise ValueError(f"prompt must be one of {PROMPTS}, not {prompt!r}")
        if isolation not in ISOLATION_MODES:
            raise ValueError(
                f"isolation must be one of {ISOLATION_MODES}, not {isolation!r}"
            )
        self.extensionPaths = list(extensionPaths)
        self.extensionDirectories = list(extensionDirectories)
        self.stateDirectory = os.path.abspath(stateDirectory)
        self.stateFolder = stateFolder
        self.logRate = logRate
        self.operatorGrants = list(grants)
        self.promptMode = prompt
        self.isolationMissing: list[str] = []
        if isolation == "auto":
            from tcpext._isolation import missingConfinement

            self.isolationMissing = missingConfinement()
            isolation = "none" if self.isolationMissing else "process"
        self.isolation = isolation
        self._reactor = reactor
        self.extensions: dict[str, Manifest] = {}
        self.errors: list[ExtensionError] = []
        self.grantStore: Any = None
        self.ledgers: dict[str, GrantLedger] = {}
        self.prompt: Any = None
        if prompt == "admin" and admin is None:
            raise ValueError("prompt 'admin' needs the console (an admin endpoint)")
        self.adminEndpoint = admin
        self.adminToken = adminToken
        self.promptTimeout = promptTimeout
        self.auditLogPath = auditLog
        self.audit: Any = None
        self.console: Any = None
        self.adminPrompt: Any = None
        self.adminPort: Any = None
        self._auditFlush: Any = None
        self.useTemplate = template
        self.zygote: Any = None

    def _getReactor(self) -> Any:
        """
        The reactor given, or the global one.
        """
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _report(self, error: ExtensionError) -> None:
        """
        Log (and keep) a problem with one extension.
        """
        self.errors.append(error)
        try:
            log = extensionLogger(validateExtensionId(error.extension))
        except ValueError:
            log = self.log
        log.error("{error}", error=str(error), extensionId=error.extension)

    def _paths(self) -> list[str]:
        """
        Every extension folder to load, in order, each once.
        """
        paths = list(self.extensionPaths)
        for directory in self.extensionDirectories:
            try:
                found = findExtensions(directory)
            except OSError as e:
                self.log.error(
                    "cannot list extensions in {directory}: {reason}",
                    directory=directory,
                    reason=str(e),
                )
                continue
            if not found:
                self.log.warn(
                    "no extension folders in {directory}", directory=directory
                )
            paths.extend(found)
        seen = set()
        unique = []
        for path in paths:
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                unique.append(path)
        return unique

    def loadExtensions(self) -> list[Manifest]:
        """
        Load and validate every manifest; report (and skip) the bad ones and
        duplicate names.

        @return: The manifests loaded, in order.
        """
        loaded = []
        for path in self._paths():
            try:
                manifest = loadManifest(path)
            except ExtensionError as e:
                self._report(e)
                continue
            except Exception as e:
                self._report(
                    ExtensionError(
                        os.path.basename(os.path.normpath(path)),
                        "manifest.json",
                        f"cannot be loaded: {type(e).__name__}: {e}",
                    )
                )
                continue
            other = self.extensions.get(manifest.id)
            if other is not None:
                self._report(
                    ExtensionError(
                        manifest.id,
                        "name",
                        f"duplicate: the extension in {manifest.path} has the "
                        f"same name as the one in {other.path}, which is "
                        "already loaded; not loading it",
                    )
                )
                continue
            self.extensions[manifest.id] = manifest
            loaded.append(manifest)
        return loaded

    def _grantsFor(self, manifest: Manifest) -> list[str]:
        """
        The operator grants for C{manifest} that its C{optional_permissions}
        allow; the others are reported.
        """
        optional = {str(p) for p in manifest.optionalPermissions}
        result = []
        for name, entry in self.operatorGrants:
            if name != manifest.id:
                continue
            if entry not in optional:
                self._report(
                    ExtensionError(
                        manifest.id,
                        "--grant",
                        f"{entry!r} is not in its optional_permissions "
                        f"({', '.join(sorted(optional)) or 'none'}); not granted",
                    )
                )
                continue
            if entry not in result:
                result.append(entry)
        return result

    def _makeChild(self, manifest: Manifest, operatorGrants: list[str]) -> IService:
        """
        The service that runs one extension.
        """
        reactor = self._getReactor()
        if self.isolation != "none":
            from tcpext._supervisor import IsolatedExtension

            return IsolatedExtension(
                path=manifest.path,
                extensionId=manifest.id,
                manifest=manifest.raw,
                reactor=reactor,
                grantStore=self.grantStore,
                prompt=self.prompt,
                operatorGrants=operatorGrants,
                decisionObservers=[self._decided],
                childRefusals=self._childRefused,
                log=extensionLogger(manifest.id),
                mode=self.isolation,
                spawnProcess=(
                    self.zygote.spawnProcess if self.zygote is not None else None
                ),
                logRate=self.logRate,
            )
        return ExtensionService(
            manifest,
            partial(self._makeBrowser, reactor=reactor, operatorGrants=operatorGrants),
        )

    def _makeBrowser(
        self,
        *,
        extensionId: str,
        manifest: Mapping[str, Any],
        log: Logger,
        reactor: Any,
        operatorGrants: list[str],
    ) -> Any:
        """
        The C{browser} of an extension run in this process, each time it
        starts: its grants are a new L{GrantLedger} (from the manifest, the
        operator grants and the grant store) kept in L{ledgers}.

        @raise ValueError: For an invalid C{tcp-*} entry in the manifest.
        """
        from tcpext.browser import makeBrowser

        ledger = GrantLedger.fromManifest(
            extensionId=extensionId,
            manifest=manifest,
            store=self.grantStore,
            operatorGrants=operatorGrants,
            log=log,
        )
        self.ledgers[extensionId] = ledger
        return makeBrowser(
            extensionId=extensionId,
            manifest=manifest,
            reactor=reactor,
            ledger=ledger,
            prompt=self.prompt,
            log=log,
            decisionObservers=[self._decided],
        )

    def _childRefused(
        self, extensionId: str, verb: str, target: str, reason: str
    ) -> None:
        """
        Record a request an isolated extension's own process refused.
        """
        self.audit.record(
            extensionId, verb, target, False, reason=reason, origin="child"
        )

    def _decided(self, extensionId: str, decision: Any) -> None:
        """
        Record one decision of the policy in the audit trail.
        """
        self.audit.recordDecision(extensionId, decision)

    def startService(self) -> None:
        """
        Load every extension and start them.
        """
        from tcpext._grantstore import JSONGrantStore
        from tcpext._requests import AdminPrompt, RememberingPrompt
        from tcpext.browser import denyAll

        # A restart loads everything afresh.
        for child in list(self):
            self.removeService(child)
        self.extensions = {}
        self.errors = []
        self.ledgers = {}
        self._holdStateFolder()
        self.grantStore = JSONGrantStore(self.stateDirectory)
        if self.isolation != "none" and self.useTemplate and self.zygote is None:
            from tcpext._zygote import Zygote

            # The template preloads while the console starts and the
            # extensions are loaded below.
            self.zygote = Zygote(self._getReactor())
            self.zygote.begin()
        self.adminPrompt = None
        if self.promptMode == "tty":
            from tcpext._prompt import TTYPrompt

            ask: Any = TTYPrompt(self._getReactor())
        elif self.promptMode == "admin":
            self.adminPrompt = AdminPrompt(self._getReactor(), self.promptTimeout)
            ask = self.adminPrompt
        else:
            ask = denyAll
        self.prompt = RememberingPrompt(ask)
        self._startConsole()
        for manifest in self.loadExtensions():
            grants = self._grantsFor(manifest)
            try:
                child = self._makeChild(manifest, grants)
            except Exception as e:
                self._report(ExtensionError(manifest.id, "host", str(e)))
                continue
            child.setServiceParent(self)
        known = set(self.extensions)
        for name in dict.fromkeys(name for name, _ in self.operatorGrants):
            if name not in known:
                self._report(
                    ExtensionError(
                        name, "--grant", f"no extension named {name!r} is loaded"
                    )
                )
        self.log.info(
            "tcpext: {count} extension(s) loaded ({names}), state in {state}, "
            "{problems} problem(s)",
            count=len(self.extensions),
            names=", ".join(self.extensions) or "none",
            state=self.stateDirectory,
            problems=len(self.errors),
        )
        self._logGrants()
        if self.isolationMissing:
            self.log.warn(
                "tcpext: this system cannot confine extensions (missing "
                "{missing}); running them in the service's process, where "
                "grants are advisory (--isolation none says this is meant)",
                missing="; ".join(self.isolationMissing),
            )
        if self.zygote is not None:
            # Blocks until the template has preloaded (a second or so), so
            # that the first extension processes are forked from it.
            self.zygote.wait()
        super().startService()
        self._listenConsole()

    def _holdStateFolder(self) -> None:
        """
        Hold the state folder for the service's lifetime: lock it (unless
        L{makeService} did), and record this process's pid in the lock
        (twistd may have daemonized since).

        @raise StateFolderError: If it cannot be locked.
        """
        if self.stateFolder is None:
            self.stateFolder = StateFolder(self.stateDirectory)
        if self.stateFolder.held:
            self.stateFolder.writePid()
        else:
            self.stateFolder.open()

    def _startConsole(self) -> None:
        """
        Set up the audit trail and the console (before the extensions
        start, so that their first decisions are recorded).
        """
        from tcpext._audit import AuditLog, openAuditFile
        from tcpext._serviceconsole import ServiceConsole

        output = None
        if self.auditLogPath is not None:
            output = openAuditFile(self.auditLogPath)
        self.audit = AuditLog(
            output=output,
            requestGrant={
                "admin": "approved in the operator console",
                "tty": "approved on the terminal",
            }.get(self.promptMode, "granted by the prompt"),
        )
        # The summaries of denials left out by the rate limit come out at
        # least once a window, even if the extension goes quiet.
        from twisted.internet.task import LoopingCall

        self._auditFlush = LoopingCall(self.audit.flushSuppressed)
        self._auditFlush.clock = self._getReactor()
        self._auditFlush.start(self.audit.window, now=False)
        self.console = ServiceConsole(
            self, audit=self.audit, prompt=self.prompt, admin=self.adminPrompt
        )

    def _listenConsole(self) -> None:
        """
        Start listening for the console, if there is one; a failure stops
        the service (the console was asked for).
        """
        endpoint = self.adminEndpoint
        if endpoint is None:
            return
        from tcpext._admin import AdminSetupError, makeAdminSite

        reactor = self._getReactor()
        try:
            site = makeAdminSite(self.console, endpoint, self.adminToken)
            d = endpoint.listen(reactor, site)
        except AdminSetupError as e:
            d = defer.fail(e)

        def listening(port: Any) -> None:
            self.adminPort = port
            where = endpoint.unixPath
            if where is None:
                address = port.getHost()
                host = getattr(address, "host", "?")
                where = f"[{host}]" if ":" in host else host
                where += f":{getattr(address, 'port', '?')}"
            self.log.info("tcpext: operator console on {where}", where=where)

        def failed(reason: Any) -> None:
            self.log.critical(
                "tcpext: cannot start the operator console on {where}: "
                "{reason}; stopping",
                where=endpoint.unixPath or endpoint.description,
                reason=reason.getErrorMessage(),
            )
            if reactor.running:
                reactor.stop()

        d.addCallbacks(listening, failed)

    def _logGrants(self) -> None:
        """
        Log, for each extension, the grants in effect by source.
        """
        for extensionId in self.extensions:
            try:
                grants = self.console.grants(extensionId)
            except Exception:
                continue
            extensionLogger(extensionId).info(
                "extension {extensionId!r} grants: manifest [{manifest}], "
                "operator [{operator}], stored [{stored}]",
                extensionId=extensionId,
                manifest=", ".join(grants["manifest"]),
                operator=", ".join(grants["operator"]),
                stored=", ".join(grants["stored"]),
            )

    def stopService(self) -> Deferred[None]:
        """
        Stop every extension, closing its sockets and servers.

        @return: A L{Deferred} that fires once all are closed.
        """
        stop = getattr(self.prompt, "stop", None)
        if stop is not None:
            stop()
        waits = []
        flush = self._auditFlush
        if flush is not None and flush.running:
            flush.stop()
        port, self.adminPort = self.adminPort, None
        if port is not None:
            waits.append(defer.maybeDeferred(port.stopListening))
        stopped = defer.maybeDeferred(super().stopService)
        zygote, self.zygote = self.zygote, None
        if zygote is not None:
            # After the extension processes: they are the template's
            # children, and end with it.
            stopped.addBoth(lambda _: zygote.stop())
        waits.append(stopped)
        result = defer.gatherResults(waits, consumeErrors=True)
        return result.addCallback(self._stopped)

    def _stopped(self, result: object) -> None:
        """
        Every extension has stopped and closed its sockets.

        C{twistd} ends a run stopped by a signal by sending itself that
        signal again, so the process would die of C{SIGTERM} even after a
        complete, clean shutdown; tcpext treats C{SIGTERM} as the normal way
        to stop the service, so once everything is closed it clears that and
        the process exits with status 0 (C{SIGINT} keeps Twisted's
        behaviour).
        """
        reactor = self._reactor
        if getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
            reactor._exitSignal = None
        if self.audit is not None:
            self.audit.close()
        if self.stateFolder is not None:
            self.stateFolder.close()
        self.log.info("tcpext: stopped")


PLUGIN_CACHE_COMMAND = (
    "python -c 'from twisted.plugin import IPlugin, getPlugins; "
    "list(getPlugins(IPlugin))'"
)
"""
The command that regenerates Twisted's plugin cache (run it as the owner of
the virtualenv, with its Python).
"""


def pluginCacheProblem(
    pluginFile: str | None = None,
    writable: Callable[[str], bool] = lambda path: os.access(path, os.W_OK),
) -> str | None:
    """
    Say so if Twisted's plugin cache beside tcpext's twistd plugin is stale
    and this user cannot rewrite it: then every C{twistd} start imports all
    the plugin files again and fails to write the cache (see "Twisted's
    plugin cache" in C{docs/operations.md}).

    @param pluginFile: The plugin file (default: the one Twisted loaded).
    @param writable: Whether this user may write into a folder.
    @return: A one-line explanation with the fix, or L{None}.
    """
    if pluginFile is None:
        module = sys.modules.get("twisted.plugins.tcpext_plugin")
        pluginFile = getattr(module, "__file__", None)
        if pluginFile is None:
            return None
    folder = os.path.dirname(os.path.abspath(pluginFile))
    cache = os.path.join(folder, "dropin.cache")
    try:
        cached = os.path.getmtime(cache)
    except OSError:
        cached = 0.0
    try:
        newest = max(
            os.path.getmtime(os.path.join(folder, name))
            for name in os.listdir(folder)
            if name.endswith(".py")
        )
    except (OSError, ValueError):
        return None
    if newest < cached or writable(folder):
        return None
    return (
        f"Twisted's plugin cache {cache} is out of date and this user cannot "
        "rewrite it, so every start imports all of Twisted's plugins; "
        f"regenerate it as the owner of the virtualenv: {PLUGIN_CACHE_COMMAND}"
    )


def makeService(options: Options) -> TCPExtService:
    """
    Build the service from the parsed command line (C{twistd} calls this).

    The state folder is locked here, before twistd logs or daemonizes, so
    that a second service on the same folder refuses to start with one line
    on its standard error and exit status 1.
    """
    stateFolder = StateFolder(options["state"])
    try:
        stateFolder.open()
    except StateFolderError as e:
        raise SystemExit(f"tcpext: {e}")
    problem = pluginCacheProblem()
    if problem is not None:
        Logger(namespace="tcpext.service").warn("{problem}", problem=problem)
    return TCPExtService(
        extensionPaths=options["extension"],
        extensionDirectories=options["extensions"],
        stateDirectory=options["state"],
        grants=options["grant"],
        prompt=options["prompt"],
        isolation=options["isolation"],
        template=not options["no-template"],
        admin=options.get("admin-endpoint"),
        adminToken=options.get("admin-token"),
        promptTimeout=options["prompt-timeout"],
        auditLog=options["audit-log"],
        stateFolder=stateFolder,
        logRate=options["log-rate"],
    )
