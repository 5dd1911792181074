# -*- test-case-name: tests.test_policy -*-
"""
Tests for L{tcpext._policy}: every decision, as tables, without a reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tcpext._hosts import parseHost
from tcpext._policy import (
    CONNECT,
    LISTEN,
    REMEMBER_SECONDS,
    REQUEST,
    RESOLVE,
    ConnectTarget,
    Decision,
    DenialLog,
    Grounds,
    NameMemory,
    Policy,
    connectTarget,
    listenTarget,
    localhostAddresses,
)
from tcpext.permissions import PermissionDenied, PermissionSet


class _Text(str):
    """
    A str subclass that lies about itself.
    """

    def __str__(self) -> str:
        return "evil.example"

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash("93.184.216.34")


class _Port(int):
    """
    An int subclass.
    """


def policy(*grants: str, observers: Any = ()) -> Policy:
    """
    A policy over C{grants}.
    """
    return Policy(PermissionSet(grants), extensionId="ext", observers=observers)


class TargetTests(SynchronousTestCase):
    """
    L{connectTarget} and L{listenTarget}: one place that reads a request,
    with one set of messages, and gives back plain canonical values.
    """

    def test_connectCanonical(self) -> None:
        """
        Hosts come out canonical: names lower case and IDNA-encoded, IPv6
        without brackets, IPv4-mapped IPv6 as IPv4, a zone kept.
        """
        table = [
            ("Example.COM.", "example.com", "example.com:80"),
            ("bücher.example", "xn--bcher-kva.example", "xn--bcher-kva.example:80"),
            ("[::1]", "::1", "[::1]:80"),
            ("::ffff:127.0.0.1", "127.0.0.1", "127.0.0.1:80"),
            ("[::ffff:7f00:1]", "127.0.0.1", "127.0.0.1:80"),
            ("fe80::1%eth0", "fe80::1%eth0", "[fe80::1%eth0]:80"),
            ("[FE80::1%lo]", "fe80::1%lo", "[fe80::1%lo]:80"),
        ]
        for host, address, text in table:
            target = connectTarget(host, 80)
            self.assertEqual((target.address, str(target)), (address, text), host)
            self.assertIs(type(target.address), str)

    def test_connectPlainValues(self) -> None:
        """
        A C{str} subclass host and an C{int} subclass port come out as a
        plain C{str} and C{int}: only their plain value counts, whatever the
        subclass says about itself.
        """
        target = connectTarget(_Text("10.0.0.1"), _Port(80))
        self.assertEqual(target.address, "10.0.0.1")
        self.assertIs(type(target.address), str)
        self.assertIs(type(target.port), int)
        self.assertFalse(policy("tcp-connect:93.184.216.34:80").connect(target).allowed)

    def test_connectInvalid(self) -> None:
        """
        Invalid requests raise L{TypeError} or L{ValueError} naming what is
        wrong.
        """
        table: list[tuple[Any, Any, type[Exception], str]] = [
            ("127.1", 80, ValueError, "127.1"),
            ("2130706433", 80, ValueError, "canonical dotted quad"),
            ("0x7f000001", 80, ValueError, "0x7f000001"),
            ("", 80, ValueError, "empty"),
            ("a..b", 80, ValueError, "empty label"),
            ("[::1", 80, ValueError, "brackets"),
            ("::ffff:127.0.0.1%eth0", 80, ValueError, "zone"),
            ("example.com", 0, ValueError, "outside 1..65535"),
            ("example.com", 65536, ValueError, "outside 1..65535"),
            ("example.com", True, TypeError, "bool"),
            ("example.com", "80", TypeError, "str"),
            (b"example.com", 80, TypeError, "bytes"),
        ]
        for host, port, kind, text in table:
            error = self.assertRaises(kind, connectTarget, host, port)
            self.assertIn(text, str(error), (host, port))

    def test_listen(self) -> None:
        """
        The default interface is every IPv4 interface; an interface is an
        IP address (zone kept for binding, dropped for matching); port 0 is
        chosen automatically.
        """
        table: list[tuple[Any, Any, str, str, str]] = [
            (7000, None, "0.0.0.0", "0.0.0.0", "0.0.0.0:7000"),
            (7000, "", "0.0.0.0", "0.0.0.0", "0.0.0.0:7000"),
            (0, "127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1:0"),
            (7000, "[::1]", "::1", "::1", "[::1]:7000"),
            (7000, "::ffff:127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1:7000"),
            (7000, "fe80::1%eth0", "fe80::1%eth0", "fe80::1", "[fe80::1%eth0]:7000"),
            (_Port(7000), _Text("::1"), "::1", "::1", "[::1]:7000"),
        ]
        for port, interface, bind, key, text in table:
            target = listenTarget(port, interface)
            self.assertEqual(
                (target.bindAddress, target.key, str(target)),
                (bind, key, text),
                interface,
            )
            self.assertIs(type(target.bindAddress), str)
            self.assertIs(type(target.port), int)

    def test_listenInvalid(self) -> None:
        """
        A name, an alias or a bad port is refused with one set of messages.
        """
        table: list[tuple[Any, Any, type[Exception], str]] = [
            (7000, "example.com", ValueError, "not a name"),
            (7000, "eth0", ValueError, "'eth0' must be the IP address"),
            (7000, "127.1", ValueError, "127.1"),
            (-1, None, ValueError, "outside 0..65535"),
            (65536, None, ValueError, "outside 0..65535"),
            (False, None, TypeError, "bool"),
            (7000, 127, TypeError, "int"),
        ]
        for port, interface, kind, text in table:
            error = self.assertRaises(kind, listenTarget, port, interface)
            self.assertIn(text, str(error), (port, interface))

    def test_localhost(self) -> None:
        """
        C{localhost} names map to loopback; other names do not.
        """
        self.assertEqual(localhostAddresses("localhost"), ("127.0.0.1", "::1"))
        self.assertEqual(localhostAddresses("app.localhost"), ("127.0.0.1", "::1"))
        self.assertIsNone(localhostAddresses("localhost.example"))
        self.assertIsNone(localhostAddresses("127.0.0.1"))


class ConnectTests(SynchronousTestCase):
    """
    L{Policy.connect}: the grant check, which grant matched, why not.
    """

    def test_table(self) -> None:
        """
        Each request against the grants: allowed with the most specific
        grant that matched, or refused with the reason.
        """
        grants = [
            "tcp-connect:example.com:80",
            "tcp-connect:*.example.org:443",
            "tcp-connect:10.0.0.0/8:22",
            "tcp-connect:10.1.2.3:22",
            "tcp-connect:[2001:db8::/32]:1000-2000",
            "tcp-connect:*:7",
        ]
        p = policy(*grants)
        table: list[tuple[str, int, str | None, str]] = [
            ("example.com", 80, "tcp-connect:example.com:80", ""),
            ("EXAMPLE.com.", 80, "tcp-connect:example.com:80", ""),
            ("example.com", 81, None, "not among the ports granted"),
            ("www.example.org", 443, "tcp-connect:*.example.org:443", ""),
            ("example.org", 443, "tcp-connect:*.example.org:443", ""),
            ("evilexample.org", 443, None, "granted for any host (7)"),
            ("10.1.2.3", 22, "tcp-connect:10.1.2.3:22", ""),
            ("10.9.9.9", 22, "tcp-connect:10.0.0.0/8:22", ""),
            ("::ffff:10.9.9.9", 22, "tcp-connect:10.0.0.0/8:22", ""),
            ("11.0.0.1", 22, None, "granted for any host (7)"),
            ("2001:db8::5", 1500, "tcp-connect:[2001:db8::/32]:1000-2000", ""),
            ("fe80::1%eth0", 7, "tcp-connect:*:7", ""),
            ("anything.test", 7, "tcp-connect:*:7", ""),
            ("93.184.216.34", 80, None, "granted for any host (7)"),
        ]
        for host, port, grant, why in table:
            decision = p.connect(connectTarget(host, port))
            self.assertEqual(decision.verb, CONNECT)
            self.assertEqual(decision.target, str(connectTarget(host, port)))
            if grant is None:
                self.assertFalse(decision.allowed, host)
                self.assertIsNone(decision.grant)
                self.assertIn(why, decision.reason or "", host)
                self.assertTrue(
                    decision.message.startswith(
                        f"permission denied: connect to {decision.target}: "
                    ),
                    decision.message,
                )
                self.assertEqual(str(decision.error()), decision.message)
            else:
                self.assertTrue(decision.allowed, host)
                self.assertEqual(str(decision.grant), grant, host)
                self.assertIsNone(decision.reason)

    def test_addressesOfAnAddress(self) -> None:
        """
        An allowed address is the one address dialed (zone kept); a name's
        addresses are only known once resolved.
        """
        p = policy("tcp-connect:*:80")
        self.assertEqual(
            p.connect(connectTarget("fe80::1%eth0", 80)).addresses, ("fe80::1%eth0",)
        )
        self.assertEqual(p.connect(connectTarget("example.com", 80)).addresses, ())

    def test_nameNeverMatchesIP(self) -> None:
        """
        A name never matches an IP grant, an IP never a name grant; the
        reason says so.
        """
        p = policy("tcp-connect:93.184.216.34:80", "tcp-connect:example.com:443")
        name = p.connect(connectTarget("example.net", 80))
        self.assertFalse(name.allowed)
        self.assertIn("an IP/CIDR grant never does", name.message)
        address = p.connect(connectTarget("93.184.216.35", 443))
        self.assertFalse(address.allowed)
        self.assertIn("a name grant never does", address.message)


class ResolvedTests(SynchronousTestCase):
    """
    L{Policy.resolved}: the DNS rebinding rule over the addresses a name
    resolved to.
    """

    def test_table(self) -> None:
        """
        Public addresses pass; non-public ones need an IP/CIDR grant or a
        C{*} host grant; C{localhost} names reach loopback only; what is
        refused is listed with why.
        """
        answers = ["93.184.216.34", "10.0.0.1", "127.0.0.1", "::ffff:7f00:1", "::1"]
        table: list[tuple[list[str], str, list[str], int]] = [
            (["tcp-connect:example.com:80"], "example.com", ["93.184.216.34"], 4),
            (
                ["tcp-connect:example.com:80", "tcp-connect:10.0.0.0/8:80"],
                "example.com",
                ["93.184.216.34", "10.0.0.1"],
                3,
            ),
            (
                ["tcp-connect:example.com:80", "tcp-connect:*:80"],
                "example.com",
                ["93.184.216.34", "10.0.0.1", "127.0.0.1", "::1"],
                0,
            ),
            (["tcp-connect:localhost:80"], "localhost", ["127.0.0.1", "::1"], 2),
        ]
        for grants, name, allowed, refusedCount in table:
            decision = policy(*grants).resolved(connectTarget(name, 80), answers)
            self.assertTrue(decision.allowed, grants)
            self.assertEqual(list(decision.addresses), allowed, grants)
            self.assertEqual(len(decision.refused), refusedCount, grants)
            self.assertEqual(decision.name, name)
            self.assertIsNotNone(decision.grant)

    def test_allRefused(self) -> None:
        """
        A name that resolves only to refused addresses is refused, naming
        each and why.
        """
        decision = policy("tcp-connect:inside.example:80").resolved(
            connectTarget("inside.example", 80), ["127.0.0.1", "169.254.169.254"]
        )
        self.assertFalse(decision.allowed)
        self.assertIn("resolved only to refused addresses", decision.message)
        self.assertIn("169.254.169.254 (link-local", decision.message)
        self.assertEqual(len(decision.refused), 2)

    def test_nameNotAllowed(self) -> None:
        """
        The name grant is checked again: without it, nothing is dialed.
        """
        decision = policy().resolved(connectTarget("example.com", 80), ["1.1.1.1"])
        self.assertFalse(decision.allowed)
        self.assertIn("no tcp-connect grant", decision.message)

    def test_canonicalOnce(self) -> None:
        """
        Allowed addresses come out canonical and once each.
        """
        decision = policy("tcp-connect:*:80").resolved(
            connectTarget("example.com", 80),
            ["::ffff:1.2.3.4", "1.2.3.4", "2606:2800:0220:1::1"],
        )
        self.assertEqual(decision.addresses, ("1.2.3.4", "2606:2800:220:1::1"))

    def test_resolveVerb(self) -> None:
        """
        Resolving for a port is judged as connecting to the name there;
        without a port, as connecting on some port a grant covers.
        """
        p = policy("tcp-connect:example.com:443", "tcp-connect:example.com:80")
        name = parseHost("example.com")
        self.assertTrue(p.resolve(name, 443).allowed)
        self.assertEqual(p.resolve(name, 443).verb, RESOLVE)
        self.assertFalse(p.resolve(name, 22).allowed)
        self.assertTrue(p.resolve(name, None).allowed)
        self.assertFalse(p.resolve(parseHost("other.example"), None).allowed)
        decision = p.resolvedForPorts(name, None, ["1.1.1.1", "10.0.0.1"])
        self.assertEqual((decision.allowed, decision.addresses), (True, ("1.1.1.1",)))
        self.assertEqual(decision.refused, ("10.0.0.1",))


class MemoryTests(SynchronousTestCase):
    """
    The name memory: an address the trusted resolver handed out for a name
    counts as that name, for a while.
    """

    def test_remembered(self) -> None:
        """
        A remembered address is allowed as its name, on a port the name
        grant covers, while the rebinding rule accepts it; the decision says
        which name and grant.
        """
        p = policy("tcp-connect:example.com:443")
        target = connectTarget("93.184.216.34", 443)
        self.assertFalse(p.connect(target, now=0).allowed)
        p.remember("example.com", ["93.184.216.34", "10.0.0.1"], now=0)
        decision = p.connect(target, now=1)
        self.assertEqual(
            (decision.allowed, decision.name, str(decision.grant)),
            (True, "example.com", "tcp-connect:example.com:443"),
        )
        self.assertFalse(p.connect(connectTarget("93.184.216.34", 80), now=1).allowed)
        refused = p.connect(connectTarget("10.0.0.1", 443), now=1)
        self.assertFalse(refused.allowed)
        self.assertIn("it was resolved for example.com", refused.message)
        self.assertFalse(p.connect(target, now=REMEMBER_SECONDS + 1).allowed)
        self.assertFalse(p.connect(target).allowed)

    def test_bounded(self) -> None:
        """
        The memory holds at most C{limit} addresses, the least recently
        resolved forgotten first.
        """
        memory = NameMemory(seconds=10, limit=2)
        memory.remember("a.example", ["1.1.1.1"], 0)
        memory.remember("b.example", ["2.2.2.2"], 0)
        memory.remember("a.example", ["1.1.1.1"], 0)
        memory.remember("c.example", ["3.3.3.3"], 0)
        self.assertEqual(len(memory), 2)
        ip = parseHost
        self.assertEqual(memory.namesFor(ip("1.1.1.1").ip, 1), ["a.example"])  # type: ignore[arg-type]
        self.assertEqual(memory.namesFor(ip("2.2.2.2").ip, 1), [])  # type: ignore[arg-type]
        self.assertEqual(memory.namesFor(ip("3.3.3.3").ip, 11), [])  # type: ignore[arg-type]

    def test_claimedName(self) -> None:
        """
        A name the caller claims is not taken on trust: a C{localhost} name
        counts for loopback only; any other name only if remembered.
        """
        p = policy("tcp-connect:*.localhost:80", "tcp-connect:example.com:80")
        loopback = connectTarget("127.0.0.1", 80)
        self.assertTrue(p.connect(loopback, claimedName="app.localhost").allowed)
        outside = p.connect(connectTarget("10.0.0.1", 80), claimedName="app.localhost")
        self.assertFalse(outside.allowed)
        self.assertIn("localhost names only reach loopback", outside.message)
        public = connectTarget("93.184.216.34", 80)
        self.assertFalse(p.connect(public, now=0, claimedName="example.com").allowed)
        p.remember("example.com", ["93.184.216.34"], 0)
        self.assertTrue(p.connect(public, now=0, claimedName="example.com").allowed)


class ListenTests(SynchronousTestCase):
    """
    L{Policy.listen}.
    """

    def test_table(self) -> None:
        """
        A port grant covers that port on every interface; an interface grant
        that address only; port 0 needs every port.
        """
        p = policy("tcp-listen:7000", "tcp-listen:127.0.0.1:8000-8100")
        table: list[tuple[int, str | None, str | None, str]] = [
            (7000, None, "tcp-listen:7000", ""),
            (7000, "::1", "tcp-listen:7000", ""),
            (8050, "127.0.0.1", "tcp-listen:127.0.0.1:8000-8100", ""),
            (8050, None, None, "no tcp-listen grant covers port 8050 on 0.0.0.0"),
            (8050, "::1", None, "no tcp-listen grant covers port 8050 on ::1"),
            (0, None, None, "an automatically chosen port needs tcp-listen:*"),
        ]
        for port, interface, grant, why in table:
            decision = p.listen(listenTarget(port, interface))
            self.assertEqual(decision.verb, LISTEN)
            if grant is None:
                self.assertFalse(decision.allowed, (port, interface))
                self.assertIn(why, decision.message)
                self.assertIn("permission denied: listen on", decision.message)
            else:
                self.assertEqual(str(decision.grant), grant, (port, interface))
        self.assertIn("(automatic port)", p.listen(listenTarget(0, None)).message)
        self.assertTrue(policy("tcp-listen:*").listen(listenTarget(0, None)).allowed)


class StillAllowedTests(SynchronousTestCase):
    """
    L{Policy.stillAllowed}: what an open socket was allowed for, checked
    against the grants as they are now.
    """

    def test_table(self) -> None:
        """
        A connection stays while any grant allows each of its addresses (its
        own address, or the name it was dialed for under the rebinding
        rule); a listening port while a grant covers it.
        """
        table: list[tuple[list[str], Grounds, bool]] = [
            (["tcp-connect:1.1.1.1:80"], Grounds(CONNECT, 80, ("1.1.1.1",)), True),
            ([], Grounds(CONNECT, 80, ("1.1.1.1",)), False),
            (
                ["tcp-connect:example.com:80"],
                Grounds(CONNECT, 80, ("1.1.1.1",), "example.com"),
                True,
            ),
            (
                ["tcp-connect:example.com:80"],
                Grounds(CONNECT, 80, ("1.1.1.1", "10.0.0.1"), "example.com"),
                False,
            ),
            (
                ["tcp-connect:1.1.1.1:80"],
                Grounds(CONNECT, 80, ("1.1.1.1",), "example.com"),
                True,
            ),
            (
                ["tcp-connect:example.com:80"],
                Grounds(CONNECT, 80, (), "example.com"),
                True,
            ),
            ([], Grounds(CONNECT, 80, (), "example.com"), False),
            (["tcp-listen:7000"], Grounds(LISTEN, 7000, ("0.0.0.0",)), True),
            (["tcp-listen:7000"], Grounds(LISTEN, 0, ("0.0.0.0",)), False),
            (["tcp-listen:[::1]:7000"], Grounds(LISTEN, 7000, ("0.0.0.0",)), False),
            (["tcp-listen:[::1]:7000"], Grounds(LISTEN, 7000, ("::1",)), True),
        ]
        for grants, grounds, kept in table:
            self.assertEqual(policy(*grants).stillAllowed(grounds), kept, grounds)


class ReportTests(SynchronousTestCase):
    """
    Every decision reported reaches every observer, with the extension's id.
    """

    def test_observers(self) -> None:
        """
        Observers get the extension's id and the decision; one that raises
        is logged and does not stop the others.
        """
        seen: list[tuple[str, Decision]] = []

        def broken(extensionId: str, decision: Decision) -> None:
            raise RuntimeError("audit down")

        p = policy(observers=[broken, lambda e, d: seen.append((e, d))])
        decision = p.connect(connectTarget("example.com", 80))
        self.assertIs(p.report(decision), decision)
        self.assertEqual(seen, [("ext", decision)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_denialLog(self) -> None:
        """
        L{DenialLog} logs refusals (and partly refused resolutions) as
        C{denied {request}: {reason}}, nothing for plain allows.
        """
        events: list[dict[str, Any]] = []
        log = DenialLog(Logger(observer=events.append))
        p = policy("tcp-connect:example.com:80", observers=[log])
        p.report(p.connect(connectTarget("example.com", 80)))
        self.assertEqual(events, [])
        p.report(p.connect(connectTarget("1.1.1.1", 80), request="reactor.x"))
        p.report(p.resolved(connectTarget("example.com", 80), ["1.1.1.1", "10.0.0.1"]))
        self.assertEqual(
            [e["request"] for e in events], ["reactor.x", "connect to example.com:80"]
        )
        self.assertIn("permission denied: connect to 1.1.1.1:80", events[0]["reason"])
        self.assertIn("not dialing 10.0.0.1", events[1]["reason"])
        self.assertEqual(events[0]["extensionId"], "ext")

    def test_auditFields(self) -> None:
        """
        A decision gives the audit fields of SPEC section 9.
        """
        p = policy("tcp-connect:example.com:80")
        allowed = p.resolved(connectTarget("example.com", 80), ["1.1.1.1"])
        self.assertEqual(
            allowed.auditFields(),
            {
                "verb": "connect",
                "target": "example.com:80",
                "decision": "allow",
                "grant": "tcp-connect:example.com:80",
                "addresses": ["1.1.1.1"],
                "name": "example.com",
            },
        )
        denied = p.connect(connectTarget("example.com", 81))
        fields = denied.auditFields()
        self.assertEqual(fields["decision"], "deny")
        self.assertNotIn("grant", fields)
        self.assertIn("not among the ports", fields["reason"])

    def test_invalid(self) -> None:
        """
        A refused invalid request carries the error's text as reason and
        message.
        """
        error = ValueError("bad host")
        decision = policy().invalid(CONNECT, "x:1", error, "connect to x:1")
        self.assertEqual(
            (decision.allowed, decision.reason, decision.message),
            (False, "bad host", "bad host"),
        )
        self.assertIsInstance(decision.error(), PermissionDenied)

    def test_requested(self) -> None:
        """
        The answer to a runtime request names the permissions as its target
        and the call as its request; a refusal says the request was refused.
        """
        wanted = ["tcp-connect:a.example:1", "tcp-listen:8080"]
        granted = policy().requested(wanted, True)
        self.assertEqual(
            (granted.verb, granted.target, granted.allowed, granted.request),
            (
                REQUEST,
                "tcp-connect:a.example:1, tcp-listen:8080",
                True,
                "permissions.request(['tcp-connect:a.example:1', 'tcp-listen:8080'])",
            ),
        )
        refused = policy().requested(wanted, False)
        self.assertEqual(
            (refused.allowed, refused.reason, str(refused.error())),
            (
                False,
                "the request was refused",
                "permission denied: the request was refused",
            ),
        )
        self.assertEqual(refused.request, granted.request)

    def test_removed(self) -> None:
        """
        What a revoke closes is refused with the grant removed as the
        reason, and the request in the message.
        """
        decision = policy().removed(
            CONNECT,
            "a.example:80",
            "connection to a.example:80",
            addresses=("192.0.2.1",),
            name="a.example",
        )
        self.assertEqual(
            decision.auditFields(),
            {
                "verb": "connect",
                "target": "a.example:80",
                "decision": "deny",
                "reason": "the grant was removed",
                "addresses": ["192.0.2.1"],
                "name": "a.example",
            },
        )
        self.assertEqual(
            str(decision.error()),
            "permission denied: connection to a.example:80: the grant was removed",
        )
        listen = policy().removed(LISTEN, "0.0.0.0:8080", "listening on 0.0.0.0:8080")
        self.assertEqual(
            (listen.verb, listen.addresses, listen.name, listen.message),
            (
                LISTEN,
                (),
                None,
                "permission denied: listening on 0.0.0.0:8080: the grant was removed",
            ),
        )

    def test_policyNeedsPermissionSet(self) -> None:
        """
        A policy decides over a L{PermissionSet}.
        """
        self.assertRaises(TypeError, Policy, ["tcp-connect:*:*"])
        self.assertIn("ext", repr(policy()))
        self.assertIsInstance(ConnectTarget(parseHost("a.example"), 1).isName, bool)
