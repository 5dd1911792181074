# -*- test-case-name: tests.test_isolation_broker -*-
"""
The wire between the host and an isolated extension's process.

Everything both ends must agree on lives here, and nothing else: the host
(L{tcpext._broker}, L{tcpext._supervisor}) and the child (L{tcpext.sandbox})
both import this module, and it imports neither.

 - The AMP commands spoken over the child's descriptor L{AMP_FD}: child to
   host (L{Hello}, L{Connect}, L{Resolve}, L{Release},
   L{RequestPermissions}, L{RemovePermissions}, L{ChildRefused}, L{MainFailed}) and host to
   child (L{Grant}, L{Revoke}, L{Shutdown}, L{Ping}).  Only the host changes
   grants (its L{tcpext._ledger.GrantLedger}); the child's copy follows
   (L{Grant}, L{Revoke}), and the child can only give grants up.
 - One error table, L{ERRORS}: the exceptions a request may fail with and
   their codes on the wire, shared by the AMP commands and the synchronous
   channel; L{translateError} turns them into the exceptions in-process code
   sees.
 - The synchronous channel on descriptor L{SYNC_FD}, for the calls Twisted
   expects to return at once (C{listenTCP}): one request at a time, each a
   JSON object in a frame of a 4-byte big-endian length and the payload (at
   most L{SYNC_MAX_LENGTH} bytes); the answer is one such frame, and a
   successful answer's descriptor travels with it (C{SCM_RIGHTS}).
   L{SyncChannel} is the child's blocking end, L{SyncServerProtocol} the
   host's.
 - The child's log records on its standard error: one line per event,
   L{LOG_RECORD} and a JSON object with the event's namespace, level and
   text, already formatted by the child (L{encodeLogRecord},
   L{decodeLogRecord}); every other line of its output is plain text.
 - The child's exit codes (L{EXIT_NO_NAMESPACE}, L{EXIT_MAIN_FAILED}).
"""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.protocols import amp
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from tcpext._ledger import GrantNotSaved
from tcpext.permissions import PermissionDenied

__all__ = [
    "AMP_FD",
    "LOG_RECORD",
    "LOG_TEXT_MAX",
    "QuietAMP",
    "BadRequest",
    "BrokerLimit",
    "ChildRefused",
    "Connect",
    "Denied",
    "DialFailed",
    "ERRORS",
    "EXIT_MAIN_FAILED",
    "EXIT_NO_NAMESPACE",
    "Grant",
    "Hello",
    "AMP_MAX_BOX_BYTES",
    "AMP_MAX_KEYS",
    "ListenFailed",
    "LookupFailed",
    "MainFailed",
    "NotSaved",
    "Ping",
    "REQUEST_BURST",
    "REQUEST_RATE",
    "Refused",
    "Release",
    "RemovePermissions",
    "RequestPermissions",
    "Resolve",
    "Revoke",
    "SYNC_FD",
    "SYNC_MAX_LENGTH",
    "Shutdown",
    "SyncChannel",
    "SyncServerProtocol",
    "TimedOut",
    "decodeLogRecord",
    "encodeLogRecord",
    "errorCode",
    "errorFromCode",
    "translateError",
]


AMP_FD = 3
"""The child's descriptor for its AMP connection with the host."""

SYNC_FD = 4
"""The child's descriptor for the synchronous channel."""


# Limits on what the child sends (the host disconnects a child that breaks
# one; tcpext._broker).

AMP_MAX_KEYS = 32
"""The most keys in one AMP box from the child (the largest command has
seven, with AMP's own)."""

AMP_MAX_BOX_BYTES = 128 * 1024
"""The most bytes in one AMP box from the child, length prefixes included."""

REQUEST_RATE = 500.0
"""Requests a second a child may make on average (AMP and the synchronous
channel together); more are refused with L{BrokerLimit}."""

REQUEST_BURST = 1000
"""Requests a child may make at once before L{REQUEST_RATE} applies."""


# Exit codes of the child process.

EXIT_NO_NAMESPACE = 3
"""Exit status: confinement was required and the kernel could not provide
every layer of it."""

EXIT_MAIN_FAILED = 4
"""Exit status: the extension could not be loaded or its C{main} failed."""


# The error table.


class Denied(Exception):
    """
    The host's grants do not allow the request.
    """


class BadRequest(Exception):
    """
    The request was malformed (an invalid host or port).
    """


