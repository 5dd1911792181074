# -*- test-case-name: tests.test_admin -*-
"""
Tests for L{tcpext._admin}: the console's routes, its checks (Host, token,
content type) and its endpoint.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from typing import Any

import treq
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tcpext._admin import (
    MAX_BODY,
    UNIX_PATH_MAX,
    AdminResource,
    AdminSetupError,
    makeAdminSite,
    parseAdminEndpoint,
    readTokenFile,
)
from tcpext._console import BadRequest, Conflict, IConsole, NotFound
from tests._folders import shortFolder

TOKEN = "s3cret-token"


@implementer(IConsole)
class FakeConsole:
    """
    An L{IConsole} with one extension, C{ext}, for the web layer's tests.
    """

    def __init__(self) -> None:
        self.grantsHeld = {
            "manifest": ["tcp-listen:7000"],
            "operator": [],
            "stored": ["tcp-connect:example.com:80"],
        }
        self.answers: list[tuple[str, bool]] = []
        self.pendingIds = {"1"}
        self.afters: list[int] = []
        self.slow: Deferred[None] | None = None
        self.socketsHeld: list[dict[str, Any]] = []

    def _known(self, extensionId: str) -> None:
        if extensionId != "ext":
            raise NotFound(f"no extension {extensionId!r} is loaded")

    def extensions(self) -> list[dict[str, Any]]:
        return [
            {
                "id": "ext",
                "name": "ext",
                "version": "1.0",
                "isolation": "none",
                "state": "running",
                "grants": self.grants("ext"),
                "sockets": 0,
            }
        ]

    def grants(self, extensionId: str) -> dict[str, list[str]]:
        self._known(extensionId)
        return {k: list(v) for k, v in self.grantsHeld.items()}

    def grant(self, extensionId: str, permission: str) -> Deferred[None]:
        self._known(extensionId)
        if not permission.startswith("tcp-"):
            raise BadRequest(f"{permission!r} is not a tcp-* permission")
        self.grantsHeld["stored"].append(permission)
        if self.slow is not None:
            return self.slow
        return defer.succeed(None)

    def revoke(self, extensionId: str, permission: str) -> Deferred[None]:
        self._known(extensionId)
        if permission in self.grantsHeld["manifest"]:
            raise Conflict(f"{permission!r} is required by the manifest")
        if permission not in self.grantsHeld["stored"]:
            raise NotFound(f"{permission!r} is not granted")
        self.grantsHeld["stored"].remove(permission)
        return defer.succeed(None)

    def sockets(self, extensionId: str) -> list[dict[str, Any]]:
        self._known(extensionId)
        return list(self.socketsHeld)

    def requests(self) -> list[dict[str, Any]]:
        return [
            {"id": i, "extension": "ext", "permissions": ["p"], "askedAt": 1.0}
            for i in sorted(self.pendingIds)
        ]

    def answer(self, requestId: str, approve: bool) -> None:
        if requestId not in self.pendingIds:
            raise NotFound(f"no pending request {requestId!r}")
        self.pendingIds.discard(requestId)
        self.answers.append((requestId, approve))

    def audit(self, after: int) -> list[dict[str, Any]]:
        self.afters.append(after)
        return []

    def metrics(self) -> tuple[bytes, str]:
        return b"tcpext_up 1\n", "text/plain; version=0.0.4; charset=utf-8"


JSON = {"Content-Type": "application/json"}


class RoutesTests(SynchronousTestCase):
    """
    The routes of SPEC 9 over an L{IConsole}, through an in-memory HTTP
    client.
    """

    def setUp(self) -> None:
        self.console = FakeConsole()
        verifyObject(IConsole, self.console)
        self.http = StubTreq(AdminResource(self.console))

    def call(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, Any, Any]:
        """
        Make a request; return the status, the decoded JSON body (or the
        raw bytes) and the response.
        """
        if body is not None:
            data = json.dumps(body).encode("utf-8")
        response = self.successResultOf(
            self.http.request(
                method, "http://localhost" + path, headers=headers, data=data
            )
        )
        content = self.successResultOf(self.http.content(response))
        ctype = response.headers.getRawHeaders("content-type", [""])[0]
        if ctype.startswith("application/json"):
            return response.code, json.loads(content), response
        return response.code, content, response

    def test_extensions(self) -> None:
        """
        C{GET /api/v1/extensions} lists the extensions.
        """
        code, body, response = self.call("GET", "/api/v1/extensions")
        self.assertEqual(code, 200)
        self.assertEqual([e["id"] for e in body], ["ext"])
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])

    def test_grants(self) -> None:
        """
        C{GET .../grants} is one object; an unknown extension is 404 with an
        C{error}.
        """
        code, body, _ = self.call("GET", "/api/v1/extensions/ext/grants")
        self.assertEqual((code, body["manifest"]), (200, ["tcp-listen:7000"]))
        code, body, _ = self.call("GET", "/api/v1/extensions/nope/grants")
        self.assertEqual(code, 404)
        self.assertIn("nope", body["error"])

    def test_grant(self) -> None:
        """
        C{POST .../grants} with C{{"permission": ...}} grants and answers the
        grants; a bad permission or body is 400.
        """
        code, body, _ = self.call(
            "POST",
            "/api/v1/extensions/ext/grants",
            {"permission": "tcp-listen:8000"},
            JSON,
        )
        self.assertEqual(code, 200)
        self.assertIn("tcp-listen:8000", body["stored"])
        for bad in [
            {"permission": "bogus"},
            {"permission": 7},
            {"permission": True},
            {},
            ["tcp-listen:1"],
            {"permission": "tcp-listen:1", "extra": 1},
        ]:
            code, body, _ = self.call(
                "POST", "/api/v1/extensions/ext/grants", bad, JSON
            )
            self.assertEqual(code, 400, bad)
            self.assertIsInstance(body["error"], str)
        code, body, _ = self.call(
            "POST", "/api/v1/extensions/ext/grants", data=b"{not json", headers=JSON
        )
        self.assertEqual(code, 400)
        self.assertIn("not valid JSON", body["error"])
        code, body, _ = self.call(
            "POST", "/api/v1/extensions/ext/grants", data=b"", headers=JSON
        )
        self.assertEqual(code, 400)

    def test_grantLater(self) -> None:
        """
        A change that completes later is answered when it does.
        """
        self.console.slow = Deferred()
        d = self.http.request(
            "POST",
            "http://localhost/api/v1/extensions/ext/grants",
            headers=JSON,
            data=b'{"permission": "tcp-listen:8000"}',
        )
        self.assertNoResult(d)
        self.console.slow.callback(None)
        self.http.flush()
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_revoke(self) -> None:
        """
        C{DELETE .../grants/{permission}} (percent-encoded as one segment)
        revokes; a manifest permission is 409; one not granted is 404.
        """
        code, body, _ = self.call(
            "DELETE",
            "/api/v1/extensions/ext/grants/tcp-connect%3Aexample.com%3A80",
            headers=JSON,
        )
        self.assertEqual((code, body["stored"]), (200, []))
        code, _, _ = self.call(
            "DELETE", "/api/v1/extensions/ext/grants/tcp-listen:7000", headers=JSON
        )
        self.assertEqual(code, 409)
        code, _, _ = self.call(
            "DELETE",
            "/api/v1/extensions/ext/grants/tcp-connect:example.com:80",
            headers=JSON,
        )
        self.assertEqual(code, 404)

    def test_slashInSegment(self) -> None:
        """
        C{%2F} stays inside its segment (a CIDR permission names a route's
        last segment, not two).
        """
        self.console.grantsHeld["stored"].append("tcp-connect:10.0.0.0/8:80")
        code, body, _ = self.call(
            "DELETE",
            "/api/v1/extensions/ext/grants/tcp-connect:10.0.0.0%2F8:80",
            headers=JSON,
        )
        self.assertEqual(code, 200)
        self.assertNotIn("tcp-connect:10.0.0.0/8:80", body["stored"])

    def test_requests(self) -> None:
        """
        C{GET /api/v1/requests} lists; C{POST /api/v1/requests/{id}} with
        C{{"approve": bool}} answers; an unknown or answered id is 404; a
        non-boolean is 400.
        """
        code, body, _ = self.call("GET", "/api/v1/requests")
        self.assertEqual([r["id"] for r in body], ["1"])
        code, body, _ = self.call(
            "POST", "/api/v1/requests/1", {"approve": "yes"}, JSON
        )
        self.assertEqual(code, 400)
        code, body, _ = self.call("POST", "/api/v1/requests/1", {"approve": True}, JSON)
        self.assertEqual((code, body), (200, {"id": "1", "approved": True}))
        code, body, _ = self.call(
            "POST", "/api/v1/requests/1", {"approve": False}, JSON
        )
        self.assertEqual(code, 404)
        self.assertEqual(self.console.answers, [("1", True)])

    def test_audit(self) -> None:
        """
        C{GET /api/v1/audit?after=SEQ} passes C{SEQ} (0 without it); a bad
        value is 400.
        """
        self.assertEqual(self.call("GET", "/api/v1/audit")[0], 200)
        self.assertEqual(self.call("GET", "/api/v1/audit?after=42")[0], 200)
        self.assertEqual(self.console.afters, [0, 42])
        for bad in ["-1", "x", "1.5", ""]:
            self.assertEqual(self.call("GET", f"/api/v1/audit?after={bad}")[0], 400)

    def test_metrics(self) -> None:
        """
        C{GET /metrics} is the Prometheus text.
        """
        code, body, response = self.call("GET", "/metrics")
        self.assertEqual((code, body), (200, b"tcpext_up 1\n"))
        self.assertTrue(
            response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
        )

    def test_page(self) -> None:
        """
        C{/} is the page, with its script and style from the same origin
        only (a content security policy), and no token needed.
        """
        http = StubTreq(AdminResource(self.console, token=TOKEN))
        for path, kind in [
            ("/", "text/html"),
            ("/console.js", "text/javascript"),
            ("/console.css", "text/css"),
        ]:
            response = self.successResultOf(http.get("http://localhost" + path))
            self.assertEqual(response.code, 200, path)
            self.assertTrue(
                response.headers.getRawHeaders("content-type")[0].startswith(kind)
            )
            csp = response.headers.getRawHeaders("content-security-policy")[0]
            self.assertIn("default-src 'none'", csp)
            self.assertIn("script-src 'self'", csp)
            body = self.successResultOf(http.content(response))
            self.assertNotIn(b"http://", body.replace(b"http://localhost", b""))
            self.assertNotIn(b"https://", body)

    def test_notFound(self) -> None:
        """
        Unknown paths are 404, a known path with the wrong method 405.
        """
        self.assertEqual(self.call("GET", "/api/v1/nothing")[0], 404)
        self.assertEqual(self.call("GET", "/elsewhere")[0], 404)
        self.assertEqual(self.call("GET", "/api/v2/extensions")[0], 404)
        self.assertEqual(
            self.call("DELETE", "/api/v1/extensions", headers=JSON)[0], 405
        )

    def test_contentType(self) -> None:
        """
        A POST or DELETE without C{Content-Type: application/json} is 415
        (a form-encoded POST included); with a charset it is fine.
        """
        for method, path in [
            ("POST", "/api/v1/requests/1"),
            ("DELETE", "/api/v1/extensions/ext/grants/tcp-connect:example.com:80"),
        ]:
            for headers in [
                None,
                {"Content-Type": "application/x-www-form-urlencoded"},
                {"Content-Type": "text/plain"},
            ]:
                code, body, _ = self.call(
                    method, path, data=b'{"approve": true}', headers=headers
                )
                self.assertEqual(code, 415, (method, headers))
                self.assertIn("application/json", body["error"])
        self.assertEqual(self.console.answers, [])
        code, _, _ = self.call(
            "POST",
            "/api/v1/requests/1",
            {"approve": True},
            {"Content-Type": "application/json; charset=utf-8"},
        )
        self.assertEqual(code, 200)

    def test_host(self) -> None:
        """
        A foreign C{Host} is 403 on every path, the page included;
        localhost, 127.0.0.1 and [::1] (any port) are fine.
        """
        for host in ["evil.example", "localhost.evil.example", "127.0.0.2", "[::2]"]:
            for path in ["/", "/api/v1/extensions", "/metrics"]:
                code, body, _ = self.call("GET", path, headers={"Host": host})
                self.assertEqual(code, 403, (host, path))
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]:9",
            "LOCALHOST",
        ]:
            code, _, _ = self.call("GET", "/api/v1/extensions", headers={"Host": host})
            self.assertEqual(code, 200, host)
        for host in ["localhost:x", "[::1]x"]:
            code, _, _ = self.call("GET", "/api/v1/extensions", headers={"Host": host})
            self.assertEqual(code, 403, host)


class TokenTests(SynchronousTestCase):
    """
    With a token, every API request needs C{Authorization: Bearer TOKEN}.
    """

    def setUp(self) -> None:
        self.console = FakeConsole()
        self.http = StubTreq(AdminResource(self.console, token=TOKEN))

    def code(self, path: str, headers: dict[str, str] | None = None) -> int:
        response = self.successResultOf(
            self.http.get("http://localhost" + path, headers=headers)
        )
        self.successResultOf(self.http.content(response))
        return int(response.code)

    def test_required(self) -> None:
        """
        No token, a wrong one, another scheme: 401 for the API and metrics.
        """
        for headers in [
            None,
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
            {"Authorization": f"Bearer {TOKEN}x"},
        ]:
            for path in ["/api/v1/extensions", "/api/v1/audit", "/metrics"]:
                self.assertEqual(self.code(path, headers), 401, (path, headers))

    def test_accepted(self) -> None:
        """
        The right token opens the API.
        """
        headers = {"Authorization": f"Bearer {TOKEN}"}
        self.assertEqual(self.code("/api/v1/extensions", headers), 200)
        self.assertEqual(self.code("/metrics", headers), 200)

    def test_refusedChangesNothing(self) -> None:
        """
        A POST without the token answers nothing.
        """
        response = self.successResultOf(
            self.http.post(
                "http://localhost/api/v1/requests/1",
                data=b'{"approve": true}',
                headers=JSON,
            )
        )
        self.assertEqual(response.code, 401)
        self.assertEqual(self.console.answers, [])


class EndpointTests(SynchronousTestCase):
    """
    L{parseAdminEndpoint}, L{AdminEndpoint.prepare} and L{readTokenFile}.
    """

    def test_default(self) -> None:
        """
        The default is a 0600 UNIX socket C{admin.sock} in the state folder.
        """
        endpoint = parseAdminEndpoint("", "/var/lib/tcpext")
        assert endpoint is not None
        self.assertEqual(endpoint.unixPath, "/var/lib/tcpext/admin.sock")
        self.assertIn(":mode=600", endpoint.description)
        self.assertFalse(endpoint.needsToken)

    def test_none(self) -> None:
        """
        C{none} turns the console off.
        """
        self.assertIsNone(parseAdminEndpoint("none", "/state"))

    def test_modeKept(self) -> None:
        """
        A mode given in the description is kept.
        """
        endpoint = parseAdminEndpoint("unix:/run/x.sock:mode=660", "/state")
        assert endpoint is not None
        self.assertNotIn("mode=600", endpoint.description)
        self.assertEqual(endpoint.unixPath, "/run/x.sock")

    def test_tooLong(self) -> None:
        """
        A socket path longer than a UNIX socket may be is refused, naming
        the limit.
        """
        longState = "/" + "d" * 120
        e = self.assertRaises(AdminSetupError, parseAdminEndpoint, "", longState)
        self.assertIn(f"at most {UNIX_PATH_MAX} bytes", str(e))
        ok = "/" + "d" * (UNIX_PATH_MAX - 1)
        self.assertIsNotNone(parseAdminEndpoint("unix:" + ok, "/state"))
        self.assertRaises(AdminSetupError, parseAdminEndpoint, "unix:" + ok + "d", "/s")

    def test_tcp(self) -> None:
        """
        A TCP endpoint needs a token; its interface is an accepted Host.
        """
        endpoint = parseAdminEndpoint("tcp:8080:interface=192.0.2.7", "/state")
        assert endpoint is not None
        self.assertTrue(endpoint.needsToken)
        self.assertIn("192.0.2.7", endpoint.hosts)
        e = self.assertRaises(
            AdminSetupError, makeAdminSite, FakeConsole(), endpoint, None
        )
        self.assertIn("--admin-token-file", str(e))

    def test_unknownKind(self) -> None:
        """
        Endpoint kinds other than UNIX, TCP and TLS are refused.
        """
        self.assertRaises(AdminSetupError, parseAdminEndpoint, "udp:53", "/state")
        self.assertRaises(AdminSetupError, parseAdminEndpoint, "unix:", "/state")

    def test_stale(self) -> None:
        """
        A socket file nobody listens on is replaced; one somebody listens on
        is refused, as is a file that is not a socket.
        """
        base = shortFolder(self)
        path = os.path.join(base, "a.sock")
        endpoint = parseAdminEndpoint("unix:" + path, base)
        assert endpoint is not None
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(path)
        dead.close()
        endpoint.prepare()
        self.assertFalse(os.path.exists(path))
        live = socket.socket(socket.AF_UNIX)
        self.addCleanup(live.close)
        live.bind(path)
        live.listen(1)
        e = self.assertRaises(AdminSetupError, endpoint.prepare)
        self.assertIn("in use", str(e))
        live.close()
        os.unlink(path)
        with open(path, "w"):
            pass
        e = self.assertRaises(AdminSetupError, endpoint.prepare)
        self.assertIn("not a socket", str(e))

    def test_token(self) -> None:
        """
        The token file's content, stripped; empty, binary or spaced tokens
        and unreadable files are refused.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("  abc-123\n")
        self.assertEqual(readTokenFile(path), "abc-123")
        for bad in [b"", b"\n", b"a b", b"\xff\xfe", b"x" * 5000]:
            with open(path, "wb") as f:
                f.write(bad)
            self.assertRaises(AdminSetupError, readTokenFile, path)
        self.assertRaises(AdminSetupError, readTokenFile, path + ".missing")


