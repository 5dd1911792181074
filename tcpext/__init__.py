"""
tcpext: raw TCP sockets under permissions, on Twisted.

The public names of the socket API, the permission system and the errors are
re-exported here; their implementations live in private modules. The
modules C{tcpext.endpoints}, C{tcpext.permissions}, C{tcpext.reactor},
C{tcpext.browser} and C{tcpext.testing} are public too.

C{tcpext.__version__} is the version of the installed distribution (its one
source: C{setup.cfg} reads it from here).
"""

from tcpext._errors import IncompleteReadError, LimitOverrunError, SocketClosed
from tcpext._server import TCPServerSocket
from tcpext._socket import ReadyState, TCPClientSocket
from tcpext.permissions import PermissionDenied, PermissionSet, parsePermission

__version__ = "0.1.0"

__all__ = [
    "IncompleteReadError",
    "LimitOverrunError",
    "PermissionDenied",
    "PermissionSet",
    "ReadyState",
    "SocketClosed",
    "TCPClientSocket",
    "TCPServerSocket",
    "parsePermission",
]
