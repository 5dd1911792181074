"""
Tests for L{tcpext._twistedcompat}: every Twisted implementation detail
tcpext relies on, checked against the installed Twisted.  If a Twisted
upgrade renames or changes one of them, a test here fails and says which.
"""

from __future__ import annotations

import socket
import warnings
from typing import Any

from OpenSSL.SSL import Connection
from twisted.internet import reactor as globalReactor
from twisted.internet import tcp
from twisted.internet._sslverify import protosFromProtocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tcpext import _twistedcompat as compat
from tests._certs import testPKI

_DONE = Failure(ConnectionDone())


class Collect(Protocol):
    """
    Records what arrives and how the connection ended.
    """

    def __init__(self) -> None:
        """
        Nothing yet.
        """
        self.received = b""
        self.made: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        """
        Fire C{made}.
        """
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        """
        Keep C{data}.
        """
        self.received += data

    def connectionLost(self, reason: Failure = _DONE) -> None:
        """
        Keep the reason; fire C{lost}.
        """
        self.reason = reason
        self.lost.callback(None)


@implementer(IPushProducer)
class Producer:
    """
    Counts how often it is paused and resumed.
    """

    def __init__(self) -> None:
        """
        Not paused or resumed yet.
        """
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:
        """
        Count a pause.
        """
        self.paused += 1

    def resumeProducing(self) -> None:
        """
        Count a resume.
        """
        self.resumed += 1

    def stopProducing(self) -> None:
        """
        Nothing to stop.
        """


class DeferredTests(SynchronousTestCase):
    """
    C{Deferred._debugInfo.failResult}.
    """

    def test_silence(self) -> None:
        """
        A failed Deferred keeps its failure in C{_debugInfo.failResult} (to
        log it when garbage collected); L{compat.silence} clears it.
        """
        failure = Failure(ValueError("reported elsewhere"))
        d: Deferred[None] = Deferred()
        d.errback(failure)
        self.assertIs(d._debugInfo.failResult, failure)  # type: ignore[union-attr]
        compat.silence(d, failure)
        self.assertIsNone(d._debugInfo.failResult)  # type: ignore[union-attr]
        # consumed: nothing to log either way
        d.addErrback(lambda f: None)


class EndpointTests(SynchronousTestCase):
    """
    The private attributes of Twisted's endpoints.
    """

    def test_requestedAddress(self) -> None:
        """
        C{HostnameEndpoint._hostText}/C{_port}, C{TCP4ClientEndpoint._host},
        a TLS wrapper's C{_wrappedEndpoint}, C{UNIXClientEndpoint._path}.
        """
        clock = Clock()
        self.assertEqual(
            compat.requestedAddress(HostnameEndpoint(clock, "example.com", 443)),
            ("example.com", 443),
        )
        self.assertEqual(
            compat.requestedAddress(TCP4ClientEndpoint(clock, "192.0.2.1", 80)),
            ("192.0.2.1", 80),
        )
        wrapped = wrapClientTLS(
            testPKI().clientOptions(),
            TCP4ClientEndpoint(clock, "192.0.2.2", 8443),
        )
        self.assertEqual(compat.requestedAddress(wrapped), ("192.0.2.2", 8443))
        self.assertEqual(
            compat.requestedAddress(UNIXClientEndpoint(clock, "/tmp/x.sock")),
            ("/tmp/x.sock", None),
        )

    def test_wrapClientTLSOn(self) -> None:
        """
        C{wrapClientTLSOn} wraps an endpoint in TLS whose write batching runs
        on the given clock (the C{clock} of Twisted's C{wrapClientTLS}), and
        keeps the wrapped endpoint where L{compat.requestedAddress} finds it.
        """
        from twisted.internet.protocol import Factory, Protocol
        from twisted.internet.testing import MemoryReactorClock

        reactor = MemoryReactorClock()
        wrapped = compat.wrapClientTLSOn(
            reactor,
            testPKI().clientOptions(),
            TCP4ClientEndpoint(reactor, "192.0.2.2", 8443),
        )
        self.assertEqual(compat.requestedAddress(wrapped), ("192.0.2.2", 8443))
        wrapped.connect(Factory.forProtocol(Protocol))
        [(host, port, factory, _, _)] = reactor.tcpClients
        self.assertEqual((host, port), ("192.0.2.2", 8443))
        # The endpoint's wrapping factory, around the TLS factory.
        self.assertIs(factory._wrappedFactory._clock, reactor)

    def test_plainTCPEndpoint(self) -> None:
        """
        C{TCP4ClientEndpoint._reactor}, C{_host}, C{_port}, C{_timeout},
        C{_bindAddress}: what its C{connect} hands to C{connectTCP}.
        """
        clock = Clock()
        endpoint = TCP4ClientEndpoint(
            clock, "192.0.2.1", 80, timeout=7, bindAddress=("127.0.0.1", 0)
        )
        self.assertEqual(
            compat.plainTCPEndpoint(endpoint),
            (clock, "192.0.2.1", 80, 7, ("127.0.0.1", 0)),
        )
        self.assertIsNone(
            compat.plainTCPEndpoint(HostnameEndpoint(clock, "example.com", 80))
        )


