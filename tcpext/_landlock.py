# -*- test-case-name: tests.test_confinement -*-
"""
Landlock (Linux): what an isolated extension's process may do with files,
TCP ports, signals and abstract UNIX sockets, enforced by the kernel.

L{restrictSelf} builds one ruleset and applies it to the calling thread and
everything it later starts (threads, children, executed programs); no rule
can be removed afterwards.  The ruleset:

 - handles TCP C{bind} and C{connect} and allows neither: the process can
   neither open a listening port nor aim a TCP socket anywhere, including
   a socket the host connected and passed to it (re-aimed after an
   C{AF_UNSPEC} disconnect, or with C{sendto(..., MSG_FASTOPEN, address)});
 - scopes signals and abstract UNIX sockets: the process can signal, and
   connect to abstract sockets of, only processes inside its own Landlock
   domain;
 - handles every filesystem right this kernel knows and allows reading and
   executing everywhere, writing only beneath a private scratch folder and
   to C{/dev/null};
 - and, being a Landlock domain, keeps the process from tracing (or
   reading the memory of) any process outside the domain.

The system calls are made through C{ctypes}; their numbers are the same on
every architecture tcpext supports (x86-64, AArch64).  TCP rules need ABI 4
and the scopes ABI 6, so L{NEEDED_ABI} is 6.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

__all__ = [
    "NEEDED_ABI",
    "LandlockUnavailable",
    "abiVersion",
    "restrictSelf",
]

NEEDED_ABI = 6
"""The lowest Landlock ABI that can confine an extension (TCP rules: 4;
signal and abstract UNIX socket scopes: 6)."""

_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446

_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1

# Filesystem rights, with the ABI that introduced them.
_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5

_FS_BY_ABI = {
    1: (1 << 13) - 1,
    2: (1 << 14) - 1,
    3: (1 << 15) - 1,
    4: (1 << 15) - 1,
    5: (1 << 16) - 1,
}
"""Every filesystem right an ABI knows (ABIs above 5 add none)."""

_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE
"""The rights that apply to a file (not a folder); C{IOCTL_DEV} as well."""

_NET_BIND_TCP = 1 << 0
_NET_CONNECT_TCP = 1 << 1

_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
_SCOPE_SIGNAL = 1 << 1


class LandlockUnavailable(Exception):
    """
    The kernel cannot apply the Landlock ruleset; the message says why.
    """


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handledAccessFs", ctypes.c_uint64),
        ("handledAccessNet", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [
        ("allowedAccess", ctypes.c_uint64),
        ("parentFd", ctypes.c_int32),
    ]


def _syscall() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    function = libc.syscall
    function.restype = ctypes.c_long
    return function


def _failed(what: str) -> LandlockUnavailable:
    err = ctypes.get_errno()
    return LandlockUnavailable(f"{what} failed: {os.strerror(err)} (errno {err})")


def abiVersion() -> int:
    """
    The Landlock ABI version this kernel offers: 0 where it has none (not
    Linux, a kernel without Landlock, or Landlock disabled at boot).
    """
    if not sys.platform.startswith("linux"):
        return 0
    version = _syscall()(
        ctypes.c_long(_SYS_CREATE_RULESET),
        ctypes.c_void_p(None),
        ctypes.c_size_t(0),
        ctypes.c_uint32(_CREATE_RULESET_VERSION),
    )
    return max(int(version), 0)


def _addPath(ruleset: int, path: str, access: int) -> None:
    """
    Allow C{access} beneath C{path} (or on it, for a file).
    """
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneathAttr(access, fd)
        if (
            _syscall()(
                ctypes.c_long(_SYS_ADD_RULE),
                ctypes.c_int(ruleset),
                ctypes.c_int(_RULE_PATH_BENEATH),
                ctypes.byref(rule),
                ctypes.c_uint32(0),
            )
            != 0
        ):
            raise _failed(f"landlock_add_rule({path!r})")
    finally:
        os.close(fd)


def restrictSelf(scratch: str | None) -> int:
    """
    Apply the ruleset described in the module docstring to the calling
    thread.  Call it while the process is single-threaded, after
    C{PR_SET_NO_NEW_PRIVS} (or with C{CAP_SYS_ADMIN} in the current user
    namespace).

    @param scratch: The one folder the process may write beneath, or
        L{None} for none.

    @return: The ABI version used.

    @raise LandlockUnavailable: when the kernel offers an ABI below
        L{NEEDED_ABI} or refuses a step; nothing is restricted then.
    """
    abi = abiVersion()
    if abi < NEEDED_ABI:
        raise LandlockUnavailable(
            f"Landlock ABI {NEEDED_ABI} is needed; this kernel offers "
            + (f"ABI {abi}" if abi else "none")
        )
    handledFs = _FS_BY_ABI[min(abi, 5)]
    attr = _RulesetAttr(
        handledFs,
        _NET_BIND_TCP | _NET_CONNECT_TCP,
        _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL,
    )
    call = _syscall()
    ruleset = int(
        call(
            ctypes.c_long(_SYS_CREATE_RULESET),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
            ctypes.c_uint32(0),
        )
    )
    if ruleset < 0:
        raise _failed("landlock_create_ruleset")
    try:
        _addPath(ruleset, "/", _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR)
        _addPath(
            ruleset,
            "/dev/null",
            _FS_READ_FILE | _FS_WRITE_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV,
        )
        if scratch is not None:
            _addPath(ruleset, scratch, handledFs)
        if call(
            ctypes.c_long(_SYS_RESTRICT_SELF),
            ctypes.c_int(ruleset),
            ctypes.c_uint32(0),
        ):
            raise _failed("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi
