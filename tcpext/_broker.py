# -*- test-case-name: tests.test_isolation_broker -*-
"""
The host side of process isolation: the broker that answers an isolated
extension's requests and opens sockets for it.

An isolated extension runs in its own process inside an empty network
namespace (L{tcpext._isolation}).  The only sockets that reach the outside are
those the host opens for it: the child asks over an AMP connection on a UNIX
socket pair (L{tcpext._wire.Connect}, L{tcpext._wire.Resolve}) or, to listen,
over the synchronous channel (L{SyncListenProtocol}); the host has the
extension's L{tcpext._policy.Policy} decide (the same decisions, messages
and rebinding rule as in-process), reports each decision to the policy's
observers, opens the socket, and passes its file descriptor back
(C{SCM_RIGHTS}).  The child then adopts it with C{adoptStreamConnection} /
C{adoptStreamPort}.

The host holds the authoritative grants: a child that skips its own checks
still gets nothing the grants do not allow.  The wire format itself is
L{tcpext._wire}; the supervision of the child process is
L{tcpext._supervisor}.
"""

from __future__ import annotations

import errno
import os
import socket
import time
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
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpext._hosts import formatHostPort, parseHost
from tcpext._limits import RateLimitedLog, TokenBucket
from tcpext._policy import (
    CONNECT,
    LISTEN,
    RESOLVE,
    USE,
    Decision,
    DenialLog,
    Grounds,
    Policy,
    connectTarget,
    listenTarget,
    localhostAddresses,
)
from tcpext._wire import (
    AMP_MAX_BOX_BYTES,
    AMP_MAX_KEYS,
    REQUEST_BURST,
    REQUEST_RATE,
    BadRequest,
    BrokerLimit,
    ChildRefused,
    Connect,
    Denied,
    DialFailed,
    Hello,
    ListenFailed,
    LookupFailed,
    MainFailed,
    QuietAMP,
    Refused,
    Release,
    RemovePermissions,
    RequestPermissions,
    Resolve,
    SyncServerProtocol,
    TimedOut,
)
from tcpext.permissions import PermissionSet

__all__ = [
    "BrokerProtocol",
    "SyncListenProtocol",
    "dialTCP",
    "openListener",
]


CHILD_REFUSED_VERBS = frozenset({CONNECT, LISTEN, RESOLVE, USE})
"""
The verbs of the refusals an extension's process reports (L{ChildRefused}):
what its own copy of the policy refuses before asking the host.  A report
with any other verb is not recorded: the audit trail would show it as the
operator's (C{grant}, C{revoke}) and each new verb would be a new metrics
series kept for the service's lifetime.
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
    try:
        err = sock.connect_ex((address, port))
    except OSError as e:
        # An address the OS cannot even read (an unknown zone index).
        sock.close()
        return defer.fail(DialFailed(f"{description}: {e}"))
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
        Keep each IP address once, in order (as the resolver wrote it: the
        policy reads it, zone and all).
        """
        if isinstance(address, (IPv4Address, IPv6Address)):
            host = str.__str__(address.host)
            if host not in self.addresses:
                self.addresses.append(host)

    def resolutionComplete(self) -> None:
        """
        Fire with what was found.
        """
        self.deferred.callback(self.addresses)


class _Held:
    """
    The host's copy of a socket it handed over, and what it was for.

    @ivar openedAt: When the host opened it (Unix seconds; the operator
        console shows it).
    @ivar grounds: What the policy allowed it for (checked again after a
        revoke).
    """

    __slots__ = ("kind", "address", "port", "name", "sock", "openedAt", "grounds")

    def __init__(self, kind: str, address: str, port: int, grounds: Grounds) -> None:
        """
        @param kind: C{"connect"} or C{"listen"}.
        @param address: The address dialed, or the interface listened on.
        @param port: The port (as requested, for a listen).
        @param grounds: What the policy allowed it for.
        """
        self.kind = kind
        self.address = address
        self.port = port
        self.name = grounds.name
        self.grounds = grounds
        self.sock: socket.socket
        self.openedAt = time.time()

    def describe(self) -> str:
        """
        For the log.
        """
        where = formatHostPort(self.address, self.port)
        if self.kind == "listen":
            return f"listening socket on {where}"
        via = f" ({self.name})" if self.name else ""
        return f"connection to {where}{via}"


