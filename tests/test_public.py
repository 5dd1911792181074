# -*- test-case-name: tests.test_public -*-
"""
Tests for the public surface of L{tcpext}: the names SPEC.md promises.
"""

from twisted.trial.unittest import SynchronousTestCase

import tcpext
from tcpext import _errors, _server, _socket, permissions


class PublicNamesTests(SynchronousTestCase):
    """
    L{tcpext} re-exports the public names of its private modules.
    """

    def test_reexports(self) -> None:
        """
        Each public name of the package is the object its module defines.
        """
        expected = {
            "TCPClientSocket": _socket.TCPClientSocket,
            "ReadyState": _socket.ReadyState,
            "TCPServerSocket": _server.TCPServerSocket,
            "SocketClosed": _errors.SocketClosed,
            "IncompleteReadError": _errors.IncompleteReadError,
            "LimitOverrunError": _errors.LimitOverrunError,
            "PermissionDenied": permissions.PermissionDenied,
            "PermissionSet": permissions.PermissionSet,
            "parsePermission": permissions.parsePermission,
        }
        self.assertEqual(sorted(tcpext.__all__), sorted(expected))
        for name, value in expected.items():
            self.assertIs(getattr(tcpext, name), value, name)

    def test_publicModules(self) -> None:
        """
        The public modules SPEC.md names import and define their entry points.
        """
        from tcpext import browser, endpoints, reactor, testing

        self.assertTrue(callable(endpoints.connectSocket))
        self.assertTrue(callable(endpoints.listenSocket))
        self.assertTrue(callable(reactor.PermissionCheckingReactor))
        self.assertTrue(callable(browser.makeBrowser))
        self.assertTrue(hasattr(testing, "__doc__") and testing.__doc__)
