# -*- test-case-name: tests.test_ledger -*-
"""
One extension's grants, by where they come from: the grant ledger.

An extension's grants have three sources:

  - C{manifest}: its manifest's C{permissions} (for as long as it runs);
  - C{operator}: optional permissions the operator granted when starting the
    service (C{twistd tcpext --grant NAME=PERM}), or later for this run;
  - C{stored}: optional permissions granted at runtime (a
    C{browser.permissions.request} that was answered yes, or a grant from
    the operator console), kept in the L{tcpext.browser.GrantStore} between
    runs.

L{GrantLedger} keeps the three, and the live L{PermissionSet} of their union
that every check reads (the in-process C{browser}, its reactor, the isolated
host's broker).  It is the one place where grants change:

  - L{GrantLedger.request} / L{GrantLedger.grant}: save to the store first,
    then grant; if the store's C{save()} fails nothing is granted anywhere
    (L{GrantNotSaved});
  - L{GrantLedger.remove}: the extension gives optional permissions up;
  - L{GrantLedger.revoke}: the host takes one away (the operator console);
    a manifest permission cannot be revoked (L{CannotRevoke}); an operator
    grant is revoked for this run only;
  - L{GrantLedger.mirror}: an isolated extension's own copy follows what
    the host decided.

Observers (L{GrantLedger.addObserver}) are told of every change (a
L{GrantChange}) after it is made: the browser closes what a revoke no longer
allows, the isolated host tells its child, the console shows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from twisted.logger import Logger
from zope.interface import Interface, implementer

from tcpext.permissions import (
    Permission,
    PermissionSet,
    _coerce,
    parseManifestPermissions,
    parsePermission,
)

__all__ = [
    "CannotRevoke",
    "GrantChange",
    "GrantLedger",
    "GrantNotSaved",
    "GrantStore",
    "MemoryGrantStore",
    "NotGranted",
    "SOURCES",
]

SOURCES = ("manifest", "operator", "stored")
"""The sources of grants, in the order L{GrantLedger.grantsBySource} lists them."""

_log = Logger(namespace="tcpext.ledger")


class GrantStore(Interface):
    """
    Where the optional permissions granted at runtime are kept between runs.
    """

    def load(extensionId: str) -> list[str]:
        """
        The canonical text of the permissions granted to C{extensionId} at
        runtime (empty if none).
        """

    def save(extensionId: str, entries: list[str]) -> None:
        """
        Replace what is kept for C{extensionId} with C{entries} (canonical
        permission text).
        """


@implementer(GrantStore)
class MemoryGrantStore:
    """
    A L{GrantStore} that keeps grants in memory, for tests and for hosts that
    do not persist them.
    """

    def __init__(self, grants: Mapping[str, Iterable[str]] | None = None) -> None:
        """
        @param grants: Initial grants, by extension id.
        """
        self._grants: dict[str, list[str]] = {
            key: list(value) for key, value in (grants or {}).items()
        }

    def load(self, extensionId: str) -> list[str]:
        """
        Return a copy of what was saved for C{extensionId}.
        """
        return list(self._grants.get(extensionId, ()))

    def save(self, extensionId: str, entries: list[str]) -> None:
        """
        Keep a copy of C{entries} for C{extensionId}.
        """
        self._grants[extensionId] = list(entries)


class GrantNotSaved(Exception):
    """
    A grant was asked for but the grant store could not save it, so nothing
    was granted.
    """


class CannotRevoke(ValueError):
    """
    The permission cannot be revoked: it is in the extension's manifest.
    """


class NotGranted(LookupError):
    """
    The permission is not granted, so there is nothing to revoke.
    """


@attrs.frozen
class GrantChange:
    """
    What one change of an extension's grants did.

    @ivar extensionId: The extension.
    @ivar granted: The permissions that are now allowed and were not.
    @ivar revoked: The permissions that are no longer allowed.
    @ivar origin: What changed them: C{"request"} (a runtime request was
        granted), C{"grant"} (the operator granted one), C{"remove"} (the
        extension gave them up), C{"revoke"} (the operator took one away) or
        C{"mirror"} (an isolated extension's copy following its host).
    """

    extensionId: str
    granted: tuple[Permission, ...] = ()
    revoked: tuple[Permission, ...] = ()
    origin: str = ""


LedgerObserver = Callable[[GrantChange], None]
"""
Told of every change of a ledger's grants, after it is made.  It must not
raise (a failure is logged and ignored).
"""


def _operatorGrants(
    extensionId: str, entries: Iterable[str], optional: Mapping[str, Permission]
) -> dict[str, Permission]:
    """
    Parse the operator's grants for one extension; each must be one of the
    optional permissions its manifest lists.

    @param optional: The manifest's optional permissions by canonical text.
    @return: The grants by canonical text.
    @raise ValueError: For an invalid entry or one that is not optional.
    """
    granted: dict[str, Permission] = {}
    for entry in entries:
        p = parsePermission(entry)
        if str(p) not in optional:
            raise ValueError(
                f"cannot grant {entry!r} to {extensionId!r}: its manifest "
                "does not list it in optional_permissions"
            )
        granted[str(p)] = p
    return granted


def _storedGrants(
    entries: Iterable[str], optional: Mapping[str, Permission], log: Logger
) -> dict[str, Permission]:
    """
    Parse the grants a L{GrantStore} holds for one extension, skipping (with a
    warning on C{log}) the invalid ones and those its manifest does not list as
    optional: a stored grant never widens what the manifest allows.

    @param optional: The manifest's optional permissions by canonical text.
    @return: The grants by canonical text.
    """
    granted: dict[str, Permission] = {}
    for entry in entries:
        try:
            p = parsePermission(entry)
        except (TypeError, ValueError) as e:
            log.warn(
                "ignoring stored grant {entry!r}: {reason}",
                entry=entry,
                reason=str(e),
            )
            continue
        if str(p) not in optional:
            log.warn(
                "ignoring stored grant {entry!r}: not in optional_permissions",
                entry=entry,
            )
            continue
        granted[str(p)] = p
    return granted


class GrantLedger:
    """
    One extension's grants by source, and the live L{PermissionSet} of all
    of them.  See the module docstring.

    @ivar extensionId: The extension's id.
    @ivar grants: The live set every check reads.  Only the ledger changes
        it.
    @ivar required: The manifest's permissions, by canonical text.
    @ivar optional: The manifest's optional permissions, by canonical text.
    """

    def __init__(
        self,
        *,
        extensionId: str,
        required: Iterable[Permission] = (),
        optional: Iterable[Permission] = (),
        operator: Iterable[Permission] = (),
        stored: Iterable[Permission] = (),
        store: Any = None,
        log: Logger | None = None,
    ) -> None:
        """
        Use L{fromManifest} unless the parts are already parsed and checked.

        @param required: The manifest's permissions.
        @param optional: The manifest's optional permissions; operator and
            stored grants must be among them.
        @param operator: The operator's grants.
        @param stored: The grants the store holds.
        @param store: The L{GrantStore} runtime grants are saved to (a fresh
            L{MemoryGrantStore} by default).
        @param log: Where changes are logged.
        @raise ValueError: An operator or stored grant is not optional.
        """
        self.extensionId = extensionId
        self.required = {str(p): p for p in required}
        self.optional = {str(p): p for p in optional}
        self._store = store if store is not None else MemoryGrantStore()
        self.log = log or Logger(namespace=f"tcpext.extension.{extensionId}")
        self._sources: dict[str, dict[str, Permission]] = {
            "manifest": dict(self.required),
            "operator": {},
            "stored": {},
        }
        for source, entries in (("operator", operator), ("stored", stored)):
            for p in entries:
                if str(p) not in self.optional:
                    raise ValueError(
                        f"{source} grant {str(p)!r} of {extensionId!r} is not in "
                        "the manifest's optional_permissions"
                    )
                self._sources[source][str(p)] = p
        self.grants = PermissionSet(self._effective().values())
        self._observers: list[LedgerObserver] = []

    @classmethod
    def fromManifest(
        cls,
        *,
        extensionId: str,
        manifest: Mapping[str, Any],
        store: Any = None,
        operatorGrants: Iterable[str] = (),
        log: Logger | None = None,
    ) -> GrantLedger:
        """
        The ledger of an extension: its manifest's permissions, the
        operator's grants (each must be an optional permission) and what
        C{store} holds for it (invalid or non-optional stored grants are
        skipped with a warning: a stored grant never widens the manifest).

        @raise ValueError: For an invalid C{tcp-*} entry in the manifest or
            in C{operatorGrants}, or an operator grant that the manifest
            does not list in C{optional_permissions}.
        """
        log = log or Logger(namespace=f"tcpext.extension.{extensionId}")
        store = store if store is not None else MemoryGrantStore()
        required, _ = parseManifestPermissions(list(manifest.get("permissions", [])))
        optional, _ = parseManifestPermissions(
            list(manifest.get("optional_permissions", []))
        )
        byText = {str(p): p for p in optional}
        operator = _operatorGrants(extensionId, operatorGrants, byText)
        stored = _storedGrants(store.load(extensionId), byText, log)
        return cls(
            extensionId=extensionId,
            required=required,
            optional=optional,
            operator=operator.values(),
            stored=stored.values(),
            store=store,
            log=log,
        )

    @classmethod
    def keptOrBuilt(
        cls,
        ledger: GrantLedger | None,
        *,
        extensionId: str,
        manifest: Mapping[str, Any],
        store: Any = None,
        operatorGrants: Iterable[str] = (),
        log: Logger | None = None,
    ) -> GrantLedger:
        """
        The ledger an extension's grants live in: C{ledger} when its host
        keeps one (the store and the operator grants are then the
        ledger's, and may not be given too), else one built by
        L{fromManifest}.

        @raise TypeError: C{ledger} given with C{store} or C{operatorGrants}.
        @raise ValueError: As L{fromManifest}.
        """
        if ledger is None:
            return cls.fromManifest(
                extensionId=extensionId,
                manifest=manifest,
                store=store,
                operatorGrants=operatorGrants,
                log=log,
            )
        if store is not None or tuple(operatorGrants):
            raise TypeError(
                "give either a ledger or its grant store and operator grants, not both"
            )
        return ledger

    def __repr__(self) -> str:
        """
        Name the extension and list the grants by source.
        """
        return f"<GrantLedger for {self.extensionId!r}: {self.grantsBySource()!r}>"

    # -- reading ---------------------------------------------------------

    def _effective(self) -> dict[str, Permission]:
        """
        Every granted permission, by canonical text.
        """
        result: dict[str, Permission] = {}
        for source in SOURCES:
            result.update(self._sources[source])
        return result

    def grantsBySource(self) -> dict[str, list[str]]:
        """
        The canonical text of the grants, by source: C{{"manifest": [...],
        "operator": [...], "stored": [...]}} (each sorted).  A permission
        granted by more than one source is listed under each.
        """
        return {source: sorted(self._sources[source]) for source in SOURCES}

    def sourcesOf(self, permission: Permission | str) -> list[str]:
        """
        The sources that grant C{permission} (empty if none).

        @raise ValueError: C{permission} is text that does not parse.
        """
        key = str(_coerce(permission))
        return [source for source in SOURCES if key in self._sources[source]]

    def optionalPermission(self, entry: Permission | str) -> Permission:
        """
        The optional permission C{entry} names.

        @raise ValueError: C{entry} does not parse, or is not in the
            manifest's C{optional_permissions}.
        """
        try:
            p = _coerce(entry)
        except ValueError:
            raise ValueError(
                f"{str(entry)!r} is not in the manifest's optional_permissions"
            ) from None
        if str(p) not in self.optional:
            raise ValueError(
                f"{str(entry)!r} is not in the manifest's optional_permissions"
            )
        return self.optional[str(p)]

    def missing(self, entries: Iterable[Permission | str]) -> list[Permission]:
        """
        The optional permissions among C{entries} that are not granted now,
        in order, each once.

        @raise ValueError: An entry is not an optional permission.
        """
        result: list[Permission] = []
        for entry in entries:
            p = self.optionalPermission(entry)
            if p not in self.grants and p not in result:
                result.append(p)
        return result

    # -- observers -------------------------------------------------------

    def addObserver(self, observer: LedgerObserver) -> None:
        """
        Tell C{observer} of every later change.
        """
        self._observers.append(observer)

    def removeObserver(self, observer: LedgerObserver) -> None:
        """
        Stop telling C{observer} (no-op if it was not told).
        """
        if observer in self._observers:
            self._observers.remove(observer)

    def _changed(
        self,
        before: set[Permission],
        origin: str,
    ) -> GrantChange | None:
        """
        Bring the live set in line with the sources and tell the observers
        what changed since C{before}.
        """
        wanted = self._effective()
        grants = self.grants
        revoked = tuple(p for p in before if str(p) not in wanted)
        granted = tuple(p for p in wanted.values() if p not in before)
        for p in revoked:
            grants.discard(p)
        for p in granted:
            grants.add(p)
        if not granted and not revoked:
            return None
        change = GrantChange(self.extensionId, granted, revoked, origin)
        for observer in list(self._observers):
            try:
                observer(change)
            except Exception:
                _log.failure(
                    "a grant observer of {extensionId!r} failed on {change!r}",
                    extensionId=self.extensionId,
                    change=change,
                )
        return change

    # -- changes ---------------------------------------------------------

    def _save(self, stored: Mapping[str, Permission]) -> None:
        """
        Save C{stored} as this extension's runtime grants.
        """
        self._store.save(self.extensionId, sorted(stored))

    def request(
        self, entries: Iterable[Permission | str], *, origin: str = "request"
    ) -> list[Permission]:
        """
        Grant optional permissions at runtime (a runtime request answered
        yes): saved to the store first, then granted.

        @return: The permissions newly granted (those already granted are
            left as they are).
        @raise ValueError: An entry is not an optional permission (nothing
            is granted).
        @raise GrantNotSaved: The store's C{save()} failed; nothing is
            granted.
        """
        wanted = self.missing(entries)
        if not wanted:
            return []
        stored = dict(self._sources["stored"])
        for p in wanted:
            stored[str(p)] = p
        try:
            self._save(stored)
        except Exception as e:
            self.log.error(
                "could not save the grant of {permissions}; nothing was "
                "granted: {reason}",
                permissions=[str(p) for p in wanted],
                reason=str(e),
            )
            raise GrantNotSaved(
                f"could not save the grant of {', '.join(map(str, wanted))}; "
                f"nothing was granted: {e}"
            ) from e
        before = set(self.grants)
        self._sources["stored"] = stored
        self._changed(before, origin)
        self.log.info("granted {permissions}", permissions=[str(p) for p in wanted])
        return wanted

    def grant(self, permission: Permission | str) -> bool:
        """
        Grant one optional permission now, stored as a runtime grant (the
        operator console's grant): as L{request}.

        @return: C{True} if it was not granted before.
        @raise ValueError: It is not an optional permission.
        @raise GrantNotSaved: The store's C{save()} failed; nothing is
            granted.
        """
        return bool(self.request([permission], origin="grant"))

    def remove(self, entries: Iterable[Permission | str]) -> bool:
        """
        The extension gives optional permissions up (C{browser.permissions.
        remove}): they stop being granted by the operator (for this run) and
        the store (saved).  A permission its manifest requires stays
        granted.

        What the removed grants allowed stops being allowed even if saving
        fails (the store's error is then raised).

        @return: C{True} if any of them was granted and is not any more.
        @raise ValueError: An entry is not an optional permission (nothing
            is removed).
        """
        permissions = [self.optionalPermission(entry) for entry in entries]
        before = set(self.grants)
        operator = self._sources["operator"]
        stored = dict(self._sources["stored"])
        changedStore = False
        for p in permissions:
            operator.pop(str(p), None)
            if stored.pop(str(p), None) is not None:
                changedStore = True
        self._sources["stored"] = stored
        change = self._changed(before, "remove")
        if change is not None:
            self.log.info(
                "removed {permissions}", permissions=[str(p) for p in change.revoked]
            )
        if changedStore:
            self._save(stored)
        return change is not None

    def revoke(self, permission: Permission | str) -> GrantChange | None:
        """
        The host takes a grant away (the operator console's revoke): an
        operator grant for this run only, a stored grant for good (saved).

        What it allowed stops being allowed even if saving fails (the
        store's error is then raised).

        @return: The change (L{None} if the permission stays granted by
            another source, which cannot happen for an optional one).
        @raise CannotRevoke: It is one of the manifest's permissions.
        @raise NotGranted: It is not granted.
        @raise ValueError: It does not parse.
        """
        p = _coerce(permission)
        key = str(p)
        if key in self._sources["manifest"]:
            raise CannotRevoke(
                f"{key} is in the manifest of {self.extensionId!r}: it cannot be "
                "revoked (remove the extension or change its manifest)"
            )
        operator = self._sources["operator"]
        stored = dict(self._sources["stored"])
        if key not in operator and key not in stored:
            raise NotGranted(f"{key} is not granted to {self.extensionId!r}")
        before = set(self.grants)
        operator.pop(key, None)
        changedStore = stored.pop(key, None) is not None
        self._sources["stored"] = stored
        change = self._changed(before, "revoke")
        self.log.info("revoked {permission}", permission=key)
        if changedStore:
            self._save(stored)
        return change

    def mirror(
        self,
        granted: Iterable[Permission | str] = (),
        revoked: Iterable[Permission | str] = (),
    ) -> GrantChange | None:
        """
        Follow a change another ledger made (an isolated extension's copy
        following its host's, which has saved it already): C{granted}
        become stored grants, C{revoked} stop being granted by any source.
        Nothing is saved.

        @raise ValueError: An entry does not parse.
        """
        before = set(self.grants)
        stored = dict(self._sources["stored"])
        for entry in granted:
            p = _coerce(entry)
            if str(p) in self.optional:
                stored[str(p)] = p
        for entry in revoked:
            key = str(_coerce(entry))
            for source in SOURCES:
                if source != "stored":
                    self._sources[source].pop(key, None)
            stored.pop(key, None)
        self._sources["stored"] = stored
        return self._changed(before, "mirror")
