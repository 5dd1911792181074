"""
An extension that runs unmodified Twisted libraries on C{browser.reactor}
and reports what each one did, for C{tests.test_libraries}.

C{config.json} next to this script names the scenarios to run and the ports
of the peers the test runs on loopback.  Each scenario ends with one report,
a JSON line C{{"name": ..., "ok": ..., "detail": ...}} sent over a
connection to the test's C{report} port (a connection made with
C{browser.TCPSocket}, so reports do not depend on the host's log).  A
scenario that expects a refusal reports C{ok} only when the library saw a
L{PermissionDenied}.
"""

import io
import json
import os
import threading

import treq
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.protocol import (
    ClientFactory,
    Factory,
    ReconnectingClientFactory,
)
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    optionsForClientTLS,
)
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.mail.smtp import ESMTPSenderFactory, SMTPConnectError, sendmail
from twisted.protocols.basic import LineReceiver
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, readBody
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import File
from twisted.web.wsgi import WSGIResource
from twisted.words.protocols import irc

from tcpext.permissions import PermissionDenied

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 60.0


def loadConfig():
    """
    Read C{config.json} next to this script.
    """
    with open(os.path.join(HERE, "config.json"), encoding="utf-8") as f:
        return json.load(f)


class Reporter:
    """
    Sends one JSON line per finished scenario to the test.
    """

    def __init__(self, sock):
        self.sock = sock

    @classmethod
    async def connect(cls, browser, port):
        """
        Connect to the test's report port.
        """
        sock = await browser.TCPSocket.connect(host="127.0.0.1", port=port)
        await sock.opened
        return cls(sock)

    async def report(self, name, ok, detail=""):
        """
        Report one scenario's outcome.
        """
        line = json.dumps({"name": name, "ok": bool(ok), "detail": str(detail)})
        await self.sock.write(line.encode() + b"\n")


def describe(error):
    """
    A short description of an exception.
    """
    return f"{type(error).__name__}: {error}"


async def expectDenied(make):
    """
    Call C{make()} (which returns a Deferred or raises), and say whether it
    was refused with L{PermissionDenied}, and how.
    """
    try:
        result = make()
    except PermissionDenied as e:
        return True, "raised at once: " + str(e)
    try:
        await result
    except PermissionDenied as e:
        return True, "failed Deferred: " + str(e)
    except Exception as e:
        return False, "failed otherwise: " + describe(e)
    return False, "was allowed"


def httpsAgent(reactor, config):
    """
    An L{Agent} that trusts the test's CA.
    """
    trustRoot = Certificate.loadPEM(config["caPEM"].encode())
    return Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot))


# Clients of HTTP: treq, Agent, HostnameEndpoint.


async def scenarioTreqHTTP(browser, config):
    """
    treq over plain HTTP, by IP address and by the name C{localhost}.
    """
    bodies = []
    for host in ("127.0.0.1", "localhost"):
        url = f"http://{host}:{config['http']}/hello"
        response = await treq.get(url, reactor=browser.reactor, timeout=TIMEOUT)
        bodies.append(await treq.content(response))
    return bodies == [b"hello", b"hello"], bodies


async def scenarioTreqHTTPS(browser, config):
    """
    treq over HTTPS with an agent that trusts the test's CA.
    """
    agent = httpsAgent(browser.reactor, config)
    url = f"https://localhost:{config['https']}/hello"
    response = await treq.get(url, agent=agent, timeout=TIMEOUT)
    body = await treq.content(response)
    return body == b"hello", body


async def scenarioAgentHTTPS(browser, config):
    """
    A bare L{Agent} over HTTPS.
    """
    agent = httpsAgent(browser.reactor, config)
    url = f"https://localhost:{config['https']}/hello".encode()
    response = await agent.request(b"GET", url)
    body = await readBody(response)
    return (response.code, body) == (200, b"hello"), (response.code, body)


class _Line(LineReceiver):
    """
    Sends one line and keeps the first line of the answer.
    """

    def __init__(self, line):
        self.line = line
        self.answer = defer.Deferred()

    def connectionMade(self):
        self.sendLine(self.line)

    def lineReceived(self, line):
        if not self.answer.called:
            self.answer.callback(line)
        self.transport.loseConnection()


