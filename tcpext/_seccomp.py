# -*- test-case-name: tests.test_confinement -*-
"""
A seccomp-bpf filter (Linux) for what Landlock does not cover, built with
libseccomp through the C{pyseccomp} binding.

Every refused call fails with C{EPERM} (a clear C{PermissionError} in
Python), except C{clone3}, which fails with C{ENOSYS} so that the C library
falls back to C{clone} (whose flags the filter can read).  Everything not
listed is allowed.  The filter refuses:

 - C{connect()} outright: an isolated extension never dials anything itself
   (the host does).  This covers pathname UNIX sockets, which Landlock does
   not, and the C{AF_UNSPEC} disconnect of a passed TCP socket;
 - C{socket()} of any family but C{AF_INET}, C{AF_INET6} and C{AF_NETLINK}
   (no UNIX socket, so no datagram C{sendto} to a socket file; no C{AF_VSOCK},
   which a network namespace does not contain; no packet sockets), and
   C{socketpair()} of any type but stream and sequenced-packet (a connected
   datagram pair could still C{sendto} a socket file);
 - io_uring (which would run the calls above out of the filter's sight);
 - reaching into other processes: C{ptrace}, C{process_vm_readv}/C{writev},
   C{pidfd_getfd}, C{kcmp}, C{move_pages}, C{migrate_pages};
 - kernel surfaces an extension has no use for: C{bpf}, C{perf_event_open},
   C{userfaultfd}, the key ring (C{keyctl}, C{add_key}, C{request_key}),
   file handles (C{open_by_handle_at}, C{name_to_handle_at}), module,
   reboot, swap, accounting, quota and kernel-log calls;
 - new namespaces and mounts: C{unshare}, C{setns}, C{clone} with any
   namespace flag, C{mount} and the new mount API, C{pivot_root}, C{chroot};
 - new processes: C{fork}, C{vfork} and C{clone} without C{CLONE_THREAD}
   (so C{os.fork}, C{subprocess} and C{os.posix_spawn} fail with C{EPERM}):
   a process the extension started would share its descriptors and outlive
   it, beyond the host's reach;
 - terminal input injection: C{ioctl} C{TIOCSTI} and C{TIOCLINUX}.

Threads keep working (C{clone} with C{CLONE_THREAD} and no namespace
flag).  System calls of
another architecture's numbering (32-bit calls from a 64-bit process) kill
the process: no Python program makes them.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

__all__ = [
    "SeccompUnavailable",
    "installFilter",
    "prepareFilter",
    "seccompMissing",
]


class SeccompUnavailable(Exception):
    """
    The filter cannot be built or loaded; the message says why.
    """


_DENIED = [
    "connect",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "fork",
    "vfork",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    "move_pages",
    "migrate_pages",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "open_by_handle_at",
    "name_to_handle_at",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "lookup_dcookie",
    "uselib",
    "vhangup",
]
"""Calls refused whatever their arguments."""

_CLONE_THREAD = 0x00010000
"""The C{clone} flag of a new thread (rather than a new process)."""

_ALLOWED_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK})
_FAMILY_LIMIT = 64
"""Every family number below this one is listed; anything above is refused."""

_ALLOWED_PAIR_TYPES = frozenset({socket.SOCK_STREAM, socket.SOCK_SEQPACKET})
_TYPE_MASK = 0xF
"""The bits of a socket type that name the type (the rest are flags)."""

_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)

_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C
_INT_MASK = 0xFFFFFFFF


def seccompMissing() -> str | None:
    """
    L{None} if this system can load the filter, else why not (libseccomp or
    its binding missing, or not Linux).
    """
    try:
        _binding()
    except SeccompUnavailable as e:
        return str(e)
    return None


def _binding() -> Any:
    try:
        import pyseccomp
    except ImportError as e:
        raise SeccompUnavailable(f"the pyseccomp binding is not installed: {e}")
    except (OSError, RuntimeError) as e:
        # pyseccomp raises RuntimeError when libseccomp cannot be found.
        raise SeccompUnavailable(f"libseccomp cannot be loaded: {e}")
    return pyseccomp


_prepared: Any = None
"""The filter built by L{prepareFilter}, ready to load (a libseccomp
context; it survives C{fork}, so a template process builds it once)."""


def _build() -> Any:
    """
    Build (not load) the filter described in the module docstring.

    @raise SeccompUnavailable: when it cannot be built.
    """
    seccomp = _binding()
    deny = seccomp.ERRNO(errno.EPERM)
    Arg = seccomp.Arg
    try:
        f = seccomp.SyscallFilter(seccomp.ALLOW)
        f.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
        for name in _DENIED:
            number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
            if number < 0:
                # Not a call of this architecture (libseccomp knows it by
                # name from another one): nothing to refuse.
                continue
            f.add_rule(deny, number)
        for family in range(_FAMILY_LIMIT):
            if family not in _ALLOWED_FAMILIES:
                f.add_rule(deny, "socket", Arg(0, seccomp.MASKED_EQ, _INT_MASK, family))
        f.add_rule(deny, "socket", Arg(0, seccomp.GE, _FAMILY_LIMIT))
        for kind in range(_TYPE_MASK + 1):
            if kind not in _ALLOWED_PAIR_TYPES:
                f.add_rule(
                    deny, "socketpair", Arg(1, seccomp.MASKED_EQ, _TYPE_MASK, kind)
                )
        for flag in _NAMESPACE_FLAGS:
            f.add_rule(deny, "clone", Arg(0, seccomp.MASKED_EQ, flag, flag))
        # A clone that is not a thread of this process is a new process.
        f.add_rule(deny, "clone", Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0))
        f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        for request in (_TIOCSTI, _TIOCLINUX):
            f.add_rule(deny, "ioctl", Arg(1, seccomp.MASKED_EQ, _INT_MASK, request))
    except OSError as e:
        raise SeccompUnavailable(f"the seccomp filter cannot be built: {e}") from e
    return f


def prepareFilter() -> None:
    """
    Build the filter now, so that L{installFilter} (here, or in a process
    forked from here) only has to load it.

    @raise SeccompUnavailable: when it cannot be built.
    """
    global _prepared
    _prepared = _build()


def installFilter() -> None:
    """
    Load the filter described in the module docstring on the calling thread
    (and whatever it starts later).  Call it while the process is
    single-threaded, after C{PR_SET_NO_NEW_PRIVS}.

    @raise SeccompUnavailable: when the filter cannot be built or loaded;
        nothing is filtered then.
    """
    f = _prepared if _prepared is not None else _build()
    try:
        f.load()
    except OSError as e:
        raise SeccompUnavailable(f"the seccomp filter was refused: {e}") from e
