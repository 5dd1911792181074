# -*- test-case-name: tests.test_socket -*-
"""
Socket-level errors of tcpext.

Connection failures themselves are reported with the exceptions Twisted users
already know (L{twisted.internet.error.ConnectionRefusedError},
L{twisted.internet.error.ConnectionLost}, ...); these are the few errors that
only the socket API can raise.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionClosed

__all__ = ["IncompleteReadError", "LimitOverrunError", "SocketClosed"]


class SocketClosed(ConnectionClosed):
    """
    The socket was closed locally (with C{close()}, C{closeWrite()} or
    C{closeImmediately()}) so the operation cannot be done: a write after a
    close, or a write that was dropped by C{closeImmediately()}.
    """

    def __init__(self, message: str = "the socket is closed") -> None:
        """
        @param message: What was refused and why.
        """
        super().__init__(message)

    def __str__(self) -> str:
        """
        The message alone.
        """
        return str(self.args[0]) if self.args else "the socket is closed"


class IncompleteReadError(EOFError):
    """
    The end of the stream came before C{readExactly()} or C{readUntil()} could
    be satisfied.

    @ivar partial: The bytes read before the end of the stream (consumed).
    @ivar expected: The number of bytes that were wanted, or L{None} when the
        read was waiting for a separator.
    """

    def __init__(self, partial: bytes, expected: int | None) -> None:
        """
        @param partial: The bytes read before the end of the stream.
        @param expected: The number of bytes wanted (L{None}: a separator).
        """
        self.partial = partial
        self.expected = expected
        if expected is None:
            what = "the separator"
        else:
            what = f"{expected} bytes"
        super().__init__(
            f"the stream ended after {len(partial)} bytes, before {what} arrived"
        )

    def __reduce__(self) -> tuple[type, tuple[bytes, int | None]]:
        """
        Pickle with the constructor's arguments.
        """
        return type(self), (self.partial, self.expected)


class LimitOverrunError(ValueError):
    """
    C{readUntil()} found no separator within its C{limit}.  The data stays
    buffered: the next read returns it.

    @ivar consumed: How many bytes were examined (buffered) when the limit was
        reached.
    """

    def __init__(self, message: str, consumed: int) -> None:
        """
        @param message: What went wrong.
        @param consumed: The number of bytes examined.
        """
        super().__init__(message)
        self.consumed = consumed

    def __reduce__(self) -> tuple[type, tuple[str, int]]:
        """
        Pickle with the constructor's arguments.
        """
        return type(self), (self.args[0], self.consumed)
