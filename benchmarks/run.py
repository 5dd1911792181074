#!/usr/bin/env python
# -*- test-case-name: tests.test_benchmarks -*-
"""
Run tcpext's benchmarks side by side with bare Twisted, asyncio streams,
uvloop streams (and iperf3 for bulk) and report medians and ratios.

    python benchmarks/run.py                       # everything, full size
    python benchmarks/run.py --workloads W1,W2 --rounds 5
    python benchmarks/run.py --quick --markdown /tmp/r.md --json /tmp/r.json

Every (workload, implementation, round) runs in a fresh process; rounds
alternate implementations (the order rotates each round). See
C{docs/benchmarks.md} for what each workload does.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHILD = os.path.join(HERE, "_child.py")
PERMISSIONS = os.path.join(HERE, "bench_permissions.py")

sys.path.insert(0, HERE)

from _common import FULL, MiB  # noqa: E402

#: Pinned in every child so that glibc's dynamic mmap threshold cannot make
#: big-buffer workloads flip between two speeds from one run to the next.
GLIBC_TUNABLES = (
    "glibc.malloc.mmap_threshold=1048576:glibc.malloc.trim_threshold=4194304"
)

WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"]
IMPLS = [
    "twisted",
    "tcpext",
    "tcpext-idiom",
    "floor",
    "floor-idiom",
    "asyncio",
    "uvloop",
]
BASELINE = "twisted"

#: Implementations that run only some workloads: C{tcpext-idiom} is tcpext
#: in the idiom of docs/tutorial.md (a coroutine per connection),
#: C{floor} the least a Deferred-returning socket API can do (W4, W6, W8),
#: C{floor-idiom} the same in the user idiom (W4), and
#: iperf3 the loopback ceiling of bulk transfer.
ONLY = {
    "tcpext-idiom": ["W4", "W5", "W8"],
    "floor": ["W4", "W6", "W8"],
    "floor-idiom": ["W4"],
    "iperf3": ["W1"],
}

#: What each workload measures: (title, unit, higher is better).
DESCRIPTIONS = {
    "W1": ("bulk 512 MiB, 64 KiB writes", "MiB/s", True),
    "W2": ("echo, 1 conn x 20,000 x 64 B", "rt/s", True),
    "W3": ("echo, 100 conns x 2,000 x 64 B", "rt/s", True),
    "W4": ("connect+accept+close x 5,000", "conn/s", True),
    "W5": ("memory per idle conn (both ends), 5,000 open", "KiB/conn", False),
    "W6": ("TLS 1.3 bulk 128 MiB", "MiB/s", True),
    "W7": ("permission check", "us", False),
    "W8": ("10,000 conns x 1 MiB checksummed echo", "MiB/s", True),
}

#: Ratios to bare Twisted the project aims at: (workload, implementations,
#: ">=" or "<=", limit).  With several implementations the best of them
#: counts.
RATIO_TARGETS: list[tuple[str, tuple[str, ...], str, float]] = [
    ("W1", ("tcpext",), ">=", 0.90),
    ("W2", ("tcpext",), ">=", 0.85),
    ("W3", ("tcpext",), ">=", 0.85),
    ("W4", ("tcpext",), ">=", 0.90),
    ("W4", ("tcpext-idiom",), ">=", 0.80),
    ("W5", ("tcpext",), "<=", 1.5),
    ("W5", ("tcpext-idiom",), "<=", 1.8),
    ("W6", ("tcpext",), ">=", 0.92),
    ("W8", ("tcpext", "tcpext-idiom"), ">=", 0.80),
]

#: Workloads where tcpext must beat asyncio streams.
AHEAD_OF_ASYNCIO = ["W1", "W4", "W5", "W6"]

#: W7's limit, in microseconds, at 10,000 grants.
W7_LIMIT_US = 5.0


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--impls", default=",".join(IMPLS + ["iperf3"]))
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of W1-W7 (default 5)"
    )
    parser.add_argument(
        "--w8-rounds",
        dest="w8Rounds",
        type=int,
        default=3,
        help="rounds of W8 (default 3; a full-size W8 run takes 20-60 s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: every size divided by 16 (not a result to quote)",
    )
    parser.add_argument(
        "--scale", type=float, default=None, help="multiply every size by this"
    )
    parser.add_argument("--json", dest="jsonPath", default=None)
    parser.add_argument("--markdown", dest="markdownPath", default=None)
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds allowed per run"
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="time the work in elapsed time (default) or in the process's "
        "CPU time (steadier on a busy machine; W8's server and iperf3 are "
        "not counted)",
    )
    parser.add_argument(
        "--corrupt",
        action="store_true",
        help="damage the data on purpose (proves the checks catch it)",
    )
    args = parser.parse_args(argv)
    if args.scale is None:
        args.scale = 1 / 16 if args.quick else 1.0
    if args.rounds < 1 or args.w8Rounds < 1:
        parser.error("--rounds and --w8-rounds must be at least 1")
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w]
    for w in args.workloads:
        if w not in WORKLOADS:
            parser.error(f"unknown workload {w!r}; choose from {','.join(WORKLOADS)}")
    args.impls = [i.strip().lower() for i in args.impls.split(",") if i]
    for i in args.impls:
        if i not in IMPLS + ["iperf3"]:
            parser.error(f"unknown implementation {i!r}")
    return args


def childEnvironment() -> dict[str, str]:
    """
    The environment of every child: pinned malloc, tcpext importable.
    """
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = GLIBC_TUNABLES
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.pop("PYTHONASYNCIODEBUG", None)
    return env


def available(impl: str) -> str | None:
    """
    Why C{impl} cannot run here, or C{None} if it can.
    """
    if impl == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return "uvloop is not installed"
    if impl == "iperf3" and shutil.which("iperf3") is None:
        return "iperf3 is not installed"
    if impl == "tcpext":
        if not os.path.exists(os.path.join(ROOT, "tcpext", "endpoints.py")):
            return "tcpext.endpoints is not there yet"
    return None


def makeCertificate(directory: str) -> None:
    """
    Write a self-signed certificate for C{localhost} and its key.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    with open(os.path.join(directory, "cert.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, "key.pem"), "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def lastJsonLine(text: str) -> dict[str, Any]:
    """
    The JSON object on the last non-empty line of C{text}.
    """
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                break
            if isinstance(value, dict):
                return value
            break
    raise ValueError("no JSON result in the output")


def peakRssKiB(pid: int) -> int | None:
    """
    The peak resident set size of a running process, in KiB.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def runProcess(
    command: list[str], cwd: str, timeout: float
) -> subprocess.CompletedProcess[str] | dict[str, Any]:
    """
    Run C{command} with the benchmark environment, capturing its output.

    @return: The finished process, or a failed result if it timed out.
    """
    try:
        return subprocess.run(
            command,
            env=childEnvironment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s"}


def runChild(
    impl: str, workload: str, params: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """
    Run one (implementation, workload) in a fresh process; return its result.
    """
    command = [sys.executable, CHILD, impl, workload, json.dumps(params)]
    done = runProcess(command, HERE, timeout)
    if isinstance(done, dict):
        return done
    try:
        result = lastJsonLine(done.stdout)
    except ValueError:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {
            "ok": False,
            "error": f"exit status {done.returncode}: {' | '.join(tail)}",
        }
    if not result.get("ok") and done.stderr.strip():
        result.setdefault("stderr", done.stderr.strip().splitlines()[-5:])
    return result


def runScale(impl: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """
    W8: start the implementation's echo server in its own process (one
    process cannot hold both ends of 10,000 connections under this machine's
    open-file limit), run the client, record both peak memories.
    """
    server = subprocess.Popen(
        [sys.executable, CHILD, impl, "W8-server", json.dumps(params)],
        env=childEnvironment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        try:
            port = int(json.loads(line)["port"])
        except (ValueError, KeyError, TypeError):
            server.kill()
            _, err = server.communicate(timeout=10)
            tail = " | ".join(err.strip().splitlines()[-3:])
            return {"ok": False, "error": f"W8 server did not start: {tail}"}
        result = runChild(impl, "W8", dict(params, port=port), timeout)
        if result.get("ok"):
            serverPeak = peakRssKiB(server.pid)
            result["extra"]["serverPeakRssKiB"] = serverPeak
            result["extra"]["peakRssKiB"] = result["extra"]["clientPeakRssKiB"] + (
                serverPeak or 0
            )
        return result
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()


def freePort() -> int:
    """
    A loopback TCP port that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def runIperf(params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """
    W1 with iperf3 (client and server in two processes, C{-n} bytes in
    C{-l}-byte writes): the loopback ceiling.
    """
    sizes = FULL["W1"]
    total = max(sizes["chunk"], int(sizes["total"] * params["scale"]))
    port = freePort()
    server = subprocess.Popen(
        ["iperf3", "-s", "-1", "--forceflush", "-B", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Wait for its banner: a probing connection would use up its one test.
        assert server.stdout is not None
        deadline = time.monotonic() + 10
        banner = ""
        while "listening" not in banner.lower():
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([server.stdout], [], [], left)[0]:
                raise ValueError("the iperf3 server did not start")
            data = os.read(server.stdout.fileno(), 4096)
            if not data:
                raise ValueError("the iperf3 server exited")
            banner += data.decode("utf-8", "replace")
        client = subprocess.run(
            [
                "iperf3",
                "-c",
                "127.0.0.1",
                "-p",
                str(port),
                "-n",
                str(total),
                "-l",
                str(sizes["chunk"]),
                "-J",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        report = json.loads(client.stdout)
        received = report["end"]["sum_received"]
        sent = report["end"]["sum_sent"]
        # iperf3's receiver summary is the figure; for a short transfer it is
        # sometimes incomplete (0 bytes, or short of what was sent: its last
        # interval not reported), and then the sender's stands for it.
        side = "receiver"
        if received["bytes"] < sent["bytes"] or received["seconds"] <= 0:
            received, side = sent, "sender"
        if received["bytes"] <= 0 or received["seconds"] <= 0:
            raise ValueError(f"iperf3 reported no transfer: {report['end']}")
        return {
            "ok": True,
            "value": received["bytes"] / MiB / received["seconds"],
            "unit": "MiB/s",
            "extra": {
                "seconds": received["seconds"],
                "bytes": received["bytes"],
                "side": side,
            },
        }
    except (subprocess.TimeoutExpired, ValueError, KeyError) as e:
        return {"ok": False, "error": f"iperf3 failed: {type(e).__name__}: {e}"}
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()


def runPermissions(timeout: float) -> dict[str, Any]:
    """
    W7: run C{bench_permissions.py --json} and read its figures.
    """
    if not os.path.exists(PERMISSIONS):
        return {"ok": False, "skipped": True, "error": "bench_permissions.py missing"}
    done = runProcess([sys.executable, PERMISSIONS, "--json"], ROOT, timeout)
    if isinstance(done, dict):
        return done
    try:
        report = json.loads(done.stdout)
    except ValueError:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        return {"ok": False, "error": f"no JSON from bench_permissions.py: {tail}"}
    return {"ok": done.returncode == 0, "report": report}


def permissionFigures(report: Any) -> dict[str, float]:
    """
    The microseconds per C{allowsConnect} by number of grants, from
    C{bench_permissions.py --json}'s report, whatever its exact shape.
    """
    figures: dict[str, float] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            figures[path] = float(value)

    walk(report, "")
    return figures


def machine() -> dict[str, Any]:
    """
    What the numbers were measured on.
    """
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("twisted", "uvloop", "pyOpenSSL", "cryptography"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:
            versions[name] = None
    versions["tcpext"] = tcpextVersion()
    import ssl

    versions["ssl (asyncio)"] = ssl.OPENSSL_VERSION
    if shutil.which("iperf3"):
        out = subprocess.run(["iperf3", "--version"], capture_output=True, text=True)
        versions["iperf3"] = out.stdout.split("\n")[0].strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "libc": " ".join(platform.libc_ver()),
        "versions": versions,
        "loadAverage": os.getloadavg(),
    }


def tcpextVersion() -> str | None:
    """
    tcpext's version (C{__version__} in the checkout's C{tcpext/__init__.py})
    and commit.
    """
    version = None
    try:
        with open(os.path.join(ROOT, "tcpext", "__init__.py")) as f:
            for line in f:
                if line.startswith("__version__"):
                    version = line.split("=", 1)[1].strip().strip("\"'")
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        commit = ""
    return f"{version} ({commit})" if commit else version


def timeoutFor(workload: str, args: argparse.Namespace) -> float:
    """
    Seconds one run may take.
    """
    if args.timeout is not None:
        return float(args.timeout)
    return 900.0 if workload == "W8" else 300.0


def runs(impl: str, workload: str) -> bool:
    """
    Whether C{impl} has a version of C{workload}.
    """
    return workload in ONLY.get(impl, WORKLOADS)


def rotate(items: list[str], by: int) -> list[str]:
    """
    C{items} rotated left by C{by}: round C{r} starts with a different one.
    """
    if not items:
        return items
    by %= len(items)
    return items[by:] + items[:by]


def runAll(args: argparse.Namespace, log: Any = print) -> dict[str, Any]:
    """
    Run every requested (workload, implementation, round).
    """
    started = datetime.datetime.now(datetime.timezone.utc)
    report: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "glibcTunables": GLIBC_TUNABLES,
        "clock": args.clock,
        "scale": args.scale,
        "rounds": args.rounds,
        "w8Rounds": args.w8Rounds,
        "corrupt": args.corrupt,
        "skipped": {},
        "runs": [],
    }
    impls = []
    for impl in args.impls:
        why = available(impl)
        if why:
            report["skipped"][impl] = why
            log(f"skipping {impl}: {why}")
        else:
            impls.append(impl)
    certDir = tempfile.mkdtemp(prefix="tcpext-bench-")
    try:
        if "W6" in args.workloads:
            makeCertificate(certDir)
        params = {
            "scale": args.scale,
            "corrupt": args.corrupt,
            "certDir": certDir,
            "clock": args.clock,
        }
        for workload in args.workloads:
            if workload == "W7":
                runW7(args, report, log)
                continue
            candidates = [i for i in impls if runs(i, workload)]
            rounds = args.w8Rounds if workload == "W8" else args.rounds
            for round in range(rounds):
                for impl in rotate(candidates, round):
                    began = time.perf_counter()
                    if impl == "iperf3":
                        result = runIperf(params, timeoutFor(workload, args))
                    elif workload == "W8":
                        result = runScale(impl, params, timeoutFor(workload, args))
                    else:
                        result = runChild(
                            impl, workload, params, timeoutFor(workload, args)
                        )
                    result.update(workload=workload, impl=impl, round=round)
                    result["wall"] = time.perf_counter() - began
                    report["runs"].append(result)
                    shown = (
                        f"{result['value']:.1f} {result['unit']}"
                        if result.get("ok")
                        else f"FAILED: {result.get('error')}"
                    )
                    log(f"{workload} {impl:8} round {round + 1}: {shown}")
    finally:
        shutil.rmtree(certDir, ignore_errors=True)
    report["seconds"] = (
        datetime.datetime.now(datetime.timezone.utc) - started
    ).total_seconds()
    report["machine"]["loadAverageAfter"] = os.getloadavg()
    summarize(report)
    return report


def runW7(args: argparse.Namespace, report: dict[str, Any], log: Any) -> None:
    """
    Run the permission benchmark C{--rounds} times.
    """
    for round in range(args.rounds):
        result = runPermissions(timeoutFor("W7", args))
        result.update(workload="W7", impl="tcpext", round=round)
        if result.get("ok"):
            result["figures"] = permissionFigures(result["report"])
        report["runs"].append(result)
        log(f"W7 tcpext   round {round + 1}: {result.get('figures') or result}")
        if result.get("skipped"):
            break


def median(values: Iterable[float]) -> float | None:
    """
    The median, or C{None} for no values.
    """
    values = list(values)
    return statistics.median(values) if values else None


def summarize(report: dict[str, Any]) -> None:
    """
    Add medians, ratios to bare Twisted and the targets to C{report}.
    """
    summary: dict[str, dict[str, Any]] = {}
    for run in report["runs"]:
        if run["workload"] == "W7":
            continue
        entry = summary.setdefault(run["workload"], {}).setdefault(
            run["impl"], {"values": [], "failures": [], "extra": []}
        )
        if run.get("ok"):
            entry["values"].append(run["value"])
            entry["extra"].append(run.get("extra", {}))
        else:
            entry["failures"].append(run.get("error"))
    for workload, byImpl in summary.items():
        base = median(byImpl.get(BASELINE, {}).get("values", []))
        for entry in byImpl.values():
            entry["median"] = median(entry["values"])
            entry["ratio"] = (
                entry["median"] / base if entry["median"] is not None and base else None
            )
        if workload == "W8":
            for entry in byImpl.values():
                peaks = [e.get("peakRssKiB") for e in entry["extra"]]
                entry["peakRssKiB"] = median(p for p in peaks if p)
                entry["seconds"] = median(e["seconds"] for e in entry["extra"])
    report["summary"] = summary
    w7 = [r for r in report["runs"] if r["workload"] == "W7" and r.get("ok")]
    if w7:
        keys = set.intersection(*(set(r["figures"]) for r in w7))
        report["w7"] = {
            key: median(r["figures"][key] for r in w7) for key in sorted(keys)
        }
    report["targets"] = targets(report)
    report["failed"] = sum(
        1 for r in report["runs"] if not r.get("ok") and not r.get("skipped")
    )


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """
    Each target of the issue with its measured figure and met/missed.
    """
    summary = report["summary"]
    out = []

    def add(name: str, figure: float | None, met: bool | None) -> None:
        out.append({"target": name, "figure": figure, "met": met})

    for workload, names, op, limit in RATIO_TARGETS:
        if workload not in summary:
            continue
        ratios = [
            r
            for r in (summary[workload].get(n, {}).get("ratio") for n in names)
            if r is not None
        ]
        ratio = None
        if ratios:
            ratio = max(ratios) if op == ">=" else min(ratios)
        met = (
            None
            if ratio is None
            else (ratio >= limit if op == ">=" else ratio <= limit)
        )
        who = names[0] if len(names) == 1 else f"best of {' and '.join(names)}"
        add(f"{workload} {who}/bare Twisted {op} {limit:.2f}", ratio, met)
    for workload in AHEAD_OF_ASYNCIO:
        if workload not in summary:
            continue
        ours = summary[workload].get("tcpext", {}).get("median")
        theirs = summary[workload].get("asyncio", {}).get("median")
        met = None
        if ours is not None and theirs is not None:
            better = DESCRIPTIONS[workload][2]
            met = ours > theirs if better else ours < theirs
        figure = ours / theirs if ours is not None and theirs else None
        add(f"{workload} tcpext ahead of asyncio streams (tcpext/asyncio)", figure, met)
    if "w7" in report:
        big = permissionAt(report["w7"], 10000)
        add(
            f"W7 allowsConnect < {W7_LIMIT_US:g} us at 10,000 grants",
            big,
            None if big is None else big < W7_LIMIT_US,
        )
        cold = report["w7"].get("allowsConnect_cold_us.10000")
        if cold is not None:
            add(
                f"W7 allowsConnect, every host new (cold) < {W7_LIMIT_US:g} us "
                "at 10,000 grants",
                cold,
                cold < W7_LIMIT_US,
            )
    for impl in ("tcpext", "tcpext-idiom"):
        entry = summary.get("W8", {}).get(impl)
        if entry is not None:
            add(
                f"W8 completes, nothing lost ({impl} rounds passed)",
                float(len(entry["values"])),
                bool(entry["values"]) and not entry["failures"],
            )
    return out


def permissionAt(figures: dict[str, float], grants: int) -> float | None:
    """
    The microseconds figure for C{grants} grants in W7's flattened report.
    """
    exact = figures.get(f"allowsConnect_us.{grants}")
    if exact is not None:
        return exact
    wanted = str(grants)
    candidates = [
        (key, value)
        for key, value in figures.items()
        if wanted in key.replace("_", "").replace(",", "") and "us" in key.lower()
    ]
    if not candidates:
        candidates = [(k, v) for k, v in figures.items() if wanted in k]
    return candidates[0][1] if candidates else None


def formatValue(value: float | None, unit: str = "") -> str:
    """
    A figure for the tables.
    """
    if value is None:
        return "–"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def markdown(report: dict[str, Any]) -> str:
    """
    The report as Markdown.
    """
    m = report["machine"]
    v = m["versions"]
    lines = [
        f"# tcpext benchmark results ({report['date']})",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, {m['libc']}",
        "- Versions: "
        + ", ".join(f"{name} {value}" for name, value in v.items() if value),
        f"- Load average before / after: {fmtLoad(m['loadAverage'])} / "
        f"{fmtLoad(m.get('loadAverageAfter'))}",
        f"- Rounds: {report['rounds']} per (workload, implementation) "
        f"({report['w8Rounds']} for W8), alternating implementations, each run "
        "a fresh process; figures are medians.",
        f"- Scale: {report['scale']:g}"
        + (" (full size)" if report["scale"] == 1 else " (NOT the full size)"),
        f"- Every child ran with `GLIBC_TUNABLES={report['glibcTunables']}`.",
        "- Clock: "
        + (
            "**CPU time** of the measuring process (`--clock cpu`; W8 counts "
            "the client only, iperf3 is elapsed time)."
            if report.get("clock") == "cpu"
            else "elapsed time."
        ),
        f"- Whole run: {report['seconds'] / 60:.1f} minutes.",
    ]
    if report["skipped"]:
        lines.append(
            "- Skipped: "
            + "; ".join(f"{k} ({why})" for k, why in report["skipped"].items())
        )
    if report["corrupt"]:
        lines.append("- **--corrupt: data was damaged on purpose; failures expected.**")
    summary = report["summary"]
    impls = [i for i in IMPLS + ["iperf3"] if any(i in s for s in summary.values())]
    lines += ["", "## Results", ""]
    if not summary:
        lines.append("(no socket workloads in this run)")
    header = "| workload | unit |"
    rule = "|---|---|"
    for impl in impls:
        header += f" {impl} |" if impl == BASELINE else f" {impl} | /twisted |"
        rule += "---:|" if impl == BASELINE else "---:|---:|"
    if summary:
        lines += [header, rule]
    for workload in WORKLOADS:
        if workload not in summary or workload == "W7":
            continue
        title, unit, _ = DESCRIPTIONS[workload]
        row = f"| {workload} {title} | {unit} |"
        for impl in impls:
            entry = summary[workload].get(impl)
            if entry is None:
                cell, ratio = "", ""
            elif entry["median"] is None:
                cell, ratio = "FAILED", ""
            else:
                cell = formatValue(entry["median"])
                if entry["failures"]:
                    cell += f" ({len(entry['failures'])} failed)"
                ratio = formatValue(entry["ratio"]) if entry["ratio"] else ""
            row += f" {cell} |" if impl == BASELINE else f" {cell} | {ratio} |"
        lines.append(row)
    if "W8" in summary:
        lines += [
            "",
            "### W8 detail",
            "",
            "| impl | seconds | MiB/s | peak RSS client+server | rounds passed |",
            "|---|---:|---:|---:|---:|",
        ]
        for impl, entry in summary["W8"].items():
            peak = entry.get("peakRssKiB")
            lines.append(
                f"| {impl} | {formatValue(entry.get('seconds'))} | "
                f"{formatValue(entry['median'])} | "
                f"{formatValue(peak / 1024 if peak else None, 'MiB')} | "
                f"{len(entry['values'])}/{len(entry['values']) + len(entry['failures'])} |"
            )
    if "w7" in report:
        lines += ["", "### W7 permission checks (tcpext only, medians)", ""]
        lines += w7Table(report["w7"])
    lines += ["", "## Targets", ""]
    for t in report["targets"]:
        status = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"- {t['target']}: {formatValue(t['figure'])} — **{status}**")
    failures = [r for r in report["runs"] if not r.get("ok") and not r.get("skipped")]
    if failures:
        lines += ["", "## Failed runs", ""]
        for r in failures:
            lines.append(
                f"- {r['workload']} {r['impl']} round {r['round'] + 1}: {r.get('error')}"
            )
    return "\n".join(lines) + "\n"


def w7Table(figures: dict[str, float]) -> list[str]:
    """
    W7's figures as a table: one row per measure, one column per number of
    grants (C{"allowsConnect_us.10000"} is row C{allowsConnect_us}, column
    C{10000}); figures of another shape are listed after it.
    """
    rows: dict[str, dict[str, float]] = {}
    others = []
    for key, value in figures.items():
        name, _, grants = key.rpartition(".")
        if name and grants.isdigit():
            rows.setdefault(name, {})[grants] = value
        else:
            others.append(f"- `{key}`: {formatValue(value)}")
    columns = sorted({g for row in rows.values() for g in row}, key=int)
    lines = []
    if rows:
        lines.append(
            "| measure | " + " | ".join(f"{int(g):,} grants" for g in columns) + " |"
        )
        lines.append("|---|" + "---:|" * len(columns))
        for name, row in rows.items():
            cells = " | ".join(formatValue(row.get(g)) for g in columns)
            lines.append(f"| `{name}` | {cells} |")
    if others:
        lines += [""] + others
    return lines


def fmtLoad(load: Any) -> str:
    """
    A load average triple.
    """
    if not load:
        return "?"
    return " ".join(f"{x:.2f}" for x in load)


def main(argv: list[str]) -> int:
    """
    Run the benchmarks; exit 1 if any run failed.
    """
    args = parseArguments(argv)
    report = runAll(args, log=lambda text: print(text, flush=True))
    text = markdown(report)
    print()
    print(text)
    if args.markdownPath:
        with open(args.markdownPath, "w", encoding="utf-8") as f:
            f.write(text)
    if args.jsonPath:
        with open(args.jsonPath, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, default=str)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
