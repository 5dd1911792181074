# -*- test-case-name: tests.test_audit -*-
"""
Tests for L{tcpext._audit}: the audit ring, the JSON-lines file and the
denial rate limit.
"""

from __future__ import annotations

import io
import json

from twisted.trial.unittest import SynchronousTestCase

from tcpext._audit import AuditLog, DenialLimiter, openAuditFile


class _Clock:
    """
    A settable clock.
    """

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class AuditLogTests(SynchronousTestCase):
    """
    L{AuditLog} keeps decisions with rising sequence numbers.
    """

    def test_fields(self) -> None:
        """
        An allowed decision carries its grant, a denied one its reason; both
        have C{seq}, C{time}, C{extension}, C{verb}, C{target} and
        C{decision}; addresses are kept when given.
        """
        clock = _Clock()
        audit = AuditLog(clock=clock)
        audit.record(
            "ext",
            "connect",
            "example.com:443",
            True,
            grant="tcp-connect:*.example.com:443",
            addresses=["93.184.216.34"],
        )
        audit.record(
            "ext", "listen", "0.0.0.0:80", False, reason="no grant for port 80"
        )
        self.assertEqual(
            audit.after(0),
            [
                {
                    "seq": 1,
                    "time": 1000.0,
                    "extension": "ext",
                    "verb": "connect",
                    "target": "example.com:443",
                    "decision": "allow",
                    "grant": "tcp-connect:*.example.com:443",
                    "addresses": ["93.184.216.34"],
                },
                {
                    "seq": 2,
                    "time": 1000.0,
                    "extension": "ext",
                    "verb": "listen",
                    "target": "0.0.0.0:80",
                    "decision": "deny",
                    "reason": "no grant for port 80",
                },
            ],
        )

    def test_after(self) -> None:
        """
        C{after(seq)} gives the events after C{seq}, oldest first; after the
        last one it gives nothing; a negative C{seq} is refused.
        """
        audit = AuditLog()
        for i in range(5):
            audit.record("ext", "connect", f"h:{i}", True, grant="g")
        self.assertEqual([e["seq"] for e in audit.after(2)], [3, 4, 5])
        self.assertEqual([e["seq"] for e in audit.after(0, limit=2)], [1, 2])
        self.assertEqual(audit.after(5), [])
        self.assertEqual(audit.after(99), [])
        self.assertRaises(ValueError, audit.after, -1)

    def test_bounded(self) -> None:
        """
        The ring keeps the newest C{size} events; C{after(0)} then starts at
        the oldest kept, and sequence numbers keep rising.
        """
        audit = AuditLog(size=3)
        for i in range(10):
            audit.record("ext", "connect", f"h:{i}", True, grant="g")
        self.assertEqual([e["seq"] for e in audit.after(0)], [8, 9, 10])
        self.assertEqual([e["seq"] for e in audit.after(2)], [8, 9, 10])
        self.assertEqual([e["seq"] for e in audit.after(8)], [9, 10])
        self.assertEqual(audit.seq, 10)

    def test_copies(self) -> None:
        """
        Changing an event returned by C{after} does not change the ring.
        """
        audit = AuditLog()
        audit.record("ext", "connect", "h:1", True, grant="g")
        audit.after(0)[0]["target"] = "changed"
        self.assertEqual(audit.after(0)[0]["target"], "h:1")

    def test_jsonLines(self) -> None:
        """
        With an output file, each kept event is one JSON line holding its
        fields (and twisted.logger's namespace and time).
        """
        output = io.StringIO()
        audit = AuditLog(output=output, clock=_Clock())
        audit.record("ext", "connect", "h:1", True, grant="g")
        audit.record("ext", "connect", "h:2", False, reason="nope")
        lines = output.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        events = [json.loads(line) for line in lines]
        self.assertEqual(events[0]["target"], "h:1")
        self.assertEqual(events[0]["decision"], "allow")
        self.assertEqual(events[0]["seq"], 1)
        self.assertEqual(events[1]["reason"], "nope")
        self.assertEqual(events[1]["log_namespace"], "tcpext.audit")
        self.assertEqual(events[1]["log_time"], 1000.0)

    def test_openAuditFile(self) -> None:
        """
        L{openAuditFile} appends to the file, which is created mode 0600.
        """
        import os
        import stat

        path = self.mktemp()
        with open(path, "w") as f:
            f.write("earlier\n")
        os.chmod(path, 0o644)
        audit = AuditLog(output=openAuditFile(path))
        audit.record("ext", "connect", "h:1", True, grant="g")
        audit.close()
        with open(path) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "earlier")
        self.assertEqual(json.loads(lines[1])["target"], "h:1")
        fresh = self.mktemp()
        openAuditFile(fresh).close()
        self.assertEqual(stat.S_IMODE(os.stat(fresh).st_mode), 0o600)

    def test_openAuditFileNoLink(self) -> None:
        """
        L{openAuditFile} does not write through a symbolic link: it fails
        with C{ELOOP} and the link's target is left as it was.
        """
        import errno
        import os

        target = self.mktemp()
        with open(target, "w") as f:
            f.write("someone else's\n")
        link = self.mktemp()
        os.symlink(target, link)
        error = self.assertRaises(OSError, openAuditFile, link)
        self.assertEqual(error.errno, errno.ELOOP)
        with open(target) as f:
            self.assertEqual(f.read(), "someone else's\n")

    def test_observers(self) -> None:
        """
        Observers see every decision, also the denials the rate limit leaves
        out.
        """
        seen = []
        clock = _Clock()
        audit = AuditLog(limiter=DenialLimiter(burst=2, window=10, clock=clock))
        audit.addObserver(seen.append)
        for i in range(5):
            audit.record("ext", "connect", f"h:{i}", False, reason="r")
        self.assertEqual(len(seen), 5)
        self.assertEqual(len(audit.after(0)), 2)


