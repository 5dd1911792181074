# -*- test-case-name: tests.test_isolation_broker -*-
"""
An isolated extension's output, logged by the host as if the extension ran
in the host's process.

The child writes each log event as one record line on its standard error
(L{tcpext._wire.encodeLogRecord}: namespace, level and the text the child
formatted); L{ChildOutput} re-emits it on the host's log publisher with the
same namespace, level and text, so the host's log reads as it would for
the same extension in process.  Any other line (C{print}, a library writing
to a descriptor) is plain text: the standard output's at C{info}, the
standard error's at C{error}, as twistd logs its own standard output and
error.

Bounds: a line is cut at L{ChildOutput.maxLine} bytes (the rest of it is
skipped), and at most C{rate} lines a second are logged.  Past the rate,
lines are counted, and the count is logged at the end of that second
("N lines of output from EXT dropped"); the last few dropped lines are
kept and, if the process ends before a later second lets lines through,
logged after the count, so that its last words (a failure, its shutdown)
arrive.

Namespaces: events in the extension's own namespace
(C{tcpext.extension.<id>} and below) keep theirs; any other namespace N is
logged as C{tcpext.extension.<id>.N}, so that an isolated extension cannot
pass its lines off as the service's or another extension's (plain text goes
to C{.stdout} and C{.stderr} below the extension's namespace).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.logger import Logger, LogLevel

from tcpext._wire import decodeLogRecord

__all__ = ["ChildOutput", "DEFAULT_LOG_RATE"]

DEFAULT_LOG_RATE = 200
"""Lines a second logged from one extension process, by default."""

_PLAIN = {1: ("stdout", LogLevel.info), 2: ("stderr", LogLevel.error)}


def _escape(text: str) -> str:
    """
    C{text} as a log format that formats to itself.
    """
    return text.replace("{", "{{").replace("}", "}}")


class ChildOutput:
    """
    The output of one extension process, turned into the host's log events.

    @ivar dropped: Lines dropped by the rate limit and not yet reported.
    """

    maxLine = 65536
    """The longest line kept, in bytes (a log record's text is shorter)."""

    def __init__(
        self,
        reactor: Any,
        log: Logger,
        extensionId: str,
        rate: int = DEFAULT_LOG_RATE,
        keepLast: int = 20,
    ) -> None:
        """
        @param reactor: An C{IReactorTime}.
        @param log: The extension's logger on the host (its namespace is the
            extension's, C{tcpext.extension.<id>}; its observer receives the
            events).
        @param extensionId: The extension's id (for the drop reports and the
            events' C{extensionId} field).
        @param rate: The most lines logged per second.
        @param keepLast: How many of the last dropped lines are kept for the
            process's end.
        """
        if rate < 1:
            raise ValueError(f"the log rate must be at least 1, not {rate}")
        self._reactor = reactor
        self._log = log
        self._root = log.namespace
        self.extensionId = extensionId
        self.rate = rate
        self._buffers: dict[int, bytearray] = {}
        self._skipping: set[int] = set()
        self._window = -1.0
        self._count = 0
        self.dropped = 0
        self._last: deque[tuple[int, bytes]] = deque(maxlen=keepLast)
        self._timer: Any = None
        self._loggers: dict[str, Logger] = {}

    # Input.

    def received(self, fd: int, data: bytes) -> None:
        """
        Output from the child on descriptor C{fd}: log each complete line.
        """
        buffer = self._buffers.setdefault(fd, bytearray())
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if fd in self._skipping:
                self._skipping.discard(fd)
            else:
                buffer += data[start:end]
                self._line(fd, bytes(buffer[: self.maxLine]))
            buffer.clear()
            start = end + 1
        if fd in self._skipping:
            return
        buffer += data[start:]
        if len(buffer) > self.maxLine:
            # A line without end: log what fits, skip the rest of it.
            self._line(fd, bytes(buffer[: self.maxLine]))
            buffer.clear()
            self._skipping.add(fd)

    def close(self) -> None:
        """
        The process has ended and its output is closed: log what is left of
        it (a last line without its newline), then the count of dropped
        lines, then the last ones dropped.
        """
        for fd, buffer in sorted(self._buffers.items()):
            if buffer and fd not in self._skipping:
                self._line(fd, bytes(buffer[: self.maxLine]))
        self._buffers.clear()
        last = list(self._last)
        self.dropped -= len(last)
        self._reportDropped()
        for fd, line in last:
            self._emit(fd, line)

    # The rate.

    def _line(self, fd: int, line: bytes) -> None:
        now = self._reactor.seconds()
        if now - self._window >= 1.0:
            self._window, self._count = now, 0
            self._last.clear()
        self._count += 1
        if self._count <= self.rate:
            self._emit(fd, line)
            return
        self.dropped += 1
        self._last.append((fd, line))
        if self._timer is None or not self._timer.active():
            self._timer = self._reactor.callLater(
                max(0.0, self._window + 1.0 - now), self._endOfWindow
            )

    def _endOfWindow(self) -> None:
        self._timer = None
        self._last.clear()
        self._reportDropped()

    def _reportDropped(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        count, self.dropped = self.dropped, 0
        if count > 0:
            self._log.warn(
                "{count} lines of output from {extensionId} dropped (more than "
                "{rate} a second)",
                count=count,
                extensionId=self.extensionId,
                rate=self.rate,
            )

    # Events.

    def _emit(self, fd: int, line: bytes) -> None:
        record = decodeLogRecord(line) if fd == 2 else None
        if record is not None:
            namespace, levelName, text = record
            level = LogLevel.levelWithName(levelName)
        else:
            namespace, level = _PLAIN.get(fd, ("stdout", LogLevel.info))
            text = line.decode("utf-8", "replace").rstrip("\r")
        self._logger(namespace).emit(level, _escape(text), extensionId=self.extensionId)

    def _logger(self, namespace: str) -> Logger:
        """
        The host's logger for an event of the child in C{namespace}.
        """
        if not (namespace == self._root or namespace.startswith(self._root + ".")):
            namespace = f"{self._root}.{namespace}"
        logger = self._loggers.get(namespace)
        if logger is None:
            logger = Logger(namespace=namespace, observer=self._log.observer)
            if len(self._loggers) < 64:
                self._loggers[namespace] = logger
        return logger
