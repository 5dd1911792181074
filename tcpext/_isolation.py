# -*- test-case-name: tests.test_isolation -*-
"""
Entering an empty network namespace (Linux).

An isolated extension's process calls L{enterNetworkNamespace} before it
runs any extension code.  Afterwards the process sees only its own loopback
interface: nothing it creates itself can reach the host's network, and the
only sockets that reach the outside are those the host hands over.

The namespace is created with C{unshare(CLONE_NEWNET)}.  A process that is
not root (no C{CAP_SYS_ADMIN}) first enters a new user namespace
(C{CLONE_NEWUSER}) that maps its own user and group ids onto themselves, which
unprivileged users may do where the kernel allows it.

L{NamespaceUnavailable} is raised, with the operating system's reason, when
the kernel refuses; the caller decides whether to refuse to run (the default,
fail closed) or to run unconfined.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import socket
import struct
import subprocess
import sys

__all__ = [
    "CLONE_NEWNET",
    "CLONE_NEWUSER",
    "NamespaceUnavailable",
    "checkNetworkNamespace",
    "dropCapabilities",
    "enterNetworkNamespace",
    "interfaceNames",
]

CLONE_NEWNET = 0x40000000
"""C{unshare} flag: a new network namespace."""

CLONE_NEWUSER = 0x10000000
"""C{unshare} flag: a new user namespace."""

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


class NamespaceUnavailable(Exception):
    """
    The operating system refused to create a network namespace; the message
    says why.
    """


def _unshare(flags: int) -> None:
    """
    Call the C library's C{unshare(flags)}.

    @raise NamespaceUnavailable: with the C{errno} text when it fails, or
        when this is not Linux.
    """
    if not sys.platform.startswith("linux"):
        raise NamespaceUnavailable(
            f"network namespaces need Linux; this is {sys.platform}"
        )
    try:
        libc = _libc()
    except OSError as e:
        raise NamespaceUnavailable(f"cannot load the C library: {e}") from e
    if libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise NamespaceUnavailable(
            f"unshare(0x{flags:08x}) failed: {os.strerror(err)} (errno {err})"
        )


def _writeProc(path: str, text: str) -> None:
    """
    Write C{text} to a C{/proc} file in one C{write} call.
    """
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)


def _bringUpLoopback() -> None:
    """
    Set the C{IFF_UP} flag on C{lo} in the current network namespace.

    @raise NamespaceUnavailable: when the kernel refuses.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        request = struct.pack("16sh", b"lo", 0)
        try:
            answer = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, request)
            flags = struct.unpack("16sh", answer[:18])[1]
            fcntl.ioctl(
                s.fileno(),
                _SIOCSIFFLAGS,
                struct.pack("16sh", b"lo", flags | _IFF_UP),
            )
        except OSError as e:
            raise NamespaceUnavailable(
                f"cannot bring up the loopback interface: {e}"
            ) from e
    finally:
        s.close()


def _libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c") or "libc.so.6"
    return ctypes.CDLL(name, use_errno=True)


_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _noNewPrivileges() -> None:
    """
    C{PR_SET_NO_NEW_PRIVS}: nothing this process executes gains privileges
    (set-user-id programs, file capabilities).
    """
    if _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise NamespaceUnavailable(f"PR_SET_NO_NEW_PRIVS failed: {os.strerror(err)}")


def dropCapabilities() -> None:
    """
    Give up every capability: the bounding set (so that no later C{exec}
    regains one), the ambient set, and the effective, permitted and
    inheritable sets.

    @raise NamespaceUnavailable: when the kernel refuses.
    """
    libc = _libc()
    for cap in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            if ctypes.get_errno() == errno.EINVAL:
                break
            err = ctypes.get_errno()
            raise NamespaceUnavailable(
                f"cannot drop capability {cap}: {os.strerror(err)}"
            )
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise NamespaceUnavailable(f"capset failed: {os.strerror(err)}")


def enterNetworkNamespace(userNamespace: bool = True) -> None:
    """
    Move the calling process (it must be single-threaded) into a new, empty
    network namespace whose loopback interface is up, and make sure it
    cannot leave it.

    The network namespace is created together with a new user namespace
    that maps the process's own uid and gid onto themselves, so that the
    process holds capabilities only over its new namespaces: it cannot
    C{setns} back into the host's network namespace, nor trace or take file
    descriptors from the host's processes, even when it runs as root.
    Where user namespaces are unavailable and the process is root, the
    network namespace is created alone and every capability is dropped
    instead (for the same effect).  Either way C{PR_SET_NO_NEW_PRIVS} is set.

    @param userNamespace: C{False} to skip the user namespace (root only;
        for tests of the fallback).

    @raise NamespaceUnavailable: when the kernel refuses, with its reason.
    """
    uid, gid = os.geteuid(), os.getegid()
    reason = "not tried"
    if userNamespace:
        try:
            _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        except NamespaceUnavailable as e:
            if uid != 0:
                raise
            reason = str(e)
        else:
            try:
                _writeProc("/proc/self/setgroups", "deny")
            except OSError:
                # Kernels before 3.19 have no setgroups file.
                pass
            try:
                _writeProc("/proc/self/uid_map", f"{uid} {uid} 1\n")
                _writeProc("/proc/self/gid_map", f"{gid} {gid} 1\n")
            except OSError as e:
                raise NamespaceUnavailable(
                    f"cannot write the user namespace's id maps: {e}"
                ) from e
            _bringUpLoopback()
            _noNewPrivileges()
            return
    if uid != 0:
        raise NamespaceUnavailable("a network namespace needs a user namespace")
    try:
        _unshare(CLONE_NEWNET)
    except NamespaceUnavailable as e:
        raise NamespaceUnavailable(f"{e} (with a user namespace: {reason})") from e
    _bringUpLoopback()
    _noNewPrivileges()
    dropCapabilities()


def interfaceNames() -> list[str]:
    """
    The names of the network interfaces the calling process can see.
    """
    return sorted(name for _, name in socket.if_nameindex())


def checkNetworkNamespace(python: str | None = None, timeout: float = 30.0) -> None:
    """
    Find out, in a short-lived child process, whether this system lets a
    process enter a network namespace.  Call it before starting isolated
    extensions so that a refusal stops the service at once (fail closed).

    @param python: the interpreter to run (default: this one).
    @param timeout: seconds to wait for the probe.

    @raise NamespaceUnavailable: with the reason when it does not.
    """
    try:
        result = subprocess.run(
            [python or sys.executable, "-m", "tcpext._isolation"],
            capture_output=True,
            timeout=timeout,
            env=_childEnvironment(),
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NamespaceUnavailable(f"the namespace probe did not run: {e}") from e
    if result.returncode != 0:
        reason = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise NamespaceUnavailable(
            reason[-1] if reason else f"probe exited with {result.returncode}"
        )


def _childEnvironment() -> dict[str, str]:
    """
    The environment for a child Python that must import this copy of tcpext.
    """
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = here + (os.pathsep + path if path else "")
    return env


def _probe() -> int:
    """
    Enter a namespace and check that only C{lo} is visible; the exit status
    is 0 on success, 1 with the reason on standard error otherwise.
    """
    try:
        enterNetworkNamespace()
    except NamespaceUnavailable as e:
        sys.stderr.write(f"{e}\n")
        return 1
    names = interfaceNames()
    if names != ["lo"]:
        sys.stderr.write(f"the new namespace shows interfaces {names!r}\n")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover - run in a child process
    sys.exit(_probe())
