# -*- test-case-name: tests.test_cli -*-
"""
The C{tcpext} command (also C{python -m tcpext}): the operator console from
a shell.

C{tcpext [--admin ENDPOINT] [--state DIR] [--token-file PATH] [--json]
COMMAND} talks to a running C{twistd tcpext} through its admin API (with
treq; over the UNIX socket C{<state>/admin.sock} by default).  C{tcpext
check FOLDER} needs no service: it validates an extension folder without
running any of its code.

Exit status: 0 on success; 1, with one line on stderr, when the service
refuses or cannot be reached (or C{check} finds a problem); 2 for a usage
error.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn
from urllib.parse import quote

import treq
from treq.client import HTTPClient
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.web.client import Agent

from tcpext._admin import UNIX_PATH_MAX, _splitDescription
from tcpext._prompt import escapeForTerminal

__all__ = ["checkExtension", "main"]

USAGE_ERROR = 2
REFUSED = 1


class CommandError(Exception):
    """
    The command failed; the message is the one line for stderr.
    """


def _parser() -> argparse.ArgumentParser:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(
        prog="tcpext",
        description="The tcpext operator console: inspect and steer a running "
        "twistd tcpext service, or check an extension folder.",
    )
    parser.add_argument(
        "--admin",
        metavar="ENDPOINT",
        help="where the service's console listens: unix:PATH, "
        "tcp:PORT[:interface=ADDRESS] or http://HOST:PORT "
        "[default: unix:<state>/admin.sock]",
    )
    parser.add_argument(
        "--state",
        metavar="DIR",
        help="the service's state folder [default: $XDG_STATE_HOME/tcpext "
        "or ~/.local/state/tcpext]",
    )
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="a file holding the console's API token (for a TCP console)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of tables"
    )
    # --json may also follow the command (tcpext audit --json); given
    # there, it is the same option.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON instead of tables",
    )

    def command(name: str, help: str) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = commands.add_parser(
            name, help=help, parents=[common]
        )
        return made

    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    command("status", "the extensions, their state and grants")
    p = command("grants", "an extension's grants by source")
    p.add_argument("extension")
    p = command("grant", "grant an optional permission now")
    p.add_argument("extension")
    p.add_argument("permission")
    p = command("revoke", "revoke a grant (closes what it allowed)")
    p.add_argument("extension")
    p.add_argument("permission")
    p = command("sockets", "open sockets (of one extension)")
    p.add_argument("extension", nargs="?")
    command("requests", "pending runtime permission requests")
    p = command("approve", "approve a pending request")
    p.add_argument("id")
    p = command("deny", "deny a pending request")
    p.add_argument("id")
    p = command("audit", "the audit trail of decisions")
    p.add_argument("--follow", action="store_true", help="keep printing new decisions")
    p.add_argument(
        "--after", type=int, default=0, metavar="SEQ", help="start after SEQ"
    )
    p.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often --follow asks (default 1)",
    )
    p = command("check", "validate an extension folder without running it")
    p.add_argument("folder")
    return parser


# -- check ----------------------------------------------------------------


def _definesMain(tree: ast.Module) -> bool:
    """
    Does this module bind the name C{main} at its top level (a function,
    an assignment or an import)?
    """
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == "main":
                return True
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name) and name.id == "main":
                        return True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                if bound == "main":
                    return True
        elif isinstance(node, (ast.If, ast.Try)):
            inner = ast.Module(
                body=[
                    *node.body,
                    *node.orelse,
                    *getattr(node, "finalbody", []),
                    *[n for h in getattr(node, "handlers", []) for n in h.body],
                ],
                type_ignores=[],
            )
            if _definesMain(inner):
                return True
    return False


def checkExtension(folder: str) -> dict[str, Any]:
    """
    Validate the extension in C{folder} as the service would load it, without
    importing or running its script: the manifest (with the service's
    messages), its permissions, and that the background script parses and
    defines C{main} at its top level.

    @return: A summary: C{id}, C{version}, C{permissions},
        C{optional_permissions}, C{ignored}, C{script}.
    @raise tcpext.extension.ExtensionError: For the first problem found.
    """
    from tcpext.extension import ExtensionError, loadManifest

    manifest = loadManifest(folder)
    name = os.path.basename(manifest.script)
    try:
        with open(manifest.script, "rb") as f:
            source = f.read()
        tree = ast.parse(source, filename=manifest.script)
    except (OSError, SyntaxError, ValueError) as e:
        raise ExtensionError(
            manifest.id,
            "background.scripts",
            f"importing {name!r} failed: {type(e).__name__}: {e}",
        )
    if not _definesMain(tree):
        raise ExtensionError(manifest.id, "main", f"{name!r} defines no main(browser)")
    return {
        "id": manifest.id,
        "version": manifest.version,
        "permissions": [str(p) for p in manifest.permissions],
        "optional_permissions": [str(p) for p in manifest.optionalPermissions],
        "ignored": list(manifest.ignored),
        "script": manifest.script,
    }


# -- output ---------------------------------------------------------------


def _cell(value: object) -> str:
    """
    One table cell: safe for a terminal.
    """
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) or "-"
    return escapeForTerminal(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """
    A plain text table.
    """
    cells = [list(headers)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in cells
    ]
    return "\n".join(lines)


def _when(seconds: object) -> str:
    """
    Unix seconds as local time.
    """
    if not isinstance(seconds, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _auditLine(event: dict[str, Any]) -> str:
    """
    One audit event as a line.
    """
    detail = (
        event.get("grant") if event.get("decision") == "allow" else event.get("reason")
    )
    return "  ".join(
        _cell(v)
        for v in (
            event.get("seq"),
            _when(event.get("time")),
            event.get("extension"),
            event.get("verb"),
            event.get("target"),
            event.get("decision"),
            detail,
        )
    )


# -- the HTTP side --------------------------------------------------------


class _Console:
    """
    The admin API of one service, through treq.
    """

    def __init__(self, reactor: Any, admin: str, token: str | None) -> None:
        """
        @param admin: The admin endpoint (C{unix:PATH}, C{tcp:PORT...},
            C{http://HOST:PORT}).
        @param token: The API token, if any.
        """
        self._reactor = reactor
        self._http: Any
        self._headers = {"Accept": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self.where = admin
        if admin.startswith(("http://", "https://")):
            self._base = admin.rstrip("/")
            self._http = treq
            return
        parts = _splitDescription(admin)
        kind = parts[0].lower()
        keywords = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        positional = [p for p in parts[1:] if "=" not in p]
        if kind == "unix":
            path = keywords.get("address") or (positional[0] if positional else "")
            self.where = path
            if len(os.fsencode(path)) > UNIX_PATH_MAX:
                # Twisted's UNIX connector fails on such a path with an
                # internal error instead of a connection failure.
                raise CommandError(
                    f"cannot reach the tcpext console at {path}: the path is "
                    f"{len(os.fsencode(path))} bytes long; a UNIX socket path "
                    f"may have at most {UNIX_PATH_MAX} bytes"
                )

            class _Factory:
                def endpointForURI(self, uri: Any) -> Any:
                    return UNIXClientEndpoint(reactor, path, timeout=30)

            self._base = "http://localhost"
            self._http = HTTPClient(Agent.usingEndpointFactory(reactor, _Factory()))
            return
        if kind in ("tcp", "tcp6"):
            port = keywords.get("port") or (positional[0] if positional else "")
            host = keywords.get("interface") or (
                "::1" if kind == "tcp6" else "127.0.0.1"
            )
            if host in ("0.0.0.0", "::"):
                host = "127.0.0.1" if host == "0.0.0.0" else "::1"
            if ":" in host:
                host = f"[{host}]"
            self._base = f"http://{host}:{port}"
            self._http = treq
            return
        raise CommandError(
            f"--admin {admin!r}: use unix:PATH, tcp:PORT[:interface=ADDRESS] "
            "or http://HOST:PORT"
        )

    async def call(self, method: str, path: str, body: object = None) -> Any:
        """
        One API call; its JSON answer.

        @raise CommandError: If the service cannot be reached or refuses.
        """
        headers: dict[Any, Any] = dict(self._headers)
        data = None
        if method in ("POST", "DELETE"):
            headers["Content-Type"] = "application/json"
            if body is not None:
                data = json.dumps(body).encode("utf-8")
        try:
            response = await self._http.request(
                method,
                self._base + path,
                headers=headers,
                data=data,
                timeout=30,
                **({"reactor": self._reactor} if self._http is treq else {}),
            )
            content = await treq.content(response)
        except Exception as e:
            raise CommandError(
                f"cannot reach the tcpext console at {self.where}: "
                f"{type(e).__name__}: {e}"
            )
        if path == "/metrics":
            return content
        try:
            value = json.loads(content)
        except ValueError:
            value = None
        if response.code >= 400:
            message = value.get("error") if isinstance(value, dict) else None
            raise CommandError(
                f"refused ({response.code}): {message or content[:200]!r}"
            )
        return value


def _extensionPath(extension: str, *rest: str) -> str:
    """
    An API path about one extension (each part percent-encoded).
    """
    parts = [quote(extension, safe=""), *(quote(p, safe="") for p in rest)]
    return "/api/v1/extensions/" + "/".join(parts)


async def _run(reactor: Any, options: argparse.Namespace, out: Any) -> None:
    """
    Run one console command.
    """
    from tcpext._admin import AdminSetupError, readTokenFile
    from tcpext.service import defaultStateDirectory

    token = None
    if options.token_file:
        try:
            token = readTokenFile(options.token_file)
        except AdminSetupError as e:
            raise CommandError(str(e))
    admin = options.admin
    if not admin:
        state = options.state or defaultStateDirectory()
        admin = "unix:" + os.path.join(os.path.abspath(state), "admin.sock").replace(
            ":", "\\:"
        )
    console = _Console(reactor, admin, token)
    command = options.command
    asJSON = options.json

    def show(value: object, text: str) -> None:
        out.write((json.dumps(value, indent=2) if asJSON else text) + "\n")

    if command == "status":
        extensions = await console.call("GET", "/api/v1/extensions")
        show(
            extensions,
            _table(
                ["EXTENSION", "VERSION", "STATE", "ISOLATION", "SOCKETS", "GRANTS"],
                [
                    [
                        e["id"],
                        e["version"],
                        e["state"],
                        e["isolation"],
                        e["sockets"],
                        "; ".join(
                            f"{source}: {_cell(e['grants'][source])}"
                            for source in ("manifest", "operator", "stored")
                        ),
                    ]
                    for e in extensions
                ],
            ),
        )
    elif command == "grants":
        grants = await console.call("GET", _extensionPath(options.extension, "grants"))
        show(
            grants,
            _table(
                ["SOURCE", "PERMISSION"],
                [
                    [source, entry]
                    for source in ("manifest", "operator", "stored")
                    for entry in grants.get(source, [])
                ],
            ),
        )
    elif command == "grant":
        grants = await console.call(
            "POST",
            _extensionPath(options.extension, "grants"),
            {"permission": options.permission},
        )
        show(
            grants, f"granted {_cell(options.permission)} to {_cell(options.extension)}"
        )
    elif command == "revoke":
        grants = await console.call(
            "DELETE", _extensionPath(options.extension, "grants", options.permission)
        )
        show(
            grants,
            f"revoked {_cell(options.permission)} from {_cell(options.extension)}",
        )
    elif command == "sockets":
        if options.extension:
            names = [options.extension]
        else:
            names = [e["id"] for e in await console.call("GET", "/api/v1/extensions")]
        rows = []
        for name in names:
            for s in await console.call("GET", _extensionPath(name, "sockets")):
                rows.append({"extension": name, **s})
        show(
            rows,
            _table(
                ["EXTENSION", "KIND", "LOCAL", "REMOTE", "IN", "OUT", "OPENED", "TLS"],
                [
                    [
                        r["extension"],
                        r["kind"],
                        r["local"],
                        r["remote"],
                        r["bytesIn"],
                        r["bytesOut"],
                        _when(r["openedAt"]),
                        "yes" if r["tls"] else "no",
                    ]
                    for r in rows
                ],
            ),
        )
    elif command == "requests":
        requests = await console.call("GET", "/api/v1/requests")
        show(
            requests,
            _table(
                ["ID", "EXTENSION", "ASKED", "PERMISSIONS"],
                [
                    [r["id"], r["extension"], _when(r["askedAt"]), r["permissions"]]
                    for r in requests
                ],
            ),
        )
    elif command in ("approve", "deny"):
        approve = command == "approve"
        result = await console.call(
            "POST",
            "/api/v1/requests/" + quote(options.id, safe=""),
            {"approve": approve},
        )
        show(
            result, f"{'approved' if approve else 'denied'} request {_cell(options.id)}"
        )
    elif command == "audit":
        await _audit(reactor, console, options, out)
    else:  # pragma: no cover - argparse only lets known commands through
        raise CommandError(f"unknown command {command!r}")


async def _audit(
    reactor: Any, console: _Console, options: argparse.Namespace, out: Any
) -> None:
    """
    Print the audit trail; with C{--follow}, keep printing until stopped.
    """
    from twisted.internet.task import deferLater

    after = options.after
    if options.interval <= 0:
        raise CommandError("--interval must be > 0")
    while True:
        events = await console.call("GET", f"/api/v1/audit?after={after}")
        for event in events:
            if options.json:
                out.write(json.dumps(event) + "\n")
            else:
                out.write(_auditLine(event) + "\n")
            after = max(after, int(event["seq"]))
        out.flush()
        if not options.follow:
            return
        if not events:
            await deferLater(reactor, options.interval, lambda: None)


def _fail(message: str) -> NoReturn:
    """
    Print one line on stderr and exit with status 1.
    """
    sys.stderr.write("tcpext: " + message.replace("\n", " ") + "\n")
    sys.stderr.flush()
    raise SystemExit(REFUSED)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    Run the C{tcpext} command and exit with its status.
    """
    options = _parser().parse_args(argv)
    if options.command == "check":
        from tcpext.extension import ExtensionError

        try:
            summary = checkExtension(options.folder)
        except ExtensionError as e:
            _fail(str(e))
        if options.json:
            print(json.dumps(summary, indent=2))
        else:
            print(
                f"ok: extension {summary['id']!r} {summary['version']}: "
                f"permissions [{', '.join(summary['permissions'])}], "
                f"optional [{', '.join(summary['optional_permissions'])}]"
            )
            for entry in summary["ignored"]:
                print(
                    f"warning: ignoring permission {escapeForTerminal(entry)!r} "
                    "(not a tcp-* permission; tcpext does not implement it)"
                )
        raise SystemExit(0)

    from twisted.internet import defer, task

    outcome: dict[str, Any] = {}

    def run(reactor: Any) -> Any:
        async def go() -> None:
            try:
                await _run(reactor, options, sys.stdout)
            except CommandError as e:
                outcome["error"] = str(e)

        return defer.ensureDeferred(go())

    try:
        task.react(run)
    except SystemExit as e:
        if "error" in outcome:
            _fail(outcome["error"])
        if e.code not in (0, None):
            _fail(f"failed (status {e.code})")
    raise SystemExit(0)
