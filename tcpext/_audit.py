# -*- test-case-name: tests.test_audit -*-
"""
The audit trail of the operator console: one structured event per
permission decision.

L{AuditLog.record} takes a decision (allowed or denied) for one extension
and keeps it in a bounded in-memory ring (what C{GET /api/v1/audit?after=SEQ}
answers), writes it as one JSON line to the C{--audit-log} file (through
twisted.logger's JSON file observer) and counts it in the metrics.  Denials
are rate-limited per extension: past the limit, they are counted but not
kept, and one summary event says how many were left out.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import IO, Any

from twisted.logger import ILogObserver, jsonFileLogObserver

__all__ = ["AuditLog", "DenialLimiter", "openAuditFile"]

DEFAULT_RING_SIZE = 10000
"""
How many audit events the in-memory ring keeps.
"""


class DenialLimiter:
    """
    How many denials of one extension are recorded: at most C{burst} in any
    C{window} seconds (a fixed window per extension); the rest are counted,
    and the count is handed back once the window is over.
    """

    def __init__(
        self,
        burst: int = 50,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        @param burst: Denials recorded per window and extension.
        @param window: The window, in seconds.
        @param clock: Where the time comes from.
        """
        if burst < 1 or window <= 0:
            raise ValueError("burst must be >= 1 and window > 0")
        self.burst = burst
        self.window = window
        self._clock = clock
        self._windows: dict[str, tuple[float, int, int]] = {}

    def admit(self, extensionId: str) -> tuple[bool, int]:
        """
        May one more denial of C{extensionId} be recorded?

        @return: C{(admitted, suppressed)}: whether to record this one, and
            how many of this extension's denials were left out in the window
            that just ended (reported once, with the first denial of the next
            window).
        """
        now = self._clock()
        start, count, dropped = self._windows.get(extensionId, (now, 0, 0))
        suppressed = 0
        if now - start >= self.window:
            suppressed, start, count, dropped = dropped, now, 0, 0
        if count < self.burst:
            self._windows[extensionId] = (start, count + 1, dropped)
            return True, suppressed
        self._windows[extensionId] = (start, count, dropped + 1)
        return False, suppressed

    def pending(self) -> dict[str, int]:
        """
        The denials suppressed so far in each extension's current window
        (those not yet reported by L{admit}), and forget them.
        """
        result = {}
        for extensionId, (start, count, dropped) in list(self._windows.items()):
            if dropped:
                result[extensionId] = dropped
                self._windows[extensionId] = (start, count, 0)
        return result


def openAuditFile(path: str) -> IO[str]:
    """
    Open the C{--audit-log} file for appending, creating it with mode 0600.
    A symbolic link is not followed (one planted in a shared folder would
    otherwise aim the service's writes at a file of someone else's
    choosing).

    @raise OSError: If it cannot be opened (C{ELOOP}: C{path} is a
        symbolic link).
    """
    import os

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8")