class ALPNTests(SynchronousTestCase):
    """
    What L{compat.answerALPN} and L{compat.serverTLSOptions} rely on.
    """

    def test_serverTLSOptions(self) -> None:
        """
        C{SSL4ServerEndpoint._sslContextFactory} is the options it was given,
        found through wrapping endpoints too; other endpoints have none.
        """
        options = testPKI().serverOptions()
        endpoint = SSL4ServerEndpoint(Clock(), 0, options)
        self.assertIs(compat.serverTLSOptions(endpoint), options)

        class Wrapper:
            _endpoint = endpoint

        self.assertIs(compat.serverTLSOptions(Wrapper()), options)
        self.assertIsNone(compat.serverTLSOptions(TCP4ServerEndpoint(Clock(), 0)))

    def test_answerALPN(self) -> None:
        """
        C{CertificateOptions} keeps C{_acceptableProtocols} and makes its
        context with C{getContext()}; Twisted's C{protosFromProtocol} is
        there; a fresh context takes the new selection (once), one that
        already made a connection is refused by pyOpenSSL (L{False}).
        """
        options = CertificateOptions(
            privateKey=testPKI().serverCertificate().privateKey.original,
            certificate=testPKI().serverCertificate().original,
            acceptableProtocols=[b"h2"],
        )
        self.assertEqual(options._acceptableProtocols, [b"h2"])
        self.assertTrue(callable(protosFromProtocol))
        self.assertTrue(compat.answerALPN(options, lambda p: ()))
        self.assertTrue(compat.answerALPN(options, lambda p: ()))
        used = testPKI().serverOptions()
        Connection(used.getContext(), None)
        self.assertFalse(compat.answerALPN(used, lambda p: ()))
        self.assertFalse(compat.answerALPN(object(), lambda p: ()))