class ExtensionConnectionTests(SynchronousTestCase):
    """
    A request on a connection an extension opened is refused, token or not:
    an extension whose grants reach the console's TCP address could
    otherwise act as the operator with a token it read from the token file.
    """

    def code(self, client: Any) -> int:
        """
        The status of C{GET /api/v1/extensions}, with the token, from
        C{client}.
        """
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b"api", b"v1", b"extensions"])
        request.path = b"/api/v1/extensions"
        request.method = b"GET"
        request.client = client
        request.requestHeaders.setRawHeaders(b"host", [b"localhost"])
        request.requestHeaders.setRawHeaders(
            b"authorization", [b"Bearer " + TOKEN.encode()]
        )
        self.resource.render(request)
        return int(request.responseCode or 200)

    def test_refused(self) -> None:
        """
        The extension's client sockets are recognised by address and port
        (an IPv4-mapped peer is its IPv4 address); other peers, the
        extension's servers and UNIX clients are served.
        """
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

        console = FakeConsole()
        console.socketsHeld = [
            {"kind": "client", "local": "127.0.0.1:40000"},
            {"kind": "client", "local": "[::1]:40001"},
            {"kind": "server", "local": "127.0.0.1:40002"},
        ]
        self.resource = AdminResource(console, token=TOKEN)
        for client in [
            IPv4Address("TCP", "127.0.0.1", 40000),
            IPv6Address("TCP", "::ffff:127.0.0.1", 40000),
            IPv6Address("TCP", "::1", 40001),
        ]:
            self.assertEqual(self.code(client), 403, client)
        for client in [
            IPv4Address("TCP", "127.0.0.1", 40001),
            IPv4Address("TCP", "127.0.0.2", 40000),
            IPv4Address("TCP", "127.0.0.1", 40002),
            UNIXAddress(None),
        ]:
            self.assertEqual(self.code(client), 200, client)

    def test_listingFails(self) -> None:
        """
        An extension unloaded between the listing of extensions and that
        of its sockets has none; if the extensions cannot be listed at
        all, the request is refused (and the failure logged).
        """
        from twisted.internet.address import IPv4Address

        client = IPv4Address("TCP", "127.0.0.1", 40000)
        console = FakeConsole()

        def gone(extensionId: str) -> list[dict[str, Any]]:
            raise NotFound(f"no extension {extensionId!r} is loaded")

        console.sockets = gone  # type: ignore[method-assign]
        self.resource = AdminResource(console, token=TOKEN)
        self.assertEqual(self.code(client), 200)

        def broken() -> list[dict[str, Any]]:
            raise RuntimeError("broken")

        console.extensions = broken  # type: ignore[method-assign]
        self.assertEqual(self.code(client), 403)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class BodyLimitTests(SynchronousTestCase):
    """
    The console keeps at most C{MAX_BODY} bytes of a request's body,
    whoever sends it: the body arrives before the token is checked.
    """

    def channel(self) -> tuple[Any, Any]:
        """
        An HTTP connection to a TCP console's site (token required), over
        an in-memory transport.
        """
        from twisted.internet.testing import StringTransport

        endpoint = parseAdminEndpoint("tcp:8080:interface=127.0.0.1", "/state")
        assert endpoint is not None
        site = makeAdminSite(FakeConsole(), endpoint, TOKEN)
        factory = site.requestFactory
        self.requests: list[Any] = []

        def record(*args: Any, **kwargs: Any) -> Any:
            request = factory(*args, **kwargs)
            self.requests.append(request)
            return request

        site.requestFactory = record
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, None)
        return channel, transport

    def send(self, length: bytes, total: int) -> tuple[Any, Any]:
        """
        Send a POST without the token, declaring C{length} (a
        C{Content-Length} value, or C{b"chunked"}), and C{total} bytes of
        body in 64 KiB pieces; return the channel and its transport.
        """
        channel, transport = self.channel()
        if length == b"chunked":
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            framing = b"Content-Length: " + length + b"\r\n"
        channel.dataReceived(
            b"POST /api/v1/extensions/ext/grants HTTP/1.1\r\n"
            b"Host: localhost\r\nContent-Type: application/json\r\n" + framing + b"\r\n"
        )
        piece = b"x" * 65536
        for _ in range(total // len(piece)):
            if length == b"chunked":
                channel.dataReceived(b"10000\r\n" + piece + b"\r\n")
            else:
                channel.dataReceived(piece)
        return channel, transport

    def kept(self) -> int:
        """
        How many bytes of body the last request holds.
        """
        content = self.requests[-1].content
        content.seek(0, os.SEEK_END)
        return int(content.tell())

    def test_declaredLength(self) -> None:
        """
        A body declared and sent far larger than C{MAX_BODY} is not kept
        (it was spooled to a temporary file, to the end, before the token
        was checked); once complete it is answered 401 (no token).
        """
        channel, transport = self.send(b"%d" % (64 * 65536), 64 * 65536)
        self.assertIn(b" 401 ", transport.value())
        channel, transport = self.send(b"%d" % (64 * 65536), 32 * 65536)
        self.assertLessEqual(self.kept(), MAX_BODY + 1)

    def test_chunked(self) -> None:
        """
        A chunked body is not kept past C{MAX_BODY} either.
        """
        channel, transport = self.send(b"chunked", 32 * 65536)
        self.assertLessEqual(self.kept(), MAX_BODY + 1)

    def test_overLimitAnswered(self) -> None:
        """
        With the token, a body over C{MAX_BODY} is answered 413.
        """
        channel, transport = self.channel()
        body = b'{"permission": "' + b"x" * MAX_BODY + b'"}'
        channel.dataReceived(
            b"POST /api/v1/extensions/ext/grants HTTP/1.1\r\n"
            b"Host: localhost\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        self.assertIn(b" 413 ", transport.value())


class TCPLoopbackTests(TestCase):
    """
    A real TCP console on loopback refuses requests without the token, with
    a wrong token, with a foreign Host, and a form-encoded POST.
    """

    def setUp(self) -> Deferred[None]:
        from twisted.internet import reactor

        self.console = FakeConsole()
        endpoint = parseAdminEndpoint("tcp:0:interface=127.0.0.1", "/unused")
        assert endpoint is not None
        site = makeAdminSite(self.console, endpoint, TOKEN)

        def listening(port: Any) -> None:
            self.port = port
            self.addCleanup(port.stopListening)
            self.base = f"http://127.0.0.1:{port.getHost().port}"

        return endpoint.listen(reactor, site).addCallback(listening)

    async def fetch(
        self, method: str, path: str, headers: dict[str, str], data: bytes | None = None
    ) -> tuple[int, Any]:
        """
        One request over loopback (no pooled connection left behind).
        """
        response = await treq.request(
            method,
            self.base + path,
            headers=headers,
            data=data,
            persistent=False,
            timeout=30,
        )
        body = await treq.content(response)
        return response.code, body

    @defer.inlineCallbacks
    def test_refused(self) -> Any:
        """
        Each refused request is answered with its status and changes
        nothing; the right request works.
        """
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        cases = [
            ("GET", "/api/v1/extensions", {}, None, 401),
            ("GET", "/api/v1/extensions", {"Authorization": "Bearer nope"}, None, 401),
            (
                "GET",
                "/api/v1/extensions",
                {**bearer, "Host": "attacker.example"},
                None,
                403,
            ),
            (
                "POST",
                "/api/v1/requests/1",
                {**bearer, "Content-Type": "application/x-www-form-urlencoded"},
                b"approve=true",
                415,
            ),
            ("GET", "/api/v1/extensions", bearer, None, 200),
        ]
        for method, path, headers, data, expected in cases:
            code, _ = yield defer.ensureDeferred(
                self.fetch(method, path, headers, data)
            )
            self.assertEqual(code, expected, (method, path, headers))
        self.assertEqual(self.console.answers, [])

    def test_unixMode(self) -> Deferred[None]:
        """
        The default UNIX socket is created mode 0600.
        """
        from twisted.internet import reactor

        base = os.path.join(shortFolder(self), "state")
        endpoint = parseAdminEndpoint("", base)
        assert endpoint is not None and endpoint.unixPath is not None
        path = endpoint.unixPath
        site = makeAdminSite(self.console, endpoint, None)

        def listening(port: Any) -> Any:
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
            self.assertEqual(stat.S_IMODE(os.stat(base).st_mode), 0o700)
            return port.stopListening()

        return endpoint.listen(reactor, site).addCallback(listening)