class AuditLog:
    """
    Every permission decision, as events with a sequence number.

    @ivar seq: The sequence number of the last event kept (0: none yet).
    """

    def __init__(
        self,
        *,
        size: int = DEFAULT_RING_SIZE,
        output: IO[str] | None = None,
        limiter: DenialLimiter | None = None,
        clock: Callable[[], float] = time.time,
        observers: Iterable[Callable[[dict[str, Any]], None]] = (),
        requestGrant: str = "granted by the prompt",
    ) -> None:
        """
        @param size: How many events the ring keeps.
        @param output: A text file for JSON lines (the C{--audit-log}), or
            L{None}.
        @param limiter: The denial rate limit (a default L{DenialLimiter} if
            not given).
        @param clock: The wall clock for C{time} (Unix seconds).
        @param observers: Called with every decision, including the denials
            the rate limit leaves out of the ring and the file (metrics).
        @param requestGrant: What allowed a granted runtime request (the
            C{grant} of its event), e.g. who answered it.
        """
        self.requestGrant = requestGrant
        if size < 1:
            raise ValueError("the audit ring must keep at least one event")
        self._ring: deque[dict[str, Any]] = deque(maxlen=size)
        self.seq = 0
        self._clock = clock
        self._limiter = limiter if limiter is not None else DenialLimiter()
        self._observers = list(observers)
        self._output = output
        self._write: ILogObserver | None = None
        if output is not None:
            self._write = jsonFileLogObserver(output, recordSeparator="")

    @property
    def window(self) -> float:
        """
        The denial rate limit's window, in seconds.
        """
        return self._limiter.window

    def addObserver(self, observer: Callable[[dict[str, Any]], None]) -> None:
        """
        Call C{observer} with every decision from now on.
        """
        self._observers.append(observer)

    def record(
        self,
        extensionId: str,
        verb: str,
        target: str,
        allowed: bool,
        *,
        grant: str | None = None,
        reason: str | None = None,
        addresses: Iterable[str] = (),
        origin: str = "host",
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """
        Record one decision.

        @param extensionId: The extension it was about.
        @param verb: What was asked (C{"connect"}, C{"listen"},
            C{"resolve"}, C{"request"}, ...).
        @param target: What it was asked for (C{"HOST:PORT"}, a permission).
        @param allowed: The decision.
        @param grant: For an allowed request, the grant that allowed it.
        @param reason: For a denied one, why.
        @param addresses: The addresses concerned (resolved, dialed).
        @param origin: C{"host"}, or C{"child"} for what an isolated
            extension's own process refused before asking the host.
        @param extra: More fields for the event.
        @return: The event kept, or L{None} if the rate limit left it out.
        """
        event: dict[str, Any] = {
            "extension": extensionId,
            "verb": verb,
            "target": target,
            "decision": "allow" if allowed else "deny",
        }
        if allowed:
            event["grant"] = grant if grant is not None else ""
        else:
            event["reason"] = reason if reason is not None else ""
        addresses = list(addresses)
        if addresses:
            event["addresses"] = addresses
        if origin != "host":
            event["origin"] = origin
        if extra:
            event.update(extra)
        for observer in self._observers:
            observer(event)
        if not allowed:
            admitted, suppressed = self._limiter.admit(extensionId)
            if suppressed:
                self._keepSuppressed(extensionId, suppressed)
            if not admitted:
                return None
        return self._keep(event)

    def recordDecision(self, extensionId: str, decision: Any) -> dict[str, Any] | None:
        """
        Record a decision of the policy (a L{tcpext._policy.Decision}): its
        verb, target and answer, the grant that allowed it or the reason it
        was refused, the addresses concerned, the name they were dialed for,
        and the resolved addresses it refused.
        """
        grant = decision.grant
        if grant is not None:
            grantText = str(grant)
        elif decision.verb == "request":
            grantText = self.requestGrant
        else:
            grantText = ""
        extra: dict[str, Any] = {}
        if decision.name:
            extra["name"] = decision.name
        if decision.refused:
            extra["refused"] = list(decision.refused)
        return self.record(
            extensionId,
            decision.verb,
            decision.target,
            decision.allowed,
            grant=grantText,
            reason=decision.reason,
            addresses=decision.addresses,
            extra=extra,
        )

    def flushSuppressed(self) -> None:
        """
        Record one summary event for each extension whose denials were left
        out in its current window (call it now and then, and at shutdown).
        """
        for extensionId, count in self._limiter.pending().items():
            self._keepSuppressed(extensionId, count)

    def _keepSuppressed(self, extensionId: str, count: int) -> None:
        """
        Keep the summary event for C{count} denials left out.
        """
        self._keep(
            {
                "extension": extensionId,
                "verb": "suppressed",
                "target": "",
                "decision": "deny",
                "reason": f"{count} more denials not recorded (rate limit)",
                "suppressed": count,
            }
        )

    def _keep(self, event: dict[str, Any]) -> dict[str, Any]:
        """
        Number, timestamp, keep and write one event.
        """
        self.seq += 1
        kept = {"seq": self.seq, "time": self._clock(), **event}
        self._ring.append(kept)
        if self._write is not None:
            # A log event without a format: written as the fields alone.
            self._write(
                {**kept, "log_namespace": "tcpext.audit", "log_time": kept["time"]}
            )
        return kept

    def after(self, seq: int, limit: int | None = None) -> list[dict[str, Any]]:
        """
        The events kept whose C{seq} is greater than C{seq}, oldest first
        (C{seq=0}: the oldest kept).

        @param limit: At most this many.
        """
        if seq < 0:
            raise ValueError("after must be >= 0")
        ring = self._ring
        if not ring or seq >= ring[-1]["seq"]:
            return []
        first = ring[0]["seq"]
        start = max(0, seq - first + 1)
        events = [ring[i] for i in range(start, len(ring))]
        if limit is not None:
            events = events[:limit]
        return [dict(e) for e in events]

    def close(self) -> None:
        """
        Record the pending suppression summaries and close the file.
        """
        self.flushSuppressed()
        if self._output is not None:
            self._output.close()
            self._output = None
            self._write = None
