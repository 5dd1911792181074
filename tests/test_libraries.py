# -*- test-case-name: tests.test_libraries -*-
"""
Twisted libraries, unmodified, as extensions hosted by a real C{twistd -n
tcpext}, in the service's process (C{--isolation none}) and isolated
(C{--isolation process}): treq and C{Agent} over HTTP and HTTPS,
C{HostnameEndpoint}, twisted.words' IRC client, twisted.mail's C{sendmail},
a twisted.web C{Site} over TCP and TLS, threads and WSGI,
C{ReconnectingClientFactory} and C{ClientService} against a server that
goes away and comes back.  Each works within its grants and is refused
outside them.

The extension is C{tests/extensions/libraries}: C{config.json} chooses its
scenarios, and it reports each outcome on a connection to the test.  The
peers (web, SMTP and IRC servers, ...) are written here with Twisted and
run on loopback, on ports the system chose.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet import defer, reactor, task, threads
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.mail import smtp
from twisted.mail.interfaces import IMessageDelivery, IMessageSMTP
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.words import service as words
from twisted.words.protocols import irc
from zope.interface import implementer

from tests._certs import testPKI
from tests.test_examples import REPO, Twistd, freePorts
from tests.test_isolation import _NO_CONFINEMENT

EXTENSION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "extensions")
PAGE = b"a static page served by twisted.web.static.File\n" * 20


class _Hello(Resource):
    """
    Answers every GET with C{hello}.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"hello"


class _Echo(LineReceiver):
    """
    Sends every line back.
    """

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line)


class _Counter(Protocol):
    """
    Counts connections made to a port the extension must never reach.
    """

    def connectionMade(self) -> None:
        self.factory.hits += 1  # type: ignore[attr-defined]
        self.transport.loseConnection()  # type: ignore[union-attr]


class _Ending:
    """
    A protocol mixin: C{ended} fires once the connection is lost, and the
    factory's C{opened}, a list the test shares, holds the protocol while it
    is connected (the test closes what is left at its end).
    """

    factory: Any

    def makeConnection(self, transport: Any) -> None:
        self.ended: Deferred[None] = Deferred()
        self.factory.opened.append(self)
        super().makeConnection(transport)  # type: ignore[misc]

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)  # type: ignore[misc]
        self.factory.opened.remove(self)
        self.ended.callback(None)


class _Reports(LineReceiver):
    """
    Receives the extension's reports, one JSON object a line.
    """

    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        report = json.loads(line)
        self.factory.reports[report["name"]] = report  # type: ignore[attr-defined]


@implementer(IMessageSMTP)
class _Message:
    """
    One message received by the SMTP server.
    """

    def __init__(self, messages: list[bytes]) -> None:
        self.messages = messages
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> Deferred[None]:
        self.messages.append(b"\n".join(self.lines))
        return defer.succeed(None)

    def connectionLost(self) -> None:
        self.lines = []


@implementer(IMessageDelivery)
class _Delivery:
    """
    Accepts mail from anyone to C{test@tcpext.test}, into C{messages}.
    """

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> None:
        return None

    def validateFrom(self, helo: Any, origin: smtp.Address) -> smtp.Address:
        return origin

    def validateTo(self, user: smtp.User) -> Any:
        if str(user.dest) != "test@tcpext.test":
            raise smtp.SMTPBadRcpt(user)
        return lambda: _Message(self.messages)


class _SMTPFactory(Factory):
    """
    An ESMTP server (twisted.mail) that delivers through a L{_Delivery}, and
    offers STARTTLS when given TLS options.
    """

    def __init__(self, contextFactory: Any = None) -> None:
        self.delivery = _Delivery()
        self.contextFactory = contextFactory
        self.protocols: list[smtp.ESMTP] = []

    def buildProtocol(self, addr: Any) -> smtp.ESMTP:
        protocol = smtp.ESMTP(contextFactory=self.contextFactory)
        protocol.host = b"tcpext.test"
        protocol.delivery = self.delivery
        protocol.factory = self
        self.protocols.append(protocol)
        return protocol


class _STARTTLS(LineReceiver):
    """
    Answers C{STARTTLS} with C{GO} and turns to TLS as the server, then
    echoes lines.
    """

    def lineReceived(self, line: bytes) -> None:
        if line == b"STARTTLS" and not getattr(self, "secure", False):
            self.sendLine(b"GO")
            self.transport.startTLS(self.factory.options)  # type: ignore[union-attr]
            self.secure = True
        else:
            self.sendLine(line)


