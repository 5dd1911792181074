# -*- test-case-name: tests.test_isolation_broker -*-
"""
Small limits on what an isolated extension can make the host do: a request
rate (L{TokenBucket}) and a rate-limited log of its denials
(L{RateLimitedLog}, over the same per-extension L{DenialLimiter} as the
audit log's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from tcpext._audit import DenialLimiter

__all__ = ["RateLimitedLog", "TokenBucket"]


class TokenBucket:
    """
    At most C{rate} events a second on average, and C{burst} at once: each
    event takes a token; tokens come back at C{rate} a second, up to
    C{burst}.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        """
        @param rate: Tokens added per second.
        @param burst: The most tokens held (and the first ones).
        @param clock: Where the time comes from (seconds).

        @raise ValueError: for a rate or burst that allows nothing.
        """
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> bool:
        """
        Take one token if there is one.

        @return: whether the event may happen.
        """
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class RateLimitedLog:
    """
    Logs one extension's denials at C{warn}, at most C{burst} lines in each
    window of its L{DenialLimiter}; the lines left out are counted, and one
    summary line ("N more denials suppressed") follows: with the first
    denial of a later window, at the latest C{window} seconds after the
    first one left out, or when L{flush} is called (when the extension
    stops).
    """

    def __init__(
        self,
        log: Logger,
        reactor: Any,
        key: str,
        limiter: DenialLimiter | None = None,
    ) -> None:
        """
        @param log: Where the lines go.
        @param reactor: An C{IReactorTime} (for the summary's timer and the
            limiter's clock, unless C{limiter} has its own).
        @param key: The extension's id (the limiter's key).
        @param limiter: The limit (default: the audit log's default limit,
            on C{reactor}'s clock).  It must serve this log alone:
            L{DenialLimiter.pending} flushes every key.
        """
        self._log = log
        self._reactor = reactor
        self._key = key
        self.limiter = (
            limiter if limiter is not None else DenialLimiter(clock=reactor.seconds)
        )
        self._timer: Any = None

    def warn(self, format: str, **kw: Any) -> None:
        """
        Log one denial, unless the limit leaves it out.
        """
        admitted, suppressed = self.limiter.admit(self._key)
        if suppressed:
            self._summary(suppressed)
        if admitted:
            self._log.warn(format, **kw)
        elif self._timer is None or not self._timer.active():
            self._timer = self._reactor.callLater(self.limiter.window, self.flush)

    def flush(self) -> None:
        """
        Log the summary of the denials left out so far, if any.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        count = self.limiter.pending().get(self._key, 0)
        if count:
            self._summary(count)

    def _summary(self, count: int) -> None:
        self._log.warn(
            "{count} more denials suppressed (at most {burst} logged every {window}s)",
            count=count,
            burst=self.limiter.burst,
            window=self.limiter.window,
        )
