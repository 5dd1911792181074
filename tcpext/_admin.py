# -*- test-case-name: tests.test_admin -*-
"""
The admin API and web page of the operator console, on twisted.web.

L{AdminResource} answers the routes of the console (C{/api/v1/...},
C{/metrics}, and the static page at C{/}) over an L{IConsole}.  Every
request must carry a C{Host} header naming loopback or the endpoint's own
address (no DNS rebinding of the console); with a token, every API request
must carry C{Authorization: Bearer TOKEN}; a POST or DELETE must say
C{Content-Type: application/json}.

L{AdminEndpoint} turns C{--admin ENDPOINT} into what to listen on: a UNIX
socket is mode 0600 unless the description says otherwise, a stale socket
file is replaced, a path too long for a UNIX socket is refused naming the
limit, and a TCP endpoint needs a token.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import socket
import stat
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote

from attrs import frozen
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from tcpext._console import BadRequest, ConsoleError, IConsole

__all__ = [
    "UNIX_PATH_MAX",
    "AdminEndpoint",
    "AdminResource",
    "AdminSetupError",
    "makeAdminSite",
    "parseAdminEndpoint",
    "readTokenFile",
]

UNIX_PATH_MAX = 107
"""
The longest UNIX socket path, in bytes (C{sun_path} holds 108 with the
terminating NUL).
"""

MAX_BODY = 64 * 1024
"""
The largest request body the API reads.
"""

_PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
}

_SECURITY_HEADERS = {
    b"content-security-policy": (
        b"default-src 'none'; script-src 'self'; style-src 'self'; "
        b"connect-src 'self'; img-src 'self'; base-uri 'none'; "
        b"form-action 'none'; frame-ancestors 'none'"
    ),
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-store",
}


class AdminSetupError(Exception):
    """
    The admin endpoint cannot be set up as asked; the message says why.
    """


def readTokenFile(path: str) -> str:
    """
    Read the API token from C{path}: its content without surrounding
    whitespace.

    @raise AdminSetupError: If it cannot be read, is empty, or holds
        characters that cannot be in an C{Authorization} header.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(4097)
    except OSError as e:
        raise AdminSetupError(f"cannot read the admin token file {path!r}: {e}")
    if len(data) > 4096:
        raise AdminSetupError(f"the admin token file {path!r} is larger than 4 KiB")
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise AdminSetupError(f"the admin token file {path!r} is not ASCII text")
    if not token:
        raise AdminSetupError(f"the admin token file {path!r} is empty")
    if any(not (0x21 <= ord(c) <= 0x7E) for c in token):
        raise AdminSetupError(
            f"the admin token in {path!r} must be printable ASCII without spaces"
        )
    return token


def _splitDescription(description: str) -> list[str]:
    """
    Split an endpoint description at its unescaped colons (a backslash
    escapes the next character), as Twisted's endpoint parser does.
    """
    parts = [""]
    escaped = False
    for c in description:
        if escaped:
            parts[-1] += c
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ":":
            parts.append("")
        else:
            parts[-1] += c
    return parts