class _STARTTLSFactory(Factory):
    """
    Makes L{_STARTTLS} servers with the given TLS options.
    """

    protocol = _STARTTLS

    def __init__(self, options: Any) -> None:
        self.options = options


class _IRCWatcher(_Ending, irc.IRCClient):
    """
    The test's own IRC client: joins the channel first, answers the
    extension's hello with a welcome.
    """

    nickname = "tester"
    password = "secret"

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.ready: Deferred[None] = Deferred()
        self.heard: list[tuple[str, str]] = []

    def signedOn(self) -> None:
        self.join(self.channel)

    def joined(self, channel: str) -> None:
        self.ready.callback(None)

    def privmsg(self, user: str, channel: str, message: str) -> None:
        self.heard.append((user.split("!")[0], message))
        if message == "hello from tcpext":
            self.say(self.channel, "welcome, " + user.split("!")[0])


class _GoneAndBack(LineReceiver):
    """
    Welcomes each hello with its number; the first one makes the server go
    away for a while (see L{_GoneAndBackServer}).
    """

    def lineReceived(self, line: bytes) -> None:
        self.factory.hello(self, line)  # type: ignore[attr-defined]


class _GoneAndBackServer(Factory):
    """
    A line server that welcomes every hello with its number and, after the
    first, goes away: it stops listening, then drops the client, and a
    second later listens again on the same port.
    """

    protocol = _GoneAndBack

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.port: Any = None
        self.portNumber = 0
        self.wrapper = WrappingFactory(self)

    def listen(self) -> None:
        """
        Listen (again) on the same port.
        """
        self.port = reactor.listenTCP(  # type: ignore[attr-defined]
            self.portNumber, self.wrapper, interface="127.0.0.1"
        )
        self.portNumber = self.port.getHost().port

    def hello(self, protocol: _GoneAndBack, line: bytes) -> None:
        """
        Note C{line} and answer it; go away after the first.
        """
        self.lines.append(line)
        protocol.sendLine(b"welcome %d" % (len(self.lines),))
        if len(self.lines) == 1:
            # Closed before the client hears of it, so that no new connection
            # can wait in the old port's backlog.
            stopped = defer.maybeDeferred(self.port.stopListening)
            stopped.addCallback(
                lambda _: protocol.transport.loseConnection()  # type: ignore[union-attr]
            )
            stopped.addCallback(lambda _: task.deferLater(reactor, 1.0, self.listen))  # type: ignore[arg-type]

    def stop(self) -> Deferred[None]:
        """
        Stop listening, if listening.
        """
        return defer.maybeDeferred(self.port.stopListening)


def _talkTLS(
    port: int, caPEM: bytes, offer: list[str], request: bytes
) -> tuple[str | None, bytes]:
    """
    Send C{request} over TLS with the standard C{ssl} module, offering
    C{offer} with ALPN (as curl and browsers do), and read the answer until
    the server closes or a line ends it: the protocol agreed and the answer.
    """
    context = ssl.create_default_context(cadata=caPEM.decode())
    context.set_alpn_protocols(offer)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(request)
            answer = b""
            for _ in range(1000):
                chunk = tls.recv(65536)
                if not chunk:
                    break
                answer += chunk
                if request.endswith(b"\n") and answer.endswith(b"\n"):
                    break
            return tls.selected_alpn_protocol(), answer


