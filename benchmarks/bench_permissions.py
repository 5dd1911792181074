# -*- test-case-name: tests.test_permissions -*-
"""
W7: the cost of one permission check.

Measures L{tcpext.permissions.PermissionSet.allowsConnect} against 10 and
10,000 grants (a mix of exact names, C{*.name} wildcards, IPv4 and IPv6
addresses and networks, single ports and ranges), with a mix of probes that
hit each kind of grant and probes that miss. Reports microseconds per check:
the median of several repetitions, each timing a full pass over the probes
with C{time.perf_counter_ns}.

Two figures per size:
  - C{allowsConnect_us}: probes repeat (as real traffic does), so host
    canonicalization is served from its cache;
  - C{allowsConnect_cold_us}: every probe is a host not seen before, so each
    check parses and canonicalizes its host from scratch.

Also C{checkResolved_us}: the DNS rebinding check for a name and four
resolved addresses; and C{decideConnect_us} / C{decideConnect_cold_us}: the
whole decision every path makes for a connect (the request read and
canonicalized by L{tcpext._policy.connectTarget}, L{tcpext._policy.Policy.
connect} with the grant that matched or the reason, and the decision
reported to one observer), on the same probes, and on the allowed and the
denied ones apart (a denial also says why: its reason names the grants that
came close).

Usage: C{python benchmarks/bench_permissions.py [--json] [--repeat N]}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tcpext import _hosts  # noqa: E402
from tcpext._policy import Policy, connectTarget  # noqa: E402
from tcpext.permissions import PermissionSet  # noqa: E402

SIZES = (10, 10_000)


def makeGrants(count: int, rng: random.Random) -> list[str]:
    """
    C{count} distinct connect grants of every kind.
    """
    grants: list[str] = []
    i = 0
    while len(grants) < count:
        kind = i % 10
        port = 1 + (i * 7919) % 60000
        if kind < 4:
            grants.append(f"tcp-connect:host{i}.example.com:{port}")
        elif kind < 6:
            grants.append(f"tcp-connect:*.zone{i}.example.net:{port}-{port + 50}")
        elif kind == 6:
            grants.append(f"tcp-connect:203.{i % 256}.{(i // 256) % 256}.7:{port}")
        elif kind == 7:
            length = rng.choice([8, 12, 16, 20, 24, 28])
            grants.append(
                f"tcp-connect:10.{i % 256}.{(i // 256) % 256}.0/{max(length, 24)}:*"
            )
        elif kind == 8:
            grants.append(f"tcp-connect:[2001:db8:{i:x}::/48]:{port}")
        else:
            grants.append(f"tcp-connect:api{i}.example.org:{port}-{port + 1000}")
        i += 1
    return grants


def makeProbes(grants: list[str], count: int, tag: str) -> list[tuple[str, int]]:
    """
    Hosts and ports to check: about half hit a grant, half miss (wrong port,
    wrong name, neighbour of a wildcard, uncovered address).

    @param tag: Makes the probe hosts distinct between calls (for the cold
        figure).
    """
    rng = random.Random(f"probes-{tag}")
    number = sum(tag.encode()) % 0xFFFF
    probes: list[tuple[str, int]] = []
    for n in range(count):
        entry = grants[rng.randrange(len(grants))]
        body = entry[len("tcp-connect:") :]
        host, _, port = body.rpartition(":")
        low = 1 if port == "*" else int(port.split("-")[0])
        miss = n % 2 == 1
        if host.startswith("*."):
            host = f"w{tag}x{n}.{host[2:]}"
            if miss:
                host = "evil" + host.split(".", 1)[1]
        elif host.startswith("["):
            prefix = host[1:].split("::", 1)[0]
            host = f"{prefix}::{n % 65536:x}:{number:x}"
        elif host[0].isdigit():
            base = host.split("/", 1)[0].rsplit(".", 1)[0]
            host = f"{base}.{n % 250 + 1}"
        elif miss:
            host = f"other{tag}x{n}.example.com"
        if miss and not host[0].isalpha():
            low = low + 1 if low < 65535 else low - 1
        probes.append((host, low))
    return probes


def timePerCall(
    run: Callable[[], int], calls: int, repeat: int
) -> tuple[float, list[float]]:
    """
    Median microseconds per call over C{repeat} passes (plus each pass's).
    """
    perCall: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        run()
        elapsed = time.perf_counter_ns() - start
        perCall.append(elapsed / calls / 1000)
    return statistics.median(perCall), perCall


def measure(size: int, repeat: int, probeCount: int) -> dict[str, object]:
    """
    The figures for one grant count.
    """
    rng = random.Random(size)
    texts = makeGrants(size, rng)
    built = time.perf_counter_ns()
    grants = PermissionSet(texts)
    buildMs = (time.perf_counter_ns() - built) / 1e6
    probes = makeProbes(texts, probeCount, "warm")
    allows = grants.allowsConnect

    def warm() -> int:
        hits = 0
        for host, port in probes:
            if allows(host, port):
                hits += 1
        return hits

    hits = warm()  # fills the canonical-host cache, as steady traffic does
    warmUs, warmRuns = timePerCall(warm, len(probes), repeat)

    coldRuns: list[float] = []
    for r in range(repeat):
        fresh = makeProbes(texts, probeCount, f"c{r}")
        _hosts._parseHostCached.cache_clear()
        start = time.perf_counter_ns()
        for host, port in fresh:
            allows(host, port)
        coldRuns.append((time.perf_counter_ns() - start) / len(fresh) / 1000)
    coldUs = statistics.median(coldRuns)

    seen: list[object] = []
    policy = Policy(grants, observers=[lambda extensionId, d: seen.append(d)])
    decide, report = policy.connect, policy.report

    def decided() -> int:
        allowed = 0
        for host, port in probes:
            if report(decide(connectTarget(host, port))).allowed:
                allowed += 1
        seen.clear()
        return allowed

    decided()
    decideUs, _ = timePerCall(decided, len(probes), repeat)
    allowedProbes = [(h, p) for h, p in probes if allows(h, p)]
    deniedProbes = [(h, p) for h, p in probes if not allows(h, p)]

    def decidedOnly(subset: list[tuple[str, int]]) -> Callable[[], int]:
        def run() -> int:
            for host, port in subset:
                report(decide(connectTarget(host, port)))
            seen.clear()
            return len(subset)

        return run

    allowedUs, _ = timePerCall(
        decidedOnly(allowedProbes), max(1, len(allowedProbes)), repeat
    )
    deniedUs, _ = timePerCall(
        decidedOnly(deniedProbes), max(1, len(deniedProbes)), repeat
    )
    decideColdRuns: list[float] = []
    for r in range(repeat):
        fresh = makeProbes(texts, probeCount, f"d{r}")
        _hosts._parseHostCached.cache_clear()
        start = time.perf_counter_ns()
        for host, port in fresh:
            report(decide(connectTarget(host, port)))
        decideColdRuns.append((time.perf_counter_ns() - start) / len(fresh) / 1000)
        seen.clear()
    decideColdUs = statistics.median(decideColdRuns)

    grants.add("tcp-connect:www.example.com:443")
    resolved = ["93.184.216.34", "127.0.0.1", "2606:2800:220:1::1", "10.1.2.3"]
    check = grants.checkResolved
    resolvedCalls = max(1, probeCount // 4)

    def resolvedPass() -> int:
        total = 0
        for _ in range(resolvedCalls):
            total += len(check("www.example.com", 443, resolved))
        return total

    resolvedPass()
    resolvedUs, _ = timePerCall(resolvedPass, resolvedCalls, repeat)
    return {
        "warm": warmUs,
        "cold": coldUs,
        "resolved": resolvedUs,
        "decide": decideUs,
        "decideAllowed": allowedUs,
        "decideDenied": deniedUs,
        "decideCold": decideColdUs,
        "buildMs": buildMs,
        "hitRate": hits / len(probes),
        "warmRuns": warmRuns,
        "coldRuns": coldRuns,
    }


def main(argv: list[str] | None = None) -> int:
    """
    Run W7 and print the figures (C{--json}: one JSON object).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--repeat", type=int, default=7, help="passes per figure")
    parser.add_argument("--probes", type=int, default=2000, help="checks per pass")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.probes < 2:
        parser.error("--repeat must be >= 1 and --probes >= 2")
    results = {size: measure(size, args.repeat, args.probes) for size in SIZES}
    report = {
        "allowsConnect_us": {str(s): round(r["warm"], 3) for s, r in results.items()},
        "allowsConnect_cold_us": {
            str(s): round(r["cold"], 3) for s, r in results.items()
        },
        "checkResolved_us": {
            str(s): round(r["resolved"], 3) for s, r in results.items()
        },
        "decideConnect_us": {str(s): round(r["decide"], 3) for s, r in results.items()},
        "decideConnect_allowed_us": {
            str(s): round(r["decideAllowed"], 3) for s, r in results.items()
        },
        "decideConnect_denied_us": {
            str(s): round(r["decideDenied"], 3) for s, r in results.items()
        },
        "decideConnect_cold_us": {
            str(s): round(r["decideCold"], 3) for s, r in results.items()
        },
        "build_ms": {str(s): round(r["buildMs"], 2) for s, r in results.items()},
        "hit_rate": {str(s): round(r["hitRate"], 3) for s, r in results.items()},
        "repetitions": args.repeat,
        "checks_per_repetition": args.probes,
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"W7 permission checks ({args.repeat} passes of {args.probes} checks, median)"
    )
    for size, r in results.items():
        print(
            f"  {size:>6} grants: allowsConnect {r['warm']:.2f} us "
            f"(cold host {r['cold']:.2f} us), policy decision {r['decide']:.2f} us "
            f"(allowed {r['decideAllowed']:.2f} us, denied with the reason "
            f"{r['decideDenied']:.2f} us, cold host {r['decideCold']:.2f} us), "
            f"checkResolved {r['resolved']:.2f} us, "
            f"built in {r['buildMs']:.1f} ms, {r['hitRate']:.0%} of probes allowed"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