async def scenarioHostnameEndpoint(browser, config):
    """
    L{HostnameEndpoint} to C{localhost}, one line there and back.
    """
    endpoint = HostnameEndpoint(browser.reactor, "localhost", config["echo"])
    protocol = await connectProtocol(endpoint, _Line(b"ping"))
    answer = await protocol.answer
    return answer == b"ping", answer


async def scenarioConnectSSL(browser, config):
    """
    C{connectSSL} with a client factory (no endpoint), one line there and
    back over TLS, trusting the test's CA.
    """
    trustRoot = Certificate.loadPEM(config["caPEM"].encode())
    protocol = _Line(b"ping")
    factory = ClientFactory.forProtocol(lambda: protocol)
    options = optionsForClientTLS("localhost", trustRoot=trustRoot)
    browser.reactor.connectSSL("localhost", config["echoTLS"], factory, options)
    answer = await protocol.answer
    return answer == b"ping", answer


async def scenarioDeniedTreq(browser, config):
    """
    treq to a port no grant covers is refused.
    """
    url = f"http://127.0.0.1:{config['denied']}/"
    return await expectDenied(lambda: treq.get(url, reactor=browser.reactor))


async def scenarioDeniedAgent(browser, config):
    """
    L{Agent} to a name no grant covers is refused.
    """
    url = f"http://localhost:{config['denied']}/".encode()
    return await expectDenied(lambda: Agent(browser.reactor).request(b"GET", url))


async def scenarioDeniedEndpoint(browser, config):
    """
    L{HostnameEndpoint} to a port no grant covers is refused.
    """
    endpoint = HostnameEndpoint(browser.reactor, "localhost", config["denied"])
    return await expectDenied(lambda: connectProtocol(endpoint, _Line(b"ping")))


# IRC (twisted.words) and SMTP (twisted.mail).


class _IRC(irc.IRCClient):
    """
    Joins a channel, says hello there and waits for an answer.
    """

    nickname = "tcpext"

    def __init__(self, password, channel):
        self.password = password
        self.channel = channel
        self.answered = defer.Deferred()

    def signedOn(self):
        self.join(self.channel)

    def joined(self, channel):
        self.say(channel, "hello from tcpext")

    def privmsg(self, user, channel, message):
        if not self.answered.called and "welcome" in message:
            self.answered.callback(message)


async def scenarioIRC(browser, config):
    """
    twisted.words' IRC client: sign on, join, say hello, get an answer.
    """
    irc_ = config["irc"]
    endpoint = HostnameEndpoint(browser.reactor, "localhost", irc_["port"])
    client = _IRC(irc_.get("password"), irc_["channel"])
    await connectProtocol(endpoint, client)
    answer = await client.answered
    client.quit("done")
    return True, answer


async def scenarioSendmail(browser, config):
    """
    C{twisted.mail.smtp.sendmail} to the test's SMTP server.
    """
    message = b"Subject: hello\r\n\r\nhello from tcpext\r\n"
    result = await sendmail(
        "127.0.0.1",
        "extension@tcpext.test",
        ["test@tcpext.test"],
        message,
        port=config["smtp"],
        reactor=browser.reactor,
    )
    return result[0] == 1, result


async def scenarioSMTPStartTLS(browser, config):
    """
    twisted.mail's C{ESMTPSenderFactory} on C{connectTCP}, requiring
    STARTTLS (the connection turns to TLS midway, trusting the test's CA).
    """
    trustRoot = Certificate.loadPEM(config["caPEM"].encode())
    sent = defer.Deferred()
    factory = ESMTPSenderFactory(
        None,
        None,
        "extension@tcpext.test",
        ["test@tcpext.test"],
        io.BytesIO(b"Subject: secret\r\n\r\nhello over TLS\r\n"),
        sent,
        retries=0,
        contextFactory=optionsForClientTLS("localhost", trustRoot=trustRoot),
        requireAuthentication=False,
        requireTransportSecurity=True,
        hostname="localhost",
    )
    browser.reactor.connectTCP("localhost", config["smtpTLS"], factory)
    result = await sent
    return result[0] == 1, result


