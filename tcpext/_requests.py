# -*- test-case-name: tests.test_requests -*-
"""
Runtime permission requests as the operator console sees them.

L{AdminPrompt} is the prompt policy of C{--prompt admin}: each
C{permissions.request} becomes a pending request (listed by
C{GET /api/v1/requests}) that waits for the operator's approve or deny
(C{POST /api/v1/requests/{id}}), or is denied after a timeout.

L{RememberingPrompt} wraps any prompt policy (admin, tty, deny) so that a
denied or timed-out request is remembered, per extension and permission,
for the service's lifetime: asking again for a permission that was refused
is denied at once, until the operator grants it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "DEFAULT_PROMPT_TIMEOUT",
    "AdminPrompt",
    "PendingRequest",
    "RememberingPrompt",
    "UnknownRequest",
]

DEFAULT_PROMPT_TIMEOUT = 300.0
"""
Seconds a request waits for the operator under C{--prompt admin}.
"""


class UnknownRequest(KeyError):
    """
    No pending request has this id (never had, or already answered).
    """


@define(eq=False)
class PendingRequest:
    """
    One runtime request waiting for the operator.

    @ivar id: Its id (decimal text, unique for the service's lifetime).
    @ivar extension: The extension that asked.
    @ivar permissions: The permissions asked for (canonical text).
    @ivar askedAt: When (Unix seconds).
    """

    id: str
    extension: str
    permissions: list[str]
    askedAt: float
    answer: Deferred[bool] = field(repr=False)
    timer: Any = field(default=None, repr=False)

    def asJSON(self) -> dict[str, Any]:
        """
        The request as C{GET /api/v1/requests} shows it.
        """
        return {
            "id": self.id,
            "extension": self.extension,
            "permissions": list(self.permissions),
            "askedAt": self.askedAt,
        }


class AdminPrompt:
    """
    The C{--prompt admin} policy: requests wait for the console.

    @ivar timeout: Seconds before an unanswered request is denied.
    """

    log = Logger(namespace="tcpext.console")

    def __init__(
        self,
        reactor: Any,
        timeout: float = DEFAULT_PROMPT_TIMEOUT,
        wallClock: Callable[[], float] | None = None,
    ) -> None:
        """
        @param reactor: An C{IReactorTime} for the timeout.
        @param timeout: Seconds a request waits.
        @param wallClock: Unix time for C{askedAt} (default: C{time.time}).
        """
        import time

        if not timeout > 0:
            raise ValueError(f"the prompt timeout must be > 0 seconds, not {timeout}")
        self._reactor = reactor
        self.timeout = timeout
        self._wallClock = wallClock if wallClock is not None else time.time
        self._ids = itertools.count(1)
        self._pending: dict[str, PendingRequest] = {}
        self._stopped = False
        self._listeners: list[Callable[[PendingRequest, str], None]] = []

    def addListener(self, listener: Callable[[PendingRequest, str], None]) -> None:
        """
        Call C{listener(request, outcome)} whenever a request ends
        (C{outcome}: C{"approved"}, C{"denied"}, C{"timeout"},
        C{"stopped"}).
        """
        self._listeners.append(listener)

    def __call__(self, extensionId: str, permissions: list[str]) -> Deferred[bool]:
        """
        Queue a request and wait for the answer.
        """
        if self._stopped:
            return defer.succeed(False)
        requestId = str(next(self._ids))
        request = PendingRequest(
            id=requestId,
            extension=extensionId,
            permissions=list(permissions),
            askedAt=self._wallClock(),
            answer=Deferred(lambda d: self._end(requestId, False, "cancelled")),
        )
        self._pending[requestId] = request
        request.timer = self._reactor.callLater(
            self.timeout, self._end, requestId, False, "timeout"
        )
        self.log.info(
            "extension {extensionId!r} asks for {permissions}: request "
            "{requestId} waits for the console (up to {timeout}s)",
            extensionId=extensionId,
            permissions=permissions,
            requestId=requestId,
            timeout=self.timeout,
        )
        return request.answer

    def pending(self) -> list[PendingRequest]:
        """
        The requests waiting, oldest first.
        """
        return list(self._pending.values())

    def answer(self, requestId: str, approve: bool) -> PendingRequest:
        """
        Approve or deny a pending request.

        @raise UnknownRequest: If no request with this id is pending.
        """
        request = self._pending.get(requestId)
        if request is None:
            raise UnknownRequest(requestId)
        self._end(requestId, approve, "approved" if approve else "denied")
        return request

    def _end(self, requestId: str, approve: bool, outcome: str) -> None:
        """
        Settle one request (once).
        """
        request = self._pending.pop(requestId, None)
        if request is None:
            return
        if request.timer is not None and request.timer.active():
            request.timer.cancel()
        if outcome == "timeout":
            self.log.warn(
                "extension {extensionId!r}: request {requestId} for "
                "{permissions} got no answer in {timeout}s; denied",
                extensionId=request.extension,
                requestId=requestId,
                permissions=request.permissions,
                timeout=self.timeout,
            )
        else:
            self.log.info(
                "extension {extensionId!r}: request {requestId} for "
                "{permissions} {outcome}",
                extensionId=request.extension,
                requestId=requestId,
                permissions=request.permissions,
                outcome=outcome,
            )
        for listener in self._listeners:
            listener(request, outcome)
        if outcome != "cancelled" and not request.answer.called:
            # (A cancelled one fails with CancelledError by itself.)
            request.answer.callback(approve)

    def stop(self) -> None:
        """
        Deny every pending request and every later one (the service stops).
        """
        self._stopped = True
        for requestId in list(self._pending):
            self._end(requestId, False, "stopped")


class RememberingPrompt:
    """
    A prompt policy that remembers refusals: once a request is denied (or
    times out, or the prompt fails), asking again for any of those
    permissions is denied without asking, for the service's lifetime, until
    L{forget} (an operator grant) clears it.
    """

    log = Logger(namespace="tcpext.console")

    def __init__(self, prompt: Callable[[str, list[str]], Any]) -> None:
        """
        @param prompt: The policy that really asks.
        """
        self.prompt = prompt
        self._refused: dict[str, set[str]] = {}

    def __call__(self, extensionId: str, permissions: list[str]) -> Deferred[bool]:
        """
        Deny at once if any permission was refused before, else ask.
        """
        refused = self._refused.get(extensionId, set())
        already = [p for p in permissions if p in refused]
        if already:
            self.log.info(
                "extension {extensionId!r}: {permissions} refused earlier in "
                "this run; denied without asking",
                extensionId=extensionId,
                permissions=already,
            )
            return defer.succeed(False)

        def answered(answer: object) -> bool:
            if answer is not True:
                self._refused.setdefault(extensionId, set()).update(permissions)
                return False
            return True

        def failed(reason: Failure) -> bool:
            self.log.failure("the prompt failed; refusing", reason)
            return answered(False)

        return defer.maybeDeferred(
            self.prompt, extensionId, list(permissions)
        ).addCallbacks(answered, failed)

    def refused(self, extensionId: str) -> list[str]:
        """
        The permissions of C{extensionId} refused in this run.
        """
        return sorted(self._refused.get(extensionId, ()))

    def forget(self, extensionId: str, permission: str) -> None:
        """
        Clear the memory of a refusal (the operator granted C{permission}).
        """
        self._refused.get(extensionId, set()).discard(permission)

    def stop(self) -> None:
        """
        Stop the wrapped prompt, if it can be stopped.
        """
        stop = getattr(self.prompt, "stop", None)
        if stop is not None:
            stop()