class TCPTransportTests(TestCase):
    """
    Twisted's own TCP transports, over real loopback.
    """

    timeout = 30

    async def pair(self) -> tuple[Any, Collect, Collect]:
        """
        A connected client transport, with the protocols of both ends.
        """
        accepted = Collect()
        port = globalReactor.listenTCP(
            0, Factory.forProtocol(lambda: accepted), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        client = Collect()
        await connectProtocol(
            TCP4ClientEndpoint(globalReactor, "127.0.0.1", port.getHost().port),
            client,
        )
        await accepted.made
        self.addCleanup(client.transport.abortConnection)  # type: ignore[union-attr]
        return client.transport, client, accepted

    async def test_plainTransport(self) -> None:
        """
        A TCP connection is a C{tcp.Client} (accepted: C{tcp.Server})
        without C{TLS}; its C{socket}, C{connected}, C{disconnecting},
        C{dataBuffer}, C{_tempDataLen}, C{bufferSize} and C{reactor} are
        there and mean what tcpext reads them for.
        """
        transport, client, accepted = await self.pair()
        self.assertIs(type(transport), tcp.Client)
        self.assertIs(type(accepted.transport), tcp.Server)
        self.assertTrue(compat.isPlainTCP(transport))
        self.assertTrue(compat.isPlainTCP(accepted.transport))
        self.assertFalse(compat.isPlainTCP(object()))
        self.assertIsInstance(transport.socket, socket.socket)
        self.assertTrue(compat.sendsNothing(transport))
        self.assertIsInstance(transport.bufferSize, int)
        self.assertIs(compat.clockOf(transport), globalReactor)
        compat.setNoDelay(transport)
        self.assertTrue(transport.getTcpNoDelay())
        # what write() queues shows in dataBuffer/_tempDataLen
        transport.write(b"x" * (transport.bufferSize + 1))
        self.assertFalse(compat.sendsNothing(transport))
        self.assertTrue(compat.overBufferSize(transport))
        while len(accepted.received) < transport.bufferSize + 1:
            await _aMoment()
        self.assertTrue(compat.sendsNothing(transport))
        self.assertFalse(compat.overBufferSize(transport))

    async def test_sendAtOnce(self) -> None:
        """
        C{writeSomeData} hands bytes to the kernel during the call and says
        how many it took; the rest is queued in the transport.
        """
        transport, client, accepted = await self.pair()
        self.assertEqual(compat.sendAtOnce(transport, b"now"), b"")
        self.assertEqual((transport._tempDataLen, transport.dataBuffer), (0, b""))
        while accepted.received != b"now":
            await _aMoment()

    async def test_markPaused(self) -> None:
        """
        A producer registered with C{producerPaused} set is resumed by the
        transport once its buffer drained, as if the transport had paused
        it itself.
        """
        transport, client, accepted = await self.pair()
        producer = Producer()
        transport.write(b"y" * (4 * transport.bufferSize))
        transport.registerProducer(producer, True)
        compat.markPaused(transport)
        self.assertTrue(transport.producerPaused)
        while producer.resumed == 0:
            await _aMoment()
        self.assertEqual(producer.resumed, 1)
        transport.unregisterProducer()

    async def test_closeAtOnce(self) -> None:
        """
        Stopping reading and writing, then C{connectionLost}, closes the
        connection cleanly at once: the protocol is told, the peer sees the
        end of the stream.
        """
        transport, client, accepted = await self.pair()
        compat.closeAtOnce(transport)
        self.assertTrue(client.lost.called)
        assert client.reason is not None
        self.assertIsInstance(client.reason.value, ConnectionDone)
        await accepted.lost
        assert accepted.reason is not None
        self.assertIsInstance(accepted.reason.value, ConnectionDone)

    async def test_closingBelow(self) -> None:
        """
        C{loseConnection} sets C{disconnecting} on the TCP transport at once
        (while what it holds is still being sent); L{compat.closingBelow}
        reads it, through a layer's C{transport} too.
        """
        transport, client, accepted = await self.pair()
        self.assertFalse(compat.closingBelow(transport))
        self.assertFalse(compat.closingBelow(None))

        class Layer:
            """
            A transport over C{transport}, as a TLS layer is.
            """

        layer = Layer()
        layer.transport = transport  # type: ignore[attr-defined]
        self.assertFalse(compat.closingBelow(layer))
        transport.write(b"z" * (4 * transport.bufferSize))
        transport.loseConnection()
        self.assertTrue(compat.closingBelow(transport))
        self.assertTrue(compat.closingBelow(layer))
        await client.lost
        await accepted.lost

    async def test_actAsClient(self) -> None:
        """
        A transport adopted from a connected descriptor is a C{tcp.Server}
        whose C{startTLS} plays the server side (C{_tlsClientDefault}): it
        refuses client TLS options.  After L{compat.actAsClient} it starts
        TLS as a client with them: its peer receives a TLS handshake record
        (the client's hello) at once.
        """
        peers: list[Collect] = []
        port = globalReactor.listenTCP(
            0,
            Factory.forProtocol(lambda: peers.append(Collect()) or peers[-1]),
            interface="127.0.0.1",
        )
        self.addCleanup(port.stopListening)
        options = testPKI().clientOptions("localhost")
        with socket.create_connection(
            ("127.0.0.1", port.getHost().port), timeout=10
        ) as raw:
            raw.setblocking(False)
            transport = globalReactor.adoptStreamConnection(  # type: ignore[attr-defined]
                raw.fileno(), socket.AF_INET, Factory.forProtocol(Collect)
            )
        self.addCleanup(transport.abortConnection)
        self.assertIs(type(transport), tcp.Server)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.assertRaises(TypeError, transport.startTLS, options)
        compat.actAsClient(transport)
        transport.startTLS(options)
        for _ in range(200):
            if peers and peers[0].received:
                break
            await _aMoment()
        self.assertEqual(peers[0].received[:1], b"\x16")


class TLSTests(TestCase):
    """
    C{TLSMemoryBIOProtocol} under a TLS connection.
    """

    timeout = 30

    async def test_tlsLayer(self) -> None:
        """
        A TLS endpoint's protocol is connected to a C{TLSMemoryBIOProtocol}
        (so is an accepted one, through the transport's C{protocol});
        C{_handshakeDone} turns L{True} with the handshake; replacing an
        instance's C{dataReceived} routes its network reads; C{clockOf}
        finds the reactor under it.
        """
        pki = testPKI()
        accepted = Collect()
        port = await SSL4ServerEndpoint(
            globalReactor, 0, pki.serverOptions(), interface="127.0.0.1"
        ).listen(Factory.forProtocol(lambda: accepted))
        self.addCleanup(port.stopListening)
        client = Collect()
        await connectProtocol(
            wrapClientTLS(
                pki.clientOptions(),
                TCP4ClientEndpoint(globalReactor, "127.0.0.1", port.getHost().port),
            ),
            client,
        )
        layer = compat.tlsLayer(client.transport)
        self.assertIsInstance(layer, TLSMemoryBIOProtocol)
        self.assertIsInstance(compat.tlsLayer(accepted.transport), TLSMemoryBIOProtocol)
        self.assertIsNone(compat.tlsLayer(object()))
        self.assertFalse(compat.isPlainTCP(client.transport))
        self.assertIs(compat.clockOf(client.transport), globalReactor)
        seen: list[int] = []

        def around(receive: Any, data: bytes) -> None:
            seen.append(len(data))
            receive(data)

        compat.wrapTLSReceive(layer, around)
        self.addCleanup(client.transport.abortConnection)  # type: ignore[union-attr]
        await accepted.made
        accepted.transport.write(b"hello")  # type: ignore[union-attr]
        while client.received != b"hello":
            await _aMoment()
        self.assertTrue(compat.handshakeDone(layer))
        self.assertTrue(seen)
        self.assertFalse(compat.handshakeDone(object()))
        # loseConnection on the TLS layer sets its disconnecting; the TCP
        # transport under it is asked to close later (after close_notify)
        self.assertFalse(compat.closingBelow(client.transport))
        client.transport.loseConnection()  # type: ignore[union-attr]
        self.assertTrue(compat.closingBelow(client.transport))
        await client.lost


def _aMoment() -> Deferred[None]:
    """
    A Deferred that fires after a short time on the global reactor.
    """
    d: Deferred[None] = Deferred()
    globalReactor.callLater(0.01, d.callback, None)
    return d
