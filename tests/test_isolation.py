"""
Tests for process isolation: L{tcpext._isolation} (the network namespace),
L{tcpext.sandbox} (the child) and L{tcpext._broker.IsolatedExtension} (the
host), with real child processes over loopback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from tcpext._isolation import (
    NamespaceUnavailable,
    _childEnvironment,
    checkNetworkNamespace,
)


def _namespaceWorks() -> str | None:
    """
    L{None} if this system gives a process a network namespace, else why not.
    """
    try:
        checkNetworkNamespace()
    except NamespaceUnavailable as e:
        return str(e)
    return None


_NO_NAMESPACE = _namespaceWorks()


def _runChild(code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """
    Run C{code} in a fresh Python that can import tcpext.
    """
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_childEnvironment(),
    )


class NamespaceTests(SynchronousTestCase):
    """
    L{tcpext._isolation.enterNetworkNamespace} in real child processes.
    """

    if _NO_NAMESPACE is not None:
        skip = f"no network namespaces here: {_NO_NAMESPACE}"

    def listener(self) -> socket.socket:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(5)
        self.addCleanup(s.close)
        return s

    def test_onlyLoopback(self) -> None:
        """
        Inside the namespace only C{lo} exists, and it is up.
        """
        result = _runChild(
            """
            import fcntl, socket, struct
            from tcpext._isolation import enterNetworkNamespace, interfaceNames
            enterNetworkNamespace()
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            flags = struct.unpack("16sh", fcntl.ioctl(
                s.fileno(), 0x8913, struct.pack("16sh", b"lo", 0))[:18])[1]
            print(interfaceNames(), bool(flags & 1))
            """
        )
        self.assertEqual(result.stdout.strip(), "['lo'] True", result.stderr)

    def test_hostLoopbackUnreachable(self) -> None:
        """
        A raw C{connect} from inside the namespace to a server listening on
        the host's loopback fails, while the same connect from outside works.
        """
        server = self.listener()
        port = server.getsockname()[1]
        outside = socket.create_connection(("127.0.0.1", port), timeout=5)
        outside.close()
        result = _runChild(
            f"""
            import socket
            from tcpext._isolation import enterNetworkNamespace
            enterNetworkNamespace()
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=5)
            except OSError as e:
                print("failed", e.errno)
            else:
                print("connected")
            """
        )
        self.assertTrue(result.stdout.startswith("failed"), result)

    def test_childListenerUnreachable(self) -> None:
        """
        A port bound and listening inside the namespace cannot be reached from
        the host.
        """
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(
                    f"""
                    import socket, sys
                    from tcpext._isolation import enterNetworkNamespace
                    enterNetworkNamespace()
                    s = socket.socket()
                    s.bind(("127.0.0.1", {port}))
                    s.listen(5)
                    print("listening", flush=True)
                    sys.stdin.read()
                    """
                ),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_childEnvironment(),
        )
        self.addCleanup(child.wait, 10)
        self.addCleanup(child.stdin.close)  # type: ignore[union-attr]
        self.assertEqual(child.stdout.readline().strip(), "listening")  # type: ignore[union-attr]
        self.assertRaises(
            ConnectionRefusedError,
            socket.create_connection,
            ("127.0.0.1", port),
            5,
        )

    def test_probe(self) -> None:
        """
        L{checkNetworkNamespace} succeeds here and fails, with the reason,
        when the probe cannot enter a namespace (simulated by an interpreter
        that exits with an error).
        """
        checkNetworkNamespace()
        script = self.mktemp()
        with open(script, "w") as f:
            f.write("#!/bin/sh\necho 'unshare: Operation not permitted' >&2\nexit 1\n")
        os.chmod(script, 0o755)
        error = self.assertRaises(
            NamespaceUnavailable, checkNetworkNamespace, python=script
        )
        self.assertIn("Operation not permitted", str(error))

    def test_refusalReported(self) -> None:
        """
        When the kernel refuses C{unshare}, L{NamespaceUnavailable} carries
        its reason (an invalid flag makes it refuse, harmlessly, in this
        process).
        """
        from tcpext._isolation import _unshare

        error = self.assertRaises(NamespaceUnavailable, _unshare, 0x7FFFFFFF)
        self.assertIn("Invalid argument", str(error))
