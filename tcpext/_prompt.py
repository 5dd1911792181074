# -*- test-case-name: tests.test_service -*-
"""
The terminal prompt for C{--prompt tty}: asks the operator, on the
controlling terminal, whether an extension may have the optional
permissions it requests.
"""

from __future__ import annotations

import os
import termios
import unicodedata
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["TTYPrompt", "escapeForTerminal", "openControllingTerminal"]

DEFAULT_TIMEOUT = 120.0
"""
Seconds the prompt waits for an answer before it refuses.
"""

_MAX_ANSWER = 256


def escapeForTerminal(text: str) -> str:
    """
    Make C{text} safe to show on a terminal: every character that is not
    printable (control characters such as ESC, BEL and CR, format characters
    such as bidirectional overrides, line and paragraph separators,
    surrogates, unassigned code points) is shown as a Python-style escape
    (C{\\x1b}, C{\\u202e}), and a backslash as two, so nothing in C{text} can
    move the cursor, recolour, retitle or rewrite the terminal, or pass for
    an escape that is not there.
    """
    out = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        elif c == " " or (unicodedata.category(c)[0] not in "CZ" and c.isprintable()):
            out.append(c)
        else:
            code = ord(c)
            if code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    return "".join(out)


def openControllingTerminal() -> int:
    """
    Open the process's controlling terminal for reading and writing.

    @raise OSError: If there is none.
    """
    return os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)


@implementer(IReadDescriptor)
class _AnswerReader:
    """
    Reads one line from the terminal without blocking the reactor.
    """

    def __init__(self, fd: int, answered: Callable[[bytes | None], None]) -> None:
        self._fd = fd
        self._buffer = b""
        self._answered = answered

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "tcpext-tty-prompt"

    def doRead(self) -> None:
        try:
            data = os.read(self._fd, 1024)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self._answered(None)
            return None
        self._buffer += data
        if b"\n" in self._buffer or b"\r" in self._buffer:
            line = self._buffer.replace(b"\r", b"\n").split(b"\n", 1)[0]
            self._answered(line)
        elif len(self._buffer) > _MAX_ANSWER:
            self._answered(b"")
        return None

    def connectionLost(self, reason: Failure) -> None:
        self._answered(None)


class TTYPrompt:
    """
    A prompt policy (see L{tcpext.browser.PromptPolicy}) that asks on the
    terminal.

    It shows the extension's id and each permission (escaped with
    L{escapeForTerminal}), discards anything typed before the question,
    reads one line without blocking the reactor, and grants only for C{y}
    or C{yes}.  Anything else, end of file, no terminal
    or no answer within C{timeout} seconds refuses; refusals for lack of a
    terminal or of an answer are logged.  Requests from several extensions
    are asked one at a time.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        openTTY: Callable[[], int] = openControllingTerminal,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """
        @param reactor: An C{IReactorFDSet} and C{IReactorTime}.
        @param openTTY: Returns a new descriptor of the terminal to ask on;
            the prompt closes it after each question.
        @param timeout: Seconds to wait for an answer.
        """
        self._reactor = reactor
        self._openTTY = openTTY
        self._timeout = timeout
        self._lock = DeferredLock()
        self._stopped = False
        self._current: Callable[[bytes | None], None] | None = None

    def __call__(self, extensionId: str, permissions: list[str]) -> Deferred[bool]:
        """
        Ask whether C{extensionId} may have C{permissions}.

        @return: A L{Deferred} that fires with the answer.
        """
        return self._lock.run(self._ask, extensionId, list(permissions))

    def stop(self) -> None:
        """
        Refuse the question being asked, if any, and every later one.
        """
        self._stopped = True
        if self._current is not None:
            self._current(None)

    def _ask(self, extensionId: str, permissions: list[str]) -> Deferred[bool]:
        """
        Ask one question.
        """
        if self._stopped:
            return defer.succeed(False)
        try:
            fd = self._openTTY()
        except OSError as e:
            self.log.warn(
                "extension {extensionId!r}: refused {permissions}: no terminal "
                "to ask on ({reason})",
                extensionId=extensionId,
                permissions=permissions,
                reason=str(e),
            )
            return defer.succeed(False)
        question = (
            f"\ntcpext: extension '{escapeForTerminal(extensionId)}' asks for:\n"
            + "".join(f"  {escapeForTerminal(p)}\n" for p in permissions)
            + "Allow? [y/N] "
        )
        result: Deferred[bool] = Deferred()

        def answered(line: bytes | None) -> None:
            if self._current is not answered:
                return
            self._current = None
            self._reactor.removeReader(reader)
            if timer.active():
                timer.cancel()
            os.close(fd)
            if line is None:
                self.log.warn(
                    "extension {extensionId!r}: refused {permissions}: no answer",
                    extensionId=extensionId,
                    permissions=permissions,
                )
                result.callback(False)
                return
            answer = line.strip().lower()
            result.callback(answer in (b"y", b"yes"))

        self._current = answered
        reader = _AnswerReader(fd, answered)
        timer = self._reactor.callLater(self._timeout, answered, None)
        try:
            os.set_blocking(fd, False)
            if os.isatty(fd):
                # Keystrokes typed before the question must not answer it.
                termios.tcflush(fd, termios.TCIFLUSH)
            os.write(fd, question.encode("utf-8", "backslashreplace"))
        except OSError as e:
            self.log.warn(
                "extension {extensionId!r}: refused {permissions}: cannot "
                "write to the terminal ({reason})",
                extensionId=extensionId,
                permissions=permissions,
                reason=str(e),
            )
            self._current = None
            timer.cancel()
            os.close(fd)
            return defer.succeed(False)
        self._reactor.addReader(reader)
        return result
