# -*- test-case-name: tests.test_isolation_broker -*-
"""
The host side of process isolation: the broker that answers an isolated
extension's requests and opens sockets for it.

An isolated extension runs in its own process inside an empty network
namespace (L{tcpext._isolation}).  The only sockets that reach the outside are
those the host opens for it: the child asks over an AMP connection on a UNIX
socket pair (L{tcpext._wire.Connect}, L{tcpext._wire.Resolve}) or, to listen,
over the synchronous channel (L{SyncListenProtocol}); the host checks the
request against the extension's grants with the same L{tcpext.permissions}
code and rebinding rule as the in-process reactor, opens the socket, and
passes its file descriptor back (C{SCM_RIGHTS}).  The child then adopts it
with C{adoptStreamConnection} / C{adoptStreamPort}.

The host holds the authoritative grants: a child that skips its own checks
still gets nothing the grants do not allow.  The wire format itself is
L{tcpext._wire}; the supervision of the child process is
L{tcpext._supervisor}.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IFileDescriptorReceiver,
    IHostResolution,
    IPushProducer,
    IReadDescriptor,
    IResolutionReceiver,
    IWriteDescriptor,
)
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpext._limits import RateLimitedLog, TokenBucket
from tcpext._wire import (
    AMP_MAX_BOX_BYTES,
    AMP_MAX_KEYS,
    REQUEST_BURST,
    REQUEST_RATE,
    BadRequest,
    BrokerLimit,
    Connect,
    Denied,
    DialFailed,
    Hello,
    ListenFailed,
    LookupFailed,
    MainFailed,
    Refused,
    Release,
    RequestPermissions,
    Resolve,
    SaveGrants,
    SyncServerProtocol,
    TimedOut,
)
from tcpext.permissions import LOCALHOST_ADDRESSES, canonicalHost, isLocalhostName

__all__ = [
    "BrokerProtocol",
    "SyncListenProtocol",
    "dialTCP",
    "openListener",
]


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

    @ivar openedAt: When the host opened it (Unix seconds; the operator
        console shows it).
    """

    __slots__ = ("kind", "address", "port", "name", "sock", "openedAt")

    def __init__(
        self, kind: str, address: str, port: int, name: str | None = None
    ) -> None:
        self.kind = kind
        self.address = address
        self.port = port
        self.name = name
        self.sock: socket.socket
        self.openedAt = time.time()

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
    process: it answers L{Connect} and L{Resolve} (and, through L{SyncListenProtocol},
    listen requests) within C{grants}.

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

    maxBoxKeys = AMP_MAX_KEYS
    """The most keys in one AMP box from the child."""

    maxBoxBytes = AMP_MAX_BOX_BYTES
    """The most bytes of one AMP box from the child (keys, values and their
    length prefixes)."""

    def __init__(
        self,
        reactor: Any,
        grants: Any,
        log: Logger,
        owner: Any = None,
        connectTimeout: float = 30.0,
        *,
        requests: TokenBucket | None = None,
        denials: RateLimitedLog | None = None,
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
        @param requests: The child's request rate (shared with its
            synchronous channel; default: L{REQUEST_RATE} a second, bursts
            of L{REQUEST_BURST}).
        @param denials: Where refusals are logged, rate-limited (default: a
            L{RateLimitedLog} of C{log} of its own).
        """
        super().__init__()
        self._reactor = reactor
        self.grants = grants
        self.log = log
        self.owner = owner
        self._connectTimeout = connectTimeout
        self.requests = (
            requests
            if requests is not None
            else TokenBucket(REQUEST_RATE, REQUEST_BURST, reactor.seconds)
        )
        self.denials = (
            denials if denials is not None else RateLimitedLog(log, reactor, "")
        )
        self._held: dict[int, _Held] = {}
        self._nextId = 1
        self._resolved: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._outstanding = 0
        self._gate: _ReadGate | None = None
        self._boxKeys = 0
        self._boxBytes = 0
        self._broken = False
        self.lost: Deferred[None] = Deferred()

    # Bounds: whatever the child sends, the host holds a bounded amount of
    # it, and a child that breaks a bound is disconnected (its supervisor
    # then restarts it with backoff).

    def connectionMade(self) -> None:
        """
        Stop reading the child while the host's answers to it are not sent
        (a child that does not read them cannot make the host buffer them
        without end).
        """
        super().connectionMade()
        assert self.transport is not None
        self._gate = _ReadGate(self.transport)
        self.transport.registerProducer(self._gate, True)  # type: ignore[attr-defined]

    def stringReceived(self, string: bytes) -> None:
        """
        Count each key and value of the box being received against
        L{maxBoxKeys} and L{maxBoxBytes} before AMP keeps it; past either,
        disconnect.
        """
        if self._broken:
            return
        if self.state == "init":
            self._boxKeys = self._boxBytes = 0
        self._boxBytes += 2 + len(string)
        if string and self.state in ("init", "key"):
            self._boxKeys += 1
        if self._boxKeys > self.maxBoxKeys:
            self.violation(f"a message of more than {self.maxBoxKeys} keys")
        elif self._boxBytes > self.maxBoxBytes:
            self.violation(f"a message of more than {self.maxBoxBytes} bytes")
        else:
            super().stringReceived(string)

    def fileDescriptorReceived(self, descriptor: int) -> None:
        """
        No request from the child carries a descriptor: close it and
        disconnect.
        """
        os.close(descriptor)
        self.violation("a file descriptor")

    def violation(self, what: str) -> None:
        """
        The child sent C{what}, which breaks the channel's limits: log it
        once and disconnect.
        """
        if self._broken:
            return
        self._broken = True
        self.log.error(
            "the extension sent {what} on its channel; disconnecting it", what=what
        )
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def admit(self, request: str) -> None:
        """
        Take one request from the child's rate.

        @raise BrokerLimit: past the rate (the request is refused, logged
            with the other refusals).
        """
        if not self.requests.take():
            raise self._refuse(
                request,
                BrokerLimit(
                    f"more than {self.requests.rate:g} requests a second; "
                    "refused (rate limit)"
                ),
            )

    def _begin(self) -> None:
        self._outstanding += 1
        if self._outstanding > self.maxFlood:
            self.violation(f"{self._outstanding} requests at once")
        elif self._outstanding > self.maxOutstanding and self._gate is not None:
            self._gate.close("requests")

    def _end(self, result: object) -> object:
        self._outstanding -= 1
        if self._outstanding <= self.maxOutstanding // 2 and self._gate is not None:
            self._gate.open("requests")
        return result

    def _tracked(self, d: Deferred[Any]) -> Deferred[Any]:
        self._begin()
        return d.addBoth(self._end)

    def _refuse(self, request: str, error: Exception) -> Exception:
        self.denials.warn(
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
        name = canonicalHost(name)
        for address in addresses:
            self._resolved[(address, port)] = name
            self._resolved.move_to_end((address, port))
        while len(self._resolved) > self.maxRemembered:
            self._resolved.popitem(last=False)

    def _lookup(self, name: str, port: int) -> Deferred[list[str]]:
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
        self.admit(f"connect to {host}:{port}")
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

    # Listen (over the synchronous channel).

    def listen(self, port: int, interface: str, backlog: int) -> dict[str, int]:
        """
        Check the listen grant, open the listening socket, hand it over.
        """
        self.admit(f"listen on {interface or '*'}:{port}")
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
        self.admit(f"resolve {name} for port {port}")
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
    def hello(self, confined: bool, reason: str, pid: int, layers: list[str]) -> Any:
        """
        The child is up: the owner answers with what it needs.
        """
        if self.owner is None:
            raise BadRequest("no extension attached")
        return self.owner.childHello(self, confined, reason, pid, layers)

    @RequestPermissions.responder
    def requestPermissions(self, permissions: list[str]) -> Any:
        """
        Ask the owner's prompt policy.
        """
        self.admit("a permissions request")
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
        self.admit("a grant save")
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


@implementer(IPushProducer)
class _ReadGate:
    """
    Stops reading a child's channel while there is a reason to: the
    transport's write buffer is full (it calls L{pauseProducing}: the child
    does not read the host's answers), or the child has too many requests
    in progress (L{close} with C{"requests"}).
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._reasons: set[str] = set()

    def close(self, reason: str) -> None:
        """
        Stop reading for C{reason}.
        """
        if not self._reasons:
            self._transport.pauseProducing()
        self._reasons.add(reason)

    def open(self, reason: str) -> None:
        """
        C{reason} is gone: read again if it was the last one.
        """
        if reason not in self._reasons:
            return
        self._reasons.discard(reason)
        if not self._reasons:
            self._transport.resumeProducing()

    def pauseProducing(self) -> None:
        """
        The answers are not sent: stop reading requests.
        """
        self.close("writes")

    def resumeProducing(self) -> None:
        """
        The answers went out.
        """
        self.open("writes")

    def stopProducing(self) -> None:
        """
        The connection is gone.
        """


