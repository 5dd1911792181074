"""
Every example extension in C{examples/} run under C{twistd -n tcpext
--isolation process}: each in its own process and network namespace, with
the same checks C{tests.test_examples} makes for the in-process case.

The tests are those of L{tests.test_examples}, run again with the
C{isolation} attribute that L{tests.test_examples.Twistd} turns into
C{--isolation process}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests import test_examples
from tests.test_isolation import _NO_CONFINEMENT


class IsolatedExamplesFolderTests(SynchronousTestCase):
    """
    C{twistd -n tcpext --extensions examples/ --isolation process}: every
    bundled example starts in its own process; the echo server and the chat
    room serve as they do in-process, and C{SIGTERM} stops them all.
    """

    isolation = "process"

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"

    test_echoAndChat = test_examples.ExamplesFolderTests.test_echoAndChat


class IsolatedExampleExtensionTests(test_examples.ExampleExtensionTests):
    """
    The fetcher (treq through C{browser.reactor}), the TLS client (a
    C{localhost} name grant) and the gossip pair, each isolated.
    """

    isolation = "process"

    if _NO_CONFINEMENT is not None:
        skip = f"this system cannot confine: {_NO_CONFINEMENT}"
