# -*- test-case-name: tests.test_isolation_broker -*-
"""
The host side of process isolation: the AMP protocol spoken with an isolated
extension's process, and the broker that opens sockets for it.

An isolated extension runs in its own process inside an empty network
namespace (L{tcpext._isolation}).  The only sockets that reach the outside are
those the host opens for it: the child asks over an AMP connection on a UNIX
socket pair (L{Connect}, L{Listen}, L{Resolve}); the host checks the request
against the extension's grants with the same L{tcpext.permissions} code and
rebinding rule as the in-process reactor, opens the socket, and passes its
file descriptor back (C{SCM_RIGHTS}).  The child then adopts it with
C{adoptStreamConnection} / C{adoptStreamPort}.

The host holds the authoritative grants: a child that skips its own checks
still gets nothing the grants do not allow.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.internet.interfaces import (
    IAddress,
    IHostResolution,
    IReadDescriptor,
    IResolutionReceiver,
    IWriteDescriptor,
)
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "BadRequest",
    "BrokerLimit",
    "BrokerProtocol",
    "Connect",
    "Denied",
    "DialFailed",
    "Hello",
    "Listen",
    "ListenFailed",
    "LookupFailed",
    "MainFailed",
    "Refused",
    "Release",
    "RequestPermissions",
    "Resolve",
    "Revoke",
    "SaveGrants",
    "Shutdown",
    "SyncListenProtocol",
    "TimedOut",
    "dialTCP",
    "openListener",
    "translateError",
]


# Errors carried over AMP.  The child turns them back into the exceptions an
# in-process extension would see (tcpext.sandbox._translate).


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


_CONNECT_ERRORS: dict[type[Exception], bytes] = {
    Denied: b"DENIED",
    BadRequest: b"BAD_REQUEST",
    Refused: b"REFUSED",
    TimedOut: b"TIMEOUT",
    LookupFailed: b"LOOKUP",
    DialFailed: b"DIAL",
    BrokerLimit: b"LIMIT",
}


# Child to host.


class Hello(amp.Command):
    """
    The child's first message: whether it is confined to its own network
    namespace.  The answer carries what it needs to build its C{browser}.
    """

    arguments = [
        (b"confined", amp.Boolean()),
        (b"reason", amp.Unicode()),
        (b"pid", amp.Integer()),
    ]
    response = [
        (b"extensionId", amp.Unicode()),
        (b"path", amp.Unicode()),
        (b"manifest", amp.Unicode()),
        (b"runtimeGrants", amp.ListOf(amp.Unicode())),
        (b"operatorGrants", amp.ListOf(amp.Unicode())),
    ]
    errors = {BadRequest: b"BAD_REQUEST"}


class Connect(amp.Command):
    """
    Open a TCP connection to C{host}:C{port} (a name or an IP literal) and
    hand over the connected socket.
    """

    arguments = [
        (b"host", amp.Unicode()),
        (b"port", amp.Integer()),
        (b"timeout", amp.Float()),
    ]
    response = [
        (b"socketId", amp.Integer()),
        (b"descriptor", amp.Descriptor()),
        (b"family", amp.Integer()),
    ]
    errors = _CONNECT_ERRORS


class Listen(amp.Command):
    """
    Open a listening TCP socket and hand it over.  C{port} 0 means chosen
    automatically; C{interface} "" means all IPv4 interfaces.
    """

    arguments = [
        (b"port", amp.Integer()),
        (b"interface", amp.Unicode()),
        (b"backlog", amp.Integer()),
    ]
    response = [
        (b"socketId", amp.Integer()),
        (b"descriptor", amp.Descriptor()),
        (b"family", amp.Integer()),
    ]
    errors = {
        Denied: b"DENIED",
        BadRequest: b"BAD_REQUEST",
        ListenFailed: b"LISTEN",
        BrokerLimit: b"LIMIT",
    }


class Resolve(amp.Command):
    """
    Resolve a name for a port the extension may connect to; answers every
    address found (the child applies the rebinding rule as in-process code
    does, and the host applies it again on L{Connect}).
    """

    arguments = [(b"name", amp.Unicode()), (b"port", amp.Integer())]
    response = [(b"addresses", amp.ListOf(amp.Unicode()))]
    errors = {
        Denied: b"DENIED",
        BadRequest: b"BAD_REQUEST",
        LookupFailed: b"LOOKUP",
        BrokerLimit: b"LIMIT",
    }


class Release(amp.Command):
    """
    The child has adopted these sockets: the host closes its copies.
    """

    arguments = [(b"socketIds", amp.ListOf(amp.Integer()))]


class RequestPermissions(amp.Command):
    """
    C{browser.permissions.request}: the host asks its prompt policy and, if
    granted, adds and persists the grants itself.
    """

    arguments = [(b"permissions", amp.ListOf(amp.Unicode()))]
    response = [(b"granted", amp.Boolean())]
    errors = {BadRequest: b"BAD_REQUEST"}


class SaveGrants(amp.Command):
    """
    The child's grant store saves its runtime grants: the host accepts
    removals only (a child cannot grant itself anything).
    """

    arguments = [(b"entries", amp.ListOf(amp.Unicode()))]


class MainFailed(amp.Command):
    """
    The extension's script could not be loaded or its C{main} failed.
    """

    arguments = [(b"reason", amp.Unicode())]


# Host to child.


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


# Opening sockets on the host.


@implementer(IReadDescriptor, IWriteDescriptor)
class _PendingConnect:
    """
    A non-blocking C{connect()} in progress, watched by the reactor until the
    socket becomes writable.
    """

    def __init__(
        self, reactor: Any, sock: socket.socket, description: str, timeout: float
    ) -> None:
        self._reactor = reactor
        self._sock = sock
        self._description = description
        self.deferred: Deferred[socket.socket] = Deferred(self._cancel)
        self._timer = reactor.callLater(timeout, self._timedOut)

    def fileno(self) -> int:
        """
        The socket's descriptor (-1 once given up).
        """
        return self._sock.fileno()

    def logPrefix(self) -> str:
        """
        For the reactor's logs.
        """
        return "tcpext-broker-connect"

    def doRead(self) -> None:
        """
        Never registered for reading.
        """

    def doWrite(self) -> None:
        """
        The connection attempt ended: look at C{SO_ERROR}.
        """
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == 0:
            self._finish()
            self.deferred.callback(self._sock)
        else:
            self._fail(_connectError(err, self._description))

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor saw an error or hang-up on the socket (a refused connect
        shows up this way): report C{SO_ERROR} when there is one.
        """
        if self.deferred.called:
            return
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(_connectError(err, self._description))
        else:
            self._fail(DialFailed(f"{self._description}: {reason.getErrorMessage()}"))

    def _finish(self) -> None:
        self._reactor.removeWriter(self)
        if self._timer.active():
            self._timer.cancel()

    def _fail(self, error: Exception) -> None:
        if self.deferred.called:
            return
        self._finish()
        self._sock.close()
        self.deferred.errback(error)

    def _timedOut(self) -> None:
        self._fail(TimedOut(f"connection to {self._description} timed out"))

    def _cancel(self, d: Deferred[socket.socket]) -> None:
        self._finish()
        self._sock.close()