@implementer(IFileDescriptorReceiver)
class SyncListenProtocol(SyncServerProtocol):
    """
    The host's end of the synchronous channel: answers one listen request at
    a time (C{{"op": "listen", "port": ..., "interface": ..., "backlog":
    ...}}) with the listening socket's id and family and, on success, its
    descriptor.
    """

    def __init__(self, broker: BrokerProtocol) -> None:
        self._broker = broker

    def connectionMade(self) -> None:
        """
        Stop reading the child while its answers are not sent.
        """
        assert self.transport is not None
        self.transport.registerProducer(  # type: ignore[attr-defined]
            _ReadGate(self.transport), True
        )

    def fileDescriptorReceived(self, descriptor: int) -> None:
        """
        No request carries a descriptor: close it and disconnect.
        """
        os.close(descriptor)
        self._broker.log.error(
            "the extension sent a file descriptor on its listen channel; disconnecting"
        )
        self.transport.abortConnection()  # type: ignore[union-attr]

    def handle(self, request: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
        """
        Open the listening socket the request asks for, within the grants.
        """
        if request.get("op") != "listen":
            raise BadRequest(f"unknown request {request!r}")
        answer = self._broker.listen(
            int(request["port"]),
            str(request.get("interface") or ""),
            int(request.get("backlog") or 50),
        )
        return (
            {"socketId": answer["socketId"], "family": answer["family"]},
            answer["descriptor"],
        )

    def tooLong(self, length: int) -> None:
        """
        A request this long is an attack: say so (the channel is closed).
        """
        self._broker.log.error(
            "the extension sent a {length}-byte listen request; disconnecting",
            length=length,
        )