class Refused(Exception):
    """
    The connection was refused.
    """


class TimedOut(Exception):
    """
    The connection attempt timed out.
    """


class LookupFailed(Exception):
    """
    The name did not resolve.
    """


class DialFailed(Exception):
    """
    The connection failed for another reason.
    """


class ListenFailed(Exception):
    """
    The listening socket could not be opened.
    """


class BrokerLimit(Exception):
    """
    The extension has too many requests or sockets in flight.
    """


class NotSaved(Exception):
    """
    A runtime request was answered yes, but the host's grant store could not
    save it: nothing was granted.
    """


ERRORS: dict[type[Exception], bytes] = {
    Denied: b"DENIED",
    BadRequest: b"BAD_REQUEST",
    Refused: b"REFUSED",
    TimedOut: b"TIMEOUT",
    LookupFailed: b"LOOKUP",
    DialFailed: b"DIAL",
    ListenFailed: b"LISTEN",
    BrokerLimit: b"LIMIT",
    NotSaved: b"NOT_SAVED",
}
"""Every error a request may fail with, and its code on the wire."""

_BY_CODE = {code.decode("ascii"): error for error, code in ERRORS.items()}


def _errors(*kinds: type[Exception]) -> dict[type[Exception], bytes]:
    """
    The part of L{ERRORS} a command may fail with.
    """
    return {kind: ERRORS[kind] for kind in kinds}


def errorCode(error: Exception) -> str:
    """
    The code of an error of L{ERRORS} (or of a subclass of one).
    """
    for kind in type(error).__mro__:
        if kind in ERRORS:
            return ERRORS[kind].decode("ascii")
    raise ValueError(f"{error!r} is not an error of the wire")


def errorFromCode(code: object, message: str) -> Exception:
    """
    The error a synchronous-channel answer carries (an unknown code is a
    L{DialFailed}, so that nothing unexpected passes for success).
    """
    kind = _BY_CODE.get(code) if isinstance(code, str) else None
    return (kind or DialFailed)(message)


def translateError(failure: Failure) -> Failure:
    """
    Turn a request's failure received by the child into the exception
    in-process code would see.
    """
    error = failure.value
    text = str(error)
    if isinstance(error, Denied):
        return Failure(PermissionDenied(text))
    if isinstance(error, BadRequest):
        return Failure(ValueError(text))
    if isinstance(error, Refused):
        return Failure(ConnectionRefusedError(text))
    if isinstance(error, TimedOut):
        return Failure(TimeoutError(text))
    if isinstance(error, LookupFailed):
        return Failure(DNSLookupError(text))
    if isinstance(error, (DialFailed, BrokerLimit)):
        return Failure(ConnectError(text))
    if isinstance(error, NotSaved):
        return Failure(GrantNotSaved(text))
    return failure


# Child to host.


class Hello(amp.Command):
    """
    The child's first message: whether every confinement layer is in force
    (C{confined}), what is missing if not (C{reason}), and the layers in
    force (C{layers}).  The answer carries what it needs to build its
    C{browser}.
    """

    arguments = [
        (b"confined", amp.Boolean()),
        (b"reason", amp.Unicode()),
        (b"pid", amp.Integer()),
        (b"layers", amp.ListOf(amp.Unicode())),
    ]
    response = [
        (b"extensionId", amp.Unicode()),
        (b"path", amp.Unicode()),
        (b"manifest", amp.Unicode()),
        (b"runtimeGrants", amp.ListOf(amp.Unicode())),
        (b"operatorGrants", amp.ListOf(amp.Unicode())),
    ]
    errors = _errors(BadRequest)


class Connect(amp.Command):
    """
    Open a TCP connection to C{host}:C{port} (a name or an IP literal) and
    hand over the connected socket.

    C{name}, with an IP literal C{host}, is the name the child dials that
    address for (its browser resolved the name through L{Resolve}, or mapped
    a C{localhost} name to loopback itself).  The host does not take it on
    trust: the name must map to that address as far as the host knows (a
    C{localhost} name to L{tcpext.permissions.LOCALHOST_ADDRESSES}, any other
    name through the host's own earlier L{Resolve}), and the host's grants
    must allow the name and, under the rebinding rule, the address.
    """

    arguments = [
        (b"host", amp.Unicode()),
        (b"port", amp.Integer()),
        (b"timeout", amp.Float()),
        (b"name", amp.Unicode(optional=True)),
    ]
    response = [
        (b"socketId", amp.Integer()),
        (b"descriptor", amp.Descriptor()),
        (b"family", amp.Integer()),
    ]
    errors = _errors(
        Denied, BadRequest, Refused, TimedOut, LookupFailed, DialFailed, BrokerLimit
    )