@frozen
class AdminEndpoint:
    """
    Where the console listens.

    @ivar description: The Twisted server endpoint description to listen on.
    @ivar unixPath: The socket file, for a UNIX endpoint.
    @ivar hosts: The host names the C{Host} header may carry (loopback
        names, and the endpoint's own interface address).
    @ivar needsToken: Whether a token is required (TCP and TLS endpoints).
    """

    description: str
    unixPath: str | None
    hosts: frozenset[str]
    needsToken: bool

    def prepare(self) -> None:
        """
        Make the UNIX socket's path usable: replace a stale socket file
        (nothing answers on it); refuse a live one or a file that is not a
        socket.

        @raise AdminSetupError: Naming the problem.
        """
        path = self.unixPath
        if path is None:
            return
        folder = os.path.dirname(path)
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except OSError as e:
            raise AdminSetupError(
                f"admin socket {path!r}: cannot create {folder!r}: {e}"
            )
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as e:
            raise AdminSetupError(f"admin socket {path!r}: {e}")
        if not stat.S_ISSOCK(info.st_mode):
            raise AdminSetupError(
                f"admin socket {path!r} exists and is not a socket; not replacing it"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(2)
            probe.connect(path)
        except OSError:
            os.unlink(path)
            return
        finally:
            probe.close()
        raise AdminSetupError(
            f"admin socket {path!r} is in use by another process "
            "(another tcpext service on the same state folder?)"
        )

    def listen(self, reactor: Any, factory: Any) -> Deferred[Any]:
        """
        Listen with C{factory}.
        """
        self.prepare()
        endpoint: IStreamServerEndpoint = serverFromString(reactor, self.description)
        return endpoint.listen(factory)


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


def _hostText(address: str) -> str:
    """
    An address as a C{Host} header carries it (IPv6 in brackets), lower case.
    """
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address.lower()
    if ip.version == 6:
        return f"[{ip.compressed}]"
    return ip.compressed


def parseAdminEndpoint(description: str, stateDirectory: str) -> AdminEndpoint | None:
    """
    Check and complete C{--admin ENDPOINT}.

    @param description: A Twisted server endpoint description, C{"none"},
        or L{None}-like empty text for the default (C{unix:<state>/admin.sock}).
    @param stateDirectory: The state folder (for the default).
    @return: The endpoint, or L{None} for C{"none"}.
    @raise AdminSetupError: For an endpoint the console cannot use.
    """
    if description == "none":
        return None
    if not description:
        description = "unix:" + os.path.join(stateDirectory, "admin.sock").replace(
            "\\", "\\\\"
        ).replace(":", "\\:")
    parts = _splitDescription(description)
    kind = parts[0].lower()
    positional = [p for p in parts[1:] if "=" not in p]
    keywords = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    if kind == "unix":
        path = keywords.get("address") or (positional[0] if positional else "")
        if not path:
            raise AdminSetupError(f"--admin {description!r}: no socket path")
        path = os.path.abspath(path)
        if len(os.fsencode(path)) > UNIX_PATH_MAX:
            raise AdminSetupError(
                f"--admin: the socket path {path!r} is {len(os.fsencode(path))} "
                f"bytes long; a UNIX socket path may have at most "
                f"{UNIX_PATH_MAX} bytes (use a shorter --state or --admin unix:PATH)"
            )
        if "mode" not in keywords:
            description += ":mode=600"
        if "lockfile" not in keywords:
            # A stale socket is replaced by prepare(); the state folder has
            # its own lock.
            description += ":lockfile=0"
        return AdminEndpoint(
            description=description,
            unixPath=path,
            hosts=_LOOPBACK_HOSTS,
            needsToken=False,
        )
    if kind in ("tcp", "tcp6", "ssl"):
        interface = keywords.get("interface")
        hosts = set(_LOOPBACK_HOSTS)
        if interface:
            hosts.add(_hostText(interface))
        return AdminEndpoint(
            description=description,
            unixPath=None,
            hosts=frozenset(hosts),
            needsToken=True,
        )
    raise AdminSetupError(
        f"--admin {description!r}: use a unix:, tcp:, tcp6: or ssl: endpoint, or none"
    )


def _addressKey(address: object) -> tuple[str, int] | None:
    """
    A TCP address (a Twisted C{IPv4Address}/C{IPv6Address}, or the
    console's C{"HOST:PORT"} text) as a canonical C{(ip, port)}: an
    IPv4-mapped IPv6 address is its IPv4 address, a zone is dropped.
    L{None} for anything else (a UNIX address, an unknown one).
    """
    host: object
    port: object
    if isinstance(address, str):
        text, sep, portText = address.rpartition(":")
        if not sep or not portText.isdigit():
            return None
        host, port = text.strip("[]"), int(portText)
    else:
        host = getattr(address, "host", None)
        port = getattr(address, "port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return (str(ip.ipv4_mapped), port)
    return (str(ip), port)


def _segments(path: bytes) -> list[str] | None:
    """
    The percent-decoded segments of a request path (L{None} if it is not
    UTF-8).
    """
    try:
        text = path.decode("ascii")
    except UnicodeDecodeError:
        return None
    try:
        return [unquote(segment, errors="strict") for segment in text.split("/")[1:]]
    except UnicodeDecodeError:
        return None


class AdminResource(Resource):
    """
    The console's routes over an L{IConsole}.
    """

    isLeaf = True
    log = Logger(namespace="tcpext.console")

    def __init__(
        self,
        console: IConsole,
        *,
        token: str | None = None,
        hosts: frozenset[str] = _LOOPBACK_HOSTS,
    ) -> None:
        """
        @param console: What the routes show and change.
        @param token: The token every API request must carry, if any.
        @param hosts: What the C{Host} header may name (with any port), in
            addition to the address the request came in on.
        """
        super().__init__()
        self._console = console
        self._token = token.encode("ascii") if token is not None else None
        self._hosts = hosts

    # Checks.

    def _fromExtension(self, request: Request) -> bool:
        """
        Did the request come in on a connection an extension opened (one
        of the sockets the console lists as an extension's C{client}
        socket, compared by address and port)?  An extension whose grants
        reach the console's TCP address could otherwise use it as the
        operator, with the token read from the token file (an isolated
        extension too: it may read the files the service's user can).
        """
        peer = _addressKey(request.getClientAddress())
        if peer is None:
            return False
        try:
            for extension in self._console.extensions():
                try:
                    sockets = self._console.sockets(extension["id"])
                except ConsoleError:
                    # Unloaded since it was listed: it has no sockets.
                    continue
                for sock in sockets:
                    if sock.get("kind") == "client":
                        if _addressKey(sock.get("local")) == peer:
                            return True
        except Exception:
            self.log.failure("cannot list the extensions' sockets")
            return True
        return False

    def _hostAllowed(self, request: Request) -> bool:
        """
        Does the C{Host} header name loopback or this endpoint?
        """
        values = request.requestHeaders.getRawHeaders(b"host")
        if not values or len(values) != 1:
            return False
        try:
            text = values[0].decode("ascii").strip().lower()
        except UnicodeDecodeError:
            return False
        if text.startswith("["):
            host, sep, rest = text.partition("]")
            host += sep
            if rest and not (rest.startswith(":") and rest[1:].isdigit()):
                return False
        else:
            host, _, port = text.partition(":")
            if port and not port.isdigit():
                return False
        if host in self._hosts:
            return True
        own = getattr(request.getHost(), "host", None)
        return isinstance(own, str) and _hostText(own) == _hostText(host)

    def _authorized(self, request: Request) -> bool:
        """
        Does the request carry the token (when one is required)?
        """
        if self._token is None:
            return True
        values = request.requestHeaders.getRawHeaders(b"authorization") or []
        if len(values) != 1:
            return False
        scheme, _, credentials = values[0].partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(credentials.strip(), self._token)

    # Answers.

    def _send(
        self,
        request: Request,
        status: int,
        body: bytes,
        contentType: bytes,
    ) -> bytes:
        """
        Set the status and headers of an answer and return its body.
        """
        request.setResponseCode(status)
        request.setHeader(b"content-type", contentType)
        for name, value in _SECURITY_HEADERS.items():
            request.setHeader(name, value)
        return body

    def _json(self, request: Request, value: object, status: int = 200) -> bytes:
        """
        Answer with C{value} as JSON.
        """
        body = json.dumps(value).encode("utf-8") + b"\n"
        return self._send(request, status, body, b"application/json")

    def _error(self, request: Request, status: int, message: str) -> bytes:
        """
        Answer with C{{"error": message}}.
        """
        return self._json(request, {"error": message}, status)

    def _finish(self, request: Request, body: bytes) -> None:
        """
        Write the body of an answer computed later and finish.
        """
        if request._disconnected:
            return
        request.write(body)
        request.finish()

    # Dispatch.

    def render(self, request: Request) -> bytes | int:
        """
        Check the request, then route it.
        """
        if not self._hostAllowed(request):
            return self._error(
                request,
                403,
                "the Host header must name localhost, 127.0.0.1, [::1] or "
                "this console's own address",
            )
        segments = _segments(request.path)
        method = request.method
        if segments is None:
            return self._error(request, 400, "the path is not valid UTF-8")
        path = "/" + "/".join(segments)
        if method in (b"GET", b"HEAD") and path in _PAGE_FILES:
            return self._page(request, path)
        if segments[0] not in ("api", "metrics"):
            return self._error(request, 404, f"no such page: {path}")
        if not self._authorized(request):
            request.setHeader(b"www-authenticate", b'Bearer realm="tcpext"')
            return self._error(
                request, 401, "missing or wrong token (Authorization: Bearer TOKEN)"
            )
        # After the token: a request without it costs no listing.
        if self._fromExtension(request):
            return self._error(
                request,
                403,
                "a connection an extension opened may not use the operator console",
            )
        body: Any = None
        if method in (b"POST", b"DELETE"):
            contentType = request.getHeader(b"content-type") or b""
            if contentType.split(b";", 1)[0].strip().lower() != b"application/json":
                return self._error(
                    request,
                    415,
                    "the body must be JSON (Content-Type: application/json)",
                )
            assert request.content is not None
            data = request.content.read(MAX_BODY + 1)
            if len(data) > MAX_BODY:
                return self._error(request, 413, f"the body is over {MAX_BODY} bytes")
            if data.strip():
                try:
                    body = json.loads(data.decode("utf-8"))
                except ValueError as e:
                    return self._error(request, 400, f"the body is not valid JSON: {e}")
            elif method == b"POST":
                return self._error(request, 400, "the body must be a JSON object")
        try:
            result = self._route(request, method, segments, body)
        except ConsoleError as e:
            return self._error(request, e.status, str(e))
        if isinstance(result, Deferred):
            result.addCallbacks(
                lambda value: self._finish(request, self._json(request, value)),
                lambda failure: self._finish(request, self._failed(request, failure)),
            )
            return NOT_DONE_YET
        if isinstance(result, bytes):
            return result
        return self._json(request, result)

    def _failed(self, request: Request, failure: Failure) -> bytes:
        """
        The answer for a change that failed.
        """
        if failure.check(ConsoleError):
            error = failure.value
            assert isinstance(error, ConsoleError)
            return self._error(request, error.status, str(error))
        self.log.failure("admin request {path} failed", failure, path=request.path)
        return self._error(request, 500, f"failed: {failure.getErrorMessage()}")

    def _route(
        self, request: Request, method: bytes, segments: list[str], body: Any
    ) -> Any:
        """
        Find and run the route.

        @return: A JSON value, a L{Deferred} of one, or the bytes of a
            finished answer.
        """
        console = self._console
        if segments == ["metrics"]:
            self._allow(method, b"GET")
            data, contentType = console.metrics()
            return self._send(request, 200, data, contentType.encode("ascii"))
        if segments[:2] != ["api", "v1"]:
            raise _NoRoute()
        rest = segments[2:]
        if rest == ["extensions"]:
            self._allow(method, b"GET")
            return console.extensions()
        if len(rest) >= 3 and rest[0] == "extensions":
            extensionId = rest[1]
            if rest[2:] == ["grants"]:
                if method == b"POST":
                    permission = _field(body, "permission", str)
                    return defer.maybeDeferred(
                        console.grant, extensionId, permission
                    ).addCallback(lambda _: console.grants(extensionId))
                self._allow(method, b"GET")
                return console.grants(extensionId)
            if len(rest) == 4 and rest[2] == "grants":
                self._allow(method, b"DELETE")
                return defer.maybeDeferred(
                    console.revoke, extensionId, rest[3]
                ).addCallback(lambda _: console.grants(extensionId))
            if rest[2:] == ["sockets"]:
                self._allow(method, b"GET")
                return console.sockets(extensionId)
        if rest == ["requests"]:
            self._allow(method, b"GET")
            return console.requests()
        if len(rest) == 2 and rest[0] == "requests":
            self._allow(method, b"POST")
            approve = _field(body, "approve", bool)
            console.answer(rest[1], approve)
            return {"id": rest[1], "approved": approve}
        if rest == ["audit"]:
            self._allow(method, b"GET")
            return console.audit(_after(request))
        raise _NoRoute()

    def _allow(self, method: bytes, *allowed: bytes) -> None:
        """
        Refuse a method the route does not take.
        """
        if method not in allowed and not (method == b"HEAD" and b"GET" in allowed):
            raise _WrongMethod(
                f"{method.decode('ascii', 'replace')} is not allowed here "
                f"(use {', '.join(m.decode('ascii') for m in allowed)})"
            )

    def _page(self, request: Request, path: str) -> bytes:
        """
        One file of the static page.
        """
        name, contentType = _PAGE_FILES[path]
        data = _pageFile(name)
        return self._send(request, 200, data, contentType.encode("ascii"))


class _NoRoute(ConsoleError):
    """
    No route matches (404).
    """

    status = 404

    def __str__(self) -> str:
        """
        The message.
        """
        return "no such API route"


class _WrongMethod(ConsoleError):
    """
    The route exists but not with this method (405).
    """

    status = 405


def _field(body: Any, name: str, kind: type) -> Any:
    """
    The field C{name} of a JSON object body, of type C{kind}.

    @raise ConsoleError: (400) saying what is missing or wrong.
    """
    if not isinstance(body, dict):
        raise BadRequest(f'the body must be a JSON object with "{name}"')
    value = body.get(name)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise BadRequest(f'"{name}" must be a {_KIND_NAMES[kind]}')
    unknown = sorted(set(body) - {name})
    if unknown:
        raise BadRequest(f"unknown fields {unknown}: expected only {name!r}")
    return value


_KIND_NAMES = {str: "string", bool: "boolean (true or false)"}


def _after(request: Request) -> int:
    """
    The C{after} query argument (0 when absent).

    @raise ConsoleError: (400) if it is not a non-negative integer.
    """
    query = request.uri.partition(b"?")[2].decode("ascii", "replace")
    values = parse_qs(query, keep_blank_values=True).get("after", ["0"])
    text = values[-1]
    if not text.isdigit() or not text.isascii():
        raise BadRequest(f"after must be a sequence number (0 or more), not {text!r}")
    return int(text)


_pageCache: dict[str, bytes] = {}


def _pageFile(name: str) -> bytes:
    """
    The content of one file of the page (package data, read once).
    """
    data = _pageCache.get(name)
    if data is None:
        data = resources.files("tcpext").joinpath("_page").joinpath(name).read_bytes()
        _pageCache[name] = data
    return data


class _AdminRequest(Request):
    """
    A request that keeps at most C{MAX_BODY + 1} bytes of its body (enough
    for the API to tell that it is too large): Twisted reads a body to its
    end, into a temporary file when it is large, before the resource checks
    the token, so a client that has no token could otherwise fill the
    host's disk.
    """

    _bodyReceived = 0

    def gotLength(self, length: int | None) -> None:
        """
        Keep the body in memory, whatever length it declares.
        """
        super().gotLength(MAX_BODY + 1)

    def handleContentChunk(self, data: bytes) -> None:
        """
        Keep the start of the body; count and drop the rest.
        """
        room = MAX_BODY + 1 - self._bodyReceived
        if room > 0:
            super().handleContentChunk(data[:room])
        self._bodyReceived += len(data)


def makeAdminSite(
    console: IConsole,
    endpoint: AdminEndpoint,
    token: str | None,
) -> Site:
    """
    The web site of the console on C{endpoint}.

    @raise AdminSetupError: If C{endpoint} needs a token and none is given.
    """
    if endpoint.needsToken and token is None:
        raise AdminSetupError(
            f"--admin {endpoint.description!r}: a TCP admin endpoint needs "
            "--admin-token-file"
        )
    site = Site(
        AdminResource(console, token=token, hosts=endpoint.hosts),
        requestFactory=_AdminRequest,
    )
    site.displayTracebacks = False
    site.noisy = False
    # Access lines are not logged: the audit trail records what matters.
    site.log = lambda request: None  # type: ignore[method-assign]
    return site
