# -*- test-case-name: tests.test_readme -*-
"""
Tests that the README's promises hold: its example is the one in
C{examples/taste.py}, that example runs, and its set-up commands are the ones
CI runs.
"""

import os
import re
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts: str) -> str:
    """
    Read a file of the repository as text.
    """
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


class ReadmeTests(SynchronousTestCase):
    """
    The README's example and commands.
    """

    def test_tasteIsTheExample(self) -> None:
        """
        The README's first Python block is the code of C{examples/taste.py}.
        """
        readme = _read("README.md")
        block = re.search(r"```python\n(.*?)```", readme, re.S)
        assert block is not None
        self.assertIn(block.group(1), _read("examples", "taste.py"))

    def test_tasteRuns(self) -> None:
        """
        C{examples/taste.py} echoes a line over loopback and exits 0.
        """
        env = dict(os.environ, PYTHONPATH=ROOT)
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "examples", "taste.py")],
            capture_output=True,
            env=env,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr.decode("utf-8", "replace"))
        self.assertEqual(result.stdout, b"b'hello, tcpext\\n'\n")

    def test_ciRunsTheReadmeTestCommand(self) -> None:
        """
        The test command at the top of the README is the one C{.ci/run} runs.
        """
        readme = _read("README.md")
        ci = _read(".ci", "run")
        match = re.search(r"^# test:.*\n(.*)$", readme, re.M)
        assert match is not None
        command = match.group(1)
        self.assertIn("python -m twisted.trial tests", command)
        self.assertIn('"$python" -m twisted.trial tests', ci)
        self.assertIn("'.[test,dev]' --config-settings editable_mode=compat", ci)
        self.assertIn("'.[test,dev]' --config-settings editable_mode=compat", command)

    def test_supportedPythons(self) -> None:
        """
        The Pythons the README says are supported are those C{.ci/run} tests
        and the package's classifiers name, and its C{python_requires}
        starts at the first of them.
        """
        readme = _read("README.md")
        match = re.search(r"^Supported: Python ([0-9., and]+) \(", readme, re.M)
        assert match is not None
        supported = re.findall(r"3\.\d+", match.group(1))
        self.assertEqual(supported, ["3.10", "3.11", "3.12", "3.13"])
        ci = re.search(r'^SUPPORTED="([^"]*)"$', _read(".ci", "run"), re.M)
        assert ci is not None
        self.assertEqual(ci.group(1).split(), supported)
        setup = _read("setup.cfg")
        classifiers = re.findall(
            r"Programming Language :: Python :: (3\.\d+)$", setup, re.M
        )
        self.assertEqual(classifiers, supported)
        self.assertIn(f"python_requires = >= {supported[0]}", setup)