class Resolve(amp.Command):
    """
    Resolve a name for a port the extension may connect to; answers the
    addresses that may be dialed for it (the host's rebinding rule), never
    those it refused.  Fails with L{Denied} when the name may not be
    resolved for that port, or when every address is refused.
    """

    arguments = [(b"name", amp.Unicode()), (b"port", amp.Integer())]
    response = [(b"addresses", amp.ListOf(amp.Unicode()))]
    errors = _errors(Denied, BadRequest, LookupFailed, BrokerLimit)


class Release(amp.Command):
    """
    The child has closed these sockets: the host closes its copies.  (The
    host keeps a copy of every socket it handed over, so that it can shut a
    socket down itself when a grant is revoked.)
    """

    arguments = [(b"socketIds", amp.ListOf(amp.Integer()))]


class RequestPermissions(amp.Command):
    """
    C{browser.permissions.request}: the host asks its prompt policy and, if
    granted, saves then grants them itself (telling the child with
    L{Grant} before it answers).  L{NotSaved} if the store failed.
    """

    arguments = [(b"permissions", amp.ListOf(amp.Unicode()))]
    response = [(b"granted", amp.Boolean())]
    errors = _errors(BadRequest, BrokerLimit, NotSaved)


class RemovePermissions(amp.Command):
    """
    C{browser.permissions.remove}: the extension gives these optional
    permissions up; the host takes them away (and saves).  The only grant
    change a child can cause, besides asking.
    """

    arguments = [(b"permissions", amp.ListOf(amp.Unicode()))]
    response = [(b"removed", amp.Boolean())]
    errors = _errors(BadRequest, BrokerLimit)


class ChildRefused(amp.Command):
    """
    The extension's process refused one of the extension's requests itself
    (its copy of the grants did not allow it), so the host was never asked:
    reported for the host's audit trail.  No answer; the host takes it from
    the child's request rate and records it rate-limited.
    """

    arguments = [
        (b"verb", amp.Unicode()),
        (b"target", amp.Unicode()),
        (b"reason", amp.Unicode()),
    ]
    requiresAnswer = False


class MainFailed(amp.Command):
    """
    The extension's script could not be loaded or its C{main} failed.
    """

    arguments = [(b"reason", amp.Unicode())]


# Host to child.


class Grant(amp.Command):
    """
    These grants were given (a runtime request answered yes, or the
    operator): the child's copy of the grants follows.
    """

    arguments = [(b"permissions", amp.ListOf(amp.Unicode()))]


class Revoke(amp.Command):
    """
    These grants were withdrawn: the child removes them and closes what no
    remaining grant allows.
    """

    arguments = [(b"permissions", amp.ListOf(amp.Unicode()))]


class Shutdown(amp.Command):
    """
    Close every socket of the extension and exit.
    """


class Ping(amp.Command):
    """
    Is the child's reactor running?
    """


class QuietAMP(amp.AMP):
    """
    AMP without its "connection established" and "connection lost" log
    lines: the channel between host and child is an internal detail, which
    an extension's log (the same in process and isolated) does not show.
    """

    def makeConnection(self, transport: Any) -> None:
        """
        Connect, without a log line.
        """
        self._transportPeer = transport.getPeer()
        self._transportHost = transport.getHost()
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """
        Disconnect, without a log line.
        """
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None


# Log records on the child's standard error.

LOG_RECORD = b"\x1e"
"""The first byte of a line of the child's standard error that holds a log
record (ASCII record separator); other lines are plain text."""

LOG_TEXT_MAX = 60000
"""The longest text of one log record, in characters (longer text is cut);
a record line stays under 64 KiB."""

_LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


def encodeLogRecord(namespace: str, level: str, text: str) -> bytes:
    """
    One log record as the child writes it: L{LOG_RECORD}, a JSON object, a
    newline (the text cut to L{LOG_TEXT_MAX} characters).
    """
    if len(text) > LOG_TEXT_MAX:
        text = text[:LOG_TEXT_MAX] + " [cut]"
    return (
        LOG_RECORD
        + json.dumps({"n": namespace[:200], "l": level, "t": text}).encode("utf-8")
        + b"\n"
    )