def _connectError(err: int, description: str) -> Exception:
    """
    The broker error for a C{connect()} that failed with C{err}.
    """
    text = f"{description}: {os.strerror(err)}"
    if err == errno.ECONNREFUSED:
        return Refused(text)
    if err == errno.ETIMEDOUT:
        return TimedOut(text)
    return DialFailed(text)


def _family(address: str) -> int:
    """
    C{AF_INET} or C{AF_INET6} for an IP literal.
    """
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def dialTCP(
    reactor: Any, address: str, port: int, timeout: float = 30.0
) -> Deferred[socket.socket]:
    """
    Connect a new non-blocking TCP socket to the IP literal C{address}.

    @return: a L{Deferred} firing with the connected socket, or failing with
        L{Refused}, L{TimedOut} or L{DialFailed}.
    """
    description = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    sock = socket.socket(_family(address), socket.SOCK_STREAM)
    sock.setblocking(False)
    err = sock.connect_ex((address, port))
    if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
        sock.close()
        return defer.fail(_connectError(err, description))
    pending = _PendingConnect(reactor, sock, description, timeout)
    reactor.addWriter(pending)
    return pending.deferred


def openListener(interface: str, port: int, backlog: int) -> socket.socket:
    """
    A non-blocking listening TCP socket on C{interface} (an IP literal, or
    "" for all IPv4 interfaces) and C{port}.

    @raise ListenFailed: with the reason when the OS refuses.
    """
    family = _family(interface) if interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((interface, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ListenFailed(f"cannot listen on {interface or '*'}:{port}: {e}") from e
    return sock


@implementer(IResolutionReceiver)
class _Addresses:
    """
    Collects the addresses of one resolution into a L{Deferred}.
    """

    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.deferred: Deferred[list[str]] = Deferred()

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        """
        Nothing to keep.
        """

    def addressResolved(self, address: IAddress) -> None:
        """
        Keep each IP address once, in order.
        """
        if isinstance(address, (IPv4Address, IPv6Address)):
            host = address.host.split("%", 1)[0]
            if host not in self.addresses:
                self.addresses.append(host)

    def resolutionComplete(self) -> None:
        """
        Fire with what was found.
        """
        self.deferred.callback(self.addresses)


def _ipLiteral(host: str) -> str | None:
    """
    The canonical text of C{host} if it is an IP literal (brackets allowed),
    else L{None}.
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _checkPort(port: int, lowest: int) -> None:
    if not isinstance(port, int) or isinstance(port, bool):
        raise BadRequest(f"port must be an int, not {port!r}")
    if not lowest <= port <= 65535:
        raise BadRequest(f"port {port} is outside {lowest}..65535")


class BrokerProtocol(amp.AMP):
    """
    The host's end of the AMP connection with one isolated extension's
    process: it answers L{Connect}, L{Listen} and L{Resolve} within C{grants}.

    @ivar grants: The host's live L{tcpext.permissions.PermissionSet} for this
        extension (the authority; the child's copy is advisory).
    """

    maxOutstanding = 64
    """Requests in progress above which the host stops reading the child."""

    maxFlood = 1024
    """Requests in progress above which the child is disconnected."""

    maxUnreleased = 256
    """Sockets handed over and not yet released by the child."""

    maxRemembered = 4096
    """Resolved (address, port) pairs remembered for later connects."""

    def __init__(
        self,
        reactor: Any,
        grants: Any,
        log: Logger,
        owner: Any = None,
        connectTimeout: float = 30.0,
    ) -> None:
        """
        @param reactor: The host's reactor (with a C{nameResolver}).
        @param grants: A L{tcpext.permissions.PermissionSet} (or anything
            with C{checkConnect}, C{checkListen} and C{checkResolved}).
        @param log: Where refusals and problems are logged.
        @param owner: The L{tcpext._supervisor.IsolatedExtension} (or any
            object) answering L{Hello}, L{RequestPermissions}, L{SaveGrants}
            and L{MainFailed}, or L{None} in tests.
        @param connectTimeout: The longest connect attempt, in seconds.
        """
        super().__init__()
        self._reactor = reactor
        self.grants = grants
        self.log = log
        self.owner = owner
        self._connectTimeout = connectTimeout
        self._unreleased: dict[int, socket.socket] = {}
        self._nextId = 1
        self._resolved: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._outstanding = 0
        self._paused = False
        self.lost: Deferred[None] = Deferred()

    # Flow control: a child cannot make the host queue unbounded work.

    def _begin(self) -> None:
        self._outstanding += 1
        if self._outstanding > self.maxFlood:
            self.log.error(
                "the extension flooded the broker with {count} requests; "
                "disconnecting it",
                count=self._outstanding,
            )
            assert self.transport is not None
            self.transport.abortConnection()  # type: ignore[attr-defined]
        elif self._outstanding > self.maxOutstanding and not self._paused:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def _end(self, result: object) -> object:
        self._outstanding -= 1
        if self._paused and self._outstanding <= self.maxOutstanding // 2:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]
        return result

    def _tracked(self, d: Deferred[Any]) -> Deferred[Any]:
        self._begin()
        return d.addBoth(self._end)

    def _refuse(self, request: str, error: Exception) -> Exception:
        self.log.warn(
            "broker refused {request}: {reason}", request=request, reason=str(error)
        )
        return error

    # Handing sockets over.

    def _handOver(self, sock: socket.socket) -> dict[str, int]:
        if len(self._unreleased) >= self.maxUnreleased:
            sock.close()
            raise BrokerLimit(
                f"{len(self._unreleased)} sockets handed over and not released"
            )
        socketId = self._nextId
        self._nextId += 1
        self._unreleased[socketId] = sock
        return {
            "socketId": socketId,
            "descriptor": sock.fileno(),
            "family": sock.family,
        }

    @Release.responder
    def release(self, socketIds: list[int]) -> dict[str, object]:
        """
        Close the host's copies of sockets the child has adopted.
        """
        for socketId in socketIds:
            sock = self._unreleased.pop(socketId, None)
            if sock is not None:
                sock.close()
        return {}

    # Connect.

    def _remember(self, name: str, addresses: Iterable[str], port: int) -> None:
        for address in addresses:
            self._resolved[(address, port)] = name
            self._resolved.move_to_end((address, port))
        while len(self._resolved) > self.maxRemembered:
            self._resolved.popitem(last=False)

    def _lookup(self, name: str, port: int) -> Deferred[list[str]]:
        if name.rstrip(".").lower() == "localhost":
            return defer.succeed(["127.0.0.1", "::1"])
        receiver = _Addresses()
        self._reactor.nameResolver.resolveHostName(
            receiver, name, portNumber=port, transportSemantics="TCP"
        )
        return receiver.deferred

    @Connect.responder
    def connect(self, host: str, port: int, timeout: float) -> Deferred[Any]:
        """
        Check, resolve if needed, dial, and hand the connected socket over.
        """
        return self._tracked(defer.ensureDeferred(self._connect(host, port, timeout)))

    async def _connect(self, host: str, port: int, timeout: float) -> dict[str, int]:
        request = f"connect to {host}:{port}"
        _checkPort(port, 1)
        if not 0 < timeout <= self._connectTimeout:
            timeout = self._connectTimeout
        literal = _ipLiteral(host)
        if literal is not None:
            try:
                self.grants.checkConnect(literal, port)
            except ValueError as e:
                raise self._refuse(request, BadRequest(str(e)))
            except Exception as e:
                name = self._resolved.get((literal, port))
                if name is None:
                    raise self._refuse(request, Denied(str(e)))
                try:
                    self.grants.checkConnect(name, port)
                    self.grants.checkResolved(name, port, [literal])
                except Exception as e2:
                    raise self._refuse(request, Denied(str(e2)))
            addresses = [literal]
        else:
            try:
                self.grants.checkConnect(host, port)
            except ValueError as e:
                raise self._refuse(request, BadRequest(str(e)))
            except Exception as e:
                raise self._refuse(request, Denied(str(e)))
            found = await self._lookup(host, port)
            if not found:
                raise LookupFailed(f"{host} did not resolve")
            try:
                addresses = list(self.grants.checkResolved(host, port, found))
            except Exception as e:
                raise self._refuse(request, Denied(str(e)))
        last: Exception = DialFailed(f"no address to dial for {host}")
        for address in addresses:
            try:
                sock = await dialTCP(self._reactor, address, port, timeout)
            except (Refused, TimedOut, DialFailed) as e:
                last = e
                continue
            return self._handOver(sock)
        raise last

    # Listen.

    @Listen.responder
    def listen(self, port: int, interface: str, backlog: int) -> dict[str, int]:
        """
        Check the listen grant, open the listening socket, hand it over.
        """
        self._begin()
        try:
            return self._listen(port, interface, backlog)
        finally:
            self._end(None)

    def _listen(self, port: int, interface: str, backlog: int) -> dict[str, int]:
        request = f"listen on {interface or '*'}:{port}"
        _checkPort(port, 0)
        if interface:
            literal = _ipLiteral(interface)
            if literal is None:
                raise self._refuse(
                    request, BadRequest(f"interface {interface!r} is not an IP")
                )
            interface = literal
        try:
            self.grants.checkListen(port, interface or None)
        except ValueError as e:
            raise self._refuse(request, BadRequest(str(e)))
        except Exception as e:
            raise self._refuse(request, Denied(str(e)))
        backlog = max(1, min(int(backlog), 4096))
        return self._handOver(openListener(interface, port, backlog))

    # Resolve.

    @Resolve.responder
    def resolve(self, name: str, port: int) -> Deferred[Any]:
        """
        Resolve a name the grants let the extension connect to.
        """
        return self._tracked(defer.ensureDeferred(self._resolve(name, port)))

    async def _resolve(self, name: str, port: int) -> dict[str, list[str]]:
        request = f"resolve {name} for port {port}"
        _checkPort(port, 1)
        try:
            self.grants.checkConnect(name, port)
        except ValueError as e:
            raise self._refuse(request, BadRequest(str(e)))
        except Exception as e:
            raise self._refuse(request, Denied(str(e)))
        found = await self._lookup(name, port)
        try:
            allowed = list(self.grants.checkResolved(name, port, found))
        except Exception:
            allowed = []
        self._remember(name, allowed, port)
        return {"addresses": found}

    # Delegated to the owner.

    @Hello.responder
    def hello(self, confined: bool, reason: str, pid: int) -> Any:
        """
        The child is up: the owner answers with what it needs.
        """
        if self.owner is None:
            raise BadRequest("no extension attached")
        return self.owner.childHello(self, confined, reason, pid)

    @RequestPermissions.responder
    def requestPermissions(self, permissions: list[str]) -> Any:
        """
        Ask the owner's prompt policy.
        """
        if self.owner is None:
            return {"granted": False}
        return self._tracked(
            defer.maybeDeferred(self.owner.requestPermissions, permissions).addCallback(
                lambda granted: {"granted": bool(granted)}
            )
        )

    @SaveGrants.responder
    def saveGrants(self, entries: list[str]) -> dict[str, object]:
        """
        Let the owner accept removals.
        """
        if self.owner is not None:
            self.owner.saveGrants(entries)
        return {}

    @MainFailed.responder
    def mainFailed(self, reason: str) -> dict[str, object]:
        """
        Report the extension's failure.
        """
        if self.owner is not None:
            self.owner.mainFailed(reason)
        else:
            self.log.error("extension failed: {reason}", reason=reason)
        return {}

    # Lifetime.

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """
        Close every socket not yet released and tell whoever waits.
        """
        super().connectionLost(reason)
        for sock in self._unreleased.values():
            sock.close()
        self._unreleased.clear()
        if not self.lost.called:
            self.lost.callback(None)


def translateError(failure: Failure, what: str) -> Failure:
    """
    Turn a broker error received by the child into the exception in-process
    code would see (imported lazily so that this module stands alone).
    """
    error = failure.value
    text = str(error)
    if isinstance(error, Denied):
        from tcpext.permissions import PermissionDenied

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
    return failure


class SyncListenProtocol(Int32StringReceiver):
    """
    The host's end of the synchronous channel: answers one JSON request at a
    time (C{{"op": "listen", "port": ..., "interface": ..., "backlog": ...}})
    with a JSON answer and, on success, the listening socket's descriptor.
    """

    MAX_LENGTH = 4096

    def __init__(self, broker: BrokerProtocol) -> None:
        self._broker = broker

    def stringReceived(self, data: bytes) -> None:
        """
        Answer one request.
        """
        try:
            request = json.loads(data.decode("utf-8"))
            if not isinstance(request, dict) or request.get("op") != "listen":
                raise BadRequest(f"unknown request {request!r}")
            answer = self._broker.listen(
                int(request["port"]),
                str(request.get("interface") or ""),
                int(request.get("backlog") or 50),
            )
        except (Denied, BadRequest, ListenFailed, BrokerLimit) as e:
            code = {
                Denied: "DENIED",
                BadRequest: "BAD_REQUEST",
                ListenFailed: "LISTEN",
                BrokerLimit: "LIMIT",
            }[type(e)]
            self._answer({"ok": False, "error": code, "message": str(e)})
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
            self._answer({"ok": False, "error": "BAD_REQUEST", "message": str(e)})
        else:
            self.transport.sendFileDescriptor(  # type: ignore[union-attr]
                answer["descriptor"]
            )
            self._answer(
                {"ok": True, "socketId": answer["socketId"], "family": answer["family"]}
            )

    def _answer(self, answer: dict[str, Any]) -> None:
        self.sendString(json.dumps(answer).encode("utf-8"))

    def lengthLimitExceeded(self, length: int) -> None:
        """
        A request this long is an attack: hang up.
        """
        self._broker.log.error(
            "the extension sent a {length}-byte listen request; disconnecting",
            length=length,
        )
        self.transport.abortConnection()  # type: ignore[union-attr]
