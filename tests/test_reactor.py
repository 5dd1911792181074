# -*- test-case-name: tests.test_reactor -*-
"""
Tests for L{tcpext.reactor.PermissionCheckingReactor}, in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import (
    DNSLookupError,
    ServiceNameUnknownError,
    TimeoutError,
    UserError,
)
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IHostnameResolver,
    IHostResolution,
    IProtocolNegotiationFactory,
    IReactorCore,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorTime,
    IResolutionReceiver,
    IResolverSimple,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.tcp import makeBinding
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import Interface, alsoProvides, implementer
from zope.interface.verify import verifyObject

from tcpext import _policy
from tcpext import reactor as reactorModule
from tcpext._resolution import DENIED_HOST_TEXT
from tcpext.permissions import PermissionDenied, PermissionSet
from tcpext.reactor import KNOWN_INTERFACES, PermissionCheckingReactor

NAME_ANSWERS = [
    "127.0.0.1",
    "10.0.0.1",
    "169.254.169.254",
    "::1",
    "::ffff:7f00:1",
    "93.184.216.34",
]
"""
What the fake resolver answers for C{mixed.example}: one public address
among loopback, private, link-local (metadata), IPv6 loopback and an
IPv4-mapped loopback.
"""


@implementer(IHostResolution)
class _FakeResolution:
    """
    A resolution in progress in L{FakeResolver}.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


@implementer(IHostnameResolver)
class FakeResolver:
    """
    A name resolver answering from a mapping, synchronously or (with
    C{pending=True}) when the test calls L{answer}.

    @ivar asked: The names it was asked for, in order.
    """

    def __init__(self, names: dict[str, list[str]], pending: bool = False) -> None:
        self.names = names
        self.pending = pending
        self.asked: list[str] = []
        self.waiting: list[tuple[IResolutionReceiver, str, int]] = []
        self.resolutions: list[_FakeResolution] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        self.asked.append(hostName)
        resolution = _FakeResolution(hostName)
        self.resolutions.append(resolution)
        resolutionReceiver.resolutionBegan(resolution)
        if self.pending:
            self.waiting.append((resolutionReceiver, hostName, portNumber))
        else:
            self._deliver(resolutionReceiver, hostName, portNumber, addressTypes)
        return resolution

    def _deliver(
        self,
        receiver: IResolutionReceiver,
        name: str,
        port: int,
        addressTypes: Sequence[type[IAddress]] | None = None,
    ) -> None:
        for text in self.names.get(name, []):
            kind = IPv6Address if ":" in text else IPv4Address
            if addressTypes is None or kind in addressTypes:
                receiver.addressResolved(kind("TCP", text, port))
        receiver.resolutionComplete()

    def answer(self) -> None:
        """
        Deliver the answers of every pending resolution.
        """
        waiting, self.waiting = self.waiting, []
        for receiver, name, port in waiting:
            self._deliver(receiver, name, port)


@implementer(IResolutionReceiver)
class Receiver:
    """
    Collects what a resolver reports.
    """

    def __init__(self) -> None:
        self.began: list[IHostResolution] = []
        self.addresses: list[IAddress] = []
        self.complete = False

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        self.began.append(resolutionInProgress)

    def addressResolved(self, address: IAddress) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        self.complete = True

    def hosts(self) -> list[str]:
        """
        The hosts of the reported addresses.
        """
        return [a.host for a in self.addresses]  # type: ignore[attr-defined]


class RecordingFactory(ClientFactory):
    """
    A client factory that records what its connectors report.
    """

    protocol = Protocol

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.started = 0
        self.stopped = 0

    def doStart(self) -> None:
        self.started += 1

    def doStop(self) -> None:
        self.stopped += 1

    def startedConnecting(self, connector: IConnector) -> None:
        self.events.append(("started", connector))

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.events.append(("failed", connector, reason))  # type: ignore[arg-type]

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        self.events.append(("lost", connector, reason))  # type: ignore[arg-type]

    def kinds(self) -> list[str]:
        """
        The kinds of the recorded events.
        """
        return [e[0] for e in self.events]


def refused(
    test: SynchronousTestCase,
    memory: MemoryReactorClock,
    connect: Callable[[RecordingFactory], IConnector],
) -> PermissionDenied:
    """
    Assert that C{connect}, given a fresh L{RecordingFactory}, is refused the
    way Twisted reports a refused connection: a connector is returned, the
    factory is started and told C{startedConnecting} at once, then (on the
    next reactor turn, not before) C{clientConnectionFailed} with a
    L{PermissionDenied} failure, then stopped; nothing reaches the wrapped
    reactor.

    @return: The L{PermissionDenied}.
    """
    before = (len(memory.tcpClients), len(memory.sslClients))
    factory = RecordingFactory()
    connector = connect(factory)
    test.assertTrue(IConnector.providedBy(connector))
    test.assertEqual(factory.kinds(), ["started"])
    test.assertIs(factory.events[0][1], connector)
    memory.advance(0)
    test.assertEqual(factory.kinds(), ["started", "failed"])
    test.assertIs(factory.events[1][1], connector)
    test.assertEqual((factory.started, factory.stopped), (1, 1))
    test.assertEqual(connector.state, "disconnected")  # type: ignore[attr-defined]
    test.assertEqual((len(memory.tcpClients), len(memory.sslClients)), before)
    error = factory.events[1][2].trap(PermissionDenied) and factory.events[1][2].value
    test.assertIsInstance(error, PermissionDenied)
    return error  # type: ignore[no-any-return]


def build(
    grants: Sequence[str] = (),
    names: dict[str, list[str]] | None = None,
    pending: bool = False,
) -> tuple[PermissionCheckingReactor, MemoryReactorClock, PermissionSet, FakeResolver]:
    """
    A wrapper over a L{MemoryReactorClock} whose trusted resolver is a
    L{FakeResolver} (by default answering L{NAME_ANSWERS} for
    C{mixed.example}).
    """
    memory = MemoryReactorClock()
    resolver = FakeResolver(
        names if names is not None else {"mixed.example": NAME_ANSWERS},
        pending=pending,
    )
    memory.installNameResolver(resolver)
    permissions = PermissionSet(grants)
    return PermissionCheckingReactor(memory, permissions), memory, permissions, resolver


