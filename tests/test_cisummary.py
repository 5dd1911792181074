# -*- test-case-name: tests.test_cisummary -*-
"""
Tests for C{.ci/summary.py}, the lines CI prints after the suites, and its
rule that nothing may skip under CI.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = os.path.join(REPO, ".ci", "summary.py")

SEPARATOR = "=" * 79

#: The end of a trial run with one skip applying to two tests.
SKIPPED_RUN = f"""tests.test_x
  XTests
    test_a ...                                                       [SKIPPED]
    test_b ...                                                       [SKIPPED]
    test_c ...                                                            [OK]

{SEPARATOR}
[SKIPPED]
this system cannot confine: no Landlock

tests.test_x.XTests.test_a
tests.test_x.XTests.test_b
-------------------------------------------------------------------------------
Ran 3 tests in 0.010s

PASSED (skips=2, successes=1)
"""

PASSED_RUN = """Ran 2 tests in 0.010s

PASSED (successes=2)
"""


class SummaryTests(SynchronousTestCase):
    """
    C{.ci/summary.py LOG...}.
    """

    def summarize(self, *logs: str, noSkips: bool = False) -> tuple[int, str]:
        """
        Run the script on logs with the given texts.

        @return: its exit status and output.
        """
        paths = []
        for number, text in enumerate(logs):
            base = os.path.abspath(self.mktemp())
            os.makedirs(base)
            path = os.path.join(base, f"3.1{number}.log")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            paths.append(path)
        done = subprocess.run(
            [sys.executable, SUMMARY, *(["--no-skips"] if noSkips else []), *paths],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, done.stdout

    def test_counts(self) -> None:
        """
        One line per log and a total; skips do not fail the run by default.
        """
        status, output = self.summarize(SKIPPED_RUN, PASSED_RUN)
        self.assertEqual(status, 0)
        self.assertEqual(
            output.splitlines(),
            [
                "python 3.10: 1 passed, 0 failed, 2 skipped",
                "python 3.11: 2 passed, 0 failed, 0 skipped",
                "tests: 3 passed, 0 failed, 2 skipped",
            ],
        )

    def test_noSkips(self) -> None:
        """
        With C{--no-skips}, a skipped test fails the run, named with its
        Python and its reason.
        """
        status, output = self.summarize(SKIPPED_RUN, PASSED_RUN, noSkips=True)
        self.assertEqual(status, 1)
        self.assertIn(
            "  3.10: tests.test_x.XTests.test_a: this system cannot confine: "
            "no Landlock",
            output.splitlines(),
        )
        self.assertIn(
            "  3.10: tests.test_x.XTests.test_b: this system cannot confine: "
            "no Landlock",
            output.splitlines(),
        )

    def test_noSkipsPassing(self) -> None:
        """
        With C{--no-skips} and nothing skipped, the run passes.
        """
        status, output = self.summarize(PASSED_RUN, noSkips=True)
        self.assertEqual(status, 0)
        self.assertEqual(output.splitlines(), ["tests: 2 passed, 0 failed, 0 skipped"])

    def test_unfinished(self) -> None:
        """
        A log without trial's closing line counts as one failure.
        """
        status, output = self.summarize("Traceback (most recent call last):\n")
        self.assertEqual(output.splitlines(), ["tests: 0 passed, 1 failed, 0 skipped"])