class DenialLimitTests(SynchronousTestCase):
    """
    Denials are rate-limited per extension; a summary says how many were
    left out.
    """

    def test_limited(self) -> None:
        """
        Past C{burst} denials in a window, an extension's denials are not
        kept (another extension's still are, and allowed decisions always
        are); the first denial of the next window brings a summary.
        """
        clock = _Clock()
        output = io.StringIO()
        audit = AuditLog(
            limiter=DenialLimiter(burst=3, window=10, clock=clock), output=output
        )
        for i in range(10):
            audit.record("noisy", "connect", f"h:{i}", False, reason="r")
        audit.record("noisy", "connect", "ok:1", True, grant="g")
        audit.record("quiet", "connect", "h:1", False, reason="r")
        kept = audit.after(0)
        self.assertEqual(
            [(e["extension"], e["target"]) for e in kept],
            [
                ("noisy", "h:0"),
                ("noisy", "h:1"),
                ("noisy", "h:2"),
                ("noisy", "ok:1"),
                ("quiet", "h:1"),
            ],
        )
        clock.now += 10
        audit.record("noisy", "connect", "h:10", False, reason="r")
        summary, latest = audit.after(5)
        self.assertEqual(summary["verb"], "suppressed")
        self.assertEqual(summary["suppressed"], 7)
        self.assertEqual(summary["extension"], "noisy")
        self.assertIn("7 more denials", summary["reason"])
        self.assertEqual(latest["target"], "h:10")
        self.assertEqual(len(output.getvalue().splitlines()), 7)

    def test_flushSuppressed(self) -> None:
        """
        C{flushSuppressed} (and C{close}) record the summary of the current
        window at once, once.
        """
        clock = _Clock()
        audit = AuditLog(limiter=DenialLimiter(burst=1, window=10, clock=clock))
        for i in range(4):
            audit.record("ext", "connect", f"h:{i}", False, reason="r")
        audit.flushSuppressed()
        audit.close()
        events = audit.after(0)
        self.assertEqual([e["verb"] for e in events], ["connect", "suppressed"])
        self.assertEqual(events[1]["suppressed"], 3)

    def test_invalid(self) -> None:
        """
        A limiter needs a burst of at least one and a positive window; the
        ring at least one event.
        """
        self.assertRaises(ValueError, DenialLimiter, burst=0)
        self.assertRaises(ValueError, DenialLimiter, window=0)
        self.assertRaises(ValueError, AuditLog, size=0)


class DecisionTests(SynchronousTestCase):
    """
    Decisions of the policy, and prompt answers, as audit events.
    """

    def test_recordDecision(self) -> None:
        """
        A policy L{Decision} becomes an event with its verb, target, answer,
        the grant that allowed it (canonical text) or the reason, its
        addresses, the name they were dialed for and the refused ones.
        """
        from tcpext._policy import Decision
        from tcpext.permissions import parsePermission

        audit = AuditLog(requestGrant="approved in the operator console")
        audit.recordDecision(
            "ext",
            Decision(
                "connect",
                "example.com:443",
                True,
                addresses=("192.0.2.1",),
                refused=("10.0.0.1: not public",),
                grant=parsePermission("tcp-connect:*.example.com:443"),
                name="example.com",
            ),
        )
        audit.recordDecision(
            "ext", Decision("listen", "0.0.0.0:80", False, reason="no grant")
        )
        audit.recordDecision("ext", Decision("request", "tcp-listen:80", True))
        allowed, denied, request = audit.after(0)
        self.assertEqual(allowed["grant"], "tcp-connect:*.example.com:443")
        self.assertEqual(allowed["addresses"], ["192.0.2.1"])
        self.assertEqual(allowed["name"], "example.com")
        self.assertEqual(allowed["refused"], ["10.0.0.1: not public"])
        self.assertEqual((denied["decision"], denied["reason"]), ("deny", "no grant"))
        self.assertEqual(request["grant"], "approved in the operator console")
