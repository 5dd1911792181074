# -*- test-case-name: tests.test_apidocs -*-
"""
The docstrings make a clean API reference: a quick form of what
C{.ci/apidocs} checks in CI, run with the test suite so that a docstring
pydoctor cannot read fails before it lands.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WARNING = re.compile(r"^\S+\.py:\d+: ")
_TWISTED_LINK = re.compile(r'Cannot find link target for "twisted\.[^"]*"')


class APIReferenceTests(SynchronousTestCase):
    """
    pydoctor over C{tcpext}, with the same settings as C{.ci/apidocs}.
    """

    def test_docstrings(self) -> None:
        """
        pydoctor finds no epytext syntax error and no link it cannot resolve
        in tcpext's docstrings.  (Links into Twisted need Twisted's
        inventory, which C{.ci/apidocs} builds; here they are left to it.)
        """
        try:
            import pydoctor  # noqa: F401
        except ImportError:
            raise SkipTest("pydoctor (in the dev extra) is not installed")
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        inventory = os.path.join(base, "python.inv")
        writer = runpy.run_path(os.path.join(ROOT, ".ci", "python_inventory.py"))
        with open(inventory, "wb") as f:
            f.write(writer["inventory"]())
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pydoctor",
                "--quiet",
                "--html-output",
                os.path.join(base, "html"),
                "--intersphinx-file",
                f"{inventory}::https://docs.python.org/3",
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = result.stdout + result.stderr
        problems = [
            line
            for line in output.splitlines()
            if _WARNING.match(line) and not _TWISTED_LINK.search(line)
        ]
        self.assertEqual(problems, [], output)
        self.assertTrue(
            os.path.exists(os.path.join(base, "html", "tcpext.html")), output
        )
