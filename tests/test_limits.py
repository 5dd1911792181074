"""
Tests for L{tcpext._limits}: the request rate and the rate-limited log of
an isolated extension's denials.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tcpext._audit import DenialLimiter
from tcpext._limits import RateLimitedLog, TokenBucket


class TokenBucketTests(SynchronousTestCase):
    """
    L{TokenBucket}: C{burst} at once, then C{rate} a second.
    """

    def test_burstThenRate(self) -> None:
        """
        The first C{burst} events pass; the next waits for a token, which
        comes back after 1/C{rate} seconds; tokens never pile up past
        C{burst}.
        """
        clock = Clock()
        bucket = TokenBucket(rate=2, burst=3, clock=clock.seconds)
        self.assertEqual([bucket.take() for _ in range(4)], [True] * 3 + [False])
        clock.advance(0.4)
        self.assertFalse(bucket.take())
        clock.advance(0.1)
        self.assertTrue(bucket.take())
        self.assertFalse(bucket.take())
        clock.advance(1000)
        self.assertEqual([bucket.take() for _ in range(4)], [True] * 3 + [False])

    def test_clockBackwards(self) -> None:
        """
        A clock that goes back gives no tokens.
        """
        clock = Clock()
        clock.advance(100)
        bucket = TokenBucket(rate=1, burst=1, clock=clock.seconds)
        self.assertTrue(bucket.take())
        clock.rightNow = 50
        self.assertFalse(bucket.take())

    def test_invalid(self) -> None:
        """
        A rate or burst that allows nothing is refused.
        """
        self.assertRaises(ValueError, TokenBucket, 0, 1, Clock().seconds)
        self.assertRaises(ValueError, TokenBucket, 1, 0, Clock().seconds)


class RateLimitedLogTests(SynchronousTestCase):
    """
    L{RateLimitedLog}: at most C{burst} lines a window, then one summary.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[dict[str, Any]] = []
        log = Logger(namespace="tcpext.extension.x", observer=self.events.append)
        limiter = DenialLimiter(burst=3, window=10, clock=self.clock.seconds)
        self.denials = RateLimitedLog(log, self.clock, "x", limiter)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def test_summaryAfterWindow(self) -> None:
        """
        Past C{burst} lines, denials are counted; C{window} seconds after
        the first one left out, one summary line says how many.
        """
        for i in range(10):
            self.denials.warn("denied {i}", i=i)
        self.assertEqual(self.lines(), ["denied 0", "denied 1", "denied 2"])
        self.clock.advance(9.9)
        self.assertEqual(len(self.lines()), 3)
        self.clock.advance(0.1)
        self.assertEqual(len(self.lines()), 4)
        self.assertIn("7 more denials suppressed", self.lines()[-1])
        self.assertEqual(self.events[-1]["count"], 7)
        # Nothing is reported twice.
        self.clock.advance(100)
        self.denials.warn("denied {i}", i=10)
        self.assertEqual(self.lines()[-1], "denied 10")
        self.assertEqual(len(self.lines()), 5)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_summaryWithNextDenial(self) -> None:
        """
        A denial in a later window brings the summary of the earlier one
        first, if its timer has not yet; the timer then has nothing left to
        report.
        """
        for i in range(3):
            self.denials.warn("denied {i}", i=i)
        self.clock.advance(5)
        self.denials.warn("denied {i}", i=3)
        self.denials.warn("denied {i}", i=4)
        self.clock.advance(7)
        self.denials.warn("denied {i}", i=5)
        self.assertEqual(
            self.lines()[-2:],
            ["2 more denials suppressed (at most 3 logged every 10s)", "denied 5"],
        )
        self.clock.advance(10)
        self.assertEqual(len(self.lines()), 5)

    def test_flush(self) -> None:
        """
        L{RateLimitedLog.flush} reports what was left out at once (the
        extension stops) and cancels the timer.
        """
        for i in range(4):
            self.denials.warn("denied {i}", i=i)
        self.denials.flush()
        self.assertIn("1 more denials suppressed", self.lines()[-1])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.denials.flush()
        self.assertEqual(len(self.lines()), 4)