async def scenarioSocketStartTLS(browser, config):
    """
    A C{browser.TCPSocket} that asks the server for TLS in plain text, then
    upgrades (C{upgradeToSecure}) and talks over TLS.
    """
    trustRoot = Certificate.loadPEM(config["caPEM"].encode())
    sock = await browser.TCPSocket.connect(host="localhost", port=config["starttls"])
    await sock.opened
    await sock.write(b"STARTTLS\r\n")
    go = await sock.readUntil(b"\r\n")
    await sock.upgradeToSecure(optionsForClientTLS("localhost", trustRoot=trustRoot))
    await sock.write(b"ping\r\n")
    answer = await sock.readUntil(b"\r\n")
    await sock.close()
    return (go, answer, sock.ssl) == (b"GO\r\n", b"ping\r\n", True), [go, answer]


async def scenarioDeniedSendmail(browser, config):
    """
    C{sendmail} to a port no grant covers returns a failed Deferred: an
    C{SMTPConnectError} (how C{sendmail} reports every connection that
    failed) that says why.
    """
    try:
        result = sendmail(
            "127.0.0.1",
            "extension@tcpext.test",
            ["test@tcpext.test"],
            b"Subject: no\r\n\r\nno\r\n",
            port=config["denied"],
            reactor=browser.reactor,
        )
    except Exception as e:
        return False, "raised at once: " + describe(e)
    try:
        await result
    except SMTPConnectError as e:
        return "permission denied" in str(e), describe(e)
    except Exception as e:
        return False, "failed otherwise: " + describe(e)
    return False, "was allowed"


# Servers: twisted.web's Site (TCP and TLS), WSGI, threads.


class _Hello(Resource):
    """
    Answers every GET with C{hello from a resource}.
    """

    isLeaf = True

    def render_GET(self, request):
        return b"hello from a resource"


def _application(environ, startResponse):
    """
    A WSGI application: says which thread served it.
    """
    worker = threading.current_thread() is not threading.main_thread()
    startResponse("200 OK", [("Content-Type", "text/plain")])
    return [f"wsgi {environ['PATH_INFO']} worker={worker}".encode()]


def _site(browser):
    """
    A twisted.web site: static files from C{static/}, a resource at
    C{/hello}, a WSGI application at C{/wsgi} when threads are allowed.
    """
    root = File(os.path.join(HERE, "static"))
    root.putChild(b"hello", _Hello())
    try:
        pool = browser.reactor.getThreadPool()
    except PermissionDenied:
        pass
    else:
        root.putChild(b"wsgi", WSGIResource(browser.reactor, pool, _application))
    return Site(root)


async def scenarioSite(browser, config):
    """
    A twisted.web L{Site} on C{listenTCP} and C{listenSSL}.
    """
    site = _site(browser)
    reactor = browser.reactor
    plain = reactor.listenTCP(config["site"], site, interface="127.0.0.1")
    tls = PrivateCertificate.loadPEM(config["serverPEM"].encode()).options()
    secure = reactor.listenSSL(config["siteTLS"], site, tls, interface="127.0.0.1")
    return True, [plain.getHost().port, secure.getHost().port]


class _Echo(LineReceiver):
    """
    Sends every line back.
    """

    def lineReceived(self, line):
        self.sendLine(line)


async def scenarioTLSEcho(browser, config):
    """
    A line echo server (a factory with no ALPN protocols of its own) on
    C{listenSSL}.
    """
    tls = PrivateCertificate.loadPEM(config["serverPEM"].encode()).options()
    port = browser.reactor.listenSSL(
        config["echoTLS"], Factory.forProtocol(_Echo), tls, interface="127.0.0.1"
    )
    return True, port.getHost().port


async def scenarioDeniedListen(browser, config):
    """
    C{listenTCP} on a port no grant covers raises L{PermissionDenied} at
    once, as C{listenTCP} reports its errors in Twisted.
    """
    try:
        browser.reactor.listenTCP(config["denied"], Site(_Hello()))
    except PermissionDenied as e:
        return True, str(e)
    return False, "was allowed"