def decodeLogRecord(line: bytes) -> tuple[str, str, str] | None:
    """
    The namespace, level name and text of a log record line (without its
    newline), or L{None} if it is not a well-formed one (the host then logs
    the line as plain text).
    """
    if not line.startswith(LOG_RECORD):
        return None
    try:
        record = json.loads(line[len(LOG_RECORD) :].decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    namespace, level, text = record.get("n"), record.get("l"), record.get("t")
    if (
        not isinstance(namespace, str)
        or not isinstance(text, str)
        or level not in _LOG_LEVELS
        or not 0 < len(namespace) <= 200
        or not namespace.isprintable()
    ):
        return None
    return namespace, level, text[: LOG_TEXT_MAX + 6]


# The synchronous channel.

SYNC_MAX_LENGTH = 4096
"""The longest frame (payload bytes) either end of the channel accepts."""

_LENGTH = struct.Struct("!I")


def _frame(message: dict[str, Any]) -> bytes:
    payload = json.dumps(message).encode("utf-8")
    return _LENGTH.pack(len(payload)) + payload


class SyncChannel:
    """
    The child's blocking end of the synchronous channel: the host opens the
    socket at once, so the wait is one local round trip.
    """

    timeout = 30.0
    """Seconds to wait for the host's answer."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sock.settimeout(self.timeout)

    def call(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """
        Send one JSON request and wait for its answer and any descriptors.

        @raise OSError: if the host went away (C{ConnectionError}), did not
            answer in time (C{TimeoutError}) or answered with a frame longer
            than L{SYNC_MAX_LENGTH} (C{ConnectionError}).
        """
        self._sock.sendall(_frame(request))
        data = b""
        fds: list[int] = []
        needed = _LENGTH.size
        try:
            while len(data) < needed:
                chunk, received, _, _ = socket.recv_fds(
                    self._sock, needed - len(data), 4
                )
                fds.extend(received)
                if not chunk:
                    raise ConnectionError("the host closed the listen channel")
                data += chunk
                if needed == _LENGTH.size and len(data) >= needed:
                    (length,) = _LENGTH.unpack(data[: _LENGTH.size])
                    if length > SYNC_MAX_LENGTH:
                        raise ConnectionError(
                            f"the host sent a {length}-byte answer "
                            f"(at most {SYNC_MAX_LENGTH})"
                        )
                    needed += length
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return json.loads(data[_LENGTH.size :].decode("utf-8")), fds


class SyncServerProtocol(Int32StringReceiver):
    """
    The host's end of the synchronous channel: decodes each request frame,
    answers it with L{handle}'s result (and its descriptor) or with the
    request's error from L{ERRORS}.  A frame longer than L{SYNC_MAX_LENGTH}
    ends the channel (L{tooLong} is told first).
    """

    MAX_LENGTH = SYNC_MAX_LENGTH

    def handle(self, request: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
        """
        Answer one request: the answer's fields and the descriptor to pass
        with it (or L{None}).  Raise an error of L{ERRORS} to refuse.
        """
        raise NotImplementedError(type(self).__name__ + ".handle")

    def tooLong(self, length: int) -> None:
        """
        Called with the announced length of a frame that is too long, before
        the channel is closed.
        """

    def stringReceived(self, data: bytes) -> None:
        """
        Answer one request.
        """
        try:
            request = json.loads(data.decode("utf-8"))
            if not isinstance(request, dict):
                raise BadRequest(f"unknown request {request!r}")
            fields, descriptor = self.handle(request)
        except tuple(ERRORS) as e:
            self._answer({"ok": False, "error": errorCode(e), "message": str(e)})
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
            self._answer({"ok": False, "error": "BAD_REQUEST", "message": str(e)})
        except RecursionError:
            self._answer(
                {"ok": False, "error": "BAD_REQUEST", "message": "nested too deeply"}
            )
        else:
            if descriptor is not None:
                self.transport.sendFileDescriptor(  # type: ignore[union-attr]
                    descriptor
                )
            self._answer({"ok": True, **fields})

    def _answer(self, answer: dict[str, Any]) -> None:
        self.transport.write(_frame(answer))  # type: ignore[union-attr]

    def lengthLimitExceeded(self, length: int) -> None:
        """
        A frame this long is not a request: hang up.
        """
        self.tooLong(length)
        self.transport.abortConnection()  # type: ignore[union-attr]
