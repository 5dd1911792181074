# -*- test-case-name: tests.test_isolation,tests.test_confinement -*-
"""
Confining an isolated extension's process (Linux).

An isolated extension's process calls L{confine} before it imports any
extension code.  Three layers, each enforced by the kernel, apply to the
process and everything it later starts:

 1. I{network namespace} (L{enterNetworkNamespace}): the process sees only
    its own loopback interface, so nothing it creates itself reaches the
    host's network; the only sockets that reach the outside are those the
    host hands over.  The namespace is created with C{unshare(CLONE_NEWNET)}
    inside a new user namespace (C{CLONE_NEWUSER}) that maps the process's
    own user and group ids onto themselves, which unprivileged users may do
    where the kernel allows it.
 2. I{Landlock} (L{tcpext._landlock}): no TCP C{bind} or C{connect} (a
    passed socket cannot be re-aimed), no signal to and no abstract UNIX
    socket of any process outside, no tracing, and a read-only filesystem
    but for a private scratch folder and C{/dev/null}.
 3. I{seccomp} (L{tcpext._seccomp}): no C{connect()} at all (pathname UNIX
    sockets), no UNIX socket of its own, no io_uring, no calls that reach
    into other processes or the kernel's less-used surfaces.

L{missingConfinement} finds out, in a short-lived child process (a fork of
the caller where that is sound), which layers this system cannot provide
(an empty list: it can confine);
C{python -m tcpext._isolation} prints the same as one line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import functools
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import NoReturn

import attrs

from tcpext._landlock import LandlockUnavailable, restrictSelf
from tcpext._seccomp import SeccompUnavailable, installFilter

__all__ = [
    "CLONE_NEWNET",
    "CLONE_NEWUSER",
    "LAYERS",
    "Confinement",
    "ConfinementUnavailable",
    "NamespaceUnavailable",
    "checkConfinement",
    "checkNetworkNamespace",
    "confine",
    "dropCapabilities",
    "enterNetworkNamespace",
    "interfaceNames",
    "missingConfinement",
]

CLONE_NEWNET = 0x40000000
"""C{unshare} flag: a new network namespace."""

CLONE_NEWUSER = 0x10000000
"""C{unshare} flag: a new user namespace."""

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


LAYER_NAMESPACE = "network namespace"
LAYER_LANDLOCK = "Landlock"
LAYER_SECCOMP = "seccomp"

LAYERS = (LAYER_NAMESPACE, LAYER_LANDLOCK, LAYER_SECCOMP)
"""The confinement layers, in the order they are applied."""


class ConfinementUnavailable(Exception):
    """
    The system cannot confine an extension's process; the message names
    what is missing.
    """


class NamespaceUnavailable(ConfinementUnavailable):
    """
    The operating system refused to create a network namespace; the message
    says why.
    """


def _unshare(flags: int) -> None:
    """
    C{unshare(flags)}: C{os.unshare} where Python has it (3.12 and later),
    the C library's otherwise.

    @raise NamespaceUnavailable: with the C{errno} text when it fails, or
        when this is not Linux.
    """
    if not sys.platform.startswith("linux"):
        raise NamespaceUnavailable(
            f"network namespaces need Linux; this is {sys.platform}"
        )
    unshare = getattr(os, "unshare", None)
    if unshare is not None:
        try:
            unshare(flags)
        except OSError as e:
            raise NamespaceUnavailable(
                f"unshare(0x{flags:08x}) failed: {e.strerror} (errno {e.errno})"
            ) from e
        return
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


@functools.cache
def _libc() -> ctypes.CDLL:
    """
    The C library, found once: C{find_library} runs C{ldconfig} in a
    subprocess, which an extension's process must not pay for (the
    template loads it before it forks).
    """
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


@attrs.frozen
class Confinement:
    """
    The outcome of L{confine}.

    @ivar active: The layers in force, as shown to operators (e.g.
        C{"Landlock ABI 7"}).
    @ivar missing: One entry per layer that could not be applied: the
        layer's name and the reason.
    """

    active: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """
        Every layer of L{LAYERS} is in force.
        """
        return not self.missing


def confine(
    scratch: str | None,
    network: bool = True,
    mark: Callable[[str], None] | None = None,
) -> Confinement:
    """
    Apply every confinement layer to the calling process, which must still
    be single-threaded (Landlock and seccomp bind the calling thread and
    what it starts later).  A layer that cannot be applied is recorded in
    L{Confinement.missing} and the next ones are still tried: the caller
    decides whether a partial confinement may run.

    @param scratch: The folder the process may write beneath (L{None}: no
        writable folder but C{/dev/null}).
    @param network: C{False} to skip the network namespace (it is then
        reported missing).
    @param mark: Called with C{"namespace"}, C{"landlock"} and
        C{"seccomp"} as each layer is done (to time the start path).
    """
    active: list[str] = []
    missing: list[str] = []
    done = mark or (lambda layer: None)
    if network:
        try:
            enterNetworkNamespace()
        except NamespaceUnavailable as e:
            missing.append(f"{LAYER_NAMESPACE} ({e})")
        else:
            active.append(LAYER_NAMESPACE)
    else:
        missing.append(f"{LAYER_NAMESPACE} (not requested)")
    done("namespace")
    try:
        _noNewPrivileges()
    except NamespaceUnavailable as e:
        missing.append(f"{LAYER_LANDLOCK} and {LAYER_SECCOMP} ({e})")
        return Confinement(tuple(active), tuple(missing))
    try:
        abi = restrictSelf(scratch)
    except (LandlockUnavailable, OSError) as e:
        missing.append(f"{LAYER_LANDLOCK} ({e})")
    else:
        active.append(f"{LAYER_LANDLOCK} ABI {abi}")
    done("landlock")
    try:
        installFilter()
    except SeccompUnavailable as e:
        missing.append(f"{LAYER_SECCOMP} ({e})")
    else:
        active.append(LAYER_SECCOMP)
    done("seccomp")
    return Confinement(tuple(active), tuple(missing))


def _runProbe(
    python: str | None, timeout: float, *args: str
) -> subprocess.CompletedProcess[bytes]:
    """
    Run the probe (L{_probe}) with C{args}: in a fork of this process when
    no interpreter is named and that is sound (L{_forkProbe}), otherwise as
    C{python -m tcpext._isolation ARGS}.

    @raise ConfinementUnavailable: if the probe could not run.
    """
    if python is None:
        forked = _forkProbe(timeout, list(args))
        if forked is not None:
            return forked
    try:
        return subprocess.run(
            [python or sys.executable, "-m", "tcpext._isolation", *args],
            capture_output=True,
            timeout=timeout,
            env=_childEnvironment(),
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfinementUnavailable(f"the confinement probe did not run: {e}") from e


def _forkProbe(
    timeout: float, args: list[str]
) -> subprocess.CompletedProcess[bytes] | None:
    """
    Run the probe in a fork of this process: the same kernel, user and
    limits as a fresh interpreter would have, without the fraction of a
    second (and the CPU) it takes to start one and import tcpext again.  The
    forked process confines itself, writes its answer on a pipe and exits;
    it touches nothing of this process's.

    @return: what the probe printed and its exit status, or L{None} where
        a fork is not sound (no C{fork}, or more than one thread: a fork
        copies only the calling thread, and the locks the others hold).

    @raise ConfinementUnavailable: if the probe did not finish in time.
    """
    import threading

    if not hasattr(os, "fork") or threading.active_count() != 1:
        return None
    outR, outW = os.pipe()
    errR, errW = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        for fd in (outR, outW, errR, errW):
            os.close(fd)
        return None
    if pid == 0:  # pragma: no cover - the forked probe
        code = 1
        try:
            os.dup2(outW, 1)
            os.dup2(errW, 2)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            code = _probe(args)
        except BaseException as e:
            os.write(2, f"the probe failed: {e!r}\n".encode())
        finally:
            _exitForked(code)
    os.close(outW)
    os.close(errW)
    output = {outR: b"", errR: b""}
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as selector:
            for fd in output:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    raise ConfinementUnavailable(
                        f"the confinement probe did not finish within {timeout}s"
                    )
                for key, _ in selector.select(left):
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        output[key.fd] += chunk
                    else:
                        selector.unregister(key.fd)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(outR)
        os.close(errR)
    return subprocess.CompletedProcess(
        ["tcpext._isolation", *args],
        os.waitstatus_to_exitcode(status),
        output[outR],
        output[errR],
    )


def _lastLine(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else f"probe exited with {result.returncode}"


def checkNetworkNamespace(python: str | None = None, timeout: float = 30.0) -> None:
    """
    Find out, in a short-lived child process, whether this system lets a
    process enter a network namespace (the first layer only; see
    L{missingConfinement} for all of them).

    @param python: the interpreter to run (default: this one).
    @param timeout: seconds to wait for the probe.

    @raise NamespaceUnavailable: with the reason when it does not.
    """
    result = _runProbe(python, timeout, "--namespace-only")
    if result.returncode != 0:
        raise NamespaceUnavailable(_lastLine(result))


def missingConfinement(python: str | None = None, timeout: float = 30.0) -> list[str]:
    """
    What this system lacks to confine an extension's process, found out by
    confining a short-lived child process and checking that each layer
    holds there.

    @param python: the interpreter to run (default: this one).
    @param timeout: seconds to wait for the probe.

    @return: one entry per missing layer, naming it and the reason; an
        empty list when every layer can be applied.
    """
    try:
        result = _runProbe(python, timeout, "--json")
    except ConfinementUnavailable as e:
        return [str(e)]
    try:
        answer = json.loads(result.stdout.decode("utf-8"))
        missing = answer["missing"]
        if not isinstance(missing, list) or not all(
            isinstance(m, str) for m in missing
        ):
            raise ValueError(missing)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return [f"the confinement probe failed: {_lastLine(result)}"]
    if result.returncode != 0 and not missing:
        return [f"the confinement probe failed: {_lastLine(result)}"]
    return missing


def checkConfinement(python: str | None = None, timeout: float = 30.0) -> None:
    """
    L{missingConfinement}, as an exception: call it before starting
    confined extensions, so that a system that cannot confine stops the
    service at once (fail closed).

    @raise ConfinementUnavailable: naming everything missing, in one line.
    """
    missing = missingConfinement(python, timeout)
    if missing:
        raise ConfinementUnavailable("; ".join(missing))


def _exitForked(code: int) -> NoReturn:  # pragma: no cover - forked processes
    """
    End a process forked from this one (not exec'd): flush its standard
    output and error, then exit with C{code} at once, without the exit
    handlers and finalizers it inherited from the parent.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _childEnvironment() -> dict[str, str]:
    """
    The environment for a child Python that must import this copy of tcpext.
    """
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = here + (os.pathsep + path if path else "")
    return env


def _holds() -> list[str]:
    """
    In a confined process: check that each layer holds; return what does
    not.
    """
    problems = []
    names = interfaceNames()
    if names != ["lo"]:
        problems.append(f"{LAYER_NAMESPACE} (the process sees {names!r})")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
    except PermissionError:
        pass
    else:
        problems.append(f"{LAYER_LANDLOCK} (a TCP bind was allowed)")
    try:
        s.connect(("127.0.0.1", 9))
    except PermissionError as e:
        if e.errno != errno.EPERM:
            problems.append(f"{LAYER_SECCOMP} (connect() reached Landlock)")
    except OSError:
        problems.append(f"{LAYER_SECCOMP} (connect() was not refused)")
    finally:
        s.close()
    return problems


def _probe(argv: list[str]) -> int:
    """
    Confine this process and check that each layer holds.

    With C{--namespace-only}: enter a network namespace only; exit status 0
    on success, 1 with the reason on standard error otherwise.  With
    C{--json}: print C{{"active": [...], "missing": [...]}}.  Otherwise:
    print one line, what is in force or what is missing; exit status 0 when
    nothing is.
    """
    if "--namespace-only" in argv:
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
    confinement = confine(None)
    missing = list(confinement.missing)
    if confinement.complete:
        missing = _holds()
    if "--json" in argv:
        sys.stdout.write(
            json.dumps({"active": list(confinement.active), "missing": missing}) + "\n"
        )
    elif missing:
        sys.stdout.write(f"cannot confine: missing {'; '.join(missing)}\n")
    else:
        sys.stdout.write(f"can confine: {', '.join(confinement.active)}\n")
    return 1 if missing else 0


if __name__ == "__main__":  # pragma: no cover - run in a child process
    sys.exit(_probe(sys.argv[1:]))