async def scenarioThreads(browser, config):
    """
    C{deferToThreadPool} on C{browser.reactor}'s thread pool: works where
    the extension runs isolated, and is refused in the service's process
    (with a message that points at isolation).
    """
    reactor = browser.reactor
    try:
        answer = await deferToThreadPool(reactor, reactor.getThreadPool(), lambda: 42)
    except PermissionDenied as e:
        return config["isolated"] is False and "isolation" in str(e), str(e)
    return config["isolated"] is True and answer == 42, answer


# Reconnecting clients.


class _Greeter(LineReceiver):
    """
    Says hello on connecting; the second welcome fires the factory's
    C{again}.
    """

    def connectionMade(self):
        self.sendLine(b"hello")

    def lineReceived(self, line):
        if line == b"welcome 2" and not self.factory.again.called:
            self.factory.again.callback(line.decode())


class _Reconnecting(ReconnectingClientFactory):
    """
    A L{ReconnectingClientFactory} with short delays, that notes its
    connections and every failure it hears of.
    """

    protocol = _Greeter
    initialDelay = 0.2
    maxDelay = 0.5
    factor = 1.5

    def __init__(self):
        self.failures = []
        self.again = defer.Deferred()

    def clientConnectionFailed(self, connector, reason):
        self.failures.append(reason.type.__name__)
        super().clientConnectionFailed(connector, reason)

    def clientConnectionLost(self, connector, reason):
        self.failures.append(reason.type.__name__)
        super().clientConnectionLost(connector, reason)


async def scenarioReconnecting(browser, config):
    """
    A L{ReconnectingClientFactory} against a server that goes away and comes
    back: it connects again.
    """
    factory = _Reconnecting()
    browser.reactor.connectTCP("127.0.0.1", config["rcf"], factory)
    try:
        welcome = await factory.again
    finally:
        factory.stopTrying()
    return True, {"answer": welcome, "heard": sorted(set(factory.failures))}


async def scenarioClientService(browser, config):
    """
    A L{ClientService} against a server that goes away and comes back: it
    connects again.
    """
    factory = Factory.forProtocol(_Greeter)
    factory.again = defer.Deferred()
    endpoint = HostnameEndpoint(browser.reactor, "localhost", config["service"])
    service = ClientService(
        endpoint,
        factory,
        retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=0.5),
        clock=browser.reactor,
    )
    service.startService()
    try:
        welcome = await factory.again
    finally:
        await service.stopService()
    return True, {"answer": welcome}


SCENARIOS = {
    "treq-http": scenarioTreqHTTP,
    "treq-https": scenarioTreqHTTPS,
    "agent-https": scenarioAgentHTTPS,
    "hostname-endpoint": scenarioHostnameEndpoint,
    "connect-ssl": scenarioConnectSSL,
    "denied-treq": scenarioDeniedTreq,
    "denied-agent": scenarioDeniedAgent,
    "denied-endpoint": scenarioDeniedEndpoint,
    "irc": scenarioIRC,
    "sendmail": scenarioSendmail,
    "smtp-starttls": scenarioSMTPStartTLS,
    "socket-starttls": scenarioSocketStartTLS,
    "denied-sendmail": scenarioDeniedSendmail,
    "site": scenarioSite,
    "tls-echo": scenarioTLSEcho,
    "denied-listen": scenarioDeniedListen,
    "threads": scenarioThreads,
    "reconnecting": scenarioReconnecting,
    "client-service": scenarioClientService,
}


async def run(browser, reporter, name, config):
    """
    Run one scenario, bounded in time, and report its outcome.
    """
    log = Logger(namespace=f"tcpext.extension.{browser.runtime.id}")
    try:
        ok, detail = await defer.ensureDeferred(
            SCENARIOS[name](browser, config)
        ).addTimeout(TIMEOUT, browser.reactor)
    except Exception as e:
        log.failure("scenario {name} failed", name=name)
        ok, detail = False, describe(e)
    await reporter.report(name, ok, detail)


async def main(browser):
    """
    Run every configured scenario at once.
    """
    config = loadConfig()
    reporter = await Reporter.connect(browser, config["report"])
    await defer.gatherResults(
        [
            defer.ensureDeferred(run(browser, reporter, name, config))
            for name in config["scenarios"]
        ]
    )
