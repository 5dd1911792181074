"""
Scratch folders for tests.
"""

from __future__ import annotations

import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase


def shortFolder(case: SynchronousTestCase) -> str:
    """
    A new folder with a short path, removed at the end of the test.

    A UNIX socket path may have at most 107 bytes, and a checkout's
    C{_trial_temp} folder can be deeper than that: a test that binds a UNIX
    socket (the console's default socket among them) makes it here.
    """
    folder = tempfile.mkdtemp(prefix="tcpext-")
    case.addCleanup(shutil.rmtree, folder, True)
    return folder
