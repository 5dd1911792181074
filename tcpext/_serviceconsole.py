# -*- test-case-name: tests.test_serviceconsole -*-
"""
L{ServiceConsole}: the L{IConsole} of a running C{twistd tcpext} service.

It reads the service's extensions (in-process L{ExtensionService}s and
isolated L{IsolatedExtension}s) through one small view per extension
(L{extensionView}): state, grants by source, open sockets, grant and revoke.
Pending requests come from the L{AdminPrompt}, the audit trail from the
L{AuditLog}, the metrics from L{ConsoleMetrics}.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpext._audit import AuditLog
from tcpext._console import BadRequest, Conflict, IConsole, NotFound, Unavailable
from tcpext._ledger import GrantLedger, GrantNotSaved
from tcpext._metrics import ConsoleMetrics, ExtensionSample, kernelByteCounts
from tcpext._requests import AdminPrompt, RememberingPrompt, UnknownRequest
from tcpext.permissions import parsePermission

__all__ = ["ServiceConsole", "addressText", "extensionView"]


def addressText(host: object, port: object) -> str | None:
    """
    C{"HOST:PORT"} (an IPv6 host in brackets), or L{None} if unknown.
    """
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    try:
        if ipaddress.ip_address(host.split("%", 1)[0]).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def _socketOf(transport: Any) -> socket.socket | None:
    """
    The kernel socket under a Twisted transport (L{None} for TLS, memory
    or closed transports).
    """
    handle = getattr(transport, "getHandle", None)
    if handle is None:
        return None
    try:
        sock = handle()
    except Exception:
        return None
    return sock if isinstance(sock, socket.socket) else None


def describeClientSocket(sock: Any, kind: str) -> dict[str, Any]:
    """
    One in-process L{TCPClientSocket} as the console lists it.  Byte counts
    are the socket's own counters when it keeps them, else the kernel's.
    """
    bytesIn = getattr(sock, "bytesIn", None)
    bytesOut = getattr(sock, "bytesOut", None)
    if bytesIn is None or bytesOut is None:
        kernel = kernelByteCounts(_socketOf(getattr(sock, "_transport", None)))  # type: ignore[arg-type]
        bytesIn, bytesOut = kernel if kernel is not None else (0, 0)
    return {
        "kind": kind,
        "local": addressText(sock.localAddress, sock.localPort),
        "remote": addressText(sock.remoteAddress, sock.remotePort),
        "bytesIn": bytesIn,
        "bytesOut": bytesOut,
        "openedAt": getattr(sock, "openedAt", None),
        "tls": bool(sock.ssl),
    }


def _addressOf(address: Any) -> str | None:
    """
    C{"HOST:PORT"} of a Twisted address (L{None} if it has no host).
    """
    return addressText(getattr(address, "host", None), getattr(address, "port", None))


def describeTransport(
    kind: str, transport: Any, openedAt: float | None
) -> dict[str, Any]:
    """
    A connection or port opened through the extension's checked reactor
    (Twisted code of its own) as the console lists it: kernel byte counts.
    """
    counts = None
    if kind != "server":
        # Under TLS the transport is a protocol over the TCP transport.
        sock = _socketOf(transport) or _socketOf(getattr(transport, "transport", None))
        if sock is not None:
            counts = kernelByteCounts(sock)
    bytesIn, bytesOut = counts if counts is not None else (0, 0)
    try:
        local = _addressOf(transport.getHost())
    except Exception:
        local = None
    remote = None
    if kind != "server":
        try:
            remote = _addressOf(transport.getPeer())
        except Exception:
            remote = None
    return {
        "kind": kind,
        "local": local,
        "remote": remote,
        "bytesIn": bytesIn,
        "bytesOut": bytesOut,
        "openedAt": openedAt,
        "tls": ISSLTransport.providedBy(transport),
    }


def describeServerSocket(server: Any, openedAt: float | None) -> dict[str, Any]:
    """
    One in-process L{TCPServerSocket} as the console lists it.
    """
    return {
        "kind": "server",
        "local": addressText(server.localAddress, server.localPort),
        "remote": None,
        "bytesIn": 0,
        "bytesOut": 0,
        "openedAt": getattr(server, "openedAt", openedAt),
        "tls": False,
    }


class _InProcessView:
    """
    An extension running in this process.
    """

    isolation = "none"

    def __init__(
        self,
        child: Any,
        operatorGrants: list[str],
        store: Any,
        ledgers: Mapping[str, GrantLedger],
    ) -> None:
        """
        @param child: Its L{ExtensionService}.
        @param operatorGrants: The C{--grant}s in effect for it.
        @param store: The service's grant store.
        @param ledgers: The service's ledgers of the extensions it runs in
            its process, by id (the one of this extension is made when it
            starts).
        """
        self.child = child
        self.manifest = child.manifest
        self._operator = list(operatorGrants)
        self._store = store
        self._ledgers = ledgers

    def _ledger(self) -> GrantLedger | None:
        """
        The extension's ledger while it runs, else L{None}.
        """
        if self.child.browser is None:
            return None
        return self._ledgers.get(self.manifest.id)

    @property
    def state(self) -> str:
        """
        C{running}, C{failed} or C{stopped}.
        """
        child = self.child
        if child.failed is not None:
            return "failed"
        if child.running and child.browser is not None:
            return "running"
        return "stopped"

    def grantsBySource(self) -> dict[str, list[str]]:
        """
        The grants in effect, by source.
        """
        ledger = self._ledger()
        if ledger is not None:
            return ledger.grantsBySource()
        stored = sorted(self._store.load(self.manifest.id))
        return {
            "manifest": sorted(str(p) for p in self.manifest.permissions),
            "operator": sorted(self._operator),
            "stored": stored,
        }

    def grant(self, permission: str) -> Deferred[None]:
        """
        Grant an optional permission as a stored grant: saved first, then
        in effect.
        """
        ledger = self._ledger()
        if ledger is not None:
            ledger.grant(permission)
            return defer.succeed(None)
        current = self.grantsBySource()["stored"]
        if permission not in current:
            self._store.save(self.manifest.id, sorted({*current, permission}))
        return defer.succeed(None)

    def revoke(self, permission: str) -> Deferred[None]:
        """
        Take a stored or operator grant away (the store first).
        """
        ledger = self._ledger()
        if permission in self._operator:
            self._operator.remove(permission)
        if ledger is not None:
            ledger.revoke(permission)
            return defer.succeed(None)
        stored = self.grantsBySource()["stored"]
        if permission in stored:
            self._store.save(self.manifest.id, [e for e in stored if e != permission])
        return defer.succeed(None)

    def sockets(self) -> list[dict[str, Any]]:
        """
        The open sockets of the extension.
        """
        browser = self.child.browser
        if browser is None:
            return []
        result = [
            describeServerSocket(thing, openedAt)
            if kind == "server"
            else describeClientSocket(thing, kind)
            for kind, thing, openedAt in browser.openSockets()
        ]
        for kind, transport, openedAt in browser.reactor.openTransports():
            result.append(describeTransport(kind, transport, openedAt))
        return result

    @property
    def restarts(self) -> int | None:
        """
        L{None}: no child process.
        """
        return None


class _IsolatedView:
    """
    An extension running in its own process.
    """

    def __init__(self, child: Any, manifest: Any) -> None:
        """
        @param child: Its L{IsolatedExtension}.
        @param manifest: Its L{Manifest}.
        """
        self.child = child
        self.manifest = manifest
        self.isolation = child.mode

    @property
    def state(self) -> str:
        """
        C{running}, C{failed}, C{restarting} or C{stopped}.
        """
        state: str = self.child.state
        return state

    def grantsBySource(self) -> dict[str, list[str]]:
        """
        The grants in effect, by source.
        """
        result: dict[str, list[str]] = self.child.ledger.grantsBySource()
        return result

    def grant(self, permission: str) -> Deferred[None]:
        """
        Grant an optional permission as a stored grant; the running child
        hears of it at once.
        """
        self.child.grant(permission)
        return defer.succeed(None)

    def revoke(self, permission: str) -> Deferred[None]:
        """
        Take a grant away; the child is told, and the host closes its
        copies of what no remaining grant allows.
        """
        return self.child.revoke([permission])

    def sockets(self) -> list[dict[str, Any]]:
        """
        The sockets the host opened and passed to the child (the host's
        duplicates: kernel byte counts).
        """
        broker = self.child.broker
        if broker is None:
            return []
        result = []
        for held in broker.heldSockets():
            sock = held.sock
            try:
                local = sock.getsockname()
            except OSError:
                continue
            remote: Any = None
            if held.kind != "listen":
                try:
                    remote = sock.getpeername()
                except OSError:
                    remote = None
            counts = kernelByteCounts(sock) if held.kind != "listen" else (0, 0)
            bytesIn, bytesOut = counts if counts is not None else (0, 0)
            result.append(
                {
                    "kind": "server" if held.kind == "listen" else "client",
                    "local": addressText(local[0], local[1]),
                    "remote": addressText(remote[0], remote[1]) if remote else None,
                    "bytesIn": bytesIn,
                    "bytesOut": bytesOut,
                    "openedAt": getattr(held, "openedAt", None),
                    "tls": False,
                }
            )
        return result

    @property
    def restarts(self) -> int | None:
        """
        How many times the child process was started again.
        """
        return max(0, self.child.starts - 1)


def extensionView(service: Any, child: Any) -> Any:
    """
    The console's view of one child service of C{service}.
    """
    from tcpext.extension import ExtensionService

    if isinstance(child, ExtensionService):
        return _InProcessView(
            child,
            service._grantsFor(child.manifest),
            service.grantStore,
            service.ledgers,
        )
    return _IsolatedView(child, service.extensions[child.extensionId])


@implementer(IConsole)
class ServiceConsole:
    """
    The console of a L{TCPExtService}.
    """

    def __init__(
        self,
        service: Any,
        *,
        audit: AuditLog,
        prompt: RememberingPrompt | None = None,
        admin: AdminPrompt | None = None,
    ) -> None:
        """
        @param service: The running L{TCPExtService}.
        @param audit: Its audit trail.
        @param prompt: Its prompt policy (to clear remembered refusals when
            the operator grants).
        @param admin: The C{--prompt admin} queue, if that is the prompt.
        """
        self._service = service
        self._audit = audit
        self._prompt = prompt
        self._admin = admin
        self._views: dict[str, Any] = {}
        self.meter = ConsoleMetrics(self._samples)
        audit.addObserver(self.meter.decision)

    def _view(self, extensionId: str) -> Any:
        """
        The view of one extension.

        @raise NotFound: If no such extension is loaded.
        """
        for child in self._service:
            name = getattr(child, "name", None)
            if name == extensionId:
                view = self._views.get(extensionId)
                if view is None or view.child is not child:
                    view = extensionView(self._service, child)
                    self._views[extensionId] = view
                return view
        raise NotFound(f"no extension {extensionId!r} is loaded")

    def _allViews(self) -> Iterator[Any]:
        """
        The view of every extension, in load order.
        """
        for child in list(self._service):
            name = getattr(child, "name", None)
            if isinstance(name, str) and name in self._service.extensions:
                yield self._view(name)

    def extensions(self) -> list[dict[str, Any]]:
        """
        See L{IConsole.extensions}.
        """
        result = []
        for view in self._allViews():
            manifest = view.manifest
            result.append(
                {
                    "id": manifest.id,
                    "name": manifest.name,
                    "version": manifest.version,
                    "isolation": view.isolation,
                    "state": view.state,
                    "grants": view.grantsBySource(),
                    "sockets": len(view.sockets()),
                }
            )
        return result

    def grants(self, extensionId: str) -> dict[str, list[str]]:
        """
        See L{IConsole.grants}.
        """
        result: dict[str, list[str]] = self._view(extensionId).grantsBySource()
        return result

    def _canonical(self, permission: str) -> str:
        """
        The canonical text of C{permission}.

        @raise BadRequest: If it is not a valid C{tcp-*} permission.
        """
        try:
            return str(parsePermission(permission))
        except (ValueError, TypeError) as e:
            raise BadRequest(str(e))

    def grant(self, extensionId: str, permission: str) -> Deferred[None]:
        """
        See L{IConsole.grant}.
        """
        view = self._view(extensionId)
        entry = self._canonical(permission)
        optional = {str(p) for p in view.manifest.optionalPermissions}
        if entry not in optional:
            raise BadRequest(
                f"{permission!r} is not in the optional_permissions of "
                f"{extensionId!r} ({', '.join(sorted(optional)) or 'none'})"
            )
        d: Deferred[None] = defer.maybeDeferred(view.grant, entry)

        def notSaved(failure: Failure) -> None:
            failure.trap(GrantNotSaved)
            raise Unavailable(
                f"the grant store could not save {entry!r}; nothing was granted "
                f"({failure.getErrorMessage()})"
            )

        d.addErrback(notSaved)

        def granted(result: None) -> None:
            if self._prompt is not None:
                self._prompt.forget(extensionId, entry)
            self._audit.record(
                extensionId, "grant", entry, True, grant="operator (console)"
            )

        return d.addCallback(granted)

    def revoke(self, extensionId: str, permission: str) -> Deferred[None]:
        """
        See L{IConsole.revoke}.
        """
        view = self._view(extensionId)
        entry = self._canonical(permission)
        grants = view.grantsBySource()
        if entry in grants["manifest"]:
            raise Conflict(
                f"{entry!r} is required by the manifest of {extensionId!r}; "
                "it cannot be revoked"
            )
        if entry not in grants["operator"] and entry not in grants["stored"]:
            raise NotFound(f"{entry!r} is not granted to {extensionId!r}")
        d: Deferred[None] = defer.maybeDeferred(view.revoke, entry)

        def revoked(result: None) -> None:
            self._audit.record(
                extensionId,
                "revoke",
                entry,
                False,
                reason="revoked by the operator (console)",
            )

        return d.addCallback(revoked)

    def sockets(self, extensionId: str) -> list[dict[str, Any]]:
        """
        See L{IConsole.sockets}.
        """
        result: list[dict[str, Any]] = self._view(extensionId).sockets()
        return result

    def requests(self) -> list[dict[str, Any]]:
        """
        See L{IConsole.requests}.
        """
        if self._admin is None:
            return []
        return [r.asJSON() for r in self._admin.pending()]

    def answer(self, requestId: str, approve: bool) -> None:
        """
        See L{IConsole.answer}.
        """
        if self._admin is None:
            raise NotFound(
                f"no pending request {requestId!r} (the service does not use "
                "--prompt admin)"
            )
        try:
            self._admin.answer(requestId, approve)
        except UnknownRequest:
            raise NotFound(f"no pending request {requestId!r}")

    def audit(self, after: int) -> list[dict[str, Any]]:
        """
        See L{IConsole.audit}.
        """
        return self._audit.after(after, limit=1000)

    def metrics(self) -> tuple[bytes, str]:
        """
        See L{IConsole.metrics}.
        """
        return self.meter.render()

    def _samples(self) -> list[ExtensionSample]:
        """
        One sample per extension, for the metrics.
        """
        samples = []
        for view in self._allViews():
            sockets = view.sockets()
            counts: dict[str, int] = {}
            for s in sockets:
                counts[s["kind"]] = counts.get(s["kind"], 0) + 1
            samples.append(
                ExtensionSample(
                    extension=view.manifest.id,
                    sockets=counts,
                    bytesIn=sum(s["bytesIn"] for s in sockets),
                    bytesOut=sum(s["bytesOut"] for s in sockets),
                    restarts=view.restarts,
                    state=view.state,
                )
            )
        return samples
