# -*- test-case-name: tests.test_socket,tests.test_server -*-
"""
Outcomes that can be observed many times (a socket's C{opened} and
C{closed}, a server's C{closed}) and failures that are not logged when
nobody consumes them.

An outcome is L{None} while pending, L{True} once it succeeded, or the
L{Failure} it ended with.  Observers that come while it is pending wait in a
list made on the first one.
"""

from __future__ import annotations

from typing import Any, Union

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from tcpext._twistedcompat import silence

__all__ = ["Outcome", "observe", "quietFail", "settle", "silence"]

Outcome = Union[None, bool, Failure]


def quietFail(failure: Failure) -> Deferred[Any]:
    """
    A new Deferred failed with C{failure} that does not log it if unused.
    """
    d: Deferred[Any] = Deferred()
    d.errback(failure)
    silence(d, failure)
    return d


def settle(waiters: list[Deferred[Any]] | None, outcome: Failure | None) -> None:
    """
    Fire every waiter with L{None}, or fail it quietly with C{outcome}
    (waiters cancelled by their users are skipped).
    """
    if not waiters:
        return
    for d in waiters:
        if d.called:
            continue
        if outcome is None:
            d.callback(None)
        else:
            d.errback(outcome)
            silence(d, outcome)


def observe(
    outcome: Outcome,
    waiters: list[Deferred[Any]] | None,
    waiter: type[Deferred[Any]] = Deferred,
    value: object = None,
) -> tuple[Deferred[Any], list[Deferred[Any]] | None]:
    """
    A new Deferred for a many-times observable outcome.

    @param waiter: The class of the Deferred to queue while the outcome is
        not known yet.
    @param value: What the Deferred fires with on success (the queued one:
        whatever its settler gives it).

    @return: The Deferred and the (possibly new) waiter list.
    """
    if outcome is None:
        d: Deferred[Any] = waiter()
        if waiters is None:
            waiters = [d]
        else:
            waiters.append(d)
        return d, waiters
    if outcome is True:
        return succeed(value), waiters
    assert isinstance(outcome, Failure)
    return quietFail(outcome), waiters