class InterfaceTests(SynchronousTestCase):
    """
    The wrapper declares, per instance, the known reactor interfaces the
    wrapped reactor provides, and really provides them.
    """

    def test_memoryReactor(self) -> None:
        """
        Over a L{MemoryReactorClock}, the wrapper provides exactly the known
        interfaces it provides, each verified with C{verifyObject}.
        """
        memory = MemoryReactorClock()
        wrapper = PermissionCheckingReactor(memory, PermissionSet())
        expected = [i for i in KNOWN_INTERFACES if i.providedBy(memory)]
        self.assertIn(IReactorTCP, expected)
        self.assertIn(IReactorPluggableNameResolver, expected)
        for interface in KNOWN_INTERFACES:
            self.assertEqual(
                interface.providedBy(wrapper),
                interface in expected,
                interface.__name__,
            )
        for interface in expected:
            self.assertTrue(verifyObject(interface, wrapper), interface.__name__)

    def test_everyKnownInterface(self) -> None:
        """
        Over a reactor that provides every known interface, the wrapper
        provides and implements every one.
        """
        memory = MemoryReactorClock()
        alsoProvides(memory, *KNOWN_INTERFACES)
        wrapper = PermissionCheckingReactor(memory, PermissionSet())
        for interface in KNOWN_INTERFACES:
            self.assertTrue(interface.providedBy(wrapper), interface.__name__)
            self.assertTrue(verifyObject(interface, wrapper), interface.__name__)

    def test_onlyWhatTheWrappedProvides(self) -> None:
        """
        The wrapper does not claim interfaces the wrapped reactor lacks.
        """
        from twisted.internet.task import Clock

        wrapper = PermissionCheckingReactor(Clock(), PermissionSet())
        self.assertTrue(IReactorTime.providedBy(wrapper))
        self.assertFalse(IReactorTCP.providedBy(wrapper))
        self.assertFalse(IReactorCore.providedBy(wrapper))

    def test_unknownInterfaceNotDeclared(self) -> None:
        """
        An interface outside the known list is not declared: nothing of it
        is forwarded.
        """

        class IUnknown(Interface):
            def secret() -> None:
                """
                Something the wrapper does not know.
                """

        memory = MemoryReactorClock()
        alsoProvides(memory, IUnknown)
        wrapper = PermissionCheckingReactor(memory, PermissionSet())
        self.assertFalse(IUnknown.providedBy(wrapper))

    def test_permissionsType(self) -> None:
        """
        The grants must be a L{PermissionSet}.
        """
        self.assertRaises(
            TypeError,
            PermissionCheckingReactor,
            MemoryReactorClock(),
            ["tcp-connect:*:*"],
        )


class ForwardingTests(SynchronousTestCase):
    """
    What is forwarded reaches the wrapped reactor.
    """

    def test_time(self) -> None:
        """
        C{seconds} and C{callLater} are the wrapped reactor's.
        """
        wrapper, memory, _, _ = build()
        calls: list[int] = []
        wrapper.callLater(2, calls.append, 1)
        memory.advance(1)
        self.assertEqual((calls, wrapper.seconds()), ([], 1.0))
        memory.advance(1)
        self.assertEqual(calls, [1])

    def test_delayedCallsScoped(self) -> None:
        """
        C{getDelayedCalls} lists only calls scheduled through the wrapper.
        """
        wrapper, memory, _, _ = build()
        mine = wrapper.callLater(5, lambda: None)
        memory.callLater(5, lambda: None)
        self.assertEqual(list(wrapper.getDelayedCalls()), [mine])
        mine.cancel()
        self.assertEqual(list(wrapper.getDelayedCalls()), [])

    def test_core(self) -> None:
        """
        C{run}, C{stop}, C{crash}, C{running}, C{callWhenRunning} and the
        system event triggers are the wrapped reactor's.
        """
        wrapper, memory, _, _ = build()
        ran: list[bool] = []
        wrapper.callWhenRunning(ran.append, True)
        wrapper.addSystemEventTrigger("before", "shutdown", ran.append, False)
        self.assertIn("shutdown", memory.triggers["before"])
        removed: list[object] = []
        memory.removeSystemEventTrigger = removed.append  # type: ignore[method-assign]
        wrapper.removeSystemEventTrigger("some id")
        self.assertEqual(removed, ["some id"])
        wrapper.run()
        self.assertTrue(memory.hasRun)
        self.assertEqual(ran, [True])
        memory.running = True
        self.assertTrue(wrapper.running)
        wrapper.stop()
        self.assertTrue(memory.hasStopped)
        memory.running = False
        self.assertFalse(wrapper.running)
        wrapper.crash()
        self.assertTrue(memory.hasCrashed)

    def test_fdSet(self) -> None:
        """
        Readers and writers are added to and removed from the wrapped
        reactor; C{getReaders}, C{getWriters} and C{removeAll} see only this
        wrapper's.
        """
        wrapper, memory, _, _ = build()
        mine, theirs = object(), object()
        wrapper.addReader(mine)
        wrapper.addWriter(mine)
        memory.addReader(theirs)
        self.assertIn(mine, memory.getReaders())
        self.assertEqual(wrapper.getReaders(), [mine])
        self.assertEqual(wrapper.getWriters(), [mine])
        self.assertEqual(wrapper.removeAll(), [mine])
        self.assertEqual(memory.getReaders(), [theirs])
        wrapper.addReader(mine)
        wrapper.removeReader(mine)
        self.assertEqual(memory.getReaders(), [theirs])

    def test_callFromThread(self) -> None:
        """
        C{callFromThread} is forwarded (it runs code in the reactor thread).
        """
        memory = MemoryReactorClock()
        seen: list[tuple[Any, ...]] = []
        memory.callFromThread = lambda f, *a, **k: seen.append((f, a, k))  # type: ignore[attr-defined]
        wrapper = PermissionCheckingReactor(memory, PermissionSet())
        wrapper.callFromThread(print, 1, sep="")
        self.assertEqual(seen, [(print, (1,), {"sep": ""})])


REFUSED = [
    ("spawnProcess", (Protocol(), "/bin/sh", ["sh"])),
    ("connectUNIX", ("/tmp/socket", ClientFactory())),
    ("listenUNIX", ("/tmp/socket", Factory())),
    ("connectUNIXDatagram", ("/tmp/socket", Protocol())),
    ("listenUNIXDatagram", ("/tmp/socket", Protocol())),
    ("listenUDP", (0, Protocol())),
    ("listenMulticast", (0, Protocol())),
    ("adoptStreamPort", (3, 2, Factory())),
    ("adoptStreamConnection", (3, 2, Factory())),
    ("adoptDatagramPort", (3, 2, Protocol())),
    ("callInThread", (print,)),
    ("getThreadPool", ()),
    ("suggestThreadPoolSize", (4,)),
    ("listenWith", (object,)),
    ("connectWith", (object,)),
    ("beforeDaemonize", ()),
    ("afterDaemonize", ()),
    ("addEvent", (None, None, "x")),
    ("removeEvent", (None,)),
]


class RefusalTests(SynchronousTestCase):
    """
    What would escape the grants is refused with L{PermissionDenied}, even
    with every TCP grant.
    """

    def test_refused(self) -> None:
        """
        Each refused method raises L{PermissionDenied} naming itself, and
        the wrapped reactor is not called.
        """
        memory = MemoryReactorClock()
        wrapper = PermissionCheckingReactor(
            memory, PermissionSet(["tcp-connect:*:*", "tcp-listen:*"])
        )
        for name, args in REFUSED:
            error = self.assertRaises(PermissionDenied, getattr(wrapper, name), *args)
            self.assertIn("permission denied", str(error))
            self.assertIn(name, str(error))
        self.assertEqual(memory.unixClients, [])
        self.assertEqual(memory.unixServers, [])
        self.assertEqual(memory.adoptedPorts, [])

    def test_noFallThrough(self) -> None:
        """
        Nothing outside the forwarded list reaches the wrapped reactor: its
        other attributes do not exist on the wrapper.
        """
        wrapper, _, _, _ = build()
        for name in ["tcpClients", "advance", "triggers", "_reactor", "reactor"]:
            self.assertFalse(hasattr(wrapper, name), name)