class InProcessLibrariesTests(TestCase):
    """
    Twisted libraries as an extension in the service's own process.
    """

    isolation = "none"
    timeout = 300

    def setUp(self) -> None:
        self.pki = testPKI()
        self.opened: list[_Ending] = []
        self.servers: list[WrappingFactory] = []
        self.addCleanup(self.closeConnections)

    async def closeConnections(self) -> None:
        """
        Close the connections to and from the test's peers that are still
        open (an isolated extension's process may outlive twistd by a
        moment), and wait until they are gone (bounded).
        """
        ended = [protocol.ended for protocol in self.opened]
        for protocol in list(self.opened):
            protocol.transport.abortConnection()  # type: ignore[attr-defined]
        await defer.gatherResults(ended)
        for _ in range(200):
            accepted = [p for server in self.servers for p in server.protocols]
            if not accepted:
                return
            for protocol in accepted:
                protocol.transport.abortConnection()
            await task.deferLater(reactor, 0.05, lambda: None)
        self.fail(f"connections still open: {accepted}")

    def listen(self, factory: Factory, tls: bool = False) -> int:
        """
        Listen on 127.0.0.1, a port the system chooses, for this test only.
        """
        factory = WrappingFactory(factory)
        self.servers.append(factory)
        if tls:
            port = reactor.listenSSL(  # type: ignore[attr-defined]
                0, factory, self.pki.serverOptions(), interface="127.0.0.1"
            )
        else:
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def deniedPort(self) -> tuple[int, Factory]:
        """
        A listening port that no grant covers, counting who reaches it.
        """
        factory = Factory.forProtocol(_Counter)
        factory.hits = 0  # type: ignore[attr-defined]
        return self.listen(factory), factory

    async def runExtension(
        self,
        scenarios: Sequence[str],
        permissions: Sequence[str],
        config: dict[str, Any],
    ) -> dict[str, dict[str, Any]]:
        """
        Run the libraries extension with C{scenarios} under C{twistd -n
        tcpext} (in this test case's isolation mode) and return its reports
        by scenario, once every scenario has reported (bounded).
        """
        reports = Factory.forProtocol(_Reports)
        reports.reports = {}  # type: ignore[attr-defined]
        reportPort = self.listen(reports)
        folder = os.path.join(os.path.abspath(self.mktemp()), "libraries")
        shutil.copytree(os.path.join(EXTENSION, "libraries"), folder)
        os.makedirs(os.path.join(folder, "static"))
        with open(os.path.join(folder, "static", "page.txt"), "wb") as f:
            f.write(PAGE)
        manifest = {
            "manifest_version": 2,
            "name": "libraries",
            "version": "1.0",
            "permissions": [f"tcp-connect:127.0.0.1:{reportPort}", *permissions],
            "background": {"scripts": ["background.py"]},
        }
        with open(os.path.join(folder, "manifest.json"), "w") as f:
            json.dump(manifest, f)
        config = {
            **config,
            "scenarios": list(scenarios),
            "report": reportPort,
            "isolated": self.isolation == "process",
        }
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config, f)
        self.twistd = Twistd(self, ["--extension", folder])
        got = reports.reports  # type: ignore[attr-defined]
        await self.twistd.waitForAsync(
            lambda: set(scenarios) <= set(got),
            f"reports of {sorted(scenarios)} (have {sorted(got)})",
            ["libraries"],
        )
        return dict(got)

    def assertReported(self, reports: dict[str, dict[str, Any]], *names: str) -> None:
        """
        Every one of C{names} reported success.
        """
        failed = {n: reports[n]["detail"] for n in names if not reports[n]["ok"]}
        if failed:
            self.fail(f"failed: {failed}\nlog:\n{self.twistd.log()}")

    async def test_httpClients(self) -> None:
        """
        treq over HTTP (by address and by C{localhost}) and HTTPS (a private
        CA), a bare C{Agent} over HTTPS, C{HostnameEndpoint} and
        C{connectSSL} reach their granted servers; each is refused a port
        outside the grants, which never sees a connection.
        """
        site = Resource()
        site.putChild(b"hello", _Hello())
        http = self.listen(Site(site))
        https = self.listen(Site(site), tls=True)
        echo = self.listen(Factory.forProtocol(_Echo))
        echoTLS = self.listen(Factory.forProtocol(_Echo), tls=True)
        denied, counter = self.deniedPort()
        reports = await self.runExtension(
            [
                "treq-http",
                "treq-https",
                "agent-https",
                "hostname-endpoint",
                "connect-ssl",
                "denied-treq",
                "denied-agent",
                "denied-endpoint",
            ],
            [
                f"tcp-connect:127.0.0.1:{http}",
                f"tcp-connect:localhost:{http}",
                f"tcp-connect:localhost:{https}",
                f"tcp-connect:localhost:{echo}",
                f"tcp-connect:localhost:{echoTLS}",
            ],
            {
                "http": http,
                "https": https,
                "echo": echo,
                "echoTLS": echoTLS,
                "denied": denied,
                "caPEM": self.pki.caPEM.decode(),
            },
        )
        self.assertReported(reports, *reports)
        self.assertEqual(counter.hits, 0)  # type: ignore[attr-defined]
        self.assertIn("permission denied", reports["denied-treq"]["detail"])

    async def test_ircAndMail(self) -> None:
        """
        twisted.words' IRC client signs on to an IRC server (twisted.words'
        own, with a password), joins a channel, says hello and hears the
        answer; C{twisted.mail.smtp.sendmail} delivers a message to an ESMTP
        server; C{sendmail} to a port outside the grants is refused and
        never connects.
        """
        realm = words.InMemoryWordsRealm("tcpext.test")
        realm.createGroupOnRequest = True
        checker = InMemoryUsernamePasswordDatabaseDontUse()
        # twisted.words' IRC server logs in with text, not bytes.
        checker.addUser("tester", "secret")  # type: ignore[arg-type]
        checker.addUser("tcpext", "secret")  # type: ignore[arg-type]
        ircPort = self.listen(words.IRCFactory(realm, Portal(realm, [checker])))
        watcher = _IRCWatcher("#libraries")
        watcherFactory = ClientFactory.forProtocol(lambda: watcher)
        watcherFactory.opened = self.opened  # type: ignore[attr-defined]
        reactor.connectTCP("127.0.0.1", ircPort, watcherFactory)  # type: ignore[attr-defined]
        await watcher.ready
        mail = _SMTPFactory()
        smtpPort = self.listen(mail)
        denied, counter = self.deniedPort()
        reports = await self.runExtension(
            ["irc", "sendmail", "denied-sendmail"],
            [f"tcp-connect:localhost:{ircPort}", f"tcp-connect:127.0.0.1:{smtpPort}"],
            {
                "irc": {"port": ircPort, "password": "secret", "channel": "#libraries"},
                "smtp": smtpPort,
                "denied": denied,
            },
        )
        self.assertReported(reports, "irc", "sendmail", "denied-sendmail")
        self.assertIn(("tcpext", "hello from tcpext"), watcher.heard)
        self.assertEqual(reports["irc"]["detail"], "welcome, tcpext")
        [message] = mail.delivery.messages
        self.assertIn(b"hello from tcpext", message)
        self.assertEqual(counter.hits, 0)  # type: ignore[attr-defined]

    async def test_startTLS(self) -> None:
        """
        A connection the extension dialed turns to TLS midway, as the
        client: twisted.mail's C{ESMTPSenderFactory} requiring STARTTLS
        delivers a message, and a C{browser.TCPSocket} upgrades with
        C{upgradeToSecure} after asking in plain text.
        """
        secureMail = _SMTPFactory(self.pki.serverOptions())
        smtpTLS = self.listen(secureMail)
        starttls = self.listen(_STARTTLSFactory(self.pki.serverOptions()))
        reports = await self.runExtension(
            ["smtp-starttls", "socket-starttls"],
            [f"tcp-connect:localhost:{smtpTLS}", f"tcp-connect:localhost:{starttls}"],
            {
                "smtpTLS": smtpTLS,
                "starttls": starttls,
                "caPEM": self.pki.caPEM.decode(),
            },
        )
        self.assertReported(reports, "smtp-starttls", "socket-starttls")
        [message] = secureMail.delivery.messages
        self.assertIn(b"hello over TLS", message)
        self.assertTrue(any(p.startedTLS for p in secureMail.protocols))

    async def test_site(self) -> None:
        """
        A twisted.web C{Site} (a static file and a resource) listens through
        C{browser.reactor.listenTCP} and serves 200 requests, 20 at a time,
        without a failure; the same site on C{listenSSL} agrees to
        C{http/1.1} with a client that offers ALPN, and a line echo server on
        C{listenSSL} (no protocols to agree to) serves a client that offers
        ALPN; C{listenTCP} outside the grants raises L{PermissionDenied}.  Threads (C{deferToThread}, a WSGI application
        behind C{WSGIResource}) work isolated and are refused in-process.
        """
        site, siteTLS, echoTLS, denied = freePorts(4)
        reports = await self.runExtension(
            ["site", "tls-echo", "denied-listen", "threads"],
            [
                f"tcp-listen:127.0.0.1:{site}",
                f"tcp-listen:127.0.0.1:{siteTLS}",
                f"tcp-listen:127.0.0.1:{echoTLS}",
            ],
            {
                "site": site,
                "siteTLS": siteTLS,
                "echoTLS": echoTLS,
                "denied": denied,
                "serverPEM": (self.pki.serverCertPEM + self.pki.serverKeyPEM).decode(),
            },
        )
        self.assertReported(reports, "site", "tls-echo", "denied-listen", "threads")
        pool = HTTPConnectionPool(reactor)
        pool.maxPersistentPerHost = 20
        self.addCleanup(pool.closeCachedConnections)
        agent = Agent(reactor, pool=pool)
        limit = defer.DeferredSemaphore(20)

        async def get(path: str) -> tuple[int, bytes]:
            url = f"http://127.0.0.1:{site}{path}".encode()
            response = await agent.request(b"GET", url)
            return response.code, await readBody(response)

        paths = ["/page.txt", "/hello"] * 100
        answers = await defer.gatherResults(
            [limit.run(lambda p=p: defer.ensureDeferred(get(p))) for p in paths]
        )
        self.assertEqual(answers.count((200, PAGE)), 100)
        self.assertEqual(answers.count((200, b"hello from a resource")), 100)

        request = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        protocol, answer = await threads.deferToThread(
            _talkTLS, siteTLS, self.pki.caPEM, ["http/1.1"], request
        )
        self.assertEqual(protocol, "http/1.1")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:100])
        self.assertTrue(answer.endswith(b"hello from a resource"), answer[-100:])
        protocol, answer = await threads.deferToThread(
            _talkTLS, echoTLS, self.pki.caPEM, ["h2", "http/1.1"], b"ping\r\n"
        )
        self.assertEqual((protocol, answer), (None, b"ping\r\n"))

        code, body = await get("/wsgi/app")
        if self.isolation == "process":
            self.assertEqual((code, body), (200, b"wsgi /app worker=True"))
        else:
            self.assertEqual(code, 404)
            self.assertIn("isolation", reports["threads"]["detail"])

    async def test_reconnecting(self) -> None:
        """
        A C{ReconnectingClientFactory} (on C{connectTCP}) and a
        C{ClientService} (on C{HostnameEndpoint}) connect to a server that
        then goes away for a second and comes back on the same port: both
        connect again, saying hello a second time.
        """
        rcf, service = _GoneAndBackServer(), _GoneAndBackServer()
        for server in (rcf, service):
            server.listen()
            self.servers.append(server.wrapper)
            self.addCleanup(server.stop)
        reports = await self.runExtension(
            ["reconnecting", "client-service"],
            [
                f"tcp-connect:127.0.0.1:{rcf.portNumber}",
                f"tcp-connect:localhost:{service.portNumber}",
            ],
            {"rcf": rcf.portNumber, "service": service.portNumber},
        )
        self.assertReported(reports, "reconnecting", "client-service")
        for server in (rcf, service):
            self.assertEqual(server.lines, [b"hello", b"hello"])