class BrokerProtocol(QuietAMP):
    """
    The host's end of the AMP connection with one isolated extension's
    process: it answers L{Connect} and L{Resolve} (and, through
    L{SyncListenProtocol}, listen requests) as its C{policy} decides.

    @ivar grants: The host's live L{tcpext.permissions.PermissionSet} for this
        extension (the authority; the child's copy is advisory).
    @ivar policy: The L{tcpext._policy.Policy} that decides, over C{grants};
        every decision is reported to its observers (the log lines, rate
        limited, say C{broker refused ...}).
    """

    maxOutstanding = 64
    """Requests in progress above which the host stops reading the child."""

    maxFlood = 1024
    """Requests in progress above which the child is disconnected."""

    maxHeld = 4096
    """Sockets handed over and not yet released by the child."""

    maxBoxKeys = AMP_MAX_KEYS
    """The most keys in one AMP box from the child."""

    maxBoxBytes = AMP_MAX_BOX_BYTES
    """The most bytes of one AMP box from the child (keys, values and their
    length prefixes)."""

    def __init__(
        self,
        reactor: Any,
        grants: PermissionSet,
        log: Logger,
        owner: Any = None,
        connectTimeout: float = 30.0,
        *,
        requests: TokenBucket | None = None,
        denials: RateLimitedLog | None = None,
        policy: Policy | None = None,
    ) -> None:
        """
        @param reactor: The host's reactor (with a C{nameResolver}).
        @param grants: The extension's live L{PermissionSet}.
        @param log: Where refusals and problems are logged.
        @param owner: The L{tcpext._supervisor.IsolatedExtension} (or any
            object) answering L{Hello}, L{RequestPermissions},
            L{RemovePermissions} and L{MainFailed}, or L{None} in tests.
        @param connectTimeout: The longest connect attempt, in seconds.
        @param policy: The extension's policy over C{grants} (kept across
            the child's restarts, with its name memory); by default one
            whose only observer logs refusals on C{denials}.
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
        if policy is None:
            policy = Policy(grants, observers=[self._logDenial])
        elif policy.grants is not grants:
            raise ValueError("the policy must decide over the same grants")
        self.policy = policy
        self._held: dict[int, _Held] = {}
        self._nextId = 1
        self._helloSeen = False
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

    def _logDenial(self, extensionId: str, decision: Decision) -> None:
        """
        The default policy's observer: log refusals on C{denials} (as it
        is now: it may be replaced).
        """
        DenialLog(self.denials, "broker refused {request}: {reason}")(
            extensionId, decision
        )

    def _invalid(
        self, verb: str, target: str, request: str, error: Exception
    ) -> BadRequest:
        """
        Report a request that is not valid; the error to answer with.
        """
        self.policy.report(self.policy.invalid(verb, target, error, request))
        return BadRequest(str(error))

    def _decided(self, decision: Decision) -> Decision:
        """
        Report a decision; raise L{Denied} if it is a refusal.
        """
        self.policy.report(decision)
        if not decision.allowed:
            raise Denied(decision.message)
        return decision

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

    def heldSockets(self) -> list[_Held]:
        """
        The host's copies of the sockets handed over to the extension's
        process and not yet released (for the operator's console).
        """
        return list(self._held.values())

    @Release.responder
    def release(self, socketIds: list[int]) -> dict[str, object]:
        """
        Close the host's copies of sockets the child has closed (a
        listening socket is shut down first, for every copy).
        """
        for socketId in socketIds:
            held = self._held.pop(socketId, None)
            if held is not None:
                if held.kind == "listen":
                    # A process the child started may hold a copy of the
                    # descriptor: closing the port here and in the child
                    # would leave it accepting there.  (A connection the
                    # child closed in order is already shut down.)
                    try:
                        held.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                held.sock.close()
        return {}

    def enforce(self) -> list[int]:
        """
        Shut down every handed-over socket the grants no longer allow, in the
        host (the shutdown reaches the child's copy too: it is the same
        socket), whatever the child does.

        @return: the ids of the sockets shut down.
        """
        closed = []
        for socketId, held in list(self._held.items()):
            if self.policy.stillAllowed(held.grounds):
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

    def _lookup(self, name: str, port: int) -> Deferred[list[str]]:
        """
        The addresses of C{name}: loopback for a C{localhost} name (no
        DNS), else the host's resolver's answer.
        """
        local = localhostAddresses(name)
        if local is not None:
            return defer.succeed(list(local))
        receiver = _Addresses()
        self._reactor.nameResolver.resolveHostName(
            receiver, name, portNumber=port, transportSemantics="TCP"
        )
        return receiver.deferred

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
        where = formatHostPort(host, port)
        request = f"connect to {where}" + (f" (for {name})" if name else "")
        try:
            target = connectTarget(host, port)
            claimed: str | None = None
            if name is not None:
                if target.isName:
                    raise ValueError(f"a name ({name!r}) only goes with an address")
                parsedName = parseHost(name)
                if parsedName.ip is not None:
                    raise ValueError(f"{name!r} is an address, not a name")
                claimed = parsedName.text
        except (TypeError, ValueError) as e:
            raise self._invalid(CONNECT, where, request, e)
        if not 0 < timeout <= self._connectTimeout:
            timeout = self._connectTimeout
        if not target.isName:
            decision = self._decided(
                self.policy.connect(
                    target,
                    now=self._reactor.seconds(),
                    claimedName=claimed,
                    request=request,
                )
            )
        else:
            first = self.policy.connect(target, request=request)
            if not first.allowed:
                self._decided(first)
            found = await self._lookup(target.address, target.port)
            if not found:
                raise LookupFailed(f"{target.address} did not resolve")
            decision = self._decided(
                self.policy.resolved(target, found, request=request)
            )
        last: Exception = DialFailed(f"no address to dial for {target}")
        for address in decision.addresses:
            try:
                sock = await dialTCP(self._reactor, address, target.port, timeout)
            except (Refused, TimedOut, DialFailed) as e:
                last = e
                continue
            grounds = Grounds(CONNECT, target.port, (address,), decision.name)
            return self._handOver(sock, _Held("connect", address, target.port, grounds))
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
        where = formatHostPort(interface or "0.0.0.0", port)
        request = f"listen on {where}"
        try:
            target = listenTarget(port, interface or None)
        except (TypeError, ValueError) as e:
            raise self._invalid(LISTEN, where, request, e)
        self._decided(self.policy.listen(target, request=f"listen on {target}"))
        backlog = max(1, min(int(backlog), 4096))
        address = target.bindAddress
        return self._handOver(
            openListener(address, target.port, backlog),
            _Held(
                "listen",
                address,
                target.port,
                Grounds(LISTEN, target.port, (target.key,)),
            ),
        )

    # Resolve.

    @Resolve.responder
    def resolve(self, name: str, port: int) -> Deferred[Any]:
        """
        Resolve a name the grants let the extension connect to; answer the
        addresses that may be dialed for it.
        """
        self.admit(f"resolve {name} for port {port}")
        return self._tracked(defer.ensureDeferred(self._resolve(name, port)))

    async def _resolve(self, name: str, port: int) -> dict[str, list[str]]:
        request = f"resolve {name} for port {port}"
        try:
            target = connectTarget(name, port)
        except (TypeError, ValueError) as e:
            raise self._invalid(RESOLVE, formatHostPort(name, port), request, e)
        if not target.isName:
            # An address "resolves" to itself, as in-process.
            return {"addresses": [target.address]}
        self._decided(self.policy.resolve(target.host, target.port, request=request))
        found = await self._lookup(target.address, target.port)
        if not found:
            raise LookupFailed(f"{target.address} did not resolve")
        decision = self._decided(
            self.policy.resolvedForPorts(
                target.host, target.port, found, request=request
            )
        )
        self.policy.remember(
            target.address, decision.addresses, self._reactor.seconds()
        )
        return {"addresses": list(decision.addresses)}

    # Delegated to the owner.

    @Hello.responder
    def hello(self, confined: bool, reason: str, pid: int, layers: list[str]) -> Any:
        """
        The child is up: the owner answers with what it needs.  Only the
        first C{Hello} of a connection counts (the child's start sends it
        before any extension code runs); a later one is extension code
        posing as the start, to put lines of its making in the host's log
        ("extension process N started", "not confined"), and is refused and
        logged as refused (rate-limited).
        """
        if self.owner is None:
            raise BadRequest("no extension attached")
        if self._helloSeen:
            self.denials.warn(
                "broker refused {request}: {reason}",
                request="a second Hello",
                reason="the process said hello at its start",
            )
            raise BadRequest("the process has already said hello")
        self._helloSeen = True
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

    @RemovePermissions.responder
    def removePermissions(self, permissions: list[str]) -> dict[str, object]:
        """
        The extension gives optional permissions up: the owner takes them
        away.
        """
        self.admit("a permissions removal")
        if self.owner is None:
            return {"removed": False}
        return {"removed": bool(self.owner.removePermissions(permissions))}

    @ChildRefused.responder
    def childRefused(self, verb: str, target: str, reason: str) -> dict[str, object]:
        """
        The extension's process refused a request itself: tell the owner
        (for its audit trail), within the child's request rate; past it the
        report is dropped (there is no answer to refuse), as is a report
        whose verb is not one of L{CHILD_REFUSED_VERBS} (logged, rate-limited).
        """
        if not self.requests.take() or self.owner is None:
            return {}
        if verb not in CHILD_REFUSED_VERBS:
            # Not a refusal the child's browser can make: a report of its
            # own making (a verb that passes for the operator's, or a new
            # label for the metrics at every report).
            self.denials.warn(
                "broker refused {request}: {reason}",
                request=f"a refusal report with the verb {verb[:64]!r}",
                reason="not a request an extension's process refuses itself",
            )
            return {}
        self.owner.childRefused(verb, target[:512], reason[:512])
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
        Shut down and close every socket not yet released, and tell whoever
        waits.
        """
        super().connectionLost(reason)
        for held in self._held.values():
            # Shut down, not only close: a process the child started holds
            # copies of the child's descriptors, and would otherwise keep
            # these sockets (a listening one accepting) after the child.
            try:
                held.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
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
        Stop reading the child while its answers are not sent; end with the
        broker's AMP connection (a process the child started, which holds
        this channel too, gets nothing more once the child's channel has
        ended).
        """
        assert self.transport is not None
        self.transport.registerProducer(  # type: ignore[attr-defined]
            _ReadGate(self.transport), True
        )
        transport: Any = self.transport

        def end(_: None) -> None:
            transport.abortConnection()

        self._broker.lost.addCallback(end)

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
        if self._broker.lost.called:
            raise BadRequest("the extension's channel has ended")
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