class _ThreadingReactor(MemoryReactorClock):
    """
    A memory reactor with the thread methods, recording their calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.threadCalls: list[tuple[str, tuple[object, ...]]] = []
        self.pool = object()

    def callInThread(self, callable: Any, *args: object, **kwargs: object) -> None:
        self.threadCalls.append(("callInThread", (callable, *args)))

    def getThreadPool(self) -> object:
        self.threadCalls.append(("getThreadPool", ()))
        return self.pool

    def suggestThreadPoolSize(self, size: int) -> None:
        self.threadCalls.append(("suggestThreadPoolSize", (size,)))


class ThreadTests(SynchronousTestCase):
    """
    The thread methods are refused unless the wrapper was made with
    C{allowThreads=True} (an isolated extension's process, which the kernel
    confines as a whole).
    """

    def test_refusedPointsAtIsolation(self) -> None:
        """
        By default each thread method raises L{PermissionDenied} whose
        message says why and points at C{--isolation process}; the wrapped
        reactor's threads are not touched.
        """
        memory = _ThreadingReactor()
        wrapper = PermissionCheckingReactor(memory, PermissionSet(["tcp-listen:*"]))
        for name, args in [
            ("callInThread", (print,)),
            ("getThreadPool", ()),
            ("suggestThreadPoolSize", (4,)),
        ]:
            error = self.assertRaises(PermissionDenied, getattr(wrapper, name), *args)
            self.assertIn(name, str(error))
            self.assertIn("--isolation process", str(error))
        self.assertEqual(memory.threadCalls, [])

    def test_allowed(self) -> None:
        """
        With C{allowThreads=True} the thread methods reach the wrapped
        reactor.
        """
        memory = _ThreadingReactor()
        wrapper = PermissionCheckingReactor(memory, PermissionSet(), allowThreads=True)
        wrapper.callInThread(print, "x")
        self.assertIs(wrapper.getThreadPool(), memory.pool)
        wrapper.suggestThreadPoolSize(3)
        self.assertEqual(
            memory.threadCalls,
            [
                ("callInThread", (print, "x")),
                ("getThreadPool", ()),
                ("suggestThreadPoolSize", (3,)),
            ],
        )


class ConfinementTests(SynchronousTestCase):
    """
    Writes stay on the wrapper and it hands out no route to the wrapped
    reactor through its public attributes.
    """

    def test_attributeWrites(self) -> None:
        """
        Attributes set on the wrapper are not set on the wrapped reactor.
        """
        wrapper, memory, _, _ = build()
        wrapper.connectTCP = lambda *a: None  # type: ignore[method-assign]
        wrapper.somethingNew = 1  # type: ignore[attr-defined]
        self.assertFalse(hasattr(memory, "somethingNew"))
        self.assertNotIsInstance(memory.connectTCP, type(lambda: None))

    def test_noPublicRoute(self) -> None:
        """
        No public attribute of the wrapper, or of its resolvers, is the
        wrapped reactor or the grants (which the extension must not change).
        """
        wrapper, memory, permissions, _ = build()
        for owner in [wrapper, wrapper.nameResolver, wrapper.resolver]:
            for name in dir(owner):
                if name.startswith("_"):
                    continue
                self.assertIsNot(getattr(owner, name), memory, name)
                self.assertIsNot(getattr(owner, name), permissions, name)
        self.assertNotIn("MemoryReactor", repr(wrapper))


class ConnectTests(SynchronousTestCase):
    """
    C{connectTCP} and C{connectSSL} check C{tcp-connect} grants.
    """

    def test_allowedAddress(self) -> None:
        """
        An address an IP grant covers is dialed as given; the factory's
        events carry the connector C{connectTCP} returned.
        """
        wrapper, memory, _, _ = build(["tcp-connect:127.0.0.1:8080"])
        factory = RecordingFactory()
        connector = wrapper.connectTCP("127.0.0.1", 8080, factory, timeout=7)
        self.assertTrue(verifyObject(IConnector, connector))
        [(host, port, inner, timeout, bind)] = memory.tcpClients
        self.assertEqual((host, port, bind), ("127.0.0.1", 8080, None))
        self.assertEqual(factory.events, [("started", connector)])
        self.assertEqual(factory.started, 1)
        protocol = inner.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8080))
        self.assertIsInstance(protocol, Protocol)
        self.assertEqual(connector.state, "connected")  # type: ignore[attr-defined]
        inner.clientConnectionLost(None, Failure(Exception("bye")))
        self.assertEqual(factory.kinds(), ["started", "lost"])
        self.assertIs(factory.events[1][1], connector)
        self.assertEqual(factory.stopped, 1)
        self.assertEqual(
            connector.getDestination(), IPv4Address("TCP", "127.0.0.1", 8080)
        )

    def test_deniedAddress(self) -> None:
        """
        An address no grant covers fails the connection with
        L{PermissionDenied}, as a refused connection fails (see L{refused});
        nothing is dialed.
        """
        wrapper, memory, _, _ = build(["tcp-connect:127.0.0.1:8080"])
        error = refused(
            self, memory, lambda f: wrapper.connectTCP("127.0.0.2", 8080, f)
        )
        self.assertIn("127.0.0.2:8080", str(error))
        self.assertEqual(memory.tcpClients, [])

    def test_deniedPort(self) -> None:
        """
        A port the grant does not cover is refused.
        """
        wrapper, memory, _, _ = build(["tcp-connect:127.0.0.1:8080"])
        refused(self, memory, lambda f: wrapper.connectTCP("127.0.0.1", 8081, f))
        self.assertEqual(memory.tcpClients, [])

    def test_numericAliases(self) -> None:
        """
        Non-canonical numeric hosts are refused, never looked up, even with
        a C{*} grant.
        """
        wrapper, memory, _, resolver = build(["tcp-connect:*:*"])
        for alias in ["2130706433", "0x7f000001", "0177.0.0.1", "127.1"]:
            error = refused(
                self, memory, lambda f, alias=alias: wrapper.connectTCP(alias, 80, f)
            )
            self.assertIn(alias, str(error))
        self.assertEqual((memory.tcpClients, resolver.asked), ([], []))

    def test_mappedAddress(self) -> None:
        """
        An IPv4-mapped IPv6 address is its IPv4 address.
        """
        wrapper, memory, _, _ = build(["tcp-connect:127.0.0.1:80"])
        wrapper.connectTCP("::ffff:127.0.0.1", 80, RecordingFactory())
        self.assertEqual(memory.tcpClients[0][0], "127.0.0.1")

    def test_nameAgainstIPGrant(self) -> None:
        """
        A name never matches an IP grant, even one it resolves to.
        """
        wrapper, memory, _, resolver = build(["tcp-connect:93.184.216.34:443"])
        refused(self, memory, lambda f: wrapper.connectTCP("mixed.example", 443, f))
        self.assertEqual((memory.tcpClients, resolver.asked), ([], []))

    def test_nameResolvedOnce(self) -> None:
        """
        A granted name is resolved through the checked resolver and only a
        checked (public) address reaches the wrapped reactor: never the
        name, never a non-public answer.
        """
        wrapper, memory, _, resolver = build(["tcp-connect:mixed.example:443"])
        factory = RecordingFactory()
        connector = wrapper.connectTCP("mixed.example", 443, factory)
        self.assertEqual([c[0] for c in memory.tcpClients], ["93.184.216.34"])
        self.assertEqual(resolver.asked, ["mixed.example"])
        self.assertEqual(factory.kinds(), ["started"])
        self.assertEqual(connector.getDestination().host, "mixed.example")  # type: ignore[attr-defined]

    def test_nameOnlyNonPublic(self) -> None:
        """
        A granted name that resolves only to non-public addresses fails the
        connection with L{PermissionDenied} (after C{startedConnecting}).
        """
        wrapper, memory, _, _ = build(
            ["tcp-connect:inside.example:80"],
            names={"inside.example": ["127.0.0.1", "10.0.0.1"]},
        )
        factory = RecordingFactory()
        wrapper.connectTCP("inside.example", 80, factory)
        memory.advance(0)
        self.assertEqual(factory.kinds(), ["started", "failed"])
        reason = factory.events[1][2]
        reason.trap(PermissionDenied)
        self.assertIn("10.0.0.1", str(reason.value))
        self.assertEqual((memory.tcpClients, factory.stopped), ([], 1))

    def test_nameWithIPGrant(self) -> None:
        """
        A private answer is dialed when an IP grant covers it.
        """
        wrapper, memory, _, _ = build(
            ["tcp-connect:inside.example:80", "tcp-connect:10.0.0.0/8:80"],
            names={"inside.example": ["127.0.0.1", "10.0.0.1"]},
        )
        wrapper.connectTCP("inside.example", 80, RecordingFactory())
        self.assertEqual([c[0] for c in memory.tcpClients], ["10.0.0.1"])

    def test_unknownName(self) -> None:
        """
        A name without addresses fails with L{DNSLookupError}.
        """
        wrapper, memory, _, _ = build(["tcp-connect:*.example:80"], names={})
        factory = RecordingFactory()
        wrapper.connectTCP("nowhere.example", 80, factory)
        memory.advance(0)
        factory.events[1][2].trap(DNSLookupError)

    def test_asynchronousLookup(self) -> None:
        """
        While the lookup is pending the connector is connecting; the checked
        address is dialed once it answers.
        """
        wrapper, memory, _, resolver = build(
            ["tcp-connect:mixed.example:443"], pending=True
        )
        factory = RecordingFactory()
        connector = wrapper.connectTCP("mixed.example", 443, factory)
        self.assertEqual(connector.state, "connecting")  # type: ignore[attr-defined]
        self.assertEqual(memory.tcpClients, [])
        resolver.answer()
        self.assertEqual([c[0] for c in memory.tcpClients], ["93.184.216.34"])
        self.assertEqual(factory.kinds(), ["started"])

    def test_lookupTimeout(self) -> None:
        """
        A lookup slower than the connection timeout fails it with
        L{TimeoutError}; a late answer is ignored.
        """
        wrapper, memory, _, resolver = build(
            ["tcp-connect:mixed.example:443"], pending=True
        )
        factory = RecordingFactory()
        wrapper.connectTCP("mixed.example", 443, factory, timeout=5)
        memory.advance(5)
        self.assertEqual(factory.kinds(), ["started", "failed"])
        factory.events[1][2].trap(TimeoutError)
        resolver.answer()
        self.assertEqual(memory.tcpClients, [])

    def test_stopConnectingDuringLookup(self) -> None:
        """
        C{stopConnecting} during the lookup fails the attempt with
        L{UserError} and stops the factory.
        """
        wrapper, memory, _, resolver = build(
            ["tcp-connect:mixed.example:443"], pending=True
        )
        factory = RecordingFactory()
        connector = wrapper.connectTCP("mixed.example", 443, factory)
        connector.stopConnecting()
        factory.events[1][2].trap(UserError)
        self.assertEqual(factory.stopped, 1)
        resolver.answer()
        self.assertEqual(memory.tcpClients, [])

    def test_reconnectChecksAgain(self) -> None:
        """
        C{connect()} again after the grant was removed does not raise: the
        attempt fails with L{PermissionDenied} on the next reactor turn (so a
        C{ReconnectingClientFactory} hears of it); once granted again it
        dials.
        """
        wrapper, memory, permissions, _ = build(["tcp-connect:127.0.0.1:80"])
        factory = RecordingFactory()
        connector = wrapper.connectTCP("127.0.0.1", 80, factory)
        memory.tcpClients[0][2].clientConnectionFailed(None, Failure(Exception()))
        permissions.discard("tcp-connect:127.0.0.1:80")
        self.assertIsNone(connector.connect())
        self.assertEqual(factory.kinds(), ["started", "failed", "started"])
        memory.advance(0)
        self.assertEqual(factory.kinds(), ["started", "failed", "started", "failed"])
        factory.events[3][2].trap(PermissionDenied)
        self.assertEqual((factory.started, factory.stopped), (2, 2))
        self.assertEqual(len(memory.tcpClients), 1)
        permissions.add("tcp-connect:127.0.0.1:80")
        connector.connect()
        self.assertEqual(len(memory.tcpClients), 2)

    def test_connectSSL(self) -> None:
        """
        C{connectSSL} is checked the same way and passes the context
        factory on.
        """
        wrapper, memory, _, _ = build(["tcp-connect:mixed.example:443"])
        context = object()
        refused(
            self, memory, lambda f: wrapper.connectSSL("127.0.0.1", 443, f, context)
        )
        wrapper.connectSSL("mixed.example", 443, RecordingFactory(), context)
        [client] = memory.sslClients
        self.assertEqual(client[0], "93.184.216.34")
        self.assertIs(client[3], context)

    def test_servicePort(self) -> None:
        """
        A service name is a port (as in Twisted); an unknown one raises
        L{ServiceNameUnknownError}.
        """
        wrapper, memory, _, _ = build(["tcp-connect:127.0.0.1:80"])
        wrapper.connectTCP("127.0.0.1", "http", RecordingFactory())  # type: ignore[arg-type]
        self.assertEqual(memory.tcpClients[0][1], 80)
        self.assertRaises(
            ServiceNameUnknownError,
            wrapper.connectTCP,
            "127.0.0.1",
            "invalid-port",
            RecordingFactory(),
        )

    def test_badPort(self) -> None:
        """
        A port that is not an int in 1..65535 is a clear error.
        """
        wrapper, _, _, _ = build(["tcp-connect:*:*"])
        self.assertRaises(
            ValueError, wrapper.connectTCP, "127.0.0.1", 0, ClientFactory()
        )
        self.assertRaises(
            TypeError, wrapper.connectTCP, "127.0.0.1", 1.5, ClientFactory()
        )
        self.assertRaises(
            TypeError, wrapper.connectTCP, b"127.0.0.1", 1, ClientFactory()
        )


class ListenTests(SynchronousTestCase):
    """
    C{listenTCP} and C{listenSSL} check C{tcp-listen} grants.
    """

    def test_allowedPort(self) -> None:
        """
        A granted port is forwarded; the port's factory builds the
        extension's protocols.
        """
        wrapper, memory, _, _ = build(["tcp-listen:8080"])
        factory = Factory.forProtocol(Protocol)
        port = wrapper.listenTCP(8080, factory)
        [(number, tracking, backlog, interface)] = memory.tcpServers
        self.assertEqual((number, interface), (8080, ""))
        self.assertEqual(port.getHost().port, 8080)
        self.assertIsInstance(tracking.buildProtocol(None), Protocol)

    def test_deniedPort(self) -> None:
        """
        A port no grant covers raises L{PermissionDenied}.
        """
        wrapper, memory, _, _ = build(["tcp-listen:8080"])
        self.assertRaises(PermissionDenied, wrapper.listenTCP, 8081, Factory())
        self.assertEqual(memory.tcpServers, [])

    def test_automaticPort(self) -> None:
        """
        Port 0 needs C{tcp-listen:*}.
        """
        wrapper, memory, permissions, _ = build(["tcp-listen:1-1024"])
        self.assertRaises(PermissionDenied, wrapper.listenTCP, 0, Factory())
        permissions.add("tcp-listen:*")
        wrapper.listenTCP(0, Factory())
        self.assertEqual(len(memory.tcpServers), 1)

    def test_interface(self) -> None:
        """
        An interface grant covers that interface only; a non-canonical or
        named interface is refused.
        """
        wrapper, memory, _, _ = build(["tcp-listen:127.0.0.1:8080"])
        self.assertRaises(PermissionDenied, wrapper.listenTCP, 8080, Factory())
        self.assertRaises(
            PermissionDenied, wrapper.listenTCP, 8080, Factory(), interface="127.1"
        )
        self.assertRaises(
            PermissionDenied,
            wrapper.listenTCP,
            8080,
            Factory(),
            interface="localhost",
        )
        wrapper.listenTCP(8080, Factory(), interface="127.0.0.1")
        self.assertEqual(memory.tcpServers[0][3], "127.0.0.1")

    def test_binding(self) -> None:
        """
        A binding's address and port are what is checked.
        """
        wrapper, memory, _, _ = build(["tcp-listen:127.0.0.1:8080"])
        self.assertRaises(
            PermissionDenied, wrapper.listenTCP, makeBinding("", 8080), Factory()
        )
        wrapper.listenTCP(makeBinding("127.0.0.1", 8080), Factory())
        self.assertEqual(len(memory.tcpServers), 1)

    def test_listenSSL(self) -> None:
        """
        C{listenSSL} is checked the same way.
        """
        wrapper, memory, _, _ = build(["tcp-listen:8443"])
        context = object()
        self.assertRaises(PermissionDenied, wrapper.listenSSL, 443, Factory(), context)
        wrapper.listenSSL(8443, Factory(), context)
        self.assertIs(memory.sslServers[0][2], context)

    def test_protocolNegotiation(self) -> None:
        """
        The factory the wrapped port gets provides
        L{IProtocolNegotiationFactory}, with the extension's factory's
        protocols, when the extension's factory does (as twisted.web's
        C{Site}); Twisted's ALPN selection looks for it there, and without
        it fails the handshake of every client that offers ALPN.  A factory
        without protocols to offer stays without.
        """
        wrapper, memory, _, _ = build(["tcp-listen:8443-8444"])
        site = Site(Resource())
        wrapper.listenSSL(8443, site, object())
        wrapper.listenSSL(8444, Factory(), object())
        [negotiating, plain] = [server[1] for server in memory.sslServers]
        self.assertTrue(IProtocolNegotiationFactory.providedBy(negotiating))
        self.assertEqual(negotiating.acceptableProtocols(), site.acceptableProtocols())
        self.assertFalse(IProtocolNegotiationFactory.providedBy(plain))


class ResolverTests(SynchronousTestCase):
    """
    The checked C{nameResolver} and C{resolve()}.
    """

    def resolve(
        self, wrapper: PermissionCheckingReactor, name: str, port: int = 443
    ) -> Receiver:
        receiver = Receiver()
        wrapper.nameResolver.resolveHostName(receiver, name, port)
        self.assertTrue(receiver.complete)
        self.assertEqual(len(receiver.began), 1)
        return receiver

    def test_rebindingFilter(self) -> None:
        """
        Of loopback, private, link-local, IPv6 loopback, IPv4-mapped
        loopback and a public answer, a name grant passes only the public
        one.
        """
        wrapper, _, _, _ = build(["tcp-connect:mixed.example:443"])
        self.assertEqual(
            self.resolve(wrapper, "mixed.example").hosts(), ["93.184.216.34"]
        )

    def test_rebindingWithIPGrant(self) -> None:
        """
        An IP/CIDR grant lets its non-public addresses through too.
        """
        wrapper, _, _, _ = build(
            ["tcp-connect:mixed.example:443", "tcp-connect:10.0.0.0/8:443"]
        )
        self.assertEqual(
            self.resolve(wrapper, "mixed.example").hosts(),
            ["10.0.0.1", "93.184.216.34"],
        )

    def test_rebindingAnyHost(self) -> None:
        """
        A C{*} host grant lets every answer through.
        """
        wrapper, _, _, _ = build(["tcp-connect:*:443"])
        self.assertEqual(self.resolve(wrapper, "mixed.example").hosts(), NAME_ANSWERS)

    def test_onlyNonPublic(self) -> None:
        """
        When every answer is refused, the receiver gets one placeholder
        address, and connecting to it fails with L{PermissionDenied} with the
        reason.
        """
        wrapper, memory, _, _ = build(
            ["tcp-connect:inside.example:443"],
            names={"inside.example": ["127.0.0.1", "169.254.169.254"]},
        )
        receiver = self.resolve(wrapper, "inside.example")
        [address] = receiver.addresses
        self.assertIsInstance(address, IPv4Address)
        self.assertEqual(address.host, DENIED_HOST_TEXT)  # type: ignore[attr-defined]
        error = refused(
            self,
            memory,
            lambda f: wrapper.connectTCP(address.host, 443, f),  # type: ignore[attr-defined]
        )
        self.assertIn("169.254.169.254", str(error))
        self.assertEqual(memory.tcpClients, [])

    def test_nameNotGranted(self) -> None:
        """
        A name no grant covers is not even looked up.
        """
        wrapper, _, _, resolver = build(["tcp-connect:other.example:443"])
        receiver = self.resolve(wrapper, "mixed.example")
        self.assertEqual(receiver.hosts(), [DENIED_HOST_TEXT])
        self.assertEqual(resolver.asked, [])

    def test_portNotGranted(self) -> None:
        """
        A name granted on another port is refused for this one.
        """
        wrapper, _, _, resolver = build(["tcp-connect:mixed.example:80"])
        receiver = self.resolve(wrapper, "mixed.example", 443)
        self.assertEqual(receiver.hosts(), [DENIED_HOST_TEXT])
        self.assertEqual(resolver.asked, [])

    def test_localhost(self) -> None:
        """
        C{localhost} is loopback without asking the resolver.
        """
        wrapper, _, _, resolver = build(["tcp-connect:localhost:8080"])
        receiver = self.resolve(wrapper, "localhost", 8080)
        self.assertEqual(receiver.hosts(), ["127.0.0.1", "::1"])
        self.assertEqual(resolver.asked, [])

    def test_rememberedAddress(self) -> None:
        """
        An address the checked resolver handed out for a name may then be
        dialed on a port the name grant covers; not before, not on another
        port, not after the grant is removed or the memory expired.
        """
        wrapper, memory, permissions, _ = build(["tcp-connect:mixed.example:443"])
        remembered = ("93.184.216.34", 443)

        def assertRefused(*addresses: tuple[str, int]) -> None:
            for host, port in addresses:
                refused(
                    self,
                    memory,
                    lambda f, h=host, p=port: wrapper.connectTCP(h, p, f),
                )

        assertRefused(remembered)
        self.resolve(wrapper, "mixed.example")
        wrapper.connectTCP(*remembered, RecordingFactory())
        self.assertEqual(len(memory.tcpClients), 1)
        assertRefused(("93.184.216.34", 80), ("127.0.0.1", 443))
        permissions.discard("tcp-connect:mixed.example:443")
        assertRefused(remembered)
        permissions.add("tcp-connect:mixed.example:443")
        wrapper.connectTCP(*remembered, RecordingFactory())
        self.assertEqual(len(memory.tcpClients), 2)
        memory.advance(_policy.REMEMBER_SECONDS + 1)
        assertRefused(remembered)

    def test_resolverRefusal(self) -> None:
        """
        A refusal the trusted resolver reports itself (the isolated host's,
        as a placeholder address) reaches C{connectTCP}'s factory with its
        own message, not as an address that is refused for being a name.
        """
        from tcpext._resolution import DeniedHost

        refusal = "permission denied: connect to far.example:443: the host said no"
        wrapper, memory, _, resolver = build(["tcp-connect:far.example:443"], names={})

        @implementer(IHostnameResolver)
        class Refusing:
            def resolveHostName(
                self, receiver: Any, name: str, portNumber: int = 0, **kw: Any
            ) -> Any:
                receiver.resolutionBegan(None)
                receiver.addressResolved(
                    IPv4Address("TCP", DeniedHost(refusal), portNumber)
                )
                receiver.resolutionComplete()

        memory.installNameResolver(Refusing())
        error = refused(
            self, memory, lambda f: wrapper.connectTCP("far.example", 443, f)
        )
        self.assertEqual(str(error), refusal)

    def test_ipLiteral(self) -> None:
        """
        An IP literal resolves to itself (canonical); an alias is refused.
        """
        wrapper, _, _, resolver = build()
        self.assertEqual(
            self.resolve(wrapper, "::ffff:127.0.0.1").hosts(), ["127.0.0.1"]
        )
        self.assertEqual(self.resolve(wrapper, "127.1").hosts(), [DENIED_HOST_TEXT])
        self.assertEqual(resolver.asked, [])

    def test_installNameResolverConfined(self) -> None:
        """
        C{installNameResolver} changes the wrapper's resolver only; the
        installed resolver's answers are checked and need an IP grant to be
        dialed; installing the previous resolver restores it.
        """
        wrapper, memory, _, trusted = build(["tcp-connect:mixed.example:443"])
        own = FakeResolver({"mixed.example": ["93.184.216.35"]})
        previous = wrapper.installNameResolver(own)
        self.assertIs(memory.nameResolver, trusted)
        self.assertEqual(
            self.resolve(wrapper, "mixed.example").hosts(), ["93.184.216.35"]
        )
        refused(self, memory, lambda f: wrapper.connectTCP("93.184.216.35", 443, f))
        factory = RecordingFactory()
        wrapper.connectTCP("mixed.example", 443, factory)
        memory.advance(0)
        factory.events[1][2].trap(PermissionDenied)
        wrapper.installNameResolver(previous)
        self.assertIs(wrapper.nameResolver, previous)
        wrapper.connectTCP("mixed.example", 443, RecordingFactory())
        self.assertEqual([c[0] for c in memory.tcpClients], ["93.184.216.34"])

    def test_installResolverConfined(self) -> None:
        """
        C{installResolver} (old style) is confined the same way.
        """

        @implementer(IResolverSimple)
        class Simple:
            def getHostByName(
                self, name: str, timeout: Sequence[int] = ()
            ) -> Deferred[str]:
                return succeed("93.184.216.36")

        wrapper, memory, _, trusted = build(["tcp-connect:*.example:443"])
        previous = wrapper.installResolver(Simple())
        self.assertIs(memory.nameResolver, trusted)
        self.assertEqual(
            self.successResultOf(wrapper.resolve("mixed.example")), "93.184.216.36"
        )
        wrapper.installResolver(previous)
        self.assertEqual(
            self.successResultOf(wrapper.resolve("mixed.example")), "93.184.216.34"
        )

    def test_resolve(self) -> None:
        """
        C{resolve()} needs a name grant on some port and returns a checked
        IPv4 address; refusals fail the L{Deferred}.
        """
        wrapper, _, _, resolver = build(["tcp-connect:mixed.example:443"])
        self.assertEqual(
            self.successResultOf(wrapper.resolve("mixed.example")), "93.184.216.34"
        )
        self.failureResultOf(wrapper.resolve("other.example"), PermissionDenied)
        self.failureResultOf(wrapper.resolve("127.1"), PermissionDenied)
        self.assertEqual(self.successResultOf(wrapper.resolve("10.0.0.1")), "10.0.0.1")
        self.assertEqual(resolver.asked, ["mixed.example"])
        self.assertEqual(
            self.successResultOf(wrapper.resolver.getHostByName("mixed.example")),
            "93.184.216.34",
        )

    def test_cancel(self) -> None:
        """
        Cancelling a resolution cancels the underlying one and completes.
        """
        wrapper, _, _, resolver = build(["tcp-connect:mixed.example:443"], pending=True)
        receiver = Receiver()
        wrapper.nameResolver.resolveHostName(receiver, "mixed.example", 443)
        self.assertFalse(receiver.complete)
        receiver.began[0].cancel()
        self.assertTrue(receiver.complete)
        self.assertTrue(resolver.resolutions[0].cancelled)


class CloseTests(SynchronousTestCase):
    """
    C{closeAll} and C{revalidate}.
    """

    def test_closeNothing(self) -> None:
        """
        With nothing open, C{closeAll} fires at once.
        """
        wrapper, _, _, _ = build()
        self.assertIsNone(self.successResultOf(wrapper.closeAll()))

    def test_closeAll(self) -> None:
        """
        C{closeAll} stops ports, aborts accepted and client connections,
        stops attempts, and fires once they have closed; their connectors
        refuse to connect again.
        """
        wrapper, memory, _, _ = build(["tcp-connect:*:*", "tcp-listen:*"])
        wrapper.listenTCP(8080, Factory.forProtocol(Protocol))
        accepted = memory.tcpServers[0][1].buildProtocol(None)
        serverTransport = StringTransport()
        accepted.makeConnection(serverTransport)
        attempting = RecordingFactory()
        attempt = wrapper.connectTCP("127.0.0.1", 1, attempting)
        connected = RecordingFactory()
        connection = wrapper.connectTCP("127.0.0.1", 2, connected)
        clientTransport = StringTransport()
        memory.tcpClients[1][2].buildProtocol(None).makeConnection(clientTransport)

        done = wrapper.closeAll()
        self.assertEqual(attempting.kinds(), ["started", "failed"])
        attempting.events[1][2].trap(UserError)
        self.assertTrue(clientTransport.disconnecting)
        self.assertTrue(serverTransport.disconnecting)
        self.assertNoResult(done)
        memory.tcpClients[1][2].clientConnectionLost(None, Failure(Exception()))
        self.successResultOf(done)
        self.assertEqual(connected.kinds(), ["started", "lost"])
        self.assertEqual(list(memory.getDelayedCalls()), [])
        attempt.connect()
        connection.connect()
        memory.advance(0)
        self.assertEqual(attempting.kinds(), ["started", "failed"] * 2)
        self.assertEqual(connected.kinds(), ["started", "lost", "started", "failed"])
        attempting.events[3][2].trap(PermissionDenied)
        connected.events[3][2].trap(PermissionDenied)
        self.assertEqual(len(memory.tcpClients), 2)

    def test_closeAllDeadline(self) -> None:
        """
        A connection that never reports its end does not hold C{closeAll}
        up past the deadline.
        """
        wrapper, memory, _, _ = build(["tcp-connect:*:*"])
        wrapper.connectTCP("127.0.0.1", 2, RecordingFactory())
        memory.tcpClients[0][2].buildProtocol(None).makeConnection(StringTransport())
        done = wrapper.closeAll()
        self.assertNoResult(done)
        memory.advance(reactorModule.CLOSE_DEADLINE)
        self.successResultOf(done)

    def test_refuseNew(self) -> None:
        """
        C{closeAll(refuseNew=True)} refuses everything later and cancels the
        calls scheduled through the wrapper.
        """
        wrapper, memory, _, _ = build(["tcp-connect:*:*", "tcp-listen:*"])
        call = wrapper.callLater(5, lambda: None)
        self.successResultOf(wrapper.closeAll(refuseNew=True))
        self.assertFalse(call.active())
        refused(self, memory, lambda f: wrapper.connectTCP("127.0.0.1", 1, f))
        refused(self, memory, lambda f: wrapper.connectTCP("mixed.example", 1, f))
        self.assertRaises(PermissionDenied, wrapper.listenTCP, 1, Factory())
        self.failureResultOf(wrapper.resolve("mixed.example"), PermissionDenied)
        self.assertEqual((memory.tcpClients, memory.tcpServers), ([], []))

    def test_revalidate(self) -> None:
        """
        After a grant is removed, C{revalidate} closes what it allowed and
        leaves the rest.
        """
        wrapper, memory, permissions, _ = build(
            [
                "tcp-connect:127.0.0.1:1",
                "tcp-connect:127.0.0.1:2",
                "tcp-connect:mixed.example:443",
                "tcp-listen:8080",
                "tcp-listen:8081",
            ]
        )
        wrapper.listenTCP(8080, Factory.forProtocol(Protocol))
        wrapper.listenTCP(8081, Factory.forProtocol(Protocol))
        accepted = memory.tcpServers[0][1].buildProtocol(None)
        acceptedTransport = StringTransport()
        accepted.makeConnection(acceptedTransport)
        transports = []
        for host, port in [("127.0.0.1", 1), ("127.0.0.1", 2), ("mixed.example", 443)]:
            wrapper.connectTCP(host, port, RecordingFactory())
            transport = StringTransport()
            memory.tcpClients[-1][2].buildProtocol(None).makeConnection(transport)
            transports.append(transport)

        permissions.discard("tcp-connect:127.0.0.1:1")
        permissions.discard("tcp-connect:mixed.example:443")
        permissions.discard("tcp-listen:8080")
        done = wrapper.revalidate()
        self.assertEqual([t.disconnecting for t in transports], [True, False, True])
        self.assertTrue(acceptedTransport.disconnecting)
        memory.tcpClients[0][2].clientConnectionLost(None, Failure(Exception()))
        memory.tcpClients[2][2].clientConnectionLost(None, Failure(Exception()))
        self.successResultOf(done)
        self.assertIsNone(self.successResultOf(wrapper.revalidate()))


class LogTests(SynchronousTestCase):
    """
    With a logger, every refusal is logged with the request and the reason.
    """

    def test_logged(self) -> None:
        """
        Refused connects, listens, resolutions and capabilities are logged.
        """
        from twisted.logger import Logger

        events: list[dict[str, Any]] = []
        memory = MemoryReactorClock()
        memory.installNameResolver(FakeResolver({"mixed.example": NAME_ANSWERS}))
        wrapper = PermissionCheckingReactor(
            memory,
            PermissionSet(["tcp-connect:inside.example:80"]),
            log=Logger(namespace="tcpext.test", observer=events.append),
        )
        refused(self, memory, lambda f: wrapper.connectTCP("127.0.0.1", 80, f))
        refused(self, memory, lambda f: wrapper.connectTCP("127.1", 80, f))
        self.assertRaises(PermissionDenied, wrapper.listenTCP, 80, Factory())
        self.assertRaises(PermissionDenied, wrapper.spawnProcess, Protocol(), "sh")
        self.failureResultOf(wrapper.resolve("mixed.example"), PermissionDenied)
        wrapper.nameResolver.resolveHostName(Receiver(), "mixed.example", 80)
        requests = [e["request"] for e in events]
        self.assertEqual(
            requests,
            [
                "reactor.connectTCP(127.0.0.1:80)",
                "reactor.connectTCP('127.1', 80)",
                "reactor.listenTCP(80, None)",
                "reactor.spawnProcess()",
                "reactor.resolve('mixed.example')",
                "nameResolver.resolveHostName('mixed.example', 80)",
            ],
        )
        for event in events:
            self.assertIn("permission denied", event["reason"])

    def test_closeAllRemovesReaders(self) -> None:
        """
        C{closeAll} removes the readers and writers added through the
        wrapper, and only those.
        """
        wrapper, memory, _, _ = build()
        mine, theirs = object(), object()
        wrapper.addReader(mine)
        wrapper.addWriter(mine)
        memory.addReader(theirs)
        self.successResultOf(wrapper.closeAll())
        self.assertEqual((memory.getReaders(), memory.getWriters()), ([theirs], []))


class ConnectorTests(SynchronousTestCase):
    """
    The connector C{connectTCP} returns behaves as Twisted's.
    """

    def test_reconnectFromLost(self) -> None:
        """
        C{connect()} from C{clientConnectionLost} starts a new attempt and
        the factory is not stopped in between.
        """
        wrapper, memory, _, _ = build(["tcp-connect:127.0.0.1:80"])
        factory = RecordingFactory()
        factory.clientConnectionLost = (  # type: ignore[method-assign]
            lambda connector, reason: connector.connect()
        )
        connector = wrapper.connectTCP("127.0.0.1", 80, factory)
        memory.tcpClients[0][2].buildProtocol(None)
        memory.tcpClients[0][2].clientConnectionLost(None, Failure(Exception()))
        self.assertEqual(len(memory.tcpClients), 2)
        self.assertEqual(connector.state, "connecting")  # type: ignore[attr-defined]
        self.assertEqual((factory.started, factory.stopped), (2, 0))
        self.assertEqual(factory.kinds(), ["started", "started"])

    def test_staleReports(self) -> None:
        """
        After C{stopConnecting}, the abandoned attempt's reports are
        ignored.
        """
        wrapper, memory, _, _ = build(["tcp-connect:127.0.0.1:80"])
        factory = RecordingFactory()
        connector = wrapper.connectTCP("127.0.0.1", 80, factory)
        inner = memory.tcpClients[0][2]
        connector.stopConnecting()
        self.assertTrue(memory.connectors[0].stoppedConnecting)
        inner.clientConnectionFailed(None, Failure(Exception()))
        self.assertIsNone(inner.buildProtocol(None))
        self.assertEqual(factory.kinds(), ["started", "failed"])
        self.assertEqual(factory.stopped, 1)

    def test_ipv6Destination(self) -> None:
        """
        The destination of an IPv6 connector is an L{IPv6Address}.
        """
        wrapper, _, _, _ = build(["tcp-connect:[::1]:80"])
        connector = wrapper.connectTCP("::1", 80, RecordingFactory())
        self.assertEqual(connector.getDestination(), IPv6Address("TCP", "::1", 80))

    def test_connectTwice(self) -> None:
        """
        C{connect()} while connecting is an error, as in Twisted.
        """
        wrapper, _, _, _ = build(["tcp-connect:127.0.0.1:80"])
        connector = wrapper.connectTCP("127.0.0.1", 80, RecordingFactory())
        self.assertRaises(RuntimeError, connector.connect)

    def test_closeAllDuringLookup(self) -> None:
        """
        C{closeAll} stops a connector whose lookup is pending.
        """
        wrapper, memory, _, resolver = build(
            ["tcp-connect:mixed.example:443"], pending=True
        )
        factory = RecordingFactory()
        wrapper.connectTCP("mixed.example", 443, factory)
        self.successResultOf(wrapper.closeAll())
        factory.events[1][2].trap(UserError)
        resolver.answer()
        self.assertEqual(memory.tcpClients, [])

    def test_revalidateDuringLookup(self) -> None:
        """
        C{revalidate} stops a pending lookup whose name grant was removed.
        """
        wrapper, memory, permissions, resolver = build(
            ["tcp-connect:mixed.example:443"], pending=True
        )
        factory = RecordingFactory()
        wrapper.connectTCP("mixed.example", 443, factory)
        permissions.discard("tcp-connect:mixed.example:443")
        self.successResultOf(wrapper.revalidate())
        self.assertEqual(factory.kinds(), ["started", "failed"])
        resolver.answer()
        self.assertEqual(memory.tcpClients, [])


class PlaceholderTests(SynchronousTestCase):
    """
    The placeholder address of a refused resolution.
    """

    def test_ipv6Only(self) -> None:
        """
        When only IPv6 addresses are asked for, the placeholder is IPv6.
        """
        wrapper, _, _, _ = build()
        receiver = Receiver()
        wrapper.nameResolver.resolveHostName(
            receiver, "mixed.example", 443, addressTypes=[IPv6Address]
        )
        [address] = receiver.addresses
        self.assertIsInstance(address, IPv6Address)

    def test_udp(self) -> None:
        """
        Resolving for UDP is refused.
        """
        wrapper, _, _, resolver = build(["tcp-connect:*:*"])
        receiver = Receiver()
        wrapper.nameResolver.resolveHostName(
            receiver, "mixed.example", 53, transportSemantics="UDP"
        )
        self.assertEqual(receiver.hosts(), [DENIED_HOST_TEXT])
        self.assertEqual(resolver.asked, [])


class ConnectPropertyTests(SynchronousTestCase):
    """
    Property: for an IP literal, C{connectTCP} dials exactly when the
    literal check allows it.
    """

    def test_literalCheck(self) -> None:
        """
        C{connectTCP(ip, port)} dials iff C{allowsConnect(ip, port)}, and
        raises L{PermissionDenied} otherwise.
        """
        from hypothesis import given, settings
        from hypothesis import strategies as st

        hosts = st.sampled_from(
            ["127.0.0.1", "10.1.2.3", "93.184.216.34", "::1", "2001:db8::5", "0.0.0.0"]
        )
        grants = st.lists(
            st.sampled_from(
                [
                    "tcp-connect:127.0.0.1:80",
                    "tcp-connect:10.0.0.0/8:1-1024",
                    "tcp-connect:[2001:db8::/32]:443",
                    "tcp-connect:*:22",
                    "tcp-connect:example.com:80",
                    "tcp-listen:*",
                ]
            ),
            max_size=4,
        )
        ports = st.sampled_from([22, 80, 443, 1024, 8080])

        @settings(max_examples=150, deadline=None)
        @given(grants, hosts, ports)
        def check(granted: list[str], host: str, port: int) -> None:
            memory = MemoryReactorClock()
            permissions = PermissionSet(granted)
            wrapper = PermissionCheckingReactor(memory, permissions)
            if permissions.allowsConnect(host, port):
                wrapper.connectTCP(host, port, RecordingFactory())
                self.assertEqual(len(memory.tcpClients), 1)
            else:
                refused(self, memory, lambda f: wrapper.connectTCP(host, port, f))
                self.assertEqual(memory.tcpClients, [])

        check()
