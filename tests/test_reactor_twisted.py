# -*- test-case-name: tests.test_reactor_twisted -*-
"""
Twisted's own TCP and TLS reactor tests, run against a
L{PermissionCheckingReactor} that holds every TCP grant.

Each of Twisted's C{ReactorBuilder} test classes is subclassed so that
C{buildReactor} returns the wrapper around the fresh reactor Twisted built
(which Twisted still cleans up itself).  Only the epoll reactor is used, to
keep the run short.

Left out, because the wrapper refuses what they exercise by design
(C{adoptStreamPort} / C{adoptStreamConnection}, i.e. adopting file
descriptors): C{TCPFDPortTestsBuilder} and
C{AdoptStreamConnectionTestsBuilder}.

Replaced: C{test_connectPortZero}, C{test_connectPortUnderflow} and
C{test_connectPortOverflow} of the TCP client tests expect the socket
layer's own message for a port outside 1..65535 (C{"connect_ex(): port
must be 0-65535."}); the wrapper refuses such a port before anything is
dialed, with a L{ValueError} that names the port, which the replacements
check instead.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase

try:
    from twisted.internet.test import test_tcp, test_tls
except ImportError as e:  # pragma: no cover
    # Twisted's test modules need PyHamcrest (a test dependency of tcpext).
    _missing = str(e)
    test_tcp = test_tls = None  # type: ignore[assignment]

from tcpext.permissions import PermissionSet
from tcpext.reactor import PermissionCheckingReactor

EVERYTHING = ["tcp-connect:*:*", "tcp-listen:*"]

REACTORS = [
    "twisted.internet.epollreactor.EPollReactor",
    "twisted.internet.pollreactor.PollReactor",
    "twisted.internet.selectreactor.SelectReactor",
    "twisted.internet.test.reactormixins.AsyncioSelectorReactor",
]


class _WrappedReactorBuilder:
    """
    Mixed in before a Twisted C{ReactorBuilder}: the reactor under test is
    a L{PermissionCheckingReactor} with every TCP grant.
    """

    _reactors = REACTORS

    def buildReactor(self) -> Any:
        """
        Wrap the reactor Twisted builds (and will clean up).
        """
        real = super().buildReactor()  # type: ignore[misc]
        return PermissionCheckingReactor(real, PermissionSet(EVERYTHING))


class _InvalidPorts:
    """
    Replacements for the invalid-port tests of Twisted's TCP client tests:
    the wrapper refuses the port before dialing, with a clear L{ValueError}.
    """

    def _refusesPort(self, port: int) -> None:
        case: Any = self
        reactor = case.buildReactor()
        address = case.addressClass("TCP", case.interface, port)
        endpoint = case.endpoints.client(reactor, address)
        failure = case.failureResultOf(
            endpoint.connect(Factory.forProtocol(Protocol)), ValueError
        )
        case.assertIn(f"port {port} is outside 1..65535", str(failure.value))

    def test_connectPortZero(self) -> None:
        """
        Port 0 is refused with L{ValueError} before dialing.
        """
        self._refusesPort(0)

    def test_connectPortUnderflow(self) -> None:
        """
        A negative port is refused with L{ValueError} before dialing.
        """
        self._refusesPort(-1)

    def test_connectPortOverflow(self) -> None:
        """
        A port above 65535 is refused with L{ValueError} before dialing.
        """
        self._refusesPort(65536)


def _wrapped(builder: type, *extra: type) -> dict[str, type[SynchronousTestCase]]:
    """
    The test case classes of Twisted's C{builder}, against the wrapper
    (with the C{extra} mixins' tests replacing Twisted's).
    """
    name = "Wrapped" + builder.__name__
    cls = type(
        name, (*extra, _WrappedReactorBuilder, builder), {"__module__": __name__}
    )
    classes: dict[str, type[SynchronousTestCase]] = cls.makeTestCaseClasses()  # type: ignore[attr-defined]
    return classes


if test_tcp is None:  # pragma: no cover

    class TwistedReactorTests(SynchronousTestCase):
        """
        Placeholder when Twisted's reactor tests cannot be imported.
        """

        def test_twistedTests(self) -> None:
            """
            Twisted's TCP/TLS reactor tests could not be imported.
            """
            self.fail(f"cannot import Twisted's reactor tests: {_missing}")

    _builders: list[type] = []
else:
    _builders = [
        test_tcp.TCPPortTestsBuilder,
        test_tcp.TCPConnectionTestsBuilder,
        test_tcp.TCP4ConnectorTestsBuilder,
        test_tcp.TCP6ConnectorTestsBuilder,
        test_tcp.TCPTransportTestsBuilder,
        test_tcp.TestBindAddressBuilder,
        test_tcp.AbortConnectionTests,
        test_tls.SSLClientTestsMixin,
        test_tls.StartTLSClientTestsMixin,
        test_tls.TLSPortTestsBuilder,
        test_tls.AbortSSLConnectionTests,
    ]
    globals().update(_wrapped(test_tcp.TCP4ClientTestsBuilder, _InvalidPorts))
    globals().update(_wrapped(test_tcp.TCP6ClientTestsBuilder, _InvalidPorts))
for _builder in _builders:
    globals().update(_wrapped(_builder))
