# -*- test-case-name: tests.test_statefolder -*-
"""
The service's state folder: created private (every folder tcpext makes is
mode C{0700}), held by one service at a time (an exclusive C{flock} on
C{<state>/lock}, kept for the service's lifetime), and cleaned of the
temporary files an interrupted atomic write left behind.
"""

from __future__ import annotations

import errno
import fcntl
import os

from twisted.logger import Logger

__all__ = [
    "GRANTS_FOLDER",
    "LOCK_FILE",
    "StateFolder",
    "StateFolderBusy",
    "StateFolderError",
    "makePrivateFolders",
]

GRANTS_FOLDER = "grants"
"""
The folder, inside the state folder, that holds one C{<id>.json} per
extension (L{tcpext._grantstore}).
"""

LOCK_FILE = "lock"
"""The file, inside the state folder, that the running service locks; it
holds that service's pid."""


class StateFolderError(Exception):
    """
    The state folder cannot be used (the message says why, naming it).
    """


class StateFolderBusy(StateFolderError):
    """
    Another service holds the state folder.

    @ivar pid: That service's pid, if known.
    """

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


def makePrivateFolders(path: str) -> None:
    """
    Create the folder C{path} and any missing parent, each with mode
    C{0700} (an existing folder is left as it is).

    @raise OSError: If one cannot be created.
    """
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise


class StateFolder:
    """
    The state folder of one service.

    @ivar path: The folder (absolute).
    @ivar held: Whether this object holds the lock.
    """

    log = Logger(namespace="tcpext.service")

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.lockPath = os.path.join(self.path, LOCK_FILE)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """
        Does this object hold the folder's lock?
        """
        return self._fd is not None

    def open(self) -> list[str]:
        """
        Create the folder and its C{grants} folder (mode C{0700}) if needed,
        take the lock, record this process's pid in it, and remove the
        temporary files of interrupted writes.

        @return: The temporary files removed.

        @raise StateFolderBusy: If another service holds the lock (naming
            the folder and, if known, that service's pid).
        @raise StateFolderError: If the folder or the lock cannot be
            created or locked.
        """
        if self._fd is not None:
            return []
        try:
            makePrivateFolders(os.path.join(self.path, GRANTS_FOLDER))
            fd = os.open(
                self.lockPath,
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o600,
            )
        except OSError as e:
            raise StateFolderError(
                f"cannot use the state folder {self.path}: {e.strerror or e}"
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            pid = _readPid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                holder = f" (pid {pid})" if pid is not None else ""
                raise StateFolderBusy(
                    f"the state folder {self.path} is in use by another tcpext "
                    f"service{holder}; refusing to start",
                    pid,
                ) from e
            raise StateFolderError(
                f"cannot lock the state folder {self.path}: {e.strerror or e}"
            ) from e
        self._fd = fd
        self.writePid()
        return self._cleanTemporary()

    def writePid(self) -> None:
        """
        Record this process's pid in the lock file (again after twistd has
        daemonized: the lock goes with the descriptor, the pid changes).
        """
        if self._fd is None:
            return
        data = f"{os.getpid()}\n".encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError as e:
            self.log.warn(
                "cannot record the pid in {path}: {reason}",
                path=self.lockPath,
                reason=e.strerror or str(e),
            )

    def close(self) -> None:
        """
        Release the lock (the file stays; the next service reuses it).
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)

    def _cleanTemporary(self) -> list[str]:
        """
        Remove what an interrupted atomic write of a grant file left: the
        C{.<id>.*.tmp} files in the grants folder (safe: the lock says no
        other service writes there).
        """
        folder = os.path.join(self.path, GRANTS_FOLDER)
        removed: list[str] = []
        try:
            names = os.listdir(folder)
        except OSError:
            return removed
        for name in names:
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            path = os.path.join(folder, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                os.unlink(path)
            except OSError as e:
                self.log.warn(
                    "cannot remove the leftover {path}: {reason}",
                    path=path,
                    reason=e.strerror or str(e),
                )
                continue
            removed.append(path)
        if removed:
            self.log.info(
                "removed {count} temporary file(s) left by an interrupted "
                "write in {folder}",
                count=len(removed),
                folder=folder,
            )
        return removed


def _readPid(fd: int) -> int | None:
    """
    The pid a lock file holds, if it holds one.
    """
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
