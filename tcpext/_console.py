# -*- test-case-name: tests.test_admin -*-
"""
What the operator console needs from the service, as one interface.

L{IConsole} is everything the admin API (L{tcpext._admin}) and so the web
page and the C{tcpext} command can see and do: list the extensions, their
grants by source and their sockets, grant and revoke, answer pending
requests, read the audit trail and the metrics.  The service provides it
with L{tcpext._serviceconsole.ServiceConsole}; tests of the web layer use a
small fake.

Errors are L{ConsoleError}s that carry the HTTP status the API answers with.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Interface

__all__ = [
    "BadRequest",
    "Conflict",
    "ConsoleError",
    "IConsole",
    "NotFound",
    "Unavailable",
]


class ConsoleError(Exception):
    """
    A request the console refuses; C{str()} is the message for the operator.

    @cvar status: The HTTP status of the answer.
    """

    status = 400


class BadRequest(ConsoleError):
    """
    The request is malformed or asks for something not allowed (400).
    """

    status = 400


class NotFound(ConsoleError):
    """
    No such extension, grant or pending request (404).
    """

    status = 404


class Unavailable(ConsoleError):
    """
    The service could not do it now (e.g. the grant store failed); nothing
    was changed (503).
    """

    status = 503


class Conflict(ConsoleError):
    """
    The request conflicts with what is fixed, e.g. revoking a manifest
    permission (409).
    """

    status = 409


class IConsole(Interface):
    """
    The service as the operator console sees it.  Every result is made of
    JSON values (C{dict}, C{list}, C{str}, numbers, C{bool}, L{None}).
    """

    def extensions() -> list[dict[str, Any]]:
        """
        Every extension: C{{"id", "name", "version", "isolation", "state",
        "grants": {"manifest", "operator", "stored"}, "sockets"}} (C{sockets}
        is how many are open).
        """

    def grants(extensionId: str) -> dict[str, list[str]]:
        """
        C{{"manifest": [...], "operator": [...], "stored": [...]}}.

        @raise NotFound: For an unknown extension.
        """

    def grant(extensionId: str, permission: str) -> Deferred[None]:
        """
        Grant one of the extension's optional permissions now, as a stored
        (runtime) grant.

        @raise NotFound: For an unknown extension.
        @raise BadRequest: For an invalid permission or one the manifest does
            not list in C{optional_permissions}.
        """

    def revoke(extensionId: str, permission: str) -> Deferred[None]:
        """
        Take a grant away and close what no remaining grant allows.

        @raise NotFound: For an unknown extension or a permission not
            granted.
        @raise Conflict: For a permission the manifest requires.
        """

    def sockets(extensionId: str) -> list[dict[str, Any]]:
        """
        The extension's open sockets: C{{"kind", "local", "remote",
        "bytesIn", "bytesOut", "openedAt", "tls"}}.

        @raise NotFound: For an unknown extension.
        """

    def requests() -> list[dict[str, Any]]:
        """
        The pending runtime requests: C{{"id", "extension", "permissions",
        "askedAt"}}.
        """

    def answer(requestId: str, approve: bool) -> None:
        """
        Approve or deny a pending request.

        @raise NotFound: If no such request is pending.
        """

    def audit(after: int) -> list[dict[str, Any]]:
        """
        The audit events with C{seq} greater than C{after}, oldest first.
        """

    def metrics() -> tuple[bytes, str]:
        """
        The metrics in the Prometheus text format, and its content type.
        """
