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
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.application.service import Service
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
from twisted.internet.protocol import Factory, ProcessProtocol
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
    "ISOLATION_MODES",
    "IsolatedExtension",
    "Listen",
    "ListenFailed",
    "LookupFailed",
    "MainFailed",
    "Ping",
    "Refused",
    "Release",
    "RequestPermissions",
    "Resolve",
    "RestartPolicy",
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
    The child has closed these sockets: the host closes its copies.  (The
    host keeps a copy of every socket it handed over, so that it can shut a
    socket down itself when a grant is revoked.)
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


class Ping(amp.Command):
    """
    Is the child's reactor running?
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


class _Held:
    """
    The host's copy of a socket it handed over, and what it was for.
    """

    __slots__ = ("kind", "address", "port", "name", "sock")

    def __init__(
        self, kind: str, address: str, port: int, name: str | None = None
    ) -> None:
        self.kind = kind
        self.address = address
        self.port = port
        self.name = name
        self.sock: socket.socket

    def describe(self) -> str:
        """
        For the log.
        """
        where = f"[{self.address}]" if ":" in self.address else self.address
        if self.kind == "listen":
            return f"listening socket on {where or '*'}:{self.port}"
        via = f" ({self.name})" if self.name else ""
        return f"connection to {where}:{self.port}{via}"


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

    maxHeld = 4096
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
        @param owner: The L{tcpext._broker.IsolatedExtension} (or any
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
        self._held: dict[int, _Held] = {}
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

    def _handOver(self, sock: socket.socket, held: _Held) -> dict[str, int]:
        if len(self._held) >= self.maxHeld:
            sock.close()
            raise BrokerLimit(f"{len(self._held)} sockets handed over and open")
        socketId = self._nextId
        self._nextId += 1
        held.sock = sock
        self._held[socketId] = held
        return {
            "socketId": socketId,
            "descriptor": sock.fileno(),
            "family": sock.family,
        }

    @Release.responder
    def release(self, socketIds: list[int]) -> dict[str, object]:
        """
        Close the host's copies of sockets the child has closed.
        """
        for socketId in socketIds:
            held = self._held.pop(socketId, None)
            if held is not None:
                held.sock.close()
        return {}

    def _allowed(self, held: _Held) -> bool:
        """
        Do the grants still allow this socket?
        """
        try:
            if held.kind == "listen":
                self.grants.checkListen(held.port, held.address or None)
            elif held.name is None:
                self.grants.checkConnect(held.address, held.port)
            else:
                self.grants.checkConnect(held.name, held.port)
                self.grants.checkResolved(held.name, held.port, [held.address])
        except Exception:
            return False
        return True

    def enforce(self) -> list[int]:
        """
        Shut down every handed-over socket the grants no longer allow, in the
        host (the shutdown reaches the child's copy too: it is the same
        socket), whatever the child does.

        @return: the ids of the sockets shut down.
        """
        closed = []
        for socketId, held in list(self._held.items()):
            if self._allowed(held):
                continue
            del self._held[socketId]
            try:
                held.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            held.sock.close()
            closed.append(socketId)
            self.log.info(
                "shut down {what} after the grant was revoked", what=held.describe()
            )
        return closed

    # Connect.

    def _remember(self, name: str, addresses: Iterable[str], port: int) -> None:
        from tcpext.permissions import canonicalHost

        name = canonicalHost(name)
        for address in addresses:
            self._resolved[(address, port)] = name
            self._resolved.move_to_end((address, port))
        while len(self._resolved) > self.maxRemembered:
            self._resolved.popitem(last=False)

    def _lookup(self, name: str, port: int) -> Deferred[list[str]]:
        from tcpext.permissions import LOCALHOST_ADDRESSES, isLocalhostName

        if isLocalhostName(name):
            return defer.succeed(list(LOCALHOST_ADDRESSES))
        receiver = _Addresses()
        self._reactor.nameResolver.resolveHostName(
            receiver, name, portNumber=port, transportSemantics="TCP"
        )
        return receiver.deferred

    def _namesFor(self, literal: str, port: int, claimed: str | None) -> list[str]:
        """
        The names a connection to C{literal}:C{port} may be allowed as: the
        name the child says it dials the address for, if it maps to that
        address as far as the host knows, then the name the host itself last
        resolved to that address for that port.

        @raise Denied: if C{claimed} is a C{localhost} name and C{literal} is
            not one of the loopback addresses those names map to.
        """
        from tcpext.permissions import LOCALHOST_ADDRESSES, isLocalhostName

        remembered = self._resolved.get((literal, port))
        names = []
        if claimed is not None:
            if isLocalhostName(claimed):
                # The child's browser maps these names to loopback itself
                # (RFC 6761), without a Resolve: so does the host.
                if literal not in LOCALHOST_ADDRESSES:
                    raise Denied(
                        f"permission denied: connect to {claimed} at {literal}: "
                        f"{claimed} means {' or '.join(LOCALHOST_ADDRESSES)} "
                        "(localhost names only reach loopback)"
                    )
                names.append(claimed)
            elif claimed == remembered:
                names.append(claimed)
        if remembered is not None and remembered not in names:
            names.append(remembered)
        return names

    @Connect.responder
    def connect(
        self, host: str, port: int, timeout: float, name: str | None = None
    ) -> Deferred[Any]:
        """
        Check, resolve if needed, dial, and hand the connected socket over.
        """
        return self._tracked(
            defer.ensureDeferred(self._connect(host, port, timeout, name))
        )

    async def _connect(
        self, host: str, port: int, timeout: float, name: str | None = None
    ) -> dict[str, int]:
        request = f"connect to {host}:{port}"
        _checkPort(port, 1)
        if not 0 < timeout <= self._connectTimeout:
            timeout = self._connectTimeout
        literal = _ipLiteral(host)
        viaName: str | None = None
        if name is not None:
            from tcpext.permissions import canonicalHost

            request = f"connect to {host}:{port} (for {name})"
            if literal is None:
                raise self._refuse(
                    request, BadRequest(f"a name ({name!r}) only goes with an address")
                )
            try:
                name = canonicalHost(name)
            except ValueError as e:
                raise self._refuse(request, BadRequest(str(e)))
            if _ipLiteral(name) is not None:
                raise self._refuse(
                    request, BadRequest(f"{name!r} is an address, not a name")
                )
        if literal is not None:
            try:
                self.grants.checkConnect(literal, port)
            except ValueError as e:
                raise self._refuse(request, BadRequest(str(e)))
            except Exception as e:
                # Not allowed as an address: maybe as a name it stands for.
                # The host checks the name with its own grants and
                # rebinding rule (as the in-process reactor does for an
                # address it resolved a name to).
                try:
                    names = self._namesFor(literal, port, name)
                except Denied as e2:
                    raise self._refuse(request, e2)
                refusal: Exception = e
                for candidate in names:
                    try:
                        self.grants.checkConnect(candidate, port)
                        self.grants.checkResolved(candidate, port, [literal])
                    except Exception as e2:
                        refusal = e2
                        continue
                    viaName = candidate
                    break
                if viaName is None:
                    raise self._refuse(request, Denied(str(refusal)))
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
            return self._handOver(
                sock,
                _Held("connect", address, port, host if literal is None else viaName),
            )
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
        return self._handOver(
            openListener(interface, port, backlog), _Held("listen", interface, port)
        )

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
        for held in self._held.values():
            held.sock.close()
        self._held.clear()
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


# Supervising one isolated extension's process.

ISOLATION_MODES = ("none", "process", "process-unconfined")
"""The values of C{twistd tcpext --isolation}."""


@attrs.frozen
class RestartPolicy:
    """
    How a crashed extension process is restarted: after C{initialDelay}
    seconds, doubling up to C{maxDelay}, at most C{maxRestarts} times in a
    row (a process that ran C{stableAfter} seconds resets the count).  A
    process that has not said hello after C{startTimeout} seconds is killed
    and counts as a crash; so is a running process that has not answered a
    ping (sent every C{pingInterval} seconds; L{None} sends none) within
    C{pingTimeout} seconds (its reactor is blocked).  C{stopTimeout} is how
    long a stopping process gets before it is killed.
    """

    maxRestarts: int = 5
    initialDelay: float = 1.0
    maxDelay: float = 60.0
    stableAfter: float = 60.0
    startTimeout: float = 30.0
    stopTimeout: float = 5.0
    pingInterval: float | None = 15.0
    pingTimeout: float = 60.0


class _ChildProcess(ProcessProtocol):
    """
    Watches one child process: logs its output line by line (bounded) and
    reports its end to the L{IsolatedExtension}.
    """

    maxLine = 4096
    maxLinesPerSecond = 200

    def __init__(self, owner: IsolatedExtension) -> None:
        self._owner = owner
        self._buffers = {1: b"", 2: b""}
        self._window = 0.0
        self._lines = 0
        self._dropped = 0
        self.ended: Deferred[None] = Deferred()
        self.pid: int | None = None
        self._closed: set[int] = set()

    def connectionMade(self) -> None:
        """
        The child has no input.
        """
        self.pid = self.transport.pid  # type: ignore[union-attr]
        self.transport.closeStdin()  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """
        Log complete lines; cut endless ones.
        """
        buffer = self._buffers.get(childFD, b"") + data
        *lines, rest = buffer.split(b"\n")
        if len(rest) > self.maxLine:
            lines.append(rest[: self.maxLine])
            rest = b""
        self._buffers[childFD] = rest
        for line in lines:
            self._emit(line[: self.maxLine])

    def _emit(self, line: bytes) -> None:
        now = self._owner._reactor.seconds()
        if now - self._window >= 1.0:
            if self._dropped:
                self._owner.log.warn(
                    "dropped {count} lines of the extension's output",
                    count=self._dropped,
                )
            self._window, self._lines, self._dropped = now, 0, 0
        self._lines += 1
        if self._lines > self.maxLinesPerSecond:
            self._dropped += 1
            return
        self._owner.log.info(
            "[pid {pid}] {line}",
            pid=self.pid,
            line=line.decode("utf-8", "replace").rstrip(),
        )

    def childConnectionLost(self, childFD: int) -> None:
        """
        Once the child's output is closed it is ending: make sure it is
        reaped.
        """
        self._closed.add(childFD)
        if {1, 2} <= self._closed and self.transport is not None:
            self._owner._reapSoon(self.transport, 50)

    def processEnded(self, reason: Failure) -> None:
        """
        Tell the owner how the process ended.
        """
        for rest in self._buffers.values():
            if rest:
                self._emit(rest[: self.maxLine])
        self._buffers = {}
        self._owner._processEnded(self, reason)
        self.ended.callback(None)


class _MemoryStore:
    """
    The default grant store: nothing persists.
    """

    def __init__(self) -> None:
        self._grants: dict[str, list[str]] = {}

    def load(self, extensionId: str) -> list[str]:
        return list(self._grants.get(extensionId, ()))

    def save(self, extensionId: str, entries: list[str]) -> None:
        self._grants[extensionId] = list(entries)


def _refuse(extensionId: str, permissions: list[str]) -> bool:
    """
    The default prompt policy: refuse.
    """
    return False


class IsolatedExtension(Service):
    """
    Runs one extension in its own process and network namespace and brokers
    its sockets; restarts it (bounded, with backoff) when it crashes.

    @ivar grants: The authoritative L{tcpext.permissions.PermissionSet}.
    @ivar log: The extension's logger (C{tcpext.extension.<id>}).
    @ivar starts: How many processes were started.
    @ivar broker: The L{BrokerProtocol} of the current process, if any.
    """

    exitGrace = 2.0
    """Seconds a process whose AMP connection ended gets to exit by itself."""

    revokeGrace = 2.0
    """Seconds the child gets to close revoked sockets itself."""

    def __init__(
        self,
        *,
        path: str,
        extensionId: str,
        manifest: Mapping[str, Any],
        reactor: Any,
        grantStore: Any = None,
        prompt: Callable[[str, list[str]], Any] | None = None,
        operatorGrants: Iterable[str] = (),
        log: Logger | None = None,
        mode: str = "process",
        restart: RestartPolicy = RestartPolicy(),
        python: str | None = None,
        limits: Mapping[str, int] | None = None,
    ) -> None:
        """
        @param path: The extension's folder.
        @param extensionId: Its id.
        @param manifest: The validated manifest mapping.
        @param reactor: The host's reactor (C{IReactorProcess},
            C{IReactorSocket}, C{IReactorFDSet}, a C{nameResolver}).
        @param grantStore: A L{tcpext.browser.GrantStore} (the host keeps it;
            the child never sees it).
        @param prompt: The prompt policy for C{permissions.request}
            (default: refuse).
        @param operatorGrants: Optional permissions the operator pre-grants.
        @param log: The extension's logger.
        @param mode: C{"process"} (refuse to run without a network
            namespace) or C{"process-unconfined"} (run anyway, brokered).
        @param restart: The L{RestartPolicy}.
        @param python: The interpreter for the child (default: this one).
        @param limits: Resource limits for the child, by C{resource} name
            (C{{"RLIMIT_AS": 2**30, "RLIMIT_NOFILE": 1024}}), set soft and
            hard before the extension's code runs.

        @raise ValueError: for an unknown mode, an invalid C{tcp-*} entry, or
            an operator grant the manifest does not list as optional.
        """
        from tcpext.browser import _operatorGrants, _storedGrants
        from tcpext.permissions import (
            PermissionSet,
            parseManifestPermissions,
            parsePermission,
        )

        if mode not in ("process", "process-unconfined"):
            raise ValueError(
                f"isolation mode must be 'process' or 'process-unconfined', "
                f"not {mode!r}"
            )
        self.setName(extensionId)
        self.path = os.path.abspath(path)
        self.extensionId = extensionId
        self.manifest = dict(manifest)
        self._reactor = reactor
        self._store = grantStore if grantStore is not None else _MemoryStore()
        self._prompt = prompt if prompt is not None else _refuse
        self.log = log or Logger(namespace=f"tcpext.extension.{extensionId}")
        self.mode = mode
        self.restart = restart
        self._python = python or sys.executable
        import resource

        self.limits = dict(limits or {})
        for name, value in self.limits.items():
            if not name.startswith("RLIMIT_") or not hasattr(resource, name):
                raise ValueError(f"unknown resource limit {name!r}")
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"resource limit {name}: {value!r} is not an int")
        self._parse = parsePermission

        required, ignored = parseManifestPermissions(
            list(manifest.get("permissions", []))
        )
        optional, ignoredOptional = parseManifestPermissions(
            list(manifest.get("optional_permissions", []))
        )
        self._ignored = [*ignored, *ignoredOptional]
        self._required = {str(p): p for p in required}
        self._optional = {str(p): p for p in optional}
        self._operator: dict[str, Any] = _operatorGrants(
            extensionId, operatorGrants, self._optional
        )
        self._runtime: dict[str, Any] = _storedGrants(
            self._store.load(extensionId), self._optional, self.log
        )
        self.grants = PermissionSet(self._effective().values())

        self.starts = 0
        self.broker: BrokerProtocol | None = None
        self._process: _ChildProcess | None = None
        self._processTransport: Any = None
        self._helloAt: float | None = None
        self._crashes = 0
        self._permanent: str | None = None
        self._startTimer: Any = None
        self._restartTimer: Any = None
        self._killTimer: Any = None
        self._reapTimer: Any = None
        self._pingTimer: Any = None
        self._stopping = False

    # Grants.

    def _effective(self) -> dict[str, Any]:
        return {**self._required, **self._operator, **self._runtime}

    def _sync(self) -> list[str]:
        """
        Bring C{grants} in line with the three sources; return what was
        withdrawn.
        """
        wanted = self._effective()
        removed = []
        for p in list(self.grants):
            if str(p) not in wanted:
                self.grants.discard(p)
                removed.append(str(p))
        for p in wanted.values():
            if p not in self.grants:
                self.grants.add(p)
        return removed

    def requestPermissions(self, entries: list[str]) -> Deferred[bool]:
        """
        The child's C{permissions.request}: only optional entries; the host's
        prompt decides and the host persists.
        """
        wanted = []
        for entry in entries:
            try:
                p = self._parse(entry)
            except ValueError as e:
                raise BadRequest(str(e))
            if str(p) not in self._optional:
                raise BadRequest(f"{entry!r} is not in optional_permissions")
            if p not in self.grants:
                wanted.append(str(p))
        if not wanted:
            return defer.succeed(True)

        def answered(answer: object) -> bool:
            if answer is not True or self._stopping:
                self.log.warn("refused runtime request for {entries}", entries=wanted)
                return False
            for entry in wanted:
                self._runtime[entry] = self._optional[entry]
            self._sync()
            self._store.save(self.extensionId, sorted(self._runtime))
            self.log.info("granted {entries}", entries=wanted)
            return True

        def failed(reason: Failure) -> bool:
            self.log.failure("the prompt failed; refusing", reason)
            return False

        return (
            defer.maybeDeferred(self._prompt, self.extensionId, list(wanted))
            .addCallback(answered)
            .addErrback(failed)
        )

    def saveGrants(self, entries: list[str]) -> None:
        """
        The child saved its runtime grants: accept removals only.
        """
        keep = set()
        for entry in entries:
            try:
                keep.add(str(self._parse(entry)))
            except ValueError:
                continue
        removed = [e for e in self._runtime if e not in keep]
        if not removed:
            return
        for entry in removed:
            del self._runtime[entry]
        self._sync()
        self._store.save(self.extensionId, sorted(self._runtime))
        self.log.info("removed {entries}", entries=removed)

    def revoke(self, entries: Iterable[str]) -> Deferred[None]:
        """
        Withdraw optional grants (operator or runtime ones): the host stops
        allowing them at once and tells the child, which closes the sockets
        no remaining grant allows.
        """
        for entry in entries:
            key = str(self._parse(entry))
            self._operator.pop(key, None)
            self._runtime.pop(key, None)
        removed = self._sync()
        self._store.save(self.extensionId, sorted(self._runtime))
        if removed:
            self.log.info("revoked {entries}", entries=removed)
        broker = self.broker
        if not removed or broker is None or broker.transport is None:
            return defer.succeed(None)
        # The child closes what the grants no longer allow (its sockets then
        # fail with PermissionDenied); whatever it does, the host then shuts
        # down its own copies of those sockets, which ends them for the child
        # too.  A child that does not answer within revokeGrace seconds gets
        # the same.
        d = broker.callRemote(Revoke, permissions=removed)
        d.addErrback(lambda f: None)
        timer = self._reactor.callLater(self.revokeGrace, d.cancel)

        def enforce(_: object) -> None:
            if timer.active():
                timer.cancel()
            broker.enforce()

        return d.addBoth(enforce)

    # Child messages.

    def childHello(
        self, broker: BrokerProtocol, confined: bool, reason: str, pid: int
    ) -> dict[str, Any]:
        """
        The child is up: check its confinement, send what it needs.
        """
        if broker is not self.broker:
            raise BadRequest("stale connection")
        if self._startTimer is not None and self._startTimer.active():
            self._startTimer.cancel()
        self._startTimer = None
        if not confined:
            if self.mode == "process":
                self._permanent = f"not confined: {reason}"
                self.log.critical(
                    "extension process {pid} is not in its own network "
                    "namespace ({reason}); stopping it",
                    pid=pid,
                    reason=reason,
                )
                self._kill()
                raise BadRequest("confinement is required")
            self.log.warn(
                "extension process {pid} runs unconfined: {reason}",
                pid=pid,
                reason=reason,
            )
        self._helloAt = self._reactor.seconds()
        if self.restart.pingInterval is not None:
            self._pingTimer = self._reactor.callLater(
                self.restart.pingInterval, self._ping, broker
            )
        self.log.info(
            "extension process {pid} started ({how})",
            pid=pid,
            how="own network namespace" if confined else "unconfined",
        )
        return {
            "extensionId": self.extensionId,
            "path": self.path,
            "manifest": json.dumps(self.manifest),
            "runtimeGrants": sorted(self._runtime),
            "operatorGrants": sorted(self._operator),
        }

    def mainFailed(self, reason: str) -> None:
        """
        The script failed: report it; do not restart.
        """
        self._permanent = reason
        self.log.error("extension failed: {reason}", reason=reason)

    # Processes.

    def startService(self) -> None:
        """
        Start the extension's process.
        """
        super().startService()
        from tcpext.extension import _warnIgnored

        _warnIgnored(self.log, self.extensionId, self._ignored)
        self._stopping = False
        self._crashes = 0
        self._permanent = None
        self._spawn()

    def _spawn(self) -> None:
        from tcpext._isolation import _childEnvironment

        self._restartTimer = None
        ampHost, ampChild = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        syncHost, syncChild = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        broker = BrokerProtocol(self._reactor, self.grants, self.log, owner=self)
        self.broker = broker
        broker.lost.addCallback(lambda _: self._brokerLost(broker))
        sync = SyncListenProtocol(broker)
        try:
            for sock, protocol in ((ampHost, broker), (syncHost, sync)):
                sock.setblocking(False)
                self._reactor.adoptStreamConnection(
                    sock.fileno(),
                    socket.AF_UNIX,
                    Factory.forProtocol(lambda p=protocol: p),  # type: ignore[misc]
                )
            namespace = "require" if self.mode == "process" else "try"
            process = _ChildProcess(self)
            self._process = process
            self.starts += 1
            self._processTransport = self._reactor.spawnProcess(
                process,
                self._python,
                [
                    self._python,
                    "-m",
                    "tcpext.sandbox",
                    "--namespace",
                    namespace,
                    *[f"--rlimit={k}={v}" for k, v in sorted(self.limits.items())],
                ],
                env=_childEnvironment(),
                path=self.path,
                childFDs={
                    0: "w",
                    1: "r",
                    2: "r",
                    3: ampChild.fileno(),
                    4: syncChild.fileno(),
                },
            )
        finally:
            for sock in (ampHost, ampChild, syncHost, syncChild):
                sock.close()
        self._helloAt = None
        self._startTimer = self._reactor.callLater(
            self.restart.startTimeout, self._hungAtStart
        )

    def _ping(self, broker: BrokerProtocol) -> None:
        """
        Check that the child's reactor still runs; kill it if it does not
        answer within C{pingTimeout}.
        """
        self._pingTimer = None
        if broker is not self.broker or self._stopping:
            return
        interval = self.restart.pingInterval
        assert interval is not None
        d = broker.callRemote(Ping)
        timeout = self._reactor.callLater(self.restart.pingTimeout, d.cancel)

        def answered(_: object) -> None:
            if timeout.active():
                timeout.cancel()
            if broker is self.broker and not self._stopping:
                self._pingTimer = self._reactor.callLater(interval, self._ping, broker)

        def failed(reason: Failure) -> None:
            if timeout.active():
                timeout.cancel()
            if broker is self.broker and not self._stopping:
                self.log.error(
                    "extension process did not answer a ping within {seconds}s; "
                    "killing it",
                    seconds=self.restart.pingTimeout,
                )
                self._kill()

        d.addCallbacks(answered, failed)

    def _hungAtStart(self) -> None:
        self._startTimer = None
        self.log.error(
            "extension process did not start within {seconds}s; killing it",
            seconds=self.restart.startTimeout,
        )
        self._kill()

    def _brokerLost(self, broker: BrokerProtocol) -> None:
        """
        The AMP connection ended: the process must not outlive it; it gets
        a moment to exit by itself (so that its exit status is seen).
        """
        if broker is self.broker and self._process is not None:
            if self._killTimer is None or not self._killTimer.active():
                self._killTimer = self._reactor.callLater(self.exitGrace, self._kill)

    def _kill(self) -> None:
        transport = self._processTransport
        if transport is None or transport.pid is None:
            return
        try:
            transport.signalProcess("KILL")
        except Exception:
            pass
        self._reapSoon(transport, 50)

    def _reapSoon(self, transport: Any, attempts: int) -> None:
        """
        Make sure an ended process is noticed even where the reactor does not
        handle C{SIGCHLD} (run with C{installSignalHandlers=False}): try to
        reap it every 0.2 seconds, C{attempts} times at most.
        """
        if attempts <= 0 or transport is not self._processTransport:
            return
        reap = getattr(transport, "reapProcess", None)
        if transport.pid is None or reap is None:
            return
        reap()
        if transport.pid is not None and transport is self._processTransport:
            if self._reapTimer is not None and self._reapTimer.active():
                self._reapTimer.cancel()
            self._reapTimer = self._reactor.callLater(
                0.2, self._reapSoon, transport, attempts - 1
            )

    def _processEnded(self, process: _ChildProcess, reason: Failure) -> None:
        if process is not self._process:
            return
        self._process = None
        self._processTransport = None
        for timer in (
            self._startTimer,
            self._killTimer,
            self._reapTimer,
            self._pingTimer,
        ):
            if timer is not None and timer.active():
                timer.cancel()
        self._startTimer = self._killTimer = self._reapTimer = None
        self._pingTimer = None
        broker, self.broker = self.broker, None
        if broker is not None and broker.transport is not None:
            broker.transport.loseConnection()
        status = reason.value
        code = getattr(status, "exitCode", None)
        signal = getattr(status, "signal", None)
        if self._stopping:
            # The same line as an in-process extension's, for operators.
            self.log.info(
                "extension {extensionId!r} stopped (its process exited)",
                extensionId=self.extensionId,
            )
            return
        from tcpext.sandbox import EXIT_MAIN_FAILED, EXIT_NO_NAMESPACE

        if code == EXIT_NO_NAMESPACE:
            self.log.critical(
                "extension refused to run: the system would not give it a "
                "network namespace (use --isolation process-unconfined to "
                "run it anyway)"
            )
            return
        if self._permanent is not None or code == EXIT_MAIN_FAILED:
            self.log.error(
                "extension stopped after a failure; not restarting "
                "(exit status {code})",
                code=code,
            )
            return
        how = f"signal {signal}" if signal else f"exit status {code}"
        if (
            self._helloAt is not None
            and self._reactor.seconds() - self._helloAt >= self.restart.stableAfter
        ):
            self._crashes = 0
        self._crashes += 1
        if self._crashes > self.restart.maxRestarts:
            self.log.critical(
                "extension process crashed ({how}); gave up after {count} restarts",
                how=how,
                count=self.restart.maxRestarts,
            )
            return
        delay = min(
            self.restart.initialDelay * 2 ** (self._crashes - 1), self.restart.maxDelay
        )
        self.log.error(
            "extension process crashed ({how}); restarting in {delay}s "
            "(restart {count} of {most})",
            how=how,
            delay=delay,
            count=self._crashes,
            most=self.restart.maxRestarts,
        )
        self._restartTimer = self._reactor.callLater(delay, self._spawn)

    def stopService(self) -> Deferred[None]:
        """
        Ask the process to close the extension's sockets and exit; kill it
        if it has not after C{stopTimeout} seconds.
        """
        super().stopService()
        self._stopping = True
        for timer in (self._restartTimer, self._pingTimer):
            if timer is not None and timer.active():
                timer.cancel()
        self._restartTimer = self._pingTimer = None
        process = self._process
        if process is None:
            return defer.succeed(None)
        self._killTimer = self._reactor.callLater(self.restart.stopTimeout, self._kill)
        if self.broker is not None and self.broker.transport is not None:
            self.broker.callRemote(Shutdown).addErrback(lambda f: None)
        else:
            self._kill()
        return process.ended