class IsolatedLibrariesTests(InProcessLibrariesTests):
    """
    The same libraries, each in an extension process confined by the
    kernel (C{--isolation process}).
    """

    isolation = "process"

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"


class SiteBenchmarkTests(SynchronousTestCase):
    """
    C{benchmarks/bench_site.py}, the runner of the C{Site} throughput
    figures in docs/extensions.md, in a tiny run.
    """

    if shutil.which("ab") is None:
        skip = "ab (apache2-utils) is not installed"

    def test_smoke(self) -> None:
        """
        One round of 50 requests per path, in-process and isolated (when the
        system can confine): every server answers every request, and the
        report has a median for each path.
        """
        servers = "none" if _NO_CONFINEMENT is not None else "none,process"
        output = os.path.abspath(self.mktemp())
        script = os.path.join(REPO, "benchmarks", "bench_site.py")
        done = subprocess.run(
            [sys.executable, script, "--rounds", "1", "--requests", "50"]
            + ["--servers", servers, "--json", output],
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        with open(output) as f:
            report = json.load(f)
        self.assertEqual(sorted(report), sorted(servers.split(",")))
        for row in report.values():
            self.assertEqual(row["failed"], 0)
            self.assertEqual(sorted(row["medians"]), ["/hello", "/page.txt"])
