# -*- test-case-name: tests.test_ledger -*-
"""
Tests for L{tcpext._ledger.GrantLedger}: one extension's grants by source.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tcpext._ledger import (
    CannotRevoke,
    GrantChange,
    GrantLedger,
    GrantNotSaved,
    MemoryGrantStore,
    NotGranted,
)
from tcpext.permissions import parsePermission

MANIFEST = {
    "manifest_version": 2,
    "name": "ext",
    "version": "1",
    "permissions": ["tcp-listen:7000"],
    "optional_permissions": [
        "tcp-connect:example.com:80",
        "tcp-connect:example.com:443",
        "tcp-listen:8000",
    ],
    "background": {"scripts": ["background.py"]},
}


class _FailingStore(MemoryGrantStore):
    """
    A store whose C{save} fails while C{failing} is set.
    """

    failing = True

    def save(self, extensionId: str, entries: list[str]) -> None:
        if self.failing:
            raise OSError("read-only state folder")
        super().save(extensionId, entries)


class LedgerTests(SynchronousTestCase):
    """
    L{GrantLedger}: sources, changes, observers.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changes: list[GrantChange] = []

    def ledger(self, store: Any = None, operator: tuple[str, ...] = ()) -> GrantLedger:
        """
        The ledger of L{MANIFEST}, with an observer recording changes.
        """
        ledger = GrantLedger.fromManifest(
            extensionId="ext",
            manifest=MANIFEST,
            store=store if store is not None else MemoryGrantStore(),
            operatorGrants=operator,
            log=Logger(observer=self.events.append),
        )
        ledger.addObserver(self.changes.append)
        return ledger

    def test_sources(self) -> None:
        """
        Manifest, operator and stored grants are kept apart, all granted;
        stored grants that are invalid or not optional are skipped with a
        warning (a stored grant never widens the manifest).
        """
        store = MemoryGrantStore(
            {"ext": ["tcp-listen:8000", "tcp-connect:*:*", "tcp-bogus"]}
        )
        ledger = self.ledger(store, operator=("tcp-connect:example.com:80",))
        self.assertEqual(
            ledger.grantsBySource(),
            {
                "manifest": ["tcp-listen:7000"],
                "operator": ["tcp-connect:example.com:80"],
                "stored": ["tcp-listen:8000"],
            },
        )
        self.assertEqual(
            sorted(str(p) for p in ledger.grants),
            ["tcp-connect:example.com:80", "tcp-listen:7000", "tcp-listen:8000"],
        )
        self.assertEqual(ledger.sourcesOf("tcp-listen:8000"), ["stored"])
        warnings = [
            e for e in self.events if "ignoring stored grant" in e["log_format"]
        ]
        self.assertEqual(len(warnings), 2)

    def test_operatorNotOptional(self) -> None:
        """
        An operator grant the manifest does not list as optional is an
        error naming it.
        """
        error = self.assertRaises(
            ValueError, self.ledger, operator=("tcp-connect:*:*",)
        )
        self.assertIn("tcp-connect:*:*", str(error))

    def test_keptOrBuilt(self) -> None:
        """
        A ledger the host keeps is used as it is; without one, a ledger is
        built from the manifest, the store and the operator grants; a
        ledger given with a store or operator grants is a L{TypeError}.
        """
        kept = self.ledger()
        self.assertIs(
            GrantLedger.keptOrBuilt(kept, extensionId="ext", manifest=MANIFEST), kept
        )
        store = MemoryGrantStore({"ext": ["tcp-listen:8000"]})
        built = GrantLedger.keptOrBuilt(
            None,
            extensionId="ext",
            manifest=MANIFEST,
            store=store,
            operatorGrants=["tcp-connect:example.com:80"],
        )
        self.assertEqual(
            built.grantsBySource(),
            {
                "manifest": ["tcp-listen:7000"],
                "operator": ["tcp-connect:example.com:80"],
                "stored": ["tcp-listen:8000"],
            },
        )
        for extra in [
            {"store": store},
            {"operatorGrants": iter(["tcp-connect:example.com:80"])},
        ]:
            error = self.assertRaises(
                TypeError,
                GrantLedger.keptOrBuilt,
                kept,
                extensionId="ext",
                manifest=MANIFEST,
                **extra,
            )
            self.assertIn("not both", str(error))

    def test_requestSavesFirst(self) -> None:
        """
        A request saves to the store, then grants, then tells the observers;
        what is granted already is left as it is.
        """
        store = MemoryGrantStore()
        ledger = self.ledger(store, operator=("tcp-listen:8000",))
        granted = ledger.request(["tcp-connect:example.com:80", "tcp-listen:8000"])
        self.assertEqual([str(p) for p in granted], ["tcp-connect:example.com:80"])
        self.assertEqual(store.load("ext"), ["tcp-connect:example.com:80"])
        self.assertTrue(ledger.grants.allowsConnect("example.com", 80))
        [change] = self.changes
        self.assertEqual(
            (change.extensionId, [str(p) for p in change.granted], change.origin),
            ("ext", ["tcp-connect:example.com:80"], "request"),
        )
        self.assertEqual(ledger.request(["tcp-connect:example.com:80"]), [])
        self.assertEqual(len(self.changes), 1)

    def test_requestNotSaved(self) -> None:
        """
        When the store cannot save, nothing is granted, nobody is told, and
        the error says why.
        """
        ledger = self.ledger(_FailingStore())
        error = self.assertRaises(
            GrantNotSaved, ledger.request, ["tcp-connect:example.com:80"]
        )
        self.assertIn("read-only state folder", str(error))
        self.assertFalse(ledger.grants.allowsConnect("example.com", 80))
        self.assertEqual(ledger.grantsBySource()["stored"], [])
        self.assertEqual(self.changes, [])

    def test_requestNotOptional(self) -> None:
        """
        Only optional permissions can be requested or granted.
        """
        ledger = self.ledger()
        self.assertRaises(ValueError, ledger.request, ["tcp-connect:*:*"])
        self.assertRaises(ValueError, ledger.grant, "tcp-connect:evil.example:80")
        self.assertRaises(ValueError, ledger.grant, "not a permission")
        self.assertEqual(self.changes, [])

    def test_grant(self) -> None:
        """
        The operator's grant is stored as a runtime grant.
        """
        store = MemoryGrantStore()
        ledger = self.ledger(store)
        self.assertTrue(ledger.grant("tcp-listen:8000"))
        self.assertFalse(ledger.grant(parsePermission("tcp-listen:8000")))
        self.assertEqual(store.load("ext"), ["tcp-listen:8000"])
        self.assertEqual([c.origin for c in self.changes], ["grant"])

    def test_remove(self) -> None:
        """
        The extension gives up operator (for this run) and stored (saved)
        grants; a manifest permission stays.
        """
        store = MemoryGrantStore({"ext": ["tcp-listen:8000"]})
        ledger = self.ledger(store, operator=("tcp-connect:example.com:80",))
        self.assertTrue(
            ledger.remove(["tcp-connect:example.com:80", "tcp-listen:8000"])
        )
        self.assertEqual(
            ledger.grantsBySource(),
            {"manifest": ["tcp-listen:7000"], "operator": [], "stored": []},
        )
        self.assertEqual(store.load("ext"), [])
        [change] = self.changes
        self.assertEqual(
            sorted(str(p) for p in change.revoked),
            ["tcp-connect:example.com:80", "tcp-listen:8000"],
        )
        self.assertFalse(ledger.remove(["tcp-listen:8000"]))
        self.assertRaises(ValueError, ledger.remove, ["tcp-listen:7000"])

    def test_removeSaveFails(self) -> None:
        """
        What a removed grant allowed stops even if the store cannot save;
        the store's error is raised.
        """
        store = _FailingStore()
        store.failing = False
        ledger = self.ledger(store)
        ledger.request(["tcp-listen:8000"])
        store.failing = True
        self.assertRaises(OSError, ledger.remove, ["tcp-listen:8000"])
        self.assertFalse(ledger.grants.allowsListen(8000))
        self.assertEqual(self.changes[-1].origin, "remove")

    def test_revoke(self) -> None:
        """
        A revoke refuses manifest permissions and what is not granted; an
        operator grant goes for this run (the store is not touched); a
        stored one for good.
        """
        store = MemoryGrantStore({"ext": ["tcp-listen:8000"]})
        ledger = self.ledger(store, operator=("tcp-connect:example.com:80",))
        self.assertRaises(CannotRevoke, ledger.revoke, "tcp-listen:7000")
        self.assertRaises(NotGranted, ledger.revoke, "tcp-connect:example.com:443")
        change = ledger.revoke("tcp-connect:example.com:80")
        assert change is not None
        self.assertEqual(change.origin, "revoke")
        self.assertEqual(store.load("ext"), ["tcp-listen:8000"])
        ledger.revoke("tcp-listen:8000")
        self.assertEqual(store.load("ext"), [])
        self.assertEqual(
            ledger.grantsBySource(),
            {"manifest": ["tcp-listen:7000"], "operator": [], "stored": []},
        )
        self.assertFalse(ledger.grants.allowsConnect("example.com", 80))

    def test_mirror(self) -> None:
        """
        A copy follows its host without saving: granted optional
        permissions become stored ones, revoked ones go whatever their
        source.
        """
        store = _FailingStore()
        ledger = self.ledger(store)
        ledger.mirror(granted=["tcp-listen:8000", "tcp-connect:*:*"])
        self.assertEqual(ledger.grantsBySource()["stored"], ["tcp-listen:8000"])
        ledger.mirror(revoked=["tcp-listen:8000", "tcp-listen:7000"])
        self.assertEqual(len(ledger.grants), 0)
        self.assertEqual([c.origin for c in self.changes], ["mirror", "mirror"])

    def test_observerFailure(self) -> None:
        """
        An observer that raises is logged; the change stands and the other
        observers are told.
        """
        ledger = self.ledger()

        def broken(change: GrantChange) -> None:
            raise RuntimeError("console down")

        ledger.removeObserver(self.changes.append)
        ledger.addObserver(broken)
        ledger.addObserver(self.changes.append)
        ledger.grant("tcp-listen:8000")
        self.assertEqual(len(self.changes), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIn("ext", repr(ledger))
