# -*- test-case-name: tests.test_requests -*-
"""
Tests for L{tcpext._requests}: the C{--prompt admin} queue and remembered
refusals.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tcpext._requests import (
    AdminPrompt,
    RememberingPrompt,
    UnknownRequest,
)


class AdminPromptTests(SynchronousTestCase):
    """
    L{AdminPrompt} queues requests until the console answers or the timeout.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.ended: list[tuple[str, str]] = []
        self.prompt = AdminPrompt(self.clock, timeout=300, wallClock=lambda: 1234.5)
        self.prompt.addListener(lambda r, outcome: self.ended.append((r.id, outcome)))

    def test_pending(self) -> None:
        """
        A request is pending, with an id, the extension, the permissions and
        when it was asked, until answered.
        """
        d = self.prompt("ext", ["tcp-connect:a:1", "tcp-listen:2"])
        self.assertNoResult(d)
        self.assertEqual(
            [r.asJSON() for r in self.prompt.pending()],
            [
                {
                    "id": "1",
                    "extension": "ext",
                    "permissions": ["tcp-connect:a:1", "tcp-listen:2"],
                    "askedAt": 1234.5,
                }
            ],
        )

    def test_approve(self) -> None:
        """
        Approving fires the request's L{Deferred} with C{True} and removes
        it; answering it again is an L{UnknownRequest}.
        """
        d = self.prompt("ext", ["tcp-listen:2"])
        self.prompt.answer("1", True)
        self.assertIs(self.successResultOf(d), True)
        self.assertEqual(self.prompt.pending(), [])
        self.assertRaises(UnknownRequest, self.prompt.answer, "1", False)
        self.assertEqual(self.ended, [("1", "approved")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deny(self) -> None:
        """
        Denying fires C{False}; ids are distinct.
        """
        first = self.prompt("ext", ["tcp-listen:2"])
        second = self.prompt("other", ["tcp-listen:3"])
        self.assertEqual([r.id for r in self.prompt.pending()], ["1", "2"])
        self.prompt.answer("2", False)
        self.assertIs(self.successResultOf(second), False)
        self.assertNoResult(first)

    def test_timeout(self) -> None:
        """
        An unanswered request is denied after the timeout.
        """
        d = self.prompt("ext", ["tcp-listen:2"])
        self.clock.advance(299)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.assertIs(self.successResultOf(d), False)
        self.assertEqual(self.ended, [("1", "timeout")])
        self.assertRaises(UnknownRequest, self.prompt.answer, "1", True)

    def test_unknown(self) -> None:
        """
        An id never given is an L{UnknownRequest}.
        """
        self.assertRaises(UnknownRequest, self.prompt.answer, "7", True)

    def test_cancel(self) -> None:
        """
        Cancelling the L{Deferred} (the extension stopped waiting) removes
        the request.
        """
        d = self.prompt("ext", ["tcp-listen:2"])
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.prompt.pending(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop(self) -> None:
        """
        Stopping denies what is pending and every later request.
        """
        d = self.prompt("ext", ["tcp-listen:2"])
        self.prompt.stop()
        self.assertIs(self.successResultOf(d), False)
        self.assertIs(self.successResultOf(self.prompt("ext", ["tcp-listen:2"])), False)
        self.assertEqual(self.prompt.pending(), [])

    def test_badTimeout(self) -> None:
        """
        The timeout must be positive.
        """
        self.assertRaises(ValueError, AdminPrompt, self.clock, timeout=0)


class RememberingPromptTests(SynchronousTestCase):
    """
    L{RememberingPrompt} denies again at once what was refused.
    """

    def setUp(self) -> None:
        self.asked: list[tuple[str, list[str]]] = []
        self.answers: list[object] = []

        def ask(extensionId: str, permissions: list[str]) -> object:
            self.asked.append((extensionId, permissions))
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        self.prompt = RememberingPrompt(ask)

    def test_refusalRemembered(self) -> None:
        """
        After a refusal, asking again for any of those permissions is denied
        without asking; another extension, or another permission, is still
        asked.
        """
        self.answers = [False, True, True]
        self.assertIs(self.successResultOf(self.prompt("ext", ["a", "b"])), False)
        self.assertIs(self.successResultOf(self.prompt("ext", ["b"])), False)
        self.assertIs(self.successResultOf(self.prompt("other", ["b"])), True)
        self.assertIs(self.successResultOf(self.prompt("ext", ["c"])), True)
        self.assertEqual(
            self.asked, [("ext", ["a", "b"]), ("other", ["b"]), ("ext", ["c"])]
        )
        self.assertEqual(self.prompt.refused("ext"), ["a", "b"])

    def test_forget(self) -> None:
        """
        C{forget} (an operator grant) lets the extension ask again.
        """
        self.answers = [False, True]
        self.successResultOf(self.prompt("ext", ["a"]))
        self.prompt.forget("ext", "a")
        self.assertIs(self.successResultOf(self.prompt("ext", ["a"])), True)
        self.assertEqual(len(self.asked), 2)

    def test_approvalNotRemembered(self) -> None:
        """
        An approval is not a standing answer: the next request asks again.
        """
        self.answers = [True, False]
        self.assertIs(self.successResultOf(self.prompt("ext", ["a"])), True)
        self.assertIs(self.successResultOf(self.prompt("ext", ["a"])), False)
        self.assertEqual(len(self.asked), 2)

    def test_failureRefuses(self) -> None:
        """
        A prompt that fails refuses, and the refusal is remembered.
        """
        self.answers = [RuntimeError("broken")]
        self.assertIs(self.successResultOf(self.prompt("ext", ["a"])), False)
        self.assertEqual(self.prompt.refused("ext"), ["a"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_timeoutRemembered(self) -> None:
        """
        With L{AdminPrompt}, a timed-out request is remembered too.
        """
        clock = Clock()
        prompt = RememberingPrompt(AdminPrompt(clock, timeout=5))
        d = prompt("ext", ["a"])
        clock.advance(5)
        self.assertIs(self.successResultOf(d), False)
        self.assertIs(self.successResultOf(prompt("ext", ["a"])), False)

    def test_stop(self) -> None:
        """
        C{stop} stops the wrapped prompt.
        """
        clock = Clock()
        admin = AdminPrompt(clock, timeout=5)
        prompt = RememberingPrompt(admin)
        d = prompt("ext", ["a"])
        prompt.stop()
        self.assertIs(self.successResultOf(d), False)
