# -*- test-case-name: tests.test_reactor_clients -*-
"""
Twisted libraries through a L{PermissionCheckingReactor} on real loopback:
treq, C{Agent} and C{HostnameEndpoint} work within the grants and fail with
L{PermissionDenied} outside them.
"""

from __future__ import annotations

from typing import Any

import treq
from twisted.internet import reactor as globalReactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Site

from tcpext.permissions import PermissionDenied, PermissionSet
from tcpext.reactor import PermissionCheckingReactor
from tests.test_reactor import FakeResolver


class _Hello(Resource):
    """
    Answers every GET with C{hello}.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"hello"


class _Channel(HTTPChannel):
    """
    An HTTP channel that tells its site when it closes.
    """

    def connectionMade(self) -> None:
        super().connectionMade()
        self.closed: Deferred[None] = Deferred()
        self.factory.channels.append(self)  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.closed.callback(None)


class _Tracker(Protocol):
    """
    A protocol that records its end.
    """

    def connectionMade(self) -> None:
        self.closed: Deferred[None] = Deferred()
        self.factory.made.append(self)  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.reason = reason
        self.closed.callback(None)


def _trackingFactory() -> Factory:
    """
    A factory of L{_Tracker}s that lists them in C{made}.
    """
    factory = Factory.forProtocol(_Tracker)
    factory.made = []  # type: ignore[attr-defined]
    return factory


class _LoopbackMixin:
    """
    An HTTP server on 127.0.0.1 (port 0) and a wrapper over the global
    reactor whose trusted resolver maps C{app.test} to 127.0.0.1.
    """

    def setUp(self) -> None:
        case: Any = self
        site = Site(_Hello())
        site.protocol = _Channel
        site.channels = []  # type: ignore[attr-defined]
        self.site = site
        self.port = globalReactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.portNumber: int = self.port.getHost().port
        case.addCleanup(self._stopServer)

    @inlineCallbacks
    def _stopServer(self) -> Any:
        yield self.port.stopListening()
        for channel in self.site.channels:  # type: ignore[attr-defined]
            if not channel.closed.called:
                channel.transport.loseConnection()
                yield channel.closed

    def wrapper(self, *grants: str) -> PermissionCheckingReactor:
        """
        A wrapper with C{grants} (C{{port}} is the server's port); the grants
        are C{self.permissions}.
        """
        texts = [g.format(port=self.portNumber) for g in grants]
        self.permissions = PermissionSet(texts)
        return PermissionCheckingReactor(
            globalReactor,
            self.permissions,
            nameResolver=FakeResolver({"app.test": ["127.0.0.1"]}),
        )

    def url(self, host: str) -> str:
        """
        The server's URL with C{host}.
        """
        return f"http://{host}:{self.portNumber}/"


class TreqTests(_LoopbackMixin, TestCase):
    """
    treq through the wrapper.
    """

    @inlineCallbacks
    def test_address(self) -> Any:
        """
        A GET to an address an IP grant covers works.
        """
        wrapper = self.wrapper("tcp-connect:127.0.0.1:{port}")
        response = yield treq.get(
            self.url("127.0.0.1"), reactor=wrapper, persistent=False
        )
        self.assertEqual((yield treq.content(response)), b"hello")

    @inlineCallbacks
    def test_localhost(self) -> Any:
        """
        A GET to C{localhost} works under a C{localhost} name grant.
        """
        wrapper = self.wrapper("tcp-connect:localhost:{port}")
        response = yield treq.get(
            self.url("localhost"), reactor=wrapper, persistent=False
        )
        self.assertEqual((yield treq.content(response)), b"hello")

    @inlineCallbacks
    def test_portNotGranted(self) -> Any:
        """
        A port the grant does not cover fails with L{PermissionDenied}.
        """
        wrapper = self.wrapper("tcp-connect:127.0.0.1:1")
        error = yield self.assertFailure(
            treq.get(self.url("127.0.0.1"), reactor=wrapper, persistent=False),
            PermissionDenied,
        )
        self.assertIn(f"127.0.0.1:{self.portNumber}", str(error))

    @inlineCallbacks
    def test_nameAgainstIPGrant(self) -> Any:
        """
        A name is refused under an IP grant for the address it resolves to.
        """
        wrapper = self.wrapper("tcp-connect:127.0.0.1:{port}")
        yield self.assertFailure(
            treq.get(self.url("localhost"), reactor=wrapper, persistent=False),
            PermissionDenied,
        )

    @inlineCallbacks
    def test_nameToLoopback(self) -> Any:
        """
        A name that resolves to loopback is refused without an IP grant
        (DNS rebinding), and allowed with one.
        """
        wrapper = self.wrapper("tcp-connect:app.test:{port}")
        error = yield self.assertFailure(
            treq.get(self.url("app.test"), reactor=wrapper, persistent=False),
            PermissionDenied,
        )
        self.assertIn("127.0.0.1", str(error))
        self.permissions.add(f"tcp-connect:127.0.0.0/8:{self.portNumber}")
        response = yield treq.get(
            self.url("app.test"), reactor=wrapper, persistent=False
        )
        self.assertEqual((yield treq.content(response)), b"hello")

    @inlineCallbacks
    def test_numericAlias(self) -> Any:
        """
        A numeric IPv4 alias is refused even under a C{*} grant.
        """
        wrapper = self.wrapper("tcp-connect:*:*")
        yield self.assertFailure(
            treq.get(self.url("127.1"), reactor=wrapper, persistent=False),
            PermissionDenied,
        )


class AgentTests(_LoopbackMixin, TestCase):
    """
    C{Agent} through the wrapper.
    """

    @inlineCallbacks
    def test_name(self) -> Any:
        """
        A request to a granted name (whose loopback answer an IP grant
        covers) works.
        """
        wrapper = self.wrapper(
            "tcp-connect:app.test:{port}", "tcp-connect:127.0.0.1:{port}"
        )
        agent = Agent(wrapper, pool=HTTPConnectionPool(wrapper, persistent=False))
        response = yield agent.request(b"GET", self.url("app.test").encode())
        self.assertEqual((yield readBody(response)), b"hello")

    @inlineCallbacks
    def test_denied(self) -> Any:
        """
        A request to a name no grant covers fails with L{PermissionDenied}.
        """
        wrapper = self.wrapper("tcp-connect:other.test:{port}")
        agent = Agent(wrapper, pool=HTTPConnectionPool(wrapper, persistent=False))
        yield self.assertFailure(
            agent.request(b"GET", self.url("app.test").encode()), PermissionDenied
        )


class EndpointTests(_LoopbackMixin, TestCase):
    """
    Endpoints and the reactor's own methods through the wrapper.
    """

    @inlineCallbacks
    def test_hostnameEndpoint(self) -> Any:
        """
        C{HostnameEndpoint} connects to C{localhost} under a name grant, and
        fails with L{PermissionDenied} on a port not granted.
        """
        wrapper = self.wrapper("tcp-connect:localhost:{port}")
        factory = _trackingFactory()
        endpoint = HostnameEndpoint(wrapper, "localhost", self.portNumber)
        protocol = yield endpoint.connect(factory)
        self.assertEqual(protocol.transport.getPeer().port, self.portNumber)
        protocol.transport.loseConnection()
        yield protocol.closed
        yield self.assertFailure(
            HostnameEndpoint(wrapper, "localhost", self.portNumber + 1).connect(
                factory
            ),
            PermissionDenied,
        )

    def test_connectTCPAlias(self) -> None:
        """
        C{connectTCP} to a numeric alias does not raise: the factory's
        C{clientConnectionFailed} gets L{PermissionDenied}.
        """
        wrapper = self.wrapper("tcp-connect:*:*")
        failed: Deferred[None] = Deferred()

        class Failing(ClientFactory):
            def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
                failed.errback(reason)

        wrapper.connectTCP("2130706433", self.portNumber, Failing())
        return self.assertFailure(failed, PermissionDenied)

    def test_listenWithoutGrant(self) -> None:
        """
        C{listenTCP} without a C{tcp-listen} grant raises
        L{PermissionDenied}.
        """
        wrapper = self.wrapper("tcp-connect:*:*")
        self.assertRaises(
            PermissionDenied, wrapper.listenTCP, 0, Factory(), interface="127.0.0.1"
        )

    def test_spawnProcess(self) -> None:
        """
        C{spawnProcess} raises L{PermissionDenied}.
        """
        from twisted.internet.protocol import ProcessProtocol

        wrapper = self.wrapper("tcp-connect:*:*", "tcp-listen:*")
        self.assertRaises(
            PermissionDenied,
            wrapper.spawnProcess,
            ProcessProtocol(),
            "/bin/true",
            ["true"],
        )

    @inlineCallbacks
    def test_listenAndConnect(self) -> Any:
        """
        With grants, the wrapper listens and connects on real loopback.
        """
        wrapper = self.wrapper("tcp-connect:127.0.0.1:*", "tcp-listen:*")
        serverFactory = _trackingFactory()
        port = wrapper.listenTCP(0, serverFactory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = yield TCP4ClientEndpoint(
            wrapper, "127.0.0.1", port.getHost().port
        ).connect(_trackingFactory())
        client.transport.loseConnection()
        yield client.closed
        yield serverFactory.made[0].closed

    @inlineCallbacks
    def test_closeAll(self) -> Any:
        """
        C{closeAll} closes the wrapper's ports and connections on real
        loopback and fires once they are closed.
        """
        wrapper = self.wrapper("tcp-connect:127.0.0.1:*", "tcp-listen:*")
        serverFactory = _trackingFactory()
        port = wrapper.listenTCP(0, serverFactory, interface="127.0.0.1")
        number = port.getHost().port
        client = yield TCP4ClientEndpoint(wrapper, "127.0.0.1", number).connect(
            _trackingFactory()
        )
        outside = yield TCP4ClientEndpoint(
            globalReactor, "127.0.0.1", self.portNumber
        ).connect(_trackingFactory())
        self.addCleanup(outside.transport.loseConnection)
        yield wrapper.closeAll()
        self.assertTrue(client.closed.called)
        self.assertTrue(serverFactory.made[0].closed.called)
        self.assertFalse(outside.closed.called)
        yield self.assertFailure(
            TCP4ClientEndpoint(globalReactor, "127.0.0.1", number).connect(
                _trackingFactory()
            ),
            ConnectionRefusedError,
        )
        outside.transport.loseConnection()
        yield outside.closed

    @inlineCallbacks
    def test_revalidate(self) -> Any:
        """
        After a grant is removed, C{revalidate} closes the connections it
        allowed on real loopback.
        """
        wrapper = self.wrapper("tcp-connect:127.0.0.1:{port}")
        client = yield TCP4ClientEndpoint(
            wrapper, "127.0.0.1", self.portNumber
        ).connect(_trackingFactory())
        self.permissions.discard(f"tcp-connect:127.0.0.1:{self.portNumber}")
        yield wrapper.revalidate()
        self.assertTrue(client.closed.called)
